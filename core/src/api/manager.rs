//! The entry point: a manager holds a clock, hooks and defaults, and starts
//! transactions.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};
use core::time::Duration;

use crate::engine::binding::{JournalFor, JournalIds, Journaled, NoJournal};
use crate::engine::manager::{Origin, TransactionManager};
use crate::engine::run::{JournalKeeps, Records, Returned, TransactionBuilder, UndoLog};
use crate::ledger::outcome::Outcome;
use crate::timing::interrupt::{Cancel, Deadline, IntoBodyError, NoInterrupt};
use crate::{
    durable::id::TransactionId,
    engine::{
        abandon::{AbandonPolicy, Spawned, Unattended},
        transaction::Transaction,
    },
    ledger::{book::RollbackFailurePolicy, record::TransactionInfo, rollback::Rollback},
    observe::hooks::Hooks,
    timing::{clock::Clock, interrupt::Interrupt, retry::RetryPolicy},
    util::text::Name,
};

impl<C: Clock> TransactionManager<C> {
    /// A manager with no hooks, no retries and no timeouts by default.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// # let _ = manager;
    /// ```
    pub const fn new(clock: C) -> Self {
        Self {
            clock,
            hooks: (),
            abandon: Unattended,
            journal: NoJournal,
            retry: RetryPolicy::new(),
            timeout: None,
            on_rollback_failure: RollbackFailurePolicy::Continue,
            step_times: true,
            jitter_seed: 0x05EE_D0F7_AB1E,
            next_id: AtomicUsize::new(1),
            origin: Origin::new(0),
        }
    }
}

impl<C, H, A, J> TransactionManager<C, H, A, J> {
    /// Replaces the hooks. Combine several with a tuple: `(a, b)`.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # use transaction_manager::hooks::Hooks;
    /// struct Quiet;
    /// impl Hooks for Quiet {}
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_hooks((Quiet, Quiet));
    /// # let _ = manager;
    /// ```
    pub fn with_hooks<H2: Hooks>(self, hooks: H2) -> TransactionManager<C, H2, A, J> {
        TransactionManager {
            clock: self.clock,
            hooks,
            abandon: self.abandon,
            journal: self.journal,
            retry: self.retry,
            timeout: self.timeout,
            on_rollback_failure: self.on_rollback_failure,
            step_times: self.step_times,
            jitter_seed: self.jitter_seed,
            next_id: self.next_id,
            origin: self.origin,
        }
    }

    /// Finishes the rollbacks of transactions whose future is dropped before
    /// they end (cancellation), on tasks spawned with `spawner`. See
    /// [`AbandonPolicy`] and [`Spawned`].
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # use transaction_manager::backend::Spawner;
    /// struct Inline;
    /// impl Spawner for Inline {
    ///     fn spawn<F: core::future::Future<Output = ()> + Send + 'static>(&self, f: F) {
    ///         ManualClock::new().block_on(f)
    ///     }
    /// }
    /// let manager = TransactionManager::new(Frozen).with_spawner(Inline);
    /// # #[derive(Clone)] struct Frozen;
    /// # impl Clock for Frozen {
    /// #     type Sleep = core::future::Ready<()>;
    /// #     fn now(&self) -> core::time::Duration { core::time::Duration::ZERO }
    /// #     fn sleep(&self, _: core::time::Duration) -> Self::Sleep { core::future::ready(()) }
    /// # }
    /// # let _ = manager;
    /// ```
    pub fn with_spawner<Sp>(self, spawner: Sp) -> TransactionManager<C, H, Spawned<Sp>, J> {
        self.with_abandon_policy(Spawned(spawner))
    }

    /// Sets what happens to the rollbacks a dropped transaction still owes
    /// (default: [`Unattended`]). See [`AbandonPolicy`].
    pub fn with_abandon_policy<A2>(self, policy: A2) -> TransactionManager<C, H, A2, J> {
        TransactionManager {
            clock: self.clock,
            hooks: self.hooks,
            abandon: policy,
            journal: self.journal,
            retry: self.retry,
            timeout: self.timeout,
            on_rollback_failure: self.on_rollback_failure,
            step_times: self.step_times,
            jitter_seed: self.jitter_seed,
            next_id: self.next_id,
            origin: self.origin,
        }
    }

    /// Writes every transaction this manager runs to `journal`, its undo
    /// records encoded by `codec`, so that the rollbacks a transaction owes
    /// survive a crash or a power cut: after a restart,
    /// [`recover`](TransactionManager::recover) rolls back every
    /// transaction the journal shows unfinished.
    ///
    /// A journaled step's `Done` entry (its undo record) is durable before
    /// its value returns to the body, and a transaction's `Committed`
    /// before `run` returns `Ok`; ids come from the journal, unique across
    /// restarts. Only undo records the codec can encode can be journaled:
    /// a closure rollback does not compile with a journaled manager.
    ///
    /// ```
    /// # #[cfg(all(feature = "postcard", feature = "std"))] {
    /// use transaction_manager::*;
    /// use transaction_manager::journal::{Journal, MemoryJournal, Postcard};
    /// # fn journal() -> impl Journal { MemoryJournal::new() }
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_journal(journal(), Postcard::<1>);
    /// # let _ = manager;
    /// # }
    /// ```
    pub fn with_journal<J2, Co>(self, journal: J2, codec: Co) -> TransactionManager<C, H, A, Journaled<J2, Co>> {
        TransactionManager {
            clock: self.clock,
            hooks: self.hooks,
            abandon: self.abandon,
            journal: Journaled::new(journal, codec),
            retry: self.retry,
            timeout: self.timeout,
            on_rollback_failure: self.on_rollback_failure,
            step_times: self.step_times,
            jitter_seed: self.jitter_seed,
            next_id: self.next_id,
            origin: self.origin,
        }
    }

    /// The manager's journal ([`NoJournal`] unless set with
    /// [`with_journal`](TransactionManager::with_journal)).
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// What happens to the remaining rollbacks when one fails for good
    /// (default: [`RollbackFailurePolicy::Continue`]).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # use transaction_manager::rollback::RollbackFailurePolicy;
    /// # let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_rollback_failure_policy(RollbackFailurePolicy::Stop);
    /// # let _ = manager;
    /// ```
    #[must_use]
    pub fn with_rollback_failure_policy(mut self, policy: RollbackFailurePolicy) -> Self {
        self.on_rollback_failure = policy;
        self
    }

    /// Whether step records get their start and end times (default: yes).
    ///
    /// Each step reads the clock twice for them (and each rollback twice
    /// more); on tokio and smol a reading costs about 20 ns, which is most
    /// of what the library adds per step there. Without them
    /// [`StepRecord::started_at`](crate::StepRecord::started_at),
    /// `completed_at`, `duration` and the rollback times are `None`; the
    /// transaction's own start and end times are kept, and timeouts,
    /// backoff and deadlines work the same.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_step_times(false);
    /// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
    ///     tx.step("a").run(|| async { Ok::<_, &str>(()) }).await
    /// })).unwrap();
    /// assert_eq!(done.summary().steps()[0].started_at(), None);
    /// assert_eq!(done.summary().steps()[0].status(), StepStatus::Completed);
    /// ```
    #[must_use]
    pub fn with_step_times(mut self, on: bool) -> Self {
        self.step_times = on;
        self
    }

    /// The abandon policy.
    pub fn abandon_policy(&self) -> &A {
        &self.abandon
    }

    /// The retry policy of steps that do not set their own (and of their
    /// rollbacks).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_retry(RetryPolicy::new().with_max_retries(3));
    /// assert_eq!(manager.retry().max_retries(), 3);
    /// ```
    #[must_use]
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The per-attempt timeout of steps that do not set their own (and of
    /// their rollbacks).
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// # let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_timeout(Duration::from_secs(30));
    /// assert_eq!(manager.timeout(), Some(Duration::from_secs(30)));
    /// ```
    ///
    /// Takes any duration that converts into `core::time::Duration`, such as
    /// `embassy_time::Duration`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: impl Into<Duration>) -> Self {
        self.timeout = Some(timeout.into());
        self
    }

    /// Seeds the jitter of every transaction this manager runs (each
    /// transaction mixes in its id, so two transactions jitter differently
    /// but a rerun with the same seed and ids replays the same delays).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_jitter_seed(1234);
    /// # let _ = manager;
    /// ```
    #[must_use]
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = seed;
        self
    }

    /// The manager's clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The manager's hooks.
    pub fn hooks(&self) -> &H {
        &self.hooks
    }

    /// The default retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    /// The default per-attempt timeout.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

impl<C, H, A> TransactionManager<C, H, A, NoJournal> {
    /// Sets the origin of this manager's [`IdempotencyKey`](crate::durable::id::IdempotencyKey)s (a manager
    /// with a journal uses the journal's [`origin`](crate::durable::journal::Journal::origin)).
    /// Without a journal, ids count from `tx-1` in every process and every
    /// run, so the origin is what keeps two of them from handing the same
    /// key to an API: with `std`, one is drawn at random for each manager
    /// unless one is set here; on `no_std` it is 0 unless set here, so set
    /// it to something unique to the device and boot (a chip id mixed with
    /// a boot counter, a random number from the hardware). 0 means "none
    /// given".
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
    /// assert_eq!(manager.origin(), 0x2a);
    /// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
    ///     tx.step("a").execute_keyed(|key| async move { Ok::<_, &str>(key.to_string()) }).no_rollback().await
    /// }));
    /// assert_eq!(done.unwrap().into_value(), "tx-1.0-000000000000002a");
    /// ```
    #[must_use]
    pub fn with_origin(mut self, origin: u64) -> Self {
        self.origin = Origin::new(origin);
        self
    }
}

impl<C, H, A, J: JournalIds> TransactionManager<C, H, A, J> {
    /// The origin of this manager's [`IdempotencyKey`](crate::durable::id::IdempotencyKey)s: its journal's
    /// [`origin`](crate::durable::journal::Journal::origin), or without a journal the one
    /// set with [`with_origin`](TransactionManager::with_origin) (with
    /// `std`, a random one drawn for this manager otherwise; 0 on `no_std`).
    pub fn origin(&self) -> u64 {
        match self.journal.origin() {
            Some(origin) => origin,
            None => self.origin.get(),
        }
    }

    /// Prepares a transaction for `operation`. Choose where its undo records
    /// live ([`fixed`](TransactionBuilder::fixed), or with `alloc` the
    /// closure-friendly default), then [`run`](TransactionBuilder::run) it.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # let clock = ManualClock::new();
    /// # let manager = TransactionManager::new(&clock);
    /// let builder = manager.transaction("provision");
    /// assert_eq!(builder.info().operation(), "provision");
    /// ```
    pub fn transaction(&self, operation: impl Into<Name>) -> TransactionBuilder<'_, Self> {
        let id = self.next_id();
        self.builder(id, Some(operation.into()))
    }

    /// Prepares a transaction whose operation name is its id (`tx-N`).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # let clock = ManualClock::new();
    /// # let manager = TransactionManager::new(&clock);
    /// let builder = manager.unnamed_transaction();
    /// assert_eq!(builder.info().operation(), "tx-1");
    /// ```
    pub fn unnamed_transaction(&self) -> TransactionBuilder<'_, Self> {
        let id = self.next_id();
        self.builder(id, None)
    }

    fn builder(&self, id: TransactionId, operation: Option<Name>) -> TransactionBuilder<'_, Self> {
        TransactionBuilder {
            manager: self,
            unnamed: operation.is_none(),
            id_given: false,
            info: TransactionInfo { id, operation: operation.unwrap_or_else(|| Name::format(id)) },
            jitter_seed: None,
            on_rollback_failure: self.on_rollback_failure,
            interrupt: NoInterrupt,
            log: PhantomData,
        }
    }

    pub(crate) fn jitter_seed_for(&self, id: TransactionId) -> u64 {
        self.jitter_seed ^ id.get().wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn next_id(&self) -> TransactionId {
        if let Some(id) = self.journal.next_id() {
            return id;
        }
        #[cfg(target_has_atomic = "ptr")]
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        // Targets without atomic read-modify-write (thumbv6m) are single-core:
        // only an interrupt starting a transaction in between could repeat an id.
        #[cfg(not(target_has_atomic = "ptr"))]
        let id = {
            let id = self.next_id.load(Ordering::Relaxed);
            self.next_id.store(id.wrapping_add(1), Ordering::Relaxed);
            id
        };
        TransactionId::new(id as u64)
    }
}

#[cfg(feature = "alloc")]
impl<C: Clock, H: Hooks, A, J: JournalIds> TransactionManager<C, H, A, J> {
    /// Runs `body` as a transaction named `operation`, with closure
    /// rollbacks ([`BoxedRollback`](crate::BoxedRollback)) and no limit on
    /// steps. The same as `self.transaction(operation).run(body)`.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let result = clock.block_on(manager.run("provision", async |tx| {
    ///     let id = tx
    ///         .step("create_user")
    ///         .execute(|| async { Ok::<_, &str>(7) })
    ///         .rollback(|id| async move { println!("delete user {id}"); Ok::<_, &str>(()) })
    ///         .await?;
    ///     Ok::<_, StepError<&str>>(id)
    /// }));
    /// assert_eq!(result.unwrap().into_value(), 7);
    /// ```
    #[allow(clippy::type_complexity)]
    pub async fn run<T, B, F>(
        &self,
        operation: impl Into<Name>,
        body: F,
    ) -> Outcome<T, B, crate::ledger::rollback::BoxError, crate::util::storage::Unbounded>
    where
        // On the method, not the impl: rustc then names the fix for a
        // journaled manager (`JournalKeeps`'s message) instead of saying
        // there is no method `run`.
        J: JournalKeeps<crate::engine::run::Closures>
            + JournalFor<crate::ledger::rollback::BoxedRollback, CommitFailure = crate::timing::interrupt::Never>,
        A: AbandonPolicy<C, H, (), crate::ledger::rollback::BoxedRollback, crate::util::storage::Unbounded>,
        F: AsyncFnOnce(
            &mut Transaction<'_, Self, (), crate::ledger::rollback::BoxedRollback, crate::util::storage::Unbounded>,
        ) -> Result<T, B>,
    {
        self.transaction(operation).run(body).await
    }
}

impl<'m, M, L, I> TransactionBuilder<'m, M, L, I> {
    /// The id and operation the transaction will run with.
    pub fn info(&self) -> &TransactionInfo {
        &self.info
    }

    /// Uses `id` instead of the one the manager assigned (for example an id
    /// from an incoming request). Not for a manager with a journal: there
    /// the id comes from the journal, which alone knows it was never used,
    /// and a transaction given one is refused before it starts (its error
    /// is a [`JournalFailure`](crate::journal::JournalFailure) for the `Begin` entry).
    pub fn with_id(mut self, id: TransactionId) -> Self {
        self.info.id = id;
        self.id_given = true;
        if self.unnamed {
            self.info.operation = Name::format(id);
        }
        self
    }

    /// Seeds this transaction's jitter.
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter_seed = Some(seed);
        self
    }

    /// What happens to the remaining rollbacks when one fails for good, for
    /// this transaction.
    pub fn with_rollback_failure_policy(mut self, policy: RollbackFailurePolicy) -> Self {
        self.on_rollback_failure = policy;
        self
    }

    /// Gives the whole transaction a deadline, measured on its clock from
    /// when the body starts. When it passes, the body is dropped at its
    /// current await point (the step in progress is abandoned and counts as
    /// failed), the completed steps are rolled back — the rollback itself is
    /// not cut short — and the body's error is built from an
    /// [`Interrupted`](crate::timing::interrupt::Interrupted) (`B: From<Interrupted>`; `StepError` qualifies).
    ///
    /// No step and no retry starts at or after the deadline: with
    /// `Duration::ZERO` no step runs at all, and an attempt that would end
    /// exactly at the deadline is cut (the deadline wins the tie; the step
    /// counts as uncertain).
    ///
    /// Takes any duration that converts into `core::time::Duration`, such as
    /// `embassy_time::Duration`.
    pub fn with_deadline(self, deadline: impl Into<Duration>) -> TransactionBuilder<'m, M, L, (I, Deadline)> {
        let deadline = deadline.into();
        self.with_interrupt(|previous| (previous, Deadline(deadline)))
    }

    /// Stops the transaction when `signal` completes, as
    /// [`with_deadline`](TransactionBuilder::with_deadline) does when its
    /// deadline passes: the body is dropped and the completed steps are
    /// rolled back before `run` returns. The way to cancel a transaction
    /// without losing its rollback on any runtime, including `no_std`.
    ///
    /// The signal is checked before the body each time the transaction is
    /// polled: a signal that has already completed (`async {}`) starts no
    /// step.
    pub fn cancel_on<F: core::future::Future<Output = ()>>(
        self,
        signal: F,
    ) -> TransactionBuilder<'m, M, L, (I, Cancel<F>)> {
        self.with_interrupt(|previous| (previous, Cancel(signal)))
    }

    fn with_interrupt<I2>(self, add: impl FnOnce(I) -> I2) -> TransactionBuilder<'m, M, L, I2> {
        self.rebuild(add)
    }

    /// Keeps at most `N` steps, inline, with undo records of type `U`: no
    /// allocator needed. Step `N + 1` fails with `CapacityExceeded` before
    /// it runs; with `N = 0` every step does. `U` is usually an enum
    /// implementing [`Rollback`], one variant per kind of step; use
    /// [`NoRollback`](crate::NoRollback) when no step has a rollback.
    ///
    /// The records live inside the transaction's future, so its size grows
    /// with `N`: measured on x86_64 with `std`, a one-step transaction's
    /// future is 1.6 KiB with `N = 1` and about 360 bytes more per slot —
    /// `Fixed<64>` 24 KiB, `Fixed<2048>` 721 KiB, more than a thread's
    /// default stack. Keep `N` to what the transaction needs, box the
    /// future (`Box::pin`) when `N` is large, or use
    /// [`unbounded`](TransactionBuilder::unbounded) (heap) for long
    /// transactions.
    pub fn fixed<U, const N: usize>(self) -> TransactionBuilder<'m, M, Records<U, crate::util::storage::Fixed<N>>, I> {
        self.with_log()
    }

    /// Keeps any number of steps on the heap, with undo records of type `U`.
    #[cfg(feature = "alloc")]
    pub fn unbounded<U>(self) -> TransactionBuilder<'m, M, Records<U, crate::util::storage::Unbounded>, I> {
        self.with_log()
    }

    /// Closure rollbacks that need not be `Send`
    /// ([`LocalBoxedRollback`](crate::ledger::rollback::LocalBoxedRollback)), any number of
    /// steps. For transactions that stay on one thread.
    #[cfg(feature = "alloc")]
    pub fn local<'r>(self) -> TransactionBuilder<'m, M, crate::engine::run::LocalClosures<'r>, I> {
        self.with_log()
    }

    fn with_log<L2>(self) -> TransactionBuilder<'m, M, L2, I> {
        self.rebuild(|interrupt| interrupt)
    }

    /// The same builder with another undo log type and interrupt.
    fn rebuild<L2, I2>(self, interrupt: impl FnOnce(I) -> I2) -> TransactionBuilder<'m, M, L2, I2> {
        TransactionBuilder {
            manager: self.manager,
            info: self.info,
            unnamed: self.unnamed,
            id_given: self.id_given,
            jitter_seed: self.jitter_seed,
            on_rollback_failure: self.on_rollback_failure,
            interrupt: interrupt(self.interrupt),
            log: PhantomData,
        }
    }
}

impl<C: Clock, H: Hooks, A, J, L, I> TransactionBuilder<'_, TransactionManager<C, H, A, J>, L, I>
where
    I: Interrupt<C>,
{
    /// Runs `body` as the transaction, with no context (`()`).
    ///
    /// `body` receives the [`Transaction`] and adds steps to it. If it
    /// returns `Ok`, the transaction commits. If it returns `Err` — a step's
    /// error passed on with `?`, or an error of its own — every completed
    /// step with a rollback is rolled back, latest first, and the error comes
    /// back in a [`TransactionError`](crate::TransactionError) with every rollback failure. With the
    /// `std` feature, a panic in the body rolls back too, then resumes.
    #[allow(clippy::type_complexity)]
    pub async fn run<T, B, F>(self, body: F) -> Outcome<T, B, <L::Undo as Rollback<()>>::Error, L::Storage>
    where
        L: UndoLog,
        L::Undo: Rollback<()>,
        A: AbandonPolicy<C, H, (), L::Undo, L::Storage>,
        J: JournalKeeps<L> + JournalFor<L::Undo>,
        J::CommitFailure: IntoBodyError<B>,
        I::Output: IntoBodyError<B>,
        F: AsyncFnOnce(&mut Transaction<'_, TransactionManager<C, H, A, J>, (), L::Undo, L::Storage>) -> Result<T, B>,
    {
        self.run_with(&mut (), body).await
    }

    /// Runs `body` as the transaction, lending `context` mutably to every
    /// step's execute and every rollback, so steps can use `&mut`
    /// resources (peripherals, a connection) without `RefCell`. The body
    /// reaches it with [`Transaction::context`].
    #[allow(clippy::type_complexity)]
    pub fn run_with<Ctx: ?Sized, T, B, F>(
        self,
        context: &mut Ctx,
        body: F,
    ) -> impl Future<Output = Outcome<T, B, <L::Undo as Rollback<Ctx>>::Error, L::Storage>>
    where
        L: UndoLog,
        L::Undo: Rollback<Ctx>,
        A: AbandonPolicy<C, H, Ctx, L::Undo, L::Storage>,
        J: JournalKeeps<L> + JournalFor<L::Undo>,
        J::CommitFailure: IntoBodyError<B>,
        I::Output: IntoBodyError<B>,
        F: AsyncFnOnce(&mut Transaction<'_, TransactionManager<C, H, A, J>, Ctx, L::Undo, L::Storage>) -> Result<T, B>,
    {
        // Polled from a function of its own: the caller's frame does not
        // grow by the transaction's (on a Cortex-M3, the firmware's stack
        // high-water mark fell by 264 bytes and `.text` by 72).
        crate::timing::future::outlined(self.run_with_inner(context, body, Returned))
    }

    /// Runs `body` as [`run_with`](TransactionBuilder::run_with) does, and
    /// writes the outcome into `outcome` instead of returning it.
    ///
    /// For small stacks: a returned outcome (with a `fixed` log, its
    /// summary, every rollback failure and the cause: 856 bytes for the
    /// five-step firmware bring-up on a Cortex-M3) passes through the
    /// awaiting task's stack frame twice, once as the ready poll and once
    /// as the value. Written in place, it does not; keep `outcome` in the
    /// task (across the `.await`) and read it by reference. On the firmware
    /// example (thumbv7m) the stack high-water mark is 2,016 bytes with it
    /// and 3,632 with `run_with`; the task's future grows by the outcome
    /// instead.
    ///
    /// Whatever `outcome` held before is dropped when the transaction ends.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let mut counter = 0u32;
    /// let mut outcome = None;
    /// clock.block_on(manager.transaction("count").fixed::<NoRollback, 1>().run_with_into(
    ///     &mut counter,
    ///     &mut outcome,
    ///     async |tx| {
    ///         tx.step("add").execute_with(async |n: &mut u32| { *n += 1; Ok::<_, &str>(()) }).no_rollback().await?;
    ///         Ok::<_, StepError<&str>>(7)
    ///     },
    /// ));
    /// let committed = outcome.as_ref().unwrap().as_ref().unwrap();
    /// assert_eq!((*committed.value(), counter), (7, 1));
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn run_with_into<Ctx: ?Sized, T, B, F>(
        self,
        context: &mut Ctx,
        outcome: &mut Option<Outcome<T, B, <L::Undo as Rollback<Ctx>>::Error, L::Storage>>,
        body: F,
    ) -> impl Future<Output = ()>
    where
        L: UndoLog,
        L::Undo: Rollback<Ctx>,
        A: AbandonPolicy<C, H, Ctx, L::Undo, L::Storage>,
        J: JournalKeeps<L> + JournalFor<L::Undo>,
        J::CommitFailure: IntoBodyError<B>,
        I::Output: IntoBodyError<B>,
        F: AsyncFnOnce(&mut Transaction<'_, TransactionManager<C, H, A, J>, Ctx, L::Undo, L::Storage>) -> Result<T, B>,
    {
        crate::timing::future::outlined(self.run_with_inner(context, body, outcome))
    }
}
