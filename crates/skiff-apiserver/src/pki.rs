//! The server's TLS material and credentials, kept in `DATA_DIR/server/`: a CA, a serving
//! certificate signed by it, the admin bearer token (`token`) and the node join token
//! (`node-token`, a bootstrap token `ID.SECRET` that lets a node ask for its client
//! certificate and nothing else). Generated on first start, reused afterwards (the serving
//! certificate is re-issued when the names it must cover change; a join token equal to the
//! admin token, as older versions wrote, is replaced). The server asks clients for a
//! certificate and accepts those the CA signed; clients without one use a bearer token.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS material or credentials could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: &'static str,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// A stored PEM file does not parse; delete it to have it generated again.
    #[error("cannot parse {path}: {reason}; delete it to generate a new one")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the certificate and key.
    #[error("cannot configure TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// The PEM-encoded material of one server.
#[derive(Debug, Clone)]
pub struct ServerPki {
    /// The CA certificate clients trust.
    pub ca_pem: String,
    /// The serving certificate.
    pub cert_pem: String,
    /// The serving key.
    pub key_pem: String,
    /// The admin bearer token.
    pub admin_token: String,
    /// The node join token (`ID.SECRET`).
    pub join_token: String,
    /// The CA key.
    pub ca_key_pem: String,
    /// The client certificate the server presents to node agents' APIs
    /// (`kube-apiserver-kubelet-client` in `system:masters`, as kube-apiserver's
    /// `--kubelet-client-certificate`).
    pub kubelet_client_cert_pem: String,
    /// Its key.
    pub kubelet_client_key_pem: String,
    /// The directory the files live in.
    pub dir: PathBuf,
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `contents` to `path` atomically (temp file + rename) with mode `mode`.
pub fn write_private(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let io = |action, source| PkiError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| io("write", e))?;
    file.sync_all().map_err(|e| io("sync", e))?;
    fs::rename(&tmp, path).map_err(|e| io("rename", e))
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    crate::object::random_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The id of a bootstrap token `ID.SECRET` (6 and 16 characters of `[a-z0-9]`), if `token`
/// is one.
pub fn join_token_id(token: &str) -> Option<&str> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some(id)
}

/// Who the join token is: `system:bootstrap:ID` in `system:bootstrappers`.
pub fn join_identity(token: &str) -> Option<crate::state::Identity> {
    let id = join_token_id(token)?;
    Some(crate::state::Identity {
        username: format!("system:bootstrap:{id}"),
        groups: vec![
            crate::certificates::BOOTSTRAPPERS.into(),
            "system:authenticated".into(),
        ],
    })
}

/// Bumped when the serving certificate's profile changes, so stored ones are re-issued.
const SERVING_PROFILE: &str = "profile 2";

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "skiff-server-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    params
}

fn serving_cert(sans: &[String], ca_key: &KeyPair) -> Result<(String, String), PkiError> {
    let mut params = CertificateParams::new(sans.to_vec()).map_err(gen_err("serving names"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "skiff-apiserver");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // Strict verifiers (OpenSSL's X509_STRICT, as urllib3 2 and Python 3.13 use) want it.
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let key = KeyPair::generate().map_err(gen_err("serving key"))?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(gen_err("serving certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The user name of the server's client certificate for node agents.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The group of the server's client certificate for node agents (every permission).
pub const MASTERS: &str = "system:masters";

fn kubelet_client_cert(ca_key: &KeyPair) -> Result<(String, String), PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, KUBELET_CLIENT_USER);
    dn.push(DnType::OrganizationName, MASTERS);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.not_after = rcgen::date_time_ymd(2125, 1, 1);
    let key = KeyPair::generate().map_err(gen_err("kubelet client key"))?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(gen_err("kubelet client certificate"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The subject alternative names of `params`, as strings, to compare with the wanted ones.
fn san_strings(sans: &[SanType]) -> Vec<String> {
    let mut out: Vec<String> = sans
        .iter()
        .filter_map(|san| match san {
            SanType::DnsName(name) => Some(name.as_str().to_string()),
            SanType::IpAddress(ip) => Some(ip.to_string()),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

impl ServerPki {
    /// Loads the material from `dir`, generating what is missing. `sans` are the names the
    /// serving certificate must cover (DNS names or IP addresses); a stored certificate made
    /// for other names is re-issued by the same CA.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<ServerPki, PkiError> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let ca_cert_path = dir.join("ca.crt");
        let ca_key_path = dir.join("ca.key");
        let (ca_pem, ca_key) = match (read(&ca_cert_path)?, read(&ca_key_path)?) {
            (Some(cert), Some(key)) => {
                let key = KeyPair::from_pem(&key).map_err(|e| PkiError::Parse {
                    path: ca_key_path.clone(),
                    reason: e.to_string(),
                })?;
                (cert, key)
            }
            _ => {
                let key = KeyPair::generate().map_err(gen_err("CA key"))?;
                let cert = ca_params().self_signed(&key).map_err(gen_err("CA"))?;
                write_private(&ca_key_path, &key.serialize_pem(), 0o600)?;
                write_private(&ca_cert_path, &cert.pem(), 0o644)?;
                (cert.pem(), key)
            }
        };

        let cert_path = dir.join("serving.crt");
        let key_path = dir.join("serving.key");
        let names_path = dir.join("serving.names");
        let mut wanted = san_strings(
            &CertificateParams::new(sans.to_vec())
                .map_err(gen_err("serving names"))?
                .subject_alt_names,
        );
        wanted.dedup();
        // What the stored certificate was made for: its profile version and its names.
        let made_for = format!("{SERVING_PROFILE}\n{}", wanted.join("\n"));
        let stored = read(&names_path)?.unwrap_or_default();
        let (cert_pem, key_pem) = match (read(&cert_path)?, read(&key_path)?) {
            (Some(cert), Some(key)) if stored == made_for => (cert, key),
            _ => {
                let (cert, key) = serving_cert(&wanted, &ca_key)?;
                write_private(&key_path, &key, 0o600)?;
                write_private(&cert_path, &cert, 0o644)?;
                write_private(&names_path, &made_for, 0o644)?;
                (cert, key)
            }
        };

        // The client certificate for node agents, issued again when the CA is not the one it
        // was made by (another server's CA adopted from the store).
        let client_cert_path = dir.join("kubelet-client.crt");
        let client_key_path = dir.join("kubelet-client.key");
        let client_ca_path = dir.join("kubelet-client.ca");
        let (kubelet_client_cert_pem, kubelet_client_key_pem) = match (
            read(&client_cert_path)?,
            read(&client_key_path)?,
            read(&client_ca_path)?,
        ) {
            (Some(cert), Some(key), Some(made_by)) if made_by == ca_pem => (cert, key),
            _ => {
                let (cert, key) = kubelet_client_cert(&ca_key)?;
                write_private(&client_key_path, &key, 0o600)?;
                write_private(&client_cert_path, &cert, 0o644)?;
                write_private(&client_ca_path, &ca_pem, 0o644)?;
                (cert, key)
            }
        };

        let token_path = dir.join("token");
        let admin_token = match read(&token_path)? {
            Some(token) if !token.trim().is_empty() => token.trim().to_string(),
            _ => {
                let token = random_hex(32);
                write_private(&token_path, &token, 0o600)?;
                token
            }
        };

        let join_path = dir.join("node-token");
        let join_token = match read(&join_path)? {
            Some(token) if join_token_id(token.trim()).is_some() => token.trim().to_string(),
            _ => {
                let token = format!("{}.{}", random_hex(3), random_hex(8));
                write_private(&join_path, &format!("{token}\n"), 0o600)?;
                token
            }
        };

        Ok(ServerPki {
            ca_key_pem: ca_key.serialize_pem(),
            ca_pem,
            cert_pem,
            key_pem,
            admin_token,
            join_token,
            kubelet_client_cert_pem,
            kubelet_client_key_pem,
            dir: dir.to_path_buf(),
        })
    }

    /// The rustls configuration serving HTTP/2 and HTTP/1.1 with the serving certificate.
    pub fn rustls_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| PkiError::Parse {
                    path: self.dir.join("serving.crt"),
                    reason: e.to_string(),
                })?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| {
            PkiError::Parse {
                path: self.dir.join("serving.key"),
                reason: e.to_string(),
            }
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| PkiError::Parse {
                path: self.dir.join("ca.crt"),
                reason: e.to_string(),
            })?;
            roots.add(ca)?;
        }
        // Client certificates are optional: clients without one authenticate with a token.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Parse {
            path: self.dir.join("ca.crt"),
            reason: e.to_string(),
        })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The signer of client certificates (node certificates) with this CA.
    pub fn client_signer(&self) -> Result<crate::certificates::ClientSigner, PkiError> {
        crate::certificates::ClientSigner::new(&self.ca_pem, &self.ca_key_pem).map_err(|e| {
            PkiError::Parse {
                path: self.dir.join("ca.key"),
                reason: e.to_string(),
            }
        })
    }

    /// A kubeconfig for the admin: the CA, `server` (e.g. `https://127.0.0.1:6443`) and the
    /// admin token.
    pub fn admin_kubeconfig(&self, server: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: admin\n    namespace: default\ncurrent-context: skiff\nusers:\n- name: admin\n  user:\n    token: {token}\npreferences: {{}}\n",
            token = self.admin_token
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn material_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = ServerPki::load_or_create(dir.path(), &sans).unwrap();
        let second = ServerPki::load_or_create(dir.path(), &sans).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.cert_pem, second.cert_pem);
        assert_eq!(first.admin_token, second.admin_token);
        assert_eq!(first.admin_token.len(), 64);
        assert_eq!(first.join_token, second.join_token);
        assert_ne!(first.join_token, first.admin_token);
        let identity = join_identity(&first.join_token).unwrap();
        assert!(identity.username.starts_with("system:bootstrap:"));
        assert_eq!(identity.groups[0], "system:bootstrappers");
        assert!(join_token_id(&first.admin_token).is_none());
        // A join token that was the admin token (older versions) is replaced.
        std::fs::write(dir.path().join("node-token"), &first.admin_token).unwrap();
        let upgraded = ServerPki::load_or_create(dir.path(), &sans).unwrap();
        assert!(join_token_id(&upgraded.join_token).is_some());
        first.rustls_config().unwrap();

        let more = vec![sans[0].clone(), sans[1].clone(), "10.0.0.1".to_string()];
        let third = ServerPki::load_or_create(dir.path(), &more).unwrap();
        assert_eq!(first.ca_pem, third.ca_pem);
        assert_ne!(first.cert_pem, third.cert_pem);

        // The client certificate for node agents: the same while the CA stays, issued again
        // by a new CA.
        assert_eq!(first.kubelet_client_cert_pem, third.kubelet_client_cert_pem);
        let identity = {
            let (_, pem) =
                x509_parser::pem::parse_x509_pem(first.kubelet_client_cert_pem.as_bytes()).unwrap();
            crate::certificates::signer::identity_of(&pem.contents).unwrap()
        };
        assert_eq!(identity.username, KUBELET_CLIENT_USER);
        assert_eq!(identity.groups[0], MASTERS);
        crate::handlers::node_proxy::client_config(
            &first.kubelet_client_cert_pem,
            &first.kubelet_client_key_pem,
        )
        .unwrap();
        let other = tempfile::tempdir().unwrap();
        let foreign = ServerPki::load_or_create(other.path(), &sans).unwrap();
        for name in ["ca.crt", "ca.key"] {
            std::fs::copy(other.path().join(name), dir.path().join(name)).unwrap();
        }
        let adopted = ServerPki::load_or_create(dir.path(), &more).unwrap();
        assert_eq!(adopted.ca_pem, foreign.ca_pem);
        assert_ne!(
            adopted.kubelet_client_cert_pem,
            first.kubelet_client_cert_pem
        );

        let kubeconfig = first.admin_kubeconfig("https://127.0.0.1:6443");
        assert!(kubeconfig.contains("server: https://127.0.0.1:6443"));
        assert!(kubeconfig.contains(&first.admin_token));
    }
}
