//! The conformance suite on tokio with paused time, plus what is specific to
//! tokio: multi-thread runtimes, `tokio::spawn` (`Send`), and `!Send` steps
//! on a `LocalSet`.

mod conformance;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use transaction_manager::{RollbackState, StepError, StepStatus, TokioClock, TransactionManager};

macro_rules! on_tokio_paused {
    ($scenario:path) => {{
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async { $scenario(TokioClock::new(), conformance::Timing::Exact).await });
    }};
}

conformance_suite!(on_tokio_paused);

fn assert_send<T: Send>(value: T) -> T {
    value
}

type R<T> = Result<T, StepError<std::io::Error>>;

fn io_error(text: &str) -> std::io::Error {
    std::io::Error::other(text.to_string())
}

/// Scenario 13: A transaction of `Send` steps is a `Send` future (checked at compile
/// time by `assert_send`) and runs to completion under `tokio::spawn` on a
/// multi-thread runtime — commit and rollback both.
#[test]
fn spawned_on_a_multi_thread_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    rt.block_on(async {
        // Multi-thread runtimes cannot pause time, and tests never sleep for
        // real: the steps yield instead, and nothing retries or times out.
        // With a spawner, so that the Send check covers that policy too.
        let manager = std::sync::Arc::new(
            TransactionManager::new(TokioClock::new())
                .with_spawner(transaction_manager::abandon::TokioSpawner::current()),
        );
        let undone = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for n in 0..8u32 {
            let manager = manager.clone();
            let undone = undone.clone();
            let transaction = async move {
                manager
                    .run(format!("job-{n}"), async |tx| {
                        let id = tx
                            .step("create")
                            .execute(|| async {
                                tokio::task::yield_now().await;
                                Ok(n)
                            })
                            .rollback(move |id| {
                                let undone = undone.clone();
                                async move {
                                    undone.lock().unwrap().push(id);
                                    tokio::task::yield_now().await;
                                    Ok::<_, std::io::Error>(())
                                }
                            })
                            .await?;
                        if id % 2 == 1 {
                            tx.step("fail").run(|| async { Err::<(), _>(io_error("odd")) }).await?;
                        }
                        R::Ok(id)
                    })
                    .await
            };
            handles.push(tokio::spawn(assert_send(transaction)));
        }
        let mut committed = 0;
        for (n, handle) in handles.into_iter().enumerate() {
            match handle.await.expect("the task does not panic") {
                Ok(done) => {
                    committed += 1;
                    assert_eq!(*done.value() as usize, n);
                }
                Err(err) => {
                    assert_eq!(n % 2, 1);
                    assert_eq!(err.rollback_state(), RollbackState::Clean);
                    assert_eq!(err.summary().steps()[0].status(), StepStatus::RolledBack);
                    assert_eq!(err.cause().to_string(), "step `fail` failed: odd");
                }
            }
        }
        assert_eq!(committed, 4);
        let mut undone = undone.lock().unwrap().clone();
        undone.sort();
        assert_eq!(undone, [1, 3, 5, 7]);
    });
}

/// Steps that are not `Send` (`Rc`, `RefCell`) run on a `LocalSet` with
/// `LocalBoxedRollback` (`.local()`), on a current-thread runtime.
#[test]
fn not_send_steps_on_a_local_set() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let manager = TransactionManager::new(TokioClock::new());
        let journal = Rc::new(RefCell::new(Vec::<String>::new()));
        let j = journal.clone();
        let task = tokio::task::spawn_local(async move {
            let j = &j;
            manager
                .transaction("local")
                .local()
                .run(async |tx| {
                    let handle = tx
                        .step("open")
                        .execute(|| async {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            Ok(Rc::new("handle-1".to_string()))
                        })
                        .rollback(move |h: Rc<String>| async move {
                            j.borrow_mut().push(format!("close {h}"));
                            Ok::<_, std::io::Error>(())
                        })
                        .await?;
                    j.borrow_mut().push(format!("opened {handle}"));
                    tx.step("use").run(|| async { Err::<(), _>(io_error("broken pipe")) }).await?;
                    R::Ok(())
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
        let result = task.await.unwrap();
        assert!(result.unwrap_err().contains("broken pipe"));
        assert_eq!(*journal.borrow(), ["opened handle-1", "close handle-1"]);
    });
}

/// The clock follows tokio's paused time exactly, so timeouts and backoff
/// read as whole virtual durations.
#[test]
fn clock_follows_paused_time() {
    use transaction_manager::Clock;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let clock = TokioClock::new();
        clock.sleep(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), Duration::from_millis(1500));
        // Durations too large to add to an instant wait "forever", not panic.
        let never = clock.sleep(Duration::MAX);
        let outcome = tokio::time::timeout(Duration::from_secs(3600), never).await;
        assert!(outcome.is_err());
    });
}

/// A transaction dropped after k polls, for every k until it completes, on
/// a manager with a `TokioSpawner`: after the spawned rollback finishes,
/// every step that completed was rolled back exactly once. Each rollback
/// fails on its first attempt, so the spawned rollback must follow the
/// step's rollback retry policy too.
#[test]
fn dropped_at_every_await_point_rolls_back_on_a_spawned_task() {
    use transaction_manager::{RetryPolicy, abandon::TokioSpawner};

    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let mut k = 0;
        loop {
            let log = conformance::Log::leaked();
            let undo_calls: &'static [std::sync::atomic::AtomicU32; 3] = Box::leak(Box::default());
            let manager = TransactionManager::new(TokioClock::new()).with_spawner(TokioSpawner::current());
            let finished = {
                let transaction = manager.run("drop me", async |tx| {
                    for n in 1..=2u8 {
                        tx.step("create")
                            .retry(
                                RetryPolicy::new().with_max_retries(1).with_initial_interval(Duration::from_millis(10)),
                            )
                            .execute(|| async {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                log.push(format!("done {n}"));
                                Ok(n)
                            })
                            .rollback(move |n| async move {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                if undo_calls[usize::from(n)].fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                                    return Err(io_error("busy: try again"));
                                }
                                log.push(format!("undo {n}"));
                                Ok::<_, std::io::Error>(())
                            })
                            .await?;
                    }
                    tx.step("fails").run(|| async { Err::<(), _>(io_error("boom")) }).await?;
                    R::Ok(())
                });
                let mut transaction = std::pin::pin!(transaction);
                let mut finished = false;
                for _ in 0..k {
                    if conformance::poll_once(transaction.as_mut()).await.is_ready() {
                        finished = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                finished
            };
            // Let the spawned rollback run to its end (paused time advances).
            tokio::time::sleep(Duration::from_secs(1)).await;
            let calls = log.calls();
            for n in 1..=2 {
                let done = calls.iter().filter(|e| **e == format!("done {n}")).count();
                let undone = calls.iter().filter(|e| **e == format!("undo {n}")).count();
                assert_eq!(undone, done, "k={k}: step {n}: {calls:?}");
            }
            if finished {
                assert!(k > 5);
                break;
            }
            k += 1;
        }
    });
}

/// Every log line the library writes, for tests that check a report.
struct Captured;

static CAPTURED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

impl log::Log for Captured {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        CAPTURED.lock().unwrap().push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn captured_lines(containing: &str) -> Vec<String> {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        log::set_logger(&Captured).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
    CAPTURED.lock().unwrap().iter().filter(|l| l.contains(containing)).cloned().collect()
}

/// A rollback spawned for a dropped transaction is itself dropped when the
/// tokio runtime shuts down before it finished: each step whose rollback is
/// lost this way is reported at error level, by name.
#[test]
fn runtime_shutdown_reports_each_lost_rollback() {
    let _ = captured_lines("");
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let manager = TransactionManager::new(TokioClock::new())
            .with_spawner(transaction_manager::abandon::TokioSpawner::current());
        let transaction = manager.run("shutdown-lost", async |tx| {
            for name in ["first", "second"] {
                tx.step(name)
                    .execute(|| async { Ok(()) })
                    .rollback(|()| async {
                        // Long enough that the runtime shuts down first.
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok::<_, std::io::Error>(())
                    })
                    .await?;
            }
            tx.step("hangs")
                .run(|| async {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<_, std::io::Error>(())
                })
                .await?;
            R::Ok(())
        });
        tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = transaction => unreachable!("the last step hangs"),
        }
        // Let the spawned rollback start (it waits in `second`'s rollback).
        tokio::time::sleep(Duration::from_secs(1)).await;
    });
    drop(rt);
    let lost = captured_lines("shutdown-lost");
    let lost: Vec<_> = lost.iter().filter(|l| l.contains("LOST")).collect();
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(lost[0].starts_with("ERROR") && lost[0].contains("`second`"), "{lost:?}");
    assert!(lost[1].contains("`first`"), "{lost:?}");
}

/// `&impl Manager` accepts a tokio manager with hooks and a spawner (the
/// runtime-agnostic library function of the guide's "runtimes" chapter), for closure rollbacks and
/// for a fixed log of `NoRollback`.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn any_manager_bound_accepts_a_manager_with_a_spawner() {
    use transaction_manager::{
        Manager, NoRollback,
        abandon::{AbandonPolicy, TokioSpawner},
        hooks::Hooks,
        storage::Fixed,
    };

    async fn provision(
        manager: &impl Manager<Journal = transaction_manager::journal::NoJournal>,
    ) -> Result<u32, StepError<&'static str>> {
        let done = manager
            .manager()
            .run("provision", async |tx| {
                tx.step("create").execute(|| async { Ok::<_, &str>(7) }).rollback(|_| async { Ok::<_, &str>(()) }).await
            })
            .await
            .map_err(|e| e.into_cause())?;
        Ok(done.into_value())
    }

    async fn ping<M: Manager<Journal = transaction_manager::journal::NoJournal>>(
        manager: &M,
    ) -> Result<u32, StepError<&'static str>>
    where
        M::Abandon: AbandonPolicy<M::Clock, M::Hooks, (), NoRollback, Fixed<1>>,
    {
        let done = manager
            .manager()
            .transaction("ping")
            .fixed::<NoRollback, 1>()
            .run(async |tx| tx.step("ping").run(|| async { Ok(1) }).await)
            .await
            .map_err(|e| e.into_cause())?;
        Ok(done.into_value())
    }

    struct Quiet;
    impl Hooks for Quiet {}
    let manager = TransactionManager::new(TokioClock::new()).with_hooks(Quiet).with_spawner(TokioSpawner::current());
    assert_eq!(provision(&manager).await, Ok(7));
    assert_eq!(ping(&manager).await, Ok(1));
    // And spawned on a multi-thread runtime's task: the future is `Send`.
    let manager = std::sync::Arc::new(manager);
    let handle = tokio::spawn({
        let manager = manager.clone();
        async move { provision(&*manager).await }
    });
    assert_eq!(handle.await.unwrap(), Ok(7));
}

/// A transaction run inside a step of another is dropped when the outer
/// transaction's deadline cuts that step. With a spawner on the nested
/// transaction's manager, its owed rollbacks still run, on a spawned task
/// (GUARANTEES.md, the nested transaction's promise).
#[test]
fn nested_transaction_cut_by_the_outer_deadline_rolls_back_with_a_spawner() {
    use transaction_manager::abandon::TokioSpawner;

    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let log = conformance::Log::leaked();
        let nested = TransactionManager::new(TokioClock::new()).with_spawner(TokioSpawner::current());
        let outer = TransactionManager::new(TokioClock::new());
        let err = outer
            .transaction("outer")
            .with_deadline(Duration::from_millis(100))
            .run(async |tx| {
                tx.step("nested")
                    .run(|| {
                        nested.run("inner", async |tx| {
                            tx.step("a")
                                .execute(|| async { Ok(()) })
                                .rollback(move |()| async move {
                                    log.push("undo inner a");
                                    Ok::<_, std::io::Error>(())
                                })
                                .await?;
                            tx.step("hangs")
                                .run(|| async {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                    Ok::<_, std::io::Error>(())
                                })
                                .await?;
                            R::Ok(())
                        })
                    })
                    .await?;
                Ok::<_, StepError<_>>(())
            })
            .await
            .expect_err("the outer deadline passes");
        assert!(err.cause().kind().is_uncertain(), "{:?}", err.cause().kind());
        // The spawned rollback of the nested transaction runs next.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(log.calls(), ["undo inner a"]);
    });
}

/// A step that fails for good is logged at error level (as the reference
/// does), a failed attempt that will be retried at warn; a failed
/// transaction with nothing to roll back says so in the words its error's
/// `Display` uses.
#[test]
fn log_levels_follow_the_reference() {
    use transaction_manager::RetryPolicy;

    let _ = captured_lines("");
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let err = rt
        .block_on(TransactionManager::new(TokioClock::new()).run("log-levels", async |tx| {
            tx.step("flaky")
                .retry(RetryPolicy::new().with_max_retries(1))
                .run(|| async { Err::<(), _>(io_error("down")) })
                .await?;
            R::Ok(())
        }))
        .expect_err("the step fails");
    let lines = captured_lines("log-levels");
    let step = |level: &str, text: &str| lines.iter().any(|l| l.starts_with(level) && l.contains(text));
    assert!(step("WARN", "step `flaky` attempt 1 failed: down; retrying"), "{lines:#?}");
    assert!(step("ERROR", "step `flaky` failed for good on attempt 2: down"), "{lines:#?}");
    assert!(step("INFO", "nothing to roll back"), "{lines:#?}");
    assert!(err.to_string().ends_with("nothing to roll back"), "{err}");
}

/// The start of a rollback is logged at warning level, once, with the
/// transaction's id and operation and the number of steps to roll back
/// (also when there are none); its end at error level when a rollback
/// failed, at info otherwise — as the reference does. A scope's rollback
/// likewise.
#[test]
fn rollback_start_is_a_warning_and_its_end_error_or_info() {
    let _ = captured_lines("");
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let manager = TransactionManager::new(TokioClock::new());
    let fail = || async { Err::<(), _>(io_error("down")) };
    let undo_ok = |()| async { Ok::<_, std::io::Error>(()) };
    let undo_fails = |()| async { Err::<(), _>(io_error("stuck")) };
    let lines_of = |operation: &str| captured_lines(&format!("`{operation}`"));
    let has = |lines: &[String], level: &str, text: &str| {
        lines.iter().filter(|l| l.starts_with(&format!("{level} ")) && l.contains(text)).count()
    };

    rt.block_on(manager.run("rb-clean", async |tx| {
        tx.step("a").execute(|| async { Ok::<_, std::io::Error>(()) }).rollback(undo_ok).await?;
        tx.step("b").execute(|| async { Ok::<_, std::io::Error>(()) }).rollback(undo_ok).await?;
        tx.step("c").run(fail).await?;
        R::Ok(())
    }))
    .expect_err("c fails");
    let lines = lines_of("rb-clean");
    let id = lines[0].split(' ').nth(1).unwrap().to_owned();
    assert_eq!(has(&lines, "WARN", &format!("{id} `rb-clean`: body failed; rolling back 2 step(s)")), 1, "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("WARN") && l.contains("rolling back")).count(), 1, "{lines:#?}");
    assert_eq!(has(&lines, "INFO", "`rb-clean`: rolled back cleanly"), 1, "{lines:#?}");

    rt.block_on(manager.run("rb-partial", async |tx| {
        tx.step("a").execute(|| async { Ok::<_, std::io::Error>(()) }).rollback(undo_fails).await?;
        tx.step("b").run(fail).await?;
        R::Ok(())
    }))
    .expect_err("b fails");
    let lines = lines_of("rb-partial");
    assert_eq!(has(&lines, "WARN", "`rb-partial`: body failed; rolling back 1 step(s)"), 1, "{lines:#?}");
    assert_eq!(has(&lines, "ERROR", "`rb-partial`: PARTIALLY rolled back, 1 rollback(s) failed"), 1, "{lines:#?}");
    assert_eq!(has(&lines, "INFO", "rolled back"), 0, "{lines:#?}");

    rt.block_on(manager.run("rb-none", async |tx| {
        tx.step("a").run(fail).await?;
        R::Ok(())
    }))
    .expect_err("a fails");
    let lines = lines_of("rb-none");
    assert_eq!(has(&lines, "WARN", "`rb-none`: body failed; rolling back 0 step(s)"), 1, "{lines:#?}");
    assert_eq!(has(&lines, "INFO", "`rb-none`: nothing to roll back"), 1, "{lines:#?}");

    rt.block_on(manager.run("rb-scope", async |tx| {
        let scope = tx
            .scope("card", async |tx| {
                tx.step("authorize").execute(|| async { Ok::<_, std::io::Error>(()) }).rollback(undo_ok).await?;
                tx.step("capture").run(fail).await
            })
            .await;
        assert!(scope.is_err());
        R::Ok(())
    }))
    .expect("the body goes on after the scope");
    let lines = lines_of("rb-scope");
    assert_eq!(has(&lines, "WARN", "`rb-scope`: scope `card` failed; rolling back 1 step(s)"), 1, "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("WARN") && l.contains("rolling back")).count(), 1, "{lines:#?}");
    assert_eq!(has(&lines, "INFO", "`rb-scope`: scope `card` rolled back cleanly"), 1, "{lines:#?}");
}

/// A transaction with a parallel group inside a scope is a `Send` future
/// when its steps are: it runs under `tokio::spawn` on a multi-thread
/// runtime, and the group's members really overlap.
#[test]
fn groups_and_scopes_are_send_on_a_multi_thread_runtime() {
    use transaction_manager::group::member;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().unwrap();
    rt.block_on(async {
        let undone = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let state = undone.clone();
        let transaction = async move {
            let manager = TransactionManager::new(TokioClock::new());
            manager
                .run("spawned group", async |tx| {
                    let (a, b) = tx
                        .scope("both", async |tx| {
                            tx.parallel((
                                member("a")
                                    .execute(|| async {
                                        tokio::task::yield_now().await;
                                        Ok::<_, std::io::Error>(1u32)
                                    })
                                    .rollback_using(&state, |(undone, n)| async move {
                                        undone.lock().unwrap().push(n);
                                        Ok::<_, std::io::Error>(())
                                    }),
                                member("b").execute(|| async {
                                    tokio::task::yield_now().await;
                                    Ok::<_, std::io::Error>(2u32)
                                }),
                            ))
                            .await
                            .map_err(StepError::from)
                        })
                        .await?;
                    tx.step("fail").run(|| async { Err::<(), _>(io_error("after the group")) }).await?;
                    R::Ok(a + b)
                })
                .await
        };
        let err = tokio::spawn(assert_send(transaction)).await.unwrap().expect_err("the last step fails");
        assert!(err.rollback_state().is_clean());
        assert_eq!(*undone.lock().unwrap(), [1]);
        assert_eq!(err.summary().steps()[0].scope(), Some("both"));
    });
}

/// tokio caps a sleep at about 30 years: a `Duration::MAX` timer wakes
/// then. A wake-up is not proof: a step of 40 (virtual) years under a
/// `Duration::MAX` timeout and deadline is not cut.
#[test]
fn a_duration_max_timeout_or_deadline_is_never_reached() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    let forty_years = Duration::from_secs(40 * 365 * 24 * 3600);
    let outcome = rt.block_on(async {
        let manager = TransactionManager::new(TokioClock::new());
        manager
            .transaction("forever")
            .with_deadline(Duration::MAX)
            .local()
            .run(async |tx| {
                tx.step("slow")
                    .timeout(Duration::MAX)
                    .run(|| async move {
                        tokio::time::sleep(forty_years).await;
                        Ok::<_, std::io::Error>(())
                    })
                    .await?;
                R::Ok(())
            })
            .await
    });
    assert!(outcome.is_ok(), "{:?}", outcome.err().map(|e| e.to_string()));
}
