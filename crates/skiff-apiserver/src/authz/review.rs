//! The authorization reviews (`authorization.k8s.io/v1`), answered from RBAC:
//! SelfSubjectAccessReview (`kubectl auth can-i`), SubjectAccessReview,
//! LocalSubjectAccessReview and SelfSubjectRulesReview (`kubectl auth can-i --list`).

use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;

use super::attributes::{Attributes, ResourceAttributes};
use super::rbac::PolicyRule;
use crate::state::{AppState, Identity};
use crate::status::{ApiError, Cause};

/// The `status` of an authorization review of `info`'s kind, sent to a namespace's path
/// (`namespace`) by `requester`.
pub async fn status(
    state: &AppState,
    info: &ResourceInfo,
    namespace: Option<&str>,
    requester: &Identity,
    review: &Value,
) -> Result<Value, ApiError> {
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    if info.plural == "selfsubjectrulesreviews" {
        let ns = spec.get("namespace").and_then(Value::as_str).unwrap_or("");
        return rules_review(state, requester, ns).await;
    }
    let invalid = |field: &str, message: String| {
        crate::admission::qualified_invalid(
            info,
            "",
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                message,
                field: field.into(),
            }],
        )
    };
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    match (resource, non_resource) {
        (None, None) => {
            return Err(ApiError::invalid(
                info,
                "",
                vec![Cause {
                    reason: "FieldValueRequired".into(),
                    message:
                        "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified"
                            .into(),
                    field: "spec.resourceAttributes".into(),
                }],
            ));
        }
        (Some(_), Some(n)) => {
            return Err(invalid(
                "spec.nonResourceAttributes",
                format!(
                    "Invalid value: {n}: cannot be specified in combination with resourceAttributes"
                ),
            ));
        }
        (None, Some(n)) if info.plural == "localsubjectaccessreviews" => {
            return Err(invalid(
                "spec.nonResourceAttributes",
                format!(
                    "Invalid value: &authorization.NonResourceAttributes{{Path:{:?}, Verb:{:?}}}: disallowed on this kind of request",
                    n.get("path").and_then(Value::as_str).unwrap_or_default(),
                    n.get("verb").and_then(Value::as_str).unwrap_or_default()
                ),
            ));
        }
        _ => {}
    }
    let subject = match info.plural.as_str() {
        "selfsubjectaccessreviews" => requester.clone(),
        _ => {
            let user = spec.get("user").and_then(Value::as_str).unwrap_or("");
            let groups: Vec<String> = spec
                .get("groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect();
            if user.is_empty() && groups.is_empty() {
                return Err(invalid(
                    "spec.user",
                    "Invalid value: \"\": at least one of user or group must be specified".into(),
                ));
            }
            Identity {
                username: user.to_string(),
                groups,
            }
        }
    };
    let text = |v: &Value, field: &str| {
        v.get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let attrs = match (resource, non_resource) {
        (Some(r), _) => {
            let mut ns = text(r, "namespace");
            if info.plural == "localsubjectaccessreviews" {
                let path_ns = namespace.unwrap_or("");
                if !ns.is_empty() && ns != path_ns {
                    return Err(invalid(
                        "spec.resourceAttributes.namespace",
                        format!("Invalid value: \"{ns}\": must match metadata.namespace"),
                    ));
                }
                ns = path_ns.to_string();
            }
            Attributes::resource(
                &subject,
                &text(r, "verb"),
                ResourceAttributes {
                    group: text(r, "group"),
                    version: text(r, "version"),
                    resource: text(r, "resource"),
                    subresource: text(r, "subresource"),
                    namespace: ns,
                    name: text(r, "name"),
                },
            )
        }
        (None, Some(n)) => Attributes::non_resource(&subject, &text(n, "verb"), &text(n, "path")),
        (None, None) => return Err(ApiError::bad_request("no attributes to review")),
    };
    let verdict = super::decide(state, &attrs).await?;
    let mut status = json!({"allowed": verdict.allowed});
    if !verdict.reason.is_empty() {
        status["reason"] = json!(verdict.reason);
    }
    Ok(status)
}

/// What the user may do in `namespace`: the resource rules of the ClusterRoleBindings and of
/// the namespace's RoleBindings, the non-resource rules of the ClusterRoleBindings.
async fn rules_review(
    state: &AppState,
    requester: &Identity,
    namespace: &str,
) -> Result<Value, ApiError> {
    if namespace.is_empty() {
        return Err(ApiError::bad_request("no namespace on request"));
    }
    let snapshot = state.rbac.snapshot(state).await?;
    let (rules, errors) = snapshot.rules_for(&requester.username, &requester.groups, namespace);
    let resource_rules: Vec<Value> = rules
        .iter()
        .filter(|r| !r.resources.is_empty())
        .map(resource_rule)
        .collect();
    let non_resource_rules: Vec<Value> = rules
        .iter()
        .filter(|r| !r.non_resource_urls.is_empty())
        .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
        .collect();
    let mut status = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": non_resource_rules,
        "incomplete": !errors.is_empty(),
    });
    if !errors.is_empty() {
        status["evaluationError"] = json!(errors.join(", "));
    }
    Ok(status)
}

fn resource_rule(rule: &PolicyRule) -> Value {
    let mut value = json!({
        "verbs": rule.verbs,
        "apiGroups": rule.api_groups,
        "resources": rule.resources,
    });
    if !rule.resource_names.is_empty() {
        value["resourceNames"] = json!(rule.resource_names);
    }
    value
}
