//! `SqliteJournal` against the `Journal` contract, on real files.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use common::{Read, TempDir, append, block_on, read, unfinished};
use transaction_manager::{
    TransactionId,
    journal::{Entry, EntryKind, Journal},
};
use transaction_manager_sqlite::{MAX_PAYLOAD, SqliteJournal, SqliteJournalError};

use EntryKind::{Begin, Committed, Done, Intent, Released, RolledBack, Undone};

#[test]
fn entries_read_back_in_append_order() {
    let dir = TempDir::new("order");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let (a, b) = (journal.next_id(), journal.next_id());
    // Interleaved, lazy and durable, steps out of index order.
    append(&journal, a, None, Begin, b"op-a").unwrap();
    append(&journal, b, None, Begin, b"op-b").unwrap();
    append(&journal, a, Some(1), Intent, b"intent-1").unwrap();
    append(&journal, a, Some(0), Done, b"undo-0").unwrap();
    append(&journal, b, Some(0), Done, &[]).unwrap();
    append(&journal, a, Some(1), Released, &[]).unwrap();
    append(&journal, a, Some(0), Undone, &[]).unwrap();

    assert_eq!(
        read(&journal, a).unwrap(),
        [
            Read::new(None, Begin, b"op-a"),
            Read::new(Some(1), Intent, b"intent-1"),
            Read::new(Some(0), Done, b"undo-0"),
            Read::new(Some(1), Released, b""),
            Read::new(Some(0), Undone, b""),
        ]
    );
    assert_eq!(read(&journal, b).unwrap(), [Read::new(None, Begin, b"op-b"), Read::new(Some(0), Done, b"")]);
    assert_eq!(read(&journal, TransactionId::new(12345)).unwrap(), []);
}

#[test]
fn appending_an_entry_again_keeps_the_first() {
    let dir = TempDir::new("idempotent");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let id = journal.next_id();
    append(&journal, id, None, Begin, b"op").unwrap();
    append(&journal, id, Some(0), Done, b"first").unwrap();
    append(&journal, id, Some(1), Done, b"other step").unwrap();
    // A retried write, a repeated recovery: not an error, nothing moves.
    append(&journal, id, Some(0), Done, b"second").unwrap();
    append(&journal, id, None, Begin, b"op").unwrap();
    assert_eq!(
        read(&journal, id).unwrap(),
        [Read::new(None, Begin, b"op"), Read::new(Some(0), Done, b"first"), Read::new(Some(1), Done, b"other step")]
    );
}

#[test]
fn durable_and_lazy_entries_survive_drop_and_reopen() {
    let dir = TempDir::new("reopen");
    let id = {
        let journal = SqliteJournal::open(dir.file()).unwrap();
        let id = journal.next_id();
        append(&journal, id, None, Begin, b"op").unwrap(); // lazy
        append(&journal, id, Some(0), Done, b"undo").unwrap(); // durable
        append(&journal, id, Some(0), Undone, &[]).unwrap(); // lazy, last: no durable write after it
        id
    };
    let journal = SqliteJournal::open(dir.file()).unwrap();
    assert_eq!(
        read(&journal, id).unwrap(),
        [Read::new(None, Begin, b"op"), Read::new(Some(0), Done, b"undo"), Read::new(Some(0), Undone, b"")]
    );
    assert_eq!(unfinished(&journal), [id]);
}

#[test]
fn a_journal_reads_its_own_lazy_entries_at_once() {
    let dir = TempDir::new("own-lazy");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let id = journal.next_id();
    append(&journal, id, Some(0), Undone, b"lazy").unwrap();
    assert_eq!(read(&journal, id).unwrap(), [Read::new(Some(0), Undone, b"lazy")]);
    append(&journal, id, None, RolledBack, &[1]).unwrap();
    assert_eq!(unfinished(&journal), []);
    block_on(journal.flush()).unwrap();
}

#[test]
fn next_unfinished_skips_finished_transactions() {
    let dir = TempDir::new("unfinished");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let ids: Vec<_> = (0..6).map(|_| journal.next_id()).collect();
    for &id in &ids {
        append(&journal, id, None, Begin, b"op").unwrap();
        append(&journal, id, Some(0), Done, b"undo").unwrap();
    }
    append(&journal, ids[0], None, Committed, &[]).unwrap();
    append(&journal, ids[2], None, RolledBack, &[1]).unwrap();
    append(&journal, ids[5], None, EntryKind::Resolved, &[]).unwrap();
    // A step entry after the end (a repeated recovery) does not reopen it.
    append(&journal, ids[2], Some(0), Undone, &[]).unwrap();

    assert_eq!(unfinished(&journal), [ids[1], ids[3], ids[4]]);
    assert_eq!(block_on(journal.next_unfinished(Some(ids[1]))).unwrap(), Some(ids[3]));
    assert_eq!(block_on(journal.next_unfinished(Some(ids[4]))).unwrap(), None);
    // Still so after a restart.
    drop(journal);
    let journal = SqliteJournal::open(dir.file()).unwrap();
    assert_eq!(unfinished(&journal), [ids[1], ids[3], ids[4]]);
}

#[test]
fn next_unfinished_orders_ids_above_2_pow_63_as_unsigned() {
    let dir = TempDir::new("big-ids");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let ids = [5, 1 << 63, (1 << 63) + 7, u64::MAX].map(TransactionId::new);
    for id in ids.iter().rev() {
        append(&journal, *id, None, Begin, &[]).unwrap();
    }
    assert_eq!(unfinished(&journal), ids);
    assert_eq!(block_on(journal.next_unfinished(Some(TransactionId::new(6)))).unwrap(), Some(ids[1]));
    assert_eq!(block_on(journal.next_unfinished(Some(ids[2]))).unwrap(), Some(ids[3]));
    assert_eq!(block_on(journal.next_unfinished(Some(ids[3]))).unwrap(), None);
    assert_eq!(read(&journal, ids[3]).unwrap(), [Read::new(None, Begin, b"")]);
}

#[test]
fn browsing_goes_both_ways_over_ids_above_2_pow_63_and_can_skip_what_is_over() {
    use transaction_manager_core::backend::Browse;
    let dir = TempDir::new("browse-big-ids");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let ids = [5, 9, 1 << 63, (1 << 63) + 7, u64::MAX].map(TransactionId::new);
    for id in ids.iter().rev() {
        append(&journal, *id, None, Begin, &[]).unwrap();
    }
    // 9 and 2^63 + 7 are over.
    append(&journal, ids[1], None, Committed, &[]).unwrap();
    append(&journal, ids[3], None, Committed, &[]).unwrap();
    let walk = |unfinished_only: bool, up: bool| {
        let mut seen = Vec::new();
        let mut at = None;
        loop {
            let next = if up {
                block_on(journal.next_transaction(at, unfinished_only))
            } else {
                block_on(journal.previous_transaction(at, unfinished_only))
            };
            let Some(id) = next.unwrap() else { return seen };
            seen.push(id);
            at = Some(id);
        }
    };
    assert_eq!(walk(false, true), ids);
    assert_eq!(walk(true, true), [ids[0], ids[2], ids[4]]);
    let mut down = ids.to_vec();
    down.reverse();
    assert_eq!(walk(false, false), down);
    assert_eq!(walk(true, false), [ids[4], ids[2], ids[0]]);
    assert_eq!(block_on(journal.previous_transaction(Some(ids[2]), false)).unwrap(), Some(ids[1]));
    assert_eq!(block_on(journal.previous_transaction(Some(TransactionId::new(0)), false)).unwrap(), None);
}

#[test]
fn ids_are_unique_across_opens_and_never_zero() {
    let dir = TempDir::new("ids-reopen");
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let journal = SqliteJournal::open(dir.file()).unwrap();
        for _ in 0..1000 {
            let id = journal.next_id();
            assert_ne!(id.get(), 0);
            assert!(seen.insert(id), "{id} handed out twice");
        }
    }
}

#[test]
fn ids_are_unique_across_journals_opened_at_once_on_one_file() {
    let dir = TempDir::new("ids-concurrent");
    let path = dir.file();
    // Create the file first, so both opens race on the epoch, not on
    // creating the tables (which they also survive: see below).
    drop(SqliteJournal::open(&path).unwrap());
    for fresh in [false, true] {
        let path = if fresh { dir.path().join("fresh.db") } else { path.clone() };
        let start = Arc::new(Barrier::new(4));
        let per_thread: Vec<Vec<TransactionId>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (start, path) = (start.clone(), path.clone());
                    scope.spawn(move || {
                        start.wait();
                        let journal = SqliteJournal::open(&path).unwrap();
                        let ids: Vec<_> = (0..500).map(|_| journal.next_id()).collect();
                        // Both write to the file too.
                        for &id in ids.iter().take(20) {
                            append(&journal, id, Some(0), Done, &id.get().to_le_bytes()).unwrap();
                        }
                        ids
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: HashSet<_> = per_thread.iter().flatten().copied().collect();
        assert_eq!(all.len(), 4 * 500, "an id was handed out twice");
        let journal = SqliteJournal::open(&path).unwrap();
        for id in per_thread.iter().flat_map(|ids| ids.iter().take(20)) {
            assert_eq!(read(&journal, *id).unwrap(), [Read::new(Some(0), Done, &id.get().to_le_bytes())]);
        }
    }
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new("schema");
    drop(SqliteJournal::open(dir.file()).unwrap());
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    conn.execute("UPDATE tm_meta SET value = 5 WHERE key = 'schema'", []).unwrap();
    drop(conn);
    match SqliteJournal::open(dir.file()) {
        Err(SqliteJournalError::NewerSchema { found: 5, known: 4 }) => {}
        other => panic!("expected NewerSchema, got {other:?}"),
    }
}

#[test]
fn two_files_have_different_origins_and_a_file_keeps_its_own() {
    let dir = TempDir::new("origin");
    let (one, two) = (dir.path().join("one.db"), dir.path().join("two.db"));
    let first = SqliteJournal::open(&one).unwrap().origin();
    let second = SqliteJournal::open(&two).unwrap().origin();
    assert_ne!(first, second);
    assert_ne!(first, 0);
    // Reopened, a file keeps its origin (a new epoch, the same keys' origin).
    let again = SqliteJournal::open(&one).unwrap();
    assert_eq!(again.origin(), first);
    drop(again);
    // Two journals open on one file at once share it.
    let (a, b) = (SqliteJournal::open(&two).unwrap(), SqliteJournal::open(&two).unwrap());
    assert_eq!((a.origin(), b.origin()), (second, second));
}

#[test]
fn a_schema_2_file_gets_an_origin_and_keeps_its_entries() {
    let dir = TempDir::new("origin-migrate");
    let file = dir.file();
    drop(SqliteJournal::open(&file).unwrap());
    {
        // Back to the file as schema 2 wrote it: no origin.
        let conn = rusqlite::Connection::open(&file).unwrap();
        conn.execute_batch(
            "DELETE FROM tm_meta WHERE key = 'origin'; UPDATE tm_meta SET value = 2 WHERE key = 'schema';
             INSERT INTO tm_entries (tx, step, kind, payload) VALUES (4294967297, -1, 1, x'00');
             INSERT INTO tm_transactions (tx, finished, owner) VALUES (4294967297, 0, 0);",
        )
        .unwrap();
    }
    let journal = SqliteJournal::open(&file).unwrap();
    let origin = journal.origin();
    assert_ne!(origin, 0);
    assert_eq!(unfinished(&journal), [TransactionId::new(1 << 32 | 1)]);
    drop(journal);
    let conn = rusqlite::Connection::open(&file).unwrap();
    let schema: i64 = conn.query_row("SELECT value FROM tm_meta WHERE key = 'schema'", [], |r| r.get(0)).unwrap();
    assert_eq!(schema, 4);
    drop(conn);
    assert_eq!(SqliteJournal::open(&file).unwrap().origin(), origin);
}

#[test]
fn a_file_that_is_not_sqlite_is_corrupt() {
    let dir = TempDir::new("not-sqlite");
    std::fs::write(dir.file(), vec![0x5a; 4096]).unwrap();
    match SqliteJournal::open(dir.file()) {
        Err(SqliteJournalError::Corrupt { .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_missing_directory_cannot_be_opened() {
    let dir = TempDir::new("missing");
    let error = SqliteJournal::open(dir.path().join("no/such/dir/journal.db")).unwrap_err();
    assert!(matches!(error, SqliteJournalError::Open { .. }), "{error:?}");
    assert!(error.to_string().starts_with("cannot open or create the journal "), "{error}");
}

#[test]
fn an_unknown_kind_is_passed_through_and_a_broken_row_is_an_error() {
    let dir = TempDir::new("unknown-kind");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let (good, broken) = (journal.next_id(), journal.next_id());
    append(&journal, good, Some(0), Done, b"undo").unwrap();
    append(&journal, broken, Some(0), Done, b"undo").unwrap();
    {
        // A newer writer's kind 42, and a row this crate never writes.
        let conn = rusqlite::Connection::open(dir.file()).unwrap();
        conn.execute("INSERT INTO tm_entries (tx, step, kind, payload) VALUES (?1, 1, 42, x'00')", [good.get() as i64])
            .unwrap();
        conn.execute(
            "INSERT INTO tm_entries (tx, step, kind, payload) VALUES (?1, 1, 3, 'text')",
            [broken.get() as i64],
        )
        .unwrap();
    }
    assert_eq!(
        read(&journal, good).unwrap(),
        [Read::new(Some(0), Done, b"undo"), Read { step: Some(1), kind: 42, payload: vec![0] }]
    );
    match read(&journal, broken) {
        Err(SqliteJournalError::Corrupt { .. }) => {}
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_payload_above_the_limit_is_refused() {
    let dir = TempDir::new("too-large");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let id = journal.next_id();
    let big = vec![7u8; MAX_PAYLOAD + 1];
    match append(&journal, id, Some(0), Done, &big) {
        Err(SqliteJournalError::PayloadTooLarge { limit }) => assert_eq!(limit, MAX_PAYLOAD),
        other => panic!("expected PayloadTooLarge, got {other:?}"),
    }
    append(&journal, id, Some(0), Done, &big[..MAX_PAYLOAD]).unwrap();
    assert_eq!(read(&journal, id).unwrap()[0].payload.len(), MAX_PAYLOAD);
}

#[test]
fn many_concurrent_appends_are_all_stored() {
    const TASKS: u32 = 64;
    const STEPS: u32 = 8;
    let dir = TempDir::new("concurrent");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let ids: Vec<_> = (0..TASKS).map(|_| journal.next_id()).collect();
    let executor = async_executor::LocalExecutor::new();
    let tasks: Vec<_> = ids
        .iter()
        .map(|&id| {
            let journal = &journal;
            executor.spawn(async move {
                journal.append(&Entry::new_raw(id, None, Begin, b"op")).await.unwrap();
                for step in 0..STEPS {
                    journal.append(&Entry::new_raw(id, Some(step), Done, &step.to_le_bytes())).await.unwrap();
                }
                for step in (0..STEPS).rev() {
                    journal.append(&Entry::new_raw(id, Some(step), Undone, &[])).await.unwrap();
                }
                journal.append(&Entry::new_raw(id, None, RolledBack, &[1])).await.unwrap();
            })
        })
        .collect();
    block_on(executor.run(async {
        for task in tasks {
            task.await;
        }
    }));
    drop(executor);
    drop(journal);

    let journal = SqliteJournal::open(dir.file()).unwrap();
    for &id in &ids {
        let mut expected = vec![Read::new(None, Begin, b"op")];
        expected.extend((0..STEPS).map(|step| Read::new(Some(step), Done, &step.to_le_bytes())));
        expected.extend((0..STEPS).rev().map(|step| Read::new(Some(step), Undone, b"")));
        expected.push(Read::new(None, RolledBack, &[1]));
        assert_eq!(read(&journal, id).unwrap(), expected);
    }
    assert_eq!(unfinished(&journal), []);
}

#[test]
fn journal_futures_are_send_and_the_journal_is_sync() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Send + Sync>() {}
    sync::<SqliteJournal>();
    let dir = TempDir::new("send");
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let entry = Entry::new_raw(journal.next_id(), None, Begin, b"");
    let append = journal.append(&entry);
    send(&append);
    block_on(append).unwrap();
    send(&journal.next_unfinished(None));
    send(&journal.flush());
}
