//! The attempt loop of a plain step: its attempts, each raced against its
//! timeout and guarded against panics, retried with backoff, awaited in
//! line; what each decides is a `StepRun` transition (`step_run.rs`),
//! shared with group members. Also what steps and members share of the
//! hooks.

use core::fmt;
use core::future::Future;

use crate::durable::id::IdempotencyKey;
use crate::engine::step_run::{StepEnv, StepRun};
use crate::engine::transaction::Transaction;
use crate::observe::hooks::hook_call;
use crate::timing::future::with_timeout;
use crate::trace::within;
use crate::util::panic::guarded_call;
use crate::util::text::PanicMessage;
use crate::{durable::entry::EntryKind, engine::binding::JournalFor};
use crate::{
    engine::{abandon::AbandonPolicy, manager::TransactionManager},
    ledger::{
        error::{StepError, StepErrorKind},
        rollback::Rollback,
    },
    observe::hooks::{Hooks, StepEvent},
    timing::clock::Clock,
    util::storage::Storage,
};

/// What an uncertain rollback receives: the step's output if it completed,
/// or `Uncertain` if it failed in a way that may still have taken effect —
/// an attempt that timed out, panicked, or was cut short by a deadline, a
/// cancel signal or a dropped transaction.
///
/// The rule: a step is uncertain only while an attempt of it is actually
/// in flight, or after an attempt that ended in a way that may have taken
/// effect. Where a hook or a backoff wait was interrupted never makes it
/// uncertain: a step stopped before its first attempt started, or whose
/// attempts all failed with an error, is not rolled back.
///
/// See [`Execute::rollback_uncertain`](crate::step::Execute::rollback_uncertain) and
/// [`Execute::undo_uncertain`](crate::step::Execute::undo_uncertain).
///
/// ```
/// use transaction_manager::step::Maybe;
/// let maybe: Maybe<u32> = Maybe::Uncertain;
/// assert_eq!(maybe.completed(), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Maybe<T> {
    /// The step completed and returned this.
    Completed(T),
    /// The step failed, but one of its attempts may have taken effect.
    Uncertain,
}

impl<T> Maybe<T> {
    /// The output, if the step completed.
    pub fn completed(self) -> Option<T> {
        match self {
            Maybe::Completed(output) => Some(output),
            Maybe::Uncertain => None,
        }
    }

    /// A `Maybe` of a reference.
    pub fn as_ref(&self) -> Maybe<&T> {
        match self {
            Maybe::Completed(output) => Maybe::Completed(output),
            Maybe::Uncertain => Maybe::Uncertain,
        }
    }
}

impl<T: Clone> Maybe<&T> {
    /// A `Maybe` of a clone.
    pub fn cloned(self) -> Maybe<T> {
        match self {
            Maybe::Completed(output) => Maybe::Completed(output.clone()),
            Maybe::Uncertain => Maybe::Uncertain,
        }
    }
}

/// What the engine needs of one step: its attempts, and its undo records.
/// Not generic over the call site when the step is an [`Action`](crate::Action): every
/// step of one action type shares one copy of the step engine.
pub(crate) trait StepParts<Ctx: ?Sized, U> {
    type Output;
    type Error: fmt::Display;

    /// Whether the step may owe an undo record (it then needs room for one).
    fn has_undo(&self) -> bool;

    /// Whether the step has a retry condition: without one (the default)
    /// the engine asks nothing.
    const CONDITIONAL: bool = false;

    /// Starts one attempt of the step whose idempotency key is `key`.
    fn call(&mut self, ctx: &mut Ctx, key: IdempotencyKey) -> impl Future<Output = Result<Self::Output, Self::Error>>;

    /// Whether an attempt that failed with `error` may be retried.
    fn retries(&mut self, error: &Self::Error) -> bool {
        let _ = error;
        true
    }

    /// The undo record owed for `output` (`Maybe::Uncertain`: while an
    /// attempt is in flight, or after an uncertain one), if any, by the step
    /// whose idempotency key is `key`.
    fn make_undo(&mut self, output: Maybe<&Self::Output>, key: IdempotencyKey) -> Option<U>;
}

/// What the step hooks see and what their ends mean, and a failed
/// attempt's bookkeeping, for plain steps and group members alike.
impl<'t, C: Clock, H: Hooks, A, J: JournalFor<U>, Ctx: ?Sized, U, S: Storage>
    Transaction<'t, TransactionManager<C, H, A, J>, Ctx, U, S>
{
    /// What a step hook sees of attempt `attempt` of step `index`.
    ///
    /// The hooks are awaited at their call sites, as
    /// `hook_call(hooks, || hooks.on_step_…(&event))` behind `if H::ENABLED`:
    /// an `async fn` around them would keep its own state in every
    /// transaction future, hooks or not (measured: 40 bytes more for a
    /// 2-member group on tokio and smol, 24 bytes and 584 bytes of `.text`
    /// on the firmware). What a hook's end means is decided here, once.
    pub(crate) fn step_event(&self, index: usize, attempt: u32) -> StepEvent<'_> {
        StepEvent { transaction: self.ledger.summary.info(), step: &self.ledger.summary.steps()[index], attempt }
    }

    /// `on_step_failure` ended with `called`. Returns whether it panicked:
    /// the step then fails for good, and its record says so.
    pub(crate) fn failure_hook_ended(&mut self, index: usize, called: Result<(), PanicMessage>) -> bool {
        let Err(panic) = called else { return false };
        tm_error!("on_step_failure hook panicked: {}", panic);
        let now = self.stamp();
        self.ledger.step_mut(index).failure_hook_broke(now);
        true
    }

    /// `on_step_success` ended with `called`. A panic fails the step,
    /// whose record says why; its undo record stays owed (the step did its
    /// work).
    pub(crate) fn success_hook_ended(
        &mut self,
        index: usize,
        called: Result<(), PanicMessage>,
    ) -> Result<(), PanicMessage> {
        let Err(panic) = called else { return Ok(()) };
        tm_error!("on_step_success hook panicked: {}", panic);
        self.ledger.step_mut(index).errored_after_completion(&crate::engine::rollback::Panicked(&panic));
        Err(panic)
    }
}

impl<'t, C: Clock, H: Hooks, A, J, Ctx: ?Sized, U: Rollback<Ctx>, S: Storage>
    Transaction<'t, TransactionManager<C, H, A, J>, Ctx, U, S>
where
    A: AbandonPolicy<C, H, Ctx, U, S>,
    J: JournalFor<U>,
{
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
        let index = ledger.summary.steps().len();
        let info = ledger.summary.info();
        if name.as_str().is_empty() {
            tm_error!("{} `{}`: step #{} refused: empty name", info.id, info.operation, index);
            return Err((name, index, Refused::EmptyName));
        }
        if !ledger.has_step_room() || (with_undo && !ledger.has_undo_room()) {
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
        Ok(ledger.step_begins(name, self.config.timeout, with_undo, self.scope, now))
    }

    /// What the running step's transitions change and read.
    fn step_env(&mut self) -> StepEnv<'_, U, S, C> {
        StepEnv { ledger: self.ledger, clock: &self.manager.clock, config: &self.config }
    }

    /// The error a step fails with: its name and index, and `kind`.
    fn step_error<E>(&self, index: usize, kind: StepErrorKind<E>) -> StepError<E> {
        StepError { step: self.ledger.summary.steps()[index].name.clone(), index, kind }
    }

    /// Runs one step: attempts with timeout and retries, records each in the
    /// summary, calls the hooks, and keeps an undo record when the step
    /// completes — or, for uncertain rollbacks, while an attempt is in
    /// flight and after one that may have taken effect. Only the order of
    /// the awaits lives here; every decision is a `StepRun` transition.
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
        let mut run = match self.begin_step(name, parts.has_undo()) {
            Ok(index) => StepRun::new(index),
            Err((step, index, refused)) => return Err(StepError { step, index, kind: refused.into_kind() }),
        };
        let index = run.index;
        let clock = &self.manager.clock;
        let hooks = &self.manager.hooks;
        // The step's timeout, as its record has it (read from the settings,
        // not decoded back from the record).
        let timeout = self.config.timeout;
        loop {
            let span = run.next_attempt(self.ledger);
            let hook = if H::ENABLED {
                let event = self.step_event(index, run.attempt);
                within(&span, hook_call(hooks, || hooks.on_step_execute(&event))).await
            } else {
                Ok(())
            };
            // A broken hook fails the attempt before it starts: nothing ran,
            // and it is not retried around.
            let (result, ran) = match hook {
                Err(panic) => (Err(StepErrorKind::Panicked(panic)), false),
                Ok(()) => {
                    let owed = run.owe_uncertain(self.step_env(), |key| parts.make_undo(Maybe::Uncertain, key));
                    match owed {
                        Err(panic) => return Err(self.step_error(index, StepErrorKind::Panicked(panic))),
                        // The intent is durable before the first attempt: if
                        // it cannot be written, the step does not run.
                        Ok(true) if J::ENABLED => {
                            if let Err(failure) = self.journal_step(index, EntryKind::Intent).await {
                                run.intent_refused();
                                return Err(self.step_error(index, StepErrorKind::Journal(failure)));
                            }
                        }
                        Ok(_) => {}
                    }
                    let key = self.ledger.step_key(index);
                    let ctx = &mut *self.ctx;
                    let attempt_result =
                        within(&span, guarded_call(|| with_timeout(clock, timeout, parts.call(ctx, key)))).await;
                    let result = match attempt_result {
                        // Without a journal or hooks, nothing is awaited once
                        // the step completed: this arm's values are not kept
                        // in the step's future across an await (those of the
                        // general arm below are).
                        Ok(Some(Ok(output))) if !J::ENABLED && !H::ENABLED => {
                            let make = |key| parts.make_undo(Maybe::Completed(&output), key);
                            return match run.completed(self.step_env(), make, Some(&span)) {
                                Ok(_) => Ok(output),
                                Err(panic) => Err(self.step_error(index, StepErrorKind::Panicked(panic))),
                            };
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
                    let make = |key| parts.make_undo(Maybe::Completed(&output), key);
                    match run.completed(self.step_env(), make, Some(&span)) {
                        // The step took effect but its undo record cannot be
                        // made: it fails for good (a retry would repeat the
                        // effect); an uncertain record, if any, stays owed.
                        Err(panic) => return Err(self.step_error(index, StepErrorKind::Panicked(panic))),
                        // Durable before the value reaches the body. If it
                        // cannot be written, the undo record stays owed in
                        // memory and the step fails, so the body stops and
                        // rolls it back.
                        Ok(true) if J::ENABLED => {
                            if let Err(failure) = self.journal_step(index, EntryKind::Done).await {
                                return Err(self.step_error(index, StepErrorKind::Journal(failure)));
                            }
                        }
                        Ok(_) => {}
                    }
                    if !H::ENABLED {
                        return Ok(output);
                    }
                    // A panic in the hook fails the step, whose undo record
                    // stays and is rolled back when the body stops.
                    let event = self.step_event(index, run.attempt);
                    let called = within(&span, hook_call(hooks, || hooks.on_step_success(&event))).await;
                    return match self.success_hook_ended(index, called) {
                        Ok(()) => Ok(output),
                        Err(panic) => Err(self.step_error(index, StepErrorKind::Panicked(panic))),
                    };
                }
                Err(kind) => kind,
            };
            // Without a retry condition, nothing is asked.
            let ask = |error: &P::Error| P::CONDITIONAL.then(|| crate::timing::condition::ask(|| parts.retries(error)));
            let mut last = run.failed(self.step_env(), &kind, ran, ask, Some(&span));
            if H::ENABLED {
                let event = self.step_event(index, run.attempt);
                let called = within(&span, hook_call(hooks, || hooks.on_step_failure(&event))).await;
                last |= self.failure_hook_ended(index, called);
            }
            if last {
                if run.released() {
                    // Its uncertain rollback is not owed: every attempt
                    // failed cleanly.
                    self.release_rollback(index).await;
                }
                return Err(self.step_error(index, kind));
            }
            // The error of an attempt that will be retried is dropped here;
            // its text stays in the step's record.
            drop(kind);
            let delay = run.backoff(self.step_env());
            tm_event!(info, &span, "retrying", delay = crate::trace::AsDebug(delay));
            crate::trace::close(span);
            tm_debug!("step `{}` retrying in {:?}", self.ledger.summary.steps()[index].name, delay);
            if !delay.is_zero() {
                if let Err(panic) = guarded_call(|| clock.sleep(delay)).await {
                    run.broke(self.ledger, clock, &panic);
                    return Err(self.step_error(index, StepErrorKind::Panicked(panic)));
                }
            }
            if self.past_deadline() {
                // No retry starts at or after the deadline.
                core::future::pending::<()>().await;
            }
        }
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
