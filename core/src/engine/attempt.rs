//! The attempt loop: one step's attempts, each raced against its timeout
//! and guarded against panics, retried with backoff; its record, undo
//! record and journal entries.

use core::fmt;
use core::future::Future;
use core::time::Duration;

use crate::durable::id::IdempotencyKey;
use crate::engine::rollback::Panicked;
use crate::engine::transaction::Transaction;
use crate::ledger::book::UndoRecord;
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

    /// Starts one attempt.
    fn call(&mut self, ctx: &mut Ctx) -> impl Future<Output = Result<Self::Output, Self::Error>>;

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
    /// Bookkeeping of a failed attempt: its error text in the step's
    /// record, and, if it was the `last`, the step's end. Not generic over
    /// the step.
    pub(crate) fn record_failed_attempt(
        &mut self,
        index: usize,
        attempt: u32,
        error: &dyn fmt::Display,
        last: bool,
        span: Option<&crate::trace::Span>,
    ) {
        // The time is kept only when the step fails for good: no clock
        // reading for an attempt that will be retried.
        let now = if last { self.stamp() } else { crate::ledger::record::At::NONE };
        self.ledger.attempt_failed(index, attempt, error, last, now);
        if let Some(span) = span {
            tm_event!(
                warn,
                span,
                "attempt failed",
                error = self.ledger.summary.steps()[index].error().unwrap_or_default()
            );
        }
    }

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
        self.ledger.step_mut(index).errored_after_completion(&Panicked(&panic));
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

    /// An undo record for the running step.
    fn undo_record(&self, index: usize, undo: U) -> UndoRecord<U> {
        UndoRecord {
            step: index,
            undo,
            retry: self.config.rollback_retry(),
            timeout: crate::timing::future::Timeout::new(self.config.rollback_timeout()),
        }
    }

    /// Ends a step for good on a panic outside its attempts (its undo
    /// record could not be made, or the clock panicked in the backoff).
    fn step_broke<E>(&mut self, index: usize, panic: crate::util::text::PanicMessage) -> StepError<E> {
        let now = self.stamp();
        self.ledger.step_mut(index).broke(&Panicked(&panic), now);
        let (info, record) = (self.ledger.summary.info(), &self.ledger.summary.steps()[index]);
        tm_error!("{} `{}`: step `{}` failed for good: {}", info.id, info.operation, record.name, panic);
        StepError { step: record.name.clone(), index, kind: StepErrorKind::Panicked(panic) }
    }

    /// The error a step fails with: its name and index, and `kind`.
    fn step_error<E>(&self, index: usize, kind: StepErrorKind<E>) -> StepError<E> {
        StepError { step: self.ledger.summary.steps()[index].name.clone(), index, kind }
    }

    /// Keeps the undo record of the completed step `index`: in place of
    /// its uncertain one if it owes one (the latest), else a new one.
    fn keep_undo(&mut self, index: usize, undo: U) {
        let owed = self.ledger.owes_latest(index);
        let config = &self.config;
        self.ledger.keep_completed(index, undo, owed, || {
            (config.rollback_retry(), crate::timing::future::Timeout::new(config.rollback_timeout()))
        });
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
        let key = self.ledger.step_key(index);
        match crate::util::text::caught(|| parts.make_undo(Maybe::Completed(output), key)) {
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
            ledger.step_mut(index).attempt_begins(attempt);
            let span = tm_span!("step", name = ledger.summary.steps()[index].name, index = index, attempt = attempt);
            let hook = if H::ENABLED {
                let event = self.step_event(index, attempt);
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
                            let key = self.ledger.step_key(index);
                            let made = crate::util::text::caught(|| parts.make_undo(Maybe::Uncertain, key));
                            match made {
                                Ok(undo) => parked = undo.map(|undo| self.undo_record(index, undo)),
                                Err(panic) => return Err(self.step_broke(index, panic)),
                            }
                        }
                        // (Tested first: `take` copies the whole record out
                        // before testing it.)
                        if parked.is_some() {
                            // Cannot fail: room was checked before the step ran.
                            self.ledger.owe_some(parked.take());
                            if J::ENABLED && attempt == 1 {
                                // The intent is durable before the first
                                // attempt: if it cannot be written, the step
                                // does not run.
                                if let Err(failure) = self.journal_step(index, EntryKind::Intent).await {
                                    return Err(self.step_error(index, StepErrorKind::Journal(failure)));
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
                    let made = {
                        let key = self.ledger.step_key(index);
                        crate::util::text::caught(|| parts.make_undo(Maybe::Completed(&output), key))
                    };
                    let kept = match made {
                        Ok(Some(undo)) => {
                            self.keep_undo(index, undo);
                            true
                        }
                        Ok(None) => false,
                        // The step took effect but its undo record cannot be
                        // made: it fails for good (a retry would repeat the
                        // effect); an uncertain record, if any, stays owed.
                        Err(panic) => {
                            crate::trace::outcome(&span, "panic");
                            return Err(self.step_broke(index, panic));
                        }
                    };
                    self.step_completed(index, attempt);
                    if J::ENABLED && kept {
                        // Durable before the value reaches the body. If it
                        // cannot be written, the undo record stays owed in
                        // memory and the step fails, so the body stops and
                        // rolls it back.
                        if let Err(failure) = self.journal_step(index, EntryKind::Done).await {
                            return Err(self.step_error(index, StepErrorKind::Journal(failure)));
                        }
                    }
                    crate::trace::outcome(&span, "ok");
                    if !H::ENABLED {
                        return Ok(output);
                    }
                    // A panic in the hook fails the step, whose undo record
                    // stays and is rolled back when the body stops.
                    let event = self.step_event(index, attempt);
                    let called = within(&span, hook_call(hooks, || hooks.on_step_success(&event))).await;
                    return match self.success_hook_ended(index, called) {
                        Ok(()) => Ok(output),
                        Err(panic) => Err(self.step_error(index, StepErrorKind::Panicked(panic))),
                    };
                }
                Err(kind) => kind,
            };
            if ran {
                uncertain |= kind.is_uncertain();
                if !uncertain && self.ledger.owes_latest(index) {
                    // A clean failure: nothing took effect, nothing owed.
                    parked = self.ledger.take_back_latest();
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
            // In a block: nothing of it is kept across the awaits below.
            let mut last = {
                let not_retried = (!verdict.retries()).then_some(&verdict);
                let last = !ran || not_retried.is_some() || is_last_attempt(attempt, self.config.retry.max_retries());
                self.record_failed_attempt(
                    index,
                    attempt,
                    &AttemptText { kind: &kind, not_retried },
                    last,
                    Some(&span),
                );
                last
            };
            if H::ENABLED {
                let event = self.step_event(index, attempt);
                let called = within(&span, hook_call(hooks, || hooks.on_step_failure(&event))).await;
                last |= self.failure_hook_ended(index, called);
            }
            let ledger = &mut self.ledger;
            if last {
                if parked.is_some() {
                    // Its uncertain rollback is not owed: every attempt
                    // failed cleanly.
                    self.release_rollback(index).await;
                }
                return Err(self.step_error(index, kind));
            }
            // The error of an attempt that will be retried is dropped here;
            // its text stays in the step's record.
            drop(kind);
            let retry = &self.config.retry;
            let delay =
                if retry.never_waits() { Duration::ZERO } else { retry.jittered_delay(attempt - 1, &mut ledger.rng) };
            tm_event!(info, &span, "retrying", delay = crate::trace::AsDebug(delay));
            crate::trace::close(span);
            tm_debug!("step `{}` retrying in {:?}", ledger.summary.steps()[index].name, delay);
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

/// Whether attempt number `attempt` (from 1) is the last one a policy of
/// `max_retries` allows. Bounded even for `u32::MAX` retries: the attempt
/// counter cannot pass `u32::MAX`, so that attempt is the last.
pub(crate) fn is_last_attempt(attempt: u32, max_retries: u32) -> bool {
    attempt > max_retries || attempt == u32::MAX
}

/// The text a failed attempt leaves in its step's record, for steps and
/// group members alike: the error (and why it is not retried, when its
/// condition said so), the timeout, the panic, or the journal's failure.
pub(crate) struct AttemptText<'a, E> {
    pub(crate) kind: &'a StepErrorKind<E>,
    /// The retry condition's verdict, when it said not to retry.
    pub(crate) not_retried: Option<&'a crate::timing::condition::Verdict>,
}

impl<E: fmt::Display> fmt::Display for AttemptText<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            StepErrorKind::Failed(error) => match self.not_retried {
                Some(verdict) => crate::timing::condition::NotRetried(verdict, error).fmt(f),
                None => error.fmt(f),
            },
            StepErrorKind::TimedOut { timeout } => crate::timing::future::TimedOut(*timeout).fmt(f),
            StepErrorKind::Panicked(message) => Panicked(message).fmt(f),
            StepErrorKind::Journal(failure) => failure.fmt(f),
            _ => f.write_str("failed"),
        }
    }
}

/// A failed attempt's `outcome`, for its span.
pub(crate) fn outcome_of<E>(kind: &StepErrorKind<E>) -> &'static str {
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
