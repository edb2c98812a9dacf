//! The local container manager of Skiff, shared by the CLI (`skiff run/ps/exec/...`) and the
//! node agent: images, snapshots, the runtime and a per-container monitor.
//!
//! Today: container ids and names as Docker users know them (64 hex digits, addressable by any
//! unique prefix; names `[a-zA-Z0-9][a-zA-Z0-9_.-]*`). The images issue adds the rest.

pub mod naming;

pub use naming::{ContainerId, NamingError, resolve_prefix, validate_name};
