//! Where the journal is: a SQLite file, opened read-only for reading
//! commands and as one more writer for `resolve` and `prune`.

use std::path::Path;

use transaction_manager::TransactionId;
use transaction_manager::journal::inspect::{self, Filter, History};
use transaction_manager::journal::{Entry, EntryKind, Journal, Retention};
use transaction_manager_sqlite::{Pruned, SqliteJournal, SqliteJournalError};

use futures_lite::future::block_on;

pub(crate) struct Source {
    journal: SqliteJournal,
}

impl Source {
    /// Opens `path` read-only: creates nothing, writes nothing.
    pub(crate) fn read(path: &Path) -> Result<Self, String> {
        if !path.exists() {
            return Err(format!("{}: no such file", path.display()));
        }
        let journal = SqliteJournal::open_read_only(path).map_err(|error| describe(path, &error))?;
        Ok(Source { journal })
    }

    /// Opens `path` for writing, as one more journal on the file (it
    /// deletes nothing by itself: retention `KeepAll`). Refuses a missing
    /// file or one that holds no journal, rather than making one.
    pub(crate) fn write(path: &Path) -> Result<Self, String> {
        drop(Self::read(path)?);
        let journal = SqliteJournal::open(path).map_err(|error| describe(path, &error))?;
        if journal.is_read_only() {
            return Err(format!("{}: the file is read-only", path.display()));
        }
        Ok(Source { journal: journal.with_retention(Retention::KeepAll) })
    }

    pub(crate) fn list(&self, filter: &Filter) -> Result<Vec<History>, String> {
        block_on(inspect::list(&self.journal, filter)).map_err(|error| error.to_string())
    }

    pub(crate) fn history(&self, id: TransactionId) -> Result<Option<History>, String> {
        block_on(inspect::history(&self.journal, id)).map_err(|error| error.to_string())
    }

    /// Writes the transaction's `Resolved` entry, with `reason`, durably.
    pub(crate) fn resolve(&self, id: TransactionId, reason: &str) -> Result<(), String> {
        block_on(self.journal.append(&Entry::new_raw(id, None, EntryKind::Resolved, reason.as_bytes())))
            .map_err(|error| format!("writing the resolution of {id} failed: {error}"))
    }

    pub(crate) fn prune(&self, retention: Retention) -> Result<Pruned, String> {
        block_on(self.journal.prune(retention)).map_err(|error| format!("pruning failed: {error}"))
    }
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
