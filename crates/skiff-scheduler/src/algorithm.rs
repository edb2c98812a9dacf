//! One scheduling decision: filter every node, score the feasible ones, pick the best; or say
//! why no node fits, in the words `kubectl describe pod` shows for kube-scheduler.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::filters::{Prepared, run_prepared};
use crate::scores::score_nodes;
use crate::snapshot::{NodeInfo, Snapshot};

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

/// How many feasible nodes one decision looks for before it stops filtering and scores them:
/// kube-scheduler's default adaptive `percentageOfNodesToScore` (every node below 100 nodes;
/// else `50 - nodes/125` percent, at least 5 % and at least 100 nodes: 500 of 5,000).
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    const MIN_NODES: usize = 100;
    const MIN_PERCENTAGE: usize = 5;
    if nodes < MIN_NODES {
        return nodes;
    }
    let percentage = 50usize.saturating_sub(nodes / 125).max(MIN_PERCENTAGE);
    (nodes * percentage / 100).max(MIN_NODES)
}

/// A filter of the caller's own, run before the others: `Some(reason)` refuses the node.
pub type NodeFilter<'a> = &'a dyn Fn(&NodeInfo) -> Option<&'static str>;

/// Where one decision starts looking and how it breaks ties.
#[derive(Clone, Copy, Default)]
pub struct Search<'a> {
    /// Among equally good nodes, this chooses (a counter, so that ties rotate).
    pub tie_breaker: usize,
    /// The index of the node filtering starts at (taken modulo the node count).
    pub start: usize,
    /// An extra filter (the volume filter), if any.
    pub node_filter: Option<NodeFilter<'a>>,
}

/// Where a pod goes, and where the next decision should start looking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The chosen node.
    pub node: String,
    /// The node after the last one this decision filtered (kube-scheduler's
    /// `nextStartNodeIndex`).
    pub next_start: usize,
}

/// Picks a node for `pod`. Among equally good nodes, `tie_breaker` chooses (the scheduler
/// passes a counter so that ties rotate). In clusters of 100 nodes or more, filtering stops
/// once [`feasible_nodes_to_find`] nodes passed, as kube-scheduler's does; decision `k` starts
/// at node `k * that` so that successive decisions go round every node ([`schedule_with`]
/// starts where the caller says). When no node fits, every node was filtered.
///
/// ```
/// use skiff_scheduler::{Snapshot, schedule};
/// let err = schedule(&Default::default(), &Snapshot::default(), 0).unwrap_err();
/// assert_eq!(err.message, "no nodes available to schedule pods");
/// ```
pub fn schedule(pod: &Pod, snapshot: &Snapshot, tie_breaker: usize) -> Result<String, FitError> {
    let all = snapshot.nodes.len().max(1);
    let search = Search {
        tie_breaker,
        start: tie_breaker.wrapping_mul(feasible_nodes_to_find(all)) % all,
        node_filter: None,
    };
    schedule_with(pod, snapshot, &search).map(|p| p.node)
}

/// [`schedule`] from the node `search.start`, with `search.node_filter` run first on each
/// node. The scheduler starts each decision where the previous one stopped, as
/// kube-scheduler does, so that successive decisions go round every node.
pub fn schedule_with(
    pod: &Pod,
    snapshot: &Snapshot,
    search: &Search<'_>,
) -> Result<Placement, FitError> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut feasible = Vec::new();
    let prepared = Prepared::new(pod);
    let all = snapshot.nodes.len();
    if all == 0 {
        return Err(FitError::new(0, reasons));
    }
    let to_find = feasible_nodes_to_find(all);
    let start = if to_find >= all {
        0
    } else {
        search.start % all
    };
    let (wrapped, from_start) = snapshot.nodes.split_at(start);
    let mut filtered = 0;
    for node in from_start.iter().chain(wrapped) {
        filtered += 1;
        let refused = search.node_filter.and_then(|f| f(node));
        let result = match refused {
            Some(reason) => Err(vec![reason.to_string()]),
            None => run_prepared(pod, &prepared, node, snapshot),
        };
        match result {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= to_find {
                    break;
                }
            }
            Err(rs) => {
                for r in rs {
                    *reasons.entry(r).or_default() += 1;
                }
            }
        }
    }
    if feasible.is_empty() {
        return Err(FitError::new(all, reasons));
    }
    let scores = score_nodes(pod, &feasible, snapshot);
    let best = scores.iter().copied().max().unwrap_or(0);
    let ties: Vec<usize> = (0..feasible.len()).filter(|&i| scores[i] == best).collect();
    let pick = ties[search.tie_breaker % ties.len()];
    Ok(Placement {
        node: feasible[pick].name().to_string(),
        next_start: (start + filtered) % all,
    })
}
