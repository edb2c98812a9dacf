//! Root-only: real cgroup v1 enforcement on this (hybrid) host. Each test owns a cgroup named
//! `skiff-test-<pid>-<n>` in every hierarchy and removes it on drop, also when it panics.
//! CI runs as root; on a host without v1 hierarchies the tests say so and pass.

// Test fixtures and helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{TestCgroup, read, wait_until};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use skiff_cgroups::{CgroupError, CgroupManager, FreezerState, Signal};

const MIB: i64 = 1 << 20;
const BUSY: &str = "while :; do :; done";

fn cpu_quota(quota: i64, period: u64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(period)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn memory(limit: i64, swap: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(swap)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

fn cpu_ns(cgroup: &TestCgroup) -> u64 {
    cgroup.manager.stats().unwrap().cpu.usage_ns
}

#[test]
fn a_busy_loop_under_a_20_percent_quota_uses_about_a_fifth_of_a_cpu() {
    let Some(mut cgroup) = TestCgroup::v1() else {
        return;
    };
    cgroup.manager.apply(&cpu_quota(20_000, 100_000)).unwrap();
    assert_eq!(read(cgroup.dir("cpu").join("cpu.cfs_quota_us")), "20000");
    cgroup.spawn(BUSY);
    assert!(wait_until(Duration::from_secs(5), || cpu_ns(&cgroup) > 0));

    let (start_ns, start) = (cpu_ns(&cgroup), Instant::now());
    std::thread::sleep(Duration::from_millis(1500)); // the measuring window itself
    let (end_ns, wall) = (cpu_ns(&cgroup), start.elapsed());
    let share = (end_ns - start_ns) as f64 / wall.as_nanos() as f64;
    eprintln!(
        "busy loop under quota 20000/100000 used {:.1}% of one CPU",
        share * 100.0
    );
    assert!(
        (0.10..=0.30).contains(&share),
        "used {:.1}% of one CPU",
        share * 100.0
    );
    let throttled = cgroup.manager.stats().unwrap().cpu.throttled_periods;
    assert!(throttled.unwrap_or(0) > 0, "never throttled: {throttled:?}");
}

#[test]
fn a_process_allocating_past_64_mib_is_oom_killed_and_counted() {
    let Some(mut cgroup) = TestCgroup::v1() else {
        return;
    };
    // memory+swap equal to the limit: no swap to escape into.
    cgroup.manager.apply(&memory(64 * MIB, 64 * MIB)).unwrap();
    assert_eq!(
        read(cgroup.dir("memory").join("memory.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    let hog = cgroup.spawn("x=aaaaaaaa; while :; do x=$x$x; done");
    let (status, _) = cgroup.wait(hog, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc_sigkill()), "{status:?}");
    let stats = cgroup.manager.stats().unwrap();
    eprintln!("memory stats after the OOM kill: {:?}", stats.memory);
    assert!(
        stats.memory.oom_kills.unwrap_or(0) >= 1,
        "{:?}",
        stats.memory
    );
    assert_eq!(stats.memory.limit_bytes, Some(64 * MIB as u64));
    let peak = stats.memory.peak_bytes.unwrap();
    assert!(
        peak > 32 * MIB as u64 && peak <= 64 * MIB as u64,
        "peak {peak}"
    );
}

fn libc_sigkill() -> i32 {
    Signal::SIGKILL as i32
}

#[test]
fn a_pids_limit_of_8_stops_forks_and_the_count_never_exceeds_it() {
    let Some(mut cgroup) = TestCgroup::v1() else {
        return;
    };
    let pids = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(8).build().unwrap())
        .build()
        .unwrap();
    cgroup.manager.apply(&pids).unwrap();
    let shell =
        cgroup.spawn("i=0; while [ $i -lt 20 ]; do sleep 60 2>/dev/null & i=$((i+1)); done; wait");
    let (status, stderr) = cgroup.wait(shell, Duration::from_secs(20));
    assert!(!status.success(), "all 20 forks succeeded");
    assert!(stderr.contains("fork"), "stderr: {stderr}");
    let dir = cgroup.dir("pids");
    let peak: u64 = read(dir.join("pids.peak")).parse().unwrap();
    let refused = skiff_cgroups::flat_keyed(&read(dir.join("pids.events")), "max").unwrap();
    let left = cgroup.manager.pids().unwrap();
    eprintln!(
        "pids.peak {peak}, forks refused {refused}, sleeps left {}",
        left.len()
    );
    assert!(peak <= 8, "pids.peak {peak}");
    assert!(refused >= 1);
    assert!(!left.is_empty() && left.len() <= 8, "{left:?}");
    assert_eq!(cgroup.manager.stats().unwrap().pids.limit, Some(8));

    cgroup.manager.kill_all(Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(5), || cgroup
        .manager
        .pids()
        .unwrap()
        .is_empty()));
}

#[test]
fn freezing_stops_cpu_use_and_thawing_resumes_it() {
    let Some(mut cgroup) = TestCgroup::v1() else {
        return;
    };
    cgroup.spawn(BUSY);
    assert!(wait_until(Duration::from_secs(5), || cpu_ns(&cgroup) > 1_000_000));

    cgroup.manager.freeze().unwrap();
    assert_eq!(
        cgroup.manager.freezer_state().unwrap(),
        FreezerState::Frozen
    );
    let frozen_at = cpu_ns(&cgroup);
    std::thread::sleep(Duration::from_millis(300)); // a window in which nothing may run
    let while_frozen = cpu_ns(&cgroup) - frozen_at;
    eprintln!("CPU used in 300 ms while frozen: {while_frozen} ns");
    assert!(while_frozen < 1_000_000, "{while_frozen} ns while frozen");

    cgroup.manager.thaw().unwrap();
    assert_eq!(
        cgroup.manager.freezer_state().unwrap(),
        FreezerState::Thawed
    );
    let thawed_at = cpu_ns(&cgroup);
    assert!(
        wait_until(Duration::from_secs(5), || cpu_ns(&cgroup)
            > thawed_at + 10_000_000),
        "no CPU use after thawing"
    );
}

#[test]
fn stats_read_back_nonzero_cpu_memory_and_pids() {
    let Some(mut cgroup) = TestCgroup::v1() else {
        return;
    };
    let child = cgroup.spawn("x=$(head -c 8000000 /dev/zero | tr '\\0' a); while :; do :; done");
    let pid = cgroup.pid(child);
    let mut stats = Default::default();
    let ready = wait_until(Duration::from_secs(10), || {
        stats = cgroup.manager.stats().unwrap();
        stats.cpu.usage_ns > 0 && stats.memory.usage_bytes > 4 << 20 && stats.pids.current >= 1
    });
    eprintln!("{stats:?}");
    assert!(ready, "{stats:?}");
    assert!(stats.memory.peak_bytes.unwrap() >= stats.memory.usage_bytes);
    assert_eq!(stats.memory.oom_kills, Some(0));
    assert!(stats.cpu.user_ns.is_some());
    assert!(cgroup.manager.pids().unwrap().contains(&pid));
}

#[test]
fn apply_writes_limits_and_reorders_memory_writes_when_lowering_and_raising() {
    let Some(cgroup) = TestCgroup::v1() else {
        return;
    };
    let resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(128 * MIB)
                .swap(256 * MIB)
                .reservation(32 * MIB)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(16).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(200u16)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    cgroup.manager.apply(&resources).unwrap();
    let mem = cgroup.dir("memory");
    assert_eq!(read(cgroup.dir("cpu").join("cpu.shares")), "512");
    assert_eq!(read(cgroup.dir("cpuset").join("cpuset.cpus")), "0");
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (128 * MIB).to_string()
    );
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")),
        (256 * MIB).to_string()
    );
    assert_eq!(
        read(mem.join("memory.soft_limit_in_bytes")),
        (32 * MIB).to_string()
    );
    assert_eq!(read(cgroup.dir("pids").join("pids.max")), "16");
    let blkio = cgroup.dir("blkio");
    let weight = ["blkio.weight", "blkio.bfq.weight"]
        .iter()
        .find(|f| blkio.join(f).exists())
        .map(|f| read(blkio.join(f)))
        .unwrap();
    assert!(weight.contains("200"), "{weight}");

    // Lowering memsw below the current limit only works limit-first ...
    cgroup.manager.apply(&memory(64 * MIB, 64 * MIB)).unwrap();
    assert_eq!(
        read(mem.join("memory.memsw.limit_in_bytes")),
        (64 * MIB).to_string()
    );
    // ... raising the limit above the current memsw only works memsw-first.
    cgroup
        .manager
        .apply(&memory(512 * MIB, 1024 * MIB))
        .unwrap();
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (512 * MIB).to_string()
    );
    cgroup.manager.apply(&memory(-1, -1)).unwrap();
    assert_eq!(cgroup.manager.stats().unwrap().memory.limit_bytes, None);
}

#[test]
fn a_value_the_kernel_refuses_is_an_error_naming_file_and_value() {
    let Some(cgroup) = TestCgroup::v1() else {
        return;
    };
    let resources = LinuxResourcesBuilder::default()
        .cpu(LinuxCpuBuilder::default().cpus("63").build().unwrap())
        .build()
        .unwrap();
    let err = cgroup.manager.apply(&resources).unwrap_err();
    assert!(matches!(err, CgroupError::Write { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("cpuset.cpus") && text.contains("\"63\""),
        "{text}"
    );
}

#[test]
fn a_nested_cgroup_inherits_cpuset_so_processes_can_join_it() {
    let Some(cgroup) = TestCgroup::v1() else {
        return;
    };
    let mounts = skiff_cgroups::Mounts::of_this_process().unwrap();
    let inner = skiff_cgroups::Manager::new(&mounts, &format!("{}/a/b", cgroup.name)).unwrap();
    inner.create().unwrap();
    let inner_dir = cgroup.dir("cpuset").join("a/b");
    assert!(!read(inner_dir.join("cpuset.cpus")).is_empty());
    assert!(!read(inner_dir.join("cpuset.mems")).is_empty());
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let joined = inner.add_process(child.id() as i32);
    assert!(inner.pids().unwrap().contains(&(child.id() as i32)));
    child.kill().unwrap();
    child.wait().unwrap();
    joined.unwrap();
    // The outer guard removes the nested cgroups with its own.
}

#[test]
fn a_device_rule_denies_access_to_dev_null() {
    let Some(mut cgroup) = TestCgroup::v1() else {
        return;
    };
    let deny_null = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .typ(LinuxDeviceType::C)
        .major(1i64)
        .minor(3i64)
        .access("rwm")
        .build()
        .unwrap();
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![deny_null])
        .build()
        .unwrap();
    cgroup.manager.apply(&resources).unwrap();
    let child = cgroup.spawn("echo hi > /dev/null");
    let (status, stderr) = cgroup.wait(child, Duration::from_secs(10));
    assert!(!status.success(), "writing /dev/null was allowed");
    assert!(stderr.contains("not permitted"), "stderr: {stderr}");
}

#[test]
fn destroy_fails_clearly_while_processes_remain_and_succeeds_after_kill_all() {
    let Some(mut cgroup) = TestCgroup::v1() else {
        return;
    };
    let child = cgroup.spawn("exec sleep 60");
    let pid = cgroup.pid(child);
    let impatient = cgroup
        .manager
        .clone()
        .with_timeout(Duration::from_millis(200));
    let err = impatient.destroy().unwrap_err();
    match &err {
        CgroupError::StillHasProcesses { pids, .. } => assert_eq!(pids, &[pid]),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&cgroup.name), "{err}");

    cgroup.manager.kill_all(Signal::SIGKILL).unwrap();
    let (status, _) = cgroup.wait(child, Duration::from_secs(5));
    assert_eq!(status.signal(), Some(libc_sigkill()));
    cgroup.manager.destroy().unwrap();
    assert!(!cgroup.dir("memory").exists());
    assert!(!cgroup.dir("pids").exists());
    // Destroying again is fine (and the guard does exactly that).
    cgroup.manager.destroy().unwrap();
}
