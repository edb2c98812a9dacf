//! Scheduled compaction, like kube-apiserver's: every interval, compact to the revision seen
//! one interval earlier, so watchers always have at least one interval of history (and never
//! less than a number of revisions) to resume from.

use std::sync::Arc;
use std::time::Duration;

use crate::{Revision, Store};

/// When and how far the [`Compactor`] compacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// How often to compact (kube-apiserver: 5 minutes).
    pub interval: Duration,
    /// How many of the latest revisions are always kept.
    pub keep_revisions: Revision,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            interval: Duration::from_secs(5 * 60),
            keep_revisions: 1000,
        }
    }
}

impl CompactionPolicy {
    /// The revision to compact to now, given the current revision and the one seen at the
    /// previous tick: keep one interval of history and at least `keep_revisions` revisions.
    pub fn target(&self, current: Revision, previous_tick: Revision) -> Revision {
        previous_tick.min(current - self.keep_revisions)
    }
}

/// A background task that compacts a store on a schedule; stops when dropped.
#[derive(Debug)]
pub struct Compactor {
    task: tokio::task::JoinHandle<()>,
}

impl Compactor {
    /// Starts compacting `store` by `policy` on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(store: Arc<dyn Store>, policy: CompactionPolicy) -> Compactor {
        Compactor {
            task: tokio::spawn(run(store, policy)),
        }
    }
}

impl Drop for Compactor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(store: Arc<dyn Store>, policy: CompactionPolicy) {
    let mut ticks = tokio::time::interval(policy.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut previous_tick = None;
    let mut compacted: Revision = 0;
    loop {
        ticks.tick().await;
        let current = match store.current_revision().await {
            Ok(current) => current,
            Err(error) => {
                tracing::warn!(%error, "scheduled compaction could not read the revision");
                continue;
            }
        };
        if let Some(previous) = previous_tick {
            let target = policy.target(current, previous);
            if target > compacted {
                match store.compact(target).await {
                    Ok(()) => {
                        tracing::debug!(revision = target, "compacted the store");
                        compacted = target;
                    }
                    Err(error) => {
                        tracing::warn!(%error, revision = target, "scheduled compaction failed");
                    }
                }
            }
        }
        previous_tick = Some(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_keeps_one_interval_and_a_minimum_of_revisions() {
        let policy = CompactionPolicy {
            interval: Duration::from_secs(1),
            keep_revisions: 100,
        };
        // Busy store: one interval of history is more than 100 revisions.
        assert_eq!(policy.target(10_000, 5_000), 5_000);
        // Quiet store: keep the last 100 revisions even if older than an interval.
        assert_eq!(policy.target(5_050, 5_000), 4_950);
        // Young store: nothing to compact.
        assert!(policy.target(50, 40) <= 0);
    }
}
