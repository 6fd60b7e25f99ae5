//! What the Postgres journal costs, on a local server the bench starts
//! (as the tests do: `initdb` in a temp dir, a unix socket, fsync on).
//!
//! `cargo bench -p transaction-manager-postgres --bench throughput` prints:
//! - the journal's overhead per append: durable (`Done`) and lazy
//!   (`Undone`) entries from one appender, against the same `INSERT` by
//!   hand on one connection (autocommit, `synchronous_commit = on`);
//! - transactions per second (3 journaled steps and a commit each; the
//!   steps do nothing else) with 1, 16 and 64 concurrent transactions in one
//!   process, and with 4 processes of 16 each;
//! - the time a survivor takes to recover 1,000 transactions (2 owed
//!   rollbacks each) of a worker killed with SIGKILL, once its lease
//!   expired.
//!
//! `-- --tls` prints instead what TLS costs: connects, appends and
//! transactions over TCP on 127.0.0.1 to one cluster, plain
//! (`sslmode=disable`) against TLS (`verify-full`, a test CA made at
//! start), twice each, alternating.
//!
//! Each figure has wall time and CPU time: the bench process's (user and
//! system, every thread) and the server's (every Postgres process of the
//! cluster, from `/proc`). `-- --smoke` runs it all with tiny counts and
//! checks results only, never timing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use transaction_manager::{
    Rollback, StepError, TokioClock, TransactionManager,
    abandon::Unattended,
    journal::{Entry, EntryKind, IdempotencyKey, Journal, Journaled, Json},
    storage::Unbounded,
};
use transaction_manager_postgres::{PostgresJournal, PostgresOptions};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Undo {
    Delete(IdempotencyKey),
}

impl Rollback<()> for Undo {
    type Error = std::io::Error;
    async fn rollback(&mut self, _: &mut ()) -> Result<(), std::io::Error> {
        Ok(())
    }
}

type Manager = TransactionManager<TokioClock, (), Unattended, Journaled<PostgresJournal, Json<1>>>;

fn manager(journal: PostgresJournal) -> Manager {
    TransactionManager::new(TokioClock::new()).with_journal(journal, Json::<1>)
}

fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_SELF always exists.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage failed");
    // SAFETY: getrusage filled it in (rc == 0).
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time of the cluster's processes (the postmaster and its children)
/// alive now, from `/proc/<pid>/stat`.
fn server_cpu(cluster: &common::Cluster) -> Duration {
    let pid: u32 = std::fs::read_to_string(cluster.dir().join("data/postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse().ok())
        .unwrap_or(0);
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let this: u32 = entry.file_name().to_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        let parent: u32 = fields.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        if this == pid || parent == pid {
            let utime: f64 = fields.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0);
            let stime: f64 = fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
            total += (utime + stime) / ticks;
        }
    }
    Duration::from_secs_f64(total)
}

struct Took {
    wall: Duration,
    cpu: Duration,
    server: Duration,
}

async fn timed<F: std::future::Future<Output = ()>>(cluster: &common::Cluster, run: F) -> Took {
    let (cpu, server, wall) = (process_cpu(), server_cpu(cluster), Instant::now());
    run.await;
    Took { wall: wall.elapsed(), cpu: process_cpu() - cpu, server: server_cpu(cluster) - server }
}

fn per(took: &Took, n: usize, what: &str) {
    let n = n as f64;
    println!(
        "{what:<52} {:>9.1} us wall {:>9.1} us bench CPU {:>9.1} us server CPU   ({:>8.0}/s)",
        took.wall.as_secs_f64() * 1e6 / n,
        took.cpu.as_secs_f64() * 1e6 / n,
        took.server.as_secs_f64() * 1e6 / n,
        n / took.wall.as_secs_f64()
    );
}

async fn one_transaction(manager: &Manager) {
    let outcome = manager
        .transaction("bench")
        .unbounded::<Undo>()
        .run_with(&mut (), async |tx| {
            for _ in 0..3 {
                let key = tx.next_step_key();
                tx.step("create")
                    .execute(move || async move { Ok::<_, std::io::Error>(key) })
                    .undo(|k| Undo::Delete(*k))
                    .await?;
            }
            Ok::<_, StepError<std::io::Error>>(())
        })
        .await;
    assert!(outcome.is_ok());
}

/// `total` transactions, `concurrent` at a time, on `journal`.
async fn transactions(journal: &PostgresJournal, concurrent: usize, total: usize) {
    let mut tasks = Vec::new();
    for n in 0..concurrent {
        let manager = manager(journal.clone());
        let count = total / concurrent + usize::from(n < total % concurrent);
        tasks.push(tokio::spawn(async move {
            for _ in 0..count {
                one_transaction(&manager).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

const CHILD_URL: &str = "TM_PG_BENCH_CHILD_URL";

fn options() -> PostgresOptions {
    PostgresOptions::new().durable_connections(8).lazy_connections(2)
}

/// A child process: `TM_PG_BENCH_CHILD_MODE` = `run <concurrent> <total>`
/// (prints `done`), or `leave <n>` (leaves `n` transactions with 2 steps
/// each unfinished, prints `ready`, waits to be killed).
fn child(url: &str) {
    let mode = std::env::var("TM_PG_BENCH_CHILD_MODE").unwrap();
    let words: Vec<&str> = mode.split(' ').collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let journal = PostgresJournal::connect(url, options().lease(Duration::from_secs(1))).await.unwrap();
        match words[0] {
            "run" => {
                let (concurrent, total) = (words[1].parse().unwrap(), words[2].parse().unwrap());
                println!("connected");
                let mut go = String::new();
                std::io::stdin().read_line(&mut go).unwrap();
                transactions(&journal, concurrent, total).await;
                println!("done");
            }
            "leave" => {
                let n: usize = words[1].parse().unwrap();
                let (sender, mut reached) = tokio::sync::mpsc::unbounded_channel();
                for _ in 0..n {
                    let manager = manager(journal.clone());
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        let _ = manager
                            .transaction("left")
                            .unbounded::<Undo>()
                            .run_with(&mut (), async |tx| {
                                for _ in 0..2 {
                                    let key = tx.next_step_key();
                                    tx.step("create")
                                        .execute(move || async move { Ok::<_, std::io::Error>(key) })
                                        .undo(|k| Undo::Delete(*k))
                                        .await?;
                                }
                                sender.send(()).unwrap();
                                std::future::pending::<()>().await;
                                Ok::<_, StepError<std::io::Error>>(())
                            })
                            .await;
                    });
                }
                for _ in 0..n {
                    reached.recv().await.unwrap();
                }
                println!("ready");
                std::future::pending::<()>().await;
            }
            other => panic!("unknown mode {other}"),
        }
    });
}

fn spawn_child(
    url: &str,
    mode: &str,
) -> (std::process::Child, std::io::Lines<std::io::BufReader<std::process::ChildStdout>>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_URL, url)
        .env("TM_PG_BENCH_CHILD_MODE", mode)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

fn main() {
    if let Ok(url) = std::env::var(CHILD_URL) {
        child(&url);
        return;
    }
    let smoke = std::env::args().any(|a| a == "--smoke");
    let scale = |n: usize| if smoke { (n / 100).max(4) } else { n };
    if std::env::args().any(|a| a == "--tls") {
        tls(scale);
        return;
    }
    let cluster =
        common::Cluster::start("bench").expect("the bench needs Postgres binaries (scripts/postgres.sh install)");
    let url = cluster.url();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let journal = PostgresJournal::connect(&url, options()).await.unwrap();
        let client = cluster.client().await;
        println!("Postgres journal, local server (unix socket, fsync on), 2 tokio worker threads");
        println!("per append (one appender):");
        let n = scale(2000);
        let id = journal.next_id();
        journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b"bench")).await.unwrap();
        let payload = [0x5a_u8; 64];
        let took = timed(&cluster, async {
            for step in 0..n as u32 {
                journal.append(&Entry::new_raw(id, Some(step), EntryKind::Done, &payload)).await.unwrap();
            }
        })
        .await;
        per(&took, n, "durable `Done` through the journal");
        let took = timed(&cluster, async {
            for step in 0..n as u32 {
                journal.append(&Entry::new_raw(id, Some(step), EntryKind::Undone, &[])).await.unwrap();
            }
        })
        .await;
        per(&took, n, "lazy `Undone` through the journal");
        let mut count = 0;
        journal.read(id, &mut |_| count += 1).await.unwrap();
        assert_eq!(count, 1 + 2 * n);
        client
            .batch_execute("CREATE TABLE by_hand (seq bigserial PRIMARY KEY, tx bigint, step int, kind smallint, payload bytea, UNIQUE (tx, step, kind))")
            .await
            .unwrap();
        let insert = client.prepare("INSERT INTO by_hand (tx, step, kind, payload) VALUES ($1, $2, $3, $4)").await.unwrap();
        let took = timed(&cluster, async {
            for step in 0..n as i32 {
                client.execute(&insert, &[&1_i64, &step, &3_i16, &&payload[..]]).await.unwrap();
            }
        })
        .await;
        per(&took, n, "baseline: the same INSERT by hand (durable)");

        println!("transactions (3 journaled steps + commit each):");
        for concurrent in [1, 16, 64] {
            let total = scale(if concurrent == 1 { 300 } else { 3000 });
            let took = timed(&cluster, transactions(&journal, concurrent, total)).await;
            per(&took, total, &format!("{concurrent} concurrent, 1 process"));
        }
        let finished: i64 = client
            .query_one("SELECT count(*) FROM tm_transactions WHERE finished AND operation = 'bench'", &[])
            .await
            .unwrap()
            .get(0);
        assert!(finished as usize >= scale(300) + 2 * scale(3000));
    });

    // 4 processes of 16 concurrent transactions each.
    {
        use std::io::Write;
        let per_process = scale(1500);
        let mut children: Vec<_> = (0..4).map(|_| spawn_child(&url, &format!("run 16 {per_process}"))).collect();
        for (_, lines) in &mut children {
            assert_eq!(lines.next().unwrap().unwrap(), "connected");
        }
        let server = server_cpu(&cluster);
        let start = Instant::now();
        for (child, _) in &mut children {
            writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
        }
        for (_, lines) in &mut children {
            assert_eq!(lines.next().unwrap().unwrap(), "done");
        }
        let wall = start.elapsed();
        let server = server_cpu(&cluster) - server;
        let mut cpu = Duration::ZERO;
        for (mut child, _) in children {
            drop(child.stdin.take());
            child.wait().unwrap();
        }
        // The children's CPU time: reaped above, so counted in RUSAGE_CHILDREN.
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: a valid, writable rusage; RUSAGE_CHILDREN always exists.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
        assert_eq!(rc, 0);
        // SAFETY: filled in by getrusage.
        let usage = unsafe { usage.assume_init() };
        let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        cpu += time(usage.ru_utime) + time(usage.ru_stime);
        per(&Took { wall, cpu, server }, 4 * per_process, "16 concurrent x 4 processes (CPU: the 4 processes)");
    }

    // A survivor recovers a killed worker's transactions.
    runtime.block_on(async {
        let n = scale(1000);
        let (mut child, mut lines) = spawn_child(&url, &format!("leave {n}"));
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        child.kill().unwrap();
        child.wait().unwrap();
        let killed = Instant::now();
        let survivor = PostgresJournal::connect(&url, options()).await.unwrap();
        let manager = manager(survivor.clone());
        // The killed worker's lease (1 s) must run out first: not measured.
        let first = loop {
            let took_start = (process_cpu(), server_cpu(&cluster), Instant::now());
            let report = manager.recover::<Undo, Unbounded, _>(&mut ()).await.unwrap();
            if report.found() > 0 {
                break (took_start, report.found());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let ((cpu, server, start), mut found) = first;
        while found < n {
            found += manager.recover::<Undo, Unbounded, _>(&mut ()).await.unwrap().found();
        }
        let took = Took { wall: start.elapsed(), cpu: process_cpu() - cpu, server: server_cpu(&cluster) - server };
        assert_eq!(found, n);
        println!(
            "survivor: {n} transactions of a killed worker recovered in {:.0} ms wall, {:.0} ms bench CPU, \
             {:.0} ms server CPU (claimable {:.2} s after the kill: the 1 s lease)",
            took.wall.as_secs_f64() * 1e3,
            took.cpu.as_secs_f64() * 1e3,
            took.server.as_secs_f64() * 1e3,
            (start - killed).as_secs_f64()
        );
        per(&took, n, "  per recovered transaction");
    });
}

/// `-- --tls`: plain TCP against TLS on one cluster, the same loops.
fn tls(scale: impl Fn(usize) -> usize) {
    let pki = common::pki::pki();
    let cluster = common::pki::tls_cluster("bench-tls", &pki, false)
        .expect("the bench needs Postgres binaries (scripts/postgres.sh install)");
    let tls_url = pki.verify_full_url(&cluster);
    let plain_url = format!("host=127.0.0.1 port={} user=postgres dbname=postgres sslmode=disable", cluster.port());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        println!("Postgres journal over TCP on 127.0.0.1, plain against TLS (rustls, ring, verify-full), fsync on");
        for round in 0..2 {
            for (name, url) in [("plain", &plain_url), ("TLS", &tls_url)] {
                let journal = PostgresJournal::connect(url, options()).await.unwrap();
                let connects = scale(200);
                let took = timed(&cluster, async {
                    for _ in 0..connects {
                        let (client, connection) = journal.config().connect(journal.tls_connector()).await.unwrap();
                        drop(client);
                        connection.await.unwrap();
                    }
                })
                .await;
                per(&took, connects, &format!("[{round}] {name}: connect (+ handshake) and close"));
                let n = scale(1000);
                let id = journal.next_id();
                journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b"bench")).await.unwrap();
                let payload = [0x5a_u8; 64];
                let took = timed(&cluster, async {
                    for step in 0..n as u32 {
                        journal.append(&Entry::new_raw(id, Some(step), EntryKind::Done, &payload)).await.unwrap();
                    }
                })
                .await;
                per(&took, n, &format!("[{round}] {name}: durable `Done`, one appender"));
                let took = timed(&cluster, async {
                    for step in 0..n as u32 {
                        journal.append(&Entry::new_raw(id, Some(step), EntryKind::Undone, &[])).await.unwrap();
                    }
                })
                .await;
                per(&took, n, &format!("[{round}] {name}: lazy `Undone`, one appender"));
                let total = scale(2000);
                let took = timed(&cluster, transactions(&journal, 16, total)).await;
                per(&took, total, &format!("[{round}] {name}: transactions, 16 concurrent"));
            }
        }
    });
}
