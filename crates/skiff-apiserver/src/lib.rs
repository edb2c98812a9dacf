//! The Kubernetes REST API server of Skiff.
//!
//! Today: the `/version` document (`version.Info` of apimachinery) that kubectl reads first, and
//! the Kubernetes version Skiff serves. The API server issue adds discovery, OpenAPI, the generic
//! resource handler, watch, authentication and the rest.

pub mod version;

pub use version::{KUBERNETES_MINOR, VersionInfo};
