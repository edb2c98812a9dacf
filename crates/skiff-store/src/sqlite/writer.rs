//! The single writer of a SQLite store: a thread that owns the write connection, takes every
//! write request queued meanwhile into one transaction (group commit: one fsync for the whole
//! batch), then publishes the batch's events and answers each request.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::schema::{BACKEND, sql_error};
use crate::watch::Batch;
use crate::{Deleted, Event, KeyValue, Revision, StoreError};

/// A write the writer applies.
#[derive(Debug)]
pub(crate) enum Op {
    /// Create a key that must not exist.
    Create { key: String, value: Bytes },
    /// Replace a key whose mod revision must be `expected`.
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    /// Delete a key, if `expected` is given only at that mod revision.
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

/// What a write did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The revision of a create or update.
    Written(Revision),
    /// What a delete removed.
    Deleted(Deleted),
}

/// A message to the writer thread.
#[derive(Debug)]
pub(crate) enum Request {
    /// One write and where its answer goes.
    Write {
        op: Op,
        reply: oneshot::Sender<Result<Outcome, StoreError>>,
    },
    /// A compaction to `revision`.
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub conn: Connection,
    pub revision: Revision,
    pub compacted: Revision,
    pub requests: mpsc::Receiver<Request>,
    pub fanout: broadcast::Sender<Batch>,
    /// The last committed revision, read by `current_revision`.
    pub committed: Arc<AtomicI64>,
    pub max_batch: usize,
}

/// The latest row of a key.
struct Latest {
    revision: Revision,
    create_revision: Revision,
    deleted: bool,
    value: Vec<u8>,
}

impl Latest {
    fn kv(self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Bytes::from(self.value),
            create_revision: self.create_revision,
            mod_revision: self.revision,
        }
    }
}

/// A write's answer and, if it changed anything, its event.
type Applied = Result<(Outcome, Event), StoreError>;

impl Writer {
    /// Serves requests until every sender is gone.
    pub(crate) fn run(mut self) {
        while let Some(first) = self.requests.blocking_recv() {
            let mut writes = Vec::new();
            let mut compaction = None;
            match first {
                Request::Write { op, reply } => writes.push((op, reply)),
                Request::Compact { revision, reply } => compaction = Some((revision, reply)),
            }
            while compaction.is_none() && writes.len() < self.max_batch {
                match self.requests.try_recv() {
                    Ok(Request::Write { op, reply }) => writes.push((op, reply)),
                    Ok(Request::Compact { revision, reply }) => {
                        compaction = Some((revision, reply));
                    }
                    Err(_) => break,
                }
            }
            if !writes.is_empty() {
                self.commit(writes);
            }
            if let Some((revision, reply)) = compaction {
                let _ = reply.send(self.compact(revision));
            }
        }
    }

    /// Applies a batch in one transaction, then publishes and answers.
    fn commit(&mut self, writes: Vec<(Op, oneshot::Sender<Result<Outcome, StoreError>>)>) {
        let mut revision = self.revision;
        let applied = self.apply_batch(&writes, &mut revision);
        let results = match applied {
            Ok(results) => results,
            Err(error) => {
                // Nothing of the batch is committed; the revision counter stays.
                let message = error.to_string();
                for (_, reply) in writes {
                    let _ = reply.send(Err(StoreError::backend(
                        BACKEND,
                        "commit a write batch",
                        message.clone(),
                    )));
                }
                return;
            }
        };
        self.revision = revision;
        self.committed.store(revision, Ordering::Release);
        let mut events = Vec::new();
        let mut answers = Vec::with_capacity(results.len());
        for result in results {
            match result {
                Ok((outcome, event)) => {
                    events.push(event);
                    answers.push(Ok(outcome));
                }
                Err(error) => answers.push(Err(error)),
            }
        }
        if !events.is_empty() {
            // No receivers is fine: nobody watches.
            let _ = self.fanout.send(Arc::from(events));
        }
        for ((_, reply), answer) in writes.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }

    fn apply_batch(
        &mut self,
        writes: &[(Op, oneshot::Sender<Result<Outcome, StoreError>>)],
        revision: &mut Revision,
    ) -> Result<Vec<Applied>, rusqlite::Error> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut results = Vec::with_capacity(writes.len());
        for (op, _) in writes {
            results.push(apply(&tx, revision, op)?);
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'revision'",
            params![*revision],
        )?;
        tx.commit()?;
        Ok(results)
    }

    /// Deletes the history before `revision`, then gives the freed pages back to the file
    /// system and truncates the WAL.
    fn compact(&mut self, revision: Revision) -> Result<(), StoreError> {
        if revision > self.revision {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            });
        }
        if revision <= self.compacted {
            return Ok(());
        }
        let operation = format!("compact to revision {revision}");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_error(&operation))?;
        // Keep, per key, the last version at or before the compaction point (unless it is a
        // delete) and everything after it.
        tx.execute(
            "DELETE FROM kv WHERE revision <= ?1 AND (deleted = 1 OR revision NOT IN (
                 SELECT MAX(revision) FROM kv WHERE revision <= ?1 GROUP BY key))",
            params![revision],
        )
        .map_err(sql_error(&operation))?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            params![revision],
        )
        .map_err(sql_error(&operation))?;
        tx.commit().map_err(sql_error(&operation))?;
        self.compacted = revision;
        if let Err(error) = self.reclaim() {
            tracing::warn!(%error, "could not shrink the store's files after compaction");
        }
        Ok(())
    }

    /// Frees the pages compaction emptied and truncates the WAL.
    fn reclaim(&mut self) -> Result<(), StoreError> {
        // The pragma frees one page per step: run it to the end.
        let mut vacuum = self
            .conn
            .prepare("PRAGMA incremental_vacuum")
            .map_err(sql_error("vacuum free pages"))?;
        let mut rows = vacuum.query([]).map_err(sql_error("vacuum free pages"))?;
        while rows
            .next()
            .map_err(sql_error("vacuum free pages"))?
            .is_some()
        {}
        drop(rows);
        drop(vacuum);
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(sql_error("checkpoint the WAL"))
    }
}

/// The latest row of `key`, live or a delete.
fn latest(conn: &Connection, key: &str) -> Result<Option<Latest>, rusqlite::Error> {
    conn.prepare_cached(
        "SELECT revision, create_revision, deleted, value FROM kv
         WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
    )?
    .query_row(params![key.as_bytes()], |row| {
        Ok(Latest {
            revision: row.get(0)?,
            create_revision: row.get(1)?,
            deleted: row.get(2)?,
            value: row.get(3)?,
        })
    })
    .optional()
}

/// The key's live version, `None` if absent or deleted.
fn live(conn: &Connection, key: &str) -> Result<Option<Latest>, rusqlite::Error> {
    Ok(latest(conn, key)?.filter(|latest| !latest.deleted))
}

fn insert(
    conn: &Connection,
    revision: Revision,
    key: &str,
    create_revision: Revision,
    prev_revision: Revision,
    deleted: bool,
    value: &[u8],
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO kv (revision, key, create_revision, prev_revision, deleted, value)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        revision,
        key.as_bytes(),
        create_revision,
        prev_revision,
        deleted,
        value
    ])?;
    Ok(())
}

/// Applies one write inside the batch's transaction; the outer error aborts the batch, the
/// inner one is this write's answer.
fn apply(conn: &Connection, revision: &mut Revision, op: &Op) -> Result<Applied, rusqlite::Error> {
    match op {
        Op::Create { key, value } => {
            if let Some(existing) = live(conn, key)? {
                return Ok(Err(StoreError::AlreadyExists {
                    key: key.clone(),
                    mod_revision: existing.revision,
                }));
            }
            let next = *revision + 1;
            insert(conn, next, key, next, 0, false, value)?;
            *revision = next;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: next,
                mod_revision: next,
            };
            Ok(Ok((Outcome::Written(next), Event::Put { kv, prev: None })))
        }
        Op::Update {
            key,
            value,
            expected,
        } => {
            let Some(current) = live(conn, key)? else {
                return Ok(Err(StoreError::NotFound { key: key.clone() }));
            };
            if current.revision != *expected {
                return Ok(Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    current: current.revision,
                }));
            }
            let next = *revision + 1;
            insert(
                conn,
                next,
                key,
                current.create_revision,
                current.revision,
                false,
                value,
            )?;
            *revision = next;
            let kv = KeyValue {
                key: key.clone(),
                value: value.clone(),
                create_revision: current.create_revision,
                mod_revision: next,
            };
            let prev = Some(current.kv(key));
            Ok(Ok((Outcome::Written(next), Event::Put { kv, prev })))
        }
        Op::Delete { key, expected } => {
            let Some(current) = live(conn, key)? else {
                return Ok(Err(StoreError::NotFound { key: key.clone() }));
            };
            if let Some(expected) = expected
                && *expected != current.revision
            {
                return Ok(Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: *expected,
                    current: current.revision,
                }));
            }
            let next = *revision + 1;
            insert(
                conn,
                next,
                key,
                current.create_revision,
                current.revision,
                true,
                &[],
            )?;
            *revision = next;
            let prev = current.kv(key);
            let kv = KeyValue {
                key: key.clone(),
                value: Bytes::new(),
                create_revision: prev.create_revision,
                mod_revision: next,
            };
            let deleted = Deleted {
                kv: prev.clone(),
                revision: next,
            };
            Ok(Ok((Outcome::Deleted(deleted), Event::Delete { kv, prev })))
        }
    }
}
