//! The in-memory index of the RBAC objects authorization reads, so that deciding a request
//! does not touch the store.
//!
//! The index is a [`Snapshot`] built from one consistent list of the four RBAC resources and
//! tagged with the change counter it was built at. Every change to those resources bumps the
//! counter: the API server's own writes synchronously (so a RoleBinding is in force as soon as
//! its create returns), and the watch caches of the four resources for everything else
//! (objects removed with their namespace). The next decision after a change rebuilds the
//! index once; decisions in between share it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value;
use skiff_store::StoreError;
use tokio::sync::broadcast::error::RecvError;

use super::AuthzError;
use super::rbac::Snapshot;
use crate::state::AppState;
use crate::storage;
use crate::watchcache::CacheMessage;

/// The group of the RBAC resources.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The RBAC resources, in the order [`Snapshot::build`] takes them.
const RESOURCES: [&str; 4] = [
    "clusterroles",
    "roles",
    "clusterrolebindings",
    "rolebindings",
];

/// The index and its freshness.
#[derive(Default)]
pub struct RbacCache {
    changes: AtomicU64,
    current: RwLock<Option<(u64, Arc<Snapshot>)>>,
    rebuilding: tokio::sync::Mutex<()>,
    /// Woken on every change (the aggregation controller waits on it).
    pub changed: tokio::sync::Notify,
}

impl RbacCache {
    /// An empty cache: the first decision builds the index.
    pub fn new() -> RbacCache {
        RbacCache::default()
    }

    /// Marks the index stale: an RBAC object changed.
    pub fn invalidate(&self) {
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_one();
    }

    fn fresh(&self) -> Option<Arc<Snapshot>> {
        let want = self.changes.load(Ordering::SeqCst);
        let current = self.current.read().ok()?;
        match current.as_ref() {
            Some((at, snapshot)) if *at == want => Some(Arc::clone(snapshot)),
            _ => None,
        }
    }

    /// The index as of the last change, rebuilt from the store if a change came after it.
    pub async fn snapshot(&self, state: &AppState) -> Result<Arc<Snapshot>, AuthzError> {
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let _one_at_a_time = self.rebuilding.lock().await;
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let at = self.changes.load(Ordering::SeqCst);
        let snapshot = Arc::new(load(state).await?);
        if let Ok(mut current) = self.current.write() {
            *current = Some((at, Arc::clone(&snapshot)));
        }
        Ok(snapshot)
    }
}

/// Lists the four RBAC resources at one revision and indexes them.
pub async fn load(state: &AppState) -> Result<Snapshot, AuthzError> {
    let store_error = |resource: &str, source: StoreError| AuthzError::Store {
        resource: resource.to_string(),
        source,
    };
    let revision = state
        .store
        .current_revision()
        .await
        .map_err(|e| store_error("the current revision", e))?;
    let mut lists: Vec<Vec<Value>> = Vec::with_capacity(RESOURCES.len());
    for plural in RESOURCES {
        let info = state
            .find(RBAC_GROUP, "v1", plural)
            .ok_or_else(|| AuthzError::NotServed {
                resource: format!("{plural}.{RBAC_GROUP}"),
            })?;
        let prefix = storage::prefix(&info, None).map_err(|e| AuthzError::Decode {
            key: plural.to_string(),
            message: e.message,
        })?;
        let page = state
            .store
            .list(&prefix, None, None, Some(revision))
            .await
            .map_err(|e| store_error(plural, e))?;
        let mut objects = Vec::with_capacity(page.items.len());
        for kv in &page.items {
            objects.push(storage::decode(&info, kv).map_err(|e| AuthzError::Decode {
                key: kv.key.clone(),
                message: e.message,
            })?);
        }
        lists.push(objects);
    }
    Ok(Snapshot::build(&lists[0], &lists[1], &lists[2], &lists[3]))
}

/// Follows the watch caches of the RBAC resources and marks the index stale on every change,
/// until the server shuts down.
pub fn follow(state: &Arc<AppState>) {
    for plural in RESOURCES {
        let Some(info) = state.find(RBAC_GROUP, "v1", plural) else {
            continue;
        };
        let state = Arc::clone(state);
        tokio::spawn(async move {
            let mut shutdown = state.shutdown.clone();
            loop {
                let Ok(cache) = state.cache(&info).await else {
                    return;
                };
                state.rbac.invalidate();
                if let Ok(mut subscription) = cache.subscribe(cache.last_revision()) {
                    loop {
                        tokio::select! {
                            message = subscription.live.recv() => match message {
                                Ok(CacheMessage::Event(_)) | Err(RecvError::Lagged(_)) => {
                                    state.rbac.invalidate();
                                }
                                Ok(CacheMessage::Reset) | Err(RecvError::Closed) => break,
                            },
                            changed = shutdown.changed() => {
                                if changed.is_err() || *shutdown.borrow() {
                                    return;
                                }
                            }
                        }
                    }
                }
                if *shutdown.borrow() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
    }
}
