//! The ServiceAccount controller: every active namespace has a `default` ServiceAccount; one
//! deleted is created again.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::backoff::ItemBackoff;
use crate::util::is_conflict;
use crate::{ControllerError, Shutdown};

/// The ServiceAccount every namespace gets.
pub const DEFAULT: &str = "default";

/// Whether the namespace needs its default ServiceAccount created (pure decision).
pub fn needs_default(namespace: &Namespace, has_default: bool) -> bool {
    let active = namespace.metadata.deletion_timestamp.is_none()
        && namespace.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating");
    active && !has_default
}

struct Context {
    client: Client,
    accounts: kube::runtime::reflector::Store<ServiceAccount>,
    backoff: Mutex<ItemBackoff>,
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let name = ns.name_any();
    let has = ctx
        .accounts
        .get(&ObjectRef::new(DEFAULT).within(&name))
        .is_some();
    if needs_default(&ns, has) {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT.into()),
                namespace: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::debug!(namespace = %name, "created the default service account"),
            Err(e) if is_conflict(&e) => {}
            // A namespace being deleted refuses new objects: nothing to do.
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Err(e) => {
                return Err(ControllerError::api(
                    &name,
                    "create the default service account",
                    e,
                ));
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
    tracing::warn!(%error, namespace = %ns.name_any(), "service account reconcile failed");
    let delay = ctx
        .backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .next_delay(&ns.name_any());
    Action::requeue(delay)
}

/// Runs the ServiceAccount controller until `shutdown`.
pub async fn run(client: Client, shutdown: Shutdown) {
    let accounts = crate::Informer::spawn(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields("metadata.name=default"),
    );
    if accounts.store().wait_until_ready().await.is_err() {
        return;
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        accounts: accounts.store(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    Controller::new(Api::<Namespace>::all(client), watcher::Config::default())
        .watches_stream(accounts.subscribe(), |sa| {
            sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns))
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
    fn only_active_namespaces_without_one_get_a_default_account() {
        let active: Namespace = serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap();
        let going: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "b"}, "status": {"phase": "Terminating"}}),
        )
        .unwrap();
        assert!(needs_default(&active, false));
        assert!(!needs_default(&active, true));
        assert!(!needs_default(&going, false));
    }
}
