//! One suite for every `CgroupManager`: the same lifecycle against the v1 and the v2 manager,
//! each on a temp-dir cgroupfs.

// Test fixtures and helpers outside #[test] functions panic on failure too.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{FakeFreezer, clear_procs, fake_v1, fake_v2};
use skiff_cgroups::{CgroupError, CgroupManager, FreezerState, Manager, Mounts};

/// Runs the lifecycle on a manager whose hierarchies live under `root`.
fn lifecycle(mounts: &Mounts, root: &Path) {
    let manager = Manager::new(mounts, "/skiff/conformance")
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    assert_eq!(manager.path().to_string(), "/skiff/conformance");

    manager.create().unwrap();
    manager.create().unwrap();
    assert!(manager.pids().unwrap().is_empty());

    manager.add_process(4242).unwrap();
    assert_eq!(manager.pids().unwrap(), [4242]);

    manager.freeze().unwrap();
    assert_eq!(manager.freezer_state().unwrap(), FreezerState::Frozen);
    manager.thaw().unwrap();
    assert_eq!(manager.freezer_state().unwrap(), FreezerState::Thawed);

    let err = manager.destroy().unwrap_err();
    match &err {
        CgroupError::StillHasProcesses { pids, .. } => assert_eq!(pids, &[4242]),
        other => panic!("expected StillHasProcesses, got {other:?}"),
    }
    assert!(err.to_string().contains("conformance"), "{err}");

    clear_procs(root); // the process exits
    manager.destroy().unwrap();
    assert!(manager.pids().unwrap().is_empty());
    manager.destroy().unwrap();
}

#[test]
fn the_v1_manager_passes_the_lifecycle_suite() {
    let (tmp, mounts) = fake_v1();
    // The kernel creates freezer.state in each new freezer cgroup.
    let freezer = tmp.path().join("freezer/skiff/conformance");
    std::fs::create_dir_all(&freezer).unwrap();
    std::fs::write(freezer.join("freezer.state"), "THAWED\n").unwrap();
    lifecycle(&mounts, tmp.path());
    assert!(!freezer.exists());
}

#[test]
fn the_v2_manager_passes_the_lifecycle_suite() {
    let (tmp, mounts) = fake_v2();
    let _kernel = FakeFreezer::start(tmp.path());
    lifecycle(&mounts, tmp.path());
    assert!(!tmp.path().join("skiff/conformance").exists());
}
