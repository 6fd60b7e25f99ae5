//! What the engine reports is true in every interleaving: a step that never
//! ran is not rolled back, no step starts after a cancel or at the
//! deadline, a panic anywhere in user code (closures, hooks, `Display`,
//! `Clone`, the clock) neither escapes nor stops a rollback, and a step
//! whose future the body dropped is recorded as interrupted.
//!
//! Each scenario here was written against a hole found by probing the
//! public API (issue "Reliability holes") and failed before its fix.

use std::fmt;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::Poll;
use std::time::Duration;

use transaction_manager::*;

use transaction_manager::{
    hooks::{Hooks, StepEvent},
    interrupt::InterruptReason,
    step::Maybe,
};

use super::reliability::{Rig, ToRollbackTask, Undo, catch_panic, poll_once};
use super::{Log, Timing};

type R<T> = Result<T, StepError<&'static str>>;

/// Hooks that log every event as `hook <event> <step> #<attempt>`, and
/// panic or wait at the events named in `panics` / `waits`
/// (`"<event> <step>"`, e.g. `"execute b"`).
pub struct Scripted<C> {
    pub log: &'static Log,
    pub clock: C,
    pub panics: &'static [&'static str],
    pub waits: &'static [(&'static str, Duration)],
}

impl<C: Clock> Scripted<C> {
    async fn event(&self, event: &str, step: &str, attempt: u32) {
        let key = format!("{event} {step}");
        self.log.push(format!("hook {key} #{attempt}"));
        if let Some((_, wait)) = self.waits.iter().find(|(k, _)| *k == key) {
            self.clock.sleep(*wait).await;
        }
        if self.panics.contains(&key.as_str()) {
            panic!("injected: {key} hook");
        }
    }
}

impl<C: Clock> Hooks for Scripted<C> {
    async fn on_step_execute(&self, e: &StepEvent<'_>) {
        self.event("execute", e.step.name().as_str(), e.attempt).await
    }
    async fn on_step_success(&self, e: &StepEvent<'_>) {
        self.event("success", e.step.name().as_str(), e.attempt).await
    }
    async fn on_step_failure(&self, e: &StepEvent<'_>) {
        self.event("failure", e.step.name().as_str(), e.attempt).await
    }
    async fn on_step_rollback(&self, e: &StepEvent<'_>) {
        self.event("rollback", e.step.name().as_str(), e.attempt).await
    }
    async fn on_step_rollback_failure(&self, e: &StepEvent<'_>) {
        self.event("rollback_failure", e.step.name().as_str(), e.attempt).await
    }
}

fn scripted<C: Clock + Clone>(
    clock: &C,
    log: &'static Log,
    panics: &'static [&'static str],
    waits: &'static [(&'static str, Duration)],
) -> TransactionManager<C, Scripted<C>> {
    TransactionManager::new(clock.clone()).with_hooks(Scripted { log, clock: clock.clone(), panics, waits })
}

/// An uncertain rollback that logs its calls; `'static` for `BoxedRollback`.
fn undo_logged(
    log: &'static Log,
    name: &'static str,
) -> impl FnMut(Maybe<u8>) -> std::future::Ready<Result<(), &'static str>> + Clone {
    move |maybe| {
        log.push(format!("undo {name} {maybe:?}"));
        std::future::ready(Ok(()))
    }
}

/// Case 1: a deadline that fires during the backoff wait between two
/// attempts that both failed cleanly: the uncertain step never took effect
/// and is not rolled back; the completed step before it is.
pub async fn deadline_in_backoff_does_not_roll_back_a_clean_failure<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = scripted(&clock, log, &[], &[]);
    let err = manager
        .transaction("backoff")
        // Wide on a real clock (30 ms, then 50 ms): step `a` must run before
        // the deadline even on a loaded machine (3 ms was not always enough).
        .with_deadline(t.ms(3000))
        .run(async |tx| {
            tx.step("a").execute(|| async { Ok(1u8) }).rollback_uncertain(undo_logged(log, "a")).await?;
            tx.step("b")
                .retry(RetryPolicy::new().with_max_retries(3).with_initial_interval(t.ms(5000)))
                .execute(|| async { Err::<u8, _>("refused") })
                .rollback_uncertain(undo_logged(log, "b"))
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("the deadline passes in the backoff");
    assert!(matches!(err.cause().kind(), StepErrorKind::Interrupted(_)), "{:?}", err.cause());
    assert_eq!(log.calls(), ["undo a Completed(1)"], "b never took effect");
    let b = &err.summary().steps()[1];
    assert_eq!((b.status(), b.attempts()), (StepStatus::Failed, 1));
    assert_eq!(err.summary().rolled_back_steps(), 1);
}

/// Case 2: the same step, its transaction dropped during the backoff wait:
/// nothing is owed.
pub async fn dropped_in_backoff_owes_nothing_for_a_clean_failure<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let task = ToRollbackTask::default();
    let manager = TransactionManager::new(clock.clone()).with_abandon_policy(task.clone());
    let mut rig = Rig { clock: clock.clone(), delay: Duration::ZERO, log };
    {
        let transaction = manager.transaction("dropped").fixed::<Undo, 4>().run_with(&mut rig, async |tx| {
            tx.step("b")
                .retry(RetryPolicy::new().with_max_retries(3).with_initial_interval(t.ms(500)))
                .execute(|| async { Err::<u8, _>("refused") })
                .undo_uncertain(|_| Undo(2))
                .await?;
            R::Ok(())
        });
        let mut transaction = pin!(transaction);
        // The first attempt fails at once; the transaction then waits out
        // the backoff, and is dropped there.
        assert!(poll_once(transaction.as_mut()).await.is_pending());
    }
    let handed: Vec<_> = task.0.lock().unwrap().drain(..).collect();
    let [abandoned] = &handed[..] else { panic!("one transaction handed over: {handed:?}") };
    assert_eq!(abandoned.pending_len(), 0, "b never took effect");
    assert_eq!(abandoned.steps()[0].status(), StepStatus::Failed);
}

/// Cases 3 and 5: an interrupt inside `on_step_execute` (before the first
/// attempt) or inside the last `on_step_failure` (after a clean failure):
/// the uncertain step is not rolled back.
pub async fn interrupt_inside_a_hook_does_not_roll_back_a_step_that_did_not_run<C: Clock + Clone>(clock: C, t: Timing) {
    const IN_EXECUTE: &[(&str, Duration)] = &[("execute b", Duration::from_secs(3600))];
    const IN_FAILURE: &[(&str, Duration)] = &[("failure b", Duration::from_secs(3600))];
    for (hook, waits) in [("execute", IN_EXECUTE), ("failure", IN_FAILURE)] {
        let log = Log::leaked();
        let manager = scripted(&clock, log, &[], waits);
        let err = manager
            .transaction("hooked")
            // Wide on a real clock: step `a` must run before the deadline
            // even on a loaded machine.
            .with_deadline(t.ms(3000))
            .run(async |tx| {
                tx.step("a").execute(|| async { Ok(1u8) }).rollback_uncertain(undo_logged(log, "a")).await?;
                tx.step("b")
                    .execute(|| async {
                        log.push("exec b");
                        Err::<u8, _>("refused")
                    })
                    .rollback_uncertain(undo_logged(log, "b"))
                    .await?;
                R::Ok(())
            })
            .await
            .expect_err("the deadline passes in the hook");
        assert!(matches!(err.cause().kind(), StepErrorKind::Interrupted(_)), "{hook}: {:?}", err.cause());
        let expected: &[&str] =
            if hook == "execute" { &["undo a Completed(1)"] } else { &["exec b", "undo a Completed(1)"] };
        assert_eq!(log.calls(), expected, "{hook}: b is not rolled back");
        assert_eq!(err.summary().steps()[1].status(), StepStatus::Failed, "{hook}");
    }
}

/// Case 4: `on_step_execute` panics before the first attempt: the attempt
/// never ran, so the uncertain step is not rolled back.
pub async fn hook_panic_before_the_first_attempt_is_not_uncertain<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = scripted(&clock, log, &["execute b"], &[]);
    let err = manager
        .run("hook panic", async |tx| {
            tx.step("a").execute(|| async { Ok(1u8) }).rollback_uncertain(undo_logged(log, "a")).await?;
            tx.step("b")
                .execute(|| async {
                    log.push("exec b");
                    Ok(2u8)
                })
                .rollback_uncertain(undo_logged(log, "b"))
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("the hook panics");
    assert!(matches!(err.cause().kind(), StepErrorKind::Panicked(_)), "{:?}", err.cause());
    assert_eq!(log.calls(), ["undo a Completed(1)"]);
    assert_eq!(err.summary().steps()[1].status(), StepStatus::Failed);
}

/// Cases 6 and 7: a cancel signal that has already fired, or a zero
/// deadline: no step starts, the transaction ends interrupted.
pub async fn interrupt_that_already_fired_starts_no_step<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = scripted(&clock, log, &[], &[]);
    macro_rules! body {
        () => {
            async |tx| {
                tx.step("a")
                    .execute(|| async {
                        log.push("exec a");
                        Ok(1u8)
                    })
                    .rollback_uncertain(undo_logged(log, "a"))
                    .await?;
                R::Ok(())
            }
        };
    }
    let cancelled = manager.transaction("cancelled").cancel_on(async {}).run(body!()).await;
    let err = cancelled.expect_err("the signal had fired");
    assert_eq!(err.cause().kind(), &StepErrorKind::Interrupted(InterruptReason::Cancelled));
    assert_eq!(err.summary().total_steps(), 0);

    let zero = manager.transaction("zero").with_deadline(Duration::ZERO).run(body!()).await;
    let err = zero.expect_err("a zero deadline has passed");
    let deadline = InterruptReason::DeadlineExceeded { deadline: Duration::ZERO };
    assert_eq!(err.cause().kind(), &StepErrorKind::Interrupted(deadline));
    assert_eq!(err.summary().total_steps(), 0);
    assert_eq!(log.take(), Vec::<String>::new(), "no hook, no step");
}

/// Case 8: a step whose attempt ends exactly at the deadline: the next step
/// does not start — no step starts at or after the deadline.
pub async fn no_step_starts_at_the_deadline<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = scripted(&clock, log, &[], &[]);
    let c = &clock;
    let err = manager
        .transaction("tie")
        .with_deadline(t.ms(100))
        .run(async |tx| {
            tx.step("a")
                .execute(|| async {
                    c.sleep(t.ms(100)).await;
                    Ok(1u8)
                })
                .rollback_uncertain(undo_logged(log, "a"))
                .await?;
            tx.step("b")
                .execute(|| async {
                    log.push("exec b (must not happen)");
                    Ok(2u8)
                })
                .rollback_uncertain(undo_logged(log, "b"))
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("the deadline passes");
    assert!(matches!(err.cause().kind(), StepErrorKind::Interrupted(_)));
    let calls = log.calls();
    assert!(!calls.iter().any(|c| c.starts_with("exec b")), "{calls:?}");
    assert!(err.summary().steps().iter().all(|s| s.name() != "b"), "b has no record");
    // `a` ended at the deadline instant: the deadline won the tie, so its
    // attempt counts as cut short (uncertain) and its uncertain rollback ran.
    assert_eq!(calls, ["undo a Uncertain"]);
}

/// Case 8 again, for retries: a backoff that ends at or after the deadline
/// does not start another attempt.
pub async fn no_retry_starts_after_the_deadline<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = scripted(&clock, log, &[], &[]);
    let err = manager
        .transaction("retry tie")
        // Wide on a real clock: the first attempt must start before the
        // deadline even on a loaded machine.
        .with_deadline(t.ms(5000))
        .run(async |tx| {
            tx.step("a")
                .retry(RetryPolicy::new().with_max_retries(3).with_initial_interval(t.ms(5000)))
                .run(|| async {
                    log.push("exec a");
                    Err::<u8, _>("refused")
                })
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("the deadline passes");
    assert!(matches!(err.cause().kind(), StepErrorKind::Interrupted(_)));
    assert_eq!(log.calls(), ["exec a"]);
    assert_eq!(err.summary().steps()[0].attempts(), 1);
}

/// Cases 9 and 10: a panic in `on_step_rollback` or
/// `on_step_rollback_failure` neither stops nor shortens a rollback.
pub async fn rollback_hook_panics_do_not_stop_the_rollback<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = scripted(&clock, log, &["rollback a", "rollback b", "rollback_failure b"], &[]);
    let tries = AtomicU32::new(0);
    let tries = &*Box::leak(Box::new(tries));
    let err = manager
        .run("rollback hooks", async |tx| {
            tx.step("a")
                .execute(|| async { Ok(()) })
                .rollback(move |()| async move {
                    log.push("undo a");
                    Ok::<_, &str>(())
                })
                .await?;
            tx.step("b")
                .rollback_retry(RetryPolicy::new().with_max_retries(2).with_initial_interval(t.ms(10)))
                .execute(|| async { Ok(()) })
                .rollback(move |()| async move {
                    log.push("undo b");
                    if tries.fetch_add(1, Ordering::SeqCst) < 2 { Err("busy") } else { Ok(()) }
                })
                .await?;
            tx.step("c").run(|| async { Err::<(), _>("boom") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("c fails");
    assert_eq!(log.calls(), ["undo b", "undo b", "undo b", "undo a"]);
    assert_eq!(err.rollback_state(), RollbackState::Clean);
    let statuses: Vec<_> = err.summary().steps().iter().map(StepRecord::status).collect();
    assert_eq!(statuses, [StepStatus::RolledBack, StepStatus::RolledBack, StepStatus::Failed]);
    assert_eq!(err.summary().steps()[1].rollback_attempts(), 3);
}

/// Case 11: a panic in the execute closure itself (the `FnMut` that makes
/// the attempt's future) is a failed attempt like a panic in the future:
/// retried, then the step completes.
pub async fn panic_in_the_execute_closure_is_a_failed_attempt<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = scripted(&clock, log, &[], &[]);
    let mut calls = 0;
    let done = manager
        .run("closure panic", async |tx| {
            let n = tx
                .step("a")
                .retry(t.retries(1))
                .run(|| {
                    calls += 1;
                    if calls == 1 {
                        panic!("injected: closure bug");
                    }
                    let n = calls;
                    async move { Ok::<_, &str>(n) }
                })
                .await?;
            R::Ok(n)
        })
        .await
        .expect("the retry completes");
    assert_eq!(*done.value(), 2);
    let a = &done.summary().steps()[0];
    assert_eq!((a.status(), a.attempts()), (StepStatus::Completed, 2));
}

/// An error whose `Display` panics.
#[derive(Debug)]
pub struct BadDisplay;

impl fmt::Display for BadDisplay {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        panic!("injected: Display bug")
    }
}

impl std::error::Error for BadDisplay {}

/// A step output whose `Clone` panics.
#[derive(Debug)]
pub struct BadClone;

impl Clone for BadClone {
    fn clone(&self) -> Self {
        panic!("injected: Clone bug")
    }
}

/// Case 12: a panic in `Display` of a rollback error (or of a step's error)
/// or in `Clone` of a step's output does not escape: the earlier steps are
/// still rolled back.
pub async fn panics_in_display_and_clone_do_not_escape<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = scripted(&clock, log, &[], &[]);
    let outcome = catch_panic(manager.run("display", async |tx| {
        tx.step("a")
            .execute(|| async { Ok(()) })
            .rollback(move |()| async move {
                log.push("undo a");
                Ok::<_, &str>(())
            })
            .await?;
        tx.step("b")
            .execute(|| async { Ok(()) })
            .rollback(move |()| async move {
                log.push("undo b");
                Err::<(), _>(BadDisplay)
            })
            .await?;
        tx.step("c").run(|| async { Err::<(), _>("boom") }).await?;
        R::Ok(())
    }))
    .await;
    let err = outcome.expect("no panic escapes").expect_err("c fails");
    assert_eq!(log.calls(), ["undo b", "undo a"]);
    assert_eq!(err.rollback_failures().len(), 1);
    assert!(err.summary().steps()[1].rollback_error().unwrap().contains("Display"), "{:?}", err.summary().steps()[1]);

    let log = Log::leaked();
    let manager = scripted(&clock, log, &[], &[]);
    let outcome = catch_panic(manager.run("display", async |tx| {
        tx.step("a")
            .execute(|| async { Ok(()) })
            .rollback(move |()| async move {
                log.push("undo a");
                Ok::<_, &str>(())
            })
            .await?;
        tx.step("b").run(|| async { Err::<(), _>(BadDisplay) }).await?;
        Ok::<_, StepError<BadDisplay>>(())
    }))
    .await;
    let err = outcome.expect("no panic escapes").expect_err("b fails");
    assert_eq!(log.calls(), ["undo a"]);
    assert!(err.summary().steps()[1].error().unwrap().contains("Display"));

    let log = Log::leaked();
    let manager = scripted(&clock, log, &[], &[]);
    let outcome = catch_panic(manager.run("clone", async |tx| {
        tx.step("a")
            .execute(|| async { Ok(()) })
            .rollback(move |()| async move {
                log.push("undo a");
                Ok::<_, &str>(())
            })
            .await?;
        tx.step("b")
            .execute(|| async { Ok(BadClone) })
            .rollback(move |_| async move {
                log.push("undo b");
                Ok::<_, &str>(())
            })
            .await?;
        R::Ok(())
    }))
    .await;
    let err = outcome.expect("no panic escapes").expect_err("b's undo record cannot be made");
    assert!(matches!(err.cause().kind(), StepErrorKind::Panicked(_)), "{:?}", err.cause());
    assert_eq!(log.calls(), ["undo a"]);
    assert_eq!(err.summary().steps()[1].status(), StepStatus::Failed);
}

/// A clock that panics on `now()` or on `sleep()` once armed — a broken
/// `Clock` breaks its contract, but must not lose rollbacks.
#[derive(Clone)]
pub struct FaultyClock<C> {
    pub inner: C,
    /// Panic on every `now()` once this is set.
    pub now_panics: &'static std::sync::atomic::AtomicBool,
    /// Panic on the next `sleep()` calls while this is above zero.
    pub sleep_panics: &'static AtomicU32,
}

impl<C: Clock> Clock for FaultyClock<C> {
    type Sleep = C::Sleep;

    fn now(&self) -> Duration {
        if self.now_panics.load(Ordering::SeqCst) {
            panic!("injected: now() bug");
        }
        self.inner.now()
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        if self.sleep_panics.load(Ordering::SeqCst) > 0 {
            self.sleep_panics.fetch_sub(1, Ordering::SeqCst);
            panic!("injected: sleep() bug");
        }
        self.inner.sleep(duration)
    }
}

/// Case 13: a clock whose `now()` or `sleep()` panics: the completed steps
/// are still rolled back, nothing aborts, a dropped transaction still hands
/// over its rollbacks.
pub async fn clock_panics_do_not_lose_rollbacks<C: Clock + Clone>(clock: C, t: Timing) {
    let now_panics: &'static _ = Box::leak(Box::new(std::sync::atomic::AtomicBool::new(false)));
    let sleep_panics: &'static _ = Box::leak(Box::new(AtomicU32::new(0)));
    let faulty = FaultyClock { inner: clock.clone(), now_panics, sleep_panics };

    // sleep() panics in a step's timeout: the attempt fails; a completes
    // before and is rolled back.
    for arm in ["timeout", "backoff", "now"] {
        let log = Log::leaked();
        let manager = TransactionManager::new(faulty.clone());
        let outcome = catch_panic(manager.run("faulty clock", async |tx| {
            tx.step("a")
                .execute(|| async { Ok(()) })
                .rollback(move |()| async move {
                    log.push("undo a");
                    Ok::<_, &str>(())
                })
                .await?;
            match arm {
                "timeout" => sleep_panics.store(1, Ordering::SeqCst),
                "now" => now_panics.store(true, Ordering::SeqCst),
                _ => {}
            }
            let step = tx.step("b").retry(t.retries(1));
            // "backoff": no timeout, so the next sleep after the first
            // attempt is the backoff's.
            let step = if arm == "backoff" { step.no_timeout() } else { step.timeout(t.ms(100)) };
            let mut calls = 0;
            step.run(|| {
                calls += 1;
                if arm == "backoff" && calls == 1 {
                    sleep_panics.store(1, Ordering::SeqCst);
                }
                async { Err::<(), _>("refused") }
            })
            .await?;
            R::Ok(())
        }))
        .await;
        now_panics.store(false, Ordering::SeqCst);
        sleep_panics.store(0, Ordering::SeqCst);
        let Ok(outcome) = outcome else { panic!("{arm}: a panic escaped: {:?}", outcome.err()) };
        let err = outcome.expect_err("b fails");
        assert_eq!(log.calls(), ["undo a"], "{arm}");
        assert_eq!(err.summary().steps()[0].status(), StepStatus::RolledBack, "{arm}");
    }

    // now() panics while a dropped transaction hands over its rollbacks
    // (inside `Drop`): no abort, the rollback is handed over.
    let log = Log::leaked();
    let task = ToRollbackTask::default();
    let manager = TransactionManager::new(faulty.clone()).with_abandon_policy(task.clone());
    let mut rig = Rig { clock: faulty.clone(), delay: Duration::ZERO, log };
    let c = &clock;
    {
        let transaction = manager.transaction("dropped").fixed::<Undo, 4>().run_with(&mut rig, async |tx| {
            tx.step("a").execute(|| async { Ok(1u8) }).undo(|n| Undo(*n)).await?;
            tx.step("hangs")
                .run(|| async {
                    c.sleep(Duration::from_secs(3600)).await;
                    Ok::<_, &str>(())
                })
                .await?;
            R::Ok(())
        });
        let mut transaction = pin!(transaction);
        assert!(poll_once(transaction.as_mut()).await.is_pending());
        now_panics.store(true, Ordering::SeqCst);
    }
    now_panics.store(false, Ordering::SeqCst);
    let handed: Vec<_> = task.0.lock().unwrap().drain(..).collect();
    let [abandoned] = &handed[..] else { panic!("handed over: {handed:?}") };
    assert_eq!(abandoned.pending_len(), 1);
}

/// Case 16: a step whose future the body drops (its own `select` or
/// timeout around the step) is recorded as interrupted, and the summary's
/// counts add up, even when the transaction commits.
pub async fn step_dropped_by_the_body_is_recorded_as_interrupted<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = scripted(&clock, log, &[], &[]);
    let c = &clock;
    let done = manager
        .run("select", async |tx| {
            {
                let step = tx.step("slow").run(|| async {
                    // Far longer than the body waits, even on a real clock
                    // on a loaded machine.
                    c.sleep(t.ms(1_000_000)).await;
                    Ok::<_, &str>(())
                });
                let mut step = pin!(step);
                let mut waited = pin!(c.sleep(t.ms(10)));
                // The body's own timeout around the step: it gives up first
                // and drops the step's future.
                std::future::poll_fn(|cx| match step.as_mut().poll(cx) {
                    Poll::Ready(_) => Poll::Ready(()),
                    Poll::Pending => waited.as_mut().poll(cx),
                })
                .await;
            }
            tx.step("after").run(|| async { Ok::<_, &str>(()) }).await?;
            R::Ok(())
        })
        .await
        .expect("the body commits");
    let summary = done.summary();
    let slow = &summary.steps()[0];
    assert_eq!(slow.status(), StepStatus::Failed);
    assert!(slow.error().unwrap().contains("interrupted"), "{:?}", slow.error());
    assert!(slow.completed_at().is_some());
    assert_eq!(summary.completed_steps() + summary.failed_steps(), summary.total_steps());
}

/// Steps as data (`Action`, `Step::perform`): one enum for the steps, one
/// for the undo records, a context lent to both; a failure rolls back the
/// completed steps in reverse order, an uncertain rollback covers a step
/// that timed out, and a step with no undo record is passed over.
pub async fn steps_as_data_roll_back_in_reverse<C: Clock + Clone>(clock: C, t: Timing) {
    struct Board<C> {
        clock: C,
        t: Timing,
        log: Vec<String>,
    }
    #[derive(Debug)]
    enum BringUp {
        Power,
        Probe,
        Radio,
    }
    enum Off {
        Power,
        Radio(Maybe<u8>),
    }
    impl<C: Clock> Action<Board<C>> for BringUp {
        type Output = u8;
        type Error = &'static str;
        type Undo = Off;
        async fn execute(&mut self, board: &mut Board<C>) -> Result<u8, &'static str> {
            board.log.push(format!("exec {self:?}"));
            match self {
                BringUp::Power => Ok(1),
                BringUp::Probe => Ok(2),
                BringUp::Radio => {
                    board.clock.sleep(board.t.ms(1_000)).await; // times out
                    Ok(3)
                }
            }
        }
        fn undo(&self, output: Maybe<&u8>) -> Option<Off> {
            match self {
                BringUp::Power => output.completed().map(|_| Off::Power),
                BringUp::Probe => None,
                BringUp::Radio => Some(Off::Radio(output.cloned())),
            }
        }
    }
    impl<C: Clock> Rollback<Board<C>> for Off {
        type Error = &'static str;
        async fn rollback(&mut self, board: &mut Board<C>) -> Result<(), &'static str> {
            match self {
                Off::Power => board.log.push("undo power".into()),
                Off::Radio(maybe) => board.log.push(format!("undo radio {maybe:?}")),
            }
            Ok(())
        }
    }

    let manager = TransactionManager::new(clock.clone());
    let mut board = Board { clock, t, log: Vec::new() };
    let err = manager
        .transaction("bring-up")
        .fixed::<Off, 3>()
        .run_with(&mut board, async |tx| {
            tx.step("power").perform(BringUp::Power).await?;
            tx.step("probe").perform(BringUp::Probe).await?;
            tx.step("radio").timeout(t.ms(100)).perform(BringUp::Radio).await?;
            R::Ok(())
        })
        .await
        .expect_err("the radio times out");
    assert!(err.cause().is_timeout());
    assert_eq!(
        board.log,
        ["exec Power", "exec Probe", "exec Radio", "undo radio Uncertain", "undo power"],
        "latest first; probe owes nothing"
    );
    let statuses: Vec<_> = err.summary().steps().iter().map(StepRecord::status).collect();
    assert_eq!(statuses, [StepStatus::RolledBack, StepStatus::Completed, StepStatus::RolledBack]);
}
