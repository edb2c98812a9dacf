//! `inspect`: a container as the JSON document `docker inspect` prints (the fields users
//! format with `--format`).

use serde_json::{Value, json};

use crate::engine::{Container, Engine};
use crate::record::{NetworkMode, Status};

/// The inspect document of `container`.
pub fn document(engine: &Engine, container: &Container) -> Value {
    let c = &container.config;
    let s = &container.state;
    let dir = engine.dir(&c.id);
    let status = container.status();
    let ro = |read_only: bool| if read_only { ":ro" } else { "" };
    let binds: Vec<String> = c
        .binds
        .iter()
        .map(|b| format!("{}:{}{}", b.source, b.destination, ro(b.read_only)))
        .chain(
            c.volumes
                .iter()
                .filter(|v| !v.anonymous)
                .map(|v| format!("{}:{}{}", v.name, v.destination, ro(v.read_only))),
        )
        .collect();
    let anonymous: serde_json::Map<String, Value> = c
        .volumes
        .iter()
        .filter(|v| v.anonymous)
        .map(|v| (v.destination.clone(), json!({})))
        .collect();
    let volume_mounts = c.volumes.iter().map(|v| {
        json!({
            "Type": "volume",
            "Name": v.name,
            "Source": v.source,
            "Destination": v.destination,
            "Driver": "local",
            "Mode": if v.read_only { "ro" } else { "" },
            "RW": !v.read_only,
            "Propagation": "",
        })
    });
    let network_mode = match c.join_containers.iter().find(|j| j.kind == "network") {
        Some(join) => format!("container:{}", join.container),
        None => match c.network {
            NetworkMode::None => "none".to_string(),
            NetworkMode::Host => "host".to_string(),
        },
    };
    let joined = |kind: &str| {
        c.join_containers
            .iter()
            .find(|j| j.kind == kind)
            .map(|j| format!("container:{}", j.container))
            .unwrap_or_default()
    };
    let mut mounts: Vec<Value> = c
        .binds
        .iter()
        .map(|b| {
            json!({
                "Type": "bind",
                "Source": b.source,
                "Destination": b.destination,
                "Mode": if b.read_only { "ro" } else { "" },
                "RW": !b.read_only,
                "Propagation": "rprivate",
            })
        })
        .collect();
    mounts.extend(volume_mounts);
    let tmpfs: serde_json::Map<String, Value> = c
        .tmpfs
        .iter()
        .map(|t| (t.destination.clone(), json!(t.options.join(","))))
        .collect();
    let argv = c.argv();
    let null_if_empty = |v: &Vec<String>| {
        if v.is_empty() { Value::Null } else { json!(v) }
    };
    let max_retries = match c.restart {
        crate::record::RestartPolicy::OnFailure { max_retries } => max_retries,
        _ => 0,
    };
    json!({
        "Id": c.id,
        "Created": c.created,
        "Path": argv.first().cloned().unwrap_or_default(),
        "Args": argv.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": status.as_str(),
            "Running": status == Status::Running,
            "Paused": false,
            "Restarting": status == Status::Restarting,
            "OOMKilled": s.oom_killed,
            "Dead": false,
            "Pid": if status == Status::Running { s.pid } else { 0 },
            "ExitCode": s.exit_code,
            "Error": s.error,
            "StartedAt": s.started_at,
            "FinishedAt": s.finished_at,
        },
        "Image": c.image_id,
        "ResolvConfPath": dir.resolv_conf_file(),
        "HostnamePath": dir.hostname_file(),
        "HostsPath": dir.hosts_file(),
        "LogPath": dir.log(),
        "Name": format!("/{}", c.name),
        "RestartCount": s.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": {
            "Binds": null_if_empty(&binds),
            "NetworkMode": network_mode,
            "PidMode": joined("pid"),
            "IpcMode": joined("ipc"),
            "RestartPolicy": {"Name": c.restart.name(), "MaximumRetryCount": max_retries},
            "AutoRemove": c.auto_remove,
            "CapAdd": null_if_empty(&c.cap_add),
            "CapDrop": null_if_empty(&c.cap_drop),
            "ReadonlyRootfs": c.read_only,
            "SecurityOpt": null_if_empty(&c.security_opt),
            "Tmpfs": if tmpfs.is_empty() { Value::Null } else { Value::Object(tmpfs) },
            "Memory": c.resources.memory,
            "NanoCpus": c.resources.nano_cpus,
            "CpuShares": c.resources.cpu_shares,
            "PidsLimit": if c.resources.pids_limit > 0 { json!(c.resources.pids_limit) } else { Value::Null },
        },
        "Mounts": mounts,
        "Config": {
            "Hostname": c.hostname,
            "Domainname": "",
            "User": c.user,
            "AttachStdin": false,
            "AttachStdout": true,
            "AttachStderr": true,
            "Tty": false,
            "OpenStdin": false,
            "StdinOnce": false,
            "Env": c.env,
            "Cmd": null_if_empty(&c.cmd),
            "Image": c.image,
            "Volumes": if anonymous.is_empty() { Value::Null } else { Value::Object(anonymous) },
            "WorkingDir": c.working_dir,
            "Entrypoint": null_if_empty(&c.entrypoint),
            "OnBuild": null,
            "Labels": c.labels,
        },
    })
}

/// Prints documents as `docker inspect` does: a JSON array indented by four spaces.
pub fn to_pretty_json(values: &[Value]) -> String {
    use serde::Serialize;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
    if values.serialize(&mut serializer).is_err() {
        return "[]".to_string();
    }
    String::from_utf8(out).unwrap_or_default()
}
