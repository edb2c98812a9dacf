//! Score plugins: each gives every feasible node 0 to 100; the scheduler adds them up with
//! kube-scheduler's default weights and picks the best node.

use k8s_openapi::api::core::v1::Pod;

use crate::affinity::{intolerable_preferred_among, term_matches, term_selects};
use crate::quantity::pod_requests;
use crate::resources::{balanced_allocation_score, least_allocated_score};
use crate::snapshot::{NodeInfo, Snapshot};

/// Weight of `NodeResourcesFit` (least allocated).
pub const WEIGHT_FIT: u64 = 1;
/// Weight of `NodeResourcesBalancedAllocation`.
pub const WEIGHT_BALANCED: u64 = 1;
/// Weight of `TaintToleration` (PreferNoSchedule).
pub const WEIGHT_TAINTS: u64 = 3;
/// Weight of `NodeAffinity` (preferred terms).
pub const WEIGHT_NODE_AFFINITY: u64 = 2;
/// Weight of `InterPodAffinity` (preferred terms).
pub const WEIGHT_POD_AFFINITY: u64 = 2;
/// Weight of `PodTopologySpread` (the pod's soft constraints, or the system defaults).
pub const WEIGHT_SPREAD: u64 = 2;

/// The uid of the pod's controller (its ReplicaSet, Job ...), if any.
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
}

/// Scales raw per-node values to 0..100 (highest raw value = 100); `reverse` gives the lowest
/// raw value 100.
fn normalize(raw: &[i64], reverse: bool) -> Vec<u64> {
    let max = raw.iter().copied().max().unwrap_or(0);
    let min = raw.iter().copied().min().unwrap_or(0);
    raw.iter()
        .map(|&v| {
            if reverse {
                if max == 0 {
                    100
                } else {
                    ((max - v) * 100 / max) as u64
                }
            } else if min < 0 || max > 0 {
                // Shift negatives (anti-affinity) so the range is min..max.
                let low = min.min(0);
                let span = max - low;
                if span == 0 {
                    0
                } else {
                    ((v - low) * 100 / span) as u64
                }
            } else {
                0
            }
        })
        .collect()
}

/// The total weighted score of each candidate (same order as `candidates`).
pub fn score_nodes(pod: &Pod, candidates: &[&NodeInfo], snapshot: &Snapshot) -> Vec<u64> {
    let request = pod_requests(pod);
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let preferred_nodes = affinity
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    let preferred_pods = affinity
        .and_then(|a| a.pod_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();
    let preferred_anti = affinity
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_deref()
        })
        .unwrap_or_default();

    let taints: Vec<i64> = candidates
        .iter()
        .map(|n| intolerable_preferred_among(pod, n.taints()) as i64)
        .collect();
    let node_affinity: Vec<i64> = candidates
        .iter()
        .map(|n| {
            preferred_nodes
                .iter()
                .filter(|p| term_matches(&p.preference, &n.node))
                .map(|p| i64::from(p.weight))
                .sum()
        })
        .collect();
    let pod_affinity: Vec<i64> = candidates
        .iter()
        .map(|n| {
            let domain_pods = |key: &str| -> Vec<&Pod> {
                let Some(value) = n.labels().get(key) else {
                    return Vec::new();
                };
                snapshot
                    .nodes
                    .iter()
                    .filter(|m| m.labels().get(key) == Some(value))
                    .flat_map(|m| m.pods.iter().map(|p| p.as_ref()))
                    .collect()
            };
            let plus: i64 = preferred_pods
                .iter()
                .map(|w| {
                    let hits = domain_pods(&w.pod_affinity_term.topology_key)
                        .into_iter()
                        .filter(|p| term_selects(&w.pod_affinity_term, ns, p))
                        .count() as i64;
                    hits * i64::from(w.weight)
                })
                .sum();
            let minus: i64 = preferred_anti
                .iter()
                .map(|w| {
                    let hits = domain_pods(&w.pod_affinity_term.topology_key)
                        .into_iter()
                        .filter(|p| term_selects(&w.pod_affinity_term, ns, p))
                        .count() as i64;
                    hits * i64::from(w.weight)
                })
                .sum();
            plus - minus
        })
        .collect();

    let taints = normalize(&taints, true);
    let node_affinity = normalize(&node_affinity, false);
    // The pod's own soft constraints, or kube-scheduler's system defaults.
    let spread = crate::topology_spread::score(pod, candidates, snapshot);
    let pod_affinity = normalize(&pod_affinity, false);
    candidates
        .iter()
        .enumerate()
        .map(|(i, n)| {
            least_allocated_score(n.allocatable(), n.requested, request) * WEIGHT_FIT
                + balanced_allocation_score(n.allocatable(), n.requested, request) * WEIGHT_BALANCED
                + taints[i] * WEIGHT_TAINTS
                + node_affinity[i] * WEIGHT_NODE_AFFINITY
                + spread[i] * WEIGHT_SPREAD
                + pod_affinity[i] * WEIGHT_POD_AFFINITY
        })
        .collect()
}
