//! The Deployment controller: ReplicaSets per pod template (named and labelled by the
//! `pod-template-hash`), RollingUpdate (max surge / max unavailable) and Recreate rollouts,
//! revisions, history clean-up, pause, and the status `kubectl rollout status` reads.
//!
//! [`rollout::decide`] is the pure decision; [`reconcile`] applies it.

pub mod rollout;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::backoff::ItemBackoff;
use crate::informer::Informer;
use crate::util::{
    controller_of, controller_ref, is_conflict, is_not_found, key_of, labels, record_event,
    selector,
};
use crate::{ControllerError, Shutdown};
use rollout::{Step, decide};

/// The component name on events.
pub const COMPONENT: &str = "deployment-controller";

/// The shared state of the Deployment controller.
pub struct Context {
    client: Client,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    backoff: Mutex<ItemBackoff>,
}

/// One reconcile of a Deployment.
pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = d.namespace().unwrap_or_default();
    let key = key_of(d.as_ref());
    let in_ns = |ns: &Option<String>| ns.as_deref() == Some(namespace.as_str());
    let rss = ctx
        .replica_sets
        .state_filter(|r| in_ns(&r.metadata.namespace));
    let pods = ctx.pods.state_filter(|p| in_ns(&p.metadata.namespace));
    let plan = decide(&d, &rss, &pods, SystemTime::now());
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let ours = controller_ref(d.as_ref());
    for step in &plan.steps {
        let result = match step {
            Step::Create(rs) => match api.create(&PostParams::default(), rs).await {
                Ok(created) => {
                    let message = format!(
                        "Scaled up replica set {} from 0 to {}",
                        created.name_any(),
                        rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
                    );
                    record_event(
                        &ctx.client,
                        COMPONENT,
                        d.as_ref(),
                        "Normal",
                        "ScalingReplicaSet",
                        &message,
                    )
                    .await;
                    Ok(())
                }
                Err(e) if is_conflict(&e) => {
                    // The name is taken: by our own ReplicaSet not yet in the cache, or by a
                    // different template (a hash collision: count it, so the next hash differs).
                    let name = rs.name_any();
                    let existing = api.get(&name).await.ok();
                    let same = existing.as_ref().is_some_and(|x| {
                        controller_of(&x.metadata).is_some_and(|c| c.uid == ours.uid)
                            && x.spec.as_ref().map(|s| &s.template)
                                == rs.spec.as_ref().map(|s| &s.template)
                    });
                    if !same {
                        let count = d
                            .status
                            .as_ref()
                            .and_then(|s| s.collision_count)
                            .unwrap_or(0)
                            + 1;
                        let patch = json!({"status": {"collisionCount": count}});
                        Api::<Deployment>::namespaced(ctx.client.clone(), &namespace)
                            .patch_status(
                                &d.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(patch),
                            )
                            .await
                            .map_err(|e| ControllerError::api(&key, "count a hash collision", e))?;
                    }
                    return Ok(Action::requeue(std::time::Duration::from_millis(200)));
                }
                Err(e) => Err(e),
            },
            Step::Scale {
                name,
                replicas,
                annotations,
            } => {
                let from = rss
                    .iter()
                    .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
                    .and_then(|r| r.spec.as_ref().and_then(|s| s.replicas))
                    .unwrap_or(0);
                let patch = json!({
                    "metadata": {"annotations": annotations},
                    "spec": {"replicas": replicas},
                });
                let r = api
                    .patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ());
                if r.is_ok() && from != *replicas {
                    let verb = if *replicas > from { "up" } else { "down" };
                    let message =
                        format!("Scaled {verb} replica set {name} from {from} to {replicas}");
                    record_event(
                        &ctx.client,
                        COMPONENT,
                        d.as_ref(),
                        "Normal",
                        "ScalingReplicaSet",
                        &message,
                    )
                    .await;
                }
                r
            }
            Step::Adopt(name) => {
                let mut refs = rss
                    .iter()
                    .find(|r| r.metadata.name.as_deref() == Some(name.as_str()))
                    .and_then(|r| r.metadata.owner_references.clone())
                    .unwrap_or_default();
                refs.push(ours.clone());
                let patch = json!({"metadata": {"ownerReferences": refs}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
            }
            Step::Delete(name) => api.delete(name, &DeleteParams::default()).await.map(|_| ()),
        };
        match result {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(ControllerError::api(&key, "change a replica set", e)),
        }
    }
    if d.status.as_ref() != Some(&plan.status) {
        let api = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace);
        crate::util::patch_status(&api, &d.name_any(), &key, &plan.status).await?;
    }
    Ok(crate::util::succeeded(
        &ctx.backoff,
        &key,
        plan.requeue_after,
    ))
}

fn error_policy(d: Arc<Deployment>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    crate::util::failed(&ctx.backoff, "deployment", &key_of(d.as_ref()), error)
}

/// Deployments whose selector matches an orphan ReplicaSet.
fn selecting(store: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    if controller_of(&rs.metadata).is_some() {
        return Vec::new();
    }
    let rs_labels: BTreeMap<String, String> = labels(&rs.metadata);
    store
        .state()
        .iter()
        .filter(|d| d.metadata.namespace == rs.metadata.namespace)
        .filter(|d| {
            selector(d.spec.as_ref().map(|s| &s.selector))
                .is_some_and(|m| !m.is_empty() && m.matches(&rs_labels))
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// The Deployment owning the ReplicaSet that controls `pod` (Recreate waits for old pods).
fn pod_to_deployment(rs_store: &Store<ReplicaSet>, pod: &Pod) -> Option<ObjectRef<Deployment>> {
    let owner = controller_of(&pod.metadata)?;
    if owner.kind != "ReplicaSet" {
        return None;
    }
    let rs =
        rs_store.get(&ObjectRef::new(&owner.name).within(pod.metadata.namespace.as_deref()?))?;
    let d = controller_of(&rs.metadata)?;
    (d.kind == "Deployment").then(|| {
        ObjectRef::new(&d.name).within(pod.metadata.namespace.as_deref().unwrap_or_default())
    })
}

/// Runs the Deployment controller until `shutdown`.
pub async fn run(
    client: Client,
    replica_sets: &Informer<ReplicaSet>,
    pods: &Informer<Pod>,
    shutdown: Shutdown,
) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        replica_sets: replica_sets.store(),
        pods: pods.store(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    if replica_sets.store().wait_until_ready().await.is_err()
        || pods.store().wait_until_ready().await.is_err()
    {
        return;
    }
    let controller = Controller::new(Api::<Deployment>::all(client), watcher::Config::default());
    let d_store = controller.store();
    let rs_store = replica_sets.store();
    controller
        .owns_stream(replica_sets.subscribe())
        .watches_stream(replica_sets.subscribe(), move |rs| selecting(&d_store, &rs))
        .watches_stream(pods.subscribe(), move |pod| {
            pod_to_deployment(&rs_store, &pod)
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}
