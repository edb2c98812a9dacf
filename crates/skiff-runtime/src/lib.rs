//! The OCI runtime of Skiff: an OCI bundle (rootfs + `config.json`) in, a contained process out.
//!
//! Today: the container lifecycle state machine of the runtime spec (`creating`, `created`,
//! `running`, `stopped`, `paused`) with the guards every verb checks first, and the state record
//! kept under the runtime root (`ROOT/ID/state.json`), which `skiff runtime state ID` prints in
//! the JSON shape runc prints. The runtime issue adds create/start/kill/delete/exec and the rest.

pub mod state;

pub use state::{ContainerState, ContainerStatus, StateError, StateStore};
