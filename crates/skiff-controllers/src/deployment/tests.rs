//! The Deployment decision over hand-built ReplicaSets.

use std::sync::Arc;
use std::time::SystemTime;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use serde_json::{Value, json};

use super::rollout::{
    REVISION, Step, decide, new_replica_set, surge_and_unavailable, template_hash,
};

fn deployment(replicas: i32, image: &str, strategy: Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 2},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy,
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]}},
        },
    }))
    .unwrap()
}

/// The ReplicaSet the Deployment would make for `image`, with `replicas` all available.
fn replica_set(d: &Deployment, revision: i64, replicas: i32, available: i32) -> Arc<ReplicaSet> {
    let hash = template_hash(d.spec.as_ref().map(|s| &s.template), None);
    let mut rs = new_replica_set(d, &hash, revision, replicas);
    rs.metadata.uid = Some(format!("rs-{revision}"));
    rs.metadata.generation = Some(1);
    rs.status = Some(
        serde_json::from_value(json!({
            "replicas": replicas, "readyReplicas": available, "availableReplicas": available,
            "observedGeneration": 1,
        }))
        .unwrap(),
    );
    Arc::new(rs)
}

fn scales(steps: &[Step]) -> Vec<(String, i32)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Scale { name, replicas, .. } => Some((name.clone(), *replicas)),
            Step::Create(rs) => Some((
                format!("new:{}", rs.metadata.name.clone().unwrap()),
                rs.spec.as_ref().unwrap().replicas.unwrap(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn surge_and_unavailable_resolve_percentages_like_kubernetes() {
    let d = deployment(
        10,
        "a",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
    );
    assert_eq!(surge_and_unavailable(&d), (3, 2));
    let d = deployment(
        3,
        "a",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}),
    );
    assert_eq!(surge_and_unavailable(&d), (0, 1));
    assert_eq!(
        surge_and_unavailable(&deployment(3, "a", json!({"type": "Recreate"}))),
        (0, 0)
    );
}

#[test]
fn a_new_deployment_gets_a_replica_set_with_every_replica_at_revision_one() {
    let d = deployment(3, "a", json!({}));
    let plan = decide(&d, &[], &[], SystemTime::now());
    let Step::Create(rs) = &plan.steps[0] else {
        panic!("{:?}", plan.steps)
    };
    assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(rs.metadata.annotations.as_ref().unwrap()[REVISION], "1");
    let hash = &rs.metadata.labels.as_ref().unwrap()["pod-template-hash"];
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(
        rs.spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()["pod-template-hash"],
        *hash
    );
    let progressing = plan
        .status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetCreated"));
}

#[test]
fn a_rolling_update_surges_then_scales_old_down_within_max_unavailable() {
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    let old_d = deployment(4, "a", strategy.clone());
    let d = deployment(4, "b", strategy);
    let old = replica_set(&old_d, 1, 4, 4);
    // Step 1: the new ReplicaSet is created with the surge.
    let plan = decide(&d, &[Arc::clone(&old)], &[], SystemTime::now());
    let s = scales(&plan.steps);
    assert_eq!(s.len(), 1, "{s:?}");
    assert!(s[0].0.starts_with("new:") && s[0].1 == 1, "{s:?}");
    let Step::Create(new) = &plan.steps[0] else {
        panic!()
    };
    assert_eq!(new.metadata.annotations.as_ref().unwrap()[REVISION], "2");
    // Step 2: new has 1 (not yet available): old may lose max unavailable only.
    let mut new = (**new).clone();
    new.metadata.uid = Some("rs-2".into());
    new.status =
        Some(serde_json::from_value(json!({"replicas": 1, "availableReplicas": 0})).unwrap());
    let plan = decide(
        &d,
        &[Arc::clone(&old), Arc::new(new.clone())],
        &[],
        SystemTime::now(),
    );
    assert_eq!(
        scales(&plan.steps),
        [(old.metadata.name.clone().unwrap(), 3)]
    );
    let st = plan.status;
    assert_eq!(st.updated_replicas, Some(1));
    let progressing = st
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason.as_deref(), Some("ReplicaSetUpdated"));
}

#[test]
fn a_finished_rollout_reports_complete_and_keeps_only_the_history_limit() {
    let mut d = deployment(2, "c", json!({}));
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    let r1 = replica_set(&deployment(2, "a", json!({})), 1, 0, 0);
    let r2 = replica_set(&deployment(2, "b", json!({})), 2, 0, 0);
    let r3 = replica_set(&d, 3, 2, 2);
    let plan = decide(&d, &[r1.clone(), r2, r3.clone()], &[], SystemTime::now());
    assert!(
        plan.steps
            .contains(&Step::Delete(r1.metadata.name.clone().unwrap())),
        "{:?}",
        plan.steps
    );
    assert_eq!(plan.steps.len(), 1, "{:?}", plan.steps);
    let st = plan.status;
    assert_eq!(
        (st.replicas, st.updated_replicas, st.available_replicas),
        (Some(2), Some(2), Some(2))
    );
    assert_eq!(st.observed_generation, Some(2));
    let conds = st.conditions.unwrap();
    let get = |t: &str| {
        conds
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .reason
            .clone()
            .unwrap()
    };
    assert_eq!(get("Progressing"), "NewReplicaSetAvailable");
    assert_eq!(get("Available"), "MinimumReplicasAvailable");
}

#[test]
fn recreate_scales_old_to_zero_before_the_new_one_grows() {
    let strategy = json!({"type": "Recreate"});
    let old = replica_set(&deployment(3, "a", strategy.clone()), 1, 3, 3);
    let d = deployment(3, "b", strategy);
    let plan = decide(&d, &[Arc::clone(&old)], &[], SystemTime::now());
    let s = scales(&plan.steps);
    assert!(
        s.contains(&(old.metadata.name.clone().unwrap(), 0)),
        "{s:?}"
    );
    assert!(
        s.iter().any(|(n, r)| n.starts_with("new:") && *r == 0),
        "{s:?}"
    );
}

#[test]
fn a_paused_deployment_makes_no_new_replica_set_but_still_scales() {
    let mut d = deployment(5, "b", json!({}));
    d.spec.as_mut().unwrap().paused = Some(true);
    let old = replica_set(&deployment(3, "a", json!({})), 1, 3, 3);
    let plan = decide(&d, &[Arc::clone(&old)], &[], SystemTime::now());
    assert_eq!(
        scales(&plan.steps),
        [(old.metadata.name.clone().unwrap(), 5)]
    );
    let progressing = plan
        .status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(progressing.reason.as_deref(), Some("DeploymentPaused"));
}

#[test]
fn rolling_back_reuses_the_old_replica_set_with_a_new_revision() {
    let a = deployment(2, "a", json!({}));
    let r1 = replica_set(&a, 1, 0, 0);
    let r2 = replica_set(&deployment(2, "b", json!({})), 2, 2, 2);
    let plan = decide(&a, &[r1.clone(), r2], &[], SystemTime::now());
    let bumped = plan.steps.iter().any(|s| {
        matches!(s,
        Step::Scale { name, annotations, .. } if *name == r1.metadata.name.clone().unwrap()
            && annotations.get(REVISION).map(String::as_str) == Some("3"))
    });
    assert!(bumped, "{:?}", plan.steps);
}
