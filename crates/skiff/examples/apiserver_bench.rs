//! The API server's watch and list figures for `bench/apiserver_bench.py` (part of `make
//! bench`), against a server the script started (`skiff server --disable-agent`, its admin
//! kubeconfig given as the only argument):
//!
//! (a) *Watch fan-out*: 1,000 watchers of ConfigMaps in one namespace, each its own watch
//!     request (and connection, as 1,000 separate clients would have); then ConfigMaps are
//!     created one at a time, each once every watcher has seen the previous one, and each
//!     delivery is timed from the create request being sent to the watcher receiving the
//!     event: p50/p99/max over every (event, watcher) pair.
//! (b) *List*: 10,000 pods created in one namespace (64 concurrent creates; they name a
//!     scheduler that does not exist, so nothing else writes to them), then a full list of
//!     the namespace's pods as JSON, timed from the request to the last byte, median of 5.
//!
//! Lines starting `apiserver_bench ` are machine-readable (`KEY VALUE UNIT`).
//! Environment: `SKIFF_API_BENCH_WATCHERS` (1000), `SKIFF_API_BENCH_EVENTS` (50),
//! `SKIFF_API_BENCH_PODS` (10000). Everything it creates lives in the server's data dir, which
//! the script removes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bench_support/namespace.rs"]
mod bench_namespace;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn client(kubeconfig: &PathBuf) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    Client::try_from(config).expect("client")
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Starts `watchers` watches of ConfigMaps in `ns` from `from`; each reports every ConfigMap
/// name it sees added, with the instant it arrived.
async fn start_watchers(
    kubeconfig: &PathBuf,
    ns: &str,
    from: &str,
    watchers: usize,
) -> mpsc::UnboundedReceiver<(String, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    for _ in 0..watchers {
        // One client each: its own connection, as separate watching processes would have.
        let api: Api<ConfigMap> = Api::namespaced(client(kubeconfig).await, ns);
        let tx = tx.clone();
        let from = from.to_string();
        tokio::spawn(async move {
            let params = WatchParams::default().timeout(290);
            let mut stream = api.watch(&params, &from).await.expect("watch").boxed();
            while let Some(event) = stream.try_next().await.expect("watch stream") {
                if let WatchEvent::Added(cm) = event
                    && tx.send((cm.name_any(), Instant::now())).is_err()
                {
                    return;
                }
            }
        });
    }
    rx
}

/// Waits until every watcher reported `name`; returns the arrival instants.
async fn arrivals(
    rx: &mut mpsc::UnboundedReceiver<(String, Instant)>,
    name: &str,
    watchers: usize,
) -> Vec<Instant> {
    let mut seen = Vec::with_capacity(watchers);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < watchers {
        let (got, at) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {watchers} watchers saw {name}", seen.len()))
            .expect("watchers ended");
        assert_eq!(got, name, "events arrive in order, one ConfigMap at a time");
        seen.push(at);
    }
    seen
}

async fn fan_out(kubeconfig: &PathBuf, client: &Client, watchers: usize, events: usize) {
    bench_namespace::create(client, "bench-watch").await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "bench-watch");
    let cm = |name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
    };
    let from = api
        .list_metadata(&Default::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut rx = start_watchers(kubeconfig, "bench-watch", &from, watchers).await;
    // Every watch is established once each has delivered this first ConfigMap.
    api.create(&PostParams::default(), &cm("warm-up"))
        .await
        .unwrap();
    arrivals(&mut rx, "warm-up", watchers).await;
    let mut latencies = Vec::with_capacity(events * watchers);
    for i in 0..events {
        let name = format!("event-{i:04}");
        let sent = Instant::now();
        api.create(&PostParams::default(), &cm(&name))
            .await
            .unwrap();
        latencies.extend(
            arrivals(&mut rx, &name, watchers)
                .await
                .into_iter()
                .map(|at| at - sent),
        );
    }
    latencies.sort();
    let p50 = millis(percentile(&latencies, 0.50));
    let p99 = millis(percentile(&latencies, 0.99));
    let max = millis(latencies[latencies.len() - 1]);
    println!(
        "Watch fan-out: {watchers} watchers x {events} events: delivery p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (from the create request being sent)"
    );
    println!("apiserver_bench watchers {watchers} count");
    println!("apiserver_bench fanout_p50 {p50:.2} ms");
    println!("apiserver_bench fanout_p99 {p99:.2} ms");
}

async fn list(client: &Client, pods: usize) {
    bench_namespace::create(client, "bench-list").await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "bench-list");
    let created = Instant::now();
    futures::stream::iter(0..pods)
        .map(|i| {
            let api = api.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("pod-{i:05}"), "labels": {"app": "bench"}},
                    "spec": {"schedulerName": "skiff-bench-nobody", "containers": [{
                        "name": "c", "image": "busybox", "command": ["sleep", "3600"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]},
                }))
                .unwrap();
                api.create(&PostParams::default(), &pod).await.map(|_| ())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await
        .expect("pod create");
    let create_s = created.elapsed().as_secs_f64();
    let request = || {
        http::Request::get("/api/v1/namespaces/bench-list/pods")
            .body(Vec::new())
            .unwrap()
    };
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let body = client.request_text(request()).await.expect("list");
        times.push(start.elapsed());
        bytes = body.len();
        let items = serde_json::from_str::<serde_json::Value>(&body).unwrap()["items"]
            .as_array()
            .map_or(0, Vec::len);
        assert_eq!(items, pods, "the list holds every pod");
    }
    times.sort();
    let median = millis(times[times.len() / 2]);
    println!(
        "List of {pods} pods: median {median:.0} ms for {:.1} MiB of JSON (the pods were created at {:.0}/s from 64 clients)",
        bytes as f64 / (1024.0 * 1024.0),
        pods as f64 / create_s
    );
    println!("apiserver_bench list_pods {pods} count");
    println!("apiserver_bench list_ms {median:.1} ms");
}

fn main() {
    let kubeconfig = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: apiserver_bench ADMIN_KUBECONFIG"),
    );
    let watchers = env_or("SKIFF_API_BENCH_WATCHERS", 1000);
    let events = env_or("SKIFF_API_BENCH_EVENTS", 50);
    let pods = env_or("SKIFF_API_BENCH_PODS", 10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = client(&kubeconfig).await;
        fan_out(&kubeconfig, &client, watchers, events).await;
        list(&client, pods).await;
    });
}
