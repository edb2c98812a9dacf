//! The one interface to a cgroup, whatever the host's layout: [`CgroupManager`], implemented by
//! [`V1Manager`], [`V2Manager`] and the [`Manager`] that picks between them.

use std::time::Duration;

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

use crate::error::Result;
use crate::layout::{CgroupLayout, Mounts};
use crate::path::CgroupPath;
use crate::stats::Stats;
use crate::v1::V1Manager;
use crate::v2::V2Manager;

/// How long freezing, thawing and removal wait for the kernel by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a cgroup's processes may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    /// Running normally.
    Thawed,
    /// Asked to freeze; not every process has stopped yet.
    Freezing,
    /// Every process is stopped.
    Frozen,
}

/// Everything the runtime and the node agent do with one cgroup.
pub trait CgroupManager {
    /// The cgroup's path below each hierarchy root.
    fn path(&self) -> &CgroupPath;

    /// Creates the cgroup (and its missing ancestors). Idempotent.
    ///
    /// v1: a directory in every mounted hierarchy, with `cpuset.cpus`/`cpuset.mems` copied down
    /// from the parent into each new level (the kernel leaves them empty, and an empty cpuset
    /// refuses processes). v2: the directory, after enabling every available controller in each
    /// ancestor's `cgroup.subtree_control`.
    fn create(&self) -> Result<()>;

    /// Moves a process (its whole thread group) into the cgroup, through `cgroup.procs`.
    fn add_process(&self, pid: i32) -> Result<()>;

    /// Applies OCI resource limits. Can be called again to update them (`runc update`).
    fn apply(&self, resources: &LinuxResources) -> Result<()>;

    /// Stops every process in the cgroup and waits until the kernel says they are frozen.
    fn freeze(&self) -> Result<()>;

    /// Lets the processes run again and waits until the kernel says so.
    fn thaw(&self) -> Result<()>;

    /// Whether the cgroup is frozen now.
    fn freezer_state(&self) -> Result<FreezerState>;

    /// CPU, memory and process figures.
    fn stats(&self) -> Result<Stats>;

    /// Every process in the cgroup and the cgroups below it, sorted.
    fn pids(&self) -> Result<Vec<i32>>;

    /// Sends `signal` to every process in the cgroup. On v2, `SIGKILL` goes through
    /// `cgroup.kill` when the kernel has it; otherwise the cgroup is frozen while the processes
    /// are listed and signalled, so none can fork a child that escapes, and then thawed (also
    /// when it was frozen before, so a paused container can act on the signal).
    fn kill_all(&self, signal: Signal) -> Result<()>;

    /// Removes the cgroup directories, retrying until the timeout while processes exit. Fails
    /// with [`CgroupError::StillHasProcesses`](crate::CgroupError::StillHasProcesses) if some
    /// remain. A cgroup that does not exist is already destroyed.
    fn destroy(&self) -> Result<()>;
}

/// The manager for the host's layout: v1 hierarchies on legacy and hybrid hosts (where the
/// controllers live), cgroup2 on unified hosts.
///
/// ```no_run
/// use skiff_cgroups::{CgroupManager, Manager, Mounts};
/// use oci_spec::runtime::{LinuxCpuBuilder, LinuxResourcesBuilder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mounts = Mounts::of_this_process()?;
/// let cgroup = Manager::new(&mounts, "/skiff/abc")?;
/// cgroup.create()?;
/// let resources = LinuxResourcesBuilder::default()
///     .cpu(LinuxCpuBuilder::default().quota(50_000i64).period(100_000u64).build()?)
///     .build()?;
/// cgroup.apply(&resources)?;
/// cgroup.add_process(std::process::id() as i32)?;
/// let stats = cgroup.stats()?;
/// println!("{} ns of CPU", stats.cpu.usage_ns);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub enum Manager {
    /// cgroup v1 (legacy or hybrid host).
    V1(V1Manager),
    /// cgroup v2 (unified host).
    V2(V2Manager),
}

impl Manager {
    /// A manager for the cgroup `path` (e.g. `/skiff/<id>` or an OCI `cgroupsPath`) on a host
    /// with these mounts. Nothing is created until [`CgroupManager::create`].
    pub fn new(mounts: &Mounts, path: &str) -> Result<Manager> {
        let path = CgroupPath::parse(path)?;
        Ok(match (mounts.layout()?, &mounts.v2) {
            (CgroupLayout::Unified, Some(root)) => Manager::V2(V2Manager::new(root, path)),
            _ => Manager::V1(V1Manager::new(mounts, path)),
        })
    }

    /// Changes how long freezing, thawing and removal wait (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(self, timeout: Duration) -> Manager {
        match self {
            Manager::V1(m) => Manager::V1(m.with_timeout(timeout)),
            Manager::V2(m) => Manager::V2(m.with_timeout(timeout)),
        }
    }

    /// `1` or `2`.
    pub fn version(&self) -> u8 {
        match self {
            Manager::V1(_) => 1,
            Manager::V2(_) => 2,
        }
    }

    fn inner(&self) -> &dyn CgroupManager {
        match self {
            Manager::V1(m) => m,
            Manager::V2(m) => m,
        }
    }
}

impl CgroupManager for Manager {
    fn path(&self) -> &CgroupPath {
        self.inner().path()
    }

    fn create(&self) -> Result<()> {
        self.inner().create()
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        self.inner().add_process(pid)
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        self.inner().apply(resources)
    }

    fn freeze(&self) -> Result<()> {
        self.inner().freeze()
    }

    fn thaw(&self) -> Result<()> {
        self.inner().thaw()
    }

    fn freezer_state(&self) -> Result<FreezerState> {
        self.inner().freezer_state()
    }

    fn stats(&self) -> Result<Stats> {
        self.inner().stats()
    }

    fn pids(&self) -> Result<Vec<i32>> {
        self.inner().pids()
    }

    fn kill_all(&self, signal: Signal) -> Result<()> {
        self.inner().kill_all(signal)
    }

    fn destroy(&self) -> Result<()> {
        self.inner().destroy()
    }
}

/// Sends `signal` to each pid; a process that has already gone is fine.
pub(crate) fn signal_each(pids: &[i32], signal: Signal) -> Result<()> {
    for &pid in pids {
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(source) => {
                return Err(crate::CgroupError::Signal {
                    pid,
                    signal,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Freeze, signal, thaw: shared by both managers for signals other than a `cgroup.kill`.
pub(crate) fn signal_frozen(manager: &dyn CgroupManager, signal: Signal) -> Result<()> {
    let frozen = manager.freeze().is_ok();
    let result = manager.pids().and_then(|pids| signal_each(&pids, signal));
    if frozen {
        manager.thaw()?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_hybrid_host_gets_the_v1_manager_and_a_unified_host_v2() {
        let mut mounts = Mounts::default();
        mounts
            .v1
            .insert("memory".into(), PathBuf::from("/sys/fs/cgroup/memory"));
        mounts.v2 = Some(PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(Manager::new(&mounts, "/skiff/a").unwrap().version(), 1);
        mounts.v1.clear();
        mounts.v2 = Some(PathBuf::from("/sys/fs/cgroup"));
        let manager = Manager::new(&mounts, "skiff/a").unwrap();
        assert_eq!(manager.version(), 2);
        assert_eq!(manager.path().to_string(), "/skiff/a");
    }

    #[test]
    fn no_cgroup_mounts_is_an_error() {
        assert!(Manager::new(&Mounts::default(), "/skiff/a").is_err());
    }
}
