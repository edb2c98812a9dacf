//! Admission on every create path, and the update rules of role bindings, PriorityClasses and
//! the access reviews, end to end with real kubectl 1.33 against `skiff server` (no agent):
//! a pod created by `kubectl apply --server-side` gets its ServiceAccount, token volume,
//! default tolerations and priority as a `kubectl create` would, a claim gets the default
//! StorageClass, and updates of the existing objects are not re-admitted as creates.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use server_support::{Server, ok, run, wait_until};

const WAIT: Duration = Duration::from_secs(30);

fn k(s: &Server, args: &[&str]) -> String {
    ok(s.kubectl("1.33").args(args))
}

/// `kubectl <args> -f -` with `yaml` on stdin.
fn with_stdin(s: &Server, args: &[&str], yaml: &str) -> Output {
    let mut child = s
        .kubectl("1.33")
        .args(args)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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

fn ssa(s: &Server, yaml: &str) -> Output {
    with_stdin(s, &["apply", "--server-side"], yaml)
}

fn json(s: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&k(s, &all)).unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_default_sa(s: &Server, ns: &str) {
    wait_until("the default service account", WAIT, || {
        run(s.kubectl("1.33").args(["get", "sa", "default", "-n", ns]))
            .status
            .success()
    });
}

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
spec:
  priorityClassName: high
  containers:
  - name: app
    image: busybox
    command: ["sleep", "3600"]
"#;

#[test]
fn server_side_apply_creates_are_admitted_and_updates_are_not() {
    let s = Server::start();
    wait_default_sa(&s, "default");
    k(&s, &["create", "priorityclass", "high", "--value=1000"]);

    let out = ssa(&s, POD);
    assert!(out.status.success(), "{out:?}");
    let pod = json(&s, &["get", "pod", "web"]);
    let spec = &pod["spec"];
    assert_eq!(spec["serviceAccountName"], "default", "{pod}");
    assert_eq!(spec["priority"], 1000, "{pod}");
    assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority", "{pod}");
    let volume = spec["volumes"][0]["name"].as_str().unwrap_or_default();
    assert!(volume.starts_with("kube-api-access-"), "{pod}");
    assert_eq!(
        spec["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "{pod}"
    );
    let tolerations = spec["tolerations"].as_array().unwrap();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(
            tolerations.iter().any(|t| t["key"] == key
                && t["effect"] == "NoExecute"
                && t["tolerationSeconds"] == 300),
            "{key}: {pod}"
        );
    }

    // Applying again (an update) keeps what admission set and is not refused by the priority
    // admission as a create would be (the pod's spec.priority is set now).
    let relabelled = POD.replace(
        "namespace: default\n",
        "namespace: default\n  labels: {tier: web}\n",
    );
    let out = ssa(&s, &relabelled);
    assert!(out.status.success(), "{out:?}");
    let pod = json(&s, &["get", "pod", "web"]);
    assert_eq!(pod["metadata"]["labels"]["tier"], "web", "{pod}");
    assert_eq!(pod["spec"]["priority"], 1000, "{pod}");
    // A PUT of the original manifest (no priority in it) keeps the admitted priority too.
    let out = with_stdin(&s, &["replace"], POD);
    assert!(out.status.success(), "{out:?}");
    let pod = json(&s, &["get", "pod", "web"]);
    assert_eq!(pod["spec"]["priority"], 1000, "{pod}");
    assert_eq!(pod["spec"]["priorityClassName"], "high", "{pod}");

    // Admission refuses through apply as through create.
    let missing = POD
        .replace("name: web", "name: lost")
        .replace("priorityClassName: high", "priorityClassName: nope");
    let out = ssa(&s, &missing);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("no PriorityClass with name nope was found"),
        "{out:?}"
    );
    let no_account = POD.replace("name: web", "name: stranger").replace(
        "  priorityClassName: high\n",
        "  serviceAccountName: ghost\n",
    );
    let out = ssa(&s, &no_account);
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("ghost"), "{out:?}");
}

#[test]
fn server_side_apply_claims_get_the_default_storage_class() {
    let s = Server::start();
    let class = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: fast
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: example.com/fast
"#;
    let out = ssa(&s, class);
    assert!(out.status.success(), "{out:?}");
    let claim = r#"
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: default
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"#;
    let out = ssa(&s, claim);
    assert!(out.status.success(), "{out:?}");
    let pvc = json(&s, &["get", "pvc", "data"]);
    assert_eq!(pvc["spec"]["storageClassName"], "fast", "{pvc}");
    // An explicit empty class stays a choice.
    let explicit = claim
        .replace("name: data", "name: bare")
        .replace("  accessModes", "  storageClassName: \"\"\n  accessModes");
    let out = ssa(&s, &explicit);
    assert!(out.status.success(), "{out:?}");
    let pvc = json(&s, &["get", "pvc", "bare"]);
    assert_eq!(pvc["spec"]["storageClassName"], "", "{pvc}");
}

#[test]
fn role_refs_are_immutable() {
    let s = Server::start();
    k(
        &s,
        &[
            "create",
            "rolebinding",
            "x",
            "--clusterrole=view",
            "--user=jane",
        ],
    );
    // Subjects may change.
    k(
        &s,
        &[
            "patch",
            "rolebinding",
            "x",
            "--type=merge",
            "-p",
            r#"{"subjects":[{"kind":"User","name":"joe","apiGroup":"rbac.authorization.k8s.io"}]}"#,
        ],
    );
    let out = run(s.kubectl("1.33").args([
        "patch",
        "rolebinding",
        "x",
        "--type=merge",
        "-p",
        r#"{"roleRef":{"name":"edit"}}"#,
    ]));
    assert!(!out.status.success(), "{out:?}");
    let text = stderr(&out);
    assert!(
        text.contains(r#"roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"ClusterRole", Name:"edit"}: cannot change roleRef"#),
        "{text}"
    );
    k(
        &s,
        &[
            "create",
            "clusterrolebinding",
            "cx",
            "--clusterrole=view",
            "--user=jane",
        ],
    );
    let out = with_stdin(
        &s,
        &["apply", "--server-side", "--force-conflicts"],
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: cx}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: User, name: jane, apiGroup: rbac.authorization.k8s.io}]
"#,
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(stderr(&out).contains("cannot change roleRef"), "{out:?}");
    let binding = json(&s, &["get", "clusterrolebinding", "cx"]);
    assert_eq!(binding["roleRef"]["name"], "view", "{binding}");
}

#[test]
fn access_reviews_check_their_subject_and_namespace() {
    let s = Server::start();
    let local = |spec_ns: &str| {
        format!(
            r#"{{"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
            "metadata": {{"namespace": "default"}},
            "spec": {{"user": "jane", "resourceAttributes": {{"verb": "get", "resource": "pods"{spec_ns}}}}}}}"#
        )
    };
    let out = with_stdin(&s, &["create", "-o", "json"], &local(""));
    assert!(out.status.success(), "{out:?}");
    let review: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(review["metadata"]["namespace"], "default", "{review}");
    assert_eq!(review["status"]["allowed"], false, "{review}");
    let out = with_stdin(
        &s,
        &["create", "-o", "json"],
        &local(r#", "namespace": "kube-system""#),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains(
            r#"spec.resourceAttributes.namespace: Invalid value: "kube-system": must match metadata.namespace"#
        ),
        "{out:?}"
    );
    // Posted to one namespace's path while naming another.
    let out = with_stdin(
        &s,
        &[
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/namespaces/kube-system/localsubjectaccessreviews",
        ],
        &local(""),
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains(
            "the namespace of the provided object does not match the namespace sent on the request"
        ),
        "{out:?}"
    );
    let out = with_stdin(
        &s,
        &[
            "create",
            "--raw",
            "/apis/authorization.k8s.io/v1/namespaces/kube-system/localsubjectaccessreviews",
        ],
        &local("").replace(r#""metadata": {"namespace": "default"},"#, ""),
    );
    assert!(out.status.success(), "{out:?}");
    let review: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(review["metadata"]["namespace"], "kube-system", "{review}");
    let nobody = r#"{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}}}"#;
    let out = with_stdin(&s, &["create", "-o", "json"], nobody);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("at least one of user or group must be specified"),
        "{out:?}"
    );
}

#[test]
fn priority_class_updates_keep_value_and_one_default() {
    let s = Server::start();
    k(&s, &["create", "priorityclass", "high", "--value=1000"]);
    k(
        &s,
        &[
            "patch",
            "priorityclass",
            "high",
            "--type=merge",
            "-p",
            r#"{"description":"important"}"#,
        ],
    );
    let out = run(s.kubectl("1.33").args([
        "patch",
        "priorityclass",
        "high",
        "--type=merge",
        "-p",
        r#"{"value":5}"#,
    ]));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out).contains("value: Forbidden: may not be changed in an update."),
        "{out:?}"
    );
    assert_eq!(json(&s, &["get", "priorityclass", "high"])["value"], 1000);

    k(
        &s,
        &[
            "create",
            "priorityclass",
            "d1",
            "--value=10",
            "--global-default",
        ],
    );
    k(&s, &["create", "priorityclass", "d2", "--value=20"]);
    let out = run(s.kubectl("1.33").args([
        "patch",
        "priorityclass",
        "d2",
        "--type=merge",
        "-p",
        r#"{"globalDefault":true}"#,
    ]));
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr(&out)
            .contains("PriorityClass d1 is already marked as default. Only one default can exist"),
        "{out:?}"
    );
    // The default itself may still be updated.
    k(
        &s,
        &[
            "patch",
            "priorityclass",
            "d1",
            "--type=merge",
            "-p",
            r#"{"description":"the default"}"#,
        ],
    );
    assert_eq!(
        json(&s, &["get", "priorityclass", "d2"])["globalDefault"],
        false
    );
}
