//! The UDP conntrack entries that no model comparison can find: those of endpoints removed
//! while the node agent was down (or before a failure reset what it knew), swept from the
//! listed entries as kube-proxy's conntrack cleanup does.
//!
//! [`conntrack`](super::conntrack) flushes what the previous model sent somewhere and the new
//! one does not. After a restart the first model has no predecessor, and a client that kept
//! sending from one source port meanwhile still has its entry to an endpoint that is gone.
//! So after each full replace of the table (the first apply of an agent among them) the
//! node's UDP entries are listed ([`list_udp`], `conntrack -L`) and every entry addressed to a
//! UDP service port of the model (cluster IP, external or LoadBalancer IP, or a node port on
//! one of the node's addresses) whose reply source, the DNAT target, is none of that port's
//! current endpoints is deleted ([`stale_entries`], then [`super::conntrack::flush`]).
//!
//! Like kube-proxy, a service port without endpoints is left alone (there is nothing better to
//! send its clients to, and an empty list may only be a moment's state), and every endpoint of
//! the model counts whatever the traffic policies, so the sweep never cuts a flow that the
//! rules would still allow. The node-local DNS redirect's target is an endpoint of the DNS
//! service's port 53.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use super::conntrack::{UdpDestination, UdpFlow, conntrack_command, endpoint_ips};
use super::model::{Protocol, ProxyModel};

/// The addresses and ports of one direction of a conntrack entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
}

/// One IPv4 UDP conntrack entry: where the client sent to, and where replies come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpEntry {
    /// The original direction (client -> service address).
    pub original: Tuple,
    /// The reply direction (endpoint -> client, once DNATed).
    pub reply: Tuple,
}

/// The IPv4 UDP entries of `conntrack -L` output (plain or `-o extended`), one per line:
/// `[ipv4 2] udp 17 TIMEOUT src=.. dst=.. sport=.. dport=.. [FLAGS] src=.. dst=.. sport=..
/// dport=.. ...`. Lines of other protocols or families, and anything else, are skipped.
pub fn parse_entries(text: &str) -> Vec<UdpEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<UdpEntry> {
    let mut words = line.split_whitespace();
    // The protocol name comes before the first key=value word (after the family, if any).
    let protocol = words
        .by_ref()
        .take_while(|w| !w.contains('='))
        .find(|w| w.chars().all(|c| c.is_ascii_alphabetic()) && *w != "ipv4" && *w != "ipv6")?;
    if protocol != "udp" {
        return None;
    }
    // The first src/dst/sport/dport are the original tuple, the second the reply tuple.
    let mut src = Vec::new();
    let mut dst = Vec::new();
    let mut sport = Vec::new();
    let mut dport = Vec::new();
    for (key, value) in line.split_whitespace().filter_map(|w| w.split_once('=')) {
        match key {
            "src" => src.push(value.parse::<Ipv4Addr>().ok()?),
            "dst" => dst.push(value.parse::<Ipv4Addr>().ok()?),
            "sport" => sport.push(value.parse::<u16>().ok()?),
            "dport" => dport.push(value.parse::<u16>().ok()?),
            _ => {}
        }
    }
    let tuple = |i: usize| -> Option<Tuple> {
        Some(Tuple {
            src: *src.get(i)?,
            dst: *dst.get(i)?,
            sport: *sport.get(i)?,
            dport: *dport.get(i)?,
        })
    };
    Some(UdpEntry {
        original: tuple(0)?,
        reply: tuple(1)?,
    })
}

/// Each UDP service address and port of `model` (cluster IP, external and LoadBalancer IPs,
/// the node port on each node address) with the reply sources its entries may have: the
/// port's endpoints (all of them, whatever the traffic policies). Ports without endpoints are
/// left out: their entries are never swept.
pub fn udp_frontends(model: &ProxyModel) -> BTreeMap<(Ipv4Addr, u16), BTreeSet<Ipv4Addr>> {
    let mut frontends: BTreeMap<(Ipv4Addr, u16), BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for rules in model
        .services
        .iter()
        .filter(|r| r.protocol == Protocol::Udp)
    {
        let endpoints = endpoint_ips(rules);
        if endpoints.is_empty() {
            continue;
        }
        let addresses = std::iter::once(rules.cluster_ip)
            .chain(rules.external_ips.iter().copied())
            .map(|ip| (ip, rules.port));
        let node_ports = rules
            .node_port
            .into_iter()
            .flat_map(|port| model.node_ips.iter().map(move |ip| (*ip, port)));
        for frontend in addresses.chain(node_ports) {
            // Two ports on one address and port never come out of `build`; allow both.
            frontends
                .entry(frontend)
                .or_default()
                .extend(endpoints.iter().copied());
        }
    }
    // The DNS redirect DNATs the DNS service's port 53 to the node-local server.
    if let Some(dns) = model.dns {
        if let Some(allowed) = frontends.get_mut(&(dns.cluster_ip, 53)) {
            allowed.insert(*dns.local.ip());
        }
    }
    frontends
}

/// The flows (service address and port, reply source) of the `entries` that go to a UDP
/// service port of `frontends` through an address that is none of its endpoints: an endpoint
/// removed while nobody watched, or traffic that met no DNAT at all (sent before the rules
/// existed). Sorted, each once: one `conntrack -D` deletes all entries of a flow.
pub fn stale_entries(
    frontends: &BTreeMap<(Ipv4Addr, u16), BTreeSet<Ipv4Addr>>,
    entries: &[UdpEntry],
) -> Vec<UdpFlow> {
    let stale: BTreeSet<UdpFlow> = entries
        .iter()
        .filter_map(|entry| {
            let (ip, port) = (entry.original.dst, entry.original.dport);
            let allowed = frontends.get(&(ip, port))?;
            (!allowed.contains(&entry.reply.src)).then_some(UdpFlow {
                destination: UdpDestination::Address { ip, port },
                endpoint: entry.reply.src,
            })
        })
        .collect();
    stale.into_iter().collect()
}

/// Why the UDP conntrack entries could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// `conntrack` (or `nsenter`) could not be started.
    #[error("list UDP conntrack entries: cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `conntrack -L` ran and failed.
    #[error("list UDP conntrack entries{netns}: conntrack failed ({status}): {stderr}")]
    Failed {
        /// ` in network namespace PATH`, or empty.
        netns: String,
        /// The exit status.
        status: String,
        /// Its error output.
        stderr: String,
    },
}

/// The IPv4 UDP conntrack entries of the network namespace at `netns` (the caller's when
/// `None`): `conntrack -L -f ipv4 -p udp -o extended`, parsed by [`parse_entries`].
pub fn list_udp(netns: Option<&Path>) -> Result<Vec<UdpEntry>, SweepError> {
    let mut command = conntrack_command(netns);
    command
        .args(["-L", "-f", "ipv4", "-p", "udp", "-o", "extended"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = command.output().map_err(|source| SweepError::Spawn {
        program: format!("{:?}", command.get_program()),
        source,
    })?;
    if !output.status.success() {
        return Err(SweepError::Failed {
            netns: crate::nftcmd::netns_suffix(netns),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(parse_entries(&String::from_utf8_lossy(&output.stdout)))
}

#[cfg(test)]
mod tests;
