//! The Postgres journal's size under a steady load, with and without
//! retention, on a local server the bench starts (as the tests do).
//!
//! `cargo bench -p transaction-manager-postgres --bench retention`: for
//! `Retention::KeepAll`, `DeleteAtOnce` and `KeepFor(30 s)` (the database's
//! clock: real time), each in a fresh cluster, runs committed 3-step
//! transactions through the engine (64 at a time) and prints, at each
//! tenth, the size of `tm_entries` and `tm_transactions` with their indexes
//! and TOAST (`pg_total_relation_size`), their live and dead rows, and wall
//! and CPU time per transaction. The instance prunes every 5 s
//! (`prune_every`); autovacuum wakes every 10 s. The server runs with
//! `fsync = off`, `synchronous_commit = off` (sizes, not durability, are
//! measured here: `throughput` times durable appends). `DeleteAtOnce` gets
//! one more row: after the prune round that follows the last transaction.
//! `-- --transactions N` (default 200,000); `-- --smoke` runs 2,000,
//! prunes every 100 ms, and checks the results.

#[path = "../tests/common/cluster.rs"]
mod cluster;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use cluster::{Cluster, Setup};
use transaction_manager::{ManualClock, Rollback, StepError, TransactionManager, journal::Json};
use transaction_manager_postgres::{PostgresJournal, PostgresOptions, Retention};

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

struct Snapshot {
    done: u64,
    entries_bytes: i64,
    transactions_bytes: i64,
    entries: i64,
    transactions: i64,
    dead: i64,
}

async fn snapshot(client: &tokio_postgres::Client, done: u64) -> Snapshot {
    let row = client
        .query_one(
            "SELECT pg_total_relation_size('tm_entries'), pg_total_relation_size('tm_transactions'),
                    (SELECT count(*) FROM tm_entries), (SELECT count(*) FROM tm_transactions),
                    (SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables
                     WHERE relname IN ('tm_entries', 'tm_transactions'))",
            &[],
        )
        .await
        .unwrap();
    Snapshot {
        done,
        entries_bytes: row.get(0),
        transactions_bytes: row.get(1),
        entries: row.get(2),
        transactions: row.get(3),
        dead: row.get(4),
    }
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Runs `total` committed transactions with `retention`, 64 at a time, in
/// a cluster of its own.
fn run(name: &str, retention: Retention, total: u64, prune_every: Duration) -> (Vec<Snapshot>, Duration, Duration) {
    let cluster = Cluster::start_with(
        name,
        Setup {
            conf: vec![
                "fsync = off".into(),
                "synchronous_commit = off".into(),
                "full_page_writes = off".into(),
                "autovacuum_naptime = 10s".into(),
            ],
            superuser: true,
            ..Setup::default()
        },
    )
    .expect("the bench needs Postgres binaries (scripts/postgres.sh install)");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let options = PostgresOptions::new().retention(retention).prune_every(prune_every);
        let journal = PostgresJournal::connect(&cluster.url(), options).await.unwrap();
        let client = cluster.client().await;
        let clock = ManualClock::new();
        let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Json::<1>);
        let tasks = 64u64;
        let tenth = (total / 10).max(1);
        let mut snapshots = Vec::new();
        let (wall, cpu) = (Instant::now(), process_cpu());
        let mut done = 0;
        while done < total {
            let round = tenth.min(total - done);
            let work = (0..tasks).map(|task| {
                let manager = &manager;
                let n = round / tasks + u64::from(task < round % tasks);
                async move {
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
                    }
                }
            });
            join_all(work).await;
            done += round;
            snapshots.push(snapshot(&client, done).await);
        }
        let took = (wall.elapsed(), process_cpu() - cpu);
        if retention == Retention::DeleteAtOnce {
            // The next prune round empties the tables (waited for, never
            // timed).
            let deadline = Instant::now() + Duration::from_secs(60);
            while snapshot(&client, done).await.transactions > 0 {
                assert!(Instant::now() < deadline, "the instance never pruned");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            snapshots.push(snapshot(&client, done).await);
        }
        let unfinished: i64 =
            client.query_one("SELECT count(*) FROM tm_transactions WHERE NOT finished", &[]).await.unwrap().get(0);
        assert_eq!(unfinished, 0);
        (snapshots, took.0, took.1)
    })
}

/// Awaits every future of `futures` together (on the current task).
async fn join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    std::future::poll_fn(move |cx| {
        pending.retain_mut(|future| future.as_mut().poll(cx).is_pending());
        if pending.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let total: u64 = match args.iter().position(|a| a == "--transactions") {
        Some(at) => args.get(at + 1).and_then(|n| n.parse().ok()).expect("--transactions N"),
        None if smoke => 2_000,
        None => 200_000,
    };
    println!("# transaction-manager-postgres: table size under a steady load, by retention");
    println!();
    println!("{total} committed 3-step transactions (5 entries each), 64 at a time, one process, ManualClock;");
    println!("server: fsync off, synchronous_commit off, autovacuum every 10 s; the instance prunes every 5 s");
    let mut failed = false;
    for (name, retention) in [
        ("KeepAll", Retention::KeepAll),
        ("DeleteAtOnce", Retention::DeleteAtOnce),
        ("KeepFor(30 s)", Retention::KeepFor(Duration::from_secs(30))),
    ] {
        let prune_every = if smoke { Duration::from_millis(100) } else { Duration::from_secs(5) };
        let (snapshots, wall, cpu) =
            run(&format!("retention-{}", name.replace(['(', ')', ' '], "")), retention, total, prune_every);
        println!();
        println!(
            "## {name}: {:.1} µs/tx wall, {:.1} µs/tx cpu (bench process), {:.0} tx/s",
            wall.as_secs_f64() * 1e6 / total as f64,
            cpu.as_secs_f64() * 1e6 / total as f64,
            total as f64 / wall.as_secs_f64()
        );
        println!();
        println!("| transactions | tm_entries | tm_transactions | entries | transactions kept | dead rows |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for s in &snapshots {
            println!(
                "| {} | {:.1} MiB | {:.1} MiB | {} | {} | {} |",
                s.done,
                mib(s.entries_bytes),
                mib(s.transactions_bytes),
                s.entries,
                s.transactions,
                s.dead
            );
        }
        let last = snapshots.last().unwrap();
        let ok = match retention {
            Retention::KeepAll => last.transactions as u64 == total && last.entries as u64 == total * 5,
            // The last row: after the next prune round.
            Retention::DeleteAtOnce => last.transactions == 0 && last.entries == 0,
            _ => last.transactions as u64 <= total,
        };
        if !ok {
            println!("CHECK FAILED: {name} kept {} transactions of {total}", last.transactions);
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
    println!();
    println!("all checks passed");
}
