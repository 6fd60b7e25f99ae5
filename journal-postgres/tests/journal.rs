//! The journal's record semantics on a real server (started by the test):
//! order, idempotence, JSONB undo records, recovery, stuck transactions and
//! the operator's view, a newer schema, the database down at start and
//! lost mid-transaction.

mod common;

use common::Cluster;
use common::app::{App, Undo, manager};
use transaction_manager::{
    StepError, TokioClock, TransactionManager,
    journal::{Entry, EntryKind, IdempotencyKey, Journal, Json},
    storage::Unbounded,
};
use transaction_manager_postgres::{PostgresJournal, PostgresJournalError, PostgresOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn kinds(journal: &PostgresJournal, id: transaction_manager::TransactionId) -> Vec<(Option<u32>, u8)> {
    let mut out = Vec::new();
    journal.read(id, &mut |e| out.push((e.step, e.kind))).await.unwrap();
    out
}

/// A transaction whose body stops after `steps` steps and never ends:
/// dropped, it stays unfinished in the journal, as after a crash.
async fn leave_unfinished(app: &mut App, steps: u32) -> transaction_manager::TransactionId {
    let manager = manager(app.journal.clone());
    let (tx_id_sender, mut tx_id) = tokio::sync::mpsc::unbounded_channel();
    let run = manager.transaction("provision").unbounded::<Undo>().run_with(app, async |tx| {
        for _ in 0..steps {
            let key = tx.next_step_key();
            tx.step("create")
                .execute_with(async move |app: &mut App| app.effect("create", key).await.map(|()| key))
                .undo(|key| Undo::Delete(*key))
                .await?;
        }
        tx_id_sender.send(tx.next_step_key().transaction()).unwrap();
        std::future::pending::<()>().await;
        Ok::<_, StepError<common::app::Refused>>(())
    });
    tokio::select! {
        _ = run => unreachable!(),
        id = tx_id.recv() => id.unwrap(),
    }
}

#[test]
fn entries_keep_their_order_are_idempotent_and_end_transactions() {
    let Some(cluster) = Cluster::start("order") else { return };
    runtime().block_on(async {
        let journal = PostgresJournal::connect(&cluster.url(), PostgresOptions::new()).await.unwrap();
        let id = journal.next_id();
        let second = journal.next_id();
        assert_ne!(id, second);
        journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b"op")).await.unwrap();
        journal.append(&Entry::new_raw(id, Some(0), EntryKind::Done, b"first")).await.unwrap();
        journal.append(&Entry::new_raw(id, Some(1), EntryKind::Done, b"x")).await.unwrap();
        // Repeated: the first copy is kept, no error.
        journal.append(&Entry::new_raw(id, Some(0), EntryKind::Done, b"again")).await.unwrap();
        journal.append(&Entry::new_raw(id, Some(1), EntryKind::Undone, b"")).await.unwrap();
        let mut payloads = Vec::new();
        journal.read(id, &mut |e| payloads.push((e.step, e.kind, e.payload.to_vec()))).await.unwrap();
        assert_eq!(
            payloads,
            [
                (None, EntryKind::Begin.code(), b"op".to_vec()),
                (Some(0), EntryKind::Done.code(), b"first".to_vec()),
                (Some(1), EntryKind::Done.code(), b"x".to_vec()),
                (Some(1), EntryKind::Undone.code(), vec![]),
            ]
        );
        // Its own running transactions are never handed to its recovery.
        assert_eq!(journal.next_unfinished(None).await.unwrap(), None);
        // Another instance with the same owner id (a restart) takes it back
        // at once; a third, with another id, does not (the lease is alive).
        let other =
            PostgresJournal::connect(&cluster.url(), PostgresOptions::new().owner("someone-else")).await.unwrap();
        assert_eq!(other.next_unfinished(None).await.unwrap(), None);
        let restarted =
            PostgresJournal::connect(&cluster.url(), PostgresOptions::new().owner(journal.owner())).await.unwrap();
        assert_eq!(restarted.next_unfinished(None).await.unwrap(), Some(id));
        assert_eq!(restarted.generation(id), Some(2));
        // The first instance is fenced now.
        let fenced = journal.append(&Entry::new_raw(id, Some(2), EntryKind::Done, b"late")).await;
        assert!(matches!(fenced, Err(PostgresJournalError::Fenced { transaction }) if transaction == id), "{fenced:?}");
        restarted.append(&Entry::new_raw(id, None, EntryKind::RolledBack, &[1])).await.unwrap();
        assert_eq!(restarted.next_unfinished(None).await.unwrap(), None);
        assert_eq!(kinds(&restarted, id).await.last(), Some(&(None, EntryKind::RolledBack.code())));
        // An append to a transaction nobody began.
        let unknown = restarted.append(&Entry::new_raw(second, Some(0), EntryKind::Done, b"")).await;
        assert!(matches!(unknown, Err(PostgresJournalError::Fenced { .. })), "{unknown:?}");
    });
}

#[test]
fn transactions_commit_roll_back_and_keep_undo_records_as_jsonb() {
    let Some(cluster) = Cluster::start("commit") else { return };
    runtime().block_on(async {
        let journal = PostgresJournal::connect(&cluster.url(), PostgresOptions::new()).await.unwrap();
        let mut app = App::connect(journal.clone()).await;
        let manager = manager(journal.clone());
        for fail in [false, true] {
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
                    if fail {
                        tx.step("check").run(|| async { Err(common::app::Refused("no".into())) }).await?;
                    }
                    Ok::<_, StepError<common::app::Refused>>(())
                })
                .await;
            assert_eq!(outcome.is_ok(), !fail);
        }
        assert_eq!(app.effects("create").await.len(), 4);
        let deleted: Vec<String> = app.effects("delete").await.into_iter().map(|(key, ..)| key).collect();
        assert_eq!(deleted.len(), 2, "{deleted:?}");
        let client = cluster.client().await;
        let rows = client
            .query("SELECT step_name, undo->'Delete'->>'step' FROM tm_entries WHERE kind = 3 ORDER BY seq", &[])
            .await
            .unwrap();
        let undo: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            undo,
            [
                ("create".into(), "0".into()),
                ("create".into(), "1".into()),
                ("create".into(), "0".into()),
                ("create".into(), "1".into())
            ]
        );
        let unfinished: i64 =
            client.query_one("SELECT count(*) FROM tm_transactions WHERE NOT finished", &[]).await.unwrap().get(0);
        assert_eq!(unfinished, 0);
    });
}

#[test]
fn a_restarted_instance_recovers_what_it_left_unfinished() {
    let Some(cluster) = Cluster::start("recover") else { return };
    runtime().block_on(async {
        let options = || PostgresOptions::new().owner("worker-1");
        let journal = PostgresJournal::connect(&cluster.url(), options()).await.unwrap();
        let mut app = App::connect(journal.clone()).await;
        let id = leave_unfinished(&mut app, 2).await;
        drop(app);
        drop(journal);
        let journal = PostgresJournal::connect(&cluster.url(), options()).await.unwrap();
        let mut app = App::connect(journal.clone()).await;
        let report = manager(journal.clone()).recover::<Undo, Unbounded, _>(&mut app).await.unwrap();
        assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
        let deleted: Vec<(String, String, i64)> = app.effects("delete").await;
        let key = |step| IdempotencyKey::new(journal.origin(), id, step).to_string();
        assert_eq!(deleted, [(key(1), "worker-1".into(), 2), (key(0), "worker-1".into(), 2)]);
        let report = manager(journal).recover::<Undo, Unbounded, _>(&mut app).await.unwrap();
        assert_eq!(report.found(), 0);
    });
}

#[test]
fn undecodable_records_make_a_stuck_transaction_an_operator_resolves() {
    let Some(cluster) = Cluster::start("stuck") else { return };
    runtime().block_on(async {
        let options = || PostgresOptions::new().owner("worker-1");
        let journal = PostgresJournal::connect(&cluster.url(), options()).await.unwrap();
        let mut app = App::connect(journal.clone()).await;
        // Written by a newer program: schema 2.
        let newer: TransactionManager<_, (), _, _> =
            TransactionManager::new(TokioClock::new()).with_journal(journal.clone(), Json::<2>);
        let (send, mut id) = tokio::sync::mpsc::unbounded_channel();
        let run = newer.transaction("upgrade").unbounded::<Undo>().run_with(&mut app, async |tx| {
            let key = tx.next_step_key();
            tx.step("create")
                .execute_with(async move |_: &mut App| Ok::<_, common::app::Refused>(key))
                .undo(|key| Undo::Delete(*key))
                .await?;
            send.send(key.transaction()).unwrap();
            std::future::pending::<()>().await;
            Ok::<_, StepError<common::app::Refused>>(())
        });
        let id = tokio::select! { _ = run => unreachable!(), id = id.recv() => id.unwrap() };
        drop(app);
        drop(journal);
        let journal = PostgresJournal::connect(&cluster.url(), options()).await.unwrap();
        let mut app = App::connect(journal.clone()).await;
        let report = manager(journal.clone()).recover::<Undo, Unbounded, _>(&mut app).await.unwrap();
        assert_eq!(report.stuck(), 1, "{report}");
        let stuck = journal.stuck().await.unwrap();
        assert_eq!(stuck.len(), 1);
        assert_eq!(stuck[0].id, id);
        assert_eq!(stuck[0].operation, "upgrade");
        assert!(stuck[0].reason.contains("schema 2"), "{}", stuck[0].reason);
        assert_eq!(stuck[0].steps.len(), 1);
        assert_eq!(stuck[0].steps[0].name.as_deref(), Some("create"));
        assert_eq!(stuck[0].steps[0].entries, ["done"]);
        assert!(stuck[0].steps[0].undo.as_deref().is_some_and(|u| u.contains("Delete")));
        // Tried again by the next recovery, still stuck; then resolved.
        let report = manager(journal.clone()).recover::<Undo, Unbounded, _>(&mut app).await.unwrap();
        assert_eq!(report.stuck(), 1, "{report}");
        journal.resolve(id).await.unwrap();
        assert!(journal.stuck().await.unwrap().is_empty());
        let report = manager(journal.clone()).recover::<Undo, Unbounded, _>(&mut app).await.unwrap();
        assert_eq!(report.found(), 0);
        let missing = journal.resolve(transaction_manager::TransactionId::new(12345)).await;
        assert!(matches!(missing, Err(PostgresJournalError::NotFound { .. })), "{missing:?}");
    });
}

#[test]
fn a_newer_schema_is_refused() {
    let Some(cluster) = Cluster::start("schema") else { return };
    runtime().block_on(async {
        drop(PostgresJournal::connect(&cluster.url(), PostgresOptions::new()).await.unwrap());
        let client = cluster.client().await;
        client.execute("UPDATE tm_meta SET value = 99 WHERE key = 'schema'", &[]).await.unwrap();
        let refused = PostgresJournal::connect(&cluster.url(), PostgresOptions::new()).await;
        assert!(
            matches!(refused, Err(PostgresJournalError::NewerSchema { found: 99, known: 4 })),
            "{:?}",
            refused.err()
        );
    });
}

#[test]
fn the_database_down_at_start_is_a_connect_error() {
    let Some(cluster) = Cluster::start("down") else { return };
    cluster.stop();
    runtime().block_on(async {
        let refused = PostgresJournal::connect(&cluster.url(), PostgresOptions::new()).await;
        assert!(matches!(refused, Err(PostgresJournalError::Connect(_))), "{:?}", refused.err());
    });
    cluster.start_again();
}

#[test]
fn the_database_lost_mid_transaction_fails_the_step_and_leaves_it_recoverable() {
    let Some(cluster) = Cluster::start("lost") else { return };
    runtime().block_on(async {
        let options = || PostgresOptions::new().owner("worker-1");
        let journal = PostgresJournal::connect(&cluster.url(), options()).await.unwrap();
        let mut app = App::connect(journal.clone()).await;
        let server = &cluster;
        let outcome = manager(journal.clone())
            .transaction("provision")
            .unbounded::<Undo>()
            .run_with(&mut app, async |tx| {
                let key = tx.next_step_key();
                tx.step("create")
                    .execute_with(async move |app: &mut App| app.effect("create", key).await.map(|()| key))
                    .undo(|key| Undo::Delete(*key))
                    .await?;
                // The server goes away (as in a crash) while the next step runs.
                let key = tx.next_step_key();
                tx.step("create")
                    .execute_with(async move |_: &mut App| {
                        server.stop();
                        Ok::<_, common::app::Refused>(key)
                    })
                    .undo(|key| Undo::Delete(*key))
                    .await?;
                Ok::<_, StepError<common::app::Refused>>(())
            })
            .await;
        let error = outcome.expect_err("the step's Done could not be written");
        let text = error.to_string();
        assert!(text.contains("journal: writing `done` failed") && text.contains("lost"), "{text}");
        // Rolled back in memory: step 0's rollback ran (its effect was
        // refused, the database being down).
        assert_eq!(error.summary().steps()[0].status(), transaction_manager::StepStatus::RollbackFailed);
        drop(app);
        drop(journal);
        cluster.start_again();
        let journal = PostgresJournal::connect(&cluster.url(), options()).await.unwrap();
        let mut app = App::connect(journal.clone()).await;
        let report = manager(journal.clone()).recover::<Undo, Unbounded, _>(&mut app).await.unwrap();
        assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
        assert_eq!(app.effects("delete").await.len(), 1);
    });
}
