#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

fn ds(extra: serde_json::Value) -> DaemonSet {
    let mut v = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "agent", "namespace": "ns", "uid": "ds-uid", "generation": 1},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "c", "image": "agent"}]}},
        }
    });
    if let serde_json::Value::Object(extra) = extra {
        for (k, val) in extra {
            v["spec"]["template"]["spec"][k] = val;
        }
    }
    serde_json::from_value(v).unwrap()
}

fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
        }))
        .unwrap(),
    )
}

fn pod(d: &DaemonSet, name: &str, node: &str, ready: bool) -> Arc<Pod> {
    let mut p = pod_for(d, node);
    p.metadata.name = Some(name.into());
    p.metadata.uid = Some(format!("{name}-uid"));
    let status = if ready { "True" } else { "False" };
    p.status = Some(
        serde_json::from_value(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": status}]}))
        .unwrap(),
    );
    Arc::new(p)
}

fn deleted(plan: &Plan) -> Vec<String> {
    plan.delete.iter().map(|(n, _)| n.clone()).collect()
}

#[test]
fn one_pod_per_eligible_node_respecting_selectors_and_taints() {
    let d = ds(json!({"nodeSelector": {"disk": "ssd"}}));
    let nodes = vec![
        node("a", json!({"disk": "ssd"}), json!([])),
        node("b", json!({"disk": "hdd"}), json!([])),
        node(
            "c",
            json!({"disk": "ssd"}),
            json!([{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
        ),
        node(
            "d",
            json!({"disk": "ssd"}),
            json!([{"key": "soft", "effect": "PreferNoSchedule"},
                   {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        ),
    ];
    let plan = decide(&d, &nodes, &[], true);
    assert_eq!(plan.create, vec!["a", "d"]);
    assert_eq!(plan.status.desired_number_scheduled, 2);
    let tolerant = ds(json!({"nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "gpu", "operator": "Equal", "value": "yes"}]}));
    assert_eq!(
        decide(&tolerant, &nodes, &[], true).create,
        vec!["a", "c", "d"]
    );
}

#[test]
fn required_node_affinity_limits_nodes() {
    let d = ds(
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
        {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["z1"]}]}]}}}}),
    );
    let nodes = vec![
        node("a", json!({"zone": "z1"}), json!([])),
        node("b", json!({"zone": "z2"}), json!([])),
    ];
    assert_eq!(decide(&d, &nodes, &[], true).create, vec!["a"]);
}

#[test]
fn pods_on_gone_or_ineligible_nodes_are_removed_and_extras_deduplicated() {
    let d = ds(json!({}));
    let nodes = vec![node("a", json!({}), json!([]))];
    let pods = vec![
        pod(&d, "p1", "a", true),
        pod(&d, "p2", "a", true),
        pod(&d, "p3", "gone", true),
    ];
    let plan = decide(&d, &nodes, &pods, true);
    assert!(plan.create.is_empty());
    let mut del = deleted(&plan);
    del.sort();
    assert_eq!(del, vec!["p2", "p3"]);
    assert_eq!(plan.status.number_misscheduled, 1);
    assert_eq!(plan.status.current_number_scheduled, 1);
    assert_eq!(plan.status.number_ready, 1);
    assert_eq!(plan.status.updated_number_scheduled, Some(1));
    assert!(decide(&d, &nodes, &pods, false).delete.is_empty());
}

#[test]
fn new_templates_roll_max_unavailable_nodes_at_a_time() {
    let old = ds(json!({}));
    let nodes = vec![
        node("a", json!({}), json!([])),
        node("b", json!({}), json!([])),
    ];
    let pods = vec![pod(&old, "p1", "a", true), pod(&old, "p2", "b", true)];
    let new = ds(json!({"containers": [{"name": "c", "image": "agent:2"}]}));
    let plan = decide(&new, &nodes, &pods, true);
    assert_eq!(deleted(&plan).len(), 1);
    assert_eq!(plan.status.updated_number_scheduled, Some(0));
    let pods = vec![pod(&new, "p3", "a", false), pod(&old, "p2", "b", true)];
    assert!(
        decide(&new, &nodes, &pods, true).delete.is_empty(),
        "one node already unavailable"
    );
}

#[test]
fn tolerations_match_like_the_scheduler() {
    let taint = Taint {
        key: "k".into(),
        value: Some("v".into()),
        effect: "NoExecute".into(),
        time_added: None,
    };
    let tol = |v: serde_json::Value| serde_json::from_value::<Toleration>(v).unwrap();
    assert!(tolerates(&tol(json!({"operator": "Exists"})), &taint));
    assert!(tolerates(
        &tol(json!({"key": "k", "operator": "Exists"})),
        &taint
    ));
    assert!(tolerates(&tol(json!({"key": "k", "value": "v"})), &taint));
    assert!(!tolerates(&tol(json!({"key": "k", "value": "w"})), &taint));
    assert!(!tolerates(
        &tol(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})),
        &taint
    ));
}

#[test]
fn pods_are_bound_directly_with_daemon_tolerations() {
    let p = pod_for(&ds(json!({})), "a");
    let spec = p.spec.unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("a"));
    assert!(
        spec.tolerations
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable"))
    );
    assert!(p.metadata.labels.unwrap().contains_key(REVISION_LABEL));
}
