//! The Node authorizer's graph: which objects each node may read because of the pods bound to
//! it, as kube-apiserver's node authorizer keeps it. It is built from one list and then kept
//! current from the watch caches of pods, service accounts, ingresses and persistent volumes,
//! so a decision reads memory only, never the store.
//!
//! Edges: a pod bound to a node (`spec.nodeName`) gives that node the Secrets, ConfigMaps,
//! PersistentVolumeClaims and the ServiceAccount the pod names ([`super::node::names_in_pod`]),
//! and the image pull Secrets of that ServiceAccount. Skiff's own rule: every node runs the
//! ingress proxy, so a Secret named by some Ingress's `spec.tls[].secretName` (same namespace)
//! is readable by every node. A local-path PersistentVolume belongs to the node its
//! `local.path.provisioner/selected-node` annotation names.
//!
//! The graph trails the store by the time a watch event takes to arrive; a refusal first waits
//! (briefly, in memory) for the graph to catch up with the watch caches, so a node that sees a
//! new pod and at once asks for its Secret is not refused by a graph one event behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::Value;
use skiff_store::Revision;

use super::node::{ANN_VOLUME_NODE, Referenced, names_in_pod};
use crate::object;
use crate::state::AppState;
use crate::watchcache::{CachedEvent, EventType};

/// The resources the graph follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Pods,
    ServiceAccounts,
    Ingresses,
    Volumes,
}

const SOURCES: [Source; 4] = [
    Source::Pods,
    Source::ServiceAccounts,
    Source::Ingresses,
    Source::Volumes,
];

impl Source {
    fn resource(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Source::Pods => ("", "v1", "pods"),
            Source::ServiceAccounts => ("", "v1", "serviceaccounts"),
            Source::Ingresses => ("networking.k8s.io", "v1", "ingresses"),
            Source::Volumes => ("", "v1", "persistentvolumes"),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How long a refusal waits for the graph to catch up with the watch caches.
const CATCH_UP: Duration = Duration::from_secs(2);

type Key = (String, String);

/// What one bound pod gives its node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodEdges {
    node: String,
    refs: Vec<(Referenced, String)>,
}

/// The graph itself (plain data, so its rules are tested without a server).
#[derive(Debug, Default)]
pub struct Graph {
    pods: HashMap<Key, PodEdges>,
    /// (kind, namespace, name, node) → how many bound pods name the object.
    edges: HashMap<(Referenced, String, String, String), usize>,
    /// (namespace, service account) → its image pull Secrets.
    pull_secrets: HashMap<Key, Vec<String>>,
    /// (namespace, ingress) → the Secrets its `spec.tls` names.
    ingress_tls: HashMap<Key, Vec<String>>,
    /// (namespace, secret) → how many Ingresses name it.
    tls_secrets: HashMap<Key, usize>,
    /// PersistentVolume → the node of a local volume.
    local_volumes: HashMap<String, String>,
}

fn key_of(obj: &Value) -> Key {
    (
        object::namespace(obj).to_string(),
        object::name(obj).to_string(),
    )
}

fn names(v: Option<&Value>, pointer: &str) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.pointer(pointer).and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

impl Graph {
    fn bump<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K, add: bool) {
        if add {
            *map.entry(key).or_default() += 1;
        } else if let Some(count) = map.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                map.remove(&key);
            }
        }
    }

    fn set_pod(&mut self, key: Key, edges: Option<PodEdges>) {
        if let Some(old) = self.pods.remove(&key) {
            for (kind, name) in old.refs {
                Self::bump(
                    &mut self.edges,
                    (kind, key.0.clone(), name, old.node.clone()),
                    false,
                );
            }
        }
        if let Some(new) = edges {
            for (kind, name) in &new.refs {
                Self::bump(
                    &mut self.edges,
                    (*kind, key.0.clone(), name.clone(), new.node.clone()),
                    true,
                );
            }
            self.pods.insert(key, new);
        }
    }

    fn set_ingress(&mut self, key: Key, secrets: Vec<String>) {
        if let Some(old) = self.ingress_tls.remove(&key) {
            for name in old {
                Self::bump(&mut self.tls_secrets, (key.0.clone(), name), false);
            }
        }
        if !secrets.is_empty() {
            for name in &secrets {
                Self::bump(&mut self.tls_secrets, (key.0.clone(), name.clone()), true);
            }
            self.ingress_tls.insert(key, secrets);
        }
    }

    fn pod_edges(pod: &Value) -> Option<PodEdges> {
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str)?;
        if node.is_empty() {
            return None;
        }
        let mut refs: Vec<(Referenced, String)> = Vec::new();
        for kind in [
            Referenced::Secret,
            Referenced::ConfigMap,
            Referenced::Claim,
            Referenced::ServiceAccount,
        ] {
            for name in names_in_pod(pod, kind) {
                if !refs.iter().any(|(k, n)| *k == kind && *n == name) {
                    refs.push((kind, name));
                }
            }
        }
        Some(PodEdges {
            node: node.to_string(),
            refs,
        })
    }

    /// Records `obj` of `source` as it is now (`deleted`: gone).
    fn apply(&mut self, source: Source, obj: &Value, deleted: bool) {
        let key = key_of(obj);
        match source {
            Source::Pods => {
                let edges = if deleted { None } else { Self::pod_edges(obj) };
                self.set_pod(key, edges);
            }
            Source::ServiceAccounts => {
                let secrets = names(obj.get("imagePullSecrets"), "/name");
                if deleted || secrets.is_empty() {
                    self.pull_secrets.remove(&key);
                } else {
                    self.pull_secrets.insert(key, secrets);
                }
            }
            Source::Ingresses => {
                let secrets = if deleted {
                    Vec::new()
                } else {
                    names(obj.pointer("/spec/tls"), "/secretName")
                };
                self.set_ingress(key, secrets);
            }
            Source::Volumes => {
                let node = obj
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(ANN_VOLUME_NODE))
                    .and_then(Value::as_str);
                match node {
                    Some(node) if !deleted => {
                        self.local_volumes.insert(key.1, node.to_string());
                    }
                    _ => {
                        self.local_volumes.remove(&key.1);
                    }
                }
            }
        }
    }

    /// Forgets everything of `source` and records `objects` instead.
    fn replace(&mut self, source: Source, objects: &[Value]) {
        match source {
            Source::Pods => {
                let keys: Vec<Key> = self.pods.keys().cloned().collect();
                for key in keys {
                    self.set_pod(key, None);
                }
            }
            Source::ServiceAccounts => self.pull_secrets.clear(),
            Source::Ingresses => {
                self.ingress_tls.clear();
                self.tls_secrets.clear();
            }
            Source::Volumes => self.local_volumes.clear(),
        }
        for obj in objects {
            self.apply(source, obj, false);
        }
    }

    /// Whether the pod `namespace/name` is bound to `node`.
    pub fn pod_on_node(&self, namespace: &str, name: &str, node: &str) -> bool {
        self.pods
            .get(&(namespace.to_string(), name.to_string()))
            .is_some_and(|p| p.node == node)
    }

    /// Whether a pod bound to `node` names the object (for a Secret: also through its
    /// ServiceAccount's image pull Secrets).
    pub fn used_by_pod_on_node(
        &self,
        node: &str,
        kind: Referenced,
        namespace: &str,
        name: &str,
    ) -> bool {
        let edge = |kind: Referenced, name: &str| {
            self.edges.contains_key(&(
                kind,
                namespace.to_string(),
                name.to_string(),
                node.to_string(),
            ))
        };
        if edge(kind, name) {
            return true;
        }
        kind == Referenced::Secret
            && self.pull_secrets.iter().any(|((ns, account), secrets)| {
                ns == namespace
                    && secrets.iter().any(|s| s == name)
                    && edge(Referenced::ServiceAccount, account)
            })
    }

    /// Whether some Ingress in `namespace` names the Secret in its `spec.tls`.
    pub fn ingress_tls_secret(&self, namespace: &str, name: &str) -> bool {
        self.tls_secrets
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// Whether the PersistentVolume is a local volume of `node`.
    pub fn local_volume_of(&self, volume: &str, node: &str) -> bool {
        self.local_volumes.get(volume).is_some_and(|n| n == node)
    }
}

/// The graph and how far each followed resource has been applied.
#[derive(Default)]
pub struct NodeGraph {
    graph: RwLock<Graph>,
    applied: Mutex<[Revision; 4]>,
    progress: tokio::sync::Notify,
}

impl NodeGraph {
    /// An empty graph: [`follow`] fills it.
    pub fn new() -> NodeGraph {
        NodeGraph::default()
    }

    /// Runs `query` on the graph.
    pub fn read<T>(&self, query: impl FnOnce(&Graph) -> T) -> Option<T> {
        self.graph.read().ok().map(|g| query(&g))
    }

    fn write(&self, source: Source, revision: Revision, change: impl FnOnce(&mut Graph)) {
        if let Ok(mut graph) = self.graph.write() {
            change(&mut graph);
        }
        if let Ok(mut applied) = self.applied.lock() {
            let slot = &mut applied[source.index()];
            *slot = (*slot).max(revision);
        }
        self.progress.notify_waiters();
    }

    fn applied(&self, source: Source) -> Revision {
        self.applied
            .lock()
            .map(|a| a[source.index()])
            .unwrap_or_default()
    }

    /// Waits (at most a moment) until the graph has applied every event the watch caches of
    /// its resources hold now; `false` when it did not in time.
    pub async fn catch_up(&self, state: &AppState) -> bool {
        let mut targets = Vec::with_capacity(SOURCES.len());
        for source in SOURCES {
            let (group, version, plural) = source.resource();
            let Some(info) = state.find(group, version, plural) else {
                continue;
            };
            if let Ok(cache) = state.cache(&info).await {
                targets.push((source, cache.last_revision()));
            }
        }
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if targets.iter().all(|(s, at)| self.applied(*s) >= *at) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// The graph's side of following one of its resources.
struct GraphSink(Source);

impl crate::mirror::Sink for GraphSink {
    fn replace(&self, state: &AppState, revision: Revision, objects: &[Value]) {
        let source = self.0;
        state
            .node_graph
            .write(source, revision, |g| g.replace(source, objects));
    }

    fn apply(&self, state: &AppState, event: &CachedEvent) {
        let source = self.0;
        state.node_graph.write(source, event.revision, |g| {
            g.apply(source, &event.object, event.kind == EventType::Deleted);
        });
    }
}

/// Starts following the graph's resources until the server shuts down.
pub fn follow(state: &Arc<AppState>) {
    for source in SOURCES {
        crate::mirror::follow(state, source.resource(), GraphSink(source));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, node: &str, secret: &str) -> Value {
        json!({
            "metadata": {"namespace": "a", "name": name},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "builder",
                "volumes": [{"name": "s", "secret": {"secretName": secret}}],
            },
        })
    }

    #[test]
    fn a_bound_pod_lends_its_node_what_it_names_until_it_goes() {
        let mut g = Graph::default();
        g.apply(Source::Pods, &pod("web", "n1", "tls"), false);
        g.apply(Source::Pods, &pod("api", "n1", "tls"), false);
        assert!(g.used_by_pod_on_node("n1", Referenced::Secret, "a", "tls"));
        assert!(!g.used_by_pod_on_node("n2", Referenced::Secret, "a", "tls"));
        assert!(!g.used_by_pod_on_node("n1", Referenced::Secret, "b", "tls"));
        assert!(g.used_by_pod_on_node("n1", Referenced::ServiceAccount, "a", "builder"));
        assert!(g.pod_on_node("a", "web", "n1"));
        g.apply(Source::Pods, &pod("web", "n1", "tls"), true);
        assert!(g.used_by_pod_on_node("n1", Referenced::Secret, "a", "tls"));
        g.apply(Source::Pods, &pod("api", "n1", "other"), false);
        assert!(!g.used_by_pod_on_node("n1", Referenced::Secret, "a", "tls"));
        assert!(g.used_by_pod_on_node("n1", Referenced::Secret, "a", "other"));
        let unbound = json!({"metadata": {"namespace": "a", "name": "p"}, "spec": {"volumes": [{"name": "s", "secret": {"secretName": "x"}}]}});
        g.apply(Source::Pods, &unbound, false);
        assert!(!g.used_by_pod_on_node("n1", Referenced::Secret, "a", "x"));
    }

    #[test]
    fn service_account_pull_secrets_ingress_tls_and_local_volumes() {
        let mut g = Graph::default();
        g.apply(Source::Pods, &pod("web", "n1", "tls"), false);
        let sa = json!({"metadata": {"namespace": "a", "name": "builder"}, "imagePullSecrets": [{"name": "pull"}]});
        g.apply(Source::ServiceAccounts, &sa, false);
        assert!(g.used_by_pod_on_node("n1", Referenced::Secret, "a", "pull"));
        assert!(!g.used_by_pod_on_node("n2", Referenced::Secret, "a", "pull"));
        g.apply(Source::ServiceAccounts, &sa, true);
        assert!(!g.used_by_pod_on_node("n1", Referenced::Secret, "a", "pull"));

        let ing = json!({"metadata": {"namespace": "a", "name": "site"}, "spec": {"tls": [{"secretName": "site-tls"}, {"hosts": ["x"]}]}});
        g.apply(Source::Ingresses, &ing, false);
        assert!(g.ingress_tls_secret("a", "site-tls"));
        assert!(!g.ingress_tls_secret("b", "site-tls"));
        g.replace(Source::Ingresses, &[]);
        assert!(!g.ingress_tls_secret("a", "site-tls"));

        let pv = json!({"metadata": {"name": "v", "annotations": {ANN_VOLUME_NODE: "n1"}}});
        g.apply(Source::Volumes, &pv, false);
        assert!(g.local_volume_of("v", "n1"));
        assert!(!g.local_volume_of("v", "n2"));
        g.apply(Source::Volumes, &pv, true);
        assert!(!g.local_volume_of("v", "n1"));
    }
}
