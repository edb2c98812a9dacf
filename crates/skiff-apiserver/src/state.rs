//! The state every request handler shares: the store, the resource registry (built-in plus
//! established CRDs), one watch cache per resource, credentials and metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use skiff_apimachinery::table::PrinterColumn;
use skiff_apimachinery::{Registry, ResourceInfo};
use skiff_store::{ResourceKey, Revision, Store};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::status::ApiError;
use crate::watchcache::WatchCache;

/// Tunables of the API server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How often an idle watch that allows bookmarks gets a BOOKMARK event.
    pub bookmark_interval: Duration,
    /// How many recent events each resource's watch cache keeps.
    pub watch_cache_capacity: usize,
    /// Whether a garbage collector runs: only then do `propagationPolicy=Foreground|Orphan`
    /// deletes leave a finalizer for it to remove (otherwise the object would never go).
    pub garbage_collector: bool,
    /// Whether a namespace controller runs: then deleting a namespace only marks it
    /// Terminating (with the `kubernetes` finalizer in `spec.finalizers`) and the controller
    /// empties it and clears the finalizer through `namespaces/{name}/finalize`. Otherwise the
    /// API server empties and deletes it itself.
    pub namespace_controller: bool,
    /// The address clients reach the server at, for `/api`'s `serverAddressByClientCIDRs`.
    pub server_address: String,
    /// The version of the `skiff` binary, for `/version`.
    pub skiff_version: String,
    /// The TLS client configuration (with the server's client certificate,
    /// [`crate::pki::ServerPki::kubelet_client_cert_pem`]) of the connections to node agents'
    /// APIs that serve `pods/log`, `exec`, `attach` and `portforward` (`None`: no node agent
    /// is reachable, and those requests answer 503). Made by
    /// [`crate::handlers::node_proxy::client_config`].
    pub kubelet_client: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Where Services get cluster IPs and node ports from.
    pub service_ranges: crate::services::ServiceRanges,
    /// The default Services (`default/kubernetes`, `kube-system/kube-dns`) this server keeps;
    /// `None`: none (embedding, tests).
    pub default_services: Option<crate::services::DefaultServices>,
    /// Signs and checks service account tokens (`None`: TokenRequests answer 503 and only
    /// static tokens authenticate).
    pub token_signer: Option<std::sync::Arc<crate::serviceaccount::TokenSigner>>,
    /// Whether new pods go through the ServiceAccount admission (a default ServiceAccount,
    /// the token volume). Off where no controller creates the `default` ServiceAccounts.
    pub service_account_admission: bool,
    /// The DefaultTolerationSeconds admission of new pods (`None`: off).
    pub default_toleration_seconds: Option<crate::default_tolerations::DefaultTolerationSeconds>,
    /// Signs the node client certificates that CertificateSigningRequests ask for (`None`:
    /// requests stay pending).
    pub csr_signer: Option<std::sync::Arc<crate::certificates::ClientSigner>>,
    /// The longest validity of a certificate the built-in signers issue
    /// (`--cluster-signing-duration`); a request's `spec.expirationSeconds` may ask for less.
    pub cluster_signing_duration: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            bookmark_interval: Duration::from_secs(60),
            watch_cache_capacity: 1000,
            garbage_collector: false,
            namespace_controller: false,
            server_address: "127.0.0.1:6443".into(),
            skiff_version: "0.0.0".into(),
            kubelet_client: None,
            service_ranges: crate::services::ServiceRanges::default(),
            default_services: None,
            token_signer: None,
            service_account_admission: false,
            default_toleration_seconds: None,
            csr_signer: None,
            cluster_signing_duration: crate::certificates::signer::DEFAULT_VALIDITY,
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub username: String,
    /// Groups.
    pub groups: Vec<String>,
}

/// The shared state of the server.
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    registry: RwLock<Registry>,
    caches: Mutex<HashMap<String, Arc<WatchCache>>>,
    printer_columns: RwLock<HashMap<(String, String, String), Vec<PrinterColumn>>>,
    tokens: RwLock<HashMap<String, Identity>>,
    generation: AtomicU64,
    documents: Mutex<HashMap<String, (u64, bytes::Bytes)>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Options.
    pub options: ServerOptions,
    /// Turns true when the server shuts down; long requests (watches) end then.
    pub shutdown: watch::Receiver<bool>,
    /// Wakes the keeper of the default Services (one of them was deleted).
    pub services_wakeup: tokio::sync::Notify,
    /// The index of the RBAC objects authorization reads.
    pub rbac: crate::authz::RbacCache,
    /// The graph of what each node may read, kept current from the watch caches.
    pub node_graph: crate::authz::graph::NodeGraph,
    /// Which namespaces exist and which are terminating, kept current from the watch cache.
    pub namespaces: crate::namespaces::NamespaceIndex,
}

impl AppState {
    /// State over `store` with the built-in resources.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Registry,
        options: ServerOptions,
        shutdown: watch::Receiver<bool>,
    ) -> AppState {
        AppState {
            store,
            registry: RwLock::new(registry),
            caches: Mutex::new(HashMap::new()),
            printer_columns: RwLock::new(HashMap::new()),
            tokens: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            documents: Mutex::new(HashMap::new()),
            metrics: Metrics::new(),
            options,
            shutdown,
            services_wakeup: tokio::sync::Notify::new(),
            rbac: crate::authz::RbacCache::new(),
            node_graph: crate::authz::graph::NodeGraph::new(),
            namespaces: crate::namespaces::NamespaceIndex::new(),
        }
    }

    /// Accepts `token` as a bearer token for `identity`.
    pub fn add_token(&self, token: &str, identity: Identity) {
        if let Ok(mut tokens) = self.tokens.write() {
            tokens.insert(token.to_string(), identity);
        }
    }

    /// Who the bearer token belongs to.
    pub fn authenticate(&self, token: &str) -> Option<Identity> {
        self.tokens.read().ok()?.get(token).cloned()
    }

    /// A copy of the registry as it is now.
    pub fn registry(&self) -> Registry {
        self.registry.read().map(|r| r.clone()).unwrap_or_default()
    }

    /// The resource served at group/version/plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResourceInfo> {
        self.registry
            .read()
            .ok()?
            .find(group, version, plural)
            .cloned()
    }

    /// Every served version of a group's resource (`plural`).
    pub fn versions_of(&self, group: &str, plural: &str) -> Vec<ResourceInfo> {
        self.registry
            .read()
            .map(|r| {
                r.all()
                    .iter()
                    .filter(|i| i.group == group && i.plural == plural)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Serves a resource (from a CRD), with its printer columns, and starts its watch cache.
    pub fn register(&self, info: ResourceInfo, columns: Vec<PrinterColumn>, from: Revision) {
        self.ensure_cache(&info, from);
        if let Ok(mut map) = self.printer_columns.write() {
            map.insert(
                (
                    info.group.clone(),
                    info.version.clone(),
                    info.plural.clone(),
                ),
                columns,
            );
        }
        if let Ok(mut registry) = self.registry.write() {
            registry.add(info);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Stops serving one version of a resource.
    pub fn unregister_version(&self, group: &str, version: &str, plural: &str) {
        if let Ok(mut registry) = self.registry.write() {
            let kept: Vec<ResourceInfo> = registry
                .all()
                .iter()
                .filter(|r| r.group == group && r.plural == plural && r.version != version)
                .cloned()
                .collect();
            registry.remove(group, plural);
            for info in kept {
                registry.add(info);
            }
        }
        if let Ok(mut map) = self.printer_columns.write() {
            map.remove(&(group.to_string(), version.to_string(), plural.to_string()));
        }
        if self.versions_of(group, plural).is_empty() {
            self.drop_cache(&format!("{group}/{plural}"));
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// A document derived from the registry (OpenAPI), computed once per registry change.
    pub fn document(
        &self,
        key: &str,
        build: impl FnOnce(&Registry) -> Option<serde_json::Value>,
    ) -> Option<bytes::Bytes> {
        let generation = self.generation.load(Ordering::SeqCst);
        if let Ok(docs) = self.documents.lock()
            && let Some((at, bytes)) = docs.get(key)
            && *at == generation
        {
            return Some(bytes.clone());
        }
        let doc = build(&self.registry())?;
        let bytes = bytes::Bytes::from(serde_json::to_vec(&doc).ok()?);
        if let Ok(mut docs) = self.documents.lock() {
            docs.insert(key.to_string(), (generation, bytes.clone()));
        }
        Some(bytes)
    }

    /// The printer columns of a custom resource version, if it is one.
    pub fn printer_columns(&self, info: &ResourceInfo) -> Option<Vec<PrinterColumn>> {
        self.printer_columns
            .read()
            .ok()?
            .get(&(
                info.group.clone(),
                info.version.clone(),
                info.plural.clone(),
            ))
            .cloned()
    }

    /// The watch cache of a resource, started from `from` if it did not exist.
    pub fn ensure_cache(&self, info: &ResourceInfo, from: Revision) -> Arc<WatchCache> {
        let resource = info.storage_resource();
        let Ok(mut caches) = self.caches.lock() else {
            return WatchCache::new(from, self.options.watch_cache_capacity);
        };
        if let Some(cache) = caches.get(&resource) {
            return Arc::clone(cache);
        }
        let cache = WatchCache::new(from, self.options.watch_cache_capacity);
        if let Ok(prefix) = ResourceKey::list_prefix(&resource, None) {
            cache.start(Arc::clone(&self.store), prefix);
        }
        caches.insert(resource, Arc::clone(&cache));
        cache
    }

    /// The watch cache of a resource.
    pub async fn cache(&self, info: &ResourceInfo) -> Result<Arc<WatchCache>, ApiError> {
        if let Ok(caches) = self.caches.lock()
            && let Some(cache) = caches.get(&info.storage_resource())
        {
            return Ok(Arc::clone(cache));
        }
        let from = self
            .store
            .current_revision()
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(self.ensure_cache(info, from))
    }

    fn drop_cache(&self, storage_resource: &str) {
        if let Ok(mut caches) = self.caches.lock()
            && let Some(cache) = caches.remove(storage_resource)
        {
            cache.stop();
        }
    }

    /// Stops every watch cache (at shutdown).
    pub fn stop_caches(&self) {
        if let Ok(mut caches) = self.caches.lock() {
            for (_, cache) in caches.drain() {
                cache.stop();
            }
        }
    }
}
