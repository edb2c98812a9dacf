//! Pod priority, as kube-apiserver's `Priority` admission plugin: a new pod's
//! `spec.priorityClassName` resolves to `spec.priority` and `spec.preemptionPolicy` from its
//! PriorityClass (`scheduling.k8s.io/v1`); a pod naming no class gets the `globalDefault`
//! class, if there is one, else priority 0. New PriorityClasses are checked as Kubernetes
//! does: user classes at most 1000000000, the `system-` prefix reserved for the built-in
//! classes, one `globalDefault` at most.

use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;

use crate::object;
use crate::state::AppState;
use crate::status::{ApiError, Cause, qualified_resource};
use crate::storage;

/// The highest value a user-defined class may have.
pub const HIGHEST_USER_DEFINABLE_PRIORITY: i64 = 1_000_000_000;
/// The prefix reserved for the built-in classes.
pub const SYSTEM_PREFIX: &str = "system-";
/// The built-in classes: name, value and description.
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.",
    ),
];
/// The default `preemptionPolicy`.
pub const PREEMPT_LOWER_PRIORITY: &str = "PreemptLowerPriority";

/// What a pod gets from its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The class name to write back (the default class for a pod naming none; empty if none).
    pub class_name: String,
    /// `spec.priority`.
    pub priority: i64,
    /// `spec.preemptionPolicy`, when the class says.
    pub preemption_policy: Option<String>,
}

fn class_name(class: &Value) -> &str {
    class
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn is_global_default(class: &Value) -> bool {
    class.get("globalDefault").and_then(Value::as_bool) == Some(true)
}

/// The `globalDefault` class among `classes` (the lowest value if several slipped in, as kube).
pub fn default_class(classes: &[Value]) -> Option<&Value> {
    classes
        .iter()
        .filter(|c| is_global_default(c))
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
}

/// Resolves a pod's priority from `classes`; `Err` holds the reason of the refusal (the text
/// after `is forbidden: `).
pub fn resolve(pod: &Value, classes: &[Value]) -> Result<Resolved, String> {
    let named = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let class = if named.is_empty() {
        default_class(classes)
    } else {
        Some(
            classes
                .iter()
                .find(|c| class_name(c) == named)
                .ok_or_else(|| format!("no PriorityClass with name {named} was found"))?,
        )
    };
    let resolved = match class {
        None => Resolved {
            class_name: String::new(),
            priority: 0,
            preemption_policy: None,
        },
        Some(c) => Resolved {
            class_name: class_name(c).to_string(),
            priority: c.get("value").and_then(Value::as_i64).unwrap_or(0),
            preemption_policy: c
                .get("preemptionPolicy")
                .and_then(Value::as_str)
                .map(str::to_string),
        },
    };
    if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
        && given != resolved.priority
    {
        return Err(format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {} from the given PriorityClass name",
            resolved.priority
        ));
    }
    if let (Some(given), Some(computed)) = (
        pod.pointer("/spec/preemptionPolicy")
            .and_then(Value::as_str),
        resolved.preemption_policy.as_deref(),
    ) && given != computed
    {
        return Err(format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {computed} from the given PriorityClass name"
        ));
    }
    Ok(resolved)
}

/// Writes what [`resolve`] found into the pod.
pub fn apply(pod: &mut Value, resolved: &Resolved) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if !resolved.class_name.is_empty() {
        spec.insert("priorityClassName".into(), json!(resolved.class_name));
    }
    spec.insert("priority".into(), json!(resolved.priority));
    let policy = resolved
        .preemption_policy
        .clone()
        .or_else(|| {
            spec.get("preemptionPolicy")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| PREEMPT_LOWER_PRIORITY.to_string());
    spec.insert("preemptionPolicy".into(), json!(policy));
}

async fn classes(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let Some(info) = state.find("scheduling.k8s.io", "v1", "priorityclasses") else {
        return Ok(Vec::new());
    };
    let prefix = storage::prefix(&info, None)?;
    let page = state
        .store
        .list(&prefix, None, None, None)
        .await
        .map_err(|e| ApiError::from_store(e, &info, ""))?;
    page.items
        .iter()
        .map(|kv| storage::decode(&info, kv))
        .collect()
}

/// Admits a new pod (mutates it), or refuses it with 403 as kube-apiserver does.
pub async fn admit_pod(state: &AppState, pod: &mut Value) -> Result<(), ApiError> {
    if !pod.get("spec").is_some_and(Value::is_object) {
        return Ok(());
    }
    let all = classes(state).await?;
    match resolve(pod, &all) {
        Ok(resolved) => {
            apply(pod, &resolved);
            Ok(())
        }
        Err(why) => Err(ApiError {
            details: Some(json!({"name": object::name(pod), "kind": "pods"})),
            ..ApiError::forbidden(format!(
                "pods \"{}\" is forbidden: {why}",
                object::name(pod)
            ))
        }),
    }
}

/// The field errors of a new PriorityClass (value range and reserved names).
pub fn validate_class(class: &Value) -> Vec<Cause> {
    let name = class_name(class);
    let value = class.get("value").and_then(Value::as_i64).unwrap_or(0);
    let mut causes = Vec::new();
    if name.starts_with(SYSTEM_PREFIX) {
        let known = SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name);
        match known {
            None => causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: format!(
                    "Forbidden: priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only"
                ),
                field: "metadata.name".into(),
            }),
            Some((_, v, _)) if *v != value => causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                message: format!("Forbidden: value of {name} PriorityClass must be {v}"),
                field: "value".into(),
            }),
            Some(_) => {}
        }
    } else if value > HIGHEST_USER_DEFINABLE_PRIORITY {
        causes.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: format!(
                "Forbidden: maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE_PRIORITY}"
            ),
            field: "value".into(),
        });
    }
    if let Some(policy) = class.get("preemptionPolicy").and_then(Value::as_str)
        && policy != PREEMPT_LOWER_PRIORITY
        && policy != "Never"
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!(
                "Unsupported value: \"{policy}\": supported values: \"Never\", \"PreemptLowerPriority\""
            ),
            field: "preemptionPolicy".into(),
        });
    }
    causes
}

/// Admits a new PriorityClass: defaults `preemptionPolicy`, validates it, and refuses a second
/// `globalDefault` class (403, as the admission plugin).
pub async fn admit_class(
    state: &AppState,
    info: &ResourceInfo,
    class: &mut Value,
) -> Result<(), ApiError> {
    let Some(obj) = class.as_object_mut() else {
        return Ok(());
    };
    if !obj.get("preemptionPolicy").is_some_and(Value::is_string) {
        obj.insert("preemptionPolicy".into(), json!(PREEMPT_LOWER_PRIORITY));
    }
    let name = class_name(class).to_string();
    let causes = validate_class(class);
    if !causes.is_empty() {
        return Err(ApiError::invalid(info, &name, causes));
    }
    if is_global_default(class) {
        let all = classes(state).await?;
        if let Some(existing) = default_class(&all)
            && class_name(existing) != name
        {
            return Err(ApiError {
                details: Some(json!({"name": name, "group": info.group, "kind": info.plural})),
                ..ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: PriorityClass {} is already marked as default. Only one default can exist",
                    qualified_resource(info),
                    class_name(existing)
                ))
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, value: i64, default: bool) -> Value {
        json!({"metadata": {"name": name}, "value": value, "globalDefault": default})
    }

    #[test]
    fn a_named_class_gives_its_value_and_policy() {
        let mut c = class("high", 1000, false);
        c["preemptionPolicy"] = json!("Never");
        let mut pod = json!({"spec": {"priorityClassName": "high"}});
        let r = resolve(&pod, &[c]).unwrap();
        apply(&mut pod, &r);
        assert_eq!(pod["spec"]["priority"], 1000);
        assert_eq!(pod["spec"]["preemptionPolicy"], "Never");
    }

    #[test]
    fn a_missing_class_is_refused() {
        let pod = json!({"spec": {"priorityClassName": "foo"}});
        assert_eq!(
            resolve(&pod, &[]).unwrap_err(),
            "no PriorityClass with name foo was found"
        );
    }

    #[test]
    fn no_class_means_the_default_or_zero() {
        let mut pod = json!({"spec": {}});
        let r = resolve(&pod, &[class("a", 5, false)]).unwrap();
        apply(&mut pod, &r);
        assert_eq!(pod["spec"]["priority"], 0);
        assert_eq!(pod["spec"]["preemptionPolicy"], PREEMPT_LOWER_PRIORITY);
        assert!(pod["spec"].get("priorityClassName").is_none());
        let mut pod = json!({"spec": {}});
        let r = resolve(&pod, &[class("a", 5, false), class("d", 7, true)]).unwrap();
        apply(&mut pod, &r);
        assert_eq!(pod["spec"]["priority"], 7);
        assert_eq!(pod["spec"]["priorityClassName"], "d");
    }

    #[test]
    fn a_different_explicit_priority_is_refused() {
        let pod = json!({"spec": {"priorityClassName": "a", "priority": 3}});
        let err = resolve(&pod, &[class("a", 5, false)]).unwrap_err();
        assert!(err.starts_with("the integer value of priority (3) must not be provided"));
        let pod = json!({"spec": {"priorityClassName": "a", "priority": 5}});
        assert!(resolve(&pod, &[class("a", 5, false)]).is_ok());
    }

    #[test]
    fn classes_are_validated() {
        assert!(validate_class(&class("ok", 1_000_000_000, false)).is_empty());
        assert_eq!(
            validate_class(&class("big", 1_000_000_001, false))[0].field,
            "value"
        );
        assert_eq!(
            validate_class(&class("system-mine", 5, false))[0].field,
            "metadata.name"
        );
        assert!(validate_class(&class("system-node-critical", 2_000_001_000, false)).is_empty());
        assert!(!validate_class(&class("system-node-critical", 5, false)).is_empty());
    }
}
