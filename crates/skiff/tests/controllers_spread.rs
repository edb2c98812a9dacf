//! `topologySpreadConstraints` end to end: a real `skiff server` (scheduler and controllers),
//! fake nodes in two zones, the fake kubelet, Deployments applied with real kubectl; and the
//! scheduler's system default spreading of replicas without constraints.
#![allow(clippy::unwrap_used)]

mod controllers_support;

use std::collections::BTreeMap;
use std::time::Duration;

use controllers_support::{Cluster, ok};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);
const ZONE: &str = "topology.kubernetes.io/zone";
const SPREAD_REASON: &str = "node(s) didn't match pod topology spread constraints";

/// Nodes a1, a2 in zone-a (`cpu_a` each) and b1, b2 in zone-b (`cpu_b` each).
fn two_zones(cpu_a: &str, cpu_b: &str) -> Cluster {
    zones(&[
        ("a1", "zone-a", cpu_a),
        ("a2", "zone-a", cpu_a),
        ("b1", "zone-b", cpu_b),
        ("b2", "zone-b", cpu_b),
    ])
}

/// Nodes (name, zone, cpu); names start with their zone's letter.
fn zones(nodes: &[(&str, &str, &str)]) -> Cluster {
    let cluster = Cluster::start();
    for &(node, zone, cpu) in nodes {
        cluster.add_node(node, cpu, "8Gi");
        cluster.label_node(node, json!({ZONE: zone}));
    }
    cluster
}

fn deployment(name: &str, replicas: u32, key: &str, cpu: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: {key}
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {{matchLabels: {{app: {name}}}}}
        matchLabelKeys: [pod-template-hash]
      containers:
      - name: c
        image: busybox
        resources: {{requests: {{cpu: "{cpu}"}}}}
"#
    )
}

/// The app's pods once `want` of them run: node name of each.
fn running_nodes(cluster: &Cluster, app: &str, want: usize) -> Vec<String> {
    let selector = format!("app={app}");
    cluster.wait(
        &format!("{want} running pods of {app}"),
        DEADLINE,
        |client| {
            let selector = selector.clone();
            async move {
                let pods = Api::<Pod>::namespaced(client, "default")
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .ok()?;
                let nodes: Vec<String> = pods
                    .items
                    .iter()
                    .filter(|p| {
                        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    })
                    .filter_map(|p| p.spec.as_ref()?.node_name.clone())
                    .collect();
                (nodes.len() == want).then_some(nodes)
            }
        },
    )
}

fn per_zone(nodes: &[String]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for n in nodes {
        let zone = if n.starts_with('a') {
            "zone-a"
        } else {
            "zone-b"
        };
        *counts.entry(zone.to_string()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn a_zone_constraint_puts_two_replicas_in_each_zone() {
    // Three nodes in zone a, one in zone b: spreading over nodes alone would give 3 and 1.
    let cluster = zones(&[
        ("a1", "zone-a", "4"),
        ("a2", "zone-a", "4"),
        ("a3", "zone-a", "4"),
        ("b1", "zone-b", "4"),
    ]);
    cluster.apply(&deployment("web", 4, ZONE, "100m"));
    let nodes = running_nodes(&cluster, "web", 4);
    assert_eq!(
        per_zone(&nodes),
        BTreeMap::from([("zone-a".into(), 2), ("zone-b".into(), 2)]),
        "{nodes:?}"
    );
}

#[test]
fn a_hostname_constraint_puts_one_replica_on_each_node() {
    let cluster = two_zones("4", "4");
    cluster.apply(&deployment("web", 4, "kubernetes.io/hostname", "100m"));
    let mut nodes = running_nodes(&cluster, "web", 4);
    nodes.sort();
    assert_eq!(nodes, ["a1", "a2", "b1", "b2"]);
}

#[test]
fn a_replica_that_would_skew_past_a_full_zone_stays_pending_with_the_reason() {
    // Zone a holds one 600m pod per node (2 in all); zone b has room for many, but at maxSkew 1
    // it may hold only one more than zone a: 5 run, the 6th cannot go anywhere.
    let cluster = two_zones("1", "8");
    cluster.apply(&deployment("web", 6, ZONE, "600m"));
    let nodes = running_nodes(&cluster, "web", 5);
    assert_eq!(
        per_zone(&nodes),
        BTreeMap::from([("zone-a".into(), 2), ("zone-b".into(), 3)]),
        "{nodes:?}"
    );
    let message = cluster.wait("the pending pod's reason", DEADLINE, |client| async move {
        let pods = Api::<Pod>::namespaced(client, "default")
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        pods.items.iter().find_map(|p| {
            let status = p.status.as_ref()?;
            let scheduled = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
            let message = scheduled.message.clone()?;
            (status.phase.as_deref() == Some("Pending")
                && p.spec.as_ref()?.node_name.is_none()
                && scheduled.reason.as_deref() == Some("Unschedulable"))
            .then_some(message)
        })
    });
    assert!(
        message.starts_with(&format!(
            "0/4 nodes are available: 2 Insufficient cpu, 2 {SPREAD_REASON}."
        )),
        "{message}"
    );
    // kubectl describe shows it in the FailedScheduling event too.
    let pending = cluster
        .pods("default")
        .into_iter()
        .find(|p| p.spec.as_ref().unwrap().node_name.is_none())
        .unwrap();
    let name = pending.metadata.name.unwrap();
    cluster.wait("the FailedScheduling event", DEADLINE, |_| {
        let text = ok(cluster.kubectl().args(["describe", "pod", &name]));
        async move {
            (text.contains("FailedScheduling") && text.contains(SPREAD_REASON)).then_some(())
        }
    });
}

#[test]
fn a_node_without_the_key_is_refused_with_the_missing_label_reason() {
    let cluster = Cluster::start();
    cluster.add_node("bare", "4", "8Gi");
    cluster.apply(&deployment("web", 1, ZONE, "100m"));
    let message = cluster.wait("the pending pod's reason", DEADLINE, |client| async move {
        let pods = Api::<Pod>::namespaced(client, "default")
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        pods.items.iter().find_map(|p| {
            p.status
                .as_ref()?
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
                .message
                .clone()
        })
    });
    assert!(
        message.starts_with(&format!(
            "0/1 nodes are available: 1 {SPREAD_REASON} (missing required label)."
        )),
        "{message}"
    );
}

#[test]
fn replicas_without_constraints_spread_by_the_system_defaults() {
    // Nodes of 2, 4 and 8 CPUs and no zones: least-allocated alone would stack the replicas
    // on the big node; the default hostname constraint (maxSkew 3, soft) spreads them 2/2/2.
    let cluster = Cluster::start();
    for (node, cpu) in [("small", "2"), ("medium", "4"), ("large", "8")] {
        cluster.add_node(node, cpu, "8Gi");
    }
    cluster.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: plain}
spec:
  selector: {app: plain}
  ports: [{port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain}
spec:
  replicas: 6
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers:
      - name: c
        image: busybox
        resources: {requests: {cpu: 250m}}
"#,
    );
    let nodes = running_nodes(&cluster, "plain", 6);
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for n in &nodes {
        *per_node.entry(n.clone()).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([
            ("large".into(), 2),
            ("medium".into(), 2),
            ("small".into(), 2)
        ]),
        "{nodes:?}"
    );
}
