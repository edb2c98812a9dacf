//! The generic resource handler: one code path for every resource, built-in or custom,
//! parameterised by its [`ResourceInfo`] and the small per-resource rules in
//! [`crate::strategy`].

mod approval;
mod delete;
mod eviction;
pub mod node_proxy;
mod patch;
mod read;
pub mod stream_proxy;
mod subresource;
mod virtual_resources;
mod watch;
mod write;

use std::sync::Arc;
use std::time::SystemTime;

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use skiff_apimachinery::table::{IncludeObject, to_table, to_table_with_columns};
use skiff_apimachinery::{FieldSelector, LabelSelector, ResourceInfo};

use crate::object;
use crate::response;
use crate::route::{Query, Target};
use crate::state::{AppState, Identity};
use crate::status::ApiError;

pub use delete::delete_namespace_contents;
pub use virtual_resources::infos as virtual_infos;
pub use write::{Change, Outcome, create_object, guaranteed_update};

/// One resource request, resolved against the registry.
pub struct Ctx {
    /// Shared server state.
    pub state: Arc<AppState>,
    /// The resource.
    pub info: ResourceInfo,
    /// The namespace from the path.
    pub namespace: Option<String>,
    /// The object name from the path.
    pub name: Option<String>,
    /// The subresource from the path.
    pub subresource: Option<String>,
    /// Query parameters.
    pub query: Query,
    /// Request headers.
    pub headers: HeaderMap,
    /// Who asked.
    pub identity: Identity,
}

impl Ctx {
    /// The object name, for handlers that need one.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or_default()
    }

    /// The namespace to act in: the path's for namespaced resources, none otherwise.
    pub fn ns(&self) -> Option<&str> {
        if self.info.namespaced {
            self.namespace.as_deref()
        } else {
            None
        }
    }
}

/// The verb of a request, as metrics and authorization name it.
pub fn verb(method: &Method, target: &Target, query: &Query) -> &'static str {
    let watch = target.legacy_watch || query.flag("watch");
    match *method {
        Method::GET if watch => "watch",
        Method::GET if target.name.is_none() => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if target.name.is_none() => "deletecollection",
        Method::DELETE => "delete",
        _ => "unknown",
    }
}

/// Serves a resource request.
pub async fn handle(
    state: Arc<AppState>,
    method: Method,
    target: Target,
    query: Query,
    headers: HeaderMap,
    identity: Identity,
    body: Bytes,
) -> Result<Response, ApiError> {
    let info = state
        .find(&target.group, &target.version, &target.plural)
        .ok_or_else(ApiError::no_such_path)?;
    if target.namespace.is_some() && !info.namespaced {
        return Err(ApiError::no_such_path());
    }
    if info.namespaced && target.namespace.is_none() && target.name.is_some() {
        return Err(ApiError::no_such_path());
    }
    if let Some(sub) = &target.subresource
        && !info.has_subresource(sub)
    {
        return Err(ApiError::no_such_path());
    }
    let verb = verb(&method, &target, &query);
    let ctx = Ctx {
        state,
        info,
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        subresource: target.subresource.clone(),
        query,
        headers,
        identity,
    };
    if virtual_resources::is_virtual(&ctx.info) {
        return virtual_resources::handle(&ctx, &method, &body).await;
    }
    if ctx.subresource.is_some() {
        return subresource::handle(&ctx, &method, &target.rest, &body).await;
    }
    if !ctx.info.verbs.iter().any(|v| v == verb) {
        return Err(ApiError::method_not_allowed());
    }
    match verb {
        "watch" => watch::serve(&ctx).await,
        "list" => read::list(&ctx).await,
        "get" => read::get(&ctx).await,
        "create" => write::create(&ctx, &body).await,
        "update" => write::update(&ctx, &body).await,
        "patch" => patch::patch(&ctx, &body).await,
        "delete" => delete::delete(&ctx, &body).await,
        "deletecollection" => delete::delete_collection(&ctx, &body).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Parses a request body: JSON, or YAML when the content type says so.
pub fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty: an object is required",
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.contains("yaml") {
        return parse_yaml(body);
    }
    if crate::protobuf::is_protobuf(content_type) && body.starts_with(crate::protobuf::MAGIC) {
        return crate::protobuf::decode_object(body).map_err(|e| {
            ApiError::bad_request(format!("the protobuf request body cannot be decoded: {e}"))
        });
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

/// Parses a YAML (or JSON, which is YAML) body.
pub fn parse_yaml(body: &[u8]) -> Result<Value, ApiError> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Ok(value);
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
    serde_saphyr::from_str::<Value>(text)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
}

/// The selectors of a list, watch or deletecollection.
pub struct Filter {
    namespace: Option<String>,
    name: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    /// Reads `labelSelector` and `fieldSelector`.
    pub fn from_ctx(ctx: &Ctx) -> Result<Filter, ApiError> {
        let labels = LabelSelector::parse(ctx.query.get("labelSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(ctx.query.get("fieldSelector").unwrap_or(""))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        fields
            .validate_for(&ctx.info.kind)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Filter {
            namespace: ctx.ns().map(str::to_string),
            name: None,
            labels,
            fields,
        })
    }

    /// Narrows the filter to one object name.
    pub fn only_name(mut self, name: &str) -> Filter {
        self.name = Some(name.to_string());
        self
    }

    /// Whether an object passes the selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(name) = &self.name
            && object::name(obj) != name
        {
            return false;
        }
        if let Some(ns) = &self.namespace
            && object::namespace(obj) != ns
        {
            return false;
        }
        self.labels.matches(&object::labels(obj)) && self.fields.matches(obj)
    }
}

/// How a GET wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The objects as JSON.
    Json,
    /// A `meta.k8s.io/v1` Table.
    Table(IncludeObject),
}

/// Reads the `Accept` header (and `includeObject`) of a GET.
pub fn output(ctx: &Ctx) -> Output {
    let accept = ctx
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let first = crate::discovery::parse_accept(accept)
        .into_iter()
        .find(|r| {
            r.essence == "application/json" || r.essence == "*/*" || r.essence == "application/*"
        });
    match first {
        Some(range) if range.param("as") == Some("Table") => Output::Table(
            ctx.query
                .get("includeObject")
                .and_then(IncludeObject::parse)
                .unwrap_or_default(),
        ),
        _ => Output::Json,
    }
}

/// The Table of some objects of the request's resource.
pub fn table(ctx: &Ctx, objects: &[Value], include: IncludeObject) -> Value {
    let now = SystemTime::now();
    match ctx.state.printer_columns(&ctx.info) {
        Some(columns) => to_table_with_columns(&columns, objects, include, now),
        None => to_table(&ctx.info, objects, include, now),
    }
}

/// The content type of Table answers.
pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// Answers one object, as a Table when asked.
pub fn respond_object(ctx: &Ctx, code: StatusCode, obj: &Value) -> Response {
    match output(ctx) {
        Output::Table(include) => {
            let mut table = table(ctx, std::slice::from_ref(obj), include);
            table["metadata"] = serde_json::json!({
                "resourceVersion": object::meta_str(obj, "resourceVersion"),
            });
            response::json_as(code, &table, TABLE_CONTENT_TYPE)
        }
        Output::Json => response::json(code, obj),
    }
}

/// Adds one `Warning: 299 - "..."` header per warning (kubectl prints them).
pub fn with_warnings(mut response: Response, warnings: &[String]) -> Response {
    for warning in warnings {
        let escaped = warning.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(value) = axum::http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}
