use std::net::SocketAddrV4;

use serde_json::json;

use super::*;
use crate::proxy::fixtures::{model, node_ips, ready, service, slice};
use crate::proxy::model::DnsRedirect;

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("valid address")
}

/// A UDP entry from `client:5000` to `dst:dport`, answered by `reply_src:reply_sport`.
fn entry(dst: &str, dport: u16, reply_src: &str, reply_sport: u16) -> UdpEntry {
    UdpEntry {
        original: Tuple {
            src: ip("10.42.0.7"),
            dst: ip(dst),
            sport: 5000,
            dport,
        },
        reply: Tuple {
            src: ip(reply_src),
            dst: ip("10.42.0.7"),
            sport: reply_sport,
            dport: 5000,
        },
    }
}

fn flow(dst: &str, port: u16, endpoint: &str) -> UdpFlow {
    UdpFlow {
        destination: UdpDestination::Address { ip: ip(dst), port },
        endpoint: ip(endpoint),
    }
}

/// UDP service `dns` (53 -> 5353) at 10.43.0.10 with node port 30053 and external IP
/// 192.0.2.7, its endpoints at `endpoints`; TCP service `web` (80) with endpoint 10.42.1.9.
fn cluster(endpoints: &[&str]) -> ProxyModel {
    let dns = service(
        "default",
        "dns",
        "10.43.0.10",
        json!([{ "name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP", "nodePort": 30053 }]),
        json!({ "type": "NodePort", "externalIPs": ["192.0.2.7"] }),
    );
    let web = service(
        "default",
        "web",
        "10.43.0.80",
        json!([{ "port": 80, "protocol": "TCP" }]),
        json!({}),
    );
    let dns_slice = slice(
        "default",
        "dns",
        "dns-1",
        json!([{ "name": "dns", "port": 5353, "protocol": "UDP" }]),
        endpoints.iter().map(|ip| ready(ip, "node-b")).collect(),
    );
    let web_slice = slice(
        "default",
        "web",
        "web-1",
        json!([{ "port": 80, "protocol": "TCP" }]),
        vec![ready("10.42.1.9", "node-b")],
    );
    let model = model(&[dns, web], &[dns_slice, web_slice]);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    model
}

#[test]
fn parses_plain_and_extended_listings_and_skips_everything_else() {
    let text = "\
ipv4     2 udp      17 29 src=10.42.0.7 dst=10.43.0.10 sport=5000 dport=53 [UNREPLIED] src=10.42.1.5 dst=10.42.0.7 sport=5353 dport=5000 mark=0 use=1
udp      17 112 src=10.42.0.7 dst=192.168.1.10 sport=5000 dport=30053 src=10.42.1.5 dst=10.42.0.1 sport=5353 dport=41000 [ASSURED] mark=0 zone=3 use=1
ipv4     2 tcp      6 431999 ESTABLISHED src=10.42.0.7 dst=10.43.0.80 sport=40000 dport=80 src=10.42.1.9 dst=10.42.0.7 sport=80 dport=40000 [ASSURED] mark=0 use=1
ipv6     10 udp      17 29 src=fd00::7 dst=fd00::10 sport=5000 dport=53 [UNREPLIED] src=fd00::10 dst=fd00::7 sport=53 dport=5000 mark=0 use=1
ipv4     2 udp      17 29 src=10.42.0.7 dst=10.43.0.10 sport=5000 dport=53 [UNREPLIED]
conntrack v1.4.7 (conntrack-tools): 5 flow entries have been shown.

garbage
";
    let entries = parse_entries(text);
    assert_eq!(
        entries,
        vec![
            entry("10.43.0.10", 53, "10.42.1.5", 5353),
            UdpEntry {
                original: Tuple {
                    src: ip("10.42.0.7"),
                    dst: ip("192.168.1.10"),
                    sport: 5000,
                    dport: 30053,
                },
                reply: Tuple {
                    src: ip("10.42.1.5"),
                    dst: ip("10.42.0.1"),
                    sport: 5353,
                    dport: 41000,
                },
            },
        ]
    );
    assert!(parse_entries("").is_empty());
}

#[test]
fn frontends_are_every_udp_address_and_node_port_with_their_endpoints() {
    let model = cluster(&["10.42.1.5", "10.42.2.5"]);
    let endpoints: BTreeSet<Ipv4Addr> = [ip("10.42.1.5"), ip("10.42.2.5")].into();
    let node_ip = node_ips()[0];
    let expected: BTreeMap<(Ipv4Addr, u16), BTreeSet<Ipv4Addr>> = [
        ((ip("10.43.0.10"), 53), endpoints.clone()),
        ((ip("192.0.2.7"), 53), endpoints.clone()),
        ((node_ip, 30053), endpoints),
    ]
    .into();
    // The TCP service is not there.
    assert_eq!(udp_frontends(&model), expected);
}

#[test]
fn entries_to_a_removed_endpoint_are_stale_on_every_frontend() {
    let model = cluster(&["10.42.2.5"]);
    let node_ip = node_ips()[0].to_string();
    let entries = [
        // The removed endpoint, through the cluster IP, the external IP and the node port.
        entry("10.43.0.10", 53, "10.42.1.5", 5353),
        entry("192.0.2.7", 53, "10.42.1.5", 5353),
        entry(&node_ip, 30053, "10.42.1.5", 5353),
        // Twice from other clients: one flow.
        entry("10.43.0.10", 53, "10.42.1.5", 5353),
        // The current endpoint: kept.
        entry("10.43.0.10", 53, "10.42.2.5", 5353),
        entry(&node_ip, 30053, "10.42.2.5", 5353),
        // Not DNATed at all (sent before the rules existed): stale too.
        entry("10.43.0.10", 53, "10.43.0.10", 53),
        // Not a service frontend: another port, another address, a node port elsewhere.
        entry("10.43.0.10", 54, "10.42.1.5", 5353),
        entry("10.43.0.99", 53, "10.42.1.5", 5353),
        entry("203.0.113.1", 30053, "10.42.1.5", 5353),
        // A TCP service's address and port (a UDP entry there is not the proxy's).
        entry("10.43.0.80", 80, "10.42.7.7", 80),
    ];
    assert_eq!(
        stale_entries(&udp_frontends(&model), &entries),
        vec![
            flow("10.43.0.10", 53, "10.42.1.5"),
            flow("10.43.0.10", 53, "10.43.0.10"),
            flow("192.0.2.7", 53, "10.42.1.5"),
            flow(&node_ip, 30053, "10.42.1.5"),
        ]
    );
    // The same entries, nothing stale, when the endpoint is still there.
    let both = cluster(&["10.42.1.5", "10.42.2.5"]);
    let kept: Vec<UdpEntry> = entries
        .iter()
        .filter(|e| e.reply.src != e.original.dst)
        .copied()
        .collect();
    assert!(stale_entries(&udp_frontends(&both), &kept).is_empty());
}

#[test]
fn a_port_without_endpoints_is_left_alone() {
    let model = cluster(&[]);
    assert!(udp_frontends(&model).is_empty());
    let entries = [entry("10.43.0.10", 53, "10.42.1.5", 5353)];
    assert!(stale_entries(&udp_frontends(&model), &entries).is_empty());
}

#[test]
fn the_node_local_dns_redirect_target_is_an_endpoint() {
    let mut model = cluster(&["10.42.1.5"]);
    model.dns = Some(DnsRedirect {
        cluster_ip: ip("10.43.0.10"),
        local: SocketAddrV4::new(ip("10.42.0.1"), 53),
    });
    let entries = [
        entry("10.43.0.10", 53, "10.42.0.1", 53),
        entry("10.43.0.10", 53, "10.42.1.5", 5353),
        entry("10.43.0.10", 53, "10.42.9.9", 5353),
    ];
    assert_eq!(
        stale_entries(&udp_frontends(&model), &entries),
        vec![flow("10.43.0.10", 53, "10.42.9.9")]
    );
}
