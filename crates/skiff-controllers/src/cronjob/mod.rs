//! The CronJob controller: creates a Job (`<cronjob>-<scheduled minute since the epoch>`)
//! for each scheduled time of a cron [`schedule`] in the CronJob's `timeZone`, honouring
//! `suspend`, `startingDeadlineSeconds` and `concurrencyPolicy` (Allow, Forbid, Replace),
//! keeps `successfulJobsHistoryLimit`/`failedJobsHistoryLimit` finished Jobs, and reports
//! `active`, `lastScheduleTime` and `lastSuccessfulTime`.
//!
//! [`decide`] is pure: (CronJob, its Jobs, now) -> [`Plan`]; [`reconcile`] applies it.

pub mod schedule;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::backoff::ItemBackoff;
use crate::informer::Informer;
use crate::util::{controller_of, controller_ref, is_conflict, is_not_found, key_of, record_event};
use crate::{ControllerError, Shutdown};
use schedule::{Schedule, time_zone};

/// The component name on events.
pub const COMPONENT: &str = "cronjob-controller";
/// The annotation on created Jobs holding their scheduled time.
pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// What one reconcile of a CronJob should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// A Job to create for this scheduled time.
    pub create: Option<Timestamp>,
    /// Jobs to delete (replaced or beyond the history limits).
    pub delete: Vec<String>,
    /// The status to report.
    pub status: CronJobStatus,
    /// Events to record (type, reason, message).
    pub events: Vec<(&'static str, &'static str, String)>,
    /// When to look again (the next scheduled time).
    pub requeue_after: Option<Duration>,
}

/// A Job's finished condition (`Complete` or `Failed`) and when, if it finished.
pub fn finished(job: &Job) -> Option<(&str, Option<Timestamp>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            (
                c.type_.as_str(),
                c.last_transition_time.as_ref().map(|t| t.0),
            )
        })
}

/// The name of the Job for `scheduled`: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cj: &CronJob, scheduled: Timestamp) -> String {
    format!("{}-{}", cj.name_any(), scheduled.as_second().div_euclid(60))
}

fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.namespace(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn to_duration(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or_default()
}

/// Decides for `cj` given the Jobs it controls, at `now`.
pub fn decide(cj: &CronJob, jobs: &[Arc<Job>], now: Timestamp) -> Plan {
    let spec = cj.spec.clone().unwrap_or_default();
    let previous = cj.status.clone().unwrap_or_default();
    let mut plan = Plan::default();
    let mut jobs: Vec<&Arc<Job>> = jobs.iter().collect();
    jobs.sort_by_key(|j| (j.metadata.creation_timestamp.clone(), j.name_any()));
    let active: Vec<&Arc<Job>> = jobs
        .iter()
        .copied()
        .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
        .collect();
    let last_success = jobs
        .iter()
        .filter_map(|j| match finished(j) {
            Some(("Complete", at)) => at,
            _ => None,
        })
        .max();
    let mut status = CronJobStatus {
        active: Some(active.iter().map(|j| reference(j)).collect::<Vec<_>>())
            .filter(|a| !a.is_empty()),
        last_schedule_time: previous.last_schedule_time.clone(),
        last_successful_time: last_success
            .map(Time)
            .or(previous.last_successful_time.clone()),
    };

    // History limits.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j).is_some_and(|(k, _)| k == kind))
            .filter(|j| j.metadata.deletion_timestamp.is_none())
            .collect();
        let extra = done
            .len()
            .saturating_sub(usize::try_from(limit.max(0)).unwrap_or(0));
        plan.delete
            .extend(done.iter().take(extra).map(|j| j.name_any()));
    }

    let parsed = Schedule::parse(&spec.schedule)
        .and_then(|s| time_zone(spec.time_zone.as_deref()).map(|tz| (s, tz)));
    let (sched, tz) = match parsed {
        Ok(p) => p,
        Err(e) => {
            plan.events
                .push(("Warning", "UnparseableSchedule", e.to_string()));
            plan.status = status;
            return plan;
        }
    };
    if spec.suspend == Some(true) || cj.metadata.deletion_timestamp.is_some() {
        plan.status = status;
        return plan;
    }
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let mut earliest = previous
        .last_schedule_time
        .as_ref()
        .map_or(created, |t| t.0);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let bound = now
            .checked_sub(jiff::SignedDuration::from_secs(deadline.max(0)))
            .unwrap_or(now);
        earliest = earliest.max(bound);
    }
    plan.requeue_after = sched
        .next_after(&tz, now)
        .map(|next| to_duration(now, next) + Duration::from_millis(100));
    let Some((scheduled, missed)) = sched.most_recent(&tz, earliest, now) else {
        plan.status = status;
        return plan;
    };
    if missed > 100 {
        plan.events.push((
            "Warning",
            "TooManyMissedTimes",
            format!("too many missed start times: {missed}; set or decrease .spec.startingDeadlineSeconds or check clock skew"),
        ));
    }
    let name = job_name(cj, scheduled);
    if jobs.iter().any(|j| j.name_any() == name) {
        // Already created (the status write may have been lost).
        status.last_schedule_time = Some(Time(scheduled));
        plan.status = status;
        return plan;
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !active.is_empty() {
        plan.events.push((
            "Normal",
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .into(),
        ));
        plan.status = status;
        return plan;
    }
    if policy == "Replace" {
        for job in &active {
            plan.delete.push(job.name_any());
            plan.events.push((
                "Normal",
                "SuccessfulDelete",
                format!("Deleted job {}", job.name_any()),
            ));
        }
        status.active = None;
    }
    plan.create = Some(scheduled);
    status.last_schedule_time = Some(Time(scheduled));
    plan.status = status;
    plan
}

/// The Job for `scheduled`: the job template, named [`job_name`], owned by the CronJob.
pub fn job_for(cj: &CronJob, scheduled: Timestamp) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_ANNOTATION.into(), scheduled.to_string());
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj, scheduled)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The shared state of the CronJob controller.
pub struct Context {
    client: Client,
    jobs: Store<Job>,
    backoff: Mutex<ItemBackoff>,
}

/// One reconcile of a CronJob.
pub async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = cj.namespace().unwrap_or_default();
    let key = key_of(cj.as_ref());
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let jobs = ctx.jobs.state_filter(|j| {
        j.metadata.namespace.as_deref() == Some(namespace.as_str())
            && controller_of(&j.metadata).is_some_and(|c| c.uid == uid)
    });
    let plan = decide(&cj, &jobs, Timestamp::now());
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    for name in &plan.delete {
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(ControllerError::api(&key, "delete a job", e)),
        }
    }
    if let Some(scheduled) = plan.create {
        match api
            .create(&PostParams::default(), &job_for(&cj, scheduled))
            .await
        {
            Ok(job) => {
                let message = format!("Created job {}", job.name_any());
                record_event(
                    &ctx.client,
                    COMPONENT,
                    cj.as_ref(),
                    "Normal",
                    "SuccessfulCreate",
                    &message,
                )
                .await;
            }
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(ControllerError::api(&key, "create a job", e)),
        }
    }
    for (type_, reason, message) in &plan.events {
        record_event(&ctx.client, COMPONENT, cj.as_ref(), type_, reason, message).await;
    }
    if cj.status.as_ref() != Some(&plan.status) {
        // Only the fields this controller owns, so a merge never clears others.
        let status = json!({
            "active": plan.status.active,
            "lastScheduleTime": plan.status.last_schedule_time,
            "lastSuccessfulTime": plan.status.last_successful_time,
        });
        let api = Api::<CronJob>::namespaced(ctx.client.clone(), &namespace);
        crate::util::patch_status(&api, &cj.name_any(), &key, &status).await?;
    }
    Ok(crate::util::succeeded(
        &ctx.backoff,
        &key,
        plan.requeue_after,
    ))
}

fn error_policy(cj: Arc<CronJob>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    crate::util::failed(&ctx.backoff, "cronjob", &key_of(cj.as_ref()), error)
}

/// Runs the CronJob controller until `shutdown`.
pub async fn run(client: Client, shutdown: Shutdown) {
    let jobs = Informer::spawn(Api::<Job>::all(client.clone()), watcher::Config::default());
    let ctx = Arc::new(Context {
        client: client.clone(),
        jobs: jobs.store(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    if jobs.store().wait_until_ready().await.is_err() {
        return;
    }
    Controller::new(Api::<CronJob>::all(client), watcher::Config::default())
        .owns_stream(jobs.subscribe())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests;
