//! What `sysinfo(2)` returns inside a container, computed from the same rendered files the
//! container reads (`/proc/meminfo`, `/proc/uptime`, `/proc/loadavg`), so that busybox `free`
//! and `uptime`, which ask the kernel, agree with procps, which reads the files.
//!
//! `totalram`/`freeram`/`sharedram`/`bufferram` are `MemTotal`/`MemFree`/`Shmem`/`Buffers`,
//! `totalswap`/`freeswap` are `SwapTotal`/`SwapFree`, `uptime` is `/proc/uptime`'s first
//! figure rounded up (as the kernel rounds), `loads` are `/proc/loadavg`'s averages in the
//! kernel's fixed point (`1 << 16` is 1.0), `procs` its thread count. `mem_unit` is 1: the
//! fields are 64-bit on x86_64, the only architecture the runtime's filters let through, so
//! no scaling is needed.

use crate::times::parse_uptime;

/// `struct sysinfo` on x86_64: 112 bytes.
pub const SIZE: usize = 112;

/// The kernel's fixed-point shift for loads (`SI_LOAD_SHIFT`).
const LOAD_SHIFT: u32 = 16;

/// The figures of one `struct sysinfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SysInfo {
    /// Seconds since boot (the container's start).
    pub uptime: i64,
    /// 1, 5 and 15 minute loads, fixed point.
    pub loads: [u64; 3],
    /// Bytes of memory.
    pub totalram: u64,
    /// Free bytes.
    pub freeram: u64,
    /// Shared memory.
    pub sharedram: u64,
    /// Buffers.
    pub bufferram: u64,
    /// Swap.
    pub totalswap: u64,
    /// Free swap.
    pub freeswap: u64,
    /// Threads.
    pub procs: u16,
}

fn meminfo_bytes(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k == key).then(|| v.split_whitespace().next()?.parse::<u64>().ok())?
        })
        .unwrap_or(0)
        .saturating_mul(1024)
}

impl SysInfo {
    /// The figures from the texts of the container's `/proc/meminfo`, `/proc/uptime` and
    /// `/proc/loadavg`.
    pub fn from_files(meminfo: &str, uptime: &str, loadavg: &str) -> SysInfo {
        let mut fields = loadavg.split_whitespace();
        let mut loads = [0u64; 3];
        for load in &mut loads {
            let value: f64 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0.0);
            *load = (value.max(0.0) * f64::from(1u32 << LOAD_SHIFT)) as u64;
        }
        let procs = fields
            .next()
            .and_then(|f| f.split_once('/'))
            .and_then(|(_, total)| total.parse::<u64>().ok())
            .unwrap_or(1);
        SysInfo {
            uptime: parse_uptime(uptime).map_or(0, |u| u.max(0.0).ceil() as i64),
            loads,
            totalram: meminfo_bytes(meminfo, "MemTotal"),
            freeram: meminfo_bytes(meminfo, "MemFree"),
            sharedram: meminfo_bytes(meminfo, "Shmem"),
            bufferram: meminfo_bytes(meminfo, "Buffers"),
            totalswap: meminfo_bytes(meminfo, "SwapTotal"),
            freeswap: meminfo_bytes(meminfo, "SwapFree"),
            procs: u16::try_from(procs).unwrap_or(u16::MAX),
        }
    }

    /// The struct as the kernel lays it out on x86_64 (little-endian, 8-byte longs,
    /// `mem_unit` 1, the high-memory fields 0).
    pub fn to_bytes(&self) -> [u8; SIZE] {
        let mut out = [0u8; SIZE];
        let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &self.uptime.to_le_bytes());
        for (i, load) in self.loads.iter().enumerate() {
            put(8 + 8 * i, &load.to_le_bytes());
        }
        put(32, &self.totalram.to_le_bytes());
        put(40, &self.freeram.to_le_bytes());
        put(48, &self.sharedram.to_le_bytes());
        put(56, &self.bufferram.to_le_bytes());
        put(64, &self.totalswap.to_le_bytes());
        put(72, &self.freeswap.to_le_bytes());
        put(80, &self.procs.to_le_bytes());
        // pad (82), alignment (84), totalhigh (88), freehigh (96): 0.
        put(104, &1u32.to_le_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:         262144 kB
MemFree:          200000 kB
MemAvailable:     210000 kB
Buffers:               0 kB
Cached:             1000 kB
SwapTotal:             0 kB
SwapFree:              0 kB
Shmem:                 8 kB
";

    #[test]
    fn the_figures_are_the_files_figures() {
        let info = SysInfo::from_files(MEMINFO, "3.20 5.00\n", "0.50 1.00 0.00 1/3 0\n");
        assert_eq!(info.totalram, 256 << 20);
        assert_eq!(info.freeram, 200_000 * 1024);
        assert_eq!(info.sharedram, 8 * 1024);
        assert_eq!(info.uptime, 4, "rounded up as the kernel does");
        assert_eq!(info.loads, [1 << 15, 1 << 16, 0]);
        assert_eq!(info.procs, 3);
    }

    #[test]
    fn the_layout_is_the_kernels() {
        // Checked against libc's own struct on this architecture.
        assert_eq!(std::mem::size_of::<nix::libc::sysinfo>(), SIZE);
        let info = SysInfo {
            uptime: 7,
            totalram: 1 << 28,
            procs: 2,
            ..SysInfo::default()
        };
        let bytes = info.to_bytes();
        assert_eq!(bytes[0], 7);
        assert_eq!(
            u64::from_le_bytes(bytes[32..40].try_into().unwrap()),
            1 << 28
        );
        assert_eq!(u16::from_le_bytes([bytes[80], bytes[81]]), 2);
        assert_eq!(u32::from_le_bytes(bytes[104..108].try_into().unwrap()), 1);
    }
}
