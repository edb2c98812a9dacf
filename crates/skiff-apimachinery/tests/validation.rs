//! Kind-specific validation with kube-apiserver's field paths and messages.
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use skiff_apimachinery::{Registry, apply_defaults, validate};

fn errors(plural: &str, group: &str, mut obj: Value) -> Vec<String> {
    let registry = Registry::builtin();
    let info = registry
        .all()
        .iter()
        .find(|r| r.plural == plural && r.group == group)
        .unwrap();
    apply_defaults(info, &mut obj);
    validate(info, &obj)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn pod(spec: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

#[test]
fn a_well_formed_pod_is_valid() {
    let e = errors(
        "pods",
        "",
        pod(
            json!({"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 80, "name": "http"}],
                                   "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                   "volumes": [{"name": "data", "emptyDir": {}}]}),
        ),
    );
    assert!(e.is_empty(), "{e:?}");
}

#[test]
fn a_pod_needs_containers_with_names_and_images() {
    assert_eq!(
        errors("pods", "", pod(json!({"containers": []}))),
        vec!["spec.containers: Required value"]
    );
    let e = errors(
        "pods",
        "",
        pod(json!({"containers": [{"image": "nginx"}, {"name": "b"}]})),
    );
    assert_eq!(
        e,
        vec![
            "spec.containers[0].name: Required value",
            "spec.containers[1].image: Required value"
        ]
    );
}

#[test]
fn container_names_are_labels_and_unique_across_init_containers() {
    let e = errors(
        "pods",
        "",
        pod(
            json!({"initContainers": [{"name": "app", "image": "busybox"}],
                   "containers": [{"name": "app", "image": "nginx"}, {"name": "Bad", "image": "nginx"}]}),
        ),
    );
    assert_eq!(e[0], "spec.containers[0].name: Duplicate value: \"app\"");
    assert!(
        e[1].starts_with(
            "spec.containers[1].name: Invalid value: \"Bad\": a lowercase RFC 1123 label"
        ),
        "{e:?}"
    );
}

#[test]
fn ports_restart_policy_and_mounts_are_checked() {
    let e = errors(
        "pods",
        "",
        pod(json!({"restartPolicy": "Sometimes",
                   "containers": [{"name": "a", "image": "nginx",
                                   "ports": [{"containerPort": 70000}, {"containerPort": 80, "protocol": "HTTP"}],
                                   "volumeMounts": [{"name": "missing", "mountPath": "/x"}]}],
                   "volumes": [{"name": "v"}, {"name": "v"}]})),
    );
    assert_eq!(
        e,
        vec![
            "spec.volumes[1].name: Duplicate value: \"v\"",
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "spec.containers[0].ports[1].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ]
    );
}

fn deployment(selector: Value, labels: Value) -> Value {
    json!({"metadata": {"name": "web", "namespace": "default"},
           "spec": {"replicas": 2, "selector": selector,
                    "template": {"metadata": {"labels": labels},
                                 "spec": {"containers": [{"name": "a", "image": "nginx"}]}}}})
}

#[test]
fn a_deployment_selector_must_match_its_template_labels() {
    assert!(
        errors(
            "deployments",
            "apps",
            deployment(
                json!({"matchLabels": {"app": "web"}}),
                json!({"app": "web"})
            )
        )
        .is_empty()
    );
    assert_eq!(
        errors(
            "deployments",
            "apps",
            deployment(
                json!({"matchLabels": {"app": "web"}}),
                json!({"app": "api"})
            )
        ),
        vec![
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"api\"}: `selector` does not match template `labels`"
        ]
    );
    let mut d = deployment(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
    );
    d["spec"].as_object_mut().unwrap().remove("selector");
    d["spec"]["replicas"] = json!(-1);
    assert_eq!(
        errors("deployments", "apps", d),
        vec![
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.selector: Required value"
        ]
    );
}

#[test]
fn a_deployment_template_must_restart_always() {
    let mut d = deployment(
        json!({"matchLabels": {"app": "web"}}),
        json!({"app": "web"}),
    );
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_eq!(
        errors("deployments", "apps", d),
        vec![
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""
        ]
    );
}

#[test]
fn a_job_template_must_restart_on_failure_or_never() {
    let job = json!({"metadata": {"name": "pi", "namespace": "default"},
                     "spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl"}]}}}});
    assert_eq!(
        errors("jobs", "batch", job),
        vec![
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        ]
    );
    let cj = json!({"metadata": {"name": "c", "namespace": "default"},
                    "spec": {"schedule": "", "jobTemplate": {"spec": {"template": {"spec": {
                        "restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "busybox"}]}}}}}});
    assert_eq!(
        errors("cronjobs", "batch", cj),
        vec!["spec.schedule: Required value"]
    );
}

#[test]
fn services_need_valid_unique_ports_and_a_known_type() {
    let svc =
        |spec: Value| json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec});
    assert!(
        errors(
            "services",
            "",
            svc(json!({"ports": [{"port": 80}], "selector": {"app": "web"}}))
        )
        .is_empty()
    );
    assert_eq!(
        errors(
            "services",
            "",
            svc(
                json!({"type": "Magic", "ports": [{"port": 0, "name": "a"}, {"port": 81, "name": "a"}, {"port": 82}]})
            )
        ),
        vec![
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.ports[1].name: Duplicate value: \"a\"",
            "spec.ports[2].name: Required value",
        ]
    );
    assert_eq!(
        errors("services", "", svc(json!({}))),
        vec!["spec.ports: Required value"]
    );
}

#[test]
fn config_map_and_secret_keys_are_config_keys() {
    let cm = json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"ok.key": "", "bad/key": ""}});
    let e = errors("configmaps", "", cm);
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("data[bad/key]: Invalid value: \"bad/key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"), "{e:?}");
    let cm = json!({"metadata": {"name": "c", "namespace": "default"}, "data": {"a": ""}, "binaryData": {"a": ""}});
    assert_eq!(
        errors("configmaps", "", cm),
        vec!["binaryData[a]: Duplicate value: \"a\""]
    );
    let tls = json!({"metadata": {"name": "t", "namespace": "default"}, "type": "kubernetes.io/tls", "data": {"tls.crt": ""}});
    assert_eq!(
        errors("secrets", "", tls),
        vec!["data[tls.key]: Required value"]
    );
}
