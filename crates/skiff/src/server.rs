//! `skiff server`: a single-node cluster's control plane in one process (the API server over
//! a store). It builds its own tokio runtime: the rest of the binary stays single-threaded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use skiff_apiserver::pki::{ServerPki, write_private};
use skiff_apiserver::{ApiServer, ServerOptions};
use skiff_store::{
    CompactionPolicy, Compactor, EtcdOptions, EtcdStore, MemoryStore, SqliteStore, Store,
};

use crate::cluster_secrets::Found;

/// Which store holds the cluster state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Embedded SQLite database in `DATA_DIR/server/state.db` (the default).
    Sqlite,
    /// An etcd v3 cluster (`--etcd-endpoints`), shared by several servers.
    Etcd,
    /// In memory only: everything is lost when the server stops (tests, demos).
    Memory,
}

/// Start a single-node cluster: the Kubernetes API server over its store.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Where the server keeps its state: `server/` holds the database, TLS material, the admin
    /// token and `admin.kubeconfig`.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/skiff")]
    data_dir: PathBuf,
    /// Which store holds the cluster state.
    #[arg(long, value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// etcd client URLs, comma-separated (with `--store etcd`).
    #[arg(long, value_name = "URL,..", value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// The key prefix of this cluster in etcd (several clusters may share one etcd).
    #[arg(long, value_name = "PREFIX", default_value = "/skiff")]
    etcd_prefix: String,
    /// The address to listen on (`0.0.0.0` for every interface).
    #[arg(long, value_name = "IP", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind_address: IpAddr,
    /// The HTTPS port of the API (0 picks a free one; the kubeconfig names the real one).
    #[arg(long, value_name = "PORT", default_value_t = 6443)]
    https_port: u16,
    /// The address the `kubernetes` Service's Endpoints name for this API server (default:
    /// the bind address, or this host's primary address when binding to every interface).
    #[arg(long, value_name = "IP")]
    pub advertise_address: Option<IpAddr>,
    /// The address range Services get their cluster IPs from.
    #[arg(long, value_name = "CIDR", default_value = skiff_apiserver::services::DEFAULT_SERVICE_CIDR)]
    pub service_cidr: String,
    /// The port range NodePort and LoadBalancer Services get their node ports from.
    #[arg(long, value_name = "FIRST-LAST", default_value = skiff_apiserver::services::DEFAULT_NODE_PORT_RANGE)]
    pub service_node_port_range: String,
    /// The pod network, split into one block per node (`spec.podCIDR`).
    #[arg(long, value_name = "CIDR", default_value = skiff_controllers::nodeipam::DEFAULT_CLUSTER_CIDR)]
    pub cluster_cidr: String,
    /// The prefix length of each node's block of `--cluster-cidr`.
    #[arg(long, value_name = "BITS", default_value_t = skiff_controllers::nodeipam::DEFAULT_NODE_CIDR_MASK_SIZE)]
    pub node_cidr_mask_size: u8,
    /// The cluster IP of the `kube-system/kube-dns` Service (inside `--service-cidr`).
    #[arg(long, value_name = "IP", default_value_t = Ipv4Addr::new(10, 43, 0, 10))]
    pub cluster_dns: Ipv4Addr,
    /// Run the control plane only, without the embedded node agent.
    #[arg(long)]
    disable_agent: bool,
    /// The name of this server's own node (default: the host's name).
    #[arg(long, value_name = "NAME")]
    node_name: Option<String>,
    /// The HTTPS port of the embedded agent's node API (0 picks a free one; the Node's status
    /// names the real one).
    #[arg(long, value_name = "PORT", default_value_t = 10250)]
    agent_port: u16,
    /// Do not run the scheduler (another one binds pods).
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controllers (another controller manager runs them).
    #[arg(long)]
    disable_controllers: bool,
    /// Run the scheduler and the controllers only while this server holds their Lease
    /// (`kube-system/kube-scheduler`, `kube-system/kube-controller-manager`), so that of the
    /// servers sharing one store only one acts (`--leader-elect=false`: always run them).
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
        default_missing_value = "true", action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long a leader's Lease is valid after its last renewal; others take it over after
    /// that (seconds, or a duration such as `15s`).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = parse_duration)]
    leader_elect_lease_duration: std::time::Duration,
    /// How long the leader keeps trying to renew its Lease before it stops leading.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    leader_elect_renew_deadline: std::time::Duration,
    /// How often candidates try to acquire, and the leader renews, a Lease.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    leader_elect_retry_period: std::time::Duration,
    /// How the embedded agent networks pods: `bridge` (an address per pod on the node bridge,
    /// services, cluster DNS) or `none` (loopback only; nothing added to the host's network).
    #[arg(long, value_enum, default_value_t = crate::agent::PodNetworkMode::Bridge)]
    pod_network: crate::agent::PodNetworkMode,
    /// How pod traffic crosses between nodes: `vxlan` (an overlay, works across routed
    /// networks) or `host-gw` (plain routes; the nodes share one L2 segment).
    #[arg(long, value_name = "BACKEND", default_value = "vxlan", value_parser = ["vxlan", "host-gw"])]
    network_backend: String,
    /// The cluster domain served by the cluster DNS.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// The issuer of service account tokens (default
    /// `https://kubernetes.default.svc.<cluster domain>`).
    #[arg(long, value_name = "URL")]
    service_account_issuer: Option<String>,
    /// The audiences the API server accepts in service account tokens (default: the issuer).
    #[arg(long, value_name = "AUDIENCE", value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// The port of the embedded agent's Ingress proxy for HTTP (both 0: none).
    #[arg(long, value_name = "PORT", default_value_t = 80)]
    ingress_http_port: u16,
    /// The port of the embedded agent's Ingress proxy for HTTPS.
    #[arg(long, value_name = "PORT", default_value_t = 443)]
    ingress_https_port: u16,
    /// How often the embedded agent looks for containers and directories of pods the API no
    /// longer has, between its re-lists of the node's pods (a duration such as `30s`).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    orphan_sweep_interval: std::time::Duration,
    /// How long a node may go without renewing its Lease before it is marked `Unknown`,
    /// tainted unreachable and its pods evicted (seconds, or a duration such as `40s`, `1m`).
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// Finished pods (Succeeded or Failed) kept before the pod garbage collector deletes the
    /// oldest (0: keep all).
    #[arg(long, value_name = "COUNT", default_value_t = skiff_controllers::podgc::DEFAULT_TERMINATED_THRESHOLD)]
    terminated_pod_gc_threshold: usize,
    /// The longest validity of a certificate the built-in signers issue for a
    /// CertificateSigningRequest (its `spec.expirationSeconds` may ask for less, never more).
    #[arg(long, value_name = "DURATION", default_value = "8760h", value_parser = parse_duration)]
    cluster_signing_duration: std::time::Duration,
    /// How often the pod garbage collector looks (seconds, or a duration such as `20s`).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_duration)]
    pod_gc_period: std::time::Duration,
    /// The `tolerationSeconds` of the `node.kubernetes.io/not-ready:NoExecute` toleration
    /// every new pod without one gets.
    #[arg(long, value_name = "SECONDS", default_value_t = skiff_apiserver::default_tolerations::DEFAULT_SECONDS)]
    default_not_ready_toleration_seconds: i64,
    /// The `tolerationSeconds` of the `node.kubernetes.io/unreachable:NoExecute` toleration
    /// every new pod without one gets.
    #[arg(long, value_name = "SECONDS", default_value_t = skiff_apiserver::default_tolerations::DEFAULT_SECONDS)]
    default_unreachable_toleration_seconds: i64,
}

impl ServerArgs {
    /// Runs the server until SIGINT or SIGTERM.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        init_tracing();
        skiff_sys::process::limit_malloc_arenas(crate::server::MALLOC_ARENAS);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("skiff-server")
            .build()
            .context("cannot start the server's async runtime")?;
        runtime.block_on(self.serve())?;
        Ok(ExitCode::SUCCESS)
    }

    async fn open_store(&self, server_dir: &Path) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self.store {
            StoreKind::Sqlite => {
                let path = server_dir.join("state.db");
                Arc::new(
                    SqliteStore::open(&path)
                        .with_context(|| format!("cannot open the store {}", path.display()))?,
                )
            }
            StoreKind::Memory => Arc::new(MemoryStore::new()),
            StoreKind::Etcd => {
                if self.etcd_endpoints.is_empty() {
                    anyhow::bail!("--store etcd needs --etcd-endpoints URL[,URL...]");
                }
                let options = EtcdOptions::new(self.etcd_endpoints.clone())
                    .with_prefix(self.etcd_prefix.clone());
                Arc::new(EtcdStore::connect(options).await.with_context(|| {
                    format!(
                        "cannot connect to etcd at {}",
                        self.etcd_endpoints.join(",")
                    )
                })?)
            }
        })
    }

    async fn serve(self) -> anyhow::Result<()> {
        let server_dir = self.data_dir.join("server");
        std::fs::create_dir_all(&server_dir)
            .with_context(|| format!("cannot create {}", server_dir.display()))?;
        let identity = leader_identity(
            &server_dir,
            &self
                .node_name
                .clone()
                .or_else(hostname)
                .unwrap_or_else(|| "skiff-server".to_string()),
        )?;
        let election = |lock: &str| {
            self.leader_elect
                .then(|| skiff_controllers::leader::LeaderElectionConfig {
                    lease_duration: self.leader_elect_lease_duration,
                    renew_deadline: self.leader_elect_renew_deadline,
                    retry_period: self.leader_elect_retry_period,
                    ..skiff_controllers::leader::LeaderElectionConfig::new(lock, &identity)
                })
        };
        if let Some(config) = election(skiff_controllers::leader::SCHEDULER_LOCK) {
            config
                .validate()
                .context("invalid --leader-elect-* flags")?;
        }
        let store = self.open_store(&server_dir).await?;
        let _compactor = Compactor::spawn(Arc::clone(&store), CompactionPolicy::default());

        let service_ranges = self.service_ranges()?;
        let mut serving_names = self.serving_names();
        // Pods reach the server at the `kubernetes` Service's cluster IP.
        if let Some(ip) = service_ranges.kubernetes_ip() {
            serving_names.push(ip.to_string());
        }
        let issuer = self
            .service_account_issuer
            .clone()
            .unwrap_or_else(|| format!("https://kubernetes.default.svc.{}", self.cluster_domain));
        let audiences = if self.api_audiences.is_empty() {
            vec![issuer.clone()]
        } else {
            self.api_audiences.clone()
        };
        // The CA, signing key and tokens are the cluster's, shared by every server of the
        // store: adopted from it, or made here and published by the first server.
        let found = crate::cluster_secrets::adopt(store.as_ref(), &server_dir).await?;
        let mut replaced_ca = found == Found::Adopted { replaced_ca: true };
        let load = || -> anyhow::Result<_> {
            let pki = ServerPki::load_or_create(&server_dir, &serving_names)
                .context("cannot prepare the server's TLS material")?;
            let signer = skiff_apiserver::serviceaccount::TokenSigner::load_or_create(
                &server_dir,
                &issuer,
                audiences.clone(),
            )
            .context("cannot prepare the service account signing key")?;
            Ok((pki, signer))
        };
        let (mut pki, mut token_signer) = load()?;
        if found == Found::Nothing
            && !crate::cluster_secrets::publish(store.as_ref(), &server_dir).await?
        {
            // Another server published first: theirs is the cluster's.
            replaced_ca |= crate::cluster_secrets::adopt(store.as_ref(), &server_dir).await?
                == Found::Adopted { replaced_ca: true };
            (pki, token_signer) = load()?;
        }
        if replaced_ca {
            // The embedded agent's certificate came from the CA this server had before.
            crate::node_credentials::forget(&self.data_dir)?;
        }
        let tls = pki.rustls_config()?;
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::new(self.bind_address, self.https_port))
                .await
                .with_context(|| {
                    format!("cannot listen on {}:{}", self.bind_address, self.https_port)
                })?;
        let port = listener.local_addr()?.port();
        let client_host = if self.bind_address.is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.bind_address
        };
        let address = SocketAddr::new(client_host, port);
        let url = format!("https://{address}");
        let advertise = self.advertise_address.unwrap_or_else(|| {
            if self.bind_address.is_unspecified() {
                primary_address().unwrap_or(client_host)
            } else {
                self.bind_address
            }
        });

        let options = ServerOptions {
            server_address: address.to_string(),
            skiff_version: env!("CARGO_PKG_VERSION").to_string(),
            // The garbage collector below runs: foreground and orphan deletes may wait for it.
            garbage_collector: !self.disable_controllers,
            namespace_controller: !self.disable_controllers,
            // The server presents its kubelet client certificate (system:masters) to node
            // agents' APIs, which verify it against the cluster CA.
            kubelet_client: Some(
                skiff_apiserver::handlers::node_proxy::client_config(
                    &pki.kubelet_client_cert_pem,
                    &pki.kubelet_client_key_pem,
                )
                .context("cannot prepare the kubelet client certificate")?,
            ),
            csr_signer: Some(Arc::new(
                pki.client_signer()
                    .context("cannot prepare the node certificate signer")?,
            )),
            cluster_signing_duration: self.cluster_signing_duration,
            service_ranges,
            default_services: Some(skiff_apiserver::services::DefaultServices {
                advertise: SocketAddr::new(advertise, port),
                cluster_dns: Some(self.cluster_dns),
            }),
            token_signer: Some(Arc::new(token_signer)),
            // Without the ServiceAccount controller no `default` ServiceAccount would exist
            // and every pod would be refused.
            service_account_admission: !self.disable_controllers,
            default_toleration_seconds: Some(
                skiff_apiserver::default_tolerations::DefaultTolerationSeconds {
                    not_ready: self.default_not_ready_toleration_seconds,
                    unreachable: self.default_unreachable_toleration_seconds,
                },
            ),
            ..ServerOptions::default()
        };
        let server = ApiServer::new(Arc::clone(&store), options, &pki.admin_token)
            .await
            .context("cannot start the API server")?;

        let kubeconfig = server_dir.join("admin.kubeconfig");
        write_private(&kubeconfig, &pki.admin_kubeconfig(&url), 0o600)
            .context("cannot write the admin kubeconfig")?;
        // The join token of `skiff agent --token-file` (`node-token`, written by the PKI): it
        // only lets a node ask for its client certificate.
        let join = skiff_apiserver::pki::join_identity(&pki.join_token)
            .context("the node join token is malformed")?;
        server.state().add_token(&pki.join_token, join);
        tracing::info!(%url, store = ?self.store, "API server listening");
        println!("skiff server: listening on {url}");
        println!("skiff server: kubeconfig {}", kubeconfig.display());

        // The scheduler and the controllers reach the cluster only through the API, with the
        // admin credentials, exactly as they would from another process; their watches retry
        // until the listener below answers.
        let kubeconfig_doc = kube::config::Kubeconfig::read_from(&kubeconfig)
            .context("cannot read the admin kubeconfig")?;
        let mut client_config =
            kube::Config::from_custom_kubeconfig(kubeconfig_doc, &Default::default())
                .await
                .context("cannot load the admin kubeconfig")?;
        let mut node_base = client_config.clone();
        skiff_agent::apiclient::set_user_agent(&mut node_base, "kubelet");
        // Their writes are recorded in managedFields under kube's names for the components.
        skiff_agent::apiclient::set_user_agent(&mut client_config, "kube-controller-manager");
        let client =
            kube::Client::try_from(client_config).context("cannot build the API client")?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        };
        tokio::spawn(crate::cluster_network::publish(
            client.clone(),
            crate::cluster_network::Settings {
                cluster_cidr: self.cluster_cidr.clone(),
                service_cidr: self.service_cidr.clone(),
                cluster_dns: self.cluster_dns.to_string(),
                cluster_domain: self.cluster_domain.clone(),
                backend: self.network_backend.clone(),
            },
        ));
        if !self.disable_controllers {
            tokio::spawn(crate::storage_class::ensure(client.clone()));
        }
        tokio::spawn(crate::priority_classes::ensure(client.clone()));
        // The scheduler and the controllers act only while this server leads (their Leases).
        // Each holds a `running` sender until it has stopped and released its Lease.
        let (running, mut all_stopped) = tokio::sync::mpsc::channel::<()>(1);
        let scheduler = (!self.disable_scheduler).then(|| {
            let scheduler_client = client.clone();
            tokio::spawn(run_elected(
                client.clone(),
                running.clone(),
                election(skiff_controllers::leader::SCHEDULER_LOCK),
                until(stopped.clone()),
                move |stop| {
                    let client = scheduler_client.clone();
                    async move {
                        if let Err(err) = skiff_scheduler::run(client, stop).await {
                            tracing::error!(error = %err, "the scheduler stopped with an error");
                        }
                    }
                },
            ))
        });
        let agent = if self.disable_agent {
            None
        } else {
            let node_name = self
                .node_name
                .clone()
                .or_else(hostname)
                .unwrap_or_else(|| "skiff-node".to_string());
            // The embedded agent is a node like any other: its own certificate, minted here.
            let credentials = crate::node_credentials::embedded(
                &self.data_dir,
                &node_name,
                &pki.client_signer()?,
            )?;
            let mut node_config = node_base.clone();
            credentials.apply(&mut node_config);
            let node_client = skiff_agent::apiclient::build(node_config)
                .context("cannot build the node agent's API client")?;
            let mut config = crate::agent::embedded(
                &self.data_dir,
                node_name,
                client_host,
                self.agent_port,
                pki.ca_pem.clone(),
                self.pod_network,
                crate::agent::IngressPorts(self.ingress_http_port, self.ingress_https_port),
            )?;
            config.orphan_sweep_interval = self.orphan_sweep_interval;
            Some(tokio::spawn(skiff_agent::run(
                config,
                node_client,
                until(stopped.clone()),
            )))
        };
        let controller_options = skiff_controllers::ControllerOptions {
            cluster_cidr: self.cluster_cidr.clone(),
            node_cidr_mask_size: self.node_cidr_mask_size,
            root_ca_pem: pki.ca_pem.clone(),
            node_monitor_grace_period: self.node_monitor_grace_period,
            pod_gc_options: skiff_controllers::podgc::Options {
                period: self.pod_gc_period,
                terminated_threshold: self.terminated_pod_gc_threshold,
            },
            ..skiff_controllers::ControllerOptions::default()
        };
        let controllers = (!self.disable_controllers).then(|| {
            let controllers_client = client.clone();
            tokio::spawn(run_elected(
                client,
                running.clone(),
                election(skiff_controllers::leader::CONTROLLER_MANAGER_LOCK),
                until(stopped),
                move |stop| {
                    skiff_controllers::run_with(
                        controllers_client.clone(),
                        controller_options.clone(),
                        stop,
                    )
                },
            ))
        });

        drop(running);
        // At a signal the elected components stop first, releasing their Leases through the
        // API while it still answers (a successor need not wait for them to expire).
        let stop_elected_first = async {
            shutdown_signal().await;
            let _ = stop.send(true);
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), all_stopped.recv()).await;
        };
        let served = server.serve(listener, tls, stop_elected_first).await;
        let _ = stop.send(true);
        if let Some(scheduler) = scheduler
            && let Err(err) = scheduler.await
        {
            tracing::error!(error = %err, "the scheduler panicked");
        }
        if let Some(agent) = agent {
            match agent.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "the node agent stopped with an error")
                }
                Err(err) => tracing::error!(error = %err, "the node agent panicked"),
            }
        }
        if let Some(Err(err)) = match controllers {
            Some(handle) => Some(handle.await),
            None => None,
        } {
            tracing::error!(error = %err, "the controllers panicked");
        }
        served?;
        tracing::info!("stopped");
        Ok(())
    }

    /// The service CIDR and node port range of the flags, checked (also `--cluster-dns` inside
    /// the CIDR and `--cluster-cidr` with `--node-cidr-mask-size`).
    fn service_ranges(&self) -> anyhow::Result<skiff_apiserver::services::ServiceRanges> {
        use skiff_apiserver::services::{Ipv4Cidr, PortRange, ServiceRanges};
        let cidr: Ipv4Cidr = self
            .service_cidr
            .parse()
            .context("invalid --service-cidr")?;
        let node_ports: PortRange = self
            .service_node_port_range
            .parse()
            .context("invalid --service-node-port-range")?;
        if !cidr.contains(self.cluster_dns) {
            anyhow::bail!(
                "--cluster-dns {} is not inside --service-cidr {cidr}: set --cluster-dns to an address \
                 inside it (conventionally the tenth)",
                self.cluster_dns
            );
        }
        skiff_controllers::nodeipam::CidrSet::new(&self.cluster_cidr, self.node_cidr_mask_size)
            .context("invalid pod network flags")?;
        Ok(ServiceRanges { cidr, node_ports })
    }

    /// The names the serving certificate covers.
    fn serving_names(&self) -> Vec<String> {
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            "kubernetes.default.svc.cluster.local".to_string(),
        ];
        if let Some(host) = hostname() {
            names.push(host);
        }
        if !self.bind_address.is_unspecified() {
            names.push(self.bind_address.to_string());
        }
        names.sort();
        names.dedup();
        names
    }
}

/// Runs `work` until `shutdown`: at once without `election`, else only while this server holds
/// the election's Lease (`work`'s stop future fires when it is lost; the campaign resumes).
async fn run_elected<L, F>(
    client: kube::Client,
    _running: tokio::sync::mpsc::Sender<()>,
    election: Option<skiff_controllers::leader::LeaderElectionConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    mut work: L,
) where
    L: FnMut(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match election {
        None => work(Box::pin(shutdown)).await,
        Some(config) => {
            let lock = config.lock();
            if let Err(err) = skiff_controllers::leader::run(client, config, shutdown, work).await {
                tracing::error!(%lock, error = %err, "leader election stopped");
            }
        }
    }
}

/// This server's `holderIdentity` in both Leases, `<node name or host>_<random>` as kube's, kept
/// in `server/leader-identity` so that a restarted server takes its own Leases back at once
/// instead of waiting for them to expire.
fn leader_identity(server_dir: &Path, host: &str) -> anyhow::Result<String> {
    let path = server_dir.join("leader-identity");
    if let Ok(text) = std::fs::read_to_string(&path)
        && text.trim().starts_with(&format!("{host}_"))
    {
        return Ok(text.trim().to_string());
    }
    let identity = skiff_controllers::leader::identity(host);
    write_private(&path, &format!("{identity}\n"), 0o600)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(identity)
}

/// This host's name, when it is a valid node name.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then_some(name)
}

/// This host's primary IPv4 address: the source address of its default route (no packet is
/// sent); `None` without one.
pub fn primary_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    socket.connect((Ipv4Addr::new(192, 0, 2, 1), 53)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The malloc arenas of a long-running daemon (the server, the agent): two keep the idle heap
/// small and are plenty for a runtime of two or so busy threads.
pub const MALLOC_ARENAS: i32 = 2;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for signals; stop the server with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// A duration flag: whole seconds (`40`) or Go's duration syntax (`40s`, `1m30s`, `500ms`).
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("invalid duration {text:?}: use seconds or a duration such as 40s, 1m30s");
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return Err(bad()),
        };
        total += std::time::Duration::try_from_secs_f64(number * scale).map_err(|_| bad())?;
        rest = &rest[unit_len..];
    }
    if text.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_are_seconds_or_go_durations() {
        assert_eq!(parse_duration("40"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("40s"), Ok(Duration::from_secs(40)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
    }
}
