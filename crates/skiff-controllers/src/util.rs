//! Helpers every controller shares: controller references, label selectors of the typed API,
//! pod readiness and availability, core `v1` Events.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as MetaSelector, MicroTime, ObjectMeta, OwnerReference, Time,
};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use skiff_apimachinery::{LabelSelector, Requirement};

/// The owner reference marking `meta`'s controller, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|o| o.controller == Some(true))
}

/// A controller reference to `owner` (what its children carry).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A typed label selector as a matcher; `None` for a nil or malformed selector (matches
/// nothing).
pub fn selector(selector: Option<&MetaSelector>) -> Option<LabelSelector> {
    let selector = selector?;
    let mut requirements = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        requirements.push(Requirement::In(k.clone(), vec![v.clone()]));
    }
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default();
        requirements.push(match e.operator.as_str() {
            "In" => Requirement::In(e.key.clone(), values),
            "NotIn" => Requirement::NotIn(e.key.clone(), values),
            "Exists" => Requirement::Exists(e.key.clone()),
            "DoesNotExist" => Requirement::DoesNotExist(e.key.clone()),
            _ => return None,
        });
    }
    Some(LabelSelector { requirements })
}

/// The labels of `meta` (empty when none).
pub fn labels(meta: &ObjectMeta) -> BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Whether a pod counts as a replica: not finished and not being deleted.
pub fn pod_is_active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none() && !pod_is_finished(pod)
}

/// Whether a pod has Succeeded or Failed.
pub fn pod_is_finished(pod: &Pod) -> bool {
    matches!(pod_phase(pod), "Succeeded" | "Failed")
}

/// The pod's phase (`Pending` when unset).
pub fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// When the pod became Ready, if it is Ready.
pub fn pod_ready_since(pod: &Pod) -> Option<SystemTime> {
    let cond = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(
        cond.last_transition_time
            .as_ref()
            .map_or(SystemTime::UNIX_EPOCH, |t| SystemTime::from(t.0)),
    )
}

/// Whether the pod is Ready.
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Whether the pod has been Ready for at least `min_ready` at `now`.
pub fn pod_is_available(pod: &Pod, min_ready: Duration, now: SystemTime) -> bool {
    pod_ready_since(pod).is_some_and(|since| min_ready.is_zero() || since + min_ready <= now)
}

/// The `namespace/name` key of an object.
pub fn key_of<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Records a core `v1` Event about `obj` (best effort: failures are only logged).
pub async fn record_event<K: Resource<DynamicType = ()>>(
    client: &Client,
    component: &str,
    obj: &K,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let namespace = obj.namespace().unwrap_or_else(|| "default".to_string());
    let now = k8s_openapi::jiff::Timestamp::now();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", obj.name_any(), now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: obj.meta().name.clone(),
            namespace: obj.namespace(),
            uid: obj.meta().uid.clone(),
            resource_version: obj.meta().resource_version.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        reporting_component: Some(component.into()),
        reporting_instance: Some(component.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(%error, object = %obj.name_any(), reason, "cannot record an event");
    }
}

/// Whether a `kube` error is the API's 404.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 404)
}

/// Whether a `kube` error is the API's 409 (conflict or already exists).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == 409)
}

/// The action after a successful reconcile: the key's back-off is forgotten, and the object is
/// requeued only when the plan asks for a later look.
pub fn succeeded(
    backoff: &std::sync::Mutex<crate::backoff::ItemBackoff>,
    key: &str,
    requeue_after: Option<Duration>,
) -> kube::runtime::controller::Action {
    backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .forget(key);
    match requeue_after {
        Some(after) => kube::runtime::controller::Action::requeue(after),
        None => kube::runtime::controller::Action::await_change(),
    }
}

/// The action after a failed reconcile: logged once here, requeued after the key's back-off.
pub fn failed(
    backoff: &std::sync::Mutex<crate::backoff::ItemBackoff>,
    kind: &str,
    key: &str,
    error: &impl std::fmt::Display,
) -> kube::runtime::controller::Action {
    tracing::warn!(%error, kind, object = %key, "reconcile failed");
    let delay = backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .next_delay(key);
    kube::runtime::controller::Action::requeue(delay)
}

/// Merge-patches `status` into the status subresource of `name`; an object that is gone meanwhile
/// is not an error (the next watch event ends its reconciles).
pub async fn patch_status<K>(
    api: &Api<K>,
    name: &str,
    key: &str,
    status: &impl serde::Serialize,
) -> Result<(), crate::ControllerError>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = kube::api::Patch::Merge(serde_json::json!({ "status": status }));
    match api
        .patch_status(name, &kube::api::PatchParams::default(), &patch)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(crate::ControllerError::api(key, "update status", e)),
    }
}
