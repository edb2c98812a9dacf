//! The one error type of every store operation, with the key and revisions involved.

/// Why a store operation failed.
///
/// The first variants are answers the caller acts on (the API server maps them to Kubernetes
/// statuses: 404, 409, 410, 413); [`Backend`](StoreError::Backend) and
/// [`Closed`](StoreError::Closed) mean the store itself could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key does not exist (never created, or deleted).
    #[error("key {key:?} not found")]
    NotFound {
        /// The key asked for.
        key: String,
    },

    /// A create found the key already present.
    #[error("key {key:?} already exists (at revision {mod_revision})")]
    AlreadyExists {
        /// The key asked for.
        key: String,
        /// The modification revision of the value that is there.
        mod_revision: i64,
    },

    /// A compare-and-swap precondition failed: the key changed since the caller read it.
    #[error(
        "key {key:?} was modified: expected revision {expected}, found {current}; read it again and retry"
    )]
    Conflict {
        /// The key asked for.
        key: String,
        /// The modification revision the caller expected.
        expected: i64,
        /// The key's modification revision now.
        current: i64,
    },

    /// The revision asked for (a list at a revision, a continue token, a watch start) is older
    /// than the compaction point: its history is gone.
    #[error(
        "revision {requested} has been compacted{}; list again to get a newer revision",
        compacted.map(|c| format!(" (compacted up to {c})")).unwrap_or_default()
    )]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The compaction point, where the backend says it.
        compacted: Option<i64>,
    },

    /// The revision asked for is newer than the store's current revision.
    #[error("revision {requested} is in the future (the store is at revision {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision (0 where the backend does not say).
        current: i64,
    },

    /// A value is larger than [`MAX_VALUE_SIZE`](crate::MAX_VALUE_SIZE).
    #[error("value of key {key:?} is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// The key written.
        key: String,
        /// The value's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },

    /// A key that no store can hold (empty).
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey {
        /// The key given.
        key: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The backend failed (I/O, SQL, network, etcd unavailable).
    #[error("{backend} store failed to {operation}: {source}")]
    Backend {
        /// Which implementation: `sqlite`, `etcd`, `memory`.
        backend: &'static str,
        /// What it was doing, e.g. `list "/registry/pods/"`.
        operation: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The store has been shut down (its writer is gone).
    #[error("{backend} store is closed")]
    Closed {
        /// Which implementation.
        backend: &'static str,
    },
}

impl StoreError {
    /// A [`Backend`](StoreError::Backend) error.
    pub(crate) fn backend(
        backend: &'static str,
        operation: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Backend {
            backend,
            operation: operation.into(),
            source: source.into(),
        }
    }
}
