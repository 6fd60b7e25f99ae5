//! A running transaction's state and its life: the handle's fields, how
//! it starts, commits, aborts, is interrupted, and what happens when it is
//! dropped before it ends. The user-facing methods are in
//! `api/transaction.rs`; the attempt loop in `engine/attempt.rs`.

use crate::timing::retry::RetryPolicy;
use core::fmt;
use core::future::Future;
use core::sync::atomic::AtomicBool;
use core::time::Duration;

use crate::engine::rollback::{Fork, Services, ViaRollback};
use crate::ledger::book::Ledger;
use crate::observe::hooks::{complete, hook_call};
use crate::{
    durable::{
        entry::{Entry, EntryKind},
        journal::JournalFailure,
    },
    engine::binding::JournalFor,
};
use crate::{
    engine::{abandon::AbandonPolicy, manager::TransactionManager},
    ledger::{abandoned::Abandoned, rollback::Rollback},
    observe::hooks::Hooks,
    timing::clock::Clock,
    util::storage::Storage,
};

/// A transaction in progress: the handle its body receives, to add steps.
///
/// Each step runs as soon as it is awaited, and its value comes back to the
/// body, so later steps can use it. Type parameters: the manager `M`, the
/// context `Ctx` lent to steps and rollbacks, the undo record type `U` and
/// the storage `S` — all fixed by the manager and builder, so a body
/// closure never names them.
///
/// A `Transaction` cannot outlive its body: the borrow checker rejects any
/// attempt to keep it, so no step can be added after the transaction ended.
///
/// ```compile_fail
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let mut kept = None;
/// let _ = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
///     kept = Some(tx); // error: the transaction does not live long enough
///     Ok::<_, StepError<&str>>(())
/// }));
/// ```
///
/// ```
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let mut counter = 0u32;
/// let done = clock.block_on(manager.transaction("count").fixed::<NoRollback, 2>().run_with(
///     &mut counter,
///     async |tx| {
///         tx.step("add").run_with(async |n: &mut u32| { *n += 1; Ok::<_, &str>(()) }).await?;
///         *tx.context() += 10;
///         Ok::<_, StepError<&str>>(tx.steps().len())
///     },
/// ));
/// assert_eq!(done.unwrap().into_value(), 1);
/// assert_eq!(counter, 11);
/// ```
pub struct Transaction<'t, M, Ctx: ?Sized, U, S: Storage> {
    pub(crate) manager: &'t M,
    pub(crate) ctx: &'t mut Ctx,
    /// Built in place by `run_with` and only borrowed here: moving it would
    /// copy the full capacity of its inline lists.
    pub(crate) ledger: &'t mut Ledger<U, S>,
    /// The settings of the step being built or run: set by
    /// [`step`](Transaction::step) and the step's options.
    pub(crate) config: StepConfig,
    /// The innermost scope the body is in ([`Transaction::scope`]), which
    /// new steps record.
    pub(crate) scope: Option<&'static str>,
    /// When the transaction's deadline passes, on its clock: no step (and
    /// no retry) starts at or after it.
    pub(crate) deadline_at: Option<Duration>,
    /// Lends each of a group's concurrent rollbacks a context of its own;
    /// set by [`Group::roll_back_concurrently`](crate::group::Group::roll_back_concurrently)
    /// (no context, so `()`), none otherwise.
    pub(crate) fork: Fork<Ctx>,
    /// Hands the owed rollbacks to the manager's abandon policy if the
    /// transaction is dropped before it finished; `None` once it finished.
    /// A function pointer, chosen where the policy's bounds are known, so
    /// that `Drop` needs none.
    on_drop: Option<fn(&mut Self)>,
    /// Raised by a parallel group for the moment it stops an attempt of a
    /// member that borrows a part of the context
    /// ([`MemberBuilder::execute_on`](crate::group::MemberBuilder::execute_on)):
    /// the attempt sees it, drops the user's future and hands the part
    /// back for the member's next attempt. Lent to the members (shared)
    /// while the group engine has the rest of the transaction.
    pub(crate) stopping: AtomicBool,
}

impl<M, Ctx: ?Sized, U, S: Storage> Drop for Transaction<'_, M, Ctx, U, S> {
    fn drop(&mut self) {
        if let Some(abandon) = self.on_drop.take() {
            abandon(self);
        }
    }
}

impl<M, Ctx: ?Sized, U, S: Storage> Transaction<'_, M, Ctx, U, S> {
    /// The handle a scope's body receives: the same records, reborrowed,
    /// with the scope's name for the steps it adds. If it is dropped, this
    /// transaction (still borrowed by it) is what abandons them.
    pub(crate) fn nested(&mut self, scope: &'static str) -> Transaction<'_, M, Ctx, U, S> {
        Transaction {
            manager: self.manager,
            ctx: &mut *self.ctx,
            ledger: &mut *self.ledger,
            config: StepConfig::default(),
            scope: Some(scope),
            deadline_at: self.deadline_at,
            fork: self.fork,
            on_drop: None,
            stopping: AtomicBool::new(false),
        }
    }

    /// Splits the handle for a parallel group: the context (for the
    /// members to borrow parts of), the stop flag (shared with them), and a
    /// handle on the same records without the context, for the group
    /// engine, which never needs the context while the members run. If the
    /// group is dropped, this transaction (still borrowed) abandons what it
    /// owes, as for a scope.
    pub(crate) fn split(&mut self) -> (&mut Ctx, &AtomicBool, Transaction<'_, M, NoContext, U, S>) {
        let detached = Transaction {
            manager: self.manager,
            ctx: &mut [],
            ledger: &mut *self.ledger,
            config: StepConfig::default(),
            scope: self.scope,
            deadline_at: self.deadline_at,
            // The group engine rolls nothing back itself.
            fork: Fork::NONE,
            on_drop: None,
            stopping: AtomicBool::new(false),
        };
        (&mut *self.ctx, &self.stopping, detached)
    }
}

/// The context of the handle a parallel group's engine works with: none.
pub(crate) type NoContext = [(); 0];

/// What the step engine and the group engine share, with no bound on the
/// context or the abandon policy (the group engine runs on a handle without
/// the context).
impl<'t, C: Clock, H, A, J: JournalFor<U>, Ctx: ?Sized, U, S: Storage>
    Transaction<'t, TransactionManager<C, H, A, J>, Ctx, U, S>
{
    /// The clock's time (a panicking `now()` reads as zero).
    fn now(&self) -> Duration {
        crate::timing::clock::now(&self.manager.clock)
    }

    /// A step's timestamp: the clock's time, or none when the manager turned
    /// per-step times off.
    #[inline(always)]
    pub(crate) fn stamp(&self) -> crate::ledger::record::At {
        self.ledger.stamp(&self.manager.clock)
    }

    /// A step whose future the body dropped mid-way (its own `select` or
    /// timeout around the step) is still `InProgress`: record it as
    /// interrupted. Its undo record, if one is owed, is already right: an
    /// uncertain record is in the ledger only while an attempt is in flight
    /// or after one that may have taken effect.
    pub(crate) fn settle_dropped_step(&mut self) {
        if self.ledger.has_in_progress() {
            let now = self.stamp();
            self.ledger.abandon_in_progress(&"interrupted: the step's future was dropped", now);
        }
    }

    /// Whether the transaction's deadline has passed: no step or retry may
    /// start then.
    /// (Inlined: without a deadline it is one test, and no call.)
    #[inline(always)]
    pub(crate) fn past_deadline(&self) -> bool {
        match self.deadline_at {
            Some(deadline) => self.now() >= deadline,
            None => false,
        }
    }

    /// Step `index`'s uncertain rollback is not owed (every attempt failed
    /// cleanly, so its undo record was taken out): its record says so and,
    /// with a journal, the lazy `Released` tells recovery that its intent is
    /// not owed. If that entry is lost, recovery runs the (idempotent)
    /// uncertain rollback once more than needed. The one place for both,
    /// for steps and group members alike.
    pub(crate) fn release_rollback(&mut self, index: usize) -> impl Future<Output = ()> + 't {
        self.ledger.step_mut(index).rollback_released();
        self.manager.journal.write_lazy(
            self.ledger.summary.info().id,
            Some(crate::durable::id::step_index(index)),
            EntryKind::Released,
        )
    }

    /// With a journal, step `index`'s durable entry, from its undo record:
    /// its `Intent` (before its first attempt) or its `Done` (before its
    /// output reaches the body). The one place for both, for steps and
    /// group members alike. If the intent cannot be written, the record is
    /// taken back and the attempt does not start; a `Done` that cannot be
    /// written leaves the record owed in memory (so the body stops and
    /// rolls it back). Either way the step is not recorded: its record says
    /// why, and the failure is returned to fail it with.
    pub(crate) async fn journal_step(&mut self, index: usize, kind: EntryKind) -> Result<(), JournalFailure> {
        let Err(failure) = self.journal_undo(index, kind).await else { return Ok(()) };
        let failure: JournalFailure = failure.into();
        let info = self.ledger.summary.info();
        tm_error!("{} `{}`: step #{}: {}", info.id, info.operation, index, failure);
        if kind == EntryKind::Intent {
            self.ledger.take_back(index);
        }
        let now = self.stamp();
        self.ledger.step_mut(index).not_recorded(&failure, now);
        Err(failure)
    }

    /// Writes step `index`'s undo record (the latest it has in the ledger)
    /// to the journal as `kind`.
    ///
    /// Not `async fn`: the future is the journal's own, so without a
    /// journal it holds nothing (no `&U` across an await, which would make a
    /// transaction of `!Sync` undo records `!Send`).
    pub(crate) fn journal_undo(
        &self,
        index: usize,
        kind: EntryKind,
    ) -> impl Future<Output = Result<(), J::Failure>> + '_ {
        let ledger = &*self.ledger;
        let undo = ledger.undo_of(index);
        let record = &ledger.summary.steps()[index];
        let entry = Entry::new(ledger.summary.info().id, Some(crate::durable::id::step_index(index)), kind);
        let journal = &self.manager.journal;
        // Called right after the step's record was pushed: it is there (a
        // step without one writes nothing).
        let written = undo
            .map(|undo| journal.write_undo(entry, record.name.as_str(), undo.retry, undo.timeout.get(), &undo.undo));
        crate::timing::future::Maybe::new(written)
    }
}

impl<'t, C: Clock, H: Hooks, A, J, Ctx: ?Sized, U: Rollback<Ctx>, S: Storage>
    Transaction<'t, TransactionManager<C, H, A, J>, Ctx, U, S>
where
    A: AbandonPolicy<C, H, Ctx, U, S>,
    J: JournalFor<U>,
{
    pub(crate) fn new(
        manager: &'t TransactionManager<C, H, A, J>,
        ctx: &'t mut Ctx,
        ledger: &'t mut Ledger<U, S>,
    ) -> Self {
        Self {
            manager,
            ctx,
            ledger,
            config: StepConfig::default(),
            scope: None,
            deadline_at: None,
            fork: Fork::NONE,
            on_drop: Some(Self::abandon),
            stopping: AtomicBool::new(false),
        }
    }

    /// `on_drop`: the transaction was dropped before it finished.
    fn abandon(&mut self) {
        let manager = self.manager;
        let now = self.stamp();
        let ledger = &mut *self.ledger;
        ledger.abandon_in_progress(&"interrupted: the transaction was dropped", now);
        if J::ENABLED {
            // Unfinished in the journal: `recover_dropped` rolls it back.
            manager.journal.ended(ledger.summary.info().id);
            manager.journal.dropped(ledger.summary.info().id);
        }
        tm_error!(
            "{} `{}`: dropped before it finished, owing {} rollback(s)",
            ledger.summary.info().id,
            ledger.summary.info().operation,
            ledger.owed()
        );
        if !A::TAKES_RECORDS && !H::ENABLED {
            // Nobody takes the records and no hook looks at them: report
            // them where they are instead of moving them out.
            ledger.report_lost();
            return;
        }
        let abandoned = Abandoned { ledger: core::mem::replace(ledger, Ledger::empty()) };
        // Panics must not escape `Drop` (a panic while unwinding aborts).
        if let Err(panic) = crate::util::text::caught(|| manager.hooks.on_transaction_abandoned(&abandoned)) {
            tm_error!("on_transaction_abandoned hook panicked: {}", panic);
        }
        if let Err(panic) =
            crate::util::text::caught(|| manager.abandon.abandon(&manager.clock, &manager.hooks, abandoned))
        {
            tm_error!("abandon policy panicked: {}", panic);
        }
    }

    pub(crate) async fn start(&mut self) {
        let info = self.ledger.summary.info();
        tm_info!("{} `{}`: transaction started", info.id, info.operation);
        if J::ENABLED {
            // Live from here until it commits, rolls back or is dropped:
            // recovery in this process leaves it alone.
            self.manager.journal.began(info.id);
            // Lazy: recovery needs no `Begin` (a durable `Done` names its
            // transaction), so a failure here is only logged; the step
            // entries that matter fail on their own if the journal is broken.
            let entry = Entry::new(info.id, None, EntryKind::Begin).with_text(info.operation.as_str());
            if let Err(failure) = self.manager.journal.write(&entry).await {
                let failure: JournalFailure = failure.into();
                tm_error!("{} `{}`: {}", info.id, info.operation, failure);
            }
        }
        if !H::ENABLED {
            return;
        }
        let hooks = &self.manager.hooks;
        if let Err(panic) = hook_call(hooks, || hooks.on_transaction_start(info)).await {
            tm_error!("{} `{}`: on_transaction_start hook panicked: {}", info.id, info.operation, panic);
        }
    }

    /// The body was stopped from outside: the step it was in is abandoned.
    pub(crate) fn interrupted(&mut self, why: &dyn fmt::Display) -> (Option<(crate::util::text::Name, usize)>, usize) {
        let step = self.ledger.in_progress();
        let now = self.stamp();
        self.ledger.abandon_in_progress(why, now);
        (step, self.ledger.summary.steps().len())
    }

    /// The body returned `Ok`: commit. With a journal, the `Committed`
    /// entry is durable first. If that append fails, the transaction's one
    /// decision is settled in the journal before anything acts on it: an
    /// `Aborted` entry is appended. Written, the transaction is not
    /// committed and the caller rolls it back ([`CommitFailed::Aborted`]).
    /// Refused because the journal holds `Committed` ([`Journal::decided`](crate::journal::Journal::decided)),
    /// the commit was durable after all: the transaction commits. Failed
    /// otherwise, the outcome is unknown: nothing is rolled back, the
    /// transaction is left unfinished in the journal for recovery to
    /// decide from what it holds, and it ends here
    /// ([`CommitFailed::Undecided`]).
    pub(crate) async fn commit(&mut self) -> Result<(), CommitFailed<J::CommitFailure>> {
        self.settle_dropped_step();
        if J::ENABLED {
            let info = self.ledger.summary.info();
            let entry = Entry::new(info.id, None, EntryKind::Committed);
            if let Err(failure) = self.manager.journal.write(&entry).await {
                let failure: JournalFailure = failure.into();
                let aborted = Entry::new(info.id, None, EntryKind::Aborted);
                match self.manager.journal.write(&aborted).await {
                    Ok(()) => {
                        tm_error!(
                            "{} `{}`: not committed: {}; aborted, rolling back",
                            info.id,
                            info.operation,
                            failure
                        );
                        return Err(CommitFailed::Aborted(J::commit_failure(failure)));
                    }
                    Err(refusal) => {
                        let refusal: JournalFailure = refusal.into();
                        if refusal.decided() != Some(EntryKind::Committed) {
                            tm_error!(
                                "{} `{}`: outcome unknown: {}, and {}; nothing rolled back, left to recovery",
                                info.id,
                                info.operation,
                                failure,
                                refusal
                            );
                            self.leave_to_recovery().await;
                            return Err(CommitFailed::Undecided(J::commit_failure(refusal)));
                        }
                        tm_warn!(
                            "{} `{}`: {}, but the journal holds the commit: committed",
                            info.id,
                            info.operation,
                            failure
                        );
                    }
                }
            }
        }
        self.on_drop = None;
        let manager = self.manager;
        if J::ENABLED {
            manager.journal.ended(self.ledger.summary.info().id);
        }
        let now = self.now();
        self.ledger.ended(now);
        let summary = &self.ledger.summary;
        tm_info!(
            "{} `{}`: committed after {} step(s)",
            summary.info().id,
            summary.info().operation,
            summary.total_steps()
        );
        complete(&manager.hooks, &self.ledger.summary, true).await;
        Ok(())
    }

    /// The outcome is unknown (neither decision could be written): the
    /// transaction ends here without rolling anything back. What it owes
    /// stays in the journal, unfinished, for
    /// [`recover_dropped`](crate::TransactionManager::recover_dropped) or
    /// the next `recover`: they roll it back unless the journal holds
    /// `Committed`.
    async fn leave_to_recovery(&mut self) {
        let manager = self.manager;
        self.on_drop = None;
        self.ledger.leave_to_recovery();
        let id = self.ledger.summary.info().id;
        manager.journal.ended(id);
        manager.journal.dropped(id);
        let now = self.now();
        self.ledger.ended(now);
        complete(&manager.hooks, &self.ledger.summary, false).await;
    }

    /// The body failed: roll back the completed steps.
    /// Adds the rollbacks that failed for good to `rollback_failures`, a
    /// list the caller keeps: it builds the error around them and the
    /// summary, once (not moved through layers).
    pub(crate) async fn abort(
        &mut self,
        rollback_failures: &mut S::List<crate::ledger::error::RollbackFailure<U::Error>>,
    ) {
        self.settle_dropped_step();
        let manager = self.manager;
        let info = self.ledger.summary.info();
        let owed = self.ledger.owed();
        tm_warn!("{} `{}`: body failed; rolling back {} step(s)", info.id, info.operation, owed);
        // The ledger stays in `self` while rolling back: if this future is
        // dropped now, what is still owed goes to the abandon policy.
        self.ledger
            .roll_back_into::<ViaRollback, _, _, _, _>(
                0,
                &mut *self.ctx,
                self.fork,
                Services { clock: &manager.clock, hooks: &manager.hooks, journal: &manager.journal },
                &mut *rollback_failures,
            )
            .await;
        let now = self.now();
        // Only a clean rollback ends the transaction in the journal: one
        // that left a rollback owed (failed for good, or skipped by `Stop`)
        // stays unfinished, listed by `owed`, and every later recovery
        // tries what it still owes again. Decided by the ledger.
        // In a block, with a constant condition around the await: without a
        // journal the await is compiled out and the entry is not kept in
        // this future (48 bytes).
        let clean = {
            let end = self.ledger.rollback_ended(Some(rollback_failures.len()), now);
            let clean = end.is_some();
            if J::ENABLED {
                if let Some(entry) = end {
                    if let Err(failure) = manager.journal.write(&entry).await {
                        let failure: JournalFailure = failure.into();
                        // Lazy: if it is lost, recovery repeats the
                        // (idempotent) rollbacks whose `Undone` it does not
                        // find.
                        let info = self.ledger.summary.info();
                        tm_error!("{} `{}`: {}", info.id, info.operation, failure);
                    }
                }
            }
            clean
        };
        let summary = &self.ledger.summary;
        if J::ENABLED {
            manager.journal.ended(summary.info().id);
        }
        self.on_drop = None;
        let summary = &self.ledger.summary;
        if clean {
            // The same words as the error's `Display`.
            let what = if owed == 0 { "nothing to roll back" } else { "rolled back cleanly" };
            tm_info!("{} `{}`: {}", summary.info().id, summary.info().operation, what);
        } else {
            tm_error!(
                "{} `{}`: PARTIALLY rolled back, {} rollback(s) failed",
                summary.info().id,
                summary.info().operation,
                rollback_failures.len()
            );
        }
        complete(&manager.hooks, &self.ledger.summary, false).await;
    }
}

/// Why [`Transaction::commit`] did not commit, with the body error it is
/// built from.
pub(crate) enum CommitFailed<F> {
    /// `Committed` could not be written and `Aborted` was: roll back.
    Aborted(F),
    /// Neither could be written: the outcome is unknown, nothing is rolled
    /// back, and the transaction has ended here (left to recovery).
    Undecided(F),
}

/// A step's settings, set by [`Step`](crate::step::Step)'s options where the transaction
/// keeps them for the step it runs next (the step's builder borrows the
/// transaction, so no other step can use them meanwhile): the step's
/// future does not carry a copy of them, and running the step copies
/// nothing. The rollback's settings default to the step's, resolved when
/// the undo record is made.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StepConfig {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) rollback_timeout: Option<Option<Duration>>,
    pub(crate) rollback_retry: Option<RetryPolicy>,
}

impl StepConfig {
    /// The rollback's retries and backoff.
    pub(crate) fn rollback_retry(&self) -> RetryPolicy {
        self.rollback_retry.unwrap_or(self.retry)
    }

    /// The rollback's per-attempt timeout.
    pub(crate) fn rollback_timeout(&self) -> Option<Duration> {
        self.rollback_timeout.unwrap_or(self.timeout)
    }
}
