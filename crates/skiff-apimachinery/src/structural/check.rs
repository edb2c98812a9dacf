//! What a CRD version's `schema.openAPIV3Schema` must be to be accepted (kube-apiserver
//! requires structural schemas from `apiextensions.k8s.io/v1`), modestly: a schema at all,
//! `type: object` at the root, a `type` on every specified field, array item and map value
//! (unless `x-kubernetes-int-or-string` or `x-kubernetes-preserve-unknown-fields` stands in
//! for it), nothing about `metadata` beyond `name` and `generateName`, and no
//! `uniqueItems: true`. Value validations inside `allOf`/`anyOf`/`oneOf`/`not` are not
//! checked.

use serde_json::Value;

use super::flag;
use crate::validation::FieldError;

/// The errors of one version's schema; `path` is where the version's `schema` field is
/// (`spec.versions[0].schema`).
pub fn check_version_schema(schema: Option<&Value>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let root_path = format!("{path}.openAPIV3Schema");
    let Some(root) = schema.and_then(|s| s.get("openAPIV3Schema")) else {
        errors.push(FieldError::required(&root_path, "schemas are required"));
        return errors;
    };
    match root.get("type").and_then(Value::as_str) {
        None | Some("") if !flag(root, "x-kubernetes-preserve-unknown-fields") => {
            errors.push(FieldError::required(
                &format!("{root_path}.type"),
                "must not be empty at the root",
            ));
        }
        Some(other) if !other.is_empty() && other != "object" => {
            errors.push(FieldError::invalid(
                &format!("{root_path}.type"),
                &Value::from(other),
                "must be object at the root",
            ));
        }
        _ => {}
    }
    if let Some(metadata) = root.pointer("/properties/metadata") {
        check_metadata(
            metadata,
            &format!("{root_path}.properties[metadata]"),
            &mut errors,
        );
    }
    walk(root, &root_path, true, &mut errors);
    errors
}

/// `metadata` at the root may only say that it is an object and constrain `name` and
/// `generateName`.
fn check_metadata(schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(map) = schema.as_object() else {
        return;
    };
    let type_ok = map
        .get("type")
        .and_then(Value::as_str)
        .is_none_or(|t| t == "object");
    let keys_ok = map
        .keys()
        .all(|k| matches!(k.as_str(), "type" | "properties" | "description"));
    let properties_ok = map
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(|p| p.keys().all(|k| k == "name" || k == "generateName"));
    if !(type_ok && keys_ok && properties_ok) {
        errors.push(FieldError::forbidden(
            path,
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
}

fn has_type(schema: &Value) -> bool {
    schema
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
        || flag(schema, "x-kubernetes-int-or-string")
        || flag(schema, "x-kubernetes-preserve-unknown-fields")
}

fn walk(schema: &Value, path: &str, root: bool, errors: &mut Vec<FieldError>) {
    if flag(schema, "uniqueItems") {
        errors.push(FieldError::forbidden(
            &format!("{path}.uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (key, field) in properties {
            if root && key == "metadata" {
                continue;
            }
            let field_path = format!("{path}.properties[{key}]");
            if !has_type(field) {
                errors.push(FieldError::required(
                    &format!("{field_path}.type"),
                    "must not be empty for specified object fields",
                ));
            }
            walk(field, &field_path, false, errors);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
        let items_path = format!("{path}.items");
        if !has_type(items) {
            errors.push(FieldError::required(
                &format!("{items_path}.type"),
                "must not be empty for specified array items",
            ));
        }
        walk(items, &items_path, false, errors);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|a| a.is_object()) {
        let values_path = format!("{path}.additionalProperties");
        if !has_type(values) {
            errors.push(FieldError::required(
                &format!("{values_path}.type"),
                "must not be empty for specified object fields",
            ));
        }
        walk(values, &values_path, false, errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(schema: Value) -> Vec<String> {
        check_version_schema(
            Some(&json!({"openAPIV3Schema": schema})),
            "spec.versions[0].schema",
        )
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    #[test]
    fn a_structural_schema_passes() {
        assert!(messages(json!({"type": "object", "properties": {
            "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}},
            "spec": {"type": "object", "properties": {
                "port": {"x-kubernetes-int-or-string": true},
                "free": {"x-kubernetes-preserve-unknown-fields": true},
                "list": {"type": "array", "items": {"type": "string"}},
                "mode": {"type": "string", "anyOf": [{"enum": ["a"]}, {"enum": ["b"]}]},
            }},
        }}))
        .is_empty());
    }

    #[test]
    fn missing_types_are_named_by_path() {
        assert_eq!(
            messages(
                json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "size": {"minimum": 1},
                    "list": {"type": "array", "items": {"properties": {}}},
                }}}})
            ),
            vec![
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[list].items.type: Required value: must not be empty for specified array items",
                "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[size].type: Required value: must not be empty for specified object fields",
            ]
        );
        assert_eq!(
            messages(json!({"properties": {}})),
            vec![
                "spec.versions[0].schema.openAPIV3Schema.type: Required value: must not be empty at the root"
            ]
        );
    }

    #[test]
    fn metadata_may_only_constrain_names() {
        assert_eq!(
            messages(
                json!({"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}})
            ),
            vec![
                "spec.versions[0].schema.openAPIV3Schema.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
            ]
        );
    }

    #[test]
    fn a_missing_schema_is_required() {
        let errors = check_version_schema(None, "spec.versions[1].schema");
        assert_eq!(
            errors[0].to_string(),
            "spec.versions[1].schema.openAPIV3Schema: Required value: schemas are required"
        );
    }
}
