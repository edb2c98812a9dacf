//! Preemption, as kube-scheduler's `DefaultPreemption` PostFilter: when a pod fits no node,
//! find the nodes where evicting pods of strictly lower priority would let it fit (every
//! filter rechecked with those pods gone), keep as many of them as still allows it (the most
//! important first, but those whose eviction would break a PodDisruptionBudget before the
//! others), and choose the node whose victims matter least: the fewest budgets broken, then
//! the lowest highest victim priority, then the lowest sum of priorities, then the fewest
//! victims. Budgets are honoured as far as possible, not absolutely, as upstream. Pure
//! functions over a [`Snapshot`]; the scheduler loop deletes the victims and nominates the
//! node.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::algorithm::FitError;
use crate::events::{self, COMPONENT};
use crate::filters::{NODE_AFFINITY, NODE_NAME, POD_AFFINITY, UNSCHEDULABLE, run_filters};
use crate::snapshot::{NodeInfo, Snapshot};

/// The node-status reason of a node where evicting pods would not help.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// The node-status reason of a node without enough lower-priority pods to evict.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
/// The refusal for `preemptionPolicy: Never` pods.
pub const POLICY_NEVER: &str = "not eligible due to preemptionPolicy=Never.";
/// The refusal while earlier victims on the nominated node are still terminating.
pub const TERMINATING_VICTIM: &str = "not eligible due to a terminating pod on the nominated node.";

/// A pod's priority (`spec.priority`, 0 when unset).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether the pod may preempt others (`preemptionPolicy` is not `Never`).
pub fn may_preempt(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref())
        != Some("Never")
}

/// A node where the pod fits once `victims` are gone.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// The pods to evict, the most important first.
    pub victims: Vec<Arc<Pod>>,
    /// How many of them break a PodDisruptionBudget.
    pub violations: usize,
}

impl Candidate {
    /// The ordering key of kube-scheduler's choice (smaller is better).
    fn rank(&self) -> (usize, i32, i64, usize) {
        let highest = self.victims.iter().map(|v| priority(v)).max();
        // Shifted so that negative priorities still add up sensibly, as kube-scheduler does.
        let sum: i64 = self
            .victims
            .iter()
            .map(|v| i64::from(priority(v)) + i64::from(i32::MAX) + 1)
            .sum();
        (
            self.violations,
            highest.unwrap_or(i32::MIN),
            sum,
            self.victims.len(),
        )
    }
}

/// The start of every `TaintToleration` reason.
const UNTOLERATED_TAINT: &str = "node(s) had untolerated taint";

/// Whether a filter reason is one that evicting pods cannot change.
fn unresolvable(reason: &str) -> bool {
    reason == UNSCHEDULABLE
        || reason == NODE_NAME
        || reason == NODE_AFFINITY
        || reason == POD_AFFINITY
        || reason.starts_with(UNTOLERATED_TAINT)
        || reason.ends_with("(missing required label)")
}

/// The pods more important first: higher priority, then started earlier.
fn by_importance(a: &Arc<Pod>, b: &Arc<Pod>) -> std::cmp::Ordering {
    let start = |p: &Pod| p.status.as_ref().and_then(|s| s.start_time.clone());
    priority(b)
        .cmp(&priority(a))
        .then_with(|| match (start(a), start(b)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        })
}

/// `info` with only `pods` on it.
fn rebuilt(info: &NodeInfo, pods: &[Arc<Pod>]) -> NodeInfo {
    let mut fresh = NodeInfo::new(Arc::clone(&info.node));
    for p in pods {
        fresh.add_pod(Arc::clone(p));
    }
    fresh
}

/// Whether `pod` passes every filter on the node at `index` of `trial` once it holds `pods`.
fn fits_with(pod: &Pod, trial: &mut Snapshot, index: usize, pods: &[Arc<Pod>]) -> bool {
    let Some(slot) = trial.nodes.get_mut(index) else {
        return false;
    };
    *slot = rebuilt(slot, pods);
    trial
        .nodes
        .get(index)
        .is_some_and(|node| run_filters(pod, node, trial).is_ok())
}

/// Splits `pods` (most important first) into those whose eviction would take a budget below
/// what it allows and the others, counting down each budget's `disruptionsAllowed` as it
/// goes (pods already evicted, in `disruptedPods`, are not counted again). Budgets with an
/// empty or nil selector select nothing here, as upstream.
fn split_by_budgets(
    pods: Vec<Arc<Pod>>,
    budgets: &[Arc<PodDisruptionBudget>],
) -> (Vec<Arc<Pod>>, Vec<Arc<Pod>>) {
    let mut allowed: Vec<i32> = budgets
        .iter()
        .map(|b| b.status.as_ref().map_or(0, |s| s.disruptions_allowed))
        .collect();
    let selectors: Vec<Option<skiff_apimachinery::LabelSelector>> = budgets
        .iter()
        .map(|b| {
            let raw = serde_json::to_value(b.spec.as_ref()?.selector.as_ref()?).ok()?;
            skiff_apimachinery::LabelSelector::from_json(&raw).filter(|s| !s.is_empty())
        })
        .collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for pod in pods {
        let labels = pod.labels();
        let mut violated = false;
        for (i, budget) in budgets.iter().enumerate() {
            if budget.metadata.namespace != pod.metadata.namespace
                || !selectors[i].as_ref().is_some_and(|s| s.matches(labels))
            {
                continue;
            }
            let already = budget
                .status
                .as_ref()
                .and_then(|s| s.disrupted_pods.as_ref())
                .is_some_and(|d| d.contains_key(&pod.name_any()));
            if already {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violated = true;
            }
        }
        if violated {
            violating.push(pod);
        } else {
            fine.push(pod);
        }
    }
    (violating, fine)
}

/// The fewest victims on one node (`Err` holds the node's reason when there are none).
pub fn select_victims(
    pod: &Pod,
    snapshot: &Snapshot,
    index: usize,
    budgets: &[Arc<PodDisruptionBudget>],
) -> Result<Candidate, String> {
    let Some(info) = snapshot.nodes.get(index) else {
        return Err(NOT_HELPFUL.to_string());
    };
    // A node that passes every filter already was refused for something eviction cannot
    // change (its volumes).
    match run_filters(pod, info, snapshot) {
        Ok(()) => return Err(NOT_HELPFUL.to_string()),
        Err(reasons) if reasons.iter().any(|r| unresolvable(r)) => {
            return Err(NOT_HELPFUL.to_string());
        }
        Err(_) => {}
    }
    let mine = priority(pod);
    let (mut potential, mut kept): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) =
        info.pods.iter().cloned().partition(|p| priority(p) < mine);
    if potential.is_empty() {
        return Err(NO_VICTIMS.to_string());
    }
    let mut trial = snapshot.clone();
    if !fits_with(pod, &mut trial, index, &kept) {
        return Err(NO_VICTIMS.to_string());
    }
    // Reprieve as many as possible: those a budget protects first, then the others, the
    // most important first within each.
    potential.sort_by(by_importance);
    let (violating, fine) = split_by_budgets(potential, budgets);
    let mut victims = Vec::new();
    let mut violations = 0;
    for (protected, group) in [(true, violating), (false, fine)] {
        for p in group {
            kept.push(Arc::clone(&p));
            if !fits_with(pod, &mut trial, index, &kept) {
                kept.pop();
                victims.push(p);
                violations += usize::from(protected);
            }
        }
    }
    victims.sort_by(by_importance);
    Ok(Candidate {
        node: info.name().to_string(),
        victims,
        violations,
    })
}

/// Chooses the best candidate as kube-scheduler does (the first of equals, by node order).
pub fn pick(candidates: Vec<Candidate>) -> Option<Candidate> {
    candidates.into_iter().min_by_key(Candidate::rank)
}

/// Finds where `pod` could run by evicting lower-priority pods. `nominated` is the node the
/// pod was nominated for earlier, if any. `Err` holds the message kube-scheduler puts after
/// `preemption: ` when preemption cannot help.
pub fn preempt(
    pod: &Pod,
    snapshot: &Snapshot,
    nominated: Option<&str>,
    budgets: &[Arc<PodDisruptionBudget>],
) -> Result<Candidate, String> {
    if !may_preempt(pod) {
        return Err(POLICY_NEVER.to_string());
    }
    let mine = priority(pod);
    if let Some(node) = nominated.and_then(|n| snapshot.node(n)) {
        let terminating = node
            .pods
            .iter()
            .any(|p| p.metadata.deletion_timestamp.is_some() && priority(p) < mine);
        if terminating {
            return Err(TERMINATING_VICTIM.to_string());
        }
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut candidates = Vec::new();
    for index in 0..snapshot.nodes.len() {
        match select_victims(pod, snapshot, index, budgets) {
            Ok(c) => candidates.push(c),
            Err(r) => *reasons.entry(r).or_default() += 1,
        }
    }
    pick(candidates).ok_or_else(|| FitError::new(snapshot.nodes.len(), reasons).message)
}

/// `snapshot` with the pods nominated to nodes (and not bound yet) counted on them, for
/// deciding about `pod`: only those at least as important as it, never itself, so that the
/// room preemption freed is kept for the preemptor.
pub fn with_nominated(
    snapshot: &Snapshot,
    nominated: &[(Arc<Pod>, String)],
    pod: &Pod,
) -> Snapshot {
    let mut view = snapshot.clone();
    add_nominated(&mut view, nominated, pod);
    view
}

/// [`with_nominated`] in place (no copy of the snapshot): the `(node, uid)` of the pods added,
/// for [`remove_nominated`] to take them back once the decision is made.
pub fn add_nominated(
    snapshot: &mut Snapshot,
    nominated: &[(Arc<Pod>, String)],
    pod: &Pod,
) -> Vec<(String, String)> {
    let mine = priority(pod);
    let mut added = Vec::new();
    for (other, node) in nominated {
        if other.metadata.uid == pod.metadata.uid
            || priority(other) < mine
            || !crate::snapshot::is_active(other)
        {
            continue;
        }
        let Some(info) = snapshot.node_mut(node) else {
            continue;
        };
        let mut placed = (**other).clone();
        if let Some(spec) = placed.spec.as_mut() {
            spec.node_name = Some(node.clone());
        }
        info.add_pod(Arc::new(placed));
        let uid = other.metadata.uid.clone().unwrap_or_default();
        added.push((node.clone(), uid));
    }
    added
}

/// Takes back the pods [`add_nominated`] counted.
pub fn remove_nominated(snapshot: &mut Snapshot, added: &[(String, String)]) {
    for (node, uid) in added {
        snapshot.remove_pod(node, uid);
    }
}

/// The full `FailedScheduling` message when preemption could not help: the fit error, then
/// ` preemption: ` and why, with kube-scheduler's separator.
pub fn failure_message(fit: &FitError, why: &str) -> String {
    format!("{} preemption: {why}.", fit.message)
}

/// Carries out a decision: nominates the node for `preemptor` (`status.nominatedNodeName`),
/// then marks each victim `DisruptionTarget`, deletes it and records a `Preempted` event on
/// it. Failures are logged; the preemptor is retried in any case.
pub async fn carry_out(client: Client, preemptor: Arc<Pod>, candidate: Candidate) {
    let namespace = preemptor.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let nominate = json!({"status": {"nominatedNodeName": candidate.node}});
    if let Err(error) = api
        .patch_status(
            &preemptor.name_any(),
            &PatchParams::default(),
            &Patch::Merge(nominate),
        )
        .await
    {
        tracing::debug!(%error, pod = %preemptor.name_any(), "cannot write nominatedNodeName");
    }
    let uid = preemptor.metadata.uid.clone().unwrap_or_default();
    let scheduler = preemptor
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| COMPONENT.to_string());
    for victim in &candidate.victims {
        let name = victim.name_any();
        let victims: Api<Pod> = Api::namespaced(
            client.clone(),
            &victim.namespace().unwrap_or_else(|| "default".into()),
        );
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "PreemptionByScheduler",
            "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        }]}});
        if let Err(error) = victims
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition))
            .await
        {
            tracing::debug!(%error, pod = %name, "cannot write DisruptionTarget");
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: victim.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match victims.delete(&name, &params).await {
            Ok(_) => {
                tracing::info!(pod = %name, node = %candidate.node, preemptor = %preemptor.name_any(), "preempted");
                let message = format!("Preempted by pod {uid} on node {}", candidate.node);
                events::record(&client, victim, "Normal", "Preempted", &message).await;
            }
            Err(error) => tracing::warn!(%error, pod = %name, "cannot delete a preemption victim"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    fn node(name: &str, cpu: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {
                    "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: &str, cpu: &str, priority: i32) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": name},
                "spec": {"nodeName": node, "priority": priority, "containers": [
                    {"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
            }))
            .unwrap(),
        )
    }

    fn names(c: &Candidate) -> Vec<String> {
        c.victims
            .iter()
            .map(|v| v.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn the_fewest_lower_priority_pods_are_evicted() {
        let snap = Snapshot::new(
            [node("a", "2")],
            [
                pod("l1", "a", "500m", 1),
                pod("l2", "a", "500m", 0),
                pod("l3", "a", "1", 0),
            ],
        );
        let c = preempt(&pod("hi", "", "1", 10), &snap, None, &[]).unwrap();
        assert_eq!(c.node, "a");
        // l1 is the most important and is reprieved; l3 alone frees enough.
        assert_eq!(names(&c), vec!["l3"]);
    }

    #[test]
    fn equal_or_higher_priority_pods_are_never_victims() {
        let snap = Snapshot::new([node("a", "2")], [pod("same", "a", "2", 10)]);
        let err = preempt(&pod("hi", "", "1", 10), &snap, None, &[]).unwrap_err();
        assert_eq!(
            err,
            "0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn the_node_with_the_least_important_victims_wins() {
        let a = || pod("a1", "a", "2", 5);
        let b = || [pod("b1", "b", "1", 3), pod("b2", "b", "1", 1)];
        let hi = pod("hi", "", "2", 10);
        // The lowest highest victim priority first, even with more victims.
        let snap = Snapshot::new(
            [node("a", "2"), node("b", "2")],
            [a()].into_iter().chain(b()),
        );
        let c = preempt(&hi, &snap, None, &[]).unwrap();
        assert_eq!(
            (c.node.as_str(), names(&c)),
            ("b", vec!["b1".to_string(), "b2".into()])
        );
        // Then the lowest sum of priorities.
        let snap = Snapshot::new(
            [node("a", "2"), node("b", "2"), node("c", "2")],
            [a(), pod("c1", "c", "2", 3)].into_iter().chain(b()),
        );
        let c = preempt(&hi, &snap, None, &[]).unwrap();
        assert_eq!((c.node.as_str(), names(&c)), ("c", vec!["c1".to_string()]));
        // A node too small even when empty is not a candidate.
        let snap = Snapshot::new([node("small", "1")], [pod("s", "small", "1", 0)]);
        assert_eq!(
            preempt(&hi, &snap, None, &[]).unwrap_err(),
            "0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn never_policy_and_unhelpful_nodes() {
        let snap = Snapshot::new([node("a", "1")], [pod("l", "a", "1", 0)]);
        let mut never = (*pod("hi", "", "1", 10)).clone();
        never.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert_eq!(preempt(&never, &snap, None, &[]).unwrap_err(), POLICY_NEVER);
        let mut pinned = (*pod("hi", "", "1", 10)).clone();
        pinned.spec.as_mut().unwrap().node_selector = Some([("x".into(), "y".into())].into());
        assert_eq!(
            preempt(&pinned, &snap, None, &[]).unwrap_err(),
            "0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn a_node_that_passes_every_filter_is_not_helped() {
        let snap = Snapshot::new([node("a", "2")], [pod("l", "a", "1", 0)]);
        assert_eq!(
            preempt(&pod("hi", "", "1", 10), &snap, None, &[]).unwrap_err(),
            "0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn a_terminating_victim_on_the_nominated_node_waits() {
        let mut going = (*pod("l", "a", "1", 0)).clone();
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let snap = Snapshot::new([node("a", "1")], [Arc::new(going)]);
        assert_eq!(
            preempt(&pod("hi", "", "1", 10), &snap, Some("a"), &[]).unwrap_err(),
            TERMINATING_VICTIM
        );
    }

    #[test]
    fn nominated_pods_hold_their_room_against_less_important_ones() {
        let snap = Snapshot::new([node("a", "2")], [pod("x", "a", "1", 0)]);
        let nominated = vec![(pod("hi", "", "1", 10), "a".to_string())];
        let low = pod("low", "", "1", 0);
        let view = with_nominated(&snap, &nominated, &low);
        assert!(crate::schedule(&low, &view, 0).is_err());
        let higher = pod("higher", "", "1", 20);
        let view = with_nominated(&snap, &nominated, &higher);
        assert!(crate::schedule(&higher, &view, 0).is_ok());
        let view = with_nominated(&snap, &nominated, &nominated[0].0);
        assert!(crate::schedule(&nominated[0].0, &view, 0).is_ok());
    }

    #[test]
    fn nominated_pods_counted_in_place_are_taken_back() {
        let mut snap = Snapshot::new([node("a", "2")], [pod("x", "a", "1", 0)]);
        let nominated = vec![(pod("hi", "", "1", 10), "a".to_string())];
        let low = pod("low", "", "1", 0);
        let added = add_nominated(&mut snap, &nominated, &low);
        assert_eq!(added, [("a".to_string(), "hi".to_string())]);
        assert!(crate::schedule(&low, &snap, 0).is_err());
        remove_nominated(&mut snap, &added);
        let a = snap.node("a").unwrap();
        assert_eq!((a.requested.milli_cpu, a.pods.len()), (1000, 1));
        assert!(crate::schedule(&low, &snap, 0).is_ok());
        let itself = add_nominated(&mut snap, &nominated, &nominated[0].0);
        assert!(itself.is_empty(), "a pod never holds room against itself");
    }

    fn labelled(name: &str, node: &str, cpu: &str, app: &str) -> Arc<Pod> {
        let mut p = (*pod(name, node, cpu, 0)).clone();
        p.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        Arc::new(p)
    }

    fn budget(app: &str, allowed: i32) -> Arc<PodDisruptionBudget> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": app, "namespace": "default"},
                "spec": {"selector": {"matchLabels": {"app": app}}},
                "status": {"disruptionsAllowed": allowed, "currentHealthy": 1,
                    "desiredHealthy": 1, "expectedPods": 1},
            }))
            .unwrap(),
        )
    }

    #[test]
    fn pods_a_budget_protects_are_reprieved_first() {
        // Either pod makes room and they are equally important: the budget decides, and the
        // pod it protects stays.
        let snap = Snapshot::new(
            [node("a", "2")],
            [
                labelled("db", "a", "1", "db"),
                labelled("web", "a", "1", "web"),
            ],
        );
        let hi = pod("hi", "", "1", 10);
        let c = preempt(&hi, &snap, None, &[budget("web", 0)]).unwrap();
        assert_eq!(names(&c), ["db"]);
        assert_eq!(c.violations, 0);
        let c = preempt(&hi, &snap, None, &[budget("db", 0)]).unwrap();
        assert_eq!(names(&c), ["web"]);
        // A budget with room left does not protect.
        let c = preempt(&hi, &snap, None, &[budget("db", 1), budget("web", 0)]).unwrap();
        assert_eq!(names(&c), ["db"]);
        // When every choice breaks a budget, preemption still happens (best effort).
        let c = preempt(&hi, &snap, None, &[budget("db", 0), budget("web", 0)]).unwrap();
        assert_eq!(c.victims.len(), 1);
        assert_eq!(c.violations, 1);
    }

    #[test]
    fn the_node_breaking_fewer_budgets_wins() {
        let snap = Snapshot::new(
            [node("a", "1"), node("b", "1")],
            [
                labelled("web", "a", "1", "web"),
                labelled("db", "b", "1", "db"),
            ],
        );
        let hi = pod("hi", "", "1", 10);
        let c = preempt(&hi, &snap, None, &[budget("web", 0)]).unwrap();
        assert_eq!((c.node.as_str(), names(&c)), ("b", vec!["db".to_string()]));
        let c = preempt(&hi, &snap, None, &[budget("db", 0)]).unwrap();
        assert_eq!(c.node, "a");
    }
}
