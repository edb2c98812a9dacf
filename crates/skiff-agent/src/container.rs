//! What the engine is asked to run for a pod's container: the command (`command` replaces the
//! image's entrypoint, `args` its command), the environment (values, `valueFrom` field,
//! ConfigMap and Secret references, `envFrom`, with `$(VAR)` expansion), the working
//! directory, the user from the security context, and limits as cgroup settings; every
//! container joins the network, IPC and UTS namespaces of its pod's sandbox.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::Api;
use skiff_engine::CreateRequest;
use skiff_engine::record::{NamespaceJoin, Resources};

use crate::quantity;
use crate::runtime::{self, Kind, PodRef};

/// Why a container's configuration could not be built: the kubelet's waiting reason
/// `CreateContainerConfigError` and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

/// The pod's identity for labels and names.
pub fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
    }
}

/// The engine request of one container of `pod`, joining the sandbox whose init is `sandbox_pid`.
pub fn request(
    pod: &Pod,
    container: &Container,
    kind: Kind,
    attempt: u32,
    sandbox_pid: i32,
    env: Vec<String>,
) -> CreateRequest {
    let pref = pod_ref(pod);
    let vars: BTreeMap<String, String> = env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let expand_all = |list: &Option<Vec<String>>| -> Vec<String> {
        list.iter().flatten().map(|a| expand(a, &vars)).collect()
    };
    let command = expand_all(&container.command);
    let args = expand_all(&container.args);
    let (entrypoint, cmd) = match command.split_first() {
        Some((first, rest)) => (
            Some(first.clone()),
            rest.iter().chain(&args).cloned().collect(),
        ),
        None => (None, args),
    };
    CreateRequest {
        image: container.image.clone().unwrap_or_default(),
        name: Some(runtime::engine_name(&pref, &container.name, attempt)),
        cmd,
        entrypoint,
        env,
        working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
        user: user(pod, container),
        hostname: Some(pod_hostname(pod)),
        resources: resources(container),
        labels: runtime::labels(&pref, &container.name, kind, attempt),
        join_namespaces: joined_namespaces(pod, sandbox_pid),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        ..CreateRequest::default()
    }
}

/// The namespaces a container of `pod` joins: the sandbox's network, IPC and UTS namespaces
/// (the node's own for hostNetwork/hostIPC, which the sandbox then holds), and the PID
/// namespace of the sandbox with `shareProcessNamespace` or the node's with `hostPID`.
pub fn joined_namespaces(pod: &Pod, sandbox_pid: i32) -> Vec<NamespaceJoin> {
    let spec = pod.spec.as_ref();
    let of_sandbox = |kind: &str, file: &str| NamespaceJoin {
        kind: kind.to_string(),
        path: format!("/proc/{sandbox_pid}/ns/{file}"),
    };
    let mut joins = vec![
        of_sandbox("network", "net"),
        of_sandbox("ipc", "ipc"),
        of_sandbox("uts", "uts"),
    ];
    if spec.and_then(|s| s.host_pid).unwrap_or(false) {
        joins.push(NamespaceJoin {
            kind: "pid".into(),
            path: String::new(),
        });
    } else if spec
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false)
    {
        joins.push(of_sandbox("pid", "pid"));
    }
    joins
}

/// The namespaces the sandbox itself shares with the node: IPC with `hostIPC`, PID with
/// `hostPID` (network and UTS come with `hostNetwork`, through the engine's host network
/// mode).
pub fn sandbox_host_namespaces(pod: &Pod) -> Vec<NamespaceJoin> {
    let spec = pod.spec.as_ref();
    let mut joins = Vec::new();
    for (wanted, kind) in [
        (spec.and_then(|s| s.host_ipc), "ipc"),
        (spec.and_then(|s| s.host_pid), "pid"),
    ] {
        if wanted.unwrap_or(false) {
            joins.push(NamespaceJoin {
                kind: kind.into(),
                path: String::new(),
            });
        }
    }
    joins
}

/// Whether the pod uses the node's network namespace.
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The pod's hostname: `spec.hostname` or its name.
pub fn pod_hostname(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default()
}

/// `UID[:GID]` from the container's security context over the pod's.
fn user(pod: &Pod, container: &Container) -> Option<String> {
    let pod_ctx = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let ctx = container.security_context.as_ref();
    let uid = ctx
        .and_then(|c| c.run_as_user)
        .or(pod_ctx.and_then(|c| c.run_as_user));
    let gid = ctx
        .and_then(|c| c.run_as_group)
        .or(pod_ctx.and_then(|c| c.run_as_group));
    match (uid, gid) {
        (Some(u), Some(g)) => Some(format!("{u}:{g}")),
        (Some(u), None) => Some(u.to_string()),
        (None, Some(g)) => Some(format!("0:{g}")),
        (None, None) => None,
    }
}

/// Limits as cgroup settings: memory limit, CPU quota from the CPU limit, shares from the
/// CPU request (the kubelet's `milliCPU * 1024 / 1000`, at least 2).
pub fn resources(container: &Container) -> Resources {
    let res = container.resources.as_ref();
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let memory = limits
        .and_then(|l| l.get("memory"))
        .and_then(|q| quantity::bytes(&q.0))
        .unwrap_or(0);
    let cpu_limit = limits
        .and_then(|l| l.get("cpu"))
        .and_then(|q| quantity::millis(&q.0))
        .unwrap_or(0);
    let cpu_request = requests
        .and_then(|l| l.get("cpu"))
        .or_else(|| limits.and_then(|l| l.get("cpu")))
        .and_then(|q| quantity::millis(&q.0));
    Resources {
        memory: i64::try_from(memory).unwrap_or(i64::MAX),
        nano_cpus: i64::try_from(cpu_limit)
            .unwrap_or(0)
            .saturating_mul(1_000_000),
        cpu_shares: cpu_request
            .map(|m| i64::try_from(m * 1024 / 1000).unwrap_or(i64::MAX).max(2))
            .unwrap_or(0),
        pids_limit: 0,
    }
}

/// Expands `$(NAME)` from `vars` (unknown names stay as written; `$$` is a literal `$`).
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The upper-case variable prefix of a Service name (`my-svc` -> `MY_SVC`).
fn env_name(name: &str) -> String {
    name.replace('-', "_").to_ascii_uppercase()
}

/// The kubelet's variables for Services (`envvars.FromServices`): `<NAME>_SERVICE_HOST`,
/// `<NAME>_SERVICE_PORT` (+ `_<PORT NAME>` per named port) and the docker-links forms
/// (`<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`). Services without a
/// cluster IP (headless, ExternalName) have none.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" || ports.is_empty() {
            continue;
        }
        let prefix = env_name(svc.metadata.name.as_deref().unwrap_or_default());
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        let port_var = format!("{prefix}_SERVICE_PORT");
        out.push((port_var.clone(), ports[0].port.to_string()));
        for p in ports {
            if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{port_var}_{}", env_name(name)), p.port.to_string()));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let lower = proto.to_ascii_lowercase();
            let url = format!("{lower}://{ip}:{}", p.port);
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_ascii_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), lower));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// The Services whose variables a pod gets: `default/kubernetes` always, and with
/// `enableServiceLinks` (default true) every Service of the pod's namespace.
async fn pod_services(client: &kube::Client, pod: &Pod) -> Result<Vec<Service>, ConfigError> {
    let ns = pod_ref(pod).namespace;
    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let mut services: BTreeMap<String, Service> = BTreeMap::new();
    let defaults: Api<Service> = Api::namespaced(client.clone(), "default");
    if let Some(master) = defaults
        .get_opt("kubernetes")
        .await
        .map_err(|e| ConfigError(format!("cannot list services: {e}")))?
    {
        services.insert("kubernetes".into(), master);
    }
    if links {
        let api: Api<Service> = Api::namespaced(client.clone(), &ns);
        let list = api
            .list(&Default::default())
            .await
            .map_err(|e| ConfigError(format!("cannot list services: {e}")))?;
        for svc in list.items {
            // A Service of the pod's namespace wins over the master one of the same name.
            services.insert(svc.metadata.name.clone().unwrap_or_default(), svc);
        }
    }
    Ok(services.into_values().collect())
}

/// The container's environment as `KEY=VALUE`s: the Service variables first, then
/// `envFrom`, then `env` in order (later entries may refer to earlier ones through `$(VAR)`).
pub async fn environment(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
    host_ip: &str,
    pod_ip: &str,
) -> Result<Vec<String>, ConfigError> {
    let ns = pod_ref(pod).namespace;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut vars: Vec<(String, String)> = service_env(&pod_services(client, pod).await?);
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        vars.retain(|(key, _)| *key != k);
        vars.push((k, v));
    };
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.clone().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match configmaps.get_opt(&r.name).await {
                Ok(Some(cm)) => {
                    for (k, v) in cm.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                Ok(None) if optional => {}
                Ok(None) => return Err(ConfigError(format!("configmap \"{}\" not found", r.name))),
                Err(e) => return Err(ConfigError(e.to_string())),
            }
        }
        if let Some(r) = &source.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match secrets.get_opt(&r.name).await {
                Ok(Some(s)) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into(),
                        );
                    }
                }
                Ok(None) if optional => {}
                Ok(None) => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
                Err(e) => return Err(ConfigError(e.to_string())),
            }
        }
    }
    for env in container.env.iter().flatten() {
        let known: BTreeMap<String, String> = vars.iter().cloned().collect();
        let value = match &env.value_from {
            None => expand(env.value.as_deref().unwrap_or_default(), &known),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, host_ip, pod_ip).ok_or_else(|| {
                        ConfigError(format!("unsupported fieldRef {}", f.field_path))
                    })?
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let cm = configmaps
                        .get_opt(&r.name)
                        .await
                        .map_err(|e| ConfigError(e.to_string()))?;
                    match cm.and_then(|cm| cm.data.and_then(|d| d.get(&r.key).cloned())) {
                        Some(v) => v,
                        None if optional => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                r.key, r.name
                            )));
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    let s = secrets
                        .get_opt(&r.name)
                        .await
                        .map_err(|e| ConfigError(e.to_string()))?;
                    match s.and_then(|s| s.data.and_then(|d| d.get(&r.key).cloned())) {
                        Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(ConfigError(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                r.key, r.name
                            )));
                        }
                    }
                } else if let Some(r) = &from.resource_field_ref {
                    resource_value(container, &r.resource).ok_or_else(|| {
                        ConfigError(format!("unsupported resourceFieldRef {}", r.resource))
                    })?
                } else {
                    String::new()
                }
            }
        };
        set(&mut vars, env.name.clone(), value);
    }
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// The value of a downward-API `fieldRef` (`host_ip` and `pod_ip` are the node's and the
/// pod's addresses; the pod's is the node's for host-network pods).
pub fn field_value(pod: &Pod, path: &str, host_ip: &str, pod_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let from_map = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref()?.get(key).cloned().unwrap_or_default())
    };
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        _ if path.starts_with("metadata.labels['") => from_map(&meta.labels, "metadata.labels['")?,
        _ if path.starts_with("metadata.annotations['") => {
            from_map(&meta.annotations, "metadata.annotations['")?
        }
        _ => return None,
    })
}

/// The value of a `resourceFieldRef` (`limits.memory` in bytes, `limits.cpu` in whole CPUs
/// rounded up, as the kubelet writes them).
pub(crate) fn resource_value(container: &Container, resource: &str) -> Option<String> {
    let (section, name) = resource.split_once('.')?;
    let res = container.resources.as_ref()?;
    let map = if section == "limits" {
        &res.limits
    } else {
        &res.requests
    };
    let q = map.as_ref().and_then(|m| m.get(name));
    Some(match name {
        "cpu" => q
            .and_then(|q| quantity::millis(&q.0))
            .map(|m| m.div_ceil(1000).to_string())
            .unwrap_or_else(|| "0".into()),
        _ => q
            .and_then(|q| quantity::bytes(&q.0))
            .map(|b| b.to_string())
            .unwrap_or_else(|| "0".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn command_replaces_the_entrypoint_and_args_the_command() {
        let p = pod(serde_json::json!({"containers": [
            {"name": "c", "image": "busybox", "command": ["sh", "-c"], "args": ["echo $(A)"]}
        ]}));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = request(&p, c, Kind::App, 2, 42, vec!["A=1".into()]);
        assert_eq!(r.entrypoint.as_deref(), Some("sh"));
        assert_eq!(r.cmd, vec!["-c", "echo 1"]);
        assert_eq!(r.name.as_deref(), Some("k8s_c_web_ns_u1_2"));
        assert_eq!(r.join_namespaces[0].path, "/proc/42/ns/net");
        assert_eq!(r.labels[runtime::LABEL_ATTEMPT], "2");
        let only_args = pod(serde_json::json!({"containers": [
            {"name": "c", "image": "busybox", "args": ["x"]}
        ]}));
        let c = &only_args.spec.as_ref().unwrap().containers[0];
        let r = request(&only_args, c, Kind::App, 0, 1, vec![]);
        assert_eq!(r.entrypoint, None);
        assert_eq!(r.cmd, vec!["x"]);
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        let vars = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$x", &vars), "1-$(B)-$(A)-$x");
    }

    #[test]
    fn user_limits_and_fields_come_from_the_spec() {
        let p = pod(serde_json::json!({
            "securityContext": {"runAsUser": 1000},
            "containers": [{"name": "c", "image": "b", "securityContext": {"runAsGroup": 3000},
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}, "requests": {"cpu": "250m"}}}],
        }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        assert_eq!(user(&p, c).as_deref(), Some("1000:3000"));
        let r = resources(c);
        assert_eq!(r.memory, 64 << 20);
        assert_eq!(r.nano_cpus, 500_000_000);
        assert_eq!(r.cpu_shares, 256);
        assert_eq!(
            field_value(&p, "metadata.labels['app']", "1.2.3.4", "10.42.0.5").as_deref(),
            Some("x")
        );
        assert_eq!(
            field_value(&p, "status.podIP", "1.2.3.4", "10.42.0.5").as_deref(),
            Some("10.42.0.5")
        );
        assert_eq!(
            resource_value(c, "limits.memory").as_deref(),
            Some("67108864")
        );
        assert_eq!(resource_value(c, "limits.cpu").as_deref(), Some("1"));
    }

    #[test]
    fn services_give_the_kubelets_variables() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "my-db"},
            "spec": {"clusterIP": "10.43.0.7", "ports": [
                {"name": "sql", "port": 5432},
                {"name": "stats", "port": 9000, "protocol": "UDP"},
            ]},
        }))
        .unwrap();
        let headless: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]},
        }))
        .unwrap();
        let vars: BTreeMap<String, String> = service_env(&[svc, headless]).into_iter().collect();
        let want = [
            ("MY_DB_SERVICE_HOST", "10.43.0.7"),
            ("MY_DB_SERVICE_PORT", "5432"),
            ("MY_DB_SERVICE_PORT_SQL", "5432"),
            ("MY_DB_SERVICE_PORT_STATS", "9000"),
            ("MY_DB_PORT", "tcp://10.43.0.7:5432"),
            ("MY_DB_PORT_5432_TCP", "tcp://10.43.0.7:5432"),
            ("MY_DB_PORT_5432_TCP_PROTO", "tcp"),
            ("MY_DB_PORT_5432_TCP_PORT", "5432"),
            ("MY_DB_PORT_5432_TCP_ADDR", "10.43.0.7"),
            ("MY_DB_PORT_9000_UDP", "udp://10.43.0.7:9000"),
            ("MY_DB_PORT_9000_UDP_PROTO", "udp"),
            ("MY_DB_PORT_9000_UDP_PORT", "9000"),
            ("MY_DB_PORT_9000_UDP_ADDR", "10.43.0.7"),
        ];
        assert_eq!(vars.len(), want.len(), "{vars:?}");
        for (k, v) in want {
            assert_eq!(vars.get(k).map(String::as_str), Some(v), "{k}");
        }
    }
}
