//! The resource registry: every resource the API server serves, with what discovery, the
//! generic handler and kubectl need to know about it.
//!
//! Built-in resources come from one table; custom resources are added at run time from their
//! CustomResourceDefinitions ([`Registry::add`]).

use std::collections::BTreeMap;

/// The verbs of a resource that supports everything.
pub const ALL_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// One resource (one group/version/plural).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// API group; empty for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Plural resource name, e.g. `deployments` (the URL segment).
    pub plural: String,
    /// Singular name, e.g. `deployment`.
    pub singular: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Short names kubectl accepts (`deploy`).
    pub short_names: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Verbs the resource supports.
    pub verbs: Vec<String>,
    /// Subresources (`status`, `scale`, `log`, `exec`, `binding` ...).
    pub subresources: Vec<String>,
    /// For a version of a custom resource: its schema and scale paths from the CRD.
    pub custom: Option<std::sync::Arc<crate::structural::CustomVersion>>,
}

impl ResourceInfo {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The store key prefix segment: `apps/deployments`, or `pods` for the core group.
    pub fn storage_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}/{}", self.group, self.plural)
        }
    }

    /// Whether `name` names this resource the way kubectl may (plural, singular, kind,
    /// short name), case-insensitively.
    pub fn answers_to(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        name == self.plural
            || name == self.singular
            || name == self.kind.to_ascii_lowercase()
            || self.short_names.contains(&name)
    }

    /// Whether the resource has the subresource.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.iter().any(|s| s == sub)
    }
}

/// Every resource served, built-in and custom.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
}

/// (group, version, kind, plural, namespaced, short names, categories, subresources)
type Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

const BUILTIN: &[Row] = &[
    (
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        &["ns"],
        NONE,
        &["status", "finalize"],
    ),
    (
        "",
        "v1",
        "Pod",
        "pods",
        true,
        &["po"],
        ALL,
        &[
            "status",
            "binding",
            "eviction",
            "log",
            "exec",
            "attach",
            "portforward",
            "ephemeralcontainers",
        ],
    ),
    (
        "",
        "v1",
        "Service",
        "services",
        true,
        &["svc"],
        ALL,
        &["status", "proxy"],
    ),
    (
        "",
        "v1",
        "Endpoints",
        "endpoints",
        true,
        &["ep"],
        NONE,
        NONE,
    ),
    (
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        true,
        &["cm"],
        NONE,
        NONE,
    ),
    ("", "v1", "Secret", "secrets", true, NONE, NONE, NONE),
    (
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        NONE,
        &["token"],
    ),
    (
        "",
        "v1",
        "Node",
        "nodes",
        false,
        &["no"],
        NONE,
        &["status", "proxy"],
    ),
    ("", "v1", "Event", "events", true, &["ev"], NONE, NONE),
    (
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        &["pv"],
        NONE,
        &["status"],
    ),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        &["pvc"],
        NONE,
        &["status"],
    ),
    (
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        true,
        &["quota"],
        NONE,
        &["status"],
    ),
    (
        "",
        "v1",
        "LimitRange",
        "limitranges",
        true,
        &["limits"],
        NONE,
        NONE,
    ),
    (
        "",
        "v1",
        "PodTemplate",
        "podtemplates",
        true,
        NONE,
        NONE,
        NONE,
    ),
    (
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        true,
        &["rc"],
        ALL,
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        ALL,
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        true,
        &["rs"],
        ALL,
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        ALL,
        &["status", "scale"],
    ),
    (
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        true,
        &["ds"],
        ALL,
        &["status"],
    ),
    (
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
        NONE,
        NONE,
        NONE,
    ),
    ("batch", "v1", "Job", "jobs", true, NONE, ALL, &["status"]),
    (
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        true,
        &["cj"],
        ALL,
        &["status"],
    ),
    (
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        false,
        &["csr"],
        NONE,
        &["status", "approval"],
    ),
    (
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        NONE,
        NONE,
        NONE,
    ),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
        NONE,
        NONE,
        NONE,
    ),
    (
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        true,
        &["ing"],
        NONE,
        &["status"],
    ),
    (
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        false,
        NONE,
        NONE,
        NONE,
    ),
    (
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &["netpol"],
        NONE,
        NONE,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        NONE,
        NONE,
        NONE,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        NONE,
        NONE,
        NONE,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        NONE,
        NONE,
        NONE,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        NONE,
        NONE,
        NONE,
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        false,
        &["pc"],
        NONE,
        NONE,
    ),
    (
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        true,
        &["ev"],
        NONE,
        NONE,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        NONE,
        &["status"],
    ),
    (
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
        &["sc"],
        NONE,
        NONE,
    ),
    (
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
        NONE,
        &["status"],
    ),
    (
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        &["hpa"],
        ALL,
        &["status"],
    ),
];

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Registry {
    /// The built-in resources.
    pub fn builtin() -> Registry {
        let resources = BUILTIN
            .iter()
            .map(
                |(group, version, kind, plural, namespaced, short, categories, subresources)| {
                    ResourceInfo {
                        group: group.to_string(),
                        version: version.to_string(),
                        kind: kind.to_string(),
                        plural: plural.to_string(),
                        singular: kind.to_ascii_lowercase(),
                        namespaced: *namespaced,
                        short_names: owned(short),
                        categories: owned(categories),
                        verbs: owned(ALL_VERBS),
                        subresources: owned(subresources),
                        custom: None,
                    }
                },
            )
            .collect();
        Registry { resources }
    }

    /// Every resource, built-in first, in a stable order.
    pub fn all(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// Adds (or replaces) a resource, e.g. from an established CRD.
    pub fn add(&mut self, info: ResourceInfo) {
        self.resources.retain(|r| {
            !(r.group == info.group && r.version == info.version && r.plural == info.plural)
        });
        self.resources.push(info);
    }

    /// Removes the resources of one group and plural (a deleted CRD, all versions).
    pub fn remove(&mut self, group: &str, plural: &str) {
        self.resources
            .retain(|r| !(r.group == group && r.plural == plural));
    }

    /// The resource served at `/api[s]/GROUP/VERSION/PLURAL`.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// The resource of a kind in an `apiVersion` (`apps/v1`, `v1`).
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<&ResourceInfo> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.kind == kind)
    }

    /// Group name to its versions, in registry order (core group under "").
    pub fn groups(&self) -> BTreeMap<String, Vec<String>> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &self.resources {
            let versions = groups.entry(r.group.clone()).or_default();
            if !versions.contains(&r.version) {
                versions.push(r.version.clone());
            }
        }
        groups
    }

    /// The resources of one group version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceInfo> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.group == group && r.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_resources_are_found_by_path_and_kind() {
        let registry = Registry::builtin();
        let deploy = registry.find("apps", "v1", "deployments").unwrap();
        assert_eq!(deploy.kind, "Deployment");
        assert!(deploy.namespaced && deploy.has_subresource("scale"));
        assert_eq!(deploy.api_version(), "apps/v1");
        assert_eq!(deploy.storage_resource(), "apps/deployments");
        assert!(deploy.answers_to("deploy") && deploy.answers_to("Deployment"));
        let ns = registry.find_kind("v1", "Namespace").unwrap();
        assert!(!ns.namespaced);
        assert_eq!(ns.storage_resource(), "namespaces");
    }

    #[test]
    fn groups_list_their_versions_once() {
        let groups = Registry::builtin().groups();
        assert_eq!(groups[""], vec!["v1".to_string()]);
        assert_eq!(groups["apps"], vec!["v1".to_string()]);
        assert!(groups.contains_key("apiextensions.k8s.io"));
    }

    #[test]
    fn custom_resources_can_be_added_and_removed() {
        let mut registry = Registry::builtin();
        let mut crd = registry.find("apps", "v1", "deployments").unwrap().clone();
        crd.group = "example.com".into();
        crd.kind = "Widget".into();
        crd.plural = "widgets".into();
        registry.add(crd.clone());
        registry.add(crd);
        assert_eq!(registry.in_group_version("example.com", "v1").count(), 1);
        registry.remove("example.com", "widgets");
        assert!(registry.find("example.com", "v1", "widgets").is_none());
    }
}
