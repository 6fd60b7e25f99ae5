//! The journal's tables and the migrations that create them.
//!
//! ```sql
//! tm_meta(key, value)                    -- 'schema' = the applied migration,
//!                                        -- 'origin' = the journal's origin (random, migration 3)
//! tm_epochs                              -- sequence: one epoch per connect
//! tm_owners(owner, lease_until, ...)     -- one row per instance: its lease
//! tm_transactions(tx, owner, generation, operation, finished, stuck,
//!                 ..., finished_at,      -- finished_at: when it ended (migration 4);
//!                 retry_requested)       -- an index on the finished ones by it (retention);
//!                                        -- retry_requested: an operator's `tmctl retry`,
//!                                        -- taken by the next recovery (migration 4)
//! tm_entries(seq, tx, step, kind, payload, undo, step_name, written_by, written_at)
//!     seq: first-append order; UNIQUE (tx, step, kind); step -1 for the
//!     transaction's own entries; undo: the undo record as JSONB when its
//!     codec wrote JSON (for operators; recovery reads `payload`);
//!     UNIQUE (tx) of the decisions (`Committed` 7, `Aborted` 11): one per
//!     transaction, the first
//! ```

use tokio_postgres::Client;

use crate::PostgresJournalError;

/// The schema number this version writes and the newest it reads.
pub const SCHEMA: i64 = 4;

/// Migrations, in order: migration `n` (1-based) takes the schema from
/// `n - 1` to `n`. Never edit one that shipped: add the next.
const MIGRATIONS: [&str; SCHEMA as usize] = [
    // 1: the first schema.
    "
    CREATE SEQUENCE tm_epochs START 1 MAXVALUE 2147483647 NO CYCLE;
    CREATE TABLE tm_owners (
        owner text PRIMARY KEY,
        lease_until timestamptz NOT NULL,
        started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        renewed_at timestamptz NOT NULL DEFAULT clock_timestamp()
    );
    CREATE TABLE tm_transactions (
        tx bigint PRIMARY KEY,
        owner text NOT NULL,
        generation bigint NOT NULL DEFAULT 1,
        operation text NOT NULL DEFAULT '',
        finished boolean NOT NULL DEFAULT false,
        stuck text,
        started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        claimed_at timestamptz
    );
    CREATE INDEX tm_transactions_unfinished ON tm_transactions (tx) WHERE NOT finished;
    CREATE TABLE tm_entries (
        seq bigserial PRIMARY KEY,
        tx bigint NOT NULL,
        step integer NOT NULL,
        kind smallint NOT NULL,
        payload bytea NOT NULL,
        undo jsonb,
        step_name text,
        written_by text NOT NULL,
        written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        UNIQUE (tx, step, kind)
    );
    ",
    // 2: one decision per transaction. Of `Committed` (7) and `Aborted`
    // (11), the first one stays: the other's insert fails on this index
    // (waiting for a concurrent one to commit or roll back first), and the
    // journal reports it as `AlreadyDecided`.
    "
    CREATE UNIQUE INDEX tm_entries_one_decision ON tm_entries (tx) WHERE step = -1 AND kind IN (7, 11);
    ",
    // 3: the journal's origin, which every idempotency key carries: made
    // once, at random, shared by every worker on this database.
    "
    INSERT INTO tm_meta (key, value)
        VALUES ('origin', floor(random() * 9.2e18)::bigint + 1)
        ON CONFLICT (key) DO NOTHING;
    ",
    // 4: when each transaction ended, for retention (those that ended
    // before count as ending now: a retention keeps them as long as new
    // ones), and the index a prune scans; an operator's request to retry a
    // transaction's owed rollbacks now (`tmctl retry`), which the next
    // recovery takes.
    "
    ALTER TABLE tm_transactions ADD COLUMN retry_requested boolean NOT NULL DEFAULT false;
    ALTER TABLE tm_transactions ADD COLUMN finished_at timestamptz;
    UPDATE tm_transactions SET finished_at = clock_timestamp() WHERE finished;
    CREATE INDEX tm_transactions_finished ON tm_transactions (finished_at, tx) WHERE finished;
    ",
];

/// The journal's origin (migration 3).
pub(crate) async fn origin(client: &Client) -> Result<u64, PostgresJournalError> {
    let row = client
        .query_one("SELECT value FROM tm_meta WHERE key = 'origin'", &[])
        .await
        .map_err(PostgresJournalError::from_pg)?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// The index that keeps one decision per transaction (migration 2).
pub(crate) const ONE_DECISION: &str = "tm_entries_one_decision";

/// Any constant: the advisory lock that serialises migrations of one
/// database across processes.
const MIGRATION_LOCK: i64 = 0x746d_6a6f_7572;

/// `name` as a quoted SQL identifier.
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The schema number of the tables on the connection's `search_path` (0:
/// none yet).
async fn applied(client: &Client) -> Result<i64, PostgresJournalError> {
    let pg = PostgresJournalError::from_pg;
    let exists: bool = client.query_one("SELECT to_regclass('tm_meta') IS NOT NULL", &[]).await.map_err(pg)?.get(0);
    if !exists {
        return Ok(0);
    }
    let row = client.query_opt("SELECT value FROM tm_meta WHERE key = 'schema'", &[]).await.map_err(pg)?;
    Ok(row.map(|row| row.get(0)).unwrap_or(0))
}

/// With migrations off: the tables must be there and up to date.
pub(crate) async fn check(client: &Client) -> Result<(), PostgresJournalError> {
    match applied(client).await? {
        found if found > SCHEMA => Err(PostgresJournalError::NewerSchema { found, known: SCHEMA }),
        found if found < SCHEMA => Err(PostgresJournalError::NotMigrated { found, needed: SCHEMA }),
        _ => Ok(()),
    }
}

/// Creates or upgrades the tables (one migration at a time, under an
/// advisory lock, so concurrent connects agree), creating `schema` first
/// if it is given and missing, and refuses a newer schema. Tables already
/// up to date are only read: a role that may not create anything connects
/// with migrations on as well.
pub(crate) async fn migrate(client: &mut Client, schema: Option<&str>) -> Result<(), PostgresJournalError> {
    let pg = PostgresJournalError::from_pg;
    match applied(client).await? {
        SCHEMA => return Ok(()),
        found if found > SCHEMA => return Err(PostgresJournalError::NewerSchema { found, known: SCHEMA }),
        _ => {}
    }
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
    if let Some(schema) = schema {
        // Checked first: `CREATE SCHEMA IF NOT EXISTS` needs the
        // database's CREATE privilege even when the schema exists.
        let exists = tx.query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema]).await.map_err(pg)?;
        if exists.is_none() {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", quote_identifier(schema))).await.map_err(pg)?;
        }
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS tm_meta (key text PRIMARY KEY, value bigint NOT NULL)")
        .await
        .map_err(pg)?;
    let found: i64 = tx
        .query_opt("SELECT value FROM tm_meta WHERE key = 'schema'", &[])
        .await
        .map_err(pg)?
        .map(|row| row.get(0))
        .unwrap_or(0);
    if found > SCHEMA {
        return Err(PostgresJournalError::NewerSchema { found, known: SCHEMA });
    }
    for (at, migration) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch_execute(migration).await.map_err(pg)?;
        let version = i64::try_from(at + 1).unwrap_or(i64::MAX);
        tx.execute(
            "INSERT INTO tm_meta (key, value) VALUES ('schema', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
            &[&version],
        )
        .await
        .map_err(pg)?;
    }
    tx.commit().await.map_err(pg)
}
