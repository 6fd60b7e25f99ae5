//! One decision per transaction on Postgres: the first of `Committed` and
//! `Aborted` stays (a unique index), the other is refused with an error
//! `decided` reads; and a transaction whose connection is cut right after
//! its commit statement was sent is reported committed by `run`, as the
//! journal holds it, and nothing is rolled back.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::app::{App, Undo, manager};
use common::{Cluster, Setup};
use transaction_manager::{Entry, EntryKind, Journal, StepError, TransactionId, Unbounded};
use transaction_manager_postgres::{PostgresJournal, PostgresJournalError, PostgresOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn decisions(journal: &PostgresJournal, id: TransactionId) -> Vec<u8> {
    let mut out = Vec::new();
    journal
        .read(id, &mut |e| {
            if e.step.is_none() && (e.kind == EntryKind::Committed.code() || e.kind == EntryKind::Aborted.code()) {
                out.push(e.kind);
            }
        })
        .await
        .unwrap();
    out
}

#[test]
fn the_first_decision_stays_and_the_other_is_refused() {
    let Some(cluster) = Cluster::start("decision") else { return };
    runtime().block_on(async {
        let journal = PostgresJournal::connect(&cluster.url(), PostgresOptions::new()).await.unwrap();
        let raw = |id, kind| Entry::new_raw(id, None, kind, b"");
        let (a, b) = (journal.next_id(), journal.next_id());
        journal.append(&Entry::new_raw(a, None, EntryKind::Begin, b"op")).await.unwrap();
        journal.append(&raw(a, EntryKind::Committed)).await.unwrap();
        let error = journal.append(&raw(a, EntryKind::Aborted)).await.unwrap_err();
        assert_eq!(PostgresJournal::decided(&error), Some(EntryKind::Committed), "{error}");
        assert_eq!(error.to_string(), format!("{a} is already decided: the journal holds `committed`"));

        journal.append(&Entry::new_raw(b, None, EntryKind::Begin, b"op")).await.unwrap();
        journal.append(&raw(b, EntryKind::Aborted)).await.unwrap();
        // The same decision again is the same entry.
        journal.append(&raw(b, EntryKind::Aborted)).await.unwrap();
        let error = journal.append(&raw(b, EntryKind::Committed)).await.unwrap_err();
        assert!(
            matches!(error, PostgresJournalError::AlreadyDecided { transaction, held: EntryKind::Aborted } if transaction == b),
            "{error}"
        );
        // The refused `Committed` did not end it: still owed.
        let still: Vec<i64> = cluster
            .client()
            .await
            .query("SELECT tx FROM tm_transactions WHERE NOT finished", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(still, [b.get() as i64]);
        assert_eq!(decisions(&journal, a).await, [EntryKind::Committed.code()]);
        assert_eq!(decisions(&journal, b).await, [EntryKind::Aborted.code()]);
        assert_eq!(PostgresJournal::decided(&PostgresJournalError::IdsExhausted), None);
    });
}

/// The bytes of a `Bind` that appends a transaction-level `Committed`: the
/// step parameter (-1, an `int4`) followed by the kind (7, an `int2`), each
/// after its length, as tokio-postgres sends them (binary).
const COMMITTED_BIND: [u8; 14] = [0, 0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 2, 0, 7];

/// The protocol's `Sync` message: the server commits the statement's
/// implicit transaction when it reads it.
const SYNC: [u8; 5] = [b'S', 0, 0, 0, 4];

/// A TCP proxy in front of the server that, once armed, forwards the
/// client's bytes that carry the `Committed` statement, up to its `Sync`,
/// and then cuts that connection: the server runs the statement and
/// commits it, the client never hears back (it sees the connection closed
/// once the server has closed its side).
struct Proxy {
    port: u16,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl Proxy {
    fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (armed_, cuts_) = (armed.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (armed, cuts) = (armed_.clone(), cuts_.clone());
                // Set once the commit is on its way: the server's answers
                // are no longer passed on; `ended`: the server closed.
                let swallow = Arc::new(AtomicBool::new(false));
                let ended = Arc::new(AtomicBool::new(false));
                let (swallow_, ended_) = (swallow.clone(), ended.clone());
                let (mut from_client, mut to_server) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut from_server, mut to_client) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    // Where the armed commit's `Bind` was seen, in this chunk.
                    let mut commit_at: Option<usize> = None;
                    loop {
                        let n = match from_client.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if commit_at.is_none() {
                            let bind = buf[..n].windows(COMMITTED_BIND.len()).position(|w| w == COMMITTED_BIND);
                            if bind.is_some() && armed.swap(false, Ordering::SeqCst) {
                                commit_at = bind;
                            }
                        } else {
                            commit_at = Some(0);
                        }
                        let synced = commit_at.is_some_and(|at| buf[at..n].windows(SYNC.len()).any(|w| w == SYNC));
                        if synced {
                            swallow.store(true, Ordering::SeqCst);
                        }
                        if to_server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        if synced {
                            // The server reads the statement, commits it,
                            // answers (into the void), reads the end of the
                            // stream and closes: only then is the client cut,
                            // so the commit is known to have reached the
                            // journal when the client sees the error.
                            let _ = to_server.shutdown(Shutdown::Write);
                            for _ in 0..1000 {
                                if ended.load(Ordering::SeqCst) {
                                    break;
                                }
                                std::thread::sleep(std::time::Duration::from_millis(10));
                            }
                            let _ = from_client.shutdown(Shutdown::Both);
                            cuts.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                    let _ = to_server.shutdown(Shutdown::Both);
                    let _ = from_client.shutdown(Shutdown::Both);
                });
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    loop {
                        let n = match from_server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if !swallow_.load(Ordering::SeqCst) && to_client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    ended_.store(true, Ordering::SeqCst);
                    if !swallow_.load(Ordering::SeqCst) {
                        let _ = to_client.shutdown(Shutdown::Both);
                    }
                    let _ = from_server.shutdown(Shutdown::Both);
                });
            }
        });
        Proxy { port, armed, cuts }
    }
}

#[test]
fn a_connection_cut_after_the_commit_was_sent_is_committed() {
    let Some(cluster) = Cluster::start_with("decision-cut", Setup { tcp: true, ..Setup::default() }) else { return };
    let proxy = Proxy::start(cluster.port());
    let url = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", proxy.port);
    runtime().block_on(async {
        let journal = PostgresJournal::connect(&url, PostgresOptions::new()).await.unwrap();
        let mut app = App::connect(journal.clone()).await;
        let manager = manager(journal.clone());
        let armed = proxy.armed.clone();
        let outcome = manager
            .transaction("provision")
            .unbounded::<Undo>()
            .run_with(&mut app, async |tx| {
                for _ in 0..2 {
                    let key = tx.next_step_key();
                    tx.step("create")
                        .execute_with(async move |app: &mut App| app.effect("create", key).await.map(|()| key))
                        .undo(|key| Undo::Delete(*key))
                        .await?;
                }
                // The next statement with a transaction-level `Committed`
                // is the commit: the proxy cuts its connection.
                armed.store(true, Ordering::SeqCst);
                Ok::<_, StepError<common::app::Refused>>(7)
            })
            .await;
        assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the commit's connection was cut");
        let committed = outcome.expect("the commit reached the server: committed");
        assert_eq!(*committed.value(), 7);
        let id = committed.summary().transaction_id();
        assert_eq!(committed.summary().rolled_back_steps(), 0);
        assert_eq!(app.effects("create").await.len(), 2);
        assert!(app.effects("delete").await.is_empty(), "nothing is rolled back");
        assert_eq!(decisions(&journal, id).await, [EntryKind::Committed.code()]);

        // Recovery finds nothing to roll back.
        let report = manager.recover::<Undo, Unbounded, _>(&mut app).await.unwrap();
        assert_eq!(report.found(), 0, "{report}");
        assert!(app.effects("delete").await.is_empty());
    });
}
