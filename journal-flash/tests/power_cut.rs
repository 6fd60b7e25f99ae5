//! The flash journal under power cuts: journaled transactions run by the
//! core's engine on a RAM NorFlash that loses power after every write
//! call, and after every programmed word or erased page (torn writes and
//! torn erases); the flash is then reopened as the next boot finds it,
//! recovered, and checked against the guarantees. Plus the wear: pages
//! erased per transaction.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use futures_lite::future;
use transaction_manager::*;
use transaction_manager::{
    abandon::Unattended,
    journal::{Entry, EntryKind, Journal, Journaled, Postcard, StoredEntry},
    storage::Fixed,
};
use transaction_manager_flash::{FlashCell, FlashJournal, RamFlash};

/// 512-byte pages: 4 for the records, 2 for the meta map.
const PAGE: usize = 512;
const SIZE: usize = 6 * PAGE;
const RECORDS: core::ops::Range<u32> = 0..(4 * PAGE) as u32;
const META: core::ops::Range<u32> = (4 * PAGE) as u32..SIZE as u32;

type Flash<'c> = RamFlash<'c, SIZE, PAGE>;
type Manager<'c> = TransactionManager<&'c ManualClock, (), Unattended, Journaled<Watched<'c>, Postcard<1>>>;

/// Which appends started and which returned `Ok`: what the program knew
/// was on flash when the power went.
#[derive(Default, Debug)]
struct Acks {
    started: BTreeSet<(Option<u32>, u8)>,
    acked: BTreeSet<(Option<u32>, u8)>,
}

impl Acks {
    fn acked(&self, step: Option<u32>, kind: EntryKind) -> bool {
        self.acked.contains(&(step, kind.code()))
    }

    fn started(&self, step: Option<u32>, kind: EntryKind) -> bool {
        self.started.contains(&(step, kind.code()))
    }
}

/// The flash journal, watched.
struct Watched<'c> {
    journal: FlashJournal<Flash<'c>>,
    acks: &'c RefCell<Acks>,
}

impl Journal for Watched<'_> {
    type Error = <FlashJournal<Flash<'static>> as Journal>::Error;

    fn next_id(&self) -> TransactionId {
        self.journal.next_id()
    }

    fn origin(&self) -> u64 {
        self.journal.origin()
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), Self::Error> {
        let key = (entry.step(), entry.kind().code());
        self.acks.borrow_mut().started.insert(key);
        self.journal.append(entry).await?;
        self.acks.borrow_mut().acked.insert(key);
        Ok(())
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error> {
        self.journal.next_unfinished(after).await
    }

    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error> {
        self.journal.read(id, visit).await
    }

    fn decided(error: &Self::Error) -> Option<EntryKind> {
        FlashJournal::<Flash<'static>>::decided(error)
    }
}

/// Resources a transaction creates, as the outside world sees them.
#[derive(Default, Debug)]
struct World {
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
}

const SCENARIOS: [Scenario; 5] =
    [Scenario::Commit, Scenario::Fail, Scenario::Retry, Scenario::FailingRollback, Scenario::Uncertain];

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

async fn run(manager: &Manager<'_>, world: &mut World, scenario: Scenario) -> Result<(), String> {
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

/// Completes once the flash has lost power. Polled before the transaction
/// (`future::or` polls its first future first), so nothing of the
/// transaction runs after the cut: the CPU is off.
async fn power_lost(cell: &FlashCell<SIZE>) {
    poll_fn(|_| if cell.is_dead() { Poll::Ready(()) } else { Poll::Pending }).await
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    Never,
    /// After this many write or erase calls.
    Writes(u32),
    /// After this many programmed words or erased pages: the next is torn.
    Operations(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restart {
    /// The next boot: a new journal and manager on the flash as it is.
    Reboot,
    /// No reboot: the transaction's future was dropped mid-write (a
    /// cancelled append), the flash works again, and the same manager
    /// recovers.
    Cancelled,
}

struct Run {
    writes: u32,
    erases: u32,
    operations: u32,
    recovered_something: bool,
}

fn open(cell: &FlashCell<SIZE>) -> FlashJournal<Flash<'_>> {
    future::block_on(FlashJournal::open(cell.flash::<PAGE>(), RECORDS, META)).unwrap()
}

/// Runs `scenario` with the power cut at `cut`, restarts, recovers, and
/// checks the guarantees against what the program knew was on flash.
fn crash_and_recover(scenario: Scenario, cut: Cut, restart: Restart, cell: &FlashCell<SIZE>) -> Run {
    let acks_cell = RefCell::new(Acks::default());
    let journal = Watched { journal: open(cell), acks: &acks_cell };
    let (writes, operations, erases) = (cell.writes(), cell.operations(), cell.erases());
    match cut {
        Cut::Never => {}
        Cut::Writes(n) => cell.cut_after_writes(n),
        Cut::Operations(n) => cell.cut_after_operations(n),
    }
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(journal, Postcard::<1>);
    let mut world = World::default();
    let outcome = clock.block_on(future::or(
        async {
            power_lost(cell).await;
            None
        },
        async { Some(run(&manager, &mut world, scenario).await) },
    ));
    let crashed = outcome.is_none();
    assert_eq!(crashed, cell.is_dead(), "{scenario:?} {cut:?}");
    let run_writes = cell.writes() - writes;
    let run_operations = cell.operations() - operations;
    let run_erases = cell.erases() - erases;
    cell.power_on();
    let acks = acks_cell.take();
    let rolled_back_before = world.rolled_back.len();

    let context = |what: &str, world: &World| {
        format!("{scenario:?}, {cut:?}, {restart:?}: {what}; world {world:?}; appends {acks:?}")
    };
    let later_acks = RefCell::new(Acks::default());
    let reopened;
    let manager = match restart {
        Restart::Reboot => {
            let journal = Watched { journal: open(cell), acks: &later_acks };
            reopened = TransactionManager::new(&clock).with_journal(journal, Postcard::<1>);
            &reopened
        }
        Restart::Cancelled => &manager,
    };
    let report = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    let report_text = report.to_string();
    let recovered = world.rolled_back[rolled_back_before..].to_vec();
    assert_eq!(report.stuck(), 0, "{}", context(&report_text, &world));
    if outcome == Some(Ok(())) {
        assert!(acks.acked(None, EntryKind::Committed), "{}", context("`run` returned Ok before Committed", &world));
    }
    if acks.acked(None, EntryKind::Committed) {
        assert!(world.rolled_back.is_empty(), "{}", context("a committed transaction was rolled back", &world));
        assert_eq!(report.found(), 0, "{}", context(&report_text, &world));
    }
    // A Committed cut halfway: on flash or not, but all or nothing.
    let commit_uncertain = acks.started(None, EntryKind::Committed) && !acks.acked(None, EntryKind::Committed);
    let nothing_recovered = commit_uncertain && world.rolled_back.is_empty();
    // Every step whose value reached the body is rolled back, unless the
    // transaction committed: a rollback that failed for good in the run left
    // the transaction owed, and recovery tried it again.
    for name in &world.returned {
        if acks.acked(None, EntryKind::Committed) || nothing_recovered {
            continue;
        }
        assert!(
            world.rolled_back.contains(name),
            "{}",
            context(&format!("{name} reached the body and was not rolled back"), &world)
        );
    }
    // Nothing else, unless it opted into uncertain rollback: its intent is
    // written before its first attempt, and an intent cut halfway may be on
    // flash although the attempt never ran (the rollback must be harmless
    // then, as uncertain rollbacks always must).
    for name in &world.rolled_back {
        let index: u32 = name[1..].parse().unwrap();
        assert!(
            world.completed.contains(name)
                || world.uncertain.contains(name)
                || acks.started(Some(index), EntryKind::Intent),
            "{}",
            context(&format!("{name} was rolled back but never completed"), &world)
        );
    }
    // Recovery did not repeat a rollback whose `Undone` was on flash.
    for name in &recovered {
        let index: u32 = name[1..].parse().unwrap();
        assert!(
            !acks.acked(Some(index), EntryKind::Undone),
            "{}",
            context(&format!("{name} rolled back twice"), &world)
        );
    }
    // A second recovery finds nothing, and the journal takes a new
    // transaction (its slot is free again).
    // (After a partial one, the rollbacks still owed are tried again by
    // the next recovery first.)
    let mut again = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    if report.partially_rolled_back() > 0 {
        assert_eq!(again.rolled_back(), 1, "{}", context("the recovery after a partial one", &world));
        again = clock.block_on(manager.recover::<Undo, Fixed<4>, _>(&mut world)).unwrap();
    }
    assert_eq!(again.found(), 0, "{}", context("second recovery", &world));
    let mut next = World::default();
    if restart == Restart::Reboot {
        let result = clock.block_on(run(manager, &mut next, Scenario::Commit));
        assert_eq!(result, Ok(()), "{}", context("a transaction after recovery", &world));
    } else {
        // The same journal goes on after the cancelled append: a
        // transaction it runs now, cut in turn, is rolled back at the next
        // boot (its records carry what the flash says, even after a clear
        // that was cut).
        drop(acks_cell.take());
        cell.cut_after_writes(8);
        let outcome = clock.block_on(future::or(
            async {
                power_lost(cell).await;
                None
            },
            async { Some(run(manager, &mut next, Scenario::Commit).await) },
        ));
        cell.power_on();
        let rebooted = TransactionManager::new(&clock).with_journal(open(cell), Postcard::<1>);
        let committed = acks_cell.borrow().acked(None, EntryKind::Committed);
        assert!(outcome.is_none() && !committed, "{}", context("the cut after 8 writes came too late", &next));
        clock.block_on(rebooted.recover::<Undo, Fixed<4>, _>(&mut next)).unwrap();
        for name in &next.returned {
            assert!(
                committed || next.rolled_back.contains(name),
                "{}",
                context(&format!("after the cancelled append, {name} was not rolled back at the next boot"), &next)
            );
        }
    }
    Run {
        writes: run_writes,
        operations: run_operations,
        erases: run_erases,
        recovered_something: !recovered.is_empty(),
    }
}

/// Every cut point of every scenario, each from the same flash image (a
/// used journal: the boot counter and earlier transactions on it).
fn every_cut(restart: Restart, torn: bool) -> (usize, usize) {
    let (mut runs, mut recovered) = (0, 0);
    for scenario in SCENARIOS {
        // A used journal, full enough that the run ends with a clear: the
        // cut points then cover a torn clear of the records range too.
        let cell = FlashCell::<SIZE>::new();
        let mut used = 0;
        let (image, full) = loop {
            let image = cell.bytes();
            let probe = FlashCell::<SIZE>::new();
            probe.set_bytes(&image);
            let full = crash_and_recover(scenario, Cut::Never, restart, &probe);
            // A failing rollback leaves its transaction owed (unfinished):
            // its run never ends with a clear; the clear comes with the
            // recovery that finishes it.
            if full.erases > 0 || scenario == Scenario::FailingRollback {
                break (image, full);
            }
            used += 1;
            assert!(used < 20, "{scenario:?}: no run ends with a clear");
            // One small transaction more (begin, commit) on one more boot.
            let journal = open(&cell);
            let id = journal.next_id();
            future::block_on(journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b"fill"))).unwrap();
            future::block_on(journal.append(&Entry::new_raw(id, Some(0), EntryKind::Done, &[0; 40]))).unwrap();
            future::block_on(journal.append(&Entry::new_raw(id, None, EntryKind::Committed, b""))).unwrap();
        };
        assert!(full.writes >= 4, "{scenario:?} made {} writes", full.writes);
        let total = if torn { full.operations } else { full.writes };
        for k in 0..=total {
            let cell = FlashCell::<SIZE>::new();
            cell.set_bytes(&image);
            let cut = if torn { Cut::Operations(k) } else { Cut::Writes(k) };
            recovered += usize::from(crash_and_recover(scenario, cut, restart, &cell).recovered_something);
            runs += 1;
        }
    }
    (runs, recovered)
}

#[test]
fn power_cut_after_every_write_is_recovered_at_the_next_boot() {
    let (runs, recovered) = every_cut(Restart::Reboot, false);
    assert!(runs > 40, "{runs} cut points");
    assert!(recovered >= runs / 3, "only {recovered} of {runs} cut points had rollbacks to recover");
}

#[test]
fn power_cut_in_every_word_of_every_write_is_recovered_at_the_next_boot() {
    let (runs, recovered) = every_cut(Restart::Reboot, true);
    assert!(runs > 300, "{runs} cut points");
    assert!(recovered >= runs / 3, "only {recovered} of {runs} cut points had rollbacks to recover");
}

#[test]
fn append_cancelled_in_every_word_leaves_a_journal_the_same_process_recovers() {
    let (runs, recovered) = every_cut(Restart::Cancelled, true);
    assert!(runs > 300, "{runs} cut points");
    assert!(recovered >= runs / 3, "only {recovered} of {runs} cut points had rollbacks to recover");
}

#[test]
fn ids_are_unique_across_boots() {
    let cell = FlashCell::<SIZE>::new();
    let first = open(&cell);
    assert_eq!(first.boot(), 1);
    let a = first.next_id();
    let b = first.next_id();
    let second = open(&cell);
    assert_eq!(second.boot(), 2);
    let c = second.next_id();
    assert!(a < b && b < c, "{a} {b} {c}");
}

#[test]
fn read_hands_back_begin_then_steps_in_order_then_the_end() {
    let cell = FlashCell::<SIZE>::new();
    let acks = RefCell::new(Acks::default());
    let journal = Watched { journal: open(&cell), acks: &acks };
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_journal(journal, Postcard::<1>);
    // The first transaction after a boot clears the range when it ends:
    // the second is kept.
    assert!(clock.block_on(run(&manager, &mut World::default(), Scenario::Fail)).is_err());
    assert!(clock.block_on(run(&manager, &mut World::default(), Scenario::Fail)).is_err());
    let id = TransactionId::new(1 << 32 | 2);
    let mut kinds = Vec::new();
    future::block_on(manager.journal().journal().journal.read(id, &mut |entry| {
        kinds.push((entry.step, EntryKind::from_code(entry.kind).unwrap()));
    }))
    .unwrap();
    // Each step's latest state; the transaction record's end replaced its Begin.
    assert_eq!(kinds, [(None, EntryKind::RolledBack), (Some(0), EntryKind::Undone), (Some(1), EntryKind::Undone)]);
}

#[test]
fn a_second_transaction_while_the_only_slot_is_taken_fails_cleanly() {
    let cell = FlashCell::<SIZE>::new();
    let journal = open(&cell);
    let id = journal.next_id();
    future::block_on(journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b"a"))).unwrap();
    let other = journal.next_id();
    let error = future::block_on(journal.append(&Entry::new_raw(other, None, EntryKind::Begin, b"b"))).unwrap_err();
    assert!(error.to_string().contains("slot"), "{error}");
    let mut next = None;
    future::block_on(async { next = journal.next_unfinished(None).await.unwrap() });
    assert_eq!(next, Some(id));
}

/// Pages erased per transaction, over many transactions, for two page
/// sizes: the figures in BENCHMARKS.md (`cargo test -p
/// transaction-manager-flash --test power_cut wear -- --nocapture`).
#[test]
fn wear_pages_erased_per_transaction() {
    fn measure<const SIZE: usize, const PAGE: usize>(scenario: Scenario, transactions: u32) -> (f64, u32, u32) {
        let cell = FlashCell::<SIZE>::new();
        let records = 0..(SIZE - 2 * PAGE) as u32;
        let meta = (SIZE - 2 * PAGE) as u32..SIZE as u32;
        let journal = future::block_on(FlashJournal::<_>::open(cell.flash::<PAGE>(), records, meta)).unwrap();
        let clock = ManualClock::new();
        let manager = TransactionManager::new(&clock).with_journal(journal, Postcard::<1>);
        let (erases, writes, words) = (cell.erases(), cell.writes(), cell.operations());
        for _ in 0..transactions {
            let mut world = World::default();
            let outcome = clock.block_on(async {
                manager
                    .transaction("provision")
                    .fixed::<Undo, 4>()
                    .run_with(&mut world, async |tx| {
                        for name in ["r0", "r1", "r2"] {
                            tx.step(name)
                                .execute_with(async |w: &mut World| create(w, name.into(), 0).await)
                                .undo(|name| Undo::Delete(name.clone()))
                                .await?;
                        }
                        if scenario == Scenario::Fail {
                            tx.step("r3").run(|| async { Err::<(), _>("refused".to_string()) }).await?;
                        }
                        Ok::<_, StepError<String>>(())
                    })
                    .await
            });
            assert_eq!(outcome.is_ok(), scenario == Scenario::Commit);
        }
        let per = f64::from(cell.erases() - erases) / f64::from(transactions);
        (per, (cell.writes() - writes) / transactions, (cell.operations() - words) / transactions)
    }
    for (label, scenario) in [("committed, 3 steps", Scenario::Commit), ("rolled back, 3 steps", Scenario::Fail)] {
        let (small, small_writes, small_words) = measure::<{ 6 * 512 }, 512>(scenario, 400);
        let (large, large_writes, large_words) = measure::<{ 6 * 4096 }, 4096>(scenario, 400);
        println!(
            "{label}: 512-byte pages (4 for records): {small:.3} page erases per transaction \
             ({small_writes} write calls, {small_words} words); 4096-byte pages: {large:.3} \
             ({large_writes} write calls, {large_words} words)"
        );
        assert!(small < 1.5 && large < 0.2, "{small} {large}");
    }
}

/// A clear cut after any page it erased never brings a finished
/// transaction back: a transaction whose steps overwrote their records
/// often enough for sequential-storage's ring to wrap (old versions of its
/// records on pages the clear erases last), committed, then the clear cut
/// at every page erase (torn or whole).
#[test]
fn a_clear_cut_at_any_page_never_brings_a_finished_transaction_back() {
    fn fill(cell: &FlashCell<SIZE>, rounds: u8) -> TransactionId {
        let journal = open(cell);
        let id = journal.next_id();
        future::block_on(async {
            journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b"wrap")).await.unwrap();
            // Idempotent re-appends move the ring forward (and make
            // sequential-storage collect pages) without finishing anything.
            for round in 0..rounds {
                for step in 0..3 {
                    let undo = [round; 40];
                    journal.append(&Entry::new_raw(id, Some(step), EntryKind::Done, &undo)).await.unwrap();
                }
            }
        });
        id
    }
    // Every phase of the ring: the commit's record lands on each page in turn.
    for rounds in 1..40 {
        clear_cut(rounds);
    }

    fn clear_cut(rounds: u8) {
        let cell = FlashCell::<SIZE>::new();
        let id = fill(&cell, rounds);
        let image = cell.bytes();
        // A clean run: how many operations the commit takes, of which the
        // last `erased` are the clear's page erases.
        let journal = open(&cell);
        let (operations, erases) = (cell.operations(), cell.erases());
        future::block_on(journal.append(&Entry::new_raw(id, None, EntryKind::Committed, b""))).unwrap();
        let total = cell.operations() - operations;
        let erased = cell.erases() - erases;
        if erased == 0 {
            return; // not full enough for a clear yet
        }
        for k in total - erased..total {
            let cell = FlashCell::<SIZE>::new();
            cell.set_bytes(&image);
            let journal = open(&cell);
            cell.cut_after_operations(k);
            let commit = Entry::new_raw(id, None, EntryKind::Committed, b"");
            let cut = future::block_on(future::or(
                async {
                    power_lost(&cell).await;
                    true
                },
                async {
                    journal.append(&commit).await.unwrap();
                    false
                },
            ));
            assert!(cut, "cut at operation {k} of {total}");
            cell.power_on();
            let rebooted = open(&cell);
            let unfinished = future::block_on(rebooted.next_unfinished(None)).unwrap();
            assert_eq!(
                unfinished, None,
                "{rounds} rounds: clear cut at operation {k} of {total} ({erased} page erases)"
            );
        }
    }
}
