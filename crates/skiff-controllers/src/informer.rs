//! Shared informers: one watch per resource kind feeding a cache (a `kube` reflector store)
//! and a broadcast of every changed object, deletions included, so several controllers share
//! one watch (client-go's shared informer factory).

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

/// How many changes a slow subscriber may fall behind before it gets a full resync.
const BUFFER: usize = 4096;

/// One watch of a kind: its cache and a feed of changes.
pub struct Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    changes: broadcast::Sender<Arc<K>>,
    task: tokio::task::JoinHandle<()>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// Starts watching `api` (retrying with back-off on errors) on the current runtime.
    pub fn spawn(api: Api<K>, config: watcher::Config) -> Informer<K> {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(BUFFER);
        let tx = changes.clone();
        let kind = K::kind(&()).into_owned();
        let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => {
                        let _ = tx.send(Arc::new(obj));
                    }
                    Ok(watcher::Event::InitApply(obj)) => {
                        let _ = tx.send(Arc::new(obj));
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(%error, %kind, "watch failed; retrying"),
                }
            }
        });
        Informer {
            store,
            changes,
            task,
        }
    }

    /// The cache (filled once [`Store::wait_until_ready`] returns).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object that changes from now on (deleted ones too, in their last state); a
    /// subscriber that falls too far behind gets every cached object again.
    pub fn subscribe(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let rx = self.changes.subscribe();
        let store = self.store.clone();
        futures::stream::unfold((rx, Vec::<Arc<K>>::new()), move |(mut rx, mut backlog)| {
            let store = store.clone();
            async move {
                loop {
                    if let Some(obj) = backlog.pop() {
                        return Some((Ok((*obj).clone()), (rx, backlog)));
                    }
                    match rx.recv().await {
                        Ok(obj) => return Some((Ok((*obj).clone()), (rx, backlog))),
                        Err(broadcast::error::RecvError::Lagged(_)) => backlog = store.state(),
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
    }
}

impl<K> Drop for Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}
