//! The figures of one cgroup that the rendered files need, as plain data ([`Figures`]), and
//! the reader that gathers them from cgroupfs for the process making a request
//! ([`Figures::of_process`]).
//!
//! The cgroup is the one `/proc/PID/cgroup` names: the `0::` line on a unified host, each
//! controller's own line on a legacy or hybrid host. Limits are the tightest of the cgroup
//! and its ancestors (a pod's limit applies to its containers). A figure whose file is
//! missing (controller not mounted, older kernel) is left at "unlimited" or zero, so the
//! rendered file falls back to the host's value rather than failing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use skiff_cgroups::{Mounts, flat_keyed, parse_limit, parse_u64};

/// v1 reports "unlimited" as a huge page-aligned number.
const V1_UNLIMITED: u64 = 1 << 62;

/// Memory figures, in bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Memory {
    /// The limit in force (tightest of the cgroup and its ancestors); `None`: unlimited.
    pub limit: Option<u64>,
    /// Current usage, page cache included.
    pub usage: u64,
    /// The swap limit; `None`: unlimited (the host's swap).
    pub swap_limit: Option<u64>,
    /// Swap in use.
    pub swap_usage: u64,
    /// Page cache (v1 `total_cache`, v2 `file`).
    pub cache: u64,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub anon: u64,
    /// `active_anon`.
    pub active_anon: u64,
    /// `inactive_anon`.
    pub inactive_anon: u64,
    /// `active_file`.
    pub active_file: u64,
    /// `inactive_file`.
    pub inactive_file: u64,
    /// `unevictable`.
    pub unevictable: u64,
    /// Shared memory (tmpfs, SysV).
    pub shmem: u64,
    /// Mapped files.
    pub mapped: u64,
    /// Dirty pages.
    pub dirty: u64,
    /// Pages under writeback.
    pub writeback: u64,
    /// Reclaimable kernel slab (v2 only).
    pub slab_reclaimable: u64,
    /// Unreclaimable kernel slab (v2 only).
    pub slab_unreclaimable: u64,
}

/// CPU figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cpu {
    /// The CFS quota and period in microseconds (tightest ratio of the cgroup and its
    /// ancestors); `None`: no quota.
    pub quota: Option<(u64, u64)>,
    /// The CPUs of the cgroup's cpuset; `None`: every CPU of the host.
    pub cpuset: Option<Vec<u32>>,
    /// CPU time used, in nanoseconds.
    pub usage_ns: u64,
    /// Of which in user mode, if the kernel says.
    pub user_ns: Option<u64>,
    /// Of which in kernel mode, if the kernel says.
    pub system_ns: Option<u64>,
}

/// How many tasks (threads) the cgroup has and in which state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tasks {
    /// Every thread.
    pub total: u64,
    /// Runnable (`R`).
    pub running: u64,
    /// In uninterruptible sleep (`D`).
    pub blocked: u64,
}

/// Everything the rendered files need to know about one cgroup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Memory.
    pub memory: Memory,
    /// CPU.
    pub cpu: Cpu,
    /// When the cgroup's oldest process started, in seconds since the host booted; `None`
    /// when the cgroup has no process (then the host's uptime is shown).
    pub started: Option<f64>,
    /// Threads and their states.
    pub tasks: Tasks,
}

/// Where one cgroup's files are, per controller (`None`: not mounted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupDirs {
    /// The root of each directory's hierarchy, where the ancestor walk stops.
    roots: BTreeMap<PathBuf, PathBuf>,
    /// memory controller.
    pub memory: Option<PathBuf>,
    /// cpu controller (CFS quota).
    pub cpu: Option<PathBuf>,
    /// cpuacct controller (v1) or cpu (v2): usage.
    pub cpuacct: Option<PathBuf>,
    /// cpuset controller.
    pub cpuset: Option<PathBuf>,
    /// Where the process and thread lists are.
    pub procs: Option<PathBuf>,
    /// Whether the files are cgroup v2's.
    pub v2: bool,
}

impl CgroupDirs {
    /// The cgroup of a process from the text of its `/proc/PID/cgroup` and the host's mounts.
    /// On a unified host the `0::` line; otherwise each v1 controller's line.
    pub fn from_proc_cgroup(text: &str, mounts: &Mounts) -> CgroupDirs {
        let mut dirs = CgroupDirs::default();
        let mut lines: Vec<(&str, &str)> = Vec::new();
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            lines.push((controllers, path.trim_start_matches('/')));
        }
        if mounts.v1.is_empty() {
            let Some(root) = &mounts.v2 else {
                return dirs;
            };
            let Some((_, path)) = lines.iter().find(|(c, _)| c.is_empty()) else {
                return dirs;
            };
            let dir = root.join(path);
            dirs.roots.insert(dir.clone(), root.clone());
            dirs.memory = Some(dir.clone());
            dirs.cpu = Some(dir.clone());
            dirs.cpuacct = Some(dir.clone());
            dirs.cpuset = Some(dir.clone());
            dirs.procs = Some(dir);
            dirs.v2 = true;
            return dirs;
        }
        let mut v1 = |controller: &str| -> Option<PathBuf> {
            let root = mounts.v1.get(controller)?;
            let (_, path) = lines
                .iter()
                .find(|(c, _)| c.split(',').any(|c| c == controller))?;
            let dir = root.join(path);
            dirs.roots.insert(dir.clone(), root.clone());
            Some(dir)
        };
        let memory = v1("memory");
        let cpu = v1("cpu");
        let cpuacct = v1("cpuacct");
        let cpuset = v1("cpuset");
        let procs = v1("pids").or_else(|| memory.clone());
        CgroupDirs {
            memory,
            cpu,
            cpuacct,
            cpuset,
            procs,
            ..dirs
        }
    }

    /// `dir` and its ancestors up to (and without) its hierarchy's root, innermost first.
    fn lineage<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = &'a Path> {
        let root = self.roots.get(dir).map(PathBuf::as_path);
        dir.ancestors()
            .take_while(move |d| Some(*d) != root && root.is_some_and(|r| d.starts_with(r)))
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path).as_deref().and_then(parse_u64)
}

impl Figures {
    /// The figures of the cgroup of process `pid` (a pid in this process's PID namespace).
    pub fn of_process(pid: u32, mounts: &Mounts) -> Figures {
        let text = read(Path::new(&format!("/proc/{pid}/cgroup"))).unwrap_or_default();
        Figures::of_cgroup(&CgroupDirs::from_proc_cgroup(&text, mounts))
    }

    /// The CPU figures alone of the cgroup of process `pid` (what `sched_getaffinity` needs).
    pub fn cpu_of_process(pid: u32, mounts: &Mounts) -> Cpu {
        let text = read(Path::new(&format!("/proc/{pid}/cgroup"))).unwrap_or_default();
        cpu(&CgroupDirs::from_proc_cgroup(&text, mounts))
    }

    /// The figures of one cgroup. (Each file needs only some of them: the parts are
    /// [`memory`], [`cpu`], [`started`] and [`tasks`].)
    pub fn of_cgroup(dirs: &CgroupDirs) -> Figures {
        Figures {
            memory: memory(dirs),
            cpu: cpu(dirs),
            started: started(dirs),
            tasks: tasks(dirs),
        }
    }
}

/// The memory figures of a cgroup.
pub fn memory(dirs: &CgroupDirs) -> Memory {
    let Some(dir) = dirs.memory.as_deref() else {
        return Memory::default();
    };
    let stat = read(&dir.join("memory.stat")).unwrap_or_default();
    let key = |k: &str| flat_keyed(&stat, k).unwrap_or(0);
    if dirs.v2 {
        let min_limit = |file: &str| {
            dirs.lineage(dir)
                .filter_map(|d| read(&d.join(file)).as_deref().and_then(parse_limit))
                .flatten()
                .min()
        };
        Memory {
            limit: min_limit("memory.max"),
            usage: read_u64(&dir.join("memory.current")).unwrap_or(0),
            swap_limit: min_limit("memory.swap.max"),
            swap_usage: read_u64(&dir.join("memory.swap.current")).unwrap_or(0),
            cache: key("file"),
            anon: key("anon"),
            active_anon: key("active_anon"),
            inactive_anon: key("inactive_anon"),
            active_file: key("active_file"),
            inactive_file: key("inactive_file"),
            unevictable: key("unevictable"),
            shmem: key("shmem"),
            mapped: key("file_mapped"),
            dirty: key("file_dirty"),
            writeback: key("file_writeback"),
            slab_reclaimable: key("slab_reclaimable"),
            slab_unreclaimable: key("slab_unreclaimable"),
        }
    } else {
        // v1's memory.stat already has the hierarchical limits; `total_*` count the subtree.
        let limited = |v: u64| (v < V1_UNLIMITED).then_some(v);
        let limit = flat_keyed(&stat, "hierarchical_memory_limit")
            .or_else(|| read_u64(&dir.join("memory.limit_in_bytes")))
            .and_then(limited);
        let usage = read_u64(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
        let memsw_limit = flat_keyed(&stat, "hierarchical_memsw_limit").and_then(limited);
        let memsw_usage = read_u64(&dir.join("memory.memsw.usage_in_bytes"));
        Memory {
            limit,
            usage,
            swap_limit: match (memsw_limit, limit) {
                (Some(both), Some(mem)) => Some(both.saturating_sub(mem)),
                _ => None,
            },
            swap_usage: memsw_usage.map_or(0, |both| both.saturating_sub(usage)),
            cache: key("total_cache"),
            anon: key("total_rss"),
            active_anon: key("total_active_anon"),
            inactive_anon: key("total_inactive_anon"),
            active_file: key("total_active_file"),
            inactive_file: key("total_inactive_file"),
            unevictable: key("total_unevictable"),
            shmem: key("total_shmem"),
            mapped: key("total_mapped_file"),
            dirty: key("total_dirty"),
            writeback: key("total_writeback"),
            slab_reclaimable: 0,
            slab_unreclaimable: 0,
        }
    }
}

/// The CPU figures of a cgroup.
pub fn cpu(dirs: &CgroupDirs) -> Cpu {
    let mut cpu = Cpu::default();
    if let Some(dir) = dirs.cpu.as_deref() {
        let quotas = dirs.lineage(dir).filter_map(|d| {
            if dirs.v2 {
                parse_cpu_max(&read(&d.join("cpu.max"))?)
            } else {
                let quota: i64 = read(&d.join("cpu.cfs_quota_us"))?.trim().parse().ok()?;
                let period = read_u64(&d.join("cpu.cfs_period_us"))?;
                (quota > 0 && period > 0).then_some((quota.unsigned_abs(), period))
            }
        });
        // The tightest ratio quota / period.
        cpu.quota = quotas.min_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)));
    }
    if let Some(dir) = dirs.cpuset.as_deref() {
        let file = if dirs.v2 {
            "cpuset.cpus.effective"
        } else {
            "cpuset.effective_cpus"
        };
        cpu.cpuset = read(&dir.join(file))
            .or_else(|| read(&dir.join("cpuset.cpus")))
            .and_then(|t| parse_cpu_list(&t))
            .filter(|l| !l.is_empty());
    }
    if let Some(dir) = dirs.cpuacct.as_deref() {
        if dirs.v2 {
            let stat = read(&dir.join("cpu.stat")).unwrap_or_default();
            let us = |k| flat_keyed(&stat, k).map(|v| v.saturating_mul(1000));
            cpu.usage_ns = us("usage_usec").unwrap_or(0);
            cpu.user_ns = us("user_usec");
            cpu.system_ns = us("system_usec");
        } else {
            cpu.usage_ns = read_u64(&dir.join("cpuacct.usage")).unwrap_or(0);
            cpu.user_ns = read_u64(&dir.join("cpuacct.usage_user"));
            cpu.system_ns = read_u64(&dir.join("cpuacct.usage_sys"));
        }
    }
    cpu
}

/// Parses v2's `cpu.max` (`QUOTA PERIOD`, `max PERIOD` for none).
pub fn parse_cpu_max(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?.parse().ok()?;
    let period = parts.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
    (period > 0 && quota > 0).then_some((quota, period))
}

/// Parses a CPU list (`0-3,8,10-11`) into CPU numbers, sorted.
pub fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

fn read_ids(path: &Path) -> Vec<u32> {
    read(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The fields of `/proc/PID/stat` after the command name: state first.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = read(Path::new(&format!("/proc/{pid}/stat")))?;
    let after = stat.get(stat.rfind(')')? + 1..)?;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Clock ticks per second of `/proc/PID/stat` times and `/proc/stat` (`USER_HZ`, 100 on every
/// architecture Linux exposes to user space).
pub const USER_HZ: u64 = 100;

/// When the oldest process of the cgroup started, in seconds since boot.
pub fn started(dirs: &CgroupDirs) -> Option<f64> {
    let pids = dirs
        .procs
        .as_deref()
        .map(|d| read_ids(&d.join("cgroup.procs")))
        .unwrap_or_default();
    oldest_start(&pids)
}

/// When the oldest of `pids` started, in seconds since boot.
fn oldest_start(pids: &[u32]) -> Option<f64> {
    pids.iter()
        .filter_map(|pid| stat_fields(*pid)?.get(19)?.parse::<u64>().ok())
        .min()
        .map(|ticks| ticks as f64 / USER_HZ as f64)
}

/// The threads of the cgroup and their states.
pub fn tasks(dirs: &CgroupDirs) -> Tasks {
    dirs.procs.as_deref().map(tasks_in).unwrap_or_default()
}

/// The threads listed in a cgroup directory (v1 `tasks`, v2 `cgroup.threads`) and their
/// states.
pub fn tasks_in(dir: &Path) -> Tasks {
    let mut ids = read_ids(&dir.join("tasks"));
    if ids.is_empty() {
        ids = read_ids(&dir.join("cgroup.threads"));
    }
    let mut tasks = Tasks {
        total: ids.len() as u64,
        ..Tasks::default()
    };
    for id in ids {
        match stat_fields(id).and_then(|f| f.first().cloned()).as_deref() {
            Some("R") => tasks.running += 1,
            Some("D") => tasks.blocked += 1,
            _ => {}
        }
    }
    tasks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn cpu_lists_and_cpu_max_parse() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11\n"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("1"), Some(vec![1]));
        assert_eq!(parse_cpu_list(""), Some(vec![]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some((150_000, 100_000)));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
    }

    #[test]
    fn a_unified_host_reads_the_v2_files_and_the_tightest_ancestor_limit() {
        let root = tempfile::tempdir().unwrap();
        let pod = root.path().join("kubepods/pod1");
        let ctr = pod.join("c1");
        write(&pod, "memory.max", "268435456\n");
        write(&pod, "cpu.max", "50000 100000\n");
        write(&ctr, "memory.max", "max\n");
        write(&ctr, "cpu.max", "200000 100000\n");
        write(&ctr, "memory.current", "1048576\n");
        write(&ctr, "memory.stat", "anon 4096\nfile 8192\nshmem 10\n");
        write(
            &ctr,
            "cpu.stat",
            "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\n",
        );
        write(&ctr, "cpuset.cpus.effective", "0-1\n");
        write(root.path(), "memory.max", "1024\n"); // the root is not a limit
        let mounts = Mounts {
            v1: BTreeMap::new(),
            v2: Some(root.path().to_path_buf()),
        };
        let dirs = CgroupDirs::from_proc_cgroup("0::/kubepods/pod1/c1\n", &mounts);
        assert!(dirs.v2);
        let f = Figures::of_cgroup(&dirs);
        assert_eq!(f.memory.limit, Some(256 << 20));
        assert_eq!(f.memory.usage, 1 << 20);
        assert_eq!(
            (f.memory.anon, f.memory.cache, f.memory.shmem),
            (4096, 8192, 10)
        );
        assert_eq!(f.cpu.quota, Some((50_000, 100_000)));
        assert_eq!(f.cpu.cpuset, Some(vec![0, 1]));
        assert_eq!(f.cpu.usage_ns, 2_000_000);
        assert_eq!(f.cpu.user_ns, Some(1_500_000));
        assert_eq!(f.started, None);
    }

    #[test]
    fn a_hybrid_host_reads_each_controllers_v1_files() {
        let root = tempfile::tempdir().unwrap();
        let mut v1 = BTreeMap::new();
        for c in ["memory", "cpu", "cpuacct", "cpuset", "pids"] {
            v1.insert(c.to_string(), root.path().join(c));
        }
        let mounts = Mounts { v1, v2: None };
        let mem = root.path().join("memory/skiff/abc");
        write(
            &mem,
            "memory.stat",
            "cache 1\nhierarchical_memory_limit 134217728\nhierarchical_memsw_limit 9223372036854771712\ntotal_cache 4096\ntotal_rss 8192\n",
        );
        write(&mem, "memory.usage_in_bytes", "65536\n");
        let cpu = root.path().join("cpu/skiff/abc");
        write(&cpu, "cpu.cfs_quota_us", "-1\n");
        write(&cpu, "cpu.cfs_period_us", "100000\n");
        write(
            &root.path().join("cpu/skiff"),
            "cpu.cfs_quota_us",
            "150000\n",
        );
        write(
            &root.path().join("cpu/skiff"),
            "cpu.cfs_period_us",
            "100000\n",
        );
        write(
            &root.path().join("cpuacct/skiff/abc"),
            "cpuacct.usage",
            "42\n",
        );
        let text = "4:memory:/skiff/abc\n2:cpu:/skiff/abc\n1:cpuacct:/skiff/abc\n0::/\n";
        let f = Figures::of_cgroup(&CgroupDirs::from_proc_cgroup(text, &mounts));
        assert_eq!(f.memory.limit, Some(128 << 20));
        assert_eq!(f.memory.swap_limit, None);
        assert_eq!((f.memory.cache, f.memory.anon), (4096, 8192));
        assert_eq!(f.cpu.quota, Some((150_000, 100_000)));
        assert_eq!(f.cpu.usage_ns, 42);
        assert_eq!(f.cpu.cpuset, None);
    }

    #[test]
    fn the_oldest_process_of_this_test_has_a_start_time() {
        let me = std::process::id();
        let started = oldest_start(&[me]).unwrap();
        let uptime: f64 = read(Path::new("/proc/uptime"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(started <= uptime + 0.01, "{started} > {uptime}");
    }
}
