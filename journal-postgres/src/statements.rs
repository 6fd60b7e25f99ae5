//! The statements the journal runs, prepared once per connection.

use tokio_postgres::{Client, Statement};

/// `$1` tx, `$2` owner, `$3` step, `$4` kind, `$5` payload, `$6` undo JSON
/// text, `$7` step name, `$8` operation: the transaction's row and its
/// first entry, or nothing if the row exists (a repeated `Begin`).
const BEGIN: &str = "
    WITH t AS (
        INSERT INTO tm_transactions (tx, owner, generation, operation) VALUES ($1, $2, 1, $8)
        ON CONFLICT (tx) DO NOTHING
        RETURNING tx),
    e AS (
        INSERT INTO tm_entries (tx, step, kind, payload, undo, step_name, written_by)
        SELECT tx, $3, $4, $5, CAST($6::text AS jsonb), $7, $2 FROM t
        ON CONFLICT (tx, step, kind) DO NOTHING)
    SELECT count(*) FROM t";

/// `$1`..`$7` as in [`BEGIN`], `$8` generation: the entry, only if the
/// transaction is still ours at this generation. The row lock (`FOR SHARE`)
/// orders the append against a claim (`FOR UPDATE`): whichever comes
/// first wins, and a claim never misses an entry that was acknowledged.
/// Returns (ours, exists).
const APPEND: &str = "
    WITH t AS (
        SELECT tx FROM tm_transactions WHERE tx = $1 AND owner = $2 AND generation = $8 FOR SHARE),
    e AS (
        INSERT INTO tm_entries (tx, step, kind, payload, undo, step_name, written_by)
        SELECT tx, $3, $4, $5, CAST($6::text AS jsonb), $7, $2 FROM t
        ON CONFLICT (tx, step, kind) DO NOTHING)
    SELECT (SELECT count(*) FROM t), EXISTS (SELECT 1 FROM tm_transactions WHERE tx = $1)";

/// [`APPEND`] for an entry that ends the transaction: it is marked
/// finished in the same statement.
const APPEND_END: &str = "
    WITH t AS (
        UPDATE tm_transactions SET finished = true, finished_at = coalesce(finished_at, clock_timestamp())
        WHERE tx = $1 AND owner = $2 AND generation = $8 RETURNING tx),
    e AS (
        INSERT INTO tm_entries (tx, step, kind, payload, undo, step_name, written_by)
        SELECT tx, $3, $4, $5, CAST($6::text AS jsonb), $7, $2 FROM t
        ON CONFLICT (tx, step, kind) DO NOTHING)
    SELECT (SELECT count(*) FROM t), EXISTS (SELECT 1 FROM tm_transactions WHERE tx = $1)";

/// `Resolved`, written by an operator: not fenced (the operator's word
/// ends the transaction whoever holds it). `$1`..`$7` as in [`BEGIN`].
const RESOLVE: &str = "
    WITH t AS (
        UPDATE tm_transactions SET finished = true, finished_at = coalesce(finished_at, clock_timestamp())
        WHERE tx = $1 RETURNING tx),
    e AS (
        INSERT INTO tm_entries (tx, step, kind, payload, undo, step_name, written_by)
        SELECT tx, $3, $4, $5, CAST($6::text AS jsonb), $7, $2 FROM t
        ON CONFLICT (tx, step, kind) DO NOTHING)
    SELECT count(*) FROM t";

/// `Stuck`: fenced like [`APPEND`], and the reason kept on the row for the
/// operator view. `$9` the reason.
const APPEND_STUCK: &str = "
    WITH t AS (
        UPDATE tm_transactions SET stuck = $9 WHERE tx = $1 AND owner = $2 AND generation = $8 RETURNING tx),
    e AS (
        INSERT INTO tm_entries (tx, step, kind, payload, undo, step_name, written_by)
        SELECT tx, $3, $4, $5, CAST($6::text AS jsonb), $7, $2 FROM t
        ON CONFLICT (tx, step, kind) DO NOTHING)
    SELECT (SELECT count(*) FROM t), EXISTS (SELECT 1 FROM tm_transactions WHERE tx = $1)";

/// `$1` owner, `$2` after, `$3` this journal's epochs, `$4` the
/// transactions this journal holds (claimed and not ended): claims the
/// first unfinished transaction above `after` that is not this journal's
/// own (its epochs) nor held by it (another recovery loop of this journal
/// is rolling it back), whose owner is this instance (an earlier incarnation, or
/// a claim of an earlier pass) or whose owner's lease expired. Rows locked
/// by an append in flight are skipped (`SKIP LOCKED`): their owner is
/// alive. The generation is bumped, fencing out the previous holder.
const CLAIM: &str = "
    WITH candidate AS (
        SELECT t.tx FROM tm_transactions t
        LEFT JOIN tm_owners o ON o.owner = t.owner
        WHERE NOT t.finished AND t.tx > $2 AND (t.tx >> 32) <> ALL ($3::bigint[]) AND t.tx <> ALL ($4::bigint[])
          AND (t.owner = $1 OR o.lease_until IS NULL OR o.lease_until < clock_timestamp())
        ORDER BY t.tx
        LIMIT 1
        FOR UPDATE OF t SKIP LOCKED)
    UPDATE tm_transactions t SET owner = $1, generation = t.generation + 1, claimed_at = clock_timestamp()
    FROM candidate c WHERE t.tx = c.tx
    RETURNING t.tx, t.generation";

/// `$1` tx: its entries in first-append order.
const READ: &str = "SELECT step, kind, payload FROM tm_entries WHERE tx = $1 ORDER BY seq";

/// `$1` tx: its entries in first-append order, with when each was written
/// (Unix milliseconds).
const READ_TIMED: &str = "
    SELECT step, kind, payload, (extract(epoch FROM written_at) * 1000)::bigint
    FROM tm_entries WHERE tx = $1 ORDER BY seq";

/// `$1` after: the next transaction, over or not.
const NEXT: &str = "SELECT tx FROM tm_transactions WHERE tx > $1 ORDER BY tx LIMIT 1";

/// `$1` after: the next transaction that is not over.
const NEXT_UNFINISHED: &str = "SELECT tx FROM tm_transactions WHERE NOT finished AND tx > $1 ORDER BY tx LIMIT 1";

/// `$1` before: the previous transaction, over or not.
const PREVIOUS: &str = "SELECT tx FROM tm_transactions WHERE tx < $1 ORDER BY tx DESC LIMIT 1";

/// `$1` before: the previous transaction that is not over.
const PREVIOUS_UNFINISHED: &str =
    "SELECT tx FROM tm_transactions WHERE NOT finished AND tx < $1 ORDER BY tx DESC LIMIT 1";

/// The prepared statements of one connection.
pub(crate) struct Statements {
    pub(crate) begin: Statement,
    pub(crate) append: Statement,
    pub(crate) append_end: Statement,
    pub(crate) append_stuck: Statement,
    pub(crate) resolve: Statement,
    pub(crate) claim: Statement,
    pub(crate) read: Statement,
    pub(crate) read_timed: Statement,
    pub(crate) next: Statement,
    pub(crate) next_unfinished: Statement,
    pub(crate) previous: Statement,
    pub(crate) previous_unfinished: Statement,
}

impl Statements {
    pub(crate) async fn prepare(client: &Client) -> Result<Self, tokio_postgres::Error> {
        Ok(Statements {
            begin: client.prepare(BEGIN).await?,
            append: client.prepare(APPEND).await?,
            append_end: client.prepare(APPEND_END).await?,
            append_stuck: client.prepare(APPEND_STUCK).await?,
            resolve: client.prepare(RESOLVE).await?,
            claim: client.prepare(CLAIM).await?,
            read: client.prepare(READ).await?,
            read_timed: client.prepare(READ_TIMED).await?,
            next: client.prepare(NEXT).await?,
            next_unfinished: client.prepare(NEXT_UNFINISHED).await?,
            previous: client.prepare(PREVIOUS).await?,
            previous_unfinished: client.prepare(PREVIOUS_UNFINISHED).await?,
        })
    }
}
