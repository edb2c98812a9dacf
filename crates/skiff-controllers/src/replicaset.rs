//! The ReplicaSet controller: keeps `spec.replicas` pods that match the selector, adopting
//! orphans that match, releasing pods that no longer match, deleting the least valuable pods
//! first (unbound, pending, not ready, newest), and reporting `status`.
//!
//! [`decide`] is pure: (ReplicaSet, pods of its namespace) -> [`Plan`]; [`reconcile`] applies it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::backoff::ItemBackoff;
use crate::expectations::Expectations;
use crate::informer::Informer;
use crate::util::{
    controller_of, controller_ref, is_not_found, key_of, labels, pod_is_active, pod_is_available,
    pod_is_ready, pod_ready_since, record_event, selector,
};
use crate::{ControllerError, Shutdown};

/// The component name on events.
pub const COMPONENT: &str = "replicaset-controller";
/// At most this many pods are created or deleted in one reconcile (kube's `burstReplicas`).
pub const BURST: usize = 500;

/// What one reconcile of a ReplicaSet should do.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Plan {
    /// Orphan pods (by name) to adopt.
    pub adopt: Vec<String>,
    /// Owned pods (by name) that no longer match and are to be released.
    pub release: Vec<String>,
    /// How many pods to create.
    pub create: usize,
    /// Pods (by name, uid) to delete, least valuable first.
    pub delete: Vec<(String, String)>,
    /// The status to report.
    pub status: ReplicaSetStatus,
    /// When to look again (a pod becomes available after `minReadySeconds`).
    pub requeue_after: Option<Duration>,
}

/// The replicas a ReplicaSet asks for (1 when unset).
pub fn desired(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn min_ready(rs: &ReplicaSet) -> Duration {
    let secs = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Orders pods so that the ones to delete first come first (kube's `ActivePods` order).
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let bound = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match crate::util::pod_phase(p) {
        "Pending" => 0,
        "Running" => 2,
        _ => 1,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0)
    };
    bound(a)
        .cmp(&bound(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| pod_is_ready(a).cmp(&pod_is_ready(b)))
        // Ready more recently first.
        .then_with(|| pod_ready_since(b).cmp(&pod_ready_since(a)))
        .then_with(|| restarts(b).cmp(&restarts(a)))
        // Newer first.
        .then_with(|| {
            b.metadata
                .creation_timestamp
                .cmp(&a.metadata.creation_timestamp)
        })
}

/// Decides what to do for `rs` given the pods of its namespace. `manage` is false while
/// earlier creations or deletions are not yet in the cache: then only the status is computed.
pub fn decide(rs: &ReplicaSet, pods: &[Arc<Pod>], manage: bool, now: SystemTime) -> Plan {
    let mut plan = Plan::default();
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let matcher = selector(rs.spec.as_ref().map(|s| &s.selector));
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .map(labels)
        .unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut owned: Vec<&Arc<Pod>> = Vec::new();
    for pod in pods {
        let matches = matcher
            .as_ref()
            .is_some_and(|m| !m.is_empty() && m.matches(&labels(&pod.metadata)));
        match controller_of(&pod.metadata) {
            Some(c) if c.uid == uid => {
                if matches {
                    owned.push(pod);
                } else if !deleting && pod.metadata.deletion_timestamp.is_none() {
                    plan.release.push(pod.name_any());
                }
            }
            Some(_) => {}
            None => {
                if matches && !deleting && pod_is_active(pod) {
                    plan.adopt.push(pod.name_any());
                    owned.push(pod);
                }
            }
        }
    }
    let active: Vec<&Arc<Pod>> = owned.iter().copied().filter(|p| pod_is_active(p)).collect();
    let min_ready = min_ready(rs);
    let ready = active.iter().filter(|p| pod_is_ready(p)).count();
    let available = active
        .iter()
        .filter(|p| pod_is_available(p, min_ready, now))
        .count();
    if ready > available {
        plan.requeue_after = active
            .iter()
            .filter_map(|p| pod_ready_since(p))
            .map(|since| (since + min_ready).duration_since(now).unwrap_or_default())
            .filter(|d| !d.is_zero())
            .min()
            .map(|d| d + Duration::from_millis(100));
    }
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let l = labels(&p.metadata);
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })
        .count();
    if manage && !deleting {
        let want = usize::try_from(desired(rs).max(0)).unwrap_or(0);
        if active.len() < want {
            plan.create = (want - active.len()).min(BURST);
        } else if active.len() > want {
            let mut victims: Vec<&Arc<Pod>> = active.clone();
            victims.sort_by(|a, b| deletion_order(a, b));
            plan.delete = victims
                .into_iter()
                .take((active.len() - want).min(BURST))
                .map(|p| (p.name_any(), p.metadata.uid.clone().unwrap_or_default()))
                .collect();
        }
    }
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let previous = rs.status.clone().unwrap_or_default();
    plan.status = ReplicaSetStatus {
        replicas: count(active.len()),
        fully_labeled_replicas: Some(count(fully_labeled)),
        ready_replicas: Some(count(ready)),
        available_replicas: Some(count(available)),
        observed_generation: rs.metadata.generation,
        conditions: previous.conditions,
        terminating_replicas: None,
    };
    plan
}

/// The pod a ReplicaSet creates from its template.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The shared state of the ReplicaSet controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations,
    backoff: Mutex<ItemBackoff>,
}

fn pods_in(store: &Store<Pod>, namespace: &str) -> Vec<Arc<Pod>> {
    store.state_filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
}

/// Sets a pod's owner references to `refs` (uid as a precondition).
async fn set_owners(
    api: &Api<Pod>,
    pod: &Pod,
    refs: Vec<OwnerReference>,
) -> Result<(), kube::Error> {
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
    api.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await
    .map(|_| ())
}

/// Creates `count` pods from the template in slow-start batches (1, 2, 4 ...), stopping at
/// the first failure; returns the names created.
pub async fn create_pods(
    api: &Api<Pod>,
    template: &Pod,
    count: usize,
) -> (Vec<String>, Option<kube::Error>) {
    let mut created = Vec::new();
    let params = PostParams::default();
    let mut batch = 1;
    let mut left = count;
    while left > 0 {
        let n = batch.min(left);
        let results =
            futures::future::join_all((0..n).map(|_| api.create(&params, template))).await;
        let mut failure = None;
        for r in results {
            match r {
                Ok(p) => created.push(p.name_any()),
                Err(e) => failure = Some(e),
            }
        }
        if failure.is_some() {
            return (created, failure);
        }
        left -= n;
        batch *= 2;
    }
    (created, None)
}

/// One reconcile of a ReplicaSet.
pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let namespace = rs.namespace().unwrap_or_default();
    let key = key_of(rs.as_ref());
    let pods = pods_in(&ctx.pods, &namespace);
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
    let plan = decide(&rs, &pods, manage, SystemTime::now());
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let ours = controller_ref(rs.as_ref());
    for name in &plan.adopt {
        if let Some(pod) = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        {
            let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
            refs.push(ours.clone());
            if let Err(e) = set_owners(&api, pod, refs).await
                && !is_not_found(&e)
            {
                return Err(ControllerError::api(&key, "adopt a pod", e));
            }
        }
    }
    for name in &plan.release {
        if let Some(pod) = pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name.as_str()))
        {
            let refs: Vec<OwnerReference> = pod
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.uid != ours.uid)
                .collect();
            if let Err(e) = set_owners(&api, pod, refs).await
                && !is_not_found(&e)
            {
                return Err(ControllerError::api(&key, "release a pod", e));
            }
        }
    }
    if plan.create > 0 {
        let template = pod_from_template(&rs);
        let (created, failure) = create_pods(&api, &template, plan.create).await;
        ctx.expectations.expect(&key, created.iter().cloned(), []);
        for name in &created {
            let message = format!("Created pod: {name}");
            record_event(
                &ctx.client,
                COMPONENT,
                rs.as_ref(),
                "Normal",
                "SuccessfulCreate",
                &message,
            )
            .await;
        }
        if let Some(e) = failure {
            let message = format!("Error creating: {e}");
            record_event(
                &ctx.client,
                COMPONENT,
                rs.as_ref(),
                "Warning",
                "FailedCreate",
                &message,
            )
            .await;
            return Err(ControllerError::api(&key, "create pods", e));
        }
    }
    if !plan.delete.is_empty() {
        let uids = plan.delete.iter().map(|(_, uid)| uid.clone());
        ctx.expectations.expect(&key, [], uids);
        let results = futures::future::join_all(plan.delete.iter().map(|(name, uid)| {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            let api = api.clone();
            async move { (name, api.delete(name, &params).await) }
        }))
        .await;
        for (name, r) in results {
            match r {
                Ok(_) => {
                    let message = format!("Deleted pod: {name}");
                    record_event(
                        &ctx.client,
                        COMPONENT,
                        rs.as_ref(),
                        "Normal",
                        "SuccessfulDelete",
                        &message,
                    )
                    .await;
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(ControllerError::api(&key, "delete pods", e)),
            }
        }
    }
    if rs.status.as_ref() != Some(&plan.status) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
        crate::util::patch_status(&rs_api, &rs.name_any(), &key, &plan.status).await?;
    }
    Ok(crate::util::succeeded(
        &ctx.backoff,
        &key,
        plan.requeue_after,
    ))
}

fn error_policy(rs: Arc<ReplicaSet>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    crate::util::failed(&ctx.backoff, "replicaset", &key_of(rs.as_ref()), error)
}

/// The ReplicaSets (from `store`) in `pod`'s namespace whose selector matches an orphan pod.
fn selecting(store: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    if controller_of(&pod.metadata).is_some() {
        return Vec::new();
    }
    let pod_labels: BTreeMap<String, String> = labels(&pod.metadata);
    store
        .state()
        .iter()
        .filter(|rs| rs.metadata.namespace == pod.metadata.namespace)
        .filter(|rs| {
            selector(rs.spec.as_ref().map(|s| &s.selector))
                .is_some_and(|m| !m.is_empty() && m.matches(&pod_labels))
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

/// Runs the ReplicaSet controller until `shutdown`.
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
    let controller = Controller::new(Api::<ReplicaSet>::all(client), watcher::Config::default());
    let rs_store = controller.store();
    controller
        .owns_stream(pods.subscribe())
        .watches_stream(pods.subscribe(), move |pod| selecting(&rs_store, &pod))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 4},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
            },
        }))
        .unwrap()
    }

    fn pod(name: &str, owner: Option<&str>, extra: Value) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "labels": {"app": "web"}, "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        });
        if let Some(uid) = owner {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "x", "uid": uid, "controller": true}]);
        }
        merge(&mut v, extra);
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    fn ready(since: &str) -> Value {
        json!({"spec": {"nodeName": "n"}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": since}]}})
    }

    #[test]
    fn missing_replicas_are_created_and_status_counts_ready_pods() {
        let pods = [pod("a", Some("rs-uid"), ready("2026-01-01T00:00:00Z"))];
        let plan = decide(&rs(3), &pods, true, SystemTime::now());
        assert_eq!(plan.create, 2);
        assert_eq!(plan.status.replicas, 1);
        assert_eq!(plan.status.ready_replicas, Some(1));
        assert_eq!(plan.status.available_replicas, Some(1));
        assert_eq!(plan.status.observed_generation, Some(4));
    }

    #[test]
    fn nothing_is_created_while_expectations_are_pending() {
        let plan = decide(&rs(3), &[], false, SystemTime::now());
        assert_eq!(plan.create, 0);
    }

    #[test]
    fn orphans_that_match_are_adopted_and_owned_pods_that_stop_matching_are_released() {
        let pods = [
            pod("orphan", None, json!({})),
            pod(
                "other",
                None,
                json!({"metadata": {"labels": {"app": "db"}}}),
            ),
            pod(
                "relabelled",
                Some("rs-uid"),
                json!({"metadata": {"labels": {"app": "db"}}}),
            ),
            pod("theirs", Some("other-uid"), json!({})),
        ];
        let plan = decide(&rs(1), &pods, true, SystemTime::now());
        assert_eq!(plan.adopt, ["orphan"]);
        assert_eq!(plan.release, ["relabelled"]);
        assert_eq!(plan.create, 0, "the adopted pod counts");
    }

    #[test]
    fn surplus_pods_go_unbound_first_then_not_ready_then_newest() {
        let pods = [
            pod("old-ready", Some("rs-uid"), ready("2026-01-01T00:00:00Z")),
            pod("unbound", Some("rs-uid"), json!({})),
            pod("new-ready", Some("rs-uid"), {
                let mut v = ready("2026-01-01T00:00:00Z");
                v["metadata"] = json!({"creationTimestamp": "2026-02-01T00:00:00Z"});
                v
            }),
            pod(
                "not-ready",
                Some("rs-uid"),
                json!({"spec": {"nodeName": "n"}, "status": {"phase": "Running"}}),
            ),
        ];
        let plan = decide(&rs(1), &pods, true, SystemTime::now());
        let names: Vec<&str> = plan.delete.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["unbound", "not-ready", "new-ready"]);
    }

    #[test]
    fn terminating_and_finished_pods_are_not_replicas() {
        let pods = [
            pod(
                "going",
                Some("rs-uid"),
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
            pod(
                "done",
                Some("rs-uid"),
                json!({"status": {"phase": "Failed"}}),
            ),
        ];
        let plan = decide(&rs(2), &pods, true, SystemTime::now());
        assert_eq!(plan.create, 2);
        assert_eq!(plan.status.replicas, 0);
    }

    #[test]
    fn min_ready_seconds_delays_availability_and_asks_for_a_requeue() {
        let mut r = rs(1);
        r.spec.as_mut().unwrap().min_ready_seconds = Some(30);
        let now = SystemTime::now();
        let since = k8s_openapi::jiff::Timestamp::try_from(now)
            .unwrap()
            .to_string();
        let plan = decide(&r, &[pod("a", Some("rs-uid"), ready(&since))], true, now);
        assert_eq!(plan.status.ready_replicas, Some(1));
        assert_eq!(plan.status.available_replicas, Some(0));
        assert!(
            plan.requeue_after
                .is_some_and(|d| d > Duration::from_secs(29))
        );
    }

    #[test]
    fn created_pods_come_from_the_template_with_a_controller_reference() {
        let p = pod_from_template(&rs(1));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-"));
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ReplicaSet", "rs-uid", Some(true))
        );
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
    }
}
