//! A step's transitions: the one place where a step record's status, times,
//! attempt counts, error texts and rollback flag change.
//!
//! The engine decides *when* a step moves (the attempt loop, a group's
//! members, the rollback loop, recovery's replay); what each move writes
//! into the record is decided here, once. The record's fields are private
//! to the ledger, so nothing else can write them: a new way for a step to
//! end is a new transition here, not a new set of field writes elsewhere.
//!
//! ```text
//!            begun ──► attempt_begins ──► attempt_failed(last: false) ──┐
//!              │             ▲                                          │
//!              │             └──────────────────────────────────────────┘
//!              ├──► completed ──► errored_after_completion (status kept)
//!              ├──► attempt_failed(last: true) | broke | interrupted ──► Failed
//!              └──► (rollback) rollback_begins ──► rolled_back | rollback_failed
//!                                             └──► rollback_skipped
//! ```

use core::fmt;
use core::time::Duration;

use crate::durable::entry::{Entry, EntryKind};
use crate::durable::id::{IdempotencyKey, step_index};
use crate::ledger::book::Ledger;
use crate::ledger::error::RollbackState;
use crate::ledger::record::{At, StepRecord, StepStatus};
use crate::util::storage::{List, Storage};
use crate::util::text::{ErrorText, Name};

impl StepRecord {
    /// A step begins: its record, in progress from `now`, in `scope`.
    pub(crate) fn begun(
        index: usize,
        name: Name,
        timeout: Option<Duration>,
        with_undo: bool,
        scope: Option<&'static str>,
        now: At,
    ) -> Self {
        let mut record = StepRecord::new(index, name, timeout, with_undo);
        record.status = StepStatus::InProgress;
        record.started_at = now;
        record.scope = scope;
        record
    }

    /// Attempt number `attempt` (from 1) begins.
    #[inline]
    pub(crate) fn attempt_begins(&mut self, attempt: u32) {
        self.attempts = attempt;
    }

    /// An attempt failed with `error` (its text replaces the previous
    /// attempt's, in the same buffer); if it was the `last`, the step failed
    /// for good at `now`.
    pub(crate) fn attempt_failed(&mut self, error: &dyn fmt::Display, last: bool, now: At) {
        ErrorText::capture_into(&mut self.error, error);
        if last {
            self.status = StepStatus::Failed;
            self.completed_at = now;
        }
    }

    /// The step completed at `now`.
    pub(crate) fn completed(&mut self, now: At) {
        self.status = StepStatus::Completed;
        self.succeeded = true;
        self.completed_at = now;
    }

    /// The step failed for good at `now`, outside its attempts: its undo
    /// record could not be made, the clock broke in its backoff, it was
    /// cancelled, or it was dropped mid-way (`why`).
    pub(crate) fn broke(&mut self, why: &dyn fmt::Display, now: At) {
        self.status = StepStatus::Failed;
        self.completed_at = now;
        self.error = Some(ErrorText::capture(why));
    }

    /// The hook called after a failed attempt (`on_step_failure`) broke:
    /// the step fails for good, keeping its error text and, if it has one
    /// already, its end time.
    pub(crate) fn failure_hook_broke(&mut self, now: At) {
        self.status = StepStatus::Failed;
        if self.completed_at.is_none() {
            self.completed_at = now;
        }
    }

    /// Something after the step completed went wrong (its success hook
    /// panicked): it keeps its status and its undo record stays owed, so it
    /// is rolled back; its error text says why.
    pub(crate) fn errored_after_completion(&mut self, why: &dyn fmt::Display) {
        self.error = Some(ErrorText::capture(why));
    }

    /// The journal could not record the step (`why`): a step that completed
    /// keeps its status (its undo record stays owed in memory), any other
    /// fails for good at `now`.
    pub(crate) fn not_recorded(&mut self, why: &dyn fmt::Display, now: At) {
        if self.status == StepStatus::Completed {
            self.errored_after_completion(why);
        } else {
            self.broke(why, now);
        }
    }

    /// Its uncertain rollback is not owed: every attempt failed cleanly.
    pub(crate) fn rollback_released(&mut self) {
        self.has_rollback = false;
    }

    /// It rolls back at the same time as the other members of group
    /// `group` (nonzero).
    #[cfg(feature = "alloc")]
    pub(crate) fn rolls_back_with(&mut self, group: u32) {
        self.rollback_group = group;
    }

    /// The group whose rollbacks run at the same time that it belongs to
    /// (0: none).
    #[cfg(feature = "alloc")]
    pub(crate) fn rollback_group(&self) -> u32 {
        self.rollback_group
    }

    /// Its rollback begins at `now`.
    pub(crate) fn rollback_begins(&mut self, now: At) {
        self.rollback_started_at = now;
    }

    /// Rollback attempt number `attempt` (from 1) begins.
    #[inline]
    pub(crate) fn rollback_attempt_begins(&mut self, attempt: u32) {
        self.rollback_attempts = attempt;
    }

    /// A rollback attempt failed with `error`.
    pub(crate) fn rollback_attempt_failed(&mut self, error: &dyn fmt::Display) {
        ErrorText::capture_into(&mut self.rollback_error, error);
    }

    /// It was rolled back, at `now`.
    pub(crate) fn rolled_back(&mut self, now: At) {
        self.status = StepStatus::RolledBack;
        self.rollback_completed_at = now;
    }

    /// Its rollback failed for good at `now`, with the last attempt's error.
    pub(crate) fn rollback_failed(&mut self, now: At) {
        self.status = StepStatus::RollbackFailed;
        self.rollback_completed_at = now;
    }

    /// Its rollback failed for good at `now`, outside its attempts (`why`:
    /// the clock broke in its backoff).
    pub(crate) fn rollback_broke(&mut self, why: &dyn fmt::Display, now: At) {
        self.rollback_failed(now);
        self.rollback_error = Some(ErrorText::capture(why));
    }

    /// Its rollback is owed but was not run: an earlier one failed under
    /// `Stop`, or the outcome is unknown and it is left to recovery.
    pub(crate) fn rollback_skipped(&mut self) {
        self.status = StepStatus::RollbackSkipped;
    }

    /// Replayed from the journal: the step ended, completed (`Done`) or
    /// failed.
    pub(crate) fn replayed_end(&mut self, done: bool) {
        self.status = if done { StepStatus::Completed } else { StepStatus::Failed };
        self.succeeded = done;
    }

    /// Replayed from the journal: its rollback ended, rolled back (`Undone`)
    /// or failed for good (`UndoFailed`).
    pub(crate) fn replayed_rollback(&mut self, undone: bool) {
        self.has_rollback = undone;
        if undone {
            self.status = StepStatus::RolledBack;
        }
    }
}

impl<U, S: Storage> Ledger<U, S> {
    /// A step begins: its record is pushed, in progress from `now`. The
    /// caller checked that there is room. Returns its index.
    pub(crate) fn step_begins(
        &mut self,
        name: Name,
        timeout: Option<Duration>,
        with_undo: bool,
        scope: Option<&'static str>,
        now: At,
    ) -> usize {
        let index = self.summary.steps.len();
        // Cannot fail: room was checked.
        let _ = self.summary.steps.push(StepRecord::begun(index, name, timeout, with_undo, scope, now));
        index
    }

    /// The idempotency key of step `index`: the one formula for steps and
    /// group members, at build time (`next_step_key`) and at make time.
    pub(crate) fn step_key(&self, index: usize) -> IdempotencyKey {
        IdempotencyKey::new(self.origin, self.summary.info.id, step_index(index))
    }

    /// Whether there is room for one more step record.
    pub(crate) fn has_step_room(&self) -> bool {
        self.summary.steps.has_room()
    }

    /// Recovery read the operation's name from the journal's `Begin`.
    pub(crate) fn replayed_operation(&mut self, name: Name) {
        self.summary.info.operation = name;
    }

    /// Recovery read a step the ledger has no record of yet (its intent or
    /// `Done`): its record, as replayed, is pushed. Returns whether there
    /// was room.
    pub(crate) fn replayed_step(&mut self, record: StepRecord) -> bool {
        self.summary.steps.push(record).is_ok()
    }

    /// An attempt of step `index` (number `attempt`) failed with `error`;
    /// if it was the `last`, the step failed for good at `now`. Logged.
    pub(crate) fn attempt_failed(&mut self, index: usize, attempt: u32, error: &dyn fmt::Display, last: bool, now: At) {
        let record = &mut self.summary.steps[index];
        record.attempt_failed(error, last, now);
        let info = &self.summary.info;
        if last {
            tm_error!(
                "{} `{}`: step `{}` failed for good on attempt {}: {}",
                info.id,
                info.operation,
                record.name,
                attempt,
                record.error().unwrap_or_default()
            );
        } else {
            tm_warn!(
                "{} `{}`: step `{}` attempt {} failed: {}; retrying",
                info.id,
                info.operation,
                record.name,
                attempt,
                record.error().unwrap_or_default()
            );
        }
        let _ = attempt;
    }

    /// Step `index` completed on attempt `attempt`, at `now`. Logged.
    pub(crate) fn step_completed(&mut self, index: usize, attempt: u32, now: At) {
        let record = &mut self.summary.steps[index];
        record.completed(now);
        let info = &self.summary.info;
        tm_debug!("{} `{}`: step `{}` completed on attempt {}", info.id, info.operation, record.name, attempt);
        let _ = attempt;
    }

    /// The steps in progress from index `from` on (the members of one
    /// group) roll back at the same time, as group `group` (nonzero).
    #[cfg(feature = "alloc")]
    pub(crate) fn roll_back_together(&mut self, from: usize, group: u32) {
        for record in &mut self.summary.steps[from..] {
            record.rolls_back_with(group);
        }
    }

    /// The step records, to move one through a transition.
    pub(crate) fn step_mut(&mut self, index: usize) -> &mut StepRecord {
        &mut self.summary.steps[index]
    }

    /// The transaction's rollback ended, at `now`, with `failures`
    /// rollbacks failed for good (`None`: it was cut short, and what it did
    /// not do stays owed). The one place that decides clean or partial for
    /// the journal: returns the `RolledBack` entry that ends the transaction
    /// there when, and only when, nothing is left owed (none failed for
    /// good, none skipped). A partial one stays unfinished, listed by
    /// `owed`, for every later recovery to try again. Abort and recovery
    /// both end here.
    pub(crate) fn rollback_ended(&mut self, failures: Option<usize>, now: Duration) -> Option<Entry<'static>> {
        self.ended(now);
        let clean = failures.is_some_and(|failures| RollbackState::of(failures, &self.summary).is_clean());
        clean.then(|| Entry::new(self.summary.info.id, None, EntryKind::RolledBack).with_byte(1))
    }

    /// The transaction ended at `now` (committed, rolled back, left to
    /// recovery, or abandoned and rolled back): its summary is complete.
    pub(crate) fn ended(&mut self, now: Duration) {
        self.summary.completed_at = now;
    }

    /// A scope's rollback, of the steps from `first` on, ended with
    /// `failures` rollbacks failed for good: clean or partial by the same
    /// rule as the transaction's, over the scope's own steps. A scope ends
    /// nothing in the journal: the transaction goes on.
    pub(crate) fn scope_rollback_ended(&self, first: usize, failures: usize) -> RollbackState {
        RollbackState::of_steps(failures, &self.summary.steps[first..])
    }
}
