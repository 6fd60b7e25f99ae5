//! The core alone, built without `alloc`: the firmware configuration.
//!
//! `cargo bench -p transaction-manager-bench --no-default-features --bench no_alloc`
//! (add `-- --smoke` for the CI run). With default features off, this
//! package drops the facade and depends on `transaction-manager-core` with
//! no features, so nothing in the build turns `alloc` on; the binary checks that (a 200-byte
//! error text must come back cut short) and fails if it finds `alloc`.
//!
//! Checks: success, failure (two rollbacks) and retry transactions on
//! `fixed::<Undo, N>()` storage make zero heap allocations. Prints their
//! time against the hand-written code on `ManualClock`, and sizes.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::mem::size_of_val;
use std::time::Duration;

use transaction_manager_bench::{
    CountingAlloc, Mode, Report, Stopwatch, Timing, core_has_alloc, machine, measure, start_counting, stop_counting,
};
use transaction_manager_core::{
    ManualClock, NoRollback, Outcome, RetryPolicy, StepError, StepRecord, TransactionManager, storage::Fixed,
};

#[macro_use]
mod common;
use common::{Boom, HandError, Noop, Undo, Work};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type M<'c> = TransactionManager<&'c ManualClock>;
type FixedOutcome<const N: usize> = Outcome<u32, StepError<Boom>, Boom, Fixed<N>>;

fn lib_ok3<'a>(m: &'a M<'a>) -> impl Future<Output = FixedOutcome<3>> + 'a {
    lib_fixed!(m, Noop, 3; "a" => step, "b" => step, "c" => step)
}

fn lib_fail3<'a>(m: &'a M<'a>) -> impl Future<Output = FixedOutcome<3>> + 'a {
    lib_fixed!(m, Noop, 3; "a" => step, "b" => step, "c" => fail)
}

const RETRY: RetryPolicy = RetryPolicy::new().with_max_retries(2).with_initial_interval(Duration::ZERO);

fn lib_retry<'a>(m: &'a M<'a>) -> impl Future<Output = Outcome<u32, StepError<Boom>, Infallible, Fixed<1>>> + 'a {
    m.transaction("op").fixed::<NoRollback, 1>().run(async move |tx| {
        let mut calls = 0u32;
        tx.step("flaky")
            .retry(RETRY)
            .run(|| {
                calls += 1;
                Noop.flaky(calls)
            })
            .await
    })
}

fn hand_ok3() -> impl Future<Output = Result<u32, HandError>> {
    hand!(Noop, 3; "a" => step, "b" => step, "c" => step)
}

fn hand_fail3() -> impl Future<Output = Result<u32, HandError>> {
    hand!(Noop, 3; "a" => step, "b" => step, "c" => fail)
}

async fn hand_retry() -> Result<u32, Boom> {
    let mut calls = 0u32;
    let mut retry = 0u32;
    loop {
        calls += 1;
        match Noop.flaky(calls).await {
            Ok(v) => return Ok(v),
            Err(e) if retry >= RETRY.max_retries() => return Err(e),
            Err(_) => retry += 1,
        }
    }
}

fn time<F: FnMut() -> Fut, Fut: Future>(clock: &ManualClock, mode: Mode, mut f: F) -> Timing {
    measure(mode, |iters| {
        clock.block_on(async {
            let start = Stopwatch::start();
            for _ in 0..iters {
                black_box(f().await);
            }
            start.elapsed()
        })
    })
}

fn allocs<F: FnMut() -> Fut, Fut: Future>(clock: &ManualClock, runs: u64, mut f: F) -> f64 {
    clock.block_on(async {
        black_box(f().await);
        start_counting();
        for _ in 0..runs {
            black_box(f().await);
        }
        stop_counting().count as f64 / runs as f64
    })
}

fn main() {
    let mode = Mode::from_env();
    let mut report = Report::default();
    println!("# transaction-manager-core without alloc ({mode:?})");
    println!("machine: {}", machine());
    let has_alloc = core_has_alloc();
    println!(
        "core: built {}",
        if has_alloc {
            "WITH `alloc` (run with --no-default-features)"
        } else {
            "without `alloc` (probe: a 200-byte error text is cut short)"
        }
    );
    report.check(!has_alloc, "the no_alloc bench must be built with --no-default-features (core without alloc)");

    let clock = ManualClock::new();
    let m = TransactionManager::new(&clock);

    // Results.
    let ok = clock.block_on(lib_ok3(&m));
    report.check(
        matches!(&ok, Ok(c) if *c.value() == 3 && c.summary().completed_steps() == 3),
        "fixed 3-step success returns 3",
    );
    let err = clock
        .block_on(lib_fail3(&m))
        .err()
        .map(|e| (e.cause().index(), e.summary().rolled_back_steps(), e.rollback_state().is_clean()));
    report.check(err == Some((2, 2, true)), format!("failure path rolls back 2 steps cleanly (got {err:?})"));
    let retried = clock.block_on(lib_retry(&m));
    report.check(
        matches!(&retried, Ok(c) if *c.value() == 3 && c.summary().steps()[0].attempts() == 3),
        "retry path succeeds on attempt 3",
    );
    report.check(matches!(clock.block_on(hand_ok3()), Ok(3)), "hand success returns 3");
    report.check(
        matches!(clock.block_on(hand_fail3()), Err(HandError { step: 2, rollback_failures: 0, .. })),
        "hand failure path fails at step 2",
    );
    report.check(clock.block_on(hand_retry()) == Ok(3), "hand retry returns 3");

    report.section("heap allocations per transaction (must be 0)");
    let runs = if mode.is_smoke() { 10 } else { 10_000 };
    for (what, count) in [
        ("fixed, success (3 steps)", allocs(&clock, runs, || lib_ok3(&m))),
        ("fixed, failure (2 rollbacks)", allocs(&clock, runs, || lib_fail3(&m))),
        ("fixed, retry (2 failed attempts)", allocs(&clock, runs, || lib_retry(&m))),
    ] {
        report.value_row(what, &format!("{count:.2} allocations"));
        report.check(count == 0.0, format!("{what}: no allocation without alloc (made {count} per transaction)"));
    }

    report.section("ManualClock: time (median ns per transaction)");
    let h = time(&clock, mode, hand_ok3);
    let l = time(&clock, mode, || lib_ok3(&m));
    report.time_row_per("success, 3 no-op steps", l, "hand", h, 3);
    let h = time(&clock, mode, hand_fail3);
    let l = time(&clock, mode, || lib_fail3(&m));
    report.time_row("failure, third fails, 2 rollbacks", l, "hand", h);
    let h = time(&clock, mode, hand_retry);
    let l = time(&clock, mode, || lib_retry(&m));
    report.time_row("retry, 2 failed attempts", l, "hand loop", h);

    report.section("sizes without alloc (bytes)");
    let f1 = size_of_val(&lib_fixed!(&m, Noop, 1; "a" => step));
    let f3 = size_of_val(&lib_ok3(&m));
    let f8 = size_of_val(&lib_fixed!(&m, Noop, 8; "a" => step, "b" => step, "c" => step,
        "d" => step, "e" => step, "f" => step, "g" => step, "h" => step));
    let h1 = size_of_val(&hand!(Noop, 1; "a" => step));
    let h3 = size_of_val(&hand_ok3());
    let h8 = size_of_val(&hand!(Noop, 8; "a" => step, "b" => step, "c" => step,
        "d" => step, "e" => step, "f" => step, "g" => step, "h" => step));
    report.value_row("transaction future, 1 / 3 / 8 steps", &format!("{f1} / {f3} / {f8}"));
    report.value_row("hand-written, 1 / 3 / 8 steps", &format!("{h1} / {h3} / {h8}"));
    let c1 = size_of_val(&lib_fixed!(&m, Noop, 1; "a" => step));
    let c9 = size_of_val(&lib_fixed!(&m, Noop, 9; "a" => step));
    report.value_row("future bytes per step of capacity (cap 9 vs 1)", &format!("{}", (c9 - c1) / 8));
    let record = size_of::<StepRecord>();
    let undo = size_of::<Undo<Noop>>();
    let policy = size_of::<RetryPolicy>();
    report.value_row("size_of StepRecord", &format!("{record}"));
    report.value_row(
        "undo record per step (Undo enum)",
        &format!(
            "~{} (step index 8 + Undo {undo} + RetryPolicy {policy} + timeout 12)",
            (8 + undo + policy + 12).next_multiple_of(8)
        ),
    );
    report.finish();
}
