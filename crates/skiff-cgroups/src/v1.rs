//! The cgroup v1 manager: one directory per mounted hierarchy (plus, on a hybrid host, one in the
//! cgroup2 mount, so the container is tracked there too, as runc does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

use crate::error::{CgroupError, Result};
use crate::fsio::{
    create_dir, execute, pids_recursive, read_file, read_optional, remove_cgroup, wait_for,
    write_file,
};
use crate::layout::Mounts;
use crate::manager::{CgroupManager, DEFAULT_TIMEOUT, FreezerState, signal_frozen};
use crate::path::CgroupPath;
use crate::plan::{self, BlkioWeightFile, V1Facts};
use crate::stats::{self, Stats};

/// A cgroup on a v1 (legacy or hybrid) host.
#[derive(Debug, Clone)]
pub struct V1Manager {
    path: CgroupPath,
    /// Controller name (`cpu`, `memory`, `name=systemd` as `systemd` ...) to mount point.
    hierarchies: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount of a hybrid host.
    unified: Option<PathBuf>,
    timeout: Duration,
}

impl V1Manager {
    /// A manager for `path` in every v1 hierarchy of `mounts` (and in `mounts.v2`, if set, as
    /// the hybrid layout's process-tracking hierarchy). Point the mounts at temp dirs to test.
    pub fn new(mounts: &Mounts, path: CgroupPath) -> V1Manager {
        V1Manager {
            path,
            hierarchies: mounts.v1.clone(),
            unified: mounts.v2.clone(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Changes how long freezing, thawing and removal wait (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> V1Manager {
        self.timeout = timeout;
        self
    }

    /// This cgroup's directory in the hierarchy of `controller`, if that is mounted.
    pub fn dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies
            .get(controller)
            .map(|mount| self.path.under(mount))
    }

    /// Every directory this cgroup has: one per distinct mount point, then the unified one.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut mounts: Vec<&PathBuf> = self.hierarchies.values().collect();
        mounts.sort();
        mounts.dedup();
        let mut dirs: Vec<PathBuf> = mounts.into_iter().map(|m| self.path.under(m)).collect();
        dirs.extend(self.unified_dir());
        dirs
    }

    fn unified_dir(&self) -> Option<PathBuf> {
        self.unified.as_ref().map(|root| self.path.under(root))
    }

    /// Where processes are listed: any v1 hierarchy holds them all; prefer the usual ones.
    fn procs_dir(&self) -> Option<PathBuf> {
        ["pids", "freezer", "memory", "cpu", "cpuacct"]
            .iter()
            .find_map(|c| self.dir(c))
            .or_else(|| self.dirs().into_iter().next())
    }

    fn freezer(&self) -> Result<PathBuf> {
        self.dir("freezer").ok_or_else(|| CgroupError::NoFreezer {
            path: self.path.to_string(),
        })
    }

    /// Reads what the v1 mapping needs to know from the host.
    fn facts(&self) -> Result<V1Facts> {
        let mut facts = V1Facts::default();
        if let Some(memory) = self.dir("memory") {
            facts.memsw = memory.join("memory.memsw.limit_in_bytes").exists();
            let limit = memory.join("memory.limit_in_bytes");
            facts.current_memory_limit =
                read_optional(&limit)?.and_then(|text| stats::parse_u64(&text));
        }
        if let Some(blkio) = self.dir("blkio") {
            facts.blkio_weight = if blkio.join("blkio.weight").exists() {
                BlkioWeightFile::Cfq
            } else if blkio.join("blkio.bfq.weight").exists() {
                BlkioWeightFile::Bfq
            } else {
                BlkioWeightFile::None
            };
        }
        Ok(facts)
    }

    fn write_freezer(&self, state: &'static str) -> Result<()> {
        let file = self.freezer()?.join("freezer.state");
        write_file(&file, state)?;
        let mut seen = String::new();
        let mut polls = 0u32;
        let settled = wait_for(self.timeout, || {
            seen = read_file(&file)?.trim().to_string();
            polls += 1;
            // A freeze can stall on a task in an uninterruptible sleep; asking again helps.
            if state == "FROZEN" && seen == "FREEZING" && polls % 10 == 0 {
                write_file(&file, state)?;
            }
            Ok(seen == state)
        })?;
        if settled {
            return Ok(());
        }
        if state == "FROZEN" {
            // Do not leave a half-frozen container behind.
            let _ = write_file(&file, "THAWED");
        }
        Err(CgroupError::FreezeTimeout {
            path: file,
            wanted: state,
            seen,
            timeout: self.timeout,
        })
    }
}

/// Copies `cpuset.cpus` and `cpuset.mems` from `parent` into `child` where the child's are empty:
/// the kernel creates v1 cpusets empty, and an empty cpuset refuses every process.
fn inherit_cpuset(parent: &Path, child: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = read_optional(&child.join(file))?.unwrap_or_default();
        if own.trim().is_empty() {
            let inherited = read_file(&parent.join(file))?;
            write_file(&child.join(file), inherited.trim())?;
        }
    }
    Ok(())
}

impl CgroupManager for V1Manager {
    fn path(&self) -> &CgroupPath {
        &self.path
    }

    fn create(&self) -> Result<()> {
        let mut mounts: Vec<(&String, &PathBuf)> = self.hierarchies.iter().collect();
        mounts.sort_by(|a, b| a.1.cmp(b.1));
        mounts.dedup_by(|a, b| a.1 == b.1);
        let cpuset = self.hierarchies.get("cpuset");
        let mut roots: Vec<&PathBuf> = mounts.into_iter().map(|(_, m)| m).collect();
        roots.extend(self.unified.as_ref());
        for root in roots {
            let mut dir = root.clone();
            for part in self.path.relative().components() {
                let parent = dir.clone();
                dir.push(part);
                create_dir(&dir)?;
                if Some(root) == cpuset {
                    inherit_cpuset(&parent, &dir)?;
                }
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.dirs() {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        let writes = plan::v1(resources, &self.facts()?)?;
        execute(&writes, |write| {
            self.dir(write.controller.name())
                .ok_or_else(|| CgroupError::ControllerNotMounted {
                    controller: write.controller.name().to_string(),
                    file: write.file.clone(),
                })
        })
    }

    fn freeze(&self) -> Result<()> {
        self.write_freezer("FROZEN")
    }

    fn thaw(&self) -> Result<()> {
        self.write_freezer("THAWED")
    }

    fn freezer_state(&self) -> Result<FreezerState> {
        let file = self.freezer()?.join("freezer.state");
        let text = read_file(&file)?;
        match text.trim() {
            "THAWED" => Ok(FreezerState::Thawed),
            "FREEZING" => Ok(FreezerState::Freezing),
            "FROZEN" => Ok(FreezerState::Frozen),
            other => Err(CgroupError::Parse {
                path: file,
                content: other.to_string(),
                expected: "THAWED, FREEZING or FROZEN",
            }),
        }
    }

    fn stats(&self) -> Result<Stats> {
        stats::v1_stats(
            self.dir("cpu").as_deref(),
            self.dir("cpuacct").as_deref(),
            self.dir("memory").as_deref(),
            self.dir("pids").as_deref(),
        )
    }

    fn pids(&self) -> Result<Vec<i32>> {
        match self.procs_dir() {
            Some(dir) => pids_recursive(&dir),
            None => Ok(Vec::new()),
        }
    }

    fn kill_all(&self, signal: Signal) -> Result<()> {
        // Not cgroup.kill of the hybrid cgroup2 mount: a task frozen by the v1 freezer would not
        // die from it until thawed, and freeze-signal-thaw is atomic enough.
        signal_frozen(self, signal)
    }

    fn destroy(&self) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        for dir in self.dirs() {
            remove_cgroup(&dir, deadline, self.timeout)?;
        }
        Ok(())
    }
}
