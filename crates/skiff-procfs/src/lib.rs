//! Container-sized `/proc` files, what LXCFS does, built into Skiff: inside a container,
//! `free`, `top`, `uptime` and `nproc`-like readers of `/proc/meminfo`, `/proc/cpuinfo`,
//! `/proc/stat`, `/proc/uptime`, `/proc/loadavg` and `/sys/devices/system/cpu/online` see the
//! container's memory limit, CPU quota and uptime instead of the host's; and programs that
//! ask `sysinfo(2)` instead (busybox `free`, `uptime`) get the same figures from the server's
//! seccomp agent (`agent.rs`, [`sysinfo`]), which the containers' notify rule reaches.
//!
//! One FUSE server per data root ([`server`], the hidden `skiff procfs serve` command)
//! serves the six files under `DATA/procfs/mnt` ([`ProcfsDir`]). Each read is answered for
//! the process making it: the kernel puts its pid in the request, `/proc/PID/cgroup` names
//! its cgroup, and the file is rendered from the host's own file plus that cgroup's figures
//! ([`figures`], [`meminfo`], [`cpu`], [`times`], all pure and unit-tested). So one server
//! serves every container, and the engine only bind-mounts the files over `/proc/...` in
//! each container's spec.
//!
//! The engine starts the server on demand ([`client::ensure`], fork+exec of the `skiff`
//! binary, never a thread of the single-threaded monitor) after registering the container
//! as a user ([`client::register`]); the server unmounts itself and exits once no
//! registered user has been alive for its idle time. A server that cannot start (no
//! `/dev/fuse`) is not fatal: the engine runs the container with the host's files and says
//! so once in the monitor's log.

pub mod affinity;
mod agent;
pub mod client;
pub mod cpu;
pub mod figures;
mod fs;
pub mod meminfo;
pub mod server;
pub mod sysinfo;
pub mod times;

use std::path::{Path, PathBuf};

pub use client::{ensure, is_served, register, stop, unregister};
pub use figures::Figures;

/// The files the server provides, by name under the mount point.
pub const FILES: [&str; 6] = ["meminfo", "cpuinfo", "stat", "uptime", "loadavg", "online"];

/// Where file `name` of [`FILES`] goes in a container: `/proc/<name>`, except `online`,
/// which is `/sys/devices/system/cpu/online`.
pub fn destination(name: &str) -> String {
    match name {
        "online" => "/sys/devices/system/cpu/online".to_string(),
        _ => format!("/proc/{name}"),
    }
}

/// Why starting or running the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
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
    /// The kernel has no FUSE device here.
    #[error(
        "/dev/fuse is missing: load the fuse module (modprobe fuse) for container-sized /proc files"
    )]
    NoFuse,
    /// The server did not come up.
    #[error("the /proc server for {} did not start: {detail} (see {})", data_root.display(), log.display())]
    NotStarted {
        /// The data root.
        data_root: PathBuf,
        /// What happened.
        detail: String,
        /// The server's log.
        log: PathBuf,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What was done.
        op: &'static str,
        /// The error.
        source: nix::errno::Errno,
    },
    /// The cgroup mounts could not be read.
    #[error(transparent)]
    Cgroups(#[from] skiff_cgroups::LayoutError),
}

impl ProcfsError {
    /// A closure building [`ProcfsError::Io`] for `op` on `path`.
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ProcfsError {
        let path = path.into();
        move |source| ProcfsError::Io { op, path, source }
    }
}

/// Result of this crate's operations.
pub type Result<T> = std::result::Result<T, ProcfsError>;

/// The server's files under a data root:
///
/// ```text
/// DATA/procfs/mnt/{meminfo,cpuinfo,stat,uptime,loadavg}   the FUSE mount
///             server.lock     held (flock) by the one running server
///             users.lock      held shared while a user registers, exclusively while the
///                             server decides it is idle (no user slips in as it leaves)
///             server.pid      the running server's pid
///             server.log      its diagnostics
///             users/<id>      "PID START" of each user (a container's monitor)
///             seccomp.sock    the seccomp agent: containers' listeners for sysinfo(2)
/// ```
#[derive(Debug, Clone)]
pub struct ProcfsDir {
    dir: PathBuf,
}

impl ProcfsDir {
    /// The server's directory under `data_root`.
    pub fn new(data_root: &Path) -> ProcfsDir {
        ProcfsDir {
            dir: data_root.join("procfs"),
        }
    }

    /// `DATA/procfs`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The mount point.
    pub fn mount_point(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    /// The file the mount serves as `/proc/<name>`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.mount_point().join(name)
    }

    /// The server's lock.
    pub fn server_lock(&self) -> PathBuf {
        self.dir.join("server.lock")
    }

    /// The users' lock.
    pub fn users_lock(&self) -> PathBuf {
        self.dir.join("users.lock")
    }

    /// The running server's pid.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("server.pid")
    }

    /// The server's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The registered users.
    pub fn users(&self) -> PathBuf {
        self.dir.join("users")
    }

    /// The seccomp agent's socket (`linux.seccomp.listenerPath` of the containers).
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("seccomp.sock")
    }
}
