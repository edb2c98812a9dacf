//! Authorization: every authenticated request is checked as kube-apiserver checks it with
//! `--authorization-mode=RBAC`. The request's [`attributes`] (user, groups, verb, group,
//! resource, subresource, namespace, name, or a non-resource path) are decided by members of
//! `system:masters` (always allowed), for node identities' resource requests by the [`node`]
//! authorizer alone, or by [`rbac`] over an in-memory index of the roles and
//! bindings ([`cache`]) that the store's watch keeps current. A refusal is kube-apiserver's
//! 403 `Forbidden` Status. Impersonation ([`impersonation`]), escalation prevention
//! ([`escalation`]), the access reviews ([`review`]), the default roles created at start
//! ([`bootstrap`]) and the ClusterRole [`aggregation`] controller live here too.

pub mod aggregation;
pub mod attributes;
pub mod bootstrap;
pub mod cache;
pub mod escalation;
pub mod graph;
pub mod impersonation;
pub mod node;
pub mod rbac;
pub mod review;

use serde_json::json;

use crate::state::AppState;
use crate::status::ApiError;

pub use attributes::{Attributes, ResourceAttributes, Target};
pub use cache::RbacCache;
pub use rbac::Verdict;

/// The group whose members may do everything, whatever the RBAC objects say.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// Why authorization could not decide.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// Reading the RBAC objects from the store failed.
    #[error("cannot read {resource} for authorization: {source}")]
    Store {
        /// The resource being read.
        resource: String,
        /// The store error.
        #[source]
        source: skiff_store::StoreError,
    },
    /// A stored RBAC object does not decode.
    #[error("cannot decode the stored object {key} for authorization: {message}")]
    Decode {
        /// Its store key.
        key: String,
        /// What was wrong.
        message: String,
    },
    /// The RBAC resources are not registered.
    #[error("the resource {resource} is not served: authorization cannot read it")]
    NotServed {
        /// The missing resource.
        resource: String,
    },
}

impl From<AuthzError> for ApiError {
    fn from(err: AuthzError) -> ApiError {
        ApiError::internal(err.to_string())
    }
}

/// Decides a request: members of `system:masters` may do everything; node identities what
/// the [`node`] authorizer allows; everyone else what RBAC allows.
pub async fn decide(state: &AppState, attrs: &Attributes) -> Result<Verdict, AuthzError> {
    if attrs.groups.iter().any(|g| g == SYSTEM_MASTERS) {
        return Ok(Verdict {
            allowed: true,
            reason: String::new(),
        });
    }
    if let Some(node) = node::node_of(attrs)
        && attrs.resource_attributes().is_some()
    {
        return node::decide(state, node, attrs).await;
    }
    let snapshot = state.rbac.snapshot(state).await?;
    Ok(snapshot.authorize(attrs))
}

/// `Ok` when the request is allowed, kube-apiserver's 403 Forbidden otherwise.
pub async fn authorize(state: &AppState, attrs: &Attributes) -> Result<(), ApiError> {
    let verdict = decide(state, attrs).await?;
    if verdict.allowed {
        Ok(())
    } else {
        tracing::debug!(user = %attrs.user, verb = %attrs.verb, target = ?attrs.target, reason = %verdict.reason, "forbidden");
        Err(forbidden(attrs, &verdict.reason))
    }
}

/// The Forbidden Status of a refused request: `pods is forbidden: User "u" cannot list
/// resource "pods" in API group "" in the namespace "default"`, with `details` naming the
/// group, the resource (as `kind`) and the object.
pub fn forbidden(attrs: &Attributes, reason: &str) -> ApiError {
    let mut message = forbidden_message(attrs);
    if !reason.is_empty() {
        message = format!("{message}: {reason}");
    }
    match &attrs.target {
        Target::NonResource { .. } => ApiError {
            details: Some(json!({})),
            ..ApiError::forbidden(format!("forbidden: {message}"))
        },
        Target::Resource(r) => {
            let qualified = if r.group.is_empty() {
                r.resource.clone()
            } else {
                format!("{}.{}", r.resource, r.group)
            };
            let message = if r.name.is_empty() {
                format!("{qualified} is forbidden: {message}")
            } else {
                format!("{qualified} \"{}\" is forbidden: {message}", r.name)
            };
            let mut details = json!({"kind": r.resource});
            if !r.group.is_empty() {
                details["group"] = json!(r.group);
            }
            if !r.name.is_empty() {
                details["name"] = json!(r.name);
            }
            ApiError {
                details: Some(details),
                ..ApiError::forbidden(message)
            }
        }
    }
}

/// `User "u" cannot list resource "pods" in API group "" in the namespace "default"` (or
/// `at the cluster scope`, or `cannot get path "/metrics"`).
pub fn forbidden_message(attrs: &Attributes) -> String {
    match &attrs.target {
        Target::NonResource { path } => {
            format!(
                "User \"{}\" cannot {} path \"{path}\"",
                attrs.user, attrs.verb
            )
        }
        Target::Resource(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", r.namespace)
            };
            format!(
                "User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                attrs.user, attrs.verb, r.group
            )
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn attrs(verb: &str, ns: &str, name: &str, group: &str, sub: &str) -> Attributes {
        Attributes::resource(
            &crate::serviceaccount::identity("default", "default"),
            verb,
            ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: if group.is_empty() {
                    "pods"
                } else {
                    "deployments"
                }
                .into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
            },
        )
    }

    #[test]
    fn forbidden_statuses_read_like_kube_apiservers() {
        let err = forbidden(&attrs("list", "default", "", "", ""), "");
        assert_eq!(err.code, 403);
        assert_eq!(err.reason, "Forbidden");
        assert_eq!(
            err.message,
            "pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        assert_eq!(err.details, Some(json!({"kind": "pods"})));
        let err = forbidden(&attrs("list", "", "", "", ""), "");
        assert!(
            err.message
                .ends_with("in API group \"\" at the cluster scope")
        );
        let err = forbidden(&attrs("update", "a", "web", "apps", "scale"), "RBAC: x");
        assert_eq!(
            err.message,
            "deployments.apps \"web\" is forbidden: User \"system:serviceaccount:default:default\" cannot update resource \"deployments/scale\" in API group \"apps\" in the namespace \"a\": RBAC: x"
        );
        assert_eq!(
            err.details,
            Some(json!({"kind": "deployments", "group": "apps", "name": "web"}))
        );
        let path = Attributes::non_resource(
            &crate::serviceaccount::identity("default", "default"),
            "get",
            "/metrics",
        );
        assert_eq!(
            forbidden(&path, "").message,
            "forbidden: User \"system:serviceaccount:default:default\" cannot get path \"/metrics\""
        );
    }
}
