//! Defaulting: the values kube-apiserver fills in on create and update, so objects read back
//! the way kubectl users expect (`restartPolicy: Always`, `imagePullPolicy: IfNotPresent`,
//! `strategy: RollingUpdate 25%/25%` ...).
//!
//! Follows `pkg/apis/{core,apps,batch}/v1/defaults.go` ([`apply_scheme_defaults`]), plus
//! ([`apply_server_set`]) the few values kube-apiserver's admission and REST strategies add
//! to every pod (service account `default`, priority 0, `preemptionPolicy`), service
//! (single-stack IPv4) and namespace (`kubernetes` finalizer), which no manager owns. A
//! string field counts as unset when missing, `null` or empty (Go's zero value); other fields
//! only when missing or `null`. Existing values are never changed.

use serde_json::{Map, Value, json};

use crate::registry::ResourceInfo;

/// Fills in the defaults of a built-in kind and the values the server sets on every new
/// object of it ([`apply_scheme_defaults`], then [`apply_server_set`]); other kinds are left
/// as they are.
pub fn apply_defaults(info: &ResourceInfo, obj: &mut Value) {
    apply_scheme_defaults(info, obj);
    apply_server_set(info, obj);
}

/// The values kube-apiserver's admission plugins and REST strategies set, after its field
/// manager has recorded the write (so nobody owns them): a pod's service account, `priority`
/// and `preemptionPolicy`, a Service's IP families, a Namespace's `kubernetes` finalizer.
pub fn apply_server_set(info: &ResourceInfo, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => {
            let spec = ensure_object(root, "spec");
            // The ServiceAccount and Priority admission plugins.
            set_str(spec, "serviceAccountName", "default");
            if let Some(sa) = spec.get("serviceAccountName").cloned() {
                set_str(spec, "serviceAccount", sa.as_str().unwrap_or("default"));
            }
            set(spec, "priority", json!(0));
            set_str(spec, "preemptionPolicy", "PreemptLowerPriority");
        }
        ("", "Service") => {
            let spec = ensure_object(root, "spec");
            if spec.get("type").and_then(Value::as_str) != Some("ExternalName") {
                set(spec, "ipFamilies", json!(["IPv4"]));
                set_str(spec, "ipFamilyPolicy", "SingleStack");
            }
        }
        ("", "Namespace") => {
            set(
                ensure_object(root, "spec"),
                "finalizers",
                json!(["kubernetes"]),
            );
        }
        _ => {}
    }
}

/// The defaults of kube's scheme (`SetDefaults_*`), which kube applies when it decodes a
/// request, before its field manager: the writer owns them.
pub fn apply_scheme_defaults(info: &ResourceInfo, obj: &mut Value) {
    let group = info.group.as_str();
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (group, info.kind.as_str()) {
        ("", "Pod") => default_pod(root),
        ("", "PodTemplate") => {
            if let Some(template) = child(root, "template") {
                default_pod_template(template);
            }
        }
        ("", "ReplicationController") => {
            let spec = ensure_object(root, "spec");
            set(spec, "replicas", json!(1));
            if let Some(template) = child(spec, "template") {
                default_pod_template(template);
            }
        }
        ("", "Service") => default_service(ensure_object(root, "spec")),
        ("", "Secret") => set_str(root, "type", "Opaque"),
        ("", "Namespace") => {
            set_str(ensure_object(root, "status"), "phase", "Active");
            // SetDefaults_Namespace: the name label, once there is a name.
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .map(str::to_string);
            if let Some(name) = name {
                let labels = ensure_object(ensure_object(root, "metadata"), "labels");
                labels.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
        }
        ("", "Node") => {
            let status = ensure_object(root, "status");
            if let Some(capacity) = status.get("capacity").cloned() {
                set(status, "allocatable", capacity);
            }
        }
        ("", "Endpoints") => {
            for subset in list_mut(root, "subsets") {
                for port in list_mut_of(subset, "ports") {
                    set_str(port, "protocol", "TCP");
                }
            }
        }
        ("", "PersistentVolume") => {
            let spec = ensure_object(root, "spec");
            set_str(spec, "persistentVolumeReclaimPolicy", "Retain");
            set_str(spec, "volumeMode", "Filesystem");
            set_str(ensure_object(root, "status"), "phase", "Pending");
        }
        ("", "PersistentVolumeClaim") => default_pvc(root),
        ("apps", "Deployment") => default_deployment(ensure_object(root, "spec")),
        ("apps", "ReplicaSet") => {
            let spec = ensure_object(root, "spec");
            set(spec, "replicas", json!(1));
            template_of(spec);
        }
        ("apps", "StatefulSet") => default_statefulset(ensure_object(root, "spec")),
        ("apps", "DaemonSet") => default_daemonset(ensure_object(root, "spec")),
        ("batch", "Job") => default_job(root),
        ("batch", "CronJob") => default_cronjob(ensure_object(root, "spec")),
        _ => {}
    }
}

// ---- map helpers ----

fn is_unset(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null))
}

/// Sets `key` when it is missing or null.
fn set(map: &mut Map<String, Value>, key: &str, value: Value) {
    if is_unset(map.get(key)) {
        map.insert(key.to_string(), value);
    }
}

/// Sets a string field when it is missing, null or empty.
fn set_str(map: &mut Map<String, Value>, key: &str, value: &str) {
    if is_unset(map.get(key)) || map.get(key) == Some(&json!("")) {
        map.insert(key.to_string(), json!(value));
    }
}

/// The object at `key`, created (or replacing a null) when missing.
fn ensure_object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    slot.as_object_mut()
        .expect("the slot was just made an object")
}

/// The object at `key` when there is one.
fn child<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Map<String, Value>> {
    map.get_mut(key).and_then(Value::as_object_mut)
}

/// The objects of the list at `key`.
fn list_mut<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn list_mut_of<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a mut Map<String, Value>> {
    list_mut(map, key)
}

// ---- pods ----

fn default_pod(pod: &mut Map<String, Value>) {
    let spec = ensure_object(pod, "spec");
    default_pod_spec(spec);
    // SetDefaults_Pod (not templates): requests from limits, service links.
    for key in ["containers", "initContainers"] {
        for c in list_mut(spec, key) {
            requests_from_limits(c);
        }
    }
    set(spec, "enableServiceLinks", json!(true));
}

fn requests_from_limits(container: &mut Map<String, Value>) {
    let resources = ensure_object(container, "resources");
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let requests = ensure_object(resources, "requests");
    for (k, v) in limits {
        requests.entry(k).or_insert(v);
    }
}

fn default_pod_template(template: &mut Map<String, Value>) {
    default_pod_spec(ensure_object(template, "spec"));
}

/// Defaults the pod template at `spec.template`, when there is one.
fn template_of(spec: &mut Map<String, Value>) {
    if let Some(template) = child(spec, "template") {
        default_pod_template(template);
    }
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_str(spec, "dnsPolicy", "ClusterFirst");
    set_str(spec, "restartPolicy", "Always");
    set(spec, "securityContext", json!({}));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set_str(spec, "schedulerName", "default-scheduler");
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    for key in ["containers", "initContainers", "ephemeralContainers"] {
        for c in list_mut(spec, key) {
            default_container(c, host_network);
        }
    }
    for volume in list_mut(spec, "volumes") {
        default_volume(volume);
    }
}

/// `IfNotPresent` for an image with a tag other than `latest` (or a digest only), else `Always`.
pub fn default_image_pull_policy(image: &str) -> &'static str {
    let (without_digest, digest) = match image.split_once('@') {
        Some((name, _)) => (name, true),
        None => (image, false),
    };
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let tag = last.rsplit_once(':').map(|(_, t)| t);
    match tag {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if digest => "IfNotPresent",
        None => "Always",
    }
}

fn default_container(c: &mut Map<String, Value>, host_network: bool) {
    let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
    let policy = default_image_pull_policy(image);
    set_str(c, "imagePullPolicy", policy);
    set_str(c, "terminationMessagePath", "/dev/termination-log");
    set_str(c, "terminationMessagePolicy", "File");
    set(c, "resources", json!({}));
    for port in list_mut(c, "ports") {
        set_str(port, "protocol", "TCP");
        if host_network {
            if let Some(p) = port.get("containerPort").cloned() {
                set(port, "hostPort", p);
            }
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = child(c, probe) {
            set(probe, "timeoutSeconds", json!(1));
            set(probe, "periodSeconds", json!(10));
            set(probe, "successThreshold", json!(1));
            set(probe, "failureThreshold", json!(3));
            if let Some(http) = child(probe, "httpGet") {
                set_str(http, "path", "/");
                set_str(http, "scheme", "HTTP");
            }
        }
    }
    for env in list_mut(c, "env") {
        if let Some(field_ref) = env
            .get_mut("valueFrom")
            .and_then(Value::as_object_mut)
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            set_str(field_ref, "apiVersion", "v1");
        }
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn default_volume(volume: &mut Map<String, Value>) {
    if !VOLUME_SOURCES.iter().any(|s| !is_unset(volume.get(*s))) {
        volume.insert("emptyDir".into(), json!({}));
    }
    for source in ["secret", "configMap", "downwardAPI", "projected"] {
        if let Some(s) = child(volume, source) {
            set(s, "defaultMode", json!(420));
        }
    }
    if let Some(host_path) = child(volume, "hostPath") {
        set(host_path, "type", json!(""));
    }
    if let Some(ephemeral) = child(volume, "ephemeral") {
        if let Some(template) = child(ephemeral, "volumeClaimTemplate") {
            set_str(ensure_object(template, "spec"), "volumeMode", "Filesystem");
        }
    }
}

fn default_pvc(pvc: &mut Map<String, Value>) {
    set_str(ensure_object(pvc, "spec"), "volumeMode", "Filesystem");
    set_str(ensure_object(pvc, "status"), "phase", "Pending");
}

// ---- services ----

fn default_service(spec: &mut Map<String, Value>) {
    set_str(spec, "type", "ClusterIP");
    set_str(spec, "sessionAffinity", "None");
    let type_ = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if spec.get("sessionAffinity") == Some(&json!("ClientIP")) {
        let config = ensure_object(spec, "sessionAffinityConfig");
        let client_ip = ensure_object(config, "clientIP");
        set(client_ip, "timeoutSeconds", json!(10800));
    }
    for port in list_mut(spec, "ports") {
        set_str(port, "protocol", "TCP");
        let target_unset = match port.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if target_unset {
            if let Some(p) = port.get("port").cloned() {
                port.insert("targetPort".into(), p);
            }
        }
    }
    if type_ == "NodePort" || type_ == "LoadBalancer" {
        set_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if type_ == "LoadBalancer" {
        set(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if type_ != "ExternalName" {
        set_str(spec, "internalTrafficPolicy", "Cluster");
    }
}

// ---- workloads ----

fn default_deployment(spec: &mut Map<String, Value>) {
    set(spec, "replicas", json!(1));
    let strategy = ensure_object(spec, "strategy");
    set_str(strategy, "type", "RollingUpdate");
    if strategy.get("type") == Some(&json!("RollingUpdate")) {
        let rolling = ensure_object(strategy, "rollingUpdate");
        set(rolling, "maxUnavailable", json!("25%"));
        set(rolling, "maxSurge", json!("25%"));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    set(spec, "progressDeadlineSeconds", json!(600));
    template_of(spec);
}

fn default_statefulset(spec: &mut Map<String, Value>) {
    set(spec, "replicas", json!(1));
    set_str(spec, "podManagementPolicy", "OrderedReady");
    let strategy = ensure_object(spec, "updateStrategy");
    set_str(strategy, "type", "RollingUpdate");
    if strategy.get("type") == Some(&json!("RollingUpdate")) {
        set(
            ensure_object(strategy, "rollingUpdate"),
            "partition",
            json!(0),
        );
    }
    set(spec, "revisionHistoryLimit", json!(10));
    let retention = ensure_object(spec, "persistentVolumeClaimRetentionPolicy");
    set_str(retention, "whenDeleted", "Retain");
    set_str(retention, "whenScaled", "Retain");
    for claim in list_mut(spec, "volumeClaimTemplates") {
        default_pvc(claim);
    }
    template_of(spec);
}

fn default_daemonset(spec: &mut Map<String, Value>) {
    let strategy = ensure_object(spec, "updateStrategy");
    set_str(strategy, "type", "RollingUpdate");
    if strategy.get("type") == Some(&json!("RollingUpdate")) {
        let rolling = ensure_object(strategy, "rollingUpdate");
        set(rolling, "maxUnavailable", json!(1));
        set(rolling, "maxSurge", json!(0));
    }
    set(spec, "revisionHistoryLimit", json!(10));
    template_of(spec);
}

fn default_job(job: &mut Map<String, Value>) {
    let spec = ensure_object(job, "spec");
    default_job_spec(spec);
    // A job without labels takes its pod template's.
    let template_labels = spec
        .get("template")
        .and_then(|t| t.pointer("/metadata/labels"))
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
        .cloned();
    if let Some(labels) = template_labels {
        let metadata = ensure_object(job, "metadata");
        let empty = metadata
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty);
        if empty {
            metadata.insert("labels".into(), labels);
        }
    }
}

fn default_job_spec(spec: &mut Map<String, Value>) {
    if is_unset(spec.get("completions")) && is_unset(spec.get("parallelism")) {
        spec.insert("completions".into(), json!(1));
    }
    set(spec, "parallelism", json!(1));
    let backoff = if is_unset(spec.get("backoffLimitPerIndex")) {
        json!(6)
    } else {
        json!(i32::MAX)
    };
    set(spec, "backoffLimit", backoff);
    set_str(spec, "completionMode", "NonIndexed");
    set(spec, "suspend", json!(false));
    let replacement = if is_unset(spec.get("podFailurePolicy")) {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    set_str(spec, "podReplacementPolicy", replacement);
    template_of(spec);
}

fn default_cronjob(spec: &mut Map<String, Value>) {
    set_str(spec, "concurrencyPolicy", "Allow");
    set(spec, "suspend", json!(false));
    set(spec, "successfulJobsHistoryLimit", json!(3));
    set(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job_spec) = child(spec, "jobTemplate").and_then(|t| child(t, "spec")) {
        template_of(job_spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn defaulted(plural: &str, obj: Value) -> Value {
        let registry = Registry::builtin();
        let info = registry.all().iter().find(|r| r.plural == plural).unwrap();
        let mut obj = obj;
        apply_defaults(info, &mut obj);
        obj
    }

    #[test]
    fn scheme_defaults_leave_out_what_admission_and_strategies_set() {
        let registry = Registry::builtin();
        let info = |plural: &str| registry.all().iter().find(|r| r.plural == plural).unwrap();
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        apply_scheme_defaults(info("pods"), &mut pod);
        assert_eq!(pod["spec"]["enableServiceLinks"], true);
        for field in [
            "serviceAccountName",
            "serviceAccount",
            "priority",
            "preemptionPolicy",
        ] {
            assert!(pod["spec"].get(field).is_none(), "{field}: {pod}");
        }
        let mut service = json!({"spec": {"ports": [{"port": 80}]}});
        apply_scheme_defaults(info("services"), &mut service);
        assert_eq!(service["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(service["spec"].get("ipFamilies").is_none(), "{service}");
        let mut ns =
            json!({"metadata": {"name": "x", "labels": {"kubernetes.io/metadata.name": "y"}}});
        apply_scheme_defaults(info("namespaces"), &mut ns);
        assert_eq!(ns["metadata"]["labels"]["kubernetes.io/metadata.name"], "x");
        assert!(ns.get("spec").is_none(), "{ns}");
        let mut unnamed = json!({"metadata": {"generateName": "x-"}});
        apply_scheme_defaults(info("namespaces"), &mut unnamed);
        assert!(unnamed["metadata"].get("labels").is_none(), "{unnamed}");
    }

    #[test]
    fn image_pull_policy_follows_the_tag() {
        assert_eq!(default_image_pull_policy("nginx"), "Always");
        assert_eq!(default_image_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_image_pull_policy("nginx:1.25"), "IfNotPresent");
        assert_eq!(
            default_image_pull_policy("registry:5000/team/app"),
            "Always"
        );
        assert_eq!(
            default_image_pull_policy("registry:5000/team/app:v2"),
            "IfNotPresent"
        );
        assert_eq!(
            default_image_pull_policy("busybox@sha256:abcd"),
            "IfNotPresent"
        );
    }

    #[test]
    fn a_minimal_pod_reads_back_like_kube_apiserver_wrote_it() {
        let pod = defaulted(
            "pods",
            json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "a", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
                {"name": "b", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}
            ], "volumes": [{"name": "cfg", "configMap": {"name": "c"}}, {"name": "scratch"}]}}),
        );
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["securityContext"], json!({}));
        assert_eq!(spec["serviceAccountName"], "default");
        assert_eq!(spec["serviceAccount"], "default");
        assert_eq!(spec["enableServiceLinks"], true);
        assert_eq!(spec["preemptionPolicy"], "PreemptLowerPriority");
        assert_eq!(spec["priority"], 0);
        let a = &spec["containers"][0];
        assert_eq!(a["imagePullPolicy"], "IfNotPresent");
        assert_eq!(a["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(a["terminationMessagePolicy"], "File");
        assert_eq!(a["resources"], json!({}));
        assert_eq!(a["ports"][0]["protocol"], "TCP");
        let b = &spec["containers"][1];
        assert_eq!(b["imagePullPolicy"], "Always");
        assert_eq!(b["resources"]["requests"]["cpu"], "1");
        assert_eq!(spec["volumes"][0]["configMap"]["defaultMode"], 420);
        assert_eq!(spec["volumes"][1]["emptyDir"], json!({}));
    }

    #[test]
    fn explicit_values_are_kept() {
        let pod = defaulted(
            "pods",
            json!({"spec": {"restartPolicy": "Never", "containers": [
                {"name": "a", "image": "nginx", "imagePullPolicy": "Never"}]}}),
        );
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Never");
    }

    #[test]
    fn deployments_get_rolling_update_and_template_defaults_but_no_pod_only_ones() {
        let d = defaulted(
            "deployments",
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "nginx"}]}}}}),
        );
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        let pod_spec = &spec["template"]["spec"];
        assert_eq!(pod_spec["restartPolicy"], "Always");
        assert_eq!(pod_spec["containers"][0]["imagePullPolicy"], "Always");
        assert!(pod_spec.get("serviceAccountName").is_none());
        assert!(pod_spec.get("enableServiceLinks").is_none());
    }

    #[test]
    fn a_recreate_deployment_gets_no_rolling_update() {
        let d = defaulted(
            "deployments",
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn statefulsets_and_daemonsets_get_their_update_strategies() {
        let s = defaulted("statefulsets", json!({"spec": {}}));
        assert_eq!(s["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(
            s["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        assert_eq!(s["spec"]["replicas"], 1);
        let d = defaulted("daemonsets", json!({"spec": {}}));
        assert_eq!(
            d["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
    }

    #[test]
    fn jobs_default_completions_only_when_parallelism_is_unset_too() {
        let j = defaulted(
            "jobs",
            json!({"spec": {"template": {"metadata": {"labels": {"app": "pi"}}, "spec": {"restartPolicy": "Never"}}}}),
        );
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(j["spec"]["completionMode"], "NonIndexed");
        assert_eq!(j["spec"]["suspend"], false);
        assert_eq!(j["metadata"]["labels"], json!({"app": "pi"}));
        let j = defaulted("jobs", json!({"spec": {"parallelism": 3}}));
        assert!(j["spec"].get("completions").is_none());
    }

    #[test]
    fn cronjobs_get_history_limits_and_their_pod_template_defaults() {
        let c = defaulted(
            "cronjobs",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "busybox:1.36"}]}}}}}}),
        );
        assert_eq!(c["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(c["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(c["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(c["spec"]["suspend"], false);
        let container = &c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        assert!(
            c["spec"]["jobTemplate"]["spec"]
                .get("backoffLimit")
                .is_none()
        );
    }

    #[test]
    fn services_get_type_affinity_and_target_ports() {
        let s = defaulted(
            "services",
            json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https"}]}}),
        );
        let spec = &s["spec"];
        assert_eq!(spec["type"], "ClusterIP");
        assert_eq!(spec["sessionAffinity"], "None");
        assert_eq!(
            spec["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(spec["ports"][1]["targetPort"], "https");
        assert_eq!(spec["internalTrafficPolicy"], "Cluster");
        assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
        assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
        assert!(spec.get("externalTrafficPolicy").is_none());
        let np = defaulted("services", json!({"spec": {"type": "NodePort"}}));
        assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
    }

    #[test]
    fn secrets_namespaces_and_unknown_kinds() {
        assert_eq!(defaulted("secrets", json!({}))["type"], "Opaque");
        let ns = defaulted("namespaces", json!({"metadata": {"name": "x"}}));
        assert_eq!(ns["status"]["phase"], "Active");
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        let cm = defaulted("configmaps", json!({"data": {}}));
        assert_eq!(cm, json!({"data": {}}));
    }
}
