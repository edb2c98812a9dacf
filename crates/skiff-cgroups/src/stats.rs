//! Usage figures of a cgroup, and the pure parsers for the kernel's file formats.

use std::path::Path;

use crate::error::{CgroupError, Result};
use crate::fsio::read_optional;

/// What a cgroup has used. Figures whose file is absent (controller not mounted, older kernel)
/// are `0` or `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// CPU time.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
    /// Processes.
    pub pids: PidsStats,
}

/// CPU time used, in nanoseconds (v2 reports microseconds; they are converted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    /// Total CPU time (v1 `cpuacct.usage`, v2 `cpu.stat usage_usec`).
    pub usage_ns: u64,
    /// Time in user mode, if the kernel reports it.
    pub user_ns: Option<u64>,
    /// Time in kernel mode, if the kernel reports it.
    pub system_ns: Option<u64>,
    /// CFS periods that have elapsed with runnable tasks.
    pub periods: Option<u64>,
    /// Periods in which the cgroup hit its quota.
    pub throttled_periods: Option<u64>,
    /// Total time throttled.
    pub throttled_ns: Option<u64>,
}

/// Memory used, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Current usage (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage_bytes: u64,
    /// Highest usage seen (v1 `memory.max_usage_in_bytes`, v2 `memory.peak` on 5.19+).
    pub peak_bytes: Option<u64>,
    /// The limit in force; `None` means unlimited.
    pub limit_bytes: Option<u64>,
    /// Processes killed by the OOM killer (v1 `memory.oom_control`, v2 `memory.events`).
    pub oom_kills: Option<u64>,
}

/// Process counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsStats {
    /// Processes and threads now in the cgroup (`pids.current`).
    pub current: u64,
    /// The limit in force; `None` means unlimited.
    pub limit: Option<u64>,
}

/// v1 reports "unlimited" as a huge page-aligned number (`PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// Parses a single-number file such as `memory.current` (`text` is its content).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Parses a limit file that holds a number or `max` (`pids.max`, `memory.max`): `max` is `None`.
pub fn parse_limit(text: &str) -> Option<Option<u64>> {
    match text.trim() {
        "max" => Some(None),
        value => value.parse().ok().map(Some),
    }
}

/// The value of `key` in a flat-keyed file (`key value` lines: `cpu.stat`, `memory.events`,
/// `memory.oom_control`, `cgroup.events`).
pub fn flat_keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(char::is_whitespace)?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Reads a file with `parse`; an absent file is `None`, unparsable content an error.
fn read_with<T>(
    path: &Path,
    expected: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    parse(&text).map(Some).ok_or_else(|| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.trim().to_string(),
        expected,
    })
}

fn read_u64(path: &Path) -> Result<Option<u64>> {
    read_with(path, "a number", parse_u64)
}

fn read_limit(path: &Path) -> Result<Option<Option<u64>>> {
    read_with(path, "a number or max", parse_limit)
}

/// Reads `key` of a flat-keyed file; an absent file or key is `None`.
pub(crate) fn read_keyed(path: &Path, key: &str) -> Result<Option<u64>> {
    Ok(read_optional(path)?.and_then(|text| flat_keyed(&text, key)))
}

/// v1 figures from each controller's directory (`None` when that hierarchy is not mounted).
pub(crate) fn v1_stats(
    cpu: Option<&Path>,
    cpuacct: Option<&Path>,
    memory: Option<&Path>,
    pids: Option<&Path>,
) -> Result<Stats> {
    let mut stats = Stats::default();
    if let Some(dir) = cpuacct {
        stats.cpu.usage_ns = read_u64(&dir.join("cpuacct.usage"))?.unwrap_or(0);
        stats.cpu.user_ns = read_u64(&dir.join("cpuacct.usage_user"))?;
        stats.cpu.system_ns = read_u64(&dir.join("cpuacct.usage_sys"))?;
    }
    if let Some(dir) = cpu {
        let stat = dir.join("cpu.stat");
        stats.cpu.periods = read_keyed(&stat, "nr_periods")?;
        stats.cpu.throttled_periods = read_keyed(&stat, "nr_throttled")?;
        stats.cpu.throttled_ns = read_keyed(&stat, "throttled_time")?;
    }
    if let Some(dir) = memory {
        stats.memory.usage_bytes = read_u64(&dir.join("memory.usage_in_bytes"))?.unwrap_or(0);
        stats.memory.peak_bytes = read_u64(&dir.join("memory.max_usage_in_bytes"))?;
        stats.memory.limit_bytes =
            read_u64(&dir.join("memory.limit_in_bytes"))?.filter(|l| *l < V1_UNLIMITED);
        stats.memory.oom_kills = read_keyed(&dir.join("memory.oom_control"), "oom_kill")?;
    }
    if let Some(dir) = pids {
        stats.pids = pids_stats(dir)?;
    }
    Ok(stats)
}

/// v2 figures from the cgroup's directory.
pub(crate) fn v2_stats(dir: &Path) -> Result<Stats> {
    let mut stats = Stats::default();
    let stat = dir.join("cpu.stat");
    let usec = |key| -> Result<Option<u64>> {
        Ok(read_keyed(&stat, key)?.map(|us| us.saturating_mul(1000)))
    };
    stats.cpu.usage_ns = usec("usage_usec")?.unwrap_or(0);
    stats.cpu.user_ns = usec("user_usec")?;
    stats.cpu.system_ns = usec("system_usec")?;
    stats.cpu.periods = read_keyed(&stat, "nr_periods")?;
    stats.cpu.throttled_periods = read_keyed(&stat, "nr_throttled")?;
    stats.cpu.throttled_ns = usec("throttled_usec")?;
    stats.memory.usage_bytes = read_u64(&dir.join("memory.current"))?.unwrap_or(0);
    stats.memory.peak_bytes = read_u64(&dir.join("memory.peak"))?;
    stats.memory.limit_bytes = read_limit(&dir.join("memory.max"))?.flatten();
    stats.memory.oom_kills = read_keyed(&dir.join("memory.events"), "oom_kill")?;
    stats.pids = pids_stats(dir)?;
    Ok(stats)
}

fn pids_stats(dir: &Path) -> Result<PidsStats> {
    Ok(PidsStats {
        current: read_u64(&dir.join("pids.current"))?.unwrap_or(0),
        limit: read_limit(&dir.join("pids.max"))?.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_files_give_the_named_value() {
        let cpu_stat = "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 3\n";
        assert_eq!(flat_keyed(cpu_stat, "usage_usec"), Some(1500));
        assert_eq!(flat_keyed(cpu_stat, "nr_periods"), Some(3));
        assert_eq!(flat_keyed(cpu_stat, "usage"), None);
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(flat_keyed(oom_control, "oom_kill"), Some(2));
    }

    #[test]
    fn limits_parse_max_as_unlimited() {
        assert_eq!(parse_limit("max\n"), Some(None));
        assert_eq!(parse_limit("8\n"), Some(Some(8)));
        assert_eq!(parse_limit("eight"), None);
    }

    #[test]
    fn v1_stats_read_each_controller_and_treat_the_huge_limit_as_unlimited() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(
            d.join("cpu.stat"),
            "nr_periods 10\nnr_throttled 4\nthrottled_time 99\n",
        )
        .unwrap();
        std::fs::write(d.join("memory.usage_in_bytes"), "4096\n").unwrap();
        std::fs::write(d.join("memory.max_usage_in_bytes"), "8192\n").unwrap();
        std::fs::write(d.join("memory.limit_in_bytes"), "9223372036854771712\n").unwrap();
        std::fs::write(
            d.join("memory.oom_control"),
            "oom_kill_disable 0\noom_kill 1\n",
        )
        .unwrap();
        std::fs::write(d.join("pids.current"), "3\n").unwrap();
        std::fs::write(d.join("pids.max"), "max\n").unwrap();
        let stats = v1_stats(Some(d), Some(d), Some(d), Some(d)).unwrap();
        assert_eq!(stats.cpu.usage_ns, 123_456_789);
        assert_eq!(stats.cpu.user_ns, None);
        assert_eq!(stats.cpu.throttled_periods, Some(4));
        assert_eq!(stats.memory.usage_bytes, 4096);
        assert_eq!(stats.memory.peak_bytes, Some(8192));
        assert_eq!(stats.memory.limit_bytes, None);
        assert_eq!(stats.memory.oom_kills, Some(1));
        assert_eq!(
            stats.pids,
            PidsStats {
                current: 3,
                limit: None
            }
        );
    }

    #[test]
    fn unparsable_stats_name_the_file_and_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory.current"), "lots\n").unwrap();
        let err = v2_stats(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("memory.current") && text.contains("lots"),
            "{text}"
        );
    }
}
