//! The Job controller's pod failure back-off, as kube-controller-manager's: after pods of a
//! Job failed, replacements are created only once `10 s x 2^(n-1)` (at most 6 minutes) has
//! passed since the last failure, `n` being the pods that failed since the last one that
//! succeeded. With `backoffLimitPerIndex` the same is counted per completion index, so one
//! failing index waits while the others go on.
//!
//! Only pods in phase `Failed` count (a pod deleted while it runs is replaced at once), each
//! at its finish time: the latest `finishedAt` of its containers, else its last condition
//! change, else its creation.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;

use crate::util::pod_phase;

/// The wait after the first failure.
pub const INITIAL: Duration = Duration::from_secs(10);
/// The longest wait.
pub const MAX: Duration = Duration::from_secs(360);

/// Failures since the last success, and when the last one happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    /// Pods that failed after the last pod that succeeded.
    pub failures: u32,
    /// When the last of them finished.
    pub last_failure: Option<SystemTime>,
}

/// When the pod finished (for a finished pod).
pub fn finish_time(pod: &Pod) -> Option<SystemTime> {
    let status = pod.status.as_ref()?;
    let finished = status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| SystemTime::from(t.0))
        .max();
    finished
        .or_else(|| {
            status
                .conditions
                .iter()
                .flatten()
                .filter_map(|c| c.last_transition_time.as_ref())
                .map(|t| SystemTime::from(t.0))
                .max()
        })
        .or_else(|| {
            pod.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0))
        })
}

/// The back-off record of `pods` (a Job's pods, or one index's).
pub fn record<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Record {
    let mut finished: Vec<(SystemTime, bool)> = pods
        .into_iter()
        .filter_map(|p| match pod_phase(p) {
            "Succeeded" => Some((finish_time(p)?, true)),
            "Failed" => Some((finish_time(p)?, false)),
            _ => None,
        })
        .collect();
    finished.sort_by_key(|(t, _)| *t);
    let mut record = Record::default();
    for (time, succeeded) in finished {
        if succeeded {
            record = Record::default();
        } else {
            record.failures = record.failures.saturating_add(1);
            record.last_failure = Some(time);
        }
    }
    record
}

/// The waits at `now` of the completion indexes of an Indexed Job's `pods` that must still
/// wait (each index's own record, as with `backoffLimitPerIndex`).
pub fn remaining_by_index<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    now: SystemTime,
) -> BTreeMap<i32, Duration> {
    let mut by_index: BTreeMap<i32, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(i) = crate::job::pod_index(pod) {
            by_index.entry(i).or_default().push(pod);
        }
    }
    by_index
        .into_iter()
        .filter_map(|(i, pods)| Some((i, remaining(&record(pods), now)?)))
        .collect()
}

/// The wait after `failures` failures in a row: [`INITIAL`] doubling, at most [`MAX`].
pub fn delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    crate::backoff::doubled(INITIAL, failures - 1, MAX)
}

/// How long new pods must still wait at `now` (`None`: they may be created now).
pub fn remaining(record: &Record, now: SystemTime) -> Option<Duration> {
    let last = record.last_failure?;
    let until = last + delay(record.failures);
    until.duration_since(now).ok().filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, finished_secs_ago: u64, now: SystemTime) -> Pod {
        let at =
            k8s_openapi::jiff::Timestamp::try_from(now - Duration::from_secs(finished_secs_ago))
                .unwrap()
                .to_string();
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "finishedAt": at}}
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn delays_double_from_ten_seconds_up_to_six_minutes() {
        let secs: Vec<u64> = (0..=8).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 320, 360, 360]);
        assert_eq!(delay(u32::MAX), MAX);
    }

    #[test]
    fn failures_after_the_last_success_count_from_the_last_failure() {
        let now = SystemTime::now();
        // Failed 100 s ago, succeeded 50 s ago, failed 30 s and 3 s ago: two failures in a row.
        let pods = [
            pod("Failed", 100, now),
            pod("Succeeded", 50, now),
            pod("Failed", 30, now),
            pod("Failed", 3, now),
            pod("Running", 0, now),
        ];
        let r = record(pods.iter());
        assert_eq!(r.failures, 2);
        let wait = remaining(&r, now).unwrap();
        assert!(
            wait > Duration::from_secs(16) && wait <= Duration::from_secs(17),
            "{wait:?}"
        );
        // Long after the last failure: no wait.
        assert_eq!(remaining(&r, now + Duration::from_secs(60)), None);
        // Nothing failed: no wait.
        assert_eq!(
            remaining(&record([pod("Succeeded", 1, now)].iter()), now),
            None
        );
    }
}
