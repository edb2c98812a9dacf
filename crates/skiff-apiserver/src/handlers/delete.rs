//! DELETE of one object and of a collection: DeleteOptions (preconditions, grace period,
//! propagation policy, dry run), finalizers (`deletionTimestamp` instead of deleting while
//! any remain) and graceful deletion of pods bound to a node.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;

use super::read::list_page;
use super::write::{Change, Outcome, guaranteed_update};
use super::{Ctx, Filter, respond_object};
use crate::response;
use crate::state::AppState;
use crate::status::ApiError;
use crate::{object, storage};

/// Namespaces that may never be deleted.
const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// The DeleteOptions of a request (body and query parameters).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    grace_period: Option<i64>,
    propagation: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    fn read(ctx: &Ctx, body: &[u8]) -> Result<DeleteOptions, ApiError> {
        let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            super::parse_body(&ctx.headers, body)?
        };
        let grace_period = match ctx.query.get("gracePeriodSeconds") {
            Some(g) => Some(g.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("gracePeriodSeconds {g:?} is not a number"))
            })?),
            None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
        };
        let propagation = ctx
            .query
            .get("propagationPolicy")
            .map(str::to_string)
            .or_else(|| {
                body.get("propagationPolicy")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        if let Some(p) = &propagation
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {p:?} is not valid: use Orphan, Background or Foreground"
            )));
        }
        let pre = body.get("preconditions");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        Ok(DeleteOptions {
            grace_period,
            propagation,
            uid: text(pre.and_then(|p| p.get("uid"))),
            resource_version: text(pre.and_then(|p| p.get("resourceVersion"))),
            dry_run: ctx.query.dry_run()
                || body
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty()),
        })
    }
}

/// The grace period of a pod delete; `None` when the object goes at once.
fn pod_grace_period(info: &ResourceInfo, current: &Value, options: &DeleteOptions) -> Option<i64> {
    if !info.group.is_empty() || info.plural != "pods" {
        return None;
    }
    let bound = current
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        current.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return None;
    }
    let grace = options.grace_period.unwrap_or_else(|| {
        current
            .pointer("/spec/terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(30)
    });
    (grace > 0).then_some(grace)
}

/// Deletes one object as `options` say; the outcome tells whether it is gone.
async fn delete_one(
    state: &Arc<AppState>,
    info: &ResourceInfo,
    namespace: Option<&str>,
    name: &str,
    options: &DeleteOptions,
) -> Result<Outcome, ApiError> {
    let gc = state.options.garbage_collector;
    guaranteed_update(state, info, namespace, name, options.dry_run, |current, revision| {
        if let Some(uid) = &options.uid {
            let actual = object::meta_str(current, "uid");
            if uid != actual {
                return Err(ApiError::conflict_because(
                    info,
                    name,
                    &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"),
                ));
            }
        }
        if let Some(rv) = &options.resource_version
            && *rv != revision.to_string()
        {
            return Err(ApiError::conflict_because(
                info,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {revision}"
                ),
            ));
        }
        let mut finalizers = object::finalizers(current);
        if gc && !object::is_deleting(current) {
            let extra = match options.propagation.as_deref() {
                Some("Foreground") => Some("foregroundDeletion"),
                Some("Orphan") => Some("orphan"),
                _ => None,
            };
            if let Some(f) = extra
                && !finalizers.iter().any(|x| x == f)
            {
                finalizers.push(f.to_string());
            }
        }
        let grace = pod_grace_period(info, current, options);
        if finalizers.is_empty() && grace.is_none() {
            return Ok(Change::Delete);
        }
        let mut new = current.clone();
        let meta = object::meta_mut(&mut new);
        if !finalizers.is_empty() {
            meta.insert("finalizers".into(), json!(finalizers));
        }
        let grace = grace.unwrap_or(0);
        let shorter = meta
            .get("deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_none_or(|g| grace < g);
        if meta.get("deletionTimestamp").is_none() || shorter {
            let at = SystemTime::now() + Duration::from_secs(grace.max(0) as u64);
            meta.insert("deletionTimestamp".into(), json!(object::rfc3339(at)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        Ok(Change::Update(new))
    })
    .await
}

/// `DELETE .../{plural}/{name}`.
pub async fn delete(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let options = DeleteOptions::read(ctx, body)?;
    let is_namespace = ctx.info.group.is_empty() && ctx.info.plural == "namespaces";
    if is_namespace {
        if PROTECTED_NAMESPACES.contains(&ctx.name()) {
            return Err(ApiError::forbidden(format!(
                "namespaces \"{}\" is forbidden: this namespace may not be deleted",
                ctx.name()
            )));
        }
        return delete_namespace(ctx, &options).await;
    }
    let outcome = delete_one(&ctx.state, &ctx.info, ctx.ns(), ctx.name(), &options).await?;
    Ok(respond_object(ctx, StatusCode::OK, &outcome.object))
}

/// Deletes a namespace: marks it Terminating, deletes what it holds, and deletes it once
/// nothing is left (at once, or from a background task while finalizers hold objects).
///
/// This is the namespace controller's work done inline until Skiff has that controller.
async fn delete_namespace(ctx: &Ctx, options: &DeleteOptions) -> Result<Response, ApiError> {
    let name = ctx.name().to_string();
    if options.dry_run {
        let (obj, _) = storage::get(ctx.state.store.as_ref(), &ctx.info, None, &name).await?;
        return Ok(respond_object(ctx, StatusCode::OK, &obj));
    }
    let outcome = guaranteed_update(&ctx.state, &ctx.info, None, &name, false, |current, _| {
        let mut new = current.clone();
        let meta = object::meta_mut(&mut new);
        if meta.get("deletionTimestamp").is_none() {
            meta.insert("deletionTimestamp".into(), json!(object::now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
        }
        new["status"] = json!({"phase": "Terminating"});
        new["spec"] = json!({"finalizers": ["kubernetes"]});
        Ok(Change::Update(new))
    })
    .await?;
    if ctx.state.options.namespace_controller {
        return Ok(respond_object(ctx, StatusCode::OK, &outcome.object));
    }
    let remaining = delete_namespace_contents(&ctx.state, &name).await?;
    if remaining == 0 {
        let finished = finish_namespace(&ctx.state, &ctx.info, &name).await?;
        return Ok(respond_object(ctx, StatusCode::OK, &finished));
    }
    let state = Arc::clone(&ctx.state);
    let info = ctx.info.clone();
    tokio::spawn(async move {
        let mut shutdown = state.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
            match delete_namespace_contents(&state, &name).await {
                Ok(0) => {
                    if let Err(err) = finish_namespace(&state, &info, &name).await {
                        tracing::warn!(namespace = %name, error = %err, "cannot finish namespace deletion");
                    }
                    return;
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(namespace = %name, error = %err, "cannot empty namespace");
                }
            }
        }
    });
    Ok(respond_object(ctx, StatusCode::OK, &outcome.object))
}

async fn finish_namespace(
    state: &Arc<AppState>,
    info: &ResourceInfo,
    name: &str,
) -> Result<Value, ApiError> {
    let outcome =
        guaranteed_update(state, info, None, name, false, |_, _| Ok(Change::Delete)).await?;
    Ok(outcome.object)
}

/// Deletes every object in a namespace (finalizers respected: such objects get their
/// `deletionTimestamp`); returns how many are still there.
pub async fn delete_namespace_contents(
    state: &Arc<AppState>,
    namespace: &str,
) -> Result<usize, ApiError> {
    let mut seen = std::collections::HashSet::new();
    let mut remaining = 0;
    let options = DeleteOptions {
        grace_period: Some(0),
        ..DeleteOptions::default()
    };
    for info in state.registry().all() {
        if !info.namespaced || !seen.insert(info.storage_resource()) {
            continue;
        }
        let prefix = storage::prefix(info, Some(namespace))?;
        let page = state
            .store
            .list(&prefix, None, None, None)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        for kv in page.items {
            let Ok(obj) = storage::decode(info, &kv) else {
                continue;
            };
            let name = object::name(&obj).to_string();
            match delete_one(state, info, Some(namespace), &name, &options).await {
                Ok(outcome) if !outcome.deleted => remaining += 1,
                Ok(_) => {}
                Err(err) if err.code == 404 => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(remaining)
}

/// `DELETE .../{plural}` (deletecollection): deletes every object the selectors match.
pub async fn delete_collection(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let options = DeleteOptions::read(ctx, body)?;
    let filter = Filter::from_ctx(ctx)?;
    let page = list_page(ctx, &filter).await?;
    let mut items = Vec::new();
    for obj in page.items {
        let name = object::name(&obj).to_string();
        let ns = object::namespace(&obj).to_string();
        let ns = Some(ns.as_str()).filter(|n| !n.is_empty());
        match delete_one(&ctx.state, &ctx.info, ns, &name, &options).await {
            Ok(outcome) => items.push(outcome.object),
            Err(err) if err.code == 404 => {}
            Err(err) => return Err(err),
        }
    }
    Ok(response::json(
        StatusCode::OK,
        &json!({
            "kind": format!("{}List", ctx.info.kind),
            "apiVersion": ctx.info.api_version(),
            "metadata": {"resourceVersion": page.revision.to_string()},
            "items": items,
        }),
    ))
}
