//! The StatefulSet controller: pods with stable ordinal names (`web-0`, `web-1`, ...), their
//! `hostname` and `subdomain` (the governing Service), one PersistentVolumeClaim per pod and
//! `volumeClaimTemplate` (`<template>-<set>-<ordinal>`, retained when pods go), created in
//! order (`OrderedReady`: the next only once every lower ordinal is Running and Ready) or all
//! at once (`Parallel`), removed from the highest ordinal, and rolled to a new template in
//! reverse ordinal order down to `partition`. Revisions are the template hash, recorded as
//! ControllerRevisions named `<set>-<hash>`.
//!
//! [`decide`] is pure: (StatefulSet, its pods, existing claims) -> [`Plan`]; [`reconcile`]
//! applies it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::backoff::ItemBackoff;
use crate::deployment::rollout::template_hash;
use crate::expectations::Expectations;
use crate::informer::Informer;
use crate::util::{
    controller_of, controller_ref, is_conflict, is_not_found, key_of, pod_is_finished,
    pod_is_ready, pod_phase, record_event,
};
use crate::{ControllerError, Shutdown};

/// The component name on events.
pub const COMPONENT: &str = "statefulset-controller";
/// The label holding a pod's revision.
pub const REVISION_LABEL: &str = "controller-revision-hash";
/// The label holding a pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// What one reconcile of a StatefulSet should do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Ordinals whose pods to create (after their claims).
    pub create: Vec<i32>,
    /// Of those, the ordinals below the partition during a rollout: created at the current
    /// revision's template rather than the update's.
    pub at_current: Vec<i32>,
    /// Claims to create (names).
    pub claims: Vec<String>,
    /// Pods (name, uid) to delete.
    pub delete: Vec<(String, String)>,
    /// The status to report.
    pub status: StatefulSetStatus,
}

/// The ordinal of `pod` in `set` (`<set>-<n>`), if it has one.
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let rest = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if rest.starts_with('+') || (rest.len() > 1 && rest.starts_with('0')) {
        return None;
    }
    rest.parse::<i32>().ok().filter(|n| *n >= 0)
}

/// The revision (`<set>-<template hash>`) the set's template is at.
pub fn update_revision(set: &StatefulSet) -> String {
    let spec = set.spec.as_ref();
    format!(
        "{}-{}",
        set.name_any(),
        template_hash(
            spec.map(|s| &s.template),
            set.status.as_ref().and_then(|s| s.collision_count)
        )
    )
}

fn revision_of(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
}

fn running_and_ready(pod: &Pod) -> bool {
    pod_phase(pod) == "Running" && pod_is_ready(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// The claim names of ordinal `ordinal`: `<template>-<set>-<ordinal>` per template.
pub fn claim_names(set: &StatefulSet, ordinal: i32) -> Vec<String> {
    set.spec
        .iter()
        .flat_map(|s| s.volume_claim_templates.iter().flatten())
        .map(|t| format!("{}-{}-{ordinal}", t.name_any(), set.name_any()))
        .collect()
}

/// Decides for `set` given the pods it controls and the names of existing claims. `manage`
/// is false while earlier creations or deletions are not yet in the cache.
pub fn decide(set: &StatefulSet, pods: &[Arc<Pod>], claims: &[String], manage: bool) -> Plan {
    let spec = set.spec.clone().unwrap_or_default();
    let name = set.name_any();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let update = update_revision(set);
    let previous = set.status.clone().unwrap_or_default();
    let current = previous
        .current_revision
        .clone()
        .unwrap_or_else(|| update.clone());
    let mut by_ordinal: BTreeMap<i32, &Arc<Pod>> = BTreeMap::new();
    for pod in pods {
        if let Some(n) = ordinal_of(&name, &pod.name_any()) {
            by_ordinal.insert(n, pod);
        }
    }
    let mut plan = Plan::default();
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        != Some("OnDelete");
    let partition = spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let id = |p: &Pod| (p.name_any(), p.metadata.uid.clone().unwrap_or_default());
    let terminating = by_ordinal
        .values()
        .any(|p| p.metadata.deletion_timestamp.is_some());
    if manage && set.metadata.deletion_timestamp.is_none() {
        let mut blocked = false;
        for ordinal in 0..replicas {
            match by_ordinal.get(&ordinal) {
                None => {
                    if blocked {
                        break;
                    }
                    plan.claims.extend(
                        claim_names(set, ordinal)
                            .into_iter()
                            .filter(|c| !claims.contains(c)),
                    );
                    plan.create.push(ordinal);
                    if rolling && ordinal < partition && current != update {
                        plan.at_current.push(ordinal);
                    }
                    if !parallel {
                        blocked = true;
                    }
                }
                Some(pod) if pod_is_finished(pod) && pod.metadata.deletion_timestamp.is_none() => {
                    plan.delete.push(id(pod));
                    if !parallel {
                        blocked = true;
                    }
                }
                Some(pod) if !parallel && !running_and_ready(pod) => blocked = true,
                Some(_) => {}
            }
            if blocked && !parallel {
                break;
            }
        }
        let all_ready =
            (0..replicas).all(|o| by_ordinal.get(&o).is_some_and(|p| running_and_ready(p)));
        let condemned: Vec<&Arc<Pod>> = by_ordinal
            .range(replicas..)
            .rev()
            .map(|(_, p)| *p)
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if parallel {
            plan.delete.extend(condemned.iter().map(|p| id(p)));
        } else if plan.create.is_empty() && plan.delete.is_empty() && all_ready && !terminating {
            if let Some(p) = condemned.first() {
                plan.delete.push(id(p));
            }
        }
        if rolling
            && plan.create.is_empty()
            && plan.delete.is_empty()
            && condemned.is_empty()
            && all_ready
            && !terminating
        {
            let stale = (partition.max(0)..replicas)
                .rev()
                .filter_map(|o| by_ordinal.get(&o))
                .find(|p| revision_of(p) != Some(update.as_str()));
            if let Some(p) = stale {
                plan.delete.push(id(p));
            }
        }
    }
    let active: Vec<&&Arc<Pod>> = by_ordinal
        .values()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let as_i32 = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let ready = as_i32(active.iter().filter(|p| pod_is_ready(p)).count());
    let updated = as_i32(
        active
            .iter()
            .filter(|p| revision_of(p) == Some(update.as_str()))
            .count(),
    );
    let done = updated == replicas && as_i32(active.len()) == replicas;
    let current_revision = if done { update.clone() } else { current };
    plan.status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas: as_i32(active.len()),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        current_replicas: Some(as_i32(
            active
                .iter()
                .filter(|p| revision_of(p) == Some(current_revision.as_str()))
                .count(),
        )),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update),
        collision_count: previous.collision_count,
        conditions: previous.conditions,
    };
    plan
}

/// The pod of ordinal `ordinal`: the template, named `<set>-<ordinal>`, with its hostname,
/// subdomain, revision and ordinal labels, and its claims mounted in place of the template
/// volumes of the same names.
pub fn pod_for(set: &StatefulSet, ordinal: i32) -> Pod {
    let template = set
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    pod_at(set, ordinal, &template, &update_revision(set))
}

/// The pod of ordinal `ordinal` from `template` at `revision` (see [`pod_for`]).
pub fn pod_at(set: &StatefulSet, ordinal: i32, template: &PodTemplateSpec, revision: &str) -> Pod {
    let spec = set.spec.clone().unwrap_or_default();
    let name = format!("{}-{ordinal}", set.name_any());
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), revision.to_string());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut pod_spec = template.spec.clone().unwrap_or_default();
    pod_spec.hostname = Some(name.clone());
    pod_spec.subdomain = spec.service_name.clone().filter(|s| !s.is_empty());
    let mut volumes = pod_spec.volumes.take().unwrap_or_default();
    for (template, claim) in spec
        .volume_claim_templates
        .iter()
        .flatten()
        .zip(claim_names(set, ordinal))
    {
        volumes.retain(|v| v.name != template.name_any());
        volumes.push(Volume {
            name: template.name_any(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    pod_spec.volumes = Some(volumes).filter(|v| !v.is_empty());
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(set)]),
            ..ObjectMeta::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// The claim `name` from its template: the template's labels plus the set's selector labels.
pub fn claim_for(set: &StatefulSet, name: &str) -> Option<PersistentVolumeClaim> {
    let spec = set.spec.as_ref()?;
    let template = spec
        .volume_claim_templates
        .iter()
        .flatten()
        .find(|t| name.starts_with(&format!("{}-{}-", t.name_any(), set.name_any())))?;
    let mut labels = template.metadata.labels.clone().unwrap_or_default();
    labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
    Some(PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: template.metadata.annotations.clone(),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    })
}

/// The shared state of the StatefulSet controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations,
    backoff: Mutex<ItemBackoff>,
}

async fn ensure_revision(
    client: &Client,
    set: &StatefulSet,
    revision: &str,
) -> Result<(), kube::Error> {
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
    if api.get_opt(revision).await?.is_some() {
        return Ok(());
    }
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let highest = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|r| controller_of(&r.metadata).is_some_and(|c| c.uid == uid))
        .map(|r| r.revision)
        .max()
        .unwrap_or(0);
    let template = set.spec.as_ref().map(|s| s.template.clone());
    let revision = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision.to_string()),
            namespace: set.namespace(),
            labels: set
                .spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone()),
            owner_references: Some(vec![controller_ref(set)]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(json!({"spec": {"template": template}}))),
        revision: highest + 1,
    };
    match api.create(&PostParams::default(), &revision).await {
        Ok(_) => Ok(()),
        Err(e) if is_conflict(&e) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The pod template recorded in ControllerRevision `revision`, if it can be read.
async fn revision_template(
    client: &Client,
    set: &StatefulSet,
    revision: &str,
) -> Option<PodTemplateSpec> {
    let api: Api<ControllerRevision> =
        Api::namespaced(client.clone(), &set.namespace().unwrap_or_default());
    let data = api.get_opt(revision).await.ok()??.data?;
    serde_json::from_value(data.0.get("spec")?.get("template")?.clone()).ok()
}

/// One reconcile of a StatefulSet.
pub async fn reconcile(
    set: Arc<StatefulSet>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    let namespace = set.namespace().unwrap_or_default();
    let key = key_of(set.as_ref());
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let pods = ctx.pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(namespace.as_str())
            && controller_of(&p.metadata).is_some_and(|c| c.uid == uid)
    });
    let manage = ctx.expectations.satisfied(
        &key,
        |name| {
            pods.iter()
                .any(|p| p.metadata.name.as_deref() == Some(name))
        },
        |uid| {
            !pods.iter().any(|p| {
                p.metadata.uid.as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none()
            })
        },
    );
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let has_templates = set.spec.as_ref().is_some_and(|s| {
        !s.volume_claim_templates
            .clone()
            .unwrap_or_default()
            .is_empty()
    });
    let claims: Vec<String> = if has_templates {
        claims_api
            .list(&ListParams::default())
            .await
            .map_err(|e| ControllerError::api(&key, "list claims", e))?
            .items
            .iter()
            .map(|c| c.name_any())
            .collect()
    } else {
        Vec::new()
    };
    let plan = decide(&set, &pods, &claims, manage);
    if let Some(revision) = plan.status.update_revision.as_deref() {
        ensure_revision(&ctx.client, &set, revision)
            .await
            .map_err(|e| ControllerError::api(&key, "record a revision", e))?;
    }
    for claim in plan.claims.iter().filter_map(|c| claim_for(&set, c)) {
        match claims_api.create(&PostParams::default(), &claim).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(ControllerError::api(&key, "create a claim", e)),
        }
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = match (&plan.status.current_revision, plan.at_current.is_empty()) {
        (Some(revision), false) => revision_template(&ctx.client, &set, revision)
            .await
            .map(|t| (t, revision.clone())),
        _ => None,
    };
    for ordinal in &plan.create {
        let pod = match &current {
            Some((template, revision)) if plan.at_current.contains(ordinal) => {
                pod_at(&set, *ordinal, template, revision)
            }
            _ => pod_for(&set, *ordinal),
        };
        let name = pod.name_any();
        ctx.expectations.expect(&key, [name.clone()], []);
        match api.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                record_event(
                    &ctx.client,
                    COMPONENT,
                    set.as_ref(),
                    "Normal",
                    "SuccessfulCreate",
                    &format!(
                        "create Pod {name} in StatefulSet {} successful",
                        set.name_any()
                    ),
                )
                .await;
            }
            Err(e) => {
                ctx.expectations.forget(&key);
                if is_conflict(&e) {
                    continue;
                }
                return Err(ControllerError::api(&key, "create a pod", e));
            }
        }
    }
    if !plan.delete.is_empty() {
        ctx.expectations
            .expect(&key, [], plan.delete.iter().map(|(_, u)| u.clone()));
        for (name, _) in &plan.delete {
            match api.delete(name, &DeleteParams::background()).await {
                Ok(_) => {
                    record_event(
                        &ctx.client,
                        COMPONENT,
                        set.as_ref(),
                        "Normal",
                        "SuccessfulDelete",
                        &format!(
                            "delete Pod {name} in StatefulSet {} successful",
                            set.name_any()
                        ),
                    )
                    .await;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(ControllerError::api(&key, "delete a pod", e)),
            }
        }
    }
    if set.status.as_ref() != Some(&plan.status) {
        let api = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace);
        crate::util::patch_status(&api, &set.name_any(), &key, &plan.status).await?;
    }
    Ok(crate::util::succeeded(&ctx.backoff, &key, None))
}

fn error_policy(set: Arc<StatefulSet>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    crate::util::failed(&ctx.backoff, "statefulset", &key_of(set.as_ref()), error)
}

/// Runs the StatefulSet controller until `shutdown`.
pub async fn run(client: Client, pods: &Informer<Pod>, shutdown: Shutdown) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        pods: pods.store(),
        expectations: Expectations::default(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    if pods.store().wait_until_ready().await.is_err() {
        return;
    }
    Controller::new(Api::<StatefulSet>::all(client), watcher::Config::default())
        .owns_stream(pods.subscribe())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
#[path = "statefulset_tests.rs"]
mod tests;
