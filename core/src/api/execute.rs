//! Running a step: [`Step`]'s execute, run and perform, and [`Execute`],
//! where the rollback, the undo record, the retry condition and the error
//! mapping are chosen; awaiting it runs the step.

use crate::api::step::Step;
use crate::api::step_fn::{Keyed, MapErr, Parts, Plain, StepFn, WithContext};
use crate::api::undo::{
    MakeUndo, NoUndo, OnCompleted, OnCompletedKeyed, OnCompletedUsing, OnUncertain, OnUncertainUsing, UndoKeyed,
    UndoMaybe, UndoWith,
};
use crate::engine::attempt::Maybe;
use crate::{
    engine::{abandon::AbandonPolicy, manager::TransactionManager},
    ledger::{error::StepError, rollback::Rollback},
    observe::hooks::Hooks,
    timing::{
        clock::Clock,
        condition::{RetryAlways, RetryCondition},
    },
    util::storage::Storage,
};
use core::fmt;
use core::future::Future;

impl<'s, 't, M, Ctx: ?Sized, U, S: Storage> Step<'s, 't, M, Ctx, U, S> {
    /// Gives the step its execute function, to be followed by its rollback
    /// ([`Execute::rollback`] or [`Execute::undo`]), then awaited.
    ///
    /// `execute` is called once per attempt and returns that attempt's
    /// future: `|| api.create_user("alice")`, or `|| async { … }`. It may
    /// borrow anything that outlives the transaction, and the transaction
    /// stays `Send` when the future is. For steps that need the
    /// transaction's context mutably, see [`Step::execute_with`].
    pub fn execute<F, Fut, Out, E>(self, execute: F) -> Execute<'s, 't, M, Ctx, U, S, Plain<F>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Out, E>>,
    {
        Execute { step: self, execute: Plain(execute), retry_if: RetryAlways, rollback_retry_if: RetryAlways }
    }

    /// Like [`execute`](Step::execute), but each attempt borrows the
    /// transaction's context mutably: `async |board: &mut Board| …`.
    ///
    /// When the transaction must be `Send` (spawned on a multi-thread
    /// runtime), the async closure must not hold a reference: one that
    /// captures a local by reference, or into which a reference was moved,
    /// makes the compiler's `Send` check of the spawned transaction fail
    /// ("implementation of `Send` is not general enough",
    /// rust-lang/rust#139475). Owned captures work (`async move |ctx| …`
    /// with copies, clones, `Arc`s), and so does reaching everything
    /// through the context. Single-threaded executors (embassy,
    /// `LocalSet`) are not affected.
    pub fn execute_with<F, Out, E>(self, execute: F) -> Execute<'s, 't, M, Ctx, U, S, WithContext<F>>
    where
        F: AsyncFnMut(&mut Ctx) -> Result<Out, E>,
    {
        Execute { step: self, execute: WithContext(execute), retry_if: RetryAlways, rollback_retry_if: RetryAlways }
    }
}

impl<'s, 't, C, H, A, J, Ctx: ?Sized, U, S: Storage> Step<'s, 't, TransactionManager<C, H, A, J>, Ctx, U, S>
where
    C: Clock,
    H: Hooks,
    U: Rollback<Ctx>,
    A: AbandonPolicy<C, H, Ctx, U, S>,
    J: crate::engine::binding::JournalFor<U>,
{
    /// The step's idempotency key: the transaction's id and this step's
    /// index, as [`Transaction::next_step_key`](crate::Transaction::next_step_key) gives it before the step.
    /// For steps whose execute function or rollback needs it and that use
    /// none of the `_keyed` methods (a step with a context,
    /// [`execute_with`](Step::execute_with), or an action).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
    /// let mut tries = Vec::new();
    /// clock.block_on(manager.transaction("t").with_id(TransactionId::new(4)).fixed::<NoRollback, 1>().run_with(
    ///     &mut tries,
    ///     async |tx| {
    ///         let step = tx.step("log");
    ///         let key = step.key();
    ///         step.run_with(async move |tries: &mut Vec<String>| { tries.push(key.to_string()); Ok::<_, &str>(()) }).await
    ///     },
    /// )).unwrap();
    /// assert_eq!(tries, ["tx-4.0-000000000000002a"]);
    /// ```
    pub fn key(&self) -> crate::durable::id::IdempotencyKey {
        self.tx.next_step_key()
    }

    /// Like [`execute`](Step::execute), but each attempt receives the
    /// step's [`IdempotencyKey`](crate::journal::IdempotencyKey), to pass to the API
    /// it calls: `|key| api.create_user("alice", key)`. Every attempt gets
    /// the same key, so the API sees a retry as the same request.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
    /// let done = clock.block_on(manager.transaction("t").with_id(TransactionId::new(9)).fixed::<NoRollback, 2>().run(async |tx| {
    ///     tx.step("a").run(|| async { Ok::<_, &str>(()) }).await?;
    ///     tx.step("b").execute_keyed(|key| async move { Ok::<_, &str>(key.to_string()) }).no_rollback().await
    /// }));
    /// assert_eq!(done.unwrap().into_value(), "tx-9.1-000000000000002a");
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn execute_keyed<F, Fut, Out, E>(
        self,
        execute: F,
    ) -> Execute<'s, 't, TransactionManager<C, H, A, J>, Ctx, U, S, Keyed<F>>
    where
        F: FnMut(crate::durable::id::IdempotencyKey) -> Fut,
        Fut: Future<Output = Result<Out, E>>,
    {
        Execute { step: self, execute: Keyed(execute), retry_if: RetryAlways, rollback_retry_if: RetryAlways }
    }

    /// Runs the step without a rollback: nothing to undo if a later step
    /// fails. Returns execute's value, or why it failed for good. `execute`
    /// is as for [`Step::execute`].
    pub fn run<F, Fut, Out, E>(self, execute: F) -> impl Future<Output = Result<Out, StepError<E>>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Out, E>>,
        E: fmt::Display,
    {
        self.tx.execute(self.name, Parts { execute: Plain(execute), undo: NoUndo, retry_if: RetryAlways })
    }

    /// Runs the step given as data (an [`Action`](crate::Action), usually a
    /// variant of an enum of the transaction's steps), with the undo record
    /// its [`undo`](crate::Action::undo) says it owes. Every step performed
    /// with one action type shares one copy of the step engine.
    pub fn perform<Act>(self, action: Act) -> impl Future<Output = Result<Act::Output, StepError<Act::Error>>>
    where
        Act: crate::api::action::Action<Ctx, Undo = U>,
    {
        self.tx.execute(self.name, crate::api::action::ActionParts(action))
    }

    /// Runs the step without a rollback, lending the context to each
    /// attempt. `execute` is as for [`Step::execute_with`].
    pub fn run_with<F, Out, E>(self, execute: F) -> impl Future<Output = Result<Out, StepError<E>>>
    where
        F: AsyncFnMut(&mut Ctx) -> Result<Out, E>,
        E: fmt::Display,
    {
        self.tx.execute(self.name, Parts { execute: WithContext(execute), undo: NoUndo, retry_if: RetryAlways })
    }
}

/// A step with its execute function, waiting for its rollback. Made by
/// [`Step::execute`] and [`Step::execute_with`].
///
/// `W` and `RW` are its retry conditions ([`retry_if`](Execute::retry_if),
/// [`rollback_retry_if`](Execute::rollback_retry_if)): [`RetryAlways`]
/// unless set, which costs nothing.
#[must_use = "a step does nothing until its rollback is given and it is awaited"]
pub struct Execute<'s, 't, M, Ctx: ?Sized, U, S: Storage, F, W = RetryAlways, RW = RetryAlways> {
    step: Step<'s, 't, M, Ctx, U, S>,
    execute: F,
    retry_if: W,
    rollback_retry_if: RW,
}

impl<'s, 't, M, Ctx: ?Sized, U, S: Storage, F: StepFn<Ctx>, W, RW> Execute<'s, 't, M, Ctx, U, S, F, W, RW> {
    /// Retries a failed attempt only if `condition` accepts its error: an
    /// error it rejects (returns `false` for) is permanent, and fails the
    /// step for good at once, with no backoff wait. Its record's error
    /// then reads `not retried: permanent: …` (the summary, the
    /// `on_step_failure` hook, logs); the step's error stays the typed
    /// error. Timeouts and panics are not errors of the step and are
    /// retried as the policy says. A condition that panics fails the step
    /// for good too, with the panic in the record (`not retried: the retry
    /// condition panicked (…): …`).
    ///
    /// It sees the error as execute returns it (or as
    /// [`map_err`](Execute::map_err) converted it: convert first, then set
    /// the condition).
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let mut calls = 0;
    /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
    ///     tx.step("register")
    ///         .max_retries(5)
    ///         .execute(|| {
    ///             calls += 1;
    ///             async { Err::<(), _>("zone refuses this name") }
    ///         })
    ///         .retry_if(|error| *error != "zone refuses this name")
    ///         .no_rollback()
    ///         .await
    /// })).unwrap_err();
    /// assert_eq!((calls, clock.now()), (1, Duration::ZERO)); // no retry, no backoff
    /// assert_eq!(err.cause().error(), Some(&"zone refuses this name"));
    /// # #[cfg(feature = "error-text")]
    /// assert_eq!(err.summary().steps()[0].error(), Some("not retried: permanent: zone refuses this name"));
    /// ```
    pub fn retry_if<W2>(self, condition: W2) -> Execute<'s, 't, M, Ctx, U, S, F, W2, RW>
    where
        W2: FnMut(&F::Error) -> bool,
    {
        let Execute { step, execute, retry_if: _, rollback_retry_if } = self;
        Execute { step, execute, retry_if: condition, rollback_retry_if }
    }
}

impl<'s, 't, M, Ctx: ?Sized, U, S: Storage, F: StepFn<Ctx>, RW> Execute<'s, 't, M, Ctx, U, S, F, RetryAlways, RW> {
    /// Converts each failed attempt's error with `map`, so this step's error
    /// type matches the body's and `?` works, while execute keeps its own
    /// type. The summary records the converted error's text.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// #[derive(Debug)]
    /// enum AppError { Io(std::io::Error), Parse(core::num::ParseIntError) }
    /// impl core::fmt::Display for AppError {
    ///     fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    ///         match self { AppError::Io(e) => write!(f, "io: {e}"), AppError::Parse(e) => write!(f, "parse: {e}") }
    ///     }
    /// }
    ///
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
    ///     let text = tx.step("read")
    ///         .execute(|| async { Ok::<_, std::io::Error>(String::from("4o2")) })
    ///         .map_err(AppError::Io)
    ///         .no_rollback()
    ///         .await?;
    ///     let n = tx.step("parse")
    ///         .execute(|| { let text = text.clone(); async move { text.parse::<u32>() } })
    ///         .map_err(AppError::Parse)
    ///         .no_rollback()
    ///         .await?;
    ///     Ok::<_, StepError<AppError>>(n)
    /// })).unwrap_err();
    /// assert!(matches!(err.cause().kind(), StepErrorKind::Failed(AppError::Parse(_))));
    /// # #[cfg(feature = "error-text")]
    /// assert_eq!(err.summary().steps()[1].error(), Some("parse: invalid digit found in string"));
    /// ```
    pub fn map_err<G, E2>(self, map: G) -> Execute<'s, 't, M, Ctx, U, S, MapErr<F, G>, RetryAlways, RW>
    where
        G: FnMut(F::Error) -> E2,
        E2: fmt::Display,
    {
        let Execute { step, execute, retry_if, rollback_retry_if } = self;
        Execute { step, execute: MapErr { execute, map }, retry_if, rollback_retry_if }
    }

    /// Converts each failed attempt's error with `Into`: `.err_into::<AppError>()`
    /// is `.map_err(AppError::from)`.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
    ///     tx.step("small").execute(|| async { Ok::<_, u8>(1) }).err_into::<u32>().no_rollback().await?;
    ///     tx.step("large").execute(|| async { Err::<(), _>(70_000u32) }).no_rollback().await?;
    ///     Ok::<_, StepError<u32>>(())
    /// })).unwrap_err();
    /// assert_eq!(err.cause().error(), Some(&70_000));
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn err_into<E2>(self) -> Execute<'s, 't, M, Ctx, U, S, MapErr<F, fn(F::Error) -> E2>, RetryAlways, RW>
    where
        E2: From<F::Error> + fmt::Display,
    {
        self.map_err(E2::from as fn(F::Error) -> E2)
    }
}

impl<'s, 't, C, H, A, J, Ctx: ?Sized, U, S: Storage, F, W, RW>
    Execute<'s, 't, TransactionManager<C, H, A, J>, Ctx, U, S, F, W, RW>
where
    C: Clock,
    H: Hooks,
    U: Rollback<Ctx>,
    A: AbandonPolicy<C, H, Ctx, U, S>,
    J: crate::engine::binding::JournalFor<U>,
    F: StepFn<Ctx>,
    W: RetryCondition<F::Error>,
{
    /// Runs the step with the undo maker `make` builds from the rollback's
    /// retry condition.
    fn run_with_undo<Mk>(
        self,
        make: impl FnOnce(RW) -> Mk,
    ) -> impl Future<Output = Result<F::Output, StepError<F::Error>>>
    where
        Mk: MakeUndo<F::Output, U>,
    {
        let Execute { step, execute, retry_if, rollback_retry_if } = self;
        step.tx.execute(step.name, Parts { execute, undo: make(rollback_retry_if), retry_if })
    }

    /// Retries a failed rollback attempt only if `condition` accepts its
    /// error, as [`retry_if`](Execute::retry_if) does for execute: a
    /// rejected error fails the rollback for good at once (the step is
    /// rollback-failed, its record's rollback error reads `not retried:
    /// permanent: …`, and it stays owed in a journal, like any rollback
    /// that failed for good); rollback goes on with the earlier steps.
    ///
    /// For closure rollbacks ([`rollback`](Execute::rollback) and its
    /// variants), given before them; it sees the error as the
    /// transaction's undo type has it ([`BoxError`](crate::rollback::BoxError) for
    /// [`BoxedRollback`](crate::BoxedRollback): downcast it). Undo records
    /// as data say it in [`Rollback::retry_if`], which recovery after a
    /// crash asks too.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// # use transaction_manager::rollback::BoxError;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.run("t", async |tx| {
    ///     tx.step("record")
    ///         .max_retries(3)
    ///         .execute(|| async { Ok::<_, &str>("www") })
    ///         .rollback_retry_if(|error: &BoxError| error.to_string() != "record is locked")
    ///         .rollback(|_name| async { Err::<(), _>("record is locked") })
    ///         .await?;
    ///     tx.step("fails").run(|| async { Err::<(), _>("boom") }).await
    /// })).unwrap_err();
    /// assert_eq!(clock.now(), Duration::ZERO); // no rollback retry, no backoff
    /// let record = &err.summary().steps()[0];
    /// assert_eq!((record.status(), record.rollback_attempts()), (StepStatus::RollbackFailed, 1));
    /// assert_eq!(record.rollback_error(), Some("not retried: permanent: record is locked"));
    /// # }
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn rollback_retry_if<RW2>(
        self,
        condition: RW2,
    ) -> Execute<'s, 't, TransactionManager<C, H, A, J>, Ctx, U, S, F, W, RW2>
    where
        RW2: FnMut(&U::Error) -> bool,
    {
        let Execute { step, execute, retry_if, rollback_retry_if: _ } = self;
        Execute { step, execute, retry_if, rollback_retry_if: condition }
    }

    /// Runs the step with a rollback closure that receives (a clone of) the
    /// step's output and returns the rollback's future:
    /// `|user| api.delete_user(user.id)`. For transactions whose undo type
    /// converts from a [`RollbackFn`](crate::rollback::RollbackFn), such as the
    /// default [`BoxedRollback`](crate::BoxedRollback).
    pub fn rollback<G, Fut, RE>(self, rollback: G) -> impl Future<Output = Result<F::Output, StepError<F::Error>>>
    where
        G: FnMut(F::Output) -> Fut,
        Fut: Future<Output = Result<(), RE>>,
        F::Output: Clone,
        U: From<crate::ledger::rollback::RollbackFn<G, F::Output, RW>>,
    {
        self.run_with_undo(|condition| OnCompleted(Some((rollback, condition))))
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
    pub fn rollback_using<St, G, Fut, RE>(
        self,
        state: &St,
        rollback: G,
    ) -> impl Future<Output = Result<F::Output, StepError<F::Error>>>
    where
        St: Clone,
        G: FnMut((St, F::Output)) -> Fut,
        Fut: Future<Output = Result<(), RE>>,
        F::Output: Clone,
        U: From<crate::ledger::rollback::RollbackFn<G, (St, F::Output), RW>>,
    {
        self.run_with_undo(|condition| OnCompletedUsing(state.clone(), Some((rollback, condition))))
    }

    /// Like [`rollback`](Execute::rollback), but each rollback attempt
    /// receives the step's [`IdempotencyKey`](crate::journal::IdempotencyKey) with
    /// the output, as a pair: `|(key, user)| api.delete_user(user.id, key)`.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// # use std::sync::{Arc, Mutex};
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
    /// let undone = Arc::new(Mutex::new(Vec::new()));
    /// let log = undone.clone();
    /// let err = clock.block_on(manager.transaction("t").with_id(TransactionId::new(5)).run(async |tx| {
    ///     tx.step("create")
    ///         .execute(|| async { Ok::<_, &str>(7) })
    ///         .rollback_keyed(move |(key, id)| {
    ///             let log = log.clone();
    ///             async move { log.lock().unwrap().push(format!("{key}: {id}")); Ok::<_, &str>(()) }
    ///         })
    ///         .await?;
    ///     tx.step("fails").run(|| async { Err::<(), _>("boom") }).await
    /// })).unwrap_err();
    /// assert_eq!(*undone.lock().unwrap(), ["tx-5.0-000000000000002a: 7"]);
    /// # }
    /// ```
    pub fn rollback_keyed<G, Fut, RE>(self, rollback: G) -> impl Future<Output = Result<F::Output, StepError<F::Error>>>
    where
        G: FnMut((crate::durable::id::IdempotencyKey, F::Output)) -> Fut,
        Fut: Future<Output = Result<(), RE>>,
        F::Output: Clone,
        U: From<crate::ledger::rollback::RollbackFn<G, (crate::durable::id::IdempotencyKey, F::Output), RW>>,
    {
        self.run_with_undo(|condition| OnCompletedKeyed(Some((rollback, condition))))
    }

    /// Runs the step with a rollback that also covers an *uncertain*
    /// failure: if the step fails and any attempt timed out, panicked or was
    /// cut short (deadline, cancel signal, dropped transaction), that
    /// attempt may have taken effect, so the step is rolled back too,
    /// receiving [`Maybe::Uncertain`]. A step that completed gets
    /// [`Maybe::Completed`] with its output; a step whose every attempt
    /// failed with an error is not rolled back.
    ///
    /// Such a rollback must be idempotent: it may run for an attempt that
    /// had no effect, and a rollback interrupted mid-way is attempted again.
    /// The closure is cloned for each use, so it must be `Clone`.
    pub fn rollback_uncertain<G, Fut, RE>(
        self,
        rollback: G,
    ) -> impl Future<Output = Result<F::Output, StepError<F::Error>>>
    where
        G: FnMut(Maybe<F::Output>) -> Fut + Clone,
        Fut: Future<Output = Result<(), RE>>,
        F::Output: Clone,
        U: From<crate::ledger::rollback::RollbackFn<G, Maybe<F::Output>, RW>>,
        RW: Clone,
    {
        self.run_with_undo(|condition| OnUncertain(rollback, condition))
    }

    /// [`rollback_uncertain`](Execute::rollback_uncertain) with a shared
    /// client, as [`rollback_using`](Execute::rollback_using) does it: each
    /// rollback attempt receives a clone of `state` and the
    /// [`Maybe`] output, as a pair.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// # use core::time::Duration;
    /// # use std::sync::{Arc, Mutex};
    /// # use transaction_manager::*;
    /// # use transaction_manager::step::Maybe;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let released = Arc::new(Mutex::new(Vec::new()));
    /// let err = clock.block_on(manager.run("t", async |tx| {
    ///     tx.step("reserve")
    ///         .timeout(Duration::from_secs(1))
    ///         .execute(|| core::future::pending::<Result<u32, &str>>())   // hangs: outcome unknown
    ///         .rollback_uncertain_using(&released, |(released, seat)| async move {
    ///             released.lock().unwrap().push(seat.completed());
    ///             Ok::<_, &str>(())
    ///         })
    ///         .await
    /// })).unwrap_err();
    /// assert!(err.cause().is_timeout());
    /// assert_eq!(*released.lock().unwrap(), [None]); // rolled back, as `Maybe::Uncertain`
    /// # }
    /// ```
    pub fn rollback_uncertain_using<St, G, Fut, RE>(
        self,
        state: &St,
        rollback: G,
    ) -> impl Future<Output = Result<F::Output, StepError<F::Error>>>
    where
        St: Clone,
        G: FnMut((St, Maybe<F::Output>)) -> Fut + Clone,
        Fut: Future<Output = Result<(), RE>>,
        F::Output: Clone,
        U: From<crate::ledger::rollback::RollbackFn<G, (St, Maybe<F::Output>), RW>>,
        RW: Clone,
    {
        self.run_with_undo(|condition| OnUncertainUsing(state.clone(), rollback, condition))
    }
}

/// Steps without a rollback condition: undo records as data say theirs in
/// [`Rollback::retry_if`].
impl<C, H, A, J, Ctx: ?Sized, U, S: Storage, F, W> Execute<'_, '_, TransactionManager<C, H, A, J>, Ctx, U, S, F, W>
where
    C: Clock,
    H: Hooks,
    U: Rollback<Ctx>,
    A: AbandonPolicy<C, H, Ctx, U, S>,
    J: crate::engine::binding::JournalFor<U>,
    F: StepFn<Ctx>,
    W: RetryCondition<F::Error>,
{
    /// Runs the step without a rollback, like [`Step::run`]: for a step
    /// whose errors were converted with [`map_err`](Execute::map_err) or
    /// [`err_into`](Execute::err_into), or that has a retry condition
    /// ([`retry_if`](Execute::retry_if)), and that has nothing to undo.
    pub fn no_rollback(self) -> impl Future<Output = Result<F::Output, StepError<F::Error>>> {
        self.run_with_undo(|RetryAlways| NoUndo)
    }

    /// Runs the step and, once it completes, records `make_undo(&output)` as
    /// its undo record: "rollbacks as data", for an undo enum.
    pub fn undo<Mk>(self, make_undo: Mk) -> impl Future<Output = Result<F::Output, StepError<F::Error>>>
    where
        Mk: FnOnce(&F::Output) -> U,
    {
        self.run_with_undo(|RetryAlways| UndoWith(Some(make_undo)))
    }

    /// Like [`undo`](Execute::undo), but the undo maker also receives the
    /// step's [`IdempotencyKey`](crate::journal::IdempotencyKey), for the undo
    /// record to keep: a rollback repeated after a crash (by recovery)
    /// then passes the same key to the API it calls.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # use transaction_manager::journal::IdempotencyKey;
    /// struct Delete(IdempotencyKey);
    /// impl Rollback<Vec<String>> for Delete {
    ///     type Error = &'static str;
    ///     async fn rollback(&mut self, undone: &mut Vec<String>) -> Result<(), &'static str> {
    ///         undone.push(self.0.to_string());
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
    /// let mut undone = Vec::new();
    /// let tx = manager.transaction("t").with_id(TransactionId::new(3)).fixed::<Delete, 2>();
    /// let err = clock.block_on(tx.run_with(&mut undone, async |tx| {
    ///     tx.step("create").execute(|| async { Ok::<_, &str>(()) }).undo_keyed(|(), key| Delete(key)).await?;
    ///     tx.step("fails").run(|| async { Err::<(), _>("boom") }).await
    /// })).unwrap_err();
    /// assert_eq!(undone, ["tx-3.0-000000000000002a"]);
    /// ```
    pub fn undo_keyed<Mk>(self, make_undo: Mk) -> impl Future<Output = Result<F::Output, StepError<F::Error>>>
    where
        Mk: FnOnce(&F::Output, crate::durable::id::IdempotencyKey) -> U,
    {
        self.run_with_undo(|RetryAlways| UndoKeyed(Some(make_undo)))
    }

    /// Like [`undo`](Execute::undo), for uncertain failures too (see
    /// [`rollback_uncertain`](Execute::rollback_uncertain)): `make_undo`
    /// gets `Maybe::Completed(&output)` or `Maybe::Uncertain`. The undo
    /// record must be idempotent. `make_undo` is called before the first
    /// attempt (`Maybe::Uncertain`, owed while the attempt is in flight),
    /// again before the next attempt if one failed cleanly (its record was
    /// taken back), and once more when the step completes. A panic in it
    /// fails the step for good, for a group member too.
    pub fn undo_uncertain<Mk>(self, make_undo: Mk) -> impl Future<Output = Result<F::Output, StepError<F::Error>>>
    where
        Mk: FnMut(Maybe<&F::Output>) -> U,
    {
        self.run_with_undo(|RetryAlways| UndoMaybe(make_undo))
    }
}
