//! Parallel groups: several steps of one transaction run at the same time,
//! from the transaction's own task (no spawning, so no allocator and no
//! executor needed: it works on embassy as on tokio).
//!
//! A group is one future that owns its members' attempt futures and polls
//! them in turn; between polls it moves each member through the same
//! transitions as a plain step (`StepRun`: records, undo records, retries)
//! and calls the same hooks, with the transaction it borrows. Undo records
//! join the ledger in the order members complete, so rollback undoes them
//! in reverse completion order.

use core::fmt;

use crate::durable::entry::EntryKind;
use core::future::{Future, poll_fn};
use core::pin::{Pin, pin};
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use pin_project_lite::pin_project;

use crate::engine::{
    step_run::{StepEnv, StepRun},
    transaction::{NoContext, StepConfig},
};
use crate::util::text::caught;
use crate::{
    durable::id::IdempotencyKey,
    engine::{abandon::AbandonPolicy, attempt::Maybe, manager::TransactionManager, transaction::Transaction},
    ledger::{
        error::{StepError, StepErrorKind},
        rollback::Rollback,
    },
    observe::hooks::Hooks,
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

mod driver;
mod engine;
mod member;
mod parts;
mod poll;

use crate::api::step_fn::{Keyed, MapErr, Plain};
pub use crate::api::undo::{
    MakeUndo, NoUndo, OnCompleted, OnCompletedUsing, OnUncertain, UndoKeyed, UndoMaybe, UndoWith,
};
pub use driver::{Lend, Member, Members};
use engine::*;
pub use member::*;
pub use parts::*;
use poll::*;

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
