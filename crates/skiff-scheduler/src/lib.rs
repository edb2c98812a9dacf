//! The Skiff scheduler: filter and score plugins as pure functions over a snapshot of nodes and
//! pods, plus a binder.
//!
//! Today: the resource-fit filter and the "least allocated" and "balanced allocation" scores of
//! kube-scheduler, over plain numbers (milli-CPU and bytes). The scheduler issue adds the
//! snapshot, the other plugins and binding.

pub mod resources;

pub use resources::{Resources, balanced_allocation_score, fits, least_allocated_score};
