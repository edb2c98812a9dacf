//! What this machine offers pods: CPUs and memory (the smaller of the hardware and the cgroup
//! limits the agent itself runs under), disk under the data directory, and the facts a Node's
//! `nodeInfo` reports.

use std::path::Path;

/// The node's capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// CPUs in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Bytes of the file system holding the data directory.
    pub ephemeral_storage_bytes: u64,
    /// How many pods the agent runs at most.
    pub pods: u32,
}

/// The kubelet's default `--max-pods`.
pub const MAX_PODS: u32 = 110;

impl Capacity {
    /// Measures this machine (`data_dir` names the file system of ephemeral storage).
    pub fn measure(data_dir: &Path) -> Capacity {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1);
        let mut cpu_millis = cpus * 1000;
        if let Some(limit) = cgroup_cpu_limit_millis() {
            cpu_millis = cpu_millis.min(limit.max(1));
        }
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mut memory_bytes = meminfo_field(&meminfo, "MemTotal").unwrap_or(0);
        if let Some(limit) = cgroup_memory_limit() {
            memory_bytes = memory_bytes.min(limit);
        }
        let (total, _) = disk(data_dir).unwrap_or((0, 0));
        Capacity {
            cpu_millis,
            memory_bytes,
            ephemeral_storage_bytes: total,
            pods: MAX_PODS,
        }
    }

    /// As a Node's `status.capacity` (and `allocatable`: nothing is reserved yet).
    pub fn to_json(&self) -> serde_json::Value {
        let cpu = if self.cpu_millis % 1000 == 0 {
            (self.cpu_millis / 1000).to_string()
        } else {
            format!("{}m", self.cpu_millis)
        };
        serde_json::json!({
            "cpu": cpu,
            "memory": format!("{}Ki", self.memory_bytes / 1024),
            "ephemeral-storage": format!("{}Ki", self.ephemeral_storage_bytes / 1024),
            "pods": self.pods.to_string(),
        })
    }
}

/// `MemTotal:  123 kB` → bytes.
pub fn meminfo_field(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// The memory limit of this process's cgroup (v2 `memory.max` or v1 `memory.limit_in_bytes`).
fn cgroup_memory_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let candidates = if controllers.is_empty() {
            vec![format!("/sys/fs/cgroup{path}/memory.max")]
        } else if controllers.split(',').any(|c| c == "memory") {
            vec![format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes")]
        } else {
            continue;
        };
        for file in candidates {
            if let Some(limit) = parse_limit(&std::fs::read_to_string(file).unwrap_or_default()) {
                return Some(limit);
            }
        }
    }
    None
}

/// A cgroup limit file's number; `max` and the v1 "unlimited" huge values are no limit.
pub fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value < (1 << 60)).then_some(value)
}

/// The CPU quota of this process's cgroup, in millicores.
fn cgroup_cpu_limit_millis() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.is_empty() {
            let text = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cpu.max")).ok();
            if let Some(limit) = text.as_deref().and_then(parse_cpu_max) {
                return Some(limit);
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            let read = |f: &str| {
                std::fs::read_to_string(format!("/sys/fs/cgroup/cpu,cpuacct{path}/{f}"))
                    .or_else(|_| std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{path}/{f}")))
                    .ok()
                    .and_then(|t| t.trim().parse::<i64>().ok())
            };
            if let (Some(quota), Some(period)) =
                (read("cpu.cfs_quota_us"), read("cpu.cfs_period_us"))
                && quota > 0
                && period > 0
            {
                return Some((quota as u64) * 1000 / period as u64);
            }
        }
    }
    None
}

/// cgroup v2 `cpu.max` (`QUOTA PERIOD` or `max PERIOD`) in millicores.
pub fn parse_cpu_max(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let quota: u64 = words.next()?.parse().ok()?;
    let period: u64 = words.next()?.parse().ok()?;
    (period > 0).then(|| quota * 1000 / period)
}

/// Total and available bytes of the file system holding `path`.
pub fn disk(path: &Path) -> Option<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = stat.fragment_size();
    Some((stat.blocks() * frag, stat.blocks_available() * frag))
}

/// A file's first line, trimmed (empty when unreadable).
pub fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_string())
        .unwrap_or_default()
}

/// `PRETTY_NAME` of `/etc/os-release`.
pub fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}

/// The kernel release (`uname -r`).
pub fn kernel_version() -> String {
    read_trimmed("/proc/sys/kernel/osrelease")
}

/// Kubernetes' name of this machine's architecture.
pub fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_limits_parse() {
        let info = "MemTotal:       24000000 kB\nMemFree:  1 kB\n";
        assert_eq!(meminfo_field(info, "MemTotal"), Some(24_000_000 * 1024));
        assert_eq!(meminfo_field(info, "MemAvailable"), None);
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
        assert_eq!(parse_cpu_max("150000 100000"), Some(1500));
        assert_eq!(parse_cpu_max("max 100000"), None);
    }

    #[test]
    fn capacity_is_written_as_quantities() {
        let c = Capacity {
            cpu_millis: 2000,
            memory_bytes: 4096 * 1024,
            ephemeral_storage_bytes: 2048,
            pods: 110,
        };
        let j = c.to_json();
        assert_eq!(j["cpu"], "2");
        assert_eq!(j["memory"], "4096Ki");
        assert_eq!(j["pods"], "110");
        let half = Capacity {
            cpu_millis: 1500,
            ..c
        };
        assert_eq!(half.to_json()["cpu"], "1500m");
        assert!(Capacity::measure(Path::new("/")).cpu_millis >= 1);
    }
}
