//! The built-in `local-path` provisioner (k3s's `rancher.io/local-path`): a claim's volume is a
//! directory on the node the scheduler chose, `<root>/pvc-<uid>_<namespace>_<name>`, where
//! `<root>` is what that node's agent reports in the [`ANN_NODE_ROOT`] annotation of its Node
//! (`<data dir>/storage`, set when the agent registers the Node; [`DEFAULT_ROOT`] for a node
//! without it). The volume is a `hostPath` (`DirectoryOrCreate`) pinned to the node
//! by `nodeAffinity`, pre-bound to the claim, of the claim's requested size.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use serde_json::json;

use super::binder::{ANN_PROVISIONED_BY, HOSTNAME_LABEL, claim_class};

/// The provisioner of the built-in class (k3s's name, so manifests written for k3s work).
pub const PROVISIONER: &str = "rancher.io/local-path";
/// The built-in class.
pub const CLASS: &str = "local-path";
/// On a Node: the directory its agent keeps local-path volumes under.
pub const ANN_NODE_ROOT: &str = "skiff.io/local-path-root";
/// The directory of a node that reports none (the agent's default data directory's).
pub const DEFAULT_ROOT: &str = "/var/lib/skiff/storage";
/// On a volume: the node holding its directory (as k3s's provisioner records it).
pub const ANN_VOLUME_NODE: &str = "local.path.provisioner/selected-node";

/// A volume could not be provisioned (the `ProvisioningFailed` event's message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    /// The class binds immediately: there is no node to put the directory on.
    #[error("configuration error, no node was specified")]
    NoNode,
    /// The selected node does not exist.
    #[error("nodes \"{node}\" not found")]
    NodeMissing {
        /// The node.
        node: String,
    },
    /// The volume does not decode.
    #[error("cannot build the volume for claim {claim}: {reason}")]
    Build {
        /// `namespace/name`.
        claim: String,
        /// Why.
        reason: String,
    },
}

/// The name of the volume provisioned for a claim.
pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default())
}

/// Whether `pv` was made by this provisioner.
pub fn is_local_path(pv: &PersistentVolume) -> bool {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_PROVISIONED_BY))
        .is_some_and(|p| p == PROVISIONER)
}

/// The node a local-path volume lives on.
pub fn volume_node(pv: &PersistentVolume) -> Option<&str> {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_VOLUME_NODE))
        .map(String::as_str)
}

/// The directory of `claim`'s volume under `root`.
pub fn directory(root: &str, claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}_{}_{}",
        root.trim_end_matches('/'),
        volume_name(claim),
        claim.metadata.namespace.as_deref().unwrap_or_default(),
        claim.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The volume for `claim` of `class` on `node` (`None`: the class binds immediately).
pub fn build(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: Option<&Node>,
    node_name: Option<&str>,
) -> Result<PersistentVolume, ProvisionError> {
    let node_name = node_name.ok_or(ProvisionError::NoNode)?;
    let node = node.ok_or_else(|| ProvisionError::NodeMissing {
        node: node_name.to_string(),
    })?;
    let root = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_NODE_ROOT))
        .filter(|r| r.starts_with('/'))
        .map_or(DEFAULT_ROOT, String::as_str);
    let hostname = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HOSTNAME_LABEL))
        .cloned()
        .unwrap_or_else(|| node_name.to_string());
    let spec = claim.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .unwrap_or_else(|| "0".into());
    let annotations = BTreeMap::from([
        (ANN_PROVISIONED_BY.to_string(), PROVISIONER.to_string()),
        (ANN_VOLUME_NODE.to_string(), node_name.to_string()),
    ]);
    let value = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(claim), "annotations": annotations},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": claim_class(claim),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "hostPath": {"path": directory(root, claim), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [hostname]},
            ]}]}},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
                "resourceVersion": claim.metadata.resource_version,
            },
        },
    });
    serde_json::from_value(value).map_err(|e| ProvisionError::Build {
        claim: format!(
            "{}/{}",
            claim.metadata.namespace.as_deref().unwrap_or_default(),
            claim.metadata.name.as_deref().unwrap_or_default()
        ),
        reason: e.to_string(),
    })
}
