//! An agent restart and established connections: a client pod keeps one TCP connection open
//! to a server pod through a Service's cluster IP (DNATed in the client node's namespace) while
//! that node's agent is killed (SIGKILL, its containers stay) and started again. The new agent
//! rebuilds the proxy table from the API (one full replace, a single nft transaction); the
//! connection's conntrack entry keeps its NAT, so the same connection keeps delivering.
#![allow(clippy::unwrap_used)]

mod net_support;

use std::time::Duration;

use net_support::{IMAGE, NetCluster};

/// `(connections that carried data, ticks received)` as the server records them: one file per
/// accepted connection (`/tmp/c.PID`, the readiness probe's connections stay empty; `$$$$` in
/// the pod's command is `$$` after Kubernetes' `$(VAR)` expansion).
fn server_view(c: &NetCluster) -> (usize, Vec<u64>) {
    let out: String = ["server-a", "server-b"]
        .iter()
        .map(|pod| {
            c.exec_ok(
                "default",
                pod,
                "srv",
                &[
                    "sh",
                    "-c",
                    "for f in /tmp/c.*; do [ -s \"$f\" ] && echo \"== $f\" && cat \"$f\"; done; true",
                ],
            )
        })
        .collect();
    let connections = out.lines().filter(|l| l.starts_with("== ")).count();
    let ticks = out
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.trim().parse().ok())
        .collect();
    (connections, ticks)
}

/// A server pod on node 0 accepting any number of connections on 8080, each recorded in a file.
fn server(name: &str) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: ticks}}
spec:
  nodeName: node-0
  terminationGracePeriodSeconds: 1
  containers:
  - name: srv
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["nc", "-ll", "-p", "8080", "-e", "sh", "-c", "exec cat > /tmp/c.$$$$"]
    readinessProbe:
      tcpSocket:
        port: 8080
      periodSeconds: 1
"#
    )
}

#[test]
fn an_established_connection_through_a_cluster_ip_survives_an_agent_restart() {
    let mut c = NetCluster::start(2, "host-gw");
    c.apply(&format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: ticks
spec:
  selector: {{app: ticks}}
  ports:
  - port: 80
    targetPort: 8080
{server_a}{server_b}"#,
        server_a = server("server-a"),
        server_b = server("server-b"),
    ));
    let ips = [
        c.wait_running("default", "server-a"),
        c.wait_running("default", "server-b"),
    ];
    let vip = c.field(&["get", "service", "ticks"], "{.spec.clusterIP}");
    assert!(!vip.is_empty());
    // Node 1's rules know the service and both endpoints before the client connects, once.
    // (Two endpoints: a connection whose conntrack entry was lost would be picked up again
    // mid-stream and DNATed anew, to the other server half of the time, which resets it.)
    let knows_all = |text: &str| text.contains(&vip) && ips.iter().all(|ip| text.contains(ip));
    c.wait(
        "node-1's proxy rules with the service's endpoints",
        Duration::from_secs(30),
        |c| {
            let out = c.on_node(1, "nft", &["list", "table", "ip", "skiff-proxy"]);
            knows_all(&String::from_utf8_lossy(&out.stdout))
        },
    );
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  nodeName: node-1
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: cli
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done | nc {vip} 80"]
"#
    ));
    c.wait_running("default", "client");
    c.wait("ticks at the server", Duration::from_secs(30), |c| {
        server_view(c).1.len() >= 10
    });

    // Kill node 1's agent, where the client runs and its connection is DNATed.
    let applied = c.nodes[1].dir.path().join("agent/proxy-applied");
    let applied_before = std::fs::read_to_string(&applied).unwrap();
    c.kill(1);
    let (connections, ticks) = server_view(&c);
    assert_eq!(connections, 1, "{ticks:?}");
    let at_kill = ticks.len();
    c.start_agent(1);
    c.wait("node-1's agent back", Duration::from_secs(60), |c| {
        c.log(1).matches("node agent running").count() >= 2
    });
    // The new agent rebuilt the rules from the API (DATA/agent/proxy-applied is rewritten by
    // its first apply, a full replace of the table).
    c.wait(
        "node-1's proxy rules applied again",
        Duration::from_secs(30),
        |_| std::fs::read_to_string(&applied).is_ok_and(|now| now != applied_before),
    );
    let rebuilt = c.on_node(1, "nft", &["list", "table", "ip", "skiff-proxy"]);
    let rebuilt = String::from_utf8_lossy(&rebuilt.stdout);
    assert!(knows_all(&rebuilt), "{rebuilt}");

    // The same connection keeps delivering across the restart: ticks well after the rebuild,
    // still one connection, consecutive numbers (a reconnect would start at 1 in a new file,
    // and the client pod, restartPolicy Never, would have ended).
    let after_rebuild = server_view(&c).1.len();
    c.wait(
        "ticks continuing after the rules were rebuilt",
        Duration::from_secs(30),
        |c| server_view(c).1.len() >= after_rebuild + 15,
    );
    let (connections, ticks) = server_view(&c);
    assert_eq!(connections, 1, "one connection only: {ticks:?}");
    assert!(
        ticks.len() > at_kill + 15,
        "{} <= {at_kill} + 15",
        ticks.len()
    );
    eprintln!(
        "one connection: {at_kill} ticks at the kill, {} in all, {after_rebuild} once the rules were rebuilt",
        ticks.len()
    );
    let expected: Vec<u64> = (1..=ticks.len() as u64).collect();
    assert_eq!(ticks, expected, "the ticks arrive in order, none lost");
    assert_eq!(
        c.field(&["get", "pod", "client"], "{.status.phase}"),
        "Running"
    );
    assert_eq!(
        c.field(
            &["get", "pod", "client"],
            "{.status.containerStatuses[0].restartCount}"
        ),
        "0"
    );
}
