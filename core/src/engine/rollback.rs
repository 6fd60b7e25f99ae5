//! The rollback loop: pays a transaction's undo records back, latest
//! first, each with its own retries and timeout, and writes each outcome
//! to the step's record, the hooks and the journal.

use core::fmt;
use core::future::Future;
use core::marker::PhantomData;

use crate::ledger::book::{Ledger, RollbackFailurePolicy, UndoRecord, stamp};
use crate::ledger::owed::Paying;
#[cfg(feature = "alloc")]
use crate::ledger::owed::PayingBatch;
use crate::observe::hooks::hook_call;
use crate::timing::future::TimedOut;
use crate::timing::future::with_timeout;
use crate::trace::within;
use crate::util::panic::guarded_call;
#[cfg(feature = "alloc")]
use crate::util::storage::List;
use crate::{
    durable::entry::{Entry, EntryKind},
    engine::binding::JournalFor,
};
use crate::{
    durable::id::TransactionId,
    ledger::{
        error::{RollbackErrorKind, RollbackFailure},
        record::{StepRecord, TransactionInfo},
        rollback::Rollback,
        summary::Summary,
    },
    observe::hooks::{Hooks, StepEvent},
    timing::{clock::Clock, retry::SplitMix64},
    util::storage::Storage,
};

/// How a transaction without a context (`()`) lends one to each of a
/// group's rollbacks running at the same time
/// ([`Group::roll_back_concurrently`](crate::group::Group::roll_back_concurrently)):
/// a function, set where `Ctx = ()` is known, that the generic rollback
/// loop calls once per rollback. Without it (`NONE`, and always without
/// `alloc`) rollbacks run one after another.
pub(crate) struct Fork<Ctx: ?Sized> {
    #[cfg(feature = "alloc")]
    pub(crate) lend: Option<for<'c> fn(&'c mut ()) -> &'c mut Ctx>,
    ctx: PhantomData<fn(&mut Ctx)>,
}

impl<Ctx: ?Sized> Fork<Ctx> {
    /// Rollbacks one after another.
    pub(crate) const NONE: Self = Self {
        #[cfg(feature = "alloc")]
        lend: None,
        ctx: PhantomData,
    };
}

impl Fork<()> {
    /// Each rollback gets a `()` of its own.
    #[cfg(feature = "alloc")]
    pub(crate) const UNIT: Self = Self { lend: Some(|unit| unit), ctx: PhantomData };
}

impl<Ctx: ?Sized> Clone for Fork<Ctx> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Ctx: ?Sized> Copy for Fork<Ctx> {}

/// How the rollback loop calls one undo record.
pub(crate) trait UndoCall<U, Ctx: ?Sized> {
    type Error: fmt::Display;

    fn call<'a>(undo: &'a mut U, ctx: &'a mut Ctx) -> impl Future<Output = Result<(), Self::Error>> + 'a;

    /// Whether an attempt that failed with `error` may be retried.
    fn retries(undo: &mut U, error: &Self::Error) -> bool;
}

/// Through [`Rollback`], with the transaction's context.
pub(crate) struct ViaRollback;

impl<U: Rollback<Ctx>, Ctx: ?Sized> UndoCall<U, Ctx> for ViaRollback {
    type Error = U::Error;

    fn call<'a>(undo: &'a mut U, ctx: &'a mut Ctx) -> impl Future<Output = Result<(), U::Error>> + 'a {
        undo.rollback(ctx)
    }

    fn retries(undo: &mut U, error: &U::Error) -> bool {
        undo.retry_if(error)
    }
}

impl<U, S: Storage> Ledger<U, S> {
    /// Rolls back every undo record, latest first, each with its own
    /// retries and timeout, and returns the rollbacks that failed for good.
    ///
    /// A record leaves the ledger only once its rollback is over, so if this
    /// future is dropped mid-rollback, the record being rolled back and all
    /// earlier ones are still owed.
    pub(crate) fn roll_back<'a, K, Ctx, C, H, J>(
        &'a mut self,
        ctx: &'a mut Ctx,
        fork: Fork<Ctx>,
        services: Services<'a, C, H, J>,
    ) -> impl Future<Output = S::List<RollbackFailure<K::Error>>> + 'a
    where
        K: UndoCall<U, Ctx> + 'a,
        Ctx: ?Sized,
        C: Clock,
        H: Hooks,
        J: JournalFor<U>,
    {
        self.roll_back_to::<K, Ctx, C, H, J>(0, ctx, fork, services)
    }

    /// Rolls back the undo records above `floor` (a scope's savepoint: the
    /// number of records when it started), latest first, as
    /// [`roll_back`](Ledger::roll_back) does for all of them.
    pub(crate) async fn roll_back_to<K, Ctx, C, H, J>(
        &mut self,
        floor: usize,
        ctx: &mut Ctx,
        fork: Fork<Ctx>,
        services: Services<'_, C, H, J>,
    ) -> S::List<RollbackFailure<K::Error>>
    where
        K: UndoCall<U, Ctx>,
        Ctx: ?Sized,
        C: Clock,
        H: Hooks,
        J: JournalFor<U>,
    {
        let mut failures = S::List::default();
        self.roll_back_into::<K, Ctx, C, H, J>(floor, ctx, fork, services, &mut failures).await;
        failures
    }

    /// [`roll_back_to`](Ledger::roll_back_to), adding the failures to a
    /// list the caller keeps: the list is not moved out of this future's
    /// state when it ends (on a Cortex-M3 that move of five failures was a
    /// `memmove` of 288 bytes, and linked `memmove` itself).
    pub(crate) async fn roll_back_into<K, Ctx, C, H, J>(
        &mut self,
        floor: usize,
        ctx: &mut Ctx,
        fork: Fork<Ctx>,
        services: Services<'_, C, H, J>,
        failures: &mut S::List<RollbackFailure<K::Error>>,
    ) where
        K: UndoCall<U, Ctx>,
        Ctx: ?Sized,
        C: Clock,
        H: Hooks,
        J: JournalFor<U>,
    {
        // `services` is used through its fields, not destructured: copies
        // of its three references would be kept in this future beside it
        // (24 bytes in every transaction future).
        if self.owed() <= floor {
            return;
        }
        if self.on_rollback_failure == RollbackFailurePolicy::Stop && self.summary.rollback_errors() > 0 {
            // An earlier rollback of this transaction (a scope's) failed for
            // good: `Stop` stops the whole transaction's rollback there.
            self.skip_down_to(floor);
            return;
        }
        tm_debug!(
            "{} `{}`: {} undo record(s) to run, latest first",
            self.summary.info().id,
            self.summary.info().operation,
            self.owed() - floor
        );
        let hook = if H::ENABLED {
            hook_call(services.hooks, || services.hooks.on_rollback_start(self.summary.info())).await
        } else {
            Ok(())
        };
        if let Err(panic) = hook {
            tm_error!(
                "{} `{}`: on_rollback_start hook panicked: {}",
                self.summary.info().id,
                self.summary.info().operation,
                panic
            );
        }
        let step_times = self.step_times;
        #[cfg(not(feature = "alloc"))]
        let _ = fork;
        // Hooks only observe: a panic in one is logged and neither stops nor
        // shortens a rollback.
        while self.owed() > floor {
            #[cfg(feature = "alloc")]
            if let Some(fork) = fork.lend {
                let batch = self.batch_len(floor);
                if batch > 1 {
                    let stop = self.roll_back_batch::<K, Ctx, C, H, J>(batch, fork, services, failures);
                    if stop.await {
                        self.skip_down_to(floor);
                    }
                    continue;
                }
            }
            let Some(Paying { undo, record, info, rng }) = self.paying() else { break };
            let index = undo.step;
            if record.ended_in_batch() {
                // Rolled back by a concurrent batch that was dropped before
                // it took its records out: not again.
                self.paid();
                continue;
            }
            let env = RollbackEnv { info, clock: services.clock, hooks: services.hooks, step_times };
            let failed = roll_back_one::<K, U, Ctx, C, H>(record, undo, &mut *ctx, env, rng).await;
            Self::journal_rollback_end(&self.summary, index, failed.is_none(), services.journal).await;
            // The rollback is over: the record leaves the ledger before the
            // step's last hook, so a drop during that hook does not repeat it
            // (and, with `Stop`, does not roll back the steps it skips).
            self.paid();
            if failed.is_some() && self.on_rollback_failure == RollbackFailurePolicy::Stop {
                self.skip_down_to(floor);
            }
            Self::rollback_ended_hook(&self.summary, index, failed.is_none(), services.hooks).await;
            // Cannot fail: there are no more failures than undo records,
            // and both lists have the same capacity.
            crate::util::storage::push_some(failures, failed);
        }
    }

    /// With a journal, the lazy `Undone` or `UndoFailed` of one step.
    async fn journal_rollback_end<J: JournalFor<U>>(summary: &Summary<S>, index: usize, undone: bool, journal: &J) {
        journal_rollback_end(summary.info().id, &summary.steps()[index], undone, journal).await;
    }

    /// The last hook of a step's rollback, once its record left the ledger.
    async fn rollback_ended_hook<H: Hooks>(summary: &Summary<S>, index: usize, undone: bool, hooks: &H) {
        if H::ENABLED {
            let step = &summary.steps()[index];
            let event = StepEvent { transaction: summary.info(), step, attempt: step.rollback_attempts() };
            let hook = if undone {
                hook_call(hooks, || hooks.on_step_rollback(&event)).await
            } else {
                hook_call(hooks, || hooks.on_step_rollback_failure(&event)).await
            };
            if let Err(panic) = hook {
                tm_error!("a rollback hook of step `{}` panicked: {}", step.name, panic);
            }
        }
    }

    /// How many of the latest records above `floor` belong to one group
    /// that rolls back concurrently ([`Group::roll_back_concurrently`](crate::group::Group::roll_back_concurrently)).
    #[cfg(feature = "alloc")]
    fn batch_len(&self, floor: usize) -> usize {
        let owed = &self.owed_records()[floor..];
        let Some(top) = owed.last() else { return 0 };
        let group = self.summary.steps()[top.step].rollback_group();
        if group == 0 {
            return 0;
        }
        owed.iter().rev().take_while(|u| self.summary.steps()[u.step].rollback_group() == group).count()
    }

    /// Rolls back the latest `batch` records at the same time, each with its
    /// own retries and timeout, and takes them out of the ledger once all
    /// are over. Their failures are added to `failures` in the order they
    /// ended; returns whether to stop (a failure with `Stop`: the whole
    /// batch still ran).
    ///
    /// If this future is dropped mid-way, every record of the batch is still
    /// owed; those whose rollback had ended are recognised by their status
    /// and not rolled back again.
    #[cfg(feature = "alloc")]
    async fn roll_back_batch<K, Ctx, C, H, J>(
        &mut self,
        batch: usize,
        fork: for<'c> fn(&'c mut ()) -> &'c mut Ctx,
        services: Services<'_, C, H, J>,
        failures: &mut S::List<RollbackFailure<K::Error>>,
    ) -> bool
    where
        K: UndoCall<U, Ctx>,
        Ctx: ?Sized,
        C: Clock,
        H: Hooks,
        J: JournalFor<U>,
    {
        use alloc::boxed::Box;
        use alloc::vec::Vec;

        let Services { clock, hooks, journal } = services;

        let first = self.owed() - batch;
        let step_times = self.step_times;
        let PayingBatch { undo, records, info, rng } = self.paying_batch(batch);
        let env = RollbackEnv { info, clock, hooks, step_times };
        tm_debug!("{} `{}`: rolling back {} steps at the same time", env.info.id, env.info.operation, batch);
        // Each rollback gets the step record and undo record it owns, a
        // context of its own (the transaction has none: `()`), and a
        // generator seeded from the transaction's.
        let mut records: Vec<Option<&mut StepRecord>> = records.iter_mut().map(Some).collect();
        let mut units: Vec<()> = Vec::new();
        units.resize(batch, ());
        // Started latest first, as one after another would.
        let mut rollbacks: Vec<_> = undo
            .iter_mut()
            .rev()
            .zip(units.iter_mut())
            .filter_map(|(entry, unit)| {
                let index = entry.step;
                let record = records.get_mut(index)?.take()?;
                if record.ended_in_batch() {
                    // Its rollback ended in a batch dropped earlier: taken
                    // out with the others, not run (nor reported) again.
                    return None;
                }
                let mut rng = SplitMix64::new(rng.next_u64());
                let rollback = async move {
                    let failed = roll_back_one::<K, U, Ctx, C, H>(&mut *record, entry, fork(unit), env, &mut rng).await;
                    // Its `Undone` (or `UndoFailed`) as it ends, not once the
                    // whole batch did: a drop in between must not make
                    // recovery run a finished rollback again.
                    journal_rollback_end(env.info.id, record, failed.is_none(), journal).await;
                    failed
                };
                Some((index, Some(Box::pin(rollback))))
            })
            .collect();
        let mut ended: Vec<(usize, Option<RollbackFailure<K::Error>>)> = Vec::with_capacity(batch);
        core::future::poll_fn(|cx| {
            for (index, slot) in rollbacks.iter_mut() {
                if let Some(rollback) = slot {
                    if let core::task::Poll::Ready(failed) = rollback.as_mut().poll(cx) {
                        *slot = None;
                        ended.push((*index, failed));
                    }
                }
            }
            if ended.len() == rollbacks.len() { core::task::Poll::Ready(()) } else { core::task::Poll::Pending }
        })
        .await;
        drop(rollbacks);
        let mut stop = false;
        let mut outcomes: Vec<(usize, bool)> = Vec::with_capacity(ended.len());
        for (index, failed) in ended {
            outcomes.push((index, failed.is_none()));
            if let Some(failure) = failed {
                stop |= self.on_rollback_failure == RollbackFailurePolicy::Stop;
                // Cannot fail: there are no more failures than undo records.
                let _ = failures.push(failure);
            }
        }
        self.paid_down_to(first);
        for &(index, undone) in &outcomes {
            Self::rollback_ended_hook(&self.summary, index, undone, hooks).await;
        }
        stop
    }
}

/// With a journal, the lazy `Undone` or `UndoFailed` of one step: if it is
/// lost, recovery repeats this (idempotent) rollback.
async fn journal_rollback_end<U, J: JournalFor<U>>(id: TransactionId, record: &StepRecord, undone: bool, journal: &J) {
    if J::ENABLED {
        let step = u32::try_from(record.index).unwrap_or(u32::MAX);
        let entry = if undone {
            Entry::new(id, Some(step), EntryKind::Undone)
        } else {
            // The error, for the list of what is owed.
            Entry::new(id, Some(step), EntryKind::UndoFailed).with_text(record.rollback_error().unwrap_or_default())
        };
        if let Err(failure) = journal.write(&entry).await {
            let failure: crate::durable::journal::JournalFailure = failure.into();
            tm_error!("{}: {}", id, failure);
        }
    }
}

/// What every rollback of a transaction shares.
/// What the rollback loop runs with: the clock for its timeouts and
/// backoffs, the hooks it reports to, and the journal its `Undone` and
/// `UndoFailed` entries go to. One value, passed down whole.
pub(crate) struct Services<'a, C, H, J> {
    pub(crate) clock: &'a C,
    pub(crate) hooks: &'a H,
    pub(crate) journal: &'a J,
}

impl<C, H, J> Clone for Services<'_, C, H, J> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, H, J> Copy for Services<'_, C, H, J> {}

pub(crate) struct RollbackEnv<'a, C, H> {
    pub(crate) info: &'a TransactionInfo,
    pub(crate) clock: &'a C,
    pub(crate) hooks: &'a H,
    pub(crate) step_times: bool,
}

impl<C, H> Clone for RollbackEnv<'_, C, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<C, H> Copy for RollbackEnv<'_, C, H> {}

/// Rolls back one step: its attempts, each with the record's timeout,
/// retried by the record's policy with backoff; writes the outcome into the
/// step's record. Returns the failure if the rollback failed for good.
async fn roll_back_one<K, U, Ctx, C, H>(
    record: &mut StepRecord,
    entry: &mut UndoRecord<U>,
    ctx: &mut Ctx,
    env: RollbackEnv<'_, C, H>,
    rng: &mut SplitMix64,
) -> Option<RollbackFailure<K::Error>>
where
    K: UndoCall<U, Ctx>,
    Ctx: ?Sized,
    C: Clock,
    H: Hooks,
{
    let RollbackEnv { info, clock, hooks, step_times } = env;
    record.rollback_begins(stamp(step_times, clock));
    let mut retry = 0u32;
    loop {
        let attempt = retry.saturating_add(1);
        record.rollback_attempt_begins(attempt);
        tm_debug!("{} `{}`: rolling back step `{}`, attempt {}", info.id, info.operation, record.name, attempt);
        let span = tm_span!("rollback", step = record.name, index = record.index, attempt = attempt);
        let undo = &mut entry.undo;
        let timeout = entry.timeout.get();
        let result = within(&span, guarded_call(|| with_timeout(clock, timeout, K::call(undo, &mut *ctx)))).await;
        let kind = match result {
            Ok(Some(Ok(()))) => {
                crate::trace::outcome(&span, "ok");
                record.rolled_back(stamp(step_times, clock));
                tm_info!("{} `{}`: step `{}` rolled back", info.id, info.operation, record.name);
                return None;
            }
            Ok(Some(Err(error))) => RollbackErrorKind::Failed(error),
            Ok(None) => RollbackErrorKind::TimedOut { timeout: timeout.unwrap_or_default() },
            Err(panic) => RollbackErrorKind::Panicked(panic),
        };
        // A permanent error (its condition said so) is not retried.
        let verdict = match &kind {
            RollbackErrorKind::Failed(error) if retry < entry.retry.max_retries() => {
                crate::timing::condition::ask(|| K::retries(&mut entry.undo, error))
            }
            _ => crate::timing::condition::Verdict::Retry,
        };
        match &kind {
            RollbackErrorKind::Failed(error) if verdict.retries() => record.rollback_attempt_failed(error),
            RollbackErrorKind::Failed(error) => {
                record.rollback_attempt_failed(&crate::timing::condition::NotRetried(&verdict, error));
            }
            RollbackErrorKind::TimedOut { timeout } => record.rollback_attempt_failed(&TimedOut(*timeout)),
            RollbackErrorKind::Panicked(message) => record.rollback_attempt_failed(&Panicked(message)),
        }
        crate::trace::outcome(
            &span,
            match &kind {
                RollbackErrorKind::TimedOut { .. } => "timeout",
                RollbackErrorKind::Panicked(_) => "panic",
                _ => "error",
            },
        );
        tm_event!(error, &span, "rollback attempt failed", error = record.rollback_error().unwrap_or_default());
        if retry >= entry.retry.max_retries() || !verdict.retries() {
            record.rollback_failed(stamp(step_times, clock));
            tm_error!(
                "{} `{}`: rollback of step `{}` failed for good on attempt {}: {}",
                info.id,
                info.operation,
                record.name,
                attempt,
                record.rollback_error().unwrap_or_default(),
            );
            // Its hook runs once the record left the ledger.
            return Some(RollbackFailure { step: record.name.clone(), index: record.index, kind });
        }
        tm_warn!(
            "{} `{}`: rollback of step `{}` attempt {} failed: {}; retrying",
            info.id,
            info.operation,
            record.name,
            attempt,
            record.rollback_error().unwrap_or_default(),
        );
        if H::ENABLED {
            let event = StepEvent { transaction: info, step: record, attempt };
            if let Err(panic) = within(&span, hook_call(hooks, || hooks.on_step_rollback_failure(&event))).await {
                tm_error!("on_step_rollback_failure hook panicked: {}", panic);
            }
        }
        drop(kind);
        let delay = entry.retry.jittered_delay(retry, rng);
        tm_event!(info, &span, "retrying rollback", delay = crate::trace::AsDebug(delay));
        crate::trace::close(span);
        if !delay.is_zero() {
            if let Err(panic) = guarded_call(|| clock.sleep(delay)).await {
                // The clock broke its contract: this rollback ends as
                // failed, the earlier ones still run.
                record.rollback_broke(&Panicked(&panic), stamp(step_times, clock));
                tm_error!("the clock's sleep() panicked in a rollback backoff: {}", panic);
                let kind = RollbackErrorKind::Panicked(panic);
                return Some(RollbackFailure { step: record.name.clone(), index: record.index, kind });
            }
        }
        retry += 1;
    }
}

/// The text recorded for a panic.
pub(crate) struct Panicked<'a>(pub(crate) &'a crate::util::text::PanicMessage);

impl fmt::Display for Panicked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "panicked: {}", self.0)
    }
}
