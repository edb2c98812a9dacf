//! Filter plugins: whether a pod may run on a node, and if not why, in kube-scheduler's words.
//! They run in kube-scheduler's order and the first one that fails decides a node's reasons.

use std::cell::OnceCell;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, Taint, Toleration};

use crate::affinity::{node_matches_pod, term_selects, tolerates, untolerated_among};
use crate::quantity::pod_requests;
use crate::resources::{Resources, fits};
use crate::snapshot::{HostPort, NodeInfo, Snapshot, host_ports};

/// `NodeUnschedulable`.
pub const UNSCHEDULABLE: &str = "node(s) were unschedulable";
/// `NodeName`.
pub const NODE_NAME: &str = "node(s) didn't match the requested node name";
/// `NodeAffinity`.
pub const NODE_AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
/// `NodePorts`.
pub const NODE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
/// `NodeResourcesFit`, pod count.
pub const TOO_MANY_PODS: &str = "Too many pods";
/// `InterPodAffinity`, the pod's own affinity.
pub const POD_AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// `InterPodAffinity`, the pod's own anti-affinity.
pub const POD_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
/// `InterPodAffinity`, anti-affinity of pods already running.
pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// The `TaintToleration` reason for one taint.
pub fn taint_reason(taint: &Taint) -> String {
    format!(
        "node(s) had untolerated taint {{{}: {}}}",
        taint.key,
        taint.value.as_deref().unwrap_or_default()
    )
}

/// What the filters need to know about one pod against one snapshot, worked out once per
/// decision instead of once per node: its requests, its host ports, and (on first need) the
/// domains where the required anti-affinity of pods already placed refuses it.
#[derive(Debug, Clone)]
pub struct Prepared {
    requests: Resources,
    ports: Vec<HostPort>,
    /// `(topologyKey, value)`: a node with this label value is refused (`EXISTING_ANTI_AFFINITY`).
    refused_domains: OnceCell<Vec<(String, String)>>,
    /// The pod's `DoNotSchedule` topology spread constraints, counted on first need.
    spread: OnceCell<crate::topology_spread::Prepared>,
}

impl Prepared {
    /// Prepares `pod` for filtering; use it with one snapshot only.
    pub fn new(pod: &Pod) -> Prepared {
        Prepared {
            requests: pod_requests(pod),
            ports: host_ports(pod),
            refused_domains: OnceCell::new(),
            spread: OnceCell::new(),
        }
    }

    /// The `PodTopologySpread` filter's counts (one pass over the snapshot, the first time).
    fn spread(&self, pod: &Pod, snapshot: &Snapshot) -> &crate::topology_spread::Prepared {
        self.spread
            .get_or_init(|| crate::topology_spread::Prepared::new(pod, snapshot))
    }

    /// The domains where placed pods' required anti-affinity refuses `pod` (one pass over the
    /// placed pods that have such terms, the first time).
    fn refused_domains(&self, pod: &Pod, snapshot: &Snapshot) -> &[(String, String)] {
        self.refused_domains.get_or_init(|| {
            let mut refused = Vec::new();
            for info in &snapshot.nodes {
                for existing in info.with_required_anti_affinity() {
                    let terms = existing
                        .spec
                        .as_ref()
                        .and_then(|s| s.affinity.as_ref())
                        .and_then(|a| a.pod_anti_affinity.as_ref())
                        .and_then(|a| {
                            a.required_during_scheduling_ignored_during_execution
                                .as_deref()
                        })
                        .unwrap_or_default();
                    let existing_ns = existing.metadata.namespace.as_deref().unwrap_or_default();
                    for term in terms {
                        if !term_selects(term, existing_ns, pod) {
                            continue;
                        }
                        if let Some(value) =
                            topology_value(snapshot, info.name(), &term.topology_key)
                        {
                            refused.push((term.topology_key.clone(), value.clone()));
                        }
                    }
                }
            }
            refused
        })
    }
}

/// Runs every filter for `pod` on `node`; `Err` holds the reasons of the first that fails.
pub fn run_filters(pod: &Pod, node: &NodeInfo, snapshot: &Snapshot) -> Result<(), Vec<String>> {
    run_prepared(pod, &Prepared::new(pod), node, snapshot)
}

/// [`run_filters`] with the pod's [`Prepared`] view of `snapshot` (for many nodes in a row).
pub fn run_prepared(
    pod: &Pod,
    prepared: &Prepared,
    node: &NodeInfo,
    snapshot: &Snapshot,
) -> Result<(), Vec<String>> {
    let one = |r: &str| Err(vec![r.to_string()]);
    let spec = pod.spec.as_ref();
    let n = &node.node;
    // NodeUnschedulable
    if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        let tolerations: &[Toleration] = spec
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        if !tolerations.iter().any(|t| tolerates(t, &taint)) {
            return one(UNSCHEDULABLE);
        }
    }
    // NodeName
    if let Some(wanted) = spec.and_then(|s| s.node_name.as_deref())
        && !wanted.is_empty()
        && wanted != node.name()
    {
        return one(NODE_NAME);
    }
    // TaintToleration
    if let Some(taint) = untolerated_among(pod, node.taints()) {
        return Err(vec![taint_reason(taint)]);
    }
    // NodeAffinity
    if !node_matches_pod(pod, n) {
        return one(NODE_AFFINITY);
    }
    // NodePorts
    let conflict = prepared.ports.iter().any(|(proto, ip, port)| {
        node.used_ports.iter().any(|(p2, ip2, port2)| {
            proto == p2 && port == port2 && (ip == ip2 || ip == "0.0.0.0" || ip2 == "0.0.0.0")
        })
    });
    if conflict {
        return one(NODE_PORTS);
    }
    // NodeResourcesFit
    let mut reasons = Vec::new();
    if node.pods.len() as u64 + 1 > node.allowed_pods() {
        reasons.push(TOO_MANY_PODS.to_string());
    }
    if let Err(r) = fits(node.allocatable(), node.requested, prepared.requests) {
        reasons.extend(r.into_iter().map(str::to_string));
    }
    if !reasons.is_empty() {
        return Err(reasons);
    }
    // PodTopologySpread
    if crate::topology_spread::has_constraints(pod) {
        prepared
            .spread(pod, snapshot)
            .check(node)
            .map_err(|r| vec![r.to_string()])?;
    }
    // InterPodAffinity
    inter_pod_affinity(pod, prepared, node, snapshot).map_err(|r| vec![r.to_string()])
}

/// The value of `key` on the node called `name` in the snapshot.
fn topology_value<'a>(snapshot: &'a Snapshot, name: &str, key: &str) -> Option<&'a String> {
    snapshot.node(name).and_then(|n| n.labels().get(key))
}

/// Pods on nodes sharing the candidate's value of `key` that the term selects.
fn matching_in_domain<'a>(
    snapshot: &'a Snapshot,
    candidate: &NodeInfo,
    term: &'a PodAffinityTerm,
    owner_ns: &'a str,
) -> impl Iterator<Item = &'a Pod> + 'a {
    let domain = candidate.labels().get(&term.topology_key).cloned();
    snapshot
        .nodes
        .iter()
        .filter(move |n| domain.is_some() && n.labels().get(&term.topology_key) == domain.as_ref())
        .flat_map(|n| n.pods.iter())
        .map(|p| p.as_ref())
        .filter(move |p| term_selects(term, owner_ns, p))
}

fn inter_pod_affinity(
    pod: &Pod,
    prepared: &Prepared,
    node: &NodeInfo,
    snapshot: &Snapshot,
) -> Result<(), &'static str> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    // Anti-affinity of the pods already placed.
    let labels = node.labels();
    if prepared
        .refused_domains(pod, snapshot)
        .iter()
        .any(|(key, value)| labels.get(key) == Some(value))
    {
        return Err(EXISTING_ANTI_AFFINITY);
    }
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let required = affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    for term in required {
        if matching_in_domain(snapshot, node, term, ns)
            .next()
            .is_some()
        {
            continue;
        }
        // The first pod of a group may go anywhere the topology key exists, if it matches its
        // own term and no other pod does.
        let none_anywhere = snapshot
            .nodes
            .iter()
            .flat_map(|n| n.pods.iter())
            .all(|p| !term_selects(term, ns, p));
        let labels = pod.metadata.labels.as_ref().unwrap_or(&EMPTY);
        let self_match = crate::affinity::selector_of(term.label_selector.as_ref())
            .is_some_and(|s| s.matches(labels));
        if !(none_anywhere && self_match && node.labels().contains_key(&term.topology_key)) {
            return Err(POD_AFFINITY);
        }
    }
    let anti = affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    for term in anti {
        if matching_in_domain(snapshot, node, term, ns)
            .next()
            .is_some()
        {
            return Err(POD_ANTI_AFFINITY);
        }
    }
    Ok(())
}
