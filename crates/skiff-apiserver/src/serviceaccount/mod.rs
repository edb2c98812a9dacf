//! Service accounts in the API server: token signing and checking ([`token`]), the
//! `serviceaccounts/token` subresource (TokenRequest), bearer-token authentication of
//! service account tokens, and the ServiceAccount admission of new pods ([`admission`]).

pub mod admission;
pub mod token;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::handlers::{Ctx, parse_body};
use crate::state::{AppState, Identity};
use crate::status::ApiError;
use crate::{object, response, storage};

pub use token::{Claims, KubernetesClaim, ObjectRef, TokenError, TokenSigner, unix_now};

/// The shortest lifetime a TokenRequest may ask for (kube-apiserver's ten minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;
/// The lifetime of a TokenRequest that names none.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The longest lifetime (2^32 seconds, as kube-apiserver's validation allows).
pub const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;

/// The user name of a ServiceAccount.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The identity of a ServiceAccount: its user name and the groups kube-apiserver gives it.
pub fn identity(namespace: &str, name: &str) -> Identity {
    Identity {
        username: username(namespace, name),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    }
}

/// Who a bearer token belongs to: a static token (the admin's), or a service account token
/// whose signature, time window and audience check and whose ServiceAccount (and bound pod)
/// still exist with the uids the token names (a pod past its deletion time no longer counts).
pub async fn authenticate(state: &AppState, token: &str) -> Option<Identity> {
    if let Some(identity) = state.authenticate(token) {
        return Some(identity);
    }
    let signer = state.options.token_signer.as_ref()?;
    let claims = match signer.verify(token, token::unix_now()) {
        Ok(claims) => claims,
        Err(err) => {
            tracing::debug!(error = %err, "bearer token refused");
            return None;
        }
    };
    let k = &claims.kubernetes;
    let ns = Some(k.namespace.as_str());
    let sa_info = state.find("", "v1", "serviceaccounts")?;
    let (sa, _) = storage::get(state.store.as_ref(), &sa_info, ns, &k.serviceaccount.name)
        .await
        .ok()?;
    if object::meta_str(&sa, "uid") != k.serviceaccount.uid || object::is_deleting(&sa) {
        tracing::debug!(sa = %k.serviceaccount.name, "token of a service account that is gone");
        return None;
    }
    if let Some(pod_ref) = &k.pod {
        let pod_info = state.find("", "v1", "pods")?;
        let (pod, _) = storage::get(state.store.as_ref(), &pod_info, ns, &pod_ref.name)
            .await
            .ok()?;
        let gone = object::meta_str(&pod, "uid") != pod_ref.uid
            || pod
                .pointer("/metadata/deletionTimestamp")
                .and_then(serde_json::Value::as_str)
                .and_then(skiff_apimachinery::time::parse_rfc3339)
                .is_some_and(|at| at < std::time::SystemTime::now());
        if gone {
            tracing::debug!(pod = %pod_ref.name, "token bound to a pod that is gone");
            return None;
        }
    }
    Some(identity(&k.namespace, &k.serviceaccount.name))
}

fn invalid(name: &str, field: &str, message: String) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: format!(
            "TokenRequest.authentication.k8s.io \"{name}\" is invalid: {field}: {message}"
        ),
        details: Some(json!({
            "name": name,
            "group": "authentication.k8s.io",
            "kind": "TokenRequest",
            "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}],
        })),
    }
}

/// `POST serviceaccounts/{name}/token`: issues a token for the ServiceAccount (TokenRequest,
/// authentication.k8s.io/v1), optionally bound to a pod.
pub async fn token_request(ctx: &Ctx, body: &[u8]) -> Result<Response, ApiError> {
    let signer =
        ctx.state.options.token_signer.clone().ok_or_else(|| {
            ApiError::unavailable("this server has no service account signing key")
        })?;
    let name = ctx.name().to_string();
    let ns = ctx.ns().unwrap_or_default().to_string();
    let request = if body.is_empty() {
        json!({})
    } else {
        parse_body(&ctx.headers, body)?
    };
    let kind = request.get("kind").and_then(Value::as_str).unwrap_or("");
    if !kind.is_empty() && kind != "TokenRequest" {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type TokenRequest): Kind={kind}"
        )));
    }
    let (sa, _) = storage::get(ctx.state.store.as_ref(), &ctx.info, Some(&ns), &name).await?;
    let spec = request.get("spec").cloned().unwrap_or(json!({}));
    let mut audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        audiences = signer.audiences.clone();
    }
    let expiration = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    if expiration < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            "",
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        ));
    }
    if expiration > MAX_EXPIRATION_SECONDS {
        return Err(invalid(
            "",
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        ));
    }
    let mut pod = None;
    let mut node = None;
    let bound = spec
        .get("boundObjectRef")
        .filter(|b| b.is_object())
        .cloned();
    // NodeRestriction: a node asks only for tokens bound to a pod it runs.
    let requesting_node = crate::noderestriction::node_name(&ctx.identity).map(str::to_string);
    if requesting_node.is_some()
        && bound
            .as_ref()
            .and_then(|b| b.get("kind"))
            .and_then(Value::as_str)
            != Some("Pod")
    {
        return Err(node_token_forbidden(
            &name,
            "node requested token not bound to a pod",
        ));
    }
    if let Some(bound) = &bound {
        let bkind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
        let bname = bound.get("name").and_then(Value::as_str).unwrap_or("");
        let buid = bound.get("uid").and_then(Value::as_str).unwrap_or("");
        if bkind != "Pod" {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount \"{name}\" to object of kind {bkind:?}: only Pod is supported"
            )));
        }
        let pod_info = ctx
            .state
            .find("", "v1", "pods")
            .ok_or_else(|| ApiError::internal("pods are not served"))?;
        let (obj, _) = storage::get(ctx.state.store.as_ref(), &pod_info, Some(&ns), bname).await?;
        let uid = object::meta_str(&obj, "uid").to_string();
        if !buid.is_empty() && buid != uid {
            return Err(ApiError::conflict_because(
                &pod_info,
                bname,
                &format!(
                    "the UID in the bound object reference ({buid}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        let pod_sa = obj
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default");
        if pod_sa != name {
            return Err(ApiError::bad_request(format!(
                "cannot bind token for serviceaccount \"{name}\" to pod \"{bname}\": the pod runs as serviceaccount \"{pod_sa}\""
            )));
        }
        let pod_node = obj.pointer("/spec/nodeName").and_then(Value::as_str);
        if let Some(requesting) = &requesting_node
            && pod_node != Some(requesting.as_str())
        {
            return Err(node_token_forbidden(
                &name,
                "node requested token bound to a pod scheduled on a different node",
            ));
        }
        if let Some(n) = pod_node.filter(|n| !n.is_empty()) {
            node = Some(ObjectRef {
                name: n.to_string(),
                uid: String::new(),
            });
        }
        pod = Some(ObjectRef {
            name: bname.to_string(),
            uid,
        });
    }
    let now = token::unix_now();
    let claims = Claims {
        iss: signer.issuer.clone(),
        sub: username(&ns, &name),
        aud: audiences.clone(),
        exp: now + expiration,
        iat: now,
        nbf: now,
        jti: object::new_uid(),
        kubernetes: KubernetesClaim {
            namespace: ns.clone(),
            serviceaccount: ObjectRef {
                name: name.clone(),
                uid: object::meta_str(&sa, "uid").to_string(),
            },
            pod,
            node,
        },
    };
    let token = signer
        .sign(&claims)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let expires = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(claims.exp).unwrap_or(0));
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(bound) = bound {
        out_spec["boundObjectRef"] = bound;
    }
    let out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": null},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": object::rfc3339(expires)},
    });
    Ok(response::json(StatusCode::CREATED, &out))
}

/// `/.well-known/openid-configuration` and `/openid/v1/jwks`, when this server signs tokens.
pub fn discovery_document(state: &Arc<AppState>, path: &str) -> Option<Result<Response, ApiError>> {
    let doc = match path {
        "/.well-known/openid-configuration" => state
            .options
            .token_signer
            .as_ref()
            .map(|s| s.openid_configuration()),
        "/openid/v1/jwks" => state.options.token_signer.as_ref().map(|s| s.jwks()),
        _ => return None,
    };
    Some(
        doc.map(|d| response::json(StatusCode::OK, &d))
            .ok_or_else(ApiError::no_such_path),
    )
}

/// NodeRestriction's refusal of a node's token request (403), in kube-apiserver's words.
fn node_token_forbidden(name: &str, reason: &str) -> ApiError {
    ApiError {
        details: Some(json!({"kind": "serviceaccounts", "name": name})),
        ..ApiError::forbidden(format!("serviceaccounts \"{name}\" is forbidden: {reason}"))
    }
}
