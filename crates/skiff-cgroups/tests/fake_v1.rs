//! The v1 manager against temp dirs laid out as v1 hierarchies: no root needed.

// Test fixtures and helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fake_v1, read, v1_kernel_files};
use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};
use skiff_cgroups::{CgroupError, CgroupManager, FreezerState, Manager, Mounts};

const MIB: i64 = 1 << 20;

#[test]
fn create_makes_a_directory_in_every_hierarchy_and_copies_cpuset_down() {
    let (tmp, mounts) = fake_v1();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    assert_eq!(manager.version(), 1);
    manager.create().unwrap();
    for controller in common::V1_CONTROLLERS {
        assert!(
            tmp.path().join(controller).join("skiff/abc").is_dir(),
            "{controller}"
        );
    }
    for level in ["skiff", "skiff/abc"] {
        let dir = tmp.path().join("cpuset").join(level);
        assert_eq!(read(dir.join("cpuset.cpus")), "0-1", "{level}");
        assert_eq!(read(dir.join("cpuset.mems")), "0", "{level}");
    }
}

#[test]
fn a_shared_hierarchy_gets_one_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let both = tmp.path().join("cpu,cpuacct");
    std::fs::create_dir(&both).unwrap();
    let mut mounts = Mounts::default();
    mounts.v1.insert("cpu".into(), both.clone());
    mounts.v1.insert("cpuacct".into(), both.clone());
    let Manager::V1(manager) = Manager::new(&mounts, "/a").unwrap() else {
        panic!("expected v1");
    };
    assert_eq!(manager.dirs(), [both.join("a")]);
    manager.create().unwrap();
    manager.add_process(7).unwrap();
    assert_eq!(read(both.join("a/cgroup.procs")), "7");
}

#[test]
fn apply_writes_each_file_into_its_controllers_hierarchy() {
    let (tmp, mounts) = fake_v1();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    v1_kernel_files(&mounts, "/skiff/abc");
    let resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .quota(20_000i64)
                .period(100_000u64)
                .cpus("1")
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .swap(64 * MIB)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    manager.apply(&resources).unwrap();
    let dir = |c: &str| tmp.path().join(c).join("skiff/abc");
    assert_eq!(read(dir("cpu").join("cpu.cfs_quota_us")), "20000");
    assert_eq!(read(dir("cpu").join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(dir("cpuset").join("cpuset.cpus")), "1");
    assert_eq!(
        read(dir("memory").join("memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(
        read(dir("memory").join("memory.memsw.limit_in_bytes")),
        "67108864"
    );
    assert!(!dir("memory").join("cpu.cfs_quota_us").exists());
}

#[test]
fn a_resource_whose_hierarchy_is_not_mounted_is_refused_by_name() {
    let (_tmp, mut mounts) = fake_v1();
    mounts.v1.remove("pids");
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    let pids = LinuxResourcesBuilder::default()
        .pids(
            oci_spec::runtime::LinuxPidsBuilder::default()
                .limit(8)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let err = manager.apply(&pids).unwrap_err();
    assert!(
        matches!(err, CgroupError::ControllerNotMounted { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("pids.max"), "{err}");
}

#[test]
fn freeze_and_thaw_write_freezer_state() {
    let (tmp, mounts) = fake_v1();
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    v1_kernel_files(&mounts, "/skiff/abc");
    let state = tmp.path().join("freezer/skiff/abc/freezer.state");
    manager.freeze().unwrap();
    assert_eq!(read(&state), "FROZEN");
    assert_eq!(manager.freezer_state().unwrap(), FreezerState::Frozen);
    manager.thaw().unwrap();
    assert_eq!(read(&state), "THAWED");
}

#[test]
fn without_a_freezer_hierarchy_freeze_says_so() {
    let (_tmp, mut mounts) = fake_v1();
    mounts.v1.remove("freezer");
    let manager = Manager::new(&mounts, "/skiff/abc").unwrap();
    manager.create().unwrap();
    let err = manager.freeze().unwrap_err();
    assert!(err.to_string().contains("no freezer"), "{err}");
}
