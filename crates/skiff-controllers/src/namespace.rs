//! The namespace controller: when a namespace is deleted, deletes everything in it (every
//! namespaced resource discovery lists), and once nothing is left removes the `kubernetes`
//! finalizer through `namespaces/{name}/finalize` so the namespace goes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::backoff::ItemBackoff;
use crate::util::is_not_found;
use crate::{ControllerError, Shutdown};

/// The finalizer the namespace controller owns.
pub const FINALIZER: &str = "kubernetes";

/// What to do for a namespace (pure decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Not being deleted, or not ours to finish.
    Nothing,
    /// Delete what is in it; `remaining` objects were found.
    DeleteContent,
    /// Empty: remove the finalizer.
    Finalize,
}

/// Decides from the namespace and how many objects it still holds.
pub fn decide(ns: &Namespace, remaining: usize) -> Decision {
    let ours = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER));
    if ns.metadata.deletion_timestamp.is_none() || !ours {
        Decision::Nothing
    } else if remaining > 0 {
        Decision::DeleteContent
    } else {
        Decision::Finalize
    }
}

struct Context {
    client: Client,
    backoff: Mutex<ItemBackoff>,
}

/// Deletes what is left in `namespace`; returns how many objects were still there.
async fn empty(client: &Client, namespace: &str) -> Result<usize, kube::Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut remaining = 0;
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.scope != Scope::Namespaced
                || ar.plural.contains('/')
                || !caps.supports_operation(verbs::LIST)
                || !caps.supports_operation(verbs::DELETE)
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
            let items = match api.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(e),
            };
            for obj in items {
                remaining += 1;
                if obj.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match api
                    .delete(&obj.name_any(), &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(remaining)
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let name = ns.name_any();
    if decide(&ns, 0) == Decision::Nothing {
        return Ok(Action::await_change());
    }
    let remaining = empty(&ctx.client, &name)
        .await
        .map_err(|e| ControllerError::api(&name, "empty the namespace", e))?;
    match decide(&ns, remaining) {
        Decision::DeleteContent => Ok(Action::requeue(Duration::from_secs(1))),
        Decision::Nothing => Ok(Action::await_change()),
        Decision::Finalize => {
            let mut finalized = (*ns).clone();
            if let Some(spec) = finalized.spec.as_mut() {
                spec.finalizers = Some(
                    spec.finalizers
                        .take()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|f| f != FINALIZER)
                        .collect(),
                );
            }
            let api: Api<Namespace> = Api::all(ctx.client.clone());
            match api
                .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
                .await
            {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => return Ok(Action::await_change()),
                Err(e) => return Err(ControllerError::api(&name, "finalize", e)),
            }
            // A server that does not delete on the last finalizer gets the delete again.
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(ControllerError::api(&name, "delete", e)),
            }
            ctx.backoff
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .forget(&name);
            Ok(Action::await_change())
        }
    }
}

fn error_policy(ns: Arc<Namespace>, error: &ControllerError, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, namespace = %ns.name_any(), "namespace reconcile failed");
    let delay = ctx
        .backoff
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .next_delay(&ns.name_any());
    Action::requeue(delay.max(Duration::from_millis(500)))
}

/// Runs the namespace controller until `shutdown`.
pub async fn run(client: Client, shutdown: Shutdown) {
    let ctx = Arc::new(Context {
        client: client.clone(),
        backoff: Mutex::new(ItemBackoff::default()),
    });
    Controller::new(Api::<Namespace>::all(client), watcher::Config::default())
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
    fn a_deleted_namespace_is_emptied_then_finalized() {
        let live: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "a"}, "spec": {"finalizers": ["kubernetes"]}}),
        )
        .unwrap();
        let deleting: Namespace = serde_json::from_value(json!({
            "metadata": {"name": "a", "deletionTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"finalizers": ["kubernetes"]}
        }))
        .unwrap();
        assert_eq!(decide(&live, 3), Decision::Nothing);
        assert_eq!(decide(&deleting, 3), Decision::DeleteContent);
        assert_eq!(decide(&deleting, 0), Decision::Finalize);
    }
}
