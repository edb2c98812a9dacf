//! Job pod tracking with finalizers, as kube-controller-manager 1.26+ counts a Job's pods:
//!
//! - every pod the Job controller creates carries the `batch.kubernetes.io/job-tracking`
//!   finalizer, so a finished pod cannot vanish (deleted by a user, the pod GC or a node going
//!   away) before the Job has counted it;
//! - a finished pod is first written into `status.uncountedTerminatedPods` (its uid under
//!   `succeeded` or `failed`; an Indexed Job's succeeded pod goes into
//!   `status.completedIndexes` instead), then its finalizer is removed, then, once the pod is
//!   seen without the finalizer (or gone), its uid moves into `status.succeeded` /
//!   `status.failed`: every pod is counted exactly once;
//! - a pod deleted before it finished counts as failed, unless the Job replaces pods only
//!   once they failed (`podReplacementPolicy: Failed`, or any `podFailurePolicy`): then it
//!   counts once its phase is `Failed`; until then it is terminating (`status.terminating`);
//! - a Job's final condition (`Complete` / `Failed`) waits until nothing is left uncounted;
//! - pods left with the finalizer by a Job that is gone (or that no longer controls them) lose
//!   it ([`run_orphans`]).
//!
//! [`counts`] and [`settle`] are pure; [`release`] and [`run_orphans`] talk to the API.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::informer::Informer;
use crate::job::{is_indexed, pod_index};
use crate::job_policy::{self, INDEX_FAILURE_COUNT};
use crate::util::{controller_of, is_conflict, is_not_found, pod_phase};
use crate::{ControllerError, Shutdown};

/// The finalizer the Job controller puts on its pods until it has counted them.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// Whether the pod carries [`TRACKING_FINALIZER`].
pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|f| f == TRACKING_FINALIZER)
}

/// The pod template's finalizers plus [`TRACKING_FINALIZER`].
pub fn with_tracking_finalizer(finalizers: Option<Vec<String>>) -> Vec<String> {
    let mut finalizers = finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.to_string());
    }
    finalizers
}

/// Whether the Job replaces a pod only once it has failed, not while it terminates:
/// `podReplacementPolicy: Failed`, or any `podFailurePolicy` (which the API server pairs with
/// `Failed`).
pub fn only_replace_failed(job: &Job) -> bool {
    job.spec.as_ref().is_some_and(|s| {
        s.pod_replacement_policy.as_deref() == Some("Failed") || s.pod_failure_policy.is_some()
    })
}

/// Whether a pod is being deleted and has not finished yet.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(pod_phase(pod), "Succeeded" | "Failed")
}

/// Whether the Job counts the pod as failed: phase `Failed`; or, unless the Job only replaces
/// failed pods, deleted before it succeeded (orphaned pods never reach `Failed`).
pub fn is_pod_failed(job: &Job, pod: &Pod) -> bool {
    if pod_phase(pod) == "Failed" {
        return true;
    }
    !only_replace_failed(job)
        && pod.metadata.deletion_timestamp.is_some()
        && pod_phase(pod) != "Succeeded"
}

fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn valid_index(job: &Job, pod: &Pod) -> bool {
    let completions = job.spec.as_ref().and_then(|s| s.completions).unwrap_or(0);
    !is_indexed(job) || pod_index(pod).is_some_and(|i| i < completions)
}

/// The Job's succeeded and failed pods as its decisions see them: those already counted,
/// those recorded as uncounted, and the finished pods still carrying the finalizer that are
/// recorded nowhere yet. (An Indexed Job's successes are its completed indexes instead.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Succeeded pods (non-indexed Jobs).
    pub succeeded: i32,
    /// Failed pods (not ignored by `podFailurePolicy`).
    pub failed: i32,
}

fn uncounted_of(status: &JobStatus) -> (Vec<String>, Vec<String>) {
    let u = status.uncounted_terminated_pods.clone().unwrap_or_default();
    (
        u.succeeded.unwrap_or_default(),
        u.failed.unwrap_or_default(),
    )
}

/// See [`Counts`].
pub fn counts(job: &Job, pods: &[Arc<Pod>], previous: &JobStatus) -> Counts {
    let (succeeded, failed) = uncounted_of(previous);
    let recorded: HashSet<&str> = succeeded
        .iter()
        .chain(failed.iter())
        .map(String::as_str)
        .collect();
    let new = pods
        .iter()
        .filter(|p| has_tracking_finalizer(p) && !recorded.contains(uid_of(p)));
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let new_succeeded = new.clone().filter(|p| pod_phase(p) == "Succeeded").count();
    let new_failed = new
        .filter(|p| is_pod_failed(job, p) && valid_index(job, p) && !job_policy::is_ignored(job, p))
        .count();
    Counts {
        succeeded: previous
            .succeeded
            .unwrap_or(0)
            .saturating_add(as_i32(succeeded.len()))
            .saturating_add(as_i32(new_succeeded)),
        failed: previous
            .failed
            .unwrap_or(0)
            .saturating_add(as_i32(failed.len()))
            .saturating_add(as_i32(new_failed)),
    }
}

fn has_condition(status: &JobStatus, types: &[&str]) -> bool {
    status
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|c| c.status == "True" && types.contains(&c.type_.as_str()))
}

/// With `backoffLimitPerIndex`, a failed pod whose index will be retried keeps its finalizer
/// until a replacement carries the index's failure count on (kube's delayed deletion).
fn delayed_for_index(job: &Job, pod: &Pod, pods: &[Arc<Pod>], status: &JobStatus) -> bool {
    let per_index = job
        .spec
        .as_ref()
        .is_some_and(|s| s.backoff_limit_per_index.is_some());
    let Some(index) = pod_index(pod).filter(|_| per_index && pod_phase(pod) == "Failed") else {
        return false;
    };
    let failed_indexes =
        crate::job::parse_indexes(status.failed_indexes.as_deref().unwrap_or_default());
    if failed_indexes.contains(&index) {
        return false;
    }
    let count = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INDEX_FAILURE_COUNT))
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let mine = count(pod);
    !pods
        .iter()
        .any(|p| uid_of(p) != uid_of(pod) && pod_index(p) == Some(index) && count(p) > mine)
}

/// Brings `status` (the one about to be written, with its new conditions and, for an Indexed
/// Job, completed indexes) up to date with the pods' finalizers: moves uncounted uids whose
/// pods lost the finalizer into the counters, records newly finished pods as uncounted, holds
/// back a new `Complete` / `Failed` condition while anything is uncounted, and returns the
/// pods (name, uid) whose finalizer may go once `status` is written.
pub fn settle(
    job: &Job,
    pods: &[Arc<Pod>],
    previous: &JobStatus,
    status: &mut JobStatus,
) -> Vec<(String, String)> {
    let tracked: HashSet<&str> = pods
        .iter()
        .filter(|p| has_tracking_finalizer(p))
        .map(|p| uid_of(p))
        .collect();
    let (old_succeeded, old_failed) = uncounted_of(previous);
    let mut succeeded = previous.succeeded.unwrap_or(0);
    let mut failed = previous.failed.unwrap_or(0);
    let keep = |uids: Vec<String>, counter: &mut i32| -> Vec<String> {
        let (left, counted): (Vec<String>, Vec<String>) =
            uids.into_iter().partition(|u| tracked.contains(u.as_str()));
        *counter = counter.saturating_add(i32::try_from(counted.len()).unwrap_or(i32::MAX));
        left
    };
    let mut uncounted_succeeded = keep(old_succeeded, &mut succeeded);
    let mut uncounted_failed = keep(old_failed, &mut failed);

    // A Job being deleted or finishing lets every pod go; one failing counts the pods that
    // have not succeeded as failed (a deleted Job's running pods are not counted).
    let failing = has_condition(status, &["FailureTarget", "Failed"]);
    let finishing = job.metadata.deletion_timestamp.is_some()
        || failing
        || has_condition(status, &["SuccessCriteriaMet", "Complete"]);
    let indexed = is_indexed(job);
    let mut release = Vec::new();
    for pod in pods.iter().filter(|p| has_tracking_finalizer(p)) {
        let uid = uid_of(pod).to_string();
        let name_uid = (pod.name_any(), uid.clone());
        if uncounted_succeeded.contains(&uid) || uncounted_failed.contains(&uid) {
            release.push(name_uid);
            continue;
        }
        let failed_now = is_pod_failed(job, pod);
        let removable = finishing
            || pod_phase(pod) == "Succeeded"
            || (failed_now && !delayed_for_index(job, pod, pods, status));
        if !removable {
            continue;
        }
        if pod_phase(pod) == "Succeeded" {
            // An Indexed Job counts its index (in `completedIndexes`), not the pod.
            if !indexed {
                uncounted_succeeded.push(uid);
            }
        } else if (failed_now || failing)
            && valid_index(job, pod)
            && !job_policy::is_ignored(job, pod)
        {
            uncounted_failed.push(uid);
        }
        release.push(name_uid);
    }
    if !indexed {
        status.succeeded = Some(succeeded);
    }
    status.failed = Some(failed);
    let pending = !uncounted_succeeded.is_empty() || !uncounted_failed.is_empty();
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods {
        succeeded: Some(uncounted_succeeded),
        failed: Some(uncounted_failed),
    });
    if pending {
        hold_back_final_condition(previous, status);
    }
    release
}

/// Drops a `Complete` / `Failed` condition (and completion time) that `status` adds over
/// `previous`: the Job finishes once every pod is counted.
fn hold_back_final_condition(previous: &JobStatus, status: &mut JobStatus) {
    let had: BTreeSet<String> = previous
        .conditions
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|c| c.type_.clone())
        .collect();
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| {
            !matches!(c.type_.as_str(), "Complete" | "Failed") || had.contains(&c.type_)
        });
    }
    if previous.completion_time.is_none() {
        status.completion_time = None;
    }
}

/// Writes the Job's status only if the Job is still the version read (its `resourceVersion`
/// as a precondition), so that counts from a stale cache never overwrite newer ones; `false`
/// when it was not (409 Conflict).
pub async fn write_status(
    api: &Api<Job>,
    job: &Job,
    key: &str,
    status: &JobStatus,
) -> Result<bool, ControllerError> {
    let patch = kube::api::Patch::Merge(serde_json::json!({
        "metadata": {"resourceVersion": job.metadata.resource_version},
        "status": status,
    }));
    match api
        .patch_status(&job.name_any(), &kube::api::PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(ControllerError::api(key, "update status", e)),
    }
}

/// Removes the tracking finalizer from `pod` (that very uid: a merge patch naming it, as the
/// garbage collector removes its finalizers); a pod already gone is fine.
pub async fn release(api: &Api<Pod>, pod: &Pod, key: &str) -> Result<(), ControllerError> {
    if !has_tracking_finalizer(pod) {
        return Ok(());
    }
    let keep: Vec<&String> = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let patch = json!({"metadata": {"finalizers": keep, "uid": uid_of(pod)}});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) || is_invalid(&e) => Ok(()),
        Err(e) => Err(ControllerError::api(
            key,
            "remove the job-tracking finalizer",
            e,
        )),
    }
}

fn is_invalid(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422)
}

/// Whether a pod with the tracking finalizer has no Job to count it: no controller at all, or
/// a Job controller whose Job (that very uid) is not in the cache; `None` when it has one.
fn is_orphan(pod: &Pod, jobs: &Store<Job>) -> Option<bool> {
    let Some(owner) = controller_of(&pod.metadata) else {
        return Some(true);
    };
    if owner.kind != "Job" || !owner.api_version.starts_with("batch/") {
        // Another controller's pod: not ours to release.
        return Some(false);
    }
    let key = ObjectRef::<Job>::new(&owner.name).within(pod.metadata.namespace.as_deref()?);
    match jobs.get(&key) {
        Some(job) if job.metadata.uid.as_deref() == Some(owner.uid.as_str()) => None,
        _ => Some(true),
    }
}

/// Removes the tracking finalizer from pods whose Job is gone (checked against the API, not
/// only the cache) or which no Job controls, as kube's orphan-pod queue does; runs until
/// `shutdown`.
pub async fn run_orphans(
    client: Client,
    pods: &Informer<Pod>,
    jobs: Store<Job>,
    shutdown: Shutdown,
) {
    if pods.store().wait_until_ready().await.is_err() || jobs.wait_until_ready().await.is_err() {
        return;
    }
    let initial = futures::stream::iter(pods.store().state().into_iter().map(|p| (*p).clone()));
    let changes = pods.subscribe().filter_map(|r| async move { r.ok() });
    let work = initial.chain(changes).for_each_concurrent(4, |pod| {
        let client = client.clone();
        let jobs = jobs.clone();
        async move {
            if !has_tracking_finalizer(&pod) || is_orphan(&pod, &jobs) != Some(true) {
                return;
            }
            let ns = pod.namespace().unwrap_or_default();
            if let Some(owner) = controller_of(&pod.metadata)
                && owner.kind == "Job"
            {
                // The cache may lag: ask the API whether the Job still exists.
                let api: Api<Job> = Api::namespaced(client.clone(), &ns);
                match api.get_opt(&owner.name).await {
                    Ok(Some(job)) if job.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                        return;
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, namespace = %ns, pod = %pod.name_any(), "reading the job of a tracked pod failed");
                        return;
                    }
                }
            }
            let key = format!("{ns}/{}", pod.name_any());
            if let Err(error) = release(&Api::namespaced(client, &ns), &pod, &key).await {
                tracing::warn!(%error, pod = %key, "releasing an orphaned job pod failed");
            }
        }
    });
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

#[cfg(test)]
#[path = "job_tracking_tests.rs"]
mod tests;
