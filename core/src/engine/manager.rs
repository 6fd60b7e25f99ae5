//! The manager's state: clock, hooks, abandon policy, journal and the
//! default step policy. Its builder methods are the API's
//! (`api/manager.rs`); the engine reads it.

use core::sync::atomic::AtomicUsize;
use core::time::Duration;

use crate::engine::binding::NoJournal;
use crate::{engine::abandon::Unattended, ledger::book::RollbackFailurePolicy, timing::retry::RetryPolicy};

/// Starts transactions: owns the [`Clock`](crate::Clock), the [`Hooks`](crate::hooks::Hooks) and the default
/// step policy shared by every transaction it runs.
///
/// One manager can run any number of transactions, one after another or at
/// the same time (it is `Sync` when its clock and hooks are); each gets a
/// fresh [`TransactionId`](crate::TransactionId).
///
/// ```
/// use core::time::Duration;
/// use transaction_manager::*;
///
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock)
///     .with_retry(RetryPolicy::new().with_max_retries(2))
///     .with_timeout(Duration::from_secs(5));
///
/// let done = clock.block_on(manager.transaction("provision").fixed::<NoRollback, 4>().run(async |tx| {
///     let user = tx.step("create_user").run(|| async { Ok::<_, &str>(42) }).await?;
///     Ok::<_, StepError<&str>>(user)
/// }));
/// assert_eq!(done.unwrap().into_value(), 42);
/// ```
#[derive(Debug)]
pub struct TransactionManager<C, H = (), A = Unattended, J = NoJournal> {
    pub(crate) clock: C,
    pub(crate) hooks: H,
    pub(crate) abandon: A,
    pub(crate) journal: J,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_rollback_failure: RollbackFailurePolicy,
    pub(crate) step_times: bool,
    pub(crate) jitter_seed: u64,
    pub(crate) next_id: AtomicUsize,
    pub(crate) origin: Origin,
}

/// The origin of the keys of a manager without a journal: the one given
/// ([`TransactionManager::with_origin`], 0 = none), or with `std` one
/// drawn at random the first time it is needed.
#[derive(Debug)]
pub(crate) struct Origin {
    given: u64,
    #[cfg(feature = "std")]
    drawn: std::sync::OnceLock<u64>,
}

impl Origin {
    pub(crate) const fn new(given: u64) -> Self {
        Self {
            given,
            #[cfg(feature = "std")]
            drawn: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn get(&self) -> u64 {
        #[cfg(feature = "std")]
        if self.given == 0 {
            return *self.drawn.get_or_init(crate::durable::id::random_origin);
        }
        self.given
    }
}
