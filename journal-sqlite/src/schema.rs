//! The journal's tables, the schema number, and the epochs that make
//! transaction ids unique across processes.
//!
//! ```sql
//! tm_meta(key, value)                 -- 'schema' = 3, 'epoch' = last epoch handed out,
//!                                     -- 'origin' = the file's origin (random, made once)
//! tm_entries(seq, tx, step, kind, payload)
//!     seq: the rowid, in first-append order; UNIQUE (tx, step, kind)
//!     step: -1 for the transaction's own entries
//! tm_transactions(tx, finished, owner) -- one row per transaction; a partial
//!                                     -- index on the unfinished ones
//!     owner: the epoch of the journal that wrote its first entry (or
//!     claimed it from a gone owner); 0 = nobody (rows of schema 1)
//! ```
//!
//! Schema 1 had no `owner`: opening such a file for writing adds the
//! column in place (its rows owned by nobody: recoverable) and sets the
//! schema to 2, which an older version of this crate refuses to open.
//! Schema 3 adds the `origin` row (the journal's
//! [`Journal::origin`](transaction_manager_core::backend::Journal::origin), which
//! every idempotency key carries): opening a file of schema 1 or 2 for
//! writing adds it, and an older version refuses the file from then on (it
//! would read undo records whose keys it does not know). A read-only file
//! without the row gets a random origin for as long as it is open.
//!
//! Ids are stored as SQLite's signed 64-bit integers, bit for bit (`u64 as
//! i64`): the ids this crate hands out stay below 2^63 for the first 2^31
//! epochs and read the same in both, and larger ones (given by another
//! journal, or after 2^31 epochs) keep their order by
//! [`unsigned_ranges`].

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension};

use crate::SqliteJournalError;

/// The schema number this version writes and the newest it reads.
pub(crate) const SCHEMA: i64 = 3;

/// How long a connection waits for another connection's write lock (two
/// processes sharing the file) before a write fails with "busy".
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const CREATE: &str = "
    CREATE TABLE IF NOT EXISTS tm_entries (
        seq INTEGER PRIMARY KEY,
        tx INTEGER NOT NULL,
        step INTEGER NOT NULL,
        kind INTEGER NOT NULL,
        payload BLOB NOT NULL,
        UNIQUE (tx, step, kind)
    );
    CREATE TABLE IF NOT EXISTS tm_transactions (
        tx INTEGER PRIMARY KEY,
        finished INTEGER NOT NULL,
        owner INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS tm_unfinished ON tm_transactions (tx) WHERE finished = 0;
    INSERT OR IGNORE INTO tm_meta (key, value) VALUES ('schema', 3);
";

/// Schema 1 to 2: who owns each transaction (nobody, for the old rows).
const MIGRATE_1_TO_2: &str = "
    ALTER TABLE tm_transactions ADD COLUMN owner INTEGER NOT NULL DEFAULT 0;
    UPDATE tm_meta SET value = 2 WHERE key = 'schema';
";

/// Schema 2 to 3: the file's origin (the row itself is added by
/// [`origin`]).
const MIGRATE_2_TO_3: &str = "UPDATE tm_meta SET value = 3 WHERE key = 'schema';";

/// Sets up the write connection: WAL, `synchronous = FULL`, the busy
/// timeout.
pub(crate) fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: readers (recovery, another process) never block the writer, and
    // a commit is one append to the log and one fsync.
    // (Where SQLite cannot use WAL, it keeps its rollback journal: commits
    // stay durable, readers wait for the writer.)
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    // FULL, not NORMAL: in WAL mode NORMAL does not fsync the log at each
    // commit, only at checkpoints, so a power cut can lose commits that were
    // already acknowledged. A `Done` must survive once `append` returned.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Runs `write` in a write transaction taken at once (`BEGIN IMMEDIATE`:
/// it waits for another process's writer up to the busy timeout, instead of
/// failing when it upgrades from reading), committed if it returns `Ok`,
/// rolled back otherwise.
pub(crate) fn in_write_transaction<T, E: From<rusqlite::Error>>(
    conn: &Connection,
    write: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match write().and_then(|value| Ok(conn.execute_batch("COMMIT").map(|()| value)?)) {
        Ok(value) => Ok(value),
        Err(error) => {
            // Still in the transaction when the write or the commit failed
            // (a full disk): undo it, so the next batch starts clean.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(error)
        }
    }
}

/// Creates the tables if needed, refuses a newer schema, and takes the next
/// epoch, all in one write transaction: two processes opening the file at
/// once get different epochs.
pub(crate) fn set_up(conn: &Connection) -> Result<(u32, u64), SqliteJournalError> {
    in_write_transaction(conn, || {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS tm_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;",
        )?;
        check_schema(conn)?;
        conn.execute_batch(CREATE)?;
        if !has_owner_column(conn)? {
            conn.execute_batch(MIGRATE_1_TO_2)?;
        }
        // Made once, in the same write transaction: two processes creating
        // the file at once read the same origin.
        conn.execute("INSERT OR IGNORE INTO tm_meta (key, value) VALUES ('origin', ?1)", [to_sql(random_origin())])
            .map_err(SqliteJournalError::from_sqlite)?;
        conn.execute_batch(MIGRATE_2_TO_3)?;
        let origin = stored_origin(conn)?
            .ok_or_else(|| SqliteJournalError::from_sqlite(rusqlite::Error::QueryReturnedNoRows))?;
        Ok((next_epoch(conn)?, origin))
    })
}

/// The file's origin, if it has one (files of schema 1 and 2 have none
/// until opened for writing).
pub(crate) fn stored_origin(conn: &Connection) -> Result<Option<u64>, SqliteJournalError> {
    conn.query_row("SELECT value FROM tm_meta WHERE key = 'origin'", [], |row| row.get::<_, i64>(0))
        .optional()
        .map(|origin| origin.map(from_sql))
        .map_err(SqliteJournalError::from_sqlite)
}

/// A random non-zero origin: std's randomly keyed hasher over the time,
/// the process id and the thread (no RNG crate needed).
pub(crate) fn random_origin() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        std::process::id().hash(&mut hasher);
        std::thread::current().id().hash(&mut hasher);
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            now.as_nanos().hash(&mut hasher);
        }
        let origin = hasher.finish();
        if origin != 0 {
            return origin;
        }
    }
}

/// Takes the next epoch in its own write transaction.
pub(crate) fn allocate_epoch(conn: &Connection) -> Result<u32, SqliteJournalError> {
    in_write_transaction(conn, || next_epoch(conn))
}

fn next_epoch(conn: &Connection) -> Result<u32, SqliteJournalError> {
    let epoch: i64 = conn
        .query_row(
            "INSERT INTO tm_meta (key, value) VALUES ('epoch', 1)
             ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value",
            [],
            |row| row.get(0),
        )
        .map_err(SqliteJournalError::from_sqlite)?;
    // Epoch 0 is never handed out (it is the fallback of a journal that
    // cannot write), so ids from the file are never 0.
    u32::try_from(epoch).ok().filter(|&e| e > 0).ok_or(SqliteJournalError::IdsExhausted)
}

/// Refuses a file whose schema number is above [`SCHEMA`].
pub(crate) fn check_schema(conn: &Connection) -> Result<(), SqliteJournalError> {
    let found: Option<i64> = conn
        .query_row("SELECT value FROM tm_meta WHERE key = 'schema'", [], |row| row.get(0))
        .optional()
        .map_err(SqliteJournalError::from_sqlite)?;
    match found {
        Some(found) if found > SCHEMA => Err(SqliteJournalError::NewerSchema { found, known: SCHEMA }),
        _ => Ok(()),
    }
}

/// Whether the file holds a journal (a read-only file may hold nothing).
pub(crate) fn has_tables(conn: &Connection) -> Result<bool, SqliteJournalError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('tm_meta', 'tm_entries', 'tm_transactions')",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n == 3)
    .map_err(SqliteJournalError::from_sqlite)
}

/// Whether `tm_transactions` has the `owner` column (schema 2): a
/// read-only journal of schema 1 cannot add it.
pub(crate) fn has_owner_column(conn: &Connection) -> Result<bool, SqliteJournalError> {
    conn.query_row("SELECT count(*) FROM pragma_table_info('tm_transactions') WHERE name = 'owner'", [], |row| {
        row.get::<_, i64>(0)
    })
    .map(|n| n == 1)
    .map_err(SqliteJournalError::from_sqlite)
}

/// Transaction ids as stored (`u64` bit for bit in an `i64`).
pub(crate) fn to_sql(id: u64) -> i64 {
    id as i64
}

/// The stored form of an id back.
pub(crate) fn from_sql(id: i64) -> u64 {
    id as u64
}

/// The stored ranges (inclusive, in the order to search them) that hold the
/// ids from `start` up, in unsigned order: ids below 2^63 are stored as
/// non-negative numbers and come first, larger ones are stored negative.
pub(crate) fn unsigned_ranges(start: u64) -> impl Iterator<Item = (i64, i64)> {
    let high = (i64::MIN, -1);
    if start <= i64::MAX as u64 {
        [Some((start as i64, i64::MAX)), Some(high)]
    } else {
        [Some((to_sql(start), -1)), None]
    }
    .into_iter()
    .flatten()
}
