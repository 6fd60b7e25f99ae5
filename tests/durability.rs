//! The edges of durability (issue "Durability holes"): an owed rollback is
//! never forgotten, recovery never touches live work, malformed journal
//! contents make a transaction stuck, ids are refused when reused. On
//! virtual time with the in-memory journal.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use futures_lite::future;
use transaction_manager::*;
use transaction_manager::{
    abandon::Unattended,
    group::member,
    hooks::{Hooks, StepEvent},
    journal::{
        Entry, EntryKind, Journal, Journaled, MemoryJournal, MemoryJournalError, OwedRetry, OwedStep, Postcard,
        RecoveredTransaction, Recovery, RecoveryError, RecoveryOutcome, StoredEntry,
    },
    rollback::RollbackFailurePolicy,
    storage::{Fixed, Storage},
    time::ManualSleep,
};

/// The outside world: resources that exist, and rollbacks made to fail.
#[derive(Default, Debug)]
struct World {
    live: Vec<String>,
    rolled_back: Vec<String>,
    /// How many more rollback attempts of a resource fail.
    failing: BTreeMap<String, u32>,
    /// Resources whose rollback never ends.
    hanging: Vec<String>,
    /// Rollback attempts, per resource.
    attempts: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Undo {
    Delete(String),
}

impl Rollback<World> for Undo {
    type Error = String;

    async fn rollback(&mut self, world: &mut World) -> Result<(), String> {
        let Undo::Delete(name) = self;
        *world.attempts.entry(name.clone()).or_default() += 1;
        if world.hanging.contains(name) {
            std::future::pending::<()>().await;
        }
        if let Some(left) = world.failing.get_mut(name.as_str()).filter(|left| **left > 0) {
            *left -= 1;
            return Err(format!("{name}: still attached"));
        }
        world.live.retain(|r| r != name);
        world.rolled_back.push(name.clone());
        Ok(())
    }
}

type Manager<'c> = TransactionManager<&'c ManualClock, (), Unattended, Journaled<MemoryJournal, Postcard<1>>>;

fn manager<'c>(clock: &'c ManualClock, journal: &MemoryJournal) -> Manager<'c> {
    TransactionManager::new(clock).with_journal(journal.clone(), Postcard::<1>)
}

/// Creates `a` and `b`, then fails: both are rolled back (`b` first).
async fn create_two_then_fail(
    manager: &Manager<'_>,
    world: &mut World,
) -> TransactionError<StepError<String>, String, Fixed<4>> {
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
            tx.step("c").run(|| async { Err::<(), _>("c: refused".to_string()) }).await?;
            Ok::<_, StepError<String>>(())
        })
        .await
        .unwrap_err()
}

/// Creates each of `names`, then fails: all are rolled back, latest first.
async fn create_then_fail(
    manager: &Manager<'_>,
    world: &mut World,
    names: &[&'static str],
) -> TransactionError<StepError<String>, String, Fixed<4>> {
    manager
        .transaction("provision")
        .fixed::<Undo, 4>()
        .run_with(world, async |tx| {
            for &name in names {
                tx.step(name)
                    .execute_with(async move |w: &mut World| {
                        w.live.push(name.to_string());
                        Ok::<_, String>(name.to_string())
                    })
                    .undo(|n| Undo::Delete(n.clone()))
                    .await?;
            }
            tx.step("last").run(|| async { Err::<(), _>("last: refused".to_string()) }).await?;
            Ok::<_, StepError<String>>(())
        })
        .await
        .unwrap_err()
}

/// Recovers, collecting each transaction recovery touched.
fn recover_each(manager: &Manager<'_>, world: &mut World) -> (Recovery, Vec<(u64, String, RecoveryOutcome)>) {
    let mut touched = Vec::new();
    let report = manager
        .clock()
        .block_on(manager.recover_each::<Undo, Fixed<4>, _>(world, |tx: &RecoveredTransaction<'_>| {
            touched.push((tx.id().get(), tx.operation().to_string(), tx.outcome()));
        }))
        .unwrap();
    (report, touched)
}

#[test]
fn a_rollback_that_fails_for_good_stays_owed_until_a_recovery_succeeds() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal);
    let mut world = World::default();
    // `a`'s rollback fails in the live run and at the first recovery.
    world.failing.insert("a".into(), 2);
    let error = clock.block_on(create_two_then_fail(&manager, &mut world));
    assert!(error.is_partially_rolled_back());
    assert_eq!(world.rolled_back, ["b"]);
    let id = error.summary().transaction_id();
    assert!(!journal.has(id, None, EntryKind::RolledBack), "a partial rollback does not end the transaction");

    // Listed as owed: which step, and why its rollback failed.
    let mut owed = Vec::new();
    let count = clock
        .block_on(manager.owed(|step: &OwedStep<'_>| {
            owed.push((step.transaction().get(), step.operation().to_string(), step.step().to_string(), step.index()));
            assert_eq!(step.error(), Some("a: still attached"));
        }))
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(owed, [(id.get(), "provision".to_string(), "a".to_string(), 0)]);

    // The first recovery tries again and fails: still owed, and named.
    let (report, touched) = recover_each(&manager, &mut world);
    assert_eq!((report.found(), report.partially_rolled_back(), report.rolled_back()), (1, 1, 0), "{report}");
    assert_eq!(touched, [(id.get(), "provision".to_string(), RecoveryOutcome::Owed)]);
    assert!(!journal.has(id, None, EntryKind::RolledBack));

    // The next one succeeds: the transaction ends, rolled back.
    let (report, touched) = recover_each(&manager, &mut world);
    assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
    assert_eq!(touched, [(id.get(), "provision".to_string(), RecoveryOutcome::RolledBack)]);
    assert_eq!(world.rolled_back, ["b", "a"]);
    assert!(journal.has(id, None, EntryKind::RolledBack));
    assert_eq!(clock.block_on(manager.owed(|_| {})).unwrap(), 0);
    assert_eq!(recover_each(&manager, &mut world).0.found(), 0);
}

#[test]
fn an_owed_rollback_survives_a_restart() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let mut world = World::default();
    world.failing.insert("b".into(), 1);
    let error = clock.block_on(create_two_then_fail(&manager(&clock, &journal), &mut world));
    assert!(error.is_partially_rolled_back());
    journal.flush();
    // A new process on what was written.
    let restarted = journal.restart();
    let manager = manager(&clock, &restarted);
    let (report, touched) = recover_each(&manager, &mut world);
    assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
    assert_eq!(touched.len(), 1);
    assert_eq!(world.rolled_back, ["a", "b"]);
}

#[test]
fn a_done_entry_without_a_step_makes_its_transaction_stuck() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let id = TransactionId::new(70);
    journal.insert_raw(id, None, EntryKind::Begin.code(), b"op");
    journal.insert_raw(id, None, EntryKind::Done.code(), b"");
    let manager = manager(&clock, &journal);
    let (report, touched) = recover_each(&manager, &mut World::default());
    assert_eq!((report.found(), report.stuck()), (1, 1), "{report}");
    assert_eq!(touched, [(70, "op".to_string(), RecoveryOutcome::Stuck)]);
    let mut reasons = Vec::new();
    clock.block_on(manager.stuck(|_, reason| reasons.push(reason.to_string()))).unwrap();
    assert_eq!(reasons, ["a `done` entry without a step"]);
}

#[test]
fn step_entries_without_a_step_make_their_transaction_stuck() {
    for kind in [EntryKind::Intent, EntryKind::Undone, EntryKind::Released, EntryKind::UndoFailed] {
        let clock = ManualClock::new();
        let journal = MemoryJournal::new();
        journal.insert_raw(TransactionId::new(71), None, kind.code(), b"");
        let (report, _) = recover_each(&manager(&clock, &journal), &mut World::default());
        assert_eq!((report.found(), report.stuck()), (1, 1), "{kind}: {report}");
    }
}

#[test]
fn an_undone_entry_of_a_step_without_its_done_owes_nothing() {
    // What a journal that keeps only a step's latest entry (flash) hands
    // back for a step that was rolled back.
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    journal.insert_raw(TransactionId::new(72), Some(3), EntryKind::Undone.code(), b"");
    let (report, _) = recover_each(&manager(&clock, &journal), &mut World::default());
    assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
}

/// A journal whose ids start at 0 (the in-memory journal's start at 1).
struct FromZero(MemoryJournal);

impl Journal for FromZero {
    type Error = MemoryJournalError;

    fn next_id(&self) -> TransactionId {
        TransactionId::new(self.0.next_id().get() - 1)
    }

    fn origin(&self) -> u64 {
        self.0.origin()
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), Self::Error> {
        self.0.append(entry).await
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error> {
        self.0.next_unfinished(after).await
    }

    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error> {
        self.0.read(id, visit).await
    }
}

#[test]
fn recover_dropped_finds_a_transaction_whose_id_is_0() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(FromZero(MemoryJournal::new()), Postcard::<1>);
    let mut world = World::default();
    clock.block_on(async {
        let dropped = manager.transaction("zero").fixed::<Undo, 2>().run_with(&mut world, async |tx| {
            assert_eq!(tx.id(), TransactionId::new(0));
            tx.step("a")
                .execute_with(async |w: &mut World| {
                    w.live.push("a".into());
                    Ok::<_, String>("a".to_string())
                })
                .undo(|n| Undo::Delete(n.clone()))
                .await?;
            tx.step("wait")
                .run(|| async {
                    clock.sleep(Duration::from_secs(10)).await;
                    Ok::<_, String>(())
                })
                .await?;
            Ok::<_, StepError<String>>(())
        });
        let stopped = future::or(async { Some(dropped.await) }, async {
            clock.sleep(Duration::from_secs(1)).await;
            None
        })
        .await;
        assert!(stopped.is_none());
    });
    let report = clock.block_on(manager.recover_dropped::<Undo, Fixed<2>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
    assert_eq!(world.rolled_back, ["a"]);
}

#[test]
fn a_journaled_transaction_refuses_an_id_given_by_hand() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal);
    let mut world = World::default();
    // The first transaction takes the journal's id 1 and commits.
    let first = clock.block_on(manager.transaction("t").fixed::<Undo, 2>().run_with(&mut world, async |tx| {
        tx.step("a").run(|| async { Ok::<_, String>(()) }).await?;
        Ok::<_, StepError<String>>(tx.id())
    }));
    let id = first.unwrap().into_value();
    // Reusing it would hide the second one's owed rollback behind the
    // first one's `Committed`: refused before anything runs or is written.
    let appends = journal.appends();
    let error = clock
        .block_on(manager.transaction("t").with_id(id).fixed::<Undo, 2>().run_with(&mut world, async |tx| {
            tx.step("b")
                .execute_with(async |w: &mut World| {
                    w.live.push("b".into());
                    Ok::<_, String>("b".to_string())
                })
                .undo(|n| Undo::Delete(n.clone()))
                .await?;
            Ok::<_, StepError<String>>(())
        }))
        .unwrap_err();
    assert!(
        matches!(error.cause().kind(), StepErrorKind::Journal(failure) if failure.entry() == Some(EntryKind::Begin)),
        "{error}"
    );
    assert_eq!(error.cause().step(), "(begin)");
    assert!(error.to_string().contains("with_id"), "{error}");
    assert_eq!(error.summary().total_steps(), 0, "no step ran");
    assert!(world.live.is_empty(), "no effect");
    assert_eq!(journal.appends(), appends, "nothing written");
}

#[test]
fn a_partial_scope_rollback_leaves_the_transaction_owed() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal);
    let mut world = World::default();
    world.failing.insert("inner".into(), 1);
    let error = clock
        .block_on(manager.transaction("scoped").fixed::<Undo, 4>().run_with(&mut world, async |tx| {
            tx.step("outer")
                .execute_with(async |w: &mut World| {
                    w.live.push("outer".into());
                    Ok::<_, String>("outer".to_string())
                })
                .undo(|n| Undo::Delete(n.clone()))
                .await?;
            let scoped = tx
                .scope("optional", async |tx| {
                    tx.step("inner")
                        .execute_with(async |w: &mut World| {
                            w.live.push("inner".into());
                            Ok::<_, String>("inner".to_string())
                        })
                        .undo(|n| Undo::Delete(n.clone()))
                        .await?;
                    tx.step("refused").run(|| async { Err::<(), _>("no".to_string()) }).await?;
                    Ok::<_, StepError<String>>(())
                })
                .await;
            assert!(scoped.is_err());
            tx.step("last").run(|| async { Err::<(), _>("last: refused".to_string()) }).await?;
            Ok::<_, StepError<String>>(())
        }))
        .unwrap_err();
    assert!(error.is_partially_rolled_back(), "{error}");
    let id = error.summary().transaction_id();
    // One rule for clean/partial: the journal agrees with the error.
    assert!(!journal.has(id, None, EntryKind::RolledBack), "journaled as finished although `inner` is owed");
    let (report, _) = recover_each(&manager, &mut world);
    assert_eq!(report.rolled_back(), 1, "{report}");
    assert_eq!(world.rolled_back, ["outer", "inner"]);
}

#[test]
fn recovery_never_rolls_back_a_transaction_running_in_this_process() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal);
    let world = RefCell::new(World::default());
    let mut other = World::default();
    let outcome = clock.block_on(async {
        let running = async {
            let mut running_world = World::default();
            let outcome = manager
                .transaction("running")
                .fixed::<Undo, 2>()
                .run_with(&mut running_world, async |tx| {
                    tx.step("a")
                        .execute_with(async |w: &mut World| {
                            w.live.push("a".into());
                            Ok::<_, String>("a".to_string())
                        })
                        .undo(|n| Undo::Delete(n.clone()))
                        .await?;
                    tx.step("wait")
                        .run(|| async {
                            manager.clock().sleep(Duration::from_secs(10)).await;
                            Ok::<_, String>(())
                        })
                        .await?;
                    Ok::<_, StepError<String>>(())
                })
                .await;
            *world.borrow_mut() = running_world;
            outcome.is_ok()
        };
        let recovering = async {
            manager.clock().sleep(Duration::from_secs(1)).await;
            let mut touched = Vec::new();
            let report = manager
                .recover_each::<Undo, Fixed<2>, _>(&mut other, |tx: &RecoveredTransaction<'_>| {
                    touched.push(tx.outcome())
                })
                .await
                .unwrap();
            (report, touched)
        };
        future::zip(running, recovering).await
    });
    let (committed, (report, touched)) = outcome;
    assert!(committed);
    assert_eq!(report.rolled_back(), 0, "{report}");
    assert_eq!(touched, [RecoveryOutcome::Running]);
    assert!(other.rolled_back.is_empty());
    assert_eq!(world.borrow().live, ["a"]);
}

/// A clock whose `sleep()` panics (against its contract).
#[derive(Clone, Copy)]
struct SleepPanics<'c>(&'c ManualClock);

impl<'c> Clock for SleepPanics<'c> {
    type Sleep = ManualSleep<'c>;

    fn now(&self) -> Duration {
        self.0.now()
    }

    fn sleep(&self, _: Duration) -> ManualSleep<'c> {
        panic!("this clock cannot sleep")
    }
}

#[test]
fn a_clock_whose_sleep_panics_does_not_fail_a_rollback_that_needs_no_timer() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(SleepPanics(&clock));
    static ROLLED_BACK: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let rolled_back = &ROLLED_BACK;
    let error = clock
        .block_on(manager.run("timed", async |tx| {
            // A timeout on the step (and so on its rollback): the rollback
            // finishes at its first poll and needs no timer.
            tx.step("a")
                .timeout(Duration::from_secs(1))
                .execute(|| async { Ok::<_, String>(()) })
                .rollback(move |()| async move {
                    rolled_back.store(true, std::sync::atomic::Ordering::SeqCst);
                    Ok::<_, String>(())
                })
                .await?;
            tx.step("b").run(|| async { Err::<(), _>("b: refused".to_string()) }).await?;
            Ok::<_, StepError<String>>(())
        }))
        .unwrap_err();
    assert!(rolled_back.load(std::sync::atomic::Ordering::SeqCst), "the rollback was never polled: {error}");
    assert!(!error.is_partially_rolled_back(), "{error}");
}

/// What a transaction of these tests returns when it fails.
type Failed = TransactionError<StepError<String>, String, Fixed<4>>;

/// `outer`, then a scope whose `inner` rollback fails for good (its
/// `refused` step fails), then `last`, which fails or not: run with `Stop`.
#[allow(clippy::result_large_err)] // the error as `run` returns it
fn stop_after_a_failed_scope(world: &mut World, last_fails: bool) -> Result<Vec<(String, StepStatus)>, Failed> {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_rollback_failure_policy(RollbackFailurePolicy::Stop);
    world.failing.insert("inner".into(), 1);
    let outcome = clock.block_on(manager.transaction("stop").fixed::<Undo, 4>().run_with(world, async |tx| {
        tx.step("outer")
            .execute_with(async |w: &mut World| {
                w.live.push("outer".into());
                Ok::<_, String>("outer".to_string())
            })
            .undo(|n| Undo::Delete(n.clone()))
            .await?;
        let scoped = tx
            .scope("optional", async |tx| {
                tx.step("inner")
                    .execute_with(async |w: &mut World| {
                        w.live.push("inner".into());
                        Ok::<_, String>("inner".to_string())
                    })
                    .undo(|n| Undo::Delete(n.clone()))
                    .await?;
                tx.step("refused").run(|| async { Err::<(), _>("no".to_string()) }).await?;
                Ok::<_, StepError<String>>(())
            })
            .await;
        assert!(scoped.is_err());
        tx.step("last")
            .run(|| async move { if last_fails { Err("last: refused".to_string()) } else { Ok(()) } })
            .await?;
        Ok::<_, StepError<String>>(())
    }));
    outcome.map(|done| done.summary().steps().iter().map(|s| (s.name().to_string(), s.status())).collect())
}

#[test]
fn stop_after_a_scope_rollback_failed_stops_the_whole_transaction() {
    let mut world = World::default();
    let error = stop_after_a_failed_scope(&mut world, true).unwrap_err();
    assert!(error.is_partially_rolled_back(), "{error}");
    // The scope's rollback of `inner` failed: `Stop` leaves `outer` as it is.
    assert!(world.rolled_back.is_empty(), "{:?}", world.rolled_back);
    assert_eq!(error.summary().steps()[0].status(), StepStatus::RollbackSkipped);
}

/// Under `Stop`, once a scope's rollback failed for good, a later scope's
/// rollback is skipped as a whole: nothing of it failed, but its steps were
/// left as they are, so it reports itself partial, as the transaction would.
#[test]
fn a_scope_whose_rollback_stop_skipped_reports_itself_partial() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_rollback_failure_policy(RollbackFailurePolicy::Stop);
    let mut world = World::default();
    world.failing.insert("first".into(), 1);
    let states = clock.block_on(manager.transaction("stop").fixed::<Undo, 4>().run_with(&mut world, async |tx| {
        let mut states = Vec::new();
        for name in ["first", "second"] {
            let scoped = tx
                .scope(name, async |tx| {
                    tx.step(name)
                        .execute_with(async |w: &mut World| {
                            w.live.push(name.into());
                            Ok::<_, String>(name.to_string())
                        })
                        .undo(|n| Undo::Delete(n.clone()))
                        .await?;
                    tx.step("refused").run(|| async { Err::<(), _>("no".to_string()) }).await?;
                    Ok::<_, StepError<String>>(())
                })
                .await;
            let error = scoped.expect_err("the scope fails");
            states.push((error.rollback_failures().len(), error.rollback_state()));
        }
        Ok::<_, StepError<String>>(states)
    }));
    let states = states.expect("the body goes on after both scopes").into_value();
    // The first scope's rollback failed; the second's was skipped by `Stop`.
    assert_eq!(states, [(1, RollbackState::Partial), (0, RollbackState::Partial)]);
    assert_eq!(world.live, ["first", "second"]);
}

#[test]
fn a_damaged_undo_record_makes_its_transaction_stuck_never_trusted() {
    // A crash right after `a`'s `Done`: one rollback owed.
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    journal.cut_power_after(2);
    let mut world = World::default();
    let crashed = clock.block_on(future::or(
        async { Some(create_two_then_fail(&manager(&clock, &journal), &mut world).await) },
        async {
            journal.power_lost().await;
            None
        },
    ));
    assert!(crashed.is_none());
    let rows = journal.restart().entries(TransactionId::new(1));
    let done = rows.iter().position(|row| row.kind == EntryKind::Done.code()).expect("a durable Done");
    // Every single flipped bit, anywhere in the record (its retry policy,
    // its timeout, its name, the undo value, the checksum itself), makes
    // the transaction stuck: never a rollback run with a damaged policy.
    let len = rows[done].payload.len();
    for at in 0..len {
        for bit in [0x01u8, 0x10, 0x80] {
            let damaged = MemoryJournal::new();
            for (i, row) in rows.iter().enumerate() {
                let mut payload = row.payload.clone();
                if i == done {
                    payload[at] ^= bit;
                }
                damaged.insert_raw(row.transaction, row.step, row.kind, &payload);
            }
            let mut world = World::default();
            let (report, _) = recover_each(&manager(&clock, &damaged), &mut world);
            assert_eq!(report.stuck(), 1, "byte {at} of {len}, bit {bit:#x}: {report}");
            assert!(world.rolled_back.is_empty());
        }
    }
    // Undamaged, it rolls back.
    let intact = MemoryJournal::new();
    for row in &rows {
        intact.insert_raw(row.transaction, row.step, row.kind, &row.payload);
    }
    let mut world = World::default();
    assert_eq!(recover_each(&manager(&clock, &intact), &mut world).0.rolled_back(), 1);
    assert_eq!(world.rolled_back, ["a"]);
}

/// Undo records that a concurrent group rolls back: `Slow` waits until
/// `SLOW_UNBLOCKED` is set.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum GroupUndo {
    Fast(String),
    Slow(String),
}

static GROUP_ROLLED_BACK: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
static SLOW_UNBLOCKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Rollback<()> for GroupUndo {
    type Error = String;

    async fn rollback(&mut self, _: &mut ()) -> Result<(), String> {
        let name = match self {
            GroupUndo::Fast(name) => name.clone(),
            GroupUndo::Slow(name) => {
                // Pending without a wake-up until unblocked: the manual
                // clock moves on to the drop meanwhile.
                future::poll_fn(|_| {
                    if SLOW_UNBLOCKED.load(std::sync::atomic::Ordering::SeqCst) {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await;
                name.clone()
            }
        };
        GROUP_ROLLED_BACK.lock().unwrap().push(name);
        Ok(())
    }
}

#[test]
fn a_concurrent_group_rollback_dropped_midway_is_not_repeated_by_recover_dropped() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    clock.block_on(async {
        let transaction = manager.transaction("group").fixed::<GroupUndo, 4>().run(async |tx| {
            tx.group()
                .roll_back_concurrently()
                .run((
                    member("fast")
                        .execute(|| async { Ok::<_, String>("fast".to_string()) })
                        .undo(|n: &String| GroupUndo::Fast(n.clone())),
                    member("slow")
                        .execute(|| async { Ok::<_, String>("slow".to_string()) })
                        .undo(|n: &String| GroupUndo::Slow(n.clone())),
                ))
                .await?;
            tx.step("refused").run(|| async { Err::<(), _>("refused".to_string()) }).await?;
            Ok::<_, StepError<String>>(())
        });
        // Dropped while `slow` rolls back, after `fast`'s rollback ended.
        let stopped = future::or(async { Some(transaction.await) }, async {
            clock.sleep(Duration::from_secs(1)).await;
            None
        })
        .await;
        assert!(stopped.is_none());
    });
    assert_eq!(*GROUP_ROLLED_BACK.lock().unwrap(), ["fast"]);
    // `fast`'s `Undone` was written as it ended: only `slow` is owed.
    SLOW_UNBLOCKED.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = clock.block_on(manager.recover_dropped::<GroupUndo, Fixed<4>, _>(&mut ())).unwrap();
    assert_eq!(report.rolled_back(), 1, "{report}");
    assert_eq!(*GROUP_ROLLED_BACK.lock().unwrap(), ["fast", "slow"]);
}

#[test]
fn owed_rollbacks_backing_off_are_tried_at_fewer_recoveries_up_to_a_cap() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal).with_owed_retry(OwedRetry::Backoff { cap: 3 });
    let mut world = World::default();
    // `a`'s rollback fails live and at its next 3 tries.
    world.failing.insert("a".into(), 4);
    let id = clock.block_on(create_then_fail(&manager, &mut world, &["a"])).summary().transaction_id().get();
    let mut rounds = Vec::new();
    for _ in 0..10 {
        let (report, touched) = recover_each(&manager, &mut world);
        assert_eq!(touched.len(), report.found(), "{report}");
        assert!(touched.iter().all(|t| t.0 == id));
        rounds.push(touched.first().map(|t| t.2));
        let deferred = usize::from(touched[0].2 == RecoveryOutcome::Deferred);
        assert_eq!(report.deferred(), deferred, "{report}");
        let said = report.to_string().contains(", 1 owed and not tried this time (backing off)");
        assert_eq!(said, deferred == 1, "{report}");
    }
    use RecoveryOutcome::*;
    // Tried, skip 1; tried, skip 3; tried, skip 3 (the cap, not 7); tried: rolled back.
    assert_eq!(
        rounds,
        [
            Some(Owed),
            Some(Deferred),
            Some(Owed),
            Some(Deferred),
            Some(Deferred),
            Some(Deferred),
            Some(Owed),
            Some(Deferred),
            Some(Deferred),
            Some(Deferred),
        ]
    );
    assert_eq!(world.attempts["a"], 4, "1 live try and 3 in recovery");
    let (report, _) = recover_each(&manager, &mut world);
    assert_eq!(report.rolled_back(), 1, "{report}");
    assert_eq!(world.rolled_back, ["a"]);
    // Rolled back: nothing left to back off from.
    assert_eq!(recover_each(&manager, &mut world).0.found(), 0);
}

#[test]
fn an_operator_tries_a_transaction_backing_off_now() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal).with_owed_retry(OwedRetry::Backoff { cap: 100 });
    let mut world = World::default();
    world.failing.insert("a".into(), 2);
    let id = clock.block_on(create_then_fail(&manager, &mut world, &["a"])).summary().transaction_id();
    assert_eq!(recover_each(&manager, &mut world).1[0].2, RecoveryOutcome::Owed);
    assert_eq!(recover_each(&manager, &mut world).1[0].2, RecoveryOutcome::Deferred);
    let outcome = clock.block_on(manager.recover_transaction::<Undo, Fixed<4>, _>(id, &mut world)).unwrap();
    assert_eq!(outcome, Some(RecoveryOutcome::RolledBack));
    assert_eq!(world.rolled_back, ["a"]);
    assert_eq!(clock.block_on(manager.recover_transaction::<Undo, Fixed<4>, _>(id, &mut world)).unwrap(), None);
}

#[test]
fn a_retry_request_in_the_journal_makes_the_next_recovery_try_a_backing_off_transaction_once() {
    // What `tmctl retry` does from another process: a request kept in the
    // journal, taken by the service's next recovery.
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal).with_owed_retry(OwedRetry::Backoff { cap: 100 });
    let mut world = World::default();
    world.failing.insert("a".into(), 3);
    let id = clock.block_on(create_then_fail(&manager, &mut world, &["a"])).summary().transaction_id();
    assert_eq!(recover_each(&manager, &mut world).1[0].2, RecoveryOutcome::Owed);
    assert_eq!(recover_each(&manager, &mut world).1[0].2, RecoveryOutcome::Deferred);
    assert!(journal.request_retry(id));
    // Tried at once: it fails again (its third failure), and the request
    // is used up, so the following recovery backs off again.
    assert_eq!(recover_each(&manager, &mut world).1[0].2, RecoveryOutcome::Owed);
    assert_eq!(world.attempts["a"], 3);
    assert_eq!(recover_each(&manager, &mut world).1[0].2, RecoveryOutcome::Deferred);
    assert_eq!(world.attempts["a"], 3, "one request, one try");
    assert!(journal.request_retry(id));
    assert_eq!(recover_each(&manager, &mut world).1[0].2, RecoveryOutcome::RolledBack);
    assert_eq!(world.rolled_back, ["a"]);
    assert!(!journal.request_retry(id), "a transaction that is over takes no request");
}

#[test]
fn a_retry_request_in_the_journal_makes_the_next_recovery_try_a_stuck_transaction() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let mut world = World::default();
    world.failing.insert("a".into(), 1);
    let id = clock
        .block_on(create_then_fail(&manager(&clock, &journal), &mut world, &["a", "b"]))
        .summary()
        .transaction_id();
    // A restarted service that never retries by itself: stuck.
    journal.flush();
    let restarted = journal.restart();
    let service = manager(&clock, &restarted).with_owed_retry(OwedRetry::Never);
    assert_eq!(recover_each(&service, &mut world).1[0].2, RecoveryOutcome::Stuck);
    assert_eq!(recover_each(&service, &mut world).1[0].2, RecoveryOutcome::Stuck);
    assert_eq!(world.attempts["a"], 1, "not tried by itself");
    // The request is durable (another process wrote it): a restart after
    // it keeps it.
    assert!(restarted.request_retry(id));
    let restarted = restarted.restart();
    let service = manager(&clock, &restarted).with_owed_retry(OwedRetry::Never);
    let (report, touched) = recover_each(&service, &mut world);
    assert_eq!(touched[0].2, RecoveryOutcome::RolledBack, "{report}");
    assert_eq!(world.rolled_back, ["b", "a"]);
    assert_eq!(world.attempts["a"], 2);
    assert_eq!(clock.block_on(service.stuck(|_, _| {})).unwrap(), 0);
    assert_eq!(recover_each(&service, &mut world).0.found(), 0);
}

#[test]
fn owed_rollbacks_never_retried_leave_the_transaction_stuck_for_an_operator() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal).with_owed_retry(OwedRetry::Never);
    let mut world = World::default();
    world.failing.insert("a".into(), 1);
    let id = clock.block_on(create_then_fail(&manager, &mut world, &["a", "b"])).summary().transaction_id();
    assert_eq!(world.rolled_back, ["b"]);
    for _ in 0..3 {
        let (report, touched) = recover_each(&manager, &mut world);
        assert_eq!((report.found(), report.stuck()), (1, 1), "{report}");
        assert_eq!(touched, [(id.get(), "provision".to_string(), RecoveryOutcome::Stuck)]);
    }
    assert_eq!(world.attempts["a"], 1, "never tried again by recovery");
    let mut reasons = Vec::new();
    clock.block_on(manager.stuck(|stuck, reason| reasons.push((stuck, reason.to_string())))).unwrap();
    assert_eq!(
        reasons,
        [(id, "a rollback failed for good; recovery never retries owed rollbacks (OwedRetry::Never)".to_string())]
    );
    // The operator fixed what made it fail, and tries it now.
    let outcome = clock.block_on(manager.recover_transaction::<Undo, Fixed<4>, _>(id, &mut world)).unwrap();
    assert_eq!(outcome, Some(RecoveryOutcome::RolledBack));
    assert_eq!(world.rolled_back, ["b", "a"]);
    assert_eq!(clock.block_on(manager.stuck(|_, _| {})).unwrap(), 0);
}

#[test]
fn a_rollback_failing_in_recovery_never_retried_makes_its_transaction_stuck() {
    // A crash after `a`'s `Done`: recovery tries it once, it fails, and
    // from then on the transaction waits for an operator.
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    journal.cut_power_after(2);
    let mut world = World::default();
    let crashed = clock.block_on(future::or(
        async { Some(create_then_fail(&manager(&clock, &journal), &mut world, &["a", "b"]).await) },
        async {
            journal.power_lost().await;
            None
        },
    ));
    assert!(crashed.is_none());
    let restarted = journal.restart();
    let manager = manager(&clock, &restarted).with_owed_retry(OwedRetry::Never);
    world.failing.insert("a".into(), 1);
    let (report, touched) = recover_each(&manager, &mut world);
    assert_eq!((report.found(), report.stuck()), (1, 1), "{report}");
    assert_eq!(touched[0].2, RecoveryOutcome::Stuck);
    assert_eq!(world.attempts["a"], 1);
    assert_eq!(recover_each(&manager, &mut world).0.stuck(), 1);
    assert_eq!(world.attempts["a"], 1, "not tried again");
    assert_eq!(clock.block_on(manager.stuck(|_, _| {})).unwrap(), 1);
}

#[test]
fn every_way_to_become_stuck_in_recovery_calls_the_stuck_hook() {
    // A crash after `a`'s `Done`; with `OwedRetry::Never`, recovery tries
    // it once and it fails for good there: stuck, reported to the hook as
    // a transaction found stuck when it is read is.
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    journal.cut_power_after(2);
    let mut world = World::default();
    let crashed = clock.block_on(future::or(
        async { Some(create_then_fail(&manager(&clock, &journal), &mut world, &["a", "b"]).await) },
        async {
            journal.power_lost().await;
            None
        },
    ));
    assert!(crashed.is_none());
    let recovering = TransactionManager::new(&clock)
        .with_hooks(HookLog::default())
        .with_journal(journal.restart(), Postcard::<1>)
        .with_owed_retry(OwedRetry::Never);
    world.failing.insert("a".into(), 1);
    let report = clock.block_on(recovering.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.stuck()), (1, 1), "{report}");
    let stuck = |log: Vec<String>| log.into_iter().filter(|line| line.starts_with("stuck")).collect::<Vec<_>>();
    let not_retried =
        "stuck provision: a rollback failed for good; recovery never retries owed rollbacks (OwedRetry::Never)";
    assert_eq!(stuck(std::mem::take(&mut *recovering.hooks().0.lock().unwrap())), [not_retried]);
    // Found stuck when read, at the next recovery: the same report.
    let report = clock.block_on(recovering.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.stuck()), (1, 1), "{report}");
    assert_eq!(stuck(std::mem::take(&mut *recovering.hooks().0.lock().unwrap())), [not_retried]);
    assert_eq!(world.attempts["a"], 1, "not tried again");
}

#[test]
fn one_transactions_recovery_is_bounded_and_the_others_go_on() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal).with_recovery_bound(Some(Duration::from_secs(60)));
    let mut world = World::default();
    world.failing.insert("a".into(), 1);
    world.failing.insert("x".into(), 1);
    let first = clock.block_on(create_then_fail(&manager, &mut world, &["a", "b"])).summary().transaction_id();
    let second = clock.block_on(create_then_fail(&manager, &mut world, &["x"])).summary().transaction_id();
    // `a`'s rollback now hangs: its recovery is cut at the bound, and the
    // second transaction is still recovered.
    world.hanging.push("a".into());
    let started = clock.now();
    let (report, touched) = recover_each(&manager, &mut world);
    assert_eq!((report.found(), report.partially_rolled_back(), report.rolled_back()), (2, 1, 1), "{report}");
    assert_eq!(
        touched,
        [
            (first.get(), "provision".to_string(), RecoveryOutcome::Owed),
            (second.get(), "provision".to_string(), RecoveryOutcome::RolledBack),
        ]
    );
    assert_eq!(clock.now() - started, Duration::from_secs(60), "one bound, then the next transaction");
    assert_eq!(world.rolled_back, ["b", "x"]);
    let mut owed = Vec::new();
    clock.block_on(manager.owed(|step| owed.push(step.step().to_string()))).unwrap();
    assert_eq!(owed, ["a"]);
    // Unstuck, the next recovery rolls it back.
    world.hanging.clear();
    let (report, _) = recover_each(&manager, &mut world);
    assert_eq!(report.rolled_back(), 1, "{report}");
    assert_eq!(world.rolled_back, ["b", "x", "a"]);
}

#[test]
fn a_retry_policy_waiting_for_years_cannot_hold_up_recovery() {
    // A rollback whose retry policy waits a year between attempts (as a
    // damaged record once read): recovery moves on after its bound.
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal);
    let mut world = World::default();
    // Fails both live attempts and the first in recovery.
    world.failing.insert("slow".into(), 3);
    world.failing.insert("x".into(), 1);
    let year = Duration::from_secs(365 * 24 * 3600);
    let error = clock.block_on(manager.transaction("provision").fixed::<Undo, 4>().run_with(&mut world, async |tx| {
        tx.step("slow")
            .rollback_retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(year))
            .execute_with(async |w: &mut World| {
                w.live.push("slow".into());
                Ok::<_, String>("slow".to_string())
            })
            .undo(|n| Undo::Delete(n.clone()))
            .await?;
        tx.step("last").run(|| async { Err::<(), _>("refused".to_string()) }).await?;
        Ok::<_, StepError<String>>(())
    }));
    assert!(error.unwrap_err().is_partially_rolled_back());
    let second = clock.block_on(create_then_fail(&manager, &mut world, &["x"])).summary().transaction_id();
    let started = clock.now();
    let (report, touched) = recover_each(&manager, &mut world);
    assert_eq!((report.partially_rolled_back(), report.rolled_back()), (1, 1), "{report}");
    assert_eq!(touched[1], (second.get(), "provision".to_string(), RecoveryOutcome::RolledBack));
    assert_eq!(clock.now() - started, Duration::from_secs(600), "the default bound: 10 minutes");
    assert_eq!(world.attempts["slow"], 3);
    let (report, _) = recover_each(&manager, &mut world);
    assert_eq!(report.rolled_back(), 1, "{report}");
    assert_eq!(world.rolled_back, ["x", "slow"]);
}

/// What recovery reports through the hooks: each call, with the steps'
/// statuses in the summary of the recovered transaction.
#[derive(Default)]
struct HookLog(std::sync::Mutex<Vec<String>>);

impl Hooks for HookLog {
    async fn on_transaction_recovered(&self, transaction: &TransactionInfo, owed: usize) {
        self.0.lock().unwrap().push(format!("recovered {} owing {owed}", transaction.operation()));
    }
    async fn on_rollback_start(&self, _: &TransactionInfo) {
        self.0.lock().unwrap().push("rollback start".into());
    }
    async fn on_step_rollback(&self, event: &StepEvent<'_>) {
        self.0.lock().unwrap().push(format!("rolled back {}", event.step.name()));
    }
    async fn on_step_rollback_failure(&self, event: &StepEvent<'_>) {
        self.0.lock().unwrap().push(format!(
            "rollback failed {}: {:?}",
            event.step.name(),
            event.step.rollback_error()
        ));
    }
    async fn on_transaction_complete<S: Storage>(&self, _: &TransactionInfo, success: bool, summary: &Summary<S>) {
        let steps: Vec<String> = summary
            .steps()
            .iter()
            .map(|s| format!("{}#{}={}/{}/{}", s.name(), s.index(), s.status(), s.succeeded(), s.has_rollback()))
            .collect();
        self.0.lock().unwrap().push(format!(
            "complete {success} [{}] rollback errors {}",
            steps.join(" "),
            summary.rollback_errors()
        ));
    }
    async fn on_transaction_stuck(&self, transaction: &TransactionInfo, reason: &str) {
        self.0.lock().unwrap().push(format!("stuck {}: {reason}", transaction.operation()));
    }
}

#[test]
fn a_recovered_transaction_reports_each_steps_status_to_the_hooks() {
    // A crash after `a`'s `Done`, `b`'s intent and `Done` (an uncertain
    // step that completed) and `c`'s intent (an uncertain step whose
    // attempt never ended).
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    journal.cut_power_after(5);
    let mut world = World::default();
    let crashed = clock.block_on(future::or(
        async {
            let manager = manager(&clock, &journal);
            let run = manager.transaction("provision").fixed::<Undo, 4>().run_with(&mut world, async |tx| {
                tx.step("a")
                    .execute_with(async move |w: &mut World| {
                        w.live.push("a".to_string());
                        Ok::<_, String>("a".to_string())
                    })
                    .undo(|n| Undo::Delete(n.clone()))
                    .await?;
                tx.step("b")
                    .execute_with(async move |w: &mut World| {
                        w.live.push("b".to_string());
                        Ok::<_, String>("b".to_string())
                    })
                    .undo_uncertain(|_| Undo::Delete("b".into()))
                    .await?;
                tx.step("c")
                    .execute(|| async {
                        clock.sleep(Duration::from_secs(1)).await;
                        Err::<String, String>("c: no answer".into())
                    })
                    .undo_uncertain(|_| Undo::Delete("c".into()))
                    .await?;
                Ok::<_, StepError<String>>(())
            });
            Some(run.await.map(|_| ()))
        },
        async {
            journal.power_lost().await;
            None
        },
    ));
    assert!(crashed.is_none());
    let restarted = journal.restart();
    let recovering =
        TransactionManager::new(&clock).with_hooks(HookLog::default()).with_journal(restarted, Postcard::<1>);
    world.failing.insert("a".into(), 1);
    let report = clock.block_on(recovering.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!(
        (report.found(), report.rolled_back(), report.partially_rolled_back(), report.stuck(), report.deferred()),
        (1, 0, 1, 0, 0)
    );
    assert_eq!(
        report.to_string(),
        "1 unfinished transaction(s): 0 rolled back, 1 partially rolled back (still owed), 0 stuck"
    );
    assert_eq!(
        std::mem::take(&mut *recovering.hooks().0.lock().unwrap()),
        [
            "recovered provision owing 3",
            "rollback start",
            "rolled back c",
            "rolled back b",
            "rollback failed a: Some(\"a: still attached\")",
            "complete false [a#0=rollback_failed/true/true b#1=rolled_back/true/true c#2=rolled_back/false/true] rollback errors 1",
        ]
    );
    // The next recovery owes only `a`.
    let report = clock.block_on(recovering.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.rolled_back(), report.partially_rolled_back()), (1, 1, 0), "{report}");
    assert_eq!(
        std::mem::take(&mut *recovering.hooks().0.lock().unwrap()),
        [
            "recovered provision owing 1",
            "rollback start",
            "rolled back a",
            "complete false [a#0=rolled_back/true/true b#1=rolled_back/true/true c#2=rolled_back/false/true] rollback errors 0",
        ]
    );
    assert_eq!(world.rolled_back, ["c", "b", "a"]);
}

#[test]
fn stuck_lists_only_stuck_transactions_and_the_hook_hears_why() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    // One stuck (a `Done` without a step), one owed, one finished.
    journal.insert_raw(TransactionId::new(70), None, EntryKind::Begin.code(), b"broken");
    journal.insert_raw(TransactionId::new(70), None, EntryKind::Done.code(), b"");
    let mut world = World::default();
    world.failing.insert("a".into(), 2);
    let owing = manager(&clock, &journal);
    let owed = clock.block_on(create_then_fail(&owing, &mut world, &["a"])).summary().transaction_id();
    let manager =
        TransactionManager::new(&clock).with_hooks(HookLog::default()).with_journal(journal.clone(), Postcard::<1>);
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.stuck(), report.partially_rolled_back()), (2, 1, 1), "{report}");
    assert!(manager.hooks().0.lock().unwrap().contains(&"stuck broken: a `done` entry without a step".to_string()));
    let mut stuck = Vec::new();
    clock.block_on(manager.stuck(|id, reason| stuck.push((id.get(), reason.to_string())))).unwrap();
    assert_eq!(stuck, [(70, "a `done` entry without a step".to_string())]);
    let mut listed = Vec::new();
    clock.block_on(manager.owed(|step| listed.push((step.transaction(), step.step().to_string())))).unwrap();
    assert_eq!(listed, [(owed, "a".to_string())]);
}

#[test]
fn owed_lists_each_failed_rollback_by_its_step_until_a_recovery_settles_it() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal);
    let mut world = World::default();
    // Both rollbacks fail live; at the first recovery `b`'s succeeds and
    // `a`'s fails again.
    world.failing.insert("a".into(), 2);
    world.failing.insert("b".into(), 1);
    let id = clock.block_on(create_then_fail(&manager, &mut world, &["a", "b"])).summary().transaction_id();
    let owed = |manager: &Manager<'_>| {
        let mut listed = Vec::new();
        let count = clock
            .block_on(manager.owed(|step| {
                listed.push((
                    step.transaction(),
                    step.step().to_string(),
                    step.index(),
                    step.error().map(str::to_string),
                ))
            }))
            .unwrap();
        assert_eq!(count, listed.len());
        listed
    };
    assert_eq!(
        owed(&manager),
        [
            (id, "b".to_string(), 1, Some("b: still attached".to_string())),
            (id, "a".to_string(), 0, Some("a: still attached".to_string())),
        ]
    );
    let mut named = Vec::new();
    clock
        .block_on(manager.recover_each::<Undo, Fixed<4>, _>(&mut world, |tx| named.push((tx.owed(), tx.to_string()))))
        .unwrap();
    assert_eq!(named, [(1, format!("{id} `provision`: partially rolled back, still owed (1 rollback(s) owed)"))]);
    assert_eq!(owed(&manager), [(id, "a".to_string(), 0, Some("a: still attached".to_string()))]);
    // The next one rolls `a` back: nothing owed, and the line says so.
    named.clear();
    clock
        .block_on(manager.recover_each::<Undo, Fixed<4>, _>(&mut world, |tx| named.push((tx.owed(), tx.to_string()))))
        .unwrap();
    assert_eq!(named, [(0, format!("{id} `provision`: rolled back"))]);
    assert!(owed(&manager).is_empty());
}

#[test]
fn backing_off_frees_its_slot_when_a_transaction_ends() {
    // 16 owed transactions take every slot, then end; a 17th still backs off.
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal).with_owed_retry(OwedRetry::Backoff { cap: 10 });
    let mut world = World::default();
    let names: Vec<&'static str> = (0..16).map(|n| &*format!("r{n}").leak()).collect();
    for name in &names {
        world.failing.insert(name.to_string(), 2);
        clock.block_on(create_then_fail(&manager, &mut world, &[name]));
    }
    let outcomes = |world: &mut World| recover_each(&manager, world).1.into_iter().map(|t| t.2).collect::<Vec<_>>();
    use RecoveryOutcome::*;
    assert_eq!(outcomes(&mut world), [Owed; 16]);
    assert_eq!(outcomes(&mut world), [Deferred; 16]);
    assert_eq!(outcomes(&mut world), [RolledBack; 16]);
    world.failing.insert("z".into(), 2);
    clock.block_on(create_then_fail(&manager, &mut world, &["z"]));
    assert_eq!(outcomes(&mut world), [Owed]);
    assert_eq!(outcomes(&mut world), [Deferred], "the ended transactions' slots were freed");
}

#[test]
fn backing_off_is_kept_per_transaction() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal).with_owed_retry(OwedRetry::Backoff { cap: 10 });
    let mut world = World::default();
    // `a` fails live and at its first two recoveries; `x` fails live and at
    // its first recovery, then succeeds.
    world.failing.insert("a".into(), 3);
    world.failing.insert("x".into(), 2);
    let first = clock.block_on(create_then_fail(&manager, &mut world, &["a"])).summary().transaction_id().get();
    let second = clock.block_on(create_then_fail(&manager, &mut world, &["x"])).summary().transaction_id().get();
    let mut rounds = Vec::new();
    for _ in 0..4 {
        let (_, touched) = recover_each(&manager, &mut world);
        rounds.push(touched.iter().map(|t| (t.0, t.2)).collect::<Vec<_>>());
    }
    use RecoveryOutcome::*;
    assert_eq!(
        rounds,
        [
            vec![(first, Owed), (second, Owed)],
            vec![(first, Deferred), (second, Deferred)],
            // `x` is rolled back and ends; `a` fails again: it sits out 3.
            vec![(first, Owed), (second, RolledBack)],
            vec![(first, Deferred)],
        ]
    );
}

#[test]
fn recovery_refuses_when_it_cannot_name_every_running_transaction() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Waker};
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = manager(&clock, &journal);
    // 65 journaled transactions wait in their first step: one more than
    // the manager names.
    let mut running: Vec<Pin<Box<dyn Future<Output = ()> + '_>>> = (0..65)
        .map(|_| {
            let manager = &manager;
            let clock = &clock;
            Box::pin(async move {
                let mut world = World::default();
                let _ = manager
                    .transaction("waits")
                    .fixed::<Undo, 1>()
                    .run_with(&mut world, async |tx| {
                        tx.step("wait")
                            .run(|| async {
                                clock.sleep(Duration::from_secs(60)).await;
                                Ok::<_, String>(())
                            })
                            .await
                    })
                    .await;
            }) as Pin<Box<dyn Future<Output = ()> + '_>>
        })
        .collect();
    let mut cx = Context::from_waker(Waker::noop());
    for transaction in &mut running {
        assert!(transaction.as_mut().poll(&mut cx).is_pending());
    }
    let refused = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut World::default()));
    assert_eq!(refused, Err(RecoveryError::LiveUnknown { running: 1 }));
    assert_eq!(
        refused.unwrap_err().to_string(),
        "recovery refused: 1 transaction(s) running in this process cannot be told from unfinished ones"
    );
    // One is dropped: recovery runs, and leaves the other 64 alone.
    drop(running.pop());
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut World::default())).unwrap();
    assert_eq!(report.running(), 64, "{report}");
    assert_eq!(
        report.to_string(),
        // The dropped one is unfinished in the journal: recovered (it owed nothing).
        "1 unfinished transaction(s): 1 rolled back, 0 partially rolled back (still owed), 0 stuck; 64 running, left alone"
    );
}

#[test]
fn stop_inside_a_scope_leaves_the_steps_before_the_scope_alone_when_the_body_goes_on() {
    // `Stop` after the scope's rollback failed skips what the scope still
    // owes, never a step before the scope: the body goes on and commits.
    let statuses = stop_after_a_failed_scope(&mut World::default(), false).expect("the body goes on and commits");
    assert_eq!(
        statuses,
        [
            ("outer".to_string(), StepStatus::Completed),
            ("inner".to_string(), StepStatus::RollbackFailed),
            ("refused".to_string(), StepStatus::Failed),
            ("last".to_string(), StepStatus::Completed),
        ]
    );
}
