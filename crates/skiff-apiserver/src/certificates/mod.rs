//! CertificateSigningRequests (`certificates.k8s.io/v1`) and how nodes and users get their
//! client certificates, as kube-apiserver and kube-controller-manager's `csrapproving` and
//! `csrsigning` controllers do it. A new request gets `spec.username` and `spec.groups` of its
//! requester; a request for the `kubernetes.io/kube-apiserver-client-kubelet` signer whose
//! subject is `CN=system:node:NAME, O=system:nodes` is approved at create (condition
//! `Approved`, reason `AutoApproved`) and signed by the cluster CA ([`signer`]) when the
//! requester is a bootstrapper (the join token, group `system:bootstrappers`), an admin, or
//! that very node renewing its own certificate. Any other request waits for a user with the
//! signer's `approve` permission to approve or deny it through the `approval` subresource
//! ([`approval`]), which signs it as soon as it is approved.

pub mod approval;
pub mod signer;

use base64::Engine as _;
use serde_json::{Value, json};
use skiff_apimachinery::ResourceInfo;

use crate::state::{AppState, Identity};
use crate::status::{ApiError, Cause};

pub use signer::{ClientSigner, SignError};

/// The signer of nodes' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The group of identities that may only bootstrap a node (the join token).
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The group of node identities.
pub const NODES: &str = "system:nodes";
/// The user name prefix of node identities.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The usages a node client certificate may ask for.
const NODE_CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

pub(crate) fn is_csr(info: &ResourceInfo) -> bool {
    info.group == "certificates.k8s.io" && info.plural == "certificatesigningrequests"
}

fn invalid(info: &ResourceInfo, name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        info,
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field: field.into(),
        }],
    )
}

/// The node a request is for, when it is a node client certificate request: its subject is
/// `CN=system:node:NAME, O=system:nodes` and it asks only for client usages.
pub(crate) fn node_of_request(csr: &Value, subject: &signer::Subject) -> Option<String> {
    let spec = csr.get("spec")?;
    if spec.get("signerName").and_then(Value::as_str) != Some(KUBELET_CLIENT_SIGNER) {
        return None;
    }
    let usages: Vec<&str> = spec
        .get("usages")
        .and_then(Value::as_array)
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if usages.is_empty() || !usages.iter().all(|u| NODE_CLIENT_USAGES.contains(u)) {
        return None;
    }
    if subject.organizations != [NODES] {
        return None;
    }
    subject
        .common_name
        .strip_prefix(NODE_USER_PREFIX)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// Whether `requester` may have a client certificate for `node` approved automatically: a
/// bootstrapper, the node itself, or an admin (who could approve it anyway; an agent given the
/// admin token by an older version still joins).
pub fn may_auto_approve(requester: &Identity, node: &str) -> bool {
    requester
        .groups
        .iter()
        .any(|g| g == BOOTSTRAPPERS || g == crate::authz::SYSTEM_MASTERS)
        || (requester.groups.iter().any(|g| g == NODES)
            && requester.username.strip_prefix(NODE_USER_PREFIX) == Some(node))
}

/// Prepares a new CertificateSigningRequest created by `requester` (after the create strategy,
/// so the status set here is kept): records the requester, checks the request, and approves
/// and signs node client certificate requests it may.
pub fn admit_create(
    state: &AppState,
    requester: &Identity,
    info: &ResourceInfo,
    csr: &mut Value,
) -> Result<(), ApiError> {
    if !is_csr(info) {
        return Ok(());
    }
    let name = crate::object::name(csr).to_string();
    if !csr.get("spec").is_some_and(Value::is_object) {
        return Err(invalid(info, &name, "spec", "Required value".into()));
    }
    csr["spec"]["username"] = json!(requester.username);
    csr["spec"]["groups"] = json!(requester.groups);
    let signer_name = csr["spec"]["signerName"].as_str().unwrap_or("").to_string();
    if signer_name.is_empty() {
        return Err(invalid(
            info,
            &name,
            "spec.signerName",
            "Required value".into(),
        ));
    }
    if signer_name == approval::LEGACY_UNKNOWN_SIGNER {
        return Err(invalid(
            info,
            &name,
            "spec.signerName",
            format!(
                "Invalid value: \"{signer_name}\": the legacy signerName is not allowed via this API version"
            ),
        ));
    }
    if let Some(seconds) = csr["spec"]
        .get("expirationSeconds")
        .filter(|v| !v.is_null())
    {
        if seconds
            .as_u64()
            .is_none_or(|s| s < approval::MIN_EXPIRATION_SECONDS)
        {
            return Err(invalid(
                info,
                &name,
                "spec.expirationSeconds",
                format!(
                    "Invalid value: {seconds}: may not specify a duration less than 600 seconds (10 minutes)"
                ),
            ));
        }
    }
    let encoded = csr["spec"]["request"].as_str().unwrap_or("");
    let request_pem = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            invalid(
                info,
                &name,
                "spec.request",
                "Invalid value: the request must be a base64-encoded PEM CERTIFICATE REQUEST"
                    .into(),
            )
        })?;
    let subject = signer::request_subject(&request_pem)
        .map_err(|e| invalid(info, &name, "spec.request", format!("Invalid value: {e}")))?;
    // kube-apiserver's CertificateSubjectRestriction admission.
    if signer_name == approval::CLIENT_SIGNER
        && subject
            .organizations
            .iter()
            .any(|o| o == crate::authz::SYSTEM_MASTERS)
    {
        return Err(ApiError {
            details: Some(json!({
                "name": name,
                "group": "certificates.k8s.io",
                "kind": "certificatesigningrequests",
            })),
            ..ApiError::forbidden(format!(
                "certificatesigningrequests.certificates.k8s.io \"{name}\" is forbidden: use of {} signer with system:masters group is not allowed",
                approval::CLIENT_SIGNER
            ))
        });
    }
    let Some(node) = node_of_request(csr, &subject) else {
        return Ok(());
    };
    let Some(ca) = state.options.csr_signer.as_ref() else {
        return Ok(());
    };
    if !may_auto_approve(requester, &node) {
        return Ok(());
    }
    let cert = ca
        .sign_request(
            &request_pem,
            approval::validity(csr, state.options.cluster_signing_duration),
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let now = crate::object::now();
    csr["status"] = json!({
        "conditions": [{
            "type": "Approved",
            "status": "True",
            "reason": "AutoApproved",
            "message": "Auto approving kubelet client certificate after SubjectAccessReview.",
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }],
        "certificate": base64::engine::general_purpose::STANDARD.encode(cert.as_bytes()),
    });
    tracing::info!(csr = %name, %node, requester = %requester.username, "approved and signed a node client certificate");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn who(user: &str, group: &str) -> Identity {
        Identity {
            username: user.into(),
            groups: vec![group.into(), "system:authenticated".into()],
        }
    }

    #[test]
    fn bootstrappers_and_the_node_itself_are_approved_automatically() {
        assert!(may_auto_approve(
            &who("system:bootstrap:abcdef", BOOTSTRAPPERS),
            "n1"
        ));
        assert!(may_auto_approve(&who("system:node:n1", NODES), "n1"));
        assert!(!may_auto_approve(&who("system:node:n2", NODES), "n1"));
        assert!(!may_auto_approve(&who("alice", "developers"), "n1"));
        assert!(may_auto_approve(
            &who("system:admin", "system:masters"),
            "n1"
        ));
    }

    #[test]
    fn only_node_client_requests_name_a_node() {
        let subject = signer::Subject {
            common_name: "system:node:n1".into(),
            organizations: vec![NODES.into()],
            ..signer::Subject::default()
        };
        let csr =
            |signer: &str, usages: Value| json!({"spec": {"signerName": signer, "usages": usages}});
        let good = csr(
            KUBELET_CLIENT_SIGNER,
            json!(["digital signature", "client auth"]),
        );
        assert_eq!(node_of_request(&good, &subject), Some("n1".into()));
        let server = csr(KUBELET_CLIENT_SIGNER, json!(["server auth"]));
        assert_eq!(node_of_request(&server, &subject), None);
        let other = csr(
            "kubernetes.io/kube-apiserver-client",
            json!(["client auth"]),
        );
        assert_eq!(node_of_request(&other, &subject), None);
        let admin = signer::Subject {
            common_name: "system:node:n1".into(),
            organizations: vec!["system:masters".into()],
            ..signer::Subject::default()
        };
        assert_eq!(node_of_request(&good, &admin), None);
    }
}
