//! `kubectl apply --server-side` over objects that client-side apply managed, as
//! kube-apiserver eases it for the `kubectl` manager only: conflicts on fields the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation holds with their live values
//! are taken over without `--force-conflicts`, and the annotation, where present, follows
//! each server-side apply so that going back to client-side apply still works.

use serde_json::{Value, json};

use super::FieldManagerError;
use super::fieldset::FieldSet;
use super::managers::{ApplyError, ManagedFields, Writer, apply};
use super::typeref::TypeRef;
use super::walk::{compare, field_set};

/// The annotation client-side apply keeps its last configuration in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The manager `kubectl apply --server-side` uses, the only one upgraded.
pub const KUBECTL: &str = "kubectl";

/// The fields the last client-side apply set and the live object still has with the same
/// values: those an upgrading `kubectl` may take over. `None` without a usable annotation.
fn allowed_conflicts(
    live: &Value,
    ty: &TypeRef<'_>,
    writer: &Writer<'_>,
) -> Result<Option<FieldSet>, FieldManagerError> {
    let Some(text) = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    let Ok(last) = serde_json::from_str::<Value>(text) else {
        return Ok(None);
    };
    if last.get("apiVersion") != live.get("apiVersion") {
        return Ok(None);
    }
    let last = writer.view(&last);
    let set = field_set(&last, ty)?;
    let differences = compare(&last, &writer.view(live), ty)?;
    Ok(Some(
        set.difference(&differences.modified)
            .difference(&differences.added)
            .difference(&differences.removed),
    ))
}

/// [`apply`], with kube's upgrade path from client-side apply for the `kubectl` manager.
pub fn apply_upgrading_client_side(
    live: &Value,
    config: &Value,
    managed: &ManagedFields,
    ty: &TypeRef<'_>,
    writer: &Writer<'_>,
    force: bool,
) -> Result<(Value, ManagedFields), ApplyError> {
    let result = match apply(live, config, managed, ty, writer, force) {
        Err(ApplyError::Conflicts(conflicts)) if writer.manager == KUBECTL => {
            let Some(allowed) = allowed_conflicts(live, ty, writer)? else {
                return Err(ApplyError::Conflicts(conflicts));
            };
            let remaining: Vec<_> = conflicts
                .iter()
                .filter(|c| !allowed.has(&c.path.0))
                .cloned()
                .collect();
            if !remaining.is_empty() {
                return Err(ApplyError::Conflicts(remaining));
            }
            apply(live, config, managed, ty, writer, true)
        }
        other => other,
    };
    let (mut merged, managed) = result?;
    if writer.manager == KUBECTL {
        sync_annotation(&mut merged, config);
    }
    Ok((merged, managed))
}

/// Rewrites the last-applied annotation, where the object has one, to the configuration
/// just applied (without the annotation itself).
fn sync_annotation(merged: &mut Value, config: &Value) {
    let has = merged
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .is_some();
    if !has {
        return;
    }
    let mut last = config.clone();
    if let Some(annotations) = last
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
    }
    merged["metadata"]["annotations"][LAST_APPLIED] = json!(last.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fieldmanager::managers::{Scope, update};
    use crate::registry::Registry;

    #[test]
    fn kubectl_takes_over_what_client_side_apply_last_applied() {
        let info = Registry::builtin()
            .find("apps", "v1", "deployments")
            .unwrap()
            .clone();
        let ty = TypeRef::of_resource(&info);
        let writer = |manager| Writer {
            manager,
            api_version: "apps/v1",
            scope: Scope::Main {
                status_subresource: true,
            },
            now: "t",
        };
        let last = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {}}, "spec": {"replicas": 1, "paused": false}});
        let live = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "annotations": {LAST_APPLIED: last.to_string()}},
            "spec": {"replicas": 1, "paused": true}});
        let csa = update(
            &json!({}),
            &live,
            &ManagedFields::default(),
            &ty,
            &writer("kubectl-client-side-apply"),
        )
        .unwrap();
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let (merged, managed) =
            apply_upgrading_client_side(&live, &config, &csa, &ty, &writer(KUBECTL), false)
                .unwrap();
        assert_eq!(merged["spec"]["replicas"], 3);
        let annotation = merged["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        assert_eq!(serde_json::from_str::<Value>(annotation).unwrap(), config);
        assert!(managed.entries.iter().any(|e| e.manager == KUBECTL));
        // paused differs from the last applied value: not taken over silently.
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"paused": false}});
        let err = apply_upgrading_client_side(&live, &config, &csa, &ty, &writer(KUBECTL), false)
            .unwrap_err();
        assert!(matches!(err, ApplyError::Conflicts(c) if c.len() == 1));
        // Other managers get no such help.
        let config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        assert!(
            apply_upgrading_client_side(&live, &config, &csa, &ty, &writer("other"), false)
                .is_err()
        );
    }
}
