#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;

fn pdb(spec: serde_json::Value, status: serde_json::Value) -> PodDisruptionBudget {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "ns", "generation": 3},
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

fn pod(name: &str, ready: bool, extra: serde_json::Value) -> Arc<Pod> {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "ns", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": "Running", "conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    });
    if let (Some(meta), Some(more)) = (v["metadata"].as_object_mut(), extra.as_object()) {
        for (k, val) in more {
            meta.insert(k.clone(), val.clone());
        }
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

fn at(secs_ago: u64) -> String {
    let t = SystemTime::now() - Duration::from_secs(secs_ago);
    k8s_openapi::jiff::Timestamp::try_from(t)
        .unwrap()
        .to_string()
}

#[test]
fn selectors_nil_selects_nothing_and_empty_selects_the_namespace() {
    let pods = vec![
        pod("a", true, json!({})),
        pod("b", true, json!({"labels": {"app": "db"}})),
        pod("c", true, json!({"namespace": "other"})),
    ];
    let none = pdb(json!({"minAvailable": 1}), json!({}));
    assert!(selected(&none, &pods).is_empty());
    let all = pdb(json!({"minAvailable": 1, "selector": {}}), json!({}));
    assert_eq!(selected(&all, &pods).len(), 2);
    let web = pdb(
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
        json!({}),
    );
    let names: Vec<String> = selected(&web, &pods).iter().map(|p| p.name_any()).collect();
    assert_eq!(names, ["a"]);
}

#[test]
fn percentages_round_up() {
    assert_eq!(scaled(&IntOrString::String("50%".into()), 3), Some(2));
    assert_eq!(scaled(&IntOrString::String("34%".into()), 3), Some(2));
    assert_eq!(scaled(&IntOrString::String("0%".into()), 3), Some(0));
    assert_eq!(scaled(&IntOrString::Int(2), 10), Some(2));
    assert_eq!(scaled(&IntOrString::String("x".into()), 3), None);
}

#[test]
fn expected_and_desired_follow_the_kind_of_budget() {
    let min_int = pdb(json!({"minAvailable": 2}), json!({}));
    assert!(!needs_controller_scale(&min_int));
    assert_eq!(expected_and_desired(&min_int, 3, 0), (3, 2));
    let min_pct = pdb(json!({"minAvailable": "50%"}), json!({}));
    assert!(needs_controller_scale(&min_pct));
    assert_eq!(expected_and_desired(&min_pct, 2, 5), (5, 3));
    let max_int = pdb(json!({"maxUnavailable": 1}), json!({}));
    assert_eq!(expected_and_desired(&max_int, 2, 4), (4, 3));
    let max_pct = pdb(json!({"maxUnavailable": "100%"}), json!({}));
    assert_eq!(expected_and_desired(&max_pct, 2, 4), (4, 0));
}

#[test]
fn status_counts_ready_pods_and_allows_the_surplus() {
    let budget = pdb(
        json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}),
        json!({}),
    );
    let pods = [
        pod("a", true, json!({})),
        pod("b", true, json!({})),
        pod("c", true, json!({})),
        pod("d", false, json!({})),
    ];
    let refs: Vec<&Arc<Pod>> = pods.iter().collect();
    let (status, expiry) = desired_status(&budget, &refs, Some(0), SystemTime::now());
    assert_eq!(status.current_healthy, 3);
    assert_eq!(status.desired_healthy, 2);
    assert_eq!(status.expected_pods, 4);
    assert_eq!(status.disruptions_allowed, 1);
    assert_eq!(status.observed_generation, Some(3));
    let condition = &status.conditions.unwrap()[0];
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "SufficientPods")
    );
    assert!(expiry.is_none());
}

#[test]
fn evicted_pods_do_not_count_until_they_go_or_the_eviction_lapses() {
    let budget = pdb(
        json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
        json!({"disruptedPods": {"a": at(5), "b": at(600), "gone": at(1)}}),
    );
    let pods = [pod("a", true, json!({})), pod("b", true, json!({}))];
    let refs: Vec<&Arc<Pod>> = pods.iter().collect();
    let (status, expiry) = desired_status(&budget, &refs, Some(0), SystemTime::now());
    // a: evicted 5 s ago, still there: not healthy; b: its eviction lapsed; gone: dropped.
    let disrupted = status.disrupted_pods.clone().unwrap();
    assert_eq!(disrupted.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(status.current_healthy, 1);
    assert_eq!(status.disruptions_allowed, 0);
    let condition = &status.conditions.unwrap()[0];
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "InsufficientPods")
    );
    let left = expiry.unwrap();
    assert!(left > Duration::from_secs(100) && left <= Duration::from_secs(115));
}

#[test]
fn terminating_pods_are_not_healthy_and_unknown_scale_allows_nothing() {
    let budget = pdb(
        json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}),
        json!({}),
    );
    let pods = [
        pod("a", true, json!({"deletionTimestamp": at(1)})),
        pod("b", true, json!({})),
    ];
    let refs: Vec<&Arc<Pod>> = pods.iter().collect();
    let (status, _) = desired_status(&budget, &refs, Some(2), SystemTime::now());
    assert_eq!(
        (
            status.current_healthy,
            status.desired_healthy,
            status.disruptions_allowed
        ),
        (1, 1, 0)
    );
    let (status, _) = desired_status(&budget, &refs, None, SystemTime::now());
    assert_eq!(status.disruptions_allowed, 0);
    assert_eq!(status.conditions.unwrap()[0].reason, "SyncFailed");
}

#[test]
fn only_the_transition_time_is_ignored_when_comparing() {
    let budget = pdb(json!({"minAvailable": 0, "selector": {}}), json!({}));
    let pods = [pod("a", true, json!({}))];
    let refs: Vec<&Arc<Pod>> = pods.iter().collect();
    let (first, _) = desired_status(&budget, &refs, Some(0), SystemTime::now());
    let mut later = first.clone();
    for c in later.conditions.iter_mut().flatten() {
        c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    }
    assert!(!differs(Some(&first), &later));
    later.disruptions_allowed = 5;
    assert!(differs(Some(&first), &later));
    assert!(differs(None, &first));
}
