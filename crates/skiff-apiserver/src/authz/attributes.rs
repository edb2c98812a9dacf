//! The attributes a request is authorized on, derived from its method, path and query exactly
//! as kube-apiserver's request-info factory derives them: resource requests under `/api` and
//! `/apis` (verb, group, resource, subresource, namespace, name) and non-resource requests
//! (lower-cased method and path) for everything else.

use axum::http::{HeaderMap, Method, header};

use crate::route::Query;
use crate::state::Identity;

/// What an authorizer decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// The user name.
    pub user: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// The verb: `get`, `list`, `watch`, `create`, ... for resources; the lower-cased HTTP
    /// method for non-resource paths.
    pub verb: String,
    /// What the request is on.
    pub target: Target,
}

/// A resource or a non-resource path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A resource request.
    Resource(ResourceAttributes),
    /// A request to a path outside the resource tree (`/healthz`, `/api`, `/openapi/v2`).
    NonResource {
        /// The request path.
        path: String,
    },
}

/// The resource part of the attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// API group (`""` for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Plural resource name.
    pub resource: String,
    /// Subresource (`status`, `log`, `exec`, `scale` ...), empty when none.
    pub subresource: String,
    /// Namespace, empty for cluster-scoped requests.
    pub namespace: String,
    /// Object name, empty for collections.
    pub name: String,
}

impl Attributes {
    /// Attributes of a resource request.
    pub fn resource(identity: &Identity, verb: &str, resource: ResourceAttributes) -> Attributes {
        Attributes {
            user: identity.username.clone(),
            groups: identity.groups.clone(),
            verb: verb.to_string(),
            target: Target::Resource(resource),
        }
    }

    /// Attributes of a non-resource request.
    pub fn non_resource(identity: &Identity, verb: &str, path: &str) -> Attributes {
        Attributes {
            user: identity.username.clone(),
            groups: identity.groups.clone(),
            verb: verb.to_string(),
            target: Target::NonResource {
                path: path.to_string(),
            },
        }
    }

    /// Derives the attributes of an HTTP request.
    pub fn of_request(
        identity: &Identity,
        method: &Method,
        path: &str,
        query: &Query,
        headers: &HeaderMap,
    ) -> Attributes {
        match request_info(method, path, query, headers) {
            RequestInfo::Resource { verb, resource } => {
                Attributes::resource(identity, &verb, resource)
            }
            RequestInfo::NonResource { verb } => Attributes::non_resource(identity, &verb, path),
        }
    }

    /// The resource attributes, if it is a resource request.
    pub fn resource_attributes(&self) -> Option<&ResourceAttributes> {
        match &self.target {
            Target::Resource(r) => Some(r),
            Target::NonResource { .. } => None,
        }
    }
}

/// What a request is, before the user is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestInfo {
    /// A resource request.
    Resource {
        /// Its verb.
        verb: String,
        /// What it is on.
        resource: ResourceAttributes,
    },
    /// Anything else.
    NonResource {
        /// The lower-cased HTTP method.
        verb: String,
    },
}

/// The verb as a `'static` name for metrics (`unknown` for verbs metrics do not know).
pub fn metrics_verb(verb: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "impersonate",
        "proxy",
        "post",
        "put",
        "head",
    ];
    KNOWN
        .iter()
        .find(|known| **known == verb)
        .copied()
        .unwrap_or("unknown")
}

/// Subresources of a namespace that follow the namespace name in its path.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The request info of kube-apiserver: `/api/{version}/...` and `/apis/{group}/{version}/...`
/// with at least a resource are resource requests; `/watch/` and `/proxy/` path prefixes are
/// verbs; a GET of a collection is `list` (or `watch` with `watch=true`), a DELETE of one is
/// `deletecollection`; a `fieldSelector=metadata.name=x` names the object of a list or watch.
/// A websocket upgrade (kubectl 1.30+) of `pods/exec`, `pods/attach` or `pods/portforward`
/// is a `create`, as with kube-apiserver's `AuthorizePodWebsocketUpgradeCreatePermission`.
pub fn request_info(
    method: &Method,
    path: &str,
    query: &Query,
    headers: &HeaderMap,
) -> RequestInfo {
    let non_resource = || RequestInfo::NonResource {
        verb: method.as_str().to_ascii_lowercase(),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if parts.len() < 3 {
        return non_resource();
    }
    let (group, rest) = match parts[0] {
        "api" => ("", &parts[1..]),
        "apis" if parts.len() >= 4 => (parts[1], &parts[2..]),
        _ => return non_resource(),
    };
    let version = rest[0];
    let mut rest = &rest[1..];
    let special = matches!(rest.first(), Some(&"watch" | &"proxy"));
    let mut verb = if special {
        if rest.len() < 2 {
            return non_resource();
        }
        let verb = rest[0].to_string();
        rest = &rest[1..];
        verb
    } else {
        match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string()
    };
    let mut namespace = String::new();
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        namespace = rest[1].to_string();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        }
    }
    let mut resource = ResourceAttributes {
        group: group.to_string(),
        version: version.to_string(),
        namespace,
        ..ResourceAttributes::default()
    };
    if rest.len() >= 3 && verb != "proxy" {
        resource.subresource = rest[2].to_string();
    }
    if rest.len() >= 2 {
        resource.name = rest[1].to_string();
    }
    if let Some(first) = rest.first() {
        resource.resource = first.to_string();
    }
    if resource.name.is_empty() && verb == "get" {
        verb = if query.flag("watch") { "watch" } else { "list" }.to_string();
        if let Some(name) = exact_name(query.get("fieldSelector").unwrap_or("")) {
            resource.name = name;
        }
    }
    if resource.name.is_empty() && verb == "delete" {
        verb = "deletecollection".to_string();
    }
    if verb == "get"
        && resource.group.is_empty()
        && resource.resource == "pods"
        && matches!(
            resource.subresource.as_str(),
            "exec" | "attach" | "portforward"
        )
        && is_websocket_upgrade(headers)
    {
        verb = "create".to_string();
    }
    RequestInfo::Resource { verb, resource }
}

/// The name a field selector requires exactly (`metadata.name=x` or `metadata.name==x`), when
/// it is a valid path segment.
fn exact_name(selector: &str) -> Option<String> {
    selector.split(',').find_map(|term| {
        let (key, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(k, _)| !k.ends_with('!'))?;
        (key.trim() == "metadata.name"
            && !value.is_empty()
            && value != "."
            && value != ".."
            && !value.contains('/')
            && !value.contains('%'))
        .then(|| value.trim().to_string())
    })
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "websocket")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info(method: Method, uri: &str) -> RequestInfo {
        info_with(method, uri, HeaderMap::new())
    }

    fn info_with(method: Method, uri: &str, headers: HeaderMap) -> RequestInfo {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        request_info(&method, path, &Query::parse(Some(query)), &headers)
    }

    fn res(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> RequestInfo {
        RequestInfo::Resource {
            verb: verb.into(),
            resource: ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
            },
        }
    }

    #[test]
    fn verbs_follow_the_method_and_the_collection() {
        let pods = "/api/v1/namespaces/default/pods";
        assert_eq!(
            info(Method::GET, pods),
            res("list", "", "pods", "", "default", "")
        );
        assert_eq!(
            info(Method::GET, &format!("{pods}?watch=true")),
            res("watch", "", "pods", "", "default", "")
        );
        assert_eq!(
            info(Method::GET, "/api/v1/watch/namespaces/default/pods"),
            res("watch", "", "pods", "", "default", "")
        );
        assert_eq!(
            info(Method::GET, &format!("{pods}/web")),
            res("get", "", "pods", "", "default", "web")
        );
        assert_eq!(
            info(Method::POST, pods),
            res("create", "", "pods", "", "default", "")
        );
        assert_eq!(
            info(Method::PUT, &format!("{pods}/web/status")),
            res("update", "", "pods", "status", "default", "web")
        );
        assert_eq!(
            info(Method::PATCH, &format!("{pods}/web")),
            res("patch", "", "pods", "", "default", "web")
        );
        assert_eq!(
            info(Method::DELETE, &format!("{pods}/web")),
            res("delete", "", "pods", "", "default", "web")
        );
        assert_eq!(
            info(Method::DELETE, pods),
            res("deletecollection", "", "pods", "", "default", "")
        );
        assert_eq!(
            info(Method::GET, "/api/v1/pods"),
            res("list", "", "pods", "", "", "")
        );
    }

    #[test]
    fn a_name_field_selector_names_the_object() {
        assert_eq!(
            info(
                Method::GET,
                "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb&watch=1"
            ),
            res("watch", "", "pods", "", "a", "web")
        );
        assert_eq!(
            info(
                Method::GET,
                "/api/v1/namespaces/a/pods?fieldSelector=metadata.name!%3Dweb"
            ),
            res("list", "", "pods", "", "a", "")
        );
    }

    #[test]
    fn subresources_and_groups() {
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/a/pods/web/log"),
            res("get", "", "pods", "log", "a", "web")
        );
        assert_eq!(
            info(Method::POST, "/api/v1/namespaces/a/pods/web/exec"),
            res("create", "", "pods", "exec", "a", "web")
        );
        assert_eq!(
            info(
                Method::PUT,
                "/apis/apps/v1/namespaces/a/deployments/web/scale"
            ),
            res("update", "apps", "deployments", "scale", "a", "web")
        );
        assert_eq!(
            info(
                Method::POST,
                "/api/v1/namespaces/a/serviceaccounts/default/token"
            ),
            res("create", "", "serviceaccounts", "token", "a", "default")
        );
        assert_eq!(
            info(
                Method::GET,
                "/apis/rbac.authorization.k8s.io/v1/clusterroles/view"
            ),
            res(
                "get",
                "rbac.authorization.k8s.io",
                "clusterroles",
                "",
                "",
                "view"
            )
        );
    }

    #[test]
    fn websocket_exec_is_a_create() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        headers.insert(header::UPGRADE, "websocket".parse().unwrap());
        for sub in ["exec", "attach", "portforward"] {
            assert_eq!(
                info_with(
                    Method::GET,
                    &format!("/api/v1/namespaces/a/pods/web/{sub}?command=ls"),
                    headers.clone()
                ),
                res("create", "", "pods", sub, "a", "web")
            );
        }
        assert_eq!(
            info_with(Method::GET, "/api/v1/namespaces/a/pods/web/log", headers),
            res("get", "", "pods", "log", "a", "web")
        );
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/a/pods/web/exec"),
            res("get", "", "pods", "exec", "a", "web")
        );
    }

    #[test]
    fn namespaces_are_their_own_namespace() {
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/a"),
            res("get", "", "namespaces", "", "a", "a")
        );
        assert_eq!(
            info(Method::PUT, "/api/v1/namespaces/a/finalize"),
            res("update", "", "namespaces", "finalize", "a", "a")
        );
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces"),
            res("list", "", "namespaces", "", "", "")
        );
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource() {
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/healthz",
            "/openapi/v2",
            "/openapi/v3/apis/apps/v1",
            "/.well-known/openid-configuration",
            "/metrics",
        ] {
            assert_eq!(
                info(Method::GET, path),
                RequestInfo::NonResource { verb: "get".into() },
                "{path}"
            );
        }
        assert_eq!(
            info(Method::POST, "/apis"),
            RequestInfo::NonResource {
                verb: "post".into()
            }
        );
    }
}
