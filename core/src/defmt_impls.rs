//! `defmt::Format` for the public types, so firmware can print them over a
//! probe without `core::fmt`.

use defmt::{Format, Formatter, write};

use crate::{
    durable::id::TransactionId,
    ledger::{
        error::{RollbackErrorKind, RollbackFailure, RollbackState, StepError, StepErrorKind},
        outcome::{Committed, TransactionError},
        record::{StepRecord, StepStatus, TransactionInfo},
        summary::Summary,
    },
    timing::{
        interrupt::{InterruptReason, Interrupted},
        retry::{Jitter, RetryPolicy},
    },
    util::{
        storage::Storage,
        text::{Name, PanicMessage},
    },
};

impl Format for Name {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "{=str}", self.as_str())
    }
}

impl Format for PanicMessage {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "{=str}", self.as_str())
    }
}

impl Format for InterruptReason {
    fn format(&self, f: Formatter<'_>) {
        match self {
            InterruptReason::DeadlineExceeded { deadline } => {
                write!(f, "the transaction's deadline of {} passed", deadline)
            }
            InterruptReason::Cancelled => write!(f, "the transaction was cancelled"),
        }
    }
}

impl Format for Interrupted {
    fn format(&self, f: Formatter<'_>) {
        match self.step() {
            Some(step) => write!(f, "{} during step `{}`", self.reason(), step),
            None => write!(f, "{} between steps", self.reason()),
        }
    }
}

impl Format for TransactionId {
    fn format(&self, f: Formatter<'_>) {
        match self.parts() {
            (0, counter) => write!(f, "tx-{=u32}", counter),
            (epoch, counter) => write!(f, "tx-{=u32}.{=u32}", epoch, counter),
        }
    }
}

impl Format for TransactionInfo {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "`{}` ({})", self.operation, self.id)
    }
}

impl Format for StepStatus {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "{=str}", self.as_str())
    }
}

impl Format for Jitter {
    fn format(&self, f: Formatter<'_>) {
        let name = match self {
            Jitter::None => "none",
            #[cfg(feature = "jitter")]
            Jitter::Full => "full",
            #[cfg(feature = "jitter")]
            Jitter::Equal => "equal",
        };
        write!(f, "{=str}", name)
    }
}

impl Format for RetryPolicy {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "RetryPolicy {{ max_retries: {=u32}, initial_interval: {}, multiplier: {=u32}, max_interval: {}, jitter: {} }}",
            self.max_retries(),
            self.initial_interval(),
            self.multiplier(),
            self.max_interval(),
            self.jitter()
        )
    }
}

impl Format for StepRecord {
    fn format(&self, f: Formatter<'_>) {
        // The same words as `Display`: a step that succeeded after retries
        // shows its last failed attempt, not an `error`.
        let label = if self.succeeded() { "last failed attempt" } else { "error" };
        write!(
            f,
            "#{=usize} `{}` [{}] attempts: {=u32}, took {}, {=str}: {}, rollback attempts: {=u32}, rollback error: {}",
            self.index(),
            self.name(),
            self.status(),
            self.attempts(),
            self.duration(),
            label,
            self.error(),
            self.rollback_attempts(),
            self.rollback_error()
        );
        if let Some(scope) = self.scope() {
            write!(f, ", in scope `{=str}`", scope);
        }
    }
}

impl<S: Storage> Format for Summary<S> {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "transaction {}: {=usize} steps, {=usize} completed, {=usize} failed, {=usize} rolled back, {=usize} rollback errors",
            self.info(),
            self.total_steps(),
            self.completed_steps(),
            self.failed_steps(),
            self.rolled_back_steps(),
            self.rollback_errors()
        );
        for step in self.steps() {
            write!(f, "\n  {}", step);
        }
    }
}

impl<E: Format> Format for StepErrorKind<E> {
    fn format(&self, f: Formatter<'_>) {
        match self {
            StepErrorKind::Failed(e) => write!(f, "failed: {}", e),
            StepErrorKind::TimedOut { timeout } => write!(f, "timed out after {}", timeout),
            StepErrorKind::CapacityExceeded { capacity } => {
                write!(f, "not run: capacity of {=usize} steps used up", capacity)
            }
            StepErrorKind::Panicked(message) => write!(f, "panicked: {}", message),
            StepErrorKind::Interrupted(reason) => write!(f, "interrupted: {}", reason),
            StepErrorKind::EmptyName => write!(f, "not run: empty name"),
            StepErrorKind::Journal(failure) => write!(f, "not recorded: {}", failure),
            StepErrorKind::Cancelled => write!(f, "cancelled: another member of its group failed"),
        }
    }
}

impl<E: Format> Format for StepError<E> {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "step `{}` {}", self.step(), self.kind())
    }
}

impl<RE: Format> Format for RollbackErrorKind<RE> {
    fn format(&self, f: Formatter<'_>) {
        match self {
            RollbackErrorKind::Failed(e) => write!(f, "failed: {}", e),
            RollbackErrorKind::TimedOut { timeout } => write!(f, "timed out after {}", timeout),
            RollbackErrorKind::Panicked(message) => write!(f, "panicked: {}", message),
        }
    }
}

impl<RE: Format> Format for RollbackFailure<RE> {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "rollback of step `{}` {}", self.step(), self.kind())
    }
}

impl Format for RollbackState {
    fn format(&self, f: Formatter<'_>) {
        match self {
            RollbackState::Clean => write!(f, "rolled back cleanly"),
            RollbackState::Partial => write!(f, "PARTIALLY rolled back"),
        }
    }
}

impl<B: Format, RE: Format, S: Storage> Format for TransactionError<B, RE, S> {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "transaction {} failed: {}; {}", self.summary().info(), self.cause(), self.rollback_state());
        for failure in self.rollback_failures() {
            write!(f, "; {}", failure);
        }
    }
}

impl<T: Format, S: Storage> Format for Committed<T, S> {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "committed {}: {}", self.summary().info(), self.value())
    }
}

impl Format for crate::durable::entry::EntryKind {
    fn format(&self, f: Formatter<'_>) {
        write!(f, "{=str}", self.as_str())
    }
}

impl Format for crate::durable::journal::JournalFailure {
    fn format(&self, f: Formatter<'_>) {
        match self.entry() {
            Some(entry) => write!(f, "journal: writing `{}` failed", entry),
            None => write!(f, "journal: reading failed"),
        }
        if !self.error().is_empty() {
            write!(f, ": {=str}", self.error());
        }
    }
}

impl Format for crate::durable::codec::CodecError {
    fn format(&self, f: Formatter<'_>) {
        match self {
            crate::durable::codec::CodecError::BufferTooSmall => write!(f, "buffer too small for the undo record"),
            crate::durable::codec::CodecError::Invalid => write!(f, "undo record cannot be decoded"),
            crate::durable::codec::CodecError::NewerSchema { found, known } => {
                write!(f, "undo record has schema {=u32}, newer than {=u32}", found, known)
            }
            crate::durable::codec::CodecError::NewerFormat { found } => {
                write!(f, "journal entry has newer format {=u8}", found)
            }
            crate::durable::codec::CodecError::Damaged => write!(f, "undo record damaged (checksum)"),
        }
    }
}

impl Format for crate::engine::report::Recovery {
    fn format(&self, f: Formatter<'_>) {
        write!(
            f,
            "{=usize} unfinished transaction(s): {=usize} rolled back, {=usize} partially rolled back (still owed), {=usize} stuck, {=usize} owed and not tried this time (backing off); {=usize} running",
            self.found(),
            self.rolled_back(),
            self.partially_rolled_back(),
            self.stuck(),
            self.deferred(),
            self.running()
        );
    }
}

impl Format for crate::engine::report::RecoveryOutcome {
    fn format(&self, f: Formatter<'_>) {
        match self {
            crate::engine::report::RecoveryOutcome::RolledBack => write!(f, "rolled back"),
            crate::engine::report::RecoveryOutcome::Owed => write!(f, "partially rolled back, still owed"),
            crate::engine::report::RecoveryOutcome::Stuck => write!(f, "stuck"),
            crate::engine::report::RecoveryOutcome::Running => write!(f, "running, left alone"),
            crate::engine::report::RecoveryOutcome::Deferred => write!(f, "owed, not tried this time (backing off)"),
        }
    }
}

impl Format for crate::engine::report::RecoveryError {
    fn format(&self, f: Formatter<'_>) {
        match self {
            crate::engine::report::RecoveryError::Journal(failure) => write!(f, "recovery: {}", failure),
            crate::engine::report::RecoveryError::LiveUnknown { running } => write!(
                f,
                "recovery refused: {=usize} transaction(s) running in this process cannot be told from unfinished ones",
                running
            ),
        }
    }
}

impl Format for crate::engine::schedule::OwedRetry {
    fn format(&self, f: Formatter<'_>) {
        match self {
            crate::engine::schedule::OwedRetry::EveryRecovery => write!(f, "every recovery"),
            crate::engine::schedule::OwedRetry::Backoff { cap } => {
                write!(f, "backing off, at most {=u32} recoveries skipped", cap)
            }
            crate::engine::schedule::OwedRetry::Never => write!(f, "never"),
        }
    }
}
