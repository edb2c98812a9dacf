//! RBAC authorization end to end with real kubectl 1.33 against `skiff server` (no agent): a
//! ServiceAccount token is refused what no binding grants, with kube-apiserver's Forbidden
//! messages; Roles, RoleBindings, ClusterRoleBindings to the aggregated `view`, resourceNames
//! take effect as soon as they are created and stop when deleted; `kubectl auth can-i` with
//! and without `--as` (impersonation); SubjectAccessReviews; the admin may do everything.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use server_support::{KUBECTL_DIR, Server, ok, run, wait_until};

const SA: &str = "system:serviceaccount:default:default";
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts the command failed with kube-apiserver's Forbidden for `what`.
fn assert_forbidden(out: &Output, what: &str) {
    assert!(!out.status.success(), "{out:?}");
    let err = stderr(out);
    assert!(
        err.contains(&format!("Error from server (Forbidden): {what}")),
        "expected Forbidden {what}\ngot: {err}"
    );
}

fn create_json(s: &Server, doc: &str) -> Value {
    let mut child = s
        .kubectl("1.33")
        .args(["create", "-f", "-", "-o", "json"])
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
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn start() -> (Server, String) {
    let s = Server::start();
    wait_until("the default service account", WAIT, || {
        run(s.kubectl("1.33").args(["get", "sa", "default"]))
            .status
            .success()
    });
    let token = k(&s, &["create", "token", "default"]).trim().to_string();
    (s, token)
}

#[test]
fn service_accounts_may_do_only_what_bindings_grant() {
    let (s, token) = start();

    // Nothing granted: lists, cluster-scoped lists and named reads are refused.
    let out = with_token(&s, &token, &["get", "pods"]);
    assert_forbidden(
        &out,
        &format!(
            "pods is forbidden: User \"{SA}\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
    );
    assert_forbidden(
        &with_token(&s, &token, &["get", "nodes"]),
        &format!(
            "nodes is forbidden: User \"{SA}\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        ),
    );
    assert_forbidden(
        &with_token(&s, &token, &["get", "deployment", "web"]),
        &format!(
            "deployments.apps \"web\" is forbidden: User \"{SA}\" cannot get resource \"deployments\" in API group \"apps\" in the namespace \"default\""
        ),
    );
    assert_forbidden(
        &with_token(&s, &token, &["get", "--raw", "/metrics"]),
        &format!("forbidden: User \"{SA}\" cannot get path \"/metrics\""),
    );
    // The Status itself, as kube-apiserver sends it.
    let ca = s.dir.path().join("server/ca.crt");
    let raw = run(Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default/pods",
            s.port
        )));
    let status: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(status["code"], 403, "{status}");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["details"], serde_json::json!({"kind": "pods"}));
    // Discovery, whoami and the issuer documents are for every authenticated user.
    assert!(
        with_token(&s, &token, &["api-resources"]).status.success(),
        "discovery"
    );
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
    assert_eq!(stdout(&who), SA, "{who:?}");
    assert!(
        with_token(&s, &token, &["get", "--raw", "/openid/v1/jwks"])
            .status
            .success()
    );

    // A Role and a RoleBinding: in force as soon as created, in their namespace only.
    k(
        &s,
        &["run", "victim", "--image", "busybox", "--restart", "Never"],
    );
    k(
        &s,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
        ],
    );
    k(
        &s,
        &[
            "create",
            "rolebinding",
            "pod-reader",
            "--role=pod-reader",
            "--serviceaccount=default:default",
        ],
    );
    let pods = with_token(&s, &token, &["get", "pods", "-o", "name"]);
    assert!(pods.status.success(), "{pods:?}");
    assert_eq!(stdout(&pods).trim(), "pod/victim");
    assert!(
        with_token(&s, &token, &["get", "pod", "victim"])
            .status
            .success()
    );
    assert_forbidden(
        &with_token(&s, &token, &["get", "pods", "-n", "kube-system"]),
        &format!(
            "pods is forbidden: User \"{SA}\" cannot list resource \"pods\" in API group \"\" in the namespace \"kube-system\""
        ),
    );
    assert_forbidden(
        &with_token(&s, &token, &["delete", "pod", "victim", "--wait=false"]),
        &format!(
            "pods \"victim\" is forbidden: User \"{SA}\" cannot delete resource \"pods\" in API group \"\" in the namespace \"default\""
        ),
    );
    assert_forbidden(
        &with_token(&s, &token, &["logs", "victim"]),
        &format!(
            "pods \"victim\" is forbidden: User \"{SA}\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"default\""
        ),
    );
    // kubectl 1.33 execs over a websocket upgrade (a GET), authorized as `create`.
    let exec = with_token(&s, &token, &["exec", "victim", "--", "true"]);
    assert!(!exec.status.success());
    assert!(
        stderr(&exec).contains(&format!(
            "User \"{SA}\" cannot create resource \"pods/exec\" in API group \"\" in the namespace \"default\""
        )),
        "{exec:?}"
    );

    // resourceNames: one ConfigMap by name, not the others, not the list.
    k(&s, &["create", "configmap", "one"]);
    k(&s, &["create", "configmap", "two"]);
    k(
        &s,
        &[
            "create",
            "role",
            "cm-one",
            "--verb=get",
            "--resource=configmaps",
            "--resource-name=one",
        ],
    );
    k(
        &s,
        &[
            "create",
            "rolebinding",
            "cm-one",
            "--role=cm-one",
            "--serviceaccount=default:default",
        ],
    );
    assert!(
        with_token(&s, &token, &["get", "configmap", "one"])
            .status
            .success()
    );
    assert_forbidden(
        &with_token(&s, &token, &["get", "configmap", "two"]),
        &format!("configmaps \"two\" is forbidden: User \"{SA}\" cannot get resource"),
    );
    assert_forbidden(
        &with_token(&s, &token, &["get", "configmaps"]),
        "configmaps is forbidden",
    );

    // A ClusterRoleBinding to the aggregated `view`: everywhere, read-only, no Secrets.
    assert_forbidden(
        &with_token(&s, &token, &["get", "deployments", "-A"]),
        &format!(
            "deployments.apps is forbidden: User \"{SA}\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        ),
    );
    k(
        &s,
        &[
            "create",
            "clusterrolebinding",
            "sa-view",
            "--clusterrole=view",
            "--serviceaccount=default:default",
        ],
    );
    assert!(
        with_token(&s, &token, &["get", "deployments", "-A"])
            .status
            .success()
    );
    assert!(
        with_token(&s, &token, &["get", "pods", "-n", "kube-system"])
            .status
            .success()
    );
    assert_forbidden(
        &with_token(&s, &token, &["get", "secrets"]),
        "secrets is forbidden",
    );
    // (kubectl words this one itself, as against kube-apiserver.)
    let create = with_token(&s, &token, &["create", "configmap", "three"]);
    assert!(!create.status.success());
    assert!(
        stderr(&create).contains(&format!(
            "error: failed to create configmap: configmaps is forbidden: User \"{SA}\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\""
        )),
        "{create:?}"
    );
    let view = k(
        &s,
        &[
            "get",
            "clusterrole",
            "view",
            "-o",
            "jsonpath={.rules[*].resources}",
        ],
    );
    assert!(view.contains("pods") && !view.contains("secrets"), "{view}");

    // A ServiceAccount may not impersonate.
    assert_forbidden(
        &with_token(&s, &token, &["get", "pods", "--as=jane"]),
        &format!(
            "users \"jane\" is forbidden: User \"{SA}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
        ),
    );

    // Deleting the bindings takes the rights away at once.
    k(&s, &["delete", "clusterrolebinding", "sa-view"]);
    k(&s, &["delete", "rolebinding", "pod-reader"]);
    assert_forbidden(
        &with_token(&s, &token, &["get", "pods"]),
        "pods is forbidden",
    );

    // The admin still does everything.
    k(
        &s,
        &["delete", "pod", "victim", "--grace-period=0", "--force"],
    );
    k(&s, &["get", "--raw", "/metrics"]);
    k(&s, &["get", "clusterroles,clusterrolebindings"]);
}

#[test]
fn auth_can_i_answers_from_rbac_with_and_without_as() {
    let (s, token) = start();
    let can_i = |out: Output| {
        let answer = stdout(&out).trim().to_string();
        (answer, out.status.code())
    };
    let as_sa = format!("--as={SA}");
    // The admin may do everything; the ServiceAccount nothing yet.
    assert_eq!(
        can_i(run(s.kubectl("1.33").args(["auth", "can-i", "*", "*"]))),
        ("yes".into(), Some(0))
    );
    assert_eq!(
        can_i(run(s
            .kubectl("1.33")
            .args(["auth", "can-i", "list", "pods", &as_sa]))),
        ("no".into(), Some(1))
    );
    assert_eq!(
        can_i(with_token(&s, &token, &["auth", "can-i", "list", "pods"])),
        ("no".into(), Some(1))
    );
    k(
        &s,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
        ],
    );
    k(
        &s,
        &[
            "create",
            "rolebinding",
            "pod-reader",
            "--role=pod-reader",
            "--serviceaccount=default:default",
        ],
    );
    assert_eq!(
        can_i(run(s
            .kubectl("1.33")
            .args(["auth", "can-i", "list", "pods", &as_sa]))),
        ("yes".into(), Some(0))
    );
    assert_eq!(
        can_i(with_token(&s, &token, &["auth", "can-i", "list", "pods"])),
        ("yes".into(), Some(0))
    );
    for args in [
        vec!["auth", "can-i", "delete", "pods", &as_sa],
        vec!["auth", "can-i", "list", "pods", "-n", "kube-system", &as_sa],
        vec!["auth", "can-i", "create", "pods/exec", &as_sa],
    ] {
        assert_eq!(
            can_i(run(s.kubectl("1.33").args(&args))),
            ("no".into(), Some(1)),
            "{args:?}"
        );
    }
    // Impersonating a group: the group's bindings count.
    k(
        &s,
        &[
            "create",
            "clusterrolebinding",
            "devs-edit",
            "--clusterrole=edit",
            "--group=devs",
        ],
    );
    assert_eq!(
        can_i(run(s.kubectl("1.33").args([
            "auth",
            "can-i",
            "create",
            "deployments",
            "--as=jane",
            "--as-group=devs"
        ]))),
        ("yes".into(), Some(0))
    );
    assert_eq!(
        can_i(run(s.kubectl("1.33").args([
            "auth",
            "can-i",
            "create",
            "roles",
            "--as=jane",
            "--as-group=devs"
        ]))),
        ("no".into(), Some(1))
    );
    // `--list`: the rules of the bindings.
    let list = with_token(&s, &token, &["auth", "can-i", "--list"]);
    assert!(list.status.success(), "{list:?}");
    let text = stdout(&list);
    assert!(
        text.lines()
            .any(|l| l.starts_with("pods ") && l.contains("[get list]")),
        "{text}"
    );
    assert!(
        text.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{text}"
    );

    // SubjectAccessReviews, as an admission webhook or proxy would send them.
    let review = |verb: &str, ns: &str| {
        create_json(
            &s,
            &format!(
                r#"{{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {{"user": "{SA}", "groups": ["system:serviceaccounts", "system:authenticated"],
                "resourceAttributes": {{"verb": "{verb}", "resource": "pods", "namespace": "{ns}"}}}}}}"#
            ),
        )
    };
    let allowed = review("list", "default");
    assert_eq!(allowed["status"]["allowed"], true, "{allowed}");
    assert_eq!(
        allowed["status"]["reason"],
        "RBAC: allowed by RoleBinding \"pod-reader/default\" of Role \"pod-reader\" to ServiceAccount \"default/default\""
    );
    let denied = review("list", "kube-system");
    assert_eq!(denied["status"]["allowed"], false, "{denied}");
    let local = create_json(
        &s,
        &format!(
            r#"{{"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
            "metadata": {{"namespace": "default"}},
            "spec": {{"user": "{SA}", "resourceAttributes": {{"verb": "get", "resource": "pods"}}}}}}"#
        ),
    );
    assert_eq!(local["status"]["allowed"], true, "{local}");
    // A ServiceAccount may not review others.
    let out = with_token(&s, &token, &["auth", "can-i", "list", "pods", "--as=jane"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot impersonate resource \"users\""),
        "{out:?}"
    );
}

#[test]
fn roles_grant_no_more_than_their_writer_holds_and_aggregate() {
    let (s, token) = start();
    // The ServiceAccount administers its namespace (the aggregated `admin` role).
    k(
        &s,
        &[
            "create",
            "rolebinding",
            "sa-admin",
            "--clusterrole=admin",
            "--serviceaccount=default:default",
        ],
    );
    let as_sa = |args: &[&str]| with_token(&s, &token, args);
    let out = as_sa(&[
        "create",
        "role",
        "reader",
        "--verb=get,list",
        "--resource=pods",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = as_sa(&[
        "create",
        "rolebinding",
        "viewers",
        "--clusterrole=view",
        "--group=viewers",
    ]);
    assert!(out.status.success(), "{out:?}");
    // Granting more than it holds is refused, as kube-apiserver refuses it.
    let out = as_sa(&[
        "create",
        "rolebinding",
        "escalate",
        "--clusterrole=cluster-admin",
        "--serviceaccount=default:default",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "rolebindings.rbac.authorization.k8s.io \"escalate\" is forbidden: user \"{SA}\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:default\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held"
        )),
        "{out:?}"
    );
    let out = as_sa(&["create", "role", "nodes", "--verb=get", "--resource=nodes"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"),
        "{out:?}"
    );
    // Patching a held role into an escalation is refused too.
    let out = as_sa(&[
        "patch",
        "role",
        "reader",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/rules/-", "value": {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}}]"#,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is attempting to grant RBAC permissions not currently held"),
        "{out:?}"
    );
    // The `bind` verb on a role allows binding it without holding it.
    k(
        &s,
        &[
            "create",
            "clusterrole",
            "binder",
            "--verb=bind",
            "--resource=clusterroles",
            "--resource-name=cluster-admin",
        ],
    );
    k(
        &s,
        &[
            "create",
            "rolebinding",
            "sa-binder",
            "--clusterrole=binder",
            "--serviceaccount=default:default",
        ],
    );
    let out = as_sa(&[
        "create",
        "rolebinding",
        "escalate",
        "--clusterrole=cluster-admin",
        "--serviceaccount=default:default",
    ]);
    assert!(out.status.success(), "{out:?}");

    // A ClusterRole labelled for aggregation joins `view` at once.
    let view_can_list_leases = || {
        run(s.kubectl("1.33").args([
            "auth",
            "can-i",
            "list",
            "leases.coordination.k8s.io",
            "--as=jane",
            "--as-group=cluster-viewers",
        ]))
        .status
        .success()
    };
    k(
        &s,
        &[
            "create",
            "clusterrolebinding",
            "cluster-viewers",
            "--clusterrole=view",
            "--group=cluster-viewers",
        ],
    );
    assert!(!view_can_list_leases());
    create_json(
        &s,
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "leases-view", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
        "rules": [{"verbs": ["get", "list", "watch"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]}]}"#,
    );
    assert!(view_can_list_leases());
    wait_until("view's stored rules aggregated", WAIT, || {
        k(
            &s,
            &[
                "get",
                "clusterrole",
                "view",
                "-o",
                "jsonpath={.rules[*].resources}",
            ],
        )
        .contains("leases")
    });
}
