//! A journal in memory, for tests: it can lose power after any write.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::{Future, pending};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};
use std::sync::{Mutex, MutexGuard};

use crate::durable::{
    entry::{Entry, EntryKind, StoredEntry},
    id::TransactionId,
    journal::Journal,
};

/// A [`Journal`] in memory, for tests of journaled transactions and of
/// recovery. Clones share one journal.
///
/// It keeps durable entries at once and buffers lazy ones until the next
/// durable one (as a journal with group commit does), and it can simulate
/// the failures recovery exists for:
///
/// - [`cut_power_after`](MemoryJournal::cut_power_after)`(k)`: append
///   number `k + 1` never returns and nothing more is written, as if the
///   machine died there; [`power_lost`](MemoryJournal::power_lost) tells
///   the test to drop the transaction. [`restart`](MemoryJournal::restart)
///   then gives the journal as a restarted process finds it: durable
///   entries only.
/// - [`fail_writes`](MemoryJournal::fail_writes): every append fails, as on
///   a full disk or a read-only file.
/// - [`fail_before_write`](MemoryJournal::fail_before_write)`(kind)`:
///   appends of one kind fail without storing anything;
///   [`fail_after_write`](MemoryJournal::fail_after_write)`(kind)`: they
///   store the entry, then fail (a connection lost after the statement was
///   sent, an I/O error after the write).
///
/// Like every journal, it holds one decision per transaction: an
/// `Aborted` for a transaction that holds `Committed` (or the reverse) is
/// refused, and [`Journal::decided`] names the decision it holds.
/// - [`insert_raw`](MemoryJournal::insert_raw): plants any entry, such as a
///   corrupt one or one from a newer program.
///
/// ```
/// use transaction_manager::{TransactionId, journal::{EntryKind, Journal, MemoryJournal}};
/// let journal = MemoryJournal::new();
/// journal.insert_raw(TransactionId::new(7), None, EntryKind::Begin.code(), b"op");
/// assert_eq!(journal.entries(TransactionId::new(7)).len(), 1);
/// let restarted = journal.restart();
/// assert_eq!(restarted.entries(TransactionId::new(7)).len(), 1);
/// ```
#[derive(Clone)]
pub struct MemoryJournal {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    durable: Vec<JournalRow>,
    buffered: Vec<JournalRow>,
    next_id: u64,
    origin: u64,
    appends: usize,
    cut_after: Option<usize>,
    power_lost: bool,
    wakers: Vec<Waker>,
    failing: Option<String>,
    fail_before: Option<EntryKind>,
    fail_after: Option<EntryKind>,
    /// Operators' requests to retry (see [`MemoryJournal::request_retry`]).
    retry_requests: Vec<TransactionId>,
}

/// One stored entry: transaction, step, kind code, payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalRow {
    /// The transaction's id.
    pub transaction: TransactionId,
    /// The step's index, if the entry is a step's.
    pub step: Option<u32>,
    /// The kind's code ([`EntryKind::code`]).
    pub kind: u8,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

/// Why a [`MemoryJournal`] append failed (set with
/// [`fail_writes`](MemoryJournal::fail_writes) and the other failure
/// knobs, or a second decision refused: see [`Journal::decided`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryJournalError(pub String, Option<EntryKind>);

impl fmt::Display for MemoryJournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MemoryJournalError {}

impl Default for MemoryJournal {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryJournal {
    /// An empty journal; its ids start at 1, its
    /// [`origin`](Journal::origin) is random.
    pub fn new() -> Self {
        Self::with_origin(crate::durable::id::random_origin())
    }

    /// An empty journal of origin `origin` (its keys'
    /// [`origin`](crate::journal::IdempotencyKey::origin)); its ids start at 1.
    /// [`restart`](MemoryJournal::restart) keeps it.
    ///
    /// ```
    /// use transaction_manager::journal::{Journal, MemoryJournal};
    /// assert_eq!(MemoryJournal::with_origin(7).origin(), 7);
    /// assert_ne!(MemoryJournal::new().origin(), MemoryJournal::new().origin());
    /// ```
    pub fn with_origin(origin: u64) -> Self {
        Self { state: Arc::new(Mutex::new(State { origin, ..State::default() })) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Loses power after `appends` more appends: the next one never returns
    /// and is not written, nor is any buffered lazy entry.
    pub fn cut_power_after(&self, appends: usize) {
        let mut state = self.state();
        state.cut_after = Some(state.appends + appends);
    }

    /// Cuts the power now, as if the machine died at this instant (for
    /// example in the middle of a step's attempt): buffered lazy entries
    /// are lost and no later append returns.
    pub fn cut_power_now(&self) {
        let mut state = self.state();
        state.power_lost = true;
        state.buffered.clear();
        for waker in state.wakers.drain(..) {
            waker.wake();
        }
    }

    /// Whether the power was cut.
    pub fn is_power_lost(&self) -> bool {
        self.state().power_lost
    }

    /// Completes when the power is cut: race the transaction against it
    /// and drop the transaction when it wins, as a crash would.
    pub fn power_lost(&self) -> impl Future<Output = ()> + '_ {
        PowerLost(self)
    }

    /// Makes every append fail with `error` (`None`: work again).
    pub fn fail_writes(&self, error: Option<&str>) {
        self.state().failing = error.map(String::from);
    }

    /// Makes every append of an entry of `kind` fail without storing it
    /// (`None`: work again).
    pub fn fail_before_write(&self, kind: Option<EntryKind>) {
        self.state().fail_before = kind;
    }

    /// Makes every append of an entry of `kind` store it (durably, if it
    /// is durable) and then fail, as a journal whose connection was lost
    /// after the statement was sent, or whose disk failed after the write
    /// (`None`: work again). An append refused (a second decision) stores
    /// nothing and returns its refusal.
    pub fn fail_after_write(&self, kind: Option<EntryKind>) {
        self.state().fail_after = kind;
    }

    /// How many appends were accepted so far.
    pub fn appends(&self) -> usize {
        self.state().appends
    }

    /// Writes buffered lazy entries, as a journal's writer does soon after
    /// they are appended.
    pub fn flush(&self) {
        let mut state = self.state();
        let buffered = core::mem::take(&mut state.buffered);
        state.durable.extend(buffered);
    }

    /// The journal as a process restarted after the power cut finds it: a
    /// new journal with the durable entries only, whose ids continue after
    /// every id given out before.
    pub fn restart(&self) -> MemoryJournal {
        let state = self.state();
        let restarted = State {
            durable: state.durable.clone(),
            next_id: state.next_id,
            origin: state.origin,
            retry_requests: state.retry_requests.clone(),
            ..State::default()
        };
        MemoryJournal { state: Arc::new(Mutex::new(restarted)) }
    }

    /// Stores an entry as given (durably), bypassing every check: for tests
    /// of corrupt entries and of entries from a newer program.
    pub fn insert_raw(&self, transaction: TransactionId, step: Option<u32>, kind: u8, payload: &[u8]) {
        self.state().durable.push(JournalRow { transaction, step, kind, payload: payload.into() });
    }

    /// Every entry of `transaction` this process sees (durable and
    /// buffered), in append order.
    pub fn entries(&self, transaction: TransactionId) -> Vec<JournalRow> {
        let state = self.state();
        state.durable.iter().chain(&state.buffered).filter(|row| row.transaction == transaction).cloned().collect()
    }

    /// Asks the next recovery to try `transaction`'s owed rollbacks again
    /// at once, whatever its [`OwedRetry`](crate::journal::OwedRetry)
    /// schedule says (see [`Journal::take_retry_request`]); kept across
    /// [`restart`](MemoryJournal::restart), as a database keeps it. Returns
    /// `false`, and keeps nothing, when the journal holds no unfinished
    /// transaction of that id.
    ///
    /// ```
    /// use transaction_manager::{ManualClock, TransactionId, journal::{EntryKind, Journal, MemoryJournal}};
    /// let journal = MemoryJournal::new();
    /// let id = TransactionId::new(7);
    /// assert!(!journal.request_retry(id)); // nothing of it yet
    /// journal.insert_raw(id, None, EntryKind::Begin.code(), b"op");
    /// assert!(journal.request_retry(id));
    /// ManualClock::new().block_on(async {
    ///     assert_eq!(journal.take_retry_request(id).await, Ok(true));
    ///     assert_eq!(journal.take_retry_request(id).await, Ok(false)); // one request, one try
    /// });
    /// ```
    pub fn request_retry(&self, transaction: TransactionId) -> bool {
        if !self.transactions(true).any(|id| id == transaction) {
            return false;
        }
        let mut state = self.state();
        if !state.retry_requests.contains(&transaction) {
            state.retry_requests.push(transaction);
        }
        true
    }

    /// The ids of the transactions it holds (with `unfinished_only`, of
    /// those not over), with repeats.
    fn transactions(&self, unfinished_only: bool) -> alloc::vec::IntoIter<TransactionId> {
        let state = self.state();
        let rows = || state.durable.iter().chain(&state.buffered);
        let over = |id: TransactionId| {
            rows().any(|row| {
                row.transaction == id && EntryKind::from_code(row.kind).is_some_and(EntryKind::ends_transaction)
            })
        };
        let ids: Vec<TransactionId> =
            rows().map(|row| row.transaction).filter(|&id| !unfinished_only || !over(id)).collect();
        ids.into_iter()
    }

    /// Whether `transaction` has an entry of `kind` for `step`.
    pub fn has(&self, transaction: TransactionId, step: Option<u32>, kind: EntryKind) -> bool {
        self.entries(transaction).iter().any(|row| row.step == step && row.kind == kind.code())
    }
}

impl fmt::Debug for MemoryJournal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("MemoryJournal")
            .field("durable", &state.durable.len())
            .field("buffered", &state.buffered.len())
            .field("power_lost", &state.power_lost)
            .finish()
    }
}

struct PowerLost<'a>(&'a MemoryJournal);

impl Future for PowerLost<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.0.state();
        if state.power_lost {
            return Poll::Ready(());
        }
        state.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

impl Journal for MemoryJournal {
    type Error = MemoryJournalError;

    fn next_id(&self) -> TransactionId {
        let mut state = self.state();
        state.next_id += 1;
        TransactionId::new(state.next_id)
    }

    fn origin(&self) -> u64 {
        self.state().origin
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), MemoryJournalError> {
        let mut payload = alloc::vec![0u8; entry.payload_len_hint().max(16)];
        let len = loop {
            match entry.write_payload(&mut payload) {
                Ok(len) => break len,
                Err(crate::durable::codec::CodecError::BufferTooSmall) if payload.len() < 1 << 24 => {
                    payload.resize(payload.len() * 2, 0);
                }
                Err(error) => return Err(MemoryJournalError(alloc::format!("encoding: {error}"), None)),
            }
        };
        payload.truncate(len);
        let kind = entry.kind();
        let lost = {
            let mut state = self.state();
            if let Some(error) = &state.failing {
                return Err(MemoryJournalError(error.clone(), None));
            }
            if state.fail_before == Some(kind) {
                return Err(MemoryJournalError(alloc::format!("`{kind}` not written (injected failure)"), None));
            }
            if state.power_lost || state.cut_after.is_some_and(|cut| state.appends >= cut) {
                state.power_lost = true;
                state.buffered.clear();
                for waker in state.wakers.drain(..) {
                    waker.wake();
                }
                true
            } else {
                // One decision per transaction: the first one stays.
                let other = match kind {
                    EntryKind::Committed => Some(EntryKind::Aborted),
                    EntryKind::Aborted => Some(EntryKind::Committed),
                    _ => None,
                };
                if let Some(other) = other {
                    let id = entry.transaction();
                    let held = state
                        .durable
                        .iter()
                        .chain(&state.buffered)
                        .any(|r| r.transaction == id && r.step.is_none() && r.kind == other.code());
                    if held {
                        let text = alloc::format!("{id} is already decided: the journal holds `{other}`, not `{kind}`");
                        return Err(MemoryJournalError(text, Some(other)));
                    }
                }
                state.appends += 1;
                let row = JournalRow {
                    transaction: entry.transaction(),
                    step: entry.step(),
                    kind: entry.kind().code(),
                    payload,
                };
                let known = state
                    .durable
                    .iter()
                    .chain(&state.buffered)
                    .any(|r| r.transaction == row.transaction && r.step == row.step && r.kind == row.kind);
                if !known {
                    state.buffered.push(row);
                }
                if entry.is_durable() {
                    let buffered = core::mem::take(&mut state.buffered);
                    state.durable.extend(buffered);
                }
                false
            }
        };
        if lost {
            // The machine is dead: this call never returns.
            pending::<()>().await;
        }
        if self.state().fail_after == Some(kind) {
            return Err(MemoryJournalError(alloc::format!("`{kind}` written, then failed (injected failure)"), None));
        }
        Ok(())
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error> {
        Ok(self.transactions(true).filter(|&id| after.is_none_or(|after| id > after)).min())
    }

    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error> {
        let rows = self.entries(id);
        for row in &rows {
            visit(StoredEntry { step: row.step, kind: row.kind, payload: &row.payload });
        }
        Ok(())
    }

    fn decided(error: &MemoryJournalError) -> Option<EntryKind> {
        error.1
    }

    async fn take_retry_request(&self, id: TransactionId) -> Result<bool, Self::Error> {
        let mut state = self.state();
        let before = state.retry_requests.len();
        state.retry_requests.retain(|&requested| requested != id);
        Ok(state.retry_requests.len() != before)
    }
}

impl crate::durable::inspect::Browse for MemoryJournal {
    async fn next_transaction(
        &self,
        after: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, Self::Error> {
        Ok(self.transactions(unfinished_only).filter(|&id| after.is_none_or(|after| id > after)).min())
    }

    async fn previous_transaction(
        &self,
        before: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, Self::Error> {
        Ok(self.transactions(unfinished_only).filter(|&id| before.is_none_or(|before| id < before)).max())
    }
}
