//! `?watch=1`: newline-delimited JSON events from the resource's watch cache, filtered per
//! client (namespace, labels, fields), with bookmarks, initial events and timeouts.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use skiff_store::Revision;
use tokio::sync::{broadcast, mpsc};

use super::read::list_page;
use super::{Ctx, Filter, Output, TABLE_CONTENT_TYPE, table};
use crate::status::ApiError;
use crate::storage;
use crate::watchcache::{CacheMessage, CachedEvent, EventType};

/// Converts one object to a Table.
type ToTable = Arc<dyn Fn(&Value) -> Value + Send + Sync>;

/// How the watch encodes objects.
#[derive(Clone)]
struct Encoder {
    ctx_info: skiff_apimachinery::ResourceInfo,
    table: Option<ToTable>,
}

impl Encoder {
    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let mut obj = obj.clone();
        storage::present(&self.ctx_info, &mut obj);
        let object = match &self.table {
            Some(to_table) => to_table(&obj),
            None => obj,
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, revision: Revision, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let object = json!({
            "kind": self.ctx_info.kind,
            "apiVersion": self.ctx_info.api_version(),
            "metadata": metadata,
        });
        let mut line =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn error_line(err: &ApiError) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": err.to_status()}))
        .unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// What a client sees of a cached event after its filter: the type to send, or nothing.
fn filtered(event: &CachedEvent, filter: &Filter) -> Option<EventType> {
    let now = filter.matches(&event.object);
    let before = event.prev.as_ref().is_some_and(|p| filter.matches(p));
    match event.kind {
        EventType::Added => now.then_some(EventType::Added),
        EventType::Deleted => (before || now).then_some(EventType::Deleted),
        EventType::Modified => match (before, now) {
            (true, true) => Some(EventType::Modified),
            (false, true) => Some(EventType::Added),
            (true, false) => Some(EventType::Deleted),
            (false, false) => None,
        },
    }
}

/// Serves a watch.
pub async fn serve(ctx: &Ctx) -> Result<Response, ApiError> {
    let mut filter = Filter::from_ctx(ctx)?;
    if let Some(name) = &ctx.name {
        // The legacy `/watch/.../{name}` form watches one object.
        filter = filter.only_name(name);
    }
    let allow_bookmarks = ctx.query.flag("allowWatchBookmarks");
    let send_initial = ctx.query.flag("sendInitialEvents");
    let rv = ctx.query.get("resourceVersion");
    let timeout = ctx
        .query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0)
        .map(Duration::from_secs);

    let cache = ctx.state.cache(&ctx.info).await?;
    let mut initial = Vec::new();
    let start: Revision = match rv {
        Some(rv) if !send_initial && rv != "0" => rv
            .parse()
            .map_err(|_| ApiError::bad_request(format!("resourceVersion {rv:?} is not valid")))?,
        _ => {
            // Start at the newest state: its objects come first as ADDED events.
            let mut all = Vec::new();
            let mut page_ctx_query = ctx.query.clone();
            page_ctx_query.0.remove("continue");
            page_ctx_query.0.remove("limit");
            page_ctx_query.0.remove("resourceVersion");
            let page_ctx = Ctx {
                state: Arc::clone(&ctx.state),
                info: ctx.info.clone(),
                namespace: ctx.namespace.clone(),
                name: None,
                subresource: None,
                query: page_ctx_query,
                headers: ctx.headers.clone(),
                identity: ctx.identity.clone(),
            };
            let page = list_page(&page_ctx, &filter).await?;
            all.extend(page.items);
            initial = all;
            page.revision
        }
    };
    let subscription = match cache.subscribe(start) {
        Ok(subscription) => subscription,
        Err(too_old) => {
            // As kube-apiserver: the watch starts (200) and its one event is the 410 Status.
            // Clients re-list on that event; an HTTP 410 answer would make client-go's and
            // kube-rs's watchers retry the same resourceVersion for ever.
            let err = ApiError::expired(format!(
                "too old resource version: {start} ({})",
                too_old.oldest
            ));
            let mut response = Response::new(Body::from(error_line(&err)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(response);
        }
    };

    let encoder = Encoder {
        ctx_info: ctx.info.clone(),
        table: match super::output(ctx) {
            Output::Table(include) => {
                let info_ctx = Ctx {
                    state: Arc::clone(&ctx.state),
                    info: ctx.info.clone(),
                    namespace: None,
                    name: None,
                    subresource: None,
                    query: ctx.query.clone(),
                    headers: ctx.headers.clone(),
                    identity: ctx.identity.clone(),
                };
                let shared = Arc::new(info_ctx);
                let f: ToTable =
                    Arc::new(move |obj: &Value| table(&shared, std::slice::from_ref(obj), include));
                Some(f)
            }
            Output::Json => None,
        },
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let guard = ctx.state.metrics.watch_opened();
    let mut shutdown = ctx.state.shutdown.clone();
    let bookmark_every = ctx.state.options.bookmark_interval;
    let cache_for_task = Arc::clone(&cache);
    tokio::spawn(async move {
        let _guard = guard;
        for obj in &initial {
            if tx.send(encoder.line("ADDED", obj)).await.is_err() {
                return;
            }
        }
        if send_initial && allow_bookmarks && tx.send(encoder.bookmark(start, true)).await.is_err()
        {
            return;
        }
        let mut sent_up_to = start;
        for event in &subscription.backlog {
            if let Some(kind) = filtered(event, &filter) {
                if tx
                    .send(encoder.line(kind.as_str(), &event.object))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            sent_up_to = sent_up_to.max(event.revision);
        }
        let mut live = subscription.live;
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut ticker = tokio::time::interval(bookmark_every);
        ticker.tick().await;
        loop {
            let sleep_until = deadline.unwrap_or_else(|| {
                tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600)
            });
            tokio::select! {
                message = live.recv() => match message {
                    Ok(CacheMessage::Event(event)) => {
                        if event.revision <= sent_up_to {
                            continue;
                        }
                        sent_up_to = event.revision;
                        if let Some(kind) = filtered(&event, &filter)
                            && tx.send(encoder.line(kind.as_str(), &event.object)).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(CacheMessage::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        let err = ApiError::expired(format!(
                            "too old resource version: {sent_up_to}: the watch fell behind; list again"
                        ));
                        let _ = tx.send(error_line(&err)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if allow_bookmarks => {
                    let at = cache_for_task.last_revision().max(sent_up_to);
                    if tx.send(encoder.bookmark(at, false)).await.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep_until(sleep_until) => return,
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        }
    });

    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<Bytes, Infallible>(bytes), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    let content_type = if matches!(super::output(ctx), Output::Table(_)) {
        TABLE_CONTENT_TYPE
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(response)
}
