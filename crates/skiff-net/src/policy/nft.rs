//! The policy model printed as one nftables script that replaces the tables
//! `inet skiff-policy` and `bridge skiff-policy` in one transaction.
//!
//! Layout of `table inet skiff-policy` (IPv4; bridged pod-to-pod traffic reaches it through
//! `br_netfilter`, which the executor switches on, see [`super::apply`]):
//! - base chains `forward` and `input` (priority filter - 5, after the proxy's DNAT, so
//!   service traffic is judged on its real endpoint) accept `ct direction reply` (replies of
//!   connections that were allowed) and judge every original-direction packet anew, so a
//!   changed policy takes effect on open connections too. Traffic from the node itself
//!   (output hook) is never judged: Kubernetes always lets a pod's node in.
//! - `ip saddr vmap @egress-pods` sends packets of egress-isolated local pods to
//!   `egress-<hash>` (one chain per distinct list of selecting policies), which jumps to each
//!   policy's `eg-<hash>` chain and drops what none allows. A rule that allows `goto`es
//!   `check-ingress`.
//! - `check-ingress`: `ip daddr vmap @ingress-pods` sends packets for ingress-isolated local
//!   pods to `ingress-<hash>` (jumps to each policy's `in-<hash>`, whose rules accept; then
//!   drop); anything else is accepted.
//! - Peers are named interval sets `peers-<hash>` (deduplicated by content), named ports
//!   sets `named-<hash>` of `pod address . protocol . port`, numeric ports anonymous sets.
//! - Egress to the node itself after DNAT (the cluster DNS service redirected to the
//!   node-local server) also matches the original destination, so an `ipBlock` of the DNS
//!   service address allows DNS, as does one of the gateway address.
//!
//! `table bridge skiff-policy` drops IPv6 frames (link-local addresses every pod has) from
//! egress-isolated and to ingress-isolated pods' veths: pods have only IPv4 addresses, and
//! link-local IPv6 between pods on the bridge would bypass the IPv4 rules.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::{AddressSet, NamedPort, Peers, PolicyModel, PortRange, Ports, Protocol, Rule};
use crate::proxy::nft::chain_name;

/// The name of both tables (`inet` and `bridge` family).
pub const TABLE: &str = "skiff-policy";

/// `fmt::Write` into a `String` cannot fail; this keeps the renderer free of `unwrap`.
macro_rules! out {
    ($dst:expr, $($arg:tt)*) => {{
        let _ = writeln!($dst, $($arg)*);
    }};
}

/// The named sets, deduplicated by content; names are hashes of the rendered elements.
#[derive(Default)]
struct Sets {
    peers: BTreeMap<AddressSet, (String, String)>,
    named: BTreeMap<Vec<NamedPort>, (String, String)>,
}

impl Sets {
    fn peers(&mut self, set: &AddressSet) -> String {
        if let Some((name, _)) = self.peers.get(set) {
            return name.clone();
        }
        let elements = set.to_string();
        let name = chain_name("peers", &elements);
        self.peers.insert(set.clone(), (name.clone(), elements));
        name
    }

    fn named(&mut self, named: &[NamedPort]) -> String {
        if let Some((name, _)) = self.named.get(named) {
            return name.clone();
        }
        let elements = named
            .iter()
            .map(|n| format!("{} . {} . {}", n.ip, n.protocol, n.port))
            .collect::<Vec<_>>()
            .join(", ");
        let name = chain_name("named", &elements);
        self.named.insert(named.to_vec(), (name.clone(), elements));
        name
    }
}

/// Renders the model as one `nft -f` script: create both tables (so the deletes cannot fail),
/// delete them, define them again in full; one transaction, no moment without rules.
pub fn render(model: &PolicyModel) -> String {
    let mut chains = String::with_capacity(4096 + model.policies.len() * 512);
    let mut sets = Sets::default();
    for policy in &model.policies {
        let key = policy.key();
        if let Some(rules) = &policy.ingress {
            out!(
                chains,
                "\tchain {} {{\n\t\tcomment \"{key} ingress\"",
                chain_name("in", &key)
            );
            for rule in rules.iter().filter(|r| r.matches_anything()) {
                render_rule(&mut chains, &mut sets, rule, true);
            }
            out!(chains, "\t}}");
        }
        if let Some(rules) = &policy.egress {
            out!(
                chains,
                "\tchain {} {{\n\t\tcomment \"{key} egress\"",
                chain_name("eg", &key)
            );
            for rule in rules.iter().filter(|r| r.matches_anything()) {
                render_rule(&mut chains, &mut sets, rule, false);
            }
            out!(chains, "\t}}");
        }
    }

    // One dispatch chain per distinct list of policies isolating a pod.
    let mut ingress_groups: BTreeMap<&[usize], String> = BTreeMap::new();
    let mut egress_groups: BTreeMap<&[usize], String> = BTreeMap::new();
    let mut ingress_pods = Vec::new();
    let mut egress_pods = Vec::new();
    for pod in &model.pods {
        for (indexes, groups, pods, prefix, policy_prefix) in [
            (
                pod.ingress.as_slice(),
                &mut ingress_groups,
                &mut ingress_pods,
                "ingress",
                "in",
            ),
            (
                pod.egress.as_slice(),
                &mut egress_groups,
                &mut egress_pods,
                "egress",
                "eg",
            ),
        ] {
            if indexes.is_empty() {
                continue;
            }
            let name = groups.entry(indexes).or_insert_with(|| {
                let keys: Vec<String> = indexes
                    .iter()
                    .filter_map(|&i| model.policies.get(i))
                    .map(|p| p.key())
                    .collect();
                let name = chain_name(prefix, &keys.join(","));
                out!(chains, "\tchain {name} {{");
                for key in &keys {
                    out!(chains, "\t\tjump {}", chain_name(policy_prefix, key));
                }
                out!(chains, "\t\tdrop\n\t}}");
                name
            });
            pods.push(format!("{} : goto {name}", pod.ip));
        }
    }

    let mut s = String::with_capacity(chains.len() + 4096);
    for family in ["inet", "bridge"] {
        out!(s, "table {family} {TABLE} {{}}");
        out!(s, "delete table {family} {TABLE}");
    }
    out!(s, "table inet {TABLE} {{");
    for (name, elements) in sets.peers.values() {
        out!(
            s,
            "\tset {name} {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = {{ {elements} }}\n\t}}"
        );
    }
    for (name, elements) in sets.named.values() {
        out!(
            s,
            "\tset {name} {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n\t\telements = {{ {elements} }}\n\t}}"
        );
    }
    for (name, elements) in [
        ("ingress-pods", &ingress_pods),
        ("egress-pods", &egress_pods),
    ] {
        out!(s, "\tmap {name} {{\n\t\ttype ipv4_addr : verdict");
        if !elements.is_empty() {
            out!(s, "\t\telements = {{ {} }}", elements.join(",\n\t\t\t"));
        }
        out!(s, "\t}}");
    }
    s.push_str(&chains);
    out!(
        s,
        "\tchain check-ingress {{\n\t\tip daddr vmap @ingress-pods\n\t\taccept\n\t}}"
    );
    out!(
        s,
        "\tchain forward {{\n\t\ttype filter hook forward priority filter - 5; policy accept;\n\t\t\
         ct direction reply accept\n\t\tip saddr vmap @egress-pods\n\t\tgoto check-ingress\n\t}}"
    );
    out!(
        s,
        "\tchain input {{\n\t\ttype filter hook input priority filter - 5; policy accept;\n\t\t\
         ct direction reply accept\n\t\tip saddr vmap @egress-pods\n\t}}"
    );
    out!(s, "}}");

    out!(s, "table bridge {TABLE} {{");
    for (name, egress) in [("ingress-veths", false), ("egress-veths", true)] {
        let veths: Vec<String> = model
            .pods
            .iter()
            .filter(|p| {
                if egress {
                    !p.egress.is_empty()
                } else {
                    !p.ingress.is_empty()
                }
            })
            .map(|p| format!("\"{}\"", p.host_veth))
            .collect();
        out!(s, "\tset {name} {{\n\t\ttype ifname");
        if !veths.is_empty() {
            out!(s, "\t\telements = {{ {} }}", veths.join(", "));
        }
        out!(s, "\t}}");
    }
    out!(
        s,
        "\tchain forward {{\n\t\ttype filter hook forward priority filter; policy accept;\n\t\t\
         meta protocol ip6 iifname @egress-veths drop\n\t\t\
         meta protocol ip6 oifname @ingress-veths drop\n\t}}"
    );
    out!(
        s,
        "\tchain input {{\n\t\ttype filter hook input priority filter; policy accept;\n\t\t\
         meta protocol ip6 iifname @egress-veths drop\n\t}}"
    );
    out!(s, "}}");
    s
}

/// The port conditions of a rule (`""` for any port), each to be combined with the peer
/// condition into one nft rule. Named ports need the destination address; `original` uses
/// the connection's original destination port instead and leaves named ports out.
fn port_conditions(sets: &mut Sets, ports: &Ports, original: bool) -> Vec<String> {
    let (ranges, named) = match ports {
        Ports::Any => return vec![String::new()],
        Ports::Only { ranges, named } => (ranges, named),
    };
    let mut out = Vec::new();
    let mut by_protocol: BTreeMap<Protocol, Vec<&PortRange>> = BTreeMap::new();
    for range in ranges {
        by_protocol.entry(range.protocol).or_default().push(range);
    }
    let port_expr = if original {
        "ct original proto-dst"
    } else {
        "th dport"
    };
    for (protocol, ranges) in by_protocol {
        if ranges.iter().any(|r| r.is_whole_protocol()) {
            out.push(format!("meta l4proto {protocol} "));
            continue;
        }
        let items: Vec<String> = ranges
            .iter()
            .map(|r| {
                if r.first == r.last {
                    r.first.to_string()
                } else {
                    format!("{}-{}", r.first, r.last)
                }
            })
            .collect();
        let set = match items.as_slice() {
            [one] => one.clone(),
            _ => format!("{{ {} }}", items.join(", ")),
        };
        out.push(format!("meta l4proto {protocol} {port_expr} {set} "));
    }
    if !named.is_empty() && !original {
        let name = sets.named(named);
        out.push(format!("ip daddr . meta l4proto . th dport @{name} "));
    }
    out
}

fn render_rule(s: &mut String, sets: &mut Sets, rule: &Rule, ingress: bool) {
    let peer_set = match &rule.peers {
        Peers::Any => None,
        Peers::Only(set) => Some(sets.peers(set)),
    };
    let (field, verdict) = if ingress {
        ("saddr", "accept")
    } else {
        ("daddr", "goto check-ingress")
    };
    let peer = peer_set
        .as_ref()
        .map(|name| format!("ip {field} @{name} "))
        .unwrap_or_default();
    for ports in port_conditions(sets, &rule.ports, false) {
        out!(s, "\t\t{peer}{ports}{verdict}");
    }
    if let (false, Some(name)) = (ingress, &peer_set) {
        // Traffic DNATed to the node itself (the cluster DNS service): its original
        // destination counts too.
        for ports in port_conditions(sets, &rule.ports, true) {
            out!(
                s,
                "\t\tct status dnat ct original ip daddr @{name} fib daddr type local {ports}{verdict}"
            );
        }
    }
}

#[cfg(test)]
mod tests;
