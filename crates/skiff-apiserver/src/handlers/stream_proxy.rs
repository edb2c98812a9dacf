//! `pods/{name}/exec`, `pods/{name}/attach` and `pods/{name}/portforward` (GET and POST, as
//! kube-apiserver accepts them), proxied to the node agent of the pod's node as an upgraded
//! connection: the client's upgrade request (its `Connection`, `Upgrade`, `Sec-WebSocket-*`
//! and `X-Stream-Protocol-Version` headers) goes to the agent's `/exec/...`, `/attach/...`
//! or `/portForward/...` over TLS with the server's client certificate; when the agent answers 101 the
//! answer goes back to the client and the two upgraded byte streams are spliced, whatever
//! protocol (WebSocket or SPDY) they speak. A refusal from the agent is passed on as it is.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::node_proxy::{connect, encode, node_authority};
use crate::route::{self, ApiPath};
use crate::state::AppState;
use crate::status::ApiError;
use crate::storage;

/// Request headers passed to the agent.
const FORWARDED: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
    "user-agent",
];

/// Response headers of a 101 passed back to the client.
const RETURNED: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-accept",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// The pod and subresource of a streaming request path, if it is one.
fn streaming_target(path: &str) -> Option<(String, String, String)> {
    let Some(ApiPath::Target(target)) = route::parse(path) else {
        return None;
    };
    let sub = target.subresource.as_deref()?;
    if !target.group.is_empty()
        || target.version != "v1"
        || target.plural != "pods"
        || !matches!(sub, "exec" | "attach" | "portforward")
    {
        return None;
    }
    Some((target.namespace?, target.name?, sub.to_string()))
}

/// Serves the request when it is a streaming subresource of a pod: `None` otherwise. Returns
/// the metrics verb, the resource, and the answer.
pub async fn route(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Option<(&'static str, String, Result<Response, ApiError>)> {
    let (namespace, name, sub) = streaming_target(path)?;
    let verb = if *method == Method::POST {
        "create"
    } else {
        "get"
    };
    let resource = format!("pods/{sub}");
    if *method != Method::GET && *method != Method::POST {
        return Some((verb, resource, Err(ApiError::method_not_allowed())));
    }
    let target = Pod {
        namespace: &namespace,
        name: &name,
        sub: &sub,
    };
    let result = proxy(state, method, target, raw_query, headers, upgrade).await;
    Some((verb, resource, result))
}

/// The pod and subresource asked for.
#[derive(Debug, Clone, Copy)]
struct Pod<'a> {
    namespace: &'a str,
    name: &'a str,
    sub: &'a str,
}

async fn proxy(
    state: &Arc<AppState>,
    method: &Method,
    target: Pod<'_>,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response, ApiError> {
    let Pod {
        namespace,
        name,
        sub,
    } = target;
    let info = state
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let (pod, _) = storage::get(state.store.as_ref(), &info, Some(namespace), name).await?;
    let Some(client) = state.options.kubelet_client.clone() else {
        return Err(ApiError::unavailable(format!(
            "no node agent is running: pods/{sub} is served by the node agent of the pod's node, and none has joined this server"
        )));
    };
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!("pod {name} does not have a host assigned"))
        })?;
    let query: Vec<(String, String)> = raw_query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), v.to_string())
        })
        .collect();
    let path = if sub == "portforward" {
        format!("/portForward/{}/{}", encode(namespace), encode(name))
    } else {
        let container = container_of(&pod, name, &query)?;
        let passed: Vec<String> = query
            .iter()
            .filter(|(k, _)| k != "container")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "/{sub}/{}/{}/{}?{}",
            encode(namespace),
            encode(name),
            encode(&container),
            passed.join("&")
        )
    };
    let Some(upgrade) = upgrade else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    if !headers.contains_key(header::UPGRADE) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let authority = node_authority(state, node_name, name).await?;
    let unreachable = |e: String| {
        ApiError::unavailable(format!(
            "cannot reach the node agent of {node_name} at {authority}: {e}"
        ))
    };
    let tls = connect(&authority, client).await.map_err(unreachable)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut request = Request::builder()
        .method(method.clone())
        .uri(&path)
        .header(header::HOST, &authority);
    for name in FORWARDED {
        for value in headers.get_all(*name) {
            request = request.header(*name, value);
        }
    }
    let request = request
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut answer = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = answer.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // The agent's refusal goes to the client as it is (kubectl prints its text).
        let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
        let body = axum::body::to_bytes(Body::new(answer.into_body()), 64 * 1024)
            .await
            .unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        if let Some(ct) = content_type {
            response.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return Ok(response);
    }
    let upstream = hyper::upgrade::on(&mut answer);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for name in RETURNED {
        for value in answer.headers().get_all(*name) {
            response.headers_mut().append(*name, value.clone());
        }
    }
    tokio::spawn(async move {
        let (up, down) = match tokio::join!(upstream, upgrade) {
            (Ok(up), Ok(down)) => (up, down),
            (up, down) => {
                tracing::debug!(
                    agent = up.is_ok(),
                    client = down.is_ok(),
                    "a streaming upgrade failed"
                );
                return;
            }
        };
        let mut up = TokioIo::new(up);
        let mut down = TokioIo::new(down);
        if let Err(err) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %err, "a streaming connection ended with an error");
        }
    });
    Ok(response)
}

/// The container an exec or attach targets: the `container` parameter, which must name one
/// of the pod's containers, or the pod's only container (kube-apiserver's rules and
/// messages).
fn container_of(pod: &Value, name: &str, query: &[(String, String)]) -> Result<String, ApiError> {
    let names = |key: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{key}"))
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let apps = names("containers");
    let inits = names("initContainers");
    let ephemeral = names("ephemeralContainers");
    let wanted = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| decode(v))
        .filter(|v| !v.is_empty());
    match wanted {
        Some(c) if apps.contains(&c) || inits.contains(&c) || ephemeral.contains(&c) => Ok(c),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if apps.len() == 1 => Ok(apps[0].clone()),
        None if apps.is_empty() => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                apps.join(" ")
            );
            if !inits.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    inits.join(" ")
                ));
            }
            Err(ApiError::bad_request(message))
        }
    }
}

fn decode(text: &str) -> String {
    crate::route::Query::parse(Some(&format!("v={text}")))
        .0
        .remove("v")
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_paths_are_recognised() {
        assert_eq!(
            streaming_target("/api/v1/namespaces/default/pods/web/exec"),
            Some(("default".into(), "web".into(), "exec".into()))
        );
        assert!(streaming_target("/api/v1/namespaces/default/pods/web/portforward").is_some());
        assert!(streaming_target("/api/v1/namespaces/default/pods/web/log").is_none());
        assert!(streaming_target("/api/v1/namespaces/default/services/web/exec").is_none());
    }

    #[test]
    fn containers_are_chosen_like_kube_apiserver() {
        let pod = serde_json::json!({"spec": {
            "containers": [{"name": "a"}, {"name": "b"}],
            "initContainers": [{"name": "i"}],
        }});
        let q = |c: &str| vec![("container".to_string(), c.to_string())];
        assert_eq!(container_of(&pod, "p", &q("b")).unwrap(), "b");
        assert_eq!(container_of(&pod, "p", &q("i")).unwrap(), "i");
        assert_eq!(
            container_of(&pod, "p", &q("x")).unwrap_err().message,
            "container x is not valid for pod p"
        );
        assert_eq!(
            container_of(&pod, "p", &[]).unwrap_err().message,
            "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"
        );
        let one = serde_json::json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(container_of(&one, "p", &[]).unwrap(), "only");
    }
}
