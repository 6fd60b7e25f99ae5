//! Running a future in the background, detached from its caller.

use core::future::Future;

/// Starts futures that run to completion on their own, with nobody awaiting
/// them — what a runtime's `spawn` does.
///
/// The engine needs this for work that must finish even when the caller
/// stops waiting: a transaction whose future is dropped mid-way still owes
/// the rollback of its completed steps. Adapters implement it for runtimes
/// that can spawn (`TokioSpawner`, `SmolSpawner`).
///
/// # Contract
///
/// An implementation MUST run every spawned future to completion (unless
/// the runtime itself shuts down), and MUST NOT run it on the caller's
/// stack before `spawn` returns.
///
/// # Embassy and other `no_std` executors
///
/// embassy spawns only `#[embassy_executor::task]` functions, whose futures
/// live in static memory fixed at compile time, so it cannot take an
/// arbitrary future here. Its counterpart is a task written once by the
/// firmware that receives the *data* of the pending rollbacks (undo records
/// are plain data, see [`Rollback`](crate::Rollback)) over a static channel
/// and runs them.
///
/// ```
/// use core::future::Future;
/// use transaction_manager::backend::Spawner;
///
/// /// Runs each future on a new OS thread (a sketch, not a runtime).
/// struct ThreadSpawner;
///
/// impl Spawner for ThreadSpawner {
///     fn spawn<F>(&self, future: F)
///     where
///         F: Future<Output = ()> + Send + 'static,
///     {
///         std::thread::spawn(move || {
///             transaction_manager::ManualClock::new().block_on(future)
///         });
///     }
/// }
/// ThreadSpawner.spawn(async {});
/// ```
pub trait Spawner {
    /// Starts `future` in the background.
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;
}

impl<S: Spawner + ?Sized> Spawner for &S {
    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        (**self).spawn(future)
    }
}
