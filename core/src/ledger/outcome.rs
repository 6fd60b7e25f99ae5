//! How a transaction ends: committed with its value and summary, or failed
//! with its error, the rollbacks that failed and the summary.

use crate::ledger::error::{RollbackFailure, RollbackState};
use crate::{
    ledger::{
        record::{StepRecord, StepStatus},
        summary::Summary,
    },
    util::storage::Storage,
};
use core::fmt;

/// Whether a failed transaction rolled nothing back because its outcome is
/// unknown: neither `Committed` nor `Aborted` could be written, so what it
/// owes is left to recovery, its steps `RollbackSkipped`. (Rollbacks are
/// otherwise skipped only after one failed, under
/// [`RollbackFailurePolicy::Stop`](crate::rollback::RollbackFailurePolicy::Stop).)
pub(crate) fn left_to_recovery<S: Storage>(failures: usize, summary: &Summary<S>) -> bool {
    failures == 0 && summary.rollback_errors() == 0 && summary.rollback_skipped_steps() > 0
}

// Defined through a macro: the defaults of `RE` and `S` exist only with
// `alloc` (a default type parameter cannot be `cfg`-gated on its own).
macro_rules! transaction_error {
    ($($params:tt)*) => {
        /// A transaction that did not commit: the error that stopped it, what its
        /// rollback did, and its summary.
        ///
        /// `cause` is what the body returned — usually a [`StepError`](crate::StepError) passed on with
        /// `?`, or the caller's own error type. Every rollback failure is kept, with
        /// its step's name, so nothing is swallowed.
        ///
        /// ```
        /// # use transaction_manager::*;
        /// # let clock = ManualClock::new();
        /// # let manager = TransactionManager::new(&clock);
        /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |_tx| {
        ///     Err::<(), _>("validation failed")
        /// })).unwrap_err();
        /// assert_eq!(*err.cause(), "validation failed");
        /// assert_eq!(err.rollback_state(), RollbackState::Clean);
        /// assert_eq!(err.to_string(), "transaction `t` (tx-1) failed: validation failed; nothing to roll back");
        /// ```
        ///
        /// `B` is the body's error, `RE` the rollback error type and `S` the
        /// storage. With the `alloc` feature, `RE` and `S` default to what
        /// [`TransactionManager::run`](crate::TransactionManager::run) (closure
        /// rollbacks) returns — [`BoxError`](crate::rollback::BoxError) and
        /// [`Unbounded`](crate::storage::Unbounded) — so that transaction's error is
        /// `TransactionError<B>`. Without `alloc` there is no default (there is
        /// no storage every transaction uses, and a default that changed when
        /// another crate turns `alloc` on would break code): write all three, for
        /// example `TransactionError<B, Infallible, Fixed<4>>` for a
        /// `fixed::<NoRollback, 4>()` transaction, or the undo type's
        /// `<Undo as Rollback<Ctx>>::Error` as `RE`.
        ///
        /// ```
        /// # #[cfg(feature = "alloc")] {
        /// use transaction_manager::*;
        ///
        /// #[derive(Debug)]
        /// enum MyError { Api(StepError<&'static str>), EmptyName }
        ///
        /// impl From<StepError<&'static str>> for MyError {
        ///     fn from(error: StepError<&'static str>) -> Self { MyError::Api(error) }
        /// }
        ///
        /// async fn provision(manager: &TransactionManager<&ManualClock>, name: &str) -> Result<u32, TransactionError<MyError>> {
        ///     let done = manager
        ///         .run("provision", async |tx| {
        ///             if name.is_empty() {
        ///                 return Err(MyError::EmptyName);
        ///             }
        ///             let id = tx
        ///                 .step("create_user")
        ///                 .execute(|| async { Ok::<_, &str>(7) })
        ///                 .rollback(|id| async move { println!("delete user {id}"); Ok::<_, &str>(()) })
        ///                 .await?;
        ///             Ok(id)
        ///         })
        ///         .await?;
        ///     Ok(done.into_value())
        /// }
        ///
        /// let clock = ManualClock::new();
        /// let manager = TransactionManager::new(&clock);
        /// assert_eq!(clock.block_on(provision(&manager, "alice")).unwrap(), 7);
        /// let error = clock.block_on(provision(&manager, "")).unwrap_err();
        /// assert!(matches!(error.cause(), MyError::EmptyName));
        /// # }
        /// ```
        pub struct TransactionError<B, $($params)*> {
            pub(crate) cause: B,
            pub(crate) rollback_failures: S::List<RollbackFailure<RE>>,
            pub(crate) summary: Summary<S>,
        }
    };
}

#[cfg(feature = "alloc")]
transaction_error!(RE = crate::ledger::rollback::BoxError, S: Storage = crate::util::storage::Unbounded);
#[cfg(not(feature = "alloc"))]
transaction_error!(RE, S: Storage);

impl<B, RE, S: Storage> TransactionError<B, RE, S> {
    /// The error that stopped the transaction.
    pub fn cause(&self) -> &B {
        &self.cause
    }

    /// The error that stopped the transaction, by value.
    pub fn into_cause(self) -> B {
        self.cause
    }

    /// Every rollback that failed, in the order rollback ran (latest step
    /// first).
    pub fn rollback_failures(&self) -> &[RollbackFailure<RE>] {
        &self.rollback_failures
    }

    /// [`Clean`](RollbackState::Clean) when every rollback succeeded,
    /// [`Partial`](RollbackState::Partial) when any failed or was not
    /// attempted.
    ///
    /// A journaled transaction whose outcome is unknown (its `Committed`
    /// entry and then its `Aborted` entry could not be written, a
    /// [`JournalFailure`](crate::durable::journal::JournalFailure) for `aborted` in the cause)
    /// rolled nothing back: its rollbacks are left to recovery, which runs
    /// them unless the journal holds `Committed`. It is `Partial`, its
    /// steps [`RollbackSkipped`](StepStatus::RollbackSkipped).
    ///
    /// A scope ([`Transaction::scope`](crate::Transaction::scope)) whose
    /// rollback failed earlier counts too: its step stays `RollbackFailed`.
    pub fn rollback_state(&self) -> RollbackState {
        RollbackState::of(self.rollback_failures.len(), &self.summary)
    }

    /// Whether a rollback failed or was skipped, so effects of the
    /// transaction may remain.
    pub fn is_partially_rolled_back(&self) -> bool {
        self.rollback_state() == RollbackState::Partial
    }

    /// The steps with a rollback that were never attempted because an
    /// earlier rollback failed under
    /// [`RollbackFailurePolicy::Stop`](crate::rollback::RollbackFailurePolicy::Stop),
    /// or because the transaction's outcome is unknown and its rollbacks
    /// are left to recovery (see [`rollback_state`](Self::rollback_state)).
    pub fn skipped_rollbacks(&self) -> impl Iterator<Item = &StepRecord> {
        self.summary.steps().iter().filter(|s| s.status() == StepStatus::RollbackSkipped)
    }

    /// The transaction's summary.
    pub fn summary(&self) -> &Summary<S> {
        &self.summary
    }

    /// The parts: cause, rollback failures, summary.
    #[allow(clippy::type_complexity)]
    pub fn into_parts(self) -> (B, S::List<RollbackFailure<RE>>, Summary<S>) {
        (self.cause, self.rollback_failures, self.summary)
    }
}

impl<B: fmt::Display, RE: fmt::Display, S: Storage> fmt::Display for TransactionError<B, RE, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transaction `{}` ({}) failed: {}; ", self.summary.info.operation, self.summary.info.id, self.cause)?;
        let rolled_back = self.summary.rolled_back_steps();
        let skipped = self.summary.rollback_skipped_steps();
        // A scope's rollback that failed earlier counts too: its step is
        // `RollbackFailed` in the summary.
        match (self.rollback_failures.len().max(self.summary.rollback_errors()), skipped) {
            (0, 0) if rolled_back == 0 => f.write_str("nothing to roll back"),
            // Only an unknown outcome skips rollbacks without a failure.
            (0, skipped) if skipped > 0 => write!(
                f,
                "outcome unknown: nothing rolled back, {skipped} {} left to recovery (rolled back unless the \
                 journal holds `committed`)",
                rollbacks(skipped)
            ),
            (0, 0) => write!(f, "rolled back cleanly ({rolled_back} {})", steps(rolled_back)),
            (failed, skipped) => {
                write!(f, "PARTIALLY rolled back ({rolled_back} rolled back, {failed} failed")?;
                if skipped > 0 {
                    write!(f, ", {skipped} never attempted")?;
                }
                for failure in self.rollback_failures.iter() {
                    write!(f, "; {failure}")?;
                }
                f.write_str(")")
            }
        }
    }
}

impl<B: fmt::Debug, RE: fmt::Debug, S: Storage> fmt::Debug for TransactionError<B, RE, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionError")
            .field("cause", &self.cause)
            .field("rollback_failures", &self.rollback_failures())
            .field("summary", &self.summary)
            .finish()
    }
}

impl<B, RE, S> core::error::Error for TransactionError<B, RE, S>
where
    B: core::error::Error + 'static,
    RE: fmt::Debug + fmt::Display,
    S: Storage,
{
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        Some(&self.cause)
    }
}

fn steps(n: usize) -> &'static str {
    if n == 1 { "step" } else { "steps" }
}

fn rollbacks(n: usize) -> &'static str {
    if n == 1 { "rollback" } else { "rollbacks" }
}

/// A transaction whose body returned `Ok`: its value and its summary.
///
/// ```
/// # use transaction_manager::*;
/// # let clock = ManualClock::new();
/// # let manager = TransactionManager::new(&clock);
/// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |_tx| {
///     Ok::<_, ()>(7)
/// })).unwrap();
/// assert_eq!(*done.value(), 7);
/// assert_eq!(done.into_value(), 7);
/// ```
pub struct Committed<T, S: Storage> {
    pub(crate) value: T,
    pub(crate) summary: Summary<S>,
}

impl<T, S: Storage> Committed<T, S> {
    /// The body's value.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The body's value, by value.
    pub fn into_value(self) -> T {
        self.value
    }

    /// The transaction's summary.
    pub fn summary(&self) -> &Summary<S> {
        &self.summary
    }

    /// The value and the summary.
    pub fn into_parts(self) -> (T, Summary<S>) {
        (self.value, self.summary)
    }
}

impl<T: fmt::Debug, S: Storage> fmt::Debug for Committed<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committed").field("value", &self.value).field("summary", &self.summary).finish()
    }
}

/// What running a transaction returns: the value and summary of a committed
/// transaction, or the error of one that was rolled back.
///
/// `T` is the body's value, `B` its error, `RE` the rollback error type and
/// `S` the storage. With `alloc`, `RE` and `S` default to those of closure
/// rollbacks ([`TransactionManager::run`](crate::TransactionManager::run)), as for [`TransactionError`].
#[cfg(feature = "alloc")]
pub type Outcome<T, B, RE = crate::ledger::rollback::BoxError, S = crate::util::storage::Unbounded> =
    Result<Committed<T, S>, TransactionError<B, RE, S>>;
/// What running a transaction returns: the value and summary of a committed
/// transaction, or the error of one that was rolled back.
///
/// `T` is the body's value, `B` its error, `RE` the rollback error type and
/// `S` the storage.
#[cfg(not(feature = "alloc"))]
pub type Outcome<T, B, RE, S> = Result<Committed<T, S>, TransactionError<B, RE, S>>;
