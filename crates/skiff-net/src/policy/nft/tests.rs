use std::time::Instant;

use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;
use skiff_testkit::netns::Namespace;

use super::*;
use crate::policy::model::{PolicyInput, build};
use crate::policy::tests::{NODE, namespace, pod, policy};
use crate::policy::{Executor, PolicyModel};

fn model(policies: &[NetworkPolicy], pods: &[Pod], namespaces: &[K8sNamespace]) -> PolicyModel {
    build(&PolicyInput {
        policies,
        pods,
        namespaces,
        node_name: NODE,
        bridge: "skiff0",
    })
}

fn rich() -> PolicyModel {
    let pods = vec![
        pod(
            "prod",
            "web",
            "10.42.0.10",
            NODE,
            json!({ "app": "web" }),
            json!([{ "name": "http", "containerPort": 8080 }]),
        ),
        pod(
            "prod",
            "api",
            "10.42.0.11",
            NODE,
            json!({ "app": "api" }),
            json!([]),
        ),
        pod(
            "dev",
            "x",
            "10.42.1.20",
            "node-b",
            json!({ "app": "x" }),
            json!([]),
        ),
    ];
    let namespaces = vec![namespace("prod", json!({})), namespace("dev", json!({}))];
    let policies = vec![
        policy(
            "prod",
            "web",
            json!({ "podSelector": { "matchLabels": { "app": "web" } },
                    "ingress": [{ "from": [{ "namespaceSelector": {} },
                                           { "ipBlock": { "cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"] } }],
                                  "ports": [{ "port": "http" }, { "port": 80 }, { "protocol": "UDP", "port": 5000, "endPort": 5100 }, { "protocol": "SCTP" }] }],
                    "egress": [{ "to": [{ "ipBlock": { "cidr": "10.43.0.10/32" } }], "ports": [{ "protocol": "UDP", "port": 53 }] },
                               { "to": [{ "podSelector": {} }] }] }),
        ),
        policy("prod", "deny", json!({ "podSelector": {} })),
    ];
    model(&policies, &pods, &namespaces)
}

#[test]
fn the_script_replaces_both_tables_and_dispatches_by_address() {
    let script = render(&rich());
    assert!(
        script.starts_with(
            "table inet skiff-policy {}\ndelete table inet skiff-policy\n\
             table bridge skiff-policy {}\ndelete table bridge skiff-policy\n"
        ),
        "{script}"
    );
    let web_in = chain_name("in", "prod/web");
    let deny_in = chain_name("in", "prod/deny");
    let group = chain_name("ingress", "prod/deny,prod/web");
    assert!(
        script.contains(&format!("10.42.0.10 : goto {group}")),
        "{script}"
    );
    assert!(script.contains(&format!(
        "\tchain {group} {{\n\t\tjump {deny_in}\n\t\tjump {web_in}\n\t\tdrop\n\t}}"
    )));
    // api is isolated by `deny` alone.
    let deny_group = chain_name("ingress", "prod/deny");
    assert!(script.contains(&format!("10.42.0.11 : goto {deny_group}")));
    // Named port resolved on web, numeric, range and whole-protocol ports.
    assert!(script.contains("10.42.0.10 . tcp . 8080"), "{script}");
    assert!(script.contains("meta l4proto tcp th dport 80 accept"));
    assert!(script.contains("meta l4proto udp th dport 5000-5100 accept"));
    assert!(script.contains("meta l4proto sctp accept"));
    // The ipBlock's except is cut out.
    assert!(script.contains("192.0.2.0-192.0.2.127"), "{script}");
    // Egress to the DNS service address also matches after the redirect to the node.
    assert!(script.contains("ct status dnat ct original ip daddr @peers-"));
    assert!(script.contains(
        "fib daddr type local meta l4proto udp ct original proto-dst 53 goto check-ingress"
    ));
    assert!(script.contains("ct direction reply accept"));
    let veth = crate::podnet::host_veth_name("uid-prod-web");
    assert!(script.contains(&format!("\"{veth}\"")));
    // Deterministic.
    assert_eq!(script, render(&rich()));
}

#[test]
fn an_empty_model_renders_empty_maps() {
    let script = render(&model(&[], &[], &[]));
    assert!(script.contains("map ingress-pods {\n\t\ttype ipv4_addr : verdict\n\t}"));
    assert!(!script.contains("elements"));
}

#[test]
fn scripts_pass_nft_check() {
    let ns = Namespace::new().expect("test namespace (needs root)");
    let executor = Executor::in_netns(ns.path());
    // Whole-range ipBlocks, with and without excepts at both ends.
    let pods = vec![pod("prod", "web", "10.42.0.10", NODE, json!({}), json!([]))];
    let everywhere = model(
        &[policy(
            "prod",
            "everywhere",
            json!({ "podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{ "from": [{ "ipBlock": { "cidr": "0.0.0.0/0" } }] }],
                    "egress": [{ "to": [{ "ipBlock": { "cidr": "0.0.0.0/0",
                        "except": ["0.0.0.0/8", "255.255.255.255/32", "10.0.0.0/8"] } }] }] }),
        )],
        &pods,
        &[],
    );
    assert!(everywhere.warnings.is_empty(), "{:?}", everywhere.warnings);
    for m in [rich(), model(&[], &[], &[]), everywhere] {
        let script = render(&m);
        executor
            .check(&script)
            .unwrap_or_else(|e| panic!("{e}\n{script}"));
    }
}

#[test]
fn a_failed_apply_keeps_the_rules() {
    let ns = Namespace::new().expect("test namespace (needs root)");
    let executor = Executor::in_netns(ns.path());
    let script = render(&rich());
    executor.apply(&script).unwrap();
    let before = executor.list().unwrap();
    let broken = script.replace("ct direction reply accept", "ct direction sideways accept");
    let error = executor.apply(&broken).unwrap_err();
    assert!(error.to_string().contains("sideways"), "{error}");
    assert_eq!(executor.list().unwrap(), before);
    executor.remove().unwrap();
}

/// 1,000 local pods in 20 namespaces and 100 policies (podSelector, namespaceSelector and
/// ipBlock peers, numeric and named ports, both directions): build, render and apply times.
#[test]
fn a_thousand_pods_and_a_hundred_policies_apply_quickly() {
    let mut pods = Vec::new();
    let mut namespaces = Vec::new();
    for n in 0..20 {
        namespaces.push(namespace(
            &format!("ns{n}"),
            json!({ "team": format!("t{}", n % 4) }),
        ));
    }
    for i in 0..1000u32 {
        let ns = format!("ns{}", i % 20);
        let ip = format!("10.42.{}.{}", i / 250, i % 250 + 2);
        pods.push(pod(
            &ns,
            &format!("pod{i}"),
            &ip,
            NODE,
            json!({ "app": format!("app{}", i % 10), "tier": format!("t{}", i % 3) }),
            json!([{ "name": "http", "containerPort": 8000 + (i % 5) }]),
        ));
    }
    let mut policies = Vec::new();
    for p in 0..100u32 {
        let ns = format!("ns{}", p % 20);
        policies.push(policy(
            &ns,
            &format!("pol{p}"),
            json!({
                "podSelector": { "matchLabels": { "app": format!("app{}", p % 10) } },
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [
                    { "from": [{ "podSelector": { "matchLabels": { "tier": format!("t{}", p % 3) } } },
                               { "namespaceSelector": { "matchLabels": { "team": format!("t{}", p % 4) } },
                                 "podSelector": { "matchLabels": { "app": format!("app{}", (p + 1) % 10) } } }],
                      "ports": [{ "port": "http" }, { "port": 9000 + p, "endPort": 9100 + p }] },
                    { "from": [{ "ipBlock": { "cidr": "172.16.0.0/12", "except": [format!("172.16.{p}.0/24")] } }] }],
                "egress": [
                    { "to": [{ "namespaceSelector": {} }], "ports": [{ "port": "http" }] },
                    { "to": [{ "ipBlock": { "cidr": "10.43.0.10/32" } }],
                      "ports": [{ "protocol": "UDP", "port": 53 }, { "protocol": "TCP", "port": 53 }] }]
            }),
        ));
    }
    let started = Instant::now();
    let m = model(&policies, &pods, &namespaces);
    let built = started.elapsed();
    let started = Instant::now();
    let script = render(&m);
    let rendered = started.elapsed();
    assert!(m.warnings.is_empty(), "{:?}", m.warnings);
    assert_eq!(m.pods.len(), 1000);
    assert!(m.pods.iter().all(|p| !p.ingress.is_empty()));

    let ns = Namespace::new().expect("test namespace (needs root)");
    let executor = Executor::in_netns(ns.path());
    let started = Instant::now();
    executor.apply(&script).unwrap_or_else(|e| panic!("{e}"));
    let first = started.elapsed();
    let started = Instant::now();
    executor.apply(&script).unwrap();
    let again = started.elapsed();
    eprintln!(
        "1000 pods x 100 policies: build {built:?}, render {rendered:?} ({} KiB), \
         nft apply {first:?} (first), {again:?} (replace)",
        script.len() / 1024
    );
    let listed = executor.list().unwrap();
    assert!(listed.contains("table inet skiff-policy"));
    assert!(listed.contains("table bridge skiff-policy"));
    executor.remove().unwrap();
    executor.remove().unwrap();
    assert!(executor.list().is_err());
}
