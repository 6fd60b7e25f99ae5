//! The ledger of a transaction dropped before it ended: what it still
//! owes, as plain data, for a hook to see and an abandon policy to roll
//! back (`engine/abandon.rs`).

use core::fmt;

use crate::ledger::book::Ledger;
use crate::ledger::record::{StepRecord, TransactionInfo};
use crate::util::storage::Storage;

/// The rollbacks a dropped transaction still owes, as plain data: its step
/// records and its undo records (with their retry policies and timeouts).
///
/// Made when a transaction's future is dropped before it finished (see
/// [`AbandonPolicy`](crate::abandon::AbandonPolicy)). Roll it back with [`Abandoned::roll_back`] — on a
/// spawned task, or in a firmware's rollback task that received it over a
/// channel.
pub struct Abandoned<U, S: Storage> {
    pub(crate) ledger: Ledger<U, S>,
}

impl<U, S: Storage> Abandoned<U, S> {
    /// The transaction's id and operation.
    pub fn info(&self) -> &TransactionInfo {
        &self.ledger.summary.info
    }

    /// Every step record of the transaction so far.
    pub fn steps(&self) -> &[StepRecord] {
        &self.ledger.summary.steps
    }

    /// The steps whose rollback is still owed, latest first.
    pub fn pending(&self) -> impl Iterator<Item = &StepRecord> {
        self.ledger.pending()
    }

    /// How many rollbacks are owed.
    pub fn pending_len(&self) -> usize {
        self.ledger.pending().count()
    }
}

/// Dropped while it still owes rollbacks — by the [`Unattended`](crate::abandon::Unattended) policy, by
/// a runtime shutting down with the rollback task spawned by [`Spawned`](crate::abandon::Spawned)
/// still running, or by [`Abandoned::roll_back`] dropped half-way: the lost
/// rollbacks are logged at error level, one line per step.
impl<U, S: Storage> Drop for Abandoned<U, S> {
    fn drop(&mut self) {
        self.ledger.report_lost();
    }
}

impl<U, S: Storage> fmt::Debug for Abandoned<U, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Abandoned")
            .field("transaction", &self.ledger.summary.info)
            .field("pending", &self.pending_len())
            .finish()
    }
}
