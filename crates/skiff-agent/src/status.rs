//! A pod's status computed from its spec and its engine containers, the way the kubelet
//! computes it: container states (waiting, running, terminated with reason and exit code),
//! restart counts, the phase, and the Initialized / ContainersReady / Ready conditions.
//! Pure: everything it needs comes in as arguments.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use skiff_engine::{Container, Status};

use crate::node::trim_time;
use crate::runtime;

/// Why a container waits, when the worker knows better than the engine's records
/// (`ErrImagePull`, `CrashLoopBackOff`, `CreateContainerConfigError`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// The reason, a CamelCase word.
    pub reason: String,
    /// A sentence for humans.
    pub message: String,
}

/// What the status is computed from.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The pod as the API has it.
    pub pod: &'a Pod,
    /// Its engine containers (every attempt).
    pub containers: &'a [Container],
    /// Waiting reasons the worker set, by container name.
    pub waiting: &'a BTreeMap<String, Waiting>,
    /// Running containers whose startup or readiness probe has not passed.
    pub unready: &'a std::collections::BTreeSet<String>,
    /// The node's address.
    pub host_ip: &'a str,
    /// The pod's own address (none: the node's, for host-network pods and without a pod
    /// network).
    pub pod_ip: Option<&'a str>,
    /// Whether a sandbox was made.
    pub has_sandbox: bool,
    /// The time now.
    pub now: &'a str,
}

/// The restart policy of the pod (`Always` when unset).
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether a container that exited with `code` is started again under `policy`.
pub fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

fn terminated(c: &Container) -> Value {
    let code = c.state.exit_code;
    let reason = if c.state.oom_killed {
        "OOMKilled"
    } else if !c.state.error.is_empty() {
        "StartError"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    let mut t = json!({
        "exitCode": code,
        "reason": reason,
        "containerID": format!("skiff://{}", c.id()),
    });
    let started = trim_time(&c.state.started_at);
    let finished = trim_time(&c.state.finished_at);
    t["startedAt"] = if started.is_empty() {
        Value::Null
    } else {
        json!(started)
    };
    t["finishedAt"] = if finished.is_empty() {
        Value::Null
    } else {
        json!(finished)
    };
    if !c.state.error.is_empty() {
        t["message"] = json!(c.state.error);
    } else if let Some(message) = crate::termination::message(c) {
        t["message"] = json!(message);
    }
    json!({"terminated": t})
}

/// One entry of `containerStatuses` / `initContainerStatuses`.
fn container_status(
    name: &str,
    image: &str,
    containers: &[Container],
    waiting: Option<&Waiting>,
    default_wait: &str,
) -> (Value, State) {
    let (latest, previous) = runtime::latest(containers, name);
    let mut status = json!({
        "name": name,
        "image": image,
        "imageID": latest.map(|c| c.config.image_id.clone()).unwrap_or_default(),
        "ready": false,
        "started": false,
        "restartCount": latest.map(runtime::attempt).unwrap_or(0),
        "lastState": {},
    });
    if let Some(c) = latest {
        status["containerID"] = json!(format!("skiff://{}", c.id()));
    }
    let state = match (waiting, latest) {
        (Some(w), latest) => {
            status["state"] = json!({"waiting": {"reason": w.reason, "message": w.message}});
            if let Some(c) = latest.filter(|c| c.status() == Status::Exited) {
                status["lastState"] = terminated(c);
                State::Stopped(c.state.exit_code)
            } else {
                State::Waiting
            }
        }
        (None, Some(c)) if matches!(c.status(), Status::Running | Status::Restarting) => {
            status["state"] = json!({"running": {"startedAt": trim_time(&c.state.started_at)}});
            status["ready"] = json!(true);
            status["started"] = json!(true);
            if let Some(p) = previous {
                status["lastState"] = terminated(p);
            }
            State::Running
        }
        (None, Some(c)) if c.status() == Status::Exited => {
            status["state"] = terminated(c);
            if let Some(p) = previous {
                status["lastState"] = terminated(p);
            }
            State::Stopped(c.state.exit_code)
        }
        _ => {
            status["state"] = json!({"waiting": {"reason": default_wait}});
            State::Waiting
        }
    };
    (status, state)
}

/// A container's state class, for the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Stopped(i32),
}

/// Whether the init containers all completed, and whether one failed for good.
pub fn init_progress(pod: &Pod, containers: &[Container]) -> (bool, bool) {
    let policy = restart_policy(pod);
    let inits = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.clone())
        .unwrap_or_default();
    for ic in &inits {
        let (latest, _) = runtime::latest(containers, &ic.name);
        match latest {
            Some(c) if c.status() == Status::Exited && c.state.exit_code == 0 => continue,
            Some(c) if c.status() == Status::Exited && policy == "Never" => return (false, true),
            _ => return (false, false),
        }
    }
    (true, false)
}

/// The pod's status.
pub fn compute(inputs: &Inputs<'_>) -> Value {
    let pod = inputs.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = restart_policy(pod);
    let (init_done, init_failed) = init_progress(pod, inputs.containers);
    let mut init_statuses = Vec::new();
    for ic in spec.init_containers.iter().flatten() {
        let (s, _) = container_status(
            &ic.name,
            ic.image.as_deref().unwrap_or_default(),
            inputs.containers,
            inputs.waiting.get(&ic.name),
            "PodInitializing",
        );
        init_statuses.push(s);
    }
    let mut statuses = Vec::new();
    let (mut waiting, mut running, mut stopped, mut succeeded, mut failed) = (0, 0, 0, 0, 0);
    let default_wait = if init_done {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let mut unready = Vec::new();
    for c in &spec.containers {
        let (mut s, state) = container_status(
            &c.name,
            c.image.as_deref().unwrap_or_default(),
            inputs.containers,
            inputs.waiting.get(&c.name),
            default_wait,
        );
        if inputs.unready.contains(&c.name) {
            s["ready"] = json!(false);
        }
        if s["ready"] != json!(true) {
            unready.push(c.name.clone());
        }
        let has_last = s["lastState"].get("terminated").is_some();
        match state {
            State::Running => running += 1,
            State::Waiting if has_last => stopped += 1,
            State::Waiting => waiting += 1,
            State::Stopped(code) => {
                stopped += 1;
                if code == 0 {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
            }
        }
        statuses.push(s);
    }
    let phase = if init_failed {
        "Failed"
    } else if !init_done || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            "Always" => "Running",
            "OnFailure" if stopped == succeeded => "Succeeded",
            "OnFailure" => "Running",
            _ if failed > 0 => "Failed",
            _ => "Succeeded",
        }
    } else {
        "Pending"
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let old_conditions: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.conditions).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let condition = |kind: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        let since = old_conditions
            .iter()
            .find(|c| c["type"] == kind && c["status"] == status)
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .filter(|t| !t.is_null())
            .unwrap_or_else(|| json!(inputs.now));
        let mut c = json!({"type": kind, "status": status, "lastProbeTime": null,
            "lastTransitionTime": since});
        if !ok {
            c["reason"] = json!(reason);
            if !message.is_empty() {
                c["message"] = json!(message);
            }
        }
        c
    };
    let pending_inits: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|ic| {
            let (latest, _) = runtime::latest(inputs.containers, &ic.name);
            !latest.is_some_and(|c| c.status() == Status::Exited && c.state.exit_code == 0)
        })
        .map(|ic| ic.name.clone())
        .collect();
    let ready = unready.is_empty() && !terminal;
    let (ready_reason, ready_message) = if terminal {
        ("PodCompleted", String::new())
    } else {
        (
            "ContainersNotReady",
            format!("containers with unready status: [{}]", unready.join(" ")),
        )
    };
    let mut conditions = vec![
        condition(
            "Initialized",
            init_done,
            "ContainersNotInitialized",
            format!(
                "containers with incomplete status: [{}]",
                pending_inits.join(" ")
            ),
        ),
        condition("Ready", ready, ready_reason, ready_message.clone()),
        condition("ContainersReady", ready, ready_reason, ready_message),
    ];
    if inputs.has_sandbox {
        conditions.insert(
            0,
            condition("PodReadyToStartContainers", true, "", String::new()),
        );
    }
    let scheduled = old_conditions
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
        .unwrap_or_else(|| condition("PodScheduled", true, "", String::new()));
    conditions.push(scheduled);
    let start_time = pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| json!(t))
        .unwrap_or_else(|| json!(inputs.now));
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": inputs.host_ip,
        "hostIPs": [{"ip": inputs.host_ip}],
        "startTime": start_time,
        "containerStatuses": statuses,
        "qosClass": qos_class(pod),
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = Value::Array(init_statuses);
    }
    if inputs.has_sandbox {
        let ip = inputs.pod_ip.unwrap_or(inputs.host_ip);
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    status
}

/// The pod's QoS class (see [`crate::qos`]).
pub fn qos_class(pod: &Pod) -> &'static str {
    match &pod.spec {
        Some(spec) => crate::qos::qos_class(spec).as_str(),
        None => crate::qos::QosClass::BestEffort.as_str(),
    }
}

/// Whether `wanted` differs from the pod's current status in any field it sets.
pub fn differs(pod: &Pod, wanted: &Value) -> bool {
    let current = pod
        .status
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    let Some(fields) = wanted.as_object() else {
        return true;
    };
    fields
        .iter()
        .any(|(k, v)| normalize(current.get(k)) != normalize(Some(v)))
}

/// Drops nulls and empty objects, so a round trip through the typed client compares equal.
fn normalize(v: Option<&Value>) -> Value {
    match v {
        None | Some(Value::Null) => Value::Null,
        Some(Value::Object(map)) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                let n = normalize(Some(v));
                let empty = n.is_null() || n.as_object().is_some_and(|o| o.is_empty());
                if !empty {
                    out.insert(k.clone(), n);
                }
            }
            Value::Object(out)
        }
        Some(Value::Array(items)) => {
            Value::Array(items.iter().map(|i| normalize(Some(i))).collect())
        }
        Some(other) => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_decide_like_the_kubelet() {
        assert!(should_restart("Always", 0));
        assert!(should_restart("OnFailure", 3));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 3));
    }

    fn pod(spec: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"}, "spec": spec}))
            .unwrap()
    }

    #[test]
    fn a_pod_without_containers_yet_is_pending_and_not_ready() {
        let p = pod(json!({"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}));
        let waiting = BTreeMap::new();
        let s = compute(&Inputs {
            pod: &p,
            containers: &[],
            waiting: &waiting,
            unready: &Default::default(),
            host_ip: "127.0.0.1",
            pod_ip: None,
            has_sandbox: false,
            now: "2026-01-01T00:00:00Z",
        });
        assert_eq!(s["phase"], "Pending");
        assert_eq!(
            s["containerStatuses"][0]["state"]["waiting"]["reason"],
            "ContainerCreating"
        );
        assert_eq!(s["qosClass"], "BestEffort");
        let ready = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "False");
        assert!(s.get("podIP").is_none());
    }

    #[test]
    fn the_status_round_trip_compares_equal() {
        let p = pod(json!({"containers": [{"name": "c", "image": "i"}]}));
        let waiting = BTreeMap::new();
        let s = compute(&Inputs {
            pod: &p,
            containers: &[],
            waiting: &waiting,
            unready: &Default::default(),
            host_ip: "127.0.0.1",
            pod_ip: None,
            has_sandbox: true,
            now: "2026-01-01T00:00:00Z",
        });
        let mut with = serde_json::to_value(&p).unwrap();
        with["status"] = s.clone();
        let p2: Pod = serde_json::from_value(with).unwrap();
        assert!(!differs(&p2, &s), "{s:#}");
        assert!(differs(&p, &s));
    }
}
