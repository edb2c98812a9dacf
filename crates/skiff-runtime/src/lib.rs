//! The OCI runtime of Skiff: an OCI bundle (rootfs + `config.json`) in, a contained process out.
//!
//! `create` reads `config.json` (through `oci-spec`) into a [`plan::Plan`] of plain data, makes
//! the container's cgroup, and forks the init ([`init`]), which joins or creates namespaces,
//! sets up the root filesystem ([`rootfs`]), reports ready over a typed channel ([`sync`]) and
//! waits on the exec FIFO; `start` releases it to exec the user program. The state record of
//! each container lives under the runtime root (`ROOT/ID/state.json`); every verb refreshes the
//! status from the system before it checks its guard ([`container`]).

pub mod clock;
pub mod container;
pub mod hooks;
pub mod init;
pub mod listener;
pub mod paths;
pub mod plan;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sync;

pub use container::{ContainerError, CreateOptions};
pub use state::{ContainerState, ContainerStatus, Record, StateError, StateStore};
