//! The Skiff controllers: ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, CronJob,
//! endpoints, garbage collection, nodes, namespaces and service accounts.
//!
//! Today: the per-key exponential back-off of the work queue (client-go's
//! `ItemExponentialFailureRateLimiter`: 5 ms doubling per failure up to 1000 s, forgotten on
//! success). The controllers issue adds the controllers themselves.

pub mod backoff;

pub use backoff::{BackoffError, ItemBackoff};
