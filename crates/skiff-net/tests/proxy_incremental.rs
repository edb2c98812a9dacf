//! Incremental proxy updates against the full replace: a sequence of random model changes
//! applied through `ProxyState` leaves the same table as a full render of each model, and one
//! endpoint change at 1,000 services × 10 endpoints is timed against the full apply.
//!
//! Needs root and `nft`; runs in network namespaces of its own.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use skiff_net::Ipv4Cidr;
use skiff_net::proxy::{ApplyKind, Executor, ProxyInput, ProxyModel, ProxyState, build, render};
use skiff_testkit::netns::Namespace;

fn cidr(text: &str) -> Ipv4Cidr {
    text.parse().expect("valid CIDR")
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One service of the random cluster, as parameters.
#[derive(Debug, Clone)]
struct Svc {
    present: bool,
    kind: u8, // 0 ClusterIP, 1 NodePort, 2 LoadBalancer with an external IP
    affinity: Option<u32>,
    internal_local: bool,
    external_local: bool,
    /// (pod index, on this node, ready)
    endpoints: BTreeSet<(u8, bool, bool)>,
}

fn objects(services: &[Svc]) -> (Vec<Service>, Vec<EndpointSlice>) {
    let mut objects = Vec::new();
    let mut slices = Vec::new();
    for (i, svc) in services.iter().enumerate().filter(|(_, s)| s.present) {
        let i = i as u32;
        let name = format!("svc-{i}");
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 1, 0)) + i);
        let kind = ["ClusterIP", "NodePort", "LoadBalancer"][usize::from(svc.kind)];
        let mut spec = json!({
            "clusterIP": ip.to_string(),
            "type": kind,
            "ports": [
                { "name": "http", "port": 80, "targetPort": 8080, "nodePort": 30000 + i },
                { "name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353, "nodePort": 31000 + i },
            ],
            "internalTrafficPolicy": if svc.internal_local { "Local" } else { "Cluster" },
            "externalTrafficPolicy": if svc.external_local { "Local" } else { "Cluster" },
        });
        if svc.kind == 2 {
            spec["externalIPs"] = json!([format!("203.0.113.{i}")]);
        }
        if let Some(timeout) = svc.affinity {
            spec["sessionAffinity"] = json!("ClientIP");
            spec["sessionAffinityConfig"] = json!({ "clientIP": { "timeoutSeconds": timeout } });
        }
        objects.push(
            serde_json::from_value::<Service>(json!({
                "metadata": { "namespace": "default", "name": name },
                "spec": spec,
            }))
            .expect("service"),
        );
        let endpoints: Vec<Value> = svc
            .endpoints
            .iter()
            .map(|&(pod, local, ready)| {
                json!({
                    "addresses": [format!("10.42.{}.{}", i, pod + 2)],
                    "nodeName": if local { "node-0" } else { "node-1" },
                    "conditions": { "ready": ready, "serving": true, "terminating": !ready },
                })
            })
            .collect();
        slices.push(
            serde_json::from_value::<EndpointSlice>(json!({
                "metadata": {
                    "namespace": "default",
                    "name": format!("{name}-1"),
                    "labels": { "kubernetes.io/service-name": name },
                },
                "addressType": "IPv4",
                "ports": [
                    { "name": "http", "port": 8080, "protocol": "TCP" },
                    { "name": "dns", "port": 5353, "protocol": "UDP" },
                ],
                "endpoints": endpoints,
            }))
            .expect("slice"),
        );
    }
    (objects, slices)
}

fn model_of(services: &[Svc], node_ips: &[Ipv4Addr]) -> ProxyModel {
    let (services, slices) = objects(services);
    let model = build(&ProxyInput {
        services: &services,
        slices: &slices,
        node_name: "node-0",
        node_ips,
        pod_cidr: Some(cidr("10.42.0.0/24")),
        cluster_cidr: cidr("10.42.0.0/16"),
        service_cidr: cidr("10.43.0.0/16"),
        dns: None,
    });
    assert!(model.warnings.is_empty(), "{:?}", model.warnings);
    model
}

fn mutate(rng: &mut Rng, services: &mut [Svc]) {
    let svc = &mut services[rng.below(services.len() as u64) as usize];
    match rng.below(9) {
        0 => svc.present = !svc.present,
        1 => svc.kind = rng.below(3) as u8,
        2 => {
            svc.affinity = match svc.affinity {
                Some(_) if rng.chance(50) => None,
                _ => Some([300, 600][rng.below(2) as usize]),
            }
        }
        3 => svc.internal_local = !svc.internal_local,
        4 => svc.external_local = !svc.external_local,
        5 | 6 => {
            let pod = rng.below(6) as u8;
            svc.endpoints.retain(|e| e.0 != pod);
            svc.endpoints.insert((pod, rng.chance(40), !rng.chance(15)));
        }
        7 => {
            if let Some(&first) = svc.endpoints.iter().nth(rng.below(4) as usize) {
                svc.endpoints.remove(&first);
            }
        }
        _ => svc.endpoints.clear(),
    }
}

/// `nft list table` made comparable: objects sorted by kind and name, set and map elements
/// sorted (the kernel lists hash sets in no particular order).
fn normalize(listing: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in listing.lines() {
        let trimmed = line.trim();
        if line.starts_with("\t}") {
            let text = current.join(" ");
            blocks.push(sort_elements(&text));
            current.clear();
        } else if line.starts_with('\t') && !trimmed.is_empty() {
            current.push(trimmed.to_string());
        }
    }
    blocks.sort();
    blocks
}

fn sort_elements(text: &str) -> String {
    let Some(start) = text.find("elements = {") else {
        return text.to_string();
    };
    let body_start = start + "elements = {".len();
    let Some(len) = text[body_start..].find('}') else {
        return text.to_string();
    };
    let mut elements: Vec<&str> = text[body_start..body_start + len]
        .split(',')
        .map(str::trim)
        .collect();
    elements.sort_unstable();
    format!(
        "{}elements = {{ {} }}{}",
        &text[..start],
        elements.join(", "),
        &text[body_start + len + 1..]
    )
}

#[test]
fn random_incremental_changes_leave_the_same_table_as_a_full_render() {
    let incremental_ns = Namespace::new().expect("namespace (needs root)");
    let reference_ns = Namespace::new().expect("namespace (needs root)");
    let incremental = Executor::in_netns(incremental_ns.path());
    let reference = Executor::in_netns(reference_ns.path());
    let seed = std::env::var("SKIFF_PROXY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe_u64);
    let mut rng = Rng(seed);
    let mut services: Vec<Svc> = (0..12)
        .map(|i| Svc {
            present: i % 3 != 0,
            kind: (i % 3) as u8,
            affinity: (i % 4 == 0).then_some(600),
            internal_local: false,
            external_local: i % 5 == 0,
            endpoints: (0..(i % 4) as u8).map(|p| (p, p % 2 == 0, true)).collect(),
        })
        .collect();
    let mut node_ips = vec![Ipv4Addr::new(192, 168, 1, 10)];
    let mut state = ProxyState::new();
    let mut kinds = Vec::new();
    for step in 0..80 {
        if step > 0 {
            for _ in 0..=rng.below(3) {
                mutate(&mut rng, &mut services);
            }
            // Now and then a base change (the node's addresses): a full replace mid-way.
            if rng.chance(5) {
                node_ips = vec![Ipv4Addr::new(192, 168, 1, 10 + rng.below(2) as u8)];
            }
        }
        let model = model_of(&services, &node_ips);
        let plan = state.plan(&model);
        let stats = state
            .apply(&incremental, &model)
            .unwrap_or_else(|e| panic!("seed {seed:#x} step {step}: {e}\nscript:\n{plan}"));
        kinds.push(stats.kind);
        reference.apply(&render(&model)).expect("full apply");
        let got = normalize(&incremental.list().expect("list"));
        let want = normalize(&reference.list().expect("list"));
        if got != want {
            let extra: Vec<_> = got.iter().filter(|b| !want.contains(b)).collect();
            let missing: Vec<_> = want.iter().filter(|b| !got.contains(b)).collect();
            panic!(
                "seed {seed:#x} step {step}: tables differ\nonly incremental: {extra:#?}\n\
                 only full: {missing:#?}\nscript:\n{plan}"
            );
        }
    }
    let count = |kind| kinds.iter().filter(|k| **k == kind).count();
    eprintln!(
        "80 steps: {} full, {} incremental, {} unchanged",
        count(ApplyKind::Full),
        count(ApplyKind::Incremental),
        count(ApplyKind::Unchanged)
    );
    assert!(count(ApplyKind::Incremental) > 50, "{kinds:?}");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// 1,000 services × 10 endpoints: full apply against one-endpoint changes (p50/p99 over 50),
/// printed (run with --no-capture). Debug builds render slower than the agent's release one.
#[test]
fn one_endpoint_change_at_a_thousand_services_is_applied_incrementally() {
    let ns = Namespace::new().expect("namespace (needs root)");
    let executor = Executor::in_netns(ns.path());
    let mut services = Vec::new();
    let mut slices = Vec::new();
    let slice = |name: &str, i: u32, first: u32| -> EndpointSlice {
        let endpoints: Vec<Value> = (first..first + 10)
            .map(|e| {
                let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 0, 0)) + i * 64 + e + 2);
                json!({ "addresses": [addr.to_string()], "nodeName": format!("node-{}", e % 5) })
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {
                "namespace": "default",
                "name": format!("{name}-1"),
                "labels": { "kubernetes.io/service-name": name },
            },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            "endpoints": endpoints,
        }))
        .expect("slice")
    };
    for i in 0..1000u32 {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 43, 1, 0)) + i);
        let name = format!("svc-{i}");
        services.push(
            serde_json::from_value::<Service>(json!({
                "metadata": { "namespace": "default", "name": name },
                "spec": {
                    "clusterIP": ip.to_string(),
                    "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }],
                },
            }))
            .expect("service"),
        );
        slices.push(slice(&name, i, 0));
    }
    let node_ips = [Ipv4Addr::new(192, 168, 1, 10)];
    let model = |slices: &[EndpointSlice]| {
        build(&ProxyInput {
            services: &services,
            slices,
            node_name: "node-0",
            node_ips: &node_ips,
            pod_cidr: Some(cidr("10.42.0.0/24")),
            cluster_cidr: cidr("10.42.0.0/16"),
            service_cidr: cidr("10.43.0.0/16"),
            dns: None,
        })
    };
    let mut full = Vec::new();
    for _ in 0..5 {
        let mut fresh = ProxyState::new();
        let stats = fresh.apply(&executor, &model(&slices)).expect("full apply");
        assert_eq!(stats.kind, ApplyKind::Full);
        full.push(stats.nft);
    }
    let mut state = ProxyState::new();
    state.apply(&executor, &model(&slices)).expect("full apply");
    let (mut nft, mut total) = (Vec::new(), Vec::new());
    for round in 0..50u32 {
        // One endpoint of one service replaced by another (the slice shifts by one address).
        let i = (round * 37) % 1000;
        slices[i as usize] = slice(&format!("svc-{i}"), i, round % 2 + 1);
        let m = model(&slices);
        let stats = state.apply(&executor, &m).expect("incremental apply");
        assert_eq!(stats.kind, ApplyKind::Incremental, "round {round}");
        assert_eq!(stats.chains_changed, 1, "{stats:?}");
        nft.push(stats.nft);
        total.push(stats.elapsed);
    }
    // The end result equals the full render.
    let incremental = normalize(&executor.list().expect("list"));
    executor.apply(&render(&model(&slices))).expect("full");
    assert_eq!(incremental, normalize(&executor.list().expect("list")));
    for list in [&mut full, &mut nft, &mut total] {
        list.sort_unstable();
    }
    println!(
        "1,000 services x 10 endpoints:\n  full apply (nft): p50 {:?}, max {:?} over 5\n  \
         one-endpoint change, nft: p50 {:?}, p99 {:?}\n  \
         one-endpoint change, diff + nft: p50 {:?}, p99 {:?} (over 50)",
        percentile(&full, 0.5),
        full[full.len() - 1],
        percentile(&nft, 0.5),
        percentile(&nft, 0.99),
        percentile(&total, 0.5),
        percentile(&total, 0.99),
    );
    assert!(percentile(&nft, 0.5) < percentile(&full, 0.5));
    let _ = executor.remove();
}
