//! Following one resource in memory: list it at the watch cache's revision, then apply the
//! cache's events; list again after a reset. The Node authorizer's graph and the namespace
//! index are kept this way, so the decisions they serve read memory, never the store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use skiff_store::{Revision, StoreError};
use tokio::sync::broadcast::error::RecvError;

use crate::state::AppState;
use crate::storage;
use crate::watchcache::{CacheMessage, CachedEvent};

/// Why a follower could not list its resource (it retries).
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The store refused the list.
    #[error("cannot list {resource}: {source}")]
    Store {
        /// The resource's plural.
        resource: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// The resource has no storage prefix.
    #[error("no storage prefix for {resource}: {message}")]
    Prefix {
        /// The resource's plural.
        resource: String,
        /// Why.
        message: String,
    },
}

/// What a follower does with what it sees.
pub trait Sink: Send + Sync + 'static {
    /// Everything that exists at `revision` (after a start or a reset).
    fn replace(&self, state: &AppState, revision: Revision, objects: &[Value]);
    /// One change after the last list.
    fn apply(&self, state: &AppState, event: &CachedEvent);
}

/// The objects of `info` as of `revision`, decoded (undecodable ones skipped).
async fn list_at(
    state: &AppState,
    info: &skiff_apimachinery::ResourceInfo,
    revision: Revision,
) -> Result<Vec<Value>, MirrorError> {
    let prefix = storage::prefix(info, None).map_err(|e| MirrorError::Prefix {
        resource: info.plural.clone(),
        message: e.message,
    })?;
    let page = state
        .store
        .list(&prefix, None, None, Some(revision))
        .await
        .map_err(|source| MirrorError::Store {
            resource: info.plural.clone(),
            source,
        })?;
    Ok(page
        .items
        .iter()
        .filter_map(|kv| storage::decode(info, kv).ok())
        .collect())
}

/// Follows `(group, version, plural)` into `sink` until the server shuts down.
pub fn follow(
    state: &Arc<AppState>,
    resource: (&'static str, &'static str, &'static str),
    sink: impl Sink,
) {
    let state = Arc::clone(state);
    tokio::spawn(async move { follow_until_shutdown(state, resource, sink).await });
}

async fn follow_until_shutdown(
    state: Arc<AppState>,
    (group, version, plural): (&'static str, &'static str, &'static str),
    sink: impl Sink,
) {
    let mut shutdown = state.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Some(info) = state.find(group, version, plural) else {
            return;
        };
        let Ok(cache) = state.cache(&info).await else {
            return;
        };
        let at = cache.last_revision();
        match list_at(&state, &info, at).await {
            Ok(objects) => {
                sink.replace(&state, at, &objects);
                if let Ok(mut subscription) = cache.subscribe(at) {
                    for event in &subscription.backlog {
                        sink.apply(&state, event);
                    }
                    loop {
                        tokio::select! {
                            message = subscription.live.recv() => match message {
                                Ok(CacheMessage::Event(event)) => sink.apply(&state, &event),
                                Ok(CacheMessage::Reset) | Err(RecvError::Closed | RecvError::Lagged(_)) => break,
                            },
                            changed = shutdown.changed() => {
                                if changed.is_err() || *shutdown.borrow() {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(resource = plural, error = %err, "cannot list a resource to follow it in memory; retrying");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
