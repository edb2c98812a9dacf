//! The node lifecycle controller: kube-controller-manager's node lifecycle controller, its
//! taint-based eviction (the taint manager) and the pod GC's clean-up of pods left
//! terminating on lost nodes.
//!
//! - A node whose Lease in `kube-node-lease` (and node status heartbeat) is older than the
//!   grace period (`--node-monitor-grace-period`, 40 s) gets its Ready, MemoryPressure,
//!   DiskPressure and PIDPressure conditions set to `Unknown` (`NodeStatusUnknown`, "Kubelet
//!   stopped posting node status.").
//! - A node whose Ready condition is `Unknown` is tainted `node.kubernetes.io/unreachable`,
//!   one whose Ready condition is `False` `node.kubernetes.io/not-ready`, each with the
//!   `NoSchedule` and `NoExecute` effects; a Ready node loses those taints.
//! - Pods on an unreachable node get their Ready condition set to `False` (so Services drop
//!   them).
//! - Pods on a node with `NoExecute` taints they do not tolerate are deleted at once; pods
//!   tolerating them for `tolerationSeconds` are deleted that long after the taint's
//!   `timeAdded`; pods tolerating them without a limit stay.
//! - Nobody can finish the graceful deletion of a pod on an unreachable node, so once its
//!   grace period has run out it is deleted with `gracePeriodSeconds=0` (its controller
//!   replaces it; the agent removes its containers if the node comes back).
//!
//! Only nodes with a Lease are watched for heartbeats: a Node registered by hand has no agent
//! behind it. Times are compared with the objects' own timestamps (one clock per cluster);
//! heartbeats count from the controller's start at the earliest, so a control plane that was
//! down does not condemn every node when it comes back.
//!
//! [`plan_node`] and [`plan_pods`] are pure: (node, lease, pods, now, options) -> plans;
//! [`reconcile`] applies them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::backoff::ItemBackoff;
use crate::daemonset::tolerates;
use crate::informer::Informer;
use crate::util::{is_conflict, is_not_found, pod_is_finished, record_event};
use crate::{ControllerError, Shutdown};

/// How soon a node changed under a reconcile is looked at again.
const RETRY: Duration = Duration::from_millis(500);
/// The default `--node-monitor-grace-period`.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// Where node agents keep their Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The taint of a node whose Ready condition is `False`.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is `Unknown`.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The conditions set to `Unknown` when the node's agent stops posting.
pub const MONITORED_CONDITIONS: [&str; 4] =
    ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];
/// The component name on node events.
pub const NODE_COMPONENT: &str = "node-controller";
/// The component name on eviction events.
pub const TAINT_COMPONENT: &str = "taint-eviction-controller";

/// How the controller judges nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How long a node may go without a heartbeat before it is `Unknown`.
    pub grace_period: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }
}

/// A node's Ready condition as the controller leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// `True`.
    Ready,
    /// `False`: the agent reports the node not ready.
    NotReady,
    /// `Unknown`: the agent stopped posting.
    Unknown,
}

impl Readiness {
    fn of(status: &str) -> Readiness {
        match status {
            "True" => Readiness::Ready,
            "False" => Readiness::NotReady,
            _ => Readiness::Unknown,
        }
    }

    /// The taint key a node in this state carries, if any.
    pub fn taint_key(self) -> Option<&'static str> {
        match self {
            Readiness::Ready => None,
            Readiness::NotReady => Some(NOT_READY_TAINT),
            Readiness::Unknown => Some(UNREACHABLE_TAINT),
        }
    }
}

/// What to change on a Node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodePlan {
    /// New `status.conditions` (the monitored ones set to `Unknown`), when they change.
    pub conditions: Option<Vec<NodeCondition>>,
    /// New `spec.taints`, when they change.
    pub taints: Option<Vec<Taint>>,
    /// The Ready condition after the change (`None`: the node has none).
    pub readiness: Option<Readiness>,
    /// When to look again (the heartbeat goes stale then).
    pub recheck_after: Option<Duration>,
}

/// What to do to one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodAction {
    /// Set its Ready condition to `False` (its node is unreachable).
    MarkNotReady,
    /// Delete it (the taint manager's eviction).
    Evict,
    /// Delete it with `gracePeriodSeconds=0` (terminating on an unreachable node).
    ForceDelete,
}

/// A pod an action is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid (a precondition of deletes, so a successor of the same name is safe).
    pub uid: String,
}

/// What to do to the pods of one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodsPlan {
    /// The actions, in order.
    pub actions: Vec<(PodAction, PodRef)>,
    /// When to look again (the next eviction or forced deletion is due then).
    pub recheck_after: Option<Duration>,
}

/// When a pod must leave a node with `NoExecute` taints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// It tolerates every taint without a time limit.
    Never,
    /// At this time (now or earlier: at once).
    At(SystemTime),
}

/// A Kubernetes time as a system time.
fn system_time(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}

/// A system time as a Kubernetes time.
pub fn kube_time(t: SystemTime) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::try_from(t)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

fn conditions_of(node: &Node) -> Vec<NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
}

fn taints_of(node: &Node) -> Vec<Taint> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
}

/// The newest sign of life of a node: its Lease's `renewTime` or its Ready condition's
/// `lastHeartbeatTime`, whichever is later.
pub fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<SystemTime> {
    let renewed = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| SystemTime::from(t.0));
    let posted = conditions_of(node)
        .iter()
        .find(|c| c.type_ == "Ready")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(system_time);
    renewed.max(posted)
}

/// The monitored conditions set to `Unknown` (missing ones added), or `None` when all already
/// are. Heartbeat times stay; transition times are `now` for the conditions that change.
pub fn mark_unknown(conditions: &[NodeCondition], now: SystemTime) -> Option<Vec<NodeCondition>> {
    let mut out = conditions.to_vec();
    let mut changed = false;
    for kind in MONITORED_CONDITIONS {
        match out.iter_mut().find(|c| c.type_ == kind) {
            Some(c) if c.status == "Unknown" => {}
            Some(c) => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(kube_time(now));
                changed = true;
            }
            None => {
                out.push(NodeCondition {
                    type_: kind.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: None,
                    last_transition_time: Some(kube_time(now)),
                });
                changed = true;
            }
        }
    }
    changed.then_some(out)
}

/// The node's taints with the not-ready/unreachable ones matching `readiness` (kept with their
/// `timeAdded` when present, added with `now` otherwise); `None` when nothing changes.
pub fn desired_taints(
    taints: &[Taint],
    readiness: Readiness,
    now: SystemTime,
) -> Option<Vec<Taint>> {
    let wanted = readiness.taint_key();
    let mut out: Vec<Taint> = taints
        .iter()
        .filter(|t| {
            let ours = t.key == NOT_READY_TAINT || t.key == UNREACHABLE_TAINT;
            let ours_effect = t.effect == "NoSchedule" || t.effect == "NoExecute";
            !(ours && ours_effect) || Some(t.key.as_str()) == wanted
        })
        .cloned()
        .collect();
    if let Some(key) = wanted {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: Some(kube_time(now)),
                    value: None,
                });
            }
        }
    }
    (out != taints).then_some(out)
}

/// What the node needs at `now`: its conditions marked `Unknown` when its heartbeat is older
/// than the grace period (only nodes with a Lease are judged), and the taints of its Ready
/// condition. Heartbeats count from `watching_since` at the earliest (the controller's start),
/// so nodes are not condemned for the time the control plane itself was down.
pub fn plan_node(
    node: &Node,
    lease: Option<&Lease>,
    now: SystemTime,
    watching_since: SystemTime,
    options: &Options,
) -> NodePlan {
    let mut plan = NodePlan::default();
    let mut conditions = conditions_of(node);
    if let Some(lease) = lease {
        let created = |t: Option<&Time>| t.map(system_time);
        let probe = last_heartbeat(node, Some(lease))
            .or_else(|| created(lease.metadata.creation_timestamp.as_ref()))
            .or_else(|| created(node.metadata.creation_timestamp.as_ref()))
            .unwrap_or(now)
            .max(watching_since);
        let deadline = probe + options.grace_period;
        match deadline.duration_since(now) {
            Ok(left) if !left.is_zero() => plan.recheck_after = Some(left),
            _ => {
                if let Some(marked) = mark_unknown(&conditions, now) {
                    conditions = marked.clone();
                    plan.conditions = Some(marked);
                }
            }
        }
    }
    plan.readiness = conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| Readiness::of(&c.status));
    if let Some(readiness) = plan.readiness {
        plan.taints = desired_taints(&taints_of(node), readiness, now);
    }
    plan
}

/// When a pod with `tolerations` must leave a node with these `NoExecute` taints (each with
/// the time it took effect): at once if one is not tolerated, else the earliest taint time plus
/// the shortest `tolerationSeconds` of the tolerations it matched; never if none has a limit.
pub fn eviction_time(tolerations: &[Toleration], taints: &[(Taint, SystemTime)]) -> Eviction {
    let mut earliest: Option<SystemTime> = None;
    for (taint, since) in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Eviction::At(*since);
        }
        let seconds = matching
            .iter()
            .filter_map(|t| t.toleration_seconds)
            .min()
            .map(|s| Duration::from_secs(s.max(0).unsigned_abs()));
        if let Some(seconds) = seconds {
            let at = *since + seconds;
            earliest = Some(earliest.map_or(at, |e| e.min(at)));
        }
    }
    earliest.map_or(Eviction::Never, Eviction::At)
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

fn pod_ready_status(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// What the pods of a node need at `now`, given its Ready condition and its `NoExecute` taints
/// (each with the time it took effect).
pub fn plan_pods(
    readiness: Option<Readiness>,
    no_execute: &[(Taint, SystemTime)],
    pods: &[Arc<Pod>],
    now: SystemTime,
) -> PodsPlan {
    let mut plan = PodsPlan::default();
    let later = |at: SystemTime, plan: &mut PodsPlan| {
        if let Ok(left) = at.duration_since(now) {
            plan.recheck_after = Some(plan.recheck_after.map_or(left, |r| r.min(left)));
        }
    };
    let unreachable = readiness == Some(Readiness::Unknown);
    for pod in pods {
        if pod_is_finished(pod) {
            continue;
        }
        if let Some(deleting) = &pod.metadata.deletion_timestamp {
            if unreachable {
                let due = system_time(deleting);
                if due <= now {
                    plan.actions.push((PodAction::ForceDelete, pod_ref(pod)));
                } else {
                    later(due, &mut plan);
                }
            }
            continue;
        }
        if unreachable && pod_ready_status(pod).is_some_and(|s| s != "False") {
            plan.actions.push((PodAction::MarkNotReady, pod_ref(pod)));
        }
        if no_execute.is_empty() {
            continue;
        }
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.clone())
            .unwrap_or_default();
        match eviction_time(&tolerations, no_execute) {
            Eviction::Never => {}
            Eviction::At(at) if at <= now => plan.actions.push((PodAction::Evict, pod_ref(pod))),
            Eviction::At(at) => later(at, &mut plan),
        }
    }
    plan
}

/// The shared state of the node lifecycle controller.
pub struct Context {
    client: Client,
    leases: Store<Lease>,
    pods: Store<Pod>,
    options: Options,
    /// When the controller started.
    started: SystemTime,
    /// The pods evicted per node (uids), so a cache that has not seen the delete yet does not
    /// evict (and report) them twice.
    evicted: Mutex<HashMap<String, HashSet<String>>>,
    /// When each `NoExecute` taint without `timeAdded` was first seen, by (node, key, effect).
    first_seen: Mutex<HashMap<(String, String, String), SystemTime>>,
    backoff: Mutex<ItemBackoff>,
}

impl Context {
    /// The node's `NoExecute` taints with the time each took effect.
    fn no_execute(
        &self,
        node: &str,
        taints: &[Taint],
        now: SystemTime,
    ) -> Vec<(Taint, SystemTime)> {
        let mut seen = self.first_seen.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<_> = taints
            .iter()
            .map(|t| (node.to_string(), t.key.clone(), t.effect.clone()))
            .collect();
        seen.retain(|k, _| k.0 != node || keys.contains(k));
        taints
            .iter()
            .zip(keys)
            .filter(|(t, _)| t.effect == "NoExecute")
            .map(|(t, key)| {
                let since = match &t.time_added {
                    Some(added) => system_time(added),
                    None => *seen.entry(key).or_insert(now),
                };
                (t.clone(), since)
            })
            .collect()
    }
}

/// Patches `patch` into Node `name` (its status when `status`); `None` when the Node is gone
/// or changed since the cache saw it (the change brings another reconcile).
async fn patch_node(
    api: &Api<Node>,
    name: &str,
    status: bool,
    patch: serde_json::Value,
) -> Result<Option<Node>, ControllerError> {
    let params = PatchParams::default();
    let result = if status {
        api.patch_status(name, &params, &Patch::Merge(&patch)).await
    } else {
        api.patch(name, &params, &Patch::Merge(&patch)).await
    };
    match result {
        Ok(node) => Ok(Some(node)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) if is_conflict(&e) => {
            tracing::debug!(node = %name, "the node changed meanwhile: looking again");
            Ok(None)
        }
        Err(e) => Err(ControllerError::api(
            name,
            if status {
                "update the node conditions"
            } else {
                "update the node taints"
            },
            e,
        )),
    }
}

/// One look at a Node: conditions, taints, then its pods.
pub async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let name = node.name_any();
    if node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let now = SystemTime::now();
    let lease = ctx
        .leases
        .get(&ObjectRef::new(&name).within(LEASE_NAMESPACE));
    let plan = plan_node(&node, lease.as_deref(), now, ctx.started, &ctx.options);
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut version = node.resource_version();
    if let Some(conditions) = &plan.conditions {
        let patch = json!({
            "metadata": {"resourceVersion": version},
            "status": {"conditions": conditions},
        });
        let Some(updated) = patch_node(&api, &name, true, patch).await? else {
            return Ok(Action::requeue(RETRY));
        };
        version = updated.resource_version();
        tracing::info!(node = %name, "node stopped posting status: its conditions are Unknown");
        let was_ready = conditions_of(&node)
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if was_ready {
            let message = format!("Node {name} status is now: NodeNotReady");
            record_event(
                &ctx.client,
                NODE_COMPONENT,
                &updated,
                "Normal",
                "NodeNotReady",
                &message,
            )
            .await;
        }
    }
    let taints = match &plan.taints {
        Some(taints) => {
            let patch = json!({
                "metadata": {"resourceVersion": version},
                "spec": {"taints": taints},
            });
            if patch_node(&api, &name, false, patch).await?.is_none() {
                return Ok(Action::requeue(RETRY));
            }
            tracing::info!(node = %name, readiness = ?plan.readiness, "node taints updated");
            taints.clone()
        }
        None => taints_of(&node),
    };
    let no_execute = ctx.no_execute(&name, &taints, now);
    let pods = ctx.pods.state_filter(|p| {
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
    });
    let pods_plan = plan_pods(plan.readiness, &no_execute, &pods, now);
    let mut evicted = {
        let mut all = ctx.evicted.lock().unwrap_or_else(|e| e.into_inner());
        let mut mine = all.remove(&name).unwrap_or_default();
        mine.retain(|uid| pods.iter().any(|p| p.metadata.uid.as_ref() == Some(uid)));
        mine
    };
    let mut result = Ok(());
    for (action, target) in &pods_plan.actions {
        let Some(pod) = pods
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(target.uid.as_str()))
        else {
            continue;
        };
        if *action == PodAction::Evict && evicted.contains(&target.uid) {
            continue;
        }
        result = apply_pod_action(&ctx, *action, target, pod).await;
        if result.is_err() {
            break;
        }
        if *action == PodAction::Evict {
            evicted.insert(target.uid.clone());
        }
    }
    if !evicted.is_empty() {
        let mut all = ctx.evicted.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(name.clone(), evicted);
    }
    result?;
    let recheck = [plan.recheck_after, pods_plan.recheck_after]
        .into_iter()
        .flatten()
        .min()
        // A little late rather than early, so the deadline has surely passed.
        .map(|d| (d + Duration::from_millis(200)).min(ctx.options.grace_period));
    Ok(crate::util::succeeded(&ctx.backoff, &name, recheck))
}

/// Applies one pod action.
async fn apply_pod_action(
    ctx: &Context,
    action: PodAction,
    target: &PodRef,
    pod: &Pod,
) -> Result<(), ControllerError> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &target.namespace);
    let key = format!("{}/{}", target.namespace, target.name);
    let preconditions = Some(Preconditions {
        uid: Some(target.uid.clone()),
        resource_version: None,
    });
    match action {
        PodAction::MarkNotReady => {
            let mut conditions = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                c.status = "False".into();
                c.last_transition_time = Some(kube_time(SystemTime::now()));
            }
            let patch = json!({
                "metadata": {"resourceVersion": pod.resource_version()},
                "status": {"conditions": conditions},
            });
            match api
                .patch_status(&target.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    record_event(
                        &ctx.client,
                        NODE_COMPONENT,
                        pod,
                        "Warning",
                        "NodeNotReady",
                        "Node is not ready",
                    )
                    .await;
                }
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => return Err(ControllerError::api(&key, "mark the pod not ready", e)),
            }
        }
        PodAction::Evict => {
            // As the taint manager does: a DisruptionTarget condition first (merged by its
            // type, the other conditions stay), then the delete.
            let disrupted = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "DisruptionTarget"));
            if !disrupted {
                let patch = json!({"status": {"conditions": [{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByTaintManager",
                    "message": "Taint manager: deleting due to NoExecute taint",
                    "lastTransitionTime": kube_time(SystemTime::now()),
                }]}});
                if let Err(error) = api
                    .patch_status(
                        &target.name,
                        &PatchParams::default(),
                        &Patch::Strategic(&patch),
                    )
                    .await
                {
                    tracing::debug!(%error, pod = %key, "cannot add the DisruptionTarget condition");
                }
            }
            let message = format!("Marking for deletion Pod {key}");
            record_event(
                &ctx.client,
                TAINT_COMPONENT,
                pod,
                "Normal",
                "TaintManagerEviction",
                &message,
            )
            .await;
            let params = DeleteParams {
                preconditions,
                ..DeleteParams::default()
            };
            match api.delete(&target.name, &params).await {
                Ok(_) => {
                    tracing::info!(pod = %key, "evicted: its node has a NoExecute taint it does not tolerate")
                }
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => return Err(ControllerError::api(&key, "evict the pod", e)),
            }
        }
        PodAction::ForceDelete => {
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions,
                ..DeleteParams::default()
            };
            match api.delete(&target.name, &params).await {
                Ok(_) => {
                    tracing::info!(pod = %key, "force-deleted: terminating on an unreachable node")
                }
                Err(e) if is_not_found(&e) || is_conflict(&e) => {}
                Err(e) => return Err(ControllerError::api(&key, "force-delete the pod", e)),
            }
        }
    }
    Ok(())
}

fn error_policy(node: Arc<Node>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    crate::util::failed(&ctx.backoff, "node", &node.name_any(), error)
}

/// Runs the node lifecycle controller until `shutdown`.
pub async fn run(client: Client, pods: &Informer<Pod>, options: Options, shutdown: Shutdown) {
    let leases = Informer::spawn(
        Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE),
        watcher::Config::default(),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        leases: leases.store(),
        pods: pods.store(),
        options,
        started: SystemTime::now(),
        evicted: Mutex::new(HashMap::new()),
        first_seen: Mutex::new(HashMap::new()),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    if pods.store().wait_until_ready().await.is_err()
        || leases.store().wait_until_ready().await.is_err()
    {
        return;
    }
    Controller::new(Api::<Node>::all(client), watcher::Config::default())
        .watches_stream(leases.subscribe(), |lease: Lease| {
            Some(ObjectRef::<Node>::new(&lease.name_any()))
        })
        .watches_stream(pods.subscribe(), |pod: Pod| {
            pod.spec
                .and_then(|s| s.node_name)
                .filter(|n| !n.is_empty())
                .map(|n| ObjectRef::<Node>::new(&n))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
#[path = "nodelifecycle_tests.rs"]
mod tests;
