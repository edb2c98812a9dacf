//! The Kubernetes REST API server of Skiff.
//!
//! One generic resource handler serves every resource, built-in or custom (list, get, create,
//! update, patch, delete, deletecollection, watch, subresources), parameterised by the
//! resource's [`skiff_apimachinery::ResourceInfo`] and the small rules of [`strategy`]. Every
//! resource has one watch cache fed by a single store watch ([`watchcache`]), which serves all
//! client watches. Around it: discovery (legacy and aggregated), client-certificate and bearer-token
//! authentication, node credentials ([`certificates`]),
//! `Status` errors, managed fields and server-side apply ([`fieldmanager`]), Prometheus
//! metrics, CRDs, TLS material for a fresh cluster ([`pki`]), and
//! Service addresses and the default Services ([`services`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use skiff_apiserver::{ApiServer, ServerOptions, pki::ServerPki};
//!
//! let store = Arc::new(skiff_store::MemoryStore::new());
//! let pki = ServerPki::load_or_create(std::path::Path::new("/tmp/skiff/server"), &["localhost".into()])?;
//! let server = ApiServer::new(store, ServerOptions::default(), &pki.admin_token).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:6443").await?;
//! server.serve(listener, pki.rustls_config()?, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(())
//! # }
//! ```

pub mod admission;
pub mod authz;
pub mod certificates;
pub mod crd;
pub mod custom_resource;
pub mod default_storage_class;
pub mod default_tolerations;
pub mod discovery;
pub mod fieldmanager;
pub mod handlers;
pub mod metrics;
pub mod mirror;
pub mod namespaces;
pub mod noderestriction;
pub mod object;
pub mod pki;
pub mod priority;
pub mod protobuf;
pub mod response;
pub mod route;
pub mod server;
pub mod serviceaccount;
pub mod services;
pub mod state;
pub mod status;
pub mod storage;
pub mod strategy;
pub mod version;
pub mod watchcache;

pub use server::{ApiServer, MAX_BODY, SYSTEM_NAMESPACES, ServerError};
pub use state::{AppState, Identity, ServerOptions};
pub use status::ApiError;
pub use version::{KUBERNETES_MINOR, VersionInfo};
