//! The Skiff node agent: the kubelet's job.
//!
//! Today: the container restart back-off behind `CrashLoopBackOff` (10 s doubling to 5 min, reset
//! once a container has run for 10 min, as the kubelet does). The agent issue adds node
//! registration, the lease, pod workers, probes, volumes, status and the node API.

pub mod restart;

pub use restart::RestartBackoff;
