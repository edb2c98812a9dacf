//! A pod's QoS class and the figures of its pod cgroup, computed as the kubelet does: pure
//! functions of the pod spec.
//!
//! - Guaranteed: every container (init containers too) has cpu and memory limits, and the
//!   requests equal the limits (a missing request defaults to the limit).
//! - BestEffort: no container requests or limits any cpu or memory.
//! - Burstable: everything else.
//!
//! The pod cgroup gets `cpu.shares` from the pod's cpu request (`milliCPU * 1024 / 1000`, at
//! least 2; `cpu.weight = 1 + (shares - 2) * 9999 / 262142` on cgroup v2), a cpu quota from the
//! sum of the cpu limits when every container has one, and a memory limit from the sum of the
//! memory limits when every container has one. A BestEffort pod gets 2 shares and no limits.
//! The pod's request (and limit) of a resource is the larger of the app containers' sum and
//! the largest init container's, as init containers run one at a time before the apps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// The CFS period of pod cgroups, in microseconds (the kubelet's default).
pub const CPU_PERIOD: u64 = 100_000;
/// The fewest `cpu.shares` a cgroup gets (the kernel's minimum; a BestEffort pod's).
pub const MIN_SHARES: u64 = 2;
/// The most `cpu.shares` a cgroup can have.
pub const MAX_SHARES: u64 = 262_144;
/// The smallest CFS quota the kubelet writes (1ms).
pub const MIN_QUOTA: i64 = 1000;

/// A pod's quality-of-service class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Limits equal requests for cpu and memory in every container.
    Guaranteed,
    /// Some requests or limits, but not Guaranteed.
    Burstable,
    /// No cpu or memory requests or limits at all.
    BestEffort,
}

impl QosClass {
    /// The name the API uses (`status.qosClass`).
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// A compute resource the QoS class looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Compute {
    Cpu,
    Memory,
}

impl Compute {
    const ALL: [Compute; 2] = [Compute::Cpu, Compute::Memory];

    fn name(self) -> &'static str {
        match self {
            Compute::Cpu => "cpu",
            Compute::Memory => "memory",
        }
    }

    /// The amount in millicores (cpu) or bytes (memory); `None` if it does not parse.
    fn amount(self, q: &Quantity) -> Option<u64> {
        match self {
            Compute::Cpu => quantity::millis(&q.0),
            Compute::Memory => quantity::bytes(&q.0),
        }
    }
}

/// A container's positive cpu and memory limits and requests (a request the container does
/// not give defaults to its limit, as the API server's defaulting does).
fn figures(c: &Container) -> (BTreeMap<Compute, u64>, BTreeMap<Compute, u64>) {
    let res = c.resources.as_ref();
    let pick = |map: Option<&BTreeMap<String, Quantity>>, r: Compute| {
        map.and_then(|m| m.get(r.name()))
            .and_then(|q| r.amount(q))
            .filter(|v| *v > 0)
    };
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    for r in Compute::ALL {
        let limit = pick(res.and_then(|r| r.limits.as_ref()), r);
        let explicit = res
            .and_then(|x| x.requests.as_ref())
            .and_then(|m| m.get(r.name()));
        let request = match explicit {
            Some(q) => r.amount(q).filter(|v| *v > 0),
            None => limit,
        };
        if let Some(l) = limit {
            limits.insert(r, l);
        }
        if let Some(q) = request {
            requests.insert(r, q);
        }
    }
    (limits, requests)
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

/// The pod's QoS class.
pub fn qos_class(spec: &PodSpec) -> QosClass {
    let mut any = false;
    let mut guaranteed = true;
    for c in all_containers(spec) {
        let (limits, requests) = figures(c);
        any |= !limits.is_empty() || !requests.is_empty();
        for r in Compute::ALL {
            match (limits.get(&r), requests.get(&r)) {
                (Some(l), Some(q)) if l == q => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

/// What the pod cgroup is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodFigures {
    /// The class (which parent the pod cgroup goes under).
    pub qos: QosClass,
    /// `cpu.shares` (v1); see [`PodFigures::cpu_weight`] for v2.
    pub cpu_shares: u64,
    /// The CFS quota per [`CPU_PERIOD`], in microseconds (`None`: unlimited).
    pub cpu_quota: Option<i64>,
    /// The memory limit in bytes (`None`: unlimited).
    pub memory_limit: Option<i64>,
}

impl PodFigures {
    /// `cpu.weight` on cgroup v2, converted from the shares as the kubelet does.
    pub fn cpu_weight(&self) -> u64 {
        shares_to_weight(self.cpu_shares)
    }
}

/// `milliCPU * 1024 / 1000`, within [`MIN_SHARES`]..=[`MAX_SHARES`].
pub fn millis_to_shares(millis: u64) -> u64 {
    (millis.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// `milliCPU * period / 1000`, at least [`MIN_QUOTA`].
pub fn millis_to_quota(millis: u64) -> i64 {
    let quota = millis.saturating_mul(CPU_PERIOD) / 1000;
    i64::try_from(quota).unwrap_or(i64::MAX).max(MIN_QUOTA)
}

/// v2 `cpu.weight` of v1 shares: `1 + ((shares - 2) * 9999) / 262142`.
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_SHARES, MAX_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

/// The pod's total of one resource: the larger of the app containers' sum and the largest init
/// container's; `None` when `all_needed` and some container lacks it.
fn pod_total(
    spec: &PodSpec,
    pick: impl Fn(&Container) -> Option<u64>,
    all_needed: bool,
) -> Option<u64> {
    let mut apps = 0u64;
    for c in &spec.containers {
        match pick(c) {
            Some(v) => apps = apps.saturating_add(v),
            None if all_needed => return None,
            None => {}
        }
    }
    let mut init = 0u64;
    for c in spec.init_containers.iter().flatten() {
        match pick(c) {
            Some(v) => init = init.max(v),
            None if all_needed => return None,
            None => {}
        }
    }
    Some(apps.max(init))
}

/// The pod cgroup's figures.
pub fn pod_figures(spec: &PodSpec) -> PodFigures {
    let qos = qos_class(spec);
    if qos == QosClass::BestEffort {
        return PodFigures {
            qos,
            cpu_shares: MIN_SHARES,
            cpu_quota: None,
            memory_limit: None,
        };
    }
    let limit = |r: Compute| move |c: &Container| figures(c).0.get(&r).copied();
    let request = |r: Compute| move |c: &Container| figures(c).1.get(&r).copied();
    let cpu_request = pod_total(spec, request(Compute::Cpu), false).unwrap_or(0);
    let cpu_limit = pod_total(spec, limit(Compute::Cpu), true);
    let memory_limit = pod_total(spec, limit(Compute::Memory), true);
    PodFigures {
        qos,
        cpu_shares: millis_to_shares(cpu_request),
        cpu_quota: cpu_limit.map(millis_to_quota),
        memory_limit: memory_limit.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(containers: serde_json::Value) -> PodSpec {
        serde_json::from_value(json!({ "containers": containers })).unwrap()
    }

    fn c(limits: serde_json::Value, requests: serde_json::Value) -> serde_json::Value {
        json!({"name": "c", "image": "i", "resources": {"limits": limits, "requests": requests}})
    }

    #[test]
    fn the_classes_follow_the_kubernetes_rules() {
        let guaranteed = spec(json!([
            c(json!({"cpu": "500m", "memory": "64Mi"}), json!({})),
            c(
                json!({"cpu": "1", "memory": "1Gi"}),
                json!({"cpu": "1000m", "memory": "1024Mi"})
            ),
        ]));
        assert_eq!(qos_class(&guaranteed), QosClass::Guaranteed);
        let unequal = spec(json!([c(
            json!({"cpu": "500m", "memory": "64Mi"}),
            json!({"cpu": "250m"})
        )]));
        assert_eq!(qos_class(&unequal), QosClass::Burstable);
        let one_without = spec(json!([
            c(json!({"cpu": "500m", "memory": "64Mi"}), json!({})),
            json!({"name": "b", "image": "i"}),
        ]));
        assert_eq!(qos_class(&one_without), QosClass::Burstable);
        let memory_only = spec(json!([c(json!({"memory": "64Mi"}), json!({}))]));
        assert_eq!(qos_class(&memory_only), QosClass::Burstable);
        let nothing = spec(json!([{"name": "a", "image": "i"}]));
        assert_eq!(qos_class(&nothing), QosClass::BestEffort);
        let other_resources = spec(json!([c(
            json!({"ephemeral-storage": "1Gi"}),
            json!({"ephemeral-storage": "1Gi"})
        )]));
        assert_eq!(qos_class(&other_resources), QosClass::BestEffort);
        assert_eq!(QosClass::Burstable.as_str(), "Burstable");
    }

    #[test]
    fn an_init_container_counts_for_the_class() {
        let mut s = spec(json!([c(json!({"cpu": "1", "memory": "1Gi"}), json!({}))]));
        s.init_containers = Some(vec![
            serde_json::from_value(json!({"name": "i", "image": "i"})).unwrap(),
        ]);
        assert_eq!(qos_class(&s), QosClass::Burstable);
    }

    #[test]
    fn guaranteed_pods_get_shares_quota_and_memory() {
        let s = spec(json!([
            c(json!({"cpu": "500m", "memory": "64Mi"}), json!({})),
            c(json!({"cpu": "250m", "memory": "32Mi"}), json!({})),
        ]));
        let f = pod_figures(&s);
        assert_eq!(f.qos, QosClass::Guaranteed);
        assert_eq!(f.cpu_shares, 768);
        assert_eq!(f.cpu_quota, Some(75_000));
        assert_eq!(f.memory_limit, Some(96 << 20));
        assert_eq!(f.cpu_weight(), 1 + (766 * 9999) / 262_142);
    }

    #[test]
    fn burstable_pods_get_limits_only_when_every_container_has_one() {
        let s = spec(json!([
            c(
                json!({"cpu": "1", "memory": "128Mi"}),
                json!({"cpu": "100m"})
            ),
            c(
                json!({"memory": "64Mi"}),
                json!({"cpu": "200m", "memory": "16Mi"})
            ),
        ]));
        let f = pod_figures(&s);
        assert_eq!(f.qos, QosClass::Burstable);
        assert_eq!(f.cpu_shares, 307);
        assert_eq!(f.cpu_quota, None);
        assert_eq!(f.memory_limit, Some(192 << 20));
        let requests_only = spec(json!([c(json!({}), json!({"cpu": "1m"}))]));
        let f = pod_figures(&requests_only);
        assert_eq!(f.cpu_shares, MIN_SHARES);
        assert_eq!((f.cpu_quota, f.memory_limit), (None, None));
    }

    #[test]
    fn init_containers_count_by_their_largest() {
        let mut s = spec(json!([c(
            json!({"cpu": "200m", "memory": "64Mi"}),
            json!({})
        )]));
        s.init_containers = Some(vec![
            serde_json::from_value(c(json!({"cpu": "2", "memory": "32Mi"}), json!({}))).unwrap(),
        ]);
        let f = pod_figures(&s);
        assert_eq!(f.qos, QosClass::Guaranteed);
        assert_eq!(f.cpu_shares, 2048);
        assert_eq!(f.cpu_quota, Some(200_000));
        assert_eq!(f.memory_limit, Some(64 << 20));
    }

    #[test]
    fn best_effort_pods_get_two_shares() {
        let f = pod_figures(&spec(json!([{"name": "a", "image": "i"}])));
        assert_eq!(
            f,
            PodFigures {
                qos: QosClass::BestEffort,
                cpu_shares: 2,
                cpu_quota: None,
                memory_limit: None
            }
        );
        assert_eq!(f.cpu_weight(), 1);
    }

    #[test]
    fn conversions_match_the_kubelet() {
        assert_eq!(millis_to_shares(0), 2);
        assert_eq!(millis_to_shares(1000), 1024);
        assert_eq!(millis_to_shares(10_000_000), MAX_SHARES);
        assert_eq!(millis_to_quota(1), MIN_QUOTA);
        assert_eq!(millis_to_quota(1500), 150_000);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
