//! GET of one object and of a collection (selectors, `limit` + `continue` pagination,
//! `resourceVersion` / `resourceVersionMatch`).

use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use skiff_store::Revision;

use super::{Ctx, Filter, Output, TABLE_CONTENT_TYPE, respond_object, table};
use crate::response;
use crate::status::ApiError;
use crate::storage;

/// `GET .../{plural}/{name}`.
pub async fn get(ctx: &Ctx) -> Result<Response, ApiError> {
    let (obj, _) = storage::get(ctx.state.store.as_ref(), &ctx.info, ctx.ns(), ctx.name()).await?;
    Ok(respond_object(ctx, StatusCode::OK, &obj))
}

/// The state a continue token carries: the revision of the first page and where to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContinueToken {
    /// Revision of the list's snapshot.
    pub revision: Revision,
    /// The key to start at, relative to the list prefix.
    pub start: String,
}

impl ContinueToken {
    /// The opaque token (base64 of a small JSON document, like kube-apiserver's).
    pub fn encode(&self) -> String {
        let doc = json!({"v": "meta.k8s.io/v1", "rv": self.revision, "start": self.start});
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
    }

    /// Reads a token.
    pub fn decode(token: &str) -> Result<ContinueToken, ApiError> {
        let bad = || ApiError::bad_request("continue key is not valid: list again without it");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|_| bad())?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let revision = doc.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
        let start = doc
            .get("start")
            .and_then(Value::as_str)
            .ok_or_else(bad)?
            .to_string();
        if start.contains("..") || start.starts_with('/') {
            return Err(bad());
        }
        Ok(ContinueToken { revision, start })
    }
}

/// One page of matching objects.
pub struct Page {
    /// The objects, with resourceVersion set.
    pub items: Vec<Value>,
    /// The snapshot revision.
    pub revision: Revision,
    /// The continue token, when more remain.
    pub continue_token: Option<String>,
}

/// Reads a collection page honouring selectors, `limit`, `continue` and `resourceVersion`.
pub async fn list_page(ctx: &Ctx, filter: &Filter) -> Result<Page, ApiError> {
    let prefix = storage::prefix(&ctx.info, ctx.ns())?;
    let limit = match ctx.query.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("limit {l:?} is not a number")))?,
        None => 0,
    };
    let (mut revision, mut from) = match ctx.query.get("continue") {
        Some(token) => {
            let token = ContinueToken::decode(token)?;
            (
                Some(token.revision),
                Some(format!("{prefix}{}", token.start)),
            )
        }
        None => (requested_revision(ctx)?, None),
    };
    let store = ctx.state.store.as_ref();
    let mut items = Vec::new();
    loop {
        let want = if limit == 0 {
            None
        } else {
            Some((limit - items.len()).max(1))
        };
        let page = store
            .list(&prefix, want, from.as_deref(), revision)
            .await
            .map_err(|e| match e {
                skiff_store::StoreError::Compacted { .. } if ctx.query.get("continue").is_some() => {
                    ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    )
                }
                other => ApiError::from_store(other, &ctx.info, ""),
            })?;
        revision = Some(page.revision);
        for kv in &page.items {
            let obj = storage::decode(&ctx.info, kv)?;
            if filter.matches(&obj) {
                items.push(obj);
            }
        }
        from = page.continue_from;
        if from.is_none() || (limit > 0 && items.len() >= limit) {
            break;
        }
    }
    let revision = revision.unwrap_or(0);
    let continue_token = from.map(|key| {
        ContinueToken {
            revision,
            start: key.strip_prefix(&prefix).unwrap_or(&key).to_string(),
        }
        .encode()
    });
    Ok(Page {
        items,
        revision,
        continue_token,
    })
}

/// The revision a list must read at: `Exact` match reads that revision, anything else reads
/// the newest state (which is never older than asked).
fn requested_revision(ctx: &Ctx) -> Result<Option<Revision>, ApiError> {
    let Some(rv) = ctx.query.get("resourceVersion") else {
        return Ok(None);
    };
    let parsed: Revision = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("resourceVersion {rv:?} is not valid")))?;
    match ctx.query.get("resourceVersionMatch") {
        Some("Exact") => Ok(Some(parsed)),
        Some("NotOlderThan") | None => Ok(None),
        Some(other) => Err(ApiError::bad_request(format!(
            "resourceVersionMatch {other:?} is not supported: use Exact or NotOlderThan"
        ))),
    }
}

/// The list kind of a resource (`PodList`).
pub fn list_kind(ctx: &Ctx) -> String {
    format!("{}List", ctx.info.kind)
}

/// `GET .../{plural}`.
pub async fn list(ctx: &Ctx) -> Result<Response, ApiError> {
    let filter = Filter::from_ctx(ctx)?;
    let page = list_page(ctx, &filter).await?;
    let mut metadata = json!({"resourceVersion": page.revision.to_string()});
    if let Some(token) = &page.continue_token {
        metadata["continue"] = json!(token);
    }
    match super::output(ctx) {
        Output::Table(include) => {
            let mut table = table(ctx, &page.items, include);
            table["metadata"] = metadata;
            Ok(response::json_as(
                StatusCode::OK,
                &table,
                TABLE_CONTENT_TYPE,
            ))
        }
        Output::Json => Ok(response::json(
            StatusCode::OK,
            &json!({
                "kind": list_kind(ctx),
                "apiVersion": ctx.info.api_version(),
                "metadata": metadata,
                "items": page.items,
            }),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_refuse_garbage() {
        let token = ContinueToken {
            revision: 42,
            start: "default/web\0".into(),
        };
        assert_eq!(ContinueToken::decode(&token.encode()).unwrap(), token);
        assert!(ContinueToken::decode("not-a-token").is_err());
    }
}
