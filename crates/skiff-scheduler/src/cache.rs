//! The scheduler's view of the cluster, kept up to date from the node and bound-pod watches
//! instead of being rebuilt for every pass: a [`Snapshot`] plus where each placed pod is.
//! Placed pods are the bound ones the watch reported and the ones this scheduler assumed
//! (decided and being bound, not yet seen bound), so the next decision already counts them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::watcher;

use crate::snapshot::{Snapshot, is_active};

/// One watch event for the cache.
#[derive(Debug)]
pub enum ClusterEvent {
    /// From the watch of nodes.
    Node(Box<watcher::Event<Node>>),
    /// From the watch of bound pods (`spec.nodeName!=`).
    Pod(Box<watcher::Event<Pod>>),
}

impl ClusterEvent {
    /// A node watch event.
    pub fn node(event: watcher::Event<Node>) -> ClusterEvent {
        ClusterEvent::Node(Box::new(event))
    }

    /// A bound-pod watch event.
    pub fn pod(event: watcher::Event<Pod>) -> ClusterEvent {
        ClusterEvent::Pod(Box::new(event))
    }
}

/// Where a placed pod is.
#[derive(Debug)]
struct Placed {
    pod: Arc<Pod>,
    node: String,
    /// When this scheduler assumed it; `None` once the watch showed it bound.
    assumed: Option<Instant>,
}

/// Nodes and placed pods, updated event by event.
#[derive(Debug, Default)]
pub struct ClusterCache {
    snapshot: Snapshot,
    /// Every placed pod by uid. A pod counts in the snapshot while its node is known; the pods
    /// of a node that appears later are counted then.
    placed: HashMap<String, Placed>,
    /// `(assumed at, uid)` in the order assumed, so expiry looks only at the oldest (an entry
    /// whose pod was since seen bound, forgotten or assumed again is skipped).
    assumed_order: VecDeque<(Instant, String)>,
    /// Objects of a watch being (re)listed, swapped in at its end.
    listing_nodes: Option<Vec<Arc<Node>>>,
    listing_pods: Option<Vec<Arc<Pod>>>,
    nodes_synced: bool,
    pods_synced: bool,
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn node_of(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

impl ClusterCache {
    /// The current view.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The current view, to change (its Services and controllers for default spreading).
    pub fn snapshot_mut(&mut self) -> &mut Snapshot {
        &mut self.snapshot
    }

    /// Whether both watches have listed everything once.
    pub fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced
    }

    /// Applies one watch event.
    pub fn apply(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::Node(event) => self.apply_node_event(*event),
            ClusterEvent::Pod(event) => self.apply_pod_event(*event),
        }
    }

    fn apply_node_event(&mut self, event: watcher::Event<Node>) {
        match event {
            watcher::Event::Init => self.listing_nodes = Some(Vec::new()),
            watcher::Event::InitApply(node) => {
                self.listing_nodes
                    .get_or_insert_with(Vec::new)
                    .push(Arc::new(node));
            }
            watcher::Event::InitDone => {
                let nodes = self.listing_nodes.take().unwrap_or_default();
                self.replace_nodes(nodes);
                self.nodes_synced = true;
            }
            watcher::Event::Apply(node) => self.apply_node(Arc::new(node)),
            watcher::Event::Delete(node) => {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                self.snapshot.remove_node(name);
            }
        }
    }

    fn apply_pod_event(&mut self, event: watcher::Event<Pod>) {
        match event {
            watcher::Event::Init => self.listing_pods = Some(Vec::new()),
            watcher::Event::InitApply(pod) => {
                self.listing_pods
                    .get_or_insert_with(Vec::new)
                    .push(Arc::new(pod));
            }
            watcher::Event::InitDone => {
                let pods = self.listing_pods.take().unwrap_or_default();
                self.replace_pods(pods);
                self.pods_synced = true;
            }
            watcher::Event::Apply(pod) => self.apply_pod(Arc::new(pod)),
            watcher::Event::Delete(pod) => self.remove(&uid_of(&pod)),
        }
    }

    /// A node added or changed; a new node gets the placed pods already bound to it.
    fn apply_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if self.snapshot.upsert_node(node) {
            let waiting: Vec<Arc<Pod>> = self
                .placed
                .values()
                .filter(|p| p.node == name)
                .map(|p| Arc::clone(&p.pod))
                .collect();
            for pod in waiting {
                self.snapshot.add_pod(pod);
            }
        }
    }

    /// Every node anew (a watch (re)list): the snapshot is rebuilt with the placed pods.
    fn replace_nodes(&mut self, nodes: Vec<Arc<Node>>) {
        let workloads = Arc::clone(&self.snapshot.workloads);
        self.snapshot = Snapshot::new(nodes, self.placed.values().map(|p| Arc::clone(&p.pod)))
            .with_workloads(workloads);
    }

    /// Every bound pod anew (a watch (re)list): assumptions not listed are kept.
    fn replace_pods(&mut self, pods: Vec<Arc<Pod>>) {
        self.placed.retain(|_, p| p.assumed.is_some());
        for pod in pods {
            self.insert(pod, None);
        }
        let nodes: Vec<Arc<Node>> = self
            .snapshot
            .nodes
            .iter()
            .map(|n| Arc::clone(&n.node))
            .collect();
        self.replace_nodes(nodes);
    }

    /// Records `pod` in `placed` only (no snapshot change); finished pods are dropped.
    fn insert(&mut self, pod: Arc<Pod>, assumed: Option<Instant>) {
        let uid = uid_of(&pod);
        let Some(node) = node_of(&pod).map(str::to_string) else {
            return;
        };
        if !is_active(&pod) {
            self.placed.remove(&uid);
            return;
        }
        self.placed.insert(uid, Placed { pod, node, assumed });
    }

    /// A bound pod added or changed (an assumed one is now seen bound).
    fn apply_pod(&mut self, pod: Arc<Pod>) {
        let uid = uid_of(&pod);
        self.remove(&uid);
        self.insert(Arc::clone(&pod), None);
        if self.placed.contains_key(&uid) {
            self.snapshot.add_pod(pod);
        }
    }

    /// Forgets the pod with this uid.
    fn remove(&mut self, uid: &str) {
        if let Some(old) = self.placed.remove(uid) {
            self.snapshot.remove_pod(&old.node, uid);
        }
    }

    /// Counts `pod` (with its `spec.nodeName` set to the chosen node) as placed while it is
    /// being bound.
    pub fn assume(&mut self, pod: Arc<Pod>, now: Instant) {
        let uid = uid_of(&pod);
        self.remove(&uid);
        self.assumed_order.push_back((now, uid.clone()));
        self.insert(Arc::clone(&pod), Some(now));
        if self.placed.contains_key(&uid) {
            self.snapshot.add_pod(pod);
        }
    }

    /// Drops the assumption about the pod with this uid (its binding failed); a pod the watch
    /// already showed bound stays.
    pub fn forget(&mut self, uid: &str) {
        if self.is_assumed(uid) {
            self.remove(uid);
        }
    }

    /// Drops assumptions older than `ttl` (bindings the watch never confirmed); the uids of
    /// the pods dropped.
    pub fn expire(&mut self, now: Instant, ttl: Duration) -> Vec<String> {
        let mut expired = Vec::new();
        while let Some((at, _)) = self.assumed_order.front() {
            if now.duration_since(*at) < ttl {
                break;
            }
            let Some((at, uid)) = self.assumed_order.pop_front() else {
                break;
            };
            if self.placed.get(&uid).is_some_and(|p| p.assumed == Some(at)) {
                self.remove(&uid);
                expired.push(uid);
            }
        }
        expired
    }

    /// Whether this scheduler assumed the pod and the watch has not shown it bound yet.
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.placed.get(uid).is_some_and(|p| p.assumed.is_some())
    }

    /// Whether the watch showed the pod bound.
    pub fn is_bound(&self, uid: &str) -> bool {
        self.placed.get(uid).is_some_and(|p| p.assumed.is_none())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    fn pod(uid: &str, node: &str, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": uid, "namespace": "default", "uid": uid},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                "resources": {"requests": {"cpu": cpu}}}]},
        }))
        .unwrap()
    }

    fn cpu_on(cache: &ClusterCache, node: &str) -> Option<(u64, usize)> {
        cache
            .snapshot()
            .node(node)
            .map(|n| (n.requested.milli_cpu, n.pods.len()))
    }

    fn synced() -> ClusterCache {
        let mut cache = ClusterCache::default();
        cache.apply(ClusterEvent::node(watcher::Event::Init));
        cache.apply(ClusterEvent::node(watcher::Event::InitApply(node("b"))));
        cache.apply(ClusterEvent::node(watcher::Event::InitApply(node("a"))));
        assert!(!cache.synced());
        cache.apply(ClusterEvent::node(watcher::Event::InitDone));
        cache.apply(ClusterEvent::pod(watcher::Event::Init));
        cache.apply(ClusterEvent::pod(watcher::Event::InitApply(pod(
            "p1", "a", "1",
        ))));
        cache.apply(ClusterEvent::pod(watcher::Event::InitDone));
        assert!(cache.synced());
        cache
    }

    #[test]
    fn watch_events_keep_the_snapshot_as_a_rebuild_would() {
        let mut cache = synced();
        let names: Vec<&str> = cache.snapshot().nodes.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["a", "b"], "sorted by name");
        assert_eq!(cpu_on(&cache, "a"), Some((1000, 1)));
        // An update replaces the pod; a finished pod no longer counts; a delete forgets it.
        cache.apply(ClusterEvent::pod(watcher::Event::Apply(pod(
            "p1", "a", "2",
        ))));
        assert_eq!(cpu_on(&cache, "a"), Some((2000, 1)));
        let mut done = pod("p1", "a", "2");
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        cache.apply(ClusterEvent::pod(watcher::Event::Apply(done)));
        assert_eq!(cpu_on(&cache, "a"), Some((0, 0)));
        cache.apply(ClusterEvent::pod(watcher::Event::Apply(pod(
            "p2", "b", "1",
        ))));
        cache.apply(ClusterEvent::pod(watcher::Event::Delete(pod(
            "p2", "b", "1",
        ))));
        assert_eq!(cpu_on(&cache, "b"), Some((0, 0)));
        // A pod on a node not known yet counts once the node appears; a deleted node goes.
        cache.apply(ClusterEvent::pod(watcher::Event::Apply(pod(
            "p3", "c", "1",
        ))));
        assert_eq!(cpu_on(&cache, "c"), None);
        cache.apply(ClusterEvent::node(watcher::Event::Apply(node("c"))));
        assert_eq!(cpu_on(&cache, "c"), Some((1000, 1)));
        cache.apply(ClusterEvent::node(watcher::Event::Apply(node("c"))));
        assert_eq!(
            cpu_on(&cache, "c"),
            Some((1000, 1)),
            "an update keeps the pods"
        );
        cache.apply(ClusterEvent::node(watcher::Event::Delete(node("c"))));
        assert_eq!(cpu_on(&cache, "c"), None);
        let names: Vec<&str> = cache.snapshot().nodes.iter().map(|n| n.name()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn assumed_pods_count_until_seen_bound_forgotten_or_expired() {
        let mut cache = synced();
        let start = Instant::now();
        cache.assume(Arc::new(pod("p2", "b", "1")), start);
        assert!(cache.is_assumed("p2") && !cache.is_bound("p2"));
        assert_eq!(cpu_on(&cache, "b"), Some((1000, 1)));
        // The watch shows it bound: counted once, no longer assumed.
        cache.apply(ClusterEvent::pod(watcher::Event::Apply(pod(
            "p2", "b", "1",
        ))));
        assert!(cache.is_bound("p2") && !cache.is_assumed("p2"));
        assert_eq!(cpu_on(&cache, "b"), Some((1000, 1)));
        cache.forget("p2");
        assert_eq!(
            cpu_on(&cache, "b"),
            Some((1000, 1)),
            "bound pods are not forgotten"
        );
        // A failed binding and an assumption the watch never confirmed are dropped.
        cache.assume(Arc::new(pod("p3", "b", "1")), start);
        cache.forget("p3");
        assert_eq!(cpu_on(&cache, "b"), Some((1000, 1)));
        cache.assume(Arc::new(pod("p4", "a", "1")), start);
        let expired = cache.expire(start + Duration::from_secs(10), Duration::from_secs(30));
        assert!(expired.is_empty());
        assert_eq!(cpu_on(&cache, "a"), Some((2000, 2)));
        let expired = cache.expire(start + Duration::from_secs(30), Duration::from_secs(30));
        assert_eq!(expired, ["p4"], "p2 was seen bound, p3 forgotten");
        assert_eq!(cpu_on(&cache, "a"), Some((1000, 1)));
        // A relist keeps assumptions it does not list yet.
        cache.assume(Arc::new(pod("p5", "a", "1")), start);
        cache.apply(ClusterEvent::pod(watcher::Event::Init));
        cache.apply(ClusterEvent::pod(watcher::Event::InitApply(pod(
            "p1", "a", "1",
        ))));
        cache.apply(ClusterEvent::pod(watcher::Event::InitDone));
        assert_eq!(cpu_on(&cache, "a"), Some((2000, 2)));
        assert_eq!(cpu_on(&cache, "b"), Some((0, 0)), "p2 was not listed");
    }
}
