//! Service accounts end to end with real kubectl 1.33 against `skiff server` (no agent):
//! `kubectl create token` (TokenRequest), those tokens as kubectl's credential, expired,
//! forged and pod-bound tokens refused, the ServiceAccount admission of pods (defaulted
//! account, the `kube-api-access-*` projected volume, `automountServiceAccountToken: false`,
//! a missing account refused), the `kube-root-ca.crt` ConfigMaps and the OpenID documents.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use server_support::{KUBECTL_DIR, Server, ok, run, wait_until};
use skiff_apiserver::serviceaccount::{Claims, KubernetesClaim, ObjectRef, TokenSigner};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(30);

fn k(s: &Server, args: &[&str]) -> String {
    ok(s.kubectl("1.33").args(args))
}

/// kubectl with only a server, the CA and `token`: no kubeconfig credentials at all.
fn with_token(s: &Server, token: &str, args: &[&str]) -> Output {
    let ca = s.dir.path().join("server/ca.crt");
    run(Command::new(format!("{KUBECTL_DIR}/kubectl.1.33"))
        .env("KUBECONFIG", "/dev/null")
        .env("HOME", s.dir.path())
        .arg(format!("--server=https://127.0.0.1:{}", s.port))
        .arg(format!("--certificate-authority={}", ca.display()))
        .arg(format!("--token={token}"))
        .args(args))
}

fn apply(s: &Server, yaml: &str) -> Output {
    use std::io::Write;
    let mut child = s
        .kubectl("1.33")
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn json(s: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&k(s, &all)).unwrap()
}

fn wait_default_sa(s: &Server, ns: &str) {
    wait_until("the default service account", WAIT, || {
        run(s.kubectl("1.33").args(["get", "sa", "default", "-n", ns]))
            .status
            .success()
    });
}

/// Lets `default/default` read (RBAC refuses a ServiceAccount everything not granted).
fn grant_view(s: &Server) {
    k(
        s,
        &[
            "create",
            "clusterrolebinding",
            "default-sa-view",
            "--clusterrole=view",
            "--serviceaccount=default:default",
        ],
    );
}

fn claims_for(s: &Server, exp: i64) -> Claims {
    let sa = json(s, &["get", "sa", "default"]);
    let now = skiff_apiserver::serviceaccount::token::unix_now();
    Claims {
        iss: ISSUER.into(),
        sub: "system:serviceaccount:default:default".into(),
        aud: vec![ISSUER.into()],
        exp,
        iat: now - 7200,
        nbf: now - 7200,
        jti: "test".into(),
        kubernetes: KubernetesClaim {
            namespace: "default".into(),
            serviceaccount: ObjectRef {
                name: "default".into(),
                uid: sa["metadata"]["uid"].as_str().unwrap().into(),
            },
            pod: None,
            node: None,
        },
    }
}

#[test]
fn tokens_from_create_token_authenticate_until_invalid() {
    let s = Server::start();
    wait_default_sa(&s, "default");
    let token = k(&s, &["create", "token", "default"]).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    grant_view(&s);
    let pods = with_token(&s, &token, &["get", "pods", "-n", "kube-system"]);
    assert!(pods.status.success(), "{pods:?}");
    let who = with_token(
        &s,
        &token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    );
    if who.status.success() {
        assert_eq!(
            String::from_utf8_lossy(&who.stdout),
            "system:serviceaccount:default:default"
        );
    }

    // A signature of another key, and an expired token of the right key.
    let now = skiff_apiserver::serviceaccount::token::unix_now();
    let elsewhere = tempfile::tempdir().unwrap();
    let forger = TokenSigner::load_or_create(elsewhere.path(), ISSUER, vec![]).unwrap();
    let forged = forger.sign(&claims_for(&s, now + 3600)).unwrap();
    let refused = with_token(&s, &forged, &["get", "pods"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"),
        "{refused:?}"
    );
    let server_key =
        TokenSigner::load_or_create(&s.dir.path().join("server"), ISSUER, vec![]).unwrap();
    let good = server_key.sign(&claims_for(&s, now + 3600)).unwrap();
    assert!(with_token(&s, &good, &["get", "pods"]).status.success());
    let expired = server_key.sign(&claims_for(&s, now - 10)).unwrap();
    let refused = with_token(&s, &expired, &["get", "pods"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"),
        "{refused:?}"
    );

    // Another audience is not the API server's.
    let other = k(&s, &["create", "token", "default", "--audience", "vault"]);
    let refused = with_token(&s, other.trim(), &["get", "pods"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"));

    // Too short a lifetime is invalid; a TokenRequest says when the token expires.
    let short = run(s
        .kubectl("1.33")
        .args(["create", "token", "default", "--duration", "5m"]));
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr)
            .contains("may not specify a duration less than 10 minutes"),
        "{short:?}"
    );
    let missing = run(s.kubectl("1.33").args(["create", "token", "nobody"]));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("serviceaccounts \"nobody\" not found")
    );

    // A token bound to a pod dies with the pod; the ServiceAccount's deletion kills them all.
    k(
        &s,
        &["run", "bound", "--image", "busybox", "--restart", "Never"],
    );
    let bound = k(
        &s,
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "bound",
        ],
    );
    assert!(
        with_token(&s, bound.trim(), &["get", "pods"])
            .status
            .success()
    );
    k(
        &s,
        &[
            "delete",
            "pod",
            "bound",
            "--grace-period=0",
            "--force",
            "--wait=true",
        ],
    );
    wait_until("the bound token refused", WAIT, || {
        !with_token(&s, bound.trim(), &["get", "pods"])
            .status
            .success()
    });
    assert!(with_token(&s, &token, &["get", "pods"]).status.success());
    k(&s, &["delete", "sa", "default"]);
    let refused = with_token(&s, &token, &["get", "pods"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"));

    // The OpenID documents describe the signing key.
    let config: Value = serde_json::from_str(&k(
        &s,
        &["get", "--raw", "/.well-known/openid-configuration"],
    ))
    .unwrap();
    assert_eq!(config["issuer"], ISSUER);
    let jwks: Value = serde_json::from_str(&k(&s, &["get", "--raw", "/openid/v1/jwks"])).unwrap();
    assert_eq!(jwks["keys"][0]["alg"], "ES256");
}

#[test]
fn pods_get_their_service_account_and_token_volume() {
    let s = Server::start();
    wait_default_sa(&s, "default");
    let out = apply(
        &s,
        r#"apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  initContainers: [{name: init, image: busybox}]
  containers: [{name: app, image: busybox}, {name: side, image: busybox}]
"#,
    );
    assert!(out.status.success(), "{out:?}");
    let pod = json(&s, &["get", "pod", "plain"]);
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    let volumes = spec["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1);
    let name = volumes[0]["name"].as_str().unwrap();
    assert!(name.starts_with("kube-api-access-") && name.len() == "kube-api-access-".len() + 5);
    let expected: Value = serde_json::from_str(
        r#"{"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}"#,
    )
    .unwrap();
    assert_eq!(volumes[0]["projected"], expected);
    for c in ["initContainers", "containers"] {
        for container in spec[c].as_array().unwrap() {
            let mounts = container["volumeMounts"].as_array().unwrap();
            assert_eq!(mounts.len(), 1, "{container}");
            assert_eq!(mounts[0]["name"], name);
            assert_eq!(mounts[0]["readOnly"], true);
            assert_eq!(
                mounts[0]["mountPath"],
                "/var/run/secrets/kubernetes.io/serviceaccount"
            );
        }
    }

    // Opting out on the pod, or on its ServiceAccount.
    let out = apply(
        &s,
        r#"apiVersion: v1
kind: Pod
metadata: {name: nomount}
spec:
  automountServiceAccountToken: false
  containers: [{name: app, image: busybox}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: quiet}
automountServiceAccountToken: false
"#,
    );
    assert!(out.status.success(), "{out:?}");
    let pod = json(&s, &["get", "pod", "nomount"]);
    assert!(pod["spec"]["volumes"].is_null(), "{pod}");
    assert!(pod["spec"]["containers"][0]["volumeMounts"].is_null());
    let out = apply(
        &s,
        r#"apiVersion: v1
kind: Pod
metadata: {name: quiet}
spec:
  serviceAccountName: quiet
  containers: [{name: app, image: busybox}]
"#,
    );
    assert!(out.status.success(), "{out:?}");
    let pod = json(&s, &["get", "pod", "quiet"]);
    assert_eq!(pod["spec"]["serviceAccountName"], "quiet");
    assert!(pod["spec"]["volumes"].is_null(), "{pod}");

    // A missing ServiceAccount is refused as kube-apiserver refuses it.
    let out = apply(
        &s,
        r#"apiVersion: v1
kind: Pod
metadata: {name: ghost}
spec:
  serviceAccountName: ghost
  containers: [{name: app, image: busybox}]
"#,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pods \"ghost\" is forbidden: error looking up service account default/ghost: serviceaccount \"ghost\" not found"),
        "{err}"
    );
    k(
        &s,
        &["delete", "pods", "--all", "--grace-period=0", "--force"],
    );
}

#[test]
fn every_namespace_has_the_root_ca_config_map() {
    let s = Server::start();
    let ca = std::fs::read_to_string(s.dir.path().join("server/ca.crt")).unwrap();
    let ca_of = |ns: &str| {
        let out = run(s.kubectl("1.33").args([
            "get",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            ns,
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for ns in ["default", "kube-system", "kube-public"] {
        wait_until(&format!("kube-root-ca.crt in {ns}"), WAIT, || {
            ca_of(ns) == ca
        });
    }
    k(&s, &["create", "namespace", "fresh"]);
    wait_until("kube-root-ca.crt in a new namespace", WAIT, || {
        ca_of("fresh") == ca
    });
    k(
        &s,
        &["delete", "configmap", "kube-root-ca.crt", "-n", "fresh"],
    );
    wait_until("kube-root-ca.crt recreated", WAIT, || ca_of("fresh") == ca);
    k(
        &s,
        &[
            "patch",
            "configmap",
            "kube-root-ca.crt",
            "-n",
            "fresh",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"ca.crt":"tampered","extra":"x"}}"#,
        ],
    );
    wait_until("kube-root-ca.crt restored", WAIT, || {
        ca_of("fresh") == ca
            && k(
                &s,
                &[
                    "get",
                    "cm",
                    "kube-root-ca.crt",
                    "-n",
                    "fresh",
                    "-o",
                    "jsonpath={.data.extra}",
                ],
            )
            .is_empty()
    });
    k(&s, &["delete", "namespace", "fresh", "--wait=false"]);
}

#[test]
fn the_issuer_and_audiences_can_be_configured() {
    let s = Server::start_in(
        tempfile::tempdir().unwrap(),
        &[
            "--service-account-issuer",
            "https://issuer.test",
            "--api-audiences",
            "api.test,other.test",
        ],
    );
    wait_default_sa(&s, "default");
    grant_view(&s);
    let token = k(&s, &["create", "token", "default"]);
    assert!(
        with_token(&s, token.trim(), &["get", "pods"])
            .status
            .success()
    );
    let other = k(
        &s,
        &["create", "token", "default", "--audience", "other.test"],
    );
    assert!(
        with_token(&s, other.trim(), &["get", "pods"])
            .status
            .success()
    );
    let foreign = k(&s, &["create", "token", "default", "--audience", ISSUER]);
    let refused = with_token(&s, foreign.trim(), &["get", "pods"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"));
    let config: Value = serde_json::from_str(&k(
        &s,
        &["get", "--raw", "/.well-known/openid-configuration"],
    ))
    .unwrap();
    assert_eq!(config["issuer"], "https://issuer.test");
}
