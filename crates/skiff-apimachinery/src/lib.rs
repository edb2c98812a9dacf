//! Kubernetes apimachinery for Skiff, with no I/O.
//!
//! Today: label selectors (`app=web,tier!=db,env in (a,b),!legacy`), parsed and matched the way
//! `kubectl get -l` and the API server's `labelSelector` parameter do. The resource registry,
//! quantities, validation, defaulting, strategic-merge metadata and Table conversion join it as
//! the API server issue fills this crate.

pub mod labels;
pub mod registry;

pub use labels::{LabelSelector, Requirement, SelectorError};
pub use registry::{Registry, ResourceInfo};
