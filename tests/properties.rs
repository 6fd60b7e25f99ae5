//! Property tests: random transactions (0–16 steps, random retries, random
//! outcome per attempt of execute and rollback — success, error, timeout,
//! panic — random uncertain rollbacks, a random error of the body's own, a
//! random rollback failure policy), checked against a model of the
//! reference semantics.
//!
//! The model predicts the exact log of every transaction — step calls,
//! rollback calls and hook events, interleaved — so one comparison checks
//! every invariant: each completed step with a rollback is rolled back
//! exactly once (attempts until one succeeds), in strict reverse order; no
//! step that did not complete is rolled back (unless its rollback covers
//! uncertain outcomes and an attempt was uncertain); hooks fire in a valid
//! order, `on_transaction_complete` exactly once. The summary and the error
//! value (cause and every rollback failure) are checked against the model
//! too.
//!
//! Seeded and reproducible: 10,000 cases by default (set
//! `TM_PROPTEST_CASES` for more), on `ManualClock`, so they take about a
//! second.

#[allow(unused_imports)]
mod conformance;

use std::cell::RefCell;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use transaction_manager::*;

use conformance::{Log, Recorder};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Attempt {
    Ok,
    Err,
    Timeout,
    Panic,
}

#[derive(Clone, Debug)]
struct StepSpec {
    rollback: bool,
    uncertain: bool,
    execute: Vec<Attempt>,
    undo: Vec<Attempt>,
}

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<StepSpec>,
    /// The body fails on its own after this step completes.
    body_error_after: Option<usize>,
    stop_on_rollback_failure: bool,
}

fn attempt() -> impl Strategy<Value = Attempt> {
    prop_oneof![4 => Just(Attempt::Ok), 2 => Just(Attempt::Err), 1 => Just(Attempt::Timeout), 1 => Just(Attempt::Panic)]
}

fn step_spec() -> impl Strategy<Value = StepSpec> {
    (any::<bool>(), any::<bool>(), prop::collection::vec(attempt(), 1..=4), prop::collection::vec(attempt(), 1..=3))
        .prop_map(|(rollback, uncertain, execute, undo)| StepSpec {
            rollback,
            uncertain: rollback && uncertain,
            execute,
            undo,
        })
}

fn case() -> impl Strategy<Value = Case> {
    (prop::collection::vec(step_spec(), 0..=16), prop::option::of(0usize..16), any::<bool>())
        .prop_map(|(steps, body_error_after, stop)| Case { steps, body_error_after, stop_on_rollback_failure: stop })
}

const TIMEOUT: Duration = Duration::from_millis(10);

#[derive(Debug, PartialEq)]
enum CaseError {
    Step(StepError<String>),
    Body,
}

impl From<StepError<String>> for CaseError {
    fn from(e: StepError<String>) -> Self {
        CaseError::Step(e)
    }
}

/// What the model predicts for one step.
#[derive(Debug)]
struct Expected {
    status: StepStatus,
    attempts: u32,
    rollback_attempts: u32,
}

fn failure_text(attempt: Attempt, step: usize, n: usize, what: &str) -> String {
    match attempt {
        Attempt::Err => format!("{what} {step}.{n} failed"),
        Attempt::Timeout => format!("timed out after {TIMEOUT:?}"),
        Attempt::Panic => "panicked: injected".to_string(),
        Attempt::Ok => unreachable!(),
    }
}

/// A failure the model predicts: step index (`usize::MAX` for the body's
/// own error), what the last attempt did, and its text.
type Failure = (usize, Attempt, String);

/// What the model predicts for a whole transaction.
struct Prediction {
    log: Vec<String>,
    steps: Vec<Expected>,
    cause: Option<Failure>,
    rollback_failures: Vec<Failure>,
}

/// The model: the log, statuses and errors the reference semantics imply.
fn model(case: &Case) -> Prediction {
    let mut log = vec!["hook start case".to_string()];
    let mut expected = Vec::new();
    let mut cause = None; // (step, last attempt kind, text) or body error (usize::MAX)
    let mut owed = Vec::new(); // (step, uncertain) in completion order
    for (i, spec) in case.steps.iter().enumerate() {
        let tries = spec.execute.iter().position(|a| *a == Attempt::Ok).map_or(spec.execute.len(), |p| p + 1);
        let completed = spec.execute.get(tries - 1) == Some(&Attempt::Ok);
        let mut uncertain = false;
        for (n, attempt) in spec.execute[..tries].iter().enumerate() {
            let n1 = n + 1;
            log.push(format!("hook execute s{i} #{n1} in_progress"));
            log.push(format!("exec s{i} #{n1}"));
            if *attempt == Attempt::Ok {
                log.push(format!("hook success s{i} #{n1} completed"));
            } else {
                uncertain |= matches!(attempt, Attempt::Timeout | Attempt::Panic);
                let status = if n1 == tries { "failed" } else { "in_progress" };
                log.push(format!("hook failure s{i} #{n1} {status}: {}", failure_text(*attempt, i, n1, "exec")));
            }
        }
        expected.push(Expected {
            status: if completed { StepStatus::Completed } else { StepStatus::Failed },
            attempts: tries as u32,
            rollback_attempts: 0,
        });
        if completed && spec.rollback {
            owed.push((i, false));
        }
        if !completed {
            if spec.uncertain && uncertain {
                owed.push((i, true));
            }
            let last = spec.execute[tries - 1];
            cause = Some((i, last, failure_text(last, i, tries, "exec")));
            break;
        }
        if case.body_error_after == Some(i) {
            cause = Some((usize::MAX, Attempt::Err, String::new()));
            break;
        }
    }
    let mut failures = Vec::new();
    if cause.is_some() && !owed.is_empty() {
        log.push("hook rollback_start case".to_string());
        let mut stopped = false;
        for &(i, uncertain) in owed.iter().rev() {
            if stopped {
                expected[i].status = StepStatus::RollbackSkipped;
                continue;
            }
            let spec = &case.steps[i];
            let before = if uncertain { "failed" } else { "completed" };
            let tries = spec.undo.iter().position(|a| *a == Attempt::Ok).map_or(spec.undo.len(), |p| p + 1);
            for (n, attempt) in spec.undo[..tries].iter().enumerate() {
                let n1 = n + 1;
                log.push(format!("hook rollback s{i} #{n1} {before}"));
                let input = if !spec.uncertain {
                    String::new()
                } else if uncertain {
                    " Uncertain".to_string()
                } else {
                    format!(" Completed({i})")
                };
                log.push(format!("undo s{i} #{n1}{input}"));
                if *attempt != Attempt::Ok {
                    let status = if n1 == tries { "rollback_failed" } else { before };
                    log.push(format!(
                        "hook rollback_failure s{i} #{n1} {status}: {}",
                        failure_text(*attempt, i, n1, "undo")
                    ));
                }
            }
            expected[i].rollback_attempts = tries as u32;
            if spec.undo[tries - 1] == Attempt::Ok {
                expected[i].status = StepStatus::RolledBack;
            } else {
                expected[i].status = StepStatus::RollbackFailed;
                let last = spec.undo[tries - 1];
                failures.push((i, last, failure_text(last, i, tries, "undo")));
                stopped = case.stop_on_rollback_failure;
            }
        }
    }
    let rolled_back = expected.iter().filter(|e| e.status == StepStatus::RolledBack).count();
    let rollback_errors = expected.iter().filter(|e| e.status == StepStatus::RollbackFailed).count();
    log.push(format!(
        "hook complete case success={} steps={} rolled_back={rolled_back} rollback_errors={rollback_errors}",
        cause.is_none(),
        expected.len()
    ));
    Prediction { log, steps: expected, cause, rollback_failures: failures }
}

/// Runs `case` for real on `ManualClock` and compares with the model.
fn check(case: &Case) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let log = Log::default();
    let policy =
        if case.stop_on_rollback_failure { RollbackFailurePolicy::Stop } else { RollbackFailurePolicy::Continue };
    let manager = TransactionManager::new(&clock)
        .with_hooks(Recorder(log.clone()))
        .with_timeout(TIMEOUT)
        .with_rollback_failure_policy(policy);
    let calls = RefCell::new(Vec::<usize>::new()); // execute attempts per step
    let log = &log;
    let clock_ref = &clock;

    let result = clock.block_on(manager.transaction("case").local().run(async |tx| {
        for (i, spec) in case.steps.iter().enumerate() {
            calls.borrow_mut().push(0);
            let execute = || {
                let n = {
                    let mut calls = calls.borrow_mut();
                    calls[i] += 1;
                    calls[i]
                };
                log.push(format!("exec s{i} #{n}"));
                let attempt = spec.execute[n - 1];
                async move {
                    match attempt {
                        Attempt::Ok => Ok(i),
                        Attempt::Err => Err(format!("exec {i}.{n} failed")),
                        Attempt::Timeout => {
                            clock_ref.sleep(Duration::from_secs(1)).await;
                            Ok(i)
                        }
                        Attempt::Panic => panic!("injected"),
                    }
                }
            };
            let undo_attempt = move |input: String| {
                let n = log.calls().iter().filter(|e| e.starts_with(&format!("undo s{i} #"))).count() + 1;
                log.push(format!("undo s{i} #{n}{input}"));
                let attempt = spec.undo[n - 1];
                async move {
                    match attempt {
                        Attempt::Ok => Ok(()),
                        Attempt::Err => Err(format!("undo {i}.{n} failed")),
                        Attempt::Timeout => {
                            clock_ref.sleep(Duration::from_secs(1)).await;
                            Ok(())
                        }
                        Attempt::Panic => panic!("injected"),
                    }
                }
            };
            let step = tx
                .step(format!("s{i}"))
                .retry(
                    RetryPolicy::new()
                        .with_max_retries(spec.execute.len() as u32 - 1)
                        .with_initial_interval(Duration::from_millis(1)),
                )
                .rollback_retry(
                    RetryPolicy::new()
                        .with_max_retries(spec.undo.len() as u32 - 1)
                        .with_initial_interval(Duration::from_millis(1)),
                );
            if spec.uncertain {
                step.execute(execute)
                    .rollback_uncertain(move |m: Maybe<usize>| undo_attempt(format!(" {m:?}")))
                    .await?;
            } else if spec.rollback {
                step.execute(execute).rollback(move |_| undo_attempt(String::new())).await?;
            } else {
                step.run(execute).await?;
            }
            if case.body_error_after == Some(i) {
                return Err(CaseError::Body);
            }
        }
        Ok::<_, CaseError>(())
    }));

    let Prediction { log: expected_log, steps: expected, cause, rollback_failures: failures } = model(case);
    prop_assert_eq!(log.take(), expected_log);
    let summary = match &result {
        Ok(done) => done.summary(),
        Err(err) => err.summary(),
    };
    prop_assert_eq!(summary.total_steps(), expected.len());
    for (record, expected) in summary.steps().iter().zip(&expected) {
        prop_assert_eq!(record.status(), expected.status, "step {}", record.index());
        prop_assert_eq!(record.attempts(), expected.attempts);
        prop_assert_eq!(record.rollback_attempts(), expected.rollback_attempts);
    }
    let count = |s| expected.iter().filter(|e| e.status == s).count();
    prop_assert_eq!(summary.completed_steps(), count(StepStatus::Completed));
    prop_assert_eq!(summary.failed_steps(), count(StepStatus::Failed));
    prop_assert_eq!(summary.rolled_back_steps(), count(StepStatus::RolledBack));
    prop_assert_eq!(summary.rollback_errors(), count(StepStatus::RollbackFailed));
    prop_assert_eq!(summary.rollback_skipped_steps(), count(StepStatus::RollbackSkipped));

    let skipped = summary.rollback_skipped_steps();
    match (result, cause) {
        (Ok(_), None) => {}
        (Err(err), Some((step, attempt, text))) => {
            // The original cause, typed.
            match err.cause() {
                CaseError::Body => prop_assert_eq!(step, usize::MAX),
                CaseError::Step(e) => {
                    prop_assert_eq!(e.index(), step);
                    match (e.kind(), attempt) {
                        (StepErrorKind::Failed(message), Attempt::Err) => {
                            prop_assert_eq!(format!("exec {message}").replace("exec exec", "exec"), text)
                        }
                        (StepErrorKind::TimedOut { timeout }, Attempt::Timeout) => prop_assert_eq!(*timeout, TIMEOUT),
                        (StepErrorKind::Panicked(message), Attempt::Panic) => {
                            prop_assert_eq!(message.as_str(), "injected")
                        }
                        (kind, attempt) => prop_assert!(false, "cause {:?} for {:?}", kind, attempt),
                    }
                }
            }
            // Every rollback failure, in rollback order, nothing swallowed.
            prop_assert_eq!(err.rollback_failures().len(), failures.len());
            for (failure, (step, attempt, text)) in err.rollback_failures().iter().zip(&failures) {
                prop_assert_eq!(failure.index(), *step);
                let matches = match (failure.kind(), attempt) {
                    (RollbackErrorKind::Failed(e), Attempt::Err) => {
                        format!("undo {e}").replace("undo undo", "undo") == *text
                    }
                    (RollbackErrorKind::TimedOut { .. }, Attempt::Timeout) => true,
                    (RollbackErrorKind::Panicked(m), Attempt::Panic) => m.as_str() == "injected",
                    _ => false,
                };
                prop_assert!(matches, "rollback failure {:?} for {:?}", failure, attempt);
            }
            let clean = failures.is_empty() && skipped == 0;
            prop_assert_eq!(err.rollback_state().is_clean(), clean);
        }
        (result, cause) => prop_assert!(false, "result {:?} but the model says {:?}", result.is_ok(), cause),
    }
    Ok(())
}

#[test]
fn random_transactions_match_the_model() {
    // Injected panics are expected by the thousand: keep the output for
    // real failures.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info.payload().downcast_ref::<&str>().is_some_and(|s| *s == "injected");
        if !injected {
            default_hook(info);
        }
    }));
    let cases = std::env::var("TM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let ran = std::cell::Cell::new(0u32);
    let outcome = runner.run(&case(), |case| {
        ran.set(ran.get() + 1);
        check(&case)
    });
    if let Err(error) = outcome {
        panic!("{error}");
    }
    println!("{} random transactions checked against the model", ran.get());
    assert!(ran.get() >= cases);
}
