//! The journal's tables, the schema number, and the epochs that make
//! transaction ids unique across processes.
//!
//! ```sql
//! tm_meta(key, value)                 -- 'schema' = 4, 'epoch' = last epoch handed out,
//!                                     -- 'origin' = the file's origin (random, made once),
//!                                     -- 'seq_floor' = the highest `seq` ever deleted
//! tm_entries(seq, tx, step, kind, payload, at)
//!     seq: in first-append order, never reused (see below); UNIQUE (tx, step, kind)
//!     step: -1 for the transaction's own entries
//!     at: when the batch that wrote it committed (Unix milliseconds, by
//!     the writer's wall clock; NULL for rows of schema 3 and older)
//! tm_transactions(tx, finished, owner, finished_at, retry_requested) -- one row per transaction;
//!                                     -- partial indexes on the unfinished ones
//!                                     -- and on the finished ones by `finished_at`
//!     owner: the epoch of the journal that wrote its first entry (or
//!     claimed it from a gone owner); 0 = nobody (rows of schema 1)
//!     finished_at: when its ending entry was written (Unix ms; for rows
//!     finished before schema 4, when the file was migrated)
//!     retry_requested: 1 when an operator asked the next recovery to try
//!     its owed rollbacks now; that recovery sets it back to 0
//! ```
//!
//! Retention deletes finished transactions' rows. `seq` must still only
//! grow (the high-water mark compares the last one with a file beside the
//! journal), so the writer numbers rows itself, from the larger of the
//! last `seq` and `seq_floor`, which a prune raises before it deletes.
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
//! Schema 4 adds the times (`at`, `finished_at`) and `seq_floor`, for
//! retention and for the operator's view, and `retry_requested`: an older version refuses the
//! file from then on (it would reuse `seq` numbers a prune deleted, and
//! its high-water mark would call the file damaged).
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
pub(crate) const SCHEMA: i64 = 4;

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
        at INTEGER,
        UNIQUE (tx, step, kind)
    );
    CREATE TABLE IF NOT EXISTS tm_transactions (
        tx INTEGER PRIMARY KEY,
        finished INTEGER NOT NULL,
        owner INTEGER NOT NULL DEFAULT 0,
        finished_at INTEGER,
        retry_requested INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS tm_unfinished ON tm_transactions (tx) WHERE finished = 0;
    INSERT OR IGNORE INTO tm_meta (key, value) VALUES ('schema', 4);
";

/// Schema 1 to 2: who owns each transaction (nobody, for the old rows).
const MIGRATE_1_TO_2: &str = "
    ALTER TABLE tm_transactions ADD COLUMN owner INTEGER NOT NULL DEFAULT 0;
    UPDATE tm_meta SET value = 2 WHERE key = 'schema';
";

/// Schema 3 to 4: the times, for retention and the operator's view. The
/// transactions finished before count as finished at the migration
/// (`?1`): a retention keeps them as long as it keeps new ones.
const MIGRATE_3_TO_4: [&str; 3] = [
    "ALTER TABLE tm_entries ADD COLUMN at INTEGER",
    "ALTER TABLE tm_transactions ADD COLUMN finished_at INTEGER",
    "UPDATE tm_transactions SET finished_at = ?1 WHERE finished = 1",
];

/// Schema 3 to 4, too: an operator's request to retry a transaction's
/// owed rollbacks now (`tmctl retry`), taken by the next recovery.
const MIGRATE_RETRY_REQUESTED: &str =
    "ALTER TABLE tm_transactions ADD COLUMN retry_requested INTEGER NOT NULL DEFAULT 0";

/// Every schema's last step (the origin row itself is added in
/// [`set_up`]): the index retention scans, the floor of `seq`, and the
/// schema number.
const SCHEMA_4: &str = "
    CREATE INDEX IF NOT EXISTS tm_finished ON tm_transactions (finished_at, tx) WHERE finished = 1;
    INSERT OR IGNORE INTO tm_meta (key, value) VALUES ('seq_floor', 0);
    UPDATE tm_meta SET value = 4 WHERE key = 'schema';
";

/// Sets up the write connection: WAL, `synchronous = FULL`, the busy
/// timeout.
pub(crate) fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Pages that retention frees are handed back to the file system by
    // `incremental_vacuum` (see `prune`). Takes effect only on a file
    // without tables yet: an older file keeps reusing its free pages
    // (bounded under a steady load) but never shrinks, until a `VACUUM`.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
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
        if !has_column(conn, "tm_transactions", "owner")? {
            conn.execute_batch(MIGRATE_1_TO_2)?;
        }
        // Made once, in the same write transaction: two processes creating
        // the file at once read the same origin.
        conn.execute("INSERT OR IGNORE INTO tm_meta (key, value) VALUES ('origin', ?1)", [to_sql(random_origin())])
            .map_err(SqliteJournalError::from_sqlite)?;
        if !has_column(conn, "tm_transactions", "finished_at")? {
            let [entries, transactions, finished] = MIGRATE_3_TO_4;
            conn.execute_batch(entries)?;
            conn.execute_batch(transactions)?;
            conn.execute(finished, [unix_millis(std::time::SystemTime::now())])
                .map_err(SqliteJournalError::from_sqlite)?;
        }
        if !has_column(conn, "tm_transactions", "retry_requested")? {
            conn.execute_batch(MIGRATE_RETRY_REQUESTED)?;
        }
        conn.execute_batch(SCHEMA_4)?;
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

/// Whether `table` has `column` (a read-only journal of an older schema
/// cannot add it: `owner` came with schema 2, the times with 4).
pub(crate) fn has_column(conn: &Connection, table: &str, column: &str) -> Result<bool, SqliteJournalError> {
    conn.query_row("SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2", [table, column], |row| {
        row.get::<_, i64>(0)
    })
    .map(|n| n == 1)
    .map_err(SqliteJournalError::from_sqlite)
}

/// The last `seq` handed out: the largest in `tm_entries`, or the floor a
/// prune left if it deleted the last rows (0 for an empty journal).
pub(crate) const LAST_SEQ: &str = "SELECT max(
        (SELECT coalesce(max(seq), 0) FROM tm_entries),
        coalesce((SELECT value FROM tm_meta WHERE key = 'seq_floor'), 0))";

/// A wall-clock time as Unix milliseconds (0 before 1970).
pub(crate) fn unix_millis(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
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

/// The same downwards: the stored ranges that hold the ids from `end`
/// (inclusive) down, in the order to search them (each from its top).
pub(crate) fn unsigned_ranges_down(end: u64) -> impl Iterator<Item = (i64, i64)> {
    if end <= i64::MAX as u64 {
        [Some((0, end as i64)), None]
    } else {
        [Some((i64::MIN, to_sql(end))), Some((0, i64::MAX))]
    }
    .into_iter()
    .flatten()
}
