//! The binding of a journal to a manager: [`NoJournal`] or a
//! [`Journaled`] journal and codec, the engine's view of either
//! ([`JournalFor`]), and the ids of the journaled transactions running or
//! dropped in this process.

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
/// message shows only for a journal type with no impl at all. The README's
/// "Troubleshooting" quotes them.
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
    pub(crate) owed_retry: crate::engine::binding::OwedRetry,
    pub(crate) recovery_bound: Option<Duration>,
    pub(crate) backoffs: crate::engine::binding::Backoffs,
}

impl<J, Co> Journaled<J, Co> {
    pub(crate) fn new(journal: J, codec: Co) -> Self {
        Self {
            journal,
            codec,
            dropped: DroppedIds::new(),
            live: LiveIds::new(),
            owed_retry: crate::engine::binding::OwedRetry::EveryRecovery,
            recovery_bound: Some(crate::engine::binding::RECOVERY_BOUND),
            backoffs: crate::engine::binding::Backoffs::new(),
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

/// A fixed set of transaction ids (no allocator, no lock), in 64-bit
/// atomics: each slot holds an id plus one, so that 0 marks an empty slot
/// and id 0 is kept like any other (`u64::MAX` cannot be). Without 64-bit
/// atomics (32-bit microcontrollers) it keeps nothing: every call finds
/// no slot. What the live, dropped and backing-off ids share.
pub(crate) struct IdSlots<const N: usize> {
    #[cfg(target_has_atomic = "64")]
    slots: [core::sync::atomic::AtomicU64; N],
}

#[cfg(target_has_atomic = "64")]
use core::sync::atomic::Ordering;

impl<const N: usize> IdSlots<N> {
    pub(crate) const fn new() -> Self {
        Self {
            #[cfg(target_has_atomic = "64")]
            slots: [const { core::sync::atomic::AtomicU64::new(0) }; N],
        }
    }

    /// Keeps `id` in a free slot: its index, or `None` when every slot is
    /// taken (or ids cannot be kept).
    pub(crate) fn insert(&self, id: TransactionId) -> Option<usize> {
        #[cfg(target_has_atomic = "64")]
        {
            let value = id.get().checked_add(1)?;
            self.slots
                .iter()
                .position(|slot| slot.compare_exchange(0, value, Ordering::AcqRel, Ordering::Acquire).is_ok())
        }
        #[cfg(not(target_has_atomic = "64"))]
        {
            let _ = id;
            None
        }
    }

    /// The slot holding `id`, if any.
    pub(crate) fn find(&self, id: TransactionId) -> Option<usize> {
        #[cfg(target_has_atomic = "64")]
        {
            let value = id.get().checked_add(1)?;
            self.slots.iter().position(|slot| slot.load(Ordering::Acquire) == value)
        }
        #[cfg(not(target_has_atomic = "64"))]
        {
            let _ = id;
            None
        }
    }

    /// Frees the slot holding `id`: whether one did.
    pub(crate) fn remove(&self, id: TransactionId) -> bool {
        #[cfg(target_has_atomic = "64")]
        {
            let Some(value) = id.get().checked_add(1) else { return false };
            self.slots.iter().any(|slot| slot.compare_exchange(value, 0, Ordering::AcqRel, Ordering::Acquire).is_ok())
        }
        #[cfg(not(target_has_atomic = "64"))]
        {
            let _ = id;
            false
        }
    }

    /// Takes one kept id out, if any.
    pub(crate) fn take(&self) -> Option<TransactionId> {
        #[cfg(target_has_atomic = "64")]
        {
            self.slots.iter().find_map(|slot| match slot.swap(0, Ordering::AcqRel) {
                0 => None,
                value => Some(TransactionId::new(value - 1)),
            })
        }
        #[cfg(not(target_has_atomic = "64"))]
        None
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

/// When recovery tries a transaction's owed rollbacks again, once one of
/// them failed for good (set with
/// [`with_owed_retry`](crate::TransactionManager::with_owed_retry)).
///
/// A rollback that fails for good — live, or in a recovery — leaves its
/// transaction *owed*. This is the schedule on which later recoveries try
/// it again. An operator can always try one now with
/// [`recover_transaction`](crate::TransactionManager::recover_transaction), or end
/// it with [`resolve`](crate::TransactionManager::resolve).
///
/// ```
/// use transaction_manager::journal::OwedRetry;
/// assert_eq!(OwedRetry::default(), OwedRetry::EveryRecovery);
/// // Skip 1, then 3, then 7 recoveries after each failed one, at most 20.
/// let backoff = OwedRetry::Backoff { cap: 20 };
/// # let _ = backoff;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OwedRetry {
    /// Every recovery tries them again (the default): right for a recovery
    /// that runs at start-up, or rarely.
    #[default]
    EveryRecovery,
    /// Recovery rounds back off: after the `k`-th recovery in this process
    /// that left the transaction owed, the next `2^k - 1` recoveries (at
    /// most `cap`) leave it owed without trying it
    /// ([`RecoveryOutcome::Deferred`](crate::journal::RecoveryOutcome::Deferred)). For a recovery that runs on a timer
    /// (every second, as beside the Postgres journal), so that a rollback
    /// failing against a service that is down is not tried every round.
    /// Counted in this process's memory, for up to 16 transactions at a
    /// time (with 64-bit atomics; others, and every transaction on targets
    /// without them, are tried at every recovery); a restart tries each
    /// one again at its first recovery.
    Backoff {
        /// The most recoveries skipped in a row.
        cap: u32,
    },
    /// Never by itself: a transaction with a rollback that failed for good
    /// is *stuck* for an operator (listed by
    /// [`stuck`](crate::TransactionManager::stuck), reported as
    /// [`RecoveryOutcome::Stuck`](crate::journal::RecoveryOutcome::Stuck)) — so is one that is stuck for another
    /// reason: no recovery tries it again until an operator runs
    /// [`recover_transaction`](crate::TransactionManager::recover_transaction) or
    /// [`resolve`](crate::TransactionManager::resolve)s it. (The flash journal
    /// keeps no record of a rollback that failed in the live transaction:
    /// there the first recovery tries it once, and a failure then makes
    /// it stuck.)
    Never,
}

/// The recovery rounds left to skip, per owed transaction, for
/// [`OwedRetry::Backoff`]: a fixed set of slots (no allocator, no lock).
/// Each transaction's slot is changed only while recovery holds it live,
/// so one recovery at a time.
pub(crate) struct Backoffs {
    ids: IdSlots<{ Backoffs::SLOTS }>,
    /// Per slot of `ids`: failed rounds in the high half, rounds left to
    /// skip in the low half.
    #[cfg(target_has_atomic = "64")]
    rounds: [core::sync::atomic::AtomicU64; Backoffs::SLOTS],
}

impl Backoffs {
    const SLOTS: usize = 16;

    pub(crate) fn new() -> Self {
        Self {
            ids: IdSlots::new(),
            #[cfg(target_has_atomic = "64")]
            rounds: [const { core::sync::atomic::AtomicU64::new(0) }; Backoffs::SLOTS],
        }
    }

    /// Whether this round skips `id`: counts one skipped round if so.
    pub(crate) fn defer(&self, id: TransactionId) -> bool {
        let Some(at) = self.ids.find(id) else { return false };
        #[cfg(target_has_atomic = "64")]
        {
            let rounds = self.rounds[at].load(Ordering::Acquire);
            if rounds & u64::from(u32::MAX) == 0 {
                return false;
            }
            self.rounds[at].store(rounds - 1, Ordering::Release);
            true
        }
        #[cfg(not(target_has_atomic = "64"))]
        {
            let _ = at;
            false
        }
    }

    /// A recovery left `id` owed: it skips the next `2^k - 1` rounds (at
    /// most `cap`) after its `k`-th failed one.
    pub(crate) fn failed(&self, id: TransactionId, cap: u32) {
        let at = match self.ids.find(id) {
            Some(at) => at,
            None => {
                let Some(at) = self.ids.insert(id) else { return };
                #[cfg(target_has_atomic = "64")]
                self.rounds[at].store(0, Ordering::Release);
                at
            }
        };
        #[cfg(target_has_atomic = "64")]
        {
            let failed = (self.rounds[at].load(Ordering::Acquire) >> 32).saturating_add(1).min(u64::from(u32::MAX));
            let skip = 1u64.checked_shl(failed.min(63) as u32).map_or(u64::MAX, |n| n - 1).min(u64::from(cap));
            self.rounds[at].store(failed << 32 | skip, Ordering::Release);
        }
        #[cfg(not(target_has_atomic = "64"))]
        let _ = (at, cap);
    }

    /// `id` is over (or was tried and owes nothing more): its slot is free.
    pub(crate) fn ended(&self, id: TransactionId) {
        #[cfg(target_has_atomic = "64")]
        if let Some(at) = self.ids.find(id) {
            self.rounds[at].store(0, Ordering::Release);
        }
        self.ids.remove(id);
    }
}

impl fmt::Debug for Backoffs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Backoffs")
    }
}

/// How long recovery spends on one transaction unless set otherwise.
pub(crate) const RECOVERY_BOUND: Duration = Duration::from_secs(600);
