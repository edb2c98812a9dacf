//! The node IPAM controller (kube-controller-manager's range allocator): every Node without
//! `spec.podCIDR` gets the lowest free block of `--node-cidr-mask-size` from
//! `--cluster-cidr` in `spec.podCIDR` and `spec.podCIDRs`. A Node that already has one keeps
//! it (its block counts as taken); the block of a deleted Node is free again.
//!
//! [`CidrSet`] is the pure half (taken blocks -> next free one); [`reconcile`] patches the
//! Node with its `resourceVersion` as a precondition, so a Node changed meanwhile (another
//! allocator, a kubelet) is read again rather than overwritten. Blocks handed out but not
//! yet seen in the watch are remembered, so Nodes reconciled at the same time never share one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use skiff_apimachinery::cidr::{Ipv4Cidr, RangeError};

use crate::backoff::ItemBackoff;
use crate::util::{is_conflict, is_not_found};
use crate::{ControllerError, Shutdown};

/// The default `--cluster-cidr`.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
/// The default `--node-cidr-mask-size`.
pub const DEFAULT_NODE_CIDR_MASK_SIZE: u8 = 24;

/// Why the node IPAM controller cannot run with its configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeIpamError {
    /// `--cluster-cidr` is not an IPv4 network.
    #[error("invalid --cluster-cidr: {0}")]
    ClusterCidr(#[from] RangeError),
    /// The mask size is shorter than the cluster CIDR's prefix or longer than 32.
    #[error("--node-cidr-mask-size {mask} does not fit {cidr}: it must be between {} and 32", cidr.prefix())]
    MaskSize {
        /// The mask size given.
        mask: u8,
        /// The cluster CIDR.
        cidr: Ipv4Cidr,
    },
}

/// The node blocks of a cluster CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrSet {
    cluster: Ipv4Cidr,
    mask: u8,
}

impl CidrSet {
    /// Blocks of `/mask` in `cluster_cidr`.
    pub fn new(cluster_cidr: &str, mask: u8) -> Result<CidrSet, NodeIpamError> {
        let cluster: Ipv4Cidr = cluster_cidr.parse()?;
        if mask < cluster.prefix() || mask > 32 {
            return Err(NodeIpamError::MaskSize {
                mask,
                cidr: cluster,
            });
        }
        Ok(CidrSet { cluster, mask })
    }

    /// The cluster CIDR.
    pub fn cluster(&self) -> Ipv4Cidr {
        self.cluster
    }

    /// The prefix length of each node's block.
    pub fn mask(&self) -> u8 {
        self.mask
    }

    /// How many blocks the cluster CIDR holds.
    pub fn len(&self) -> u64 {
        self.cluster.subnet_count(self.mask)
    }

    /// Whether the set has no block (never: a valid mask leaves at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indices of the blocks `cidr` overlaps (none when it lies outside the cluster CIDR).
    fn indices(&self, cidr: &Ipv4Cidr) -> std::ops::Range<u64> {
        let step = 1u64 << (32 - u32::from(self.mask));
        let (start, size) = if cidr.is_within(&self.cluster) {
            (
                self.cluster.offset_of(cidr.network()).unwrap_or(0),
                cidr.size(),
            )
        } else if self.cluster.is_within(cidr) {
            (0, self.cluster.size())
        } else {
            return 0..0;
        };
        let first = start / step;
        let last = (start + size.max(1) - 1) / step;
        first..(last + 1).min(self.len())
    }

    /// The lowest block no CIDR of `taken` overlaps.
    pub fn next_free<'a>(&self, taken: impl IntoIterator<Item = &'a Ipv4Cidr>) -> Option<Ipv4Cidr> {
        let mut used = HashSet::new();
        for cidr in taken {
            used.extend(self.indices(cidr));
        }
        (0..self.len())
            .find(|i| !used.contains(i))
            .and_then(|i| self.cluster.subnet(self.mask, i))
    }
}

/// The pod CIDRs a Node holds (`spec.podCIDRs`, or `spec.podCIDR`), parsed; others ignored.
pub fn node_cidrs(node: &Node) -> Vec<Ipv4Cidr> {
    let Some(spec) = node.spec.as_ref() else {
        return Vec::new();
    };
    let mut texts: Vec<&str> = spec
        .pod_cidrs
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    if let Some(single) = spec.pod_cidr.as_deref() {
        texts.push(single);
    }
    let mut cidrs: Vec<Ipv4Cidr> = texts.iter().filter_map(|t| t.parse().ok()).collect();
    cidrs.sort_by_key(|c| (u32::from(c.network()), c.prefix()));
    cidrs.dedup();
    cidrs
}

/// Whether a Node still needs a pod CIDR.
pub fn needs_cidr(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .is_none_or(str::is_empty)
}

struct Context {
    client: Client,
    nodes: Store<Node>,
    set: CidrSet,
    /// Blocks handed out by this controller, by node name, until the watch shows them.
    assigned: Mutex<HashMap<String, Ipv4Cidr>>,
    backoff: Mutex<ItemBackoff>,
}

impl Context {
    /// The block for `name`: the one already handed out to it, or the lowest free one.
    fn choose(&self, name: &str) -> Option<Ipv4Cidr> {
        let nodes = self.nodes.state();
        let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
        // Forget nodes that are gone and blocks the watch now shows.
        assigned.retain(|node, _| nodes.iter().any(|n| n.name_any() == *node && needs_cidr(n)));
        if let Some(cidr) = assigned.get(name) {
            return Some(*cidr);
        }
        let mut taken: Vec<Ipv4Cidr> = nodes.iter().flat_map(|n| node_cidrs(n)).collect();
        taken.extend(assigned.values().copied());
        let cidr = self.set.next_free(&taken)?;
        assigned.insert(name.to_string(), cidr);
        Some(cidr)
    }

    fn forget(&self, name: &str) {
        self.assigned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let name = node.name_any();
    if !needs_cidr(&node) || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(cidr) = ctx.choose(&name) else {
        tracing::warn!(node = %name, cluster_cidr = %ctx.set.cluster(), "no free pod CIDR left");
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let patch = json!({
        "metadata": {"resourceVersion": node.resource_version()},
        "spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]},
    });
    let api: Api<Node> = Api::all(ctx.client.clone());
    match api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            tracing::info!(node = %name, pod_cidr = %cidr, "assigned a pod CIDR");
        }
        // Changed meanwhile: the watch brings the new version, which is looked at again.
        Err(e) if is_conflict(&e) => return Ok(Action::requeue(Duration::from_millis(100))),
        Err(e) if is_not_found(&e) => {
            ctx.forget(&name);
            return Ok(Action::await_change());
        }
        Err(e) => return Err(ControllerError::api(&name, "set the pod CIDR", e)),
    }
    Ok(crate::util::succeeded(&ctx.backoff, &name, None))
}

fn error_policy(node: Arc<Node>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    crate::util::failed(&ctx.backoff, "node", &node.name_any(), error)
}

/// Runs the node IPAM controller over `set` until `shutdown`.
pub async fn run(client: Client, set: CidrSet, shutdown: Shutdown) {
    let controller = Controller::new(Api::<Node>::all(client.clone()), watcher::Config::default());
    let ctx = Arc::new(Context {
        client,
        nodes: controller.store(),
        set,
        assigned: Mutex::new(HashMap::new()),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn blocks_are_handed_out_lowest_first_and_reused() {
        let set = CidrSet::new("10.42.0.0/16", 24).unwrap();
        assert_eq!(set.len(), 256);
        let mut taken = Vec::new();
        for i in 0..3 {
            let next = set.next_free(&taken).unwrap();
            assert_eq!(next, cidr(&format!("10.42.{i}.0/24")));
            taken.push(next);
        }
        // A deleted node's block is free again.
        taken.remove(1);
        assert_eq!(set.next_free(&taken).unwrap(), cidr("10.42.1.0/24"));
    }

    #[test]
    fn preset_and_odd_sized_blocks_count_as_taken() {
        let set = CidrSet::new("10.42.0.0/16", 24).unwrap();
        let taken = [
            cidr("10.42.0.0/23"),
            cidr("10.42.2.128/25"),
            cidr("192.168.0.0/24"),
        ];
        assert_eq!(set.next_free(&taken).unwrap(), cidr("10.42.3.0/24"));
        let everything = [cidr("10.0.0.0/8")];
        assert_eq!(set.next_free(&everything), None);
    }

    #[test]
    fn a_full_set_has_nothing_left() {
        let set = CidrSet::new("10.42.0.0/23", 24).unwrap();
        let taken = [cidr("10.42.0.0/24"), cidr("10.42.1.0/24")];
        assert_eq!(set.next_free(&taken), None);
    }

    #[test]
    fn bad_configuration_is_refused() {
        assert!(matches!(
            CidrSet::new("10.42.0.0/16", 8),
            Err(NodeIpamError::MaskSize { .. })
        ));
        assert!(matches!(
            CidrSet::new("10.42.0.0/33", 24),
            Err(NodeIpamError::ClusterCidr(_))
        ));
        let err = CidrSet::new("10.42.0.0/16", 33).unwrap_err();
        assert!(err.to_string().contains("between 16 and 32"), "{err}");
    }

    #[test]
    fn node_cidrs_are_read_from_both_fields() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"podCIDR": "10.42.5.0/24", "podCIDRs": ["10.42.5.0/24", "fd00::/64"]},
        }))
        .unwrap();
        assert_eq!(node_cidrs(&node), [cidr("10.42.5.0/24")]);
        assert!(!needs_cidr(&node));
        let bare: Node = serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap();
        assert!(needs_cidr(&bare));
    }
}
