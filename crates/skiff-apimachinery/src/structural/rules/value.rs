//! A JSON value as the CEL value kube-apiserver binds to `self` and `oldSelf`: objects as
//! maps keyed by field name, arrays as lists, integers as `int`, numbers as `double` where the
//! schema says `type: number` (so `self.ratio > 0.5` works on `1`), strings, booleans, `null`.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map};
use serde_json::Value;

/// The CEL value of `value`, typed by its `schema` node.
pub fn to_cel(value: &Value, schema: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => {
            let number = schema.get("type").and_then(Value::as_str) == Some("number");
            match (n.as_i64(), n.as_u64()) {
                (Some(i), _) if !number => cel::Value::Int(i),
                (None, Some(u)) if !number => cel::Value::UInt(u),
                _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            }
        }
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => {
            let item_schema = schema.get("items").unwrap_or(&Value::Null);
            cel::Value::List(Arc::new(
                items.iter().map(|v| to_cel(v, item_schema)).collect(),
            ))
        }
        Value::Object(fields) => {
            let mut map = HashMap::with_capacity(fields.len());
            for (key, v) in fields {
                let field_schema = schema
                    .get("properties")
                    .and_then(|p| p.get(key))
                    .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()))
                    .unwrap_or(&Value::Null);
                map.insert(Key::String(Arc::new(key.clone())), to_cel(v, field_schema));
            }
            cel::Value::Map(Map { map: Arc::new(map) })
        }
    }
}

/// The value bound to `self` at the schema's root: kube-apiserver shows rules only the
/// `name` and `generateName` of `metadata`.
pub fn root_value(obj: &Value) -> Value {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| k == "name" || k == "generateName");
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_follow_the_schema_type() {
        let schema = json!({"type": "object", "properties": {"ratio": {"type": "number"}, "count": {"type": "integer"}}});
        let value = to_cel(&json!({"ratio": 1, "count": 2}), &schema);
        let cel::Value::Map(map) = value else {
            panic!("not a map: {value:?}")
        };
        assert_eq!(
            map.map.get(&Key::String(Arc::new("ratio".into()))),
            Some(&cel::Value::Float(1.0))
        );
        assert_eq!(
            map.map.get(&Key::String(Arc::new("count".into()))),
            Some(&cel::Value::Int(2))
        );
    }

    #[test]
    fn the_root_shows_only_name_and_generate_name() {
        let obj = json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {}});
        assert_eq!(
            root_value(&obj),
            json!({"metadata": {"name": "a"}, "spec": {}})
        );
    }
}
