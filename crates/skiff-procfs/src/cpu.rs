//! `/proc/cpuinfo` and `/proc/stat` sized to a cgroup.
//!
//! The CPUs a container sees ([`visible_cpus`]) are the host's online CPUs that its cpuset
//! allows, cut to the first `ceil(quota / period)` of them when a CFS quota is set (`--cpus
//! 1.5` shows 2). They are numbered from 0 in both files, as in a machine of that size.
//!
//! `/proc/stat`'s `cpu` line is the cgroup's own CPU time in `USER_HZ` ticks (user and
//! system as the kernel splits them, or all of it as user where it does not), with `idle`
//! the rest of the container's uptime times its CPU count; the per-CPU lines share those
//! figures evenly (cgroups do not count per CPU on every kernel, so this is an
//! approximation, documented as such). `procs_running`/`procs_blocked` are the cgroup's;
//! every other line (`intr`, `ctxt`, `btime` — which `ps` needs to date processes —,
//! `processes`, `softirq`) is the host's.

use crate::figures::{Cpu, Tasks, USER_HZ};

/// The host CPUs a container sees, in order: `online` (the host's) filtered by the cpuset,
/// then cut to the quota's CPU count. Never empty when `online` is not.
pub fn visible_cpus(online: &[u32], cpu: &Cpu) -> Vec<u32> {
    let mut cpus: Vec<u32> = match &cpu.cpuset {
        Some(set) => online.iter().copied().filter(|c| set.contains(c)).collect(),
        None => online.to_vec(),
    };
    if cpus.is_empty() {
        cpus = online.to_vec();
    }
    if let Some(n) = cpu.quota.map(|(q, p)| quota_cpus(q, p)) {
        cpus.truncate(n.max(1));
    }
    cpus
}

/// How many CPUs a CFS quota amounts to: `ceil(quota / period)`, at least 1.
pub fn quota_cpus(quota: u64, period: u64) -> usize {
    if period == 0 {
        return 1;
    }
    usize::try_from(quota.div_ceil(period))
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Renders `/sys/devices/system/cpu/online` (what glibc's `sysconf(_SC_NPROCESSORS_ONLN)`
/// reads), as LXCFS does: `0-(n-1)` for the `n` CPUs a container sees, or the host's text
/// when it sees every online CPU.
pub fn render_online(host: &str, online: &[u32], visible: &[u32]) -> String {
    if visible.len() >= online.len() && !host.is_empty() {
        return host.to_string();
    }
    match visible.len() {
        0 | 1 => "0\n".to_string(),
        n => format!("0-{}\n", n - 1),
    }
}

/// Renders `/proc/cpuinfo`: the host's blocks of the visible CPUs, renumbered from 0. Blocks
/// without a `processor` line (an architecture's trailer) are kept.
pub fn render_cpuinfo(host: &str, visible: &[u32]) -> String {
    let mut out = String::with_capacity(host.len());
    let mut next = 0usize;
    for block in host.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let number = block.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == "processor").then(|| v.trim().parse::<u32>().ok())?
        });
        match number {
            Some(n) if visible.contains(&n) => {
                for line in block.lines() {
                    match line.split_once(':') {
                        Some((k, _)) if k.trim() == "processor" => {
                            out.push_str(&format!("{k}: {next}\n"));
                        }
                        Some((k, _)) if k.trim() == "siblings" || k.trim() == "cpu cores" => {
                            out.push_str(&format!("{k}: {}\n", visible.len()));
                        }
                        _ => {
                            out.push_str(line);
                            out.push('\n');
                        }
                    }
                }
                out.push('\n');
                next += 1;
            }
            Some(_) => {}
            None => {
                out.push_str(block.trim_matches('\n'));
                out.push_str("\n\n");
            }
        }
    }
    out
}

/// Renders `/proc/stat` for a cgroup `uptime` seconds old that sees `cpus` CPUs.
pub fn render_stat(host: &str, cpus: usize, cpu: &Cpu, tasks: &Tasks, uptime: f64) -> String {
    let ticks = |ns: u64| ns / (1_000_000_000 / USER_HZ);
    let (user, system) = match (cpu.user_ns, cpu.system_ns) {
        (Some(u), Some(s)) => (ticks(u), ticks(s)),
        _ => (ticks(cpu.usage_ns), 0),
    };
    let cpus = cpus.max(1) as u64;
    let capacity = (uptime.max(0.0) * USER_HZ as f64) as u64 * cpus;
    let idle = capacity.saturating_sub(user + system);
    let line = |name: String, user: u64, system: u64, idle: u64| {
        format!("{name} {user} 0 {system} {idle} 0 0 0 0 0 0\n")
    };
    let share = |total: u64, i: u64| total / cpus + u64::from(i < total % cpus);
    let mut out = line("cpu ".to_string(), user, system, idle);
    for i in 0..cpus {
        out.push_str(&line(
            format!("cpu{i}"),
            share(user, i),
            share(system, i),
            share(idle, i),
        ));
    }
    for l in host.lines() {
        let key = l.split_whitespace().next().unwrap_or_default();
        if key.starts_with("cpu") {
            continue;
        }
        match key {
            "procs_running" => out.push_str(&format!("procs_running {}\n", tasks.running)),
            "procs_blocked" => out.push_str(&format!("procs_blocked {}\n", tasks.blocked)),
            _ => {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_shows_the_visible_count_from_zero_or_the_hosts_text() {
        assert_eq!(render_online("0-3\n", &[0, 1, 2, 3], &[2]), "0\n");
        assert_eq!(render_online("0-3\n", &[0, 1, 2, 3], &[1, 3]), "0-1\n");
        assert_eq!(
            render_online("0-3\n", &[0, 1, 2, 3], &[0, 1, 2, 3]),
            "0-3\n"
        );
    }

    const CPUINFO: &str = "processor\t: 0
vendor_id\t: GenuineIntel
siblings\t: 4
cpu cores\t: 4

processor\t: 1
vendor_id\t: GenuineIntel
siblings\t: 4
cpu cores\t: 4

processor\t: 2
vendor_id\t: GenuineIntel
siblings\t: 4
cpu cores\t: 4

processor\t: 3
vendor_id\t: GenuineIntel
siblings\t: 4
cpu cores\t: 4

";

    #[test]
    fn a_quota_limits_the_visible_cpus_to_its_ceiling() {
        let online = [0, 1, 2, 3];
        let mut cpu = Cpu::default();
        assert_eq!(visible_cpus(&online, &cpu), vec![0, 1, 2, 3]);
        cpu.quota = Some((100_000, 100_000));
        assert_eq!(visible_cpus(&online, &cpu), vec![0]);
        cpu.quota = Some((150_000, 100_000));
        assert_eq!(visible_cpus(&online, &cpu), vec![0, 1]);
        cpu.quota = Some((10_000, 100_000));
        assert_eq!(visible_cpus(&online, &cpu), vec![0]);
        cpu.cpuset = Some(vec![2, 3]);
        cpu.quota = Some((800_000, 100_000));
        assert_eq!(visible_cpus(&online, &cpu), vec![2, 3]);
        cpu.cpuset = Some(vec![9]);
        assert_eq!(visible_cpus(&online, &cpu), vec![0, 1, 2, 3]);
    }

    #[test]
    fn cpuinfo_keeps_the_visible_cpus_renumbered_from_zero() {
        let out = render_cpuinfo(CPUINFO, &[2, 3]);
        let processors: Vec<&str> = out.lines().filter(|l| l.starts_with("processor")).collect();
        assert_eq!(processors, vec!["processor\t: 0", "processor\t: 1"]);
        assert!(out.contains("siblings\t: 2\n"), "{out}");
        assert!(out.contains("cpu cores\t: 2\n"), "{out}");
        assert!(out.ends_with("\n\n"));
        let one = render_cpuinfo(CPUINFO, &[0]);
        assert_eq!(one.matches("processor").count(), 1);
    }

    #[test]
    fn cpuinfo_keeps_an_architectures_trailer() {
        let host =
            "processor\t: 0\nBogoMIPS\t: 50\n\nprocessor\t: 1\nBogoMIPS\t: 50\n\nHardware\t: X\n";
        let out = render_cpuinfo(host, &[0]);
        assert_eq!(out, "processor\t: 0\nBogoMIPS\t: 50\n\nHardware\t: X\n\n");
    }

    #[test]
    fn stat_shows_the_cgroups_time_and_the_hosts_other_lines() {
        let host = "cpu  100 0 100 900 0 0 0 0 0 0\ncpu0 50 0 50 450 0 0 0 0 0 0\ncpu1 50 0 50 450 0 0 0 0 0 0\nintr 5 1\nctxt 99\nbtime 1700000000\nprocesses 77\nprocs_running 9\nprocs_blocked 3\n";
        let cpu = Cpu {
            usage_ns: 3_000_000_000,
            user_ns: Some(2_000_000_000),
            system_ns: Some(1_010_000_000),
            ..Cpu::default()
        };
        let tasks = Tasks {
            total: 4,
            running: 1,
            blocked: 0,
        };
        let out = render_stat(host, 2, &cpu, &tasks, 10.0);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "cpu  200 0 101 1699 0 0 0 0 0 0");
        assert_eq!(lines[1], "cpu0 100 0 51 850 0 0 0 0 0 0");
        assert_eq!(lines[2], "cpu1 100 0 50 849 0 0 0 0 0 0");
        assert_eq!(lines[3], "intr 5 1");
        assert!(out.contains("btime 1700000000\n"));
        assert!(out.contains("procs_running 1\nprocs_blocked 0\n"));
        assert!(!out.contains("cpu2"));
    }

    #[test]
    fn stat_without_a_user_system_split_counts_all_as_user() {
        let cpu = Cpu {
            usage_ns: 500_000_000,
            ..Cpu::default()
        };
        let out = render_stat("", 1, &cpu, &Tasks::default(), 1.0);
        assert_eq!(out.lines().next(), Some("cpu  50 0 0 50 0 0 0 0 0 0"));
    }
}
