//! Routes between nodes for real: two test nodes (namespaces joined by a bridge, see
//! `skiff_testkit::netns`), each with a pod network and a pod; the host's own namespace is never
//! touched. Everything is deleted on drop, also when a test panics.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use skiff_net::ipam::Ipv4Cidr;
use skiff_net::podnet::{NodeNetwork, NodeNetworkConfig, PodAddress};
use skiff_net::routes::{Overlay, Peer, ROUTE_PROTOCOL, VXLAN_DEVICE, sync_routes, vtep_mac};
use skiff_testkit::netns::{Namespace, TestNetwork, TestNode};

const CLUSTER: &str = "10.42.0.0/16";

/// One node's pod network with one pod on it.
struct NodeWithPod {
    _network: NodeNetwork,
    pod: Namespace,
    address: PodAddress,
    pod_cidr: Ipv4Cidr,
    _state: tempfile::TempDir,
}

async fn node_with_pod(node: &TestNode, index: u8, mtu: u32) -> NodeWithPod {
    let state = tempfile::tempdir().unwrap();
    let pod_cidr: Ipv4Cidr = format!("10.42.{index}.0/24").parse().unwrap();
    let mut config = NodeNetworkConfig::new(
        pod_cidr,
        CLUSTER.parse().unwrap(),
        state.path().to_path_buf(),
    );
    config.mtu = mtu;
    config.netns = Some(node.netns_path());
    let network = NodeNetwork::setup(config).await.unwrap();
    let pod = Namespace::new().unwrap();
    let address = network.attach("pod", &pod.path()).await.unwrap();
    NodeWithPod {
        _network: network,
        pod,
        address,
        pod_cidr,
        _state: state,
    }
}

fn peer(node: &TestNode, with_pod: &NodeWithPod) -> Peer {
    Peer {
        node_name: node.name().to_string(),
        node_ip: node.ip(),
        pod_cidr: with_pod.pod_cidr,
    }
}

/// Whether `from` can ping `to` (`tries` attempts of one second).
fn pings(from: &Namespace, to: Ipv4Addr, tries: usize) -> bool {
    (0..tries).any(|_| {
        from.command("busybox")
            .args(["ping", "-c1", "-W1", &to.to_string()])
            .output()
            .unwrap()
            .status
            .success()
    })
}

fn node_output(node: &TestNode, program: &str, args: &[&str]) -> String {
    let out = node.command(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn our_routes(node: &TestNode) -> String {
    node_output(
        node,
        "ip",
        &["route", "show", "proto", &ROUTE_PROTOCOL.to_string()],
    )
}

/// Syncs both nodes' routes towards each other.
async fn sync_both(net: &TestNetwork, pods: &[NodeWithPod; 2], overlay: &Overlay) {
    let cluster = CLUSTER.parse().unwrap();
    for (i, j) in [(0, 1), (1, 0)] {
        let node = net.node(i);
        let peers = [peer(net.node(j), &pods[j])];
        let path = node.netns_path();
        sync_routes(Some(&path), node.ip(), cluster, overlay, &peers)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn host_gw_routes_connect_pods_on_two_nodes() {
    let net = TestNetwork::new(2).unwrap();
    let pods = [
        node_with_pod(net.node(0), 0, 1500).await,
        node_with_pod(net.node(1), 1, 1500).await,
    ];
    sync_both(&net, &pods, &Overlay::HostGw).await;
    // Idempotent.
    sync_both(&net, &pods, &Overlay::HostGw).await;
    let routes = our_routes(net.node(0));
    assert!(
        routes.contains(&format!("10.42.1.0/24 via {}", net.node(1).ip())),
        "{routes}"
    );
    assert!(pings(&pods[0].pod, pods[1].address.ip, 3));
    assert!(pings(&pods[1].pod, pods[0].address.ip, 3));

    // The peer goes away: its route goes, the node's own pod CIDR stays.
    let cluster = CLUSTER.parse().unwrap();
    let path = net.node(0).netns_path();
    sync_routes(
        Some(&path),
        net.node(0).ip(),
        cluster,
        &Overlay::HostGw,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(our_routes(net.node(0)).trim(), "");
    let own = node_output(net.node(0), "ip", &["route", "show", "10.42.0.0/24"]);
    assert!(own.contains("dev skiff0"), "{own}");
    assert!(!pings(&pods[0].pod, pods[1].address.ip, 1));
}

#[tokio::test]
async fn a_changed_peer_address_replaces_its_route() {
    let net = TestNetwork::new(2).unwrap();
    let pods = [
        node_with_pod(net.node(0), 0, 1500).await,
        node_with_pod(net.node(1), 1, 1500).await,
    ];
    let cluster = CLUSTER.parse().unwrap();
    let path = net.node(0).netns_path();
    let mut moved = peer(net.node(1), &pods[1]);
    moved.node_ip = Ipv4Addr::from(u32::from(net.node(1).ip()) + 10);
    sync_routes(
        Some(&path),
        net.node(0).ip(),
        cluster,
        &Overlay::HostGw,
        &[moved.clone()],
    )
    .await
    .unwrap();
    assert!(our_routes(net.node(0)).contains(&format!("via {}", moved.node_ip)));
    sync_both(&net, &pods, &Overlay::HostGw).await;
    let routes = our_routes(net.node(0));
    assert_eq!(routes.lines().count(), 1, "{routes}");
    assert!(
        routes.contains(&format!("via {}", net.node(1).ip())),
        "{routes}"
    );
    assert!(pings(&pods[0].pod, pods[1].address.ip, 3));
}

#[tokio::test]
async fn vxlan_connects_pods_on_two_nodes() {
    let net = TestNetwork::new(2).unwrap();
    let pods = [
        node_with_pod(net.node(0), 0, 1450).await,
        node_with_pod(net.node(1), 1, 1450).await,
    ];
    let overlay = Overlay::Vxlan {
        vni: 42,
        port: 8472,
    };
    sync_both(&net, &pods, &overlay).await;
    sync_both(&net, &pods, &overlay).await;

    let node0 = net.node(0);
    let device = node_output(node0, "ip", &["-d", "link", "show", "dev", VXLAN_DEVICE]);
    assert!(device.contains(&vtep_mac(node0.ip())), "{device}");
    assert!(device.contains("vxlan id 42"), "{device}");
    assert!(device.contains("dstport 8472"), "{device}");
    assert!(device.contains("nolearning"), "{device}");
    assert!(device.contains("mtu 1450"), "{device}");
    let routes = our_routes(node0);
    assert!(
        routes.contains(&format!("10.42.1.0/24 via 10.42.1.0 dev {VXLAN_DEVICE}")),
        "{routes}"
    );
    let mac1 = vtep_mac(net.node(1).ip());
    let neigh = node_output(node0, "ip", &["neigh", "show", "dev", VXLAN_DEVICE]);
    assert!(
        neigh.contains(&format!("10.42.1.0 lladdr {mac1}")),
        "{neigh}"
    );
    let fdb = node_output(node0, "bridge", &["fdb", "show", "dev", VXLAN_DEVICE]);
    assert!(
        fdb.contains(&format!("{mac1} dst {}", net.node(1).ip())),
        "{fdb}"
    );

    assert!(pings(&pods[0].pod, pods[1].address.ip, 3));
    assert!(pings(&pods[1].pod, pods[0].address.ip, 3));

    // The peer goes away: route, neighbour and fdb entry go with it.
    let cluster = CLUSTER.parse().unwrap();
    let path = node0.netns_path();
    sync_routes(Some(&path), node0.ip(), cluster, &overlay, &[])
        .await
        .unwrap();
    assert_eq!(our_routes(node0).trim(), "");
    let neigh = node_output(node0, "ip", &["neigh", "show", "dev", VXLAN_DEVICE]);
    assert!(!neigh.contains("10.42.1.0"), "{neigh}");
    let fdb = node_output(node0, "bridge", &["fdb", "show", "dev", VXLAN_DEVICE]);
    assert!(!fdb.contains(&mac1), "{fdb}");
    assert!(!pings(&pods[0].pod, pods[1].address.ip, 1));

    // Back again, then over to host-gw: the VXLAN device is removed.
    sync_both(&net, &pods, &overlay).await;
    assert!(pings(&pods[0].pod, pods[1].address.ip, 3));
    sync_both(&net, &pods, &Overlay::HostGw).await;
    let links = node_output(node0, "ip", &["-o", "link", "show"]);
    assert!(!links.contains(VXLAN_DEVICE), "{links}");
    assert!(pings(&pods[0].pod, pods[1].address.ip, 3));
}

#[tokio::test]
async fn a_vxlan_device_with_other_settings_is_recreated() {
    let net = TestNetwork::new(2).unwrap();
    let pods = [
        node_with_pod(net.node(0), 0, 1450).await,
        node_with_pod(net.node(1), 1, 1450).await,
    ];
    sync_both(&net, &pods, &Overlay::Vxlan { vni: 7, port: 4789 }).await;
    let overlay = Overlay::Vxlan { vni: 8, port: 8472 };
    sync_both(&net, &pods, &overlay).await;
    let device = node_output(
        net.node(0),
        "ip",
        &["-d", "link", "show", "dev", VXLAN_DEVICE],
    );
    assert!(device.contains("vxlan id 8"), "{device}");
    assert!(device.contains("dstport 8472"), "{device}");
    assert!(pings(&pods[0].pod, pods[1].address.ip, 3));
}
