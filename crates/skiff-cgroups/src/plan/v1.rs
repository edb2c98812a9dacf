//! OCI resources to cgroup v1 files.

use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxResources, LinuxThrottleDevice,
};

use super::{
    Controller, Write, check_bytes, check_page_size, nonzero_i64, nonzero_u64, rdma_writes,
};
use crate::error::{CgroupError, Result};

/// Which blkio weight file a v1 host offers (CFQ is gone from recent kernels; BFQ replaced it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlkioWeightFile {
    /// `blkio.weight` (CFQ).
    Cfq,
    /// `blkio.bfq.weight` (BFQ).
    Bfq,
    /// Neither: a blkio weight cannot be set.
    #[default]
    None,
}

/// What the v1 mapping needs to know about the host and the cgroup as it is now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Facts {
    /// `memory.memsw.limit_in_bytes` exists (swap accounting is on).
    pub memsw: bool,
    /// The cgroup's current `memory.limit_in_bytes`, which decides the order of the limit and
    /// memsw writes (the kernel keeps limit <= memsw at every step).
    pub current_memory_limit: Option<u64>,
    /// Which blkio weight file exists.
    pub blkio_weight: BlkioWeightFile,
}

/// The v1 writes for `resources`, in the order they must happen.
///
/// `0` means "unset" for shares, quota, period and memory values, as in runc. Swap values are
/// skipped when the host has no swap accounting (`facts.memsw` false). `unified` entries are
/// refused (they are v2 files).
pub fn v1(resources: &LinuxResources, facts: &V1Facts) -> Result<Vec<Write>> {
    let mut writes = Vec::new();
    if let Some(cpu) = resources.cpu() {
        cpu_writes(cpu, &mut writes);
    }
    if let Some(memory) = resources.memory() {
        memory_writes(memory, facts, &mut writes)?;
    }
    if let Some(pids) = resources.pids() {
        let value = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".to_string()
        };
        writes.push(Write::new(Controller::Pids, "pids.max", value));
    }
    if let Some(block_io) = resources.block_io() {
        blkio_writes(block_io, facts.blkio_weight, &mut writes)?;
    }
    for limit in resources.hugepage_limits().iter().flatten() {
        let size = check_page_size(limit.page_size())?;
        let bytes = check_bytes("hugepageLimits.limit", limit.limit())?;
        writes.push(Write::new(
            Controller::Hugetlb,
            format!("hugetlb.{size}.limit_in_bytes"),
            bytes,
        ));
    }
    if let Some(network) = resources.network() {
        if let Some(class_id) = network.class_id() {
            writes.push(Write::new(Controller::NetCls, "net_cls.classid", class_id));
        }
        for priority in network.priorities().iter().flatten() {
            writes.push(Write::new(
                Controller::NetPrio,
                "net_prio.ifpriomap",
                format!("{} {}", priority.name(), priority.priority()),
            ));
        }
    }
    writes.extend(rdma_writes(resources.rdma().as_ref()));
    for rule in resources.devices().iter().flatten() {
        writes.push(device_write(rule)?);
    }
    if resources.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(CgroupError::Unsupported {
            what: "linux.resources.unified (cgroup v2 files)".to_string(),
            version: "v1",
        });
    }
    Ok(writes)
}

fn cpu_writes(cpu: &LinuxCpu, writes: &mut Vec<Write>) {
    if let Some(shares) = nonzero_u64(cpu.shares()) {
        writes.push(Write::new(Controller::Cpu, "cpu.shares", shares));
    }
    // Period before quota: a quota is always judged against the period in force.
    if let Some(period) = nonzero_u64(cpu.period()) {
        writes.push(Write::new(Controller::Cpu, "cpu.cfs_period_us", period));
    }
    if let Some(quota) = nonzero_i64(cpu.quota()) {
        writes.push(Write::new(
            Controller::Cpu,
            "cpu.cfs_quota_us",
            quota.max(-1),
        ));
    }
    if let Some(burst) = cpu.burst() {
        writes.push(Write::new(Controller::Cpu, "cpu.cfs_burst_us", burst));
    }
    if let Some(period) = nonzero_u64(cpu.realtime_period()) {
        writes.push(Write::new(Controller::Cpu, "cpu.rt_period_us", period));
    }
    if let Some(runtime) = nonzero_i64(cpu.realtime_runtime()) {
        writes.push(Write::new(Controller::Cpu, "cpu.rt_runtime_us", runtime));
    }
    if let Some(idle) = cpu.idle() {
        writes.push(Write::new(Controller::Cpu, "cpu.idle", idle));
    }
    if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
        writes.push(Write::new(Controller::Cpuset, "cpuset.cpus", cpus));
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
        writes.push(Write::new(Controller::Cpuset, "cpuset.mems", mems));
    }
}

const LIMIT: &str = "memory.limit_in_bytes";
const MEMSW: &str = "memory.memsw.limit_in_bytes";

fn memory_writes(memory: &LinuxMemory, facts: &V1Facts, writes: &mut Vec<Write>) -> Result<()> {
    let limit = nonzero_i64(memory.limit())
        .map(|v| check_bytes("memory.limit", v))
        .transpose()?;
    let mut swap = nonzero_i64(memory.swap())
        .map(|v| check_bytes("memory.swap", v))
        .transpose()?;
    // An unlimited memory limit without a swap value frees swap too (runc does the same).
    if limit == Some(-1) && swap.is_none() {
        swap = Some(-1);
    }
    if let (Some(limit), Some(swap)) = (limit, swap) {
        if limit > 0 && swap > 0 && swap < limit {
            return Err(CgroupError::InvalidResource {
                field: "memory.swap",
                value: swap.to_string(),
                reason: "memory+swap must be at least the memory limit",
            });
        }
    }
    let swap = swap.filter(|_| facts.memsw);
    let limit_write = limit.map(|v| Write::new(Controller::Memory, LIMIT, v));
    let swap_write = swap.map(|v| Write::new(Controller::Memory, MEMSW, v));
    // The kernel insists on limit <= memsw after every single write. Raising memsw first is
    // safe when the new memsw is at least the current limit; otherwise lower the limit first.
    let swap_first = match (limit, swap) {
        (Some(_), Some(-1)) => true,
        (Some(_), Some(swap)) => facts
            .current_memory_limit
            .is_some_and(|current| current < swap.unsigned_abs()),
        _ => false,
    };
    if swap_first {
        writes.extend(swap_write);
        writes.extend(limit_write);
    } else {
        writes.extend(limit_write);
        writes.extend(swap_write);
    }
    if let Some(reservation) = nonzero_i64(memory.reservation()) {
        let reservation = check_bytes("memory.reservation", reservation)?;
        writes.push(Write::new(
            Controller::Memory,
            "memory.soft_limit_in_bytes",
            reservation,
        ));
    }
    if let Some(swappiness) = memory.swappiness() {
        if swappiness > 100 {
            return Err(CgroupError::InvalidResource {
                field: "memory.swappiness",
                value: swappiness.to_string(),
                reason: "it must be between 0 and 100",
            });
        }
        writes.push(Write::new(
            Controller::Memory,
            "memory.swappiness",
            swappiness,
        ));
    }
    if memory.disable_oom_killer() == Some(true) {
        writes.push(Write::new(Controller::Memory, "memory.oom_control", 1));
    }
    Ok(())
}

fn blkio_writes(
    block_io: &LinuxBlockIo,
    weight_file: BlkioWeightFile,
    writes: &mut Vec<Write>,
) -> Result<()> {
    let (weight, weight_device) = match weight_file {
        BlkioWeightFile::Cfq => ("blkio.weight", "blkio.weight_device"),
        BlkioWeightFile::Bfq => ("blkio.bfq.weight", "blkio.bfq.weight_device"),
        BlkioWeightFile::None => ("", ""),
    };
    let unsupported = || CgroupError::Unsupported {
        what: "a blkio weight on this host (it has neither blkio.weight nor blkio.bfq.weight)"
            .to_string(),
        version: "v1",
    };
    if let Some(value) = block_io.weight().filter(|w| *w != 0) {
        if weight.is_empty() {
            return Err(unsupported());
        }
        writes.push(Write::new(Controller::Blkio, weight, value));
    }
    for device in block_io.weight_device().iter().flatten() {
        if let Some(value) = device.weight() {
            if weight_device.is_empty() {
                return Err(unsupported());
            }
            writes.push(Write::new(
                Controller::Blkio,
                weight_device,
                format!("{}:{} {value}", device.major(), device.minor()),
            ));
        }
    }
    let throttles: [(&str, &Option<Vec<LinuxThrottleDevice>>); 4] = [
        (
            "blkio.throttle.read_bps_device",
            block_io.throttle_read_bps_device(),
        ),
        (
            "blkio.throttle.write_bps_device",
            block_io.throttle_write_bps_device(),
        ),
        (
            "blkio.throttle.read_iops_device",
            block_io.throttle_read_iops_device(),
        ),
        (
            "blkio.throttle.write_iops_device",
            block_io.throttle_write_iops_device(),
        ),
    ];
    for (file, devices) in throttles {
        for device in devices.iter().flatten() {
            writes.push(Write::new(
                Controller::Blkio,
                file,
                format!("{}:{} {}", device.major(), device.minor(), device.rate()),
            ));
        }
    }
    Ok(())
}

/// `devices.allow` / `devices.deny` line: `c 1:3 rwm`, `a *:* rwm`.
fn device_write(rule: &LinuxDeviceCgroup) -> Result<Write> {
    let access = rule.access().as_deref().unwrap_or("rwm");
    let access = if access.is_empty() { "rwm" } else { access };
    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(CgroupError::InvalidResource {
            field: "devices.access",
            value: access.to_string(),
            reason: "it may only contain r, w and m",
        });
    }
    let number = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
    let kind = rule.typ().unwrap_or_default().as_str().to_string();
    let file = if rule.allow() {
        "devices.allow"
    } else {
        "devices.deny"
    };
    Ok(Write::new(
        Controller::Devices,
        file,
        format!(
            "{kind} {}:{} {access}",
            number(rule.major()),
            number(rule.minor())
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
        LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
    };
    use std::collections::HashMap;

    const MIB: i64 = 1 << 20;

    fn pairs(writes: &[Write]) -> Vec<(&str, &str)> {
        writes
            .iter()
            .map(|w| (w.file.as_str(), w.value.as_str()))
            .collect()
    }

    fn facts() -> V1Facts {
        V1Facts {
            memsw: true,
            current_memory_limit: Some(9_223_372_036_854_771_712),
            blkio_weight: BlkioWeightFile::Bfq,
        }
    }

    #[test]
    fn cpu_shares_and_quota_go_to_the_cfs_files_period_first() {
        let resources = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(20_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let writes = v1(&resources, &facts()).unwrap();
        assert_eq!(
            pairs(&writes),
            [
                ("cpu.shares", "512"),
                ("cpu.cfs_period_us", "100000"),
                ("cpu.cfs_quota_us", "20000"),
            ]
        );
        assert!(writes.iter().all(|w| w.controller == Controller::Cpu));
    }

    #[test]
    fn an_unlimited_quota_is_written_as_minus_one() {
        let resources = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().quota(-1i64).build().unwrap())
            .build()
            .unwrap();
        assert_eq!(
            pairs(&v1(&resources, &facts()).unwrap()),
            [("cpu.cfs_quota_us", "-1")]
        );
    }

    #[test]
    fn cpuset_cpus_and_mems_go_to_the_cpuset_controller() {
        let resources = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .cpus("0")
                    .mems("0")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let writes = v1(&resources, &facts()).unwrap();
        assert_eq!(pairs(&writes), [("cpuset.cpus", "0"), ("cpuset.mems", "0")]);
        assert!(writes.iter().all(|w| w.controller == Controller::Cpuset));
    }

    fn memory(limit: i64, swap: Option<i64>) -> LinuxResources {
        let mut memory = LinuxMemoryBuilder::default().limit(limit);
        if let Some(swap) = swap {
            memory = memory.swap(swap);
        }
        LinuxResourcesBuilder::default()
            .memory(memory.build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn raising_memory_writes_memsw_before_the_limit() {
        let facts = V1Facts {
            current_memory_limit: Some(64 * MIB as u64),
            ..facts()
        };
        let writes = v1(&memory(128 * MIB, Some(256 * MIB)), &facts).unwrap();
        assert_eq!(
            pairs(&writes),
            [(MEMSW, "268435456"), (LIMIT, "134217728"),]
        );
    }

    #[test]
    fn lowering_memory_writes_the_limit_before_memsw() {
        let facts = V1Facts {
            current_memory_limit: Some(512 * MIB as u64),
            ..facts()
        };
        let writes = v1(&memory(64 * MIB, Some(64 * MIB)), &facts).unwrap();
        assert_eq!(pairs(&writes), [(LIMIT, "67108864"), (MEMSW, "67108864")]);
    }

    #[test]
    fn an_unlimited_limit_also_frees_swap_first() {
        let writes = v1(&memory(-1, None), &facts()).unwrap();
        assert_eq!(pairs(&writes), [(MEMSW, "-1"), (LIMIT, "-1")]);
    }

    #[test]
    fn swap_is_skipped_without_swap_accounting() {
        let facts = V1Facts {
            memsw: false,
            ..facts()
        };
        let writes = v1(&memory(64 * MIB, Some(128 * MIB)), &facts).unwrap();
        assert_eq!(pairs(&writes), [(LIMIT, "67108864")]);
    }

    #[test]
    fn swap_below_the_limit_is_refused() {
        let err = v1(&memory(128 * MIB, Some(64 * MIB)), &facts()).unwrap_err();
        assert!(err.to_string().contains("memory.swap"), "{err}");
    }

    #[test]
    fn reservation_swappiness_and_oom_killer_map_to_memory_files() {
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .reservation(32 * MIB)
                    .swappiness(10u64)
                    .disable_oom_killer(true)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(
            pairs(&v1(&resources, &facts()).unwrap()),
            [
                ("memory.soft_limit_in_bytes", "33554432"),
                ("memory.swappiness", "10"),
                ("memory.oom_control", "1"),
            ]
        );
    }

    #[test]
    fn a_pids_limit_of_zero_or_less_means_max() {
        for (limit, expected) in [(8, "8"), (0, "max"), (-1, "max")] {
            let resources = LinuxResourcesBuilder::default()
                .pids(LinuxPidsBuilder::default().limit(limit).build().unwrap())
                .build()
                .unwrap();
            assert_eq!(
                pairs(&v1(&resources, &facts()).unwrap()),
                [("pids.max", expected)]
            );
        }
    }

    #[test]
    fn blkio_weight_uses_whichever_weight_file_exists() {
        let resources = LinuxResourcesBuilder::default()
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight(500u16)
                    .throttle_read_bps_device(vec![
                        LinuxThrottleDeviceBuilder::default()
                            .major(8i64)
                            .minor(0i64)
                            .rate(1_048_576u64)
                            .build()
                            .unwrap(),
                    ])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(
            pairs(&v1(&resources, &facts()).unwrap()),
            [
                ("blkio.bfq.weight", "500"),
                ("blkio.throttle.read_bps_device", "8:0 1048576"),
            ]
        );
        let cfq = V1Facts {
            blkio_weight: BlkioWeightFile::Cfq,
            ..facts()
        };
        assert_eq!(v1(&resources, &cfq).unwrap()[0].file, "blkio.weight");
        let none = V1Facts {
            blkio_weight: BlkioWeightFile::None,
            ..facts()
        };
        let err = v1(&resources, &none).unwrap_err();
        assert!(err.to_string().contains("blkio.bfq.weight"), "{err}");
    }

    #[test]
    fn device_rules_become_allow_and_deny_lines_in_order() {
        let deny_all = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        let allow_null = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(1i64)
            .minor(3i64)
            .access("rw")
            .build()
            .unwrap();
        let resources = LinuxResourcesBuilder::default()
            .devices(vec![deny_all, allow_null])
            .build()
            .unwrap();
        assert_eq!(
            pairs(&v1(&resources, &facts()).unwrap()),
            [("devices.deny", "a *:* rwm"), ("devices.allow", "c 1:3 rw")]
        );
    }

    #[test]
    fn unified_entries_are_refused_on_v1() {
        let resources = LinuxResourcesBuilder::default()
            .unified(HashMap::from([(
                "memory.high".to_string(),
                "1G".to_string(),
            )]))
            .build()
            .unwrap();
        let err = v1(&resources, &facts()).unwrap_err();
        assert!(err.to_string().contains("cgroup v1"), "{err}");
    }

    #[test]
    fn empty_resources_write_nothing() {
        let resources = LinuxResourcesBuilder::default().build().unwrap();
        assert!(v1(&resources, &facts()).unwrap().is_empty());
    }
}
