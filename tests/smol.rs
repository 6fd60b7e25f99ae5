//! The conformance suite on smol (`async-io` timers, real time: durations
//! scaled down 100×, only lower bounds on time checked), plus smol
//! specifics: a multi-threaded `async-executor` with spawned (`Send`)
//! transactions, and `futures_lite::future::block_on` driving async-io from
//! its own reactor thread.

mod conformance;

use std::sync::{Arc, Mutex};

use transaction_manager::{
    RollbackState, SmolClock, StepError, TransactionManager, abandon::SmolSpawner, backend::Spawner,
};

macro_rules! on_smol {
    ($scenario:path) => {{
        smol::block_on($scenario(SmolClock::new(), conformance::Timing::Real));
    }};
}

conformance_suite!(on_smol);

fn assert_send<T: Send>(value: T) -> T {
    value
}

/// Transactions spawned on a multi-threaded executor (two worker threads)
/// are `Send`, commit or roll back, and the spawner runs a detached future.
#[test]
fn spawned_on_a_multi_threaded_executor() {
    let executor = Arc::new(smol::Executor::new());
    let (stop, shutdown) = async_channel_pair();
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let executor = executor.clone();
            let shutdown = shutdown.clone();
            std::thread::spawn(move || futures_lite::future::block_on(executor.run(shutdown.recv())))
        })
        .collect();

    let manager = Arc::new(TransactionManager::new(SmolClock::new()));
    let undone = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..6u32)
        .map(|n| {
            let manager = manager.clone();
            let undone = undone.clone();
            executor.spawn(assert_send(async move {
                manager
                    .run(format!("job-{n}"), async |tx| {
                        let id = tx
                            .step("create")
                            .execute(|| async {
                                futures_lite::future::yield_now().await;
                                Ok::<_, std::io::Error>(n)
                            })
                            .rollback_using(&undone, |(undone, id)| async move {
                                undone.lock().unwrap().push(id);
                                Ok::<_, std::io::Error>(())
                            })
                            .await?;
                        if id % 3 == 0 {
                            tx.step("fail").run(|| async { Err::<(), _>(std::io::Error::other("no")) }).await?;
                        }
                        Ok::<_, StepError<std::io::Error>>(id)
                    })
                    .await
                    .map(|done| done.into_value())
                    .map_err(|e| e.rollback_state())
            }))
        })
        .collect();
    let results: Vec<_> = tasks.into_iter().map(futures_lite::future::block_on).collect();
    assert_eq!(results, [Err(RollbackState::Clean), Ok(1), Ok(2), Err(RollbackState::Clean), Ok(4), Ok(5)]);
    let mut undone = undone.lock().unwrap().clone();
    undone.sort();
    assert_eq!(undone, [0, 3]);

    let (done_tx, done_rx) = std::sync::mpsc::channel();
    SmolSpawner::new(executor.clone()).spawn(async move { done_tx.send("detached ran").unwrap() });
    assert_eq!(done_rx.recv().unwrap(), "detached ran");

    drop(stop);
    for worker in workers {
        worker.join().unwrap();
    }
}

/// A one-shot stop signal for the executor threads, from std only.
fn async_channel_pair() -> (StopSender, StopReceiver) {
    let (tx, rx) = smol::channel::bounded::<()>(1);
    (StopSender(tx), StopReceiver(rx))
}

struct StopSender(#[allow(dead_code)] smol::channel::Sender<()>);

#[derive(Clone)]
struct StopReceiver(smol::channel::Receiver<()>);

impl StopReceiver {
    async fn recv(self) {
        let _ = self.0.recv().await;
    }
}

/// `futures_lite::future::block_on` does not drive async-io itself; timers
/// still fire because async-io runs its reactor on a thread of its own.
#[test]
fn runs_under_futures_lite_block_on() {
    futures_lite::future::block_on(conformance::backoff_doubles_from_500ms(
        SmolClock::new(),
        conformance::Timing::Real,
    ));
    futures_lite::future::block_on(conformance::execute_timeout_is_a_typed_error(
        SmolClock::new(),
        conformance::Timing::Real,
    ));
}

/// A transaction dropped after k polls, for every k until it completes, on
/// a manager with a `SmolSpawner`: after the spawned rollback finishes,
/// every step that completed was rolled back exactly once.
#[test]
fn dropped_at_every_await_point_rolls_back_on_a_spawned_task() {
    use std::time::Duration;
    use transaction_manager::Clock;

    let executor = Arc::new(smol::Executor::new());
    {
        let executor = executor.clone();
        std::thread::spawn(move || smol::block_on(executor.run(std::future::pending::<()>())));
    }
    let clock = SmolClock::new();
    let ms = |n: u64| Duration::from_micros(n * 100);
    let mut k = 0;
    loop {
        let log = conformance::Log::leaked();
        let manager = TransactionManager::new(clock).with_spawner(SmolSpawner::new(executor.clone()));
        let finished = smol::block_on(async {
            let transaction = manager.run("drop me", async |tx| {
                for n in 1..=2u8 {
                    tx.step("create")
                        .execute(|| async {
                            clock.sleep(ms(10)).await;
                            log.push(format!("done {n}"));
                            Ok(n)
                        })
                        .rollback(move |n| async move {
                            clock.sleep(ms(5)).await;
                            log.push(format!("undo {n}"));
                            Ok::<_, std::io::Error>(())
                        })
                        .await?;
                }
                tx.step("fails").run(|| async { Err::<(), _>(std::io::Error::other("boom")) }).await?;
                Ok::<_, StepError<std::io::Error>>(())
            });
            let mut transaction = std::pin::pin!(transaction);
            for _ in 0..k {
                if conformance::poll_once(transaction.as_mut()).await.is_ready() {
                    return true;
                }
                clock.sleep(ms(1)).await;
            }
            false
        });
        // Wait for the spawned rollback: real time, bounded.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let calls = log.calls();
            let balanced = (1..=2).all(|n| {
                let done = calls.iter().filter(|e| **e == format!("done {n}")).count();
                let undone = calls.iter().filter(|e| **e == format!("undo {n}")).count();
                assert!(undone <= done, "k={k}: step {n} rolled back more than it completed: {calls:?}");
                undone == done
            });
            if balanced {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "k={k}: the spawned rollback never finished: {calls:?}");
            std::thread::yield_now();
        }
        if finished {
            assert!(k > 3);
            break;
        }
        k += 1;
    }
}

/// On smol's global executor (`smol::spawn`, no executor of the program's
/// own): `SmolSpawner::global()` runs a spawned future, and the rollbacks a
/// dropped transaction owes.
#[test]
fn global_executor_runs_the_rollbacks_of_a_dropped_transaction() {
    use std::time::Duration;

    let (ran_tx, ran_rx) = std::sync::mpsc::channel();
    SmolSpawner::global().spawn(async move { ran_tx.send("spawned ran").unwrap() });
    assert_eq!(ran_rx.recv_timeout(Duration::from_secs(10)), Ok("spawned ran"));

    let log = conformance::Log::leaked();
    let (undone_tx, undone_rx) = std::sync::mpsc::channel();
    let manager = TransactionManager::new(SmolClock::new()).with_spawner(SmolSpawner::global());
    smol::block_on(async {
        let transaction = manager.run("dropped on smol's global executor", async |tx| {
            tx.step("create")
                .execute(|| async {
                    log.push("done");
                    Ok(1u8)
                })
                .rollback(move |n| {
                    let undone_tx = undone_tx.clone();
                    async move {
                        log.push(format!("undo {n}"));
                        undone_tx.send(()).unwrap();
                        Ok::<_, std::io::Error>(())
                    }
                })
                .await?;
            std::future::pending::<()>().await;
            Ok::<_, StepError<std::io::Error>>(())
        });
        let mut transaction = std::pin::pin!(transaction);
        while log.calls().is_empty() {
            assert!(conformance::poll_once(transaction.as_mut()).await.is_pending());
        }
    });
    // The transaction is dropped: its rollback runs on smol's global
    // executor threads. Bounded real-time wait, no sleep.
    undone_rx.recv_timeout(Duration::from_secs(10)).expect("the spawned rollback ran");
    assert_eq!(log.calls(), ["done", "undo 1"]);
}
