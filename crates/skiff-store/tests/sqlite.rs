//! The conformance suite against [`SqliteStore`], plus what only a file-backed store has:
//! durability across a killed process, bounded files after compaction, reopening, and the
//! throughput of group commit.

// Test code: clippy.toml allows unwrap in #[test] functions, not in the helpers and fixtures
// around them.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod conformance;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use skiff_store::{SqliteStore, Store};
use tempfile::TempDir;

struct Sqlite {
    _dir: TempDir,
    store: Arc<SqliteStore>,
}

#[async_trait::async_trait]
impl conformance::Backend for Sqlite {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn reconnect(&self) -> Arc<dyn Store> {
        // One process has one writer per database file: a new watch on the same store is
        // what a reconnecting client gets.
        self.store.clone()
    }
}

async fn sqlite() -> Sqlite {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("store.db")).unwrap());
    Sqlite { _dir: dir, store }
}

conformance_tests!(sqlite);

/// Set (to a database path) when the test binary runs itself as the crash test's writer.
const CRASH_CHILD_DB: &str = "SKIFF_STORE_CRASH_CHILD_DB";
const CRASH_CHILD_TEST: &str = "crash_test_child_writes_until_killed";

/// The crash test's child: writes keys from several tasks and prints an `ack` line after each
/// acknowledged create, until it is killed. Does nothing in an ordinary test run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_test_child_writes_until_killed() {
    let Ok(path) = std::env::var(CRASH_CHILD_DB) else {
        return;
    };
    let store = Arc::new(SqliteStore::open(path).unwrap());
    let mut tasks = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/crash/{task}/{i}");
                let revision = store.create(&key, Bytes::from(key.clone())).await.unwrap();
                let mut out = std::io::stdout().lock();
                writeln!(out, "ack {key} {revision}").unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The database file plus its WAL.
fn store_size(db: &Path) -> u64 {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    file_size(db) + file_size(&PathBuf::from(wal))
}

#[test]
fn acknowledged_writes_survive_a_killed_process() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            CRASH_CHILD_TEST,
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD_DB, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines, acks) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut acknowledged = Vec::new();
    while acknowledged.len() < 800 {
        let line = match acks.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(error) => {
                child.kill().unwrap();
                panic!("the child stopped acknowledging: {error}");
            }
        };
        if let Some(ack) = line.strip_prefix("ack ") {
            acknowledged.push(ack.to_string());
        }
    }
    // SIGKILL while writes are in flight.
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    // Acknowledgements printed before the kill count too.
    acknowledged.extend(
        acks.try_iter()
            .filter_map(|line| line.strip_prefix("ack ").map(str::to_string)),
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = SqliteStore::open(&db).unwrap();
        let current = store.current_revision().await.unwrap();
        for ack in &acknowledged {
            let (key, revision) = ack.split_once(' ').unwrap();
            let revision: i64 = revision.parse().unwrap();
            let kv = store
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged key {key} is lost"));
            assert_eq!(kv.mod_revision, revision);
            assert_eq!(kv.value, key.as_bytes());
            assert!(revision <= current);
        }
        // The store goes on from where it stopped.
        let next = store.create("/after/crash", "x".into()).await.unwrap();
        assert_eq!(next, current + 1);
    });
}

/// Overwrites `keys` keys `rounds` times each with 4 KiB values from 16 tasks.
async fn churn(store: &Arc<SqliteStore>, keys: usize, rounds: usize) {
    let mut tasks = Vec::new();
    for task in 0..16 {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                for k in (task..keys).step_by(16) {
                    let key = format!("/churn/{k}");
                    let value = Bytes::from(vec![(round % 251) as u8; 4096]);
                    match store.get(&key).await.unwrap() {
                        Some(kv) => store.update(&key, value, kv.mod_revision).await.unwrap(),
                        None => store.create(&key, value).await.unwrap(),
                    };
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_the_database_files_bounded() {
    conformance::run(async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let store = Arc::new(SqliteStore::open(&db).unwrap());
        let mut after_compaction = Vec::new();
        for cycle in 0..3 {
            // 64 keys x 60 rounds x 4 KiB: about 15 MiB of history per cycle.
            churn(&store, 64, 60).await;
            let before = store_size(&db);
            assert!(
                before > 10 << 20,
                "cycle {cycle}: only {before} bytes written"
            );
            let current = store.current_revision().await.unwrap();
            store.compact(current).await.unwrap();
            let after = store_size(&db);
            eprintln!(
                "cycle {cycle}: {before} bytes before compaction, {after} after ({} in the WAL)",
                after - file_size(&db)
            );
            after_compaction.push(after);
        }
        // 64 live values of 4 KiB are 256 KiB; allow for pages, indexes and the WAL.
        for (cycle, size) in after_compaction.iter().enumerate() {
            assert!(
                *size < 2 << 20,
                "cycle {cycle}: {size} bytes after compaction"
            );
        }
        let listed = store.list("/churn/", None, None, None).await.unwrap();
        assert_eq!(listed.items.len(), 64);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_store_keeps_its_revision_history_and_compaction_point() {
    conformance::run(async {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let (first, compacted, last) = {
            let store = SqliteStore::open(&db).unwrap();
            let first = store.create("/re/a", "1".into()).await.unwrap();
            let compacted = store.update("/re/a", "2".into(), first).await.unwrap();
            store.create("/re/b", "1".into()).await.unwrap();
            store.compact(compacted).await.unwrap();
            let last = store.delete("/re/b", None).await.unwrap().revision;
            (first, compacted, last)
        };
        let store = SqliteStore::open(&db).unwrap();
        assert_eq!(store.current_revision().await.unwrap(), last);
        assert!(matches!(
            store.list("/re/", None, None, Some(first)).await,
            Err(skiff_store::StoreError::Compacted { .. })
        ));
        let mut watch = store.watch("/re/", compacted).await.unwrap();
        let created = conformance::next_event(&mut watch).await;
        assert_eq!(created.key(), "/re/b");
        let deleted = conformance::next_event(&mut watch).await;
        assert_eq!(deleted.revision(), last);
        let next = store.create("/re/c", "1".into()).await.unwrap();
        assert_eq!(next, last + 1);
        assert_eq!(conformance::next_event(&mut watch).await.revision(), next);
        drop(store);
        // The store's watches end when it is dropped.
        assert!(
            tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_serves_concurrent_writers() {
    conformance::run(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("store.db")).unwrap());
        let value = Bytes::from(vec![1u8; 1024]);

        let sequential = 200;
        let started = Instant::now();
        for i in 0..sequential {
            store
                .create(&format!("/seq/{i}"), value.clone())
                .await
                .unwrap();
        }
        let sequential_rate = sequential as f64 / started.elapsed().as_secs_f64();

        let (tasks, each) = (64, 100);
        let started = Instant::now();
        let mut handles = Vec::new();
        for t in 0..tasks {
            let store = Arc::clone(&store);
            let value = value.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..each {
                    store
                        .create(&format!("/par/{t}/{i}"), value.clone())
                        .await
                        .unwrap();
                }
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
        let concurrent_rate = (tasks * each) as f64 / started.elapsed().as_secs_f64();
        eprintln!(
            "sqlite creates of 1 KiB: {sequential_rate:.0}/s one at a time, \
             {concurrent_rate:.0}/s from {tasks} concurrent writers"
        );
        let listed = store.list("/par/", None, None, None).await.unwrap();
        assert_eq!(listed.items.len(), tasks * each);
    })
    .await;
}
