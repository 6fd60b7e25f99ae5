//! transaction-manager against `cano`'s saga (`CompensatableTask`,
//! `Workflow::register_with_compensation`), the same work on both sides.
//!
//! `cargo bench -p transaction-manager-bench --bench cano` prints, per
//! transaction, wall and this thread's CPU time for: the hand-written
//! floor, our `fixed::<Undo, 3>` transaction and our `manager.run`
//! (closures), each against cano; and heap allocations per transaction.
//! `-- --smoke` runs the same code with tiny counts and fails (exit 1) only
//! on a wrong result, never on timing.
//!
//! Two cases, on a tokio current-thread runtime (`TokioClock` on our side):
//! - commit: 3 no-op steps, each with an undo, all succeed;
//! - failure: 3 steps, the third fails, the 2 completed ones are undone,
//!   latest first.
//!
//! The work is the same futures (`common::Noop`) awaited inside each
//! library's step and undo. What differs is each library's own machinery:
//! - cano runs a state machine: every step is a state, looked up in a
//!   `HashMap` by the state enum, its task behind an `Arc<dyn …>`, its
//!   `run` and `compensate` boxed futures (the `#[saga::task]` macro and
//!   the type-erasing adapter each box one), under `catch_unwind` and its
//!   retry loop (`TaskConfig::minimal()`: no retries, no timeout, as our
//!   steps). Each step's `Output` is serialized with `serde_json` onto the
//!   compensation stack, and deserialized back for `compensate`. On
//!   failure the error is wrapped with the state path (strings).
//! - cano's steps pass nothing to each other (a task only sees its
//!   `Resources`): each task returns its own fixed value (1, 2, 3). Ours
//!   pass each step's value to the next (`prev + 1`): the same values.
//! - ours records per-step times (two clock readings a step, on by
//!   default) and a summary; cano records neither here (no observers,
//!   no checkpoint store, no `tracing` or `metrics` feature).
//! - the workflow (cano) and the manager (ours) are built once, outside
//!   the timing; each iteration is one `orchestrate` / one transaction.

// `Work` spells out `Send + 'static` on its futures, so the impls keep the
// `-> impl Future` form.
#![allow(clippy::manual_async_fn)]

use std::borrow::Cow;
use std::future::Future;
use std::hint::black_box;
use std::sync::{Arc, Mutex};

use cano::prelude::*;
use transaction_manager::{Outcome, StepError, TokioClock, TransactionManager, storage::Fixed};
use transaction_manager_bench::{
    CountingAlloc, Mode, Report, Stopwatch, Timing, machine, measure, start_counting, stop_counting,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[macro_use]
#[allow(dead_code)] // Shared with the other benches; this one uses part of it.
mod common;
use common::{Boom, HandError, Noop, Undo, Work};

// ---------------------------------------------------------------------------
// Ours: the suite's 3-step transactions (`fixed::<Undo, 3>` and
// `manager.run` with closure rollbacks), and the hand-written floor.

type M = TransactionManager<TokioClock>;
type FixedOutcome = Outcome<u32, StepError<Boom>, Boom, Fixed<3>>;

fn ours_fixed_ok3(m: &M) -> impl Future<Output = FixedOutcome> + '_ {
    lib_fixed!(m, Noop, 3; "a" => step, "b" => step, "c" => step)
}

fn ours_fixed_fail3(m: &M) -> impl Future<Output = FixedOutcome> + '_ {
    lib_fixed!(m, Noop, 3; "a" => step, "b" => step, "c" => fail)
}

fn hand_ok3() -> impl Future<Output = Result<u32, HandError>> {
    hand!(Noop, 3; "a" => step, "b" => step, "c" => step)
}

fn hand_fail3() -> impl Future<Output = Result<u32, HandError>> {
    hand!(Noop, 3; "a" => step, "b" => step, "c" => fail)
}

// ---------------------------------------------------------------------------
// cano: three compensatable states A -> B -> C -> Done.

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum State {
    A,
    B,
    C,
    Done,
}

/// Where a compensation is recorded: nowhere in the timed workflows, in a
/// list in the checks (to see the order).
trait Log: Send + Sync + 'static {
    fn compensated(&self, step: &'static str, value: u32);
}

#[derive(Clone, Copy)]
struct NoLog;

impl Log for NoLog {
    #[inline(always)]
    fn compensated(&self, _: &'static str, _: u32) {}
}

#[derive(Clone, Default)]
struct VecLog(Arc<Mutex<Vec<(&'static str, u32)>>>);

impl VecLog {
    fn take(&self) -> Vec<(&'static str, u32)> {
        std::mem::take(&mut *self.0.lock().expect("log lock"))
    }
}

impl Log for VecLog {
    fn compensated(&self, step: &'static str, value: u32) {
        self.0.lock().expect("log lock").push((step, value));
    }
}

/// One step: `Noop.step(value)` (or `Noop.fail(value)`) forward, its value
/// the `Output`; `Noop.undo(value)` to compensate.
struct Step<L> {
    /// The task's name: cano's compensation-stack key, so one per state.
    name: &'static str,
    value: u32,
    next: State,
    fails: bool,
    log: L,
}

#[saga::task(state = State)]
impl<L: Log> Step<L> {
    type Output = u32;

    /// Fail fast, as our steps (no retry policy): the default is
    /// exponential backoff with 3 retries from 100 ms.
    fn config(&self) -> TaskConfig {
        TaskConfig::minimal()
    }

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.name)
    }

    async fn run(&self, _res: &Resources) -> Result<(TaskResult<State>, u32), CanoError> {
        let done = if self.fails { Noop.fail(self.value).await } else { Noop.step(self.value).await };
        match done {
            Ok(v) => Ok((TaskResult::Single(self.next.clone()), v)),
            Err(Boom) => Err(CanoError::task_execution("boom")),
        }
    }

    async fn compensate(&self, _res: &Resources, value: u32) -> Result<(), CanoError> {
        Noop.undo(value).await.map_err(|Boom| CanoError::task_execution("boom"))?;
        self.log.compensated(self.name, value);
        Ok(())
    }
}

/// The 3-step workflow; `third_fails` makes C's forward run fail.
fn cano_workflow<L: Log + Clone>(third_fails: bool, log: L) -> Workflow<State> {
    let step = |name, value, next, fails| Step { name, value, next, fails, log: log.clone() };
    Workflow::bare()
        .register_with_compensation(State::A, step("a", 1, State::B, false))
        .register_with_compensation(State::B, step("b", 2, State::C, false))
        .register_with_compensation(State::C, step("c", 3, State::Done, third_fails))
        .add_exit_state(State::Done)
}

async fn cano_run(workflow: &Workflow<State>) -> Result<State, CanoError> {
    workflow.orchestrate(State::A, CancellationToken::disabled()).await
}

/// A clean rollback returns the original failure, wrapped with the state
/// it happened in: `C`, a `TaskExecution("boom")`.
fn is_clean_failure_at_c(err: &CanoError) -> bool {
    match err {
        CanoError::WithStateContext { state, source, .. } => {
            state == "C" && matches!(&**source, CanoError::TaskExecution(m) if m == "boom")
        }
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Checks of results: the timed code must compute the right thing.

fn check_results(rt: &tokio::runtime::Runtime, m: &M, report: &mut Report) {
    // Ours.
    let ok = rt.block_on(ours_fixed_ok3(m));
    report.check(
        matches!(&ok, Ok(c) if *c.value() == 3 && c.summary().completed_steps() == 3),
        "ours, fixed: commit returns 3 with 3 completed steps",
    );
    let ok = rt.block_on(lib_alloc!(m, Noop; "a" => step, "b" => step, "c" => step));
    report.check(
        matches!(&ok, Ok(c) if *c.value() == 3 && c.summary().completed_steps() == 3),
        "ours, manager.run: commit returns 3 with 3 completed steps",
    );
    // (failed step, steps rolled back, every rollback succeeded)
    macro_rules! rolled_back {
        ($outcome:expr) => {
            $outcome.err().map(|e| (e.cause().index(), e.summary().rolled_back_steps(), e.rollback_state().is_clean()))
        };
    }
    let fixed = rolled_back!(rt.block_on(ours_fixed_fail3(m)));
    report.check(
        fixed == Some((2, 2, true)),
        format!("ours, fixed: failure at step 2, 2 steps rolled back cleanly (got {fixed:?})"),
    );
    let run = rolled_back!(rt.block_on(lib_alloc!(m, Noop; "a" => step, "b" => step, "c" => fail)));
    report.check(
        run == Some((2, 2, true)),
        format!("ours, manager.run: failure at step 2, 2 steps rolled back cleanly (got {run:?})"),
    );
    // Our rollback order, with rollbacks that record.
    let log = VecLog::default();
    let ordered = rt.block_on(m.run("op", async |tx| {
        let mut acc = 0u32;
        for (name, fails) in [("a", false), ("b", false), ("c", true)] {
            let prev = acc;
            let log = log.clone();
            acc = tx
                .step(name)
                .execute(
                    move || async move { if fails { Noop.fail(prev + 1).await } else { Noop.step(prev + 1).await } },
                )
                .rollback(move |v| {
                    log.compensated(name, v);
                    Noop.undo(v)
                })
                .await?;
        }
        Ok::<_, StepError<Boom>>(acc)
    }));
    let order = log.take();
    report.check(
        ordered.is_err() && order == [("b", 2), ("a", 1)],
        format!("ours: rollbacks ran latest first, b(2) then a(1) (got {order:?})"),
    );
    report.check(matches!(rt.block_on(hand_ok3()), Ok(3)), "hand: commit returns 3");
    report.check(
        matches!(rt.block_on(hand_fail3()), Err(HandError { step: 2, rollback_failures: 0, .. })),
        "hand: failure at step 2, no rollback failed",
    );

    // cano: the timed workflows (no log) ...
    let commit = cano_workflow(false, NoLog);
    let failing = cano_workflow(true, NoLog);
    let done = rt.block_on(cano_run(&commit));
    report.check(matches!(done, Ok(State::Done)), format!("cano: commit reaches Done (got {done:?})"));
    let failed = rt.block_on(cano_run(&failing));
    report.check(
        failed.as_ref().is_err_and(is_clean_failure_at_c),
        format!("cano: failure is C's own error, rolled back cleanly (got {failed:?})"),
    );
    // ... and the same with a log: nothing compensated on commit, B then A
    // on failure, each with its own output back from the stack.
    let log = VecLog::default();
    let commit = cano_workflow(false, log.clone());
    let failing = cano_workflow(true, log.clone());
    for _ in 0..2 {
        let done = rt.block_on(cano_run(&commit));
        let order = log.take();
        report.check(
            matches!(done, Ok(State::Done)) && order.is_empty(),
            format!("cano (logged): commit reaches Done with no compensation (got {done:?}, {order:?})"),
        );
        let failed = rt.block_on(cano_run(&failing));
        let order = log.take();
        report.check(
            failed.as_ref().is_err_and(is_clean_failure_at_c) && order == [("b", 2), ("a", 1)],
            format!("cano (logged): compensations ran latest first, b(2) then a(1) (got {order:?}, {failed:?})"),
        );
    }
}

// ---------------------------------------------------------------------------
// Timing.

/// Times `iters` runs of `f()` inside one `block_on`, so only the work is
/// timed, not entering the runtime.
fn time<F: FnMut() -> Fut, Fut: Future>(rt: &tokio::runtime::Runtime, mode: Mode, mut f: F) -> Timing {
    measure(mode, |iters| {
        rt.block_on(async {
            let start = Stopwatch::start();
            for _ in 0..iters {
                black_box(f().await);
            }
            start.elapsed()
        })
    })
}

/// Allocations and bytes per run of `f()` (one run first, uncounted).
fn allocs_per_run<F: FnMut() -> Fut, Fut: Future>(rt: &tokio::runtime::Runtime, runs: u64, mut f: F) -> (f64, f64) {
    rt.block_on(async {
        black_box(f().await);
        start_counting();
        for _ in 0..runs {
            black_box(f().await);
        }
        let a = stop_counting();
        (a.count as f64 / runs as f64, a.bytes as f64 / runs as f64)
    })
}

/// The contenders of one case, in the order they are timed in each round.
const NAMES: [&str; 4] = ["hand", "ours, fixed", "ours, manager.run", "cano"];

/// Median of a few values.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The round medians of one contender: (wall, cpu) per round.
fn summary(rounds: &[Timing]) -> Timing {
    let wall = median(rounds.iter().map(|t| t.median_ns).collect());
    let cpu = median(rounds.iter().map(|t| t.cpu_median_ns).collect());
    let min = rounds.iter().map(|t| t.min_ns).fold(f64::INFINITY, f64::min);
    Timing { median_ns: wall, min_ns: min, cpu_median_ns: cpu, iters: rounds[0].iters, samples: rounds.len() }
}

fn spread(rounds: &[Timing], cpu: bool) -> (f64, f64) {
    let xs = rounds.iter().map(|t| if cpu { t.cpu_median_ns } else { t.median_ns });
    xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
}

fn case(report: &Report, title: &str, rounds: usize, mut timed: impl FnMut() -> [Timing; 4]) -> [Timing; 4] {
    report.section(title);
    let mut all: [Vec<Timing>; 4] = Default::default();
    for _ in 0..rounds {
        // One round: each contender measured once, in turn, so a change
        // in the machine's load falls on all of them.
        for (i, t) in timed().into_iter().enumerate() {
            all[i].push(t);
        }
    }
    let got = all.each_ref().map(|r| summary(r));
    for (name, r) in NAMES.iter().zip(&all) {
        let (wlo, whi) = spread(r, false);
        let (clo, chi) = spread(r, true);
        let s = summary(r);
        report.value_row(
            name,
            &format!(
                "{:>8.1} ns (cpu {:>8.1}) per transaction | rounds: wall {wlo:.1}-{whi:.1}, cpu {clo:.1}-{chi:.1}",
                s.median_ns, s.cpu_median_ns
            ),
        );
    }
    let [_, fixed, run, cano] = got;
    report.time_row("ours, fixed::<Undo, 3> vs cano", fixed, "cano", cano);
    report.time_row("ours, manager.run vs cano", run, "cano", cano);
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    report.value_row(
        "cano / ours (fixed | manager.run)",
        &format!(
            "wall {:.2}x | {:.2}x, cpu {:.2}x | {:.2}x",
            ratio(cano.median_ns, fixed.median_ns),
            ratio(cano.median_ns, run.median_ns),
            ratio(cano.cpu_median_ns, fixed.cpu_median_ns),
            ratio(cano.cpu_median_ns, run.cpu_median_ns),
        ),
    );
    got
}

fn main() {
    let mode = Mode::from_env();
    let rounds = if mode.is_smoke() { 1 } else { 5 };
    let mut report = Report::default();
    println!("# transaction-manager against cano ({mode:?})");
    println!("machine: {}", machine());
    println!(
        "cano 0.15.2, no features; tokio current-thread runtime; ours on TokioClock; median of {rounds} round(s), each \
         the median of its samples"
    );

    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("tokio runtime");
    let m = TransactionManager::new(TokioClock::new());
    check_results(&rt, &m, &mut report);

    let commit = cano_workflow(false, NoLog);
    let failing = cano_workflow(true, NoLog);

    case(&report, "commit: 3 no-op steps, each with an undo (per transaction)", rounds, || {
        [
            time(&rt, mode, hand_ok3),
            time(&rt, mode, || ours_fixed_ok3(&m)),
            time(&rt, mode, || lib_alloc!(&m, Noop; "a" => step, "b" => step, "c" => step)),
            time(&rt, mode, || cano_run(&commit)),
        ]
    });
    case(&report, "failure: 3 steps, the third fails, 2 undone latest first (per transaction)", rounds, || {
        [
            time(&rt, mode, hand_fail3),
            time(&rt, mode, || ours_fixed_fail3(&m)),
            time(&rt, mode, || lib_alloc!(&m, Noop; "a" => step, "b" => step, "c" => fail)),
            time(&rt, mode, || cano_run(&failing)),
        ]
    });

    report.section("heap allocations per transaction");
    let runs = if mode.is_smoke() { 10 } else { 10_000 };
    let rows = [
        ("commit: ours, fixed", allocs_per_run(&rt, runs, || ours_fixed_ok3(&m))),
        (
            "commit: ours, manager.run",
            allocs_per_run(&rt, runs, || lib_alloc!(&m, Noop; "a" => step, "b" => step, "c" => step)),
        ),
        ("commit: cano", allocs_per_run(&rt, runs, || cano_run(&commit))),
        ("failure: ours, fixed", allocs_per_run(&rt, runs, || ours_fixed_fail3(&m))),
        (
            "failure: ours, manager.run",
            allocs_per_run(&rt, runs, || lib_alloc!(&m, Noop; "a" => step, "b" => step, "c" => fail)),
        ),
        ("failure: cano", allocs_per_run(&rt, runs, || cano_run(&failing))),
    ];
    for (what, (count, bytes)) in rows {
        report.value_row(what, &format!("{count:.2} allocations, {bytes:.0} bytes"));
    }
    report.finish();
}
