//! The journal's tables and the migrations that create them.
//!
//! ```sql
//! tm_meta(key, value)                    -- 'schema' = the applied migration
//! tm_epochs                              -- sequence: one epoch per connect
//! tm_owners(owner, lease_until, ...)     -- one row per instance: its lease
//! tm_transactions(tx, owner, generation, operation, finished, stuck, ...)
//! tm_entries(seq, tx, step, kind, payload, undo, step_name, written_by, written_at)
//!     seq: first-append order; UNIQUE (tx, step, kind); step -1 for the
//!     transaction's own entries; undo: the undo record as JSONB when its
//!     codec wrote JSON (for operators; recovery reads `payload`)
//! ```

use tokio_postgres::Client;

use crate::PostgresJournalError;

/// The schema number this version writes and the newest it reads.
pub const SCHEMA: i64 = 1;

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
];

/// Any constant: the advisory lock that serialises migrations of one
/// database across processes.
const MIGRATION_LOCK: i64 = 0x746d_6a6f_7572;

/// Creates or upgrades the tables (one migration at a time, under an
/// advisory lock, so concurrent connects agree), and refuses a newer
/// schema.
pub(crate) async fn migrate(client: &mut Client) -> Result<(), PostgresJournalError> {
    let pg = PostgresJournalError::from_pg;
    let tx = client.transaction().await.map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
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
