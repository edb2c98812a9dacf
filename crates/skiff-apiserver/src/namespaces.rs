//! The namespace index: which namespaces exist and which are terminating, kept in memory from
//! the namespaces watch cache (as kube-apiserver's NamespaceLifecycle admission keeps an
//! informer), so a create in a namespace does not read the store to learn that its namespace
//! is there.
//!
//! Only the common answer comes from memory: a namespace the index holds as existing and not
//! terminating. Anything else (not in the index yet, terminating, the index not filled yet) is
//! checked against the store, so a namespace created a moment ago is never refused and a
//! refusal is always the store's word. The index trails the store by the time a watch event
//! takes to arrive: a create racing its namespace's deletion can slip in, as with kube, and
//! the namespace controller, which deletes until the namespace is empty, removes it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use skiff_store::Revision;

use skiff_apimachinery::ResourceInfo;

use crate::object;
use crate::state::AppState;
use crate::watchcache::{CachedEvent, EventType};

/// What the index knows of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Active,
    Terminating,
    /// Deleted: kept so an older event arriving late cannot bring it back.
    Gone,
}

/// Namespace name -> its state and the revision that state is from; `None` until the first
/// list.
#[derive(Debug, Default)]
pub struct NamespaceIndex {
    namespaces: RwLock<Option<HashMap<String, (Revision, Known)>>>,
}

impl NamespaceIndex {
    /// An empty index: [`follow`] fills it.
    pub fn new() -> NamespaceIndex {
        NamespaceIndex::default()
    }

    /// Whether the index knows `namespace` exists and is not terminating.
    pub fn is_active(&self, namespace: &str) -> bool {
        self.namespaces
            .read()
            .ok()
            .and_then(|index| index.as_ref().and_then(|m| m.get(namespace).copied()))
            .is_some_and(|(_, known)| known == Known::Active)
    }

    /// Records what this server just wrote to a namespace (before its watch event arrives),
    /// so its own next request already sees a namespace it marked terminating or deleted.
    pub fn written(&self, info: &ResourceInfo, ns: &Value, revision: Revision, deleted: bool) {
        if info.group.is_empty() && info.plural == "namespaces" {
            self.set(object::name(ns), revision, known(ns, deleted));
        }
    }

    fn set(&self, name: &str, revision: Revision, state: Known) {
        if let Ok(mut namespaces) = self.namespaces.write()
            && let Some(index) = namespaces.as_mut()
        {
            match index.get_mut(name) {
                Some(entry) if entry.0 > revision => {}
                Some(entry) => *entry = (revision, state),
                None => {
                    index.insert(name.to_string(), (revision, state));
                }
            }
        }
    }

    fn replace(&self, revision: Revision, objects: &[Value]) {
        let mut index: HashMap<String, (Revision, Known)> = objects
            .iter()
            .map(|ns| (object::name(ns).to_string(), (revision, known(ns, false))))
            .collect();
        if let Ok(mut namespaces) = self.namespaces.write() {
            // What this server wrote after the list's revision stays.
            for (name, entry) in namespaces.iter().flatten() {
                if entry.0 > revision {
                    index.insert(name.clone(), *entry);
                }
            }
            *namespaces = Some(index);
        }
    }

    fn apply(&self, event: &CachedEvent) {
        let state = known(&event.object, event.kind == EventType::Deleted);
        self.set(object::name(&event.object), event.revision, state);
    }
}

fn known(ns: &Value, deleted: bool) -> Known {
    if deleted {
        Known::Gone
    } else if terminating(ns) {
        Known::Terminating
    } else {
        Known::Active
    }
}

/// Terminating: a deletion timestamp or the `Terminating` phase.
fn terminating(ns: &Value) -> bool {
    object::is_deleting(ns)
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}

struct IndexSink;

impl crate::mirror::Sink for IndexSink {
    fn replace(&self, state: &AppState, revision: Revision, objects: &[Value]) {
        state.namespaces.replace(revision, objects);
    }

    fn apply(&self, state: &AppState, event: &CachedEvent) {
        state.namespaces.apply(event);
    }
}

/// Starts following the namespaces until the server shuts down.
pub fn follow(state: &Arc<AppState>) {
    crate::mirror::follow(state, ("", "v1", "namespaces"), IndexSink);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: EventType, revision: Revision, ns: Value) -> CachedEvent {
        CachedEvent {
            kind,
            revision,
            object: ns,
            prev: None,
        }
    }

    #[test]
    fn only_known_live_namespaces_are_active() {
        let index = NamespaceIndex::new();
        assert!(
            !index.is_active("default"),
            "nothing is known before the list"
        );
        index.replace(
            5,
            &[
                json!({"metadata": {"name": "default"}}),
                json!({"metadata": {"name": "going", "deletionTimestamp": "2026-11-27T00:00:00Z"}}),
            ],
        );
        assert!(index.is_active("default"));
        assert!(!index.is_active("going"));
        assert!(!index.is_active("absent"));
        index.apply(&event(
            EventType::Added,
            6,
            json!({"metadata": {"name": "new"}}),
        ));
        assert!(index.is_active("new"));
        index.apply(&event(
            EventType::Modified,
            7,
            json!({"metadata": {"name": "new"}, "status": {"phase": "Terminating"}}),
        ));
        assert!(!index.is_active("new"));
        index.apply(&event(
            EventType::Deleted,
            8,
            json!({"metadata": {"name": "default"}}),
        ));
        assert!(!index.is_active("default"));
    }

    #[test]
    fn own_writes_count_at_once_and_older_events_do_not_undo_them() {
        let index = NamespaceIndex::new();
        let info = skiff_apimachinery::Registry::builtin()
            .find("", "v1", "namespaces")
            .unwrap()
            .clone();
        index.replace(5, &[json!({"metadata": {"name": "app"}})]);
        let deleting =
            json!({"metadata": {"name": "app", "deletionTimestamp": "2026-11-27T00:00:00Z"}});
        index.written(&info, &deleting, 9, false);
        assert!(!index.is_active("app"));
        // An event from before the write, arriving late.
        index.apply(&event(
            EventType::Modified,
            7,
            json!({"metadata": {"name": "app"}}),
        ));
        assert!(!index.is_active("app"));
        index.written(&info, &deleting, 10, true);
        index.apply(&event(EventType::Modified, 9, deleting.clone()));
        assert!(!index.is_active("app"), "a deleted namespace stays gone");
        // A relist at an older revision keeps the newer own write.
        index.replace(8, &[json!({"metadata": {"name": "app"}})]);
        assert!(!index.is_active("app"));
    }
}
