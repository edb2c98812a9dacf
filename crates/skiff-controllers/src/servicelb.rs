//! The built-in service load balancer (k3s's ServiceLB, without its daemon pods): a Service of
//! type LoadBalancer is reachable on every node, because each node's proxy answers its node
//! port and its ingress addresses, so its `status.loadBalancer.ingress` lists the InternalIPs
//! (ExternalIPs first, when a node has them) of the Ready, schedulable nodes. Services of
//! another `spec.loadBalancerClass` belong to another implementation and are left alone; a
//! Service that stops being a LoadBalancer has the status cleared.
//!
//! Ingresses served by the nodes' built-in proxy (class `skiff`, the default class the server
//! creates, so also Ingresses naming no class) get the same addresses in
//! `status.loadBalancer.ingress`.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::backoff::ItemBackoff;
use crate::util::patch_status;
use crate::{ControllerError, Shutdown};

/// The node addresses a LoadBalancer Service gets, sorted and without duplicates.
pub fn node_addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for node in nodes {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let schedulable = !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !ready || !schedulable {
            continue;
        }
        let addresses = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.clone())
            .unwrap_or_default();
        let external: Vec<String> = addresses
            .iter()
            .filter(|a| a.type_ == "ExternalIP")
            .map(|a| a.address.clone())
            .collect();
        let chosen = if external.is_empty() {
            addresses
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
                .collect()
        } else {
            external
        };
        out.extend(chosen);
    }
    out.sort();
    out.dedup();
    out
}

/// The `status.loadBalancer` the Service should have (`None`: not ours to manage).
pub fn wanted_status(svc: &Service, addresses: &[String]) -> Option<Value> {
    let spec = svc.spec.as_ref()?;
    if spec.load_balancer_class.is_some() {
        return None;
    }
    if spec.type_.as_deref() != Some("LoadBalancer") {
        // No longer a LoadBalancer: clear what this controller wrote.
        let had = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .is_some_and(|i| !i.is_empty());
        return had.then(|| json!({}));
    }
    let ingress: Vec<Value> = addresses
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    Some(json!({ "ingress": ingress }))
}

fn current_status(svc: &Service) -> Value {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| serde_json::to_value(lb).ok())
        .unwrap_or_else(|| json!({}))
}

struct Context {
    client: Client,
    nodes: Store<Node>,
    backoff: Mutex<ItemBackoff>,
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let addresses = node_addresses(&ctx.nodes.state());
    let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
    if let Some(wanted) = wanted_status(&svc, &addresses) {
        let normalized = |v: &Value| {
            let empty = v
                .get("ingress")
                .is_none_or(|i| i.as_array().is_some_and(|a| a.is_empty()));
            if empty { json!({}) } else { v.clone() }
        };
        if normalized(&current_status(&svc)) != normalized(&wanted) {
            let ns = svc.namespace().unwrap_or_default();
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
            let value = if wanted.get("ingress").is_some() {
                wanted
            } else {
                json!({ "ingress": null })
            };
            patch_status(
                &api,
                &svc.name_any(),
                &key,
                &json!({ "loadBalancer": value }),
            )
            .await?;
        }
    }
    ctx.backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .forget(&key);
    Ok(Action::await_change())
}

fn error_policy(svc: Arc<Service>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any());
    tracing::warn!(%error, service = %key, "service load balancer reconcile failed");
    let delay = ctx
        .backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .next_delay(&key);
    Action::requeue(delay)
}

/// Runs the service load balancer until `shutdown`.
pub async fn run(client: Client, shutdown: Shutdown) {
    let nodes =
        crate::Informer::spawn(Api::<Node>::all(client.clone()), watcher::Config::default());
    if nodes.store().wait_until_ready().await.is_err() {
        return;
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        nodes: nodes.store(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    let services: Api<Service> = Api::all(client);
    let controller = Controller::new(services, watcher::Config::default());
    // Any node change may change every LoadBalancer's addresses.
    let store = controller.store();
    controller
        .watches_stream(nodes.subscribe(), move |_node| {
            store
                .state()
                .iter()
                .filter(|s| {
                    s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
                })
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// The IngressClass the nodes' proxies serve.
pub const INGRESS_CLASS: &str = "skiff";

/// Whether the nodes' proxy serves `ingress`: class `skiff` by name, by the legacy annotation,
/// or no class at all (`skiff` is the cluster's default class).
pub fn serves_ingress(ingress: &Ingress) -> bool {
    let by_name = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref());
    let by_annotation = ingress
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/ingress.class"))
        .map(String::as_str);
    match (by_name, by_annotation) {
        (Some(name), _) => name == INGRESS_CLASS,
        (None, Some(annotation)) => annotation == INGRESS_CLASS,
        (None, None) => true,
    }
}

async fn reconcile_ingress(
    ing: Arc<Ingress>,
    ctx: Arc<Context>,
) -> Result<Action, ControllerError> {
    if !serves_ingress(&ing) {
        return Ok(Action::await_change());
    }
    let addresses = node_addresses(&ctx.nodes.state());
    let wanted: Vec<Value> = addresses.iter().map(|ip| json!({ "ip": ip })).collect();
    let current = ing
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| serde_json::to_value(i).ok())
        .unwrap_or_else(|| json!([]));
    if current != json!(wanted) {
        let ns = ing.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", ing.name_any());
        let api: Api<Ingress> = Api::namespaced(ctx.client.clone(), &ns);
        patch_status(
            &api,
            &ing.name_any(),
            &key,
            &json!({ "loadBalancer": { "ingress": wanted } }),
        )
        .await?;
    }
    Ok(Action::await_change())
}

fn ingress_error_policy(ing: Arc<Ingress>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    let key = format!(
        "ingress {}/{}",
        ing.namespace().unwrap_or_default(),
        ing.name_any()
    );
    tracing::warn!(%error, %key, "ingress status reconcile failed");
    let delay = ctx
        .backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .next_delay(&key);
    Action::requeue(delay)
}

/// Runs the Ingress status half until `shutdown`.
pub async fn run_ingress(client: Client, shutdown: Shutdown) {
    let nodes =
        crate::Informer::spawn(Api::<Node>::all(client.clone()), watcher::Config::default());
    if nodes.store().wait_until_ready().await.is_err() {
        return;
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        nodes: nodes.store(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    let controller = Controller::new(Api::<Ingress>::all(client), watcher::Config::default());
    let store = controller.store();
    controller
        .watches_stream(nodes.subscribe(), move |_node| {
            store
                .state()
                .iter()
                .map(|i| ObjectRef::from_obj(i.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile_ingress, ingress_error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ingresses_of_the_skiff_class_or_none_are_served() {
        let ing = |spec: Value, annotations: Value| -> Ingress {
            serde_json::from_value(
                json!({"metadata": {"name": "i", "annotations": annotations}, "spec": spec}),
            )
            .unwrap()
        };
        assert!(serves_ingress(&ing(json!({}), json!({}))));
        assert!(serves_ingress(&ing(
            json!({"ingressClassName": "skiff"}),
            json!({})
        )));
        assert!(!serves_ingress(&ing(
            json!({"ingressClassName": "nginx"}),
            json!({})
        )));
        assert!(!serves_ingress(&ing(
            json!({}),
            json!({"kubernetes.io/ingress.class": "nginx"})
        )));
    }

    fn node(name: &str, ready: bool, unschedulable: bool, addresses: Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"unschedulable": unschedulable},
                "status": {
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                    "addresses": addresses,
                },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn ready_schedulable_nodes_give_their_addresses() {
        let nodes = vec![
            node(
                "a",
                true,
                false,
                json!([{"type": "InternalIP", "address": "10.0.0.2"}]),
            ),
            node(
                "b",
                true,
                false,
                json!([{"type": "InternalIP", "address": "10.0.0.3"}, {"type": "ExternalIP", "address": "203.0.113.3"}]),
            ),
            node(
                "c",
                false,
                false,
                json!([{"type": "InternalIP", "address": "10.0.0.4"}]),
            ),
            node(
                "d",
                true,
                true,
                json!([{"type": "InternalIP", "address": "10.0.0.5"}]),
            ),
        ];
        assert_eq!(node_addresses(&nodes), vec!["10.0.0.2", "203.0.113.3"]);
    }

    #[test]
    fn only_load_balancers_of_no_other_class_are_managed() {
        let svc = |spec: Value, status: Value| -> Service {
            serde_json::from_value(
                json!({"metadata": {"name": "s"}, "spec": spec, "status": status}),
            )
            .unwrap()
        };
        let addrs = vec!["10.0.0.2".to_string()];
        assert_eq!(
            wanted_status(&svc(json!({"type": "LoadBalancer"}), json!({})), &addrs),
            Some(json!({"ingress": [{"ip": "10.0.0.2", "ipMode": "VIP"}]}))
        );
        assert_eq!(
            wanted_status(
                &svc(
                    json!({"type": "LoadBalancer", "loadBalancerClass": "x.io/lb"}),
                    json!({})
                ),
                &addrs
            ),
            None
        );
        assert_eq!(
            wanted_status(&svc(json!({"type": "ClusterIP"}), json!({})), &addrs),
            None
        );
        assert_eq!(
            wanted_status(
                &svc(
                    json!({"type": "ClusterIP"}),
                    json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.2"}]}})
                ),
                &addrs
            ),
            Some(json!({}))
        );
    }
}
