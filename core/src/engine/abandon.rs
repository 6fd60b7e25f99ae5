//! What becomes of a transaction whose future is dropped before it
//! finished: the rollbacks it still owes are handed to a policy.

use core::fmt;
use core::future::Future;

use crate::engine::binding::NoJournal;
use crate::engine::rollback::{Fork, Services, UndoCall, ViaRollback};
use crate::ledger::abandoned::Abandoned;
use crate::ledger::rollback::DetachedRollback;
use crate::{
    engine::spawn::Spawner,
    ledger::{
        error::{RollbackFailure, RollbackState},
        summary::Summary,
    },
    observe::hooks::Hooks,
    timing::clock::Clock,
    util::storage::Storage,
};

impl<U, S: Storage> Abandoned<U, S> {
    /// Rolls back the owed steps, latest first, with each step's retries and
    /// timeout, calling the rollback hooks and, at the end,
    /// `on_transaction_complete` with `success = false`.
    ///
    /// If this future is dropped half-way, the undo records not rolled back
    /// yet are dropped with it and reported at error level, one line per
    /// step; run it to completion (a task of its own) to avoid that.
    pub async fn roll_back<Ctx, C, H>(mut self, ctx: &mut Ctx, clock: &C, hooks: &H) -> RollbackReport<U::Error, S>
    where
        U: crate::ledger::rollback::Rollback<Ctx>,
        Ctx: ?Sized,
        C: Clock,
        H: Hooks,
    {
        let failures = self
            .ledger
            .roll_back::<ViaRollback, _, _, _, _>(ctx, Fork::NONE, Services { clock, hooks, journal: &NoJournal })
            .await;
        self.ledger.ended(clock.now());
        let summary = &self.ledger.summary;
        if H::ENABLED {
            if let Err(panic) =
                crate::util::panic::guarded(hooks.on_transaction_complete(summary.info(), false, summary)).await
            {
                tm_error!("{}: on_transaction_complete hook panicked: {}", summary.info().id, panic);
            }
        }
        RollbackReport { failures, summary: self.ledger.take_summary() }
    }

    /// Rolls back on a detached task: no context, no hooks, a `Send`
    /// future (see [`DetachedRollback`]).
    pub(crate) async fn roll_back_detached<C: Clock>(mut self, clock: &C) -> RollbackReport<U::Error, S>
    where
        U: DetachedRollback,
    {
        let span = tm_span!(
            "abandoned_transaction",
            id = self.ledger.summary.info().id,
            operation = self.ledger.summary.info().operation
        );
        let failures = crate::trace::within(
            &span,
            self.ledger.roll_back::<ViaDetached, (), C, (), _>(
                &mut (),
                Fork::NONE,
                Services { clock, hooks: &(), journal: &NoJournal },
            ),
        )
        .await;
        self.ledger.ended(clock.now());
        RollbackReport { failures, summary: self.ledger.take_summary() }
    }
}

/// What rolling back an [`Abandoned`] transaction did.
pub struct RollbackReport<RE, S: Storage> {
    failures: S::List<RollbackFailure<RE>>,
    summary: Summary<S>,
}

impl<RE, S: Storage> RollbackReport<RE, S> {
    /// The rollbacks that failed for good.
    pub fn failures(&self) -> &[RollbackFailure<RE>] {
        &self.failures
    }

    /// [`Clean`](RollbackState::Clean) when every owed rollback succeeded.
    pub fn rollback_state(&self) -> RollbackState {
        RollbackState::of(self.failures.len(), &self.summary)
    }

    /// The transaction's summary after the rollback.
    pub fn summary(&self) -> &Summary<S> {
        &self.summary
    }
}

impl<RE: fmt::Debug, S: Storage> fmt::Debug for RollbackReport<RE, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RollbackReport").field("failures", &self.failures()).field("summary", &self.summary).finish()
    }
}

/// Decides what happens to the rollbacks a dropped transaction still owes.
///
/// A transaction's future can be dropped at any await point — a `select!`
/// that picked another branch, a request handler whose client went away, a
/// task aborted. Its completed steps must not be forgotten: before anything
/// else, the transaction marks the step in progress (if any) as failed,
/// logs an error and calls the synchronous hook
/// [`Hooks::on_transaction_abandoned`]; then it hands what it still owes to
/// the manager's policy:
///
/// - [`Unattended`] (the default) keeps nothing: the owed rollbacks are
///   reported (log, hook) and dropped. Where no task can be spawned, avoid
///   dropping transactions: stop them with a deadline or a cancel signal
///   instead, which rolls back before the transaction returns.
/// - [`Spawned`] (`TransactionManager::with_spawner`) finishes the rollback
///   on a spawned task, to completion.
/// - Your own policy can, for example, send the [`Abandoned`] records over a
///   static channel to a firmware's rollback task.
///
/// `abandon` runs inside `Drop`: it must not block, and cannot await.
///
/// A transaction run inside a step of another is dropped when the outer
/// transaction's deadline or cancel signal cuts that step: its rollbacks go
/// to *its* manager's policy. With [`Unattended`] they are only reported;
/// give that manager a spawner, or give the nested transaction an earlier
/// deadline or its own cancel signal so it rolls back before it is cut.
#[diagnostic::on_unimplemented(
    message = "the manager's abandon policy `{Self}` cannot take over this transaction's rollbacks",
    note = "`Spawned` (from `with_spawner`) finishes the rollbacks of a dropped transaction on a \
            spawned task: its undo records must implement `DetachedRollback` (closure rollbacks \
            do; an undo enum that needs the context cannot) and its clock must be `Clone + Send + \
            Sync + 'static`. Use a manager without a spawner for this transaction."
)]
pub trait AbandonPolicy<C, H, Ctx: ?Sized, U, S: Storage> {
    /// Whether the policy takes the records at all. `false` only for
    /// [`Unattended`]: the transaction then reports what it owes where it
    /// is, without moving its records out (which would cost a copy of them
    /// on the stack in every future that can drop a transaction).
    const TAKES_RECORDS: bool = true;

    /// Takes over the owed rollbacks of a dropped transaction.
    fn abandon(&self, clock: &C, hooks: &H, abandoned: Abandoned<U, S>);
}

/// The default [`AbandonPolicy`]: a dropped transaction's owed rollbacks
/// are reported (an error log and
/// [`Hooks::on_transaction_abandoned`]) and then dropped.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unattended;

impl<C, H, Ctx: ?Sized, U, S: Storage> AbandonPolicy<C, H, Ctx, U, S> for Unattended {
    const TAKES_RECORDS: bool = false;

    fn abandon(&self, _: &C, _: &H, abandoned: Abandoned<U, S>) {
        drop(abandoned);
    }
}

/// An [`AbandonPolicy`] that finishes a dropped transaction's rollbacks on
/// a task spawned with `Sp`, to completion. Set with
/// [`TransactionManager::with_spawner`](crate::TransactionManager::with_spawner).
///
/// The spawned rollback has no context (`ctx` was borrowed by the dropped
/// transaction) and calls no async hooks (they are borrowed from the
/// manager); it logs its outcome. Its undo records must implement
/// [`DetachedRollback`]: closure rollbacks ([`BoxedRollback`](crate::BoxedRollback))
/// do.
#[derive(Clone, Debug)]
pub struct Spawned<Sp>(pub Sp);

macro_rules! spawned_for_storage {
    ($(impl[$($gen:tt)*] $storage:ty;)*) => {$(
        impl<C, H, Ctx: ?Sized, U, Sp, $($gen)*> AbandonPolicy<C, H, Ctx, U, $storage> for Spawned<Sp>
        where
            Sp: Spawner,
            C: Clock + Clone + Send + Sync + 'static,
            C::Sleep: Send,
            U: DetachedRollback,
        {
            fn abandon(&self, clock: &C, _: &H, abandoned: Abandoned<U, $storage>) {
                let clock = clock.clone();
                self.0.spawn(async move {
                    let id = abandoned.ledger.summary.info().id;
                    let report = abandoned.roll_back_detached(&clock).await;
                    match report.rollback_state() {
                        RollbackState::Clean => tm_info!("{}: abandoned transaction rolled back", id),
                        RollbackState::Partial => tm_error!(
                            "{}: abandoned transaction PARTIALLY rolled back ({} failed)",
                            id,
                            report.failures().len()
                        ),
                    }
                });
            }
        }
    )*};
}

spawned_for_storage! {
    impl[const N: usize] crate::util::storage::Fixed<N>;
}
#[cfg(feature = "alloc")]
spawned_for_storage! {
    impl[] crate::util::storage::Unbounded;
}

/// Through [`DetachedRollback`], without a context.
pub(crate) struct ViaDetached;

impl<U: DetachedRollback> UndoCall<U, ()> for ViaDetached {
    type Error = U::Error;

    fn call<'a>(undo: &'a mut U, _: &'a mut ()) -> impl Future<Output = Result<(), U::Error>> + 'a {
        undo.rollback_detached()
    }

    fn retries(undo: &mut U, error: &U::Error) -> bool {
        undo.retry_if(error)
    }
}
