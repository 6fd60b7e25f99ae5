//! A running transaction and its engine: steps, retries, timeouts, rollback.

use core::fmt;
use core::future::{Future, poll_fn};
use core::pin::pin;
use core::task::Poll;
use core::time::Duration;

use crate::manager::Outcome;
use crate::text::ErrorText;
use crate::{
    Clock, Committed, Hooks, List, RetryPolicy, Rollback, RollbackErrorKind, RollbackFailure,
    SplitMix64, StepError, StepErrorKind, StepEvent, StepRecord, StepStatus, Storage, Summary,
    TransactionError, TransactionInfo, TransactionManager,
};

/// A transaction in progress: the handle its body receives, to add steps.
///
/// Each step runs as soon as it is awaited, and its value comes back to the
/// body, so later steps can use it. Type parameters: the clock `C`, the
/// context `Ctx` lent to steps and rollbacks, the undo record type `U`, the
/// storage `S` and the hooks `H` — all fixed by the manager and builder, so
/// a body closure never names them.
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
pub struct Transaction<'t, C, Ctx: ?Sized, U, S: Storage, H> {
    manager: &'t TransactionManager<C, H>,
    ctx: &'t mut Ctx,
    info: TransactionInfo,
    rng: SplitMix64,
    started_at: Duration,
    steps: S::List<StepRecord>,
    undo: S::List<UndoRecord<U>>,
}

/// What the transaction keeps to roll back one completed step.
struct UndoRecord<U> {
    step: usize,
    undo: U,
    retry: RetryPolicy,
    timeout: Option<Duration>,
}

/// A step's settings, collected by [`Step`] before it runs.
pub(crate) struct StepConfig {
    pub(crate) name: crate::Name,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) rollback_timeout: Option<Option<Duration>>,
    pub(crate) rollback_retry: Option<RetryPolicy>,
}

impl<'t, C, Ctx: ?Sized, U, S: Storage, H> Transaction<'t, C, Ctx, U, S, H> {
    pub(crate) fn new(
        manager: &'t TransactionManager<C, H>,
        ctx: &'t mut Ctx,
        info: TransactionInfo,
        jitter_seed: u64,
    ) -> Self
    where
        C: Clock,
    {
        Self {
            started_at: manager.clock.now(),
            manager,
            ctx,
            info,
            rng: SplitMix64::new(jitter_seed),
            steps: Default::default(),
            undo: Default::default(),
        }
    }

    /// Starts building a step named `name`; set its options, then run it
    /// with [`Step::run`] (no rollback) or [`Step::execute`] followed by a
    /// rollback.
    pub fn step(&mut self, name: impl Into<crate::Name>) -> Step<'_, 't, C, Ctx, U, S, H> {
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
        &self.info
    }

    /// The transaction's id.
    pub fn id(&self) -> crate::TransactionId {
        self.info.id
    }

    /// The records of the steps run so far.
    pub fn steps(&self) -> &[StepRecord] {
        &self.steps
    }

    /// The transaction's clock, for steps that need to wait or read the time.
    pub fn clock(&self) -> &C {
        &self.manager.clock
    }
}

impl<C: Clock, Ctx: ?Sized, U: Rollback<Ctx>, S: Storage, H: Hooks>
    Transaction<'_, C, Ctx, U, S, H>
{
    pub(crate) async fn start(&mut self) {
        tm_info!(
            "{} `{}`: transaction started",
            self.info.id,
            self.info.operation
        );
        self.manager.hooks.on_transaction_start(&self.info).await;
    }

    /// Commits, or rolls back, according to the body's result.
    pub(crate) async fn finish<T, B>(mut self, result: Result<T, B>) -> Outcome<T, B, U::Error, S> {
        let hooks = &self.manager.hooks;
        match result {
            Ok(value) => {
                let summary = self.into_summary();
                tm_info!(
                    "{} `{}`: committed after {} step(s)",
                    summary.info.id,
                    summary.info.operation,
                    summary.total_steps()
                );
                hooks
                    .on_transaction_complete(&summary.info, true, &summary)
                    .await;
                Ok(Committed { value, summary })
            }
            Err(cause) => {
                tm_warn!(
                    "{} `{}`: body failed; rolling back",
                    self.info.id,
                    self.info.operation
                );
                let rollback_failures = self.roll_back().await;
                let summary = self.into_summary();
                if rollback_failures.is_empty() {
                    tm_info!(
                        "{} `{}`: rolled back cleanly",
                        summary.info.id,
                        summary.info.operation
                    );
                } else {
                    tm_error!(
                        "{} `{}`: PARTIALLY rolled back, {} rollback(s) failed",
                        summary.info.id,
                        summary.info.operation,
                        rollback_failures.len()
                    );
                }
                hooks
                    .on_transaction_complete(&summary.info, false, &summary)
                    .await;
                Err(TransactionError {
                    cause,
                    rollback_failures,
                    summary,
                })
            }
        }
    }

    fn into_summary(self) -> Summary<S> {
        Summary {
            info: self.info,
            started_at: self.started_at,
            completed_at: self.manager.clock.now(),
            steps: self.steps,
        }
    }

    /// Runs one step: attempts with timeout and retries, records each in the
    /// summary, calls the hooks, and keeps an undo record when it completes.
    pub(crate) async fn execute<A, M>(
        &mut self,
        config: StepConfig,
        mut execute: A,
        undo: Option<M>,
    ) -> Result<A::Output, StepError<A::Error>>
    where
        A: StepFn<Ctx>,
        M: FnOnce(&A::Output) -> U,
    {
        let index = self.steps.len();
        let mut undo = undo;
        if !self.steps.has_room() || (undo.is_some() && !self.undo.has_room()) {
            let capacity = S::CAPACITY.unwrap_or(usize::MAX);
            tm_error!(
                "{} `{}`: step `{}` refused: capacity of {} steps used up",
                self.info.id,
                self.info.operation,
                config.name,
                capacity
            );
            return Err(StepError {
                step: config.name,
                index,
                kind: StepErrorKind::CapacityExceeded { capacity },
            });
        }
        let clock = &self.manager.clock;
        let hooks = &self.manager.hooks;
        let mut record = StepRecord::new(index, config.name, config.timeout, undo.is_some());
        record.status = StepStatus::InProgress;
        record.started_at = Some(clock.now());
        // Cannot fail: room was checked above.
        let _ = self.steps.push(record);

        let mut retry = 0u32;
        loop {
            let attempt = retry.saturating_add(1);
            self.steps[index].attempts = attempt;
            tm_debug!(
                "{} `{}`: step `{}` attempt {}",
                self.info.id,
                self.info.operation,
                self.steps[index].name,
                attempt
            );
            let event = StepEvent {
                transaction: &self.info,
                step: &self.steps[index],
                attempt,
            };
            hooks.on_step_execute(&event).await;

            let result = with_timeout(clock, config.timeout, execute.call(&mut *self.ctx)).await;
            let record = &mut self.steps[index];
            let kind = match result {
                Some(Ok(output)) => {
                    record.status = StepStatus::Completed;
                    record.completed_at = Some(clock.now());
                    if let Some(make_undo) = undo.take() {
                        let undo = UndoRecord {
                            step: index,
                            undo: make_undo(&output),
                            retry: config.rollback_retry.unwrap_or(config.retry),
                            timeout: config.rollback_timeout.unwrap_or(config.timeout),
                        };
                        // Cannot fail: room was checked before the step ran.
                        let _ = self.undo.push(undo);
                    }
                    tm_debug!(
                        "{} `{}`: step `{}` completed on attempt {}",
                        self.info.id,
                        self.info.operation,
                        self.steps[index].name,
                        attempt
                    );
                    let event = StepEvent {
                        transaction: &self.info,
                        step: &self.steps[index],
                        attempt,
                    };
                    hooks.on_step_success(&event).await;
                    return Ok(output);
                }
                Some(Err(error)) => {
                    record.error = Some(ErrorText::capture(&error));
                    StepErrorKind::Failed(error)
                }
                None => {
                    let timeout = config.timeout.unwrap_or_default();
                    record.error = Some(ErrorText::capture(&TimedOut(timeout)));
                    StepErrorKind::TimedOut { timeout }
                }
            };
            let last = retry >= config.retry.max_retries();
            if last {
                record.status = StepStatus::Failed;
                record.completed_at = Some(clock.now());
            }
            tm_warn!(
                "{} `{}`: step `{}` attempt {} failed: {}{}",
                self.info.id,
                self.info.operation,
                record.name,
                attempt,
                record.error().unwrap_or_default(),
                if last { " (no retries left)" } else { "" }
            );
            let event = StepEvent {
                transaction: &self.info,
                step: &self.steps[index],
                attempt,
            };
            hooks.on_step_failure(&event).await;
            if last {
                return Err(StepError {
                    step: self.steps[index].name.clone(),
                    index,
                    kind,
                });
            }
            // The error of an attempt that will be retried is dropped here;
            // its text stays in the step's record.
            drop(kind);
            let delay = config.retry.jittered_delay(retry, &mut self.rng);
            tm_debug!(
                "{} `{}`: step `{}` retrying in {:?}",
                self.info.id,
                self.info.operation,
                self.steps[index].name,
                delay
            );
            if !delay.is_zero() {
                clock.sleep(delay).await;
            }
            retry += 1;
        }
    }

    /// Rolls back every undo record, latest first, each with its own retries
    /// and timeout, and returns the rollbacks that failed for good. A failed
    /// rollback does not stop the others.
    async fn roll_back(&mut self) -> S::List<RollbackFailure<U::Error>> {
        let mut failures = S::List::default();
        if self.undo.is_empty() {
            return failures;
        }
        let clock = &self.manager.clock;
        let hooks = &self.manager.hooks;
        tm_info!(
            "{} `{}`: rolling back {} completed step(s)",
            self.info.id,
            self.info.operation,
            self.undo.len()
        );
        hooks.on_rollback_start(&self.info).await;
        while let Some(mut entry) = self.undo.pop() {
            let index = entry.step;
            self.steps[index].rollback_started_at = Some(clock.now());
            let mut retry = 0u32;
            loop {
                let attempt = retry.saturating_add(1);
                self.steps[index].rollback_attempts = attempt;
                tm_debug!(
                    "{} `{}`: rolling back step `{}`, attempt {}",
                    self.info.id,
                    self.info.operation,
                    self.steps[index].name,
                    attempt
                );
                let event = StepEvent {
                    transaction: &self.info,
                    step: &self.steps[index],
                    attempt,
                };
                hooks.on_step_rollback(&event).await;

                let result =
                    with_timeout(clock, entry.timeout, entry.undo.rollback(&mut *self.ctx)).await;
                let record = &mut self.steps[index];
                let kind = match result {
                    Some(Ok(())) => {
                        record.status = StepStatus::RolledBack;
                        record.rollback_completed_at = Some(clock.now());
                        tm_info!(
                            "{} `{}`: step `{}` rolled back",
                            self.info.id,
                            self.info.operation,
                            record.name
                        );
                        break;
                    }
                    Some(Err(error)) => {
                        record.rollback_error = Some(ErrorText::capture(&error));
                        RollbackErrorKind::Failed(error)
                    }
                    None => {
                        let timeout = entry.timeout.unwrap_or_default();
                        record.rollback_error = Some(ErrorText::capture(&TimedOut(timeout)));
                        RollbackErrorKind::TimedOut { timeout }
                    }
                };
                let last = retry >= entry.retry.max_retries();
                if last {
                    record.status = StepStatus::RollbackFailed;
                    record.rollback_completed_at = Some(clock.now());
                }
                tm_warn!(
                    "{} `{}`: rollback of step `{}` attempt {} failed: {}{}",
                    self.info.id,
                    self.info.operation,
                    record.name,
                    attempt,
                    record.rollback_error().unwrap_or_default(),
                    if last { " (no retries left)" } else { "" }
                );
                let event = StepEvent {
                    transaction: &self.info,
                    step: &self.steps[index],
                    attempt,
                };
                hooks.on_step_rollback_failure(&event).await;
                if last {
                    let failure = RollbackFailure {
                        step: self.steps[index].name.clone(),
                        index,
                        kind,
                    };
                    // Cannot fail: there are no more failures than undo
                    // records, and both lists have the same capacity.
                    let _ = failures.push(failure);
                    break;
                }
                drop(kind);
                let delay = entry.retry.jittered_delay(retry, &mut self.rng);
                if !delay.is_zero() {
                    clock.sleep(delay).await;
                }
                retry += 1;
            }
        }
        failures
    }
}

/// The text recorded for an attempt that ran out of time.
struct TimedOut(Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {:?}", self.0)
    }
}

/// Runs `future`, giving up when `timeout` passes on `clock` first. `None`
/// means it timed out. When both are ready at once, the future wins.
async fn with_timeout<C: Clock, F: Future>(
    clock: &C,
    timeout: Option<Duration>,
    future: F,
) -> Option<F::Output> {
    let mut future = pin!(future);
    let Some(timeout) = timeout else {
        return Some(future.await);
    };
    let mut sleep = pin!(clock.sleep(timeout));
    poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        sleep.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// A step being configured. Made by [`Transaction::step`].
///
/// Options default to the manager's ([`TransactionManager::with_retry`],
/// [`TransactionManager::with_timeout`]); the rollback's default to the
/// step's own, as in the reference.
///
/// ```
/// # use core::time::Duration;
/// # use transaction_manager_core::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let mut calls = 0;
/// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
///     tx.step("flaky")
///         .timeout(Duration::from_secs(1))
///         .retry(RetryPolicy::new().with_max_retries(2))
///         .run(|| {
///             // Count in the closure; the future gets a copy.
///             calls += 1;
///             let n = calls;
///             async move { if n < 3 { Err("busy") } else { Ok(n) } }
///         })
///         .await
/// }));
/// assert_eq!(done.unwrap().into_value(), 3);
/// // Two retries: 500 ms, then 1 s of virtual time.
/// assert_eq!(clock.now(), Duration::from_millis(1500));
/// ```
#[must_use = "a step does nothing until it is run"]
pub struct Step<'s, 't, C, Ctx: ?Sized, U, S: Storage, H> {
    tx: &'s mut Transaction<'t, C, Ctx, U, S, H>,
    config: StepConfig,
}

impl<'s, 't, C, Ctx: ?Sized, U, S: Storage, H> Step<'s, 't, C, Ctx, U, S, H> {
    /// Gives each execute attempt at most `timeout`; an attempt that takes
    /// longer is abandoned (its future dropped) and counts as failed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// Lets attempts take as long as they take, even if the manager sets a
    /// default timeout.
    pub fn no_timeout(mut self) -> Self {
        self.config.timeout = None;
        self
    }

    /// Retries and backoff of execute (and, unless set separately, of the
    /// rollback).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.config.retry = policy;
        self
    }

    /// Shorthand for changing only the number of retries of the step's
    /// policy.
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config.retry = self.config.retry.with_max_retries(retries);
        self
    }

    /// The rollback's per-attempt timeout (`None`: no timeout), instead of
    /// the step's.
    pub fn rollback_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.rollback_timeout = Some(timeout);
        self
    }

    /// The rollback's retries and backoff, instead of the step's.
    pub fn rollback_retry(mut self, policy: RetryPolicy) -> Self {
        self.config.rollback_retry = Some(policy);
        self
    }

    /// Gives the step its execute function, to be followed by its rollback
    /// ([`Execute::rollback`] or [`Execute::undo`]), then awaited.
    ///
    /// `execute` is called once per attempt and returns that attempt's
    /// future: `|| api.create_user("alice")`, or `|| async { … }`. It may
    /// borrow anything that outlives the transaction, and the transaction
    /// stays `Send` when the future is. For steps that need the
    /// transaction's context mutably, see [`Step::execute_with`].
    pub fn execute<F, Fut, Out, E>(self, execute: F) -> Execute<'s, 't, C, Ctx, U, S, H, Plain<F>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Out, E>>,
    {
        Execute {
            step: self,
            execute: Plain(execute),
        }
    }

    /// Like [`execute`](Step::execute), but each attempt borrows the
    /// transaction's context mutably: `async |board: &mut Board| …`.
    ///
    /// The async closure should capture nothing and reach everything
    /// through the context: a capturing async closure makes the compiler's
    /// `Send` check of a spawned transaction fail (rust-lang/rust#139475).
    /// Single-threaded executors (embassy, `LocalSet`) are not affected.
    pub fn execute_with<F, Out, E>(
        self,
        execute: F,
    ) -> Execute<'s, 't, C, Ctx, U, S, H, WithContext<F>>
    where
        F: AsyncFnMut(&mut Ctx) -> Result<Out, E>,
    {
        Execute {
            step: self,
            execute: WithContext(execute),
        }
    }
}

impl<C: Clock, Ctx: ?Sized, U: Rollback<Ctx>, S: Storage, H: Hooks> Step<'_, '_, C, Ctx, U, S, H> {
    /// Runs the step without a rollback: nothing to undo if a later step
    /// fails. Returns execute's value, or why it failed for good. `execute`
    /// is as for [`Step::execute`].
    pub async fn run<F, Fut, Out, E>(self, execute: F) -> Result<Out, StepError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Out, E>>,
        E: fmt::Display,
    {
        self.tx
            .execute(self.config, Plain(execute), None::<fn(&Out) -> U>)
            .await
    }

    /// Runs the step without a rollback, lending the context to each
    /// attempt. `execute` is as for [`Step::execute_with`].
    pub async fn run_with<F, Out, E>(self, execute: F) -> Result<Out, StepError<E>>
    where
        F: AsyncFnMut(&mut Ctx) -> Result<Out, E>,
        E: fmt::Display,
    {
        self.tx
            .execute(self.config, WithContext(execute), None::<fn(&Out) -> U>)
            .await
    }
}

/// One attempt of a step's execute function, however it was given.
///
/// Implemented by [`Plain`] (`FnMut() -> Future`) and [`WithContext`]
/// (`AsyncFnMut(&mut Ctx)`); you do not implement it yourself.
pub trait StepFn<Ctx: ?Sized> {
    /// What a successful attempt returns.
    type Output;
    /// What a failed attempt returns.
    type Error: fmt::Display;

    /// Starts one attempt.
    fn call(&mut self, ctx: &mut Ctx) -> impl Future<Output = Result<Self::Output, Self::Error>>;
}

/// An execute function that takes no context: `FnMut() -> Future`.
#[derive(Debug)]
pub struct Plain<F>(F);

impl<Ctx: ?Sized, F, Fut, Out, E> StepFn<Ctx> for Plain<F>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Out, E>>,
    E: fmt::Display,
{
    type Output = Out;
    type Error = E;

    fn call(&mut self, _: &mut Ctx) -> impl Future<Output = Result<Out, E>> {
        (self.0)()
    }
}

/// An execute function that borrows the context: `AsyncFnMut(&mut Ctx)`.
#[derive(Debug)]
pub struct WithContext<F>(F);

impl<Ctx: ?Sized, F, Out, E> StepFn<Ctx> for WithContext<F>
where
    F: AsyncFnMut(&mut Ctx) -> Result<Out, E>,
    E: fmt::Display,
{
    type Output = Out;
    type Error = E;

    fn call(&mut self, ctx: &mut Ctx) -> impl Future<Output = Result<Out, E>> {
        (self.0)(ctx)
    }
}

/// A step with its execute function, waiting for its rollback. Made by
/// [`Step::execute`] and [`Step::execute_with`].
#[must_use = "a step does nothing until its rollback is given and it is awaited"]
pub struct Execute<'s, 't, C, Ctx: ?Sized, U, S: Storage, H, A> {
    step: Step<'s, 't, C, Ctx, U, S, H>,
    execute: A,
}

impl<C: Clock, Ctx: ?Sized, U: Rollback<Ctx>, S: Storage, H: Hooks, A: StepFn<Ctx>>
    Execute<'_, '_, C, Ctx, U, S, H, A>
{
    /// Runs the step with a rollback closure that receives (a clone of) the
    /// step's output and returns the rollback's future:
    /// `|user| api.delete_user(user.id)`. For transactions whose undo type
    /// converts from a [`RollbackFn`](crate::RollbackFn), such as the
    /// default [`BoxedRollback`](crate::BoxedRollback).
    pub async fn rollback<G, Fut, RE>(self, rollback: G) -> Result<A::Output, StepError<A::Error>>
    where
        G: FnMut(A::Output) -> Fut,
        Fut: Future<Output = Result<(), RE>>,
        A::Output: Clone,
        U: From<crate::RollbackFn<G, A::Output>>,
    {
        let make_undo =
            move |output: &A::Output| U::from(crate::RollbackFn::new(rollback, output.clone()));
        self.step
            .tx
            .execute(self.step.config, self.execute, Some(make_undo))
            .await
    }

    /// Like [`rollback`](Execute::rollback), but each rollback attempt
    /// receives a clone of `state` with the output, as a pair — `state` is
    /// typically an `Arc` of the client that undoes the step:
    /// `.rollback_using(&api, |(api, user)| async move { api.delete_user(user.id).await })`.
    ///
    /// [`BoxedRollback`](crate::BoxedRollback) closures own what they use
    /// (`'static`, so the transaction can be spawned); this spares the
    /// `let api = api.clone()` that would otherwise go before the closure
    /// and again inside it.
    pub async fn rollback_using<St, G, Fut, RE>(
        self,
        state: &St,
        rollback: G,
    ) -> Result<A::Output, StepError<A::Error>>
    where
        St: Clone,
        G: FnMut((St, A::Output)) -> Fut,
        Fut: Future<Output = Result<(), RE>>,
        A::Output: Clone,
        U: From<crate::RollbackFn<G, (St, A::Output)>>,
    {
        let state = state.clone();
        let make_undo = move |output: &A::Output| {
            U::from(crate::RollbackFn::new(rollback, (state, output.clone())))
        };
        self.step
            .tx
            .execute(self.step.config, self.execute, Some(make_undo))
            .await
    }

    /// Runs the step and, once it completes, records `make_undo(&output)` as
    /// its undo record: "rollbacks as data", for an undo enum.
    pub async fn undo<M>(self, make_undo: M) -> Result<A::Output, StepError<A::Error>>
    where
        M: FnOnce(&A::Output) -> U,
    {
        self.step
            .tx
            .execute(self.step.config, self.execute, Some(make_undo))
            .await
    }
}
