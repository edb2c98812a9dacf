//! The root CA publisher: every active namespace has the ConfigMap `kube-root-ca.crt` whose
//! key `ca.crt` is the CA the API server serves with (pods mount it to check the server); one
//! deleted is created again, one changed is put back.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::backoff::ItemBackoff;
use crate::util::is_conflict;
use crate::{ControllerError, Shutdown};

/// The ConfigMap's name.
pub const NAME: &str = "kube-root-ca.crt";
/// The key holding the PEM bundle.
pub const KEY: &str = "ca.crt";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// What the publisher must do for one namespace (pure decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing.
    Keep,
    /// Create the ConfigMap.
    Create,
    /// Put `ca.crt` back.
    Update,
}

/// Decides for a namespace given its current ConfigMap and the CA bundle.
pub fn plan(namespace: &Namespace, current: Option<&ConfigMap>, ca_pem: &str) -> Plan {
    let active = namespace.metadata.deletion_timestamp.is_none()
        && namespace.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
    match current {
        _ if !active || ca_pem.is_empty() => Plan::Keep,
        None => Plan::Create,
        Some(cm) if cm.metadata.deletion_timestamp.is_some() => Plan::Keep,
        Some(cm) => {
            let data = cm.data.as_ref();
            let right = data.and_then(|d| d.get(KEY)).map(String::as_str) == Some(ca_pem)
                && data.is_some_and(|d| d.len() == 1)
                && cm.binary_data.as_ref().is_none_or(|b| b.is_empty());
            if right { Plan::Keep } else { Plan::Update }
        }
    }
}

struct Context {
    client: Client,
    maps: kube::runtime::reflector::Store<ConfigMap>,
    ca_pem: String,
    backoff: Mutex<ItemBackoff>,
}

fn wanted(ns: &str, ca_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            namespace: Some(ns.into()),
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/description".to_string(),
                DESCRIPTION.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(KEY.to_string(), ca_pem.to_string())])),
        ..ConfigMap::default()
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let name = ns.name_any();
    let current = ctx.maps.get(&ObjectRef::new(NAME).within(&name));
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    match plan(&ns, current.as_deref(), &ctx.ca_pem) {
        Plan::Keep => {}
        Plan::Create => match api
            .create(&PostParams::default(), &wanted(&name, &ctx.ca_pem))
            .await
        {
            Ok(_) => tracing::debug!(namespace = %name, "published the root CA"),
            Err(e) if is_conflict(&e) => {}
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Err(e) => return Err(ControllerError::api(&name, "create kube-root-ca.crt", e)),
        },
        Plan::Update => {
            let patch = serde_json::json!({
                "data": {KEY: ctx.ca_pem},
                "binaryData": null,
            });
            // A merge patch leaves other keys; replace the whole data map instead.
            let mut body = wanted(&name, &ctx.ca_pem);
            if let Some(cm) = &current {
                body.metadata.resource_version = cm.metadata.resource_version.clone();
                body.metadata.labels = cm.metadata.labels.clone();
            }
            match api.replace(NAME, &PostParams::default(), &body).await {
                Ok(_) => {}
                Err(e) if is_conflict(&e) => {
                    api.patch(NAME, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map_err(|e| ControllerError::api(&name, "update kube-root-ca.crt", e))?;
                }
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 403 => {}
                Err(e) => return Err(ControllerError::api(&name, "update kube-root-ca.crt", e)),
            }
        }
    }
    ctx.backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .forget(&name);
    Ok(Action::await_change())
}

fn error_policy(ns: Arc<Namespace>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, namespace = %ns.name_any(), "root CA publish failed");
    let delay = ctx
        .backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .next_delay(&ns.name_any());
    Action::requeue(delay)
}

/// Runs the root CA publisher with `ca_pem` until `shutdown`.
pub async fn run(client: Client, ca_pem: String, shutdown: Shutdown) {
    let maps = crate::Informer::spawn(
        Api::<ConfigMap>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={NAME}")),
    );
    if maps.store().wait_until_ready().await.is_err() {
        return;
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        maps: maps.store(),
        ca_pem,
        backoff: Mutex::new(ItemBackoff::default()),
    });
    Controller::new(Api::<Namespace>::all(client), watcher::Config::default())
        .watches_stream(maps.subscribe(), |cm| {
            cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_or_changed_maps_are_fixed_in_active_namespaces() {
        let active: Namespace = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
        let going: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "b"}, "status": {"phase": "Terminating"}}),
        )
        .unwrap();
        let good = wanted("a", "PEM");
        let mut bad = good.clone();
        bad.data = Some(BTreeMap::from([(KEY.to_string(), "x".to_string())]));
        assert_eq!(plan(&active, None, "PEM"), Plan::Create);
        assert_eq!(plan(&active, Some(&good), "PEM"), Plan::Keep);
        assert_eq!(plan(&active, Some(&bad), "PEM"), Plan::Update);
        assert_eq!(plan(&going, None, "PEM"), Plan::Keep);
        assert_eq!(plan(&active, None, ""), Plan::Keep);
    }
}
