//! The versioned key/value store behind the Skiff API server.
//!
//! Today: the key layout every implementation shares (`/registry/RESOURCE/NAMESPACE/NAME`, with
//! prefixes for listing one namespace or all of them). The API server issue adds the store trait
//! and its SQLite, etcd and memory implementations with one conformance suite.

pub mod key;

pub use key::{KeyError, ResourceKey};
