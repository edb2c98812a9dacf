//! The in-memory store: the whole history in maps behind one mutex. For tests and as the
//! reference the conformance suite checks the other implementations against.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::broadcast;

use crate::types::{check_write, key_after, list_start};
use crate::watch::{self, Batch, FANOUT_CAPACITY, History, HistoryPage};
use crate::{Deleted, Event, KeyValue, ListResult, Revision, Store, StoreError, WatchStream};

/// One change in the history.
#[derive(Debug, Clone)]
struct Row {
    key: String,
    value: Bytes,
    create_revision: Revision,
    deleted: bool,
    /// The live version this change replaced, 0 if none.
    prev_revision: Revision,
}

#[derive(Debug, Default)]
struct State {
    revision: Revision,
    compacted: Revision,
    /// Every change still kept, by revision.
    history: BTreeMap<Revision, Row>,
    /// The kept revisions of each key, ascending.
    keys: BTreeMap<String, Vec<Revision>>,
}

impl State {
    fn kv(&self, revision: Revision) -> Option<KeyValue> {
        let row = self.history.get(&revision)?;
        (!row.deleted).then(|| KeyValue {
            key: row.key.clone(),
            value: row.value.clone(),
            create_revision: row.create_revision,
            mod_revision: revision,
        })
    }

    /// The key's version as of `at`, `None` if absent then.
    fn version_at(&self, key: &str, at: Revision) -> Option<KeyValue> {
        let revisions = self.keys.get(key)?;
        let index = revisions.partition_point(|&r| r <= at);
        let revision = *revisions[..index].last()?;
        self.kv(revision)
    }

    fn current(&self, key: &str) -> Option<KeyValue> {
        self.version_at(key, self.revision)
    }

    fn event(&self, revision: Revision, row: &Row) -> Option<Event> {
        let prev = (row.prev_revision > 0)
            .then(|| self.kv(row.prev_revision))
            .flatten();
        if row.deleted {
            let prev = prev?;
            Some(Event::Delete {
                kv: KeyValue {
                    key: row.key.clone(),
                    value: Bytes::new(),
                    create_revision: row.create_revision,
                    mod_revision: revision,
                },
                prev,
            })
        } else {
            Some(Event::Put {
                kv: KeyValue {
                    key: row.key.clone(),
                    value: row.value.clone(),
                    create_revision: row.create_revision,
                    mod_revision: revision,
                },
                prev,
            })
        }
    }

    /// Appends a change and returns its event.
    fn append(&mut self, row: Row) -> Event {
        self.revision += 1;
        let revision = self.revision;
        self.keys.entry(row.key.clone()).or_default().push(revision);
        let event = self
            .event(revision, &row)
            .expect("a delete always replaces a live version");
        self.history.insert(revision, row);
        event
    }

    fn check_revision(&self, requested: Revision) -> Result<(), StoreError> {
        if requested < self.compacted {
            return Err(StoreError::Compacted {
                requested,
                compacted: Some(self.compacted),
            });
        }
        if requested > self.revision {
            return Err(StoreError::FutureRevision {
                requested,
                current: self.revision,
            });
        }
        Ok(())
    }
}

/// The history and its lock, shared with watchers.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-changed in a way that
        // matters for a test store; keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl History for Arc<Shared> {
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        let state = self.lock();
        if after < state.compacted {
            return Err(StoreError::Compacted {
                requested: after,
                compacted: Some(state.compacted),
            });
        }
        let mut events = Vec::new();
        for (&revision, row) in state.history.range(after + 1..) {
            if !row.key.starts_with(prefix) {
                continue;
            }
            if let Some(event) = state.event(revision, row) {
                events.push(event);
            }
            if events.len() == limit {
                return Ok(HistoryPage {
                    events,
                    scanned_to: revision,
                });
            }
        }
        Ok(HistoryPage {
            events,
            scanned_to: state.revision,
        })
    }
}

/// A store that keeps everything in memory and loses it on drop.
#[derive(Debug)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    fanout: broadcast::Sender<Batch>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 0.
    pub fn new() -> MemoryStore {
        MemoryStore {
            shared: Arc::new(Shared::default()),
            fanout: broadcast::channel(FANOUT_CAPACITY).0,
        }
    }

    /// Publishes one write's event; called with the lock held so batches go out in order.
    fn publish(&self, event: Event) {
        // No receivers is fine: nobody watches.
        let _ = self.fanout.send(Arc::from(vec![event]));
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.shared.lock().current(key))
    }

    async fn list(
        &self,
        prefix: &str,
        limit: Option<usize>,
        continue_from: Option<&str>,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let state = self.shared.lock();
        let at = revision.unwrap_or(state.revision);
        state.check_revision(at)?;
        let limit = limit.filter(|&l| l > 0).unwrap_or(usize::MAX);
        let start = list_start(prefix, continue_from);
        let mut items = Vec::new();
        let mut continue_key = None;
        for key in state
            .keys
            .range::<str, _>((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
            .map(|(key, _)| key)
            .take_while(|key| key.starts_with(prefix))
        {
            let Some(kv) = state.version_at(key, at) else {
                continue;
            };
            if items.len() == limit {
                continue_key = items.last().map(|last: &KeyValue| key_after(&last.key));
                break;
            }
            items.push(kv);
        }
        Ok(ListResult {
            items,
            revision: at,
            continue_from: continue_key,
        })
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        check_write(key, Some(&value))?;
        let mut state = self.shared.lock();
        if let Some(existing) = state.current(key) {
            return Err(StoreError::AlreadyExists {
                key: key.to_string(),
                mod_revision: existing.mod_revision,
            });
        }
        let create_revision = state.revision + 1;
        let event = state.append(Row {
            key: key.to_string(),
            value,
            create_revision,
            deleted: false,
            prev_revision: 0,
        });
        let revision = event.revision();
        self.publish(event);
        Ok(revision)
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        check_write(key, Some(&value))?;
        let mut state = self.shared.lock();
        let Some(current) = state.current(key) else {
            return Err(StoreError::NotFound {
                key: key.to_string(),
            });
        };
        if current.mod_revision != expected_mod_revision {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected: expected_mod_revision,
                current: current.mod_revision,
            });
        }
        let event = state.append(Row {
            key: key.to_string(),
            value,
            create_revision: current.create_revision,
            deleted: false,
            prev_revision: current.mod_revision,
        });
        let revision = event.revision();
        self.publish(event);
        Ok(revision)
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError> {
        check_write(key, None)?;
        let mut state = self.shared.lock();
        let Some(current) = state.current(key) else {
            return Err(StoreError::NotFound {
                key: key.to_string(),
            });
        };
        if let Some(expected) = expected_mod_revision
            && expected != current.mod_revision
        {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                expected,
                current: current.mod_revision,
            });
        }
        let event = state.append(Row {
            key: key.to_string(),
            value: Bytes::new(),
            create_revision: current.create_revision,
            deleted: true,
            prev_revision: current.mod_revision,
        });
        let revision = event.revision();
        self.publish(event);
        Ok(Deleted {
            kv: current,
            revision,
        })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let live = self.fanout.subscribe();
        watch::watch(Arc::clone(&self.shared), live, prefix, from_revision).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        if revision > state.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: state.revision,
            });
        }
        if revision <= state.compacted {
            return Ok(());
        }
        let State { history, keys, .. } = &mut *state;
        keys.retain(|_, revisions| {
            // Keep the last version at or before the compaction point unless it is a delete,
            // and everything after it.
            let below = revisions.partition_point(|&r| r <= revision);
            let mut drop_to = below.saturating_sub(1);
            if below > 0
                && history
                    .get(&revisions[below - 1])
                    .is_some_and(|row| row.deleted)
            {
                drop_to = below;
            }
            for dropped in revisions.drain(..drop_to) {
                history.remove(&dropped);
            }
            !revisions.is_empty()
        });
        state.compacted = revision;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.lock().revision)
    }
}
