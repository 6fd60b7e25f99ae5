//! The one thing the engine needs from a runtime: time.

use core::future::Future;
use core::time::Duration;

/// A source of time for a transaction: what time it is, and a way to wait.
///
/// The engine never sleeps or reads a system clock on its own: timeouts race
/// an attempt against [`Clock::sleep`], backoff awaits it, and every time in a
/// [`Summary`](crate::Summary) comes from [`Clock::now`]. An adapter crate
/// binds this trait to a runtime (tokio, smol, embassy); [`ManualClock`]
/// gives tests virtual time.
///
/// # Contract
///
/// An implementation MUST:
///
/// - be monotonic: `now()` never goes backwards;
/// - never fail or panic, for any `Duration` (including `Duration::ZERO` and
///   `Duration::MAX`): a sleep longer than the clock can represent waits
///   "forever" rather than overflowing;
/// - complete a `sleep(d)` future no earlier than `d` after it was created,
///   as seen by `now()`.
///
/// `now()` is a time since an epoch the clock chooses (its creation, boot);
/// only differences between two readings of one clock are meaningful.
///
/// [`ManualClock`]: crate::ManualClock
///
/// # Example
///
/// A clock whose time never moves and whose sleeps end at once (useful to
/// show the shape; real clocks come from adapters):
///
/// ```
/// use core::time::Duration;
/// use transaction_manager::Clock;
///
/// struct Frozen;
///
/// impl Clock for Frozen {
///     type Sleep = core::future::Ready<()>;
///     fn now(&self) -> Duration { Duration::ZERO }
///     fn sleep(&self, _: Duration) -> Self::Sleep { core::future::ready(()) }
/// }
/// assert_eq!(Frozen.now(), Duration::ZERO);
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Clock`",
    label = "the manager's clock",
    note = "pass `TokioClock::new()`, `SmolClock::new()`, `EmbassyClock`, or a reference to a `ManualClock` \
            (`TransactionManager::new(&clock)`)"
)]
pub trait Clock {
    /// The future returned by [`Clock::sleep`]. Not boxed: the engine stores
    /// it inline in the transaction's future.
    type Sleep: Future<Output = ()>;

    /// The current time, as a duration since this clock's epoch.
    fn now(&self) -> Duration;

    /// A future that completes once `duration` has passed.
    fn sleep(&self, duration: Duration) -> Self::Sleep;
}

impl<C: Clock + ?Sized> Clock for &C {
    type Sleep = C::Sleep;

    fn now(&self) -> Duration {
        (**self).now()
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        (**self).sleep(duration)
    }
}
