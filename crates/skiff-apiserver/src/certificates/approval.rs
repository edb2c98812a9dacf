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

use super::KUBELET_CLIENT_SIGNER;
use super::signer::{self, ClientSigner};
use crate::authz::{self, Attributes, ResourceAttributes};
use crate::state::{AppState, Identity};
use crate::status::{ApiError, Cause};

/// The signer of client certificates for any identity.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The signer of nodes' serving certificates (never approved automatically).
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The signer of the v1beta1 API's requests without a signer: never signed here, and refused
/// at create by the v1 API.
pub const LEGACY_UNKNOWN_SIGNER: &str = "kubernetes.io/legacy-unknown";

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

/// Whether `who` has `verb` (`approve`, `sign`) on resource `signers` (group
/// `certificates.k8s.io`) named `signer` or after its domain (`kubernetes.io/*`), as
/// kube-apiserver's `IsAuthorizedForSignerName` asks.
pub async fn may_for_signer(
    state: &AppState,
    who: &Identity,
    verb: &str,
    signer: &str,
) -> Result<bool, ApiError> {
    let mut names = vec![signer.to_string()];
    if let Some((domain, _)) = signer.split_once('/') {
        names.push(format!("{domain}/*"));
    }
    for name in names {
        let attrs = Attributes::resource(
            who,
            verb,
            ResourceAttributes {
                group: "certificates.k8s.io".into(),
                version: "*".into(),
                resource: "signers".into(),
                name,
                ..ResourceAttributes::default()
            },
        );
        if authz::decide(state, &attrs).await?.allowed {
            return Ok(true);
        }
    }
    Ok(false)
}

fn csr_forbidden(csr_name: &str, message: String) -> ApiError {
    ApiError {
        details: Some(json!({
            "name": csr_name,
            "group": "certificates.k8s.io",
            "kind": "certificatesigningrequests",
        })),
        ..ApiError::forbidden(format!(
            "certificatesigningrequests.certificates.k8s.io \"{csr_name}\" is forbidden: {message}"
        ))
    }
}

/// kube-apiserver's `CertificateApproval` admission: may `who` approve (or deny) requests for
/// `signer`? Admins may; others need `approve` on `signers` named `signer` or `DOMAIN/*`.
pub async fn authorize_signer(
    state: &AppState,
    who: &Identity,
    csr_name: &str,
    signer: &str,
) -> Result<(), ApiError> {
    if may_for_signer(state, who, "approve", signer).await? {
        return Ok(());
    }
    Err(csr_forbidden(
        csr_name,
        format!("user not permitted to approve requests with signerName \"{signer}\""),
    ))
}

/// kube-apiserver's `CertificateSigning` admission for one `status` update of a request:
/// whether its user may `sign` for the request's signer, decided before the update.
pub struct SigningCheck {
    csr_name: String,
    signer: String,
    may_sign: bool,
}

impl SigningCheck {
    /// Refuses the update when it changes `status.certificate` and the user may not sign.
    pub fn admit(&self, current: &Value, new: &Value) -> Result<(), ApiError> {
        let certificate = |csr: &Value| csr.pointer("/status/certificate").cloned();
        if self.may_sign || certificate(current) == certificate(new) {
            return Ok(());
        }
        Err(csr_forbidden(
            &self.csr_name,
            format!(
                "user not permitted to sign requests with signerName \"{}\"",
                self.signer
            ),
        ))
    }
}

/// The [`SigningCheck`] of a request to the `status` subresource of a
/// CertificateSigningRequest; `None` for every other request.
pub async fn signing_check(ctx: &crate::handlers::Ctx) -> Result<Option<SigningCheck>, ApiError> {
    if !super::is_csr(&ctx.info) || ctx.subresource.as_deref() != Some("status") {
        return Ok(None);
    }
    let (current, _) =
        crate::storage::get(ctx.state.store.as_ref(), &ctx.info, None, ctx.name()).await?;
    let signer = signer_name(&current).to_string();
    let may_sign = may_for_signer(&ctx.state, &ctx.identity, "sign", &signer).await?;
    Ok(Some(SigningCheck {
        csr_name: ctx.name().to_string(),
        signer,
        may_sign,
    }))
}

/// The request's validity: `spec.expirationSeconds` (at least ten minutes) capped at `max`
/// (`--cluster-signing-duration`), `max` when the request does not say.
pub fn validity(csr: &Value, max: Duration) -> Duration {
    csr.pointer("/spec/expirationSeconds")
        .and_then(Value::as_u64)
        .map(|s| Duration::from_secs(s.max(MIN_EXPIRATION_SECONDS)))
        .map_or(max, |d| d.min(max))
}

fn usages(csr: &Value) -> Vec<&str> {
    csr.pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Why the `kubernetes.io/kube-apiserver-client` signer refuses a request, if it does: only
/// client usages, `client auth` among them (kube-controller-manager's messages).
fn client_request_problem(csr: &Value) -> Option<String> {
    let usages = usages(csr);
    if let Some(bad) = usages.iter().find(|u| !CLIENT_USAGES.contains(u)) {
        return Some(format!("invalid usage for client certificate: {bad}"));
    }
    if !usages.contains(&"client auth") {
        return Some("missing required usage for client certificate: client auth".into());
    }
    None
}

fn same_usages(usages: &[&str], wanted: &[&str]) -> bool {
    let mut have: Vec<&str> = usages.to_vec();
    have.sort_unstable();
    have.dedup();
    let mut want: Vec<&str> = wanted.to_vec();
    want.sort_unstable();
    have == want
}

/// Why a kubelet signer refuses a request, if it does, as kube's `ValidateKubeletClientCSR`
/// (`serving` false) and `ValidateKubeletServingCSR` (`serving` true) decide, in their order.
pub fn kubelet_request_problem(
    csr: &Value,
    subject: &signer::Subject,
    serving: bool,
) -> Option<String> {
    if subject.organizations != [super::NODES] {
        return Some("subject organization is not system:nodes".into());
    }
    if serving {
        if subject.dns_names.is_empty() && subject.ip_addresses.is_empty() {
            return Some("DNS or IP subjectAltName is required".into());
        }
    } else if !subject.dns_names.is_empty() {
        return Some("DNS subjectAltNames are not allowed".into());
    }
    if !subject.emails.is_empty() {
        return Some("Email subjectAltNames are not allowed".into());
    }
    if !serving && !subject.ip_addresses.is_empty() {
        return Some("IP subjectAltNames are not allowed".into());
    }
    if !subject.uris.is_empty() {
        return Some("URI subjectAltNames are not allowed".into());
    }
    let last = if serving {
        "server auth"
    } else {
        "client auth"
    };
    let usages = usages(csr);
    if !same_usages(&usages, &["digital signature", "key encipherment", last])
        && !same_usages(&usages, &["digital signature", last])
    {
        let mut listed = ["digital signature", "key encipherment", last];
        listed.sort_unstable();
        return Some(format!("usages did not match [{}]", listed.join(" ")));
    }
    if !subject.common_name.starts_with(super::NODE_USER_PREFIX) {
        return Some("subject common name does not begin with system:node:".into());
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

/// Signs `csr` if it is approved, not denied, not failed, not yet signed and for a signer
/// this server runs (`kubernetes.io/kube-apiserver-client`,
/// `kubernetes.io/kube-apiserver-client-kubelet`, `kubernetes.io/kubelet-serving`; never
/// `kubernetes.io/legacy-unknown`), for at most `max`.
pub fn sign_if_approved(
    ca: &ClientSigner,
    csr: &Value,
    max: Duration,
) -> Result<Signing, signer::SignError> {
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
    if ![CLIENT_SIGNER, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER].contains(&signer) {
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
    let (problem, profile) = match signer {
        CLIENT_SIGNER => (client_request_problem(csr), signer::Profile::Client),
        KUBELET_SERVING_SIGNER => (
            kubelet_request_problem(csr, &subject, true),
            signer::Profile::Serving,
        ),
        _ => (
            kubelet_request_problem(csr, &subject, false),
            signer::Profile::Client,
        ),
    };
    if let Some(problem) = problem {
        return Ok(Signing::Failed(problem));
    }
    ca.sign_request_as(&request_pem, validity(csr, max), profile)
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
        let max = signer::DEFAULT_VALIDITY;
        assert_eq!(validity(&asks(3600), max), Duration::from_secs(3600));
        assert_eq!(validity(&asks(10), max), Duration::from_secs(600));
        assert_eq!(validity(&asks(u64::MAX), max), max);
        assert_eq!(validity(&json!({"spec": {}}), max), max);
        let day = Duration::from_secs(86_400);
        assert_eq!(validity(&asks(7 * 86_400), day), day);
    }

    #[test]
    fn the_client_signer_wants_client_usages_only() {
        let csr = |u: Value| json!({"spec": {"usages": u}});
        assert_eq!(
            client_request_problem(&csr(json!(["client auth", "digital signature"]))),
            None
        );
        assert_eq!(
            client_request_problem(&csr(json!(["digital signature"]))).unwrap(),
            "missing required usage for client certificate: client auth"
        );
        assert_eq!(
            client_request_problem(&csr(json!(["client auth", "server auth"]))).unwrap(),
            "invalid usage for client certificate: server auth"
        );
    }

    #[test]
    fn kubelet_signers_check_subject_names_and_usages_as_kube_does() {
        let node = signer::Subject {
            common_name: "system:node:n1".into(),
            organizations: vec!["system:nodes".into()],
            ..signer::Subject::default()
        };
        let csr = |u: Value| json!({"spec": {"usages": u}});
        let serving = csr(json!([
            "digital signature",
            "key encipherment",
            "server auth"
        ]));
        assert_eq!(
            kubelet_request_problem(&serving, &node, true).unwrap(),
            "DNS or IP subjectAltName is required"
        );
        let named = signer::Subject {
            dns_names: vec!["n1.example".into()],
            ..node.clone()
        };
        assert_eq!(kubelet_request_problem(&serving, &named, true), None);
        assert_eq!(
            kubelet_request_problem(
                &csr(json!(["digital signature", "server auth"])),
                &named,
                true
            ),
            None
        );
        assert_eq!(
            kubelet_request_problem(&csr(json!(["server auth"])), &named, true).unwrap(),
            "usages did not match [digital signature key encipherment server auth]"
        );
        let mailed = signer::Subject {
            emails: vec!["a@b".into()],
            ..named.clone()
        };
        assert_eq!(
            kubelet_request_problem(&serving, &mailed, true).unwrap(),
            "Email subjectAltNames are not allowed"
        );
        let user = signer::Subject {
            common_name: "alice".into(),
            ..named.clone()
        };
        assert_eq!(
            kubelet_request_problem(&serving, &user, true).unwrap(),
            "subject common name does not begin with system:node:"
        );
        let client = csr(json!(["digital signature", "client auth"]));
        assert_eq!(kubelet_request_problem(&client, &node, false), None);
        assert_eq!(
            kubelet_request_problem(&client, &named, false).unwrap(),
            "DNS subjectAltNames are not allowed"
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
            sign_if_approved(
                &ca,
                &csr(CLIENT_SIGNER, approved.clone()),
                signer::DEFAULT_VALIDITY
            )
            .unwrap(),
            Signing::Issued(_)
        ));
        assert_eq!(
            sign_if_approved(
                &ca,
                &csr("example.com/mine", approved.clone()),
                signer::DEFAULT_VALIDITY
            )
            .unwrap(),
            Signing::Untouched
        );
        assert_eq!(
            sign_if_approved(
                &ca,
                &csr(CLIENT_SIGNER, json!([])),
                signer::DEFAULT_VALIDITY
            )
            .unwrap(),
            Signing::Untouched
        );
        assert!(matches!(
            sign_if_approved(
                &ca,
                &csr(KUBELET_CLIENT_SIGNER, approved.clone()),
                signer::DEFAULT_VALIDITY
            )
            .unwrap(),
            Signing::Failed(_)
        ));
        assert_eq!(
            sign_if_approved(
                &ca,
                &csr(LEGACY_UNKNOWN_SIGNER, approved.clone()),
                signer::DEFAULT_VALIDITY
            )
            .unwrap(),
            Signing::Untouched
        );

        // A node's serving certificate keeps its names and serves.
        let node_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["n1.example".to_string()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:nodes");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        let serving_request = params.serialize_request(&node_key).unwrap().pem().unwrap();
        let mut serving = csr(KUBELET_SERVING_SIGNER, approved);
        serving["spec"]["usages"] = json!(["digital signature", "key encipherment", "server auth"]);
        serving["spec"]["request"] =
            json!(base64::engine::general_purpose::STANDARD.encode(&serving_request));
        serving["spec"]["expirationSeconds"] = json!(3600);
        let Signing::Issued(cert) =
            sign_if_approved(&ca, &serving, signer::DEFAULT_VALIDITY).unwrap()
        else {
            panic!("the serving request was not signed");
        };
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).unwrap();
        let parsed = pem.parse_x509().unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
        let eku = parsed.extended_key_usage().unwrap().unwrap();
        assert!(eku.value.server_auth && !eku.value.client_auth);
        let left = signer::not_after(&cert)
            .unwrap()
            .duration_since(std::time::SystemTime::now())
            .unwrap();
        assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3500));
    }
}
