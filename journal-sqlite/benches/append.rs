//! What the SQLite journal costs per durable append, against the same
//! write by hand, and what group commit gains with many appenders.
//!
//! `cargo bench -p transaction-manager-sqlite --bench append` prints, per
//! figure, wall time per entry and the process's CPU time per entry (user
//! and system time of all threads: the writer thread does most of the
//! work), the appends per second, and the ratios. `-- --smoke` runs the
//! same code with tiny counts and checks results only, never timing.
//!
//! The entry is a durable `Done` with a 64-byte payload (about what a step
//! with a small undo record writes). The baseline is the hand-written
//! write: the same row in the same tables with statements prepared once,
//! one transaction (one fsync) per entry, on one connection in the calling
//! thread, WAL and `synchronous = FULL` as the journal uses. The file is under the system's
//! temp dir (`TM_BENCH_DIR` to choose another): fsync costs what that disk
//! costs, so compare figures of one run, not across machines.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::cell::Cell;
use std::convert::Infallible;

use transaction_manager::{
    ManualClock, Rollback, StepError, TransactionManager,
    journal::{Entry, EntryKind, Journal, Postcard},
    storage::Fixed,
};
use transaction_manager_sqlite::SqliteJournal;

const PAYLOAD: [u8; 64] = [0x5a; 64];

/// Wall time and process CPU time (user and system, every thread).
#[derive(Clone, Copy)]
struct Took {
    wall: Duration,
    cpu: Duration,
}

fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_SELF always exists.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: getrusage filled it in (rc == 0); it was zeroed before anyway.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn timed(run: impl FnOnce()) -> Took {
    let (cpu, wall) = (process_cpu(), Instant::now());
    run();
    Took { wall: wall.elapsed(), cpu: process_cpu() - cpu }
}

/// Per-entry figures: the medians of wall and CPU time over the samples.
#[derive(Clone, Copy)]
struct PerEntry {
    wall_us: f64,
    cpu_us: f64,
}

impl PerEntry {
    fn per_second(self) -> f64 {
        1e6 / self.wall_us
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// One appender: `n` durable appends, one after the other.
fn one_appender(journal: &SqliteJournal, n: u32) -> Took {
    let id = journal.next_id();
    timed(|| {
        futures_lite::future::block_on(async {
            for step in 0..n {
                journal.append(&Entry::new_raw(id, Some(step), EntryKind::Done, &PAYLOAD)).await.unwrap();
            }
        })
    })
}

/// `tasks` appenders on one executor thread, `n` appends each.
fn concurrent(journal: &SqliteJournal, tasks: u32, n: u32) -> Took {
    let ids: Vec<_> = (0..tasks).map(|_| journal.next_id()).collect();
    let executor = async_executor::LocalExecutor::new();
    let handles: Vec<_> = ids
        .iter()
        .map(|&id| {
            executor.spawn(async move {
                for step in 0..n {
                    journal.append(&Entry::new_raw(id, Some(step), EntryKind::Done, &PAYLOAD)).await.unwrap();
                }
            })
        })
        .collect();
    timed(|| {
        futures_lite::future::block_on(executor.run(async {
            for handle in handles {
                handle.await;
            }
        }))
    })
}

/// The undo record of the transaction figures: plain data.
#[derive(serde::Serialize, serde::Deserialize)]
struct Undo(u32);

impl Rollback<()> for Undo {
    type Error = Infallible;

    async fn rollback(&mut self, _: &mut ()) -> Result<(), Infallible> {
        Ok(())
    }
}

/// A 3-step transaction, each step with an undo record, committed.
macro_rules! three_steps {
    ($manager:expr) => {
        $manager
            .transaction("t")
            .fixed::<Undo, 3>()
            .run(async |tx| {
                for i in 0..3u32 {
                    tx.step("s").execute(|| async move { Ok::<_, Infallible>(i) }).undo(|n| Undo(*n)).await?;
                }
                Ok::<_, StepError<Infallible>>(())
            })
            .await
            .unwrap()
    };
}

/// `tasks` tasks on one executor thread, `n` 3-step transactions each,
/// with the journal or without (`journal: None`).
fn transactions(journal: Option<&SqliteJournal>, tasks: u32, n: u32) -> Took {
    let clock = ManualClock::new();
    let plain = TransactionManager::new(&clock);
    let journaled = journal.map(|journal| TransactionManager::new(&clock).with_journal(journal, Postcard::<1>));
    let executor = async_executor::LocalExecutor::new();
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (plain, journaled) = (&plain, journaled.as_ref());
            executor.spawn(async move {
                for _ in 0..n {
                    match journaled {
                        Some(manager) => drop(three_steps!(manager)),
                        None => drop(three_steps!(plain)),
                    }
                }
            })
        })
        .collect();
    timed(|| {
        futures_lite::future::block_on(executor.run(async {
            for handle in handles {
                handle.await;
            }
        }))
    })
}

/// Leaves `n` journaled transactions unfinished (one durable `Done` each,
/// then dropped, as a crash would leave them), then times `recover`.
fn recovery(path: &Path, n: u32) -> (Took, usize) {
    let journal = SqliteJournal::open(path).unwrap();
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(&journal, Postcard::<1>);
    let started = Cell::new(0u32);
    {
        let executor = async_executor::LocalExecutor::new();
        for _ in 0..n {
            let (manager, started) = (&manager, &started);
            executor
                .spawn(async move {
                    let _ = manager
                        .transaction("left")
                        .fixed::<Undo, 2>()
                        .run(async |tx| {
                            tx.step("a").execute(|| async { Ok::<_, Infallible>(1) }).undo(|n| Undo(*n)).await?;
                            started.set(started.get() + 1);
                            std::future::pending::<()>().await;
                            Ok::<_, StepError<Infallible>>(())
                        })
                        .await;
                })
                .detach();
        }
        futures_lite::future::block_on(executor.run(async {
            while started.get() < n {
                futures_lite::future::yield_now().await;
            }
        }));
        // Dropping the executor drops the transactions mid-way.
    }
    futures_lite::future::block_on(journal.flush()).unwrap();
    let _ = manager;
    drop(journal);
    // A restart: a new journal on the file, recovering.
    let journal = SqliteJournal::open(path).unwrap();
    let manager = TransactionManager::new(&clock).with_journal(&journal, Postcard::<1>);
    let mut found = 0;
    let took = timed(|| {
        let report = futures_lite::future::block_on(manager.recover::<Undo, Fixed<2>, _>(&mut ())).unwrap();
        found = report.rolled_back();
    });
    (took, found)
}

/// The hand-written write: one transaction (one fsync) per entry.
struct ByHand {
    conn: rusqlite::Connection,
    next: u64,
}

impl ByHand {
    fn open(path: &Path) -> Self {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0)).unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS tm_entries (seq INTEGER PRIMARY KEY, tx INTEGER NOT NULL,
                 step INTEGER NOT NULL, kind INTEGER NOT NULL, payload BLOB NOT NULL, UNIQUE (tx, step, kind));
             CREATE TABLE IF NOT EXISTS tm_transactions (tx INTEGER PRIMARY KEY, finished INTEGER NOT NULL);",
        )
        .unwrap();
        ByHand { conn, next: 1 }
    }

    fn append(&mut self, n: u32) -> Took {
        let tx = self.next;
        self.next += 1;
        let conn = &self.conn;
        // Prepared once, as the journal's writer does.
        let mut insert =
            conn.prepare("INSERT OR IGNORE INTO tm_entries (tx, step, kind, payload) VALUES (?1, ?2, 3, ?3)").unwrap();
        let mut open = conn.prepare("INSERT OR IGNORE INTO tm_transactions (tx, finished) VALUES (?1, 0)").unwrap();
        timed(|| {
            for step in 0..n {
                conn.execute_batch("BEGIN IMMEDIATE").unwrap();
                insert.execute(rusqlite::params![tx as i64, step, &PAYLOAD[..]]).unwrap();
                open.execute([tx as i64]).unwrap();
                conn.execute_batch("COMMIT").unwrap();
            }
        })
    }
}

fn row(figure: &str, p: PerEntry) {
    println!("{figure:<48} {:>8.1} µs/entry (cpu {:>6.1} µs) {:>9.0} appends/s", p.wall_us, p.cpu_us, p.per_second());
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() {
    let smoke = std::env::args().any(|a| a == "--smoke")
        || std::env::var("TM_BENCH_SMOKE").is_ok_and(|v| v != "0" && !v.is_empty());
    let (samples, n_one, n_each, tasks) = if smoke { (1, 8, 2, 64) } else { (7, 300, 30, 64) };
    let base = std::env::var_os("TM_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = TempDir(base.join(format!("tm-sqlite-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();

    println!("# transaction-manager-sqlite: durable appends");
    println!();
    println!(
        "machine: {} cores; file in {}; {samples} samples, medians; cpu = process user+system time, all threads",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        dir.0.display()
    );
    println!(
        "entry: durable `Done`, {}-byte payload; 1 appender: {n_one} appends a sample; {tasks} appenders: {n_each} each",
        PAYLOAD.len()
    );
    println!();

    let journal = SqliteJournal::open(dir.0.join("journal.db")).unwrap();
    let mut by_hand = ByHand::open(&dir.0.join("by-hand.db"));
    // Warm-up: files created, pages cached.
    one_appender(&journal, n_one.min(20));
    by_hand.append(n_one.min(20));
    concurrent(&journal, tasks, 1);

    let (mut hand, mut one, mut many) = (Vec::new(), Vec::new(), Vec::new());
    let per = |took: Took, n: u32| {
        (took.wall.as_secs_f64() * 1e6 / f64::from(n), took.cpu.as_secs_f64() * 1e6 / f64::from(n))
    };
    // Interleaved, so that a neighbour's load falls on all three alike.
    for _ in 0..samples {
        hand.push(per(by_hand.append(n_one), n_one));
        one.push(per(one_appender(&journal, n_one), n_one));
        many.push(per(concurrent(&journal, tasks, n_each), tasks * n_each));
    }
    let summarize = |xs: &[(f64, f64)]| PerEntry {
        wall_us: median(xs.iter().map(|x| x.0).collect()),
        cpu_us: median(xs.iter().map(|x| x.1).collect()),
    };
    let (hand, one, many) = (summarize(&hand), summarize(&one), summarize(&many));

    row("by hand: one transaction per entry", hand);
    row("journal, 1 appender", one);
    row(&format!("journal, {tasks} concurrent appenders (group commit)"), many);
    println!();
    println!(
        "journal overhead, 1 appender: {:+.1} µs/entry (cpu {:+.1} µs), ratio {:.2}x (cpu {:.2}x) against by hand",
        one.wall_us - hand.wall_us,
        one.cpu_us - hand.cpu_us,
        one.wall_us / hand.wall_us,
        one.cpu_us / hand.cpu_us
    );
    println!(
        "group commit gain, {tasks} vs 1 appender: {:.1}x less wall time per entry (cpu {:.1}x less)",
        one.wall_us / many.wall_us,
        one.cpu_us / many.cpu_us
    );

    // Whole transactions through the engine: the same 3-step transaction
    // with the journal and without, one at a time and 64 at once.
    let (n_tx, n_tx_each) = if smoke { (4, 1) } else { (50, 5) };
    let tx_journal = SqliteJournal::open(dir.0.join("transactions.db")).unwrap();
    transactions(Some(&tx_journal), 1, n_tx.min(5));
    let (mut bare1, mut jr1, mut bare64, mut jr64) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..samples {
        bare1.push(per(transactions(None, 1, n_tx), n_tx));
        jr1.push(per(transactions(Some(&tx_journal), 1, n_tx), n_tx));
        bare64.push(per(transactions(None, tasks, n_tx_each), tasks * n_tx_each));
        jr64.push(per(transactions(Some(&tx_journal), tasks, n_tx_each), tasks * n_tx_each));
    }
    let (bare1, jr1, bare64, jr64) = (summarize(&bare1), summarize(&jr1), summarize(&bare64), summarize(&jr64));
    println!();
    println!("# 3-step committed transaction (3 durable Done + 1 Committed), ManualClock, one executor thread");
    println!();
    let tx_row = |figure: &str, p: PerEntry| {
        println!("{figure:<48} {:>8.1} µs/tx    (cpu {:>6.1} µs) {:>9.0} tx/s", p.wall_us, p.cpu_us, p.per_second());
    };
    tx_row("no journal, 1 at a time", bare1);
    tx_row("journal, 1 at a time", jr1);
    tx_row(&format!("no journal, {tasks} concurrent"), bare64);
    tx_row(&format!("journal, {tasks} concurrent"), jr64);
    println!();
    println!(
        "journal overhead per step, 1 at a time: {:+.1} µs (cpu {:+.1} µs); {tasks} concurrent: {:+.1} µs (cpu {:+.1} µs)",
        (jr1.wall_us - bare1.wall_us) / 3.0,
        (jr1.cpu_us - bare1.cpu_us) / 3.0,
        (jr64.wall_us - bare64.wall_us) / 3.0,
        (jr64.cpu_us - bare64.cpu_us) / 3.0,
    );
    drop(tx_journal);

    let unfinished = if smoke { 100 } else { 10_000 };
    let (took, rolled_back) = recovery(&dir.0.join("recovery.db"), unfinished);
    println!();
    println!(
        "recovery of {unfinished} unfinished transactions (1 owed rollback each): {:.2} s (cpu {:.2} s), {:.0} tx/s",
        took.wall.as_secs_f64(),
        took.cpu.as_secs_f64(),
        f64::from(unfinished) / took.wall.as_secs_f64()
    );
    if rolled_back != unfinished as usize {
        println!("CHECK FAILED: recovery rolled back {rolled_back} of {unfinished}");
        std::process::exit(1);
    }

    // Checks: every entry is there, nothing else is asserted.
    drop(journal);
    let journal = SqliteJournal::open(dir.0.join("journal.db")).unwrap();
    let mut count = 0u32;
    let mut after = None;
    while let Some(id) = futures_lite::future::block_on(journal.next_unfinished(after)).unwrap() {
        futures_lite::future::block_on(journal.read(id, &mut |_| count += 1)).unwrap();
        after = Some(id);
    }
    let expected = (n_one.min(20) + tasks) + samples * (n_one + tasks * n_each);
    println!();
    if count == expected {
        println!("all checks passed ({count} entries read back)");
    } else {
        println!("CHECK FAILED: {count} entries read back, {expected} appended");
        std::process::exit(1);
    }
}
