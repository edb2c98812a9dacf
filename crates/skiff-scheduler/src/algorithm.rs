//! One scheduling decision: filter every node, score the feasible ones, pick the best; or say
//! why no node fits, in the words `kubectl describe pod` shows for kube-scheduler.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::filters::run_filters;
use crate::scores::score_nodes;
use crate::snapshot::Snapshot;

/// No node can take the pod.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FitError {
    /// How many nodes there were.
    pub nodes: usize,
    /// How many nodes failed for each reason.
    pub reasons: BTreeMap<String, usize>,
    /// kube-scheduler's message: `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) ...`.
    pub message: String,
}

impl FitError {
    pub(crate) fn new(nodes: usize, reasons: BTreeMap<String, usize>) -> FitError {
        let message = if nodes == 0 {
            "no nodes available to schedule pods".to_string()
        } else {
            let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
            parts.sort();
            let mut m = format!("0/{nodes} nodes are available:");
            if !parts.is_empty() {
                m.push(' ');
                m.push_str(&parts.join(", "));
            }
            if !m.ends_with('.') {
                m.push('.');
            }
            m
        };
        FitError {
            nodes,
            reasons,
            message,
        }
    }
}

/// Picks a node for `pod`. Among equally good nodes, `tie_breaker` chooses (the scheduler
/// passes a counter so that ties rotate).
///
/// ```
/// use skiff_scheduler::{Snapshot, schedule};
/// let err = schedule(&Default::default(), &Snapshot::default(), 0).unwrap_err();
/// assert_eq!(err.message, "no nodes available to schedule pods");
/// ```
pub fn schedule(pod: &Pod, snapshot: &Snapshot, tie_breaker: usize) -> Result<String, FitError> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut feasible = Vec::new();
    for node in &snapshot.nodes {
        match run_filters(pod, node, snapshot) {
            Ok(()) => feasible.push(node),
            Err(rs) => {
                for r in rs {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    if feasible.is_empty() {
        return Err(FitError::new(snapshot.nodes.len(), reasons));
    }
    let scores = score_nodes(pod, &feasible, snapshot);
    let best = scores.iter().copied().max().unwrap_or(0);
    let ties: Vec<usize> = (0..feasible.len()).filter(|&i| scores[i] == best).collect();
    let pick = ties[tie_breaker % ties.len()];
    Ok(feasible[pick].name().to_string())
}
