//! Parsing request paths (`/api/v1/namespaces/default/pods/web/status`) and query parameters.

use std::collections::HashMap;

/// What a path under `/api` or `/apis` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiPath {
    /// `/api`: the core group's versions.
    CoreVersions,
    /// `/apis`: every group.
    Groups,
    /// `/apis/{group}`: one group.
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`: the resources of a group version.
    Resources {
        /// Group ("" for core).
        group: String,
        /// Version.
        version: String,
    },
    /// A resource, collection or object, maybe a subresource.
    Target(Target),
}

/// A resource request's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name; `None` for the collection.
    pub name: Option<String>,
    /// Subresource (`status`, `scale` ...).
    pub subresource: Option<String>,
    /// The rest of the path after the subresource (proxy paths).
    pub rest: Vec<String>,
    /// The legacy `/watch/` path form was used.
    pub legacy_watch: bool,
}

/// Parses a path; `None` when it is not an API path.
pub fn parse(path: &str) -> Option<ApiPath> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api"] => return Some(ApiPath::CoreVersions),
        ["apis"] => return Some(ApiPath::Groups),
        ["apis", group] => return Some(ApiPath::Group(group.to_string())),
        ["api", version] => {
            return Some(ApiPath::Resources {
                group: String::new(),
                version: version.to_string(),
            });
        }
        ["apis", group, version] => {
            return Some(ApiPath::Resources {
                group: group.to_string(),
                version: version.to_string(),
            });
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    if rest.iter().any(|s| s.is_empty()) {
        return None;
    }
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] if !rest.is_empty() => (true, rest),
        _ => (false, rest),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, more @ ..]
            if !(more.is_empty() && (*resource == "status" || *resource == "finalize")) =>
        {
            let mut tail = vec![*resource];
            tail.extend_from_slice(more);
            (Some(ns.to_string()), tail)
        }
        other => (None, other.to_vec()),
    };
    let mut parts = rest.into_iter();
    let plural = parts.next()?.to_string();
    let name = parts.next().map(str::to_string);
    let subresource = parts.next().map(str::to_string);
    let rest = parts.map(str::to_string).collect();
    Some(ApiPath::Target(Target {
        group: group.to_string(),
        version: version.to_string(),
        plural,
        namespace,
        name,
        subresource,
        rest,
        legacy_watch,
    }))
}

/// Query parameters, decoded.
#[derive(Debug, Clone, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// Parses a raw query string (`a=1&b=x%20y`).
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(decode(k), decode(v));
        }
        Query(map)
    }

    /// A parameter's value, `None` when absent or empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean parameter (`1`, `true`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True"))
    }

    /// Whether `dryRun=All` was asked.
    pub fn dry_run(&self) -> bool {
        self.get("dryRun").is_some()
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match parse(path) {
            Some(ApiPath::Target(t)) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn discovery_paths() {
        assert_eq!(parse("/api"), Some(ApiPath::CoreVersions));
        assert_eq!(parse("/apis/"), Some(ApiPath::Groups));
        assert_eq!(parse("/apis/apps"), Some(ApiPath::Group("apps".into())));
        assert_eq!(
            parse("/api/v1"),
            Some(ApiPath::Resources {
                group: String::new(),
                version: "v1".into()
            })
        );
        assert_eq!(parse("/healthz"), None);
    }

    #[test]
    fn namespaced_and_cluster_targets() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(
            (
                t.plural.as_str(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("web"), Some("status"))
        );
        let t = target("/api/v1/namespaces/default");
        assert_eq!(
            (t.plural.as_str(), t.name.as_deref(), t.namespace),
            ("namespaces", Some("default"), None)
        );
        let t = target("/api/v1/namespaces/default/status");
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = target("/apis/apps/v1/namespaces/a/deployments");
        assert_eq!(
            (t.group.as_str(), t.plural.as_str(), t.name),
            ("apps", "deployments", None)
        );
        let t = target("/api/v1/watch/namespaces/a/pods");
        assert!(t.legacy_watch);
        assert_eq!(t.plural, "pods");
    }

    #[test]
    fn queries_are_percent_decoded() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&limit="));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("limit"), None);
    }
}
