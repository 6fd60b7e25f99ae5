//! Real crashes: a child process runs journaled transactions against a
//! SQLite journal and is killed with SIGKILL at random points, 200 times;
//! each restart recovers first. A second test runs two such children on one
//! file at once (each recovering at its start while the other runs) and
//! kills one of them at random, 120 times, then both. A third damages
//! copies of a killed journal (a WAL frame, the main file cut in half, an
//! owed undo record). The effects (resources created and
//! deleted) go to a separate, fsynced log. At the end the journal and the
//! effects are checked against the guarantees:
//!
//! - every step whose `Done` is durable is rolled back, unless its
//!   transaction committed;
//! - a committed transaction is never rolled back;
//! - nothing is rolled back that was not created;
//! - a rollback refused (about one in four fails for good, live or during
//!   recovery, except at the last restart) is done by a later recovery;
//! - after recovery nothing is unfinished.
//!
//! No sleeps: the parent waits for lines the child prints after each effect
//! is durable, and kills it after a random number of them. Replay a run
//! with `TM_CRASH_SEED=<seed>` (printed with `--nocapture`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use transaction_manager::{
    Rollback, StepError, TokioClock, TransactionId, TransactionManager,
    journal::{EntryKind, IdempotencyKey, Journal, Postcard, SqliteJournal},
    storage::Unbounded,
};

/// How many kills (`TM_CRASH_KILLS` overrides, for a longer soak).
fn kills() -> usize {
    std::env::var("TM_CRASH_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(200)
}
const CHILD_ENV: &str = "TM_CRASH_CHILD_DIR";

/// The effects log: one fsynced line per resource created or deleted.
struct Effects {
    log: File,
    /// Refuses about one rollback in four when not 0 (a random state): a
    /// rollback that fails for good, live or during recovery, leaves its
    /// transaction owed for a later restart. The last restart refuses none.
    refuse: u64,
}

impl Effects {
    fn open(dir: &Path, refuse: u64) -> Effects {
        let mut log = OpenOptions::new().create(true).append(true).open(dir.join("effects.log")).unwrap();
        // A kill may have cut the last line short: start on a line of our own.
        log.write_all(b"\n").unwrap();
        Effects { log, refuse }
    }

    fn record(&mut self, what: &str, key: &str) {
        // One write per line (`writeln!` may issue several), ended by a
        // mark: a line cut short (a kill, a full disk) has none.
        self.log.write_all(format!("{what} {key} .\n").as_bytes()).unwrap();
        self.log.sync_data().unwrap();
        // After the effect is durable: the parent may kill us from here on.
        println!("{what} {key}");
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Delete(IdempotencyKey);

impl Rollback<Effects> for Delete {
    type Error = std::io::Error;

    async fn rollback(&mut self, effects: &mut Effects) -> Result<(), std::io::Error> {
        if effects.refuse != 0 {
            effects.refuse = next(effects.refuse);
            if effects.refuse >> 62 == 0 {
                effects.record("refused", &self.0.to_string());
                return Err(std::io::Error::other("refused"));
            }
        }
        effects.record("delete", &self.0.to_string());
        Ok(())
    }
}

type Manager = TransactionManager<
    TokioClock,
    (),
    transaction_manager::abandon::Unattended,
    transaction_manager::journal::Journaled<SqliteJournal, Postcard<1>>,
>;

/// The child: recover, then run transactions until killed.
fn child(dir: &Path, seed: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    runtime.block_on(async {
        let journal = SqliteJournal::open(dir.join("journal.db")).unwrap();
        let manager: Manager = TransactionManager::new(TokioClock::new()).with_journal(journal, Postcard::<1>);
        let mut effects = Effects::open(dir, if seed == 0 { 0 } else { next(seed) | 1 });
        let report = manager.recover::<Delete, Unbounded, _>(&mut effects).await.unwrap();
        println!("recovered {}", report.found());
        if seed == 0 {
            // The last restart only recovers.
            return;
        }
        let mut rng = seed;
        loop {
            rng = next(rng);
            let fail = rng % 2 == 0;
            let _ = manager
                .transaction("provision")
                .unbounded::<Delete>()
                .run_with(&mut effects, async |tx| {
                    for _ in 0..3 {
                        let key = tx.next_step_key();
                        tx.step("create")
                            .execute_with(async move |effects: &mut Effects| {
                                effects.record("create", &key.to_string());
                                Ok::<_, std::io::Error>(key)
                            })
                            .undo(|key| Delete(*key))
                            .await?;
                    }
                    if fail {
                        tx.step("check").run(|| async { Err(std::io::Error::other("refused")) }).await?;
                    }
                    Ok::<_, StepError<std::io::Error>>(())
                })
                .await;
            println!("ended");
        }
    });
}

fn next(state: u64) -> u64 {
    state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407)
}

#[test]
fn child_entry() {
    // Only does something when started by `killed_at_random_points_...`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let seed = std::env::var("TM_CRASH_CHILD_SEED").unwrap().parse().unwrap();
        child(Path::new(&dir), seed);
    }
}

fn spawn_child(dir: &Path, seed: u64) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env("TM_CRASH_CHILD_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn killed_at_random_points_loses_no_owed_rollback() {
    let seed: u64 = std::env::var("TM_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("TM_CRASH_SEED={seed}");
    let dir: PathBuf = std::env::temp_dir().join(format!("tm-crash-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let lines_seen = kill_at_random(&dir, seed, kills());
    check(&dir, kills(), lines_seen);
}

/// Starts a child on `dir` `kills` times and kills each after a random
/// number of lines; returns how many lines they printed.
fn kill_at_random(dir: &Path, seed: u64, kills: usize) -> usize {
    let mut rng = seed;
    let mut lines_seen = 0usize;
    for kill in 0..kills {
        rng = next(rng);
        // Kill after 1 to 24 lines (effects or ends) past the recovery line.
        let after = 1 + (rng >> 33) as usize % 24;
        let mut child = spawn_child(dir, (rng ^ kill as u64) | 1);
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = 0;
        for line in stdout.lines() {
            let line = line.unwrap();
            // The test harness prints its own lines too.
            if !["create ", "delete ", "ended"].iter().any(|p| line.starts_with(p)) {
                continue;
            }
            lines_seen += 1;
            seen += 1;
            if seen >= after {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    lines_seen
}

/// A last restart that only recovers, then the effects against the journal.
fn check(dir: &Path, kills: usize, lines_seen: usize) {
    // A last restart that only recovers, and exits.
    let status = spawn_child(dir, 0).wait_with_output().unwrap().status;
    assert!(status.success(), "the last recovery failed: {status}");

    // The effects, and what the journal says.
    let mut created = BTreeSet::new();
    let mut deleted: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused = BTreeSet::new();
    for line in std::fs::read_to_string(dir.join("effects.log")).unwrap().lines() {
        // A kill can cut the last line short: it was not fsynced, so it
        // was never reported either; it has no end mark.
        let Some(line) = line.strip_suffix(" .") else { continue };
        match line.split_once(' ') {
            Some(("create", key)) => {
                created.insert(key.to_string());
            }
            Some(("delete", key)) => *deleted.entry(key.to_string()).or_default() += 1,
            Some(("refused", key)) => {
                refused.insert(key.to_string());
            }
            _ => {}
        }
    }
    let journal = SqliteJournal::open(dir.join("journal.db")).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let transactions: BTreeSet<u64> =
        created.iter().map(|key| key.parse::<IdempotencyKey>().unwrap().transaction().get()).collect();
    let mut committed_count = 0;
    let mut leaked = 0;
    for &id in &transactions {
        let id = TransactionId::new(id);
        let mut entries = Vec::new();
        runtime.block_on(journal.read(id, &mut |e| entries.push((e.step, e.kind)))).unwrap();
        let committed = entries.iter().any(|&(_, kind)| kind == EntryKind::Committed.code());
        committed_count += usize::from(committed);
        for &(step, kind) in &entries {
            if kind != EntryKind::Done.code() {
                continue;
            }
            let key = IdempotencyKey::new(journal.origin(), id, step.unwrap()).to_string();
            if committed {
                assert!(!deleted.contains_key(&key), "{key}: its transaction committed, yet it was rolled back");
            } else {
                assert!(deleted.contains_key(&key), "{key}: its Done was durable, yet it was never rolled back");
            }
        }
        for key in created.iter().filter(|k| k.parse::<IdempotencyKey>().unwrap().transaction() == id) {
            let step = key.parse::<IdempotencyKey>().unwrap().step();
            let done = entries.iter().any(|&(s, kind)| s == Some(step) && kind == EntryKind::Done.code());
            if !done && !deleted.contains_key(key) {
                // Created, killed before its `Done` was durable: the gap
                // GUARANTEES.md names (only an uncertain rollback covers it).
                leaked += 1;
            }
        }
    }
    // A rollback that failed for good stayed owed until one succeeded.
    for key in &refused {
        assert!(deleted.contains_key(key), "{key}: its rollback failed for good and was never done later");
    }
    for key in deleted.keys() {
        assert!(created.contains(key), "{key} was rolled back but never created");
    }
    let unfinished = runtime.block_on(journal.next_unfinished(None)).unwrap();
    assert_eq!(unfinished, None, "recovery left a transaction unfinished");
    println!(
        "{} kills, {lines_seen} lines: {} transactions ({committed_count} committed), {} resources created, \
         {} rolled back ({} more than once), {} rollbacks refused (each done at a later recovery), \
         {leaked} created but killed before their Done was durable",
        kills,
        transactions.len(),
        created.len(),
        deleted.len(),
        deleted.values().filter(|&&n| n > 1).count(),
        refused.len(),
    );
    assert!(transactions.len() >= kills / 2, "too few transactions ran: the kills came too early");
    drop(journal);
    std::fs::remove_dir_all(dir).unwrap();
}

/// How many kills the shared-file test makes (`TM_CRASH_SHARED_KILLS`).
fn shared_kills() -> usize {
    std::env::var("TM_CRASH_SHARED_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(120)
}

/// Two processes on one SQLite file, each recovering at every start while
/// the other runs transactions: a recovery must never roll back the other
/// one's live work (a committed transaction would then have a step rolled
/// back), and what a killed one owed is rolled back by the other or by its
/// own next start.
#[test]
fn two_processes_on_one_file_killed_at_random_points_never_roll_back_each_others_work() {
    let seed: u64 = std::env::var("TM_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("TM_CRASH_SEED={seed}");
    let dir: PathBuf = std::env::temp_dir().join(format!("tm-crash-shared-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (lines, from) = std::sync::mpsc::channel::<(usize, u64)>();
    let mut rng = seed;
    let mut generation = 0u64;
    let start = |slot: usize, rng: u64, generation: &mut u64| {
        *generation += 1;
        let mut child = spawn_child(&dir, (rng ^ *generation) | 1);
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (lines, me) = (lines.clone(), *generation);
        // Drains the child's output, so it never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if ["create ", "delete ", "ended"].iter().any(|p| line.starts_with(p))
                    && lines.send((slot, me)).is_err()
                {
                    return;
                }
            }
        });
        (child, me)
    };
    let mut children = [start(0, rng, &mut generation), start(1, next(rng), &mut generation)];
    let mut seen = [0usize; 2];
    let mut lines_seen = 0usize;
    let mut kills = 0;
    while kills < shared_kills() {
        rng = next(rng);
        let victim = (rng >> 40) as usize % 2;
        let after = 1 + (rng >> 33) as usize % 24;
        // Lines of both children, until the victim printed `after` more.
        while seen[victim] < after {
            let (slot, generation) = from.recv().unwrap();
            if children[slot].1 == generation {
                seen[slot] += 1;
                lines_seen += 1;
            }
        }
        children[victim].0.kill().unwrap();
        children[victim].0.wait().unwrap();
        kills += 1;
        seen[victim] = 0;
        children[victim] = start(victim, rng, &mut generation);
    }
    for (child, _) in &mut children {
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
    }
    check(&dir, kills, lines_seen);
}

/// Copies the journal's files (`journal.db`, its WAL and mark) to `to`.
fn copy_journal(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["journal.db", "journal.db-wal", "journal.db-hwm"] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
}

/// The journal's files after kills, damaged in copies: a flipped byte in a
/// WAL frame (SQLite would drop every later commit), the main file cut in
/// half, a flipped byte in an owed undo record. Each ends typed, stuck or
/// detected: never a hang, never a silent loss.
#[test]
fn damaged_journals_end_typed_stuck_or_detected() {
    let seed: u64 = std::env::var("TM_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("TM_CRASH_SEED={seed}");
    let base: PathBuf = std::env::temp_dir().join(format!("tm-crash-damage-{}-{seed}", std::process::id()));
    let dir = base.join("journal");
    std::fs::create_dir_all(&dir).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();

    // Kill until the journal owes a rollback and its WAL holds frames.
    let mut rng = seed;
    let mut kills = 0;
    let (owed, payload) = loop {
        assert!(kills < 100, "no owed rollback after {kills} kills");
        rng = next(rng);
        kill_at_random(&dir, rng, 1);
        kills += 1;
        let wal_frames = std::fs::metadata(dir.join("journal.db-wal")).map_or(0, |m| m.len().saturating_sub(32) / 4120);
        let look = base.join(format!("look-{kills}"));
        copy_journal(&dir, &look);
        let journal = SqliteJournal::open(look.join("journal.db")).unwrap();
        let mut found = None;
        let mut after = None;
        while let Some(id) = runtime.block_on(journal.next_unfinished(after)).unwrap() {
            after = Some(id);
            let mut done = None;
            runtime
                .block_on(journal.read(id, &mut |e| {
                    if e.kind == EntryKind::Done.code() && done.is_none() {
                        done = Some(e.payload.to_vec());
                    }
                }))
                .unwrap();
            if let Some(done) = done {
                found = Some((id, done));
                break;
            }
        }
        drop(journal);
        std::fs::remove_dir_all(&look).unwrap();
        if let (Some(found), true) = (found, wal_frames >= 6) {
            break found;
        }
    };

    // 1. A damaged WAL frame (the second one; later commits exist).
    let wal_copy = base.join("wal");
    copy_journal(&dir, &wal_copy);
    let mut wal = std::fs::read(wal_copy.join("journal.db-wal")).unwrap();
    let page_size = u32::from_be_bytes(wal[8..12].try_into().unwrap()) as usize;
    wal[32 + (24 + page_size) + 24 + page_size / 2] ^= 0x55;
    std::fs::write(wal_copy.join("journal.db-wal"), &wal).unwrap();
    let wal_outcome = match SqliteJournal::open(wal_copy.join("journal.db")) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("a damaged WAL frame opened without a word"),
    };

    // 2. The main file cut in half (after a checkpoint): a typed error at
    // open or at recovery.
    let cut = base.join("cut");
    copy_journal(&dir, &cut);
    drop(SqliteJournal::open(cut.join("journal.db")).unwrap());
    let file = OpenOptions::new().write(true).open(cut.join("journal.db")).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len / 2).unwrap();
    drop(file);
    let cut_outcome = match SqliteJournal::open(cut.join("journal.db")) {
        Err(error) => format!("open: {error}"),
        Ok(journal) => runtime.block_on(async {
            let manager: Manager = TransactionManager::new(TokioClock::new()).with_journal(journal, Postcard::<1>);
            let mut effects = Effects::open(&cut, 0);
            match manager.recover::<Delete, Unbounded, _>(&mut effects).await {
                Err(error) => format!("recover: {error}"),
                Ok(report) => {
                    panic!("a main file cut in half ({len} -> {} bytes) recovered without a word: {report}", len / 2)
                }
            }
        }),
    };
    // 3. A flipped byte in an owed undo record (checkpointed into the main
    // file first, where SQLite keeps no checksum of its own): recovery
    // makes the transaction stuck, and ends.
    let record = base.join("record");
    copy_journal(&dir, &record);
    drop(SqliteJournal::open(record.join("journal.db")).unwrap());
    let mut db = std::fs::read(record.join("journal.db")).unwrap();
    let mut flipped = 0;
    let mut at = 0;
    while let Some(offset) = db[at..].windows(payload.len()).position(|w| w == payload.as_slice()) {
        db[at + offset + payload.len() / 2] ^= 0x10;
        flipped += 1;
        at += offset + payload.len();
    }
    assert!(flipped > 0, "the owed record is not in the main file");
    std::fs::write(record.join("journal.db"), &db).unwrap();
    let stuck = runtime.block_on(async {
        let journal = SqliteJournal::open(record.join("journal.db")).unwrap();
        let manager: Manager = TransactionManager::new(TokioClock::new()).with_journal(journal, Postcard::<1>);
        let mut effects = Effects::open(&record, 0);
        let report = manager.recover::<Delete, Unbounded, _>(&mut effects).await.unwrap();
        let mut stuck = Vec::new();
        manager.stuck(|id, _| stuck.push(id)).await.unwrap();
        assert!(stuck.contains(&owed), "{owed}: its damaged record was not made stuck ({report})");
        stuck.len()
    });

    println!(
        "{kills} kills; damaged WAL frame: {wal_outcome}; main file cut in half: {cut_outcome}; \
         flipped byte in an owed record ({flipped} copies): {stuck} stuck"
    );
    std::fs::remove_dir_all(&base).unwrap();
}
