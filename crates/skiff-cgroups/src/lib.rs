//! cgroup v1 and v2 management for Skiff: one interface ([`CgroupManager`]) over the v1
//! hierarchies of a legacy or hybrid host and the single cgroup2 hierarchy of a unified host.
//!
//! The OCI runtime uses it for containers, the node agent for pod cgroups:
//!
//! ```no_run
//! use skiff_cgroups::{CgroupManager, Manager, Mounts, Signal};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let resources = oci_spec::runtime::LinuxResources::default();
//! # let pid = 1;
//! let mounts = Mounts::of_this_process()?;
//! let cgroup = Manager::new(&mounts, "/skiff/abc")?; // or the bundle's linux.cgroupsPath
//! cgroup.create()?;
//! cgroup.apply(&resources)?;
//! cgroup.add_process(pid)?;
//! cgroup.freeze()?;
//! cgroup.thaw()?;
//! let stats = cgroup.stats()?;
//! cgroup.kill_all(Signal::SIGKILL)?;
//! cgroup.destroy()?;
//! # Ok(())
//! # }
//! ```
//!
//! How it is built: [`plan`] turns OCI resources into `(controller, file, value)` writes in pure
//! functions (unit-tested without root); the managers gather a few facts about the host, then a
//! thin executor writes the plan in order. Every cgroup root is a parameter (through
//! [`Mounts`]), so tests point a manager at a temp dir laid out like cgroupfs.

mod error;
mod fsio;
pub mod layout;
mod manager;
mod path;
pub mod plan;
mod stats;
mod v1;
mod v2;

pub use error::{CgroupError, Result};
pub use layout::{CgroupLayout, LayoutError, Mounts};
pub use manager::{CgroupManager, DEFAULT_TIMEOUT, FreezerState, Manager};
pub use nix::sys::signal::Signal;
pub use path::CgroupPath;
pub use stats::{CpuStats, MemoryStats, PidsStats, Stats, flat_keyed, parse_limit, parse_u64};
pub use v1::V1Manager;
pub use v2::V2Manager;
