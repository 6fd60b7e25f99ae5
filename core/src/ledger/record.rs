//! What a transaction knows about itself and each of its steps.

use core::fmt;
use core::time::Duration;

use crate::durable::id::TransactionId;
use crate::util::text::ErrorText;
use crate::util::text::Name;

/// Where a step is in its life.
///
/// `Pending → InProgress → Completed | Failed`, and a step that is rolled
/// back ends `RolledBack`, `RollbackFailed` or (when rollback stopped at an
/// earlier failure) `RollbackSkipped`.
///
/// ```
/// use transaction_manager::StepStatus;
/// assert_eq!(StepStatus::RollbackFailed.as_str(), "rollback_failed");
/// assert_eq!(StepStatus::Completed.to_string(), "completed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StepStatus {
    /// Registered, not started.
    Pending,
    /// Executing, or waiting to retry.
    InProgress,
    /// Executed successfully (and not rolled back).
    Completed,
    /// Execute failed on every attempt, or timed out.
    Failed,
    /// Completed, then rolled back successfully.
    RolledBack,
    /// Completed, then every rollback attempt failed or timed out.
    RollbackFailed,
    /// Completed and has a rollback, but it was never attempted: an
    /// earlier rollback failed and the transaction's
    /// [`RollbackFailurePolicy`](crate::rollback::RollbackFailurePolicy) is `Stop`;
    /// or the transaction's outcome is unknown (neither its `Committed`
    /// nor its `Aborted` journal entry could be written) and the rollback
    /// is left to recovery.
    RollbackSkipped,
}

impl StepStatus {
    /// The status as `snake_case` text, as the Python package
    /// `async-transaction-manager` (0.1.2) names it.
    ///
    /// ```
    /// # use transaction_manager::StepStatus;
    /// assert_eq!(StepStatus::InProgress.as_str(), "in_progress");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::InProgress => "in_progress",
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::RolledBack => "rolled_back",
            StepStatus::RollbackFailed => "rollback_failed",
            StepStatus::RollbackSkipped => "rollback_skipped",
        }
    }
}

impl fmt::Display for StepStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a running transaction, as hooks see it.
///
/// ```
/// use transaction_manager::{ManualClock, TransactionManager};
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let builder = manager.transaction("provision");
/// assert_eq!(builder.info().operation(), "provision");
/// ```
#[derive(Clone, Debug)]
pub struct TransactionInfo {
    pub(crate) id: TransactionId,
    pub(crate) operation: Name,
}

impl TransactionInfo {
    /// The transaction's id.
    ///
    /// ```
    /// # use transaction_manager::{ManualClock, TransactionId, TransactionManager};
    /// # let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let tx = manager.transaction("op").with_id(TransactionId::new(9));
    /// assert_eq!(tx.info().id(), TransactionId::new(9));
    /// ```
    pub fn id(&self) -> TransactionId {
        self.id
    }

    /// The operation name; the id's text (`tx-N`) when none was given.
    ///
    /// ```
    /// # use transaction_manager::{ManualClock, TransactionId, TransactionManager};
    /// # let clock = ManualClock::new();
    /// # let manager = TransactionManager::new(&clock);
    /// let tx = manager.unnamed_transaction().with_id(TransactionId::new(5));
    /// assert_eq!(tx.info().operation(), "tx-5");
    /// ```
    pub fn operation(&self) -> &Name {
        &self.operation
    }
}

/// Everything a transaction recorded about one step: the per-step part of a
/// [`Summary`](crate::Summary), and what hooks see.
///
/// Times are readings of the transaction's [`Clock`](crate::Clock).
///
/// ```
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let done = clock.block_on(manager.transaction("op").fixed::<NoRollback, 2>().run(async |tx| {
///     tx.step("check").run(|| async { Ok::<_, &str>(()) }).await?;
///     Ok::<_, StepError<&str>>(())
/// })).unwrap();
/// let step = &done.summary().steps()[0];
/// assert_eq!((step.name().as_str(), step.status(), step.attempts()), ("check", StepStatus::Completed, 1));
/// ```
#[derive(Clone, Debug)]
pub struct StepRecord {
    pub(crate) index: usize,
    pub(crate) name: Name,
    pub(in crate::ledger) status: StepStatus,
    pub(in crate::ledger) has_rollback: bool,
    /// Execute's last attempt succeeded (the step's own status may have
    /// moved on to a rollback status since).
    pub(in crate::ledger) succeeded: bool,
    /// Packed (12 bytes aligned to 4), like the [`At`]s: a record is 104
    /// bytes on 32-bit targets instead of 112.
    pub(crate) timeout: crate::timing::future::Timeout,
    pub(in crate::ledger) started_at: At,
    pub(in crate::ledger) completed_at: At,
    pub(in crate::ledger) attempts: u32,
    pub(in crate::ledger) error: Option<ErrorText>,
    pub(in crate::ledger) rollback_started_at: At,
    pub(in crate::ledger) rollback_completed_at: At,
    pub(in crate::ledger) rollback_attempts: u32,
    pub(in crate::ledger) rollback_error: Option<ErrorText>,
    /// The innermost scope the step ran in ([`Transaction::scope`](crate::Transaction::scope)).
    pub(in crate::ledger) scope: Option<&'static str>,
    /// Nonzero for the members of a group whose rollbacks run at the same
    /// time: the same number for the members of one group.
    #[cfg(feature = "alloc")]
    pub(in crate::ledger) rollback_group: u32,
}

impl StepRecord {
    pub(crate) fn new(index: usize, name: Name, timeout: Option<Duration>, has_rollback: bool) -> Self {
        Self {
            index,
            name,
            status: StepStatus::Pending,
            has_rollback,
            succeeded: false,
            timeout: crate::timing::future::Timeout::new(timeout),
            started_at: At::NONE,
            completed_at: At::NONE,
            attempts: 0,
            error: None,
            rollback_started_at: At::NONE,
            rollback_completed_at: At::NONE,
            rollback_attempts: 0,
            rollback_error: None,
            scope: None,
            #[cfg(feature = "alloc")]
            rollback_group: 0,
        }
    }

    /// Its rollback ran and ended (rolled back, or failed for good).
    #[cfg(feature = "alloc")]
    pub(crate) fn rollback_ended(&self) -> bool {
        matches!(self.status, StepStatus::RolledBack | StepStatus::RollbackFailed)
    }

    /// It belongs to a group whose rollbacks run at the same time, and its
    /// rollback ended: a batch dropped before it took its records out left
    /// its record owed. (Only there: anywhere else a record whose step's
    /// rollback ended is a second record of the step, a bug that must
    /// show, not be passed over.)
    pub(crate) fn ended_in_batch(&self) -> bool {
        #[cfg(feature = "alloc")]
        {
            self.rollback_group != 0 && self.rollback_ended()
        }
        #[cfg(not(feature = "alloc"))]
        {
            false
        }
    }

    /// Position of the step in its transaction, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The step's name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The step's current status.
    pub fn status(&self) -> StepStatus {
        self.status
    }

    /// The innermost scope the step ran in ([`Transaction::scope`](crate::Transaction::scope)),
    /// or `None` for a step of the transaction's own body.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
    ///     tx.step("a").run(|| async { Ok::<_, &str>(()) }).await?;
    ///     tx.scope("payment", async |tx| tx.step("b").run(|| async { Ok::<_, &str>(()) }).await).await?;
    ///     Ok::<_, StepError<&str>>(())
    /// })).unwrap();
    /// let steps = done.summary().steps();
    /// assert_eq!((steps[0].scope(), steps[1].scope()), (None, Some("payment")));
    /// ```
    pub fn scope(&self) -> Option<&'static str> {
        self.scope
    }

    /// Whether the step was given a rollback.
    pub fn has_rollback(&self) -> bool {
        self.has_rollback
    }

    /// Whether execute succeeded, on its last attempt: true for a step that
    /// completed (and stays true after it is rolled back), false for one
    /// that failed or has not finished.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
    ///     tx.step("ok").run(|| async { Ok::<_, &str>(()) }).await?;
    ///     tx.step("down").run(|| async { Err::<(), _>("503") }).await
    /// })).unwrap_err();
    /// let steps = err.summary().steps();
    /// assert!(steps[0].succeeded() && !steps[1].succeeded());
    /// ```
    pub fn succeeded(&self) -> bool {
        self.succeeded
    }

    /// The per-attempt timeout of execute, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.get()
    }

    /// When the first execute attempt started.
    pub fn started_at(&self) -> Option<Duration> {
        self.started_at.get()
    }

    /// When execute finished for good (succeeded, or failed its last attempt).
    pub fn completed_at(&self) -> Option<Duration> {
        self.completed_at.get()
    }

    /// Time from the first execute attempt to the end of the last, including
    /// backoff delays.
    pub fn duration(&self) -> Option<Duration> {
        Some(self.completed_at.get()?.saturating_sub(self.started_at.get()?))
    }

    /// Execute attempts made so far (1 + retries).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The text of the most recent execute error (or timeout), if any. Kept
    /// after a later attempt succeeds, so a retried step shows why it was
    /// retried ([`succeeded`](StepRecord::succeeded) tells the two apart;
    /// `Display` prints it as `last failed attempt: …`). Without `alloc`,
    /// cut to 56 bytes; without the `error-text` feature, always `None`
    /// (no text is kept).
    pub fn error(&self) -> Option<&str> {
        self.error.as_ref().filter(|_| ErrorText::KEPT).map(ErrorText::as_str)
    }

    /// When the first rollback attempt started.
    pub fn rollback_started_at(&self) -> Option<Duration> {
        self.rollback_started_at.get()
    }

    /// When the rollback finished for good.
    pub fn rollback_completed_at(&self) -> Option<Duration> {
        self.rollback_completed_at.get()
    }

    /// Rollback attempts made (0 when the step was not rolled back).
    pub fn rollback_attempts(&self) -> u32 {
        self.rollback_attempts
    }

    /// The text of the most recent rollback error (or timeout), if any
    /// (always `None` without the `error-text` feature).
    pub fn rollback_error(&self) -> Option<&str> {
        self.rollback_error.as_ref().filter(|_| ErrorText::KEPT).map(ErrorText::as_str)
    }
}

impl fmt::Display for StepRecord {
    /// One line: ``#index `name` [status] attempts: n``, then the duration,
    /// the timeout, the error (`error: …` for a step that failed, `last
    /// failed attempt: …` for one that succeeded after retries) and the
    /// rollback's attempts and error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} `{}` [{}] attempts: {}", self.index, self.name, self.status, self.attempts)?;
        if let Some(scope) = self.scope {
            write!(f, ", in scope `{scope}`")?;
        }
        if let Some(d) = self.duration() {
            write!(f, ", took {}", crate::util::text::Dur(d))?;
        }
        if let Some(t) = self.timeout() {
            write!(f, ", timeout {}", crate::util::text::Dur(t))?;
        }
        if let Some(e) = self.error() {
            let label = if self.succeeded { "last failed attempt" } else { "error" };
            write!(f, ", {label}: {e}")?;
        }
        if self.rollback_attempts > 0 {
            write!(f, ", rollback attempts: {}", self.rollback_attempts)?;
        }
        if let Some(e) = self.rollback_error() {
            write!(f, ", rollback error: {e}")?;
        }
        Ok(())
    }
}

/// A clock reading in 8 bytes instead of `Option<Duration>`'s 16: whole
/// nanoseconds, `u64::MAX` for "not yet". Readings past 584 years are kept
/// as the largest representable one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// 4-byte aligned, so that a step record is too (read by value only).
#[repr(Rust, packed(4))]
pub(crate) struct At(u64);

impl At {
    pub(crate) const NONE: At = At(u64::MAX);

    pub(crate) fn some(time: Duration) -> At {
        let nanos = time.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(time.subsec_nanos()));
        At(nanos.min(u64::MAX - 1))
    }

    pub(crate) fn get(self) -> Option<Duration> {
        (self.0 != u64::MAX).then(|| crate::timing::clock::duration_from_nanos(self.0))
    }

    pub(crate) fn is_none(self) -> bool {
        self.0 == u64::MAX
    }
}
