//! Pod spec essentials (`ValidatePodSpec`): containers, ports, volumes and mounts, policies.

use std::collections::HashSet;

use serde_json::Value;

use super::FieldError;
use super::names::{is_dns1123_label, is_valid_port_name, port_number_messages};

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// Validates a pod spec found at `path` (`spec`, `spec.template.spec` ...).
pub(crate) fn validate_pod_spec(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let volumes = validate_volumes(spec, path, errors);
    let mut names = HashSet::new();
    for key in ["initContainers", "containers"] {
        validate_containers(spec, key, path, &volumes, &mut names, errors);
    }
    if items(spec, "containers").is_empty() {
        errors.push(FieldError::required(&format!("{path}.containers"), ""));
    }
    match text(spec, "restartPolicy") {
        "Always" | "OnFailure" | "Never" => {}
        "" => errors.push(FieldError::required(&format!("{path}.restartPolicy"), "")),
        other => errors.push(FieldError::not_supported(
            &format!("{path}.restartPolicy"),
            &Value::from(other),
            &["Always", "OnFailure", "Never"],
        )),
    }
    match text(spec, "dnsPolicy") {
        "" | "ClusterFirst" | "ClusterFirstWithHostNet" | "Default" | "None" => {}
        other => errors.push(FieldError::not_supported(
            &format!("{path}.dnsPolicy"),
            &Value::from(other),
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    if let Some(grace) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
    {
        if grace < 0 {
            errors.push(FieldError::invalid(
                &format!("{path}.terminationGracePeriodSeconds"),
                &Value::from(grace),
                "must be greater than or equal to 0",
            ));
        }
    }
}

fn validate_volumes(spec: &Value, path: &str, errors: &mut Vec<FieldError>) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (i, volume) in items(spec, "volumes").iter().enumerate() {
        let field = format!("{path}.volumes[{i}].name");
        let name = text(volume, "name");
        if name.is_empty() {
            errors.push(FieldError::required(&field, ""));
            continue;
        }
        for msg in is_dns1123_label(name) {
            errors.push(FieldError::invalid(&field, &Value::from(name), &msg));
        }
        if !seen.insert(name.to_string()) {
            errors.push(FieldError::duplicate(&field, &Value::from(name)));
        }
    }
    seen
}

fn validate_containers(
    spec: &Value,
    key: &str,
    path: &str,
    volumes: &HashSet<String>,
    names: &mut HashSet<String>,
    errors: &mut Vec<FieldError>,
) {
    for (i, container) in items(spec, key).iter().enumerate() {
        let at = format!("{path}.{key}[{i}]");
        let name = text(container, "name");
        if name.is_empty() {
            errors.push(FieldError::required(&format!("{at}.name"), ""));
        } else {
            let msgs = is_dns1123_label(name);
            for msg in &msgs {
                errors.push(FieldError::invalid(
                    &format!("{at}.name"),
                    &Value::from(name),
                    msg,
                ));
            }
            if msgs.is_empty() && !names.insert(name.to_string()) {
                errors.push(FieldError::duplicate(
                    &format!("{at}.name"),
                    &Value::from(name),
                ));
            }
        }
        if text(container, "image").trim().is_empty() {
            errors.push(FieldError::required(&format!("{at}.image"), ""));
        }
        match text(container, "imagePullPolicy") {
            "" | "Always" | "IfNotPresent" | "Never" => {}
            other => errors.push(FieldError::not_supported(
                &format!("{at}.imagePullPolicy"),
                &Value::from(other),
                &["Always", "IfNotPresent", "Never"],
            )),
        }
        validate_container_ports(container, &at, errors);
        validate_mounts(container, &at, volumes, errors);
        for (j, env) in items(container, "env").iter().enumerate() {
            if text(env, "name").is_empty() {
                errors.push(FieldError::required(&format!("{at}.env[{j}].name"), ""));
            }
        }
    }
}

fn validate_container_ports(container: &Value, at: &str, errors: &mut Vec<FieldError>) {
    let mut port_names = HashSet::new();
    for (j, port) in items(container, "ports").iter().enumerate() {
        let pat = format!("{at}.ports[{j}]");
        let name = text(port, "name");
        if !name.is_empty() {
            let msgs = is_valid_port_name(name);
            for msg in &msgs {
                errors.push(FieldError::invalid(
                    &format!("{pat}.name"),
                    &Value::from(name),
                    msg,
                ));
            }
            if msgs.is_empty() && !port_names.insert(name.to_string()) {
                errors.push(FieldError::duplicate(
                    &format!("{pat}.name"),
                    &Value::from(name),
                ));
            }
        }
        match port.get("containerPort").and_then(Value::as_i64) {
            None | Some(0) => {
                errors.push(FieldError::required(&format!("{pat}.containerPort"), ""))
            }
            Some(n) => {
                for msg in port_number_messages(n) {
                    errors.push(FieldError::invalid(
                        &format!("{pat}.containerPort"),
                        &Value::from(n),
                        &msg,
                    ));
                }
            }
        }
        if let Some(n) = port
            .get("hostPort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            for msg in port_number_messages(n) {
                errors.push(FieldError::invalid(
                    &format!("{pat}.hostPort"),
                    &Value::from(n),
                    &msg,
                ));
            }
        }
        validate_protocol(port, &pat, errors);
    }
}

/// `protocol` must be one of SCTP, TCP, UDP (defaulting fills TCP).
pub(crate) fn validate_protocol(port: &Value, at: &str, errors: &mut Vec<FieldError>) {
    match text(port, "protocol") {
        "TCP" | "UDP" | "SCTP" => {}
        "" => errors.push(FieldError::required(&format!("{at}.protocol"), "")),
        other => errors.push(FieldError::not_supported(
            &format!("{at}.protocol"),
            &Value::from(other),
            &["SCTP", "TCP", "UDP"],
        )),
    }
}

fn validate_mounts(
    container: &Value,
    at: &str,
    volumes: &HashSet<String>,
    errors: &mut Vec<FieldError>,
) {
    let mut paths = HashSet::new();
    for (j, mount) in items(container, "volumeMounts").iter().enumerate() {
        let mat = format!("{at}.volumeMounts[{j}]");
        let name = text(mount, "name");
        if name.is_empty() {
            errors.push(FieldError::required(&format!("{mat}.name"), ""));
        } else if !volumes.contains(name) {
            errors.push(FieldError::not_found(
                &format!("{mat}.name"),
                &Value::from(name),
            ));
        }
        let mount_path = text(mount, "mountPath");
        if mount_path.is_empty() {
            errors.push(FieldError::required(&format!("{mat}.mountPath"), ""));
        } else if !paths.insert(mount_path.to_string()) {
            errors.push(FieldError::invalid(
                &format!("{mat}.mountPath"),
                &Value::from(mount_path),
                "must be unique",
            ));
        }
    }
}
