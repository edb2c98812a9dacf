//! The conformance suite against [`MemoryStore`], and the scheduled compactor.

// Test code: clippy.toml allows unwrap in #[test] functions, not in the helpers and fixtures
// around them.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod conformance;

use std::sync::Arc;
use std::time::Duration;

use skiff_store::{CompactionPolicy, Compactor, MemoryStore, Store, StoreError};

struct Memory {
    store: Arc<MemoryStore>,
}

#[async_trait::async_trait]
impl conformance::Backend for Memory {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn reconnect(&self) -> Arc<dyn Store> {
        self.store.clone()
    }
}

async fn memory() -> Memory {
    Memory {
        store: Arc::new(MemoryStore::new()),
    }
}

conformance_tests!(memory);

#[tokio::test(start_paused = true)]
async fn the_compactor_keeps_one_interval_of_history_and_a_minimum_of_revisions() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let policy = CompactionPolicy {
        interval: Duration::from_secs(60),
        keep_revisions: 5,
    };
    let _compactor = Compactor::spawn(Arc::clone(&store), policy);
    let mut revision = store.create("/c/k", "0".into()).await.unwrap();
    for i in 1..20 {
        revision = store
            .update("/c/k", i.to_string().into(), revision)
            .await
            .unwrap();
    }
    // First tick (at start) only records revision 20; the second compacts to it.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let at_first_tick = store.current_revision().await.unwrap();
    for i in 20..40 {
        revision = store
            .update("/c/k", i.to_string().into(), revision)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Compacted to the revision of the previous tick: older lists fail, newer work.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match store.list("/c/", None, None, Some(at_first_tick - 1)).await {
            Err(StoreError::Compacted { .. }) => break,
            Ok(_) if tokio::time::Instant::now() < deadline => tokio::task::yield_now().await,
            other => panic!("expected the compactor to have run, got {other:?}"),
        }
    }
    store
        .list("/c/", None, None, Some(at_first_tick))
        .await
        .unwrap();
}
