//! Tearing a pod down on this node: its containers (apps and init within the grace period,
//! then the sandbox), its directory (volumes and all), its cgroup and its network (veth and
//! address). Every step tolerates what is already gone, so a teardown can run again after
//! a failure; one that failed is retried with back-off ([`Retries`]: 1 s, doubling to 60 s,
//! per pod uid) until it succeeds, and then forgotten.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use skiff_engine::Container;

use crate::error::blocking;
use crate::podcgroup::PodCgroupError;
use crate::{AgentError, Context, runtime, volumes};

/// The wait before the first retry of a failed teardown.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two retries.
pub const MAX_RETRY: Duration = Duration::from_secs(60);

/// Why a pod could not be torn down (the first step that failed).
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    /// The pod's containers could not be listed.
    #[error("list the containers of pod {uid}: {source}")]
    List {
        /// The pod.
        uid: String,
        /// The engine's error.
        source: Box<AgentError>,
    },
    /// One of the pod's containers could not be stopped or removed.
    #[error("remove container {container} of pod {uid}: {source}")]
    Container {
        /// The pod.
        uid: String,
        /// The engine's name of the container.
        container: String,
        /// The engine's error.
        source: Box<AgentError>,
    },
    /// The pod's directory (its volumes) could not be removed.
    #[error("remove {} of pod {uid}: {source}", path.display())]
    Directory {
        /// The pod.
        uid: String,
        /// The directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The pod's cgroup could not be removed.
    #[error("remove the cgroup of pod {uid}: {source}")]
    Cgroup {
        /// The pod.
        uid: String,
        /// The cgroup error.
        source: PodCgroupError,
    },
    /// The pod's veth or address could not be released.
    #[error("release the network of pod {uid}: {detail}")]
    Network {
        /// The pod.
        uid: String,
        /// The network layer's error.
        detail: String,
    },
    /// The blocking part of the teardown did not finish.
    #[error("tear down pod {uid}: {source}")]
    Task {
        /// The pod.
        uid: String,
        /// The join error.
        source: Box<AgentError>,
    },
}

/// Stops every container of pod `uid` (apps and init first, within `grace`, then the
/// sandbox), removes them, then the pod's directory, cgroup and network. A step that fails
/// does not keep the later ones from running (the cgroup waits for the containers, though);
/// the first failure is returned, the others are logged.
pub async fn teardown(ctx: &Arc<Context>, uid: &str, grace: Duration) -> Result<(), TeardownError> {
    let containers = list(ctx, uid).await?;
    let (sandboxes, others): (Vec<Container>, Vec<Container>) = containers
        .into_iter()
        .partition(|c| runtime::container_name(c) == runtime::SANDBOX);
    let mut stops = Vec::new();
    for c in &others {
        let (engine, c) = (ctx.engine.clone(), c.clone());
        stops.push(blocking("stop container", move || {
            runtime::stop(&engine, &c, grace)
        }));
    }
    for result in futures::future::join_all(stops).await {
        if let Err(err) = result {
            tracing::warn!(pod_uid = uid, error = %err, "stopping a container failed");
        }
    }
    // The pod's service account tokens go even when a container below cannot be removed.
    volumes::tokens::forget(uid);
    let ctx2 = Arc::clone(ctx);
    let owned = uid.to_string();
    let local = blocking("tear down the pod", move || {
        Ok(remove_local(&ctx2, &owned, others.iter().chain(&sandboxes)))
    })
    .await
    .map_err(|source| TeardownError::Task {
        uid: uid.to_string(),
        source: Box::new(source),
    })?;
    let mut failures = local;
    if let Some(net) = ctx.net.get()
        && let Err(err) = net.node.detach(uid).await
    {
        failures.push(TeardownError::Network {
            uid: uid.to_string(),
            detail: err.to_string(),
        });
    }
    let mut failures = failures.into_iter();
    match failures.next() {
        None => Ok(()),
        Some(first) => {
            for other in failures {
                tracing::warn!(pod_uid = uid, error = %other, "a further teardown step failed");
            }
            Err(first)
        }
    }
}

async fn list(ctx: &Arc<Context>, uid: &str) -> Result<Vec<Container>, TeardownError> {
    let ctx2 = Arc::clone(ctx);
    let owned = uid.to_string();
    blocking("list containers", move || {
        ctx2.index.of_pod(&ctx2.engine, &owned)
    })
    .await
    .map_err(|source| TeardownError::List {
        uid: uid.to_string(),
        source: Box::new(source),
    })
}

/// The blocking steps: containers, directory, cgroup; returns what failed.
fn remove_local<'a>(
    ctx: &Context,
    uid: &str,
    containers: impl Iterator<Item = &'a Container>,
) -> Vec<TeardownError> {
    let mut failures = Vec::new();
    let mut containers_left = false;
    for c in containers {
        let done = runtime::stop(&ctx.engine, c, Duration::from_secs(2))
            .and_then(|()| runtime::remove(&ctx.engine, &ctx.index, c));
        if let Err(err) = done {
            containers_left = true;
            failures.push(TeardownError::Container {
                uid: uid.to_string(),
                container: c.config.name.clone(),
                source: Box::new(err),
            });
        }
    }
    let data_dir = &ctx.config.data_dir;
    if let Err(source) = volumes::cleanup(data_dir, uid) {
        failures.push(TeardownError::Directory {
            uid: uid.to_string(),
            path: volumes::pod_dir(data_dir, uid),
            source,
        });
    }
    // A cgroup cannot go while a container that failed to go may still hold processes.
    if !containers_left && let Err(source) = crate::podcgroup::remove(uid, data_dir) {
        failures.push(TeardownError::Cgroup {
            uid: uid.to_string(),
            source,
        });
    }
    failures
}

/// The wait before retry number `failures` (1 for the first retry): [`FIRST_RETRY`],
/// doubling each time, at most [`MAX_RETRY`].
pub fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    FIRST_RETRY
        .checked_mul(1u32 << exponent)
        .map_or(MAX_RETRY, |d| d.min(MAX_RETRY))
}

/// A pod whose teardown failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retry {
    /// Failed attempts in a row.
    pub failures: u32,
    /// The wait before the next attempt.
    pub delay: Duration,
    /// The last attempt's error.
    pub last_error: String,
}

/// The pods whose teardown failed and is being retried, by uid; a pod is forgotten once its
/// teardown succeeds.
#[derive(Debug, Default)]
pub struct Retries {
    pods: Mutex<HashMap<String, Retry>>,
    /// The pods a [`until_done`] loop works on.
    looping: Mutex<std::collections::HashSet<String>>,
}

impl Retries {
    fn pods(&self) -> MutexGuard<'_, HashMap<String, Retry>> {
        // Every change is one call: a panic while holding the lock leaves a consistent map.
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn looping(&self) -> MutexGuard<'_, std::collections::HashSet<String>> {
        self.looping.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that tearing down pod `uid` failed with `error`; returns the wait before the
    /// next attempt.
    pub fn failed(&self, uid: &str, error: &str) -> Duration {
        let mut pods = self.pods();
        let failures = pods.get(uid).map_or(0, |r| r.failures).saturating_add(1);
        let delay = retry_delay(failures);
        pods.insert(
            uid.to_string(),
            Retry {
                failures,
                delay,
                last_error: error.to_string(),
            },
        );
        delay
    }

    /// Forgets pod `uid` after its teardown succeeded; returns what was on record.
    pub fn succeeded(&self, uid: &str) -> Option<Retry> {
        self.pods().remove(uid)
    }

    /// What is on record for pod `uid`.
    pub fn get(&self, uid: &str) -> Option<Retry> {
        self.pods().get(uid).cloned()
    }

    /// Whether a teardown of pod `uid` failed and has not succeeded since.
    pub fn is_pending(&self, uid: &str) -> bool {
        self.pods().contains_key(uid)
    }
}

/// Tears pod `uid` down, retrying with back-off until that succeeds. Returns at once when
/// another call already works on the same pod.
pub async fn until_done(ctx: &Arc<Context>, uid: &str, grace: Duration) {
    if !ctx.teardowns.looping().insert(uid.to_string()) {
        return;
    }
    loop {
        match teardown(ctx, uid, grace).await {
            Ok(()) => {
                if let Some(r) = ctx.teardowns.succeeded(uid) {
                    tracing::info!(
                        pod_uid = uid,
                        failures = r.failures,
                        "the pod's teardown succeeded after failing"
                    );
                }
                break;
            }
            Err(err) => {
                let delay = ctx.teardowns.failed(uid, &err.to_string());
                tracing::warn!(pod_uid = uid, error = %err, retry_in = ?delay, "tearing down the pod failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
    ctx.teardowns.looping().remove(uid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_start_at_one_second_and_double_up_to_a_minute() {
        let delays: Vec<u64> = (1..=9).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
        assert_eq!(retry_delay(0), FIRST_RETRY);
    }

    #[test]
    fn a_failed_teardown_is_remembered_per_pod_until_it_succeeds() {
        let retries = Retries::default();
        assert!(!retries.is_pending("a"));
        assert_eq!(retries.failed("a", "busy"), Duration::from_secs(1));
        assert_eq!(retries.failed("a", "still busy"), Duration::from_secs(2));
        assert_eq!(retries.failed("b", "denied"), Duration::from_secs(1));
        assert_eq!(
            retries.get("a"),
            Some(Retry {
                failures: 2,
                delay: Duration::from_secs(2),
                last_error: "still busy".into(),
            })
        );
        assert_eq!(retries.succeeded("a").map(|r| r.failures), Some(2));
        assert!(!retries.is_pending("a"));
        assert_eq!(retries.succeeded("a"), None);
        // A later failure of the same pod starts from the first delay again.
        assert_eq!(retries.failed("a", "busy"), Duration::from_secs(1));
        assert_eq!(retries.get("b").map(|r| r.failures), Some(1));
    }
}
