//! `PodTopologySpread`: a pod's `topologySpreadConstraints`. `DoNotSchedule` constraints are a
//! filter (placing the pod on a node must not make the skew of its domain, `count(domain) + 1 -
//! min(count over eligible domains)`, exceed `maxSkew`); `ScheduleAnyway` constraints are a
//! score that prefers nodes whose domains hold fewer matching pods.
//!
//! Pods are counted in the pod's namespace when they match the constraint's `labelSelector`
//! (narrowed by the pod's own values of `matchLabelKeys`) and are not being deleted. Domains are
//! the values of `topologyKey` on eligible nodes: nodes carrying every constraint's key that
//! pass `nodeAffinityPolicy` (default `Honor`: the pod's node selector and required node
//! affinity) and `nodeTaintsPolicy` (default `Ignore`). Fewer domains than `minDomains` make the
//! global minimum 0. A pod without constraints of its own is scored by kube-scheduler's
//! system default constraints ([`crate::default_spread`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use skiff_apimachinery::{LabelSelector, Requirement};

use crate::affinity::{node_matches_pod, selector_of, untolerated_among};
use crate::snapshot::{NodeInfo, Snapshot};

/// The filter's reason when placing the pod on a node would break a constraint.
pub const SPREAD: &str = "node(s) didn't match pod topology spread constraints";
/// The filter's reason when a node lacks a constraint's `topologyKey`.
pub const SPREAD_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// `whenUnsatisfiable` of a hard constraint.
pub const DO_NOT_SCHEDULE: &str = "DoNotSchedule";
/// `whenUnsatisfiable` of a soft constraint.
pub const SCHEDULE_ANYWAY: &str = "ScheduleAnyway";

static EMPTY: BTreeMap<String, String> = BTreeMap::new();

/// Whether the pod has any `topologySpreadConstraints`.
pub fn has_constraints(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .is_some_and(|c| !c.is_empty())
}

/// The pod's constraints with this `whenUnsatisfiable`.
pub fn constraints<'a>(pod: &'a Pod, when: &str) -> Vec<&'a TopologySpreadConstraint> {
    pod.spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|c| c.when_unsatisfiable == when)
        .collect()
}

/// The selector of a constraint for `pod`: its `labelSelector` plus `key=value` for each of
/// `matchLabelKeys` the pod carries. `None` (a nil selector) matches nothing.
pub fn selector_for(pod: &Pod, constraint: &TopologySpreadConstraint) -> Option<LabelSelector> {
    let mut selector = selector_of(constraint.label_selector.as_ref())?;
    let labels = pod.metadata.labels.as_ref().unwrap_or(&EMPTY);
    for key in constraint.match_label_keys.iter().flatten() {
        if let Some(value) = labels.get(key) {
            selector
                .requirements
                .push(Requirement::In(key.clone(), vec![value.clone()]));
        }
    }
    Some(selector)
}

/// Whether the node's pods count towards the constraints of `pod`: it carries every key and
/// passes the node affinity and taint policies.
fn eligible(pod: &Pod, node: &NodeInfo, all: &[&TopologySpreadConstraint]) -> bool {
    all.iter().all(|c| {
        if !node.labels().contains_key(&c.topology_key) {
            return false;
        }
        let affinity_ok = c.node_affinity_policy.as_deref() == Some("Ignore")
            || node_matches_pod(pod, &node.node);
        let taints_ok = c.node_taints_policy.as_deref() != Some("Honor")
            || untolerated_among(pod, node.taints()).is_none();
        affinity_ok && taints_ok
    })
}

/// How many pods of `node` count for a constraint: pods in the namespace `ns`, not being
/// deleted, that `selector` selects.
fn matching_on(node: &NodeInfo, ns: &str, selector: Option<&LabelSelector>) -> i64 {
    let Some(selector) = selector else {
        return 0;
    };
    let n = node
        .pods_in(ns)
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| selector.matches(p.metadata.labels.as_ref().unwrap_or(&EMPTY)))
        .count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Matching pods per domain (value of the constraint's key) over the eligible nodes; every
/// eligible domain is present, with 0 when it has no matching pod.
fn domain_counts<'a>(
    pod: &Pod,
    constraint: &TopologySpreadConstraint,
    all: &[&TopologySpreadConstraint],
    snapshot: &'a Snapshot,
) -> BTreeMap<&'a str, i64> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let selector = selector_for(pod, constraint);
    let mut counts = BTreeMap::new();
    for node in &snapshot.nodes {
        // The cheap test first: most nodes of a large cluster may lack the key.
        let Some(value) = node.labels().get(&constraint.topology_key) else {
            continue;
        };
        if !eligible(pod, node, all) {
            continue;
        }
        let n = matching_on(node, ns, selector.as_ref());
        *counts.entry(value.as_str()).or_insert(0) += n;
    }
    counts
}

/// One `DoNotSchedule` constraint worked out over a snapshot: its key, the matching pods per
/// eligible domain, the global minimum, whether the pod counts itself, and `maxSkew`.
#[derive(Debug, Clone)]
struct HardConstraint {
    key: String,
    counts: BTreeMap<String, i64>,
    min: i64,
    self_match: i64,
    max_skew: i64,
}

/// The pod's `DoNotSchedule` constraints counted over one snapshot, once per decision
/// instead of once per node.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    hard: Vec<HardConstraint>,
}

impl Prepared {
    /// Counts `pod`'s hard constraints over `snapshot` (nothing to do without any).
    pub fn new(pod: &Pod, snapshot: &Snapshot) -> Prepared {
        let hard = constraints(pod, DO_NOT_SCHEDULE);
        let own_labels = pod.metadata.labels.as_ref().unwrap_or(&EMPTY);
        let hard = hard
            .iter()
            .map(|c| {
                let counts = domain_counts(pod, c, &hard, snapshot);
                let domains = i64::try_from(counts.len()).unwrap_or(i64::MAX);
                let mut min = counts.values().copied().min().unwrap_or(0);
                if c.min_domains.is_some_and(|m| domains < i64::from(m)) {
                    min = 0;
                }
                HardConstraint {
                    key: c.topology_key.clone(),
                    counts: counts
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    min,
                    self_match: i64::from(
                        selector_for(pod, c).is_some_and(|s| s.matches(own_labels)),
                    ),
                    max_skew: i64::from(c.max_skew),
                }
            })
            .collect();
        Prepared { hard }
    }

    /// The filter on `node`: `Err` holds kube-scheduler's reason.
    pub fn check(&self, node: &NodeInfo) -> Result<(), &'static str> {
        if self
            .hard
            .iter()
            .any(|c| !node.labels().contains_key(&c.key))
        {
            return Err(SPREAD_MISSING_LABEL);
        }
        for c in &self.hard {
            let here = node
                .labels()
                .get(&c.key)
                .and_then(|v| c.counts.get(v))
                .copied()
                .unwrap_or(0);
            if here + c.self_match - c.min > c.max_skew {
                return Err(SPREAD);
            }
        }
        Ok(())
    }
}

/// The `PodTopologySpread` filter for `pod` on `node`: `Err` holds kube-scheduler's reason.
/// (For many nodes in a row, [`Prepared`] counts once.)
pub fn filter(pod: &Pod, node: &NodeInfo, snapshot: &Snapshot) -> Result<(), &'static str> {
    if !has_constraints(pod) {
        return Ok(());
    }
    Prepared::new(pod, snapshot).check(node)
}

/// One `ScheduleAnyway` constraint worked out for scoring: the matching pods per domain
/// (`None` when counted on each candidate itself), the selector, and the weight.
type SoftConstraint<'a> = (Option<BTreeMap<&'a str, i64>>, Option<LabelSelector>, f64);

/// The `PodTopologySpread` score of each candidate, 0..100 (same order as `candidates`):
/// fewer matching pods in a node's domains (weighted by how many domains each constraint has)
/// score higher. The pod's own `ScheduleAnyway` constraints count, or, when it has none at
/// all, the system defaults of [`crate::default_spread`]. Under its own constraints a node
/// lacking a key scores 0; under the defaults a node lacking the zone key is scored by
/// hostname alone. A `kubernetes.io/hostname` constraint counts the candidate's own pods (a
/// node is its own domain), as kube-scheduler's scoring does, so a decision does not walk
/// every node's pods for it. All 0 when there is nothing to spread by.
pub fn score(pod: &Pod, candidates: &[&NodeInfo], snapshot: &Snapshot) -> Vec<u64> {
    let (soft, require_all): (Vec<TopologySpreadConstraint>, bool) = if has_constraints(pod) {
        let own = constraints(pod, SCHEDULE_ANYWAY)
            .into_iter()
            .cloned()
            .collect();
        (own, true)
    } else {
        (snapshot.workloads.constraints_for(pod), false)
    };
    if soft.is_empty() {
        return vec![0; candidates.len()];
    }
    let all: Vec<&TopologySpreadConstraint> = soft.iter().collect();
    let ignored =
        |n: &NodeInfo| require_all && !all.iter().all(|c| n.labels().contains_key(&c.topology_key));
    let scored = candidates.iter().filter(|n| !ignored(n)).count();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    // Per constraint: the counts per domain (`None` for the hostname key, whose domain is the
    // node itself: its own pods are counted, as kube-scheduler does, instead of every node's),
    // the selector, and the weight.
    let per_constraint: Vec<SoftConstraint<'_>> = all
        .iter()
        .map(|c| {
            let own = [*c];
            let keys: &[&TopologySpreadConstraint] = if require_all { &all } else { &own };
            let hostname = c.topology_key == crate::default_spread::HOSTNAME;
            let counts = (!hostname).then(|| domain_counts(pod, c, keys, snapshot));
            let size = if hostname {
                scored
            } else {
                candidates
                    .iter()
                    .filter(|n| !ignored(n))
                    .map(|n| n.labels().get(&c.topology_key).map_or("", String::as_str))
                    .collect::<BTreeSet<&str>>()
                    .len()
            };
            #[allow(clippy::cast_precision_loss)]
            let weight = ((size + 2) as f64).ln();
            (counts, selector_for(pod, c), weight)
        })
        .collect();
    let raw: Vec<Option<i64>> = candidates
        .iter()
        .map(|n| {
            if ignored(n) {
                return None;
            }
            let mut total = 0.0;
            for (c, (counts, selector, weight)) in all.iter().zip(&per_constraint) {
                let Some(value) = n.labels().get(&c.topology_key) else {
                    continue;
                };
                let count = match counts {
                    Some(counts) => counts.get(value.as_str()).copied().unwrap_or(0),
                    None => matching_on(n, ns, selector.as_ref()),
                };
                #[allow(clippy::cast_precision_loss)]
                let part = (count as f64) * weight + f64::from(c.max_skew - 1);
                total += part;
            }
            #[allow(clippy::cast_possible_truncation)]
            Some(total.round() as i64)
        })
        .collect();
    normalize_reverse(&raw)
}

/// kube-scheduler's normalisation for this plugin: `100 * (max + min - s) / max` in integers,
/// so the lowest raw score gets the most; nodes without a score get 0.
fn normalize_reverse(raw: &[Option<i64>]) -> Vec<u64> {
    let max = raw.iter().flatten().copied().max().unwrap_or(0);
    let min = raw.iter().flatten().copied().min().unwrap_or(0);
    raw.iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max <= 0 => 100,
            Some(s) => u64::try_from(100 * (max + min - s) / max).unwrap_or(0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::Node;
    use serde_json::{Value, json};

    use super::*;

    fn node(name: &str, zone: Option<&str>) -> Arc<Node> {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if let Some(z) = zone {
            labels["topology.kubernetes.io/zone"] = json!(z);
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": "4", "memory": "4Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]},
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: Option<&str>, constraints: Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default",
                    "labels": {"app": "web", "pod-template-hash": "h1"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}],
                    "topologySpreadConstraints": constraints},
            }))
            .unwrap(),
        )
    }

    fn zone(max_skew: i32, when: &str) -> Value {
        json!([{"maxSkew": max_skew, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}])
    }

    fn snapshot(placed: &[(&str, &str)]) -> Snapshot {
        Snapshot::new(
            [
                node("a1", Some("a")),
                node("a2", Some("a")),
                node("b1", Some("b")),
                node("b2", Some("b")),
            ],
            placed
                .iter()
                .map(|(p, n)| pod(p, Some(n), json!([])))
                .collect::<Vec<_>>(),
        )
    }

    fn feasible(p: &Pod, s: &Snapshot) -> Vec<String> {
        s.nodes
            .iter()
            .filter(|n| filter(p, n, s).is_ok())
            .map(|n| n.name().to_string())
            .collect()
    }

    #[test]
    fn a_zone_one_ahead_is_infeasible_at_max_skew_one() {
        let s = snapshot(&[("p1", "a1")]);
        let p = pod("new", None, zone(1, DO_NOT_SCHEDULE));
        assert_eq!(feasible(&p, &s), ["b1", "b2"]);
        let s = snapshot(&[("p1", "a1"), ("p2", "b1")]);
        assert_eq!(feasible(&p, &s), ["a1", "a2", "b1", "b2"]);
        let p2 = pod("new", None, zone(2, DO_NOT_SCHEDULE));
        let s = snapshot(&[("p1", "a1")]);
        assert_eq!(feasible(&p2, &s).len(), 4, "skew 2 allowed at maxSkew 2");
        let s = snapshot(&[("p1", "a1")]);
        let b = s.node("a1").unwrap();
        assert_eq!(filter(&p, b, &s), Err(SPREAD));
    }

    #[test]
    fn nodes_without_the_key_are_infeasible_and_not_domains() {
        let s = Snapshot::new(
            [node("a1", Some("a")), node("x", None)],
            [pod("p1", Some("x"), json!([]))],
        );
        let p = pod("new", None, zone(1, DO_NOT_SCHEDULE));
        assert_eq!(
            filter(&p, s.node("x").unwrap(), &s),
            Err(SPREAD_MISSING_LABEL)
        );
        assert_eq!(filter(&p, s.node("a1").unwrap(), &s), Ok(()));
    }

    #[test]
    fn only_selected_pods_in_the_namespace_count() {
        let mut other: Pod = (*pod("o", Some("a1"), json!([]))).clone();
        other.metadata.namespace = Some("elsewhere".into());
        let mut unlabelled: Pod = (*pod("u", Some("a1"), json!([]))).clone();
        unlabelled.metadata.labels = None;
        let s = Snapshot::new(
            [node("a1", Some("a")), node("b1", Some("b"))],
            [Arc::new(other), Arc::new(unlabelled)],
        );
        let p = pod("new", None, zone(1, DO_NOT_SCHEDULE));
        assert_eq!(feasible(&p, &s), ["a1", "b1"]);
    }

    #[test]
    fn match_label_keys_narrow_the_selector() {
        let mut old: Pod = (*pod("old", Some("a1"), json!([]))).clone();
        old.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("pod-template-hash".into(), "h0".into());
        let s = Snapshot::new(
            [node("a1", Some("a")), node("b1", Some("b"))],
            [Arc::new(old)],
        );
        let mut c = zone(1, DO_NOT_SCHEDULE);
        c[0]["matchLabelKeys"] = json!(["pod-template-hash"]);
        let p = pod("new", None, c);
        assert_eq!(
            feasible(&p, &s),
            ["a1", "b1"],
            "the old revision is not counted"
        );
        assert_eq!(
            feasible(&pod("new", None, zone(1, DO_NOT_SCHEDULE)), &s),
            ["b1"]
        );
    }

    #[test]
    fn min_domains_makes_the_minimum_zero_when_domains_are_missing() {
        let s = snapshot(&[("p1", "a1"), ("p2", "b1")]);
        let mut c = zone(1, DO_NOT_SCHEDULE);
        c[0]["minDomains"] = json!(3);
        let p = pod("new", None, c);
        assert!(
            feasible(&p, &s).is_empty(),
            "2 domains < 3: min is 0, 1 + 1 - 0 > 1"
        );
    }

    #[test]
    fn node_affinity_policy_honor_leaves_unselected_nodes_out() {
        let s = snapshot(&[("p1", "b1")]);
        let mut p: Pod = (*pod("new", None, zone(1, DO_NOT_SCHEDULE))).clone();
        p.spec.as_mut().unwrap().node_selector = Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            "b2".to_string(),
        )]));
        // Under Honor only b2 is eligible: its pods alone count, so skew 1 is fine.
        assert_eq!(filter(&p, s.node("b2").unwrap(), &s), Ok(()));
        p.spec
            .as_mut()
            .unwrap()
            .topology_spread_constraints
            .as_mut()
            .unwrap()[0]
            .node_affinity_policy = Some("Ignore".into());
        assert_eq!(filter(&p, s.node("b2").unwrap(), &s), Err(SPREAD));
    }

    #[test]
    fn hostname_spreading_allows_one_per_node() {
        let s = snapshot(&[("p1", "a1"), ("p2", "a2"), ("p3", "b1")]);
        let p = pod(
            "new",
            None,
            json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": DO_NOT_SCHEDULE,
                "labelSelector": {"matchLabels": {"app": "web"}}}]),
        );
        assert_eq!(feasible(&p, &s), ["b2"]);
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_zone_and_never_filters() {
        let s = snapshot(&[("p1", "a1"), ("p2", "a2"), ("p3", "b1")]);
        let p = pod("new", None, zone(1, SCHEDULE_ANYWAY));
        assert_eq!(feasible(&p, &s).len(), 4);
        let nodes: Vec<&NodeInfo> = s.nodes.iter().collect();
        let scores = score(&p, &nodes, &s);
        assert!(scores[2] > scores[0], "{scores:?}");
        assert_eq!(scores[0], scores[1]);
        assert_eq!(scores[2], scores[3]);
        let hard = pod("new", None, zone(1, DO_NOT_SCHEDULE));
        assert_eq!(score(&hard, &nodes, &s), [0, 0, 0, 0]);
    }
}
