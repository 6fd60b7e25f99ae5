//! `serde::Serialize` for what a transaction reports, with stable field
//! names. Times and durations are seconds as numbers (`f64`); errors are
//! their `Display` text.

use core::fmt::Display;
use core::time::Duration;

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::{
    durable::id::TransactionId,
    ledger::{
        error::{RollbackErrorKind, RollbackFailure, RollbackState, StepError},
        outcome::{Committed, TransactionError},
        record::{StepRecord, StepStatus},
        summary::Summary,
    },
    util::{storage::Storage, text::Name},
};

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

fn opt_secs(duration: Option<Duration>) -> Option<f64> {
    duration.map(secs)
}

impl Serialize for Name {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// As its text, `"tx-7"`.
impl Serialize for TransactionId {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        serializer.collect_str(self)
    }
}

/// As its `snake_case` name, `"rolled_back"`.
impl Serialize for StepStatus {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// `"clean"` or `"partial"`.
impl Serialize for RollbackState {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        serializer.serialize_str(match self {
            RollbackState::Clean => "clean",
            RollbackState::Partial => "partial",
        })
    }
}

/// `name`, `index`, `status`, `started_at`, `completed_at`, `duration`,
/// `attempts`, `error`, `timeout`, `has_rollback`, `rollback_attempts`,
/// `rollback_started_at`, `rollback_completed_at`, `rollback_error`,
/// `scope` (the innermost scope's name, or null).
impl Serialize for StepRecord {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        let mut s = serializer.serialize_struct("StepRecord", 15)?;
        s.serialize_field("name", self.name())?;
        s.serialize_field("index", &self.index())?;
        s.serialize_field("status", &self.status())?;
        s.serialize_field("started_at", &opt_secs(self.started_at()))?;
        s.serialize_field("completed_at", &opt_secs(self.completed_at()))?;
        s.serialize_field("duration", &opt_secs(self.duration()))?;
        s.serialize_field("attempts", &self.attempts())?;
        s.serialize_field("error", &self.error())?;
        s.serialize_field("timeout", &opt_secs(self.timeout()))?;
        s.serialize_field("has_rollback", &self.has_rollback())?;
        s.serialize_field("rollback_attempts", &self.rollback_attempts())?;
        s.serialize_field("rollback_started_at", &opt_secs(self.rollback_started_at()))?;
        s.serialize_field("rollback_completed_at", &opt_secs(self.rollback_completed_at()))?;
        s.serialize_field("rollback_error", &self.rollback_error())?;
        s.serialize_field("scope", &self.scope())?;
        s.end()
    }
}

/// `transaction_id`, `operation_name`, `total_steps`, `completed_steps`,
/// `failed_steps`, `rolled_back_steps`, `rollback_errors`,
/// `rollback_skipped_steps`, `started_at`, `completed_at`, `duration`,
/// `steps`.
impl<S: Storage> Serialize for Summary<S> {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        let mut s = serializer.serialize_struct("Summary", 12)?;
        s.serialize_field("transaction_id", &self.transaction_id())?;
        s.serialize_field("operation_name", self.operation_name())?;
        s.serialize_field("total_steps", &self.total_steps())?;
        s.serialize_field("completed_steps", &self.completed_steps())?;
        s.serialize_field("failed_steps", &self.failed_steps())?;
        s.serialize_field("rolled_back_steps", &self.rolled_back_steps())?;
        s.serialize_field("rollback_errors", &self.rollback_errors())?;
        s.serialize_field("rollback_skipped_steps", &self.rollback_skipped_steps())?;
        s.serialize_field("started_at", &secs(self.started_at()))?;
        s.serialize_field("completed_at", &secs(self.completed_at()))?;
        s.serialize_field("duration", &secs(self.duration()))?;
        s.serialize_field("steps", self.steps())?;
        s.end()
    }
}

/// `step`, `index`, `kind` (`"failed"`, `"timed_out"`, …), `error` (text).
impl<E: Display> Serialize for StepError<E> {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        let mut s = serializer.serialize_struct("StepError", 4)?;
        s.serialize_field("step", self.step())?;
        s.serialize_field("index", &self.index())?;
        s.serialize_field("kind", self.kind().as_str())?;
        s.collect_str_field("error", self)?;
        s.end()
    }
}

/// `step`, `index`, `kind` (`"failed"`, `"timed_out"`, `"panicked"`),
/// `error` (text).
impl<RE: Display> Serialize for RollbackFailure<RE> {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        let mut s = serializer.serialize_struct("RollbackFailure", 4)?;
        s.serialize_field("step", self.step())?;
        s.serialize_field("index", &self.index())?;
        let kind = match self.kind() {
            RollbackErrorKind::Failed(_) => "failed",
            RollbackErrorKind::TimedOut { .. } => "timed_out",
            RollbackErrorKind::Panicked(_) => "panicked",
        };
        s.serialize_field("kind", kind)?;
        s.collect_str_field("error", self)?;
        s.end()
    }
}

/// `cause` (text), `rollback_state`, `rollback_failures`, `summary`.
impl<B: Display, RE: Display, S: Storage> Serialize for TransactionError<B, RE, S> {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        let mut s = serializer.serialize_struct("TransactionError", 4)?;
        s.collect_str_field("cause", self.cause())?;
        s.serialize_field("rollback_state", &self.rollback_state())?;
        s.serialize_field("rollback_failures", self.rollback_failures())?;
        s.serialize_field("summary", self.summary())?;
        s.end()
    }
}

/// `value`, `summary`.
impl<T: Serialize, S: Storage> Serialize for Committed<T, S> {
    fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
        let mut s = serializer.serialize_struct("Committed", 2)?;
        s.serialize_field("value", self.value())?;
        s.serialize_field("summary", self.summary())?;
        s.end()
    }
}

/// Serializes a `Display` value as a string field, without allocating.
trait CollectStrField {
    type Error;
    fn collect_str_field(&mut self, key: &'static str, value: &dyn Display) -> Result<(), Self::Error>;
}

impl<T: SerializeStruct> CollectStrField for T {
    type Error = T::Error;

    fn collect_str_field(&mut self, key: &'static str, value: &dyn Display) -> Result<(), T::Error> {
        struct AsStr<'a>(&'a dyn Display);
        impl Serialize for AsStr<'_> {
            fn serialize<Se: Serializer>(&self, serializer: Se) -> Result<Se::Ok, Se::Error> {
                serializer.collect_str(self.0)
            }
        }
        self.serialize_field(key, &AsStr(value))
    }
}
