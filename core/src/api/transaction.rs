//! A running transaction: the handle its body receives, the step engine
//! (attempts, timeouts, retries, hooks, undo records), and what happens when
//! it ends — or is dropped before it ends.

use core::fmt;
use core::future::Future;
use core::sync::atomic::AtomicBool;
use core::time::Duration;

use crate::api::step::{Maybe, Step, StepConfig, StepParts};
use crate::engine::rollback::{Fork, Panicked, ViaRollback};
use crate::ledger::book::{Ledger, UndoRecord};
use crate::observe::hooks::{complete, hook_call};
use crate::timing::future::with_timeout;
use crate::trace::within;
use crate::util::panic::guarded_call;
use crate::util::text::ErrorText;
use crate::{
    durable::journal::{Entry, EntryKind, JournalFailure},
    engine::binding::JournalFor,
};
use crate::{
    engine::{abandon::AbandonPolicy, manager::TransactionManager},
    ledger::{
        abandoned::Abandoned,
        error::{RollbackState, StepError, StepErrorKind},
        record::{StepRecord, StepStatus, TransactionInfo},
        rollback::Rollback,
    },
    observe::hooks::{Hooks, StepEvent},
    timing::clock::Clock,
    util::storage::{List, Storage},
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

impl<'t, C, H, A, J, Ctx: ?Sized, U, S: Storage> Transaction<'t, TransactionManager<C, H, A, J>, Ctx, U, S> {
    /// Starts building a step named `name`; set its options, then run it
    /// with [`Step::run`] (no rollback) or [`Step::execute`] followed by a
    /// rollback.
    pub fn step(
        &mut self,
        name: impl Into<crate::util::text::Name>,
    ) -> Step<'_, 't, TransactionManager<C, H, A, J>, Ctx, U, S> {
        self.config = StepConfig {
            timeout: self.manager.timeout,
            retry: self.manager.retry,
            rollback_timeout: None,
            rollback_retry: None,
        };
        Step { name: name.into(), tx: self }
    }

    /// The context the transaction was run with (`()` for
    /// [`run`](crate::TransactionBuilder::run)).
    pub fn context(&mut self) -> &mut Ctx {
        self.ctx
    }

    /// The transaction's id and operation.
    pub fn info(&self) -> &TransactionInfo {
        &self.ledger.summary.info
    }

    /// The transaction's id.
    pub fn id(&self) -> crate::durable::id::TransactionId {
        self.ledger.summary.info.id
    }

    /// The idempotency key of the next step (the one the next
    /// [`step`](Transaction::step) call starts): this transaction's id and
    /// that step's index. Pass it to the API the step calls, and keep it in
    /// its undo record, so that a step or rollback repeated after a crash
    /// is recognised by the API. Where the call is made, a step gets it
    /// without this call: [`Step::key`], [`Step::execute_keyed`],
    /// [`Execute::undo_keyed`](crate::step::Execute::undo_keyed),
    /// [`Execute::rollback_keyed`](crate::step::Execute::rollback_keyed).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
    /// let done = clock.block_on(manager.transaction("t").with_id(TransactionId::new(9)).fixed::<NoRollback, 2>().run(async |tx| {
    ///     tx.step("a").run(|| async { Ok::<_, &str>(()) }).await?;
    ///     let key = tx.next_step_key();
    ///     tx.step("b").run(|| async move { Ok::<_, &str>(key.to_string()) }).await
    /// }));
    /// assert_eq!(done.unwrap().into_value(), "tx-9.1-000000000000002a");
    /// ```
    pub fn next_step_key(&self) -> crate::durable::id::IdempotencyKey {
        let index = u32::try_from(self.ledger.summary.steps.len()).unwrap_or(u32::MAX);
        crate::durable::id::IdempotencyKey::new(self.ledger.origin, self.ledger.summary.info.id, index)
    }

    /// The records of the steps run so far.
    pub fn steps(&self) -> &[StepRecord] {
        &self.ledger.summary.steps
    }

    /// The transaction's clock, for steps that need to wait or read the time.
    ///
    /// The returned `&C` outlives this borrow of the transaction, so a step's
    /// execute closure can use it while `tx.step(..)` holds the transaction:
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let done = clock.block_on(manager.transaction("settle").fixed::<NoRollback, 1>().run(async |tx| {
    ///     let clock = tx.clock();
    ///     tx.step("wait_for_settle")
    ///         .run(|| async move {
    ///             clock.sleep(Duration::from_millis(20)).await;
    ///             Ok::<_, &str>(clock.now())
    ///         })
    ///         .await
    /// }));
    /// assert_eq!(done.unwrap().into_value(), Duration::from_millis(20));
    /// ```
    pub fn clock(&self) -> &'t C {
        let manager: &'t TransactionManager<C, H, A, J> = self.manager;
        &manager.clock
    }
}

/// What the step engine and the group engine share, with no bound on the
/// context or the abandon policy (the group engine runs on a handle without
/// the context).
impl<C: Clock, H, A, J: JournalFor<U>, Ctx: ?Sized, U, S: Storage>
    Transaction<'_, TransactionManager<C, H, A, J>, Ctx, U, S>
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

    /// Bookkeeping of a completed attempt. Not generic over the step.
    pub(crate) fn step_completed(&mut self, index: usize, attempt: u32) {
        let now = self.stamp();
        let record = &mut self.ledger.summary.steps[index];
        record.status = StepStatus::Completed;
        record.succeeded = true;
        record.completed_at = now;
        let info = &self.ledger.summary.info;
        tm_debug!("{} `{}`: step `{}` completed on attempt {}", info.id, info.operation, record.name, attempt);
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
        let undo = ledger.undo.iter().rev().find(|u| u.step == index);
        let record = &ledger.summary.steps[index];
        let entry = Entry::new(ledger.summary.info.id, Some(step_index(index)), kind);
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
            manager.journal.ended(ledger.summary.info.id);
            manager.journal.dropped(ledger.summary.info.id);
        }
        tm_error!(
            "{} `{}`: dropped before it finished, owing {} rollback(s)",
            ledger.summary.info.id,
            ledger.summary.info.operation,
            ledger.undo.len()
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
        let info = &self.ledger.summary.info;
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
        (step, self.ledger.summary.steps.len())
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
            let info = &self.ledger.summary.info;
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
            manager.journal.ended(self.ledger.summary.info.id);
        }
        let now = self.now();
        let summary = &mut self.ledger.summary;
        summary.completed_at = now;
        tm_info!("{} `{}`: committed after {} step(s)", summary.info.id, summary.info.operation, summary.total_steps());
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
        let id = self.ledger.summary.info.id;
        manager.journal.ended(id);
        manager.journal.dropped(id);
        let now = self.now();
        self.ledger.summary.completed_at = now;
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
        let info = &self.ledger.summary.info;
        let owed = self.ledger.undo.len();
        tm_warn!("{} `{}`: body failed; rolling back {} step(s)", info.id, info.operation, owed);
        // The ledger stays in `self` while rolling back: if this future is
        // dropped now, what is still owed goes to the abandon policy.
        self.ledger
            .roll_back_into::<ViaRollback, _, _, _, _>(
                0,
                &mut *self.ctx,
                self.fork,
                &manager.clock,
                &manager.hooks,
                &manager.journal,
                &mut *rollback_failures,
            )
            .await;
        let now = self.now();
        let summary = &mut self.ledger.summary;
        summary.completed_at = now;
        let clean = RollbackState::of(rollback_failures.len(), summary).is_clean();
        // Only a clean rollback ends the transaction in the journal: one
        // that left a rollback owed (failed for good, or skipped by `Stop`)
        // stays unfinished, listed by `owed`, and every later recovery
        // tries what it still owes again.
        if J::ENABLED && clean {
            let entry = Entry::new(summary.info.id, None, EntryKind::RolledBack).with_byte(1);
            if let Err(failure) = manager.journal.write(&entry).await {
                let failure: JournalFailure = failure.into();
                // Lazy: if it is lost, recovery repeats the (idempotent)
                // rollbacks whose `Undone` it does not find.
                tm_error!("{} `{}`: {}", summary.info.id, summary.info.operation, failure);
            }
        }
        if J::ENABLED {
            manager.journal.ended(summary.info.id);
        }
        self.on_drop = None;
        let summary = &self.ledger.summary;
        if clean {
            // The same words as the error's `Display`.
            let what = if owed == 0 { "nothing to roll back" } else { "rolled back cleanly" };
            tm_info!("{} `{}`: {}", summary.info.id, summary.info.operation, what);
        } else {
            tm_error!(
                "{} `{}`: PARTIALLY rolled back, {} rollback(s) failed",
                summary.info.id,
                summary.info.operation,
                rollback_failures.len()
            );
        }
        complete(&manager.hooks, &self.ledger.summary, false).await;
    }

    /// Records a new step (its record, and its policies for the attempts
    /// to come), or says why it cannot run. Not generic over the step, so
    /// one copy serves every step of a transaction type.
    fn begin_step(
        &mut self,
        name: crate::util::text::Name,
        with_undo: bool,
    ) -> Result<usize, (crate::util::text::Name, usize, Refused)> {
        self.settle_dropped_step();
        let now = self.stamp();
        let ledger = &mut self.ledger;
        let index = ledger.summary.steps.len();
        let info = &ledger.summary.info;
        if name.as_str().is_empty() {
            tm_error!("{} `{}`: step #{} refused: empty name", info.id, info.operation, index);
            return Err((name, index, Refused::EmptyName));
        }
        if !ledger.summary.steps.has_room() || (with_undo && !ledger.undo.has_room()) {
            let capacity = S::CAPACITY.unwrap_or(usize::MAX);
            tm_error!(
                "{} `{}`: step `{}` refused: capacity of {} steps used up",
                info.id,
                info.operation,
                name,
                capacity
            );
            return Err((name, index, Refused::Capacity(capacity)));
        }
        let mut record = StepRecord::new(index, name, self.config.timeout, with_undo);
        record.status = StepStatus::InProgress;
        record.started_at = now;
        record.scope = self.scope;
        // Cannot fail: room was checked above.
        let _ = ledger.summary.steps.push(record);
        Ok(index)
    }

    /// An undo record for the running step.
    fn undo_record(&self, index: usize, undo: U) -> UndoRecord<U> {
        UndoRecord {
            step: index,
            undo,
            retry: self.config.rollback_retry(),
            timeout: crate::timing::future::Timeout::new(self.config.rollback_timeout()),
        }
    }

    /// Pushes an undo record for the running step, built where it goes.
    /// Room was checked before the step ran, so it cannot fail. Not
    /// inlined, for the reason given at [`push_some`](crate::util::storage::push_some).
    #[inline(never)]
    fn push_undo(&mut self, index: usize, undo: U) {
        let record = self.undo_record(index, undo);
        let _ = self.ledger.undo.push(record);
    }

    /// Bookkeeping of a failed attempt: its error text, and whether it was
    /// the last. Not generic over the step.
    fn step_failed(&mut self, index: usize, attempt: u32, error: &dyn fmt::Display, final_: bool) -> bool {
        let last = final_ || is_last_attempt(attempt, self.config.retry.max_retries());
        // The time is kept only when the step fails for good: no clock
        // reading for an attempt that will be retried.
        let now = if last { self.stamp() } else { crate::ledger::record::At::NONE };
        let record = &mut self.ledger.summary.steps[index];
        ErrorText::capture_into(&mut record.error, error);
        let info = &self.ledger.summary.info;
        if last {
            record.status = StepStatus::Failed;
            record.completed_at = now;
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
        last
    }

    /// Ends a step for good on a panic outside its attempts (its undo
    /// record could not be made, or the clock panicked in the backoff).
    fn step_broke<E>(&mut self, index: usize, panic: crate::util::text::PanicMessage) -> StepError<E> {
        let now = self.stamp();
        let record = &mut self.ledger.summary.steps[index];
        record.status = StepStatus::Failed;
        record.completed_at = now;
        record.error = Some(ErrorText::capture(&Panicked(&panic)));
        let info = &self.ledger.summary.info;
        tm_error!("{} `{}`: step `{}` failed for good: {}", info.id, info.operation, record.name, panic);
        StepError { step: record.name.clone(), index, kind: StepErrorKind::Panicked(panic) }
    }

    /// Ends a step for good because the journal could not record it.
    fn step_not_recorded<E>(&mut self, index: usize, failure: JournalFailure) -> StepError<E> {
        let now = self.stamp();
        let info = &self.ledger.summary.info;
        tm_error!("{} `{}`: step #{}: {}", info.id, info.operation, index, failure);
        let record = &mut self.ledger.summary.steps[index];
        if record.status != StepStatus::Completed {
            record.status = StepStatus::Failed;
            record.completed_at = now;
        }
        record.error = Some(ErrorText::capture(&failure));
        StepError { step: record.name.clone(), index, kind: StepErrorKind::Journal(failure) }
    }

    /// Whether the running step's undo record is the last one in the ledger
    /// (pushed for an uncertain rollback while an attempt runs).
    fn owes(&self, index: usize) -> bool {
        self.ledger.undo.last().is_some_and(|u| u.step == index)
    }

    /// Keeps the undo record of the completed step `index`: in place of
    /// its uncertain one if it owes one, else a new one.
    fn keep_undo(&mut self, index: usize, undo: U) {
        if self.owes(index) {
            // Only the undo value changes: the step and its rollback
            // policy are the uncertain record's (assigning the whole record
            // moved it with a `memmove`).
            if let Some(last) = self.ledger.undo.last_mut() {
                last.undo = undo;
            }
        } else {
            self.push_undo(index, undo);
        }
    }

    /// A completed step without a journal or hooks: its undo record (made
    /// inside the panic guard), its record and its span's outcome, in the
    /// order of the general path, with nothing to await.
    fn record_completion<P: StepParts<Ctx, U>>(
        &mut self,
        index: usize,
        attempt: u32,
        parts: &mut P,
        output: &P::Output,
        span: &crate::trace::Span,
    ) -> Result<(), StepError<P::Error>> {
        match crate::util::text::caught(|| parts.make_undo(Maybe::Completed(output))) {
            Ok(Some(undo)) => self.keep_undo(index, undo),
            Ok(None) => {}
            // As in `execute`: the step took effect but its undo record
            // cannot be made; an uncertain record, if any, stays owed.
            Err(panic) => {
                crate::trace::outcome(span, "panic");
                return Err(self.step_broke(index, panic));
            }
        }
        self.step_completed(index, attempt);
        crate::trace::outcome(span, "ok");
        Ok(())
    }

    /// Runs one step: attempts with timeout and retries, records each in the
    /// summary, calls the hooks, and keeps an undo record when the step
    /// completes — or, for uncertain rollbacks, while an attempt is in
    /// flight and after one that may have taken effect. Only what differs
    /// per step lives here; the bookkeeping is in the helpers above.
    ///
    /// Every call into user code (the execute closure and its future, the
    /// undo maker and the output's `Clone`, hooks, the clock's `sleep`) is
    /// inside the panic guard.
    pub(crate) async fn execute<P>(
        &mut self,
        name: crate::util::text::Name,
        mut parts: P,
    ) -> Result<P::Output, StepError<P::Error>>
    where
        P: StepParts<Ctx, U>,
    {
        if self.past_deadline() {
            // No step starts at or after the deadline: wait for the
            // interrupt, which is due and stops the body.
            core::future::pending::<()>().await;
        }
        let index = match self.begin_step(name, parts.has_undo()) {
            Ok(index) => index,
            Err((step, index, refused)) => return Err(StepError { step, index, kind: refused.into_kind() }),
        };
        let clock = &self.manager.clock;
        let hooks = &self.manager.hooks;
        // The step's timeout, as its record has it (read from the settings,
        // not decoded back from the record).
        let timeout = self.config.timeout;
        // The uncertain undo record, while it is not in the ledger. It is in
        // the ledger exactly while an attempt is in flight, or after one that
        // may have taken effect (timed out, panicked): never because of where
        // a hook or a backoff wait was interrupted.
        let mut parked: Option<UndoRecord<U>> = None;
        let mut uncertain = false;
        let mut attempt = 0u32;
        loop {
            attempt = attempt.saturating_add(1);
            let ledger = &mut self.ledger;
            ledger.summary.steps[index].attempts = attempt;
            let span = tm_span!("step", name = ledger.summary.steps[index].name, index = index, attempt = attempt);
            let hook = if H::ENABLED {
                let event =
                    StepEvent { transaction: &ledger.summary.info, step: &ledger.summary.steps[index], attempt };
                within(&span, hook_call(hooks, || hooks.on_step_execute(&event))).await
            } else {
                Ok(())
            };
            // A broken hook fails the attempt before it starts: nothing ran,
            // and it is not retried around.
            let (result, ran) = match hook {
                Err(panic) => (Err(StepErrorKind::Panicked(panic)), false),
                Ok(()) => {
                    if !uncertain {
                        if parked.is_none() {
                            let made = crate::util::text::caught(|| parts.make_undo(Maybe::Uncertain));
                            match made {
                                Ok(undo) => parked = undo.map(|undo| self.undo_record(index, undo)),
                                Err(panic) => return Err(self.step_broke(index, panic)),
                            }
                        }
                        // (Tested first: `take` copies the whole record out
                        // before testing it.)
                        if parked.is_some() {
                            // Cannot fail: room was checked before the step ran.
                            crate::util::storage::push_some(&mut self.ledger.undo, parked.take());
                            if J::ENABLED && attempt == 1 {
                                // The intent is durable before the first
                                // attempt: if it cannot be written, the step
                                // does not run.
                                if let Err(failure) = self.journal_undo(index, EntryKind::Intent).await {
                                    self.ledger.undo.pop();
                                    return Err(self.step_not_recorded(index, failure.into()));
                                }
                            }
                        }
                    }
                    let ctx = &mut *self.ctx;
                    let attempt_result =
                        within(&span, guarded_call(|| with_timeout(clock, timeout, parts.call(ctx)))).await;
                    let result = match attempt_result {
                        // Without a journal or hooks, nothing is awaited once
                        // the step completed: this arm's values are not kept
                        // in the step's future across an await (those of the
                        // general arm below are).
                        Ok(Some(Ok(output))) if !J::ENABLED && !H::ENABLED => {
                            let completed = self.record_completion(index, attempt, &mut parts, &output, &span);
                            return completed.map(|()| output);
                        }
                        Ok(Some(Ok(output))) => Ok(output),
                        Ok(Some(Err(error))) => Err(StepErrorKind::Failed(error)),
                        Ok(None) => Err(StepErrorKind::TimedOut { timeout: timeout.unwrap_or_default() }),
                        Err(panic) => Err(StepErrorKind::Panicked(panic)),
                    };
                    (result, true)
                }
            };
            let kind = match result {
                Ok(output) => {
                    let made = crate::util::text::caught(|| parts.make_undo(Maybe::Completed(&output)));
                    match made {
                        Ok(Some(undo)) => {
                            self.keep_undo(index, undo);
                            if J::ENABLED {
                                // Durable before the value reaches the body. If
                                // it cannot be written, the undo record stays
                                // owed in memory and the step fails, so the
                                // body stops and rolls it back.
                                if let Err(failure) = self.journal_undo(index, EntryKind::Done).await {
                                    self.step_completed(index, attempt);
                                    return Err(self.step_not_recorded(index, failure.into()));
                                }
                            }
                        }
                        Ok(None) => {}
                        // The step took effect but its undo record cannot be
                        // made: it fails for good (a retry would repeat the
                        // effect); an uncertain record, if any, stays owed.
                        Err(panic) => {
                            crate::trace::outcome(&span, "panic");
                            return Err(self.step_broke(index, panic));
                        }
                    }
                    self.step_completed(index, attempt);
                    crate::trace::outcome(&span, "ok");
                    if !H::ENABLED {
                        return Ok(output);
                    }
                    let ledger = &self.ledger;
                    let event =
                        StepEvent { transaction: &ledger.summary.info, step: &ledger.summary.steps[index], attempt };
                    return match within(&span, hook_call(hooks, || hooks.on_step_success(&event))).await {
                        Ok(()) => Ok(output),
                        // The step did its work, so its undo record stays
                        // and is rolled back when the body stops.
                        Err(panic) => {
                            let record = &mut self.ledger.summary.steps[index];
                            record.error = Some(ErrorText::capture(&Panicked(&panic)));
                            tm_error!("on_step_success hook panicked: {}", panic);
                            Err(StepError { step: record.name.clone(), index, kind: StepErrorKind::Panicked(panic) })
                        }
                    };
                }
                Err(kind) => kind,
            };
            if ran {
                uncertain |= kind.is_uncertain();
                if !uncertain && self.owes(index) {
                    // A clean failure: nothing took effect, nothing owed.
                    parked = crate::util::storage::pop(&mut self.ledger.undo);
                }
            }
            crate::trace::outcome(&span, outcome_of(&kind));
            // A permanent error (its condition said so) is not retried.
            // Without a condition this is not compiled.
            let verdict = match &kind {
                StepErrorKind::Failed(error)
                    if P::CONDITIONAL && ran && !is_last_attempt(attempt, self.config.retry.max_retries()) =>
                {
                    crate::timing::condition::ask(|| parts.retries(error))
                }
                _ => crate::timing::condition::Verdict::Retry,
            };
            let mut last = match &kind {
                StepErrorKind::Failed(error) if !verdict.retries() => {
                    self.step_failed(index, attempt, &crate::timing::condition::NotRetried(&verdict, error), true)
                }
                StepErrorKind::Failed(error) => self.step_failed(index, attempt, error, !ran),
                StepErrorKind::TimedOut { timeout } => {
                    self.step_failed(index, attempt, &crate::timing::future::TimedOut(*timeout), !ran)
                }
                StepErrorKind::Panicked(message) => self.step_failed(index, attempt, &Panicked(message), !ran),
                _ => self.step_failed(index, attempt, &"failed", !ran),
            };
            let ledger = &mut self.ledger;
            tm_event!(warn, &span, "attempt failed", error = ledger.summary.steps[index].error().unwrap_or_default());
            if H::ENABLED {
                let event =
                    StepEvent { transaction: &ledger.summary.info, step: &ledger.summary.steps[index], attempt };
                if let Err(panic) = within(&span, hook_call(hooks, || hooks.on_step_failure(&event))).await {
                    tm_error!("on_step_failure hook panicked: {}", panic);
                    let now = self.stamp();
                    let record = &mut self.ledger.summary.steps[index];
                    record.status = StepStatus::Failed;
                    if record.completed_at.is_none() {
                        record.completed_at = now;
                    }
                    last = true;
                }
            }
            let ledger = &mut self.ledger;
            if last {
                if parked.is_some() {
                    // Its uncertain rollback is not owed: every attempt
                    // failed cleanly.
                    ledger.summary.steps[index].has_rollback = false;
                    if J::ENABLED {
                        // Lazy: if it is lost, recovery runs the (idempotent)
                        // uncertain rollback once more than needed.
                        let entry = Entry::new(ledger.summary.info.id, Some(step_index(index)), EntryKind::Released);
                        if let Err(failure) = self.manager.journal.write(&entry).await {
                            let failure: JournalFailure = failure.into();
                            tm_error!("{}: {}", self.ledger.summary.info.id, failure);
                        }
                    }
                }
                let ledger = &mut self.ledger;
                return Err(StepError { step: ledger.summary.steps[index].name.clone(), index, kind });
            }
            // The error of an attempt that will be retried is dropped here;
            // its text stays in the step's record.
            drop(kind);
            let retry = &self.config.retry;
            let delay =
                if retry.never_waits() { Duration::ZERO } else { retry.jittered_delay(attempt - 1, &mut ledger.rng) };
            tm_event!(info, &span, "retrying", delay = crate::trace::AsDebug(delay));
            crate::trace::close(span);
            tm_debug!("step `{}` retrying in {:?}", ledger.summary.steps[index].name, delay);
            if !delay.is_zero() {
                if let Err(panic) = guarded_call(|| clock.sleep(delay)).await {
                    return Err(self.step_broke(index, panic));
                }
            }
            if self.past_deadline() {
                // No retry starts at or after the deadline.
                core::future::pending::<()>().await;
            }
        }
    }
}

/// A step's index as the journal keeps it.
pub(crate) fn step_index(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// Whether attempt number `attempt` (from 1) is the last one a policy of
/// `max_retries` allows. Bounded even for `u32::MAX` retries: the attempt
/// counter cannot pass `u32::MAX`, so that attempt is the last.
pub(crate) fn is_last_attempt(attempt: u32, max_retries: u32) -> bool {
    attempt > max_retries || attempt == u32::MAX
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

/// A failed attempt's `outcome`, for its span.
fn outcome_of<E>(kind: &StepErrorKind<E>) -> &'static str {
    match kind {
        StepErrorKind::TimedOut { .. } => "timeout",
        StepErrorKind::Panicked(_) => "panic",
        _ => "error",
    }
}

/// Why a step was refused before it ran.
enum Refused {
    EmptyName,
    Capacity(usize),
}

impl Refused {
    fn into_kind<E>(self) -> StepErrorKind<E> {
        match self {
            Refused::EmptyName => StepErrorKind::EmptyName,
            Refused::Capacity(capacity) => StepErrorKind::CapacityExceeded { capacity },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_last_attempt;

    #[test]
    fn attempts_are_bounded_even_for_u32_max_retries() {
        assert!(!is_last_attempt(1, 1));
        assert!(is_last_attempt(2, 1));
        assert!(is_last_attempt(1, 0));
        // The attempt counter saturates at u32::MAX: that attempt is the
        // last, so an always-failing step with u32::MAX retries stops.
        assert!(!is_last_attempt(u32::MAX - 1, u32::MAX));
        assert!(is_last_attempt(u32::MAX, u32::MAX));
    }
}
