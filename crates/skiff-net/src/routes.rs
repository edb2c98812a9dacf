//! Routes from this node to the other nodes' pod CIDRs, directly (host-gw) or through a VXLAN
//! overlay.
//!
//! Every route made here carries the routing protocol [`ROUTE_PROTOCOL`], so a sync touches only
//! its own routes: it replaces the wanted ones and deletes those of its routes inside the
//! cluster CIDR that no peer has any more. The node's own pod CIDR (a kernel route on the
//! bridge) is never touched.
//!
//! VXLAN works like flannel's backend without annotations: each node's VTEP MAC is derived from
//! its IP ([`vtep_mac`]), so a node knows every peer's MAC from the peer list alone. For a peer
//! with pod CIDR 10.42.1.0/24 on node 192.168.1.12 the node has
//! - `10.42.1.0/24 via 10.42.1.0 dev skiff.vxlan onlink`,
//! - a permanent neighbour `10.42.1.0 -> 0a:58:c0:a8:01:0c` on `skiff.vxlan`,
//! - an fdb entry `0a:58:c0:a8:01:0c -> dst 192.168.1.12` on `skiff.vxlan`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;

use crate::ipam::Ipv4Cidr;
use crate::iproute::{self, Failure};

/// The VXLAN device's name.
pub const VXLAN_DEVICE: &str = "skiff.vxlan";
/// The VXLAN device's MTU (1500 less the 50 bytes of VXLAN over IPv4).
pub const VXLAN_MTU: u32 = 1450;
/// The routing protocol number marking the routes this module owns (`ip route ... proto 167`).
pub const ROUTE_PROTOCOL: u8 = 167;

/// How packets reach other nodes' pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    /// Plain routes via the peer's node address; nodes must share an L2 segment.
    HostGw,
    /// A VXLAN overlay.
    Vxlan {
        /// The VXLAN network identifier (below 2^24).
        vni: u32,
        /// The UDP port (8472 for flannel compatibility, 4789 per IANA).
        port: u16,
    },
}

/// Another node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The node's name (for error messages).
    pub node_name: String,
    /// The node's address, reachable from this node.
    pub node_ip: Ipv4Addr,
    /// The node's pod CIDR.
    pub pod_cidr: Ipv4Cidr,
}

/// Why the routes could not be synced.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A peer or the overlay settings cannot be used.
    #[error("invalid route input: {detail}")]
    Invalid {
        /// What is wrong, naming the peer.
        detail: String,
    },
    /// A command failed.
    #[error("{context}: `{command}` failed: {stderr}")]
    Command {
        /// What was being done.
        context: String,
        /// The command line and batch.
        command: String,
        /// Its stderr and exit status.
        stderr: String,
    },
}

impl RouteError {
    /// A [`RouteError::Command`] from a failure, with `context`.
    fn command(context: impl Into<String>) -> impl FnOnce(Failure) -> RouteError {
        let context = context.into();
        move |failure| RouteError::Command {
            context,
            stderr: failure.detail(),
            command: failure.command,
        }
    }
}

/// The MAC of the VTEP of the node with address `node_ip`: `0a:58` and the address's four
/// bytes (locally administered, unicast).
pub fn vtep_mac(node_ip: Ipv4Addr) -> String {
    let [a, b, c, d] = node_ip.octets();
    format!("0a:58:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// Makes this node's routes to the other nodes' pod CIDRs exactly `peers`, in `netns` (`None`:
/// the caller's namespace): adds missing routes, replaces changed ones, deletes this module's
/// routes inside `cluster_cidr` that no peer has any more. A peer whose `node_ip` is `local_ip`
/// (this node) is skipped.
///
/// [`Overlay::HostGw`]: `POD_CIDR via NODE_IP` per peer; a VXLAN device left from an earlier
/// overlay is deleted. [`Overlay::Vxlan`]: the device [`VXLAN_DEVICE`] (id `vni`, `dstport`
/// `port`, `local` `local_ip`, learning off, MTU [`VXLAN_MTU`], MAC [`vtep_mac`]`(local_ip)`,
/// recreated if any of these differ), and per peer a route, neighbour and fdb entry (see the
/// module docs); entries for gone peers are deleted.
pub async fn sync_routes(
    netns: Option<&Path>,
    local_ip: Ipv4Addr,
    cluster_cidr: Ipv4Cidr,
    overlay: &Overlay,
    peers: &[Peer],
) -> Result<(), RouteError> {
    let peers = check_peers(local_ip, cluster_cidr, overlay, peers)?;
    let device = iproute::json(netns, "ip", &["-j", "-d", "link", "show", "type", "vxlan"])
        .await
        .map_err(RouteError::command("list VXLAN devices"))?
        .into_iter()
        .find(|link| link.get("ifname").and_then(|n| n.as_str()) == Some(VXLAN_DEVICE));
    let listed = iproute::json(
        netns,
        "ip",
        &[
            "-j",
            "-4",
            "route",
            "show",
            "table",
            "main",
            "proto",
            &ROUTE_PROTOCOL.to_string(),
        ],
    )
    .await
    .map_err(RouteError::command("list routes"))?;
    let wanted: BTreeSet<String> = peers.iter().map(|p| p.pod_cidr.to_string()).collect();
    let stale_routes: Vec<String> = listed
        .iter()
        .filter_map(|route| route.get("dst")?.as_str())
        .filter(|dst| !wanted.contains(*dst))
        .filter(|dst| {
            let network = dst.split('/').next().unwrap_or(dst);
            network
                .parse::<Ipv4Addr>()
                .is_ok_and(|addr| cluster_cidr.contains(addr))
        })
        .map(str::to_string)
        .collect();

    let mut lines = Vec::new();
    match overlay {
        Overlay::HostGw => {
            if device.is_some() {
                lines.push(format!("link del dev {VXLAN_DEVICE}"));
            }
            for peer in &peers {
                lines.push(format!(
                    "route replace {} via {} proto {ROUTE_PROTOCOL}",
                    peer.pod_cidr, peer.node_ip
                ));
            }
            for dst in &stale_routes {
                lines.push(format!("route del {dst} proto {ROUTE_PROTOCOL}"));
            }
            return apply(netns, &lines).await;
        }
        Overlay::Vxlan { vni, port } => {
            let mac = vtep_mac(local_ip);
            let keep = device
                .as_ref()
                .is_some_and(|d| device_matches(d, *vni, *port, local_ip, &mac));
            if device.is_some() && !keep {
                lines.push(format!("link del dev {VXLAN_DEVICE}"));
            }
            if !keep {
                lines.push(format!(
                    "link add name {VXLAN_DEVICE} address {mac} mtu {VXLAN_MTU} type vxlan id {vni} dstport {port} local {local_ip} nolearning"
                ));
            }
            lines.push(format!("link set dev {VXLAN_DEVICE} up"));
            // With a kept device, its neighbours and fdb entries may include gone peers.
            let (neighbours, fdb) = if keep {
                let neighbours =
                    iproute::json(netns, "ip", &["-j", "neigh", "show", "dev", VXLAN_DEVICE])
                        .await
                        .map_err(RouteError::command("list VXLAN neighbours"))?;
                let fdb =
                    iproute::json(netns, "bridge", &["-j", "fdb", "show", "dev", VXLAN_DEVICE])
                        .await
                        .map_err(RouteError::command("list VXLAN fdb entries"))?;
                (neighbours, fdb)
            } else {
                (Vec::new(), Vec::new())
            };
            let wanted_neighbours: BTreeMap<String, String> = peers
                .iter()
                .map(|p| (p.pod_cidr.network.to_string(), vtep_mac(p.node_ip)))
                .collect();
            for peer in &peers {
                lines.push(format!(
                    "neigh replace {} lladdr {} dev {VXLAN_DEVICE} nud permanent",
                    peer.pod_cidr.network,
                    vtep_mac(peer.node_ip)
                ));
            }
            for neighbour in &neighbours {
                if let Some(dst) = neighbour.get("dst").and_then(|d| d.as_str())
                    && !wanted_neighbours.contains_key(dst)
                    && dst.parse::<Ipv4Addr>().is_ok()
                {
                    lines.push(format!("neigh del {dst} dev {VXLAN_DEVICE}"));
                }
            }
            for dst in &stale_routes {
                lines.push(format!("route del {dst} proto {ROUTE_PROTOCOL}"));
            }
            for peer in &peers {
                lines.push(format!(
                    "route replace {} via {} dev {VXLAN_DEVICE} onlink proto {ROUTE_PROTOCOL}",
                    peer.pod_cidr, peer.pod_cidr.network
                ));
            }
            apply(netns, &lines).await?;

            let wanted_macs: BTreeSet<String> = peers.iter().map(|p| vtep_mac(p.node_ip)).collect();
            let mut fdb_lines: Vec<String> = peers
                .iter()
                .map(|peer| {
                    format!(
                        "fdb replace {} dev {VXLAN_DEVICE} dst {} self permanent",
                        vtep_mac(peer.node_ip),
                        peer.node_ip
                    )
                })
                .collect();
            let stale_macs: BTreeSet<&str> = fdb
                .iter()
                .filter_map(|entry| entry.get("mac")?.as_str())
                .filter(|mac| !wanted_macs.contains(*mac) && *mac != "00:00:00:00:00:00")
                .collect();
            for mac in stale_macs {
                fdb_lines.push(format!("fdb del {mac} dev {VXLAN_DEVICE} self"));
            }
            if fdb_lines.is_empty() {
                return Ok(());
            }
            let mut batch = fdb_lines.join("\n");
            batch.push('\n');
            iproute::run(netns, "bridge", &["-batch", "-"], Some(&batch))
                .await
                .map(drop)
                .map_err(RouteError::command("set VXLAN fdb entries"))
        }
    }
}

/// Runs the `ip` batch, if any.
async fn apply(netns: Option<&Path>, lines: &[String]) -> Result<(), RouteError> {
    if lines.is_empty() {
        return Ok(());
    }
    iproute::ip_batch(netns, lines)
        .await
        .map_err(RouteError::command("sync routes to peers"))
}

/// The peers other than this node, checked: pod CIDRs inside the cluster CIDR and distinct.
fn check_peers<'a>(
    local_ip: Ipv4Addr,
    cluster_cidr: Ipv4Cidr,
    overlay: &Overlay,
    peers: &'a [Peer],
) -> Result<Vec<&'a Peer>, RouteError> {
    let invalid = |detail: String| Err(RouteError::Invalid { detail });
    if let Overlay::Vxlan { vni, port } = overlay {
        if *vni >= 1 << 24 {
            return invalid(format!("VXLAN id {vni} does not fit 24 bits"));
        }
        if *port == 0 {
            return invalid("VXLAN port 0".to_string());
        }
    }
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    let mut kept = Vec::with_capacity(peers.len());
    for peer in peers {
        if peer.node_ip == local_ip {
            continue;
        }
        let cidr = peer.pod_cidr;
        if cidr.prefix < cluster_cidr.prefix || !cluster_cidr.contains(cidr.network) {
            return invalid(format!(
                "node {}: pod CIDR {cidr} is not inside the cluster CIDR {cluster_cidr}",
                peer.node_name
            ));
        }
        if let Some(other) = seen.insert(cidr.to_string(), &peer.node_name) {
            return invalid(format!(
                "nodes {other} and {} both have pod CIDR {cidr}",
                peer.node_name
            ));
        }
        kept.push(peer);
    }
    Ok(kept)
}

/// Whether the listed VXLAN device has the wanted settings.
fn device_matches(
    device: &serde_json::Value,
    vni: u32,
    port: u16,
    local_ip: Ipv4Addr,
    mac: &str,
) -> bool {
    let data = |key: &str| device.pointer(&format!("/linkinfo/info_data/{key}"));
    data("id").and_then(|v| v.as_u64()) == Some(u64::from(vni))
        && data("port").and_then(|v| v.as_u64()) == Some(u64::from(port))
        && data("local").and_then(|v| v.as_str()) == Some(local_ip.to_string().as_str())
        && data("learning").and_then(|v| v.as_bool()) == Some(false)
        && device.get("address").and_then(|v| v.as_str()) == Some(mac)
        && device.get("mtu").and_then(|v| v.as_u64()) == Some(u64::from(VXLAN_MTU))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, ip: [u8; 4], cidr: &str) -> Peer {
        Peer {
            node_name: name.to_string(),
            node_ip: Ipv4Addr::from(ip),
            pod_cidr: cidr.parse().unwrap(),
        }
    }

    #[test]
    fn vtep_macs_come_from_the_node_ip() {
        assert_eq!(
            vtep_mac(Ipv4Addr::new(192, 168, 1, 12)),
            "0a:58:c0:a8:01:0c"
        );
    }

    #[test]
    fn peers_are_checked_and_the_local_node_skipped() {
        let cluster: Ipv4Cidr = "10.42.0.0/16".parse().unwrap();
        let local = Ipv4Addr::new(192, 168, 1, 1);
        let peers = [
            peer("self", [192, 168, 1, 1], "10.42.0.0/24"),
            peer("b", [192, 168, 1, 2], "10.42.1.0/24"),
        ];
        let kept = check_peers(local, cluster, &Overlay::HostGw, &peers).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].node_name, "b");
        let outside = [peer("c", [192, 168, 1, 3], "10.43.1.0/24")];
        assert!(check_peers(local, cluster, &Overlay::HostGw, &outside).is_err());
        let twice = [
            peer("b", [192, 168, 1, 2], "10.42.1.0/24"),
            peer("c", [192, 168, 1, 3], "10.42.1.0/24"),
        ];
        assert!(check_peers(local, cluster, &Overlay::HostGw, &twice).is_err());
        let big_vni = Overlay::Vxlan {
            vni: 1 << 24,
            port: 8472,
        };
        assert!(check_peers(local, cluster, &big_vni, &[]).is_err());
    }

    #[test]
    fn devices_are_compared_on_every_setting() {
        let local = Ipv4Addr::new(10, 1, 2, 3);
        let device: serde_json::Value = serde_json::from_str(
            r#"{"ifname":"skiff.vxlan","mtu":1450,"address":"0a:58:0a:01:02:03",
                "linkinfo":{"info_kind":"vxlan","info_data":{"id":7,"local":"10.1.2.3","port":8472,"learning":false}}}"#,
        )
        .unwrap();
        assert!(device_matches(&device, 7, 8472, local, &vtep_mac(local)));
        assert!(!device_matches(&device, 8, 8472, local, &vtep_mac(local)));
        assert!(!device_matches(&device, 7, 4789, local, &vtep_mac(local)));
        assert!(!device_matches(
            &device,
            7,
            8472,
            Ipv4Addr::new(10, 1, 2, 4),
            &vtep_mac(local)
        ));
    }
}
