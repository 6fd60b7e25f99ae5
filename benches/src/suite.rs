//! What transaction-manager costs, against the same work written by hand.
//!
//! `cargo bench -p transaction-manager-bench --bench suite` prints every
//! figure with its baseline and their ratio; `-- --smoke` runs the same code
//! with tiny counts and fails (exit 1) only on a wrong result or an
//! allocation where there must be none, never on timing. `-- --scale-1m`
//! adds the 1,000,000-transaction scale run.
//!
//! The core here has `alloc` (the facade brings in `std`); the code path
//! without it (`fixed::<U, N>()` storage, enum undo records) is measured
//! here too, and the `no_alloc` bench checks it on a core built without
//! `alloc`.

// `Work` spells out `Send + 'static` on its futures, so the impls keep the
// `-> impl Future` form.
#![allow(clippy::manual_async_fn)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::mem::size_of_val;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use transaction_manager::{
    Clock, ManualClock, NoRollback, Outcome, RetryPolicy, SmolClock, StepError, StepRecord, Summary, TokioClock,
    TransactionManager,
    group::member,
    rollback::BoxError,
    storage::{Fixed, Unbounded},
    time::ManualSleep,
};
use transaction_manager_bench::{
    CountingAlloc, Mode, Report, Stopwatch, Timing, core_has_alloc, machine, measure, proc_status_kib, start_counting,
    stop_counting,
};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------
// The work: see `common.rs`; here the yields of the runtimes.

#[macro_use]
mod common;
use common::{Boom, HandError, Noop, Undo, Work};

/// A realistic cheap step: one yield to the executor.
#[derive(Clone, Copy)]
struct TokioYield;

impl Work for TokioYield {
    fn step(self, v: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static {
        async move {
            tokio::task::yield_now().await;
            Ok(black_box(v))
        }
    }
    fn fail(self, v: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static {
        async move {
            tokio::task::yield_now().await;
            black_box(v);
            Err(Boom)
        }
    }
    fn flaky(self, attempt: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static {
        async move {
            tokio::task::yield_now().await;
            if black_box(attempt) < 3 { Err(Boom) } else { Ok(attempt) }
        }
    }
    fn undo(self, v: u32) -> impl Future<Output = Result<(), Boom>> + Send + 'static {
        async move {
            tokio::task::yield_now().await;
            black_box(v);
            Ok(())
        }
    }
}

/// One yield, for executors other than tokio (`futures_lite::future::yield_now`).
#[derive(Clone, Copy)]
struct LiteYield;

impl Work for LiteYield {
    fn step(self, v: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static {
        async move {
            futures_lite::future::yield_now().await;
            Ok(black_box(v))
        }
    }
    fn fail(self, v: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static {
        async move {
            futures_lite::future::yield_now().await;
            black_box(v);
            Err(Boom)
        }
    }
    fn flaky(self, attempt: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static {
        async move {
            futures_lite::future::yield_now().await;
            if black_box(attempt) < 3 { Err(Boom) } else { Ok(attempt) }
        }
    }
    fn undo(self, v: u32) -> impl Future<Output = Result<(), Boom>> + Send + 'static {
        async move {
            futures_lite::future::yield_now().await;
            black_box(v);
            Ok(())
        }
    }
}

type FixedOutcome<const N: usize> = Outcome<u32, StepError<Boom>, Boom, Fixed<N>>;
type AllocOutcome = Outcome<u32, StepError<Boom>, BoxError, Unbounded>;

fn lib_fixed_ok3<C: Clock, W: Work>(m: &TransactionManager<C>, w: W) -> impl Future<Output = FixedOutcome<3>> + '_ {
    lib_fixed!(m, w, 3; "a" => step, "b" => step, "c" => step)
}

/// Two steps as one parallel group: the same work as
/// `lib_fixed!(m, w, 2; "a" => step, "b" => step)`, at the same time.
fn lib_group2<C: Clock, W: Work>(m: &TransactionManager<C>, w: W) -> impl Future<Output = FixedOutcome<2>> + '_ {
    m.transaction("op").fixed::<Undo<W>, 2>().run(async move |tx| {
        let (a, b) = tx
            .parallel((
                member("a").execute(move || w.step(1)).undo(move |&v| Undo::Release(w, v)),
                member("b").execute(move || w.step(2)).undo(move |&v| Undo::Release(w, v)),
            ))
            .await?;
        Ok::<_, StepError<Boom>>(a + b)
    })
}

/// One step as a group of one: what a plain step would cost if the group
/// engine drove it (the engine drives both with the same transitions, a
/// plain step awaiting them in line).
fn lib_group1<C: Clock, W: Work>(m: &TransactionManager<C>, w: W) -> impl Future<Output = FixedOutcome<1>> + '_ {
    m.transaction("op").fixed::<Undo<W>, 1>().run(async move |tx| {
        let (a,) = tx.parallel((member("a").execute(move || w.step(1)).undo(move |&v| Undo::Release(w, v)),)).await?;
        Ok::<_, StepError<Boom>>(a)
    })
}

fn lib_fixed_fail3<C: Clock, W: Work>(m: &TransactionManager<C>, w: W) -> impl Future<Output = FixedOutcome<3>> + '_ {
    lib_fixed!(m, w, 3; "a" => step, "b" => step, "c" => fail)
}

fn lib_alloc_ok3<C: Clock, W: Work>(m: &TransactionManager<C>, w: W) -> impl Future<Output = AllocOutcome> + '_ {
    lib_alloc!(m, w; "a" => step, "b" => step, "c" => step)
}

fn lib_alloc_fail3<C: Clock, W: Work>(m: &TransactionManager<C>, w: W) -> impl Future<Output = AllocOutcome> + '_ {
    lib_alloc!(m, w; "a" => step, "b" => step, "c" => fail)
}

fn hand_ok3<W: Work>(w: W) -> impl Future<Output = Result<u32, HandError>> {
    hand!(w, 3; "a" => step, "b" => step, "c" => step)
}

fn hand_fail3<W: Work>(w: W) -> impl Future<Output = Result<u32, HandError>> {
    hand!(w, 3; "a" => step, "b" => step, "c" => fail)
}

const RETRY: RetryPolicy = RetryPolicy::new().with_max_retries(2).with_initial_interval(Duration::ZERO);

/// `Work::flaky` fails on attempts 1 and 2: starting its count at
/// `2 - failures` makes it fail `failures` times (0, 1 or 2), then succeed.
/// A run-time number, so the runs with and without retries are the same
/// type and the same code (pass it through `black_box`).
fn first_attempt(failures: u32) -> u32 {
    2u32.saturating_sub(failures)
}

/// One step failing `failures` times then succeeding, zero backoff, in a
/// 1-step transaction.
fn lib_retry<C: Clock, W: Work>(
    m: &TransactionManager<C>,
    w: W,
    failures: u32,
) -> impl Future<Output = Outcome<u32, StepError<Boom>, Infallible, Fixed<1>>> + '_ {
    m.transaction("op").fixed::<NoRollback, 1>().run(async move |tx| {
        let mut calls = first_attempt(failures);
        tx.step("flaky")
            .retry(RETRY)
            .run(|| {
                calls += 1;
                w.flaky(calls)
            })
            .await
    })
}

/// The same retries with backon: exponential, zero delay, two retries.
async fn backon_retry<W: Work, S: backon::Sleeper>(w: W, sleeper: S, failures: u32) -> Result<u32, Boom> {
    let mut calls = first_attempt(failures);
    (|| {
        calls += 1;
        w.flaky(calls)
    })
    .retry(ExponentialBuilder::default().with_min_delay(Duration::ZERO).with_max_times(2))
    .sleep(sleeper)
    .await
}

/// backon with a sleeper that returns at once for a zero delay, as the
/// library and the hand loop do (tokio's `sleep(ZERO)` waits for the next
/// timer tick, about 1 ms).
async fn backon_retry_skip_zero<W: Work, S: backon::Sleeper + Copy>(
    w: W,
    sleeper: S,
    failures: u32,
) -> Result<u32, Boom> {
    backon_retry(
        w,
        move |d: Duration| {
            let sleep = (!d.is_zero()).then(|| sleeper.sleep(d));
            async move {
                if let Some(sleep) = sleep {
                    sleep.await;
                }
            }
        },
        failures,
    )
    .await
}

/// The same retries by hand: a loop, the delay `interval × 2ⁿ` slept only
/// when it is not zero (as the library does).
async fn hand_retry<C: Clock, W: Work>(clock: &C, w: W, failures: u32) -> Result<u32, Boom> {
    let interval = RETRY.initial_interval();
    let mut calls = first_attempt(failures);
    let mut retry = 0u32;
    loop {
        calls += 1;
        match w.flaky(calls).await {
            Ok(v) => return Ok(v),
            Err(e) if retry >= RETRY.max_retries() => return Err(e),
            Err(_) => {
                let delay = interval.saturating_mul(1 << retry.min(31));
                if !delay.is_zero() {
                    clock.sleep(delay).await;
                }
                retry += 1;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Runtimes: each runs a future to completion and gives a clock, a cheap
// step and a backon sleeper.

trait Runtime {
    type Clock: Clock + Copy;
    type Yield: Work;
    type Sleeper: backon::Sleeper + Copy;
    const NAME: &'static str;
    fn clock(&self) -> Self::Clock;
    fn yield_work(&self) -> Self::Yield;
    fn sleeper(&self) -> Self::Sleeper;
    fn block_on<F: Future>(&self, f: F) -> F::Output;
}

/// `ManualClock` (virtual time), leaked so backon's `'static` sleeper can
/// hold it.
struct Manual(&'static ManualClock);

#[derive(Clone, Copy)]
struct ManualSleeper(&'static ManualClock);

impl backon::Sleeper for ManualSleeper {
    type Sleep = ManualSleep<'static>;
    fn sleep(&self, d: Duration) -> ManualSleep<'static> {
        self.0.sleep(d)
    }
}

impl Runtime for Manual {
    type Clock = &'static ManualClock;
    type Yield = LiteYield;
    type Sleeper = ManualSleeper;
    const NAME: &'static str = "ManualClock";
    fn clock(&self) -> &'static ManualClock {
        self.0
    }
    fn yield_work(&self) -> LiteYield {
        LiteYield
    }
    fn sleeper(&self) -> ManualSleeper {
        ManualSleeper(self.0)
    }
    /// `ManualClock::block_on` without its stall limit: that limit counts
    /// every pending poll while no timer waits, progress or not, so a batch
    /// of more than 100,000 yields would panic.
    /// Otherwise the same: jump to the next deadline whenever one waits.
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        loop {
            if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            if let Some(deadline) = self.0.next_deadline() {
                self.0.advance_to(deadline);
            }
        }
    }
}

/// tokio, current-thread runtime with the timer, `TokioClock`.
struct Tokio(tokio::runtime::Runtime);

impl Runtime for Tokio {
    type Clock = TokioClock;
    type Yield = TokioYield;
    type Sleeper = backon::TokioSleeper;
    const NAME: &'static str = "tokio";
    fn clock(&self) -> TokioClock {
        TokioClock::new()
    }
    fn yield_work(&self) -> TokioYield {
        TokioYield
    }
    fn sleeper(&self) -> backon::TokioSleeper {
        backon::TokioSleeper
    }
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.0.block_on(f)
    }
}

/// smol: `async_io::block_on` (what `smol::block_on` is), `SmolClock`.
struct Smol;

#[derive(Clone, Copy)]
struct SmolSleeper;

impl backon::Sleeper for SmolSleeper {
    type Sleep = async_io::Timer;
    fn sleep(&self, d: Duration) -> async_io::Timer {
        async_io::Timer::after(d)
    }
}

impl Runtime for Smol {
    type Clock = SmolClock;
    type Yield = LiteYield;
    type Sleeper = SmolSleeper;
    const NAME: &'static str = "smol";
    fn clock(&self) -> SmolClock {
        SmolClock::new()
    }
    fn yield_work(&self) -> LiteYield {
        LiteYield
    }
    fn sleeper(&self) -> SmolSleeper {
        SmolSleeper
    }
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        async_io::block_on(f)
    }
}

/// Times `iters` runs of `f()` inside one `block_on`, so only the work is
/// timed, not entering the executor.
fn time<R: Runtime, F: FnMut() -> Fut, Fut: Future>(rt: &R, mode: Mode, mut f: F) -> Timing {
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

/// Allocations per run of `f()`, over `runs` runs inside one `block_on`
/// (after one run outside the count, so one-time set-up is not counted).
fn allocs_per_run<R: Runtime, F: FnMut() -> Fut, Fut: Future>(rt: &R, runs: u64, mut f: F) -> (f64, f64) {
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

// ---------------------------------------------------------------------------
// Checks of results: the timed code must compute the right thing.

fn check_results<R: Runtime>(rt: &R, report: &mut Report) {
    let m = TransactionManager::new(rt.clock());
    let name = R::NAME;
    let w = rt.yield_work();

    let ok = rt.block_on(lib_fixed_ok3(&m, Noop));
    report.check(
        matches!(&ok, Ok(c) if *c.value() == 3 && c.summary().completed_steps() == 3),
        format!("{name}: fixed 3-step success returns 3 with 3 completed steps"),
    );
    let ok = rt.block_on(lib_fixed_ok3(&m, w));
    report
        .check(matches!(&ok, Ok(c) if *c.value() == 3), format!("{name}: fixed 3-step success with a yield returns 3"));
    let ok = rt.block_on(lib_alloc_ok3(&m, w));
    report.check(
        matches!(&ok, Ok(c) if *c.value() == 3 && c.summary().completed_steps() == 3),
        format!("{name}: alloc 3-step success returns 3"),
    );
    for (what, err) in [
        (
            "fixed",
            rt.block_on(lib_fixed_fail3(&m, Noop))
                .err()
                .map(|e| (e.cause().index(), e.summary().rolled_back_steps(), e.rollback_state().is_clean())),
        ),
        (
            "alloc",
            rt.block_on(lib_alloc_fail3(&m, Noop))
                .err()
                .map(|e| (e.cause().index(), e.summary().rolled_back_steps(), e.rollback_state().is_clean())),
        ),
    ] {
        report.check(
            err == Some((2, 2, true)),
            format!("{name}: {what} failure path fails at step 2 and rolls back 2 steps cleanly (got {err:?})"),
        );
    }
    for failures in [0, 2] {
        let retried = rt.block_on(lib_retry(&m, Noop, failures));
        report.check(
            matches!(&retried, Ok(c) if *c.value() == 3 && c.summary().steps()[0].attempts() == failures + 1),
            format!("{name}: retry path with {failures} failures succeeds on attempt {}", failures + 1),
        );
        report.check(
            rt.block_on(backon_retry(Noop, rt.sleeper(), failures)) == Ok(3),
            format!("{name}: backon retry with {failures} failures succeeds"),
        );
        report.check(
            rt.block_on(backon_retry_skip_zero(Noop, rt.sleeper(), failures)) == Ok(3),
            format!("{name}: backon (zero delay skipped) retry with {failures} failures succeeds"),
        );
        report.check(
            rt.block_on(hand_retry(&rt.clock(), Noop, failures)) == Ok(3),
            format!("{name}: hand retry with {failures} failures succeeds"),
        );
    }
    report.check(matches!(rt.block_on(hand_ok3(Noop)), Ok(3)), format!("{name}: hand 3-step success returns 3"));
    report.check(
        matches!(rt.block_on(hand_fail3(w)), Err(HandError { step: 2, rollback_failures: 0, .. })),
        format!("{name}: hand failure path fails at step 2"),
    );
}

// ---------------------------------------------------------------------------
// Figures 1-3: time.

fn figures_time<R: Runtime>(rt: &R, mode: Mode, report: &mut Report) {
    let m = TransactionManager::new(rt.clock());
    let name = R::NAME;
    let y = rt.yield_work();
    report.section(&format!("{name}: success path, 3 steps (median ns per transaction)"));
    let hand = time(rt, mode, || hand_ok3(Noop));
    let fixed = time(rt, mode, || lib_fixed_ok3(&m, Noop));
    let alloc = time(rt, mode, || lib_alloc_ok3(&m, Noop));
    report.time_row_per("no-op steps, fixed::<Undo, 3> (no alloc)", fixed, "hand", hand, 3);
    report.time_row_per("no-op steps, manager.run (closures)", alloc, "hand", hand, 3);
    let hand_y = time(rt, mode, || hand_ok3(y));
    let fixed_y = time(rt, mode, || lib_fixed_ok3(&m, y));
    let alloc_y = time(rt, mode, || lib_alloc_ok3(&m, y));
    report.time_row_per("1 yield per step, fixed (no alloc)", fixed_y, "hand", hand_y, 3);
    report.time_row_per("1 yield per step, manager.run", alloc_y, "hand", hand_y, 3);

    // Per step and per capacity slot, separately: a fixed capacity of 8
    // with 1 and with 8 steps gives the cost of a step; 1 step with a
    // capacity of 1 and of 8 gives the cost of a slot of capacity, used or
    // not. The hand-written code keeps an 8-value array in both.
    let l1c1 = time(rt, mode, || lib_fixed!(&m, Noop, 1; "a" => step));
    let l1c8 = time(rt, mode, || lib_fixed!(&m, Noop, 8; "a" => step));
    let l8c8 = time(rt, mode, || {
        lib_fixed!(&m, Noop, 8; "a" => step, "b" => step, "c" => step, "d" => step,
            "e" => step, "f" => step, "g" => step, "h" => step)
    });
    let h1 = time(rt, mode, || hand!(Noop, 8; "a" => step));
    let h8 = time(rt, mode, || {
        hand!(Noop, 8; "a" => step, "b" => step, "c" => step, "d" => step,
            "e" => step, "f" => step, "g" => step, "h" => step)
    });
    report.time_row("no-op, 1 step, fixed::<Undo, 1>", l1c1, "hand", h1);
    report.time_row("no-op, 1 step, fixed::<Undo, 8>", l1c8, "hand", h1);
    report.time_row_per("no-op, 8 steps, fixed::<Undo, 8>", l8c8, "hand", h8, 8);
    let step_l = per(l8c8, l1c8, 7.0);
    let step_h = per(h8, h1, 7.0);
    report.value_row("cost of one more step (8 vs 1 step, capacity 8)", &step_row(step_l, step_h));
    // The same with per-step times off (`with_step_times(false)`): two
    // clock readings fewer per step.
    let quiet = TransactionManager::new(rt.clock()).with_step_times(false);
    let q1c8 = time(rt, mode, || lib_fixed!(&quiet, Noop, 8; "a" => step));
    let q8c8 = time(rt, mode, || {
        lib_fixed!(&quiet, Noop, 8; "a" => step, "b" => step, "c" => step, "d" => step,
            "e" => step, "f" => step, "g" => step, "h" => step)
    });
    let step_q = per(q8c8, q1c8, 7.0);
    report.value_row("cost of one more step, step times off", &step_row(step_q, step_h));
    let slot = per(l1c8, l1c1, 7.0);
    report.value_row(
        "cost of one more capacity slot (1 step, cap 8 vs 1)",
        &format!("library {:.1} ns (cpu {:.1})", slot.0, slot.1),
    );
    report.value_row(
        "fixed cost per transaction (1 step, cap 1, minus a step)",
        &format!(
            "library {:.1} ns (cpu {:.1}) | hand {:.1} ns (cpu {:.1})",
            l1c1.median_ns - step_l.0,
            l1c1.cpu_median_ns - step_l.1,
            h1.median_ns - step_h.0,
            h1.cpu_median_ns - step_h.1
        ),
    );

    // The engine reads the clock twice per step (start, end) and twice
    // per transaction: part of the per-step cost on a real clock.
    let clock = rt.clock();
    let now = time(rt, mode, || async { black_box(clock.now()) });
    report.value_row("one Clock::now() (the engine makes 2 per step)", &format!("{:.1} ns", now.median_ns));

    report.section(&format!("{name}: failure path, 3 steps, the third fails, 2 rollbacks"));
    let hand = time(rt, mode, || hand_fail3(Noop));
    let fixed = time(rt, mode, || lib_fixed_fail3(&m, Noop));
    let alloc = time(rt, mode, || lib_alloc_fail3(&m, Noop));
    report.time_row("no-op steps, fixed (enum undo)", fixed, "hand", hand);
    report.time_row("no-op steps, manager.run (closures)", alloc, "hand", hand);
    let hand_y = time(rt, mode, || hand_fail3(y));
    let fixed_y = time(rt, mode, || lib_fixed_fail3(&m, y));
    report.time_row("1 yield per step/rollback, fixed", fixed_y, "hand", hand_y);

    report.section(&format!("{name}: retry path, a 1-step transaction, zero backoff: 2 failures vs none"));
    // The same code with 2 failures and with none (a run-time count): the
    // difference is what the two retries cost, for each implementation.
    let clock = rt.clock();
    let lib2 = time(rt, mode, || lib_retry(&m, Noop, black_box(2)));
    let lib0 = time(rt, mode, || lib_retry(&m, Noop, black_box(0)));
    let backon2 = time(rt, mode, || backon_retry(Noop, rt.sleeper(), black_box(2)));
    let backon0 = time(rt, mode, || backon_retry(Noop, rt.sleeper(), black_box(0)));
    let skip2 = time(rt, mode, || backon_retry_skip_zero(Noop, rt.sleeper(), black_box(2)));
    let skip0 = time(rt, mode, || backon_retry_skip_zero(Noop, rt.sleeper(), black_box(0)));
    let hand2 = time(rt, mode, || hand_retry(&clock, Noop, black_box(2)));
    let hand0 = time(rt, mode, || hand_retry(&clock, Noop, black_box(0)));
    report.time_row("2 failures: library (whole 1-step tx)", lib2, "backon, 0 skipped", skip2);
    report.time_row("2 failures: library (whole 1-step tx)", lib2, "backon", backon2);
    report.time_row("2 failures: library (whole 1-step tx)", lib2, "hand loop", hand2);
    report.time_row("no failure: library (same tx)", lib0, "backon, 0 skipped", skip0);
    report.time_row("no failure: library (same tx)", lib0, "backon", backon0);
    report.time_row("no failure: library (same tx)", lib0, "hand loop", hand0);
    let alone = |two: Timing, none: Timing| (two.median_ns - none.median_ns, two.cpu_median_ns - none.cpu_median_ns);
    let (lib_r, backon_r, skip_r, hand_r) =
        (alone(lib2, lib0), alone(backon2, backon0), alone(skip2, skip0), alone(hand2, hand0));
    report.value_row(
        "2 retries alone (2 failures minus none)",
        &format!(
            "library {:.1} ns (cpu {:.1}) | backon {:.1} ns (cpu {:.1}) | backon, 0 skipped {:.1} ns (cpu {:.1}) | hand {:.1} ns (cpu {:.1})",
            lib_r.0, lib_r.1, backon_r.0, backon_r.1, skip_r.0, skip_r.1, hand_r.0, hand_r.1
        ),
    );
    let ratio = |a: f64, b: f64| a / b.max(f64::MIN_POSITIVE);
    let verdict = |r: f64| if r <= 1.0 { "met" } else { "NOT met" };
    report.value_row(
        "target: retries no slower than backon, 0 skipped",
        &format!(
            "retries alone vs retries alone: {:.2}x (cpu {:.2}x): {} | library retries alone vs backon's whole call: {:.2}x (cpu {:.2}x)",
            ratio(lib_r.0, skip_r.0),
            ratio(lib_r.1, skip_r.1),
            verdict(ratio(lib_r.1, skip_r.1)),
            ratio(lib_r.0, skip2.median_ns),
            ratio(lib_r.1, skip2.cpu_median_ns),
        ),
    );
}

/// Cost per unit between two timings `n` units apart: (wall, cpu) in ns.
fn per(more: Timing, fewer: Timing, n: f64) -> (f64, f64) {
    ((more.median_ns - fewer.median_ns) / n, (more.cpu_median_ns - fewer.cpu_median_ns) / n)
}

/// A per-step cost, library against hand-written, wall and CPU (from `per`).
fn step_row(library: (f64, f64), hand: (f64, f64)) -> String {
    format!(
        "library {:.1} ns (cpu {:.1}) | hand {:.1} ns (cpu {:.1}) | diff {:+.1} ns (cpu {:+.1}) [target <= 50]",
        library.0,
        library.1,
        hand.0,
        hand.1,
        library.0 - hand.0,
        library.1 - hand.1
    )
}

// ---------------------------------------------------------------------------
// Figure 4: heap allocations per transaction.

fn figure_allocs<R: Runtime>(rt: &R, mode: Mode, report: &mut Report) {
    let m = TransactionManager::new(rt.clock());
    let name = R::NAME;
    let runs = if mode.is_smoke() { 10 } else { 10_000 };
    let clock = rt.clock();
    report.section(&format!("{name}: heap allocations per transaction"));
    let rows: [(&str, (f64, f64), bool); 9] = [
        ("fixed, success (3 steps)", allocs_per_run(rt, runs, || lib_fixed_ok3(&m, Noop)), true),
        ("fixed, failure (2 rollbacks)", allocs_per_run(rt, runs, || lib_fixed_fail3(&m, Noop)), false),
        ("fixed, retry (2 failed attempts)", allocs_per_run(rt, runs, || lib_retry(&m, Noop, 2)), false),
        ("manager.run, success (3 steps)", allocs_per_run(rt, runs, || lib_alloc_ok3(&m, Noop)), false),
        ("manager.run, failure (2 rollbacks)", allocs_per_run(rt, runs, || lib_alloc_fail3(&m, Noop)), false),
        (
            "hand-written, success and failure",
            allocs_per_run(rt, runs, || async { (hand_ok3(Noop).await.is_ok(), hand_fail3(Noop).await.is_ok()) }),
            true,
        ),
        ("backon retry", allocs_per_run(rt, runs, || backon_retry(Noop, rt.sleeper(), 2)), false),
        ("backon retry, 0 skipped", allocs_per_run(rt, runs, || backon_retry_skip_zero(Noop, rt.sleeper(), 2)), false),
        ("hand retry loop", allocs_per_run(rt, runs, || hand_retry(&clock, Noop, 2)), true),
    ];
    for (what, (count, bytes), must_be_zero) in rows {
        report.value_row(what, &format!("{count:.2} allocations, {bytes:.0} bytes"));
        if must_be_zero {
            report.check(count == 0.0, format!("{name}: {what} must not allocate (made {count} per transaction)"));
        }
    }
    report.note(
        "(fixed failure/retry allocate only because this build's core has `alloc`: each failed \
         attempt's error text is a String; the no_alloc bench shows 0 on a core without `alloc`)",
    );
}

// ---------------------------------------------------------------------------
// Figure 6: sizes.

fn figure_sizes<R: Runtime>(rt: &R, report: &mut Report) {
    let m = TransactionManager::new(rt.clock());
    let name = R::NAME;
    report.section(&format!("{name}: size_of the transaction future (bytes)"));
    let f1 = size_of_val(&lib_fixed!(&m, Noop, 1; "a" => step));
    let f3 = size_of_val(&lib_fixed_ok3(&m, Noop));
    let f8 = size_of_val(&lib_fixed!(&m, Noop, 8; "a" => step, "b" => step, "c" => step,
        "d" => step, "e" => step, "f" => step, "g" => step, "h" => step));
    let a1 = size_of_val(&lib_alloc!(&m, Noop; "a" => step));
    let a3 = size_of_val(&lib_alloc_ok3(&m, Noop));
    let a8 = size_of_val(&lib_alloc!(&m, Noop; "a" => step, "b" => step, "c" => step,
        "d" => step, "e" => step, "f" => step, "g" => step, "h" => step));
    let h1 = size_of_val(&hand!(Noop, 1; "a" => step));
    let h3 = size_of_val(&hand_ok3(Noop));
    let h8 = size_of_val(&hand!(Noop, 8; "a" => step, "b" => step, "c" => step,
        "d" => step, "e" => step, "f" => step, "g" => step, "h" => step));
    report.value_row("fixed::<Undo, N> with N = steps: 1 / 3 / 8", &format!("{f1} / {f3} / {f8}"));
    report.value_row("manager.run (heap lists): 1 / 3 / 8", &format!("{a1} / {a3} / {a8}"));
    report.value_row("hand-written: 1 / 3 / 8", &format!("{h1} / {h3} / {h8}"));
    // A parallel group of two against the same two steps one after the
    // other (both `fixed::<Undo, 2>`).
    let seq2 = size_of_val(&lib_fixed!(&m, Noop, 2; "a" => step, "b" => step));
    let group2 = size_of_val(&lib_group2(&m, Noop));
    report.value_row(
        "2-member group / 2 sequential steps (fixed, capacity 2)",
        &format!("{group2} / {seq2} = {:.2}x", group2 as f64 / seq2 as f64),
    );
    let group1 = size_of_val(&lib_group1(&m, Noop));
    report.value_row(
        "1-member group / 1 step (fixed, capacity 1)",
        &format!("{group1} / {f1} = {:.2}x", group1 as f64 / f1 as f64),
    );
    // Bytes per unit of capacity: the same 1-step body, capacity 1 vs 9;
    // bytes per step: capacity 8, 1 step vs 8 steps.
    let c1 = size_of_val(&lib_fixed!(&m, Noop, 1; "a" => step));
    let c9 = size_of_val(&lib_fixed!(&m, Noop, 9; "a" => step));
    let per_slot = (c9 - c1) / 8;
    report.value_row("future bytes per step of capacity (cap 9 vs 1)", &format!("{per_slot}"));
    let s1 = size_of_val(&lib_fixed!(&m, Noop, 8; "a" => step));
    let per_step = (f8 as f64 - s1 as f64) / 7.0;
    report.value_row("future bytes per step (8 vs 1 step, capacity 8)", &format!("{per_step:.1}"));
    report.check(f1 > 0 && h1 > 0, "sizes are measured");
}

fn undo_state_sizes(report: &Report) {
    // The values a transaction returns, which its layers move (memcpy).
    report.value_row(
        "size_of Summary<Fixed<3>> / Outcome (fixed, 3) / Outcome (alloc)",
        &format!(
            "{} / {} / {}",
            size_of::<Summary<Fixed<3>>>(),
            size_of::<FixedOutcome<3>>(),
            size_of::<AllocOutcome>()
        ),
    );
    let record = size_of::<StepRecord>();
    let undo = size_of::<Undo<Noop>>();
    let policy = size_of::<RetryPolicy>();
    // UndoRecord<U> = { step: usize, undo: U, retry: RetryPolicy, timeout: a packed 12-byte Option<Duration> }.
    let undo_record = (8 + undo + policy + 12).next_multiple_of(8);
    report.value_row("size_of StepRecord (this build: alloc)", &format!("{record}"));
    report.value_row(
        "undo record per step (Undo enum)",
        &format!("~{undo_record} (step index 8 + Undo {undo} + RetryPolicy {policy} + timeout 12)"),
    );
}

// ---------------------------------------------------------------------------
// Figure 5: scale, in child processes.

/// What one scale child runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ScaleKind {
    /// Tasks that do the same sleep, nothing else.
    Bare,
    /// `fixed::<Undo, 3>()`, enum undo records.
    Fixed,
    /// `manager.run`, closure rollbacks.
    Alloc,
}

impl ScaleKind {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "bare" => Some(Self::Bare),
            "fixed" => Some(Self::Fixed),
            "alloc" => Some(Self::Alloc),
            _ => None,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Fixed => "fixed",
            Self::Alloc => "alloc",
        }
    }
}

/// Sleeps in step 2: until `deadline` (memory phase: every transaction is
/// in flight at once) or for 1 ms (wall phase).
#[derive(Clone, Copy)]
enum Nap {
    Until(tokio::time::Instant),
    For(Duration),
}

impl Nap {
    async fn nap(self) {
        match self {
            Nap::Until(t) => tokio::time::sleep_until(t).await,
            Nap::For(d) => tokio::time::sleep(d).await,
        }
    }
}

static REACHED: AtomicUsize = AtomicUsize::new(0);

/// Step 2's work: count that this task reached its sleep, then sleep.
async fn sleep_step(nap: Nap) -> Result<u32, Boom> {
    REACHED.fetch_add(1, Ordering::Relaxed);
    nap.nap().await;
    Ok(2)
}

/// A bare task: the same sleep, nothing else.
async fn bare_task(nap: Nap) -> u32 {
    sleep_step(nap).await.map_or(0, |v| v + 1)
}

async fn fixed_task(m: &'static TransactionManager<TokioClock>, nap: Nap) -> u32 {
    m.transaction("op")
        .fixed::<Undo<Noop>, 3>()
        .run(async move |tx| {
            let a = tx.step("a").execute(|| Noop.step(1)).undo(|&v| Undo::Release(Noop, v)).await?;
            let b = tx.step("sleep").execute(move || sleep_step(nap)).undo(|&v| Undo::Release(Noop, v)).await?;
            tx.step("c").execute(move || Noop.step(a + b)).undo(|&v| Undo::Release(Noop, v)).await
        })
        .await
        .map_or(0, |c| c.into_value())
}

async fn alloc_task(m: &'static TransactionManager<TokioClock>, nap: Nap) -> u32 {
    m.run("op", async move |tx| {
        let a = tx.step("a").execute(|| Noop.step(1)).rollback(move |v| Noop.undo(v)).await?;
        let b = tx.step("sleep").execute(move || sleep_step(nap)).rollback(move |v| Noop.undo(v)).await?;
        tx.step("c").execute(move || Noop.step(a + b)).rollback(move |v| Noop.undo(v)).await
    })
    .await
    .map_or(0, |c| c.into_value())
}

/// Spawns `n` tasks of `kind`, each its own future type (a `match` inside
/// one future would give every kind the largest kind's size).
fn spawn_all(
    kind: ScaleKind,
    m: &'static TransactionManager<TokioClock>,
    nap: Nap,
    n: usize,
) -> Vec<tokio::task::JoinHandle<u32>> {
    match kind {
        ScaleKind::Bare => (0..n).map(|_| tokio::spawn(bare_task(nap))).collect(),
        ScaleKind::Fixed => (0..n).map(|_| tokio::spawn(fixed_task(m, nap))).collect(),
        ScaleKind::Alloc => (0..n).map(|_| tokio::spawn(alloc_task(m, nap))).collect(),
    }
}

/// Bytes of the future each kind spawns.
fn task_future_size(kind: ScaleKind, m: &'static TransactionManager<TokioClock>) -> usize {
    let nap = Nap::For(Duration::ZERO);
    match kind {
        ScaleKind::Bare => size_of_val(&bare_task(nap)),
        ScaleKind::Fixed => size_of_val(&fixed_task(m, nap)),
        ScaleKind::Alloc => size_of_val(&alloc_task(m, nap)),
    }
}

/// One scale run, in this (child) process; prints one `SCALE` line.
fn scale_child(kind: ScaleKind, n: usize) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().expect("tokio runtime");
    let m: &'static TransactionManager<TokioClock> = Box::leak(Box::new(TransactionManager::new(TokioClock::new())));
    let (base, inflight, all_in_flight, wall) = rt.block_on(async {
        // Warm the runtime and the allocator a little, then read the base.
        tokio::spawn(async {}).await.expect("task");
        let base = proc_status_kib("VmRSS").unwrap_or(0);

        // Memory phase: every task sleeps until one deadline after the
        // last spawn, so all N are in flight at once; RSS is read then.
        REACHED.store(0, Ordering::SeqCst);
        let margin = Duration::from_secs(1) + Duration::from_micros(30) * n as u32;
        let deadline = tokio::time::Instant::now() + margin;
        let handles = spawn_all(kind, m, Nap::Until(deadline), n);
        while REACHED.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let all_in_flight = tokio::time::Instant::now() < deadline;
        let inflight = proc_status_kib("VmRSS").unwrap_or(0);
        let mut sum = 0u64;
        for h in handles {
            sum += u64::from(h.await.expect("task"));
        }
        assert_eq!(sum, 3 * n as u64, "every transaction returns 3");

        // Wall phase: spawn N, each sleeping 1 ms in step 2, wait for all.
        let start = Instant::now();
        let handles = spawn_all(kind, m, Nap::For(Duration::from_millis(1)), n);
        let mut sum = 0u64;
        for h in handles {
            sum += u64::from(h.await.expect("task"));
        }
        assert_eq!(sum, 3 * n as u64, "every transaction returns 3");
        (base, inflight, all_in_flight, start.elapsed())
    });
    let hwm = proc_status_kib("VmHWM").unwrap_or(0);
    println!(
        "SCALE {} {n} {base} {inflight} {hwm} {} {} {}",
        kind.as_str(),
        wall.as_micros(),
        u8::from(all_in_flight),
        task_future_size(kind, m)
    );
}

struct ScaleResult {
    base_kib: u64,
    inflight_kib: u64,
    hwm_kib: u64,
    wall: Duration,
    all_in_flight: bool,
    future_bytes: usize,
}

fn run_scale_child(kind: ScaleKind, n: usize) -> Option<ScaleResult> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new(exe).args(["--scale-child", kind.as_str(), &n.to_string()]).output().ok()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("SCALE "))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(ScaleResult {
        base_kib: f.get(3)?.parse().ok()?,
        inflight_kib: f.get(4)?.parse().ok()?,
        hwm_kib: f.get(5)?.parse().ok()?,
        wall: Duration::from_micros(f.get(6)?.parse().ok()?),
        all_in_flight: *f.get(7)? == "1",
        future_bytes: f.get(8)?.parse().ok()?,
    })
}

fn figure_scale(mode: Mode, with_1m: bool, report: &mut Report) {
    let counts: &[usize] = match (mode, with_1m) {
        (Mode::Smoke, _) => &[1_000],
        (Mode::Full, false) => &[100_000],
        (Mode::Full, true) => &[100_000, 1_000_000],
    };
    for &n in counts {
        report.section(&format!(
            "tokio multi-thread (2 workers): {n} concurrent transactions, 3 steps, a sleep in step 2"
        ));
        let mut results = Vec::new();
        for kind in [ScaleKind::Bare, ScaleKind::Fixed, ScaleKind::Alloc] {
            let r = run_scale_child(kind, n);
            report.check(r.is_some(), format!("scale child {kind:?} {n} ran and reported"));
            let Some(r) = r else { continue };
            let per_task = (r.inflight_kib.saturating_sub(r.base_kib)) as f64 * 1024.0 / n as f64;
            report.value_row(
                &format!("{kind:?}: in-flight RSS per task"),
                &format!(
                    "{per_task:.0} B (future {} B; RSS {} -> {} KiB, peak {} KiB){}",
                    r.future_bytes,
                    r.base_kib,
                    r.inflight_kib,
                    r.hwm_kib,
                    if r.all_in_flight { "" } else { " [WARNING: some finished before the last spawn]" }
                ),
            );
            results.push((kind, r, per_task));
        }
        let Some((_, bare, bare_per)) = results.iter().find(|(k, ..)| *k == ScaleKind::Bare) else {
            continue;
        };
        for (kind, r, per) in results.iter().filter(|(k, ..)| *k != ScaleKind::Bare) {
            let over = per - bare_per;
            report.value_row(
                &format!("{kind:?}: per transaction over bare"),
                &format!(
                    "{over:+.0} B (target <= 1024 B: {}) | wall {:.0} ms vs bare {:.0} ms, ratio {:.2}x | peak RSS over bare {:+.0} B/tx",
                    if over <= 1024.0 { "met" } else { "NOT met" },
                    r.wall.as_secs_f64() * 1e3,
                    bare.wall.as_secs_f64() * 1e3,
                    r.wall.as_secs_f64() / bare.wall.as_secs_f64(),
                    (r.hwm_kib as f64 - bare.hwm_kib as f64) * 1024.0 / n as f64,
                ),
            );
        }
    }
}

// ---------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--scale-child") {
        let kind = args.get(i + 1).and_then(|k| ScaleKind::parse(k));
        let n = args.get(i + 2).and_then(|n| n.parse().ok());
        let (Some(kind), Some(n)) = (kind, n) else {
            eprintln!("usage: --scale-child bare|fixed|alloc N");
            std::process::exit(2);
        };
        scale_child(kind, n);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--profile-loop") {
        profile_loop(args.get(i + 1).map_or("", String::as_str));
        return;
    }
    let mode = Mode::from_env();
    let with_1m = args.iter().any(|a| a == "--scale-1m");
    let only = |section: &str| {
        // `--only time,allocs,sizes,scale` runs a subset.
        args.iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .is_none_or(|list| list.split(',').any(|s| s == section))
    };
    let mut report = Report::default();
    println!("# transaction-manager benchmarks ({mode:?})");
    println!("machine: {}", machine());
    println!(
        "core: built {} (probe: error text of 200 bytes kept whole)",
        if core_has_alloc() { "with `alloc`" } else { "without `alloc`" }
    );

    let manual = Manual(Box::leak(Box::new(ManualClock::new())));
    let tokio = Tokio(tokio::runtime::Builder::new_current_thread().enable_time().build().expect("tokio runtime"));
    check_results(&manual, &mut report);
    check_results(&tokio, &mut report);
    check_results(&Smol, &mut report);

    if only("time") {
        figures_time(&manual, mode, &mut report);
        figures_time(&tokio, mode, &mut report);
        figures_time(&Smol, mode, &mut report);
    }
    if only("allocs") {
        figure_allocs(&manual, mode, &mut report);
        figure_allocs(&tokio, mode, &mut report);
    }
    if only("sizes") {
        figure_sizes(&manual, &mut report);
        figure_sizes(&tokio, &mut report);
        figure_sizes(&Smol, &mut report);
        report.section("undo state per step (alloc build; see the no_alloc bench for the core without alloc)");
        undo_state_sizes(&report);
    }
    if only("scale") {
        figure_scale(mode, with_1m, &mut report);
    }
    if only("group") {
        figure_group_wall(mode, &mut report);
    }
    report.finish();
}

/// A parallel group of N I/O-bound steps against the same N steps one after
/// another, on tokio with real time: each step waits `io` on a tokio timer
/// (a stand-in for a network call). The group should take about one wait,
/// the sequence N. Wall time only: the waits are not CPU.
fn figure_group_wall(mode: Mode, report: &mut Report) {
    let (io, samples) = match mode {
        Mode::Full => (Duration::from_millis(20), 5),
        Mode::Smoke => (Duration::from_millis(1), 1),
    };
    report.section(&format!("parallel group vs sequential: N steps each waiting {io:?} on tokio (real time)"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("tokio runtime");
    let manager = TransactionManager::new(TokioClock::new());
    let wait = move || async move {
        tokio::time::sleep(io).await;
        Ok::<_, Boom>(1u32)
    };
    let median = |mut xs: Vec<Duration>| {
        xs.sort();
        xs[xs.len() / 2]
    };
    for n in [2usize, 4, 8] {
        let (mut grouped, mut sequential) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            let start = Instant::now();
            let done = runtime.block_on(manager.transaction("group").fixed::<NoRollback, 8>().run(async |tx| {
                let members: Vec<_> = (0..n).map(|_| member("io").execute(wait)).collect();
                let values = tx.parallel(members).await?;
                Ok::<_, StepError<Boom>>(values.iter().sum::<u32>())
            }));
            grouped.push(start.elapsed());
            report.check(done.is_ok_and(|d| *d.value() == n as u32), format!("group of {n}: every member's value"));
            let start = Instant::now();
            let done = runtime.block_on(manager.transaction("sequence").fixed::<NoRollback, 8>().run(async |tx| {
                let mut sum = 0;
                for _ in 0..n {
                    sum += tx.step("io").run(wait).await?;
                }
                Ok::<_, StepError<Boom>>(sum)
            }));
            sequential.push(start.elapsed());
            report.check(done.is_ok_and(|d| *d.value() == n as u32), format!("sequence of {n}: every step's value"));
        }
        let (g, q) = (median(grouped), median(sequential));
        report.value_row(
            &format!("N = {n}"),
            &format!(
                "group {:>7.2} ms | sequential {:>7.2} ms | {:.2}x faster",
                g.as_secs_f64() * 1e3,
                q.as_secs_f64() * 1e3,
                q.as_secs_f64() / g.as_secs_f64()
            ),
        );
    }

    // The same group's rollbacks, after a later step fails: each member's
    // rollback waits `io` too; concurrently (`roll_back_concurrently`)
    // against one after another (the default). The execute part (one wait,
    // the group) is the same in both.
    report.section(&format!(
        "group rollbacks, concurrent vs one by one: N members, each rollback waiting {io:?} on tokio (real time)"
    ));
    let undo = move |_: u32| async move {
        tokio::time::sleep(io).await;
        Ok::<_, Boom>(())
    };
    for n in [2usize, 4, 8] {
        let (mut concurrent, mut one_by_one) = (Vec::new(), Vec::new());
        for _ in 0..samples {
            for together in [true, false] {
                let start = Instant::now();
                let failed = runtime.block_on(manager.run("undo", async |tx| {
                    let members: Vec<_> = (0..n).map(|_| member("io").execute(wait).rollback(undo)).collect();
                    let group = tx.group();
                    let group = if together { group.roll_back_concurrently() } else { group };
                    group.run(members).await?;
                    tx.step("fails").run(|| async { Err::<(), _>(Boom) }).await?;
                    Ok::<_, StepError<Boom>>(())
                }));
                let elapsed = start.elapsed();
                report.check(
                    failed.is_err_and(|e| e.summary().rolled_back_steps() == n && e.rollback_state().is_clean()),
                    format!("group of {n}: every member rolled back"),
                );
                if together { concurrent.push(elapsed) } else { one_by_one.push(elapsed) }
            }
        }
        let (c, o) = (median(concurrent), median(one_by_one));
        report.value_row(
            &format!("N = {n}"),
            &format!(
                "concurrent {:>7.2} ms | one by one {:>7.2} ms | {:.2}x faster",
                c.as_secs_f64() * 1e3,
                o.as_secs_f64() * 1e3,
                o.as_secs_f64() / c.as_secs_f64()
            ),
        );
    }
}

/// The profile loop's future, polled from a function that is never
/// inlined, so that callgrind can switch collection on for it by name:
/// the loop's own `async` block is inlined into `suite::main` since the
/// engine polls the transaction from frames of its own (f387a5a).
struct ProfileLoop<'a, F>(std::pin::Pin<&'a mut F>);

impl<F: Future> Future for ProfileLoop<'_, F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// Runs one case 200,000 times on `ManualClock` with nothing else, for a
/// profiler: `valgrind --tool=callgrind --toggle-collect='<suite::ProfileLoop<F> as core::future::future::Future>::poll'
/// <bench binary> --profile-loop fixed_ok3` counts only the loop (divide by
/// 200,000). The pattern must be exact: a wildcard can match functions
/// called inside the loop and switch collection off inside them.
fn profile_loop(case: &str) {
    const RUNS: u32 = 200_000;
    let manual = Manual(Box::leak(Box::new(ManualClock::new())));
    let m = TransactionManager::new(manual.clock());
    let tokio = TokioClock::new();
    let mt = TransactionManager::new(tokio);
    // Per-step times off (`with_step_times(false)`), as the tokio and smol
    // rows' "step times off" figure.
    let quiet = TransactionManager::new(manual.clock()).with_step_times(false);
    // The same on `TokioClock` (no clock reading, no timer: only its types).
    let quiet_tokio = TransactionManager::new(tokio).with_step_times(false);
    let body = std::pin::pin!(async {
        for _ in 0..RUNS {
            match case {
                "fixed_ok3" => drop(black_box(lib_fixed_ok3(&m, Noop).await)),
                "fixed_ok3_tokioclock" => drop(black_box(lib_fixed_ok3(&mt, Noop).await)),
                "alloc_ok3" => drop(black_box(lib_alloc_ok3(&m, Noop).await)),
                "fixed_fail3" => drop(black_box(lib_fixed_fail3(&m, Noop).await)),
                "retry" => drop(black_box(lib_retry(&m, Noop, black_box(2)).await)),
                "retry0" => drop(black_box(lib_retry(&m, Noop, black_box(0)).await)),
                "backon_skip0_retry" => {
                    let _ = black_box(backon_retry_skip_zero(Noop, manual.sleeper(), black_box(2)).await);
                }
                "backon_skip0_retry0" => {
                    let _ = black_box(backon_retry_skip_zero(Noop, manual.sleeper(), black_box(0)).await);
                }
                "hand_retry" => {
                    let _ = black_box(hand_retry(&manual.clock(), Noop, black_box(2)).await);
                }
                "hand_retry0" => {
                    let _ = black_box(hand_retry(&manual.clock(), Noop, black_box(0)).await);
                }
                "fixed_1step_cap1" => drop(black_box(lib_fixed!(&m, Noop, 1; "a" => step).await)),
                "fixed_1step_cap8" => drop(black_box(lib_fixed!(&m, Noop, 8; "a" => step).await)),
                "fixed_8steps_cap8" => drop(black_box(
                    lib_fixed!(&m, Noop, 8; "a" => step, "b" => step, "c" => step, "d" => step,
                        "e" => step, "f" => step, "g" => step, "h" => step)
                    .await,
                )),
                "quiet_1step_cap8" => drop(black_box(lib_fixed!(&quiet, Noop, 8; "a" => step).await)),
                "quiet_8steps_cap8" => drop(black_box(
                    lib_fixed!(&quiet, Noop, 8; "a" => step, "b" => step, "c" => step, "d" => step,
                        "e" => step, "f" => step, "g" => step, "h" => step)
                    .await,
                )),
                "quiet_tokioclock_1step_cap8" => drop(black_box(lib_fixed!(&quiet_tokio, Noop, 8; "a" => step).await)),
                "quiet_tokioclock_8steps_cap8" => drop(black_box(
                    lib_fixed!(&quiet_tokio, Noop, 8; "a" => step, "b" => step, "c" => step, "d" => step,
                        "e" => step, "f" => step, "g" => step, "h" => step)
                    .await,
                )),
                "hand_ok3" => drop(black_box(hand_ok3(Noop).await)),
                _ => {
                    eprintln!("unknown case {case:?}");
                    std::process::exit(2);
                }
            }
        }
    });
    manual.block_on(ProfileLoop(body));
}
