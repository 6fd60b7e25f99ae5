//! A damaged WAL frame: SQLite takes the first bad frame as the end of its
//! log and drops every later commit without a word. The journal's
//! high-water mark (`<journal>-hwm`, kept apart from the WAL) makes the
//! loss a typed error at open, never a silent one.

mod common;

use common::{TempDir, append};
use transaction_manager::journal::{EntryKind, Journal};
use transaction_manager_sqlite::{SqliteJournal, SqliteJournalError};

/// Copies the journal's files (the WAL still holding its frames: the
/// journal is open) into `to`.
fn copy_files(from: &TempDir, to: &TempDir) {
    for suffix in ["", "-wal", "-hwm"] {
        let name = format!("journal.db{suffix}");
        if from.path().join(&name).exists() {
            std::fs::copy(from.path().join(&name), to.path().join(&name)).unwrap();
        }
    }
}

#[test]
fn a_damaged_wal_frame_is_detected_at_open_never_a_silent_loss() {
    let dir = TempDir::new("wal-damage");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let id = journal.next_id();
    // Durable entries, one commit each: many frames after the first ones.
    for step in 0..20 {
        append(&journal, id, Some(step), EntryKind::Done, &[step as u8; 64]).unwrap();
    }

    // An undamaged copy opens.
    let whole = TempDir::new("wal-damage-whole");
    copy_files(&dir, &whole);
    drop(SqliteJournal::open(whole.file()).unwrap());

    let copy = TempDir::new("wal-damage-copy");
    copy_files(&dir, &copy);
    drop(journal);
    let wal_path = copy.path().join("journal.db-wal");
    let mut wal = std::fs::read(&wal_path).unwrap();
    let page_size = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    let frame = 24 + page_size;
    let frames = (wal.len() - 32) / frame;
    assert!(frames >= 10, "only {frames} WAL frames");
    // A byte of the third frame's page: every commit after it is dropped.
    wal[32 + 2 * frame + 24 + 100] ^= 0xff;
    std::fs::write(&wal_path, &wal).unwrap();

    match SqliteJournal::open(copy.file()) {
        Err(error @ SqliteJournalError::Damaged { .. }) => {
            assert!(error.to_string().contains("entries were lost"), "{error}");
        }
        Ok(journal) => {
            let mut steps = 0;
            common::block_on(journal.read(id, &mut |_| steps += 1)).unwrap();
            panic!("opened a damaged journal without a word: {steps} of 20 entries left");
        }
        Err(other) => panic!("expected Damaged, got {other:?}"),
    }
    // And stays so: never opened as if nothing was lost.
    assert!(matches!(SqliteJournal::open(copy.file()), Err(SqliteJournalError::Damaged { .. })));
}
