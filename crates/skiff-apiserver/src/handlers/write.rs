//! POST (create) and PUT (update), and the read-modify-write loop every change of an existing
//! object goes through ([`guaranteed_update`]), with optimistic concurrency on the store's
//! modification revision.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;
use skiff_store::{Revision, StoreError};

use super::{Ctx, parse_body, respond_object, with_warnings};
use crate::state::AppState;
use crate::status::ApiError;
use crate::{crd, object, services, storage, strategy};

/// Checks (or fills in) `apiVersion` and `kind` of a request body.
pub fn check_type(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body must be a {} object",
            info.kind
        )));
    }
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if (!kind.is_empty() && kind != info.kind)
        || (!api_version.is_empty() && api_version != info.api_version())
    {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): {api_version}, Kind={kind}",
            info.kind
        )));
    }
    object::set_type(obj, &info.api_version(), &info.kind);
    Ok(())
}

/// Makes the body's namespace agree with the path's.
pub fn check_namespace_field(ctx: &Ctx, obj: &mut Value) -> Result<(), ApiError> {
    let meta = object::meta_mut(obj);
    if !ctx.info.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let path_ns = ctx.namespace.as_deref().unwrap_or_default();
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != path_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(path_ns));
            Ok(())
        }
    }
}

/// `POST .../{plural}`.
pub async fn create(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    if ctx.info.namespaced && ctx.namespace.is_none() {
        return Err(ApiError::method_not_allowed());
    }
    let mut obj = parse_body(&ctx.headers, body)?;
    check_type(&ctx.info, &mut obj)?;
    check_namespace_field(ctx, &mut obj)?;
    let warnings = strategy::check_fields(ctx, &obj, Some(body))?;
    if let Some(ns) = ctx.ns() {
        storage::check_namespace(&ctx.state, ns, true).await?;
    }
    // The creator owns what it sent, defaults included; what admission adds stays unowned,
    // as in kube.
    let manager = crate::fieldmanager::manager_name(ctx)?;
    let managed = {
        let requested = obj.pointer("/metadata/managedFields").cloned();
        let mut sent = obj.clone();
        strategy::default_fields(&ctx.info, &mut sent);
        crate::fieldmanager::record_update(
            &ctx.info,
            &manager,
            None,
            &json!({}),
            &mut sent,
            requested.as_ref(),
        );
        sent.pointer("/metadata/managedFields").cloned()
    };
    crate::admission::admit_create(&ctx.state, &ctx.info, ctx.ns(), &mut obj).await?;
    crate::noderestriction::admit_create(&ctx.identity, &ctx.info, &obj)?;
    let generate = object::name(&obj).is_empty();
    let prefix = object::meta_str(&obj, "generateName").to_string();
    if generate && prefix.is_empty() {
        return Err(ApiError::invalid(
            &ctx.info,
            "",
            vec![crate::status::Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value: name or generateName is required".into(),
                field: "metadata.name".into(),
            }],
        ));
    }
    for attempt in 0..5 {
        let mut candidate = obj.clone();
        if generate {
            let name = format!("{prefix}{}", object::random_suffix());
            object::meta_mut(&mut candidate).insert("name".into(), json!(name));
        }
        strategy::prepare_create(&ctx.info, &mut candidate)?;
        crate::certificates::admit_create(&ctx.state, &ctx.identity, &ctx.info, &mut candidate)?;
        let meta = object::meta_mut(&mut candidate);
        match &managed {
            Some(managed) => meta.insert("managedFields".into(), managed.clone()),
            None => meta.remove("managedFields"),
        };
        if ctx.query.dry_run() {
            services::admit_create(&ctx.state, &ctx.info, &mut candidate, true)
                .await?
                .commit();
            let response = respond_object(ctx, StatusCode::CREATED, &candidate);
            return Ok(with_warnings(response, &warnings));
        }
        match create_object(&ctx.state, &ctx.info, candidate).await {
            Err(err) if generate && err.reason == "AlreadyExists" && attempt < 4 => continue,
            Err(mut err) if generate && err.reason == "AlreadyExists" => {
                err.message
                    .push_str(", the server was not able to generate a unique name for the object");
                return Err(err);
            }
            Err(err) => return Err(err),
            Ok(created) => {
                let response = respond_object(ctx, StatusCode::CREATED, &created);
                return Ok(with_warnings(response, &warnings));
            }
        }
    }
    Err(ApiError::internal("could not generate a unique name"))
}

/// Stores a prepared new object (a Service with the addresses it needs reserved first);
/// returns it with its `resourceVersion`.
pub async fn create_object(
    state: &Arc<AppState>,
    info: &ResourceInfo,
    mut obj: Value,
) -> Result<Value, ApiError> {
    let name = object::name(&obj).to_string();
    let namespace = object::namespace(&obj).to_string();
    let key = storage::key(
        info,
        Some(namespace.as_str()).filter(|n| !n.is_empty()),
        &name,
    )?;
    let reservation = services::admit_create(state, info, &mut obj, false).await?;
    let written = match storage::encode(&obj) {
        Ok(bytes) => state
            .store
            .create(&key, bytes)
            .await
            .map_err(|e| ApiError::from_store(e, info, &name)),
        Err(err) => Err(err),
    };
    let revision = match written {
        Ok(revision) => {
            reservation.commit();
            revision
        }
        Err(err) => {
            reservation.release(state.store.as_ref()).await;
            return Err(err);
        }
    };
    object::set_resource_version(&mut obj, revision);
    crd::after_write(state, info, &obj, revision).await;
    Ok(obj)
}

/// What an update function decided.
pub enum Change {
    /// Store this object (it may equal the current one: then nothing is written).
    Update(Value),
    /// Delete the object now (a deletion whose finalizers are all gone).
    Delete,
}

/// What a [`guaranteed_update`] did.
pub struct Outcome {
    /// The object as stored now (or as it was when deleted).
    pub object: Value,
    /// Whether the object was deleted.
    pub deleted: bool,
}

/// [`guaranteed_update`] of the object a request addresses (its namespace and name), honouring
/// the request's `dryRun`.
/// Every update is admitted by NodeRestriction ([`crate::noderestriction::admit_update`]) and,
/// for a CertificateSigningRequest's `status`, by the CertificateSigning check (setting the
/// certificate needs `sign` on the request's signer).
pub async fn update_addressed<F>(ctx: &Ctx, mut change: F) -> Result<Outcome, ApiError>
where
    F: FnMut(&Value, Revision) -> Result<Change, ApiError>,
{
    let signing = crate::certificates::approval::signing_check(ctx).await?;
    let identity = ctx.identity.clone();
    let info = ctx.info.clone();
    guaranteed_update(
        &ctx.state,
        &ctx.info,
        ctx.ns(),
        ctx.name(),
        ctx.query.dry_run(),
        move |current, revision| {
            let outcome = change(current, revision)?;
            if let Change::Update(new) = &outcome {
                crate::noderestriction::admit_update(&identity, &info, current, new)?;
                if let Some(check) = &signing {
                    check.admit(current, new)?;
                }
            }
            Ok(outcome)
        },
    )
    .await
}

/// Read-modify-write with optimistic concurrency, as kube-apiserver's `GuaranteedUpdate`:
/// reads the object, lets `change` compute the new one from it (checking the client's
/// preconditions there), writes it only if it differs and only if nobody wrote in between;
/// when somebody did, reads again and retries. An object whose deletion is pending and whose
/// last finalizer goes is deleted.
pub async fn guaranteed_update<F>(
    state: &Arc<AppState>,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    dry_run: bool,
    mut change: F,
) -> Result<Outcome, ApiError>
where
    F: FnMut(&Value, Revision) -> Result<Change, ApiError>,
{
    let key = storage::key(info, namespace, name)?;
    for _ in 0..16 {
        let (current, revision) = storage::get(state.store.as_ref(), info, namespace, name).await?;
        let mut new = match change(&current, revision)? {
            Change::Delete => {
                if dry_run {
                    return Ok(Outcome {
                        object: current,
                        deleted: true,
                    });
                }
                return match state.store.delete(&key, Some(revision)).await {
                    Ok(deleted) => {
                        let mut object = current;
                        object::set_resource_version(&mut object, deleted.revision);
                        state
                            .namespaces
                            .written(info, &object, deleted.revision, true);
                        crd::after_delete(state, info, &object).await;
                        services::after_delete(state, info, &object).await;
                        Ok(Outcome {
                            object,
                            deleted: true,
                        })
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(err) => Err(ApiError::from_store(err, info, name)),
                };
            }
            Change::Update(new) => new,
        };
        if finalizers_released(&current, &new) {
            if dry_run {
                return Ok(Outcome {
                    object: new,
                    deleted: true,
                });
            }
            match state.store.delete(&key, Some(revision)).await {
                Ok(deleted) => {
                    state.namespaces.written(info, &new, deleted.revision, true);
                    crd::after_delete(state, info, &new).await;
                    services::after_delete(state, info, &current).await;
                    return Ok(Outcome {
                        object: new,
                        deleted: true,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(err) => return Err(ApiError::from_store(err, info, name)),
            }
        }
        crate::admission::admit_update(state, info, &current, &mut new).await?;
        let reservation = services::admit_update(state, info, &current, &mut new, dry_run).await?;
        if object::without_resource_version(&new) == object::without_resource_version(&current) {
            reservation.commit();
            return Ok(Outcome {
                object: current,
                deleted: false,
            });
        }
        if dry_run {
            reservation.commit();
            return Ok(Outcome {
                object: new,
                deleted: false,
            });
        }
        let written = match storage::encode(&new) {
            Ok(bytes) => state.store.update(&key, bytes, revision).await,
            Err(err) => {
                reservation.release(state.store.as_ref()).await;
                return Err(err);
            }
        };
        match written {
            Ok(new_revision) => {
                reservation.commit();
                services::release_unused(state, info, &current, &new).await;
                object::set_resource_version(&mut new, new_revision);
                state.namespaces.written(info, &new, new_revision, false);
                crd::after_write(state, info, &new, new_revision).await;
                return Ok(Outcome {
                    object: new,
                    deleted: false,
                });
            }
            Err(StoreError::Conflict { .. }) => {
                reservation.release(state.store.as_ref()).await;
                continue;
            }
            Err(err) => {
                reservation.release(state.store.as_ref()).await;
                return Err(ApiError::from_store(err, info, name));
            }
        }
    }
    Err(ApiError::conflict(info, name))
}

/// Whether an update removed the last finalizer of an object whose deletion is pending and
/// has no grace period left: then the object goes (kube-apiserver's `ShouldDeleteDuringUpdate`).
fn finalizers_released(current: &Value, new: &Value) -> bool {
    let grace = new
        .get("metadata")
        .and_then(|m| m.get("deletionGracePeriodSeconds"))
        .and_then(Value::as_i64)
        .unwrap_or(0);
    object::is_deleting(current)
        && !object::finalizers(current).is_empty()
        && object::finalizers(new).is_empty()
        && grace == 0
}

/// Fails with 409 when the client's `resourceVersion` is set and is not the current one.
pub fn check_resource_version(
    info: &ResourceInfo,
    name: &str,
    wanted: &Value,
    revision: Revision,
) -> Result<(), ApiError> {
    let rv = object::meta_str(wanted, "resourceVersion");
    if !rv.is_empty() && rv != revision.to_string() {
        return Err(ApiError::conflict(info, name));
    }
    Ok(())
}

/// `PUT .../{plural}/{name}`.
pub async fn update(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let mut wanted = parse_body(&ctx.headers, body)?;
    check_type(&ctx.info, &mut wanted)?;
    check_name(ctx, &wanted)?;
    check_namespace_field(ctx, &mut wanted)?;
    let warnings = strategy::check_fields(ctx, &wanted, Some(body))?;
    let manager = crate::fieldmanager::manager_name(ctx)?;
    let requested = wanted.pointer("/metadata/managedFields").cloned();
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    let outcome = update_addressed(ctx, |current, revision| {
        check_resource_version(&info, &name, &wanted, revision)?;
        let mut new = strategy::prepare_update(&info, current, wanted.clone(), false)?;
        crate::fieldmanager::record_update(
            &info,
            &manager,
            None,
            current,
            &mut new,
            requested.as_ref(),
        );
        Ok(Change::Update(new))
    })
    .await?;
    let response = respond_object(ctx, StatusCode::OK, &outcome.object);
    Ok(with_warnings(response, &warnings))
}

/// Fails when the body names another object than the path.
pub fn check_name(ctx: &Ctx, obj: &Value) -> Result<(), ApiError> {
    let body_name = object::name(obj);
    if !body_name.is_empty() && body_name != ctx.name() {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            ctx.name()
        )));
    }
    Ok(())
}
