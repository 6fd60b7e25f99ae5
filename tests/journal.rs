//! Journaled transactions and recovery, on virtual time with the in-memory
//! journal: crash injection after every write, bad input, and the
//! guarantees GUARANTEES.md states.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_lite::future;
use transaction_manager::*;
use transaction_manager::{
    abandon::Unattended,
    group::member,
    hooks::{Hooks, StepEvent},
    journal::{EntryKind, IdempotencyKey, Journal, Journaled, MemoryJournal, OwedStep, Postcard},
    storage::{Fixed, Storage},
};

/// Resources a transaction creates, as the outside world sees them.
#[derive(Default, Debug)]
struct World {
    /// Resources that exist.
    live: BTreeSet<String>,
    /// Steps that completed in the live run.
    completed: BTreeSet<String>,
    /// Steps whose value reached the body.
    returned: BTreeSet<String>,
    /// Steps with an uncertain rollback that made an attempt.
    uncertain: BTreeSet<String>,
    /// Successful rollbacks, in order.
    rolled_back: Vec<String>,
    rollback_attempts: BTreeMap<String, u32>,
    /// Resources whose first rollback attempt fails.
    fail_rollback_once: BTreeSet<String>,
    execute_attempts: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Undo {
    Delete(String),
}

impl Rollback<World> for Undo {
    type Error = String;

    async fn rollback(&mut self, world: &mut World) -> Result<(), String> {
        let Undo::Delete(name) = self;
        let attempts = world.rollback_attempts.entry(name.clone()).or_default();
        *attempts += 1;
        if world.fail_rollback_once.contains(name) && *attempts == 1 {
            return Err(format!("{name}: busy"));
        }
        world.live.remove(name);
        world.rolled_back.push(name.clone());
        Ok(())
    }
}

type Manager<'c, H = ()> = TransactionManager<&'c ManualClock, H, Unattended, Journaled<MemoryJournal, Postcard<1>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Three steps, committed.
    Commit,
    /// Two steps, the third fails: both rolled back.
    Fail,
    /// A step fails once and is retried, then a later step fails.
    Retry,
    /// The second step's rollback fails for good (no rollback retries).
    FailingRollback,
    /// The second step times out after taking effect (uncertain rollback).
    Uncertain,
    /// Two members in parallel, a step in a scope, then a failure.
    Group,
}

thread_local! {
    /// What group members completed (members take no context).
    static MEMBERS: std::cell::RefCell<BTreeSet<String>> = const { std::cell::RefCell::new(BTreeSet::new()) };
}

/// A group member's effect.
fn member_creates(name: &'static str) -> impl FnMut() -> future::Ready<Result<String, String>> {
    move || {
        MEMBERS.with(|m| m.borrow_mut().insert(name.to_string()));
        future::ready(Ok(name.to_string()))
    }
}

const SCENARIOS: [Scenario; 6] = [
    Scenario::Commit,
    Scenario::Fail,
    Scenario::Retry,
    Scenario::FailingRollback,
    Scenario::Uncertain,
    Scenario::Group,
];

/// Creates resource `r<index>` (the step's index), failing the first
/// `fail_first` attempts.
async fn create(world: &mut World, name: String, fail_first: u32) -> Result<String, String> {
    let attempts = world.execute_attempts.entry(name.clone()).or_default();
    *attempts += 1;
    if *attempts <= fail_first {
        return Err(format!("{name}: flaky"));
    }
    world.live.insert(name.clone());
    world.completed.insert(name.clone());
    Ok(name)
}

async fn run<H: Hooks>(manager: &Manager<'_, H>, world: &mut World, scenario: Scenario) -> Result<(), String> {
    let clock: &ManualClock = manager.clock();
    if scenario == Scenario::FailingRollback {
        world.fail_rollback_once.insert("r1".into());
    }
    let outcome = manager
        .transaction("provision")
        .fixed::<Undo, 4>()
        .run_with(world, async |tx| {
            let retries = if scenario == Scenario::Retry { 1 } else { 0 };
            tx.step("r0")
                .retry(RetryPolicy::new().with_max_retries(retries))
                .execute_with(async move |w: &mut World| create(w, "r0".into(), retries).await)
                .undo(|name| Undo::Delete(name.clone()))
                .await?;
            tx.context().returned.insert("r0".into());
            if scenario == Scenario::Group {
                tx.parallel((
                    member("r1").execute(member_creates("r1")).undo(|n: &String| Undo::Delete(n.clone())),
                    member("r2").execute(member_creates("r2")).undo(|n: &String| Undo::Delete(n.clone())),
                ))
                .await?;
                tx.context().returned.extend(["r1".to_string(), "r2".to_string()]);
                tx.scope("inner", async |tx| {
                    tx.step("r3")
                        .execute_with(async |w: &mut World| create(w, "r3".into(), 0).await)
                        .undo(|name| Undo::Delete(name.clone()))
                        .await?;
                    Ok::<_, StepError<String>>(())
                })
                .await?;
                tx.context().returned.insert("r3".into());
                tx.step("r4").run(|| async { Err::<(), _>("r4: refused".to_string()) }).await?;
                return Ok(());
            }
            if scenario == Scenario::Uncertain {
                tx.step("r1")
                    .timeout(Duration::from_secs(1))
                    .execute_with(async |w: &mut World| {
                        w.live.insert("r1".into());
                        w.uncertain.insert("r1".into());
                        clock.sleep(Duration::from_secs(5)).await;
                        Ok::<_, String>(())
                    })
                    .undo_uncertain(|_| Undo::Delete("r1".into()))
                    .await?;
            } else {
                tx.step("r1")
                    .rollback_retry(RetryPolicy::new())
                    .execute_with(async |w: &mut World| create(w, "r1".into(), 0).await)
                    .undo(|name| Undo::Delete(name.clone()))
                    .await?;
                tx.context().returned.insert("r1".into());
            }
            if scenario == Scenario::Commit {
                tx.step("r2")
                    .execute_with(async |w: &mut World| create(w, "r2".into(), 0).await)
                    .undo(|name| Undo::Delete(name.clone()))
                    .await?;
                tx.context().returned.insert("r2".into());
                return Ok(());
            }
            tx.step("r2").run(|| async { Err::<(), _>("r2: refused".to_string()) }).await?;
            Ok::<_, StepError<String>>(())
        })
        .await;
    outcome.map(|_| ()).map_err(|e| e.to_string())
}

/// Runs `scenario` with the power cut after `cut` appends (`None`: never),
/// restarts, recovers, and checks the guarantees. Returns how many appends
/// the run made.
fn crash_and_recover(scenario: Scenario, cut: Option<usize>) -> (usize, usize) {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    if let Some(cut) = cut {
        journal.cut_power_after(cut);
    }
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    let id = TransactionId::new(1);
    // The transaction runs until it ends or the power is cut; then it is
    // dropped as a crash would drop it (the default policy runs nothing).
    let outcome = clock.block_on(future::or(async { Some(run(&manager, &mut world, scenario).await) }, async {
        journal.power_lost().await;
        None
    }));
    let appends = journal.appends();
    world.completed.extend(MEMBERS.with(|m| std::mem::take(&mut *m.borrow_mut())));
    let crashed = outcome.is_none();
    assert_eq!(crashed, journal.is_power_lost());
    if !crashed {
        // The journal's writer catches up with the lazy entries.
        journal.flush();
    }

    let restarted = journal.restart();
    let committed = restarted.has(id, None, EntryKind::Committed);
    let done: BTreeSet<String> = restarted
        .entries(id)
        .iter()
        .filter(|row| row.kind == EntryKind::Done.code())
        .map(|row| format!("r{}", row.step.unwrap()))
        .collect();
    let rolled_back_before = world.rolled_back.clone();
    let undone: BTreeSet<u32> = restarted
        .entries(id)
        .iter()
        .filter(|row| row.kind == EntryKind::Undone.code())
        .map(|row| row.step.unwrap())
        .collect();

    // Restart: a new manager on what survived, recovering first.
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(restarted.clone(), Postcard::<1>);
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    let context = format!("{scenario:?}, power cut after {cut:?} appends: {report}, world {world:?}");
    assert_eq!(report.stuck(), 0, "{context}");

    if committed {
        assert_eq!(outcome, Some(Ok(())), "{context}");
        assert!(world.rolled_back.is_empty(), "a committed transaction is never rolled back: {context}");
        assert_eq!(report.found(), 0, "{context}");
    }
    if outcome == Some(Ok(())) {
        assert!(committed, "`run` returned Ok only after `Committed` was durable: {context}");
    }
    // Every step whose `Done` was durable is rolled back at least once,
    // unless the transaction committed: a rollback that failed for good in
    // the live run stayed owed, and recovery tried it again.
    for name in &done {
        if committed {
            continue;
        }
        assert!(world.rolled_back.contains(name), "{name} had a durable Done and was not rolled back: {context}");
    }
    // A step's value reaches the body only once its `Done` is durable: a
    // step that returned is rolled back unless the transaction committed.
    for name in &world.returned {
        if committed {
            continue;
        }
        assert!(done.contains(name), "{name} returned to the body before its Done was durable: {context}");
    }
    // A step that opted into uncertain rollback and whose attempt ran (and
    // took effect) had its intent durable first: it is rolled back too.
    for name in &world.uncertain {
        if committed {
            continue;
        }
        assert!(
            world.rolled_back.contains(name),
            "{name} took effect under an uncertain rollback and was not rolled back: {context}"
        );
    }
    // Nothing else is rolled back, unless it opted into uncertain rollback.
    for name in &world.rolled_back {
        assert!(
            world.completed.contains(name) || world.uncertain.contains(name),
            "{name} was rolled back but never completed: {context}"
        );
    }
    // Recovery rolled back only what the journal still owed: nothing the
    // live run had already rolled back and recorded.
    for name in &world.rolled_back[rolled_back_before.len()..] {
        let index: u32 = name[1..].parse().unwrap();
        assert!(!undone.contains(&index), "{name} was rolled back again although its Undone was durable: {context}");
    }
    // A second recovery finds nothing.
    let again = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!(again.found(), 0, "{context}");
    (appends, usize::from(world.rolled_back.len() > rolled_back_before.len()))
}

#[test]
fn power_cut_after_every_write_loses_no_owed_rollback() {
    let mut runs = 0;
    let mut recovered = 0;
    for scenario in SCENARIOS {
        let (total, _) = crash_and_recover(scenario, None);
        assert!(total >= 3, "{scenario:?} wrote {total} entries");
        for cut in 0..=total {
            recovered += crash_and_recover(scenario, Some(cut)).1;
            runs += 1;
        }
    }
    assert!(runs > 30, "{runs} crash points");
    // The net is not vacuous: many crash points leave rollbacks owed.
    assert!(recovered >= runs / 2, "only {recovered} of {runs} crash points had rollbacks to recover");
}

#[test]
fn journaled_transaction_writes_its_entries_in_order() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    let result = clock.block_on(run(&manager, &mut world, Scenario::Fail));
    assert!(result.is_err());
    journal.flush();
    let kinds: Vec<(Option<u32>, EntryKind)> = journal
        .entries(TransactionId::new(1))
        .iter()
        .map(|row| (row.step, EntryKind::from_code(row.kind).unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            (None, EntryKind::Begin),
            (Some(0), EntryKind::Done),
            (Some(1), EntryKind::Done),
            (Some(1), EntryKind::Undone),
            (Some(0), EntryKind::Undone),
            (None, EntryKind::RolledBack),
        ]
    );
}

#[test]
fn ids_come_from_the_journal_and_continue_after_a_restart() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    assert_eq!(manager.transaction("a").info().id(), TransactionId::new(1));
    assert_eq!(manager.transaction("b").info().id(), TransactionId::new(2));
    let restarted = journal.restart();
    let manager = TransactionManager::new(&clock).with_journal(restarted, Postcard::<1>);
    assert_eq!(manager.transaction("c").info().id(), TransactionId::new(3));
}

#[test]
fn a_failed_done_write_fails_the_step_and_rolls_it_back_in_memory() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    let err = clock
        .block_on(manager.transaction("t").fixed::<Undo, 2>().run_with(&mut world, async |tx| {
            tx.step("r0")
                .execute_with(async |w: &mut World| create(w, "r0".into(), 0).await)
                .undo(|n| Undo::Delete(n.clone()))
                .await?;
            journal.fail_writes(Some("disk full"));
            tx.step("r1")
                .execute_with(async |w: &mut World| create(w, "r1".into(), 0).await)
                .undo(|n| Undo::Delete(n.clone()))
                .await?;
            Ok::<_, StepError<String>>(())
        }))
        .unwrap_err();
    let StepErrorKind::Journal(failure) = err.cause().kind() else { panic!("{:?}", err.cause()) };
    assert_eq!(failure.entry(), Some(EntryKind::Done));
    assert_eq!(failure.error(), "disk full");
    assert_eq!(err.cause().step(), "r1");
    assert_eq!(err.cause().to_string(), "step `r1` not recorded: journal: writing `done` failed: disk full");
    // Both steps took effect; both are rolled back in memory, latest first.
    assert_eq!(world.rolled_back, ["r1", "r0"]);
    assert!(world.live.is_empty());
    assert!(err.rollback_state().is_clean());
}

/// A step whose `Done` could not be written took effect: it stays
/// `Completed` (with the journal's error as its text, and its undo record
/// owed in memory), whatever the body does next. A body that goes on and
/// commits shows it so in its summary.
#[test]
fn a_step_whose_done_write_failed_stays_completed_when_the_body_goes_on() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    let done = clock
        .block_on(manager.transaction("t").fixed::<Undo, 2>().run_with(&mut world, async |tx| {
            journal.fail_writes(Some("disk full"));
            let err = tx
                .step("r0")
                .execute_with(async |w: &mut World| create(w, "r0".into(), 0).await)
                .undo(|n| Undo::Delete(n.clone()))
                .await
                .unwrap_err();
            assert!(matches!(err.kind(), StepErrorKind::Journal(_)), "{err:?}");
            journal.fail_writes(None);
            Ok::<_, StepError<String>>(())
        }))
        .unwrap();
    let step = &done.summary().steps()[0];
    assert_eq!(step.status(), StepStatus::Completed, "{step}");
    assert!(step.succeeded());
    assert!(step.error().is_some_and(|e| e.contains("disk full")), "{step}");
    assert!(world.live.contains("r0"));
}

#[test]
fn a_failed_commit_write_rolls_back_and_returns_the_error() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    let err = clock
        .block_on(manager.transaction("t").fixed::<Undo, 2>().run_with(&mut world, async |tx| {
            tx.step("r0")
                .execute_with(async |w: &mut World| create(w, "r0".into(), 0).await)
                .undo(|n| Undo::Delete(n.clone()))
                .await?;
            // `Committed` is not written; `Aborted` is (see `tests/decision.rs`
            // for the other outcomes).
            journal.fail_before_write(Some(EntryKind::Committed));
            Ok::<_, StepError<String>>(())
        }))
        .unwrap_err();
    assert_eq!(err.cause().step(), "(commit)");
    assert!(matches!(err.cause().kind(), StepErrorKind::Journal(f) if f.entry() == Some(EntryKind::Committed)));
    assert_eq!(world.rolled_back, ["r0"]);
}

#[test]
fn an_undecodable_undo_record_makes_the_transaction_stuck_until_resolved() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    // A crash after the first step's Done: one rollback owed.
    journal.cut_power_after(2);
    let crashed = clock.block_on(future::or(async { Some(run(&manager, &mut world, Scenario::Fail).await) }, async {
        journal.power_lost().await;
        None
    }));
    assert!(crashed.is_none());
    let restarted = journal.restart();
    // A corrupt entry for another transaction, and one of unknown kind.
    restarted.insert_raw(TransactionId::new(50), Some(0), EntryKind::Done.code(), b"\x01garbage");
    restarted.insert_raw(TransactionId::new(51), None, 200, b"");

    let manager = TransactionManager::new(&clock).with_journal(restarted.clone(), Postcard::<1>);
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.rolled_back(), report.stuck()), (3, 1, 2), "{report}");
    assert_eq!(world.rolled_back, ["r0"]);

    let mut stuck = Vec::new();
    let count = clock.block_on(manager.stuck(|id, reason| stuck.push((id.get(), reason.to_string())))).unwrap();
    assert_eq!(count, 2);
    assert_eq!(stuck[0].0, 50);
    assert!(stuck[0].1.contains("cannot be decoded"), "{}", stuck[0].1);
    assert_eq!(stuck[1], (51, "a journal entry of unknown kind 200".to_string()));

    // Still stuck at the next recovery: never dropped.
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.stuck()), (2, 2));
    clock.block_on(manager.resolve(TransactionId::new(50))).unwrap();
    clock.block_on(manager.resolve(TransactionId::new(51))).unwrap();
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!(report.found(), 0);
}

#[test]
fn an_undo_record_from_a_newer_schema_is_stuck_not_guessed() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    // Written by a newer program (schema 2).
    let newer = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<2>);
    let mut world = World::default();
    journal.cut_power_after(2);
    clock.block_on(future::or(
        async {
            let _ = newer
                .transaction("t")
                .fixed::<Undo, 2>()
                .run_with(&mut world, async |tx| {
                    tx.step("r0")
                        .execute_with(async |w: &mut World| create(w, "r0".into(), 0).await)
                        .undo(|n| Undo::Delete(n.clone()))
                        .await?;
                    // Its `Done` is the third append: the power is cut there.
                    tx.step("r1")
                        .execute_with(async |w: &mut World| create(w, "r1".into(), 0).await)
                        .undo(|n| Undo::Delete(n.clone()))
                        .await?;
                    Ok::<_, StepError<String>>(())
                })
                .await;
        },
        journal.power_lost(),
    ));
    // Recovered by the older program (schema 1).
    let manager = TransactionManager::new(&clock).with_journal(journal.restart(), Postcard::<1>);
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!(report.stuck(), 1);
    let mut reasons = Vec::new();
    clock.block_on(manager.stuck(|_, reason| reasons.push(reason.to_string()))).unwrap();
    assert_eq!(reasons, ["step #0: the undo record has schema 2, newer than this program's 1"]);
    assert!(world.live.contains("r0"), "not rolled back on a guess");
}

#[test]
fn recovery_capacity_too_small_is_stuck() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    journal.cut_power_after(3);
    clock.block_on(future::or(
        async {
            let _ = run(&manager, &mut world, Scenario::Fail).await;
        },
        journal.power_lost(),
    ));
    let manager = TransactionManager::new(&clock).with_journal(journal.restart(), Postcard::<1>);
    let report = clock.block_on(manager.recover::<Undo, Fixed<1>, _>(&mut world)).unwrap();
    assert_eq!(report.stuck(), 1, "{report}");
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!(report.rolled_back(), 1, "{report}");
    // The live run rolled `r1` back, but the power was cut on its (lazy)
    // `Undone`: recovery repeats that idempotent rollback.
    assert_eq!(world.rolled_back, ["r1", "r1", "r0"]);
}

#[test]
fn recovery_calls_the_hooks() {
    #[derive(Default)]
    struct Log(std::sync::Mutex<Vec<String>>);
    impl Hooks for Log {
        async fn on_transaction_recovered(&self, transaction: &TransactionInfo, owed: usize) {
            self.0.lock().unwrap().push(format!(
                "recovered {} {} owing {owed}",
                transaction.id(),
                transaction.operation()
            ));
        }
        async fn on_step_rollback(&self, event: &StepEvent<'_>) {
            self.0.lock().unwrap().push(format!("rolled back {}", event.step.name()));
        }
        async fn on_transaction_complete<S: Storage>(&self, t: &TransactionInfo, success: bool, _: &Summary<S>) {
            self.0.lock().unwrap().push(format!("complete {} {success}", t.id()));
        }
    }
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    journal.cut_power_after(3);
    clock.block_on(future::or(
        async {
            let _ = run(&manager, &mut world, Scenario::Fail).await;
        },
        journal.power_lost(),
    ));
    let manager =
        TransactionManager::new(&clock).with_hooks(Log::default()).with_journal(journal.restart(), Postcard::<1>);
    clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!(
        *manager.hooks().0.lock().unwrap(),
        ["recovered tx-1 provision owing 2", "rolled back r1", "rolled back r0", "complete tx-1 false"]
    );
}

#[test]
fn idempotency_keys_name_the_step_across_restarts() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let keys = clock
        .block_on(manager.transaction("t").fixed::<Undo, 2>().run_with(&mut World::default(), async |tx| {
            let first = tx.next_step_key();
            tx.step("a").run(|| async { Ok::<_, String>(()) }).await?;
            let second = tx.next_step_key();
            Ok::<_, StepError<String>>((first, second))
        }))
        .unwrap()
        .into_value();
    let origin = journal.origin();
    assert_eq!((keys.0.origin(), keys.1.origin()), (origin, origin));
    assert_eq!(
        (keys.0.to_string(), keys.1.to_string()),
        (format!("tx-1.0-{origin:016x}"), format!("tx-1.1-{origin:016x}"))
    );
}

/// The key of a transaction's first step, on `manager`.
macro_rules! first_key {
    ($clock:expr, $manager:expr) => {
        $clock
            .block_on($manager.transaction("t").fixed::<UndoByKey, 1>().run_with(&mut Vec::new(), async |tx| {
                tx.step("a").execute_keyed(|key| async move { Ok::<_, String>(key) }).no_rollback().await
            }))
            .unwrap()
            .into_value()
    };
}

#[test]
fn two_journals_hand_out_different_keys() {
    let clock = ManualClock::new();
    let (one, two) = (MemoryJournal::new(), MemoryJournal::new());
    assert_ne!(one.origin(), two.origin());
    let first = TransactionManager::new(&clock).with_journal(one.clone(), Postcard::<1>);
    let second = TransactionManager::new(&clock).with_journal(two.clone(), Postcard::<1>);
    let (a, b) = (first_key!(clock, first), first_key!(clock, second));
    // Same transaction id and step in both journals, different keys.
    assert_eq!((a.transaction(), a.step()), (b.transaction(), b.step()));
    assert_ne!(a, b);
    assert_ne!(a.to_string(), b.to_string());
    assert_eq!((a.origin(), b.origin()), (one.origin(), two.origin()));
    // A journal keeps its origin across a restart; a chosen one is used.
    assert_eq!(one.restart().origin(), one.origin());
    let chosen = TransactionManager::new(&clock).with_journal(MemoryJournal::with_origin(0xfeed), Postcard::<1>);
    assert_eq!(first_key!(clock, chosen).to_string(), "tx-1.0-000000000000feed");
}

#[test]
fn two_managers_without_a_journal_hand_out_different_keys() {
    let clock = ManualClock::new();
    let (first, second) = (TransactionManager::new(&clock), TransactionManager::new(&clock));
    let (a, b) = (first_key!(clock, first), first_key!(clock, second));
    assert_eq!(a.transaction(), b.transaction());
    assert_ne!(a, b);
    assert_ne!(a.origin(), 0);
    // The same manager keeps its origin.
    assert_eq!(first_key!(clock, first).origin(), a.origin());
    let chosen = TransactionManager::new(&clock).with_origin(42);
    assert_eq!(first_key!(clock, chosen), IdempotencyKey::new(42, TransactionId::new(1), 0));
}

#[test]
fn a_step_key_survives_recovery_unchanged() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let live = std::cell::Cell::new(None);
    let mut seen = Vec::new();
    clock.block_on(future::or(
        async {
            let _ = manager
                .transaction("t")
                .fixed::<UndoByKey, 2>()
                .run_with(&mut seen, async |tx| {
                    tx.step("a")
                        .execute_keyed(|key| {
                            live.set(Some(key));
                            async { Ok::<_, String>(()) }
                        })
                        .undo_keyed(|(), key| UndoByKey(key))
                        .await?;
                    // The process dies during step `b`: step `a` is owed.
                    tx.step("b")
                        .run(|| {
                            journal.cut_power_now();
                            future::pending::<Result<(), String>>()
                        })
                        .await
                })
                .await;
        },
        journal.power_lost(),
    ));
    let live = live.get().expect("step `a` ran");
    assert_ne!(live.origin(), 0);
    let restarted = TransactionManager::new(&clock).with_journal(journal.restart(), Postcard::<1>);
    let mut undone = Vec::new();
    clock.block_on(restarted.recover::<UndoByKey, Fixed<2>, _>(&mut undone)).unwrap();
    assert_eq!(undone, [live.to_string()]);
}

#[test]
fn ids_and_keys_read_short() {
    assert_eq!(TransactionId::new(17).to_string(), "tx-17");
    assert_eq!(TransactionId::new(3 << 32 | 17).to_string(), "tx-3.17");
    assert_eq!(TransactionId::new(1 << 32).to_string(), "tx-1.0");
    for id in [0, 17, 1 << 32, 3 << 32 | 17, u64::MAX] {
        let id = TransactionId::new(id);
        assert_eq!(id.to_string().parse::<TransactionId>(), Ok(id));
    }
    let key = IdempotencyKey::new(0x9f3a_0c5e_1b2d_4f68, TransactionId::new(3 << 32 | 17), 2);
    assert_eq!(key.to_string(), "tx-3.17.2-9f3a0c5e1b2d4f68");
    assert_eq!(IdempotencyKey::new(1, TransactionId::new(17), 2).to_string(), "tx-17.2-0000000000000001");
    for key in [
        key,
        IdempotencyKey::new(1, TransactionId::new(17), 2),
        IdempotencyKey::new(u64::MAX, TransactionId::new(u64::MAX), u32::MAX),
    ] {
        assert_eq!(key.to_string().parse::<IdempotencyKey>(), Ok(key));
    }
    for bad in ["", "tx-", "tx-1.", "17", "tx-1.2.3.4", "tx-1.x", "tx-4294967296.0", "tx-1.2-zz", "tx-1.2.3-", "tx-+1"]
    {
        assert!(bad.parse::<TransactionId>().is_err() || bad.parse::<IdempotencyKey>().is_err(), "{bad}");
    }
    assert!("tx-1.2-0000000000000001".parse::<TransactionId>().is_err());
    assert!("tx-1.2".parse::<IdempotencyKey>().is_err());
}

#[test]
fn recover_dropped_rolls_back_dropped_transactions_while_others_run() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    let mut other = World::default();
    // Two transactions wait in their second step; the first is dropped
    // (a `select!` that picked another branch), the second runs on.
    clock.block_on(async {
        let mut running = std::pin::pin!(waiting(&manager, &mut other));
        // Both reach their second step.
        let first = future::or(async { Some(waiting(&manager, &mut world).await) }, async {
            clock.sleep(Duration::from_secs(1)).await;
            None
        });
        let second = future::or(async { Some(running.as_mut().await) }, async {
            clock.sleep(Duration::from_secs(1)).await;
            None
        });
        let (first, second) = future::zip(first, second).await;
        assert!(first.is_none() && second.is_none(), "both still waiting");
        // The first was dropped: recover_dropped rolls back its step only.
        let report = manager.recover_dropped::<Undo, Fixed<2>, _>(&mut world).await.unwrap();
        assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
        // The other one runs on and commits; nothing of it was rolled back.
        assert!(running.await.is_ok());
    });
    assert_eq!(world.rolled_back, ["r0"]);
    assert!(other.rolled_back.is_empty());
    assert!(other.live.contains("r0"));
    assert_eq!(clock.block_on(manager.recover_dropped::<Undo, Fixed<2>, _>(&mut world)).unwrap().found(), 0);
}

/// A transaction that creates `r0`, then waits 10 s in its second step.
async fn waiting(manager: &Manager<'_>, world: &mut World) -> Result<(), String> {
    let clock: &ManualClock = manager.clock();
    manager
        .transaction("waiting")
        .fixed::<Undo, 2>()
        .run_with(world, async |tx| {
            tx.step("r0")
                .execute_with(async |w: &mut World| create(w, "r0".into(), 0).await)
                .undo(|n| Undo::Delete(n.clone()))
                .await?;
            tx.step("wait")
                .run(|| async {
                    clock.sleep(Duration::from_secs(10)).await;
                    Ok::<_, String>(())
                })
                .await?;
            Ok::<_, StepError<String>>(())
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn an_unknown_undo_variant_is_stuck_not_guessed() {
    /// A newer program's undo type: one variant more, at the end.
    #[derive(serde::Serialize, serde::Deserialize)]
    enum NewerUndo {
        Delete(String),
        Archive(String),
    }
    impl Rollback<World> for NewerUndo {
        type Error = String;
        async fn rollback(&mut self, _: &mut World) -> Result<(), String> {
            Ok(())
        }
    }
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    // Written by the newer program with the same schema number (a mistake
    // the codec cannot see): the variant it does not know is refused.
    let newer = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    journal.cut_power_after(3);
    clock.block_on(future::or(
        async {
            let _ = newer
                .transaction("t")
                .fixed::<NewerUndo, 2>()
                .run_with(&mut world, async |tx| {
                    tx.step("r0")
                        .execute_with(async |w: &mut World| create(w, "r0".into(), 0).await)
                        .undo(|n| NewerUndo::Delete(n.clone()))
                        .await?;
                    tx.step("r1")
                        .execute_with(async |w: &mut World| create(w, "r1".into(), 0).await)
                        .undo(|n| NewerUndo::Archive(n.clone()))
                        .await?;
                    Ok::<_, StepError<String>>(())
                })
                .await;
        },
        journal.power_lost(),
    ));
    let manager = TransactionManager::new(&clock).with_journal(journal.restart(), Postcard::<1>);
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.stuck()), (1, 1), "{report}");
    let mut reasons = Vec::new();
    clock.block_on(manager.stuck(|_, reason| reasons.push(reason.to_string()))).unwrap();
    assert_eq!(reasons, ["step #1: the undo record cannot be decoded (corrupt, or an unknown variant)"]);
    // Nothing was rolled back on a guess, not even the step it could decode.
    assert!(world.rolled_back.is_empty());
}

/// A group member that opted into uncertain rollback and whose attempts all
/// failed cleanly owes nothing: it writes `Released` after its intent, so
/// recovery of the dropped transaction rolls back only the member that
/// completed.
#[test]
fn a_group_member_that_failed_cleanly_is_released() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    clock.block_on(async {
        let run = manager.transaction("group").fixed::<Undo, 2>().run_with(&mut world, async |tx| {
            let group = tx
                .parallel((
                    member("r0")
                        .max_retries(1)
                        .execute(|| future::ready(Err::<String, _>("r0: refused".to_string())))
                        .undo_uncertain(|_| Undo::Delete("r0".into())),
                    member("r1").execute(member_creates("r1")).undo(|n: &String| Undo::Delete(n.clone())),
                ))
                .await;
            assert!(group.is_err());
            clock.sleep(Duration::from_secs(10)).await;
            Ok::<_, StepError<String>>(())
        });
        // Dropped after 1 s, in its wait.
        future::or(async { Some(run.await) }, async {
            clock.sleep(Duration::from_secs(1)).await;
            None
        })
        .await;
        MEMBERS.with(|m| m.borrow_mut().clear());
        // The lazy entries are written by now.
        journal.flush();
    });
    let first = TransactionId::new(1);
    assert!(journal.has(first, Some(0), EntryKind::Intent), "{:?}", journal.entries(first));
    assert!(journal.has(first, Some(0), EntryKind::Released), "{:?}", journal.entries(first));
    let report = clock.block_on(manager.recover_dropped::<Undo, Fixed<2>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.rolled_back()), (1, 1), "{report}");
    assert_eq!(world.rolled_back, ["r1"], "r0 failed cleanly: its uncertain rollback is not owed");
}

/// An undo record whose rollback can fail for good at once: the zone
/// refuses to delete a locked record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum ZoneUndo {
    Delete(String),
}

impl Rollback<World> for ZoneUndo {
    type Error = String;

    async fn rollback(&mut self, world: &mut World) -> Result<(), String> {
        let ZoneUndo::Delete(name) = self;
        *world.rollback_attempts.entry(name.clone()).or_default() += 1;
        Err(format!("{name}: locked"))
    }

    fn retry_if(&mut self, error: &String) -> bool {
        !error.ends_with("locked")
    }
}

#[test]
fn permanent_failures_are_journaled_like_any_failure() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    let mut calls = 0u32;
    let err = clock
        .block_on(manager.transaction("zone").fixed::<ZoneUndo, 2>().run_with(&mut world, async |tx| {
            tx.step("record")
                .retry(RetryPolicy::new().with_max_retries(3))
                .execute(|| async { Ok::<_, String>(()) })
                .undo(|()| ZoneUndo::Delete("www".into()))
                .await?;
            tx.step("name")
                .retry(RetryPolicy::new().with_max_retries(3))
                .execute(|| {
                    calls += 1;
                    async { Err::<(), _>(String::from("zone refuses this name")) }
                })
                .retry_if(|error| !error.starts_with("zone refuses"))
                .no_rollback()
                .await?;
            Ok::<_, StepError<String>>(())
        }))
        .unwrap_err();
    // Neither the step nor the rollback waited for a retry.
    assert_eq!((calls, world.rollback_attempts["www"], clock.now()), (1, 1, Duration::ZERO));
    let steps = err.summary().steps();
    assert_eq!(steps[1].error(), Some("not retried: permanent: zone refuses this name"));
    assert_eq!(steps[0].rollback_error(), Some("not retried: permanent: www: locked"));
    // Journaled as a failed rollback: still owed, listed with its error.
    journal.flush();
    let id = err.summary().info().id();
    assert!(journal.has(id, Some(0), EntryKind::UndoFailed));
    assert!(!journal.has(id, None, EntryKind::RolledBack));
    let mut owed = Vec::new();
    let count = clock
        .block_on(
            manager.owed(|step: &OwedStep<'_>| owed.push((step.step().to_string(), step.error().map(String::from)))),
        )
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(owed, [("record".to_string(), Some("not retried: permanent: www: locked".to_string()))]);
}

/// An undo record that keeps its step's idempotency key, for the API the
/// rollback calls (here: the list of keys undone).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct UndoByKey(IdempotencyKey);

impl Rollback<Vec<String>> for UndoByKey {
    type Error = String;

    async fn rollback(&mut self, undone: &mut Vec<String>) -> Result<(), String> {
        undone.push(self.0.to_string());
        Ok(())
    }
}

#[test]
fn execute_and_undo_makers_get_their_step_key() {
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Postcard::<1>);
    let called = std::cell::RefCell::new(Vec::new());
    let mut undone = Vec::new();
    let err = clock
        .block_on(manager.transaction("t").fixed::<UndoByKey, 4>().run_with(&mut undone, async |tx| {
            tx.step("a")
                .execute_keyed(|key| {
                    called.borrow_mut().push(format!("a {key}"));
                    async { Ok::<_, String>(()) }
                })
                .undo_keyed(|(), key| UndoByKey(key))
                .await?;
            tx.parallel((
                member("b")
                    .execute_keyed(|key| {
                        called.borrow_mut().push(format!("b {key}"));
                        async { Ok::<_, String>(()) }
                    })
                    .undo_keyed(|(), key| UndoByKey(key)),
                member("c")
                    .execute_keyed(|key| {
                        called.borrow_mut().push(format!("c {key}"));
                        async { Ok::<_, String>(()) }
                    })
                    .undo_keyed(|(), key| UndoByKey(key)),
            ))
            .await?;
            tx.step("d").run(|| async { Err::<(), _>(String::from("boom")) }).await?;
            Ok::<_, StepError<String>>(())
        }))
        .unwrap_err();
    assert_eq!(err.cause().step(), "d");
    let o = journal.origin();
    assert_eq!(
        *called.borrow(),
        [format!("a tx-1.0-{o:016x}"), format!("b tx-1.1-{o:016x}"), format!("c tx-1.2-{o:016x}")]
    );
    assert_eq!(undone, [format!("tx-1.2-{o:016x}"), format!("tx-1.1-{o:016x}"), format!("tx-1.0-{o:016x}")]);
}

/// An intent that cannot be written stops a step and a group member alike,
/// before they run: each fails for good with the journal's error, its
/// record says why, nothing is owed, and no `on_step_failure` is called
/// (no attempt failed: none started).
#[test]
fn an_intent_that_cannot_be_written_stops_a_step_and_a_member_alike() {
    #[derive(Default)]
    struct Failures(std::sync::Mutex<Vec<String>>);
    impl Hooks for Failures {
        async fn on_step_failure(&self, event: &StepEvent<'_>) {
            self.0.lock().unwrap().push(event.step.name().to_string());
        }
    }
    for in_group in [false, true] {
        let clock = ManualClock::new();
        let journal = MemoryJournal::new();
        let manager = TransactionManager::new(&clock)
            .with_hooks(Failures::default())
            .with_journal(journal.clone(), Postcard::<1>);
        let mut world = World::default();
        journal.fail_before_write(Some(EntryKind::Intent));
        let err = clock
            .block_on(manager.transaction("t").fixed::<Undo, 2>().run_with(&mut world, async |tx| {
                if in_group {
                    tx.parallel((member("r0")
                        .execute(member_creates("r0"))
                        .undo_uncertain(|_| Undo::Delete("r0".into())),))
                        .await
                        .map_err(|e| e.into_first())?;
                } else {
                    tx.step("r0")
                        .execute_with(async |w: &mut World| create(w, "r0".into(), 0).await)
                        .undo_uncertain(|_| Undo::Delete("r0".into()))
                        .await?;
                }
                Ok::<_, StepError<String>>(())
            }))
            .unwrap_err();
        assert!(MEMBERS.with(|m| m.borrow().is_empty()), "in a group: {in_group}: the member ran");
        let cause = err.cause();
        assert!(
            matches!(cause.kind(), StepErrorKind::Journal(f) if f.entry() == Some(EntryKind::Intent)),
            "in a group: {in_group}: {cause:?}"
        );
        let record = &err.summary().steps()[0];
        assert_eq!((record.status(), record.attempts()), (StepStatus::Failed, 1), "in a group: {in_group}");
        assert!(world.live.is_empty() && world.rolled_back.is_empty(), "in a group: {in_group}: {world:?}");
        assert!(manager.hooks().0.lock().unwrap().is_empty(), "in a group: {in_group}");
    }
}

/// The `Metrics` hook counts how transactions end and what recovery finds:
/// a rollback failing for good leaves its transaction partially rolled back
/// (owed); recovery takes it up and rolls it back; an undecodable one is
/// stuck.
#[cfg(feature = "metrics")]
#[test]
fn metrics_count_owed_recovered_and_stuck_transactions() {
    use transaction_manager::hooks::Metrics;
    let clock = ManualClock::new();
    let journal = MemoryJournal::new();
    let manager =
        TransactionManager::new(&clock).with_hooks(Metrics::<8>::new()).with_journal(journal.clone(), Postcard::<1>);
    let mut world = World::default();
    assert!(clock.block_on(run(&manager, &mut world, Scenario::FailingRollback)).is_err());
    let t = manager.hooks().transactions();
    assert_eq!((t.committed, t.rolled_back, t.partially_rolled_back, t.recovered, t.stuck), (0, 0, 1, 0, 0));

    // Recovery tries the owed rollback again (it succeeds the second time).
    journal.insert_raw(TransactionId::new(50), Some(0), EntryKind::Done.code(), b"\x01garbage");
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    assert_eq!((report.found(), report.rolled_back(), report.stuck()), (2, 1, 1), "{report}");
    let t = manager.hooks().transactions();
    assert_eq!((t.committed, t.rolled_back, t.partially_rolled_back, t.recovered, t.stuck), (0, 1, 1, 1, 1));
    let mut text = String::new();
    manager.hooks().write_prometheus(&mut text).unwrap();
    for line in [
        "transactions_total{outcome=\"rolled_back\"} 1",
        "transactions_total{outcome=\"partially_rolled_back\"} 1",
        "transaction_recoveries_total 1",
        "transaction_stuck_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
}

/// A journal that counts the transactions `inspect` reads.
struct Counting {
    inner: MemoryJournal,
    reads: std::cell::Cell<usize>,
}

impl Journal for Counting {
    type Error = journal::MemoryJournalError;

    fn next_id(&self) -> TransactionId {
        self.inner.next_id()
    }

    fn origin(&self) -> u64 {
        self.inner.origin()
    }

    async fn append(&self, entry: &journal::Entry<'_>) -> Result<(), Self::Error> {
        self.inner.append(entry).await
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error> {
        self.inner.next_unfinished(after).await
    }

    async fn read(
        &self,
        id: TransactionId,
        visit: &mut dyn FnMut(journal::StoredEntry<'_>),
    ) -> Result<(), Self::Error> {
        self.reads.set(self.reads.get() + 1);
        self.inner.read(id, visit).await
    }
}

impl journal::Browse for Counting {
    async fn next_transaction(
        &self,
        after: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, Self::Error> {
        self.inner.next_transaction(after, unfinished_only).await
    }

    async fn previous_transaction(
        &self,
        before: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, Self::Error> {
        self.inner.previous_transaction(before, unfinished_only).await
    }
}

#[test]
fn inspect_lists_the_newest_first_and_reads_only_what_it_needs() {
    use journal::inspect::{Filter, TransactionState::*, list};
    let journal = Counting { inner: MemoryJournal::new(), reads: Default::default() };
    // 1 committed, 2 running, 3 stuck, 4 committed, 5 running, 6 rolled back.
    let ends = [Some(EntryKind::Committed), None, Some(EntryKind::Stuck), Some(EntryKind::Committed), None];
    for (id, end) in (1..).zip(ends.into_iter().chain([Some(EntryKind::RolledBack)])) {
        let id = TransactionId::new(id);
        journal.inner.insert_raw(id, None, EntryKind::Begin.code(), b"provision");
        if let Some(end) = end {
            journal.inner.insert_raw(id, None, end.code(), &[1]);
        }
    }
    let clock = ManualClock::new();
    let ids = |filter: Filter| {
        journal.reads.set(0);
        let found = clock.block_on(list(&journal, &filter)).unwrap();
        (found.iter().map(|t| t.id.get()).collect::<Vec<_>>(), journal.reads.get())
    };
    // The newest, oldest first: only those read.
    assert_eq!(ids(Filter::new().limit(2)), (vec![5, 6], 2));
    assert_eq!(ids(Filter::new().limit(0)), (vec![], 0));
    // Only what is not over: the finished ones are never read.
    assert_eq!(ids(Filter::new().state(Running)), (vec![2, 5], 3));
    assert_eq!(ids(Filter::new().state(Running).limit(1)), (vec![5], 1));
    assert_eq!(ids(Filter::new().state(Running).state(Stuck)), (vec![2, 3, 5], 3));
    // A state of what is over: every transaction, newest first up to the limit.
    assert_eq!(ids(Filter::new().state(Committed).limit(1)), (vec![4], 3));
    assert_eq!(ids(Filter::new().state(Committed).state(Running)), (vec![1, 2, 4, 5], 6));
    assert_eq!(ids(Filter::new()), (vec![1, 2, 3, 4, 5, 6], 6));
}
