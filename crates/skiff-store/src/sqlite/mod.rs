//! The embedded SQLite store, the default: one database file (WAL mode) holding the whole
//! history, a single writer thread that group-commits concurrent writes, a pool of read
//! connections, and watches fed by an in-process fan-out plus catch-up from the history.
//!
//! Durability: every batch is committed with `synchronous = FULL`, and a write is answered
//! only after its batch committed, so a killed process (or a lost machine) loses nothing that
//! was acknowledged.

mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use bytes::Bytes;
use rusqlite::{Connection, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::types::{check_write, key_after, list_start, prefix_end};
use crate::watch::{self, Batch, FANOUT_CAPACITY, History, HistoryPage};
use crate::{Deleted, Event, KeyValue, ListResult, Revision, Store, StoreError, WatchStream};
use schema::{BACKEND, open_reader, open_writer, read_meta, sql_error};
use writer::{Op, Outcome, Request, Writer};

/// How many writes one transaction takes at most.
const MAX_BATCH: usize = 1024;
/// How many writes may queue for the writer before callers wait.
const QUEUE_DEPTH: usize = 4096;
/// How many idle read connections are kept.
const MAX_IDLE_READERS: usize = 8;

/// The SQLite store. Open it with [`SqliteStore::open`]; share it as `Arc<dyn Store>`.
///
/// Dropping it stops the writer thread (after the batch in flight) and ends every watch.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    readers: Arc<Readers>,
    fanout: broadcast::Sender<Batch>,
    committed: Arc<AtomicI64>,
    writer: WriterHandle,
}

/// The writer's queue and thread; dropping it closes the queue and waits for the thread.
#[derive(Debug)]
struct WriterHandle {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (and nothing else: the directory must exist)
    /// if needed, and starts the writer thread.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = open_writer(&path)?;
        let (revision, compacted) = read_meta(&conn)?;
        let committed = Arc::new(AtomicI64::new(revision));
        let fanout = broadcast::channel(FANOUT_CAPACITY).0;
        let (requests, receiver) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer {
            conn,
            revision,
            compacted,
            requests: receiver,
            fanout: fanout.clone(),
            committed: Arc::clone(&committed),
            max_batch: MAX_BATCH,
        };
        let thread = std::thread::Builder::new()
            .name("skiff-store-writer".to_string())
            .spawn(move || writer.run())
            .map_err(|error| StoreError::backend(BACKEND, "start the writer thread", error))?;
        Ok(SqliteStore {
            readers: Arc::new(Readers {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            path,
            fanout,
            committed,
            writer: WriterHandle {
                requests: Some(requests),
                thread: Some(thread),
            },
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a request for the writer and waits for its answer.
    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Request,
    ) -> Result<T, StoreError> {
        let closed = || StoreError::Closed { backend: BACKEND };
        let requests = self.writer.requests.as_ref().ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        requests.send(make(reply)).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        self.send(|reply| Request::Write { op, reply }).await
    }
}

/// Read connections, shared with watches.
#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Runs `query` on a pooled connection on the blocking thread pool.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        query: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = readers
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => open_reader(&readers.path)?,
            };
            let result = query(&mut conn);
            let mut idle = readers
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < MAX_IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|error| StoreError::backend(BACKEND, "run a query", error))?
    }
}

/// Checks a revision against the current one and the compaction point.
fn check_revision(
    requested: Revision,
    current: Revision,
    compacted: Revision,
) -> Result<(), StoreError> {
    if requested < compacted {
        return Err(StoreError::Compacted {
            requested,
            compacted: Some(compacted),
        });
    }
    if requested > current {
        return Err(StoreError::FutureRevision { requested, current });
    }
    Ok(())
}

fn key_string(bytes: Vec<u8>) -> rusqlite::Result<String> {
    String::from_utf8(bytes).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, Box::new(error))
    })
}

fn list_page(
    conn: &mut Connection,
    prefix: &str,
    limit: Option<usize>,
    continue_from: Option<&str>,
    revision: Option<Revision>,
) -> Result<ListResult, StoreError> {
    let operation = format!("list {prefix:?}");
    let tx = conn.transaction().map_err(sql_error(&operation))?;
    let (current, compacted) = read_meta(&tx)?;
    let at = revision.unwrap_or(current);
    check_revision(at, current, compacted)?;
    let limit = limit.filter(|&l| l > 0);
    // One more than asked tells whether there is a next page.
    let fetch = limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX - 1) + 1);
    let start = list_start(prefix, continue_from);
    let mut items = {
        let mut stmt = tx
            .prepare_cached(
                "SELECT c.key, c.revision, c.create_revision, c.value FROM kv AS c
                 WHERE c.key >= ?1 AND c.key < ?2 AND c.deleted = 0 AND c.revision = (
                     SELECT MAX(m.revision) FROM kv AS m WHERE m.key = c.key AND m.revision <= ?3)
                 ORDER BY c.key LIMIT ?4",
            )
            .map_err(sql_error(&operation))?;
        let rows = stmt
            .query_map(
                params![start.as_bytes(), prefix_end(prefix), at, fetch],
                |row| {
                    Ok(KeyValue {
                        key: key_string(row.get(0)?)?,
                        mod_revision: row.get(1)?,
                        create_revision: row.get(2)?,
                        value: Bytes::from(row.get::<_, Vec<u8>>(3)?),
                    })
                },
            )
            .map_err(sql_error(&operation))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql_error(&operation))?
    };
    let mut continue_key = None;
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        continue_key = items.last().map(|last| key_after(&last.key));
    }
    Ok(ListResult {
        items,
        revision: at,
        continue_from: continue_key,
    })
}

fn history_page(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<HistoryPage, StoreError> {
    let operation = format!("read the history of {prefix:?} after revision {after}");
    let tx = conn.transaction().map_err(sql_error(&operation))?;
    let (current, compacted) = read_meta(&tx)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted: Some(compacted),
        });
    }
    // Walk the revisions after `after` (the `+` keeps SQLite from using the key index instead:
    // a watch usually resumes from a recent revision, and the key range may be everything).
    let mut stmt = tx
        .prepare_cached(
            "SELECT c.revision, c.key, c.create_revision, c.deleted, c.value,
                    p.revision, p.create_revision, p.value
             FROM kv AS c LEFT JOIN kv AS p ON c.prev_revision > 0 AND p.revision = c.prev_revision
             WHERE c.revision > ?1 AND +c.key >= ?2 AND +c.key < ?3
             ORDER BY c.revision LIMIT ?4",
        )
        .map_err(sql_error(&operation))?;
    let fetch = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(
            params![after, prefix.as_bytes(), prefix_end(prefix), fetch],
            |row| {
                let key = key_string(row.get(1)?)?;
                let revision: Revision = row.get(0)?;
                let create_revision: Revision = row.get(2)?;
                let deleted: bool = row.get(3)?;
                let prev = match row.get::<_, Option<Revision>>(5)? {
                    Some(prev_revision) => Some(KeyValue {
                        key: key.clone(),
                        value: Bytes::from(row.get::<_, Vec<u8>>(7)?),
                        create_revision: row.get(6)?,
                        mod_revision: prev_revision,
                    }),
                    None => None,
                };
                let value = if deleted {
                    Bytes::new()
                } else {
                    Bytes::from(row.get::<_, Vec<u8>>(4)?)
                };
                let kv = KeyValue {
                    key,
                    value,
                    create_revision,
                    mod_revision: revision,
                };
                Ok((deleted, kv, prev))
            },
        )
        .map_err(sql_error(&operation))?;
    let mut events = Vec::new();
    for row in rows {
        let (deleted, kv, prev) = row.map_err(sql_error(&operation))?;
        events.push(match (deleted, prev) {
            (false, prev) => Event::Put { kv, prev },
            (true, Some(prev)) => Event::Delete { kv, prev },
            (true, None) => {
                return Err(StoreError::backend(
                    BACKEND,
                    operation,
                    format!(
                        "the delete of {:?} at revision {} has lost its previous version",
                        kv.key, kv.mod_revision
                    ),
                ));
            }
        });
    }
    let scanned_to = if events.len() == limit {
        events.last().map_or(current, Event::revision)
    } else {
        current
    };
    Ok(HistoryPage { events, scanned_to })
}

#[async_trait::async_trait]
impl History for Arc<Readers> {
    async fn events_after(
        &self,
        prefix: &str,
        after: Revision,
        limit: usize,
    ) -> Result<HistoryPage, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |conn| history_page(conn, &prefix, after, limit))
            .await
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.readers
            .read(move |conn| {
                let operation = format!("get {key:?}");
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT revision, create_revision, deleted, value FROM kv
                         WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
                    )
                    .map_err(sql_error(&operation))?;
                let mut rows = stmt
                    .query(params![key.as_bytes()])
                    .map_err(sql_error(&operation))?;
                let Some(row) = rows.next().map_err(sql_error(&operation))? else {
                    return Ok(None);
                };
                let read = || -> rusqlite::Result<Option<KeyValue>> {
                    if row.get::<_, bool>(2)? {
                        return Ok(None);
                    }
                    Ok(Some(KeyValue {
                        key: key.clone(),
                        mod_revision: row.get(0)?,
                        create_revision: row.get(1)?,
                        value: Bytes::from(row.get::<_, Vec<u8>>(3)?),
                    }))
                };
                read().map_err(sql_error(&operation))
            })
            .await
    }

    async fn list(
        &self,
        prefix: &str,
        limit: Option<usize>,
        continue_from: Option<&str>,
        revision: Option<Revision>,
    ) -> Result<ListResult, StoreError> {
        let prefix = prefix.to_string();
        let continue_from = continue_from.map(str::to_string);
        self.readers
            .read(move |conn| list_page(conn, &prefix, limit, continue_from.as_deref(), revision))
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        check_write(key, Some(&value))?;
        let key = key.to_string();
        match self.write(Op::Create { key, value }).await? {
            Outcome::Written(revision) => Ok(revision),
            Outcome::Deleted(deleted) => Ok(deleted.revision),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        check_write(key, Some(&value))?;
        let op = Op::Update {
            key: key.to_string(),
            value,
            expected: expected_mod_revision,
        };
        match self.write(op).await? {
            Outcome::Written(revision) => Ok(revision),
            Outcome::Deleted(deleted) => Ok(deleted.revision),
        }
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError> {
        check_write(key, None)?;
        let op = Op::Delete {
            key: key.to_string(),
            expected: expected_mod_revision,
        };
        match self.write(op).await? {
            Outcome::Deleted(deleted) => Ok(deleted),
            Outcome::Written(revision) => Err(StoreError::backend(
                BACKEND,
                format!("delete {key:?}"),
                format!("the writer answered a delete with a write at revision {revision}"),
            )),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let live = self.fanout.subscribe();
        watch::watch(Arc::clone(&self.readers), live, prefix, from_revision).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.send(|reply| Request::Compact { revision, reply })
            .await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.committed.load(Ordering::Acquire))
    }
}
