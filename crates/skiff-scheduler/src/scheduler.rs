//! The scheduler's loop: watches nodes and pods through the API, keeps the pods waiting for a
//! node in a [`SchedulingQueue`] (fed event by event from the pending-pod watch), decides with
//! [`schedule_with`](crate::schedule_with) over the snapshot of a [`ClusterCache`] (kept up to
//! date from the node and bound-pod watches, never rebuilt per pass), and binds through
//! `pods/{name}/binding`, several bindings in flight at once. Pods it has just bound are
//! "assumed" on their node until the watch shows them bound, so the next decision already
//! counts them and two decisions never overcommit a node.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::algorithm::Search;
use crate::cache::{ClusterCache, ClusterEvent};
use crate::events::{self, COMPONENT};
use crate::queue::{Backoff, SchedulingQueue};

/// The scheduler could not run.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A watch ended before its cache was filled.
    #[error("the {resource} cache was never filled: the watch stopped")]
    CacheNeverSynced {
        /// `nodes` or `pods`.
        resource: &'static str,
    },
}

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Pods whose `spec.schedulerName` is this (or empty) are ours.
    pub scheduler_name: String,
    /// How many bindings may be in flight at once.
    pub parallel_binds: usize,
    /// The first delay before retrying an unschedulable pod when nothing changed.
    pub initial_backoff: Duration,
    /// The longest such delay.
    pub max_backoff: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            scheduler_name: COMPONENT.to_string(),
            parallel_binds: 16,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Runs the scheduler until `shutdown` completes.
///
/// ```no_run
/// # async fn demo(client: kube::Client) -> Result<(), skiff_scheduler::SchedulerError> {
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let task = tokio::spawn(skiff_scheduler::run(client, async move { let _ = stopped.await; }));
/// // ...
/// let _ = stop.send(());
/// # Ok(()) }
/// ```
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SchedulerError> {
    run_with(client, SchedulerOptions::default(), shutdown).await
}

/// How long a pod this scheduler bound counts on its node without the watch showing it bound.
const ASSUME_TTL: Duration = Duration::from_secs(30);

/// How long an unschedulable pod waits for a change before it is tried again anyway.
const FLUSH: Duration = Duration::from_secs(60);

/// At most this many decisions in a row before the loop applies watch events again.
const BATCH: usize = 256;

/// At most this long deciding in a row before the loop applies watch events again.
const BATCH_TIME: Duration = Duration::from_millis(20);

/// What the binder reports back.
#[derive(Debug)]
struct BindOutcome {
    uid: String,
    result: Result<(), String>,
}

/// Spawns a watch into a reflector store; `changed` is notified and `generation` bumped (when
/// given) on every event.
fn spawn_reflector<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
    generation: Option<Arc<AtomicU64>>,
) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).default_backoff());
    let task = tokio::spawn(async move {
        stream
            .for_each(|event| {
                if let Err(error) = &event {
                    tracing::warn!(%error, "scheduler watch failed; retrying");
                }
                if let Some(g) = &generation {
                    g.fetch_add(1, Ordering::Relaxed);
                }
                changed.notify_one();
                futures::future::ready(())
            })
            .await;
    });
    (reader, task)
}

/// Spawns a watch whose events go to the loop through `tx` (as `wrap` makes them);
/// `changed` is notified and `generation` (when given) bumped on every event.
fn spawn_watch<K, E>(
    api: Api<K>,
    config: watcher::Config,
    wrap: fn(watcher::Event<K>) -> E,
    tx: mpsc::UnboundedSender<E>,
    changed: Arc<Notify>,
    generation: Option<Arc<AtomicU64>>,
) -> tokio::task::JoinHandle<()>
where
    E: Send + 'static,
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if tx.send(wrap(event)).is_err() {
                        return;
                    }
                }
                Err(error) => tracing::warn!(%error, "scheduler watch failed; retrying"),
            }
            if let Some(g) = &generation {
                g.fetch_add(1, Ordering::Relaxed);
            }
            changed.notify_one();
        }
    })
}

/// Runs the scheduler with `options` until `shutdown` completes.
pub async fn run_with(
    client: Client,
    options: SchedulerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SchedulerError> {
    let changed = Arc::new(Notify::new());
    let generation = Arc::new(AtomicU64::new(0));
    let pods: Api<Pod> = Api::all(client.clone());
    // Bumped by the Services and controllers default spreading reads.
    let workload_generation = Arc::new(AtomicU64::new(0));
    let (cluster_tx, mut cluster_rx) = mpsc::unbounded_channel::<ClusterEvent>();
    let node_task = spawn_watch(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        ClusterEvent::node,
        cluster_tx.clone(),
        Arc::clone(&changed),
        Some(Arc::clone(&generation)),
    );
    let assigned_task = spawn_watch(
        pods.clone(),
        watcher::Config::default().fields("spec.nodeName!="),
        ClusterEvent::pod,
        cluster_tx,
        Arc::clone(&changed),
        Some(Arc::clone(&generation)),
    );
    // The pending pods' events feed the queue; they are not cluster changes.
    let (pending_tx, mut pending_rx) = mpsc::unbounded_channel::<watcher::Event<Pod>>();
    let pending_task = spawn_watch(
        pods,
        watcher::Config::default().fields("spec.nodeName="),
        std::convert::identity,
        pending_tx,
        Arc::clone(&changed),
        None,
    );
    let (claims, claim_task) = spawn_reflector(
        Api::all(client.clone()),
        watcher::Config::default(),
        Arc::clone(&changed),
        Some(Arc::clone(&generation)),
    );
    let (volumes, volume_task) = spawn_reflector(
        Api::all(client.clone()),
        watcher::Config::default(),
        Arc::clone(&changed),
        Some(Arc::clone(&generation)),
    );
    let (classes, class_task) = spawn_reflector(
        Api::all(client.clone()),
        watcher::Config::default(),
        Arc::clone(&changed),
        Some(Arc::clone(&generation)),
    );
    // Budgets only steer preemption: their changes need not wake the loop.
    let (budgets, budget_task) = spawn_reflector(
        Api::all(client.clone()),
        watcher::Config::default(),
        Arc::new(Notify::new()),
        None,
    );
    // The selectors of default spreading only steer scores: their changes need not wake the
    // loop either; the loop takes them anew before its next decision.
    let (services, service_task) = spawn_reflector(
        Api::all(client.clone()),
        watcher::Config::default(),
        Arc::new(Notify::new()),
        Some(Arc::clone(&workload_generation)),
    );
    let (controllers, controller_task) = spawn_reflector(
        Api::all(client.clone()),
        watcher::Config::default(),
        Arc::new(Notify::new()),
        Some(Arc::clone(&workload_generation)),
    );
    let (replica_sets, replica_set_task) = spawn_reflector(
        Api::all(client.clone()),
        watcher::Config::default(),
        Arc::new(Notify::new()),
        Some(Arc::clone(&workload_generation)),
    );
    let (stateful_sets, stateful_set_task) = spawn_reflector(
        Api::all(client.clone()),
        watcher::Config::default(),
        Arc::new(Notify::new()),
        Some(Arc::clone(&workload_generation)),
    );
    let workload_stores = WorkloadStores {
        services,
        controllers,
        replica_sets,
        stateful_sets,
    };
    let volume_stores = crate::volumes::VolumeStores {
        claims,
        volumes,
        classes,
    };
    let tasks = [
        node_task,
        assigned_task,
        pending_task,
        claim_task,
        volume_task,
        class_task,
        budget_task,
        service_task,
        controller_task,
        replica_set_task,
        stateful_set_task,
    ];
    let mut shutdown = std::pin::pin!(shutdown);
    let mut cache = ClusterCache::default();
    let mut queue = SchedulingQueue::new(
        options.scheduler_name.clone(),
        Backoff {
            initial: options.initial_backoff,
            max: options.max_backoff,
            flush: FLUSH,
        },
    );
    let synced = async {
        while !cache.synced() {
            let event = cluster_rx
                .recv()
                .await
                .ok_or(SchedulerError::CacheNeverSynced {
                    resource: "nodes or pods",
                })?;
            cache.apply(event);
        }
        while !queue.synced() {
            let event = pending_rx
                .recv()
                .await
                .ok_or(SchedulerError::CacheNeverSynced { resource: "pods" })?;
            queue.apply(event, Instant::now());
        }
        let v = &volume_stores;
        let volumes_ready = v.claims.wait_until_ready().await.is_ok()
            && v.volumes.wait_until_ready().await.is_ok()
            && v.classes.wait_until_ready().await.is_ok();
        volumes_ready
            .then_some(())
            .ok_or(SchedulerError::CacheNeverSynced {
                resource: "persistentvolumeclaims, persistentvolumes or storageclasses",
            })?;
        let w = &workload_stores;
        let workloads_ready = w.services.wait_until_ready().await.is_ok()
            && w.controllers.wait_until_ready().await.is_ok()
            && w.replica_sets.wait_until_ready().await.is_ok()
            && w.stateful_sets.wait_until_ready().await.is_ok();
        workloads_ready
            .then_some(())
            .ok_or(SchedulerError::CacheNeverSynced {
                resource: "services, replicationcontrollers, replicasets or statefulsets",
            })
    };
    tokio::select! {
        r = synced => r?,
        () = &mut shutdown => {
            tasks.iter().for_each(|t| t.abort());
            return Ok(());
        }
    }
    tracing::info!("scheduler caches synced");

    let mut state = Loop {
        client,
        options,
        cache,
        queue,
        ties: 0,
        next_start: 0,
        bound: 0,
        volumes: volume_stores,
        budgets,
        workloads: workload_stores,
        workloads_seen: None,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<BindOutcome>();
    let binds = Arc::new(Semaphore::new(state.options.parallel_binds.max(1)));
    let mut seen_generation = None;
    loop {
        let wake = if state.queue.has_active() {
            Some(tokio::time::Instant::now())
        } else {
            state.queue.next_wake().map(tokio::time::Instant::from_std)
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(outcome) = rx.recv() => state.on_bound(outcome),
            () = changed.notified() => {}
            () = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
        // Read before the events are applied: a change counted here is applied below, and
        // one applied but not counted only makes the next pass look again.
        let now_generation = generation.load(Ordering::Relaxed);
        while let Ok(outcome) = rx.try_recv() {
            state.on_bound(outcome);
        }
        while let Ok(event) = cluster_rx.try_recv() {
            state.cache.apply(event);
        }
        let now = Instant::now();
        while let Ok(event) = pending_rx.try_recv() {
            state.queue.apply(event, now);
        }
        if seen_generation.replace(now_generation) != Some(now_generation) {
            state.queue.cluster_changed(now);
        }
        state.refresh_workloads(workload_generation.load(Ordering::Relaxed));
        state.schedule_batch(&tx, &binds);
        // Let the watches and binders run before the next batch.
        tokio::task::yield_now().await;
    }
    tasks.iter().for_each(|t| t.abort());
    tracing::info!(bound = state.bound, "scheduler stopped");
    Ok(())
}

struct Loop {
    client: Client,
    options: SchedulerOptions,
    /// Nodes and the pods placed on them: bound, or assumed (bound or being bound by us but
    /// not yet seen bound).
    cache: ClusterCache,
    /// The pods waiting for a node.
    queue: SchedulingQueue,
    /// Rotates ties between equally good nodes.
    ties: usize,
    /// Where the next decision starts filtering (where the previous one stopped).
    next_start: usize,
    bound: u64,
    volumes: crate::volumes::VolumeStores,
    /// PodDisruptionBudgets, which preemption tries not to break.
    budgets: Store<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
    /// Services and controllers, for default spreading.
    workloads: WorkloadStores,
    /// The workload generation the snapshot's copy of them is from.
    workloads_seen: Option<u64>,
}

/// The caches behind [`crate::default_spread::Workloads`].
struct WorkloadStores {
    services: Store<k8s_openapi::api::core::v1::Service>,
    controllers: Store<k8s_openapi::api::core::v1::ReplicationController>,
    replica_sets: Store<k8s_openapi::api::apps::v1::ReplicaSet>,
    stateful_sets: Store<k8s_openapi::api::apps::v1::StatefulSet>,
}

impl WorkloadStores {
    fn current(&self) -> crate::default_spread::Workloads {
        crate::default_spread::Workloads {
            services: self.services.state(),
            replication_controllers: self.controllers.state(),
            replica_sets: self.replica_sets.state(),
            stateful_sets: self.stateful_sets.state(),
        }
    }
}

impl Loop {
    fn on_bound(&mut self, outcome: BindOutcome) {
        match outcome.result {
            Ok(()) => self.bound += 1,
            Err(error) => {
                tracing::warn!(uid = %outcome.uid, %error, "binding failed; the pod goes back to the queue");
                self.cache.forget(&outcome.uid);
                self.queue.requeue(&outcome.uid);
            }
        }
    }

    /// Gives the snapshot the current Services and controllers when they changed.
    fn refresh_workloads(&mut self, generation: u64) {
        if self.workloads_seen.replace(generation) != Some(generation) {
            self.cache.snapshot_mut().workloads = Arc::new(self.workloads.current());
        }
    }

    /// Tries the active pods in order, up to [`BATCH`] of them or for [`BATCH_TIME`].
    fn schedule_batch(&mut self, tx: &mpsc::UnboundedSender<BindOutcome>, binds: &Arc<Semaphore>) {
        let now = Instant::now();
        // Forget assumptions the watch never confirmed: those pods are tried again.
        for uid in self.cache.expire(now, ASSUME_TTL) {
            self.queue.requeue(&uid);
        }
        self.queue.flush(now);
        if !self.queue.has_active() {
            return;
        }
        // Pods nominated by preemption keep their room (unless already placed).
        let mut nominated: Vec<(Arc<Pod>, String)> = self
            .queue
            .nominations()
            .into_iter()
            .filter(|(p, _)| {
                let uid = p.metadata.uid.as_deref().unwrap_or_default();
                !self.cache.is_assumed(uid) && !self.cache.is_bound(uid)
            })
            .collect();
        for _ in 0..BATCH {
            if now.elapsed() >= BATCH_TIME {
                break;
            }
            let Some(pod) = self.queue.pop() else {
                break;
            };
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            // Already bound: the watch of bound pods saw it before the pending one dropped it
            // (binding it again would only get 409 Conflict "already assigned"); it stays in
            // flight until the pending watch drops it.
            if self.cache.is_assumed(&uid) || self.cache.is_bound(&uid) {
                continue;
            }
            self.schedule_one(pod, uid, &mut nominated, tx, binds);
        }
    }

    /// One decision: bind `pod`, or record why it fits nowhere (and preempt if that helps).
    fn schedule_one(
        &mut self,
        pod: Arc<Pod>,
        uid: String,
        nominated: &mut Vec<(Arc<Pod>, String)>,
        tx: &mpsc::UnboundedSender<BindOutcome>,
        binds: &Arc<Semaphore>,
    ) {
        let now = Instant::now();
        self.ties = self.ties.wrapping_add(1);
        let search = Search {
            tie_breaker: self.ties,
            start: self.next_start,
            node_filter: None,
        };
        // Room freed by preemption is kept for the pods nominated to it: they count on their
        // node for this decision only.
        let snapshot = self.cache.snapshot_mut();
        let added = crate::preemption::add_nominated(snapshot, nominated, &pod);
        let decision = crate::volumes::schedule_with_volumes(&pod, snapshot, search, &self.volumes);
        let mut fit = match decision {
            Ok((placement, claims)) => {
                crate::preemption::remove_nominated(snapshot, &added);
                self.next_start = placement.next_start;
                self.queue.scheduled(&uid);
                let node = placement.node;
                let mut bound = (*pod).clone();
                if let Some(spec) = bound.spec.as_mut() {
                    spec.node_name = Some(node.clone());
                }
                self.cache.assume(Arc::new(bound), now);
                self.spawn_bind(pod, (node, claims), uid, tx.clone(), Arc::clone(binds));
                return;
            }
            Err(fit) => fit,
        };
        let earlier = self.queue.nominated_node(&uid);
        let budgets = self.budgets.state();
        let preempted = crate::preemption::preempt(&pod, snapshot, earlier.as_deref(), &budgets);
        crate::preemption::remove_nominated(snapshot, &added);
        match preempted {
            Ok(candidate) => {
                self.queue.nominate(&uid, &candidate.node);
                nominated.push((Arc::clone(&pod), candidate.node.clone()));
                let client = self.client.clone();
                tokio::spawn(crate::preemption::carry_out(
                    client,
                    Arc::clone(&pod),
                    candidate,
                ));
            }
            Err(why) => fit.message = crate::preemption::failure_message(&fit, &why),
        }
        if self.queue.unschedulable(&uid, now, fit.message.clone()) {
            tracing::info!(pod = %pod.name_any(), namespace = ?pod.namespace(), reason = %fit.message, "unschedulable");
            tokio::spawn(report_unschedulable(self.client.clone(), pod, fit.message));
        }
    }

    fn spawn_bind(
        &self,
        pod: Arc<Pod>,
        (node, claims): (String, Vec<String>),
        uid: String,
        tx: mpsc::UnboundedSender<BindOutcome>,
        binds: Arc<Semaphore>,
    ) {
        let client = self.client.clone();
        let name = pod.name_any();
        let namespace = pod.namespace().unwrap_or_else(|| "default".into());
        tokio::spawn(async move {
            let permit = binds.acquire_owned().await;
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    uid: Some(uid.clone()),
                    ..ObjectMeta::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(node.clone()),
                    ..ObjectReference::default()
                },
            };
            // VolumeBinding's PreBind: the claims learn their node before the pod is bound.
            let selected = crate::volumes::select_node(&client, &namespace, &claims, &node).await;
            let result = match selected {
                Err(e) => Err(e),
                Ok(()) => api
                    .create_subresource::<_, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            };
            let ok = result.is_ok();
            let _ = tx.send(BindOutcome { uid, result });
            if ok {
                tracing::debug!(pod = %name, %namespace, %node, "bound");
                let message = format!("Successfully assigned {namespace}/{name} to {node}");
                events::record(&client, &pod, "Normal", "Scheduled", &message).await;
            }
            // The event counts against the same limit: scheduler writes never crowd out the
            // API's other writers (the controllers creating pods).
            drop(permit);
        });
    }
}

/// Writes `PodScheduled=False` (reason `Unschedulable`) and a `FailedScheduling` event.
async fn report_unschedulable(client: Client, pod: Arc<Pod>, message: String) {
    let namespace = pod.namespace().unwrap_or_else(|| "default".into());
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": now,
    }]}});
    if let Err(error) = api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(patch),
        )
        .await
    {
        tracing::debug!(%error, pod = %pod.name_any(), "cannot write PodScheduled=False");
    }
    events::record(&client, &pod, "Warning", "FailedScheduling", &message).await;
}
