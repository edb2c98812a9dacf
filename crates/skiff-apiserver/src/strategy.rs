//! The per-resource rules of the generic handler (kube-apiserver's `RESTStrategy`): what a
//! create fills in, what an update may not change, which fields the status subresource owns,
//! when `metadata.generation` moves, object-meta validation.

use std::sync::LazyLock;

use serde_json::{Value, json};
use skiff_apimachinery::{Registry, ResourceInfo};

use crate::handlers::Ctx;
use crate::object;
use crate::status::{ApiError, Cause};

/// Built-in groups: everything else is a custom resource.
fn is_custom(info: &ResourceInfo) -> bool {
    static BUILTIN: LazyLock<Registry> = LazyLock::new(Registry::builtin);
    !BUILTIN
        .all()
        .iter()
        .any(|r| r.group == info.group && r.plural == info.plural)
}

/// Whether objects of the resource carry `metadata.generation` (those with a spec, and every
/// custom resource).
fn tracks_generation(info: &ResourceInfo, obj: &Value) -> bool {
    obj.get("spec").is_some() || is_custom(info)
}

/// Whether the status subresource owns `.status` (the main resource then ignores it).
pub fn has_status(info: &ResourceInfo) -> bool {
    info.has_subresource("status")
}

/// The object without metadata and status: what a change of bumps `generation`. A custom
/// resource without a status subresource counts its `.status` too, as kube-apiserver does.
fn desired_state(info: &ResourceInfo, obj: &Value) -> Value {
    let mut copy = obj.clone();
    let status_counts = is_custom(info) && !has_status(info);
    if let Some(map) = copy.as_object_mut() {
        map.remove("metadata");
        if !status_counts {
            map.remove("status");
        }
        map.remove("apiVersion");
        map.remove("kind");
    }
    copy
}

/// Moves a Secret's write-only `stringData` into `data` (base64), as kube-apiserver does.
fn fold_string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(map) = secret.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(strings)) = map.remove("stringData") {
        let data = map.entry("data").or_insert_with(|| json!({}));
        if !data.is_object() {
            *data = json!({});
        }
        for (key, value) in strings {
            let text = value.as_str().unwrap_or_default();
            data[key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
        }
    }
    if map
        .get("type")
        .is_none_or(|t| t.as_str().is_none_or(str::is_empty))
    {
        map.insert("type".into(), json!("Opaque"));
    }
}

/// The defaults kube-apiserver fills in as it decodes a request, before its field manager
/// (its scheme's defaults, not what admission and the REST strategies set later; a custom
/// resource pruned and defaulted by its schema).
pub fn default_fields(info: &ResourceInfo, obj: &mut Value) {
    skiff_apimachinery::apply_scheme_defaults(info, obj);
    crate::custom_resource::prune_and_default(info, obj);
}

/// Fills in what a new object gets, then validates it.
pub fn prepare_create(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    skiff_apimachinery::apply_defaults(info, obj);
    crate::custom_resource::prune_and_default(info, obj);
    let track = tracks_generation(info, obj);
    {
        let meta = object::meta_mut(obj);
        meta.insert("uid".into(), json!(object::new_uid()));
        meta.insert("creationTimestamp".into(), json!(object::now()));
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(field);
        }
        if track {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    if has_status(info)
        && let Some(map) = obj.as_object_mut()
    {
        map.remove("status");
    }
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "namespaces") => {
            obj["status"] = json!({"phase": "Active"});
            object::meta_mut(obj)
                .entry("labels")
                .or_insert_with(|| json!({}));
            let name = object::name(obj).to_string();
            if let Some(labels) = obj["metadata"]["labels"].as_object_mut() {
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("", "pods") => {
            obj["status"] = json!({"phase": "Pending"});
        }
        ("", "secrets") => fold_string_data(obj),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            crate::crd::prepare(info, obj)?;
        }
        _ => {}
    }
    validate(info, obj, None)
}

/// Computes the stored object of an update: `wanted` as sent, with what the client may not
/// change taken from `current`. `status_update` is the status subresource: then only
/// `.status` comes from `wanted`.
pub fn prepare_update(
    info: &ResourceInfo,
    current: &Value,
    mut wanted: Value,
    status_update: bool,
) -> Result<Value, ApiError> {
    if status_update {
        let mut new = current.clone();
        new["status"] = wanted.get("status").cloned().unwrap_or(Value::Null);
        if new["status"].is_null()
            && let Some(map) = new.as_object_mut()
        {
            map.remove("status");
        }
        if info.custom.is_some() {
            // kube-apiserver keeps the managed fields of a status write; the schema applies.
            if let Some(fields) = wanted.pointer("/metadata/managedFields") {
                object::meta_mut(&mut new).insert("managedFields".into(), fields.clone());
            }
            crate::custom_resource::prune_and_default(info, &mut new);
            validate(info, &new, Some(current))?;
        }
        return Ok(new);
    }
    if has_status(info) {
        match current.get("status") {
            Some(status) => wanted["status"] = status.clone(),
            None => {
                if let Some(map) = wanted.as_object_mut() {
                    map.remove("status");
                }
            }
        }
    }
    keep_immutable_metadata(current, &mut wanted);
    if info.group.is_empty() && info.plural == "pods" {
        crate::admission::keep_pod_priority(current, &mut wanted);
    }
    skiff_apimachinery::apply_defaults(info, &mut wanted);
    crate::custom_resource::prune_and_default(info, &mut wanted);
    if info.group.is_empty() && info.plural == "secrets" {
        fold_string_data(&mut wanted);
    }
    let old_generation = current
        .get("metadata")
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64);
    if let Some(generation) =
        old_generation.or_else(|| tracks_generation(info, &wanted).then_some(0))
    {
        let bumped = if desired_state(info, current) != desired_state(info, &wanted) {
            generation + 1
        } else {
            generation.max(1)
        };
        object::meta_mut(&mut wanted).insert("generation".into(), json!(bumped));
    }
    if info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions" {
        crate::crd::prepare(info, &mut wanted)?;
    }
    crate::services::prepare_update(info, current, &mut wanted)?;
    if info.group.is_empty() && info.plural == "nodes" {
        check_pod_cidrs_kept(info, current, &wanted)?;
    }
    validate(info, &wanted, Some(current))?;
    Ok(wanted)
}

/// A Node's pod CIDRs, `spec.podCIDRs` or else `spec.podCIDR`.
fn pod_cidrs(node: &Value) -> Vec<String> {
    let listed: Vec<String> = node
        .pointer("/spec/podCIDRs")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !listed.is_empty() {
        return listed;
    }
    node.pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(|c| vec![c.to_string()])
        .unwrap_or_default()
}

/// kube-apiserver's Node update validation: pod CIDRs, once set, never change (for anyone).
fn check_pod_cidrs_kept(info: &ResourceInfo, current: &Value, new: &Value) -> Result<(), ApiError> {
    let old = pod_cidrs(current);
    if old.is_empty() || old == pod_cidrs(new) {
        return Ok(());
    }
    Err(ApiError::invalid(
        info,
        object::name(current),
        vec![crate::status::Cause {
            reason: "FieldValueForbidden".into(),
            message: "Forbidden: node updates may not change podCIDR except from \"\" to valid"
                .into(),
            field: "spec.podCIDRs".into(),
        }],
    ))
}

/// Copies the metadata no client may change (identity, creation, deletion) from `current`.
pub fn keep_immutable_metadata(current: &Value, new: &mut Value) {
    let Some(old_meta) = current.get("metadata").and_then(Value::as_object).cloned() else {
        return;
    };
    let meta = object::meta_mut(new);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old_meta.get(field) {
            Some(value) => {
                meta.insert(field.into(), value.clone());
            }
            None => {
                meta.remove(field);
            }
        }
    }
    if meta.get("generation").is_none()
        && let Some(generation) = old_meta.get("generation")
    {
        meta.insert("generation".into(), generation.clone());
    }
}

/// What `fieldValidation` asks for (`Warn` when absent, as kube-apiserver does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    /// Refuse unknown and duplicate fields with 400.
    Strict,
    /// Accept them with a `Warning` header each.
    Warn,
    /// Accept them silently.
    Ignore,
}

/// Reads the `fieldValidation` query parameter.
pub fn field_validation(ctx: &Ctx) -> Result<FieldValidation, ApiError> {
    match ctx.query.get("fieldValidation") {
        None | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation {other:?} is not valid: use Strict, Warn or Ignore"
        ))),
    }
}

/// Checks a request's object for fields its schema does not know and, given the raw JSON
/// `body`, for keys set twice. `Strict` refuses them; otherwise they come back as warnings.
pub fn check_fields(ctx: &Ctx, obj: &Value, body: Option<&[u8]>) -> Result<Vec<String>, ApiError> {
    let mode = field_validation(ctx)?;
    if mode == FieldValidation::Ignore {
        return Ok(Vec::new());
    }
    let mut problems: Vec<String> = skiff_apimachinery::unknown_fields(&ctx.info, obj)
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if let Some(body) = body.filter(|b| b.first() == Some(&b'{'))
        && let Ok(duplicates) = skiff_apimachinery::duplicate_fields(body)
    {
        problems.extend(
            duplicates
                .into_iter()
                .map(|f| format!("duplicate field \"{f}\"")),
        );
    }
    if mode == FieldValidation::Strict && !problems.is_empty() {
        let kind = &ctx.info.kind;
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"{}\" cannot be handled as a {kind}: strict decoding error: {}",
            ctx.info.version,
            problems.join(", ")
        )));
    }
    Ok(problems)
}

/// Validation of every object: metadata for any kind, the kind's own rules for built-ins,
/// the CRD's schema and then its CEL rules for custom resources (`old`: the stored object of
/// an update, which transition rules compare with).
fn validate(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let errors = skiff_apimachinery::validate(info, obj);
    let mut causes: Vec<Cause> = errors
        .into_iter()
        .map(|e| Cause {
            reason: e.reason,
            message: e.message,
            field: e.field,
        })
        .collect();
    let mut custom = crate::custom_resource::schema_causes(info, obj);
    if info.custom.is_some() {
        custom.extend(crate::custom_resource::rule_causes(
            info,
            obj,
            old,
            causes.iter().chain(custom.iter()),
        ));
    }
    if causes.is_empty() && custom.is_empty() {
        return Ok(());
    }
    if info.custom.is_some() {
        causes.extend(custom);
        return Err(crate::custom_resource::invalid(
            info,
            object::name(obj),
            causes,
        ));
    }
    Err(ApiError::invalid(info, object::name(obj), causes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(group: &str, plural: &str) -> ResourceInfo {
        let registry = Registry::builtin();
        registry
            .all()
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .unwrap()
            .clone()
    }

    fn widget() -> ResourceInfo {
        let mut widget = info("apps", "deployments");
        widget.group = "example.com".into();
        widget.kind = "Widget".into();
        widget.plural = "widgets".into();
        widget
    }

    #[test]
    fn create_fills_identity_and_drops_status() {
        let deploy = widget();
        let mut obj = json!({"metadata": {"name": "web", "namespace": "a", "resourceVersion": "9"}, "spec": {"replicas": 1}, "status": {"replicas": 5}});
        prepare_create(&deploy, &mut obj).unwrap();
        assert_eq!(obj["metadata"]["generation"], 1);
        assert!(obj["metadata"]["uid"].as_str().unwrap().len() == 36);
        assert!(obj.get("status").is_none());
        assert!(obj["metadata"].get("resourceVersion").is_none());
    }

    #[test]
    fn spec_changes_bump_generation_and_status_is_kept() {
        let deploy = widget();
        let current = json!({"metadata": {"name": "web", "namespace": "a", "uid": "u", "generation": 3}, "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let wanted = json!({"metadata": {"name": "web", "uid": "other"}, "spec": {"replicas": 2}, "status": {"replicas": 9}});
        let new = prepare_update(&deploy, &current, wanted, false).unwrap();
        assert_eq!(new["metadata"]["generation"], 4);
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(new["status"]["replicas"], 1);
        let same = prepare_update(&deploy, &current, current.clone(), false).unwrap();
        assert_eq!(same["metadata"]["generation"], 3);
        let status = prepare_update(
            &deploy,
            &current,
            json!({"spec": {"replicas": 7}, "status": {"replicas": 2}}),
            true,
        )
        .unwrap();
        assert_eq!(status["spec"]["replicas"], 1);
        assert_eq!(status["status"]["replicas"], 2);
    }

    #[test]
    fn secrets_fold_string_data() {
        let secrets = info("", "secrets");
        let mut obj =
            json!({"metadata": {"name": "s", "namespace": "a"}, "stringData": {"p": "x"}});
        prepare_create(&secrets, &mut obj).unwrap();
        assert_eq!(obj["data"]["p"], "eA==");
        assert_eq!(obj["type"], "Opaque");
        assert!(obj.get("stringData").is_none());
    }

    #[test]
    fn bad_names_are_invalid() {
        let cm = info("", "configmaps");
        let mut obj = json!({"metadata": {"name": "Bad_Name", "namespace": "a"}});
        let err = prepare_create(&cm, &mut obj).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(err.message.contains("metadata.name"), "{}", err.message);
        let ns = info("", "namespaces");
        let mut obj = json!({"metadata": {"name": "a.b"}});
        assert!(prepare_create(&ns, &mut obj).is_err());
    }

    #[test]
    fn a_nodes_pod_cidr_is_set_once() {
        let nodes = info("", "nodes");
        let bare =
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {}});
        let mut assigned = bare.clone();
        assigned["spec"] = json!({"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]});
        assert!(prepare_update(&nodes, &bare, assigned.clone(), false).is_ok());
        assert!(prepare_update(&nodes, &assigned, assigned.clone(), false).is_ok());
        let mut moved = assigned.clone();
        moved["spec"] = json!({"podCIDR": "10.42.2.0/24", "podCIDRs": ["10.42.2.0/24"]});
        let err = prepare_update(&nodes, &assigned, moved, false).unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            format!("{err:?}").contains("may not change podCIDR"),
            "{err:?}"
        );
    }
}
