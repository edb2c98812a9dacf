//! The Skiff scheduler: filter and score plugins as pure functions over a snapshot of nodes and
//! pods, plus a binder.
//!
//! - [`snapshot`]: nodes with the pods on them, what they request and the host ports they use;
//! - [`filters`]: `NodeUnschedulable`, `NodeName`, `TaintToleration` (with the not-ready and
//!   unreachable taints of nodes whose `Ready` condition is not `True`), `NodeAffinity`
//!   (`nodeSelector` and required terms), `NodePorts`, `NodeResourcesFit` (CPU, memory, pod
//!   count; init containers and sidecars counted as kube-scheduler does), `PodTopologySpread`
//!   and `InterPodAffinity`;
//! - [`topology_spread`]: `topologySpreadConstraints` (`DoNotSchedule` filter, `ScheduleAnyway`
//!   score, `minDomains`, `matchLabelKeys`, node affinity and taint policies);
//! - [`default_spread`]: kube-scheduler's system default spreading (zone `maxSkew` 5,
//!   hostname `maxSkew` 3, soft) for pods of Services and controllers without constraints;
//! - [`scores`]: least allocated, balanced allocation, PreferNoSchedule taints, preferred node
//!   affinity, preferred pod affinity and anti-affinity, and `PodTopologySpread`;
//! - [`volumes`]: `VolumeBinding` (claims exist, volume node affinity, selected nodes for
//!   `WaitForFirstConsumer` claims);
//! - [`preemption`]: evicting lower-priority pods for a pod that fits nowhere (victims per
//!   node, kube-scheduler's choice of node, nominated pods holding the freed room);
//! - [`algorithm`]: one decision, or a [`FitError`] with kube-scheduler's message;
//! - [`cache`]: the nodes and placed pods, updated from watch events (no rebuild per pass);
//! - [`queue`]: the pending pods, event by event from their watch: active (priority, then
//!   age), back-off and unschedulable, as kube-scheduler's scheduling queue;
//! - [`scheduler`]: the loop over the API (watches, queue, assumed pods, binder, back-off,
//!   `PodScheduled=False` and `FailedScheduling` events). [`run`] is the entry point.

pub mod affinity;
pub mod algorithm;
pub mod cache;
pub mod default_spread;
pub mod events;
pub mod filters;
pub mod preemption;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod scheduler;
pub mod scores;
pub mod snapshot;
pub mod topology_spread;
pub mod volumes;

#[cfg(test)]
mod tests;

pub use algorithm::{FitError, Placement, Search, schedule, schedule_with};
pub use resources::{Resources, balanced_allocation_score, fits, least_allocated_score};
pub use scheduler::{SchedulerError, SchedulerOptions, run, run_with};
pub use snapshot::{NodeInfo, Snapshot};
