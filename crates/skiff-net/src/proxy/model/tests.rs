use std::net::Ipv4Addr;

use serde_json::json;

use super::*;
use crate::proxy::fixtures::*;

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

fn addrs(endpoints: &[Endpoint]) -> Vec<String> {
    endpoints
        .iter()
        .map(|e| format!("{}:{}", e.ip, e.port))
        .collect()
}

#[test]
fn a_cluster_ip_service_with_several_ports_gets_one_entry_per_port() {
    let svc = service(
        "default",
        "web",
        "10.43.0.10",
        json!([
            { "name": "http", "port": 80, "targetPort": 8080 },
            { "name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353 },
        ]),
        json!({}),
    );
    let sl = slice(
        "default",
        "web",
        "web-1",
        json!([
            { "name": "http", "port": 8080, "protocol": "TCP" },
            { "name": "dns", "port": 5353, "protocol": "UDP" },
        ]),
        vec![ready("10.42.1.5", "node-b"), ready("10.42.0.7", NODE)],
    );
    let m = model(&[svc], &[sl]);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.services.len(), 2);
    let dns = &m.services[1];
    assert_eq!(
        (dns.port_name.as_str(), dns.protocol, dns.port),
        ("dns", Protocol::Udp, 53)
    );
    assert_eq!(
        addrs(&dns.cluster_endpoints),
        ["10.42.0.7:5353", "10.42.1.5:5353"]
    );
    let http = &m.services[0];
    assert_eq!(http.cluster_ip, ip("10.43.0.10"));
    assert_eq!(
        addrs(&http.cluster_endpoints),
        ["10.42.0.7:8080", "10.42.1.5:8080"]
    );
    assert_eq!(addrs(&http.local_endpoints), ["10.42.0.7:8080"]);
    assert!(http.cluster_endpoints[0].local && !http.cluster_endpoints[1].local);
    assert_eq!(http.key(), "default/web/tcp/http");
    assert_eq!(http.affinity_timeout, None);
    assert!(!http.externally_accessible());
}

#[test]
fn a_named_target_port_resolves_per_slice() {
    // Two pod templates expose the "web" container port on different numbers; the slice
    // controller puts them in different slices, keyed by the service port's name.
    let svc = service(
        "default",
        "web",
        "10.43.0.10",
        json!([{ "name": "http", "port": 80, "targetPort": "web" }]),
        json!({}),
    );
    let a = slice(
        "default",
        "web",
        "web-a",
        json!([{ "name": "http", "port": 8080 }]),
        vec![ready("10.42.1.5", "node-b")],
    );
    let b = slice(
        "default",
        "web",
        "web-b",
        json!([{ "name": "http", "port": 9090 }]),
        vec![ready("10.42.2.5", "node-c")],
    );
    // A slice of another service and one in another namespace are not ours.
    let other = slice(
        "default",
        "other",
        "other-1",
        json!([{ "name": "http", "port": 1 }]),
        vec![ready("10.42.3.5", "node-c")],
    );
    let elsewhere = slice(
        "kube-system",
        "web",
        "web-x",
        json!([{ "name": "http", "port": 1 }]),
        vec![ready("10.42.4.5", "node-c")],
    );
    let m = model(&[svc], &[a, b, other, elsewhere]);
    assert_eq!(
        addrs(&m.services[0].cluster_endpoints),
        ["10.42.1.5:8080", "10.42.2.5:9090"]
    );
}

#[test]
fn a_port_name_that_does_not_match_the_slice_gets_no_endpoints() {
    let svc = service(
        "default",
        "web",
        "10.43.0.10",
        json!([{ "name": "http", "port": 80, "targetPort": 8080 }]),
        json!({}),
    );
    let sl = slice(
        "default",
        "web",
        "web-1",
        json!([{ "name": "https", "port": 8443 }, { "name": "http", "port": 8080, "protocol": "UDP" }]),
        vec![ready("10.42.1.5", "node-b")],
    );
    let m = model(&[svc], &[sl]);
    assert!(!m.services[0].has_endpoints());
}

#[test]
fn only_ready_endpoints_are_used_and_terminating_ones_only_to_drain() {
    let svc = service(
        "default",
        "web",
        "10.43.0.10",
        json!([{ "port": 80 }]),
        json!({}),
    );
    let ports = json!([{ "port": 8080 }]);
    let mixed = slice(
        "default",
        "web",
        "web-1",
        ports.clone(),
        vec![
            ready("10.42.1.1", "node-b"),
            // Unset conditions mean ready.
            json!({ "addresses": ["10.42.1.2"], "nodeName": "node-b" }),
            ep("10.42.1.3", "node-b", Some(false), Some(false), Some(false)),
            ep("10.42.1.4", "node-b", Some(false), Some(true), Some(true)),
        ],
    );
    let m = model(std::slice::from_ref(&svc), &[mixed]);
    assert_eq!(
        addrs(&m.services[0].cluster_endpoints),
        ["10.42.1.1:8080", "10.42.1.2:8080"]
    );

    let draining = slice(
        "default",
        "web",
        "web-1",
        ports,
        vec![
            ep("10.42.1.3", "node-b", Some(false), Some(false), Some(true)),
            ep("10.42.1.4", "node-b", Some(false), Some(true), Some(true)),
            ep("10.42.1.5", "node-b", Some(false), Some(false), Some(false)),
        ],
    );
    let m = model(&[svc], &[draining]);
    assert_eq!(addrs(&m.services[0].cluster_endpoints), ["10.42.1.4:8080"]);
    assert!(m.services[0].has_endpoints());
}

#[test]
fn an_endpoint_in_two_slices_counts_once_and_its_ready_copy_wins() {
    let svc = service(
        "default",
        "web",
        "10.43.0.10",
        json!([{ "port": 80 }]),
        json!({}),
    );
    let ports = json!([{ "port": 8080 }]);
    let a = slice(
        "default",
        "web",
        "a",
        ports.clone(),
        vec![ep(
            "10.42.1.1",
            "node-b",
            Some(false),
            Some(false),
            Some(false),
        )],
    );
    let b = slice(
        "default",
        "web",
        "b",
        ports,
        vec![ready("10.42.1.1", "node-b")],
    );
    let m = model(&[svc], &[a, b]);
    assert_eq!(addrs(&m.services[0].cluster_endpoints), ["10.42.1.1:8080"]);
}

#[test]
fn internal_traffic_policy_local_uses_only_this_nodes_endpoints() {
    let svc = service(
        "default",
        "web",
        "10.43.0.10",
        json!([{ "port": 80 }]),
        json!({ "internalTrafficPolicy": "Local" }),
    );
    let sl = slice(
        "default",
        "web",
        "web-1",
        json!([{ "port": 8080 }]),
        vec![
            ready("10.42.0.5", NODE),
            ready("10.42.1.5", "node-b"),
            // A terminating local endpoint is not used while a ready local one exists.
            ep("10.42.0.6", NODE, Some(false), Some(true), Some(true)),
        ],
    );
    let m = model(std::slice::from_ref(&svc), &[sl]);
    let rules = &m.services[0];
    assert_eq!(rules.internal_policy, TrafficPolicy::Local);
    assert_eq!(addrs(rules.internal_endpoints()), ["10.42.0.5:8080"]);

    // Only remote endpoints: there are endpoints, but none for cluster-IP traffic here.
    let remote = slice(
        "default",
        "web",
        "web-1",
        json!([{ "port": 8080 }]),
        vec![ready("10.42.1.5", "node-b")],
    );
    let m = model(&[svc], &[remote]);
    assert!(m.services[0].has_endpoints());
    assert!(m.services[0].internal_endpoints().is_empty());
}

#[test]
fn node_ports_external_ips_and_load_balancers_with_external_policy_local() {
    let mut svc = service(
        "default",
        "web",
        "10.43.0.10",
        json!([{ "port": 80, "nodePort": 30080 }]),
        json!({
            "type": "LoadBalancer",
            "externalIPs": ["203.0.113.7", "2001:db8::1"],
            "externalTrafficPolicy": "Local",
        }),
    );
    svc.status = Some(
        serde_json::from_value(json!({ "loadBalancer": { "ingress": [
            { "ip": "198.51.100.1" },
            { "ip": "198.51.100.2", "ipMode": "Proxy" },
            { "hostname": "lb.example.com" },
        ]}}))
        .unwrap(),
    );
    let sl = slice(
        "default",
        "web",
        "web-1",
        json!([{ "port": 8080 }]),
        vec![ready("10.42.0.5", NODE), ready("10.42.1.5", "node-b")],
    );
    let m = model(&[svc], &[sl]);
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    let rules = &m.services[0];
    assert_eq!(rules.node_port, Some(30080));
    assert_eq!(rules.external_ips, [ip("198.51.100.1"), ip("203.0.113.7")]);
    assert_eq!(rules.external_policy, TrafficPolicy::Local);
    assert_eq!(addrs(rules.external_endpoints()), ["10.42.0.5:8080"]);
    assert_eq!(
        addrs(rules.internal_endpoints()),
        ["10.42.0.5:8080", "10.42.1.5:8080"]
    );
}

#[test]
fn node_ports_outside_the_range_and_on_cluster_ip_services_are_ignored() {
    let bad = service(
        "default",
        "bad",
        "10.43.0.11",
        json!([{ "port": 80, "nodePort": 22 }]),
        json!({ "type": "NodePort" }),
    );
    let plain = service(
        "default",
        "plain",
        "10.43.0.12",
        json!([{ "port": 80, "nodePort": 30001 }]),
        json!({}),
    );
    let m = model(&[bad, plain], &[]);
    assert_eq!(m.services.len(), 2);
    assert!(m.services.iter().all(|s| s.node_port.is_none()));
    assert!(matches!(
        m.warnings.as_slice(),
        [ModelWarning::NodePortOutOfRange { node_port: 22, .. }]
    ));
}

#[test]
fn session_affinity_client_ip_has_a_default_and_a_configured_timeout() {
    let default = service(
        "default",
        "a",
        "10.43.0.10",
        json!([{ "port": 80 }]),
        json!({ "sessionAffinity": "ClientIP" }),
    );
    let configured = service(
        "default",
        "b",
        "10.43.0.11",
        json!([{ "port": 80 }]),
        json!({ "sessionAffinity": "ClientIP", "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 60 } } }),
    );
    let none = service(
        "default",
        "c",
        "10.43.0.12",
        json!([{ "port": 80 }]),
        json!({ "sessionAffinity": "None" }),
    );
    let m = model(&[default, configured, none], &[]);
    let timeouts: Vec<Option<u32>> = m.services.iter().map(|s| s.affinity_timeout).collect();
    assert_eq!(timeouts, [Some(DEFAULT_AFFINITY_TIMEOUT), Some(60), None]);
}

#[test]
fn headless_external_name_and_unallocated_services_get_no_rules() {
    let headless = service("default", "h", "None", json!([{ "port": 80 }]), json!({}));
    let external: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": { "namespace": "default", "name": "e" },
        "spec": { "type": "ExternalName", "externalName": "example.com", "ports": [{ "port": 80 }] },
    }))
    .unwrap();
    let pending: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": { "namespace": "default", "name": "p" },
        "spec": { "ports": [{ "port": 80 }] },
    }))
    .unwrap();
    let v6 = service(
        "default",
        "v6",
        "fd00::10",
        json!([{ "port": 80 }]),
        json!({}),
    );
    let sl = slice(
        "default",
        "h",
        "h-1",
        json!([{ "port": 80 }]),
        vec![ready("10.42.1.5", "node-b")],
    );
    let m = model(&[headless, external, pending, v6], &[sl]);
    assert!(m.services.is_empty(), "{:?}", m.services);
    assert!(matches!(
        m.warnings.as_slice(),
        [ModelWarning::NoIpv4ClusterIp { .. }]
    ));
}

#[test]
fn a_dual_stack_service_uses_its_ipv4_cluster_ip() {
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": { "namespace": "default", "name": "ds" },
        "spec": { "clusterIP": "fd00::10", "clusterIPs": ["fd00::10", "10.43.0.20"], "ports": [{ "port": 80 }] },
    }))
    .unwrap();
    let m = model(&[svc], &[]);
    assert_eq!(m.services[0].cluster_ip, ip("10.43.0.20"));
}

#[test]
fn a_service_without_endpoints_is_kept_so_that_it_can_be_rejected() {
    let svc = service(
        "default",
        "web",
        "10.43.0.10",
        json!([{ "port": 80 }]),
        json!({}),
    );
    let m = model(&[svc], &[]);
    assert_eq!(m.services.len(), 1);
    assert!(!m.services[0].has_endpoints());
    assert!(m.services[0].internal_endpoints().is_empty());
}

#[test]
fn an_external_ip_claimed_twice_stays_with_the_first_service() {
    let a = service(
        "default",
        "a",
        "10.43.0.10",
        json!([{ "port": 80 }]),
        json!({ "externalIPs": ["203.0.113.7"] }),
    );
    let b = service(
        "default",
        "b",
        "10.43.0.11",
        json!([{ "port": 80 }]),
        json!({ "externalIPs": ["203.0.113.7"] }),
    );
    let m = model(&[b, a], &[]);
    assert_eq!(m.services[0].external_ips, [ip("203.0.113.7")]);
    assert!(m.services[1].external_ips.is_empty());
    assert!(matches!(
        m.warnings.as_slice(),
        [ModelWarning::Conflict { .. }]
    ));
}
