//! Random journaled transactions, cut by a power loss at a random point —
//! after any journal write, or in the middle of a step's attempt after its
//! effect — then recovered, on `ManualClock`, tokio and smol. Each case is
//! checked against the journal's guarantees:
//!
//! - a step whose value reached the body had a durable `Done`, and is
//!   rolled back unless its transaction committed (or its rollback failed
//!   for good and the transaction ended saying so);
//! - a step that opted into uncertain rollback and took effect with its
//!   intent durable is rolled back the same way;
//! - nothing else is rolled back, and a committed transaction never is;
//! - `run` returned `Ok` only after `Committed` was durable;
//! - after recovery nothing is unfinished.
//!
//! Every case draws from a seed printed by the test (replay one run with
//! `TM_JOURNAL_SEED=<seed>`; `TM_JOURNAL_CASES` sets the cases per runtime).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_lite::future;
use transaction_manager::*;
use transaction_manager::{
    abandon::Unattended,
    journal::{EntryKind, JournalFailure, JournalRow, Journaled, MemoryJournal, Postcard, Recovery},
    storage::Fixed,
};

#[derive(Default, Debug)]
struct World {
    live: BTreeSet<String>,
    completed: BTreeSet<String>,
    /// Uncertain-rollback steps whose attempt took effect before the cut.
    uncertain_effects: BTreeSet<String>,
    returned: BTreeSet<String>,
    rolled_back: Vec<String>,
    attempts: BTreeMap<String, u32>,
    /// Rollback attempts still to fail, per step.
    rollback_failures: BTreeMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
enum Undo {
    Delete(String),
}

impl Rollback<World> for Undo {
    type Error = String;

    async fn rollback(&mut self, world: &mut World) -> Result<(), String> {
        let Undo::Delete(name) = self;
        if let Some(left) = world.rollback_failures.get_mut(name) {
            if *left > 0 {
                *left -= 1;
                return Err(format!("{name}: busy"));
            }
        }
        world.live.remove(name);
        world.rolled_back.push(name.clone());
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UndoKind {
    None,
    Done,
    Uncertain,
}

#[derive(Clone, Debug)]
struct StepPlan {
    /// Failed attempts before one succeeds (`u32::MAX`: never).
    errors_before_ok: u32,
    retries: u32,
    undo: UndoKind,
    rollback_failures: u32,
    rollback_retries: u32,
    /// The power is cut in this step's first attempt, after its effect.
    cut_in_attempt: bool,
}

#[derive(Clone, Debug)]
struct Plan {
    steps: Vec<StepPlan>,
    body_fails: bool,
    /// The power is cut after this many appends (`None`: not by a write).
    cut_after: Option<usize>,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn plan(rng: &mut Rng) -> Plan {
    let count = 1 + rng.below(5) as usize;
    let cut_step = if rng.below(4) == 0 { Some(rng.below(count as u64) as usize) } else { None };
    let steps = (0..count)
        .map(|i| StepPlan {
            errors_before_ok: match rng.below(6) {
                0 => u32::MAX,
                1 | 2 => rng.below(3) as u32,
                _ => 0,
            },
            retries: rng.below(3) as u32,
            undo: match rng.below(4) {
                0 => UndoKind::None,
                1 => UndoKind::Uncertain,
                _ => UndoKind::Done,
            },
            rollback_failures: if rng.below(4) == 0 { 1 + rng.below(2) as u32 } else { 0 },
            rollback_retries: rng.below(2) as u32,
            cut_in_attempt: cut_step == Some(i),
        })
        .collect();
    let cut_after = if cut_step.is_none() && rng.below(5) != 0 { Some(rng.below(14) as usize) } else { None };
    Plan { steps, body_fails: rng.below(3) == 0, cut_after }
}

/// The body's error: a step's, or its own.
#[derive(Debug)]
enum BodyError {
    Step(String),
    Own,
}

impl From<StepError<String>> for BodyError {
    fn from(error: StepError<String>) -> Self {
        BodyError::Step(error.to_string())
    }
}

impl From<JournalFailure> for BodyError {
    fn from(failure: JournalFailure) -> Self {
        BodyError::Step(failure.to_string())
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Step(error) => f.write_str(error),
            BodyError::Own => f.write_str("the body's own error"),
        }
    }
}

type Manager<C> = TransactionManager<C, (), Unattended, Journaled<MemoryJournal, Postcard<1>>>;

async fn attempt(world: &mut World, name: &str, step: &StepPlan, journal: &MemoryJournal) -> Result<String, String> {
    let attempts = world.attempts.entry(name.to_string()).or_default();
    *attempts += 1;
    let attempt = *attempts;
    if step.cut_in_attempt {
        // The effect happens, then the machine dies mid-attempt.
        world.live.insert(name.to_string());
        if step.undo == UndoKind::Uncertain {
            world.uncertain_effects.insert(name.to_string());
        }
        journal.cut_power_now();
        return future::pending().await;
    }
    if step.errors_before_ok == u32::MAX || attempt <= step.errors_before_ok {
        return Err(format!("{name}: attempt {attempt} failed"));
    }
    world.live.insert(name.to_string());
    world.completed.insert(name.to_string());
    Ok(name.to_string())
}

async fn run<C: Clock>(manager: &Manager<C>, world: &mut World, plan: &Plan) -> Result<(), String> {
    let journal = manager.journal().journal();
    for (i, step) in plan.steps.iter().enumerate() {
        if step.rollback_failures > 0 {
            world.rollback_failures.insert(format!("s{i}"), step.rollback_failures);
        }
    }
    let outcome = manager
        .transaction("random")
        .fixed::<Undo, 8>()
        .run_with(world, async |tx| {
            for (i, step) in plan.steps.iter().enumerate() {
                let name = format!("s{i}");
                let retry = RetryPolicy::new().with_max_retries(step.retries).with_initial_interval(Duration::ZERO);
                let rollback_retry =
                    RetryPolicy::new().with_max_retries(step.rollback_retries).with_initial_interval(Duration::ZERO);
                let builder = tx.step(name.clone()).retry(retry).rollback_retry(rollback_retry);
                let n = name.as_str();
                let execute = async |w: &mut World| attempt(w, n, step, journal).await;
                match step.undo {
                    UndoKind::None => {
                        builder.run_with(execute).await?;
                    }
                    UndoKind::Done => {
                        builder.execute_with(execute).undo(|name| Undo::Delete(name.clone())).await?;
                    }
                    UndoKind::Uncertain => {
                        builder.execute_with(execute).undo_uncertain(|_| Undo::Delete(name.clone())).await?;
                    }
                }
                tx.context().returned.insert(name);
            }
            if plan.body_fails {
                return Err(BodyError::Own);
            }
            Ok::<_, BodyError>(())
        })
        .await;
    outcome.map(|_| ()).map_err(|e| e.to_string())
}

fn main_check(plan: &Plan, seed: u64, runtime: &str, results: CaseResult) {
    let CaseResult { outcome, world, restarted, recovered, report, again } = results;
    let context = format!("{runtime}, seed {seed}: {plan:?}\noutcome {outcome:?}, report {report}\nworld {world:?}");
    let has = |step: Option<u32>, kind: EntryKind| restarted.iter().any(|r| r.step == step && r.kind == kind.code());
    let committed = has(None, EntryKind::Committed);
    // A rollback may fail for good (its retries run out) in the live run or
    // in recovery: the transaction then stays owed, and later recoveries
    // try again until it is over.
    let finally =
        |step: Option<u32>, kind: EntryKind| recovered.iter().any(|r| r.step == step && r.kind == kind.code());
    assert_eq!(report.stuck(), 0, "{context}");
    assert!(again < 8, "later recoveries never finished the owed rollbacks: {context}");
    if !committed && report.found() > 0 {
        assert!(finally(None, EntryKind::RolledBack), "the transaction did not end rolled back: {context}");
    }
    if report.partially_rolled_back() == 0 {
        assert_eq!(again, 0, "a second recovery found work after a clean one: {context}");
    }
    if committed {
        assert_eq!(outcome, Some(Ok(())), "{context}");
        assert!(world.rolled_back.is_empty(), "a committed transaction was rolled back: {context}");
        return;
    }
    if outcome == Some(Ok(())) {
        panic!("`run` returned Ok without a durable Committed: {context}");
    }
    for (i, step) in plan.steps.iter().enumerate() {
        let name = format!("s{i}");
        let index = i as u32;
        if step.undo != UndoKind::None && world.returned.contains(&name) {
            assert!(
                has(Some(index), EntryKind::Done),
                "{name} reached the body before its Done was durable: {context}"
            );
        }
        let owed_done = has(Some(index), EntryKind::Done);
        // Its intent was durable before its first attempt could start, so
        // an attempt that took effect is owed its rollback.
        let owed_uncertain = world.uncertain_effects.contains(&name);
        if owed_uncertain {
            assert!(has(Some(index), EntryKind::Intent), "{name} took effect before its intent was durable: {context}");
        }
        if owed_done || owed_uncertain {
            assert!(world.rolled_back.contains(&name), "{name} was owed a rollback and was not rolled back: {context}");
        }
    }
    // Nothing else: a step that never completed is rolled back only if it
    // opted into uncertain rollback (its intent may be durable while its
    // attempts failed cleanly and the `Released` was lost: an extra,
    // idempotent rollback GUARANTEES.md allows).
    for name in &world.rolled_back {
        let index: usize = name[1..].parse().unwrap();
        let uncertain = plan.steps[index].undo == UndoKind::Uncertain;
        assert!(world.completed.contains(name) || uncertain, "{name} was rolled back but never completed: {context}");
    }
}

type Pinned<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>;

struct CaseResult {
    outcome: Option<Result<(), String>>,
    world: World,
    /// What survived the cut.
    restarted: Vec<JournalRow>,
    /// The same after recovery.
    recovered: Vec<JournalRow>,
    report: Recovery,
    /// Recoveries after the first that still found work.
    again: usize,
}

/// Runs `plan` with `clock` on a runtime's `block_on`, cuts, restarts,
/// recovers.
fn run_case<C: Clock + Clone>(plan: &Plan, clock: C, block_on: &dyn Fn(Pinned<'_>)) -> CaseResult {
    let journal = MemoryJournal::new();
    if let Some(cut) = plan.cut_after {
        journal.cut_power_after(cut);
    }
    let mut world = World::default();
    let mut outcome = None;
    {
        let manager = TransactionManager::new(clock.clone()).with_journal(journal.clone(), Postcard::<1>);
        let world = &mut world;
        let outcome = &mut outcome;
        block_on(Box::pin(async move {
            *outcome = future::or(async { Some(run(&manager, world, plan).await) }, async {
                manager.journal().journal().power_lost().await;
                None
            })
            .await;
        }));
    }
    if outcome.is_some() {
        journal.flush();
    }
    let restarted = journal.restart();
    let rows = restarted.entries(TransactionId::new(1));
    let mut report = None;
    let mut again = None;
    {
        let manager = TransactionManager::new(clock).with_journal(restarted.clone(), Postcard::<1>);
        let world = &mut world;
        let (report, again) = (&mut report, &mut again);
        block_on(Box::pin(async move {
            *report = Some(manager.recover::<Undo, Fixed<8>, _>(world).await.unwrap());
            // A rollback that failed for good stays owed: each later
            // recovery tries it again, until it succeeds (every planned
            // rollback failure is used up within a few rounds).
            let mut rounds = 0;
            while rounds < 8 && manager.recover::<Undo, Fixed<8>, _>(world).await.unwrap().found() > 0 {
                rounds += 1;
            }
            *again = Some(rounds);
        }));
    }
    let recovered = restarted.entries(TransactionId::new(1));
    CaseResult { outcome, world, restarted: rows, recovered, report: report.unwrap(), again: again.unwrap() }
}

fn seed() -> u64 {
    std::env::var("TM_JOURNAL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    })
}

fn cases() -> u64 {
    std::env::var("TM_JOURNAL_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(500)
}

/// Runs the random cases on one runtime; returns how many had rollbacks
/// to recover (so a run that tests nothing fails).
fn on_runtime<C: Clock + Clone>(runtime: &str, clock: impl Fn() -> C, block_on: &dyn Fn(Pinned<'_>)) {
    let seed = seed();
    println!("{runtime}: TM_JOURNAL_SEED={seed}");
    let mut rng = Rng(seed);
    let mut recovered = 0;
    let mut cut = 0;
    for _ in 0..cases() {
        let plan = plan(&mut rng);
        let result = run_case(&plan, clock(), block_on);
        cut += usize::from(result.outcome.is_none());
        recovered += usize::from(result.report.found() > 0);
        main_check(&plan, seed, runtime, result);
    }
    println!("{runtime}: {} cases, {cut} cut by a power loss, {recovered} recovered", cases());
    assert!(recovered as u64 >= cases() / 10, "{runtime}: only {recovered} cases had something to recover");
    assert!(cut as u64 >= cases() / 5, "{runtime}: only {cut} cases were cut by a power loss");
}

#[test]
fn random_journaled_transactions_survive_power_cuts_on_manual_clock() {
    let clock = ManualClock::new();
    on_runtime("ManualClock", || &clock, &|f| clock.block_on(f));
}

#[cfg(feature = "tokio")]
#[test]
fn random_journaled_transactions_survive_power_cuts_on_tokio() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    on_runtime("tokio", TokioClock::new, &|f| runtime.block_on(f));
}

#[cfg(feature = "smol")]
#[test]
fn random_journaled_transactions_survive_power_cuts_on_smol() {
    on_runtime("smol", SmolClock::new, &|f| smol::block_on(f));
}
