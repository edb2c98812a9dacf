//! The NodeRestriction admission, as kube-apiserver's plugin of that name: what the Node
//! authorizer cannot see because it is in the body. A node identity (`system:node:NAME`):
//!
//! - creates and updates only its own Node, never with a `spec.configSource`, never changing
//!   its taints on update, and adds, changes or removes only labels outside the
//!   `kubernetes.io` / `k8s.io` namespaces or in the kubelet's own set
//!   ([`is_kubelet_label`]); `node-restriction.kubernetes.io/` labels never;
//! - creates and changes only the Lease named after it, in `kube-node-lease`.
//!
//! A CertificateSigningRequest it creates is checked by [`crate::certificates`] (it is
//! approved only for the node itself); a service account token it requests must be bound to
//! a pod scheduled on it ([`crate::serviceaccount`]). Pods themselves it may only read, and
//! change the status of, delete or evict those bound to it: the Node authorizer decides that.

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use skiff_apimachinery::ResourceInfo;

use crate::certificates::{NODE_USER_PREFIX, NODES};
use crate::state::Identity;
use crate::status::ApiError;

/// The label namespace only administrators may set on Nodes.
pub const NODE_RESTRICTION_LABEL_NAMESPACE: &str = "node-restriction.kubernetes.io";

/// The labels a kubelet sets on its Node itself.
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
];

/// The label namespaces (and their subdomains) a kubelet may use freely.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// The node an identity is, if it is one.
pub fn node_name(identity: &Identity) -> Option<&str> {
    if !identity.groups.iter().any(|g| g == NODES) {
        return None;
    }
    identity
        .username
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_namespace(namespace: &str, wanted: &str) -> bool {
    namespace == wanted
        || namespace
            .strip_suffix(wanted)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Whether `key` is a label the kubelet sets itself (kubelet's `IsKubeletLabel`).
pub fn is_kubelet_label(key: &str) -> bool {
    KUBELET_LABELS.contains(&key)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|ns| in_namespace(label_namespace(key), ns))
}

fn is_kubernetes_label(key: &str) -> bool {
    let namespace = label_namespace(key);
    in_namespace(namespace, "kubernetes.io") || in_namespace(namespace, "k8s.io")
}

/// The labels a node may not add, change or remove: node-restriction ones and unknown
/// Kubernetes ones, among the `modified` keys (sorted).
pub fn forbidden_labels<'a>(modified: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let forbidden: BTreeSet<&str> = modified
        .into_iter()
        .filter(|key| {
            in_namespace(label_namespace(key), NODE_RESTRICTION_LABEL_NAMESPACE)
                || (is_kubernetes_label(key) && !is_kubelet_label(key))
        })
        .collect();
    forbidden.into_iter().map(str::to_string).collect()
}

fn labels(obj: &Value) -> Map<String, Value> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The label keys that differ between `new` and `old` (added, changed or removed).
fn modified_labels(new: &Value, old: Option<&Value>) -> Vec<String> {
    let new = labels(new);
    let old = old.map(labels).unwrap_or_default();
    let mut keys: Vec<String> = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(old.keys().filter(|k| !new.contains_key(*k)).cloned());
    keys
}

fn qualified(info: &ResourceInfo) -> String {
    if info.group.is_empty() {
        info.plural.clone()
    } else {
        format!("{}.{}", info.plural, info.group)
    }
}

/// kube-apiserver's admission Forbidden: `nodes "n2" is forbidden: REASON`.
fn forbidden(info: &ResourceInfo, name: &str, reason: String) -> ApiError {
    let mut details = serde_json::json!({"kind": info.plural, "name": name});
    if !info.group.is_empty() {
        details["group"] = serde_json::json!(info.group);
    }
    ApiError {
        details: Some(details),
        ..ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: {reason}",
            qualified(info)
        ))
    }
}

fn config_source(node: &Value) -> Option<&Value> {
    node.pointer("/spec/configSource").filter(|v| !v.is_null())
}

fn taints(node: &Value) -> Vec<Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// Refuses a node's create of a Node or Lease it may not create.
pub fn admit_create(identity: &Identity, info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let Some(node) = node_name(identity) else {
        return Ok(());
    };
    let name = crate::object::name(obj);
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "nodes") => {
            own_node(info, node, name)?;
            if config_source(obj).is_some() {
                return Err(forbidden(
                    info,
                    name,
                    format!(
                        "node \"{node}\" is not allowed to create pods with a non-nil configSource"
                    ),
                ));
            }
            let modified = modified_labels(obj, None);
            let bad = forbidden_labels(modified.iter().map(String::as_str));
            if !bad.is_empty() {
                return Err(forbidden(
                    info,
                    name,
                    format!(
                        "node \"{node}\" is not allowed to set the following labels: {}",
                        bad.join(", ")
                    ),
                ));
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") => admit_lease(info, node, name, obj),
        _ => Ok(()),
    }
}

/// Refuses a node's write of a Node other than its own.
fn own_node(info: &ResourceInfo, node: &str, name: &str) -> Result<(), ApiError> {
    if name == node {
        return Ok(());
    }
    Err(forbidden(
        info,
        name,
        format!("node \"{node}\" is not allowed to modify node \"{name}\""),
    ))
}

fn admit_lease(info: &ResourceInfo, node: &str, name: &str, obj: &Value) -> Result<(), ApiError> {
    if crate::object::namespace(obj) != crate::authz::node::NODE_LEASE_NAMESPACE {
        return Err(forbidden(
            info,
            name,
            format!(
                "can only access leases in the \"{}\" system namespace",
                crate::authz::node::NODE_LEASE_NAMESPACE
            ),
        ));
    }
    if name != node {
        return Err(forbidden(
            info,
            name,
            "can only access node lease with the same name as the requesting node".into(),
        ));
    }
    Ok(())
}

/// Refuses a node's update (any subresource) of a Node or Lease it may not change: `current`
/// is the stored object, `new` what it would become.
pub fn admit_update(
    identity: &Identity,
    info: &ResourceInfo,
    current: &Value,
    new: &Value,
) -> Result<(), ApiError> {
    let Some(node) = node_name(identity) else {
        return Ok(());
    };
    let name = crate::object::name(current);
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "nodes") => {
            own_node(info, node, name)?;
            if let Some(source) = config_source(new)
                && config_source(current) != Some(source)
            {
                return Err(forbidden(
                    info,
                    name,
                    format!(
                        "node \"{node}\" is not allowed to update configSource to a new non-nil configSource"
                    ),
                ));
            }
            if taints(new) != taints(current) {
                return Err(forbidden(
                    info,
                    name,
                    format!("node \"{node}\" is not allowed to modify taints"),
                ));
            }
            let modified = modified_labels(new, Some(current));
            let bad = forbidden_labels(modified.iter().map(String::as_str));
            if !bad.is_empty() {
                return Err(forbidden(
                    info,
                    name,
                    format!("is not allowed to modify labels: {}", bad.join(", ")),
                ));
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") => admit_lease(info, node, name, current),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;
    use skiff_apimachinery::Registry;

    use super::*;

    fn n1() -> Identity {
        Identity {
            username: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        }
    }

    #[test]
    fn a_node_creates_only_its_own_node_and_lease() {
        let registry = Registry::builtin();
        let nodes = registry.find("", "v1", "nodes").unwrap();
        let leases = registry
            .find("coordination.k8s.io", "v1", "leases")
            .unwrap();
        let named =
            |name: &str| json!({"metadata": {"name": name, "namespace": "kube-node-lease"}});
        assert!(admit_create(&n1(), nodes, &named("n1")).is_ok());
        assert!(admit_create(&n1(), leases, &named("n1")).is_ok());
        let err = admit_create(&n1(), nodes, &named("n2")).unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        let err = admit_create(&n1(), leases, &named("n2")).unwrap_err();
        assert!(
            err.message
                .ends_with("can only access node lease with the same name as the requesting node")
        );
        let admin = Identity {
            username: "system:admin".into(),
            groups: vec!["system:masters".into()],
        };
        assert!(admit_create(&admin, nodes, &named("n2")).is_ok());
    }

    #[test]
    fn kubelet_labels_are_the_kubelets_set_and_namespaces() {
        for ok in [
            "kubernetes.io/hostname",
            "kubernetes.io/arch",
            "beta.kubernetes.io/os",
            "node.kubernetes.io/instance-type",
            "node.kubernetes.io/exclude-from-external-load-balancers",
            "kubelet.kubernetes.io/anything",
            "foo.node.kubernetes.io/bar",
            "example.com/rack",
            "plain",
        ] {
            assert!(forbidden_labels([ok]).is_empty(), "{ok}");
        }
        for bad in [
            "node-restriction.kubernetes.io/foo",
            "team.node-restriction.kubernetes.io/foo",
            "node-role.kubernetes.io/control-plane",
            "kubernetes.io/role",
            "k8s.io/x",
            "sub.k8s.io/x",
        ] {
            assert_eq!(forbidden_labels([bad]), [bad], "{bad}");
        }
    }

    #[test]
    fn a_node_may_not_change_taints_restricted_labels_or_config_source() {
        let registry = Registry::builtin();
        let nodes = registry.find("", "v1", "nodes").unwrap();
        let node = json!({
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1", "node-restriction.kubernetes.io/pool": "a"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
        });
        let mut relabelled = node.clone();
        relabelled["metadata"]["labels"]["node-restriction.kubernetes.io/foo"] = json!("bar");
        let err = admit_update(&n1(), nodes, &node, &relabelled).unwrap_err();
        assert_eq!(
            err.message,
            "nodes \"n1\" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/foo"
        );
        let mut removed = node.clone();
        removed["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("node-restriction.kubernetes.io/pool");
        assert!(admit_update(&n1(), nodes, &node, &removed).is_err());
        let mut untainted = node.clone();
        untainted["spec"]["taints"] = json!([]);
        assert_eq!(
            admit_update(&n1(), nodes, &node, &untainted)
                .unwrap_err()
                .message,
            "nodes \"n1\" is forbidden: node \"n1\" is not allowed to modify taints"
        );
        let mut allowed = node.clone();
        allowed["metadata"]["labels"]["node.kubernetes.io/instance-type"] = json!("big");
        allowed["metadata"]["labels"]["example.com/rack"] = json!("r1");
        assert!(admit_update(&n1(), nodes, &node, &allowed).is_ok());
        let mut configured = node.clone();
        configured["spec"]["configSource"] = json!({"configMap": {"name": "x"}});
        assert!(admit_update(&n1(), nodes, &node, &configured).is_err());
        let mut other = node.clone();
        other["metadata"]["name"] = json!("n2");
        assert!(admit_update(&n1(), nodes, &other, &other).is_err());
        let created =
            json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/x": ""}}});
        assert_eq!(
            admit_create(&n1(), nodes, &created).unwrap_err().message,
            "nodes \"n1\" is forbidden: node \"n1\" is not allowed to set the following labels: node-role.kubernetes.io/x"
        );
    }
}
