//! Typed errors: of a step, of a rollback, and of a whole transaction.

use core::fmt;
use core::time::Duration;

use crate::{
    ledger::summary::Summary,
    timing::interrupt::InterruptReason,
    util::{
        storage::Storage,
        text::{Name, PanicMessage},
    },
};

/// Why a step did not produce a value. Returned by awaiting a step, so the
/// body can stop with `?` (which rolls back the completed steps).
///
/// Keeps the step's own error type `E`: a failed step is
/// [`StepErrorKind::Failed`] holding the error of its last attempt.
///
/// ```
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
///     tx.step("charge").run(|| async { Err::<(), _>(402u16) }).await
/// })).unwrap_err();
/// let step_error: &StepError<u16> = err.cause();
/// assert_eq!(step_error.step(), "charge");
/// assert!(matches!(step_error.kind(), StepErrorKind::Failed(402)));
/// assert_eq!(step_error.to_string(), "step `charge` failed: 402");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepError<E> {
    pub(crate) step: Name,
    pub(crate) index: usize,
    pub(crate) kind: StepErrorKind<E>,
}

/// The ways a step can fail.
///
/// ```
/// use core::time::Duration;
/// use transaction_manager::StepErrorKind;
/// let kind: StepErrorKind<()> = StepErrorKind::TimedOut { timeout: Duration::from_secs(1) };
/// assert!(kind.is_timeout());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StepErrorKind<E> {
    /// Execute returned this error on its last attempt.
    Failed(E),
    /// The last attempt did not finish within the step's timeout.
    TimedOut {
        /// The per-attempt timeout that ran out.
        timeout: Duration,
    },
    /// The step was not run: the transaction already holds as many steps as
    /// its [`Storage`] allows.
    CapacityExceeded {
        /// The transaction's capacity, in steps.
        capacity: usize,
    },
    /// Execute, or a hook of this step, panicked (caught with the `std`
    /// feature). A step whose hook panicked is not retried.
    Panicked(PanicMessage),
    /// The transaction was stopped from outside while this step was in
    /// progress (or, for the step named `(between steps)`, while the body
    /// was between steps). See [`Interrupted`](crate::timing::interrupt::Interrupted).
    Interrupted(InterruptReason),
    /// The step was not run: its name is empty. Names identify steps in
    /// summaries, logs and hooks.
    EmptyName,
    /// The manager's journal could not write this step's entry: its intent
    /// (the step did not run) or its `Done` (the step ran and its undo
    /// record is kept in memory, so the transaction rolls it back when the
    /// body stops). For the step named `(commit)`, the transaction's
    /// decision: for `committed`, its `Committed` entry could not be
    /// written and its `Aborted` entry was, and its steps were rolled
    /// back; for `aborted`, neither could be written: the outcome is
    /// unknown, nothing was rolled back, and recovery decides (it rolls
    /// the steps back unless the journal holds `Committed`).
    Journal(crate::durable::journal::JournalFailure),
    /// The step was a member of a parallel group that cancels its other
    /// members when one fails ([`Group::cancel_on_failure`](crate::api::group::Group::cancel_on_failure)),
    /// and another member failed first. An attempt in flight was dropped,
    /// so its outcome is uncertain.
    Cancelled,
}

impl<E> StepErrorKind<E> {
    /// Converts the step's own error (in [`Failed`](StepErrorKind::Failed))
    /// with `f`; the other kinds carry no error and stay as they are.
    ///
    /// ```
    /// use transaction_manager::StepErrorKind;
    /// let kind: StepErrorKind<u16> = StepErrorKind::Failed(503);
    /// assert_eq!(kind.map(u32::from), StepErrorKind::Failed(503u32));
    /// ```
    pub fn map<E2>(self, f: impl FnOnce(E) -> E2) -> StepErrorKind<E2> {
        match self {
            StepErrorKind::Failed(e) => StepErrorKind::Failed(f(e)),
            StepErrorKind::TimedOut { timeout } => StepErrorKind::TimedOut { timeout },
            StepErrorKind::CapacityExceeded { capacity } => StepErrorKind::CapacityExceeded { capacity },
            StepErrorKind::Panicked(message) => StepErrorKind::Panicked(message),
            StepErrorKind::Interrupted(reason) => StepErrorKind::Interrupted(reason),
            StepErrorKind::EmptyName => StepErrorKind::EmptyName,
            StepErrorKind::Journal(failure) => StepErrorKind::Journal(failure),
            StepErrorKind::Cancelled => StepErrorKind::Cancelled,
        }
    }

    /// Whether the step ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, StepErrorKind::TimedOut { .. })
    }

    /// The kind's name, without formatting machinery: for compact
    /// firmware logs. The same names as the `kind` field of a serialized
    /// `StepError` (`serde` feature).
    ///
    /// ```
    /// use transaction_manager::StepErrorKind;
    /// let kind: StepErrorKind<&str> = StepErrorKind::TimedOut { timeout: core::time::Duration::from_millis(20) };
    /// assert_eq!(kind.as_str(), "timed_out");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            StepErrorKind::Failed(_) => "failed",
            StepErrorKind::TimedOut { .. } => "timed_out",
            StepErrorKind::CapacityExceeded { .. } => "capacity_exceeded",
            StepErrorKind::Panicked(_) => "panicked",
            StepErrorKind::Interrupted(_) => "interrupted",
            StepErrorKind::EmptyName => "empty_name",
            StepErrorKind::Journal(_) => "journal",
            StepErrorKind::Cancelled => "cancelled",
        }
    }

    /// Whether the step may have taken effect although it failed: it timed
    /// out, panicked, or was interrupted mid-attempt.
    pub fn is_uncertain(&self) -> bool {
        matches!(
            self,
            StepErrorKind::TimedOut { .. }
                | StepErrorKind::Panicked(_)
                | StepErrorKind::Interrupted(_)
                | StepErrorKind::Cancelled
        )
    }
}

impl<E> StepError<E> {
    /// The name of the step that failed.
    pub fn step(&self) -> &Name {
        &self.step
    }

    /// The index of the step that failed, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How the step failed.
    pub fn kind(&self) -> &StepErrorKind<E> {
        &self.kind
    }

    /// How the step failed, by value.
    pub fn into_kind(self) -> StepErrorKind<E> {
        self.kind
    }

    /// Converts the step's own error with `f`, keeping the step's name,
    /// index and the kind of failure: for a body whose steps have different
    /// error types, `.await.map_err(|e| e.map(AppError::Io))?`. (On the step
    /// itself, [`Execute::map_err`](crate::api::execute::Execute::map_err) does the same
    /// for each attempt, so the summary shows the converted text.)
    ///
    /// ```
    /// # use transaction_manager::*;
    /// #[derive(Debug, PartialEq)]
    /// enum AppError { Http(u16), Parse(&'static str) }
    ///
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
    ///     let body = tx.step("fetch").run(|| async { Ok::<_, u16>("42x") }).await.map_err(|e| e.map(AppError::Http))?;
    ///     let n: u32 = tx.step("parse")
    ///         .run(|| async move { body.parse::<u32>().map_err(|_| "not a number") })
    ///         .await
    ///         .map_err(|e| e.map(AppError::Parse))?;
    ///     Ok::<_, StepError<AppError>>(n)
    /// })).unwrap_err();
    /// assert_eq!(err.cause().kind(), &StepErrorKind::Failed(AppError::Parse("not a number")));
    /// assert_eq!(err.cause().step(), "parse");
    /// ```
    pub fn map<E2>(self, f: impl FnOnce(E) -> E2) -> StepError<E2> {
        StepError { step: self.step, index: self.index, kind: self.kind.map(f) }
    }

    /// Converts the step's own error with `Into`: `map(Into::into)`, for
    /// `.await.map_err(StepError::err_into)?` into a body whose error type
    /// converts from each step's.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
    ///     tx.step("small").run(|| async { Ok::<_, u8>(1) }).await.map_err(StepError::err_into)?;
    ///     tx.step("large").run(|| async { Err::<(), u16>(503) }).await?;
    ///     Ok::<_, StepError<u16>>(())
    /// })).unwrap_err();
    /// assert_eq!(err.cause().to_string(), "step `large` failed: 503");
    /// ```
    pub fn err_into<E2: From<E>>(self) -> StepError<E2> {
        self.map(E2::from)
    }

    /// The step's own error, if execute returned one (not a timeout or a
    /// capacity error).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # let clock = ManualClock::new();
    /// # let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
    ///     tx.step("charge").run(|| async { Err::<(), _>(402u16) }).await
    /// })).unwrap_err();
    /// assert_eq!(err.cause().error(), Some(&402));
    /// ```
    pub fn error(&self) -> Option<&E> {
        match &self.kind {
            StepErrorKind::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// The step's own error, if execute returned one (not a timeout or a
    /// capacity error).
    pub fn into_inner(self) -> Option<E> {
        match self.kind {
            StepErrorKind::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the step ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.kind.is_timeout()
    }
}

impl<E: fmt::Display> fmt::Display for StepError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let StepErrorKind::EmptyName = self.kind {
            return f.write_str("step not run: its name is empty");
        }
        write!(f, "step `{}` ", self.step)?;
        match &self.kind {
            StepErrorKind::Failed(e) => write!(f, "failed: {e}"),
            StepErrorKind::TimedOut { timeout } => write!(f, "timed out after {}", crate::util::text::Dur(*timeout)),
            StepErrorKind::CapacityExceeded { capacity } => {
                write!(f, "not run: the transaction's capacity of {capacity} steps is used up")
            }
            StepErrorKind::Panicked(message) => write!(f, "panicked: {message}"),
            StepErrorKind::Interrupted(reason) => write!(f, "interrupted: {reason}"),
            StepErrorKind::Cancelled => f.write_str("cancelled: another member of its group failed"),
            StepErrorKind::EmptyName => Ok(()),
            StepErrorKind::Journal(failure) => write!(f, "not recorded: {failure}"),
        }
    }
}

impl<E: core::error::Error + 'static> core::error::Error for StepError<E> {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match &self.kind {
            StepErrorKind::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// A step whose rollback failed on every attempt, and why.
///
/// ```
/// # use transaction_manager::*;
/// # use transaction_manager::rollback::RollbackErrorKind;
/// # let clock = ManualClock::new();
/// # let manager = TransactionManager::new(&clock);
/// struct Undo;
/// impl Rollback<()> for Undo {
///     type Error = &'static str;
///     async fn rollback(&mut self, _: &mut ()) -> Result<(), &'static str> { Err("busy") }
/// }
/// let err = clock.block_on(manager.transaction("t").fixed::<Undo, 2>().run(async |tx| {
///     tx.step("a").execute(|| async { Ok::<_, &str>(()) }).undo(|_| Undo).await?;
///     tx.step("b").run(|| async { Err::<(), _>("down") }).await
/// })).unwrap_err();
/// let failure = &err.rollback_failures()[0];
/// assert_eq!((failure.step().as_str(), failure.index()), ("a", 0));
/// assert!(matches!(failure.kind(), RollbackErrorKind::Failed("busy")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RollbackFailure<RE> {
    pub(crate) step: Name,
    pub(crate) index: usize,
    pub(crate) kind: RollbackErrorKind<RE>,
}

/// The ways a rollback can fail.
///
/// ```
/// use transaction_manager::rollback::RollbackErrorKind;
/// let kind: RollbackErrorKind<&str> = RollbackErrorKind::Failed("busy");
/// assert!(!kind.is_timeout());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RollbackErrorKind<RE> {
    /// The rollback returned this error on its last attempt.
    Failed(RE),
    /// The last rollback attempt did not finish within its timeout.
    TimedOut {
        /// The per-attempt rollback timeout that ran out.
        timeout: Duration,
    },
    /// The rollback, or a hook of it, panicked (caught with the `std`
    /// feature).
    Panicked(PanicMessage),
}

impl<RE> RollbackErrorKind<RE> {
    /// Whether the rollback ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RollbackErrorKind::TimedOut { .. })
    }
}

impl<RE> RollbackFailure<RE> {
    /// The name of the step whose rollback failed.
    pub fn step(&self) -> &Name {
        &self.step
    }

    /// The index of that step, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How the rollback failed.
    pub fn kind(&self) -> &RollbackErrorKind<RE> {
        &self.kind
    }

    /// How the rollback failed, by value.
    pub fn into_kind(self) -> RollbackErrorKind<RE> {
        self.kind
    }

    /// The rollback's own error, if it returned one (not a timeout or a
    /// panic). For closure rollbacks this is a [`BoxError`](crate::ledger::rollback::BoxError):
    /// see [`downcast_ref`](RollbackFailure::downcast_ref).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # let clock = ManualClock::new();
    /// # let manager = TransactionManager::new(&clock);
    /// struct Undo;
    /// impl Rollback<()> for Undo {
    ///     type Error = u16;
    ///     async fn rollback(&mut self, _: &mut ()) -> Result<(), u16> { Err(503) }
    /// }
    /// let err = clock.block_on(manager.transaction("t").fixed::<Undo, 2>().run(async |tx| {
    ///     tx.step("a").execute(|| async { Ok::<_, &str>(()) }).undo(|_| Undo).await?;
    ///     tx.step("b").run(|| async { Err::<(), _>("down") }).await
    /// })).unwrap_err();
    /// assert_eq!(err.rollback_failures()[0].error(), Some(&503));
    /// ```
    pub fn error(&self) -> Option<&RE> {
        match &self.kind {
            RollbackErrorKind::Failed(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "alloc")]
impl RollbackFailure<crate::ledger::rollback::BoxError> {
    /// The boxed error of a closure rollback as its own type `T`, for tests
    /// and for handling: `None` if the rollback timed out or panicked, or
    /// its error is of another type.
    ///
    /// Errors boxed from a `&str` or a `String` become a private type of
    /// the standard library: compare their text instead
    /// (`failure.error().map(ToString::to_string)`).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// #[derive(Debug, PartialEq)]
    /// struct Conflict { version: u32 }
    /// impl core::fmt::Display for Conflict {
    ///     fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
    ///         write!(f, "conflict at version {}", self.version)
    ///     }
    /// }
    /// impl core::error::Error for Conflict {}
    ///
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.run("t", async |tx| {
    ///     tx.step("a")
    ///         .execute(|| async { Ok::<_, &str>(()) })
    ///         .rollback(|()| async { Err::<(), _>(Conflict { version: 7 }) })
    ///         .await?;
    ///     tx.step("b").run(|| async { Err::<(), _>("down") }).await
    /// })).unwrap_err();
    /// let failure = &err.rollback_failures()[0];
    /// assert_eq!(failure.downcast_ref::<Conflict>(), Some(&Conflict { version: 7 }));
    /// assert!(failure.downcast_ref::<std::io::Error>().is_none());
    /// ```
    pub fn downcast_ref<T: core::error::Error + 'static>(&self) -> Option<&T> {
        self.error()?.downcast_ref::<T>()
    }
}

impl<RE: fmt::Display> fmt::Display for RollbackFailure<RE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            RollbackErrorKind::Failed(e) => {
                write!(f, "rollback of step `{}` failed: {e}", self.step)
            }
            RollbackErrorKind::TimedOut { timeout } => {
                write!(f, "rollback of step `{}` timed out after {}", self.step, crate::util::text::Dur(*timeout))
            }
            RollbackErrorKind::Panicked(message) => {
                write!(f, "rollback of step `{}` panicked: {message}", self.step)
            }
        }
    }
}

impl<RE: fmt::Debug + fmt::Display> core::error::Error for RollbackFailure<RE> {}

/// Whether a failed transaction left anything behind.
///
/// ```
/// use transaction_manager::RollbackState;
/// assert!(RollbackState::Clean.is_clean());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RollbackState {
    /// Every completed step that has a rollback was rolled back (or there was
    /// nothing to roll back).
    Clean,
    /// At least one rollback failed, or was never attempted: effects of
    /// those steps may remain. See [`TransactionError::rollback_failures`](crate::TransactionError::rollback_failures)
    /// and [`TransactionError::skipped_rollbacks`](crate::TransactionError::skipped_rollbacks).
    Partial,
}

impl RollbackState {
    /// The one rule for clean or partial, used by the error, the journal,
    /// the log and recovery alike: clean when no rollback failed for good
    /// (`failures` of this rollback, or a step left `RollbackFailed` by an
    /// earlier one, such as a scope's) and none was skipped.
    pub(crate) fn of<S: Storage>(failures: usize, summary: &Summary<S>) -> Self {
        Self::of_steps(failures, &summary.steps)
    }

    /// [`of`](Self::of) over some steps only: a scope's, for its own
    /// rollback.
    pub(crate) fn of_steps(failures: usize, steps: &[crate::ledger::record::StepRecord]) -> Self {
        let left = |s: &crate::ledger::record::StepRecord| {
            matches!(
                s.status(),
                crate::ledger::record::StepStatus::RollbackFailed | crate::ledger::record::StepStatus::RollbackSkipped
            )
        };
        if failures == 0 && !steps.iter().any(left) { RollbackState::Clean } else { RollbackState::Partial }
    }

    /// Whether nothing was left behind.
    pub fn is_clean(self) -> bool {
        self == RollbackState::Clean
    }
}

/// The body error of a journaled transaction whose `Committed` entry could
/// not be written: its steps are rolled back (the journal would otherwise
/// roll them back at the next recovery, after `run` said `Ok`).
impl<E> From<crate::durable::journal::JournalFailure> for StepError<E> {
    fn from(failure: crate::durable::journal::JournalFailure) -> Self {
        // `Begin`: an id given by hand that the journal has seen.
        let step =
            if failure.entry() == Some(crate::durable::entry::EntryKind::Begin) { "(begin)" } else { "(commit)" };
        StepError { step: Name::from(step), index: usize::MAX, kind: StepErrorKind::Journal(failure) }
    }
}

/// An interrupted transaction as a step error: the step in progress (or,
/// between steps, the name `(between steps)` and the index the next step
/// would have had) with [`StepErrorKind::Interrupted`].
impl<E> From<crate::timing::interrupt::Interrupted> for StepError<E> {
    fn from(interrupted: crate::timing::interrupt::Interrupted) -> Self {
        let (step, index) = interrupted.step.unwrap_or_else(|| (Name::from("(between steps)"), interrupted.steps));
        StepError { step, index, kind: StepErrorKind::Interrupted(interrupted.reason) }
    }
}
