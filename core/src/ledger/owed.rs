//! The undo records a transaction still owes: the one place they are added
//! and taken out.
//!
//! A record is owed from the moment its step may have taken effect: while
//! an attempt of a step with an uncertain rollback is in flight (and after
//! one that may have taken effect), and once the step completed. It leaves
//! when every attempt failed cleanly (taken back), when its rollback ended
//! (paid), or when it is skipped or left to recovery. The list is private
//! to the ledger: the attempt loop, the group engine, the rollback loop and
//! recovery's replay all go through these.

use crate::ledger::book::{Ledger, UndoRecord};
use crate::ledger::record::{StepRecord, TransactionInfo};
use crate::timing::retry::{RetryPolicy, SplitMix64};
use crate::util::storage::{List, Storage};

/// What the rollback loop needs to pay back the latest undo record: the
/// record, its step's record, the transaction's identity and the random
/// generator for its backoff, borrowed at once.
pub(crate) struct Paying<'l, U> {
    pub(crate) undo: &'l mut UndoRecord<U>,
    pub(crate) record: &'l mut StepRecord,
    pub(crate) info: &'l TransactionInfo,
    pub(crate) rng: &'l mut SplitMix64,
}

/// The latest undo records and every step record, for a batch of rollbacks
/// run at the same time.
#[cfg(feature = "alloc")]
pub(crate) struct PayingBatch<'l, U> {
    pub(crate) undo: &'l mut [UndoRecord<U>],
    pub(crate) records: &'l mut [StepRecord],
    pub(crate) info: &'l TransactionInfo,
    pub(crate) rng: &'l mut SplitMix64,
}

impl<U, S: Storage> Ledger<U, S> {
    /// How many undo records are owed.
    #[inline]
    pub(crate) fn owed(&self) -> usize {
        self.undo.len()
    }

    /// The undo records owed, oldest first.
    #[cfg(feature = "alloc")]
    #[inline]
    pub(crate) fn owed_records(&self) -> &[UndoRecord<U>] {
        &self.undo
    }

    /// Whether there is room for one more undo record.
    #[inline]
    pub(crate) fn has_undo_room(&self) -> bool {
        self.undo.has_room()
    }

    /// An undo record is owed. Room was checked before its step ran, so it
    /// cannot fail. Not inlined, for the reason given at
    /// [`push_some`](crate::util::storage::push_some).
    #[inline(never)]
    pub(crate) fn owe(&mut self, record: UndoRecord<U>) {
        let _ = self.undo.push(record);
    }

    /// Step `step`'s undo record, taken back wherever it is (a group's
    /// members own records in any order); the others keep their order.
    pub(crate) fn take_back(&mut self, step: usize) {
        if let Some(position) = self.undo.iter().rposition(|u| u.step == step) {
            // Swaps, not `rotate_left`: that links `memmove` (712 bytes on a
            // Cortex-M3) for a list of a few records.
            for i in position + 1..self.undo.len() {
                self.undo.swap(i - 1, i);
            }
            self.undo.pop();
        }
    }

    /// Step `step` completed with `undo` as its undo record. A step whose
    /// uncertain record is the latest keeps it, with the new value (only
    /// the value changes: assigning the whole record moved it with a
    /// `memmove`); otherwise the new record is owed from now on (a group
    /// member's uncertain record, if `owed_uncertain`, moves to where it
    /// completed).
    pub(crate) fn keep_completed(
        &mut self,
        step: usize,
        undo: U,
        owed_uncertain: bool,
        policy: impl FnOnce() -> (RetryPolicy, crate::timing::future::Timeout),
    ) {
        if owed_uncertain {
            if let Some(latest) = self.undo.last_mut().filter(|u| u.step == step) {
                latest.undo = undo;
                return;
            }
            self.take_back(step);
        }
        let (retry, timeout) = policy();
        self.owe(UndoRecord { step, undo, retry, timeout });
    }

    /// The undo record step `step` owes (its latest), to write to the
    /// journal.
    pub(crate) fn undo_of(&self, step: usize) -> Option<&UndoRecord<U>> {
        self.undo.iter().rev().find(|u| u.step == step)
    }

    /// Replayed from the journal: step `step` owes `undo` (its completed
    /// record replaces an uncertain one). False if there is no room.
    pub(crate) fn replay_owed(
        &mut self,
        step: usize,
        undo: U,
        retry: RetryPolicy,
        timeout: Option<core::time::Duration>,
    ) -> bool {
        if let Some(owed) = self.undo.iter_mut().find(|u| u.step == step) {
            owed.undo = undo;
            owed.retry = retry;
            owed.timeout = crate::timing::future::Timeout::new(timeout);
            return true;
        }
        self.replay_owed_new(step, undo, retry, timeout)
    }

    /// Replayed from the journal: step `step`, new to this read, owes
    /// `undo`. False if there is no room.
    pub(crate) fn replay_owed_new(
        &mut self,
        step: usize,
        undo: U,
        retry: RetryPolicy,
        timeout: Option<core::time::Duration>,
    ) -> bool {
        let timeout = crate::timing::future::Timeout::new(timeout);
        self.undo.push(UndoRecord { step, undo, retry, timeout }).is_ok()
    }

    /// Replayed from the journal: step `step` owes nothing (its rollback
    /// ended, or its intent was released).
    pub(crate) fn replay_paid(&mut self, step: usize) {
        if let Some(owed) = self.undo.iter().position(|u| u.step == step) {
            self.undo.remove_at(owed);
        }
    }

    /// The latest undo record, to pay back, with what its rollback needs.
    pub(crate) fn paying(&mut self) -> Option<Paying<'_, U>> {
        let undo = self.undo.last_mut()?;
        let record = &mut self.summary.steps[undo.step];
        Some(Paying { undo, record, info: &self.summary.info, rng: &mut self.rng })
    }

    /// The latest `batch` undo records, to pay back at the same time.
    #[cfg(feature = "alloc")]
    pub(crate) fn paying_batch(&mut self, batch: usize) -> PayingBatch<'_, U> {
        let first = self.undo.len() - batch;
        PayingBatch {
            undo: &mut self.undo[first..],
            records: &mut self.summary.steps,
            info: &self.summary.info,
            rng: &mut self.rng,
        }
    }

    /// The latest undo record leaves the ledger: its rollback ended (or
    /// had ended, in a batch dropped before it took its records out).
    pub(crate) fn paid(&mut self) {
        self.undo.pop();
    }

    /// The undo records above `floor` leave the ledger: their rollbacks,
    /// run at the same time, ended.
    #[cfg(feature = "alloc")]
    pub(crate) fn paid_down_to(&mut self, floor: usize) {
        while self.undo.len() > floor {
            self.undo.pop();
        }
    }
}
