//! The scenarios. Each builds its own manager, runs one transaction and
//! checks everything observable about it.

use std::time::Duration;

use transaction_manager::*;

use transaction_manager::{retry::Jitter, rollback::RollbackErrorKind};

use super::{Log, Recorder, Timing};

type R<T> = Result<T, StepError<&'static str>>;

impl Timing {
    /// `retries` retries with the reference's default backoff (500 ms × 2ⁿ),
    /// scaled for this runtime.
    pub fn retries(self, retries: u32) -> RetryPolicy {
        RetryPolicy::new().with_max_retries(retries).with_initial_interval(self.ms(500))
    }
}

fn manager<C: Clock>(clock: C, log: &Log) -> TransactionManager<C, Recorder> {
    TransactionManager::new(clock).with_hooks(Recorder(log.clone()))
}

/// Scenario 1: Two steps succeed: no rollback runs, the second step uses the first's
/// value, the summary counts two completed steps.
pub async fn two_steps_succeed<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let done = manager
        .run("provision", async |tx| {
            let user = tx
                .step("create_user")
                .execute(|| async {
                    log.push("exec create_user");
                    Ok(7u32)
                })
                .rollback(move |id| async move {
                    log.push(format!("undo create_user {id}"));
                    Ok::<_, &str>(())
                })
                .await?;
            let vm = tx
                .step("create_vm")
                .execute(|| async {
                    log.push(format!("exec create_vm for user {user}"));
                    Ok(format!("vm-{user}"))
                })
                .rollback(move |vm| async move {
                    log.push(format!("undo {vm}"));
                    Ok::<_, &str>(())
                })
                .await?;
            R::Ok(vm)
        })
        .await
        .expect("the transaction commits");

    assert_eq!(done.value(), "vm-7");
    assert_eq!(
        log.take(),
        [
            "hook start provision",
            "hook execute create_user #1 in_progress",
            "exec create_user",
            "hook success create_user #1 completed",
            "hook execute create_vm #1 in_progress",
            "exec create_vm for user 7",
            "hook success create_vm #1 completed",
            "hook complete provision success=true steps=2 rolled_back=0 rollback_errors=0",
        ]
    );
    let s = done.summary();
    assert_eq!(s.operation_name(), "provision");
    assert_eq!(
        (s.total_steps(), s.completed_steps(), s.failed_steps(), s.rolled_back_steps(), s.rollback_errors()),
        (2, 2, 0, 0, 0)
    );
    for (i, step) in s.steps().iter().enumerate() {
        assert_eq!((step.index(), step.status(), step.attempts()), (i, StepStatus::Completed, 1));
        assert!(step.has_rollback());
        assert_eq!((step.error(), step.rollback_attempts()), (None, 0));
    }
}

/// Scenario 2: The third step fails: the two completed steps are rolled back, latest
/// first, each with its own output; the failed step is not rolled back; the
/// error is the failed step's own, typed.
pub async fn failure_rolls_back_completed_steps_in_reverse<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let err = manager
        .run("order", async |tx| {
            let stock = tx
                .step("reserve_stock")
                .execute(|| async { Ok(3u32) })
                .rollback(move |n| async move {
                    log.push(format!("undo reserve_stock {n}"));
                    Ok::<_, &str>(())
                })
                .await?;
            let user = tx
                .step("create_user")
                .execute(|| async { Ok(format!("user-{stock}")) })
                .rollback(move |user| async move {
                    log.push(format!("undo create_user {user}"));
                    Ok::<_, &str>(())
                })
                .await?;
            tx.step("charge")
                .execute(|| async { Err::<u32, _>("card declined") })
                .rollback(move |_| async move {
                    log.push("undo charge");
                    Ok::<_, &str>(())
                })
                .await?;
            R::Ok(user)
        })
        .await
        .expect_err("the transaction fails");

    assert_eq!(log.calls(), ["undo create_user user-3", "undo reserve_stock 3"]);
    let cause = err.cause();
    assert_eq!((cause.step().as_str(), cause.index()), ("charge", 2));
    assert_eq!(cause.kind(), &StepErrorKind::Failed("card declined"));
    assert_eq!(err.rollback_state(), RollbackState::Clean);
    assert!(err.rollback_failures().is_empty());
    let statuses: Vec<_> = err.summary().steps().iter().map(StepRecord::status).collect();
    assert_eq!(statuses, [StepStatus::RolledBack, StepStatus::RolledBack, StepStatus::Failed]);
    assert_eq!(err.summary().steps()[2].rollback_attempts(), 0);
    assert_eq!(
        err.to_string(),
        format!(
            "transaction `order` ({}) failed: step `charge` failed: card declined; rolled back cleanly (2 steps)",
            err.summary().transaction_id()
        )
    );
}

/// Scenario 3: A rollback fails: rollback goes on with the earlier steps, and the
/// error carries the original cause and the rollback failure with its step.
pub async fn rollback_failure_is_reported_with_the_cause<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let err = manager
        .run("provision", async |tx| {
            tx.step("create_user")
                .execute(|| async { Ok(1u32) })
                .rollback(move |id| async move {
                    log.push(format!("undo create_user {id}"));
                    Ok::<_, &str>(())
                })
                .await?;
            tx.step("create_vm")
                .execute(|| async { Ok(2u32) })
                .rollback(move |id| async move {
                    log.push(format!("undo create_vm {id}"));
                    Err::<(), _>("hypervisor unreachable")
                })
                .await?;
            tx.step("attach_disk").run(|| async { Err::<(), _>("no capacity") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("the transaction fails");

    assert_eq!(log.calls(), ["undo create_vm 2", "undo create_user 1"]);
    assert_eq!(err.cause().kind(), &StepErrorKind::Failed("no capacity"));
    assert_eq!(err.rollback_state(), RollbackState::Partial);
    assert!(err.is_partially_rolled_back());
    let [failure] = err.rollback_failures() else {
        panic!("one rollback failure expected: {:?}", err.rollback_failures())
    };
    assert_eq!((failure.step().as_str(), failure.index()), ("create_vm", 1));
    match failure.kind() {
        RollbackErrorKind::Failed(e) => assert_eq!(e.to_string(), "hypervisor unreachable"),
        other => panic!("unexpected {other:?}"),
    }
    let steps = err.summary().steps();
    assert_eq!(steps[0].status(), StepStatus::RolledBack);
    assert_eq!(steps[1].status(), StepStatus::RollbackFailed);
    assert_eq!(steps[1].rollback_error(), Some("hypervisor unreachable"));
    assert_eq!(steps[2].status(), StepStatus::Failed);
    assert_eq!((err.summary().rolled_back_steps(), err.summary().rollback_errors()), (1, 1));
    let text = err.to_string();
    assert!(text.contains("no capacity"), "{text}");
    assert!(text.contains("PARTIALLY rolled back"), "{text}");
    assert!(text.contains("rollback of step `create_vm` failed: hypervisor unreachable"), "{text}");
}

/// The body's own error type: a step error, or a failure of the caller's
/// code between steps.
#[derive(Debug, PartialEq)]
pub enum AppError {
    Step(StepError<&'static str>),
    Validation(&'static str),
}

impl From<StepError<&'static str>> for AppError {
    fn from(e: StepError<&'static str>) -> Self {
        AppError::Step(e)
    }
}

/// Scenario 4: Steps without a rollback are passed over, and an error of the
/// caller's own code (not a step) rolls back the completed steps too.
pub async fn steps_without_rollback_are_passed_over_on_body_error<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let err = manager
        .run("import", async |tx| {
            tx.step("open_batch")
                .execute(|| async { Ok(10u32) })
                .rollback(move |b| async move {
                    log.push(format!("undo open_batch {b}"));
                    Ok::<_, &str>(())
                })
                .await?;
            let rows = tx.step("count_rows").run(|| async { Ok(0u32) }).await?;
            tx.step("write_rows")
                .execute(|| async { Ok(rows) })
                .rollback(move |n| async move {
                    log.push(format!("undo write_rows {n}"));
                    Ok::<_, &str>(())
                })
                .await?;
            if rows == 0 {
                return Err(AppError::Validation("empty batch"));
            }
            Ok(rows)
        })
        .await
        .expect_err("the body fails");

    assert_eq!(err.cause(), &AppError::Validation("empty batch"));
    assert_eq!(log.calls(), ["undo write_rows 0", "undo open_batch 10"]);
    let statuses: Vec<_> = err.summary().steps().iter().map(StepRecord::status).collect();
    assert_eq!(statuses, [StepStatus::RolledBack, StepStatus::Completed, StepStatus::RolledBack]);
    assert!(!err.summary().steps()[1].has_rollback());
    assert_eq!(err.rollback_state(), RollbackState::Clean);
}

/// Scenario 5: An attempt that outlives its timeout fails with a typed timeout; the
/// timed-out step is not rolled back, and nothing else was done.
pub async fn execute_timeout_is_a_typed_error<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let start = clock.now();
    let c = &clock;
    let err = manager
        .run("slow", async |tx| {
            tx.step("call_api")
                .timeout(t.ms(5_000))
                .execute(|| async {
                    c.sleep(t.ms(60_000)).await;
                    Ok(())
                })
                .rollback(move |()| async move {
                    log.push("undo call_api");
                    Ok::<_, &str>(())
                })
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("the step times out");

    t.assert_at(clock.now() - start, t.ms(5_000));
    assert!(err.cause().is_timeout());
    assert_eq!(err.cause().kind(), &StepErrorKind::TimedOut { timeout: t.ms(5_000) });
    assert!(err.cause().to_string().contains("timed out after"), "{}", err.cause());
    let step = &err.summary().steps()[0];
    assert_eq!((step.status(), step.timeout()), (StepStatus::Failed, Some(t.ms(5_000))));
    assert!(step.error().unwrap().starts_with("timed out after"));
    assert!(log.calls().is_empty(), "the timed-out step is not rolled back");
    let events = log.take();
    assert!(!events.iter().any(|e| e.starts_with("hook rollback")), "{events:?}");
    assert_eq!(err.rollback_state(), RollbackState::Clean);
}

/// Scenario 6: A rollback attempt that outlives its timeout is a rollback failure.
pub async fn rollback_timeout_counts_as_rollback_failure<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let start = clock.now();
    let c = clock.clone();
    let err = manager
        .transaction("provision")
        .local()
        .run(async |tx| {
            tx.step("create_user")
                .timeout(t.ms(1_000))
                .execute(|| async { Ok(5u32) })
                .rollback(move |id| {
                    let c = c.clone();
                    async move {
                        log.push(format!("undo create_user {id}"));
                        c.sleep(t.ms(10_000)).await;
                        log.push("undo finished (must not happen)");
                        Ok::<_, &str>(())
                    }
                })
                .await?;
            tx.step("create_vm").run(|| async { Err::<(), _>("quota") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("the transaction fails");

    t.assert_at(clock.now() - start, t.ms(1_000));
    assert_eq!(log.calls(), ["undo create_user 5"]);
    let [failure] = err.rollback_failures() else { panic!("one failure expected") };
    assert!(failure.kind().is_timeout());
    assert!(matches!(failure.kind(), RollbackErrorKind::TimedOut { timeout } if *timeout == t.ms(1_000)));
    assert_eq!(err.summary().steps()[0].status(), StepStatus::RollbackFailed);
    assert!(err.summary().steps()[0].rollback_error().unwrap().starts_with("timed out after"));
    assert_eq!(err.rollback_state(), RollbackState::Partial);
}

/// Scenario 7: Execute fails once, then succeeds with one retry, after exactly the
/// default 500 ms backoff.
pub async fn retry_succeeds_after_exact_backoff<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log).with_retry(t.retries(1));
    let start = clock.now();
    let c = &clock;
    let mut calls = 0;
    let done = manager
        .run("flaky", async |tx| {
            tx.step("connect")
                .run(|| {
                    calls += 1;
                    log.push(format!("exec connect at {:?}", c.now() - start));
                    let n = calls;
                    async move { if n == 1 { Err("refused") } else { Ok(n) } }
                })
                .await
        })
        .await
        .expect("the retry succeeds");

    assert_eq!(*done.value(), 2);
    let expected = [
        "hook start flaky".to_string(),
        "hook execute connect #1 in_progress".into(),
        format!("exec connect at {:?}", Duration::ZERO),
        "hook failure connect #1 in_progress: refused".into(),
        "hook execute connect #2 in_progress".into(),
        format!("exec connect at {:?}", t.ms(500)),
        "hook success connect #2 completed".into(),
        "hook complete flaky success=true steps=1 rolled_back=0 rollback_errors=0".into(),
    ];
    match t {
        Timing::Exact => assert_eq!(log.take(), expected),
        Timing::Real => assert_eq!(log.take().len(), expected.len()),
    }
    let step = &done.summary().steps()[0];
    assert_eq!((step.status(), step.attempts()), (StepStatus::Completed, 2));
    assert_eq!(step.error(), Some("refused"), "the retried error stays visible");
    t.assert_at(step.duration().unwrap(), t.ms(500));
}

/// Scenario 7b: Delays before retries 0, 1, 2 are 500 ms, 1 s, 2 s: with the default
/// policy the fourth attempt starts at 3.5 s.
pub async fn backoff_doubles_from_500ms<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let policy = match t {
        // The reference's defaults, unscaled: proves the 500 ms default.
        Timing::Exact => RetryPolicy::new().with_max_retries(3),
        Timing::Real => t.retries(3),
    };
    let manager = manager(clock.clone(), log).with_retry(policy);
    let start = clock.now();
    let c = &clock;
    let mut times = Vec::new();
    manager
        .run("backoff", async |tx| {
            tx.step("poll")
                .run(|| {
                    times.push(c.now() - start);
                    let n = times.len();
                    async move { if n < 4 { Err("not yet") } else { Ok(()) } }
                })
                .await
        })
        .await
        .expect("the fourth attempt succeeds");

    let expected = [0, 500, 1_500, 3_500].map(|ms| t.ms(ms));
    assert_eq!(times.len(), 4);
    for (actual, expected) in times.iter().zip(expected) {
        t.assert_at(*actual, expected);
    }
}

/// Scenario 8: Execute keeps failing: called `max_retries + 1` times, then the step
/// fails with the last attempt's error.
pub async fn retries_exhausted_fails_the_step<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let mut calls = 0u32;
    let err = manager
        .run("stubborn", async |tx| {
            tx.step("lock")
                .retry(t.retries(2))
                .run(|| {
                    calls += 1;
                    log.push(format!("exec lock {calls}"));
                    let error = ["busy 1", "busy 2", "busy 3"][calls as usize - 1];
                    async move { Err::<(), _>(error) }
                })
                .await
        })
        .await
        .expect_err("the step fails");

    assert_eq!(calls, 3);
    assert_eq!(err.cause().kind(), &StepErrorKind::Failed("busy 3"));
    let events = log.take();
    let failures: Vec<_> = events.iter().filter(|e| e.starts_with("hook failure")).collect();
    assert_eq!(
        failures,
        [
            "hook failure lock #1 in_progress: busy 1",
            "hook failure lock #2 in_progress: busy 2",
            "hook failure lock #3 failed: busy 3",
        ]
    );
    let step = &err.summary().steps()[0];
    assert_eq!((step.status(), step.attempts(), step.error()), (StepStatus::Failed, 3, Some("busy 3")));
    assert_eq!(err.summary().failed_steps(), 1);
}

/// Scenario 9: A rollback fails once, then succeeds on its retry (the rollback uses
/// the step's own policy by default): the step is rolled back, with no
/// rollback error in the result.
pub async fn rollback_retry_succeeds<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let c = clock.clone();
    let start = clock.now();
    let err = manager
        .transaction("provision")
        .local()
        .run(async |tx| {
            let mut attempts = 0;
            tx.step("create_user")
                .retry(t.retries(2))
                .execute(|| async { Ok(9u32) })
                .rollback(move |id| {
                    attempts += 1;
                    let now = c.now() - start;
                    async move {
                        log.push(format!("undo create_user {id} attempt {attempts} at {now:?}"));
                        if attempts == 1 { Err("locked") } else { Ok(()) }
                    }
                })
                .await?;
            tx.step("create_vm").run(|| async { Err::<(), _>("quota") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("the transaction fails");

    assert_eq!(err.rollback_state(), RollbackState::Clean);
    assert!(err.rollback_failures().is_empty());
    let step = &err.summary().steps()[0];
    assert_eq!((step.status(), step.rollback_attempts()), (StepStatus::RolledBack, 2));
    assert_eq!(step.rollback_error(), Some("locked"));
    let calls = log.calls();
    assert_eq!(calls.len(), 2);
    if let Timing::Exact = t {
        assert_eq!(calls, ["undo create_user 9 attempt 1 at 0ns", "undo create_user 9 attempt 2 at 500ms",]);
    }
}

/// Scenario 10: A rollback keeps failing: called `max_retries + 1` times, the step is
/// rollback-failed and the last error is in the result.
pub async fn rollback_retries_exhausted<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let err = manager
        .run("provision", async |tx| {
            let mut attempts = 0;
            tx.step("create_user")
                .retry(t.retries(2))
                .execute(|| async { Ok(9u32) })
                .rollback(move |_| {
                    attempts += 1;
                    async move {
                        log.push(format!("undo attempt {attempts}"));
                        Err::<(), _>(format!("still locked ({attempts})"))
                    }
                })
                .await?;
            tx.step("create_vm").run(|| async { Err::<(), _>("quota") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("the transaction fails");

    assert_eq!(log.calls(), ["undo attempt 1", "undo attempt 2", "undo attempt 3"]);
    let [failure] = err.rollback_failures() else { panic!("one failure expected") };
    assert_eq!(failure.to_string(), "rollback of step `create_user` failed: still locked (3)");
    let step = &err.summary().steps()[0];
    assert_eq!((step.status(), step.rollback_attempts()), (StepStatus::RollbackFailed, 3));
    assert_eq!(step.rollback_error(), Some("still locked (3)"));
    let events = log.take();
    let hook_failures = events.iter().filter(|e| e.starts_with("hook rollback_failure")).count();
    assert_eq!(hook_failures, 3);
    assert!(events.contains(&"hook rollback_failure create_user #3 rollback_failed: still locked (3)".to_string()));
}

/// Scenario 10b: The rollback's retries and timeout can be set apart from the step's.
pub async fn rollback_policy_can_differ_from_the_step<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let c = clock.clone();
    let start = clock.now();
    let err = manager
        .transaction("provision")
        .local()
        .run(async |tx| {
            let mut attempts = 0;
            tx.step("create_user")
                .timeout(t.ms(50))
                .rollback_timeout(None)
                .rollback_retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(t.ms(100)))
                .execute(|| async { Ok(1u32) })
                .rollback(move |_| {
                    attempts += 1;
                    let c = c.clone();
                    async move {
                        // Longer than the step's timeout: the rollback has none.
                        c.sleep(t.ms(200)).await;
                        log.push(format!("undo attempt {attempts} done at {:?}", c.now() - start));
                        if attempts == 1 { Err("flaky") } else { Ok(()) }
                    }
                })
                .await?;
            tx.step("fail").run(|| async { Err::<(), _>("boom") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("the transaction fails");

    assert_eq!(err.rollback_state(), RollbackState::Clean);
    assert_eq!(err.summary().steps()[0].rollback_attempts(), 2);
    if let Timing::Exact = t {
        assert_eq!(log.calls(), ["undo attempt 1 done at 200ms", "undo attempt 2 done at 500ms"]);
    }
}

/// Scenario 11a: Hook events of a committed transaction with a retried step.
pub async fn hooks_fire_in_order_on_success<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let mut calls = 0;
    manager
        .run("ok", async |tx| {
            tx.step("a")
                .retry(t.retries(1))
                .execute(|| {
                    calls += 1;
                    let n = calls;
                    async move { if n == 1 { Err("first try") } else { Ok(()) } }
                })
                .rollback(|()| async { Ok::<_, &str>(()) })
                .await?;
            tx.step("b").run(|| async { Ok::<_, &str>(()) }).await?;
            R::Ok(())
        })
        .await
        .expect("commits");

    assert_eq!(
        log.take(),
        [
            "hook start ok",
            "hook execute a #1 in_progress",
            "hook failure a #1 in_progress: first try",
            "hook execute a #2 in_progress",
            "hook success a #2 completed",
            "hook execute b #1 in_progress",
            "hook success b #1 completed",
            "hook complete ok success=true steps=2 rolled_back=0 rollback_errors=0",
        ]
    );
}

/// Scenario 11b: Hook events of a failed transaction: execute failures, the rollback
/// start, each failed rollback attempt, the step rolled back (once, after
/// its rollback succeeded), and exactly one completion.
pub async fn hooks_fire_in_order_on_failure<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    manager
        .run("bad", async |tx| {
            let mut undo_calls = 0;
            tx.step("a")
                .retry(t.retries(1))
                .execute(|| async { Ok(1u8) })
                .rollback(move |_| {
                    undo_calls += 1;
                    async move { if undo_calls == 1 { Err("undo busy") } else { Ok(()) } }
                })
                .await?;
            tx.step("no_undo").run(|| async { Ok::<_, &str>(()) }).await?;
            tx.step("b").retry(t.retries(1)).run(|| async { Err::<(), _>("down") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("fails");

    assert_eq!(
        log.take(),
        [
            "hook start bad",
            "hook execute a #1 in_progress",
            "hook success a #1 completed",
            "hook execute no_undo #1 in_progress",
            "hook success no_undo #1 completed",
            "hook execute b #1 in_progress",
            "hook failure b #1 in_progress: down",
            "hook execute b #2 in_progress",
            "hook failure b #2 failed: down",
            "hook rollback_start bad",
            "hook rollback_failure a #1 completed: undo busy",
            // Once, after the rollback succeeded (as the reference does).
            "hook rollback a #2 rolled_back",
            "hook complete bad success=false steps=3 rolled_back=1 rollback_errors=0",
        ]
    );
}

/// Undo records as data, for the no-allocator storage: each variant says
/// what to undo; the rollback gets the context mutably.
#[derive(Debug)]
pub enum Undo {
    Release(u32),
    PowerOff,
    Fail(&'static str),
}

impl Rollback<Vec<String>> for Undo {
    type Error = &'static str;

    async fn rollback(&mut self, undone: &mut Vec<String>) -> Result<(), Self::Error> {
        match self {
            Undo::Release(n) => undone.push(format!("release {n}")),
            Undo::PowerOff => undone.push("power off".into()),
            Undo::Fail(why) => return Err(why),
        }
        Ok(())
    }
}

/// Scenario 12: A fixed-capacity transaction that tries step N + 1 gets a typed
/// capacity error before the step runs, and the N completed steps are
/// rolled back.
pub async fn capacity_exceeded_rolls_back_what_completed<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let mut undone = Vec::new();
    let mut ran_third = false;
    let err = manager
        .transaction("bounded")
        .fixed::<Undo, 2>()
        .run_with(&mut undone, async |tx| {
            tx.step("one").execute(|| async { Ok(1u32) }).undo(|n| Undo::Release(*n)).await?;
            tx.step("two").execute(|| async { Ok(()) }).undo(|_| Undo::PowerOff).await?;
            tx.step("three")
                .execute(|| {
                    ran_third = true;
                    async { Ok(()) }
                })
                .undo(|_| Undo::PowerOff)
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("capacity is exceeded");

    assert!(!ran_third, "the step past capacity must not run");
    assert_eq!(undone, ["power off", "release 1"]);
    assert_eq!(err.cause().kind(), &StepErrorKind::CapacityExceeded { capacity: 2 });
    assert_eq!((err.cause().step().as_str(), err.cause().index()), ("three", 2));
    assert_eq!(err.summary().total_steps(), 2);
    assert_eq!(err.summary().rolled_back_steps(), 2);
    assert!(err.cause().to_string().contains("capacity of 2 steps"));
    assert!(!log.take().iter().any(|e| e.contains("three")), "hooks never saw the refused step");
}

/// A board whose peripherals the steps and rollbacks borrow mutably.
#[derive(Default, Debug)]
pub struct Board {
    rail_mv: u32,
    bus_up: bool,
    radio_up: bool,
}

pub enum BoardUndo {
    RailOff,
    BusDown,
    RadioDown,
}

impl Rollback<Board> for BoardUndo {
    type Error = &'static str;

    async fn rollback(&mut self, board: &mut Board) -> Result<(), Self::Error> {
        match self {
            BoardUndo::RailOff => board.rail_mv = 0,
            BoardUndo::BusDown => board.bus_up = false,
            BoardUndo::RadioDown => board.radio_up = false,
        }
        Ok(())
    }
}

/// The context is lent mutably to each execute, to the body between steps,
/// and to each rollback — no `RefCell`.
pub async fn context_is_lent_to_steps_and_rollbacks<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let mut board = Board::default();
    let err = manager
        .transaction("bring-up")
        .fixed::<BoardUndo, 4>()
        .run_with(&mut board, async |tx| {
            let mv = tx
                .step("power")
                .execute_with(async |b: &mut Board| {
                    b.rail_mv = 3300;
                    Ok(b.rail_mv)
                })
                .undo(|_| BoardUndo::RailOff)
                .await?;
            assert_eq!(tx.context().rail_mv, mv);
            tx.step("bus")
                .execute_with(async |b: &mut Board| {
                    b.bus_up = true;
                    Ok(())
                })
                .undo(|_| BoardUndo::BusDown)
                .await?;
            tx.step("radio")
                .execute_with(async |b: &mut Board| {
                    b.radio_up = b.bus_up;
                    Err::<(), _>("radio: no response")
                })
                .undo(|_| BoardUndo::RadioDown)
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("the radio fails");

    assert_eq!(err.cause().kind(), &StepErrorKind::Failed("radio: no response"));
    assert_eq!((board.rail_mv, board.bus_up), (0, false), "rolled back through &mut Board");
    assert!(board.radio_up, "the failed step itself is not rolled back");
}

/// The summary has every field of the reference, with times from the clock.
pub async fn summary_records_times_attempts_and_errors<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log).with_timeout(t.ms(2_000));
    let c = &clock;
    let start = clock.now();
    let err = manager
        .unnamed_transaction()
        .local()
        .run(async |tx| {
            tx.step("wait")
                .execute(|| async {
                    c.sleep(t.ms(300)).await;
                    Ok(())
                })
                .rollback(move |()| async move {
                    c.sleep(t.ms(100)).await;
                    Ok::<_, &str>(())
                })
                .await?;
            tx.step("fail").retry(t.retries(1)).run(|| async { Err::<(), _>("nope") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("fails");

    let s = err.summary();
    assert_eq!(s.operation_name().as_str(), s.transaction_id().to_string(), "defaults to the id");
    assert_eq!((s.total_steps(), s.completed_steps(), s.failed_steps()), (2, 0, 1));
    assert_eq!((s.rolled_back_steps(), s.rollback_errors()), (1, 0));
    let [wait, fail] = s.steps() else { panic!() };
    assert_eq!(wait.timeout(), Some(t.ms(2_000)));
    t.assert_at(wait.started_at().unwrap() - start, Duration::ZERO);
    t.assert_at(wait.completed_at().unwrap() - start, t.ms(300));
    t.assert_at(wait.duration().unwrap(), t.ms(300));
    t.assert_at(fail.started_at().unwrap() - start, t.ms(300));
    t.assert_at(fail.completed_at().unwrap() - start, t.ms(800));
    assert_eq!((fail.attempts(), fail.error()), (2, Some("nope")));
    t.assert_at(wait.rollback_started_at().unwrap() - start, t.ms(800));
    t.assert_at(wait.rollback_completed_at().unwrap() - start, t.ms(900));
    t.assert_at(s.duration(), t.ms(900));
    let text = s.to_string();
    assert!(text.contains("2 steps, 0 completed, 1 failed, 1 rolled back, 0 rollback errors"), "{text}");
    assert!(text.contains("#1 `fail` [failed] attempts: 2"), "{text}");
    assert!(text.contains("error: nope"), "{text}");
}

/// Jittered backoff stays within its bounds and replays exactly from the
/// same seed.
pub async fn jitter_is_reproducible_from_the_seed<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let policy = t.retries(4).with_jitter(Jitter::Full);
    let manager = manager(clock.clone(), log).with_retry(policy).with_jitter_seed(99);
    let mut runs = Vec::new();
    for _ in 0..2 {
        let c = &clock;
        let mut times = Vec::new();
        manager
            .transaction("jitter")
            .with_id(TransactionId::new(1))
            .run(async |tx| {
                tx.step("retry")
                    .run(|| {
                        times.push(c.now());
                        let n = times.len();
                        async move { if n < 5 { Err("again") } else { Ok(()) } }
                    })
                    .await
            })
            .await
            .expect("succeeds on the fifth attempt");
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        for (n, gap) in gaps.iter().enumerate() {
            if let Timing::Exact = t {
                assert!(*gap <= policy.delay(n as u32), "retry {n}: {gap:?}");
            }
        }
        runs.push(gaps);
    }
    if let Timing::Exact = t {
        assert_eq!(runs[0], runs[1], "same seed, same delays");
        assert_ne!(runs[0], (0..4).map(|n| policy.delay(n)).collect::<Vec<_>>(), "jitter applied");
    }
}

/// A step's error is a value: the body can handle it and go on, and the
/// transaction still commits.
pub async fn caller_can_recover_from_a_failed_step<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let done = manager
        .run("fallback", async |tx| {
            let primary = tx.step("primary_region").run(|| async { Err::<&str, _>("region down") }).await;
            let region = match primary {
                Ok(region) => region,
                Err(e) if matches!(e.kind(), StepErrorKind::Failed("region down")) => {
                    tx.step("backup_region").run(|| async { Ok::<_, &str>("eu-2") }).await?
                }
                Err(e) => return Err(e),
            };
            R::Ok(region)
        })
        .await
        .expect("commits on the backup");

    assert_eq!(*done.value(), "eu-2");
    let s = done.summary();
    assert_eq!((s.total_steps(), s.completed_steps(), s.failed_steps()), (2, 1, 1));
    assert!(log.take().last().unwrap().contains("success=true"));
}
