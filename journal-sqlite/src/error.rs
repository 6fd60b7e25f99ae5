//! What can go wrong with a SQLite journal, as a typed error.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::ErrorCode;
use transaction_manager_core::backend::{CodecError, EntryKind, TransactionId};

/// Why a [`SqliteJournal`](crate::SqliteJournal) call failed.
///
/// ```
/// use transaction_manager_sqlite::SqliteJournalError;
/// let error = SqliteJournalError::NewerSchema { found: 3, known: 2 };
/// assert_eq!(
///     error.to_string(),
///     "the journal has schema 3, written by a newer version of transaction-manager-sqlite (this one reads up to 2)"
/// );
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SqliteJournalError {
    /// The journal file could not be opened or created (a missing
    /// directory, no permission, not a SQLite file, …).
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        cause: SqliteCause,
    },
    /// The file was written by a newer version of this crate: its schema
    /// number is above the one this version knows. It is refused, never
    /// guessed at.
    NewerSchema {
        /// The schema number in the file.
        found: i64,
        /// The newest schema this version reads.
        known: i64,
    },
    /// The journal cannot be written: the file (or its directory, where
    /// SQLite keeps its `-wal` and `-shm` files) is read-only.
    ReadOnly {
        /// What SQLite said, if the refusal came from SQLite.
        cause: Option<SqliteCause>,
    },
    /// The disk (or the file system's quota) is full: the entries of the
    /// failed write were not stored.
    DiskFull {
        /// What SQLite said.
        cause: SqliteCause,
    },
    /// The file is damaged: SQLite cannot read a page, or a row does not
    /// hold what this crate writes.
    Corrupt {
        /// What SQLite said.
        cause: SqliteCause,
    },
    /// The writer thread is gone (it panicked), so nothing more can be
    /// written. Open the journal again.
    WriterGone,
    /// An entry's payload is larger than [`MAX_PAYLOAD`](crate::MAX_PAYLOAD).
    PayloadTooLarge {
        /// The largest payload the journal stores, in bytes.
        limit: usize,
    },
    /// The entry's payload could not be encoded (its undo record's codec
    /// failed).
    Encode(CodecError),
    /// Every transaction id of this file is used (2^32 epochs of 2^32 ids
    /// each): start a new journal file.
    IdsExhausted,
    /// Whether another journal on the file is alive could not be told:
    /// its lock file (in the `<journal>.owners` directory beside the
    /// journal) could not be created, opened or locked. Never guessed at:
    /// an owner that cannot be checked is not recovered.
    Owner {
        /// The lock file or directory.
        path: PathBuf,
        /// What the system said.
        cause: Arc<std::io::Error>,
    },
    /// Entries the journal committed are missing: the database's last
    /// entry is below the high-water mark kept beside it (`<journal>-hwm`,
    /// written after each commit). SQLite reads a damaged WAL frame as the
    /// end of its log and drops every later commit without a word; this is
    /// that loss, caught. The file is refused at every open until an
    /// operator restores it (or, accepting the loss, deletes the `-hwm`
    /// file).
    Damaged {
        /// The sequence number of the last entry committed, as marked.
        marked: u64,
        /// The last entry the database holds.
        found: u64,
    },
    /// The high-water mark file beside the journal (`<journal>-hwm`)
    /// could not be opened for writing.
    HighWaterMark {
        /// The mark file.
        path: PathBuf,
        /// What the system said.
        cause: Arc<std::io::Error>,
    },
    /// A decision (`Committed` or `Aborted`) was refused: the transaction
    /// already holds the other one, and the first decision stays. Nothing
    /// was written. [`Journal::decided`](transaction_manager_core::backend::Journal::decided)
    /// returns `held`.
    AlreadyDecided {
        /// The transaction.
        transaction: TransactionId,
        /// The decision the journal holds.
        held: EntryKind,
    },
    /// The file is a SQLite database without a journal in it (opened
    /// with [`open_read_only`](crate::SqliteJournal::open_read_only), which
    /// creates nothing).
    NotAJournal {
        /// The file.
        path: PathBuf,
    },
    /// Another SQLite failure (a busy timeout, an I/O error, …).
    Sqlite(SqliteCause),
}

impl SqliteJournalError {
    /// Sorts a SQLite error into the variant that says what it means.
    pub(crate) fn from_sqlite(error: rusqlite::Error) -> Self {
        let cause = SqliteCause(Arc::new(error));
        match cause.0.sqlite_error_code() {
            Some(ErrorCode::ReadOnly) => SqliteJournalError::ReadOnly { cause: Some(cause) },
            Some(ErrorCode::DiskFull) => SqliteJournalError::DiskFull { cause },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => SqliteJournalError::Corrupt { cause },
            _ => match &*cause.0 {
                // A column that does not hold what this crate writes.
                rusqlite::Error::InvalidColumnType(..)
                | rusqlite::Error::IntegralValueOutOfRange(..)
                | rusqlite::Error::FromSqlConversionFailure(..) => SqliteJournalError::Corrupt { cause },
                _ => SqliteJournalError::Sqlite(cause),
            },
        }
    }

    /// Like [`from_sqlite`](Self::from_sqlite), but a failure that is not
    /// one of the specific kinds says which file could not be opened.
    pub(crate) fn opening(path: &std::path::Path, error: rusqlite::Error) -> Self {
        match Self::from_sqlite(error) {
            SqliteJournalError::Sqlite(cause) => SqliteJournalError::Open { path: path.to_owned(), cause },
            specific => specific,
        }
    }
}

impl From<rusqlite::Error> for SqliteJournalError {
    fn from(error: rusqlite::Error) -> Self {
        SqliteJournalError::from_sqlite(error)
    }
}

impl fmt::Display for SqliteJournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqliteJournalError::Open { path, cause } => {
                write!(f, "cannot open or create the journal {}: {cause}", path.display())
            }
            SqliteJournalError::NewerSchema { found, known } => write!(
                f,
                "the journal has schema {found}, written by a newer version of transaction-manager-sqlite \
                 (this one reads up to {known})"
            ),
            SqliteJournalError::ReadOnly { cause: Some(cause) } => write!(f, "the journal is read-only: {cause}"),
            SqliteJournalError::ReadOnly { cause: None } => f.write_str("the journal is read-only"),
            SqliteJournalError::DiskFull { cause } => write!(f, "the disk is full: {cause}"),
            SqliteJournalError::Corrupt { cause } => write!(f, "the journal file is corrupt: {cause}"),
            SqliteJournalError::WriterGone => f.write_str("the journal's writer thread is gone"),
            SqliteJournalError::PayloadTooLarge { limit } => {
                write!(f, "the entry's payload is larger than the journal's limit of {limit} bytes")
            }
            SqliteJournalError::Encode(error) => write!(f, "the entry's payload cannot be encoded: {error}"),
            SqliteJournalError::IdsExhausted => f.write_str("every transaction id of the journal file is used"),
            SqliteJournalError::Owner { path, cause } => {
                write!(f, "cannot tell which journals on the file are alive: {}: {cause}", path.display())
            }
            SqliteJournalError::Damaged { marked, found } => write!(
                f,
                "the journal is damaged: entries were lost (its last entry is #{found}, \
                 but #{marked} was committed; a damaged WAL?)"
            ),
            SqliteJournalError::HighWaterMark { path, cause } => {
                write!(f, "cannot open the journal's high-water mark {}: {cause}", path.display())
            }
            SqliteJournalError::AlreadyDecided { transaction, held } => {
                write!(f, "{transaction} is already decided: the journal holds `{held}`")
            }
            SqliteJournalError::NotAJournal { path } => {
                write!(f, "{} is a SQLite database, but holds no transaction-manager journal", path.display())
            }
            SqliteJournalError::Sqlite(cause) => write!(f, "SQLite: {cause}"),
        }
    }
}

impl std::error::Error for SqliteJournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SqliteJournalError::Open { cause, .. }
            | SqliteJournalError::ReadOnly { cause: Some(cause) }
            | SqliteJournalError::DiskFull { cause }
            | SqliteJournalError::Corrupt { cause }
            | SqliteJournalError::Sqlite(cause) => Some(cause),
            SqliteJournalError::Encode(error) => Some(error),
            SqliteJournalError::Owner { cause, .. } | SqliteJournalError::HighWaterMark { cause, .. } => Some(&**cause),
            _ => None,
        }
    }
}

/// The SQLite error behind a [`SqliteJournalError`]: its message, and its
/// result code for those who need it. Cloning it is cheap (one error is
/// shared by every entry of a failed batch).
///
/// ```
/// use transaction_manager_sqlite::{SqliteJournal, SqliteJournalError};
/// let missing = std::env::temp_dir().join("no-such-dir-for-tm-doctest").join("journal.db");
/// match SqliteJournal::open(&missing) {
///     Err(SqliteJournalError::Open { cause, .. }) => assert_eq!(cause.code(), Some(14)), // SQLITE_CANTOPEN
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteCause(Arc<rusqlite::Error>);

impl SqliteCause {
    /// SQLite's primary result code (`SQLITE_FULL` is 13, …), if the error
    /// came from SQLite itself rather than from reading a row.
    pub fn code(&self) -> Option<i32> {
        match &*self.0 {
            rusqlite::Error::SqliteFailure(error, _) => Some(error.extended_code & 0xff),
            _ => None,
        }
    }

    /// Whether SQLite answered `SQLITE_BUSY` or `SQLITE_LOCKED`.
    pub(crate) fn is_busy(&self) -> bool {
        is_busy(&self.0)
    }
}

/// Whether `error` is SQLite's `SQLITE_BUSY` or `SQLITE_LOCKED`.
pub(crate) fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
}

impl fmt::Display for SqliteCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

// Transparent: the message is SQLite's own, so the source is its source.
impl std::error::Error for SqliteCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}
