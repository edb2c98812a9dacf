//! Defaulting: kube-apiserver fills in the `default:` of each specified field that is
//! missing, top-down (a defaulted object gets the defaults of its own fields too), on every
//! write and whenever it reads an object from storage. A `null` in a field that is not
//! `nullable` is dropped first, and then defaulted if the field has a default.

use serde_json::Value;

use super::flag;

/// Fills in the defaults `schema` gives for the fields `obj` lacks.
pub fn apply(obj: &mut Value, schema: &Value) {
    match obj {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, field_schema) in properties {
                    let default = field_schema.get("default");
                    match map.get(key) {
                        None => {
                            if let Some(default) = default {
                                map.insert(key.clone(), default.clone());
                            }
                        }
                        Some(Value::Null) if !flag(field_schema, "nullable") => match default {
                            Some(default) => {
                                map.insert(key.clone(), default.clone());
                            }
                            None => {
                                map.remove(key);
                            }
                        },
                        Some(_) => {}
                    }
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (key, value) in map.iter_mut() {
                if let Some(field_schema) = properties.and_then(|p| p.get(key)) {
                    apply(value, field_schema);
                } else if let Some(values) = additional {
                    apply(value, values);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply(item, item_schema);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "default": {}, "properties": {
            "size": {"type": "integer", "default": 1},
            "mode": {"type": "string", "default": "fast"},
            "note": {"type": "string", "nullable": true, "default": "n"},
            "gone": {"type": "string"},
            "ports": {"type": "array", "items": {"type": "object", "properties": {"protocol": {"type": "string", "default": "TCP"}}}},
            "limits": {"type": "object", "additionalProperties": {"type": "object", "properties": {"unit": {"type": "string", "default": "Mi"}}}},
        }}}})
    }

    #[test]
    fn missing_fields_get_their_defaults_top_down() {
        let mut obj = json!({"metadata": {"name": "a"}});
        apply(&mut obj, &schema());
        assert_eq!(obj["spec"], json!({"size": 1, "mode": "fast", "note": "n"}));
    }

    #[test]
    fn set_fields_stay_and_nested_lists_and_maps_are_defaulted() {
        let mut obj =
            json!({"spec": {"size": 5, "ports": [{}, {"protocol": "UDP"}], "limits": {"cpu": {}}}});
        apply(&mut obj, &schema());
        assert_eq!(obj["spec"]["size"], 5);
        assert_eq!(
            obj["spec"]["ports"],
            json!([{"protocol": "TCP"}, {"protocol": "UDP"}])
        );
        assert_eq!(obj["spec"]["limits"]["cpu"]["unit"], "Mi");
    }

    #[test]
    fn nulls_are_defaulted_or_dropped_unless_nullable() {
        let mut obj = json!({"spec": {"size": null, "gone": null, "note": null}});
        apply(&mut obj, &schema());
        assert_eq!(obj["spec"]["size"], 1);
        assert!(obj["spec"].get("gone").is_none());
        assert_eq!(obj["spec"]["note"], Value::Null);
    }
}
