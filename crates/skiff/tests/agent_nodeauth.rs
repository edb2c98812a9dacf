//! Who may use a node agent's API (its port 10250), end to end against `skiff server` and its
//! embedded agent with real kubectl 1.33 and curl: `kubectl logs` and `kubectl exec` work
//! through the API server (its `kube-apiserver-kubelet-client` certificate, in
//! `system:masters`); a direct request with no credentials or an unknown token gets 401; the
//! join token (which authenticates as `system:bootstrap:ID`), the node's own certificate and
//! another node's get the kubelet's 403; a certificate another CA signed is refused in the
//! handshake; the admin token (a TokenReview accepts it, in `system:masters`) and the server's
//! certificate may read logs. TokenReview itself answers as kube-apiserver's does.
#![allow(clippy::unwrap_used)]

mod agent_support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent_support::{Cluster, run};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

/// How a direct request to the node API authenticates.
enum Credential<'a> {
    None,
    Token(&'a str),
    Certificate { cert: &'a Path, key: &'a Path },
}

/// `curl` of `path` on the node API at `port` with `credential`: (HTTP status, body); status
/// 0 when no HTTP answer came (a refused handshake).
fn node_api(port: &str, path: &str, credential: &Credential<'_>) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"]);
    match credential {
        Credential::None => {}
        Credential::Token(token) => {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        Credential::Certificate { cert, key } => {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
    }
    command.arg(format!("https://127.0.0.1:{port}{path}"));
    let out = run(&mut command);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Writes a client certificate for `user` in `group` signed by the CA in `ca_dir`; returns
/// the certificate and key paths under `out`.
fn client_certificate(
    ca_dir: &Path,
    user: &str,
    group: &str,
    out: &Path,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca = std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap();
    let ca_key = std::fs::read_to_string(ca_dir.join("ca.key")).unwrap();
    let signer = skiff_apiserver::certificates::ClientSigner::new(&ca, &ca_key).unwrap();
    let (cert, key) = signer
        .issue(user, &[group], Duration::from_secs(3600))
        .unwrap();
    let name = user.replace(':', "_");
    let cert_path = out.join(format!("{name}.crt"));
    let key_path = out.join(format!("{name}.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    (cert_path, key_path)
}

/// A TokenReview of `token` created by the admin: its status.
fn token_review(c: &Cluster, token: &str) -> Value {
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("review.json");
    std::fs::write(&file, review.to_string()).unwrap();
    let out = c.k(&["create", "-o", "json", "-f", file.to_str().unwrap()]);
    serde_json::from_str::<Value>(&out).unwrap()["status"].clone()
}

#[test]
fn node_api_authenticates_and_authorizes_like_the_kubelet() {
    let c = Cluster::start();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: talker
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {}
    command: ["sh", "-c", "echo hello-nodeauth; sleep 3600"]
"#,
        c.image
    ));
    c.wait("the pod to run", LONG, || {
        c.field(&["get", "pod", "talker"], "{.status.phase}") == "Running"
    });

    // Through the API server: its kubelet client certificate is allowed.
    c.wait("the pod's log through the API server", LONG, || {
        run(c.kubectl().args(["logs", "talker"]))
            .stdout
            .starts_with(b"hello-nodeauth")
    });
    let exec = c.k(&["exec", "talker", "--", "echo", "exec-ok"]);
    assert_eq!(exec.trim(), "exec-ok");

    let port = c.field(
        &["get", "node", "node-1"],
        "{.status.daemonEndpoints.kubeletEndpoint.Port}",
    );
    assert!(!port.is_empty(), "node-1 publishes no agent port");
    let logs = "/containerLogs/default/talker/c";
    let server_dir = c.path().join("server");
    let join = std::fs::read_to_string(server_dir.join("node-token")).unwrap();
    let join = join.trim();
    let admin = std::fs::read_to_string(server_dir.join("token")).unwrap();
    let admin = admin.trim();

    // TokenReview: the join token is its bootstrap identity, a made-up token nobody.
    let status = token_review(&c, join);
    assert_eq!(status["authenticated"], true, "{status}");
    let bootstrap_user = status["user"]["username"].as_str().unwrap().to_string();
    assert!(bootstrap_user.starts_with("system:bootstrap:"), "{status}");
    let status = token_review(&c, "not-a-token");
    assert_eq!(status["authenticated"], false, "{status}");
    let status = token_review(&c, admin);
    assert!(
        status["user"]["groups"]
            .as_array()
            .unwrap()
            .contains(&"system:masters".into()),
        "{status}"
    );

    // No credentials, or a token the API server does not know: 401.
    let (code, body) = node_api(&port, logs, &Credential::None);
    assert_eq!((code, body.as_str()), (401, "Unauthorized"));
    let (code, _) = node_api(&port, logs, &Credential::Token("not-a-token"));
    assert_eq!(code, 401);
    // The open health check stays open.
    assert_eq!(node_api(&port, "/healthz", &Credential::None).0, 200);

    // The join token every node holds may not read logs, nor exec (the kubelet's 403).
    let (code, body) = node_api(&port, logs, &Credential::Token(join));
    assert_eq!(code, 403, "{body}");
    assert_eq!(
        body,
        format!("Forbidden (user={bootstrap_user}, verb=get, resource=nodes, subresource=proxy)")
    );
    let exec_path = "/exec/default/talker/c?command=id&stdout=1";
    let (code, _) = node_api(&port, exec_path, &Credential::Token(join));
    assert_eq!(code, 403);

    // Node identities signed by the cluster CA: another node's, and this node's own.
    let work = tempfile::tempdir().unwrap();
    for node in ["system:node:node-2", "system:node:node-1"] {
        let (cert, key) = client_certificate(&server_dir, node, "system:nodes", work.path());
        let who = Credential::Certificate {
            cert: &cert,
            key: &key,
        };
        let (code, body) = node_api(&port, logs, &who);
        assert_eq!(code, 403, "{node}: {body}");
        assert!(body.contains(&format!("user={node},")), "{body}");
        assert_eq!(node_api(&port, exec_path, &who).0, 403, "{node}");
    }

    // A certificate claiming system:masters from another CA: no HTTP answer at all.
    let elsewhere = tempfile::tempdir().unwrap();
    skiff_apiserver::pki::ServerPki::load_or_create(elsewhere.path(), &["localhost".into()])
        .unwrap();
    let (cert, key) = client_certificate(elsewhere.path(), "forged", "system:masters", work.path());
    let (code, body) = node_api(
        &port,
        logs,
        &Credential::Certificate {
            cert: &cert,
            key: &key,
        },
    );
    assert_eq!(code, 0, "a foreign certificate got an answer: {body}");

    // The admin token (TokenReview: system:masters) and the server's own certificate read
    // the log.
    let (code, body) = node_api(&port, logs, &Credential::Token(admin));
    assert_eq!((code, body.as_str()), (200, "hello-nodeauth\n"));
    let (code, body) = node_api(
        &port,
        logs,
        &Credential::Certificate {
            cert: &server_dir.join("kubelet-client.crt"),
            key: &server_dir.join("kubelet-client.key"),
        },
    );
    assert_eq!((code, body.as_str()), (200, "hello-nodeauth\n"));
}
