//! Two `skiff server`s on one etcd are one cluster: the second adopts the first's CA,
//! service account signing key, admin token and node join token through the store (even
//! when it had run on its own before, with a CA of its own), so kubectl's admin kubeconfig
//! of one works against the other with TLS verified, and a service account token issued by
//! one is accepted by the other.

#![allow(clippy::unwrap_used)] // test code: a panic is how a test reports failure

mod server_support;

use std::time::Duration;

use server_support::{Server, ok, run, wait_until};
use skiff_testkit::etcd::EtcdMember;

/// The shared files of a server's data dir.
const SHARED: [&str; 5] = ["ca.crt", "ca.key", "sa.key", "token", "node-token"];

fn file(server: &Server, name: &str) -> String {
    std::fs::read_to_string(server.dir.path().join("server").join(name)).unwrap()
}

/// A token of the `default` service account of `default`, issued by `server` (once the
/// service account controller has made the account).
fn sa_token(server: &Server) -> String {
    wait_until(
        "the default service account",
        Duration::from_secs(30),
        || {
            run(server
                .kubectl("1.33")
                .args(["get", "serviceaccount", "default", "-n", "default"]))
            .status
            .success()
        },
    );
    ok(server
        .kubectl("1.33")
        .args(["create", "token", "default", "-n", "default"]))
    .trim()
    .to_string()
}

/// kubectl 1.33 with `from`'s admin kubeconfig, sent to `to`.
fn kubectl_at(from: &Server, to: &Server) -> std::process::Command {
    let mut command = from.kubectl("1.33");
    command.args(["--server", &format!("https://127.0.0.1:{}", to.port)]);
    command
}

#[test]
fn servers_on_one_store_share_the_ca_signing_key_and_tokens() {
    let etcd = EtcdMember::start().unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let args = ["--store", "etcd", "--etcd-endpoints", endpoint.as_str()];

    // b has run on its own before: a CA, key and tokens of its own.
    let alone = Server::start();
    let own_ca = file(&alone, "ca.crt");
    let b_dir = alone.kill();

    let a = Server::start_in(tempfile::tempdir().unwrap(), &args);
    let b = Server::start_in(b_dir, &args);
    for name in SHARED {
        assert_eq!(file(&a, name), file(&b, name), "{name} differs");
    }
    assert_ne!(file(&b, "ca.crt"), own_ca, "b adopted the cluster's CA");
    assert!(
        b.log()
            .contains("replacing this server's copy with the cluster's"),
        "{}",
        b.log()
    );

    // a's kubeconfig (a's CA, a's admin token) against b: b's serving certificate was issued
    // again by the cluster CA.
    let names = ok(kubectl_at(&a, &b).args(["get", "namespaces", "-o", "name"]));
    assert!(names.contains("namespace/kube-system"), "{names}");

    // A service account token issued by a is accepted by b.
    let token = sa_token(&a);
    let whoami = ok(kubectl_at(&a, &b).args([
        "--token",
        &token,
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]));
    assert_eq!(whoami, "system:serviceaccount:default:default");

    // A token from a server with another key is refused (the check above can fail).
    let stranger = Server::start();
    let foreign = sa_token(&stranger);
    let refused = run(kubectl_at(&a, &b).args(["--token", &foreign, "auth", "whoami"]));
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // A restart adopts the same material again and changes nothing.
    let ca = file(&b, "ca.crt");
    let b = Server::start_in(b.kill(), &args);
    assert_eq!(file(&b, "ca.crt"), ca);
    assert!(
        !b.log().contains("replacing this server's copy"),
        "{}",
        b.log()
    );
    ok(kubectl_at(&a, &b).args(["get", "namespaces"]));
}
