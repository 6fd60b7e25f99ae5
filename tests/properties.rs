//! Property tests: random transactions checked against an independent
//! model of what must happen, event by event, in virtual time.
//!
//! The domain: 0–24 steps, each with no rollback, a rollback or an
//! uncertain rollback; per execute attempt success (at once, after a while,
//! or exactly at its timeout), error, timeout, panic in the future or in the
//! execute closure itself; per rollback attempt success, slow success,
//! error, timeout or panic; hooks that wait or panic at any event; a body
//! that fails before any step or after any step, or recovers from a step's
//! error and goes on; a deadline, a cancel signal or a drop of the whole
//! transaction at any instant (ties with other events included); closure
//! rollbacks on the heap, or undo records as data with a context in
//! `Fixed<8>` storage (steps past the capacity refused), with the steps as
//! closures or as data (`Action`, `Step::perform`); jitter; the
//! rollback failure policy; and up to three transactions running at once on
//! one clock.
//!
//! The model predicts the exact log of every transaction — hook events,
//! execute and rollback calls, each with its virtual time — plus every
//! step's status and attempts, the error (cause and every rollback
//! failure), and for a dropped transaction what it handed over and what
//! rolling that back did. So one comparison checks every invariant: a step
//! is rolled back only if it completed, or opted into uncertain rollbacks
//! and an attempt of it was in flight or ended uncertain; rollbacks run
//! latest first, each at least once and — unless a drop cut one short —
//! exactly once; no step or retry starts at or after a deadline or a fired
//! cancel signal; a hook never stops a rollback; backoff waits exactly what
//! the policy says; `on_transaction_complete` runs exactly once.
//!
//! `random_groups_and_scopes_match_the_model` (at the end) does the same
//! for parallel groups, with and without `cancel_on_failure`, inside a
//! scope or not, with a smaller model of its own.
//!
//! A fresh seed each run, printed; replay one with `TM_PROPTEST_SEED=<n>`.
//! `TM_PROPTEST_CASES` sets the number of groups (default 3,000).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use transaction_manager::*;
use transaction_manager::{
    abandon::{AbandonPolicy, Abandoned},
    group::member,
    hooks::{Hooks, StepEvent},
    interrupt::{InterruptReason, Interrupted},
    retry::{Jitter, SplitMix64},
    rollback::{LocalBoxedRollback, RollbackErrorKind, RollbackFailure, RollbackFailurePolicy},
    step::Maybe,
    storage::{Fixed, Unbounded},
};

const TIMEOUT: Duration = Duration::from_millis(10);
const SLOW: Duration = Duration::from_millis(3);
const LONG: Duration = Duration::from_secs(1);
const BACKOFF: Duration = Duration::from_millis(1);
const CAPACITY: usize = 8;

// ---------------------------------------------------------------- the domain

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    Ok,
    /// Succeeds after `SLOW`.
    Slow,
    /// Succeeds exactly at its timeout: the attempt wins the tie.
    Exact,
    Err,
    Timeout,
    Panic,
    /// The execute closure itself panics (not its future).
    ClosurePanic,
}

impl Attempt {
    fn succeeds(self) -> bool {
        matches!(self, Attempt::Ok | Attempt::Slow | Attempt::Exact)
    }

    /// How long the attempt takes, as the engine sees it.
    fn duration(self) -> Duration {
        match self {
            Attempt::Slow => SLOW,
            Attempt::Exact | Attempt::Timeout => TIMEOUT,
            _ => Duration::ZERO,
        }
    }

    /// May have taken effect although it failed.
    fn uncertain(self) -> bool {
        matches!(self, Attempt::Timeout | Attempt::Panic | Attempt::ClosurePanic)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Execute,
    Success,
    Failure,
    Rollback,
    RollbackFailure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Pass,
    Wait(Duration),
    Panic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Undo {
    None,
    Plain,
    Uncertain,
}

#[derive(Clone, Debug)]
struct StepSpec {
    undo: Undo,
    execute: Vec<Attempt>,
    rollback: Vec<Attempt>,
    /// The body catches this step's error and goes on.
    recover: bool,
    hooks: Vec<(Event, u32, Act)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyError {
    None,
    Before,
    After(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    None,
    /// From when the body starts.
    Deadline(Duration),
    /// At this time from the start.
    Cancel(Duration),
    /// The transaction's future is dropped at this time from the start.
    Drop(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Storage {
    /// `LocalBoxedRollback` closures, unbounded.
    Closures,
    /// Undo records as data, a context, `Fixed<CAPACITY>`.
    Fixed,
    /// The same, with the steps as data too: an `Action` enum performed
    /// with `Step::perform`.
    Actions,
}

#[derive(Clone, Debug)]
struct Case {
    steps: Vec<StepSpec>,
    body_error: BodyError,
    stop_on_rollback_failure: bool,
    storage: Storage,
    stop: Stop,
    jitter: Jitter,
    seed: u64,
    start: Act,
    rollback_start: Act,
    complete: Act,
}

impl Case {
    fn act(&self, step: usize, event: Event, attempt: u32) -> Act {
        self.steps[step].hooks.iter().find(|(e, a, _)| *e == event && *a == attempt).map_or(Act::Pass, |h| h.2)
    }

    fn policy(&self, attempts: usize) -> RetryPolicy {
        RetryPolicy::new().with_max_retries(attempts as u32 - 1).with_initial_interval(BACKOFF).with_jitter(self.jitter)
    }
}

fn execute_attempt() -> impl Strategy<Value = Attempt> {
    prop_oneof![
        4 => Just(Attempt::Ok),
        1 => Just(Attempt::Slow),
        1 => Just(Attempt::Exact),
        2 => Just(Attempt::Err),
        1 => Just(Attempt::Timeout),
        1 => Just(Attempt::Panic),
        1 => Just(Attempt::ClosurePanic),
    ]
}

fn rollback_attempt() -> impl Strategy<Value = Attempt> {
    prop_oneof![
        4 => Just(Attempt::Ok),
        1 => Just(Attempt::Slow),
        2 => Just(Attempt::Err),
        1 => Just(Attempt::Timeout),
        1 => Just(Attempt::Panic),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => Just(Act::Pass),
        1 => (1u64..=20).prop_map(|ms| Act::Wait(Duration::from_millis(ms))),
        1 => Just(Act::Panic),
    ]
}

fn hook() -> impl Strategy<Value = (Event, u32, Act)> {
    let event = prop_oneof![
        Just(Event::Execute),
        Just(Event::Success),
        Just(Event::Failure),
        Just(Event::Rollback),
        Just(Event::RollbackFailure),
    ];
    let act = prop_oneof![(1u64..=20).prop_map(|ms| Act::Wait(Duration::from_millis(ms))), Just(Act::Panic),];
    (event, 1u32..=3, act)
}

fn step_spec() -> impl Strategy<Value = StepSpec> {
    let undo = prop_oneof![1 => Just(Undo::None), 2 => Just(Undo::Plain), 2 => Just(Undo::Uncertain)];
    (
        undo,
        prop::collection::vec(execute_attempt(), 1..=4),
        prop::collection::vec(rollback_attempt(), 1..=3),
        prop::bool::weighted(0.15),
        prop::collection::vec(hook(), 0..=1),
    )
        .prop_map(|(undo, execute, rollback, recover, hooks)| StepSpec { undo, execute, rollback, recover, hooks })
}

fn case() -> impl Strategy<Value = Case> {
    let ms = |max: u64| (0..=max).prop_map(Duration::from_millis);
    let body_error = prop_oneof![
        6 => Just(BodyError::None),
        1 => Just(BodyError::Before),
        2 => (0usize..24).prop_map(BodyError::After),
    ];
    let stop = prop_oneof![
        3 => Just(Stop::None),
        2 => ms(150).prop_map(Stop::Deadline),
        2 => ms(150).prop_map(Stop::Cancel),
        2 => ms(150).prop_map(Stop::Drop),
    ];
    let jitter = prop_oneof![3 => Just(Jitter::None), 1 => Just(Jitter::Full), 1 => Just(Jitter::Equal)];
    let storage = prop_oneof![Just(Storage::Closures), Just(Storage::Fixed), Just(Storage::Actions)];
    (
        (prop::collection::vec(step_spec(), 0..=24), body_error, any::<bool>(), storage),
        (stop, jitter, any::<u64>(), act(), act(), act()),
    )
        .prop_map(
            |(
                (steps, body_error, stop_on_rollback_failure, storage),
                (stop, jitter, seed, start, rollback_start, complete),
            )| {
                Case {
                    steps,
                    body_error,
                    stop_on_rollback_failure,
                    storage,
                    stop,
                    jitter,
                    seed,
                    start,
                    rollback_start,
                    complete,
                }
            },
        )
}

// ------------------------------------------------------------ what is compared

/// A step's record as the engine reports it (or the model predicts it).
#[derive(Clone, Debug, PartialEq)]
struct StepView {
    status: StepStatus,
    attempts: u32,
    rollback_attempts: u32,
    completed_at: Option<Duration>,
    error: Option<String>,
}

#[derive(Debug, PartialEq)]
enum Ending {
    Committed,
    /// `run` returned the error: its cause, each rollback failure
    /// (`(index, what)`), and whether the rollback was clean.
    Failed {
        cause: String,
        failures: Vec<(usize, String)>,
        clean: bool,
    },
    /// Dropped while it owed rollbacks or before it ended: what rolling
    /// back the handed-over records did.
    Dropped {
        failures: Vec<(usize, String)>,
        clean: bool,
    },
    /// Dropped after it ended (in `on_transaction_complete`), or before it
    /// started: nothing handed over.
    DroppedQuietly,
}

#[derive(Debug, PartialEq)]
struct Observed {
    log: Vec<String>,
    steps: Vec<StepView>,
    ending: Ending,
}

fn view(record: &StepRecord) -> StepView {
    StepView {
        status: record.status(),
        attempts: record.attempts(),
        rollback_attempts: record.rollback_attempts(),
        completed_at: record.completed_at(),
        error: record.error().map(str::to_string),
    }
}

fn step_error_text(error: &StepError<String>) -> String {
    let what = match error.kind() {
        StepErrorKind::Failed(e) => format!("failed: {e}"),
        StepErrorKind::TimedOut { timeout } => format!("timed out after {timeout:?}"),
        StepErrorKind::Panicked(m) => format!("panicked: {m}"),
        StepErrorKind::CapacityExceeded { capacity } => format!("capacity {capacity}"),
        StepErrorKind::Interrupted(reason) => format!("interrupted: {reason}"),
        other => format!("{other:?}"),
    };
    format!("{} #{}: {what}", error.step(), error.index())
}

fn rollback_failure_texts<E: std::fmt::Display>(failures: &[RollbackFailure<E>]) -> Vec<(usize, String)> {
    failures
        .iter()
        .map(|f| {
            let what = match f.kind() {
                RollbackErrorKind::Failed(e) => format!("failed: {e}"),
                RollbackErrorKind::TimedOut { .. } => "timed out".to_string(),
                RollbackErrorKind::Panicked(m) => format!("panicked: {m}"),
                _ => "other".to_string(),
            };
            (f.index(), what)
        })
        .collect()
}

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

impl From<Interrupted> for CaseError {
    fn from(i: Interrupted) -> Self {
        CaseError::Step(i.into())
    }
}

fn cause_text(cause: &CaseError) -> String {
    match cause {
        CaseError::Body => "body".to_string(),
        CaseError::Step(e) => step_error_text(e),
    }
}

// ------------------------------------------------------------ running a case

/// What a transaction's steps, rollbacks and hooks share: its log, the
/// clock, the plan, and call counters.
struct Shared<'a> {
    case: &'a Case,
    clock: &'a ManualClock,
    log: RefCell<Vec<String>>,
    execute_calls: RefCell<Vec<usize>>,
    rollback_calls: RefCell<Vec<usize>>,
}

impl<'a> Shared<'a> {
    fn new(case: &'a Case, clock: &'a ManualClock) -> Self {
        let n = case.steps.len();
        Shared {
            case,
            clock,
            log: RefCell::default(),
            execute_calls: RefCell::new(vec![0; n]),
            rollback_calls: RefCell::new(vec![0; n]),
        }
    }

    fn push(&self, entry: String) {
        self.log.borrow_mut().push(format!("@{} {entry}", self.clock.now().as_nanos()));
    }

    /// One execute attempt of step `i`: the closure's own work (which may
    /// panic), then its future.
    fn attempt(&'a self, i: usize) -> impl Future<Output = Result<usize, String>> + 'a {
        let n = {
            let mut calls = self.execute_calls.borrow_mut();
            calls[i] += 1;
            calls[i]
        };
        self.push(format!("exec s{i} #{n}"));
        let attempt = self.case.steps[i].execute[n - 1];
        if attempt == Attempt::ClosurePanic {
            panic!("injected");
        }
        async move {
            match attempt {
                Attempt::Ok => Ok(i),
                Attempt::Slow => {
                    self.clock.sleep(SLOW).await;
                    Ok(i)
                }
                Attempt::Exact => {
                    self.clock.sleep(TIMEOUT).await;
                    Ok(i)
                }
                Attempt::Err => Err(format!("exec {i}.{n} failed")),
                Attempt::Timeout => {
                    self.clock.sleep(LONG).await;
                    Ok(i)
                }
                Attempt::Panic | Attempt::ClosurePanic => panic!("injected"),
            }
        }
    }

    /// One rollback attempt of step `i` (`input` describes what it got).
    fn rollback(&'a self, i: usize, input: String) -> impl Future<Output = Result<(), String>> + 'a {
        let k = {
            let mut calls = self.rollback_calls.borrow_mut();
            calls[i] += 1;
            calls[i]
        };
        self.push(format!("undo s{i} #{k}{input}"));
        let attempt = self.case.steps[i].rollback.get(k - 1).copied().unwrap_or(Attempt::Ok);
        async move {
            match attempt {
                Attempt::Err => Err(format!("undo {i}.{k} failed")),
                Attempt::Slow => {
                    self.clock.sleep(SLOW).await;
                    Ok(())
                }
                Attempt::Timeout => {
                    self.clock.sleep(LONG).await;
                    Ok(())
                }
                Attempt::Panic => panic!("injected"),
                _ => Ok(()),
            }
        }
    }

    async fn act(&self, act: Act) {
        match act {
            Act::Pass => {}
            Act::Wait(d) => self.clock.sleep(d).await,
            Act::Panic => panic!("injected"),
        }
    }
}

/// Hooks that log every event and wait or panic where the plan says.
struct Recorder<'a>(&'a Shared<'a>);

impl Recorder<'_> {
    async fn step(&self, event: Event, name: &str, e: &StepEvent<'_>, error: Option<&str>) {
        let mut entry = format!("hook {name} s{} #{} {}", e.step.index(), e.attempt, e.step.status());
        if let Some(error) = error {
            entry.push_str(": ");
            entry.push_str(error);
        }
        self.0.push(entry);
        self.0.act(self.0.case.act(e.step.index(), event, e.attempt)).await;
    }
}

impl Hooks for Recorder<'_> {
    async fn on_transaction_start(&self, _: &TransactionInfo) {
        self.0.push("hook start".into());
        self.0.act(self.0.case.start).await;
    }
    async fn on_step_execute(&self, e: &StepEvent<'_>) {
        self.step(Event::Execute, "execute", e, None).await
    }
    async fn on_step_success(&self, e: &StepEvent<'_>) {
        self.step(Event::Success, "success", e, None).await
    }
    async fn on_step_failure(&self, e: &StepEvent<'_>) {
        self.step(Event::Failure, "failure", e, e.step.error()).await
    }
    async fn on_rollback_start(&self, _: &TransactionInfo) {
        self.0.push("hook rollback_start".into());
        self.0.act(self.0.case.rollback_start).await;
    }
    async fn on_step_rollback(&self, e: &StepEvent<'_>) {
        self.step(Event::Rollback, "rollback", e, None).await
    }
    async fn on_step_rollback_failure(&self, e: &StepEvent<'_>) {
        self.step(Event::RollbackFailure, "rollback_failure", e, e.step.rollback_error()).await
    }
    async fn on_transaction_complete<S: transaction_manager::storage::Storage>(
        &self,
        _: &TransactionInfo,
        success: bool,
        summary: &Summary<S>,
    ) {
        self.0.push(format!(
            "hook complete success={success} steps={} rolled_back={} rollback_errors={}",
            summary.total_steps(),
            summary.rolled_back_steps(),
            summary.rollback_errors()
        ));
        self.0.act(self.0.case.complete).await;
    }
    fn on_transaction_abandoned<U, S: transaction_manager::storage::Storage>(&self, abandoned: &Abandoned<U, S>) {
        self.0.push(format!("hook abandoned pending={}", abandoned.pending_len()));
    }
}

/// Keeps what a dropped transaction hands over, to roll it back after.
struct Keep<U, S: transaction_manager::storage::Storage>(Rc<RefCell<Vec<Abandoned<U, S>>>>);

impl<U, S: transaction_manager::storage::Storage> Clone for Keep<U, S> {
    fn clone(&self) -> Self {
        Keep(self.0.clone())
    }
}

impl<C, H, Ctx: ?Sized, U, S: transaction_manager::storage::Storage> AbandonPolicy<C, H, Ctx, U, S> for Keep<U, S> {
    fn abandon(&self, _: &C, _: &H, abandoned: Abandoned<U, S>) {
        self.0.borrow_mut().push(abandoned);
    }
}

/// The context of `Storage::Fixed` transactions.
struct Harness<'a> {
    shared: &'a Shared<'a>,
    attempts: usize,
}

/// An undo record as data: which step, and (for an uncertain rollback)
/// what it got.
struct UndoRecord {
    step: usize,
    input: Option<Maybe<usize>>,
}

impl<'a> Rollback<Harness<'a>> for UndoRecord {
    type Error = String;

    async fn rollback(&mut self, h: &mut Harness<'a>) -> Result<(), String> {
        let input = self.input.map_or(String::new(), |m| format!(" {m:?}"));
        h.shared.rollback(self.step, input).await
    }
}

/// Runs `transaction`, dropping it at `drop_at` if it has not finished
/// (the drop timer is checked first, like an interrupt).
async fn drop_at<F: Future>(clock: &ManualClock, at: Option<Duration>, transaction: F) -> Option<F::Output> {
    let mut transaction = Some(Box::pin(transaction));
    let mut timer = at.map(|at| Box::pin(clock.sleep(at)));
    std::future::poll_fn(move |cx| {
        if let Some(timer) = timer.as_mut() {
            if timer.as_mut().poll(cx).is_ready() {
                transaction = None; // dropped now, at this instant
                return Poll::Ready(None);
            }
        }
        match transaction.as_mut().expect("polled after the end").as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

macro_rules! body {
    ($case:expr, |$step:ident, $i:ident, $spec:ident| $run_step:expr) => {
        async |tx| {
            let case: &Case = $case;
            if case.body_error == BodyError::Before {
                return Err(CaseError::Body);
            }
            for ($i, $spec) in case.steps.iter().enumerate() {
                let $step = tx
                    .step(format!("s{}", $i))
                    .retry(case.policy($spec.execute.len()))
                    .rollback_retry(case.policy($spec.rollback.len()));
                let result: Result<usize, StepError<String>> = $run_step;
                if let Err(error) = result {
                    if !$spec.recover {
                        return Err(CaseError::Step(error));
                    }
                }
                if case.body_error == BodyError::After($i) {
                    return Err(CaseError::Body);
                }
            }
            Ok::<_, CaseError>(())
        }
    };
}

/// Runs the transaction with the interrupt the case asks for; `$builder`
/// has its storage chosen, `$run` runs it with a body.
macro_rules! with_interrupt {
    ($case:expr, $clock:expr, $builder:expr, |$b:ident| $run:expr) => {{
        let builder = $builder;
        match $case.stop {
            Stop::Deadline(d) => {
                let $b = builder.with_deadline(d);
                drop_at($clock, None, $run).await
            }
            Stop::Cancel(at) => {
                let $b = builder.cancel_on($clock.sleep(at));
                drop_at($clock, None, $run).await
            }
            Stop::Drop(at) => {
                let $b = builder;
                drop_at($clock, Some(at), $run).await
            }
            Stop::None => {
                let $b = builder;
                drop_at($clock, None, $run).await
            }
        }
    }};
}

fn failure_policy(case: &Case) -> RollbackFailurePolicy {
    if case.stop_on_rollback_failure { RollbackFailurePolicy::Stop } else { RollbackFailurePolicy::Continue }
}

async fn run_closures<'a>(shared: &'a Shared<'a>) -> (Vec<StepView>, Ending) {
    let case = shared.case;
    let clock = shared.clock;
    let keep = Keep::<LocalBoxedRollback<'a>, Unbounded>(Rc::default());
    let manager = TransactionManager::new(clock)
        .with_hooks(Recorder(shared))
        .with_timeout(TIMEOUT)
        .with_rollback_failure_policy(failure_policy(case))
        .with_abandon_policy(keep.clone());
    let outcome =
        with_interrupt!(case, clock, manager.transaction("case").with_jitter_seed(case.seed).local(), |builder| {
            builder.run(body!(case, |step, i, spec| match spec.undo {
                Undo::None => step.run(|| shared.attempt(i)).await,
                Undo::Plain =>
                    step.execute(|| shared.attempt(i)).rollback(move |_| shared.rollback(i, String::new())).await,
                Undo::Uncertain => {
                    step.execute(|| shared.attempt(i))
                        .rollback_uncertain(move |m: Maybe<usize>| shared.rollback(i, format!(" {m:?}")))
                        .await
                }
            }))
        });
    let handed = keep.0.borrow_mut().drain(..).collect::<Vec<_>>();
    finish(outcome, handed, manager.hooks(), clock, &mut ()).await
}

/// A step as data: which step of the case, and what rollback it has.
struct CaseAction {
    step: usize,
    undo: Undo,
}

impl<'a> Action<Harness<'a>> for CaseAction {
    type Output = usize;
    type Error = String;
    type Undo = UndoRecord;

    async fn execute(&mut self, h: &mut Harness<'a>) -> Result<usize, String> {
        h.attempts += 1;
        h.shared.attempt(self.step).await
    }

    fn undo(&self, output: Maybe<&usize>) -> Option<UndoRecord> {
        match (self.undo, output) {
            (Undo::None, _) | (Undo::Plain, Maybe::Uncertain) => None,
            (Undo::Plain, Maybe::Completed(_)) => Some(UndoRecord { step: self.step, input: None }),
            (Undo::Uncertain, output) => Some(UndoRecord { step: self.step, input: Some(output.cloned()) }),
        }
    }
}

/// Runs a `Storage::Fixed` or `Storage::Actions` case.
async fn run_fixed<'a>(shared: &'a Shared<'a>) -> (Vec<StepView>, Ending, usize) {
    let case = shared.case;
    let clock = shared.clock;
    let keep = Keep::<UndoRecord, Fixed<CAPACITY>>(Rc::default());
    let manager = TransactionManager::new(clock)
        .with_hooks(Recorder(shared))
        .with_timeout(TIMEOUT)
        .with_rollback_failure_policy(failure_policy(case))
        .with_abandon_policy(keep.clone());
    let mut harness = Harness { shared, attempts: 0 };
    let outcome = with_interrupt!(
        case,
        clock,
        manager.transaction("case").with_jitter_seed(case.seed).fixed::<UndoRecord, CAPACITY>(),
        |builder| builder.run_with(
            &mut harness,
            body!(case, |step, i, spec| {
                macro_rules! attempt {
                    () => {
                        async move |h: &mut Harness<'a>| {
                            h.attempts += 1;
                            h.shared.attempt(i).await
                        }
                    };
                }
                if case.storage == Storage::Actions {
                    step.perform(CaseAction { step: i, undo: spec.undo }).await
                } else {
                    match spec.undo {
                        Undo::None => step.run_with(attempt!()).await,
                        Undo::Plain => {
                            step.execute_with(attempt!()).undo(|_| UndoRecord { step: i, input: None }).await
                        }
                        Undo::Uncertain => {
                            step.execute_with(attempt!())
                                .undo_uncertain(move |m: Maybe<&usize>| UndoRecord { step: i, input: Some(m.cloned()) })
                                .await
                        }
                    }
                }
            })
        )
    );
    let handed = keep.0.borrow_mut().drain(..).collect::<Vec<_>>();
    let (steps, ending) = finish(outcome, handed, manager.hooks(), clock, &mut harness).await;
    (steps, ending, harness.attempts)
}

type Outcome<S, RE> = Option<Result<Committed<(), S>, TransactionError<CaseError, RE, S>>>;

/// What the transaction's end shows: its steps and how it ended; a
/// dropped transaction's handed-over records are rolled back here.
async fn finish<U, S, Ctx>(
    outcome: Outcome<S, U::Error>,
    handed: Vec<Abandoned<U, S>>,
    hooks: &Recorder<'_>,
    clock: &ManualClock,
    ctx: &mut Ctx,
) -> (Vec<StepView>, Ending)
where
    S: transaction_manager::storage::Storage,
    U: Rollback<Ctx>,
    Ctx: ?Sized,
{
    let views = |steps: &[StepRecord]| steps.iter().map(view).collect::<Vec<_>>();
    match outcome {
        Some(Ok(done)) => {
            assert!(handed.is_empty());
            (views(done.summary().steps()), Ending::Committed)
        }
        Some(Err(err)) => {
            assert!(handed.is_empty());
            let ending = Ending::Failed {
                cause: cause_text(err.cause()),
                failures: rollback_failure_texts(err.rollback_failures()),
                clean: err.rollback_state().is_clean(),
            };
            (views(err.summary().steps()), ending)
        }
        None => {
            let mut handed = handed.into_iter();
            let Some(abandoned) = handed.next() else { return (Vec::new(), Ending::DroppedQuietly) };
            assert!(handed.next().is_none());
            let report = abandoned.roll_back(ctx, &clock, hooks).await;
            let ending = Ending::Dropped {
                failures: rollback_failure_texts(report.failures()),
                clean: report.rollback_state().is_clean(),
            };
            (views(report.summary().steps()), ending)
        }
    }
}

// ------------------------------------------------------------------ the model

/// An undo record the model's ledger holds: which step, and for an
/// uncertain rollback whether the step completed.
#[derive(Clone, Copy, Debug)]
struct Owed {
    step: usize,
    /// `None`: a plain rollback; `Some(true)`: uncertain, the step
    /// completed; `Some(false)`: uncertain, it did not.
    uncertain: Option<bool>,
}

/// Why the model's transaction stopped where it did.
enum Cut {
    /// The body was stopped at the stop time (inside step `Some(i)`, or
    /// between steps).
    Stopped(Option<usize>),
}

/// The model: walks through the transaction the way the reference
/// semantics and the library's promises say it must go, in virtual time.
struct Model<'c> {
    case: &'c Case,
    t: Duration,
    /// When the body is stopped (deadline, cancel signal or drop).
    body_stop: Option<Duration>,
    /// When the whole transaction's future is dropped.
    drop_at: Option<Duration>,
    log: Vec<String>,
    steps: Vec<StepView>,
    owed: Vec<Owed>,
    rng: SplitMix64,
    rollback_calls: Vec<usize>,
}

fn failure_text(attempt: Attempt, what: &str, i: usize, n: usize) -> String {
    match attempt {
        Attempt::Err => format!("{what} {i}.{n} failed"),
        Attempt::Timeout => format!("timed out after {TIMEOUT:?}"),
        _ => "panicked: injected".to_string(),
    }
}

impl<'c> Model<'c> {
    fn push(&mut self, entry: String) {
        self.log.push(format!("@{} {entry}", self.t.as_nanos()));
    }

    /// Waits `d`; `false` if `stop` comes first (time is then the stop's).
    fn wait(&mut self, d: Duration, stop: Option<Duration>) -> bool {
        match stop {
            Some(s) if self.t + d >= s => {
                self.t = self.t.max(s);
                false
            }
            _ => {
                self.t += d;
                true
            }
        }
    }

    /// Whether the stop has come (nothing more may happen in the body).
    fn stopped(&self) -> bool {
        self.body_stop.is_some_and(|s| self.t >= s)
    }

    fn act_wait(act: Act) -> Duration {
        if let Act::Wait(d) = act { d } else { Duration::ZERO }
    }

    fn counts(&self) -> (usize, usize, usize) {
        let count = |s| self.steps.iter().filter(|v| v.status == s).count();
        (self.steps.len(), count(StepStatus::RolledBack), count(StepStatus::RollbackFailed))
    }

    /// Runs step `i`; `Err(cut)` when the body is stopped inside it or
    /// right after it, `Ok(Err(text))` when it failed for good.
    fn step(&mut self, i: usize) -> Result<Result<(), String>, Cut> {
        let case = self.case;
        let spec = &case.steps[i];
        if case.storage != Storage::Closures && self.steps.len() >= CAPACITY {
            return Ok(Err(format!("s{i} #{}: capacity {CAPACITY}", self.steps.len())));
        }
        self.steps.push(StepView {
            status: StepStatus::InProgress,
            attempts: 0,
            rollback_attempts: 0,
            completed_at: None,
            error: None,
        });
        let index = self.steps.len() - 1;
        let mut uncertain = false;
        let policy = case.policy(spec.execute.len());
        for n in 1..=spec.execute.len() as u32 {
            self.steps[index].attempts = n;
            self.push(format!("hook execute s{i} #{n} in_progress"));
            let act = case.act(i, Event::Execute, n);
            if !self.wait(Self::act_wait(act), self.body_stop) {
                return Err(Cut::Stopped(Some(index)));
            }
            let (attempt, ran) = if act == Act::Panic {
                (Attempt::Panic, false)
            } else {
                if spec.undo == Undo::Uncertain && !self.owes(i) {
                    // Owed while the attempt is in flight.
                    self.owed.push(Owed { step: i, uncertain: Some(false) });
                }
                self.push(format!("exec s{i} #{n}"));
                let attempt = spec.execute[n as usize - 1];
                if !self.wait(attempt.duration(), self.body_stop) {
                    return Err(Cut::Stopped(Some(index)));
                }
                (attempt, true)
            };
            if attempt.succeeds() {
                self.steps[index].status = StepStatus::Completed;
                self.steps[index].completed_at = Some(self.t);
                match spec.undo {
                    Undo::None => {}
                    Undo::Plain => self.owed.push(Owed { step: i, uncertain: None }),
                    Undo::Uncertain => self.owed.last_mut().expect("owed while in flight").uncertain = Some(true),
                }
                self.push(format!("hook success s{i} #{n} completed"));
                let act = case.act(i, Event::Success, n);
                if !self.wait(Self::act_wait(act), self.body_stop) {
                    return Err(Cut::Stopped(None));
                }
                if act == Act::Panic {
                    self.steps[index].error = Some("panicked: injected".into());
                    return Ok(Err(format!("s{i} #{index}: panicked: injected")));
                }
                return Ok(Ok(()));
            }
            if ran {
                uncertain |= attempt.uncertain();
                if !uncertain && self.owes(i) {
                    // A clean failure: nothing took effect.
                    self.owed.pop();
                }
            }
            let text = if ran { failure_text(attempt, "exec", i, n as usize) } else { "panicked: injected".into() };
            let mut last = !ran || n as usize == spec.execute.len();
            self.steps[index].error = Some(text.clone());
            if last {
                self.steps[index].status = StepStatus::Failed;
                self.steps[index].completed_at = Some(self.t);
            }
            let status = if last { "failed" } else { "in_progress" };
            self.push(format!("hook failure s{i} #{n} {status}: {text}"));
            let act = case.act(i, Event::Failure, n);
            if !self.wait(Self::act_wait(act), self.body_stop) {
                return Err(Cut::Stopped(if last { None } else { Some(index) }));
            }
            if act == Act::Panic && !last {
                last = true;
                self.steps[index].status = StepStatus::Failed;
                self.steps[index].completed_at = Some(self.t);
            }
            let kind = match attempt {
                Attempt::Err => format!("failed: exec {i}.{n} failed"),
                Attempt::Timeout => format!("timed out after {TIMEOUT:?}"),
                _ => "panicked: injected".into(),
            };
            if last {
                return Ok(Err(format!("s{i} #{index}: {kind}")));
            }
            let delay = policy.jittered_delay(n - 1, &mut self.rng);
            if !self.wait(delay, self.body_stop) {
                return Err(Cut::Stopped(Some(index)));
            }
        }
        unreachable!("the last attempt returns")
    }

    /// Whether the model's ledger ends with step `i`'s record.
    fn owes(&self, i: usize) -> bool {
        self.owed.last().is_some_and(|o| o.step == i)
    }

    /// Rolls back what is owed, latest first, at `self.t`; with `cut`, the
    /// transaction's future may be dropped meanwhile: `false` then (what is
    /// still owed stays in `self.owed`).
    fn roll_back(&mut self, cut: Option<Duration>) -> Result<Vec<(usize, String)>, ()> {
        let case = self.case;
        let mut failures = Vec::new();
        if self.owed.is_empty() {
            return Ok(failures);
        }
        self.push("hook rollback_start".into());
        if !self.wait(Self::act_wait(case.rollback_start), cut) {
            return Err(());
        }
        while let Some(&owed) = self.owed.last() {
            let i = owed.step;
            let spec = &case.steps[i];
            let index = i; // steps past the capacity have no record, and come last
            let before = self.steps[index].status;
            let policy = case.policy(spec.rollback.len());
            let mut failed = None;
            for m in 1..=spec.rollback.len() as u32 {
                self.steps[index].rollback_attempts = m;
                let k = {
                    self.rollback_calls[i] += 1;
                    self.rollback_calls[i]
                };
                let input = match owed.uncertain {
                    None => String::new(),
                    Some(true) => format!(" Completed({i})"),
                    Some(false) => " Uncertain".to_string(),
                };
                self.push(format!("undo s{i} #{k}{input}"));
                let attempt = spec.rollback.get(k - 1).copied().unwrap_or(Attempt::Ok);
                let d = match attempt {
                    Attempt::Slow => SLOW,
                    Attempt::Timeout => TIMEOUT,
                    _ => Duration::ZERO,
                };
                if !self.wait(d, cut) {
                    return Err(());
                }
                if matches!(attempt, Attempt::Ok | Attempt::Slow) {
                    break;
                }
                let text = failure_text(attempt, "undo", i, k);
                let last = m as usize == spec.rollback.len();
                if last {
                    let what = match attempt {
                        Attempt::Err => format!("failed: {text}"),
                        Attempt::Timeout => "timed out".into(),
                        _ => "panicked: injected".into(),
                    };
                    failed = Some((text, what));
                    break;
                }
                self.push(format!("hook rollback_failure s{i} #{m} {before}: {text}"));
                if !self.wait(Self::act_wait(case.act(i, Event::RollbackFailure, m)), cut) {
                    return Err(());
                }
                let delay = policy.jittered_delay(m - 1, &mut self.rng);
                if !self.wait(delay, cut) {
                    return Err(());
                }
            }
            // Over: the record leaves the ledger before the last hook.
            self.owed.pop();
            let m = self.steps[index].rollback_attempts;
            match failed {
                None => {
                    self.steps[index].status = StepStatus::RolledBack;
                    self.push(format!("hook rollback s{i} #{m} rolled_back"));
                    if !self.wait(Self::act_wait(case.act(i, Event::Rollback, m)), cut) {
                        return Err(());
                    }
                }
                Some((text, what)) => {
                    self.steps[index].status = StepStatus::RollbackFailed;
                    self.push(format!("hook rollback_failure s{i} #{m} rollback_failed: {text}"));
                    failures.push((index, what));
                    let wait = self.wait(Self::act_wait(case.act(i, Event::RollbackFailure, m)), cut);
                    if case.stop_on_rollback_failure {
                        while let Some(skipped) = self.owed.pop() {
                            self.steps[skipped.step].status = StepStatus::RollbackSkipped;
                        }
                    }
                    if !wait {
                        return Err(());
                    }
                }
            }
        }
        Ok(failures)
    }

    fn complete(&mut self, success: bool, cut: Option<Duration>) -> bool {
        let (steps, rolled_back, errors) = self.counts();
        self.push(format!(
            "hook complete success={success} steps={steps} rolled_back={rolled_back} rollback_errors={errors}"
        ));
        self.wait(Self::act_wait(self.case.complete), cut)
    }

    /// The transaction was dropped: it hands over what it owes, and the
    /// test rolls that back.
    fn dropped(mut self) -> Observed {
        if let Some(last) = self.steps.last_mut() {
            if last.status == StepStatus::InProgress {
                last.status = StepStatus::Failed;
                last.completed_at = Some(self.t);
                last.error = Some("interrupted: the transaction was dropped".into());
            }
        }
        self.push(format!("hook abandoned pending={}", self.owed.len()));
        let failures = self.roll_back(None).expect("not cut");
        // One rule for clean or partial: no rollback failed for good (also
        // one that failed before the drop, whose failure the handed-over
        // rollback does not list) and none was skipped.
        let skipped =
            self.steps.iter().any(|s| matches!(s.status, StepStatus::RollbackSkipped | StepStatus::RollbackFailed));
        self.complete(false, None);
        let clean = failures.is_empty() && !skipped;
        Observed { log: self.log, steps: self.steps, ending: Ending::Dropped { failures, clean } }
    }

    /// The body failed with `cause` (or was interrupted): roll back.
    fn abort(mut self, cause: String) -> Observed {
        let Ok(failures) = self.roll_back(self.drop_at) else { return self.dropped() };
        let skipped = self.steps.iter().any(|s| s.status == StepStatus::RollbackSkipped);
        let clean = failures.is_empty() && !skipped;
        if !self.complete(false, self.drop_at) {
            return Observed { log: self.log, steps: Vec::new(), ending: Ending::DroppedQuietly };
        }
        Observed { log: self.log, steps: self.steps, ending: Ending::Failed { cause, failures, clean } }
    }
}

fn model(case: &Case) -> Observed {
    let drop_at = match case.stop {
        Stop::Drop(at) => Some(at),
        _ => None,
    };
    let mut m = Model {
        case,
        t: Duration::ZERO,
        body_stop: None,
        drop_at,
        log: Vec::new(),
        steps: Vec::new(),
        owed: Vec::new(),
        rng: SplitMix64::new(case.seed),
        rollback_calls: vec![0; case.steps.len()],
    };
    if drop_at == Some(Duration::ZERO) {
        // Dropped before its first poll: it never started.
        return Observed { log: Vec::new(), steps: Vec::new(), ending: Ending::DroppedQuietly };
    }
    m.push("hook start".into());
    if !m.wait(Model::act_wait(case.start), drop_at) {
        return m.dropped();
    }
    m.body_stop = match case.stop {
        Stop::None => None,
        Stop::Deadline(d) => Some(m.t + d),
        Stop::Cancel(at) | Stop::Drop(at) => Some(at),
    };
    let interrupted = |m: Model, inside: Option<usize>| -> Observed {
        if drop_at.is_some() {
            return m.dropped();
        }
        let reason = match case.stop {
            Stop::Deadline(d) => InterruptReason::DeadlineExceeded { deadline: d },
            _ => InterruptReason::Cancelled,
        };
        let mut m = m;
        let cause = match inside {
            Some(index) => {
                let step = &mut m.steps[index];
                step.status = StepStatus::Failed;
                step.completed_at = Some(m.t);
                step.error = Some(reason.to_string());
                format!("s{index} #{index}: interrupted: {reason}")
            }
            None => format!("(between steps) #{}: interrupted: {reason}", m.steps.len()),
        };
        m.abort(cause)
    };
    if m.stopped() {
        return interrupted(m, None);
    }
    if case.body_error == BodyError::Before {
        return m.abort("body".into());
    }
    for i in 0..case.steps.len() {
        if m.stopped() {
            return interrupted(m, None);
        }
        match m.step(i) {
            Err(Cut::Stopped(inside)) => return interrupted(m, inside),
            Ok(Err(cause)) if !case.steps[i].recover => return m.abort(cause),
            Ok(_) => {}
        }
        if case.body_error == BodyError::After(i) {
            return m.abort("body".into());
        }
    }
    // The body returns `Ok` in the same instant as its last event.
    if m.stopped() {
        return interrupted(m, None);
    }
    if !m.complete(true, drop_at) {
        return Observed { log: m.log, steps: Vec::new(), ending: Ending::DroppedQuietly };
    }
    Observed { log: m.log, steps: m.steps, ending: Ending::Committed }
}

// ------------------------------------------------------------------ the check

/// One transaction of a group: its step records, how it ended, and (with a
/// context) how many attempts the context saw.
type Run<'a> = Pin<Box<dyn Future<Output = (Vec<StepView>, Ending, Option<usize>)> + 'a>>;

/// Runs the cases of a group at the same time on one clock and compares
/// each with the model.
fn check(cases: &[Case]) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let shared: Vec<Shared<'_>> = cases.iter().map(|case| Shared::new(case, &clock)).collect();
    let runs: Vec<Run<'_>> = shared
        .iter()
        .map(|shared| -> Pin<Box<dyn Future<Output = _> + '_>> {
            match shared.case.storage {
                Storage::Closures => Box::pin(async move {
                    let (steps, ending) = run_closures(shared).await;
                    (steps, ending, None)
                }),
                Storage::Fixed | Storage::Actions => Box::pin(async move {
                    let (steps, ending, attempts) = run_fixed(shared).await;
                    (steps, ending, Some(attempts))
                }),
            }
        })
        .collect();
    let results = clock.block_on(join_all(runs));
    for ((case, shared), (steps, ending, attempts)) in cases.iter().zip(&shared).zip(results) {
        let log = shared.log.take();
        if let Some(attempts) = attempts {
            // The context was lent to every attempt.
            prop_assert_eq!(
                attempts,
                log.iter().filter(|e| e.split_once(' ').is_some_and(|(_, e)| e.starts_with("exec "))).count()
            );
        }
        let expected = model(case);
        prop_assert_eq!(&log, &expected.log, "the log");
        prop_assert_eq!(&steps, &expected.steps, "the step records");
        prop_assert_eq!(&ending, &expected.ending, "the ending");
        if !steps.is_empty() {
            prop_assert!(steps.iter().all(|s| s.status != StepStatus::InProgress), "a step left in progress");
        }
    }
    Ok(())
}

/// Polls every future until all are done; outputs in order.
async fn join_all<'f, T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + 'f>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(move |cx| {
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                if let Poll::Ready(value) = future.as_mut().poll(cx) {
                    *output = Some(value);
                }
            }
        }
        if outputs.iter().all(Option::is_some) {
            Poll::Ready(outputs.iter_mut().map(|o| o.take().unwrap()).collect())
        } else {
            Poll::Pending
        }
    })
    .await
}

fn seed() -> u64 {
    if let Some(seed) = std::env::var("TM_PROPTEST_SEED").ok().and_then(|v| v.parse().ok()) {
        return seed;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut mix = SplitMix64::new(now.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32));
    mix.next_u64()
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
    let seed = seed();
    println!("property test seed: {seed} (replay: TM_PROPTEST_SEED={seed})");
    eprintln!("property test seed: {seed} (replay: TM_PROPTEST_SEED={seed})");
    let groups = std::env::var("TM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let config = Config { cases: groups, failure_persistence: None, ..Config::default() };
    let mut bytes = [0u8; 32];
    let mut mix = SplitMix64::new(seed);
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&mix.next_u64().to_le_bytes());
    }
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let ran = Cell::new(0u32);
    let transactions = Cell::new(0usize);
    let outcome = runner.run(&prop::collection::vec(case(), 1..=3), |cases| {
        ran.set(ran.get() + 1);
        transactions.set(transactions.get() + cases.len());
        check(&cases)
    });
    if let Err(error) = outcome {
        panic!("seed {seed} (replay: TM_PROPTEST_SEED={seed}): {error}");
    }
    println!("{} random transactions in {} groups checked against the model", transactions.get(), ran.get());
    assert!(ran.get() >= groups);
}

// ------------------------------------------------- parallel groups, scopes
//
// A second, smaller model: one parallel group of 1–4 members (each with
// 1–3 attempts that succeed, fail or time out after a random time, and a
// rollback that may fail), the default policy or `cancel_on_failure`, run
// at the top of the body or inside a scope, then a step that may fail. The
// model replays the members' timelines in virtual time and predicts every
// member's status and attempts, the rollbacks in order (reverse order of
// completion, uncertain records where their attempt started), the group's
// error (first failure, the others), and when everything ended. Cases in
// which two members do something at the same instant are skipped: which
// goes first is the poll order, not a promise.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemberAttempt {
    Ok(u64),
    Err(u64),
    Timeout,
}

#[derive(Clone, Debug)]
struct MemberSpec {
    attempts: Vec<MemberAttempt>,
    rollback_fails: bool,
}

#[derive(Clone, Debug)]
struct GroupCase {
    members: Vec<MemberSpec>,
    /// The same for every member (a `Vec` of members has one type).
    undo: Undo,
    cancel: bool,
    in_scope: bool,
    fail_after: bool,
}

const MEMBER_TIMEOUT: u64 = 10;

fn member_attempt() -> impl Strategy<Value = MemberAttempt> {
    prop_oneof![
        3 => (1..=9u64).prop_map(MemberAttempt::Ok),
        3 => (1..=9u64).prop_map(MemberAttempt::Err),
        1 => Just(MemberAttempt::Timeout),
    ]
}

fn group_case() -> impl Strategy<Value = GroupCase> {
    let member = (prop::collection::vec(member_attempt(), 1..=3), any::<bool>())
        .prop_map(|(attempts, rollback_fails)| MemberSpec { attempts, rollback_fails });
    let undo = prop_oneof![Just(Undo::None), Just(Undo::Plain), Just(Undo::Uncertain)];
    (prop::collection::vec(member, 1..=4), undo, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(members, undo, cancel, in_scope, fail_after)| GroupCase { members, undo, cancel, in_scope, fail_after },
    )
}

/// One member's timeline, as the model replays it.
#[derive(Clone, Debug, Default)]
struct Timeline {
    /// (start, end) of each attempt made.
    attempts: Vec<(u64, u64)>,
    completed_at: Option<u64>,
    failed_at: Option<u64>,
    /// When its uncertain undo record went into the ledger for good.
    uncertain_since: Option<u64>,
}

fn timeline(spec: &MemberSpec, undo: Undo) -> Timeline {
    let mut line = Timeline::default();
    let mut t = 0;
    for (k, attempt) in spec.attempts.iter().enumerate() {
        let end = match attempt {
            MemberAttempt::Ok(d) | MemberAttempt::Err(d) => t + d,
            MemberAttempt::Timeout => t + MEMBER_TIMEOUT,
        };
        line.attempts.push((t, end));
        match attempt {
            MemberAttempt::Ok(_) => {
                line.completed_at = Some(end);
                return line;
            }
            MemberAttempt::Timeout if undo == Undo::Uncertain && line.uncertain_since.is_none() => {
                line.uncertain_since = Some(t);
            }
            _ => {}
        }
        if k + 1 == spec.attempts.len() {
            line.failed_at = Some(end);
            return line;
        }
        t = end + (1 << k);
    }
    line
}

#[derive(Debug, PartialEq)]
struct GroupObserved {
    statuses: Vec<(StepStatus, u32)>,
    rollbacks: Vec<String>,
    /// The group's error: the first member that failed, the others.
    group_error: Option<(usize, Vec<usize>)>,
    committed: bool,
    ended_at: u64,
}

/// The model, or `None` for a case with a tie between members.
fn group_model(case: &GroupCase) -> Option<GroupObserved> {
    let mut lines: Vec<Timeline> = case.members.iter().map(|m| timeline(m, case.undo)).collect();
    // Ties: two members' attempts starting or ending at the same instant
    // (the first attempts all start at 0, in member order: not a tie).
    let mut instants: Vec<u64> = Vec::new();
    for line in &lines {
        for (k, &(start, end)) in line.attempts.iter().enumerate() {
            if k > 0 {
                instants.push(start);
            }
            instants.push(end);
        }
    }
    let mut sorted = instants.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != instants.len() {
        return None;
    }
    let first = (0..lines.len()).filter(|&i| lines[i].failed_at.is_some()).min_by_key(|&i| lines[i].failed_at);
    let mut cancelled = vec![false; lines.len()];
    if case.cancel {
        if let Some(first) = first {
            let at = lines[first].failed_at.unwrap();
            for (i, line) in lines.iter_mut().enumerate() {
                if i == first || line.completed_at.is_some_and(|c| c < at) {
                    continue;
                }
                // Cut at `at`: the attempts that started before it stay.
                line.attempts.retain(|&(start, _)| start < at);
                if line.uncertain_since.is_some_and(|u| u >= at) {
                    line.uncertain_since = None;
                }
                let in_flight = line.attempts.last().is_some_and(|&(_, end)| end > at);
                if in_flight && case.undo == Undo::Uncertain && line.uncertain_since.is_none() {
                    line.uncertain_since = Some(line.attempts.last().unwrap().0);
                }
                line.completed_at = None;
                line.failed_at = Some(at);
                cancelled[i] = true;
            }
        }
    }
    let group_failed = first.is_some();
    let group_end = if case.cancel && group_failed {
        lines[first.unwrap()].failed_at.unwrap()
    } else {
        lines.iter().map(|l| l.completed_at.or(l.failed_at).unwrap()).max().unwrap()
    };
    // Undo records in ledger order: (when, member) — completions at their
    // instant, uncertain records where their attempt started.
    let mut records: Vec<(u64, usize, bool)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match (line.completed_at, line.uncertain_since) {
            (Some(at), _) if case.undo != Undo::None => records.push((at, i, true)),
            (None, Some(since)) => records.push((since, i, false)),
            _ => {}
        }
    }
    records.sort_by_key(|&(at, i, _)| (at, i));
    let mut statuses: Vec<(StepStatus, u32)> = lines
        .iter()
        .map(|l| {
            let status = if l.completed_at.is_some() { StepStatus::Completed } else { StepStatus::Failed };
            (status, l.attempts.len() as u32)
        })
        .collect();
    let rolled_back = group_failed || case.fail_after;
    let mut rollbacks = Vec::new();
    if rolled_back {
        for &(_, i, completed) in records.iter().rev() {
            rollbacks.push(format!("undo {i} {}", if completed { "completed" } else { "uncertain" }));
            statuses[i].0 =
                if case.members[i].rollback_fails { StepStatus::RollbackFailed } else { StepStatus::RolledBack };
        }
    }
    let group_error = first.map(|first| {
        let others = (0..lines.len()).filter(|&i| i != first && lines[i].failed_at.is_some()).collect();
        (first, others)
    });
    let _ = cancelled;
    Some(GroupObserved {
        statuses,
        rollbacks,
        group_error,
        committed: if group_failed { case.in_scope } else { !case.fail_after },
        ended_at: group_end,
    })
}

fn run_group_case(case: &GroupCase) -> GroupObserved {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock);
    let log: Rc<RefCell<Vec<String>>> = Rc::default();
    let group_error: RefCell<Option<(usize, Vec<usize>)>> = RefCell::new(None);
    let c = &clock;
    let members = || {
        case.members.iter().enumerate().map(move |(i, spec)| {
            let calls = Cell::new(0usize);
            let attempts = spec.attempts.clone();
            member(format!("m{i}"))
                .timeout(Duration::from_millis(MEMBER_TIMEOUT))
                .retry(
                    RetryPolicy::new()
                        .with_max_retries(spec.attempts.len() as u32 - 1)
                        .with_initial_interval(Duration::from_millis(1)),
                )
                .rollback_retry(RetryPolicy::new())
                .execute(move || {
                    let attempt = attempts[calls.get()];
                    calls.set(calls.get() + 1);
                    async move {
                        match attempt {
                            MemberAttempt::Ok(d) => {
                                c.sleep(Duration::from_millis(d)).await;
                                Ok(i)
                            }
                            MemberAttempt::Err(d) => {
                                c.sleep(Duration::from_millis(d)).await;
                                Err("no")
                            }
                            MemberAttempt::Timeout => {
                                c.sleep(LONG).await;
                                Ok(i)
                            }
                        }
                    }
                })
        })
    };
    // Rollbacks own what they use (`'static`).
    let undo = |i: usize| {
        let log = log.clone();
        let fails = case.members[i].rollback_fails;
        move |completed: bool| {
            let log = log.clone();
            async move {
                log.borrow_mut().push(format!("undo {i} {}", if completed { "completed" } else { "uncertain" }));
                if fails { Err("stuck") } else { Ok(()) }
            }
        }
    };
    // One body for the three kinds of members (one type per `Vec`).
    macro_rules! body {
        ($members:expr) => {
            async |tx: &mut Transaction<'_, _, (), LocalBoxedRollback<'static>, Unbounded>| {
                let run = async |tx: &mut Transaction<'_, _, (), LocalBoxedRollback<'static>, Unbounded>| {
                    let group = tx.group();
                    let group = if case.cancel { group.cancel_on_failure() } else { group };
                    match group.run($members).await {
                        Ok(values) => Ok(values),
                        Err(error) => {
                            let index = |e: &StepError<&str>| e.index();
                            *group_error.borrow_mut() =
                                Some((index(error.first()), error.others().iter().map(index).collect()));
                            Err(StepError::from(error))
                        }
                    }
                };
                if case.in_scope {
                    if tx.scope("s", run).await.is_err() {
                        return Ok(());
                    }
                } else {
                    run(tx).await?;
                }
                if case.fail_after {
                    tx.step("after").run(|| async { Err::<(), _>("after") }).await?;
                }
                Ok::<_, StepError<&str>>(())
            }
        };
    }
    let result = match case.undo {
        Undo::None => clock.block_on(manager.transaction("g").local().run(body!(members().collect::<Vec<_>>()))),
        Undo::Plain => clock.block_on(manager.transaction("g").local().run(body!(members()
            .enumerate()
            .map(|(i, m)| {
                let undo = undo(i);
                m.rollback(move |_| undo(true))
            })
            .collect::<Vec<_>>()))),
        Undo::Uncertain => clock.block_on(manager.transaction("g").local().run(body!(members()
            .enumerate()
            .map(|(i, m)| {
                let undo = undo(i);
                m.rollback_uncertain(move |maybe: Maybe<usize>| undo(maybe.completed().is_some()))
            })
            .collect::<Vec<_>>()))),
    };
    let (committed, summary) = match result {
        Ok(done) => (true, done.into_parts().1),
        Err(error) => (false, error.into_parts().2),
    };
    let n = case.members.len();
    let statuses = summary.steps()[..n].iter().map(|s| (s.status(), s.attempts())).collect();
    let rollbacks = log.borrow().clone();
    GroupObserved {
        statuses,
        rollbacks,
        group_error: group_error.take(),
        committed,
        ended_at: clock.now().as_millis() as u64,
    }
}

#[test]
fn random_groups_and_scopes_match_the_model() {
    let seed = seed();
    println!("group property test seed: {seed} (replay: TM_PROPTEST_SEED={seed})");
    let cases = std::env::var("TM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3_000);
    let config = Config { cases, failure_persistence: None, max_global_rejects: cases * 10, ..Config::default() };
    let mut bytes = [0u8; 32];
    let mut mix = SplitMix64::new(seed ^ 0x6A0_0B5);
    for chunk in bytes.chunks_mut(8) {
        chunk.copy_from_slice(&mix.next_u64().to_le_bytes());
    }
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let outcome = runner.run(&group_case(), |case| {
        let Some(expected) = group_model(&case) else {
            return Err(TestCaseError::reject("two members act at the same instant"));
        };
        let observed = run_group_case(&case);
        prop_assert_eq!(observed, expected);
        Ok(())
    });
    if let Err(error) = outcome {
        panic!("seed {seed} (replay: TM_PROPTEST_SEED={seed}): {error}");
    }
}
