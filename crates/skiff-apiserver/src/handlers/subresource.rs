//! Subresources: `status` (owns `.status`), `approval` (CertificateSigningRequests' decision,
//! [`super::approval`]), `scale` (autoscaling/v1 Scale), `pods/binding`,
//! `pods/eviction`, `pods/ephemeralcontainers`, `namespaces/finalize`, and the node-proxied
//! ones (`log`, `exec`, `attach`, `portforward`, `proxy`) that need a node agent.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::patch::{PatchType, apply_patch, patch, patch_type};
use super::write::{Change, check_resource_version, update_addressed};
use super::{Ctx, parse_body, respond_object};
use crate::status::{ApiError, success};
use crate::{object, response, storage, strategy};

/// Serves `.../{plural}/{name}/{subresource}`.
pub async fn handle(
    ctx: &Ctx,
    method: &Method,
    _rest: &[String],
    body: &[u8],
) -> Result<Response, ApiError> {
    let sub = ctx.subresource.as_deref().unwrap_or_default();
    match (sub, method.clone()) {
        ("status" | "ephemeralcontainers" | "finalize", Method::GET) => get_object(ctx).await,
        ("status", Method::PUT) => replace_field(ctx, body, "status").await,
        ("status", Method::PATCH) => patch(ctx, body).await,
        ("approval", Method::GET) => get_object(ctx).await,
        ("approval", Method::PUT) => super::approval::update(ctx, body, None).await,
        ("approval", Method::PATCH) => super::approval::update(ctx, &[], Some(body)).await,
        ("ephemeralcontainers", Method::PUT) => {
            replace_spec_field(ctx, body, "ephemeralContainers", None).await
        }
        ("ephemeralcontainers", Method::PATCH) => {
            replace_spec_field(ctx, &[], "ephemeralContainers", Some(body)).await
        }
        ("finalize", Method::PUT) => replace_spec_field(ctx, body, "finalizers", None).await,
        ("scale", Method::GET) => {
            let (obj, _) =
                storage::get(ctx.state.store.as_ref(), &ctx.info, ctx.ns(), ctx.name()).await?;
            Ok(response::json(StatusCode::OK, &scale_of(&ctx.info, &obj)))
        }
        ("scale", Method::PUT) => update_scale(ctx, Some(body), None).await,
        ("scale", Method::PATCH) => update_scale(ctx, None, Some(body)).await,
        ("binding", Method::POST) => bind(ctx, body).await,
        ("eviction", Method::POST) => super::eviction::evict(ctx, body).await,
        ("log", Method::GET)
            if ctx.info.plural == "pods" && ctx.state.options.kubelet_client.is_some() =>
        {
            super::node_proxy::pod_log(ctx).await
        }
        ("log" | "exec" | "attach" | "portforward" | "proxy", _) => {
            storage::get(ctx.state.store.as_ref(), &ctx.info, ctx.ns(), ctx.name()).await?;
            Err(ApiError::unavailable(format!(
                "no node agent is running: {}/{sub} is served by the node agent of the {}'s node, and none has joined this server",
                ctx.info.plural, ctx.info.singular
            )))
        }
        ("token", Method::POST) => crate::serviceaccount::token_request(ctx, body).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

async fn get_object(ctx: &Ctx) -> Result<Response, ApiError> {
    let (obj, _) = storage::get(ctx.state.store.as_ref(), &ctx.info, ctx.ns(), ctx.name()).await?;
    Ok(respond_object(ctx, StatusCode::OK, &obj))
}

/// PUT of the status subresource: only `.status` changes.
async fn replace_field(ctx: &Ctx, body: &[u8], _field: &str) -> Result<Response, ApiError> {
    let mut wanted = parse_body(&ctx.headers, body)?;
    super::write::check_type(&ctx.info, &mut wanted)?;
    super::write::check_name(ctx, &wanted)?;
    let manager = crate::fieldmanager::manager_name(ctx)?;
    let requested = wanted.pointer("/metadata/managedFields").cloned();
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    let outcome = update_addressed(ctx, |current, revision| {
        check_resource_version(&info, &name, &wanted, revision)?;
        let mut new = strategy::prepare_update(&info, current, wanted.clone(), true)?;
        crate::fieldmanager::record_update(
            &info,
            &manager,
            Some("status"),
            current,
            &mut new,
            requested.as_ref(),
        );
        Ok(Change::Update(new))
    })
    .await?;
    Ok(respond_object(ctx, StatusCode::OK, &outcome.object))
}

/// PUT (whole body) or PATCH (`patch_body`) of a subresource owning one field of `.spec`.
async fn replace_spec_field(
    ctx: &Ctx,
    body: &[u8],
    field: &str,
    patch_body: Option<&[u8]>,
) -> Result<Response, ApiError> {
    let kind = match patch_body {
        Some(_) => Some(patch_type(ctx)?),
        None => None,
    };
    let wanted = match patch_body {
        Some(_) => None,
        None => Some(parse_body(&ctx.headers, body)?),
    };
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    let outcome = update_addressed(ctx, |current, revision| {
        let source = match (&wanted, kind, patch_body) {
            (Some(w), _, _) => w.clone(),
            (None, Some(kind), Some(p)) => apply_patch(&info, kind, current, p)?,
            _ => return Err(ApiError::bad_request("nothing to change")),
        };
        check_resource_version(&info, &name, &source, revision)?;
        let mut new = current.clone();
        let value = source
            .get("spec")
            .and_then(|s| s.get(field))
            .cloned()
            .unwrap_or(Value::Null);
        if !new.get("spec").is_some_and(Value::is_object) {
            new["spec"] = json!({});
        }
        new["spec"][field] = value;
        let finalized = field == "finalizers"
            && object::is_deleting(&new)
            && object::finalizers(&new).is_empty()
            && new["spec"]["finalizers"]
                .as_array()
                .is_none_or(|list| list.is_empty());
        if finalized {
            // The namespace controller released the last finalizer: the namespace goes.
            return Ok(Change::Delete);
        }
        Ok(Change::Update(new))
    })
    .await?;
    Ok(respond_object(ctx, StatusCode::OK, &outcome.object))
}

/// The label selector of a workload as the string form Scale carries.
fn selector_string(obj: &Value) -> String {
    let Some(selector) = obj.pointer("/spec/selector") else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match e.get("operator").and_then(Value::as_str) {
                Some("In") => parts.push(format!("{key} in ({})", values.join(","))),
                Some("NotIn") => parts.push(format!("{key} notin ({})", values.join(","))),
                Some("Exists") => parts.push(key.to_string()),
                Some("DoesNotExist") => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    if parts.is_empty()
        && let Some(labels) = selector.as_object()
        && labels.values().all(Value::is_string)
    {
        // ReplicationControllers use a plain map.
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    parts.join(",")
}

/// The autoscaling/v1 Scale of a workload.
pub fn to_scale(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut metadata = json!({});
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = meta.get(field) {
            metadata[field] = v.clone();
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector_string(obj),
        },
    })
}

/// The Scale of a workload or of a custom resource (at its CRD's paths).
fn scale_of(info: &skiff_apimachinery::ResourceInfo, obj: &Value) -> Value {
    match crate::custom_resource::scale_paths(info) {
        Some(paths) => crate::custom_resource::to_scale(paths, obj),
        None => to_scale(obj),
    }
}

/// PUT (`body`) or PATCH (`patch_body`) of `/scale`: changes `spec.replicas` (a custom
/// resource's `specReplicasPath`).
async fn update_scale(
    ctx: &Ctx,
    body: Option<&[u8]>,
    patch_body: Option<&[u8]>,
) -> Result<Response, ApiError> {
    let kind = match patch_body {
        Some(_) => Some(match patch_type(ctx)? {
            // A Scale has no lists: a strategic merge patch is a merge patch.
            PatchType::Strategic => PatchType::Merge,
            other => other,
        }),
        None => None,
    };
    let wanted = match body {
        Some(b) => Some(parse_body(&ctx.headers, b)?),
        None => None,
    };
    let manager = crate::fieldmanager::manager_name(ctx)?;
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    let outcome = update_addressed(ctx, |current, revision| {
        let scale = scale_of(&info, current);
        let new_scale = match (&wanted, kind, patch_body) {
            (Some(w), _, _) => w.clone(),
            (None, Some(kind), Some(p)) => apply_patch(&info, kind, &scale, p)?,
            _ => return Err(ApiError::bad_request("nothing to change")),
        };
        check_resource_version(&info, &name, &new_scale, revision)?;
        let replicas = new_scale
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .ok_or_else(|| ApiError::bad_request("the Scale must set spec.replicas to a number"))?;
        if replicas < 0 {
            return Err(ApiError::invalid(
                &info,
                &name,
                vec![crate::status::Cause {
                    reason: "FieldValueInvalid".into(),
                    message: format!(
                        "Invalid value: {replicas}: must be greater than or equal to 0"
                    ),
                    field: "spec.replicas".into(),
                }],
            ));
        }
        let mut new = current.clone();
        match crate::custom_resource::scale_paths(&info) {
            Some(paths) => skiff_apimachinery::structural::set_path(
                &mut new,
                &paths.spec_replicas,
                json!(replicas),
            ),
            None => {
                if !new.get("spec").is_some_and(Value::is_object) {
                    new["spec"] = json!({});
                }
                new["spec"]["replicas"] = json!(replicas);
            }
        }
        let mut new = strategy::prepare_update(&info, current, new, false)?;
        crate::fieldmanager::record_update(&info, &manager, Some("scale"), current, &mut new, None);
        Ok(Change::Update(new))
    })
    .await?;
    Ok(response::json(
        StatusCode::OK,
        &scale_of(&ctx.info, &outcome.object),
    ))
}

/// `POST pods/{name}/binding`: assigns the pod to a node.
async fn bind(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let binding = parse_body(&ctx.headers, body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("the Binding must name a target node"))?
        .to_string();
    let info = ctx.info.clone();
    let name = ctx.name().to_string();
    update_addressed(ctx, |current, _| {
        if object::is_deleting(current) {
            return Err(ApiError::conflict_because(
                &info,
                &name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        let assigned = current
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !assigned.is_empty() {
            return Err(ApiError::conflict_because(
                &info,
                &name,
                &format!("pod {name} is already assigned to node \"{assigned}\""),
            ));
        }
        let mut new = current.clone();
        new["spec"]["nodeName"] = json!(node);
        let mut conditions: Vec<Value> = new
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
        conditions.push(json!({
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": null,
            "lastTransitionTime": object::now(),
        }));
        if !new.get("status").is_some_and(Value::is_object) {
            new["status"] = json!({});
        }
        new["status"]["conditions"] = Value::Array(conditions);
        Ok(Change::Update(new))
    })
    .await?;
    Ok(response::json(StatusCode::CREATED, &success()))
}
