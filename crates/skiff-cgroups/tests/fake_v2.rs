//! The v2 manager against a temp dir laid out as the kernel lays out cgroup2: no root needed.

// Test fixtures and helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{FakeFreezer, fake_v2, fake_v2_with, read};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder,
    LinuxResourcesBuilder,
};
use skiff_cgroups::{CgroupError, CgroupManager, FreezerState, Manager, Signal};

const MIB: i64 = 1 << 20;

#[test]
fn create_enables_every_available_controller_in_each_ancestor() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    assert_eq!(manager.version(), 2);
    manager.create().unwrap();
    let all = "+cpu +cpuset +hugetlb +io +memory +pids";
    assert_eq!(read(tmp.path().join("cgroup.subtree_control")), all);
    assert_eq!(read(tmp.path().join("skiff/cgroup.subtree_control")), all);
    assert!(tmp.path().join("skiff/abc").is_dir());
    // The leaf holds processes, so it delegates nothing.
    assert!(!tmp.path().join("skiff/abc/cgroup.subtree_control").exists());
}

#[test]
fn create_only_adds_what_an_ancestor_has_and_has_not_enabled_yet() {
    let (tmp, mounts) = fake_v2();
    let pods = tmp.path().join("pods");
    std::fs::create_dir(&pods).unwrap();
    std::fs::write(pods.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    std::fs::write(pods.join("cgroup.subtree_control"), "cpu\n").unwrap();
    std::fs::write(
        tmp.path().join("cgroup.subtree_control"),
        "cpuset cpu io memory hugetlb pids\n",
    )
    .unwrap();
    let manager = Manager::new(&mounts, "pods/abc").unwrap();
    manager.create().unwrap();
    // The root had everything enabled already: untouched.
    assert_eq!(
        read(tmp.path().join("cgroup.subtree_control")),
        "cpuset cpu io memory hugetlb pids"
    );
    assert_eq!(read(pods.join("cgroup.subtree_control")), "+memory +pids");
}

#[test]
fn create_is_idempotent() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    std::fs::write(tmp.path().join("skiff/abc/cpu.max"), "max 100000\n").unwrap();
    manager.create().unwrap();
    assert_eq!(read(tmp.path().join("skiff/abc/cpu.max")), "max 100000");
}

#[test]
fn apply_writes_the_v2_files() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    let dir = tmp.path().join("skiff/abc");
    std::fs::write(dir.join("memory.swap.max"), "max\n").unwrap(); // the kernel has swap
    let resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(20_000i64)
                .period(100_000u64)
                .cpus("0-1")
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .swap(128 * MIB)
                .reservation(32 * MIB)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(-1).build().unwrap())
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(1000u16)
                .build()
                .unwrap(),
        )
        .unified(HashMap::from([(
            "memory.high".to_string(),
            "50000000".to_string(),
        )]))
        .build()
        .unwrap();
    manager.apply(&resources).unwrap();
    for (file, value) in [
        ("cpu.weight", "39"),
        ("cpu.max", "20000 100000"),
        ("cpuset.cpus", "0-1"),
        ("memory.max", "67108864"),
        ("memory.swap.max", "67108864"),
        ("memory.low", "33554432"),
        ("memory.high", "50000000"),
        ("pids.max", "max"),
        ("io.weight", "default 10000"),
    ] {
        assert_eq!(read(dir.join(file)), value, "{file}");
    }
}

#[test]
fn apply_refuses_a_controller_the_parent_does_not_delegate() {
    let (_tmp, mounts) = fake_v2_with("cpu memory");
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    let pids = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(8).build().unwrap())
        .build()
        .unwrap();
    let err = manager.apply(&pids).unwrap_err();
    assert!(
        matches!(err, CgroupError::ControllerUnavailable { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("pids") && text.contains("cgroup.subtree_control"),
        "{text}"
    );
}

#[test]
fn add_process_writes_the_pid_to_cgroup_procs() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    manager.add_process(4242).unwrap();
    assert_eq!(read(tmp.path().join("skiff/abc/cgroup.procs")), "4242");
    assert_eq!(manager.pids().unwrap(), [4242]);
}

#[test]
fn stats_parse_the_v2_files() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    let dir = tmp.path().join("skiff/abc");
    let files = [
        (
            "cpu.stat",
            "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nnr_periods 7\nnr_throttled 3\nthrottled_usec 900\n",
        ),
        ("memory.current", "1048576\n"),
        ("memory.peak", "2097152\n"),
        ("memory.max", "67108864\n"),
        ("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n"),
        ("pids.current", "3\n"),
        ("pids.max", "max\n"),
    ];
    for (file, text) in files {
        std::fs::write(dir.join(file), text).unwrap();
    }
    let stats = manager.stats().unwrap();
    assert_eq!(stats.cpu.usage_ns, 2_500_000);
    assert_eq!(stats.cpu.user_ns, Some(2_000_000));
    assert_eq!(stats.cpu.system_ns, Some(500_000));
    assert_eq!(stats.cpu.throttled_periods, Some(3));
    assert_eq!(stats.cpu.throttled_ns, Some(900_000));
    assert_eq!(stats.memory.usage_bytes, 1_048_576);
    assert_eq!(stats.memory.peak_bytes, Some(2_097_152));
    assert_eq!(stats.memory.limit_bytes, Some(64 << 20));
    assert_eq!(stats.memory.oom_kills, Some(1));
    assert_eq!(stats.pids.current, 3);
    assert_eq!(stats.pids.limit, None);
}

#[test]
fn stats_without_memory_peak_leave_it_unknown() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    std::fs::write(tmp.path().join("skiff/abc/memory.current"), "4096\n").unwrap();
    let stats = manager.stats().unwrap();
    assert_eq!(stats.memory.usage_bytes, 4096);
    assert_eq!(stats.memory.peak_bytes, None);
}

#[test]
fn freeze_writes_1_and_returns_once_the_kernel_reports_frozen() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    let dir = tmp.path().join("skiff/abc");
    std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    let events = dir.join("cgroup.events");
    let kernel = std::thread::spawn(move || {
        // The kernel reports "frozen 1" a little after cgroup.freeze is written.
        let freeze = events.with_file_name("cgroup.freeze");
        assert!(common::wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(&freeze).is_ok_and(|s| s.trim() == "1")
        }));
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(&events, "populated 1\nfrozen 1\n").unwrap();
    });
    manager.freeze().unwrap();
    kernel.join().unwrap();
    assert_eq!(read(dir.join("cgroup.freeze")), "1");
    assert_eq!(manager.freezer_state().unwrap(), FreezerState::Frozen);

    std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    manager.thaw().unwrap();
    assert_eq!(read(dir.join("cgroup.freeze")), "0");
    assert_eq!(manager.freezer_state().unwrap(), FreezerState::Thawed);
}

#[test]
fn a_freeze_the_kernel_never_confirms_times_out_and_is_undone() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc")
        .unwrap()
        .with_timeout(Duration::from_millis(100));
    manager.create().unwrap();
    let dir = tmp.path().join("skiff/abc");
    std::fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    let err = manager.freeze().unwrap_err();
    assert!(matches!(err, CgroupError::FreezeTimeout { .. }), "{err:?}");
    assert!(err.to_string().contains("cgroup.events"), "{err}");
    assert_eq!(read(dir.join("cgroup.freeze")), "0");
}

#[test]
fn kill_all_with_sigkill_uses_cgroup_kill() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    let dir = tmp.path().join("skiff/abc");
    std::fs::write(dir.join("cgroup.kill"), "").unwrap();
    manager.kill_all(Signal::SIGKILL).unwrap();
    assert_eq!(read(dir.join("cgroup.kill")), "1");
}

#[test]
fn kill_all_with_another_signal_freezes_signals_and_thaws() {
    let (tmp, mounts) = fake_v2();
    let _kernel = FakeFreezer::start(tmp.path());
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    // No processes: nothing to signal, but the freezer round trip happens.
    manager.kill_all(Signal::SIGTERM).unwrap();
    assert_eq!(read(tmp.path().join("skiff/abc/cgroup.freeze")), "0");
}

#[test]
fn destroy_removes_the_directory_but_not_the_ancestors() {
    let (tmp, mounts) = fake_v2();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    std::fs::write(tmp.path().join("skiff/abc/memory.max"), "max\n").unwrap();
    manager.destroy().unwrap();
    assert!(!tmp.path().join("skiff/abc").exists());
    assert!(tmp.path().join("skiff").exists());
}
