//! `skiff server --store etcd` against a real etcd member: kubectl works the same, the keys
//! land under the cluster's prefix, and a restarted server finds its objects again.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

mod server_support;

use std::process::Command;

use server_support::{Server, ok};
use skiff_testkit::etcd::EtcdMember;

#[test]
fn kubectl_works_on_the_etcd_store_and_survives_a_restart() {
    let etcd = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let args = [
        "--store",
        "etcd",
        "--etcd-endpoints",
        endpoint.as_str(),
        "--disable-scheduler",
        "--disable-controllers",
    ];
    let server = Server::start_in(tempfile::tempdir().unwrap(), &args);
    ok(server
        .kubectl("1.33")
        .args(["create", "configmap", "kept", "--from-literal=a=1"]));
    assert_eq!(
        ok(server
            .kubectl("1.33")
            .args(["get", "configmap", "kept", "-o", "jsonpath={.data.a}"])),
        "1"
    );

    // The objects are in etcd under the default prefix.
    let keys = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &endpoint,
            "get",
            "--prefix",
            "--keys-only",
            "/skiff/registry/configmaps/default/",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&keys.stdout).contains("/skiff/registry/configmaps/default/kept")
    );

    let dir = server.kill();
    let server = Server::start_in(dir, &args);
    assert_eq!(
        ok(server
            .kubectl("1.27")
            .args(["get", "configmap", "kept", "-o", "jsonpath={.data.a}"])),
        "1"
    );
}
