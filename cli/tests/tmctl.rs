//! `tmctl` against a real SQLite journal made by the engine: one
//! transaction in each state, every command in human and JSON form, and
//! bad input (a missing file, a file that is not a journal, a corrupt one,
//! a newer schema, a bad id) as one clear line and a non-zero exit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

mod common;

use common::{fails, json, ok, states};
use futures_lite::future::block_on;
use serde::{Deserialize, Serialize};
use transaction_manager::journal::inspect::{self, Filter, TransactionState};
use transaction_manager::journal::{Entry, EntryKind, Journal, Json, OwedRetry, Retention};
use transaction_manager::storage::Unbounded;
use transaction_manager::{ManualClock, Rollback, StepError, TransactionId, TransactionManager};
use transaction_manager_sqlite::SqliteJournal;

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "tm-cli-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum Undo {
    Delete(String),
    /// A rollback that fails for good.
    Stubborn(String),
}

impl Rollback<()> for Undo {
    type Error = std::io::Error;

    async fn rollback(&mut self, _: &mut ()) -> Result<(), std::io::Error> {
        match self {
            Undo::Delete(_) => Ok(()),
            Undo::Stubborn(_) => Err(std::io::Error::other("quota service down")),
        }
    }
}

/// The same rollbacks, counting each try in the context (the service's
/// recoveries in the `retry` test).
impl Rollback<u32> for Undo {
    type Error = std::io::Error;

    async fn rollback(&mut self, tries: &mut u32) -> Result<(), std::io::Error> {
        *tries += 1;
        Rollback::<()>::rollback(self, &mut ()).await
    }
}

/// The ids of one transaction in each state.
struct Made {
    committed: TransactionId,
    rolled_back: TransactionId,
    owed: TransactionId,
    stuck: TransactionId,
    running: TransactionId,
}

/// A journal with one transaction in each state, made by the engine
/// (stuck: by recovery, over an undo record it cannot read; running: its
/// first entries only, as a process still running it would have them).
///
/// Driven by `futures_lite`'s `block_on`, not `ManualClock::block_on`: the
/// SQLite journal answers from its writer thread, which that executor takes
/// for a future that can never finish (no step here sleeps on the clock).
fn make_journal(path: &Path) -> Made {
    let journal = SqliteJournal::open(path).unwrap().with_retention(Retention::KeepAll);
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(&journal, Json::<1>);
    let run = |operation: &'static str, fail_at: Option<usize>, undo: fn(String) -> Undo| {
        let mut id = None;
        let _ = block_on(manager.transaction(operation).unbounded::<Undo>().run(async |tx| {
            id = Some(tx.id());
            for (i, name) in ["create_user", "create_vm"].into_iter().enumerate() {
                tx.step(name)
                    .execute(|| async move {
                        if fail_at == Some(i) {
                            Err(std::io::Error::other("no capacity"))
                        } else {
                            Ok(format!("{name}-1"))
                        }
                    })
                    .undo(|made| undo(made.clone()))
                    .await?;
            }
            Ok::<_, StepError<std::io::Error>>(())
        }));
        id.unwrap()
    };
    let committed = run("provision", None, Undo::Delete);
    let rolled_back = run("provision", Some(1), Undo::Delete);
    let owed = run("billing", Some(1), Undo::Stubborn);
    // A transaction cut by a crash whose undo record cannot be read:
    // recovery marks it stuck.
    let stuck = journal.next_id();
    block_on(async {
        journal.append(&Entry::new_raw(stuck, None, EntryKind::Begin, b"import")).await.unwrap();
        journal.append(&Entry::new_raw(stuck, Some(0), EntryKind::Done, b"\x09not an undo record")).await.unwrap();
    });
    let report = block_on(manager.recover::<Undo, Unbounded, _>(&mut ())).unwrap();
    assert_eq!(report.stuck(), 1, "{report}");
    let running = journal.next_id();
    block_on(async {
        journal.append(&Entry::new_raw(running, None, EntryKind::Begin, b"provision")).await.unwrap();
        journal.flush().await.unwrap();
    });
    let states = block_on(inspect::list(&journal, &Filter::new())).unwrap();
    let state = |id| states.iter().find(|t| t.id == id).map(|t| t.state);
    assert_eq!(state(committed), Some(TransactionState::Committed));
    assert_eq!(state(rolled_back), Some(TransactionState::RolledBack));
    assert_eq!(state(owed), Some(TransactionState::Owed));
    assert_eq!(state(stuck), Some(TransactionState::Stuck));
    assert_eq!(state(running), Some(TransactionState::Running));
    Made { committed, rolled_back, owed, stuck, running }
}

#[test]
fn list_shows_every_transaction_with_its_state_in_both_forms() {
    let dir = TempDir::new("list");
    let file = dir.file("journal.db");
    let made = make_journal(&file);
    let path = file.to_str().unwrap();
    let expected = [
        (made.committed, "committed"),
        (made.rolled_back, "rolled_back"),
        (made.owed, "owed"),
        (made.stuck, "stuck"),
        (made.running, "running"),
    ];
    let list = json(&["list", "--sqlite", path]);
    assert_eq!(states(&list), expected.map(|(id, state)| (id.to_string(), state.to_string())));
    assert_eq!(list["transactions"][0]["operation"], "provision");
    assert_eq!(list["transactions"][0]["steps"].as_array().unwrap().len(), 2);
    // Who holds what is not over: the journal that made them, closed now.
    assert_eq!(list["transactions"][0]["held_by"], serde_json::Value::Null);
    for at in 2..5 {
        let held = &list["transactions"][at]["held_by"];
        assert!(held["owner"].as_str().unwrap().starts_with("journal "), "{held}");
        assert_eq!((held["alive"].as_bool(), held["lease_until"].as_u64()), (Some(false), None), "{held}");
    }

    // People: a header, then one aligned row per transaction.
    let text = ok(&["list", "--sqlite", path]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATE"), "{text}");
    let column = lines[0].find("STATE").unwrap();
    for (line, (id, state)) in lines[1..].iter().zip(expected) {
        assert!(line.starts_with(&id.to_string()), "{line}");
        assert_eq!(&line[column..column + state.len()], state, "{text}");
    }
    assert!(lines[3].ends_with("(gone: the next recovery takes it over)"), "{text}");
    assert!(lines[1].ends_with(" -"), "{text}");
    // Not on a terminal: no colour codes.
    assert!(!text.contains('\u{1b}'));

    // Filters.
    let stuck = json(&["list", "--sqlite", path, "--state", "stuck"]);
    assert_eq!(states(&stuck), [(made.stuck.to_string(), "stuck".to_string())]);
    let over = json(&["list", "--sqlite", path, "--state", "committed", "--state", "rolled-back"]);
    assert_eq!(states(&over).len(), 2);
    let billing = json(&["list", "--sqlite", path, "--operation", "billing"]);
    assert_eq!(states(&billing), [(made.owed.to_string(), "owed".to_string())]);
    let newest = json(&["list", "--sqlite", path, "--limit", "2"]);
    assert_eq!(
        states(&newest).iter().map(|t| t.0.clone()).collect::<Vec<_>>(),
        [made.stuck.to_string(), made.running.to_string()]
    );
    let recent = json(&["list", "--sqlite", path, "--since", "1h"]);
    assert_eq!(states(&recent).len(), 5);
    let future = json(&["list", "--sqlite", path, "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(states(&future).len(), 0);
    assert_eq!(ok(&["list", "--sqlite", path, "--since", "2999-01-01T00:00:00Z"]), "no transactions\n");
}

#[test]
fn show_gives_the_steps_their_undo_records_and_a_timeline() {
    let dir = TempDir::new("show");
    let file = dir.file("journal.db");
    let made = make_journal(&file);
    let path = file.to_str().unwrap();

    let shown = json(&["show", "--sqlite", path, &made.owed.to_string()]);
    assert_eq!(shown["state"], "owed");
    let steps = shown["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{shown}");
    assert_eq!(steps[0]["name"], "create_user");
    assert_eq!(steps[0]["state"], "undo_failed");
    assert_eq!(steps[0]["undo"]["json"], serde_json::json!({ "Stubborn": "create_user-1" }));
    assert_eq!(steps[0]["undo"]["schema"], 1);
    assert!(steps[0]["rollback_error"].as_str().unwrap().contains("quota service down"), "{shown}");
    assert!(steps[0]["key"].as_str().unwrap().starts_with(&format!("{}.0-", made.owed)));
    let kinds: Vec<&str> = shown["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["begin", "done", "undo_failed"]);
    assert!(shown["entries"][0]["at"].as_u64().is_some());

    let text = ok(&["show", "--sqlite", path, &made.rolled_back.to_string()]);
    assert!(text.starts_with(&format!("{} `provision`: rolled_back", made.rolled_back)), "{text}");
    assert!(text.contains("create_user") && text.contains(r#"{"Delete":"create_user-1"}"#), "{text}");
    // One lane per step that wrote an entry, and the decision.
    assert_eq!(text.lines().filter(|l| l.starts_with("#0 create_user") && l.contains('|')).count(), 1, "{text}");
    assert!(text.lines().any(|l| l.starts_with("decision") && l.contains("rolled_back")), "{text}");
    assert!(text.contains("entries:") && text.contains("undone #0"), "{text}");

    // The picture: well-formed XML, one lane per step, the decision marked.
    let picture = dir.file("timeline.svg");
    ok(&["show", "--sqlite", path, &made.rolled_back.to_string(), "--svg", picture.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&picture).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let class = |name: &str| doc.descendants().filter(|n| n.attribute("class") == Some(name)).count();
    assert_eq!(class("lane"), 1, "one step wrote an entry: {svg}");
    assert_eq!(class("run"), 1);
    assert_eq!(class("rollback"), 1);
    assert_eq!(class("decision"), 1);
    ok(&["show", "--sqlite", path, &made.committed.to_string(), "--svg", picture.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&picture).unwrap();
    let doc = roxmltree::Document::parse(&svg).unwrap();
    assert_eq!(doc.descendants().filter(|n| n.attribute("class") == Some("lane")).count(), 2);
    let unwritable =
        fails(&["show", "--sqlite", path, &made.committed.to_string(), "--svg", "/nonexistent/dir/x.svg"], 1);
    assert!(unwritable.contains("cannot write /nonexistent/dir/x.svg"), "{unwritable}");

    let stuck = ok(&["stuck", "--sqlite", path]);
    assert!(stuck.lines().count() == 2 && stuck.contains(&made.stuck.to_string()), "{stuck}");
    assert!(stuck.contains("REASON") && stuck.contains("import"), "{stuck}");

    let missing = fails(&["show", "--sqlite", path, "tx-99.99"], 1);
    assert!(missing.contains("tx-99.99 is not in the journal"), "{missing}");
}

#[test]
fn resolve_ends_a_stuck_transaction_with_its_reason_and_refuses_what_is_not_stuck() {
    let dir = TempDir::new("resolve");
    let file = dir.file("journal.db");
    let made = make_journal(&file);
    let path = file.to_str().unwrap();

    let running = fails(&["resolve", "--sqlite", path, &made.running.to_string(), "--reason", "x"], 1);
    assert!(running.contains("--force") && running.lines().count() == 1, "{running}");
    let over = fails(&["resolve", "--sqlite", path, &made.committed.to_string(), "--reason", "x"], 1);
    assert!(over.contains("already over (committed)"), "{over}");

    let reason = "the import's rows were deleted by hand (ticket 4711)";
    let done = json(&["resolve", "--sqlite", path, &made.stuck.to_string(), "--reason", reason]);
    assert_eq!(done["resolved"], made.stuck.to_string());
    let shown = json(&["show", "--sqlite", path, &made.stuck.to_string()]);
    assert_eq!(shown["state"], "resolved");
    assert_eq!(shown["resolution"], reason);
    // Recovery leaves it alone now.
    let journal = SqliteJournal::open(&file).unwrap();
    let mut unfinished = Vec::new();
    let mut after = None;
    while let Some(id) = block_on(journal.next_unfinished(after)).unwrap() {
        unfinished.push(id);
        after = Some(id);
    }
    assert_eq!(unfinished, [made.owed, made.running]);
    drop(journal);

    // `--force` resolves a running one (the operator knows it is not).
    ok(&["resolve", "--sqlite", path, &made.running.to_string(), "--reason", "host gone", "--force"]);
}

#[test]
fn retry_makes_the_services_next_recovery_try_an_owed_transaction_once() {
    let dir = TempDir::new("retry");
    let file = dir.file("journal.db");
    let made = make_journal(&file);
    let path = file.to_str().unwrap();
    // The service: it never retries owed rollbacks by itself.
    let journal = SqliteJournal::open(&file).unwrap().with_retention(Retention::KeepAll);
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(&journal, Json::<1>).with_owed_retry(OwedRetry::Never);
    let mut tries = 0u32;
    let recover = |tries: &mut u32| block_on(manager.recover::<Undo, Unbounded, _>(tries)).unwrap();
    recover(&mut tries);
    assert_eq!(tries, 0, "not tried by itself");
    // Taken over by the service's recovery: held by its journal, alive.
    let held = &json(&["show", "--sqlite", path, &made.owed.to_string()])["held_by"];
    assert_eq!(held["alive"], true, "{held}");
    let shown = ok(&["show", "--sqlite", path, &made.owed.to_string()]);
    assert!(shown.lines().any(|line| line.starts_with("held by journal ") && line.ends_with(" (alive)")), "{shown}");

    let said = ok(&["retry", "--sqlite", path, &made.owed.to_string()]);
    assert_eq!(said, format!("{}: retry requested; the service's next recovery tries its rollbacks\n", made.owed));
    let report = recover(&mut tries);
    assert_eq!(tries, 1, "tried at the recovery after the request: {report}");
    // Its rollback failed again: stuck again, and not tried again.
    assert_eq!(report.stuck(), 2, "{report}");
    recover(&mut tries);
    assert_eq!(tries, 1, "one request, one try");
    let shown = json(&["show", "--sqlite", path, &made.owed.to_string()]);
    assert_eq!(shown["state"], "stuck");

    let asked = json(&["retry", "--sqlite", path, &made.owed.to_string()]);
    assert_eq!(asked["retry_requested"], made.owed.to_string());
    recover(&mut tries);
    assert_eq!(tries, 2);

    let over = fails(&["retry", "--sqlite", path, &made.committed.to_string()], 1);
    assert_eq!(over, format!("tmctl: {} is already over (committed): nothing to retry\n", made.committed));
    let unknown = fails(&["retry", "--sqlite", path, "tx-9.9"], 1);
    assert!(unknown.contains("is not in the journal") && unknown.lines().count() == 1, "{unknown}");
    let usage = fails(&["retry", "--sqlite", path], 2);
    assert!(usage.contains("<ID>"), "{usage}");
}

#[test]
fn prune_deletes_what_is_over_and_never_what_is_not() {
    let dir = TempDir::new("prune");
    let file = dir.file("journal.db");
    let made = make_journal(&file);
    let path = file.to_str().unwrap();
    let pruned = json(&["prune", "--sqlite", path, "--keep-last", "1"]);
    assert_eq!(pruned["pruned"]["transactions"], 1);
    let text = ok(&["prune", "--sqlite", path, "--delete-at-once"]);
    // The rolled back one: begin, done #0, undone #0, rolled_back.
    assert_eq!(text, "pruned 1 transactions (4 entries)\n");
    let left = json(&["list", "--sqlite", path]);
    assert_eq!(
        states(&left),
        [
            (made.owed.to_string(), "owed".to_string()),
            (made.stuck.to_string(), "stuck".to_string()),
            (made.running.to_string(), "running".to_string()),
        ]
    );
    let usage = fails(&["prune", "--sqlite", path], 2);
    assert!(usage.contains("--delete-at-once"), "{usage}");
    let bad = fails(&["prune", "--sqlite", path, "--keep-for", "soon"], 2);
    assert!(bad.contains("a duration such as"), "{bad}");
}

#[test]
fn bad_input_is_one_clear_line_and_a_non_zero_exit() {
    let dir = TempDir::new("bad");
    let missing = dir.file("missing.db");
    let line = fails(&["list", "--sqlite", missing.to_str().unwrap()], 1);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("no such file"), "{line}");
    assert!(!missing.exists(), "a reading command created the file");
    let line = fails(&["prune", "--sqlite", missing.to_str().unwrap(), "--delete-at-once"], 1);
    assert!(line.contains("no such file") && !missing.exists(), "{line}");

    let other = dir.file("other.db");
    rusqlite::Connection::open(&other).unwrap().execute_batch("CREATE TABLE users (id INTEGER)").unwrap();
    let line = fails(&["list", "--sqlite", other.to_str().unwrap()], 1);
    assert!(line.contains("holds no transaction-manager journal"), "{line}");
    // A writing command does not turn it into a journal either.
    fails(&["prune", "--sqlite", other.to_str().unwrap(), "--delete-at-once"], 1);
    let conn = rusqlite::Connection::open(&other).unwrap();
    let tables: i64 =
        conn.query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 1);

    let corrupt = dir.file("corrupt.db");
    std::fs::write(&corrupt, vec![0x5a; 8192]).unwrap();
    let line = fails(&["list", "--sqlite", corrupt.to_str().unwrap()], 1);
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.contains("not a journal"), "{line}");

    let newer = dir.file("newer.db");
    drop(SqliteJournal::open(&newer).unwrap());
    rusqlite::Connection::open(&newer)
        .unwrap()
        .execute("UPDATE tm_meta SET value = 99 WHERE key = 'schema'", [])
        .unwrap();
    let line = fails(&["list", "--sqlite", newer.to_str().unwrap()], 1);
    assert!(line.contains("schema 99") && line.contains("newer version"), "{line}");

    let line = fails(&["list"], 1);
    assert!(line.contains("--sqlite"), "{line}");
    let line = fails(&["show", "--sqlite", newer.to_str().unwrap(), "17"], 2);
    assert!(line.contains("not a transaction id"), "{line}");
    let line = fails(&["list", "--sqlite", newer.to_str().unwrap(), "--state", "sleeping"], 2);
    assert!(line.contains("unknown state `sleeping`"), "{line}");
}
