//! What the schema says about each node of an object, as server-side apply needs it: whether
//! a map is granular or atomic, whether a key is a declared struct field or a map entry, and
//! whether a list is atomic, a set (`v:` items) or associative (`k:` items by key fields).
//!
//! Built-in kinds follow their Kubernetes types: lists with a `merge` patch strategy are
//! associative on their merge key (or sets without one), with kube's own
//! `x-kubernetes-list-map-keys` where they differ ([`LIST_MAP_KEYS`]), and a few structs are
//! atomic ([`ATOMIC_STRUCTS`]). Custom resources follow their CRD's structural schema
//! (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`). Without
//! a schema, maps are granular and lists atomic, as kube deduces.

use serde_json::Value;

use crate::registry::ResourceInfo;
use crate::{schema, smp};

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// (type, field, key fields) of associative lists whose `x-kubernetes-list-map-keys` are more
/// than their patch merge key.
pub const LIST_MAP_KEYS: &[(&str, &str, &[&str])] = &[
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        &["containerPort", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        &["port", "protocol"],
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        &["topologyKey", "whenUnsatisfiable"],
    ),
];

/// Key fields with a default, used when a list item leaves them out (`protocol: TCP`).
const KEY_DEFAULTS: &[(&str, &str)] = &[("protocol", "TCP")];

/// Struct types kube marks `x-kubernetes-map-type: atomic`: owned and replaced as a whole.
pub const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.TopologySelectorTerm",
];

/// Optional struct fields Go holds by value (not through a pointer): kube's typed objects
/// always have them, empty at least, wherever their parent is. Required fields, and the
/// struct fields of a built-in kind's root (`metadata`, `spec`, `status`), are held too.
pub const VALUE_STRUCTS: &[(&str, &str)] = &[
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy"),
    ("io.k8s.api.apps.v1.ReplicaSetSpec", "template"),
    ("io.k8s.api.apps.v1.DaemonSetSpec", "updateStrategy"),
    ("io.k8s.api.apps.v1.StatefulSetSpec", "updateStrategy"),
    ("io.k8s.api.core.v1.PodTemplateSpec", "metadata"),
    ("io.k8s.api.core.v1.PodTemplateSpec", "spec"),
    ("io.k8s.api.batch.v1.JobTemplateSpec", "metadata"),
    ("io.k8s.api.batch.v1.JobTemplateSpec", "spec"),
    ("io.k8s.api.core.v1.Container", "resources"),
    ("io.k8s.api.core.v1.EphemeralContainer", "resources"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "resources"),
    ("io.k8s.api.core.v1.ServiceStatus", "loadBalancer"),
    ("io.k8s.api.core.v1.NodeStatus", "daemonEndpoints"),
    ("io.k8s.api.core.v1.NodeStatus", "nodeInfo"),
    ("io.k8s.api.core.v1.NodeDaemonEndpoints", "kubeletEndpoint"),
    ("io.k8s.api.core.v1.Event", "source"),
    ("io.k8s.api.events.v1.Event", "deprecatedSource"),
    ("io.k8s.api.events.v1.Event", "regarding"),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus",
        "acceptedNames",
    ),
];

/// How a list's items are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Owned and replaced as a whole.
    Atomic,
    /// Items are scalars, each owned on its own (`v:`).
    Set,
    /// Items are objects told apart by these key fields (`k:`).
    Map(Vec<String>),
}

#[derive(Debug, Clone, Copy)]
enum Source<'a> {
    /// A built-in type: its definition name (if named) and its schema.
    Builtin(Option<&'static str>, &'static Value),
    /// A node of a CRD's structural schema.
    Structural(&'a Value),
    /// No schema.
    Deduced,
}

/// The schema of one node of an object.
#[derive(Debug, Clone)]
pub struct TypeRef<'a> {
    source: Source<'a>,
    /// The list type, for a node holding a list (decided by the field holding it).
    list: ListType,
    /// Whether this node is the object's root (where a CRD's `metadata` is ObjectMeta).
    root: bool,
}

impl<'a> TypeRef<'a> {
    /// The root type of a resource's objects.
    pub fn of_resource(info: &'a ResourceInfo) -> TypeRef<'a> {
        let source = match info.custom.as_ref().and_then(|c| c.schema.as_ref()) {
            Some(schema) => Source::Structural(schema),
            None => match schema::schema_for(&info.group, &info.version, &info.kind) {
                Some(root) => builtin(root),
                None => Source::Deduced,
            },
        };
        TypeRef {
            source,
            list: ListType::Atomic,
            root: true,
        }
    }

    /// A type without a schema: granular maps, atomic lists.
    pub fn deduced() -> TypeRef<'static> {
        TypeRef {
            source: Source::Deduced,
            list: ListType::Atomic,
            root: false,
        }
    }

    /// A CRD structural schema node (for tests and callers holding one).
    pub fn structural(schema: &'a Value) -> TypeRef<'a> {
        TypeRef {
            source: Source::Structural(schema),
            list: ListType::Atomic,
            root: true,
        }
    }

    fn child(source: Source<'a>, list: ListType) -> TypeRef<'a> {
        TypeRef {
            source,
            list,
            root: false,
        }
    }

    /// The type of a map's `key`, and whether `key` is a declared struct field (rather than
    /// an entry of a map with free keys).
    pub fn field(&self, key: &str) -> (TypeRef<'a>, bool) {
        match self.source {
            Source::Builtin(name, schema_value) => {
                if let Some(child) = schema_value.get("properties").and_then(|p| p.get(key)) {
                    let list = builtin_list_type(name, key, child);
                    return (TypeRef::child(builtin(child), list), true);
                }
                match schema_value
                    .get("additionalProperties")
                    .filter(|a| a.is_object())
                {
                    Some(values) => (TypeRef::child(builtin(values), ListType::Atomic), false),
                    None => (TypeRef::deduced(), false),
                }
            }
            Source::Structural(schema_value) => {
                if self.root && key == "metadata" {
                    if let Some(meta) = schema::schemas().definitions.get(OBJECT_META) {
                        let source = Source::Builtin(Some(OBJECT_META), meta);
                        return (TypeRef::child(source, ListType::Atomic), true);
                    }
                }
                if let Some(child) = schema_value.get("properties").and_then(|p| p.get(key)) {
                    let list = structural_list_type(child);
                    return (TypeRef::child(Source::Structural(child), list), true);
                }
                match schema_value
                    .get("additionalProperties")
                    .filter(|a| a.is_object())
                {
                    Some(values) => {
                        let list = structural_list_type(values);
                        (TypeRef::child(Source::Structural(values), list), false)
                    }
                    None => (TypeRef::deduced(), false),
                }
            }
            Source::Deduced => (TypeRef::deduced(), false),
        }
    }

    /// Whether kube's typed objects hold the field `key` (of type `child`) wherever they hold
    /// this node, even when it is unset: Go fields without `omitempty` (approximated by the
    /// schema's `required`) and structs held by value ([`VALUE_STRUCTS`]). Such a field is
    /// never added or removed as a whole, only its contents. Custom resources, unstructured
    /// in kube, hold nothing; an object's `metadata` is never tracked itself.
    pub fn holds(&self, key: &str, child: &TypeRef<'_>) -> bool {
        if self.root && key == "metadata" {
            return true;
        }
        let Source::Builtin(name, schema_value) = self.source else {
            return false;
        };
        let required = schema_value
            .get("required")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|f| f.as_str() == Some(key)));
        required
            || (self.root && child.is_struct())
            || name.is_some_and(|n| VALUE_STRUCTS.contains(&(n, key)))
    }

    /// The type of a list's items.
    pub fn items(&self) -> TypeRef<'a> {
        match self.source {
            Source::Builtin(_, schema_value) => match schema_value.get("items") {
                Some(items) => TypeRef::child(builtin(items), ListType::Atomic),
                None => TypeRef::deduced(),
            },
            Source::Structural(schema_value) => match schema_value.get("items") {
                Some(items) => {
                    TypeRef::child(Source::Structural(items), structural_list_type(items))
                }
                None => TypeRef::deduced(),
            },
            Source::Deduced => TypeRef::deduced(),
        }
    }

    /// How the list at this node is merged.
    pub fn list_type(&self) -> &ListType {
        &self.list
    }

    /// Whether the map at this node is owned as a whole.
    pub fn atomic_map(&self) -> bool {
        match self.source {
            Source::Builtin(name, _) => name.is_some_and(|n| ATOMIC_STRUCTS.contains(&n)),
            Source::Structural(schema_value) => {
                schema_value
                    .get("x-kubernetes-map-type")
                    .and_then(Value::as_str)
                    == Some("atomic")
            }
            Source::Deduced => false,
        }
    }

    /// Whether the map at this node is a struct (declared fields) rather than a map with
    /// free keys.
    pub fn is_struct(&self) -> bool {
        match self.source {
            Source::Builtin(_, s) | Source::Structural(s) => s.get("properties").is_some(),
            Source::Deduced => false,
        }
    }

    /// The value a list item's key field takes when the item leaves it out.
    pub fn key_default(&self, key: &str) -> Option<Value> {
        match self.source {
            Source::Structural(schema_value) => schema_value
                .pointer(&format!("/items/properties/{key}/default"))
                .cloned(),
            Source::Builtin(..) => KEY_DEFAULTS
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| Value::String((*v).to_string())),
            Source::Deduced => None,
        }
    }
}

fn builtin(schema_value: &'static Value) -> Source<'static> {
    let (name, resolved) = schema::resolve_named(schema_value);
    // `Option<T>` fields may come as `anyOf: [T, null]`.
    if name.is_none()
        && let Some(Value::Array(options)) = resolved.get("anyOf")
        && let Some(first) = options
            .iter()
            .find(|o| o.get("type") != Some(&Value::from("null")))
    {
        let (name, inner) = schema::resolve_named(first);
        return Source::Builtin(name, inner);
    }
    Source::Builtin(name, resolved)
}

fn builtin_list_type(parent: Option<&'static str>, field: &str, child: &Value) -> ListType {
    let Some(parent) = parent else {
        return ListType::Atomic;
    };
    let is_list = schema::resolve(child).get("items").is_some()
        || schema::resolve(child).get("type").and_then(Value::as_str) == Some("array");
    if !is_list {
        return ListType::Atomic;
    }
    if let Some((_, _, keys)) = LIST_MAP_KEYS
        .iter()
        .find(|(t, f, _)| *t == parent && *f == field)
    {
        return ListType::Map(keys.iter().map(|k| (*k).to_string()).collect());
    }
    match smp::patch_meta(parent, field) {
        Some(meta) if meta.merges() && !meta.merge_key.is_empty() => {
            ListType::Map(vec![meta.merge_key.to_string()])
        }
        Some(meta) if meta.merges() => ListType::Set,
        _ => ListType::Atomic,
    }
}

fn structural_list_type(schema_value: &Value) -> ListType {
    match schema_value
        .get("x-kubernetes-list-type")
        .and_then(Value::as_str)
    {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            schema_value
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
        ),
        _ => ListType::Atomic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    #[test]
    fn built_in_lists_follow_the_kubernetes_types() {
        let registry = Registry::builtin();
        let deploy = registry.find("apps", "v1", "deployments").unwrap();
        let root = TypeRef::of_resource(deploy);
        let pod_spec = root.field("spec").0.field("template").0.field("spec").0;
        let containers = pod_spec.field("containers").0;
        assert_eq!(containers.list_type(), &ListType::Map(vec!["name".into()]));
        let ports = containers.items().field("ports").0;
        assert_eq!(
            ports.list_type(),
            &ListType::Map(vec!["containerPort".into(), "protocol".into()])
        );
        assert_eq!(ports.key_default("protocol"), Some(json!("TCP")));
        let args = containers.items().field("args").0;
        assert_eq!(args.list_type(), &ListType::Atomic);
        let finalizers = root.field("metadata").0.field("finalizers").0;
        assert_eq!(finalizers.list_type(), &ListType::Set);
        assert!(root.field("spec").0.field("selector").0.atomic_map());
        let (labels, declared) = root.field("metadata").0.field("labels");
        assert!(declared);
        assert!(!labels.is_struct());
        assert!(!labels.field("app").1);
    }

    #[test]
    fn custom_resources_follow_their_structural_schema() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"],
                      "items": {"type": "object", "properties": {"id": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ref": {"type": "object", "x-kubernetes-map-type": "atomic"}
        }}}});
        let root = TypeRef::structural(&schema);
        let spec = root.field("spec").0;
        assert_eq!(
            spec.field("items").0.list_type(),
            &ListType::Map(vec!["id".into()])
        );
        assert_eq!(spec.field("tags").0.list_type(), &ListType::Set);
        assert!(spec.field("ref").0.atomic_map());
        assert_eq!(
            root.field("metadata").0.field("finalizers").0.list_type(),
            &ListType::Set
        );
    }
}
