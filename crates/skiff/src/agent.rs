//! `skiff agent`: the node agent joining a cluster through its API server (and the hidden
//! `skiff pause`, the pod sandbox's infra process). `skiff server` runs the same agent
//! embedded, for its own node, with [`embedded`]. The join token only gets the node its
//! client certificate ([`crate::node_credentials`]); the agent talks to the API with that.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

/// Join a cluster as a node: register the Node, run its pods.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The API server's URL (`https://HOST:6443`).
    #[arg(long, value_name = "URL")]
    server: String,
    /// A file holding the node's join token (`DATA_DIR/server/node-token` on the server). It
    /// only lets the node ask for its client certificate (kept in
    /// `DATA_DIR/node-credentials/`).
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// The CA certificate of the API server (`DATA_DIR/server/ca.crt` on the server); without
    /// it the server's certificate is not verified, and the node API cannot verify the client
    /// certificate the API server presents to it (so logs, exec, attach and port-forward
    /// through the API server are refused).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// The Node's name (default: this host's name).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// Where the agent keeps containers, images and its own state.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// The node's address as the cluster reaches it (its InternalIP; the node API listens
    /// there).
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    node_ip: IpAddr,
    /// The node API's HTTPS port (0 picks a free one).
    #[arg(long, value_name = "PORT", default_value_t = 10250)]
    port: u16,
    /// A registry reached over plain HTTP (loopback registries always are).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<String>,
    /// How pods are networked: `bridge` (an address per pod on the node bridge `skiff0`,
    /// services through nftables, cluster DNS) or `none` (loopback only; nothing is added to
    /// the node's network).
    #[arg(long, value_enum, default_value_t = PodNetworkMode::Bridge)]
    pod_network: PodNetworkMode,
    /// The port of the node's built-in Ingress proxy for HTTP (0 with the HTTPS one 0 too:
    /// no Ingress proxy on this node).
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    ingress_http_port: u16,
    /// The port of the node's built-in Ingress proxy for HTTPS.
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    ingress_https_port: u16,
    /// How often the agent looks for containers and directories of pods the API no longer
    /// has, between its re-lists of the node's pods (a duration such as `30s`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = crate::server::parse_duration)]
    orphan_sweep_interval: std::time::Duration,
}

/// The node's Ingress proxy ports (HTTP, HTTPS).
#[derive(Debug, Clone, Copy)]
pub struct IngressPorts(pub u16, pub u16);

/// How pods are networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PodNetworkMode {
    /// An address per pod on the node bridge, services and cluster DNS.
    Bridge,
    /// Loopback only.
    None,
}

impl AgentArgs {
    /// Runs the agent until SIGINT or SIGTERM.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        crate::server::init_tracing();
        skiff_sys::process::limit_malloc_arenas(skiff_agent::MALLOC_ARENAS);
        let token = std::fs::read_to_string(&self.token_file)
            .with_context(|| format!("cannot read the token file {}", self.token_file.display()))?
            .trim()
            .to_string();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("skiff-agent")
            .worker_threads(skiff_agent::WORKER_THREADS)
            .build()
            .context("cannot start the agent's async runtime")?;
        runtime.block_on(async move {
            let mut config = kube::Config::new(
                self.server
                    .parse()
                    .with_context(|| format!("invalid server URL {}", self.server))?,
            );
            let client_ca_pem = match &self.ca_file {
                Some(ca) => {
                    let pem = std::fs::read(ca)
                        .with_context(|| format!("cannot read {}", ca.display()))?;
                    config.root_cert = Some(pem_to_der(&pem)?);
                    Some(String::from_utf8_lossy(&pem).into_owned())
                }
                None => {
                    tracing::warn!(
                        "no --ca-file: the API server's certificate is not verified, and the node API cannot verify the API server's client certificate (pod logs, exec, attach and port-forward through the API server will be refused)"
                    );
                    config.accept_invalid_certs = true;
                    None
                }
            };
            let node_name = self
                .node_name
                .clone()
                .or_else(crate::server::hostname)
                .unwrap_or_else(|| "skiff-node".into());
            let mut bootstrap_config = config.clone();
            bootstrap_config.auth_info.token = Some(token.clone().into());
            let bootstrap = kube::Client::try_from(bootstrap_config)
                .context("cannot build the bootstrap API client")?;
            let credentials =
                crate::node_credentials::bootstrap(&self.data_dir, &node_name, bootstrap)
                    .await
                    .context("cannot get the node's client certificate")?;
            credentials.apply(&mut config);
            let client = skiff_agent::apiclient::build(config)?;
            let agent = skiff_agent::AgentConfig {
                node_name,
                data_dir: self.data_dir.clone(),
                program: std::env::current_exe().context("cannot locate the skiff binary")?,
                node_ip: self.node_ip,
                api_bind: self.node_ip,
                api_port: self.port,
                client_ca_pem,
                insecure_registries: self.insecure_registries.clone(),
                pod_network: self.pod_network == PodNetworkMode::Bridge,
                ingress_http_port: self.ingress_http_port,
                ingress_https_port: self.ingress_https_port,
                orphan_sweep_interval: self.orphan_sweep_interval,
            };
            skiff_agent::run(agent, client, crate::server::shutdown_signal())
                .await
                .context("the node agent failed")
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

fn pem_to_der(pem: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut current = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-----BEGIN") {
            inside = true;
            current.clear();
        } else if line.starts_with("-----END") {
            inside = false;
            use base64::Engine as _;
            out.push(
                base64::engine::general_purpose::STANDARD
                    .decode(current.trim())
                    .context("invalid PEM in the CA file")?,
            );
        } else if inside {
            current.push_str(line.trim());
        }
    }
    anyhow::ensure!(!out.is_empty(), "no certificate in the CA file");
    Ok(out)
}

/// The agent `skiff server` runs for its own node (its client comes from
/// [`crate::node_credentials::embedded`]).
pub fn embedded(
    data_dir: &Path,
    node_name: String,
    node_ip: IpAddr,
    port: u16,
    client_ca_pem: String,
    pod_network: PodNetworkMode,
    ingress: IngressPorts,
) -> anyhow::Result<skiff_agent::AgentConfig> {
    Ok(skiff_agent::AgentConfig {
        node_name,
        data_dir: data_dir.to_path_buf(),
        program: std::env::current_exe().context("cannot locate the skiff binary")?,
        node_ip,
        api_bind: node_ip,
        api_port: port,
        client_ca_pem: Some(client_ca_pem),
        insecure_registries: std::env::var("SKIFF_INSECURE_REGISTRIES")
            .map(|v| {
                v.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        pod_network: pod_network == PodNetworkMode::Bridge,
        ingress_http_port: ingress.0,
        ingress_https_port: ingress.1,
        orphan_sweep_interval: skiff_agent::DEFAULT_ORPHAN_SWEEP_INTERVAL,
    })
}

/// The pod sandbox's infra process (internal).
#[derive(Debug, clap::Args)]
pub struct PauseArgs {}

impl PauseArgs {
    /// Sleeps until SIGTERM or SIGINT, reaping children.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        skiff_agent::pause::run().context("pause")?;
        Ok(ExitCode::SUCCESS)
    }
}
