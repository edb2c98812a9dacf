//! Validation of built-in objects with kube-apiserver's field paths and messages
//! (`spec.containers[0].image: Required value`), and strict field validation (fields the
//! kind's schema does not know, for `fieldValidation=Strict`).
//!
//! [`validate`] covers object metadata (names, namespace, labels, annotations) for every kind
//! and the essentials of the common kinds (pods and pod templates, workload controllers,
//! services, config maps and secrets, namespaces). It expects defaulted objects, as
//! kube-apiserver validates after defaulting, and `metadata.namespace` already set from the URL
//! for namespaced kinds.

mod kinds;
mod names;
mod pod;

use serde_json::{Map, Value};

pub use names::{
    is_config_map_key, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value, is_valid_port_name,
};

use crate::registry::ResourceInfo;
use crate::schema;

/// One invalid field, as a `StatusCause` of a 422 `Invalid` answer carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field path, e.g. `spec.containers[0].image`.
    pub field: String,
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueDuplicate`,
    /// `FieldValueNotSupported`, `FieldValueTooLong`, `FieldValueNotFound` or
    /// `FieldValueForbidden`.
    pub reason: String,
    /// What kube-apiserver says after the path, e.g. `Required value` or
    /// `Invalid value: "Foo": a lowercase RFC 1123 ...`.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl FieldError {
    fn new(field: &str, reason: &str, message: String) -> FieldError {
        FieldError {
            field: field.to_string(),
            reason: reason.to_string(),
            message,
        }
    }

    /// `Required value` (with an optional detail).
    pub fn required(field: &str, detail: &str) -> FieldError {
        let message = if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        };
        FieldError::new(field, "FieldValueRequired", message)
    }

    /// `Invalid value: VALUE: detail`.
    pub fn invalid(field: &str, value: &Value, detail: &str) -> FieldError {
        let message = if detail.is_empty() {
            format!("Invalid value: {}", show(value))
        } else {
            format!("Invalid value: {}: {detail}", show(value))
        };
        FieldError::new(field, "FieldValueInvalid", message)
    }

    /// `Duplicate value: VALUE`.
    pub fn duplicate(field: &str, value: &Value) -> FieldError {
        FieldError::new(
            field,
            "FieldValueDuplicate",
            format!("Duplicate value: {}", show(value)),
        )
    }

    /// `Unsupported value: VALUE: supported values: "a", "b"`.
    pub fn not_supported(field: &str, value: &Value, supported: &[&str]) -> FieldError {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError::new(
            field,
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {}: supported values: {}",
                show(value),
                list.join(", ")
            ),
        )
    }

    /// `Not found: VALUE`.
    pub fn not_found(field: &str, value: &Value) -> FieldError {
        FieldError::new(
            field,
            "FieldValueNotFound",
            format!("Not found: {}", show(value)),
        )
    }

    /// `Too long: may not be more than N bytes`.
    pub fn too_long(field: &str, max_bytes: usize) -> FieldError {
        FieldError::new(
            field,
            "FieldValueTooLong",
            format!("Too long: may not be more than {max_bytes} bytes"),
        )
    }

    /// `Forbidden: detail`.
    pub fn forbidden(field: &str, detail: &str) -> FieldError {
        FieldError::new(field, "FieldValueForbidden", format!("Forbidden: {detail}"))
    }
}

/// Shows a bad value as Go's `%#v` would for the types objects hold.
pub(crate) fn show(value: &Value) -> String {
    match value {
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        Value::Object(map) if map.values().all(Value::is_string) => {
            let pairs: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(k).unwrap_or_default(),
                        serde_json::to_string(v).unwrap_or_default()
                    )
                })
                .collect();
            format!("map[string]string{{{}}}", pairs.join(", "))
        }
        other => other.to_string(),
    }
}

/// The message of the 422 `Invalid` Status: `Pod "web" is invalid: spec.containers[0].image:
/// Required value`, with several errors in brackets.
pub fn invalid_message(kind: &str, name: &str, errors: &[FieldError]) -> String {
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let body = match listed.len() {
        1 => listed[0].clone(),
        _ => format!("[{}]", listed.join(", ")),
    };
    format!("{kind} {name:?} is invalid: {body}")
}

/// Which rule a kind's names follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (namespaces).
    Label,
    /// DNS-1035 label (services).
    Dns1035,
    /// A path segment: not `.` or `..`, no `/` or `%` (RBAC kinds, custom resources).
    PathSegment,
}

/// The name rule of a kind.
pub fn name_rule(info: &ResourceInfo) -> NameRule {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Namespace") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        _ if schema::schema_name(&info.group, &info.version, &info.kind).is_none() => {
            NameRule::PathSegment
        }
        _ => NameRule::Subdomain,
    }
}

/// Messages for a name under a rule (empty when valid).
pub fn name_messages(rule: NameRule, name: &str) -> Vec<String> {
    match rule {
        NameRule::Subdomain => is_dns1123_subdomain(name),
        NameRule::Label => is_dns1123_label(name),
        NameRule::Dns1035 => is_dns1035_label(name),
        NameRule::PathSegment => names::path_segment_messages(name),
    }
}

/// Validates an object of a built-in kind (metadata for any kind).
pub fn validate(info: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let empty = Map::new();
    let metadata = obj
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    validate_object_meta(info, metadata, "metadata", true, &mut errors);
    kinds::validate_kind(info, obj, &mut errors);
    errors
}

/// Validates `metadata` of a top-level object (`top` = true) or of a template (only labels and
/// annotations).
fn validate_object_meta(
    info: &ResourceInfo,
    metadata: &Map<String, Value>,
    path: &str,
    top: bool,
    errors: &mut Vec<FieldError>,
) {
    let text = |key: &str| {
        metadata
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    if top {
        let rule = name_rule(info);
        let name = text("name");
        let generate_name = text("generateName");
        if name.is_empty() && generate_name.is_empty() {
            errors.push(FieldError::required(
                &format!("{path}.name"),
                "name or generateName is required",
            ));
        }
        if !name.is_empty() {
            for msg in name_messages(rule, name) {
                errors.push(FieldError::invalid(
                    &format!("{path}.name"),
                    &Value::from(name),
                    &msg,
                ));
            }
        }
        if !generate_name.is_empty() {
            // A trailing dash is allowed: a random suffix follows it.
            let masked = match generate_name.strip_suffix('-') {
                Some(rest) => format!("{rest}a"),
                None => generate_name.to_string(),
            };
            for msg in name_messages(rule, &masked) {
                errors.push(FieldError::invalid(
                    &format!("{path}.generateName"),
                    &Value::from(generate_name),
                    &msg,
                ));
            }
        }
        let namespace = text("namespace");
        if info.namespaced {
            if namespace.is_empty() {
                errors.push(FieldError::required(&format!("{path}.namespace"), ""));
            } else {
                for msg in is_dns1123_label(namespace) {
                    errors.push(FieldError::invalid(
                        &format!("{path}.namespace"),
                        &Value::from(namespace),
                        &msg,
                    ));
                }
            }
        }
    }
    validate_labels(metadata.get("labels"), &format!("{path}.labels"), errors);
    validate_annotations(
        metadata.get("annotations"),
        &format!("{path}.annotations"),
        errors,
    );
}

/// Label keys are qualified names, values at most 63 characters of `[-_.A-Za-z0-9]`.
pub fn validate_labels(labels: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (key, value) in labels {
        for msg in is_qualified_name(key) {
            errors.push(FieldError::invalid(path, &Value::from(key.as_str()), &msg));
        }
        let value_text = value.as_str().unwrap_or_default();
        for msg in is_valid_label_value(value_text) {
            errors.push(FieldError::invalid(path, &Value::from(value_text), &msg));
        }
    }
}

/// The most bytes all annotations of an object may take, keys and values.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// Annotation keys are qualified names (checked lower-cased); all of them together fit in 256 KiB.
pub fn validate_annotations(annotations: Option<&Value>, path: &str, errors: &mut Vec<FieldError>) {
    let Some(annotations) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0;
    for (key, value) in annotations {
        for msg in is_qualified_name(&key.to_ascii_lowercase()) {
            errors.push(FieldError::invalid(path, &Value::from(key.as_str()), &msg));
        }
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errors.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

/// For a built-in kind, the paths of fields its schema does not know
/// (`spec.template.spec.containers[0].imagePullPolicyy`), as `fieldValidation=Strict` refuses
/// them (`unknown field "spec.foo"`). For a custom resource: the fields its CRD's schema
/// would prune.
pub fn unknown_fields(info: &ResourceInfo, obj: &Value) -> Vec<String> {
    if let Some(schema) = info.custom.as_ref().and_then(|c| c.schema.as_ref()) {
        return crate::structural::prune::unknown_fields(obj, schema);
    }
    let mut found = Vec::new();
    if let Some(schema) = schema::schema_for(&info.group, &info.version, &info.kind) {
        walk_unknown(obj, schema, String::new(), &mut found);
    }
    found
}

fn walk_unknown(value: &Value, schema: &Value, path: String, found: &mut Vec<String>) {
    let schema = schema::resolve(schema);
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (key, child) in map {
                    match properties.get(key) {
                        Some(child_schema) => walk_unknown(child, child_schema, join(key), found),
                        None => found.push(join(key)),
                    }
                }
            } else if let Some(values) =
                schema.get("additionalProperties").filter(|a| a.is_object())
            {
                for (key, child) in map {
                    walk_unknown(child, values, join(key), found);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk_unknown(item, item_schema, format!("{path}[{i}]"), found);
                }
            }
        }
        _ => {}
    }
}

/// The paths of keys that appear twice in one JSON object of a request body
/// (`metadata.labels.app`), which `fieldValidation=Strict` refuses as `duplicate field "X"`.
/// Parsed objects (`serde_json::Value`) keep only the last value, so this reads the raw body.
pub fn duplicate_fields(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    use serde::de::DeserializeSeed;
    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    Duplicates {
        path: String::new(),
        found: &mut found,
    }
    .deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(found)
}

struct Duplicates<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Duplicates<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Duplicates<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key) {
                self.found.push(path.clone());
            }
            map.next_value_seed(Duplicates {
                path,
                found: &mut *self.found,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Duplicates {
                path: format!("{}[{i}]", self.path),
                found: &mut *self.found,
            })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    fn info(plural: &str) -> ResourceInfo {
        Registry::builtin()
            .all()
            .iter()
            .find(|r| r.plural == plural)
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_missing_name_is_required_unless_generate_name_is_set() {
        let errors = validate(
            &info("configmaps"),
            &json!({"metadata": {"namespace": "default"}}),
        );
        assert_eq!(
            errors[0].to_string(),
            "metadata.name: Required value: name or generateName is required"
        );
        assert_eq!(errors[0].reason, "FieldValueRequired");
        let ok = validate(
            &info("configmaps"),
            &json!({"metadata": {"generateName": "cfg-", "namespace": "default"}}),
        );
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn names_follow_the_rule_of_their_kind() {
        let errors = validate(
            &info("configmaps"),
            &json!({"metadata": {"name": "Bad_Name", "namespace": "default"}}),
        );
        assert_eq!(
            errors[0].to_string(),
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
        let ns = validate(&info("namespaces"), &json!({"metadata": {"name": "a.b"}}));
        assert!(ns[0].message.contains("RFC 1123 label"), "{ns:?}");
        let svc = validate(
            &info("services"),
            &json!({"metadata": {"name": "1web", "namespace": "default"}, "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "type": "ClusterIP"}}),
        );
        assert!(svc[0].message.contains("DNS-1035 label"), "{svc:?}");
        let role = validate(
            &info("clusterroles"),
            &json!({"metadata": {"name": "system:controller:x"}}),
        );
        assert!(role.is_empty(), "{role:?}");
    }

    #[test]
    fn namespaced_objects_need_a_valid_namespace() {
        let errors = validate(&info("configmaps"), &json!({"metadata": {"name": "a"}}));
        assert_eq!(errors[0].to_string(), "metadata.namespace: Required value");
        let errors = validate(
            &info("configmaps"),
            &json!({"metadata": {"name": "a", "namespace": "Prod"}}),
        );
        assert_eq!(errors[0].field, "metadata.namespace");
    }

    #[test]
    fn label_keys_values_and_annotation_size_are_checked() {
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let errors = validate(
            &info("configmaps"),
            &json!({"metadata": {"name": "a", "namespace": "d",
                "labels": {"app": "web", "bad key": "v", "ok": "-bad-"},
                "annotations": {"note": big}}}),
        );
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(shown.iter().any(|e| e.starts_with("metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters")), "{shown:?}");
        assert!(
            shown.iter().any(|e| e.starts_with(
                "metadata.labels: Invalid value: \"-bad-\": a valid label must be an empty string"
            )),
            "{shown:?}"
        );
        assert!(
            shown.contains(
                &"metadata.annotations: Too long: may not be more than 262144 bytes".to_string()
            ),
            "{shown:?}"
        );
    }

    #[test]
    fn the_invalid_message_reads_like_kube_apiserver() {
        let one = [FieldError::required("spec.containers[0].image", "")];
        assert_eq!(
            invalid_message("Pod", "web", &one),
            "Pod \"web\" is invalid: spec.containers[0].image: Required value"
        );
        let two = [
            FieldError::required("a", ""),
            FieldError::duplicate("b", &json!("x")),
        ];
        assert_eq!(
            invalid_message("Pod", "web", &two),
            "Pod \"web\" is invalid: [a: Required value, b: Duplicate value: \"x\"]"
        );
    }

    #[test]
    fn unknown_fields_are_reported_with_their_paths() {
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"any": "thing"}, "bogus": 1},
            "spec": {"replicas": 1, "foo": true,
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "a", "image": "nginx", "imagePullPolicyy": "Always",
                                                           "resources": {"limits": {"cpu": "1"}},
                                                           "ports": [{"containerPort": 80, "hostport": 1}]}]}}},
            "status": {}
        });
        assert_eq!(
            unknown_fields(&info("deployments"), &deploy),
            vec![
                "metadata.bogus",
                "spec.foo",
                "spec.template.spec.containers[0].imagePullPolicyy",
                "spec.template.spec.containers[0].ports[0].hostport",
            ]
        );
    }

    #[test]
    fn duplicate_keys_in_the_raw_body_are_found() {
        let body = br#"{"metadata": {"name": "a", "labels": {"x": "1", "x": "2"}},
                        "spec": {"containers": [{"name": "a", "name": "b"}]}, "kind": "Pod", "kind": "Pod"}"#;
        assert_eq!(
            duplicate_fields(body).unwrap(),
            vec!["metadata.labels.x", "spec.containers[0].name", "kind"]
        );
        assert!(
            duplicate_fields(b"{\"a\": [1, {\"b\": null}]}")
                .unwrap()
                .is_empty()
        );
        assert!(duplicate_fields(b"{").is_err());
    }

    #[test]
    fn known_open_ended_fields_are_not_unknown() {
        let crd = json!({"metadata": {"name": "w.example.com", "managedFields": [{"fieldsV1": {"f:spec": {}}}]},
            "spec": {"group": "example.com", "names": {"plural": "w", "kind": "W"}, "scope": "Namespaced",
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                                                  "properties": {"spec": {"type": "object", "default": {"a": 1}}}}}}]}});
        let mut crd_info = info("customresourcedefinitions");
        crd_info.group = "apiextensions.k8s.io".into();
        assert_eq!(unknown_fields(&crd_info, &crd), Vec::<String>::new());
        let mut widget = crd_info.clone();
        widget.group = "example.com".into();
        widget.kind = "Widget".into();
        assert!(unknown_fields(&widget, &json!({"spec": {"x": 1}})).is_empty());
    }

    #[test]
    fn per_index_backoff_and_success_policies_need_an_indexed_job() {
        let job = |spec: serde_json::Value| {
            let mut spec = spec;
            spec["template"] = json!({"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}});
            validate(
                &info("jobs"),
                &json!({"metadata": {"name": "j", "namespace": "default"}, "spec": spec}),
            )
        };
        let fields = |errors: Vec<FieldError>| -> Vec<String> {
            errors.into_iter().map(|e| e.field).collect()
        };
        let ok = job(json!({"completionMode": "Indexed", "completions": 3,
            "backoffLimitPerIndex": 1, "maxFailedIndexes": 2,
            "successPolicy": {"rules": [{"succeededIndexes": "0", "succeededCount": 1}]}}));
        assert!(ok.is_empty(), "{ok:?}");
        assert_eq!(
            fields(job(json!({"completions": 3, "backoffLimitPerIndex": 1}))),
            ["spec.backoffLimitPerIndex"]
        );
        assert_eq!(
            fields(job(
                json!({"completionMode": "Indexed", "completions": 3, "maxFailedIndexes": 1})
            )),
            ["spec.backoffLimitPerIndex"]
        );
        assert_eq!(
            fields(job(json!({"completionMode": "Indexed", "completions": 3,
                "backoffLimitPerIndex": 1, "maxFailedIndexes": 4}))),
            ["spec.maxFailedIndexes"]
        );
        assert_eq!(
            fields(job(json!({"completions": 3,
                "successPolicy": {"rules": [{"succeededCount": 1}]}}))),
            ["spec.completionMode"]
        );
        assert_eq!(
            fields(job(json!({"completionMode": "Indexed", "completions": 3,
                "successPolicy": {"rules": [{}]}}))),
            ["spec.successPolicy.rules[0]"]
        );
        let policy = |rule: serde_json::Value| {
            fields(job(
                json!({"completions": 3, "podFailurePolicy": {"rules": [rule]}}),
            ))
        };
        assert!(
            policy(json!({"action": "FailJob",
                "onExitCodes": {"operator": "In", "values": [42]}}))
            .is_empty()
        );
        assert_eq!(
            policy(json!({"action": "FailIndex",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]})),
            ["spec.podFailurePolicy.rules[0].action"]
        );
        assert_eq!(
            policy(json!({"action": "Ignore"})),
            ["spec.podFailurePolicy.rules[0]"]
        );
        let failing = json!({"rules": [{"action": "FailJob",
            "onExitCodes": {"operator": "In", "values": [42]}}]});
        assert_eq!(
            fields(job(json!({"podReplacementPolicy": "TerminatingOrFailed",
                "podFailurePolicy": failing.clone()}))),
            ["spec.podReplacementPolicy"],
            "a podFailurePolicy needs Failed"
        );
        assert!(
            job(json!({"podReplacementPolicy": "Failed", "podFailurePolicy": failing})).is_empty()
        );
        assert_eq!(
            fields(job(json!({"podReplacementPolicy": "Sometimes"}))),
            ["spec.podReplacementPolicy"]
        );
    }
}
