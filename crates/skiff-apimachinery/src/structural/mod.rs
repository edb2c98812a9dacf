//! Custom resources served the way kube-apiserver serves them once their CRD is established:
//! each version's `schema.openAPIV3Schema` (a "structural" schema) validates, prunes and
//! defaults the objects written, and the `scale` subresource reads and writes the replica
//! count through the CRD's JSON paths.
//!
//! - [`validate`]: an object against the schema, with kube-apiserver's field paths and
//!   messages (`spec.replicas: Invalid value: "string": spec.replicas in body must be of type
//!   integer: "string"`);
//! - [`prune`]: fields the schema does not know dropped (except under
//!   `x-kubernetes-preserve-unknown-fields`), or listed for `fieldValidation=Strict`;
//! - [`default`]: `default:` values filled in, on write and on read from storage;
//! - [`check`]: what a CRD's schema must be to be accepted (structural, with `type`s, no
//!   constraints on `metadata` beyond `name`/`generateName`);
//! - [`rules`]: the CEL `x-kubernetes-validations`, compiled once per version.
//!
//! Schemas stay `serde_json::Value`s, as the CRD carries them.

pub mod check;
pub mod default;
pub mod prune;
pub mod rules;
pub mod validate;

use std::sync::Arc;

use serde_json::Value;

/// What a served version of a CRD says about its objects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomVersion {
    /// The version's `schema.openAPIV3Schema`, if it has one.
    pub schema: Option<Value>,
    /// The version's `subresources.scale`, if it has one.
    pub scale: Option<ScalePaths>,
    /// The schema's CEL rules, compiled once (kept even if some failed to compile).
    pub rules: Arc<rules::Rules>,
}

/// The JSON paths of a CRD's `subresources.scale` (`.spec.replicas` ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    /// `specReplicasPath`: where the desired replica count is.
    pub spec_replicas: String,
    /// `statusReplicasPath`: where the observed replica count is.
    pub status_replicas: String,
    /// `labelSelectorPath`: where the string form of the label selector is, if anywhere.
    pub label_selector: Option<String>,
}

impl CustomVersion {
    /// Reads one entry of a CRD's `spec.versions`.
    pub fn from_crd_version(version: &Value) -> CustomVersion {
        let schema = version.pointer("/schema/openAPIV3Schema").cloned();
        let scale = version.pointer("/subresources/scale").map(|scale| {
            let text = |key: &str| {
                scale
                    .get(key)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
            };
            ScalePaths {
                spec_replicas: text("specReplicasPath").unwrap_or_else(|| ".spec.replicas".into()),
                status_replicas: text("statusReplicasPath")
                    .unwrap_or_else(|| ".status.replicas".into()),
                label_selector: text("labelSelectorPath"),
            }
        });
        let rules = schema
            .as_ref()
            .map(|s| rules::Rules::compile(s, "openAPIV3Schema"))
            .unwrap_or_default();
        CustomVersion {
            schema,
            scale,
            rules: Arc::new(rules),
        }
    }

    /// Prunes unknown fields and fills in defaults, as kube-apiserver does to a custom object
    /// it decodes from a request. Returns the paths of the pruned fields.
    pub fn prune_and_default(&self, obj: &mut Value) -> Vec<String> {
        let Some(schema) = &self.schema else {
            return Vec::new();
        };
        let pruned = prune::prune(obj, schema);
        default::apply(obj, schema);
        pruned
    }

    /// The errors of the CEL rules for an object being written (`old`: the stored object of
    /// an update, for transition rules).
    pub fn rule_errors(
        &self,
        obj: &Value,
        old: Option<&Value>,
    ) -> Vec<crate::validation::FieldError> {
        match &self.schema {
            Some(schema) => rules::validate(&self.rules, schema, obj, old),
            None => Vec::new(),
        }
    }
}

/// The segments of a scale JSON path (`.spec.replicas` -> `["spec", "replicas"]`).
pub fn path_segments(path: &str) -> Vec<&str> {
    path.trim_start_matches('.')
        .split('.')
        .filter(|s| !s.is_empty())
        .collect()
}

/// The value at a scale JSON path.
pub fn get_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path_segments(path)
        .into_iter()
        .try_fold(obj, |value, key| value.get(key))
}

/// Sets the value at a scale JSON path, creating the objects on the way.
pub fn set_path(obj: &mut Value, path: &str, value: Value) {
    let segments = path_segments(path);
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    let mut at = obj;
    for key in parents {
        if !at.get(*key).is_some_and(Value::is_object) {
            at[*key] = Value::Object(serde_json::Map::new());
        }
        at = &mut at[*key];
    }
    if at.is_object() {
        at[*last] = value;
    }
}

/// Whether the schema sets an `x-kubernetes-*` flag to true.
pub(crate) fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name) == Some(&Value::Bool(true))
}

/// The path of a child field: `spec` + `replicas` -> `spec.replicas`.
pub(crate) fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scale_paths_read_and_write_nested_fields() {
        let version = json!({"name": "v1", "subresources": {"scale": {
            "specReplicasPath": ".spec.count", "statusReplicasPath": ".status.count",
            "labelSelectorPath": ".status.selector"}}});
        let custom = CustomVersion::from_crd_version(&version);
        let scale = custom.scale.unwrap();
        assert_eq!(scale.spec_replicas, ".spec.count");
        let mut obj = json!({"metadata": {"name": "a"}});
        set_path(&mut obj, &scale.spec_replicas, json!(3));
        assert_eq!(obj["spec"]["count"], 3);
        assert_eq!(get_path(&obj, ".spec.count"), Some(&json!(3)));
        assert_eq!(get_path(&obj, ".status.count"), None);
    }
}
