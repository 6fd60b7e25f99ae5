//! One step's way through its attempts, for a plain step and a group
//! member alike: which attempt it is on, what it owes, and every decision
//! about it (an attempt begins, its uncertain undo record is owed, it
//! completes, it fails, the backoff before the next, the rollback it no
//! longer owes). A plain step's future awaits what these transitions ask
//! for (hooks, journal writes, the attempt, the backoff) in line; the group
//! engine polls its members' at once. Neither decides anything itself.

use core::fmt;
use core::time::Duration;

use crate::durable::id::IdempotencyKey;
use crate::engine::rollback::Panicked;
use crate::engine::transaction::StepConfig;
use crate::ledger::book::{Ledger, UndoRecord};
use crate::ledger::error::StepErrorKind;
use crate::timing::clock::Clock;
use crate::timing::condition::Verdict;
use crate::util::storage::Storage;
use crate::util::text::{PanicMessage, caught};

/// What a step's transitions change and read: the transaction's ledger,
/// its clock, and the step's settings.
pub(crate) struct StepEnv<'a, U, S: Storage, C> {
    pub(crate) ledger: &'a mut Ledger<U, S>,
    pub(crate) clock: &'a C,
    pub(crate) config: &'a StepConfig,
}

/// Where one step is in its attempts. A plain step keeps it in its future,
/// a group member in its `Run`; the transitions below are its only writers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StepRun {
    /// The step's index in the transaction.
    pub(crate) index: usize,
    /// The attempt in progress or last made, from 1.
    pub(crate) attempt: u32,
    /// An attempt of it ended in a way that may have taken effect.
    uncertain: bool,
    /// Its undo record is in the ledger.
    owed: bool,
    /// Its uncertain undo record was taken back after a clean failure.
    unowed: bool,
}

impl StepRun {
    /// A step that was given record `index` and has made no attempt.
    pub(crate) fn new(index: usize) -> Self {
        StepRun { index, ..StepRun::default() }
    }

    /// The next attempt begins: counted in the step's record. Returns its
    /// span.
    pub(crate) fn next_attempt<U, S: Storage>(&mut self, ledger: &mut Ledger<U, S>) -> crate::trace::Span {
        self.attempt = self.attempt.saturating_add(1);
        let record = ledger.step_mut(self.index);
        record.attempt_begins(self.attempt);
        tm_span!("step", name = record.name, index = self.index, attempt = self.attempt)
    }

    /// Before an attempt starts: the step's uncertain undo record, if it
    /// keeps one (`make`, given the step's key), goes into the ledger and
    /// stays there while the attempt is in flight — unless one is owed
    /// already. Returns whether it was just owed before the first attempt:
    /// its intent must then be durable before the attempt starts. A panic
    /// in `make` fails the step for good (its record says why).
    pub(crate) fn owe_uncertain<U, S: Storage, C: Clock>(
        &mut self,
        env: StepEnv<'_, U, S, C>,
        make: impl FnOnce(IdempotencyKey) -> Option<U>,
    ) -> Result<bool, PanicMessage> {
        if self.uncertain || self.owed {
            return Ok(false);
        }
        let key = env.ledger.step_key(self.index);
        match caught(|| make(key)) {
            Ok(Some(undo)) => {
                let (retry, timeout) = rollback_policy(env.config);
                // Cannot fail: room was checked before the step began.
                env.ledger.owe(UndoRecord { step: self.index, undo, retry, timeout });
                self.owed = true;
                Ok(self.attempt == 1)
            }
            Ok(None) => Ok(false),
            Err(panic) => {
                self.broke(env.ledger, env.clock, &panic);
                Err(panic)
            }
        }
    }

    /// Its intent could not be written: the journal took its record back
    /// (`Transaction::journal_step`), the attempt does not start.
    pub(crate) fn intent_refused(&mut self) {
        self.owed = false;
    }

    /// The attempt completed: the undo record `make` makes (given the
    /// step's key) is owed from now on, in place of its uncertain one. A
    /// panic in `make` fails the step for good (its uncertain record, if
    /// any, stays owed: the step took effect). Returns whether the step
    /// owes a record, which is then made durable before its output reaches
    /// the body.
    pub(crate) fn completed<U, S: Storage, C: Clock>(
        &mut self,
        env: StepEnv<'_, U, S, C>,
        make: impl FnOnce(IdempotencyKey) -> Option<U>,
        span: Option<&crate::trace::Span>,
    ) -> Result<bool, PanicMessage> {
        let key = env.ledger.step_key(self.index);
        match caught(|| make(key)) {
            Ok(Some(undo)) => {
                env.ledger.keep_completed(self.index, undo, self.owed, || rollback_policy(env.config));
                self.owed = true;
            }
            Ok(None) => {}
            Err(panic) => {
                outcome(span, "panic");
                self.broke(env.ledger, env.clock, &panic);
                return Err(panic);
            }
        }
        let now = env.ledger.stamp(env.clock);
        env.ledger.step_completed(self.index, self.attempt, now);
        outcome(span, "ok");
        Ok(self.owed)
    }

    /// The attempt failed with `kind` (`ran`: it started; one stopped by
    /// its hook did not). An attempt that ended cleanly takes the step's
    /// uncertain undo record back; `ask` is the step's retry condition
    /// (`None` without one), asked only about an error that could be
    /// retried. Records the attempt; returns whether it was the last.
    pub(crate) fn failed<U, S: Storage, C: Clock, E: fmt::Display>(
        &mut self,
        env: StepEnv<'_, U, S, C>,
        kind: &StepErrorKind<E>,
        ran: bool,
        ask: impl FnOnce(&E) -> Option<Verdict>,
        span: Option<&crate::trace::Span>,
    ) -> bool {
        let may_retry = ran && !is_last_attempt(self.attempt, env.config.retry.max_retries());
        // A permanent error (its condition said so) is not retried.
        let verdict = match kind {
            StepErrorKind::Failed(error) if may_retry => ask(error),
            _ => None,
        };
        if ran {
            self.uncertain |= kind.is_uncertain();
            if !self.uncertain && self.owed {
                // A clean failure: nothing took effect, nothing owed.
                env.ledger.take_back(self.index);
                self.owed = false;
                self.unowed = true;
            }
        }
        outcome(span, outcome_of(kind));
        let not_retried = verdict.as_ref().filter(|verdict| !verdict.retries());
        let last = !may_retry || not_retried.is_some();
        // The time is kept only when the step fails for good: no clock
        // reading for an attempt that will be retried.
        let now = if last { env.ledger.stamp(env.clock) } else { crate::ledger::record::At::NONE };
        env.ledger.attempt_failed(self.index, self.attempt, &AttemptText { kind, not_retried }, last, now);
        if let Some(span) = span {
            tm_event!(
                warn,
                span,
                "attempt failed",
                error = env.ledger.summary.steps()[self.index].error().unwrap_or_default()
            );
        }
        last
    }

    /// The wait before the next attempt.
    pub(crate) fn backoff<U, S: Storage, C>(&self, env: StepEnv<'_, U, S, C>) -> Duration {
        let retry = &env.config.retry;
        if retry.never_waits() { Duration::ZERO } else { retry.jittered_delay(self.attempt - 1, &mut env.ledger.rng) }
    }

    /// The step was cancelled (another member of its group failed), with
    /// an attempt `in_flight` or not: it fails for good, uncertain if an
    /// attempt was in flight.
    pub(crate) fn cancelled<U, S: Storage, C: Clock>(&mut self, ledger: &mut Ledger<U, S>, clock: &C, in_flight: bool) {
        self.uncertain |= in_flight;
        let now = ledger.stamp(clock);
        ledger.step_mut(self.index).broke(&"cancelled: another member of its group failed", now);
        let (info, record) = (ledger.summary.info(), &ledger.summary.steps()[self.index]);
        tm_warn!(
            "{} `{}`: step `{}` cancelled: another member of its group failed",
            info.id,
            info.operation,
            record.name
        );
        if self.owed && !self.uncertain {
            ledger.take_back(self.index);
            self.owed = false;
            self.unowed = true;
        }
    }

    /// Failed for good: whether its uncertain rollback is no longer owed
    /// (its record was taken back after clean failures and nothing since
    /// made it owed again). The caller then releases it
    /// (`Transaction::release_rollback`).
    pub(crate) fn released(&self) -> bool {
        self.unowed && !self.owed && !self.uncertain
    }

    /// Fails the step for good on a panic outside its attempts (its undo
    /// record could not be made, or the clock panicked in the backoff).
    pub(crate) fn broke<U, S: Storage, C: Clock>(&self, ledger: &mut Ledger<U, S>, clock: &C, panic: &PanicMessage) {
        let now = ledger.stamp(clock);
        ledger.step_mut(self.index).broke(&Panicked(panic), now);
        let (info, record) = (ledger.summary.info(), &ledger.summary.steps()[self.index]);
        tm_error!("{} `{}`: step `{}` failed for good: {}", info.id, info.operation, record.name, panic);
    }
}

/// The retry policy and timeout of a step's rollback, kept with its undo
/// record.
fn rollback_policy(config: &StepConfig) -> (crate::timing::retry::RetryPolicy, crate::timing::future::Timeout) {
    (config.rollback_retry(), crate::timing::future::Timeout::new(config.rollback_timeout()))
}

/// Fills in the span's outcome, if there is one.
fn outcome(span: Option<&crate::trace::Span>, outcome: &'static str) {
    if let Some(span) = span {
        crate::trace::outcome(span, outcome);
    }
}

/// Whether attempt number `attempt` (from 1) is the last one a policy of
/// `max_retries` allows. Bounded even for `u32::MAX` retries: the attempt
/// counter cannot pass `u32::MAX`, so that attempt is the last.
pub(crate) fn is_last_attempt(attempt: u32, max_retries: u32) -> bool {
    attempt > max_retries || attempt == u32::MAX
}

/// The text a failed attempt leaves in its step's record: the error (and
/// why it is not retried, when its condition said so), the timeout, the
/// panic, or the journal's failure.
struct AttemptText<'a, E> {
    kind: &'a StepErrorKind<E>,
    /// The retry condition's verdict, when it said not to retry.
    not_retried: Option<&'a Verdict>,
}

impl<E: fmt::Display> fmt::Display for AttemptText<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            StepErrorKind::Failed(error) => match self.not_retried {
                Some(verdict) => crate::timing::condition::NotRetried(verdict, error).fmt(f),
                None => error.fmt(f),
            },
            StepErrorKind::TimedOut { timeout } => crate::timing::future::TimedOut(*timeout).fmt(f),
            StepErrorKind::Panicked(message) => Panicked(message).fmt(f),
            StepErrorKind::Journal(failure) => failure.fmt(f),
            _ => f.write_str("failed"),
        }
    }
}

/// A failed attempt's `outcome`, for its span.
fn outcome_of<E>(kind: &StepErrorKind<E>) -> &'static str {
    match kind {
        StepErrorKind::TimedOut { .. } => "timeout",
        StepErrorKind::Panicked(_) => "panic",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::is_last_attempt;

    #[test]
    fn attempts_are_bounded_even_for_u32_max_retries() {
        assert!(!is_last_attempt(1, 1));
        assert!(is_last_attempt(2, 1));
        assert!(is_last_attempt(1, 0));
        // The attempt counter saturates at u32::MAX: that attempt is the
        // last, so an always-failing step with u32::MAX retries stops.
        assert!(!is_last_attempt(u32::MAX - 1, u32::MAX));
        assert!(is_last_attempt(u32::MAX, u32::MAX));
    }
}
