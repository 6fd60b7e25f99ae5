//! A ready-made hook that counts what happens to each step, and how
//! transactions end and are recovered, in a fixed table: no allocator,
//! safe to share between tasks and threads.

use core::cell::RefCell;
use core::fmt;
use core::time::Duration;

use critical_section::Mutex;

use crate::{
    ledger::record::{StepStatus, TransactionInfo},
    ledger::summary::Summary,
    observe::hooks::{Hooks, StepEvent},
    util::{storage::Storage, text::Name},
};

/// Counters for the steps of one name.
///
/// ```
/// use transaction_manager::hooks::StepMetrics;
/// let m = StepMetrics::new("create_user".into());
/// assert_eq!(m.executes, 0);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StepMetrics {
    /// The step name (`(other)` for the overflow row).
    pub name: Name,
    /// Execute attempts started.
    pub executes: u64,
    /// Steps that completed.
    pub successes: u64,
    /// Execute attempts that failed or timed out.
    pub failures: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Steps that failed for good.
    pub failed_steps: u64,
    /// Steps rolled back (rollbacks that succeeded).
    pub rollbacks: u64,
    /// Rollback attempts that failed or timed out.
    pub rollback_failures: u64,
    /// Total time of finished steps, first attempt to last (backoff included).
    pub total_duration: Duration,
    /// The longest finished step.
    pub max_duration: Duration,
}

impl StepMetrics {
    /// Zeroed counters for `name`.
    pub fn new(name: Name) -> Self {
        Self {
            name,
            executes: 0,
            successes: 0,
            failures: 0,
            retries: 0,
            failed_steps: 0,
            rollbacks: 0,
            rollback_failures: 0,
            total_duration: Duration::ZERO,
            max_duration: Duration::ZERO,
        }
    }

    fn finished(&mut self, duration: Option<Duration>) {
        let duration = duration.unwrap_or_default();
        self.total_duration = self.total_duration.saturating_add(duration);
        self.max_duration = self.max_duration.max(duration);
    }
}

/// How transactions ended and what recovery found, counted by [`Metrics`].
///
/// For an operator: `partially_rolled_back` counts transactions that owe a
/// rollback that failed for good (with a journal they stay owed, and
/// recovery tries again), `stuck` the times recovery could not roll one
/// back. How many are owed or stuck *now* is the journal's to say
/// (`TransactionManager::owed` / `stuck`, or `tmctl list --state owed`).
///
/// ```
/// use transaction_manager::hooks::TransactionMetrics;
/// assert_eq!(TransactionMetrics::default().committed, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransactionMetrics {
    /// Transactions that committed.
    pub committed: u64,
    /// Transactions that ended rolled back, every rollback done (recovered
    /// ones included).
    pub rolled_back: u64,
    /// Transactions that ended with a rollback that failed for good or was
    /// skipped (recovered ones included): what they owe is left behind
    /// (owed in the journal, if there is one).
    pub partially_rolled_back: u64,
    /// Unfinished transactions recovery took up (after a crash, a power
    /// cut, a dropped future, or an owed rollback tried again).
    pub recovered: u64,
    /// Times recovery found a transaction it cannot roll back (stuck).
    pub stuck: u64,
}

/// A counter family for the Prometheus export: name, help, value.
type Counter = (&'static str, &'static str, fn(&StepMetrics) -> u64);

struct Table<const N: usize> {
    rows: heapless::Vec<StepMetrics, N>,
    other: StepMetrics,
    transactions: TransactionMetrics,
}

/// A [`Hooks`] implementation that counts executes, successes, failures,
/// retries, rollbacks, rollback failures and durations per step name, and
/// how transactions ended and were recovered ([`TransactionMetrics`]).
///
/// The first `N` distinct step names get a row each; steps with further
/// names are counted together in a row named `(other)`. The table is inline
/// (no allocator) and guarded by a `critical_section::Mutex`, so one
/// `Metrics` can serve many transactions at once, from any task or thread.
/// The final binary provides the critical-section implementation (the
/// `std` feature enables it for hosts; on Cortex-M, `cortex-m`'s
/// `critical-section-single-core`). Needs the `metrics` feature.
///
/// Combine it with your own hooks in a tuple: `.with_hooks((Metrics::<16>::new(), MyHooks))`.
///
/// ```
/// # use transaction_manager::*;
/// # use transaction_manager::hooks::Metrics;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock).with_hooks(Metrics::<8>::new());
/// let _ = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
///     tx.step("ping").retry(RetryPolicy::new().with_max_retries(1)).run(|| async { Ok::<_, &str>(()) }).await
/// }));
/// let rows = manager.hooks().snapshot();
/// assert_eq!((rows[0].name.as_str(), rows[0].executes, rows[0].successes), ("ping", 1, 1));
/// let mut text = String::new();
/// manager.hooks().write_prometheus(&mut text).unwrap();
/// assert!(text.contains("transaction_step_executes_total{step=\"ping\"} 1"));
/// ```
pub struct Metrics<const N: usize> {
    table: Mutex<RefCell<Table<N>>>,
}

impl<const N: usize> Metrics<N> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            table: Mutex::new(RefCell::new(Table {
                rows: heapless::Vec::new(),
                other: StepMetrics::new(Name::from("(other)")),
                transactions: TransactionMetrics::default(),
            })),
        }
    }

    fn update(&self, name: &Name, f: impl FnOnce(&mut StepMetrics)) {
        critical_section::with(|cs| {
            let mut table = self.table.borrow_ref_mut(cs);
            let table = &mut *table;
            let row = match table.rows.iter().position(|row| row.name == *name) {
                Some(i) => &mut table.rows[i],
                None => {
                    if table.rows.push(StepMetrics::new(name.clone())).is_ok() {
                        let last = table.rows.len() - 1;
                        &mut table.rows[last]
                    } else {
                        &mut table.other
                    }
                }
            };
            f(row);
        });
    }

    /// A copy of the rows, in the order the names were first seen.
    pub fn snapshot(&self) -> heapless::Vec<StepMetrics, N> {
        critical_section::with(|cs| self.table.borrow_ref(cs).rows.clone())
    }

    /// The counters of steps whose name found no free row.
    pub fn overflow(&self) -> StepMetrics {
        critical_section::with(|cs| self.table.borrow_ref(cs).other.clone())
    }

    /// How transactions ended and what recovery found.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # use transaction_manager::hooks::Metrics;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_hooks(Metrics::<8>::new());
    /// let _ = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
    ///     tx.step("ping").run(|| async { Ok::<_, &str>(()) }).await
    /// }));
    /// assert_eq!(manager.hooks().transactions().committed, 1);
    /// ```
    pub fn transactions(&self) -> TransactionMetrics {
        critical_section::with(|cs| self.table.borrow_ref(cs).transactions)
    }

    fn count(&self, f: impl FnOnce(&mut TransactionMetrics)) {
        critical_section::with(|cs| f(&mut self.table.borrow_ref_mut(cs).transactions));
    }

    /// Writes the counters in the Prometheus text exposition format, one
    /// family per counter, labelled by step name, then the transactions'
    /// (`transactions_total{outcome=…}`, `transaction_recoveries_total`,
    /// `transaction_stuck_total`). Writes into any `fmt::Write` (a
    /// `String`, a `heapless::String`, a UART writer).
    pub fn write_prometheus(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let rows = self.snapshot();
        let other = self.overflow();
        let all = || rows.iter().chain((other.executes > 0).then_some(&other));
        let counters: [Counter; 7] = [
            ("executes", "Execute attempts started", |m| m.executes),
            ("successes", "Steps completed", |m| m.successes),
            ("failures", "Execute attempts failed or timed out", |m| m.failures),
            ("retries", "Failed attempts retried", |m| m.retries),
            ("failed_steps", "Steps failed for good", |m| m.failed_steps),
            ("rollbacks", "Steps rolled back", |m| m.rollbacks),
            ("rollback_failures", "Rollback attempts failed or timed out", |m| m.rollback_failures),
        ];
        for (name, help, value) in counters {
            writeln!(out, "# HELP transaction_step_{name}_total {help}.")?;
            writeln!(out, "# TYPE transaction_step_{name}_total counter")?;
            for m in all() {
                writeln!(out, "transaction_step_{name}_total{{step=\"{}\"}} {}", m.name, value(m))?;
            }
        }
        writeln!(out, "# HELP transaction_step_duration_seconds_total Time of finished steps.")?;
        writeln!(out, "# TYPE transaction_step_duration_seconds_total counter")?;
        for m in all() {
            let d = m.total_duration;
            writeln!(
                out,
                "transaction_step_duration_seconds_total{{step=\"{}\"}} {}.{:06}",
                m.name,
                d.as_secs(),
                d.subsec_micros()
            )?;
        }
        let t = self.transactions();
        writeln!(out, "# HELP transactions_total Transactions that ended, by outcome.")?;
        writeln!(out, "# TYPE transactions_total counter")?;
        for (outcome, n) in [
            ("committed", t.committed),
            ("rolled_back", t.rolled_back),
            ("partially_rolled_back", t.partially_rolled_back),
        ] {
            writeln!(out, "transactions_total{{outcome=\"{outcome}\"}} {n}")?;
        }
        writeln!(out, "# HELP transaction_recoveries_total Unfinished transactions recovery took up.")?;
        writeln!(out, "# TYPE transaction_recoveries_total counter")?;
        writeln!(out, "transaction_recoveries_total {}", t.recovered)?;
        writeln!(out, "# HELP transaction_stuck_total Times recovery found a transaction it cannot roll back.")?;
        writeln!(out, "# TYPE transaction_stuck_total counter")?;
        writeln!(out, "transaction_stuck_total {}", t.stuck)?;
        Ok(())
    }
}

impl<const N: usize> Default for Metrics<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Debug for Metrics<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").field("rows", &self.snapshot()).field("other", &self.overflow()).finish()
    }
}

impl<const N: usize> Hooks for Metrics<N> {
    async fn on_step_execute(&self, event: &StepEvent<'_>) {
        self.update(event.step.name(), |m| m.executes += 1);
    }

    async fn on_step_success(&self, event: &StepEvent<'_>) {
        self.update(event.step.name(), |m| {
            m.successes += 1;
            m.finished(event.step.duration());
        });
    }

    async fn on_step_failure(&self, event: &StepEvent<'_>) {
        self.update(event.step.name(), |m| {
            m.failures += 1;
            if event.step.status() == StepStatus::Failed {
                m.failed_steps += 1;
                m.finished(event.step.duration());
            } else {
                m.retries += 1;
            }
        });
    }

    async fn on_step_rollback(&self, event: &StepEvent<'_>) {
        self.update(event.step.name(), |m| m.rollbacks += 1);
    }

    async fn on_step_rollback_failure(&self, event: &StepEvent<'_>) {
        self.update(event.step.name(), |m| m.rollback_failures += 1);
    }

    async fn on_transaction_complete<S: Storage>(&self, _: &TransactionInfo, success: bool, summary: &Summary<S>) {
        let partial = summary.rollback_errors() > 0 || summary.rollback_skipped_steps() > 0;
        self.count(|t| match (success, partial) {
            (true, _) => t.committed += 1,
            (false, false) => t.rolled_back += 1,
            (false, true) => t.partially_rolled_back += 1,
        });
    }

    async fn on_transaction_recovered(&self, _: &TransactionInfo, _: usize) {
        self.count(|t| t.recovered += 1);
    }

    async fn on_transaction_stuck(&self, _: &TransactionInfo, _: &str) {
        self.count(|t| t.stuck += 1);
    }
}
