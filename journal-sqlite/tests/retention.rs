//! Retention: finished transactions are deleted by the policy set on the
//! journal, in the background or by hand; unfinished ones (running, owing
//! a failed rollback, stuck) never are; `seq` keeps growing, so the
//! high-water mark still holds after the last rows went.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use common::{TempDir, append, block_on, read, unfinished};
use proptest::prelude::*;
use transaction_manager::{
    TransactionId,
    journal::{EntryKind, Journal},
};
use transaction_manager_sqlite::{Retention, SqliteJournal};

use EntryKind::{Begin, Committed, Done, Resolved, RolledBack, Stuck, UndoFailed};

/// A wall clock the test moves by hand: the real time when the test
/// started, plus what the test added.
#[derive(Clone)]
struct Clock(Arc<AtomicU64>, SystemTime);

impl Clock {
    fn new() -> Self {
        Clock(Arc::new(AtomicU64::new(0)), SystemTime::now())
    }

    fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }

    fn on(&self, journal: SqliteJournal) -> SqliteJournal {
        let (added, start) = (self.0.clone(), self.1);
        journal.with_clock(move || start + Duration::from_millis(added.load(Ordering::Relaxed)))
    }
}

fn open(dir: &TempDir, retention: Retention) -> SqliteJournal {
    SqliteJournal::open(dir.file()).unwrap().with_retention(retention)
}

/// A transaction that began and ended with `end`.
fn finished(journal: &SqliteJournal, end: EntryKind) -> TransactionId {
    let id = journal.next_id();
    append(journal, id, None, Begin, b"op").unwrap();
    append(journal, id, Some(0), Done, b"undo").unwrap();
    append(journal, id, None, end, b"").unwrap();
    id
}

fn count(dir: &TempDir, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get(0)).unwrap()
}

#[test]
fn delete_at_once_removes_what_is_over_and_nothing_else() {
    let dir = TempDir::new("retention-at-once");
    let journal = open(&dir, Retention::KeepAll);
    let committed = finished(&journal, Committed);
    let rolled_back = finished(&journal, RolledBack);
    let resolved = finished(&journal, Resolved);
    // Not over: running; owing a rollback that failed for good; stuck.
    let running = journal.next_id();
    append(&journal, running, None, Begin, b"op").unwrap();
    append(&journal, running, Some(0), Done, b"undo").unwrap();
    let owed = journal.next_id();
    append(&journal, owed, None, Begin, b"op").unwrap();
    append(&journal, owed, Some(0), Done, b"undo").unwrap();
    append(&journal, owed, Some(0), UndoFailed, b"still failing").unwrap();
    let stuck = journal.next_id();
    append(&journal, stuck, None, Begin, b"op").unwrap();
    append(&journal, stuck, None, Stuck, b"undecodable").unwrap();

    let pruned = block_on(journal.prune(Retention::DeleteAtOnce)).unwrap();
    assert_eq!((pruned.transactions, pruned.entries), (3, 9));
    for gone in [committed, rolled_back, resolved] {
        assert_eq!(read(&journal, gone).unwrap(), []);
    }
    assert_eq!(unfinished(&journal), [running, owed, stuck]);
    assert_eq!(read(&journal, running).unwrap().len(), 2);
    assert_eq!(read(&journal, owed).unwrap().len(), 3);
    assert_eq!(read(&journal, stuck).unwrap().len(), 2);
    // Nothing left to prune.
    assert_eq!(block_on(journal.prune(Retention::DeleteAtOnce)).unwrap().transactions, 0);
}

#[test]
fn the_background_prune_deletes_at_once_without_being_asked() {
    let dir = TempDir::new("retention-background");
    let journal = open(&dir, Retention::DeleteAtOnce);
    let ids: Vec<_> = (0..5).map(|_| finished(&journal, Committed)).collect();
    let running = journal.next_id();
    append(&journal, running, None, Begin, b"op").unwrap();
    // The next batch's write prunes what ended in the earlier ones.
    append(&journal, running, Some(0), Done, b"undo").unwrap();
    block_on(journal.flush()).unwrap();
    for id in ids {
        assert_eq!(read(&journal, id).unwrap(), []);
    }
    assert_eq!(count(&dir, "tm_transactions"), 1);
    assert_eq!(count(&dir, "tm_entries"), 2);
}

#[test]
fn an_idle_journal_prunes_by_itself() {
    let dir = TempDir::new("retention-idle");
    let journal = open(&dir, Retention::DeleteAtOnce);
    let id = finished(&journal, Committed);
    // Nothing else is written: the writer looks once a second when idle.
    // (Real time, but no timing assertion: the test only waits for it.)
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !read(&journal, id).unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the idle journal never pruned");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn keep_for_measures_age_by_the_journals_clock() {
    let dir = TempDir::new("retention-keep-for");
    let clock = Clock::new();
    let journal = clock.on(open(&dir, Retention::KeepAll));
    let old = finished(&journal, Committed);
    clock.advance(Duration::from_secs(6 * 60));
    let young = finished(&journal, Committed);
    clock.advance(Duration::from_secs(5 * 60));
    // 11 minutes and 5 minutes over: only the first one goes.
    let keep = Retention::KeepFor(Duration::from_secs(10 * 60));
    assert_eq!(block_on(journal.prune(keep)).unwrap().transactions, 1);
    assert_eq!(read(&journal, old).unwrap(), []);
    assert_eq!(read(&journal, young).unwrap().len(), 3);
    clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(block_on(journal.prune(keep)).unwrap().transactions, 1);
    assert_eq!(read(&journal, young).unwrap(), []);
}

#[test]
fn keep_last_keeps_the_newest_ones() {
    let dir = TempDir::new("retention-keep-last");
    let clock = Clock::new();
    let journal = clock.on(open(&dir, Retention::KeepAll));
    let ids: Vec<_> = (0..5)
        .map(|_| {
            clock.advance(Duration::from_secs(1));
            finished(&journal, Committed)
        })
        .collect();
    assert_eq!(block_on(journal.prune(Retention::KeepLast(5))).unwrap().transactions, 0);
    assert_eq!(block_on(journal.prune(Retention::KeepLast(2))).unwrap().transactions, 3);
    let kept: Vec<_> = ids.iter().filter(|&&id| !read(&journal, id).unwrap().is_empty()).copied().collect();
    assert_eq!(kept, ids[3..]);
    assert_eq!(block_on(journal.prune(Retention::KeepLast(0))).unwrap().transactions, 2);
}

#[test]
fn another_journals_transactions_are_left_alone_for_a_minute() {
    let dir = TempDir::new("retention-foreign");
    let clock = Clock::new();
    let service = clock.on(open(&dir, Retention::KeepAll));
    let id = finished(&service, Committed);
    // An operator's prune from another journal (another process) on the
    // same file: the service's transaction just ended, its own writer may
    // still check its decision.
    let operator = clock.on(open(&dir, Retention::KeepAll));
    assert_eq!(block_on(operator.prune(Retention::DeleteAtOnce)).unwrap().transactions, 0);
    clock.advance(Duration::from_secs(61));
    assert_eq!(block_on(operator.prune(Retention::DeleteAtOnce)).unwrap().transactions, 1);
    assert_eq!(read(&service, id).unwrap(), []);
}

#[test]
fn what_is_left_alone_never_holds_up_what_is_behind_it() {
    // More than a batch (512) of a live journal's young transactions
    // first, then the operator's own: a prune reads past the ones it must
    // leave and deletes the rest.
    let dir = TempDir::new("retention-behind");
    let clock = Clock::new();
    let service = clock.on(open(&dir, Retention::KeepAll));
    for _ in 0..520 {
        finished(&service, Committed);
    }
    clock.advance(Duration::from_millis(5));
    let operator = clock.on(open(&dir, Retention::KeepAll));
    let own: Vec<TransactionId> = (0..3).map(|_| finished(&operator, Committed)).collect();
    assert_eq!(block_on(operator.prune(Retention::DeleteAtOnce)).unwrap().transactions, 3);
    for id in own {
        assert_eq!(read(&operator, id).unwrap(), []);
    }
    assert_eq!(count(&dir, "tm_transactions"), 520);
    clock.advance(Duration::from_secs(61));
    assert_eq!(block_on(operator.prune(Retention::DeleteAtOnce)).unwrap().transactions, 520);
}

#[test]
fn a_gone_journals_transactions_are_pruned_at_once() {
    let dir = TempDir::new("retention-gone");
    let service = open(&dir, Retention::KeepAll);
    let id = finished(&service, Committed);
    drop(service); // the process is gone: nobody can check a decision
    let operator = open(&dir, Retention::KeepAll);
    assert_eq!(block_on(operator.prune(Retention::DeleteAtOnce)).unwrap().transactions, 1);
    assert_eq!(read(&operator, id).unwrap(), []);
}

#[test]
fn seq_keeps_growing_after_the_last_rows_are_deleted() {
    let dir = TempDir::new("retention-seq");
    let journal = open(&dir, Retention::KeepAll);
    let first = finished(&journal, Committed);
    block_on(journal.prune(Retention::DeleteAtOnce)).unwrap();
    assert_eq!(count(&dir, "tm_entries"), 0);
    // The high-water mark says 3 entries were committed: a reopened file
    // with none left is not "damaged", and new rows are numbered after
    // the deleted ones.
    drop(journal);
    let journal = SqliteJournal::open(dir.file()).unwrap();
    let second = finished(&journal, Committed);
    assert_ne!(first, second);
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    let seqs: Vec<i64> = conn
        .prepare("SELECT seq FROM tm_entries ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(seqs, [4, 5, 6]);
    drop(conn);
    drop(journal);
    SqliteJournal::open(dir.file()).unwrap();
}

#[test]
fn a_schema_3_file_is_migrated_and_its_finished_transactions_count_from_the_migration() {
    let dir = TempDir::new("retention-migrate");
    {
        // A journal as schema 3 wrote it: one finished and one unfinished
        // transaction.
        let conn = rusqlite::Connection::open(dir.file()).unwrap();
        conn.execute_batch(
            "CREATE TABLE tm_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE tm_entries (seq INTEGER PRIMARY KEY, tx INTEGER NOT NULL, step INTEGER NOT NULL,
                 kind INTEGER NOT NULL, payload BLOB NOT NULL, UNIQUE (tx, step, kind));
             CREATE TABLE tm_transactions (tx INTEGER PRIMARY KEY, finished INTEGER NOT NULL,
                 owner INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX tm_unfinished ON tm_transactions (tx) WHERE finished = 0;
             INSERT INTO tm_meta VALUES ('schema', 3), ('epoch', 3), ('origin', 77);
             INSERT INTO tm_entries (tx, step, kind, payload) VALUES (12884901889, -1, 1, x'6f70');
             INSERT INTO tm_entries (tx, step, kind, payload) VALUES (12884901889, -1, 7, x'');
             INSERT INTO tm_entries (tx, step, kind, payload) VALUES (12884901890, -1, 1, x'6f70');
             INSERT INTO tm_transactions VALUES (12884901889, 1, 3), (12884901890, 0, 3);",
        )
        .unwrap();
    }
    let clock = Clock::new();
    let journal = clock.on(open(&dir, Retention::KeepAll));
    let (done, running) = (TransactionId::new(3 << 32 | 1), TransactionId::new(3 << 32 | 2));
    assert_eq!(read(&journal, done).unwrap().len(), 2);
    assert_eq!(unfinished(&journal), [running]);
    // Finished "now" (the migration, by the wall clock): a day's retention
    // keeps it; deleting at once (after the minute another owner's
    // transaction gets) removes it, and never the unfinished one.
    assert_eq!(block_on(journal.prune(Retention::KeepFor(Duration::from_secs(86_400)))).unwrap().transactions, 0);
    drop(journal);
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    let schema: i64 = conn.query_row("SELECT value FROM tm_meta WHERE key = 'schema'", [], |r| r.get(0)).unwrap();
    assert_eq!(schema, 4);
    conn.execute("UPDATE tm_transactions SET finished_at = finished_at - 120000", []).unwrap();
    drop(conn);
    let journal = open(&dir, Retention::KeepAll);
    assert_eq!(block_on(journal.prune(Retention::DeleteAtOnce)).unwrap().transactions, 1);
    assert_eq!(read(&journal, done).unwrap(), []);
    assert_eq!(read(&journal, running).unwrap().len(), 1);
}

#[test]
fn a_read_only_journal_cannot_prune() {
    let dir = TempDir::new("retention-read-only");
    drop(open(&dir, Retention::KeepAll));
    let mut permissions = std::fs::metadata(dir.file()).unwrap().permissions();
    permissions.set_readonly(true);
    std::fs::set_permissions(dir.file(), permissions).unwrap();
    let journal = SqliteJournal::open(dir.file()).unwrap();
    if journal.is_read_only() {
        assert!(matches!(
            block_on(journal.prune(Retention::DeleteAtOnce)),
            Err(transaction_manager_sqlite::SqliteJournalError::ReadOnly { .. })
        ));
    }
}

// --- Never an unfinished transaction: random interleavings -------------

#[derive(Clone, Debug)]
enum Op {
    /// Start a transaction (Begin, Done).
    Start,
    /// End the `n`-th live transaction (mod their count) with this kind.
    End(usize, EntryKind),
    /// Fail the `n`-th live transaction's rollback for good (it stays owed).
    FailUndo(usize),
    /// Mark the `n`-th live transaction stuck.
    MarkStuck(usize),
    /// The process dies: the journal is dropped and opened again.
    Crash,
    /// A prune by hand.
    Prune(Retention),
    /// Time passes.
    Wait(u64),
}

/// A transaction of the property test: its id, what it wrote (step,
/// kind), and whether it is over.
type Written = (TransactionId, Vec<(Option<u32>, u8)>, bool);

fn op() -> impl Strategy<Value = Op> {
    let retention = prop_oneof![
        Just(Retention::DeleteAtOnce),
        (0u64..4).prop_map(Retention::KeepLast),
        (0u64..120).prop_map(|s| Retention::KeepFor(Duration::from_secs(s))),
    ];
    prop_oneof![
        3 => Just(Op::Start),
        3 => (any::<usize>(), prop_oneof![Just(Committed), Just(RolledBack), Just(Resolved)]).prop_map(|(n, k)| Op::End(n, k)),
        1 => any::<usize>().prop_map(Op::FailUndo),
        1 => any::<usize>().prop_map(Op::MarkStuck),
        1 => Just(Op::Crash),
        2 => retention.prop_map(Op::Prune),
        1 => (1u64..90).prop_map(Op::Wait),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever runs, crashes and prunes in whatever order (the background
    /// retention too), every transaction that is not over keeps every
    /// entry it wrote, and one that is over is either whole or gone.
    #[test]
    fn retention_never_removes_an_unfinished_transaction(
        background in prop_oneof![Just(Retention::KeepAll), Just(Retention::DeleteAtOnce), Just(Retention::KeepLast(1))],
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let dir = TempDir::new("retention-prop");
        let clock = Clock::new();
        let mut journal = clock.on(open(&dir, background));
        // What each transaction wrote, and whether it is over.
        let mut written: Vec<Written> = Vec::new();
        for op in ops {
            let live: Vec<usize> = (0..written.len()).filter(|&i| !written[i].2).collect();
            let pick = |n: usize| live.get(n % live.len().max(1)).copied();
            match op {
                Op::Start => {
                    let id = journal.next_id();
                    append(&journal, id, None, Begin, b"op").unwrap();
                    append(&journal, id, Some(0), Done, b"undo").unwrap();
                    written.push((id, vec![(None, Begin.code()), (Some(0), Done.code())], false));
                }
                Op::End(n, kind) => if let Some(i) = pick(n) {
                    append(&journal, written[i].0, None, kind, b"").unwrap();
                    written[i].1.push((None, kind.code()));
                    written[i].2 = true;
                },
                Op::FailUndo(n) => if let Some(i) = pick(n) {
                    append(&journal, written[i].0, Some(0), UndoFailed, b"no").unwrap();
                    if !written[i].1.contains(&(Some(0), UndoFailed.code())) {
                        written[i].1.push((Some(0), UndoFailed.code()));
                    }
                },
                Op::MarkStuck(n) => if let Some(i) = pick(n) {
                    append(&journal, written[i].0, None, Stuck, b"why").unwrap();
                    if !written[i].1.contains(&(None, Stuck.code())) {
                        written[i].1.push((None, Stuck.code()));
                    }
                },
                Op::Crash => {
                    drop(journal);
                    journal = clock.on(open(&dir, background));
                }
                Op::Prune(retention) => {
                    block_on(journal.prune(retention)).unwrap();
                }
                Op::Wait(seconds) => clock.advance(Duration::from_secs(seconds)),
            }
            block_on(journal.flush()).unwrap();
            for (id, entries, over) in &written {
                let read: Vec<_> = read(&journal, *id).unwrap().into_iter().map(|e| (e.step, e.kind)).collect();
                if *over {
                    prop_assert!(read.is_empty() || read == *entries, "{id}: {read:?} of {entries:?}");
                } else {
                    prop_assert_eq!(&read, entries, "{} lost entries", id);
                }
            }
            let unfinished = unfinished(&journal);
            let expected: Vec<_> = written.iter().filter(|w| !w.2).map(|w| w.0).collect();
            prop_assert_eq!(unfinished, expected);
        }
    }
}

#[test]
fn pruning_a_burst_hands_the_space_back_to_the_file_system() {
    let dir = TempDir::new("retention-vacuum");
    let journal = open(&dir, Retention::KeepAll);
    let payload = vec![0x5a; 2048];
    for _ in 0..10_000 {
        let id = journal.next_id();
        append(&journal, id, None, Begin, b"op").unwrap();
        append(&journal, id, Some(0), Done, &payload).unwrap();
        append(&journal, id, None, Committed, b"").unwrap();
    }
    drop(journal); // the WAL checkpointed into the file
    let before = std::fs::metadata(dir.file()).unwrap().len();
    assert!(before > 20 << 20, "{before} bytes");
    let journal = open(&dir, Retention::KeepAll);
    assert_eq!(block_on(journal.prune(Retention::DeleteAtOnce)).unwrap().transactions, 10_000);
    drop(journal);
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
    drop(conn);
    let after = std::fs::metadata(dir.file()).unwrap().len();
    // Up to 4 MiB of free pages are kept for the next inserts.
    assert!(free <= 1024, "{free} free pages");
    assert!(after < 5 << 20, "{before} bytes before, {after} after");
}
