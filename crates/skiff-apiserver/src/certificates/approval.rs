//! Approving and denying CertificateSigningRequests (the `approval` subresource) and signing
//! approved ones, as kube-apiserver's approval strategy and validation, its
//! `CertificateApproval` admission plugin and kube-controller-manager's `csrsigning`
//! controller do it:
//!
//! - an approval update changes only `status.conditions`; `Approved` and `Denied` are
//!   exclusive, each may appear once and must be `True`, and a condition once set stays;
//! - the user needs verb `approve` on resource `signers` (group `certificates.k8s.io`) named
//!   after the request's signer, or after its domain (`kubernetes.io/*`);
//! - a request that is approved, not denied and not yet signed is signed at once when its
//!   signer is one Kubernetes ships for clients (`kubernetes.io/kube-apiserver-client` and
//!   `kubernetes.io/kube-apiserver-client-kubelet`) and it passes that signer's checks; one
//!   that fails them gets a `Failed` condition; one for another signer stays unsigned.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::signer::{self, ClientSigner};
use super::{KUBELET_CLIENT_SIGNER, node_of_request};
use crate::authz::{self, Attributes, ResourceAttributes};
use crate::state::{AppState, Identity};
use crate::status::{ApiError, Cause};

/// The signer of client certificates for any identity.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// The shortest validity a request may ask for (`spec.expirationSeconds`).
pub const MIN_EXPIRATION_SECONDS: u64 = 600;

/// The usages a client certificate may ask for.
const CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

/// Why an approval update is invalid: (field, message) pairs for a 422 Invalid.
pub type Violations = Vec<(String, String)>;

fn conditions(csr: &Value) -> &[Value] {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn condition_type(condition: &Value) -> &str {
    condition
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn has_condition(csr: &Value, wanted: &str) -> bool {
    conditions(csr).iter().any(|c| condition_type(c) == wanted)
}

/// The request's signer name.
pub fn signer_name(csr: &Value) -> &str {
    csr.pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `current` with the conditions of `wanted` (the body of an approval update), timestamps
/// filled in; or what is wrong with them.
pub fn apply_approval(current: &Value, wanted: &Value, now: &str) -> Result<Value, Violations> {
    let mut new_conditions: Vec<Value> = conditions(wanted).to_vec();
    let mut violations = Violations::new();
    let mut seen: Vec<String> = Vec::new();
    for (i, condition) in new_conditions.iter_mut().enumerate() {
        let field = format!("status.conditions[{i}]");
        let kind = condition_type(condition).to_string();
        if kind.is_empty() {
            violations.push((format!("{field}.type"), "Required value".into()));
            continue;
        }
        if seen.contains(&kind) {
            violations.push((
                format!("{field}.type"),
                format!("Duplicate value: \"{kind}\""),
            ));
        }
        seen.push(kind.clone());
        let status = condition.get("status").and_then(Value::as_str);
        match status {
            None | Some("") => condition["status"] = json!("True"),
            Some("True") => {}
            Some(other) if kind == "Approved" || kind == "Denied" => violations.push((
                format!("{field}.status"),
                format!("Unsupported value: \"{other}\": supported values: \"True\""),
            )),
            Some(_) => {}
        }
        if let Some(object) = condition.as_object_mut() {
            for stamp in ["lastUpdateTime", "lastTransitionTime"] {
                if object.get(stamp).is_none_or(Value::is_null) {
                    object.insert(stamp.into(), json!(now));
                }
            }
        }
    }
    if seen.iter().any(|k| k == "Approved") && seen.iter().any(|k| k == "Denied") {
        violations.push((
            "status.conditions".into(),
            "Invalid value: \"Approved\": Approved and Denied conditions are mutually exclusive"
                .into(),
        ));
    }
    for old in conditions(current) {
        let kind = condition_type(old);
        if (kind == "Approved" || kind == "Denied" || kind == "Failed")
            && !seen.iter().any(|k| k == kind)
        {
            violations.push((
                "status.conditions".into(),
                format!("Forbidden: updates may not remove a condition of type \"{kind}\""),
            ));
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    let mut new = current.clone();
    if !new.get("status").is_some_and(Value::is_object) {
        new["status"] = json!({});
    }
    new["status"]["conditions"] = Value::Array(new_conditions);
    Ok(new)
}

/// kube-apiserver's `CertificateApproval` admission: may `who` approve (or deny) requests for
/// `signer`? Admins may; others need `approve` on `signers` named `signer` or `DOMAIN/*`.
pub async fn authorize_signer(
    state: &AppState,
    who: &Identity,
    csr_name: &str,
    signer: &str,
) -> Result<(), ApiError> {
    let mut names = vec![signer.to_string()];
    if let Some((domain, _)) = signer.split_once('/') {
        names.push(format!("{domain}/*"));
    }
    for name in names {
        let attrs = Attributes::resource(
            who,
            "approve",
            ResourceAttributes {
                group: "certificates.k8s.io".into(),
                version: "*".into(),
                resource: "signers".into(),
                name,
                ..ResourceAttributes::default()
            },
        );
        if authz::decide(state, &attrs).await?.allowed {
            return Ok(());
        }
    }
    Err(ApiError {
        details: Some(json!({
            "name": csr_name,
            "group": "certificates.k8s.io",
            "kind": "certificatesigningrequests",
        })),
        ..ApiError::forbidden(format!(
            "certificatesigningrequests.certificates.k8s.io \"{csr_name}\" is forbidden: user not permitted to approve requests with signerName \"{signer}\""
        ))
    })
}

/// The request's validity: `spec.expirationSeconds` (at least ten minutes) capped at the
/// signer's longest, [`signer::DEFAULT_VALIDITY`].
pub fn validity(csr: &Value) -> Duration {
    csr.pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .map(|s| Duration::from_secs(s.max(MIN_EXPIRATION_SECONDS)))
        .map_or(signer::DEFAULT_VALIDITY, |d| {
            d.min(signer::DEFAULT_VALIDITY)
        })
}

fn usages(csr: &Value) -> Vec<&str> {
    csr.pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Why the `kubernetes.io/kube-apiserver-client` signer refuses a request, if it does: it
/// must ask for `client auth` and nothing but client usages, and name a user.
fn client_request_problem(csr: &Value, subject: &signer::Subject) -> Option<String> {
    let usages = usages(csr);
    if !usages.contains(&"client auth") {
        return Some("missing required usages: client auth".into());
    }
    if let Some(bad) = usages.iter().find(|u| !CLIENT_USAGES.contains(u)) {
        return Some(format!("usage not allowed: {bad}"));
    }
    if subject.common_name.is_empty() {
        return Some("subject common name (the user name) must not be empty".into());
    }
    None
}

/// What became of an approved request.
#[derive(Debug, PartialEq, Eq)]
pub enum Signing {
    /// Signed: the certificate PEM.
    Issued(String),
    /// The signer refused it: why (the `Failed` condition's message).
    Failed(String),
    /// Not for a signer this server runs, already signed, not approved, or denied.
    Untouched,
}

/// Signs `csr` if it is approved, not denied, not yet signed and for a signer this server
/// runs.
pub fn sign_if_approved(ca: &ClientSigner, csr: &Value) -> Result<Signing, signer::SignError> {
    let signed = csr
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    if signed
        || !has_condition(csr, "Approved")
        || has_condition(csr, "Denied")
        || has_condition(csr, "Failed")
    {
        return Ok(Signing::Untouched);
    }
    let signer = signer_name(csr);
    if signer != CLIENT_SIGNER && signer != KUBELET_CLIENT_SIGNER {
        return Ok(Signing::Untouched);
    }
    let request_pem = csr
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .and_then(|r| base64::engine::general_purpose::STANDARD.decode(r).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_default();
    let subject = match signer::request_subject(&request_pem) {
        Ok(subject) => subject,
        Err(e) => return Ok(Signing::Failed(e.to_string())),
    };
    let problem = if signer == CLIENT_SIGNER {
        client_request_problem(csr, &subject)
    } else if node_of_request(csr, &subject).is_none() {
        Some("the request is not a node client certificate request (subject CN=system:node:NAME, O=system:nodes; client usages only)".into())
    } else {
        None
    };
    if let Some(problem) = problem {
        return Ok(Signing::Failed(problem));
    }
    ca.sign_request(&request_pem, validity(csr))
        .map(Signing::Issued)
}

/// Records `signing` in `csr`: the certificate, or a `Failed` condition.
pub fn record(csr: &mut Value, signing: Signing, now: &str) {
    match signing {
        Signing::Issued(pem) => {
            csr["status"]["certificate"] =
                json!(base64::engine::general_purpose::STANDARD.encode(pem.as_bytes()));
        }
        Signing::Failed(message) => {
            let mut all = conditions(csr).to_vec();
            all.push(json!({
                "type": "Failed",
                "status": "True",
                "reason": "SignerValidationFailure",
                "message": message,
                "lastUpdateTime": now,
                "lastTransitionTime": now,
            }));
            csr["status"]["conditions"] = Value::Array(all);
        }
        Signing::Untouched => {}
    }
}

/// The causes of a 422 Invalid for `violations`.
pub fn causes(violations: Violations) -> Vec<Cause> {
    violations
        .into_iter()
        .map(|(field, message)| Cause {
            reason: "FieldValueInvalid".into(),
            message,
            field,
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn with(conditions: Value) -> Value {
        json!({"spec": {"signerName": CLIENT_SIGNER}, "status": {"conditions": conditions}})
    }

    #[test]
    fn approving_a_pending_request_adds_the_condition_with_timestamps() {
        let new = apply_approval(
            &with(json!([])),
            &with(json!([{"type": "Approved", "status": "True", "reason": "KubectlApprove"}])),
            NOW,
        )
        .unwrap();
        assert_eq!(new["status"]["conditions"][0]["type"], "Approved");
        assert_eq!(new["status"]["conditions"][0]["lastUpdateTime"], NOW);
        assert_eq!(new["spec"]["signerName"], CLIENT_SIGNER);
    }

    #[test]
    fn approved_and_denied_are_exclusive_and_never_removed() {
        let denied = with(json!([{"type": "Denied", "status": "True"}]));
        let both = with(
            json!([{"type": "Denied", "status": "True"}, {"type": "Approved", "status": "True"}]),
        );
        let err = apply_approval(&denied, &both, NOW).unwrap_err();
        assert!(
            err.iter().any(|(_, m)| m.contains("mutually exclusive")),
            "{err:?}"
        );
        let swapped = with(json!([{"type": "Approved", "status": "True"}]));
        let err = apply_approval(&denied, &swapped, NOW).unwrap_err();
        assert!(
            err.iter()
                .any(|(_, m)| m.contains("may not remove a condition of type \"Denied\"")),
            "{err:?}"
        );
        let twice = with(json!([{"type": "Approved"}, {"type": "Approved"}]));
        assert!(apply_approval(&with(json!([])), &twice, NOW).is_err());
        let untrue = with(json!([{"type": "Approved", "status": "False"}]));
        assert!(apply_approval(&with(json!([])), &untrue, NOW).is_err());
    }

    #[test]
    fn validity_is_at_least_ten_minutes_and_at_most_the_signers_longest() {
        let asks = |s: u64| json!({"spec": {"expirationSeconds": s}});
        assert_eq!(validity(&asks(3600)), Duration::from_secs(3600));
        assert_eq!(validity(&asks(10)), Duration::from_secs(600));
        assert_eq!(validity(&asks(u64::MAX)), signer::DEFAULT_VALIDITY);
        assert_eq!(validity(&json!({"spec": {}})), signer::DEFAULT_VALIDITY);
    }

    #[test]
    fn the_client_signer_wants_client_usages_and_a_user() {
        let subject = signer::Subject {
            common_name: "jane".into(),
            organizations: vec![],
        };
        let csr = |u: Value| json!({"spec": {"usages": u}});
        assert_eq!(
            client_request_problem(&csr(json!(["client auth", "digital signature"])), &subject),
            None
        );
        assert!(client_request_problem(&csr(json!(["digital signature"])), &subject).is_some());
        assert!(
            client_request_problem(&csr(json!(["client auth", "server auth"])), &subject).is_some()
        );
    }

    #[test]
    fn only_approved_undenied_unsigned_requests_for_known_signers_are_touched() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let ca = ClientSigner::new(&ca_pem, &key.serialize_pem()).unwrap();
        let (request, _) = signer::new_request("jane", "dev").unwrap();
        let csr = |signer: &str, conditions: Value| {
            json!({
                "spec": {
                    "signerName": signer,
                    "usages": ["client auth"],
                    "request": base64::engine::general_purpose::STANDARD.encode(&request),
                },
                "status": {"conditions": conditions},
            })
        };
        let approved = json!([{"type": "Approved", "status": "True"}]);
        assert!(matches!(
            sign_if_approved(&ca, &csr(CLIENT_SIGNER, approved.clone())).unwrap(),
            Signing::Issued(_)
        ));
        assert_eq!(
            sign_if_approved(&ca, &csr("example.com/mine", approved.clone())).unwrap(),
            Signing::Untouched
        );
        assert_eq!(
            sign_if_approved(&ca, &csr(CLIENT_SIGNER, json!([]))).unwrap(),
            Signing::Untouched
        );
        assert!(matches!(
            sign_if_approved(&ca, &csr(KUBELET_CLIENT_SIGNER, approved)).unwrap(),
            Signing::Failed(_)
        ));
    }
}
