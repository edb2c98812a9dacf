//! The pod garbage collector, as kube-controller-manager's `podgc`: every period it
//!
//! - deletes pods bound to a Node that no longer exists (checked against the API, not only
//!   the cache, before acting): they are marked `Failed` with a `DisruptionTarget` condition
//!   (reason `DeletionByPodGC`) and deleted at once, so their controllers replace them;
//! - deletes terminating pods that were never scheduled (no kubelet will finish them);
//! - keeps at most `terminated_threshold` finished pods (`Succeeded` or `Failed`), deleting
//!   the oldest beyond it (`--terminated-pod-gc-threshold`, default 12,500; 0 keeps all).
//!
//! The decisions are pure ([`plan`]); [`run`] applies them.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::Shutdown;
use crate::informer::Informer;
use crate::util::{is_not_found, pod_phase};

/// How often the collector looks (kube-controller-manager's `gcCheckPeriod`).
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(20);
/// kube-controller-manager's default `--terminated-pod-gc-threshold`.
pub const DEFAULT_TERMINATED_THRESHOLD: usize = 12_500;

/// The collector's settings.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How often it looks.
    pub period: Duration,
    /// Finished pods kept (0: all).
    pub terminated_threshold: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            period: DEFAULT_PERIOD,
            terminated_threshold: DEFAULT_TERMINATED_THRESHOLD,
        }
    }
}

/// Why a pod is collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Bound to a Node that is gone.
    Orphaned,
    /// Terminating and never scheduled.
    UnscheduledTerminating,
    /// Finished, beyond the threshold.
    Terminated,
}

/// The pods to collect, given every pod and the names of the Nodes that exist.
pub fn plan(
    pods: &[Arc<Pod>],
    nodes: &HashSet<String>,
    terminated_threshold: usize,
) -> Vec<(Arc<Pod>, Reason)> {
    let mut out = Vec::new();
    let mut chosen = HashSet::new();
    for pod in pods {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .unwrap_or_default();
        let reason = if !node.is_empty() && !nodes.contains(node) {
            Some(Reason::Orphaned)
        } else if node.is_empty() && pod.metadata.deletion_timestamp.is_some() {
            Some(Reason::UnscheduledTerminating)
        } else {
            None
        };
        if let Some(reason) = reason {
            chosen.insert(pod.metadata.uid.clone());
            out.push((Arc::clone(pod), reason));
        }
    }
    if terminated_threshold > 0 {
        let mut finished: Vec<&Arc<Pod>> = pods
            .iter()
            .filter(|p| matches!(pod_phase(p), "Succeeded" | "Failed"))
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| !chosen.contains(&p.metadata.uid))
            .collect();
        if finished.len() > terminated_threshold {
            finished.sort_by_key(|p| p.metadata.creation_timestamp.clone());
            let excess = finished.len() - terminated_threshold;
            out.extend(
                finished
                    .into_iter()
                    .take(excess)
                    .map(|p| (Arc::clone(p), Reason::Terminated)),
            );
        }
    }
    out
}

/// Deletes one collected pod (marking an orphan failed first).
async fn collect(client: &Client, pod: &Pod, reason: Reason) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    if reason == Reason::Orphaned && !matches!(pod_phase(pod), "Succeeded" | "Failed") {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let status = json!({"status": {
            "phase": "Failed",
            "conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists", "lastTransitionTime": now,
            }],
        }});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(status))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let grace = match reason {
        Reason::Terminated => None,
        Reason::Orphaned | Reason::UnscheduledTerminating => Some(0),
    };
    let params = DeleteParams {
        grace_period_seconds: grace,
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        // The uid precondition failed: a new pod of that name, not ours to collect.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// One pass: plan from the caches, confirm orphans against the API, collect.
async fn pass(client: &Client, pods: &Store<Pod>, nodes: &Store<Node>, options: Options) {
    let names: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
    let planned = plan(&pods.state(), &names, options.terminated_threshold);
    if planned.is_empty() {
        return;
    }
    let node_api: Api<Node> = Api::all(client.clone());
    // The cache may lag a Node's creation: ask the API once per pass.
    let live: Option<HashSet<String>> = if planned.iter().any(|(_, r)| *r == Reason::Orphaned) {
        node_api
            .list(&ListParams::default())
            .await
            .ok()
            .map(|l| l.items.iter().map(|n| n.name_any()).collect())
    } else {
        None
    };
    for (pod, reason) in planned {
        if reason == Reason::Orphaned {
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default();
            if live.as_ref().is_none_or(|live| live.contains(&node)) {
                continue;
            }
        }
        tracing::info!(pod = %pod.name_any(), namespace = %pod.namespace().unwrap_or_default(), ?reason, "collecting a pod");
        if let Err(error) = collect(client, &pod, reason).await {
            tracing::warn!(%error, pod = %pod.name_any(), "cannot collect a pod");
        }
    }
}

/// Runs the collector until `shutdown`.
pub async fn run(client: Client, pods: &Informer<Pod>, options: Options, shutdown: Shutdown) {
    let nodes = Informer::spawn(Api::<Node>::all(client.clone()), Default::default());
    let pod_store = pods.store();
    let node_store = nodes.store();
    if pod_store.wait_until_ready().await.is_err() || node_store.wait_until_ready().await.is_err() {
        return;
    }
    let work = async {
        let mut tick = tokio::time::interval(options.period.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            pass(&client, &pod_store, &node_store, options).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn pod(name: &str, node: &str, phase: &str, created: &str, deleting: bool) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "ns", "uid": name,
                "creationTimestamp": created},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase},
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn names(planned: &[(Arc<Pod>, Reason)]) -> Vec<(String, Reason)> {
        planned.iter().map(|(p, r)| (p.name_any(), *r)).collect()
    }

    #[test]
    fn orphans_and_unscheduled_terminating_pods_are_collected() {
        let nodes: HashSet<String> = ["n1".to_string()].into();
        let pods = [
            pod("ok", "n1", "Running", "2026-01-01T00:00:00Z", false),
            pod("orphan", "gone", "Running", "2026-01-01T00:00:00Z", false),
            pod("pending", "", "Pending", "2026-01-01T00:00:00Z", false),
            pod("stuck", "", "Pending", "2026-01-01T00:00:00Z", true),
        ];
        assert_eq!(
            names(&plan(&pods, &nodes, 0)),
            [
                ("orphan".to_string(), Reason::Orphaned),
                ("stuck".to_string(), Reason::UnscheduledTerminating)
            ]
        );
    }

    #[test]
    fn the_oldest_finished_pods_beyond_the_threshold_go() {
        let nodes: HashSet<String> = ["n1".to_string()].into();
        let pods = [
            pod("new", "n1", "Succeeded", "2026-01-03T00:00:00Z", false),
            pod("old", "n1", "Failed", "2026-01-01T00:00:00Z", false),
            pod("mid", "n1", "Succeeded", "2026-01-02T00:00:00Z", false),
            pod("run", "n1", "Running", "2025-01-01T00:00:00Z", false),
        ];
        assert_eq!(
            names(&plan(&pods, &nodes, 1)),
            [
                ("old".to_string(), Reason::Terminated),
                ("mid".to_string(), Reason::Terminated)
            ]
        );
        assert!(plan(&pods, &nodes, 3).is_empty());
        assert!(plan(&pods, &nodes, 0).is_empty());
    }
}
