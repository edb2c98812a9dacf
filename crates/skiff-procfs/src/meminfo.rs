//! `/proc/meminfo` sized to a cgroup: the host's file with the lines `free`, `top` and most
//! programs read replaced by the cgroup's figures.
//!
//! `MemTotal` is the memory limit (the host's total when there is none or it is larger),
//! `MemFree` the limit less the usage, `MemAvailable` the free memory plus the reclaimable
//! page cache (`inactive_file`, as the kernel's own estimate does), `Cached` the cgroup's page
//! cache, `Buffers` 0 (a cgroup has none of its own), `Active`/`Inactive` and their
//! anon/file halves, `Shmem`, `Mapped`, `Dirty`, `Writeback`, `AnonPages` and the slab lines
//! from `memory.stat`; `SwapTotal`/`SwapFree` from the swap limit, capped by the host's swap.
//! Every other line (huge pages, vmalloc, commit limits) is the host's, unchanged.

use crate::figures::Memory;

const KIB: u64 = 1024;

/// Renders `/proc/meminfo` for a cgroup from the host's file and the cgroup's figures.
pub fn render(host: &str, memory: &Memory) -> String {
    let host_kib = |key: &str| -> Option<u64> {
        host.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
        })
    };
    let host_total = host_kib("MemTotal").unwrap_or(u64::MAX / KIB);
    let host_swap = host_kib("SwapTotal").unwrap_or(0);
    let total = memory
        .limit
        .map_or(host_total, |l| (l / KIB).min(host_total));
    let used = (memory.usage / KIB).min(total);
    let free = total - used;
    let cache = (memory.cache / KIB).min(used);
    let available = (free + (memory.inactive_file / KIB).min(cache)).min(total);
    let swap_total = memory
        .swap_limit
        .map_or(host_swap, |l| (l / KIB).min(host_swap));
    let swap_free = swap_total.saturating_sub(memory.swap_usage / KIB);
    let kib = |bytes: u64| bytes / KIB;
    let ours: Vec<(&str, u64)> = vec![
        ("MemTotal", total),
        ("MemFree", free),
        ("MemAvailable", available),
        ("Buffers", 0),
        ("Cached", cache),
        ("SwapCached", 0),
        (
            "Active",
            kib(memory.active_anon.saturating_add(memory.active_file)),
        ),
        (
            "Inactive",
            kib(memory.inactive_anon.saturating_add(memory.inactive_file)),
        ),
        ("Active(anon)", kib(memory.active_anon)),
        ("Inactive(anon)", kib(memory.inactive_anon)),
        ("Active(file)", kib(memory.active_file)),
        ("Inactive(file)", kib(memory.inactive_file)),
        ("Unevictable", kib(memory.unevictable)),
        ("SwapTotal", swap_total),
        ("SwapFree", swap_free),
        ("Dirty", kib(memory.dirty)),
        ("Writeback", kib(memory.writeback)),
        ("AnonPages", kib(memory.anon)),
        ("Mapped", kib(memory.mapped)),
        ("Shmem", kib(memory.shmem)),
        (
            "Slab",
            kib(memory
                .slab_reclaimable
                .saturating_add(memory.slab_unreclaimable)),
        ),
        ("SReclaimable", kib(memory.slab_reclaimable)),
        ("SUnreclaim", kib(memory.slab_unreclaimable)),
    ];
    let mut out = String::with_capacity(host.len() + 64);
    for line in host.lines() {
        let key = line.split_once(':').map(|(k, _)| k);
        match key.and_then(|k| ours.iter().find(|(o, _)| *o == k)) {
            Some((k, value)) => {
                // The kernel's layout: key and colon padded to 16 columns, value to 8.
                let label = format!("{k}:");
                out.push_str(&format!("{label:<16}{value:>8} kB\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "MemTotal:       24683580 kB
MemFree:        21184484 kB
MemAvailable:   23749016 kB
Buffers:          204512 kB
Cached:          2480248 kB
SwapCached:            0 kB
Active:          1205344 kB
Inactive:        1849644 kB
SwapTotal:       2097148 kB
SwapFree:        2097148 kB
Shmem:              8616 kB
SReclaimable:     150000 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
";

    fn value(text: &str, key: &str) -> u64 {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == key).then(|| v.split_whitespace().next()?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no {key} in\n{text}"))
    }

    #[test]
    fn a_limit_becomes_the_total_and_usage_the_used_memory() {
        let memory = Memory {
            limit: Some(256 << 20),
            usage: 64 << 20,
            cache: 16 << 20,
            inactive_file: 8 << 20,
            anon: 48 << 20,
            shmem: 1 << 20,
            ..Memory::default()
        };
        let out = render(HOST, &memory);
        assert_eq!(value(&out, "MemTotal"), 256 * 1024);
        assert_eq!(value(&out, "MemFree"), 192 * 1024);
        assert_eq!(value(&out, "MemAvailable"), 200 * 1024);
        assert_eq!(value(&out, "Cached"), 16 * 1024);
        assert_eq!(value(&out, "Buffers"), 0);
        assert_eq!(value(&out, "Shmem"), 1024);
        assert_eq!(value(&out, "SReclaimable"), 0);
        // No swap limit: the host's swap.
        assert_eq!(value(&out, "SwapTotal"), 2_097_148);
        // Lines the cgroup has no figure for are the host's, in the host's order.
        assert!(out.contains("HugePages_Total:       0\n"), "{out}");
        assert!(out.contains("MemTotal:         262144 kB\n"), "{out}");
        assert_eq!(out.lines().count(), HOST.lines().count());
    }

    #[test]
    fn no_limit_or_a_limit_above_the_host_shows_the_hosts_total() {
        let out = render(HOST, &Memory::default());
        assert_eq!(value(&out, "MemTotal"), 24_683_580);
        assert_eq!(value(&out, "MemFree"), 24_683_580);
        let huge = Memory {
            limit: Some(1 << 50),
            ..Memory::default()
        };
        assert_eq!(value(&render(HOST, &huge), "MemTotal"), 24_683_580);
    }

    #[test]
    fn a_swap_limit_caps_the_swap_and_usage_above_the_limit_is_clamped() {
        let memory = Memory {
            limit: Some(100 << 20),
            usage: 200 << 20,
            swap_limit: Some(1 << 20),
            swap_usage: 512 << 10,
            ..Memory::default()
        };
        let out = render(HOST, &memory);
        assert_eq!(value(&out, "MemFree"), 0);
        assert_eq!(value(&out, "SwapTotal"), 1024);
        assert_eq!(value(&out, "SwapFree"), 512);
    }
}
