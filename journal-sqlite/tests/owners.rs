//! Recovery never touches live work of another journal on the same file:
//! each writable `SqliteJournal` is an *owner*, and `next_unfinished`
//! hands out only this journal's own unfinished transactions and those of
//! owners that are gone (their process died, or they were dropped).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{TempDir, append, block_on, unfinished};
use transaction_manager::{
    ManualClock, Rollback, StepError, TransactionId, TransactionManager,
    journal::{EntryKind, Journal, Postcard},
    storage::Unbounded,
};
use transaction_manager_sqlite::SqliteJournal;

use EntryKind::{Begin, Committed, Done};

#[test]
fn a_second_journal_on_the_file_skips_the_first_ones_unfinished_work_while_it_is_open() {
    let dir = TempDir::new("owners-two");
    let first = SqliteJournal::open(dir.file()).unwrap();
    let second = SqliteJournal::open(dir.file()).unwrap();
    let (running, own) = (first.next_id(), second.next_id());
    append(&first, running, None, Begin, b"op").unwrap();
    append(&first, running, Some(0), Done, b"undo").unwrap();
    append(&second, own, None, Begin, b"op").unwrap();

    // Each sees its own unfinished work only: the other's is running.
    assert_eq!(unfinished(&first), [running]);
    assert_eq!(unfinished(&second), [own]);

    // The first is gone (a crash, or dropped): its work is owed, and the
    // second hands it out — and takes it over, so a third one, opened
    // while the second lives, leaves it to the second.
    drop(first);
    assert_eq!(unfinished(&second), [running, own]);
    let third = SqliteJournal::open(dir.file()).unwrap();
    assert_eq!(unfinished(&third), []);
    drop(second);
    assert_eq!(unfinished(&third), [running, own]);

    // Finished work is never handed out, whoever owns it.
    append(&third, running, None, Committed, b"").unwrap();
    assert_eq!(unfinished(&third), [own]);
}

#[test]
fn a_schema_1_journal_is_migrated_and_its_unfinished_work_is_recoverable() {
    let dir = TempDir::new("owners-migrate");
    {
        // A journal as version 1 of the schema wrote it.
        let conn = rusqlite::Connection::open(dir.file()).unwrap();
        conn.execute_batch(
            "CREATE TABLE tm_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE tm_entries (seq INTEGER PRIMARY KEY, tx INTEGER NOT NULL, step INTEGER NOT NULL,
                 kind INTEGER NOT NULL, payload BLOB NOT NULL, UNIQUE (tx, step, kind));
             CREATE TABLE tm_transactions (tx INTEGER PRIMARY KEY, finished INTEGER NOT NULL);
             CREATE INDEX tm_unfinished ON tm_transactions (tx) WHERE finished = 0;
             INSERT INTO tm_meta VALUES ('schema', 1), ('epoch', 3);
             INSERT INTO tm_entries (tx, step, kind, payload) VALUES (12884901889, 0, 3, x'00');
             INSERT INTO tm_transactions VALUES (12884901889, 0);",
        )
        .unwrap();
    }
    let journal = SqliteJournal::open(dir.file()).unwrap();
    assert_eq!(unfinished(&journal), [TransactionId::new(3 << 32 | 1)]);
    drop(journal);
    let conn = rusqlite::Connection::open(dir.file()).unwrap();
    let schema: i64 = conn.query_row("SELECT value FROM tm_meta WHERE key = 'schema'", [], |r| r.get(0)).unwrap();
    assert_eq!(schema, 4);
}

// --- Two processes -------------------------------------------------------

const CHILD_ENV: &str = "TM_OWNERS_CHILD_FILE";

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Delete(u32);

impl Rollback<Vec<u32>> for Delete {
    type Error = std::convert::Infallible;

    async fn rollback(&mut self, deleted: &mut Vec<u32>) -> Result<(), Self::Error> {
        deleted.push(self.0);
        Ok(())
    }
}

/// The child: runs a transaction whose first step is done (its `Done` is
/// durable) and whose second step waits for the parent, forever.
#[test]
fn child_entry() {
    let Ok(file) = std::env::var(CHILD_ENV) else { return };
    // No timers: the clock is never asked. (`ManualClock::block_on` would
    // count the writer thread's replies as a stall.)
    let clock = ManualClock::new();
    let journal = SqliteJournal::open(file).unwrap();
    let manager = TransactionManager::new(&clock).with_journal(journal, Postcard::<1>);
    let mut created = Vec::new();
    let _ = block_on(manager.transaction("hold").unbounded::<Delete>().run_with(&mut created, async |tx| {
        tx.step("create")
            .execute_with(async |created: &mut Vec<u32>| {
                created.push(7);
                Ok::<_, std::io::Error>(7)
            })
            .undo(|n| Delete(*n))
            .await?;
        tx.step("hold")
            .run(|| async {
                println!("holding");
                // Blocks until the parent kills this process.
                let mut line = String::new();
                let _ = std::io::stdin().read_line(&mut line);
                Ok::<_, std::io::Error>(())
            })
            .await?;
        Ok::<_, StepError<std::io::Error>>(())
    }));
}

#[test]
fn recovery_in_another_process_leaves_a_running_transaction_alone_until_its_process_dies() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = TempDir::new("owners-process");
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.file())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let mut lines = stdout.lines();
    // The harness prints "test child_entry ... " before it, on one line.
    assert!(
        lines.by_ref().map(Result::unwrap).any(|line| line.ends_with("holding")),
        "the child ended before it held its transaction"
    );

    // The child's transaction is running: this process's recovery leaves
    // it alone, however often it runs.
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(SqliteJournal::open(dir.file()).unwrap(), Postcard::<1>);
    let mut deleted = Vec::new();
    for _ in 0..3 {
        let report = block_on(manager.recover::<Delete, Unbounded, _>(&mut deleted)).unwrap();
        assert_eq!(report.found(), 0, "{report}");
    }
    assert!(deleted.is_empty(), "{deleted:?}");

    // kill -9: the kernel drops the child's lock, its work is owed.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let report = block_on(manager.recover::<Delete, Unbounded, _>(&mut deleted)).unwrap();
    assert_eq!(report.found(), 1, "{report}");
    assert_eq!(deleted, [7]);
    let report = block_on(manager.recover::<Delete, Unbounded, _>(&mut deleted)).unwrap();
    assert_eq!(report.found(), 0, "{report}");
    drop(manager);
    let journal = SqliteJournal::open(dir.file()).unwrap();
    assert_eq!(unfinished(&journal), []);
    let _ = block_on(journal.next_unfinished(None));
}

/// A child process killed when the test ends, passed or failed.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
