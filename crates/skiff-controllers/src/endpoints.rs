//! The Endpoints and EndpointSlice controller: for every Service with a selector, the
//! addresses of the pods it selects, as a core `v1` Endpoints (ready `addresses` and
//! `notReadyAddresses`, grouped in subsets by resolved ports) and `discovery.k8s.io/v1`
//! EndpointSlices (one per distinct port set, with `ready`/`serving`/`terminating`
//! conditions, the `kubernetes.io/service-name` label and the Service as controller).
//!
//! [`desired_endpoints`] and [`desired_slices`] are pure: (Service, pods) -> objects;
//! [`reconcile`] writes them. Both carry an owner reference to the Service, so the garbage
//! collector removes them with it (upstream's endpoints controller deletes Endpoints itself).
//! Slices are not split at 100 endpoints.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, ObjectReference, Pod,
    Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use skiff_apimachinery::{LabelSelector, Requirement};

use crate::backoff::ItemBackoff;
use crate::informer::Informer;
use crate::util::{
    controller_ref, is_conflict, is_not_found, key_of, pod_is_finished, pod_is_ready,
};
use crate::{ControllerError, Shutdown};

/// The label naming a slice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming a slice's manager.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`] (upstream's, so tools recognise it).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// A resolved port: (name, number, protocol, appProtocol).
type ResolvedPort = (String, i32, String, Option<String>);

/// One pod's place behind a Service.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    ip: String,
    node_name: Option<String>,
    hostname: Option<String>,
    target: ObjectReference,
    ready: bool,
    serving: bool,
    terminating: bool,
    /// Sorted.
    ports: Vec<ResolvedPort>,
}

fn service_selector(svc: &Service) -> Option<LabelSelector> {
    let sel = svc.spec.as_ref()?.selector.as_ref()?;
    if sel.is_empty() {
        return None;
    }
    Some(LabelSelector {
        requirements: sel
            .iter()
            .map(|(k, v)| Requirement::In(k.clone(), vec![v.clone()]))
            .collect(),
    })
}

/// Whether the controller manages endpoints for `svc` (it has a non-empty selector).
pub fn has_selector(svc: &Service) -> bool {
    service_selector(svc).is_some()
}

/// Whether `svc` selects `pod` (same namespace, labels match).
pub fn selects(svc: &Service, pod: &Pod) -> bool {
    pod.metadata.namespace == svc.metadata.namespace
        && service_selector(svc).is_some_and(|s| s.matches(&pod.labels().clone()))
}

/// The container port `target` names or numbers in `pod` (`None`: a name the pod lacks).
pub fn resolve_target_port(pod: &Pod, target: Option<&IntOrString>, port: i32) -> Option<i32> {
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port)
        }
    }
}

fn members(svc: &Service, pods: &[Arc<Pod>], include_terminating: bool) -> Vec<Member> {
    let spec = svc.spec.clone().unwrap_or_default();
    let publish = spec.publish_not_ready_addresses == Some(true);
    let mut out = Vec::new();
    for pod in pods.iter().filter(|p| selects(svc, p)) {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let terminating = pod.metadata.deletion_timestamp.is_some();
        if pod_is_finished(pod) || (terminating && !include_terminating) {
            continue;
        }
        let mut ports = Vec::new();
        for p in spec.ports.iter().flatten() {
            if let Some(n) = resolve_target_port(pod, p.target_port.as_ref(), p.port) {
                ports.push((
                    p.name.clone().unwrap_or_default(),
                    n,
                    p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    p.app_protocol.clone(),
                ));
            }
        }
        ports.sort();
        let pod_spec = pod.spec.clone().unwrap_or_default();
        let hostname = pod_spec
            .hostname
            .filter(|_| pod_spec.subdomain.as_deref() == Some(svc.name_any().as_str()));
        let serving = pod_is_ready(pod) || publish;
        out.push(Member {
            ip,
            node_name: pod_spec.node_name,
            hostname,
            target: ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.namespace(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..ObjectReference::default()
            },
            ready: serving && !terminating,
            serving,
            terminating,
            ports,
        });
    }
    out.sort_by(|a, b| (&a.ip, &a.target.name).cmp(&(&b.ip, &b.target.name)));
    out
}

fn owner(svc: &Service) -> OwnerReference {
    controller_ref(svc)
}

/// The Endpoints `svc` should have given `pods`: ready addresses in `addresses`, others in
/// `notReadyAddresses` (all in `addresses` with `publishNotReadyAddresses`), terminating
/// pods left out, one subset per distinct set of resolved ports.
pub fn desired_endpoints(svc: &Service, pods: &[Arc<Pod>]) -> Endpoints {
    let publish = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        == Some(true);
    let mut groups: BTreeMap<Vec<ResolvedPort>, EndpointSubset> = BTreeMap::new();
    let has_ports = svc
        .spec
        .as_ref()
        .is_some_and(|s| !s.ports.clone().unwrap_or_default().is_empty());
    for m in members(svc, pods, publish) {
        if has_ports && m.ports.is_empty() {
            continue;
        }
        let subset = groups.entry(m.ports.clone()).or_default();
        let address = EndpointAddress {
            ip: m.ip.clone(),
            hostname: m.hostname.clone(),
            node_name: m.node_name.clone(),
            target_ref: Some(m.target.clone()),
        };
        let list = if m.ready || publish {
            subset.addresses.get_or_insert_with(Vec::new)
        } else {
            subset.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(address);
    }
    let subsets: Vec<EndpointSubset> = groups
        .into_iter()
        .map(|(ports, mut subset)| {
            if !ports.is_empty() {
                subset.ports = Some(
                    ports
                        .into_iter()
                        .map(|(name, port, protocol, app)| CorePort {
                            name: Some(name).filter(|n| !n.is_empty()),
                            port,
                            protocol: Some(protocol),
                            app_protocol: app,
                        })
                        .collect(),
                );
            }
            subset
        })
        .collect();
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.namespace(),
            labels: svc.metadata.labels.clone(),
            owner_references: Some(vec![OwnerReference {
                controller: None,
                block_owner_deletion: None,
                ..owner(svc)
            }]),
            ..ObjectMeta::default()
        },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    }
}

/// The EndpointSlices `svc` should have given `pods`, named `<service>-<n>`: one per
/// distinct set of resolved ports (one empty slice when no pod qualifies), terminating pods
/// included with their conditions.
pub fn desired_slices(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSlice> {
    let mut groups: BTreeMap<(String, Vec<ResolvedPort>), Vec<Member>> = BTreeMap::new();
    for m in members(svc, pods, true) {
        let family = if m.ip.contains(':') { "IPv6" } else { "IPv4" };
        groups
            .entry((family.to_string(), m.ports.clone()))
            .or_default()
            .push(m);
    }
    if groups.is_empty() {
        groups.insert(("IPv4".into(), Vec::new()), Vec::new());
    }
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    groups
        .into_iter()
        .enumerate()
        .map(|(i, ((family, ports), members))| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{}-{i}", svc.name_any())),
                namespace: svc.namespace(),
                labels: Some(labels.clone()),
                owner_references: Some(vec![owner(svc)]),
                ..ObjectMeta::default()
            },
            address_type: family,
            endpoints: members
                .into_iter()
                .map(|m| Endpoint {
                    addresses: vec![m.ip],
                    conditions: Some(EndpointConditions {
                        ready: Some(m.ready),
                        serving: Some(m.serving),
                        terminating: Some(m.terminating),
                    }),
                    hostname: m.hostname,
                    node_name: m.node_name,
                    target_ref: Some(m.target),
                    ..Endpoint::default()
                })
                .collect(),
            ports: Some(
                ports
                    .into_iter()
                    .map(|(name, port, protocol, app)| SlicePort {
                        name: Some(name),
                        port: Some(port),
                        protocol: Some(protocol),
                        app_protocol: app,
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// The shared state of the controller.
pub struct Context {
    client: Client,
    pods: Store<Pod>,
    backoff: Mutex<ItemBackoff>,
}

/// Writes the Endpoints and EndpointSlices of one Service.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if !has_selector(&svc) || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = key_of(svc.as_ref());
    let namespace = svc.namespace().unwrap_or_default();
    let pods = ctx.pods.state_filter(|p| selects(&svc, p));
    let api_err = |action: &'static str| {
        let key = key.clone();
        move |e| ControllerError::api(&key, action, e)
    };

    let endpoints: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut want = desired_endpoints(&svc, &pods);
    match endpoints
        .get_opt(&svc.name_any())
        .await
        .map_err(api_err("get endpoints"))?
    {
        None => match endpoints.create(&PostParams::default(), &want).await {
            Ok(_) => {}
            Err(e) if is_conflict(&e) => return Ok(Action::requeue(Duration::from_millis(50))),
            Err(e) => return Err(ControllerError::api(&key, "create endpoints", e)),
        },
        Some(have)
            if have.subsets.clone().filter(|s| !s.is_empty()) != want.subsets
                || have.metadata.labels != want.metadata.labels
                || have.metadata.owner_references.is_none() =>
        {
            want.metadata.resource_version = have.metadata.resource_version.clone();
            endpoints
                .replace(&svc.name_any(), &PostParams::default(), &want)
                .await
                .map_err(api_err("update endpoints"))?;
        }
        Some(_) => {}
    }

    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = format!(
        "{SERVICE_NAME_LABEL}={},{MANAGED_BY_LABEL}={MANAGED_BY}",
        svc.name_any()
    );
    let existing = slices
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(api_err("list endpointslices"))?
        .items;
    let wanted = desired_slices(&svc, &pods);
    for mut slice in wanted.clone() {
        let name = slice.name_any();
        match existing.iter().find(|s| s.name_any() == name) {
            None => match slices.create(&PostParams::default(), &slice).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => return Ok(Action::requeue(Duration::from_millis(50))),
                Err(e) => return Err(ControllerError::api(&key, "create endpointslice", e)),
            },
            Some(have)
                if have.endpoints != slice.endpoints
                    || have.ports.clone().unwrap_or_default()
                        != slice.ports.clone().unwrap_or_default()
                    || have.address_type != slice.address_type
                    || have.metadata.labels != slice.metadata.labels =>
            {
                slice.metadata.resource_version = have.metadata.resource_version.clone();
                slices
                    .replace(&name, &PostParams::default(), &slice)
                    .await
                    .map_err(api_err("update endpointslice"))?;
            }
            Some(_) => {}
        }
    }
    for stale in existing
        .iter()
        .filter(|s| !wanted.iter().any(|w| w.metadata.name == s.metadata.name))
    {
        match slices
            .delete(&stale.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(ControllerError::api(&key, "delete endpointslice", e)),
        }
    }
    Ok(crate::util::succeeded(
        &ctx.backoff,
        &key,
        Some(Duration::from_secs(300)),
    ))
}

fn error_policy(svc: Arc<Service>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    crate::util::failed(&ctx.backoff, "service", &key_of(svc.as_ref()), error)
}

/// Every Service in a pod's namespace: a pod whose labels changed may have left one.
fn services_of(store: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    store
        .state()
        .iter()
        .filter(|s| s.metadata.namespace == pod.metadata.namespace && has_selector(s))
        .map(|s| ObjectRef::from_obj(s.as_ref()))
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
    let controller = Controller::new(Api::<Service>::all(client), watcher::Config::default());
    let services = controller.store();
    controller
        .watches_stream(pods.subscribe(), move |pod| services_of(&services, &pod))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
#[path = "endpoints_tests.rs"]
mod tests;
