//! Node credentials end to end with real kubectl 1.33 against `skiff server` (no agent): the
//! join token gets a node client certificate through a CertificateSigningRequest (approved
//! and signed at once) and can do nothing else; with that certificate the node may update its
//! own Node and the pods bound to it and read the Secrets they use, and gets kube-apiserver's
//! Forbidden for another node's objects, for a Secret none of its pods uses and for listing
//! Secrets; the admin still may do everything. NodeRestriction keeps a node from relabelling
//! itself outside the kubelet's labels (never `node-restriction.kubernetes.io/`) and from
//! touching its taints; the Node authorizer's graph gives a node a Secret while a pod bound to
//! it names it (and takes it back when the pod goes), and every node the TLS Secrets Ingresses
//! name, no other.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use server_support::{KUBECTL_DIR, Server, ok, run, run_with_stdin, wait_until};

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
    run_with_stdin(&mut command, doc)
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
    // Service account tokens: only bound to a pod it runs (NodeRestriction).
    let token = |args: &[&str]| {
        let mut all = vec!["create", "token", "default"];
        all.extend_from_slice(args);
        kubectl(&s, &n1, &all, None)
    };
    // kubectl prints the Status message after its own prefix.
    let refused = |out: Output, what: &str| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success() && err.contains(what),
            "expected {what}\ngot: {err}"
        );
    };
    succeeded(token(&[
        "--bound-object-kind=Pod",
        "--bound-object-name=web",
    ]));
    refused(
        token(&[]),
        "failed to create token: serviceaccounts \"default\" is forbidden: node requested token not bound to a pod",
    );
    refused(
        token(&["--bound-object-kind=Pod", "--bound-object-name=other"]),
        "serviceaccounts \"default\" is forbidden: node requested token bound to a pod scheduled on a different node",
    );
    succeeded(kubectl(&s, &admin, &["create", "token", "default"], None));
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

/// A node client certificate for `node` got with the join token: (certificate, key) files.
fn node_credentials(s: &Server, dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    let join = std::fs::read_to_string(s.dir.path().join("server/node-token")).unwrap();
    let (csr, key) = request_certificate(s, join.trim(), node);
    let cert = base64::engine::general_purpose::STANDARD
        .decode(csr["status"]["certificate"].as_str().unwrap())
        .unwrap();
    let cert = write(
        dir,
        &format!("{node}.crt"),
        &String::from_utf8(cert).unwrap(),
    );
    (cert, write(dir, &format!("{node}.key"), &key))
}

#[test]
fn a_node_may_not_relabel_or_untaint_itself_beyond_the_kubelets_labels() {
    let s = Server::start();
    let creds = tempfile::tempdir().unwrap();
    let (cert, key) = node_credentials(&s, creds.path(), "n1");
    let n1 = As::Certificate {
        cert: &cert,
        key: &key,
    };
    let labelled = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}},
    });
    assert_forbidden(
        &create(&s, &n1, &labelled),
        "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: node-role.kubernetes.io/control-plane",
    );
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux"}},
    });
    succeeded(create(&s, &n1, &node));

    assert_forbidden(
        &kubectl(
            &s,
            &n1,
            &[
                "label",
                "node",
                "n1",
                "node-restriction.kubernetes.io/foo=bar",
            ],
            None,
        ),
        "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/foo",
    );
    assert_forbidden(
        &kubectl(
            &s,
            &n1,
            &["label", "node", "n1", "kubernetes.io/role=master"],
            None,
        ),
        "is not allowed to modify labels: kubernetes.io/role",
    );
    // The kubelet's own labels, and labels outside the Kubernetes namespaces, it may set.
    succeeded(kubectl(
        &s,
        &n1,
        &[
            "label",
            "node",
            "n1",
            "node.kubernetes.io/instance-type=big",
            "topology.kubernetes.io/zone=z1",
            "example.com/rack=r1",
        ],
        None,
    ));
    // A label the admin set under node-restriction.kubernetes.io/ it may not remove either.
    succeeded(kubectl(
        &s,
        &As::Admin,
        &[
            "label",
            "node",
            "n1",
            "node-restriction.kubernetes.io/pool=gold",
        ],
        None,
    ));
    assert_forbidden(
        &kubectl(
            &s,
            &n1,
            &[
                "label",
                "node",
                "n1",
                "node-restriction.kubernetes.io/pool-",
            ],
            None,
        ),
        "is not allowed to modify labels: node-restriction.kubernetes.io/pool",
    );

    // Taints: the admin's stay, the node can neither add nor remove any.
    succeeded(kubectl(
        &s,
        &As::Admin,
        &["taint", "node", "n1", "dedicated=db:NoSchedule"],
        None,
    ));
    for change in ["dedicated=db:NoSchedule-", "mine=yes:NoSchedule"] {
        assert_forbidden(
            &kubectl(&s, &n1, &["taint", "node", "n1", change], None),
            "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints",
        );
    }
    let stored: Value = serde_json::from_str(&succeeded(kubectl(
        &s,
        &As::Admin,
        &["get", "node", "n1", "-o", "json"],
        None,
    )))
    .unwrap();
    assert_eq!(stored["spec"]["taints"][0]["key"], "dedicated", "{stored}");
    assert_eq!(
        stored["metadata"]["labels"]["node-restriction.kubernetes.io/pool"],
        "gold"
    );
    assert_eq!(stored["metadata"]["labels"]["example.com/rack"], "r1");
    // Its status it still updates.
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
}

fn tls_secret(name: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"tls.crt": b64("not really a certificate"), "tls.key": b64("nor a key")},
    })
}

fn readable(s: &Server, who: &As<'_>, secret: &str) -> bool {
    kubectl(s, who, &["get", "secret", secret, "-o", "name"], None)
        .status
        .success()
}

#[test]
fn a_node_reads_a_secret_only_while_a_pod_bound_to_it_or_an_ingress_names_it() {
    let s = Server::start();
    let creds = tempfile::tempdir().unwrap();
    let (cert, key) = node_credentials(&s, creds.path(), "n1");
    let n1 = As::Certificate {
        cert: &cert,
        key: &key,
    };
    let admin = As::Admin;
    wait_until("the default service account", WAIT, || {
        run(s.kubectl("1.33").args(["get", "sa", "default"]))
            .status
            .success()
    });
    ok(s.kubectl("1.33").args([
        "create",
        "secret",
        "generic",
        "db-pass",
        "--from-literal=k=v",
    ]));
    assert_forbidden(
        &kubectl(&s, &n1, &["get", "secret", "db-pass"], None),
        "secrets \"db-pass\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\": no relationship found between node 'n1' and this object",
    );

    // A pod bound to another node lends n1 nothing; one bound to n1 does, by name only.
    succeeded(create(&s, &admin, &pod("elsewhere", "n2", "db-pass")));
    assert!(!readable(&s, &n1, "db-pass"));
    succeeded(create(&s, &admin, &pod("web", "n1", "db-pass")));
    wait_until("n1 to read the secret its pod uses", WAIT, || {
        readable(&s, &n1, "db-pass")
    });
    let by_name = succeeded(kubectl(
        &s,
        &n1,
        &[
            "get",
            "secrets",
            "--field-selector=metadata.name=db-pass",
            "-o",
            "name",
        ],
        None,
    ));
    assert_eq!(by_name.trim(), "secret/db-pass");
    assert_forbidden(
        &kubectl(&s, &n1, &["get", "secrets"], None),
        "secrets is forbidden: User \"system:node:n1\" cannot list resource \"secrets\"",
    );

    // The pod goes: so does the access.
    succeeded(kubectl(
        &s,
        &admin,
        &["delete", "pod", "web", "--grace-period=0", "--force"],
        None,
    ));
    wait_until("n1 to lose the secret of its deleted pod", WAIT, || {
        !readable(&s, &n1, "db-pass")
    });

    // Skiff's ingress rule: a TLS Secret an Ingress names is readable by every node; another
    // TLS Secret is not, and TLS Secrets are no longer listed wholesale.
    succeeded(create(&s, &admin, &tls_secret("site-tls")));
    succeeded(create(&s, &admin, &tls_secret("loose-tls")));
    assert!(!readable(&s, &n1, "site-tls"));
    let ingress = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "site", "namespace": "default"},
        "spec": {
            "tls": [{"hosts": ["site.example"], "secretName": "site-tls"}],
            "rules": [{"host": "site.example", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "web", "port": {"number": 80}}},
            }]}}],
        },
    });
    succeeded(create(&s, &admin, &ingress));
    wait_until("n1 to read the ingress's TLS secret", WAIT, || {
        readable(&s, &n1, "site-tls")
    });
    assert!(!readable(&s, &n1, "loose-tls"));
    assert_forbidden(
        &kubectl(
            &s,
            &n1,
            &[
                "get",
                "secrets",
                "-A",
                "--field-selector=type=kubernetes.io/tls",
            ],
            None,
        ),
        "secrets is forbidden: User \"system:node:n1\" cannot list resource \"secrets\"",
    );
    succeeded(kubectl(&s, &admin, &["delete", "ingress", "site"], None));
    wait_until("n1 to lose the TLS secret no ingress names", WAIT, || {
        !readable(&s, &n1, "site-tls")
    });
}
