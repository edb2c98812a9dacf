#![allow(clippy::unwrap_used)]

use super::*;

fn set(replicas: i32, extra: serde_json::Value) -> StatefulSet {
    let mut v = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "ns", "uid": "set-uid", "generation": 2},
        "spec": {
            "replicas": replicas, "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
        }
    });
    if let (Some(spec), serde_json::Value::Object(extra)) = (v["spec"].as_object_mut(), extra) {
        spec.extend(extra);
    }
    serde_json::from_value(v).unwrap()
}

/// A pod of `s` at its current template, Running and Ready or not.
fn pod(s: &StatefulSet, ordinal: i32, ready: bool) -> Arc<Pod> {
    let mut p = pod_for(s, ordinal);
    p.metadata.uid = Some(format!("uid-{ordinal}"));
    let status = if ready { "True" } else { "False" };
    p.status = Some(
        serde_json::from_value(json!({"phase": "Running",
            "conditions": [{"type": "Ready", "status": status}]}))
        .unwrap(),
    );
    Arc::new(p)
}

fn names(plan: &Plan) -> Vec<String> {
    plan.delete.iter().map(|(n, _)| n.clone()).collect()
}

#[test]
fn ordinals_parse_strictly() {
    assert_eq!(ordinal_of("web", "web-0"), Some(0));
    assert_eq!(ordinal_of("web", "web-12"), Some(12));
    assert_eq!(ordinal_of("web", "web-01"), None);
    assert_eq!(ordinal_of("web", "web-x"), None);
    assert_eq!(ordinal_of("web", "webby-1"), None);
}

#[test]
fn ordered_ready_creates_one_at_a_time_waiting_for_readiness() {
    let s = set(3, json!({}));
    assert_eq!(decide(&s, &[], &[], true).create, vec![0]);
    assert!(
        decide(&s, &[pod(&s, 0, false)], &[], true)
            .create
            .is_empty(),
        "web-0 not ready yet"
    );
    assert_eq!(decide(&s, &[pod(&s, 0, true)], &[], true).create, vec![1]);
    assert!(
        decide(&s, &[], &[], false).create.is_empty(),
        "expectations pending"
    );
}

#[test]
fn parallel_creates_all_missing_and_removes_all_extra() {
    let s = set(3, json!({"podManagementPolicy": "Parallel"}));
    let plan = decide(&s, &[pod(&s, 1, false)], &[], true);
    assert_eq!(plan.create, vec![0, 2]);
    let s = set(1, json!({"podManagementPolicy": "Parallel"}));
    let pods = [pod(&s, 0, true), pod(&s, 1, false), pod(&s, 2, false)];
    assert_eq!(names(&decide(&s, &pods, &[], true)), vec!["web-2", "web-1"]);
}

#[test]
fn ordered_scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
    let s = set(1, json!({}));
    let pods = [pod(&s, 0, true), pod(&s, 1, true), pod(&s, 2, true)];
    assert_eq!(names(&decide(&s, &pods, &[], true)), vec!["web-2"]);
    let mut dying = (*pod(&s, 2, true)).clone();
    dying.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    let pods = [pod(&s, 0, true), pod(&s, 1, true), Arc::new(dying)];
    assert!(
        decide(&s, &pods, &[], true).delete.is_empty(),
        "waits for web-2 to go"
    );
}

#[test]
fn pods_get_hostname_subdomain_labels_and_claims() {
    let s = set(
        2,
        json!({"volumeClaimTemplates": [{"metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}}}]}),
    );
    let p = pod_for(&s, 1);
    let spec = p.spec.clone().unwrap();
    assert_eq!(p.metadata.name.as_deref(), Some("web-1"));
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    let labels = p.metadata.labels.clone().unwrap();
    assert_eq!(labels[POD_NAME_LABEL], "web-1");
    assert_eq!(labels[POD_INDEX_LABEL], "1");
    assert_eq!(labels[REVISION_LABEL], update_revision(&s));
    let volume = &spec.volumes.unwrap()[0];
    assert_eq!(volume.name, "data");
    assert_eq!(
        volume.persistent_volume_claim.as_ref().unwrap().claim_name,
        "data-web-1"
    );
    let plan = decide(&s, &[], &[], true);
    assert_eq!(plan.claims, vec!["data-web-0"]);
    let plan = decide(&s, &[], &["data-web-0".to_string()], true);
    assert!(plan.claims.is_empty(), "existing claims are reused");
    let claim = claim_for(&s, "data-web-0").unwrap();
    assert_eq!(claim.metadata.labels.unwrap()["app"], "web");
    assert!(
        claim.metadata.owner_references.is_none(),
        "claims are retained"
    );
}

#[test]
fn status_counts_ready_current_and_updated_replicas() {
    let s = set(2, json!({}));
    let plan = decide(&s, &[pod(&s, 0, true), pod(&s, 1, false)], &[], true);
    let st = plan.status;
    assert_eq!(st.replicas, 2);
    assert_eq!(st.ready_replicas, Some(1));
    assert_eq!(st.updated_replicas, Some(2));
    assert_eq!(st.current_replicas, Some(2));
    assert_eq!(st.current_revision, st.update_revision);
    assert_eq!(st.observed_generation, Some(2));
}

#[test]
fn rolling_update_replaces_from_the_highest_ordinal_down_to_the_partition() {
    let old = set(3, json!({}));
    let pods = [pod(&old, 0, true), pod(&old, 1, true), pod(&old, 2, true)];
    let mut new = set(
        3,
        json!({"template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}),
    );
    new.status = Some(StatefulSetStatus {
        current_revision: Some(update_revision(&old)),
        ..StatefulSetStatus::default()
    });
    let plan = decide(&new, &pods, &[], true);
    assert_eq!(names(&plan), vec!["web-2"]);
    assert_eq!(plan.status.updated_replicas, Some(0));
    assert_eq!(plan.status.current_revision, Some(update_revision(&old)));
    let pods = [pod(&old, 0, true), pod(&old, 1, true), pod(&new, 2, true)];
    assert_eq!(names(&decide(&new, &pods, &[], true)), vec!["web-1"]);
    new.spec.as_mut().unwrap().update_strategy =
        serde_json::from_value(json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}))
            .unwrap();
    assert!(
        decide(&new, &pods, &[], true).delete.is_empty(),
        "ordinals below the partition stay"
    );
    new.spec.as_mut().unwrap().update_strategy =
        serde_json::from_value(json!({"type": "OnDelete"})).unwrap();
    assert!(
        decide(
            &new,
            &[pod(&old, 0, true), pod(&old, 1, true), pod(&old, 2, true)],
            &[],
            true
        )
        .delete
        .is_empty()
    );
}

#[test]
fn finished_pods_are_replaced() {
    let s = set(1, json!({}));
    let mut p = (*pod(&s, 0, false)).clone();
    p.status.as_mut().unwrap().phase = Some("Failed".into());
    assert_eq!(names(&decide(&s, &[Arc::new(p)], &[], true)), vec!["web-0"]);
}

#[test]
fn pods_below_the_partition_are_recreated_at_the_current_revision() {
    let old = set(3, json!({}));
    let mut new = set(
        3,
        json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
            "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:2"}]}}}),
    );
    new.status = Some(StatefulSetStatus {
        current_revision: Some(update_revision(&old)),
        ..StatefulSetStatus::default()
    });
    let pods = [pod(&old, 1, true), pod(&new, 2, true)];
    let plan = decide(&new, &pods, &[], true);
    assert_eq!(plan.create, vec![0]);
    assert_eq!(plan.at_current, vec![0]);
    let template = old.spec.clone().unwrap().template;
    let p = pod_at(&new, 0, &template, &update_revision(&old));
    assert_eq!(
        p.metadata.labels.unwrap()[REVISION_LABEL],
        update_revision(&old)
    );
    assert_eq!(
        p.spec.unwrap().containers[0].image.as_deref(),
        Some("nginx")
    );
}
