//! One decision per transaction (issue "Durability holes", item 6: the
//! ambiguous commit). When the `Committed` append fails, the engine writes
//! `Aborted` before it rolls anything back, and the journal keeps the first
//! decision: `run`'s result agrees with what the journal holds, and a crash
//! during the rollback cannot leave a transaction half rolled back behind a
//! `Committed`. On virtual time with the in-memory journal.

use futures_lite::future;
use transaction_manager::*;
use transaction_manager::{
    abandon::Unattended,
    journal::{
        Entry, EntryKind, Journal, Journaled, MemoryJournal, MemoryJournalError, Postcard, Recovery, StoredEntry,
    },
    storage::Fixed,
};

/// The outside world: resources that exist, and those rolled back.
#[derive(Default, Debug)]
struct World {
    live: Vec<String>,
    rolled_back: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Undo {
    Delete(String),
}

impl Rollback<World> for Undo {
    type Error = String;

    async fn rollback(&mut self, world: &mut World) -> Result<(), String> {
        let Undo::Delete(name) = self;
        world.live.retain(|r| r != name);
        world.rolled_back.push(name.clone());
        Ok(())
    }
}

type Manager<'c, J> = TransactionManager<&'c ManualClock, (), Unattended, Journaled<J, Postcard<1>>>;

fn manager<J: Journal>(clock: &ManualClock, journal: J) -> Manager<'_, J> {
    TransactionManager::new(clock).with_journal(journal, Postcard::<1>)
}

/// Creates `a` and `b`; the body returns `Ok`, so the transaction commits.
async fn create_two<J: Journal>(
    manager: &Manager<'_, J>,
    world: &mut World,
) -> Result<Committed<(), Fixed<4>>, TransactionError<StepError<String>, String, Fixed<4>>> {
    manager
        .transaction("provision")
        .fixed::<Undo, 4>()
        .run_with(world, async |tx| {
            for name in ["a", "b"] {
                tx.step(name)
                    .execute_with(async move |w: &mut World| {
                        w.live.push(name.to_string());
                        Ok::<_, String>(name.to_string())
                    })
                    .undo(|n| Undo::Delete(n.clone()))
                    .await?;
            }
            Ok::<_, StepError<String>>(())
        })
        .await
}

fn kinds(journal: &MemoryJournal, id: TransactionId) -> Vec<(Option<u32>, EntryKind)> {
    journal.flush();
    journal.entries(id).iter().map(|row| (row.step, EntryKind::from_code(row.kind).unwrap())).collect()
}

fn recover<J: Journal>(manager: &Manager<'_, J>, world: &mut World) -> Recovery {
    manager.clock().block_on(manager.recover::<Undo, Fixed<4>, _>(world)).unwrap()
}

/// `Committed` reached the journal, but its append reported an error (a
/// connection lost after the statement was sent): the journal refuses the
/// `Aborted` that follows, so the commit was durable after all and `run`
/// says so; nothing is rolled back and recovery finds nothing.
#[test]
fn a_commit_that_reached_the_journal_but_reported_an_error_is_committed() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, journal.clone());
    let mut world = World::default();
    journal.fail_after_write(Some(EntryKind::Committed));
    let committed = clock.block_on(create_two(&manager, &mut world)).expect("the commit is in the journal: committed");
    journal.fail_after_write(None);
    let summary = committed.summary();
    assert_eq!((summary.completed_steps(), summary.rolled_back_steps()), (2, 0));
    assert_eq!(world.live, ["a", "b"]);
    assert!(world.rolled_back.is_empty());
    let id = summary.transaction_id();
    assert!(journal.has(id, None, EntryKind::Committed));
    assert!(!journal.has(id, None, EntryKind::Aborted), "the second decision is refused");

    let restarted = journal.restart();
    let report = recover(&self::manager(&clock, restarted), &mut world);
    assert_eq!(report.found(), 0, "{report}");
    assert!(world.rolled_back.is_empty());
}

/// `Committed` did not reach the journal: `Aborted` is written first, then
/// the steps are rolled back, and the transaction ends rolled back.
#[test]
fn a_commit_that_did_not_reach_the_journal_is_aborted_then_rolled_back() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, journal.clone());
    let mut world = World::default();
    journal.fail_before_write(Some(EntryKind::Committed));
    let error = clock.block_on(create_two(&manager, &mut world)).unwrap_err();
    journal.fail_before_write(None);
    let StepErrorKind::Journal(failure) = error.cause().kind() else { panic!("{:?}", error.cause()) };
    assert_eq!((failure.entry(), failure.decided()), (Some(EntryKind::Committed), None));
    assert_eq!(error.rollback_state(), RollbackState::Clean);
    assert_eq!(world.rolled_back, ["b", "a"]);
    assert!(world.live.is_empty());
    let id = error.summary().transaction_id();
    assert_eq!(
        kinds(&journal, id),
        [
            (None, EntryKind::Begin),
            (Some(0), EntryKind::Done),
            (Some(1), EntryKind::Done),
            (None, EntryKind::Aborted),
            (Some(1), EntryKind::Undone),
            (Some(0), EntryKind::Undone),
            (None, EntryKind::RolledBack),
        ]
    );
    // The journal holds `Aborted`: a late `Committed` is refused.
    let late = clock.block_on(journal.append(&Entry::new_raw(id, None, EntryKind::Committed, b""))).unwrap_err();
    assert_eq!(MemoryJournal::decided(&late), Some(EntryKind::Aborted));
}

/// Neither decision can be written (the journal is gone): the outcome is
/// unknown, so nothing is rolled back in memory and `run`'s error says so;
/// the transaction stays unfinished in the journal, and recovery rolls it
/// back (the journal holds no `Committed`).
#[test]
fn when_neither_decision_can_be_written_nothing_is_rolled_back_and_recovery_decides() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, journal.clone());
    let mut world = World::default();
    let error = clock
        .block_on(manager.transaction("provision").fixed::<Undo, 4>().run_with(&mut world, async |tx| {
            for name in ["a", "b"] {
                tx.step(name)
                    .execute_with(async move |w: &mut World| {
                        w.live.push(name.to_string());
                        Ok::<_, String>(name.to_string())
                    })
                    .undo(|n| Undo::Delete(n.clone()))
                    .await?;
            }
            journal.fail_writes(Some("I/O error"));
            Ok::<_, StepError<String>>(())
        }))
        .unwrap_err();
    journal.fail_writes(None);
    assert_eq!(error.cause().step(), "(commit)");
    let StepErrorKind::Journal(failure) = error.cause().kind() else { panic!("{:?}", error.cause()) };
    assert_eq!(failure.entry(), Some(EntryKind::Aborted));
    // Honest: nothing was rolled back, and it is not clean.
    assert!(world.rolled_back.is_empty());
    assert_eq!(world.live, ["a", "b"]);
    assert_eq!(error.rollback_state(), RollbackState::Partial);
    assert_eq!(error.summary().rolled_back_steps(), 0);
    assert_eq!(error.skipped_rollbacks().count(), 2);
    assert!(error.rollback_failures().is_empty());
    let text = error.to_string();
    assert!(
        text.ends_with(
            "outcome unknown: nothing rolled back, 2 rollbacks left to recovery (rolled back unless the journal \
             holds `committed`)"
        ),
        "{text}"
    );
    let id = error.summary().transaction_id();
    assert!(!journal.has(id, None, EntryKind::RolledBack));

    // `recover_dropped` in this process, or `recover` after a restart,
    // rolls it back: the journal holds no decision.
    let restarted = journal.restart();
    let report = recover(&self::manager(&clock, restarted.clone()), &mut world);
    assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
    assert_eq!(world.rolled_back, ["b", "a"]);
    assert!(restarted.has(id, None, EntryKind::RolledBack));
}

/// The same, in the same process: the transaction is handed to
/// `recover_dropped`, which rolls it back once the journal works again.
#[test]
fn an_undecided_transaction_is_left_to_recover_dropped() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, journal.clone());
    let mut world = World::default();
    journal.fail_before_write(Some(EntryKind::Committed));
    journal.fail_after_write(Some(EntryKind::Aborted));
    // `Aborted` is written but reported failed: the engine cannot know.
    let error = clock.block_on(create_two(&manager, &mut world)).unwrap_err();
    journal.fail_before_write(None);
    journal.fail_after_write(None);
    assert!(world.rolled_back.is_empty());
    assert_eq!(error.rollback_state(), RollbackState::Partial);
    let report = clock.block_on(manager.recover_dropped::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
    assert_eq!(world.rolled_back, ["b", "a"]);
}

/// `Committed` reached the journal but reported an error, and the
/// `Aborted` append then failed for another reason: the outcome is unknown
/// to `run` (nothing rolled back), and recovery, finding `Committed`,
/// leaves the transaction committed.
#[test]
fn an_undecided_transaction_whose_commit_is_durable_stays_committed() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    journal.fail_after_write(Some(EntryKind::Committed));
    let manager = manager(&clock, Unreachable(journal.clone()));
    let mut world = World::default();
    let error = clock.block_on(create_two(&manager, &mut world)).unwrap_err();
    journal.fail_after_write(None);
    assert!(world.rolled_back.is_empty());
    assert_eq!(world.live, ["a", "b"]);
    assert_eq!(error.rollback_state(), RollbackState::Partial);
    let report = recover(&self::manager(&clock, journal.restart()), &mut world);
    assert_eq!(report.found(), 0, "{report}");
    assert!(world.rolled_back.is_empty());
}

/// A journal whose `Aborted` appends never arrive (the connection is gone
/// by then): they fail without storing anything.
struct Unreachable(MemoryJournal);

impl Journal for Unreachable {
    type Error = MemoryJournalError;

    fn next_id(&self) -> TransactionId {
        self.0.next_id()
    }

    fn origin(&self) -> u64 {
        self.0.origin()
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), MemoryJournalError> {
        if entry.kind() == EntryKind::Aborted {
            let gone = MemoryJournal::new();
            gone.fail_writes(Some("connection refused"));
            return gone.append(entry).await;
        }
        self.0.append(entry).await
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error> {
        self.0.next_unfinished(after).await
    }

    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error> {
        self.0.read(id, visit).await
    }

    fn decided(error: &MemoryJournalError) -> Option<EntryKind> {
        MemoryJournal::decided(error)
    }
}

/// A power cut during the in-memory rollback that follows `Aborted`: the
/// restarted process's recovery finishes the rollback (the journal holds
/// `Aborted`, not `Committed`), so the transaction is never left half
/// rolled back.
#[test]
fn a_power_cut_during_the_rollback_after_aborted_is_finished_by_recovery() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, journal.clone());
    let mut world = World::default();
    journal.fail_before_write(Some(EntryKind::Committed));
    // Begin, Done a, Done b, Aborted: the power is cut at the next append
    // (`b`'s `Undone`, after `b`'s rollback ran).
    journal.cut_power_after(4);
    let crashed = clock.block_on(future::or(async { Some(create_two(&manager, &mut world).await) }, async {
        journal.power_lost().await;
        None
    }));
    assert!(crashed.is_none(), "{crashed:?}");
    assert_eq!(world.rolled_back, ["b"], "half rolled back when the power went");
    let restarted = journal.restart();
    let id = TransactionId::new(1);
    assert!(restarted.has(id, None, EntryKind::Aborted));
    assert!(!restarted.has(id, None, EntryKind::Committed));

    let report = recover(&self::manager(&clock, restarted.clone()), &mut world);
    assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
    // `b`'s rollback is repeated (its `Undone` was lost: rollbacks are
    // idempotent), then `a`'s: nothing is left.
    assert_eq!(world.rolled_back, ["b", "b", "a"]);
    assert!(world.live.is_empty());
    assert!(restarted.has(id, None, EntryKind::RolledBack));
}
