//! [smol](https://docs.rs/smol) adapter of
//! [transaction-manager](https://crates.io/crates/transaction-manager): a
//! [`Clock`] on `async-io` timers and a [`Spawner`] on `async-executor`
//! or smol's global executor.
//!
//! `async-io` timers work under any executor: `smol::block_on`, an
//! `async_executor::Executor` on one or many threads, or
//! `futures_lite::future::block_on` (async-io then drives its reactor from
//! a thread of its own).
//!
//! ```
//! use transaction_manager::{SmolClock, StepError, TransactionManager};
//!
//! let manager = TransactionManager::new(SmolClock::new());
//! let done = async_io::block_on(manager.run("hello", async |tx| {
//!     tx.step("greet").run(|| async { Ok::<_, std::io::Error>("hi") }).await
//! })).unwrap();
//! assert_eq!(done.into_value(), "hi");
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::Executor;
use async_io::Timer;
pub use transaction_manager_core::backend::{Clock, Spawner};

/// A [`Clock`] on `async-io`: `sleep` is an `async_io::Timer`, `now` the
/// time since the clock was created, by `std::time::Instant`.
///
/// ```
/// use std::time::Duration;
/// use transaction_manager::{Clock, SmolClock};
///
/// let clock = SmolClock::new();
/// async_io::block_on(clock.sleep(Duration::from_millis(1)));
/// assert!(clock.now() >= Duration::from_millis(1));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct SmolClock {
    epoch: Instant,
}

impl SmolClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self::with_epoch(Instant::now())
    }

    /// A clock whose epoch is `epoch`.
    ///
    /// ```
    /// # use transaction_manager::SmolClock;
    /// let epoch = std::time::Instant::now();
    /// assert_eq!(SmolClock::with_epoch(epoch).into_inner(), epoch);
    /// ```
    pub fn with_epoch(epoch: Instant) -> Self {
        Self { epoch }
    }

    /// The instant `now()` counts from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// The epoch, by value.
    pub fn into_inner(self) -> Instant {
        self.epoch
    }
}

impl Default for SmolClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SmolClock {
    type Sleep = SmolSleep;

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// An `async_io::Timer`; one too far in the future to represent never
    /// fires (`Timer::never`) instead of overflowing.
    fn sleep(&self, duration: Duration) -> SmolSleep {
        SmolSleep(Timer::after(duration))
    }
}

/// The future of [`SmolClock`]'s `sleep`.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct SmolSleep(Timer);

impl Future for SmolSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// A [`Spawner`] on an `async_executor::Executor` (`smol::Executor`) of
/// the program's own, or on smol's global executor (`smol::spawn`):
/// spawned futures are detached and run by whatever threads run that
/// executor.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use transaction_manager::{abandon::SmolSpawner, backend::Spawner};
///
/// let executor = Arc::new(async_executor::Executor::new());
/// let spawner = SmolSpawner::new(executor.clone());
/// let ran = Arc::new(AtomicBool::new(false));
/// let flag = ran.clone();
/// spawner.spawn(async move { flag.store(true, Ordering::SeqCst) });
/// while executor.try_tick() {}
/// assert!(ran.load(Ordering::SeqCst));
/// ```
#[derive(Clone, Debug)]
pub struct SmolSpawner {
    /// `None`: smol's global executor.
    executor: Option<Arc<Executor<'static>>>,
}

impl SmolSpawner {
    /// A spawner onto `executor`.
    pub fn new(executor: Arc<Executor<'static>>) -> Self {
        Self { executor: Some(executor) }
    }

    /// A spawner onto smol's global executor, as `smol::spawn` (its
    /// threads start with the first future spawned; `SMOL_THREADS` sets
    /// how many): for a program that runs no executor of its own.
    ///
    /// ```
    /// use transaction_manager::{SmolClock, TransactionManager, abandon::SmolSpawner};
    ///
    /// // A dropped transaction's rollbacks run on smol's global executor.
    /// let manager = TransactionManager::new(SmolClock::new()).with_spawner(SmolSpawner::global());
    /// # let _ = manager;
    /// ```
    pub fn global() -> Self {
        Self { executor: None }
    }

    /// The executor, or `None` for smol's global executor.
    ///
    /// ```
    /// # use transaction_manager::abandon::SmolSpawner;
    /// assert!(SmolSpawner::global().inner().is_none());
    /// ```
    pub fn inner(&self) -> Option<&Arc<Executor<'static>>> {
        self.executor.as_ref()
    }

    /// The executor, by value, or `None` for smol's global executor.
    pub fn into_inner(self) -> Option<Arc<Executor<'static>>> {
        self.executor
    }
}

impl Spawner for SmolSpawner {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match &self.executor {
            Some(executor) => executor.spawn(future).detach(),
            None => smol::spawn(future).detach(),
        }
    }
}
