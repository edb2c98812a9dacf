//! The DaemonSet controller: one pod per eligible node (matching the template's
//! `nodeSelector` and required node affinity, every `NoSchedule`/`NoExecute` taint
//! tolerated), created for new nodes and removed from nodes that go or stop being eligible,
//! rolled to a new template `maxUnavailable` nodes at a time, with status.
//!
//! Placement: pods are created with `spec.nodeName` set directly (what upstream did before
//! 1.12) rather than upstream's node affinity on `metadata.name` plus the scheduler: the
//! controller already decided the node, and this works whatever the scheduler supports. Pods
//! get upstream's default daemon tolerations (not-ready, unreachable, pressure,
//! unschedulable).
//!
//! [`decide`] is pure: (DaemonSet, nodes, its pods) -> [`Plan`]; [`reconcile`] applies it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::backoff::ItemBackoff;
use crate::deployment::rollout::template_hash;
use crate::expectations::Expectations;
use crate::informer::Informer;
use crate::util::{
    controller_of, controller_ref, is_not_found, key_of, pod_is_finished, pod_is_ready,
    record_event,
};
use crate::{ControllerError, Shutdown};

/// The component name on events.
pub const COMPONENT: &str = "daemonset-controller";
/// The label holding a pod's template revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// What one reconcile of a DaemonSet should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Nodes to create a pod on.
    pub create: Vec<String>,
    /// Pods (name, uid) to delete.
    pub delete: Vec<(String, String)>,
    /// The status to report.
    pub status: DaemonSetStatus,
}

/// Whether `toleration` tolerates `taint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if key.is_empty() {
        return toleration.operator.as_deref() == Some("Exists");
    }
    if key != taint.key {
        return false;
    }
    match toleration.operator.as_deref() {
        Some("Exists") => true,
        _ => {
            toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default()
        }
    }
}

fn matches_requirement(labels: &BTreeMap<String, String>, r: &NodeSelectorRequirement) -> bool {
    let values = r.values.clone().unwrap_or_default();
    let value = labels.get(&r.key);
    let number = |s: Option<&String>| s.and_then(|v| v.parse::<i64>().ok());
    let bound = values.first().and_then(|v| v.parse::<i64>().ok());
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => !value.is_some_and(|v| values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => matches!((number(value), bound), (Some(v), Some(b)) if v > b),
        "Lt" => matches!((number(value), bound), (Some(v), Some(b)) if v < b),
        _ => false,
    }
}

/// Whether a pod of `ds` belongs on `node`: node selector, required node affinity (label
/// expressions), and every `NoSchedule`/`NoExecute` taint tolerated.
pub fn node_is_eligible(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let labels = node.labels().clone();
    if spec
        .node_selector
        .iter()
        .flatten()
        .any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    if let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        let fits = required.node_selector_terms.iter().any(|term| {
            term.match_expressions
                .iter()
                .flatten()
                .all(|r| matches_requirement(&labels, r))
                && term.match_fields.iter().flatten().all(|r| {
                    let fields = BTreeMap::from([("metadata.name".to_string(), node.name_any())]);
                    matches_requirement(&fields, r)
                })
        });
        if !fits {
            return false;
        }
    }
    let tolerations = daemon_tolerations(spec.tolerations.unwrap_or_default());
    node.spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// `tolerations` plus upstream's defaults for daemon pods.
pub fn daemon_tolerations(mut tolerations: Vec<Toleration>) -> Vec<Toleration> {
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        if !tolerations
            .iter()
            .any(|t| t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect))
        {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Toleration::default()
            });
        }
    }
    tolerations
}

/// The template revision of `ds`.
pub fn revision(ds: &DaemonSet) -> String {
    template_hash(
        ds.spec.as_ref().map(|s| &s.template),
        ds.status.as_ref().and_then(|s| s.collision_count),
    )
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(REVISION_LABEL)
        .map(String::as_str)
}

/// Decides for `ds` given every node and the pods it controls.
pub fn decide(ds: &DaemonSet, nodes: &[Arc<Node>], pods: &[Arc<Pod>], manage: bool) -> Plan {
    let spec = ds.spec.clone().unwrap_or_default();
    let update = revision(ds);
    let mut plan = Plan::default();
    let id = |p: &Pod| (p.name_any(), p.metadata.uid.clone().unwrap_or_default());
    let mut by_node: BTreeMap<String, Vec<&Arc<Pod>>> = BTreeMap::new();
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        by_node.entry(node).or_default().push(pod);
    }
    let eligible: Vec<String> = nodes
        .iter()
        .filter(|n| node_is_eligible(ds, n))
        .map(|n| n.name_any())
        .collect();
    let (mut current, mut ready, mut updated, mut misscheduled) = (0, 0, 0, 0);
    let mut old_ready: Vec<&Arc<Pod>> = Vec::new();
    let mut unavailable = 0;
    for node in &eligible {
        let mut here: Vec<&Arc<Pod>> = by_node.get(node).cloned().unwrap_or_default();
        for failed in here.iter().filter(|p| pod_is_finished(p)) {
            plan.delete.push(id(failed));
        }
        here.retain(|p| !pod_is_finished(p));
        here.sort_by_key(|p| p.metadata.creation_timestamp.clone());
        match here.first() {
            None => {
                plan.create.push(node.clone());
                unavailable += 1;
            }
            Some(pod) => {
                current += 1;
                let is_ready = pod_is_ready(pod);
                let is_updated = revision_of(pod) == Some(update.as_str());
                ready += i32::from(is_ready);
                updated += i32::from(is_updated);
                unavailable += i32::from(!is_ready);
                if !is_updated && is_ready {
                    old_ready.push(pod);
                } else if !is_updated {
                    // An old pod that is not ready anyway: replace it at once.
                    plan.delete.push(id(pod));
                }
                plan.delete.extend(here.iter().skip(1).map(|p| id(p)));
            }
        }
    }
    for (node, here) in &by_node {
        if !eligible.contains(node) {
            misscheduled += i32::try_from(here.len()).unwrap_or(i32::MAX);
            plan.delete.extend(here.iter().map(|p| id(p)));
        }
    }
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("OnDelete") {
        let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);
        let max_unavailable = match strategy
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone())
        {
            None => 1,
            Some(IntOrString::Int(n)) => n,
            Some(IntOrString::String(s)) => {
                let pct = s.trim_end_matches('%').parse::<i32>().unwrap_or(0);
                (desired * pct / 100).max(1)
            }
        };
        let budget = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0);
        plan.delete
            .extend(old_ready.iter().take(budget).map(|p| id(p)));
    }
    if !manage {
        plan.create.clear();
        plan.delete.clear();
    }
    let desired = i32::try_from(eligible.len()).unwrap_or(i32::MAX);
    plan.status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: Some(ready),
        // Always set: a merge patch cannot clear an omitted field.
        number_unavailable: Some((desired - ready).max(0)),
        updated_number_scheduled: Some(updated),
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    plan
}

/// The pod of `ds` for `node`: the template, bound to the node, with the revision label and
/// the daemon tolerations.
pub fn pod_for(ds: &DaemonSet, node: &str) -> Pod {
    let template = ds.spec.clone().unwrap_or_default().template;
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), revision(ds));
    let mut spec = template.spec.unwrap_or_default();
    spec.node_name = Some(node.to_string());
    spec.tolerations = Some(daemon_tolerations(spec.tolerations.unwrap_or_default()));
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(ds)]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The shared state of the DaemonSet controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    nodes: Store<Node>,
    expectations: Expectations,
    backoff: Mutex<ItemBackoff>,
}

/// One reconcile of a DaemonSet.
pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = ds.namespace().unwrap_or_default();
    let key = key_of(ds.as_ref());
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let pods = ctx.pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(namespace.as_str())
            && controller_of(&p.metadata).is_some_and(|c| c.uid == uid)
    });
    let manage = ds.metadata.deletion_timestamp.is_none()
        && ctx.expectations.satisfied(
            &key,
            |name| {
                pods.iter()
                    .any(|p| p.metadata.name.as_deref() == Some(name))
            },
            |uid| {
                !pods.iter().any(|p| {
                    p.metadata.uid.as_deref() == Some(uid)
                        && p.metadata.deletion_timestamp.is_none()
                })
            },
        );
    let plan = decide(&ds, &ctx.nodes.state(), &pods, manage);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    for node in &plan.create {
        match api
            .create(&PostParams::default(), &pod_for(&ds, node))
            .await
        {
            Ok(pod) => {
                ctx.expectations.expect(&key, [pod.name_any()], []);
                let message = format!("Created pod: {}", pod.name_any());
                record_event(
                    &ctx.client,
                    COMPONENT,
                    ds.as_ref(),
                    "Normal",
                    "SuccessfulCreate",
                    &message,
                )
                .await;
            }
            Err(e) => return Err(ControllerError::api(&key, "create a pod", e)),
        }
    }
    if !plan.delete.is_empty() {
        ctx.expectations
            .expect(&key, [], plan.delete.iter().map(|(_, u)| u.clone()));
        for (name, _) in &plan.delete {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {
                    let message = format!("Deleted pod: {name}");
                    record_event(
                        &ctx.client,
                        COMPONENT,
                        ds.as_ref(),
                        "Normal",
                        "SuccessfulDelete",
                        &message,
                    )
                    .await;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(ControllerError::api(&key, "delete a pod", e)),
            }
        }
    }
    if ds.status.as_ref() != Some(&plan.status) {
        let api = Api::<DaemonSet>::namespaced(ctx.client.clone(), &namespace);
        crate::util::patch_status(&api, &ds.name_any(), &key, &plan.status).await?;
    }
    Ok(crate::util::succeeded(&ctx.backoff, &key, None))
}

fn error_policy(ds: Arc<DaemonSet>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    crate::util::failed(&ctx.backoff, "daemonset", &key_of(ds.as_ref()), error)
}

fn every_daemonset(store: &Store<DaemonSet>) -> Vec<ObjectRef<DaemonSet>> {
    store
        .state()
        .iter()
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// Runs the DaemonSet controller until `shutdown`.
pub async fn run(client: Client, pods: &Informer<Pod>, shutdown: Shutdown) {
    let nodes = Informer::spawn(Api::<Node>::all(client.clone()), watcher::Config::default());
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.store(),
        nodes: nodes.store(),
        expectations: Expectations::default(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    if pods.store().wait_until_ready().await.is_err()
        || nodes.store().wait_until_ready().await.is_err()
    {
        return;
    }
    let controller = Controller::new(Api::<DaemonSet>::all(client), watcher::Config::default());
    let sets = controller.store();
    controller
        .owns_stream(pods.subscribe())
        .watches_stream(nodes.subscribe(), move |_| every_daemonset(&sets))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
#[path = "daemonset_tests.rs"]
mod tests;
