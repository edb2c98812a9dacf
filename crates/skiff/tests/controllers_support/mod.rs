//! A cluster for controller and scheduler tests: a real `skiff server`, the scheduler and the
//! controllers running in the test process against it through the API, fake nodes, and a
//! stand-in for the kubelet (marks bound pods Running and Ready, finishes graceful deletions),
//! since no node agent exists yet.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

#[path = "../server_support/mod.rs"]
pub mod server_support;
pub use server_support::{Server, ok};

/// The server plus the in-process components.
pub struct Cluster {
    /// The server.
    pub server: Server,
    /// An admin client.
    pub client: Client,
    /// The runtime the components run on.
    pub rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::watch::Sender<bool>>,
}

/// What to run in the test process.
#[derive(Clone, Copy)]
pub struct Components {
    /// The scheduler.
    pub scheduler: bool,
    /// The controllers.
    pub controllers: bool,
    /// The fake kubelet (pods Running/Ready, deletions finished).
    pub kubelet: bool,
}

impl Cluster {
    /// Starts everything.
    pub fn start() -> Cluster {
        Cluster::start_with(Components {
            scheduler: true,
            controllers: true,
            kubelet: true,
        })
    }

    /// Starts a server running the chosen components (its own scheduler and controllers, as
    /// `skiff server` runs them) and, in the test process, the fake kubelet if chosen.
    pub fn start_with(components: Components) -> Cluster {
        Cluster::start_with_args(components, &[])
    }

    /// As [`Cluster::start_with`], with more `skiff server` flags.
    pub fn start_with_args(components: Components, args: &[&str]) -> Cluster {
        let mut extra: Vec<&str> = args.to_vec();
        if !components.scheduler {
            extra.push("--disable-scheduler");
        }
        if !components.controllers {
            extra.push("--disable-controllers");
        }
        let server = Server::start_in(tempfile::tempdir().unwrap(), &extra);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let kubeconfig = server.kubeconfig();
        let client = rt.block_on(async {
            let config = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
            let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
                .await
                .unwrap();
            Client::try_from(config).unwrap()
        });
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = move || {
            let mut rx = stopped.clone();
            async move {
                let _ = rx.wait_for(|v| *v).await;
            }
        };
        let _guard = rt.enter();
        if components.kubelet {
            tokio::spawn(fake_kubelet(client.clone(), until()));
        }
        drop(_guard);
        Cluster {
            server,
            client,
            rt,
            stop: Some(stop),
        }
    }

    /// Runs a future on the cluster's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Creates a Ready node with `cpu` and `memory` allocatable.
    pub fn add_node(&self, name: &str, cpu: &str, memory: &str) {
        self.add_node_with(name, cpu, memory, json!({}));
    }

    /// Creates a Ready node, merging `spec` into its spec (taints, unschedulable).
    pub fn add_node_with(&self, name: &str, cpu: &str, memory: &str, spec: serde_json::Value) {
        let api: Api<Node> = Api::all(self.client.clone());
        self.block_on(async {
            let node: Node = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                "spec": spec,
            }))
            .unwrap();
            api.create(&PostParams::default(), &node).await.unwrap();
            let status = json!({"status": {
                "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "fake node", "lastHeartbeatTime": now(), "lastTransitionTime": now()}],
            }});
            api.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
                .await
                .unwrap();
        });
    }

    /// Adds `labels` (a JSON object) to node `name`'s labels.
    pub fn label_node(&self, name: &str, labels: serde_json::Value) {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = json!({"metadata": {"labels": labels}});
        self.block_on(async {
            api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .unwrap();
        });
    }

    /// `kubectl apply -f -` of `yaml`, asserting success.
    pub fn apply(&self, yaml: &str) {
        use std::io::Write;
        let mut child = self
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
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
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kubectl 1.33 against the server.
    pub fn kubectl(&self) -> Command {
        self.server.kubectl("1.33")
    }

    /// Pods in `namespace` (all when `None`).
    pub fn pods(&self, namespace: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        self.block_on(async { api.list(&Default::default()).await.unwrap().items })
    }

    /// Polls `check` (an async API read) until it gives `Some`, failing after `deadline`.
    pub fn wait<T, F, Fut>(&self, what: &str, deadline: Duration, mut check: F) -> T
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = self.block_on(check(self.client.clone())) {
                return v;
            }
            assert!(
                start.elapsed() < deadline,
                "timed out after {:?} waiting for {what}\nserver log tail:\n{}",
                deadline,
                tail(&self.server.log())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// RFC 3339 now.
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// The kubelet's part for pods bound to fake nodes: mark them Running and Ready, and finish
/// graceful deletions (delete with grace period 0).
pub async fn fake_kubelet(client: Client, shutdown: impl Future<Output = ()>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let stream = watcher(pods, watcher::Config::default().fields("spec.nodeName!="))
        .default_backoff()
        .applied_objects();
    let work = stream.for_each_concurrent(8, |pod| {
        let client = client.clone();
        async move {
            let Ok(pod) = pod else { return };
            let ns = pod.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(client, &ns);
            let name = pod.name_any();
            if pod.metadata.deletion_timestamp.is_some() {
                let _ = api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await;
                return;
            }
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if phase.is_none() || phase == Some("Pending") {
                // A pod asking for a finished phase (test annotation) gets it.
                let wanted = pod
                    .annotations()
                    .get("test.skiff.dev/phase")
                    .cloned()
                    .unwrap_or_else(|| "Running".into());
                let ready = if wanted == "Running" { "True" } else { "False" };
                let status = json!({"status": {
                    "phase": wanted,
                    "podIP": "10.42.0.10",
                    "startTime": now(),
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": now()},
                        {"type": "ContainersReady", "status": ready, "lastTransitionTime": now()},
                        {"type": "Ready", "status": ready, "lastTransitionTime": now()},
                    ],
                }});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(status))
                    .await;
            }
        }
    });
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}
