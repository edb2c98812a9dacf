//! `persistentVolumeClaim` volumes and this node's `local-path` storage.
//!
//! A claim volume is resolved through the API as the kubelet does: the claim must exist and
//! be Bound to a volume whose `claimRef` names it, else the pod waits in ContainerCreating
//! with a `FailedMount` event naming the claim. The volume's `hostPath` (with its type check)
//! or `local` path is then bind-mounted like a `hostPath` volume (`readOnly` and `subPath` as
//! for any volume). Volumes of the built-in `local-path` provisioner live under
//! `<data dir>/storage` ([`root`]), which the agent reports on its Node in the
//! `skiff.io/local-path-root` annotation (the provisioner puts new volumes there); their
//! directory is created mode 0777, as k3s's provisioner does.
//!
//! Reclaiming: a Released local-path volume of this node with policy `Delete` has its
//! directory removed by this agent, which then deletes the PersistentVolume ([`run`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Node, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod,
};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::Context;

/// On the Node: where this agent keeps local-path volumes.
pub const ANN_NODE_ROOT: &str = "skiff.io/local-path-root";
/// On a volume: the provisioner that made it.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a local-path volume: its node.
pub const ANN_VOLUME_NODE: &str = "local.path.provisioner/selected-node";
/// The built-in provisioner.
pub const PROVISIONER: &str = "rancher.io/local-path";
/// How often every volume is looked at again (besides the watch), for retries.
const RECLAIM_RETRY: Duration = Duration::from_secs(60);

/// The directory of this node's local-path volumes.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("storage")
}

/// The kubelet's message for a claim volume that cannot be set up yet.
pub fn unmounted(volume: &str, why: &str) -> String {
    format!(
        "Unable to attach or mount volumes: unmounted volumes=[{volume}], unattached volumes=[{volume}], failed to process volumes=[{volume}]: {why}"
    )
}

/// Whether `path` is a volume directory directly under `root`.
fn is_volume_dir(root: &Path, path: &Path) -> bool {
    path.parent() == Some(root)
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("pvc-"))
}

/// The host path of claim volume `source` of `pod`, its `hostPath` type, and whether it is
/// read-only; `Err` holds why it cannot be mounted yet (the claim is missing or unbound).
pub async fn resolve(
    client: &kube::Client,
    data_dir: &Path,
    pod: &Pod,
    source: &PersistentVolumeClaimVolumeSource,
) -> Result<(PathBuf, String, bool), String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = &source.claim_name;
    let failed = |why: String| format!("error processing PVC {namespace}/{name}: {why}");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim = claims
        .get_opt(name)
        .await
        .map_err(|e| failed(format!("failed to fetch PVC from API server: {e}")))?
        .ok_or_else(|| {
            failed(format!(
                "failed to fetch PVC from API server: persistentvolumeclaims \"{name}\" not found"
            ))
        })?;
    let volume = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|v| !v.is_empty());
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let (Some(volume), Some("Bound")) = (volume, phase) else {
        return Err(failed("PVC is not bound".into()));
    };
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes
        .get_opt(&volume)
        .await
        .map_err(|e| failed(format!("failed to fetch PV {volume} from API server: {e}")))?
        .ok_or_else(|| {
            failed(format!(
                "failed to fetch PV {volume} from API server: persistentvolumes \"{volume}\" not found"
            ))
        })?;
    let bound_here = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| r.uid.is_some() && r.uid == claim.metadata.uid);
    if !bound_here {
        return Err(failed(format!("PV {volume} is not bound to this PVC")));
    }
    let read_only = source.read_only.unwrap_or(false);
    let spec = pv.spec.clone().unwrap_or_default();
    if let Some(h) = spec.host_path {
        let path = PathBuf::from(&h.path);
        let root = root(data_dir);
        let local_path = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_PROVISIONED_BY))
            .is_some_and(|p| p == PROVISIONER);
        if local_path && is_volume_dir(&root, &path) {
            create_volume_dir(path.clone()).await?;
            return Ok((path, "Directory".into(), read_only));
        }
        return Ok((path, h.type_.unwrap_or_default(), read_only));
    }
    if let Some(l) = spec.local {
        return Ok((PathBuf::from(l.path), String::new(), read_only));
    }
    Err(format!(
        "MountVolume.SetUp failed for volume \"{volume}\" : unsupported persistent volume source (only hostPath and local volumes can be mounted)"
    ))
}

async fn create_volume_dir(path: PathBuf) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::PermissionsExt;
        if !path.is_dir() {
            std::fs::create_dir_all(&path)
                .map_err(|e| format!("create {}: {e}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Reports the storage directory on the Node, then reclaims this node's Released local-path
/// volumes until aborted.
pub async fn run(ctx: Arc<Context>) {
    let root = root(&ctx.config.data_dir);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({"metadata": {"annotations": {ANN_NODE_ROOT: root.display().to_string()}}});
    let mut delay = Duration::from_millis(200);
    loop {
        match nodes
            .patch(
                &ctx.config.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => break,
            Err(err) => {
                tracing::warn!(error = %err, "cannot report the local-path directory; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
    let volumes: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let mut events = watcher(volumes.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut resync = tokio::time::interval(RECLAIM_RETRY);
    loop {
        let candidates: Vec<PersistentVolume> = tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(pv) | watcher::Event::InitApply(pv))) => vec![pv],
                Some(Ok(_)) => Vec::new(),
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "the volume watch failed; retrying");
                    Vec::new()
                }
                None => return,
            },
            // Directories that could not be removed are tried again.
            _ = resync.tick() => match volumes.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(err) => {
                    tracing::debug!(error = %err, "cannot list volumes to reclaim");
                    Vec::new()
                }
            },
        };
        for pv in candidates {
            if let Some(dir) = reclaimable(&pv, &ctx.config.node_name, &root) {
                reclaim(&volumes, &pv, dir).await;
            }
        }
    }
}

/// The directory to remove when `pv` is a Released local-path volume of `node` under `root`
/// with reclaim policy `Delete`.
pub fn reclaimable(pv: &PersistentVolume, node: &str, root: &Path) -> Option<PathBuf> {
    let annotations = pv.metadata.annotations.as_ref()?;
    if annotations.get(ANN_PROVISIONED_BY).map(String::as_str) != Some(PROVISIONER)
        || annotations.get(ANN_VOLUME_NODE).map(String::as_str) != Some(node)
        || pv.metadata.deletion_timestamp.is_some()
    {
        return None;
    }
    let spec = pv.spec.as_ref()?;
    if spec.persistent_volume_reclaim_policy.as_deref() != Some("Delete")
        || pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Released")
    {
        return None;
    }
    let path = PathBuf::from(&spec.host_path.as_ref()?.path);
    is_volume_dir(root, &path).then_some(path)
}

async fn reclaim(volumes: &Api<PersistentVolume>, pv: &PersistentVolume, dir: PathBuf) {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let shown = dir.display().to_string();
    let removed = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
        _ => Ok(()),
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    if let Err(error) = removed {
        tracing::warn!(volume = %name, dir = %shown, %error, "cannot remove a released volume's directory");
        return;
    }
    tracing::info!(volume = %name, dir = %shown, "deleted a released local-path volume");
    match volumes.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(error) => tracing::warn!(volume = %name, %error, "cannot delete a released volume"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(phase: &str, policy: &str, node: &str, path: &str) -> PersistentVolume {
        serde_json::from_value(json!({
            "metadata": {"name": "pvc-1", "annotations": {
                ANN_PROVISIONED_BY: PROVISIONER, ANN_VOLUME_NODE: node}},
            "spec": {"persistentVolumeReclaimPolicy": policy, "hostPath": {"path": path}},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn only_released_delete_volumes_of_this_node_under_the_root_are_reclaimed() {
        let root = Path::new("/data/storage");
        let dir = "/data/storage/pvc-1_default_data";
        assert_eq!(
            reclaimable(&pv("Released", "Delete", "n1", dir), "n1", root),
            Some(PathBuf::from(dir))
        );
        assert_eq!(
            reclaimable(&pv("Bound", "Delete", "n1", dir), "n1", root),
            None
        );
        assert_eq!(
            reclaimable(&pv("Released", "Retain", "n1", dir), "n1", root),
            None
        );
        assert_eq!(
            reclaimable(&pv("Released", "Delete", "n2", dir), "n1", root),
            None
        );
        assert_eq!(
            reclaimable(&pv("Released", "Delete", "n1", "/etc"), "n1", root),
            None
        );
        assert_eq!(
            reclaimable(
                &pv("Released", "Delete", "n1", "/data/storage/../x"),
                "n1",
                root
            ),
            None
        );
    }
}
