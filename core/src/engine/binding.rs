//! The binding of a journal to a manager: [`NoJournal`] or a
//! [`Journaled`] journal and codec, the engine's view of either
//! ([`JournalFor`]), and the ids of the journaled transactions running or
//! dropped in this process.

use crate::engine::schedule::IdSlots;
use core::fmt;
use core::future::Future;
use core::time::Duration;

use crate::{durable::id::TransactionId, timing::retry::RetryPolicy};

use crate::durable::{
    codec::UndoCodec,
    entry::{Entry, EntryKind, UndoPayload},
    journal::{Journal, JournalFailure},
};

/// What a manager writes its transactions to: [`NoJournal`] (the default)
/// or a [`Journaled`] journal and codec. The engine's view of a journal,
/// for undo records of type `U`; implemented by those two only.
///
/// A manager with a journal runs only transactions whose undo records its
/// codec can encode: closure rollbacks ([`BoxedRollback`](crate::BoxedRollback))
/// cannot be, so such a transaction does not compile.
///
/// For a [`Journaled`] manager and an undo type its codec cannot encode,
/// rustc names the deepest bound that failed, not this trait: for
/// `Postcard` and `Json`, serde's ("the trait bound `BoxedRollback:
/// serde::Serialize` is not satisfied"); for a codec of the application's
/// own, [`UndoCodec`]'s message, which says how to fix it. This trait's
/// message shows only for a journal type with no impl at all. The facade's
/// guide (`guide::troubleshooting`) quotes them.
#[diagnostic::on_unimplemented(
    message = "this manager's journal cannot keep undo records of type `{U}`",
    label = "a journaled transaction needs undo records as data",
    note = "a journal keeps undo records as bytes, encoded by its codec: use an undo enum that the \
            codec can encode (for `Postcard`/`Json`: derive serde's `Serialize` and `Deserialize`) \
            with `.fixed::<Undo, N>()` or `.unbounded::<Undo>()`; closure rollbacks stay in memory, \
            so run them with a manager without a journal"
)]
pub trait JournalFor<U>: JournalIds {
    /// Whether anything is written.
    #[doc(hidden)]
    const ENABLED: bool;

    /// What the body error of a transaction whose commit could not be
    /// written is built from.
    #[doc(hidden)]
    type CommitFailure;

    /// What a failed write carries: [`JournalFailure`], or [`Never`](crate::timing::interrupt::Never)
    /// without a journal. Uninhabited there, so the engine's failure paths
    /// after a write compile to nothing; and [`NoJournal`]'s writes are a
    /// zero-sized future that is ready at once, so the await points they
    /// leave in the step engine's state machine cost almost nothing.
    #[doc(hidden)]
    type Failure: Into<JournalFailure>;

    /// Writes `entry`.
    #[doc(hidden)]
    fn write<'a>(&'a self, entry: &'a Entry<'a>) -> impl Future<Output = Result<(), Self::Failure>> + 'a;

    /// Writes `entry` with `undo` as its payload.
    #[doc(hidden)]
    fn write_undo<'a>(
        &'a self,
        entry: Entry<'a>,
        name: &'a str,
        retry: RetryPolicy,
        timeout: Option<Duration>,
        undo: &'a U,
    ) -> impl Future<Output = Result<(), Self::Failure>> + 'a;

    #[doc(hidden)]
    fn commit_failure(failure: JournalFailure) -> Self::CommitFailure;

    /// A journaled transaction was dropped before it finished: it is
    /// unfinished in the journal; remember it for
    /// [`recover_dropped`](crate::TransactionManager::recover_dropped).
    #[doc(hidden)]
    fn dropped(&self, id: TransactionId) {
        let _ = id;
    }

    /// Transaction `id` starts running in this process: recovery leaves it
    /// alone until [`ended`](JournalFor::ended).
    #[doc(hidden)]
    fn began(&self, id: TransactionId) {
        let _ = id;
    }

    /// Transaction `id` no longer runs in this process (it committed,
    /// rolled back, or was dropped).
    #[doc(hidden)]
    fn ended(&self, id: TransactionId) {
        let _ = id;
    }

    /// Refuses an id given by hand
    /// ([`with_id`](crate::TransactionBuilder::with_id)) for a journaled
    /// transaction: only the journal's own ids are known never to have
    /// been used (a reused id mixes two transactions' entries, and the
    /// first one's `Committed` would hide what the second one owes).
    /// Checking the journal instead would read it in every such
    /// transaction's future, which a journal's `read` keeps from being
    /// `Send`.
    #[doc(hidden)]
    fn refuse_given_id(&self, id: TransactionId) -> Result<(), Self::Failure>;
}

/// The bound a function generic over the manager's journal
/// ([`Manager::Journal`](crate::Manager::Journal)) writes to run a
/// transaction whose undo records are `U` and whose body fails with `B`:
/// the journal, if the manager has one, can encode `U` (for `Postcard` and
/// `Json`: `U` derives serde's `Serialize` and `Deserialize`), and a
/// decision it could not write becomes a `B` (a [`StepError`](crate::StepError),
/// or any type with `From<JournalFailure>`). [`NoJournal`] has it for every
/// `U` and `B`. Implemented for every journal that meets both, by the
/// library.
///
/// See [`Manager`](crate::Manager) for an example.
#[diagnostic::on_unimplemented(
    message = "this manager's journal cannot run a transaction with undo records `{U}` and body error `{B}`",
    label = "the manager's journal, if any, must encode `{U}` and report a failed write as `{B}`",
    note = "in a function generic over the manager, add `where M::Journal: JournalRun<{U}, {B}>`; the undo type \
            must be data the journal's codec encodes (closure rollbacks cannot be journaled), and the body's \
            error must convert from `JournalFailure` (`StepError` does)"
)]
pub trait JournalRun<U, B>: JournalFor<U, CommitFailure: crate::timing::interrupt::IntoBodyError<B>> {}

impl<J, U, B> JournalRun<U, B> for J
where
    J: JournalFor<U>,
    J::CommitFailure: crate::timing::interrupt::IntoBodyError<B>,
{
}

/// Where a manager's transaction ids come from: its journal, if it has one
/// (ids unique across restarts), or else a counter. Implemented by
/// [`NoJournal`] and [`Journaled`] only.
pub trait JournalIds: sealed::Sealed {
    /// An id from the journal, or `None` without one.
    #[doc(hidden)]
    fn next_id(&self) -> Option<TransactionId>;

    /// The journal's origin, or `None` without one.
    #[doc(hidden)]
    fn origin(&self) -> Option<u64>;

    /// Writes a lazy entry without a payload: a failure is only logged
    /// (losing it makes recovery repeat an idempotent rollback). Without a
    /// journal, a zero-sized future that is ready at once, so an await of
    /// it costs nothing in the step engine's state machine.
    #[doc(hidden)]
    fn write_lazy(&self, id: TransactionId, step: Option<u32>, kind: EntryKind) -> impl Future<Output = ()> + '_;
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

/// No journal: transactions live in memory only (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoJournal;

impl sealed::Sealed for NoJournal {}

impl JournalIds for NoJournal {
    fn next_id(&self) -> Option<TransactionId> {
        None
    }

    fn origin(&self) -> Option<u64> {
        None
    }

    fn write_lazy(&self, _: TransactionId, _: Option<u32>, _: EntryKind) -> impl Future<Output = ()> + '_ {
        core::future::ready(())
    }
}

impl<U> JournalFor<U> for NoJournal {
    const ENABLED: bool = false;
    type CommitFailure = crate::timing::interrupt::Never;
    type Failure = crate::timing::interrupt::Never;

    // Not `async fn`: the futures hold nothing, so a transaction stays
    // `Send` whatever its undo type.
    fn write<'a>(&'a self, _: &'a Entry<'a>) -> impl Future<Output = Result<(), crate::timing::interrupt::Never>> + 'a {
        NothingWritten
    }

    fn write_undo<'a>(
        &'a self,
        _: Entry<'a>,
        _: &'a str,
        _: RetryPolicy,
        _: Option<Duration>,
        _: &'a U,
    ) -> impl Future<Output = Result<(), crate::timing::interrupt::Never>> + 'a {
        NothingWritten
    }

    fn commit_failure(_: JournalFailure) -> crate::timing::interrupt::Never {
        unreachable!("no journal, no journal failure")
    }

    fn refuse_given_id(&self, _: TransactionId) -> Result<(), crate::timing::interrupt::Never> {
        Ok(())
    }
}

/// [`NoJournal`]'s write: nothing, ready at the first poll (zero-sized, no
/// state, no "polled after completion" panic path).
struct NothingWritten;

impl Future for NothingWritten {
    type Output = Result<(), crate::timing::interrupt::Never>;

    fn poll(self: core::pin::Pin<&mut Self>, _: &mut core::task::Context<'_>) -> core::task::Poll<Self::Output> {
        core::task::Poll::Ready(Ok(()))
    }
}

/// No journal, no failure.
impl From<crate::timing::interrupt::Never> for JournalFailure {
    fn from(never: crate::timing::interrupt::Never) -> Self {
        match never {}
    }
}

/// A journal and the codec of its undo records: what
/// [`TransactionManager::with_journal`](crate::TransactionManager::with_journal)
/// keeps. Use [`journal`](Journaled::journal) to reach the journal.
#[derive(Debug)]
pub struct Journaled<J, Co> {
    journal: J,
    codec: Co,
    pub(crate) dropped: DroppedIds,
    pub(crate) live: LiveIds,
    pub(crate) owed_retry: crate::engine::schedule::OwedRetry,
    pub(crate) recovery_bound: Option<Duration>,
    pub(crate) backoffs: crate::engine::schedule::Backoffs,
}

impl<J, Co> Journaled<J, Co> {
    pub(crate) fn new(journal: J, codec: Co) -> Self {
        Self {
            journal,
            codec,
            dropped: DroppedIds::new(),
            live: LiveIds::new(),
            owed_retry: crate::engine::schedule::OwedRetry::EveryRecovery,
            recovery_bound: Some(crate::engine::schedule::RECOVERY_BOUND),
            backoffs: crate::engine::schedule::Backoffs::new(),
        }
    }

    /// The journal.
    pub fn journal(&self) -> &J {
        &self.journal
    }

    /// The codec.
    pub fn codec(&self) -> &Co {
        &self.codec
    }
}

impl<J, Co> sealed::Sealed for Journaled<J, Co> {}

impl<J: Journal, Co> JournalIds for Journaled<J, Co> {
    fn next_id(&self) -> Option<TransactionId> {
        Some(self.journal.next_id())
    }

    fn origin(&self) -> Option<u64> {
        Some(self.journal.origin())
    }

    async fn write_lazy(&self, id: TransactionId, step: Option<u32>, kind: EntryKind) {
        let entry = Entry::new(id, step, kind);
        if let Err(error) = self.journal.append(&entry).await {
            tm_error!("{}: {}", id, JournalFailure::refused(kind, J::decided(&error), &error));
        }
    }
}

impl<U: Sync, J: Journal, Co: UndoCodec<U> + Sync> JournalFor<U> for Journaled<J, Co> {
    const ENABLED: bool = true;
    type CommitFailure = JournalFailure;
    type Failure = JournalFailure;

    // Not `async fn`: that would capture `U`, which need not outlive `'a`.
    #[allow(clippy::manual_async_fn)]
    fn write<'a>(&'a self, entry: &'a Entry<'a>) -> impl Future<Output = Result<(), JournalFailure>> + 'a {
        async move {
            self.journal
                .append(entry)
                .await
                .map_err(|error| JournalFailure::refused(entry.kind(), J::decided(&error), &error))
        }
    }

    async fn write_undo<'a>(
        &'a self,
        entry: Entry<'a>,
        name: &'a str,
        retry: RetryPolicy,
        timeout: Option<Duration>,
        undo: &'a U,
    ) -> Result<(), JournalFailure> {
        let codec = &self.codec;
        let encode = move |buf: &mut [u8]| codec.encode(undo, buf);
        let payload = UndoPayload { name, retry, timeout, schema: Co::SCHEMA, undo: &encode };
        let entry = entry.with_undo(&payload);
        self.journal.append(&entry).await.map_err(|error| JournalFailure::new(entry.kind(), &error))
    }

    fn commit_failure(failure: JournalFailure) -> JournalFailure {
        failure
    }

    fn began(&self, id: TransactionId) {
        self.live.enter(id);
    }

    fn ended(&self, id: TransactionId) {
        self.live.leave(id);
    }

    fn refuse_given_id(&self, id: TransactionId) -> Result<(), JournalFailure> {
        tm_error!("{}: refused: a journaled transaction's id comes from its journal", id);
        Err(JournalFailure::new(EntryKind::Begin, &IdGiven(id)))
    }

    fn dropped(&self, id: TransactionId) {
        if !self.dropped.push(id) {
            tm_error!(
                "{}: dropped while {} other dropped transactions wait for `recover_dropped`: it is left to the next `recover`",
                id,
                DroppedIds::SLOTS
            );
        }
    }
}

/// Why a transaction id given by hand is refused.
struct IdGiven(TransactionId);

impl fmt::Display for IdGiven {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "transaction id {} was given with `with_id`, but a journaled transaction's id comes from its journal \
             (ids must never be reused, and the journal may have this one already): put your own id in the \
             operation name or the undo records",
            self.0.get()
        )
    }
}

/// The journaled transactions running in this process, which recovery
/// must leave alone: [`IdSlots`], and a count of those that found no slot
/// (or, without 64-bit atomics, all of them). While that count is not
/// zero, recovery cannot tell which unfinished transactions are live and
/// refuses to run
/// ([`RecoveryError::LiveUnknown`](crate::journal::RecoveryError::LiveUnknown)).
pub(crate) struct LiveIds {
    slots: IdSlots<64>,
    untracked: core::sync::atomic::AtomicUsize,
}

impl LiveIds {
    fn new() -> Self {
        Self { slots: IdSlots::new(), untracked: core::sync::atomic::AtomicUsize::new(0) }
    }

    fn enter(&self, id: TransactionId) {
        if self.slots.insert(id).is_some() {
            return;
        }
        use core::sync::atomic::Ordering;
        #[cfg(target_has_atomic = "ptr")]
        self.untracked.fetch_add(1, Ordering::AcqRel);
        #[cfg(not(target_has_atomic = "ptr"))]
        self.untracked.store(self.untracked.load(Ordering::Acquire).saturating_add(1), Ordering::Release);
    }

    fn leave(&self, id: TransactionId) {
        if self.slots.remove(id) {
            return;
        }
        use core::sync::atomic::Ordering;
        #[cfg(target_has_atomic = "ptr")]
        {
            let _ = self.untracked.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
        #[cfg(not(target_has_atomic = "ptr"))]
        self.untracked.store(self.untracked.load(Ordering::Acquire).saturating_sub(1), Ordering::Release);
    }

    /// Whether `id` is known to run in this process.
    pub(crate) fn contains(&self, id: TransactionId) -> bool {
        self.slots.find(id).is_some()
    }

    /// How many running transactions have no name here.
    pub(crate) fn untracked(&self) -> usize {
        self.untracked.load(core::sync::atomic::Ordering::Acquire)
    }

    /// Marks `id` live for as long as the guard is kept (a recovery of it).
    pub(crate) fn hold(&self, id: TransactionId) -> LiveGuard<'_> {
        self.enter(id);
        LiveGuard { live: self, id }
    }
}

impl fmt::Debug for LiveIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LiveIds")
    }
}

/// A transaction held live by recovery; released when dropped.
pub(crate) struct LiveGuard<'a> {
    live: &'a LiveIds,
    id: TransactionId,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        self.live.leave(self.id);
    }
}

/// The ids of journaled transactions dropped in this process and not yet
/// recovered ([`IdSlots`]: without 64-bit atomics nothing is kept, and a
/// firmware recovers at its next boot).
pub(crate) struct DroppedIds {
    slots: IdSlots<{ DroppedIds::SLOTS }>,
}

impl DroppedIds {
    /// How many dropped transactions wait at most.
    pub(crate) const SLOTS: usize = 16;

    fn new() -> Self {
        Self { slots: IdSlots::new() }
    }

    /// Keeps `id`; `false` when every slot is taken (or ids cannot be kept).
    fn push(&self, id: TransactionId) -> bool {
        self.slots.insert(id).is_some()
    }

    /// Takes one kept id, if any.
    pub(crate) fn take(&self) -> Option<TransactionId> {
        self.slots.take()
    }
}

impl fmt::Debug for DroppedIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DroppedIds")
    }
}
