//! The API server's side of field management: who the field manager of a request is, and
//! `metadata.managedFields` kept on every write through
//! [`skiff_apimachinery::fieldmanager`] (`Update` entries for create, PUT and non-apply
//! patches; server-side apply's merge, pruning and conflicts as 409 `Status`es).

use axum::http::header;
use serde_json::Value;
use skiff_apimachinery::ResourceInfo;
use skiff_apimachinery::fieldmanager::{
    self, ApplyError, ManagedFields, Scope, TypeRef, Writer, conflict_message,
};

use crate::handlers::Ctx;
use crate::object;
use crate::status::{ApiError, Cause};

/// The longest field manager name kube accepts.
const MAX_MANAGER_LENGTH: usize = 128;

/// The request's field manager: `?fieldManager=`, else the User-Agent up to its first `/`
/// (`kubectl/v1.33.1 (linux/amd64) kubernetes/abc` -> `kubectl`), as kube-apiserver names it.
pub fn manager_name(ctx: &Ctx) -> Result<String, ApiError> {
    if let Some(manager) = ctx.query.get("fieldManager") {
        if manager.chars().count() > MAX_MANAGER_LENGTH {
            return Err(ApiError::bad_request(format!(
                "fieldManager: Too long: may not be longer than {MAX_MANAGER_LENGTH}"
            )));
        }
        if manager.chars().any(|c| c.is_control()) {
            return Err(ApiError::bad_request(
                "fieldManager: Invalid value: must only contain printable characters",
            ));
        }
        return Ok(manager.to_string());
    }
    let agent = ctx
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let prefix: String = agent
        .split('/')
        .next()
        .unwrap_or_default()
        .chars()
        .take(MAX_MANAGER_LENGTH)
        .collect();
    Ok(prefix)
}

fn scope(info: &ResourceInfo, subresource: Option<&str>) -> Scope {
    match subresource {
        Some("status") => Scope::Status,
        Some("scale") => Scope::Scale,
        _ => Scope::Main {
            status_subresource: info.has_subresource("status"),
        },
    }
}

/// The managed fields a write starts from: those the request sends, if it sends a valid
/// list, else the stored object's.
fn starting_fields(current: &Value, requested: Option<&Value>) -> ManagedFields {
    requested
        .and_then(|r| ManagedFields::from_value(r).ok())
        .or_else(|| ManagedFields::of_object(current).ok())
        .unwrap_or_default()
}

/// Records a write other than apply in `new`'s managed fields: the writer's `Update` entry
/// takes the fields it added or changed from `current` (an empty object for a create), through
/// `subresource` (`status`, `scale`) if any. `requested` is the request body's `metadata.managedFields`, if it had one. A write whose
/// fields cannot be told apart keeps the managed fields as they were, as kube does.
pub fn record_update(
    info: &ResourceInfo,
    manager: &str,
    subresource: Option<&str>,
    current: &Value,
    new: &mut Value,
    requested: Option<&Value>,
) {
    let start = starting_fields(current, requested);
    let api_version = info.api_version();
    let now = object::now();
    let writer = Writer {
        manager,
        api_version: &api_version,
        scope: scope(info, subresource),
        now: &now,
    };
    let ty = TypeRef::of_resource(info);
    let managed = match fieldmanager::update(current, new, &start, &ty, &writer) {
        Ok(managed) => managed,
        Err(err) => {
            tracing::debug!(error = %err, kind = %info.kind, "managed fields left as they were");
            start
        }
    };
    set_managed_fields(new, &managed);
}

/// Server-side apply of `config` to `current` (an empty object for a create): the merged
/// object, with its managed fields.
pub fn apply(
    info: &ResourceInfo,
    manager: &str,
    status_update: bool,
    force: bool,
    current: &Value,
    config: &Value,
) -> Result<Value, ApiError> {
    let start = ManagedFields::of_object(current).unwrap_or_default();
    let api_version = info.api_version();
    let now = object::now();
    let writer = Writer {
        manager,
        api_version: &api_version,
        scope: scope(info, status_update.then_some("status")),
        now: &now,
    };
    let ty = TypeRef::of_resource(info);
    match fieldmanager::apply_upgrading_client_side(current, config, &start, &ty, &writer, force) {
        Ok((mut merged, managed)) => {
            set_managed_fields(&mut merged, &managed);
            Ok(merged)
        }
        Err(ApplyError::Conflicts(conflicts)) => {
            let causes = conflicts
                .iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with {}", c.manager),
                    field: c.path.to_string(),
                })
                .collect();
            Err(ApiError::apply_conflict(
                conflict_message(&conflicts),
                causes,
            ))
        }
        Err(ApplyError::Invalid(err)) => Err(ApiError::bad_request(format!(
            "failed to create typed patch object ({}, Kind={}): {err}",
            api_version, info.kind
        ))),
    }
}

/// Puts managed fields into an object (none: the field goes).
pub fn set_managed_fields(obj: &mut Value, managed: &ManagedFields) {
    let value = managed.to_value();
    let meta = object::meta_mut(obj);
    if value.as_array().is_some_and(Vec::is_empty) {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), value);
    }
}
