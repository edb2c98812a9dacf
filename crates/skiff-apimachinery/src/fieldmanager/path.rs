//! Path elements of a field set, as structured-merge-diff names them: a struct field or map
//! key (`f:name`), an associative list item by its keys (`k:{"name":"web"}`), a set item by
//! its value (`v:"a"`), an atomic list's item by index (`i:0`).

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Map, Value};

use super::FieldManagerError;

/// One step of a path into an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathElement {
    /// A field of a struct or a key of a map (`f:replicas`).
    Field(String),
    /// An item of an associative list, by its key fields, sorted by name
    /// (`k:{"containerPort":80,"protocol":"TCP"}`).
    Key(Vec<(String, Value)>),
    /// An item of a set-like list, by its value (`v:"example.com/finalizer"`).
    Value(Value),
    /// An item of a list by position (`i:0`).
    Index(usize),
}

impl PathElement {
    /// The key of an associative list item from its key fields (sorted by name).
    pub fn key(mut fields: Vec<(String, Value)>) -> PathElement {
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        PathElement::Key(fields)
    }

    /// The `fieldsV1` key of this element (`f:name`, `k:{...}`, `v:...`, `i:N`).
    pub fn encode(&self) -> String {
        match self {
            PathElement::Field(name) => format!("f:{name}"),
            PathElement::Key(fields) => {
                let map: Map<String, Value> = fields.iter().cloned().collect();
                format!("k:{}", Value::Object(map))
            }
            PathElement::Value(value) => format!("v:{value}"),
            PathElement::Index(index) => format!("i:{index}"),
        }
    }

    /// Reads a `fieldsV1` key (not `.`).
    pub fn decode(text: &str) -> Result<PathElement, FieldManagerError> {
        let bad = || FieldManagerError::BadPathElement {
            element: text.to_string(),
        };
        let (kind, rest) = text.split_once(':').ok_or_else(bad)?;
        match kind {
            "f" => Ok(PathElement::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(map)) => Ok(PathElement::key(map.into_iter().collect())),
                _ => Err(bad()),
            },
            "v" => serde_json::from_str(rest)
                .map(PathElement::Value)
                .map_err(|_| bad()),
            "i" => rest.parse().map(PathElement::Index).map_err(|_| bad()),
            _ => Err(bad()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            PathElement::Field(_) => 0,
            PathElement::Key(_) => 1,
            PathElement::Value(_) => 2,
            PathElement::Index(_) => 3,
        }
    }
}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (PathElement::Field(a), PathElement::Field(b)) => a.cmp(b),
            (PathElement::Index(a), PathElement::Index(b)) => a.cmp(b),
            (a, b) if a.rank() == b.rank() => a.encode().cmp(&b.encode()),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// How structured-merge-diff prints a path element: `.replicas`, `[name="web"]`, `[="a"]`,
/// `[0]`.
impl fmt::Display for PathElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathElement::Field(name) => write!(f, ".{name}"),
            PathElement::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                write!(f, "[{}]", parts.join(","))
            }
            PathElement::Value(value) => write!(f, "[={value}]"),
            PathElement::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// A path from the object's root, printed as kube prints conflicts
/// (`.spec.template.spec.containers[name="web"].image`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for element in &self.0 {
            write!(f, "{element}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn elements_encode_and_decode_as_kube_writes_them() {
        let key = PathElement::key(vec![
            ("protocol".into(), json!("TCP")),
            ("containerPort".into(), json!(80)),
        ]);
        assert_eq!(key.encode(), r#"k:{"containerPort":80,"protocol":"TCP"}"#);
        for text in [
            "f:replicas",
            r#"k:{"containerPort":80,"protocol":"TCP"}"#,
            r#"v:"example.com/x""#,
            "i:3",
        ] {
            assert_eq!(PathElement::decode(text).unwrap().encode(), text);
        }
        assert!(PathElement::decode("x:1").is_err());
        assert!(PathElement::decode("k:[1]").is_err());
    }

    #[test]
    fn paths_print_as_in_conflict_messages() {
        let path = Path(vec![
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::key(vec![("name".into(), json!("web"))]),
            PathElement::Field("image".into()),
        ]);
        assert_eq!(path.to_string(), r#".spec.containers[name="web"].image"#);
        let value = Path(vec![
            PathElement::Field("metadata".into()),
            PathElement::Field("finalizers".into()),
            PathElement::Value(json!("a")),
        ]);
        assert_eq!(value.to_string(), r#".metadata.finalizers[="a"]"#);
    }
}
