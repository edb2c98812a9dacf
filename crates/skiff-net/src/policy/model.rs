//! NetworkPolicies, Pods and Namespaces translated into plain data: which of this node's pods
//! are isolated in which direction, and for each policy that selects one of them the traffic
//! its rules allow, with every selector, `ipBlock` and named port already resolved to
//! addresses and port numbers.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub use crate::proxy::Protocol;

/// The label the API server puts on every Namespace, holding its name. It is assumed even
/// when a Namespace object lacks it (or is missing), so `namespaceSelector`s by name work.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Everything the policy rules of one node depend on.
#[derive(Debug, Clone, Copy)]
pub struct PolicyInput<'a> {
    /// All NetworkPolicies of the cluster.
    pub policies: &'a [NetworkPolicy],
    /// All Pods of the cluster (peers may be anywhere; rules are enforced for this node's).
    pub pods: &'a [Pod],
    /// All Namespaces (their labels are what `namespaceSelector`s match).
    pub namespaces: &'a [Namespace],
    /// This node's name: policies are enforced for pods with this `spec.nodeName`.
    pub node_name: &'a str,
    /// The pod bridge (`skiff0`).
    pub bridge: &'a str,
}

/// A set of IPv4 addresses: sorted, disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressSet {
    ranges: Vec<(u32, u32)>,
}

impl AddressSet {
    /// The set of the given inclusive ranges (in any order, overlapping or not).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (Ipv4Addr, Ipv4Addr)>) -> AddressSet {
        let mut raw: Vec<(u32, u32)> = ranges
            .into_iter()
            .map(|(a, b)| (u32::from(a), u32::from(b)))
            .filter(|(a, b)| a <= b)
            .collect();
        raw.sort_unstable();
        let mut ranges: Vec<(u32, u32)> = Vec::with_capacity(raw.len());
        for (first, last) in raw {
            match ranges.last_mut() {
                Some(prev) if first <= prev.1.saturating_add(1) => prev.1 = prev.1.max(last),
                _ => ranges.push((first, last)),
            }
        }
        AddressSet { ranges }
    }

    /// The set of single addresses.
    pub fn from_addresses(addresses: impl IntoIterator<Item = Ipv4Addr>) -> AddressSet {
        AddressSet::from_ranges(addresses.into_iter().map(|a| (a, a)))
    }

    /// The addresses of `self` that are not in `other`.
    pub fn minus(&self, other: &AddressSet) -> AddressSet {
        let mut out = Vec::new();
        for &(first, last) in &self.ranges {
            let mut start = u64::from(first);
            let end = u64::from(last);
            for &(cut_first, cut_last) in &other.ranges {
                let (cut_first, cut_last) = (u64::from(cut_first), u64::from(cut_last));
                if cut_last < start || cut_first > end {
                    continue;
                }
                if cut_first > start {
                    out.push((start, cut_first - 1));
                }
                start = cut_last + 1;
                if start > end {
                    break;
                }
            }
            if start <= end {
                out.push((start, end));
            }
        }
        AddressSet {
            ranges: out
                .into_iter()
                .filter_map(|(a, b)| Some((u32::try_from(a).ok()?, u32::try_from(b).ok()?)))
                .collect(),
        }
    }

    /// The union of `self` and `other`.
    pub fn union(&self, other: &AddressSet) -> AddressSet {
        AddressSet::from_ranges(self.ranges().chain(other.ranges()))
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let addr = u32::from(addr);
        let i = self.ranges.partition_point(|&(_, last)| last < addr);
        self.ranges.get(i).is_some_and(|&(first, _)| first <= addr)
    }

    /// Whether it holds no address.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, first to last address, inclusive.
    pub fn ranges(&self) -> impl Iterator<Item = (Ipv4Addr, Ipv4Addr)> + '_ {
        self.ranges
            .iter()
            .map(|&(a, b)| (Ipv4Addr::from(a), Ipv4Addr::from(b)))
    }
}

impl fmt::Display for AddressSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (first, last)) in self.ranges().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if first == last {
                write!(f, "{first}")?;
            } else {
                write!(f, "{first}-{last}")?;
            }
        }
        Ok(())
    }
}

/// The other end of the traffic a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// `from`/`to` absent or empty: any address.
    Any,
    /// These addresses: the selected pods' and the `ipBlock`s' (with their `except`s cut out).
    /// Empty when nothing matches (the rule then allows nothing).
    Only(AddressSet),
}

/// A port range of one protocol (`port`, or `port`..`endPort`; 0-65535 when only the protocol
/// is given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// The protocol.
    pub protocol: Protocol,
    /// The first port.
    pub first: u16,
    /// The last port (inclusive).
    pub last: u16,
}

impl PortRange {
    /// Whether it is every port of its protocol.
    pub fn is_whole_protocol(&self) -> bool {
        self.first == 0 && self.last == u16::MAX
    }
}

/// A named port resolved on one destination pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamedPort {
    /// The destination pod's address.
    pub ip: Ipv4Addr,
    /// The protocol.
    pub protocol: Protocol,
    /// The container port the name stands for on that pod.
    pub port: u16,
}

/// The destination ports a rule allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// `ports` absent or empty: every port and protocol (ICMP included).
    Any,
    /// Only these; both lists empty means nothing (e.g. a named port no destination has).
    Only {
        /// Numeric ports and ranges, per protocol.
        ranges: Vec<PortRange>,
        /// Named ports, resolved per destination pod from its containers' ports.
        named: Vec<NamedPort>,
    },
}

/// One ingress or egress rule: traffic from (ingress) or to (egress) `peers` on `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The sources (ingress) or destinations (egress).
    pub peers: Peers,
    /// The destination ports.
    pub ports: Ports,
}

impl Rule {
    /// Whether the rule can match anything at all.
    pub fn matches_anything(&self) -> bool {
        let peers = match &self.peers {
            Peers::Any => true,
            Peers::Only(set) => !set.is_empty(),
        };
        let ports = match &self.ports {
            Ports::Any => true,
            Ports::Only { ranges, named } => !ranges.is_empty() || !named.is_empty(),
        };
        peers && ports
    }

    fn allows(&self, peer: Ipv4Addr, dst: Ipv4Addr, protocol: Option<Protocol>, port: u16) -> bool {
        let peer_ok = match &self.peers {
            Peers::Any => true,
            Peers::Only(set) => set.contains(peer),
        };
        peer_ok
            && match &self.ports {
                Ports::Any => true,
                Ports::Only { ranges, named } => protocol.is_some_and(|protocol| {
                    ranges
                        .iter()
                        .any(|r| r.protocol == protocol && (r.first..=r.last).contains(&port))
                        || named.contains(&NamedPort {
                            ip: dst,
                            protocol,
                            port,
                        })
                }),
            }
    }
}

/// The rules of one NetworkPolicy that selects at least one pod of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRules {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// `None` when its `policyTypes` lack Ingress; `Some(rules)` otherwise, where no rules
    /// means that the selected pods accept no ingress (beyond what other policies allow).
    pub ingress: Option<Vec<Rule>>,
    /// The same for Egress.
    pub egress: Option<Vec<Rule>>,
}

impl PolicyRules {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A pod of this node (with an IPv4 address, not on the host network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPod {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid.
    pub uid: String,
    /// Its address.
    pub ip: Ipv4Addr,
    /// The host end of its veth ([`crate::podnet::host_veth_name`] of the uid).
    pub host_veth: String,
    /// Indexes into [`PolicyModel::policies`] of the policies that isolate it for ingress;
    /// empty when it is not isolated (all ingress allowed).
    pub ingress: Vec<usize>,
    /// The same for egress.
    pub egress: Vec<usize>,
}

/// Something in the input that was skipped or read narrowly; the rest is still enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network policy {policy}: {detail}")]
pub struct PolicyWarning {
    /// `namespace/name` of the policy (or of the pod, for pod problems).
    pub policy: String,
    /// What was wrong and what was done instead.
    pub detail: String,
}

/// The network policy of one node as plain data; [`crate::policy::render`] prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyModel {
    /// The pod bridge.
    pub bridge: String,
    /// This node's pods, sorted by address, isolated or not.
    pub pods: Vec<LocalPod>,
    /// The policies selecting at least one of them, sorted by namespace and name.
    pub policies: Vec<PolicyRules>,
    /// What was skipped.
    pub warnings: Vec<PolicyWarning>,
}

/// A packet in the original direction of its connection, for [`PolicyModel::allows`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// The source address.
    pub src: Ipv4Addr,
    /// The destination address (after any service DNAT).
    pub dst: Ipv4Addr,
    /// TCP, UDP or SCTP; `None` for anything else (ICMP).
    pub protocol: Option<Protocol>,
    /// The destination port (ignored without a protocol).
    pub port: u16,
}

impl PolicyModel {
    /// Whether any local pod is isolated in any direction.
    pub fn any_isolated(&self) -> bool {
        self.pods
            .iter()
            .any(|p| !p.ingress.is_empty() || !p.egress.is_empty())
    }

    /// Whether the rules let `packet` pass between pods (or a pod and an outside address),
    /// judged as the rendered rules judge forwarded traffic: the egress rules of the source
    /// if it is an isolated local pod, then the ingress rules of the destination if it is one.
    /// Reply packets and traffic from the node itself are not judged at all.
    pub fn allows(&self, packet: &Packet) -> bool {
        let find = |ip: Ipv4Addr| {
            self.pods
                .binary_search_by_key(&ip, |p| p.ip)
                .ok()
                .and_then(|i| self.pods.get(i))
        };
        let passes = |indexes: &[usize], ingress: bool| {
            indexes.iter().any(|&i| {
                let Some(policy) = self.policies.get(i) else {
                    return false;
                };
                let rules = if ingress {
                    &policy.ingress
                } else {
                    &policy.egress
                };
                let peer = if ingress { packet.src } else { packet.dst };
                rules
                    .iter()
                    .flatten()
                    .any(|rule| rule.allows(peer, packet.dst, packet.protocol, packet.port))
            })
        };
        if let Some(src) = find(packet.src) {
            if !src.egress.is_empty() && !passes(&src.egress, false) {
                return false;
            }
        }
        if let Some(dst) = find(packet.dst) {
            if !dst.ingress.is_empty() && !passes(&dst.ingress, true) {
                return false;
            }
        }
        true
    }
}

/// A pod that can be a peer: running or pending with an IPv4 address, not on the host network.
struct PodInfo<'a> {
    namespace: &'a str,
    name: &'a str,
    uid: &'a str,
    ips: Vec<Ipv4Addr>,
    labels: BTreeMap<String, String>,
    local: bool,
    /// Its containers' named ports: (name, protocol, number).
    named_ports: Vec<(&'a str, Protocol, u16)>,
}

fn pod_infos<'a>(input: &PolicyInput<'a>) -> Vec<PodInfo<'a>> {
    let mut out = Vec::new();
    for pod in input.pods {
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.host_network).unwrap_or(false) {
            continue;
        }
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let mut ips: Vec<Ipv4Addr> = status
            .pod_ips
            .iter()
            .flatten()
            .map(|p| p.ip.as_str())
            .chain(status.pod_ip.as_deref())
            .filter_map(|ip| ip.parse().ok())
            .collect();
        ips.sort_unstable();
        ips.dedup();
        if ips.is_empty() {
            continue;
        }
        out.push(PodInfo {
            namespace: pod.metadata.namespace.as_deref().unwrap_or("default"),
            name: pod.metadata.name.as_deref().unwrap_or(""),
            uid: pod.metadata.uid.as_deref().unwrap_or(""),
            ips,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            local: spec.and_then(|s| s.node_name.as_deref()) == Some(input.node_name),
            named_ports: named_ports(pod),
        });
    }
    out
}

/// Whether `selector` matches `labels`; an error names an unusable requirement (the selector
/// then matches nothing).
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<bool, String> {
    for (key, value) in selector.match_labels.iter().flatten() {
        if labels.get(key) != Some(value) {
            return Ok(false);
        }
    }
    for requirement in selector.match_expressions.iter().flatten() {
        let values = requirement.values.as_deref().unwrap_or_default();
        let current = labels.get(&requirement.key);
        let ok = match requirement.operator.as_str() {
            "In" => current.is_some_and(|v| values.contains(v)),
            "NotIn" => current.is_none_or(|v| !values.contains(v)),
            "Exists" => current.is_some(),
            "DoesNotExist" => current.is_none(),
            other => {
                return Err(format!(
                    "label selector operator {other:?} (key {:?}) is unknown; the selector \
                     matches nothing",
                    requirement.key
                ));
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// [`selector_matches`], keeping the first error in `error` (the selector then matches
/// nothing).
fn check_selector(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
    error: &mut Option<String>,
) -> bool {
    match selector_matches(selector, labels) {
        Ok(ok) => ok,
        Err(detail) => {
            error.get_or_insert(detail);
            false
        }
    }
}

/// An IPv4 CIDR as a range (host bits ignored, as Kubernetes accepted them); `Ok(None)` for
/// an IPv6 CIDR (it matches no IPv4 traffic).
fn parse_cidr(text: &str) -> Result<Option<(Ipv4Addr, Ipv4Addr)>, String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a CIDR"))?;
    if addr.contains(':') {
        return Ok(None);
    }
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("{text:?} is not a CIDR"))?;
    let prefix: u32 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{text:?} has a bad prefix length"))?;
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    let first = u32::from(addr) & mask;
    Ok(Some((Ipv4Addr::from(first), Ipv4Addr::from(first | !mask))))
}

/// Builds the model; reads everything once, so a call is cheap enough for every change.
struct Builder<'a, 'i> {
    input: &'i PolicyInput<'a>,
    pods: Vec<PodInfo<'a>>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Indexes into `pods` per namespace.
    by_namespace: BTreeMap<&'a str, Vec<usize>>,
    /// Addresses per (namespace or "", peer as JSON), with the warnings they gave.
    peer_cache: BTreeMap<(String, String), (AddressSet, Vec<String>)>,
    /// Resolved named ports per (destination addresses or all, name, protocol), for egress.
    named_cache: BTreeMap<(Option<AddressSet>, String, Protocol), Vec<NamedPort>>,
    /// Warning details since the last clear (for the cache).
    captured: Vec<String>,
    warnings: Vec<PolicyWarning>,
    policy: String,
}

impl<'a> Builder<'a, '_> {
    fn warn(&mut self, detail: String) {
        self.captured.push(detail.clone());
        let warning = PolicyWarning {
            policy: self.policy.clone(),
            detail,
        };
        if !self.warnings.contains(&warning) {
            self.warnings.push(warning);
        }
    }

    /// Indexes of the pods `peer` selects (`None` for an ipBlock peer).
    fn peer_pods(&mut self, namespace: &str, peer: &NetworkPolicyPeer) -> Option<Vec<usize>> {
        if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
            return None;
        }
        let mut error = None;
        let mut selected = Vec::new();
        for (pod_ns, indexes) in &self.by_namespace {
            let ns_ok = match &peer.namespace_selector {
                None => *pod_ns == namespace,
                Some(selector) => match self.namespace_labels.get(*pod_ns) {
                    Some(labels) => check_selector(selector, labels, &mut error),
                    None => {
                        let labels = BTreeMap::from([(
                            NAMESPACE_NAME_LABEL.to_string(),
                            pod_ns.to_string(),
                        )]);
                        check_selector(selector, &labels, &mut error)
                    }
                },
            };
            if !ns_ok {
                continue;
            }
            for &i in indexes {
                let Some(pod) = self.pods.get(i) else {
                    continue;
                };
                let pod_ok = match &peer.pod_selector {
                    None => true,
                    Some(selector) => check_selector(selector, &pod.labels, &mut error),
                };
                if pod_ok {
                    selected.push(i);
                }
            }
        }
        if let Some(detail) = error {
            self.warn(detail);
        }
        Some(selected)
    }

    /// [`Self::peer_addresses`], remembered per peer (and namespace, for peers without a
    /// `namespaceSelector`): policies often repeat the same peers.
    fn cached_peer_addresses(&mut self, namespace: &str, peer: &NetworkPolicyPeer) -> AddressSet {
        let Ok(json) = serde_json::to_string(peer) else {
            return self.peer_addresses(namespace, peer);
        };
        let scope = if peer.namespace_selector.is_some() {
            ""
        } else {
            namespace
        };
        let key = (scope.to_string(), json);
        if let Some((set, details)) = self.peer_cache.get(&key) {
            let (set, details) = (set.clone(), details.clone());
            for detail in details {
                self.warn(detail);
            }
            return set;
        }
        self.captured.clear();
        let set = self.peer_addresses(namespace, peer);
        let details = std::mem::take(&mut self.captured);
        self.peer_cache.insert(key, (set.clone(), details));
        set
    }

    /// The addresses of one peer.
    fn peer_addresses(&mut self, namespace: &str, peer: &NetworkPolicyPeer) -> AddressSet {
        if let Some(selected) = self.peer_pods(namespace, peer) {
            if peer.ip_block.is_some() {
                self.warn("a peer with both ipBlock and a selector: ipBlock ignored".into());
            }
            let pods = &self.pods;
            return AddressSet::from_addresses(
                selected
                    .iter()
                    .filter_map(|&i| pods.get(i))
                    .flat_map(|p| p.ips.iter().copied()),
            );
        }
        let Some(block) = &peer.ip_block else {
            self.warn(
                "a peer without podSelector, namespaceSelector or ipBlock matches nothing".into(),
            );
            return AddressSet::default();
        };
        let cidr = match parse_cidr(&block.cidr) {
            Ok(Some(range)) => AddressSet::from_ranges([range]),
            Ok(None) => return AddressSet::default(),
            Err(detail) => {
                self.warn(format!("ipBlock {detail}; it matches nothing"));
                return AddressSet::default();
            }
        };
        let mut except = Vec::new();
        for text in block.except.iter().flatten() {
            match parse_cidr(text) {
                Ok(Some(range)) => except.push(range),
                Ok(None) => {}
                Err(detail) => {
                    // Skipping an except would widen the block: leave the whole block out.
                    self.warn(format!(
                        "ipBlock except {detail}; the block matches nothing"
                    ));
                    return AddressSet::default();
                }
            }
        }
        cidr.minus(&AddressSet::from_ranges(except))
    }

    fn peers(&mut self, namespace: &str, peers: Option<&Vec<NetworkPolicyPeer>>) -> Peers {
        match peers {
            None => Peers::Any,
            Some(list) if list.is_empty() => Peers::Any,
            Some(list) => {
                let mut set = AddressSet::default();
                for peer in list {
                    let addresses = self.cached_peer_addresses(namespace, peer);
                    set = if set.is_empty() {
                        addresses
                    } else {
                        set.union(&addresses)
                    };
                }
                Peers::Only(set)
            }
        }
    }

    /// Named port `name`/`protocol` resolved on the pods `destinations` (indexes into
    /// `self.pods`; `None`: all pods, and the result is remembered), on their addresses that
    /// `within` allows.
    fn resolve_named(
        &mut self,
        name: &str,
        protocol: Protocol,
        destinations: Option<&[usize]>,
        within: &Peers,
    ) -> Vec<NamedPort> {
        let key = destinations.is_none().then(|| {
            let scope = match within {
                Peers::Any => None,
                Peers::Only(set) => Some(set.clone()),
            };
            (scope, name.to_string(), protocol)
        });
        if let Some(found) = key.as_ref().and_then(|k| self.named_cache.get(k)) {
            return found.clone();
        }
        let all: Vec<usize>;
        let destinations = match destinations {
            Some(d) => d,
            None => {
                all = (0..self.pods.len()).collect();
                &all
            }
        };
        let mut out = Vec::new();
        for &i in destinations {
            let Some(pod) = self.pods.get(i) else {
                continue;
            };
            let Some(&(_, _, port)) = pod
                .named_ports
                .iter()
                .find(|(n, p, _)| *n == name && *p == protocol)
            else {
                continue;
            };
            for &ip in &pod.ips {
                let allowed = match within {
                    Peers::Any => true,
                    Peers::Only(set) => set.contains(ip),
                };
                if allowed {
                    out.push(NamedPort { ip, protocol, port });
                }
            }
        }
        if let Some(key) = key {
            self.named_cache.insert(key, out.clone());
        }
        out
    }

    /// The ports of a rule; named ports are resolved on the pods `destinations` (indexes into
    /// `self.pods`; `None`: all pods) and, for those, only on addresses `within` allows.
    fn ports(
        &mut self,
        ports: Option<&Vec<NetworkPolicyPort>>,
        destinations: Option<&[usize]>,
        within: &Peers,
    ) -> Ports {
        let Some(list) = ports.filter(|l| !l.is_empty()) else {
            return Ports::Any;
        };
        let mut ranges = BTreeSet::new();
        let mut named: Vec<NamedPort> = Vec::new();
        for port in list {
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                self.warn(format!(
                    "protocol {:?} is not TCP, UDP or SCTP; that port entry matches nothing",
                    port.protocol
                ));
                continue;
            };
            match &port.port {
                None => {
                    ranges.insert(PortRange {
                        protocol,
                        first: 0,
                        last: u16::MAX,
                    });
                }
                Some(IntOrString::Int(number)) => {
                    let Some(first) = u16::try_from(*number).ok().filter(|p| *p > 0) else {
                        self.warn(format!("port {number} is out of range; it matches nothing"));
                        continue;
                    };
                    let last = match port.end_port {
                        None => first,
                        Some(end) => match u16::try_from(end).ok().filter(|e| *e >= first) {
                            Some(end) => end,
                            None => {
                                self.warn(format!(
                                    "endPort {end} is below port {first} or out of range; \
                                     only port {first} is used"
                                ));
                                first
                            }
                        },
                    };
                    ranges.insert(PortRange {
                        protocol,
                        first,
                        last,
                    });
                }
                Some(IntOrString::String(name)) => {
                    if port.end_port.is_some() {
                        self.warn(format!("endPort with the named port {name:?} is ignored"));
                    }
                    named.extend(self.resolve_named(name, protocol, destinations, within));
                }
            }
        }
        named.sort_unstable();
        named.dedup();
        Ports::Only {
            ranges: ranges.into_iter().collect(),
            named,
        }
    }
}

/// The named container ports of `pod` (init containers included, for sidecars): name,
/// protocol and number; the first of a name and protocol wins.
fn named_ports(pod: &Pod) -> Vec<(&str, Protocol, u16)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<(&str, Protocol, u16)> = Vec::new();
    for port in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.ports.iter().flatten())
    {
        let (Some(name), Some(protocol), Ok(number)) = (
            port.name.as_deref(),
            Protocol::parse(port.protocol.as_deref()),
            u16::try_from(port.container_port),
        ) else {
            continue;
        };
        if !out.iter().any(|(n, p, _)| *n == name && *p == protocol) {
            out.push((name, protocol, number));
        }
    }
    out
}

/// Translates NetworkPolicies, Pods and Namespaces into the policy model of one node.
///
/// Semantics as Kubernetes defines them: a policy selects the pods of its namespace matching
/// `podSelector` (empty: all); `policyTypes` defaults to Ingress, plus Egress when there are
/// egress rules; a pod selected by any policy with a type is isolated in that direction and
/// then admits only what some selecting policy's rules allow. Peers are the pods a
/// `podSelector` matches in the policy's namespace, all pods of the namespaces a
/// `namespaceSelector` matches, both together (pods matching in matching namespaces), and
/// `ipBlock` ranges less their `except`s (matched by address, pods included). Pods on the
/// host network and finished pods are never peers. Named ports are resolved per destination
/// pod from its containers' ports.
pub fn build(input: &PolicyInput) -> PolicyModel {
    let namespace_labels = input
        .namespaces
        .iter()
        .filter_map(|ns| {
            let name = ns.metadata.name.clone()?;
            let mut labels = ns.metadata.labels.clone().unwrap_or_default();
            labels
                .entry(NAMESPACE_NAME_LABEL.to_string())
                .or_insert_with(|| name.clone());
            Some((name, labels))
        })
        .collect();
    let pods = pod_infos(input);
    let mut by_namespace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, pod) in pods.iter().enumerate() {
        by_namespace.entry(pod.namespace).or_default().push(i);
    }
    let mut b = Builder {
        input,
        pods,
        namespace_labels,
        by_namespace,
        peer_cache: BTreeMap::new(),
        named_cache: BTreeMap::new(),
        captured: Vec::new(),
        warnings: Vec::new(),
        policy: String::new(),
    };

    // Local pods by address (the first of a duplicate wins).
    let mut local: BTreeMap<Ipv4Addr, usize> = BTreeMap::new();
    for (i, pod) in b.pods.iter().enumerate() {
        if !pod.local {
            continue;
        }
        for &ip in &pod.ips {
            if let Some(&other) = local.get(&ip) {
                let other = b
                    .pods
                    .get(other)
                    .map(|p| format!("{}/{}", p.namespace, p.name));
                b.warnings.push(PolicyWarning {
                    policy: format!("{}/{}", pod.namespace, pod.name),
                    detail: format!(
                        "pod address {ip} is also {}'s; the pod is left out",
                        other.unwrap_or_default()
                    ),
                });
                continue;
            }
            local.insert(ip, i);
        }
    }

    let local_pods: BTreeSet<usize> = local.values().copied().collect();
    let mut policies: Vec<&NetworkPolicy> = input.policies.iter().collect();
    policies.sort_by_key(|p| {
        (
            p.metadata.namespace.as_deref().unwrap_or("default"),
            p.metadata.name.as_deref().unwrap_or(""),
        )
    });
    let mut rules_out: Vec<PolicyRules> = Vec::new();
    // Per local pod index (into b.pods): the policies isolating it.
    let mut isolation: BTreeMap<usize, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
    for policy in policies {
        let namespace = policy.metadata.namespace.as_deref().unwrap_or("default");
        let name = policy.metadata.name.as_deref().unwrap_or("");
        b.policy = format!("{namespace}/{name}");
        let Some(spec) = policy.spec.as_ref() else {
            continue;
        };
        let everything = LabelSelector::default();
        let selector = spec.pod_selector.as_ref().unwrap_or(&everything);
        let mut targets: Vec<usize> = Vec::new();
        let mut error = None;
        for &i in b.by_namespace.get(namespace).into_iter().flatten() {
            let Some(pod) = b.pods.get(i) else {
                continue;
            };
            if local_pods.contains(&i) && check_selector(selector, &pod.labels, &mut error) {
                targets.push(i);
            }
        }
        if let Some(detail) = error {
            b.warn(detail);
        }
        if targets.is_empty() {
            continue;
        }
        let (mut ingress_type, mut egress_type) = (false, false);
        match spec.policy_types.as_deref() {
            Some(types) if !types.is_empty() => {
                for t in types {
                    match t.as_str() {
                        "Ingress" => ingress_type = true,
                        "Egress" => egress_type = true,
                        other => b.warn(format!("policy type {other:?} is unknown, ignored")),
                    }
                }
            }
            _ => {
                ingress_type = true;
                egress_type = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
            }
        }
        let ingress = ingress_type.then(|| {
            spec.ingress
                .iter()
                .flatten()
                .map(|rule| {
                    let peers = b.peers(namespace, rule.from.as_ref());
                    let ports = b.ports(rule.ports.as_ref(), Some(&targets), &Peers::Any);
                    Rule { peers, ports }
                })
                .collect::<Vec<_>>()
        });
        let egress = egress_type.then(|| {
            spec.egress
                .iter()
                .flatten()
                .map(|rule| {
                    let peers = b.peers(namespace, rule.to.as_ref());
                    let ports = b.ports(rule.ports.as_ref(), None, &peers);
                    Rule { peers, ports }
                })
                .collect::<Vec<_>>()
        });
        if ingress.is_none() && egress.is_none() {
            continue;
        }
        let index = rules_out.len();
        for &target in &targets {
            let entry = isolation.entry(target).or_default();
            if ingress.is_some() {
                entry.0.push(index);
            }
            if egress.is_some() {
                entry.1.push(index);
            }
        }
        rules_out.push(PolicyRules {
            namespace: namespace.to_string(),
            name: name.to_string(),
            ingress,
            egress,
        });
    }

    let pods = local
        .iter()
        .filter_map(|(&ip, &i)| {
            let pod = b.pods.get(i)?;
            let (ingress, egress) = isolation.get(&i).cloned().unwrap_or_default();
            Some(LocalPod {
                namespace: pod.namespace.to_string(),
                name: pod.name.to_string(),
                uid: pod.uid.to_string(),
                ip,
                host_veth: crate::podnet::host_veth_name(pod.uid),
                ingress,
                egress,
            })
        })
        .collect();
    PolicyModel {
        bridge: b.input.bridge.to_string(),
        pods,
        policies: rules_out,
        warnings: b.warnings,
    }
}
