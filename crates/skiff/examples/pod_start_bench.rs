//! The pod start benchmark (`bench/pod_start_bench.sh`, part of `make bench`): pod start
//! latency on one node with the image present, against `podman kube play` of the same
//! manifest.
//!
//! Skiff runs as the `net_cluster` tests' harness (`crates/skiff/tests/net_support/mod.rs`)
//! builds it: `skiff server` in one network namespace and one `skiff agent` node in another,
//! each with the test kit's busybox loaded, with the real pod network (an address per pod on
//! the node bridge) and nothing added to the host's network. Every pod goes to the agent node
//! (`nodeSelector`, through the scheduler), so that node's agent is a process of its own
//! whose memory can be read.
//!
//! (a) One at a time: N pods (`sleep 3600`), each timed from the create call to phase Running
//!     seen through a watch opened before the first create; p50/p99. The pods stay (as in a
//!     density test) and are deleted after the round.
//! (b) At once: N pods created concurrently; the time until the watch has seen all Running.
//! (c) The agent's idle RSS (`VmRSS` of `/proc/PID/status`) once every pod and container is
//!     gone, and its peak (`VmHWM`).
//!
//! The peer: `podman kube play --network none` of the same manifest (JSON is YAML), podman
//! with a storage root, run root and temp dir of its own (vfs, runc, cgroupfs), the same
//! busybox loaded from the test kit's docker archive. One at a time: the command's wall time
//! (it returns once the pod's containers are started; the container is then checked to be
//! running). At once: one multi-document manifest of N pods, until all are running. Podman
//! 4.3 without catatonit has no infra image of its own: its infra image is the same busybox
//! with `/pause` (`exec sleep`) as the command. `--network none` because a podman network
//! keeps netavark's state under the host's `/run/containers/networks`, and its kube network
//! starts aardvark-dns; Skiff's pods get a real address, so the comparison favours podman.
//!
//! Environment: `SKIFF_BIN` (the release binary), `SKIFF_POD_BENCH_PODS` (100),
//! `SKIFF_POD_BENCH_TRACE` (print each pod's create time), `SKIFF_POD_BENCH_LOG` (a file to
//! copy the agent node's log to),
//! `SKIFF_POD_BENCH_PEER` (`podman`; `none` skips it). Needs root, podman, runc, kubectl 1.33
//! and busybox. Everything is removed on exit (also on panic); the wrapper script also
//! cleans up after an interrupted run.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

#[path = "../tests/net_support/mod.rs"]
mod net_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use net_support::{IMAGE, NetCluster};
use skiff_testkit::image::ImageSet;

/// The label every benchmark pod carries.
const LABEL: &str = "bench=pod-start";
/// The node the pods run on (the separate agent).
const NODE: &str = "node-1";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The pod both sides start: busybox `sleep 3600`, image present.
fn manifest(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default", "labels": { "bench": "pod-start" } },
        "spec": {
            "nodeSelector": { "kubernetes.io/hostname": NODE },
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "sleep",
                "image": IMAGE,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"],
            }],
        },
    })
}

/// One side's figures.
#[derive(Debug, Default)]
struct Figures {
    /// Create to Running of each pod started one at a time, in ms, sorted.
    one_at_a_time: Vec<f64>,
    /// Creating N pods at once until all run.
    all_at_once: Duration,
    /// Create to Running of each pod of the burst, in ms, sorted.
    burst_each: Vec<f64>,
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Where a process's memory is (`RssAnon`: heap and stacks; `RssFile`: the binary's pages),
/// its threads and its open sockets, for the log.
fn memory_breakdown(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map_or_else(String::new, |v| v.trim().to_string())
    };
    let sockets = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |fds| {
        fds.flatten()
            .filter(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            })
            .count()
    });
    format!(
        "VmRSS {}, RssAnon {}, RssFile {}, threads {}, sockets {sockets}; anonymous memory: {}",
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("Threads:"),
        anonymous_mappings(pid)
    )
}

/// The process's anonymous memory by mapping (`/proc/PID/smaps`): the brk heap, the main
/// stack, and the other anonymous mappings (thread stacks, a malloc arena's heaps, large
/// allocations) largest first, each as "size KiB: resident KiB".
fn anonymous_mappings(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut mappings: Vec<(String, u64, u64)> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let name = line.split_whitespace().nth(5).unwrap_or("anon").to_string();
            mappings.push((name, 0, 0));
        } else if let Some(last) = mappings.last_mut() {
            let value = words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match first {
                "Size:" => last.1 = value,
                "Anonymous:" => last.2 = value,
                _ => {}
            }
        }
    }
    mappings.retain(|m| m.2 > 0);
    mappings.sort_by_key(|m| std::cmp::Reverse(m.2));
    mappings
        .iter()
        .take(8)
        .map(|(name, size, anon)| format!("{name} {size}K:{anon}K"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The process `skiff VERB ... DIR ...` (the node process of the data root `dir`).
fn find_pid(verb: &str, dir: &Path) -> u32 {
    let dir = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.get(1).map(String::as_str) == Some(verb) && args.contains(&dir) {
            return pid;
        }
    }
    panic!("no `skiff {verb}` process over {dir}");
}

// ---------------------------------------------------------------------------------------------
// Skiff

/// First time each pod was seen Running through the watch.
#[derive(Default)]
struct Seen {
    running: Mutex<HashMap<String, Instant>>,
    synced: AtomicBool,
}

impl Seen {
    fn at(&self, name: &str) -> Option<Instant> {
        self.running.lock().unwrap().get(name).copied()
    }

    fn count(&self, prefix: &str) -> usize {
        self.running
            .lock()
            .unwrap()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count()
    }
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

async fn watch(api: Api<Pod>, seen: Arc<Seen>) {
    let stream = watcher(api, watcher::Config::default().labels(LABEL));
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let now = Instant::now();
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                if is_running(&pod) {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    seen.running.lock().unwrap().entry(name).or_insert(now);
                }
            }
            Ok(watcher::Event::InitDone) => seen.synced.store(true, Ordering::SeqCst),
            Ok(_) => {}
            Err(error) => eprintln!("pod_start_bench: watch error: {error}"),
        }
    }
}

/// Waits until `check` holds, polling every few ms (the watch task stamps the times).
async fn until(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(manifest(name)).expect("the manifest is a Pod")
}

/// Deletes every benchmark pod and waits until they and their containers are gone.
async fn delete_all(api: &Api<Pod>, node_dir: &Path) {
    let pods = api
        .list(&ListParams::default().labels(LABEL))
        .await
        .expect("list pods");
    let deletes = pods.items.iter().map(|p| {
        let name = p.metadata.name.clone().unwrap_or_default();
        async move {
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
    });
    futures::future::join_all(deletes).await;
    let start = Instant::now();
    loop {
        let left = api
            .list(&ListParams::default().labels(LABEL))
            .await
            .map(|l| l.items.len())
            .unwrap_or(usize::MAX);
        let containers = net_support::run(
            Command::new(skiff_bin())
                .args(["ps", "-aq", "--data-root"])
                .arg(node_dir),
        );
        if left == 0 && containers.status.success() && containers.stdout.trim_ascii().is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "pods not gone within 180 s: {left} pods left, containers: {}",
            String::from_utf8_lossy(&containers.stdout)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn skiff_bin() -> PathBuf {
    std::env::var_os("SKIFF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("skiff"))
}

async fn skiff_rounds(kubeconfig: PathBuf, node_dir: PathBuf, pods: usize, agent: u32) -> Figures {
    let config = kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .expect("client config");
    let client = kube::Client::try_from(config).expect("client");
    let api: Api<Pod> = Api::namespaced(client, "default");
    let seen = Arc::new(Seen::default());
    let watcher = tokio::spawn(watch(api.clone(), seen.clone()));
    until("the pod watch", Duration::from_secs(30), || {
        seen.synced.load(Ordering::SeqCst)
    })
    .await;
    let mut figures = Figures::default();

    // (a) one at a time
    let trace = std::env::var_os("SKIFF_POD_BENCH_TRACE").is_some();
    let mut latencies = Vec::new();
    for i in 0..pods {
        let name = format!("seq-{i}");
        let manifest = pod(&name);
        let created_at = std::time::SystemTime::now();
        let start = Instant::now();
        api.create(&PostParams::default(), &manifest)
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        until(
            &format!("pod {name} Running"),
            Duration::from_secs(60),
            || seen.at(&name).is_some(),
        )
        .await;
        let running = seen.at(&name).unwrap_or_else(Instant::now);
        latencies.push(ms(running.duration_since(start)));
        if trace {
            // For lining up with the agent's log (`SKIFF_POD_BENCH_LOG`).
            eprintln!(
                "pod_start_bench trace {name} created_at_unix_us={} running_after_ms={:.1}",
                created_at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros()),
                ms(running.duration_since(start))
            );
        }
    }
    figures.one_at_a_time = sorted(latencies);
    eprintln!(
        "pod_start_bench: skiff one at a time done (agent RSS with {pods} pods: {} KiB); deleting",
        rss_kib(agent).0
    );
    delete_all(&api, &node_dir).await;

    // (b) all at once
    let manifests: Vec<(String, Pod)> = (0..pods)
        .map(|i| {
            let name = format!("burst-{i}");
            let manifest = pod(&name);
            (name, manifest)
        })
        .collect();
    let start = Instant::now();
    let creates = manifests.iter().map(|(name, manifest)| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), manifest)
                .await
                .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        }
    });
    futures::future::join_all(creates).await;
    let created = start.elapsed();
    until(
        &format!("{pods} pods Running"),
        Duration::from_secs(120),
        || seen.count("burst-") == pods,
    )
    .await;
    let each: Vec<f64> = manifests
        .iter()
        .filter_map(|(name, _)| seen.at(name))
        .map(|t| ms(t.duration_since(start)))
        .collect();
    figures.all_at_once =
        Duration::from_secs_f64(each.iter().copied().fold(0.0, f64::max) / 1000.0);
    figures.burst_each = sorted(each);
    eprintln!(
        "pod_start_bench: skiff created {pods} pods at once in {created:.1?}, all Running after {:.1?}; deleting",
        figures.all_at_once
    );
    delete_all(&api, &node_dir).await;
    watcher.abort();
    figures
}

/// Runs `f` on a thread inside the network namespace at `netns` (the API server is only
/// reachable there); the namespace change stays on that thread.
fn in_netns<T: Send>(netns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let ns = std::fs::File::open(netns).expect("open the netns");
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("the benchmark thread panicked")
    })
}

struct SkiffResult {
    figures: Figures,
    agent_rss_before: (u64, u64),
    agent_rss_idle: (u64, u64),
    server_rss_idle: u64,
}

fn skiff_side(pods: usize) -> SkiffResult {
    let start = Instant::now();
    let cluster = NetCluster::start(2, "host-gw");
    if let Some(path) = std::env::var_os("SKIFF_POD_BENCH_STATE") {
        let dirs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| n.dir.path().display().to_string())
            .collect();
        let _ = std::fs::write(path, dirs.join("\n") + "\n");
    }
    eprintln!(
        "pod_start_bench: server and agent node up in {:.1?}",
        start.elapsed()
    );
    let agent = find_pid("agent", cluster.nodes[1].dir.path());
    let server = find_pid("server", cluster.nodes[0].dir.path());
    // Idle: the node registered and Ready, nothing scheduled yet (a fixed settle time is the
    // definition of idle here, not a synchronisation).
    std::thread::sleep(Duration::from_secs(3));
    let agent_rss_before = rss_kib(agent);
    eprintln!(
        "pod_start_bench: agent before any pod: {}",
        memory_breakdown(agent)
    );
    let kubeconfig = cluster.kubeconfig();
    let node_dir = cluster.nodes[1].dir.path().to_path_buf();
    let netns = cluster.test_node(0).netns_path();
    let figures = in_netns(&netns, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on(skiff_rounds(kubeconfig, node_dir, pods, agent))
    });
    // Idle again: longer than the agent's period for handing free memory back.
    std::thread::sleep(skiff_agent::RELEASE_MEMORY_PERIOD + Duration::from_secs(2));
    let agent_rss_idle = rss_kib(agent);
    eprintln!(
        "pod_start_bench: agent idle after the pods: {}",
        memory_breakdown(agent)
    );
    let server_rss_idle = rss_kib(server).0;
    if std::env::var_os("SKIFF_POD_BENCH_LOG").is_some() {
        let _ = std::fs::write(
            std::env::var_os("SKIFF_POD_BENCH_LOG").unwrap_or_default(),
            cluster.log(1),
        );
    }
    SkiffResult {
        figures,
        agent_rss_before,
        agent_rss_idle,
        server_rss_idle,
    }
}

// ---------------------------------------------------------------------------------------------
// podman

/// podman over a storage root, run root and temp dir of its own; every pod and image is
/// removed on drop.
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new(images: &ImageSet) -> Podman {
        // Directly under /tmp: podman refuses a run root longer than 50 characters. The
        // wrapper script learns the path from `SKIFF_POD_BENCH_STATE.podman` to sweep it.
        let dir = tempfile::Builder::new()
            .prefix("spb-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        if let Some(state) = std::env::var_os("SKIFF_POD_BENCH_STATE") {
            let mut path = state;
            path.push(".podman");
            let _ = std::fs::write(path, format!("{}\n", dir.path().display()));
        }
        let podman = Podman { dir };
        let d = podman.dir.path();
        std::fs::write(
            d.join("containers.conf"),
            "[containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\n\
             infra_image = \"localhost/skiff-bench/pause:latest\"\n",
        )
        .expect("containers.conf");
        // The infra image: busybox with /pause.
        let rootfs = d.join("pause-rootfs");
        for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(rootfs.join(sub)).expect("rootfs");
        }
        let busybox = skiff_testkit::image::require_static_busybox().expect("static busybox");
        std::fs::copy(&busybox, rootfs.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "sleep"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                .expect("symlink");
        }
        std::fs::write(rootfs.join("pause"), "#!/bin/sh\nexec sleep 2147483647\n").expect("pause");
        net_support::ok(Command::new("chmod").arg("755").arg(rootfs.join("pause")));
        let tar = d.join("pause.tar");
        net_support::ok(
            Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
        );
        net_support::ok(
            podman
                .cmd()
                .args(["import", "-q", "--change", "CMD [\"/pause\"]"])
                .arg(&tar)
                .arg("localhost/skiff-bench/pause:latest"),
        );
        net_support::ok(
            podman
                .cmd()
                .args(["load", "-q", "-i"])
                .arg(&images.busybox.docker_archive),
        );
        podman
    }

    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut command = Command::new("podman");
        command
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .arg("--network-config-dir")
            .arg(d.join("networks"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
                "--runtime",
                "runc",
            ])
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .stdin(Stdio::null());
        command
    }

    /// `podman kube play --network none FILE`, which must succeed.
    fn play(&self, file: &Path) {
        let out = net_support::run(
            self.cmd()
                .args(["kube", "play", "--network", "none"])
                .arg(file),
        );
        assert!(
            out.status.success(),
            "podman kube play {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Names of the running containers.
    fn running(&self) -> Vec<String> {
        let out = net_support::run(self.cmd().args([
            "ps",
            "--filter",
            "status=running",
            "--format",
            "{{.Names}}",
        ]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn remove_pods(&self) {
        let _ = net_support::run(self.cmd().args(["pod", "rm", "-f", "-a", "-t", "0"]));
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.remove_pods();
        let _ = net_support::run(self.cmd().args(["rm", "-f", "-a", "-t", "0"]));
        let _ = net_support::run(self.cmd().args(["rmi", "-f", "-a"]));
        let d = self.dir.path().display().to_string();
        let mounts = net_support::run(Command::new("findmnt").args(["-rn", "-o", "TARGET"]));
        let mut under: Vec<String> = String::from_utf8_lossy(&mounts.stdout)
            .lines()
            .filter(|m| m.starts_with(&d))
            .map(str::to_string)
            .collect();
        under.sort_by(|a, b| b.cmp(a));
        for m in under {
            let _ = net_support::run(Command::new("umount").args(["-l", &m]));
        }
    }
}

fn podman_side(pods: usize) -> Figures {
    let images = ImageSet::build().expect("test images");
    let podman = Podman::new(&images);
    let dir = podman.dir.path().to_path_buf();
    let write = |name: &str, docs: &[serde_json::Value]| {
        let text: Vec<String> = docs.iter().map(|d| d.to_string()).collect();
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text.join("\n---\n") + "\n").expect("manifest");
        path
    };
    let mut figures = Figures::default();

    // A warm-up pod (the first run creates podman's database and the infra container's
    // layers), as Skiff's node has been up for a while before its first pod.
    let warm = write("warm", &[manifest("warm-0")]);
    podman.play(&warm);
    podman.remove_pods();

    // (a) one at a time
    let mut latencies = Vec::new();
    for i in 0..pods {
        let name = format!("seq-{i}");
        let file = write(&name, &[manifest(&name)]);
        let container = format!("{name}-sleep");
        let start = Instant::now();
        podman.play(&file);
        let mut done = Instant::now();
        loop {
            let state = net_support::run(podman.cmd().args([
                "container",
                "inspect",
                "--format",
                "{{.State.Running}}",
                &container,
            ]));
            if String::from_utf8_lossy(&state.stdout).trim() == "true" {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "podman container {container} not running: {}",
                String::from_utf8_lossy(&state.stderr)
            );
            std::thread::sleep(Duration::from_millis(2));
            done = Instant::now();
        }
        latencies.push(ms(done.duration_since(start)));
    }
    figures.one_at_a_time = sorted(latencies);
    podman.remove_pods();

    // (b) all at once: one multi-document manifest
    let docs: Vec<serde_json::Value> = (0..pods).map(|i| manifest(&format!("burst-{i}"))).collect();
    let file = write("burst", &docs);
    let start = Instant::now();
    podman.play(&file);
    loop {
        let running = podman
            .running()
            .iter()
            .filter(|n| n.starts_with("burst-") && n.ends_with("-sleep"))
            .count();
        if running == pods {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "only {running} of {pods} podman pods running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    figures.all_at_once = start.elapsed();
    podman.remove_pods();
    figures
}

// ---------------------------------------------------------------------------------------------

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "n/a".into()
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

fn main() {
    let pods = env_or("SKIFF_POD_BENCH_PODS", 100) as usize;
    let peer = std::env::var("SKIFF_POD_BENCH_PEER").unwrap_or_else(|_| "podman".into());
    let skiff = skiff_side(pods);
    let podman = (peer == "podman").then(|| podman_side(pods));
    let s = &skiff.figures;
    let p = podman.as_ref();
    let nan = f64::NAN;

    println!(
        "Pod start on one node, {pods} pods (busybox `sleep 3600`, image present): skiff (real pod network) vs podman kube play (--network none)"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>8} {:>14}",
        "", "skiff", "podman", "ratio", "target"
    );
    let row = |name: &str, a: f64, b: f64, target: &str| {
        println!(
            "{:<44} {:>10.1} {:>10.1} {:>8} {:>14}",
            name,
            a,
            b,
            ratio(a, b),
            target
        );
    };
    let s50 = percentile(&s.one_at_a_time, 0.5);
    let s99 = percentile(&s.one_at_a_time, 0.99);
    let sall = ms(s.all_at_once);
    row(
        "one at a time: create -> Running p50 ms",
        s50,
        p.map_or(nan, |p| percentile(&p.one_at_a_time, 0.5)),
        "",
    );
    row(
        "one at a time: create -> Running p99 ms",
        s99,
        p.map_or(nan, |p| percentile(&p.one_at_a_time, 0.99)),
        "<= 150",
    );
    row(
        "one at a time: max ms",
        s.one_at_a_time.last().copied().unwrap_or(nan),
        p.and_then(|p| p.one_at_a_time.last().copied())
            .unwrap_or(nan),
        "",
    );
    row(
        &format!("{pods} at once: all Running ms"),
        sall,
        p.map_or(nan, |p| ms(p.all_at_once)),
        "<= 5000",
    );
    row(
        &format!("{pods} at once: each pod's Running p50 ms"),
        percentile(&s.burst_each, 0.5),
        nan,
        "",
    );
    let idle_mib = skiff.agent_rss_idle.0 as f64 / 1024.0;
    println!(
        "{:<44} {:>10.1} {:>10} {:>8} {:>14}",
        "agent idle RSS MiB (after the pods)", idle_mib, "-", "-", "<= 20"
    );
    println!(
        "agent RSS before any pod {:.1} MiB, peak (VmHWM) {:.1} MiB; server (API server, controllers, scheduler, node-0 agent) idle {:.1} MiB",
        skiff.agent_rss_before.0 as f64 / 1024.0,
        skiff.agent_rss_idle.1 as f64 / 1024.0,
        skiff.server_rss_idle as f64 / 1024.0
    );
    println!(
        "targets: p99 <= 150 ms {}; {pods} at once within 5 s {}; agent idle RSS <= 20 MiB {}",
        verdict(s99 <= 150.0),
        verdict(sall <= 5000.0),
        verdict(idle_mib <= 20.0)
    );
}
