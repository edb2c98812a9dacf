//! The DefaultTolerationSeconds admission of new pods, as kube-apiserver's plugin: a pod that
//! does not already tolerate the `node.kubernetes.io/not-ready` (or `unreachable`) `NoExecute`
//! taint gets a toleration of it with `operator: Exists` and `tolerationSeconds` (300 unless
//! `--default-not-ready-toleration-seconds` / `--default-unreachable-toleration-seconds` say
//! otherwise), so its pods leave a lost node after five minutes rather than at once.

use serde_json::{Value, json};

/// The taint of a node whose Ready condition is `False`.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is `Unknown`.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// kube-apiserver's default for both tolerations.
pub const DEFAULT_SECONDS: i64 = 300;

/// How long new pods tolerate a not-ready or unreachable node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultTolerationSeconds {
    /// `tolerationSeconds` of the `node.kubernetes.io/not-ready:NoExecute` toleration.
    pub not_ready: i64,
    /// `tolerationSeconds` of the `node.kubernetes.io/unreachable:NoExecute` toleration.
    pub unreachable: i64,
}

impl Default for DefaultTolerationSeconds {
    fn default() -> Self {
        DefaultTolerationSeconds {
            not_ready: DEFAULT_SECONDS,
            unreachable: DEFAULT_SECONDS,
        }
    }
}

/// Whether one of `tolerations` already covers the `NoExecute` taint `key` (an empty key or
/// effect covers every one, whatever the operator, as the plugin checks it).
fn covered(tolerations: &[Value], key: &str) -> bool {
    tolerations.iter().any(|t| {
        let field = |name: &str| t.get(name).and_then(Value::as_str).unwrap_or_default();
        (field("key") == key || field("key").is_empty())
            && (field("effect") == "NoExecute" || field("effect").is_empty())
    })
}

/// Adds the default tolerations a new `pod` lacks (mutates it; anything not a pod object is
/// left alone, validation refuses it later).
pub fn admit_pod(pod: &mut Value, seconds: DefaultTolerationSeconds) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let mut tolerations: Vec<Value> = match spec.get("tolerations") {
        Some(Value::Array(list)) => list.clone(),
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return,
    };
    let mut changed = false;
    for (key, secs) in [
        (NOT_READY_TAINT, seconds.not_ready),
        (UNREACHABLE_TAINT, seconds.unreachable),
    ] {
        if !covered(&tolerations, key) {
            tolerations.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": secs,
            }));
            changed = true;
        }
    }
    if changed {
        spec.insert("tolerations".into(), Value::Array(tolerations));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(pod: Value) -> Value {
        let mut pod = pod;
        admit_pod(&mut pod, DefaultTolerationSeconds::default());
        pod
    }

    #[test]
    fn a_pod_without_tolerations_gets_both_defaults() {
        let pod = admitted(json!({"spec": {"containers": []}}));
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([
                {"key": NOT_READY_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
    }

    #[test]
    fn the_pods_own_tolerations_win_and_others_are_kept() {
        let own = json!({"key": UNREACHABLE_TAINT, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 7});
        let other =
            json!({"key": "dedicated", "operator": "Equal", "value": "x", "effect": "NoSchedule"});
        let pod = admitted(json!({"spec": {"tolerations": [other, own]}}));
        let list = pod["spec"]["tolerations"].as_array().unwrap().clone();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0], other);
        assert_eq!(list[1], own);
        assert_eq!(list[2]["key"], NOT_READY_TAINT);
    }

    #[test]
    fn a_toleration_of_everything_covers_both() {
        let pod = admitted(json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
        assert_eq!(pod["spec"]["tolerations"], json!([{"operator": "Exists"}]));
    }

    #[test]
    fn the_seconds_are_configurable() {
        let mut pod = json!({"spec": {}});
        admit_pod(
            &mut pod,
            DefaultTolerationSeconds {
                not_ready: 5,
                unreachable: 6,
            },
        );
        assert_eq!(pod["spec"]["tolerations"][0]["tolerationSeconds"], 5);
        assert_eq!(pod["spec"]["tolerations"][1]["tolerationSeconds"], 6);
    }
}
