//! UDP conntrack entries of removed endpoints, with real traffic: a client outside the cluster
//! (node 3, routing the service range through the proxy node 0) keeps sending datagrams from
//! one source port to a UDP service; its endpoint moves from node 1 to node 2. Without the
//! flush the client's conntrack entry keeps every datagram on node 1; `ProxyState::apply`
//! deletes it and the next datagrams reach node 2.
//!
//! Needs root, `nft`, `conntrack`, `nsenter` and python3; never touches the host's network
//! namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_net::Ipv4Cidr;
use skiff_net::proxy::{ApplyKind, Executor, ProxyInput, ProxyModel, ProxyState, build, render};
use skiff_testkit::netns::{TestNetwork, TestNode};
use skiff_testkit::process::ChildGuard;
use skiff_testkit::wait::wait_for;

const CLUSTER_IP: &str = "10.43.0.53";
const PYTHON: &str = "/usr/bin/python3";

/// Receives datagrams on UDP 5353 and appends each to the file named by argv[1].
const SERVER: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5353))
with open(sys.argv[1], "ab", buffering=0) as out:
    while True:
        data, _ = s.recvfrom(2048)
        out.write(data)
"#;

/// Sends `ping N\n` every 50 ms from UDP source port 5000 to argv[1]:53, forever.
const CLIENT: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5000))
n = 0
while True:
    n += 1
    try:
        s.sendto(b"ping %d\n" % n, (sys.argv[1], 53))
    except OSError:
        pass
    time.sleep(0.05)
"#;

fn cidr(text: &str) -> Ipv4Cidr {
    text.parse().expect("valid CIDR")
}

fn run_in(node: &TestNode, program: &str, args: &[&str]) {
    let output = node
        .command(program)
        .args(args)
        .output()
        .expect("run command in node");
    assert!(
        output.status.success(),
        "{program} {args:?} in {}: {}",
        node.name(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The network, the UDP servers and client (killed on drop, before the network goes) and the
/// proxy node's executor.
struct Cluster {
    processes: Vec<ChildGuard>,
    dir: tempfile::TempDir,
    executor: Executor,
    net: TestNetwork,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in &mut self.processes {
            process.kill();
        }
        let _ = self.executor.remove();
    }
}

impl Cluster {
    fn start() -> Cluster {
        let net = TestNetwork::new(4).expect("test network (needs root)");
        let executor = Executor::in_netns(net.node(0).netns_path());
        let mut cluster = Cluster {
            processes: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            executor,
            net,
        };
        let proxy = cluster.net.node(0).clone();
        run_in(
            &proxy,
            "sh",
            &[
                "-c",
                "echo 1 > /proc/sys/net/ipv4/ip_forward && \
                 echo 0 > /proc/sys/net/ipv4/conf/all/send_redirects && \
                 echo 0 > /proc/sys/net/ipv4/conf/eth0/send_redirects",
            ],
        );
        let via = proxy.ip().to_string();
        run_in(
            cluster.net.node(3),
            "ip",
            &["route", "add", "10.43.0.0/16", "via", &via],
        );
        for i in [1, 2] {
            let log = cluster.received(i);
            let node = cluster.net.node(i).clone();
            let server = ChildGuard::spawn(
                "udp server",
                node.command(PYTHON).args(["-c", SERVER]).arg(&log),
            )
            .expect("start the UDP server");
            cluster.processes.push(server);
        }
        cluster
    }

    /// The file node `i`'s server appends what it receives to.
    fn received(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }

    /// The model of node 0: UDP service `dns` (53 -> 5353) with its endpoint on node `i`.
    fn model(&self, endpoint: usize) -> ProxyModel {
        let service: Service = serde_json::from_value(json!({
            "metadata": { "namespace": "default", "name": "dns" },
            "spec": {
                "type": "ClusterIP",
                "clusterIP": CLUSTER_IP,
                "clusterIPs": [CLUSTER_IP],
                "ports": [{ "name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP" }],
            },
        }))
        .expect("valid Service");
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {
                "namespace": "default",
                "name": "dns-1",
                "labels": { "kubernetes.io/service-name": "dns" },
            },
            "addressType": "IPv4",
            "ports": [{ "name": "dns", "port": 5353, "protocol": "UDP" }],
            "endpoints": [{
                "addresses": [self.net.node(endpoint).ip().to_string()],
                "nodeName": format!("node-{endpoint}"),
                "conditions": { "ready": true },
            }],
        }))
        .expect("valid EndpointSlice");
        let node_ips: [Ipv4Addr; 1] = [self.net.node(0).ip()];
        let model = build(&ProxyInput {
            services: &[service],
            slices: &[slice],
            node_name: "node-0",
            node_ips: &node_ips,
            pod_cidr: Some(cidr("10.42.0.0/24")),
            cluster_cidr: cidr("10.42.0.0/16"),
            service_cidr: cidr("10.43.0.0/16"),
            dns: None,
        });
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);
        model
    }
}

/// How many datagrams the file at `path` holds.
fn count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// Waits until the file at `path` holds more than `than` datagrams.
fn wait_growing(path: &Path, than: usize, what: &str) -> usize {
    wait_for(what, Duration::from_secs(10), || {
        let n = count(path);
        (n > than).then_some(n)
    })
    .expect(what)
}

#[test]
fn udp_clients_move_to_the_new_endpoint_once_the_old_ones_entries_are_flushed() {
    let mut c = Cluster::start();
    let mut state = ProxyState::new();
    let stats = state
        .apply(&c.executor, &c.model(1))
        .expect("apply with the endpoint on node 1");
    assert_eq!(stats.conntrack_flows, 0, "{stats:?}");

    let client = ChildGuard::spawn(
        "udp client",
        c.net
            .node(3)
            .command(PYTHON)
            .args(["-c", CLIENT, CLUSTER_IP]),
    )
    .expect("start the UDP client");
    c.processes.push(client);
    let (one, two) = (c.received(1), c.received(2));
    let n = wait_growing(&one, 0, "datagrams at node 1");
    wait_growing(&one, n + 5, "more datagrams at node 1");

    // The problem: the rules alone (a full replace that knows nothing of the previous
    // endpoints) send new flows to node 2, but the client's entry keeps its datagrams on
    // node 1. Observed for a fixed second: this is a check that nothing changes.
    c.executor
        .apply(&render(&c.model(2)))
        .expect("move the endpoint, rules only");
    let before = count(&one);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(count(&one) > before + 5, "node 1 kept receiving");
    assert_eq!(count(&two), 0, "nothing reached node 2 without the flush");

    // The fix: ProxyState remembers the UDP flows it applied (node 1), so moving to node 2
    // deletes the client's entry; its next datagrams take the new rules.
    state.reset();
    let stats = state
        .apply(&c.executor, &c.model(2))
        .expect("apply with the endpoint on node 2");
    assert_eq!(stats.conntrack_flows, 1, "{stats:?}");
    assert_eq!(stats.conntrack_failed, 0, "{stats:?}");
    assert!(stats.conntrack_deleted >= 1, "{stats:?}");
    let n = wait_growing(&two, 0, "datagrams at node 2 after the flush");
    wait_growing(&two, n + 5, "more datagrams at node 2");
    let stopped = count(&one);
    wait_growing(&two, count(&two) + 5, "node 2 keeps receiving");
    assert!(
        count(&one) <= stopped + 1,
        "node 1 still receives after the flush"
    );

    // Back to node 1 through an incremental update: the same in the other direction.
    let stats = state
        .apply(&c.executor, &c.model(1))
        .expect("apply with the endpoint back on node 1");
    assert_eq!(stats.conntrack_flows, 1, "{stats:?}");
    assert!(stats.conntrack_deleted >= 1, "{stats:?}");
    let n = count(&one);
    wait_growing(&one, n + 5, "datagrams back at node 1");
}

/// An agent restart: the endpoint moved from node 1 to node 2 while no proxy ran, so the first
/// apply of a new `ProxyState` has no previous model to compare with. Its full replace sweeps
/// the listed entries: the client's entry, answered by node 1 which is no endpoint any more,
/// is deleted and the next datagrams reach node 2.
#[test]
fn a_new_proxy_state_sweeps_the_entries_of_endpoints_removed_before_it_started() {
    let mut c = Cluster::start();
    let stats = ProxyState::new()
        .apply(&c.executor, &c.model(1))
        .expect("apply with the endpoint on node 1");
    assert_eq!(stats.conntrack_flows, 0, "{stats:?}");
    let client = ChildGuard::spawn(
        "udp client",
        c.net
            .node(3)
            .command(PYTHON)
            .args(["-c", CLIENT, CLUSTER_IP]),
    )
    .expect("start the UDP client");
    c.processes.push(client);
    let (one, two) = (c.received(1), c.received(2));
    let n = wait_growing(&one, 0, "datagrams at node 1");
    wait_growing(&one, n + 5, "more datagrams at node 1");

    // The restarted agent's first apply: a new state, the endpoint on node 2 only.
    let stats = ProxyState::new()
        .apply(&c.executor, &c.model(2))
        .expect("first apply of a new state, endpoint on node 2");
    assert_eq!(stats.kind, ApplyKind::Full, "{stats:?}");
    assert!(stats.conntrack_listed >= 1, "{stats:?}");
    assert_eq!(stats.conntrack_flows, 1, "{stats:?}");
    assert_eq!(stats.conntrack_failed, 0, "{stats:?}");
    assert!(stats.conntrack_deleted >= 1, "{stats:?}");
    let n = wait_growing(&two, 0, "datagrams at node 2 after the sweep");
    wait_growing(&two, n + 5, "more datagrams at node 2");
    let stopped = count(&one);
    wait_growing(&two, count(&two) + 5, "node 2 keeps receiving");
    assert!(
        count(&one) <= stopped + 1,
        "node 1 still receives after the sweep"
    );

    // Another full replace finds nothing stale: the client's entry goes to node 2.
    let stats = ProxyState::new()
        .apply(&c.executor, &c.model(2))
        .expect("full apply again");
    assert!(stats.conntrack_listed >= 1, "{stats:?}");
    assert_eq!(stats.conntrack_flows, 0, "{stats:?}");
}
