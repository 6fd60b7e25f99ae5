//! The operator's view of a journal: every transaction it holds, by state,
//! and one transaction's history, read through the byte-level [`Journal`](crate::durable::journal::Journal)
//! (any backend that implements [`Browse`]).
//!
//! What a journal knows is what the engine writes: the operation's name,
//! each step's undo record (its name, its codec's bytes) and whether it
//! was rolled back, the decision, and why a rollback failed for good or
//! recovery got stuck. Attempts, retries and a step's own errors are not
//! journaled (they cost a write each and recovery never needs them): see
//! hooks and `tracing` for those. Times are the journal's, where it keeps
//! them (the SQLite journal stamps each entry with its commit's wall-clock
//! time; the memory journal keeps none).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::durable::entry::{EntryKind, StoredEntry, decode_undo_payload};
use crate::durable::id::{IdempotencyKey, TransactionId};
pub use crate::durable::journal::Browse;
use crate::durable::journal::JournalFailure;

/// Where a transaction stands, as its journal shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransactionState {
    /// Not over, nothing failed for good: running now, or cut by a crash
    /// and waiting for recovery (the journal alone cannot tell which).
    Running,
    /// Committed: over.
    Committed,
    /// Rolled back, every rollback done: over.
    RolledBack,
    /// A rollback failed for good; recovery tries it again (see
    /// `OwedRetry`). Not over.
    Owed,
    /// Recovery could not roll it back (an undo record it cannot decode,
    /// more owed rollbacks than its storage holds); it waits for a later
    /// recovery or an operator. Not over.
    Stuck,
    /// An operator resolved it by hand: over.
    Resolved,
}

impl TransactionState {
    /// Every state.
    pub const ALL: [TransactionState; 6] = [
        TransactionState::Running,
        TransactionState::Committed,
        TransactionState::RolledBack,
        TransactionState::Owed,
        TransactionState::Stuck,
        TransactionState::Resolved,
    ];

    /// Its name: `running`, `committed`, `rolled_back`, `owed`, `stuck`,
    /// `resolved`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TransactionState::Running => "running",
            TransactionState::Committed => "committed",
            TransactionState::RolledBack => "rolled_back",
            TransactionState::Owed => "owed",
            TransactionState::Stuck => "stuck",
            TransactionState::Resolved => "resolved",
        }
    }

    /// Whether the transaction is over (committed, rolled back, resolved):
    /// what a journal's retention may delete. Exactly the states an entry
    /// that [`ends_transaction`](EntryKind::ends_transaction) leaves (see
    /// [`ended_by`](Self::ended_by)).
    pub const fn is_over(self) -> bool {
        matches!(self, TransactionState::Committed | TransactionState::RolledBack | TransactionState::Resolved)
    }

    /// The state an entry of `kind` leaves its transaction in when it ends
    /// it, or `None` if it does not ([`EntryKind::ends_transaction`]).
    pub const fn ended_by(kind: EntryKind) -> Option<TransactionState> {
        if !kind.ends_transaction() {
            return None;
        }
        Some(match kind {
            EntryKind::Committed => TransactionState::Committed,
            EntryKind::Resolved => TransactionState::Resolved,
            _ => TransactionState::RolledBack,
        })
    }
}

impl fmt::Display for TransactionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a [`TransactionState`]'s.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownState(pub String);

impl fmt::Display for UnknownState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown state `{}` (one of: running, committed, rolled_back, owed, stuck, resolved)", self.0)
    }
}

impl core::error::Error for UnknownState {}

impl core::str::FromStr for TransactionState {
    type Err = UnknownState;

    fn from_str(text: &str) -> Result<Self, UnknownState> {
        let wanted = text.replace('-', "_");
        TransactionState::ALL
            .into_iter()
            .find(|state| state.as_str() == wanted)
            .ok_or_else(|| UnknownState(text.to_string()))
    }
}

/// Where a step stands, as its transaction's journal shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StepState {
    /// Its intent is written (it opted into uncertain rollback) but it has
    /// not completed: its uncertain undo record is owed if the transaction
    /// rolls back.
    Uncertain,
    /// Completed; its undo record is owed if the transaction rolls back.
    Done,
    /// Every attempt failed cleanly: nothing is owed.
    Released,
    /// Rolled back.
    Undone,
    /// Its rollback failed for good (and is owed until it succeeds).
    UndoFailed,
}

impl StepState {
    /// Its name: `uncertain`, `done`, `released`, `undone`, `undo_failed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepState::Uncertain => "uncertain",
            StepState::Done => "done",
            StepState::Released => "released",
            StepState::Undone => "undone",
            StepState::UndoFailed => "undo_failed",
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a transaction, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// The kind, or `None` for a code this version does not know.
    pub kind: Option<EntryKind>,
    /// The kind's code as stored.
    pub code: u8,
    /// The step's index, or `None` for the transaction's own entries.
    pub step: Option<u32>,
    /// When it was written (Unix milliseconds), if the journal keeps it.
    pub at: Option<u64>,
    /// Its text: the operation (`begin`), why (`stuck`), the rollback's
    /// error (`undo_failed`), `clean` or `partial` (`rolled_back`), or the
    /// step's name (`intent`, `done`).
    pub text: Option<String>,
}

/// One step of a transaction, from its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepHistory {
    /// Its index in the transaction.
    pub index: u32,
    /// Its name, from its undo record (`None` if no record could be read).
    pub name: Option<String>,
    /// Where it stands.
    pub state: StepState,
    /// The idempotency key its attempts and rollback were given.
    pub key: IdempotencyKey,
    /// The codec's bytes of its undo record (the completed one if it
    /// completed, else the uncertain one), if it has one that reads.
    pub undo: Option<Vec<u8>>,
    /// The undo record's schema number (the codec's `SCHEMA`).
    pub schema: Option<u32>,
    /// Its rollback's last error, if the rollback failed for good.
    pub rollback_error: Option<String>,
    /// When it completed (its `done`), if the journal keeps times.
    pub done_at: Option<u64>,
    /// When it was rolled back, released, or its rollback failed, if the
    /// journal keeps times.
    pub settled_at: Option<u64>,
}

impl StepHistory {
    /// The undo record as text, when the codec wrote text (`Json`):
    /// valid UTF-8 with no control characters. `None` for a binary codec
    /// (`Postcard`): show [`undo`](Self::undo)'s bytes instead.
    pub fn undo_text(&self) -> Option<&str> {
        let text = core::str::from_utf8(self.undo.as_deref()?).ok()?;
        (!text.chars().any(|c| c.is_control() && c != '\n' && c != '\t')).then_some(text)
    }
}

/// One transaction, as its journal holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct History {
    /// Its id.
    pub id: TransactionId,
    /// Its operation's name (from its `begin`; `None` if it has none).
    pub operation: Option<String>,
    /// Where it stands.
    pub state: TransactionState,
    /// When its first entry was written, if the journal keeps times.
    pub started_at: Option<u64>,
    /// When it ended (its `committed`, `rolled_back` or `resolved`), if it
    /// did and the journal keeps times.
    pub ended_at: Option<u64>,
    /// Why recovery could not roll it back (its first `stuck` entry), if it
    /// is or was stuck.
    pub stuck_reason: Option<String>,
    /// What an operator wrote when resolving it, if anything.
    pub resolution: Option<String>,
    /// Who holds it, if it is not over and the journal knows (SQLite,
    /// Postgres: see [`Browse::read_holder`]).
    pub held_by: Option<HeldBy>,
    /// Its steps that wrote an entry, by index.
    pub steps: Vec<StepHistory>,
    /// Every entry, in the order written.
    pub entries: Vec<HistoryEntry>,
}

/// Who holds an unfinished transaction: the owned form of a
/// [`Holder`](crate::journal::Holder).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeldBy {
    /// The owner, as the journal names it.
    pub owner: String,
    /// Until when its lease runs (Unix milliseconds), for a journal with
    /// leases.
    pub lease_until: Option<u64>,
    /// Whether the owner is alive now, where the journal can tell.
    pub alive: Option<bool>,
}

/// Which transactions [`list`] returns.
///
/// ```
/// use transaction_manager::journal::inspect::{Filter, TransactionState};
/// let filter = Filter::new().state(TransactionState::Stuck).operation("provision").limit(20);
/// # let _ = filter;
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filter {
    /// Only transactions in one of these states (all if empty).
    pub states: Vec<TransactionState>,
    /// Only transactions of this operation.
    pub operation: Option<String>,
    /// Only transactions whose first entry was written at or after this
    /// time (Unix milliseconds; a journal that keeps no times matches all).
    pub since: Option<u64>,
    /// At most this many, the newest (highest ids); all if `None`.
    pub limit: Option<usize>,
}

impl Filter {
    /// Every transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `state` to the states wanted.
    #[must_use]
    pub fn state(mut self, state: TransactionState) -> Self {
        self.states.push(state);
        self
    }

    /// Only transactions of `operation`.
    #[must_use]
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    /// Only transactions started at or after `unix_millis`.
    #[must_use]
    pub fn since(mut self, unix_millis: u64) -> Self {
        self.since = Some(unix_millis);
        self
    }

    /// At most `n`, the newest.
    #[must_use]
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Whether `history` passes the filter.
    pub fn matches(&self, history: &History) -> bool {
        (self.states.is_empty() || self.states.contains(&history.state))
            && self.operation.as_ref().is_none_or(|op| history.operation.as_deref() == Some(op.as_str()))
            && self.since.is_none_or(|since| history.started_at.is_none_or(|at| at >= since))
    }
}

/// One transaction's history, or `None` if the journal holds no entry of
/// it (it never existed, or a retention deleted it).
///
/// # Errors
///
/// The journal could not be read.
///
/// ```
/// # #[cfg(feature = "std")] {
/// use transaction_manager::{TransactionId, journal::{EntryKind, MemoryJournal}};
/// use transaction_manager::journal::inspect::{history, TransactionState};
/// let journal = MemoryJournal::new();
/// let id = TransactionId::new(7);
/// journal.insert_raw(id, None, EntryKind::Begin.code(), b"provision");
/// journal.insert_raw(id, None, EntryKind::Stuck.code(), b"undo record of a newer schema");
/// let found = transaction_manager::ManualClock::new().block_on(history(&journal, id)).unwrap().unwrap();
/// assert_eq!(found.operation.as_deref(), Some("provision"));
/// assert_eq!(found.state, TransactionState::Stuck);
/// assert_eq!(found.stuck_reason.as_deref(), Some("undo record of a newer schema"));
/// # }
/// ```
pub async fn history<J: Browse + ?Sized>(journal: &J, id: TransactionId) -> Result<Option<History>, JournalFailure> {
    let origin = journal.origin();
    let mut builder = Builder::new(id, origin);
    journal
        .read_timed(id, &mut |entry, at| builder.add(entry, at))
        .await
        .map_err(|error| JournalFailure::reading(&error))?;
    let Some(mut found) = builder.finish() else { return Ok(None) };
    if !found.state.is_over() {
        journal
            .read_holder(id, &mut |holder| {
                found.held_by = Some(HeldBy {
                    owner: String::from(holder.owner),
                    lease_until: holder.lease_until,
                    alive: holder.alive,
                });
            })
            .await
            .map_err(|error| JournalFailure::reading(&error))?;
    }
    Ok(Some(found))
}

/// The transactions that pass `filter`, in id order (with a limit, the
/// newest ones). Reads the transactions the journal holds, newest first
/// when there is a limit, until it has enough; when only states of
/// transactions not over are wanted (running, owed, stuck), only those.
///
/// # Errors
///
/// The journal could not be read.
///
/// ```
/// # #[cfg(feature = "std")] {
/// use transaction_manager::{TransactionId, journal::{EntryKind, MemoryJournal}};
/// use transaction_manager::journal::inspect::{list, Filter, TransactionState};
/// let journal = MemoryJournal::new();
/// for (id, end) in [(1, Some(EntryKind::Committed)), (2, None), (3, Some(EntryKind::RolledBack))] {
///     let id = TransactionId::new(id);
///     journal.insert_raw(id, None, EntryKind::Begin.code(), b"provision");
///     if let Some(end) = end {
///         journal.insert_raw(id, None, end.code(), if end == EntryKind::RolledBack { &[1] } else { &[] });
///     }
/// }
/// let running = transaction_manager::ManualClock::new().block_on(list(&journal, &Filter::new().state(TransactionState::Running))).unwrap();
/// assert_eq!(running.iter().map(|t| t.id).collect::<Vec<_>>(), [TransactionId::new(2)]);
/// let all = transaction_manager::ManualClock::new().block_on(list(&journal, &Filter::new().limit(2))).unwrap();
/// assert_eq!(all.iter().map(|t| t.id.get()).collect::<Vec<_>>(), [2, 3]);
/// # }
/// ```
pub async fn list<J: Browse + ?Sized>(journal: &J, filter: &Filter) -> Result<Vec<History>, JournalFailure> {
    let reading = |error: J::Error| JournalFailure::reading(&error);
    // Only states of transactions that are not over: the journal's index
    // of those, not every transaction it keeps.
    let unfinished_only = !filter.states.is_empty() && filter.states.iter().all(|state| !state.is_over());
    let mut out = Vec::new();
    match filter.limit {
        // The newest first, until there are enough.
        Some(limit) => {
            let mut before = None;
            while out.len() < limit {
                let Some(id) = journal.previous_transaction(before, unfinished_only).await.map_err(reading)? else {
                    break;
                };
                before = Some(id);
                out.extend(history(journal, id).await?.filter(|found| filter.matches(found)));
            }
            out.reverse();
        }
        None => {
            let mut after = None;
            while let Some(id) = journal.next_transaction(after, unfinished_only).await.map_err(reading)? {
                after = Some(id);
                out.extend(history(journal, id).await?.filter(|found| filter.matches(found)));
            }
        }
    }
    Ok(out)
}

/// Builds a [`History`] from entries as they are read.
struct Builder {
    id: TransactionId,
    origin: u64,
    entries: Vec<HistoryEntry>,
    steps: Vec<StepHistory>,
    operation: Option<String>,
    stuck: Option<String>,
    resolution: Option<String>,
    started_at: Option<u64>,
    ended: Option<(TransactionState, Option<u64>)>,
}

impl Builder {
    fn new(id: TransactionId, origin: u64) -> Self {
        Builder {
            id,
            origin,
            entries: Vec::new(),
            steps: Vec::new(),
            operation: None,
            stuck: None,
            resolution: None,
            started_at: None,
            ended: None,
        }
    }

    fn step(&mut self, index: u32) -> &mut StepHistory {
        let at = match self.steps.binary_search_by_key(&index, |step| step.index) {
            Ok(at) => at,
            Err(at) => {
                self.steps.insert(
                    at,
                    StepHistory {
                        index,
                        name: None,
                        state: StepState::Uncertain,
                        key: IdempotencyKey::new(self.origin, self.id, index),
                        undo: None,
                        schema: None,
                        rollback_error: None,
                        done_at: None,
                        settled_at: None,
                    },
                );
                at
            }
        };
        &mut self.steps[at]
    }

    fn add(&mut self, entry: StoredEntry<'_>, at: Option<u64>) {
        let kind = EntryKind::from_code(entry.kind);
        let text = |payload: &[u8]| String::from_utf8_lossy(payload).into_owned();
        if self.started_at.is_none() {
            self.started_at = at;
        }
        let mut shown = None;
        match (kind, entry.step) {
            (Some(EntryKind::Begin), None) => {
                let operation = text(entry.payload);
                self.operation.get_or_insert_with(|| operation.clone());
                shown = Some(operation);
            }
            (Some(EntryKind::Stuck), None) => {
                let reason = text(entry.payload);
                self.stuck.get_or_insert_with(|| reason.clone());
                shown = Some(reason);
            }
            (Some(EntryKind::Resolved), None) if !entry.payload.is_empty() => {
                self.resolution = Some(text(entry.payload));
                shown.clone_from(&self.resolution);
            }
            (Some(EntryKind::RolledBack), None) => {
                shown = Some(String::from(if entry.payload == [0] { "partial" } else { "clean" }));
            }
            (Some(kind @ (EntryKind::Intent | EntryKind::Done)), Some(index)) => {
                let decoded = decode_undo_payload(entry.payload).ok();
                let step = self.step(index);
                if let Some(decoded) = &decoded {
                    step.name = Some(String::from(decoded.name));
                    step.undo = Some(decoded.undo.to_vec());
                    step.schema = Some(decoded.schema);
                    shown = step.name.clone();
                }
                if kind == EntryKind::Done {
                    step.done_at = at;
                    if step.state == StepState::Uncertain {
                        step.state = StepState::Done;
                    }
                }
            }
            (Some(kind @ (EntryKind::Released | EntryKind::Undone | EntryKind::UndoFailed)), Some(index)) => {
                let error = (kind == EntryKind::UndoFailed && !entry.payload.is_empty()).then(|| text(entry.payload));
                shown.clone_from(&error);
                let step = self.step(index);
                step.settled_at = at;
                step.state = match kind {
                    EntryKind::Released => StepState::Released,
                    EntryKind::Undone => StepState::Undone,
                    _ => StepState::UndoFailed,
                };
                if error.is_some() {
                    step.rollback_error = error;
                }
            }
            _ => {}
        }
        // The first entry that ends it decides how it ended.
        if let (Some(state), None) = (kind.and_then(TransactionState::ended_by), entry.step) {
            self.ended.get_or_insert((state, at));
        }
        self.entries.push(HistoryEntry { kind, code: entry.kind, step: entry.step, at, text: shown });
    }

    fn finish(self) -> Option<History> {
        if self.entries.is_empty() {
            return None;
        }
        let state = match self.ended {
            Some((state, _)) => state,
            None if self.stuck.is_some() => TransactionState::Stuck,
            None if self.steps.iter().any(|step| step.state == StepState::UndoFailed) => TransactionState::Owed,
            None => TransactionState::Running,
        };
        Some(History {
            id: self.id,
            operation: self.operation,
            state,
            started_at: self.started_at,
            ended_at: self.ended.and_then(|(_, at)| at),
            stuck_reason: self.stuck,
            resolution: self.resolution,
            held_by: None,
            steps: self.steps,
            entries: self.entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_states_that_are_over_are_those_an_ending_entry_leaves() {
        for kind in EntryKind::ALL {
            let ended = TransactionState::ended_by(kind);
            assert_eq!(ended.is_some(), kind.ends_transaction(), "{kind}");
            assert!(ended.is_none_or(TransactionState::is_over), "{kind}");
        }
        for state in TransactionState::ALL {
            let left_by_an_entry = EntryKind::ALL.iter().any(|&kind| TransactionState::ended_by(kind) == Some(state));
            assert_eq!(state.is_over(), left_by_an_entry, "{state}");
        }
    }
}
