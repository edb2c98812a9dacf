//! Kind-specific essentials: workload controllers, jobs, services, config maps and secrets.

use std::collections::HashSet;

use serde_json::Value;

use super::names::{is_config_map_key, is_dns1123_label, is_valid_port_name, port_number_messages};
use super::pod::{validate_pod_spec, validate_protocol};
use super::{FieldError, validate_annotations, validate_labels};
use crate::labels::{LabelSelector, labels_of};
use crate::registry::ResourceInfo;

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

pub(crate) fn validate_kind(info: &ResourceInfo, obj: &Value, errors: &mut Vec<FieldError>) {
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => validate_pod_spec(spec, "spec", errors),
        ("", "PodTemplate") => {
            validate_template(obj.get("template"), "template", None, errors);
        }
        ("", "ReplicationController") => {
            non_negative(spec, "replicas", "spec.replicas", errors);
            let selector = spec.get("selector").and_then(LabelSelector::from_map);
            validate_controller_template(spec, selector, &["Always"], errors);
        }
        ("apps", kind @ ("Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")) => {
            if kind != "DaemonSet" {
                non_negative(spec, "replicas", "spec.replicas", errors);
            }
            let selector = required_selector(spec, &kind.to_ascii_lowercase(), errors);
            if kind == "StatefulSet" {
                // Mounts may name volumeClaimTemplates (the controller adds those volumes).
                let with_claims = with_claim_volumes(spec);
                validate_controller_template(&with_claims, selector, &["Always"], errors);
            } else {
                validate_controller_template(spec, selector, &["Always"], errors);
            }
            if kind == "Deployment" {
                validate_deployment_strategy(spec, errors);
            }
        }
        ("batch", "Job") => validate_job_spec(spec, "spec", errors),
        ("batch", "CronJob") => {
            if text(spec, "/schedule").trim().is_empty() {
                errors.push(FieldError::required("spec.schedule", ""));
            }
            match text(spec, "/concurrencyPolicy") {
                "" | "Allow" | "Forbid" | "Replace" => {}
                other => errors.push(FieldError::not_supported(
                    "spec.concurrencyPolicy",
                    &Value::from(other),
                    &["Allow", "Forbid", "Replace"],
                )),
            }
            let job_spec = spec.pointer("/jobTemplate/spec").unwrap_or(&null);
            validate_job_spec(job_spec, "spec.jobTemplate.spec", errors);
        }
        ("", "Service") => validate_service(spec, errors),
        ("policy", "PodDisruptionBudget") => validate_pdb(spec, errors),
        ("", "ConfigMap") => validate_data_keys(obj, &["data", "binaryData"], errors),
        ("", "Secret") => {
            validate_data_keys(obj, &["data", "stringData"], errors);
            validate_secret_type(obj, errors);
        }
        _ => {}
    }
}

fn non_negative(spec: &Value, key: &str, field: &str, errors: &mut Vec<FieldError>) {
    if let Some(n) = spec.get(key).and_then(Value::as_i64) {
        if n < 0 {
            errors.push(FieldError::invalid(
                field,
                &Value::from(n),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// `spec.selector` of an apps/v1 controller: required, valid, not empty.
fn required_selector(
    spec: &Value,
    kind: &str,
    errors: &mut Vec<FieldError>,
) -> Option<LabelSelector> {
    let Some(raw) = spec.get("selector").filter(|s| !s.is_null()) else {
        errors.push(FieldError::required("spec.selector", ""));
        return None;
    };
    match LabelSelector::from_json(raw) {
        None => {
            errors.push(FieldError::invalid(
                "spec.selector",
                raw,
                "invalid label selector",
            ));
            None
        }
        Some(s) if s.is_empty() => {
            errors.push(FieldError::invalid(
                "spec.selector",
                raw,
                &format!("empty selector is invalid for {kind}"),
            ));
            None
        }
        Some(s) => Some(s),
    }
}

/// A StatefulSet spec whose template also lists a volume per `volumeClaimTemplates` entry
/// (as the pods the controller makes from it do), for checking the template's mounts.
fn with_claim_volumes(spec: &Value) -> Value {
    let mut spec = spec.clone();
    let claims: Vec<Value> = spec
        .get("volumeClaimTemplates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/metadata/name").and_then(Value::as_str))
        .map(|name| serde_json::json!({"name": name, "persistentVolumeClaim": {"claimName": name}}))
        .collect();
    if let Some(pod) = spec
        .pointer_mut("/template/spec")
        .and_then(Value::as_object_mut)
    {
        let volumes = pod
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = volumes.as_array_mut() {
            for claim in claims {
                if !list.iter().any(|v| v.get("name") == claim.get("name")) {
                    list.push(claim);
                }
            }
        }
    }
    spec
}

/// The pod template of a controller: its labels must match the selector, its restart policy
/// must be one of `restart_policies`.
fn validate_controller_template(
    spec: &Value,
    selector: Option<LabelSelector>,
    restart_policies: &[&str],
    errors: &mut Vec<FieldError>,
) {
    let Some(template) = spec.get("template").filter(|t| !t.is_null()) else {
        errors.push(FieldError::required("spec.template", ""));
        return;
    };
    validate_template(
        Some(template),
        "spec.template",
        Some(restart_policies),
        errors,
    );
    if let Some(selector) = selector {
        if !selector.matches(&labels_of(template)) {
            let labels = template
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
            errors.push(FieldError::invalid(
                "spec.template.metadata.labels",
                &labels,
                "`selector` does not match template `labels`",
            ));
        }
    }
}

fn validate_template(
    template: Option<&Value>,
    path: &str,
    restart_policies: Option<&[&str]>,
    errors: &mut Vec<FieldError>,
) {
    let Some(template) = template else {
        errors.push(FieldError::required(path, ""));
        return;
    };
    validate_labels(
        template.pointer("/metadata/labels"),
        &format!("{path}.metadata.labels"),
        errors,
    );
    validate_annotations(
        template.pointer("/metadata/annotations"),
        &format!("{path}.metadata.annotations"),
        errors,
    );
    let spec = template.get("spec").unwrap_or(&Value::Null);
    validate_pod_spec(spec, &format!("{path}.spec"), errors);
    if let Some(allowed) = restart_policies {
        let policy = text(spec, "/restartPolicy");
        if !policy.is_empty() && !allowed.contains(&policy) {
            let field = format!("{path}.spec.restartPolicy");
            // The pod spec check already refused values that are no restart policy at all.
            if !errors.iter().any(|e| e.field == field) {
                errors.push(FieldError::not_supported(
                    &field,
                    &Value::from(policy),
                    allowed,
                ));
            }
        }
    }
}

fn validate_deployment_strategy(spec: &Value, errors: &mut Vec<FieldError>) {
    match text(spec, "/strategy/type") {
        "" | "RollingUpdate" => {}
        "Recreate" => {
            if spec
                .pointer("/strategy/rollingUpdate")
                .is_some_and(|r| !r.is_null())
            {
                errors.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        other => errors.push(FieldError::not_supported(
            "spec.strategy.type",
            &Value::from(other),
            &["Recreate", "RollingUpdate"],
        )),
    }
}

fn validate_job_spec(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    for key in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
    ] {
        non_negative(spec, key, &format!("{path}.{key}"), errors);
    }
    let selector = spec
        .get("selector")
        .filter(|s| !s.is_null())
        .and_then(LabelSelector::from_json);
    let template = spec.get("template").filter(|t| !t.is_null());
    validate_template(
        template,
        &format!("{path}.template"),
        Some(&["OnFailure", "Never"]),
        errors,
    );
    if let (Some(selector), Some(template)) = (selector, template) {
        if !selector.is_empty() && !selector.matches(&labels_of(template)) {
            errors.push(FieldError::invalid(
                &format!("{path}.template.metadata.labels"),
                template.pointer("/metadata/labels").unwrap_or(&Value::Null),
                "`selector` does not match template `labels`",
            ));
        }
    }
    match text(spec, "/completionMode") {
        "" | "NonIndexed" | "Indexed" => {}
        other => errors.push(FieldError::not_supported(
            &format!("{path}.completionMode"),
            &Value::from(other),
            &["NonIndexed", "Indexed"],
        )),
    }
    validate_job_indexes(spec, path, errors);
    // As the API server of Kubernetes 1.29+: with a podFailurePolicy only `Failed`.
    let replacement = text(spec, "/podReplacementPolicy");
    let allowed: &[&str] = if spec.get("podFailurePolicy").is_some_and(|p| !p.is_null()) {
        &["Failed"]
    } else {
        &["Failed", "TerminatingOrFailed"]
    };
    if !replacement.is_empty() && !allowed.contains(&replacement) {
        errors.push(FieldError::not_supported(
            &format!("{path}.podReplacementPolicy"),
            &Value::from(replacement),
            allowed,
        ));
    }
}

/// `backoffLimitPerIndex`, `maxFailedIndexes` and `successPolicy`: Indexed Jobs only, as the
/// API server of Kubernetes 1.33 says.
fn validate_job_indexes(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let indexed = text(spec, "/completionMode") == "Indexed";
    let set = |key: &str| spec.get(key).is_some_and(|v| !v.is_null());
    for key in ["backoffLimitPerIndex", "maxFailedIndexes"] {
        non_negative(spec, key, &format!("{path}.{key}"), errors);
        if set(key) && !indexed {
            errors.push(FieldError::forbidden(
                &format!("{path}.{key}"),
                "requires indexed completion mode",
            ));
        }
    }
    if set("maxFailedIndexes") && !set("backoffLimitPerIndex") {
        errors.push(FieldError::required(
            &format!("{path}.backoffLimitPerIndex"),
            "when maxFailedIndexes is specified",
        ));
    }
    let completions = spec.get("completions").and_then(Value::as_i64);
    if let (Some(max), Some(completions)) = (
        spec.get("maxFailedIndexes").and_then(Value::as_i64),
        completions,
    ) && max > completions
    {
        errors.push(FieldError::invalid(
            &format!("{path}.maxFailedIndexes"),
            &Value::from(max),
            "must be less than or equal to completions",
        ));
    }
    validate_pod_failure_policy(spec, path, errors);
    let Some(policy) = spec.get("successPolicy").filter(|v| !v.is_null()) else {
        return;
    };
    if !indexed {
        errors.push(FieldError::invalid(
            &format!("{path}.completionMode"),
            &Value::from(text(spec, "/completionMode")),
            "requires indexed completion mode",
        ));
    }
    let rules = policy
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if rules.is_empty() || rules.len() > 20 {
        errors.push(FieldError::invalid(
            &format!("{path}.successPolicy.rules"),
            &Value::from(rules.len()),
            "must have at least one rule and at most 20",
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("{path}.successPolicy.rules[{i}]");
        let count = rule.get("succeededCount").and_then(Value::as_i64);
        let indexes = rule.get("succeededIndexes").and_then(Value::as_str);
        if count.is_none() && indexes.is_none() {
            errors.push(FieldError::required(
                &field,
                "at least one of succeededCount or succeededIndexes must be specified",
            ));
        }
        if let Some(n) = count
            && (n < 0 || completions.is_some_and(|c| n > c))
        {
            errors.push(FieldError::invalid(
                &format!("{field}.succeededCount"),
                &Value::from(n),
                "must be between 0 and completions",
            ));
        }
    }
}

fn validate_service(spec: &Value, errors: &mut Vec<FieldError>) {
    let type_ = text(spec, "/type");
    match type_ {
        "" | "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName" => {}
        other => errors.push(FieldError::not_supported(
            "spec.type",
            &Value::from(other),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        )),
    }
    if type_ == "ExternalName" && text(spec, "/externalName").is_empty() {
        errors.push(FieldError::required("spec.externalName", ""));
    }
    match text(spec, "/sessionAffinity") {
        "" | "None" | "ClientIP" => {}
        other => errors.push(FieldError::not_supported(
            "spec.sessionAffinity",
            &Value::from(other),
            &["ClientIP", "None"],
        )),
    }
    let ports = spec
        .get("ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let headless = text(spec, "/clusterIP") == "None";
    if ports.is_empty() && !headless && type_ != "ExternalName" {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut names = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = text(port, "/name");
        if name.is_empty() {
            if ports.len() > 1 {
                errors.push(FieldError::required(&format!("{at}.name"), ""));
            }
        } else {
            for msg in is_dns1123_label(name) {
                errors.push(FieldError::invalid(
                    &format!("{at}.name"),
                    &Value::from(name),
                    &msg,
                ));
            }
            if !names.insert(name.to_string()) {
                errors.push(FieldError::duplicate(
                    &format!("{at}.name"),
                    &Value::from(name),
                ));
            }
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        for msg in port_number_messages(number) {
            errors.push(FieldError::invalid(
                &format!("{at}.port"),
                &Value::from(number),
                &msg,
            ));
        }
        validate_protocol(port, &at, errors);
        match port.get("targetPort") {
            Some(Value::Number(n)) => {
                let n = n.as_i64().unwrap_or(0);
                for msg in port_number_messages(n) {
                    errors.push(FieldError::invalid(
                        &format!("{at}.targetPort"),
                        &Value::from(n),
                        &msg,
                    ));
                }
            }
            Some(Value::String(s)) => {
                for msg in is_valid_port_name(s) {
                    errors.push(FieldError::invalid(
                        &format!("{at}.targetPort"),
                        &Value::from(s.as_str()),
                        &msg,
                    ));
                }
            }
            _ => {}
        }
        if let Some(n) = port
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            if type_ != "NodePort" && type_ != "LoadBalancer" {
                errors.push(FieldError::forbidden(
                    &format!("{at}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else {
                for msg in port_number_messages(n) {
                    errors.push(FieldError::invalid(
                        &format!("{at}.nodePort"),
                        &Value::from(n),
                        &msg,
                    ));
                }
            }
        }
    }
}

fn validate_data_keys(obj: &Value, maps: &[&str], errors: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for map_key in maps {
        let Some(map) = obj.get(*map_key).and_then(Value::as_object) else {
            continue;
        };
        for key in map.keys() {
            let field = format!("{map_key}[{key}]");
            for msg in is_config_map_key(key) {
                errors.push(FieldError::invalid(
                    &field,
                    &Value::from(key.as_str()),
                    &msg,
                ));
            }
            // Secrets merge stringData into data; config maps refuse a key in both maps.
            if !seen.insert(key.clone()) && *map_key == "binaryData" {
                errors.push(FieldError::duplicate(&field, &Value::from(key.as_str())));
            }
        }
    }
}

fn validate_secret_type(obj: &Value, errors: &mut Vec<FieldError>) {
    let has = |key: &str| {
        ["/data/", "/stringData/"].iter().any(|m| {
            obj.pointer(&format!("{m}{}", key.replace('/', "~1")))
                .is_some()
        })
    };
    let required: &[&str] = match text(obj, "/type") {
        "kubernetes.io/tls" => &["tls.crt", "tls.key"],
        "kubernetes.io/dockerconfigjson" => &[".dockerconfigjson"],
        "kubernetes.io/dockercfg" => &[".dockercfg"],
        "kubernetes.io/basic-auth" | "kubernetes.io/ssh-auth" | "" | "Opaque" => &[],
        _ => &[],
    };
    for key in required {
        if !has(key) {
            errors.push(FieldError::required(&format!("data[{key}]"), ""));
        }
    }
    if text(obj, "/type") == "kubernetes.io/ssh-auth" && !has("ssh-privatekey") {
        errors.push(FieldError::required("data[ssh-privatekey]", ""));
    }
}

/// A PodDisruptionBudget's spec: at most one of minAvailable and maxUnavailable, each a
/// non-negative integer or a percentage up to 100%; a valid selector; a known eviction policy.
fn validate_pdb(spec: &Value, errors: &mut Vec<FieldError>) {
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        errors.push(FieldError::invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (value, field) in [(min, "spec.minAvailable"), (max, "spec.maxUnavailable")] {
        if let Some(value) = value {
            validate_int_or_percent(value, field, errors);
        }
    }
    if let Some(raw) = spec.get("selector").filter(|s| !s.is_null())
        && LabelSelector::from_json(raw).is_none()
    {
        errors.push(FieldError::invalid(
            "spec.selector",
            raw,
            "invalid label selector",
        ));
    }
    match text(spec, "/unhealthyPodEvictionPolicy") {
        "" | "IfHealthyBudget" | "AlwaysAllow" => {}
        other => errors.push(FieldError::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            &Value::from(other),
            &["AlwaysAllow", "IfHealthyBudget"],
        )),
    }
}

/// An IntOrString that counts things: `>= 0`, or `N%` with `0 <= N <= 100`.
fn validate_int_or_percent(value: &Value, field: &str, errors: &mut Vec<FieldError>) {
    match value {
        Value::Number(n) => {
            if n.as_i64().is_none_or(|n| n < 0) {
                errors.push(FieldError::invalid(
                    field,
                    value,
                    "must be greater than or equal to 0",
                ));
            }
        }
        Value::String(s) => match s.strip_suffix('%').map(str::parse::<i64>) {
            Some(Ok(p)) if p < 0 => errors.push(FieldError::invalid(
                field,
                value,
                "must be greater than or equal to 0",
            )),
            Some(Ok(p)) if p > 100 => errors.push(FieldError::invalid(
                field,
                value,
                "must not be greater than 100%",
            )),
            Some(Ok(_)) => {}
            _ => errors.push(FieldError::invalid(
                field,
                value,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )),
        },
        other => errors.push(FieldError::invalid(
            field,
            other,
            "must be an integer or a percentage",
        )),
    }
}

/// `podFailurePolicy`: `restartPolicy: Never`, known actions and operators, and `FailIndex`
/// only with `backoffLimitPerIndex`.
fn validate_pod_failure_policy(spec: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(policy) = spec.get("podFailurePolicy").filter(|v| !v.is_null()) else {
        return;
    };
    let restart = text(spec, "/template/spec/restartPolicy");
    if restart != "Never" {
        errors.push(FieldError::invalid(
            &format!("{path}.template.spec.restartPolicy"),
            &Value::from(restart),
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    let rules = policy
        .get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("{path}.podFailurePolicy.rules[{i}]");
        let action = text(rule, "/action");
        match action {
            "FailJob" | "Ignore" | "Count" => {}
            "FailIndex" if per_index => {}
            "FailIndex" => errors.push(FieldError::invalid(
                &format!("{field}.action"),
                &Value::from(action),
                "requires the backoffLimitPerIndex to be set",
            )),
            other => errors.push(FieldError::not_supported(
                &format!("{field}.action"),
                &Value::from(other),
                &["Count", "FailIndex", "FailJob", "Ignore"],
            )),
        }
        let exit_codes = rule.get("onExitCodes").filter(|v| !v.is_null());
        let conditions = rule.get("onPodConditions").filter(|v| !v.is_null());
        if exit_codes.is_some() == conditions.is_some() {
            errors.push(FieldError::invalid(
                &field,
                rule,
                "specifying one of OnExitCodes and OnPodConditions is required",
            ));
        }
        if let Some(codes) = exit_codes {
            match text(codes, "/operator") {
                "In" | "NotIn" => {}
                other => errors.push(FieldError::not_supported(
                    &format!("{field}.onExitCodes.operator"),
                    &Value::from(other),
                    &["In", "NotIn"],
                )),
            }
        }
    }
}
