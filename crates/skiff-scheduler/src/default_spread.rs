//! kube-scheduler's system default topology spreading (`PodTopologySpread` with
//! `defaultingType: System`): a pod without `topologySpreadConstraints` of its own that
//! belongs to a Service, ReplicationController, ReplicaSet or StatefulSet is scored as if it
//! had two soft constraints, `topology.kubernetes.io/zone` with `maxSkew: 5` and
//! `kubernetes.io/hostname` with `maxSkew: 3`, both `ScheduleAnyway`, selecting the pods its
//! Services' and controller's selectors select. They only score: the filter never sees them.
//!
//! The selector is kube's `DefaultSelector`: the labels of every Service in the pod's
//! namespace whose selector matches the pod, merged, plus its controller's selector (a
//! ReplicationController's labels merged in; a ReplicaSet's or StatefulSet's requirements
//! added). Nothing selected: no default constraints.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController, Service, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as MetaSelector, LabelSelectorRequirement,
};

use crate::topology_spread::SCHEDULE_ANYWAY;

/// The zone topology key.
pub const ZONE: &str = "topology.kubernetes.io/zone";
/// The hostname topology key.
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// `maxSkew` of the default zone constraint.
pub const ZONE_MAX_SKEW: i32 = 5;
/// `maxSkew` of the default hostname constraint.
pub const HOSTNAME_MAX_SKEW: i32 = 3;

/// The objects whose selectors make a pod's default spreading selector.
#[derive(Debug, Clone, Default)]
pub struct Workloads {
    /// Services.
    pub services: Vec<Arc<Service>>,
    /// ReplicationControllers.
    pub replication_controllers: Vec<Arc<ReplicationController>>,
    /// ReplicaSets.
    pub replica_sets: Vec<Arc<ReplicaSet>>,
    /// StatefulSets.
    pub stateful_sets: Vec<Arc<StatefulSet>>,
}

fn in_namespace(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ns: &str,
) -> bool {
    meta.namespace.as_deref().unwrap_or_default() == ns
}

fn named<'a, T>(
    items: &'a [Arc<T>],
    meta: impl Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ns: &str,
    name: &str,
) -> Option<&'a Arc<T>> {
    items
        .iter()
        .find(|i| in_namespace(meta(i), ns) && meta(i).name.as_deref() == Some(name))
}

fn as_requirements(selector: &MetaSelector) -> Vec<LabelSelectorRequirement> {
    let labels = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| LabelSelectorRequirement {
            key: k.clone(),
            operator: "In".into(),
            values: Some(vec![v.clone()]),
        });
    labels
        .chain(selector.match_expressions.iter().flatten().cloned())
        .collect()
}

impl Workloads {
    /// kube's `DefaultSelector` for `pod`; `None` when it selects nothing (no matching
    /// Service, no known controller of a supported kind).
    pub fn default_selector(&self, pod: &Pod) -> Option<MetaSelector> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let empty = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let mut merged: BTreeMap<String, String> = BTreeMap::new();
        for service in self
            .services
            .iter()
            .filter(|s| in_namespace(&s.metadata, ns))
        {
            // A Service without a selector selects nothing.
            let Some(selector) = service.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                continue;
            };
            if selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                merged.extend(selector.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let mut expressions = Vec::new();
        let owner = pod
            .metadata
            .owner_references
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|o| o.controller == Some(true));
        if let Some(owner) = owner {
            match (owner.api_version.as_str(), owner.kind.as_str()) {
                ("v1", "ReplicationController") => {
                    let rc = named(
                        &self.replication_controllers,
                        |r| &r.metadata,
                        ns,
                        &owner.name,
                    );
                    if let Some(selector) = rc.and_then(|r| r.spec.as_ref()?.selector.as_ref()) {
                        merged.extend(selector.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                }
                ("apps/v1", "ReplicaSet") => {
                    if let Some(rs) = named(&self.replica_sets, |r| &r.metadata, ns, &owner.name)
                        && let Some(spec) = rs.spec.as_ref()
                    {
                        expressions.extend(as_requirements(&spec.selector));
                    }
                }
                ("apps/v1", "StatefulSet") => {
                    if let Some(ss) = named(&self.stateful_sets, |s| &s.metadata, ns, &owner.name)
                        && let Some(spec) = ss.spec.as_ref()
                    {
                        expressions.extend(as_requirements(&spec.selector));
                    }
                }
                _ => {}
            }
        }
        if merged.is_empty() && expressions.is_empty() {
            return None;
        }
        Some(MetaSelector {
            match_labels: Some(merged).filter(|m| !m.is_empty()),
            match_expressions: Some(expressions).filter(|e| !e.is_empty()),
        })
    }

    /// The system default constraints for `pod` (none when it has its own constraints or
    /// nothing selects it).
    pub fn constraints_for(&self, pod: &Pod) -> Vec<TopologySpreadConstraint> {
        if crate::topology_spread::has_constraints(pod) {
            return Vec::new();
        }
        let Some(selector) = self.default_selector(pod) else {
            return Vec::new();
        };
        [(ZONE, ZONE_MAX_SKEW), (HOSTNAME, HOSTNAME_MAX_SKEW)]
            .into_iter()
            .map(|(key, skew)| TopologySpreadConstraint {
                label_selector: Some(selector.clone()),
                max_skew: skew,
                topology_key: key.into(),
                when_unsatisfiable: SCHEDULE_ANYWAY.into(),
                ..TopologySpreadConstraint::default()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn pod(labels: Value, owner: Option<(&str, &str, &str)>) -> Pod {
        let mut v = json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if let Some((api, kind, name)) = owner {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": api, "kind": kind,
                "name": name, "uid": "u", "controller": true}]);
        }
        serde_json::from_value(v).unwrap()
    }

    fn obj<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn workloads() -> Workloads {
        Workloads {
            services: vec![
                obj(json!({"metadata": {"name": "web", "namespace": "ns"},
                    "spec": {"selector": {"app": "web"}}})),
                obj(json!({"metadata": {"name": "other", "namespace": "ns"},
                    "spec": {"selector": {"app": "db"}}})),
                obj(json!({"metadata": {"name": "elsewhere", "namespace": "x"},
                    "spec": {"selector": {"tier": "front"}}})),
                obj(json!({"metadata": {"name": "headless", "namespace": "ns"}, "spec": {}})),
            ],
            replica_sets: vec![obj(json!({"metadata": {"name": "rs", "namespace": "ns"},
                "spec": {"selector": {"matchLabels": {"app": "web", "pod-template-hash": "h"}},
                    "template": {}}}))],
            ..Workloads::default()
        }
    }

    #[test]
    fn services_and_the_replica_set_make_the_selector() {
        let labels = json!({"app": "web", "pod-template-hash": "h", "tier": "front"});
        let p = pod(labels, Some(("apps/v1", "ReplicaSet", "rs")));
        let s = workloads().default_selector(&p).unwrap();
        assert_eq!(
            s.match_labels.unwrap(),
            BTreeMap::from([("app".to_string(), "web".to_string())]),
            "only matching services of the pod's namespace"
        );
        let keys: Vec<String> = s
            .match_expressions
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["app", "pod-template-hash"]);
        let c = workloads().constraints_for(&p);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].topology_key.as_str(), c[0].max_skew), (ZONE, 5));
        assert_eq!((c[1].topology_key.as_str(), c[1].max_skew), (HOSTNAME, 3));
        assert!(c.iter().all(|c| c.when_unsatisfiable == SCHEDULE_ANYWAY));
    }

    #[test]
    fn a_pod_nothing_selects_or_with_own_constraints_gets_no_defaults() {
        let bare = pod(json!({"run": "x"}), None);
        assert!(workloads().default_selector(&bare).is_none());
        let job_pod = pod(json!({"run": "x"}), Some(("batch/v1", "Job", "j")));
        assert!(workloads().constraints_for(&job_pod).is_empty());
        let unknown_rs = pod(json!({"run": "x"}), Some(("apps/v1", "ReplicaSet", "gone")));
        assert!(workloads().constraints_for(&unknown_rs).is_empty());
        let mut own = pod(json!({"app": "web"}), None);
        own.spec.as_mut().unwrap().topology_spread_constraints =
            Some(vec![TopologySpreadConstraint::default()]);
        assert!(workloads().constraints_for(&own).is_empty());
    }
}
