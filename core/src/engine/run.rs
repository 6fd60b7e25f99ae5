//! The run loop: a transaction from its builder to its outcome — begin,
//! the body raced against the interrupt and guarded against panics,
//! commit or roll back, and the outcome built once around the summary.
//! Also the builder's state and the undo logs it chooses between; the
//! builder's methods are the API's (`api/manager.rs`).

use crate::ledger::outcome::Outcome;
use core::marker::PhantomData;

use crate::engine::manager::TransactionManager;
use crate::engine::transaction::CommitFailed;
use crate::ledger::book::Ledger;
use crate::timing::future::{Either, race};
use crate::timing::interrupt::{IntoBodyError, IntoReason, NoInterrupt};
use crate::{
    durable::journal::JournalFailure,
    engine::binding::{JournalFor, NoJournal},
};
use crate::{
    engine::{abandon::AbandonPolicy, transaction::Transaction},
    ledger::{
        book::RollbackFailurePolicy,
        outcome::{Committed, TransactionError},
        record::TransactionInfo,
        rollback::Rollback,
    },
    observe::hooks::Hooks,
    timing::{clock::Clock, interrupt::Interrupt},
    util::storage::Storage,
};

/// Chooses where a transaction's undo records live and of what type they
/// are. Set by [`TransactionBuilder::fixed`], [`TransactionBuilder::unbounded`],
/// [`TransactionBuilder::local`], or left at the default.
#[diagnostic::on_unimplemented(
    message = "choose where this transaction keeps its undo records",
    label = "no undo log chosen",
    note = "without the `alloc` feature, call `.fixed::<UndoType, CAPACITY>()` on the transaction builder \
            (use `NoRollback` as UndoType if no step has a rollback); with `alloc`, the default keeps \
            closure rollbacks on the heap"
)]
pub trait UndoLog {
    /// The undo record type.
    type Undo;
    /// The storage for step and undo records.
    type Storage: Storage;
}

/// Whether a manager's journal can keep the undo records of log `L`:
/// undo records that are data ([`Records`], chosen with
/// [`fixed`](TransactionBuilder::fixed) or
/// [`unbounded`](TransactionBuilder::unbounded)) with any journal, or
/// none; closure rollbacks ([`Closures`], [`LocalClosures`]) only without
/// a journal ([`NoJournal`]), as a closure cannot be written to one. It is
/// here so that rustc's error for a closure rollback on a journaled
/// manager names the fix. Implemented by the library only.
#[diagnostic::on_unimplemented(
    message = "closure rollbacks cannot be written to a journal, and this manager's journal is `{Self}`",
    label = "closure rollbacks (`BoxedRollback`) need a manager without a journal",
    note = "a journal keeps undo records as data, so a closure rollback cannot be journaled: give the \
            transaction an undo type that is data, with `manager.transaction(op).fixed::<Undo, N>()` (or \
            `.unbounded::<Undo>()`), `#[derive(serde::Serialize, serde::Deserialize)] enum Undo {{ … }}` \
            implementing `Rollback`, and `.undo(|output| Undo::…)` on its steps; or run it on a manager \
            without `.with_journal(..)` (in a function generic over the manager: \
            `manager: &impl Manager<Journal = NoJournal>`)"
)]
pub trait JournalKeeps<L>: crate::engine::binding::sealed::Sealed {}

impl JournalKeeps<Closures> for NoJournal {}

impl<'r> JournalKeeps<LocalClosures<'r>> for NoJournal {}

/// Any journal, or none: so that a function generic over the manager's
/// journal ([`Manager::Journal`](crate::Manager::Journal)) needs no bound
/// for it.
impl<J: crate::engine::binding::sealed::Sealed, U, S> JournalKeeps<Records<U, S>> for J {}

/// Undo records of type `U` in storage `S`. See [`TransactionBuilder::fixed`].
#[derive(Debug)]
pub struct Records<U, S>(PhantomData<fn() -> (U, S)>);

impl<U, S: Storage> UndoLog for Records<U, S> {
    type Undo = U;
    type Storage = S;
}

/// The default undo log: with `alloc`, `Send` closure rollbacks
/// ([`BoxedRollback`](crate::BoxedRollback)) without a limit on steps.
#[derive(Debug)]
pub struct Closures(());

/// Closure rollbacks that need not be `Send` and may borrow for `'r`
/// ([`LocalBoxedRollback`](crate::ledger::rollback::LocalBoxedRollback)). See
/// [`TransactionBuilder::local`].
#[derive(Debug)]
pub struct LocalClosures<'r>(PhantomData<&'r ()>);

#[cfg(feature = "alloc")]
impl UndoLog for Closures {
    type Undo = crate::ledger::rollback::BoxedRollback;
    type Storage = crate::util::storage::Unbounded;
}

#[cfg(feature = "alloc")]
impl<'r> UndoLog for LocalClosures<'r> {
    type Undo = crate::ledger::rollback::LocalBoxedRollback<'r>;
    type Storage = crate::util::storage::Unbounded;
}

/// A transaction about to run: its id and operation are fixed, its undo log
/// and interrupts can still be chosen. Made by
/// [`TransactionManager::transaction`].
///
/// ```
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let done = clock.block_on(
///     manager
///         .transaction("count")
///         .with_id(TransactionId::new(100))
///         .fixed::<NoRollback, 1>()
///         .run(async |tx| Ok::<_, ()>(tx.id())),
/// );
/// assert_eq!(done.unwrap().into_value(), TransactionId::new(100));
/// ```
#[must_use = "a transaction does nothing until it is run"]
pub struct TransactionBuilder<'m, M, L = Closures, I = NoInterrupt> {
    pub(crate) manager: &'m M,
    pub(crate) info: TransactionInfo,
    /// The operation name is the id's text, to follow `with_id`.
    pub(crate) unnamed: bool,
    /// The id was given by `with_id`, not by the journal: a journal checks
    /// it has not seen it before the transaction starts.
    pub(crate) id_given: bool,
    /// Set by `with_jitter_seed`; otherwise derived from the manager's seed
    /// and the final id when the transaction runs.
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) on_rollback_failure: RollbackFailurePolicy,
    pub(crate) interrupt: I,
    pub(crate) log: PhantomData<fn() -> L>,
}

impl<C: Clock, H: Hooks, A, J, L, I> TransactionBuilder<'_, TransactionManager<C, H, A, J>, L, I>
where
    I: Interrupt<C>,
{
    // Not an `async fn`: one moves its arguments into locals, and this
    // builder would be kept twice for good; an `async move` block uses
    // what it captures where it is.
    #[allow(clippy::type_complexity, clippy::manual_async_fn)]
    pub(crate) fn run_with_inner<Ctx: ?Sized, T, B, F, P>(
        self,
        context: &mut Ctx,
        body: F,
        place: P,
    ) -> impl Future<Output = P::Output>
    where
        P: Place<T, B, <L::Undo as Rollback<Ctx>>::Error, L::Undo, L::Storage>,
        L: UndoLog,
        L::Undo: Rollback<Ctx>,
        A: AbandonPolicy<C, H, Ctx, L::Undo, L::Storage>,
        J: JournalKeeps<L> + JournalFor<L::Undo>,
        J::CommitFailure: IntoBodyError<B>,
        I::Output: IntoBodyError<B>,
        F: AsyncFnOnce(&mut Transaction<'_, TransactionManager<C, H, A, J>, Ctx, L::Undo, L::Storage>) -> Result<T, B>,
    {
        async move {
            let manager = self.manager;
            let span = tm_span!("transaction", id = self.info.id, operation = self.info.operation);
            // The ledger lives out here: the future below ends with the small
            // `ended`, and the outcome is built around the summary as the last
            // thing this function does (no copy of it through an inner future's
            // return).
            let seed = self.jitter_seed.unwrap_or_else(|| manager.jitter_seed_for(self.info.id));
            let mut ledger = Ledger::new(
                self.info,
                crate::timing::clock::now(&manager.clock),
                seed,
                self.on_rollback_failure,
                manager.step_times,
            );
            ledger.origin = manager.origin();
            let ledger_ref = &mut ledger;
            // The rollbacks that failed, kept out here too (not moved out of the
            // rollback's future, nor through this one's return).
            let mut failures = <L::Storage as Storage>::List::default();
            let failures_ref = &mut failures;
            let id_given = self.id_given;
            let ended = crate::trace::within(&span, async {
                if J::ENABLED && id_given {
                    // An id the journal may have seen would mix two
                    // transactions' entries (and lose what the first one
                    // owes): refused before anything is written or run.
                    let id = ledger_ref.summary.info().id;
                    if let Err(failure) = manager.journal.refuse_given_id(id) {
                        let failure: JournalFailure = failure.into();
                        return Err(J::commit_failure(failure).into_body_error(None, 0));
                    }
                }
                let mut tx = Transaction::new(manager, context, ledger_ref);
                tx.start().await;
                let interrupt = self.interrupt;
                tx.deadline_at =
                    interrupt.deadline().map(|d| crate::timing::clock::now(&manager.clock).saturating_add(d));
                let stopped = {
                    // The interrupt is polled first: one that has already fired
                    // (a cancel signal, a zero deadline) starts no step, and at
                    // the deadline instant the deadline wins over whatever else
                    // is due. Both are inside the panic guard: a panicking cancel
                    // future or clock rolls back like a panicking body.
                    let wait = crate::util::panic::guarded_call(|| interrupt.wait(&manager.clock));
                    let body = async { body(&mut tx).await };
                    crate::util::panic::guarded_body(race(wait, body)).await
                };
                let ended = match stopped {
                    Ok(Either::Right(Ok(value))) => match tx.commit().await {
                        Ok(()) => Ok(value),
                        // The journal could not record the commit, and
                        // holds `Aborted`: roll back.
                        Err(CommitFailed::Aborted(failure)) => {
                            let steps = tx.steps().len();
                            Err(failure.into_body_error(None, steps))
                        }
                        // Neither decision could be written: nothing is
                        // rolled back (recovery decides), and the
                        // transaction has ended.
                        Err(CommitFailed::Undecided(failure)) => {
                            let steps = tx.steps().len();
                            return Err(failure.into_body_error(None, steps));
                        }
                    },
                    Ok(Either::Right(Err(cause))) => Err(cause),
                    Ok(Either::Left(Ok(interrupt))) => {
                        let reason = interrupt.into_reason();
                        tm_warn!("{}: interrupted: {}", tx.id(), reason);
                        let (step, steps) = tx.interrupted(&reason);
                        Err(interrupt.into_body_error(step, steps))
                    }
                    // Panics are caught only with `std`: without it these arms
                    // cannot happen (their values do not exist), and compile
                    // to nothing.
                    Ok(Either::Left(Err(panic))) => {
                        #[cfg(feature = "std")]
                        {
                            tm_error!("{}: the interrupt panicked: {}; rolling back", tx.id(), panic);
                            tx.abort(&mut *failures_ref).await;
                        }
                        crate::util::panic::resume_message(panic)
                    }
                    Err(panic) => {
                        #[cfg(feature = "std")]
                        {
                            tm_error!("{}: the body panicked; rolling back before resuming the panic", tx.id());
                            tx.abort(&mut *failures_ref).await;
                        }
                        crate::util::panic::resume(panic)
                    }
                };
                // One place awaits the rollback of a failed transaction: its
                // future gets one slot in this state machine, not one per way to
                // fail.
                if ended.is_err() {
                    crate::timing::future::outlined(tx.abort(failures_ref)).await;
                }
                ended
            })
            .await;
            crate::trace::outcome(
                &span,
                match &ended {
                    Ok(_) => "committed",
                    Err(_) if crate::ledger::error::RollbackState::of(failures.len(), &ledger.summary).is_clean() => {
                        "rolled_back"
                    }
                    Err(_) if crate::ledger::outcome::left_to_recovery(failures.len(), &ledger.summary) => "undecided",
                    Err(_) => "partially_rolled_back",
                },
            );
            // The outcome is built once, around the summary moved out of the
            // ledger: no copy of it travels through the layers above.
            if P::IN_PLACE {
                return place.put_in_place(ended, &mut failures, &mut ledger);
            }
            place.put(ended, failures, ledger.summary)
        }
    }
}

/// Where [`TransactionBuilder::run_with_inner`] puts the outcome: returned,
/// or written into the caller's `Option`.
pub(crate) trait Place<T, B, RE, U, S: Storage> {
    type Output;
    /// `put_in_place` is the one to call, not `put`.
    const IN_PLACE: bool;
    /// Builds the outcome from the parts, moved out of the transaction's
    /// state.
    fn put(
        self,
        ended: Result<T, B>,
        failures: S::List<crate::ledger::error::RollbackFailure<RE>>,
        summary: crate::ledger::summary::Summary<S>,
    ) -> Self::Output;
    /// Builds the outcome with the parts taken by reference (passed by
    /// value, they are first copied into the caller's frame).
    fn put_in_place(
        self,
        ended: Result<T, B>,
        failures: &mut S::List<crate::ledger::error::RollbackFailure<RE>>,
        ledger: &mut Ledger<U, S>,
    ) -> Self::Output;
}

/// The outcome is the future's output.
pub(crate) struct Returned;

impl<T, B, RE, U, S: Storage> Place<T, B, RE, U, S> for Returned {
    type Output = Outcome<T, B, RE, S>;
    const IN_PLACE: bool = false;
    fn put(
        self,
        ended: Result<T, B>,
        failures: S::List<crate::ledger::error::RollbackFailure<RE>>,
        summary: crate::ledger::summary::Summary<S>,
    ) -> Self::Output {
        outcome_of(ended, failures, summary)
    }
    fn put_in_place(
        self,
        ended: Result<T, B>,
        failures: &mut S::List<crate::ledger::error::RollbackFailure<RE>>,
        ledger: &mut Ledger<U, S>,
    ) -> Self::Output {
        outcome_of(ended, core::mem::take(failures), ledger.take_summary())
    }
}

impl<T, B, RE, U, S: Storage> Place<T, B, RE, U, S> for &mut Option<Outcome<T, B, RE, S>> {
    type Output = ();
    const IN_PLACE: bool = true;
    fn put(
        self,
        ended: Result<T, B>,
        failures: S::List<crate::ledger::error::RollbackFailure<RE>>,
        summary: crate::ledger::summary::Summary<S>,
    ) {
        *self = Some(outcome_of(ended, failures, summary));
    }
    /// The outcome is made in place with an empty summary and list, which
    /// are then swapped with the transaction's: built whole and moved, it
    /// took a frame of its own size (856 bytes on the firmware) or a place
    /// in the transaction's.
    #[inline(never)]
    fn put_in_place(
        self,
        ended: Result<T, B>,
        failures: &mut S::List<crate::ledger::error::RollbackFailure<RE>>,
        ledger: &mut Ledger<U, S>,
    ) {
        let summary = crate::ledger::book::empty_summary();
        let outcome = self.insert(match ended {
            Ok(value) => Ok(Committed { value, summary }),
            Err(cause) => Err(TransactionError { cause, rollback_failures: S::List::default(), summary }),
        });
        match outcome {
            Ok(committed) => ledger.swap_summary(&mut committed.summary),
            Err(error) => {
                core::mem::swap(&mut error.rollback_failures, failures);
                ledger.swap_summary(&mut error.summary);
            }
        }
    }
}

/// The outcome of a transaction that ended: its value, or its body's error
/// and the rollbacks that failed; with its summary. Out of line, so the
/// moves of the summary are in one place, not in every caller's frame.
#[inline(never)]
#[allow(clippy::type_complexity)]
fn outcome_of<T, B, RE, S: Storage>(
    ended: Result<T, B>,
    rollback_failures: S::List<crate::ledger::error::RollbackFailure<RE>>,
    summary: crate::ledger::summary::Summary<S>,
) -> Outcome<T, B, RE, S> {
    match ended {
        Ok(value) => Ok(Committed { value, summary }),
        Err(cause) => Err(transaction_error(cause, rollback_failures, summary)),
    }
}

#[inline(never)]
fn transaction_error<B, RE, S: Storage>(
    cause: B,
    rollback_failures: S::List<crate::ledger::error::RollbackFailure<RE>>,
    summary: crate::ledger::summary::Summary<S>,
) -> TransactionError<B, RE, S> {
    TransactionError { cause, rollback_failures, summary }
}
