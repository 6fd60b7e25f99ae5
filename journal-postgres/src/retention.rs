//! Retention: deleting finished transactions in bounded batches, in a task
//! of each instance (every instance may prune: `SKIP LOCKED` keeps them out
//! of each other's way), or by hand.
//!
//! Only rows marked `finished` are candidates, so a transaction that is not
//! over — running, owing a rollback that failed for good, stuck — is never
//! deleted. A late append for a deleted transaction finds no row and is
//! refused (appends are fenced on the row), so the engine's `Aborted`
//! after a commit that reported an error but was durable can never be
//! stored once that transaction is pruned: the engine then leaves the
//! outcome to recovery, which finds nothing to roll back.

use std::time::Duration;

use tokio_postgres::Client;
use transaction_manager_core::backend::{Pruned, Retention};

use crate::PostgresJournalError;
use crate::connection::Target;

/// The most transactions one statement deletes.
pub(crate) const PRUNE_BATCH: i64 = 512;

/// `$1` seconds a transaction is kept after it ended, `$2` the batch.
const OLDER_THAN: &str = "
    WITH victims AS (
        SELECT tx FROM tm_transactions
        WHERE finished AND finished_at <= clock_timestamp() - make_interval(secs => $1)
        ORDER BY finished_at, tx LIMIT $2
        FOR UPDATE SKIP LOCKED),
    entries AS (DELETE FROM tm_entries e USING victims v WHERE e.tx = v.tx RETURNING 1),
    txs AS (DELETE FROM tm_transactions t USING victims v WHERE t.tx = v.tx RETURNING 1)
    SELECT (SELECT count(*) FROM txs), (SELECT count(*) FROM entries)";

/// `$1` the finished transactions kept (the newest), `$2` the batch.
const BEYOND_NEWEST: &str = "
    WITH victims AS (
        SELECT tx FROM tm_transactions WHERE finished
        ORDER BY finished_at DESC, tx DESC OFFSET $1 LIMIT $2
        FOR UPDATE SKIP LOCKED),
    entries AS (DELETE FROM tm_entries e USING victims v WHERE e.tx = v.tx RETURNING 1),
    txs AS (DELETE FROM tm_transactions t USING victims v WHERE t.tx = v.tx RETURNING 1)
    SELECT (SELECT count(*) FROM txs), (SELECT count(*) FROM entries)";

/// Deletes one batch of what `retention` lets go now.
pub(crate) async fn prune_batch(client: &Client, retention: Retention) -> Result<Pruned, PostgresJournalError> {
    let row = match retention {
        Retention::DeleteAtOnce => client.query_one(OLDER_THAN, &[&0.0f64, &PRUNE_BATCH]).await,
        Retention::KeepFor(keep) => client.query_one(OLDER_THAN, &[&keep.as_secs_f64(), &PRUNE_BATCH]).await,
        Retention::KeepLast(n) => {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            client.query_one(BEYOND_NEWEST, &[&n, &PRUNE_BATCH]).await
        }
        _ => return Ok(Pruned::default()),
    }
    .map_err(PostgresJournalError::from_pg)?;
    let count = |at: usize| u64::try_from(row.get::<_, i64>(at)).unwrap_or(0);
    Ok(Pruned::new(count(0), count(1)))
}

/// Deletes, batch after batch, everything `retention` lets go now.
pub(crate) async fn prune_all(client: &Client, retention: Retention) -> Result<Pruned, PostgresJournalError> {
    let mut total = Pruned::default();
    loop {
        let pruned = prune_batch(client, retention).await?;
        total = total + pruned;
        if pruned.transactions < PRUNE_BATCH as u64 {
            return Ok(total);
        }
    }
}

/// The instance's pruning task: every `every`, deletes what `retention`
/// lets go (in batches, until none is left). A failure is logged once
/// (until pruning works again) and tried at the next round: a role without
/// `DELETE` on the journal's tables cannot prune.
pub(crate) async fn background(target: Target, retention: Retention, every: Duration) {
    let mut client: Option<Client> = None;
    let mut failing = false;
    loop {
        tokio::time::sleep(every).await;
        if client.as_ref().is_none_or(Client::is_closed) {
            client = crate::journal::connect(&target).await.ok();
        }
        let Some(c) = &client else { continue };
        match prune_all(c, retention).await {
            Ok(pruned) => {
                if failing {
                    log::info!("pruning the journal works again");
                }
                failing = false;
                if pruned.transactions > 0 {
                    log::debug!("pruned {} finished transactions ({} entries)", pruned.transactions, pruned.entries);
                }
            }
            Err(error) => {
                if !failing {
                    log::warn!(
                        "pruning the journal failed (retried every {every:?}; finished transactions are kept \
                         meanwhile; the role needs DELETE on tm_entries and tm_transactions): {error}"
                    );
                }
                failing = true;
                if error.is_connection_lost() {
                    client = None;
                }
            }
        }
    }
}
