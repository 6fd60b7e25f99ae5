//! The API users reach for first (issue 16): error mapping between steps,
//! shorthands, the clock inside a step, summary wording, typed rollback
//! errors, and one bound for "any manager". On `ManualClock`: virtual time,
//! exact.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use transaction_manager::{
    Manager, ManagerFor, ManualClock, NoRollback, RetryPolicy, Rollback, StepError, StepErrorKind, StepStatus,
    TransactionManager,
    hooks::Hooks,
    journal::{JournalRun, MemoryJournal, NoJournal, Postcard},
    storage::Fixed,
};

/// A body's own error type, converting from each step's.
#[derive(Debug, PartialEq)]
enum AppError {
    Http(u16),
    Parse(&'static str),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Http(status) => write!(f, "http {status}"),
            AppError::Parse(why) => write!(f, "parse: {why}"),
        }
    }
}

impl From<u16> for AppError {
    fn from(status: u16) -> Self {
        AppError::Http(status)
    }
}

#[test]
fn steps_with_different_error_types_compose_with_question_mark() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let undone = Arc::new(Mutex::new(Vec::new()));
    let err = clock
        .block_on(manager.run("import", async |tx| {
            // u16 errors, converted per attempt on the builder.
            let body = tx
                .step("fetch")
                .execute(|| async { Ok::<_, u16>("12x") })
                .err_into::<AppError>()
                .rollback_using(&undone, |(undone, _)| async move {
                    undone.lock().unwrap().push("fetch");
                    Ok::<_, &str>(())
                })
                .await?;
            // &str errors, converted on the builder with a function.
            let n = tx
                .step("parse")
                .execute(|| async move { body.parse::<u32>().map_err(|_| "not a number") })
                .map_err(AppError::Parse)
                .no_rollback()
                .await?;
            Ok::<_, StepError<AppError>>(n)
        }))
        .unwrap_err();
    assert_eq!(err.cause().kind(), &StepErrorKind::Failed(AppError::Parse("not a number")));
    assert_eq!(err.cause().to_string(), "step `parse` failed: parse: not a number");
    // The summary keeps the converted text; the completed step was rolled back.
    assert_eq!(err.summary().steps()[1].error(), Some("parse: not a number"));
    assert_eq!(*undone.lock().unwrap(), ["fetch"]);
}

#[test]
fn step_error_map_keeps_step_index_and_kind() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let err = clock
        .block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
            tx.step("ok").run(|| async { Ok::<_, u16>(()) }).await.map_err(StepError::err_into)?;
            tx.step("slow")
                .timeout(Duration::from_millis(10))
                .run(std::future::pending::<Result<(), &str>>)
                .await
                .map_err(|e| e.map(AppError::Parse))?;
            Ok::<_, StepError<AppError>>(())
        }))
        .unwrap_err();
    let cause = err.into_cause();
    assert_eq!((cause.step().as_str(), cause.index()), ("slow", 1));
    assert_eq!(cause.kind(), &StepErrorKind::TimedOut { timeout: Duration::from_millis(10) });
    assert_eq!(cause.error(), None);
}

#[test]
fn retry_interval_shorthand_sets_the_first_delay_of_execute_and_rollback() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let mut attempts_at = Vec::new();
    let err = clock
        .block_on(manager.run("t", async |tx| {
            tx.step("flaky")
                .max_retries(2)
                .retry_interval(Duration::from_millis(100))
                .execute(|| {
                    attempts_at.push(clock.now());
                    let n = attempts_at.len();
                    async move { if n < 3 { Err("busy") } else { Ok(()) } }
                })
                .rollback(|()| async { Err::<(), _>("still busy") })
                .await?;
            tx.step("fails").run(|| async { Err::<(), _>("no") }).await
        }))
        .unwrap_err();
    let ms = |n| Duration::from_millis(n);
    assert_eq!(attempts_at, [ms(0), ms(100), ms(300)]);
    // The rollback follows the step's policy: 2 retries, 100 ms then 200 ms.
    let flaky = &err.summary().steps()[0];
    assert_eq!(flaky.rollback_attempts(), 3);
    assert_eq!((flaky.rollback_started_at(), flaky.rollback_completed_at()), (Some(ms(300)), Some(ms(600))));
    assert!(err.is_partially_rolled_back());
}

#[test]
fn durations_take_embassy_time_durations() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_timeout(embassy_time::Duration::from_millis(50));
    assert_eq!(manager.timeout(), Some(Duration::from_millis(50)));
    let err = clock
        .block_on(
            manager.transaction("t").with_deadline(embassy_time::Duration::from_secs(1)).fixed::<NoRollback, 2>().run(
                async |tx| {
                    tx.step("a")
                        .timeout(embassy_time::Duration::from_millis(20))
                        .retry_interval(embassy_time::Duration::from_millis(5))
                        .run(std::future::pending::<Result<(), &str>>)
                        .await
                },
            ),
        )
        .unwrap_err();
    assert_eq!(err.cause().kind(), &StepErrorKind::TimedOut { timeout: Duration::from_millis(20) });
    assert_eq!(clock.now(), Duration::from_millis(20));
}

#[test]
fn rollback_uncertain_using_covers_a_timed_out_step_with_shared_state() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let released = Arc::new(Mutex::new(Vec::new()));
    let err = clock
        .block_on(manager.run("t", async |tx| {
            tx.step("done")
                .execute(|| async { Ok::<_, &str>(1u32) })
                .rollback_uncertain_using(&released, |(released, seat)| async move {
                    released.lock().unwrap().push(seat.completed());
                    Ok::<_, &str>(())
                })
                .await?;
            tx.step("hangs")
                .timeout(Duration::from_secs(1))
                .execute(std::future::pending::<Result<u32, &str>>)
                .rollback_uncertain_using(&released, |(released, seat)| async move {
                    released.lock().unwrap().push(seat.completed());
                    Ok::<_, &str>(())
                })
                .await?;
            Ok::<_, StepError<&str>>(())
        }))
        .unwrap_err();
    assert!(err.rollback_state().is_clean());
    // Latest first: the uncertain step, then the completed one with its output.
    assert_eq!(*released.lock().unwrap(), [None, Some(1)]);
}

#[test]
fn a_step_reaches_the_transaction_clock() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let done = clock
        .block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
            let clock = tx.clock();
            let started = tx
                .step("settle")
                .run(|| async move {
                    let started = clock.now();
                    clock.sleep(Duration::from_millis(250)).await;
                    Ok::<_, &str>(started)
                })
                .await?;
            Ok::<_, StepError<&str>>((started, tx.clock().now()))
        }))
        .unwrap();
    assert_eq!(done.into_value(), (Duration::ZERO, Duration::from_millis(250)));
}

#[test]
fn summary_shows_a_retried_success_as_its_last_failed_attempt() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let mut calls = 0;
    let done = clock
        .block_on(manager.transaction("order").fixed::<NoRollback, 1>().run(async |tx| {
            tx.step("charge")
                .retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(Duration::from_millis(10)))
                .run(|| {
                    calls += 1;
                    let n = calls;
                    async move { if n == 1 { Err("503 unavailable") } else { Ok(()) } }
                })
                .await
        }))
        .unwrap();
    let step = &done.summary().steps()[0];
    assert_eq!((step.status(), step.succeeded(), step.error()), (StepStatus::Completed, true, Some("503 unavailable")));
    let text = done.summary().to_string();
    assert!(text.starts_with("transaction `order` (tx-1): 1 steps"), "{text}");
    assert!(
        text.contains("#0 `charge` [completed] attempts: 2, took 10ms, last failed attempt: 503 unavailable"),
        "{text}"
    );
    assert!(!text.contains("error:"), "{text}");
}

#[test]
fn summary_and_errors_quote_step_names_alike() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let err = clock
        .block_on(
            manager
                .transaction("order")
                .fixed::<NoRollback, 1>()
                .run(async |tx| tx.step("charge").run(|| async { Err::<(), _>("card declined") }).await),
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "transaction `order` (tx-1) failed: step `charge` failed: card declined; nothing to roll back"
    );
    let text = err.summary().to_string();
    assert!(text.starts_with("transaction `order` (tx-1):"), "{text}");
    assert!(text.contains("#0 `charge` [failed] attempts: 1, took 0ns, error: card declined"), "{text}");
}

/// A rollback error of a type of its own, to downcast to.
#[derive(Debug, PartialEq)]
struct Conflict {
    version: u32,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conflict at version {}", self.version)
    }
}

impl std::error::Error for Conflict {}

#[test]
fn rollback_failures_downcast_to_their_own_type() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let err = clock
        .block_on(manager.run("t", async |tx| {
            tx.step("a")
                .execute(|| async { Ok::<_, &str>(3u32) })
                .rollback(|version| async move { Err::<(), _>(Conflict { version }) })
                .await?;
            tx.step("b").execute(|| async { Ok::<_, &str>(()) }).rollback(|()| async { Err::<(), _>("gone") }).await?;
            tx.step("c").run(|| async { Err::<(), _>("down") }).await
        }))
        .unwrap_err();
    let failures = err.rollback_failures();
    assert_eq!(failures.len(), 2);
    // Latest first: `b` (a &str error: compare its text), then `a`.
    assert_eq!(failures[0].downcast_ref::<Conflict>(), None);
    assert_eq!(failures[0].error().map(ToString::to_string).as_deref(), Some("gone"));
    assert_eq!(failures[1].downcast_ref::<Conflict>(), Some(&Conflict { version: 3 }));
}

/// A library function written against `Manager`: closure rollbacks need a
/// manager without a journal, and no further bound.
async fn provision(manager: &impl Manager<Journal = NoJournal>) -> Result<u32, StepError<&'static str>> {
    let done = manager
        .manager()
        .run("provision", async |tx| {
            tx.step("create").execute(|| async { Ok::<_, &str>(7) }).rollback(|_| async { Ok::<_, &str>(()) }).await
        })
        .await
        .map_err(|e| e.into_cause())?;
    Ok(done.into_value())
}

/// A fixed undo log names its undo type and capacity in the bound (and,
/// on any manager, journaled or not, bounds its journal: see `reserve_ip`).
async fn health_check(
    manager: &impl ManagerFor<NoRollback, Fixed<2>, Journal = NoJournal>,
) -> Result<u32, StepError<&'static str>> {
    let done = manager
        .manager()
        .transaction("health-check")
        .fixed::<NoRollback, 2>()
        .run(async |tx| {
            let a = tx.step("ping_a").run(|| async { Ok(1) }).await?;
            let b = tx.step("ping_b").run(|| async { Ok(2) }).await?;
            Ok::<_, StepError<&str>>(a + b)
        })
        .await
        .map_err(|e| e.into_cause())?;
    Ok(done.into_value())
}

#[test]
fn one_bound_accepts_any_manager() {
    struct Counting(Arc<Mutex<u32>>);
    impl Hooks for Counting {
        async fn on_transaction_start(&self, _: &transaction_manager::TransactionInfo) {
            *self.0.lock().unwrap() += 1;
        }
    }
    let clock = ManualClock::new();
    let started = Arc::new(Mutex::new(0));
    let plain = TransactionManager::new(&clock);
    let with_hooks = TransactionManager::new(&clock).with_hooks(Counting(started.clone()));
    assert_eq!(clock.block_on(provision(&plain)), Ok(7));
    assert_eq!(clock.block_on(provision(&with_hooks)), Ok(7));
    assert_eq!(clock.block_on(health_check(&with_hooks)), Ok(3));
    // `&&TransactionManager` works too.
    assert_eq!(clock.block_on(provision(&&with_hooks)), Ok(7));
    assert_eq!(*started.lock().unwrap(), 3);
}

/// Undo records that are data, for a library function that takes any
/// manager, journaled or not.
#[derive(serde::Serialize, serde::Deserialize)]
enum ReleaseIp {
    Ip(u32),
}

static RELEASED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Rollback<()> for ReleaseIp {
    type Error = &'static str;
    async fn rollback(&mut self, _: &mut ()) -> Result<(), &'static str> {
        let ReleaseIp::Ip(ip) = self;
        RELEASED.fetch_add(*ip, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

/// Reserves an IP, then fails if `fail`: the IP is released again.
async fn reserve_ip<M: ManagerFor<ReleaseIp, Fixed<2>>>(manager: &M, fail: bool) -> Result<u32, StepError<&'static str>>
where
    M::Journal: JournalRun<ReleaseIp, StepError<&'static str>>,
{
    let done = manager
        .manager()
        .transaction("reserve-ip")
        .fixed::<ReleaseIp, 2>()
        .run(async |tx| {
            let ip = tx.step("reserve").execute(|| async { Ok::<_, &str>(10) }).undo(|ip| ReleaseIp::Ip(*ip)).await?;
            tx.step("check").run(|| async move { if fail { Err("taken") } else { Ok(ip) } }).await
        })
        .await
        .map_err(|e| e.into_cause())?;
    Ok(done.into_value())
}

#[test]
fn one_bound_accepts_a_journaled_manager_for_undo_records_that_are_data() {
    let clock = ManualClock::new();
    let journaled = TransactionManager::new(&clock).with_journal(MemoryJournal::new(), Postcard::<1>);
    assert_eq!(clock.block_on(reserve_ip(&journaled, false)), Ok(10));
    let error = clock.block_on(reserve_ip(&journaled, true)).unwrap_err();
    assert_eq!(error.step(), "check");
    assert_eq!(RELEASED.load(std::sync::atomic::Ordering::SeqCst), 10);
    // Committed or rolled back: nothing left for recovery.
    let recovered = clock.block_on(journaled.recover::<ReleaseIp, Fixed<2>, _>(&mut ())).unwrap();
    assert_eq!(recovered.found(), 0);
    // And the same function on a manager without a journal.
    assert_eq!(clock.block_on(reserve_ip(&TransactionManager::new(&clock), false)), Ok(10));
}

/// Without per-step times (`with_step_times(false)`) no step or rollback
/// time is recorded, and the rest — timeouts, rollback, the transaction's
/// own times — works as before.
#[test]
fn step_times_can_be_turned_off() {
    use std::time::Duration;
    use transaction_manager::{ManualClock, StepError, StepStatus, TransactionManager};

    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_step_times(false);
    let c = &clock;
    let err = clock
        .block_on(manager.run("no times", async |tx| {
            tx.step("a").execute(|| async { Ok(1u8) }).rollback(|_| async { Ok::<_, &str>(()) }).await?;
            tx.step("slow")
                .timeout(Duration::from_millis(10))
                .run(|| async {
                    c.sleep(Duration::from_secs(1)).await;
                    Ok::<_, &str>(())
                })
                .await?;
            Ok::<_, StepError<&str>>(())
        }))
        .expect_err("the second step times out");
    assert!(err.cause().is_timeout());
    let steps = err.summary().steps();
    assert_eq!((steps[0].status(), steps[1].status()), (StepStatus::RolledBack, StepStatus::Failed));
    for step in steps {
        assert_eq!((step.started_at(), step.completed_at(), step.duration()), (None, None, None));
        assert_eq!((step.rollback_started_at(), step.rollback_completed_at()), (None, None));
    }
    assert_eq!(err.summary().duration(), Duration::from_millis(10));
}

/// With `Stop`, a rollback that fails for good in a group rolling back
/// concurrently lets the group's other rollbacks run (they are already
/// running), then stops: the step before the group is left as it is.
#[test]
fn stop_policy_with_concurrent_group_rollbacks_skips_the_steps_before() {
    use std::sync::{Arc, Mutex};
    use transaction_manager::{group::member, rollback::RollbackFailurePolicy};
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock).with_rollback_failure_policy(RollbackFailurePolicy::Stop);
    let undone = Arc::new(Mutex::new(Vec::new()));
    let log = |name: &'static str, ok: bool| {
        let undone = undone.clone();
        move |_| {
            let undone = undone.clone();
            async move {
                undone.lock().unwrap().push(name);
                if ok { Ok(()) } else { Err("stuck") }
            }
        }
    };
    let err = clock
        .block_on(manager.run("stop", async |tx| {
            tx.step("before").execute(|| async { Ok::<_, &str>(()) }).rollback(log("before", true)).await?;
            tx.group()
                .roll_back_concurrently()
                .run((
                    member("a").execute(|| async { Ok::<_, &str>(()) }).rollback(log("a", false)),
                    member("b").execute(|| async { Ok::<_, &str>(()) }).rollback(log("b", true)),
                ))
                .await?;
            tx.step("fails").run(|| async { Err::<(), _>("no") }).await?;
            Ok::<_, StepError<&str>>(())
        }))
        .unwrap_err();
    assert_eq!(*undone.lock().unwrap(), ["b", "a"], "both group rollbacks ran; `before` did not");
    let statuses: Vec<_> = err.summary().steps().iter().map(|s| s.status()).collect();
    assert_eq!(
        statuses,
        [StepStatus::RollbackSkipped, StepStatus::RollbackFailed, StepStatus::RolledBack, StepStatus::Failed]
    );
    // The summary says so, in both forms.
    let said = err.summary().to_string();
    assert!(said.contains("1 rollback errors, 1 rollbacks skipped, took "), "{said}");
    assert!(format!("{:?}", err.summary()).contains("rollback_skipped_steps: 1"));
    assert_eq!(err.rollback_failures().len(), 1);
    assert!(err.is_partially_rolled_back());
}

/// Undo records for `run_with_into_ends_as_run_with_returns`: `Stuck`
/// fails its rollback.
enum Release {
    Ok(&'static str),
    Stuck,
}

impl transaction_manager::Rollback<Vec<&'static str>> for Release {
    type Error = &'static str;

    async fn rollback(&mut self, log: &mut Vec<&'static str>) -> Result<(), &'static str> {
        match self {
            Release::Ok(what) => {
                log.push(what);
                Ok(())
            }
            Release::Stuck => Err("stuck"),
        }
    }
}

#[test]
fn run_with_into_ends_as_run_with_returns() {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    // Step `c` fails when `fail` is set: `b`'s rollback fails, `a`'s runs.
    let body = |fail: bool| {
        async move |tx: &mut transaction_manager::Transaction<'_, _, Vec<&'static str>, Release, Fixed<3>>| {
            tx.step("a").execute_with(async |_: &mut Vec<_>| Ok::<_, &str>(1u32)).undo(|_| Release::Ok("a")).await?;
            tx.step("b").execute_with(async |_: &mut Vec<_>| Ok::<_, &str>(2u32)).undo(|_| Release::Stuck).await?;
            let c = tx.step("c").execute_with(async move |_: &mut Vec<_>| if fail { Err("down") } else { Ok(3u32) });
            c.no_rollback().await
        }
    };
    for fail in [false, true] {
        let mut returned_log = Vec::new();
        let returned =
            clock.block_on(manager.transaction("t").fixed::<Release, 3>().run_with(&mut returned_log, body(fail)));
        // The slot starts full: the previous outcome is replaced.
        let mut into_log = Vec::new();
        let mut slot =
            Some(clock.block_on(manager.transaction("t").fixed::<Release, 3>().run_with(&mut Vec::new(), body(!fail))));
        clock.block_on(manager.transaction("t").fixed::<Release, 3>().run_with_into(
            &mut into_log,
            &mut slot,
            body(fail),
        ));
        let written = slot.expect("the outcome is written");
        assert_eq!(into_log, returned_log);
        let summaries = match (&returned, &written) {
            (Ok(a), Ok(b)) => {
                assert_eq!((a.value(), b.value()), (&3, &3));
                (a.summary(), b.summary())
            }
            (Err(a), Err(b)) => {
                assert_eq!(a.cause().to_string(), b.cause().to_string());
                assert_eq!(b.cause().to_string(), "step `c` failed: down");
                let failures = |e: &transaction_manager::TransactionError<_, _, _>| {
                    e.rollback_failures().iter().map(|f| (f.step().to_string(), f.to_string())).collect::<Vec<_>>()
                };
                assert_eq!(failures(a), failures(b));
                assert_eq!(failures(b).len(), 1);
                assert_eq!(a.is_partially_rolled_back(), b.is_partially_rolled_back());
                (a.summary(), b.summary())
            }
            _ => panic!("one committed, the other did not"),
        };
        let steps = |s: &transaction_manager::Summary<Fixed<3>>| {
            s.steps().iter().map(|r| (r.name().to_string(), r.status(), r.attempts())).collect::<Vec<_>>()
        };
        assert_eq!(steps(summaries.0), steps(summaries.1));
        assert_eq!(summaries.1.operation_name(), "t");
        if fail {
            assert_eq!(summaries.1.steps()[1].status(), StepStatus::RollbackFailed);
            assert_eq!(into_log, ["a"]);
        }
    }
}

/// A group the body drops (its own timeout around it) after some members
/// completed: each member still running is recorded as interrupted, also
/// when steps ran before the group and the member still running is two
/// records past the first (the search for steps in progress starts at a
/// mark, which must not pass it).
#[test]
fn a_group_dropped_by_the_body_records_its_running_members_as_interrupted() {
    // With no step before the group too: the mark is then below the
    // member still running by more than it is itself.
    for before in [&["a", "b", "c"][..], &[][..]] {
        group_dropped_after(before);
    }
}

fn group_dropped_after(before: &[&'static str]) {
    use std::future::{Future, poll_fn};
    use std::pin::pin;
    use std::task::Poll;
    use transaction_manager::group::member;
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let c = &clock;
    let done = clock
        .block_on(manager.transaction("select").fixed::<NoRollback, 8>().run(async |tx| {
            for &name in before {
                tx.step(name).run(|| async { Ok::<_, &str>(()) }).await?;
            }
            {
                let group = tx.group().run([1u64, 2, 1000].map(|secs| {
                    member(format!("m{secs}")).execute(move || async move {
                        c.sleep(Duration::from_secs(secs)).await;
                        Ok::<_, &str>(())
                    })
                }));
                let mut group = pin!(group);
                let mut waited = pin!(c.sleep(Duration::from_secs(10)));
                poll_fn(|cx| match group.as_mut().poll(cx) {
                    Poll::Ready(_) => Poll::Ready(()),
                    Poll::Pending => waited.as_mut().poll(cx),
                })
                .await;
            }
            tx.step("after").run(|| async { Ok::<_, &str>(()) }).await?;
            Ok::<_, StepError<&str>>(())
        }))
        .expect("the body commits");
    let summary = done.summary();
    let statuses: Vec<(String, StepStatus)> =
        summary.steps().iter().map(|s| (s.name().to_string(), s.status())).collect();
    let names: Vec<&str> = before.iter().copied().chain(["m1", "m2", "m1000", "after"]).collect();
    let expected: Vec<(String, StepStatus)> = names
        .iter()
        .map(|n| (n.to_string(), if *n == "m1000" { StepStatus::Failed } else { StepStatus::Completed }))
        .collect();
    assert_eq!(statuses, expected);
    let running = &summary.steps()[before.len() + 2];
    assert!(running.error().unwrap().contains("interrupted"), "{:?}", running.error());
    assert_eq!(summary.completed_steps() + summary.failed_steps(), summary.total_steps());
}

/// A rollback's retry condition is asked only when a retry could follow:
/// on the last attempt the error is recorded as it is, not as "not
/// retried: permanent".
#[test]
fn a_rollback_condition_is_not_asked_on_the_last_attempt() {
    struct Locked(Arc<Mutex<u32>>);
    impl transaction_manager::Rollback<()> for Locked {
        type Error = &'static str;
        async fn rollback(&mut self, _: &mut ()) -> Result<(), &'static str> {
            Err("record is locked")
        }
        fn retry_if(&mut self, _: &&'static str) -> bool {
            *self.0.lock().unwrap() += 1;
            false
        }
    }
    let asked = Arc::new(Mutex::new(0));
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let error = clock
        .block_on(manager.transaction("t").fixed::<Locked, 2>().run(async |tx| {
            tx.step("record")
                .rollback_retry(RetryPolicy::new().with_max_retries(0))
                .execute(|| async { Ok::<_, &str>(()) })
                .undo(|()| Locked(asked.clone()))
                .await?;
            tx.step("fails").run(|| async { Err::<(), _>("boom") }).await
        }))
        .unwrap_err();
    let record = &error.summary().steps()[0];
    assert_eq!((record.status(), record.rollback_attempts()), (StepStatus::RollbackFailed, 1));
    assert_eq!(record.rollback_error(), Some("record is locked"));
    assert_eq!(*asked.lock().unwrap(), 0, "no retry could follow: nothing to ask");
}

/// An uncertain undo record that cannot be made (its maker panics) stops a
/// step and a group member alike before their first attempt: each fails
/// for good, not retried, its execute function never called, its record
/// naming the panic.
#[test]
fn an_undo_maker_that_panics_stops_a_step_and_a_member_alike() {
    use transaction_manager::group::member;
    #[derive(Debug)]
    struct Undo;
    impl Rollback<()> for Undo {
        type Error = &'static str;
        async fn rollback(&mut self, _: &mut ()) -> Result<(), &'static str> {
            Ok(())
        }
    }
    for in_group in [false, true] {
        let clock = ManualClock::new();
        let manager = TransactionManager::new(&clock).with_retry(RetryPolicy::new().with_max_retries(3));
        let calls = Arc::new(Mutex::new(0));
        let err = clock
            .block_on(manager.transaction("t").fixed::<Undo, 1>().run(async |tx| {
                let calls = calls.clone();
                let execute = move || {
                    *calls.lock().unwrap() += 1;
                    async { Ok::<_, &str>(()) }
                };
                if in_group {
                    tx.parallel((member("a")
                        .execute(execute)
                        .undo_uncertain(|_| -> Undo { panic!("no undo for you") }),))
                        .await
                        .map_err(|e| e.into_first())?;
                } else {
                    tx.step("a").execute(execute).undo_uncertain(|_| -> Undo { panic!("no undo for you") }).await?;
                }
                Ok::<_, StepError<&str>>(())
            }))
            .unwrap_err();
        assert!(matches!(err.cause().kind(), StepErrorKind::Panicked(_)), "in a group: {in_group}: {:?}", err.cause());
        let record = &err.summary().steps()[0];
        assert_eq!((record.status(), record.attempts()), (StepStatus::Failed, 1), "in a group: {in_group}");
        assert!(record.error().unwrap().contains("no undo for you"), "in a group: {in_group}: {:?}", record.error());
        assert_eq!(*calls.lock().unwrap(), 0, "in a group: {in_group}: execute was called");
    }
}
