//! The conformance suite every [`Store`] implementation passes: one async function per
//! property, generic over a [`Backend`] that makes fresh stores. A test file includes this
//! module and calls `conformance_tests!(its_backend_constructor)`, which expands to one
//! `#[tokio::test]` per case (so nextest runs each in its own process).

// Not every test file uses every helper.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::{Event, MAX_VALUE_SIZE, Revision, Store, StoreError, WatchStream};

/// Makes stores for the suite.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The store under test, empty.
    fn store(&self) -> Arc<dyn Store>;
    /// Another handle to the same data, over a new connection where the backend has one.
    async fn reconnect(&self) -> Arc<dyn Store>;
}

/// How long one case may take.
pub const CASE_DEADLINE: Duration = Duration::from_secs(120);
/// How long one awaited event or answer may take.
pub const STEP_DEADLINE: Duration = Duration::from_secs(20);

/// Runs a case under [`CASE_DEADLINE`].
pub async fn run(case: impl Future<Output = ()>) {
    tokio::time::timeout(CASE_DEADLINE, case)
        .await
        .expect("the case finished within its deadline");
}

/// Expands to one test per conformance case for the backend made by `$make().await`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:path) => {
        $crate::conformance_cases!(
            $make;
            revisions_increase_with_every_write_and_reads_see_them,
            create_of_an_existing_key_fails_with_already_exists,
            update_with_a_stale_revision_conflicts_with_the_current_one,
            delete_honours_its_precondition,
            list_pages_with_continue_form_one_snapshot,
            list_at_an_old_revision_shows_the_old_state,
            list_at_a_future_revision_fails,
            watch_replays_history_from_a_revision_then_follows_live_changes,
            watch_under_concurrent_writers_misses_and_repeats_nothing,
            watch_resumes_after_reconnect_from_the_last_seen_revision,
            a_slow_watcher_still_gets_every_event_in_order,
            compaction_makes_old_revisions_answer_compacted,
            a_continue_at_a_compacted_revision_answers_compacted,
            concurrent_cas_increments_end_with_the_exact_count,
            values_over_the_limit_are_refused,
        );
    };
}

/// Expands to one test per named case.
#[macro_export]
macro_rules! conformance_cases {
    ($make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let backend = $make().await;
                conformance::run(conformance::$case(&backend)).await;
            }
        )*
    };
}

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// The next event of a watch, failing the test on an error, an end or a timeout.
pub async fn next_event(stream: &mut WatchStream) -> Event {
    match tokio::time::timeout(STEP_DEADLINE, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(error))) => panic!("watch failed: {error}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {STEP_DEADLINE:?}"),
    }
}

/// Writes a sentinel key and checks that the watch's very next event is its create: proves
/// that no event is pending (nothing repeated, nothing extra) without waiting on a clock.
async fn expect_only_sentinel_next(store: &dyn Store, stream: &mut WatchStream, key: &str) {
    let revision = store.create(key, b("sentinel")).await.unwrap();
    let event = next_event(stream).await;
    assert_eq!(event.key(), key, "unexpected event {event:?}");
    assert_eq!(event.revision(), revision);
}

async fn expect_compacted_watch(store: &dyn Store, prefix: &str, from: Revision) {
    match store.watch(prefix, from).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, from),
        Err(other) => panic!("expected Compacted, got {other}"),
        Ok(mut stream) => match tokio::time::timeout(STEP_DEADLINE, stream.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => {}
            other => panic!("expected a Compacted watch, got {other:?}"),
        },
    }
}

pub async fn revisions_increase_with_every_write_and_reads_see_them(backend: &impl Backend) {
    let store = backend.store();
    let start = store.current_revision().await.unwrap();
    let r1 = store.create("/t/a", b("1")).await.unwrap();
    let r2 = store.create("/t/b", b("2")).await.unwrap();
    let r3 = store.update("/t/a", b("3"), r1).await.unwrap();
    let deleted = store.delete("/t/b", None).await.unwrap();
    assert!(start < r1 && r1 < r2 && r2 < r3 && r3 < deleted.revision);
    assert_eq!(store.current_revision().await.unwrap(), deleted.revision);

    let a = store.get("/t/a").await.unwrap().unwrap();
    assert_eq!((a.key.as_str(), &a.value[..]), ("/t/a", &b"3"[..]));
    assert_eq!((a.create_revision, a.mod_revision), (r1, r3));
    assert_eq!(store.get("/t/b").await.unwrap(), None);
    assert_eq!(store.get("/t/never").await.unwrap(), None);
    assert_eq!(deleted.kv.value, b("2"));
    assert_eq!(
        (deleted.kv.create_revision, deleted.kv.mod_revision),
        (r2, r2)
    );
}

pub async fn create_of_an_existing_key_fails_with_already_exists(backend: &impl Backend) {
    let store = backend.store();
    let r1 = store.create("/t/a", b("1")).await.unwrap();
    match store.create("/t/a", b("2")).await {
        Err(StoreError::AlreadyExists { key, mod_revision }) => {
            assert_eq!((key.as_str(), mod_revision), ("/t/a", r1));
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(store.get("/t/a").await.unwrap().unwrap().value, b("1"));

    // After a delete the key can be created again, with a new create revision.
    store.delete("/t/a", Some(r1)).await.unwrap();
    let r2 = store.create("/t/a", b("again")).await.unwrap();
    let a = store.get("/t/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (r2, r2));
}

pub async fn update_with_a_stale_revision_conflicts_with_the_current_one(backend: &impl Backend) {
    let store = backend.store();
    let r1 = store.create("/t/a", b("1")).await.unwrap();
    let r2 = store.update("/t/a", b("2"), r1).await.unwrap();
    match store.update("/t/a", b("stale"), r1).await {
        Err(StoreError::Conflict {
            key,
            expected,
            current,
        }) => assert_eq!((key.as_str(), expected, current), ("/t/a", r1, r2)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(store.get("/t/a").await.unwrap().unwrap().value, b("2"));
    assert!(matches!(
        store.update("/t/missing", b("x"), r1).await,
        Err(StoreError::NotFound { key }) if key == "/t/missing"
    ));
    assert!(matches!(
        store.update("/t/missing", b("x"), 0).await,
        Err(StoreError::NotFound { .. })
    ));
    store.delete("/t/a", None).await.unwrap();
    assert!(matches!(
        store.update("/t/a", b("x"), r2).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(store.get("/t/missing").await.unwrap(), None);
}

pub async fn delete_honours_its_precondition(backend: &impl Backend) {
    let store = backend.store();
    let r1 = store.create("/t/a", b("1")).await.unwrap();
    let r2 = store.update("/t/a", b("2"), r1).await.unwrap();
    match store.delete("/t/a", Some(r1)).await {
        Err(StoreError::Conflict {
            expected, current, ..
        }) => assert_eq!((expected, current), (r1, r2)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(store.get("/t/a").await.unwrap().is_some());
    let deleted = store.delete("/t/a", Some(r2)).await.unwrap();
    assert_eq!(deleted.kv.value, b("2"));
    assert_eq!(
        (deleted.kv.create_revision, deleted.kv.mod_revision),
        (r1, r2)
    );
    assert!(deleted.revision > r2);
    assert_eq!(store.get("/t/a").await.unwrap(), None);
    assert!(matches!(
        store.delete("/t/a", None).await,
        Err(StoreError::NotFound { key }) if key == "/t/a"
    ));
    assert!(matches!(
        store.delete("/t/a", Some(r2)).await,
        Err(StoreError::NotFound { .. })
    ));
}

pub async fn list_pages_with_continue_form_one_snapshot(backend: &impl Backend) {
    let store = backend.store();
    // Neighbours that must not show up under "/p/".
    store.create("/p", b("x")).await.unwrap();
    store.create("/p0", b("x")).await.unwrap();
    store.create("/pa/1", b("x")).await.unwrap();
    let mut revisions = BTreeMap::new();
    for i in 0..25 {
        let key = format!("/p/{i:02}");
        revisions.insert(key.clone(), store.create(&key, b(&key)).await.unwrap());
    }
    let expected: Vec<String> = revisions.keys().cloned().collect();

    let first = store.list("/p/", Some(10), None, None).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.revision, store.current_revision().await.unwrap());
    let snapshot = first.revision;
    // Changes after the first page must not show in the later ones.
    store
        .update("/p/20", b("changed"), revisions["/p/20"])
        .await
        .unwrap();
    store.delete("/p/15", None).await.unwrap();
    store.create("/p/99", b("new")).await.unwrap();
    store.create("/p/10a", b("new")).await.unwrap();

    let mut seen = first.items.clone();
    let mut token = first.continue_from.clone();
    let mut pages = 1;
    while let Some(from) = token {
        let page = store
            .list("/p/", Some(10), Some(&from), Some(snapshot))
            .await
            .unwrap();
        assert_eq!(page.revision, snapshot);
        assert!(page.items.len() <= 10);
        seen.extend(page.items);
        token = page.continue_from;
        pages += 1;
        assert!(pages <= 4, "too many pages");
    }
    assert_eq!(pages, 3);
    let keys: Vec<String> = seen.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, expected);
    for kv in &seen {
        assert_eq!(kv.value, b(&kv.key));
        assert_eq!(kv.mod_revision, revisions[&kv.key]);
        assert_eq!(kv.create_revision, revisions[&kv.key]);
    }

    // A fresh list sees the changes; without a limit it is one page.
    let now = store.list("/p/", None, None, None).await.unwrap();
    assert_eq!(now.continue_from, None);
    assert_eq!(now.items.len(), 26);
    assert!(now.items.iter().any(|kv| kv.key == "/p/99"));
    assert!(!now.items.iter().any(|kv| kv.key == "/p/15"));
    let exact = store.list("/p/", Some(26), None, None).await.unwrap();
    assert_eq!(exact.items.len(), 26);
    assert_eq!(
        exact.continue_from, None,
        "an exactly full page is the last"
    );
    assert!(
        store
            .list("/nothing/", Some(5), None, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn list_at_an_old_revision_shows_the_old_state(backend: &impl Backend) {
    let store = backend.store();
    let r1 = store.create("/o/a", b("a1")).await.unwrap();
    store.create("/o/b", b("b1")).await.unwrap();
    let before = store.current_revision().await.unwrap();
    store.update("/o/a", b("a2"), r1).await.unwrap();
    store.delete("/o/b", None).await.unwrap();
    store.create("/o/c", b("c1")).await.unwrap();

    let old = store.list("/o/", None, None, Some(before)).await.unwrap();
    let old: Vec<(String, Bytes)> = old.items.into_iter().map(|kv| (kv.key, kv.value)).collect();
    assert_eq!(
        old,
        vec![("/o/a".to_string(), b("a1")), ("/o/b".to_string(), b("b1"))]
    );
    let now = store.list("/o/", None, None, None).await.unwrap();
    let now: Vec<(String, Bytes)> = now.items.into_iter().map(|kv| (kv.key, kv.value)).collect();
    assert_eq!(
        now,
        vec![("/o/a".to_string(), b("a2")), ("/o/c".to_string(), b("c1"))]
    );
}

pub async fn list_at_a_future_revision_fails(backend: &impl Backend) {
    let store = backend.store();
    store.create("/f/a", b("1")).await.unwrap();
    let current = store.current_revision().await.unwrap();
    match store.list("/f/", None, None, Some(current + 100)).await {
        Err(StoreError::FutureRevision { requested, .. }) => assert_eq!(requested, current + 100),
        other => panic!("expected FutureRevision, got {other:?}"),
    }
}

pub async fn watch_replays_history_from_a_revision_then_follows_live_changes(
    backend: &impl Backend,
) {
    let store = backend.store();
    let r1 = store.create("/w/a", b("a1")).await.unwrap();
    let from = store.create("/w/b", b("b1")).await.unwrap();
    store.create("/other/x", b("x")).await.unwrap();
    let r3 = store.update("/w/a", b("a2"), r1).await.unwrap();
    let deleted = store.delete("/w/b", None).await.unwrap();

    let mut watch = store.watch("/w/", from).await.unwrap();
    // Replay: the update and the delete, with their previous versions; not /other/.
    match next_event(&mut watch).await {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!((kv.key.as_str(), &kv.value[..]), ("/w/a", &b"a2"[..]));
            assert_eq!((kv.create_revision, kv.mod_revision), (r1, r3));
            assert_eq!((prev.value, prev.mod_revision), (b("a1"), r1));
        }
        other => panic!("expected the update of /w/a, got {other:?}"),
    }
    match next_event(&mut watch).await {
        Event::Delete { kv, prev } => {
            assert_eq!(kv.key, "/w/b");
            assert_eq!(kv.mod_revision, deleted.revision);
            assert!(kv.value.is_empty());
            assert_eq!((prev.value, prev.mod_revision), (b("b1"), from));
        }
        other => panic!("expected the delete of /w/b, got {other:?}"),
    }
    // Live.
    let r5 = store.create("/w/c", b("c1")).await.unwrap();
    store.create("/other/y", b("y")).await.unwrap();
    let r6 = store.update("/w/c", b("c2"), r5).await.unwrap();
    match next_event(&mut watch).await {
        Event::Put { kv, prev: None } => {
            assert_eq!((kv.key.as_str(), kv.mod_revision), ("/w/c", r5));
            assert_eq!(kv.create_revision, r5);
        }
        other => panic!("expected the create of /w/c, got {other:?}"),
    }
    match next_event(&mut watch).await {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!((kv.value, kv.mod_revision), (b("c2"), r6));
            assert_eq!(prev.mod_revision, r5);
        }
        other => panic!("expected the update of /w/c, got {other:?}"),
    }
    expect_only_sentinel_next(store.as_ref(), &mut watch, "/w/sentinel").await;

    // A watch from the current revision sees only what comes after it.
    let now = store.current_revision().await.unwrap();
    let mut fresh = store.watch("/w/", now).await.unwrap();
    expect_only_sentinel_next(store.as_ref(), &mut fresh, "/w/sentinel2").await;
}

pub async fn watch_under_concurrent_writers_misses_and_repeats_nothing(backend: &impl Backend) {
    let store = backend.store();
    let from = store.current_revision().await.unwrap();
    const WRITERS: usize = 4;
    const WRITES: usize = 40;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..WRITES {
                let key = format!("/c/{w}/{}", i % 5);
                let revision = match store.get(&key).await.unwrap() {
                    Some(kv) => store.update(&key, b("u"), kv.mod_revision).await.unwrap(),
                    None => store.create(&key, b("c")).await.unwrap(),
                };
                revisions.push(revision);
                // Noise outside the watched prefix.
                store
                    .create(&format!("/noise/{w}/{i}"), b("n"))
                    .await
                    .unwrap();
            }
            revisions
        }));
    }
    // Start watching while the writers run: part replay, part live.
    let mut watch = store.watch("/c/", from).await.unwrap();
    let mut expected = BTreeSet::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let event = next_event(&mut watch).await;
        assert!(event.key().starts_with("/c/"), "{event:?}");
        got.push(event.revision());
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "not in revision order");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), expected);
    expect_only_sentinel_next(store.as_ref(), &mut watch, "/c/sentinel").await;
}

pub async fn watch_resumes_after_reconnect_from_the_last_seen_revision(backend: &impl Backend) {
    let store = backend.store();
    let from = store.current_revision().await.unwrap();
    let mut written = Vec::new();
    for i in 0..10 {
        written.push(store.create(&format!("/r/{i}"), b("v")).await.unwrap());
    }
    let mut watch = store.watch("/r/", from).await.unwrap();
    let mut last = from;
    for expected in &written[..4] {
        last = next_event(&mut watch).await.revision();
        assert_eq!(last, *expected);
    }
    drop(watch);
    for i in 10..15 {
        written.push(store.create(&format!("/r/{i}"), b("v")).await.unwrap());
    }
    let other = backend.reconnect().await;
    let mut resumed = other.watch("/r/", last).await.unwrap();
    for expected in &written[4..] {
        assert_eq!(next_event(&mut resumed).await.revision(), *expected);
    }
    expect_only_sentinel_next(other.as_ref(), &mut resumed, "/r/sentinel").await;
}

pub async fn a_slow_watcher_still_gets_every_event_in_order(backend: &impl Backend) {
    let store = backend.store();
    let from = store.current_revision().await.unwrap();
    let mut watch = store.watch("/s/", from).await.unwrap();
    // More single-write batches than an in-process fan-out holds, none read meanwhile.
    const WRITES: usize = 1500;
    let mut expected = Vec::with_capacity(WRITES);
    let mut revision = store.create("/s/k", b("0")).await.unwrap();
    expected.push(revision);
    for i in 1..WRITES {
        revision = store
            .update("/s/k", b(&i.to_string()), revision)
            .await
            .unwrap();
        expected.push(revision);
    }
    for (i, want) in expected.iter().enumerate() {
        let event = next_event(&mut watch).await;
        assert_eq!(event.revision(), *want, "event {i}");
        match event {
            Event::Put { kv, .. } => assert_eq!(kv.value, b(&i.to_string())),
            other => panic!("expected a put, got {other:?}"),
        }
    }
    expect_only_sentinel_next(store.as_ref(), &mut watch, "/s/sentinel").await;
}

pub async fn compaction_makes_old_revisions_answer_compacted(backend: &impl Backend) {
    let store = backend.store();
    let r1 = store.create("/k/a", b("a1")).await.unwrap();
    let old = store.create("/k/b", b("b1")).await.unwrap();
    let r3 = store.update("/k/a", b("a2"), r1).await.unwrap();
    store.delete("/k/b", None).await.unwrap();
    let mid = store.create("/k/c", b("c1")).await.unwrap();
    let r6 = store.update("/k/a", b("a3"), r3).await.unwrap();
    store.create("/k/d", b("d1")).await.unwrap();

    store.compact(mid).await.unwrap();

    match store.list("/k/", None, None, Some(old)).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, old),
        other => panic!("expected Compacted, got {other:?}"),
    }
    expect_compacted_watch(store.as_ref(), "/k/", old).await;

    // The compaction point itself is still readable, and so is everything after it.
    let at_mid = store.list("/k/", None, None, Some(mid)).await.unwrap();
    let at_mid: Vec<(String, Bytes)> = at_mid
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value))
        .collect();
    assert_eq!(
        at_mid,
        vec![("/k/a".to_string(), b("a2")), ("/k/c".to_string(), b("c1"))]
    );
    let mut watch = store.watch("/k/", mid).await.unwrap();
    match next_event(&mut watch).await {
        Event::Put {
            kv,
            prev: Some(prev),
        } => {
            assert_eq!((kv.mod_revision, prev.mod_revision), (r6, r3));
            assert_eq!(prev.value, b("a2"));
        }
        other => panic!("expected the update of /k/a, got {other:?}"),
    }
    assert_eq!(next_event(&mut watch).await.key(), "/k/d");
    let a = store.get("/k/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision), (r1, r6));

    // Compacting to an older revision again is a no-op; to the future, an error.
    store.compact(old).await.unwrap();
    let current = store.current_revision().await.unwrap();
    assert!(matches!(
        store.compact(current + 10).await,
        Err(StoreError::FutureRevision { .. })
    ));
    store.compact(current).await.unwrap();
    let now = store.list("/k/", None, None, None).await.unwrap();
    assert_eq!(now.items.len(), 3);
    expect_compacted_watch(store.as_ref(), "/k/", mid).await;
}

pub async fn a_continue_at_a_compacted_revision_answers_compacted(backend: &impl Backend) {
    let store = backend.store();
    for i in 0..6 {
        store.create(&format!("/l/{i}"), b("v")).await.unwrap();
    }
    let first = store.list("/l/", Some(2), None, None).await.unwrap();
    let token = first.continue_from.clone().unwrap();
    store.create("/l/new", b("v")).await.unwrap();
    let current = store.current_revision().await.unwrap();
    store.compact(current).await.unwrap();
    match store
        .list("/l/", Some(2), Some(&token), Some(first.revision))
        .await
    {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, first.revision),
        other => panic!("expected Compacted, got {other:?}"),
    }
}

pub async fn concurrent_cas_increments_end_with_the_exact_count(backend: &impl Backend) {
    let store = backend.store();
    store.create("/n/counter", b("0")).await.unwrap();
    const TASKS: usize = 8;
    const INCREMENTS: usize = 15;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for _ in 0..INCREMENTS {
                loop {
                    let kv = store.get("/n/counter").await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&kv.value).unwrap().parse().unwrap();
                    match store
                        .update("/n/counter", b(&(n + 1).to_string()), kv.mod_revision)
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("increment failed: {other}"),
                    }
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let kv = store.get("/n/counter").await.unwrap().unwrap();
    assert_eq!(kv.value, b(&(TASKS * INCREMENTS).to_string()));
}

pub async fn values_over_the_limit_are_refused(backend: &impl Backend) {
    let store = backend.store();
    let big = Bytes::from(vec![7u8; MAX_VALUE_SIZE + 1]);
    match store.create("/big/a", big.clone()).await {
        Err(StoreError::TooLarge { key, size, limit }) => {
            assert_eq!(
                (key.as_str(), size, limit),
                ("/big/a", MAX_VALUE_SIZE + 1, MAX_VALUE_SIZE)
            );
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(store.get("/big/a").await.unwrap(), None);
    // A large value under the limit round-trips.
    let large = Bytes::from(vec![9u8; 1024 * 1024]);
    let r = store.create("/big/a", large.clone()).await.unwrap();
    assert_eq!(store.get("/big/a").await.unwrap().unwrap().value, large);
    assert!(matches!(
        store.update("/big/a", big, r).await,
        Err(StoreError::TooLarge { .. })
    ));
    assert!(matches!(
        store.create("", b("x")).await,
        Err(StoreError::InvalidKey { .. })
    ));
}
