//! The OpenAPI documents kube-apiserver publishes: `/openapi/v3` (an index of group versions),
//! `/openapi/v3/apis/{group}/{version}` and `/openapi/v3/api/v1` (paths and schemas), and
//! `/openapi/v2` (one swagger document).
//!
//! kubectl reads them for `explain` (schemas found by `x-kubernetes-group-version-kind`), for
//! client-side apply (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`) and to learn
//! that PATCH takes `fieldValidation` and `dryRun` (the parameters of each PATCH operation).
//! Schemas come from `k8s-openapi`, named as Kubernetes names them; references with siblings
//! become `allOf: [{$ref}]` as in kube-apiserver's v3 documents.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceInfo};
use crate::schema::{self, REF_PREFIX};
use crate::smp::{PATCH_METADATA, patch_meta};

/// The Kubernetes version the documents describe.
const INFO_VERSION: &str = "v1.33.0";

/// The URL path of a group version's document, without `/openapi/v3/` (`api/v1`,
/// `apis/apps/v1`).
pub fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The schema name Kubernetes gives a kind: the built-in one, or the reversed group for custom
/// resources (`com.example.v1.Widget`).
pub fn definition_name(info: &ResourceInfo) -> String {
    match schema::schema_name(&info.group, &info.version, &info.kind) {
        Some(name) => name.to_string(),
        None => {
            let reversed: Vec<&str> = info.group.split('.').rev().collect();
            format!("{}.{}.{}", reversed.join("."), info.version, info.kind)
        }
    }
}

/// `GET /openapi/v3`: every group version with the URL of its document, whose `hash` changes
/// when the document does.
pub fn openapi_v3_index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in registry.groups() {
        for version in versions {
            let doc = openapi_v3_for_group_version(registry, &group, &version);
            let path = group_version_path(&group, &version);
            paths.insert(
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", content_hash(&doc))}),
            );
        }
    }
    json!({ "paths": paths })
}

/// A stable hash of a document (FNV-1a, 64 bits, as 16 upper-case hex digits).
pub fn content_hash(doc: &Value) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in doc.to_string().bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016X}")
}

/// `GET /openapi/v3/apis/{group}/{version}` (or `/openapi/v3/api/v1`): the paths of the group
/// version's resources and the schemas they use.
pub fn openapi_v3_for_group_version(registry: &Registry, group: &str, version: &str) -> Value {
    let resources: Vec<&ResourceInfo> = registry.in_group_version(group, version).collect();
    let mut schemas = Map::new();
    let mut needed = BTreeSet::new();
    for info in &resources {
        let name = definition_name(info);
        match schema::schema_for(&info.group, &info.version, &info.kind) {
            Some(_) => {
                needed.insert(name);
            }
            None => {
                schemas.insert(name, custom_resource_schema_v3(info));
                needed.insert("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".to_string());
            }
        }
    }
    for meta in ["Status", "DeleteOptions", "Patch"] {
        needed.insert(format!("io.k8s.apimachinery.pkg.apis.meta.v1.{meta}"));
    }
    for name in closure(needed) {
        if let Some(def) = schema::schemas().definitions.get(&name) {
            schemas.insert(name.clone(), decorate(&name, def, registry, Style::V3));
        }
    }
    let mut paths = Map::new();
    for info in &resources {
        add_paths(&mut paths, info, REF_PREFIX, Style::V3);
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// `GET /openapi/v2`: one swagger 2.0 document with every resource.
pub fn openapi_v2(registry: &Registry) -> Value {
    const V2_PREFIX: &str = "#/definitions/";
    let mut definitions = Map::new();
    let mut needed = BTreeSet::new();
    for info in registry.all() {
        match schema::schema_for(&info.group, &info.version, &info.kind) {
            Some(_) => {
                needed.insert(definition_name(info));
            }
            None => {
                definitions.insert(
                    definition_name(info),
                    custom_resource_schema(info, V2_PREFIX),
                );
            }
        }
    }
    for name in closure(needed) {
        if let Some(def) = schema::schemas().definitions.get(&name) {
            let decorated = decorate(&name, def, registry, Style::V2);
            definitions.insert(name.clone(), rewrite_refs(decorated, REF_PREFIX, V2_PREFIX));
        }
    }
    let mut paths = Map::new();
    for info in registry.all() {
        add_paths(&mut paths, info, V2_PREFIX, Style::V2);
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": INFO_VERSION},
        "paths": paths,
        "definitions": definitions,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Style {
    V2,
    V3,
}

/// Every definition reachable from `roots` through `$ref`s.
fn closure(roots: BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = roots.into_iter().collect();
    while let Some(name) = stack.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(def) = schema::schemas().definitions.get(&name) {
            collect_refs(def, &mut stack);
        }
    }
    seen
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(name) = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(REF_PREFIX))
            {
                out.push(name.to_string());
            }
            map.values().for_each(|v| collect_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn rewrite_refs(value: Value, from: &str, to: &str) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("$ref", Value::String(r)) => match r.strip_prefix(from) {
                            Some(name) => Value::String(format!("{to}{name}")),
                            None => Value::String(r),
                        },
                        (_, v) => rewrite_refs(v, from, to),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| rewrite_refs(v, from, to))
                .collect(),
        ),
        other => other,
    }
}

/// A definition with Kubernetes' extensions: group-version-kind for kinds, patch metadata on
/// properties, and (v3) references with siblings wrapped in `allOf`.
fn decorate(name: &str, def: &Value, registry: &Registry, style: Style) -> Value {
    let mut def = def.clone();
    let Some(map) = def.as_object_mut() else {
        return def;
    };
    let gvks: Vec<Value> = registry
        .all()
        .iter()
        .filter(|r| schema::schema_name(&r.group, &r.version, &r.kind) == Some(name))
        .map(|r| json!({"group": r.group, "version": r.version, "kind": r.kind}))
        .collect();
    let gvks = if gvks.is_empty() {
        schema::schemas()
            .kinds
            .iter()
            .filter(|k| k.name == name)
            .map(|k| json!({"group": k.group, "version": k.version, "kind": k.kind}))
            .collect()
    } else {
        gvks
    };
    if !gvks.is_empty() {
        map.insert("x-kubernetes-group-version-kind".into(), Value::Array(gvks));
    }
    if let Some(Value::Object(properties)) = map.get_mut("properties") {
        for (field, property) in properties.iter_mut() {
            if let (Some(meta), Some(p)) = (patch_meta(name, field), property.as_object_mut()) {
                p.insert("x-kubernetes-patch-strategy".into(), json!(meta.strategy));
                if !meta.merge_key.is_empty() {
                    p.insert("x-kubernetes-patch-merge-key".into(), json!(meta.merge_key));
                }
            }
            if style == Style::V3 {
                wrap_ref(property);
            }
        }
    }
    def
}

/// `{$ref, description}` becomes `{allOf: [{$ref}], description, default: {}}` as kube-apiserver
/// writes object references in v3.
fn wrap_ref(property: &mut Value) {
    let Some(map) = property.as_object_mut() else {
        return;
    };
    if map.len() > 1 {
        if let Some(reference) = map.remove("$ref") {
            map.insert("allOf".into(), json!([{ "$ref": reference }]));
            map.entry("default").or_insert_with(|| json!({}));
        }
    }
    if let Some(items) = map.get_mut("items") {
        wrap_ref(items);
    }
    if let Some(values) = map.get_mut("additionalProperties") {
        wrap_ref(values);
    }
}

/// A custom resource in OpenAPI v3: its CRD's schema (for `kubectl explain`), with the type
/// and object metadata every object has; the open schema when the CRD gives none. (Swagger 2.0
/// keeps the open schema: kube-apiserver rewrites CRD schemas for it, which Skiff does not.)
fn custom_resource_schema_v3(info: &ResourceInfo) -> Value {
    let open = custom_resource_schema(info, REF_PREFIX);
    let Some(mut published) = info
        .custom
        .as_ref()
        .and_then(|c| c.schema.clone())
        .filter(Value::is_object)
    else {
        return open;
    };
    published["x-kubernetes-group-version-kind"] = open["x-kubernetes-group-version-kind"].clone();
    if !published.get("properties").is_some_and(Value::is_object) {
        published["properties"] = json!({});
    }
    for key in ["apiVersion", "kind", "metadata"] {
        published["properties"][key] = open["properties"][key].clone();
    }
    published
}

fn custom_resource_schema(info: &ResourceInfo, prefix: &str) -> Value {
    json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "x-kubernetes-group-version-kind": [{"group": info.group, "version": info.version, "kind": info.kind}],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"$ref": format!("{prefix}io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")},
        },
    })
}

fn query(name: &str, description: &str, type_: &str, style: Style) -> Value {
    match style {
        Style::V3 => json!({
            "name": name, "in": "query", "description": description,
            "schema": {"type": type_, "uniqueItems": true},
        }),
        Style::V2 => json!({
            "name": name, "in": "query", "description": description,
            "type": type_, "uniqueItems": true,
        }),
    }
}

fn path_param(name: &str, style: Style) -> Value {
    match style {
        Style::V3 => {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
        }
        Style::V2 => json!({"name": name, "in": "path", "required": true, "type": "string"}),
    }
}

fn write_params(style: Style) -> Vec<Value> {
    vec![
        query(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
            "string",
            style,
        ),
        query(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
            "string",
            style,
        ),
        query(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn, Strict.",
            "string",
            style,
        ),
    ]
}

fn operation(
    info: &ResourceInfo,
    action: &str,
    id_verb: &str,
    params: Vec<Value>,
    prefix: &str,
    style: Style,
    body: bool,
) -> Value {
    let target = definition_name(info);
    let reference = json!({ "$ref": format!("{prefix}{target}") });
    let mut op = json!({
        "operationId": format!("{id_verb}{}{}", info.kind, info.version),
        "tags": [group_version_path(&info.group, &info.version).replace('/', "_")],
        "parameters": params,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
    });
    match style {
        Style::V3 => {
            op["responses"] = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
            if body {
                // Custom resources take no strategic merge patch (kube answers 415): kubectl
                // apply reads this list to choose between it and a JSON merge patch.
                let types: &[&str] = if action == "patch" && info.custom.is_some() {
                    &[
                        "application/json-patch+json",
                        "application/merge-patch+json",
                        "application/apply-patch+yaml",
                    ]
                } else if action == "patch" {
                    &[
                        "application/json-patch+json",
                        "application/merge-patch+json",
                        "application/strategic-merge-patch+json",
                        "application/apply-patch+yaml",
                    ]
                } else {
                    &["*/*"]
                };
                let schema = if action == "patch" {
                    json!({"$ref": format!("{prefix}io.k8s.apimachinery.pkg.apis.meta.v1.Patch")})
                } else {
                    reference
                };
                let content: Map<String, Value> = types
                    .iter()
                    .map(|t| (t.to_string(), json!({ "schema": schema })))
                    .collect();
                op["requestBody"] = json!({"content": content, "required": true});
            }
        }
        Style::V2 => {
            op["responses"] = json!({"200": {"description": "OK", "schema": reference}});
            op["consumes"] = json!(["*/*"]);
            op["produces"] = json!(["application/json", "application/yaml"]);
        }
    }
    op
}

fn add_paths(paths: &mut Map<String, Value>, info: &ResourceInfo, prefix: &str, style: Style) {
    let base = format!("/{}", group_version_path(&info.group, &info.version));
    let collection = if info.namespaced {
        format!("{base}/namespaces/{{namespace}}/{}", info.plural)
    } else {
        format!("{base}/{}", info.plural)
    };
    let mut scope = Vec::new();
    if info.namespaced {
        scope.push(path_param("namespace", style));
    }
    let has = |verb: &str| info.verbs.iter().any(|v| v == verb);
    let mut coll = Map::new();
    coll.insert("parameters".into(), Value::Array(scope.clone()));
    if has("list") {
        coll.insert(
            "get".into(),
            operation(info, "list", "list", Vec::new(), prefix, style, false),
        );
    }
    if has("create") {
        coll.insert(
            "post".into(),
            operation(
                info,
                "post",
                "create",
                write_params(style),
                prefix,
                style,
                true,
            ),
        );
    }
    paths.insert(collection.clone(), Value::Object(coll));

    let mut item = Map::new();
    let mut item_scope = scope;
    item_scope.insert(0, path_param("name", style));
    item.insert("parameters".into(), Value::Array(item_scope));
    if has("get") {
        item.insert(
            "get".into(),
            operation(info, "get", "read", Vec::new(), prefix, style, false),
        );
    }
    if has("update") {
        item.insert(
            "put".into(),
            operation(
                info,
                "put",
                "replace",
                write_params(style),
                prefix,
                style,
                true,
            ),
        );
    }
    if has("patch") {
        let mut params = write_params(style);
        params.push(query(
            "force",
            "Force is going to \"force\" Apply requests.",
            "boolean",
            style,
        ));
        item.insert(
            "patch".into(),
            operation(info, "patch", "patch", params, prefix, style, true),
        );
    }
    if has("delete") {
        item.insert(
            "delete".into(),
            operation(info, "delete", "delete", Vec::new(), prefix, style, false),
        );
    }
    paths.insert(format!("{collection}/{{name}}"), Value::Object(item));
}

/// The patch metadata table, for documentation: (schema, field, strategy, merge key).
pub fn patch_extensions() -> &'static [(&'static str, &'static str, &'static str, &'static str)] {
    PATCH_METADATA
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_lists_every_group_version_with_a_hash() {
        let index = openapi_v3_index(&Registry::builtin());
        let apps = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(apps.starts_with("/openapi/v3/apis/apps/v1?hash="), "{apps}");
        assert!(index["paths"]["api/v1"].is_object());
    }

    #[test]
    fn a_group_version_document_has_kinds_patch_metadata_and_patch_parameters() {
        let doc = openapi_v3_for_group_version(&Registry::builtin(), "apps", "v1");
        let schemas = &doc["components"]["schemas"];
        let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        assert_eq!(
            deploy["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        let params: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(params.contains(&"fieldValidation") && params.contains(&"dryRun"));
        // Every reference resolves inside the document.
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        for r in refs {
            assert!(schemas.get(&r).is_some(), "dangling reference {r}");
        }
    }

    #[test]
    fn custom_resources_get_an_open_schema_and_swagger_has_definitions() {
        let mut registry = Registry::builtin();
        let mut widget = registry.find("apps", "v1", "deployments").unwrap().clone();
        widget.group = "example.com".into();
        widget.kind = "Widget".into();
        widget.plural = "widgets".into();
        registry.add(widget);
        let doc = openapi_v3_for_group_version(&registry, "example.com", "v1");
        let w = &doc["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(w["x-kubernetes-preserve-unknown-fields"], true);
        assert!(
            doc["components"]["schemas"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]
                .is_object()
        );
        let v2 = openapi_v2(&registry);
        assert_eq!(v2["swagger"], "2.0");
        let mut gadget = registry
            .find("example.com", "v1", "widgets")
            .unwrap()
            .clone();
        gadget.kind = "Gadget".into();
        gadget.plural = "gadgets".into();
        gadget.custom = Some(std::sync::Arc::new(crate::structural::CustomVersion {
            schema: Some(json!({"type": "object", "properties": {
                "spec": {"type": "object", "description": "what a gadget does",
                         "properties": {"size": {"type": "integer"}}}}})),
            scale: None,
            ..Default::default()
        }));
        registry.add(gadget);
        let doc = openapi_v3_for_group_version(&registry, "example.com", "v1");
        let g = &doc["components"]["schemas"]["com.example.v1.Gadget"];
        assert_eq!(g["properties"]["spec"]["description"], "what a gadget does");
        assert_eq!(g["properties"]["kind"]["type"], "string");
        assert_eq!(g["x-kubernetes-group-version-kind"][0]["kind"], "Gadget");
        assert!(g.get("x-kubernetes-preserve-unknown-fields").is_none());
        assert_eq!(
            v2["definitions"]["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
    }
}
