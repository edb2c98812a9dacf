//! Scheduling decisions over hand-built snapshots.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use crate::{Snapshot, schedule};

fn node(name: &str, cpu: &str, extra: Value) -> Arc<Node> {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    });
    merge(&mut v, extra);
    Arc::new(serde_json::from_value(v).unwrap())
}

fn pod(name: &str, cpu: &str, extra: Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu}}}]},
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn on(p: Pod, node: &str) -> Arc<Pod> {
    let mut p = p;
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    Arc::new(p)
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

#[test]
fn the_message_counts_each_reason_like_kube_scheduler() {
    let taint =
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
    let snapshot = Snapshot::new(
        [
            node("a", "1", json!({})),
            node("b", "4", taint.clone()),
            node("c", "4", taint),
        ],
        [],
    );
    let err = schedule(&pod("p", "2", json!({})), &snapshot, 0).unwrap_err();
    assert_eq!(
        err.message,
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: db}."
    );
}

#[test]
fn a_tolerating_pod_goes_to_the_tainted_node() {
    let taint =
        json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}});
    let snapshot = Snapshot::new([node("a", "1", json!({})), node("b", "4", taint)], []);
    let tolerating = pod(
        "p",
        "2",
        json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Exists"}]}}),
    );
    assert_eq!(schedule(&tolerating, &snapshot, 0).unwrap(), "b");
}

#[test]
fn requests_of_pods_already_placed_count() {
    let snapshot = Snapshot::new(
        [node("a", "2", json!({})), node("b", "2", json!({}))],
        [on(pod("x", "1500m", json!({})), "a")],
    );
    assert_eq!(
        schedule(&pod("p", "1", json!({})), &snapshot, 0).unwrap(),
        "b"
    );
    // Finished pods hold nothing.
    let done = on(
        pod("y", "1500m", json!({"status": {"phase": "Succeeded"}})),
        "b",
    );
    let snapshot = Snapshot::new(
        [node("a", "2", json!({})), node("b", "2", json!({}))],
        [on(pod("x", "1500m", json!({})), "a"), done],
    );
    assert_eq!(
        schedule(&pod("p", "1", json!({})), &snapshot, 0).unwrap(),
        "b"
    );
}

#[test]
fn unschedulable_and_not_ready_nodes_are_skipped() {
    let snapshot = Snapshot::new(
        [
            node("a", "4", json!({"spec": {"unschedulable": true}})),
            node(
                "b",
                "4",
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
        ],
        [],
    );
    let err = schedule(&pod("p", "1", json!({})), &snapshot, 0).unwrap_err();
    assert_eq!(
        err.message,
        "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable."
    );
}

#[test]
fn node_selector_and_required_affinity_pick_the_labelled_node() {
    let ssd = json!({"metadata": {"labels": {"disk": "ssd", "zone": "z1"}}});
    let snapshot = Snapshot::new([node("a", "4", json!({})), node("b", "4", ssd)], []);
    let p = pod("p", "1", json!({"spec": {"nodeSelector": {"disk": "ssd"}}}));
    assert_eq!(schedule(&p, &snapshot, 0).unwrap(), "b");
    let p = pod(
        "p",
        "1",
        json!({"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]}
        ]}}}}}),
    );
    let err = schedule(&p, &snapshot, 0).unwrap_err();
    assert_eq!(
        err.message,
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector."
    );
}

#[test]
fn preferred_node_affinity_wins_among_feasible_nodes() {
    let snapshot = Snapshot::new(
        [
            node("a", "4", json!({})),
            node("b", "4", json!({"metadata": {"labels": {"tier": "fast"}}})),
        ],
        [],
    );
    let p = pod(
        "p",
        "1",
        json!({"spec": {"affinity": {"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "preference":
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["fast"]}]}}]}}}}),
    );
    for tie in 0..4 {
        assert_eq!(schedule(&p, &snapshot, tie).unwrap(), "b");
    }
}

#[test]
fn host_ports_conflict() {
    let with_port = |name: &str| {
        pod(
            name,
            "100m",
            json!({"spec": {"containers": [{"name": "c", "image": "x",
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}),
        )
    };
    let snapshot = Snapshot::new(
        [node("a", "4", json!({})), node("b", "4", json!({}))],
        [on(with_port("x"), "a")],
    );
    assert_eq!(schedule(&with_port("p"), &snapshot, 0).unwrap(), "b");
    let snapshot = Snapshot::new([node("a", "4", json!({}))], [on(with_port("x"), "a")]);
    assert_eq!(
        schedule(&with_port("p"), &snapshot, 0).unwrap_err().message,
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."
    );
}

/// Places six pods of ReplicaSet `rs` one after the other on nodes of 2, 4 and 8 CPUs (so
/// that least-allocated alone prefers the big node); where each went.
fn six_replicas(workloads: crate::default_spread::Workloads) -> Vec<String> {
    let owned = |name: &str| {
        pod(
            name,
            "250m",
            json!({"metadata": {"labels": {"app": "web"}, "ownerReferences": [{"apiVersion":
            "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]}}),
        )
    };
    let mut snapshot = Snapshot::new(
        [
            node("a", "2", json!({})),
            node("b", "4", json!({})),
            node("c", "8", json!({})),
        ],
        [],
    )
    .with_workloads(Arc::new(workloads));
    let mut placed = Vec::new();
    for i in 0..6 {
        let p = owned(&format!("p{i}"));
        let n = schedule(&p, &snapshot, 0).unwrap();
        snapshot.add_pod(on(p, &n));
        placed.push(n);
    }
    placed
}

#[test]
fn replicas_spread_over_nodes_by_the_system_default_constraints() {
    let rs = serde_json::from_value(json!({"metadata": {"name": "rs", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}}}))
    .unwrap();
    let placed = six_replicas(crate::default_spread::Workloads {
        replica_sets: vec![Arc::new(rs)],
        ..Default::default()
    });
    for n in ["a", "b", "c"] {
        assert_eq!(placed.iter().filter(|x| *x == n).count(), 2, "{placed:?}");
    }
    // The scheduler not knowing the ReplicaSet: no spreading, the big node takes them all.
    let unspread = six_replicas(Default::default());
    assert!(
        unspread.iter().filter(|x| *x == "c").count() > 2,
        "{unspread:?}"
    );
}

#[test]
fn too_many_pods_is_a_reason() {
    let small = node("a", "4", json!({"status": {"allocatable": {"pods": "1"}}}));
    let snapshot = Snapshot::new([small], [on(pod("x", "0", json!({})), "a")]);
    assert_eq!(
        schedule(&pod("p", "0", json!({})), &snapshot, 0)
            .unwrap_err()
            .message,
        "0/1 nodes are available: 1 Too many pods."
    );
}

#[test]
fn pod_anti_affinity_keeps_replicas_apart_and_affinity_brings_them_together() {
    let zone = |z: &str| json!({"metadata": {"labels": {"zone": z}}});
    let snapshot = Snapshot::new(
        [
            node("a", "4", zone("z1")),
            node("b", "4", zone("z1")),
            node("c", "4", zone("z2")),
        ],
        [on(
            pod("db", "100m", json!({"metadata": {"labels": {"app": "db"}}})),
            "a",
        )],
    );
    let anti = pod(
        "p",
        "100m",
        json!({"spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone",
            "labelSelector": {"matchLabels": {"app": "db"}}}]}}}}),
    );
    assert_eq!(schedule(&anti, &snapshot, 0).unwrap(), "c");
    let with = pod(
        "p",
        "100m",
        json!({"spec": {"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app": "db"}}}]}}}}),
    );
    for tie in 0..3 {
        assert_eq!(schedule(&with, &snapshot, tie).unwrap(), "a");
    }
    // An existing pod's anti-affinity repels the newcomer.
    let repelling = on(
        pod(
            "r",
            "100m",
            json!({"spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone",
                "labelSelector": {"matchLabels": {"app": "web"}}}]}}}}),
        ),
        "c",
    );
    let snapshot = Snapshot::new([node("c", "4", zone("z2"))], [repelling]);
    let web = pod("w", "100m", json!({"metadata": {"labels": {"app": "web"}}}));
    assert_eq!(
        schedule(&web, &snapshot, 0).unwrap_err().message,
        "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules."
    );
}

#[test]
fn large_clusters_filter_only_kube_schedulers_share_of_nodes() {
    use crate::algorithm::feasible_nodes_to_find;
    assert_eq!(feasible_nodes_to_find(3), 3);
    assert_eq!(feasible_nodes_to_find(99), 99);
    assert_eq!(feasible_nodes_to_find(100), 100);
    assert_eq!(feasible_nodes_to_find(1000), 420);
    assert_eq!(feasible_nodes_to_find(5000), 500);
    assert_eq!(feasible_nodes_to_find(100_000), 5000);
    // 300 nodes, 100 looked at per decision: successive decisions start further on, and every
    // node is still filtered when only the last one fits.
    let nodes: Vec<Arc<Node>> = (0..300)
        .map(|i| {
            node(
                &format!("n{i:03}"),
                if i == 299 { "4" } else { "1" },
                json!({}),
            )
        })
        .collect();
    let snapshot = Snapshot::new(nodes, []);
    let small = pod("small", "100m", json!({}));
    let first = schedule(&small, &snapshot, 0).unwrap();
    let second = schedule(&small, &snapshot, 1).unwrap();
    assert!(first.as_str() < "n100", "{first}");
    assert!(("n100".."n200").contains(&second.as_str()), "{second}");
    let big = pod("big", "2", json!({}));
    assert_eq!(schedule(&big, &snapshot, 0).unwrap(), "n299");
    let huge = pod("huge", "8", json!({}));
    let err = schedule(&huge, &snapshot, 5).unwrap_err();
    assert_eq!(
        err.message,
        "0/300 nodes are available: 300 Insufficient cpu."
    );
}

#[test]
fn each_decision_starts_filtering_where_the_previous_one_stopped() {
    use crate::{Search, schedule_with};
    // 200 nodes, 100 looked at per decision; the first 150 are full.
    let nodes: Vec<Arc<Node>> = (0..200)
        .map(|i| {
            let cpu = if i < 150 { "100m" } else { "4" };
            node(&format!("n{i:03}"), cpu, json!({}))
        })
        .collect();
    let snapshot = Snapshot::new(nodes, []);
    let p = pod("p", "1", json!({}));
    let first = schedule_with(&p, &snapshot, &Search::default()).unwrap();
    assert!(first.node.as_str() >= "n150", "{first:?}");
    assert_eq!(
        first.next_start, 0,
        "every node filtered to find 50 that fit"
    );
    let later = Search {
        start: 180,
        ..Search::default()
    };
    let second = schedule_with(&p, &snapshot, &later).unwrap();
    // Fewer than 100 fit: every node is filtered, round to where it started.
    assert!(second.node.as_str() >= "n150", "{second:?}");
    assert_eq!(second.next_start, 180);
    // 300 nodes that all fit: the search stops after 144 (48 %) and the next one starts
    // after them.
    let nodes: Vec<Arc<Node>> = (0..300)
        .map(|i| node(&format!("n{i:03}"), "4", json!({})))
        .collect();
    let snapshot = Snapshot::new(nodes, []);
    let from = Search {
        start: 250,
        ..Search::default()
    };
    let placed = schedule_with(&p, &snapshot, &from).unwrap();
    assert_eq!(placed.next_start, 94, "n250..n299 then n000..n093");
    assert!(
        placed.node.as_str() >= "n250" || placed.node.as_str() < "n094",
        "{placed:?}"
    );
}
