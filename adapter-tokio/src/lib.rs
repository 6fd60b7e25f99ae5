//! [tokio] adapter of [transaction-manager](https://crates.io/crates/transaction-manager):
//! a [`Clock`] on `tokio::time` and a [`Spawner`] on the tokio runtime.
//!
//! Everything else — steps, retries, timeouts, rollback, hooks — lives in
//! `transaction-manager-core`; this crate only tells it the time.
//!
//! ```
//! use transaction_manager::{StepError, TokioClock, TransactionManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let manager = TransactionManager::new(TokioClock::new());
//! let done = manager.run("hello", async |tx| {
//!     tx.step("greet").run(|| async { Ok::<_, std::io::Error>("hi") }).await
//! }).await.unwrap();
//! assert_eq!(done.into_value(), "hi");
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::time::Duration;

use core::future::Future;

use tokio::runtime::Handle;
use tokio::time::Instant;
pub use transaction_manager_core::backend::{Clock, Spawner};

/// A [`Clock`] on tokio's timer: `sleep` is `tokio::time::sleep`, and `now`
/// is the time since the clock was created, by `tokio::time::Instant` — so
/// it follows tokio's paused time in tests (`#[tokio::test(start_paused =
/// true)]`).
///
/// Sleeping needs a tokio runtime with the time driver enabled; creating the
/// clock does not.
///
/// ```
/// use transaction_manager::{Clock, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let clock = TokioClock::new();
/// clock.sleep(std::time::Duration::from_secs(2)).await;
/// assert_eq!(clock.now(), std::time::Duration::from_secs(2));
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    epoch: Instant,
}

impl TokioClock {
    /// A clock whose epoch is now.
    pub fn new() -> Self {
        Self { epoch: Instant::now() }
    }

    /// A clock whose epoch is `epoch`.
    ///
    /// ```
    /// # use transaction_manager::TokioClock;
    /// let clock = TokioClock::with_epoch(tokio::time::Instant::now());
    /// assert_eq!(clock.into_inner(), clock.epoch());
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

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Sleep = tokio::time::Sleep;

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// `tokio::time::sleep`, which waits "forever" (about 30 years) for
    /// durations too large to add to the current instant.
    fn sleep(&self, duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }
}

/// A [`Spawner`] on a tokio runtime: spawned futures are detached tasks.
///
/// ```
/// use transaction_manager::{abandon::TokioSpawner, backend::Spawner};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let (tx, rx) = tokio::sync::oneshot::channel();
/// TokioSpawner::current().spawn(async move { tx.send(42).unwrap() });
/// assert_eq!(rx.await.unwrap(), 42);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TokioSpawner {
    handle: Handle,
}

impl TokioSpawner {
    /// A spawner onto the runtime this is called from.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::runtime::Handle::current` does.
    pub fn current() -> Self {
        Self::new(Handle::current())
    }

    /// A spawner onto the runtime of `handle`.
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }

    /// The runtime handle.
    pub fn inner(&self) -> &Handle {
        &self.handle
    }

    /// The runtime handle, by value.
    pub fn into_inner(self) -> Handle {
        self.handle
    }
}

impl Spawner for TokioSpawner {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(future));
    }
}
