//! A cluster of real nodes on one machine for networking tests: one network namespace per
//! node (the test kit's `TestNetwork`: nodes joined by a bridge in a namespace of the test's
//! own), `skiff server` with its embedded agent in node 0, `skiff agent` in the others, each
//! with its own data root holding the test kit's busybox (loaded, no registry needed). Nothing
//! is added to the host's network namespace: every process runs under `nsenter --net`.
//! On drop the processes are killed and every container of every node is force-removed (also
//! when the test panicked). The nodes log at `RUST_LOG=$SKIFF_NET_LOG` (default `info`), into
//! `node.log` in their data roots.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_testkit::image::ImageSet;
use skiff_testkit::netns::{TestNetwork, TestNode};
use skiff_testkit::process::ChildGuard;

/// Where the versioned kubectl binaries are.
pub const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// The busybox image as pods name it (loaded into every node; pull policy IfNotPresent).
pub const IMAGE: &str = "skiff.test/busybox:latest";

/// The binary under test: `$SKIFF_BIN` if set (the benchmark, an example, has no
/// `CARGO_BIN_EXE_skiff`), else the one Cargo built for the integration test.
fn skiff() -> PathBuf {
    std::env::var_os("SKIFF_BIN")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO_BIN_EXE_skiff").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("skiff"))
}

/// One node: its namespace, data root and process.
pub struct Node {
    /// The node's name (`node-<i>`).
    pub name: String,
    /// Its data root.
    pub dir: tempfile::TempDir,
    child: Option<ChildGuard>,
}

/// A server and agents, each in its own network namespace.
pub struct NetCluster {
    /// The nodes; node 0 runs the server.
    pub nodes: Vec<Node>,
    network: TestNetwork,
    _images: ImageSet,
}

impl NetCluster {
    /// Starts `n` nodes with the given pod network backend (`host-gw` or `vxlan`) and waits
    /// until every node is Ready with a pod CIDR.
    pub fn start(n: usize, backend: &str) -> NetCluster {
        NetCluster::start_with_server_args(n, backend, &[])
    }

    /// Like [`start`](Self::start), with `server_args` added to `skiff server`'s flags.
    pub fn start_with_server_args(n: usize, backend: &str, server_args: &[&str]) -> NetCluster {
        let network = TestNetwork::new(n).unwrap();
        let images = ImageSet::build().unwrap();
        let mut nodes = Vec::new();
        for i in 0..n {
            let dir = tempfile::Builder::new()
                .prefix("skiff-net-")
                .tempdir()
                .unwrap();
            let loaded = run(Command::new(skiff())
                .args(["load", "-i"])
                .arg(&images.busybox.docker_archive)
                .env("SKIFF_DATA_ROOT", dir.path()));
            assert!(loaded.status.success(), "loading busybox: {loaded:?}");
            nodes.push(Node {
                name: format!("node-{i}"),
                dir,
                child: None,
            });
        }
        let mut cluster = NetCluster {
            nodes,
            network,
            _images: images,
        };
        cluster.start_server(backend, server_args);
        for i in 1..n {
            cluster.start_agent(i);
        }
        cluster.wait("every node Ready with a pod CIDR", Duration::from_secs(60), |c| {
            let out = c.field(
                &["get", "nodes"],
                "{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            );
            let ready = out
                .lines()
                .filter(|l| l.ends_with(" True") && l.contains(" 10.42."))
                .count();
            ready == n
        });
        cluster
    }

    /// The test network node `i` lives in.
    pub fn test_node(&self, i: usize) -> &TestNode {
        self.network.node(i)
    }

    /// The address of node `i`.
    pub fn node_ip(&self, i: usize) -> String {
        self.network.node(i).ip().to_string()
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.path().join("node.log")
    }

    fn spawn(&mut self, i: usize, args: &[String]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        let mut command = self.network.node(i).command(skiff());
        command
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("SKIFF_NET_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        self.nodes[i].child = Some(ChildGuard::spawn("skiff", &mut command).unwrap());
    }

    fn start_server(&mut self, backend: &str, extra: &[&str]) {
        let ip = self.node_ip(0);
        let args: Vec<String> = [
            "server",
            "--data-dir",
            &self.nodes[0].dir.path().display().to_string(),
            "--bind-address",
            &ip,
            "--https-port",
            "6443",
            "--agent-port",
            "10250",
            "--node-name",
            "node-0",
            "--network-backend",
            backend,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        self.spawn(0, &args);
        let kubeconfig = self.kubeconfig();
        let start = Instant::now();
        loop {
            let up = kubeconfig.exists()
                && run(self
                    .network
                    .node(0)
                    .command("bash")
                    .args(["-c", &format!(": </dev/tcp/{ip}/6443")]))
                .status
                .success();
            if up {
                return;
            }
            let running = self.nodes[0].child.as_mut().is_some_and(|c| c.is_running());
            assert!(
                running && start.elapsed() < Duration::from_secs(60),
                "skiff server did not come up:\n{}",
                self.log(0)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// (Re)starts the agent of node `i` (i > 0).
    pub fn start_agent(&mut self, i: usize) {
        let server_dir = self.nodes[0].dir.path().join("server");
        let ip = self.node_ip(i);
        let args: Vec<String> = vec![
            "agent".into(),
            "--server".into(),
            format!("https://{}:6443", self.node_ip(0)),
            "--token-file".into(),
            server_dir.join("node-token").display().to_string(),
            "--ca-file".into(),
            server_dir.join("ca.crt").display().to_string(),
            "--node-name".into(),
            self.nodes[i].name.clone(),
            "--data-dir".into(),
            self.nodes[i].dir.path().display().to_string(),
            "--node-ip".into(),
            ip,
            "--port".into(),
            "10250".into(),
        ];
        self.spawn(i, &args);
    }

    /// Kills the process of node `i` (SIGKILL; its containers stay, as on a crash).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill();
        }
    }

    /// The log of node `i`'s process.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.nodes[0].dir.path().join("server/admin.kubeconfig")
    }

    /// kubectl 1.33 in node 0's namespace.
    pub fn kubectl(&self) -> Command {
        let mut command = self
            .network
            .node(0)
            .command(format!("{KUBECTL_DIR}/kubectl.1.33"));
        command
            .env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.nodes[0].dir.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        command
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    pub fn k(&self, args: &[&str]) -> String {
        ok(self.kubectl().args(args))
    }

    /// `kubectl apply -f -` of `manifest`.
    pub fn apply(&self, manifest: &str) -> String {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{manifest}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A JSONPath field (empty when the command fails).
    pub fn field(&self, what: &[&str], path: &str) -> String {
        let out = run(self
            .kubectl()
            .args(what)
            .arg("-o")
            .arg(format!("jsonpath={path}")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `check` holds, failing with the pods and every node's log.
    pub fn wait(&self, what: &str, deadline: Duration, mut check: impl FnMut(&Self) -> bool) {
        let start = Instant::now();
        while !check(self) {
            if start.elapsed() > deadline {
                let pods = run(self.kubectl().args(["get", "pods", "-A", "-o", "wide"]));
                let logs: Vec<String> = (0..self.nodes.len())
                    .map(|i| format!("--- node-{i} log:\n{}", tail(&self.log(i), 60)))
                    .collect();
                panic!(
                    "timed out waiting for {what}\npods:\n{}\n{}",
                    String::from_utf8_lossy(&pods.stdout),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until pod `name` (namespace `ns`) runs with its containers ready; its IP.
    pub fn wait_running(&self, ns: &str, name: &str) -> String {
        self.wait(
            &format!("pod {ns}/{name} Ready"),
            Duration::from_secs(90),
            |c| {
                c.field(
                    &["get", "pod", name, "-n", ns],
                    "{.status.conditions[?(@.type==\"Ready\")].status}",
                ) == "True"
            },
        );
        self.field(&["get", "pod", name, "-n", ns], "{.status.podIP}")
    }

    /// The node index a pod runs on.
    pub fn node_of(&self, ns: &str, pod: &str) -> usize {
        let node = self.field(&["get", "pod", pod, "-n", ns], "{.spec.nodeName}");
        self.nodes
            .iter()
            .position(|n| n.name == node)
            .unwrap_or_else(|| panic!("pod {ns}/{pod} is on unknown node {node:?}"))
    }

    /// Runs `cmd` inside container `container` of pod `ns/pod` (through the engine of the
    /// pod's node, `skiff exec`); the output, whatever the exit status.
    pub fn exec(&self, ns: &str, pod: &str, container: &str, cmd: &[&str]) -> Output {
        let node = self.node_of(ns, pod);
        let uid = self.field(&["get", "pod", pod, "-n", ns], "{.metadata.uid}");
        let restarts = self.field(
            &["get", "pod", pod, "-n", ns],
            &format!("{{.status.containerStatuses[?(@.name==\"{container}\")].restartCount}}"),
        );
        let name = format!(
            "k8s_{container}_{pod}_{ns}_{uid}_{}",
            restarts.trim().parse::<u32>().unwrap_or(0)
        );
        run(Command::new(skiff())
            .args(["exec", "--data-root"])
            .arg(self.nodes[node].dir.path())
            .arg(&name)
            .args(cmd))
    }

    /// Like [`exec`](Self::exec), the command must succeed; its stdout.
    pub fn exec_ok(&self, ns: &str, pod: &str, container: &str, cmd: &[&str]) -> String {
        let out = self.exec(ns, pod, container, cmd);
        assert!(
            out.status.success(),
            "{cmd:?} in {ns}/{pod} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command in node `i`'s network namespace.
    pub fn on_node(&self, i: usize, program: &str, args: &[&str]) -> Output {
        run(self.network.node(i).command(program).args(args))
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
        for node in &self.nodes {
            remove_containers(node.dir.path());
        }
        if std::env::var_os("SKIFF_KEEP_TEST_DIR").is_some() {
            for node in &mut self.nodes {
                let dir = std::mem::replace(&mut node.dir, tempfile::tempdir().unwrap());
                let _ = dir.keep();
            }
        }
    }
}

/// Force-removes every container of the engine at `root`.
fn remove_containers(root: &Path) {
    let ids = run(Command::new(skiff())
        .args(["ps", "-aq", "--no-trunc", "--data-root"])
        .arg(root));
    let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if !ids.is_empty() {
        let _ = run(Command::new(skiff())
            .args(["rm", "-f", "--data-root"])
            .arg(root)
            .args(&ids));
    }
    // The containers' /proc server of this data root, and its mount.
    let _ = skiff_procfs::stop(root, std::time::Duration::from_secs(10));
}

/// Runs a command; its output.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Runs a command that must succeed; its stdout.
pub fn ok(command: &mut Command) -> String {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
