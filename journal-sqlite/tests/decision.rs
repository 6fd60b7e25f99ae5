//! One decision per transaction on SQLite: the first of `Committed` and
//! `Aborted` stays, the other is refused with an error `decided` reads; and
//! a commit whose append reported an error after the write is reported
//! committed by `run`.

mod common;

use common::{Read, TempDir, append, block_on, read, unfinished};
use transaction_manager::*;
use transaction_manager::{
    journal::{Entry, EntryKind, Journal, Postcard, StoredEntry},
    storage::Fixed,
};
use transaction_manager_sqlite::{SqliteJournal, SqliteJournalError};

use EntryKind::{Aborted, Begin, Committed, Done};

fn refused(result: Result<(), SqliteJournalError>) -> Option<EntryKind> {
    SqliteJournal::decided(&result.expect_err("a second decision is refused"))
}

#[test]
fn the_first_decision_stays_and_the_other_is_refused() {
    let dir = TempDir::new("decision");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let (a, b) = (journal.next_id(), journal.next_id());
    append(&journal, a, None, Begin, b"op").unwrap();
    append(&journal, a, Some(0), Done, b"undo").unwrap();
    append(&journal, a, None, Committed, b"").unwrap();
    assert_eq!(refused(append(&journal, a, None, Aborted, b"")), Some(Committed));
    // The same decision again is the same entry: not an error.
    append(&journal, a, None, Committed, b"").unwrap();

    append(&journal, b, None, Begin, b"op").unwrap();
    append(&journal, b, None, Aborted, b"").unwrap();
    let error = append(&journal, b, None, Committed, b"").unwrap_err();
    assert!(matches!(error, SqliteJournalError::AlreadyDecided { transaction, held: Aborted } if transaction == b));
    assert_eq!(error.to_string(), format!("{b} is already decided: the journal holds `aborted`"));
    // A refused `Committed` does not end the transaction.
    assert_eq!(unfinished(&journal), [b]);

    // Another journal on the same file (another process) sees the same.
    let other = SqliteJournal::open(dir.file()).unwrap();
    assert_eq!(refused(append(&other, a, None, Aborted, b"")), Some(Committed));
    assert_eq!(refused(append(&other, b, None, Committed, b"")), Some(Aborted));
    assert_eq!(read(&journal, a).unwrap().last(), Some(&Read::new(None, Committed, b"")));
    assert_eq!(read(&journal, b).unwrap().last(), Some(&Read::new(None, Aborted, b"")));
    // Other errors are not a decision.
    assert_eq!(SqliteJournal::decided(&SqliteJournalError::WriterGone), None);
}

#[test]
fn two_racing_decisions_store_exactly_one() {
    let dir = TempDir::new("decision-race");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let other = SqliteJournal::open(dir.file()).unwrap();
    for _ in 0..20 {
        let id = journal.next_id();
        append(&journal, id, None, Begin, b"op").unwrap();
        let (commit, abort) = std::thread::scope(|s| {
            let commit = s.spawn(|| append(&journal, id, None, Committed, b""));
            let abort = s.spawn(|| append(&other, id, None, Aborted, b""));
            (commit.join().unwrap(), abort.join().unwrap())
        });
        assert!(commit.is_ok() != abort.is_ok(), "{commit:?} {abort:?}");
        let decisions = read(&journal, id)
            .unwrap()
            .into_iter()
            .filter(|entry| entry.kind == Committed.code() || entry.kind == Aborted.code())
            .count();
        assert_eq!(decisions, 1);
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Undo {
    Delete(u32),
}

impl Rollback<Vec<u32>> for Undo {
    type Error = String;
    async fn rollback(&mut self, rolled_back: &mut Vec<u32>) -> Result<(), String> {
        let Undo::Delete(n) = self;
        rolled_back.push(*n);
        Ok(())
    }
}

/// Writes every entry, then reports an error for `Committed` (a disk
/// error after the write).
struct FailsAfterCommit(SqliteJournal);

impl Journal for FailsAfterCommit {
    type Error = SqliteJournalError;

    fn next_id(&self) -> TransactionId {
        self.0.next_id()
    }

    fn origin(&self) -> u64 {
        self.0.origin()
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), SqliteJournalError> {
        self.0.append(entry).await?;
        if entry.kind() == Committed {
            return Err(SqliteJournalError::WriterGone);
        }
        Ok(())
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error> {
        self.0.next_unfinished(after).await
    }

    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error> {
        self.0.read(id, visit).await
    }

    fn decided(error: &SqliteJournalError) -> Option<EntryKind> {
        SqliteJournal::decided(error)
    }
}

#[test]
fn a_commit_written_but_reported_failed_is_committed() {
    let dir = TempDir::new("decision-engine");
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock)
        .with_journal(FailsAfterCommit(SqliteJournal::open(dir.file()).unwrap()), Postcard::<1>);
    let mut rolled_back = Vec::new();
    let committed =
        block_on(manager.transaction("provision").fixed::<Undo, 2>().run_with(&mut rolled_back, async |tx| {
            tx.step("a").execute(|| async { Ok::<_, String>(1) }).undo(|n| Undo::Delete(*n)).await?;
            Ok::<_, StepError<String>>(7)
        }))
        .expect("the commit is in the journal: committed");
    assert_eq!(*committed.value(), 7);
    assert!(rolled_back.is_empty());
    let id = committed.summary().transaction_id();

    let journal = SqliteJournal::open(dir.file()).unwrap();
    let kinds: Vec<u8> = read(&journal, id).unwrap().iter().map(|entry| entry.kind).collect();
    assert_eq!(kinds, [Begin.code(), Done.code(), Committed.code()]);
    // A later `Aborted` is refused; recovery finds nothing to do.
    assert_eq!(refused(append(&journal, id, None, Aborted, b"")), Some(Committed));
    let manager = TransactionManager::new(&clock).with_journal(journal, Postcard::<1>);
    let report = block_on(manager.recover::<Undo, Fixed<2>, _>(&mut rolled_back)).unwrap();
    assert_eq!(report.found(), 0, "{report}");
    assert!(rolled_back.is_empty());
}
