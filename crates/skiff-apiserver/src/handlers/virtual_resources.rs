//! Create-only review resources that are answered, never stored: `SelfSubjectReview`
//! (`kubectl auth whoami`), `TokenReview` (who a bearer token is: what node agents ask
//! before serving a request that carries one, as kubelet's `--authentication-token-webhook`)
//! and the authorization reviews (`kubectl auth can-i`, and node agents' checks).
//!
//! The access reviews are answered from RBAC by [`crate::authz::review`].

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;

use super::{Ctx, parse_body};
use crate::response;
use crate::status::ApiError;

/// (group, version, kind, plural, namespaced)
const VIRTUAL: &[(&str, &str, &str, &str, bool)] = &[
    (
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        false,
    ),
    (
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        false,
    ),
    (
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        true,
    ),
];

/// The review resources, for the registry.
pub fn infos() -> Vec<ResourceInfo> {
    VIRTUAL
        .iter()
        .map(|(group, version, kind, plural, namespaced)| ResourceInfo {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            plural: plural.to_string(),
            singular: kind.to_ascii_lowercase(),
            namespaced: *namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            verbs: vec!["create".to_string()],
            subresources: Vec::new(),
            custom: None,
        })
        .collect()
}

/// Whether the resource is a review answered here.
pub fn is_virtual(info: &ResourceInfo) -> bool {
    VIRTUAL
        .iter()
        .any(|(g, _, _, p, _)| *g == info.group && *p == info.plural)
}

/// Answers a review.
pub async fn handle(ctx: &Ctx, method: &Method, body: &[u8]) -> Result<Response, ApiError> {
    if *method != Method::POST || ctx.name.is_some() {
        return Err(ApiError::method_not_allowed());
    }
    let mut review = if body.is_empty() {
        json!({})
    } else {
        parse_body(&ctx.headers, body)?
    };
    if !review.is_object() {
        return Err(ApiError::bad_request("the review must be an object"));
    }
    review["apiVersion"] = json!(ctx.info.api_version());
    review["kind"] = json!(ctx.info.kind);
    if !review.get("metadata").is_some_and(Value::is_object) {
        review["metadata"] = json!({"creationTimestamp": Value::Null});
    }
    if ctx.info.namespaced {
        // As the generic create handler, then kube's LocalSubjectAccessReview storage: the
        // review carries the namespace it was posted to.
        let Some(path_ns) = ctx.ns() else {
            return Err(ApiError::bad_request(
                "namespace is required on this type: ",
            ));
        };
        let named = review
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !named.is_empty() && named != path_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        review["metadata"]["namespace"] = json!(path_ns);
    }
    let user = json!({
        "username": ctx.identity.username,
        "groups": ctx.identity.groups,
    });
    review["status"] = match ctx.info.plural.as_str() {
        "selfsubjectreviews" => json!({"userInfo": user}),
        "tokenreviews" => token_review(ctx, &review).await?,
        _ => {
            crate::authz::review::status(&ctx.state, &ctx.info, ctx.ns(), &ctx.identity, &review)
                .await?
        }
    };
    Ok(response::json(StatusCode::CREATED, &review))
}

/// The status of a TokenReview: whether `spec.token` authenticates (as a bearer token on
/// this server would: a static token or a service account token) and as whom.
async fn token_review(ctx: &Ctx, review: &Value) -> Result<Value, ApiError> {
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    Ok(
        match crate::serviceaccount::authenticate(&ctx.state, token).await {
            Some(identity) => json!({
                "authenticated": true,
                "user": {"username": identity.username, "groups": identity.groups},
            }),
            None => json!({"authenticated": false, "user": {}}),
        },
    )
}
