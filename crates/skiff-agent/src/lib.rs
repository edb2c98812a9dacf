//! The Skiff node agent: the kubelet's job.
//!
//! It registers its Node (capacity, addresses, nodeInfo, conditions) and renews a Lease in
//! `kube-node-lease` ([`node`]); watches the pods bound to the node and runs one worker per
//! pod ([`pods`], [`worker`]) that drives the container engine: a sandbox per pod (the
//! `skiff pause` infra process in a tiny root filesystem, [`pause`]) holding the pod's
//! network, IPC and UTS namespaces, init containers in order, app containers joining the
//! sandbox, restarts with the kubelet's back-off ([`restart`]), graceful deletion; and posts
//! each pod's status ([`status`]); sets up pod volumes ([`volumes`]), runs probes ([`probes`])
//! and records the kubelet's events ([`events`]). Its node API ([`nodeapi`]) serves container
//! logs, exec, attach and port-forward to the API server, which it authenticates and
//! authorizes as the kubelet does ([`nodeauth`]). It reaches the cluster only through the
//! Kubernetes API.

pub mod apiclient;
pub mod container;
pub mod dnsconfig;
pub mod error;
pub mod events;
pub mod hooks;
pub mod images;
pub mod logs;
pub mod machine;
pub mod network;
pub mod node;
pub mod nodeapi;
pub mod nodeauth;
pub mod pause;
pub mod podcgroup;
pub mod pods;
pub mod probes;
pub mod pullsecrets;
pub mod qos;
pub mod quantity;
pub mod restart;
pub mod runtime;
pub mod security;
pub mod slim;
pub mod status;
pub mod streaming;
pub mod teardown;
pub mod termination;
pub mod volumes;
pub mod worker;

use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};

pub use error::AgentError;
pub use restart::RestartBackoff;

/// The agent's version (the `skiff` version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How the agent is set up.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// The data root: the engine's containers and images, and `agent/` for the agent's own
    /// files.
    pub data_dir: PathBuf,
    /// The `skiff` binary (started as `skiff shim` per container, copied as the pause).
    pub program: PathBuf,
    /// The node's address as the cluster reaches it (`InternalIP`).
    pub node_ip: IpAddr,
    /// Where the node API listens.
    pub api_bind: IpAddr,
    /// The node API's port (0 picks a free one; the Node's status names the real one).
    pub api_port: u16,
    /// The cluster CA (PEM) the node API verifies client certificates against (the API
    /// server presents one signed by it); `None`: no client certificate is asked for.
    pub client_ca_pem: Option<String>,
    /// Registries reached over plain HTTP besides loopback ones.
    pub insecure_registries: Vec<String>,
    /// Whether pods get addresses on a node bridge, services and cluster DNS (`true`), or
    /// only a loopback interface (`false`: nothing is added to the node's network).
    pub pod_network: bool,
    /// The node's Ingress proxy ports (HTTP and HTTPS on every address; both 0: no Ingress
    /// proxy). Only with the pod network.
    pub ingress_http_port: u16,
    /// See `ingress_http_port`.
    pub ingress_https_port: u16,
    /// How often the containers, directories, addresses and cgroups of pods the API no
    /// longer has are looked for between re-lists ([`DEFAULT_ORPHAN_SWEEP_INTERVAL`]).
    pub orphan_sweep_interval: std::time::Duration,
}

/// The default [`AgentConfig::orphan_sweep_interval`]: a listing of the node's containers
/// every 30 s.
pub const DEFAULT_ORPHAN_SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// What the agent's tasks share.
pub struct Context {
    /// The configuration.
    pub config: AgentConfig,
    /// The API client.
    pub client: kube::Client,
    /// The container engine over the data root.
    pub engine: skiff_engine::Engine,
    /// Which engine containers belong to which pod.
    pub index: runtime::Index,
    /// The sandbox root filesystem.
    pub pause_rootfs: PathBuf,
    /// The pod network, once set up (never, with `pod_network` off).
    pub net: std::sync::OnceLock<Arc<network::PodNetwork>>,
    /// The pods whose teardown failed and is retried.
    pub teardowns: teardown::Retries,
    /// The node API's cached token and access reviews.
    pub auth: nodeauth::Authenticator,
    api_port: AtomicU16,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .field("pause_rootfs", &self.pause_rootfs)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The node API's port once it listens.
    pub fn api_port(&self) -> u16 {
        self.api_port.load(Ordering::Relaxed)
    }
}

/// Runs the agent until `shutdown` completes. Containers keep running when it stops: the next
/// agent on this data root adopts them.
pub async fn run(
    config: AgentConfig,
    client: kube::Client,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let engine = skiff_engine::Engine::open(&config.data_dir)
        .map_err(AgentError::engine("open the container engine"))?;
    let agent_dir = config.data_dir.join("agent");
    let program = config.program.clone();
    let dir = agent_dir.clone();
    let pause_rootfs = error::blocking("prepare the sandbox rootfs", move || {
        pause::prepare_rootfs(&dir, &program)
    })
    .await?;
    let listener = tokio::net::TcpListener::bind((config.api_bind, config.api_port))
        .await
        .map_err(AgentError::io(
            "listen for the node API on",
            format!("{}:{}", config.api_bind, config.api_port),
        ))?;
    let port = listener
        .local_addr()
        .map_err(AgentError::io(
            "read the address of",
            "the node API listener",
        ))?
        .port();
    let tls = nodeapi::tls_config(&agent_dir, &config)?;
    let listing = engine.clone();
    let index = error::blocking("list the containers", move || {
        runtime::Index::build(&listing)
    })
    .await?;
    let ctx = Arc::new(Context {
        config,
        client,
        engine,
        index,
        pause_rootfs,
        net: std::sync::OnceLock::new(),
        teardowns: teardown::Retries::default(),
        auth: nodeauth::Authenticator::default(),
        api_port: AtomicU16::new(port),
    });
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match node::register(&ctx).await {
            Ok(()) => break,
            Err(err) => {
                tracing::warn!(error = %err, "node registration failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
    tracing::info!(node = %ctx.config.node_name, port, "node agent running");
    let heartbeat = tokio::spawn(node::heartbeat(Arc::clone(&ctx)));
    let trim = tokio::spawn(release_memory());
    let api = tokio::spawn(nodeapi::serve(Arc::clone(&ctx), listener, tls));
    let storage = tokio::spawn(volumes::claims::run(Arc::clone(&ctx)));
    let pods = tokio::spawn({
        let ctx = Arc::clone(&ctx);
        async move {
            if ctx.config.pod_network {
                // Pods wait for their network: the node's pod CIDR and the bridge.
                let mut delay = std::time::Duration::from_millis(200);
                loop {
                    match network::start(&ctx).await {
                        Ok(net) => {
                            let _ = ctx.net.set(net);
                            break;
                        }
                        Err(err) => {
                            tracing::error!(error = %err, "the pod network cannot be set up; retrying");
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(std::time::Duration::from_secs(10));
                        }
                    }
                }
            }
            pods::run(ctx).await
        }
    });
    shutdown.await;
    heartbeat.abort();
    trim.abort();
    pods.abort();
    api.abort();
    storage.abort();
    Ok(())
}

/// The async runtime's worker threads in a `skiff agent` process, whatever the number of cores:
/// the agent's async work is waiting on the API and the node API, and the engine's work runs on
/// the blocking pool, so two are plenty; each further one only adds a stack and allocator state.
pub const WORKER_THREADS: usize = 2;

/// The malloc arenas of a `skiff agent` process: one. The agent allocates little at a time
/// (21,000 allocations a second while starting pods, under 6 MiB live at the peak), but every
/// arena keeps its own partly used pages that `malloc_trim` cannot hand back; a second arena
/// held about as much idle heap as the first after pods came and went.
pub const MALLOC_ARENAS: i32 = 1;

/// How often the allocator's free memory goes back to the kernel.
pub const RELEASE_MEMORY_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Every [`RELEASE_MEMORY_PERIOD`], hands the memory the allocator keeps free back to the
/// kernel, so that an agent that started many pods does not stay at its peak once they are
/// gone (a pass over a quiet heap costs well under a millisecond).
async fn release_memory() {
    let mut tick = tokio::time::interval(RELEASE_MEMORY_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let _ = tokio::task::spawn_blocking(skiff_sys::process::release_free_memory).await;
    }
}
