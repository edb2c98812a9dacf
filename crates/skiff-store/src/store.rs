//! The store interface the API server holds as `Arc<dyn Store>`.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use crate::{Deleted, Event, KeyValue, ListResult, Revision, StoreError};

/// The events of a watch, in revision order. After an `Err` item the stream ends; a stream
/// that ends without one ended because the store was shut down.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

/// A versioned key/value store: every write gets the next revision of one global counter, old
/// revisions stay readable (list at a revision, watch from a revision) until compacted.
///
/// Keys are UTF-8 strings ordered by their bytes; values are at most
/// [`MAX_VALUE_SIZE`](crate::MAX_VALUE_SIZE) bytes.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The key's current version, `None` if it does not exist.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// One page of the keys that start with `prefix`, in key order, as of one revision.
    ///
    /// - `limit`: at most this many items (`None` or `Some(0)`: all of them).
    /// - `continue_from`: start at this key (inclusive), the
    ///   [`ListResult::continue_from`] of the previous page.
    /// - `revision`: read the state as of this revision (`None`: the current one). Pass the
    ///   first page's [`ListResult::revision`] with every continue, so all pages form one
    ///   snapshot. Fails with [`StoreError::Compacted`] if that revision has been compacted,
    ///   [`StoreError::FutureRevision`] if it is newer than the store.
    async fn list(
        &self,
        prefix: &str,
        limit: Option<usize>,
        continue_from: Option<&str>,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError>;

    /// Creates the key; returns the revision of the create. [`StoreError::AlreadyExists`] if
    /// it exists.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError>;

    /// Replaces the key's value if its modification revision is still `expected_mod_revision`;
    /// returns the new revision. [`StoreError::Conflict`] (with the current revision) if it
    /// changed, [`StoreError::NotFound`] if it does not exist.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError>;

    /// Deletes the key, if `expected_mod_revision` is given only when it still matches
    /// ([`StoreError::Conflict`] otherwise); returns what was deleted and the delete's
    /// revision. [`StoreError::NotFound`] if it does not exist.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError>;

    /// Every change under `prefix` after `from_revision` (exclusive), in revision order,
    /// none missed and none repeated, then live changes as they are committed.
    ///
    /// Typically `from_revision` is the revision of a list. Fails with
    /// [`StoreError::Compacted`] when `from_revision` is older than the compaction point; that
    /// error may also arrive as the stream's first item (a compaction raced the watch).
    async fn watch(&self, prefix: &str, from_revision: Revision)
    -> Result<WatchStream, StoreError>;

    /// Drops the history before `revision`: afterwards lists at older revisions and watches
    /// from older revisions fail with [`StoreError::Compacted`]. Compacting to a revision at or
    /// below the current compaction point does nothing.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The revision of the last write (the store's current revision).
    async fn current_revision(&self) -> Result<Revision, StoreError>;
}
