//! The privileged edge of Skiff: the one crate allowed `unsafe` code and raw system calls.
//!
//! Everything above it calls plain, safe functions with errors that name the operation and its
//! target: namespaces (kinds, identities, unshare, setns), mounts and pivot_root, device nodes,
//! fork/exec and process identity, descriptors that must not leak into a container, and the
//! `prctl` flags a runtime needs.

pub mod capabilities;
pub mod error;
pub mod fd;
pub mod fifo;
pub mod mount;
pub mod namespace;
pub mod process;
pub mod pty;
pub mod seccomp;

pub use error::{SysError, SysResult};
pub use namespace::{NamespaceError, NamespaceId, NamespaceKind};
pub use nix::errno::Errno;
pub use process::{ProcessError, is_child_subreaper, set_child_subreaper};
