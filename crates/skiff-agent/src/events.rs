//! Core `v1` Events about pods, as the kubelet records them (what `kubectl describe pod`
//! lists): `Pulling`, `Pulled`, `Created`, `Started`, `Killing`, `BackOff`, `FailedMount`.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};

/// The component name events carry.
pub const COMPONENT: &str = "kubelet";

/// Records a `Normal` or `Warning` event about `pod` (about one of its containers when
/// `container` names it); failures are logged, never returned (an event is best effort).
pub async fn record(
    client: &Client,
    node: &str,
    pod: &Pod,
    container: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let event = build(node, pod, container, type_, reason, message);
    post(client.clone(), event).await;
}

/// Records an event as [`record`] does, without waiting for the API server: the pod's work
/// (and its status, which clients wait for) does not queue behind its events. The event's
/// time is taken now, so events still sort in the order they happened.
pub fn record_soon(
    client: &Client,
    node: &str,
    pod: &Pod,
    container: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let event = build(node, pod, container, type_, reason, message);
    tokio::spawn(post(client.clone(), event));
}

async fn post(client: Client, event: Event) {
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client, &namespace);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        let pod = event.involved_object.name.unwrap_or_default();
        let reason = event.reason.unwrap_or_default();
        tracing::debug!(%error, %pod, %reason, "cannot record an event");
    }
}

fn build(
    node: &str,
    pod: &Pod,
    container: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) -> Event {
    let namespace = pod.namespace().unwrap_or_else(|| "default".to_string());
    let now = k8s_openapi::jiff::Timestamp::now();
    let field_path = container.map(|c| {
        let init = pod
            .spec
            .iter()
            .flat_map(|s| s.init_containers.iter().flatten())
            .any(|ic| ic.name == c);
        if init {
            format!("spec.initContainers{{{c}}}")
        } else {
            format!("spec.containers{{{c}}}")
        }
    });
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", pod.name_any(), now.as_nanosecond())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: pod.metadata.name.clone(),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            resource_version: pod.metadata.resource_version.clone(),
            field_path,
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        event_time: Some(MicroTime(now)),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.into()),
        source: Some(EventSource {
            component: Some(COMPONENT.into()),
            host: Some(node.into()),
        }),
        ..Event::default()
    }
}
