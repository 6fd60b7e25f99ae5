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
///   as seen by `now()` — except that a clock MAY end a sleep longer than
///   its timer can hold at the longest time it can (tokio ends a
///   `Duration::MAX` sleep after about 30 years). A wake-up is not proof:
///   the engine reads `now()` when a timeout's or deadline's sleep ends and
///   sleeps again for what is left. (A backoff's sleep is taken as it
///   ends: a retry at worst starts early.)
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

/// `(n / d, n % d)` for a divisor `d` below 2^24, with 32-bit divisions
/// only on targets without 64-bit registers: eight steps of one byte each.
/// A 32-bit Cortex-M divides 32-bit numbers in hardware, while a `u64`
/// division links a software routine of about 540 bytes. On 64-bit targets
/// it is the plain division.
///
/// For runtime adapters that convert a timer's ticks to a `Duration`
/// (the embassy adapter does): any tick rate below 2^24 per second divides
/// without the 64-bit routine. Panics in debug builds if `d` is 0 or not
/// below 2^24.
///
/// ```
/// use transaction_manager_core::backend::div_rem_narrow;
/// assert_eq!(div_rem_narrow(10_000_000_007, 1000), (10_000_000, 7));
/// assert_eq!(div_rem_narrow(u64::MAX, 1_953_125), (u64::MAX / 1_953_125, (u64::MAX % 1_953_125) as u32));
/// ```
#[inline]
pub const fn div_rem_narrow(n: u64, d: u32) -> (u64, u32) {
    debug_assert!(d != 0 && d < 1 << 24, "divisor out of range");
    #[cfg(target_pointer_width = "64")]
    {
        (n / d as u64, (n % d as u64) as u32)
    }
    #[cfg(not(target_pointer_width = "64"))]
    {
        let (quotient, remainder) = div_rem_by_bytes(n, d);
        // Always true; tells the caller's code that the remainder is below
        // `d` (`Duration::new` then needs no carry into the seconds).
        (quotient, if remainder < d { remainder } else { 0 })
    }
}

/// Long division by bytes: the remainder stays below `d < 2^24`, so
/// `remainder << 8 | byte` fits in 32 bits, and each quotient digit in 8.
/// (Used on targets without 64-bit registers; tested on every target.)
#[cfg_attr(target_pointer_width = "64", allow(dead_code))]
#[inline(never)]
const fn div_rem_by_bytes(n: u64, d: u32) -> (u64, u32) {
    let (mut quotient, mut remainder) = (0u64, 0u32);
    let mut shift = 64;
    while shift > 0 {
        shift -= 8;
        let part = (remainder << 8) | ((n >> shift) as u32 & 0xff);
        quotient = (quotient << 8) | (part / d) as u64;
        remainder = part % d;
    }
    (quotient, remainder)
}

/// `Duration::from_nanos` without a `u64` division on 32-bit targets
/// (see [`div_rem_narrow`]): 10^9 = 2^9 · 1,953,125.
#[inline]
pub(crate) const fn duration_from_nanos(nanos: u64) -> Duration {
    let (secs, rest) = div_rem_narrow(nanos >> 9, 1_953_125);
    Duration::new(secs, (rest << 9) | (nanos & 511) as u32)
}

/// The clock's time; a `now()` that panics (against the [`Clock`]
/// contract) reads as zero instead of unwinding through the engine's
/// bookkeeping, where it could stop a rollback.
pub(crate) fn now<C: Clock + ?Sized>(clock: &C) -> core::time::Duration {
    crate::util::text::caught(|| clock.now()).unwrap_or_else(|panic| {
        tm_error!("the clock's now() panicked: {}", panic);
        core::time::Duration::ZERO
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Edge cases, then random numbers of every size.
    fn numbers(seed: u64) -> impl Iterator<Item = u64> {
        let edges = [0, 1, 511, 512, 999_999_999, 1_000_000_000, u64::from(u32::MAX), 1 << 32, u64::MAX - 1, u64::MAX];
        let mut rng = crate::timing::retry::SplitMix64::new(seed);
        edges.into_iter().chain((0..4000).map(move |_| {
            let bits = rng.next_u64();
            bits >> (rng.next_u64() % 64)
        }))
    }

    #[test]
    fn narrow_division_matches_u64_division() {
        for d in [1, 2, 3, 7, 1000, 32_768, 1_000_000, 1_953_125, (1 << 24) - 1] {
            for n in numbers(u64::from(d)) {
                let want = (n / u64::from(d), (n % u64::from(d)) as u32);
                assert_eq!(div_rem_by_bytes(n, d), want, "{n} / {d}");
                assert_eq!(div_rem_narrow(n, d), want, "{n} / {d}");
            }
        }
    }

    #[test]
    fn durations_from_nanos_match_the_standard_library() {
        for n in numbers(11) {
            assert_eq!(duration_from_nanos(n), Duration::from_nanos(n), "{n}");
        }
    }
}
