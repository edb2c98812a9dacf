//! A node's own credentials: a client certificate for `system:node:NAME` in `system:nodes`,
//! kept in `DATA_DIR/node-credentials/NAME.crt` and `NAME.key` and reused across restarts.
//! `skiff agent` gets it the Kubernetes TLS-bootstrap way: with the join token (which may do
//! nothing else) it sends a CertificateSigningRequest for the
//! `kubernetes.io/kube-apiserver-client-kubelet` signer and waits for the certificate the
//! server signs; `skiff server` mints one for its embedded agent directly from the CA. Both
//! start again when the files are missing or the certificate expires within
//! [`RENEW_BEFORE`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use base64::Engine as _;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use kube::api::PostParams;
use skiff_apiserver::certificates::{self, KUBELET_CLIENT_SIGNER, NODES, signer};

/// A certificate expiring sooner than this is replaced.
pub const RENEW_BEFORE: Duration = Duration::from_secs(600);
/// How long `skiff agent` waits for its request to be signed.
const SIGNING_DEADLINE: Duration = Duration::from_secs(300);

/// A node's client certificate and key (PEM).
#[derive(Clone)]
pub struct NodeCredentials {
    /// The certificate.
    pub cert_pem: String,
    /// The key.
    pub key_pem: String,
}

impl std::fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCredentials").finish_non_exhaustive()
    }
}

impl NodeCredentials {
    /// Puts the certificate and key into `config` (replacing any token).
    pub fn apply(&self, config: &mut kube::Config) {
        let b64 = base64::engine::general_purpose::STANDARD;
        config.auth_info.token = None;
        config.auth_info.client_certificate_data = Some(b64.encode(self.cert_pem.as_bytes()));
        config.auth_info.client_key_data = Some(b64.encode(self.key_pem.as_bytes()).into());
    }
}

/// Removes every stored node certificate of `data_dir` (they chain to a CA the cluster no
/// longer uses); the next start issues new ones.
pub fn forget(data_dir: &Path) -> anyhow::Result<()> {
    let dir = data_dir.join("node-credentials");
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {
            tracing::warn!(dir = %dir.display(), "removed node certificates of a CA the cluster no longer uses");
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot remove {}", dir.display())),
    }
}

fn paths(data_dir: &Path, node: &str) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("node-credentials");
    (
        dir.join(format!("{node}.crt")),
        dir.join(format!("{node}.key")),
    )
}

/// The user name of node `node`.
pub fn node_user(node: &str) -> String {
    format!("{}{node}", certificates::NODE_USER_PREFIX)
}

/// The stored credentials of `node`, if they exist and stay valid for [`RENEW_BEFORE`].
pub fn load(data_dir: &Path, node: &str) -> Option<NodeCredentials> {
    let (cert_path, key_path) = paths(data_dir, node);
    let cert_pem = std::fs::read_to_string(&cert_path).ok()?;
    let key_pem = std::fs::read_to_string(&key_path).ok()?;
    match signer::not_after(&cert_pem) {
        Ok(end) if end > SystemTime::now() + RENEW_BEFORE => {
            Some(NodeCredentials { cert_pem, key_pem })
        }
        Ok(_) => {
            tracing::info!(path = %cert_path.display(), "the node certificate expires: getting a new one");
            None
        }
        Err(err) => {
            tracing::warn!(path = %cert_path.display(), error = %err, "unreadable node certificate: getting a new one");
            None
        }
    }
}

/// Stores the credentials of `node` (the key readable by root only).
pub fn store(data_dir: &Path, node: &str, credentials: &NodeCredentials) -> anyhow::Result<()> {
    let (cert_path, key_path) = paths(data_dir, node);
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    skiff_apiserver::pki::write_private(&key_path, &credentials.key_pem, 0o600)
        .context("cannot store the node key")?;
    skiff_apiserver::pki::write_private(&cert_path, &credentials.cert_pem, 0o644)
        .context("cannot store the node certificate")?;
    Ok(())
}

/// The embedded agent's credentials: stored ones, or new ones signed by `ca` directly.
pub fn embedded(
    data_dir: &Path,
    node: &str,
    ca: &certificates::ClientSigner,
) -> anyhow::Result<NodeCredentials> {
    if let Some(credentials) = load(data_dir, node) {
        return Ok(credentials);
    }
    let (cert_pem, key_pem) = ca
        .issue(&node_user(node), &[NODES], signer::DEFAULT_VALIDITY)
        .context("cannot issue the node certificate")?;
    let credentials = NodeCredentials { cert_pem, key_pem };
    store(data_dir, node, &credentials)?;
    Ok(credentials)
}

/// `skiff agent`'s credentials: stored ones, or new ones from a CertificateSigningRequest
/// sent with `bootstrap` (a client authenticated by the join token).
pub async fn bootstrap(
    data_dir: &Path,
    node: &str,
    bootstrap: kube::Client,
) -> anyhow::Result<NodeCredentials> {
    if let Some(credentials) = load(data_dir, node) {
        tracing::info!(%node, "using the stored node certificate");
        return Ok(credentials);
    }
    let (request_pem, key_pem) = signer::new_request(&node_user(node), NODES)
        .context("cannot make the node's certificate signing request")?;
    let csr: CertificateSigningRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "node-csr-"},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(request_pem.as_bytes()),
            "signerName": KUBELET_CLIENT_SIGNER,
            "usages": ["digital signature", "client auth"],
        },
    }))
    .context("cannot build the CertificateSigningRequest")?;
    let api: Api<CertificateSigningRequest> = Api::all(bootstrap);
    let deadline = Instant::now() + SIGNING_DEADLINE;
    let mut delay = Duration::from_millis(200);
    let created = loop {
        match api.create(&PostParams::default(), &csr).await {
            Ok(created) => break created,
            Err(err) if Instant::now() < deadline => {
                tracing::warn!(error = %err, "cannot send the node's certificate signing request; retrying");
            }
            Err(err) => {
                return Err(err).context("cannot send the node's certificate signing request");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    };
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(%node, csr = %name, "sent the node's certificate signing request");
    let mut current = created;
    let mut delay = Duration::from_millis(200);
    loop {
        let status = current.status.as_ref();
        if let Some(cert) = status.and_then(|s| s.certificate.as_ref())
            && !cert.0.is_empty()
        {
            let cert_pem = String::from_utf8(cert.0.clone())
                .context("the signed node certificate is not PEM")?;
            let credentials = NodeCredentials { cert_pem, key_pem };
            store(data_dir, node, &credentials)?;
            tracing::info!(%node, csr = %name, "got the node certificate");
            return Ok(credentials);
        }
        if let Some(refused) = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
        {
            anyhow::bail!(
                "the certificate signing request {name} was {}: {}",
                refused.type_.to_lowercase(),
                refused.message.clone().unwrap_or_default()
            );
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the certificate signing request {name} was not signed within {SIGNING_DEADLINE:?}; is --token-file the server's node-token?"
        );
        tracing::info!(csr = %name, "waiting for the node's certificate to be signed");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
        match api.get(&name).await {
            Ok(csr) => current = csr,
            Err(err) => {
                tracing::warn!(error = %err, csr = %name, "cannot read the certificate signing request")
            }
        }
    }
}
