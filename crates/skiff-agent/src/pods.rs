//! The pods of this node: one watch (`fieldSelector=spec.nodeName=NODE`) feeding one worker
//! task per pod uid. A worker syncs its pod when the pod changes and every second while
//! something runs. Once the first list is in, engine containers of pods the API no longer has
//! are stopped and removed (a pod deleted while the agent was down), and so are the pod
//! directories and the empty pod cgroups of pods that are gone; the same sweep runs again
//! every [`AgentConfig::orphan_sweep_interval`](crate::AgentConfig) against the pods the
//! watch knows (the kubelet's housekeeping), so a container that outlived its pod (made by a
//! sync racing the pod's deletion, say) does not wait for the next re-list. A teardown that
//! fails is retried with back-off until it succeeds ([`crate::teardown`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use crate::Context;
use crate::error::blocking;
use crate::worker::{self, Next, WorkerState};
use crate::{runtime, teardown, volumes};

type Slot = watch::Sender<Option<Arc<Pod>>>;

/// Watches this node's pods and runs their workers until the stream ends.
pub async fn run(ctx: Arc<Context>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let mut events = watcher(api, config)
        .default_backoff()
        .modify(crate::slim::strip)
        .boxed();
    let mut workers: HashMap<String, Slot> = HashMap::new();
    let mut listed: HashSet<String> = HashSet::new();
    let mut sweep = tokio::time::interval(ctx.config.orphan_sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut swept_once = false;
    loop {
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => event,
                None => break,
            },
            _ = sweep.tick() => {
                // Only once the first list is in: before it, every pod looks gone.
                if swept_once {
                    let started = SystemTime::now();
                    let known: HashSet<String> = workers.keys().cloned().collect();
                    tokio::spawn(remove_orphans(Arc::clone(&ctx), known, started, Sweep::Timed));
                }
                continue;
            }
        };
        match event {
            Ok(watcher::Event::Init) => listed.clear(),
            Ok(watcher::Event::InitApply(pod)) => {
                listed.insert(pod.metadata.uid.clone().unwrap_or_default());
                dispatch(&ctx, &mut workers, pod);
            }
            Ok(watcher::Event::InitDone) => {
                workers.retain(|uid, slot| {
                    let keep = listed.contains(uid);
                    if !keep {
                        let _ = slot.send(None);
                    }
                    keep
                });
                let started = SystemTime::now();
                tokio::spawn(remove_orphans(
                    Arc::clone(&ctx),
                    listed.clone(),
                    started,
                    Sweep::AfterList,
                ));
                swept_once = true;
                sweep.reset();
            }
            Ok(watcher::Event::Apply(pod)) => dispatch(&ctx, &mut workers, pod),
            Ok(watcher::Event::Delete(pod)) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                if let Some(slot) = workers.remove(&uid) {
                    let _ = slot.send(None);
                } else {
                    let ctx = Arc::clone(&ctx);
                    tokio::spawn(async move {
                        teardown::until_done(&ctx, &uid, Duration::from_secs(2)).await;
                    });
                }
            }
            Err(err) => tracing::warn!(error = %err, "the pod watch failed; retrying"),
        }
    }
}

fn dispatch(ctx: &Arc<Context>, workers: &mut HashMap<String, Slot>, pod: Pod) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if uid.is_empty() {
        return;
    }
    let pod = Arc::new(pod);
    if let Some(slot) = workers.get(&uid)
        && slot.send(Some(Arc::clone(&pod))).is_ok()
    {
        return;
    }
    let (slot, rx) = watch::channel(Some(pod));
    workers.insert(uid, slot);
    tokio::spawn(run_worker(Arc::clone(ctx), rx));
}

/// One pod's worker: syncs on every change and on the resync timer; tears the pod down when
/// the watch says it is gone.
async fn run_worker(ctx: Arc<Context>, mut rx: watch::Receiver<Option<Arc<Pod>>>) {
    let mut state = WorkerState::default();
    let mut last_uid = String::new();
    loop {
        let current = rx.borrow_and_update().clone();
        let Some(pod) = current else {
            if !last_uid.is_empty() {
                teardown::until_done(&ctx, &last_uid, Duration::from_secs(2)).await;
            }
            return;
        };
        last_uid = pod.metadata.uid.clone().unwrap_or_default();
        let next = match worker::sync(&ctx, &pod, &mut state).await {
            Ok(next) => next,
            Err(err) => {
                tracing::warn!(
                    namespace = pod.metadata.namespace.as_deref().unwrap_or_default(),
                    pod = pod.metadata.name.as_deref().unwrap_or_default(),
                    error = %err,
                    "pod sync failed"
                );
                Next::After(Duration::from_secs(2))
            }
        };
        match next {
            Next::Done => return,
            Next::Idle => {
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Next::After(delay) => {
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

/// Stops and removes the containers and directories of pods the API does not list for this
/// node (retrying failures, [`teardown::until_done`]), and frees the addresses and cgroups of
/// pods that are gone. `started` is taken before `listed`: containers and pod directories
/// made after it may belong to a pod that arrived after `listed` was taken, and are left
/// alone.
async fn remove_orphans(
    ctx: Arc<Context>,
    listed: HashSet<String>,
    started: SystemTime,
    sweep: Sweep,
) {
    if sweep == Sweep::AfterList
        && let Some(net) = ctx.net.get()
    {
        match net.node.release_except(&listed).await {
            Ok(freed) if !freed.is_empty() => {
                tracing::info!(?freed, "freed the addresses of pods that are gone")
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "freeing the addresses of gone pods failed"),
        }
    }
    let engine = ctx.engine.clone();
    let pods = match blocking("list containers", move || runtime::by_pod(&engine)).await {
        Ok(pods) => pods,
        Err(err) => {
            tracing::warn!(error = %err, "cannot list containers to find orphans");
            return;
        }
    };
    ctx.index.learn(&pods);
    let mut gone: BTreeSet<String> = pods
        .iter()
        .filter(|(uid, containers)| {
            !listed.contains(*uid)
                && containers.iter().all(|c| {
                    skiff_engine::time::parse_rfc3339(&c.config.created).is_none_or(|t| t < started)
                })
        })
        .map(|(uid, _)| uid.clone())
        .collect();
    // Pod directories left behind by a teardown that failed after the containers went.
    gone.extend(
        stale_pod_dirs(&ctx.config.data_dir, started)
            .into_iter()
            .filter(|uid| !listed.contains(uid)),
    );
    for uid in gone {
        tracing::info!(pod_uid = %uid, "removing what is left of a pod that is gone");
        // Retried with back-off until it succeeds; one failing pod does not hold up the rest.
        tokio::spawn({
            let ctx = Arc::clone(&ctx);
            async move { teardown::until_done(&ctx, &uid, Duration::from_secs(2)).await }
        });
    }
    if sweep == Sweep::Timed {
        // Addresses and cgroups go with each pod's teardown; the bulk release below is for
        // what a previous run of the agent left, and would race a pod starting now.
        return;
    }
    let data_dir = ctx.config.data_dir.clone();
    match blocking("remove pod cgroups", move || {
        Ok(crate::podcgroup::remove_except(&listed, &data_dir)?)
    })
    .await
    {
        Ok(removed) if !removed.is_empty() => {
            tracing::info!(?removed, "removed the cgroups of pods that are gone")
        }
        Ok(_) => {}
        Err(err) => tracing::warn!(error = %err, "removing the cgroups of gone pods failed"),
    }
}

/// Which sweep [`remove_orphans`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sweep {
    /// After a full list of the node's pods: also frees every address and empty pod cgroup
    /// of pods not listed (what an earlier run of the agent left).
    AfterList,
    /// The periodic one between lists: the containers and directories of pods that are gone.
    Timed,
}

/// The uids of the pod directories made before `before` (a pod that arrived after the list
/// was taken may be making its directory right now).
fn stale_pod_dirs(data_dir: &Path, before: SystemTime) -> Vec<String> {
    let parent = volumes::pod_dir(data_dir, "");
    let Ok(entries) = std::fs::read_dir(&parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < before)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}
