//! The admission chain, run on every path that writes an object: [`admit_create`] on every
//! create (POST, and server-side apply of a missing object) and [`admit_update`] on every
//! update (PUT, PATCH, apply of an existing object, and the server's own read-modify-writes).
//!
//! Create runs kube-apiserver's mutating plugins Skiff has: `ServiceAccount` (pods),
//! `DefaultStorageClass` (claims), `DefaultTolerationSeconds` (pods) and `Priority` (pods and
//! PriorityClasses). Update re-admits nothing as a create: a pod keeps what `Priority` set
//! ([`keep_pod_priority`], from [`crate::strategy::prepare_update`]), and the update rules of
//! PriorityClasses (`value` and `preemptionPolicy` are immutable, one `globalDefault` at most)
//! and of role bindings (`roleRef` is immutable) hold.

use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;

use crate::state::AppState;
use crate::status::{ApiError, Cause};
use crate::{object, priority};

fn is(info: &ResourceInfo, group: &str, plural: &str) -> bool {
    info.group == group && info.plural == plural
}

/// Admits a new object of `info` in `namespace` (mutates it), or refuses it.
pub async fn admit_create(
    state: &AppState,
    info: &ResourceInfo,
    namespace: Option<&str>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let pod = is(info, "", "pods");
    if let Some(ns) = namespace {
        if pod && state.options.service_account_admission {
            crate::serviceaccount::admission::admit_pod(state, ns, obj).await?;
        }
        if is(info, "", "persistentvolumeclaims") {
            crate::default_storage_class::admit_claim(state, obj).await?;
        }
    }
    if pod && let Some(seconds) = state.options.default_toleration_seconds {
        crate::default_tolerations::admit_pod(obj, seconds);
    }
    if pod {
        priority::admit_pod(state, obj).await?;
    }
    if is(info, "scheduling.k8s.io", "priorityclasses") {
        priority::admit_class(state, info, obj).await?;
    }
    Ok(())
}

/// Admits the update of `current` to `new` (may mutate `new`), or refuses it.
pub async fn admit_update(
    state: &AppState,
    info: &ResourceInfo,
    current: &Value,
    new: &mut Value,
) -> Result<(), ApiError> {
    if is(info, "scheduling.k8s.io", "priorityclasses") {
        if let Some(map) = new.as_object_mut()
            && !map.get("preemptionPolicy").is_some_and(Value::is_string)
        {
            map.insert(
                "preemptionPolicy".into(),
                json!(priority::PREEMPT_LOWER_PRIORITY),
            );
        }
        let causes = priority_class_update_causes(current, new);
        if !causes.is_empty() {
            return Err(qualified_invalid(info, object::name(new), causes));
        }
        if new.get("globalDefault").and_then(Value::as_bool) == Some(true)
            && current.get("globalDefault").and_then(Value::as_bool) != Some(true)
        {
            // Only the default check of the create-time admission applies: the value and the
            // policy cannot have changed, so the rest of it holds already.
            let mut checked = new.clone();
            priority::admit_class(state, info, &mut checked).await?;
        }
    } else if info.group == "rbac.authorization.k8s.io"
        && (info.plural == "rolebindings" || info.plural == "clusterrolebindings")
    {
        let causes = role_binding_update_causes(current, new);
        if !causes.is_empty() {
            return Err(qualified_invalid(info, object::name(new), causes));
        }
    }
    Ok(())
}

/// kube's `Priority` plugin on update: what it set on create stays when an update leaves it
/// out (a PUT or apply of the original manifest). Run by [`crate::strategy::prepare_update`]
/// before the defaults would set priority 0.
pub fn keep_pod_priority(current: &Value, new: &mut Value) {
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["priority", "preemptionPolicy", "priorityClassName"] {
        if spec.get(field).is_none_or(Value::is_null)
            && let Some(old) = current.pointer(&format!("/spec/{field}"))
            && !old.is_null()
        {
            spec.insert(field.into(), old.clone());
        }
    }
}

/// `ValidatePriorityClassUpdate`: `value` and `preemptionPolicy` may not change.
pub fn priority_class_update_causes(current: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if current.get("value") != new.get("value") {
        causes.push(Cause {
            reason: "FieldValueForbidden".into(),
            message: "Forbidden: may not be changed in an update.".into(),
            field: "value".into(),
        });
    }
    let policy = |v: &Value| {
        v.get("preemptionPolicy")
            .and_then(Value::as_str)
            .unwrap_or(priority::PREEMPT_LOWER_PRIORITY)
            .to_string()
    };
    let (old, wanted) = (policy(current), policy(new));
    if old != wanted {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: \"{wanted}\": field is immutable"),
            field: "preemptionPolicy".into(),
        });
    }
    causes
}

/// `ValidateRoleBindingUpdate` (and the ClusterRoleBinding one): `roleRef` may not change.
pub fn role_binding_update_causes(current: &Value, new: &Value) -> Vec<Cause> {
    let text = |v: &Value, field: &str| {
        v.pointer(&format!("/roleRef/{field}"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let fields = ["apiGroup", "kind", "name"];
    if fields.iter().all(|f| text(current, f) == text(new, f)) {
        return Vec::new();
    }
    // Go's `%#v` of the internal `rbac.RoleRef`, as kube prints it.
    let shown = format!(
        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
        text(new, "apiGroup"),
        text(new, "kind"),
        text(new, "name")
    );
    vec![Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: cannot change roleRef"),
        field: "roleRef".into(),
    }]
}

/// A 422 `Invalid` naming the kind with its group, as kube-apiserver's `NewInvalid`
/// (`RoleBinding.rbac.authorization.k8s.io "x" is invalid: ...`).
pub fn qualified_invalid(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> ApiError {
    let mut err = ApiError::invalid(info, name, causes);
    if !info.group.is_empty() {
        let plain = format!("{} \"{name}\" is invalid", info.kind);
        let qualified = format!("{}.{} \"{name}\" is invalid", info.kind, info.group);
        err.message = err.message.replacen(&plain, &qualified, 1);
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_apimachinery::Registry;

    fn info(group: &str, plural: &str) -> ResourceInfo {
        Registry::builtin()
            .all()
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .unwrap()
            .clone()
    }

    #[test]
    fn role_ref_may_not_change() {
        let current = json!({"metadata": {"name": "x"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "a"}});
        let mut same = current.clone();
        same["subjects"] = json!([{"kind": "User", "name": "jane"}]);
        assert!(role_binding_update_causes(&current, &same).is_empty());
        let mut other = current.clone();
        other["roleRef"]["name"] = json!("b");
        let causes = role_binding_update_causes(&current, &other);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "roleRef");
        let err = qualified_invalid(
            &info("rbac.authorization.k8s.io", "rolebindings"),
            "x",
            causes,
        );
        assert_eq!(err.code, 422);
        assert_eq!(
            err.message,
            "RoleBinding.rbac.authorization.k8s.io \"x\" is invalid: roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"b\"}: cannot change roleRef"
        );
    }

    #[test]
    fn priority_class_value_and_policy_are_immutable() {
        let current = json!({"metadata": {"name": "high"}, "value": 10, "preemptionPolicy": "PreemptLowerPriority"});
        let mut described = current.clone();
        described["description"] = json!("now documented");
        assert!(priority_class_update_causes(&current, &described).is_empty());
        let mut bigger = current.clone();
        bigger["value"] = json!(11);
        let err = qualified_invalid(
            &info("scheduling.k8s.io", "priorityclasses"),
            "high",
            priority_class_update_causes(&current, &bigger),
        );
        assert_eq!(
            err.message,
            "PriorityClass.scheduling.k8s.io \"high\" is invalid: value: Forbidden: may not be changed in an update."
        );
        let mut never = current.clone();
        never["preemptionPolicy"] = json!("Never");
        let causes = priority_class_update_causes(&current, &never);
        assert_eq!(causes[0].field, "preemptionPolicy");
    }

    #[test]
    fn updates_keep_the_admitted_priority() {
        let current =
            json!({"spec": {"priority": 7, "priorityClassName": "d", "preemptionPolicy": "Never"}});
        let mut new = json!({"spec": {"containers": []}});
        keep_pod_priority(&current, &mut new);
        assert_eq!(new["spec"]["priority"], 7);
        assert_eq!(new["spec"]["priorityClassName"], "d");
        assert_eq!(new["spec"]["preemptionPolicy"], "Never");
    }
}
