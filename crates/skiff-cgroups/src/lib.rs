//! cgroup v1 and v2 management for Skiff.
//!
//! Today: finding out which cgroup layout a host has (v1 "legacy", "hybrid" v1 plus a cgroup2
//! mount, or v2 "unified") and where each v1 controller is mounted, from `/proc/self/mountinfo`.
//! The runtime issue adds the v1 and v2 managers behind one interface; the cgroup root is always
//! a parameter so tests can use a temp dir.

pub mod layout;

pub use layout::{CgroupLayout, LayoutError, Mounts};
