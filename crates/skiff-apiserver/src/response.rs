//! Building HTTP responses: JSON bodies with the content type clients check.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::Value;

/// The content type of every JSON answer.
pub const JSON: &str = "application/json";

/// A JSON response with `code`.
pub fn json(code: StatusCode, value: &Value) -> Response {
    json_as(code, value, JSON)
}

/// A JSON response with an explicit content type (aggregated discovery, Tables).
pub fn json_as(code: StatusCode, value: &Value, content_type: &str) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap_or(HeaderValue::from_static(JSON)),
    );
    response
}

/// A plain-text response (`/healthz`, `/metrics`).
pub fn text(code: StatusCode, body: String, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
