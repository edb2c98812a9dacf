//! NetworkPolicy with real traffic: node 0 of a test network (namespaces joined by a bridge,
//! see `skiff_testkit::netns`) has a pod network with several pods on its bridge and enforces
//! the policy; node 1 has its own pod network with a remote pod, connected by host-gw routes.
//! Servers are `busybox httpd` in the pods' namespaces. The host's own namespace is never
//! touched; everything is removed on drop, also when a test panics.
//!
//! Needs root, `nft`, `nsenter`, `ip` and `busybox`.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};
use skiff_net::Ipv4Cidr;
use skiff_net::podnet::{NodeNetwork, NodeNetworkConfig};
use skiff_net::policy::{self, BRIDGE_NF_CALL_IPTABLES, PolicyInput};
use skiff_net::routes::{Overlay, Peer, sync_routes};
use skiff_testkit::netns::{Namespace, TestNetwork, TestNode};
use skiff_testkit::process::ChildGuard;
use skiff_testkit::wait::wait_for;

const CLUSTER: &str = "10.42.0.0/16";
const HTTP: u16 = 8080;
const ALT: u16 = 9090;

fn cidr(text: &str) -> Ipv4Cidr {
    text.parse().unwrap()
}

/// A pod: its network namespace and its Kubernetes identity.
struct TestPod {
    ns: Namespace,
    ip: Ipv4Addr,
    uid: String,
    namespace: String,
    name: String,
    labels: Value,
    node: usize,
}

/// Two nodes with pod networks, pods, servers and the policy executor of node 0. Servers are
/// killed and the tables removed before the namespaces go.
struct Cluster {
    servers: Vec<ChildGuard>,
    dirs: Vec<tempfile::TempDir>,
    executor: policy::Executor,
    proxy: skiff_net::proxy::Executor,
    pods: Vec<TestPod>,
    networks: Vec<NodeNetwork>,
    _states: Vec<tempfile::TempDir>,
    net: TestNetwork,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
        let _ = self.executor.remove();
        let _ = self.proxy.remove();
    }
}

impl Cluster {
    /// Two nodes, pod CIDRs 10.42.0.0/24 and 10.42.1.0/24, host-gw routes between them.
    /// Node 0 starts with br_netfilter off, so every test also shows that applying turns it on.
    async fn start() -> Cluster {
        let net = TestNetwork::new(2).expect("test network (needs root)");
        let mut networks = Vec::new();
        let mut states = Vec::new();
        for i in 0..2 {
            let state = tempfile::tempdir().unwrap();
            let mut config = NodeNetworkConfig::new(
                cidr(&format!("10.42.{i}.0/24")),
                cidr(CLUSTER),
                state.path().to_path_buf(),
            );
            config.netns = Some(net.node(i).netns_path());
            networks.push(NodeNetwork::setup(config).await.unwrap());
            states.push(state);
        }
        for (i, j) in [(0, 1), (1, 0)] {
            let peers = [Peer {
                node_name: format!("node-{j}"),
                node_ip: net.node(j).ip(),
                pod_cidr: cidr(&format!("10.42.{j}.0/24")),
            }];
            let path = net.node(i).netns_path();
            sync_routes(
                Some(&path),
                net.node(i).ip(),
                cidr(CLUSTER),
                &Overlay::HostGw,
                &peers,
            )
            .await
            .unwrap();
        }
        run_in(
            net.node(0),
            "sh",
            &["-c", &format!("echo 0 > {BRIDGE_NF_CALL_IPTABLES}")],
        );
        Cluster {
            servers: Vec::new(),
            dirs: Vec::new(),
            executor: policy::Executor::in_netns(net.node(0).netns_path()),
            proxy: skiff_net::proxy::Executor::in_netns(net.node(0).netns_path()),
            pods: Vec::new(),
            networks,
            _states: states,
            net,
        }
    }

    /// Attaches a pod `namespace/name` with `labels` to node `node`; returns its index.
    async fn pod(&mut self, node: usize, namespace: &str, name: &str, labels: Value) -> usize {
        let ns = Namespace::new().unwrap();
        let uid = format!("uid-{namespace}-{name}");
        let address = self.networks[node].attach(&uid, &ns.path()).await.unwrap();
        self.pods.push(TestPod {
            ns,
            ip: address.ip,
            uid,
            namespace: namespace.into(),
            name: name.into(),
            labels,
            node,
        });
        self.pods.len() - 1
    }

    /// Starts `busybox httpd` in pod `i` on `port` serving `/name` = `NAME:PORT`; waits until
    /// the pod's node gets an answer.
    fn serve(&mut self, i: usize, port: u16) {
        let dir = tempfile::tempdir().unwrap();
        let pod = &self.pods[i];
        std::fs::write(dir.path().join("name"), format!("{}:{port}\n", pod.name)).unwrap();
        let server = ChildGuard::spawn(
            "busybox httpd",
            pod.ns.command("busybox").args([
                "httpd",
                "-f",
                "-p",
                &port.to_string(),
                "-h",
                &dir.path().display().to_string(),
            ]),
        )
        .unwrap();
        self.servers.push(server);
        self.dirs.push(dir);
        let node = self.net.node(pod.node);
        let url = format!("http://{}:{port}/name", pod.ip);
        wait_for("httpd to answer", Duration::from_secs(10), || {
            fetch(|p| node.command(p), &url, 5).ok()
        })
        .unwrap();
    }

    /// `GET http://ADDR:PORT/name` from pod `from` to pod `to`, bounded by `seconds`.
    fn get(&self, from: usize, to: usize, port: u16, seconds: u32) -> Result<String, String> {
        self.get_url(
            from,
            &format!("http://{}:{port}/name", self.pods[to].ip),
            seconds,
        )
    }

    fn get_url(&self, from: usize, url: &str, seconds: u32) -> Result<String, String> {
        let ns = &self.pods[from].ns;
        fetch(|p| ns.command(p), url, seconds)
    }

    /// Asserts that `from` reaches `to` (answers within 5 s).
    fn assert_reaches(&self, from: usize, to: usize, port: u16) {
        let body = self.get(from, to, port, 5).unwrap_or_else(|e| {
            panic!(
                "{} -> {}:{port} should pass: {e:?}\n{}",
                self.pods[from].name,
                self.pods[to].name,
                self.executor.list().unwrap_or_default()
            )
        });
        assert_eq!(body, format!("{}:{port}", self.pods[to].name));
    }

    /// Asserts that `from` gets no answer from `to` within 2 s.
    fn assert_blocked(&self, from: usize, to: usize, port: u16) {
        if let Ok(body) = self.get(from, to, port, 2) {
            panic!(
                "{} -> {}:{port} should be blocked, got {body:?}\n{}",
                self.pods[from].name,
                self.pods[to].name,
                self.executor.list().unwrap_or_default()
            );
        }
    }

    /// The pods as Kubernetes objects, with their real addresses and uids; every pod has the
    /// container ports `http` = 8080 and `alt` = 9090.
    fn pod_objects(&self) -> Vec<Pod> {
        self.pods
            .iter()
            .map(|p| {
                serde_json::from_value(json!({
                    "metadata": { "namespace": p.namespace, "name": p.name, "uid": p.uid,
                                  "labels": p.labels },
                    "spec": { "nodeName": format!("node-{}", p.node), "containers": [{
                        "name": "main",
                        "ports": [{ "name": "http", "containerPort": HTTP },
                                  { "name": "alt", "containerPort": ALT }] }] },
                    "status": { "phase": "Running", "podIP": p.ip.to_string(),
                                "podIPs": [{ "ip": p.ip.to_string() }] },
                }))
                .unwrap()
            })
            .collect()
    }

    /// Builds, renders and applies node 0's policy rules for `policies` (NetworkPolicy JSON);
    /// returns the time the apply took.
    fn apply(&self, policies: &[Value]) -> Duration {
        let policies: Vec<NetworkPolicy> = policies
            .iter()
            .map(|p| serde_json::from_value(p.clone()).unwrap())
            .collect();
        let pods = self.pod_objects();
        let namespaces: Vec<K8sNamespace> = [("prod", "a"), ("dev", "b")]
            .iter()
            .map(|(name, team)| {
                serde_json::from_value(
                    json!({ "metadata": { "name": name, "labels": { "team": team } } }),
                )
                .unwrap()
            })
            .collect();
        let model = policy::build(&PolicyInput {
            policies: &policies,
            pods: &pods,
            namespaces: &namespaces,
            node_name: "node-0",
            bridge: "skiff0",
        });
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);
        let script = policy::render(&model);
        let started = Instant::now();
        self.executor
            .apply(&script)
            .unwrap_or_else(|e| panic!("{e}\n{script}"));
        let took = started.elapsed();
        let sysctl = node_output(self.net.node(0), "cat", &[BRIDGE_NF_CALL_IPTABLES]);
        assert_eq!(sysctl.trim(), "1", "apply turns br_netfilter on");
        took
    }
}

/// `busybox wget` through `command` (a pod's or node's), bounded by `busybox timeout`.
fn fetch(
    command: impl Fn(&str) -> std::process::Command,
    url: &str,
    seconds: u32,
) -> Result<String, String> {
    let output = command("busybox")
        .args([
            "timeout",
            &seconds.to_string(),
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

fn run_in(node: &TestNode, program: &str, args: &[&str]) {
    let out = node.command(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

fn node_output(node: &TestNode, program: &str, args: &[&str]) -> String {
    let out = node.command(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The IPv6 link-local address of a pod's `eth0`.
fn link_local(ns: &Namespace) -> String {
    let out = ns
        .command("ip")
        .args(["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let addr = text
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .unwrap_or_else(|| panic!("no link-local address: {text}"));
    addr.split('/').next().unwrap().to_string()
}

/// Whether one IPv6 ping from `ns` over `eth0` to `addr` is answered within a second.
fn ping6(ns: &Namespace, addr: &str) -> bool {
    ns.command("busybox")
        .args(["ping6", "-c1", "-W1", "-I", "eth0", addr])
        .output()
        .unwrap()
        .status
        .success()
}

fn netpol(namespace: &str, name: &str, spec: Value) -> Value {
    json!({ "metadata": { "namespace": namespace, "name": name }, "spec": spec })
}

fn default_deny(namespace: &str) -> Value {
    netpol(namespace, "default-deny", json!({ "podSelector": {} }))
}

#[tokio::test]
async fn default_deny_blocks_local_and_remote_clients_and_a_pod_selector_lets_one_in() {
    let mut c = Cluster::start().await;
    let web = c.pod(0, "prod", "web", json!({ "app": "web" })).await;
    let client = c.pod(0, "prod", "client", json!({ "app": "client" })).await;
    let other = c.pod(0, "prod", "other", json!({ "app": "other" })).await;
    let remote = c.pod(1, "prod", "remote", json!({ "app": "client" })).await;
    c.serve(web, HTTP);
    for from in [client, other, remote] {
        c.assert_reaches(from, web, HTTP);
    }
    // Every pod also has an IPv6 link-local address on the bridge.
    let web_ll = link_local(&c.pods[web].ns);
    wait_for("link-local ping", Duration::from_secs(10), || {
        ping6(&c.pods[client].ns, &web_ll).then_some(())
    })
    .unwrap();

    let took = c.apply(&[default_deny("prod")]);
    eprintln!("apply took {took:?}");
    c.assert_blocked(client, web, HTTP);
    c.assert_blocked(other, web, HTTP);
    c.assert_blocked(remote, web, HTTP);
    // Link-local IPv6 between pods on the bridge is no way around it.
    assert!(!ping6(&c.pods[client].ns, &web_ll));
    // Why the executor switches br_netfilter on: without it, bridged pod-to-pod traffic
    // never meets the IP hooks. Applying again switches it back on.
    run_in(
        c.net.node(0),
        "sh",
        &["-c", &format!("echo 0 > {BRIDGE_NF_CALL_IPTABLES}")],
    );
    c.assert_reaches(other, web, HTTP);
    c.apply(&[default_deny("prod")]);
    c.assert_blocked(other, web, HTTP);
    // The pod's node is always let in (kubelet probes).
    let url = format!("http://{}:{HTTP}/name", c.pods[web].ip);
    let node0 = c.net.node(0);
    assert_eq!(fetch(|p| node0.command(p), &url, 5).unwrap(), "web:8080");

    c.apply(&[
        default_deny("prod"),
        netpol(
            "prod",
            "web-from-clients",
            json!({ "podSelector": { "matchLabels": { "app": "web" } },
                    "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }] }] }),
        ),
    ]);
    c.assert_reaches(client, web, HTTP);
    c.assert_reaches(remote, web, HTTP);
    c.assert_blocked(other, web, HTTP);

    // Removing the tables lets everything through again.
    c.executor.remove().unwrap();
    c.assert_reaches(other, web, HTTP);
}

#[tokio::test]
async fn namespace_selectors_and_ip_blocks_with_excepts() {
    let mut c = Cluster::start().await;
    let web = c.pod(0, "prod", "web", json!({ "app": "web" })).await;
    let same_ns = c
        .pod(0, "prod", "neighbour", json!({ "app": "client" }))
        .await;
    let dev_local = c
        .pod(0, "dev", "dev-local", json!({ "app": "client" }))
        .await;
    let dev_tool = c.pod(0, "dev", "dev-tool", json!({ "app": "tool" })).await;
    let dev_remote = c
        .pod(1, "dev", "dev-remote", json!({ "app": "client" }))
        .await;
    c.serve(web, HTTP);

    // Every pod of team=b namespaces.
    c.apply(&[netpol(
        "prod",
        "from-dev",
        json!({ "podSelector": {}, "ingress": [{ "from": [
            { "namespaceSelector": { "matchLabels": { "team": "b" } } }] }] }),
    )]);
    c.assert_reaches(dev_local, web, HTTP);
    c.assert_reaches(dev_tool, web, HTTP);
    c.assert_reaches(dev_remote, web, HTTP);
    c.assert_blocked(same_ns, web, HTTP);

    // namespaceSelector AND podSelector in one peer.
    c.apply(&[netpol(
        "prod",
        "from-dev-clients",
        json!({ "podSelector": {}, "ingress": [{ "from": [{
            "namespaceSelector": { "matchLabels": { "team": "b" } },
            "podSelector": { "matchLabels": { "app": "client" } } }] }] }),
    )]);
    c.assert_reaches(dev_local, web, HTTP);
    c.assert_reaches(dev_remote, web, HTTP);
    c.assert_blocked(dev_tool, web, HTTP);
    c.assert_blocked(same_ns, web, HTTP);

    // The cluster CIDR except node 1's pods and one local pod.
    let except_one = format!("{}/32", c.pods[dev_tool].ip);
    c.apply(&[netpol(
        "prod",
        "by-address",
        json!({ "podSelector": {}, "ingress": [{ "from": [{ "ipBlock": {
            "cidr": CLUSTER, "except": ["10.42.1.0/24", except_one] } }] }] }),
    )]);
    c.assert_reaches(same_ns, web, HTTP);
    c.assert_reaches(dev_local, web, HTTP);
    c.assert_blocked(dev_tool, web, HTTP);
    c.assert_blocked(dev_remote, web, HTTP);
}

#[tokio::test]
async fn port_rules_by_name_let_one_port_through() {
    let mut c = Cluster::start().await;
    let web = c.pod(0, "prod", "web", json!({ "app": "web" })).await;
    let client = c.pod(0, "prod", "client", json!({ "app": "client" })).await;
    let remote = c.pod(1, "dev", "remote", json!({ "app": "client" })).await;
    c.serve(web, HTTP);
    c.serve(web, ALT);
    c.apply(&[netpol(
        "prod",
        "http-only",
        json!({ "podSelector": { "matchLabels": { "app": "web" } },
                "ingress": [{ "ports": [{ "port": "http" }] }] }),
    )]);
    c.assert_reaches(client, web, HTTP);
    c.assert_reaches(remote, web, HTTP);
    c.assert_blocked(client, web, ALT);
    c.assert_blocked(remote, web, ALT);

    // A numeric range covering 9090 only.
    c.apply(&[netpol(
        "prod",
        "alt-range",
        json!({ "podSelector": { "matchLabels": { "app": "web" } },
                "ingress": [{ "ports": [{ "port": 9000, "endPort": 9100 }] }] }),
    )]);
    c.assert_reaches(client, web, ALT);
    c.assert_blocked(client, web, HTTP);
}

#[tokio::test]
async fn egress_default_deny_with_one_allowed_destination_and_replies_flow() {
    let mut c = Cluster::start().await;
    let client = c.pod(0, "prod", "client", json!({ "app": "client" })).await;
    let local_server = c.pod(0, "prod", "local", json!({ "app": "server" })).await;
    let remote_server = c.pod(1, "prod", "remote", json!({ "app": "server" })).await;
    let outsider = c.pod(0, "dev", "outsider", json!({ "app": "x" })).await;
    c.serve(local_server, HTTP);
    c.serve(remote_server, HTTP);
    c.serve(client, HTTP);

    let remote_ip = format!("{}/32", c.pods[remote_server].ip);
    c.apply(&[netpol(
        "prod",
        "client-egress",
        json!({ "podSelector": { "matchLabels": { "app": "client" } },
                "policyTypes": ["Egress"],
                "egress": [{ "to": [{ "ipBlock": { "cidr": remote_ip } }] }] }),
    )]);
    c.assert_reaches(client, remote_server, HTTP);
    c.assert_blocked(client, local_server, HTTP);
    // Egress only: the client still accepts connections, and its replies (egress traffic
    // of allowed connections) pass.
    c.assert_reaches(outsider, client, HTTP);
    c.assert_reaches(local_server, client, HTTP);
    // DNS at the gateway is just another destination: blocked.
    let gateway = format!("http://{}:53/", Ipv4Addr::new(10, 42, 0, 1));
    assert!(c.get_url(client, &gateway, 2).is_err());

    // Deny all egress of the servers and all ingress of the client: the client's own
    // connections still work, their replies pass both ways.
    c.apply(&[
        netpol(
            "prod",
            "servers-silent",
            json!({ "podSelector": { "matchLabels": { "app": "server" } },
                    "policyTypes": ["Egress"] }),
        ),
        netpol(
            "prod",
            "client-closed",
            json!({ "podSelector": { "matchLabels": { "app": "client" } } }),
        ),
    ]);
    c.assert_reaches(client, local_server, HTTP);
    c.assert_reaches(client, remote_server, HTTP);
    c.assert_blocked(local_server, client, HTTP);
    c.assert_blocked(outsider, client, HTTP);
}

/// One request (at most 2 s) every ~150 ms from `from` to `url` until stopped: (start
/// time, success).
struct Loop {
    stop: Arc<AtomicBool>,
    results: Arc<Mutex<Vec<(Instant, bool)>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Loop {
    fn start(c: &Cluster, from: usize, url: String) -> Loop {
        let stop = Arc::new(AtomicBool::new(false));
        let results = Arc::new(Mutex::new(Vec::new()));
        let path = c.pods[from].ns.path();
        let handle = std::thread::spawn({
            let stop = Arc::clone(&stop);
            let results = Arc::clone(&results);
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = fetch(
                        |p| {
                            let mut c = std::process::Command::new("nsenter");
                            c.arg(format!("--net={}", path.display())).arg("--").arg(p);
                            c
                        },
                        &url,
                        2,
                    )
                    .is_ok();
                    results.lock().unwrap().push((started, ok));
                    std::thread::sleep(Duration::from_millis(150));
                }
            }
        });
        Loop {
            stop,
            results,
            handle: Some(handle),
        }
    }

    /// Waits until `n` requests started after `since` have finished; returns their outcomes.
    fn outcomes_after(&self, since: Instant, n: usize) -> Vec<bool> {
        wait_for("requests of the loop", Duration::from_secs(20), || {
            let results = self.results.lock().unwrap();
            let after: Vec<bool> = results
                .iter()
                .filter(|(t, _)| *t > since)
                .map(|(_, ok)| *ok)
                .collect();
            (after.len() >= n).then_some(after)
        })
        .unwrap()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Replies a long-running `busybox ping` (one ICMP flow, one conntrack entry) has printed.
fn replies(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("bytes from"))
        .count()
}

#[tokio::test]
async fn a_policy_change_takes_effect_on_running_traffic() {
    let mut c = Cluster::start().await;
    let web = c.pod(0, "prod", "web", json!({ "app": "web" })).await;
    let client = c.pod(0, "prod", "client", json!({ "app": "client" })).await;
    c.serve(web, HTTP);
    let url = format!("http://{}:{HTTP}/name", c.pods[web].ip);

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("ping.log");
    let mut ping = ChildGuard::spawn(
        "busybox ping",
        c.pods[client]
            .ns
            .command("busybox")
            .args(["ping", "-i", "0.2", &c.pods[web].ip.to_string()])
            .stdout(std::fs::File::create(&log).unwrap()),
    )
    .unwrap();
    let requests = Loop::start(&c, client, url);
    let began = Instant::now();
    assert!(requests.outcomes_after(began, 3).iter().all(|ok| *ok));
    wait_for("ping replies", Duration::from_secs(10), || {
        (replies(&log) >= 3).then_some(())
    })
    .unwrap();

    // Deny: every request started afterwards fails, the ping flow stops being answered.
    c.apply(&[default_deny("prod")]);
    let denied = Instant::now();
    let after = requests.outcomes_after(denied, 4);
    assert!(after.iter().all(|ok| !ok), "after the deny: {after:?}");
    std::thread::sleep(Duration::from_millis(500));
    let stalled = replies(&log);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(replies(&log), stalled, "the ping flow still gets replies");

    // Allow again (the policy is gone): requests succeed, the same ping resumes.
    c.apply(&[]);
    let allowed = Instant::now();
    let after = requests.outcomes_after(allowed, 4);
    assert!(after.iter().all(|ok| *ok), "after the allow: {after:?}");
    wait_for("ping replies again", Duration::from_secs(10), || {
        (replies(&log) >= stalled + 3).then_some(())
    })
    .unwrap();

    // Re-applying an allowing policy over and over (as every unrelated pod change does) never
    // drops a request: the tables are swapped in one transaction.
    let allow = [netpol(
        "prod",
        "web-from-clients",
        json!({ "podSelector": { "matchLabels": { "app": "web" } },
                "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }] }] }),
    )];
    let reapplying = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        slowest = slowest.max(c.apply(&allow));
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("20 re-applies, slowest {slowest:?}");
    let during = requests.outcomes_after(reapplying, 5);
    assert!(during.iter().all(|ok| *ok), "while re-applying: {during:?}");
    drop(requests);
    ping.kill();
}

#[tokio::test]
async fn service_traffic_is_judged_on_its_endpoint_and_dns_by_address() {
    let mut c = Cluster::start().await;
    let web = c.pod(0, "prod", "web", json!({ "app": "web" })).await;
    let client = c.pod(0, "prod", "client", json!({ "app": "client" })).await;
    let other = c.pod(0, "prod", "other", json!({ "app": "other" })).await;
    let remote = c.pod(1, "prod", "remote", json!({ "app": "web" })).await;
    c.serve(web, HTTP);
    c.serve(remote, HTTP);

    // A cluster IP with the local endpoint, one with the remote one, and the DNS redirect to
    // the gateway where a web server on port 53 stands in for the DNS server (TCP).
    let service = |name: &str, ip: &str| -> Service {
        serde_json::from_value(json!({
            "metadata": { "namespace": "prod", "name": name },
            "spec": { "clusterIP": ip, "clusterIPs": [ip],
                      "ports": [{ "name": "http", "port": 80, "targetPort": HTTP }] },
        }))
        .unwrap()
    };
    let slice = |name: &str, ip: Ipv4Addr, node: &str| -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": { "namespace": "prod", "name": format!("{name}-1"),
                          "labels": { "kubernetes.io/service-name": name } },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": HTTP, "protocol": "TCP" }],
            "endpoints": [{ "addresses": [ip.to_string()], "nodeName": node,
                            "conditions": { "ready": true } }],
        }))
        .unwrap()
    };
    let services = [service("local", "10.43.0.50"), service("far", "10.43.0.51")];
    let slices = [
        slice("local", c.pods[web].ip, "node-0"),
        slice("far", c.pods[remote].ip, "node-1"),
    ];
    let gateway = Ipv4Addr::new(10, 42, 0, 1);
    let model = skiff_net::proxy::build(&skiff_net::proxy::ProxyInput {
        services: &services,
        slices: &slices,
        node_name: "node-0",
        node_ips: &[c.net.node(0).ip()],
        pod_cidr: Some(cidr("10.42.0.0/24")),
        cluster_cidr: cidr(CLUSTER),
        service_cidr: cidr("10.43.0.0/16"),
        dns: Some(skiff_net::proxy::DnsRedirect {
            cluster_ip: "10.43.0.10".parse().unwrap(),
            local: std::net::SocketAddrV4::new(gateway, 53),
        }),
    });
    c.proxy.apply(&skiff_net::proxy::render(&model)).unwrap();
    let dns_dir = tempfile::tempdir().unwrap();
    std::fs::write(dns_dir.path().join("name"), "dns\n").unwrap();
    let dns = ChildGuard::spawn(
        "busybox httpd (port 53)",
        c.net.node(0).command("busybox").args([
            "httpd",
            "-f",
            "-p",
            &format!("{gateway}:53"),
            "-h",
            &dns_dir.path().display().to_string(),
        ]),
    )
    .unwrap();
    c.servers.push(dns);
    c.dirs.push(dns_dir);
    let dns_url = "http://10.43.0.10:53/name";
    wait_for("the DNS stand-in", Duration::from_secs(10), || {
        c.get_url(client, dns_url, 5).ok()
    })
    .unwrap();
    assert_eq!(
        c.get_url(other, "http://10.43.0.50/name", 5).unwrap(),
        "web:8080"
    );

    // Ingress to web from clients only: judged on the endpoint (web), after DNAT, with the
    // real client address even though the proxy masquerades same-bridge service traffic.
    c.apply(&[netpol(
        "prod",
        "web-from-clients",
        json!({ "podSelector": { "matchLabels": { "app": "web" } },
                "ingress": [{ "from": [{ "podSelector": { "matchLabels": { "app": "client" } } }] }] }),
    )]);
    assert_eq!(
        c.get_url(client, "http://10.43.0.50/name", 5).unwrap(),
        "web:8080"
    );
    assert!(c.get_url(other, "http://10.43.0.50/name", 2).is_err());

    // Egress of `other`: only to pods labelled app=web in prod, and DNS by the service
    // address. The remote endpoint behind a cluster IP passes (judged after DNAT); DNS
    // passes by its cluster IP; the gateway on another port does not.
    c.apply(&[netpol(
        "prod",
        "other-egress",
        json!({ "podSelector": { "matchLabels": { "app": "other" } }, "policyTypes": ["Egress"],
                "egress": [
                    { "to": [{ "podSelector": { "matchLabels": { "app": "web" } } }] },
                    { "to": [{ "ipBlock": { "cidr": "10.43.0.10/32" } }],
                      "ports": [{ "protocol": "TCP", "port": 53 }, { "protocol": "UDP", "port": 53 }] }] }),
    )]);
    assert_eq!(
        c.get_url(other, "http://10.43.0.51/name", 5).unwrap(),
        "remote:8080"
    );
    assert_eq!(
        c.get_url(other, "http://10.43.0.50/name", 5).unwrap(),
        "web:8080"
    );
    assert_eq!(c.get_url(other, dns_url, 5).unwrap(), "dns");
    assert!(c.get(other, client, HTTP, 2).is_err());

    // Without the DNS rule the redirected DNS is blocked like anything else.
    c.apply(&[netpol(
        "prod",
        "other-egress",
        json!({ "podSelector": { "matchLabels": { "app": "other" } }, "policyTypes": ["Egress"],
                "egress": [{ "to": [{ "podSelector": { "matchLabels": { "app": "web" } } }] }] }),
    )]);
    assert!(c.get_url(other, dns_url, 2).is_err());
    assert_eq!(c.get_url(client, dns_url, 5).unwrap(), "dns");
}
