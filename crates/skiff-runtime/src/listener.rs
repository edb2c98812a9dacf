//! Handing a seccomp listener to the seccomp agent (`linux.seccomp.listenerPath`), as runc
//! does: the process loads its filter with a listener and reports the descriptor's number
//! (`SeccompListener`); the runtime copies it out of the process (`pidfd_getfd`), lets the
//! process go on (`SeccompDone`), connects to the agent's unix socket and sends the OCI
//! `ContainerProcessState` JSON (`ociVersion`, `fds: ["seccompFd"]`, `pid`, `metadata`,
//! `state`) in one message carrying the listener by `SCM_RIGHTS`, then closes the connection.

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use serde_json::{Value, json};

/// Where a listener goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTarget {
    /// The agent's unix socket (`linux.seccomp.listenerPath`).
    pub path: PathBuf,
    /// Opaque text for the agent (`linux.seccomp.listenerMetadata`).
    pub metadata: String,
}

/// Why a listener did not reach the agent.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// Copying the descriptor out of the process failed.
    #[error("take the seccomp listener from the container process: {0}")]
    Take(#[source] skiff_sys::SysError),
    /// The agent's socket did not answer.
    #[error("connect to the seccomp agent at {}: {source}", path.display())]
    Connect {
        /// listenerPath.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Sending the state and the descriptor failed.
    #[error("send the seccomp listener to {}: {source}", path.display())]
    Send {
        /// listenerPath.
        path: PathBuf,
        /// The error.
        source: skiff_sys::SysError,
    },
}

/// The `ContainerProcessState` of process `pid` with the container's `state` (the OCI state
/// object).
pub fn process_state(oci_version: &str, pid: i32, metadata: &str, state: Value) -> Value {
    let mut out = json!({
        "ociVersion": oci_version,
        "fds": ["seccompFd"],
        "pid": pid,
        "state": state,
    });
    if !metadata.is_empty() {
        out["metadata"] = json!(metadata);
    }
    out
}

/// Copies descriptor `fd` of process `pid` (its listener).
pub fn take(pid: i32, fd: i32) -> Result<std::os::fd::OwnedFd, ListenerError> {
    skiff_sys::seccomp::take_fd(pid, fd).map_err(ListenerError::Take)
}

/// Sends `state` (a `ContainerProcessState`) with `listener` to the agent at `target`.
pub fn send(
    target: &ListenerTarget,
    state: &Value,
    listener: &std::os::fd::OwnedFd,
) -> Result<(), ListenerError> {
    let socket = UnixStream::connect(&target.path).map_err(|source| ListenerError::Connect {
        path: target.path.clone(),
        source,
    })?;
    skiff_sys::seccomp::send_with_fd(&socket, state.to_string().as_bytes(), listener.as_fd())
        .map_err(|source| ListenerError::Send {
            path: target.path.clone(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_state_names_the_descriptor_and_carries_the_metadata() {
        let state = process_state(
            "1.2.0",
            42,
            "pod=a",
            json!({"id": "c1", "status": "creating"}),
        );
        assert_eq!(state["fds"], json!(["seccompFd"]));
        assert_eq!(state["pid"], 42);
        assert_eq!(state["metadata"], "pod=a");
        assert_eq!(state["state"]["id"], "c1");
        assert!(
            process_state("1.2.0", 1, "", json!({}))
                .get("metadata")
                .is_none()
        );
    }
}
