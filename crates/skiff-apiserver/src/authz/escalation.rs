//! RBAC's escalation prevention, as kube-apiserver's RBAC storage enforces it: a user may only
//! write a Role or ClusterRole whose rules they already hold (or with the `escalate` verb on
//! it; an `aggregationRule` always needs `escalate`), and only bind a role whose rules they
//! already hold where the binding applies (or with the `bind` verb on the role). Members of
//! `system:masters` may do anything.

use axum::http::{HeaderMap, Method, header};
use serde_json::Value;

use super::attributes::{Attributes, ResourceAttributes};
use super::cache::RBAC_GROUP;
use super::rbac::{PolicyRule, Role, RoleRef};
use crate::route::Target;
use crate::state::{AppState, Identity};
use crate::status::ApiError;
use crate::{handlers, storage};

/// Checks a create, update or patch of an RBAC object before it is written.
pub async fn check_write(
    state: &AppState,
    identity: &Identity,
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    if target.group != RBAC_GROUP
        || target.subresource.is_some()
        || !matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        || identity.groups.iter().any(|g| g == super::SYSTEM_MASTERS)
        || !matches!(
            target.plural.as_str(),
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
        )
    {
        return Ok(());
    }
    let Some(new) = new_object(state, method, target, headers, body).await else {
        // The write itself will fail on the same malformed body.
        return Ok(());
    };
    let namespace = if target.plural.starts_with("cluster") {
        String::new()
    } else {
        target.namespace.clone().unwrap_or_default()
    };
    let name = target
        .name
        .clone()
        .unwrap_or_else(|| crate::object::name(&new).to_string());
    let own = |resource: &str, role_name: &str| ResourceAttributes {
        group: RBAC_GROUP.into(),
        version: "v1".into(),
        resource: resource.into(),
        namespace: namespace.clone(),
        name: role_name.into(),
        ..ResourceAttributes::default()
    };
    let allowed = |verb: &'static str, attrs: ResourceAttributes| async move {
        let attrs = Attributes::resource(identity, verb, attrs);
        super::decide(state, &attrs)
            .await
            .map(|v| v.allowed)
            .unwrap_or(false)
    };
    let snapshot = state.rbac.snapshot(state).await?;
    let (held, _) = snapshot.rules_for(&identity.username, &identity.groups, &namespace);
    let forbidden = |detail: String| {
        let qualified = format!("{}.{RBAC_GROUP}", target.plural);
        let mut details = serde_json::json!({"group": RBAC_GROUP, "kind": target.plural});
        if !name.is_empty() {
            details["name"] = serde_json::json!(name);
        }
        let subject = if name.is_empty() {
            format!("{qualified} is forbidden")
        } else {
            format!("{qualified} \"{name}\" is forbidden")
        };
        ApiError {
            details: Some(details),
            ..ApiError::forbidden(format!(
                "{subject}: user \"{}\" (groups={}) is attempting to grant RBAC permissions not currently held:\n{detail}",
                identity.username,
                quoted(&identity.groups)
            ))
        }
    };
    match target.plural.as_str() {
        "roles" | "clusterroles" => {
            if allowed("escalate", own(&target.plural, &name)).await {
                return Ok(());
            }
            let role = Role::from_object(&new);
            if role.aggregation.is_some() {
                return Err(forbidden(
                    "an aggregationRule needs the escalate verb on the role".into(),
                ));
            }
            let missing = uncovered(&held, &role.rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(forbidden(missing.join("\n")))
            }
        }
        _ => {
            let role_ref: RoleRef = new
                .get("roleRef")
                .and_then(|r| serde_json::from_value(r.clone()).ok())
                .unwrap_or_default();
            let role_resource = match role_ref.kind.as_str() {
                "Role" => "roles",
                _ => "clusterroles",
            };
            if allowed("bind", own(role_resource, &role_ref.name)).await {
                return Ok(());
            }
            let granted = match role_ref.kind.as_str() {
                "Role" => snapshot
                    .roles
                    .get(&(namespace.clone(), role_ref.name.clone()))
                    .map(|r| r.rules.clone()),
                _ => snapshot
                    .cluster_roles
                    .get(&role_ref.name)
                    .map(|r| r.rules.clone()),
            };
            let Some(granted) = granted else {
                return Err(forbidden(format!(
                    "the {} \"{}\" does not exist",
                    role_ref.kind, role_ref.name
                )));
            };
            let missing = uncovered(&held, &granted);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(forbidden(missing.join("\n")))
            }
        }
    }
}

/// The object as it would be after the write.
async fn new_object(
    state: &AppState,
    method: &Method,
    target: &Target,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Value> {
    if *method != Method::PATCH {
        return handlers::parse_body(headers, body).ok();
    }
    let info = state.find(&target.group, &target.version, &target.plural)?;
    let name = target.name.as_deref()?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let current = match storage::get(
        state.store.as_ref(),
        &info,
        target.namespace.as_deref(),
        name,
    )
    .await
    {
        Ok((current, _)) => current,
        Err(_) if essence.starts_with("application/apply-patch") => {
            return handlers::parse_yaml(body).ok();
        }
        Err(_) => return None,
    };
    let mut doc = current.clone();
    match essence {
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body).ok()?;
            json_patch::patch(&mut doc, &patch).ok()?;
        }
        "application/merge-patch+json" => {
            json_patch::merge(&mut doc, &serde_json::from_slice(body).ok()?);
        }
        "application/strategic-merge-patch+json" => {
            doc = skiff_apimachinery::strategic_merge(
                &current,
                &serde_json::from_slice(body).ok()?,
                &info,
            )
            .ok()?;
        }
        _ => {
            json_patch::merge(&mut doc, &handlers::parse_yaml(body).ok()?);
        }
    }
    Some(doc)
}

/// The rules of `wanted`, one verb/group/resource/name at a time, that `held` does not cover.
pub fn uncovered(held: &[PolicyRule], wanted: &[PolicyRule]) -> Vec<String> {
    let mut missing = Vec::new();
    for rule in wanted {
        for atom in atoms(rule) {
            if !held.iter().any(|h| covers(h, &atom)) {
                missing.push(describe(&atom));
            }
        }
    }
    missing
}

/// Splits a rule into rules of one verb, one group, one resource and one name (or one path).
fn atoms(rule: &PolicyRule) -> Vec<PolicyRule> {
    let one = |v: &String| vec![v.clone()];
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for url in &rule.non_resource_urls {
            out.push(PolicyRule {
                verbs: one(verb),
                non_resource_urls: one(url),
                ..PolicyRule::default()
            });
        }
        for group in &rule.api_groups {
            for resource in &rule.resources {
                if rule.resource_names.is_empty() {
                    out.push(PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        ..PolicyRule::default()
                    });
                }
                for name in &rule.resource_names {
                    out.push(PolicyRule {
                        verbs: one(verb),
                        api_groups: one(group),
                        resources: one(resource),
                        resource_names: one(name),
                        ..PolicyRule::default()
                    });
                }
            }
        }
    }
    out
}

fn has(set: &[String], value: &str) -> bool {
    set.iter().any(|s| s == "*" || s == value)
}

/// Whether an owner's rule covers an atomic rule.
fn covers(owner: &PolicyRule, atom: &PolicyRule) -> bool {
    let Some(verb) = atom.verbs.first() else {
        return true;
    };
    if !has(&owner.verbs, verb) {
        return false;
    }
    if let Some(url) = atom.non_resource_urls.first() {
        return owner.non_resource_urls.iter().any(|o| {
            o == "*"
                || o == url
                || o.strip_suffix('*')
                    .is_some_and(|prefix| url.starts_with(prefix))
        });
    }
    let (Some(group), Some(resource)) = (atom.api_groups.first(), atom.resources.first()) else {
        return true;
    };
    let resource_covered = has(&owner.resources, resource)
        || resource
            .split_once('/')
            .is_some_and(|(_, sub)| owner.resources.iter().any(|o| *o == format!("*/{sub}")));
    has(&owner.api_groups, group)
        && resource_covered
        && (owner.resource_names.is_empty()
            || atom
                .resource_names
                .first()
                .is_some_and(|n| owner.resource_names.contains(n)))
}

fn quoted(values: &[String]) -> String {
    let inner: Vec<String> = values.iter().map(|v| format!("\"{v}\"")).collect();
    format!("[{}]", inner.join(" "))
}

fn describe(atom: &PolicyRule) -> String {
    if !atom.non_resource_urls.is_empty() {
        return format!(
            "{{NonResourceURLs:{}, Verbs:{}}}",
            quoted(&atom.non_resource_urls),
            quoted(&atom.verbs)
        );
    }
    let names = if atom.resource_names.is_empty() {
        String::new()
    } else {
        format!(", ResourceNames:{}", quoted(&atom.resource_names))
    };
    format!(
        "{{APIGroups:{}, Resources:{}{names}, Verbs:{}}}",
        quoted(&atom.api_groups),
        quoted(&atom.resources),
        quoted(&atom.verbs)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(resources),
            resource_names: s(names),
            non_resource_urls: Vec::new(),
        }
    }

    #[test]
    fn only_rules_already_held_may_be_granted() {
        let held = vec![
            rule(&["get", "list"], &[""], &["pods", "configmaps"], &[]),
            rule(&["get"], &[""], &["secrets"], &["one"]),
            rule(&["update"], &["apps"], &["*/scale"], &[]),
        ];
        assert!(uncovered(&held, &[rule(&["get"], &[""], &["pods"], &[])]).is_empty());
        assert!(uncovered(&held, &[rule(&["get"], &[""], &["secrets"], &["one"])]).is_empty());
        assert!(
            uncovered(
                &held,
                &[rule(&["update"], &["apps"], &["deployments/scale"], &[])]
            )
            .is_empty()
        );
        assert_eq!(
            uncovered(&held, &[rule(&["get", "delete"], &[""], &["pods"], &[])]),
            vec!["{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}".to_string()]
        );
        assert_eq!(
            uncovered(&held, &[rule(&["get"], &[""], &["secrets"], &[])]).len(),
            1
        );
        assert_eq!(
            uncovered(&held, &[rule(&["*"], &[""], &["pods"], &[])]).len(),
            1
        );
        let all = vec![rule(&["*"], &["*"], &["*"], &[])];
        assert!(uncovered(&all, &[rule(&["*"], &["*"], &["*"], &[])]).is_empty());
    }
}
