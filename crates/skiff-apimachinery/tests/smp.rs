//! Strategic merge patch: what `kubectl apply`, `edit`, `patch` and `rollout restart` send.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use skiff_apimachinery::{PatchError, Registry, ResourceInfo, strategic_merge};

fn info(plural: &str, group: &str) -> ResourceInfo {
    Registry::builtin()
        .all()
        .iter()
        .find(|r| r.plural == plural && r.group == group)
        .cloned()
        .unwrap()
}

fn patch_pod(original: Value, patch: Value) -> Value {
    strategic_merge(&original, &patch, &info("pods", "")).unwrap()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn pod_with(containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "web", "tier": "fe"}},
           "spec": {"containers": containers}})
}

#[test]
fn two_container_lists_merge_by_name_keeping_order() {
    let original = pod_with(json!([
        {"name": "a", "image": "a:1", "args": ["x"]},
        {"name": "b", "image": "b:1"}
    ]));
    let merged = patch_pod(
        original,
        json!({"spec": {"containers": [{"name": "c", "image": "c:1"}, {"name": "a", "image": "a:2"}]}}),
    );
    assert_eq!(names(&merged["spec"]["containers"]), ["a", "b", "c"]);
    assert_eq!(
        merged["spec"]["containers"][0],
        json!({"name": "a", "image": "a:2", "args": ["x"]})
    );
}

#[test]
fn nested_lists_merge_on_their_own_keys() {
    let original = pod_with(json!([{"name": "a", "image": "a",
        "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "1"}],
        "ports": [{"containerPort": 80, "name": "http"}],
        "volumeMounts": [{"name": "v", "mountPath": "/v"}]}]));
    let merged = patch_pod(
        original,
        json!({"spec": {"containers": [{"name": "a",
            "env": [{"name": "Y", "value": "2"}],
            "ports": [{"containerPort": 443, "name": "https"}],
            "volumeMounts": [{"name": "w", "mountPath": "/v"}]}]}}),
    );
    let c = &merged["spec"]["containers"][0];
    assert_eq!(
        c["env"],
        json!([{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}])
    );
    assert_eq!(c["ports"].as_array().unwrap().len(), 2);
    assert_eq!(c["volumeMounts"], json!([{"name": "w", "mountPath": "/v"}]));
}

#[test]
fn patch_delete_removes_one_element() {
    let original = pod_with(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]));
    let merged = patch_pod(
        original,
        json!({"spec": {"$setElementOrder/containers": [{"name": "a"}],
                        "containers": [{"$patch": "delete", "name": "b"}]}}),
    );
    assert_eq!(names(&merged["spec"]["containers"]), ["a"]);
}

#[test]
fn set_element_order_reorders_and_places_new_elements() {
    let original = pod_with(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]));
    let merged = patch_pod(
        original.clone(),
        json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
    );
    assert_eq!(names(&merged["spec"]["containers"]), ["b", "a"]);

    let merged = patch_pod(
        original.clone(),
        json!({"spec": {"$setElementOrder/containers": [{"name": "new"}, {"name": "a"}, {"name": "b"}],
                        "containers": [{"name": "new", "image": "n"}]}}),
    );
    assert_eq!(names(&merged["spec"]["containers"]), ["new", "a", "b"]);

    // Elements only the server has keep their place relative to the others.
    let original = pod_with(json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]));
    let merged = patch_pod(
        original,
        json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "a"}]}}),
    );
    assert_eq!(names(&merged["spec"]["containers"]), ["b", "c", "a"]);
}

#[test]
fn retain_keys_drops_fields_of_the_old_strategy() {
    let original = json!({"spec": {"replicas": 1, "strategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}}});
    let merged = strategic_merge(
        &original,
        &json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
        &info("deployments", "apps"),
    )
    .unwrap();
    assert_eq!(merged["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(merged["spec"]["replicas"], 1);
}

#[test]
fn retain_keys_switches_a_volume_source() {
    let original =
        json!({"spec": {"containers": [], "volumes": [{"name": "v", "configMap": {"name": "c"}}]}});
    let merged = patch_pod(
        original,
        json!({"spec": {"volumes": [{"$retainKeys": ["name", "secret"], "name": "v", "secret": {"secretName": "s"}}]}}),
    );
    assert_eq!(
        merged["spec"]["volumes"],
        json!([{"name": "v", "secret": {"secretName": "s"}}])
    );
}

#[test]
fn null_deletes_a_key_and_maps_merge() {
    let merged = patch_pod(
        pod_with(json!([])),
        json!({"metadata": {"labels": {"tier": null, "env": "prod"}, "annotations": {"a": "1", "gone": null}}}),
    );
    assert_eq!(
        merged["metadata"]["labels"],
        json!({"app": "web", "env": "prod"})
    );
    assert_eq!(merged["metadata"]["annotations"], json!({"a": "1"}));
}

#[test]
fn rollout_restart_adds_a_template_annotation() {
    let original = json!({"spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "a", "image": "a"}]}}}});
    let merged = strategic_merge(
        &original,
        &json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}}}}}),
        &info("deployments", "apps"),
    )
    .unwrap();
    assert_eq!(
        merged["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"],
        "2024-01-01T00:00:00Z"
    );
    assert_eq!(
        merged["spec"]["template"]["spec"]["containers"][0]["name"],
        "a"
    );
}

#[test]
fn primitive_lists_replace_unless_they_merge() {
    let original = json!({"metadata": {"finalizers": ["a", "b"]},
        "spec": {"containers": [{"name": "c", "args": ["1", "2"]}]}});
    let merged = patch_pod(
        original,
        json!({"metadata": {"finalizers": ["c", "a"]}, "spec": {"containers": [{"name": "c", "args": ["3"]}]}}),
    );
    assert_eq!(merged["metadata"]["finalizers"], json!(["a", "b", "c"]));
    assert_eq!(merged["spec"]["containers"][0]["args"], json!(["3"]));
}

#[test]
fn delete_from_primitive_list_removes_values() {
    let merged = patch_pod(
        json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"],
                            "$setElementOrder/finalizers": ["c", "a"]}}),
    );
    assert_eq!(merged["metadata"]["finalizers"], json!(["c", "a"]));
}

#[test]
fn atomic_lists_of_objects_replace() {
    let merged = patch_pod(
        json!({"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}}),
        json!({"spec": {"tolerations": [{"key": "c"}]}}),
    );
    assert_eq!(merged["spec"]["tolerations"], json!([{"key": "c"}]));
}

#[test]
fn patch_replace_replaces_a_map_or_a_list() {
    let merged = patch_pod(
        pod_with(json!([{"name": "a"}, {"name": "b"}])),
        json!({"metadata": {"labels": {"$patch": "replace", "only": "this"}},
               "spec": {"containers": [{"$patch": "replace"}, {"name": "z", "image": "z"}]}}),
    );
    assert_eq!(merged["metadata"]["labels"], json!({"only": "this"}));
    assert_eq!(names(&merged["spec"]["containers"]), ["z"]);
}

#[test]
fn service_ports_merge_by_port() {
    let original = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}});
    let merged = strategic_merge(
        &original,
        &json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}),
        &info("services", ""),
    )
    .unwrap();
    assert_eq!(
        merged["spec"]["ports"],
        json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
    );
}

#[test]
fn status_conditions_merge_by_type() {
    let original = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
    let merged = patch_pod(
        original,
        json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
    );
    assert_eq!(
        merged["status"]["conditions"][0],
        json!({"type": "Ready", "status": "True"})
    );
    assert_eq!(merged["status"]["conditions"].as_array().unwrap().len(), 2);
}

#[test]
fn new_fields_lose_their_nulls_and_directives() {
    let merged = patch_pod(
        json!({"metadata": {"name": "p"}}),
        json!({"metadata": {"labels": {"a": "1", "b": null}},
               "spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "E", "value": null}]}]}}),
    );
    assert_eq!(merged["metadata"]["labels"], json!({"a": "1"}));
    assert_eq!(
        merged["spec"]["containers"][0]["env"],
        json!([{"name": "E"}])
    );
}

#[test]
fn malformed_patches_are_refused() {
    let pods = info("pods", "");
    assert_eq!(
        strategic_merge(&json!({}), &json!([1]), &pods),
        Err(PatchError::NotAnObject)
    );
    let err = strategic_merge(
        &pod_with(json!([])),
        &json!({"spec": {"containers": [{"image": "x"}]}}),
        &pods,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "map: {\"image\":\"x\"} does not contain declared merge key: name"
    );
    let mut widget = pods.clone();
    widget.group = "example.com".into();
    widget.kind = "Widget".into();
    assert!(matches!(
        strategic_merge(&json!({}), &json!({}), &widget),
        Err(PatchError::UnsupportedKind { .. })
    ));
}
