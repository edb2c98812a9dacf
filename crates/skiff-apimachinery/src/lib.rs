//! Kubernetes apimachinery for Skiff, with no I/O.
//!
//! The pure pieces the API server needs, on top of the `k8s-openapi` types, with objects as
//! `serde_json::Value`:
//!
//! - [`cidr`]: IPv4 CIDR blocks and port ranges for the address allocators;
//! - [`labels`]: label selectors (`app=web,tier!=db,env in (a,b),!legacy`);
//! - [`fieldmanager`]: server-side apply and `metadata.managedFields` (field sets, merge by
//!   list type, conflicts, ownership);
//! - [`fields`]: field selectors (`metadata.name=web,status.phase!=Failed`) and the fields each
//!   kind can be selected by;
//! - [`defaults`]: the values kube-apiserver fills in (`restartPolicy: Always` ...);
//! - [`openapi`]: the `/openapi/v3` index and documents and `/openapi/v2`, for `kubectl explain`
//!   and client-side apply;
//! - [`registry`]: every resource served (group/version/kind/plural/namespaced ...);
//! - [`schema`]: the JSON schemas of the built-in kinds (from `k8s-openapi`);
//! - [`smp`]: strategic merge patch with Kubernetes' merge keys and directives;
//! - [`structural`]: custom resources against their CRD's schema: validation, pruning,
//!   defaulting, and the checks a CRD's schema must pass;
//! - [`table`]: objects as a `meta.k8s.io/v1` `Table` with the columns `kubectl get` shows;
//! - [`time`]: RFC 3339 timestamps and kubectl's `HumanDuration` ages;
//! - [`validation`]: field errors with kube-apiserver's paths and messages, unknown fields.

pub mod cidr;
pub mod defaults;
pub mod fieldmanager;
pub mod fields;
pub mod labels;
pub mod openapi;
pub mod quantity;
pub mod registry;
pub mod schema;
pub mod smp;
pub mod structural;
pub mod table;
pub mod time;
pub mod validation;

pub use defaults::{apply_defaults, apply_scheme_defaults, apply_server_set};
pub use fields::{FieldSelector, FieldSelectorError};
pub use labels::{LabelSelector, Requirement, SelectorError, labels_of};
pub use registry::{Registry, ResourceInfo};
pub use smp::{PatchError, strategic_merge};
pub use table::{IncludeObject, PrinterColumn, to_table, to_table_with_columns};
pub use validation::{FieldError, duplicate_fields, unknown_fields, validate};
