//! Whole-system tests of Skiff live in `tests/`: repository policy (the layering rules of
//! `docs/architecture.md`), the `skiff` binary as users run it, and end-to-end runs against real
//! kubectl, registries and etcd as later issues add them.
//!
//! This library only locates the workspace for those tests.

use std::path::PathBuf;

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
