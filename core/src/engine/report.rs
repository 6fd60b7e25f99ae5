//! What a recovery reports: its counts ([`Recovery`]), each transaction's
//! outcome ([`RecoveredTransaction`], [`RecoveryOutcome`]), the steps a
//! transaction owes ([`OwedStep`]), and why it could not run
//! ([`RecoveryError`]).

use core::fmt;

use crate::durable::id::TransactionId;
use crate::durable::journal::JournalFailure;

/// What [`TransactionManager::recover`](crate::TransactionManager::recover) did: counts of the transactions
/// it touched ([`recover_each`](crate::TransactionManager::recover_each) names
/// each one).
///
/// ```
/// use transaction_manager::journal::Recovery;
/// let report = Recovery::default();
/// assert_eq!(report.found(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Recovery {
    pub(crate) found: usize,
    pub(crate) rolled_back: usize,
    pub(crate) partially_rolled_back: usize,
    pub(crate) stuck: usize,
    pub(crate) running: usize,
    pub(crate) deferred: usize,
}

impl Recovery {
    /// Unfinished transactions found in the journal and recovered (not
    /// counting those still [`running`](Recovery::running)).
    pub fn found(&self) -> usize {
        self.found
    }

    /// Of those, the ones whose owed rollbacks all succeeded (including
    /// those that owed nothing): they are over.
    pub fn rolled_back(&self) -> usize {
        self.rolled_back
    }

    /// Of those, the ones where some rollback failed for good (or was
    /// skipped by [`RollbackFailurePolicy::Stop`](crate::rollback::RollbackFailurePolicy::Stop)): they stay *owed*,
    /// listed by [`owed`](crate::TransactionManager::owed), and a later recovery
    /// tries what they owe again (on the [`OwedRetry`](crate::journal::OwedRetry) schedule).
    pub fn partially_rolled_back(&self) -> usize {
        self.partially_rolled_back
    }

    /// Of those, the ones that could not be rolled back and stay in the
    /// journal as *stuck* (see [`TransactionManager::stuck`](crate::TransactionManager::stuck)).
    pub fn stuck(&self) -> usize {
        self.stuck
    }

    /// Unfinished transactions left alone because they are running in
    /// this process.
    pub fn running(&self) -> usize {
        self.running
    }

    /// Of those found, the owed ones this recovery did not try, backing
    /// off ([`OwedRetry::Backoff`](crate::journal::OwedRetry::Backoff)): still owed.
    pub fn deferred(&self) -> usize {
        self.deferred
    }

    pub(crate) fn count(&mut self, outcome: RecoveryOutcome) {
        match outcome {
            RecoveryOutcome::RolledBack => self.rolled_back += 1,
            RecoveryOutcome::Owed => self.partially_rolled_back += 1,
            RecoveryOutcome::Stuck => self.stuck += 1,
            RecoveryOutcome::Deferred => self.deferred += 1,
            RecoveryOutcome::Running => {
                self.running += 1;
                return;
            }
        }
        self.found += 1;
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} unfinished transaction(s): {} rolled back, {} partially rolled back (still owed), {} stuck",
            self.found, self.rolled_back, self.partially_rolled_back, self.stuck
        )?;
        if self.deferred > 0 {
            write!(f, ", {} owed and not tried this time (backing off)", self.deferred)?;
        }
        if self.running > 0 {
            write!(f, "; {} running, left alone", self.running)?;
        }
        Ok(())
    }
}

/// How recovery left one transaction.
///
/// ```
/// use transaction_manager::journal::RecoveryOutcome;
/// assert_eq!(RecoveryOutcome::Owed.to_string(), "partially rolled back, still owed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecoveryOutcome {
    /// Every owed rollback succeeded: the transaction is over.
    RolledBack,
    /// A rollback failed for good (or was skipped by
    /// [`RollbackFailurePolicy::Stop`](crate::rollback::RollbackFailurePolicy::Stop)), or recovery's time for it ran
    /// out ([`with_recovery_bound`](crate::TransactionManager::with_recovery_bound)): the transaction stays owed, and
    /// a later recovery tries again (on the [`OwedRetry`](crate::journal::OwedRetry) schedule).
    Owed,
    /// It cannot be rolled back (see [`TransactionManager::stuck`](crate::TransactionManager::stuck)).
    Stuck,
    /// It is running in this process: left alone.
    Running,
    /// It is owed, and this recovery did not try it: backing off
    /// ([`OwedRetry::Backoff`](crate::journal::OwedRetry::Backoff)).
    Deferred,
}

impl fmt::Display for RecoveryOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecoveryOutcome::RolledBack => "rolled back",
            RecoveryOutcome::Owed => "partially rolled back, still owed",
            RecoveryOutcome::Stuck => "stuck",
            RecoveryOutcome::Running => "running, left alone",
            RecoveryOutcome::Deferred => "owed, not tried this time (backing off)",
        })
    }
}

/// One transaction recovery touched, as
/// [`recover_each`](crate::TransactionManager::recover_each) hands it to its
/// visitor.
#[derive(Clone, Copy, Debug)]
pub struct RecoveredTransaction<'a> {
    pub(crate) id: TransactionId,
    pub(crate) operation: &'a str,
    pub(crate) outcome: RecoveryOutcome,
    pub(crate) owed: usize,
}

impl RecoveredTransaction<'_> {
    /// The transaction's id.
    pub fn id(&self) -> TransactionId {
        self.id
    }

    /// Its operation name (`(unknown)` when the journal kept none).
    pub fn operation(&self) -> &str {
        self.operation
    }

    /// How recovery left it.
    pub fn outcome(&self) -> RecoveryOutcome {
        self.outcome
    }

    /// The rollbacks it still owes after this recovery.
    pub fn owed(&self) -> usize {
        self.owed
    }
}

impl fmt::Display for RecoveredTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} `{}`: {}", self.id, self.operation, self.outcome)?;
        if self.owed > 0 {
            write!(f, " ({} rollback(s) owed)", self.owed)?;
        }
        Ok(())
    }
}

/// Why [`recover`](crate::TransactionManager::recover) could not run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The journal could not be read, or a `Stuck` entry not written. What
    /// was rolled back before stays rolled back.
    Journal(JournalFailure),
    /// Transactions are running in this process that recovery cannot name
    /// (more than it keeps track of, or a target without 64-bit atomics):
    /// it cannot tell them from unfinished ones, so it did nothing. Run it
    /// when fewer transactions run (at start-up, for example).
    LiveUnknown {
        /// How many running transactions have no name.
        running: usize,
    },
}

impl fmt::Display for RecoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryError::Journal(failure) => write!(f, "recovery: {failure}"),
            RecoveryError::LiveUnknown { running } => write!(
                f,
                "recovery refused: {running} transaction(s) running in this process cannot be told from unfinished ones"
            ),
        }
    }
}

impl core::error::Error for RecoveryError {}

impl From<JournalFailure> for RecoveryError {
    fn from(failure: JournalFailure) -> Self {
        RecoveryError::Journal(failure)
    }
}

/// One owed step, as [`owed`](crate::TransactionManager::owed) hands it to its
/// visitor: a rollback that failed for good and is still owed.
#[derive(Clone, Copy, Debug)]
pub struct OwedStep<'a> {
    pub(crate) transaction: TransactionId,
    pub(crate) operation: &'a str,
    pub(crate) step: &'a str,
    pub(crate) index: u32,
    pub(crate) error: Option<&'a str>,
}

impl OwedStep<'_> {
    /// The transaction's id.
    pub fn transaction(&self) -> TransactionId {
        self.transaction
    }

    /// The transaction's operation name (`(unknown)` when the journal kept
    /// none).
    pub fn operation(&self) -> &str {
        self.operation
    }

    /// The step's name.
    pub fn step(&self) -> &str {
        self.step
    }

    /// The step's index in its transaction.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The error its rollback failed with when it was first recorded as
    /// failed for good (none where the journal keeps no text: the flash
    /// journal, or a build without `error-text`).
    pub fn error(&self) -> Option<&str> {
        self.error
    }
}
