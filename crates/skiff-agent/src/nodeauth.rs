//! Who may use the node API, decided as the kubelet decides it (`--client-ca-file`,
//! `--authentication-token-webhook`, `--authorization-mode=Webhook`):
//!
//! - authentication: a TLS client certificate the cluster CA signed names the caller (CN the
//!   user, each O a group); without one, a bearer token is sent to the API server in a
//!   TokenReview; neither, or a token the review refuses: 401;
//! - authorization: a SubjectAccessReview for the caller on the `nodes` resource named after
//!   this node, with the verb of the HTTP method (`POST` create, `GET`/`HEAD` get, `PUT`
//!   update, `PATCH` patch, `DELETE` delete) and the subresource of the path (`stats`,
//!   `metrics`, `log`, `spec`, `checkpoint` for those prefixes, `proxy` for every other path:
//!   `containerLogs`, `exec`, `attach`, `portForward`); denied: 403.
//!
//! So the API server (its client certificate is in `system:masters`) may, and a node's own
//! identity (`system:node:NAME`, which RBAC and the Node authorizer give no `nodes/proxy`)
//! may not. Answers are cached as the kubelet's defaults: token reviews 2 minutes (refusals
//! 10 seconds), allowed decisions 5 minutes, denied ones 30 seconds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

use crate::Context;

/// How long an accepted token stays accepted without asking again.
pub const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long a refused token stays refused without asking again.
pub const TOKEN_FAILURE_TTL: Duration = Duration::from_secs(10);
/// How long an allowed decision is reused.
pub const ALLOWED_TTL: Duration = Duration::from_secs(300);
/// How long a denied decision is reused.
pub const DENIED_TTL: Duration = Duration::from_secs(30);
/// Past this many entries, expired ones are dropped on the next insert.
const PRUNE_ABOVE: usize = 256;

/// Why a caller could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The API server did not answer a review.
    #[error("cannot create a {review}: {source}")]
    Review {
        /// Which review.
        review: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// A caller of the node API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    /// The user name.
    pub name: String,
    /// Its groups.
    pub groups: Vec<String>,
}

/// The user a connection's verified client certificate names (a request extension).
#[derive(Debug, Clone)]
pub struct CertificateUser(pub User);

/// Who a verified client certificate (DER) names: CN the user, each O a group, plus
/// `system:authenticated`.
pub fn user_of_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .find(|n| !n.is_empty())?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    groups.push("system:authenticated".into());
    Some(User { name, groups })
}

/// The verb and subresource of a request on `nodes/NAME`, as the kubelet maps them.
pub fn attributes(method: &Method, path: &str) -> (&'static str, &'static str) {
    let verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    };
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let subresource = if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else if under("/checkpoint") {
        "checkpoint"
    } else {
        "proxy"
    };
    (verb, subresource)
}

/// Entries that expire.
struct Expiring<K, V>(Mutex<HashMap<K, (V, Instant)>>);

impl<K: std::hash::Hash + Eq, V: Clone> Expiring<K, V> {
    fn new() -> Self {
        Expiring(Mutex::new(HashMap::new()))
    }

    fn get(&self, key: &K) -> Option<V> {
        let map = self.0.lock().ok()?;
        map.get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn put(&self, key: K, value: V, ttl: Duration) {
        if let Ok(mut map) = self.0.lock() {
            let now = Instant::now();
            if map.len() >= PRUNE_ABOVE {
                map.retain(|_, (_, until)| *until > now);
            }
            map.insert(key, (value, now + ttl));
        }
    }
}

/// The cached answers of token and access reviews.
pub struct Authenticator {
    tokens: Expiring<String, Option<User>>,
    decisions: Expiring<(User, &'static str, &'static str), bool>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator {
            tokens: Expiring::new(),
            decisions: Expiring::new(),
        }
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Who `token` is, from a TokenReview (`None`: not a valid token).
    pub async fn review_token(
        &self,
        client: &kube::Client,
        token: &str,
    ) -> Result<Option<User>, AuthError> {
        if let Some(known) = self.tokens.get(&token.to_string()) {
            return Ok(known);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthError::Review {
                review: "TokenReview",
                source,
            })?;
        let user = answer
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                Some(User {
                    name: u.username.filter(|n| !n.is_empty())?,
                    groups: u.groups.unwrap_or_default(),
                })
            });
        let ttl = if user.is_some() {
            TOKEN_TTL
        } else {
            TOKEN_FAILURE_TTL
        };
        self.tokens.put(token.to_string(), user.clone(), ttl);
        Ok(user)
    }

    /// Whether `user` may `verb` the `subresource` of node `node`, from a
    /// SubjectAccessReview.
    pub async fn allowed(
        &self,
        client: &kube::Client,
        user: &User,
        node: &str,
        verb: &'static str,
        subresource: &'static str,
    ) -> Result<bool, AuthError> {
        let key = (user.clone(), verb, subresource);
        if let Some(known) = self.decisions.get(&key) {
            return Ok(known);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(String::new()),
                    version: Some("v1".into()),
                    resource: Some("nodes".into()),
                    subresource: Some(subresource.into()),
                    name: Some(node.into()),
                    verb: Some(verb.into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| AuthError::Review {
                review: "SubjectAccessReview",
                source,
            })?;
        let allowed = answer.status.is_some_and(|s| s.allowed);
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        self.decisions.put(key, allowed, ttl);
        Ok(allowed)
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized() -> Response {
    (StatusCode::UNAUTHORIZED, "Unauthorized").into_response()
}

/// The node API's authentication and authorization of every request it passes on to `next`.
pub async fn check(State(ctx): State<Arc<Context>>, request: Request, next: Next) -> Response {
    let user = match request.extensions().get::<CertificateUser>() {
        Some(CertificateUser(user)) => user.clone(),
        None => {
            let Some(token) = bearer(request.headers()) else {
                return unauthorized();
            };
            match ctx.auth.review_token(&ctx.client, token).await {
                Ok(Some(user)) => user,
                Ok(None) => return unauthorized(),
                Err(err) => {
                    tracing::warn!(error = %err, "node API: cannot authenticate a bearer token");
                    return unauthorized();
                }
            }
        }
    };
    let (verb, subresource) = attributes(request.method(), request.uri().path());
    let decision = ctx
        .auth
        .allowed(&ctx.client, &user, &ctx.config.node_name, verb, subresource)
        .await;
    match decision {
        Ok(true) => next.run(request).await,
        Ok(false) => (
            StatusCode::FORBIDDEN,
            format!(
                "Forbidden (user={}, verb={verb}, resource=nodes, subresource={subresource})",
                user.name
            ),
        )
            .into_response(),
        Err(err) => {
            tracing::warn!(error = %err, user = %user.name, "node API: cannot authorize a request");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Authorization error (user={}, verb={verb}, resource=nodes, subresource={subresource})",
                    user.name
                ),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_the_kubelet_subresources() {
        let post = Method::POST;
        assert_eq!(
            attributes(&post, "/exec/default/web/c"),
            ("create", "proxy")
        );
        assert_eq!(
            attributes(&Method::GET, "/containerLogs/default/web/c"),
            ("get", "proxy")
        );
        assert_eq!(
            attributes(&Method::GET, "/portForward/default/web"),
            ("get", "proxy")
        );
        assert_eq!(attributes(&Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(attributes(&Method::GET, "/metrics"), ("get", "metrics"));
        assert_eq!(attributes(&Method::GET, "/logs/syslog"), ("get", "log"));
        assert_eq!(attributes(&Method::GET, "/statsx"), ("get", "proxy"));
        assert_eq!(attributes(&Method::PUT, "/spec/"), ("update", "spec"));
    }

    #[test]
    fn bearer_tokens_are_read() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn certificates_name_user_and_groups() {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "system:node:n1");
        dn.push(rcgen::DnType::OrganizationName, "system:nodes");
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let user = user_of_certificate(cert.der()).unwrap();
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, vec!["system:nodes", "system:authenticated"]);
        assert!(user_of_certificate(b"not a certificate").is_none());
    }

    #[test]
    fn entries_expire() {
        let cache: Expiring<&str, bool> = Expiring::new();
        cache.put("a", true, Duration::from_secs(60));
        cache.put("b", true, Duration::ZERO);
        assert_eq!(cache.get(&"a"), Some(true));
        assert_eq!(cache.get(&"b"), None);
    }
}
