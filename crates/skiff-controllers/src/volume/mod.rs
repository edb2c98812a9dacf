//! The PersistentVolume controller (kube-controller-manager's `persistentvolume-binder`,
//! `persistentvolume-protection` for claims, and k3s's local-path provisioner in one loop).
//!
//! - Binding ([`binder`]): a Pending claim gets the smallest Available volume that satisfies
//!   it (class, access modes, capacity, selector, volume mode; a volume pre-bound to it by
//!   `claimRef`, or named by the claim's `volumeName`, first). Both sides are written as
//!   Kubernetes does: the volume's `claimRef` and phase Bound, the claim's `volumeName`, the
//!   `pv.kubernetes.io/bind-completed` and `pv.kubernetes.io/bound-by-controller`
//!   annotations, and its status (phase Bound, capacity, access modes).
//! - Claims of a `WaitForFirstConsumer` class wait (event `WaitForFirstConsumer`) until the
//!   scheduler names a node in `volume.kubernetes.io/selected-node`; then a volume whose node
//!   affinity admits that node is bound, or one is provisioned.
//! - Provisioning ([`provisioner`]): classes of provisioner `rancher.io/local-path` get a
//!   `hostPath` volume `pvc-<claim uid>` in the selected node's storage directory, pinned to
//!   that node. An Immediate class of this provisioner fails with k3s's "configuration
//!   error, no node was specified" (there is no node to put the directory on).
//! - Release: a volume whose claim is gone becomes Released. `Retain` keeps it; `Delete` of a
//!   local-path volume is done by the agent of the node holding the directory (it removes the
//!   directory, then deletes the PersistentVolume), since only that node can reach the
//!   directory; `Delete` of any other volume fails it (phase Failed, the deleter message of
//!   kube-controller-manager), as no volume plugin here can delete it.
//! - Protection: every claim carries the `kubernetes.io/pvc-protection` finalizer, removed
//!   once the claim is being deleted and no running pod of its namespace uses it; every
//!   volume `kubernetes.io/pv-protection`, removed once a deleted volume is not Bound.
//!
//! The loop resyncs everything on any change of claims, volumes, classes, nodes or pods, and
//! every few seconds.

pub mod binder;
pub mod provisioner;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::util::{is_conflict, is_not_found, key_of, patch_status, record_event};
use crate::{ControllerError, Informer, Shutdown};
use binder::{
    ANN_BETA_STORAGE_PROVISIONER, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER,
    ANN_STORAGE_PROVISIONER, ClaimAction, PV_PROTECTION, PVC_PROTECTION, VolumeAction,
};

/// The events' source.
pub const COMPONENT: &str = "persistentvolume-controller";
/// How often everything is resynced without a change.
const RESYNC: Duration = Duration::from_secs(5);

struct Caches {
    claims: Informer<PersistentVolumeClaim>,
    volumes: Informer<PersistentVolume>,
    classes: Informer<StorageClass>,
    nodes: Informer<Node>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, pods: &Informer<Pod>, shutdown: Shutdown) {
    let caches = Caches {
        claims: Informer::spawn(Api::all(client.clone()), watcher::Config::default()),
        volumes: Informer::spawn(Api::all(client.clone()), watcher::Config::default()),
        classes: Informer::spawn(Api::all(client.clone()), watcher::Config::default()),
        nodes: Informer::spawn(Api::all(client.clone()), watcher::Config::default()),
    };
    let ready = async {
        caches.claims.store().wait_until_ready().await.is_ok()
            && caches.volumes.store().wait_until_ready().await.is_ok()
            && caches.classes.store().wait_until_ready().await.is_ok()
            && caches.nodes.store().wait_until_ready().await.is_ok()
            && pods.store().wait_until_ready().await.is_ok()
    };
    tokio::select! {
        ok = ready => if !ok { return },
        () = shutdown.clone() => return,
    }
    let mut changes = futures::stream::select_all(vec![
        caches.claims.subscribe().map(|_| ()).boxed(),
        caches.volumes.subscribe().map(|_| ()).boxed(),
        caches.classes.subscribe().map(|_| ()).boxed(),
        caches.nodes.subscribe().map(|_| ()).boxed(),
        pods.subscribe().map(|_| ()).boxed(),
    ]);
    let mut reported: HashSet<(String, String)> = HashSet::new();
    loop {
        sync(&client, &caches, &pods.store().state(), &mut reported).await;
        tokio::select! {
            () = shutdown.clone() => break,
            _ = changes.next() => {}
            () = tokio::time::sleep(RESYNC) => {}
        }
        // Take every change already queued: one resync covers them.
        while let Some(Some(())) = changes.next().now_or_never() {}
    }
}

async fn sync(
    client: &Client,
    caches: &Caches,
    pods: &[Arc<Pod>],
    reported: &mut HashSet<(String, String)>,
) {
    let claims = caches.claims.store().state();
    let volumes = caches.volumes.store().state();
    let classes = caches.classes.store().state();
    let nodes = caches.nodes.store().state();
    let live_uids: HashSet<String> = claims
        .iter()
        .filter_map(|c| c.metadata.uid.clone())
        .collect();
    reported.retain(|(uid, _)| live_uids.contains(uid));
    for claim in &claims {
        if let Err(error) = protect(client, claim, pods).await {
            tracing::warn!(%error, "claim protection failed");
        }
        let node = binder::selected_node(claim)
            .and_then(|n| nodes.iter().find(|x| x.metadata.name.as_deref() == Some(n)));
        let labels: Option<BTreeMap<String, String>> =
            node.map(|n| n.metadata.labels.clone().unwrap_or_default());
        let action = binder::decide_claim(
            claim,
            &volumes,
            &classes,
            labels.as_ref(),
            provisioner::PROVISIONER,
        );
        let result = match action {
            ClaimAction::None => Ok(()),
            ClaimAction::Bind { volume } => match volumes
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(volume.as_str()))
            {
                Some(pv) => bind(client, pv, claim).await,
                None => Ok(()),
            },
            ClaimAction::Provision { node: name } => {
                provision(
                    client,
                    claim,
                    &classes,
                    node.map(Arc::as_ref),
                    name.as_deref(),
                    reported,
                )
                .await
            }
            ClaimAction::Wait {
                reason,
                message,
                warning,
            } => {
                let kind = if warning { "Warning" } else { "Normal" };
                report(client, claim, reported, kind, reason, &message).await;
                Ok(())
            }
            ClaimAction::Lost { message } => lose(client, claim, reported, &message).await,
        };
        if let Err(error) = result {
            tracing::warn!(%error, claim = %key_of(claim.as_ref()), "claim sync failed");
        }
    }
    for pv in &volumes {
        let claim = pv
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .and_then(|r| {
                claims
                    .iter()
                    .find(|c| c.metadata.name == r.name && c.metadata.namespace == r.namespace)
            });
        if let Err(error) = protect_volume(client, pv).await {
            tracing::warn!(%error, "volume protection failed");
        }
        let action = binder::decide_volume(pv, claim.map(Arc::as_ref));
        if let Err(error) = apply_volume(client, pv, action).await {
            tracing::warn!(%error, volume = %pv.name_any(), "volume sync failed");
        }
    }
}

/// Records an event about `claim` once per reason and message.
async fn report(
    client: &Client,
    claim: &PersistentVolumeClaim,
    reported: &mut HashSet<(String, String)>,
    kind: &str,
    reason: &str,
    message: &str,
) {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    if reported.insert((uid, format!("{reason}: {message}"))) {
        record_event(client, COMPONENT, claim, kind, reason, message).await;
    }
}

fn pod_uses(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .any(|c| c.claim_name == claim)
}

/// Adds the protection finalizer, or removes it from a deleted claim no running pod uses.
async fn protect(
    client: &Client,
    claim: &PersistentVolumeClaim,
    pods: &[Arc<Pod>],
) -> Result<(), ControllerError> {
    let finalizers = claim.metadata.finalizers.clone().unwrap_or_default();
    let has = finalizers.iter().any(|f| f == PVC_PROTECTION);
    let name = claim.name_any();
    let namespace = claim.namespace().unwrap_or_default();
    let wanted: Vec<String> = if claim.metadata.deletion_timestamp.is_none() {
        if has {
            return Ok(());
        }
        finalizers
            .into_iter()
            .chain([PVC_PROTECTION.to_string()])
            .collect()
    } else {
        let in_use = pods.iter().any(|p| {
            p.metadata.namespace.as_deref() == Some(namespace.as_str())
                && !crate::util::pod_is_finished(p)
                && pod_uses(p, &name)
        });
        if !has || in_use {
            return Ok(());
        }
        finalizers
            .into_iter()
            .filter(|f| f != PVC_PROTECTION)
            .collect()
    };
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let patch = json!({"metadata": {
        "finalizers": wanted,
        "resourceVersion": claim.metadata.resource_version,
    }});
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(ControllerError::api(&key_of(claim), "update finalizers", e)),
    }
}

/// Adds the `kubernetes.io/pv-protection` finalizer, or removes it from a deleted volume
/// that is not Bound.
async fn protect_volume(client: &Client, pv: &PersistentVolume) -> Result<(), ControllerError> {
    let finalizers = pv.metadata.finalizers.clone().unwrap_or_default();
    let has = finalizers.iter().any(|f| f == PV_PROTECTION);
    let wanted: Vec<String> = if pv.metadata.deletion_timestamp.is_none() {
        if has {
            return Ok(());
        }
        finalizers
            .into_iter()
            .chain([PV_PROTECTION.to_string()])
            .collect()
    } else {
        let bound = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        if !has || bound {
            return Ok(());
        }
        finalizers
            .into_iter()
            .filter(|f| f != PV_PROTECTION)
            .collect()
    };
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let patch = json!({"metadata": {
        "finalizers": wanted,
        "resourceVersion": pv.metadata.resource_version,
    }});
    match api
        .patch(
            &pv.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
        Err(e) => Err(ControllerError::api(&pv.name_any(), "update finalizers", e)),
    }
}

fn claim_ref(claim: &PersistentVolumeClaim) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "namespace": claim.metadata.namespace,
        "name": claim.metadata.name,
        "uid": claim.metadata.uid,
        "resourceVersion": claim.metadata.resource_version,
    })
}

/// Writes both sides of the binding of `claim` to `pv`, volume first (as Kubernetes does).
async fn bind(
    client: &Client,
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), ControllerError> {
    let key = key_of(claim);
    let pv_name = pv.name_any();
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let current = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let has_uid = current.and_then(|r| r.uid.as_deref()) == claim.metadata.uid.as_deref();
    if !has_uid {
        let mut meta = json!({"resourceVersion": pv.metadata.resource_version});
        if current.is_none() {
            meta["annotations"] = json!({ ANN_BOUND_BY_CONTROLLER: "yes" });
        }
        let patch = json!({"metadata": meta, "spec": {"claimRef": claim_ref(claim)}});
        match pvs
            .patch(&pv_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // The cache was behind: the next sync sees the new state.
            Err(e) if is_conflict(&e) || is_not_found(&e) => return Ok(()),
            Err(e) => return Err(ControllerError::api(&key, "bind the volume", e)),
        }
    }
    if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        patch_status(
            &pvs,
            &pv_name,
            &key,
            &json!({"phase": "Bound", "message": null}),
        )
        .await?;
    }
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
    let annotations = claim.metadata.annotations.clone().unwrap_or_default();
    let unnamed = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_none_or(str::is_empty);
    if unnamed || !annotations.contains_key(ANN_BIND_COMPLETED) {
        let mut wanted = json!({ ANN_BIND_COMPLETED: "yes" });
        if unnamed {
            wanted[ANN_BOUND_BY_CONTROLLER] = json!("yes");
        }
        let patch = json!({
            "metadata": {"annotations": wanted, "resourceVersion": claim.metadata.resource_version},
            "spec": {"volumeName": pv_name},
        });
        match claims
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_conflict(&e) || is_not_found(&e) => return Ok(()),
            Err(e) => return Err(ControllerError::api(&key, "bind the claim", e)),
        }
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let status = json!({
        "phase": "Bound",
        "capacity": spec.capacity,
        "accessModes": spec.access_modes,
    });
    let current = claim.status.as_ref();
    let done = current.and_then(|s| s.phase.as_deref()) == Some("Bound")
        && current.and_then(|s| s.capacity.as_ref()) == spec.capacity.as_ref()
        && current.and_then(|s| s.access_modes.as_ref()) == spec.access_modes.as_ref();
    if !done {
        patch_status(&claims, &claim.name_any(), &key, &status).await?;
    }
    Ok(())
}

/// Provisions a local-path volume for `claim` (pre-bound to it; the next sync binds it).
async fn provision(
    client: &Client,
    claim: &PersistentVolumeClaim,
    classes: &[Arc<StorageClass>],
    node: Option<&Node>,
    node_name: Option<&str>,
    reported: &mut HashSet<(String, String)>,
) -> Result<(), ControllerError> {
    let key = key_of(claim);
    let Some(class) = classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(binder::claim_class(claim)))
    else {
        return Ok(());
    };
    let annotated = claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_STORAGE_PROVISIONER));
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
    if !annotated {
        let patch = json!({"metadata": {"annotations": {
            ANN_STORAGE_PROVISIONER: provisioner::PROVISIONER,
            ANN_BETA_STORAGE_PROVISIONER: provisioner::PROVISIONER,
        }}});
        match claims
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(ControllerError::api(&key, "annotate the claim", e)),
        }
        let message = format!("External provisioner is provisioning volume for claim \"{key}\"");
        report(client, claim, reported, "Normal", "Provisioning", &message).await;
    }
    let pv = match provisioner::build(claim, class, node, node_name) {
        Ok(pv) => pv,
        Err(err) => {
            let message = format!(
                "failed to provision volume with StorageClass \"{}\": {err}",
                class.name_any()
            );
            report(
                client,
                claim,
                reported,
                "Warning",
                "ProvisioningFailed",
                &message,
            )
            .await;
            return Ok(());
        }
    };
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {
            let message = format!("Successfully provisioned volume {}", pv.name_any());
            report(
                client,
                claim,
                reported,
                "Normal",
                "ProvisioningSucceeded",
                &message,
            )
            .await;
            Ok(())
        }
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(ControllerError::api(&key, "create the volume", e)),
    }
}

/// Marks a Bound claim whose volume is gone (or bound elsewhere) Lost.
async fn lose(
    client: &Client,
    claim: &PersistentVolumeClaim,
    reported: &mut HashSet<(String, String)>,
    message: &str,
) -> Result<(), ControllerError> {
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(client.clone(), &claim.namespace().unwrap_or_default());
    patch_status(
        &claims,
        &claim.name_any(),
        &key_of(claim),
        &json!({"phase": "Lost"}),
    )
    .await?;
    report(client, claim, reported, "Warning", "ClaimLost", message).await;
    Ok(())
}

async fn apply_volume(
    client: &Client,
    pv: &PersistentVolume,
    action: VolumeAction,
) -> Result<(), ControllerError> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let name = pv.name_any();
    match action {
        VolumeAction::None => Ok(()),
        VolumeAction::Phase(phase, message) => {
            let message = (!message.is_empty()).then_some(message);
            if phase == "Failed"
                && let Some(m) = &message
            {
                record_event(client, COMPONENT, pv, "Warning", "VolumeFailedDelete", m).await;
            }
            patch_status(
                &pvs,
                &name,
                &name,
                &json!({"phase": phase, "message": message}),
            )
            .await
        }
        VolumeAction::Release => {
            // The cache may lag behind a new claim: ask the API before releasing.
            if let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                let claims: Api<PersistentVolumeClaim> =
                    Api::namespaced(client.clone(), r.namespace.as_deref().unwrap_or_default());
                let live = claims
                    .get_opt(r.name.as_deref().unwrap_or_default())
                    .await
                    .map_err(|e| ControllerError::api(&name, "read the claim", e))?;
                if let Some(c) = live
                    && c.metadata.uid == r.uid
                    && c.spec
                        .as_ref()
                        .and_then(|s| s.volume_name.as_deref())
                        .is_none_or(|v| v.is_empty() || v == name)
                {
                    return Ok(());
                }
            }
            patch_status(
                &pvs,
                &name,
                &name,
                &json!({"phase": "Released", "message": null}),
            )
            .await
        }
        VolumeAction::Unbind => {
            let patch = json!({
                "metadata": {
                    "annotations": { ANN_BOUND_BY_CONTROLLER: null },
                    "resourceVersion": pv.metadata.resource_version,
                },
                "spec": {"claimRef": null},
            });
            match pvs
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(e) if is_conflict(&e) || is_not_found(&e) => return Ok(()),
                Err(e) => return Err(ControllerError::api(&name, "unbind the volume", e)),
            }
            patch_status(
                &pvs,
                &name,
                &name,
                &json!({"phase": "Available", "message": null}),
            )
            .await
        }
    }
}
