//! Scopes: nested transactions inside a transaction. A scope is a savepoint
//! in the transaction's own records (no allocation): if its body fails,
//! only the undo records it added are rolled back; if it succeeds, they
//! stay where they are and join the parent's.

use core::fmt;

use crate::engine::rollback::{Services, ViaRollback};
use crate::{
    engine::{abandon::AbandonPolicy, manager::TransactionManager, transaction::Transaction},
    ledger::{
        error::{RollbackFailure, RollbackState, StepError},
        rollback::Rollback,
    },
    observe::hooks::Hooks,
    timing::clock::Clock,
    util::storage::Storage,
};

impl<C, H, A, J, Ctx: ?Sized, U, S: Storage> Transaction<'_, TransactionManager<C, H, A, J>, Ctx, U, S>
where
    C: Clock,
    H: Hooks,
    U: Rollback<Ctx>,
    A: AbandonPolicy<C, H, Ctx, U, S>,
    J: crate::engine::binding::JournalFor<U>,
{
    /// Runs `body` as a nested transaction named `name`, on this
    /// transaction's records.
    ///
    /// - If `body` returns `Ok`, its steps' undo records join this
    ///   transaction's, in place: a later failure rolls them back with the
    ///   rest, in reverse order.
    /// - If it returns `Err`, only the steps it completed (those owed a
    ///   rollback since the scope began, nested scopes included) are rolled
    ///   back, latest first, and the parent gets a [`ScopeError`] that says
    ///   whether that was clean or partial, so the body can try another
    ///   way. `?` turns it back into the body's error when that is a
    ///   `StepError` (`From`).
    ///
    /// Steps record the innermost scope they ran in
    /// ([`StepRecord::scope`](crate::StepRecord::scope)), which hooks and
    /// the summary show. The scope's rollback calls `on_rollback_start` and
    /// the per-step rollback hooks; `on_transaction_complete` stays once,
    /// at the end of the transaction. A deadline, a cancel signal, a panic
    /// or a drop inside a scope stops the whole transaction as anywhere
    /// else.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// # use std::sync::{Arc, Mutex};
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let done = clock.block_on(manager.run("checkout", async |tx| {
    ///     let paid = tx.scope("card", async |tx| {
    ///         tx.step("hold").execute(|| async { Ok::<_, &str>(40) })
    ///             .rollback_using(&log, |(log, n)| async move { log.lock().unwrap().push(format!("release {n}")); Ok::<_, &str>(()) })
    ///             .await?;
    ///         tx.step("capture").run(|| async { Err::<&str, _>("declined") }).await
    ///     }).await;
    ///     let paid = match paid {
    ///         Ok(receipt) => receipt,
    ///         Err(scope) => {
    ///             assert!(scope.rollback_state().is_clean());     // the hold was released
    ///             tx.step("invoice").run(|| async { Ok::<_, &str>("invoice-7") }).await?
    ///         }
    ///     };
    ///     Ok::<_, StepError<&str>>(paid)
    /// }));
    /// assert_eq!(done.unwrap().into_value(), "invoice-7");
    /// assert_eq!(*log.lock().unwrap(), ["release 40"]);
    /// # }
    /// ```
    #[allow(clippy::type_complexity)]
    pub async fn scope<T, B, F>(&mut self, name: &'static str, body: F) -> Result<T, ScopeError<B, U::Error, S>>
    where
        F: AsyncFnOnce(&mut Transaction<'_, TransactionManager<C, H, A, J>, Ctx, U, S>) -> Result<T, B>,
    {
        self.settle_dropped_step();
        let floor = self.ledger.owed();
        let first_step = self.ledger.summary.steps().len();
        let info = self.ledger.summary.info();
        tm_debug!("{} `{}`: scope `{}` started", info.id, info.operation, name);
        // The body gets a handle of its own (the same records), so a scope
        // future dropped half-way leaves this handle as it was.
        let result = {
            let mut inner = self.nested(name);
            let result = body(&mut inner).await;
            // A group in the scope may have chosen concurrent rollbacks.
            let fork = inner.fork;
            drop(inner);
            self.fork = fork;
            result
        };
        let cause = match result {
            Ok(value) => return Ok(value),
            Err(cause) => cause,
        };
        self.settle_dropped_step();
        let manager = self.manager;
        let info = self.ledger.summary.info();
        tm_warn!(
            "{} `{}`: scope `{}` failed; rolling back {} step(s)",
            info.id,
            info.operation,
            name,
            self.ledger.owed().saturating_sub(floor)
        );
        let rollback_failures = self
            .ledger
            .roll_back_to::<ViaRollback, _, _, _, _>(
                floor,
                &mut *self.ctx,
                self.fork,
                Services { clock: &manager.clock, hooks: &manager.hooks, journal: &manager.journal },
            )
            .await;
        let rollback_state = self.ledger.scope_rollback_ended(first_step, rollback_failures.len());
        let info = self.ledger.summary.info();
        match rollback_state {
            RollbackState::Clean => tm_info!("{} `{}`: scope `{}` rolled back cleanly", info.id, info.operation, name),
            RollbackState::Partial => {
                tm_error!("{} `{}`: scope `{}` PARTIALLY rolled back", info.id, info.operation, name)
            }
        }
        Err(ScopeError { scope: name, cause, rollback_failures, rollback_state })
    }
}

/// A scope ([`Transaction::scope`]) whose body failed: its cause, and how
/// rolling back the scope's own steps went. The transaction goes on; its
/// body decides what next.
///
/// `?` turns it into the cause when the cause is a [`StepError`] (`From`);
/// a rollback failure stays in the summary (the step is `RollbackFailed`),
/// and a transaction that fails later reports its rollback as partial.
///
/// ```
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
///     tx.scope("inner", async |tx| tx.step("a").run(|| async { Err::<(), _>("no") }).await).await?;
///     Ok::<_, StepError<&str>>(())
/// })).unwrap_err();
/// assert_eq!(err.cause().step(), "a");
/// assert_eq!(err.summary().steps()[0].scope(), Some("inner"));
/// ```
pub struct ScopeError<B, RE, S: Storage> {
    scope: &'static str,
    cause: B,
    rollback_failures: S::List<RollbackFailure<RE>>,
    rollback_state: RollbackState,
}

impl<B, RE, S: Storage> ScopeError<B, RE, S> {
    /// The scope's name.
    pub fn scope(&self) -> &'static str {
        self.scope
    }

    /// What the scope's body returned.
    pub fn cause(&self) -> &B {
        &self.cause
    }

    /// The cause, by value.
    pub fn into_cause(self) -> B {
        self.cause
    }

    /// The rollbacks of the scope's steps that failed, latest step first.
    pub fn rollback_failures(&self) -> &[RollbackFailure<RE>] {
        &self.rollback_failures
    }

    /// [`Clean`](RollbackState::Clean) when every step of the scope owed a
    /// rollback was rolled back, [`Partial`](RollbackState::Partial) if any
    /// rollback failed or was skipped.
    pub fn rollback_state(&self) -> RollbackState {
        self.rollback_state
    }
}

impl<E, RE, S: Storage> From<ScopeError<StepError<E>, RE, S>> for StepError<E> {
    fn from(error: ScopeError<StepError<E>, RE, S>) -> Self {
        error.cause
    }
}

impl<B: fmt::Display, RE: fmt::Display, S: Storage> fmt::Display for ScopeError<B, RE, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scope `{}` failed: {}; ", self.scope, self.cause)?;
        match self.rollback_state {
            RollbackState::Clean => f.write_str("its steps were rolled back cleanly"),
            RollbackState::Partial => {
                write!(f, "PARTIALLY rolled back ({} failed", self.rollback_failures.len())?;
                for failure in self.rollback_failures.iter() {
                    write!(f, "; {failure}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl<B: fmt::Debug, RE: fmt::Debug, S: Storage> fmt::Debug for ScopeError<B, RE, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopeError")
            .field("scope", &self.scope)
            .field("cause", &self.cause)
            .field("rollback_failures", &self.rollback_failures())
            .field("rollback_state", &self.rollback_state)
            .finish()
    }
}

impl<B, RE, S> core::error::Error for ScopeError<B, RE, S>
where
    B: core::error::Error + 'static,
    RE: fmt::Debug + fmt::Display,
    S: Storage,
{
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.cause)
    }
}
