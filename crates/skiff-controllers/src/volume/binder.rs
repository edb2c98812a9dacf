//! The binder's pure decisions: which PersistentVolume a claim gets, and what each claim and
//! volume needs next (kube-controller-manager's `persistentvolume-binder`).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    NodeSelectorRequirement, PersistentVolume, PersistentVolumeClaim,
};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::util::selector;

/// Set on a claim once the controller finished binding it.
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a claim (or volume) whose `volumeName` (or `claimRef`) the controller wrote.
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// The node the scheduler chose for the first consumer of a `WaitForFirstConsumer` claim.
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner that created a volume.
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The provisioner asked to provision a claim.
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// Its beta spelling, still set by kube-controller-manager.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The legacy class annotation of claims and volumes.
pub const ANN_BETA_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// The default StorageClass marker.
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The finalizer keeping a claim while pods use it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer keeping a volume while it is Bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// The node label local volumes are pinned with.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// What a claim needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAction {
    /// Nothing.
    None,
    /// Bind the claim and the volume (both sides, idempotently).
    Bind {
        /// The volume.
        volume: String,
    },
    /// Create a volume for the claim (on `node` when the class waits for a consumer).
    Provision {
        /// The selected node.
        node: Option<String>,
    },
    /// The claim waits; an event says why (once).
    Wait {
        /// The event's reason.
        reason: &'static str,
        /// The event's message.
        message: String,
        /// `Warning` or `Normal`.
        warning: bool,
    },
    /// A Bound claim lost its volume.
    Lost {
        /// The event's message.
        message: String,
    },
}

/// What a volume needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeAction {
    /// Nothing.
    None,
    /// Set `status.phase` (and `status.message`, empty clears it).
    Phase(&'static str, String),
    /// The claim is gone: the volume is Released (after a live check of the claim).
    Release,
    /// A controller-made binding to a claim that took another volume: clear `claimRef`.
    Unbind,
}

/// The class a claim asks for (`""`: none).
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_CLASS))
        .map(String::as_str)
        .or_else(|| {
            claim
                .spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
        })
        .unwrap_or_default()
}

/// The class of a volume (`""`: none).
pub fn volume_class(pv: &PersistentVolume) -> &str {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_BETA_CLASS))
        .map(String::as_str)
        .or_else(|| {
            pv.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
        })
        .unwrap_or_default()
}

/// The storage a claim requests, in bytes (0 when none or malformed).
pub fn request_bytes(claim: &PersistentVolumeClaim) -> u64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| skiff_apimachinery::quantity::bytes(&q.0))
        .unwrap_or(0)
}

/// A volume's capacity in bytes (0 when none or malformed).
pub fn capacity_bytes(pv: &PersistentVolume) -> u64 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| skiff_apimachinery::quantity::bytes(&q.0))
        .unwrap_or(0)
}

/// Whether the class waits for the first consumer before binding.
pub fn waits_for_consumer(class: Option<&StorageClass>) -> bool {
    class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer")
}

/// The node the scheduler chose for the claim's first consumer.
pub fn selected_node(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_SELECTED_NODE))
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

fn requirement_matches(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let value = labels.get(&r.key);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node with `labels` satisfies the volume's `nodeAffinity` (no affinity: any node).
pub fn node_fits_volume(pv: &PersistentVolume, labels: &BTreeMap<String, String>) -> bool {
    let Some(terms) = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .map(|r| &r.node_selector_terms)
    else {
        return true;
    };
    terms.iter().any(|t| {
        let exprs = t.match_expressions.as_deref().unwrap_or_default();
        !exprs.is_empty() && exprs.iter().all(|r| requirement_matches(r, labels))
    })
}

fn modes_of(modes: Option<&Vec<String>>) -> &[String] {
    modes.map(Vec::as_slice).unwrap_or_default()
}

fn volume_mode(mode: Option<&String>) -> &str {
    mode.map_or("Filesystem", String::as_str)
}

/// Whether `pv`'s `claimRef` names `claim` (same namespace and name, and uid when set).
pub fn refers_to(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    r.name == claim.metadata.name
        && r.namespace == claim.metadata.namespace
        && r.uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == claim.metadata.uid.as_deref())
}

/// Whether `pv` can serve `claim`: class, volume mode, access modes (a superset), capacity,
/// the claim's selector, and (given the selected node's labels) the volume's node affinity.
pub fn satisfies(
    pv: &PersistentVolume,
    claim: &PersistentVolumeClaim,
    node_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let (Some(pvs), Some(cs)) = (pv.spec.as_ref(), claim.spec.as_ref()) else {
        return false;
    };
    if volume_class(pv) != claim_class(claim) {
        return false;
    }
    if volume_mode(pvs.volume_mode.as_ref()) != volume_mode(cs.volume_mode.as_ref()) {
        return false;
    }
    let have = modes_of(pvs.access_modes.as_ref());
    if !modes_of(cs.access_modes.as_ref())
        .iter()
        .all(|m| have.contains(m))
    {
        return false;
    }
    if capacity_bytes(pv) < request_bytes(claim) {
        return false;
    }
    if let Some(sel) = cs.selector.as_ref() {
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        if !selector(Some(sel)).is_some_and(|s| s.matches(&labels)) {
            return false;
        }
    }
    node_labels.is_none_or(|labels| node_fits_volume(pv, labels))
}

/// The volume `claim` should bind to: one pre-bound to it, else the smallest Available one
/// that satisfies it (ties by name).
pub fn find_volume<'a>(
    claim: &PersistentVolumeClaim,
    pvs: &'a [Arc<PersistentVolume>],
    node_labels: Option<&BTreeMap<String, String>>,
) -> Option<&'a PersistentVolume> {
    let usable = pvs
        .iter()
        .map(Arc::as_ref)
        .filter(|pv| pv.metadata.deletion_timestamp.is_none())
        .filter(|pv| satisfies(pv, claim, node_labels));
    let mut best: Option<&PersistentVolume> = None;
    for pv in usable {
        match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            Some(_) if refers_to(pv, claim) => return Some(pv),
            Some(_) => continue,
            None => {}
        }
        let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
        if !matches!(phase, None | Some("Available" | "Pending")) {
            continue;
        }
        let better = best.is_none_or(|b| {
            (capacity_bytes(pv), pv.metadata.name.as_deref())
                < (capacity_bytes(b), b.metadata.name.as_deref())
        });
        if better {
            best = Some(pv);
        }
    }
    best
}

/// Whether the binding of `claim` to `pv` is complete on both sides.
pub fn binding_complete(pv: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let pv_uid = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.as_deref());
    let annotated = claim
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_BIND_COMPLETED));
    pv_uid.is_some() == claim.metadata.uid.is_some()
        && pv_uid == claim.metadata.uid.as_deref()
        && pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        && claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
        && annotated
}

/// What `claim` needs, given every volume and class, the labels of its selected node (if
/// any) and the provisioner this controller runs.
pub fn decide_claim(
    claim: &PersistentVolumeClaim,
    pvs: &[Arc<PersistentVolume>],
    classes: &[Arc<StorageClass>],
    node_labels: Option<&BTreeMap<String, String>>,
    provisioner: &str,
) -> ClaimAction {
    if claim.metadata.deletion_timestamp.is_some() {
        return ClaimAction::None;
    }
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let wanted = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    if let Some(name) = wanted {
        let pv = pvs
            .iter()
            .find(|pv| pv.metadata.name.as_deref() == Some(name));
        return match pv {
            None if phase == Some("Bound") => ClaimAction::Lost {
                message: "Bound claim has lost its PersistentVolume. Data on the volume is lost!"
                    .into(),
            },
            None => ClaimAction::None,
            Some(pv) => match pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                None => ClaimAction::Bind {
                    volume: name.into(),
                },
                Some(_) if refers_to(pv, claim) => {
                    if binding_complete(pv, claim) {
                        ClaimAction::None
                    } else {
                        ClaimAction::Bind {
                            volume: name.into(),
                        }
                    }
                }
                Some(_) if phase == Some("Bound") => ClaimAction::Lost {
                    message:
                        "Two claims are bound to the same volume, this one is bound incorrectly"
                            .into(),
                },
                Some(_) => ClaimAction::Wait {
                    reason: "FailedBinding",
                    message: format!("volume \"{name}\" already bound to a different claim."),
                    warning: true,
                },
            },
        };
    }
    let class_name = claim_class(claim);
    let class = classes
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(class_name))
        .map(Arc::as_ref);
    let node = selected_node(claim);
    if waits_for_consumer(class) && node.is_none() {
        return ClaimAction::Wait {
            reason: "WaitForFirstConsumer",
            message: "waiting for first consumer to be created before binding".into(),
            warning: false,
        };
    }
    let labels = if waits_for_consumer(class) {
        node_labels
    } else {
        None
    };
    if let Some(pv) = find_volume(claim, pvs, labels) {
        return ClaimAction::Bind {
            volume: pv.metadata.name.clone().unwrap_or_default(),
        };
    }
    match class {
        Some(c) if c.provisioner == provisioner => ClaimAction::Provision {
            node: node.map(str::to_string),
        },
        Some(c) => ClaimAction::Wait {
            reason: "ExternalProvisioning",
            message: format!(
                "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                c.provisioner
            ),
            warning: false,
        },
        None if class_name.is_empty() => ClaimAction::Wait {
            reason: "FailedBinding",
            message: "no persistent volumes available for this claim and no storage class is set"
                .into(),
            warning: false,
        },
        None => ClaimAction::Wait {
            reason: "ProvisioningFailed",
            message: format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            warning: true,
        },
    }
}

/// What `pv` needs, given its claim as cached (`None`: not in the cache).
pub fn decide_volume(pv: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> VolumeAction {
    if pv.metadata.deletion_timestamp.is_some() {
        return VolumeAction::None;
    }
    let phase = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    let set = |want: &'static str| {
        if phase == want {
            VolumeAction::None
        } else {
            VolumeAction::Phase(want, String::new())
        }
    };
    let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return set("Available");
    };
    let pv_name = pv.metadata.name.as_deref().unwrap_or_default();
    let uid = r.uid.as_deref().filter(|u| !u.is_empty());
    let live = claim.filter(|c| uid.is_none() || c.metadata.uid.as_deref() == uid);
    match (uid, live) {
        // Pre-bound to a claim that is not there (yet).
        (None, None) => set("Available"),
        (Some(_), None) => match phase {
            "Released" | "Failed" => released_volume(pv, phase),
            _ => VolumeAction::Release,
        },
        (_, Some(c)) => {
            let claimed = c
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .unwrap_or_default();
            if claimed == pv_name {
                set("Bound")
            } else if claimed.is_empty() {
                // The claim's side of the binding is still to be written.
                if uid.is_some() {
                    set("Bound")
                } else {
                    set("Available")
                }
            } else {
                let by_controller = pv
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(ANN_BOUND_BY_CONTROLLER));
                if by_controller {
                    VolumeAction::Unbind
                } else {
                    VolumeAction::Release
                }
            }
        }
    }
}

/// A Released volume under its reclaim policy: Retain keeps it; Delete of a volume this
/// controller cannot delete fails it as kube-controller-manager does (local-path volumes are
/// deleted by their node, see the module docs).
fn released_volume(pv: &PersistentVolume, phase: &str) -> VolumeAction {
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    match policy {
        "Delete" if !super::provisioner::is_local_path(pv) && phase == "Released" => {
            VolumeAction::Phase(
                "Failed",
                format!(
                    "error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched"
                ),
            )
        }
        "Recycle" if phase == "Released" => VolumeAction::Phase(
            "Failed",
            format!(
                "error getting recycler volume plugin for volume \"{name}\": no recyclable volume plugin matched"
            ),
        ),
        _ => VolumeAction::None,
    }
}
