//! Selection, isolation and rule semantics, checked through the model and its evaluator.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use super::*;

pub(crate) const NODE: &str = "node-a";

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

/// A running pod `ns/name` at `ip` on `node` with `labels` and container `ports`.
pub(crate) fn pod(ns: &str, name: &str, ip: &str, node: &str, labels: Value, ports: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "namespace": ns, "name": name, "uid": format!("uid-{ns}-{name}"),
                      "labels": labels },
        "spec": { "nodeName": node, "containers": [{ "name": "c", "ports": ports }] },
        "status": { "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }] },
    }))
    .unwrap()
}

pub(crate) fn namespace(name: &str, labels: Value) -> Namespace {
    serde_json::from_value(json!({ "metadata": { "name": name, "labels": labels } })).unwrap()
}

pub(crate) fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({ "metadata": { "namespace": ns, "name": name }, "spec": spec }))
        .unwrap()
}

/// The standard cluster: namespaces `prod` (team=a) and `dev` (team=b); pods
/// - prod/web 10.42.0.10 (local, app=web, port http=8080/TCP, dns=53/UDP)
/// - prod/api 10.42.0.11 (local, app=api, port http=9090)
/// - prod/client 10.42.1.20 (remote, app=client)
/// - dev/client 10.42.1.21 (remote, app=client)
/// - dev/db 10.42.0.12 (local, app=db)
fn cluster() -> (Vec<Pod>, Vec<Namespace>) {
    let pods = vec![
        pod(
            "prod",
            "web",
            "10.42.0.10",
            NODE,
            json!({ "app": "web" }),
            json!([{ "name": "http", "containerPort": 8080 },
                   { "name": "dns", "containerPort": 53, "protocol": "UDP" }]),
        ),
        pod(
            "prod",
            "api",
            "10.42.0.11",
            NODE,
            json!({ "app": "api" }),
            json!([{ "name": "http", "containerPort": 9090 }]),
        ),
        pod(
            "prod",
            "client",
            "10.42.1.20",
            "node-b",
            json!({ "app": "client" }),
            json!([]),
        ),
        pod(
            "dev",
            "client",
            "10.42.1.21",
            "node-b",
            json!({ "app": "client" }),
            json!([]),
        ),
        pod(
            "dev",
            "db",
            "10.42.0.12",
            NODE,
            json!({ "app": "db" }),
            json!([]),
        ),
    ];
    let namespaces = vec![
        namespace("prod", json!({ "team": "a" })),
        namespace("dev", json!({ "team": "b" })),
    ];
    (pods, namespaces)
}

fn model_of(policies: &[NetworkPolicy]) -> PolicyModel {
    let (pods, namespaces) = cluster();
    build(&PolicyInput {
        policies,
        pods: &pods,
        namespaces: &namespaces,
        node_name: NODE,
        bridge: "skiff0",
    })
}

fn tcp(src: &str, dst: &str, port: u16) -> Packet {
    Packet {
        src: ip(src),
        dst: ip(dst),
        protocol: Some(Protocol::Tcp),
        port,
    }
}

fn udp(src: &str, dst: &str, port: u16) -> Packet {
    Packet {
        protocol: Some(Protocol::Udp),
        ..tcp(src, dst, port)
    }
}

fn icmp(src: &str, dst: &str) -> Packet {
    Packet {
        protocol: None,
        ..tcp(src, dst, 0)
    }
}

const WEB: &str = "10.42.0.10";
const API: &str = "10.42.0.11";
const PROD_CLIENT: &str = "10.42.1.20";
const DEV_CLIENT: &str = "10.42.1.21";
const DB: &str = "10.42.0.12";

#[test]
fn without_policies_nothing_is_isolated() {
    let model = model_of(&[]);
    assert_eq!(model.pods.len(), 3, "only local pods: {:?}", model.pods);
    assert!(!model.any_isolated());
    assert!(model.allows(&tcp(DEV_CLIENT, WEB, 1)));
    let web = &model.pods[0];
    assert_eq!(web.ip, ip(WEB));
    assert_eq!(web.host_veth, crate::podnet::host_veth_name("uid-prod-web"));
}

#[test]
fn a_default_deny_isolates_only_selected_pods_of_its_namespace() {
    let model = model_of(&[policy("prod", "deny", json!({ "podSelector": {} }))]);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    assert!(!model.allows(&tcp(PROD_CLIENT, WEB, 8080)));
    assert!(!model.allows(&icmp(DEV_CLIENT, API)));
    // dev/db is not in prod: untouched.
    assert!(model.allows(&tcp(PROD_CLIENT, DB, 5432)));
    // Ingress only (defaulted): web may still send anywhere.
    assert!(model.allows(&tcp(WEB, DEV_CLIENT, 80)));
    let web = model.pods.iter().find(|p| p.ip == ip(WEB)).unwrap();
    assert_eq!(web.ingress, vec![0]);
    assert!(web.egress.is_empty());
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_there_are_egress_rules() {
    // egress rules present, policyTypes absent: both directions.
    let model = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": { "matchLabels": { "app": "web" } },
                "egress": [{ "to": [{ "ipBlock": { "cidr": "10.42.1.20/32" } }] }] }),
    )]);
    let p = &model.policies[0];
    assert_eq!(p.ingress, Some(vec![]));
    assert!(p.egress.is_some());
    assert!(!model.allows(&tcp(DEV_CLIENT, WEB, 8080)));
    assert!(model.allows(&tcp(WEB, PROD_CLIENT, 80)));
    assert!(!model.allows(&tcp(WEB, DEV_CLIENT, 80)));

    // `egress: []` is no egress section for the defaulting: ingress only.
    let model = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "egress": [] }),
    )]);
    assert_eq!(model.policies[0].egress, None);
    assert!(model.allows(&tcp(WEB, DEV_CLIENT, 80)));

    // Explicit Egress only: ingress stays open, egress denied (no rules).
    let model = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "policyTypes": ["Egress"],
                "ingress": [{ "from": [{ "podSelector": {} }] }] }),
    )]);
    assert_eq!(model.policies[0].ingress, None);
    assert_eq!(model.policies[0].egress, Some(vec![]));
    assert!(model.allows(&tcp(DEV_CLIENT, WEB, 8080)));
    assert!(!model.allows(&tcp(WEB, DEV_CLIENT, 80)));
    assert!(!model.allows(&udp(WEB, "10.42.0.1", 53)));
}

#[test]
fn empty_from_allows_everyone_but_an_empty_rule_list_allows_no_one() {
    let open = model_of(&[policy(
        "prod",
        "open",
        json!({ "podSelector": {}, "ingress": [{}] }),
    )]);
    assert!(open.allows(&tcp(DEV_CLIENT, WEB, 1)));
    assert!(open.allows(&icmp("192.0.2.1", WEB)));
    let empty_from = model_of(&[policy(
        "prod",
        "open",
        json!({ "podSelector": {}, "ingress": [{ "from": [], "ports": [] }] }),
    )]);
    assert!(empty_from.allows(&tcp(DEV_CLIENT, WEB, 1)));
    let closed = model_of(&[policy(
        "prod",
        "closed",
        json!({ "podSelector": {}, "ingress": [] }),
    )]);
    assert!(!closed.allows(&tcp(DEV_CLIENT, WEB, 1)));
    // A selector that matches no pod: the rule allows nothing, it does not become "all".
    let nobody = model_of(&[policy(
        "prod",
        "nobody",
        json!({ "podSelector": {}, "ingress": [{ "from": [
            { "podSelector": { "matchLabels": { "app": "ghost" } } }] }] }),
    )]);
    assert_eq!(
        nobody.policies[0].ingress.as_ref().unwrap()[0].peers,
        Peers::Only(AddressSet::default())
    );
    assert!(!nobody.allows(&tcp(PROD_CLIENT, WEB, 1)));
}

#[test]
fn the_union_of_selecting_policies_applies() {
    let model = model_of(&[
        policy(
            "prod",
            "from-client",
            json!({ "podSelector": { "matchLabels": { "app": "web" } },
                    "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }] }] }),
        ),
        policy(
            "prod",
            "from-api",
            json!({ "podSelector": {},
                    "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "api" } } }] }] }),
        ),
    ]);
    // The podSelector peer is in the policy's namespace only.
    assert!(model.allows(&tcp(PROD_CLIENT, WEB, 80)));
    assert!(!model.allows(&tcp(DEV_CLIENT, WEB, 80)));
    assert!(model.allows(&tcp(API, WEB, 80)));
    // api is selected only by from-api.
    assert!(!model.allows(&tcp(PROD_CLIENT, API, 80)));
    let web = model.pods.iter().find(|p| p.ip == ip(WEB)).unwrap();
    assert_eq!(web.ingress.len(), 2);
}

#[test]
fn namespace_selector_alone_and_together_with_a_pod_selector() {
    // Any pod of team=b namespaces.
    let alone = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "from": [
            { "namespaceSelector": { "matchLabels": { "team": "b" } } }] }] }),
    )]);
    assert!(alone.allows(&tcp(DEV_CLIENT, WEB, 80)));
    assert!(alone.allows(&tcp(DB, WEB, 80)));
    assert!(!alone.allows(&tcp(PROD_CLIENT, WEB, 80)));

    // One peer with both: pods labelled app=client in namespaces of team a or b.
    let both = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "from": [{
            "namespaceSelector": { "matchExpressions": [
                { "key": "team", "operator": "In", "values": ["a", "b"] }] },
            "podSelector": { "matchLabels": { "app": "client" } } }] }] }),
    )]);
    assert!(both.allows(&tcp(DEV_CLIENT, WEB, 80)));
    assert!(both.allows(&tcp(PROD_CLIENT, WEB, 80)));
    assert!(!both.allows(&tcp(DB, WEB, 80)));

    // Two peers: OR. dev's namespace (by the automatic name label) or app=api in prod.
    let either = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "from": [
            { "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "dev" } } },
            { "podSelector": { "matchLabels": { "app": "api" } } }] }] }),
    )]);
    assert!(either.allows(&tcp(DB, WEB, 80)));
    assert!(either.allows(&tcp(API, WEB, 80)));
    assert!(!either.allows(&tcp(PROD_CLIENT, WEB, 80)));

    // An empty namespaceSelector is every namespace.
    let all = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "from": [
            { "namespaceSelector": {}, "podSelector": { "matchLabels": { "app": "client" } } }] }] }),
    )]);
    assert!(all.allows(&tcp(DEV_CLIENT, WEB, 80)));
    assert!(!all.allows(&tcp(DB, WEB, 80)));
}

#[test]
fn selector_operators() {
    let sel: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(json!({ "matchExpressions": [
            { "key": "tier", "operator": "NotIn", "values": ["db"] },
            { "key": "app", "operator": "Exists" },
            { "key": "legacy", "operator": "DoesNotExist" }] }))
        .unwrap();
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    use super::model::selector_matches;
    assert_eq!(selector_matches(&sel, &labels(&[("app", "x")])), Ok(true));
    assert_eq!(
        selector_matches(&sel, &labels(&[("app", "x"), ("tier", "db")])),
        Ok(false)
    );
    assert_eq!(
        selector_matches(&sel, &labels(&[("tier", "web")])),
        Ok(false)
    );
    assert_eq!(
        selector_matches(&sel, &labels(&[("app", "x"), ("legacy", "")])),
        Ok(false)
    );

    // A bad operator: the selector matches nothing and a warning says why.
    let model = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "podSelector": {
            "matchExpressions": [{ "key": "app", "operator": "Like" }] } }] }] }),
    )]);
    assert!(!model.allows(&tcp(API, WEB, 80)));
    assert_eq!(model.warnings.len(), 1, "{:?}", model.warnings);
    assert!(model.warnings[0].to_string().contains("Like"));
}

#[test]
fn ip_blocks_with_excepts_match_by_address_pods_included() {
    let model = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": { "matchLabels": { "app": "web" } }, "ingress": [{ "from": [
            { "ipBlock": { "cidr": "10.42.0.0/16", "except": ["10.42.1.0/24", "10.42.0.12/32"] } },
            { "ipBlock": { "cidr": "192.0.2.7/24" } },
            { "ipBlock": { "cidr": "2001:db8::/64" } }] }] }),
    )]);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    assert!(model.allows(&tcp(API, WEB, 80)));
    assert!(!model.allows(&tcp(PROD_CLIENT, WEB, 80)));
    assert!(!model.allows(&tcp(DB, WEB, 80)));
    assert!(model.allows(&tcp("10.42.2.9", WEB, 80)));
    assert!(model.allows(&tcp("192.0.2.200", WEB, 80)));
    assert!(!model.allows(&tcp("192.0.3.1", WEB, 80)));
    let Peers::Only(set) = &model.policies[0].ingress.as_ref().unwrap()[0].peers else {
        panic!("peers expected");
    };
    assert_eq!(
        set.to_string(),
        "10.42.0.0-10.42.0.11, 10.42.0.13-10.42.0.255, 10.42.2.0-10.42.255.255, \
         192.0.2.0-192.0.2.255"
    );

    // A broken except must not widen the block: the block matches nothing.
    let model = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "from": [
            { "ipBlock": { "cidr": "0.0.0.0/0", "except": ["bogus"] } }] }] }),
    )]);
    assert!(!model.allows(&tcp(API, WEB, 80)));
    assert_eq!(model.warnings.len(), 1);
}

#[test]
fn address_sets_merge_and_subtract() {
    let set = AddressSet::from_ranges([
        (ip("10.0.0.5"), ip("10.0.0.9")),
        (ip("10.0.0.10"), ip("10.0.0.12")),
        (ip("10.0.0.1"), ip("10.0.0.6")),
        (ip("10.0.1.0"), ip("10.0.1.0")),
    ]);
    assert_eq!(set.to_string(), "10.0.0.1-10.0.0.12, 10.0.1.0");
    let all = AddressSet::from_ranges([(ip("0.0.0.0"), ip("255.255.255.255"))]);
    let cut = all.minus(&AddressSet::from_addresses([
        ip("0.0.0.0"),
        ip("255.255.255.255"),
    ]));
    assert_eq!(cut.to_string(), "0.0.0.1-255.255.255.254");
    assert!(!cut.contains(ip("255.255.255.255")));
    assert!(cut.contains(ip("8.8.8.8")));
    assert!(set.minus(&all).is_empty());
}

#[test]
fn ports_by_number_range_protocol_and_name() {
    let model = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "ports": [
            { "port": 80 },
            { "protocol": "UDP", "port": 5000, "endPort": 5010 },
            { "protocol": "SCTP" },
            { "port": "http" }] }] }),
    )]);
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    assert!(model.allows(&tcp(DEV_CLIENT, WEB, 80)));
    assert!(!model.allows(&udp(DEV_CLIENT, WEB, 80)));
    assert!(model.allows(&udp(DEV_CLIENT, WEB, 5000)));
    assert!(model.allows(&udp(DEV_CLIENT, WEB, 5010)));
    assert!(!model.allows(&udp(DEV_CLIENT, WEB, 5011)));
    assert!(model.allows(&Packet {
        protocol: Some(Protocol::Sctp),
        ..tcp(DEV_CLIENT, WEB, 36412)
    }));
    // With ports, ICMP is not allowed.
    assert!(!model.allows(&icmp(DEV_CLIENT, WEB)));
    // "http" is 8080 on web and 9090 on api: resolved per destination pod.
    assert!(model.allows(&tcp(DEV_CLIENT, WEB, 8080)));
    assert!(!model.allows(&tcp(DEV_CLIENT, WEB, 9090)));
    assert!(model.allows(&tcp(DEV_CLIENT, API, 9090)));
    assert!(!model.allows(&tcp(DEV_CLIENT, API, 8080)));
    let Ports::Only { named, .. } = &model.policies[0].ingress.as_ref().unwrap()[0].ports else {
        panic!("ports expected");
    };
    assert_eq!(
        named,
        &vec![
            NamedPort {
                ip: ip(WEB),
                protocol: Protocol::Tcp,
                port: 8080
            },
            NamedPort {
                ip: ip(API),
                protocol: Protocol::Tcp,
                port: 9090
            },
        ]
    );
}

#[test]
fn named_ports_match_name_and_protocol_and_egress_resolves_on_destinations() {
    // UDP "dns" exists on web only; TCP "dns" nowhere.
    let model = model_of(&[policy(
        "dev",
        "p",
        json!({ "podSelector": {}, "policyTypes": ["Egress"], "egress": [
            { "to": [{ "namespaceSelector": { "matchLabels": { "team": "a" } } }],
              "ports": [{ "port": "dns", "protocol": "UDP" }, { "port": "dns" }] },
            { "to": [{ "ipBlock": { "cidr": "10.42.0.11/32" } }], "ports": [{ "port": "http" }] }] }),
    )]);
    assert!(model.allows(&udp(DB, WEB, 53)));
    assert!(!model.allows(&tcp(DB, WEB, 53)));
    assert!(!model.allows(&udp(DB, API, 53)));
    // ipBlock destinations that are pods resolve their named ports too.
    assert!(model.allows(&tcp(DB, API, 9090)));
    assert!(!model.allows(&tcp(DB, WEB, 8080)));
    // A named port no destination has: the rule allows nothing (not every port).
    let model = model_of(&[policy(
        "dev",
        "p",
        json!({ "podSelector": {}, "policyTypes": ["Egress"], "egress": [
            { "ports": [{ "port": "nope" }] }] }),
    )]);
    assert!(!model.allows(&tcp(DB, WEB, 8080)));
    assert!(!model.policies[0].egress.as_ref().unwrap()[0].matches_anything());
}

#[test]
fn end_port_below_port_and_unknown_protocols_narrow_and_warn() {
    let model = model_of(&[policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "ports": [
            { "port": 100, "endPort": 90 }, { "protocol": "ICMP", "port": 1 }] }] }),
    )]);
    assert_eq!(model.warnings.len(), 2, "{:?}", model.warnings);
    assert!(model.allows(&tcp(DEV_CLIENT, WEB, 100)));
    assert!(!model.allows(&tcp(DEV_CLIENT, WEB, 95)));
    assert!(!model.allows(&icmp(DEV_CLIENT, WEB)));
}

#[test]
fn egress_and_ingress_both_apply_between_local_pods() {
    let model = model_of(&[
        policy(
            "prod",
            "web-out",
            json!({ "podSelector": { "matchLabels": { "app": "web" } }, "policyTypes": ["Egress"],
                    "egress": [{ "to": [{ "namespaceSelector": {} }] }] }),
        ),
        policy("dev", "db-in", json!({ "podSelector": {}, "ingress": [] })),
    ]);
    // web may send to pods anywhere, but db admits no one.
    assert!(!model.allows(&tcp(WEB, DB, 5432)));
    assert!(model.allows(&tcp(WEB, API, 80)));
    // Off-cluster destinations are not pods.
    assert!(!model.allows(&tcp(WEB, "1.1.1.1", 443)));
}

#[test]
fn host_network_finished_and_remote_pods_are_handled() {
    let (mut pods, namespaces) = cluster();
    let mut host: Pod = pod(
        "prod",
        "host",
        "10.123.0.1",
        NODE,
        json!({ "app": "client" }),
        json!([]),
    );
    host.spec.as_mut().unwrap().host_network = Some(true);
    pods.push(host);
    let mut done = pod(
        "prod",
        "done",
        "10.42.0.30",
        NODE,
        json!({ "app": "client" }),
        json!([]),
    );
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    pods.push(done);
    let policies = [policy(
        "prod",
        "p",
        json!({ "podSelector": {}, "ingress": [{ "from": [
            { "podSelector": { "matchLabels": { "app": "client" } } }] }] }),
    )];
    let model = build(&PolicyInput {
        policies: &policies,
        pods: &pods,
        namespaces: &namespaces,
        node_name: NODE,
        bridge: "skiff0",
    });
    assert_eq!(model.pods.len(), 3);
    assert!(model.allows(&tcp(PROD_CLIENT, WEB, 80)));
    assert!(!model.allows(&tcp("10.123.0.1", WEB, 80)));
    assert!(!model.allows(&tcp("10.42.0.30", WEB, 80)));
    // Policies selecting only pods of other nodes are not in the model.
    let other = [policy(
        "prod",
        "elsewhere",
        json!({ "podSelector": { "matchLabels": { "app": "client" } } }),
    )];
    let model = model_of(&other);
    assert!(model.policies.is_empty());
    assert!(!model.any_isolated());
}
