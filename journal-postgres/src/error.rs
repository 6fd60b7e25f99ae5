//! What can go wrong with a Postgres journal, as a typed error.

use std::fmt;
use std::sync::Arc;

use transaction_manager_core::backend::{CodecError, EntryKind, TransactionId};

/// Why a [`PostgresJournal`](crate::PostgresJournal) call failed.
///
/// ```
/// use transaction_manager::TransactionId;
/// use transaction_manager_postgres::PostgresJournalError;
/// let error = PostgresJournalError::Fenced { transaction: TransactionId::new(7) };
/// assert_eq!(
///     error.to_string(),
///     "tx-7 is no longer ours: another instance took it over after our lease expired (fenced)"
/// );
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum PostgresJournalError {
    /// The database could not be reached at connect time (it is down, the
    /// address or the credentials are wrong).
    Connect(PostgresCause),
    /// The connection string or the TLS settings cannot be used: an
    /// unknown key, a bad `sslmode`, a certificate file that cannot be
    /// read, … The reason never holds a value of the connection string (a
    /// mistyped quote can put part of a password anywhere): keys, file
    /// paths and what is wrong only.
    InvalidConfig {
        /// What is wrong.
        reason: String,
    },
    /// TLS was required and the server's certificate was refused
    /// (`sslmode=verify-ca` or `verify-full`, or a root certificate given):
    /// not signed by the root certificate, or not made for the host name
    /// connected to.
    Certificate {
        /// Why it was refused.
        problem: CertificateProblem,
        /// The handshake's error.
        cause: PostgresCause,
    },
    /// The database's journal tables are missing or older than this
    /// version of the crate, and the journal was told not to migrate them
    /// ([`PostgresOptions::migrate`](crate::PostgresOptions::migrate)): run
    /// [`PostgresJournal::migrate`](crate::PostgresJournal::migrate) with
    /// the owner role first.
    NotMigrated {
        /// The schema number in the database (0: no tables).
        found: i64,
        /// The schema this version needs.
        needed: i64,
    },
    /// The connection was lost (the server went away or ended the
    /// session). The journal reconnects at its next call. The entry may
    /// have been written all the same, if the statement reached the server
    /// before the connection went: the engine settles that for a
    /// transaction's decision (it appends `Aborted`, which is refused as
    /// [`AlreadyDecided`](Self::AlreadyDecided) if `Committed` is there).
    ConnectionLost(PostgresCause),
    /// The database holds a journal schema newer than this version of the
    /// crate knows. It is refused, never guessed at.
    NewerSchema {
        /// The schema number in the database.
        found: i64,
        /// The newest schema this version reads.
        known: i64,
    },
    /// The transaction belongs to another instance now: this instance's
    /// lease expired and another one claimed it (bumping its generation),
    /// or this instance never owned it. Nothing was written.
    Fenced {
        /// The transaction.
        transaction: TransactionId,
    },
    /// An operator tried to resolve a transaction the journal does not
    /// hold.
    NotFound {
        /// The transaction.
        transaction: TransactionId,
    },
    /// A row does not hold what this crate writes.
    Corrupt {
        /// What is wrong.
        what: &'static str,
    },
    /// An entry's payload is larger than [`MAX_PAYLOAD`](crate::MAX_PAYLOAD).
    PayloadTooLarge {
        /// The largest payload the journal stores, in bytes.
        limit: usize,
    },
    /// The entry's payload could not be encoded (its undo record's codec
    /// failed).
    Encode(CodecError),
    /// Every transaction id epoch is used (2^31 epochs of 2^32 ids).
    IdsExhausted,
    /// A decision (`Committed` or `Aborted`) was refused: the transaction
    /// already holds the other one, and the first decision stays (a unique
    /// index). Nothing was written.
    /// [`Journal::decided`](transaction_manager_core::backend::Journal::decided)
    /// returns `held`.
    AlreadyDecided {
        /// The transaction.
        transaction: TransactionId,
        /// The decision the journal holds.
        held: EntryKind,
    },
    /// Another Postgres failure (a statement timeout, a constraint, …).
    Postgres(PostgresCause),
}

/// Why the server's certificate was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// It is not signed by the root certificate given (or is self-signed).
    NotTrusted,
    /// It is not made for the host name connected to (`verify-full`).
    WrongHost,
    /// Expired, not yet valid, revoked, unreadable, …
    Other,
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertificateProblem::NotTrusted => "it is not signed by the root certificate",
            CertificateProblem::WrongHost => "it is not made for the host name connected to",
            CertificateProblem::Other => "it is not valid",
        })
    }
}

impl PostgresJournalError {
    /// A connect's error: a refused certificate sorted out, the rest as
    /// [`Connect`](Self::Connect).
    pub(crate) fn connecting(error: tokio_postgres::Error) -> Self {
        if let Some(problem) = certificate_problem(&error) {
            return PostgresJournalError::Certificate { problem, cause: PostgresCause(Arc::new(error)) };
        }
        match PostgresJournalError::from_pg(error) {
            PostgresJournalError::ConnectionLost(cause) | PostgresJournalError::Postgres(cause) => {
                PostgresJournalError::Connect(cause)
            }
            other => other,
        }
    }

    /// Sorts a client error into the variant that says what it means.
    pub(crate) fn from_pg(error: tokio_postgres::Error) -> Self {
        let lost = error.is_closed()
            || error.as_db_error().is_some_and(|db| {
                // admin_shutdown, crash_shutdown, cannot_connect_now
                matches!(db.code().code(), "57P01" | "57P02" | "57P03")
            })
            || (error.as_db_error().is_none() && error.code().is_none() && is_io(&error));
        let cause = PostgresCause(Arc::new(error));
        if lost { PostgresJournalError::ConnectionLost(cause) } else { PostgresJournalError::Postgres(cause) }
    }

    /// Whether the connection it came from is unusable (reconnect).
    pub(crate) fn is_connection_lost(&self) -> bool {
        matches!(self, PostgresJournalError::ConnectionLost(_))
    }

    /// Whether a decision's insert was refused by the index that keeps one
    /// decision per transaction.
    pub(crate) fn is_second_decision(&self) -> bool {
        let PostgresJournalError::Postgres(cause) = self else { return false };
        cause
            .0
            .as_db_error()
            .is_some_and(|db| db.code().code() == "23505" && db.constraint() == Some(crate::schema::ONE_DECISION))
    }
}

/// The rustls certificate error in `error`'s sources (tokio-rustls puts it
/// inside an `io::Error`, whose `source` skips it: `get_ref` does not).
fn certificate_problem(error: &tokio_postgres::Error) -> Option<CertificateProblem> {
    use rustls::CertificateError as E;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let tls = cause
            .downcast_ref::<rustls::Error>()
            .or_else(|| cause.downcast_ref::<std::io::Error>()?.get_ref()?.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(certificate)) = tls {
            return Some(match certificate {
                E::UnknownIssuer | E::BadSignature | E::UnhandledCriticalExtension => CertificateProblem::NotTrusted,
                E::NotValidForName | E::NotValidForNameContext { .. } => CertificateProblem::WrongHost,
                _ => CertificateProblem::Other,
            });
        }
        source = cause.source();
    }
    None
}

fn is_io(error: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

impl fmt::Display for PostgresJournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PostgresJournalError::Connect(cause) => write!(f, "cannot connect to the journal's database: {cause}"),
            PostgresJournalError::InvalidConfig { reason } => {
                write!(f, "the journal's connection settings are invalid: {reason}")
            }
            PostgresJournalError::Certificate { problem, cause } => {
                write!(f, "the database server's certificate is refused: {problem} ({cause})")
            }
            PostgresJournalError::NotMigrated { found, needed } => write!(
                f,
                "the journal's tables are at schema {found}, this version needs {needed}, and migrations are off \
                 (run PostgresJournal::migrate as the tables' owner)"
            ),
            PostgresJournalError::ConnectionLost(cause) => {
                write!(f, "the connection to the journal's database was lost: {cause}")
            }
            PostgresJournalError::NewerSchema { found, known } => write!(
                f,
                "the journal has schema {found}, written by a newer version of transaction-manager-postgres \
                 (this one reads up to {known})"
            ),
            PostgresJournalError::Fenced { transaction } => write!(
                f,
                "{transaction} is no longer ours: another instance took it over after our lease expired (fenced)"
            ),
            PostgresJournalError::NotFound { transaction } => write!(f, "{transaction} is not in the journal"),
            PostgresJournalError::Corrupt { what } => write!(f, "the journal is corrupt: {what}"),
            PostgresJournalError::PayloadTooLarge { limit } => {
                write!(f, "the entry's payload is larger than the journal's limit of {limit} bytes")
            }
            PostgresJournalError::Encode(error) => write!(f, "the entry's payload cannot be encoded: {error}"),
            PostgresJournalError::IdsExhausted => f.write_str("every transaction id epoch of the journal is used"),
            PostgresJournalError::AlreadyDecided { transaction, held } => {
                write!(f, "{transaction} is already decided: the journal holds `{held}`")
            }
            PostgresJournalError::Postgres(cause) => write!(f, "Postgres: {cause}"),
        }
    }
}

impl std::error::Error for PostgresJournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PostgresJournalError::Connect(cause)
            | PostgresJournalError::ConnectionLost(cause)
            | PostgresJournalError::Postgres(cause)
            | PostgresJournalError::Certificate { cause, .. } => Some(cause),
            PostgresJournalError::Encode(error) => Some(error),
            _ => None,
        }
    }
}

/// The client error behind a [`PostgresJournalError`]: its message, and
/// the server's SQLSTATE when the server sent one. Cloning it is cheap.
#[derive(Clone, Debug)]
pub struct PostgresCause(Arc<tokio_postgres::Error>);

impl PostgresCause {
    /// The server's SQLSTATE code (`"57P01"`, …), if the server sent one.
    ///
    /// ```no_run
    /// # fn check(cause: &transaction_manager_postgres::PostgresCause) {
    /// if cause.sqlstate() == Some("57014") { /* statement timeout */ }
    /// # }
    /// ```
    pub fn sqlstate(&self) -> Option<&str> {
        self.0.code().map(|code| code.code())
    }
}

impl fmt::Display for PostgresCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)?;
        // The client's own text is terse ("db error"): the server's says why.
        if let Some(db) = self.0.as_db_error() {
            write!(f, ": {}", db.message())?;
        } else if let Some(source) = std::error::Error::source(&*self.0) {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PostgresCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&*self.0)
    }
}
