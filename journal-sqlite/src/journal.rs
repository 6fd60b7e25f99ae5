//! `SqliteJournal`: the `Journal` on a SQLite file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::time::SystemTime;
use transaction_manager_core::backend::{
    Browse, CodecError, Entry, EntryKind, Holder, Journal, Pruned, Retention, StoredEntry, TransactionId,
};

use crate::owner::{OwnerLock, Owners};
use crate::writer::{PendingLazy, Request, Row};
use crate::{SqliteJournalError, oneshot, owner, schema, writer};

/// The largest payload (encoded undo record and its header) an entry may
/// have: 16 MiB. An undo record is a handful of ids, not a document; a
/// larger one is most likely a bug, and is refused with
/// [`SqliteJournalError::PayloadTooLarge`].
pub const MAX_PAYLOAD: usize = 16 << 20;

/// A [`Journal`] in a SQLite file: the embedded default for `std`
/// programs. Several processes may share the file, and recovery in one
/// never rolls back what another one is running (see *Owners* below).
///
/// - One writer thread owns the write connection. `append` encodes the
///   entry's payload on the caller's thread and sends it over a channel;
///   the writer commits every entry waiting in the channel in one SQLite
///   transaction (one fsync for the batch: group commit).
/// - A durable entry ([`Entry::is_durable`]) is acknowledged once the
///   transaction that holds it committed. The others are acknowledged at
///   once and written with the writer's next batch (within one commit's
///   time); a read through this journal waits for them, so it always sees
///   this journal's own appends.
/// - WAL mode with `synchronous = FULL`: a commit survives a power cut.
/// - Ids: each `open` durably takes a new *epoch* of the file; ids are
///   `epoch << 32 | counter`, handed out from an atomic counter with no
///   I/O, unique across restarts and across processes sharing the file.
/// - `read` and `next_unfinished` run on a separate read connection,
///   synchronously inside the async call: they are for recovery (at
///   start-up, rare), a read is an indexed query of well under a
///   millisecond, and in WAL mode it never waits for the writer's fsync
///   (going through the writer thread would queue it behind commits).
/// - A high-water mark: after each commit the writer thread writes the last
///   entry's sequence number to `<journal>-hwm` (not fsynced: an fsync
///   doubled a lone durable append). SQLite reads a damaged WAL frame as
///   the end of its log and silently drops every later commit; `open`
///   compares the database with the mark and refuses such a file with
///   [`SqliteJournalError::Damaged`]. After a power cut the mark may trail
///   by the last few seconds' commits, which are then not checked; delete
///   the `-hwm` file together with the journal.
/// - Owners (Unix): each writable journal is an *owner*, named by the
///   epoch its `open` took, and each transaction's row names the owner
///   that wrote its first entry. The journal holds an exclusive `flock` on
///   its own lock file, `<journal>.owners/<epoch>.lock`, from before its
///   first write until it is dropped; the kernel releases it when the
///   process dies, however it dies (`kill -9` too). So
///   [`next_unfinished`](Journal::next_unfinished) hands out only this
///   journal's own unfinished transactions (the core's manager knows which
///   of those are running in this process and leaves them alone) and those
///   of owners that are gone (their lock can be taken, or their lock file
///   is missing, or the row predates owners: schema 1). A gone owner's
///   transactions are *claimed* first, all of them at once (their rows
///   move to this owner, a compare-and-set each, in one write through the
///   writer thread), so two journals never recover one at once, and once
///   they are this journal's, others leave them alone while it lives. A
///   transaction running in another journal — another process, or a
///   second journal on the file in this process (`flock` locks belong to
///   an open file, not to a process) — is never handed out, so `recover` may run in every process, on a
///   timer, beside their work. No lease and no heartbeat: nothing to tune,
///   and a paused process (SIGSTOP, a debugger) stays an owner. A lock file
///   that cannot be checked (no permission) is an
///   [`Owner`](SqliteJournalError::Owner) error, never a guess. A journal
///   opened read-only owns and claims nothing: it lists the transactions of
///   gone owners (checking their locks as a writer does) but cannot roll
///   them back. Limits: the file must be on a local file system (as SQLite's
///   WAL needs anyway; on NFS `flock` may be per process or missing);
///   off Unix, and for `:memory:` or `file:` URIs, owners cannot be told
///   apart and every unfinished transaction is handed out, as before
///   schema 2: there, run `recover` only when no other journal on the file
///   runs transactions. Old journals (schema 1) are migrated in place at the
///   first writable open: stop processes of an older version of this crate
///   first (their rows would be nobody's, so recoverable while they run;
///   after the migration an older version refuses the file).
/// - Private files (Unix): a new journal file is created readable and
///   writable by its owner only (`0600`, whatever the umask), and SQLite
///   gives its `-wal` and `-shm` files the same mode; undo records may hold
///   customer ids or tokens. An existing file is used with the permissions
///   it has, and a `log` warning if others may read or write it.
///
/// - Retention: finished transactions (committed, rolled back, resolved)
///   are deleted once they have been over for 7 days, in the background;
///   see [`with_retention`](Self::with_retention) and
///   [`prune`](Self::prune). Unfinished ones are never deleted.
///
/// Dropping the journal waits for the writer thread to write what it was
/// sent (at most one commit), so lazy entries are on disk when `drop`
/// returns.
///
/// ```
/// use transaction_manager::{TransactionId, journal::{Entry, EntryKind, Journal}};
/// use transaction_manager_sqlite::SqliteJournal;
///
/// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let journal = SqliteJournal::open(dir.join("journal.db"))?;
/// let id = journal.next_id();
/// futures_lite::future::block_on(async {
///     journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b"provision")).await?;
///     journal.append(&Entry::new_raw(id, Some(0), EntryKind::Done, b"undo record")).await?;
///     assert_eq!(journal.next_unfinished(None).await?, Some(id));
///
///     let mut kinds = Vec::new();
///     journal.read(id, &mut |entry| kinds.push(entry.kind)).await?;
///     assert_eq!(kinds, [EntryKind::Begin.code(), EntryKind::Done.code()]);
///     Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
/// })?;
/// # drop(journal);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
/// ```
pub struct SqliteJournal {
    path: PathBuf,
    ids: Ids,
    /// The file's origin (see [`Journal::origin`]).
    origin: u64,
    /// `None` for a read-only file.
    writer: Option<Writer>,
    /// Set when nothing can be written: the file is read-only, or a new
    /// epoch could not be taken. Every `append` returns it.
    cannot_write: OnceLock<SqliteJournalError>,
    reader: Mutex<Connection>,
    /// This journal's owner id (the epoch its `open` took; `NOBODY` for a
    /// read-only journal, which owns nothing).
    owner: i64,
    /// The lock files of the file's owners; `None` where owners cannot be
    /// told apart (see [`Owners::of`]).
    owners: Option<Owners>,
    /// Whether the file has the `owner` column (a read-only journal of
    /// schema 1 has none: every row is nobody's).
    owner_column: bool,
    /// Whether the file has the times (schema 4; a read-only journal of an
    /// older schema has none).
    times_column: bool,
    /// Held as long as the journal lives; declared last, so it is released
    /// after the writer thread wrote its last rows.
    _owner_lock: Option<OwnerLock>,
}

struct Writer {
    /// `None` only in `drop`, to close the channel before joining.
    requests: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    pending_lazy: PendingLazy,
}

impl SqliteJournal {
    /// Opens the journal at `path`, creating the file and its tables if
    /// needed (on Unix with mode `0600`), and takes a new epoch for this
    /// journal's ids (one durable write).
    ///
    /// A read-only file opens read-only: [`read`](Journal::read) and
    /// [`next_unfinished`](Journal::next_unfinished) work, every
    /// [`append`](Journal::append) fails with
    /// [`SqliteJournalError::ReadOnly`], and ids come from the reserved
    /// epoch 0 (unique within this value; none of them can ever be stored).
    ///
    /// # Errors
    ///
    /// [`Open`](SqliteJournalError::Open) if the file cannot be opened or
    /// created, [`NewerSchema`](SqliteJournalError::NewerSchema) if a newer
    /// version of this crate wrote it, [`Corrupt`](SqliteJournalError::Corrupt)
    /// if it is not a SQLite file, [`DiskFull`](SqliteJournalError::DiskFull),
    /// [`ReadOnly`](SqliteJournalError::ReadOnly) for a read-only file
    /// that holds no journal, [`Damaged`](SqliteJournalError::Damaged) if
    /// committed entries were lost (a damaged WAL), or
    /// [`Owner`](SqliteJournalError::Owner) /
    /// [`HighWaterMark`](SqliteJournalError::HighWaterMark) if the owner
    /// lock or the mark file beside the journal cannot be made.
    ///
    /// ```
    /// use transaction_manager::journal::Journal;
    /// use transaction_manager_sqlite::SqliteJournal;
    ///
    /// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-open-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let first = SqliteJournal::open(dir.join("journal.db"))?.next_id();
    /// let second = SqliteJournal::open(dir.join("journal.db"))?.next_id();
    /// assert_ne!(first, second); // each open takes a new epoch
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SqliteJournalError> {
        let path = path.as_ref();
        let opening = |error| SqliteJournalError::opening(path, error);
        create_private(path);
        let conn = Connection::open(path).map_err(opening)?;
        // SQLite opens a write-protected file read-only without a word.
        if conn.is_readonly("main").map_err(opening)? {
            drop(conn);
            return Self::open_read_only_at(path);
        }
        // Connections opening a fresh file at once can get `SQLITE_BUSY`
        // without the busy handler being asked (switching to WAL, or a
        // read lock that cannot be upgraded without a deadlock): retried
        // until the busy timeout, as a wait for a lock would be.
        let deadline = std::time::Instant::now() + schema::BUSY_TIMEOUT;
        let retry_busy = |busy: bool| {
            let retry = busy && std::time::Instant::now() < deadline;
            if retry {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            retry
        };
        while let Err(error) = schema::configure_writer(&conn) {
            if !retry_busy(crate::error::is_busy(&error)) {
                return Err(opening(error));
            }
        }
        let set_up = loop {
            match schema::set_up(&conn) {
                Err(SqliteJournalError::Sqlite(cause)) if retry_busy(cause.is_busy()) => {}
                other => break other,
            }
        };
        let (epoch, origin) = match set_up {
            // A read-only directory (no `-wal` file) or mount.
            Err(SqliteJournalError::ReadOnly { .. }) => {
                drop(conn);
                return Self::open_read_only_at(path);
            }
            Err(SqliteJournalError::Sqlite(cause)) => {
                return Err(SqliteJournalError::Open { path: path.to_owned(), cause });
            }
            other => other?,
        };
        // Entries lost since the last commit this file saw: refused.
        let mark = crate::hwm::path_of(path);
        if let Some(mark) = &mark {
            crate::hwm::check(mark, &conn)?;
        }
        let mark = match &mark {
            Some(mark) => Some(crate::hwm::Mark::open(mark).map_err(|error| SqliteJournalError::HighWaterMark {
                path: mark.clone(),
                cause: std::sync::Arc::new(error),
            })?),
            None => None,
        };
        let owner = i64::from(epoch);
        let owners = Owners::of(path);
        // Before the writer can write a row naming this owner.
        let owner_lock = owners.as_ref().map(|owners| owners.register(owner)).transpose()?;
        if let Some(owners) = &owners {
            owners.sweep(owner);
        }
        let reader = open_reader(path)?;
        let pending_lazy: PendingLazy = PendingLazy::default();
        let (requests, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("tm-sqlite-writer".into())
            .spawn({
                let pending_lazy = pending_lazy.clone();
                let thread_path = path.to_owned();
                move || writer::run(conn, owner, Owners::of(&thread_path), mark, receiver, pending_lazy)
            })
            .map_err(|_| SqliteJournalError::WriterGone)?;
        Ok(SqliteJournal {
            path: path.to_owned(),
            ids: Ids::new(epoch),
            origin,
            writer: Some(Writer { requests: Some(requests), thread: Some(thread), pending_lazy }),
            cannot_write: OnceLock::new(),
            reader: Mutex::new(reader),
            owner,
            owners,
            owner_column: true,
            times_column: true,
            _owner_lock: owner_lock,
        })
    }

    /// Opens the journal at `path` for reading only, beside the processes
    /// that write it (SQLite's WAL lets a reader run beside the writer):
    /// creates nothing, writes nothing, takes no epoch and owns nothing.
    /// [`read`](Journal::read), [`next_unfinished`](Journal::next_unfinished)
    /// and [`Browse`] work; every [`append`](Journal::append) and
    /// [`prune`](Self::prune) fails with
    /// [`ReadOnly`](SqliteJournalError::ReadOnly). What an operator's
    /// listing opens.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open), and
    /// [`NotAJournal`](SqliteJournalError::NotAJournal) for a SQLite file
    /// without a journal in it; a missing file is an
    /// [`Open`](SqliteJournalError::Open) error (nothing is created).
    ///
    /// ```
    /// use transaction_manager::journal::Journal;
    /// use transaction_manager_sqlite::SqliteJournal;
    ///
    /// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-open-ro-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let writer = SqliteJournal::open(dir.join("journal.db"))?;
    /// let reader = SqliteJournal::open_read_only(dir.join("journal.db"))?;
    /// assert!(reader.is_read_only() && !writer.is_read_only());
    /// assert!(SqliteJournal::open_read_only(dir.join("missing.db")).is_err());
    /// assert!(!dir.join("missing.db").exists());
    /// # drop((writer, reader));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// ```
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, SqliteJournalError> {
        let path = path.as_ref();
        Self::open_read_only_at(path).map_err(|error| match error {
            SqliteJournalError::ReadOnly { cause: None } => SqliteJournalError::NotAJournal { path: path.to_owned() },
            other => other,
        })
    }

    fn open_read_only_at(path: &Path) -> Result<Self, SqliteJournalError> {
        let conn = match read_only_connection(path, false) {
            // A WAL file in a read-only directory without its `-shm` file:
            // SQLite cannot share memory with writers, but there can be
            // none (a writer needs a `-wal` file there), so the file can
            // be read as immutable.
            Err(SqliteJournalError::Open { cause, .. }) if cause.code() == Some(CANTOPEN) => {
                read_only_connection(path, true)?
            }
            other => other?,
        };
        let cannot_write = OnceLock::new();
        let _ = cannot_write.set(SqliteJournalError::ReadOnly { cause: None });
        let owner_column = schema::has_column(&conn, "tm_transactions", "owner")?;
        let times_column = schema::has_column(&conn, "tm_entries", "at")?;
        let origin = schema::stored_origin(&conn).ok().flatten().unwrap_or_else(schema::random_origin);
        if let Some(mark) = crate::hwm::path_of(path) {
            crate::hwm::check(&mark, &conn)?;
        }
        Ok(SqliteJournal {
            path: path.to_owned(),
            ids: Ids::new(0),
            origin,
            writer: None,
            cannot_write,
            reader: Mutex::new(conn),
            owner: owner::NOBODY,
            owners: Owners::of(path),
            owner_column,
            times_column,
            _owner_lock: None,
        })
    }

    /// The file's path, as given to [`open`](Self::open).
    ///
    /// ```
    /// # use transaction_manager_sqlite::SqliteJournal;
    /// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-path-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let journal = SqliteJournal::open(dir.join("journal.db"))?;
    /// assert!(journal.path().ends_with("journal.db"));
    /// # drop(journal);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the journal was opened read-only (a write-protected file or
    /// directory): every `append` fails.
    ///
    /// ```
    /// # use transaction_manager_sqlite::SqliteJournal;
    /// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-ro-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// assert!(!SqliteJournal::open(dir.join("journal.db"))?.is_read_only());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// ```
    pub fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    /// Waits until every entry appended so far, lazy ones too, is
    /// committed. Reads do this by themselves; call it to make lazy
    /// entries durable at a point of your choosing (before a planned
    /// shutdown, say).
    ///
    /// # Errors
    ///
    /// The error of the write that failed (lazy entries of a failed write
    /// are kept and written again with the next one).
    ///
    /// ```
    /// use transaction_manager::journal::{Entry, EntryKind, Journal};
    /// # use transaction_manager_sqlite::SqliteJournal;
    /// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-flush-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let journal = SqliteJournal::open(dir.join("journal.db"))?;
    /// let id = journal.next_id();
    /// futures_lite::future::block_on(async {
    ///     journal.append(&Entry::new_raw(id, Some(0), EntryKind::Undone, &[])).await?; // lazy
    ///     journal.flush().await // now durable
    /// })?;
    /// # drop(journal);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// ```
    pub async fn flush(&self) -> Result<(), SqliteJournalError> {
        let Some(writer) = &self.writer else { return Ok(()) };
        let (reply, answer) = oneshot::channel();
        writer.send(Request::Flush(reply))?;
        answer.await
    }

    /// Sets how long finished transactions are kept (default:
    /// [`Retention::KeepFor`] 7 days). The writer thread deletes them in
    /// the background, at most 512 per write transaction, inside the
    /// batches it commits anyway (a journal that is idle looks once a
    /// second, and takes the write lock only when it has something to
    /// delete), and hands freed space back to the file system after a
    /// burst (`incremental_vacuum`; a file created by a version before
    /// schema 4 only reuses its free pages until a `VACUUM`).
    ///
    /// It never deletes a transaction that is not over — running, owing a
    /// rollback that failed for good, stuck — nor one whose ending entry
    /// this journal saw fail to commit (it may be durable all the same),
    /// nor, for a minute after it ended, a transaction of another journal
    /// on the file that is still open (another process: its writer may
    /// still check that transaction's decision; off Unix, where owners
    /// cannot be told apart, every other journal counts as open). What recovery does is the same whatever the
    /// retention: it reads unfinished transactions only. A read-only
    /// journal deletes nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// use transaction_manager_sqlite::{Retention, SqliteJournal};
    ///
    /// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-retention-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let journal = SqliteJournal::open(dir.join("journal.db"))?
    ///     .with_retention(Retention::KeepFor(Duration::from_secs(24 * 60 * 60)));
    /// # drop(journal);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// ```
    #[must_use]
    pub fn with_retention(self, retention: Retention) -> Self {
        if let Some(writer) = &self.writer {
            // A writer that is gone prunes nothing; the next append says so.
            let _ = writer.send(Request::Retention(retention));
        }
        self
    }

    /// Sets the wall clock this journal stamps entries with (the `at` and
    /// `finished_at` columns) and measures retention by (default:
    /// [`SystemTime::now`]). For tests and benchmarks that run on virtual
    /// time.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use transaction_manager_sqlite::SqliteJournal;
    ///
    /// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-clock-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    /// let journal = SqliteJournal::open(dir.join("journal.db"))?.with_clock(move || start);
    /// # drop(journal);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// ```
    #[must_use]
    pub fn with_clock(self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        if let Some(writer) = &self.writer {
            let _ = writer.send(Request::Clock(std::sync::Arc::new(clock)));
        }
        self
    }

    /// Deletes, now, every finished transaction `retention` lets go (an
    /// operator's prune: `transaction-manager-cli prune`), in batches of
    /// 512, one write transaction each, and hands freed space back. Never
    /// touches what [`with_retention`](Self::with_retention) never
    /// touches. Entries appended before the call are written first.
    ///
    /// # Errors
    ///
    /// [`ReadOnly`](SqliteJournalError::ReadOnly) for a read-only journal,
    /// or the error of the write that failed (batches before it stay
    /// deleted).
    ///
    /// ```
    /// use transaction_manager::journal::{Entry, EntryKind, Journal};
    /// use transaction_manager_sqlite::{Retention, SqliteJournal};
    ///
    /// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-prune-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let journal = SqliteJournal::open(dir.join("journal.db"))?.with_retention(Retention::KeepAll);
    /// let (done, running) = (journal.next_id(), journal.next_id());
    /// futures_lite::future::block_on(async {
    ///     journal.append(&Entry::new_raw(done, None, EntryKind::Begin, b"a")).await?;
    ///     journal.append(&Entry::new_raw(done, None, EntryKind::Committed, b"")).await?;
    ///     journal.append(&Entry::new_raw(running, None, EntryKind::Begin, b"b")).await?;
    ///     journal.flush().await?;
    ///     let pruned = journal.prune(Retention::DeleteAtOnce).await?;
    ///     assert_eq!((pruned.transactions, pruned.entries), (1, 2));
    ///     assert_eq!(journal.next_unfinished(None).await?, Some(running)); // untouched
    ///     Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// })?;
    /// # drop(journal);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// ```
    pub async fn prune(&self, retention: Retention) -> Result<Pruned, SqliteJournalError> {
        if let Some(error) = self.cannot_write.get() {
            return Err(error.clone());
        }
        let writer = self.writer.as_ref().ok_or(SqliteJournalError::ReadOnly { cause: None })?;
        let (reply, answer) = oneshot::channel();
        writer.send(Request::Prune(retention, reply))?;
        answer.await
    }

    /// Asks the recovery that next finds transaction `id` to try its owed
    /// rollbacks at once, whatever its manager's `OwedRetry` schedule says
    /// (no backoff wait; tried even with `OwedRetry::Never`): what
    /// `tmctl retry` runs, beside the service. One request makes one try:
    /// that recovery takes it
    /// ([`take_retry_request`](Journal::take_retry_request)). Returns
    /// `false`, and keeps nothing, when the file holds no unfinished
    /// transaction of that id. Durable when it returns.
    ///
    /// # Errors
    ///
    /// [`ReadOnly`](SqliteJournalError::ReadOnly) for a read-only journal,
    /// or the write's error.
    ///
    /// ```
    /// use transaction_manager::journal::{Entry, EntryKind, Journal};
    /// use transaction_manager_sqlite::SqliteJournal;
    ///
    /// # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-retry-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// let journal = SqliteJournal::open(dir.join("journal.db"))?;
    /// let id = journal.next_id();
    /// futures_lite::future::block_on(async {
    ///     assert!(!journal.request_retry(id).await?); // nothing of it yet
    ///     journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b"provision")).await?;
    ///     assert!(journal.request_retry(id).await?);
    ///     assert!(journal.take_retry_request(id).await?); // what the next recovery does
    ///     assert!(!journal.take_retry_request(id).await?);
    ///     Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// })?;
    /// # drop(journal);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
    /// ```
    pub async fn request_retry(&self, id: TransactionId) -> Result<bool, SqliteJournalError> {
        if let Some(error) = self.cannot_write.get() {
            return Err(error.clone());
        }
        let writer = self.writer.as_ref().ok_or(SqliteJournalError::ReadOnly { cause: None })?;
        // Written after what this journal appended before.
        self.flush().await?;
        let (reply, answer) = oneshot::channel();
        writer.send(Request::Retry { tx: schema::to_sql(id.get()), request: true, reply })?;
        answer.await
    }

    /// Waits for this journal's lazy entries of the transactions in `range`
    /// before a read of them, so that a read sees every entry appended
    /// before it.
    async fn settle(&self, range: impl core::ops::RangeBounds<u64>) -> Result<(), SqliteJournalError> {
        match &self.writer {
            Some(writer) if writer.pending_lazy.any_in(range) => self.flush().await,
            _ => Ok(()),
        }
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A poisoned lock means a read panicked; the connection is fine.
        self.reader.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new epoch from the writer thread, or the fallback of a journal
    /// that cannot write.
    fn new_epoch(&self) -> u32 {
        if self.cannot_write.get().is_none() {
            if let Some(writer) = &self.writer {
                let (reply, answer) = mpsc::sync_channel(1);
                let result = writer
                    .send(Request::NewEpoch(reply))
                    .and_then(|()| answer.recv().map_err(|_| SqliteJournalError::WriterGone)?);
                match result {
                    Ok(epoch) => return epoch,
                    Err(error) => {
                        let _ = self.cannot_write.set(error);
                    }
                }
            }
        }
        0
    }
}

impl Writer {
    fn send(&self, request: Request) -> Result<(), SqliteJournalError> {
        let requests = self.requests.as_ref().ok_or(SqliteJournalError::WriterGone)?;
        requests.send(request).map_err(|_| SqliteJournalError::WriterGone)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel lets the thread write what is left and end.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for SqliteJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteJournal")
            .field("path", &self.path)
            .field("read_only", &self.is_read_only())
            .finish_non_exhaustive()
    }
}

/// SQLite's `SQLITE_CANTOPEN`.
const CANTOPEN: i32 = 14;

/// A read-only connection to a journal that cannot be written, checked:
/// it holds a journal of a schema this version reads.
fn read_only_connection(path: &Path, immutable: bool) -> Result<Connection, SqliteJournalError> {
    let opening = |error| SqliteJournalError::opening(path, error);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = if immutable {
        Connection::open_with_flags(format!("{}?immutable=1", file_uri(path)), flags)
    } else {
        Connection::open_with_flags(path, flags - OpenFlags::SQLITE_OPEN_URI)
    }
    .map_err(opening)?;
    conn.busy_timeout(schema::BUSY_TIMEOUT).map_err(opening)?;
    // The first read: where a WAL file that cannot be shared fails.
    let has_tables = schema::has_tables(&conn).map_err(|error| match error {
        SqliteJournalError::Sqlite(cause) => SqliteJournalError::Open { path: path.to_owned(), cause },
        other => other,
    })?;
    if !has_tables {
        return Err(SqliteJournalError::ReadOnly { cause: None });
    }
    schema::check_schema(&conn)?;
    Ok(conn)
}

/// On Unix, creates `path` empty with mode `0o600` if it does not exist
/// yet, whatever the umask: SQLite would create it with `0o644` less the
/// umask, and it gives the `-wal` and `-shm` files the main file's mode.
/// An existing file is used as it is, with a warning if others may read or
/// write it. Any other failure is left to SQLite to report, with its own
/// error (a read-only directory, a missing one).
#[cfg(unix)]
fn create_private(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    const PRIVATE: u32 = 0o600;
    // SQLite's own names: a URI or an in-memory database is not a file
    // this crate creates.
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" || path.to_string_lossy().starts_with("file:") {
        return;
    }
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(PRIVATE).open(path) {
        // The umask may have taken owner bits off the mode.
        Ok(file) => {
            let _ = file.set_permissions(std::fs::Permissions::from_mode(PRIVATE));
        }
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Ok(metadata) = std::fs::metadata(path) {
                let mode = metadata.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    log::warn!(
                        "the journal file {} may be read or written by others (mode {mode:03o}); used as it is",
                        path.display()
                    );
                }
            }
        }
        Err(_) => {}
    }
}

#[cfg(not(unix))]
fn create_private(_: &Path) {}

/// `path` as an absolute `file:` URI, its special characters escaped.
fn file_uri(path: &Path) -> String {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut uri = String::from("file:");
    for byte in absolute.to_string_lossy().bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => uri.push(char::from(byte)),
            _ => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri
}

fn open_reader(path: &Path) -> Result<Connection, SqliteJournalError> {
    let opening = |error| SqliteJournalError::opening(path, error);
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(opening)?;
    conn.busy_timeout(schema::BUSY_TIMEOUT).map_err(opening)?;
    Ok(conn)
}

/// Encodes an entry's payload, up to `MAX_PAYLOAD` bytes.
fn encode(entry: &Entry<'_>) -> Result<Vec<u8>, SqliteJournalError> {
    entry.payload_to_vec(MAX_PAYLOAD).map_err(|error| match error {
        CodecError::BufferTooSmall => SqliteJournalError::PayloadTooLarge { limit: MAX_PAYLOAD },
        error => SqliteJournalError::Encode(error),
    })
}

impl Journal for SqliteJournal {
    type Error = SqliteJournalError;

    fn next_id(&self) -> TransactionId {
        TransactionId::new(self.ids.next(|| self.new_epoch()))
    }

    /// Made at random when the file was created (or first opened for
    /// writing by this version), kept in its `tm_meta` table: the same at
    /// every open, and for every process sharing the file.
    fn origin(&self) -> u64 {
        self.origin
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), SqliteJournalError> {
        if let Some(error) = self.cannot_write.get() {
            return Err(error.clone());
        }
        let writer = self.writer.as_ref().ok_or(SqliteJournalError::ReadOnly { cause: None })?;
        let row = Row {
            tx: schema::to_sql(entry.transaction().get()),
            step: entry.step().map_or(-1, i64::from),
            kind: entry.kind().code(),
            durable: entry.is_durable(),
            ends: entry.kind().ends_transaction(),
            payload: encode(entry)?,
            refused: None,
        };
        if row.durable {
            let (reply, answer) = oneshot::channel();
            writer.send(Request::Append(row, Some(reply)))?;
            answer.await
        } else {
            // Counted before it is sent, so a read never misses it.
            let tx = entry.transaction().get();
            writer.pending_lazy.add(tx);
            writer.send(Request::Append(row, None)).inspect_err(|_| writer.pending_lazy.remove(tx))
        }
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, SqliteJournalError> {
        let mut start = match after {
            None => 0,
            Some(after) => match after.get().checked_add(1) {
                Some(start) => start,
                None => return Ok(None),
            },
        };
        self.settle(start..).await?;
        loop {
            let Some((tx, owner)) = self.unfinished_from(start)? else { return Ok(None) };
            let id = TransactionId::new(tx);
            // This journal's own (the core knows which of them are running
            // in this process), or where owners cannot be told apart.
            let Some(owners) = &self.owners else { return Ok(Some(id)) };
            if owner == self.owner {
                return Ok(Some(id));
            }
            if !owners.is_alive(owner)? {
                match &self.writer {
                    // Taken over first, so that no other journal recovers
                    // it at the same time; if another one was quicker, its
                    // row is read again (now owned by that one).
                    Some(writer) if self.cannot_write.get().is_none() => {
                        let (reply, answer) = oneshot::channel();
                        writer.send(Request::Claim { tx: schema::to_sql(tx), from: owner, reply })?;
                        if answer.await? {
                            return Ok(Some(id));
                        }
                        continue;
                    }
                    // A read-only journal lists it (it cannot recover it).
                    _ => return Ok(Some(id)),
                }
            }
            // Running in another journal: left alone.
            match tx.checked_add(1) {
                Some(next) => start = next,
                None => return Ok(None),
            }
        }
    }

    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), SqliteJournalError> {
        self.read_timed(id, &mut |entry, _| visit(entry)).await
    }

    fn decided(error: &SqliteJournalError) -> Option<EntryKind> {
        match error {
            SqliteJournalError::AlreadyDecided { held, .. } => Some(*held),
            _ => None,
        }
    }

    /// Read first (no write, and no fsync, when there is no request, as
    /// nearly always); taken in a write transaction of its own when there
    /// is one.
    async fn take_retry_request(&self, id: TransactionId) -> Result<bool, SqliteJournalError> {
        let tx = schema::to_sql(id.get());
        let requested = self
            .reader()
            .prepare("SELECT retry_requested FROM tm_transactions WHERE tx = ?1")
            .and_then(|mut query| query.query_row([tx], |row| row.get::<_, i64>(0)).optional())
            .map_err(SqliteJournalError::from_sqlite)?;
        match (requested, &self.writer) {
            (Some(1), Some(writer)) if self.cannot_write.get().is_none() => {
                let (reply, answer) = oneshot::channel();
                writer.send(Request::Retry { tx, request: false, reply })?;
                answer.await
            }
            // A read-only journal cannot take it (nor recover anything).
            _ => Ok(false),
        }
    }
}

impl Browse for SqliteJournal {
    async fn next_transaction(
        &self,
        after: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, SqliteJournalError> {
        let start = match after {
            None => 0,
            Some(after) => match after.get().checked_add(1) {
                Some(start) => start,
                None => return Ok(None),
            },
        };
        self.settle(start..).await?;
        let sql = if unfinished_only {
            "SELECT tx FROM tm_transactions WHERE finished = 0 AND tx BETWEEN ?1 AND ?2 ORDER BY tx LIMIT 1"
        } else {
            "SELECT tx FROM tm_transactions WHERE tx BETWEEN ?1 AND ?2 ORDER BY tx LIMIT 1"
        };
        self.first_in(sql, schema::unsigned_ranges(start))
    }

    async fn previous_transaction(
        &self,
        before: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, SqliteJournalError> {
        let end = match before {
            None => u64::MAX,
            Some(before) => match before.get().checked_sub(1) {
                Some(end) => end,
                None => return Ok(None),
            },
        };
        self.settle(..=end).await?;
        let sql = if unfinished_only {
            "SELECT tx FROM tm_transactions WHERE finished = 0 AND tx BETWEEN ?1 AND ?2 ORDER BY tx DESC LIMIT 1"
        } else {
            "SELECT tx FROM tm_transactions WHERE tx BETWEEN ?1 AND ?2 ORDER BY tx DESC LIMIT 1"
        };
        self.first_in(sql, schema::unsigned_ranges_down(end))
    }

    /// Each entry's time is when the batch that wrote it committed, by the
    /// journal's clock ([`with_clock`](SqliteJournal::with_clock)); `None`
    /// for entries written before schema 4.
    async fn read_timed(
        &self,
        id: TransactionId,
        visit: &mut dyn FnMut(StoredEntry<'_>, Option<u64>),
    ) -> Result<(), SqliteJournalError> {
        self.settle(id.get()..=id.get()).await?;
        // Collected first, so that `visit` runs without the lock (it may
        // use the journal itself).
        let entries = {
            let conn = self.reader();
            let sql = if self.times_column {
                "SELECT step, kind, payload, at FROM tm_entries WHERE tx = ?1 ORDER BY seq"
            } else {
                "SELECT step, kind, payload, NULL FROM tm_entries WHERE tx = ?1 ORDER BY seq"
            };
            let mut query = conn.prepare(sql).map_err(SqliteJournalError::from_sqlite)?;
            let rows = query
                .query_map([schema::to_sql(id.get())], |row| {
                    let step = match row.get::<_, i64>(0)? {
                        -1 => None,
                        step => {
                            Some(u32::try_from(step).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, step))?)
                        }
                    };
                    // An unknown kind that fits the format is handed on as
                    // stored: the core makes its transaction stuck.
                    let kind = row.get::<_, i64>(1)?;
                    let kind = u8::try_from(kind).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(1, kind))?;
                    let payload = match row.get_ref(2)? {
                        ValueRef::Blob(bytes) => bytes.to_vec(),
                        other => {
                            return Err(rusqlite::Error::InvalidColumnType(2, "payload".into(), other.data_type()));
                        }
                    };
                    let at = row.get::<_, Option<i64>>(3)?.and_then(|at| u64::try_from(at).ok());
                    Ok((step, kind, payload, at))
                })
                .map_err(SqliteJournalError::from_sqlite)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(SqliteJournalError::from_sqlite)?
        };
        for (step, kind, payload, at) in &entries {
            visit(StoredEntry { step: *step, kind: *kind, payload }, *at);
        }
        Ok(())
    }

    /// The journal (named by the epoch its open took: `journal 7`) that
    /// wrote the transaction's first entry, or whose recovery took it
    /// over; alive while its lock is held (off Unix, and for `:memory:`,
    /// not known). No lease: a gone owner's transactions are taken over by
    /// the next recovery of any journal on the file.
    async fn read_holder(
        &self,
        id: TransactionId,
        visit: &mut dyn FnMut(Holder<'_>),
    ) -> Result<(), SqliteJournalError> {
        self.settle(id.get()..=id.get()).await?;
        let owner = self
            .reader()
            .prepare("SELECT owner FROM tm_transactions WHERE tx = ?1 AND finished = 0")
            .and_then(|mut query| query.query_row([schema::to_sql(id.get())], |row| row.get::<_, i64>(0)).optional())
            .map_err(SqliteJournalError::from_sqlite)?;
        let Some(owner) = owner else { return Ok(()) };
        let alive = match &self.owners {
            Some(owners) => Some(owners.is_alive(owner)?),
            None => None,
        };
        let name = if owner == crate::owner::NOBODY { "nobody".to_owned() } else { format!("journal {owner}") };
        visit(Holder::new(&name, None, alive));
        Ok(())
    }
}

impl SqliteJournal {
    /// The unfinished transaction with the smallest id from `start` up (in
    /// unsigned order), and its owner.
    /// The first transaction `sql` (one id of `tm_transactions` between
    /// `?1` and `?2`) finds in the first of `ranges` that holds one.
    fn first_in(
        &self,
        sql: &str,
        ranges: impl Iterator<Item = (i64, i64)>,
    ) -> Result<Option<TransactionId>, SqliteJournalError> {
        let conn = self.reader();
        let mut query = conn.prepare(sql).map_err(SqliteJournalError::from_sqlite)?;
        for (low, high) in ranges {
            let mut rows = query.query([low, high]).map_err(SqliteJournalError::from_sqlite)?;
            if let Some(row) = rows.next().map_err(SqliteJournalError::from_sqlite)? {
                let tx: i64 = row.get(0).map_err(SqliteJournalError::from_sqlite)?;
                return Ok(Some(TransactionId::new(schema::from_sql(tx))));
            }
        }
        Ok(None)
    }

    fn unfinished_from(&self, start: u64) -> Result<Option<(u64, i64)>, SqliteJournalError> {
        let conn = self.reader();
        let sql = if self.owner_column {
            "SELECT tx, owner FROM tm_transactions WHERE finished = 0 AND tx BETWEEN ?1 AND ?2 ORDER BY tx LIMIT 1"
        } else {
            "SELECT tx, 0 FROM tm_transactions WHERE finished = 0 AND tx BETWEEN ?1 AND ?2 ORDER BY tx LIMIT 1"
        };
        let mut query = conn.prepare(sql).map_err(SqliteJournalError::from_sqlite)?;
        for (low, high) in schema::unsigned_ranges(start) {
            let mut rows = query.query([low, high]).map_err(SqliteJournalError::from_sqlite)?;
            if let Some(row) = rows.next().map_err(SqliteJournalError::from_sqlite)? {
                let tx: i64 = row.get(0).map_err(SqliteJournalError::from_sqlite)?;
                let owner: i64 = row.get(1).map_err(SqliteJournalError::from_sqlite)?;
                return Ok(Some((schema::from_sql(tx), owner)));
            }
        }
        Ok(None)
    }
}

/// Transaction ids `epoch << 32 | counter`, the counter in the low 32 bits
/// of one atomic; when it runs out, a new epoch is taken synchronously
/// (once every 2^32 - 1 ids: one durable write on the thread that hit it).
struct Ids {
    /// The last id handed out (counter 0 at the start of an epoch).
    last: AtomicU64,
    /// Held while a new epoch is taken, so only one thread takes it.
    refill: Mutex<()>,
}

impl Ids {
    fn new(epoch: u32) -> Self {
        Ids { last: AtomicU64::new(u64::from(epoch) << 32), refill: Mutex::new(()) }
    }

    fn next(&self, new_epoch: impl Fn() -> u32) -> u64 {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            if last & u64::from(u32::MAX) == u64::from(u32::MAX) {
                let _refill = self.refill.lock().unwrap_or_else(PoisonError::into_inner);
                // Another thread may have taken the new epoch meanwhile.
                if self.last.load(Ordering::Relaxed) == last {
                    self.last.store(u64::from(new_epoch()) << 32, Ordering::Relaxed);
                }
                last = self.last.load(Ordering::Relaxed);
                continue;
            }
            match self.last.compare_exchange_weak(last, last + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return last + 1,
                Err(now) => last = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ids;

    #[test]
    fn ids_take_a_new_epoch_when_the_counter_runs_out() {
        let ids = Ids::new(7);
        assert_eq!(ids.next(|| unreachable!()), 7 << 32 | 1);
        ids.last.store(7 << 32 | u64::from(u32::MAX - 1), std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ids.next(|| unreachable!()), 7 << 32 | u64::from(u32::MAX));
        assert_eq!(ids.next(|| 9), 9 << 32 | 1);
        assert_eq!(ids.next(|| unreachable!()), 9 << 32 | 2);
    }

    #[test]
    fn ids_of_a_journal_that_cannot_write_are_never_zero() {
        let ids = Ids::new(0);
        assert_eq!(ids.next(|| unreachable!()), 1);
        ids.last.store(u64::from(u32::MAX), std::sync::atomic::Ordering::Relaxed);
        assert_eq!(ids.next(|| 0), 1);
    }
}
