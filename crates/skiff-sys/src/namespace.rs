//! Linux namespace kinds and namespace identities (`/proc/PID/ns/KIND`).

use std::path::PathBuf;

use nix::sched::CloneFlags;

/// Why a namespace could not be identified.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// Reading the `/proc/PID/ns/KIND` link failed (no such process, or no permission).
    #[error("read namespace link {path}: {source}")]
    ReadLink {
        /// The link.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The link did not have the `kind:[inode]` form.
    #[error("namespace link {path} points at {target:?}, not `kind:[inode]`")]
    Malformed {
        /// The link.
        path: PathBuf,
        /// What it pointed at.
        target: String,
    },
}

/// A kind of Linux namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamespaceKind {
    /// Mount points.
    Mount,
    /// Hostname and NIS domain name.
    Uts,
    /// System V IPC and POSIX message queues.
    Ipc,
    /// Process ids.
    Pid,
    /// Network devices, addresses, routes, firewall.
    Network,
    /// User and group ids.
    User,
    /// The cgroup root.
    Cgroup,
}

impl NamespaceKind {
    /// Every kind, in the order a runtime usually creates them (user first).
    pub const ALL: [NamespaceKind; 7] = [
        NamespaceKind::User,
        NamespaceKind::Pid,
        NamespaceKind::Network,
        NamespaceKind::Ipc,
        NamespaceKind::Uts,
        NamespaceKind::Mount,
        NamespaceKind::Cgroup,
    ];

    /// The file name under `/proc/PID/ns`.
    pub fn proc_name(self) -> &'static str {
        match self {
            NamespaceKind::Mount => "mnt",
            NamespaceKind::Uts => "uts",
            NamespaceKind::Ipc => "ipc",
            NamespaceKind::Pid => "pid",
            NamespaceKind::Network => "net",
            NamespaceKind::User => "user",
            NamespaceKind::Cgroup => "cgroup",
        }
    }

    /// The name the OCI runtime spec uses in `linux.namespaces[].type`.
    pub fn oci_name(self) -> &'static str {
        match self {
            NamespaceKind::Mount => "mount",
            NamespaceKind::Network => "network",
            other => other.proc_name(),
        }
    }

    /// Parses an OCI `linux.namespaces[].type`.
    pub fn from_oci_name(name: &str) -> Option<NamespaceKind> {
        NamespaceKind::ALL
            .into_iter()
            .find(|kind| kind.oci_name() == name)
    }

    /// The `clone(2)`/`unshare(2)` flag that creates this kind.
    pub fn clone_flag(self) -> CloneFlags {
        match self {
            NamespaceKind::Mount => CloneFlags::CLONE_NEWNS,
            NamespaceKind::Uts => CloneFlags::CLONE_NEWUTS,
            NamespaceKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NamespaceKind::Pid => CloneFlags::CLONE_NEWPID,
            NamespaceKind::Network => CloneFlags::CLONE_NEWNET,
            NamespaceKind::User => CloneFlags::CLONE_NEWUSER,
            NamespaceKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        }
    }
}

/// The identity of one namespace: its kind and the inode of its nsfs file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NamespaceId {
    /// The kind.
    pub kind: NamespaceKind,
    /// The nsfs inode number; two processes share a namespace when these are equal.
    pub inode: u64,
}

impl NamespaceId {
    /// Reads the namespace of `kind` that process `pid` is in (`None`: the calling process).
    pub fn of(pid: Option<u32>, kind: NamespaceKind) -> Result<NamespaceId, NamespaceError> {
        let proc_dir = pid.map_or_else(|| "self".to_string(), |p| p.to_string());
        let path = PathBuf::from(format!("/proc/{proc_dir}/ns/{}", kind.proc_name()));
        let target = std::fs::read_link(&path).map_err(|source| NamespaceError::ReadLink {
            path: path.clone(),
            source,
        })?;
        let target = target.to_string_lossy().into_owned();
        let inode = target
            .strip_prefix(kind.proc_name())
            .and_then(|rest| rest.strip_prefix(":["))
            .and_then(|rest| rest.strip_suffix(']'))
            .and_then(|digits| digits.parse().ok())
            .ok_or(NamespaceError::Malformed {
                path,
                target: target.clone(),
            })?;
        Ok(NamespaceId { kind, inode })
    }
}

/// Creates new namespaces of the given kinds for the calling process (`unshare(2)`). A new PID
/// namespace applies to the caller's next child, not to the caller.
pub fn unshare(kinds: &[NamespaceKind]) -> crate::SysResult<()> {
    let flags = kinds
        .iter()
        .fold(CloneFlags::empty(), |acc, kind| acc | kind.clone_flag());
    nix::sched::unshare(flags).map_err(crate::SysError::on("unshare", format!("{kinds:?}")))
}

/// Opens a namespace file (`/proc/PID/ns/KIND` or a bind-mounted handle) to join later.
pub fn open(path: &std::path::Path) -> crate::SysResult<std::os::fd::OwnedFd> {
    std::fs::File::open(path)
        .map(std::os::fd::OwnedFd::from)
        .map_err(|e| crate::SysError::from_io("open namespace", path.display(), &e))
}

/// Joins the namespace of `kind` open at `fd`.
pub fn join_fd(kind: NamespaceKind, fd: &std::os::fd::OwnedFd) -> crate::SysResult<()> {
    nix::sched::setns(fd, kind.clone_flag()).map_err(crate::SysError::on("setns", kind.proc_name()))
}

/// Joins the namespace of `kind` at `path` (e.g. `/proc/PID/ns/net` or a bind-mounted handle
/// under `/run/netns`).
pub fn join(kind: NamespaceKind, path: &std::path::Path) -> crate::SysResult<()> {
    let file = std::fs::File::open(path)
        .map_err(|e| crate::SysError::from_io("open namespace", path.display(), &e))?;
    nix::sched::setns(&file, kind.clone_flag())
        .map_err(crate::SysError::on("setns", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_names_round_trip() {
        for kind in NamespaceKind::ALL {
            assert_eq!(NamespaceKind::from_oci_name(kind.oci_name()), Some(kind));
        }
        assert_eq!(NamespaceKind::from_oci_name("time"), None);
    }

    #[test]
    fn a_process_shares_namespaces_with_itself_and_its_parent() {
        let own = NamespaceId::of(None, NamespaceKind::Network).unwrap();
        let by_pid = NamespaceId::of(Some(std::process::id()), NamespaceKind::Network).unwrap();
        assert_eq!(own, by_pid);
        assert!(own.inode > 0);
    }

    #[test]
    fn a_missing_process_is_a_read_error() {
        let err = NamespaceId::of(Some(u32::MAX - 1), NamespaceKind::Pid).unwrap_err();
        assert!(matches!(err, NamespaceError::ReadLink { .. }), "{err}");
    }
}
