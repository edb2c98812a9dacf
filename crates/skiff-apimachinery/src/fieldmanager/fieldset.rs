//! Sets of field paths (structured-merge-diff's `fieldpath.Set`) and their `FieldsV1` form:
//! a JSON object whose keys are path elements (`f:spec`, `k:{"name":"web"}` ...), `{}` for
//! a path in the set, and `".": {}` where a path with children is itself in the set.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::FieldManagerError;
use super::path::{Path, PathElement};

/// A set of paths, as a tree: each node says whether the path to it is in the set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// Whether no path is in the set.
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.values().all(FieldSet::is_empty)
    }

    /// Adds a path.
    pub fn insert(&mut self, path: &[PathElement]) {
        match path.split_first() {
            None => self.member = true,
            Some((first, rest)) => self.children.entry(first.clone()).or_default().insert(rest),
        }
    }

    /// Whether the path is in the set.
    pub fn has(&self, path: &[PathElement]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((first, rest)) => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// The paths under `element`, relative to it.
    pub fn child(&self, element: &PathElement) -> Option<&FieldSet> {
        self.children.get(element)
    }

    /// Paths in either set.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.member |= other.member;
        for (element, child) in &other.children {
            let merged = match out.children.get(element) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(element.clone(), merged);
        }
        out
    }

    /// Paths in this set and not in `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && !other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            let rest = match other.children.get(element) {
                Some(theirs) => child.difference(theirs),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(element.clone(), rest);
            }
        }
        out
    }

    /// Paths in both sets.
    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet {
            member: self.member && other.member,
            children: BTreeMap::new(),
        };
        for (element, child) in &self.children {
            if let Some(theirs) = other.children.get(element) {
                let both = child.intersection(theirs);
                if !both.is_empty() {
                    out.children.insert(element.clone(), both);
                }
            }
        }
        out
    }

    /// Every path in the set, sorted.
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        let mut prefix = Vec::new();
        self.collect(&mut prefix, &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        if self.member {
            out.push(Path(prefix.clone()));
        }
        for (element, child) in &self.children {
            prefix.push(element.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The set as `fieldsV1`.
    pub fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        if self.member && !self.children.is_empty() {
            map.insert(".".into(), Value::Object(Map::new()));
        }
        for (element, child) in &self.children {
            if !child.is_empty() {
                map.insert(element.encode(), child.to_fields_v1());
            }
        }
        Value::Object(map)
    }

    /// Reads `fieldsV1`.
    pub fn from_fields_v1(value: &Value) -> Result<FieldSet, FieldManagerError> {
        let mut set = FieldSet::new();
        set.read(value)?;
        // The root is never a member of its own.
        set.member = false;
        Ok(set)
    }

    fn read(&mut self, value: &Value) -> Result<(), FieldManagerError> {
        let Value::Object(map) = value else {
            return Err(FieldManagerError::BadFieldsV1 {
                found: value.to_string(),
            });
        };
        if map.is_empty() {
            self.member = true;
        }
        for (key, child) in map {
            if key == "." {
                self.member = true;
                continue;
            }
            let element = PathElement::decode(key)?;
            self.children.entry(element).or_default().read(child)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str) -> PathElement {
        PathElement::Field(name.into())
    }

    fn sample() -> Value {
        json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}
                }}}
            }
        })
    }

    #[test]
    fn fields_v1_round_trips() {
        let set = FieldSet::from_fields_v1(&sample()).unwrap();
        assert_eq!(set.to_fields_v1(), sample());
        assert!(set.has(&[field("spec"), field("replicas")]));
        assert!(set.has(&[field("metadata"), field("labels")]));
        assert!(!set.has(&[field("spec")]));
        let paths: Vec<String> = set.paths().iter().map(ToString::to_string).collect();
        assert_eq!(
            paths,
            [
                ".metadata.labels",
                ".metadata.labels.app",
                ".spec.replicas",
                r#".spec.template.spec.containers[name="web"]"#,
                r#".spec.template.spec.containers[name="web"].image"#,
                r#".spec.template.spec.containers[name="web"].name"#,
            ]
        );
        assert!(FieldSet::from_fields_v1(&json!({"f:a": 1})).is_err());
        assert!(FieldSet::from_fields_v1(&json!({"zz": {}})).is_err());
    }

    #[test]
    fn union_difference_and_intersection_work_per_path() {
        let mut a = FieldSet::new();
        a.insert(&[field("spec"), field("replicas")]);
        a.insert(&[field("spec"), field("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[field("spec"), field("replicas")]);
        b.insert(&[field("metadata"), field("labels")]);

        let union = a.union(&b);
        assert_eq!(union.paths().len(), 3);
        let difference = a.difference(&b);
        assert_eq!(
            difference.to_fields_v1(),
            json!({"f:spec": {"f:paused": {}}})
        );
        let both = a.intersection(&b);
        assert_eq!(both.to_fields_v1(), json!({"f:spec": {"f:replicas": {}}}));
        assert!(a.difference(&a).is_empty());
        assert_eq!(a.difference(&a).to_fields_v1(), json!({}));
    }

    #[test]
    fn a_member_with_children_keeps_its_dot() {
        let mut set = FieldSet::new();
        set.insert(&[field("data")]);
        set.insert(&[field("data"), field("x")]);
        assert_eq!(set.to_fields_v1(), json!({"f:data": {".": {}, "f:x": {}}}));
        let mut only_child = FieldSet::new();
        only_child.insert(&[field("data"), field("x")]);
        assert_eq!(
            set.difference(&only_child).to_fields_v1(),
            json!({"f:data": {}})
        );
    }
}
