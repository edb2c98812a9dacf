//! `VolumeBinding`, as kube-scheduler's plugin does it for a single scheduler: a pod's
//! PersistentVolumeClaims must exist and not be being deleted; a claim bound to a volume with
//! `nodeAffinity` restricts the pod to nodes the volume admits ("node(s) had volume node
//! affinity conflict"); an unbound claim of a `WaitForFirstConsumer` class fits any node, and
//! once a node is chosen the claim is annotated with `volume.kubernetes.io/selected-node` so
//! the volume controller binds or provisions a volume there, and the pod is bound once the
//! claim is (PreBind); an unbound claim that binds immediately keeps the pod pending ("pod has unbound
//! immediate PersistentVolumeClaims") until the controller binds it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use serde_json::json;

use crate::affinity::term_matches;
use crate::algorithm::{FitError, Placement, Search, schedule_with};
use crate::snapshot::{NodeInfo, Snapshot};

/// The filter's reason.
pub const CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Claims that bind immediately and are not bound yet.
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";
/// The annotation naming the node of a claim's first consumer.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The caches the plugin reads.
#[derive(Clone)]
pub struct VolumeStores {
    /// PersistentVolumeClaims.
    pub claims: Store<PersistentVolumeClaim>,
    /// PersistentVolumes.
    pub volumes: Store<PersistentVolume>,
    /// StorageClasses.
    pub classes: Store<StorageClass>,
}

/// What a pod's claims need: the volumes it is bound to, and the claims to annotate with the
/// chosen node.
#[derive(Debug, Default)]
pub struct VolumePlan {
    /// The bound volumes (their node affinity filters nodes).
    pub bound: Vec<Arc<PersistentVolume>>,
    /// Unbound `WaitForFirstConsumer` claims (names, in the pod's namespace).
    pub select: Vec<String>,
}

impl VolumePlan {
    /// Whether every bound volume admits `node`.
    pub fn fits(&self, node: &Node) -> bool {
        self.bound.iter().all(|pv| {
            let terms = pv
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.as_ref())
                .map(|r| r.node_selector_terms.as_slice());
            terms.is_none_or(|t| t.iter().any(|term| term_matches(term, node)))
        })
    }
}

/// The plan for `pod`'s claims, or why it cannot be scheduled anywhere (kube-scheduler's
/// PreFilter messages).
pub fn plan(
    pod: &Pod,
    claims: &[Arc<PersistentVolumeClaim>],
    volumes: &[Arc<PersistentVolume>],
    classes: &[Arc<StorageClass>],
) -> Result<VolumePlan, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut out = VolumePlan::default();
    let mut immediate = false;
    let by_name: BTreeMap<&str, &Arc<PersistentVolume>> = volumes
        .iter()
        .filter_map(|v| v.metadata.name.as_deref().map(|n| (n, v)))
        .collect();
    for source in pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
    {
        let name = source.claim_name.as_str();
        let Some(claim) = claims.iter().find(|c| {
            c.metadata.namespace.as_deref() == Some(namespace)
                && c.metadata.name.as_deref() == Some(name)
        }) else {
            return Err(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let volume = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|v| !v.is_empty());
        if let Some(volume) = volume {
            match by_name.get(volume) {
                Some(pv) => out.bound.push(Arc::clone(pv)),
                None => {
                    return Err(format!("persistentvolume \"{volume}\" not found"));
                }
            }
            continue;
        }
        let class_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            .unwrap_or_default();
        let waits = classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(class_name))
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer");
        if waits {
            out.select.push(name.to_string());
        } else {
            immediate = true;
        }
    }
    if immediate {
        return Err(UNBOUND_IMMEDIATE.to_string());
    }
    Ok(out)
}

/// Whether `pod` mounts any PersistentVolumeClaim.
fn has_claims(pod: &Pod) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(|v| v.persistent_volume_claim.is_some())
}

/// [`schedule_with`] with the volume filter (the claim stores are read only for pods with
/// claims): the placement and the claims to annotate with the chosen node.
pub fn schedule_with_volumes(
    pod: &Pod,
    snapshot: &Snapshot,
    search: Search<'_>,
    stores: &VolumeStores,
) -> Result<(Placement, Vec<String>), FitError> {
    if !has_claims(pod) {
        return schedule_with(pod, snapshot, &search).map(|p| (p, Vec::new()));
    }
    let nodes = snapshot.nodes.len();
    let plan = plan(
        pod,
        &stores.claims.state(),
        &stores.volumes.state(),
        &stores.classes.state(),
    )
    .map_err(|m| FitError {
        nodes,
        reasons: BTreeMap::from([(m.clone(), nodes)]),
        message: format!("0/{nodes} nodes are available: {m}."),
    })?;
    if plan.bound.is_empty() {
        return schedule_with(pod, snapshot, &search).map(|p| (p, plan.select));
    }
    let conflict = |n: &NodeInfo| (!plan.fits(&n.node)).then_some(CONFLICT);
    let search = Search {
        node_filter: Some(&conflict),
        ..search
    };
    schedule_with(pod, snapshot, &search).map(|p| (p, plan.select))
}

/// How long the binder waits for the volume controller to bind selected claims
/// (kube-scheduler's `bindTimeoutSeconds` is 600; here it stays below the 30 s for which the
/// loop assumes a pod being bound, and a pod that times out is simply retried).
pub const BIND_TIMEOUT: Duration = Duration::from_secs(25);

/// VolumeBinding's PreBind: annotates `claims` of `namespace` with the chosen `node`, then
/// waits until the volume controller has bound each of them (so the pod is bound only once
/// its volumes are there, as kube-scheduler does).
pub async fn select_node(
    client: &kube::Client,
    namespace: &str,
    claims: &[String],
    node: &str,
) -> Result<(), String> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
    for claim in claims {
        api.patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| format!("cannot select node {node} for claim {namespace}/{claim}: {e}"))?;
    }
    let deadline = tokio::time::Instant::now() + BIND_TIMEOUT;
    for claim in claims {
        let mut delay = Duration::from_millis(50);
        loop {
            let current = api
                .get_opt(claim)
                .await
                .map_err(|e| {
                    format!("binding volumes: cannot read claim {namespace}/{claim}: {e}")
                })?
                .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
            let bound = current
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_some_and(|v| !v.is_empty())
                && current.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            if bound {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "binding volumes: claim {namespace}/{claim} was not bound in time"
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(claim: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": claim}}]},
        }))
        .unwrap()
    }

    fn claim(name: &str, class: &str, volume: Option<&str>) -> Arc<PersistentVolumeClaim> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"storageClassName": class, "volumeName": volume},
            }))
            .unwrap(),
        )
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
        )
        .unwrap()
    }

    #[test]
    fn missing_and_immediate_claims_block_the_pod() {
        let pod = pod_with("data");
        assert_eq!(
            plan(&pod, &[], &[], &[]).unwrap_err(),
            "persistentvolumeclaim \"data\" not found"
        );
        let claims = vec![claim("data", "manual", None)];
        assert_eq!(
            plan(&pod, &claims, &[], &[]).unwrap_err(),
            UNBOUND_IMMEDIATE
        );
    }

    #[test]
    fn waiting_claims_are_selected_and_bound_volumes_filter_nodes() {
        let pod = pod_with("data");
        let classes: Vec<Arc<StorageClass>> = vec![Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "local-path"},
                "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"}))
            .unwrap(),
        )];
        let claims = vec![claim("data", "local-path", None)];
        let p = plan(&pod, &claims, &[], &classes).unwrap();
        assert_eq!(p.select, vec!["data".to_string()]);
        let pv: Arc<PersistentVolume> = Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "v"}, "spec": {"nodeAffinity":
                {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}]}}}}))
            .unwrap(),
        );
        let claims = vec![claim("data", "local-path", Some("v"))];
        let p = plan(&pod, &claims, &[pv], &classes).unwrap();
        assert!(p.select.is_empty());
        assert!(p.fits(&node("a")));
        assert!(!p.fits(&node("b")));
    }
}
