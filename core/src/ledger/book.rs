//! What a transaction knows and owes: its step records and its undo
//! records. The rollback loop that pays them back is the engine's
//! (`engine/rollback.rs`).

use core::fmt;
use core::time::Duration;

use crate::timing::future::Timeout;
use crate::{
    durable::id::TransactionId,
    ledger::{
        record::{StepRecord, StepStatus, TransactionInfo},
        summary::Summary,
    },
    timing::{
        clock::Clock,
        retry::{RetryPolicy, SplitMix64},
    },
    util::{
        storage::{List, Storage},
        text::Name,
    },
};

/// What happens to the remaining rollbacks when one fails for good.
///
/// ```
/// use transaction_manager::rollback::RollbackFailurePolicy;
/// assert_eq!(RollbackFailurePolicy::default(), RollbackFailurePolicy::Continue);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RollbackFailurePolicy {
    /// Go on rolling back the earlier steps, as the Python
    /// `async-transaction-manager` (0.1.2) does: undo as much as possible.
    #[default]
    Continue,
    /// Stop at the first rollback that fails for good: the earlier steps
    /// are left as they are, with status
    /// [`RollbackSkipped`](StepStatus::RollbackSkipped) — for when undoing
    /// an earlier step is unsafe while a later one is still in place.
    Stop,
}

/// What the transaction keeps to roll back one step.
pub(crate) struct UndoRecord<U> {
    pub(crate) step: usize,
    pub(crate) undo: U,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Timeout,
}

/// The records of one transaction: the summary being written, and the undo
/// records still owed.
pub(crate) struct Ledger<U, S: Storage> {
    /// The summary being written: hooks borrow it where it is.
    pub(crate) summary: Summary<S>,
    pub(crate) rng: SplitMix64,
    pub(crate) on_rollback_failure: RollbackFailurePolicy,
    /// Whether step records get start and end times.
    pub(crate) step_times: bool,
    /// The origin of the transaction's idempotency keys.
    pub(crate) origin: u64,
    /// No step record below this index is `InProgress` (a record is
    /// `InProgress` only from its push until its first status change, and
    /// never again): the search for the step in progress starts here, so
    /// it does not walk every earlier record at every step.
    settled: usize,
    pub(in crate::ledger) undo: S::List<UndoRecord<U>>,
}

impl<U, S: Storage> Ledger<U, S> {
    pub(crate) fn new(
        info: TransactionInfo,
        started_at: Duration,
        seed: u64,
        on_rollback_failure: RollbackFailurePolicy,
        step_times: bool,
    ) -> Self {
        Self {
            summary: Summary { info, started_at, completed_at: started_at, steps: Default::default() },
            rng: SplitMix64::new(seed),
            on_rollback_failure,
            step_times,
            origin: 0,
            settled: 0,
            undo: Default::default(),
        }
    }

    /// A step's timestamp: the clock's time, or none without per-step times
    /// ([`TransactionManager::with_step_times`](crate::TransactionManager::with_step_times)).
    #[inline(always)]
    pub(crate) fn stamp<C: Clock + ?Sized>(&self, clock: &C) -> crate::ledger::record::At {
        stamp(self.step_times, clock)
    }

    /// A placeholder left behind when the real ledger is moved out.
    pub(crate) fn empty() -> Self {
        let info = TransactionInfo { id: TransactionId::new(0), operation: Name::from("") };
        Self::new(info, Duration::ZERO, 0, RollbackFailurePolicy::Continue, false)
    }

    /// The step in progress, if any: the first one still `InProgress` (the
    /// members of a parallel group are in progress together).
    pub(crate) fn in_progress(&self) -> Option<(Name, usize)> {
        let step = self.unsettled().iter().find(|s| s.status == StepStatus::InProgress)?;
        Some((step.name.clone(), step.index))
    }

    /// Whether a step is in progress; moves the mark past the records
    /// before the first one that is.
    pub(crate) fn has_in_progress(&mut self) -> bool {
        let from = self.settled.min(self.summary.steps.len());
        match self.summary.steps[from..].iter().position(|s| s.status == StepStatus::InProgress) {
            Some(offset) => {
                self.settled = from + offset;
                true
            }
            None => {
                self.settled = self.summary.steps.len();
                false
            }
        }
    }

    /// The step records that may still be `InProgress`.
    fn unsettled(&self) -> &[StepRecord] {
        let steps = &self.summary.steps[..];
        &steps[self.settled.min(steps.len())..]
    }

    /// Marks the steps in progress (one, or the members of a parallel group)
    /// as failed, abandoned for `why`: their attempts were dropped mid-way,
    /// so their outcome is uncertain.
    pub(crate) fn abandon_in_progress(&mut self, why: &dyn fmt::Display, now: crate::ledger::record::At) {
        let from = self.settled.min(self.summary.steps.len());
        for step in self.summary.steps[from..].iter_mut().filter(|s| s.status == StepStatus::InProgress) {
            step.broke(why, now);
        }
        self.settled = self.summary.steps.len();
    }

    /// Logs each rollback still owed as lost (its undo record is about to
    /// be dropped unrun), one error line per step.
    pub(crate) fn report_lost(&self) {
        let info = &self.summary.info;
        for step in self.pending() {
            tm_error!(
                "{} `{}`: rollback of step `{}` (#{}) LOST: its undo record was dropped before it ran",
                info.id,
                info.operation,
                step.name,
                step.index
            );
        }
    }

    /// The step records of the steps whose rollback is still owed, latest
    /// first.
    pub(crate) fn pending(&self) -> impl Iterator<Item = &StepRecord> {
        self.undo.iter().rev().map(|u| &self.summary.steps[u.step]).filter(|step| !step.ended_in_batch())
    }

    /// Swaps the summary with `other` (an empty one, once it is complete:
    /// the outcome made in place takes it this way).
    pub(crate) fn swap_summary(&mut self, other: &mut Summary<S>) {
        self.settled = 0;
        core::mem::swap(&mut self.summary, other);
    }

    /// Takes the summary out, leaving an empty one, once it is complete.
    pub(crate) fn take_summary(&mut self) -> Summary<S> {
        self.settled = 0;
        core::mem::replace(&mut self.summary, empty_summary())
    }

    /// The transaction's outcome is unknown (neither `Committed` nor
    /// `Aborted` could be written): nothing is rolled back in memory. The
    /// records still owed stay in the journal, for recovery to roll back
    /// unless the journal holds `Committed`; here they are dropped unrun,
    /// their steps `RollbackSkipped`.
    pub(crate) fn leave_to_recovery(&mut self) {
        while let Some(left) = self.undo.pop() {
            self.summary.steps[left.step].rollback_skipped();
        }
    }

    /// With `Stop`, after a rollback failed for good: the records still owed
    /// above `floor` are dropped unrun, their steps `RollbackSkipped`.
    pub(crate) fn skip_down_to(&mut self, floor: usize) {
        while self.undo.len() > floor {
            let Some(skipped) = self.undo.pop() else { break };
            self.summary.steps[skipped.step].rollback_skipped();
        }
        tm_error!(
            "{} `{}`: rollback stopped at the first failure; earlier steps left as they are",
            self.summary.info.id,
            self.summary.info.operation
        );
    }
}

/// A summary with no steps, of no transaction: a placeholder.
pub(crate) fn empty_summary<S: Storage>() -> Summary<S> {
    Summary {
        info: TransactionInfo { id: TransactionId::new(0), operation: Name::from("") },
        started_at: Duration::ZERO,
        completed_at: Duration::ZERO,
        steps: Default::default(),
    }
}

/// A step's or rollback's timestamp (none without per-step times). The
/// test is inlined into every caller, so no call is made when step times
/// are off; the clock reading is not (it is large on some clocks).
#[inline(always)]
pub(crate) fn stamp<C: Clock + ?Sized>(step_times: bool, clock: &C) -> crate::ledger::record::At {
    if step_times { stamp_now(clock) } else { crate::ledger::record::At::NONE }
}

/// Out of line on targets without 64-bit registers, where code size counts:
/// a reading (`Clock::now` and the panic guard) inlined at every place that
/// stamps cost 592 bytes of flash on the firmware bring-up.
#[cfg_attr(not(target_pointer_width = "64"), inline(never))]
fn stamp_now<C: Clock + ?Sized>(clock: &C) -> crate::ledger::record::At {
    crate::ledger::record::At::some(crate::timing::clock::now(clock))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::storage::Fixed;

    /// The step in progress, found the slow way: the first record that is.
    fn first_in_progress(ledger: &Ledger<(), Fixed<64>>) -> Option<usize> {
        ledger.summary.steps.iter().position(|s| s.status == StepStatus::InProgress)
    }

    /// The mark that lets the search for the step in progress skip settled
    /// records never hides one, whatever the order of steps starting,
    /// ending (alone or as members of a group) and being abandoned: checked
    /// against a search of every record, over seeded random histories.
    #[test]
    fn the_in_progress_mark_never_hides_a_step_in_progress() {
        for seed in 0..200 {
            let mut rng = SplitMix64::new(seed);
            let info = TransactionInfo { id: TransactionId::new(seed), operation: Name::from("t") };
            let mut ledger =
                Ledger::<(), Fixed<64>>::new(info, Duration::ZERO, seed, RollbackFailurePolicy::Continue, false);
            for _ in 0..60 {
                let steps = ledger.summary.steps.len();
                match rng.next_u64() % 6 {
                    // A step (or a group member) starts: its record is pushed in progress.
                    0 | 1 if steps < 64 => {
                        let mut record = StepRecord::new(steps, Name::from("s"), None, false);
                        record.status = StepStatus::InProgress;
                        let _ = ledger.summary.steps.push(record);
                    }
                    // One step in progress ends, not necessarily the first.
                    2 | 3 => {
                        let running: heapless::Vec<usize, 64> = ledger
                            .summary
                            .steps
                            .iter()
                            .filter(|s| s.status == StepStatus::InProgress)
                            .map(|s| s.index)
                            .collect();
                        if let Some(&index) = running.get(rng.next_u64() as usize % running.len().max(1)) {
                            ledger.summary.steps[index].status =
                                if rng.next_u64() % 2 == 0 { StepStatus::Completed } else { StepStatus::Failed };
                        }
                    }
                    // The transaction is interrupted: whatever is in progress is abandoned.
                    4 if rng.next_u64() % 4 == 0 => ledger.abandon_in_progress(&"interrupted", stamp_now_for_tests()),
                    _ => {}
                }
                let want = first_in_progress(&ledger);
                assert_eq!(ledger.in_progress().map(|(_, index)| index), want, "seed {seed}");
                assert_eq!(ledger.has_in_progress(), want.is_some(), "seed {seed}");
                assert_eq!(ledger.in_progress().map(|(_, index)| index), want, "seed {seed}, after the mark moved");
            }
        }
    }

    fn stamp_now_for_tests() -> crate::ledger::record::At {
        stamp(false, &&crate::timing::manual_clock::ManualClock::new())
    }
}
