//! The scheduler benchmark (`bench/scheduler_bench.sh`, part of `make bench`): scheduler
//! throughput on a simulated cluster. One `skiff server --disable-agent` (the release binary
//! from `SKIFF_BIN`, its own data dir, the SQLite store), 5,000 Node objects (32 CPU, 128Gi,
//! 110 pods, `Ready` through the status subresource) and no agents: nothing runs, pods are only
//! bound.
//!
//! (a) *Live*: 10,000 pods (10m CPU, 16Mi, no `nodeName`) created through the API as fast as it
//!     takes them (64 concurrent creates) while the server's own scheduler binds them; pods
//!     bound per second from the first create to the last pod seen bound (a watch on
//!     `spec.nodeName`), the steady-state rate (10th to 90th percentile of bind times), the API
//!     create rate on its own and the lag from a pod's create to its binding.
//! (b) *Drain*: the scheduler alone, without the API's create rate in the way: 10,000 pods
//!     with `schedulerName: skiff-bench-scheduler` (which the server's scheduler leaves alone)
//!     are created first, then the same scheduler code (`skiff_scheduler::run_with`, built into
//!     this example in release mode) is started in this process under that name, talking to
//!     the server over HTTPS like kube-scheduler; pods bound per second from its start and from
//!     its first binding to its last.
//! (c) *Deployment*: a Deployment of 1,000 replicas (the server's controllers and scheduler);
//!     the time from its create to all 1,000 pods bound.
//!
//! The anchor is kube-scheduler's published CI floor of 680-810 pods/s at 5,000 nodes (ratio =
//! pods/s / 810); the target is >= 5,000 pods/s and 1,000 replicas bound within 5 s.
//!
//! Environment: `SKIFF_BIN` (the binary), `SKIFF_SCHED_BENCH_NODES` (5000),
//! `SKIFF_SCHED_BENCH_PODS` (10000), `SKIFF_SCHED_BENCH_REPLICAS` (1000),
//! `SKIFF_SCHED_BENCH_CONCURRENCY` (64 concurrent API writes). The server and its data dir are
//! removed on exit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bench_support/namespace.rs"]
mod bench_namespace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_testkit::ports::free_port;
use skiff_testkit::process::ChildGuard;
use tokio::sync::mpsc;

/// kube-scheduler's published CI floor at 5,000 nodes: 680-810 pods/s; ratios divide by 810.
const ANCHOR_PODS_PER_S: f64 = 810.0;
/// The target rate.
const TARGET_PODS_PER_S: f64 = 5000.0;
/// The target for the Deployment: all replicas bound within this.
const TARGET_DEPLOYMENT: Duration = Duration::from_secs(5);
/// The scheduler name the drain phase's pods ask for.
const BENCH_SCHEDULER: &str = "skiff-bench-scheduler";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn skiff_bin() -> PathBuf {
    std::env::var_os("SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/release/skiff"))
}

/// The server under test, killed (and its data dir removed) on drop.
struct Server {
    _child: ChildGuard,
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("data dir");
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port().expect("free port");
            let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
            let mut command = Command::new(skiff_bin());
            command
                .args(["server", "--data-dir"])
                .arg(dir.path())
                .args(["--https-port", &port.to_string(), "--disable-agent"])
                // Fake nodes never renew a Lease: keep them Ready for the whole run.
                .args(["--node-monitor-grace-period", "24h"])
                // The nodes' pod CIDRs: a /24 each (the default /16 has 256).
                .args(["--cluster-cidr", "10.64.0.0/10"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log);
            let mut child = ChildGuard::spawn("skiff server", &mut command).expect("spawn");
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) && child.is_running() {
                let kubeconfig = dir.path().join("server/admin.kubeconfig");
                let written = std::fs::read_to_string(&kubeconfig)
                    .is_ok_and(|text| text.contains(&format!(":{port}\n")));
                if written && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Server { _child: child, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(child);
            last_log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
            if !last_log.contains("in use") {
                break;
            }
        }
        panic!("skiff server did not become ready:\n{last_log}");
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn client(&self) -> Client {
        let path = self.dir.path().join("server/admin.kubeconfig");
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("client config");
        Client::try_from(config).expect("client")
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Creates `count` Ready nodes with 32 CPU, 128Gi and 110 pods.
async fn create_nodes(client: &Client, count: usize, concurrency: usize) {
    let api: Api<Node> = Api::all(client.clone());
    futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("node-{i:05}");
                // Each node comes with its pod CIDR (as `--allocate-node-cidrs=false` clusters
                // do): the benchmark measures the scheduler, not node IPAM.
                let cidr = format!("10.{}.{}.0/24", 64 + i / 256, i % 256);
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                    "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                }))
                .unwrap();
                api.create(&PostParams::default(), &node).await?;
                let list = json!({"cpu": "32", "memory": "128Gi", "pods": "110"});
                let status = json!({"status": {
                    "capacity": list, "allocatable": list,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "simulated node", "lastHeartbeatTime": now(),
                        "lastTransitionTime": now()}],
                }});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await
        .expect("node create");
}

fn pod(name: &str, scheduler: Option<&str>) -> Pod {
    let mut spec = json!({
        "containers": [{"name": "c", "image": "busybox", "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"}}}],
    });
    if let Some(scheduler) = scheduler {
        spec["schedulerName"] = json!(scheduler);
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"bench": "pods"}},
        "spec": spec}),
    )
    .unwrap()
}

/// Watches pods in `ns` and reports each pod's name the first time it is seen bound.
fn watch_bound(client: &Client, ns: &str) -> mpsc::UnboundedReceiver<(String, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
        );
        while let Some(event) = stream.next().await {
            let Ok(pod) = event else { continue };
            let bound = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            if bound && tx.send((pod.name_any(), Instant::now())).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits until `count` distinct pods were reported bound; their first bind instants, sorted.
async fn wait_bound(
    rx: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    count: usize,
    deadline: Duration,
    server: &Server,
) -> Vec<Instant> {
    let mut seen: HashMap<String, Instant> = HashMap::with_capacity(count);
    let until = tokio::time::Instant::now() + deadline;
    while seen.len() < count {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some((name, at))) => {
                seen.entry(name).or_insert(at);
            }
            Ok(None) => panic!("the pod watch ended"),
            Err(_) => panic!(
                "only {} of {count} pods bound within {deadline:?}\nserver log tail:\n{}",
                seen.len(),
                server.log_tail()
            ),
        }
    }
    let mut times: Vec<Instant> = seen.into_values().collect();
    times.sort();
    times
}

/// Creates `count` pods in `ns` (concurrently); when each create returned, sorted.
async fn create_pods(
    client: &Client,
    ns: &str,
    count: usize,
    concurrency: usize,
    scheduler: Option<&str>,
) -> Vec<Instant> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut done: Vec<Instant> = futures::stream::iter(0..count)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &pod(&format!("p-{i:05}"), scheduler),
                )
                .await
                .map(|_| Instant::now())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
        .expect("pod create");
    done.sort();
    done
}

fn rate(count: usize, over: Duration) -> f64 {
    count as f64 / over.as_secs_f64().max(1e-9)
}

/// Pods/s between the 10th and the 90th percentile of `sorted` instants.
fn steady_rate(sorted: &[Instant]) -> f64 {
    let lo = sorted.len() / 10;
    let hi = (sorted.len() * 9 / 10).min(sorted.len().saturating_sub(1));
    if hi <= lo {
        return f64::NAN;
    }
    rate(hi - lo, sorted[hi] - sorted[lo])
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() {
    let nodes = env_or("SKIFF_SCHED_BENCH_NODES", 5000);
    let pods = env_or("SKIFF_SCHED_BENCH_PODS", 10000);
    let replicas = env_or("SKIFF_SCHED_BENCH_REPLICAS", 1000);
    let concurrency = env_or("SKIFF_SCHED_BENCH_CONCURRENCY", 64).max(1);
    let deadline = Duration::from_secs(600);

    let server = Server::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(server.client());
    let mut rows: Vec<(String, f64, String)> = Vec::new();
    let line = |key: &str, value: f64, unit: &str| {
        println!("scheduler_bench {key} {value:.3} {unit}");
    };

    rt.block_on(async {
        for ns in ["bench-live", "bench-drain", "bench-deploy"] {
            bench_namespace::create(&client, ns).await;
        }

        // The cluster: nodes as API objects only.
        let start = Instant::now();
        create_nodes(&client, nodes, concurrency).await;
        let took = start.elapsed();
        line("nodes", nodes as f64, "nodes");
        line("node_writes_per_s", rate(2 * nodes, took), "writes/s");
        eprintln!("{nodes} nodes created in {:.1} s", secs(took));

        // (a) Live: creates and the server's scheduler at once.
        let mut bound_rx = watch_bound(&client, "bench-live");
        let start = Instant::now();
        let created = create_pods(&client, "bench-live", pods, concurrency, None).await;
        let bound = wait_bound(&mut bound_rx, pods, deadline, &server).await;
        let create_span = *created.last().unwrap() - start;
        let bind_span = *bound.last().unwrap() - start;
        let overall = rate(pods, bind_span);
        let steady = steady_rate(&bound);
        let create_rate = rate(pods, create_span);
        let tail = bound
            .last()
            .unwrap()
            .saturating_duration_since(*created.last().unwrap());
        line("live_pods", pods as f64, "pods");
        line("live_create_per_s", create_rate, "pods/s");
        line("live_bound_per_s", overall, "pods/s");
        line("live_bound_steady_per_s", steady, "pods/s");
        line("live_create_seconds", secs(create_span), "s");
        line("live_bound_seconds", secs(bind_span), "s");
        line("live_last_bound_after_last_create", secs(tail), "s");
        rows.push(("live: API pod creates".into(), create_rate, "pods/s".into()));
        rows.push((
            "live: bound, first create to last bind".into(),
            overall,
            "pods/s".into(),
        ));
        rows.push((
            "live: bound, steady state (p10-p90)".into(),
            steady,
            "pods/s".into(),
        ));
        drop(bound_rx);

        // (c) Deployment of `replicas` (controllers + the server's scheduler).
        let mut bound_rx = watch_bound(&client, "bench-deploy");
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "bench-deploy");
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "bench"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "bench"}},
                "template": {
                    "metadata": {"labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox",
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
                },
            },
        }))
        .unwrap();
        let start = Instant::now();
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
        let bound = wait_bound(&mut bound_rx, replicas, deadline, &server).await;
        let deploy_time = *bound.last().unwrap() - start;
        let first = *bound.first().unwrap() - start;
        line("deployment_replicas", replicas as f64, "pods");
        line("deployment_first_bound_seconds", secs(first), "s");
        line("deployment_all_bound_seconds", secs(deploy_time), "s");
        drop(bound_rx);

        // (b) Drain: every pod waiting first, then the scheduler alone.
        let start = Instant::now();
        let created = create_pods(
            &client,
            "bench-drain",
            pods,
            concurrency,
            Some(BENCH_SCHEDULER),
        )
        .await;
        let unscheduled_create = rate(pods, *created.last().unwrap() - start);
        let mut bound_rx = watch_bound(&client, "bench-drain");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = skiff_scheduler::SchedulerOptions {
            scheduler_name: BENCH_SCHEDULER.into(),
            ..skiff_scheduler::SchedulerOptions::default()
        };
        let start = Instant::now();
        let scheduler = tokio::spawn(skiff_scheduler::run_with(
            client.clone(),
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        let bound = wait_bound(&mut bound_rx, pods, deadline, &server).await;
        let _ = stop.send(());
        let _ = scheduler.await;
        let from_start = rate(pods, *bound.last().unwrap() - start);
        let first_to_last = rate(pods, *bound.last().unwrap() - *bound.first().unwrap());
        let to_first = *bound.first().unwrap() - start;
        line("drain_create_per_s", unscheduled_create, "pods/s");
        line("drain_first_bound_seconds", secs(to_first), "s");
        line("drain_bound_per_s", from_start, "pods/s");
        line("drain_bound_first_to_last_per_s", first_to_last, "pods/s");
        line("drain_bound_steady_per_s", steady_rate(&bound), "pods/s");
        rows.push((
            "drain: API creates, nothing scheduling".into(),
            unscheduled_create,
            "pods/s".into(),
        ));
        rows.push((
            "drain: bound, scheduler start to last".into(),
            from_start,
            "pods/s".into(),
        ));
        rows.push((
            "drain: bound, first to last bind".into(),
            first_to_last,
            "pods/s".into(),
        ));
        rows.push((
            format!("deployment of {replicas}: all bound"),
            secs(deploy_time),
            "s".into(),
        ));
    });

    println!();
    println!("Scheduler throughput: {nodes} nodes (API objects, no agents), {pods} pods");
    println!(
        "{:<42} {:>10} {:>7} {:>16} {:>8}",
        "case", "value", "unit", "ratio vs anchor", "target"
    );
    for (name, value, unit) in &rows {
        let (ratio, met) = if unit == "s" {
            ("-".to_string(), *value <= TARGET_DEPLOYMENT.as_secs_f64())
        } else {
            (
                format!("{:.2}", value / ANCHOR_PODS_PER_S),
                *value >= TARGET_PODS_PER_S,
            )
        };
        let target = if name.starts_with("live: API") || name.starts_with("drain: API") {
            "-"
        } else if met {
            "met"
        } else {
            "not met"
        };
        println!("{name:<42} {value:>10.1} {unit:>7} {ratio:>16} {target:>8}");
    }
    println!(
        "anchor: kube-scheduler's published CI floor at 5,000 nodes, 680-810 pods/s (ratio = \
         pods/s / 810); target: >= {TARGET_PODS_PER_S:.0} pods/s, {replicas} replicas bound \
         in <= {} s",
        TARGET_DEPLOYMENT.as_secs()
    );
}
