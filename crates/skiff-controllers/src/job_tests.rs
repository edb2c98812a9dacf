#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::{Value, json};

fn job(spec: Value, status: Value) -> Job {
    let mut v = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "work", "namespace": "ns", "uid": "job-uid"},
        "spec": {
            "template": {"metadata": {"labels": {"app": "work"}},
                "spec": {"restartPolicy": "Never", "subdomain": "svc",
                    "containers": [{"name": "c", "image": "busybox"}],
                    "initContainers": [{"name": "i", "image": "busybox",
                        "env": [{"name": "JOB_COMPLETION_INDEX", "value": "mine"}]}]}},
        },
        "status": status,
    });
    if let Value::Object(extra) = spec {
        for (k, val) in extra {
            v["spec"][k] = val;
        }
    }
    serde_json::from_value(v).unwrap()
}

fn indexed(completions: i32, parallelism: i32) -> Job {
    job(
        json!({"completionMode": "Indexed", "completions": completions,
            "parallelism": parallelism}),
        json!({}),
    )
}

fn pod(name: &str, index: Option<i32>, phase: &str) -> Arc<Pod> {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
            "finalizers": [crate::job_tracking::TRACKING_FINALIZER]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase},
    });
    if let Some(i) = index {
        v["metadata"]["annotations"] = json!({COMPLETION_INDEX: i.to_string()});
    }
    Arc::new(serde_json::from_value(v).unwrap())
}

/// Two rounds, as the controller runs them once the first one's status is written: finished
/// pods are recorded as uncounted and released, then (seen without the finalizer) counted.
fn decide_counted(job: &Job, pods: &[Arc<Pod>], manage: bool, now: SystemTime) -> Plan {
    let first = decide(job, pods, manage, now);
    let mut next = job.clone();
    next.status = Some(first.status.clone());
    let released: Vec<Arc<Pod>> = pods
        .iter()
        .map(|p| {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            if first.release.iter().any(|(_, u)| *u == uid) {
                let mut p = (**p).clone();
                p.metadata.finalizers = None;
                Arc::new(p)
            } else {
                Arc::clone(p)
            }
        })
        .collect();
    decide(&next, &released, manage, now)
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

#[test]
fn completed_indexes_are_written_as_ranges() {
    let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
    assert_eq!(format_indexes(&set(&[])), "");
    assert_eq!(format_indexes(&set(&[0, 1, 2])), "0-2");
    assert_eq!(format_indexes(&set(&[0, 1, 2, 4])), "0-2,4");
    assert_eq!(format_indexes(&set(&[1, 3, 4, 7])), "1,3-4,7");
    assert_eq!(parse_indexes("0-2,4"), set(&[0, 1, 2, 4]));
    assert_eq!(parse_indexes("1,3-4,x,7"), set(&[1, 3, 4, 7]));
}

#[test]
fn an_indexed_job_creates_the_lowest_missing_indexes_up_to_parallelism() {
    let plan = decide_counted(&indexed(3, 2), &[], true, at(0));
    assert_eq!(plan.create_indexes, [0, 1]);
    assert_eq!(plan.create, 2);
    let pods = [
        pod("w0", Some(0), "Succeeded"),
        pod("w1", Some(1), "Running"),
    ];
    let plan = decide_counted(&indexed(3, 2), &pods, true, at(1));
    assert_eq!(plan.create_indexes, [2]);
    assert_eq!(plan.status.succeeded, Some(1));
    assert_eq!(plan.status.completed_indexes.as_deref(), Some("0"));
    assert!(plan.delete.is_empty());
}

#[test]
fn a_failed_index_is_retried_and_each_index_completes_once() {
    let pods = [
        pod("w0", Some(0), "Failed"),
        pod("w1", Some(1), "Succeeded"),
        pod("w1b", Some(1), "Succeeded"),
    ];
    let plan = decide_counted(&indexed(3, 3), &pods, true, at(0));
    assert_eq!(plan.create_indexes, [0, 2]);
    assert_eq!(plan.status.succeeded, Some(1), "index 1 counts once");
    assert_eq!(plan.status.failed, Some(1));
}

#[test]
fn duplicate_and_already_completed_indexes_are_deleted() {
    let pods = [
        pod("w0", Some(0), "Succeeded"),
        pod("w0b", Some(0), "Running"),
        pod("w1", Some(1), "Running"),
        pod("w1b", Some(1), "Pending"),
        pod("stray", None, "Running"),
    ];
    let plan = decide_counted(&indexed(3, 3), &pods, true, at(0));
    let mut deleted: Vec<&str> = plan.delete.iter().map(|(n, _)| n.as_str()).collect();
    deleted.sort_unstable();
    assert_eq!(deleted, ["stray", "w0b", "w1b"]);
    assert_eq!(plan.create_indexes, [2]);
}

#[test]
fn an_indexed_job_is_complete_when_every_index_succeeded() {
    let pods = [
        pod("w0", Some(0), "Succeeded"),
        pod("w2", Some(2), "Succeeded"),
    ];
    let mut j = indexed(3, 2);
    j.status = Some(JobStatus {
        completed_indexes: Some("1".into()),
        ..JobStatus::default()
    });
    let plan = decide_counted(&j, &pods, true, at(5));
    assert_eq!(plan.status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(plan.status.succeeded, Some(3));
    assert!(is_finished(&plan.status));
    assert!(plan.create_indexes.is_empty() && plan.create == 0);
    assert_eq!(finish_time(&plan.status), Some(at(5)));
}

#[test]
fn a_non_indexed_job_is_unchanged() {
    let j = job(json!({"completions": 3, "parallelism": 2}), json!({}));
    let plan = decide_counted(&j, &[pod("a", None, "Succeeded")], true, at(0));
    assert_eq!(plan.create, 2);
    assert!(plan.create_indexes.is_empty());
    assert_eq!(plan.status.completed_indexes, None);
}

#[test]
fn the_index_pod_carries_index_hostname_env_and_name() {
    let p = pod_for_index(&indexed(3, 2), 2);
    assert_eq!(p.metadata.generate_name.as_deref(), Some("work-2-"));
    assert_eq!(p.annotations().get(COMPLETION_INDEX).unwrap(), "2");
    assert_eq!(p.labels().get(COMPLETION_INDEX).unwrap(), "2");
    assert_eq!(p.labels().get("job-name").unwrap(), "work");
    let spec = p.spec.unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("work-2"));
    assert_eq!(spec.subdomain.as_deref(), Some("svc"));
    let env = &spec.containers[0].env.as_ref().unwrap()[0];
    assert_eq!(env.name, COMPLETION_INDEX_ENV);
    assert_eq!(
        env.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );
    let init_env = spec.init_containers.unwrap()[0].env.clone().unwrap();
    assert_eq!(init_env.len(), 1, "a variable the template sets is kept");
    let long = "j".repeat(70);
    assert_eq!(
        indexed_generate_name(&long, 12),
        format!("{}-12-", "j".repeat(54))
    );
}

#[test]
fn a_finished_job_expires_ttl_seconds_after_it_finished() {
    let done = |ttl: Value| {
        job(
            json!({"ttlSecondsAfterFinished": ttl}),
            json!({"completionTime": "2027-01-15T08:00:00Z", "conditions": [
                {"type": "Complete", "status": "True",
                    "lastTransitionTime": "2027-01-15T08:00:00Z"}]}),
        )
    };
    let finished = SystemTime::from(
        "2027-01-15T08:00:00Z"
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap(),
    );
    let j = done(json!(10));
    let status = j.status.clone().unwrap();
    assert_eq!(
        ttl_left(&j, &status, finished + Duration::from_secs(4)),
        Some(Duration::from_secs(6))
    );
    assert_eq!(
        ttl_left(&j, &status, finished + Duration::from_secs(11)),
        Some(Duration::ZERO)
    );
    let zero = done(json!(0));
    assert_eq!(
        ttl_left(&zero, &zero.status.clone().unwrap(), finished),
        Some(Duration::ZERO)
    );
    let none = done(Value::Null);
    assert_eq!(
        ttl_left(&none, &none.status.clone().unwrap(), finished),
        None
    );
    let running = job(json!({"ttlSecondsAfterFinished": 0}), json!({}));
    assert_eq!(ttl_left(&running, &JobStatus::default(), finished), None);
    let failed = job(
        json!({"ttlSecondsAfterFinished": 5}),
        json!({"conditions": [{"type": "Failed", "status": "True",
            "lastTransitionTime": "2027-01-15T08:00:00Z"}]}),
    );
    assert_eq!(
        ttl_left(&failed, &failed.status.clone().unwrap(), finished),
        Some(Duration::from_secs(5))
    );
}

fn with_annotation(pod: Arc<Pod>, key: &str, value: &str) -> Arc<Pod> {
    let mut pod = (*pod).clone();
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
    Arc::new(pod)
}

fn per_index(completions: i32, limit: i32, max_failed: Option<i32>, status: Value) -> Job {
    job(
        json!({"completionMode": "Indexed", "completions": completions,
            "parallelism": completions, "backoffLimitPerIndex": limit,
            "maxFailedIndexes": max_failed}),
        status,
    )
}

fn reason_of(plan: &Plan, type_: &str) -> Option<String> {
    plan.status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == type_)
        .and_then(|c| c.reason.clone())
}

#[test]
fn a_failed_index_is_retried_with_its_failure_count_until_it_passes_its_limit() {
    use crate::job_policy::INDEX_FAILURE_COUNT;
    let first = pod("w1a", Some(1), "Failed");
    let pods = [pod("w0", Some(0), "Running"), first.clone()];
    let plan = decide_counted(&per_index(2, 1, None, json!({})), &pods, true, at(1));
    assert_eq!(plan.create_indexes, [1], "index 1 is retried");
    assert_eq!(plan.index_failures.get(&1), Some(&1));
    assert_eq!(plan.status.failed_indexes.as_deref(), Some(""));
    assert_eq!(reason_of(&plan, "Failed"), None);

    // The retry fails too: its count was 1, so index 1 has failed twice, over the limit of 1.
    let second = with_annotation(pod("w1b", Some(1), "Failed"), INDEX_FAILURE_COUNT, "1");
    let pods = [pod("w0", Some(0), "Running"), first, second];
    let plan = decide_counted(&per_index(2, 1, None, json!({})), &pods, true, at(2));
    assert!(plan.create_indexes.is_empty(), "{:?}", plan.create_indexes);
    assert_eq!(plan.status.failed_indexes.as_deref(), Some("1"));
    assert_eq!(plan.status.failed, Some(2));
    assert_eq!(reason_of(&plan, "Failed"), None, "index 0 still runs");

    // Once index 0 succeeds every index is finished, one failed: the Job fails.
    let pods = [pod("w0", Some(0), "Succeeded")];
    let status = json!({"failedIndexes": "1", "failed": 2});
    let plan = decide_counted(&per_index(2, 1, None, status), &pods, true, at(3));
    assert_eq!(
        reason_of(&plan, "FailureTarget").as_deref(),
        Some("FailedIndexes")
    );
    assert_eq!(reason_of(&plan, "Failed").as_deref(), Some("FailedIndexes"));
    assert_eq!(plan.status.completed_indexes.as_deref(), Some("0"));
}

#[test]
fn more_failed_indexes_than_max_failed_indexes_fail_the_job_at_once() {
    let pods = [
        pod("w0", Some(0), "Failed"),
        pod("w1", Some(1), "Failed"),
        pod("w2", Some(2), "Running"),
    ];
    let plan = decide_counted(&per_index(4, 0, Some(1), json!({})), &pods, true, at(1));
    assert_eq!(plan.status.failed_indexes.as_deref(), Some("0-1"));
    assert_eq!(
        reason_of(&plan, "FailureTarget").as_deref(),
        Some("MaxFailedIndexesExceeded")
    );
    assert_eq!(reason_of(&plan, "Failed"), None, "w2 still runs");
    assert_eq!(plan.delete, [("w2".to_string(), "uid-w2".to_string())]);
    // Once w2 is gone, the Job is Failed with the FailureTarget's reason.
    let status = serde_json::to_value(&plan.status).unwrap();
    let plan = decide_counted(&per_index(4, 0, Some(1), status), &pods[..2], true, at(2));
    assert_eq!(
        reason_of(&plan, "Failed").as_deref(),
        Some("MaxFailedIndexesExceeded")
    );
    // Within the maximum, the other indexes go on and the global backoffLimit is not used.
    let plan = decide_counted(&per_index(4, 0, Some(2), json!({})), &pods, true, at(1));
    assert_eq!(reason_of(&plan, "Failed"), None);
    assert_eq!(plan.create_indexes, [3]);
}

#[test]
fn a_met_success_policy_completes_the_job_and_ends_the_other_pods() {
    let policy = |rules: Value| {
        job(
            json!({"completionMode": "Indexed", "completions": 4, "parallelism": 4,
                "successPolicy": {"rules": rules}}),
            json!({}),
        )
    };
    let pods = [
        pod("w0", Some(0), "Succeeded"),
        pod("w1", Some(1), "Running"),
        pod("w2", Some(2), "Succeeded"),
        pod("w3", Some(3), "Running"),
    ];
    let plan = decide_counted(
        &policy(json!([{"succeededIndexes": "0-1"}])),
        &pods,
        true,
        at(1),
    );
    assert_eq!(reason_of(&plan, "Complete"), None, "index 1 still runs");
    let plan = decide_counted(
        &policy(
            json!([{"succeededIndexes": "0-1"}, {"succeededIndexes": "1-3", "succeededCount": 1}]),
        ),
        &pods,
        true,
        at(1),
    );
    assert_eq!(
        reason_of(&plan, "SuccessCriteriaMet").as_deref(),
        Some("SuccessPolicy")
    );
    assert_eq!(reason_of(&plan, "Complete"), None, "w1 and w3 still run");
    assert!(plan.status.completion_time.is_none());
    let mut deleted: Vec<String> = plan.delete.iter().map(|(n, _)| n.clone()).collect();
    deleted.sort();
    assert_eq!(deleted, ["w1", "w3"]);
    // Once they are gone: Complete, with the SuccessCriteriaMet condition's reason and message.
    let rules =
        json!([{"succeededIndexes": "0-1"}, {"succeededIndexes": "1-3", "succeededCount": 1}]);
    let mut next = policy(rules);
    next.status = Some(plan.status.clone());
    let plan = decide_counted(&next, &[pods[0].clone(), pods[2].clone()], true, at(2));
    let complete = plan
        .status
        .conditions
        .as_deref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert_eq!(complete.reason.as_deref(), Some("SuccessPolicy"));
    assert_eq!(
        complete.message.as_deref(),
        Some("Matched rules at index 1")
    );
    assert!(plan.status.completion_time.is_some());
    let finished = [pods[0].clone(), pods[2].clone()];
    let plan = decide_counted(
        &policy(json!([{"succeededCount": 2}])),
        &finished,
        true,
        at(1),
    );
    assert_eq!(
        reason_of(&plan, "Complete").as_deref(),
        Some("SuccessPolicy")
    );
}

fn exited(name: &str, index: Option<i32>, container: &str, code: i32) -> Arc<Pod> {
    let mut pod = (*pod(name, index, "Failed")).clone();
    pod.status = Some(
        serde_json::from_value(json!({"phase": "Failed", "containerStatuses": [
            {"name": container, "image": "busybox", "imageID": "", "ready": false,
             "restartCount": 0, "state": {"terminated": {"exitCode": code}}}]}))
        .unwrap(),
    );
    Arc::new(pod)
}

fn with_failure_policy(rules: Value, extra: Value) -> Job {
    let mut spec = json!({"completions": 2, "parallelism": 2, "backoffLimit": 0,
        "podFailurePolicy": {"rules": rules}});
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            spec[k] = v;
        }
    }
    job(spec, json!({}))
}

#[test]
fn pod_failure_policy_rules_fail_the_job_ignore_or_count_by_exit_code_and_condition() {
    let rules = json!([
        {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [42]}},
    ]);
    let job = with_failure_policy(rules, json!({}));
    let plan = decide_counted(&job, &[exited("p1", None, "c", 42)], true, at(1));
    assert_eq!(
        reason_of(&plan, "FailureTarget").as_deref(),
        Some("PodFailurePolicy")
    );
    let failed = plan
        .status
        .conditions
        .as_deref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(
        failed.message.as_deref(),
        Some("Container c for pod ns/p1 failed with exit code 42 matching FailJob rule at index 0")
    );
    // Exit code 42 in another container matches no rule: counted, past backoffLimit 0.
    let other = decide_counted(&job, &[exited("p1", None, "d", 42)], true, at(1));
    assert_eq!(
        reason_of(&other, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
    assert_eq!(other.status.failed, Some(1));
    // A disrupted pod is ignored: not counted against backoffLimit 0, and replaced.
    let mut disrupted = (*pod("p2", None, "Failed")).clone();
    disrupted.status = Some(
        serde_json::from_value(json!({"phase": "Failed", "conditions": [
            {"type": "DisruptionTarget", "status": "True"}]}))
        .unwrap(),
    );
    let plan = decide_counted(&job, &[Arc::new(disrupted)], true, at(1));
    assert_eq!(reason_of(&plan, "Failed"), None);
    assert_eq!(plan.status.failed, Some(0));
    assert_eq!(plan.create, 2);
    // Counted: exit code 1 is NotIn [42], past backoffLimit 0.
    let plan = decide_counted(&job, &[exited("p3", None, "c", 1)], true, at(1));
    assert_eq!(
        reason_of(&plan, "Failed").as_deref(),
        Some("BackoffLimitExceeded")
    );
}

#[test]
fn a_fail_index_rule_fails_the_index_without_retries() {
    let rules = json!([{"action": "FailIndex",
        "onExitCodes": {"operator": "In", "values": [3]}}]);
    let job = with_failure_policy(
        rules,
        json!({"completionMode": "Indexed", "backoffLimitPerIndex": 5, "backoffLimit": null}),
    );
    let pods = [exited("w0", Some(0), "c", 3), pod("w1", Some(1), "Running")];
    let plan = decide_counted(&job, &pods, true, at(1));
    assert_eq!(plan.status.failed_indexes.as_deref(), Some("0"));
    assert!(plan.create_indexes.is_empty(), "{:?}", plan.create_indexes);
    let pods = [exited("w0", Some(0), "c", 4), pod("w1", Some(1), "Running")];
    let plan = decide_counted(&job, &pods, true, at(1));
    assert_eq!(plan.status.failed_indexes.as_deref(), Some(""));
    assert_eq!(plan.create_indexes, [0], "another exit code is retried");
}

/// A pod of `phase` that finished at `finished` (its container's `finishedAt`).
fn finished_pod(name: &str, index: Option<i32>, phase: &str, finished: SystemTime) -> Arc<Pod> {
    let mut p = (*pod(name, index, phase)).clone();
    let at = k8s_openapi::jiff::Timestamp::try_from(finished)
        .unwrap()
        .to_string();
    p.status = Some(
        serde_json::from_value(json!({"phase": phase, "containerStatuses": [{
            "name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "finishedAt": at}}}]}))
        .unwrap(),
    );
    Arc::new(p)
}

#[test]
fn a_failed_pod_is_replaced_after_the_failure_back_off() {
    let job = job(
        json!({"completions": 1, "parallelism": 1, "backoffLimit": 6}),
        json!({}),
    );
    let failed = [finished_pod("a", None, "Failed", at(100))];
    // 3 s after the failure: nothing is created, and the Job is looked at again 7 s later.
    let plan = decide_counted(&job, &failed, true, at(103));
    assert_eq!(plan.create, 0);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(7)));
    // 10 s after it: the replacement.
    assert_eq!(decide_counted(&job, &failed, true, at(110)).create, 1);
    // A second failure in a row doubles the wait to 20 s.
    let twice = [
        finished_pod("a", None, "Failed", at(100)),
        finished_pod("b", None, "Failed", at(120)),
    ];
    let plan = decide_counted(&job, &twice, true, at(130));
    assert_eq!(
        (plan.create, plan.requeue_after),
        (0, Some(Duration::from_secs(10)))
    );
    assert_eq!(decide_counted(&job, &twice, true, at(140)).create, 1);
}

#[test]
fn with_a_per_index_limit_only_the_failing_index_waits() {
    let job = job(
        json!({"completionMode": "Indexed", "completions": 2, "parallelism": 2,
            "backoffLimitPerIndex": 3}),
        json!({}),
    );
    let pods = [finished_pod("a", Some(0), "Failed", at(100))];
    let plan = decide_counted(&job, &pods, true, at(105));
    assert_eq!(plan.create_indexes, vec![1]);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(5)));
    assert_eq!(
        decide_counted(&job, &pods, true, at(111)).create_indexes,
        vec![0, 1]
    );
}
