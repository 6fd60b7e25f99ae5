//! The behaviour every runtime must show, written once.
//!
//! Each scenario is an `async fn` generic over the [`Clock`], so the same
//! code runs on `ManualClock`, tokio's paused clock, and any other adapter.
//! A runtime's test file expands [`conformance_suite!`] with a macro that
//! drives one scenario to completion on that runtime.
//!
//! Scenarios check what happened in order — step calls, rollback arguments
//! and hook events interleaved in one log — plus statuses, typed errors and
//! summary fields, and virtual time where the runtime has it.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use transaction_manager::*;

use transaction_manager::{
    hooks::{Hooks, StepEvent},
    storage::Storage,
};

mod conditions;
mod groups;
mod interleavings;
mod reliability;
mod scenarios;
#[allow(unused_imports)]
pub use conditions::*;
#[allow(unused_imports)]
pub use groups::*;
#[allow(unused_imports)]
pub use interleavings::*;
#[allow(unused_imports)]
pub use reliability::*;
#[allow(unused_imports)]
pub use scenarios::*;

/// How a runtime's clock can be checked.
#[derive(Clone, Copy, Debug)]
pub enum Timing {
    /// Virtual or paused time: every delay is exact, and scenarios use the
    /// reference's real intervals (500 ms, 1 s, 2 s, …).
    Exact,
    /// Real time: durations are divided by 100 to keep the suite fast, and
    /// only lower bounds are checked.
    Real,
}

impl Timing {
    /// A scenario duration in milliseconds, scaled for this runtime.
    pub fn ms(self, ms: u64) -> Duration {
        match self {
            Timing::Exact => Duration::from_millis(ms),
            Timing::Real => Duration::from_micros(ms * 10),
        }
    }

    /// Checks a time reading against the expected one.
    #[track_caller]
    pub fn assert_at(self, actual: Duration, expected: Duration) {
        match self {
            Timing::Exact => assert_eq!(actual, expected, "virtual time"),
            Timing::Real => assert!(actual >= expected, "{actual:?} is earlier than {expected:?}"),
        }
    }
}

/// One ordered log shared by steps, rollbacks and hooks. `Send + Sync`, so
/// the same scenarios also work where the transaction must be `Send`.
#[derive(Clone, Default)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    /// A log that lives for the rest of the test process, so `'static`
    /// rollback closures (`BoxedRollback`) can use it without cloning.
    pub fn leaked() -> &'static Log {
        Box::leak(Box::default())
    }

    pub fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// Entries that do not come from hooks (steps and rollbacks only).
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().filter(|e| !e.starts_with("hook ")).cloned().collect()
    }

    pub fn count(&self, entry: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|e| *e == entry).count()
    }
}

/// Hooks that write every event, with the step's attempt, status and last
/// error, into the log.
pub struct Recorder(pub Log);

fn describe(prefix: &str, event: &StepEvent<'_>, error: Option<&str>) -> String {
    let mut s = format!("hook {prefix} {} #{} {}", event.step.name(), event.attempt, event.step.status());
    if let Some(e) = error {
        s.push_str(": ");
        s.push_str(e);
    }
    s
}

impl Hooks for Recorder {
    async fn on_transaction_start(&self, tx: &TransactionInfo) {
        self.0.push(format!("hook start {}", tx.operation()));
    }
    async fn on_step_execute(&self, e: &StepEvent<'_>) {
        self.0.push(describe("execute", e, None));
    }
    async fn on_step_success(&self, e: &StepEvent<'_>) {
        self.0.push(describe("success", e, None));
    }
    async fn on_step_failure(&self, e: &StepEvent<'_>) {
        self.0.push(describe("failure", e, e.step.error()));
    }
    async fn on_rollback_start(&self, tx: &TransactionInfo) {
        self.0.push(format!("hook rollback_start {}", tx.operation()));
    }
    async fn on_step_rollback(&self, e: &StepEvent<'_>) {
        self.0.push(describe("rollback", e, None));
    }
    async fn on_step_rollback_failure(&self, e: &StepEvent<'_>) {
        self.0.push(describe("rollback_failure", e, e.step.rollback_error()));
    }
    async fn on_transaction_complete<S: Storage>(&self, tx: &TransactionInfo, success: bool, summary: &Summary<S>) {
        self.0.push(format!(
            "hook complete {} success={success} steps={} rolled_back={} rollback_errors={}",
            tx.operation(),
            summary.total_steps(),
            summary.rolled_back_steps(),
            summary.rollback_errors()
        ));
    }
}

/// Expands to one `#[test]` per scenario, each driven by `$run!(scenario)`.
/// `$run` receives the scenario's path and must call it as
/// `scenario(clock, timing).await` on its runtime.
#[macro_export]
macro_rules! conformance_suite {
    ($run:ident) => {
        $crate::conformance_suite!(@tests $run:
            two_steps_succeed,
            failure_rolls_back_completed_steps_in_reverse,
            rollback_failure_is_reported_with_the_cause,
            steps_without_rollback_are_passed_over_on_body_error,
            execute_timeout_is_a_typed_error,
            rollback_timeout_counts_as_rollback_failure,
            retry_succeeds_after_exact_backoff,
            backoff_doubles_from_500ms,
            retries_exhausted_fails_the_step,
            rollback_retry_succeeds,
            rollback_retries_exhausted,
            rollback_policy_can_differ_from_the_step,
            hooks_fire_in_order_on_success,
            hooks_fire_in_order_on_failure,
            capacity_exceeded_rolls_back_what_completed,
            context_is_lent_to_steps_and_rollbacks,
            summary_records_times_attempts_and_errors,
            jitter_is_reproducible_from_the_seed,
            caller_can_recover_from_a_failed_step,
            deadline_rolls_back_before_returning,
            cancel_signal_rolls_back_before_returning,
            uncertain_rollback_covers_a_timed_out_step,
            uncertain_rollback_follows_what_happened,
            rollback_can_stop_at_the_first_failure,
            panics_are_failures_of_their_attempt,
            hook_panics_fail_the_attempt,
            body_panic_rolls_back_then_resumes,
            bad_input_has_defined_behaviour,
            dropped_at_every_await_point_hands_over_its_rollbacks,
            deadline_in_backoff_does_not_roll_back_a_clean_failure,
            dropped_in_backoff_owes_nothing_for_a_clean_failure,
            interrupt_inside_a_hook_does_not_roll_back_a_step_that_did_not_run,
            hook_panic_before_the_first_attempt_is_not_uncertain,
            interrupt_that_already_fired_starts_no_step,
            no_step_starts_at_the_deadline,
            no_retry_starts_after_the_deadline,
            rollback_hook_panics_do_not_stop_the_rollback,
            panic_in_the_execute_closure_is_a_failed_attempt,
            panics_in_display_and_clone_do_not_escape,
            clock_panics_do_not_lose_rollbacks,
            step_dropped_by_the_body_is_recorded_as_interrupted,
            steps_as_data_roll_back_in_reverse,
            group_member_failure_lets_the_others_finish,
            group_member_failure_can_cancel_the_others,
            group_rollbacks_run_in_reverse_completion_order_and_may_fail,
            group_rollbacks_can_run_concurrently,
            dropped_during_concurrent_rollbacks_rolls_back_each_member_once,
            nested_scopes_roll_back_only_their_own_steps,
            dropped_in_the_middle_of_a_group_hands_over_its_rollbacks,
            deadline_in_the_middle_of_a_group_rolls_back,
            group_capacity_is_reserved_before_any_member_starts,
            group_member_panics_are_failures_of_their_attempt,
            group_hook_panics_and_cancel_signal,
            group_failure_and_success_hook_panics,
            group_members_borrow_parts_of_the_context,
            permanent_errors_are_not_retried,
            permanent_rollback_errors_are_not_retried,
            panicking_retry_conditions_fail_for_good,
            group_members_take_retry_conditions,
        );
    };
    (@tests $run:ident: $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $run!($crate::conformance::$name);
            }
        )*
    };
}
