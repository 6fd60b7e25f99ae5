//! The member type and the traits the engine drives members through. `pub`
//! items of a private module: nameable in bounds, not implementable outside.

use super::*;

pin_project! {
    /// A member of a parallel group: its options, execute function and
    /// rollback. Made by [`member`]; run with [`Transaction::parallel`]
    /// or [`Group::run`].
    #[must_use = "a member does nothing until it is run in a group"]
    pub struct Member<F: MemberFn, R, W = RetryAlways> {
        execute: F,
        asks: Asks<R, W, F::Output>,
        run: Run,
        #[pin]
        attempt: Option<F::Attempt>,
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
    pub fn map_err<G, E2>(self, map: G) -> Member<MapErr<F, G>, R>
    where
        G: FnMut(F::Error) -> E2,
        E2: fmt::Display,
    {
        Member::new(self.run.settings, MapErr { execute: self.execute, map }, self.asks.undo)
    }

    /// Converts each failed attempt's error with `Into`.
    #[allow(clippy::type_complexity)]
    pub fn err_into<E2>(self) -> Member<MapErr<F, fn(F::Error) -> E2>, R>
    where
        E2: From<F::Error> + fmt::Display,
    {
        self.map_err(E2::from as fn(F::Error) -> E2)
    }
}

impl<F: MemberFn, R, W> Member<F, R, W> {
    fn with_condition(settings: Settings, execute: F, undo: R, retry_if: W) -> Self {
        let asks = Asks { undo, retry_if, output: None };
        Self { execute, asks, run: Run::new(settings), attempt: None, error: None }
    }

    fn with<R2>(self, undo: R2) -> Member<F, R2, W> {
        Member::with_condition(self.run.settings, self.execute, undo, self.asks.retry_if)
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
        Member::with_condition(self.run.settings, self.execute, self.asks.undo, condition)
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
        let Member { execute, asks, run, .. } = self;
        Member::with_condition(run.settings, execute, asks.undo.retry_if(condition), asks.retry_if)
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
        let Member { execute, asks, run, .. } = self;
        Member::with_condition(run.settings, execute, asks.undo.retry_if(condition), asks.retry_if)
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
        let Member { execute, asks, run, .. } = self;
        Member::with_condition(run.settings, execute, asks.undo.retry_if(condition), asks.retry_if)
    }
}

/// One member as the group engine drives it, whatever its types.
pub trait Slot<U, E> {
    /// The member's options.
    fn settings(&self) -> &Settings;
    /// The member's bookkeeping.
    fn run_mut(self: Pin<&mut Self>) -> &mut Run;
    /// The member's bookkeeping, and what the engine asks of it (its undo
    /// records, its retry condition) while it changes it.
    fn split(self: Pin<&mut Self>) -> (&mut Run, &mut dyn Ask<U, E>);
    /// Whether it may owe an undo record.
    fn has_undo(&self) -> bool;
    /// Starts an attempt; `key` is the member's idempotency key.
    fn start(self: Pin<&mut Self>, key: IdempotencyKey);
    /// Polls the attempt; on success the output is kept in the member.
    fn poll_attempt(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), E>>;
    /// Drops the attempt in flight, if any.
    fn stop(self: Pin<&mut Self>);
    /// Keeps why the member failed for good.
    fn fail(self: Pin<&mut Self>, kind: StepErrorKind<E>);
    /// Takes why the member failed for good.
    fn take_error(self: Pin<&mut Self>) -> Option<StepErrorKind<E>>;
}

impl<U, F: MemberFn, R: MakeUndo<F::Output, U>, W: RetryCondition<F::Error>> Slot<U, F::Error> for Member<F, R, W> {
    fn settings(&self) -> &Settings {
        &self.run.settings
    }

    fn run_mut(self: Pin<&mut Self>) -> &mut Run {
        self.project().run
    }

    fn split(self: Pin<&mut Self>) -> (&mut Run, &mut dyn Ask<U, F::Error>) {
        let this = self.project();
        (this.run, this.asks)
    }

    fn has_undo(&self) -> bool {
        self.asks.undo.has_undo()
    }

    fn start(self: Pin<&mut Self>, key: IdempotencyKey) {
        let mut this = self.project();
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
                this.asks.output = Some(output);
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
        self.project().asks.output.take()
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
