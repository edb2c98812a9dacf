//! The versioned key/value store behind the Skiff API server.
//!
//! One trait, [`Store`], with three implementations:
//! - [`SqliteStore`]: the default, embedded in the server process (one database file);
//! - [`EtcdStore`]: etcd v3, for several API servers sharing one cluster;
//! - [`MemoryStore`]: everything in memory, for tests.
//!
//! Every write gets the next revision of one global counter (it becomes the Kubernetes
//! `resourceVersion`); lists read a consistent snapshot at a revision; updates and deletes are
//! compare-and-swap on the key's modification revision; a watch replays every change after a
//! revision and then follows live ones; compaction drops old history, by hand
//! ([`Store::compact`]) or on a schedule ([`Compactor`]). The key layout shared by all of them
//! is in [`key`].
//!
//! ```
//! # async fn demo() -> Result<(), skiff_store::StoreError> {
//! use std::sync::Arc;
//! use skiff_store::{MemoryStore, Store};
//!
//! let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
//! let revision = store.create("/registry/pods/default/web", "{}".into()).await?;
//! let page = store.list("/registry/pods/", None, None, None).await?;
//! assert_eq!(page.items.len(), 1);
//! store.update("/registry/pods/default/web", "{\"a\":1}".into(), revision).await?;
//! # Ok(())
//! # }
//! ```

mod compactor;
mod error;
mod etcd;
pub mod key;
mod memory;
mod sqlite;
mod store;
mod types;
mod watch;

pub use compactor::{CompactionPolicy, Compactor};
pub use error::StoreError;
pub use etcd::{EtcdOptions, EtcdStore};
pub use key::{KeyError, ResourceKey};
pub use memory::MemoryStore;
pub use sqlite::SqliteStore;
pub use store::{Store, WatchStream};
pub use types::{Deleted, Event, KeyValue, ListResult, MAX_VALUE_SIZE, Revision};
