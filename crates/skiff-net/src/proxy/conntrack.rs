//! Flushing the UDP conntrack entries of endpoints a service no longer uses, as kube-proxy
//! does.
//!
//! A UDP "connection" is a conntrack entry that lives as long as datagrams keep coming (30 s
//! after the last one, 120 s once it saw replies). Packets of an existing entry are NATed by
//! the entry, not by the rules: a client that keeps sending from the same source port (a DNS
//! resolver, a metrics agent) keeps going to the endpoint it first reached, even after that
//! endpoint was removed from the Service. TCP does not need this: the removed endpoint's
//! connection breaks and the client reconnects through the new rules.
//!
//! [`stale_udp_flows`] compares two models (pure); [`flush`] deletes the matching entries with
//! `conntrack -D`, in the node's network namespace if the executor has one. Endpoints removed
//! while no agent ran have no previous model to compare with: [`super::conntrack_sweep`]
//! finds those in the listed entries instead.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use super::model::{Protocol, ProxyModel, ServicePortRules};

/// Where a UDP service port's traffic was addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UdpDestination {
    /// A cluster IP, external IP or LoadBalancer IP and the service port.
    Address {
        /// The address clients send to.
        ip: Ipv4Addr,
        /// The service port.
        port: u16,
    },
    /// A node port (on any of the node's addresses).
    NodePort(u16),
}

/// UDP traffic to `destination` that was DNATed to `endpoint`: what a stale conntrack entry
/// looks like once the endpoint no longer serves that destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UdpFlow {
    /// Where the client sent to.
    pub destination: UdpDestination,
    /// The endpoint's address (the reply source of the entry).
    pub endpoint: Ipv4Addr,
}

impl UdpFlow {
    /// The `conntrack` arguments selecting this flow's entries (without `-D`).
    pub fn conntrack_args(&self) -> Vec<String> {
        let mut args = vec!["-p".to_string(), "udp".to_string()];
        match self.destination {
            UdpDestination::Address { ip, port } => {
                args.extend([
                    "--orig-dst".to_string(),
                    ip.to_string(),
                    "--orig-port-dst".to_string(),
                    port.to_string(),
                ]);
            }
            UdpDestination::NodePort(port) => {
                args.extend(["--orig-port-dst".to_string(), port.to_string()]);
            }
        }
        args.extend(["--reply-src".to_string(), self.endpoint.to_string()]);
        args
    }
}

impl std::fmt::Display for UdpFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.destination {
            UdpDestination::Address { ip, port } => write!(f, "udp {ip}:{port}")?,
            UdpDestination::NodePort(port) => write!(f, "udp node port {port}")?,
        }
        write!(f, " -> {}", self.endpoint)
    }
}

/// The addresses of every endpoint a service port may use (cluster-wide or local).
pub(super) fn endpoint_ips(rules: &ServicePortRules) -> BTreeSet<Ipv4Addr> {
    rules
        .cluster_endpoints
        .iter()
        .chain(&rules.local_endpoints)
        .map(|e| e.ip)
        .collect()
}

/// Every UDP flow `model` sends somewhere: each destination of each UDP service port with
/// each endpoint it may use (cluster-wide or local).
pub fn udp_flows(model: &ProxyModel) -> BTreeSet<UdpFlow> {
    let mut flows = BTreeSet::new();
    for rules in model
        .services
        .iter()
        .filter(|r| r.protocol == Protocol::Udp)
    {
        let mut destinations = vec![UdpDestination::Address {
            ip: rules.cluster_ip,
            port: rules.port,
        }];
        destinations.extend(rules.external_ips.iter().map(|ip| UdpDestination::Address {
            ip: *ip,
            port: rules.port,
        }));
        destinations.extend(rules.node_port.map(UdpDestination::NodePort));
        let endpoints = endpoint_ips(rules);
        for destination in destinations {
            for endpoint in &endpoints {
                flows.insert(UdpFlow {
                    destination,
                    endpoint: *endpoint,
                });
            }
        }
    }
    flows
}

/// The UDP flows `old` sent somewhere and `new` no longer does (an endpoint removed, a port or
/// service deleted, a cluster IP changed): their conntrack entries are stale.
pub fn stale_udp_flows(old: &BTreeSet<UdpFlow>, new: &BTreeSet<UdpFlow>) -> Vec<UdpFlow> {
    old.difference(new).copied().collect()
}

/// Why `conntrack` could not delete entries.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// `conntrack` (or `nsenter`) could not be started.
    #[error("flush conntrack entries of {flow}: cannot run {program}: {source}")]
    Spawn {
        /// The flow.
        flow: UdpFlow,
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `conntrack` ran and failed.
    #[error("flush conntrack entries of {flow}{netns}: conntrack failed ({status}): {stderr}")]
    Failed {
        /// The flow.
        flow: UdpFlow,
        /// ` in network namespace PATH`, or empty.
        netns: String,
        /// The exit status.
        status: String,
        /// Its error output.
        stderr: String,
    },
}

/// `conntrack`, under `nsenter --net=PATH` when `netns` is given (arguments still to add).
pub(super) fn conntrack_command(netns: Option<&Path>) -> Command {
    match netns {
        Some(path) => {
            let mut net = std::ffi::OsString::from("--net=");
            net.push(path);
            let mut c = Command::new("nsenter");
            c.arg(net).arg("--").arg("conntrack");
            c
        }
        None => Command::new("conntrack"),
    }
}

/// Deletes the conntrack entries of `flow` (`conntrack -D ...`, under `nsenter --net=PATH`
/// when `netns` is given); the number of entries deleted.
pub fn flush(netns: Option<&Path>, flow: &UdpFlow) -> Result<usize, ConntrackError> {
    let mut command = conntrack_command(netns);
    command
        .arg("-D")
        .args(flow.conntrack_args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let output = command.output().map_err(|source| ConntrackError::Spawn {
        flow: *flow,
        program: format!("{:?}", command.get_program()),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // "conntrack v1.4.7 (conntrack-tools): N flow entries have been deleted." (exit status 1
    // when N is 0).
    let deleted = stderr
        .split("): ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<usize>().ok());
    match deleted {
        Some(n) => Ok(n),
        None => Err(ConntrackError::Failed {
            flow: *flow,
            netns: crate::nftcmd::netns_suffix(netns),
            status: output.status.to_string(),
            stderr: stderr.trim().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::model::{Endpoint, ServicePortRules, TrafficPolicy};

    fn ep(ip: [u8; 4]) -> Endpoint {
        Endpoint {
            ip: Ipv4Addr::from(ip),
            port: 5353,
            node_name: None,
            local: false,
        }
    }

    fn rules(protocol: Protocol, endpoints: &[[u8; 4]]) -> ServicePortRules {
        ServicePortRules {
            namespace: "default".into(),
            name: "dns".into(),
            port_name: String::new(),
            protocol,
            cluster_ip: Ipv4Addr::new(10, 43, 0, 10),
            port: 53,
            node_port: None,
            external_ips: Vec::new(),
            affinity_timeout: None,
            internal_policy: TrafficPolicy::Cluster,
            external_policy: TrafficPolicy::Cluster,
            cluster_endpoints: endpoints.iter().map(|ip| ep(*ip)).collect(),
            local_endpoints: Vec::new(),
        }
    }

    fn model(services: Vec<ServicePortRules>) -> ProxyModel {
        let mut model = crate::proxy::fixtures::model(&[], &[]);
        model.services = services;
        model
    }

    fn vip(ip: Ipv4Addr, endpoint: [u8; 4]) -> UdpFlow {
        UdpFlow {
            destination: UdpDestination::Address { ip, port: 53 },
            endpoint: Ipv4Addr::from(endpoint),
        }
    }

    #[test]
    fn a_removed_endpoint_is_stale_a_kept_one_is_not() {
        let old = udp_flows(&model(vec![rules(
            Protocol::Udp,
            &[[10, 42, 1, 5], [10, 42, 2, 5]],
        )]));
        let new = udp_flows(&model(vec![rules(
            Protocol::Udp,
            &[[10, 42, 2, 5], [10, 42, 3, 5]],
        )]));
        assert_eq!(
            stale_udp_flows(&old, &new),
            vec![vip(Ipv4Addr::new(10, 43, 0, 10), [10, 42, 1, 5])]
        );
        assert!(stale_udp_flows(&new, &new).is_empty());
    }

    #[test]
    fn tcp_ports_never_need_a_flush() {
        let old = udp_flows(&model(vec![rules(Protocol::Tcp, &[[10, 42, 1, 5]])]));
        assert!(old.is_empty());
    }

    #[test]
    fn a_deleted_service_or_changed_ip_flushes_every_destination() {
        let mut full = rules(Protocol::Udp, &[[10, 42, 1, 5]]);
        full.node_port = Some(30053);
        full.external_ips = vec![Ipv4Addr::new(192, 0, 2, 7)];
        let old = udp_flows(&model(vec![full.clone()]));
        let gone = stale_udp_flows(&old, &udp_flows(&model(Vec::new())));
        assert_eq!(
            gone,
            vec![
                vip(Ipv4Addr::new(10, 43, 0, 10), [10, 42, 1, 5]),
                vip(Ipv4Addr::new(192, 0, 2, 7), [10, 42, 1, 5]),
                UdpFlow {
                    destination: UdpDestination::NodePort(30053),
                    endpoint: Ipv4Addr::new(10, 42, 1, 5),
                },
            ]
        );
        let mut moved = full;
        moved.cluster_ip = Ipv4Addr::new(10, 43, 0, 11);
        let gone = stale_udp_flows(&old, &udp_flows(&model(vec![moved])));
        assert_eq!(
            gone,
            vec![vip(Ipv4Addr::new(10, 43, 0, 10), [10, 42, 1, 5])]
        );
    }

    #[test]
    fn arguments_select_destination_and_reply_source() {
        let flow = vip(Ipv4Addr::new(10, 43, 0, 10), [10, 42, 1, 5]);
        assert_eq!(
            flow.conntrack_args().join(" "),
            "-p udp --orig-dst 10.43.0.10 --orig-port-dst 53 --reply-src 10.42.1.5"
        );
        let node_port = UdpFlow {
            destination: UdpDestination::NodePort(30053),
            endpoint: Ipv4Addr::new(10, 42, 1, 5),
        };
        assert_eq!(
            node_port.conntrack_args().join(" "),
            "-p udp --orig-port-dst 30053 --reply-src 10.42.1.5"
        );
        assert_eq!(node_port.to_string(), "udp node port 30053 -> 10.42.1.5");
    }
}
