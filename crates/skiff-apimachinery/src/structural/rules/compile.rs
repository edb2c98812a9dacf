//! The `x-kubernetes-validations` of a schema, compiled once per CRD version into a tree that
//! mirrors the schema nodes carrying rules (kube-apiserver's compiled rule cache). A rule
//! that does not compile is a CRD error (`...x-kubernetes-validations[0].rule: Invalid value:
//! apiextensions.ValidationRule{...}: compilation failed: ERROR: <input>:1:9: ...`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use cel::{Env, Program};
use serde_json::Value;

use crate::validation::FieldError;

/// The reasons a rule may give instead of `FieldValueInvalid`.
pub const REASONS: [&str; 4] = [
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// The CEL environment rules run in: the standard library with its macros, plus the strings
/// and lists extension libraries kube-apiserver also offers.
pub fn env() -> Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // Both extensions only add overloads the standard library does not declare.
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        Arc::new(env)
    })
    .clone()
}

/// One compiled entry of `x-kubernetes-validations`.
pub struct Rule {
    /// `rule`, as written.
    pub rule: String,
    /// `message`, if any.
    pub message: String,
    /// `reason`, if any (one of [`REASONS`]).
    pub reason: Option<String>,
    /// `fieldPath`, relative to the node (`.spec.replicas`), if any.
    pub field_path: String,
    /// Whether the rule reads `oldSelf` (a transition rule).
    pub transition: bool,
    pub(super) program: Program,
    pub(super) message_expression: Option<Program>,
}

/// The rules of one schema node and of the nodes below it that have rules.
#[derive(Default)]
pub struct RuleNode {
    /// The node's rules.
    pub rules: Vec<Rule>,
    /// The node's `type` (`object`, `integer` ...), which kube shows as the invalid value.
    pub schema_type: String,
    /// Rules below `properties`.
    pub properties: BTreeMap<String, RuleNode>,
    /// Rules below `items`.
    pub items: Option<Box<RuleNode>>,
    /// Rules below `additionalProperties`.
    pub additional: Option<Box<RuleNode>>,
    /// `x-kubernetes-list-map-keys` of a `map` list (how old items are found again).
    pub list_map_keys: Vec<String>,
    /// Whether the list is a `set` (old items are equal ones).
    pub list_set: bool,
}

impl RuleNode {
    fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.properties.is_empty()
            && self.items.is_none()
            && self.additional.is_none()
    }
}

/// The compiled rules of a schema, and the errors of those that did not compile.
#[derive(Default)]
pub struct Rules {
    /// The root node, if any rule exists.
    pub root: Option<RuleNode>,
    /// Rules that are invalid, with their path below `openAPIV3Schema`.
    pub errors: Vec<FieldError>,
    sources: Vec<String>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules")
            .field("rules", &self.sources)
            .field("errors", &self.errors)
            .finish()
    }
}

impl PartialEq for Rules {
    fn eq(&self, other: &Rules) -> bool {
        self.sources == other.sources
    }
}

impl Eq for Rules {}

impl Rules {
    /// Compiles every rule of `schema`; error paths start with `prefix`
    /// (`spec.validation.openAPIV3Schema`).
    pub fn compile(schema: &Value, prefix: &str) -> Rules {
        let mut rules = Rules::default();
        let root = rules.node(schema, prefix);
        rules.root = (!root.is_empty()).then_some(root);
        rules
    }

    /// Whether no rule exists.
    pub fn is_empty(&self) -> bool {
        self.root.is_none()
    }

    fn node(&mut self, schema: &Value, path: &str) -> RuleNode {
        let mut node = RuleNode {
            schema_type: text(schema, "type").to_string(),
            list_set: text(schema, "x-kubernetes-list-type") == "set",
            ..RuleNode::default()
        };
        if text(schema, "x-kubernetes-list-type") == "map" {
            node.list_map_keys = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
        }
        if let Some(list) = schema
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
        {
            for (i, entry) in list.iter().enumerate() {
                let at = format!("{path}.x-kubernetes-validations[{i}]");
                if let Some(rule) = self.rule(entry, &at) {
                    node.rules.push(rule);
                }
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                let child = self.node(child, &format!("{path}.properties[{name}]"));
                if !child.is_empty() {
                    node.properties.insert(name.clone(), child);
                }
            }
        }
        if let Some(items) = schema.get("items").filter(|i| i.is_object()) {
            let child = self.node(items, &format!("{path}.items"));
            node.items = (!child.is_empty()).then(|| Box::new(child));
        }
        if let Some(additional) = schema.get("additionalProperties").filter(|a| a.is_object()) {
            let child = self.node(additional, &format!("{path}.additionalProperties"));
            node.additional = (!child.is_empty()).then(|| Box::new(child));
        }
        node
    }

    fn rule(&mut self, entry: &Value, at: &str) -> Option<Rule> {
        let source = text(entry, "rule");
        let message_source = text(entry, "messageExpression");
        let reason = entry.get("reason").and_then(Value::as_str);
        self.sources.push(format!("{at}: {source}"));
        if source.trim().is_empty() {
            self.errors
                .push(FieldError::required(&format!("{at}.rule"), ""));
            return None;
        }
        if let Some(reason) = reason
            && !REASONS.contains(&reason)
        {
            self.errors.push(FieldError::not_supported(
                &format!("{at}.reason"),
                &Value::String(reason.to_string()),
                &REASONS,
            ));
            return None;
        }
        let env = env();
        let program = match env.compile(source) {
            Ok(program) => program,
            Err(e) => {
                self.errors.push(compile_error(
                    &format!("{at}.rule"),
                    entry,
                    &format!("compilation failed: {e}"),
                ));
                return None;
            }
        };
        let message_expression = if message_source.trim().is_empty() {
            None
        } else {
            match env.compile(message_source) {
                Ok(program) => Some(program),
                Err(e) => {
                    self.errors.push(compile_error(
                        &format!("{at}.messageExpression"),
                        entry,
                        &format!("messageExpression compilation failed: {e}"),
                    ));
                    return None;
                }
            }
        };
        let transition = program.references().has_variable("oldSelf");
        Some(Rule {
            rule: source.to_string(),
            message: text(entry, "message").to_string(),
            reason: reason.map(str::to_string),
            field_path: text(entry, "fieldPath").to_string(),
            transition,
            program,
            message_expression,
        })
    }
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// kube-apiserver shows the whole rule as Go prints its struct (`%#v`).
fn compile_error(field: &str, entry: &Value, detail: &str) -> FieldError {
    let pointer = |key: &str, ty: &str| match entry.get(key) {
        Some(Value::Null) | None => format!("(*{ty})(nil)"),
        Some(_) => format!("(*{ty})(0xc000000000)"),
    };
    let shown = format!(
        "apiextensions.ValidationRule{{Rule:{:?}, Message:{:?}, MessageExpression:{:?}, Reason:{}, FieldPath:{:?}, OptionalOldSelf:{}}}",
        text(entry, "rule"),
        text(entry, "message"),
        text(entry, "messageExpression"),
        pointer("reason", "apiextensions.FieldValueErrorReason"),
        text(entry, "fieldPath"),
        pointer("optionalOldSelf", "bool"),
    );
    FieldError {
        field: field.to_string(),
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rules_compile_into_a_tree_of_the_nodes_that_have_them() {
        let schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "x-kubernetes-validations": [{"rule": "self.min <= self.max"}],
                     "properties": {"min": {"type": "integer"}, "max": {"type": "integer"},
                                    "replicas": {"type": "integer", "x-kubernetes-validations": [{"rule": "self >= oldSelf"}]}}},
            "status": {"type": "object"}}});
        let rules = Rules::compile(&schema, "spec.validation.openAPIV3Schema");
        assert!(rules.errors.is_empty(), "{:?}", rules.errors);
        let root = rules.root.as_ref().unwrap();
        assert!(!root.properties.contains_key("status"));
        let spec = &root.properties["spec"];
        assert!(!spec.rules[0].transition);
        assert!(spec.properties["replicas"].rules[0].transition);
    }

    #[test]
    fn the_environment_has_the_functions_kube_users_rely_on() {
        let env = env();
        for rule in [
            "size('abc') == 3 && 'abc'.size() == 3 && size([1, 2]) == 2",
            "has({'a': 1}.a) && !has({'a': 1}.b)",
            "[1, 2].all(x, x > 0) && [1, 2].exists(x, x == 2) && [1, 2].exists_one(x, x == 1)",
            "[1, 2].map(x, x * 2) == [2, 4] && [1, 2].filter(x, x > 1) == [2]",
            "'web-1'.matches('^[a-z]+-[0-9]$') && 'web'.startsWith('w') && 'web'.endsWith('b')",
            "'web'.contains('e') && 1 < 2 && 2.5 >= 2.0 && 'a' < 'b' && int('3') == 3",
            "'A,B'.lowerAscii().split(',') == ['a', 'b'] && 'x'.upperAscii() == 'X'",
            "[3, 1, 2].sort() == [1, 2, 3] && [1, 1].distinct() == [1]",
        ] {
            let program = env.compile(rule).unwrap();
            let context = cel::Context::with_env(env.clone());
            assert_eq!(
                program.execute(&context),
                Ok(cel::Value::Bool(true)),
                "{rule}"
            );
        }
    }

    #[test]
    fn a_rule_that_does_not_compile_is_a_crd_error() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.x <"}, {"rule": "true", "reason": "Nope"}, {"rule": ""}]}}});
        let rules = Rules::compile(&schema, "spec.validation.openAPIV3Schema");
        assert!(rules.is_empty());
        let first = &rules.errors[0];
        assert_eq!(
            first.field,
            "spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule"
        );
        assert!(
            first.message.starts_with(
                "Invalid value: apiextensions.ValidationRule{Rule:\"self.x <\", Message:\"\", MessageExpression:\"\", Reason:(*apiextensions.FieldValueErrorReason)(nil), FieldPath:\"\", OptionalOldSelf:(*bool)(nil)}: compilation failed: ERROR: <input>:1:"
            ),
            "{}",
            first.message
        );
        assert_eq!(rules.errors[1].reason, "FieldValueNotSupported");
        assert!(rules.errors[1].field.ends_with("[1].reason"));
        assert_eq!(rules.errors[2].reason, "FieldValueRequired");
    }
}
