//! The node's share of cluster networking: the pod network (a bridge, a veth and an address
//! per pod from the node's pod CIDR), routes to the other nodes' pod CIDRs, the service proxy
//! (an nftables table of Skiff's own) and the node-local cluster DNS server.
//!
//! The cluster-wide settings come from the ConfigMap `kube-system/skiff-cluster-network`
//! written by the server, so every agent agrees with it; the node's pod CIDR from its Node
//! (`spec.podCIDR`, set by the server's node IPAM controller). One task keeps reflectors of
//! Services, EndpointSlices, Nodes and Pods and, after each burst of changes, recomputes the
//! proxy rules, the DNS records and the routes, applying only what changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass, NetworkPolicy};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use skiff_net::ipam::Ipv4Cidr;
use skiff_net::podnet::{NodeNetwork, NodeNetworkConfig};
use skiff_net::routes::{Overlay, Peer};
use tokio::sync::Notify;

use crate::{AgentError, Context};

/// The namespace and name of the ConfigMap holding the cluster's network settings.
pub const CONFIG_MAP: (&str, &str) = ("kube-system", "skiff-cluster-network");

/// How often the node's network is recomputed when nothing changes (retries what failed;
/// unchanged rules are not re-applied).
const RESYNC: Duration = Duration::from_secs(10);

/// The name of the node bridge.
pub const BRIDGE: &str = "skiff0";

/// The VXLAN network identifier and UDP port of the overlay.
const VXLAN_VNI: u32 = 1;
const VXLAN_PORT: u16 = 8472;

/// The cluster-wide network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNetwork {
    /// Every pod address of the cluster (10.42.0.0/16).
    pub cluster_cidr: Ipv4Cidr,
    /// Every service address (10.43.0.0/16).
    pub service_cidr: Ipv4Cidr,
    /// The cluster DNS service address (10.43.0.10).
    pub cluster_dns: Ipv4Addr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// `host-gw` or `vxlan`.
    pub backend: String,
}

impl ClusterNetwork {
    /// Reads the settings from the ConfigMap's data.
    pub fn from_config_map(cm: &ConfigMap) -> Result<ClusterNetwork, AgentError> {
        let empty = BTreeMap::new();
        let data = cm.data.as_ref().unwrap_or(&empty);
        let get = |key: &str| {
            data.get(key).cloned().ok_or_else(|| {
                AgentError::Invalid(format!(
                    "the ConfigMap {}/{} has no key {key}",
                    CONFIG_MAP.0, CONFIG_MAP.1
                ))
            })
        };
        let cidr = |key: &str| -> Result<Ipv4Cidr, AgentError> {
            get(key)?.parse().map_err(AgentError::network(format!(
                "{key} in the cluster network settings"
            )))
        };
        Ok(ClusterNetwork {
            cluster_cidr: cidr("clusterCIDR")?,
            service_cidr: cidr("serviceCIDR")?,
            cluster_dns: get("clusterDNS")?.parse().map_err(AgentError::network(
                "clusterDNS in the cluster network settings",
            ))?,
            domain: get("clusterDomain").unwrap_or_else(|_| "cluster.local".into()),
            backend: get("backend").unwrap_or_else(|_| "host-gw".into()),
        })
    }

    /// The overlay the backend names.
    pub fn overlay(&self) -> Overlay {
        match self.backend.as_str() {
            "vxlan" => Overlay::Vxlan {
                vni: VXLAN_VNI,
                port: VXLAN_PORT,
            },
            _ => Overlay::HostGw,
        }
    }

    /// The DNS settings pods get.
    pub fn dns(&self) -> crate::dnsconfig::ClusterDns {
        crate::dnsconfig::ClusterDns {
            server: self.cluster_dns,
            domain: self.domain.clone(),
        }
    }
}

/// The node's pod network once it is set up.
#[derive(Debug)]
pub struct PodNetwork {
    /// The bridge and the pods' addresses.
    pub node: NodeNetwork,
    /// The cluster's settings.
    pub cluster: ClusterNetwork,
    /// This node's pod CIDR.
    pub pod_cidr: Ipv4Cidr,
}

/// Waits for the cluster network settings (the server writes them when it starts).
async fn cluster_network(client: &kube::Client) -> ClusterNetwork {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), CONFIG_MAP.0);
    let mut delay = Duration::from_millis(100);
    loop {
        match api.get_opt(CONFIG_MAP.1).await {
            Ok(Some(cm)) => match ClusterNetwork::from_config_map(&cm) {
                Ok(settings) => return settings,
                Err(err) => tracing::warn!(error = %err, "bad cluster network settings"),
            },
            Ok(None) => tracing::info!(
                "waiting for the cluster network settings {}/{}",
                CONFIG_MAP.0,
                CONFIG_MAP.1
            ),
            Err(err) => tracing::warn!(error = %err, "cannot read the cluster network settings"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Waits until the node has a pod CIDR.
async fn pod_cidr(ctx: &Context) -> Ipv4Cidr {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut delay = Duration::from_millis(50);
    loop {
        match api.get_opt(&ctx.config.node_name).await {
            Ok(Some(node)) => {
                if let Some(cidr) = node_pod_cidr(&node) {
                    return cidr;
                }
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(error = %err, "cannot read this node"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

fn node_pod_cidr(node: &Node) -> Option<Ipv4Cidr> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.as_deref())
        .and_then(|c| c.parse().ok())
}

fn node_ipv4(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| a.address.parse().ok())
}

/// Sets up the pod network, the proxy and the DNS server, and starts the task keeping them in
/// step with the cluster.
pub async fn start(ctx: &Arc<Context>) -> Result<Arc<PodNetwork>, AgentError> {
    let cluster = cluster_network(&ctx.client).await;
    let pod_cidr = pod_cidr(ctx).await;
    tracing::info!(%pod_cidr, backend = %cluster.backend, "setting up the pod network");
    let mtu = match cluster.overlay() {
        Overlay::HostGw => 1500,
        Overlay::Vxlan { .. } => 1450,
    };
    let node = NodeNetwork::setup(NodeNetworkConfig {
        bridge: BRIDGE.to_string(),
        pod_cidr,
        cluster_cidr: cluster.cluster_cidr,
        mtu,
        state_dir: ctx.config.data_dir.join("agent/ipam"),
        netns: None,
    })
    .await
    .map_err(AgentError::network("set up the pod network"))?;
    let net = Arc::new(PodNetwork {
        node,
        cluster,
        pod_cidr,
    });
    let dns_addr = SocketAddr::from((pod_cidr.gateway(), 53));
    let upstreams = skiff_net::dns::upstreams_from_resolv_conf(
        &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    );
    let dns = skiff_net::dns::DnsServer::bind(dns_addr, upstreams)
        .await
        .map_err(AgentError::network(format!(
            "start the cluster DNS on {dns_addr}"
        )))?;
    let dns = Arc::new(dns);
    tokio::spawn({
        let dns = Arc::clone(&dns);
        async move { dns.run().await }
    });
    tokio::spawn(keep_in_step(Arc::clone(ctx), Arc::clone(&net), dns));
    Ok(net)
}

/// The NetworkPolicy rules of this node's pods. The cluster DNS is the node itself here, not a
/// pod, so it stands in the model as a pod `kube-system/kube-dns` (label `k8s-app=kube-dns`)
/// at the bridge address, where DNS traffic ends up: the usual egress rule allowing DNS by
/// selecting those pods then allows it, as it does on Kubernetes.
fn policy_script(
    ctx: &Context,
    net: &PodNetwork,
    policies: &Store<NetworkPolicy>,
    namespaces: &Store<Namespace>,
    pods: &[Arc<Pod>],
) -> String {
    let policies: Vec<NetworkPolicy> = policies.state().iter().map(|s| (**s).clone()).collect();
    let namespaces: Vec<Namespace> = namespaces.state().iter().map(|s| (**s).clone()).collect();
    let mut pods: Vec<Pod> = pods.iter().map(|p| (**p).clone()).collect();
    if let Ok(dns) = serde_json::from_value::<Pod>(serde_json::json!({
        "metadata": {"name": "skiff-node-dns", "namespace": "kube-system",
                     "labels": {"k8s-app": "kube-dns"}},
        "spec": {"containers": [{"name": "dns", "ports": [
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": net.pod_cidr.gateway().to_string()},
    })) {
        pods.push(dns);
    }
    let model = skiff_net::policy::build(&skiff_net::policy::PolicyInput {
        policies: &policies,
        pods: &pods,
        namespaces: &namespaces,
        node_name: &ctx.config.node_name,
        bridge: BRIDGE,
    });
    skiff_net::policy::render(&model)
}

/// Starts the node's Ingress proxy on the configured ports (none when both are 0, or when
/// they cannot be bound: the rest of the network goes on without it).
async fn ingress_proxy(ctx: &Context) -> Option<skiff_net::ingress::IngressHandle> {
    let (http, https) = (ctx.config.ingress_http_port, ctx.config.ingress_https_port);
    if http == 0 && https == 0 {
        return None;
    }
    let any = std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    match skiff_net::ingress::IngressProxy::bind(
        SocketAddr::new(any, http),
        SocketAddr::new(any, https),
    )
    .await
    {
        Ok(proxy) => {
            tracing::info!(http = %proxy.http_addr(), https = %proxy.https_addr(), "ingress proxy listening");
            let handle = proxy.handle();
            proxy.spawn();
            Some(handle)
        }
        Err(err) => {
            tracing::error!(error = %err, "the ingress proxy cannot listen; Ingresses are not served on this node");
            None
        }
    }
}

/// Reflects one kind into a store and pokes each of `changed` after every event.
fn reflect<K>(api: Api<K>, changed: &[&Arc<Notify>]) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let changed = changed.iter().map(|n| Arc::clone(n)).collect();
    reflect_with(api, watcher::Config::default(), changed).0
}

/// [`reflect`] with a watch configuration (selectors); the handle stops the watch.
fn reflect_with<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Vec<Arc<Notify>>,
) -> (Store<K>, tokio::task::AbortHandle)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config).modify(crate::slim::strip))
        .default_backoff()
        .for_each(move |event| {
            if let Err(err) = &event {
                tracing::warn!(error = %err, "a network watch failed; retrying");
            }
            for notify in &changed {
                notify.notify_one();
            }
            futures::future::ready(())
        });
    let task = tokio::spawn(stream);
    (reader, task.abort_handle())
}

/// The Secrets the Ingresses name in `spec.tls`, each watched on its own by name: a node may
/// read a Secret only by name, and only one some Ingress names (the Node authorizer's rule
/// for the ingress proxy every node runs).
struct IngressSecrets {
    changed: Arc<Notify>,
    watches: HashMap<(String, String), (Store<Secret>, tokio::task::AbortHandle)>,
}

impl IngressSecrets {
    fn new(changed: Arc<Notify>) -> IngressSecrets {
        IngressSecrets {
            changed,
            watches: HashMap::new(),
        }
    }

    /// Watches exactly the Secrets `ingresses` name.
    fn follow(&mut self, client: &kube::Client, ingresses: &[Ingress]) {
        let wanted: HashSet<(String, String)> = ingresses
            .iter()
            .flat_map(|ing| {
                let namespace = ing.metadata.namespace.clone().unwrap_or_default();
                ing.spec
                    .iter()
                    .flat_map(|spec| spec.tls.iter().flatten())
                    .filter_map(move |tls| {
                        let name = tls.secret_name.clone().filter(|n| !n.is_empty())?;
                        Some((namespace.clone(), name))
                    })
            })
            .collect();
        self.watches.retain(|key, (_, task)| {
            let keep = wanted.contains(key);
            if !keep {
                task.abort();
            }
            keep
        });
        for key in wanted {
            if self.watches.contains_key(&key) {
                continue;
            }
            let config = watcher::Config::default().fields(&format!("metadata.name={}", key.1));
            let watch = reflect_with::<Secret>(
                Api::namespaced(client.clone(), &key.0),
                config,
                vec![Arc::clone(&self.changed)],
            );
            self.watches.insert(key, watch);
        }
    }

    fn secrets(&self) -> Vec<Secret> {
        self.watches
            .values()
            .flat_map(|(store, _)| store.state())
            .map(|s| (*s).clone())
            .collect()
    }
}

impl Drop for IngressSecrets {
    fn drop(&mut self) {
        for (_, task) in self.watches.values() {
            task.abort();
        }
    }
}

/// Recomputes and applies the network policies, the Ingress routes, the DNS records and the
/// routes after every burst of changes; the service proxy has a task of its own
/// ([`keep_proxy_in_step`]) so that its rules never wait for this work.
async fn keep_in_step(
    ctx: Arc<Context>,
    net: Arc<PodNetwork>,
    dns: Arc<skiff_net::dns::DnsServer>,
) {
    let changed = Arc::new(Notify::new());
    let proxy_changed = Arc::new(Notify::new());
    let both = [&changed, &proxy_changed];
    let services = reflect::<Service>(Api::all(ctx.client.clone()), &both);
    let slices = reflect::<EndpointSlice>(Api::all(ctx.client.clone()), &both);
    let nodes = reflect::<Node>(Api::all(ctx.client.clone()), &[&changed]);
    let pods = reflect::<Pod>(Api::all(ctx.client.clone()), &both);
    let policies = reflect::<NetworkPolicy>(Api::all(ctx.client.clone()), &[&changed]);
    let namespaces = reflect::<Namespace>(Api::all(ctx.client.clone()), &[&changed]);
    let policy_executor = skiff_net::policy::Executor::new();
    let mut policy_applied = String::new();
    let mut ingress = match ingress_proxy(&ctx).await {
        Some(proxy) => {
            let ingresses = reflect::<Ingress>(Api::all(ctx.client.clone()), &[&changed]);
            let classes = reflect::<IngressClass>(Api::all(ctx.client.clone()), &[&changed]);
            let secrets = IngressSecrets::new(Arc::clone(&changed));
            Some((proxy, ingresses, classes, secrets))
        }
        None => None,
    };
    for store in [
        services.wait_until_ready().await,
        slices.wait_until_ready().await,
    ] {
        if let Err(err) = store {
            tracing::warn!(error = %err, "a network store never filled");
        }
    }
    tokio::spawn(keep_proxy_in_step(
        Arc::clone(&ctx),
        Arc::clone(&net),
        ProxyStores {
            services: services.clone(),
            slices: slices.clone(),
            pods: pods.clone(),
        },
        proxy_changed,
    ));
    let mut routes_applied: Vec<Peer> = Vec::new();
    let node_ip = match ctx.config.node_ip {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
    };
    loop {
        // Shared, not copied: a thousand Services and their slices are read on every pass.
        let services = services.state();
        let slices = slices.state();
        let nodes = nodes.state();
        let pods = pods.state();

        let script = policy_script(&ctx, &net, &policies, &namespaces, &pods);
        if script != policy_applied {
            match policy_executor.apply(&script) {
                Ok(()) => policy_applied = script,
                Err(err) => tracing::warn!(error = %err, "applying the network policies failed"),
            }
        }
        if let Some((proxy, ingresses, classes, secrets)) = &mut ingress {
            let ingresses: Vec<Ingress> = ingresses.state().iter().map(|s| (**s).clone()).collect();
            let classes: Vec<IngressClass> =
                classes.state().iter().map(|s| (**s).clone()).collect();
            secrets.follow(&ctx.client, &ingresses);
            let secrets: Vec<Secret> = secrets.secrets();
            proxy.update(skiff_net::ingress::build(
                &skiff_net::ingress::IngressInput {
                    ingresses: &ingresses,
                    classes: &classes,
                    services: &services,
                    slices: &slices,
                    secrets: &secrets,
                    class_name: skiff_net::ingress::DEFAULT_CLASS_NAME,
                },
            ));
        }
        dns.update(skiff_net::dns::DnsSnapshot::build_from(
            &services,
            &slices,
            &pods,
            &net.cluster.domain,
        ));
        let peers: Vec<Peer> = nodes
            .iter()
            .filter(|n| n.metadata.name.as_deref() != Some(ctx.config.node_name.as_str()))
            .filter_map(|n| {
                Some(Peer {
                    node_name: n.metadata.name.clone()?,
                    node_ip: node_ipv4(n)?,
                    pod_cidr: node_pod_cidr(n)?,
                })
            })
            .collect();
        if peers != routes_applied {
            match skiff_net::routes::sync_routes(
                None,
                node_ip,
                net.cluster.cluster_cidr,
                &net.cluster.overlay(),
                &peers,
            )
            .await
            {
                Ok(()) => routes_applied = peers,
                Err(err) => {
                    tracing::warn!(error = %err, "syncing the routes to other nodes failed")
                }
            }
        }
        // Wake on the next change, and at least every RESYNC: an apply or route sync that
        // failed (nft busy, a peer not ready) is retried even when nothing else changes.
        let _ = tokio::time::timeout(RESYNC, changed.notified()).await;
        // Let a burst of events (a rollout touches many objects) settle into one update.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The stores the service proxy reads.
struct ProxyStores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    /// For the hostPorts of this node's pods.
    pods: Store<Pod>,
}

/// Keeps the service proxy's rules in step with Services, EndpointSlices and this node's
/// hostPorts: after each change (and at least every [`RESYNC`]) it builds the model from the
/// stores as they are (shared, not copied) and applies the difference.
///
/// No fixed debounce: the first change is applied at once, and changes arriving while one is
/// applied are taken together by the next pass (the `Notify` keeps one wake-up), so a burst
/// costs a few passes and a lone change costs no waiting.
async fn keep_proxy_in_step(
    ctx: Arc<Context>,
    net: Arc<PodNetwork>,
    stores: ProxyStores,
    changed: Arc<Notify>,
) {
    for store in [
        stores.services.wait_until_ready().await,
        stores.slices.wait_until_ready().await,
    ] {
        if let Err(err) = store {
            tracing::warn!(error = %err, "a service proxy store never filled");
        }
    }
    let executor = skiff_net::proxy::Executor::new();
    let mut proxy = Some(skiff_net::proxy::ProxyState::new());
    let node_ip = match ctx.config.node_ip {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
    };
    loop {
        let started = std::time::Instant::now();
        let services = stores.services.state();
        let slices = stores.slices.state();
        let pods = stores.pods.state();
        let mut model = skiff_net::proxy::build(&skiff_net::proxy::ProxyInput {
            services: &services,
            slices: &slices,
            node_name: &ctx.config.node_name,
            node_ips: &[node_ip],
            pod_cidr: Some(net.pod_cidr),
            cluster_cidr: net.cluster.cluster_cidr,
            service_cidr: net.cluster.service_cidr,
            dns: Some(skiff_net::proxy::DnsRedirect {
                cluster_ip: net.cluster.cluster_dns,
                local: SocketAddrV4::new(net.pod_cidr.gateway(), 53),
            }),
        });
        model.host_ports = skiff_net::proxy::host_ports(&pods, &ctx.config.node_name);
        let built = started.elapsed();
        // `nft` and `conntrack` are processes: run them off the async workers.
        let mut state = proxy.take().unwrap_or_default();
        let executor_copy = executor.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let result = state.apply(&executor_copy, &model);
            (state, result)
        })
        .await;
        match outcome {
            Ok((state, result)) => {
                proxy = Some(state);
                match result {
                    Ok(stats) => {
                        record_proxy_applied(&ctx, &services, &slices, &stats, built);
                    }
                    Err(err) => tracing::warn!(error = %err, "applying the service rules failed"),
                }
            }
            // A panic lost the state: the next pass starts over with a full replace.
            Err(err) => tracing::error!(error = %err, "applying the service rules panicked"),
        }
        drop((services, slices, pods));
        // Wake on the next change, and at least every RESYNC: an apply that failed (nft busy)
        // is retried even when nothing else changes.
        let _ = tokio::time::timeout(RESYNC, changed.notified()).await;
    }
}

/// Notes which Service/EndpointSlice changes the proxy rules now include: the highest
/// `resourceVersion` of the model just applied, when, and how, in `DATA/agent/proxy-applied`
/// (`RV APPLIED_AT_UNIX_MICROS KIND NFT_MICROS COMPUTE_MICROS`, replaced atomically; compute
/// is building the model and the delta, everything but `nft`), for benchmarks and
/// diagnostics. Best effort.
fn record_proxy_applied(
    ctx: &Context,
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    stats: &skiff_net::proxy::ApplyStats,
    built: Duration,
) {
    let versions = services
        .iter()
        .map(|s| &s.metadata)
        .chain(slices.iter().map(|s| &s.metadata));
    let newest = versions
        .filter_map(|m| m.resource_version.as_deref()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    if stats.kind != skiff_net::proxy::ApplyKind::Unchanged {
        tracing::debug!(kind = ?stats.kind, bytes = stats.script_bytes, nft = ?stats.nft,
            model = ?built, took = ?stats.elapsed, resource_version = newest,
            conntrack_flushed = stats.conntrack_flows, conntrack_deleted = stats.conntrack_deleted,
            conntrack_listed = stats.conntrack_listed, "applied the service rules");
    }
    let path = ctx.config.data_dir.join("agent/proxy-applied");
    let temp = path.with_extension("tmp");
    let line = format!(
        "{newest} {at} {:?} {} {}\n",
        stats.kind,
        stats.nft.as_micros(),
        (built + stats.elapsed.saturating_sub(stats.nft)).as_micros()
    );
    if let Err(err) = std::fs::write(&temp, line).and_then(|()| std::fs::rename(&temp, &path)) {
        tracing::debug!(error = %err, path = %path.display(), "cannot record the applied proxy rules");
    }
}
