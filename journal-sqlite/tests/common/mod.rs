//! Shared by the tests: a unique temporary directory removed on drop, and
//! the entries they append.

#![allow(dead_code)] // Each test file uses a part.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use transaction_manager::{
    TransactionId,
    journal::{Entry, EntryKind, Journal, StoredEntry},
};
use transaction_manager_sqlite::{SqliteJournal, SqliteJournalError};

/// A fresh directory under the system's temp dir, removed with everything
/// in it when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!(
            "tm-sqlite-{name}-{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).expect("create the temp dir");
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self) -> PathBuf {
        self.0.join("journal.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

/// Appends an entry with `payload`.
pub fn append(
    journal: &SqliteJournal,
    id: TransactionId,
    step: Option<u32>,
    kind: EntryKind,
    payload: &[u8],
) -> Result<(), SqliteJournalError> {
    block_on(journal.append(&Entry::new_raw(id, step, kind, payload)))
}

/// An entry as read back, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    pub step: Option<u32>,
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl Read {
    pub fn new(step: Option<u32>, kind: EntryKind, payload: &[u8]) -> Self {
        Read { step, kind: kind.code(), payload: payload.to_vec() }
    }
}

pub fn read(journal: &SqliteJournal, id: TransactionId) -> Result<Vec<Read>, SqliteJournalError> {
    let mut out = Vec::new();
    block_on(journal.read(id, &mut |entry: StoredEntry<'_>| {
        out.push(Read { step: entry.step, kind: entry.kind, payload: entry.payload.to_vec() })
    }))?;
    Ok(out)
}

/// Every unfinished transaction, in id order.
pub fn unfinished(journal: &SqliteJournal) -> Vec<TransactionId> {
    let mut out = Vec::new();
    let mut after = None;
    while let Some(id) = block_on(journal.next_unfinished(after)).expect("next_unfinished") {
        out.push(id);
        after = Some(id);
    }
    out
}
