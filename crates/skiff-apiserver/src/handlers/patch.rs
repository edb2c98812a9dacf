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
            doc = crate::fieldmanager::apply(info, "", false, true, current, &applied)?;
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
    let manager = crate::fieldmanager::manager_name(ctx)?;
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    let outcome = update_addressed(ctx, |current, revision| {
        let patched = apply_patch(&info, kind, current, body)?;
        if strict {
            strategy::check_fields(ctx, &patched, None)?;
        }
        check_resource_version(&info, &name, &patched, revision)?;
        let requested = patched.pointer("/metadata/managedFields").cloned();
        let mut new = strategy::prepare_update(&info, current, patched, status_update)?;
        crate::fieldmanager::record_update(
            &info,
            &manager,
            status_update.then_some("status"),
            current,
            &mut new,
            requested.as_ref(),
        );
        Ok(Change::Update(new))
    })
    .await?;
    Ok(respond_object(ctx, StatusCode::OK, &outcome.object))
}

/// Server-side apply: creates the object when missing, merges the applied configuration
/// into it otherwise (see [`crate::fieldmanager::apply`]: pruning, conflicts, `force`).
async fn apply(ctx: &Ctx, body: &[u8], status_update: bool) -> Result<Response, ApiError> {
    let manager = ctx.query.get("fieldManager").ok_or_else(|| {
        ApiError::bad_request("PATCH requests with the apply patch type must set fieldManager")
    })?;
    // Checks the name's length and characters.
    crate::fieldmanager::manager_name(ctx)?;
    let force = ctx.query.flag("force");
    let mut applied = parse_yaml(body)?;
    check_type(&ctx.info, &mut applied)?;
    check_name(ctx, &applied)?;
    check_namespace_field(ctx, &mut applied)?;
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
            storage::check_namespace(&ctx.state, ns, true).await?;
        }
        let mut skeleton = json!({"metadata": {"name": ctx.name()}});
        object::set_type(&mut skeleton, &ctx.info.api_version(), &ctx.info.kind);
        if let Some(ns) = ctx.ns() {
            skeleton["metadata"]["namespace"] = json!(ns);
        }
        let mut obj =
            crate::fieldmanager::apply(&ctx.info, manager, false, force, &skeleton, &applied)?;
        crate::admission::admit_create(&ctx.state, &ctx.info, ctx.ns(), &mut obj).await?;
        // prepare_create keeps metadata.managedFields (custom resources' pruning too).
        strategy::prepare_create(&ctx.info, &mut obj)?;
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
        let merged =
            crate::fieldmanager::apply(&info, manager, status_update, force, current, &applied)?;
        let managed = merged.pointer("/metadata/managedFields").cloned();
        let mut new = strategy::prepare_update(&info, current, merged, status_update)?;
        let meta = object::meta_mut(&mut new);
        match managed {
            Some(managed) => meta.insert("managedFields".into(), managed),
            None => meta.remove("managedFields"),
        };
        Ok(Change::Update(new))
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
}
