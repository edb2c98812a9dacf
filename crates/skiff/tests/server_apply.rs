//! Server-side apply end to end with real kubectl 1.33 against `skiff server` (no agent): two
//! managers, the conflict kubectl prints and its exit code, `--force-conflicts`, a field
//! removed when the next apply leaves it out, and the entries `kubectl get -o yaml
//! --show-managed-fields` shows.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::process::Output;

use serde_json::Value;
use server_support::{Server, ok, run_with_stdin};

fn apply(s: &Server, extra: &[&str], yaml: &str) -> Output {
    run_with_stdin(
        s.kubectl("1.33")
            .args(["apply", "--server-side"])
            .args(extra)
            .args(["-f", "-"]),
        yaml,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn deployment(replicas: u32, labels: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {labels}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx
"#
    )
}

fn get(s: &Server) -> Value {
    let out = ok(s.kubectl("1.33").args([
        "get",
        "deployment",
        "web",
        "-o",
        "json",
        "--show-managed-fields",
    ]));
    serde_json::from_str(&out).unwrap()
}

fn manager<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == name)
}

#[test]
fn kubectl_server_side_apply_conflicts_forces_and_prunes() {
    let s = Server::start();
    let out = apply(&s, &[], &deployment(1, "{app: web, tier: front}"));
    assert!(out.status.success(), "{out:?}");
    assert!(
        text(&out.stdout).contains("deployment.apps/web serverside-applied"),
        "{out:?}"
    );

    // Another manager changes replicas with kubectl scale's PATCH (an Update entry).
    ok(s.kubectl("1.33").args([
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":2}}"#,
    ]));
    let obj = get(&s);
    let patcher = manager(&obj, "kubectl-patch").unwrap();
    assert_eq!(patcher["operation"], "Update", "{obj}");
    assert_eq!(
        patcher["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}}),
        "{obj}"
    );

    // Applying the old replica count now conflicts, as with kube.
    let out = apply(&s, &[], &deployment(1, "{app: web, tier: front}"));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = text(&out.stderr);
    assert!(
        err.contains(
            r#"error: Apply failed with 1 conflict: conflict with "kubectl-patch" using apps/v1: .spec.replicas"#
        ),
        "{err}"
    );
    assert!(err.contains("Please review the fields above"), "{err}");

    // --force-conflicts takes replicas back; dropping the tier label removes it.
    let out = apply(&s, &["--force-conflicts"], &deployment(1, "{app: web}"));
    assert!(out.status.success(), "{out:?}");
    let obj = get(&s);
    assert_eq!(obj["spec"]["replicas"], 1, "{obj}");
    assert_eq!(
        obj["metadata"]["labels"],
        serde_json::json!({"app": "web"}),
        "{obj}"
    );
    assert!(manager(&obj, "kubectl-patch").is_none(), "{obj}");
    let applier = manager(&obj, "kubectl").unwrap();
    assert_eq!(applier["operation"], "Apply", "{obj}");
    assert_eq!(
        applier["fieldsV1"]["f:spec"]["f:replicas"],
        serde_json::json!({})
    );
    assert!(
        applier["fieldsV1"]["f:metadata"]["f:labels"]
            .get("f:tier")
            .is_none(),
        "{obj}"
    );

    // The YAML view lists the entries as kube writes them.
    let yaml = ok(s.kubectl("1.33").args([
        "get",
        "deployment",
        "web",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]));
    for expected in [
        "managedFields:",
        "manager: kubectl",
        "operation: Apply",
        "fieldsType: FieldsV1",
        "f:replicas: {}",
        "k:{\"name\":\"web\"}:",
    ] {
        assert!(yaml.contains(expected), "{expected}: {yaml}");
    }
    // Without the flag kubectl hides them.
    let plain = ok(s
        .kubectl("1.33")
        .args(["get", "deployment", "web", "-o", "yaml"]));
    assert!(!plain.contains("managedFields"), "{plain}");
}

#[test]
fn kubectl_moves_from_client_side_to_server_side_apply_and_back() {
    let s = Server::start();
    let client_side =
        |yaml: &str| run_with_stdin(s.kubectl("1.33").args(["apply", "-f", "-"]), yaml);
    let out = client_side(&deployment(1, "{app: web}"));
    assert!(out.status.success(), "{out:?}");

    // The first server-side apply takes over what client-side apply set, changed replicas
    // included, without --force-conflicts; kubectl then migrates the managed fields and
    // re-applies, which must not remove the rest of the spec.
    let out = apply(&s, &[], &deployment(3, "{app: web}"));
    assert!(out.status.success(), "{out:?}");
    let err = text(&out.stderr);
    assert!(!err.contains("Warning"), "{err}");
    let obj = get(&s);
    assert_eq!(obj["spec"]["replicas"], 3, "{obj}");
    assert_eq!(
        obj["spec"]["template"]["spec"]["containers"][0]["image"], "nginx",
        "{obj}"
    );
    assert!(
        manager(&obj, "kubectl-client-side-apply").is_none(),
        "{obj}"
    );
    let annotation =
        obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .as_str()
            .unwrap();
    assert!(annotation.contains("\"replicas\":3"), "{annotation}");

    // Back to client-side apply, then scale through the scale subresource.
    let out = client_side(&deployment(2, "{app: web}"));
    assert!(out.status.success(), "{out:?}");
    ok(s.kubectl("1.33")
        .args(["scale", "deployment", "web", "--replicas=4"]));
    let obj = get(&s);
    assert_eq!(obj["spec"]["replicas"], 4, "{obj}");
    let scaler = obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subresource"] == "scale")
        .unwrap_or_else(|| panic!("no scale entry: {obj}"));
    assert_eq!(
        scaler["fieldsV1"],
        serde_json::json!({"f:spec": {"f:replicas": {}}}),
        "{obj}"
    );
}
