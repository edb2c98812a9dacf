//! The Skiff controllers: level-triggered reconcilers that reach the cluster only through the
//! Kubernetes API, fed by watches through the `kube` runtime (watcher, reflector, Controller).
//!
//! One module per controller; each splits a pure decision (object + what it owns -> a plan)
//! from applying it:
//!
//! - [`replicaset`]: replicas by selector, adoption and release, deletion order, status;
//! - [`deployment`]: ReplicaSets per template hash, RollingUpdate and Recreate, revisions,
//!   history limit, pause, rollout status and conditions;
//! - [`garbage_collector`]: owner references (background, foreground, orphan);
//! - [`namespace`]: empties a deleted namespace and removes its `kubernetes` finalizer;
//! - [`serviceaccount`]: a `default` ServiceAccount in every namespace;
//! - [`rootca`]: the `kube-root-ca.crt` ConfigMap (the cluster CA) in every namespace;
//! - [`job`]: completions, parallelism, back-off limit, Indexed completion mode,
//!   ttlSecondsAfterFinished, Complete/Failed, `podReplacementPolicy`; its pods are counted
//!   through the `batch.kubernetes.io/job-tracking` finalizer ([`job_tracking`]);
//! - [`endpoints`]: Endpoints and EndpointSlices of Services with selectors;
//! - [`statefulset`]: ordinal pods, claims, ordered or parallel, rolling updates;
//! - [`daemonset`]: one pod per eligible node, rolling updates;
//! - [`cronjob`]: Jobs on cron schedules in a time zone, concurrency policies, history;
//! - [`nodeipam`]: a pod CIDR for every Node from the cluster CIDR;
//! - [`servicelb`]: the node addresses as the ingress of LoadBalancer Services;
//! - [`volume`]: PersistentVolume binding, claim protection, `local-path` provisioning;
//! - [`disruption`]: the status of PodDisruptionBudgets (healthy, desired, disruptions
//!   allowed), which evictions and preemption read;
//! - [`podgc`]: pods of Nodes that are gone, unscheduled terminating pods, finished pods
//!   beyond `--terminated-pod-gc-threshold`;
//! - [`nodelifecycle`]: nodes whose Lease goes stale become `Unknown` and are tainted
//!   unreachable (not-ready when they report so), pods leave `NoExecute` taints they do not
//!   tolerate (after `tolerationSeconds`), pods stuck terminating on lost nodes are removed.
//!
//! Shared machinery: [`informer`] (one watch per kind shared by controllers), [`expectations`]
//! (no double creation before the cache catches up), [`backoff`] (per-key requeue delays).
//! [`leader`] elects one leader among servers sharing a store (a `kube-system` Lease).
//! [`run`] starts them all.

pub mod backoff;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod garbage_collector;
pub mod informer;
pub mod job;
pub mod job_backoff;
pub mod job_policy;
pub mod job_tracking;
pub mod leader;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podgc;
pub mod replicaset;
pub mod rootca;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
pub mod util;
pub mod volume;

use std::future::Future;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;

pub use backoff::{BackoffError, ItemBackoff};
pub use informer::Informer;

/// A future that completes when the controllers should stop; cloned into each controller.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// A reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// An API call failed.
    #[error("{key}: cannot {action}: {source}")]
    Api {
        /// The object reconciled (`namespace/name`).
        key: String,
        /// What was being done.
        action: &'static str,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

impl ControllerError {
    /// An API failure while reconciling `key`.
    pub fn api(key: &str, action: &'static str, source: kube::Error) -> ControllerError {
        ControllerError::Api {
            key: key.to_string(),
            action,
            source,
        }
    }
}

/// Which controllers [`run_with`] starts.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// ReplicaSet controller.
    pub replicaset: bool,
    /// Deployment controller.
    pub deployment: bool,
    /// Garbage collector.
    pub garbage_collector: bool,
    /// Namespace controller.
    pub namespace: bool,
    /// ServiceAccount controller.
    pub serviceaccount: bool,
    /// Job controller.
    pub job: bool,
    /// Endpoints and EndpointSlice controller.
    pub endpoints: bool,
    /// StatefulSet controller.
    pub statefulset: bool,
    /// DaemonSet controller.
    pub daemonset: bool,
    /// CronJob controller.
    pub cronjob: bool,
    /// Node IPAM controller (a pod CIDR for every Node).
    pub node_ipam: bool,
    /// The built-in service load balancer (node addresses for LoadBalancer Services).
    pub service_lb: bool,
    /// The PersistentVolume controller (binding, claim protection, `local-path` provisioning).
    pub volume: bool,
    /// The disruption controller (PodDisruptionBudget status).
    pub disruption: bool,
    /// The pod garbage collector.
    pub pod_gc: bool,
    /// Its period and finished-pod threshold.
    pub pod_gc_options: podgc::Options,
    /// The pod network the node IPAM controller splits (`--cluster-cidr`, default
    /// `10.42.0.0/16`).
    pub cluster_cidr: String,
    /// The prefix length of each Node's pod CIDR (`--node-cidr-mask-size`, default 24).
    pub node_cidr_mask_size: u8,
    /// The CA bundle (PEM) the API server serves with, published as `kube-root-ca.crt` in
    /// every namespace; empty: the root CA publisher does not run.
    pub root_ca_pem: String,
    /// Node lifecycle controller (stale Leases, not-ready/unreachable taints, evictions).
    pub node_lifecycle: bool,
    /// How long a node may go without renewing its Lease before it is `Unknown`
    /// (`--node-monitor-grace-period`, default 40 s).
    pub node_monitor_grace_period: std::time::Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            replicaset: true,
            deployment: true,
            garbage_collector: true,
            namespace: true,
            serviceaccount: true,
            job: true,
            endpoints: true,
            statefulset: true,
            daemonset: true,
            cronjob: true,
            node_ipam: true,
            service_lb: true,
            volume: true,
            disruption: true,
            pod_gc: true,
            pod_gc_options: podgc::Options::default(),
            cluster_cidr: nodeipam::DEFAULT_CLUSTER_CIDR.to_string(),
            node_cidr_mask_size: nodeipam::DEFAULT_NODE_CIDR_MASK_SIZE,
            root_ca_pem: String::new(),
            node_lifecycle: true,
            node_monitor_grace_period: nodelifecycle::DEFAULT_GRACE_PERIOD,
        }
    }
}

/// Runs every controller until `shutdown` completes.
///
/// ```no_run
/// # async fn demo(client: kube::Client) {
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let task = tokio::spawn(skiff_controllers::run(client, async move { let _ = stopped.await; }));
/// // ...
/// let _ = stop.send(());
/// let _ = task.await;
/// # }
/// ```
pub async fn run(client: Client, shutdown: impl Future<Output = ()> + Send + 'static) {
    run_with(client, ControllerOptions::default(), shutdown).await;
}

/// Runs the controllers `options` selects until `shutdown` completes.
pub async fn run_with(
    client: Client,
    options: ControllerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let shutdown: Shutdown = shutdown.boxed().shared();
    let pods = Informer::spawn(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let replica_sets = Informer::spawn(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let mut tasks: Vec<BoxFuture<'_, ()>> = Vec::new();
    if options.replicaset {
        tasks.push(replicaset::run(client.clone(), &pods, shutdown.clone()).boxed());
    }
    if options.deployment {
        tasks.push(deployment::run(client.clone(), &replica_sets, &pods, shutdown.clone()).boxed());
    }
    if options.job {
        tasks.push(job::run(client.clone(), &pods, shutdown.clone()).boxed());
    }
    if options.endpoints {
        tasks.push(endpoints::run(client.clone(), &pods, shutdown.clone()).boxed());
    }
    if options.statefulset {
        tasks.push(statefulset::run(client.clone(), &pods, shutdown.clone()).boxed());
    }
    if options.daemonset {
        tasks.push(daemonset::run(client.clone(), &pods, shutdown.clone()).boxed());
    }
    if options.cronjob {
        tasks.push(cronjob::run(client.clone(), shutdown.clone()).boxed());
    }
    if options.garbage_collector {
        tasks.push(garbage_collector::run(client.clone(), shutdown.clone()).boxed());
    }
    if options.namespace {
        tasks.push(namespace::run(client.clone(), shutdown.clone()).boxed());
    }
    if options.serviceaccount {
        tasks.push(serviceaccount::run(client.clone(), shutdown.clone()).boxed());
    }
    if !options.root_ca_pem.is_empty() {
        tasks.push(
            rootca::run(
                client.clone(),
                options.root_ca_pem.clone(),
                shutdown.clone(),
            )
            .boxed(),
        );
    }
    if options.service_lb {
        tasks.push(servicelb::run(client.clone(), shutdown.clone()).boxed());
        tasks.push(servicelb::run_ingress(client.clone(), shutdown.clone()).boxed());
    }
    if options.volume {
        tasks.push(volume::run(client.clone(), &pods, shutdown.clone()).boxed());
    }
    if options.disruption {
        tasks.push(disruption::run(client.clone(), &pods, shutdown.clone()).boxed());
    }
    if options.pod_gc {
        tasks.push(
            podgc::run(
                client.clone(),
                &pods,
                options.pod_gc_options,
                shutdown.clone(),
            )
            .boxed(),
        );
    }
    if options.node_ipam {
        match nodeipam::CidrSet::new(&options.cluster_cidr, options.node_cidr_mask_size) {
            Ok(set) => tasks.push(nodeipam::run(client.clone(), set, shutdown.clone()).boxed()),
            Err(err) => tracing::error!(error = %err, "the node IPAM controller cannot run"),
        }
    }
    if options.node_lifecycle {
        let node_options = nodelifecycle::Options {
            grace_period: options.node_monitor_grace_period,
        };
        tasks.push(
            nodelifecycle::run(client.clone(), &pods, node_options, shutdown.clone()).boxed(),
        );
    }
    let all = futures::future::join_all(tasks);
    // Controllers stop at the shutdown signal; the informers go when this returns.
    tokio::select! {
        _ = all => {}
        () = shutdown.clone() => {}
    }
    tracing::info!("controllers stopped");
}
