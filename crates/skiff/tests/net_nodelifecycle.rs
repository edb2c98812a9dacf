//! Node lifecycle end to end: a node whose agent dies stops renewing its Lease, turns
//! `NotReady` with the unreachable taints, its pods are evicted once their default
//! tolerations (from the DefaultTolerationSeconds admission) run out and their Deployment
//! replaces them on the other nodes; when the agent comes back the node is Ready and untainted.
//! Real nodes (one network namespace each), real agents, real kubectl.
#![allow(clippy::unwrap_used)]

mod net_support;

use std::time::Duration;

use net_support::{IMAGE, NetCluster};

/// Heartbeats come every 10 s, so the grace period must be longer than that.
const GRACE: &str = "20s";
/// The default tolerations' seconds, short so the test is quick.
const TOLERATION_SECONDS: &str = "5";

fn deployment() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: {IMAGE}
        imagePullPolicy: IfNotPresent
        command: ["sh", "-c", "exec sleep 100000"]
"#
    )
}

/// `name node ready deleting` of every `app=web` pod, one a line.
fn web_pods(c: &NetCluster) -> Vec<(String, String, String, bool)> {
    c.field(
        &["get", "pods", "-l", "app=web"],
        "{range .items[*]}{.metadata.name} {.spec.nodeName} {.status.conditions[?(@.type==\"Ready\")].status} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    )
    .lines()
    .filter_map(|l| {
        let mut f = l.split(' ');
        Some((
            f.next()?.to_string(),
            f.next()?.to_string(),
            f.next()?.to_string(),
            f.next().is_some_and(|d| !d.is_empty()),
        ))
    })
    .collect()
}

fn node_line(c: &NetCluster, node: &str) -> String {
    c.k(&["get", "node", node, "--no-headers"])
}

fn taints(c: &NetCluster, node: &str) -> String {
    c.field(
        &["get", "node", node],
        "{range .spec.taints[*]}{.key}:{.effect}{\"\\n\"}{end}",
    )
}

#[test]
fn a_lost_node_is_tainted_its_pods_move_and_it_recovers() {
    let mut c = NetCluster::start_with_server_args(
        3,
        "host-gw",
        &[
            "--node-monitor-grace-period",
            GRACE,
            "--default-not-ready-toleration-seconds",
            TOLERATION_SECONDS,
            "--default-unreachable-toleration-seconds",
            TOLERATION_SECONDS,
        ],
    );
    let deadline = Duration::from_secs(120);

    // Both replicas on node-2: the other nodes are cordoned while they are scheduled.
    c.k(&["cordon", "node-0", "node-1"]);
    c.apply(&deployment());
    c.wait("both web pods Ready on node-2", deadline, |c| {
        let pods = web_pods(c);
        pods.len() == 2
            && pods
                .iter()
                .all(|(_, node, ready, _)| node == "node-2" && ready == "True")
    });
    c.k(&["uncordon", "node-0", "node-1"]);
    let originals: Vec<String> = web_pods(&c).into_iter().map(|p| p.0).collect();

    // The DefaultTolerationSeconds admission gave them both tolerations.
    let described = c.k(&["describe", "pod", &originals[0]]);
    for key in ["not-ready", "unreachable"] {
        let line =
            format!("node.kubernetes.io/{key}:NoExecute op=Exists for {TOLERATION_SECONDS}s");
        assert!(described.contains(&line), "no {line:?} in:\n{described}");
    }
    assert!(
        node_line(&c, "node-2").contains(" Ready "),
        "{}",
        node_line(&c, "node-2")
    );
    assert_eq!(taints(&c, "node-2"), "");

    // The agent dies (its containers stay): the Lease goes stale.
    c.kill(2);
    c.wait("node-2 NotReady", deadline, |c| {
        node_line(c, "node-2").contains(" NotReady ")
    });
    let conditions = c.field(
        &["get", "node", "node-2"],
        "{range .status.conditions[*]}{.type}={.status}/{.reason}{\"\\n\"}{end}",
    );
    for kind in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(
            conditions.contains(&format!("{kind}=Unknown/NodeStatusUnknown")),
            "{conditions}"
        );
    }
    c.wait("the unreachable taints on node-2", deadline, |c| {
        let t = taints(c, "node-2");
        t.contains("node.kubernetes.io/unreachable:NoSchedule")
            && t.contains("node.kubernetes.io/unreachable:NoExecute")
    });
    // Services stop sending traffic there: the pods are no longer Ready.
    c.wait("the original pods not Ready", deadline, |c| {
        let pods = web_pods(c);
        originals.iter().all(|o| {
            pods.iter()
                .any(|(name, _, ready, _)| name == o && ready == "False")
        })
    });
    let described = c.k(&["describe", "node", "node-2"]);
    assert!(
        described.contains("node.kubernetes.io/unreachable:NoExecute"),
        "{described}"
    );
    assert!(
        described.contains("Kubelet stopped posting node status."),
        "{described}"
    );

    // After the tolerations' seconds the pods are evicted, and since no agent can finish
    // their deletion they are removed; the Deployment's replacements run elsewhere.
    c.wait("the original pods gone", deadline, |c| {
        let pods = web_pods(c);
        originals.iter().all(|o| !pods.iter().any(|p| &p.0 == o))
    });
    let events = c.field(
        &["get", "events"],
        "{range .items[*]}{.reason} {.message}{\"\\n\"}{end}",
    );
    for name in &originals {
        let line = format!("TaintManagerEviction Marking for deletion Pod default/{name}");
        assert!(events.contains(&line), "no {line:?} in:\n{events}");
    }
    c.wait(
        "two replacement pods Ready on node-0/node-1",
        deadline,
        |c| {
            let pods = web_pods(c);
            pods.len() == 2
                && pods.iter().all(|(_, node, ready, deleting)| {
                    node != "node-2" && ready == "True" && !deleting
                })
        },
    );
    c.wait("the Deployment available again", deadline, |c| {
        c.field(&["get", "deployment", "web"], "{.status.availableReplicas}") == "2"
    });

    // The agent comes back: the node is Ready again and its taints are gone.
    c.start_agent(2);
    c.wait("node-2 Ready again", deadline, |c| {
        node_line(c, "node-2").contains(" Ready ")
    });
    c.wait("node-2 untainted", deadline, |c| {
        taints(c, "node-2").is_empty()
    });
    let pods = web_pods(&c);
    assert!(
        pods.iter().all(|(_, node, _, _)| node != "node-2"),
        "{pods:?}"
    );
}
