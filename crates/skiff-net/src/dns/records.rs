//! The cluster's DNS data: a [`DnsSnapshot`] built from Services, EndpointSlices and Pods,
//! answering like CoreDNS's `kubernetes` plugin (the Kubernetes DNS specification).
//!
//! Names are stored lowercase without the trailing dot; lookups are case-insensitive.

use std::borrow::Borrow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::ipam::Ipv4Cidr;

/// TTL of every record and of negative answers (SOA minimum), in seconds.
pub const TTL: u32 = 5;

/// How many CNAMEs an answer follows inside the cluster domain.
const MAX_CNAME_CHAIN: usize = 8;

/// The data of one resource record.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// An alias (ExternalName services); the target without the trailing dot.
    Cname(String),
    /// A reverse pointer; the target without the trailing dot.
    Ptr(String),
    /// A service location.
    Srv {
        /// Priority (always 0).
        priority: u16,
        /// Weight: 100 split evenly between the records of one name.
        weight: u16,
        /// The port.
        port: u16,
        /// The target host, without the trailing dot.
        target: String,
    },
    /// The zone's start of authority.
    Soa {
        /// The primary name server.
        mname: String,
        /// The responsible mailbox.
        rname: String,
        /// Serial: when the snapshot was built (Unix seconds).
        serial: u32,
        /// Refresh interval.
        refresh: i32,
        /// Retry interval.
        retry: i32,
        /// Expiry.
        expire: i32,
        /// Negative-caching TTL.
        minimum: u32,
    },
}

impl RecordData {
    /// The record type of this data.
    pub fn record_type(&self) -> RecordType {
        match self {
            RecordData::A(_) => RecordType::A,
            RecordData::Aaaa(_) => RecordType::AAAA,
            RecordData::Cname(_) => RecordType::CNAME,
            RecordData::Ptr(_) => RecordType::PTR,
            RecordData::Srv { .. } => RecordType::SRV,
            RecordData::Soa { .. } => RecordType::SOA,
        }
    }
}

/// One resource record: owner name (lowercase, no trailing dot), TTL and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// The owner name, lowercase, without the trailing dot.
    pub name: String,
    /// Time to live in seconds.
    pub ttl: u32,
    /// The record's data.
    pub data: RecordData,
}

/// The snapshot's answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The name is in the cluster domain or a known reverse name: answer from the snapshot.
    Authoritative(Answer),
    /// Not ours: forward the question upstream.
    NotAuthoritative,
}

/// An authoritative answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Answer {
    /// NXDOMAIN: the (last) name does not exist. `false` with no answers is NODATA.
    pub nxdomain: bool,
    /// The answer section (CNAMEs first, then the records of the final name).
    pub answers: Vec<DnsRecord>,
    /// The authority section: the zone's SOA for negative answers.
    pub authority: Vec<DnsRecord>,
    /// The additional section: addresses of SRV targets inside the cluster domain.
    pub additionals: Vec<DnsRecord>,
    /// The last CNAME target when it lies outside the cluster domain, for the server to
    /// resolve upstream (the answer then ends in that CNAME).
    pub external_target: Option<String>,
}

/// Everything the cluster DNS answers, built at once from the API objects and swapped whole
/// into the server.
#[derive(Debug, Clone)]
pub struct DnsSnapshot {
    domain: String,
    records: HashMap<String, Vec<RecordData>>,
    nonterminals: HashSet<String>,
    reverse_cidrs: Vec<Ipv4Cidr>,
    serial: u32,
}

/// Lowercase, without the trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The label CoreDNS uses for an address: `10-244-0-5`, `fd00--5`.
fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// The reverse-lookup name of an address (`5.0.244.10.in-addr.arpa`).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut labels: Vec<String> = Vec::with_capacity(33);
            for byte in v6.octets().iter().rev() {
                labels.push(format!("{:x}", byte & 0x0f));
                labels.push(format!("{:x}", byte >> 4));
            }
            labels.push("ip6.arpa".to_string());
            labels.join(".")
        }
    }
}

/// The address a reverse-lookup name stands for, when it names one whole address.
fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = rest.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut octets = [0u8; 4];
        for (i, part) in parts.iter().rev().enumerate() {
            octets[i] = part.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<&str> = rest.split('.').collect();
        if nibbles.len() != 32 {
            return None;
        }
        let mut value: u128 = 0;
        for nibble in nibbles.iter().rev() {
            value = (value << 4) | u128::from(u8::from_str_radix(nibble, 16).ok()?);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(value)));
    }
    None
}

fn is_reverse(name: &str) -> bool {
    name == "in-addr.arpa"
        || name == "ip6.arpa"
        || name.ends_with(".in-addr.arpa")
        || name.ends_with(".ip6.arpa")
}

fn address_record(ip: IpAddr) -> RecordData {
    match ip {
        IpAddr::V4(v4) => RecordData::A(v4),
        IpAddr::V6(v6) => RecordData::Aaaa(v6),
    }
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok()),
        );
    }
    ips
}

/// A pod that gets DNS records: running or pending with an address, not terminating, not on
/// the host's network.
fn pod_live(pod: &Pod) -> bool {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !host_network
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// Collects records while building.
struct Builder {
    domain: String,
    records: HashMap<String, BTreeSet<RecordData>>,
    nonterminals: HashSet<String>,
}

impl Builder {
    fn add(&mut self, name: &str, data: RecordData) {
        let name = normalize(name);
        if !is_reverse(&name) {
            // Every ancestor up to the zone apex exists (empty non-terminals answer NODATA).
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() < self.domain.len() {
                    break;
                }
                self.nonterminals.insert(parent.to_string());
                if parent == self.domain {
                    break;
                }
                rest = parent;
            }
        }
        self.records.entry(name).or_default().insert(data);
    }

    fn has_ptr(&self, ip: IpAddr) -> bool {
        self.records.contains_key(&reverse_name(ip))
    }
}

impl DnsSnapshot {
    /// A snapshot with no objects: only the zone apex (SOA) of `domain`.
    pub fn empty(domain: &str) -> DnsSnapshot {
        DnsSnapshot::build(&[], &[], &[], domain)
    }

    /// Builds the records of `domain` (e.g. `cluster.local`) from the cluster's objects.
    pub fn build(
        services: &[Service],
        slices: &[EndpointSlice],
        pods: &[Pod],
        domain: &str,
    ) -> DnsSnapshot {
        DnsSnapshot::build_from(services, slices, pods, domain)
    }

    /// [`build`](Self::build) from anything borrowing the objects, such as the `Arc`s of a
    /// reflector store, which then need no deep copy.
    pub fn build_from<S: Borrow<Service>, E: Borrow<EndpointSlice>, P: Borrow<Pod>>(
        services: &[S],
        slices: &[E],
        pods: &[P],
        domain: &str,
    ) -> DnsSnapshot {
        let domain = normalize(domain);
        let mut b = Builder {
            domain: domain.clone(),
            records: HashMap::new(),
            nonterminals: HashSet::new(),
        };

        // Slices by (namespace, service name).
        let slices_of = crate::slices::by_service(slices, &[]);

        let mut headless: HashMap<(String, String), bool> = HashMap::new();
        for svc in services {
            let svc: &Service = svc.borrow();
            let (Some(name), Some(spec)) = (svc.metadata.name.as_deref(), svc.spec.as_ref()) else {
                continue;
            };
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let svc_name = format!("{name}.{ns}.svc.{domain}");

            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                    b.add(&svc_name, RecordData::Cname(normalize(target)));
                }
                continue;
            }

            let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
            if ips.is_empty() {
                ips.extend(spec.cluster_ip.clone());
            }
            let is_headless = ips.iter().any(|ip| ip == "None");
            if is_headless {
                headless.insert(
                    (ns.to_string(), name.to_string()),
                    spec.publish_not_ready_addresses.unwrap_or(false),
                );
                add_headless(&mut b, &svc_name, slices_of.get(&(ns, name)));
                continue;
            }

            let ips: Vec<IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            if ips.is_empty() {
                // No address allocated yet: nothing to answer.
                continue;
            }
            for ip in &ips {
                b.add(&svc_name, address_record(*ip));
                b.add(&reverse_name(*ip), RecordData::Ptr(svc_name.clone()));
            }
            for port in spec.ports.iter().flatten() {
                let Ok(number) = u16::try_from(port.port) else {
                    continue;
                };
                let srv = RecordData::Srv {
                    priority: 0,
                    weight: 100,
                    port: number,
                    target: svc_name.clone(),
                };
                if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                    let proto = port
                        .protocol
                        .as_deref()
                        .unwrap_or("TCP")
                        .to_ascii_lowercase();
                    b.add(&format!("_{port_name}._{proto}.{svc_name}"), srv.clone());
                }
                b.add(&svc_name, srv);
            }
        }

        // Pods naming a headless service as their subdomain: `<hostname>.<subdomain>...`.
        for pod in pods.iter().map(Borrow::borrow).filter(|p| pod_live(p)) {
            let Some(spec) = pod.spec.as_ref() else {
                continue;
            };
            let (Some(host), Some(sub)) = (spec.hostname.as_deref(), spec.subdomain.as_deref())
            else {
                continue;
            };
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let Some(publish_not_ready) = headless.get(&(ns.to_string(), sub.to_string())) else {
                continue;
            };
            if !(*publish_not_ready || pod_ready(pod)) {
                continue;
            }
            let name = format!("{host}.{sub}.{ns}.svc.{domain}");
            for ip in pod_ips(pod) {
                b.add(&name, address_record(ip));
                if !b.has_ptr(ip) {
                    b.add(&reverse_name(ip), RecordData::Ptr(name.clone()));
                }
            }
        }

        // Pod records `a-b-c-d.<ns>.pod.<domain>`; their PTR when nothing else claimed the IP.
        for pod in pods.iter().map(Borrow::borrow).filter(|p| pod_live(p)) {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            for ip in pod_ips(pod) {
                let name = format!("{}.{ns}.pod.{domain}", dashed(ip));
                b.add(&name, address_record(ip));
                if !b.has_ptr(ip) {
                    b.add(&reverse_name(ip), RecordData::Ptr(name));
                }
            }
        }

        let serial = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let records = b
            .records
            .into_iter()
            .map(|(name, set)| {
                let mut data: Vec<RecordData> = set.into_iter().collect();
                let srv_count = data
                    .iter()
                    .filter(|d| matches!(d, RecordData::Srv { .. }))
                    .count();
                if srv_count > 1 {
                    let share = u16::try_from((100 / srv_count).max(1)).unwrap_or(1);
                    for d in &mut data {
                        if let RecordData::Srv { weight, .. } = d {
                            *weight = share;
                        }
                    }
                }
                (name, data)
            })
            .collect();
        DnsSnapshot {
            domain,
            records,
            nonterminals: b.nonterminals,
            reverse_cidrs: Vec::new(),
            serial,
        }
    }

    /// Makes the reverse zones of `cidrs` (the service and pod ranges) authoritative: an
    /// address there with no record answers NXDOMAIN instead of being forwarded upstream.
    pub fn with_reverse_cidrs(mut self, cidrs: &[Ipv4Cidr]) -> DnsSnapshot {
        self.reverse_cidrs = cidrs.to_vec();
        self
    }

    /// The cluster domain, lowercase, without the trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Whether `name` lies in the cluster domain (the apex included).
    pub fn in_zone(&self, name: &str) -> bool {
        let name = normalize(name);
        self.in_zone_normalized(&name)
    }

    fn in_zone_normalized(&self, name: &str) -> bool {
        name == self.domain
            || name
                .strip_suffix(self.domain.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    }

    fn soa(&self, owner: &str) -> DnsRecord {
        DnsRecord {
            name: owner.to_string(),
            ttl: TTL,
            data: RecordData::Soa {
                mname: format!("ns.dns.{}", self.domain),
                rname: format!("hostmaster.{}", self.domain),
                serial: self.serial,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: TTL,
            },
        }
    }

    /// The owner of the SOA for negative answers about `name`.
    fn zone_of(&self, name: &str) -> String {
        if name.ends_with("in-addr.arpa") {
            "in-addr.arpa".to_string()
        } else if name.ends_with("ip6.arpa") {
            "ip6.arpa".to_string()
        } else {
            self.domain.clone()
        }
    }

    /// Whether `name` is a reverse name this snapshot answers.
    fn reverse_authoritative(&self, name: &str) -> bool {
        if self.records.contains_key(name) {
            return true;
        }
        match parse_reverse(name) {
            Some(IpAddr::V4(v4)) => self.reverse_cidrs.iter().any(|c| c.contains(v4)),
            _ => false,
        }
    }

    /// Answers a question for `name` (any case, with or without the trailing dot) of type
    /// `qtype`, following CNAMEs inside the cluster domain.
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Lookup {
        let mut current = normalize(name);
        let authoritative = if is_reverse(&current) {
            self.reverse_authoritative(&current)
        } else {
            self.in_zone_normalized(&current)
        };
        if !authoritative {
            return Lookup::NotAuthoritative;
        }

        let mut answer = Answer::default();
        for _ in 0..MAX_CNAME_CHAIN {
            let records = self.records.get(&current);
            let exists =
                records.is_some() || current == self.domain || self.nonterminals.contains(&current);
            if !exists {
                answer.nxdomain = true;
                break;
            }
            let records = records.map(Vec::as_slice).unwrap_or(&[]);
            let cname = records.iter().find_map(|r| match r {
                RecordData::Cname(target) => Some(target.clone()),
                _ => None,
            });
            if let Some(target) = cname.filter(|_| qtype != RecordType::CNAME) {
                answer.answers.push(DnsRecord {
                    name: current.clone(),
                    ttl: TTL,
                    data: RecordData::Cname(target.clone()),
                });
                if self.in_zone_normalized(&target) {
                    current = target;
                    continue;
                }
                answer.external_target = Some(target);
                return Lookup::Authoritative(answer);
            }
            if current == self.domain && matches!(qtype, RecordType::SOA | RecordType::ANY) {
                answer.answers.push(self.soa(&current));
            }
            for data in records {
                if qtype == RecordType::ANY || data.record_type() == qtype {
                    answer.answers.push(DnsRecord {
                        name: current.clone(),
                        ttl: TTL,
                        data: data.clone(),
                    });
                }
            }
            break;
        }

        // Addresses of SRV targets we know.
        let targets: BTreeSet<String> = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RecordData::Srv { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect();
        for target in targets {
            for data in self.records.get(&target).into_iter().flatten() {
                if matches!(data, RecordData::A(_) | RecordData::Aaaa(_)) {
                    answer.additionals.push(DnsRecord {
                        name: target.clone(),
                        ttl: TTL,
                        data: data.clone(),
                    });
                }
            }
        }

        // Negative answers (NXDOMAIN, or NODATA for the final name) carry the zone's SOA.
        if answer.answers.iter().all(|r| r.name != current) {
            answer.authority.push(self.soa(&self.zone_of(&current)));
        }
        Lookup::Authoritative(answer)
    }
}

/// Records of a headless service: its ready endpoints' addresses, a name per endpoint
/// (hostname or dashed address), SRV per port and endpoint, PTR per address.
fn add_headless(b: &mut Builder, svc_name: &str, slices: Option<&Vec<&EndpointSlice>>) {
    for slice in slices.into_iter().flatten() {
        if slice.address_type == "FQDN" {
            continue;
        }
        for endpoint in &slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if !ready {
                continue;
            }
            for ip in endpoint
                .addresses
                .iter()
                .filter_map(|a| a.parse::<IpAddr>().ok())
            {
                let label = endpoint
                    .hostname
                    .clone()
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| dashed(ip));
                let ep_name = format!("{label}.{svc_name}");
                b.add(svc_name, address_record(ip));
                b.add(&ep_name, address_record(ip));
                if !b.has_ptr(ip) {
                    b.add(&reverse_name(ip), RecordData::Ptr(normalize(&ep_name)));
                }
                for port in slice.ports.iter().flatten() {
                    let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()) else {
                        continue;
                    };
                    let srv = RecordData::Srv {
                        priority: 0,
                        weight: 100,
                        port: number,
                        target: normalize(&ep_name),
                    };
                    if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                        let proto = port
                            .protocol
                            .as_deref()
                            .unwrap_or("TCP")
                            .to_ascii_lowercase();
                        b.add(&format!("_{port_name}._{proto}.{svc_name}"), srv.clone());
                    }
                    b.add(svc_name, srv);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }))
        .unwrap()
    }

    fn slice(ns: &str, svc: &str, name: &str, body: serde_json::Value) -> EndpointSlice {
        let mut value = json!({
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": svc},
            },
            "addressType": "IPv4",
        });
        for (k, v) in body.as_object().unwrap() {
            value[k] = v.clone();
        }
        serde_json::from_value(value).unwrap()
    }

    fn pod(ns: &str, name: &str, ip: &str, spec: serde_json::Value, ready: bool) -> Pod {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "busybox"}]);
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
            "status": {
                "phase": "Running",
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        }))
        .unwrap()
    }

    fn fixture() -> DnsSnapshot {
        let services = vec![
            service(
                "default",
                "web",
                json!({"clusterIP": "10.43.0.20", "clusterIPs": ["10.43.0.20"],
                       "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                 {"port": 9000}]}),
            ),
            service(
                "default",
                "db",
                json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
            ),
            service("default", "empty", json!({"clusterIP": "None"})),
            service(
                "default",
                "ext",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
            service(
                "default",
                "alias",
                json!({"type": "ExternalName", "externalName": "web.default.svc.cluster.local."}),
            ),
            service(
                "default",
                "dangling",
                json!({"type": "ExternalName", "externalName": "nope.default.svc.cluster.local"}),
            ),
        ];
        let slices = vec![
            slice(
                "default",
                "db",
                "db-abc",
                json!({
                    "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
                    "endpoints": [
                        {"addresses": ["10.42.0.10"], "hostname": "db-0",
                         "conditions": {"ready": true}},
                        {"addresses": ["10.42.0.11"], "hostname": "db-1",
                         "conditions": {"ready": false}},
                        {"addresses": ["10.42.0.12"]},
                    ],
                }),
            ),
            slice(
                "default",
                "empty",
                "empty-abc",
                json!({"endpoints": [{"addresses": ["10.42.0.30"],
                                      "conditions": {"ready": false}}]}),
            ),
        ];
        let pods = vec![
            pod("default", "db-0", "10.42.0.10", json!({}), true),
            pod("default", "plain", "10.42.0.50", json!({}), true),
            pod(
                "default",
                "named",
                "10.42.0.60",
                json!({"hostname": "box", "subdomain": "db"}),
                true,
            ),
            pod(
                "default",
                "named-unready",
                "10.42.0.61",
                json!({"hostname": "box2", "subdomain": "db"}),
                false,
            ),
            pod(
                "default",
                "hostnet",
                "192.168.1.5",
                json!({"hostNetwork": true}),
                true,
            ),
        ];
        DnsSnapshot::build(&services, &slices, &pods, "cluster.local")
    }

    fn answer(snapshot: &DnsSnapshot, name: &str, qtype: RecordType) -> Answer {
        match snapshot.lookup(name, qtype) {
            Lookup::Authoritative(answer) => answer,
            Lookup::NotAuthoritative => panic!("{name} {qtype}: not authoritative"),
        }
    }

    fn data(answer: &Answer) -> Vec<RecordData> {
        answer.answers.iter().map(|r| r.data.clone()).collect()
    }

    fn a(ip: &str) -> RecordData {
        RecordData::A(ip.parse().unwrap())
    }

    fn ptr(target: &str) -> RecordData {
        RecordData::Ptr(target.to_string())
    }

    fn is_soa(records: &[DnsRecord], owner: &str) -> bool {
        records.len() == 1
            && records[0].name == owner
            && matches!(records[0].data, RecordData::Soa { .. })
    }

    #[test]
    fn cluster_ip_service_a_and_aaaa_nodata() {
        let s = fixture();
        let ans = answer(&s, "web.default.svc.cluster.local.", RecordType::A);
        assert!(!ans.nxdomain);
        assert_eq!(data(&ans), vec![a("10.43.0.20")]);
        assert_eq!(ans.answers[0].ttl, TTL);
        assert!(ans.authority.is_empty());

        let aaaa = answer(&s, "web.default.svc.cluster.local", RecordType::AAAA);
        assert!(
            !aaaa.nxdomain,
            "AAAA of an IPv4 service is NODATA, not NXDOMAIN"
        );
        assert!(aaaa.answers.is_empty());
        assert!(is_soa(&aaaa.authority, "cluster.local"));
    }

    #[test]
    fn names_are_case_insensitive() {
        let s = fixture();
        let ans = answer(&s, "WeB.DeFault.SVC.Cluster.Local.", RecordType::A);
        assert_eq!(data(&ans), vec![a("10.43.0.20")]);
        assert_eq!(ans.answers[0].name, "web.default.svc.cluster.local");
        let caps = DnsSnapshot::build(&[], &[], &[], "Cluster.LOCAL.");
        assert_eq!(caps.domain(), "cluster.local");
    }

    #[test]
    fn nxdomain_vs_nodata() {
        let s = fixture();
        for missing in [
            "nope.default.svc.cluster.local",
            "web.other.svc.cluster.local",
            "foo.cluster.local",
            "google.com.default.svc.cluster.local",
        ] {
            let ans = answer(&s, missing, RecordType::A);
            assert!(ans.nxdomain, "{missing}");
            assert!(ans.answers.is_empty());
            assert!(is_soa(&ans.authority, "cluster.local"), "{missing}");
        }
        // Empty non-terminals exist: NODATA.
        for ent in [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local",
        ] {
            let ans = answer(&s, ent, RecordType::A);
            assert!(!ans.nxdomain, "{ent}");
            assert!(ans.answers.is_empty());
            assert!(is_soa(&ans.authority, "cluster.local"));
        }
        // The apex answers its SOA.
        let soa = answer(&s, "cluster.local", RecordType::SOA);
        assert!(is_soa(&soa.answers, "cluster.local"));
        // Outside the domain: not ours.
        assert_eq!(
            s.lookup("example.com", RecordType::A),
            Lookup::NotAuthoritative
        );
        assert_eq!(
            s.lookup("notcluster.local", RecordType::A),
            Lookup::NotAuthoritative
        );
    }

    #[test]
    fn headless_answers_ready_endpoints_only() {
        let s = fixture();
        let ans = answer(&s, "db.default.svc.cluster.local", RecordType::A);
        let mut got = data(&ans);
        got.sort();
        assert_eq!(got, vec![a("10.42.0.10"), a("10.42.0.12")]);

        let host = answer(&s, "db-0.db.default.svc.cluster.local", RecordType::A);
        assert_eq!(data(&host), vec![a("10.42.0.10")]);
        // Not ready: no record at all.
        assert!(answer(&s, "db-1.db.default.svc.cluster.local", RecordType::A).nxdomain);
        // An endpoint without a hostname is named by its dashed address.
        let dashed = answer(&s, "10-42-0-12.db.default.svc.cluster.local", RecordType::A);
        assert_eq!(data(&dashed), vec![a("10.42.0.12")]);
        // A headless service without ready endpoints does not exist (Kubernetes DNS spec).
        assert!(answer(&s, "empty.default.svc.cluster.local", RecordType::A).nxdomain);
    }

    #[test]
    fn pods_with_hostname_and_subdomain() {
        let s = fixture();
        let ans = answer(&s, "box.db.default.svc.cluster.local", RecordType::A);
        assert_eq!(data(&ans), vec![a("10.42.0.60")]);
        // Not ready pod: excluded like a not-ready endpoint.
        assert!(answer(&s, "box2.db.default.svc.cluster.local", RecordType::A).nxdomain);
    }

    #[test]
    fn srv_records() {
        let s = fixture();
        let ans = answer(
            &s,
            "_http._tcp.web.default.svc.cluster.local",
            RecordType::SRV,
        );
        assert_eq!(
            data(&ans),
            vec![RecordData::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: "web.default.svc.cluster.local".into(),
            }]
        );
        assert_eq!(ans.additionals.len(), 1);
        assert_eq!(ans.additionals[0].data, a("10.43.0.20"));
        // The unnamed port has no `_port._proto` name but is listed at the service.
        let all = answer(&s, "web.default.svc.cluster.local", RecordType::SRV);
        assert_eq!(all.answers.len(), 2);

        let headless = answer(&s, "_pg._tcp.db.default.svc.cluster.local", RecordType::SRV);
        let mut targets: Vec<(u16, u16, String)> = headless
            .answers
            .iter()
            .map(|r| match &r.data {
                RecordData::Srv {
                    port,
                    target,
                    weight,
                    ..
                } => (*port, *weight, target.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            vec![
                (5432, 50, "10-42-0-12.db.default.svc.cluster.local".into()),
                (5432, 50, "db-0.db.default.svc.cluster.local".into()),
            ]
        );
        assert_eq!(headless.additionals.len(), 2);
        // A protocol with no such port.
        assert!(answer(&s, "_pg._udp.db.default.svc.cluster.local", RecordType::SRV).nxdomain);
    }

    #[test]
    fn external_name_cname() {
        let s = fixture();
        let ext = answer(&s, "ext.default.svc.cluster.local", RecordType::A);
        assert_eq!(data(&ext), vec![RecordData::Cname("example.com".into())]);
        assert_eq!(ext.external_target.as_deref(), Some("example.com"));
        assert!(ext.authority.is_empty());

        // Inside the cluster domain the target is chased.
        let alias = answer(&s, "alias.default.svc.cluster.local", RecordType::A);
        assert_eq!(
            data(&alias),
            vec![
                RecordData::Cname("web.default.svc.cluster.local".into()),
                a("10.43.0.20"),
            ]
        );
        assert_eq!(alias.external_target, None);
        // ...to a missing name: NXDOMAIN after the CNAME.
        let dangling = answer(&s, "dangling.default.svc.cluster.local", RecordType::A);
        assert!(dangling.nxdomain);
        assert_eq!(dangling.answers.len(), 1);
        // A CNAME question gets the CNAME alone.
        let cname = answer(&s, "alias.default.svc.cluster.local", RecordType::CNAME);
        assert_eq!(
            data(&cname),
            vec![RecordData::Cname("web.default.svc.cluster.local".into())]
        );
    }

    #[test]
    fn pod_records() {
        let s = fixture();
        let ans = answer(&s, "10-42-0-50.default.pod.cluster.local", RecordType::A);
        assert_eq!(data(&ans), vec![a("10.42.0.50")]);
        // Wrong namespace, unknown address, host-network pod: nothing.
        assert!(answer(&s, "10-42-0-50.other.pod.cluster.local", RecordType::A).nxdomain);
        assert!(answer(&s, "10-42-0-99.default.pod.cluster.local", RecordType::A).nxdomain);
        assert!(answer(&s, "192-168-1-5.default.pod.cluster.local", RecordType::A).nxdomain);
    }

    #[test]
    fn ptr_records() {
        let s = fixture();
        let svc = answer(&s, "20.0.43.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(data(&svc), vec![ptr("web.default.svc.cluster.local")]);
        let ep = answer(&s, "10.0.42.10.in-addr.arpa", RecordType::PTR);
        assert_eq!(data(&ep), vec![ptr("db-0.db.default.svc.cluster.local")]);
        let sub = answer(&s, "60.0.42.10.in-addr.arpa", RecordType::PTR);
        assert_eq!(data(&sub), vec![ptr("box.db.default.svc.cluster.local")]);
        let plain = answer(&s, "50.0.42.10.in-addr.arpa", RecordType::PTR);
        assert_eq!(
            data(&plain),
            vec![ptr("10-42-0-50.default.pod.cluster.local")]
        );
        // A known reverse name asked for another type: NODATA.
        let nodata = answer(&s, "50.0.42.10.in-addr.arpa", RecordType::A);
        assert!(!nodata.nxdomain && nodata.answers.is_empty());
        assert!(is_soa(&nodata.authority, "in-addr.arpa"));
        // Unknown addresses are forwarded, unless inside a range we are told is ours.
        assert_eq!(
            s.lookup("99.0.42.10.in-addr.arpa", RecordType::PTR),
            Lookup::NotAuthoritative
        );
        let owned = s.with_reverse_cidrs(&["10.42.0.0/16".parse().unwrap()]);
        assert!(answer(&owned, "99.0.42.10.in-addr.arpa", RecordType::PTR).nxdomain);
        assert_eq!(
            owned.lookup("1.1.168.192.in-addr.arpa", RecordType::PTR),
            Lookup::NotAuthoritative
        );
    }

    #[test]
    fn ipv6_names() {
        let ip: IpAddr = "fd00::5".parse().unwrap();
        assert_eq!(
            reverse_name(ip),
            "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"
        );
        assert_eq!(parse_reverse(&reverse_name(ip)), Some(ip));
        let pods = vec![pod("ns", "p", "fd00::5", json!({}), true)];
        let s = DnsSnapshot::build(&[], &[], &pods, "cluster.local");
        let ans = answer(&s, "fd00--5.ns.pod.cluster.local", RecordType::AAAA);
        assert_eq!(
            data(&ans),
            vec![RecordData::Aaaa("fd00::5".parse().unwrap())]
        );
        let rev = answer(&s, &reverse_name(ip), RecordType::PTR);
        assert_eq!(data(&rev), vec![ptr("fd00--5.ns.pod.cluster.local")]);
    }
}
