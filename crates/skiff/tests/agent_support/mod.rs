//! A `skiff server` with its embedded node agent and a loopback registry holding the test
//! kit's busybox, for end-to-end pod tests. On drop the server is killed and every container
//! the agent made is force-removed through `skiff rm -f` (processes, mounts, cgroups), and
//! so are the pod cgroups of the pods it still listed, also when the test panicked.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use skiff_testkit::image::ImageSet;
use skiff_testkit::ports::free_port;
use skiff_testkit::process::ChildGuard;
use skiff_testkit::registry::{Registry, RegistryAuth};

#[path = "../server_support/mod.rs"]
pub mod server_support;
pub use server_support::{KUBECTL_DIR, ok, run};

pub fn skiff() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skiff"))
}

/// A server with its agent.
pub struct Cluster {
    child: Option<ChildGuard>,
    /// The data directory.
    pub dir: Option<tempfile::TempDir>,
    /// The API port.
    pub port: u16,
    /// The busybox image as pods name it.
    pub image: String,
    _registry: Registry,
    _images: ImageSet,
}

impl Cluster {
    /// Starts a registry and a server with its agent; waits until the node is Ready.
    pub fn start() -> Cluster {
        let images = ImageSet::build().unwrap();
        let registry = Registry::with_fixtures(RegistryAuth::Open, &images).unwrap();
        let image = format!("127.0.0.1:{}/busybox:latest", registry.port());
        let dir = tempfile::Builder::new()
            .prefix("skiff-agent-")
            .tempdir()
            .unwrap();
        let mut cluster = Cluster {
            child: None,
            dir: Some(dir),
            port: 0,
            image,
            _registry: registry,
            _images: images,
        };
        cluster.boot();
        cluster
    }

    /// The data directory's path.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// (Re)starts the server process over the data directory.
    pub fn boot(&mut self) {
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = free_port().unwrap();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path().join("server.log"))
                .unwrap();
            let mut command = Command::new(skiff());
            command
                .args(["server", "--data-dir"])
                .arg(self.path())
                .args(["--https-port", &port.to_string()])
                .args(["--agent-port", "0", "--node-name", "node-1"])
                // Loopback-only pods: these tests run in the host's network namespace, which
                // they must not change (the networking tests run nodes in namespaces of
                // their own).
                .args(["--pod-network", "none"])
                // The agent's sweep for what pods that are gone left behind, often enough for
                // a test to see it (and to catch a sweep that took what a live pod owns).
                .args(["--orphan-sweep-interval", "2s"])
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log);
            let mut child = ChildGuard::spawn("skiff server", &mut command).unwrap();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(60) && child.is_running() {
                let kubeconfig = self.path().join("server/admin.kubeconfig");
                let written = std::fs::read_to_string(&kubeconfig)
                    .is_ok_and(|t| t.contains(&format!(":{port}\n")));
                if written && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    self.port = port;
                    self.child = Some(child);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(child);
            last_log = self.log();
            if !last_log.contains("in use") {
                panic!("skiff server did not become ready:\n{last_log}");
            }
        }
        panic!("skiff server found no free port:\n{last_log}");
    }

    /// Kills the server (SIGKILL): the containers stay, as they would on a crash.
    pub fn kill_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("server.log")).unwrap_or_default()
    }

    /// kubectl 1.33 against the server.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(format!("{KUBECTL_DIR}/kubectl.1.33"));
        command
            .env("KUBECONFIG", self.path().join("server/admin.kubeconfig"))
            .env("HOME", self.path())
            .env_remove("KUBECTL_EXTERNAL_DIFF");
        command
    }

    /// `kubectl ARGS`, which must succeed; its stdout.
    pub fn k(&self, args: &[&str]) -> String {
        ok(self.kubectl().args(args))
    }

    /// `kubectl apply -f -` of `yaml`, which must succeed.
    pub fn apply(&self, yaml: &str) {
        use std::io::Write as _;
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
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A JSONPath field of an object (empty when the command fails).
    pub fn field(&self, what: &[&str], path: &str) -> String {
        let out = run(self
            .kubectl()
            .args(what)
            .arg("-o")
            .arg(format!("jsonpath={path}")));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `check` holds, failing with the server log.
    pub fn wait(&self, what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            if start.elapsed() > deadline {
                let pods = run(self.kubectl().args(["get", "pods", "-A", "-o", "yaml"]));
                panic!(
                    "timed out waiting for {what}\npods:\n{}\nserver log:\n{}",
                    String::from_utf8_lossy(&pods.stdout),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The engine's containers (`skiff ps -a`, the NAMES column).
    pub fn containers(&self) -> Vec<String> {
        let out = ok(Command::new(skiff())
            .args(["ps", "-a", "--data-root"])
            .arg(self.path()));
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect()
    }
}

/// Removes the (emptied) pod cgroups of pods `uids`, whatever their QoS class.
fn remove_pod_cgroups(uids: &str) {
    use skiff_cgroups::CgroupManager as _;
    let Ok(mounts) = skiff_cgroups::Mounts::of_this_process() else {
        return;
    };
    for uid in uids.split_whitespace() {
        for parent in ["", "/burstable", "/besteffort"] {
            let path = format!("/skiff/kubepods{parent}/pod{uid}");
            if let Ok(m) = skiff_cgroups::Manager::new(&mounts, &path) {
                let _ = m.with_timeout(Duration::from_secs(2)).destroy();
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let uids = if self.child.is_some() {
            self.field(&["get", "pods", "-A"], "{.items[*].metadata.uid}")
        } else {
            String::new()
        };
        self.kill_server();
        let Some(dir) = self.dir.take() else { return };
        let ids = run(Command::new(skiff())
            .args(["ps", "-aq", "--no-trunc", "--data-root"])
            .arg(dir.path()));
        let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !ids.is_empty() {
            let _ = run(Command::new(skiff())
                .args(["rm", "-f", "--data-root"])
                .arg(dir.path())
                .args(&ids));
        }
        // The containers' /proc server of this data root, and its mount.
        let _ = skiff_procfs::stop(dir.path(), std::time::Duration::from_secs(10));
        remove_pod_cgroups(&uids);
        if std::env::var_os("SKIFF_KEEP_TEST_DIR").is_some() {
            let _ = dir.keep();
        }
    }
}
