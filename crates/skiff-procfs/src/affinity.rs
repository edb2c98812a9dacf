//! `sched_getaffinity(2)` sized to a CPU quota: what `nproc` (coreutils and busybox), Go's
//! `GOMAXPROCS` and the JVM count. No file changes it, so the seccomp agent answers it for
//! containers whose spec notifies it (pods with a CPU limit: a limit does not pin a pod, as
//! under the kubelet, so the kernel's answer would be every CPU of the host).
//!
//! The answer is the caller's real mask, as the kernel would copy it for the caller's buffer
//! size, keeping only its first `ceil(quota / period)` CPUs — the same CPUs `/proc/cpuinfo`
//! and `/sys/devices/system/cpu/online` show ([`crate::cpu::visible_cpus`]).

/// `mask` (the kernel's bytes, CPU `n` in bit `n % 8` of byte `n / 8`) with only its first
/// `keep` set CPUs left; `None` when it has no more than that (the kernel's answer stands).
pub fn cut_mask(mask: &[u8], keep: usize) -> Option<Vec<u8>> {
    let set: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
    if set <= keep {
        return None;
    }
    let mut left = keep;
    let cut = mask
        .iter()
        .map(|&byte| {
            let mut out = 0u8;
            for bit in 0..8 {
                if byte & (1 << bit) != 0 && left > 0 {
                    out |= 1 << bit;
                    left -= 1;
                }
            }
            out
        })
        .collect();
    Some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cpus_of_the_mask_are_kept() {
        // CPUs 1, 2, 3 and 9 set; a quota of two CPUs keeps 1 and 2.
        let mask = [0b0000_1110, 0b0000_0010, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            cut_mask(&mask, 2),
            Some(vec![0b0000_0110, 0, 0, 0, 0, 0, 0, 0])
        );
        // Three keeps 1-3; four and more leave the kernel's answer.
        assert_eq!(cut_mask(&mask, 3).unwrap()[..2], [0b0000_1110, 0]);
        assert_eq!(cut_mask(&mask, 4), None);
        assert_eq!(cut_mask(&mask, 64), None);
        // The length is the kernel's (what the caller gets back as the return value).
        assert_eq!(cut_mask(&mask, 1).map(|m| m.len()), Some(8));
    }

    #[test]
    fn an_empty_or_single_cpu_mask_is_left_alone() {
        assert_eq!(cut_mask(&[], 1), None);
        assert_eq!(cut_mask(&[0b1000_0000], 1), None);
    }
}
