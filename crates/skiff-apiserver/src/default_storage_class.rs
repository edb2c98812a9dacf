//! The `DefaultStorageClass` admission of new PersistentVolumeClaims, as kube-apiserver's
//! plugin: a claim with no `spec.storageClassName` (absent, not `""`, which asks for no
//! class) and no legacy class annotation gets the default StorageClass, the one annotated
//! `storageclass.kubernetes.io/is-default-class: "true"` (the newest when several are; none:
//! the claim is left as it is).

use serde_json::{Value, json};

use crate::state::AppState;
use crate::status::ApiError;
use crate::storage;

/// The default-class marker.
const DEFAULT_ANNOTATIONS: [&str; 2] = [
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
];

/// The name of the default class among `classes` (the newest, then by name, as kube does).
pub fn default_class(classes: &[Value]) -> Option<String> {
    classes
        .iter()
        .filter(|c| {
            DEFAULT_ANNOTATIONS.iter().any(|a| {
                c.pointer(&format!("/metadata/annotations/{}", a.replace('/', "~1")))
                    .and_then(Value::as_str)
                    == Some("true")
            })
        })
        .max_by(|a, b| {
            let created = |v: &Value| {
                v.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let name = |v: &Value| {
                v.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            created(a)
                .cmp(&created(b))
                .then_with(|| name(b).cmp(&name(a)))
        })
        .and_then(|c| c.pointer("/metadata/name").and_then(Value::as_str))
        .map(str::to_string)
}

/// Whether `claim` names a class (or none, with `""`).
pub fn names_class(claim: &Value) -> bool {
    claim
        .pointer("/spec/storageClassName")
        .is_some_and(|v| !v.is_null())
        || claim
            .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .is_some()
}

/// Admits a new claim (mutates it).
pub async fn admit_claim(state: &AppState, claim: &mut Value) -> Result<(), ApiError> {
    if !claim.is_object() || names_class(claim) {
        return Ok(());
    }
    let Some(info) = state.find("storage.k8s.io", "v1", "storageclasses") else {
        return Ok(());
    };
    let prefix = storage::prefix(&info, None)?;
    let page = state
        .store
        .list(&prefix, None, None, None)
        .await
        .map_err(|e| ApiError::from_store(e, &info, ""))?;
    let mut classes = Vec::new();
    for kv in &page.items {
        classes.push(storage::decode(&info, kv)?);
    }
    if let Some(name) = default_class(&classes) {
        if !claim.get("spec").is_some_and(Value::is_object) {
            claim["spec"] = json!({});
        }
        claim["spec"]["storageClassName"] = json!(name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_default_class_is_chosen() {
        let classes = vec![
            json!({"metadata": {"name": "slow"}}),
            json!({"metadata": {"name": "a", "creationTimestamp": "2024-01-01T00:00:00Z",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}}),
            json!({"metadata": {"name": "b", "creationTimestamp": "2025-01-01T00:00:00Z",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}}),
        ];
        assert_eq!(default_class(&classes).as_deref(), Some("b"));
        assert_eq!(default_class(&classes[..1]), None);
    }

    #[test]
    fn an_empty_class_is_a_choice() {
        assert!(names_class(&json!({"spec": {"storageClassName": ""}})));
        assert!(!names_class(&json!({"spec": {}})));
        assert!(!names_class(&json!({"spec": {"storageClassName": null}})));
    }
}
