//! Strategic merge patch (`application/strategic-merge-patch+json`) for built-in kinds, as
//! apimachinery's `strategicpatch` applies it on the server side.
//!
//! - Maps merge recursively; a `null` value deletes the key.
//! - Lists replace, unless the field's patch strategy is `merge`: lists of objects then merge
//!   element by element on the field's merge key (containers by `name`, container ports by
//!   `containerPort`, service ports by `port` ...), lists of primitives (`finalizers`) become
//!   the union.
//! - Directives: `$patch: replace | delete` in a map or as a list element, `$retainKeys`,
//!   `$deleteFromPrimitiveList/<field>`, `$setElementOrder/<field>`.
//!
//! Patch strategies and merge keys are the `patchStrategy`/`patchMergeKey` tags of the
//! Kubernetes API types (published in OpenAPI as `x-kubernetes-patch-strategy` and
//! `x-kubernetes-patch-merge-key`). `k8s-openapi`'s schemas do not carry them, so they live in
//! [`PATCH_METADATA`], keyed by schema name and field; the object is walked along its kind's
//! schema to find the type of every map.

use serde_json::{Map, Value};

use crate::registry::ResourceInfo;
use crate::schema;

/// Why a strategic merge patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The kind has no built-in schema (custom resources take JSON merge patches).
    #[error(
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for {kind})"
    )]
    UnsupportedKind {
        /// The kind.
        kind: String,
    },
    /// The patch is not a JSON object.
    #[error("strategic merge patch must be a JSON object")]
    NotAnObject,
    /// A list element lacks the list's merge key.
    #[error("map: {element} does not contain declared merge key: {merge_key}")]
    MissingMergeKey {
        /// The element, as JSON.
        element: String,
        /// The merge key, e.g. `name`.
        merge_key: String,
    },
    /// A `$patch` directive with an unknown value, or `merge` where it is not supported.
    #[error("Unrecognized patch type: {directive}")]
    BadDirective {
        /// The directive's value.
        directive: String,
    },
}

/// The patch strategy of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchMeta {
    /// `merge`, `retainKeys`, `merge,retainKeys` (`x-kubernetes-patch-strategy`).
    pub strategy: &'static str,
    /// Merge key of a list of objects (`x-kubernetes-patch-merge-key`); empty for primitives.
    pub merge_key: &'static str,
}

impl PatchMeta {
    /// Whether lists under this field merge rather than replace.
    pub fn merges(&self) -> bool {
        self.strategy.split(',').any(|s| s == "merge")
    }
}

const CONTAINER_FIELDS: &[(&str, &str, &str)] = &[
    ("ports", "merge", "containerPort"),
    ("env", "merge", "name"),
    ("volumeMounts", "merge", "mountPath"),
    ("volumeDevices", "merge", "devicePath"),
];

/// (schema name, field, patch strategy, merge key) of every Kubernetes field with patch tags,
/// for the kinds Skiff serves.
pub const PATCH_METADATA: &[(&str, &str, &str, &str)] = &[
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        "",
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        "uid",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", "name"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        "topologyKey",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        "name",
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        "type",
    ),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", "ip"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", "ip"),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        "merge,retainKeys",
        "name",
    ),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", "port"),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.ServiceAccount",
        "secrets",
        "merge",
        "name",
    ),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", ""),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.core.v1.ReplicationControllerStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        "",
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.batch.v1.JobStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        "merge",
        "type",
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        "merge",
        "type",
    ),
];

/// The patch strategy of `field` in the type named `type_name`, if it has one.
pub fn patch_meta(type_name: &str, field: &str) -> Option<PatchMeta> {
    let container_like = matches!(
        type_name,
        "io.k8s.api.core.v1.Container" | "io.k8s.api.core.v1.EphemeralContainer"
    );
    if container_like {
        return CONTAINER_FIELDS.iter().find(|(f, _, _)| *f == field).map(
            |(_, strategy, merge_key)| PatchMeta {
                strategy,
                merge_key,
            },
        );
    }
    PATCH_METADATA
        .iter()
        .find(|(t, f, _, _)| *t == type_name && *f == field)
        .map(|(_, _, strategy, merge_key)| PatchMeta {
            strategy,
            merge_key,
        })
}

/// Every field of a kind with a patch strategy, by JSON path (`spec.template.spec.containers`),
/// for documentation and for clients that diff objects.
pub fn merge_keys(info: &ResourceInfo) -> Vec<(String, PatchMeta)> {
    let mut out = Vec::new();
    if let Some(root) = schema::schema_for(&info.group, &info.version, &info.kind) {
        let mut stack = Vec::new();
        collect_merge_keys(root, String::new(), &mut stack, &mut out);
    }
    out
}

fn collect_merge_keys(
    schema_value: &Value,
    path: String,
    stack: &mut Vec<&'static str>,
    out: &mut Vec<(String, PatchMeta)>,
) {
    let (name, resolved) = schema::resolve_named(schema_value);
    if let Some(name) = name {
        if stack.contains(&name) || stack.len() > 12 {
            return;
        }
        stack.push(name);
    }
    if let Some(properties) = resolved.get("properties").and_then(Value::as_object) {
        for (field, child) in properties {
            let child_path = if path.is_empty() {
                field.clone()
            } else {
                format!("{path}.{field}")
            };
            if let Some(meta) = name.and_then(|n| patch_meta(n, field)) {
                out.push((child_path.clone(), meta));
            }
            let next = child.get("items").unwrap_or(child);
            collect_merge_keys(next, child_path, stack, out);
        }
    }
    if name.is_some() {
        stack.pop();
    }
}

/// Where the merge stands in the kind's schema: the type name (for patch metadata) and schema.
#[derive(Clone, Copy)]
struct Node<'a> {
    name: Option<&'static str>,
    schema: Option<&'a Value>,
}

impl<'a> Node<'a> {
    const NONE: Node<'static> = Node {
        name: None,
        schema: None,
    };

    fn of(schema_value: &'a Value) -> Node<'a> {
        let (name, resolved) = schema::resolve_named(schema_value);
        Node {
            name,
            schema: Some(resolved),
        }
    }

    /// The node of a field's value (or of a map's values).
    fn field(&self, key: &str) -> Node<'a> {
        let Some(schema) = self.schema else {
            return Node::NONE;
        };
        match schema.pointer(&format!(
            "/properties/{}",
            key.replace('~', "~0").replace('/', "~1")
        )) {
            Some(child) => Node::of(child),
            None => match schema.get("additionalProperties").filter(|a| a.is_object()) {
                Some(values) => Node::of(values),
                None => Node::NONE,
            },
        }
    }

    /// The node of a list's elements.
    fn items(&self) -> Node<'a> {
        match self.schema.and_then(|s| s.get("items")) {
            Some(items) => Node::of(items),
            None => Node::NONE,
        }
    }

    fn meta(&self, key: &str) -> Option<PatchMeta> {
        self.name.and_then(|n| patch_meta(n, key))
    }
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch to an object of a built-in kind.
pub fn strategic_merge(
    original: &Value,
    patch: &Value,
    kind: &ResourceInfo,
) -> Result<Value, PatchError> {
    let Some(root) = schema::schema_for(&kind.group, &kind.version, &kind.kind) else {
        return Err(PatchError::UnsupportedKind {
            kind: kind.kind.clone(),
        });
    };
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject);
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    merge_map(original, patch.clone(), Node::of(root)).map(Value::Object)
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    node: Node<'_>,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.remove(DIRECTIVE) {
        match directive.as_str() {
            Some("replace") => return merge_map(Map::new(), patch, node),
            Some("delete") => return Ok(Map::new()),
            _ => {
                return Err(PatchError::BadDirective {
                    directive: directive.to_string(),
                });
            }
        }
    }
    if let Some(retain) = patch.remove(RETAIN_KEYS) {
        let keep: Vec<&str> = retain
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        original.retain(|k, _| keep.contains(&k.as_str()));
    }

    // Element orders apply after merging; deletions from primitive lists before.
    let mut orders = Vec::new();
    let keys: Vec<String> = patch.keys().cloned().collect();
    for key in keys {
        if let Some(field) = key.strip_prefix(SET_ELEMENT_ORDER) {
            if let Some(Value::Array(order)) = patch.remove(&key) {
                let before = match original.get(field) {
                    Some(Value::Array(list)) => list.clone(),
                    _ => Vec::new(),
                };
                orders.push((field.to_string(), order, before));
            }
        } else if let Some(field) = key.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let removed = patch.remove(&key).unwrap_or(Value::Null);
            let removed = removed.as_array().map(Vec::as_slice).unwrap_or_default();
            if let Some(Value::Array(list)) = original.get_mut(field) {
                list.retain(|v| !removed.contains(v));
            }
        }
    }

    for (key, patch_value) in patch {
        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let child = node.field(&key);
        let meta = node.meta(&key);
        let merged = match (original.remove(&key), patch_value) {
            (Some(Value::Object(o)), Value::Object(p)) => Value::Object(merge_map(o, p, child)?),
            (Some(Value::Array(o)), Value::Array(p)) => {
                Value::Array(merge_list_field(o, p, child, meta)?)
            }
            (None, Value::Object(p)) => Value::Object(merge_map(Map::new(), p, child)?),
            (None, Value::Array(p)) => Value::Array(merge_list_field(Vec::new(), p, child, meta)?),
            (_, other) => other,
        };
        original.insert(key, merged);
    }

    for (field, order, before) in orders {
        let merge_key = node.meta(&field).map_or("", |m| m.merge_key);
        if let Some(Value::Array(list)) = original.get_mut(&field) {
            let merged = std::mem::take(list);
            *list = normalize_order(merged, &order, &before, merge_key);
        }
    }
    Ok(original)
}

fn merge_list_field(
    original: Vec<Value>,
    patch: Vec<Value>,
    list_node: Node<'_>,
    meta: Option<PatchMeta>,
) -> Result<Vec<Value>, PatchError> {
    match meta {
        Some(meta) if meta.merges() => {
            merge_list(original, patch, list_node.items(), meta.merge_key)
        }
        // Replaced lists are taken as sent, only elements' own nulls dropped.
        _ => Ok(patch),
    }
}

fn merge_list(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    item_node: Node<'_>,
    merge_key: &str,
) -> Result<Vec<Value>, PatchError> {
    let mut replace = false;
    let mut rest = Vec::new();
    for item in patch {
        let directive = item
            .get(DIRECTIVE)
            .and_then(Value::as_str)
            .map(str::to_string);
        match directive.as_deref() {
            None => rest.push(item),
            Some("replace") => replace = true,
            Some("delete") => match item.get(merge_key).filter(|_| !merge_key.is_empty()) {
                Some(key) => original.retain(|o| o.get(merge_key) != Some(key)),
                None => original.clear(),
            },
            Some(other) => {
                return Err(PatchError::BadDirective {
                    directive: other.to_string(),
                });
            }
        }
    }
    if replace {
        original.clear();
    }
    for item in rest {
        match item {
            Value::Object(p) if !merge_key.is_empty() => {
                let Some(key) = p.get(merge_key).cloned() else {
                    return Err(PatchError::MissingMergeKey {
                        element: Value::Object(p).to_string(),
                        merge_key: merge_key.to_string(),
                    });
                };
                match original.iter().position(|o| o.get(merge_key) == Some(&key)) {
                    Some(i) => {
                        let existing = match std::mem::take(&mut original[i]) {
                            Value::Object(o) => o,
                            _ => Map::new(),
                        };
                        original[i] = Value::Object(merge_map(existing, p, item_node)?);
                    }
                    None => original.push(Value::Object(merge_map(Map::new(), p, item_node)?)),
                }
            }
            other => {
                if !original.contains(&other) {
                    original.push(other);
                }
            }
        }
    }
    Ok(original)
}

/// Orders a merged list as `$setElementOrder` asks (apimachinery's `normalizeElementOrder`):
/// elements named in the order list follow it, the others keep their place relative to them
/// in the original list.
fn normalize_order(
    merged: Vec<Value>,
    order: &[Value],
    before: &[Value],
    merge_key: &str,
) -> Vec<Value> {
    let key_of = |v: &Value| -> Value {
        if merge_key.is_empty() {
            v.clone()
        } else {
            v.get(merge_key).cloned().unwrap_or(Value::Null)
        }
    };
    let index_in = |list: &[Value], v: &Value| -> Option<usize> {
        let key = key_of(v);
        list.iter().position(|x| key_of(x) == key)
    };
    let (mut in_patch, mut server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| index_in(order, v).is_some());
    in_patch.sort_by_key(|v| index_in(order, v));
    server_only.sort_by_key(|v| index_in(before, v).unwrap_or(usize::MAX));

    let mut out = Vec::with_capacity(in_patch.len() + server_only.len());
    let (mut left, mut right) = (
        server_only.into_iter().peekable(),
        in_patch.into_iter().peekable(),
    );
    loop {
        match (left.peek(), right.peek()) {
            (Some(l), Some(r)) => {
                let server_first = matches!(
                    (index_in(before, l), index_in(before, r)),
                    (Some(li), Some(ri)) if li < ri
                );
                let next = if server_first {
                    left.next()
                } else {
                    right.next()
                };
                out.extend(next);
            }
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    #[test]
    fn container_lists_merge_by_name() {
        let registry = Registry::builtin();
        let pods = registry.find("", "v1", "pods").unwrap();
        let original = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}});
        let merged = strategic_merge(&original, &patch, pods).unwrap();
        assert_eq!(
            merged["spec"]["containers"],
            json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])
        );
    }

    #[test]
    fn merge_keys_are_found_along_the_schema() {
        let registry = Registry::builtin();
        let deploy = registry.find("apps", "v1", "deployments").unwrap();
        let keys = merge_keys(deploy);
        let find = |path: &str| keys.iter().find(|(p, _)| p == path).map(|(_, m)| *m);
        assert_eq!(
            find("spec.template.spec.containers").map(|m| m.merge_key),
            Some("name")
        );
        assert_eq!(
            find("spec.template.spec.containers.ports").map(|m| m.merge_key),
            Some("containerPort")
        );
        assert_eq!(
            find("metadata.finalizers").map(|m| m.strategy),
            Some("merge")
        );
        assert_eq!(
            find("spec.strategy").map(|m| m.strategy),
            Some("retainKeys")
        );
        assert!(find("spec.template.spec.tolerations").is_none());
    }
}
