//! Services and EndpointSlices translated into plain data: what each service port answers on
//! and which endpoints each kind of traffic may reach, following kube-proxy's rules.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::Ipv4Cidr;

/// The label that ties an EndpointSlice to its Service (same namespace).
pub use crate::slices::SERVICE_NAME_LABEL;
/// The session affinity timeout when `sessionAffinityConfig.clientIP.timeoutSeconds` is unset.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The pod bridge's name unless the caller sets [`ProxyModel::bridge`].
pub const DEFAULT_BRIDGE: &str = "skiff0";
/// The node ports the API server hands out; others are ignored (with a warning) so that a bad
/// object can never capture a node's own services such as SSH.
pub const NODE_PORT_RANGE: RangeInclusive<u16> = 30_000..=32_767;

/// Send traffic for the cluster DNS service to a DNS server on this node instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsRedirect {
    /// The DNS service's cluster IP: traffic to it on port 53 (UDP and TCP) is redirected.
    pub cluster_ip: Ipv4Addr,
    /// Where the node-local server listens. A loopback address needs
    /// `net.ipv4.conf.*.route_localnet=1` for traffic coming from pods.
    pub local: SocketAddrV4,
}

/// Everything the proxy rules depend on, as the node agent sees it.
///
/// The objects may be given as themselves (`S = Service`, `E = EndpointSlice`) or as anything
/// borrowing them, such as the `Arc`s of a reflector store, which then need no deep copy.
#[derive(Debug, Clone, Copy)]
pub struct ProxyInput<'a, S = Service, E = EndpointSlice> {
    /// All Services of the cluster.
    pub services: &'a [S],
    /// All EndpointSlices of the cluster.
    pub slices: &'a [E],
    /// This node's name (endpoints with this `nodeName` are local).
    pub node_name: &'a str,
    /// This node's addresses: NodePorts answer on each of them.
    pub node_ips: &'a [Ipv4Addr],
    /// This node's pod CIDR (the pods on its bridge), if it has one.
    pub pod_cidr: Option<Ipv4Cidr>,
    /// The whole cluster's pod network.
    pub cluster_cidr: Ipv4Cidr,
    /// The range cluster IPs come from.
    pub service_cidr: Ipv4Cidr,
    /// The node-local DNS redirect, if any.
    pub dns: Option<DnsRedirect>,
}

/// A transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Parses a Kubernetes protocol name; `None` means TCP.
    pub fn parse(value: Option<&str>) -> Option<Protocol> {
        match value {
            None | Some("TCP") => Some(Protocol::Tcp),
            Some("UDP") => Some(Protocol::Udp),
            Some("SCTP") => Some(Protocol::Sctp),
            Some(_) => None,
        }
    }

    /// The name nftables uses (`tcp`, `udp`, `sctp`).
    pub fn nft_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.nft_name())
    }
}

/// An internal or external traffic policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// Any endpoint of the cluster (the default).
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

impl TrafficPolicy {
    fn parse(value: Option<&str>) -> TrafficPolicy {
        match value {
            Some("Local") => TrafficPolicy::Local,
            _ => TrafficPolicy::Cluster,
        }
    }
}

/// One endpoint a service port may send traffic to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's address.
    pub ip: Ipv4Addr,
    /// The port on the endpoint (the target port, resolved by the EndpointSlice).
    pub port: u16,
    /// The node it runs on, if the slice says.
    pub node_name: Option<String>,
    /// Whether it runs on this node.
    pub local: bool,
}

/// The rules of one IPv4 service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortRules {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The port's name (empty for a single unnamed port).
    pub port_name: String,
    /// The port's protocol.
    pub protocol: Protocol,
    /// The Service's IPv4 cluster IP.
    pub cluster_ip: Ipv4Addr,
    /// The service port.
    pub port: u16,
    /// The node port (NodePort and LoadBalancer services).
    pub node_port: Option<u16>,
    /// `spec.externalIPs` and the LoadBalancer ingress IPs, IPv4 only, conflicts removed.
    pub external_ips: Vec<Ipv4Addr>,
    /// `Some(timeout in seconds)` with `sessionAffinity: ClientIP`.
    pub affinity_timeout: Option<u32>,
    /// `spec.internalTrafficPolicy`: which endpoints cluster-IP traffic may use.
    pub internal_policy: TrafficPolicy,
    /// `spec.externalTrafficPolicy`: which endpoints NodePort/external traffic may use.
    pub external_policy: TrafficPolicy,
    /// Endpoints anywhere in the cluster: the ready ones, or if there are none the serving and
    /// terminating ones. Sorted by address and port.
    pub cluster_endpoints: Vec<Endpoint>,
    /// This node's endpoints: the ready ones, or if there are none the serving and terminating
    /// ones. Sorted by address and port.
    pub local_endpoints: Vec<Endpoint>,
}

impl ServicePortRules {
    /// `namespace/name/protocol/port-name`, unique per service port: names its chains.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.namespace, self.name, self.protocol, self.port_name
        )
    }

    /// Whether any endpoint anywhere may serve it; if not, its traffic is rejected.
    pub fn has_endpoints(&self) -> bool {
        !self.cluster_endpoints.is_empty()
    }

    /// Whether it takes traffic from outside: a node port or external/LoadBalancer IPs.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty()
    }

    /// The endpoints cluster-IP traffic goes to (per the internal traffic policy).
    pub fn internal_endpoints(&self) -> &[Endpoint] {
        match self.internal_policy {
            TrafficPolicy::Cluster => &self.cluster_endpoints,
            TrafficPolicy::Local => &self.local_endpoints,
        }
    }

    /// The endpoints NodePort/external traffic from outside the cluster goes to (per the
    /// external traffic policy).
    pub fn external_endpoints(&self) -> &[Endpoint] {
        match self.external_policy {
            TrafficPolicy::Cluster => &self.cluster_endpoints,
            TrafficPolicy::Local => &self.local_endpoints,
        }
    }
}

/// Something of the input that was skipped; the rest of the model is still valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelWarning {
    /// A service with a cluster IP but none of it IPv4 (IPv6-only services are not proxied).
    #[error("service {service}: no IPv4 cluster IP in {cluster_ips:?}, skipped")]
    NoIpv4ClusterIp {
        /// `namespace/name`.
        service: String,
        /// The cluster IPs it has.
        cluster_ips: Vec<String>,
    },
    /// A port the proxy cannot handle (bad number or protocol).
    #[error("service {service}: port {port:?} skipped: {reason}")]
    BadPort {
        /// `namespace/name`.
        service: String,
        /// The port's name or number.
        port: String,
        /// Why.
        reason: String,
    },
    /// A node port outside [`NODE_PORT_RANGE`].
    #[error("service {service}: node port {node_port} is outside 30000-32767, ignored")]
    NodePortOutOfRange {
        /// `namespace/name`.
        service: String,
        /// The node port.
        node_port: i32,
    },
    /// An address already taken by an earlier service (keys sorted by namespace and name).
    #[error("service {service}: {what} already used by {owner}, ignored")]
    Conflict {
        /// `namespace/name` of the later service.
        service: String,
        /// The address, protocol and port in question.
        what: String,
        /// `namespace/name` of the service that keeps it.
        owner: String,
    },
    /// An external or LoadBalancer IP that is not an IPv4 address.
    #[error("service {service}: {address:?} is not an IPv4 address, ignored")]
    BadAddress {
        /// `namespace/name`.
        service: String,
        /// The address.
        address: String,
    },
}

/// The proxy rules of one node as plain data; [`crate::proxy::render`] prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyModel {
    /// The pod bridge ([`DEFAULT_BRIDGE`] unless the caller changes it).
    pub bridge: String,
    /// This node's addresses (NodePorts answer on them).
    pub node_ips: Vec<Ipv4Addr>,
    /// This node's pod CIDR.
    pub pod_cidr: Option<Ipv4Cidr>,
    /// The cluster's pod network.
    pub cluster_cidr: Ipv4Cidr,
    /// The service IP range.
    pub service_cidr: Ipv4Cidr,
    /// The node-local DNS redirect.
    pub dns: Option<DnsRedirect>,
    /// One entry per IPv4 service port, sorted by [`ServicePortRules::key`].
    pub services: Vec<ServicePortRules>,
    /// The `hostPort`s of this node's pods (set by the caller from
    /// [`host_ports`](super::host_ports); `build` leaves it empty).
    pub host_ports: Vec<super::HostPort>,
    /// What was skipped and why.
    pub warnings: Vec<ModelWarning>,
}

/// Translates Services and EndpointSlices into the proxy model of one node.
///
/// Headless and ExternalName services get no rules; slices are matched to services by the
/// `kubernetes.io/service-name` label within the namespace; only IPv4 slices are read.
pub fn build<S: Borrow<Service>, E: Borrow<EndpointSlice>>(input: &ProxyInput<S, E>) -> ProxyModel {
    let mut model = ProxyModel {
        bridge: DEFAULT_BRIDGE.to_string(),
        node_ips: input.node_ips.to_vec(),
        pod_cidr: input.pod_cidr,
        cluster_cidr: input.cluster_cidr,
        service_cidr: input.service_cidr,
        dns: input.dns,
        services: Vec::new(),
        host_ports: Vec::new(),
        warnings: Vec::new(),
    };

    let slices = crate::slices::by_service(input.slices, &["IPv4"]);

    let mut services: Vec<&Service> = input.services.iter().map(Borrow::borrow).collect();
    services.sort_by_key(|s| {
        (
            s.metadata.namespace.as_deref().unwrap_or("default"),
            s.metadata.name.as_deref().unwrap_or(""),
        )
    });
    // Who holds each (address, protocol, port) and each (protocol, node port) already.
    let mut taken: BTreeMap<(Ipv4Addr, Protocol, u16), String> = BTreeMap::new();
    let mut taken_node_ports: BTreeMap<(Protocol, u16), String> = BTreeMap::new();

    for service in services {
        let namespace = service.metadata.namespace.as_deref().unwrap_or("default");
        let name = service.metadata.name.as_deref().unwrap_or("");
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        let id = format!("{namespace}/{name}");
        let Some(cluster_ip) = ipv4_cluster_ip(spec, &id, &mut model.warnings) else {
            continue;
        };
        let service_slices = slices
            .get(&(namespace, name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let common = Common {
            namespace,
            name,
            id: &id,
            spec,
            cluster_ip,
            external_ips: external_ips(service, &id, &mut model.warnings),
            node_name: input.node_name,
        };
        for port in spec.ports.iter().flatten() {
            let Some(mut rules) = port_rules(&common, port, service_slices, &mut model.warnings)
            else {
                continue;
            };
            claim_addresses(&mut rules, &id, &mut taken, &mut model.warnings);
            if let Some(node_port) = rules.node_port {
                let owner = taken_node_ports
                    .entry((rules.protocol, node_port))
                    .or_insert_with(|| id.clone());
                if *owner != id {
                    model.warnings.push(ModelWarning::Conflict {
                        service: id.clone(),
                        what: format!("node port {}/{node_port}", rules.protocol),
                        owner: owner.clone(),
                    });
                    rules.node_port = None;
                }
            }
            model.services.push(rules);
        }
    }
    model.services.sort_by_key(ServicePortRules::key);
    model
}

/// What every port of one service shares.
struct Common<'a> {
    namespace: &'a str,
    name: &'a str,
    id: &'a str,
    spec: &'a ServiceSpec,
    cluster_ip: Ipv4Addr,
    external_ips: Vec<Ipv4Addr>,
    node_name: &'a str,
}

/// The service's IPv4 cluster IP; `None` (silently) for headless and ExternalName services and
/// those without one yet.
fn ipv4_cluster_ip(
    spec: &ServiceSpec,
    id: &str,
    warnings: &mut Vec<ModelWarning>,
) -> Option<Ipv4Addr> {
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let mut all: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
    if let Some(ip) = &spec.cluster_ip {
        if !all.contains(ip) {
            all.insert(0, ip.clone());
        }
    }
    if all.is_empty() || all.iter().any(|ip| ip == "None" || ip.is_empty()) {
        return None;
    }
    let found = all.iter().find_map(|ip| ip.parse::<Ipv4Addr>().ok());
    if found.is_none() {
        warnings.push(ModelWarning::NoIpv4ClusterIp {
            service: id.to_string(),
            cluster_ips: all,
        });
    }
    found
}

/// `spec.externalIPs` plus, for LoadBalancer services, the ingress IPs (except those with
/// `ipMode: Proxy`, which the load balancer itself proxies).
fn external_ips(service: &Service, id: &str, warnings: &mut Vec<ModelWarning>) -> Vec<Ipv4Addr> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let mut raw: Vec<&str> = spec
        .external_ips
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for entry in ingress.into_iter().flatten() {
            if entry.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            if let Some(ip) = entry.ip.as_deref() {
                raw.push(ip);
            }
        }
    }
    let mut ips = BTreeSet::new();
    for address in raw {
        match address.parse::<Ipv4Addr>() {
            Ok(ip) => {
                ips.insert(ip);
            }
            // IPv6 addresses belong to the IPv6 proxier; anything else is an error.
            Err(_) if address.contains(':') => {}
            Err(_) => warnings.push(ModelWarning::BadAddress {
                service: id.to_string(),
                address: address.to_string(),
            }),
        }
    }
    ips.into_iter().collect()
}

/// The rules of one port, or `None` (with a warning) when it cannot be proxied.
fn port_rules(
    common: &Common,
    port: &ServicePort,
    slices: &[&EndpointSlice],
    warnings: &mut Vec<ModelWarning>,
) -> Option<ServicePortRules> {
    let port_name = port.name.clone().unwrap_or_default();
    let bad = |reason: String| ModelWarning::BadPort {
        service: common.id.to_string(),
        port: if port_name.is_empty() {
            port.port.to_string()
        } else {
            port_name.clone()
        },
        reason,
    };
    let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
        warnings.push(bad(format!("unknown protocol {:?}", port.protocol)));
        return None;
    };
    let number = match u16::try_from(port.port) {
        Ok(n) if n > 0 => n,
        _ => {
            warnings.push(bad(format!("port {} out of range", port.port)));
            return None;
        }
    };
    let spec = common.spec;
    let exposes_node_port = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
    let node_port = match port.node_port {
        Some(np) if exposes_node_port => match u16::try_from(np) {
            Ok(np) if NODE_PORT_RANGE.contains(&np) => Some(np),
            _ => {
                warnings.push(ModelWarning::NodePortOutOfRange {
                    service: common.id.to_string(),
                    node_port: np,
                });
                None
            }
        },
        _ => None,
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });

    let candidates = candidates(port, &port_name, protocol, slices, common.node_name);
    let (cluster_endpoints, local_endpoints) = categorize(&candidates);
    Some(ServicePortRules {
        namespace: common.namespace.to_string(),
        name: common.name.to_string(),
        port_name,
        protocol,
        cluster_ip: common.cluster_ip,
        port: number,
        node_port,
        external_ips: common.external_ips.clone(),
        affinity_timeout,
        internal_policy: TrafficPolicy::parse(spec.internal_traffic_policy.as_deref()),
        external_policy: TrafficPolicy::parse(spec.external_traffic_policy.as_deref()),
        cluster_endpoints,
        local_endpoints,
    })
}

/// An endpoint with its conditions, before the traffic policies choose among them.
#[derive(Debug)]
struct Candidate {
    endpoint: Endpoint,
    ready: bool,
    serving: bool,
    terminating: bool,
}

/// Every endpoint of the service port: slices carry the resolved port numbers under the
/// service port's name (a named `targetPort` may resolve differently per pod, hence per slice).
/// Deduplicated by address and port (a ready copy wins), sorted.
fn candidates(
    port: &ServicePort,
    port_name: &str,
    protocol: Protocol,
    slices: &[&EndpointSlice],
    node_name: &str,
) -> Vec<Candidate> {
    let mut found: BTreeMap<(Ipv4Addr, u16), Candidate> = BTreeMap::new();
    for slice in slices {
        let slice_port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && Protocol::parse(p.protocol.as_deref()) == Some(protocol)
        });
        let Some(slice_port) = slice_port else {
            continue;
        };
        let number = match slice_port.port {
            Some(n) => u16::try_from(n).ok(),
            // No port in the slice: a numeric target port (or the service port) still works.
            None => match &port.target_port {
                Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
                Some(IntOrString::String(_)) => None,
                None => u16::try_from(port.port).ok(),
            },
        };
        let Some(number) = number.filter(|n| *n > 0) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let conditions = endpoint.conditions.as_ref();
            let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let candidate = Candidate {
                endpoint: Endpoint {
                    ip,
                    port: number,
                    node_name: endpoint.node_name.clone(),
                    local: endpoint.node_name.as_deref() == Some(node_name),
                },
                ready,
                serving,
                terminating,
            };
            match found.get(&(ip, number)) {
                Some(existing) if existing.ready || !candidate.ready => {}
                _ => {
                    found.insert((ip, number), candidate);
                }
            }
        }
    }
    found.into_values().collect()
}

/// kube-proxy's `CategorizeEndpoints`: cluster-wide the ready endpoints, else the serving and
/// terminating ones (drain); locally the same choice among this node's endpoints.
fn categorize(candidates: &[Candidate]) -> (Vec<Endpoint>, Vec<Endpoint>) {
    let choose = |local_only: bool| -> Vec<Endpoint> {
        let pool = || {
            candidates
                .iter()
                .filter(move |c| !local_only || c.endpoint.local)
        };
        let ready: Vec<Endpoint> = pool()
            .filter(|c| c.ready)
            .map(|c| c.endpoint.clone())
            .collect();
        if !ready.is_empty() {
            return ready;
        }
        pool()
            .filter(|c| c.serving && c.terminating)
            .map(|c| c.endpoint.clone())
            .collect()
    };
    (choose(false), choose(true))
}

/// Removes the external IPs whose (address, protocol, port) an earlier service port holds, and
/// claims the rest and the cluster IP.
fn claim_addresses(
    rules: &mut ServicePortRules,
    id: &str,
    taken: &mut BTreeMap<(Ipv4Addr, Protocol, u16), String>,
    warnings: &mut Vec<ModelWarning>,
) {
    let mut claim = |ip: Ipv4Addr| -> bool {
        let owner = taken
            .entry((ip, rules.protocol, rules.port))
            .or_insert_with(|| id.to_string());
        if owner == id {
            return true;
        }
        warnings.push(ModelWarning::Conflict {
            service: id.to_string(),
            what: format!("{ip}:{}/{}", rules.port, rules.protocol),
            owner: owner.clone(),
        });
        false
    };
    // The API server keeps cluster IPs unique, so a conflict can only come from an external
    // IP claimed earlier; the cluster IP still wins its own address below.
    claim(rules.cluster_ip);
    let external = std::mem::take(&mut rules.external_ips);
    rules.external_ips = external
        .into_iter()
        .filter(|ip| *ip != rules.cluster_ip && claim(*ip))
        .collect();
}

#[cfg(test)]
mod tests;
