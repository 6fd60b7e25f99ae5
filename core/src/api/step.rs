//! Building a step: its options, its execute function, its rollback.

use core::time::Duration;

use crate::engine::transaction::Transaction;
use crate::timing::retry::RetryPolicy;
use crate::util::storage::Storage;

/// A step being configured. Made by [`Transaction::step`].
///
/// Options default to the manager's ([`TransactionManager::with_retry`](crate::TransactionManager::with_retry),
/// [`TransactionManager::with_timeout`](crate::TransactionManager::with_timeout)); the rollback's default to the
/// step's own (as in the Python `async-transaction-manager` 0.1.2, whose
/// behaviour this library keeps).
///
/// Durations: a zero timeout lets an attempt be polled once, and times it
/// out if that did not finish it; `Duration::MAX` waits as long as the
/// clock can. Names need not be unique (steps are told apart by index); an
/// empty name is refused with [`StepErrorKind::EmptyName`](crate::StepErrorKind::EmptyName).
///
/// ```
/// # use core::time::Duration;
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let mut calls = 0;
/// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
///     tx.step("flaky")
///         .timeout(Duration::from_secs(1))
///         .retry(RetryPolicy::new().with_max_retries(2))
///         .run(|| {
///             // Count in the closure; the future gets a copy.
///             calls += 1;
///             let n = calls;
///             async move { if n < 3 { Err("busy") } else { Ok(n) } }
///         })
///         .await
/// }));
/// assert_eq!(done.unwrap().into_value(), 3);
/// // Two retries: 500 ms, then 1 s of virtual time.
/// assert_eq!(clock.now(), Duration::from_millis(1500));
/// ```
#[must_use = "a step does nothing until it is run"]
pub struct Step<'s, 't, M, Ctx: ?Sized, U, S: Storage> {
    /// Holds the step's settings ([`StepConfig`]) until it runs.
    pub(crate) tx: &'s mut Transaction<'t, M, Ctx, U, S>,
    pub(crate) name: crate::util::text::Name,
}

impl<'s, 't, M, Ctx: ?Sized, U, S: Storage> Step<'s, 't, M, Ctx, U, S> {
    /// Gives each execute attempt at most `timeout`; an attempt that takes
    /// longer is abandoned (its future dropped) and counts as failed.
    ///
    /// Takes any duration that converts into `core::time::Duration`, such as
    /// `embassy_time::Duration`.
    pub fn timeout(self, timeout: impl Into<Duration>) -> Self {
        self.tx.config.timeout = Some(timeout.into());
        self
    }

    /// Lets attempts take as long as they take, even if the manager sets a
    /// default timeout.
    pub fn no_timeout(self) -> Self {
        self.tx.config.timeout = None;
        self
    }

    /// Retries and backoff of execute (and, unless set separately, of the
    /// rollback).
    pub fn retry(self, policy: RetryPolicy) -> Self {
        self.tx.config.retry = policy;
        self
    }

    /// Shorthand for changing only the number of retries of the step's
    /// policy.
    pub fn max_retries(self, retries: u32) -> Self {
        self.tx.config.retry = self.tx.config.retry.with_max_retries(retries);
        self
    }

    /// Shorthand for changing only the delay before the step's first retry
    /// ([`RetryPolicy::with_initial_interval`]); later delays still grow by
    /// the policy's multiplier. Applies to the rollback too, unless it has
    /// its own policy.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let mut calls = 0;
    /// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
    ///     tx.step("flaky")
    ///         .max_retries(2)
    ///         .retry_interval(Duration::from_millis(100))
    ///         .run(|| {
    ///             calls += 1;
    ///             let n = calls;
    ///             async move { if n < 3 { Err("busy") } else { Ok(n) } }
    ///         })
    ///         .await
    /// }));
    /// assert_eq!(done.unwrap().into_value(), 3);
    /// assert_eq!(clock.now(), Duration::from_millis(300)); // 100 ms, then 200 ms
    /// ```
    pub fn retry_interval(self, interval: impl Into<Duration>) -> Self {
        self.tx.config.retry = self.tx.config.retry.with_initial_interval(interval.into());
        self
    }

    /// The rollback's per-attempt timeout (`None`: no timeout), instead of
    /// the step's.
    pub fn rollback_timeout(self, timeout: Option<Duration>) -> Self {
        self.tx.config.rollback_timeout = Some(timeout);
        self
    }

    /// The rollback's retries and backoff, instead of the step's.
    pub fn rollback_retry(self, policy: RetryPolicy) -> Self {
        self.tx.config.rollback_retry = Some(policy);
        self
    }
}
