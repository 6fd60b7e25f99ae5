//! One decision per transaction on Postgres: the first of `Committed` and
//! `Aborted` stays (a unique index), the other is refused with an error
//! `decided` reads; and a transaction whose connection is cut right after
//! its commit statement was sent is reported committed by `run`, as the
//! journal holds it, and nothing is rolled back.

mod common;

use common::app::{App, Undo, manager};
use common::proxy::{Cut, Proxy};
use common::{Cluster, Setup};
use transaction_manager::{
    StepError, TransactionId,
    journal::{Entry, EntryKind, Journal},
    storage::Unbounded,
};
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

#[test]
fn a_connection_cut_after_the_commit_was_sent_is_committed() {
    let Some(cluster) = Cluster::start_with("decision-cut", Setup { tcp: true, ..Setup::default() }) else { return };
    let proxy = Proxy::start(cluster.port());
    let url = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", proxy.port);
    runtime().block_on(async {
        let journal = PostgresJournal::connect(&url, PostgresOptions::new()).await.unwrap();
        let mut app = App::connect(journal.clone()).await;
        let manager = manager(journal.clone());
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
                proxy.arm(Cut::AfterSent);
                Ok::<_, StepError<common::app::Refused>>(7)
            })
            .await;
        assert_eq!(proxy.cuts(), 1, "the commit's connection was cut");
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
