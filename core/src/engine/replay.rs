//! Replaying a journal: the entries a transaction wrote, applied in order to
//! a ledger of what it still owes (its undo records decoded), and the
//! problems that make it stuck.

use crate::durable::{
    codec::{CodecError, UndoCodec},
    entry::{EntryKind, StoredEntry},
};
use crate::ledger::book::Ledger;
use crate::{
    ledger::record::StepRecord,
    util::{storage::Storage, text::Name},
};
use core::fmt;

/// Why a transaction is stuck.
pub(crate) enum Problem {
    UnknownKind(u8),
    /// An entry that needs a step and has none.
    NoStep(EntryKind),
    Undecodable {
        step: u32,
        error: CodecError,
    },
    Capacity(usize),
    /// A rollback failed for good, and the manager never retries owed
    /// rollbacks by itself ([`OwedRetry::Never`]).
    NotRetried,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownKind(code) => write!(f, "a journal entry of unknown kind {code}"),
            Problem::NoStep(kind) => write!(f, "a `{kind}` entry without a step"),
            Problem::Undecodable { step, error } => write!(f, "step #{step}: {error}"),
            Problem::Capacity(capacity) => {
                write!(f, "it owes more rollbacks than the recovery's storage holds ({capacity})")
            }
            Problem::NotRetried => f.write_str(NOT_RETRIED),
        }
    }
}

/// Why a transaction is stuck under [`OwedRetry::Never`].
pub(crate) const NOT_RETRIED: &str =
    "a rollback failed for good; recovery never retries owed rollbacks (OwedRetry::Never)";

/// What reading one transaction's entries gave.
pub(crate) struct Read<U, S: Storage> {
    pub(crate) ledger: Ledger<U, S>,
    pub(crate) problem: Option<Problem>,
    pub(crate) finished: bool,
    /// A rollback failed for good before (an `UndoFailed` entry), or the
    /// transaction was marked stuck: what [`OwedRetry::Never`] leaves to
    /// an operator.
    pub(crate) failed_before: bool,
    /// The journal holds an entry of it.
    pub(crate) found: bool,
}

/// Applies one stored entry to what a transaction owes.
pub(crate) fn apply<U, S: Storage, Co: UndoCodec<U>>(read: &mut Read<U, S>, codec: &Co, entry: StoredEntry<'_>) {
    read.found = true;
    let Some(kind) = EntryKind::from_code(entry.kind) else {
        read.problem.get_or_insert(Problem::UnknownKind(entry.kind));
        return;
    };
    let ledger = &mut read.ledger;
    let step = entry.step;
    let position = step.and_then(|step| ledger.summary.steps().iter().position(|r| r.index == step as usize));
    match kind {
        EntryKind::Begin => {
            if let Ok(text) = core::str::from_utf8(entry.payload) {
                ledger.replayed_operation(owned_name(text));
            }
        }
        EntryKind::Intent | EntryKind::Done => {
            let Some(step) = step else {
                read.problem.get_or_insert(Problem::NoStep(kind));
                return;
            };
            let decoded = crate::durable::entry::decode_undo_payload(entry.payload).and_then(|payload| {
                if payload.schema > Co::SCHEMA {
                    return Err(CodecError::NewerSchema { found: payload.schema, known: Co::SCHEMA });
                }
                let undo = codec.decode(payload.schema, payload.undo)?;
                Ok((payload, undo))
            });
            let (payload, undo) = match decoded {
                Ok(decoded) => decoded,
                Err(error) => {
                    read.problem.get_or_insert(Problem::Undecodable { step, error });
                    return;
                }
            };
            match position {
                Some(at) => {
                    // A `Done` after the step's intent: the completed record
                    // replaces the uncertain one.
                    ledger.step_mut(at).replayed_end(kind == EntryKind::Done);
                    if !ledger.replay_owed(at, undo, payload.retry, payload.timeout) {
                        read.problem.get_or_insert(Problem::Capacity(S::CAPACITY.unwrap_or(usize::MAX)));
                    }
                }
                None => {
                    let at = ledger.summary.steps().len();
                    let mut record = StepRecord::new(step as usize, owned_name(payload.name), None, true);
                    record.replayed_end(kind == EntryKind::Done);
                    let record_room = ledger.replayed_step(record);
                    if !record_room || !ledger.replay_owed_new(at, undo, payload.retry, payload.timeout) {
                        read.problem.get_or_insert(Problem::Capacity(S::CAPACITY.unwrap_or(usize::MAX)));
                    }
                }
            }
        }
        EntryKind::Released | EntryKind::Undone => {
            if step.is_none() {
                read.problem.get_or_insert(Problem::NoStep(kind));
                return;
            }
            // A step this read has no record of: on a journal that keeps
            // only a step's latest entry (flash), an `Undone` replaced its
            // `Done`: nothing is owed.
            let Some(at) = position else { return };
            ledger.replay_paid(at);
            ledger.step_mut(at).replayed_rollback(kind == EntryKind::Undone);
        }
        // Tried again: a rollback that failed for good before the crash may
        // succeed now (the transaction did not end).
        EntryKind::UndoFailed => {
            if step.is_none() {
                read.problem.get_or_insert(Problem::NoStep(kind));
            }
            read.failed_before = true;
        }
        EntryKind::Committed | EntryKind::RolledBack | EntryKind::Resolved => read.finished = true,
        // Still unfinished: tried again (unless the manager never retries).
        EntryKind::Stuck => read.failed_before = true,
        // Decided not to commit (a `Committed` would have been refused
        // after it): the owed rollbacks are rolled back as usual.
        EntryKind::Aborted => {}
    }
}

/// A name read from the journal (cut to 16 bytes without an allocator).
pub(crate) fn owned_name(text: &str) -> Name {
    #[cfg(feature = "alloc")]
    {
        Name::from(alloc::string::String::from(text))
    }
    #[cfg(not(feature = "alloc"))]
    {
        Name::format(text)
    }
}
