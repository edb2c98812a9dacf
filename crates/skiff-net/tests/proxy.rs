//! The service proxy with real traffic: node 0 of a test network is the proxy node (its rules
//! applied in its namespace), nodes 1 and 2 run `busybox httpd` as endpoints, node 3 is a
//! client outside the cluster that routes the service range through node 0.
//!
//! Needs root, `nft`, `nsenter` and `busybox`; never touches the host's network namespace.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};
use skiff_net::Ipv4Cidr;
use skiff_net::proxy::{
    ApplyKind, DnsRedirect, Executor, ProxyInput, ProxyModel, ProxyState, build, render,
};
use skiff_testkit::netns::{Namespace, TestNetwork, TestNode};
use skiff_testkit::process::ChildGuard;
use skiff_testkit::wait::wait_for;

const CLUSTER_IP: &str = "10.43.0.10";

fn cidr(text: &str) -> Ipv4Cidr {
    text.parse().expect("valid CIDR")
}

/// Runs `program args` to success inside `node`.
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

/// `busybox wget` from `node` (at most 5 s; its own `-T` crashes this busybox): the body, or
/// wget's error.
fn get(node: &TestNode, url: &str) -> Result<String, String> {
    get_within(node, url, 5)
}

/// [`get`] giving up after `seconds` (the error is then empty: `timeout` killed wget).
fn get_within(node: &TestNode, url: &str, seconds: u32) -> Result<String, String> {
    let output = node
        .command("timeout")
        .args([
            &seconds.to_string(),
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            url,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// The test cluster: network, web servers (killed on drop, before the network goes) and the
/// proxy node's executor.
struct Cluster {
    servers: Vec<ChildGuard>,
    _dirs: Vec<tempfile::TempDir>,
    executor: Executor,
    net: TestNetwork,
}

impl Cluster {
    /// Four nodes; web servers on nodes 1 and 2 on ports 8080 and 8081, each serving `/name`
    /// with its node name (`node1`, `node2`) and port; node 0 forwards, node 3 routes the
    /// service range via node 0.
    fn start() -> Cluster {
        let net = TestNetwork::new(4).expect("test network (needs root)");
        let executor = Executor::in_netns(net.node(0).netns_path());
        let mut cluster = Cluster {
            servers: Vec::new(),
            _dirs: Vec::new(),
            executor,
            net,
        };
        let proxy = cluster.node(0).clone();
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
        // The node itself needs a route to the service range for its own connections (a
        // real node has a default route).
        run_in(
            &proxy,
            "ip",
            &["route", "add", "10.43.0.0/16", "dev", "eth0"],
        );
        let via = proxy.ip().to_string();
        run_in(
            cluster.node(3),
            "ip",
            &["route", "add", "10.43.0.0/16", "via", &via],
        );
        for i in [1, 2] {
            for port in [8080, 8081] {
                cluster.serve(i, port);
            }
        }
        cluster
    }

    /// Starts `busybox httpd` on node `i` port `port`, serving `/name` = `node{i}:{port}`, and
    /// waits until node 0 gets an answer.
    fn serve(&mut self, i: usize, port: u16) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("name"), format!("node{i}:{port}\n")).expect("write page");
        let node = self.node(i).clone();
        let server = ChildGuard::spawn(
            "busybox httpd",
            node.command("busybox").args([
                "httpd",
                "-f",
                "-p",
                &port.to_string(),
                "-h",
                &dir.path().display().to_string(),
            ]),
        )
        .expect("start httpd");
        self.servers.push(server);
        self._dirs.push(dir);
        let url = format!("http://{}:{port}/name", node.ip());
        let proxy = self.node(0).clone();
        wait_for("httpd to answer", Duration::from_secs(10), || {
            get(&proxy, &url).ok()
        })
        .expect("httpd up");
    }

    fn node(&self, i: usize) -> &TestNode {
        self.net.node(i)
    }

    /// The model of node 0 for these services and slices.
    fn model(&self, services: &[Service], slices: &[EndpointSlice]) -> ProxyModel {
        let node_ips = [self.node(0).ip()];
        build(&ProxyInput {
            services,
            slices,
            node_name: "node-0",
            node_ips: &node_ips,
            pod_cidr: Some(cidr("10.42.0.0/24")),
            cluster_cidr: cidr("10.42.0.0/16"),
            service_cidr: cidr("10.43.0.0/16"),
            dns: None,
        })
    }

    fn apply(&self, services: &[Service], slices: &[EndpointSlice]) {
        let model = self.model(services, slices);
        assert!(model.warnings.is_empty(), "{:?}", model.warnings);
        self.executor
            .apply(&render(&model))
            .expect("apply proxy rules");
    }

    /// A slice for service `web` with endpoints on the given nodes (their addresses), ports
    /// `http` -> 8080 and `alt` -> 8081.
    fn slice(&self, nodes: &[usize]) -> EndpointSlice {
        let endpoints: Vec<Value> = nodes
            .iter()
            .map(|&i| {
                json!({
                    "addresses": [self.node(i).ip().to_string()],
                    "nodeName": format!("node-{i}"),
                    "conditions": { "ready": true },
                })
            })
            .collect();
        slice("web", endpoints)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            server.kill();
        }
        let _ = self.executor.remove();
    }
}

fn slice(service: &str, endpoints: Vec<Value>) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {
            "namespace": "default",
            "name": format!("{service}-1"),
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "ports": [
            { "name": "http", "port": 8080, "protocol": "TCP" },
            { "name": "alt", "port": 8081, "protocol": "TCP" },
        ],
        "endpoints": endpoints,
    }))
    .expect("valid EndpointSlice")
}

/// Service `web` at [`CLUSTER_IP`] with ports 80 (`http`, target port by name) and 81 (`alt`,
/// by number), `extra` merged into the spec.
fn web_service(extra: Value) -> Service {
    let mut spec = json!({
        "type": "ClusterIP",
        "clusterIP": CLUSTER_IP,
        "clusterIPs": [CLUSTER_IP],
        "ports": [
            { "name": "http", "port": 80, "targetPort": "web", "protocol": "TCP" },
            { "name": "alt", "port": 81, "targetPort": 8081, "protocol": "TCP" },
        ],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(json!({
        "metadata": { "namespace": "default", "name": "web" },
        "spec": spec,
    }))
    .expect("valid Service")
}

/// `n` requests from `node` to `url`, counted by answer.
fn tally(node: &TestNode, url: &str, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let body = get(node, url).unwrap_or_else(|e| panic!("GET {url} from {}: {e}", node.name()));
        *seen.entry(body).or_insert(0) += 1;
    }
    seen
}

#[test]
fn a_cluster_ip_spreads_connections_over_its_endpoints_on_every_port() {
    let cluster = Cluster::start();
    cluster.apply(&[web_service(json!({}))], &[cluster.slice(&[1, 2])]);

    // From the proxy node itself (nat output) and from an outside client (nat prerouting).
    for client in [0, 3] {
        let seen = tally(
            cluster.node(client),
            &format!("http://{CLUSTER_IP}:80/name"),
            40,
        );
        assert_eq!(seen.len(), 2, "from node {client}: {seen:?}");
        for (body, count) in &seen {
            assert!(body.ends_with(":8080"), "{body}");
            assert!(*count >= 10, "from node {client}: uneven spread {seen:?}");
        }
    }
    let seen = tally(cluster.node(3), &format!("http://{CLUSTER_IP}:81/name"), 10);
    assert!(seen.keys().all(|body| body.ends_with(":8081")), "{seen:?}");
}

#[test]
fn session_affinity_client_ip_pins_a_client_to_one_endpoint() {
    let cluster = Cluster::start();
    let service = web_service(json!({
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 600 } },
    }));
    let services = [service];
    let slices = [cluster.slice(&[1, 2])];
    cluster.apply(&services, &slices);
    let url = format!("http://{CLUSTER_IP}:80/name");
    let mut pinned = Vec::new();
    for client in [0, 3] {
        let seen = tally(cluster.node(client), &url, 20);
        assert_eq!(seen.len(), 1, "from node {client}: not pinned {seen:?}");
        pinned.extend(seen.into_keys());
    }
    // Re-applying (as on any unrelated change) keeps every client on its endpoint: the
    // executor carries the affinity entries over into the new table.
    for _ in 0..3 {
        cluster.apply(&services, &slices);
        for (client, endpoint) in [0, 3].into_iter().zip(&pinned) {
            let seen = tally(cluster.node(client), &url, 3);
            assert_eq!(
                seen.keys().collect::<Vec<_>>(),
                [endpoint],
                "from node {client} after re-apply"
            );
        }
    }
    let listed = cluster.executor.list().expect("list");
    assert!(
        listed.contains("flags dynamic,timeout") && listed.contains("expires"),
        "{listed}"
    );
}

#[test]
fn a_service_without_endpoints_refuses_connections_at_once() {
    let cluster = Cluster::start();
    let service = web_service(json!({
        "type": "NodePort",
        "ports": [{ "name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080 }],
    }));
    cluster.apply(&[service], &[cluster.slice(&[])]);
    let node_port = format!("http://{}:30080/name", cluster.node(0).ip());
    let cluster_ip = format!("http://{CLUSTER_IP}:80/name");
    for (client, url) in [(0, &cluster_ip), (3, &cluster_ip), (3, &node_port)] {
        let start = Instant::now();
        let error = get(cluster.node(client), url).expect_err("no endpoints: must fail");
        let took = start.elapsed();
        assert!(
            error.contains("refused"),
            "from node {client} to {url}: {error}"
        );
        assert!(took < Duration::from_secs(2), "took {took:?}: {error}");
    }
}

#[test]
fn a_node_port_answers_on_the_node_address() {
    let cluster = Cluster::start();
    let service = web_service(json!({
        "type": "NodePort",
        "ports": [{ "name": "http", "port": 80, "targetPort": "web", "nodePort": 30080 }],
    }));
    cluster.apply(&[service], &[cluster.slice(&[1, 2])]);
    let url = format!("http://{}:30080/name", cluster.node(0).ip());
    for client in [1, 3] {
        let seen = tally(cluster.node(client), &url, 20);
        assert!(!seen.is_empty() && seen.keys().all(|b| b.ends_with(":8080")));
    }
    let seen = tally(cluster.node(3), &url, 20);
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[test]
fn replacing_the_rules_is_atomic_and_takes_effect() {
    let cluster = Cluster::start();
    let service = [web_service(json!({}))];
    let both = [cluster.slice(&[1, 2])];
    let one = [cluster.slice(&[1])];
    cluster.apply(&service, &both);

    let url = format!("http://{CLUSTER_IP}:80/name");
    let stop = AtomicBool::new(false);
    let (requests, failures) = std::thread::scope(|scope| {
        let client = cluster.node(3).clone();
        let url = &url;
        let stop = &stop;
        let worker = scope.spawn(move || {
            let (mut requests, mut failures) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                requests += 1;
                if let Err(e) = get(&client, url) {
                    failures.push(e);
                }
            }
            (requests, failures)
        });
        let start = Instant::now();
        for round in 0..50 {
            let slices = if round % 2 == 0 { &one } else { &both };
            cluster.apply(&service, slices);
        }
        cluster.apply(&service, &one);
        // Let the client run a little past the last swap.
        std::thread::sleep(Duration::from_millis(200));
        eprintln!("50 re-applies took {:?}", start.elapsed());
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("request loop")
    });
    eprintln!(
        "{requests} requests during the re-applies, {} failed",
        failures.len()
    );
    assert!(requests > 10, "only {requests} requests ran");
    assert!(
        failures.is_empty(),
        "{} of {requests} failed: {failures:?}",
        failures.len()
    );

    // The endpoint on node 2 is gone from the rules.
    let seen = tally(cluster.node(3), &url, 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["node1:8080"], "{seen:?}");
}

#[test]
fn remove_deletes_the_table_and_can_run_twice() {
    let cluster = Cluster::start();
    cluster.apply(&[web_service(json!({}))], &[cluster.slice(&[1, 2])]);
    let listed = cluster.executor.list().expect("list");
    assert!(listed.contains("table ip skiff-proxy"), "{listed}");
    get(cluster.node(3), &format!("http://{CLUSTER_IP}:80/name")).expect("service works");

    cluster.executor.remove().expect("remove");
    cluster.executor.remove().expect("remove again");
    let tables = cluster
        .node(0)
        .command("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft list tables");
    assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "");
    assert!(cluster.executor.list().is_err());
}

#[test]
fn a_failed_apply_keeps_the_previous_rules() {
    let cluster = Cluster::start();
    cluster.apply(&[web_service(json!({}))], &[cluster.slice(&[1, 2])]);
    let good = cluster.executor.list().expect("list");
    let mut broken = render(&cluster.model(&[web_service(json!({}))], &[cluster.slice(&[1])]));
    broken.push_str("chain oops { bogus }\n");
    let error = cluster.executor.apply(&broken).expect_err("bad script");
    let message = error.to_string();
    assert!(
        message.contains("syntax error") && message.contains("network namespace"),
        "{message}"
    );
    assert_eq!(cluster.executor.list().expect("list"), good);
}

/// 1,000 services × 10 endpoints: build, render and apply, printed (run with --no-capture).
#[test]
fn a_thousand_services_with_ten_endpoints_each() {
    let net = TestNetwork::new(1).expect("test network (needs root)");
    let executor = Executor::in_netns(net.node(0).netns_path());
    let mut services = Vec::new();
    let mut slices = Vec::new();
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
        let endpoints: Vec<Value> = (0..10u32)
            .map(|e| {
                let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 0, 0)) + i * 16 + e + 2);
                json!({ "addresses": [addr.to_string()], "nodeName": format!("node-{}", e % 5) })
            })
            .collect();
        slices.push(slice(&name, endpoints));
    }
    let node_ips = [net.node(0).ip()];
    let input = ProxyInput {
        services: &services,
        slices: &slices,
        node_name: "node-0",
        node_ips: &node_ips,
        pod_cidr: Some(cidr("10.42.0.0/24")),
        cluster_cidr: cidr("10.42.0.0/16"),
        service_cidr: cidr("10.43.0.0/16"),
        dns: None,
    };
    let mut report = Vec::new();
    for round in ["first apply", "replacing apply", "replacing apply"] {
        let start = Instant::now();
        let model = build(&input);
        let built = start.elapsed();
        let script = render(&model);
        let rendered = start.elapsed();
        if let Some(path) = std::env::var_os("SKIFF_PROXY_DUMP") {
            std::fs::write(path, &script).expect("dump the script");
        }
        executor.apply(&script).expect("apply 1,000 services");
        let applied = start.elapsed();
        assert_eq!(model.services.len(), 1000);
        report.push(format!(
            "{round}: build {built:?}, render {:?} ({} KiB), apply {:?}, total {applied:?}",
            rendered - built,
            script.len() / 1024,
            applied - rendered,
        ));
        assert!(applied < Duration::from_secs(10), "{report:?}");
    }
    println!("1,000 services x 10 endpoints:\n  {}", report.join("\n  "));
    let _ = executor.remove();
}

#[test]
fn external_traffic_policy_local_uses_only_this_nodes_endpoints() {
    let mut cluster = Cluster::start();
    cluster.serve(0, 8080);
    let local = web_service(json!({
        "type": "NodePort",
        "externalTrafficPolicy": "Local",
        "ports": [{ "name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080 }],
    }));
    cluster.apply(std::slice::from_ref(&local), &[cluster.slice(&[0, 1, 2])]);
    let node_port = format!("http://{}:30080/name", cluster.node(0).ip());
    let seen = tally(cluster.node(3), &node_port, 10);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["node0:8080"], "{seen:?}");
    // Cluster-IP traffic still uses every endpoint (internal policy Cluster).
    let seen = tally(cluster.node(3), &format!("http://{CLUSTER_IP}:80/name"), 30);
    assert_eq!(seen.len(), 3, "{seen:?}");

    // No endpoint on this node: external traffic is dropped (not refused), cluster-IP traffic
    // still works.
    cluster.apply(&[local], &[cluster.slice(&[1, 2])]);
    let error = get_within(cluster.node(3), &node_port, 2).expect_err("dropped");
    assert!(!error.contains("refused"), "{error}");
    get(cluster.node(3), &format!("http://{CLUSTER_IP}:80/name")).expect("cluster IP");
}

#[test]
fn dns_traffic_to_the_cluster_dns_ip_goes_to_the_node_local_server() {
    let mut cluster = Cluster::start();
    // The "DNS server" is a web server on node 0 port 5353: the redirect is by address only.
    cluster.serve(0, 5353);
    let dns_ip: Ipv4Addr = "10.43.0.53".parse().expect("address");
    let mut model = cluster.model(&[], &[]);
    model.dns = Some(DnsRedirect {
        cluster_ip: dns_ip,
        local: SocketAddrV4::new(cluster.node(0).ip(), 5353),
    });
    cluster
        .executor
        .apply(&render(&model))
        .expect("apply proxy rules");
    for client in [0, 3] {
        let body = get(cluster.node(client), &format!("http://{dns_ip}:53/name"))
            .unwrap_or_else(|e| panic!("from node {client}: {e}"));
        assert_eq!(body, "node0:5353");
    }
}

/// A pod in node 0: its own namespace on bridge `skiff0` (10.42.0.1/24), default route via
/// the bridge.
fn add_pod(cluster: &Cluster, veth: &str, address: &str) -> Namespace {
    let pod = Namespace::new().expect("pod namespace");
    let node = cluster.node(0);
    run_in(
        node,
        "ip",
        &[
            "link",
            "add",
            veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            pod.name(),
        ],
    );
    run_in(node, "ip", &["link", "set", veth, "master", "skiff0", "up"]);
    // As kubelet's hairpin-veth mode: with br_netfilter a pod's own DNATed traffic is bridged
    // back out of the port it came in on.
    run_in(
        node,
        "ip",
        &["link", "set", veth, "type", "bridge_slave", "hairpin", "on"],
    );
    let cidr = format!("{address}/24");
    for args in [
        &["link", "set", "lo", "up"][..],
        &["addr", "add", &cidr, "dev", "eth0"],
        &["link", "set", "eth0", "up"],
        &["route", "add", "default", "via", "10.42.0.1"],
    ] {
        let output = pod.command("ip").args(args).output().expect("ip in pod");
        assert!(output.status.success(), "ip {args:?}: {output:?}");
    }
    pod
}

fn pod_get(pod: &Namespace, url: &str) -> Result<String, String> {
    let output = pod
        .command("timeout")
        .args(["5", "busybox", "wget", "-q", "-O", "-", url])
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

#[test]
fn pods_on_the_same_bridge_reach_a_service_on_each_other_and_on_themselves() {
    let cluster = Cluster::start();
    let node = cluster.node(0);
    run_in(node, "ip", &["link", "add", "skiff0", "type", "bridge"]);
    run_in(
        node,
        "ip",
        &["addr", "add", "10.42.0.1/24", "dev", "skiff0"],
    );
    run_in(node, "ip", &["link", "set", "skiff0", "up"]);
    let client = add_pod(&cluster, "vethpa", "10.42.0.2");
    let server = add_pod(&cluster, "vethpb", "10.42.0.3");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("name"), "podB\n").expect("write page");
    // Declared after the namespaces: killed before they are deleted.
    let _httpd = ChildGuard::spawn(
        "busybox httpd",
        server.command("busybox").args([
            "httpd",
            "-f",
            "-p",
            "8080",
            "-h",
            &dir.path().display().to_string(),
        ]),
    )
    .expect("start httpd");
    wait_for("pod httpd", Duration::from_secs(10), || {
        pod_get(&client, "http://10.42.0.3:8080/name").ok()
    })
    .expect("pod httpd up");

    let endpoint = json!({
        "addresses": ["10.42.0.3"],
        "nodeName": "node-0",
        "conditions": { "ready": true },
    });
    cluster.apply(&[web_service(json!({}))], &[slice("web", vec![endpoint])]);
    let url = format!("http://{CLUSTER_IP}:80/name");
    // Without br_netfilter the reply from B to A would be bridged past the NAT (the case the
    // bridge masquerade rule exists for); with it, it passes the hooks. Both must work.
    for call_iptables in ["0", "1"] {
        run_in(
            node,
            "sh",
            &[
                "-c",
                &format!("echo {call_iptables} > /proc/sys/net/bridge/bridge-nf-call-iptables"),
            ],
        );
        for (who, pod) in [("pod A", &client), ("pod B itself (hairpin)", &server)] {
            for _ in 0..3 {
                let body = pod_get(pod, &url).unwrap_or_else(|e| {
                    panic!("{who}, bridge-nf-call-iptables={call_iptables}: {e}")
                });
                assert_eq!(body, "podB");
            }
        }
    }
}

#[test]
fn incremental_updates_add_and_remove_endpoints_with_traffic_flowing() {
    let cluster = Cluster::start();
    let service = [web_service(json!({}))];
    let model = |nodes: &[usize]| cluster.model(&service, &[cluster.slice(nodes)]);
    let mut state = ProxyState::new();
    let url = format!("http://{CLUSTER_IP}:80/name");
    let stats = state
        .apply(&cluster.executor, &model(&[1]))
        .expect("first apply");
    assert_eq!(stats.kind, ApplyKind::Full);
    let seen = tally(cluster.node(3), &url, 10);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["node1:8080"], "{seen:?}");

    // An endpoint added, then the first one removed, then none, then one again: each step is
    // a small transaction and takes effect at once.
    let stats = state
        .apply(&cluster.executor, &model(&[1, 2]))
        .expect("add an endpoint");
    assert_eq!(stats.kind, ApplyKind::Incremental, "{stats:?}");
    let seen = tally(cluster.node(3), &url, 30);
    assert_eq!(seen.len(), 2, "{seen:?}");
    state
        .apply(&cluster.executor, &model(&[2]))
        .expect("remove an endpoint");
    let seen = tally(cluster.node(0), &url, 10);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["node2:8080"], "{seen:?}");
    state
        .apply(&cluster.executor, &model(&[]))
        .expect("no endpoints");
    let error = get(cluster.node(3), &url).expect_err("no endpoints: refused");
    assert!(error.contains("refused"), "{error}");
    let stats = state
        .apply(&cluster.executor, &model(&[1]))
        .expect("an endpoint again");
    assert_eq!(stats.kind, ApplyKind::Incremental, "{stats:?}");
    get(cluster.node(3), &url).expect("service works again");

    // While a client keeps connecting, endpoints come and go: no request fails.
    let stop = AtomicBool::new(false);
    let (requests, failures) = std::thread::scope(|scope| {
        let client = cluster.node(3).clone();
        let (url, stop) = (&url, &stop);
        let worker = scope.spawn(move || {
            let (mut requests, mut failures) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                requests += 1;
                if let Err(e) = get(&client, url) {
                    failures.push(e);
                }
            }
            (requests, failures)
        });
        for round in 0..40 {
            let nodes: &[usize] = if round % 2 == 0 { &[1, 2] } else { &[2] };
            let stats = state
                .apply(&cluster.executor, &model(nodes))
                .expect("incremental apply");
            assert_eq!(stats.kind, ApplyKind::Incremental);
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        worker.join().expect("request loop")
    });
    assert!(requests > 10, "only {requests} requests ran");
    assert!(failures.is_empty(), "{failures:?} of {requests}");
    // Last applied: only node 2.
    let seen = tally(cluster.node(3), &url, 10);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["node2:8080"], "{seen:?}");
}

#[test]
fn incremental_updates_keep_session_affinity_of_the_endpoints_that_stay() {
    let cluster = Cluster::start();
    let service = [web_service(json!({
        "sessionAffinity": "ClientIP",
        "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 600 } },
    }))];
    let model = |nodes: &[usize]| cluster.model(&service, &[cluster.slice(nodes)]);
    let mut state = ProxyState::new();
    let url = format!("http://{CLUSTER_IP}:80/name");
    state
        .apply(&cluster.executor, &model(&[1]))
        .expect("first apply");
    let seen = tally(cluster.node(3), &url, 3);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["node1:8080"], "{seen:?}");
    // A second endpoint arrives: the pinned client stays on node 1.
    let stats = state
        .apply(&cluster.executor, &model(&[1, 2]))
        .expect("add an endpoint");
    assert_eq!(stats.kind, ApplyKind::Incremental);
    let seen = tally(cluster.node(3), &url, 10);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["node1:8080"], "{seen:?}");
    // Its endpoint goes: it moves to node 2.
    state
        .apply(&cluster.executor, &model(&[2]))
        .expect("remove an endpoint");
    let seen = tally(cluster.node(3), &url, 5);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["node2:8080"], "{seen:?}");
}

/// The node's own connections to a cluster IP are masqueraded keeping their source port: the
/// conntrack entry's reply goes back to the port the client's socket bound. (Random ports
/// there collide with the entries of earlier connections at high connection rates.)
#[test]
fn the_nodes_own_connections_keep_their_source_port() {
    let cluster = Cluster::start();
    cluster.apply(&[web_service(json!({}))], &[cluster.slice(&[1, 2])]);
    let node = cluster.node(0);
    for _ in 0..5 {
        let answer = get(node, &format!("http://{CLUSTER_IP}:80/name")).expect("answer");
        assert!(answer.ends_with(":8080"), "{answer}");
    }
    let listing = node
        .command("conntrack")
        .args(["-L", "-p", "tcp"])
        .output()
        .expect("run conntrack");
    let listing = String::from_utf8_lossy(&listing.stdout);
    let entries: Vec<&str> = listing
        .lines()
        .filter(|l| l.contains(&format!("dst={CLUSTER_IP} ")))
        .collect();
    assert_eq!(entries.len(), 5, "{listing}");
    for entry in entries {
        // `sport=CLIENT dport=80` (original), then `sport=8080 dport=CLIENT` (reply).
        let field = |name: &str| -> Vec<&str> {
            entry
                .split_whitespace()
                .filter_map(|f| f.strip_prefix(name))
                .collect()
        };
        let (sports, dports) = (field("sport="), field("dport="));
        assert_eq!(sports.len(), 2, "{entry}");
        assert_eq!(dports, ["80", sports[0]], "source port changed: {entry}");
    }
}
