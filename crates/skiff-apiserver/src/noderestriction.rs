//! The NodeRestriction admission: what the Node authorizer cannot see because the name is in
//! the body. A node identity (`system:node:NAME`) may create only its own Node and only the
//! Lease named after it; a CertificateSigningRequest it creates is checked by
//! [`crate::certificates`] (it is approved only for the node itself).

use serde_json::Value;
use skiff_apimachinery::ResourceInfo;

use crate::certificates::{NODE_USER_PREFIX, NODES};
use crate::state::Identity;
use crate::status::ApiError;

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

/// Refuses a node's create of another node's Node or Lease.
pub fn admit_create(identity: &Identity, info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let Some(node) = node_name(identity) else {
        return Ok(());
    };
    let what = match (info.group.as_str(), info.plural.as_str()) {
        ("", "nodes") => "node",
        ("coordination.k8s.io", "leases") => "lease",
        _ => return Ok(()),
    };
    let name = crate::object::name(obj);
    if name == node {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "{} \"{name}\" is forbidden: node \"{node}\" is not allowed to create a {what} named \"{name}\" (NodeRestriction)",
        if info.group.is_empty() {
            info.plural.clone()
        } else {
            format!("{}.{}", info.plural, info.group)
        },
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;
    use skiff_apimachinery::Registry;

    use super::*;

    #[test]
    fn a_node_creates_only_its_own_node_and_lease() {
        let registry = Registry::builtin();
        let nodes = registry.find("", "v1", "nodes").unwrap();
        let leases = registry
            .find("coordination.k8s.io", "v1", "leases")
            .unwrap();
        let n1 = Identity {
            username: "system:node:n1".into(),
            groups: vec!["system:nodes".into()],
        };
        let named = |name: &str| json!({"metadata": {"name": name}});
        assert!(admit_create(&n1, nodes, &named("n1")).is_ok());
        assert!(admit_create(&n1, leases, &named("n1")).is_ok());
        let err = admit_create(&n1, nodes, &named("n2")).unwrap_err();
        assert_eq!(err.code, 403);
        assert!(admit_create(&n1, leases, &named("n2")).is_err());
        let admin = Identity {
            username: "system:admin".into(),
            groups: vec!["system:masters".into()],
        };
        assert!(admit_create(&admin, nodes, &named("n2")).is_ok());
    }
}
