//! Retention on Postgres: finished transactions are deleted by hand and by
//! each instance's pruning task; unfinished ones (running, owing a failed
//! rollback, stuck) never are; an `Aborted` for a pruned commit is refused,
//! never stored; the operator's view (`Browse`) lists every state with
//! times.

mod common;

use std::time::Duration;

use common::Cluster;
use transaction_manager::TransactionId;
use transaction_manager::journal::inspect::{self, Filter, TransactionState};
use transaction_manager::journal::{Entry, EntryKind, Journal, Retention};
use transaction_manager_postgres::{PostgresJournal, PostgresOptions};

use EntryKind::{Aborted, Begin, Committed, Done, Resolved, RolledBack, Stuck, UndoFailed};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn append(journal: &PostgresJournal, id: TransactionId, step: Option<u32>, kind: EntryKind, payload: &[u8]) {
    journal.append(&Entry::new_raw(id, step, kind, payload)).await.unwrap();
}

/// A transaction with one step that ended with `end`.
async fn finished(journal: &PostgresJournal, end: EntryKind) -> TransactionId {
    let id = journal.next_id();
    append(journal, id, None, Begin, b"provision").await;
    append(journal, id, Some(0), Done, b"undo").await;
    if end == Resolved {
        journal.resolve(id).await.unwrap();
    } else {
        append(journal, id, None, end, &[1]).await;
    }
    id
}

async fn count(journal: &PostgresJournal, id: TransactionId) -> usize {
    let mut n = 0;
    journal.read(id, &mut |_| n += 1).await.unwrap();
    n
}

#[test]
fn retention_on_postgres_deletes_what_is_over_and_never_what_is_not() {
    let Some(cluster) = Cluster::start("retention") else { return };
    runtime().block_on(async {
        let journal = PostgresJournal::connect(&cluster.url(), PostgresOptions::new().retention(Retention::KeepAll))
            .await
            .unwrap();
        let committed = finished(&journal, Committed).await;
        let rolled_back = finished(&journal, RolledBack).await;
        let resolved = finished(&journal, Resolved).await;
        let running = journal.next_id();
        append(&journal, running, None, Begin, b"provision").await;
        append(&journal, running, Some(0), Done, b"undo").await;
        let owed = journal.next_id();
        append(&journal, owed, None, Begin, b"billing").await;
        append(&journal, owed, Some(0), Done, b"undo").await;
        append(&journal, owed, Some(0), UndoFailed, b"quota service down").await;
        let stuck = journal.next_id();
        append(&journal, stuck, None, Begin, b"import").await;
        append(&journal, stuck, None, Stuck, b"undecodable").await;

        // The operator's view: every state, with the database's times.
        let all = inspect::list(&journal, &Filter::new()).await.unwrap();
        let states: Vec<_> = all.iter().map(|t| (t.id, t.state)).collect();
        assert_eq!(
            states,
            [
                (committed, TransactionState::Committed),
                (rolled_back, TransactionState::RolledBack),
                (resolved, TransactionState::Resolved),
                (running, TransactionState::Running),
                (owed, TransactionState::Owed),
                (stuck, TransactionState::Stuck),
            ]
        );
        assert!(all.iter().all(|t| t.started_at.is_some()));
        assert!(all[0].ended_at.is_some() && all[3].ended_at.is_none());
        assert_eq!(all[4].steps[0].rollback_error.as_deref(), Some("quota service down"));

        // Keep the newest one that is over, then none.
        assert_eq!(journal.prune(Retention::KeepLast(1)).await.unwrap().transactions, 2);
        assert_eq!((count(&journal, committed).await, count(&journal, rolled_back).await), (0, 0));
        assert_eq!(count(&journal, resolved).await, 3);
        assert_eq!(journal.prune(Retention::KeepFor(Duration::from_secs(3600))).await.unwrap().transactions, 0);
        let pruned = journal.prune(Retention::DeleteAtOnce).await.unwrap();
        assert_eq!((pruned.transactions, pruned.entries), (1, 3));
        assert_eq!(journal.prune(Retention::DeleteAtOnce).await.unwrap().transactions, 0);
        // What is not over keeps every entry.
        assert_eq!(
            (count(&journal, running).await, count(&journal, owed).await, count(&journal, stuck).await),
            (2, 3, 2)
        );
        let left: Vec<_> = inspect::list(&journal, &Filter::new()).await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(left, [running, owed, stuck]);
    });
}

#[test]
fn an_aborted_for_a_pruned_commit_is_refused_never_stored() {
    let Some(cluster) = Cluster::start("retention-decision") else { return };
    runtime().block_on(async {
        let journal = PostgresJournal::connect(&cluster.url(), PostgresOptions::new().retention(Retention::KeepAll))
            .await
            .unwrap();
        let id = finished(&journal, Committed).await;
        assert_eq!(journal.prune(Retention::DeleteAtOnce).await.unwrap().transactions, 1);
        // The engine appends `Aborted` only after a `Committed` that reported
        // an error; here the commit was durable and is gone: the `Aborted`
        // finds no row and is refused, so nothing can roll the commit back.
        let aborted = journal.append(&Entry::new_raw(id, None, Aborted, b"")).await;
        assert!(aborted.is_err(), "{aborted:?}");
        assert_eq!(count(&journal, id).await, 0);
        assert_eq!(journal.next_unfinished(None).await.unwrap(), None);
    });
}

#[test]
fn each_instance_prunes_in_the_background() {
    let Some(cluster) = Cluster::start("retention-background") else { return };
    runtime().block_on(async {
        let options = PostgresOptions::new().retention(Retention::DeleteAtOnce).prune_every(Duration::from_millis(50));
        let journal = PostgresJournal::connect(&cluster.url(), options).await.unwrap();
        let id = finished(&journal, Committed).await;
        let running = journal.next_id();
        append(&journal, running, None, Begin, b"provision").await;
        // Real time, but no timing assertion: the test only waits for it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while count(&journal, id).await > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the instance never pruned");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(count(&journal, running).await, 1);
    });
}
