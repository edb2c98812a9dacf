//! The Indexed Job policies of batch/v1 (Kubernetes 1.29-1.33), as pure decisions for the Job
//! controller:
//!
//! - `backoffLimitPerIndex`: each pod of an index carries how many pods of that index failed
//!   before it (the `batch.kubernetes.io/job-index-failure-count` annotation); an index whose
//!   failures pass the limit is failed for good (`status.failedIndexes`) and not retried.
//! - `successPolicy`: the Job succeeds once one rule is met (all its `succeededIndexes`, or
//!   `succeededCount` of them, or of all indexes, succeeded).
//! - `podFailurePolicy`: the first rule matching a failed pod (a container's non-zero exit
//!   code `In`/`NotIn` a list, or a pod condition) says what its failure does: `FailJob`,
//!   `FailIndex`, `Ignore` (not counted) or `Count` (counted as without a policy).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;

use crate::job::{parse_indexes, pod_index};
use crate::util::pod_phase;

/// The annotation on an Indexed Job's pod counting the failed pods of its index before it.
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";

/// What a `podFailurePolicy` rule does with a failed pod it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// The whole Job fails (reason `PodFailurePolicy`).
    FailJob,
    /// The pod's index fails without retries (with `backoffLimitPerIndex`).
    FailIndex,
    /// The failure is not counted against any limit.
    Ignore,
    /// The failure counts as it would without a policy.
    Count,
}

/// The action of the first `podFailurePolicy` rule matching the failed `pod`, with the
/// message kube-controller-manager writes on the Job's condition for it.
pub fn pod_failure_action(job: &Job, pod: &Pod) -> Option<(FailureAction, String)> {
    let rules = &job.spec.as_ref()?.pod_failure_policy.as_ref()?.rules;
    let pod_name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    let status = pod.status.as_ref();
    rules.iter().enumerate().find_map(|(i, rule)| {
        let action = match rule.action.as_str() {
            "FailJob" => FailureAction::FailJob,
            "FailIndex" => FailureAction::FailIndex,
            "Ignore" => FailureAction::Ignore,
            "Count" => FailureAction::Count,
            _ => return None,
        };
        let name = &rule.action;
        if let Some(req) = &rule.on_exit_codes {
            let containers = status
                .into_iter()
                .flat_map(|s| {
                    s.init_container_statuses
                        .iter()
                        .flatten()
                        .chain(s.container_statuses.iter().flatten())
                })
                .filter(|c| req.container_name.as_ref().is_none_or(|n| *n == c.name));
            for c in containers {
                let Some(code) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
                    continue;
                };
                let code = code.exit_code;
                let listed = req.values.contains(&code);
                let matches = code != 0
                    && match req.operator.as_str() {
                        "In" => listed,
                        "NotIn" => !listed,
                        _ => false,
                    };
                if matches {
                    let message = format!(
                        "Container {} for pod {pod_name} failed with exit code {code} matching {name} rule at index {i}",
                        c.name
                    );
                    return Some((action, message));
                }
            }
            return None;
        }
        let patterns = rule.on_pod_conditions.as_deref().unwrap_or_default();
        let conditions = status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        patterns.iter().find_map(|pattern| {
            let wanted = if pattern.status.is_empty() {
                "True"
            } else {
                pattern.status.as_str()
            };
            conditions
                .iter()
                .any(|c| c.type_ == pattern.type_ && c.status == wanted)
                .then(|| {
                    let message = format!(
                        "Pod {pod_name} has condition {} matching {name} rule at index {i}",
                        pattern.type_
                    );
                    (action, message)
                })
        })
    })
}

/// Whether `podFailurePolicy` says the failure of `pod` is not counted.
pub fn is_ignored(job: &Job, pod: &Pod) -> bool {
    matches!(
        pod_failure_action(job, pod),
        Some((FailureAction::Ignore, _))
    )
}

/// The indexes of failed pods that a `FailIndex` rule matches.
pub fn indexes_failed_by_policy(job: &Job, pods: &[Arc<Pod>], completions: i32) -> BTreeSet<i32> {
    pods.iter()
        .filter(|p| pod_phase(p) == "Failed")
        .filter(|p| {
            matches!(
                pod_failure_action(job, p),
                Some((FailureAction::FailIndex, _))
            )
        })
        .filter_map(|p| pod_index(p))
        .filter(|i| (0..completions).contains(i))
        .collect()
}

/// The message of the first failed pod that a `FailJob` rule matches.
pub fn job_failed_by_policy(job: &Job, pods: &[Arc<Pod>]) -> Option<String> {
    pods.iter()
        .filter(|p| pod_phase(p) == "Failed")
        .find_map(|p| match pod_failure_action(job, p) {
            Some((FailureAction::FailJob, message)) => Some(message),
            _ => None,
        })
}

/// The failures per index so far: for each failed pod of a valid index whose failure is not
/// ignored, its own failure count annotation plus one; the highest per index.
pub fn index_failure_counts(job: &Job, pods: &[Arc<Pod>], completions: i32) -> BTreeMap<i32, i32> {
    let mut counts = BTreeMap::new();
    for pod in pods
        .iter()
        .filter(|p| pod_phase(p) == "Failed" && !is_ignored(job, p))
    {
        let Some(index) = pod_index(pod).filter(|i| (0..completions).contains(i)) else {
            continue;
        };
        let before = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INDEX_FAILURE_COUNT))
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0)
            .max(0);
        let count = counts.entry(index).or_insert(0);
        *count = (*count).max(before.saturating_add(1));
    }
    counts
}

/// The failed indexes: those already reported in `previous` (`status.failedIndexes`) and those
/// whose failures exceed `limit` (`backoffLimitPerIndex`).
pub fn failed_indexes(
    counts: &BTreeMap<i32, i32>,
    limit: i32,
    previous: Option<&str>,
    completions: i32,
) -> BTreeSet<i32> {
    let mut failed: BTreeSet<i32> = parse_indexes(previous.unwrap_or_default())
        .into_iter()
        .filter(|i| (0..completions).contains(i))
        .collect();
    failed.extend(
        counts
            .iter()
            .filter(|(_, count)| **count > limit)
            .map(|(index, _)| *index),
    );
    failed
}

/// The position of the first `successPolicy` rule that the `completed` indexes meet.
pub fn success_rule_met(job: &Job, completed: &BTreeSet<i32>) -> Option<usize> {
    let rules = &job.spec.as_ref()?.success_policy.as_ref()?.rules;
    rules.iter().position(|rule| {
        let (succeeded, wanted) = match &rule.succeeded_indexes {
            Some(text) => {
                let wanted = parse_indexes(text);
                let succeeded = wanted.intersection(completed).count();
                (succeeded, wanted.len())
            }
            None => (completed.len(), usize::MAX),
        };
        match rule.succeeded_count {
            Some(n) => usize::try_from(n).is_ok_and(|n| succeeded >= n),
            None => rule.succeeded_indexes.is_some() && succeeded == wanted,
        }
    })
}
