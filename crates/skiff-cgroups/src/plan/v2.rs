//! OCI resources to cgroup v2 files.

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::{
    Controller, Write, blkio_weight_to_io_weight, check_bytes, check_page_size, nonzero_i64,
    nonzero_u64, rdma_writes, shares_to_weight, v2_limit, v2_swap_max,
};
use crate::error::{CgroupError, Result};

/// What the v2 mapping needs to know about the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2Facts {
    /// `memory.swap.max` exists (the kernel has swap support).
    pub swap: bool,
    /// `io.bfq.weight` exists (BFQ is the I/O scheduler); otherwise `io.weight` is used.
    pub io_bfq_weight: bool,
}

/// The v2 writes for `resources`, in order.
///
/// Device rules are not written: cgroup v2 controls devices with an eBPF program, which this
/// crate does not load (the runtime still creates only the allowed device nodes). Memory
/// swappiness and the OOM-killer switch have no v2 file and are ignored, as runc does.
/// `unified` entries are written last, as given.
pub fn v2(resources: &LinuxResources, facts: &V2Facts) -> Result<Vec<Write>> {
    let mut writes = Vec::new();
    if let Some(cpu) = resources.cpu() {
        cpu_writes(cpu, &mut writes)?;
    }
    if let Some(memory) = resources.memory() {
        memory_writes(memory, facts, &mut writes)?;
    }
    if let Some(pids) = resources.pids() {
        writes.push(Write::new(
            Controller::Pids,
            "pids.max",
            v2_limit(if pids.limit() > 0 { pids.limit() } else { -1 }),
        ));
    }
    if let Some(block_io) = resources.block_io() {
        io_writes(block_io, facts, &mut writes)?;
    }
    for limit in resources.hugepage_limits().iter().flatten() {
        let size = check_page_size(limit.page_size())?;
        let bytes = check_bytes("hugepageLimits.limit", limit.limit())?;
        writes.push(Write::new(
            Controller::Hugetlb,
            format!("hugetlb.{size}.max"),
            v2_limit(bytes),
        ));
    }
    let network = resources.network().as_ref();
    if network.is_some_and(|n| n.class_id().is_some() || n.priorities().is_some()) {
        return Err(CgroupError::Unsupported {
            what: "linux.resources.network (net_cls/net_prio)".to_string(),
            version: "v2",
        });
    }
    writes.extend(rdma_writes(resources.rdma().as_ref()));
    if let Some(unified) = resources.unified() {
        let mut entries: Vec<_> = unified.iter().collect();
        entries.sort();
        for (file, value) in entries {
            writes.push(unified_write(file, value)?);
        }
    }
    Ok(writes)
}

fn cpu_writes(cpu: &LinuxCpu, writes: &mut Vec<Write>) -> Result<()> {
    if let Some(shares) = nonzero_u64(cpu.shares()) {
        writes.push(Write::new(
            Controller::Cpu,
            "cpu.weight",
            shares_to_weight(shares),
        ));
    }
    let quota = nonzero_i64(cpu.quota());
    let period = nonzero_u64(cpu.period());
    if quota.is_some() || period.is_some() {
        // "max" or the quota, then the period if one is given (else the kernel keeps its own).
        let mut value = match quota {
            Some(quota) if quota > 0 => quota.to_string(),
            _ => "max".to_string(),
        };
        if let Some(period) = period {
            value.push_str(&format!(" {period}"));
        }
        writes.push(Write::new(Controller::Cpu, "cpu.max", value));
    }
    if let Some(burst) = cpu.burst() {
        writes.push(Write::new(Controller::Cpu, "cpu.max.burst", burst));
    }
    if let Some(idle) = cpu.idle() {
        writes.push(Write::new(Controller::Cpu, "cpu.idle", idle));
    }
    if nonzero_i64(cpu.realtime_runtime()).is_some() || nonzero_u64(cpu.realtime_period()).is_some()
    {
        return Err(CgroupError::Unsupported {
            what: "realtime CPU runtime/period".to_string(),
            version: "v2",
        });
    }
    if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
        writes.push(Write::new(Controller::Cpuset, "cpuset.cpus", cpus));
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
        writes.push(Write::new(Controller::Cpuset, "cpuset.mems", mems));
    }
    Ok(())
}

fn memory_writes(memory: &LinuxMemory, facts: &V2Facts, writes: &mut Vec<Write>) -> Result<()> {
    let limit = nonzero_i64(memory.limit())
        .map(|v| check_bytes("memory.limit", v))
        .transpose()?;
    let swap = v2_swap_max(limit, nonzero_i64(memory.swap()))?;
    // In v2 swap and memory are independent limits, so the order does not matter.
    if let Some(swap) = swap.filter(|_| facts.swap) {
        writes.push(Write::new(
            Controller::Memory,
            "memory.swap.max",
            v2_limit(swap),
        ));
    }
    if let Some(limit) = limit {
        writes.push(Write::new(
            Controller::Memory,
            "memory.max",
            v2_limit(limit),
        ));
    }
    if let Some(reservation) = nonzero_i64(memory.reservation()) {
        let reservation = check_bytes("memory.reservation", reservation)?;
        writes.push(Write::new(
            Controller::Memory,
            "memory.low",
            v2_limit(reservation),
        ));
    }
    Ok(())
}

fn io_writes(block_io: &LinuxBlockIo, facts: &V2Facts, writes: &mut Vec<Write>) -> Result<()> {
    let check = |weight: u16| {
        if (10..=1000).contains(&weight) {
            Ok(weight)
        } else {
            Err(CgroupError::InvalidResource {
                field: "blockIO.weight",
                value: weight.to_string(),
                reason: "it must be between 10 and 1000",
            })
        }
    };
    if let Some(weight) = block_io.weight().filter(|w| *w != 0) {
        let weight = check(weight)?;
        writes.push(if facts.io_bfq_weight {
            Write::new(Controller::Io, "io.bfq.weight", weight)
        } else {
            Write::new(
                Controller::Io,
                "io.weight",
                format!("default {}", blkio_weight_to_io_weight(weight)),
            )
        });
    }
    for device in block_io.weight_device().iter().flatten() {
        let Some(weight) = device.weight() else {
            continue;
        };
        let weight = check(weight)?;
        let id = format!("{}:{}", device.major(), device.minor());
        writes.push(if facts.io_bfq_weight {
            Write::new(Controller::Io, "io.bfq.weight", format!("{id} {weight}"))
        } else {
            Write::new(
                Controller::Io,
                "io.weight",
                format!("{id} {}", blkio_weight_to_io_weight(weight)),
            )
        });
    }
    let throttles = [
        ("rbps", block_io.throttle_read_bps_device()),
        ("wbps", block_io.throttle_write_bps_device()),
        ("riops", block_io.throttle_read_iops_device()),
        ("wiops", block_io.throttle_write_iops_device()),
    ];
    for (key, devices) in throttles {
        for device in devices.iter().flatten() {
            writes.push(Write::new(
                Controller::Io,
                "io.max",
                format!(
                    "{}:{} {key}={}",
                    device.major(),
                    device.minor(),
                    device.rate()
                ),
            ));
        }
    }
    Ok(())
}

fn unified_write(file: &str, value: &str) -> Result<Write> {
    let invalid = |reason| CgroupError::InvalidResource {
        field: "unified",
        value: format!("{file}={value}"),
        reason,
    };
    if file.contains('/') || file.starts_with('.') {
        return Err(invalid(
            "the key must be a file name in the cgroup directory",
        ));
    }
    if matches!(
        file,
        "cgroup.procs" | "cgroup.threads" | "cgroup.subtree_control" | "cgroup.kill"
    ) {
        return Err(invalid("this file is managed by the runtime"));
    }
    let controller =
        Controller::of_v2_file(file).ok_or_else(|| invalid("unknown controller prefix"))?;
    Ok(Write::new(controller, file, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
        LinuxPidsBuilder, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
        LinuxWeightDeviceBuilder,
    };
    use std::collections::HashMap;

    const MIB: i64 = 1 << 20;

    fn pairs(writes: &[Write]) -> Vec<(&str, &str)> {
        writes
            .iter()
            .map(|w| (w.file.as_str(), w.value.as_str()))
            .collect()
    }

    fn facts() -> V2Facts {
        V2Facts {
            swap: true,
            io_bfq_weight: false,
        }
    }

    fn cpu(cpu: LinuxCpuBuilder) -> LinuxResources {
        LinuxResourcesBuilder::default()
            .cpu(cpu.build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn shares_become_weight_and_quota_becomes_cpu_max() {
        let resources = cpu(LinuxCpuBuilder::default()
            .shares(1024u64)
            .quota(20_000i64)
            .period(100_000u64));
        assert_eq!(
            pairs(&v2(&resources, &facts()).unwrap()),
            [("cpu.weight", "39"), ("cpu.max", "20000 100000")]
        );
    }

    #[test]
    fn an_unlimited_quota_becomes_max() {
        let resources = cpu(LinuxCpuBuilder::default().quota(-1i64).period(50_000u64));
        assert_eq!(
            pairs(&v2(&resources, &facts()).unwrap()),
            [("cpu.max", "max 50000")]
        );
        let resources = cpu(LinuxCpuBuilder::default().quota(-1i64));
        assert_eq!(
            pairs(&v2(&resources, &facts()).unwrap()),
            [("cpu.max", "max")]
        );
    }

    #[test]
    fn a_quota_without_a_period_keeps_the_kernel_period() {
        let resources = cpu(LinuxCpuBuilder::default().quota(50_000i64));
        assert_eq!(
            pairs(&v2(&resources, &facts()).unwrap()),
            [("cpu.max", "50000")]
        );
    }

    #[test]
    fn realtime_settings_are_refused_on_v2() {
        let resources = cpu(LinuxCpuBuilder::default().realtime_runtime(1000i64));
        assert!(matches!(
            v2(&resources, &facts()),
            Err(CgroupError::Unsupported { version: "v2", .. })
        ));
    }

    #[test]
    fn memory_limit_reservation_and_swap_map_to_max_low_and_swap_max() {
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 * MIB)
                    .swap(96 * MIB)
                    .reservation(32 * MIB)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let writes = v2(&resources, &facts()).unwrap();
        assert_eq!(
            pairs(&writes),
            [
                ("memory.swap.max", "33554432"),
                ("memory.max", "67108864"),
                ("memory.low", "33554432"),
            ]
        );
        assert!(writes.iter().all(|w| w.controller == Controller::Memory));
    }

    #[test]
    fn an_unlimited_memory_limit_writes_max_for_memory_and_swap() {
        let resources = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().limit(-1i64).build().unwrap())
            .build()
            .unwrap();
        assert_eq!(
            pairs(&v2(&resources, &facts()).unwrap()),
            [("memory.swap.max", "max"), ("memory.max", "max")]
        );
    }

    #[test]
    fn swap_is_skipped_when_the_kernel_has_no_swap_file() {
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 * MIB)
                    .swap(64 * MIB)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let facts = V2Facts {
            swap: false,
            ..facts()
        };
        assert_eq!(
            pairs(&v2(&resources, &facts).unwrap()),
            [("memory.max", "67108864")]
        );
    }

    #[test]
    fn pids_limit_zero_or_negative_is_max() {
        for (limit, expected) in [(8, "8"), (0, "max"), (-1, "max")] {
            let resources = LinuxResourcesBuilder::default()
                .pids(LinuxPidsBuilder::default().limit(limit).build().unwrap())
                .build()
                .unwrap();
            assert_eq!(
                pairs(&v2(&resources, &facts()).unwrap()),
                [("pids.max", expected)]
            );
        }
    }

    fn block_io() -> LinuxResources {
        LinuxResourcesBuilder::default()
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .weight_device(vec![
                        LinuxWeightDeviceBuilder::default()
                            .major(8i64)
                            .minor(0i64)
                            .weight(100u16)
                            .build()
                            .unwrap(),
                    ])
                    .throttle_write_iops_device(vec![
                        LinuxThrottleDeviceBuilder::default()
                            .major(8i64)
                            .minor(16i64)
                            .rate(300u64)
                            .build()
                            .unwrap(),
                    ])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn blkio_weight_becomes_io_weight_converted() {
        assert_eq!(
            pairs(&v2(&block_io(), &facts()).unwrap()),
            [
                ("io.weight", "default 4950"),
                ("io.weight", "8:0 910"),
                ("io.max", "8:16 wiops=300"),
            ]
        );
    }

    #[test]
    fn blkio_weight_goes_unconverted_to_io_bfq_weight_when_bfq_is_there() {
        let facts = V2Facts {
            io_bfq_weight: true,
            ..facts()
        };
        assert_eq!(
            pairs(&v2(&block_io(), &facts).unwrap())[..2],
            [("io.bfq.weight", "500"), ("io.bfq.weight", "8:0 100")]
        );
    }

    #[test]
    fn hugepage_limits_map_to_hugetlb_max() {
        let resources = LinuxResourcesBuilder::default()
            .hugepage_limits(vec![
                LinuxHugepageLimitBuilder::default()
                    .page_size("2MB")
                    .limit(4 * MIB)
                    .build()
                    .unwrap(),
            ])
            .build()
            .unwrap();
        assert_eq!(
            pairs(&v2(&resources, &facts()).unwrap()),
            [("hugetlb.2MB.max", "4194304")]
        );
    }

    #[test]
    fn unified_entries_are_written_as_given_but_not_outside_the_directory() {
        let resources = LinuxResourcesBuilder::default()
            .unified(HashMap::from([(
                "memory.high".to_string(),
                "1073741824".to_string(),
            )]))
            .build()
            .unwrap();
        let writes = v2(&resources, &facts()).unwrap();
        assert_eq!(pairs(&writes), [("memory.high", "1073741824")]);
        assert_eq!(writes[0].controller, Controller::Memory);

        for bad in ["../memory.max", "cgroup.procs", "nonsense"] {
            let resources = LinuxResourcesBuilder::default()
                .unified(HashMap::from([(bad.to_string(), "1".to_string())]))
                .build()
                .unwrap();
            let err = v2(&resources, &facts()).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
