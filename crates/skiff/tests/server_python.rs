//! The official Python client (`kubernetes` package) against `skiff server`: CRUD, a list with
//! a selector, and a watch. The interpreter is `SKIFF_PYTHON` (the Makefile points it at
//! `build/venv/bin/python`, which `make deps` creates), else that venv directly.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::path::PathBuf;
use std::process::Command;

use server_support::{Server, run};

const SCRIPT: &str = r#"
import sys, threading
from kubernetes import client, config, watch

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()

core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="py")))
cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings", labels={"app": "py"}), data={"a": "1"})
created = core.create_namespaced_config_map("py", cm)
assert created.metadata.uid, created
start_rv = created.metadata.resource_version

read = core.read_namespaced_config_map("settings", "py")
assert read.data == {"a": "1"}, read.data
core.patch_namespaced_config_map("settings", "py", {"data": {"b": "2"}})
read.data["c"] = "3"
try:
    core.replace_namespaced_config_map("settings", "py", read)
    raise SystemExit("a stale replace must conflict")
except client.exceptions.ApiException as e:
    assert e.status == 409, e

listed = core.list_namespaced_config_map("py", label_selector="app=py")
assert [i.metadata.name for i in listed.items] == ["settings"], listed.items

events = []
w = watch.Watch()
for event in w.stream(core.list_namespaced_config_map, "py", field_selector="metadata.name=settings", resource_version=start_rv, timeout_seconds=10):
    events.append((event["type"], event["object"].metadata.name))
    if len(events) == 1:
        core.delete_namespaced_config_map("settings", "py")
    if event["type"] == "DELETED":
        w.stop()
assert events[0] == ("MODIFIED", "settings"), events
assert events[-1] == ("DELETED", "settings"), events

deployment = client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=1,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="web", image="nginx")]),
        ),
    ),
)
apps.create_namespaced_deployment("py", deployment)
scale = apps.patch_namespaced_deployment_scale("web", "py", {"spec": {"replicas": 4}})
assert scale.spec.replicas == 4, scale
try:
    core.read_namespaced_pod("nope", "py")
    raise SystemExit("a missing pod must be 404")
except client.exceptions.ApiException as e:
    assert e.status == 404, e
apps.delete_namespaced_deployment("web", "py")
core.delete_namespace("py")
print("ok")
"#;

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("SKIFF_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../build/venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the kubernetes client: run `make deps` (creates build/venv) or set SKIFF_PYTHON"
    );
    venv
}

#[test]
fn the_python_client_does_crud_and_watches() {
    let server = Server::start();
    let script = server.dir.path().join("client.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = run(Command::new(python())
        .arg(&script)
        .arg(server.kubeconfig())
        .env("HOME", server.dir.path()));
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "python client failed:\nstdout: {}\nstderr: {}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}
