//! OCI resources as data: which value goes into which cgroup file, computed without touching the
//! filesystem so every mapping is unit-tested without root. The managers gather a few facts about
//! the host (which optional files exist, the current memory limit), call [`v1`] or [`v2`], and
//! write the result in order.

mod v1;
mod v2;

pub use v1::{BlkioWeightFile, V1Facts, v1};
pub use v2::{V2Facts, v2};

use crate::error::{CgroupError, Result};

/// A cgroup controller, or `Core` for the v2 `cgroup.*` files every cgroup has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// v2 `cgroup.*` interface files (no controller needed).
    Core,
    /// CPU time: shares/weight, CFS quota.
    Cpu,
    /// v1 CPU accounting.
    Cpuacct,
    /// CPUs and memory nodes.
    Cpuset,
    /// Memory limits and accounting.
    Memory,
    /// Process count limit.
    Pids,
    /// v1 block I/O.
    Blkio,
    /// v2 block I/O.
    Io,
    /// v1 device access lists.
    Devices,
    /// v1 freezer.
    Freezer,
    /// Huge page limits.
    Hugetlb,
    /// v1 network class ids.
    NetCls,
    /// v1 network priorities.
    NetPrio,
    /// RDMA resources.
    Rdma,
    /// Miscellaneous scalar resources.
    Misc,
}

impl Controller {
    /// The name the kernel uses (mount option in v1, `cgroup.controllers` entry in v2).
    pub fn name(self) -> &'static str {
        match self {
            Controller::Core => "cgroup",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Blkio => "blkio",
            Controller::Io => "io",
            Controller::Devices => "devices",
            Controller::Freezer => "freezer",
            Controller::Hugetlb => "hugetlb",
            Controller::NetCls => "net_cls",
            Controller::NetPrio => "net_prio",
            Controller::Rdma => "rdma",
            Controller::Misc => "misc",
        }
    }

    /// The controller a v2 interface file belongs to, from its prefix (`memory.high` -> memory).
    pub fn of_v2_file(file: &str) -> Option<Controller> {
        let prefix = file.split_once('.')?.0;
        Some(match prefix {
            "cgroup" => Controller::Core,
            "cpu" => Controller::Cpu,
            "cpuset" => Controller::Cpuset,
            "memory" => Controller::Memory,
            "pids" => Controller::Pids,
            "io" => Controller::Io,
            "hugetlb" => Controller::Hugetlb,
            "rdma" => Controller::Rdma,
            "misc" => Controller::Misc,
            _ => return None,
        })
    }
}

/// One value to write into one file of a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// The controller whose hierarchy (v1) or whose enabling (v2) the file needs.
    pub controller: Controller,
    /// The file name inside the cgroup directory, e.g. `cpu.max`.
    pub file: String,
    /// The exact text to write.
    pub value: String,
}

impl Write {
    pub(crate) fn new(
        controller: Controller,
        file: impl Into<String>,
        value: impl ToString,
    ) -> Self {
        Write {
            controller,
            file: file.into(),
            value: value.to_string(),
        }
    }
}

/// Converts v1 `cpu.shares` (2..=262144) to v2 `cpu.weight` (1..=10000) the way runc and the
/// kubelet do: `1 + ((shares - 2) * 9999) / 262142`. Out-of-range shares are clamped first, so
/// the default 1024 shares become weight 39.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Converts a v1 blkio weight (10..=1000) to a v2 `io.weight` (1..=10000) as runc does:
/// `1 + (weight - 10) * 9999 / 990`.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + (weight - 10) * 9999 / 990
}

/// The v2 `memory.swap.max` value for an OCI memory `limit` and `swap` (which in OCI, as in v1,
/// is memory plus swap): `swap - limit`, `-1` for "max", `None` when nothing is to be written.
///
/// `0` means unset for both. An unlimited limit without a swap value makes swap unlimited too
/// (v1 compatibility); a swap value without a finite limit, or smaller than it, is refused.
pub fn v2_swap_max(limit: Option<i64>, swap: Option<i64>) -> Result<Option<i64>> {
    let limit = limit.unwrap_or(0);
    let swap = swap.unwrap_or(0);
    if limit == -1 && swap == 0 {
        return Ok(Some(-1));
    }
    match swap {
        0 => return Ok(None),
        -1 => return Ok(Some(-1)),
        _ => {}
    }
    let invalid = |reason| CgroupError::InvalidResource {
        field: "memory.swap",
        value: swap.to_string(),
        reason,
    };
    if swap < -1 {
        return Err(invalid("it must be -1 (unlimited) or a byte count"));
    }
    if limit <= 0 {
        return Err(invalid("a swap limit needs a memory limit"));
    }
    if swap < limit {
        return Err(invalid("memory+swap must be at least the memory limit"));
    }
    Ok(Some(swap - limit))
}

/// `-1` and below become the v2 word `max`, anything else its decimal text.
pub(crate) fn v2_limit(value: i64) -> String {
    if value < 0 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

/// OCI treats an absent field and `0` alike for most limits.
pub(crate) fn nonzero_i64(value: Option<i64>) -> Option<i64> {
    value.filter(|v| *v != 0)
}

/// OCI treats an absent field and `0` alike for most limits.
pub(crate) fn nonzero_u64(value: Option<u64>) -> Option<u64> {
    value.filter(|v| *v != 0)
}

/// Checks a byte limit: -1 (unlimited) or a positive count.
pub(crate) fn check_bytes(field: &'static str, value: i64) -> Result<i64> {
    if value < -1 {
        return Err(CgroupError::InvalidResource {
            field,
            value: value.to_string(),
            reason: "it must be -1 (unlimited) or a byte count",
        });
    }
    Ok(value)
}

/// Checks a huge page size such as `2MB` (it becomes part of a file name).
pub(crate) fn check_page_size(size: &str) -> Result<&str> {
    let ok = !size.is_empty() && size.chars().all(|c| c.is_ascii_alphanumeric());
    if !ok {
        return Err(CgroupError::InvalidResource {
            field: "hugepageLimits.pageSize",
            value: size.to_string(),
            reason: "it must look like 2MB or 1GB",
        });
    }
    Ok(size)
}

/// `rdma.max` lines: `mlx4_0 hca_handle=2 hca_object=2000`.
pub(crate) fn rdma_writes(
    rdma: Option<&std::collections::HashMap<String, oci_spec::runtime::LinuxRdma>>,
) -> Vec<Write> {
    let Some(rdma) = rdma else {
        return Vec::new();
    };
    let mut devices: Vec<_> = rdma.iter().collect();
    devices.sort_by(|a, b| a.0.cmp(b.0));
    devices
        .into_iter()
        .filter_map(|(device, limit)| {
            let mut line = device.clone();
            if let Some(handles) = limit.hca_handles() {
                line.push_str(&format!(" hca_handle={handles}"));
            }
            if let Some(objects) = limit.hca_objects() {
                line.push_str(&format!(" hca_object={objects}"));
            }
            (line.len() > device.len()).then(|| Write::new(Controller::Rdma, "rdma.max", line))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_to_weight_with_the_runc_formula() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(512), 20);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn out_of_range_shares_are_clamped_before_conversion() {
        assert_eq!(shares_to_weight(1), 1);
        assert_eq!(shares_to_weight(1_000_000), 10_000);
    }

    #[test]
    fn blkio_weight_converts_to_io_weight() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
    }

    #[test]
    fn swap_max_is_swap_minus_limit() {
        let mib = 1 << 20;
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(96 * mib)).unwrap(),
            Some(32 * mib)
        );
        assert_eq!(
            v2_swap_max(Some(64 * mib), Some(64 * mib)).unwrap(),
            Some(0)
        );
    }

    #[test]
    fn swap_max_handles_unlimited_and_unset() {
        assert_eq!(v2_swap_max(Some(-1), None).unwrap(), Some(-1));
        assert_eq!(v2_swap_max(Some(100), Some(-1)).unwrap(), Some(-1));
        assert_eq!(v2_swap_max(Some(100), None).unwrap(), None);
        assert_eq!(v2_swap_max(None, None).unwrap(), None);
    }

    #[test]
    fn swap_below_the_limit_or_without_a_limit_is_refused() {
        let err = v2_swap_max(Some(200), Some(100)).unwrap_err();
        assert!(err.to_string().contains("memory.swap 100"), "{err}");
        assert!(v2_swap_max(None, Some(100)).is_err());
        assert!(v2_swap_max(Some(-1), Some(100)).is_err());
    }

    #[test]
    fn v2_files_map_to_their_controller() {
        assert_eq!(
            Controller::of_v2_file("memory.high"),
            Some(Controller::Memory)
        );
        assert_eq!(
            Controller::of_v2_file("cgroup.freeze"),
            Some(Controller::Core)
        );
        assert_eq!(Controller::of_v2_file("bogus"), None);
    }
}
