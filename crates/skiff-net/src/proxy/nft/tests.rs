use std::net::{Ipv4Addr, SocketAddrV4};

use serde_json::json;

use super::*;
use crate::proxy::Executor;
use crate::proxy::fixtures::*;
use crate::proxy::model::DnsRedirect;

/// A model with one of everything: several ports, node port + external IP + load balancer,
/// Local policies with and without local endpoints, affinity, a service without endpoints.
fn rich_model() -> ProxyModel {
    let ports = json!([{ "name": "http", "port": 8080 }, { "name": "dns", "port": 5353, "protocol": "UDP" }]);
    let two = vec![ready("10.42.0.5", NODE), ready("10.42.1.5", "node-b")];
    let mut lb = service(
        "default",
        "lb",
        "10.43.0.11",
        json!([{ "name": "http", "port": 80, "nodePort": 30080 }]),
        json!({ "type": "LoadBalancer", "externalIPs": ["203.0.113.7"], "externalTrafficPolicy": "Local" }),
    );
    lb.status = Some(
        serde_json::from_value(
            json!({ "loadBalancer": { "ingress": [{ "ip": "198.51.100.1" }] } }),
        )
        .unwrap(),
    );
    let services = vec![
        service(
            "default",
            "web",
            "10.43.0.10",
            json!([
                { "name": "http", "port": 80, "targetPort": "web", "nodePort": 30090 },
                { "name": "dns", "port": 53, "protocol": "UDP" },
            ]),
            json!({ "type": "NodePort" }),
        ),
        lb,
        service(
            "default",
            "sticky",
            "10.43.0.12",
            json!([{ "name": "http", "port": 80 }]),
            json!({ "sessionAffinity": "ClientIP", "internalTrafficPolicy": "Local" }),
        ),
        service(
            "default",
            "remote-only",
            "10.43.0.13",
            json!([{ "name": "http", "port": 80, "nodePort": 30081 }]),
            json!({ "type": "NodePort", "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local" }),
        ),
        service(
            "default",
            "empty",
            "10.43.0.14",
            json!([{ "port": 80, "nodePort": 30082 }]),
            json!({ "type": "NodePort" }),
        ),
    ];
    let slices = vec![
        slice("default", "web", "web-1", ports.clone(), two.clone()),
        slice("default", "lb", "lb-1", ports.clone(), two.clone()),
        slice("default", "sticky", "sticky-1", ports.clone(), two),
        slice(
            "default",
            "remote-only",
            "r-1",
            ports,
            vec![ready("10.42.1.9", "node-b")],
        ),
    ];
    let mut m = model(&services, &slices);
    m.dns = Some(DnsRedirect {
        cluster_ip: Ipv4Addr::new(10, 43, 0, 10),
        local: SocketAddrV4::new(Ipv4Addr::new(10, 42, 0, 1), 53),
    });
    m.host_ports = vec![
        crate::proxy::HostPort {
            host_ip: None,
            port: 8080,
            protocol: crate::proxy::Protocol::Tcp,
            pod_ip: Ipv4Addr::new(10, 42, 0, 5),
            container_port: 80,
        },
        crate::proxy::HostPort {
            host_ip: Some(Ipv4Addr::new(192, 0, 2, 1)),
            port: 5353,
            protocol: crate::proxy::Protocol::Udp,
            pod_ip: Ipv4Addr::new(10, 42, 0, 5),
            container_port: 53,
        },
    ];
    m
}

#[test]
fn host_ports_dnat_node_addresses_to_the_pod() {
    let script = render(&rich_model());
    assert!(
        script.contains("ip daddr @nodeport-ips tcp dport 8080 dnat to 10.42.0.5:80"),
        "{script}"
    );
    assert!(
        script.contains("ip daddr 192.0.2.1 udp dport 5353 dnat to 10.42.0.5:53"),
        "{script}"
    );
}

#[test]
fn the_script_replaces_the_table_in_one_file() {
    let script = render(&rich_model());
    let mut lines = script.lines();
    assert_eq!(lines.next(), Some("table ip skiff-proxy {}"));
    assert_eq!(lines.next(), Some("delete table ip skiff-proxy"));
    assert_eq!(lines.next(), Some("table ip skiff-proxy {"));
    assert_eq!(script, render(&rich_model()), "rendering is deterministic");
}

#[test]
fn services_are_looked_up_in_verdict_maps() {
    let m = rich_model();
    let script = render(&m);
    let web = chain_name("svc", "default/web/tcp/http");
    assert!(
        script.contains(&format!("10.43.0.10 . tcp . 80 : goto {web}")),
        "{script}"
    );
    assert!(script.contains(&format!("chain {web} {{")));
    // Two endpoints: a cascade of two rules, no set, no per-endpoint chain.
    assert!(
        script.contains(
            "\t\tnumgen random mod 2 0 meta l4proto tcp dnat to 10.42.0.5:8080\n\t\tmeta l4proto tcp dnat to 10.42.1.5:8080\n"
        ),
        "{script}"
    );
    assert!(!script.contains(" map {"), "no anonymous map: {script}");
    let web_dns = chain_name("svc", "default/web/udp/dns");
    assert!(script.contains(&format!("10.43.0.10 . udp . 53 : goto {web_dns}")));
    // Node port of a Cluster-policy service: masquerade then the cluster chain.
    let ext = chain_name("ext", "default/web/tcp/http");
    assert!(script.contains(&format!("tcp . 30090 : goto {ext}")));
    assert!(script.contains(&format!("jump mark-for-masquerade\n\t\tgoto {web}")));
    // Off-cluster clients of the cluster IP are masqueraded.
    assert!(script.contains(
        "ip daddr 10.43.0.10 tcp dport 80 ip saddr != 10.42.0.0/16 jump mark-for-masquerade"
    ));
    // Marked traffic: the node's own connections keep their source port, others get random
    // ones.
    assert!(
        script.contains(
            "\tchain masquerading {\n\t\tmeta mark and 0x4000 == 0 return\n\t\t\
             meta mark set meta mark xor 0x4000\n\t\tfib saddr type local masquerade\n\t\t\
             masquerade fully-random\n\t}"
        ),
        "{script}"
    );
    // DNS goes to the node-local server first.
    assert!(script.contains("ip daddr 10.43.0.10 udp dport 53 dnat to 10.42.0.1:53"));
    assert!(script.contains("ip daddr 10.43.0.10 tcp dport 53 dnat to 10.42.0.1:53"));
    assert!(script.contains("elements = { 192.168.1.10 }"));
}

#[test]
fn external_policy_local_keeps_the_source_and_short_circuits_cluster_traffic() {
    let script = render(&rich_model());
    let key = "default/lb/tcp/http";
    let (svc, loc, ext) = (
        chain_name("svc", key),
        chain_name("loc", key),
        chain_name("ext", key),
    );
    for address in ["203.0.113.7", "198.51.100.1"] {
        assert!(
            script.contains(&format!("{address} . tcp . 80 : goto {ext}")),
            "{script}"
        );
    }
    assert!(script.contains(&format!("tcp . 30080 : goto {ext}")));
    assert!(script.contains(&format!(
        "chain {ext} {{\n\t\tcomment \"{key} (external)\"\n\t\tip saddr 10.42.0.0/16 goto {svc}\n\t\t\
         fib saddr type local jump mark-for-masquerade\n\t\tfib saddr type local goto {svc}\n\t\tgoto {loc}\n\t}}"
    )));
    assert!(script.contains("meta l4proto tcp dnat to 10.42.0.5:8080"));
}

#[test]
fn services_without_usable_endpoints_are_rejected_or_dropped() {
    let script = render(&rich_model());
    // No endpoints at all: reject, for the cluster IP and the node port.
    assert!(
        script.contains("10.43.0.14 . tcp . 80 : goto reject-chain"),
        "{script}"
    );
    assert!(script.contains("tcp . 30082 : goto reject-chain"));
    assert!(!script.contains(&chain_name("svc", "default/empty/tcp/")));
    // Endpoints elsewhere only, policies Local: drop here, both kinds of traffic.
    assert!(script.contains("10.43.0.13 . tcp . 80 : drop"));
    assert!(script.contains("tcp . 30081 : drop"));
    assert!(script.contains("meta l4proto tcp reject with tcp reset\n\t\treject"));
    assert!(script.contains(
        "chain endpoints-check {\n\t\tct status dnat return\n\t\t\
         ip daddr 10.43.0.10 meta l4proto { tcp, udp } th dport 53 return\n\t\t\
         ip daddr . meta l4proto . th dport vmap @no-endpoint-services"
    ));
    assert!(
        script.contains("ip daddr @cluster-ips goto reject-chain\n\t\tip daddr 10.43.0.0/16 drop")
    );
}

#[test]
fn session_affinity_records_clients_per_endpoint() {
    let m = rich_model();
    let rules = m.services.iter().find(|s| s.name == "sticky").unwrap();
    let script = render(&m);
    let local = &rules.local_endpoints[0];
    let key = format!("default/sticky/tcp/http/{}:{}", local.ip, local.port);
    let (aff, ep) = (affinity_set(rules, local), chain_name("ep", &key));
    assert!(script.contains(&format!(
        "set {aff} {{\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 10800s\n\t}}"
    )));
    assert!(
        script.contains(&format!("ip saddr @{aff} goto {ep}\n\t\tgoto {ep}")),
        "{script}"
    );
    assert!(script.contains(&format!("update @{aff} {{ ip saddr }}")));
    // Internal policy Local: the cluster IP goes to the local chain.
    let loc = chain_name("loc", "default/sticky/tcp/http");
    assert!(script.contains(&format!("10.43.0.12 . tcp . 80 : goto {loc}")));
}

#[test]
fn masquerading_covers_marked_traffic_the_pod_bridge_and_pod_egress() {
    let script = render(&rich_model());
    assert!(script.contains("jump masquerading\n"));
    assert!(script.contains("ip saddr 10.42.0.0/24 oifname \"skiff0\" ct status dnat masquerade"));
    assert!(script.contains("ip saddr 10.42.0.0/24 ip daddr != 10.42.0.0/16 masquerade"));
    let mut m = rich_model();
    m.bridge = "cni0".into();
    assert!(render(&m).contains("oifname \"cni0\""));
}

#[test]
fn chain_names_are_short_stable_and_distinct() {
    let a = chain_name("svc", "default/web/tcp/http");
    assert_eq!(a, chain_name("svc", "default/web/tcp/http"));
    assert_eq!(a.len(), 20);
    assert_ne!(a, chain_name("svc", "default/web/tcp/https"));
    assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
}

#[test]
fn nft_accepts_the_script_in_check_mode() {
    let net = skiff_testkit::netns::TestNetwork::new(1).expect("test network (needs root)");
    let executor = Executor::in_netns(net.node(0).netns_path());
    executor
        .check(&render(&rich_model()))
        .expect("valid script");
    let empty = model(&[], &[]);
    executor.check(&render(&empty)).expect("valid empty script");
    let error = executor
        .check("table ip skiff-proxy { chain x { bogus } }")
        .unwrap_err();
    assert!(error.to_string().contains("syntax error"), "{error}");
}
