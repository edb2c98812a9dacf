//! The proxy model printed as one nftables script that replaces the table `ip skiff-proxy`.
//!
//! Layout (after kube-proxy's nftables mode):
//! - `nat-prerouting` (pods, outside traffic) and `nat-output` (the node itself) jump to
//!   `services`, which looks up `ip daddr . proto . dport` in the verdict map `service-ips`
//!   (cluster IPs go to the service's internal chain, external and LoadBalancer IPs to its
//!   `ext-` chain) and, for this node's addresses, `proto . dport` in `service-nodeports`.
//! - `svc-<hash>` spreads over all usable endpoints, `loc-<hash>` over this node's (traffic
//!   policy Local), `ext-<hash>` applies the external traffic policy: masquerade and
//!   `svc-` for Cluster; for Local, pod and node traffic short-circuits to `svc-` and the rest
//!   goes to `loc-` unmasqueraded.
//! - Spreading is a cascade of rules, one per endpoint: endpoint `i` of `N` is taken with
//!   `numgen random mod (N - i) 0` (probability `1/(N - i)` among the ones left, so `1/N`
//!   each), the last one unconditionally; no per-endpoint chain. With session affinity each
//!   endpoint gets a chain `ep-<hash>` that records the client in the dynamic set
//!   `aff-<hash>`, checked first, and the cascade jumps to those chains.
//!   The cascade has no anonymous set on purpose: a packet that is still walking the old
//!   rules while a transaction that replaces them commits looks up set elements in the new
//!   generation, where an old rule's anonymous map is already empty; its DNAT then silently
//!   does nothing and the connection is refused (seen with `numgen ... map { ... }` under
//!   endpoint churn, about one connection in 10,000). Plain rules carry no such state.
//! - `nat-postrouting` masquerades (a) packets marked 0x4000 (external traffic with policy
//!   Cluster, off-cluster clients of a cluster IP, hairpin): with random source ports
//!   (`fully-random`), except for the node's own connections (`fib saddr type local`), which
//!   keep the port their socket has. The node's port allocator already made that port unique,
//!   and a random one breaks the reuse of closed connections: at thousands of connections a
//!   second from the node to one endpoint, random ports keep landing on tuples that conntrack
//!   (120 s) and the endpoint (TIME_WAIT, PAWS) still hold, and connections stall for a SYN
//!   retransmit (the node's requests through a cluster IP fell to a fifth of the pod IP's);
//!   (b) DNATed traffic from this
//!   node's pods leaving through the pod bridge again (the pod bridge would carry the reply
//!   straight back un-NATed; this covers hairpin too), (c) pod egress out of the cluster.
//! - `filter-input`/`-forward`/`-output` (after NAT) reject traffic to services without
//!   endpoints (TCP reset, ICMP port unreachable) and drop traffic that a Local policy leaves
//!   without an endpoint; the forward chain accepts cluster traffic explicitly.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::model::{Endpoint, Protocol, ProxyModel, ServicePortRules, TrafficPolicy};

/// The table the script owns (family `ip`).
pub const TABLE: &str = "skiff-proxy";
/// The packet mark bit that asks `nat-postrouting` to masquerade (as kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// `fmt::Write` into a `String` cannot fail; this keeps the renderer free of `unwrap`.
macro_rules! out {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = writeln!($dst, $($arg)*);
    }};
}

/// Renders the model as one `nft -f` script: create the table (so the delete cannot fail),
/// delete it, define it again in full. `nft` applies a file as one transaction, so the old
/// rules are replaced atomically, with no moment without a table.
pub fn render(model: &ProxyModel) -> String {
    let mut s = String::with_capacity(4096 + model.services.len() * 512);
    out!(s, "table ip {TABLE} {{}}");
    out!(s, "delete table ip {TABLE}");
    out!(s, "table ip {TABLE} {{");

    let maps = Maps::collect(model);
    render_sets(&mut s, model, &maps);
    render_base_chains(&mut s, model);
    for rules in &model.services {
        render_service(&mut s, model, rules);
    }
    out!(s, "}}");
    s
}

/// A chain name: `prefix-` and 16 hex digits of a 64-bit FNV-1a hash of `key` (short, stable
/// across releases and processes, valid nft identifiers; 64 bits keep collisions negligible).
pub fn chain_name(prefix: &str, key: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{prefix}-{hash:016x}")
}

fn endpoint_key(rules: &ServicePortRules, endpoint: &Endpoint) -> String {
    format!("{}/{}:{}", rules.key(), endpoint.ip, endpoint.port)
}

/// The affinity set of an endpoint. The timeout is part of the name: the executor carries the
/// clients of a set over to the set of the same name, which must not have a shorter timeout.
fn affinity_set(rules: &ServicePortRules, endpoint: &Endpoint) -> String {
    let timeout = rules.affinity_timeout.unwrap_or_default();
    chain_name(
        "aff",
        &format!("{}/{timeout}s", endpoint_key(rules, endpoint)),
    )
}

/// The element lists of the named sets and maps, keys deduplicated (first wins).
struct Maps {
    service_ips: BTreeMap<(Ipv4Addr, Protocol, u16), String>,
    node_ports: BTreeMap<(Protocol, u16), String>,
    no_endpoint_services: BTreeMap<(Ipv4Addr, Protocol, u16), &'static str>,
    no_endpoint_node_ports: BTreeMap<(Protocol, u16), &'static str>,
    cluster_ips: Vec<Ipv4Addr>,
}

const REJECT: &str = "goto reject-chain";
const DROP: &str = "drop";

impl Maps {
    fn collect(model: &ProxyModel) -> Maps {
        let mut maps = Maps {
            service_ips: BTreeMap::new(),
            node_ports: BTreeMap::new(),
            no_endpoint_services: BTreeMap::new(),
            no_endpoint_node_ports: BTreeMap::new(),
            cluster_ips: Vec::new(),
        };
        for rules in &model.services {
            let key = rules.key();
            let (proto, port) = (rules.protocol, rules.port);
            maps.cluster_ips.push(rules.cluster_ip);
            // kube-proxy: no endpoints at all -> reject everything; a Local policy without a
            // local endpoint -> drop that kind of traffic.
            let has_any = rules.has_endpoints();
            let internal_verdict = if !has_any {
                Some(REJECT)
            } else if rules.internal_endpoints().is_empty() {
                Some(DROP)
            } else {
                None
            };
            let external_verdict = if !has_any {
                Some(REJECT)
            } else if rules.external_endpoints().is_empty() {
                Some(DROP)
            } else {
                None
            };
            let cluster_key = (rules.cluster_ip, proto, port);
            match internal_verdict {
                None => {
                    let chain = internal_chain(rules, &key);
                    maps.service_ips
                        .entry(cluster_key)
                        .or_insert_with(|| format!("goto {chain}"));
                }
                Some(verdict) => {
                    maps.no_endpoint_services
                        .entry(cluster_key)
                        .or_insert(verdict);
                }
            }
            // The external chain exists whenever there are endpoints anywhere: even without
            // a local one it short-circuits pod and node traffic to the cluster chain.
            let ext = has_any.then(|| format!("goto {}", chain_name("ext", &key)));
            for ip in &rules.external_ips {
                if let Some(ext) = &ext {
                    maps.service_ips
                        .entry((*ip, proto, port))
                        .or_insert_with(|| ext.clone());
                }
                if let Some(verdict) = external_verdict {
                    maps.no_endpoint_services
                        .entry((*ip, proto, port))
                        .or_insert(verdict);
                }
            }
            if let Some(node_port) = rules.node_port {
                if let Some(ext) = &ext {
                    maps.node_ports
                        .entry((proto, node_port))
                        .or_insert_with(|| ext.clone());
                }
                if let Some(verdict) = external_verdict {
                    maps.no_endpoint_node_ports
                        .entry((proto, node_port))
                        .or_insert(verdict);
                }
            }
        }
        maps.cluster_ips.sort_unstable();
        maps.cluster_ips.dedup();
        maps
    }
}

/// The elements of every named set and map as `render` writes them, by set name: the key
/// (`addr . proto . port`, `proto . port` or an address) and the verdict (empty for plain
/// sets). Used by [`super::incremental`] to add and delete only what changed.
pub(super) fn named_elements(model: &ProxyModel) -> Vec<(&'static str, BTreeMap<String, String>)> {
    let maps = Maps::collect(model);
    let triple = |map: &BTreeMap<(Ipv4Addr, Protocol, u16), String>| -> BTreeMap<String, String> {
        map.iter()
            .map(|((ip, proto, port), v)| (format!("{ip} . {proto} . {port}"), v.clone()))
            .collect()
    };
    let pair = |map: &BTreeMap<(Protocol, u16), String>| -> BTreeMap<String, String> {
        map.iter()
            .map(|((proto, port), v)| (format!("{proto} . {port}"), v.clone()))
            .collect()
    };
    let owned3 = |map: &BTreeMap<(Ipv4Addr, Protocol, u16), &'static str>| {
        map.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
    };
    let owned2 = |map: &BTreeMap<(Protocol, u16), &'static str>| {
        map.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
    };
    vec![
        (
            "cluster-ips",
            maps.cluster_ips
                .iter()
                .map(|ip| (ip.to_string(), String::new()))
                .collect(),
        ),
        ("service-ips", triple(&maps.service_ips)),
        (
            "no-endpoint-services",
            triple(&owned3(&maps.no_endpoint_services)),
        ),
        ("service-nodeports", pair(&maps.node_ports)),
        (
            "no-endpoint-nodeports",
            pair(&owned2(&maps.no_endpoint_node_ports)),
        ),
    ]
}

/// The chains and sets of one service port exactly as `render` writes them inside the table
/// (`\tchain NAME {` ... `\t}` blocks).
pub(super) fn render_service_objects(model: &ProxyModel, rules: &ServicePortRules) -> String {
    let mut s = String::new();
    render_service(&mut s, model, rules);
    s
}

/// The chain cluster-IP traffic goes to.
fn internal_chain(rules: &ServicePortRules, key: &str) -> String {
    match rules.internal_policy {
        TrafficPolicy::Cluster => chain_name("svc", key),
        TrafficPolicy::Local => chain_name("loc", key),
    }
}

/// Writes `elements = { a, b, ... }` (nothing for an empty list: `{}` is not valid there).
fn elements(s: &mut String, items: impl Iterator<Item = String>) {
    let mut first = true;
    for item in items {
        s.push_str(if first {
            "\t\telements = { "
        } else {
            ",\n\t\t\t"
        });
        s.push_str(&item);
        first = false;
    }
    if !first {
        s.push_str(" }\n");
    }
}

fn render_sets(s: &mut String, model: &ProxyModel, maps: &Maps) {
    out!(s, "\tset nodeport-ips {{\n\t\ttype ipv4_addr");
    let mut node_ips = model.node_ips.clone();
    node_ips.sort_unstable();
    node_ips.dedup();
    elements(s, node_ips.iter().map(Ipv4Addr::to_string));
    out!(s, "\t}}");

    out!(s, "\tset cluster-ips {{\n\t\ttype ipv4_addr");
    elements(s, maps.cluster_ips.iter().map(Ipv4Addr::to_string));
    out!(s, "\t}}");

    for (name, map) in [
        ("service-ips", &maps.service_ips),
        (
            "no-endpoint-services",
            &maps
                .no_endpoint_services
                .iter()
                .map(|(k, v)| (*k, (*v).to_string()))
                .collect(),
        ),
    ] {
        out!(
            s,
            "\tmap {name} {{\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict"
        );
        elements(
            s,
            map.iter()
                .map(|((ip, proto, port), verdict)| format!("{ip} . {proto} . {port} : {verdict}")),
        );
        out!(s, "\t}}");
    }
    for (name, map) in [
        ("service-nodeports", &maps.node_ports),
        (
            "no-endpoint-nodeports",
            &maps
                .no_endpoint_node_ports
                .iter()
                .map(|(k, v)| (*k, (*v).to_string()))
                .collect(),
        ),
    ] {
        out!(
            s,
            "\tmap {name} {{\n\t\ttype inet_proto . inet_service : verdict"
        );
        elements(
            s,
            map.iter()
                .map(|((proto, port), verdict)| format!("{proto} . {port} : {verdict}")),
        );
        out!(s, "\t}}");
    }
}

fn render_base_chains(s: &mut String, model: &ProxyModel) {
    let cluster = model.cluster_cidr;
    out!(
        s,
        "\tchain mark-for-masquerade {{\n\t\tmeta mark set meta mark or {MASQUERADE_MARK:#x}\n\t}}"
    );
    out!(
        s,
        "\tchain masquerading {{\n\t\tmeta mark and {MASQUERADE_MARK:#x} == 0 return\n\t\t\
         meta mark set meta mark xor {MASQUERADE_MARK:#x}\n\t\t\
         fib saddr type local masquerade\n\t\tmasquerade fully-random\n\t}}"
    );
    out!(
        s,
        "\tchain reject-chain {{\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}}"
    );

    out!(s, "\tchain services {{");
    if let Some(dns) = model.dns {
        for proto in ["udp", "tcp"] {
            out!(
                s,
                "\t\tip daddr {} {proto} dport 53 dnat to {}",
                dns.cluster_ip,
                dns.local
            );
        }
    }
    for hp in &model.host_ports {
        let proto = hp.protocol.nft_name();
        let daddr = match hp.host_ip {
            Some(ip) => ip.to_string(),
            None => "@nodeport-ips".to_string(),
        };
        out!(
            s,
            "\t\tip daddr {daddr} {proto} dport {} dnat to {}:{}",
            hp.port,
            hp.pod_ip,
            hp.container_port
        );
    }
    out!(
        s,
        "\t\tip daddr . meta l4proto . th dport vmap @service-ips"
    );
    out!(
        s,
        "\t\tip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports\n\t}}"
    );
    out!(
        s,
        "\tchain nat-prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}}"
    );
    out!(
        s,
        "\tchain nat-output {{\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}}"
    );
    out!(
        s,
        "\tchain nat-postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tjump masquerading"
    );
    if let Some(pods) = model.pod_cidr {
        // (b) + hairpin: from this node's pods (they live on the bridge) back onto the bridge.
        out!(
            s,
            "\t\tip saddr {pods} oifname \"{}\" ct status dnat masquerade fully-random",
            model.bridge
        );
        // (c) pod egress out of the cluster.
        out!(
            s,
            "\t\tip saddr {pods} ip daddr != {cluster} masquerade fully-random"
        );
    }
    out!(s, "\t}}");

    // After NAT (priority filter): whatever still goes to a service address was not DNATed.
    // Cluster IPs on a wrong port are rejected, unused addresses of the service range dropped,
    // as kube-proxy does. DNS redirected to the cluster DNS IP itself (a node-local cache
    // bound to it) leaves the address unchanged, so it is let through explicitly.
    out!(s, "\tchain endpoints-check {{\n\t\tct status dnat return");
    if let Some(dns) = model.dns {
        out!(
            s,
            "\t\tip daddr {} meta l4proto {{ tcp, udp }} th dport 53 return",
            dns.cluster_ip
        );
    }
    out!(
        s,
        "\t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t\t\
         ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports\n\t\t\
         ip daddr @cluster-ips goto reject-chain\n\t\tip daddr {} drop\n\t}}",
        model.service_cidr
    );
    out!(
        s,
        "\tchain filter-input {{\n\t\ttype filter hook input priority filter; policy accept;\n\t\t\
         ct state new jump endpoints-check\n\t}}"
    );
    out!(
        s,
        "\tchain filter-output {{\n\t\ttype filter hook output priority filter; policy accept;\n\t\t\
         ct state new jump endpoints-check\n\t}}"
    );
    out!(
        s,
        "\tchain filter-forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\t\
         ct state new jump endpoints-check\n\t\tct state established,related accept\n\t\t\
         ip saddr {cluster} accept\n\t\tip daddr {cluster} accept\n\t\t\
         meta mark and {MASQUERADE_MARK:#x} != 0 accept\n\t}}"
    );
}

fn render_service(s: &mut String, model: &ProxyModel, rules: &ServicePortRules) {
    let key = rules.key();
    let proto = rules.protocol;
    let svc = chain_name("svc", &key);
    let loc = chain_name("loc", &key);
    let internal_is_cluster = rules.internal_policy == TrafficPolicy::Cluster;
    // Off-cluster clients of the cluster IP (the node itself, a router sending the service
    // range here) are masqueraded so replies come back through this node.
    let off_cluster = format!(
        "\t\tip daddr {} {proto} dport {} ip saddr != {} jump mark-for-masquerade",
        rules.cluster_ip, rules.port, model.cluster_cidr
    );
    if !rules.cluster_endpoints.is_empty() {
        out!(s, "\tchain {svc} {{\n\t\tcomment \"{key}\"");
        if internal_is_cluster {
            out!(s, "{off_cluster}");
        }
        render_spread(s, rules, &rules.cluster_endpoints);
        out!(s, "\t}}");
    }
    let local_used = rules.internal_policy == TrafficPolicy::Local
        || (rules.external_policy == TrafficPolicy::Local && rules.externally_accessible());
    if !rules.local_endpoints.is_empty() && local_used {
        out!(s, "\tchain {loc} {{\n\t\tcomment \"{key} (local)\"");
        if !internal_is_cluster {
            out!(s, "{off_cluster}");
        }
        render_spread(s, rules, &rules.local_endpoints);
        out!(s, "\t}}");
    }
    if rules.has_endpoints() && rules.externally_accessible() {
        let ext = chain_name("ext", &key);
        out!(s, "\tchain {ext} {{\n\t\tcomment \"{key} (external)\"");
        match rules.external_policy {
            TrafficPolicy::Cluster => {
                out!(s, "\t\tjump mark-for-masquerade\n\t\tgoto {svc}");
            }
            TrafficPolicy::Local => {
                out!(
                    s,
                    "\t\tip saddr {} goto {svc}\n\t\tfib saddr type local jump mark-for-masquerade\n\t\t\
                     fib saddr type local goto {svc}",
                    model.cluster_cidr
                );
                if !rules.local_endpoints.is_empty() {
                    out!(s, "\t\tgoto {loc}");
                }
            }
        }
        out!(s, "\t}}");
    }
    if rules.affinity_timeout.is_some() {
        render_affinity_endpoints(s, rules);
    }
}

/// The rules that pick one of `endpoints` (not empty) and DNAT to it.
fn render_spread(s: &mut String, rules: &ServicePortRules, endpoints: &[Endpoint]) {
    let proto = rules.protocol;
    if rules.affinity_timeout.is_some() {
        let chains: Vec<String> = endpoints
            .iter()
            .map(|e| chain_name("ep", &endpoint_key(rules, e)))
            .collect();
        for (endpoint, chain) in endpoints.iter().zip(&chains) {
            let set = affinity_set(rules, endpoint);
            out!(s, "\t\tip saddr @{set} goto {chain}");
        }
        let verdicts: Vec<String> = chains.iter().map(|c| format!("goto {c}")).collect();
        render_cascade(s, &verdicts);
        return;
    }
    let verdicts: Vec<String> = endpoints
        .iter()
        .map(|e| format!("meta l4proto {proto} dnat to {}:{}", e.ip, e.port))
        .collect();
    render_cascade(s, &verdicts);
}

/// One rule per verdict, the `i`-th of `n` taken with probability `1/(n - i)` when reached
/// (`numgen random mod (n - i) 0`), the last one always: each is chosen with probability
/// `1/n`.
fn render_cascade(s: &mut String, verdicts: &[String]) {
    let n = verdicts.len();
    for (i, verdict) in verdicts.iter().enumerate() {
        if i + 1 == n {
            out!(s, "\t\t{verdict}");
        } else {
            out!(s, "\t\tnumgen random mod {} 0 {verdict}", n - i);
        }
    }
}

/// With session affinity: per endpoint (of either list) a chain that records the client and
/// DNATs, and the dynamic set it records into.
fn render_affinity_endpoints(s: &mut String, rules: &ServicePortRules) {
    let timeout = rules.affinity_timeout.unwrap_or_default();
    let mut endpoints: Vec<&Endpoint> = rules
        .cluster_endpoints
        .iter()
        .chain(&rules.local_endpoints)
        .collect();
    endpoints.sort_by_key(|e| (e.ip, e.port));
    endpoints.dedup_by_key(|e| (e.ip, e.port));
    for endpoint in endpoints {
        let key = endpoint_key(rules, endpoint);
        let set = affinity_set(rules, endpoint);
        let chain = chain_name("ep", &key);
        out!(
            s,
            "\tset {set} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s\n\t}}"
        );
        out!(
            s,
            "\tchain {chain} {{\n\t\tip saddr {ip} jump mark-for-masquerade\n\t\t\
             update @{set} {{ ip saddr }}\n\t\tmeta l4proto {proto} dnat to {ip}:{port}\n\t}}",
            ip = endpoint.ip,
            port = endpoint.port,
            proto = rules.protocol,
        );
    }
}

#[cfg(test)]
mod tests;
