//! A UDP client and an endpoint replaced while the node agent was down: a client pod on node 1
//! keeps sending datagrams to a UDP Service's cluster IP from one source port (busybox
//! `syslogd -R`, whose one unconnected socket keeps its port), so its conntrack entry in node
//! 1's namespace, DNATed to the endpoint pod, never expires. Node 1's agent is killed, the
//! endpoint pod deleted and another one started in its place. The restarted agent's first
//! apply has no previous model to compare with; its sweep of the listed UDP entries deletes
//! the client's entry (answered by an address that is no endpoint any more) and the next
//! datagrams reach the new pod. Without the sweep they keep going to the dead address.
//!
//! The endpoint pods listen on nothing: a datagram that reaches one counts in its network
//! namespace's `Udp: NoPorts` (`/proc/net/snmp`), which is how the test sees where they go.
#![allow(clippy::unwrap_used)]

mod net_support;

use std::time::Duration;

use net_support::{IMAGE, NetCluster};

/// A pod on node 0 with label `app: udp-sink` that only sleeps.
fn sink(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: udp-sink}}
spec:
  nodeName: node-0
  terminationGracePeriodSeconds: 1
  containers:
  - name: sink
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["sleep", "100000"]
"#
    )
}

/// The UDP datagrams pod `name` received on a port where nothing listens (`Udp: NoPorts`).
fn no_ports(c: &NetCluster, name: &str) -> u64 {
    let snmp = c.exec_ok("default", name, "sink", &["cat", "/proc/net/snmp"]);
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp: ")).collect();
    assert_eq!(udp.len(), 2, "{snmp}");
    let column = udp[0]
        .split_whitespace()
        .position(|h| h == "NoPorts")
        .unwrap();
    udp[1]
        .split_whitespace()
        .nth(column)
        .unwrap()
        .parse()
        .unwrap()
}

/// Node 1's UDP conntrack entries to `vip` port 9000 (`conntrack -L` lines).
fn entries(c: &NetCluster, vip: &str) -> String {
    let out = c.on_node(
        1,
        "conntrack",
        &[
            "-L",
            "-f",
            "ipv4",
            "-p",
            "udp",
            "--orig-dst",
            vip,
            "--orig-port-dst",
            "9000",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_udp_client_reaches_an_endpoint_that_replaced_the_old_one_while_the_agent_was_down() {
    let mut c = NetCluster::start(2, "host-gw");
    c.apply(&format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: udp-sink
spec:
  selector: {{app: udp-sink}}
  ports:
  - port: 9000
    targetPort: 5353
    protocol: UDP
---
{}"#,
        sink("sink-a")
    ));
    let ip_a = c.wait_running("default", "sink-a");
    let vip = c.field(&["get", "service", "udp-sink"], "{.spec.clusterIP}");
    assert!(!vip.is_empty());
    c.wait(
        "node-1's proxy rules with the service's endpoint",
        Duration::from_secs(30),
        |c| {
            let out = c.on_node(1, "nft", &["list", "table", "ip", "skiff-proxy"]);
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains(&vip) && text.contains(&ip_a)
        },
    );
    // The client: every datagram from syslogd's one socket, one source port.
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
    command: ["sh", "-c", "syslogd -R {vip}:9000 && i=0 && while true; do i=$((i+1)); logger tick $i; sleep 0.2; done"]
"#
    ));
    c.wait_running("default", "client");
    let start = no_ports(&c, "sink-a");
    c.wait("datagrams at sink-a", Duration::from_secs(30), |c| {
        no_ports(c, "sink-a") >= start + 10
    });
    let entry = entries(&c, &vip);
    assert_eq!(entry.lines().count(), 1, "{entry}");
    assert!(entry.contains(&format!("src={ip_a} ")), "{entry}");

    // Node 1's agent goes down; the endpoint is replaced meanwhile.
    let applied = c.nodes[1].dir.path().join("agent/proxy-applied");
    let applied_before = std::fs::read_to_string(&applied).unwrap();
    c.kill(1);
    c.k(&["delete", "pod", "sink-a", "--wait=true", "--timeout=60s"]);
    c.apply(&sink("sink-b"));
    let ip_b = c.wait_running("default", "sink-b");
    assert_ne!(ip_a, ip_b);
    c.wait(
        "the service's endpoint moved to sink-b",
        Duration::from_secs(30),
        |c| {
            c.field(
                &[
                    "get",
                    "endpointslices",
                    "-l",
                    "kubernetes.io/service-name=udp-sink",
                ],
                "{.items[*].endpoints[*].addresses[*]}",
            )
            .trim()
                == ip_b
        },
    );
    // The problem: the client's entry is still DNATed to the dead address and kept alive.
    let entry = entries(&c, &vip);
    assert!(entry.contains(&format!("src={ip_a} ")), "{entry}");
    let at_b = no_ports(&c, "sink-b");

    c.start_agent(1);
    c.wait("node-1's agent back", Duration::from_secs(60), |c| {
        c.log(1).matches("node agent running").count() >= 2
    });
    c.wait(
        "node-1's proxy rules applied again",
        Duration::from_secs(30),
        |_| std::fs::read_to_string(&applied).is_ok_and(|now| now != applied_before),
    );
    // The fix: the first apply swept the entry; the datagrams take the new rules to sink-b.
    c.wait(
        "the client's datagrams at sink-b",
        Duration::from_secs(20),
        |c| no_ports(c, "sink-b") >= at_b + 10,
    );
    let entry = entries(&c, &vip);
    assert!(entry.contains(&format!("src={ip_b} ")), "{entry}");
    assert!(!entry.contains(&format!("src={ip_a} ")), "{entry}");
    assert_eq!(
        c.field(&["get", "pod", "client"], "{.status.phase}"),
        "Running"
    );
}
