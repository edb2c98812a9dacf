//! Discovery documents: `/api` (APIVersions), `/apis` (APIGroupList), `/apis/{g}` (APIGroup),
//! `/api/v1` and `/apis/{g}/{v}` (APIResourceList), and aggregated discovery
//! (`apidiscovery.k8s.io` v2 and v2beta1 `APIGroupDiscoveryList`) on `/api` and `/apis`.

use serde_json::{Value, json};
use skiff_apimachinery::{Registry, ResourceInfo};

/// Aggregated discovery versions a client may ask for in `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregated {
    /// `apidiscovery.k8s.io/v2` (kubectl 1.30+).
    V2,
    /// `apidiscovery.k8s.io/v2beta1` (kubectl 1.26-1.29).
    V2Beta1,
}

impl Aggregated {
    fn version(self) -> &'static str {
        match self {
            Aggregated::V2 => "v2",
            Aggregated::V2Beta1 => "v2beta1",
        }
    }

    /// The `Content-Type` of the answer, which the client checks.
    pub fn content_type(self) -> String {
        format!(
            "application/json;g=apidiscovery.k8s.io;v={};as=APIGroupDiscoveryList",
            self.version()
        )
    }
}

/// One entry of an `Accept` header: the media type and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    /// `application/json`.
    pub essence: String,
    /// Parameters, keys lower-cased (`g`, `v`, `as`, `q`).
    pub params: Vec<(String, String)>,
}

impl MediaRange {
    /// A parameter's value.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses an `Accept` header into its media ranges, in the order given.
pub fn parse_accept(accept: &str) -> Vec<MediaRange> {
    accept
        .split(',')
        .filter_map(|part| {
            let mut pieces = part.split(';').map(str::trim);
            let essence = pieces.next()?.to_ascii_lowercase();
            if essence.is_empty() {
                return None;
            }
            let params = pieces
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| {
                    (
                        k.trim().to_ascii_lowercase(),
                        v.trim().trim_matches('"').to_string(),
                    )
                })
                .collect();
            Some(MediaRange { essence, params })
        })
        .collect()
}

/// The aggregated discovery version the client asked for first, if any.
pub fn wants_aggregated(accept: &str) -> Option<Aggregated> {
    parse_accept(accept).into_iter().find_map(|range| {
        if range.essence != "application/json"
            || range.param("g") != Some("apidiscovery.k8s.io")
            || range.param("as") != Some("APIGroupDiscoveryList")
        {
            return None;
        }
        match range.param("v") {
            Some("v2") => Some(Aggregated::V2),
            Some("v2beta1") => Some(Aggregated::V2Beta1),
            _ => None,
        }
    })
}

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

fn group_versions(registry: &Registry, group: &str) -> Vec<String> {
    registry.groups().get(group).cloned().unwrap_or_default()
}

fn group_entry(registry: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = group_versions(registry, group)
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    let preferred = versions.first().cloned().unwrap_or(Value::Null);
    json!({"name": group, "versions": versions, "preferredVersion": preferred})
}

/// Named groups in the order they are listed (registry order, the core group left out).
fn named_groups(registry: &Registry) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for r in registry.all() {
        if !r.group.is_empty() && !groups.contains(&r.group) {
            groups.push(r.group.clone());
        }
    }
    groups
}

/// `GET /apis`.
pub fn group_list(registry: &Registry) -> Value {
    let groups: Vec<Value> = named_groups(registry)
        .iter()
        .map(|g| group_entry(registry, g))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `GET /apis/{group}`; `None` for an unknown group.
pub fn group(registry: &Registry, group: &str) -> Option<Value> {
    if group.is_empty() || group_versions(registry, group).is_empty() {
        return None;
    }
    let mut entry = group_entry(registry, group);
    entry["kind"] = json!("APIGroup");
    entry["apiVersion"] = json!("v1");
    Some(entry)
}

/// The kind a subresource answers with, and its verbs.
fn subresource_shape(
    info: &ResourceInfo,
    sub: &str,
) -> (String, String, String, Vec<&'static str>) {
    let own = (info.group.clone(), info.version.clone(), info.kind.clone());
    let (group, version, kind, verbs): (String, String, String, Vec<&'static str>) = match sub {
        "status" => (own.0, own.1, own.2, vec!["get", "patch", "update"]),
        "scale" => (
            "autoscaling".into(),
            "v1".into(),
            "Scale".into(),
            vec!["get", "patch", "update"],
        ),
        "binding" => (String::new(), "v1".into(), "Binding".into(), vec!["create"]),
        "eviction" => (
            "policy".into(),
            "v1".into(),
            "Eviction".into(),
            vec!["create"],
        ),
        "log" => (own.0, own.1, own.2, vec!["get"]),
        "exec" => (
            String::new(),
            "v1".into(),
            "PodExecOptions".into(),
            vec!["create", "get"],
        ),
        "attach" => (
            String::new(),
            "v1".into(),
            "PodAttachOptions".into(),
            vec!["create", "get"],
        ),
        "portforward" => (
            String::new(),
            "v1".into(),
            "PodPortForwardOptions".into(),
            vec!["create", "get"],
        ),
        "proxy" => (
            String::new(),
            "v1".into(),
            format!("{}ProxyOptions", info.kind),
            vec!["create", "delete", "get", "patch", "update"],
        ),
        "token" => (
            "authentication.k8s.io".into(),
            "v1".into(),
            "TokenRequest".into(),
            vec!["create"],
        ),
        "finalize" => (own.0, own.1, own.2, vec!["update"]),
        "ephemeralcontainers" => (own.0, own.1, own.2, vec!["get", "patch", "update"]),
        _ => (own.0, own.1, own.2, vec!["get"]),
    };
    (group, version, kind, verbs)
}

/// `GET /api/v1`, `GET /apis/{g}/{v}`; `None` for an unknown group version.
pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let infos: Vec<&ResourceInfo> = registry.in_group_version(group, version).collect();
    if infos.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for info in infos {
        let mut entry = json!({
            "name": info.plural,
            "singularName": info.singular,
            "namespaced": info.namespaced,
            "kind": info.kind,
            "verbs": info.verbs,
        });
        if !info.short_names.is_empty() {
            entry["shortNames"] = json!(info.short_names);
        }
        if !info.categories.is_empty() {
            entry["categories"] = json!(info.categories);
        }
        resources.push(entry);
        for sub in &info.subresources {
            let (g, v, kind, verbs) = subresource_shape(info, sub);
            let mut entry = json!({
                "name": format!("{}/{sub}", info.plural),
                "singularName": "",
                "namespaced": info.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if g != info.group || v != info.version {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            resources.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn resource_discovery(info: &ResourceInfo) -> Value {
    let mut entry = json!({
        "resource": info.plural,
        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
        "scope": if info.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": info.singular,
        "verbs": info.verbs,
    });
    if !info.short_names.is_empty() {
        entry["shortNames"] = json!(info.short_names);
    }
    if !info.categories.is_empty() {
        entry["categories"] = json!(info.categories);
    }
    if !info.subresources.is_empty() {
        entry["subresources"] = info
            .subresources
            .iter()
            .map(|sub| {
                let (g, v, kind, verbs) = subresource_shape(info, sub);
                json!({
                    "subresource": sub,
                    "responseKind": {"group": g, "version": v, "kind": kind},
                    "verbs": verbs,
                })
            })
            .collect();
    }
    entry
}

fn group_discovery(registry: &Registry, group: &str) -> Value {
    let versions: Vec<Value> = group_versions(registry, group)
        .iter()
        .map(|version| {
            let resources: Vec<Value> = registry
                .in_group_version(group, version)
                .map(resource_discovery)
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

/// Aggregated discovery: the core group for `/api` (`core == true`), the named groups for
/// `/apis`.
pub fn aggregated(registry: &Registry, core: bool, version: Aggregated) -> Value {
    let items: Vec<Value> = if core {
        vec![group_discovery(registry, "")]
    } else {
        named_groups(registry)
            .iter()
            .map(|g| group_discovery(registry, g))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{}", version.version()),
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_pick_the_first_aggregated_version() {
        let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(wants_aggregated(accept), Some(Aggregated::V2));
        let old = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(wants_aggregated(old), Some(Aggregated::V2Beta1));
        assert_eq!(wants_aggregated("application/json, */*"), None);
    }

    #[test]
    fn resource_lists_carry_subresources() {
        let registry = Registry::builtin();
        let list = resource_list(&registry, "apps", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments") && names.contains(&"deployments/scale"));
        let scale = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert!(resource_list(&registry, "nope", "v1").is_none());
    }

    #[test]
    fn aggregated_discovery_lists_groups_with_versions() {
        let registry = Registry::builtin();
        let core = aggregated(&registry, true, Aggregated::V2);
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let apis = aggregated(&registry, false, Aggregated::V2);
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        assert_eq!(apps["versions"][0]["version"], "v1");
        assert_eq!(
            group_list(&registry)["groups"][0]["preferredVersion"]["version"],
            "v1"
        );
    }
}
