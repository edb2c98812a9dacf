//! CustomResourceDefinitions: a CRD that is written registers its served versions (they are then
//! served by the generic handler and listed by discovery); a deleted CRD takes its custom
//! resources and its versions with it. Names are accepted and the CRD is Established at once.
//! Each version's schema must be structural ([`check_version_schema`]); the versions it
//! registers carry their schema and scale paths, which [`crate::custom_resource`] applies.

use std::sync::Arc;

use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;
use skiff_apimachinery::registry::ALL_VERBS;
use skiff_apimachinery::structural::CustomVersion;
use skiff_apimachinery::structural::check::check_version_schema;
use skiff_apimachinery::table::PrinterColumn;
use skiff_store::{ResourceKey, Revision};

use crate::object;
use crate::state::AppState;
use crate::status::{ApiError, Cause};

fn is_crd(info: &ResourceInfo) -> bool {
    info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions"
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(crd: &'a Value, pointer: &str) -> &'a str {
    crd.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The CEL rules of the versions' schemas that do not compile. As kube-apiserver, which
/// keeps one schema for the CRD when every version has the same, errors are under
/// `spec.validation.openAPIV3Schema` then, else under each version's.
fn rule_compile_causes(versions: &[Value]) -> Vec<Cause> {
    let schemas: Vec<Option<&Value>> = versions
        .iter()
        .map(|v| v.pointer("/schema/openAPIV3Schema"))
        .collect();
    let shared = schemas.windows(2).all(|w| w[0] == w[1]);
    let mut causes = Vec::new();
    for (i, schema) in schemas.iter().enumerate() {
        let Some(schema) = schema else { continue };
        let prefix = if shared {
            "spec.validation.openAPIV3Schema".to_string()
        } else {
            format!("spec.versions[{i}].schema.openAPIV3Schema")
        };
        let rules = skiff_apimachinery::structural::rules::Rules::compile(schema, &prefix);
        causes.extend(rules.errors.into_iter().map(|e| Cause {
            reason: e.reason,
            message: e.message,
            field: e.field,
        }));
        if shared {
            break;
        }
    }
    causes
}

fn required(field: &str, causes: &mut Vec<Cause>) {
    causes.push(Cause {
        reason: "FieldValueRequired".into(),
        message: "Required value".into(),
        field: field.into(),
    });
}

/// Validates a CRD and sets its status (names accepted, established, stored versions).
pub fn prepare(info: &ResourceInfo, crd: &mut Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let group = text(crd, "/spec/group").to_string();
    let plural = text(crd, "/spec/names/plural").to_string();
    let kind = text(crd, "/spec/names/kind").to_string();
    if group.is_empty() {
        required("spec.group", &mut causes);
    } else if !group.contains('.') {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: \"{group}\": should be a domain with at least one dot"
            ),
            field: "spec.group".into(),
        });
    }
    if plural.is_empty() {
        required("spec.names.plural", &mut causes);
    }
    if kind.is_empty() {
        required("spec.names.kind", &mut causes);
    }
    if !matches!(text(crd, "/spec/scope"), "Namespaced" | "Cluster") {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: "Unsupported value: supported values: \"Cluster\", \"Namespaced\"".into(),
            field: "spec.scope".into(),
        });
    }
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        required("spec.versions", &mut causes);
    }
    let storage: Vec<String> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
        .collect();
    if !versions.is_empty() && storage.len() != 1 {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: must have exactly one version marked as storage version"
                .into(),
            field: "spec.versions".into(),
        });
    }
    for (i, version) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}].schema");
        for error in check_version_schema(version.get("schema"), &path) {
            causes.push(Cause {
                reason: error.reason,
                message: error.message,
                field: error.field,
            });
        }
    }
    causes.extend(rule_compile_causes(&versions));
    let name = object::name(crd).to_string();
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"
            ),
            field: "metadata.name".into(),
        });
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(info, &name, causes));
    }

    let mut names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    if text(&names, "/singular").is_empty() {
        names["singular"] = json!(kind.to_ascii_lowercase());
    }
    if text(&names, "/listKind").is_empty() {
        names["listKind"] = json!(format!("{kind}List"));
    }
    let mut stored = strings(crd.pointer("/status/storedVersions"));
    for version in storage {
        if !stored.contains(&version) {
            stored.push(version);
        }
    }
    let now = object::now();
    let previous_time = |kind: &str| -> String {
        crd.pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|list| {
                list.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
            })
            .and_then(|c| c.get("lastTransitionTime"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| now.clone())
    };
    crd["status"] = json!({
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
                "lastTransitionTime": previous_time("NamesAccepted"),
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
                "lastTransitionTime": previous_time("Established"),
            },
        ],
        "acceptedNames": names,
        "storedVersions": stored,
    });
    Ok(())
}

/// The resources a CRD serves, with the printer columns of each version.
pub fn served_versions(crd: &Value) -> Vec<(ResourceInfo, Vec<PrinterColumn>)> {
    let group = text(crd, "/spec/group");
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let kind = text(&names, "/kind");
    let plural = text(&names, "/plural");
    let singular = match text(&names, "/singular") {
        "" => kind.to_ascii_lowercase(),
        s => s.to_string(),
    };
    let namespaced = text(crd, "/spec/scope") == "Namespaced";
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|versions| {
            versions
                .iter()
                .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
                .filter_map(|v| {
                    let version = v.get("name").and_then(Value::as_str)?;
                    let mut subresources = Vec::new();
                    if v.pointer("/subresources/status").is_some() {
                        subresources.push("status".to_string());
                    }
                    if v.pointer("/subresources/scale").is_some() {
                        subresources.push("scale".to_string());
                    }
                    let info = ResourceInfo {
                        group: group.to_string(),
                        version: version.to_string(),
                        kind: kind.to_string(),
                        plural: plural.to_string(),
                        singular: singular.clone(),
                        namespaced,
                        short_names: strings(names.get("shortNames")),
                        categories: strings(names.get("categories")),
                        verbs: ALL_VERBS.iter().map(|s| s.to_string()).collect(),
                        subresources,
                        custom: Some(Arc::new(CustomVersion::from_crd_version(v))),
                    };
                    Some((info, PrinterColumn::for_crd_version(v)))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Registers what a CRD serves (and unregisters versions it no longer serves).
pub fn register(state: &AppState, crd: &Value, from: Revision) {
    let group = text(crd, "/spec/group").to_string();
    let plural = text(crd, "/spec/names/plural").to_string();
    if group.is_empty() || plural.is_empty() {
        return;
    }
    let served = served_versions(crd);
    for old in state.versions_of(&group, &plural) {
        if !served.iter().any(|(info, _)| info.version == old.version) {
            state.unregister_version(&group, &old.version, &plural);
        }
    }
    for (info, columns) in served {
        state.register(info, columns, from);
    }
}

/// Called after every successful write: registers a written CRD's versions.
pub async fn after_write(
    state: &Arc<AppState>,
    info: &ResourceInfo,
    obj: &Value,
    revision: Revision,
) {
    if is_crd(info) && !object::is_deleting(obj) {
        register(state, obj, revision);
    }
}

/// Called after a delete: a deleted CRD's custom resources and versions go.
pub async fn after_delete(state: &Arc<AppState>, info: &ResourceInfo, obj: &Value) {
    if !is_crd(info) {
        return;
    }
    let group = text(obj, "/spec/group").to_string();
    let plural = text(obj, "/spec/names/plural").to_string();
    if group.is_empty() || plural.is_empty() {
        return;
    }
    if let Ok(prefix) = ResourceKey::list_prefix(&format!("{group}/{plural}"), None) {
        match state.store.list(&prefix, None, None, None).await {
            Ok(page) => {
                for kv in page.items {
                    if let Err(err) = state.store.delete(&kv.key, None).await {
                        tracing::warn!(key = %kv.key, error = %err, "cannot delete custom resource");
                    }
                }
            }
            Err(err) => tracing::warn!(%prefix, error = %err, "cannot list custom resources"),
        }
    }
    for old in state.versions_of(&group, &plural) {
        state.unregister_version(&group, &old.version, &plural);
    }
}

/// Registers every stored CRD (at start).
pub async fn load_all(state: &Arc<AppState>) -> Result<(), ApiError> {
    let prefix = ResourceKey::list_prefix("apiextensions.k8s.io/customresourcedefinitions", None)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let page = state
        .store
        .list(&prefix, None, None, None)
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    for kv in page.items {
        match serde_json::from_slice::<Value>(&kv.value) {
            Ok(crd) => register(state, &crd, page.revision),
            Err(err) => tracing::warn!(key = %kv.key, error = %err, "undecodable CRD skipped"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_apimachinery::Registry;

    fn crd() -> Value {
        json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                    {"name": "v1alpha1", "served": false, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object"}}},
                ],
            },
        })
    }

    #[test]
    fn a_valid_crd_is_established_and_serves_its_versions() {
        let registry = Registry::builtin();
        let info = registry
            .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        let mut obj = crd();
        prepare(info, &mut obj).unwrap();
        assert_eq!(obj["status"]["conditions"][1]["type"], "Established");
        assert_eq!(obj["status"]["storedVersions"], json!(["v1"]));
        assert_eq!(obj["status"]["acceptedNames"]["singular"], "widget");
        let served = served_versions(&obj);
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].0.short_names, vec!["wd".to_string()]);
        assert!(served[0].0.has_subresource("status"));
    }

    #[test]
    fn a_misnamed_crd_is_invalid() {
        let registry = Registry::builtin();
        let info = registry
            .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        let mut obj = crd();
        obj["metadata"]["name"] = json!("wrong");
        let err = prepare(info, &mut obj).unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn a_non_structural_schema_is_invalid() {
        let registry = Registry::builtin();
        let info = registry
            .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        let mut obj = crd();
        obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"] =
            json!({"type": "object", "properties": {"spec": {"properties": {}}}});
        let err = prepare(info, &mut obj).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains(
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields"
            ),
            "{}",
            err.message
        );
        obj["spec"]["versions"][0]
            .as_object_mut()
            .unwrap()
            .remove("schema");
        let err = prepare(info, &mut obj).unwrap_err();
        assert!(
            err.message.contains("schemas are required"),
            "{}",
            err.message
        );
    }
}
