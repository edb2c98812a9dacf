//! Images for Skiff: content store, registry client, import/export, layers and snapshots.
//!
//! The model is containerd's split: image *bytes* live in a digest-addressed
//! [`ContentStore`](content::ContentStore) (every write verified before it becomes visible),
//! *filesystems* live in per-layer snapshots keyed by ChainID
//! ([`Snapshotter`](snapshot::Snapshotter)), and a container's root filesystem comes back as
//! [`Mount`]s (data) for the runtime to perform. Names point at manifests through
//! [`records`]. [`ImageStore`] ties them together for one data root:
//!
//! ```no_run
//! # async fn demo() -> skiff_image::Result<()> {
//! use std::sync::Arc;
//! use skiff_image::{ImageStore, PullOptions, Reference};
//!
//! let store = ImageStore::open("/var/lib/skiff".as_ref())?;
//! let events: skiff_image::PullEvents = Arc::new(|_event| {});
//! store.pull(&Reference::parse("busybox")?, &PullOptions::default(), &events).await?;
//! let image = store.resolve("busybox")?; // config + chain of snapshots
//! let mounts = store.prepare_rootfs(&image, "/var/lib/skiff/containers/c1".as_ref())?;
//! # let _ = mounts;
//! # Ok(())
//! # }
//! ```

pub mod archive;
pub mod commit;
pub mod content;
pub mod digest;
pub mod error;
pub mod oci;
pub mod pull;
pub mod records;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
mod stream_unpack;
pub mod unpack;

pub use commit::{CommitRequest, Committed};
pub use digest::Digest;
pub use error::{ImageError, Result};
pub use oci::{ContainerConfig, ImageConfig, Platform};
pub use pull::{PullEvent, PullEvents, PullOptions};
pub use records::ImageRecord;
pub use reference::{Reference, ReferenceError};
pub use registry::{Credentials, RegistryError, RegistryOptions};
pub use snapshot::Mount;
pub use store::{ImageStore, PruneReport, ResolvedImage};
