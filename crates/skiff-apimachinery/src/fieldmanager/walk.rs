//! The walks over objects that server-side apply is made of, each along the object's
//! [`TypeRef`]: the set of fields an object sets, merging an applied configuration into the
//! live object, removing items by path, and comparing two objects field by field.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::FieldManagerError;
use super::fieldset::FieldSet;
use super::path::{Path, PathElement};
use super::typeref::{ListType, TypeRef};

/// The path element of a list item: by its key fields, its value, or its index.
fn item_element(
    list: &TypeRef<'_>,
    index: usize,
    item: &Value,
    path: &[PathElement],
) -> Result<PathElement, FieldManagerError> {
    match list.list_type() {
        ListType::Atomic => Ok(PathElement::Index(index)),
        ListType::Set => Ok(PathElement::Value(item.clone())),
        ListType::Map(keys) => {
            let mut fields = Vec::with_capacity(keys.len());
            for key in keys {
                let value = match item.get(key) {
                    Some(value) if !value.is_null() => value.clone(),
                    _ => match list.key_default(key) {
                        Some(value) => value,
                        None => {
                            return Err(FieldManagerError::MissingListKey {
                                path: Path(path.to_vec()).to_string(),
                                index,
                                key: key.clone(),
                            });
                        }
                    },
                };
                fields.push((key.clone(), value));
            }
            Ok(PathElement::key(fields))
        }
    }
}

/// The items of a granular list with their path elements, first occurrence of each.
fn index_items<'v>(
    list: &TypeRef<'_>,
    items: &'v [Value],
    path: &[PathElement],
) -> Result<Vec<(PathElement, &'v Value)>, FieldManagerError> {
    let mut out: Vec<(PathElement, &Value)> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let element = item_element(list, index, item, path)?;
        if !out.iter().any(|(e, _)| *e == element) {
            out.push((element, item));
        }
    }
    Ok(out)
}

/// The fields an object sets (structured-merge-diff's `ToFieldSet`): its leaves, the items of
/// its granular lists and the entries of its maps with free keys.
pub fn field_set(value: &Value, ty: &TypeRef<'_>) -> Result<FieldSet, FieldManagerError> {
    let mut set = FieldSet::new();
    let mut path = Vec::new();
    collect_fields(value, ty, &mut path, &mut set)?;
    Ok(set)
}

fn collect_fields(
    value: &Value,
    ty: &TypeRef<'_>,
    path: &mut Vec<PathElement>,
    set: &mut FieldSet,
) -> Result<(), FieldManagerError> {
    match value {
        Value::Object(map) if !ty.atomic_map() => {
            for (key, child) in map {
                let (child_ty, declared) = ty.field(key);
                path.push(PathElement::Field(key.clone()));
                collect_fields(child, &child_ty, path, set)?;
                if !declared {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Value::Array(items) if *ty.list_type() != ListType::Atomic => {
            let item_ty = ty.items();
            for (element, item) in index_items(ty, items, path)? {
                path.push(element);
                collect_fields(item, &item_ty, path, set)?;
                set.insert(path);
                path.pop();
            }
        }
        _ => set.insert(path),
    }
    Ok(())
}

/// Merges an applied configuration into the live object: the configuration's leaves win,
/// maps merge key by key, associative lists and sets item by item, atomic lists and maps are
/// replaced.
pub fn merge(live: &Value, config: &Value, ty: &TypeRef<'_>) -> Result<Value, FieldManagerError> {
    let mut path = Vec::new();
    merge_at(live, config, ty, &mut path)
}

fn merge_at(
    live: &Value,
    config: &Value,
    ty: &TypeRef<'_>,
    path: &mut Vec<PathElement>,
) -> Result<Value, FieldManagerError> {
    match (live, config) {
        (Value::Object(live_map), Value::Object(config_map)) if !ty.atomic_map() => {
            let mut out = live_map.clone();
            for (key, config_value) in config_map {
                let merged = match live_map.get(key) {
                    Some(live_value) => {
                        let (child_ty, _) = ty.field(key);
                        path.push(PathElement::Field(key.clone()));
                        let merged = merge_at(live_value, config_value, &child_ty, path)?;
                        path.pop();
                        merged
                    }
                    None => config_value.clone(),
                };
                if merged.is_null() {
                    out.remove(key);
                } else {
                    out.insert(key.clone(), merged);
                }
            }
            Ok(Value::Object(out))
        }
        (Value::Array(live_items), Value::Array(config_items))
            if *ty.list_type() != ListType::Atomic =>
        {
            merge_list(live_items, config_items, ty, path).map(Value::Array)
        }
        (_, config) => Ok(config.clone()),
    }
}

/// Merges two granular lists: the configuration's items in its order, each merged with the
/// live item of the same key; live items it does not have keep their place relative to the
/// items both lists share.
fn merge_list(
    live: &[Value],
    config: &[Value],
    ty: &TypeRef<'_>,
    path: &mut Vec<PathElement>,
) -> Result<Vec<Value>, FieldManagerError> {
    let live = index_items(ty, live, path)?;
    let config = index_items(ty, config, path)?;
    let item_ty = ty.items();
    let in_config: HashSet<String> = config.iter().map(|(e, _)| e.encode()).collect();
    let mut out = Vec::with_capacity(live.len() + config.len());
    let mut next_live = 0;
    for (element, config_item) in &config {
        // Live-only items go as soon as they come up in the live order.
        while next_live < live.len() && !in_config.contains(&live[next_live].0.encode()) {
            out.push(live[next_live].1.clone());
            next_live += 1;
        }
        let live_position = live.iter().position(|(e, _)| e == element);
        if let Some(position) = live_position {
            // Live-only items that came before this shared one go first.
            while next_live < position {
                let (e, item) = &live[next_live];
                if !in_config.contains(&e.encode()) {
                    out.push((*item).clone());
                }
                next_live += 1;
            }
            next_live = next_live.max(position + 1);
            path.push(element.clone());
            out.push(merge_at(live[position].1, config_item, &item_ty, path)?);
            path.pop();
        } else {
            out.push((*config_item).clone());
        }
    }
    for (e, item) in live.iter().skip(next_live) {
        if !in_config.contains(&e.encode()) {
            out.push((*item).clone());
        }
    }
    Ok(out)
}

/// The object without the fields and items whose paths are in `remove`; maps and lists left
/// empty by the removal go too.
pub fn remove_items(
    value: &Value,
    remove: &FieldSet,
    ty: &TypeRef<'_>,
) -> Result<Value, FieldManagerError> {
    let mut path = Vec::new();
    remove_at(value, remove, ty, &mut path)
}

fn remove_at(
    value: &Value,
    remove: &FieldSet,
    ty: &TypeRef<'_>,
    path: &mut Vec<PathElement>,
) -> Result<Value, FieldManagerError> {
    match value {
        Value::Object(map) if !ty.atomic_map() => {
            let mut out = Map::new();
            for (key, child) in map {
                let element = PathElement::Field(key.clone());
                if remove.has(std::slice::from_ref(&element)) {
                    continue;
                }
                match remove.child(&element) {
                    Some(below) => {
                        let (child_ty, _) = ty.field(key);
                        path.push(element);
                        let kept = remove_at(child, below, &child_ty, path)?;
                        path.pop();
                        if !emptied(child, &kept) {
                            out.insert(key.clone(), kept);
                        }
                    }
                    None => {
                        out.insert(key.clone(), child.clone());
                    }
                }
            }
            Ok(Value::Object(out))
        }
        Value::Array(items) if *ty.list_type() != ListType::Atomic => {
            let item_ty = ty.items();
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items.iter().enumerate() {
                let element = item_element(ty, index, item, path)?;
                if remove.has(std::slice::from_ref(&element)) {
                    continue;
                }
                match remove.child(&element) {
                    Some(below) => {
                        path.push(element);
                        out.push(remove_at(item, below, &item_ty, path)?);
                        path.pop();
                    }
                    None => out.push(item.clone()),
                }
            }
            Ok(Value::Array(out))
        }
        other => Ok(other.clone()),
    }
}

/// Whether a removal left a non-empty map or list empty.
fn emptied(before: &Value, after: &Value) -> bool {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => !b.is_empty() && a.is_empty(),
        (Value::Array(b), Value::Array(a)) => !b.is_empty() && a.is_empty(),
        _ => false,
    }
}

/// What changed between two objects, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Paths only the new object has.
    pub added: FieldSet,
    /// Leaves both have, with different values.
    pub modified: FieldSet,
    /// Paths only the old object has.
    pub removed: FieldSet,
}

impl Comparison {
    /// Whether nothing changed.
    pub fn is_same(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// Compares two objects (structured-merge-diff's `Compare`): leaves are added, modified or
/// removed; so are list items and maps with free keys that appear or go as a whole.
pub fn compare(
    old: &Value,
    new: &Value,
    ty: &TypeRef<'_>,
) -> Result<Comparison, FieldManagerError> {
    let mut comparison = Comparison::default();
    let mut path = Vec::new();
    let root = Held {
        old: true,
        new: true,
    };
    compare_at(Some(old), Some(new), ty, root, &mut path, &mut comparison)?;
    Ok(comparison)
}

/// Whether kube's typed old and new objects hold a node even where the JSON leaves it out
/// ([`TypeRef::holds`]): its parent is there and Go keeps the field by value.
#[derive(Debug, Clone, Copy)]
struct Held {
    old: bool,
    new: bool,
}

/// Whether a node is a leaf for comparing: a scalar, an atomic map or list, two different
/// kinds of value, or containers empty (or absent) on both sides.
fn is_leaf(old: Option<&Value>, new: Option<&Value>, ty: &TypeRef<'_>) -> bool {
    let empty = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(l)) => l.is_empty(),
        Some(_) => false,
    };
    let shape = |v: Option<&Value>| match v {
        Some(Value::Object(_)) => Some(1),
        Some(Value::Array(_)) => Some(2),
        Some(_) => Some(0),
        None => None,
    };
    let (a, b) = (shape(old), shape(new));
    let kind = a.or(b).unwrap_or(0);
    if kind == 0 || (a.is_some() && b.is_some() && a != b) {
        return true;
    }
    if empty(old) && empty(new) {
        return true;
    }
    match kind {
        1 => ty.atomic_map(),
        _ => *ty.list_type() == ListType::Atomic,
    }
}

fn compare_at(
    old: Option<&Value>,
    new: Option<&Value>,
    ty: &TypeRef<'_>,
    held: Held,
    path: &mut Vec<PathElement>,
    out: &mut Comparison,
) -> Result<(), FieldManagerError> {
    if is_leaf(old, new, ty) {
        match (old, new) {
            (None, Some(_)) => out.added.insert(path),
            (Some(_), None) => out.removed.insert(path),
            (Some(a), Some(b)) if a != b => out.modified.insert(path),
            _ => {}
        }
        return Ok(());
    }
    match old.or(new) {
        Some(Value::Object(_)) => {
            let empty = Map::new();
            let old_map = old.and_then(Value::as_object).unwrap_or(&empty);
            let new_map = new.and_then(Value::as_object).unwrap_or(&empty);
            let mut keys: Vec<&String> = old_map.keys().chain(new_map.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let (child_ty, declared) = ty.field(key);
                let holds = declared && ty.holds(key, &child_ty);
                let child_held = Held {
                    old: holds && (old.is_some() || held.old),
                    new: holds && (new.is_some() || held.new),
                };
                path.push(PathElement::Field(key.clone()));
                compare_at(
                    old_map.get(key),
                    new_map.get(key),
                    &child_ty,
                    child_held,
                    path,
                    out,
                )?;
                path.pop();
            }
        }
        Some(Value::Array(_)) => {
            let none: Vec<Value> = Vec::new();
            let old_items = old.and_then(Value::as_array).unwrap_or(&none);
            let new_items = new.and_then(Value::as_array).unwrap_or(&none);
            let old_indexed = index_items(ty, old_items, path)?;
            let new_indexed = index_items(ty, new_items, path)?;
            let item_ty = ty.items();
            let unheld = Held {
                old: false,
                new: false,
            };
            for (element, old_item) in &old_indexed {
                let new_item = new_indexed.iter().find(|(e, _)| e == element).map(|p| p.1);
                path.push(element.clone());
                compare_at(Some(old_item), new_item, &item_ty, unheld, path, out)?;
                path.pop();
            }
            for (element, new_item) in &new_indexed {
                if old_indexed.iter().any(|(e, _)| e == element) {
                    continue;
                }
                path.push(element.clone());
                compare_at(None, Some(new_item), &item_ty, unheld, path, out)?;
                path.pop();
            }
        }
        _ => {}
    }
    // A container that appears or goes as a whole counts itself, unless kube's typed object
    // holds it anyway (a struct held by value, a list or map field without `omitempty`).
    if !path.is_empty() {
        match (old, new) {
            (None, Some(_)) if !held.old => out.added.insert(path),
            (Some(_), None) if !held.new => out.removed.insert(path),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    fn deployments() -> crate::registry::ResourceInfo {
        Registry::builtin()
            .find("apps", "v1", "deployments")
            .unwrap()
            .clone()
    }

    #[test]
    fn the_field_set_of_an_applied_deployment_is_what_kube_records() {
        let info = deployments();
        let ty = TypeRef::of_resource(&info);
        let config = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}
                ]}}
            }
        });
        let set = field_set(&config, &ty).unwrap();
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                            ".": {}, "f:containerPort": {}
                        }}
                    }}}}
                }
            })
        );
    }

    #[test]
    fn merge_goes_item_by_item_in_associative_lists_and_sets() {
        let info = deployments();
        let ty = TypeRef::of_resource(&info);
        let live = json!({
            "metadata": {"finalizers": ["a"], "labels": {"x": "1"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "side", "image": "busybox"},
                {"name": "web", "image": "nginx:1", "args": ["a", "b"]}
            ]}}}
        });
        let config = json!({
            "metadata": {"finalizers": ["b"], "labels": {"y": "2"}},
            "spec": {"template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:2", "args": ["c"]}
            ]}}}
        });
        let merged = merge(&live, &config, &ty).unwrap();
        assert_eq!(merged["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(merged["metadata"]["labels"], json!({"x": "1", "y": "2"}));
        assert_eq!(
            merged["spec"]["template"]["spec"]["containers"],
            json!([
                {"name": "side", "image": "busybox"},
                {"name": "web", "image": "nginx:2", "args": ["c"]}
            ])
        );
    }

    #[test]
    fn remove_items_drops_fields_items_and_what_they_leave_empty() {
        let info = deployments();
        let ty = TypeRef::of_resource(&info);
        let object = json!({
            "metadata": {"labels": {"x": "1"}, "finalizers": ["a", "b"]},
            "spec": {"replicas": 3, "paused": true}
        });
        let remove = FieldSet::from_fields_v1(&json!({
            "f:metadata": {"f:labels": {"f:x": {}}, "f:finalizers": {"v:\"a\"": {}}},
            "f:spec": {"f:paused": {}}
        }))
        .unwrap();
        let kept = remove_items(&object, &remove, &ty).unwrap();
        assert_eq!(
            kept,
            json!({"metadata": {"finalizers": ["b"]}, "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn compare_reports_leaves_and_new_maps_and_items() {
        let info = deployments();
        let ty = TypeRef::of_resource(&info);
        let old = json!({"spec": {"replicas": 1, "paused": true}});
        let new = json!({
            "metadata": {"labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web"}]}}}
        });
        let c = compare(&old, &new, &ty).unwrap();
        assert_eq!(
            c.added.to_fields_v1(),
            json!({
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:name": {}}
                }}}}
            })
        );
        assert_eq!(
            c.modified.to_fields_v1(),
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert_eq!(
            c.removed.to_fields_v1(),
            json!({"f:spec": {"f:paused": {}}})
        );
        assert!(compare(&new, &new, &ty).unwrap().is_same());
    }

    #[test]
    fn custom_resources_merge_by_their_schema_list_types() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "rules": {"type": "array", "x-kubernetes-list-type": "map",
                      "x-kubernetes-list-map-keys": ["host", "port"],
                      "items": {"type": "object", "properties": {
                          "host": {"type": "string"}, "port": {"type": "integer", "default": 80},
                          "path": {"type": "string"}}}},
            "args": {"type": "array", "items": {"type": "string"}}
        }}}});
        let ty = TypeRef::structural(&schema);
        let live = json!({"spec": {
            "rules": [{"host": "a", "port": 80, "path": "/"}, {"host": "b", "port": 80}],
            "args": ["x", "y"]
        }});
        let config = json!({"spec": {"rules": [{"host": "a", "path": "/v2"}], "args": ["z"]}});
        let merged = merge(&live, &config, &ty).unwrap();
        assert_eq!(
            merged["spec"],
            json!({
                "rules": [{"host": "a", "port": 80, "path": "/v2"}, {"host": "b", "port": 80}],
                "args": ["z"]
            })
        );
        assert_eq!(
            field_set(&config, &ty).unwrap().to_fields_v1(),
            json!({"f:spec": {"f:args": {}, "f:rules": {
                "k:{\"host\":\"a\",\"port\":80}": {".": {}, "f:host": {}, "f:path": {}}
            }}})
        );
    }

    #[test]
    fn a_list_item_without_its_key_is_an_error() {
        let info = deployments();
        let ty = TypeRef::of_resource(&info);
        let config = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let err = field_set(&config, &ty).unwrap_err();
        assert!(
            err.to_string().contains(".spec.template.spec.containers"),
            "{err}"
        );
    }
}
