//! The Job controller: runs pods until `completions` succeed, at most `parallelism` at a time,
//! replacing failed ones until `backoffLimit` is passed or `activeDeadlineSeconds` runs out,
//! and reports `Complete` or `Failed` (after `SuccessCriteriaMet` / `FailureTarget`).
//!
//! [`decide`] is pure: (Job, its pods) -> [`Plan`]; [`reconcile`] applies it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::backoff::ItemBackoff;
use crate::expectations::Expectations;
use crate::informer::Informer;
use crate::replicaset::{create_pods, deletion_order};
use crate::util::{
    controller_of, controller_ref, is_not_found, key_of, pod_is_active, pod_is_ready, pod_phase,
    record_event,
};
use crate::{ControllerError, Shutdown};

/// The component name on events.
pub const COMPONENT: &str = "job-controller";

/// What one reconcile of a Job should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Pods to create.
    pub create: usize,
    /// Pods (name, uid) to delete.
    pub delete: Vec<(String, String)>,
    /// The status to report.
    pub status: JobStatus,
    /// When to look again (the active deadline).
    pub requeue_after: Option<Duration>,
}

fn is_finished(status: &JobStatus) -> bool {
    status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn condition(type_: &str, reason: &str, message: &str, now: &Time) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// Decides for `job` given the pods it controls. `manage` is false while earlier creations or
/// deletions are not yet in the cache.
pub fn decide(job: &Job, pods: &[Arc<Pod>], manage: bool, now: SystemTime) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let previous = job.status.clone().unwrap_or_default();
    let now_time = Time(k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or_default());
    let mut plan = Plan::default();
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| pod_is_active(p)).collect();
    let count = |phase: &str| pods.iter().filter(|p| pod_phase(p) == phase).count();
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let succeeded = as_i32(count("Succeeded")).max(previous.succeeded.unwrap_or(0));
    let failed = as_i32(count("Failed")).max(previous.failed.unwrap_or(0));
    let mut status = JobStatus {
        active: Some(as_i32(active.len())),
        succeeded: Some(succeeded),
        failed: Some(failed),
        ready: Some(as_i32(active.iter().filter(|p| pod_is_ready(p)).count())),
        start_time: previous
            .start_time
            .clone()
            .or_else(|| Some(now_time.clone())),
        completion_time: previous.completion_time.clone(),
        conditions: previous.conditions.clone(),
        terminating: Some(as_i32(
            pods.iter()
                .filter(|p| p.metadata.deletion_timestamp.is_some())
                .count(),
        )),
        ..previous.clone()
    };
    let delete_active = |plan: &mut Plan| {
        plan.delete = active
            .iter()
            .map(|p| (p.name_any(), p.metadata.uid.clone().unwrap_or_default()))
            .collect();
    };
    if is_finished(&previous) || job.metadata.deletion_timestamp.is_some() {
        if manage && !active.is_empty() && is_finished(&previous) {
            delete_active(&mut plan);
        }
        plan.status = status;
        return plan;
    }
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let started = status
        .start_time
        .as_ref()
        .map_or(now, |t| SystemTime::from(t.0));
    let deadline = spec
        .active_deadline_seconds
        .map(|s| started + Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0)));
    let failure = if failed > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline.is_some_and(|d| now >= d) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else {
        None
    };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some((reason, message)) = failure {
        conditions.push(condition("FailureTarget", reason, message, &now_time));
        conditions.push(condition("Failed", reason, message, &now_time));
        if manage {
            delete_active(&mut plan);
        }
        plan.status = status;
        return plan;
    }
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let done = match spec.completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };
    if done {
        let message = "Reached expected number of succeeded pods";
        conditions.push(condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            message,
            &now_time,
        ));
        conditions.push(condition(
            "Complete",
            "CompletionsReached",
            message,
            &now_time,
        ));
        status.completion_time = Some(now_time);
        plan.status = status;
        return plan;
    }
    let wanted = match spec.completions {
        Some(c) => parallelism.min(c - succeeded),
        None if succeeded > 0 => 0,
        None => parallelism,
    }
    .max(0);
    let wanted = usize::try_from(wanted).unwrap_or(0);
    if manage && spec.suspend != Some(true) {
        if active.len() < wanted {
            plan.create = wanted - active.len();
        } else if active.len() > wanted {
            let mut victims = active.clone();
            victims.sort_by(|a, b| deletion_order(a, b));
            plan.delete = victims
                .into_iter()
                .take(active.len() - wanted)
                .map(|p| (p.name_any(), p.metadata.uid.clone().unwrap_or_default()))
                .collect();
        }
    } else if manage && spec.suspend == Some(true) {
        delete_active(&mut plan);
    }
    plan.requeue_after = deadline.and_then(|d| d.duration_since(now).ok());
    plan.status = status;
    plan
}

/// The pod a Job creates: its template, labelled with the Job's name and uid.
pub fn pod_from_template(job: &Job) -> Pod {
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", uid.clone()),
        ("batch.kubernetes.io/job-name", job.name_any()),
        ("controller-uid", uid),
        ("job-name", job.name_any()),
    ] {
        labels.entry(k.to_string()).or_insert(v);
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", job.name_any())),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The shared state of the Job controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations,
    backoff: Mutex<ItemBackoff>,
}

/// One reconcile of a Job.
pub async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = job.namespace().unwrap_or_default();
    let key = key_of(job.as_ref());
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let pods = ctx.pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(namespace.as_str())
            && controller_of(&p.metadata).is_some_and(|c| c.uid == uid)
    });
    let manage = ctx.expectations.satisfied(
        &key,
        |name| {
            pods.iter()
                .any(|p| p.metadata.name.as_deref() == Some(name))
        },
        |uid| {
            !pods.iter().any(|p| {
                p.metadata.uid.as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none()
            })
        },
    );
    let plan = decide(&job, &pods, manage, SystemTime::now());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    if plan.create > 0 {
        let (created, failure) = create_pods(&api, &pod_from_template(&job), plan.create).await;
        ctx.expectations.expect(&key, created.iter().cloned(), []);
        for name in &created {
            record_event(
                &ctx.client,
                COMPONENT,
                job.as_ref(),
                "Normal",
                "SuccessfulCreate",
                &format!("Created pod: {name}"),
            )
            .await;
        }
        if let Some(e) = failure {
            return Err(ControllerError::api(&key, "create pods", e));
        }
    }
    if !plan.delete.is_empty() {
        ctx.expectations
            .expect(&key, [], plan.delete.iter().map(|(_, u)| u.clone()));
        for (name, _) in &plan.delete {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(ControllerError::api(&key, "delete pods", e)),
            }
        }
    }
    let newly_finished = is_finished(&plan.status) && !job.status.as_ref().is_some_and(is_finished);
    if job.status.as_ref() != Some(&plan.status) {
        let api = Api::<Job>::namespaced(ctx.client.clone(), &namespace);
        crate::util::patch_status(&api, &job.name_any(), &key, &plan.status).await?;
        if newly_finished {
            let complete = plan
                .status
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Complete");
            let (kind, reason) = if complete {
                ("Normal", "Completed")
            } else {
                ("Warning", "BackoffLimitExceeded")
            };
            let message = if complete {
                "Job completed"
            } else {
                "Job has reached the specified backoff limit"
            };
            record_event(&ctx.client, COMPONENT, job.as_ref(), kind, reason, message).await;
        }
    }
    Ok(crate::util::succeeded(
        &ctx.backoff,
        &key,
        plan.requeue_after,
    ))
}

fn error_policy(job: Arc<Job>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    crate::util::failed(&ctx.backoff, "job", &key_of(job.as_ref()), error)
}

/// Runs the Job controller until `shutdown`.
pub async fn run(client: Client, pods: &Informer<Pod>, shutdown: Shutdown) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.store(),
        expectations: Expectations::default(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    if pods.store().wait_until_ready().await.is_err() {
        return;
    }
    Controller::new(Api::<Job>::all(client), watcher::Config::default())
        .owns_stream(pods.subscribe())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
