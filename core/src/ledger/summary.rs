//! The account of a finished transaction.

use core::fmt;
use core::time::Duration;

use crate::{
    durable::id::TransactionId,
    ledger::record::{StepRecord, StepStatus, TransactionInfo},
    util::{storage::Storage, text::Name},
};

/// What happened in a transaction: its id and operation, when it ran, and a
/// [`StepRecord`] per step in the order the steps ran.
///
/// The counts are of steps by their final status: a step that completed and
/// was then rolled back counts as rolled back, not as completed.
///
/// `Display` prints one line for the transaction and one per step, for a
/// terminal or a log.
///
/// ```
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let err = clock.block_on(manager.transaction("order").fixed::<NoRollback, 4>().run(async |tx| {
///     tx.step("reserve").run(|| async { Ok::<_, &str>(1) }).await?;
///     tx.step("charge").run(|| async { Err::<(), _>("card declined") }).await?;
///     Ok::<_, StepError<&str>>(())
/// })).unwrap_err();
/// let summary = err.summary();
/// assert_eq!(summary.operation_name(), "order");
/// assert_eq!((summary.total_steps(), summary.completed_steps(), summary.failed_steps()), (2, 1, 1));
/// # #[cfg(feature = "error-text")] // kept with `alloc`, or the `error-text` feature
/// assert_eq!(summary.steps()[1].error(), Some("card declined"));
/// println!("{summary}");
/// ```
pub struct Summary<S: Storage> {
    pub(in crate::ledger) info: TransactionInfo,
    pub(in crate::ledger) started_at: Duration,
    pub(in crate::ledger) completed_at: Duration,
    pub(in crate::ledger) steps: S::List<StepRecord>,
}

impl<S: Storage> Summary<S> {
    /// The transaction's id.
    pub fn transaction_id(&self) -> TransactionId {
        self.info.id
    }

    /// The operation name (the id's text when none was given).
    pub fn operation_name(&self) -> &Name {
        &self.info.operation
    }

    /// The transaction's id and operation together.
    pub fn info(&self) -> &TransactionInfo {
        &self.info
    }

    /// Every step, in the order it ran.
    pub fn steps(&self) -> &[StepRecord] {
        &self.steps
    }

    /// How many steps ran (or were started).
    pub fn total_steps(&self) -> usize {
        self.steps.len()
    }

    /// Steps that completed and were not rolled back.
    pub fn completed_steps(&self) -> usize {
        self.count(StepStatus::Completed)
    }

    /// Steps whose execute failed for good.
    pub fn failed_steps(&self) -> usize {
        self.count(StepStatus::Failed)
    }

    /// Steps rolled back successfully.
    pub fn rolled_back_steps(&self) -> usize {
        self.count(StepStatus::RolledBack)
    }

    /// Steps whose rollback failed for good (the rollback errors).
    pub fn rollback_errors(&self) -> usize {
        self.count(StepStatus::RollbackFailed)
    }

    /// Steps whose rollback was never attempted (see
    /// [`StepStatus::RollbackSkipped`]).
    pub fn rollback_skipped_steps(&self) -> usize {
        self.count(StepStatus::RollbackSkipped)
    }

    /// When the transaction started, by its clock.
    pub fn started_at(&self) -> Duration {
        self.started_at
    }

    /// When the transaction finished (after any rollback), by its clock.
    pub fn completed_at(&self) -> Duration {
        self.completed_at
    }

    /// How long the whole transaction took, rollback included.
    pub fn duration(&self) -> Duration {
        self.completed_at.saturating_sub(self.started_at)
    }

    fn count(&self, status: StepStatus) -> usize {
        self.steps.iter().filter(|s| s.status == status).count()
    }
}

impl<S: Storage> Clone for Summary<S>
where
    S::List<StepRecord>: Clone,
{
    fn clone(&self) -> Self {
        Self {
            info: self.info.clone(),
            started_at: self.started_at,
            completed_at: self.completed_at,
            steps: self.steps.clone(),
        }
    }
}

impl<S: Storage> fmt::Debug for Summary<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Summary")
            .field("transaction_id", &self.info.id)
            .field("operation_name", &self.info.operation)
            .field("total_steps", &self.total_steps())
            .field("completed_steps", &self.completed_steps())
            .field("failed_steps", &self.failed_steps())
            .field("rolled_back_steps", &self.rolled_back_steps())
            .field("rollback_errors", &self.rollback_errors())
            .field("rollback_skipped_steps", &self.rollback_skipped_steps())
            .field("started_at", &self.started_at)
            .field("completed_at", &self.completed_at)
            .field("steps", &self.steps())
            .finish()
    }
}

impl<S: Storage> fmt::Display for Summary<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transaction `{}` ({}): {} steps, {} completed, {} failed, {} rolled back, {} rollback errors",
            self.info.operation,
            self.info.id,
            self.total_steps(),
            self.completed_steps(),
            self.failed_steps(),
            self.rolled_back_steps(),
            self.rollback_errors(),
        )?;
        // Said only when there are some: most transactions have none.
        let skipped = self.rollback_skipped_steps();
        if skipped > 0 {
            write!(f, ", {skipped} rollbacks skipped")?;
        }
        write!(f, ", took {}", crate::util::text::Dur(self.duration()))?;
        for step in self.steps() {
            write!(f, "\n  {step}")?;
        }
        Ok(())
    }
}
