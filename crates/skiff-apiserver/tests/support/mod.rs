//! The API server's router over an in-memory store, and requests to it with the test token,
//! for the crate's HTTP tests.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use skiff_apiserver::{ApiServer, ServerOptions};
use tower::ServiceExt;

pub const TOKEN: &str = "test-token";

pub struct Api {
    pub router: Router,
    _server: ApiServer,
}

pub async fn api() -> Api {
    api_with(ServerOptions::default()).await
}

pub async fn api_with(options: ServerOptions) -> Api {
    let store = Arc::new(skiff_store::MemoryStore::new());
    let server = ApiServer::new(store, options, TOKEN).await.unwrap();
    Api {
        router: server.router(),
        _server: server,
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Api {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", content_type)
            .body(Body::from(body))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, "application/json", Vec::new())
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(
            Method::POST,
            path,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(
            Method::PUT,
            path,
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
    }

    pub async fn patch(&self, path: &str, kind: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, kind, body.to_string().into_bytes())
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, "application/json", Vec::new())
            .await
    }
}
