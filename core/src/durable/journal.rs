//! The durable journal: what a transaction writes down so that, after a
//! crash or a power cut, the rollbacks it still owed are not lost.
//!
//! Recovery rolls back; it never replays the body. After a crash an
//! unfinished transaction is failed, and its owed undo records (plain data,
//! decoded with an [`UndoCodec`]) are rolled back by the same engine, with
//! the same policies and hooks. Bodies therefore need no determinism, and
//! versioning is only about decoding old undo records.
//!
//! The core works on bytes: a [`Journal`] stores [`Entry`]s whose payload
//! the core encodes, so it needs no serde. Codecs sit beside it
//! ([`Postcard`] with the `postcard` feature, `no_std`; [`Json`] with
//! `json`).

use crate::durable::entry::{Entry, EntryKind, StoredEntry};
use core::fmt;

use crate::util::text::ErrorText;
use crate::{durable::id::TransactionId, util::text::Name};

/// Durable storage for the entries of journaled transactions: SQLite
/// (`transaction-manager-sqlite`), flash, Postgres, or an in-memory one in
/// tests.
///
/// An implementation MUST:
/// - make an entry whose [`is_durable`](Entry::is_durable) is true survive
///   a crash or power cut before `append` returns `Ok` (other entries may
///   be buffered and written with a later one);
/// - keep entries idempotent: appending the same (transaction, step, kind)
///   again is not an error;
/// - hand entries back in [`read`](Journal::read) in the order they were
///   first appended (a journal that overwrites a step's record as the step
///   moves on, as on flash, may hand back each step's latest entry only,
///   in the order the steps were first written: recovery reaches the same
///   decisions, but rolls a parallel group back in reverse member order rather
///   than in reverse completion order);
/// - give out ids with [`next_id`](Journal::next_id) that no transaction of
///   this journal had before, in this process or an earlier one, or in
///   another process sharing the journal;
/// - never drop an entry it accepted: a write that fails is an `Err` from
///   `append` (a full disk, a read-only file), never a silent loss;
/// - hold one decision per transaction, the first: refuse to append a
///   decision ([`EntryKind::is_decision`]: `Committed` or `Aborted`) for a
///   transaction that already holds the other one, with an error that
///   [`decided`](Journal::decided) recognises, checked where the write is
///   serialised (in the write transaction, under a lock, or by a unique
///   key), so that of two racing decisions exactly one is stored. This is
///   what lets the engine find out, after a `Committed` append that
///   failed, whether it reached the journal after all (a connection lost
///   after the statement was sent, an I/O error after the write): it
///   appends `Aborted`, and the refusal says the commit is durable.
#[allow(async_fn_in_trait)] // `Send` follows the implementation: see the crate docs.
pub trait Journal {
    /// What a failed journal call returns.
    type Error: fmt::Display;

    /// A transaction id never given out before by this journal.
    fn next_id(&self) -> TransactionId;

    /// This journal's origin, which every [`IdempotencyKey`](crate::journal::IdempotencyKey) of its
    /// transactions carries: a number made once, when the journal (its
    /// file, database or flash range) was created, kept in it and the same
    /// at every open, and different from every other journal's (random,
    /// or a device-unique value). Two journals with the same origin hand
    /// out the same keys.
    fn origin(&self) -> u64;

    /// Appends `entry` (durably, if [`Entry::is_durable`]).
    async fn append(&self, entry: &Entry<'_>) -> Result<(), Self::Error>;

    /// The unfinished transaction (one without an entry that
    /// [`ends_transaction`](EntryKind::ends_transaction)) with the smallest
    /// id above `after` (any id if `None`), if there is one.
    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error>;

    /// Calls `visit` with each entry of transaction `id`, in the order they
    /// were appended.
    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error>;

    /// The decision the journal already held when it refused `error`'s
    /// append of the other one (`Some(EntryKind::Committed)` for a refused
    /// `Aborted`, and the reverse), or `None` for any other error. A
    /// journal MUST return it for its "already decided" error (see the
    /// MUST list above); the default, for a journal that never refuses
    /// (and so cannot tell the engine that a commit it saw fail was
    /// durable), is `None`.
    fn decided(error: &Self::Error) -> Option<EntryKind> {
        let _ = error;
        None
    }

    /// Takes an operator's request to try transaction `id`'s owed
    /// rollbacks again at once (`tmctl retry`, or the journal's own
    /// `request_retry`): `true` if there was one, which this call clears, so
    /// that one request makes one try. Recovery asks only for a transaction
    /// whose rollback failed before, and with a request it tries it whatever
    /// the manager's [`OwedRetry`](crate::journal::OwedRetry) schedule says
    /// (no backoff wait, and not left stuck by
    /// [`OwedRetry::Never`](crate::journal::OwedRetry::Never)), as
    /// [`recover_transaction`](crate::TransactionManager::recover_transaction)
    /// does. The default, for a journal that keeps no requests, is `false`.
    async fn take_retry_request(&self, id: TransactionId) -> Result<bool, Self::Error> {
        let _ = id;
        Ok(false)
    }
}

impl<J: Journal + ?Sized> Journal for &J {
    type Error = J::Error;

    fn next_id(&self) -> TransactionId {
        (**self).next_id()
    }

    fn origin(&self) -> u64 {
        (**self).origin()
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), Self::Error> {
        (**self).append(entry).await
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error> {
        (**self).next_unfinished(after).await
    }

    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error> {
        (**self).read(id, visit).await
    }

    fn decided(error: &Self::Error) -> Option<EntryKind> {
        J::decided(error)
    }

    async fn take_retry_request(&self, id: TransactionId) -> Result<bool, Self::Error> {
        (**self).take_retry_request(id).await
    }
}

/// A [`Journal`] whose transactions can all be listed, over or not: what
/// the inspection functions (`journal::inspect::list` and `history`, with
/// `alloc`) and the operator's
/// tool need beyond what recovery needs.
#[allow(async_fn_in_trait)] // `Send` follows the implementation, as for `Journal`.
pub trait Browse: Journal {
    /// The transaction with the smallest id above `after` (any id if
    /// `None`), if there is one: over or not, or with `unfinished_only`
    /// only one that is not over (running here or in another process,
    /// owed or stuck; unlike [`Journal::next_unfinished`], it claims
    /// nothing).
    async fn next_transaction(
        &self,
        after: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, Self::Error>;

    /// The same, downwards: the transaction with the largest id below
    /// `before` (any id if `None`), so that the newest can be read first.
    async fn previous_transaction(
        &self,
        before: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, Self::Error>;

    /// Calls `visit` with each entry of transaction `id`, in the order they
    /// were appended, and when it was written (Unix milliseconds), where
    /// the journal keeps that. The default keeps no times.
    async fn read_timed(
        &self,
        id: TransactionId,
        visit: &mut dyn FnMut(StoredEntry<'_>, Option<u64>),
    ) -> Result<(), Self::Error> {
        self.read(id, &mut |entry| visit(entry, None)).await
    }

    /// Calls `visit` with who holds transaction `id`, if it is unfinished
    /// and the journal knows its owner (a journal shared by processes:
    /// SQLite, Postgres). The default knows none.
    async fn read_holder(&self, id: TransactionId, visit: &mut dyn FnMut(Holder<'_>)) -> Result<(), Self::Error> {
        let _ = (id, visit);
        Ok(())
    }
}

/// Who holds an unfinished transaction of a journal shared by processes
/// (see [`Browse::read_holder`]): the process (or instance) that runs it,
/// or whose recovery took it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder<'a> {
    /// The owner, as the journal names it (SQLite: `journal 7`, the epoch
    /// its journal took at open; Postgres: the instance's owner id).
    pub owner: &'a str,
    /// Until when the owner's lease runs (Unix milliseconds), for a
    /// journal with leases (Postgres).
    pub lease_until: Option<u64>,
    /// Whether the owner is alive now, where the journal can tell (SQLite:
    /// its lock is held; Postgres: its lease has not run out). A gone
    /// owner's transactions wait for a recovery to take them over.
    pub alive: Option<bool>,
}

impl<'a> Holder<'a> {
    /// A holder: `owner`, its lease's end (Unix milliseconds) and whether
    /// it is alive, where known.
    pub fn new(owner: &'a str, lease_until: Option<u64>, alive: Option<bool>) -> Self {
        Holder { owner, lease_until, alive }
    }
}

impl<J: Browse + ?Sized> Browse for &J {
    async fn next_transaction(
        &self,
        after: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, Self::Error> {
        (**self).next_transaction(after, unfinished_only).await
    }

    async fn previous_transaction(
        &self,
        before: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, Self::Error> {
        (**self).previous_transaction(before, unfinished_only).await
    }

    async fn read_timed(
        &self,
        id: TransactionId,
        visit: &mut dyn FnMut(StoredEntry<'_>, Option<u64>),
    ) -> Result<(), Self::Error> {
        (**self).read_timed(id, visit).await
    }

    async fn read_holder(&self, id: TransactionId, visit: &mut dyn FnMut(Holder<'_>)) -> Result<(), Self::Error> {
        (**self).read_holder(id, visit).await
    }
}

/// A journal call that failed: which entry, and the journal's error text.
/// What a journaled step returns (as [`StepErrorKind::Journal`](crate::StepErrorKind::Journal))
/// when its `Done` or intent could not be written, and what a journaled
/// transaction's body error is built from when its `Committed` could not
/// be (`B: From<JournalFailure>`; `StepError<E>` qualifies).
///
/// ```
/// use transaction_manager::journal::{EntryKind, JournalFailure};
/// let failure = JournalFailure::new(EntryKind::Done, &"disk full");
/// assert_eq!(failure.entry(), Some(EntryKind::Done));
/// # #[cfg(feature = "error-text")]
/// assert_eq!(failure.to_string(), "journal: writing `done` failed: disk full");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalFailure {
    entry: Option<EntryKind>,
    decided: Option<EntryKind>,
    text: ErrorText,
}

impl JournalFailure {
    /// A failure to write `entry`, for `error` (its text is kept with the
    /// `error-text` feature).
    pub fn new(entry: EntryKind, error: &dyn fmt::Display) -> Self {
        Self { entry: Some(entry), decided: None, text: ErrorText::capture(error) }
    }

    /// A failure to read the journal (recovery), for `error`.
    pub fn reading(error: &dyn fmt::Display) -> Self {
        Self { entry: None, decided: None, text: ErrorText::capture(error) }
    }

    /// A failure to write `entry` that the journal refused because the
    /// transaction already holds the decision `decided` ([`Journal::decided`]).
    pub(crate) fn refused(entry: EntryKind, decided: Option<EntryKind>, error: &dyn fmt::Display) -> Self {
        Self { entry: Some(entry), decided, text: ErrorText::capture(error) }
    }

    /// The entry that could not be written, or `None` if reading failed.
    pub fn entry(&self) -> Option<EntryKind> {
        self.entry
    }

    /// The decision the transaction already held when the journal refused
    /// this one ([`Journal::decided`]), if that is why it failed.
    pub fn decided(&self) -> Option<EntryKind> {
        self.decided
    }

    /// The journal's error text (empty without the `error-text` feature).
    pub fn error(&self) -> &str {
        self.text.as_str()
    }
}

impl fmt::Display for JournalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entry {
            Some(entry) => write!(f, "journal: writing `{entry}` failed")?,
            None => f.write_str("journal: reading failed")?,
        }
        if !self.text.as_str().is_empty() {
            write!(f, ": {}", self.text.as_str())?;
        }
        Ok(())
    }
}

impl core::error::Error for JournalFailure {}

impl<B: From<JournalFailure>> crate::timing::interrupt::IntoBodyError<B> for JournalFailure {
    fn into_body_error(self, _: Option<(Name, usize)>, _: usize) -> B {
        B::from(self)
    }
}
