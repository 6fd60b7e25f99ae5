//! A ready-made hook that counts what happens to each step, in a fixed
//! table: no allocator, safe to share between tasks and threads.

use core::cell::RefCell;
use core::fmt;
use core::time::Duration;

use critical_section::Mutex;

use crate::{
    ledger::record::StepStatus,
    observe::hooks::{Hooks, StepEvent},
    util::text::Name,
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

/// A counter family for the Prometheus export: name, help, value.
type Counter = (&'static str, &'static str, fn(&StepMetrics) -> u64);

struct Table<const N: usize> {
    rows: heapless::Vec<StepMetrics, N>,
    other: StepMetrics,
}

/// A [`Hooks`] implementation that counts executes, successes, failures,
/// retries, rollbacks, rollback failures and durations per step name.
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

    /// Writes the counters in the Prometheus text exposition format, one
    /// family per counter, labelled by step name. Writes into any
    /// `fmt::Write` (a `String`, a `heapless::String`, a UART writer).
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
}
