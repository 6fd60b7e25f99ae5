//! How long a journal keeps the transactions that are over.

use core::time::Duration;

/// How long a journal keeps a transaction once it is over — committed,
/// rolled back, or resolved by an operator — before deleting its entries.
///
/// A journal that keeps everything grows without end: a service running
/// 1,000 transactions a second writes some five entries for each. A
/// journal with a retention deletes finished transactions in the
/// background, in bounded batches, and **never** one that is not over: a
/// transaction still running, one that owes a rollback that failed for good
/// (it ends only once rolled back), or one recovery marked stuck (it ends
/// only when rolled back or resolved). What a journal does with it is the
/// journal's business (the SQLite journal's `with_retention`); the engine
/// never reads a finished transaction, so recovery is the same whatever
/// the retention.
///
/// ```
/// use core::time::Duration;
/// use transaction_manager::journal::Retention;
/// let retention = Retention::KeepFor(Duration::from_secs(10 * 60));
/// assert!(retention.deletes());
/// assert!(!Retention::KeepAll.deletes());
/// assert_eq!(Retention::KeepFor(Duration::ZERO), Retention::KeepFor(Duration::ZERO));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retention {
    /// Keep every transaction: the journal only grows.
    KeepAll,
    /// Delete a transaction's entries soon after it is over (in the
    /// journal's next write, or within a second when it is idle).
    DeleteAtOnce,
    /// Keep a transaction for this long after it is over, by the
    /// journal's wall clock.
    KeepFor(Duration),
    /// Keep the `n` transactions that were over last.
    KeepLast(u64),
}

impl Retention {
    /// Whether the policy ever deletes anything (all but
    /// [`KeepAll`](Retention::KeepAll)).
    pub const fn deletes(self) -> bool {
        !matches!(self, Retention::KeepAll)
    }
}

/// What a prune deleted: finished transactions and their entries.
///
/// ```
/// use transaction_manager::journal::Pruned;
/// let pruned = Pruned::new(3, 11);
/// assert_eq!((pruned.transactions, pruned.entries), (3, 11));
/// assert_eq!(pruned + Pruned::new(1, 4), Pruned::new(4, 15));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pruned {
    /// Finished transactions deleted.
    pub transactions: u64,
    /// Their entries.
    pub entries: u64,
}

impl Pruned {
    /// `transactions` deleted, with `entries` entries.
    pub const fn new(transactions: u64, entries: u64) -> Self {
        Pruned { transactions, entries }
    }
}

impl core::ops::Add for Pruned {
    type Output = Pruned;

    fn add(self, other: Pruned) -> Pruned {
        Pruned::new(self.transactions + other.transactions, self.entries + other.entries)
    }
}
