//! Validation of a custom object against its version's `openAPIV3Schema`, with the field
//! paths and messages kube-apiserver gives (its schema validator's wording, turned into field
//! errors the way the apiextensions server does):
//!
//! - a wrong type: `spec.replicas: Invalid value: "string": spec.replicas in body must be of
//!   type integer: "string"` (the value shown is the type found);
//! - a missing required field: `spec.size: Required value`;
//! - a value outside `enum`: `Unsupported value: "x": supported values: "a", "b"`;
//! - `maxLength`: `Too long: may not be more than 5 bytes`; `maxItems`/`maxProperties`:
//!   `Too many: 3: must have at most 2 items`;
//! - the other constraints: `Invalid value: VALUE: PATH in body should be ...`.
//!
//! `format` checks `date-time` (RFC 3339) and `date`; `int32`/`int64` accept every integer,
//! as kube-apiserver's validator does.

use regex::Regex;
use serde_json::{Map, Value};

use super::{child, flag};
use crate::validation::FieldError;

/// Validates `obj` against `schema`; empty when valid.
pub fn validate(obj: &Value, schema: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check(obj, schema, "", &mut errors);
    errors
}

/// The JSON type of a value as the validator names it.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a value is of a schema type (a float without fraction counts as an integer, an
/// integer as a number).
fn is_type(value: &Value, wanted: &str) -> bool {
    match (wanted, value) {
        ("integer", Value::Number(n)) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        ("number", Value::Number(_)) => true,
        ("string", Value::String(_)) => true,
        ("boolean", Value::Bool(_)) => true,
        ("array", Value::Array(_)) => true,
        ("object", Value::Object(_)) => true,
        _ => false,
    }
}

fn error(field: &str, reason: &str, message: String) -> FieldError {
    FieldError {
        field: field.to_string(),
        reason: reason.to_string(),
        message,
    }
}

/// `Invalid value: VALUE: PATH in body DETAIL`.
fn invalid(path: &str, value: &Value, detail: &str) -> FieldError {
    FieldError::invalid(path, value, &format!("{path} in body {detail}"))
}

/// A wrong type: `Invalid value: "FOUND": PATH in body must be of type WANTED: "FOUND"`.
fn type_invalid(path: &str, wanted: &str, found: &str) -> FieldError {
    error(
        path,
        "FieldValueTypeInvalid",
        format!("Invalid value: {found:?}: {path} in body must be of type {wanted}: {found:?}"),
    )
}

fn too_many(path: &str, actual: usize, max: u64) -> FieldError {
    let items = if max == 1 { "item" } else { "items" };
    error(
        path,
        "FieldValueTooMany",
        format!("Too many: {actual}: must have at most {max} {items}"),
    )
}

fn too_long(path: &str, max: u64) -> FieldError {
    let bytes = if max == 1 { "byte" } else { "bytes" };
    error(
        path,
        "FieldValueTooLong",
        format!("Too long: may not be more than {max} {bytes}"),
    )
}

/// A composite keyword failed (`anyOf`, `oneOf`, `not`): kube-apiserver's message quotes the
/// path and shows an empty value.
fn composite(path: &str, detail: &str) -> FieldError {
    FieldError::invalid(path, &Value::from(""), &format!("{path:?} {detail}"))
}

fn number(schema: &Value, key: &str) -> Option<f64> {
    schema.get(key).and_then(Value::as_f64)
}

fn count(schema: &Value, key: &str) -> Option<u64> {
    schema.get(key).and_then(Value::as_u64)
}

/// Shows a schema bound as Go's `%v` shows a float64 (`0`, `1.5`).
fn bound(value: f64) -> String {
    format!("{value}")
}

fn check(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if !schema.is_object() {
        return;
    }
    let int_or_string = flag(schema, "x-kubernetes-int-or-string");
    let wanted = schema.get("type").and_then(Value::as_str).unwrap_or("");
    if value.is_null() {
        if !flag(schema, "nullable") {
            if int_or_string {
                errors.push(type_invalid(path, "integer,string", "null"));
            } else if !wanted.is_empty() {
                errors.push(type_invalid(path, wanted, "null"));
            }
        }
        return;
    }
    if int_or_string {
        if !(is_type(value, "integer") || value.is_string()) {
            errors.push(type_invalid(path, "integer,string", type_of(value)));
            return;
        }
    } else if !wanted.is_empty() && !is_type(value, wanted) {
        errors.push(type_invalid(path, wanted, type_of(value)));
        return;
    }
    check_enum(value, schema, path, errors);
    match value {
        Value::String(text) => check_string(text, value, schema, path, errors),
        Value::Number(_) => check_number(value, schema, path, errors),
        Value::Array(items) => check_array(items, schema, path, errors),
        Value::Object(map) => check_object(map, schema, path, errors),
        _ => {}
    }
    check_composition(value, schema, path, errors);
}

fn check_enum(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(allowed) = schema.get("enum").and_then(Value::as_array) else {
        return;
    };
    if allowed.iter().any(|a| a == value) {
        return;
    }
    let shown: Vec<String> = allowed
        .iter()
        .map(|a| match a {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let shown: Vec<&str> = shown.iter().map(String::as_str).collect();
    errors.push(FieldError::not_supported(path, value, &shown));
}

fn check_string(
    text: &str,
    value: &Value,
    schema: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    let length = text.chars().count() as u64;
    if let Some(max) = count(schema, "maxLength")
        && length > max
    {
        errors.push(too_long(path, max));
    }
    if let Some(min) = count(schema, "minLength")
        && length < min
    {
        errors.push(invalid(
            path,
            value,
            &format!("should be at least {min} chars long"),
        ));
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str)
        && let Ok(re) = Regex::new(pattern)
        && !re.is_match(text)
    {
        errors.push(invalid(path, value, &format!("should match '{pattern}'")));
    }
    let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
    let well_formed = match format {
        "date-time" => crate::time::parse_rfc3339(text).is_some(),
        "date" => is_date(text),
        _ => true,
    };
    if !well_formed {
        errors.push(error(
            path,
            "FieldValueTypeInvalid",
            format!(
                "Invalid value: {value}: {path} in body must be of type {format}: {value}",
                value = crate::validation::show(value)
            ),
        ));
    }
}

/// `YYYY-MM-DD` (RFC 3339 full-date).
fn is_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else {
        return false;
    };
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    digits(year, 4)
        && digits(month, 2)
        && digits(day, 2)
        && month.parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
        && day.parse::<u32>().is_ok_and(|d| (1..=31).contains(&d))
}

fn check_number(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(n) = value.as_f64() else {
        return;
    };
    if let Some(max) = number(schema, "maximum") {
        let exclusive = flag(schema, "exclusiveMaximum");
        if (exclusive && n >= max) || n > max {
            let detail = if exclusive {
                format!("should be less than {}", bound(max))
            } else {
                format!("should be less than or equal to {}", bound(max))
            };
            errors.push(invalid(path, value, &detail));
        }
    }
    if let Some(min) = number(schema, "minimum") {
        let exclusive = flag(schema, "exclusiveMinimum");
        if (exclusive && n <= min) || n < min {
            let detail = if exclusive {
                format!("should be greater than {}", bound(min))
            } else {
                format!("should be greater than or equal to {}", bound(min))
            };
            errors.push(invalid(path, value, &detail));
        }
    }
    if let Some(factor) = number(schema, "multipleOf")
        && factor > 0.0
        && (n / factor).fract() != 0.0
    {
        errors.push(invalid(
            path,
            value,
            &format!("should be a multiple of {}", bound(factor)),
        ));
    }
}

fn check_array(items: &[Value], schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item, item_schema, &format!("{path}[{i}]"), errors);
        }
    }
    let size = items.len();
    if let Some(min) = count(schema, "minItems")
        && (size as u64) < min
    {
        errors.push(invalid(
            path,
            &Value::from(size),
            &format!("should have at least {min} items"),
        ));
    }
    if let Some(max) = count(schema, "maxItems")
        && size as u64 > max
    {
        errors.push(too_many(path, size, max));
    }
    if flag(schema, "uniqueItems")
        && items
            .iter()
            .enumerate()
            .any(|(i, a)| items[..i].contains(a))
    {
        errors.push(invalid(
            path,
            &Value::from(""),
            "shouldn't contain duplicates",
        ));
    }
}

fn check_object(
    map: &Map<String, Value>,
    schema: &Value,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                errors.push(FieldError::required(&child(path, key), ""));
            }
        }
    }
    let size = map.len();
    if let Some(min) = count(schema, "minProperties")
        && (size as u64) < min
    {
        errors.push(invalid(
            path,
            &Value::from(min),
            &format!("should have at least {min} properties"),
        ));
    }
    if let Some(max) = count(schema, "maxProperties")
        && size as u64 > max
    {
        errors.push(too_many(path, size, max));
    }
    if flag(schema, "x-kubernetes-embedded-resource") {
        for key in ["apiVersion", "kind"] {
            if map
                .get(key)
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                errors.push(FieldError::required(&child(path, key), "must not be empty"));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (key, child_value) in map {
        let field = child(path, key);
        if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
            check(child_value, child_schema, &field, errors);
        } else if let Some(values) = additional.filter(|a| a.is_object()) {
            check(child_value, values, &field, errors);
        } else if additional == Some(&Value::Bool(false)) {
            let shown = if path.is_empty() { "" } else { path };
            errors.push(FieldError::invalid(
                shown,
                &Value::from(key.as_str()),
                &format!("{field} in body is a forbidden property"),
            ));
        }
    }
}

/// Whether a value passes a sub-schema (`allOf`/`anyOf`/`oneOf`/`not` members).
fn passes(value: &Value, schema: &Value, path: &str) -> bool {
    let mut errors = Vec::new();
    check(value, schema, path, &mut errors);
    errors.is_empty()
}

fn check_composition(value: &Value, schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let list = |key: &str| {
        schema
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for member in list("allOf") {
        check(value, &member, path, errors);
    }
    let any_of = list("anyOf");
    if !any_of.is_empty() && !any_of.iter().any(|m| passes(value, m, path)) {
        errors.push(composite(path, "must validate at least one schema (anyOf)"));
    }
    let one_of = list("oneOf");
    if !one_of.is_empty() {
        let valid = one_of.iter().filter(|m| passes(value, m, path)).count();
        if valid != 1 {
            let found = if valid == 0 {
                "Found none valid".to_string()
            } else {
                format!("Found {valid} valid alternatives")
            };
            errors.push(composite(
                path,
                &format!("must validate one and only one schema (oneOf). {found}"),
            ));
        }
    }
    if let Some(not) = schema.get("not")
        && passes(value, not, path)
    {
        errors.push(composite(path, "must not validate the schema (not)"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(obj: Value, schema: Value) -> Vec<String> {
        validate(&obj, &schema)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn spec(properties: Value) -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object", "properties": properties}}})
    }

    #[test]
    fn a_wrong_type_names_the_type_found() {
        let schema = spec(json!({"replicas": {"type": "integer"}}));
        assert_eq!(
            messages(json!({"spec": {"replicas": "many"}}), schema.clone()),
            vec![
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
            ]
        );
        assert!(messages(json!({"spec": {"replicas": 3}}), schema.clone()).is_empty());
        assert!(messages(json!({"spec": {"replicas": 3.0}}), schema.clone()).is_empty());
        let err = validate(&json!({"spec": {"replicas": 1.5}}), &schema);
        assert_eq!(err[0].reason, "FieldValueTypeInvalid");
        assert!(err[0].message.contains("integer: \"number\""), "{err:?}");
    }

    #[test]
    fn every_type_is_checked() {
        for (wanted, good, bad, found) in [
            ("object", json!({}), json!([]), "array"),
            ("array", json!([]), json!({}), "object"),
            ("string", json!("x"), json!(1), "integer"),
            ("number", json!(1.5), json!("1"), "string"),
            ("boolean", json!(true), json!("true"), "string"),
        ] {
            let schema = spec(json!({"f": {"type": wanted}}));
            assert!(messages(json!({"spec": {"f": good}}), schema.clone()).is_empty());
            let err = messages(json!({"spec": {"f": bad}}), schema);
            assert_eq!(
                err,
                vec![format!(
                    "spec.f: Invalid value: \"{found}\": spec.f in body must be of type {wanted}: \"{found}\""
                )]
            );
        }
    }

    #[test]
    fn required_fields_are_required() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "required": ["size"], "properties": {"size": {"type": "integer"}}}}});
        assert_eq!(
            messages(json!({"spec": {}}), schema),
            vec!["spec.size: Required value"]
        );
    }

    #[test]
    fn enums_list_the_supported_values() {
        let schema = spec(
            json!({"mode": {"type": "string", "enum": ["a", "b"]}, "n": {"type": "integer", "enum": [1, 2]}}),
        );
        assert_eq!(
            messages(json!({"spec": {"mode": "x", "n": 3}}), schema),
            vec![
                "spec.mode: Unsupported value: \"x\": supported values: \"a\", \"b\"",
                "spec.n: Unsupported value: 3: supported values: \"1\", \"2\"",
            ]
        );
    }

    #[test]
    fn numbers_respect_their_bounds() {
        let schema = spec(json!({
            "a": {"type": "integer", "minimum": 0, "maximum": 10},
            "b": {"type": "number", "minimum": 0, "exclusiveMinimum": true, "maximum": 1.5, "exclusiveMaximum": true},
            "c": {"type": "integer", "multipleOf": 5},
        }));
        assert!(messages(json!({"spec": {"a": 10, "b": 1, "c": 15}}), schema.clone()).is_empty());
        assert_eq!(
            messages(json!({"spec": {"a": -1, "b": 0, "c": 7}}), schema.clone()),
            vec![
                "spec.a: Invalid value: -1: spec.a in body should be greater than or equal to 0",
                "spec.b: Invalid value: 0: spec.b in body should be greater than 0",
                "spec.c: Invalid value: 7: spec.c in body should be a multiple of 5",
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"a": 11, "b": 1.5}}), schema),
            vec![
                "spec.a: Invalid value: 11: spec.a in body should be less than or equal to 10",
                "spec.b: Invalid value: 1.5: spec.b in body should be less than 1.5",
            ]
        );
    }

    #[test]
    fn strings_respect_length_pattern_and_format() {
        let schema = spec(json!({
            "name": {"type": "string", "minLength": 2, "maxLength": 4, "pattern": "^[a-z]+$"},
            "when": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "big": {"type": "integer", "format": "int32"},
        }));
        assert!(messages(
            json!({"spec": {"name": "abc", "when": "2026-11-27T10:00:00Z", "day": "2026-11-27", "big": 5_000_000_000_i64}}),
            schema.clone()
        )
        .is_empty());
        assert_eq!(
            messages(json!({"spec": {"name": "A"}}), schema.clone()),
            vec![
                "spec.name: Invalid value: \"A\": spec.name in body should be at least 2 chars long",
                "spec.name: Invalid value: \"A\": spec.name in body should match '^[a-z]+$'",
            ]
        );
        assert_eq!(
            messages(
                json!({"spec": {"name": "abcde", "when": "noon", "day": "2026-13-01"}}),
                schema
            ),
            vec![
                "spec.day: Invalid value: \"2026-13-01\": spec.day in body must be of type date: \"2026-13-01\"",
                "spec.name: Too long: may not be more than 4 bytes",
                "spec.when: Invalid value: \"noon\": spec.when in body must be of type date-time: \"noon\"",
            ]
        );
    }

    #[test]
    fn arrays_respect_their_item_counts_and_items() {
        let schema = spec(
            json!({"list": {"type": "array", "minItems": 1, "maxItems": 2, "uniqueItems": true, "items": {"type": "string"}}}),
        );
        assert_eq!(
            messages(json!({"spec": {"list": []}}), schema.clone()),
            vec!["spec.list: Invalid value: 0: spec.list in body should have at least 1 items"]
        );
        assert_eq!(
            messages(json!({"spec": {"list": ["a", "b", "c"]}}), schema.clone()),
            vec!["spec.list: Too many: 3: must have at most 2 items"]
        );
        assert_eq!(
            messages(json!({"spec": {"list": ["a", 1]}}), schema.clone()),
            vec![
                "spec.list[1]: Invalid value: \"integer\": spec.list[1] in body must be of type string: \"integer\""
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"list": ["a", "a"]}}), schema),
            vec!["spec.list: Invalid value: \"\": spec.list in body shouldn't contain duplicates"]
        );
    }

    #[test]
    fn objects_respect_property_counts_and_additional_properties() {
        let schema = spec(json!({
            "labels": {"type": "object", "minProperties": 1, "maxProperties": 2, "additionalProperties": {"type": "string"}},
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": false},
        }));
        assert_eq!(
            messages(json!({"spec": {"labels": {}}}), schema.clone()),
            vec![
                "spec.labels: Invalid value: 1: spec.labels in body should have at least 1 properties"
            ]
        );
        assert_eq!(
            messages(
                json!({"spec": {"labels": {"a": "1", "b": "2", "c": 3}}}),
                schema.clone()
            ),
            vec![
                "spec.labels: Too many: 3: must have at most 2 items",
                "spec.labels.c: Invalid value: \"integer\": spec.labels.c in body must be of type string: \"integer\"",
            ]
        );
        assert_eq!(
            messages(json!({"spec": {"closed": {"a": "x", "b": "y"}}}), schema),
            vec![
                "spec.closed: Invalid value: \"b\": spec.closed.b in body is a forbidden property"
            ]
        );
    }

    #[test]
    fn nullable_int_or_string_and_preserved_fields() {
        let schema = spec(json!({
            "maybe": {"type": "string", "nullable": true},
            "never": {"type": "object"},
            "port": {"x-kubernetes-int-or-string": true},
            "free": {"x-kubernetes-preserve-unknown-fields": true},
        }));
        assert!(
            messages(
                json!({"spec": {"maybe": null, "port": "http", "free": {"any": [1, "x"]}}}),
                schema.clone()
            )
            .is_empty()
        );
        assert!(messages(json!({"spec": {"port": 80}}), schema.clone()).is_empty());
        assert_eq!(
            messages(json!({"spec": {"never": null, "port": true}}), schema),
            vec![
                "spec.never: Invalid value: \"null\": spec.never in body must be of type object: \"null\"",
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
            ]
        );
    }

    #[test]
    fn embedded_resources_need_api_version_and_kind() {
        let schema = spec(
            json!({"template": {"type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}}),
        );
        assert_eq!(
            messages(
                json!({"spec": {"template": {"kind": "Pod"}}}),
                schema.clone()
            ),
            vec!["spec.template.apiVersion: Required value: must not be empty"]
        );
        assert!(
            messages(
                json!({"spec": {"template": {"apiVersion": "v1", "kind": "Pod"}}}),
                schema
            )
            .is_empty()
        );
    }

    #[test]
    fn compositions_all_any_one_and_not() {
        let schema = spec(json!({
            "all": {"type": "integer", "allOf": [{"minimum": 1}, {"maximum": 5}]},
            "any": {"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}]},
            "one": {"type": "integer", "oneOf": [{"minimum": 10}, {"maximum": 20}]},
            "not": {"type": "string", "not": {"enum": ["forbidden"]}},
        }));
        assert!(
            messages(
                json!({"spec": {"all": 3, "any": "bob", "one": 5, "not": "fine"}}),
                schema.clone()
            )
            .is_empty()
        );
        assert_eq!(
            messages(
                json!({"spec": {"all": 9, "any": "carl", "one": 15, "not": "forbidden"}}),
                schema
            ),
            vec![
                "spec.all: Invalid value: 9: spec.all in body should be less than or equal to 5",
                "spec.any: Invalid value: \"\": \"spec.any\" must validate at least one schema (anyOf)",
                "spec.not: Invalid value: \"\": \"spec.not\" must not validate the schema (not)",
                "spec.one: Invalid value: \"\": \"spec.one\" must validate one and only one schema (oneOf). Found 2 valid alternatives",
            ]
        );
    }
}
