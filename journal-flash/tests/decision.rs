//! One decision per transaction on flash: the first of `Committed` and
//! `Aborted` stays, the other is refused with an error `decided` reads; and
//! a commit whose append reported an error after the write is reported
//! committed by `run`.

use futures_lite::future::block_on;
use transaction_manager::*;
use transaction_manager::{
    journal::{Entry, EntryKind, Journal, Postcard, StoredEntry},
    storage::Fixed,
};
use transaction_manager_flash::{FlashCell, FlashJournal, FlashJournalError, RamFlash};

const PAGE: usize = 512;
const SIZE: usize = 6 * PAGE;
const RECORDS: core::ops::Range<u32> = 0..(4 * PAGE) as u32;
const META: core::ops::Range<u32> = (4 * PAGE) as u32..SIZE as u32;

type Flash<'c> = RamFlash<'c, SIZE, PAGE>;
type Error = <FlashJournal<Flash<'static>, 2> as Journal>::Error;

fn open(cell: &FlashCell<SIZE>) -> FlashJournal<Flash<'_>, 2> {
    block_on(FlashJournal::open(cell.flash::<PAGE>(), RECORDS, META)).unwrap()
}

fn append(journal: &impl Journal<Error = Error>, id: TransactionId, kind: EntryKind) -> Result<(), Error> {
    block_on(journal.append(&Entry::new_raw(id, None, kind, b"")))
}

fn own_kinds(journal: &impl Journal, id: TransactionId) -> Vec<u8> {
    let mut kinds = Vec::new();
    block_on(journal.read(id, &mut |entry: StoredEntry<'_>| {
        if entry.step.is_none() {
            kinds.push(entry.kind);
        }
    }))
    .map_err(|_| "read")
    .unwrap();
    kinds
}

#[test]
fn the_first_decision_stays_and_the_other_is_refused() {
    let cell = FlashCell::<SIZE>::new();
    let journal = open(&cell);
    let (a, b) = (journal.next_id(), journal.next_id());
    append(&journal, a, EntryKind::Begin).unwrap();
    append(&journal, b, EntryKind::Begin).unwrap();
    // `a` commits: its slot is free, its record says `Committed`.
    append(&journal, a, EntryKind::Committed).unwrap();
    let error = append(&journal, a, EntryKind::Aborted).unwrap_err();
    assert_eq!(FlashJournal::<Flash<'_>, 2>::decided(&error), Some(EntryKind::Committed));
    assert_eq!(error.to_string(), format!("{a} is already decided: the journal holds `committed`"));
    assert_eq!(own_kinds(&journal, a), [EntryKind::Committed.code()]);
    // `b` is aborted: it stays unfinished (its rollbacks are owed), and a
    // late `Committed` is refused.
    append(&journal, b, EntryKind::Aborted).unwrap();
    append(&journal, b, EntryKind::Aborted).unwrap();
    let error = append(&journal, b, EntryKind::Committed).unwrap_err();
    assert!(
        matches!(error, FlashJournalError::AlreadyDecided { transaction, held: EntryKind::Aborted } if transaction == b)
    );
    assert_eq!(own_kinds(&journal, b), [EntryKind::Aborted.code()]);
    assert_eq!(block_on(journal.next_unfinished(None)).map_err(|_| "next").unwrap(), Some(b));
    // After a reboot, the same.
    let journal = open(&cell);
    assert_eq!(block_on(journal.next_unfinished(None)).map_err(|_| "next").unwrap(), Some(b));
    let error = append(&journal, b, EntryKind::Committed).unwrap_err();
    assert_eq!(FlashJournal::<Flash<'_>, 2>::decided(&error), Some(EntryKind::Aborted));
    let error = append(&journal, a, EntryKind::Aborted).unwrap_err();
    assert_eq!(FlashJournal::<Flash<'_>, 2>::decided(&error), Some(EntryKind::Committed));
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Undo {
    Delete(String),
}

impl Rollback<Vec<String>> for Undo {
    type Error = String;
    async fn rollback(&mut self, rolled_back: &mut Vec<String>) -> Result<(), String> {
        let Undo::Delete(name) = self;
        rolled_back.push(name.clone());
        Ok(())
    }
}

/// Writes every entry, then reports an error for `Committed` (a flash
/// error reported after the write).
struct FailsAfterCommit<'c>(FlashJournal<Flash<'c>, 2>);

impl Journal for FailsAfterCommit<'_> {
    type Error = Error;

    fn next_id(&self) -> TransactionId {
        self.0.next_id()
    }

    fn origin(&self) -> u64 {
        self.0.origin()
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), Error> {
        self.0.append(entry).await?;
        if entry.kind() == EntryKind::Committed {
            return Err(FlashJournalError::NoFreeSlot);
        }
        Ok(())
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Error> {
        self.0.next_unfinished(after).await
    }

    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Error> {
        self.0.read(id, visit).await
    }

    fn decided(error: &Error) -> Option<EntryKind> {
        FlashJournal::<Flash<'static>, 2>::decided(error)
    }
}

#[test]
fn a_commit_written_but_reported_failed_is_committed() {
    let cell = FlashCell::<SIZE>::new();
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(FailsAfterCommit(open(&cell)), Postcard::<1>);
    let mut rolled_back = Vec::new();
    let committed = clock
        .block_on(manager.transaction("bring-up").fixed::<Undo, 2>().run_with(&mut rolled_back, async |tx| {
            tx.step("rail")
                .execute(|| async { Ok::<_, String>("rail".to_string()) })
                .undo(|n| Undo::Delete(n.clone()))
                .await?;
            Ok::<_, StepError<String>>(7)
        }))
        .expect("the commit is on flash: committed");
    assert_eq!(*committed.value(), 7);
    assert!(rolled_back.is_empty());
    let id = committed.summary().transaction_id();

    // After a reboot: nothing to recover, and a late `Aborted` is refused.
    let journal = open(&cell);
    assert_eq!(own_kinds(&journal, id), [EntryKind::Committed.code()]);
    let error = append(&journal, id, EntryKind::Aborted).unwrap_err();
    assert_eq!(FlashJournal::<Flash<'_>, 2>::decided(&error), Some(EntryKind::Committed));
    let manager = TransactionManager::new(&clock).with_journal(journal, Postcard::<1>);
    let report = clock.block_on(manager.recover::<Undo, Fixed<2>, _>(&mut rolled_back)).unwrap();
    assert_eq!(report.found(), 0, "{report}");
    assert!(rolled_back.is_empty());
}
