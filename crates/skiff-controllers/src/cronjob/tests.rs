#![allow(clippy::unwrap_used)]

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn cronjob(extra: serde_json::Value) -> CronJob {
    let mut v = json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "tick", "namespace": "ns", "uid": "cj-uid",
            "creationTimestamp": "2025-01-01T00:00:00Z"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {
            "metadata": {"labels": {"app": "tick"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}}}}
    });
    if let serde_json::Value::Object(extra) = extra {
        for (k, val) in extra {
            v["spec"][k] = val;
        }
    }
    serde_json::from_value(v).unwrap()
}

fn job(name: &str, created: &str, state: Option<&str>) -> Arc<Job> {
    let conditions =
        state.map(|s| json!([{"type": s, "status": "True", "lastTransitionTime": created}]));
    Arc::new(
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("{name}-uid"),
                "creationTimestamp": created},
            "status": {"conditions": conditions},
        }))
        .unwrap(),
    )
}

#[test]
fn a_due_time_creates_a_named_job_and_records_it() {
    let cj = cronjob(json!({}));
    let plan = decide(&cj, &[], ts("2025-01-01T00:07:00Z"));
    assert_eq!(plan.create, Some(ts("2025-01-01T00:05:00Z")));
    assert_eq!(
        plan.status.last_schedule_time,
        Some(Time(ts("2025-01-01T00:05:00Z")))
    );
    assert_eq!(plan.requeue_after.unwrap().as_secs(), 180);
    let j = job_for(&cj, ts("2025-01-01T00:05:00Z"));
    assert_eq!(j.metadata.name.as_deref(), Some("tick-28928165"));
    assert_eq!(j.metadata.labels.unwrap()["app"], "tick");
    assert_eq!(j.metadata.owner_references.unwrap()[0].kind, "CronJob");
    assert!(
        j.metadata
            .annotations
            .unwrap()
            .contains_key(SCHEDULED_ANNOTATION)
    );
}

#[test]
fn nothing_due_waits_for_the_next_time() {
    let mut cj = cronjob(json!({}));
    cj.status = Some(CronJobStatus {
        last_schedule_time: Some(Time(ts("2025-01-01T00:05:00Z"))),
        ..CronJobStatus::default()
    });
    let plan = decide(&cj, &[], ts("2025-01-01T00:08:00Z"));
    assert_eq!(plan.create, None);
    assert_eq!(plan.requeue_after.unwrap().as_secs(), 120);
}

#[test]
fn an_existing_job_for_the_time_is_not_created_again() {
    let cj = cronjob(json!({}));
    let plan = decide(
        &cj,
        &[job("tick-28928165", "2025-01-01T00:05:01Z", None)],
        ts("2025-01-01T00:07:00Z"),
    );
    assert_eq!(plan.create, None);
    assert_eq!(plan.status.active.unwrap().len(), 1);
}

#[test]
fn suspend_stops_new_jobs() {
    let plan = decide(
        &cronjob(json!({"suspend": true})),
        &[],
        ts("2025-01-01T00:07:00Z"),
    );
    assert_eq!(plan.create, None);
}

#[test]
fn concurrency_policies() {
    let running = [job("tick-28928160", "2025-01-01T00:00:00Z", None)];
    let now = ts("2025-01-01T00:05:30Z");
    let mut cj = cronjob(json!({"concurrencyPolicy": "Forbid"}));
    cj.status = Some(CronJobStatus {
        last_schedule_time: Some(Time(ts("2025-01-01T00:00:00Z"))),
        ..CronJobStatus::default()
    });
    let plan = decide(&cj, &running, now);
    assert_eq!(plan.create, None);
    assert_eq!(plan.events[0].1, "JobAlreadyActive");
    cj.spec.as_mut().unwrap().concurrency_policy = Some("Replace".into());
    let plan = decide(&cj, &running, now);
    assert_eq!(plan.create, Some(ts("2025-01-01T00:05:00Z")));
    assert_eq!(plan.delete, vec!["tick-28928160"]);
    cj.spec.as_mut().unwrap().concurrency_policy = Some("Allow".into());
    let plan = decide(&cj, &running, now);
    assert_eq!(plan.create, Some(ts("2025-01-01T00:05:00Z")));
    assert!(plan.delete.is_empty());
}

#[test]
fn a_missed_start_beyond_the_deadline_is_skipped() {
    let cj = cronjob(json!({"startingDeadlineSeconds": 60}));
    let plan = decide(&cj, &[], ts("2025-01-01T00:07:00Z"));
    assert_eq!(plan.create, None, "00:05 is more than 60s ago");
    let plan = decide(&cj, &[], ts("2025-01-01T00:05:30Z"));
    assert_eq!(plan.create, Some(ts("2025-01-01T00:05:00Z")));
}

#[test]
fn history_limits_delete_the_oldest_finished_jobs() {
    let cj = cronjob(json!({"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0}));
    let jobs = [
        job("a", "2025-01-01T00:00:00Z", Some("Complete")),
        job("b", "2025-01-01T00:01:00Z", Some("Complete")),
        job("c", "2025-01-01T00:02:00Z", Some("Failed")),
    ];
    let mut cjs = cj.clone();
    cjs.spec.as_mut().unwrap().suspend = Some(true);
    let plan = decide(&cjs, &jobs, ts("2025-01-01T00:03:00Z"));
    assert_eq!(plan.delete, vec!["a", "c"]);
    assert_eq!(
        plan.status.last_successful_time,
        Some(Time(ts("2025-01-01T00:01:00Z")))
    );
    assert!(plan.status.active.is_none());
}

#[test]
fn time_zones_and_bad_schedules() {
    let cj = cronjob(json!({"schedule": "0 9 * * *", "timeZone": "+08:30"}));
    let plan = decide(&cj, &[], ts("2025-01-01T00:45:00Z"));
    assert_eq!(plan.create, Some(ts("2025-01-01T00:30:00Z")));
    let cj = cronjob(json!({"schedule": "nope"}));
    let plan = decide(&cj, &[], ts("2025-01-01T00:30:00Z"));
    assert_eq!(plan.create, None);
    assert_eq!(plan.events[0].1, "UnparseableSchedule");
}
