//! The disruption controller: the status of every PodDisruptionBudget, which the eviction
//! subresource (and so `kubectl drain`) and the scheduler's preemption read.
//!
//! For a budget selecting some pods: `expectedPods` is the number of pods there should be
//! (the scale of their controllers when the budget is `maxUnavailable` or a percentage, the
//! pods found for an integer `minAvailable`), `desiredHealthy` how many must stay ready,
//! `currentHealthy` how many are ready (not being deleted, not just evicted), and
//! `disruptionsAllowed` the difference (never below 0). `disruptedPods` lists the pods the API
//! server evicted and this controller has not yet seen go; an entry lapses after two minutes
//! (an eviction whose delete never happened). A budget whose pods have controllers without
//! a known scale allows no disruption (kube-controller-manager's fail-safe).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::backoff::ItemBackoff;
use crate::informer::Informer;
use crate::util::{controller_of, is_conflict, is_not_found, key_of, pod_is_ready, selector};
use crate::{ControllerError, Shutdown};

/// How long an eviction may stay unconfirmed by the pod's deletion.
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);
/// The condition the budget's status carries.
pub const CONDITION: &str = "DisruptionAllowed";

/// The pods a budget selects: same namespace, matching its selector (a nil selector selects
/// none, an empty one every pod of the namespace).
pub fn selected<'a>(pdb: &PodDisruptionBudget, pods: &'a [Arc<Pod>]) -> Vec<&'a Arc<Pod>> {
    let Some(matcher) = selector(pdb.spec.as_ref().and_then(|s| s.selector.as_ref())) else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| p.metadata.namespace == pdb.metadata.namespace)
        .filter(|p| matcher.matches(p.labels()))
        .collect()
}

/// `value` of `total`: an integer as is, `N%` rounded up.
pub fn scaled(value: &IntOrString, total: i32) -> Option<i32> {
    match value {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(s) => {
            let percent: i64 = s.strip_suffix('%')?.parse().ok()?;
            let total = i64::from(total);
            i32::try_from((percent * total + 99) / 100).ok()
        }
    }
}

/// Whether the budget counts expected pods from the pods' controllers.
pub fn needs_controller_scale(pdb: &PodDisruptionBudget) -> bool {
    let spec = pdb.spec.clone().unwrap_or_default();
    spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)))
}

/// (expectedPods, desiredHealthy) of a budget, given its pods and (when it needs them) the
/// summed scale of their controllers.
pub fn expected_and_desired(
    pdb: &PodDisruptionBudget,
    pod_count: i32,
    controllers_scale: i32,
) -> (i32, i32) {
    let Some(spec) = pdb.spec.as_ref() else {
        return (0, 0);
    };
    if let Some(max) = &spec.max_unavailable {
        let unavailable = scaled(max, controllers_scale).unwrap_or(0);
        (controllers_scale, (controllers_scale - unavailable).max(0))
    } else if let Some(min) = &spec.min_available {
        match min {
            IntOrString::Int(n) => (pod_count, *n),
            IntOrString::String(_) => (
                controllers_scale,
                scaled(min, controllers_scale).unwrap_or(controllers_scale),
            ),
        }
    } else {
        (0, 0)
    }
}

/// The status the budget should have. `scale` is the summed scale of the pods' controllers
/// (`None` when one has no known scale: then no disruption is allowed).
pub fn desired_status(
    pdb: &PodDisruptionBudget,
    pods: &[&Arc<Pod>],
    scale: Option<i32>,
    now: SystemTime,
) -> (PodDisruptionBudgetStatus, Option<Duration>) {
    let old = pdb.status.clone().unwrap_or_default();
    let by_name: HashMap<String, &Arc<Pod>> = pods.iter().map(|p| (p.name_any(), *p)).collect();
    // Evictions not yet confirmed: the pod still exists and is not being deleted.
    let mut disrupted = BTreeMap::new();
    let mut next_expiry: Option<Duration> = None;
    for (name, at) in old.disrupted_pods.clone().unwrap_or_default() {
        let Some(pod) = by_name.get(&name) else {
            continue;
        };
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let evicted = SystemTime::from(at.0);
        let age = now.duration_since(evicted).unwrap_or_default();
        if age >= DELETION_TIMEOUT {
            continue;
        }
        let left = DELETION_TIMEOUT - age;
        next_expiry = Some(next_expiry.map_or(left, |n| n.min(left)));
        disrupted.insert(name, at);
    }
    let pod_count = i32::try_from(pods.len()).unwrap_or(i32::MAX);
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| !disrupted.contains_key(&p.name_any()))
        .filter(|p| pod_is_ready(p))
        .count();
    let current_healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    let (expected, desired, allowed, reason, message) = match scale {
        Some(scale) => {
            let (expected, desired) = expected_and_desired(pdb, pod_count, scale);
            let allowed = (current_healthy - desired).max(0);
            let reason = if allowed > 0 {
                "SufficientPods"
            } else {
                "InsufficientPods"
            };
            (expected, desired, allowed, reason, String::new())
        }
        None => (
            0,
            0,
            0,
            "SyncFailed",
            "found pods whose controller has no known scale".to_string(),
        ),
    };
    let generation = pdb.metadata.generation;
    let status_text = if allowed > 0 { "True" } else { "False" };
    let old_condition = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == CONDITION)
        .cloned();
    let transition = match &old_condition {
        Some(c) if c.status == status_text => c.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::try_from(now).unwrap_or_default()),
    };
    let condition = Condition {
        type_: CONDITION.to_string(),
        status: status_text.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    };
    let status = PodDisruptionBudgetStatus {
        observed_generation: generation,
        disrupted_pods: Some(disrupted).filter(|d| !d.is_empty()),
        disruptions_allowed: allowed,
        current_healthy,
        desired_healthy: desired,
        expected_pods: expected,
        conditions: Some(vec![condition]),
    };
    (status, next_expiry)
}

/// The shared state of the controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    backoff: Mutex<ItemBackoff>,
}

/// The scale of a pod's controller (Deployment through its ReplicaSet, ReplicaSet,
/// StatefulSet, ReplicationController); `None` for other kinds or when it is gone.
async fn controller_scale(
    client: &Client,
    namespace: &str,
    kind: &str,
    name: &str,
) -> Result<Option<(String, i32)>, kube::Error> {
    match kind {
        "ReplicaSet" => {
            let api: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
            let Some(rs) = api.get_opt(name).await? else {
                return Ok(None);
            };
            if let Some(owner) = controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
                return Ok(api.get_opt(&owner.name).await?.map(|d| {
                    (
                        format!("Deployment/{}", owner.name),
                        d.spec.and_then(|s| s.replicas).unwrap_or(1),
                    )
                }));
            }
            let replicas = rs.spec.and_then(|s| s.replicas).unwrap_or(1);
            Ok(Some((format!("ReplicaSet/{name}"), replicas)))
        }
        "StatefulSet" => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
            Ok(api.get_opt(name).await?.map(|s| {
                (
                    format!("StatefulSet/{name}"),
                    s.spec.and_then(|s| s.replicas).unwrap_or(1),
                )
            }))
        }
        "ReplicationController" => {
            let api: Api<ReplicationController> = Api::namespaced(client.clone(), namespace);
            Ok(api.get_opt(name).await?.map(|r| {
                (
                    format!("ReplicationController/{name}"),
                    r.spec.and_then(|s| s.replicas).unwrap_or(1),
                )
            }))
        }
        _ => Ok(None),
    }
}

/// The summed scale of the controllers of `pods` (each counted once); `None` when a pod has
/// no controller or one whose scale is unknown.
async fn scale_of(
    client: &Client,
    key: &str,
    pods: &[&Arc<Pod>],
) -> Result<Option<i32>, ControllerError> {
    let mut seen: HashMap<String, i32> = HashMap::new();
    let mut looked_up: HashMap<(String, String), Option<(String, i32)>> = HashMap::new();
    for pod in pods {
        let Some(owner) = controller_of(&pod.metadata) else {
            return Ok(None);
        };
        let namespace = pod.namespace().unwrap_or_default();
        let lookup = (owner.kind.clone(), owner.name.clone());
        let found = match looked_up.get(&lookup) {
            Some(found) => found.clone(),
            None => {
                let found = controller_scale(client, &namespace, &owner.kind, &owner.name)
                    .await
                    .map_err(|e| ControllerError::api(key, "read a pod controller's scale", e))?;
                looked_up.insert(lookup, found.clone());
                found
            }
        };
        let Some((controller, replicas)) = found else {
            return Ok(None);
        };
        seen.insert(controller, replicas);
    }
    Ok(Some(seen.values().sum()))
}

/// Whether two statuses differ in anything but the condition's transition time.
fn differs(have: Option<&PodDisruptionBudgetStatus>, want: &PodDisruptionBudgetStatus) -> bool {
    let Some(have) = have else {
        return true;
    };
    let strip = |s: &PodDisruptionBudgetStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(have) != strip(want)
}

/// Brings one budget's status up to date.
pub async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let key = key_of(pdb.as_ref());
    if pdb.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let all = ctx.pods.state();
    let pods = selected(&pdb, &all);
    let scale = if needs_controller_scale(&pdb) {
        scale_of(&ctx.client, &key, &pods).await?
    } else {
        Some(0)
    };
    let (status, next_expiry) = desired_status(&pdb, &pods, scale, SystemTime::now());
    if differs(pdb.status.as_ref(), &status) {
        let api: Api<PodDisruptionBudget> =
            Api::namespaced(ctx.client.clone(), &pdb.namespace().unwrap_or_default());
        let mut updated = (*pdb).clone();
        updated.status = Some(status);
        match api
            .replace_status(&pdb.name_any(), &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            // Somebody (an eviction) wrote first: the watch brings the new version.
            Err(e) if is_conflict(&e) => return Ok(Action::requeue(Duration::from_millis(100))),
            Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
            Err(e) => return Err(ControllerError::api(&key, "update status", e)),
        }
    }
    // Controllers' scale is read, not watched: look again now and then.
    let again = next_expiry
        .map(|d| d + Duration::from_millis(100))
        .unwrap_or(Duration::from_secs(30))
        .min(Duration::from_secs(30));
    Ok(crate::util::succeeded(&ctx.backoff, &key, Some(again)))
}

fn error_policy(
    pdb: Arc<PodDisruptionBudget>,
    error: &ControllerError,
    ctx: Arc<Context>,
) -> Action {
    crate::util::failed(
        &ctx.backoff,
        "poddisruptionbudget",
        &key_of(pdb.as_ref()),
        error,
    )
}

/// The budgets of a pod's namespace (a pod whose labels changed may have left one).
fn budgets_of(
    store: &Store<PodDisruptionBudget>,
    pod: &Pod,
) -> Vec<ObjectRef<PodDisruptionBudget>> {
    store
        .state()
        .iter()
        .filter(|b| b.metadata.namespace == pod.metadata.namespace)
        .map(|b| ObjectRef::from_obj(b.as_ref()))
        .collect()
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, pods: &Informer<Pod>, shutdown: Shutdown) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.store(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    if pods.store().wait_until_ready().await.is_err() {
        return;
    }
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    controller
        .watches_stream(pods.subscribe(), move |pod| budgets_of(&budgets, &pod))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
#[path = "disruption_tests.rs"]
mod tests;
