//! API errors as Kubernetes `Status` objects (`meta.k8s.io/v1`), with the reason, code and
//! message kubectl users know (`pods "web" not found`, `Operation cannot be fulfilled ...`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;
use skiff_store::StoreError;

/// One field error of a 422 Invalid status (`details.causes[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueRequired`.
    pub reason: String,
    /// Human-readable message, e.g. `Required value`.
    pub message: String,
    /// The field path, e.g. `spec.containers[0].image`.
    pub field: String,
}

/// An API error: everything needed to answer a request with a `Status` object.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, when the error concerns one object.
    pub details: Option<Value>,
}

/// The resource name used in messages: `pods`, or `deployments.apps` for grouped resources.
pub fn qualified_resource(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.plural.clone()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

fn details(info: &ResourceInfo, name: &str) -> Value {
    let mut details = json!({ "name": name, "kind": info.plural });
    if !info.group.is_empty() {
        details["group"] = json!(info.group);
    }
    details
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    /// 404: `pods "web" not found`.
    pub fn not_found(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError {
            details: Some(details(info, name)),
            ..ApiError::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", qualified_resource(info)),
            )
        }
    }

    /// 404 for a path the server does not serve.
    pub fn no_such_path() -> ApiError {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 409: `pods "web" already exists`.
    pub fn already_exists(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError {
            details: Some(details(info, name)),
            ..ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", qualified_resource(info)),
            )
        }
    }

    /// 409 Conflict: the object changed since the client read it.
    pub fn conflict(info: &ResourceInfo, name: &str) -> ApiError {
        ApiError::conflict_because(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 Conflict with a reason of its own (failed preconditions, a pod already bound).
    pub fn conflict_because(info: &ResourceInfo, name: &str, why: &str) -> ApiError {
        ApiError {
            details: Some(details(info, name)),
            ..ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    qualified_resource(info)
                ),
            )
        }
    }

    /// 409 Conflict of a server-side apply (kube's `NewApplyConflict`): the message lists the
    /// conflicts, `details.causes` has one `FieldManagerConflict` per field, without a name.
    pub fn apply_conflict(message: String, causes: Vec<Cause>) -> ApiError {
        let causes: Vec<Value> = causes
            .iter()
            .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
            .collect();
        ApiError {
            details: Some(json!({ "causes": causes })),
            ..ApiError::new(409, "Conflict", message)
        }
    }

    /// 422 Invalid with field causes: `Pod "web" is invalid: spec.containers: Required value`.
    pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> ApiError {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| {
                if c.field.is_empty() {
                    c.message.clone()
                } else {
                    format!("{}: {}", c.field, c.message)
                }
            })
            .collect();
        let summary = if summary.len() == 1 {
            summary.join("")
        } else {
            format!("[{}]", summary.join(", "))
        };
        let mut details = json!({ "name": name, "kind": info.kind });
        if !info.group.is_empty() {
            details["group"] = json!(info.group);
        }
        details["causes"] = causes
            .iter()
            .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
            .collect();
        ApiError {
            details: Some(details),
            ..ApiError::new(
                422,
                "Invalid",
                format!("{} \"{name}\" is invalid: {summary}", info.kind),
            )
        }
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized() -> ApiError {
        ApiError::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 Forbidden.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "Forbidden", message)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    /// 410 Expired: the resource version asked for is older than the history kept.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(413, "RequestEntityTooLarge", message)
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(message: impl Into<String>) -> ApiError {
        ApiError::new(415, "UnsupportedMediaType", message)
    }

    /// 406 NotAcceptable.
    pub fn not_acceptable(message: impl Into<String>) -> ApiError {
        ApiError::new(406, "NotAcceptable", message)
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "ServiceUnavailable", message)
    }

    /// Maps a store error on one object to its status.
    pub fn from_store(err: StoreError, info: &ResourceInfo, name: &str) -> ApiError {
        match err {
            StoreError::NotFound { .. } => ApiError::not_found(info, name),
            StoreError::AlreadyExists { .. } => ApiError::already_exists(info, name),
            StoreError::Conflict { .. } => ApiError::conflict(info, name),
            StoreError::Compacted { requested, .. } => {
                ApiError::expired(format!("too old resource version: {requested}"))
            }
            StoreError::FutureRevision { requested, current } => ApiError::new(
                504,
                "Timeout",
                format!(
                    "Too large resource version: {requested}, current: {current}; wait and try again"
                ),
            ),
            StoreError::TooLarge { size, limit, .. } => ApiError::too_large(format!(
                "the object is {size} bytes, more than the limit of {limit} bytes"
            )),
            other => ApiError::internal(other.to_string()),
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

/// A `Status` of success, as answered by binding and eviction.
pub fn success() -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        crate::response::json(code, &self.to_status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_apimachinery::Registry;

    #[test]
    fn not_found_reads_like_kube_apiserver() {
        let registry = Registry::builtin();
        let pods = registry.find("", "v1", "pods").unwrap();
        let status = ApiError::not_found(pods, "web").to_status();
        assert_eq!(status["message"], "pods \"web\" not found");
        assert_eq!(status["code"], 404);
        assert_eq!(status["details"]["kind"], "pods");
        let deploy = registry.find("apps", "v1", "deployments").unwrap();
        let status = ApiError::conflict(deploy, "d").to_status();
        assert!(status["message"].as_str().unwrap().starts_with(
            "Operation cannot be fulfilled on deployments.apps \"d\": the object has been modified"
        ));
    }

    #[test]
    fn invalid_lists_its_causes() {
        let registry = Registry::builtin();
        let pods = registry.find("", "v1", "pods").unwrap();
        let err = ApiError::invalid(
            pods,
            "web",
            vec![Cause {
                reason: "FieldValueRequired".into(),
                message: "Required value".into(),
                field: "spec.containers".into(),
            }],
        );
        assert_eq!(
            err.message,
            "Pod \"web\" is invalid: spec.containers: Required value"
        );
        assert_eq!(
            err.to_status()["details"]["causes"][0]["field"],
            "spec.containers"
        );
    }
}
