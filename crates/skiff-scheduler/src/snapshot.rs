//! A consistent view of the cluster for one scheduling decision: every node with the pods
//! already on it (bound, or assumed by this scheduler and not yet seen bound).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

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
}

impl NodeInfo {
    /// A node with no pods.
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let cached = (allocatable_of(&node), allowed_pods_of(&node));
        NodeInfo {
            node,
            pods: Vec::new(),
            requested: Resources::default(),
            used_ports: HashSet::new(),
            cached,
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

    /// Counts `pod` as running here.
    pub fn add_pod(&mut self, pod: Arc<Pod>) {
        self.requested = self.requested.plus(pod_requests(&pod));
        self.used_ports.extend(host_ports(&pod));
        self.pods.push(pod);
    }
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
