//! Client certificates of the cluster CA: signing a node's certificate signing request (the
//! `kubernetes.io/kube-apiserver-client-kubelet` signer), issuing a key and certificate
//! directly (the embedded agent of `skiff server`), writing a node's request (`skiff agent`)
//! and reading who a verified client certificate names (CN the user, each O a group).

use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::state::Identity;

/// How long a signed client certificate is valid when the request does not say.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Why a certificate could not be signed, issued or read.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The CA key does not parse.
    #[error("cannot parse the CA key: {0}")]
    CaKey(#[source] rcgen::Error),
    /// The certificate signing request does not parse or its signature is wrong.
    #[error("cannot parse the certificate signing request: {0}")]
    Request(String),
    /// rcgen failed to make a key or certificate.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// Which key or certificate.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A certificate does not parse.
    #[error("cannot parse the certificate: {0}")]
    Certificate(String),
}

/// The subject and subject alternative names of a certificate signing request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The common name (the user name it asks for).
    pub common_name: String,
    /// The organizations (the groups it asks for).
    pub organizations: Vec<String>,
    /// DNS names among the subject alternative names.
    pub dns_names: Vec<String>,
    /// IP addresses among the subject alternative names.
    pub ip_addresses: Vec<String>,
    /// Email addresses among the subject alternative names.
    pub emails: Vec<String>,
    /// URIs among the subject alternative names.
    pub uris: Vec<String>,
}

/// What a signed certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A client certificate (`client auth`); subject alternative names dropped.
    Client,
    /// A serving certificate (`server auth`) for the request's DNS names and IP addresses.
    Serving,
}

/// Signs client certificates with the cluster CA.
pub struct ClientSigner {
    ca_cert_pem: String,
    ca_key: KeyPair,
}

impl std::fmt::Debug for ClientSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSigner").finish_non_exhaustive()
    }
}

fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> SignError {
    move |source| SignError::Generate { what, source }
}

/// Client certificate settings: client auth only, valid from a little before now (clock skew)
/// for `validity`.
fn client_profile(params: &mut CertificateParams, validity: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after =
        now + time::Duration::seconds(validity.as_secs().min(i64::MAX as u64) as i64);
    params.is_ca = IsCa::ExplicitNoCa;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.subject_alt_names.clear();
    params.use_authority_key_identifier_extension = true;
}

impl ClientSigner {
    /// A signer over the CA certificate and key (PEM).
    pub fn new(ca_cert_pem: &str, ca_key_pem: &str) -> Result<ClientSigner, SignError> {
        let ca_key = KeyPair::from_pem(ca_key_pem).map_err(SignError::CaKey)?;
        Ok(ClientSigner {
            ca_cert_pem: ca_cert_pem.to_string(),
            ca_key,
        })
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, SignError> {
        Issuer::from_ca_cert_pem(&self.ca_cert_pem, &self.ca_key).map_err(SignError::CaKey)
    }

    /// Signs a PEM certificate signing request (its subject and key kept) as a client
    /// certificate for `validity`; returns the certificate PEM.
    pub fn sign_request(&self, request_pem: &str, validity: Duration) -> Result<String, SignError> {
        self.sign_request_as(request_pem, validity, Profile::Client)
    }

    /// Signs a PEM certificate signing request (its subject and key kept) as `profile` for
    /// `validity` (never past the CA's own end); returns the certificate PEM.
    pub fn sign_request_as(
        &self,
        request_pem: &str,
        validity: Duration,
        profile: Profile,
    ) -> Result<String, SignError> {
        let mut request = CertificateSigningRequestParams::from_pem(request_pem)
            .map_err(|e| SignError::Request(e.to_string()))?;
        let names = std::mem::take(&mut request.params.subject_alt_names);
        client_profile(&mut request.params, validity);
        if profile == Profile::Serving {
            request.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            request.params.subject_alt_names = names;
        }
        if let Ok(ca_end) = not_after(&self.ca_cert_pem) {
            let ca_end = time::OffsetDateTime::UNIX_EPOCH
                + time::Duration::seconds(
                    ca_end
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs().min(i64::MAX as u64) as i64),
                );
            if request.params.not_after > ca_end {
                request.params.not_after = ca_end;
            }
        }
        let cert = request
            .signed_by(&self.issuer()?)
            .map_err(generate("client certificate"))?;
        Ok(cert.pem())
    }

    /// Issues a new key and a client certificate for `user` in `groups`: (certificate PEM,
    /// key PEM).
    pub fn issue(
        &self,
        user: &str,
        groups: &[&str],
        validity: Duration,
    ) -> Result<(String, String), SignError> {
        let key = KeyPair::generate().map_err(generate("client key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = subject_name(user, groups);
        client_profile(&mut params, validity);
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(generate("client certificate"))?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

fn subject_name(user: &str, groups: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    // rcgen keeps one value per attribute type: one organization at most.
    if let Some(group) = groups.first() {
        dn.push(DnType::OrganizationName, *group);
    }
    dn.push(DnType::CommonName, user);
    dn
}

/// A new key and a PEM certificate signing request for `user` in `group` (what `skiff agent`
/// sends): (request PEM, key PEM).
pub fn new_request(user: &str, group: &str) -> Result<(String, String), SignError> {
    let key = KeyPair::generate().map_err(generate("node key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = subject_name(user, &[group]);
    let request = params
        .serialize_request(&key)
        .map_err(generate("certificate signing request"))?;
    let pem = request
        .pem()
        .map_err(generate("certificate signing request"))?;
    Ok((pem, key.serialize_pem()))
}

fn pem_der(pem: &str, label: &str) -> Result<Vec<u8>, String> {
    let (_, parsed) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    if parsed.label != label {
        return Err(format!("expected a PEM {label}, found {}", parsed.label));
    }
    Ok(parsed.contents)
}

/// The subject of a PEM certificate signing request whose signature checks out.
pub fn request_subject(request_pem: &str) -> Result<Subject, SignError> {
    use x509_parser::prelude::FromDer as _;
    let der = pem_der(request_pem, "CERTIFICATE REQUEST").map_err(SignError::Request)?;
    let (_, request) = x509_parser::certification_request::X509CertificationRequest::from_der(&der)
        .map_err(|e| SignError::Request(e.to_string()))?;
    request
        .verify_signature()
        .map_err(|e| SignError::Request(format!("bad signature: {e}")))?;
    let subject = &request.certification_request_info.subject;
    let mut names = Subject::default();
    for extension in request.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = extension {
            for name in &san.general_names {
                use x509_parser::extensions::GeneralName;
                match name {
                    GeneralName::DNSName(n) => names.dns_names.push(n.to_string()),
                    GeneralName::RFC822Name(n) => names.emails.push(n.to_string()),
                    GeneralName::URI(n) => names.uris.push(n.to_string()),
                    GeneralName::IPAddress(ip) => names.ip_addresses.push(format!("{ip:?}")),
                    _ => {}
                }
            }
        }
    }
    Ok(Subject {
        dns_names: names.dns_names,
        ip_addresses: names.ip_addresses,
        emails: names.emails,
        uris: names.uris,
        common_name: subject
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .next()
            .unwrap_or_default()
            .to_string(),
        organizations: subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .map(str::to_string)
            .collect(),
    })
}

/// Who a client certificate (DER, already verified against the CA) names: CN the user, each
/// O a group, plus `system:authenticated`.
pub fn identity_of(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let username = subject
        .iter_common_name()
        .filter_map(|a| a.as_str().ok())
        .next()?
        .to_string();
    if username.is_empty() {
        return None;
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    groups.push("system:authenticated".into());
    Some(Identity { username, groups })
}

/// When a PEM certificate stops being valid.
pub fn not_after(cert_pem: &str) -> Result<SystemTime, SignError> {
    let der = pem_der(cert_pem, "CERTIFICATE").map_err(SignError::Certificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| SignError::Certificate(e.to_string()))?;
    let seconds = cert.validity().not_after.timestamp();
    let seconds = u64::try_from(seconds)
        .map_err(|_| SignError::Certificate("the certificate expired before 1970".into()))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn a_node_request_is_signed_with_its_subject_and_read_back_as_the_node() {
        let (ca_pem, ca_key) = ca();
        let signer = ClientSigner::new(&ca_pem, &ca_key).unwrap();
        let (request, _key) = new_request("system:node:n1", "system:nodes").unwrap();
        assert_eq!(
            request_subject(&request).unwrap(),
            Subject {
                common_name: "system:node:n1".into(),
                organizations: vec!["system:nodes".into()],
                ..Subject::default()
            }
        );
        let cert = signer.sign_request(&request, DEFAULT_VALIDITY).unwrap();
        let der = pem_der(&cert, "CERTIFICATE").unwrap();
        let identity = identity_of(&der).unwrap();
        assert_eq!(identity.username, "system:node:n1");
        assert_eq!(identity.groups, ["system:nodes", "system:authenticated"]);
        let left = not_after(&cert)
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left > Duration::from_secs(364 * 24 * 3600), "{left:?}");
    }

    #[test]
    fn issued_certificates_name_the_user_and_group() {
        let (ca_pem, ca_key) = ca();
        let signer = ClientSigner::new(&ca_pem, &ca_key).unwrap();
        let (cert, key) = signer
            .issue(
                "system:node:main",
                &["system:nodes"],
                Duration::from_secs(3600),
            )
            .unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let identity = identity_of(&pem_der(&cert, "CERTIFICATE").unwrap()).unwrap();
        assert_eq!(identity.username, "system:node:main");
        assert!(identity.groups.contains(&"system:nodes".to_string()));
    }

    #[test]
    fn garbage_is_not_a_request() {
        assert!(request_subject("not pem").is_err());
        let (ca_pem, _) = ca();
        assert!(request_subject(&ca_pem).is_err());
    }
}
