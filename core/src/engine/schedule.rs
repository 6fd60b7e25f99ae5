//! When recovery tries what is owed: the [`OwedRetry`] schedule, its
//! per-transaction backoff ([`Backoffs`]), the bound on one transaction's
//! recovery, and the id slots (in 64-bit atomics) that the live, dropped
//! and backing-off ids are kept in.

use crate::durable::id::TransactionId;
use core::fmt;
use core::time::Duration;

/// A fixed set of transaction ids (no allocator, no lock), in 64-bit
/// atomics: each slot holds an id plus one, so that 0 marks an empty slot
/// and id 0 is kept like any other (`u64::MAX` cannot be). Without 64-bit
/// atomics (32-bit microcontrollers) it keeps nothing: every call finds
/// no slot. What the live, dropped and backing-off ids share.
pub(crate) struct IdSlots<const N: usize> {
    #[cfg(target_has_atomic = "64")]
    slots: [core::sync::atomic::AtomicU64; N],
}

#[cfg(target_has_atomic = "64")]
use core::sync::atomic::Ordering;

impl<const N: usize> IdSlots<N> {
    pub(crate) const fn new() -> Self {
        Self {
            #[cfg(target_has_atomic = "64")]
            slots: [const { core::sync::atomic::AtomicU64::new(0) }; N],
        }
    }

    /// Keeps `id` in a free slot: its index, or `None` when every slot is
    /// taken (or ids cannot be kept).
    pub(crate) fn insert(&self, id: TransactionId) -> Option<usize> {
        #[cfg(target_has_atomic = "64")]
        {
            let value = id.get().checked_add(1)?;
            self.slots
                .iter()
                .position(|slot| slot.compare_exchange(0, value, Ordering::AcqRel, Ordering::Acquire).is_ok())
        }
        #[cfg(not(target_has_atomic = "64"))]
        {
            let _ = id;
            None
        }
    }

    /// The slot holding `id`, if any.
    pub(crate) fn find(&self, id: TransactionId) -> Option<usize> {
        #[cfg(target_has_atomic = "64")]
        {
            let value = id.get().checked_add(1)?;
            self.slots.iter().position(|slot| slot.load(Ordering::Acquire) == value)
        }
        #[cfg(not(target_has_atomic = "64"))]
        {
            let _ = id;
            None
        }
    }

    /// Frees the slot holding `id`: whether one did.
    pub(crate) fn remove(&self, id: TransactionId) -> bool {
        #[cfg(target_has_atomic = "64")]
        {
            let Some(value) = id.get().checked_add(1) else { return false };
            self.slots.iter().any(|slot| slot.compare_exchange(value, 0, Ordering::AcqRel, Ordering::Acquire).is_ok())
        }
        #[cfg(not(target_has_atomic = "64"))]
        {
            let _ = id;
            false
        }
    }

    /// Takes one kept id out, if any.
    pub(crate) fn take(&self) -> Option<TransactionId> {
        #[cfg(target_has_atomic = "64")]
        {
            self.slots.iter().find_map(|slot| match slot.swap(0, Ordering::AcqRel) {
                0 => None,
                value => Some(TransactionId::new(value - 1)),
            })
        }
        #[cfg(not(target_has_atomic = "64"))]
        None
    }
}

/// When recovery tries a transaction's owed rollbacks again, once one of
/// them failed for good (set with
/// [`with_owed_retry`](crate::TransactionManager::with_owed_retry)).
///
/// A rollback that fails for good — live, or in a recovery — leaves its
/// transaction *owed*. This is the schedule on which later recoveries try
/// it again. An operator can always try one now with
/// [`recover_transaction`](crate::TransactionManager::recover_transaction), or end
/// it with [`resolve`](crate::TransactionManager::resolve).
///
/// ```
/// use transaction_manager::journal::OwedRetry;
/// assert_eq!(OwedRetry::default(), OwedRetry::EveryRecovery);
/// // Skip 1, then 3, then 7 recoveries after each failed one, at most 20.
/// let backoff = OwedRetry::Backoff { cap: 20 };
/// # let _ = backoff;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OwedRetry {
    /// Every recovery tries them again (the default): right for a recovery
    /// that runs at start-up, or rarely.
    #[default]
    EveryRecovery,
    /// Recovery rounds back off: after the `k`-th recovery in this process
    /// that left the transaction owed, the next `2^k - 1` recoveries (at
    /// most `cap`) leave it owed without trying it
    /// ([`RecoveryOutcome::Deferred`](crate::journal::RecoveryOutcome::Deferred)). For a recovery that runs on a timer
    /// (every second, as beside the Postgres journal), so that a rollback
    /// failing against a service that is down is not tried every round.
    /// Counted in this process's memory, for up to 16 transactions at a
    /// time (with 64-bit atomics; others, and every transaction on targets
    /// without them, are tried at every recovery); a restart tries each
    /// one again at its first recovery.
    Backoff {
        /// The most recoveries skipped in a row.
        cap: u32,
    },
    /// Never by itself: a transaction with a rollback that failed for good
    /// is *stuck* for an operator (listed by
    /// [`stuck`](crate::TransactionManager::stuck), reported as
    /// [`RecoveryOutcome::Stuck`](crate::journal::RecoveryOutcome::Stuck)) — so is one that is stuck for another
    /// reason: no recovery tries it again until an operator runs
    /// [`recover_transaction`](crate::TransactionManager::recover_transaction) or
    /// [`resolve`](crate::TransactionManager::resolve)s it. (The flash journal
    /// keeps no record of a rollback that failed in the live transaction:
    /// there the first recovery tries it once, and a failure then makes
    /// it stuck.)
    Never,
}

/// The recovery rounds left to skip, per owed transaction, for
/// [`OwedRetry::Backoff`]: a fixed set of slots (no allocator, no lock).
/// Each transaction's slot is changed only while recovery holds it live,
/// so one recovery at a time.
pub(crate) struct Backoffs {
    ids: IdSlots<{ Backoffs::SLOTS }>,
    /// Per slot of `ids`: failed rounds in the high half, rounds left to
    /// skip in the low half.
    #[cfg(target_has_atomic = "64")]
    rounds: [core::sync::atomic::AtomicU64; Backoffs::SLOTS],
}

impl Backoffs {
    const SLOTS: usize = 16;

    pub(crate) fn new() -> Self {
        Self {
            ids: IdSlots::new(),
            #[cfg(target_has_atomic = "64")]
            rounds: [const { core::sync::atomic::AtomicU64::new(0) }; Backoffs::SLOTS],
        }
    }

    /// Whether this round skips `id`: counts one skipped round if so.
    pub(crate) fn defer(&self, id: TransactionId) -> bool {
        let Some(at) = self.ids.find(id) else { return false };
        #[cfg(target_has_atomic = "64")]
        {
            let rounds = self.rounds[at].load(Ordering::Acquire);
            if rounds & u64::from(u32::MAX) == 0 {
                return false;
            }
            self.rounds[at].store(rounds - 1, Ordering::Release);
            true
        }
        #[cfg(not(target_has_atomic = "64"))]
        {
            let _ = at;
            false
        }
    }

    /// A recovery left `id` owed: it skips the next `2^k - 1` rounds (at
    /// most `cap`) after its `k`-th failed one.
    pub(crate) fn failed(&self, id: TransactionId, cap: u32) {
        let at = match self.ids.find(id) {
            Some(at) => at,
            None => {
                let Some(at) = self.ids.insert(id) else { return };
                #[cfg(target_has_atomic = "64")]
                self.rounds[at].store(0, Ordering::Release);
                at
            }
        };
        #[cfg(target_has_atomic = "64")]
        {
            let failed = (self.rounds[at].load(Ordering::Acquire) >> 32).saturating_add(1).min(u64::from(u32::MAX));
            let skip = 1u64.checked_shl(failed.min(63) as u32).map_or(u64::MAX, |n| n - 1).min(u64::from(cap));
            self.rounds[at].store(failed << 32 | skip, Ordering::Release);
        }
        #[cfg(not(target_has_atomic = "64"))]
        let _ = (at, cap);
    }

    /// `id` is over (or was tried and owes nothing more): its slot is free.
    pub(crate) fn ended(&self, id: TransactionId) {
        #[cfg(target_has_atomic = "64")]
        if let Some(at) = self.ids.find(id) {
            self.rounds[at].store(0, Ordering::Release);
        }
        self.ids.remove(id);
    }
}

impl fmt::Debug for Backoffs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Backoffs")
    }
}

/// How long recovery spends on one transaction unless set otherwise.
pub(crate) const RECOVERY_BOUND: Duration = Duration::from_secs(600);
