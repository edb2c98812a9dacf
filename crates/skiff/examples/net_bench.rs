//! The networking benchmark (`bench/net_bench.sh`, part of `make bench`): a real cluster of one
//! server and two agent nodes in network namespaces (the `net_cluster` tests' harness).
//!
//! (a) Rule propagation: 1,000 selector-less Services with an EndpointSlice of 10 (fake)
//!     endpoints each, then 50 single-EndpointSlice changes; for each, the time from the API
//!     write returning (`kubectl patch` exiting) to the change being in the proxy rules of
//!     every node, read from `DATA/agent/proxy-applied` (`RV APPLIED_AT_US KIND NFT_US
//!     COMPUTE_US`, written by the agent after each apply), plus the agents' `nft` and compute
//!     time.
//! (b) HTTP through a ClusterIP against straight to the pod IP: `wrk` from the client node's
//!     namespace against a busybox `httpd` pod on another node, interleaved rounds. The pod
//!     serves the same file on two ports, the Service targets one, the pod-IP rounds use the
//!     other: see `throughput`.
//!
//! Environment: `SKIFF_BIN` (the release binary), `SKIFF_NET_BENCH_SERVICES` (1000),
//! `SKIFF_NET_BENCH_CHANGES` (50), `SKIFF_NET_BENCH_SECONDS` (per wrk round, 5). Needs root,
//! `nft`, `wrk`, kubectl 1.33 and busybox. Everything is removed on exit; the wrapper script
//! also cleans up after an interrupted run.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/net_support/mod.rs"]
mod net_support;

use std::io::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use net_support::{IMAGE, NetCluster};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// `RV APPLIED_AT_US KIND NFT_US COMPUTE_US` of a node's last proxy apply.
#[derive(Debug, Clone)]
struct Applied {
    rv: u64,
    at_us: u128,
    kind: String,
    nft_us: u128,
    compute_us: u128,
}

fn read_applied(dir: &Path) -> Option<Applied> {
    let text = std::fs::read_to_string(dir.join("agent/proxy-applied")).ok()?;
    let mut fields = text.split_whitespace();
    Some(Applied {
        rv: fields.next()?.parse().ok()?,
        at_us: fields.next()?.parse().ok()?,
        kind: fields.next()?.to_string(),
        nft_us: fields.next()?.parse().ok()?,
        compute_us: fields.next().and_then(|f| f.parse().ok()).unwrap_or(0),
    })
}

/// Waits until every node applied `rv` or later; their records.
fn wait_applied(cluster: &NetCluster, rv: u64, deadline: Duration) -> Vec<Applied> {
    let start = Instant::now();
    loop {
        let all: Vec<Option<Applied>> = cluster
            .nodes
            .iter()
            .map(|n| read_applied(n.dir.path()).filter(|a| a.rv >= rv))
            .collect();
        if all.iter().all(Option::is_some) {
            return all.into_iter().flatten().collect();
        }
        assert!(
            start.elapsed() < deadline,
            "resourceVersion {rv} not applied on every node within {deadline:?}: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `kubectl create -f -` of `text` (JSON or YAML); its stdout.
fn create(cluster: &NetCluster, text: &str) -> String {
    let mut child = cluster
        .kubectl()
        .args(["create", "-o", "name", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl create");
    let mut stdin = child.stdin.take().expect("stdin");
    let text = text.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("kubectl create");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "kubectl create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Endpoint `e` of service `i`: 10.42.100.0 onwards (no real pod has these addresses; rules
/// need no live backends).
fn fake_endpoint(i: usize, e: usize) -> String {
    let n = 100 * 256 + i * 10 + e;
    format!("10.42.{}.{}", n / 256, n % 256)
}

/// The address change `round` puts in: 10.42.200.1 onwards.
fn changed_endpoint(round: usize) -> String {
    format!("10.42.{}.{}", 200 + round / 250, round % 250 + 1)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn propagation(cluster: &NetCluster, services: usize, changes: usize) {
    let mut items = Vec::new();
    for i in 0..services {
        let name = format!("svc-{i}");
        items.push(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": name, "namespace": "default" },
            "spec": { "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
        }));
        let endpoints: Vec<serde_json::Value> = (0..10)
            .map(|e| {
                serde_json::json!({
                    "addresses": [fake_endpoint(i, e)],
                    "nodeName": format!("node-{}", e % 3),
                    "conditions": { "ready": true },
                })
            })
            .collect();
        items.push(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{name}-1"), "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": name,
                    "endpointslice.kubernetes.io/managed-by": "net-bench",
                },
            },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            "endpoints": endpoints,
        }));
    }
    let list = serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": items });
    let start = Instant::now();
    create(cluster, &list.to_string());
    let last = format!("svc-{}-1", services - 1);
    let rv: u64 = cluster
        .field(
            &["get", "endpointslice", &last, "-n", "default"],
            "{.metadata.resourceVersion}",
        )
        .trim()
        .parse()
        .expect("resourceVersion");
    wait_applied(cluster, rv, Duration::from_secs(120));
    eprintln!(
        "net_bench: {services} services with 10 endpoints created and applied on every node in {:.1?}",
        start.elapsed()
    );

    let mut latency_ms = Vec::new();
    let mut nft_ms = Vec::new();
    let mut compute_ms = Vec::new();
    let mut kinds = std::collections::BTreeMap::new();
    for round in 0..changes {
        let i = (round * 37) % services;
        let patch = serde_json::json!([{
            "op": "replace",
            "path": "/endpoints/0/addresses/0",
            "value": changed_endpoint(round),
        }]);
        let out = cluster.k(&[
            "patch",
            "endpointslice",
            &format!("svc-{i}-1"),
            "-n",
            "default",
            "--type=json",
            "-p",
            &patch.to_string(),
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ]);
        let returned = now_us();
        let rv: u64 = out.trim().parse().expect("resourceVersion");
        let applied = wait_applied(cluster, rv, Duration::from_secs(10));
        let last = applied.iter().map(|a| a.at_us).max().unwrap_or(returned);
        latency_ms.push(last.saturating_sub(returned) as f64 / 1000.0);
        for a in &applied {
            nft_ms.push(a.nft_us as f64 / 1000.0);
            compute_ms.push(a.compute_us as f64 / 1000.0);
            *kinds.entry(a.kind.clone()).or_insert(0usize) += 1;
        }
    }
    let latency = sorted(latency_ms);
    let nft = sorted(nft_ms);
    let compute = sorted(compute_ms);
    println!(
        "Rule propagation: {services} services x 10 endpoints, 3 nodes, {changes} EndpointSlice changes"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>10}",
        "", "p50 ms", "p99 ms", "target ms"
    );
    println!(
        "{:<44} {:>10.1} {:>10.1} {:>10}",
        "API write -> applied on every node",
        percentile(&latency, 0.5),
        percentile(&latency, 0.99),
        "<= 100"
    );
    println!(
        "{:<44} {:>10.1} {:>10.1} {:>10}",
        "agent nft apply (per node and change)",
        percentile(&nft, 0.5),
        percentile(&nft, 0.99),
        ""
    );
    println!(
        "{:<44} {:>10.1} {:>10.1} {:>10}",
        "agent model + delta (per node and change)",
        percentile(&compute, 0.5),
        percentile(&compute, 0.99),
        ""
    );
    println!("applies by kind: {kinds:?}");
}

/// `wrk` from node 2 against `url`: requests per second and the error count.
fn wrk(cluster: &NetCluster, url: &str, seconds: u64) -> (f64, u64) {
    let out = cluster.on_node(
        2,
        "wrk",
        &["-t2", "-c32", &format!("-d{seconds}s"), "--latency", url],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk {url} failed: {text}");
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let errors = text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
                return rest.trim().parse::<u64>().ok();
            }
            let rest = l.strip_prefix("Socket errors:")?;
            Some(
                rest.split(',')
                    .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                    .sum(),
            )
        })
        .sum();
    (rate, errors)
}

/// The pod serves one file on port 8080 (the pod-IP rounds) and 8081 (the Service's target).
/// One port for both would make the rounds disturb each other, whatever the proxy does: the
/// client's TCP timestamps run from an offset per (source, destination address) pair, so
/// after a pod-IP round the pod's TIME_WAIT sockets (60 s) hold newer timestamps for the same
/// (node address, port, pod address, port) tuples than the ClusterIP round's connections,
/// which dial the cluster IP, carry; the pod drops their SYNs as old duplicates (PAWS) and
/// each waits for a retransmit. Two ports keep the two kinds of tuples apart.
fn throughput(cluster: &NetCluster, seconds: u64) {
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
  labels: {{ app: web }}
spec:
  nodeName: node-1
  containers:
  - name: web
    image: {IMAGE}
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && httpd -p 8081 -h /www && exec httpd -f -p 8080 -h /www"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {{ app: web }}
  ports: [{{ name: http, port: 80, targetPort: 8081 }}]
"#
    ));
    let pod_ip = cluster.wait_running("default", "web");
    let cluster_ip = cluster.field(
        &["get", "service", "web", "-n", "default"],
        "{.spec.clusterIP}",
    );
    let pod_url = format!("http://{pod_ip}:8080/index.html");
    let svc_url = format!("http://{cluster_ip}:80/index.html");
    // The client node has no default route (test namespaces); a real node would send the
    // service range its way before the proxy's DNAT.
    cluster.on_node(
        2,
        "ip",
        &["route", "replace", "10.43.0.0/16", "dev", "eth0"],
    );
    let get = |url: &str| {
        cluster.on_node(
            2,
            "timeout",
            &["3", "busybox", "wget", "-q", "-O", "-", url],
        )
    };
    let start = Instant::now();
    loop {
        let (pod, svc) = (get(&pod_url), get(&svc_url));
        if pod.status.success() && svc.status.success() {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let rules = cluster.on_node(
                2,
                "nft",
                &["list", "chain", "ip", "skiff-proxy", "services"],
            );
            panic!(
                "the web pod does not answer from node 2: pod IP: {pod:?}, ClusterIP: {svc:?}\n\
                 routes: {:?}\nrules: {}",
                cluster.on_node(2, "ip", &["route"]),
                String::from_utf8_lossy(&rules.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Warm-up, then interleaved rounds so drift on a shared machine hits both alike.
    wrk(cluster, &pod_url, 1);
    wrk(cluster, &svc_url, 1);
    let (mut pod, mut svc, mut errors) = (Vec::new(), Vec::new(), 0);
    for _ in 0..3 {
        let (rate, e) = wrk(cluster, &pod_url, seconds);
        pod.push(rate);
        errors += e;
        let (rate, e) = wrk(cluster, &svc_url, seconds);
        svc.push(rate);
        errors += e;
    }
    let (pod, svc) = (sorted(pod), sorted(svc));
    let (pod_median, svc_median) = (percentile(&pod, 0.5), percentile(&svc, 0.5));
    println!(
        "HTTP from node 2 to a busybox httpd pod on node 1 (wrk -t2 -c32, 3 x {seconds} s each, median;\n\
         pod IP to port 8080, ClusterIP to the same pod's port 8081)"
    );
    println!(
        "{:<44} {:>12} {:>12} {:>8}",
        "case (ClusterIP vs pod IP)", "ClusterIP", "pod IP", "ratio"
    );
    println!(
        "{:<44} {:>8.0} r/s {:>8.0} r/s {:>8.2}",
        "requests/s (target ratio >= 0.90)",
        svc_median,
        pod_median,
        svc_median / pod_median
    );
    if errors > 0 {
        println!("({errors} errors or non-2xx responses in all)");
    }
}

fn main() {
    let services = env_or("SKIFF_NET_BENCH_SERVICES", 1000) as usize;
    let changes = env_or("SKIFF_NET_BENCH_CHANGES", 50) as usize;
    let seconds = env_or("SKIFF_NET_BENCH_SECONDS", 5);
    let start = Instant::now();
    let cluster = NetCluster::start(3, "host-gw");
    if let Some(path) = std::env::var_os("SKIFF_NET_BENCH_STATE") {
        let dirs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| n.dir.path().display().to_string())
            .collect();
        let _ = std::fs::write(path, dirs.join("\n") + "\n");
    }
    eprintln!(
        "net_bench: cluster of 3 nodes up in {:.1?}",
        start.elapsed()
    );
    propagation(&cluster, services, changes);
    println!();
    throughput(&cluster, seconds);
}
