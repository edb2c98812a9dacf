//! Resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) as integers, and what a pod
//! requests: the sum of its containers or the largest init container, whichever is larger, plus
//! its overhead (kube-scheduler's `computePodResourceRequest`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::resources::Resources;

pub use skiff_apimachinery::quantity::parse_scaled;

/// A quantity in millicores (CPU).
pub fn milli(q: &Quantity) -> u64 {
    parse_scaled(&q.0, 1000).unwrap_or(0)
}

/// A quantity as a plain integer (bytes, counts).
pub fn value(q: &Quantity) -> u64 {
    parse_scaled(&q.0, 1).unwrap_or(0)
}

/// CPU and memory of a resource list (`requests`, `allocatable`).
pub fn resources_of(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
    let Some(list) = list else {
        return Resources::default();
    };
    Resources {
        milli_cpu: list.get("cpu").map(milli).unwrap_or(0),
        memory: list.get("memory").map(value).unwrap_or(0),
    }
}

fn container_requests(c: &Container) -> Resources {
    let resources = c.resources.as_ref();
    let requests = resources.and_then(|r| r.requests.as_ref());
    let limits = resources.and_then(|r| r.limits.as_ref());
    // A limit without a request defaults the request to the limit.
    let from_requests = resources_of(requests);
    let from_limits = resources_of(limits);
    Resources {
        milli_cpu: if requests.is_some_and(|r| r.contains_key("cpu")) {
            from_requests.milli_cpu
        } else {
            from_limits.milli_cpu
        },
        memory: if requests.is_some_and(|r| r.contains_key("memory")) {
            from_requests.memory
        } else {
            from_limits.memory
        },
    }
}

fn max(a: Resources, b: Resources) -> Resources {
    Resources {
        milli_cpu: a.milli_cpu.max(b.milli_cpu),
        memory: a.memory.max(b.memory),
    }
}

/// What a pod requests: `max(sum(containers) + sidecars, max(init containers))` + overhead.
/// Restartable init containers (sidecars, `restartPolicy: Always`) run beside the app
/// containers, so they add up with them.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else {
        return Resources::default();
    };
    let mut sum = spec
        .containers
        .iter()
        .map(container_requests)
        .fold(Resources::default(), Resources::plus);
    let mut init_peak = Resources::default();
    let mut sidecars = Resources::default();
    for init in spec.init_containers.iter().flatten() {
        let r = container_requests(init);
        if init.restart_policy.as_deref() == Some("Always") {
            sidecars = sidecars.plus(r);
            init_peak = max(init_peak, sidecars);
        } else {
            init_peak = max(init_peak, sidecars.plus(r));
        }
    }
    sum = sum.plus(sidecars);
    max(sum, init_peak).plus(resources_of(spec.overhead.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quantities_parse_like_the_api_does() {
        assert_eq!(parse_scaled("2", 1000), Some(2000));
        assert_eq!(parse_scaled("0.1", 1000), Some(100));
        assert_eq!(parse_scaled("250m", 1000), Some(250));
        assert_eq!(parse_scaled("1Gi", 1), Some(1 << 30));
        assert_eq!(parse_scaled("1e3", 1), Some(1000));
        assert_eq!(parse_scaled("1k", 1), Some(1000));
        assert_eq!(parse_scaled("1.5Ki", 1), Some(1536));
        assert_eq!(parse_scaled("1n", 1000), Some(1), "rounded up");
        assert_eq!(parse_scaled("abc", 1), None);
        assert_eq!(parse_scaled("-1", 1), None);
        assert_eq!(parse_scaled("1Zi", 1), None);
    }

    #[test]
    fn a_pod_requests_the_larger_of_its_containers_and_its_largest_init_container() {
        let pod: Pod = serde_json::from_value(json!({
            "spec": {
                "initContainers": [
                    {"name": "i1", "resources": {"requests": {"cpu": "2", "memory": "1Mi"}}},
                ],
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "1Gi"}}},
                ],
                "overhead": {"cpu": "10m"},
            }
        }))
        .unwrap();
        assert_eq!(
            pod_requests(&pod),
            Resources {
                milli_cpu: 2010,
                memory: 2 << 30
            }
        );
    }

    #[test]
    fn sidecars_add_to_the_app_containers() {
        let pod: Pod = serde_json::from_value(json!({
            "spec": {
                "initContainers": [
                    {"name": "s", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                    {"name": "i", "resources": {"requests": {"cpu": "300m"}}},
                ],
                "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}}}],
            }
        }))
        .unwrap();
        assert_eq!(pod_requests(&pod).milli_cpu, 400);
    }
}
