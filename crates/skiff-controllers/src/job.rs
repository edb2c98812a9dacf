//! The Job controller: runs pods until `completions` succeed, at most `parallelism` at a time,
//! replacing failed ones until `backoffLimit` is passed or `activeDeadlineSeconds` runs out,
//! and reports `Complete` or `Failed`: first `SuccessCriteriaMet` / `FailureTarget` while the
//! remaining pods are deleted, then the final condition (same reason) once none runs or
//! terminates, as kube-controller-manager 1.31+ does. Pods are counted through the
//! `batch.kubernetes.io/job-tracking` finalizer ([`crate::job_tracking`]); a pod deleted while
//! it runs is replaced at once, or with `podReplacementPolicy: Failed` only once it failed.
//!
//! `completionMode: Indexed` Jobs run one pod per completion index `0..completions` (the
//! `batch.kubernetes.io/job-completion-index` annotation and label, `JOB_COMPLETION_INDEX`,
//! hostname `<job>-<index>`, pod names `<job>-<index>-<random>`), each index succeeding once,
//! reported in `status.completedIndexes` (`"0-2,4"`); `backoffLimitPerIndex`,
//! `maxFailedIndexes` and `successPolicy` are decided in [`crate::job_policy`] (reasons
//! `FailedIndexes`, `MaxFailedIndexesExceeded`, `SuccessPolicy`). A finished Job with
//! `ttlSecondsAfterFinished` is deleted (its pods in background cascading) that long after it
//! finished, as the TTL-after-finished controller does.
//!
//! [`decide`] is pure: (Job, its pods) -> [`Plan`]; [`reconcile`] applies it; [`ttl_left`]
//! says when a finished Job expires.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::backoff::ItemBackoff;
use crate::expectations::Expectations;
use crate::informer::Informer;
use crate::job_backoff;
use crate::job_policy;
use crate::job_tracking;
use crate::replicaset::{create_pods, deletion_order};
use crate::util::{
    controller_of, controller_ref, is_conflict, is_not_found, key_of, pod_is_active,
    pod_is_finished, pod_is_ready, pod_phase, record_event,
};
use crate::{ControllerError, Shutdown};

/// The component name on events.
pub const COMPONENT: &str = "job-controller";
/// The annotation and label holding an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The environment variable holding an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// What one reconcile of a Job should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Pods to create.
    pub create: usize,
    /// For an Indexed Job, the completion indexes of the pods to create (`create` of them).
    pub create_indexes: Vec<i32>,
    /// For an Indexed Job with `backoffLimitPerIndex`, the failures so far of each index
    /// (the new pods' `batch.kubernetes.io/job-index-failure-count`).
    pub index_failures: BTreeMap<i32, i32>,
    /// Pods (name, uid) to delete.
    pub delete: Vec<(String, String)>,
    /// Pods (name, uid) whose `batch.kubernetes.io/job-tracking` finalizer goes once
    /// `status` is written (they are counted there).
    pub release: Vec<(String, String)>,
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

/// Whether the Job runs in `completionMode: Indexed`.
pub fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

/// The completion index of an Indexed Job's pod (annotation, else label).
pub fn pod_index(pod: &Pod) -> Option<i32> {
    let meta = &pod.metadata;
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| meta.labels.as_ref().and_then(|l| l.get(COMPLETION_INDEX)))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|i| *i >= 0)
}

/// Indexes as `status.completedIndexes` writes them: ascending, runs as `first-last`
/// (`"0-2,4"`).
pub fn format_indexes(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    let flush = |parts: &mut Vec<String>, (first, last): (i32, i32)| {
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
    };
    for &i in indexes {
        run = match run {
            Some((first, last)) if last.checked_add(1) == Some(i) => Some((first, i)),
            Some(r) => {
                flush(&mut parts, r);
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some(r) = run {
        flush(&mut parts, r);
    }
    parts.join(",")
}

/// Parses `status.completedIndexes`; malformed parts are skipped.
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let range = match part.split_once('-') {
            Some((a, b)) => a.parse::<i32>().ok().zip(b.parse::<i32>().ok()),
            None => part.parse::<i32>().ok().map(|i| (i, i)),
        };
        if let Some((first, last)) = range
            && first >= 0
            && last >= first
        {
            out.extend(first..=last);
        }
    }
    out
}

/// When a finished Job finished: its completion time, else when its `Complete` or `Failed`
/// condition became true.
pub fn finish_time(status: &JobStatus) -> Option<SystemTime> {
    let condition = status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let when = status
        .completion_time
        .as_ref()
        .filter(|_| condition.type_ == "Complete")
        .or(condition.last_transition_time.as_ref())?;
    Some(SystemTime::from(when.0))
}

/// For a finished Job with `ttlSecondsAfterFinished`, how long until it is to be deleted
/// (zero once due); `None` for a running Job or one without a TTL.
pub fn ttl_left(job: &Job, status: &JobStatus, now: SystemTime) -> Option<Duration> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = finish_time(status)?;
    let due = finished + Duration::from_secs(u64::try_from(ttl.max(0)).unwrap_or(0));
    Some(due.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What an Indexed Job's pods say: the indexes that succeeded (with those already reported),
/// and the active pods to keep per index; active pods of an invalid, completed, failed or
/// duplicated index go in `extra`.
struct IndexedPods<'a> {
    completed: BTreeSet<i32>,
    active: BTreeMap<i32, &'a Arc<Pod>>,
    extra: Vec<&'a Arc<Pod>>,
    /// Indexes whose pod terminates and is not replaced before it failed.
    terminating: BTreeSet<i32>,
}

fn indexed_pods<'a>(
    pods: &'a [Arc<Pod>],
    completions: i32,
    previous: &JobStatus,
    failed: &BTreeSet<i32>,
    wait_for_terminating: bool,
) -> IndexedPods<'a> {
    let valid = |i: &i32| (0..completions).contains(i);
    let mut completed: BTreeSet<i32> =
        parse_indexes(previous.completed_indexes.as_deref().unwrap_or_default())
            .into_iter()
            .filter(valid)
            .collect();
    completed.extend(
        pods.iter()
            .filter(|p| pod_phase(p) == "Succeeded")
            .filter_map(|p| pod_index(p))
            .filter(valid),
    );
    let mut by_index: BTreeMap<i32, Vec<&Arc<Pod>>> = BTreeMap::new();
    let mut extra = Vec::new();
    for p in pods.iter().filter(|p| pod_is_active(p)) {
        match pod_index(p).filter(|i| valid(i) && !completed.contains(i) && !failed.contains(i)) {
            Some(i) => by_index.entry(i).or_default().push(p),
            None => extra.push(p),
        }
    }
    let mut active = BTreeMap::new();
    for (i, mut group) in by_index {
        // Keep the pod furthest along; the rest are duplicates.
        group.sort_by(|a, b| deletion_order(a, b));
        if let Some(keep) = group.pop() {
            active.insert(i, keep);
        }
        extra.extend(group);
    }
    let terminating = pods
        .iter()
        .filter(|p| wait_for_terminating && job_tracking::is_terminating(p))
        .filter_map(|p| pod_index(p))
        .filter(|i| valid(i) && !active.contains_key(i))
        .collect();
    IndexedPods {
        completed,
        active,
        extra,
        terminating,
    }
}

fn name_uid(p: &Pod) -> (String, String) {
    (p.name_any(), p.metadata.uid.clone().unwrap_or_default())
}

/// Decides for `job` given the pods it controls. `manage` is false while earlier creations or
/// deletions are not yet in the cache. Finished pods are counted through their finalizers
/// ([`crate::job_tracking`]).
pub fn decide(job: &Job, pods: &[Arc<Pod>], manage: bool, now: SystemTime) -> Plan {
    let previous = job.status.clone().unwrap_or_default();
    let counts = job_tracking::counts(job, pods, &previous);
    let mut plan = plan_job(job, pods, manage, now, counts);
    plan.release = job_tracking::settle(job, pods, &previous, &mut plan.status);
    plan
}

fn plan_job(
    job: &Job,
    pods: &[Arc<Pod>],
    manage: bool,
    now: SystemTime,
    counts: job_tracking::Counts,
) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let previous = job.status.clone().unwrap_or_default();
    let now_time = Time(k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or_default());
    let mut plan = Plan::default();
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| pod_is_active(p)).collect();
    let terminating: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| job_tracking::is_terminating(p))
        .collect();
    // With `podReplacementPolicy: Failed`, a terminating pod is replaced only once it failed.
    let blocking = if job_tracking::only_replace_failed(job) {
        terminating.len()
    } else {
        0
    };
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let completions = spec.completions.unwrap_or(0).max(0);
    let per_index_limit = spec.backoff_limit_per_index.filter(|_| is_indexed(job));
    if per_index_limit.is_some() {
        plan.index_failures = job_policy::index_failure_counts(job, pods, completions);
    }
    let mut failed_indexes = per_index_limit.map_or_else(BTreeSet::new, |limit| {
        let mut failed = job_policy::failed_indexes(
            &plan.index_failures,
            limit,
            previous.failed_indexes.as_deref(),
            completions,
        );
        failed.extend(job_policy::indexes_failed_by_policy(job, pods, completions));
        failed
    });
    let indexed = is_indexed(job).then(|| {
        indexed_pods(
            pods,
            completions,
            &previous,
            &failed_indexes,
            job_tracking::only_replace_failed(job),
        )
    });
    if let Some(ix) = &indexed {
        failed_indexes.retain(|i| !ix.completed.contains(i));
    }
    let succeeded = match &indexed {
        Some(ix) => as_i32(ix.completed.len()),
        None => counts.succeeded,
    };
    // Failures a podFailurePolicy `Ignore` rule matches are not counted.
    let failed = counts.failed;
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
        terminating: Some(as_i32(terminating.len())),
        ..previous.clone()
    };
    if let Some(ix) = &indexed {
        status.completed_indexes = Some(format_indexes(&ix.completed)).filter(|s| !s.is_empty());
    }
    if per_index_limit.is_some() {
        status.failed_indexes = Some(format_indexes(&failed_indexes));
    }
    let delete_active = |plan: &mut Plan| {
        plan.delete = active.iter().map(|p| name_uid(p)).collect();
    };
    if is_finished(&previous) || job.metadata.deletion_timestamp.is_some() {
        if manage && !active.is_empty() && is_finished(&previous) {
            delete_active(&mut plan);
        }
        plan.status = status;
        return plan;
    }
    // As kube-controller-manager 1.31+: `FailureTarget` / `SuccessCriteriaMet` first, the
    // remaining pods deleted, then `Failed` / `Complete` once none runs or terminates.
    let settled = active.is_empty()
        && !pods
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some() && !pod_is_finished(p));
    let interim = previous
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| {
            (c.type_ == "FailureTarget" || c.type_ == "SuccessCriteriaMet") && c.status == "True"
        })
        .cloned();
    if let Some(target) = interim {
        if manage {
            delete_active(&mut plan);
        }
        if settled {
            let terminal = if target.type_ == "FailureTarget" {
                "Failed"
            } else {
                status.completion_time = Some(now_time.clone());
                "Complete"
            };
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .push(condition(
                    terminal,
                    target.reason.as_deref().unwrap_or_default(),
                    target.message.as_deref().unwrap_or_default(),
                    &now_time,
                ));
        }
        plan.status = status;
        return plan;
    }
    // With backoffLimitPerIndex, backoffLimit defaults to "no limit" (as the API server does).
    let backoff_limit = spec.backoff_limit.unwrap_or(if per_index_limit.is_some() {
        i32::MAX
    } else {
        6
    });
    let failed_index_count = as_i32(failed_indexes.len());
    let started = status
        .start_time
        .as_ref()
        .map_or(now, |t| SystemTime::from(t.0));
    let deadline = spec
        .active_deadline_seconds
        .map(|s| started + Duration::from_secs(u64::try_from(s.max(0)).unwrap_or(0)));
    let policy_failure = job_policy::job_failed_by_policy(job, pods);
    let failure = if let Some(message) = &policy_failure {
        Some(("PodFailurePolicy", message.as_str()))
    } else if failed > backoff_limit {
        Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ))
    } else if deadline.is_some_and(|d| now >= d) {
        Some((
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        ))
    } else if spec
        .max_failed_indexes
        .is_some_and(|max| failed_index_count > max)
    {
        Some((
            "MaxFailedIndexesExceeded",
            "Job has exceeded the specified maximal number of failed indexes",
        ))
    } else if failed_index_count > 0 && failed_index_count.saturating_add(succeeded) >= completions
    {
        Some(("FailedIndexes", "Job has failed indexes"))
    } else {
        None
    };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some((reason, message)) = failure {
        conditions.push(condition("FailureTarget", reason, message, &now_time));
        if settled {
            conditions.push(condition("Failed", reason, message, &now_time));
        }
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
    let rule_met = indexed
        .as_ref()
        .and_then(|ix| job_policy::success_rule_met(job, &ix.completed));
    if done || rule_met.is_some() {
        let (reason, message) = match rule_met.filter(|_| !done) {
            Some(rule) => ("SuccessPolicy", format!("Matched rules at index {rule}")),
            None => (
                "CompletionsReached",
                "Reached expected number of succeeded pods".to_string(),
            ),
        };
        conditions.push(condition("SuccessCriteriaMet", reason, &message, &now_time));
        if settled {
            conditions.push(condition("Complete", reason, &message, &now_time));
            status.completion_time = Some(now_time);
        }
        if manage {
            // Pods still running: of indexes that already succeeded, or past a success policy.
            delete_active(&mut plan);
        }
        plan.status = status;
        return plan;
    }
    let wanted = match spec.completions {
        Some(c) => parallelism.min(c - succeeded - failed_index_count),
        None if succeeded > 0 => 0,
        None => parallelism,
    }
    .max(0);
    let wanted = usize::try_from(wanted).unwrap_or(0);
    // Replacements of failed pods wait out the failure back-off: per index with
    // `backoffLimitPerIndex`, else for the whole Job.
    let mut backoff_wait: Option<Duration> = None;
    let job_backoff = if per_index_limit.is_some() {
        None
    } else {
        job_backoff::remaining(&job_backoff::record(pods.iter().map(|p| p.as_ref())), now)
    };
    if manage && spec.suspend == Some(true) {
        delete_active(&mut plan);
    } else if manage && let Some(ix) = &indexed {
        plan.delete = ix.extra.iter().map(|p| name_uid(p)).collect();
        let kept = ix.active.len() + ix.terminating.len();
        if kept < wanted && job_backoff.is_some() {
            backoff_wait = job_backoff;
        } else if kept < wanted {
            // Each index's back-off, from one pass over the pods.
            let waits: BTreeMap<i32, Duration> = if per_index_limit.is_some() {
                job_backoff::remaining_by_index(pods.iter().map(|p| p.as_ref()), now)
            } else {
                BTreeMap::new()
            };
            let mut index_wait = |i: i32| {
                let wait = *waits.get(&i)?;
                backoff_wait = Some(backoff_wait.map_or(wait, |w| w.min(wait)));
                Some(wait)
            };
            plan.create_indexes = (0..completions)
                .filter(|i| {
                    !ix.completed.contains(i)
                        && !failed_indexes.contains(i)
                        && !ix.active.contains_key(i)
                        && !ix.terminating.contains(i)
                })
                .filter(|&i| index_wait(i).is_none())
                .take(wanted - kept)
                .collect();
            plan.create = plan.create_indexes.len();
        } else if ix.active.len() > wanted {
            // The highest indexes go first.
            plan.delete.extend(
                ix.active
                    .values()
                    .rev()
                    .take(ix.active.len() - wanted)
                    .map(|p| name_uid(p)),
            );
        }
    } else if manage {
        if active.len() + blocking < wanted && job_backoff.is_some() {
            backoff_wait = job_backoff;
        } else if active.len() + blocking < wanted {
            plan.create = wanted - active.len() - blocking;
        } else if active.len() > wanted {
            let mut victims = active.clone();
            victims.sort_by(|a, b| deletion_order(a, b));
            plan.delete = victims
                .into_iter()
                .take(active.len() - wanted)
                .map(|p| name_uid(p))
                .collect();
        }
    }
    plan.requeue_after = match (
        deadline.and_then(|d| d.duration_since(now).ok()),
        backoff_wait,
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    plan.status = status;
    plan
}

/// The pod a Job creates: its template, labelled with the Job's name and uid, with the
/// `batch.kubernetes.io/job-tracking` finalizer.
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
            finalizers: Some(job_tracking::with_tracking_finalizer(meta.finalizers)),
            owner_references: Some(vec![controller_ref(job)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The `generateName` of an Indexed Job's pod: `<job>-<index>-`, the Job's name cut so that
/// the prefix stays within 58 characters.
pub fn indexed_generate_name(job: &str, index: i32) -> String {
    const MAX_GENERATED_NAME: usize = 58;
    let suffix = format!("-{index}-");
    let room = MAX_GENERATED_NAME.saturating_sub(suffix.len());
    let prefix: String = job.chars().take(room).collect();
    format!("{prefix}{suffix}")
}

/// The pod of an Indexed Job for completion index `index`: the template's pod with the index
/// annotation and label, `JOB_COMPLETION_INDEX` in every container (from the annotation),
/// hostname `<job>-<index>` and name `<job>-<index>-<random>`.
pub fn pod_for_index(job: &Job, index: i32) -> Pod {
    let mut pod = pod_from_template(job);
    let value = index.to_string();
    pod.metadata.generate_name = Some(indexed_generate_name(&job.name_any(), index));
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(COMPLETION_INDEX.into(), value.clone());
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(COMPLETION_INDEX.into(), value);
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(format!("{}-{index}", job.name_any()));
    let env = EnvVar {
        name: COMPLETION_INDEX_ENV.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
            }),
            ..EnvVarSource::default()
        }),
    };
    for c in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        let vars = c.env.get_or_insert_with(Vec::new);
        if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
            vars.push(env.clone());
        }
    }
    pod
}

/// Creates one pod per completion index; the names created, and the first failure.
async fn create_indexed_pods(
    api: &Api<Pod>,
    job: &Job,
    indexes: &[i32],
    failures: &BTreeMap<i32, i32>,
) -> (Vec<String>, Option<kube::Error>) {
    let params = &PostParams::default();
    let per_index = job
        .spec
        .as_ref()
        .is_some_and(|s| s.backoff_limit_per_index.is_some());
    let create = |i: i32| async move {
        let mut pod = pod_for_index(job, i);
        if per_index {
            let count = failures.get(&i).copied().unwrap_or(0);
            pod.metadata
                .annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(job_policy::INDEX_FAILURE_COUNT.into(), count.to_string());
        }
        api.create(params, &pod).await
    };
    // Slow start, as for other pods (`create_pods`): batches of 1, 2, 4 ... indexes, none
    // after a batch with a failure (a quota or webhook refusing one refuses the rest).
    let mut created = Vec::new();
    let mut rest = indexes;
    let mut batch = 1;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(batch.min(rest.len()));
        let results = futures::future::join_all(now.iter().map(|&i| create(i))).await;
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => created.push(p.name_any()),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if failure.is_some() {
            return (created, failure);
        }
        rest = later;
        batch *= 2;
    }
    (created, None)
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
        let (created, failure) = if plan.create_indexes.is_empty() {
            create_pods(&api, &pod_from_template(&job), plan.create).await
        } else {
            create_indexed_pods(&api, &job, &plan.create_indexes, &plan.index_failures).await
        };
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
        if !job_tracking::write_status(&api, &job, &key, &plan.status).await? {
            // The cached Job was stale: its counts must not be written back. The newer Job's
            // watch event brings it here again.
            return Ok(crate::util::succeeded(
                &ctx.backoff,
                &key,
                Some(Duration::from_secs(1)),
            ));
        }
        if newly_finished {
            let failed = plan
                .status
                .conditions
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|c| c.type_ == "Failed");
            let (kind, reason, message) = match failed {
                None => ("Normal", "Completed", "Job completed"),
                Some(c) => (
                    "Warning",
                    c.reason.as_deref().unwrap_or("BackoffLimitExceeded"),
                    c.message
                        .as_deref()
                        .unwrap_or("Job has reached the specified backoff limit"),
                ),
            };
            record_event(&ctx.client, COMPONENT, job.as_ref(), kind, reason, message).await;
        }
    }
    // Counted in the status just written: the pods may go now.
    for (name, uid) in &plan.release {
        if let Some(pod) = pods
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
        {
            job_tracking::release(&api, pod, &format!("{key} pod {name}")).await?;
        }
    }
    let mut requeue_after = plan.requeue_after;
    if let Some(left) = ttl_left(&job, &plan.status, SystemTime::now()) {
        if left.is_zero() {
            delete_expired(&ctx.client, &job, &key).await?;
            return Ok(crate::util::succeeded(&ctx.backoff, &key, None));
        }
        requeue_after = Some(requeue_after.map_or(left, |r| r.min(left)));
    }
    Ok(crate::util::succeeded(&ctx.backoff, &key, requeue_after))
}

/// Deletes a Job whose `ttlSecondsAfterFinished` has passed, its pods in background
/// cascading (only this very Job: the uid is a precondition).
async fn delete_expired(client: &Client, job: &Job, key: &str) -> Result<(), ControllerError> {
    let api = Api::<Job>::namespaced(client.clone(), &job.namespace().unwrap_or_default());
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&job.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(ControllerError::api(key, "delete expired job", e)),
    }
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
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default());
    let orphans = job_tracking::run_orphans(client, pods, controller.store(), shutdown.clone());
    let jobs = controller
        .owns_stream(pods.subscribe())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()));
    futures::join!(jobs, orphans);
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
