//! The local container manager of Skiff, shared by the CLI (`skiff run/ps/exec/...`) and the
//! node agent: images, snapshots, the runtime and a per-container monitor.
//!
//! A container is a directory under `DATA/containers/<id>/` ([`layout`]) holding the engine's
//! record ([`record::ContainerConfig`], written once) and state ([`record::State`], written by
//! the monitor). The monitor ([`shim`], the hidden `skiff shim` command) is one detached,
//! single-threaded process per running container: it mounts the root filesystem
//! ([`rootfs`]), writes the bundle ([`spec`]), creates and starts the container through
//! `skiff-runtime` with its stdout/stderr as pipes, writes them to a CRI log ([`logs`]),
//! records the exit and applies the restart policy. [`Engine`] is what commands call; every
//! command finds containers again from the files, so CLIs and agents may come and go.
//! Volumes ([`volume`]) are directories under `DATA/volumes/`, bound into containers and
//! filled from the image when empty ([`tree`]); [`usage`] reads a running container's
//! figures from its cgroup for `top` and `stats`.
//!
//! Ids and names are Docker's (64 hex digits, addressable by any unique prefix; names
//! `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, unique).

pub mod attach;
pub mod commit;
pub mod engine;
pub mod inspect;
pub mod layout;
pub mod logs;
pub mod naming;
pub mod procview;
pub mod record;
pub mod rootfs;
pub mod sharing;
pub mod shim;
pub mod spec;
pub mod template;
pub mod time;
pub mod tree;
pub mod usage;
pub mod users;
pub mod volume;

use std::path::PathBuf;

pub use attach::{AttachConn, AttachError, Frame};
pub use commit::{CommitOptions, CommitOutcome};
pub use engine::{Container, CreateRequest, Engine, ExecRequest, ShimHandle};
pub use naming::{ContainerId, NamingError, resolve_prefix, validate_name};
pub use record::{ContainerConfig, RestartPolicy, State, Status};
pub use volume::{Volume, VolumeError, VolumeLock, Volumes};

/// Why an engine operation failed. The messages are Docker's where users know them.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A record file does not parse.
    #[error("{}: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A flag or argument is wrong.
    #[error("{0}")]
    InvalidArgument(String),
    /// An id or name is wrong or ambiguous.
    #[error(transparent)]
    Naming(#[from] NamingError),
    /// No container has this name or id prefix.
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// The name belongs to another container.
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse {
        /// The name.
        name: String,
        /// The container holding it.
        id: String,
    },
    /// The container runs and the operation needs it stopped.
    #[error(
        "cannot remove container \"/{name}\": container is running: stop the container before removing or force remove"
    )]
    Running {
        /// Its name.
        name: String,
    },
    /// The container does not run and the operation needs it running.
    #[error("container {id} is not running")]
    NotRunning {
        /// Its id.
        id: String,
    },
    /// The container's process could not be started.
    #[error("{message}")]
    StartFailed {
        /// Why (the runtime's message).
        message: String,
        /// The exit code Docker gives: 127 program not found, 126 not executable, 125 other.
        exit_code: i32,
    },
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] skiff_image::ImageError),
    /// The OCI runtime failed.
    #[error(transparent)]
    Runtime(#[from] skiff_runtime::ContainerError),
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] skiff_sys::SysError),
    /// A `prctl` failed.
    #[error(transparent)]
    Process(#[from] skiff_sys::ProcessError),
    /// An attach connection failed.
    #[error(transparent)]
    Attach(#[from] attach::AttachError),
    /// A container's cgroup could not be read.
    #[error(transparent)]
    Usage(#[from] usage::UsageError),
    /// A volume operation failed.
    #[error(transparent)]
    Volume(#[from] volume::VolumeError),
    /// The monitor process failed.
    #[error("container monitor: {0}")]
    Shim(String),
    /// Waiting for the container timed out.
    #[error("timed out after {seconds} s waiting for container {id} to {what}")]
    Timeout {
        /// The container.
        id: String,
        /// What was waited for.
        what: &'static str,
        /// How long.
        seconds: u64,
    },
}

impl EngineError {
    /// A closure building [`EngineError::Io`] for `op` on `path`.
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> EngineError {
        let path = path.into();
        move |source| EngineError::Io { op, path, source }
    }

    /// The exit code Docker's CLI gives for this error in `run`: the start failure's own
    /// (126/127), otherwise 125.
    pub fn run_exit_code(&self) -> i32 {
        match self {
            EngineError::StartFailed { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}

/// Result of engine operations.
pub type Result<T> = std::result::Result<T, EngineError>;
