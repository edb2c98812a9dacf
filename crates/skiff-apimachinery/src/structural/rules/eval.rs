//! Evaluation of compiled rules against an object, as kube-apiserver's CEL validator does:
//! each rule with `self` bound to its node's value (nodes that are absent or null are
//! skipped); a transition rule (one reading `oldSelf`) only where the update's old object has
//! a value at the same place (object fields and map values by key, `map` lists by their keys,
//! `set` lists by value), and never on create.
//!
//! A failing rule: `PATH: Invalid value: "TYPE": MESSAGE`, where `PATH` is the node's path
//! (or it joined with the rule's `fieldPath`), `TYPE` the node's schema type, and `MESSAGE` the
//! `messageExpression`'s result, else the `message`, else `failed rule: RULE`; a `reason`
//! gives `Forbidden: MESSAGE`, `Required value: MESSAGE` or `Duplicate value: "TYPE"`. A rule
//! whose evaluation fails: `Invalid value: "TYPE": ERROR evaluating rule: MESSAGE-OR-RULE`.

use serde_json::Value;

use super::compile::{Rule, RuleNode, Rules, env};
use super::value::{root_value, to_cel};
use crate::structural::child;
use crate::validation::FieldError;

/// The errors of `obj`'s rules; `old` is the stored object of an update.
pub fn validate(
    rules: &Rules,
    schema: &Value,
    obj: &Value,
    old: Option<&Value>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Some(root) = &rules.root {
        let obj = root_value(obj);
        let old = old.map(root_value);
        walk(root, schema, &obj, old.as_ref(), "", &mut errors);
    }
    errors
}

fn walk(
    node: &RuleNode,
    schema: &Value,
    value: &Value,
    old: Option<&Value>,
    path: &str,
    errors: &mut Vec<FieldError>,
) {
    if value.is_null() {
        return;
    }
    let old = old.filter(|o| !o.is_null());
    if !node.rules.is_empty() {
        let this = to_cel(value, schema);
        let before = old.map(|o| to_cel(o, schema));
        for rule in &node.rules {
            if rule.transition && before.is_none() {
                continue;
            }
            if let Some(error) = check(rule, node, &this, before.as_ref(), path) {
                errors.push(error);
            }
        }
    }
    match value {
        Value::Object(fields) => {
            for (name, child_node) in &node.properties {
                if let Some(v) = fields.get(name) {
                    let child_schema = schema
                        .get("properties")
                        .and_then(|p| p.get(name))
                        .unwrap_or(&Value::Null);
                    let child_old = old.and_then(|o| o.get(name));
                    walk(
                        child_node,
                        child_schema,
                        v,
                        child_old,
                        &child(path, name),
                        errors,
                    );
                }
            }
            if let Some(additional) = &node.additional {
                let child_schema = schema.get("additionalProperties").unwrap_or(&Value::Null);
                for (key, v) in fields {
                    let child_old = old.and_then(|o| o.get(key));
                    let at = format!("{path}[{key}]");
                    walk(additional, child_schema, v, child_old, &at, errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_node) = &node.items {
                let item_schema = schema.get("items").unwrap_or(&Value::Null);
                let old_items = old.and_then(Value::as_array);
                for (i, item) in items.iter().enumerate() {
                    let item_old = old_items.and_then(|list| old_item(node, list, item));
                    let at = format!("{path}[{i}]");
                    walk(item_node, item_schema, item, item_old, &at, errors);
                }
            }
        }
        _ => {}
    }
}

/// The old item an item of a list corresponds to: same keys in a `map` list, an equal item in a
/// `set`; none in an atomic list (kube-apiserver does not correlate them).
fn old_item<'a>(node: &RuleNode, old: &'a [Value], item: &Value) -> Option<&'a Value> {
    if node.list_set {
        return old.iter().find(|o| *o == item);
    }
    if node.list_map_keys.is_empty() {
        return None;
    }
    old.iter().find(|o| {
        node.list_map_keys
            .iter()
            .all(|key| o.get(key) == item.get(key))
    })
}

/// One rule against one value: `None` when it holds.
fn check(
    rule: &Rule,
    node: &RuleNode,
    this: &cel::Value,
    before: Option<&cel::Value>,
    path: &str,
) -> Option<FieldError> {
    let mut context = cel::Context::with_env(env());
    context.add_variable_from_value("self", this.clone());
    if let Some(before) = before {
        context.add_variable_from_value("oldSelf", before.clone());
    }
    let field = field_path(path, &rule.field_path);
    let shown = Value::String(node.schema_type.clone());
    match rule.program.execute(&context) {
        Ok(cel::Value::Bool(true)) => None,
        Ok(_) => {
            let message = rule
                .message_expression
                .as_ref()
                .and_then(|m| match m.execute(&context) {
                    Ok(cel::Value::String(s)) => Some(s.trim().to_string()),
                    _ => None,
                })
                .filter(|m| !m.is_empty() && !m.contains('\n'))
                .unwrap_or_else(|| message_or_default(rule));
            Some(failure(rule, &field, &shown, &message))
        }
        Err(e) => {
            let detail = match e {
                cel::ExecutionError::NoSuchOverload(_) => format!(
                    "'{e}': call arguments did not match a supported operator, function or macro signature for rule: {}",
                    error_string(rule)
                ),
                _ => format!("{e} evaluating rule: {}", error_string(rule)),
            };
            Some(FieldError::invalid(&field, &shown, &detail))
        }
    }
}

/// The error of a rule that evaluated to false, by its `reason`.
fn failure(rule: &Rule, field: &str, shown: &Value, message: &str) -> FieldError {
    match rule.reason.as_deref() {
        Some("FieldValueForbidden") => FieldError {
            field: field.to_string(),
            reason: "FieldValueForbidden".into(),
            message: format!("Forbidden: {message}"),
        },
        Some("FieldValueRequired") => FieldError::required(field, message),
        Some("FieldValueDuplicate") => FieldError::duplicate(field, shown),
        _ => FieldError::invalid(field, shown, message),
    }
}

/// kube's `message`, else `failed rule: RULE`.
fn message_or_default(rule: &Rule) -> String {
    if rule.message.is_empty() {
        format!("failed rule: {}", rule.rule.trim())
    } else {
        rule.message.trim().to_string()
    }
}

/// kube's `message`, else the rule itself.
fn error_string(rule: &Rule) -> String {
    if rule.message.is_empty() {
        rule.rule.trim().to_string()
    } else {
        rule.message.trim().to_string()
    }
}

/// The node's path joined with a rule's `fieldPath` (`.spec.replicas`, `['a.b']`).
fn field_path(path: &str, relative: &str) -> String {
    let mut out = path.to_string();
    let mut rest = relative.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("['") {
            let (name, tail) = after.split_once("']").unwrap_or((after, ""));
            out = child(&out, name);
            rest = tail;
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            out = child(&out, &after[..end]);
            rest = &after[end..];
        } else {
            out.push_str(rest);
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object",
                "x-kubernetes-validations": [
                    {"rule": "self.min <= self.max", "message": "min must not exceed max", "fieldPath": ".min"},
                    {"rule": "!has(self.forbidden)", "reason": "FieldValueForbidden", "message": "no forbidden"},
                    {"rule": "self.name.startsWith('w-') && self.name.matches('^[a-z-]+$')",
                     "messageExpression": "'name ' + self.name + ' is bad'"},
                    {"rule": "self.tags.all(t, size(t) <= 3) && self.tags.exists(t, t == 'a')"},
                    {"rule": "self.tags.filter(t, t == 'x').size() == 0 && self.tags.map(t, t + '!').size() >= 0"}],
                "properties": {
                    "min": {"type": "integer"}, "max": {"type": "integer"}, "name": {"type": "string"},
                    "forbidden": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "ratio": {"type": "number", "x-kubernetes-validations": [{"rule": "self < 1.5"}]},
                    "replicas": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >= oldSelf", "message": "may not decrease"}]},
                    "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                        "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer",
                            "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "port is immutable"}]}}}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string",
                        "x-kubernetes-validations": [{"rule": "self != 'bad'"}]}}}}}})
    }

    fn errors(obj: Value, old: Option<Value>) -> Vec<String> {
        let schema = schema();
        let rules = Rules::compile(&schema, "spec.validation.openAPIV3Schema");
        assert!(rules.errors.is_empty(), "{:?}", rules.errors);
        validate(&rules, &schema, &obj, old.as_ref())
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn good() -> Value {
        json!({"spec": {"min": 1, "max": 2, "name": "w-a", "tags": ["a"], "ratio": 1, "replicas": 2,
                        "ports": [{"name": "http", "port": 80}], "labels": {"k": "v"}}})
    }

    #[test]
    fn rules_that_hold_give_nothing() {
        assert_eq!(errors(good(), None), Vec::<String>::new());
        assert_eq!(errors(good(), Some(good())), Vec::<String>::new());
    }

    #[test]
    fn failing_rules_give_kubes_errors() {
        let mut obj = good();
        obj["spec"]["min"] = json!(5);
        obj["spec"]["forbidden"] = json!("x");
        obj["spec"]["name"] = json!("bad");
        obj["spec"]["tags"] = json!(["abcd", "x"]);
        obj["spec"]["ratio"] = json!(2);
        obj["spec"]["labels"] = json!({"k": "bad"});
        assert_eq!(
            errors(obj, None),
            vec![
                "spec.min: Invalid value: \"object\": min must not exceed max",
                "spec: Forbidden: no forbidden",
                "spec: Invalid value: \"object\": name bad is bad",
                "spec: Invalid value: \"object\": failed rule: self.tags.all(t, size(t) <= 3) && self.tags.exists(t, t == 'a')",
                "spec: Invalid value: \"object\": failed rule: self.tags.filter(t, t == 'x').size() == 0 && self.tags.map(t, t + '!').size() >= 0",
                "spec.labels[k]: Invalid value: \"string\": failed rule: self != 'bad'",
                "spec.ratio: Invalid value: \"number\": failed rule: self < 1.5",
            ]
        );
    }

    #[test]
    fn transition_rules_need_an_old_value() {
        let mut obj = good();
        obj["spec"]["replicas"] = json!(1);
        obj["spec"]["ports"] = json!([{"name": "http", "port": 81}, {"name": "new", "port": 1}]);
        assert_eq!(errors(obj.clone(), None), Vec::<String>::new());
        assert_eq!(
            errors(obj, Some(good())),
            vec![
                "spec.ports[0].port: Invalid value: \"integer\": port is immutable",
                "spec.replicas: Invalid value: \"integer\": may not decrease",
            ]
        );
    }

    #[test]
    fn evaluation_errors_name_the_rule() {
        let mut obj = good();
        obj["spec"].as_object_mut().unwrap().remove("max");
        let got = errors(obj, None);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("spec.min: Invalid value: \"object\": ")
                && got[0].ends_with(" evaluating rule: min must not exceed max"),
            "{got:?}"
        );
    }

    #[test]
    fn field_paths_join_the_nodes_path() {
        assert_eq!(field_path("spec", ".a.b"), "spec.a.b");
        assert_eq!(field_path("spec", "['x.y'].z"), "spec.x.y.z");
        assert_eq!(field_path("", ".spec"), "spec");
        assert_eq!(field_path("spec", ""), "spec");
    }
}
