//! Lifecycle hooks: user code awaited at each event of a transaction.

use core::future::Future;
use core::marker::PhantomData;
use core::pin::Pin;
use core::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::util::panic::guarded_call;
use crate::util::text::PanicMessage;
use crate::{
    ledger::{
        abandoned::Abandoned,
        record::{StepRecord, TransactionInfo},
        summary::Summary,
    },
    util::storage::Storage,
};

pin_project! {
    /// A hook call that is not polled at all when `H` has no hooks
    /// ([`Hooks::ENABLED`] is `false`): see [`hook_call`].
    pub(crate) struct HookCall<H: ?Sized, F> {
        #[pin]
        call: F,
        hooks: PhantomData<fn() -> *const H>,
    }
}

impl<H: Hooks + ?Sized, F: Future<Output = Result<(), PanicMessage>>> Future for HookCall<H, F> {
    type Output = Result<(), PanicMessage>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !H::ENABLED {
            return Poll::Ready(Ok(()));
        }
        self.project().call.poll(cx)
    }
}

/// Calls a hook of `hooks` inside the panic guard ([`guarded_call`]).
///
/// The engine awaits hooks behind `if H::ENABLED`, but its coroutines are
/// laid out on generic MIR, so each of those await points keeps its resume
/// arm even for `()`: this future makes that arm cost almost nothing there
/// (ready at once, the hook's own `async fn` state machine never polled):
/// 556 bytes less `.text` on the firmware example, which has no hooks.
pub(crate) fn hook_call<H: Hooks + ?Sized, Fut: Future<Output = ()>>(
    hooks: &H,
    call: impl FnOnce() -> Fut,
) -> HookCall<H, impl Future<Output = Result<(), PanicMessage>>> {
    let _ = hooks;
    HookCall { call: guarded_call(call), hooks: PhantomData }
}

/// A step event, as a hook sees it: which transaction, the step's record
/// (name, index, status, attempts, timestamps, last error text), and the
/// number of the attempt the event is about.
///
/// ```
/// # use transaction_manager::*;
/// # use transaction_manager::hooks::{Hooks, StepEvent};
/// struct PrintFailures;
/// impl Hooks for PrintFailures {
///     async fn on_step_failure(&self, event: &StepEvent<'_>) {
///         println!(
///             "{}: step {} attempt {} failed: {}",
///             event.transaction.id(),
///             event.step.name(),
///             event.attempt,
///             event.step.error().unwrap_or("?"),
///         );
///     }
/// }
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct StepEvent<'a> {
    /// The transaction the step belongs to.
    pub transaction: &'a TransactionInfo,
    /// The step's record as it stands at this event.
    pub step: &'a StepRecord,
    /// The attempt this event is about, from 1: an execute attempt for the
    /// execute events, a rollback attempt for the rollback events.
    pub attempt: u32,
}

/// Code to run at each event of a transaction's life.
///
/// Every method has a default that does nothing; implement the ones you
/// need. Hooks are awaited in line — the transaction waits for a hook before
/// it goes on — and several hooks are combined with a tuple `(a, b, c)`, a
/// slice or array, or (with `alloc`) a `Vec`, each awaited in order.
///
/// The events, in the order they happen:
///
/// | hook | when |
/// |---|---|
/// | `on_transaction_start` | once, before the body runs |
/// | `on_step_execute` | before each execute attempt |
/// | `on_step_success` | after the attempt that succeeds |
/// | `on_step_failure` | after each failed or timed-out attempt (the step's status is `Failed` on the last one) |
/// | `on_rollback_start` | once, before rolling back, only if there is something to roll back |
/// | `on_step_rollback_failure` | after each failed or timed-out rollback attempt |
/// | `on_step_rollback` | once per step, after its rollback succeeded (the step is `RolledBack`) |
/// | `on_transaction_complete` | once, always, at the very end |
///
/// Hooks observe; they cannot change the outcome of a rollback. A panic
/// in a hook (with `std`) is caught: in `on_step_execute` it fails that
/// attempt before it starts (nothing ran, and it is not retried around), in
/// `on_step_success` the step's error becomes the panic (its undo record
/// stays owed), in `on_step_failure` it ends the step's retries; in every
/// other hook it is logged and ignored — a hook never stops or shortens a
/// rollback.
///
/// Hooks take `&self` because one set of hooks serves every transaction of a
/// manager, possibly at the same time: count with atomics or a `Cell`.
///
/// ```
/// use core::cell::Cell;
/// use transaction_manager::*;
/// use transaction_manager::hooks::{Hooks, StepEvent};
///
/// #[derive(Default)]
/// struct CountAttempts(Cell<u32>);
///
/// impl Hooks for CountAttempts {
///     async fn on_step_execute(&self, _: &StepEvent<'_>) {
///         self.0.set(self.0.get() + 1);
///     }
/// }
///
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock).with_hooks(CountAttempts::default());
/// clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
///     tx.step("a").run(|| async { Ok::<_, &str>(()) }).await?;
///     tx.step("b").run(|| async { Ok::<_, &str>(()) }).await
/// })).unwrap();
/// assert_eq!(manager.hooks().0.get(), 2);
/// ```
#[allow(async_fn_in_trait)] // `Send` follows the implementation: see the crate docs.
pub trait Hooks {
    /// Whether any method does anything. `false` only for no-op hooks
    /// (`()`), so the engine skips calling them; leave it at `true`.
    const ENABLED: bool = true;

    /// The transaction started; its body is about to run.
    async fn on_transaction_start(&self, transaction: &TransactionInfo) {
        let _ = transaction;
    }

    /// An execute attempt is about to start.
    async fn on_step_execute(&self, event: &StepEvent<'_>) {
        let _ = event;
    }

    /// An execute attempt succeeded; the step is `Completed`.
    async fn on_step_success(&self, event: &StepEvent<'_>) {
        let _ = event;
    }

    /// An execute attempt failed or timed out. `event.step.error()` says why.
    async fn on_step_failure(&self, event: &StepEvent<'_>) {
        let _ = event;
    }

    /// The transaction failed and completed steps are about to be rolled
    /// back. Not called when nothing has a rollback to run.
    async fn on_rollback_start(&self, transaction: &TransactionInfo) {
        let _ = transaction;
    }

    /// The step's rollback succeeded: it is `RolledBack`. Called once per
    /// step, after the attempt that succeeded (`event.attempt`), as in the
    /// Python package this library grew from (`async-transaction-manager`
    /// 0.1.2). Each failed attempt before it was reported to
    /// [`on_step_rollback_failure`](Hooks::on_step_rollback_failure).
    async fn on_step_rollback(&self, event: &StepEvent<'_>) {
        let _ = event;
    }

    /// A rollback attempt failed or timed out. `event.step.rollback_error()`
    /// says why.
    async fn on_step_rollback_failure(&self, event: &StepEvent<'_>) {
        let _ = event;
    }

    /// The transaction is over: committed (`success`) or failed and rolled
    /// back as far as possible. Called exactly once per transaction that
    /// runs to its end (see [`on_transaction_abandoned`](Hooks::on_transaction_abandoned)
    /// for one whose future is dropped).
    async fn on_transaction_complete<S: Storage>(
        &self,
        transaction: &TransactionInfo,
        success: bool,
        summary: &Summary<S>,
    ) {
        let _ = (transaction, success, summary);
    }

    /// The transaction's future was dropped before it finished, owing the
    /// rollbacks in `abandoned.pending()`; the manager's
    /// [`AbandonPolicy`](crate::abandon::AbandonPolicy) takes them over next.
    /// Called from `Drop`, so it is not async and must not block; a panic
    /// in it is caught (with `std`). `on_transaction_complete` is not called
    /// for such a transaction (except by [`Abandoned::roll_back`], if the
    /// policy runs it).
    fn on_transaction_abandoned<U, S: Storage>(&self, abandoned: &Abandoned<U, S>) {
        let _ = abandoned;
    }

    /// Recovery found `transaction` unfinished in the journal (a crash, a
    /// power cut, a dropped future) and is about to roll back the `owed`
    /// steps it still owes, with the rollback hooks and, at the end,
    /// `on_transaction_complete` (`success = false`). See
    /// [`TransactionManager::recover`](crate::TransactionManager::recover).
    async fn on_transaction_recovered(&self, transaction: &TransactionInfo, owed: usize) {
        let _ = (transaction, owed);
    }

    /// Recovery cannot roll `transaction` back (`reason`: an undo record it
    /// cannot decode, or more owed steps than its storage holds): it stays
    /// in the journal as *stuck* until a later recovery can roll it back
    /// or an operator resolves it.
    async fn on_transaction_stuck(&self, transaction: &TransactionInfo, reason: &str) {
        let _ = (transaction, reason);
    }
}

/// No hooks.
impl Hooks for () {
    const ENABLED: bool = false;
}

/// Calls one hook method on each hook of a collection, in order.
macro_rules! each {
    ($iter:expr, $method:ident($($arg:expr),*)) => {
        for hook in $iter {
            hook.$method($($arg),*).await;
        }
    };
}

/// Implements every hook by calling it on each element of `self.$iter()`.
macro_rules! impl_for_collection {
    ($iter:ident) => {
        const ENABLED: bool = H::ENABLED;

        async fn on_transaction_start(&self, transaction: &TransactionInfo) {
            each!(self.$iter(), on_transaction_start(transaction));
        }
        async fn on_step_execute(&self, event: &StepEvent<'_>) {
            each!(self.$iter(), on_step_execute(event));
        }
        async fn on_step_success(&self, event: &StepEvent<'_>) {
            each!(self.$iter(), on_step_success(event));
        }
        async fn on_step_failure(&self, event: &StepEvent<'_>) {
            each!(self.$iter(), on_step_failure(event));
        }
        async fn on_rollback_start(&self, transaction: &TransactionInfo) {
            each!(self.$iter(), on_rollback_start(transaction));
        }
        async fn on_step_rollback(&self, event: &StepEvent<'_>) {
            each!(self.$iter(), on_step_rollback(event));
        }
        async fn on_step_rollback_failure(&self, event: &StepEvent<'_>) {
            each!(self.$iter(), on_step_rollback_failure(event));
        }
        async fn on_transaction_complete<St: Storage>(
            &self,
            transaction: &TransactionInfo,
            success: bool,
            summary: &Summary<St>,
        ) {
            each!(self.$iter(), on_transaction_complete(transaction, success, summary));
        }
        fn on_transaction_abandoned<U, St: Storage>(&self, abandoned: &Abandoned<U, St>) {
            for hook in self.$iter() {
                hook.on_transaction_abandoned(abandoned);
            }
        }
        async fn on_transaction_recovered(&self, transaction: &TransactionInfo, owed: usize) {
            each!(self.$iter(), on_transaction_recovered(transaction, owed));
        }
        async fn on_transaction_stuck(&self, transaction: &TransactionInfo, reason: &str) {
            each!(self.$iter(), on_transaction_stuck(transaction, reason));
        }
    };
}

/// Each hook of the slice, in order.
impl<H: Hooks> Hooks for [H] {
    impl_for_collection!(iter);
}

/// Each hook of the array, in order.
impl<H: Hooks, const N: usize> Hooks for [H; N] {
    impl_for_collection!(iter);
}

/// The hook, if there is one.
impl<H: Hooks> Hooks for Option<H> {
    impl_for_collection!(iter);
}

/// Each hook of the vector, in order.
#[cfg(feature = "alloc")]
impl<H: Hooks> Hooks for alloc::vec::Vec<H> {
    impl_for_collection!(iter);
}

/// Implements every hook by calling the one of `$deref` (a reference-like
/// wrapper).
macro_rules! impl_for_pointer {
    ($($ty:ty),*) => {$(
        impl<H: Hooks + ?Sized> Hooks for $ty {
            const ENABLED: bool = H::ENABLED;

            async fn on_transaction_start(&self, transaction: &TransactionInfo) {
                (**self).on_transaction_start(transaction).await
            }
            async fn on_step_execute(&self, event: &StepEvent<'_>) {
                (**self).on_step_execute(event).await
            }
            async fn on_step_success(&self, event: &StepEvent<'_>) {
                (**self).on_step_success(event).await
            }
            async fn on_step_failure(&self, event: &StepEvent<'_>) {
                (**self).on_step_failure(event).await
            }
            async fn on_rollback_start(&self, transaction: &TransactionInfo) {
                (**self).on_rollback_start(transaction).await
            }
            async fn on_step_rollback(&self, event: &StepEvent<'_>) {
                (**self).on_step_rollback(event).await
            }
            async fn on_step_rollback_failure(&self, event: &StepEvent<'_>) {
                (**self).on_step_rollback_failure(event).await
            }
            async fn on_transaction_complete<St: Storage>(
                &self,
                transaction: &TransactionInfo,
                success: bool,
                summary: &Summary<St>,
            ) {
                (**self).on_transaction_complete(transaction, success, summary).await
            }
            fn on_transaction_abandoned<U, St: Storage>(&self, abandoned: &Abandoned<U, St>) {
                (**self).on_transaction_abandoned(abandoned)
            }
            async fn on_transaction_recovered(&self, transaction: &TransactionInfo, owed: usize) {
                (**self).on_transaction_recovered(transaction, owed).await
            }
            async fn on_transaction_stuck(&self, transaction: &TransactionInfo, reason: &str) {
                (**self).on_transaction_stuck(transaction, reason).await
            }
        }
    )*};
}

impl_for_pointer!(&H);
#[cfg(feature = "alloc")]
impl_for_pointer!(alloc::boxed::Box<H>, alloc::sync::Arc<H>, alloc::rc::Rc<H>);

/// Implements every hook for a tuple by calling each element in order.
macro_rules! impl_for_tuple {
    ($($name:ident . $idx:tt),+) => {
        /// Each element's hooks, in order.
        impl<$($name: Hooks),+> Hooks for ($($name,)+) {
            const ENABLED: bool = false $(|| $name::ENABLED)+;

            async fn on_transaction_start(&self, transaction: &TransactionInfo) {
                $( self.$idx.on_transaction_start(transaction).await; )+
            }
            async fn on_step_execute(&self, event: &StepEvent<'_>) {
                $( self.$idx.on_step_execute(event).await; )+
            }
            async fn on_step_success(&self, event: &StepEvent<'_>) {
                $( self.$idx.on_step_success(event).await; )+
            }
            async fn on_step_failure(&self, event: &StepEvent<'_>) {
                $( self.$idx.on_step_failure(event).await; )+
            }
            async fn on_rollback_start(&self, transaction: &TransactionInfo) {
                $( self.$idx.on_rollback_start(transaction).await; )+
            }
            async fn on_step_rollback(&self, event: &StepEvent<'_>) {
                $( self.$idx.on_step_rollback(event).await; )+
            }
            async fn on_step_rollback_failure(&self, event: &StepEvent<'_>) {
                $( self.$idx.on_step_rollback_failure(event).await; )+
            }
            async fn on_transaction_complete<St: Storage>(
                &self,
                transaction: &TransactionInfo,
                success: bool,
                summary: &Summary<St>,
            ) {
                $( self.$idx.on_transaction_complete(transaction, success, summary).await; )+
            }
            fn on_transaction_abandoned<U, St: Storage>(&self, abandoned: &Abandoned<U, St>) {
                $( self.$idx.on_transaction_abandoned(abandoned); )+
            }
            async fn on_transaction_recovered(&self, transaction: &TransactionInfo, owed: usize) {
                $( self.$idx.on_transaction_recovered(transaction, owed).await; )+
            }
            async fn on_transaction_stuck(&self, transaction: &TransactionInfo, reason: &str) {
                $( self.$idx.on_transaction_stuck(transaction, reason).await; )+
            }
        }
    };
}

impl_for_tuple!(A.0);
impl_for_tuple!(A.0, B.1);
impl_for_tuple!(A.0, B.1, C.2);
impl_for_tuple!(A.0, B.1, C.2, D.3);
impl_for_tuple!(A.0, B.1, C.2, D.3, E.4);
impl_for_tuple!(A.0, B.1, C.2, D.3, E.4, F.5);
impl_for_tuple!(A.0, B.1, C.2, D.3, E.4, F.5, G.6);
impl_for_tuple!(A.0, B.1, C.2, D.3, E.4, F.5, G.6, H.7);

/// `on_transaction_complete`, with the summary borrowed where it is. It
/// borrows only the hooks and the summary (not the whole transaction, whose
/// undo records need not be `Sync`), so the future stays `Send`.
pub(crate) async fn complete<H: Hooks, S: Storage>(
    hooks: &H,
    summary: &crate::ledger::summary::Summary<S>,
    success: bool,
) {
    if !H::ENABLED {
        return;
    }
    if let Err(panic) = hook_call(hooks, || hooks.on_transaction_complete(summary.info(), success, summary)).await {
        tm_error!("{}: on_transaction_complete hook panicked: {}", summary.info().id, panic);
    }
}
