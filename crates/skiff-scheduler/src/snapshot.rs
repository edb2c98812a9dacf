//! A consistent view of the cluster for one scheduling decision: every node with the pods
//! already on it (bound, or assumed by this scheduler and not yet seen bound).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use crate::affinity::effective_taints;
use crate::default_spread::Workloads;
use crate::quantity::{pod_requests, resources_of, value};
use crate::resources::Resources;

/// A host port in use on a node: protocol, host IP (`0.0.0.0` for any) and port.
pub type HostPort = (String, String, i32);

/// One node and what runs on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node.
    pub node: Arc<Node>,
    /// The pods on it that still hold resources (not Succeeded or Failed).
    pub pods: Vec<Arc<Pod>>,
    /// The sum of those pods' requests.
    pub requested: Resources,
    /// The host ports those pods use.
    pub used_ports: HashSet<HostPort>,
    /// `allocatable()` and `allowed_pods()`, read from the node once (a decision asks every
    /// node, for every pod).
    cached: (Resources, u64),
    /// The node's effective taints (its own plus the not-ready/unreachable one), worked out
    /// once per node change instead of once per pod and node.
    taints: Vec<Taint>,
    /// The pods again, by namespace: topology spreading counts the pods of one namespace.
    by_namespace: HashMap<String, Vec<Arc<Pod>>>,
    /// The pods with required pod anti-affinity terms, which every decision checks.
    anti_affinity: Vec<Arc<Pod>>,
}

impl NodeInfo {
    /// A node with no pods.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let cached = (allocatable_of(&node), allowed_pods_of(&node));
        let taints = effective_taints(&node);
        NodeInfo {
            node,
            pods: Vec::new(),
            requested: Resources::default(),
            used_ports: HashSet::new(),
            cached,
            taints,
            by_namespace: HashMap::new(),
            anti_affinity: Vec::new(),
        }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    /// The node's labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.node.metadata.labels.as_ref().unwrap_or(&EMPTY)
    }

    /// CPU and memory the node offers to pods (`status.allocatable`, else `capacity`).
    pub fn allocatable(&self) -> Resources {
        self.cached.0
    }

    /// How many pods the node accepts (`allocatable.pods`, 110 when unset).
    pub fn allowed_pods(&self) -> u64 {
        self.cached.1
    }

    /// The node's taints plus the `not-ready`/`unreachable` one of a node that is not Ready
    /// ([`effective_taints`]).
    pub fn taints(&self) -> &[Taint] {
        &self.taints
    }

    /// The pods on the node in namespace `ns`.
    pub fn pods_in(&self, ns: &str) -> &[Arc<Pod>] {
        self.by_namespace.get(ns).map_or(&[], Vec::as_slice)
    }

    /// The pods on the node with required pod anti-affinity terms.
    pub fn with_required_anti_affinity(&self) -> &[Arc<Pod>] {
        &self.anti_affinity
    }

    /// Replaces the node object (a watch update), keeping its pods.
    pub fn set_node(&mut self, node: Arc<Node>) {
        self.cached = (allocatable_of(&node), allowed_pods_of(&node));
        self.taints = effective_taints(&node);
        self.node = node;
    }

    /// Counts `pod` as running here.
    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        self.requested = self.requested.plus(pod_requests(&pod));
        self.used_ports.extend(host_ports(&pod));
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        self.by_namespace
            .entry(ns)
            .or_default()
            .push(Arc::clone(&pod));
        if has_required_anti_affinity(&pod) {
            self.anti_affinity.push(Arc::clone(&pod));
        }
        self.pods.push(pod);
    }

    /// Stops counting the pod with this uid here; the pod, if it was here.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<Pod>> {
        let same = |p: &Arc<Pod>| p.metadata.uid.as_deref() == Some(uid);
        let at = self.pods.iter().position(same)?;
        let pod = self.pods.remove(at);
        self.requested = self.requested.minus(pod_requests(&pod));
        if !host_ports(&pod).is_empty() {
            self.used_ports = self.pods.iter().flat_map(|p| host_ports(p)).collect();
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        if let Some(list) = self.by_namespace.get_mut(ns) {
            list.retain(|p| !same(p));
            if list.is_empty() {
                self.by_namespace.remove(ns);
            }
        }
        self.anti_affinity.retain(|p| !same(p));
        Some(pod)
    }
}

/// Whether a pod has required pod anti-affinity terms.
fn has_required_anti_affinity(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .is_some_and(|terms| !terms.is_empty())
}

/// CPU and memory a node offers to pods (`status.allocatable`, else `capacity`).
fn allocatable_of(node: &Node) -> Resources {
    let status = node.status.as_ref();
    let list = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    resources_of(list)
}

/// How many pods a node accepts (`allocatable.pods`, 110 when unset).
fn allowed_pods_of(node: &Node) -> u64 {
    let status = node.status.as_ref();
    status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()))
        .and_then(|l| l.get("pods"))
        .map(value)
        .unwrap_or(110)
}

/// The host ports a pod asks for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            let ip = p
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".to_string());
            let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".to_string());
            Some((protocol, ip, port))
        })
        .collect()
}

/// Whether a pod still holds its node's resources.
pub fn is_active(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Every node and the pods placed on it.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The nodes, sorted by name.
    pub nodes: Vec<NodeInfo>,
    /// The Services and controllers whose selectors make the default spreading of pods
    /// without constraints of their own.
    pub workloads: Arc<Workloads>,
}

impl Snapshot {
    /// Builds a snapshot from nodes and pods; pods on unknown nodes and finished pods are left
    /// out.
    pub fn new(
        nodes: impl IntoIterator<Item = Arc<Node>>,
        pods: impl IntoIterator<Item = Arc<Pod>>,
    ) -> Snapshot {
        let mut nodes: Vec<NodeInfo> = nodes.into_iter().map(NodeInfo::new).collect();
        nodes.sort_by(|a, b| a.name().cmp(b.name()));
        let mut snapshot = Snapshot {
            nodes,
            workloads: Arc::default(),
        };
        for pod in pods {
            snapshot.add_pod(pod);
        }
        snapshot
    }

    /// Places a bound pod on its node (no-op for pods not bound to a known node).
    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        if !is_active(&pod) {
            return;
        }
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return;
        };
        if let Some(info) = self.node_mut(&node) {
            info.add_pod(pod);
        }
    }

    /// Stops counting the pod with this uid on node `node`.
    pub fn remove_pod(&mut self, node: &str, uid: &str) -> Option<Arc<Pod>> {
        self.node_mut(node)?.remove_pod(uid)
    }

    /// Adds the node, or replaces the object of a known one (keeping its pods); whether it
    /// is new.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> bool {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        match self.nodes.binary_search_by(|n| n.name().cmp(name)) {
            Ok(i) => {
                if let Some(info) = self.nodes.get_mut(i) {
                    info.set_node(node);
                }
                false
            }
            Err(i) => {
                self.nodes.insert(i, NodeInfo::new(node));
                true
            }
        }
    }

    /// Removes the node called `name` with its pods.
    pub fn remove_node(&mut self, name: &str) -> Option<NodeInfo> {
        let i = self.nodes.binary_search_by(|n| n.name().cmp(name)).ok()?;
        Some(self.nodes.remove(i))
    }

    /// The same snapshot with these Services and controllers for default spreading.
    pub fn with_workloads(mut self, workloads: Arc<Workloads>) -> Snapshot {
        self.workloads = workloads;
        self
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes
            .binary_search_by(|n| n.name().cmp(name))
            .ok()
            .and_then(|i| self.nodes.get(i))
    }

    /// The node called `name`, to change.
    pub fn node_mut(&mut self, name: &str) -> Option<&mut NodeInfo> {
        let i = self.nodes.binary_search_by(|n| n.name().cmp(name)).ok()?;
        self.nodes.get_mut(i)
    }
}
