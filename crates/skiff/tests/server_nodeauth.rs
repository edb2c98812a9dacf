//! Node credentials end to end with real kubectl 1.33 against `skiff server` (no agent): the
//! join token gets a node client certificate through a CertificateSigningRequest (approved
//! and signed at once) and can do nothing else; with that certificate the node may update its
//! own Node and the pods bound to it and read the Secrets they use, and gets kube-apiserver's
//! Forbidden for another node's objects, for a Secret none of its pods uses and for listing
//! Secrets; the admin still may do everything.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use server_support::{KUBECTL_DIR, Server, ok, run, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const N1: &str = "system:node:n1";

/// How a kubectl authenticates.
enum As<'a> {
    Admin,
    Token(&'a str),
    Certificate { cert: &'a Path, key: &'a Path },
}

fn kubectl(s: &Server, who: &As<'_>, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = match who {
        As::Admin => s.kubectl("1.33"),
        As::Token(_) | As::Certificate { .. } => {
            let mut c = Command::new(format!("{KUBECTL_DIR}/kubectl.1.33"));
            c.env("KUBECONFIG", "/dev/null")
                .env("HOME", s.dir.path())
                .arg(format!("--server=https://127.0.0.1:{}", s.port))
                .arg(format!(
                    "--certificate-authority={}",
                    s.dir.path().join("server/ca.crt").display()
                ));
            c
        }
    };
    match who {
        As::Admin => {}
        As::Token(token) => {
            command.arg(format!("--token={token}"));
        }
        As::Certificate { cert, key } => {
            command
                .arg(format!("--client-certificate={}", cert.display()))
                .arg(format!("--client-key={}", key.display()));
        }
    }
    command.args(args);
    let Some(doc) = stdin else {
        return run(&mut command);
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn succeeded(out: Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the command failed with kube-apiserver's Forbidden saying `what`.
fn assert_forbidden(out: &Output, what: &str) {
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error from server (Forbidden): ") && err.contains(what),
        "expected Forbidden {what}\ngot: {err}"
    );
}

fn create(s: &Server, who: &As<'_>, doc: &Value) -> Output {
    kubectl(
        s,
        who,
        &["create", "-f", "-", "-o", "json"],
        Some(&doc.to_string()),
    )
}

fn pod(name: &str, node: &str, secret: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "s", "secret": {"secretName": secret}}],
        },
    })
}

/// Sends a node CSR with the join token; returns the created object and the key PEM.
fn request_certificate(s: &Server, join: &str, node: &str) -> (Value, String) {
    let (request, key) = skiff_apiserver::certificates::signer::new_request(
        &format!("system:node:{node}"),
        "system:nodes",
    )
    .unwrap();
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": format!("node-csr-{node}")},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
        },
    });
    let created: Value =
        serde_json::from_str(&succeeded(create(s, &As::Token(join), &csr))).unwrap();
    (created, key)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn nodes_bootstrap_with_the_join_token_and_may_touch_only_their_own_objects() {
    let s = Server::start();
    let admin = As::Admin;
    let join = std::fs::read_to_string(s.dir.path().join("server/node-token"))
        .unwrap()
        .trim()
        .to_string();
    let admin_token = std::fs::read_to_string(s.dir.path().join("server/token")).unwrap();
    assert_ne!(
        join,
        admin_token.trim(),
        "the join token must not be the admin token"
    );

    // The join token's CSR is approved and signed at once, and records who asked.
    let (csr, key) = request_certificate(&s, &join, "n1");
    let id = join.split('.').next().unwrap();
    assert_eq!(csr["spec"]["username"], format!("system:bootstrap:{id}"));
    assert!(
        csr["spec"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("system:bootstrappers")),
        "{csr}"
    );
    assert_eq!(csr["status"]["conditions"][0]["type"], "Approved", "{csr}");
    assert_eq!(csr["status"]["conditions"][0]["reason"], "AutoApproved");
    let cert = base64::engine::general_purpose::STANDARD
        .decode(csr["status"]["certificate"].as_str().unwrap())
        .unwrap();
    let cert = String::from_utf8(cert).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    // The join token reads its CSR back, and nothing else.
    let join_as = As::Token(&join);
    let got = succeeded(kubectl(
        &s,
        &join_as,
        &["get", "csr", "node-csr-n1", "-o", "json"],
        None,
    ));
    assert!(got.contains("\"certificate\""));
    let bootstrapper = format!("system:bootstrap:{id}");
    assert_forbidden(
        &kubectl(&s, &join_as, &["get", "pods"], None),
        &format!(
            "pods is forbidden: User \"{bootstrapper}\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
    );
    assert_forbidden(
        &kubectl(&s, &join_as, &["get", "secret", "anything"], None),
        &format!("secrets \"anything\" is forbidden: User \"{bootstrapper}\""),
    );
    assert_forbidden(
        &kubectl(&s, &join_as, &["get", "nodes"], None),
        "nodes is forbidden",
    );
    let creds = tempfile::tempdir().unwrap();
    let cert_path = write(creds.path(), "n1.crt", &cert);
    let key_path = write(creds.path(), "n1.key", &key);
    let n1 = As::Certificate {
        cert: &cert_path,
        key: &key_path,
    };

    // Who the certificate is.
    let whoami = succeeded(kubectl(&s, &n1, &["auth", "whoami", "-o", "json"], None));
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(whoami["status"]["userInfo"]["username"], N1, "{whoami}");
    assert!(
        whoami["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("system:nodes"))
    );

    // Its own Node: create, patch, status; another node's: refused.
    let node = |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    succeeded(create(&s, &n1, &node("n1")));
    assert_forbidden(&create(&s, &n1, &node("n2")), "nodes \"n2\" is forbidden");
    succeeded(create(&s, &admin, &node("n2")));
    succeeded(kubectl(&s, &n1, &["label", "node", "n1", "zone=a"], None));
    succeeded(kubectl(
        &s,
        &n1,
        &[
            "patch",
            "node",
            "n1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"capacity":{"pods":"10"}}}"#,
        ],
        None,
    ));
    assert_forbidden(
        &kubectl(&s, &n1, &["label", "node", "n2", "zone=a"], None),
        &format!(
            "nodes \"n2\" is forbidden: User \"{N1}\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope"
        ),
    );
    succeeded(kubectl(&s, &n1, &["get", "nodes"], None));

    // Pods bound to it and the Secrets they use.
    wait_until("the default service account", WAIT, || {
        run(s.kubectl("1.33").args(["get", "sa", "default"]))
            .status
            .success()
    });
    for secret in ["used", "unused", "elsewhere"] {
        ok(s.kubectl("1.33")
            .args(["create", "secret", "generic", secret, "--from-literal=k=v"]));
    }
    succeeded(create(&s, &admin, &pod("web", "n1", "used")));
    succeeded(create(&s, &admin, &pod("other", "n2", "elsewhere")));
    succeeded(kubectl(&s, &n1, &["get", "pods", "-A"], None));
    let status = r#"{"status":{"message":"from the node"}}"#;
    succeeded(kubectl(
        &s,
        &n1,
        &[
            "patch",
            "pod",
            "web",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
        None,
    ));
    assert_forbidden(
        &kubectl(
            &s,
            &n1,
            &[
                "patch",
                "pod",
                "other",
                "--subresource=status",
                "--type=merge",
                "-p",
                status,
            ],
            None,
        ),
        &format!(
            "pods \"other\" is forbidden: User \"{N1}\" cannot get resource \"pods/status\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object"
        ),
    );
    let secret = succeeded(kubectl(
        &s,
        &n1,
        &["get", "secret", "used", "-o", "json"],
        None,
    ));
    assert!(secret.contains("\"k\""));
    for refused in ["unused", "elsewhere"] {
        assert_forbidden(
            &kubectl(&s, &n1, &["get", "secret", refused], None),
            &format!(
                "secrets \"{refused}\" is forbidden: User \"{N1}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\""
            ),
        );
    }
    assert_forbidden(
        &kubectl(&s, &n1, &["get", "secrets"], None),
        &format!(
            "secrets is forbidden: User \"{N1}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\""
        ),
    );
    assert_forbidden(
        &kubectl(&s, &n1, &["delete", "pod", "other"], None),
        "pods \"other\" is forbidden",
    );
    assert_forbidden(
        &kubectl(&s, &n1, &["get", "deployments"], None),
        "deployments.apps is forbidden",
    );
    assert_forbidden(
        &kubectl(&s, &n1, &["create", "namespace", "mine"], None),
        "namespaces is forbidden",
    );
    // Its own pod it may delete.
    succeeded(kubectl(
        &s,
        &n1,
        &["delete", "pod", "web", "--wait=false"],
        None,
    ));

    // The admin still may do everything.
    succeeded(kubectl(&s, &admin, &["get", "secrets"], None));
    succeeded(kubectl(&s, &admin, &["get", "csr"], None));
    succeeded(kubectl(
        &s,
        &admin,
        &["label", "node", "n2", "zone=b"],
        None,
    ));
    succeeded(kubectl(
        &s,
        &admin,
        &["delete", "pod", "other", "--wait=false"],
        None,
    ));
}
