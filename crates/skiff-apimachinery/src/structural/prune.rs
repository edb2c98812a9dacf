//! Pruning: kube-apiserver drops the fields of a custom object that its structural schema
//! does not specify, unless they sit under `x-kubernetes-preserve-unknown-fields: true` (or
//! in a map whose `additionalProperties` is `true`). `apiVersion`, `kind` and `metadata` stay
//! at the root and in `x-kubernetes-embedded-resource` objects (their `metadata` keeps only
//! the fields of `ObjectMeta`). The paths of the dropped
//! fields (`spec.colour`, `spec.items[0].x`) are what `fieldValidation=Strict` refuses and
//! `Warn` warns about (`unknown field "spec.colour"`).

use serde_json::Value;

use super::{child, flag};

/// The fields of `ObjectMeta`: what `metadata` keeps.
const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Drops the unknown fields of `obj`; returns their paths.
pub fn prune(obj: &mut Value, schema: &Value) -> Vec<String> {
    let mut pruned = Vec::new();
    walk(obj, schema, "", true, &mut pruned);
    pruned
}

/// The paths of the fields [`prune`] would drop, leaving `obj` as it is.
pub fn unknown_fields(obj: &Value, schema: &Value) -> Vec<String> {
    let mut copy = obj.clone();
    prune(&mut copy, schema)
}

fn walk(
    value: &mut Value,
    schema: &Value,
    path: &str,
    keep_type_meta: bool,
    out: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
            let keep_meta = keep_type_meta || flag(schema, "x-kubernetes-embedded-resource");
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let mut dropped = Vec::new();
            for (key, child_value) in map.iter_mut() {
                let field = child(path, key);
                if keep_meta && key == "metadata" {
                    prune_object_meta(child_value, &field, out);
                    continue;
                }
                if keep_meta && matches!(key.as_str(), "apiVersion" | "kind") {
                    continue;
                }
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    walk(child_value, child_schema, &field, false, out);
                } else if let Some(values) = additional.filter(|a| a.is_object()) {
                    walk(child_value, values, &field, false, out);
                } else if preserve || additional == Some(&Value::Bool(true)) {
                    // Kept as sent, with everything under it.
                } else {
                    dropped.push(key.clone());
                    out.push(field);
                }
            }
            for key in dropped {
                map.remove(&key);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(item, item_schema, &format!("{path}[{i}]"), false, out);
                }
            }
        }
        _ => {}
    }
}

/// Drops what `ObjectMeta` does not have from a `metadata` object.
fn prune_object_meta(metadata: &mut Value, path: &str, out: &mut Vec<String>) {
    if let Value::Object(map) = metadata {
        map.retain(|key, _| {
            let known = OBJECT_META_FIELDS.contains(&key.as_str());
            if !known {
                out.push(child(path, key));
            }
            known
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "size": {"type": "integer"},
                "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"known": {"type": "object", "properties": {}}}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": true, "properties": {"spec": {"type": "object"}}},
            }},
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        }})
    }

    #[test]
    fn unknown_fields_are_dropped_and_listed() {
        let mut obj = json!({
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "a", "labels": {"x": "y"}, "colour": 1},
            "extra": 1,
            "spec": {"size": 1, "colour": "red",
                     "items": [{"name": "a", "x": 1}],
                     "labels": {"any": "thing"},
                     "free": {"whatever": {"deep": true}, "known": {"gone": 1}},
                     "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "x": 1}, "spec": {}, "bogus": 1}},
        });
        let pruned = prune(&mut obj, &schema());
        assert_eq!(
            pruned,
            vec![
                "extra",
                "metadata.colour",
                "spec.colour",
                "spec.free.known.gone",
                "spec.items[0].x",
                "spec.template.bogus",
                "spec.template.metadata.x",
            ]
        );
        assert_eq!(obj["metadata"], json!({"name": "a", "labels": {"x": "y"}}));
        assert!(obj.get("extra").is_none());
        assert!(obj["spec"].get("colour").is_none());
        assert_eq!(obj["spec"]["items"][0], json!({"name": "a"}));
        assert_eq!(obj["spec"]["labels"]["any"], "thing");
        assert_eq!(obj["spec"]["free"]["whatever"]["deep"], true);
        assert_eq!(obj["spec"]["template"]["kind"], "Pod");
        assert_eq!(obj["spec"]["template"]["metadata"], json!({"name": "p"}));
    }

    #[test]
    fn listing_leaves_the_object_alone() {
        let obj = json!({"spec": {"size": 1, "colour": "red"}});
        assert_eq!(unknown_fields(&obj, &schema()), vec!["spec.colour"]);
        assert_eq!(obj["spec"]["colour"], "red");
    }

    #[test]
    fn a_preserving_root_keeps_everything() {
        let mut obj = json!({"spec": {"anything": 1}, "other": true});
        let pruned = prune(
            &mut obj,
            &json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        assert!(pruned.is_empty());
        assert_eq!(obj["other"], true);
    }
}
