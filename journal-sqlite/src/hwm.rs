//! The high-water mark: the sequence number of the last entry committed,
//! kept in a small file beside the journal (`<journal>-hwm`), apart from
//! the WAL, written by the writer thread after each commit (not fsynced:
//! see [`Mark::set`]).
//! At open, a database whose last entry is below the mark lost entries it
//! had committed (SQLite reads a damaged WAL frame as the end of its log
//! and drops every later commit): [`SqliteJournalError::Damaged`].
//!
//! The mark only ever trails the truth (written after the commit), so it
//! never refuses a sound file; two processes sharing the file may write it
//! out of order, which only lowers it (less is detected, nothing is
//! refused wrongly).

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::{SqliteJournalError, schema};

/// The mark file of the journal at `path`, or `None` for `:memory:` and
/// `file:` URIs.
pub(crate) fn path_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?;
    if path.as_os_str() == ":memory:" || path.to_string_lossy().starts_with("file:") {
        return None;
    }
    let mut name = name.to_owned();
    name.push("-hwm");
    Some(path.with_file_name(name))
}

/// The last entry's sequence number (0 when there is none), counting
/// those a prune deleted ([`schema::LAST_SEQ`]).
pub(crate) fn last_seq(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row(schema::LAST_SEQ, [], |row| row.get::<_, i64>(0)).map(|seq| seq.max(0) as u64)
}

/// Refuses a database whose last entry is below the mark.
pub(crate) fn check(mark: &Path, conn: &Connection) -> Result<(), SqliteJournalError> {
    let Ok(bytes) = std::fs::read(mark) else { return Ok(()) };
    let Ok(bytes) = <[u8; 8]>::try_from(bytes.as_slice()) else { return Ok(()) };
    let marked = u64::from_le_bytes(bytes);
    let found = last_seq(conn).map_err(SqliteJournalError::from_sqlite)?;
    if found < marked {
        return Err(SqliteJournalError::Damaged { marked, found });
    }
    Ok(())
}

/// The writer's handle on the mark file.
pub(crate) struct Mark {
    file: File,
    written: u64,
}

impl Mark {
    /// Opens (creates) the mark file for writing.
    pub(crate) fn open(mark: &Path) -> std::io::Result<Mark> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        Ok(Mark { file: options.open(mark)?, written: 0 })
    }

    /// Marks `seq` as committed: written in place, not fsynced. An fsync
    /// here doubled the cost of a durable append (a second fsync per
    /// commit: BENCHMARKS-HISTORY.md); unsynced, the mark survives any crash of
    /// the process (the kernel writes it back) and after a power cut may
    /// trail by the commits of the last few seconds, which are then not
    /// checked. It never runs ahead of what was committed.
    pub(crate) fn set(&mut self, seq: u64) -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        if seq <= self.written {
            return Ok(());
        }
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&seq.to_le_bytes())?;
        self.written = seq;
        Ok(())
    }
}
