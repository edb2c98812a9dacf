#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::*;
use crate::job::{decide, pod_from_template};

fn job(extra: Value, status: Value) -> Job {
    let mut v = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "work", "namespace": "ns", "uid": "job-uid"},
        "spec": {"completions": 1, "parallelism": 1,
            "template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}},
        "status": status,
    });
    if let Value::Object(extra) = extra {
        for (k, val) in extra {
            v["spec"][k] = val;
        }
    }
    serde_json::from_value(v).unwrap()
}

fn pod(name: &str, phase: &str, tracked: bool, deleting: bool) -> Arc<Pod> {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase},
    });
    if tracked {
        v["metadata"]["finalizers"] = json!([TRACKING_FINALIZER]);
    }
    if deleting {
        v["metadata"]["deletionTimestamp"] = json!("2027-01-15T08:00:00Z");
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn has(status: &JobStatus, type_: &str) -> bool {
    has_condition(status, &[type_])
}

fn uncounted(status: &JobStatus) -> (Vec<String>, Vec<String>) {
    uncounted_of(status)
}

fn with_status(job: &Job, status: &JobStatus) -> Job {
    let mut j = job.clone();
    j.status = Some(status.clone());
    j
}

#[test]
fn the_pods_of_a_job_carry_the_tracking_finalizer() {
    let p = pod_from_template(&job(json!({}), json!({})));
    assert_eq!(
        p.metadata.finalizers.as_deref(),
        Some(&[TRACKING_FINALIZER.to_string()][..])
    );
}

#[test]
fn a_succeeded_pod_is_recorded_then_released_then_counted_once() {
    let j = job(json!({}), json!({}));
    let done = pod("w1", "Succeeded", true, false);
    // 1: recorded as uncounted, its finalizer may go; Complete waits.
    let plan = decide(&j, std::slice::from_ref(&done), true, at(0));
    assert_eq!(uncounted(&plan.status).0, ["uid-w1"]);
    assert_eq!(plan.status.succeeded, Some(0));
    assert_eq!(plan.release, [("w1".to_string(), "uid-w1".to_string())]);
    assert!(has(&plan.status, "SuccessCriteriaMet"));
    assert!(
        !has(&plan.status, "Complete"),
        "nothing finishes while uncounted"
    );
    assert!(plan.status.completion_time.is_none());
    assert_eq!(plan.create, 0);
    // The same pod still carrying the finalizer (cache lag): nothing changes twice.
    let j1 = with_status(&j, &plan.status);
    let again = decide(&j1, std::slice::from_ref(&done), true, at(1));
    assert_eq!(uncounted(&again.status).0, ["uid-w1"]);
    assert_eq!(again.status.succeeded, Some(0));
    assert!(!has(&again.status, "Complete"));
    // 2: the pod lost the finalizer (or is gone): counted, and the Job completes.
    for pods in [vec![pod("w1", "Succeeded", false, false)], vec![]] {
        let plan2 = decide(&j1, &pods, true, at(2));
        assert_eq!(plan2.status.succeeded, Some(1));
        assert!(uncounted(&plan2.status).0.is_empty());
        assert!(has(&plan2.status, "Complete"));
        assert!(plan2.status.completion_time.is_some());
        assert!(plan2.release.is_empty());
        assert_eq!(plan2.create, 0, "a deleted succeeded pod is not replaced");
        // 3: an untracked pod is never counted again.
        let j2 = with_status(&j, &plan2.status);
        let plan3 = decide(&j2, &pods, true, at(3));
        assert_eq!(plan3.status.succeeded, Some(1));
        assert_eq!(plan3.status, j2.status.clone().unwrap());
    }
}

#[test]
fn a_running_pod_keeps_its_finalizer() {
    let j = job(json!({"completions": 2}), json!({}));
    let plan = decide(&j, &[pod("w1", "Running", true, false)], true, at(0));
    assert!(plan.release.is_empty());
    assert_eq!(plan.status.active, Some(1));
    assert_eq!(plan.status.terminating, Some(0));
}

#[test]
fn a_pod_deleted_while_running_counts_as_failed_and_is_replaced() {
    let j = job(json!({}), json!({}));
    let going = pod("w1", "Running", true, true);
    let plan = decide(&j, std::slice::from_ref(&going), true, at(0));
    assert_eq!(uncounted(&plan.status).1, ["uid-w1"]);
    assert_eq!(plan.release.len(), 1);
    assert_eq!(plan.status.terminating, Some(1));
    assert_eq!(plan.create, 1, "TerminatingOrFailed replaces it at once");
    let j1 = with_status(&j, &plan.status);
    let plan = decide(&j1, &[], true, at(1));
    assert_eq!(plan.status.failed, Some(1));
    assert!(uncounted(&plan.status).1.is_empty());
}

#[test]
fn replacement_policy_failed_waits_for_the_terminating_pod_to_fail() {
    let j = job(json!({"podReplacementPolicy": "Failed"}), json!({}));
    let going = pod("w1", "Running", true, true);
    let plan = decide(&j, &[going], true, at(0));
    assert_eq!(plan.create, 0, "no replacement while it terminates");
    assert_eq!(plan.status.terminating, Some(1));
    assert_eq!(plan.status.active, Some(0));
    assert!(plan.release.is_empty(), "not failed yet: not counted");
    assert_eq!(plan.status.failed, Some(0));
    let failed = pod("w1", "Failed", true, true);
    let plan = decide(&j, &[failed], true, at(1));
    assert_eq!(plan.create, 1);
    assert_eq!(plan.status.terminating, Some(0));
    assert_eq!(uncounted(&plan.status).1, ["uid-w1"]);
    assert_eq!(plan.release.len(), 1);
}

#[test]
fn a_pod_failure_policy_implies_replacement_only_once_failed() {
    let policy = json!({"rules": [{"action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget"}]}]});
    let j = job(json!({"podFailurePolicy": policy}), json!({}));
    assert!(only_replace_failed(&j));
    let plan = decide(&j, &[pod("w1", "Running", true, true)], true, at(0));
    assert_eq!(plan.create, 0);
    assert_eq!(plan.status.terminating, Some(1));
}

#[test]
fn a_failed_job_counts_and_releases_its_remaining_pods() {
    let j = job(
        json!({"completions": 3, "parallelism": 2, "backoffLimit": 0}),
        json!({}),
    );
    let pods = [
        pod("w1", "Failed", true, false),
        pod("w2", "Running", true, false),
    ];
    let plan = decide(&j, &pods, true, at(0));
    assert!(has(&plan.status, "FailureTarget"));
    assert!(!has(&plan.status, "Failed"));
    assert_eq!(plan.delete, [("w2".to_string(), "uid-w2".to_string())]);
    let mut failed = uncounted(&plan.status).1;
    failed.sort();
    assert_eq!(
        failed,
        ["uid-w1", "uid-w2"],
        "running pods of a failed job fail"
    );
    assert_eq!(plan.release.len(), 2);
    let j1 = with_status(&j, &plan.status);
    let plan = decide(&j1, &[], true, at(1));
    assert_eq!(plan.status.failed, Some(2));
    assert!(has(&plan.status, "Failed"));
}

#[test]
fn a_deleted_job_releases_every_pod() {
    let mut j = job(json!({"completions": 2}), json!({}));
    j.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
    ));
    let plan = decide(&j, &[pod("w1", "Running", true, false)], true, at(0));
    assert_eq!(plan.release.len(), 1);
    assert!(
        uncounted(&plan.status).1.is_empty(),
        "a running pod is not a failure"
    );
}

#[test]
fn an_indexed_success_is_recorded_as_its_index() {
    let j = job(
        json!({"completionMode": "Indexed", "completions": 2}),
        json!({}),
    );
    let mut p = (*pod("w0", "Succeeded", true, false)).clone();
    p.metadata.annotations = Some(
        [(crate::job::COMPLETION_INDEX.to_string(), "0".to_string())]
            .into_iter()
            .collect(),
    );
    let plan = decide(&j, &[Arc::new(p)], true, at(0));
    assert_eq!(plan.status.completed_indexes.as_deref(), Some("0"));
    assert_eq!(plan.status.succeeded, Some(1));
    assert!(uncounted(&plan.status).0.is_empty());
    assert_eq!(plan.release.len(), 1);
    assert_eq!(plan.create_indexes, [1]);
}

#[test]
fn orphans_are_pods_without_a_job_in_the_cache() {
    let (store, _writer) = kube::runtime::reflector::store::<Job>();
    let mut p = (*pod("w1", "Running", true, false)).clone();
    assert_eq!(is_orphan(&p, &store), Some(true), "no controller at all");
    p.metadata.owner_references = Some(vec![crate::util::controller_ref(&job(
        json!({}),
        json!({}),
    ))]);
    assert_eq!(is_orphan(&p, &store), Some(true), "its job is gone");
    p.metadata.owner_references.as_mut().unwrap()[0].kind = "ReplicaSet".into();
    p.metadata.owner_references.as_mut().unwrap()[0].api_version = "apps/v1".into();
    assert_eq!(
        is_orphan(&p, &store),
        Some(false),
        "another controller's pod"
    );
}
