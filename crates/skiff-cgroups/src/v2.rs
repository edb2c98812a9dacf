//! The cgroup v2 manager: one directory in the unified hierarchy.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oci_spec::runtime::LinuxResources;

use crate::error::{CgroupError, Result};
use crate::fsio::{
    create_dir, execute, pids_recursive, read_optional, remove_cgroup, wait_for, write_file,
};
use crate::manager::{CgroupManager, DEFAULT_TIMEOUT, FreezerState, signal_frozen};
use crate::path::CgroupPath;
use crate::plan::{self, Controller, V2Facts};
use crate::stats::{self, Stats};

/// A cgroup on a unified (cgroup v2) host.
#[derive(Debug, Clone)]
pub struct V2Manager {
    root: PathBuf,
    path: CgroupPath,
    timeout: Duration,
}

impl V2Manager {
    /// A manager for `path` in the cgroup2 hierarchy mounted at `root` (a temp dir in tests).
    pub fn new(root: &Path, path: CgroupPath) -> V2Manager {
        V2Manager {
            root: root.to_path_buf(),
            path,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Changes how long freezing, thawing and removal wait (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> V2Manager {
        self.timeout = timeout;
        self
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> PathBuf {
        self.path.under(&self.root)
    }

    /// The controllers the cgroup has: its parent's `cgroup.subtree_control` (which is what the
    /// kernel shows as the cgroup's own `cgroup.controllers`).
    fn enabled_controllers(&self) -> Result<(BTreeSet<String>, PathBuf)> {
        let dir = self.dir();
        let file = match dir.parent() {
            Some(parent) if dir != self.root => parent.join("cgroup.subtree_control"),
            _ => dir.join("cgroup.controllers"),
        };
        let text = read_optional(&file)?.unwrap_or_default();
        Ok((words(&text), file))
    }

    fn facts(&self) -> V2Facts {
        let dir = self.dir();
        V2Facts {
            swap: dir.join("memory.swap.max").exists(),
            io_bfq_weight: dir.join("io.bfq.weight").exists(),
        }
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let dir = self.dir();
        write_file(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
        let events = dir.join("cgroup.events");
        let want = u64::from(frozen);
        let mut seen = String::new();
        let settled = wait_for(self.timeout, || {
            let text = read_optional(&events)?.unwrap_or_default();
            let done = stats::flat_keyed(&text, "frozen") == Some(want);
            seen = text;
            Ok(done)
        })?;
        if settled {
            return Ok(());
        }
        if frozen {
            // Do not leave a half-frozen container behind.
            let _ = write_file(&dir.join("cgroup.freeze"), "0");
        }
        Err(CgroupError::FreezeTimeout {
            path: events,
            wanted: if frozen { "frozen 1" } else { "frozen 0" },
            seen: seen.trim().to_string(),
            timeout: self.timeout,
        })
    }
}

/// Controller names in a `cgroup.controllers` or `cgroup.subtree_control` file. A leading `+`
/// is dropped: the kernel never shows one, but a temp-dir stand-in keeps what was written.
fn words(text: &str) -> BTreeSet<String> {
    text.split_whitespace()
        .map(|word| word.trim_start_matches('+').to_string())
        .collect()
}

impl CgroupManager for V2Manager {
    fn path(&self) -> &CgroupPath {
        &self.path
    }

    fn create(&self) -> Result<()> {
        // Walk from the root down; every ancestor of the new cgroup delegates all it has.
        let mut dir = self.root.clone();
        let mut inherited: Option<BTreeSet<String>> = None;
        for part in self.path.relative().components() {
            let available_file = dir.join("cgroup.controllers");
            let available = match (read_optional(&available_file)?, inherited.take()) {
                (Some(text), _) => words(&text),
                // A level we just made: the kernel fills its cgroup.controllers with what the
                // level above enabled, so that is what it has (a temp-dir cgroupfs has no file).
                (None, Some(inherited)) => inherited,
                (None, None) => {
                    return Err(CgroupError::Read {
                        path: available_file,
                        source: std::io::ErrorKind::NotFound.into(),
                    });
                }
            };
            let subtree = dir.join("cgroup.subtree_control");
            let enabled = words(&read_optional(&subtree)?.unwrap_or_default());
            let missing: Vec<String> = available
                .difference(&enabled)
                .map(|c| format!("+{c}"))
                .collect();
            if !missing.is_empty() {
                write_file(&subtree, &missing.join(" "))?;
            }
            inherited = Some(available);
            dir.push(part);
            create_dir(&dir)?;
        }
        Ok(())
    }

    fn add_process(&self, pid: i32) -> Result<()> {
        write_file(&self.dir().join("cgroup.procs"), &pid.to_string())
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        let writes = plan::v2(resources, &self.facts())?;
        let (enabled, enabled_file) = self.enabled_controllers()?;
        let dir = self.dir();
        execute(&writes, |write| {
            let name = write.controller.name();
            if write.controller != Controller::Core && !enabled.contains(name) {
                return Err(CgroupError::ControllerUnavailable {
                    controller: name.to_string(),
                    file: write.file.clone(),
                    path: enabled_file.clone(),
                });
            }
            Ok(dir.clone())
        })
    }

    fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn freezer_state(&self) -> Result<FreezerState> {
        let dir = self.dir();
        let asked = read_optional(&dir.join("cgroup.freeze"))?
            .and_then(|text| stats::parse_u64(&text))
            .unwrap_or(0);
        let frozen = stats::read_keyed(&dir.join("cgroup.events"), "frozen")?.unwrap_or(0);
        Ok(match (asked, frozen) {
            (_, 1) => FreezerState::Frozen,
            (1, _) => FreezerState::Freezing,
            _ => FreezerState::Thawed,
        })
    }

    fn stats(&self) -> Result<Stats> {
        stats::v2_stats(&self.dir())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        pids_recursive(&self.dir())
    }

    fn kill_all(&self, signal: Signal) -> Result<()> {
        let kill = self.dir().join("cgroup.kill");
        if signal == Signal::SIGKILL && kill.exists() {
            return write_file(&kill, "1");
        }
        signal_frozen(self, signal)
    }

    fn destroy(&self) -> Result<()> {
        remove_cgroup(&self.dir(), Instant::now() + self.timeout, self.timeout)
    }
}
