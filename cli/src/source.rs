//! Where the journal is: a SQLite file (opened read-only for reading
//! commands, and as one more writer for `resolve`, `retry` and `prune`), or a
//! Postgres database (connected as one more instance, which runs nothing,
//! claims nothing and prunes nothing by itself).

use std::path::{Path, PathBuf};

use transaction_manager::TransactionId;
use transaction_manager::journal::inspect::{self, Filter, History};
use transaction_manager::journal::{Entry, EntryKind, Journal, JournalFailure, Pruned, Retention};
use transaction_manager_postgres::{PostgresJournal, PostgresOptions};
use transaction_manager_sqlite::{SqliteJournal, SqliteJournalError};

use futures_lite::future::block_on;

/// The journal a command names.
pub(crate) enum Target {
    Sqlite(PathBuf),
    Postgres { url: String, schema: Option<String> },
}

pub(crate) enum Source {
    Sqlite(SqliteJournal),
    /// The journal first: it is dropped before its runtime.
    Postgres(PostgresJournal, tokio::runtime::Runtime),
}

impl Source {
    /// Opens the journal to read it: a SQLite file read-only (creates
    /// nothing, writes nothing).
    pub(crate) fn read(target: &Target) -> Result<Self, String> {
        match target {
            Target::Sqlite(path) => Ok(Source::Sqlite(read_sqlite(path)?)),
            Target::Postgres { url, schema } => connect(url, schema.as_deref()),
        }
    }

    /// Opens the journal to write to it, as one more journal (it deletes
    /// nothing by itself: retention `KeepAll`). Refuses a missing SQLite
    /// file or one that holds no journal, rather than making one.
    pub(crate) fn write(target: &Target) -> Result<Self, String> {
        match target {
            Target::Sqlite(path) => {
                drop(read_sqlite(path)?);
                let journal = SqliteJournal::open(path).map_err(|error| describe(path, &error))?;
                if journal.is_read_only() {
                    return Err(format!("{}: the file is read-only", path.display()));
                }
                Ok(Source::Sqlite(journal.with_retention(Retention::KeepAll)))
            }
            Target::Postgres { url, schema } => connect(url, schema.as_deref()),
        }
    }

    pub(crate) fn list(&self, filter: &Filter) -> Result<Vec<History>, String> {
        let found = match self {
            Source::Sqlite(journal) => block_on(inspect::list(journal, filter)),
            Source::Postgres(journal, runtime) => runtime.block_on(inspect::list(journal, filter)),
        };
        found.map_err(|error: JournalFailure| error.to_string())
    }

    pub(crate) fn history(&self, id: TransactionId) -> Result<Option<History>, String> {
        let found = match self {
            Source::Sqlite(journal) => block_on(inspect::history(journal, id)),
            Source::Postgres(journal, runtime) => runtime.block_on(inspect::history(journal, id)),
        };
        found.map_err(|error: JournalFailure| error.to_string())
    }

    /// Writes the transaction's `Resolved` entry, with `reason`, durably.
    pub(crate) fn resolve(&self, id: TransactionId, reason: &str) -> Result<(), String> {
        let entry = Entry::new_raw(id, None, EntryKind::Resolved, reason.as_bytes());
        let failed = |error: &dyn std::fmt::Display| format!("writing the resolution of {id} failed: {error}");
        match self {
            Source::Sqlite(journal) => block_on(journal.append(&entry)).map_err(|error| failed(&error)),
            Source::Postgres(journal, runtime) => {
                runtime.block_on(journal.append(&entry)).map_err(|error| failed(&error))
            }
        }
    }

    /// Asks the next recovery to try the transaction now; `false` if it
    /// is not (or no longer) unfinished.
    pub(crate) fn request_retry(&self, id: TransactionId) -> Result<bool, String> {
        let failed = |error: &dyn std::fmt::Display| format!("writing the retry request of {id} failed: {error}");
        match self {
            Source::Sqlite(journal) => block_on(journal.request_retry(id)).map_err(|error| failed(&error)),
            Source::Postgres(journal, runtime) => {
                runtime.block_on(journal.request_retry(id)).map_err(|error| failed(&error))
            }
        }
    }

    pub(crate) fn prune(&self, retention: Retention) -> Result<Pruned, String> {
        match self {
            Source::Sqlite(journal) => block_on(journal.prune(retention)).map_err(|error| error.to_string()),
            Source::Postgres(journal, runtime) => {
                runtime.block_on(journal.prune(retention)).map_err(|error| error.to_string())
            }
        }
        .map_err(|error| format!("pruning failed: {error}"))
    }
}

fn read_sqlite(path: &Path) -> Result<SqliteJournal, String> {
    if !path.exists() {
        return Err(format!("{}: no such file", path.display()));
    }
    SqliteJournal::open_read_only(path).map_err(|error| describe(path, &error))
}

/// Connects as one more instance: no migrations (a newer or older schema
/// is an error, never changed), no pruning task, one connection of each
/// kind.
fn connect(url: &str, schema: Option<&str>) -> Result<Source, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a runtime: {error}"))?;
    let mut options = PostgresOptions::new()
        .migrate(false)
        .retention(Retention::KeepAll)
        .owner(format!("tmctl-{}", std::process::id()))
        .durable_connections(1)
        .lazy_connections(1);
    if let Some(schema) = schema {
        options = options.schema(schema);
    }
    let journal = runtime.block_on(PostgresJournal::connect(url, options)).map_err(|error| error.to_string())?;
    Ok(Source::Postgres(journal, runtime))
}

/// One line that says what is wrong with the file.
fn describe(path: &Path, error: &SqliteJournalError) -> String {
    match error {
        SqliteJournalError::Corrupt { .. } => {
            format!("{}: not a journal: the file is not a SQLite database, or it is damaged ({error})", path.display())
        }
        SqliteJournalError::NotAJournal { .. } | SqliteJournalError::Open { .. } => error.to_string(),
        other => format!("{}: {other}", path.display()),
    }
}
