//! The watch cache: one store watch per resource, fanned out to every client watch.
//!
//! A feeder task follows the store from the revision the cache starts at and keeps the most
//! recent events in a ring. A client watch from revision `N` takes the ring's events after
//! `N` and subscribes to live ones under one lock, so nothing falls between the two. A start
//! older than the ring covers is answered like kube-apiserver's cache does: 410 Expired, and the
//! client lists again.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use skiff_store::{Event, Revision, Store, StoreError};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::object;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Deleted.
    Deleted,
}

impl EventType {
    /// The name on the wire (`ADDED`, `MODIFIED`, `DELETED`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change of one object, decoded once and shared by every client watch.
#[derive(Debug)]
pub struct CachedEvent {
    /// The revision of the change.
    pub revision: Revision,
    /// What happened.
    pub kind: EventType,
    /// The object after the change; for a delete, its last state with the delete's revision
    /// as `resourceVersion` (as kube-apiserver sends it).
    pub object: Value,
    /// The object before the change, `None` for a create.
    pub prev: Option<Value>,
}

/// What the cache sends to its subscribers.
#[derive(Debug, Clone)]
pub enum CacheMessage {
    /// A change.
    Event(Arc<CachedEvent>),
    /// The cache lost events (its store watch fell behind a compaction): every client watch
    /// must end with 410 Expired.
    Reset,
}

/// A client's view of the cache from a revision: the recorded events after it, then live ones.
pub struct Subscription {
    /// Events after the asked revision already in the ring.
    pub backlog: Vec<Arc<CachedEvent>>,
    /// Live messages after the backlog.
    pub live: broadcast::Receiver<CacheMessage>,
}

/// The start revision is older than the cache's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest revision a watch may start from.
    pub oldest: Revision,
}

struct Ring {
    events: VecDeque<Arc<CachedEvent>>,
    /// Every event with a revision above this one is in `events` (or not arrived yet).
    covered_from: Revision,
    /// The newest revision the cache knows to be complete.
    last: Revision,
}

/// The watch cache of one resource (one storage prefix).
pub struct WatchCache {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<CacheMessage>,
    capacity: usize,
    feeder: Mutex<Option<JoinHandle<()>>>,
}

/// How many live messages a slow client may fall behind before its watch ends with 410.
const LIVE_BUFFER: usize = 2048;

impl WatchCache {
    /// A cache whose history starts at `from` (events after it), keeping `capacity` events.
    pub fn new(from: Revision, capacity: usize) -> Arc<WatchCache> {
        let (tx, _) = broadcast::channel(LIVE_BUFFER);
        Arc::new(WatchCache {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity.min(64)),
                covered_from: from,
                last: from,
            }),
            tx,
            capacity: capacity.max(1),
            feeder: Mutex::new(None),
        })
    }

    /// Starts the feeder: one store watch on `prefix` from the cache's start revision.
    pub fn start(self: &Arc<WatchCache>, store: Arc<dyn Store>, prefix: String) {
        let cache = Arc::clone(self);
        let handle = tokio::spawn(async move { cache.feed(store, prefix).await });
        if let Ok(mut feeder) = self.feeder.lock()
            && let Some(old) = feeder.replace(handle)
        {
            old.abort();
        }
    }

    /// Stops the feeder (the resource is no longer served); subscribers see their stream end.
    pub fn stop(&self) {
        if let Ok(mut feeder) = self.feeder.lock()
            && let Some(handle) = feeder.take()
        {
            handle.abort();
        }
        let _ = self.tx.send(CacheMessage::Reset);
    }

    /// The newest revision the cache has caught up to.
    pub fn last_revision(&self) -> Revision {
        self.ring.lock().map(|r| r.last).unwrap_or(0)
    }

    /// The events after `after` and a receiver for the ones to come.
    pub fn subscribe(&self, after: Revision) -> Result<Subscription, TooOld> {
        let ring = self.ring.lock().map_err(|_| TooOld {
            oldest: Revision::MAX,
        })?;
        if after < ring.covered_from {
            return Err(TooOld {
                oldest: ring.covered_from,
            });
        }
        let backlog = ring
            .events
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect();
        Ok(Subscription {
            backlog,
            live: self.tx.subscribe(),
        })
    }

    /// Records an event and sends it to the subscribers.
    pub fn push(&self, event: CachedEvent) {
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        if event.revision <= ring.last {
            return;
        }
        let event = Arc::new(event);
        ring.last = ring.last.max(event.revision);
        ring.events.push_back(Arc::clone(&event));
        while ring.events.len() > self.capacity {
            if let Some(evicted) = ring.events.pop_front() {
                ring.covered_from = evicted.revision;
            }
        }
        let _ = self.tx.send(CacheMessage::Event(event));
    }

    /// Forgets the history and starts again at `from`; current subscribers get `Reset`.
    fn reset(&self, from: Revision) {
        if let Ok(mut ring) = self.ring.lock() {
            ring.events.clear();
            ring.covered_from = from;
            ring.last = from;
            let _ = self.tx.send(CacheMessage::Reset);
        }
    }

    async fn feed(self: Arc<WatchCache>, store: Arc<dyn Store>, prefix: String) {
        loop {
            let from = self.last_revision();
            match store.watch(&prefix, from).await {
                Ok(mut stream) => {
                    while let Some(item) = stream.next().await {
                        match item {
                            Ok(event) => {
                                if let Some(event) = decode(event) {
                                    self.push(event);
                                }
                            }
                            Err(err) => {
                                self.recover(&store, &prefix, err).await;
                                break;
                            }
                        }
                    }
                }
                Err(err) => self.recover(&store, &prefix, err).await,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn recover(&self, store: &Arc<dyn Store>, prefix: &str, err: StoreError) {
        match err {
            StoreError::Compacted { .. } => {
                let current = store.current_revision().await.unwrap_or(0);
                tracing::warn!(
                    prefix,
                    current,
                    "watch cache fell behind compaction; resetting"
                );
                self.reset(current);
            }
            StoreError::Closed { .. } => {
                tracing::debug!(prefix, "store closed; watch cache waits");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => {
                tracing::warn!(prefix, error = %other, "store watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        if let Ok(mut feeder) = self.feeder.lock()
            && let Some(handle) = feeder.take()
        {
            handle.abort();
        }
    }
}

/// Decodes a store event into the object-level event clients see.
pub fn decode(event: Event) -> Option<CachedEvent> {
    let parse = |bytes: &[u8], revision: Revision| -> Option<Value> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(mut value) => {
                object::set_resource_version(&mut value, revision);
                Some(value)
            }
            Err(err) => {
                tracing::warn!(error = %err, "undecodable object in the store; skipped");
                None
            }
        }
    };
    match event {
        Event::Put { kv, prev } => {
            let object = parse(&kv.value, kv.mod_revision)?;
            let prev = prev.and_then(|p| parse(&p.value, p.mod_revision));
            Some(CachedEvent {
                revision: kv.mod_revision,
                kind: if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                },
                object,
                prev,
            })
        }
        Event::Delete { kv, prev } => {
            let object = parse(&prev.value, kv.mod_revision)?;
            let before = parse(&prev.value, prev.mod_revision);
            Some(CachedEvent {
                revision: kv.mod_revision,
                kind: EventType::Deleted,
                object,
                prev: before,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(revision: Revision) -> CachedEvent {
        CachedEvent {
            revision,
            kind: EventType::Added,
            object: json!({"metadata": {"name": format!("o{revision}")}}),
            prev: None,
        }
    }

    #[tokio::test]
    async fn subscribers_get_the_backlog_then_live_events() {
        let cache = WatchCache::new(10, 3);
        cache.push(event(11));
        cache.push(event(12));
        let mut sub = cache.subscribe(11).unwrap();
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.backlog[0].revision, 12);
        cache.push(event(13));
        match sub.live.recv().await.unwrap() {
            CacheMessage::Event(e) => assert_eq!(e.revision, 13),
            CacheMessage::Reset => panic!("unexpected reset"),
        }
    }

    #[tokio::test]
    async fn starts_older_than_the_ring_are_too_old() {
        let cache = WatchCache::new(10, 2);
        assert_eq!(cache.subscribe(9).err(), Some(TooOld { oldest: 10 }));
        for r in 11..=14 {
            cache.push(event(r));
        }
        assert_eq!(cache.subscribe(11).err(), Some(TooOld { oldest: 12 }));
        assert_eq!(cache.subscribe(12).unwrap().backlog.len(), 2);
        assert_eq!(cache.last_revision(), 14);
    }

    #[tokio::test]
    async fn the_feeder_follows_the_store() {
        let store: Arc<dyn Store> = Arc::new(skiff_store::MemoryStore::new());
        let from = store.current_revision().await.unwrap();
        let cache = WatchCache::new(from, 100);
        cache.start(Arc::clone(&store), "/registry/configmaps/".into());
        let mut sub = cache.subscribe(from).unwrap();
        let rev = store
            .create(
                "/registry/configmaps/default/a",
                r#"{"metadata":{"name":"a"}}"#.into(),
            )
            .await
            .unwrap();
        store
            .delete("/registry/configmaps/default/a", None)
            .await
            .unwrap();
        let CacheMessage::Event(added) = sub.live.recv().await.unwrap() else {
            panic!("reset")
        };
        assert_eq!(added.kind, EventType::Added);
        assert_eq!(added.object["metadata"]["resourceVersion"], rev.to_string());
        let CacheMessage::Event(deleted) = sub.live.recv().await.unwrap() else {
            panic!("reset")
        };
        assert_eq!(deleted.kind, EventType::Deleted);
        assert_eq!(deleted.object["metadata"]["name"], "a");
        cache.stop();
    }
}
