//! The one error type of this crate: every variant names the path, file or value involved.

use std::path::PathBuf;
use std::time::Duration;

use crate::layout::LayoutError;

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The host's cgroup layout could not be found.
    #[error(transparent)]
    Layout(#[from] LayoutError),

    /// A cgroup path that cannot be used (empty, `..`, not valid UTF-8 ...).
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A systemd-style `slice:prefix:name` cgroupsPath, which needs systemd.
    #[error(
        "cgroup path {path:?} is in systemd form (slice:prefix:name), but there is no systemd \
         cgroup driver: use a cgroupfs path such as /skiff/<container-id>"
    )]
    SystemdPath {
        /// The path as given.
        path: String,
    },

    /// A cgroup directory could not be created.
    #[error("create cgroup directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A cgroup file or directory could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The kernel refused a value written to a cgroup file.
    #[error("write {value:?} to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The value that was refused.
        value: String,
        /// The underlying error (`EINVAL` usually means the value is out of range).
        source: std::io::Error,
    },

    /// A cgroup file to be written does not exist.
    #[error(
        "cannot write {value:?} to {path}: the file does not exist (is the controller mounted, \
         or enabled in the parent's cgroup.subtree_control?)"
    )]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// The value that was to be written.
        value: String,
    },

    /// A cgroup file held something this crate cannot parse.
    #[error("parse {path}: expected {expected}, found {content:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held (or the offending part).
        content: String,
        /// What was expected.
        expected: &'static str,
    },

    /// A resource needs a cgroup v1 controller whose hierarchy is not mounted.
    #[error(
        "{file} needs the cgroup v1 controller {controller:?}, which is not mounted on this host"
    )]
    ControllerNotMounted {
        /// The controller.
        controller: String,
        /// The file that was to be written.
        file: String,
    },

    /// A resource needs a cgroup v2 controller the hierarchy does not offer.
    #[error("{file} needs the cgroup v2 controller {controller:?}, which {path} does not offer")]
    ControllerUnavailable {
        /// The controller.
        controller: String,
        /// The file that was to be written.
        file: String,
        /// The `cgroup.controllers` file that lacks it.
        path: PathBuf,
    },

    /// A resource value that cannot be mapped to a cgroup setting.
    #[error("invalid {field} {value}: {reason}")]
    InvalidResource {
        /// The OCI field, e.g. `memory.swap`.
        field: &'static str,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },

    /// A resource this cgroup version cannot express.
    #[error("{what} is not supported with cgroup {version}")]
    Unsupported {
        /// The resource, e.g. `blkio weight`.
        what: String,
        /// `v1` or `v2`.
        version: &'static str,
    },

    /// Freezing or thawing did not settle before the deadline.
    #[error("{path} did not become {wanted} within {timeout:?} (last seen: {seen:?})")]
    FreezeTimeout {
        /// The state or events file that was watched.
        path: PathBuf,
        /// The state waited for.
        wanted: &'static str,
        /// What the file said last.
        seen: String,
        /// How long it was waited for.
        timeout: Duration,
    },

    /// The manager has no freezer (v1 hierarchy not mounted).
    #[error("cannot freeze {path}: no freezer hierarchy is mounted")]
    NoFreezer {
        /// The cgroup path.
        path: String,
    },

    /// The cgroup still had processes when the removal deadline passed.
    #[error(
        "cannot remove {path}: it still has processes {pids:?} after {timeout:?}; kill them first"
    )]
    StillHasProcesses {
        /// The cgroup directory.
        path: PathBuf,
        /// The processes still in it (or its children).
        pids: Vec<i32>,
        /// How long removal was retried.
        timeout: Duration,
    },

    /// A cgroup directory could not be removed.
    #[error("remove cgroup directory {path}: {source}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A signal could not be sent to a process of the cgroup.
    #[error("send {signal} to process {pid}: {source}")]
    Signal {
        /// The process.
        pid: i32,
        /// The signal.
        signal: nix::sys::signal::Signal,
        /// The underlying error.
        source: nix::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = CgroupError> = std::result::Result<T, E>;
