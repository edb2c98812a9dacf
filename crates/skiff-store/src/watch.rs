//! The watch of the embedded stores (memory, SQLite): catch-up from the history they keep,
//! then live events from the in-process fan-out of committed batches.
//!
//! A watch subscribes to the fan-out *before* it reads history, and the writer publishes a
//! batch only after committing it, so every event is either in the history read or in the
//! fan-out (or both, and then the revision filter drops the repeat). A watcher that falls so
//! far behind that the fan-out drops batches for it reads the gap from history again.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::{Event, Revision, StoreError, WatchStream};

/// The events of one committed write batch, in revision order.
pub(crate) type Batch = Arc<[Event]>;

/// How many batches the fan-out keeps for a slow watcher before it must catch up from history.
pub(crate) const FANOUT_CAPACITY: usize = 1024;

/// How many events one history read returns at most.
const CATCH_UP_PAGE: usize = 512;

/// A page of history.
pub(crate) struct HistoryPage {
    /// Events after the asked revision under the prefix, in revision order.
    pub events: Vec<Event>,
    /// The revision up to which history has been read: the last event's revision for a full
    /// page, the store's revision at the read for a short one.
    pub scanned_to: Revision,
}

/// Where a watch reads the history it missed.
#[async_trait::async_trait]
pub(crate) trait History: Send + Sync + 'static {
    /// Up to `limit` events under `prefix` with revisions after `after`;
    /// [`StoreError::Compacted`] if `after` is older than the compaction point.
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<HistoryPage, StoreError>;
}

/// State of one watch stream.
struct Watcher<H> {
    history: H,
    prefix: String,
    /// Every event up to here has been delivered (or did not match the prefix).
    seen: Revision,
    live: broadcast::Receiver<Batch>,
    pending: VecDeque<Event>,
    catching_up: bool,
    failed: bool,
}

/// Starts a watch: `live` must have been subscribed before this call. Reads the first page of
/// history now so that a compacted start fails the call itself.
pub(crate) async fn watch<H: History>(
    history: H,
    live: broadcast::Receiver<Batch>,
    prefix: &str,
    from_revision: Revision,
) -> Result<WatchStream, StoreError> {
    let mut watcher = Watcher {
        history,
        prefix: prefix.to_string(),
        seen: from_revision,
        live,
        pending: VecDeque::new(),
        catching_up: true,
        failed: false,
    };
    watcher.catch_up().await?;
    Ok(Box::pin(futures::stream::unfold(
        watcher,
        |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item, watcher))
        },
    )))
}

impl<H: History> Watcher<H> {
    /// Reads one page of history into `pending`.
    async fn catch_up(&mut self) -> Result<(), StoreError> {
        let page = self
            .history
            .events_after(&self.prefix, self.seen, CATCH_UP_PAGE)
            .await?;
        if page.events.len() < CATCH_UP_PAGE {
            self.catching_up = false;
        }
        self.pending.extend(page.events);
        // Everything up to `scanned_to` is now in `pending`, which drains before the fan-out
        // is read again, so the repeat filter may move on already.
        self.seen = self.seen.max(page.scanned_to);
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.catching_up {
                if let Err(error) = self.catch_up().await {
                    self.failed = true;
                    return Some(Err(error));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(batch) => {
                    for event in batch.iter() {
                        if event.revision() > self.seen && event.key().starts_with(&self.prefix) {
                            self.pending.push_back(event.clone());
                        }
                    }
                    if let Some(last) = batch.last() {
                        self.seen = self.seen.max(last.revision());
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
