//! PATCH: JSON patch, JSON merge patch, strategic merge patch and server-side apply, on the
//! main resource and on the status subresource.

use axum::http::{StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;

use super::write::{
    Change, check_name, check_namespace_field, check_resource_version, check_type, create_object,
    update_addressed,
};
use super::{Ctx, parse_yaml, respond_object};
use crate::status::ApiError;
use crate::{object, storage, strategy};

/// The patch formats of `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

const ACCEPTED: &str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";

/// Reads the patch type from the request's `Content-Type`.
pub fn patch_type(ctx: &Ctx) -> Result<PatchType, ApiError> {
    let content_type = ctx
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    match essence {
        "application/json-patch+json" => Ok(PatchType::Json),
        "application/merge-patch+json" => Ok(PatchType::Merge),
        "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(PatchType::Apply),
        other => Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format {other:?} - accepted media types include: {ACCEPTED}"
        ))),
    }
}

/// Applies a JSON, merge or strategic patch to `current`.
pub fn apply_patch(
    info: &ResourceInfo,
    kind: PatchType,
    current: &Value,
    patch: &[u8],
) -> Result<Value, ApiError> {
    let mut doc = current.clone();
    match kind {
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is not valid: {e}")))?;
            json_patch::patch(&mut doc, &patch).map_err(|e| ApiError {
                code: 422,
                reason: "Invalid",
                message: format!("the JSON patch could not be applied: {e}"),
                details: None,
            })?;
        }
        PatchType::Merge => {
            let patch = parse_patch(patch)?;
            json_patch::merge(&mut doc, &patch);
        }
        PatchType::Strategic => {
            let patch = parse_patch(patch)?;
            doc = skiff_apimachinery::strategic_merge(current, &patch, info).map_err(
                |e| match e {
                    skiff_apimachinery::PatchError::UnsupportedKind { .. } => {
                        ApiError::unsupported_media_type(e.to_string())
                    }
                    other => ApiError::bad_request(other.to_string()),
                },
            )?;
        }
        PatchType::Apply => {
            let applied = parse_yaml(patch)?;
            doc = apply_merge(current, &applied);
        }
    }
    Ok(doc)
}

fn parse_patch(patch: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the patch must be a JSON object"));
    }
    Ok(value)
}

/// Server-side apply's merge, simplified: the applied configuration's fields replace the
/// current ones, fields it does not mention stay (lists are replaced whole).
fn apply_merge(current: &Value, applied: &Value) -> Value {
    match (current, applied) {
        (Value::Object(cur), Value::Object(app)) => {
            let mut out = cur.clone();
            for (k, v) in app {
                let merged = match cur.get(k) {
                    Some(existing) => apply_merge(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, applied) => applied.clone(),
    }
}

/// Records a manager in `metadata.managedFields` (replacing its previous entry).
fn record_manager(
    obj: &mut Value,
    manager: &str,
    operation: &str,
    api_version: &str,
    subresource: Option<&str>,
) {
    let meta = object::meta_mut(obj);
    let mut entries: Vec<Value> = meta
        .get("managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    entries.retain(|e| {
        !(e.get("manager").and_then(Value::as_str) == Some(manager)
            && e.get("operation").and_then(Value::as_str) == Some(operation))
    });
    let mut entry = json!({
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": object::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": {},
    });
    if let Some(sub) = subresource {
        entry["subresource"] = json!(sub);
    }
    entries.push(entry);
    meta.insert("managedFields".into(), Value::Array(entries));
}

/// `PATCH .../{plural}/{name}` and `.../{name}/status`.
pub async fn patch(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let kind = patch_type(ctx)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("the patch is empty"));
    }
    let status_update = ctx.subresource.as_deref() == Some("status");
    if kind == PatchType::Apply {
        return apply(ctx, body, status_update).await;
    }
    let strict = strategy::field_validation(ctx)? == strategy::FieldValidation::Strict;
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    let outcome = update_addressed(ctx, |current, revision| {
        let patched = apply_patch(&info, kind, current, body)?;
        if strict {
            strategy::check_fields(ctx, &patched, None)?;
        }
        check_resource_version(&info, &name, &patched, revision)?;
        strategy::prepare_update(&info, current, patched, status_update).map(Change::Update)
    })
    .await?;
    Ok(respond_object(ctx, StatusCode::OK, &outcome.object))
}

/// Server-side apply: creates the object when missing, merges the applied configuration
/// into it otherwise, and records the field manager.
async fn apply(ctx: &Ctx, body: &[u8], status_update: bool) -> Result<Response, ApiError> {
    let manager = ctx.query.get("fieldManager").ok_or_else(|| {
        ApiError::bad_request("PATCH requests with the apply patch type must set fieldManager")
    })?;
    let mut applied = parse_yaml(body)?;
    check_type(&ctx.info, &mut applied)?;
    check_name(ctx, &applied)?;
    check_namespace_field(ctx, &mut applied)?;
    let api_version = ctx.info.api_version();
    let exists = match storage::get(ctx.state.store.as_ref(), &ctx.info, ctx.ns(), ctx.name()).await
    {
        Ok(_) => true,
        Err(err) if err.code == 404 => false,
        Err(err) => return Err(err),
    };
    if !exists {
        if status_update {
            return Err(ApiError::not_found(&ctx.info, ctx.name()));
        }
        if let Some(ns) = ctx.ns() {
            storage::check_namespace(ctx.state.store.as_ref(), ns, true).await?;
        }
        let mut obj = applied;
        object::meta_mut(&mut obj).insert("name".into(), json!(ctx.name()));
        crate::admission::admit_create(&ctx.state, &ctx.info, ctx.ns(), &mut obj).await?;
        strategy::prepare_create(&ctx.info, &mut obj)?;
        record_manager(&mut obj, manager, "Apply", &api_version, None);
        if ctx.query.dry_run() {
            crate::services::admit_create(&ctx.state, &ctx.info, &mut obj, true)
                .await?
                .commit();
            return Ok(respond_object(ctx, StatusCode::CREATED, &obj));
        }
        let created = create_object(&ctx.state, &ctx.info, obj).await?;
        return Ok(respond_object(ctx, StatusCode::CREATED, &created));
    }
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    let outcome = update_addressed(ctx, |current, revision| {
        check_resource_version(&info, &name, &applied, revision)?;
        let mut without_rv = applied.clone();
        object::meta_mut(&mut without_rv).remove("resourceVersion");
        let mut merged = apply_merge(current, &without_rv);
        record_manager(
            &mut merged,
            manager,
            "Apply",
            &api_version,
            status_update.then_some("status"),
        );
        strategy::prepare_update(&info, current, merged, status_update).map(Change::Update)
    })
    .await?;
    Ok(respond_object(ctx, StatusCode::OK, &outcome.object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_apimachinery::Registry;

    #[test]
    fn json_and_merge_patches_apply() {
        let registry = Registry::builtin();
        let cm = registry.find("", "v1", "configmaps").unwrap();
        let current = json!({"metadata": {"name": "a"}, "data": {"x": "1", "y": "2"}});
        let merged = apply_patch(
            cm,
            PatchType::Merge,
            &current,
            br#"{"data":{"x":null,"z":"3"}}"#,
        )
        .unwrap();
        assert_eq!(merged["data"], json!({"y": "2", "z": "3"}));
        let patched = apply_patch(
            cm,
            PatchType::Json,
            &current,
            br#"[{"op":"replace","path":"/data/x","value":"9"}]"#,
        )
        .unwrap();
        assert_eq!(patched["data"]["x"], "9");
        let err = apply_patch(
            cm,
            PatchType::Json,
            &current,
            br#"[{"op":"test","path":"/data/x","value":"0"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }

    #[test]
    fn apply_keeps_fields_it_does_not_mention() {
        let current = json!({"metadata": {"name": "a", "labels": {"k": "v"}}, "data": {"x": "1"}});
        let applied = json!({"metadata": {"name": "a"}, "data": {"y": "2"}});
        let merged = apply_merge(&current, &applied);
        assert_eq!(merged["metadata"]["labels"]["k"], "v");
        assert_eq!(merged["data"], json!({"x": "1", "y": "2"}));
    }
}
