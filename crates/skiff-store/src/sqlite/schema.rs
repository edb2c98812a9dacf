//! The SQLite database layout and connection setup.
//!
//! One table holds the history: a row per change (create, update, delete), keyed by its
//! revision, so the current state, any older state and the watch log are all queries over it.
//! A `meta` table holds the current revision and the compaction point, written in the same
//! transactions as the rows they describe.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::{Revision, StoreError};

/// Which backend, for errors.
pub(crate) const BACKEND: &str = "sqlite";

/// How long a connection waits for a lock held by another (a checkpoint, a reader).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The WAL file is cut back to this size after checkpoints.
const JOURNAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

const CREATE: &str = "
CREATE TABLE IF NOT EXISTS kv (
    revision        INTEGER PRIMARY KEY,
    key             BLOB    NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision   INTEGER NOT NULL,
    deleted         INTEGER NOT NULL,
    value           BLOB    NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_key_revision ON kv (key, revision);
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
";

/// Maps a SQLite error to a [`StoreError::Backend`] naming the operation.
pub(crate) fn sql_error(
    operation: impl Into<String>,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let operation = operation.into();
    move |error| StoreError::backend(BACKEND, operation, error)
}

/// Opens (creating if needed) the database for the writer: incremental auto-vacuum (set before
/// the first table exists), WAL, full sync on commit, the schema.
pub(crate) fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let context = || format!("open {}", path.display());
    let conn = Connection::open(path).map_err(sql_error(context()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_error(context()))?;
    // auto_vacuum only takes effect on a database without tables; it is a no-op later.
    conn.execute_batch(&format!(
        "PRAGMA auto_vacuum = INCREMENTAL;
         PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT};
         {CREATE}"
    ))
    .map_err(sql_error(context()))?;
    stable_plans(&conn).map_err(sql_error(context()))?;
    Ok(conn)
}

/// Turns on the query planner stability guarantee. The bundled SQLite is built with STAT4, so
/// without it a statement whose plan might depend on a bound value (`key = ?1`) is expired
/// on every new binding and compiled again at its next step: a cached statement would be
/// parsed and planned anew for every write and read (measured: a sixth of the server's CPU
/// under a stream of creates). Every query here has one good plan, through the key index.
fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(|_| ())
}

/// Opens a read-only connection for queries.
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let context = || format!("open {} for reading", path.display());
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_error(context()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(sql_error(context()))?;
    stable_plans(&conn).map_err(sql_error(context()))?;
    Ok(conn)
}

/// The current revision and the compaction point.
pub(crate) fn read_meta(conn: &Connection) -> Result<(Revision, Revision), StoreError> {
    let get = |name: &str| -> Result<Revision, StoreError> {
        conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")
            .and_then(|mut stmt| stmt.query_row(params![name], |row| row.get(0)).optional())
            .map(Option::unwrap_or_default)
            .map_err(sql_error(format!("read {name} revision")))
    };
    Ok((get("revision")?, get("compacted")?))
}
