//! What a running container uses now (`skiff stats`) and which host processes are its
//! (`skiff top`), read from its cgroup (v1 or v2, through `skiff-cgroups`) and from its init's
//! `/proc/PID/net/dev`. The figures are Docker's: memory without the inactive file cache,
//! network bytes of every interface but loopback, block I/O bytes read and written.

use std::path::{Path, PathBuf};

use skiff_cgroups::{CgroupError, CgroupManager, LayoutError, Manager, Mounts};

use crate::engine::{Container, Engine};
use crate::record::{NetworkMode, Status};
use crate::{EngineError, Result};

/// Why a container's cgroup could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The host's cgroup mounts could not be read.
    #[error("cgroup mounts for container {id}: {source}")]
    Layout {
        /// The container.
        id: String,
        /// The error (boxed: engine errors stay small).
        source: Box<LayoutError>,
    },
    /// The container's cgroup could not be read.
    #[error("cgroup of container {id}: {source}")]
    Cgroup {
        /// The container.
        id: String,
        /// The error (boxed: engine errors stay small).
        source: Box<CgroupError>,
    },
}

/// One sample of a container's use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// CPU time used since it started, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use (without the inactive file cache), in bytes.
    pub memory_bytes: u64,
    /// The memory limit, if one applies.
    pub memory_limit: Option<u64>,
    /// Bytes received on its network interfaces (not loopback).
    pub net_rx: u64,
    /// Bytes sent on its network interfaces (not loopback).
    pub net_tx: u64,
    /// Bytes read from block devices.
    pub block_read: u64,
    /// Bytes written to block devices.
    pub block_write: u64,
    /// Processes and threads.
    pub pids: u64,
}

/// The container's cgroup, for the layout of this host.
fn cgroup(container: &Container) -> Result<(Manager, Mounts, String)> {
    let mounts = Mounts::of_this_process().map_err(|source| UsageError::Layout {
        id: container.id().to_string(),
        source: Box::new(source),
    })?;
    let path = crate::spec::cgroups_path(&container.config);
    let manager = Manager::new(&mounts, &path).map_err(cgroup_error(container))?;
    Ok((manager, mounts, path))
}

/// A closure building [`UsageError::Cgroup`] for `container`.
fn cgroup_error(container: &Container) -> impl FnOnce(CgroupError) -> EngineError {
    let id = container.id().to_string();
    move |source| {
        UsageError::Cgroup {
            id,
            source: Box::new(source),
        }
        .into()
    }
}

/// The directory of `path` in the hierarchy of v1 `controller` (or in cgroup2 for `v2`).
fn controller_dir(
    manager: &Manager,
    mounts: &Mounts,
    controller: &str,
    path: &str,
) -> Option<PathBuf> {
    let root = match manager {
        Manager::V2(_) => mounts.v2.clone()?,
        Manager::V1(_) => mounts.v1.get(controller)?.clone(),
    };
    Some(root.join(path.trim_start_matches('/')))
}

impl Engine {
    /// The host pids of the container's processes (from its cgroup), sorted.
    pub fn processes(&self, container: &Container) -> Result<Vec<i32>> {
        if container.status() != Status::Running {
            return Err(EngineError::NotRunning {
                id: container.id().to_string(),
            });
        }
        let (manager, _, _) = cgroup(container)?;
        manager.pids().map_err(cgroup_error(container))
    }

    /// What the container uses now; all zeros for a container that does not run.
    pub fn usage(&self, container: &Container) -> Result<Usage> {
        if container.status() != Status::Running {
            return Ok(Usage::default());
        }
        let (manager, mounts, path) = cgroup(container)?;
        let stats = manager.stats().map_err(cgroup_error(container))?;
        let memory_dir = controller_dir(&manager, &mounts, "memory", &path);
        let inactive = memory_dir
            .and_then(|d| std::fs::read_to_string(d.join("memory.stat")).ok())
            .and_then(|text| inactive_file(&text))
            .unwrap_or(0);
        let (block_read, block_write) =
            match (&manager, controller_dir(&manager, &mounts, "blkio", &path)) {
                (Manager::V2(_), Some(dir)) => std::fs::read_to_string(dir.join("io.stat"))
                    .map(|t| io_stat(&t))
                    .unwrap_or_default(),
                (Manager::V1(_), Some(dir)) => {
                    std::fs::read_to_string(dir.join("blkio.throttle.io_service_bytes_recursive"))
                        .or_else(|_| {
                            std::fs::read_to_string(dir.join("blkio.throttle.io_service_bytes"))
                        })
                        .map(|t| io_service_bytes(&t))
                        .unwrap_or_default()
                }
                _ => (0, 0),
            };
        let joins_network = container
            .config
            .join_namespaces
            .iter()
            .any(|n| n.kind == "network" && n.path.is_empty());
        let (net_rx, net_tx) = if container.config.network == NetworkMode::Host || joins_network {
            // The host's interfaces are not the container's.
            (0, 0)
        } else {
            let dev = Path::new("/proc")
                .join(container.state.pid.to_string())
                .join("net/dev");
            std::fs::read_to_string(dev)
                .map(|t| net_dev(&t))
                .unwrap_or_default()
        };
        Ok(Usage {
            cpu_ns: stats.cpu.usage_ns,
            memory_bytes: stats.memory.usage_bytes.saturating_sub(inactive),
            memory_limit: stats.memory.limit_bytes.filter(|l| *l > 0),
            net_rx,
            net_tx,
            block_read,
            block_write,
            pids: stats.pids.current,
        })
    }
}

/// The inactive file cache of a `memory.stat` (v2 `inactive_file`, v1 `total_inactive_file`).
pub fn inactive_file(memory_stat: &str) -> Option<u64> {
    skiff_cgroups::flat_keyed(memory_stat, "total_inactive_file")
        .or_else(|| skiff_cgroups::flat_keyed(memory_stat, "inactive_file"))
}

/// Bytes read and written in a v2 `io.stat` (`MAJ:MIN rbytes=N wbytes=N ...` per device).
pub fn io_stat(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for field in text.split_whitespace() {
        if let Some(n) = field.strip_prefix("rbytes=") {
            read += n.parse::<u64>().unwrap_or(0);
        } else if let Some(n) = field.strip_prefix("wbytes=") {
            written += n.parse::<u64>().unwrap_or(0);
        }
    }
    (read, written)
}

/// Bytes read and written in a v1 `blkio.throttle.io_service_bytes` (`MAJ:MIN Read N`).
pub fn io_service_bytes(text: &str) -> (u64, u64) {
    let (mut read, mut written) = (0u64, 0u64);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, op, n] = fields.as_slice() {
            let n = n.parse::<u64>().unwrap_or(0);
            match *op {
                "Read" => read += n,
                "Write" => written += n,
                _ => {}
            }
        }
    }
    (read, written)
}

/// Bytes received and sent by every interface but loopback in a `/proc/PID/net/dev`.
pub fn net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0u64, 0u64);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let fields: Vec<u64> = counters
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        rx += fields.first().copied().unwrap_or(0);
        tx += fields.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_files_give_dockers_figures() {
        assert_eq!(
            io_stat("8:0 rbytes=4096 wbytes=512 rios=1 wios=1\n259:0 rbytes=1 wbytes=2\n"),
            (4097, 514)
        );
        assert_eq!(
            io_service_bytes("8:0 Read 100\n8:0 Write 20\n8:0 Sync 5\n8:0 Total 120\nTotal 120\n"),
            (100, 20)
        );
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  eth0:    2048       5    0    0    0     0          0         0      512       4    0    0    0     0       0          0\n";
        assert_eq!(net_dev(dev), (2048, 512));
        assert_eq!(inactive_file("anon 10\ninactive_file 300\n"), Some(300));
        assert_eq!(
            inactive_file("cache 5\ninactive_file 7\ntotal_inactive_file 9\n"),
            Some(9)
        );
    }
}
