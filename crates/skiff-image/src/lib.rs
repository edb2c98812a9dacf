//! Images for Skiff: content store, registry client, layers, snapshots and commit.
//!
//! Today: image references parsed as users expect (`busybox` is
//! `docker.io/library/busybox:latest`; `host:port/repo:tag`; `repo@sha256:...`). The images
//! issue adds the content store, the registry client, import/export, unpacking and commit.

pub mod reference;

pub use reference::{Reference, ReferenceError};
