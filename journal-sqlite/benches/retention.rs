//! The SQLite journal's size under a steady load, with and without
//! retention: 1,000,000 committed 3-step transactions through the engine
//! (64 at a time on one executor thread, `ManualClock`), with
//! `Retention::KeepAll`, `DeleteAtOnce` and `KeepFor(10 minutes)` of the
//! journal's virtual wall clock, which moves 1 ms per transaction (1,000
//! transactions a second). Prints the file's size (database and WAL) and
//! its rows at checkpoints, and wall and CPU time per transaction.
//!
//! `cargo bench -p transaction-manager-sqlite --bench retention` (about
//! two minutes on 2 cores); `-- --smoke` runs 3,000 transactions and checks
//! the results only; `-- --transactions N` for another count. The file is
//! under the system's temp dir (`TM_BENCH_DIR` to choose another).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use transaction_manager::{
    ManualClock, Rollback, StepError, TransactionManager,
    journal::{Journal, Postcard},
};
use transaction_manager_sqlite::{Retention, SqliteJournal};

#[derive(serde::Serialize, serde::Deserialize)]
struct Undo(u32);

impl Rollback<()> for Undo {
    type Error = Infallible;

    async fn rollback(&mut self, _: &mut ()) -> Result<(), Infallible> {
        Ok(())
    }
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

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The file's size and rows now.
struct Snapshot {
    done: u64,
    db: u64,
    wal: u64,
    entries: i64,
    transactions: i64,
}

fn snapshot(path: &Path, done: u64) -> Snapshot {
    let conn = rusqlite::Connection::open(path).unwrap();
    let count = |table: &str| conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)).unwrap();
    Snapshot {
        done,
        db: size(path),
        wal: size(&with_suffix(path, "-wal")),
        entries: count("tm_entries"),
        transactions: count("tm_transactions"),
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `total` committed transactions with `retention`, `tasks` at a time;
/// returns snapshots at each tenth, and wall and CPU time.
fn run(path: &Path, retention: Retention, total: u64, tasks: u64) -> (Vec<Snapshot>, Duration, Duration) {
    let now = Arc::new(AtomicU64::new(0));
    let start = SystemTime::now();
    let journal = SqliteJournal::open(path).unwrap().with_retention(retention).with_clock({
        let now = now.clone();
        move || start + Duration::from_millis(now.load(Ordering::Relaxed))
    });
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(&journal, Postcard::<1>);
    let mut snapshots = Vec::new();
    let (wall, cpu) = (Instant::now(), process_cpu());
    let tenth = (total / 10).max(1);
    let mut done = 0;
    while done < total {
        let round = tenth.min(total - done);
        let executor = async_executor::LocalExecutor::new();
        let handles: Vec<_> = (0..tasks)
            .map(|task| {
                let (manager, now) = (&manager, &now);
                let n = round / tasks + u64::from(task < round % tasks);
                executor.spawn(async move {
                    for _ in 0..n {
                        manager
                            .transaction("t")
                            .fixed::<Undo, 3>()
                            .run(async |tx| {
                                for i in 0..3u32 {
                                    tx.step("s")
                                        .execute(|| async move { Ok::<_, Infallible>(i) })
                                        .undo(|n| Undo(*n))
                                        .await?;
                                }
                                Ok::<_, StepError<Infallible>>(())
                            })
                            .await
                            .unwrap();
                        now.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        futures_lite::future::block_on(executor.run(async {
            for handle in handles {
                handle.await;
            }
        }));
        done += round;
        futures_lite::future::block_on(journal.flush()).unwrap();
        snapshots.push(snapshot(path, done));
    }
    let took = (wall.elapsed(), process_cpu() - cpu);
    // Nothing unfinished is left, whatever the retention.
    assert_eq!(futures_lite::future::block_on(journal.next_unfinished(None)).unwrap(), None);
    (snapshots, took.0, took.1)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke =
        args.iter().any(|a| a == "--smoke") || std::env::var("TM_BENCH_SMOKE").is_ok_and(|v| v != "0" && !v.is_empty());
    let total: u64 = match args.iter().position(|a| a == "--transactions") {
        Some(at) => args.get(at + 1).and_then(|n| n.parse().ok()).expect("--transactions N"),
        None if smoke => 3_000,
        None => 1_000_000,
    };
    let tasks = 64;
    let base = std::env::var_os("TM_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = base.join(format!("tm-sqlite-retention-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    println!("# transaction-manager-sqlite: file size under a steady load, by retention");
    println!();
    println!(
        "{total} committed 3-step transactions (3 durable Done + Committed + lazy Begin), {tasks} at a time, one executor thread, ManualClock;"
    );
    println!("the journal's virtual wall clock moves 1 ms per transaction (1,000 tx/s); file in {}", dir.display());
    let policies = [
        ("KeepAll", Retention::KeepAll),
        ("DeleteAtOnce", Retention::DeleteAtOnce),
        ("KeepFor(10 min)", Retention::KeepFor(Duration::from_secs(600))),
    ];
    let mut failed = false;
    for (name, retention) in policies {
        let path = dir.join(format!("{}.db", name.replace(['(', ')', ' '], "")));
        let (snapshots, wall, cpu) = run(&path, retention, total, tasks);
        println!();
        println!(
            "## {name}: {:.1} µs/tx wall, {:.1} µs/tx cpu ({:.0} tx/s)",
            wall.as_secs_f64() * 1e6 / total as f64,
            cpu.as_secs_f64() * 1e6 / total as f64,
            total as f64 / wall.as_secs_f64()
        );
        println!();
        println!("| transactions | database | WAL | entries | transactions kept |");
        println!("|---:|---:|---:|---:|---:|");
        for s in &snapshots {
            println!(
                "| {} | {:.1} MiB | {:.1} MiB | {} | {} |",
                s.done,
                mib(s.db),
                mib(s.wal),
                s.entries,
                s.transactions
            );
        }
        let last = snapshots.last().unwrap();
        // Checks: what each policy must keep, never timing.
        let kept = last.transactions as u64;
        let ok = match retention {
            Retention::KeepAll => kept == total && last.entries as u64 == total * 5,
            // At most the transactions of the last batches.
            Retention::DeleteAtOnce => kept <= 2 * tasks,
            // 10 minutes at 1,000 a second, give or take a batch.
            _ => kept <= 600_000 + 2 * tasks && (total <= 600_000 || kept >= 600_000 - 2 * tasks),
        };
        if !ok {
            println!("CHECK FAILED: {name} kept {kept} transactions of {total}");
            failed = true;
        }
        std::fs::remove_file(&path).ok();
        std::fs::remove_file(with_suffix(&path, "-wal")).ok();
        std::fs::remove_file(with_suffix(&path, "-shm")).ok();
        std::fs::remove_file(with_suffix(&path, "-hwm")).ok();
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failed {
        std::process::exit(1);
    }
    println!();
    println!("all checks passed");
}
