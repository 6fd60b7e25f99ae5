//! Parallel groups: several steps of one transaction run at the same time,
//! from the transaction's own task (no spawning, so no allocator and no
//! executor needed: it works on embassy as on tokio).
//!
//! A group is one future that owns its members' attempt futures and polls
//! them in turn; between polls it does each member's bookkeeping (records,
//! undo records, hooks, retries) with the transaction it borrows, as the
//! one-step engine does. Undo records join the ledger in the order members
//! complete, so rollback undoes them in reverse completion order.

use core::fmt;

use crate::durable::entry::EntryKind;
use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use pin_project_lite::pin_project;

use crate::engine::rollback::Panicked;
use crate::engine::{
    attempt::{AttemptText, is_last_attempt, outcome_of},
    transaction::NoContext,
};
use crate::ledger::book::UndoRecord;
use crate::observe::hooks::hook_call;
use crate::util::text::caught;
use crate::{
    durable::id::IdempotencyKey,
    engine::{abandon::AbandonPolicy, attempt::Maybe, manager::TransactionManager, transaction::Transaction},
    ledger::{
        error::{StepError, StepErrorKind},
        rollback::{Rollback, RollbackFn},
    },
    observe::hooks::{Hooks, StepEvent},
    timing::{
        clock::Clock,
        condition::{RetryAlways, RetryCondition},
        retry::RetryPolicy,
    },
    util::{
        storage::{List, Storage},
        text::Name,
    },
};

pub use driver::{Lend, Member, Members};

/// Starts building a member of a parallel group named `name`: set its
/// options, then its execute function ([`MemberBuilder::execute`]), then
/// optionally its rollback, and pass it to [`Transaction::parallel`] or
/// [`Group::run`] with the other members, in a tuple, an array or (with
/// `alloc`) a `Vec` — or return them from the closure given to
/// [`Transaction::parallel_with`] or [`Group::run_with`], which lends the
/// transaction's context to the members ([`MemberBuilder::execute_on`]).
///
/// Options not set default to the manager's, as for [`Transaction::step`].
///
/// ```
/// # use transaction_manager::*;
/// # use transaction_manager::group::member;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
///     let (a, b) = tx.parallel((
///         member("a").execute(|| async { Ok::<_, &str>(1) }),
///         member("b").max_retries(2).execute(|| async { Ok::<_, &str>("two") }),
///     )).await?;
///     Ok::<_, StepError<&str>>((a, b))
/// }));
/// assert_eq!(done.unwrap().into_value(), (1, "two"));
/// ```
pub fn member(name: impl Into<Name>) -> MemberBuilder {
    MemberBuilder {
        settings: Settings {
            name: name.into(),
            timeout: None,
            retry: None,
            max_retries: None,
            rollback_timeout: None,
            rollback_retry: None,
        },
    }
}

/// A member's options, collected before the group runs; unset ones are
/// the manager's. When the group starts they are resolved in place (all
/// `Some`), so the member keeps one copy of its policies.
#[derive(Debug)]
pub struct Settings {
    name: Name,
    timeout: Option<Option<Duration>>,
    retry: Option<RetryPolicy>,
    max_retries: Option<u32>,
    rollback_timeout: Option<Option<Duration>>,
    rollback_retry: Option<RetryPolicy>,
}

impl Settings {
    fn timeout(&self) -> Option<Duration> {
        self.timeout.flatten()
    }

    /// The rollback's retry policy and timeout (set when the member enrolled).
    fn rollback_policy(&self) -> (RetryPolicy, crate::timing::future::Timeout) {
        let timeout = crate::timing::future::Timeout::new(self.rollback_timeout.flatten());
        (self.rollback_retry.unwrap_or_default(), timeout)
    }

    fn retry(&self) -> RetryPolicy {
        self.retry.unwrap_or_default()
    }
}

/// A group member being configured. Made by [`member`].
#[derive(Debug)]
#[must_use = "a member does nothing until it is given an execute function and run in a group"]
pub struct MemberBuilder {
    settings: Settings,
}

impl MemberBuilder {
    /// Gives each execute attempt at most `timeout` (see [`Step::timeout`](crate::step::Step::timeout)).
    pub fn timeout(mut self, timeout: impl Into<Duration>) -> Self {
        self.settings.timeout = Some(Some(timeout.into()));
        self
    }

    /// No timeout, even if the manager sets a default one.
    pub fn no_timeout(mut self) -> Self {
        self.settings.timeout = Some(None);
        self
    }

    /// Retries and backoff of execute (and, unless set separately, of the
    /// rollback).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.settings.retry = Some(policy);
        self
    }

    /// Changes only the number of retries of the member's policy (the
    /// manager's, unless [`retry`](MemberBuilder::retry) set one).
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// let clock = ManualClock::new();
    /// let every_100ms = RetryPolicy::new().with_initial_interval(Duration::from_millis(100));
    /// let manager = TransactionManager::new(&clock).with_retry(every_100ms);
    /// let mut calls = 0;
    /// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
    ///     let (n,) = tx.parallel((member("flaky").max_retries(2).execute(|| {
    ///         calls += 1;
    ///         let n = calls;
    ///         async move { if n < 3 { Err("busy") } else { Ok(n) } }
    ///     }),)).await?;
    ///     Ok::<_, StepError<&str>>(n)
    /// }));
    /// assert_eq!(done.unwrap().into_value(), 3);
    /// assert_eq!(clock.now(), Duration::from_millis(300)); // 100 ms, then 200 ms
    /// ```
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.settings.max_retries = Some(retries);
        self
    }

    /// The rollback's per-attempt timeout (`None`: none), instead of the
    /// member's.
    pub fn rollback_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.rollback_timeout = Some(timeout);
        self
    }

    /// The rollback's retries and backoff, instead of the member's.
    pub fn rollback_retry(mut self, policy: RetryPolicy) -> Self {
        self.settings.rollback_retry = Some(policy);
        self
    }

    /// Gives the member its execute function, called once per attempt:
    /// `|| api.reserve_ip()`. The function reaches shared clients through
    /// captures (`Arc`s, references); to borrow a part of the
    /// transaction's context mutably, use
    /// [`execute_on`](MemberBuilder::execute_on).
    pub fn execute<F, Fut, Out, E>(self, execute: F) -> Member<Attempts<F>, NoUndo>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Out, E>>,
        E: fmt::Display,
    {
        Member::new(self.settings, Attempts(execute), NoUndo)
    }

    /// Like [`execute`](MemberBuilder::execute), but each attempt receives
    /// the member's [`IdempotencyKey`] (the transaction's id and the
    /// member's step index, known once its group starts), to pass to the
    /// API it calls.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
    /// let done = clock.block_on(manager.transaction("t").with_id(TransactionId::new(2)).fixed::<NoRollback, 2>().run(async |tx| {
    ///     let keys = tx.parallel((
    ///         member("a").execute_keyed(|key| async move { Ok::<_, &str>(key.to_string()) }),
    ///         member("b").execute_keyed(|key| async move { Ok::<_, &str>(key.to_string()) }),
    ///     )).await?;
    ///     Ok::<_, StepError<&str>>(keys)
    /// }));
    /// assert_eq!(done.unwrap().into_value(), ("tx-2.0-000000000000002a".to_string(), "tx-2.1-000000000000002a".to_string()));
    /// ```
    pub fn execute_keyed<F, Fut, Out, E>(self, execute: F) -> Member<KeyedAttempts<F>, NoUndo>
    where
        F: FnMut(IdempotencyKey) -> Fut,
        Fut: Future<Output = Result<Out, E>>,
        E: fmt::Display,
    {
        Member::new(self.settings, KeyedAttempts(execute), NoUndo)
    }

    /// Gives the member a part it borrows mutably (`&mut board.i2c`) and
    /// its execute function, which gets the part for each attempt:
    /// `async |bus: &mut I2c| bus.init().await`.
    ///
    /// This is how members reach the transaction's context: in
    /// [`Group::run_with`] (or [`Transaction::parallel_with`]) a closure
    /// receives the context and hands disjoint parts of it to the members,
    /// which run at the same time, each with its own part. The part can
    /// also be anything else the body can lend.
    ///
    /// An attempt that the group stops (its timeout, or
    /// [`cancel_on_failure`](Group::cancel_on_failure)) drops the future
    /// and gives the part back for the next attempt. An attempt that
    /// panics (caught with `std`) takes the part with it: the member's
    /// later attempts fail as panics too.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// struct Board { i2c: u8, spi: u8 }
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let mut board = Board { i2c: 0, spi: 0 };
    /// let done = clock.block_on(manager.transaction("up").fixed::<NoRollback, 2>().run_with(&mut board, async |tx| {
    ///     let clock = tx.clock();
    ///     tx.parallel_with(|board: &mut Board| {
    ///         let Board { i2c, spi } = board;
    ///         (
    ///             member("i2c").execute_on(i2c, async move |i2c: &mut u8| {
    ///                 clock.sleep(Duration::from_millis(3)).await;
    ///                 *i2c = 1;
    ///                 Ok::<_, &str>(())
    ///             }),
    ///             member("spi").execute_on(spi, async move |spi: &mut u8| {
    ///                 clock.sleep(Duration::from_millis(5)).await;
    ///                 *spi = 2;
    ///                 Ok::<_, &str>(())
    ///             }),
    ///         )
    ///     }).await?;
    ///     Ok::<_, StepError<&str>>(clock.now())
    /// }));
    /// assert_eq!(done.unwrap().into_value(), Duration::from_millis(5), "at the same time: 5 ms, not 8");
    /// assert_eq!((board.i2c, board.spi), (1, 2));
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn execute_on<'p, P, F, Out, E>(
        self,
        part: &'p mut P,
        execute: F,
    ) -> Member<Lent<'p, P, F, impl Future<Output = LentEnd<'p, P, F, Out, E>>>, NoUndo>
    where
        P: ?Sized + 'p,
        F: AsyncFnMut(&mut P) -> Result<Out, E> + 'p,
        E: fmt::Display,
    {
        let lent =
            Lent { part: Some(part), execute: Some(execute), stopping: None, attempt: lent_attempt::<P, F, Out, E> };
        Member::new(self.settings, lent, NoUndo)
    }
}

/// What an attempt of a member with a part ([`MemberBuilder::execute_on`])
/// ends with: its result (`None` if the group stopped it), and the part
/// and execute function, handed back for the next attempt.
pub type LentEnd<'p, P, F, Out, E> = (Option<Result<Out, E>>, &'p mut P, F);

/// One attempt of a member with a part: the part and the execute function
/// go into the attempt, and come back out when it ends — also when the
/// group stops it, which it does by raising `stopping` and polling once.
async fn lent_attempt<'p, P, F, Out, E>(
    part: &'p mut P,
    mut execute: F,
    stopping: Option<&'p AtomicBool>,
) -> LentEnd<'p, P, F, Out, E>
where
    P: ?Sized + 'p,
    F: AsyncFnMut(&mut P) -> Result<Out, E> + 'p,
{
    let result = Stoppable { stopping, attempt: execute(&mut *part) }.await;
    (result, part, execute)
}

pin_project! {
    /// An attempt that ends with `None`, dropping the user's future, when
    /// polled while the group stops it.
    struct Stoppable<'s, Fut> {
        stopping: Option<&'s AtomicBool>,
        #[pin]
        attempt: Fut,
    }
}

impl<Fut: Future> Future for Stoppable<'_, Fut> {
    type Output = Option<Fut::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.stopping.is_some_and(|stopping| stopping.load(Ordering::Relaxed)) {
            return Poll::Ready(None);
        }
        this.attempt.poll(cx).map(Some)
    }
}

/// A member's execute function with the part it borrows. Made by
/// [`MemberBuilder::execute_on`].
pub struct Lent<'p, P: ?Sized, F, A> {
    /// Here between attempts; in the attempt while it runs.
    part: Option<&'p mut P>,
    execute: Option<F>,
    /// The transaction's stop flag, lent by the group before it starts.
    stopping: Option<&'p AtomicBool>,
    attempt: fn(&'p mut P, F, Option<&'p AtomicBool>) -> A,
}

impl<P: ?Sized, F, A> fmt::Debug for Lent<'_, P, F, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lent").field("lent", &self.part.is_some()).finish_non_exhaustive()
    }
}

impl<'p, P: ?Sized, F, A, Out, E> MemberFn for Lent<'p, P, F, A>
where
    A: Future<Output = LentEnd<'p, P, F, Out, E>>,
    E: fmt::Display,
{
    type Output = Out;
    type Raw = E;
    type Error = E;
    type Attempt = A;

    fn start(&mut self, _: IdempotencyKey) -> A {
        match (self.part.take(), self.execute.take()) {
            (Some(part), Some(execute)) => (self.attempt)(part, execute, self.stopping),
            // Only after an attempt that panicked: it took the part along.
            _ => panic!("the member's part was lost with an attempt that panicked"),
        }
    }

    fn finish(&mut self, (result, part, execute): LentEnd<'p, P, F, Out, E>) -> Option<Result<Out, E>> {
        self.part = Some(part);
        self.execute = Some(execute);
        result
    }

    fn stopping(&mut self, on: bool) -> bool {
        match self.stopping {
            Some(stopping) => {
                stopping.store(on, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    fn convert(&mut self, raw: E) -> E {
        raw
    }
}

/// Receives the transaction's stop flag before the group starts; see
/// [`Lend`].
pub trait LendFlag<'s> {
    /// Keeps `stopping`.
    fn lend(&mut self, stopping: &'s AtomicBool);
}

impl<'s, F> LendFlag<'s> for Attempts<F> {
    fn lend(&mut self, _: &'s AtomicBool) {}
}

impl<'s, F> LendFlag<'s> for KeyedAttempts<F> {
    fn lend(&mut self, _: &'s AtomicBool) {}
}

impl<'s, F: LendFlag<'s>, G> LendFlag<'s> for MapErrors<F, G> {
    fn lend(&mut self, stopping: &'s AtomicBool) {
        self.inner.lend(stopping);
    }
}

impl<'s: 'p, 'p, P: ?Sized, F, A> LendFlag<'s> for Lent<'p, P, F, A> {
    fn lend(&mut self, stopping: &'s AtomicBool) {
        self.stopping = Some(stopping);
    }
}

/// How a member makes its attempts: its execute function, and how its
/// errors are converted. Implemented by [`Attempts`], [`KeyedAttempts`],
/// [`Lent`] and [`MapErrors`]; you do not implement it yourself.
pub trait MemberFn {
    /// What a successful attempt returns.
    type Output;
    /// What an attempt's future fails with, before conversion.
    type Raw;
    /// The member's error type, after conversion.
    type Error: fmt::Display;
    /// One attempt.
    type Attempt: Future;

    /// Starts an attempt of the member whose idempotency key is `key`.
    fn start(&mut self, key: IdempotencyKey) -> Self::Attempt;

    /// Takes what an attempt ended with: its result, or `None` if the
    /// group stopped it (see [`stopping`](MemberFn::stopping)).
    fn finish(&mut self, ended: <Self::Attempt as Future>::Output) -> Option<Result<Self::Output, Self::Raw>>;

    /// Raises (`on`) or lowers the flag that makes the attempt in flight
    /// end at its next poll instead of being dropped; returns whether this
    /// member has one.
    fn stopping(&mut self, on: bool) -> bool {
        let _ = on;
        false
    }

    /// Converts a failed attempt's error.
    fn convert(&mut self, raw: Self::Raw) -> Self::Error;
}

/// An execute function `FnMut() -> Future` of a group member.
#[derive(Debug)]
pub struct Attempts<F>(F);

impl<F, Fut, Out, E> MemberFn for Attempts<F>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Out, E>>,
    E: fmt::Display,
{
    type Output = Out;
    type Raw = E;
    type Error = E;
    type Attempt = Fut;

    fn start(&mut self, _: IdempotencyKey) -> Fut {
        (self.0)()
    }

    fn finish(&mut self, ended: Result<Out, E>) -> Option<Result<Out, E>> {
        Some(ended)
    }

    fn convert(&mut self, raw: E) -> E {
        raw
    }
}

/// An execute function `FnMut(IdempotencyKey) -> Future` of a group
/// member. Made by [`MemberBuilder::execute_keyed`].
#[derive(Debug)]
pub struct KeyedAttempts<F>(F);

impl<F, Fut, Out, E> MemberFn for KeyedAttempts<F>
where
    F: FnMut(IdempotencyKey) -> Fut,
    Fut: Future<Output = Result<Out, E>>,
    E: fmt::Display,
{
    type Output = Out;
    type Raw = E;
    type Error = E;
    type Attempt = Fut;

    fn start(&mut self, key: IdempotencyKey) -> Fut {
        (self.0)(key)
    }

    fn finish(&mut self, ended: Result<Out, E>) -> Option<Result<Out, E>> {
        Some(ended)
    }

    fn convert(&mut self, raw: E) -> E {
        raw
    }
}

/// A member's execute function whose errors are converted. Made by
/// [`Member::map_err`] and [`Member::err_into`].
pub struct MapErrors<F, G> {
    inner: F,
    map: G,
}

impl<F: fmt::Debug, G> fmt::Debug for MapErrors<F, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapErrors").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<F, G, E2> MemberFn for MapErrors<F, G>
where
    F: MemberFn,
    G: FnMut(F::Error) -> E2,
    E2: fmt::Display,
{
    type Output = F::Output;
    type Raw = F::Raw;
    type Error = E2;
    type Attempt = F::Attempt;

    fn start(&mut self, key: IdempotencyKey) -> F::Attempt {
        self.inner.start(key)
    }

    fn finish(&mut self, ended: <F::Attempt as Future>::Output) -> Option<Result<F::Output, F::Raw>> {
        self.inner.finish(ended)
    }

    fn stopping(&mut self, on: bool) -> bool {
        self.inner.stopping(on)
    }

    fn convert(&mut self, raw: F::Raw) -> E2 {
        let error = self.inner.convert(raw);
        (self.map)(error)
    }
}

/// The undo record a member owes for its output, if any: how its rollback
/// was given. Implemented by [`NoUndo`], [`OnCompleted`], [`OnCompletedUsing`],
/// [`OnUncertain`], [`UndoWith`], [`UndoKeyed`] and [`UndoMaybe`]; you do not implement it
/// yourself.
pub trait MemberUndo<Out, U> {
    /// Whether the member may owe an undo record (it needs room for one).
    fn has_undo(&self) -> bool;

    /// The undo record owed for `output`, if any, by the member whose
    /// idempotency key is `key`.
    fn make(&mut self, output: Maybe<&Out>, key: IdempotencyKey) -> Option<U>;
}

/// A member without a rollback.
#[derive(Clone, Copy, Debug)]
pub struct NoUndo;

impl<Out, U> MemberUndo<Out, U> for NoUndo {
    fn has_undo(&self) -> bool {
        false
    }

    fn make(&mut self, _: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        None
    }
}

/// A rollback closure given the member's output, and its retry condition
/// `RW`. Made by [`Member::rollback`].
#[derive(Debug)]
pub struct OnCompleted<G, RW = RetryAlways>(Option<(G, RW)>);

impl<Out: Clone, U, G, RW> MemberUndo<Out, U> for OnCompleted<G, RW>
where
    U: From<RollbackFn<G, Out, RW>>,
{
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        let output = output.completed()?;
        let (rollback, condition) = self.0.take()?;
        Some(U::from(RollbackFn::new(rollback, output.clone()).with_retry_if(condition)))
    }
}

/// A rollback closure given a shared state and the member's output, and
/// its retry condition `RW`. Made by [`Member::rollback_using`].
#[derive(Debug)]
pub struct OnCompletedUsing<St, G, RW = RetryAlways>(St, Option<(G, RW)>);

impl<Out: Clone, U, St: Clone, G, RW> MemberUndo<Out, U> for OnCompletedUsing<St, G, RW>
where
    U: From<RollbackFn<G, (St, Out), RW>>,
{
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        let output = output.completed()?;
        let (rollback, condition) = self.1.take()?;
        Some(U::from(RollbackFn::new(rollback, (self.0.clone(), output.clone())).with_retry_if(condition)))
    }
}

/// A rollback closure that also covers an uncertain outcome, and its retry
/// condition `RW`. Made by [`Member::rollback_uncertain`].
#[derive(Debug)]
pub struct OnUncertain<G, RW = RetryAlways>(G, RW);

impl<Out: Clone, U, G: Clone, RW: Clone> MemberUndo<Out, U> for OnUncertain<G, RW>
where
    U: From<RollbackFn<G, Maybe<Out>, RW>>,
{
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        Some(U::from(RollbackFn::new(self.0.clone(), output.cloned()).with_retry_if(self.1.clone())))
    }
}

impl<G> OnCompleted<G> {
    fn retry_if<RW>(self, condition: RW) -> OnCompleted<G, RW> {
        OnCompleted(self.0.map(|(rollback, RetryAlways)| (rollback, condition)))
    }
}

impl<St, G> OnCompletedUsing<St, G> {
    fn retry_if<RW>(self, condition: RW) -> OnCompletedUsing<St, G, RW> {
        OnCompletedUsing(self.0, self.1.map(|(rollback, RetryAlways)| (rollback, condition)))
    }
}

impl<G> OnUncertain<G> {
    fn retry_if<RW>(self, condition: RW) -> OnUncertain<G, RW> {
        OnUncertain(self.0, condition)
    }
}

/// An undo record (data) made from the member's output. Made by
/// [`Member::undo`].
#[derive(Debug)]
pub struct UndoWith<Mk>(Option<Mk>);

impl<Out, U, Mk: FnOnce(&Out) -> U> MemberUndo<Out, U> for UndoWith<Mk> {
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        let output = output.completed()?;
        Some(self.0.take()?(output))
    }
}

/// An undo record (data) made from the member's output and its idempotency
/// key. Made by [`Member::undo_keyed`].
#[derive(Debug)]
pub struct UndoKeyed<Mk>(Option<Mk>);

impl<Out, U, Mk: FnOnce(&Out, IdempotencyKey) -> U> MemberUndo<Out, U> for UndoKeyed<Mk> {
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, key: IdempotencyKey) -> Option<U> {
        let output = output.completed()?;
        Some(self.0.take()?(output, key))
    }
}

/// An undo record (data) that also covers an uncertain outcome. Made by
/// [`Member::undo_uncertain`].
#[derive(Debug)]
pub struct UndoMaybe<Mk>(Mk);

impl<Out, U, Mk: FnMut(Maybe<&Out>) -> U> MemberUndo<Out, U> for UndoMaybe<Mk> {
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        Some((self.0)(output))
    }
}

/// What a group does with its other members when one fails for good.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum OnMemberFailure {
    /// Let them run to completion; what they complete counts (and is rolled
    /// back if the body then fails).
    #[default]
    Finish,
    /// Drop their attempts: they fail as [`StepErrorKind::Cancelled`].
    Cancel,
}

/// A parallel group being configured. Made by [`Transaction::group`]; run
/// it with [`Group::run`], or with [`Group::run_with`] for members that
/// borrow parts of the context. [`Transaction::parallel`] and
/// [`Transaction::parallel_with`] run one with the defaults.
#[must_use = "a group does nothing until it is run"]
pub struct Group<'g, 't, M, Ctx: ?Sized, U, S: Storage> {
    tx: &'g mut Transaction<'t, M, Ctx, U, S>,
    on_failure: OnMemberFailure,
    /// Tag the members' records for concurrent rollbacks.
    concurrent_rollbacks: bool,
}

impl<M, Ctx: ?Sized, U, S: Storage> Group<'_, '_, M, Ctx, U, S> {
    /// When a member fails for good, cancel the members still running
    /// instead of letting them finish: their attempts in flight are dropped,
    /// so they fail with [`StepErrorKind::Cancelled`] and an uncertain
    /// outcome (rolled back, with [`Maybe::Uncertain`], only those that
    /// opted in with [`Member::rollback_uncertain`] or
    /// [`Member::undo_uncertain`]). Members waiting to retry fail cleanly.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
    ///     let clock = tx.clock();
    ///     tx.group().cancel_on_failure().run((
    ///         member("slow").execute(move || async move { clock.sleep(Duration::from_secs(9)).await; Ok::<_, &str>(()) }),
    ///         member("broken").execute(|| async { Err::<(), _>("no") }),
    ///     )).await?;
    ///     Ok::<_, StepError<&str>>(())
    /// })).unwrap_err();
    /// assert_eq!(err.cause().step(), "broken");
    /// assert_eq!(err.summary().steps()[0].status(), StepStatus::Failed);
    /// assert_eq!(clock.now(), Duration::ZERO, "the slow member was not waited for");
    /// ```
    pub fn cancel_on_failure(mut self) -> Self {
        self.on_failure = OnMemberFailure::Cancel;
        self
    }
}

#[cfg(feature = "alloc")]
impl<M, U, S: Storage> Group<'_, '_, M, (), U, S> {
    /// If the transaction rolls back, roll back this group's completed
    /// members at the same time (Temporal's `parallelCompensation`), each
    /// with its own retries and timeout, instead of one after another.
    /// They still start after every later step was rolled back, and the
    /// steps before the group wait for all of them.
    ///
    /// Only in a transaction without a context ([`run`](crate::TransactionBuilder::run),
    /// [`TransactionManager::run`]): a context is lent `&mut` to one
    /// rollback at a time, so with [`run_with`](crate::TransactionBuilder::run_with)
    /// this method does not exist. With `alloc` (each rollback in flight is
    /// boxed).
    ///
    /// - Hooks: `on_step_rollback` / `on_step_rollback_failure` of the
    ///   members run once all of them ended, in the order they ended; the
    ///   hook of a failed attempt that is retried runs as it happens.
    /// - [`RollbackFailurePolicy::Stop`](crate::rollback::RollbackFailurePolicy::Stop):
    ///   the group's rollbacks all run; a failure among them stops the
    ///   steps before the group.
    /// - Recovery from a [`Journal`](crate::journal::Journal) and rollbacks finished
    ///   for a dropped transaction ([`Abandoned`](crate::abandon::Abandoned)) run
    ///   them one after another; a rollback that had ended before the drop
    ///   is not run again.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let time = &clock;
    /// let slow_undo = move |_| async move { time.sleep(Duration::from_secs(3)).await; Ok::<_, &str>(()) };
    /// // `local()`: the rollbacks borrow the (single-threaded) manual clock.
    /// let err = clock.block_on(manager.transaction("provision").local().run(async |tx| {
    ///     tx.group().roll_back_concurrently().run((
    ///         member("create_vm").execute(|| async { Ok::<_, &str>(()) }).rollback(slow_undo),
    ///         member("reserve_ip").execute(|| async { Ok::<_, &str>(()) }).rollback(slow_undo),
    ///     )).await?;
    ///     tx.step("attach").run(|| async { Err::<(), _>("no route") }).await?;
    ///     Ok::<_, StepError<&str>>(())
    /// })).unwrap_err();
    /// assert!(err.rollback_state().is_clean());
    /// assert_eq!(clock.now(), Duration::from_secs(3), "the two rollbacks ran at the same time");
    /// ```
    pub fn roll_back_concurrently(mut self) -> Self {
        self.concurrent_rollbacks = true;
        self.tx.fork = crate::engine::rollback::Fork::UNIT;
        self
    }
}

impl<'g, C, H, A, J, Ctx: ?Sized, U, S: Storage> Group<'g, '_, TransactionManager<C, H, A, J>, Ctx, U, S>
where
    C: Clock,
    H: Hooks,
    U: Rollback<Ctx>,
    A: AbandonPolicy<C, H, Ctx, U, S>,
    J: crate::engine::binding::JournalFor<U>,
{
    /// Runs the members at the same time and returns their values, as a
    /// tuple for a tuple of members, an array for an array, a `Vec` for a
    /// `Vec`; or, if any failed for good, a [`GroupError`] with the first
    /// failure and every other.
    ///
    /// Room for every member is reserved before any starts: a group that
    /// does not fit fails with
    /// [`CapacityExceeded`](StepErrorKind::CapacityExceeded) and runs
    /// nothing. Each member gets its own step record (consecutive indices,
    /// in the order given), retries, timeout and rollback. Members must all
    /// have one error type: convert with [`Member::map_err`] or
    /// [`Member::err_into`].
    ///
    /// Hooks are awaited in line, as for steps: while one runs, the
    /// members' attempts are not polled (their timeouts keep counting).
    /// The group's error lists the other failures in member order.
    pub fn run<Ms, E>(self, members: Ms) -> impl Future<Output = Result<Ms::Output, GroupError<E, S>>>
    where
        Ms: Members<U, E> + Lend<'g>,
        E: fmt::Display,
    {
        let (_, stopping, detached) = self.tx.split();
        // Not an `async fn`: a wrapper would keep a second copy of the members.
        crate::timing::future::outlined(detached.run_group(self.on_failure, self.concurrent_rollbacks, move || {
            let mut members = members;
            members.lend(stopping);
            members
        }))
    }

    /// Runs the members that `build` makes from the transaction's context:
    /// `build` receives `&mut Ctx` and hands disjoint parts of it to the
    /// members ([`MemberBuilder::execute_on`]), which use them at the same
    /// time. Otherwise as [`run`](Group::run).
    ///
    /// The group's own bookkeeping (records, undo records, hooks, journal)
    /// never needs the context, so the members have it for the whole group.
    /// Their rollbacks are undo records as usual
    /// ([`Member::undo`]): rolled back later with the whole context.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// struct Board { i2c: bool, spi: bool }
    /// enum Undo { I2cOff, SpiOff }
    /// impl Rollback<Board> for Undo {
    ///     type Error = &'static str;
    ///     async fn rollback(&mut self, board: &mut Board) -> Result<(), &'static str> {
    ///         match self { Undo::I2cOff => board.i2c = false, Undo::SpiOff => board.spi = false }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let mut board = Board { i2c: false, spi: false };
    /// let err = clock.block_on(manager.transaction("up").fixed::<Undo, 2>().run_with(&mut board, async |tx| {
    ///     tx.group().run_with(|board: &mut Board| {
    ///         let Board { i2c, spi } = board;
    ///         (
    ///             member("i2c").execute_on(i2c, async |on: &mut bool| { *on = true; Ok(()) }).undo(|_| Undo::I2cOff),
    ///             member("spi").execute_on(spi, async |_: &mut bool| Err::<(), _>("no clock")).undo(|_| Undo::SpiOff),
    ///         )
    ///     }).await?;
    ///     Ok::<_, StepError<&str>>(())
    /// })).unwrap_err();
    /// assert_eq!(err.cause().step(), "spi");
    /// assert_eq!(err.summary().steps()[0].status(), StepStatus::RolledBack);
    /// assert!(!board.i2c, "rolled back with the board");
    /// ```
    pub fn run_with<B, Ms, E>(self, build: B) -> impl Future<Output = Result<Ms::Output, GroupError<E, S>>>
    where
        B: FnOnce(&'g mut Ctx) -> Ms,
        Ms: Members<U, E> + Lend<'g>,
        E: fmt::Display,
    {
        let (ctx, stopping, detached) = self.tx.split();
        // The members are built inside the group's future, where they stay:
        // one copy of them, not the argument and the pinned one.
        crate::timing::future::outlined(detached.run_group(self.on_failure, self.concurrent_rollbacks, move || {
            let mut members = build(ctx);
            members.lend(stopping);
            members
        }))
    }
}

impl<'t, C, H, A, J, Ctx: ?Sized, U, S: Storage> Transaction<'t, TransactionManager<C, H, A, J>, Ctx, U, S>
where
    C: Clock,
    H: Hooks,
    U: Rollback<Ctx>,
    A: AbandonPolicy<C, H, Ctx, U, S>,
    J: crate::engine::binding::JournalFor<U>,
{
    /// Starts configuring a parallel group; see [`Group`]. For the default
    /// options, [`parallel`](Transaction::parallel) is shorter.
    pub fn group(&mut self) -> Group<'_, 't, TransactionManager<C, H, A, J>, Ctx, U, S> {
        Group { tx: self, on_failure: OnMemberFailure::Finish, concurrent_rollbacks: false }
    }

    /// Runs `members` (made with [`member`]) at the same time, from this
    /// task, and returns their values; see [`Group::run`]. When a member
    /// fails for good, the others run to completion first.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// # use core::time::Duration;
    /// # use std::sync::{Arc, Mutex};
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let undone = Arc::new(Mutex::new(Vec::new()));
    /// let err = clock.block_on(manager.run("provision", async |tx| {
    ///     let clock = tx.clock();
    ///     let (vm, ip) = tx.parallel((
    ///         member("create_vm")
    ///             .execute(move || async move { clock.sleep(Duration::from_secs(2)).await; Ok::<_, &str>("vm-1") })
    ///             .rollback_using(&undone, |(undone, vm)| async move { undone.lock().unwrap().push(vm); Ok::<_, &str>(()) }),
    ///         member("reserve_ip").execute(|| async { Err::<&str, _>("pool exhausted") }),
    ///     )).await?;
    ///     Ok::<_, StepError<&str>>((vm, ip))
    /// })).unwrap_err();
    /// assert_eq!(err.cause().to_string(), "step `reserve_ip` failed: pool exhausted");
    /// assert_eq!(*undone.lock().unwrap(), ["vm-1"]); // it finished, then was rolled back
    /// # }
    /// ```
    pub fn parallel<'g, Ms, E>(&'g mut self, members: Ms) -> impl Future<Output = Result<Ms::Output, GroupError<E, S>>>
    where
        Ms: Members<U, E> + Lend<'g>,
        E: fmt::Display,
    {
        self.group().run(members)
    }

    /// Runs the members that `build` makes from the transaction's context,
    /// each borrowing its own part of it; see [`Group::run_with`] and
    /// [`MemberBuilder::execute_on`]. When a member fails for good, the
    /// others run to completion first.
    pub fn parallel_with<'g, B, Ms, E>(
        &'g mut self,
        build: B,
    ) -> impl Future<Output = Result<Ms::Output, GroupError<E, S>>>
    where
        B: FnOnce(&'g mut Ctx) -> Ms,
        Ms: Members<U, E> + Lend<'g>,
        E: fmt::Display,
    {
        self.group().run_with(build)
    }
}

/// The group engine runs on a handle without the context
/// ([`Transaction::split`]): the members may hold parts of the context
/// while it runs, and one copy of the engine serves groups with and
/// without them.
impl<'t, C, H, A, J, U, S: Storage> Transaction<'t, TransactionManager<C, H, A, J>, NoContext, U, S>
where
    C: Clock,
    H: Hooks,
    J: crate::engine::binding::JournalFor<U>,
{
    /// The group engine: reserve, start, poll, bookkeeping, until every
    /// member is done. Generic over the members only where it must be
    /// (pinning and outputs); the bookkeeping helpers below take a
    /// `dyn Slot` and are compiled once per transaction type.
    ///
    /// Takes a function that makes the members: members built inside this
    /// future are kept once (an `async fn` keeps its arguments for good,
    /// next to the pinned copy it polls).
    ///
    /// Not an `async fn`: one moves its arguments into locals, and the
    /// handle (136 bytes on 32-bit targets) would be kept twice for good.
    /// An `async move` block uses what it captures where it is.
    #[allow(clippy::manual_async_fn)]
    fn run_group<Ms, E>(
        mut self,
        on_failure: OnMemberFailure,
        concurrent_rollbacks: bool,
        make: impl FnOnce() -> Ms,
    ) -> impl Future<Output = Result<Ms::Output, GroupError<E, S>>>
    where
        Ms: Members<U, E>,
        E: fmt::Display,
    {
        async move {
            if self.past_deadline() {
                // No step starts at or after the deadline: wait for the
                // interrupt, which is due and stops the body.
                core::future::pending::<()>().await;
            }
            self.settle_dropped_step();
            // No `members` local: a value moved out of keeps its place in the
            // future until its scope ends (576 bytes for the firmware's two).
            let mut pinned = pin!(make().into_pinned());
            let n = Ms::count_pinned(pinned.as_mut());
            // Reserve: every member fits, or none runs.
            let base = self.ledger.summary.steps.len();
            let capacity = S::CAPACITY.unwrap_or(usize::MAX);
            let step_room = capacity.saturating_sub(base);
            let mut undo_room = capacity.saturating_sub(self.ledger.owed());
            for i in 0..n {
                let slot = Ms::slot(pinned.as_mut(), i);
                let refused = if slot.settings().name.as_str().is_empty() {
                    Some(StepErrorKind::EmptyName)
                } else if i >= step_room || (slot.has_undo() && undo_room == 0) {
                    Some(StepErrorKind::CapacityExceeded { capacity })
                } else {
                    None
                };
                if let Some(kind) = refused {
                    let info = &self.ledger.summary.info;
                    tm_error!(
                        "{} `{}`: group of {} step(s) refused at member `{}`: {}",
                        info.id,
                        info.operation,
                        n,
                        slot.settings().name,
                        kind.as_str()
                    );
                    let first = StepError { step: slot.settings().name.clone(), index: base + i, kind };
                    return Err(GroupError { first, others: S::List::default() });
                }
                if slot.has_undo() {
                    undo_room -= 1;
                }
            }
            for i in 0..n {
                self.enroll(Ms::slot(pinned.as_mut(), i));
            }
            #[cfg(feature = "alloc")]
            if concurrent_rollbacks {
                // One number per group: its first step's index, from 1.
                let group = u32::try_from(base + 1).unwrap_or(u32::MAX);
                self.ledger.roll_back_together(base, group);
            }
            #[cfg(not(feature = "alloc"))]
            let _ = concurrent_rollbacks;
            let info = &self.ledger.summary.info;
            tm_info!("{} `{}`: group of {} step(s) started", info.id, info.operation, n);

            let manager = self.manager;
            let hooks = &manager.hooks;
            let mut timer = pin!(None::<C::Sleep>);
            let mut timer_at: Option<Duration> = None;
            let mut first: Option<usize> = None;
            loop {
                // Start the members that are due: hook, then attempt.
                for i in 0..n {
                    if !Ms::slot(pinned.as_mut(), i).run_mut().is_due() || self.past_deadline() {
                        continue;
                    }
                    let (index, attempt) = self.next_attempt(Ms::slot(pinned.as_mut(), i));
                    let hook = if H::ENABLED {
                        let ledger = &self.ledger;
                        let event = StepEvent {
                            transaction: &ledger.summary.info,
                            step: &ledger.summary.steps[index],
                            attempt,
                        };
                        hook_call(hooks, || hooks.on_step_execute(&event)).await
                    } else {
                        Ok(())
                    };
                    let failed = match hook {
                        // A broken hook fails the attempt before it starts.
                        Err(panic) => Some((StepErrorKind::Panicked(panic), false)),
                        Ok(()) => match self.owe_uncertain(Ms::slot(pinned.as_mut(), i)) {
                            Err(kind) => Some((kind, true)),
                            Ok(owed) => {
                                // The intent is durable before the first attempt;
                                // if it cannot be written, the member does not run.
                                let refused = if J::ENABLED && owed && attempt == 1 {
                                    let refused = self.journal_step(index, EntryKind::Intent).await.err();
                                    if refused.is_some() {
                                        // Its record was taken back: nothing owed.
                                        Ms::slot(pinned.as_mut(), i).run_mut().owed = false;
                                    }
                                    refused
                                } else {
                                    None
                                };
                                match refused {
                                    Some(failure) => Some((StepErrorKind::Journal(failure), false)),
                                    None => self.start_attempt(Ms::slot(pinned.as_mut(), i)).map(|kind| (kind, true)),
                                }
                            }
                        },
                    };
                    if let Some((kind, ran)) = failed {
                        self.member_failed::<Ms, E>(pinned.as_mut(), i, kind, ran, on_failure, &mut first).await;
                    }
                }
                if (0..n).all(|i| Ms::slot(pinned.as_mut(), i).run_mut().is_done()) {
                    break;
                }
                let event = poll_fn(|cx| {
                    poll_members::<Ms, U, E, C>(&manager.clock, pinned.as_mut(), n, &mut timer, &mut timer_at, cx)
                })
                .await;
                match event {
                    Event::Ended(i, Ok(())) => {
                        let broke = self.member_completed(Ms::slot(pinned.as_mut(), i));
                        let (index, attempt) = {
                            let run = Ms::slot(pinned.as_mut(), i).run_mut();
                            run.phase = Phase::Done;
                            (run.index, run.attempt)
                        };
                        let owed = Ms::slot(pinned.as_mut(), i).run_mut().owed;
                        let unrecorded = if J::ENABLED && broke.is_none() && owed {
                            // Durable before the group's values reach the body.
                            self.journal_step(index, EntryKind::Done).await.err().map(StepErrorKind::Journal)
                        } else {
                            None
                        };
                        let result = match broke.or(unrecorded) {
                            Some(kind) => Err(kind),
                            None => self.success_hook(index, attempt).await,
                        };
                        if let Err(kind) = result {
                            // Its undo record, if made, stays owed.
                            self.member_done(Ms::slot(pinned.as_mut(), i), Some(kind), &mut first, i);
                            if Ms::slot(pinned.as_mut(), i).run_mut().released() {
                                self.release_rollback(index).await;
                            }
                            if on_failure == OnMemberFailure::Cancel {
                                self.cancel_members::<Ms, E>(pinned.as_mut(), n).await;
                            }
                        }
                    }
                    Event::Ended(i, Err(kind)) => {
                        self.member_failed::<Ms, E>(pinned.as_mut(), i, kind, true, on_failure, &mut first).await;
                    }
                    Event::TimedOut(i) => {
                        let timeout = {
                            let mut slot = Ms::slot(pinned.as_mut(), i);
                            slot.as_mut().stop();
                            slot.settings().timeout().unwrap_or_default()
                        };
                        let kind = StepErrorKind::TimedOut { timeout };
                        self.member_failed::<Ms, E>(pinned.as_mut(), i, kind, true, on_failure, &mut first).await;
                    }
                    Event::Due(i) => Ms::slot(pinned.as_mut(), i).run_mut().phase = Phase::Due,
                }
            }
            match first {
                None => match Ms::outputs(pinned.as_mut()) {
                    Some(outputs) => Ok(outputs),
                    // Every member completed, so every output is there.
                    None => Err(GroupError {
                        first: StepError { step: Name::from("(group)"), index: base, kind: StepErrorKind::Cancelled },
                        others: S::List::default(),
                    }),
                },
                Some(first) => {
                    let mut others = S::List::default();
                    let mut first_error = None;
                    for i in 0..n {
                        let mut slot = Ms::slot(pinned.as_mut(), i);
                        let Some(kind) = slot.as_mut().take_error() else { continue };
                        let error = StepError {
                            step: slot.settings().name.clone(),
                            index: slot.as_mut().run_mut().index,
                            kind,
                        };
                        if i == first {
                            first_error = Some(error);
                        } else {
                            // Cannot fail: room for every member was reserved.
                            let _ = others.push(error);
                        }
                    }
                    let first = first_error.unwrap_or(StepError {
                        step: Name::from("(group)"),
                        index: base + first,
                        kind: StepErrorKind::Cancelled,
                    });
                    Err(GroupError { first, others })
                }
            }
        }
    }

    /// Gives a member its step record (in progress from now on) and its
    /// policies.
    fn enroll<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) {
        let now = self.stamp();
        let manager = self.manager;
        let has_undo = slot.has_undo();
        let run = slot.as_mut().run_mut();
        let settings = &mut run.settings;
        let timeout = settings.timeout.unwrap_or(manager.timeout);
        let mut retry = settings.retry.unwrap_or(manager.retry);
        if let Some(retries) = settings.max_retries {
            retry = retry.with_max_retries(retries);
        }
        settings.timeout = Some(timeout);
        settings.retry = Some(retry);
        settings.rollback_retry = Some(settings.rollback_retry.unwrap_or(retry));
        settings.rollback_timeout = Some(settings.rollback_timeout.unwrap_or(timeout));
        // Room was reserved.
        run.index = self.ledger.step_begins(settings.name.clone(), timeout, has_undo, self.scope, now);
    }

    /// Counts a member's next attempt.
    fn next_attempt<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) -> (usize, u32) {
        let run = slot.as_mut().run_mut();
        run.attempt = run.attempt.saturating_add(1);
        let record = self.ledger.step_mut(run.index);
        record.attempt_begins(run.attempt);
        run.span = Some(tm_span!("step", name = record.name, index = run.index, attempt = run.attempt));
        (run.index, run.attempt)
    }

    /// Starts a member's attempt: its uncertain undo record goes into the
    /// ledger while it is in flight. A panic in the execute closure fails
    /// the attempt.
    fn start_attempt<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) -> Option<StepErrorKind<E>> {
        let now = crate::timing::clock::now(&self.manager.clock);
        let timeout = slot.settings().timeout();
        let span = slot.as_mut().run_mut().span.take();
        let (origin, id) = (self.ledger.origin, self.ledger.summary.info.id);
        let started = within_span(&span, || caught(|| slot.as_mut().start(origin, id)));
        let run = slot.as_mut().run_mut();
        run.span = span;
        match started {
            Ok(()) => {
                run.phase = Phase::Running { until: timeout.map(|t| now.saturating_add(t)) };
                None
            }
            Err(panic) => Some(StepErrorKind::Panicked(panic)),
        }
    }

    /// Puts a member's uncertain undo record into the ledger before its
    /// attempt starts (it stays there while the attempt is in flight).
    /// Returns whether one was put there; a panic in the undo maker fails
    /// the attempt.
    fn owe_uncertain<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) -> Result<bool, StepErrorKind<E>> {
        let (uncertain, owed) = {
            let run = slot.as_mut().run_mut();
            (run.uncertain, run.owed)
        };
        if uncertain || owed {
            return Ok(false);
        }
        let (origin, id) = (self.ledger.origin, self.ledger.summary.info.id);
        match caught(|| slot.as_mut().make_undo(false, origin, id)) {
            Ok(Some(undo)) => {
                let undo = self.member_undo_record(slot.as_mut().run_mut(), undo);
                // Room was reserved.
                self.ledger.owe(undo);
                slot.as_mut().run_mut().owed = true;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(panic) => Err(StepErrorKind::Panicked(panic)),
        }
    }

    fn member_undo_record(&self, run: &Run, undo: U) -> UndoRecord<U> {
        let (retry, timeout) = run.settings.rollback_policy();
        UndoRecord { step: run.index, undo, retry, timeout }
    }

    /// Bookkeeping of a member's attempt that succeeded: its undo record
    /// joins the ledger now (completion order). Returns why it broke if
    /// its undo record could not be made.
    fn member_completed<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) -> Option<StepErrorKind<E>> {
        let (origin, id) = (self.ledger.origin, self.ledger.summary.info.id);
        match caught(|| slot.as_mut().make_undo(true, origin, id)) {
            Ok(Some(undo)) => {
                let run = slot.as_mut().run_mut();
                // Its uncertain record, if owed, moves to where the member
                // completed. Room was reserved.
                let settings = &run.settings;
                self.ledger.keep_completed(run.index, undo, run.owed, || settings.rollback_policy());
                run.owed = true;
            }
            Ok(None) => {}
            Err(panic) => {
                let run = slot.as_mut().run_mut();
                let now = self.stamp();
                self.ledger.step_mut(run.index).broke(&Panicked(&panic), now);
                end_span(run, "panic");
                return Some(StepErrorKind::Panicked(panic));
            }
        }
        let run = slot.as_mut().run_mut();
        end_span(run, "ok");
        let (index, attempt) = (run.index, run.attempt);
        self.step_completed(index, attempt);
        None
    }

    /// `on_step_success` of a member that completed; a panic in it fails
    /// the member (its undo record stays owed).
    async fn success_hook<E>(&mut self, index: usize, attempt: u32) -> Result<(), StepErrorKind<E>> {
        if !H::ENABLED {
            return Ok(());
        }
        let hooks = &self.manager.hooks;
        let ledger = &self.ledger;
        let event = StepEvent { transaction: &ledger.summary.info, step: &ledger.summary.steps[index], attempt };
        match hook_call(hooks, || hooks.on_step_success(&event)).await {
            Ok(()) => Ok(()),
            Err(panic) => {
                tm_error!("on_step_success hook panicked: {}", panic);
                self.ledger.step_mut(index).errored_after_completion(&Panicked(&panic));
                Err(StepErrorKind::Panicked(panic))
            }
        }
    }

    /// A member's attempt failed: record it, call `on_step_failure`, then
    /// retry after its backoff, or end the member (and, with
    /// `cancel_on_failure`, the others).
    #[allow(clippy::too_many_arguments)]
    async fn member_failed<Ms, E>(
        &mut self,
        mut pinned: Pin<&mut Ms::Pinned>,
        i: usize,
        kind: StepErrorKind<E>,
        ran: bool,
        on_failure: OnMemberFailure,
        first: &mut Option<usize>,
    ) where
        Ms: Members<U, E>,
        E: fmt::Display,
    {
        let (index, attempt, mut last) = self.attempt_failed(Ms::slot(pinned.as_mut(), i), &kind, ran);
        if H::ENABLED {
            let hooks = &self.manager.hooks;
            let ledger = &self.ledger;
            let event = StepEvent { transaction: &ledger.summary.info, step: &ledger.summary.steps[index], attempt };
            if let Err(panic) = hook_call(hooks, || hooks.on_step_failure(&event)).await {
                tm_error!("on_step_failure hook panicked: {}", panic);
                let now = self.stamp();
                self.ledger.step_mut(index).failure_hook_broke(now);
                last = true;
            }
        }
        if last {
            close_span(Ms::slot(pinned.as_mut(), i).run_mut());
            self.member_done(Ms::slot(pinned.as_mut(), i), Some(kind), first, i);
            if Ms::slot(pinned.as_mut(), i).run_mut().released() {
                self.release_rollback(index).await;
            }
            if on_failure == OnMemberFailure::Cancel {
                let n = Ms::count_pinned(pinned.as_mut());
                self.cancel_members::<Ms, E>(pinned.as_mut(), n).await;
            }
        } else {
            drop(kind);
            let now = crate::timing::clock::now(&self.manager.clock);
            let mut slot = Ms::slot(pinned.as_mut(), i);
            let run = slot.as_mut().run_mut();
            let delay = run.settings.retry().jittered_delay(attempt - 1, &mut self.ledger.rng);
            if let Some(span) = &run.span {
                tm_event!(info, span, "retrying", delay = crate::trace::AsDebug(delay));
            }
            close_span(run);
            tm_debug!("step `{}` retrying in {:?}", self.ledger.summary.steps[index].name, delay);
            run.phase = if delay.is_zero() { Phase::Due } else { Phase::Backoff { until: now.saturating_add(delay) } };
        }
    }

    /// Bookkeeping of a failed attempt; returns the member's index, the
    /// attempt, and whether it was the last.
    fn attempt_failed<E: fmt::Display>(
        &mut self,
        mut slot: Pin<&mut dyn driver::Slot<U, E>>,
        kind: &StepErrorKind<E>,
        ran: bool,
    ) -> (usize, u32, bool) {
        let retry_allowed = {
            let run = slot.as_mut().run_mut();
            ran && !is_last_attempt(run.attempt, run.settings.retry().max_retries())
        };
        // A permanent error (its condition said so) is not retried.
        let verdict = match kind {
            StepErrorKind::Failed(error) if retry_allowed => slot.as_mut().retries(error),
            _ => None,
        };
        let run = slot.as_mut().run_mut();
        if ran {
            run.uncertain |= kind.is_uncertain();
            if !run.uncertain && run.owed {
                // A clean failure: nothing took effect, nothing owed.
                self.ledger.take_back(run.index);
                run.owed = false;
                run.unowed = true;
            }
        }
        if let Some(span) = &run.span {
            crate::trace::outcome(span, outcome_of(kind));
        }
        let permanent = verdict.as_ref().filter(|verdict| !verdict.retries());
        let last = !retry_allowed || permanent.is_some();
        // As for a step: the time is kept only when the member fails for
        // good (no clock reading for an attempt that will be retried).
        let now = if last { self.stamp() } else { crate::ledger::record::At::NONE };
        self.ledger.attempt_failed(run.index, run.attempt, &AttemptText { kind, not_retried: permanent }, last, now);
        if let Some(span) = &run.span {
            let error = self.ledger.summary.steps[run.index].error();
            tm_event!(warn, span, "attempt failed", error = error.unwrap_or_default());
        }
        (run.index, run.attempt, last)
    }

    /// A member ended for good, failed with `kind` if given.
    fn member_done<E>(
        &mut self,
        mut slot: Pin<&mut dyn driver::Slot<U, E>>,
        kind: Option<StepErrorKind<E>>,
        first: &mut Option<usize>,
        i: usize,
    ) {
        let run = slot.as_mut().run_mut();
        run.phase = Phase::Done;
        if let Some(kind) = kind {
            if first.is_none() {
                *first = Some(i);
            }
            slot.as_mut().fail(kind);
        }
    }

    /// Cancels every member still running or waiting to retry: an attempt
    /// in flight is dropped (uncertain: its undo record, if it opted in,
    /// stays owed), one waiting fails cleanly.
    async fn cancel_members<Ms, E>(&mut self, mut pinned: Pin<&mut Ms::Pinned>, n: usize)
    where
        Ms: Members<U, E>,
        E: fmt::Display,
    {
        for j in 0..n {
            let Some((index, attempt)) = self.cancel_member(Ms::slot(pinned.as_mut(), j)) else { continue };
            if Ms::slot(pinned.as_mut(), j).run_mut().released() {
                self.release_rollback(index).await;
            }
            if H::ENABLED {
                let hooks = &self.manager.hooks;
                let ledger = &self.ledger;
                let event =
                    StepEvent { transaction: &ledger.summary.info, step: &ledger.summary.steps[index], attempt };
                if let Err(panic) = hook_call(hooks, || hooks.on_step_failure(&event)).await {
                    tm_error!("on_step_failure hook panicked: {}", panic);
                }
            }
        }
    }

    fn cancel_member<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) -> Option<(usize, u32)> {
        let run = slot.as_mut().run_mut();
        let in_flight = match run.phase {
            Phase::Done => return None,
            Phase::Running { .. } => true,
            Phase::Due | Phase::Backoff { .. } => false,
        };
        run.uncertain |= in_flight;
        end_span(run, "cancelled");
        let (index, attempt) = (run.index, run.attempt);
        slot.as_mut().stop();
        let now = self.stamp();
        self.ledger.step_mut(index).broke(&"cancelled: another member of its group failed", now);
        let (info, record) = (&self.ledger.summary.info, &self.ledger.summary.steps[index]);
        tm_warn!(
            "{} `{}`: step `{}` cancelled: another member of its group failed",
            info.id,
            info.operation,
            record.name
        );
        let run = slot.as_mut().run_mut();
        if run.owed && !run.uncertain {
            self.ledger.take_back(index);
            run.owed = false;
            run.unowed = true;
        }
        let mut first = Some(usize::MAX);
        self.member_done(slot, Some(StepErrorKind::Cancelled), &mut first, usize::MAX);
        Some((index, attempt))
    }
}

/// Ends the span of a member's attempt with its outcome.
fn end_span(run: &mut Run, outcome: &'static str) {
    if let Some(span) = run.span.take() {
        crate::trace::outcome(&span, outcome);
        crate::trace::close(span);
    }
}

/// Ends the span of a member's attempt whose outcome is recorded.
fn close_span(run: &mut Run) {
    if let Some(span) = run.span.take() {
        crate::trace::close(span);
    }
}

/// Runs `f` inside `span` (entered), when there is one.
fn within_span<R>(span: &Option<crate::trace::Span>, f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "tracing")]
    if let Some(span) = span {
        return span.in_scope(f);
    }
    let _ = span;
    f()
}

/// What woke the group.
enum Event<E> {
    /// Member `i`'s attempt ended.
    Ended(usize, Result<(), StepErrorKind<E>>),
    /// Member `i`'s attempt ran out of time.
    TimedOut(usize),
    /// Member `i`'s backoff is over.
    Due(usize),
}

/// Polls every attempt in flight (an attempt ready at its timeout wins),
/// then the timeouts and backoffs, with one timer for the earliest of them.
fn poll_members<Ms, U, E, C>(
    clock: &C,
    mut pinned: Pin<&mut Ms::Pinned>,
    n: usize,
    timer: &mut Pin<&mut Option<C::Sleep>>,
    timer_at: &mut Option<Duration>,
    cx: &mut Context<'_>,
) -> Poll<Event<E>>
where
    Ms: Members<U, E>,
    C: Clock,
{
    for i in 0..n {
        let mut slot = Ms::slot(pinned.as_mut(), i);
        if !matches!(slot.as_mut().run_mut().phase, Phase::Running { .. }) {
            continue;
        }
        let span = slot.as_mut().run_mut().span.take();
        let polled = within_span(&span, || caught(|| slot.as_mut().poll_attempt(cx)));
        slot.as_mut().run_mut().span = span;
        match polled {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(result)) => {
                slot.as_mut().stop();
                return Poll::Ready(Event::Ended(i, result.map_err(StepErrorKind::Failed)));
            }
            Err(panic) => {
                slot.as_mut().stop();
                return Poll::Ready(Event::Ended(i, Err(StepErrorKind::Panicked(panic))));
            }
        }
    }
    loop {
        let now = crate::timing::clock::now(clock);
        let mut wake: Option<Duration> = None;
        for i in 0..n {
            let mut slot = Ms::slot(pinned.as_mut(), i);
            let until = match slot.as_mut().run_mut().phase {
                Phase::Running { until: Some(until) } if until <= now => return Poll::Ready(Event::TimedOut(i)),
                Phase::Backoff { until } if until <= now => return Poll::Ready(Event::Due(i)),
                Phase::Running { until: Some(until) } | Phase::Backoff { until } => until,
                _ => continue,
            };
            wake = Some(wake.map_or(until, |w| w.min(until)));
        }
        let Some(wake) = wake else {
            timer.set(None);
            *timer_at = None;
            return Poll::Pending;
        };
        if *timer_at != Some(wake) {
            match caught(|| clock.sleep(wake.saturating_sub(now))) {
                Ok(sleep) => timer.set(Some(sleep)),
                Err(panic) => {
                    // The clock broke its contract: nothing wakes this group
                    // but its attempts (or the transaction's interrupt).
                    tm_error!("the clock's sleep() panicked in a parallel group: {}", panic);
                    timer.set(None);
                }
            }
            *timer_at = Some(wake);
        }
        let fired = match timer.as_mut().as_pin_mut() {
            Some(sleep) => matches!(caught(|| sleep.poll(cx)), Ok(Poll::Ready(())) | Err(_)),
            None => false,
        };
        if !fired {
            return Poll::Pending;
        }
        timer.set(None);
        *timer_at = None;
    }
}

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, Default)]
pub enum Phase {
    /// Its next attempt starts as soon as the group gets to it.
    #[default]
    Due,
    /// An attempt is in flight, timing out at `until`.
    Running { until: Option<Duration> },
    /// Waiting to retry until `until`.
    Backoff { until: Duration },
    /// Completed or failed for good.
    Done,
}

/// A member's options and bookkeeping while its group runs.
pub struct Run {
    pub(crate) settings: Settings,
    pub(crate) index: usize,
    pub(crate) attempt: u32,
    pub(crate) phase: Phase,
    /// An attempt of it ended in a way that may have taken effect.
    pub(crate) uncertain: bool,
    /// Its undo record is in the ledger.
    pub(crate) owed: bool,
    /// Its uncertain undo record was taken out after a clean failure.
    pub(crate) unowed: bool,
    pub(crate) span: Option<crate::trace::Span>,
}

impl Run {
    /// Its uncertain undo record was taken out after clean failures and
    /// nothing since made it owed again.
    pub(crate) fn released(&self) -> bool {
        self.unowed && !self.owed && !self.uncertain
    }

    fn new(settings: Settings) -> Self {
        Run {
            settings,
            index: 0,
            attempt: 0,
            phase: Phase::Due,
            uncertain: false,
            owed: false,
            unowed: false,
            span: None,
        }
    }

    fn is_due(&self) -> bool {
        matches!(self.phase, Phase::Due)
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run").field("index", &self.index).field("phase", &self.phase).finish_non_exhaustive()
    }
}

/// The group's error: the member that failed first, and every other member
/// that failed (in member order). Each is a [`StepError`] with the member's
/// name and index; the summary has every member's record.
///
/// `?` turns it into the first failure's [`StepError`] (`From`), for a body
/// whose error type is `StepError<E>`; the others stay in the summary.
///
/// ```
/// # use transaction_manager::*;
/// # use transaction_manager::group::member;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 3>().run(async |tx| {
///     // An array of members: one type, so one closure made three times.
///     let members = ["a", "b", "c"].map(|name| {
///         member(name).execute(move || async move { if name == "b" { Ok(()) } else { Err(name) } })
///     });
///     let err = tx.parallel(members).await.unwrap_err();
///     assert_eq!(err.first().step(), "a");
///     assert_eq!(err.others().len(), 1);
///     assert_eq!(err.to_string(), "step `a` failed: a; and 1 more member failed: step `c` failed: c");
///     Ok::<_, StepError<&str>>(())
/// }));
/// assert_eq!(done.unwrap().summary().failed_steps(), 2);
/// ```
pub struct GroupError<E, S: Storage> {
    first: StepError<E>,
    others: S::List<StepError<E>>,
}

impl<E, S: Storage> GroupError<E, S> {
    /// The member that failed first.
    pub fn first(&self) -> &StepError<E> {
        &self.first
    }

    /// The first failure, by value.
    pub fn into_first(self) -> StepError<E> {
        self.first
    }

    /// The other members that failed (or were cancelled), in member order.
    pub fn others(&self) -> &[StepError<E>] {
        &self.others
    }

    /// Every failure: the first, then the others.
    pub fn failures(&self) -> impl Iterator<Item = &StepError<E>> {
        core::iter::once(&self.first).chain(self.others.iter())
    }
}

impl<E, S: Storage> From<GroupError<E, S>> for StepError<E> {
    fn from(error: GroupError<E, S>) -> Self {
        error.first
    }
}

impl<E: fmt::Display, S: Storage> fmt::Display for GroupError<E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.first)?;
        if !self.others.is_empty() {
            let n = self.others.len();
            write!(f, "; and {n} more member{} failed", if n == 1 { "" } else { "s" })?;
            for (i, other) in self.others.iter().enumerate() {
                write!(f, "{} {other}", if i == 0 { ":" } else { ";" })?;
            }
        }
        Ok(())
    }
}

impl<E: fmt::Debug, S: Storage> fmt::Debug for GroupError<E, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupError").field("first", &self.first).field("others", &self.others()).finish()
    }
}

impl<E: core::error::Error + 'static, S: Storage> core::error::Error for GroupError<E, S> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.first)
    }
}

/// The member type and the traits the engine drives members through. `pub`
/// items of a private module: nameable in bounds, not implementable outside.
mod driver {
    use super::*;

    pin_project! {
        /// A member of a parallel group: its options, execute function and
        /// rollback. Made by [`member`]; run with [`Transaction::parallel`]
        /// or [`Group::run`].
        #[must_use = "a member does nothing until it is run in a group"]
        pub struct Member<F: MemberFn, R, W = RetryAlways> {
            execute: F,
            undo: R,
            retry_if: W,
            run: Run,
            #[pin]
            attempt: Option<F::Attempt>,
            output: Option<F::Output>,
            error: Option<StepErrorKind<F::Error>>,
        }
    }

    impl<F: MemberFn, R, W> fmt::Debug for Member<F, R, W> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Member").field("name", &self.run.settings.name).finish_non_exhaustive()
        }
    }

    impl<F: MemberFn, R> Member<F, R> {
        pub(super) fn new(settings: Settings, execute: F, undo: R) -> Self {
            Self::with_condition(settings, execute, undo, RetryAlways)
        }

        /// Converts each failed attempt's error with `map`, as
        /// [`Execute::map_err`](crate::step::Execute::map_err) does for a step:
        /// members of one group need one error type.
        pub fn map_err<G, E2>(self, map: G) -> Member<MapErrors<F, G>, R>
        where
            G: FnMut(F::Error) -> E2,
            E2: fmt::Display,
        {
            Member::new(self.run.settings, MapErrors { inner: self.execute, map }, self.undo)
        }

        /// Converts each failed attempt's error with `Into`.
        #[allow(clippy::type_complexity)]
        pub fn err_into<E2>(self) -> Member<MapErrors<F, fn(F::Error) -> E2>, R>
        where
            E2: From<F::Error> + fmt::Display,
        {
            self.map_err(E2::from as fn(F::Error) -> E2)
        }
    }

    impl<F: MemberFn, R, W> Member<F, R, W> {
        fn with_condition(settings: Settings, execute: F, undo: R, retry_if: W) -> Self {
            Self { execute, undo, retry_if, run: Run::new(settings), attempt: None, output: None, error: None }
        }

        fn with<R2>(self, undo: R2) -> Member<F, R2, W> {
            Member::with_condition(self.run.settings, self.execute, undo, self.retry_if)
        }

        /// Retries a failed attempt only if `condition` accepts its error,
        /// as [`Execute::retry_if`](crate::step::Execute::retry_if) does for a
        /// step: a rejected (permanent) error fails the member for good at
        /// once, with no backoff wait, and its record says `not retried:
        /// permanent: …`. Set it after [`map_err`](Member::map_err): it
        /// sees the group's error type.
        ///
        /// ```
        /// # use core::time::Duration;
        /// # use transaction_manager::*;
        /// # use transaction_manager::group::member;
        /// let clock = ManualClock::new();
        /// let manager = TransactionManager::new(&clock);
        /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
        ///     tx.parallel((member("register")
        ///         .max_retries(5)
        ///         .execute(|| async { Err::<(), _>("zone refuses this name") })
        ///         .retry_if(|error| *error != "zone refuses this name"),))
        ///         .await?;
        ///     Ok::<_, StepError<&str>>(())
        /// })).unwrap_err();
        /// assert_eq!((err.summary().steps()[0].attempts(), clock.now()), (1, Duration::ZERO));
        /// ```
        pub fn retry_if<W2>(self, condition: W2) -> Member<F, R, W2>
        where
            W2: FnMut(&F::Error) -> bool,
        {
            Member::with_condition(self.run.settings, self.execute, self.undo, condition)
        }

        /// A rollback closure that receives (a clone of) the member's
        /// output, as [`Execute::rollback`](crate::step::Execute::rollback).
        pub fn rollback<G, Fut, RE>(self, rollback: G) -> Member<F, OnCompleted<G>, W>
        where
            G: FnMut(F::Output) -> Fut,
            Fut: Future<Output = Result<(), RE>>,
            F::Output: Clone,
        {
            self.with(OnCompleted(Some((rollback, RetryAlways))))
        }

        /// A rollback closure that receives a clone of `state` and of the
        /// output, as [`Execute::rollback_using`](crate::step::Execute::rollback_using).
        pub fn rollback_using<St, G, Fut, RE>(self, state: &St, rollback: G) -> Member<F, OnCompletedUsing<St, G>, W>
        where
            St: Clone,
            G: FnMut((St, F::Output)) -> Fut,
            Fut: Future<Output = Result<(), RE>>,
            F::Output: Clone,
        {
            self.with(OnCompletedUsing(state.clone(), Some((rollback, RetryAlways))))
        }

        /// A rollback closure that also covers an uncertain outcome (an
        /// attempt that timed out, panicked, was cut short or cancelled),
        /// as [`Execute::rollback_uncertain`](crate::step::Execute::rollback_uncertain).
        pub fn rollback_uncertain<G, Fut, RE>(self, rollback: G) -> Member<F, OnUncertain<G>, W>
        where
            G: FnMut(Maybe<F::Output>) -> Fut + Clone,
            Fut: Future<Output = Result<(), RE>>,
            F::Output: Clone,
        {
            self.with(OnUncertain(rollback, RetryAlways))
        }

        /// An undo record (data) made from the output, as
        /// [`Execute::undo`](crate::step::Execute::undo).
        pub fn undo<Mk, U>(self, make_undo: Mk) -> Member<F, UndoWith<Mk>, W>
        where
            Mk: FnOnce(&F::Output) -> U,
        {
            self.with(UndoWith(Some(make_undo)))
        }

        /// An undo record (data) made from the output and the member's
        /// [`IdempotencyKey`], as [`Execute::undo_keyed`](crate::step::Execute::undo_keyed).
        ///
        /// ```
        /// # use transaction_manager::*;
        /// # use transaction_manager::{group::member, journal::IdempotencyKey};
        /// struct Release(IdempotencyKey);
        /// impl Rollback<Vec<String>> for Release {
        ///     type Error = &'static str;
        ///     async fn rollback(&mut self, released: &mut Vec<String>) -> Result<(), &'static str> {
        ///         released.push(self.0.to_string());
        ///         Ok(())
        ///     }
        /// }
        ///
        /// let clock = ManualClock::new();
        /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
        /// let mut released = Vec::new();
        /// let tx = manager.transaction("t").with_id(TransactionId::new(6)).fixed::<Release, 3>();
        /// let err = clock.block_on(tx.run_with(&mut released, async |tx| {
        ///     tx.parallel((member("ip").execute(|| async { Ok::<_, &str>(()) }).undo_keyed(|(), key| Release(key)),)).await?;
        ///     tx.step("fails").run(|| async { Err::<(), _>("boom") }).await
        /// })).unwrap_err();
        /// assert_eq!(released, ["tx-6.0-000000000000002a"]);
        /// ```
        pub fn undo_keyed<Mk, U>(self, make_undo: Mk) -> Member<F, UndoKeyed<Mk>, W>
        where
            Mk: FnOnce(&F::Output, IdempotencyKey) -> U,
        {
            self.with(UndoKeyed(Some(make_undo)))
        }

        /// An undo record (data) that also covers an uncertain outcome, as
        /// [`Execute::undo_uncertain`](crate::step::Execute::undo_uncertain).
        pub fn undo_uncertain<Mk, U>(self, make_undo: Mk) -> Member<F, UndoMaybe<Mk>, W>
        where
            Mk: FnMut(Maybe<&F::Output>) -> U,
        {
            self.with(UndoMaybe(make_undo))
        }
    }

    impl<F: MemberFn, G, W> Member<F, OnCompleted<G>, W> {
        /// Retries a failed attempt of the member's rollback only if
        /// `condition` accepts its error, as
        /// [`Execute::rollback_retry_if`](crate::step::Execute::rollback_retry_if)
        /// does for a step; given after the rollback. The condition sees
        /// the error as the transaction's undo type has it (name its type:
        /// `|error: &BoxError| …` for [`BoxedRollback`](crate::BoxedRollback)).
        ///
        /// ```
        /// # #[cfg(feature = "std")] {
        /// # use core::time::Duration;
        /// # use transaction_manager::*;
        /// # use transaction_manager::{group::member, rollback::BoxError};
        /// let clock = ManualClock::new();
        /// let manager = TransactionManager::new(&clock);
        /// let err = clock.block_on(manager.run("t", async |tx| {
        ///     tx.parallel((member("ip")
        ///         .max_retries(3)
        ///         .execute(|| async { Ok::<_, &str>(7) })
        ///         .rollback(|_ip| async { Err::<(), _>("address is locked") })
        ///         .rollback_retry_if(|error: &BoxError| error.to_string() != "address is locked"),))
        ///         .await?;
        ///     tx.step("fails").run(|| async { Err::<(), _>("boom") }).await
        /// })).unwrap_err();
        /// let ip = &err.summary().steps()[0];
        /// assert_eq!((ip.rollback_attempts(), clock.now()), (1, Duration::ZERO));
        /// assert_eq!(ip.rollback_error(), Some("not retried: permanent: address is locked"));
        /// # }
        /// ```
        pub fn rollback_retry_if<RW>(self, condition: RW) -> Member<F, OnCompleted<G, RW>, W> {
            let Member { execute, undo, retry_if, run, .. } = self;
            Member::with_condition(run.settings, execute, undo.retry_if(condition), retry_if)
        }
    }

    impl<F: MemberFn, St, G, W> Member<F, OnCompletedUsing<St, G>, W> {
        /// A retry condition for the member's rollback, as for
        /// [`Member::rollback`]'s ([`rollback_retry_if`](Member::rollback_retry_if)).
        ///
        /// ```
        /// # #[cfg(feature = "std")] {
        /// # use transaction_manager::*;
        /// # use transaction_manager::{group::member, rollback::BoxError};
        /// let clock = ManualClock::new();
        /// let manager = TransactionManager::new(&clock);
        /// let err = clock.block_on(manager.run("t", async |tx| {
        ///     tx.parallel((member("ip")
        ///         .max_retries(3)
        ///         .execute(|| async { Ok::<_, &str>(7) })
        ///         .rollback_using(&"pool", |(_pool, _ip)| async { Err::<(), _>("locked") })
        ///         .rollback_retry_if(|error: &BoxError| error.to_string() != "locked"),))
        ///         .await?;
        ///     tx.step("fails").run(|| async { Err::<(), _>("boom") }).await
        /// })).unwrap_err();
        /// assert_eq!(err.summary().steps()[0].rollback_attempts(), 1);
        /// # }
        /// ```
        pub fn rollback_retry_if<RW>(self, condition: RW) -> Member<F, OnCompletedUsing<St, G, RW>, W> {
            let Member { execute, undo, retry_if, run, .. } = self;
            Member::with_condition(run.settings, execute, undo.retry_if(condition), retry_if)
        }
    }

    impl<F: MemberFn, G, W> Member<F, OnUncertain<G>, W> {
        /// A retry condition for the member's uncertain rollback, as for
        /// [`Member::rollback`]'s ([`rollback_retry_if`](Member::rollback_retry_if));
        /// it must be `Clone`.
        ///
        /// ```
        /// # #[cfg(feature = "std")] {
        /// # use transaction_manager::*;
        /// # use transaction_manager::{group::member, rollback::BoxError};
        /// let clock = ManualClock::new();
        /// let manager = TransactionManager::new(&clock);
        /// let err = clock.block_on(manager.run("t", async |tx| {
        ///     tx.parallel((member("ip")
        ///         .max_retries(3)
        ///         .execute(|| async { Ok::<_, &str>(7) })
        ///         .rollback_uncertain(|_ip| async { Err::<(), _>("locked") })
        ///         .rollback_retry_if(|error: &BoxError| error.to_string() != "locked"),))
        ///         .await?;
        ///     tx.step("fails").run(|| async { Err::<(), _>("boom") }).await
        /// })).unwrap_err();
        /// assert_eq!(err.summary().steps()[0].rollback_attempts(), 1);
        /// # }
        /// ```
        pub fn rollback_retry_if<RW>(self, condition: RW) -> Member<F, OnUncertain<G, RW>, W> {
            let Member { execute, undo, retry_if, run, .. } = self;
            Member::with_condition(run.settings, execute, undo.retry_if(condition), retry_if)
        }
    }

    /// One member as the group engine drives it, whatever its types.
    pub trait Slot<U, E> {
        /// The member's options.
        fn settings(&self) -> &Settings;
        /// The member's bookkeeping.
        fn run_mut(self: Pin<&mut Self>) -> &mut Run;
        /// Whether it may owe an undo record.
        fn has_undo(&self) -> bool;
        /// The undo record owed: for the stored output if `completed`, else
        /// for an uncertain outcome.
        fn make_undo(
            self: Pin<&mut Self>,
            completed: bool,
            origin: u64,
            id: crate::durable::id::TransactionId,
        ) -> Option<U>;
        /// Starts an attempt, in transaction `id` of origin `origin`.
        fn start(self: Pin<&mut Self>, origin: u64, id: crate::durable::id::TransactionId);
        /// Polls the attempt; on success the output is kept in the member.
        fn poll_attempt(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E>>;
        /// Drops the attempt in flight, if any.
        fn stop(self: Pin<&mut Self>);
        /// Asks the member's retry condition about an attempt that failed
        /// with `error` (`None` without a condition).
        fn retries(self: Pin<&mut Self>, error: &E) -> Option<crate::timing::condition::Verdict>;
        /// Keeps why the member failed for good.
        fn fail(self: Pin<&mut Self>, kind: StepErrorKind<E>);
        /// Takes why the member failed for good.
        fn take_error(self: Pin<&mut Self>) -> Option<StepErrorKind<E>>;
    }

    impl<U, F: MemberFn, R: MemberUndo<F::Output, U>, W: RetryCondition<F::Error>> Slot<U, F::Error> for Member<F, R, W> {
        fn settings(&self) -> &Settings {
            &self.run.settings
        }

        fn run_mut(self: Pin<&mut Self>) -> &mut Run {
            self.project().run
        }

        fn has_undo(&self) -> bool {
            self.undo.has_undo()
        }

        fn make_undo(
            self: Pin<&mut Self>,
            completed: bool,
            origin: u64,
            id: crate::durable::id::TransactionId,
        ) -> Option<U> {
            let this = self.project();
            let key = IdempotencyKey::new(origin, id, crate::engine::transaction::step_index(this.run.index));
            match (completed, this.output.as_ref()) {
                (true, Some(output)) => this.undo.make(Maybe::Completed(output), key),
                (true, None) => None,
                (false, _) => this.undo.make(Maybe::Uncertain, key),
            }
        }

        fn start(self: Pin<&mut Self>, origin: u64, id: crate::durable::id::TransactionId) {
            let mut this = self.project();
            let key = IdempotencyKey::new(origin, id, crate::engine::transaction::step_index(this.run.index));
            let attempt = this.execute.start(key);
            this.attempt.set(Some(attempt));
        }

        fn poll_attempt(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), F::Error>> {
            let mut this = self.project();
            let Some(attempt) = this.attempt.as_mut().as_pin_mut() else { return Poll::Pending };
            let Poll::Ready(ended) = attempt.poll(cx) else { return Poll::Pending };
            // Done with: `stop` must not poll it again.
            this.attempt.set(None);
            match this.execute.finish(ended) {
                Some(Ok(output)) => {
                    *this.output = Some(output);
                    Poll::Ready(Ok(()))
                }
                Some(Err(raw)) => Poll::Ready(Err(this.execute.convert(raw))),
                // Only while `stop` raises the flag, which it does not poll here.
                None => Poll::Pending,
            }
        }

        fn stop(self: Pin<&mut Self>) {
            let mut this = self.project();
            if this.attempt.is_some() {
                // A member with a part gets it back: with the flag raised,
                // one poll ends its attempt (dropping the user's future).
                let stoppable = this.execute.stopping(true);
                // Dropping an attempt runs user code: a panic there is logged,
                // the member's outcome is already decided.
                let stopped = caught(|| {
                    if stoppable {
                        if let Some(attempt) = this.attempt.as_mut().as_pin_mut() {
                            if let Poll::Ready(ended) = attempt.poll(&mut Context::from_waker(Waker::noop())) {
                                this.attempt.set(None);
                                let _ = this.execute.finish(ended);
                            }
                        }
                    }
                    this.attempt.set(None);
                });
                if stoppable {
                    this.execute.stopping(false);
                }
                if let Err(panic) = stopped {
                    tm_error!("dropping an attempt of step `{}` panicked: {}", this.run.settings.name, panic);
                }
            }
        }

        fn retries(self: Pin<&mut Self>, error: &F::Error) -> Option<crate::timing::condition::Verdict> {
            if W::ALWAYS {
                return None;
            }
            let condition = self.project().retry_if;
            Some(crate::timing::condition::ask(|| condition.retries(error)))
        }

        fn fail(self: Pin<&mut Self>, kind: StepErrorKind<F::Error>) {
            *self.project().error = Some(kind);
        }

        fn take_error(self: Pin<&mut Self>) -> Option<StepErrorKind<F::Error>> {
            self.project().error.take()
        }
    }

    /// A member's output, once it completed.
    pub trait TakeOutput {
        /// The member's output type.
        type Output;
        /// Takes the output.
        fn take_output(self: Pin<&mut Self>) -> Option<Self::Output>;
    }

    impl<F: MemberFn, R, W> TakeOutput for Member<F, R, W> {
        type Output = F::Output;

        fn take_output(self: Pin<&mut Self>) -> Option<F::Output> {
            self.project().output.take()
        }
    }

    /// Members that take the transaction's stop flag before their group
    /// starts (those with a part, [`MemberBuilder::execute_on`], keep it);
    /// implemented for a [`Member`] and for tuples, arrays and (with
    /// `alloc`) `Vec`s of them. You do not implement it yourself.
    pub trait Lend<'s> {
        #[doc(hidden)]
        fn lend(&mut self, stopping: &'s AtomicBool);
    }

    impl<'s, F: MemberFn + LendFlag<'s>, R, W> Lend<'s> for Member<F, R, W> {
        fn lend(&mut self, stopping: &'s AtomicBool) {
            self.execute.lend(stopping);
        }
    }

    impl<'s, M: Lend<'s>, const N: usize> Lend<'s> for [M; N] {
        fn lend(&mut self, stopping: &'s AtomicBool) {
            for member in self {
                member.lend(stopping);
            }
        }
    }

    #[cfg(feature = "alloc")]
    impl<'s, M: Lend<'s>> Lend<'s> for alloc::vec::Vec<M> {
        fn lend(&mut self, stopping: &'s AtomicBool) {
            for member in self {
                member.lend(stopping);
            }
        }
    }

    macro_rules! lend_tuple {
        ($($t:ident $i:tt),+) => {
            impl<'s, $($t: Lend<'s>),+> Lend<'s> for ($($t,)+) {
                fn lend(&mut self, stopping: &'s AtomicBool) {
                    $(self.$i.lend(stopping);)+
                }
            }
        };
    }

    lend_tuple!(A 0);
    lend_tuple!(A 0, B 1);
    lend_tuple!(A 0, B 1, C 2);
    lend_tuple!(A 0, B 1, C 2, D 3);
    lend_tuple!(A 0, B 1, C 2, D 3, E5 4);
    lend_tuple!(A 0, B 1, C 2, D 3, E5 4, F 5);
    lend_tuple!(A 0, B 1, C 2, D 3, E5 4, F 5, G 6);
    lend_tuple!(A 0, B 1, C 2, D 3, E5 4, F 5, G 6, H 7);
    lend_tuple!(A 0, B 1, C 2, D 3, E5 4, F 5, G 6, H 7, I 8);
    lend_tuple!(A 0, B 1, C 2, D 3, E5 4, F 5, G 6, H 7, I 8, J 9);
    lend_tuple!(A 0, B 1, C 2, D 3, E5 4, F 5, G 6, H 7, I 8, J 9, K 10);
    lend_tuple!(A 0, B 1, C 2, D 3, E5 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

    /// The members of a parallel group: a tuple (up to 12), an array (up
    /// to 12) or, with `alloc`, a `Vec` of [`Member`]s with one error type
    /// `E`, in a transaction whose undo type is `U`. Sealed.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` is not a group of members with one error type",
        label = "the members of this group",
        note = "pass a tuple or an array of up to 12 `member(..)`s, or (with `alloc`) a `Vec`; \
                give them one error type with `.map_err(..)` or `.err_into::<E>()`"
    )]
    pub trait Members<U, E> {
        /// What the group returns: a tuple, an array or a `Vec` of the
        /// members' outputs.
        type Output;
        #[doc(hidden)]
        type Pinned;
        #[doc(hidden)]
        fn into_pinned(self) -> Self::Pinned;
        #[doc(hidden)]
        fn count_pinned(pinned: Pin<&mut Self::Pinned>) -> usize;
        #[doc(hidden)]
        fn slot<'a>(pinned: Pin<&'a mut Self::Pinned>, i: usize) -> Pin<&'a mut (dyn Slot<U, E> + 'a)>;
        #[doc(hidden)]
        fn outputs(pinned: Pin<&mut Self::Pinned>) -> Option<Self::Output>;
    }

    macro_rules! same {
        ($_t:ident, $m:ident) => {
            $m
        };
    }

    macro_rules! fixed_members {
        ($pinned:ident, $n:literal; $($t:ident $f:ident $i:tt),+) => {
            pin_project! {
                #[doc(hidden)]
                pub struct $pinned<$($t),+> { $(#[pin] $f: $t,)+ }
            }

            impl<U, E, $($t),+> Members<U, E> for ($($t,)+)
            where
                $($t: Slot<U, E> + TakeOutput,)+
            {
                type Output = ($($t::Output,)+);
                type Pinned = $pinned<$($t),+>;

                fn into_pinned(self) -> Self::Pinned {
                    $pinned { $($f: self.$i,)+ }
                }

                fn count_pinned(_: Pin<&mut Self::Pinned>) -> usize {
                    $n
                }

                // Out of line: the engine looks members up in many places.
                #[inline(never)]
                fn slot<'a>(pinned: Pin<&'a mut Self::Pinned>, i: usize) -> Pin<&'a mut (dyn Slot<U, E> + 'a)> {
                    let this = pinned.project();
                    match i {
                        $($i => this.$f,)+
                        // Indices come from `0..len`.
                        _ => unreachable!("a group has {} members", $n),
                    }
                }

                fn outputs(pinned: Pin<&mut Self::Pinned>) -> Option<Self::Output> {
                    let this = pinned.project();
                    Some(($(this.$f.take_output()?,)+))
                }
            }

            impl<U, E, M> Members<U, E> for [M; $n]
            where
                M: Slot<U, E> + TakeOutput,
            {
                type Output = [M::Output; $n];
                type Pinned = $pinned<$(same!($t, M)),+>;

                fn into_pinned(self) -> Self::Pinned {
                    let [$($f),+] = self;
                    $pinned { $($f,)+ }
                }

                fn count_pinned(_: Pin<&mut Self::Pinned>) -> usize {
                    $n
                }

                // Out of line: the engine looks members up in many places.
                #[inline(never)]
                fn slot<'a>(pinned: Pin<&'a mut Self::Pinned>, i: usize) -> Pin<&'a mut (dyn Slot<U, E> + 'a)> {
                    let this = pinned.project();
                    match i {
                        $($i => this.$f,)+
                        _ => unreachable!("a group has {} members", $n),
                    }
                }

                fn outputs(pinned: Pin<&mut Self::Pinned>) -> Option<Self::Output> {
                    let this = pinned.project();
                    Some([$(this.$f.take_output()?,)+])
                }
            }
        };
    }

    fixed_members!(Pinned1, 1; A a 0);
    fixed_members!(Pinned2, 2; A a 0, B b 1);
    fixed_members!(Pinned3, 3; A a 0, B b 1, C c 2);
    fixed_members!(Pinned4, 4; A a 0, B b 1, C c 2, D d 3);
    fixed_members!(Pinned5, 5; A a 0, B b 1, C c 2, D d 3, E5 e 4);
    fixed_members!(Pinned6, 6; A a 0, B b 1, C c 2, D d 3, E5 e 4, F f 5);
    fixed_members!(Pinned7, 7; A a 0, B b 1, C c 2, D d 3, E5 e 4, F f 5, G g 6);
    fixed_members!(Pinned8, 8; A a 0, B b 1, C c 2, D d 3, E5 e 4, F f 5, G g 6, H h 7);
    fixed_members!(Pinned9, 9; A a 0, B b 1, C c 2, D d 3, E5 e 4, F f 5, G g 6, H h 7, I i 8);
    fixed_members!(Pinned10, 10; A a 0, B b 1, C c 2, D d 3, E5 e 4, F f 5, G g 6, H h 7, I i 8, J j 9);
    fixed_members!(Pinned11, 11; A a 0, B b 1, C c 2, D d 3, E5 e 4, F f 5, G g 6, H h 7, I i 8, J j 9, K k 10);
    fixed_members!(Pinned12, 12; A a 0, B b 1, C c 2, D d 3, E5 e 4, F f 5, G g 6, H h 7, I i 8, J j 9, K k 10, L l 11);

    /// Any number of members, each pinned in its own box.
    #[cfg(feature = "alloc")]
    impl<U, E, M> Members<U, E> for alloc::vec::Vec<M>
    where
        M: Slot<U, E> + TakeOutput,
    {
        type Output = alloc::vec::Vec<M::Output>;
        type Pinned = alloc::vec::Vec<Pin<alloc::boxed::Box<M>>>;

        fn into_pinned(self) -> Self::Pinned {
            self.into_iter().map(alloc::boxed::Box::pin).collect()
        }

        fn count_pinned(pinned: Pin<&mut Self::Pinned>) -> usize {
            pinned.len()
        }

        fn slot<'a>(pinned: Pin<&'a mut Self::Pinned>, i: usize) -> Pin<&'a mut (dyn Slot<U, E> + 'a)> {
            pinned.get_mut()[i].as_mut()
        }

        fn outputs(pinned: Pin<&mut Self::Pinned>) -> Option<Self::Output> {
            pinned.get_mut().iter_mut().map(|m| m.as_mut().take_output()).collect()
        }
    }
}
