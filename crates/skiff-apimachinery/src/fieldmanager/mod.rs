//! Server-side apply and `metadata.managedFields`, as kube-apiserver's field manager and
//! structured-merge-diff do them, with objects as `serde_json::Value`.
//!
//! - [`path`]: path elements (`f:name`, `k:{"name":"web"}`, `v:"a"`, `i:0`) and paths as
//!   conflict messages print them (`.spec.containers[name="web"].image`);
//! - [`fieldset`]: sets of paths, their union, difference and intersection, and their
//!   `FieldsV1` form;
//! - [`typeref`]: what the schema says of each node (granular or atomic maps, atomic,
//!   set and associative lists), for built-in kinds and for CRDs' structural schemas;
//! - [`walk`]: an object's field set, the merge of an applied configuration, removal of
//!   items by path, and field-by-field comparison;
//! - [`managers`]: the managed fields entries and the two operations, [`apply`] and
//!   [`update`], with kube's conflict messages;
//! - [`cap`]: kube's cap of ten `Update` entries, the oldest merged into `ancient-changes`;
//! - [`last_applied`]: `kubectl apply --server-side` taking over from client-side apply.

pub mod cap;
pub mod fieldset;
pub mod last_applied;
pub mod managers;
pub mod path;
pub mod typeref;
pub mod walk;

pub use cap::{ANCIENT_CHANGES, MAX_UPDATE_MANAGERS, cap_update_entries};
pub use fieldset::FieldSet;
pub use last_applied::apply_upgrading_client_side;
pub use managers::{
    ApplyError, Conflict, Entry, ManagedFields, Operation, Scope, Writer, apply, conflict_message,
    update,
};
pub use path::{Path, PathElement};
pub use typeref::{ListType, TypeRef};

/// Why managed fields or an applied configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldManagerError {
    /// A `fieldsV1` key that is not `f:`, `k:`, `v:`, `i:` or `.`.
    #[error("invalid path element {element:?} in fieldsV1")]
    BadPathElement {
        /// The key.
        element: String,
    },
    /// A `fieldsV1` node that is not an object.
    #[error("fieldsV1 nodes must be objects, found {found}")]
    BadFieldsV1 {
        /// The node, as JSON.
        found: String,
    },
    /// A `managedFields` entry that cannot be read.
    #[error("invalid managedFields entry: {why}")]
    BadEntry {
        /// What is wrong.
        why: String,
    },
    /// An associative list item without one of its key fields.
    #[error(
        "{path}: element {index}: associative list with keys has an element that omits key field {key:?} (and doesn't have default value)"
    )]
    MissingListKey {
        /// The list's path.
        path: String,
        /// The item's index.
        index: usize,
        /// The key field missing.
        key: String,
    },
}
