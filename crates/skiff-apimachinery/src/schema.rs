//! The JSON schemas of the built-in kinds, from `k8s-openapi`'s `schemars` support, named as
//! Kubernetes names them (`io.k8s.api.apps.v1.Deployment`) and referenced as
//! `#/components/schemas/NAME`.
//!
//! Generated once per process on first use; strict field validation walks objects against
//! them and the OpenAPI documents publish them.

use std::sync::OnceLock;

use k8s_openapi::api::{
    apps, autoscaling, coordination, core, discovery, events, networking, policy, rbac, scheduling,
    storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use schemars::JsonSchema;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use serde_json::{Map, Value};

/// The prefix of every `$ref`.
pub const REF_PREFIX: &str = "#/components/schemas/";

/// One built-in kind and the name of its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSchema {
    /// API group, empty for the core group.
    pub group: &'static str,
    /// Version.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Schema name, e.g. `io.k8s.api.core.v1.Pod`.
    pub name: String,
}

/// Every schema, by name, and the kinds that have one.
#[derive(Debug)]
pub struct Schemas {
    /// Schema name to schema (with `$ref`s to other entries).
    pub definitions: Map<String, Value>,
    /// The top-level kinds.
    pub kinds: Vec<KindSchema>,
}

macro_rules! kinds {
    ($generator:ident, $kinds:ident; $( ($group:literal, $version:literal, $kind:literal, $ty:ty) ),* $(,)?) => {
        $(
            $generator.subschema_for::<$ty>();
            $kinds.push(KindSchema {
                group: $group,
                version: $version,
                kind: $kind,
                name: <$ty as JsonSchema>::schema_name().into_owned(),
            });
        )*
    };
}

fn generate() -> Schemas {
    let settings = SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
        s.meta_schema = None;
    });
    let mut generator = SchemaGenerator::new(settings);
    let mut kinds = Vec::new();
    kinds!(generator, kinds;
        ("", "v1", "Namespace", core::v1::Namespace),
        ("", "v1", "Pod", core::v1::Pod),
        ("", "v1", "Service", core::v1::Service),
        ("", "v1", "Endpoints", core::v1::Endpoints),
        ("", "v1", "ConfigMap", core::v1::ConfigMap),
        ("", "v1", "Secret", core::v1::Secret),
        ("", "v1", "ServiceAccount", core::v1::ServiceAccount),
        ("", "v1", "Node", core::v1::Node),
        ("", "v1", "Event", core::v1::Event),
        ("", "v1", "PersistentVolume", core::v1::PersistentVolume),
        ("", "v1", "PersistentVolumeClaim", core::v1::PersistentVolumeClaim),
        ("", "v1", "ResourceQuota", core::v1::ResourceQuota),
        ("", "v1", "LimitRange", core::v1::LimitRange),
        ("", "v1", "PodTemplate", core::v1::PodTemplate),
        ("", "v1", "ReplicationController", core::v1::ReplicationController),
        ("", "v1", "Binding", core::v1::Binding),
        ("apps", "v1", "Deployment", apps::v1::Deployment),
        ("apps", "v1", "ReplicaSet", apps::v1::ReplicaSet),
        ("apps", "v1", "StatefulSet", apps::v1::StatefulSet),
        ("apps", "v1", "DaemonSet", apps::v1::DaemonSet),
        ("apps", "v1", "ControllerRevision", apps::v1::ControllerRevision),
        ("batch", "v1", "Job", k8s_openapi::api::batch::v1::Job),
        ("batch", "v1", "CronJob", k8s_openapi::api::batch::v1::CronJob),
        ("certificates.k8s.io", "v1", "CertificateSigningRequest", k8s_openapi::api::certificates::v1::CertificateSigningRequest),
        ("coordination.k8s.io", "v1", "Lease", coordination::v1::Lease),
        ("discovery.k8s.io", "v1", "EndpointSlice", discovery::v1::EndpointSlice),
        ("networking.k8s.io", "v1", "Ingress", networking::v1::Ingress),
        ("networking.k8s.io", "v1", "IngressClass", networking::v1::IngressClass),
        ("networking.k8s.io", "v1", "NetworkPolicy", networking::v1::NetworkPolicy),
        ("rbac.authorization.k8s.io", "v1", "Role", rbac::v1::Role),
        ("rbac.authorization.k8s.io", "v1", "RoleBinding", rbac::v1::RoleBinding),
        ("rbac.authorization.k8s.io", "v1", "ClusterRole", rbac::v1::ClusterRole),
        ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", rbac::v1::ClusterRoleBinding),
        ("scheduling.k8s.io", "v1", "PriorityClass", scheduling::v1::PriorityClass),
        ("events.k8s.io", "v1", "Event", events::v1::Event),
        ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", apiextensions::v1::CustomResourceDefinition),
        ("storage.k8s.io", "v1", "StorageClass", storage::v1::StorageClass),
        ("policy", "v1", "PodDisruptionBudget", policy::v1::PodDisruptionBudget),
        ("policy", "v1", "Eviction", policy::v1::Eviction),
        ("autoscaling", "v2", "HorizontalPodAutoscaler", autoscaling::v2::HorizontalPodAutoscaler),
        ("autoscaling", "v1", "Scale", autoscaling::v1::Scale),
    );
    // Types every group version's document refers to.
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions>();
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Patch>();
    Schemas {
        definitions: generator.take_definitions(false),
        kinds,
    }
}

/// The schemas of the built-in kinds (generated on first use).
pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(generate)
}

/// The schema name of a built-in kind (`io.k8s.api.apps.v1.Deployment`).
pub fn schema_name(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    schemas()
        .kinds
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .map(|k| k.name.as_str())
}

/// The schema of a built-in kind.
pub fn schema_for(group: &str, version: &str, kind: &str) -> Option<&'static Value> {
    schemas()
        .definitions
        .get(schema_name(group, version, kind)?)
}

/// Follows a `$ref` (possibly with siblings such as `description`) to the schema it names.
pub fn resolve(schema: &Value) -> &Value {
    resolve_named(schema).1
}

/// Follows `$ref`s like [`resolve`], also giving the name of the definition reached (`None`
/// for an inline schema).
pub fn resolve_named(schema: &Value) -> (Option<&'static str>, &Value) {
    let mut current = schema;
    let mut name = None;
    for _ in 0..8 {
        let Some((key, target)) = current
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix(REF_PREFIX))
            .and_then(|n| schemas().definitions.get_key_value(n))
        else {
            break;
        };
        name = Some(key.as_str());
        current = target;
    }
    (name, current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_kubernetes_schema_names() {
        assert_eq!(
            schema_name("apps", "v1", "Deployment"),
            Some("io.k8s.api.apps.v1.Deployment")
        );
        assert_eq!(schema_name("", "v1", "Pod"), Some("io.k8s.api.core.v1.Pod"));
        assert!(schema_name("example.com", "v1", "Widget").is_none());
    }

    #[test]
    fn references_resolve_to_definitions() {
        let pod = schema_for("", "v1", "Pod").unwrap();
        let spec = resolve(&pod["properties"]["spec"]);
        assert!(spec["properties"]["containers"].is_object());
        assert!(
            schemas()
                .definitions
                .contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
        );
    }
}
