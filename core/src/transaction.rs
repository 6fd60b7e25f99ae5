//! A running transaction: the handle its body receives, the step engine
//! (attempts, timeouts, retries, hooks, undo records), and what happens when
//! it ends — or is dropped before it ends.

use core::fmt;
use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::Poll;
use core::time::Duration;

use crate::ledger::{Ledger, Panicked, UndoRecord, ViaRollback};
use crate::manager::Outcome;
use crate::panic::guarded;
use crate::step::{Maybe, Step, StepConfig, StepFn};
use crate::text::ErrorText;
use crate::trace::within;
use crate::{
    AbandonPolicy, Abandoned, Clock, Committed, Hooks, List, Rollback, StepError, StepErrorKind, StepEvent, StepRecord,
    StepStatus, Storage, TransactionError, TransactionInfo, TransactionManager,
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
/// # use transaction_manager_core::*;
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
/// # use transaction_manager_core::*;
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
    pub(crate) ledger: Ledger<U, S>,
    /// Hands the owed rollbacks to the manager's abandon policy if the
    /// transaction is dropped before it finished; `None` once it finished.
    /// A function pointer, chosen where the policy's bounds are known, so
    /// that `Drop` needs none.
    on_drop: Option<fn(&mut Self)>,
}

impl<M, Ctx: ?Sized, U, S: Storage> Drop for Transaction<'_, M, Ctx, U, S> {
    fn drop(&mut self) {
        if let Some(abandon) = self.on_drop.take() {
            abandon(self);
        }
    }
}

impl<'t, C, H, A, Ctx: ?Sized, U, S: Storage> Transaction<'t, TransactionManager<C, H, A>, Ctx, U, S> {
    /// Starts building a step named `name`; set its options, then run it
    /// with [`Step::run`] (no rollback) or [`Step::execute`] followed by a
    /// rollback.
    pub fn step(&mut self, name: impl Into<crate::Name>) -> Step<'_, 't, TransactionManager<C, H, A>, Ctx, U, S> {
        Step {
            config: StepConfig {
                name: name.into(),
                timeout: self.manager.timeout,
                retry: self.manager.retry,
                rollback_timeout: None,
                rollback_retry: None,
            },
            tx: self,
        }
    }

    /// The context the transaction was run with (`()` for
    /// [`run`](crate::TransactionBuilder::run)).
    pub fn context(&mut self) -> &mut Ctx {
        self.ctx
    }

    /// The transaction's id and operation.
    pub fn info(&self) -> &TransactionInfo {
        &self.ledger.info
    }

    /// The transaction's id.
    pub fn id(&self) -> crate::TransactionId {
        self.ledger.info.id
    }

    /// The records of the steps run so far.
    pub fn steps(&self) -> &[StepRecord] {
        &self.ledger.steps
    }

    /// The transaction's clock, for steps that need to wait or read the time.
    pub fn clock(&self) -> &C {
        &self.manager.clock
    }
}

impl<'t, C: Clock, H: Hooks, A, Ctx: ?Sized, U: Rollback<Ctx>, S: Storage>
    Transaction<'t, TransactionManager<C, H, A>, Ctx, U, S>
where
    A: AbandonPolicy<C, H, Ctx, U, S>,
{
    pub(crate) fn new(manager: &'t TransactionManager<C, H, A>, ctx: &'t mut Ctx, ledger: Ledger<U, S>) -> Self {
        Self { manager, ctx, ledger, on_drop: Some(Self::abandon) }
    }

    /// `on_drop`: the transaction was dropped before it finished.
    fn abandon(&mut self) {
        let manager = self.manager;
        let mut ledger = core::mem::replace(&mut self.ledger, Ledger::empty());
        ledger.abandon_in_progress(&"interrupted: the transaction was dropped", manager.clock.now());
        let abandoned = Abandoned { ledger };
        tm_error!(
            "{} `{}`: dropped before it finished, owing {} rollback(s)",
            abandoned.ledger.info.id,
            abandoned.ledger.info.operation,
            abandoned.pending_len()
        );
        // Panics must not escape `Drop` (a panic while unwinding aborts).
        if let Err(panic) = crate::panic::caught_sync(|| manager.hooks.on_transaction_abandoned(&abandoned)) {
            tm_error!("on_transaction_abandoned hook panicked: {}", panic);
        }
        if let Err(panic) =
            crate::panic::caught_sync(|| manager.abandon.abandon(&manager.clock, &manager.hooks, abandoned))
        {
            tm_error!("abandon policy panicked: {}", panic);
        }
    }

    pub(crate) async fn start(&mut self) {
        let info = &self.ledger.info;
        tm_info!("{} `{}`: transaction started", info.id, info.operation);
        if let Err(panic) = guarded(self.manager.hooks.on_transaction_start(info)).await {
            tm_error!("{} `{}`: on_transaction_start hook panicked: {}", info.id, info.operation, panic);
        }
    }

    /// The body was stopped from outside: the step it was in is abandoned.
    pub(crate) fn interrupted(&mut self, why: &dyn fmt::Display) -> (Option<(crate::Name, usize)>, usize) {
        let step = self.ledger.in_progress();
        self.ledger.abandon_in_progress(why, self.manager.clock.now());
        (step, self.ledger.steps.len())
    }

    /// The body returned `Ok`: commit.
    pub(crate) async fn commit<T, B>(mut self, value: T) -> Outcome<T, B, U::Error, S> {
        self.on_drop = None;
        let manager = self.manager;
        let ledger = core::mem::replace(&mut self.ledger, Ledger::empty());
        let summary = ledger.into_summary(manager.clock.now());
        tm_info!("{} `{}`: committed after {} step(s)", summary.info.id, summary.info.operation, summary.total_steps());
        let hook = guarded(manager.hooks.on_transaction_complete(&summary.info, true, &summary)).await;
        if let Err(panic) = hook {
            tm_error!("{}: on_transaction_complete hook panicked: {}", summary.info.id, panic);
        }
        Ok(Committed { value, summary })
    }

    /// The body failed: roll back the completed steps.
    pub(crate) async fn abort<T, B>(mut self, cause: B) -> Outcome<T, B, U::Error, S> {
        let manager = self.manager;
        tm_warn!("{} `{}`: body failed; rolling back", self.ledger.info.id, self.ledger.info.operation);
        // The ledger stays in `self` while rolling back: if this future is
        // dropped now, what is still owed goes to the abandon policy.
        let rollback_failures =
            self.ledger.roll_back::<ViaRollback, _, _, _>(&mut *self.ctx, &manager.clock, &manager.hooks).await;
        self.on_drop = None;
        let ledger = core::mem::replace(&mut self.ledger, Ledger::empty());
        let summary = ledger.into_summary(manager.clock.now());
        if rollback_failures.is_empty() && summary.rollback_skipped_steps() == 0 {
            tm_info!("{} `{}`: rolled back cleanly", summary.info.id, summary.info.operation);
        } else {
            tm_error!(
                "{} `{}`: PARTIALLY rolled back, {} rollback(s) failed",
                summary.info.id,
                summary.info.operation,
                rollback_failures.len()
            );
        }
        let hook = guarded(manager.hooks.on_transaction_complete(&summary.info, false, &summary)).await;
        if let Err(panic) = hook {
            tm_error!("{}: on_transaction_complete hook panicked: {}", summary.info.id, panic);
        }
        Err(TransactionError { cause, rollback_failures, summary })
    }

    /// Runs one step: attempts with timeout and retries, records each in the
    /// summary, calls the hooks, and keeps an undo record when the step
    /// completes (or, for uncertain rollbacks, when its outcome is unknown).
    pub(crate) async fn execute<F, M>(
        &mut self,
        config: StepConfig,
        mut execute: F,
        mut make_undo: Option<M>,
    ) -> Result<F::Output, StepError<F::Error>>
    where
        F: StepFn<Ctx>,
        M: FnMut(Maybe<&F::Output>) -> Option<U>,
    {
        let ledger = &mut self.ledger;
        let index = ledger.steps.len();
        let info = &ledger.info;
        if config.name.as_str().is_empty() {
            tm_error!("{} `{}`: step #{} refused: empty name", info.id, info.operation, index);
            return Err(StepError { step: config.name, index, kind: StepErrorKind::EmptyName });
        }
        if !ledger.steps.has_room() || (make_undo.is_some() && !ledger.undo.has_room()) {
            let capacity = S::CAPACITY.unwrap_or(usize::MAX);
            tm_error!(
                "{} `{}`: step `{}` refused: capacity of {} steps used up",
                info.id,
                info.operation,
                config.name,
                capacity
            );
            return Err(StepError { step: config.name, index, kind: StepErrorKind::CapacityExceeded { capacity } });
        }
        let clock = &self.manager.clock;
        let hooks = &self.manager.hooks;
        let mut record = StepRecord::new(index, config.name, config.timeout, make_undo.is_some());
        record.status = StepStatus::InProgress;
        record.started_at = Some(clock.now());
        // Cannot fail: room was checked above.
        let _ = ledger.steps.push(record);
        let undo_record = |undo| UndoRecord {
            step: index,
            undo,
            retry: config.rollback_retry.unwrap_or(config.retry),
            timeout: config.rollback_timeout.unwrap_or(config.timeout),
            provisional: true,
        };
        // An uncertain rollback is owed from the first attempt on: if the
        // transaction is stopped or dropped mid-attempt, it still runs.
        let mut provisional = false;
        if let Some(undo) = make_undo.as_mut().and_then(|make| make(Maybe::Uncertain)) {
            let _ = ledger.undo.push(undo_record(undo));
            provisional = true;
        }
        let mut uncertain = false;
        let mut retry = 0u32;
        loop {
            let attempt = retry.saturating_add(1);
            ledger.steps[index].attempts = attempt;
            tm_debug!("{} `{}`: step `{}` attempt {}", info.id, info.operation, ledger.steps[index].name, attempt);
            let span = tm_span!("step", name = ledger.steps[index].name, index = index, attempt = attempt);
            let event = StepEvent { transaction: &ledger.info, step: &ledger.steps[index], attempt };
            let hook = within(&span, guarded(hooks.on_step_execute(&event))).await;
            let hook_panicked = hook.is_err();
            let result = match hook {
                Err(panic) => Err(StepErrorKind::Panicked(panic)),
                Ok(()) => {
                    match within(&span, guarded(with_timeout(clock, config.timeout, execute.call(&mut *self.ctx))))
                        .await
                    {
                        Ok(Some(Ok(output))) => Ok(output),
                        Ok(Some(Err(error))) => Err(StepErrorKind::Failed(error)),
                        Ok(None) => Err(StepErrorKind::TimedOut { timeout: config.timeout.unwrap_or_default() }),
                        Err(panic) => Err(StepErrorKind::Panicked(panic)),
                    }
                }
            };
            let record = &mut ledger.steps[index];
            let kind = match result {
                Ok(output) => {
                    record.status = StepStatus::Completed;
                    record.completed_at = Some(clock.now());
                    if let Some(undo) = make_undo.as_mut().and_then(|make| make(Maybe::Completed(&output))) {
                        let mut undo = undo_record(undo);
                        undo.provisional = false;
                        if provisional {
                            if let Some(last) = ledger.undo.last_mut() {
                                *last = undo;
                            }
                        } else {
                            // Cannot fail: room was checked before the step ran.
                            let _ = ledger.undo.push(undo);
                        }
                    }
                    tm_debug!(
                        "{} `{}`: step `{}` completed on attempt {}",
                        info.id,
                        info.operation,
                        ledger.steps[index].name,
                        attempt
                    );
                    crate::trace::outcome(&span, "ok");
                    let event = StepEvent { transaction: &ledger.info, step: &ledger.steps[index], attempt };
                    return match within(&span, guarded(hooks.on_step_success(&event))).await {
                        Ok(()) => Ok(output),
                        // The step did its work, so its undo record stays
                        // and is rolled back when the body stops.
                        Err(panic) => {
                            let record = &mut ledger.steps[index];
                            record.error = Some(ErrorText::capture(&Panicked(&panic)));
                            tm_error!("{}: on_step_success hook panicked: {}", info.id, panic);
                            Err(StepError { step: record.name.clone(), index, kind: StepErrorKind::Panicked(panic) })
                        }
                    };
                }
                Err(kind) => kind,
            };
            uncertain |= kind.is_uncertain();
            crate::trace::outcome(&span, outcome_of(&kind));
            record.error = Some(match &kind {
                StepErrorKind::Failed(error) => ErrorText::capture(error),
                StepErrorKind::TimedOut { timeout } => ErrorText::capture(&TimedOut(*timeout)),
                StepErrorKind::Panicked(message) => ErrorText::capture(&Panicked(message)),
                _ => ErrorText::capture(&"failed"),
            });
            // A broken hook is not retried around.
            let mut last = retry >= config.retry.max_retries() || hook_panicked;
            if last {
                record.status = StepStatus::Failed;
                record.completed_at = Some(clock.now());
            }
            tm_warn!(
                "{} `{}`: step `{}` attempt {} failed: {}{}",
                info.id,
                info.operation,
                record.name,
                attempt,
                record.error().unwrap_or_default(),
                if last { " (no retries left)" } else { "" }
            );
            tm_event!(warn, &span, "attempt failed", error = ledger.steps[index].error().unwrap_or_default());
            let event = StepEvent { transaction: &ledger.info, step: &ledger.steps[index], attempt };
            if let Err(panic) = within(&span, guarded(hooks.on_step_failure(&event))).await {
                tm_error!("{}: on_step_failure hook panicked: {}", info.id, panic);
                let record = &mut ledger.steps[index];
                record.status = StepStatus::Failed;
                record.completed_at.get_or_insert(clock.now());
                last = true;
            }
            if last {
                if provisional && !uncertain {
                    // Every attempt failed cleanly: nothing to undo.
                    ledger.undo.pop();
                    ledger.steps[index].has_rollback = false;
                }
                return Err(StepError { step: ledger.steps[index].name.clone(), index, kind });
            }
            // The error of an attempt that will be retried is dropped here;
            // its text stays in the step's record.
            drop(kind);
            let delay = config.retry.jittered_delay(retry, &mut ledger.rng);
            tm_event!(info, &span, "retrying", delay = crate::trace::AsDebug(delay));
            crate::trace::close(span);
            tm_debug!("{} `{}`: step `{}` retrying in {:?}", info.id, info.operation, ledger.steps[index].name, delay);
            if !delay.is_zero() {
                clock.sleep(delay).await;
            }
            retry += 1;
        }
    }
}

/// A failed attempt's `outcome`, for its span.
fn outcome_of<E>(kind: &StepErrorKind<E>) -> &'static str {
    match kind {
        StepErrorKind::TimedOut { .. } => "timeout",
        StepErrorKind::Panicked(_) => "panic",
        _ => "error",
    }
}

/// The text recorded for an attempt that ran out of time.
pub(crate) struct TimedOut(pub(crate) Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.0)
    }
}

/// Runs `future`, giving up when `timeout` passes on `clock` first. `None`
/// means it timed out. When both are ready at once, the future wins.
pub(crate) async fn with_timeout<C: Clock, F: Future>(
    clock: &C,
    timeout: Option<Duration>,
    future: F,
) -> Option<F::Output> {
    let Some(timeout) = timeout else {
        return Some(future.await);
    };
    if timeout.is_zero() {
        // Defined the same on every clock (some timers yield once even when
        // already due): the attempt gets exactly one poll.
        let mut future = pin!(future);
        return poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await.map(Some).into_ready();
    }
    match race(future, clock.sleep(timeout)).await {
        Either::Left(output) => Some(output),
        Either::Right(()) => None,
    }
}

trait IntoReady<T> {
    fn into_ready(self) -> Option<T>;
}

impl<T> IntoReady<T> for Poll<Option<T>> {
    /// `Pending` is a timed-out attempt.
    fn into_ready(self) -> Option<T> {
        match self {
            Poll::Ready(output) => output,
            Poll::Pending => None,
        }
    }
}

pub(crate) enum Either<A, B> {
    Left(A),
    Right(B),
}

/// Polls both futures until one is ready; the first wins a tie. Both are
/// dropped when it returns.
pub(crate) async fn race<A: Future, B: Future>(a: A, b: B) -> Either<A::Output, B::Output> {
    let mut a = pin!(a);
    let mut b = pin!(b);
    poll_fn(|cx| {
        if let Poll::Ready(output) = a.as_mut().poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        b.as_mut().poll(cx).map(Either::Right)
    })
    .await
}
