#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::{Value, json};

const T0: u64 = 1_800_000_000;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
}

fn stamp(secs: u64) -> String {
    kube_time(at(secs)).0.to_string()
}

fn node(ready: &str, heartbeat: u64, taints: Value) -> Node {
    let condition = |kind: &str, status: &str| {
        json!({"type": kind, "status": status, "reason": "KubeletReady", "message": "ok",
            "lastHeartbeatTime": stamp(heartbeat), "lastTransitionTime": stamp(0)})
    };
    serde_json::from_value(json!({
        "metadata": {"name": "n1", "creationTimestamp": stamp(0)},
        "spec": {"taints": taints},
        "status": {"conditions": [
            condition("MemoryPressure", "False"),
            condition("DiskPressure", "False"),
            condition("PIDPressure", "False"),
            condition("Ready", ready),
        ]},
    }))
    .unwrap()
}

fn lease(renewed: u64) -> Lease {
    serde_json::from_value(json!({
        "metadata": {"name": "n1", "namespace": LEASE_NAMESPACE, "creationTimestamp": stamp(0)},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
            "renewTime": kube_time(at(renewed)).0.to_string()},
    }))
    .unwrap()
}

fn options() -> Options {
    Options {
        grace_period: Duration::from_secs(40),
    }
}

fn taint(key: &str, effect: &str, added: u64) -> Taint {
    Taint {
        key: key.into(),
        effect: effect.into(),
        time_added: Some(kube_time(at(added))),
        value: None,
    }
}

fn pod(name: &str, tolerations: Value, extra: Value) -> Arc<Pod> {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid")},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}],
            "tolerations": tolerations},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    });
    if let Value::Object(extra) = extra {
        for (k, val) in extra {
            v["metadata"][k] = val;
        }
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

fn default_tolerations(seconds: i64) -> Value {
    json!([
        {"key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
        {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds},
    ])
}

fn actions(plan: &PodsPlan) -> Vec<(PodAction, String)> {
    plan.actions
        .iter()
        .map(|(a, p)| (*a, p.name.clone()))
        .collect()
}

#[test]
fn a_node_with_a_fresh_lease_is_left_alone_and_rechecked_when_it_would_go_stale() {
    let plan = plan_node(
        &node("True", 5, json!([])),
        Some(&lease(30)),
        at(45),
        at(0),
        &options(),
    );
    assert_eq!(plan.conditions, None);
    assert_eq!(plan.taints, None);
    assert_eq!(plan.readiness, Some(Readiness::Ready));
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(25)));
}

#[test]
fn the_newer_of_lease_and_status_heartbeat_counts() {
    let n = node("True", 30, json!([]));
    assert_eq!(last_heartbeat(&n, Some(&lease(10))), Some(at(30)));
    assert_eq!(last_heartbeat(&n, Some(&lease(50))), Some(at(50)));
    let plan = plan_node(&n, Some(&lease(10)), at(60), at(0), &options());
    assert_eq!(
        plan.conditions, None,
        "the status heartbeat at 30 s is still fresh"
    );
}

#[test]
fn a_stale_node_gets_unknown_conditions_and_unreachable_taints() {
    let n = node(
        "True",
        5,
        json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
    );
    let plan = plan_node(&n, Some(&lease(10)), at(50), at(0), &options());
    let conditions = plan.conditions.unwrap();
    assert_eq!(conditions.len(), 4);
    for c in &conditions {
        assert_eq!(c.status, "Unknown", "{}", c.type_);
        assert_eq!(c.reason.as_deref(), Some("NodeStatusUnknown"));
        assert_eq!(
            c.message.as_deref(),
            Some("Kubelet stopped posting node status.")
        );
        assert_eq!(c.last_transition_time, Some(kube_time(at(50))));
        assert_eq!(
            c.last_heartbeat_time,
            Some(kube_time(at(5))),
            "heartbeats stay"
        );
    }
    assert_eq!(plan.readiness, Some(Readiness::Unknown));
    assert_eq!(plan.recheck_after, None);
    let taints = plan.taints.unwrap();
    assert_eq!(taints.len(), 3);
    assert_eq!(taints[0].key, "dedicated", "other taints stay");
    assert_eq!(taints[1], taint(UNREACHABLE_TAINT, "NoSchedule", 50));
    assert_eq!(taints[2], taint(UNREACHABLE_TAINT, "NoExecute", 50));
}

#[test]
fn an_already_unknown_node_keeps_its_taint_times() {
    let taints = json!([
        {"key": UNREACHABLE_TAINT, "effect": "NoSchedule", "timeAdded": stamp(50)},
        {"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": stamp(50)},
    ]);
    let mut n = node("True", 5, taints);
    n.status.as_mut().unwrap().conditions = mark_unknown(&conditions_of(&n), at(50));
    let plan = plan_node(&n, Some(&lease(10)), at(90), at(0), &options());
    assert_eq!(
        plan,
        NodePlan {
            readiness: Some(Readiness::Unknown),
            ..NodePlan::default()
        }
    );
}

#[test]
fn a_node_reporting_not_ready_is_tainted_not_ready_instead() {
    let taints = json!([{"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": stamp(1)}]);
    let plan = plan_node(
        &node("False", 40, taints),
        Some(&lease(40)),
        at(45),
        at(0),
        &options(),
    );
    assert_eq!(plan.conditions, None);
    assert_eq!(plan.readiness, Some(Readiness::NotReady));
    assert_eq!(
        plan.taints.unwrap(),
        vec![
            taint(NOT_READY_TAINT, "NoSchedule", 45),
            taint(NOT_READY_TAINT, "NoExecute", 45)
        ]
    );
}

#[test]
fn a_ready_node_loses_the_lifecycle_taints_only() {
    let taints = json!([
        {"key": UNREACHABLE_TAINT, "effect": "NoSchedule", "timeAdded": stamp(1)},
        {"key": "dedicated", "effect": "NoExecute"},
        {"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": stamp(1)},
    ]);
    let plan = plan_node(
        &node("True", 40, taints),
        Some(&lease(40)),
        at(45),
        at(0),
        &options(),
    );
    let taints = plan.taints.unwrap();
    assert_eq!(taints.len(), 1);
    assert_eq!(taints[0].key, "dedicated");
}

#[test]
fn a_node_without_a_lease_is_not_judged_by_its_heartbeat() {
    let plan = plan_node(
        &node("True", 0, json!([])),
        None,
        at(1000),
        at(0),
        &options(),
    );
    assert_eq!(
        plan,
        NodePlan {
            readiness: Some(Readiness::Ready),
            ..NodePlan::default()
        }
    );
}

#[test]
fn missing_conditions_are_added_as_never_updated() {
    let n: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}})).unwrap();
    let plan = plan_node(&n, Some(&lease(0)), at(41), at(0), &options());
    let conditions = plan.conditions.unwrap();
    let kinds: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(kinds, MONITORED_CONDITIONS);
    assert!(
        conditions
            .iter()
            .all(|c| c.reason.as_deref() == Some("NodeStatusNeverUpdated")
                && c.message.as_deref() == Some("Kubelet never posted node status."))
    );
    assert_eq!(plan.readiness, Some(Readiness::Unknown));
}

#[test]
fn eviction_waits_for_the_shortest_matching_toleration_from_the_taint_time() {
    let taints = [(taint(UNREACHABLE_TAINT, "NoExecute", 10), at(10))];
    let tolerations: Vec<Toleration> = serde_json::from_value(json!([
        {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"operator": "Exists", "tolerationSeconds": 60},
        {"key": NOT_READY_TAINT, "operator": "Exists", "tolerationSeconds": 5},
    ]))
    .unwrap();
    assert_eq!(eviction_time(&tolerations, &taints), Eviction::At(at(70)));
    let forever: Vec<Toleration> =
        serde_json::from_value(json!([{"key": UNREACHABLE_TAINT, "operator": "Exists"}])).unwrap();
    assert_eq!(eviction_time(&forever, &taints), Eviction::Never);
    let other: Vec<Toleration> =
        serde_json::from_value(json!([{"key": NOT_READY_TAINT, "operator": "Exists"}])).unwrap();
    assert_eq!(eviction_time(&other, &taints), Eviction::At(at(10)));
    let negative: Vec<Toleration> = serde_json::from_value(
        json!([{"key": UNREACHABLE_TAINT, "operator": "Exists", "tolerationSeconds": -5}]),
    )
    .unwrap();
    assert_eq!(eviction_time(&negative, &taints), Eviction::At(at(10)));
}

#[test]
fn pods_on_an_unreachable_node_are_marked_not_ready_and_evicted_by_their_tolerations() {
    let taints = [(taint(UNREACHABLE_TAINT, "NoExecute", 10), at(10))];
    let pods = vec![
        pod("intolerant", json!([]), json!({})),
        pod("patient", default_tolerations(300), json!({})),
        pod("due", default_tolerations(5), json!({})),
        pod("forever", json!([{"operator": "Exists"}]), json!({})),
    ];
    let plan = plan_pods(Some(Readiness::Unknown), &taints, &pods, at(20));
    assert_eq!(
        actions(&plan),
        vec![
            (PodAction::MarkNotReady, "intolerant".to_string()),
            (PodAction::Evict, "intolerant".to_string()),
            (PodAction::MarkNotReady, "patient".to_string()),
            (PodAction::MarkNotReady, "due".to_string()),
            (PodAction::Evict, "due".to_string()),
            (PodAction::MarkNotReady, "forever".to_string()),
        ]
    );
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(290)));
}

#[test]
fn a_not_ready_node_evicts_without_touching_pod_readiness() {
    let taints = [(taint(NOT_READY_TAINT, "NoExecute", 10), at(10))];
    let pods = vec![pod("p", default_tolerations(5), json!({}))];
    let early = plan_pods(Some(Readiness::NotReady), &taints, &pods, at(12));
    assert!(early.actions.is_empty());
    assert_eq!(early.recheck_after, Some(Duration::from_secs(3)));
    let due = plan_pods(Some(Readiness::NotReady), &taints, &pods, at(15));
    assert_eq!(actions(&due), vec![(PodAction::Evict, "p".to_string())]);
}

#[test]
fn terminating_pods_on_an_unreachable_node_are_force_deleted_after_their_grace_period() {
    let pods = vec![pod(
        "going",
        json!([]),
        json!({"deletionTimestamp": stamp(30)}),
    )];
    let taints = [(taint(UNREACHABLE_TAINT, "NoExecute", 10), at(10))];
    let early = plan_pods(Some(Readiness::Unknown), &taints, &pods, at(20));
    assert!(
        early.actions.is_empty(),
        "no second eviction of a terminating pod"
    );
    assert_eq!(early.recheck_after, Some(Duration::from_secs(10)));
    let due = plan_pods(Some(Readiness::Unknown), &taints, &pods, at(30));
    assert_eq!(
        actions(&due),
        vec![(PodAction::ForceDelete, "going".to_string())]
    );
    let alive = plan_pods(Some(Readiness::Ready), &[], &pods, at(60));
    assert!(
        alive.actions.is_empty(),
        "the agent of a Ready node finishes the deletion"
    );
}

#[test]
fn pods_on_a_ready_node_without_taints_need_nothing() {
    let pods = vec![pod("p", json!([]), json!({}))];
    assert_eq!(
        plan_pods(Some(Readiness::Ready), &[], &pods, at(0)),
        PodsPlan::default()
    );
}

#[test]
fn heartbeats_count_from_the_controllers_start_at_the_earliest() {
    let n = node("True", 5, json!([]));
    let plan = plan_node(&n, Some(&lease(5)), at(100), at(90), &options());
    assert_eq!(
        plan.conditions, None,
        "the controller has watched for 10 s only"
    );
    assert_eq!(plan.recheck_after, Some(Duration::from_secs(30)));
    let plan = plan_node(&n, Some(&lease(5)), at(130), at(90), &options());
    assert!(plan.conditions.is_some());
}
