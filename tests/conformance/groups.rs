//! Parallel groups and scopes: members that run at the same time from one
//! task, and nested transactions that roll back only their own steps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use transaction_manager::*;

use transaction_manager::{
    abandon::{AbandonPolicy, Abandoned},
    group::member,
    interrupt::InterruptReason,
    step::Maybe,
    storage::Fixed,
};

use super::reliability::{Rig, ToRollbackTask, Undo, assert_each_completed_step_undone_once, poll_then_drop};
use super::{Log, Recorder, Timing};

type R<T> = Result<T, StepError<&'static str>>;

fn manager<C: Clock>(clock: C, log: &Log) -> TransactionManager<C, Recorder> {
    TransactionManager::new(clock).with_hooks(Recorder(log.clone()))
}

/// A group member fails for good while another is in flight: by default the
/// other runs to completion (its value counts), then the body's `?` rolls
/// it back. The group's error is the failed member's, typed.
pub async fn group_member_failure_lets_the_others_finish<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let c = &clock;
    let start = clock.now();
    let err = manager
        .run("provision", async |tx| {
            let (vm, ip) = tx
                .parallel((
                    member("create_vm")
                        .execute(|| async {
                            log.push("exec create_vm");
                            c.sleep(t.ms(5_000)).await;
                            log.push("created vm");
                            Ok("vm-1")
                        })
                        .rollback(move |vm| async move {
                            log.push(format!("undo {vm}"));
                            Ok::<_, &str>(())
                        }),
                    member("reserve_ip").retry(t.retries(1)).execute(|| async {
                        log.push("exec reserve_ip");
                        c.sleep(t.ms(100)).await;
                        Err::<&str, _>("no free address")
                    }),
                ))
                .await?;
            R::Ok((vm, ip))
        })
        .await
        .expect_err("reserve_ip fails");

    // reserve_ip: 100 ms, 500 ms backoff, 100 ms; create_vm ends at 5 s
    // (far apart, also on a busy real clock).
    t.assert_at(clock.now() - start, t.ms(5_000));
    assert_eq!(err.cause().to_string(), "step `reserve_ip` failed: no free address");
    assert_eq!((err.cause().step().as_str(), err.cause().index()), ("reserve_ip", 1));
    assert!(err.rollback_state().is_clean());
    assert_eq!(
        log.take(),
        [
            "hook start provision",
            "hook execute create_vm #1 in_progress",
            "hook execute reserve_ip #1 in_progress",
            "exec create_vm",
            "exec reserve_ip",
            "hook failure reserve_ip #1 in_progress: no free address",
            "hook execute reserve_ip #2 in_progress",
            "exec reserve_ip",
            "hook failure reserve_ip #2 failed: no free address",
            "created vm",
            "hook success create_vm #1 completed",
            "hook rollback_start provision",
            "undo vm-1",
            "hook rollback create_vm #1 rolled_back",
            "hook complete provision success=false steps=2 rolled_back=1 rollback_errors=0",
        ]
    );
    let steps = err.summary().steps();
    assert_eq!((steps[0].status(), steps[0].attempts()), (StepStatus::RolledBack, 1));
    assert_eq!((steps[1].status(), steps[1].attempts()), (StepStatus::Failed, 2));
    t.assert_at(steps[0].completed_at().unwrap() - start, t.ms(5_000));
    t.assert_at(steps[1].completed_at().unwrap() - start, t.ms(700));
}

/// The same with `cancel_on_failure`: the members in flight are dropped
/// when one fails. They fail as cancelled, with an uncertain outcome:
/// rolled back (with `Maybe::Uncertain`) only if they opted in. Every
/// failure is in the group's error.
pub async fn group_member_failure_can_cancel_the_others<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let c = &clock;
    let start = clock.now();
    let err = manager
        .run("provision", async |tx| {
            let group = tx
                .group()
                .cancel_on_failure()
                .run((
                    member("create_vm")
                        .execute(|| async {
                            c.sleep(t.ms(2_000)).await;
                            log.push("created vm (must not happen)");
                            Ok("vm-1")
                        })
                        .rollback_uncertain(move |vm: Maybe<&'static str>| async move {
                            log.push(format!("undo create_vm {vm:?}"));
                            Ok::<_, &str>(())
                        }),
                    member("attach_disk")
                        .execute(|| async {
                            c.sleep(t.ms(3_000)).await;
                            Ok("disk-1")
                        })
                        .rollback(move |_| async move {
                            log.push("undo attach_disk (must not happen: it did not opt in)");
                            Ok::<_, &str>(())
                        }),
                    member("reserve_ip").execute(|| async {
                        c.sleep(t.ms(100)).await;
                        Err::<&str, _>("no free address")
                    }),
                ))
                .await;
            let err = group.expect_err("reserve_ip fails");
            assert_eq!(err.first().step(), "reserve_ip");
            let others: Vec<_> = err.others().iter().map(|e| (e.step().to_string(), e.kind().as_str())).collect();
            assert_eq!(others, [("create_vm".into(), "cancelled"), ("attach_disk".into(), "cancelled")]);
            assert!(err.others()[0].kind().is_uncertain());
            Err::<(), _>(StepError::from(err))
        })
        .await
        .expect_err("the group fails");

    t.assert_at(clock.now() - start, t.ms(100));
    assert_eq!(err.cause().step(), "reserve_ip");
    assert_eq!(log.calls(), ["undo create_vm Uncertain"]);
    let steps = err.summary().steps();
    let statuses: Vec<_> = steps.iter().map(|s| (s.name().as_str(), s.status())).collect();
    assert_eq!(
        statuses,
        [
            ("create_vm", StepStatus::RolledBack),
            ("attach_disk", StepStatus::Failed),
            ("reserve_ip", StepStatus::Failed)
        ]
    );
    #[cfg(feature = "std")]
    assert_eq!(steps[1].error(), Some("cancelled: another member of its group failed"));
    assert!(
        log.take()
            .contains(&"hook failure attach_disk #1 failed: cancelled: another member of its group failed".into())
    );
}

/// A group's undo records keep the order in which its members completed:
/// a later failure rolls them back in reverse completion order, and a
/// rollback that fails for good is reported while the others still run.
pub async fn group_rollbacks_run_in_reverse_completion_order_and_may_fail<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let c = &clock;
    let err = manager
        .run("order", async |tx| {
            let make = |name: &'static str, ms: u64, rollback_fails: bool| {
                member(name)
                    .retry(t.retries(1))
                    .execute(move || async move {
                        c.sleep(t.ms(ms)).await;
                        log.push(format!("done {name}"));
                        Ok::<_, &str>(name)
                    })
                    .rollback(move |name| async move {
                        log.push(format!("undo {name}"));
                        if rollback_fails { Err("locked") } else { Ok(()) }
                    })
            };
            tx.parallel([make("a", 300, false), make("b", 100, false), make("c", 200, true)]).await?;
            tx.step("charge").run(|| async { Err::<(), _>("card declined") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("charge fails");

    // Completion order: b, c, a in virtual time. On a real clock a loaded
    // machine may fire the three timers (1–3 ms apart) in one tick, and the
    // members then complete in the order they are polled; the rollbacks
    // follow whatever order they completed in, reversed.
    let calls = log.calls();
    let completed: Vec<_> = calls.iter().filter_map(|e| e.strip_prefix("done ")).collect();
    if matches!(t, Timing::Exact) {
        assert_eq!(completed, ["b", "c", "a"]);
    }
    let mut expected: Vec<String> = completed.iter().map(|n| format!("done {n}")).collect();
    for name in completed.iter().rev() {
        // c's rollback fails and is retried once.
        let times = if *name == "c" { 2 } else { 1 };
        expected.extend(std::iter::repeat_n(format!("undo {name}"), times));
    }
    assert_eq!(calls, expected, "rolled back in reverse completion order; c's rollback retried once");
    assert!(err.is_partially_rolled_back());
    assert_eq!(err.rollback_failures().len(), 1);
    assert_eq!((err.rollback_failures()[0].step().as_str(), err.rollback_failures()[0].index()), ("c", 2));
    let statuses: Vec<_> = err.summary().steps().iter().map(|s| (s.index(), s.status())).collect();
    assert_eq!(
        statuses,
        [
            (0, StepStatus::RolledBack),
            (1, StepStatus::RolledBack),
            (2, StepStatus::RollbackFailed),
            (3, StepStatus::Failed)
        ]
    );
    assert_eq!(err.summary().rollback_errors(), 1);
}

/// With `roll_back_concurrently`, a group's rollbacks run at the same time,
/// each with its own retries: the rollback takes as long as the slowest
/// (450 ms here, 850 ms one after another). They start latest first; the
/// step before the group is rolled back once all of them ended; a rollback
/// that fails for good is reported while the others still run; the
/// members' last hooks run after the group's rollbacks, in the order they
/// ended.
pub async fn group_rollbacks_can_run_concurrently<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let c = &clock;
    let start = clock.now();
    let err = manager
        .transaction("concurrent")
        .local()
        .run(async |tx| {
            tx.step("reserve")
                .execute(|| async { Ok::<_, &str>("reserve") })
                .rollback(move |name| async move {
                    log.push(format!("undo {name}"));
                    Ok::<_, &str>(())
                })
                .await?;
            let make = |name: &'static str, undo_ms: u64, undo_fails: bool| {
                member(name)
                    .rollback_retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(t.ms(50)))
                    .execute(move || async move { Ok::<_, &str>(name) })
                    .rollback(move |name| async move {
                        log.push(format!("undo {name} start"));
                        c.sleep(t.ms(undo_ms)).await;
                        log.push(format!("undo {name} end"));
                        if undo_fails { Err::<(), _>("locked") } else { Ok(()) }
                    })
            };
            tx.group()
                .roll_back_concurrently()
                .run([make("a", 300, false), make("b", 100, false), make("c", 200, true)])
                .await?;
            tx.step("charge").run(|| async { Err::<(), _>("card declined") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("charge fails");

    t.assert_at(clock.now() - start, t.ms(450));
    let rollbacks: Vec<_> = log.take().into_iter().skip_while(|e| !e.starts_with("hook rollback_start")).collect();
    if matches!(t, Timing::Real) {
        // A real clock on a loaded machine may fire timers 0.5–1 ms apart
        // in one tick: check what does not depend on it. The three start in
        // one poll, latest first; `reserve` and the members' last hooks
        // come once every rollback of the group ended.
        assert_eq!(rollbacks[1..4], ["undo c start", "undo b start", "undo a start"]);
        let last_end = rollbacks.iter().rposition(|e| e.ends_with(" end")).unwrap();
        let reserve = rollbacks.iter().position(|e| e == "undo reserve").unwrap();
        assert!(last_end < reserve, "{rollbacks:?}");
        for hook in ["hook rollback b #1 rolled_back", "hook rollback a #1 rolled_back"] {
            let at = rollbacks.iter().position(|e| e == hook).unwrap();
            assert!(last_end < at && at < reserve, "{hook}: {rollbacks:?}");
        }
        assert_eq!(rollbacks.iter().filter(|e| *e == "undo c end").count(), 2);
    } else {
        assert_eq!(
            rollbacks,
            [
                "hook rollback_start concurrent",
                "undo c start",
                "undo b start",
                "undo a start",
                "undo b end",
                "undo c end",
                "hook rollback_failure c #1 completed: locked",
                "undo c start",
                "undo a end",
                "undo c end",
                "hook rollback b #1 rolled_back",
                "hook rollback a #1 rolled_back",
                "hook rollback_failure c #2 rollback_failed: locked",
                "undo reserve",
                "hook rollback reserve #1 rolled_back",
                "hook complete concurrent success=false steps=5 rolled_back=3 rollback_errors=1",
            ]
        );
    }
    assert!(err.is_partially_rolled_back());
    let failures: Vec<_> = err.rollback_failures().iter().map(|f| (f.step().as_str(), f.index())).collect();
    assert_eq!(failures, [("c", 3)]);
    let steps = err.summary().steps();
    let statuses: Vec<_> = steps.iter().map(|s| (s.name().as_str(), s.status())).collect();
    assert_eq!(
        statuses,
        [
            ("reserve", StepStatus::RolledBack),
            ("a", StepStatus::RolledBack),
            ("b", StepStatus::RolledBack),
            ("c", StepStatus::RollbackFailed),
            ("charge", StepStatus::Failed)
        ]
    );
    for member in &steps[1..4] {
        t.assert_at(member.rollback_started_at().unwrap() - start, Duration::ZERO);
    }
    t.assert_at(steps[2].rollback_completed_at().unwrap() - start, t.ms(100));
    t.assert_at(steps[1].rollback_completed_at().unwrap() - start, t.ms(300));
    assert_eq!(steps[3].rollback_attempts(), 2);
    t.assert_at(steps[0].rollback_started_at().unwrap() - start, t.ms(450));
}

/// An undo record that needs no context: it carries its clock and log.
pub struct SlowUndo<C> {
    pub n: u8,
    pub clock: C,
    pub log: &'static Log,
    pub delay: Duration,
}

impl<C: Clock> Rollback<()> for SlowUndo<C> {
    type Error = &'static str;

    async fn rollback(&mut self, _: &mut ()) -> Result<(), &'static str> {
        self.clock.sleep(self.delay).await;
        // Recorded at the end of the rollback, in the same poll it returns.
        self.log.push(format!("undo {}", self.n));
        Ok(())
    }
}

/// Hands the owed rollbacks of a dropped transaction without a context to
/// a "rollback task" (a list the test drains).
pub struct ToUnitRollbackTask<C>(pub Arc<Mutex<Vec<AbandonedSlowUndo<C>>>>);

type AbandonedSlowUndo<C> = Abandoned<SlowUndo<C>, Fixed<4>>;

impl<C, H> AbandonPolicy<C, H, (), SlowUndo<C>, Fixed<4>> for ToUnitRollbackTask<C> {
    fn abandon(&self, _: &C, _: &H, abandoned: Abandoned<SlowUndo<C>, Fixed<4>>) {
        self.0.lock().unwrap().push(abandoned);
    }
}

/// A transaction dropped after k polls, for every k, while its group's
/// rollbacks run at the same time (and before, and after): every member
/// that completed is rolled back exactly once. Those whose rollback had
/// ended when the transaction was dropped are not rolled back again by the
/// task it handed its records to.
pub async fn dropped_during_concurrent_rollbacks_rolls_back_each_member_once<C: Clock + Clone>(clock: C, t: Timing) {
    let mut k = 0;
    let mut mid_batch = 0;
    loop {
        let log = Log::leaked();
        let task = ToUnitRollbackTask(Arc::default());
        let manager = TransactionManager::new(clock.clone()).with_abandon_policy(ToUnitRollbackTask(task.0.clone()));
        let c = &clock;
        let undo = |n: u8| SlowUndo { n, clock: clock.clone(), log, delay: t.ms(10 * u64::from(n)) };
        let finished = {
            let transaction = manager.transaction("drop me").fixed::<SlowUndo<C>, 4>().run(async |tx| {
                tx.group()
                    .roll_back_concurrently()
                    .run([1u8, 2, 3].map(|n| {
                        member(format!("m{n}"))
                            .execute(move || async move {
                                c.sleep(t.ms(5 * u64::from(n))).await;
                                log.push(format!("done {n}"));
                                Ok::<_, &str>(n)
                            })
                            .undo(move |n| undo(*n))
                    }))
                    .await?;
                tx.step("fails").run(|| async { Err::<(), _>("boom") }).await?;
                R::Ok(())
            });
            poll_then_drop(transaction, k, c, t.ms(1)).await
        };
        let calls_at_drop = log.calls();
        let handed: Vec<_> = task.0.lock().unwrap().drain(..).collect();
        assert!(handed.len() <= 1);
        for abandoned in handed {
            let undone_before = calls_at_drop.iter().filter(|e| e.starts_with("undo")).count();
            if undone_before > 0 && abandoned.pending_len() > 0 {
                mid_batch += 1;
            }
            let report = abandoned.roll_back(&mut (), &clock, &()).await;
            assert_eq!(report.rollback_state(), RollbackState::Clean);
        }
        assert_each_completed_step_undone_once(log, 3, k);
        if finished {
            // How many polls it takes depends on the runtime's timing: on
            // real time (smol) a loaded machine finishes the sleeps sooner,
            // in polls. Only virtual time counts them.
            if matches!(t, Timing::Exact) {
                assert!(k > 5, "the transaction has several await points");
                assert!(mid_batch >= 2, "several drops came after some rollbacks of the group ended ({mid_batch})");
            }
            break;
        }
        k += 1;
    }
}

/// Scopes two deep, with a failure at each level. A failed scope rolls
/// back only its own steps (nested scopes' included) and the body goes on
/// another way; a scope that succeeds joins its steps to its parent's, so
/// the parent's failure rolls them back in order. A scope's partial
/// rollback makes the transaction's rollback partial too.
pub async fn nested_scopes_roll_back_only_their_own_steps<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    // A step that logs, with a rollback that logs (and may fail).
    macro_rules! step {
        ($tx:expr, $name:literal) => {
            step!($tx, $name, false)
        };
        ($tx:expr, $name:literal, $rollback_fails:expr) => {
            $tx.step($name)
                .execute(|| async {
                    log.push(concat!("exec ", $name));
                    Ok::<_, &str>(())
                })
                .rollback(move |()| async move {
                    log.push(concat!("undo ", $name));
                    if $rollback_fails { Err("stuck") } else { Ok(()) }
                })
                .await
        };
    }
    macro_rules! fails {
        ($tx:expr, $name:literal, $why:literal) => {
            $tx.step($name)
                .run(|| async {
                    log.push(concat!("exec ", $name));
                    Err::<(), _>($why)
                })
                .await
        };
    }
    let err = manager
        .run("checkout", async |tx| {
            step!(tx, "order")?;
            let payment = tx
                .scope("payment", async |tx| {
                    step!(tx, "hold", true)?;
                    let card = tx
                        .scope("card", async |tx| {
                            step!(tx, "authorize")?;
                            fails!(tx, "capture", "declined")?;
                            R::Ok(())
                        })
                        .await;
                    let card = card.expect_err("the card is declined");
                    assert_eq!((card.scope(), card.rollback_state()), ("card", RollbackState::Clean));
                    assert_eq!(
                        card.to_string(),
                        "scope `card` failed: step `capture` failed: declined; its steps were rolled back cleanly"
                    );
                    log.push("card failed, trying the wallet");
                    tx.scope("wallet", async |tx| step!(tx, "debit")).await?;
                    fails!(tx, "receipt", "printer jammed")?;
                    R::Ok(())
                })
                .await;
            let payment = payment.expect_err("the receipt fails");
            assert_eq!(payment.rollback_state(), RollbackState::Partial);
            assert_eq!(payment.rollback_failures().len(), 1);
            assert_eq!(payment.rollback_failures()[0].step(), "hold");
            log.push("payment failed, invoicing");
            step!(tx, "invoice")?;
            fails!(tx, "ship", "no courier")?;
            R::Ok(())
        })
        .await
        .expect_err("shipping fails");

    assert_eq!(
        log.calls(),
        [
            "exec order",
            "exec hold",
            "exec authorize",
            "exec capture",
            "undo authorize",
            "card failed, trying the wallet",
            "exec debit",
            "exec receipt",
            "undo debit",
            "undo hold",
            "payment failed, invoicing",
            "exec invoice",
            "exec ship",
            "undo invoice",
            "undo order",
        ]
    );
    assert_eq!(err.cause().step(), "ship");
    assert_eq!(err.rollback_failures().len(), 0, "the transaction's own rollback went well");
    assert!(err.is_partially_rolled_back(), "but the payment scope left `hold` behind");
    let steps: Vec<_> = err.summary().steps().iter().map(|s| (s.name().as_str(), s.scope(), s.status())).collect();
    use StepStatus::*;
    assert_eq!(
        steps,
        [
            ("order", None, RolledBack),
            ("hold", Some("payment"), RollbackFailed),
            ("authorize", Some("card"), RolledBack),
            ("capture", Some("card"), Failed),
            ("debit", Some("wallet"), RolledBack),
            ("receipt", Some("payment"), Failed),
            ("invoice", None, RolledBack),
            ("ship", None, Failed),
        ]
    );
    assert!(err.summary().to_string().contains("#2 `authorize` [rolled_back] attempts: 1, in scope `card`"));
    // One `on_rollback_start` per rollback: two scopes, then the transaction.
    assert_eq!(log.count("hook rollback_start checkout"), 3);
    assert_eq!(log.count("hook complete checkout success=false steps=8 rolled_back=4 rollback_errors=1"), 1);
}

/// A transaction dropped after k polls, for every k, in the middle of a
/// group: every member that completed is rolled back exactly once, by the
/// transaction or by the rollback task it handed its records to.
pub async fn dropped_in_the_middle_of_a_group_hands_over_its_rollbacks<C: Clock + Clone>(clock: C, t: Timing) {
    let mut k = 0;
    let mut handed_over = 0;
    loop {
        let log = Log::leaked();
        let task = ToRollbackTask::default();
        let manager = TransactionManager::new(clock.clone()).with_abandon_policy(task.clone());
        let mut rig = Rig { clock: clock.clone(), delay: t.ms(5), log };
        let c = &clock;
        let mut attempts = 0;
        let finished = {
            let transaction = manager.transaction("drop me").fixed::<Undo, 4>().run_with(&mut rig, async |tx| {
                tx.parallel((
                    member("one")
                        .execute(|| async {
                            c.sleep(t.ms(10)).await;
                            log.push("done 1");
                            Ok(1u8)
                        })
                        .undo(|n| Undo(*n)),
                    member("two")
                        .execute(|| async {
                            c.sleep(t.ms(30)).await;
                            log.push("done 2");
                            Ok(2u8)
                        })
                        .undo(|n| Undo(*n)),
                    member("three")
                        .retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(t.ms(10)))
                        .execute(|| {
                            attempts += 1;
                            let first = attempts == 1;
                            async move {
                                c.sleep(t.ms(20)).await;
                                if first {
                                    return Err("first attempt fails");
                                }
                                log.push("done 3");
                                Ok(3u8)
                            }
                        })
                        .undo(|n| Undo(*n)),
                ))
                .await?;
                tx.step("fails").run(|| async { Err::<(), _>("boom") }).await?;
                R::Ok(())
            });
            poll_then_drop(transaction, k, c, t.ms(1)).await
        };
        let handed: Vec<_> = task.0.lock().unwrap().drain(..).collect();
        assert!(handed.len() <= 1);
        for abandoned in handed {
            handed_over += usize::from(abandoned.pending_len() > 0);
            let report = abandoned.roll_back(&mut rig, &clock, &()).await;
            assert_eq!(report.rollback_state(), RollbackState::Clean);
        }
        assert_each_completed_step_undone_once(log, 3, k);
        if finished {
            assert!(k > 5, "the transaction has several await points");
            if matches!(t, Timing::Exact) {
                assert!(handed_over >= 3, "several drops owed rollbacks ({handed_over})");
            }
            break;
        }
        k += 1;
    }
}

/// The transaction's deadline passes in the middle of a group: the member
/// in flight is interrupted (uncertain: rolled back because it opted in),
/// the member that completed is rolled back, before `run` returns.
pub async fn deadline_in_the_middle_of_a_group_rolls_back<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let c = &clock;
    let start = clock.now();
    let err = manager
        .transaction("deadline")
        .with_deadline(t.ms(1_000))
        .run(async |tx| {
            tx.parallel((
                member("quick")
                    .execute(|| async {
                        c.sleep(t.ms(100)).await;
                        Ok(1u8)
                    })
                    .rollback(move |_| async move {
                        log.push("undo quick");
                        Ok::<_, &str>(())
                    }),
                member("hangs")
                    .execute(|| async {
                        c.sleep(t.ms(60_000)).await;
                        Ok(2u8)
                    })
                    .rollback_uncertain(move |m: Maybe<u8>| async move {
                        log.push(format!("undo hangs {m:?}"));
                        Ok::<_, &str>(())
                    }),
            ))
            .await?;
            R::Ok(())
        })
        .await
        .expect_err("the deadline passes");

    t.assert_at(clock.now() - start, t.ms(1_000));
    let deadline = InterruptReason::DeadlineExceeded { deadline: t.ms(1_000) };
    assert_eq!(err.cause().kind(), &StepErrorKind::Interrupted(deadline));
    assert_eq!((err.cause().step().as_str(), err.cause().index()), ("hangs", 1));
    // Reverse order of the undo records: `hangs` went in when its attempt
    // started, `quick` when it completed.
    assert_eq!(log.calls(), ["undo quick", "undo hangs Uncertain"]);
    let steps = err.summary().steps();
    assert_eq!((steps[0].status(), steps[1].status()), (StepStatus::RolledBack, StepStatus::RolledBack));
    let _ = Duration::ZERO;
}

/// Room for every member is reserved before any starts: a group that does
/// not fit runs nothing; an empty member name is refused the same way.
pub async fn group_capacity_is_reserved_before_any_member_starts<C: Clock + Clone>(clock: C, _t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock, log);
    let err = manager
        .transaction("full")
        .fixed::<NoRollback, 2>()
        .run(async |tx| {
            tx.step("first").run(|| async { Ok::<_, &str>(()) }).await?;
            let err = tx
                .parallel((
                    member("a").execute(|| async {
                        log.push("a ran (must not happen)");
                        Ok::<_, &str>(())
                    }),
                    member("b").execute(|| async {
                        log.push("b ran (must not happen)");
                        Ok::<_, &str>(())
                    }),
                ))
                .await
                .expect_err("no room for two");
            assert_eq!(err.first().kind(), &StepErrorKind::CapacityExceeded { capacity: 2 });
            assert_eq!((err.first().step().as_str(), err.first().index()), ("b", 2));
            let empty = tx.parallel([member("").execute(|| async { Ok::<_, &str>(()) })]).await.expect_err("empty");
            assert_eq!(empty.first().kind(), &StepErrorKind::EmptyName);
            Err::<(), _>(StepError::from(err))
        })
        .await
        .expect_err("the body passes the error on");
    assert_eq!(err.summary().total_steps(), 1);
    assert!(log.calls().is_empty());
}

/// A member that panics fails that attempt, which is retried; a panic in
/// its execute closure too. The others are not disturbed. A `Vec` of
/// members returns a `Vec` of values.
pub async fn group_member_panics_are_failures_of_their_attempt<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let c = &clock;
    let done = manager
        .run("panics", async |tx| {
            let mut calls = 0u32;
            let values = tx
                .parallel(vec![
                    member("steady").execute(Box::new(move || {
                        Box::pin(async move {
                            c.sleep(t.ms(100)).await;
                            Ok::<_, &str>(1u32)
                        })
                            as std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, &str>> + '_>>
                    }) as Box<dyn FnMut() -> _>),
                    member("flaky").retry(t.retries(2)).execute(Box::new(move || {
                        calls += 1;
                        if calls == 1 {
                            panic!("injected: closure bug");
                        }
                        let n = calls;
                        Box::pin(async move {
                            if n == 2 {
                                panic!("injected: future bug");
                            }
                            Ok::<_, &str>(n)
                        })
                            as std::pin::Pin<Box<dyn std::future::Future<Output = Result<u32, &str>> + '_>>
                    }) as Box<dyn FnMut() -> _>),
                ])
                .await?;
            R::Ok(values)
        })
        .await
        .expect("the flaky member succeeds on its third attempt");

    assert_eq!(done.value(), &[1u32, 3]);
    let log = log.take();
    assert!(log.contains(&"hook failure flaky #1 in_progress: panicked: injected: closure bug".to_string()), "{log:?}");
    assert!(log.contains(&"hook failure flaky #2 in_progress: panicked: injected: future bug".to_string()), "{log:?}");
    let steps = done.summary().steps();
    assert_eq!((steps[1].status(), steps[1].attempts()), (StepStatus::Completed, 3));
    assert_eq!((steps[0].status(), steps[0].attempts()), (StepStatus::Completed, 1));
}

/// A member whose `on_step_execute` hook panics fails before its attempt
/// starts (not retried, nothing to roll back); the other members run on. A
/// cancel signal in the middle of a group then stops the transaction: the
/// member in flight is interrupted, the completed one rolled back.
pub async fn group_hook_panics_and_cancel_signal<C: Clock + Clone>(clock: C, t: Timing) {
    use super::reliability::PanickyHooks;
    let log = Log::leaked();
    let c = &clock;
    let start = clock.now();
    let manager = TransactionManager::new(clock.clone()).with_hooks(PanickyHooks);
    // A signal the body fires itself, between the two groups: the same
    // instant on every runtime (a printed panic takes real time).
    let signal = std::sync::Arc::new(std::sync::Mutex::new((false, None::<std::task::Waker>)));
    let fire = {
        let signal = signal.clone();
        move || {
            let mut signal = signal.lock().unwrap();
            signal.0 = true;
            if let Some(waker) = signal.1.take() {
                waker.wake();
            }
        }
    };
    let fired = std::future::poll_fn(move |cx| {
        let mut signal = signal.lock().unwrap();
        if signal.0 {
            return std::task::Poll::Ready(());
        }
        signal.1 = Some(cx.waker().clone());
        std::task::Poll::Pending
    });
    let err = manager
        .transaction("signal")
        .cancel_on(fired)
        .run(async |tx| {
            let group = tx
                .parallel((
                    member("hooked").retry(t.retries(3)).execute(|| async {
                        log.push("hooked ran (must not happen)");
                        Ok::<_, &str>(())
                    }),
                    member("quick")
                        .execute(|| async {
                            c.sleep(t.ms(10)).await;
                            Ok(())
                        })
                        .rollback(move |()| async move {
                            log.push("undo quick");
                            Ok::<_, &str>(())
                        }),
                    member("slow").execute(|| async {
                        c.sleep(t.ms(100)).await;
                        Ok(())
                    }),
                ))
                .await;
            let err = group.expect_err("the hook broke a member");
            assert_eq!(err.first().step(), "hooked");
            assert!(matches!(err.first().kind(), StepErrorKind::Panicked(m) if m.as_str() == "injected: hook bug"));
            assert!(err.others().is_empty(), "the others completed");
            // The body goes on; the signal stops it in the next group.
            let ended = c.now();
            log.push(format!("first group took {:?}", ended - start));
            fire();
            tx.parallel((member("hangs")
                .execute(|| async {
                    c.sleep(t.ms(60_000)).await;
                    Ok(())
                })
                .rollback_uncertain(move |m: Maybe<()>| async move {
                    log.push(format!("undo hangs {m:?}"));
                    Ok::<_, &str>(())
                }),))
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("the signal fires");

    // (Not exact on every runtime: embassy's test executor advances its
    // mock clock 1 ms whenever the transaction waits, woken or not.)
    assert!(clock.now() - start >= t.ms(100));
    assert_eq!(err.cause().kind(), &StepErrorKind::Interrupted(InterruptReason::Cancelled));
    assert_eq!((err.cause().step().as_str(), err.cause().index()), ("hangs", 3));
    let calls = log.calls();
    assert_eq!(calls[1..], ["undo hangs Uncertain", "undo quick"]);
    if matches!(t, Timing::Exact) {
        assert_eq!(calls[0], "first group took 100ms", "as long as its slowest member");
    }
    let statuses: Vec<_> =
        err.summary().steps().iter().map(|s| (s.name().as_str(), s.status(), s.attempts())).collect();
    assert_eq!(
        statuses,
        [
            ("hooked", StepStatus::Failed, 1),
            ("quick", StepStatus::RolledBack, 1),
            ("slow", StepStatus::Completed, 1),
            ("hangs", StepStatus::RolledBack, 1),
        ]
    );
}

/// A member whose `on_step_failure` hook panics fails for good at that
/// attempt (no retries around a broken hook), keeping its attempt's error;
/// a member whose `on_step_success` hook panics fails with the panic, and
/// its undo record stays owed: the body's `?` rolls it back. As for a plain
/// step (`hook_panics_fail_the_attempt` and the property tests).
pub async fn group_failure_and_success_hook_panics<C: Clock + Clone>(clock: C, t: Timing) {
    use super::reliability::PanickyHooks;
    let log = Log::leaked();
    let manager = TransactionManager::new(clock.clone()).with_hooks(PanickyHooks);
    let err = manager
        .run("hooks", async |tx| {
            let err = tx
                .parallel((
                    member("failure-hooked").retry(t.retries(3)).execute(|| async {
                        log.push("failure-hooked ran");
                        Err::<(), _>("no")
                    }),
                    member("success-hooked").execute(|| async { Ok(()) }).rollback(move |()| async move {
                        log.push("undo success-hooked");
                        Ok::<_, &str>(())
                    }),
                ))
                .await
                .expect_err("both hooks broke their members");
            assert_eq!(err.first().step(), "failure-hooked");
            assert_eq!(err.first().kind(), &StepErrorKind::Failed("no"));
            let others: Vec<_> = err.others().iter().map(|e| (e.step().as_str(), e.kind().clone())).collect();
            assert!(
                matches!(&others[..], [("success-hooked", StepErrorKind::Panicked(m))] if m.as_str() == "injected: success hook bug"),
                "{others:?}"
            );
            Err(err)?;
            R::Ok(())
        })
        .await
        .expect_err("the group failed");
    assert_eq!(log.calls(), ["failure-hooked ran", "undo success-hooked"], "one attempt; the completed member undone");
    let statuses: Vec<_> =
        err.summary().steps().iter().map(|s| (s.name().as_str(), s.status(), s.attempts())).collect();
    assert_eq!(statuses, [("failure-hooked", StepStatus::Failed, 1), ("success-hooked", StepStatus::RolledBack, 1)]);
    assert_eq!(err.summary().steps()[1].error(), Some("panicked: injected: success hook bug"));
}

/// The board of [`group_members_borrow_parts_of_the_context`]: two buses a
/// group brings up at the same time, each member borrowing its own.
#[derive(Debug, Default)]
pub struct TwoBuses {
    pub i2c: Bus,
    pub spi: Bus,
}

/// One bus: whether it is up, and how often it was started.
#[derive(Debug, Default)]
pub struct Bus {
    pub up: bool,
    pub starts: u32,
}

/// How to undo a bus bring-up: data, rolled back with the whole board.
#[derive(Debug)]
pub enum BusUndo {
    I2cDown,
    SpiDown,
}

impl Rollback<TwoBuses> for BusUndo {
    type Error = &'static str;

    async fn rollback(&mut self, board: &mut TwoBuses) -> Result<(), &'static str> {
        match self {
            BusUndo::I2cDown => board.i2c.up = false,
            BusUndo::SpiDown => board.spi.up = false,
        }
        Ok(())
    }
}

/// Members of a `run_with` transaction borrow disjoint parts of its context
/// (`Group::run_with`, `execute_on`) and mutate them at the same time. The
/// SPI member's first attempt hangs and times out: the group stops it and
/// gives its bus back for the retry, which fails for good. The I2C member
/// finished meanwhile; the body's `?` then rolls its undo record back with
/// the whole board.
pub async fn group_members_borrow_parts_of_the_context<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let c = &clock;
    let start = clock.now();
    let mut board = TwoBuses::default();
    let err = manager
        .transaction("buses")
        .fixed::<BusUndo, 4>()
        .run_with(&mut board, async |tx| {
            tx.group()
                .run_with(|board: &mut TwoBuses| {
                    let TwoBuses { i2c, spi } = board;
                    (
                        member("i2c")
                            .execute_on(i2c, async |bus: &mut Bus| {
                                bus.starts += 1;
                                c.sleep(t.ms(3_000)).await;
                                bus.up = true;
                                log.push("i2c up");
                                Ok(3)
                            })
                            .undo(|_| BusUndo::I2cDown),
                        member("spi")
                            .timeout(t.ms(1_000))
                            .retry(t.retries(1))
                            .execute_on(spi, async |bus: &mut Bus| {
                                bus.starts += 1;
                                if bus.starts == 1 {
                                    // Hangs: only the timeout ends it.
                                    core::future::pending::<()>().await;
                                }
                                c.sleep(t.ms(100)).await;
                                Err::<u32, _>("no clock")
                            })
                            .undo(|_| BusUndo::SpiDown),
                    )
                })
                .await?;
            Ok::<_, StepError<&str>>(())
        })
        .await
        .expect_err("spi fails");

    // i2c: 0 → 3 s. spi: 0 → 1 s (timeout), 500 ms backoff, 1.5 → 1.6 s.
    // The group ends with its slowest member, not after the sum.
    t.assert_at(clock.now() - start, t.ms(3_000));
    // Exact already, but say why: one after the other would be 4.6 s. (A
    // real clock gives lower bounds only: a loaded machine may stall.)
    if matches!(t, Timing::Exact) {
        assert_eq!(clock.now() - start, t.ms(3_000), "the members ran at the same time");
    }
    assert_eq!(err.cause().to_string(), "step `spi` failed: no clock");
    assert!(err.rollback_state().is_clean());
    assert!(!board.i2c.up, "the completed bus was rolled back with the board");
    assert_eq!((board.i2c.starts, board.spi.starts), (1, 2), "the retry got the bus back");
    let steps = err.summary().steps();
    let statuses: Vec<_> = steps.iter().map(|s| (s.name().as_str(), s.status(), s.attempts())).collect();
    assert_eq!(statuses, [("i2c", StepStatus::RolledBack, 1), ("spi", StepStatus::Failed, 2)]);
    t.assert_at(steps[0].completed_at().unwrap() - start, t.ms(3_000));
    t.assert_at(steps[1].completed_at().unwrap() - start, t.ms(1_600));
    if matches!(t, Timing::Exact) {
        assert_eq!(steps[0].started_at(), steps[1].started_at(), "both started at once");
    }
    let timed_out = format!("hook failure spi #1 in_progress: timed out after {:?}", t.ms(1_000));
    let mut events = log.take();
    if matches!(t, Timing::Real) {
        // spi's end (16 ms) and i2c's (30 ms) may come in one tick of a
        // stalled real clock, in either order: put i2c's where it is due.
        let i2c: Vec<_> = ["i2c up", "hook success i2c #1 completed"].map(String::from).into();
        events.retain(|e| !i2c.contains(e));
        let at = events.iter().position(|e| e == "hook rollback_start buses").unwrap_or(events.len());
        events.splice(at..at, i2c);
    }
    assert_eq!(
        events,
        [
            "hook start buses",
            "hook execute i2c #1 in_progress",
            "hook execute spi #1 in_progress",
            &timed_out,
            "hook execute spi #2 in_progress",
            "hook failure spi #2 failed: no clock",
            "i2c up",
            "hook success i2c #1 completed",
            "hook rollback_start buses",
            "hook rollback i2c #1 rolled_back",
            "hook complete buses success=false steps=2 rolled_back=1 rollback_errors=0",
        ]
    );
}
