//! The etcd fixtures: a single member and a 3-member cluster, driven with `etcdctl`.

use std::path::Path;
use std::process::Command;

use skiff_testkit::etcd::{EtcdCluster, EtcdMember};
use skiff_testkit::process::run;
use skiff_testkit::require::require_program;

/// Runs `etcdctl` (API v3) against `endpoints` and returns its trimmed stdout.
fn etcdctl(endpoints: &[String], args: &[&str]) -> String {
    let program = require_program("etcdctl", "etcd-client").expect("etcdctl is installed");
    let output = run(Command::new(program)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["--dial-timeout=3s", "--command-timeout=10s"])
        .args(args))
    .unwrap_or_else(|error| panic!("{error}"));
    String::from_utf8(output.stdout)
        .expect("etcdctl prints UTF-8")
        .trim()
        .to_string()
}

#[test]
fn a_single_member_stores_and_returns_a_key() {
    let member = EtcdMember::start().unwrap();
    let endpoint = member.endpoint();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");

    etcdctl(
        std::slice::from_ref(&endpoint),
        &["put", "/skiff/greeting", "hello"],
    );
    let value = etcdctl(
        &[endpoint],
        &["get", "--print-value-only", "/skiff/greeting"],
    );
    assert_eq!(value, "hello");
}

#[test]
fn a_three_member_cluster_keeps_working_with_one_member_down() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    assert_eq!(cluster.len(), 3);
    let endpoints = cluster.endpoints();

    let members = etcdctl(&endpoints, &["member", "list"]);
    assert_eq!(members.lines().count(), 3, "{members}");
    for i in 0..3 {
        assert!(members.contains(cluster.member_name(i)), "{members}");
    }

    cluster.kill_member(1);
    assert!(!cluster.is_running(1));
    assert_eq!(cluster.live_endpoints().len(), 2);
    // Member 1 may have been the leader: let the other two elect a new one.
    cluster.wait_until_healthy().unwrap();

    // All three endpoints, the dead one included: the client has to get past it.
    etcdctl(&endpoints, &["put", "/skiff/after-kill", "still here"]);
    let value = etcdctl(
        &endpoints,
        &["get", "--print-value-only", "/skiff/after-kill"],
    );
    assert_eq!(value, "still here");
}

#[test]
fn a_restarted_member_rejoins_and_sees_writes_made_while_it_was_down() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    cluster.kill_member(2);
    cluster.wait_until_healthy().unwrap();
    etcdctl(
        &cluster.live_endpoints(),
        &["put", "/skiff/while-down", "written"],
    );

    cluster.restart_member(2).unwrap();
    assert!(cluster.is_running(2));
    // A linearizable read through the restarted member: answered once it has caught up.
    let value = etcdctl(
        &[cluster.endpoint(2)],
        &[
            "get",
            "--consistency=l",
            "--print-value-only",
            "/skiff/while-down",
        ],
    );
    assert_eq!(value, "written");
}

#[test]
fn killing_the_leader_makes_the_others_elect_a_new_one() {
    let mut cluster = EtcdCluster::start(3).unwrap();
    let leader = cluster.leader().expect("a healthy cluster has a leader");

    cluster.kill_member(leader);
    cluster.wait_until_healthy().unwrap();

    let new_leader = cluster
        .leader()
        .expect("the two survivors elected a leader");
    assert_ne!(new_leader, leader);
    let endpoints = cluster.endpoints();
    etcdctl(&endpoints, &["put", "/skiff/new-leader", "elected"]);
    let value = etcdctl(
        &endpoints,
        &["get", "--print-value-only", "/skiff/new-leader"],
    );
    assert_eq!(value, "elected");
}

#[test]
fn dropping_a_member_kills_it_and_removes_its_data_dir() {
    let member = EtcdMember::start().unwrap();
    let pid = member.pid().unwrap();
    let data_dir = member.data_dir().to_path_buf();
    assert!(data_dir.is_dir());
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    drop(member);

    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "etcd (pid {pid}) still runs"
    );
}

#[test]
fn dropping_a_cluster_kills_every_member_and_removes_its_dir() {
    let cluster = EtcdCluster::start(3).unwrap();
    let pids: Vec<u32> = (0..3).map(|i| cluster.pid(i).unwrap()).collect();
    let dir = cluster.dir().to_path_buf();

    drop(cluster);

    assert!(!dir.exists(), "{} still exists", dir.display());
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "etcd (pid {pid}) still runs"
        );
    }
}

#[test]
fn a_member_is_killed_when_the_test_holding_it_panics() {
    let (sender, receiver) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let member = EtcdMember::start().unwrap();
        sender
            .send((member.pid().unwrap(), member.data_dir().to_path_buf()))
            .unwrap();
        panic!("the test failed");
    })
    .join();
    assert!(result.is_err());
    let (pid, data_dir) = receiver.recv().unwrap();
    assert!(!data_dir.exists(), "{} still exists", data_dir.display());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "etcd (pid {pid}) still runs"
    );
}
