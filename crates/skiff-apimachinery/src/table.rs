//! Server-side printing: objects as a `meta.k8s.io/v1` `Table`, the answer to
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` that `kubectl get` asks for.
//!
//! Built-in kinds get the columns kube-apiserver's printers give them (priority 1 columns are
//! the ones only `-o wide` shows; the server always sends them, like kube-apiserver, whose
//! printers run in wide mode). Kinds without a printer get kube-apiserver's default table
//! (`NAME`, `CREATED AT`). Custom resources use their CRD's `additionalPrinterColumns` through
//! [`to_table_with_columns`].

mod certificates;
mod cluster;
mod pod;
mod printers;

use std::time::SystemTime;

use serde_json::{Value, json};

use crate::registry::ResourceInfo;
use crate::time::{age_since, format_rfc3339, parse_rfc3339};

/// What each row carries besides its cells (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (kube-apiserver's default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Reads the `includeObject` query parameter (`None`, `Metadata`, `Object`).
    pub fn parse(s: &str) -> Option<IncludeObject> {
        match s {
            "None" => Some(IncludeObject::None),
            "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// One column of a built-in printer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Column {
    pub name: &'static str,
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    pub priority: i64,
}

/// A column of a custom resource (`additionalPrinterColumns` in a CRD version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    /// Header, e.g. `Replicas`.
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub type_: String,
    /// Simple JSONPath into the object, e.g. `.spec.replicas`.
    pub json_path: String,
    /// Human-readable description.
    pub description: String,
    /// 0 shows by default; higher shows only with `-o wide`.
    pub priority: i64,
    /// Optional format (`int32`, `name`, `date-time` ...).
    pub format: String,
}

impl PrinterColumn {
    /// The `Age` column a CRD version gets when it declares none.
    pub fn age() -> PrinterColumn {
        PrinterColumn {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            description: String::new(),
            priority: 0,
            format: String::new(),
        }
    }

    /// Reads one entry of a CRD version's `additionalPrinterColumns`.
    pub fn from_crd(column: &Value) -> Option<PrinterColumn> {
        let text = |key: &str| {
            column
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let name = text("name");
        let json_path = text("jsonPath");
        if name.is_empty() || json_path.is_empty() {
            return None;
        }
        Some(PrinterColumn {
            name,
            type_: text("type"),
            json_path,
            description: text("description"),
            priority: column.get("priority").and_then(Value::as_i64).unwrap_or(0),
            format: text("format"),
        })
    }

    /// The columns of a CRD version object (`spec.versions[]` entry): its
    /// `additionalPrinterColumns`, or `Age` when it declares none.
    pub fn for_crd_version(version: &Value) -> Vec<PrinterColumn> {
        match version
            .get("additionalPrinterColumns")
            .and_then(Value::as_array)
        {
            Some(columns) if !columns.is_empty() => {
                columns.iter().filter_map(PrinterColumn::from_crd).collect()
            }
            _ => vec![PrinterColumn::age()],
        }
    }
}

const NAME_DESCRIPTION: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

const DEFAULT_COLUMNS: &[Column] = &[
    Column {
        name: "Name",
        type_: "string",
        format: "name",
        description: NAME_DESCRIPTION,
        priority: 0,
    },
    Column {
        name: "Created At",
        type_: "date",
        format: "",
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.",
        priority: 0,
    },
];

fn default_cells(obj: &Value, _now: SystemTime) -> Vec<Value> {
    let created = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .map(format_rfc3339)
        .unwrap_or_default();
    vec![json!(name_of(obj)), json!(created)]
}

pub(crate) fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Converts objects of a resource to a `meta.k8s.io/v1` `Table`. `metadata.resourceVersion` (and
/// `continue`) are left for the caller to set.
pub fn to_table(
    info: &ResourceInfo,
    objects: &[Value],
    include: IncludeObject,
    now: SystemTime,
) -> Value {
    let (columns, cells): (&[Column], printers::CellsFn) =
        printers::printer_for(&info.group, &info.kind).unwrap_or((DEFAULT_COLUMNS, default_cells));
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows = objects
        .iter()
        .map(|obj| {
            let mut row = json!({"cells": cells(obj, now)});
            attach(&mut row, obj, include);
            if let Some(conditions) = printers::row_conditions(&info.kind, obj) {
                row["conditions"] = conditions;
            }
            row
        })
        .collect();
    table(definitions, rows)
}

/// Converts custom resources to a `Table` with their CRD's printer columns, after the `Name`
/// column every table starts with.
pub fn to_table_with_columns(
    columns: &[PrinterColumn],
    objects: &[Value],
    include: IncludeObject,
    now: SystemTime,
) -> Value {
    let mut definitions = vec![json!({
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": NAME_DESCRIPTION,
        "priority": 0,
    })];
    definitions.extend(columns.iter().map(|c| {
        json!({
            "name": c.name,
            "type": c.type_,
            "format": c.format,
            "description": c.description,
            "priority": c.priority,
        })
    }));
    let rows = objects
        .iter()
        .map(|obj| {
            let mut cells = vec![json!(name_of(obj))];
            cells.extend(columns.iter().map(|c| custom_cell(c, obj, now)));
            let mut row = json!({"cells": cells});
            attach(&mut row, obj, include);
            row
        })
        .collect();
    table(definitions, rows)
}

fn custom_cell(column: &PrinterColumn, obj: &Value, now: SystemTime) -> Value {
    let Some(value) = evaluate_json_path(obj, &column.json_path) else {
        return Value::Null;
    };
    match column.type_.as_str() {
        "integer" => value
            .as_i64()
            .or_else(|| value.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |n| json!(n)),
        "number" => value.as_f64().map_or(Value::Null, |n| json!(n)),
        "boolean" => value.as_bool().map_or(Value::Null, |b| json!(b)),
        "date" => value
            .as_str()
            .map_or(Value::Null, |s| json!(age_since(Some(s), now))),
        _ => match value {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

/// Evaluates a simple JSONPath (`.spec.replicas`, `{.status.phase}`, `.spec.ports[0].port`,
/// `.metadata.labels.app\.kubernetes\.io/name`) against an object.
pub fn evaluate_json_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let path = path.trim();
    let path = path
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or(path);
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut current = obj;
    for segment in split_path(path)? {
        current = match segment {
            Segment::Key(key) => current.as_object()?.get(&key)?,
            Segment::Index(i) => current.as_array()?.get(i)?,
        };
    }
    Some(current)
}

enum Segment {
    Key(String),
    Index(usize),
}

fn split_path(path: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    let mut chars = path.chars().peekable();
    let mut key = String::new();
    let flush = |key: &mut String, segments: &mut Vec<Segment>| {
        if !key.is_empty() {
            segments.push(Segment::Key(std::mem::take(key)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => key.push(chars.next()?),
            '.' => flush(&mut key, &mut segments),
            '[' => {
                flush(&mut key, &mut segments);
                let mut inner = String::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    inner.push(c);
                }
                let inner = inner.trim();
                if let Ok(i) = inner.parse::<usize>() {
                    segments.push(Segment::Index(i));
                } else {
                    let quoted = inner.trim_matches(|c| c == '\'' || c == '"');
                    segments.push(Segment::Key(quoted.to_string()));
                }
            }
            _ => key.push(c),
        }
    }
    flush(&mut key, &mut segments);
    Some(segments)
}

fn attach(row: &mut Value, obj: &Value, include: IncludeObject) {
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
            });
        }
        IncludeObject::Object => row["object"] = obj.clone(),
    }
}

fn table(definitions: Vec<Value>, rows: Vec<Value>) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn now() -> SystemTime {
        parse_rfc3339("2024-01-01T01:00:00Z").unwrap()
    }

    #[test]
    fn a_table_has_kind_columns_and_partial_metadata_rows() {
        let registry = Registry::builtin();
        let cm = registry.find("", "v1", "configmaps").unwrap();
        let obj = json!({
            "metadata": {"name": "cfg", "namespace": "default", "creationTimestamp": "2024-01-01T00:58:00Z"},
            "data": {"a": "1", "b": "2"},
            "binaryData": {"c": "AA=="}
        });
        let t = to_table(cm, &[obj], IncludeObject::Metadata, now());
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        let names: Vec<_> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["Name", "Data", "Age"]);
        assert_eq!(t["rows"][0]["cells"], json!(["cfg", 3, "2m"]));
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["namespace"], "default");
    }

    #[test]
    fn kinds_without_a_printer_get_name_and_created_at() {
        let registry = Registry::builtin();
        let crd = registry
            .find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
            .unwrap();
        let obj = json!({"metadata": {"name": "widgets.example.com", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        let t = to_table(crd, &[obj], IncludeObject::None, now());
        assert_eq!(t["columnDefinitions"][1]["name"], "Created At");
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["widgets.example.com", "2024-01-01T00:00:00Z"])
        );
        assert!(t["rows"][0].get("object").is_none());
    }

    #[test]
    fn custom_columns_evaluate_simple_json_paths() {
        let crd_version = json!({"additionalPrinterColumns": [
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1},
            {"name": "First Port", "type": "integer", "jsonPath": ".spec.ports[0].port"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]});
        let columns = PrinterColumn::for_crd_version(&crd_version);
        let obj = json!({
            "metadata": {"name": "w", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "ports": [{"port": 80}]}
        });
        let t = to_table_with_columns(
            &columns,
            std::slice::from_ref(&obj),
            IncludeObject::Object,
            now(),
        );
        assert_eq!(t["rows"][0]["cells"], json!(["w", 3, null, 80, "60m"]));
        assert_eq!(t["columnDefinitions"][2]["priority"], 1);
        assert_eq!(t["rows"][0]["object"], obj);
        assert_eq!(
            PrinterColumn::for_crd_version(&json!({})),
            vec![PrinterColumn::age()]
        );
    }

    #[test]
    fn json_paths_accept_braces_brackets_and_escaped_dots() {
        let obj = json!({"metadata": {"labels": {"app.kubernetes.io/name": "web"}}});
        assert_eq!(
            evaluate_json_path(&obj, r"{.metadata.labels.app\.kubernetes\.io/name}"),
            Some(&json!("web"))
        );
        assert_eq!(
            evaluate_json_path(&obj, ".metadata.labels['app.kubernetes.io/name']"),
            Some(&json!("web"))
        );
        assert_eq!(evaluate_json_path(&obj, ".spec.missing"), None);
    }

    #[test]
    fn include_object_parses_the_query_parameter() {
        assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
        assert_eq!(IncludeObject::parse("None"), Some(IncludeObject::None));
        assert_eq!(IncludeObject::parse("bogus"), None);
    }
}
