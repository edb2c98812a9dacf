//! The strategy of custom resources whose CRD gives a schema (kube-apiserver's
//! `customresource` strategy): a written object is pruned of the fields its version's schema
//! does not know and defaulted, then validated against the schema; an object read from
//! storage is defaulted again (a default added to the CRD later shows on old objects); and
//! the `scale` subresource reads and writes the replica count at the CRD's JSON paths.

use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;
use skiff_apimachinery::structural::{self, ScalePaths};

use crate::status::{ApiError, Cause};

/// The schema of a custom resource version, if the CRD gives one.
fn schema(info: &ResourceInfo) -> Option<&Value> {
    info.custom.as_ref().and_then(|c| c.schema.as_ref())
}

/// Prunes and defaults a custom object being written (nothing for other kinds).
pub fn prune_and_default(info: &ResourceInfo, obj: &mut Value) {
    if let Some(custom) = &info.custom {
        custom.prune_and_default(obj);
    }
}

/// Defaults a custom object read from storage (nothing for other kinds).
pub fn default_on_read(info: &ResourceInfo, obj: &mut Value) {
    if let Some(schema) = schema(info) {
        structural::default::apply(obj, schema);
    }
}

/// The schema's errors for a custom object, as `Invalid` causes.
pub fn schema_causes(info: &ResourceInfo, obj: &Value) -> Vec<Cause> {
    let Some(schema) = schema(info) else {
        return Vec::new();
    };
    structural::validate::validate(obj, schema)
        .into_iter()
        .map(|e| Cause {
            reason: e.reason,
            message: e.message,
            field: e.field,
        })
        .collect()
}

/// The reasons of schema errors after which kube-apiserver does not evaluate CEL rules.
const BLOCKING: [&str; 5] = [
    "FieldValueNotSupported",
    "FieldValueRequired",
    "FieldValueTooLong",
    "FieldValueTooMany",
    "FieldValueTypeInvalid",
];

/// The CEL rules' errors for a custom object (`old`: the stored object of an update). After
/// an error of type, enum, required, length or count (`earlier`), rules are not evaluated and
/// kube's `<nil>: Invalid value: "null": some validation rules were not checked ...` stands
/// in for them.
pub fn rule_causes<'a>(
    info: &ResourceInfo,
    obj: &Value,
    old: Option<&Value>,
    mut earlier: impl Iterator<Item = &'a Cause>,
) -> Vec<Cause> {
    let Some(custom) = info.custom.as_ref().filter(|c| !c.rules.is_empty()) else {
        return Vec::new();
    };
    if earlier.any(|c| BLOCKING.contains(&c.reason.as_str())) {
        return vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: \"null\": some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
            field: "<nil>".into(),
        }];
    }
    custom
        .rule_errors(obj, old)
        .into_iter()
        .map(|e| Cause {
            reason: e.reason,
            message: e.message,
            field: e.field,
        })
        .collect()
}

/// The scale paths of a custom resource version with a `scale` subresource.
pub fn scale_paths(info: &ResourceInfo) -> Option<&ScalePaths> {
    info.custom.as_ref().and_then(|c| c.scale.as_ref())
}

/// The autoscaling/v1 Scale of a custom object, read at the CRD's paths (a missing replica
/// count reads as 0, a missing selector as "").
pub fn to_scale(paths: &ScalePaths, obj: &Value) -> Value {
    let number = |path: &str| {
        structural::get_path(obj, path)
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    let selector = paths
        .label_selector
        .as_deref()
        .and_then(|path| structural::get_path(obj, path))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj.get("metadata").and_then(|m| m.get(field)) {
            metadata[field] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": number(&paths.spec_replicas)},
        "status": {"replicas": number(&paths.status_replicas), "selector": selector},
    })
}

/// A 422 for a custom object the schema refuses (`Widget.example.com "w" is invalid: ...`).
pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> ApiError {
    crate::admission::qualified_invalid(info, name, causes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use skiff_apimachinery::structural::CustomVersion;

    fn widgets() -> ResourceInfo {
        let version = json!({"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object", "properties": {"count": {"type": "integer", "default": 1}}},
            "status": {"type": "object", "properties": {"count": {"type": "integer"}, "selector": {"type": "string"}}},
        }}}, "subresources": {"scale": {"specReplicasPath": ".spec.count", "statusReplicasPath": ".status.count", "labelSelectorPath": ".status.selector"}}});
        let mut info = skiff_apimachinery::Registry::builtin()
            .find("apps", "v1", "deployments")
            .cloned()
            .unwrap();
        info.group = "example.com".into();
        info.kind = "Widget".into();
        info.plural = "widgets".into();
        info.custom = Some(Arc::new(CustomVersion::from_crd_version(&version)));
        info
    }

    #[test]
    fn writes_are_pruned_defaulted_and_validated() {
        let info = widgets();
        let mut obj = json!({"metadata": {"name": "w"}, "spec": {"colour": "red"}});
        prune_and_default(&info, &mut obj);
        assert_eq!(obj["spec"], json!({"count": 1}));
        assert!(schema_causes(&info, &obj).is_empty());
        obj["spec"]["count"] = json!("two");
        let causes = schema_causes(&info, &obj);
        assert_eq!(causes[0].field, "spec.count");
        let err = invalid(&info, "w", causes);
        assert!(
            err.message
                .starts_with("Widget.example.com \"w\" is invalid: spec.count"),
            "{}",
            err.message
        );
    }

    #[test]
    fn the_scale_reads_the_crds_paths() {
        let info = widgets();
        let obj = json!({"metadata": {"name": "w", "namespace": "a"}, "spec": {"count": 3}, "status": {"count": 2, "selector": "app=w"}});
        let scale = to_scale(scale_paths(&info).unwrap(), &obj);
        assert_eq!(scale["spec"]["replicas"], 3);
        assert_eq!(scale["status"], json!({"replicas": 2, "selector": "app=w"}));
        let empty = to_scale(
            scale_paths(&info).unwrap(),
            &json!({"metadata": {"name": "w"}}),
        );
        assert_eq!(empty["spec"]["replicas"], 0);
    }
}
