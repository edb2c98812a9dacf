//! CertificateSigningRequests for users end to end with real kubectl (1.27 and 1.33) against
//! `skiff server` (no agent): a request for user `jane` is pending until `kubectl certificate
//! approve`, then signed by the cluster CA so that its certificate authenticates as jane; a
//! denied request gets no certificate and cannot be approved afterwards; a request for a
//! signer the server does not run stays approved but unsigned; and approving needs the
//! signer's `approve` permission besides the `approval` subresource (kube-apiserver's
//! Forbidden otherwise). Certificates last `expirationSeconds`, capped by
//! `--cluster-signing-duration`; `system:masters` subjects and the legacy signer are refused at
//! create; writing a certificate through `status` needs `sign` on the signer.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use server_support::{KUBECTL_DIR, Server, ok, run, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// kubectl 1.33 authenticating with a client certificate.
fn kubectl_as(s: &Server, cert: &Path, key: &Path) -> Command {
    let mut c = Command::new(format!("{KUBECTL_DIR}/kubectl.1.33"));
    c.env("KUBECONFIG", "/dev/null")
        .env("HOME", s.dir.path())
        .arg(format!("--server=https://127.0.0.1:{}", s.port))
        .arg(format!(
            "--certificate-authority={}",
            s.dir.path().join("server/ca.crt").display()
        ))
        .arg(format!("--client-certificate={}", cert.display()))
        .arg(format!("--client-key={}", key.display()));
    c
}

/// Creates (as the admin) a request named `name` for `user` in `group`; returns its key PEM.
fn request(s: &Server, dir: &Path, name: &str, user: &str, group: &str, signer: &str) -> String {
    let (request, key) = skiff_apiserver::certificates::signer::new_request(user, group).unwrap();
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": signer,
            "expirationSeconds": 86400,
            "usages": ["digital signature", "client auth"],
        },
    });
    let file = write(dir, &format!("{name}.json"), &csr.to_string());
    ok(s.kubectl("1.33").args(["create", "-f"]).arg(&file));
    key
}

fn csr(s: &Server, name: &str) -> Value {
    serde_json::from_str(&ok(s
        .kubectl("1.33")
        .args(["get", "csr", name, "-o", "json"])))
    .unwrap()
}

/// The CONDITION column of `kubectl get csr NAME` (and checks the other columns).
fn condition_column(s: &Server, name: &str, signer: &str) -> String {
    let out = ok(s.kubectl("1.33").args(["get", "csr", name]));
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AGE",
            "SIGNERNAME",
            "REQUESTOR",
            "REQUESTEDDURATION",
            "CONDITION"
        ],
        "{out}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[0], name, "{out}");
    assert_eq!(row[2], signer, "{out}");
    assert_eq!(row[4], "24h", "{out}");
    row[5].to_string()
}

/// Gives user jane a ClusterRole named `name` with `rules`.
fn grant(s: &Server, dir: &Path, name: &str, rules: Value) {
    let docs = json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": {"name": name},
                "rules": rules,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jane"}],
            },
        ],
    });
    let file = write(dir, &format!("{name}.json"), &docs.to_string());
    ok(s.kubectl("1.33").args(["create", "-f"]).arg(&file));
}

fn certificate(csr: &Value) -> Option<String> {
    let encoded = csr["status"]["certificate"].as_str()?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(String::from_utf8(der).unwrap())
}

fn failed(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(what),
        "expected a failure saying {what:?}, got {out:?}"
    );
}

#[test]
fn an_approved_user_request_is_signed_and_authenticates_as_that_user() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();

    let key = request(&s, work.path(), "jane", "jane", "dev-team", CLIENT_SIGNER);
    assert_eq!(condition_column(&s, "jane", CLIENT_SIGNER), "Pending");
    assert!(certificate(&csr(&s, "jane")).is_none());

    // kubectl 1.27 approves through the approval subresource; the request is signed at once.
    ok(s.kubectl("1.27").args(["certificate", "approve", "jane"]));
    let approved = csr(&s, "jane");
    assert_eq!(
        approved["status"]["conditions"][0]["type"], "Approved",
        "{approved}"
    );
    let cert = certificate(&approved).expect("the approved request is signed");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert_eq!(
        condition_column(&s, "jane", CLIENT_SIGNER),
        "Approved,Issued"
    );
    // Approving again changes nothing.
    ok(s.kubectl("1.33").args(["certificate", "approve", "jane"]));

    let cert_path = write(work.path(), "jane.crt", &cert);
    let key_path = write(work.path(), "jane.key", &key);
    let whoami = ok(kubectl_as(&s, &cert_path, &key_path).args(["auth", "whoami", "-o", "json"]));
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(whoami["status"]["userInfo"]["username"], "jane", "{whoami}");
    assert!(
        whoami["status"]["userInfo"]["groups"]
            .as_array()
            .unwrap()
            .contains(&json!("dev-team")),
        "{whoami}"
    );

    // Less than ten minutes is refused.
    let (short, _) = skiff_apiserver::certificates::signer::new_request("jane", "dev").unwrap();
    let short = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "short"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(short),
            "signerName": CLIENT_SIGNER,
            "expirationSeconds": 60,
            "usages": ["client auth"],
        },
    });
    let file = write(work.path(), "short.json", &short.to_string());
    failed(
        &run(s.kubectl("1.33").args(["create", "-f"]).arg(&file)),
        "may not specify a duration less than 600 seconds",
    );

    // A request for a signer the server does not run is approved but never signed.
    request(
        &s,
        work.path(),
        "custom",
        "jane",
        "dev-team",
        "example.com/custom",
    );
    ok(s.kubectl("1.33").args(["certificate", "approve", "custom"]));
    assert_eq!(
        condition_column(&s, "custom", "example.com/custom"),
        "Approved"
    );
}

#[test]
fn a_denied_request_is_never_signed_and_approving_needs_the_signers_permission() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();

    request(
        &s,
        work.path(),
        "mallory",
        "mallory",
        "dev-team",
        CLIENT_SIGNER,
    );
    ok(s.kubectl("1.33").args(["certificate", "deny", "mallory"]));
    assert_eq!(condition_column(&s, "mallory", CLIENT_SIGNER), "Denied");
    for version in ["1.27", "1.33"] {
        failed(
            &run(s
                .kubectl(version)
                .args(["certificate", "approve", "mallory"])),
            "is already Denied",
        );
    }
    // kubectl refuses by itself; the server refuses too, and a decision cannot be removed.
    let mut both = csr(&s, "mallory");
    let mut conditions = both["status"]["conditions"].as_array().unwrap().clone();
    conditions.push(json!({"type": "Approved", "status": "True", "reason": "Sneaky"}));
    both["status"]["conditions"] = json!(conditions);
    let mut swapped = both.clone();
    swapped["status"]["conditions"] = json!([conditions[1].clone()]);
    for (doc, what) in [
        (
            both,
            "Approved and Denied conditions are mutually exclusive",
        ),
        (
            swapped,
            "updates may not remove a condition of type \"Denied\"",
        ),
    ] {
        let file = write(work.path(), "mallory-approval.json", &doc.to_string());
        failed(
            &run(s
                .kubectl("1.33")
                .args([
                    "replace",
                    "--raw",
                    "/apis/certificates.k8s.io/v1/certificatesigningrequests/mallory/approval",
                    "-f",
                ])
                .arg(&file)),
            what,
        );
    }
    let denied = csr(&s, "mallory");
    assert!(certificate(&denied).is_none(), "{denied}");
    assert_eq!(condition_column(&s, "mallory", CLIENT_SIGNER), "Denied");

    // Jane may update the approval subresource but not approve for the signer.
    let key = request(&s, work.path(), "jane", "jane", "dev-team", CLIENT_SIGNER);
    ok(s.kubectl("1.33").args(["certificate", "approve", "jane"]));
    let cert = certificate(&csr(&s, "jane")).unwrap();
    let cert_path = write(work.path(), "jane.crt", &cert);
    let key_path = write(work.path(), "jane.key", &key);
    grant(
        &s,
        work.path(),
        "csr-approver",
        json!([{
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["certificatesigningrequests", "certificatesigningrequests/approval"],
            "verbs": ["get", "list", "update"],
        }]),
    );
    request(&s, work.path(), "other", "other", "dev-team", CLIENT_SIGNER);
    let refused = format!(
        "Error from server (Forbidden): certificatesigningrequests.certificates.k8s.io \"other\" is forbidden: user not permitted to approve requests with signerName \"{CLIENT_SIGNER}\""
    );
    wait_until("jane's role to take effect", WAIT, || {
        let out =
            run(kubectl_as(&s, &cert_path, &key_path).args(["certificate", "approve", "other"]));
        String::from_utf8_lossy(&out.stderr).contains(&refused)
    });
    failed(
        &run(kubectl_as(&s, &cert_path, &key_path).args(["certificate", "approve", "other"])),
        &refused,
    );
    assert_eq!(condition_column(&s, "other", CLIENT_SIGNER), "Pending");

    // With `approve` on the signers of the domain she may.
    grant(
        &s,
        work.path(),
        "signer-approver",
        json!([{
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["signers"],
            "resourceNames": ["kubernetes.io/*"],
            "verbs": ["approve"],
        }]),
    );
    wait_until("jane's signer permission to take effect", WAIT, || {
        run(kubectl_as(&s, &cert_path, &key_path).args(["certificate", "approve", "other"]))
            .status
            .success()
    });
    assert_eq!(
        condition_column(&s, "other", CLIENT_SIGNER),
        "Approved,Issued"
    );
}

/// Seconds from now until the certificate's notAfter.
fn lifetime(cert: &str) -> u64 {
    skiff_apiserver::certificates::signer::not_after(cert)
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs()
}

/// Creates (as the admin) a request like [`request`] but asking for `seconds`.
fn request_for(s: &Server, dir: &Path, name: &str, user: &str, seconds: u64) -> String {
    let (request, key) = skiff_apiserver::certificates::signer::new_request(user, "dev").unwrap();
    let csr = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request),
            "signerName": CLIENT_SIGNER,
            "expirationSeconds": seconds,
            "usages": ["client auth"],
        },
    });
    let file = write(dir, &format!("{name}.json"), &csr.to_string());
    ok(s.kubectl("1.33").args(["create", "-f"]).arg(&file));
    key
}

#[test]
fn certificates_last_as_asked_within_the_signing_duration_and_signing_needs_sign() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir, &["--cluster-signing-duration=48h"]);
    let work = tempfile::tempdir().unwrap();

    // alice asks for an hour and gets an hour; bob asks for a week and gets the 48h cap.
    let key = request_for(&s, work.path(), "alice", "alice", 3600);
    request_for(&s, work.path(), "bob", "bob", 7 * 86_400);
    ok(s.kubectl("1.33")
        .args(["certificate", "approve", "alice", "bob"]));
    let alice = certificate(&csr(&s, "alice")).expect("alice's request is signed");
    let left = lifetime(&alice);
    assert!(
        (3300..=3600).contains(&left),
        "alice's certificate lasts {left}s"
    );
    let bob = certificate(&csr(&s, "bob")).expect("bob's request is signed");
    let left = lifetime(&bob);
    assert!(
        (48 * 3600 - 300..=48 * 3600).contains(&left),
        "bob's certificate lasts {left}s"
    );
    let cert_path = write(work.path(), "alice.crt", &alice);
    let key_path = write(work.path(), "alice.key", &key);
    let whoami = ok(kubectl_as(&s, &cert_path, &key_path).args(["auth", "whoami", "-o", "json"]));
    let whoami: Value = serde_json::from_str(&whoami).unwrap();
    assert_eq!(
        whoami["status"]["userInfo"]["username"], "alice",
        "{whoami}"
    );

    // kube-apiserver's CertificateSubjectRestriction and the v1 API's legacy signer rule.
    let (masters, _) =
        skiff_apiserver::certificates::signer::new_request("eve", "system:masters").unwrap();
    let mut doc = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": "eve"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(masters),
            "signerName": CLIENT_SIGNER,
            "usages": ["client auth"],
        },
    });
    let file = write(work.path(), "eve.json", &doc.to_string());
    failed(
        &run(s.kubectl("1.33").args(["create", "-f"]).arg(&file)),
        "certificatesigningrequests.certificates.k8s.io \"eve\" is forbidden: use of kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed",
    );
    doc["spec"]["signerName"] = json!("kubernetes.io/legacy-unknown");
    let file = write(work.path(), "eve.json", &doc.to_string());
    failed(
        &run(s.kubectl("1.33").args(["create", "-f"]).arg(&file)),
        "spec.signerName: Invalid value: \"kubernetes.io/legacy-unknown\": the legacy signerName is not allowed via this API version",
    );

    // An external signer's controller (here: jane) writes the certificate through `status`;
    // that needs `sign` on the signer besides the `status` subresource.
    let key = request(&s, work.path(), "jane", "jane", "dev-team", CLIENT_SIGNER);
    ok(s.kubectl("1.33").args(["certificate", "approve", "jane"]));
    let jane_cert = write(
        work.path(),
        "jane.crt",
        &certificate(&csr(&s, "jane")).unwrap(),
    );
    let jane_key = write(work.path(), "jane.key", &key);
    grant(
        &s,
        work.path(),
        "csr-status",
        json!([{
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["certificatesigningrequests", "certificatesigningrequests/status"],
            "verbs": ["get", "list", "update"],
        }]),
    );
    request(
        &s,
        work.path(),
        "ext",
        "ext",
        "dev-team",
        "example.com/external",
    );
    ok(s.kubectl("1.33").args(["certificate", "approve", "ext"]));
    let mut signed = csr(&s, "ext");
    signed["status"]["certificate"] =
        json!(base64::engine::general_purpose::STANDARD.encode(&alice));
    let file = write(work.path(), "ext-status.json", &signed.to_string());
    let put_status = || {
        run(kubectl_as(&s, &jane_cert, &jane_key)
            .args([
                "replace",
                "--raw",
                "/apis/certificates.k8s.io/v1/certificatesigningrequests/ext/status",
                "-f",
            ])
            .arg(&file))
    };
    let refused = "certificatesigningrequests.certificates.k8s.io \"ext\" is forbidden: user not permitted to sign requests with signerName \"example.com/external\"";
    wait_until("jane's status permission to take effect", WAIT, || {
        String::from_utf8_lossy(&put_status().stderr).contains(refused)
    });
    assert!(certificate(&csr(&s, "ext")).is_none());
    grant(
        &s,
        work.path(),
        "external-signer",
        json!([{
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["signers"],
            "resourceNames": ["example.com/*"],
            "verbs": ["sign"],
        }]),
    );
    wait_until("jane's sign permission to take effect", WAIT, || {
        put_status().status.success()
    });
    assert_eq!(certificate(&csr(&s, "ext")).unwrap(), alice);
}
