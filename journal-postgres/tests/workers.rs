//! Many processes share one journal: 4 worker processes (this test binary
//! run again as children) run transactions against one database, each
//! with its recovery running continuously beside them. A supervisor kills
//! workers with SIGKILL (and starts replacements) and pauses others with
//! SIGSTOP until every transaction they had in flight was claimed by
//! another worker, then wakes them with SIGCONT: the stale owner must be
//! fenced. In the plain run the workers reach the server through a proxy
//! of their own (`common::proxy`) that cuts the connection carrying a
//! quarter of their commits: half of them right after the commit statement
//! was sent (it is in the database, the worker never hears back), half
//! before it was forwarded (it never reaches the database).
//!
//! Steps and rollbacks write an effects table in the same database, each
//! write fenced by the transaction's (owner, generation). After the run
//! (and a last recovery) it checks:
//! - every step whose `Done` is in the journal was rolled back, unless its
//!   transaction committed, and no committed transaction was rolled back;
//! - nothing was rolled back that was not created;
//! - no two owners rolled a step back at once: the deletes of a key come
//!   in generation order (a stale owner never wrote after a newer one took
//!   over), never twice at one generation by two owners;
//! - nothing is left unfinished;
//! - every pause that had a transaction claimed ended with the woken
//!   worker fenced;
//! - `run`'s result agrees with the journal's decision: committed exactly
//!   when the journal holds `Committed` (an outcome reported unknown may
//!   be either), so a commit cut after it was sent is committed and a cut
//!   before it was sent is rolled back (by the worker or by a recovery).
//!
//! No sleeps wait for state: the supervisor waits for lines the workers
//! print after each effect is committed, and for claims in the database.
//! Leases (1 s) are real time by nature. Replay with `TM_PG_WORKERS_SEED`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::app::{App, Refused, Undo, manager};
use common::proxy::{Cut, Proxy};
use common::{Cluster, Setup};
use transaction_manager::{
    StepError, StepErrorKind,
    journal::{EntryKind, IdempotencyKey, Journal},
    storage::Unbounded,
};
use transaction_manager_postgres::{PostgresJournal, PostgresOptions};

const WORKERS: usize = 4;
/// Transactions each worker runs at once.
const CONCURRENCY: usize = 4;
const LEASE: Duration = Duration::from_secs(1);
const URL_ENV: &str = "TM_PG_WORKER_URL";
/// The server's TCP port: the worker puts a cutting proxy in front of it.
const CUT_ENV: &str = "TM_PG_WORKER_CUT";

fn rounds() -> usize {
    std::env::var("TM_PG_WORKERS_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(8)
}

fn options() -> PostgresOptions {
    PostgresOptions::new()
        .lease(LEASE)
        .renew_every(Duration::from_millis(200))
        .durable_connections(2)
        .lazy_connections(1)
}

fn next(state: u64) -> u64 {
    state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407)
}

/// A worker: recovery in a loop, and `CONCURRENCY` loops of transactions,
/// until killed. With `upstream` (the server's port), its connections go
/// through a proxy that cuts some commits' connections.
fn worker(url: &str, seed: u64, upstream: Option<u16>) {
    let proxy = upstream.map(|port| std::sync::Arc::new(Proxy::start(port)));
    let url = match &proxy {
        Some(proxy) => format!("host=127.0.0.1 port={} user=postgres dbname=postgres", proxy.port),
        None => url.to_string(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let journal = PostgresJournal::connect(&url, options()).await.unwrap();
        let epoch = journal.next_id().get() >> 32;
        println!("owner {} {epoch}", journal.owner());
        let mut recovering = App::connect(journal.clone()).await;
        recovering.report = true;
        // Not spawned: the core's `recover` future is not `Send` (it holds
        // the `&mut dyn FnMut` of `Journal::read`), so it runs beside the
        // loops in this task.
        let recovery = async move {
            let manager = manager(recovering.journal.clone());
            loop {
                match manager.recover::<Undo, Unbounded, _>(&mut recovering).await {
                    Ok(report) if report.found() > 0 => println!("recovered {}", report.found()),
                    Ok(_) => {}
                    Err(error) => println!("recovery failed: {error}"),
                }
                // Between passes (a poll interval, not a wait for a state).
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let mut loops = Vec::new();
        for n in 0..CONCURRENCY {
            let journal = journal.clone();
            let proxy = proxy.clone();
            loops.push(tokio::spawn(async move {
                let mut app = App::connect(journal.clone()).await;
                app.report = true;
                let manager = manager(journal.clone());
                let mut rng = seed ^ ((n as u64 + 1) * 0x9e37_79b9);
                loop {
                    rng = next(rng);
                    let fail = rng % 2 == 0;
                    // A quarter of the commits have their connection cut.
                    let cut = match (&proxy, (rng >> 8) % 8) {
                        (Some(_), 0) if !fail => Some(Cut::AfterSent),
                        (Some(_), 1) if !fail => Some(Cut::BeforeSent),
                        _ => None,
                    };
                    let mut ticket = None;
                    let fenced_before = journal.fenced_appends();
                    let outcome = manager
                        .transaction("provision")
                        .unbounded::<Undo>()
                        .run_with(&mut app, async |tx| {
                            for _ in 0..3 {
                                let key = tx.next_step_key();
                                tx.step("create")
                                    .execute_with(async move |app: &mut App| {
                                        app.effect("create", key).await.map(|()| key)
                                    })
                                    .undo(|key| Undo::Delete(*key))
                                    .await?;
                            }
                            if fail {
                                tx.step("check").run(|| async { Err(Refused("no".into())) }).await?;
                            }
                            if let (Some(proxy), Some(cut)) = (&proxy, cut) {
                                let id = tx.next_step_key().transaction();
                                ticket = Some(proxy.arm_for(id, journal.owner(), cut));
                            }
                            Ok::<_, StepError<Refused>>(())
                        })
                        .await;
                    if journal.fenced_appends() > fenced_before {
                        println!("fenced");
                    }
                    let cut = match (ticket.is_some_and(|t| proxy.as_ref().unwrap().take(t)), cut) {
                        (true, Some(Cut::AfterSent)) => "cut_after",
                        (true, Some(Cut::BeforeSent)) => "cut_before",
                        _ => "whole",
                    };
                    let (ended, id) = match &outcome {
                        Ok(done) => ("committed", done.summary().transaction_id()),
                        // Neither decision could be written: recovery decides.
                        Err(error)
                            if matches!(error.cause().kind(),
                                StepErrorKind::Journal(f) if f.entry() == Some(EntryKind::Aborted)) =>
                        {
                            ("unknown", error.summary().transaction_id())
                        }
                        Err(error) => ("rolled_back", error.summary().transaction_id()),
                    };
                    println!("ended {ended} {} {cut}", id.get());
                }
            }));
        }
        // Until the supervisor kills the process.
        #[allow(clippy::never_loop)]
        let loops = async {
            for handle in loops {
                handle.await.unwrap();
            }
        };
        tokio::join!(recovery, loops);
    });
}

#[test]
fn worker_entry() {
    // Only does something when started by the supervisor below.
    if let Ok(url) = std::env::var(URL_ENV) {
        let seed = std::env::var("TM_PG_WORKER_SEED").unwrap().parse().unwrap();
        let upstream = std::env::var(CUT_ENV).ok().map(|port| port.parse().unwrap());
        worker(&url, seed, upstream);
    }
}

struct Worker {
    child: Child,
    owner: Option<(String, i64)>,
}

fn spawn(url: &str, cut: Option<u16>, seed: u64, slot: usize, lines: &mpsc::Sender<(usize, String)>) -> Worker {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if let Some(port) = cut {
        command.env(CUT_ENV, port.to_string());
    }
    let mut child = command
        .args(["--exact", "worker_entry", "--nocapture", "--test-threads=1"])
        .env(URL_ENV, url)
        .env("TM_PG_WORKER_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if lines.send((slot, line)).is_err() {
                break;
            }
        }
    });
    Worker { child, owner: None }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

struct Supervisor {
    url: String,
    cut: Option<u16>,
    /// Each transaction's end as its worker's `run` reported it, and
    /// whether its commit's connection was cut: `(ended, cut)`.
    ended: BTreeMap<i64, (String, String)>,
    workers: BTreeMap<usize, Worker>,
    lines: mpsc::Receiver<(usize, String)>,
    sender: mpsc::Sender<(usize, String)>,
    next_slot: usize,
    counts: HashMap<&'static str, usize>,
}

impl Supervisor {
    /// Waits for the next line of any worker, keeping count; `None` past
    /// `deadline`.
    fn line(&mut self, deadline: Instant) -> Option<(usize, String)> {
        let left = deadline.checked_duration_since(Instant::now())?;
        let (slot, line) = self.lines.recv_timeout(left).ok()?;
        // The test harness prints `test worker_entry ... ` before the
        // worker's first line, on the same line.
        let line = match line.find("owner ") {
            Some(at) => line[at..].to_string(),
            None => line,
        };
        if let Some(rest) = line.strip_prefix("owner ") {
            let (owner, epoch) = rest.rsplit_once(' ').unwrap();
            if let Some(worker) = self.workers.get_mut(&slot) {
                worker.owner = Some((owner.to_string(), epoch.parse().unwrap()));
            }
        }
        for kind in ["create", "delete", "ended", "fenced", "recovery failed"] {
            if line.starts_with(kind) {
                *self.counts.entry(kind).or_default() += 1;
            }
        }
        if let Some(n) = line.strip_prefix("recovered ") {
            *self.counts.entry("recovered").or_default() += n.parse::<usize>().unwrap();
        }
        if let Some(rest) = line.strip_prefix("ended ") {
            let mut words = rest.split(' ');
            let (ended, id, cut) = (words.next().unwrap(), words.next().unwrap(), words.next().unwrap());
            *self
                .counts
                .entry(if ended == "committed" {
                    "committed"
                } else if ended == "unknown" {
                    "unknown"
                } else {
                    "rolled_back"
                })
                .or_default() += 1;
            if cut != "whole" {
                *self.counts.entry(if cut == "cut_after" { "cut_after" } else { "cut_before" }).or_default() += 1;
            }
            self.ended.insert(id.parse().unwrap(), (ended.to_string(), cut.to_string()));
        }
        Some((slot, line))
    }

    /// Waits for `n` effect or end lines.
    fn progress(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut seen = 0;
        while seen < n {
            let (_, line) = self.line(deadline).expect("the workers made no progress in 120 s");
            if ["create ", "delete ", "ended "].iter().any(|p| line.starts_with(p)) {
                seen += 1;
            }
        }
    }

    fn spawn(&mut self, seed: u64) -> usize {
        let slot = self.next_slot;
        self.next_slot += 1;
        let worker = spawn(&self.url, self.cut, seed, slot, &self.sender);
        self.workers.insert(slot, worker);
        // Its owner line first (the supervisor needs it to pause it).
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.workers[&slot].owner.is_none() {
            self.line(deadline).expect("a worker never started");
        }
        slot
    }
}

#[test]
fn workers_killed_and_paused_lose_no_rollback_and_never_roll_back_at_once() {
    // TCP, for the workers' proxies; the supervisor on the unix socket.
    let Some(cluster) = Cluster::start_with("workers", Setup { tcp: true, ..Setup::default() }) else { return };
    run_workers(cluster.url(), Some(cluster.port()));
}

/// The same over TCP, TLS only, `verify-full` against a test CA.
#[test]
fn workers_killed_and_paused_over_tls_lose_no_rollback() {
    let pki = common::pki::pki();
    let Some(cluster) = common::pki::tls_cluster("workers-tls", &pki, true) else { return };
    let url = pki.verify_full_url(&cluster);
    // No cuts: the proxy cannot read TLS.
    run_workers(url, None);
}

/// `cut`: the server's TCP port, for the workers' cutting proxies.
fn run_workers(url: String, cut: Option<u16>) {
    let seed: u64 = std::env::var("TM_PG_WORKERS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("TM_PG_WORKERS_SEED={seed}");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    // The tables, before the workers race to create them.
    let (journal, app) = runtime.block_on(async {
        let journal =
            PostgresJournal::connect(&url, PostgresOptions::new().owner("supervisor").lease(LEASE)).await.unwrap();
        let app = App::connect(journal.clone()).await;
        (journal, app)
    });
    let (sender, lines) = mpsc::channel();
    let mut sup = Supervisor {
        url: url.clone(),
        cut,
        ended: BTreeMap::new(),
        workers: BTreeMap::new(),
        lines,
        sender,
        next_slot: 0,
        counts: HashMap::new(),
    };
    let mut rng = seed;
    for _ in 0..WORKERS {
        rng = next(rng);
        sup.spawn(rng);
    }
    let (mut kills, mut pauses, mut pauses_fenced) = (0, 0, 0);
    for round in 0..rounds() {
        rng = next(rng);
        sup.progress(20 + (rng >> 40) as usize % 40);
        let slots: Vec<usize> = sup.workers.keys().copied().collect();
        let slot = slots[(rng >> 20) as usize % slots.len()];
        if round % 2 == 0 {
            let mut worker = sup.workers.remove(&slot).unwrap();
            worker.child.kill().unwrap();
            worker.child.wait().unwrap();
            kills += 1;
            rng = next(rng);
            sup.spawn(rng);
        } else {
            let (owner, epoch) = sup.workers[&slot].owner.clone().unwrap();
            signal(&sup.workers[&slot].child, "-STOP");
            pauses += 1;
            // Wait until the others claimed everything it had in flight.
            let deadline = Instant::now() + Duration::from_secs(60);
            let claimed = runtime.block_on(async {
                loop {
                    let row = app
                        .client
                        .query_one(
                            "SELECT count(*) FILTER (WHERE owner = $1 AND NOT finished),
                                    count(*) FILTER (WHERE owner <> $1 AND tx >> 32 = $2)
                             FROM tm_transactions",
                            &[&owner, &epoch],
                        )
                        .await
                        .unwrap();
                    let (held, claimed): (i64, i64) = (row.get(0), row.get(1));
                    if held == 0 {
                        break claimed;
                    }
                    assert!(Instant::now() < deadline, "{held} transactions of a paused worker never claimed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
            signal(&sup.workers[&slot].child, "-CONT");
            if claimed > 0 {
                // Woken, it must be fenced before it writes again.
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let (from, line) = sup.line(deadline).expect("a woken stale owner was never fenced");
                    if from == slot && line == "fenced" {
                        pauses_fenced += 1;
                        break;
                    }
                }
            }
        }
    }
    sup.progress(30);
    for (_, mut worker) in std::mem::take(&mut sup.workers) {
        worker.child.kill().unwrap();
        worker.child.wait().unwrap();
    }
    // A last recovery claims what the killed workers left, once their
    // leases expire.
    runtime.block_on(async {
        let mut app = App::connect(journal.clone()).await;
        let manager = manager(journal.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            manager.recover::<Undo, Unbounded, _>(&mut app).await.unwrap();
            let left: i64 = app
                .client
                .query_one("SELECT count(*) FROM tm_transactions WHERE NOT finished", &[])
                .await
                .unwrap()
                .get(0);
            if left == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{left} transactions left unfinished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(journal.next_unfinished(None).await.unwrap(), None);
    });

    // The checks.
    runtime.block_on(async {
        let client = &app.client;
        let created: Vec<String> = client
            .query("SELECT key FROM effects WHERE what = 'create'", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let created: std::collections::BTreeSet<String> = created.into_iter().collect();
        let deletes = client
            .query("SELECT key, owner, generation FROM effects WHERE what = 'delete' ORDER BY seq", &[])
            .await
            .unwrap();
        let mut deleted: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
        for row in &deletes {
            deleted.entry(row.get(0)).or_default().push((row.get(1), row.get(2)));
        }
        for (key, by) in &deleted {
            assert!(created.contains(key), "{key} was rolled back but never created");
            for pair in by.windows(2) {
                assert!(pair[0].1 <= pair[1].1, "{key}: a stale owner deleted after a newer one took over: {by:?}");
                assert!(
                    pair[0].1 != pair[1].1 || pair[0].0 == pair[1].0,
                    "{key}: two owners deleted at one generation: {by:?}"
                );
            }
        }
        let done = client
            .query(
                "SELECT e.tx, e.step, bool_or(c.tx IS NOT NULL) FROM tm_entries e
                 LEFT JOIN tm_entries c ON c.tx = e.tx AND c.kind = 7
                 WHERE e.kind = 3 GROUP BY e.tx, e.step",
                &[],
            )
            .await
            .unwrap();
        // The (transaction, step) of each rolled-back key.
        let deleted_steps: std::collections::BTreeSet<(u64, u32)> = deleted
            .keys()
            .map(|key| {
                let key: IdempotencyKey = key.parse().expect("an idempotency key");
                (key.transaction().get(), key.step())
            })
            .collect();
        let mut owed = 0;
        for row in &done {
            let (tx, step, committed): (i64, i32, bool) = (row.get(0), row.get(1), row.get(2));
            let key = (tx as u64, step as u32);
            if committed {
                assert!(!deleted_steps.contains(&key), "{key:?}: its transaction committed, yet it was rolled back");
            } else {
                owed += 1;
                assert!(deleted_steps.contains(&key), "{key:?}: its Done was durable, yet it was never rolled back");
            }
        }
        // `run`'s result agrees with the journal's decision.
        let decided: std::collections::BTreeSet<i64> = client
            .query("SELECT DISTINCT tx FROM tm_entries WHERE kind = 7", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut cut_ends: BTreeMap<String, usize> = BTreeMap::new();
        for (tx, (ended, cut)) in &sup.ended {
            let committed = decided.contains(tx);
            match ended.as_str() {
                "committed" => assert!(committed, "tx-{tx}: `run` said committed, the journal holds no `Committed`"),
                "rolled_back" => assert!(!committed, "tx-{tx}: `run` said failed, the journal holds `Committed`"),
                _ => {}
            }
            if cut != "whole" {
                let decision = if committed { "committed" } else { "rolled back" };
                *cut_ends.entry(format!("{cut} reported {ended}, {decision}")).or_default() += 1;
            }
        }
        let transactions: i64 = client.query_one("SELECT count(*) FROM tm_transactions", &[]).await.unwrap().get(0);
        let committed: i64 =
            client.query_one("SELECT count(*) FROM tm_entries WHERE kind = 7", &[]).await.unwrap().get(0);
        let claimed: i64 =
            client.query_one("SELECT count(*) FROM tm_transactions WHERE generation > 1", &[]).await.unwrap().get(0);
        println!(
            "{kills} kills, {pauses} pauses ({pauses_fenced} woke up fenced); {transactions} transactions \
             ({committed} committed, {claimed} claimed by another instance), {} created, {owed} rollbacks owed, \
             {} keys rolled back ({} more than once); ended as `run` reported: {} committed, {} rolled back, \
             {} unknown; {} transactions recovered; {} commits cut after sent, {} before ({cut_ends:?}); \
             lines: {:?}",
            created.len(),
            deleted.len(),
            deleted.values().filter(|by| by.len() > 1).count(),
            count(&sup, "committed"),
            count(&sup, "rolled_back"),
            count(&sup, "unknown"),
            count(&sup, "recovered"),
            count(&sup, "cut_after"),
            count(&sup, "cut_before"),
            sup.counts,
        );
        assert!(kills >= 1 && pauses >= 1);
        if cut.is_some() {
            assert!(count(&sup, "cut_after") + count(&sup, "cut_before") > 0, "no commit's connection was cut");
        }
        assert!(claimed > 0, "no transaction was ever claimed");
        assert!(transactions >= 50, "too few transactions ran");
    });
    drop(journal);
}

fn count(sup: &Supervisor, what: &str) -> usize {
    sup.counts.get(what).copied().unwrap_or(0)
}
