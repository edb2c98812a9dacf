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
        "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": phase},
    });
    if let Some(i) = index {
        v["metadata"]["annotations"] = json!({COMPLETION_INDEX: i.to_string()});
    }
    Arc::new(serde_json::from_value(v).unwrap())
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
    let plan = decide(&indexed(3, 2), &[], true, at(0));
    assert_eq!(plan.create_indexes, [0, 1]);
    assert_eq!(plan.create, 2);
    let pods = [
        pod("w0", Some(0), "Succeeded"),
        pod("w1", Some(1), "Running"),
    ];
    let plan = decide(&indexed(3, 2), &pods, true, at(1));
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
    let plan = decide(&indexed(3, 3), &pods, true, at(0));
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
    let plan = decide(&indexed(3, 3), &pods, true, at(0));
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
    let plan = decide(&j, &pods, true, at(5));
    assert_eq!(plan.status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(plan.status.succeeded, Some(3));
    assert!(is_finished(&plan.status));
    assert!(plan.create_indexes.is_empty() && plan.create == 0);
    assert_eq!(finish_time(&plan.status), Some(at(5)));
}

#[test]
fn a_non_indexed_job_is_unchanged() {
    let j = job(json!({"completions": 3, "parallelism": 2}), json!({}));
    let plan = decide(&j, &[pod("a", None, "Succeeded")], true, at(0));
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
