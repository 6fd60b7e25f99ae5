//! How often to try again, and how long to wait in between.

use core::time::Duration;

/// Retries and exponential backoff for a step's execute or rollback.
///
/// An operation is attempted once, then retried up to `max_retries` times.
/// The delay before retry `n` (`n = 0, 1, 2, …`) is
/// `initial_interval * multiplier^n`, capped at `max_interval` if one is set,
/// then spread by [`Jitter`]. The defaults are those of the Python package
/// `async-transaction-manager` (0.1.2) this library ports: no retries, a
/// 500 ms initial interval, multiplier 2, no cap, no jitter.
///
/// The builders that set a duration come in two forms: `const`
/// ones that take a [`core::time::Duration`]
/// ([`with_initial_interval`](Self::with_initial_interval),
/// [`with_max_interval`](Self::with_max_interval)), for a policy kept in a
/// `const` or `static`, and ones that take anything `Into<Duration>`, such
/// as `embassy_time::Duration`
/// ([`with_initial_interval_from`](Self::with_initial_interval_from),
/// [`with_max_interval_from`](Self::with_max_interval_from)), which cannot
/// be `const` (a trait conversion cannot run in a `const fn`).
///
/// All arithmetic is integer and saturating: a policy with `u32::MAX` retries
/// or a `Duration::MAX` interval never overflows or panics; the delay just
/// stops growing at [`RetryPolicy::MAX_DELAY`] (584 years) or the cap.
///
/// ```
/// use core::time::Duration;
/// use transaction_manager::RetryPolicy;
///
/// let policy = RetryPolicy::new().with_max_retries(3);
/// assert_eq!(policy.delay(0), Duration::from_millis(500));
/// assert_eq!(policy.delay(1), Duration::from_secs(1));
/// assert_eq!(policy.delay(2), Duration::from_secs(2));
///
/// let capped = policy.with_max_interval(Duration::from_millis(1500));
/// assert_eq!(capped.delay(2), Duration::from_millis(1500));
/// assert_eq!(RetryPolicy::new().delay(u32::MAX), RetryPolicy::MAX_DELAY);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
// 4-byte aligned: 28 bytes instead of 32 on 32-bit targets (and 25 used),
// since a policy is kept with every undo record. Fields are only read and
// written by value.
#[repr(Rust, packed(4))]
pub struct RetryPolicy {
    max_retries: u32,
    multiplier: u32,
    /// Nanoseconds: 24 bytes in all instead of 48 with `Duration`s, since a
    /// policy is kept with every undo record.
    initial_interval: u64,
    /// Nanoseconds; `u64::MAX` for no cap.
    max_interval: u64,
    jitter: Jitter,
}

/// Whole nanoseconds, saturating at `u64::MAX` (584 years).
const fn nanos(duration: Duration) -> u64 {
    let nanos = duration.as_nanos();
    if nanos > u64::MAX as u128 { u64::MAX } else { nanos as u64 }
}

impl core::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_retries", &self.max_retries)
            .field("initial_interval", &self.initial_interval())
            .field("multiplier", &self.multiplier)
            .field("max_interval", &self.max_interval())
            .field("jitter", &self.jitter)
            .finish()
    }
}

/// How a computed backoff delay is randomised, so that many clients retrying
/// the same failure do not retry in lockstep.
///
/// Randomness comes from the transaction's own [`SplitMix64`], seeded per
/// transaction (see `TransactionManager::with_jitter_seed`): runs are
/// reproducible and there is no global RNG.
///
/// `Full` and `Equal` need the `jitter` feature (on with `alloc`, so with
/// `std` and the tokio and smol adapters): without it only `None` exists,
/// and the random draw is not compiled (about 350 bytes of flash on a
/// Cortex-M3). The enum is `#[non_exhaustive]`, so a `match` on it keeps
/// compiling whichever crate turns the feature on.
///
/// ```
/// use transaction_manager::{RetryPolicy, retry::Jitter};
/// # #[cfg(feature = "jitter")] {
/// let policy = RetryPolicy::new().with_max_retries(5).with_jitter(Jitter::Equal);
/// assert_eq!(policy.jitter(), Jitter::Equal);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Jitter {
    /// Wait exactly the computed delay.
    #[default]
    None,
    /// Wait a uniformly random time in `[0, delay]` (feature `jitter`).
    #[cfg(feature = "jitter")]
    Full,
    /// Wait `delay / 2` plus a uniformly random time in `[0, delay / 2]`
    /// (feature `jitter`).
    #[cfg(feature = "jitter")]
    Equal,
}

impl RetryPolicy {
    /// The default retry interval: 500 ms (as in the Python
    /// `async-transaction-manager` 0.1.2).
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

    /// The longest delay a policy computes: `u64::MAX` nanoseconds (about
    /// 584 years). Longer intervals and caps are treated as this.
    pub const MAX_DELAY: Duration = Duration::from_nanos(u64::MAX);

    /// No retries, 500 ms initial interval, multiplier 2, no cap, no jitter.
    ///
    /// ```
    /// # use transaction_manager::RetryPolicy;
    /// assert_eq!(RetryPolicy::new().max_retries(), 0);
    /// ```
    pub const fn new() -> Self {
        Self {
            max_retries: 0,
            multiplier: 2,
            initial_interval: nanos(Self::DEFAULT_INTERVAL),
            max_interval: u64::MAX,
            jitter: Jitter::None,
        }
    }

    /// The policy's fields, as a journal keeps them.
    pub(crate) const fn to_parts(self) -> (u32, u32, u64, u64, u8) {
        let jitter = match self.jitter {
            Jitter::None => 0,
            #[cfg(feature = "jitter")]
            Jitter::Full => 1,
            #[cfg(feature = "jitter")]
            Jitter::Equal => 2,
        };
        (self.max_retries, self.multiplier, self.initial_interval, self.max_interval, jitter)
    }

    /// A policy from [`to_parts`](Self::to_parts), or `None` for an
    /// unknown jitter (also `Full` and `Equal` without the `jitter`
    /// feature: a journal read by a build that cannot apply its policy).
    pub(crate) const fn from_parts(
        max_retries: u32,
        multiplier: u32,
        initial_interval: u64,
        max_interval: u64,
        jitter: u8,
    ) -> Option<Self> {
        let jitter = match jitter {
            0 => Jitter::None,
            #[cfg(feature = "jitter")]
            1 => Jitter::Full,
            #[cfg(feature = "jitter")]
            2 => Jitter::Equal,
            _ => return None,
        };
        Some(Self { max_retries, multiplier, initial_interval, max_interval, jitter })
    }

    /// Retries after the first attempt; `n + 1` attempts in all.
    ///
    /// ```
    /// # use transaction_manager::RetryPolicy;
    /// assert_eq!(RetryPolicy::new().with_max_retries(2).max_retries(), 2);
    /// ```
    #[must_use]
    pub const fn with_max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// The delay before the first retry, as a [`core::time::Duration`].
    ///
    /// `const`, so a policy can be a `const` or a `static`. For another
    /// duration type, such as `embassy_time::Duration`, use
    /// [`with_initial_interval_from`](Self::with_initial_interval_from)
    /// (a conversion through `Into` cannot run in a `const fn`).
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::RetryPolicy;
    /// const POLICY: RetryPolicy = RetryPolicy::new().with_initial_interval(Duration::from_millis(10));
    /// assert_eq!(POLICY.delay(3), Duration::from_millis(80));
    /// ```
    #[must_use]
    pub const fn with_initial_interval(mut self, interval: Duration) -> Self {
        self.initial_interval = nanos(interval);
        self
    }

    /// The delay before the first retry, as anything `Into<Duration>`, such
    /// as `embassy_time::Duration`.
    ///
    /// Not `const` (it calls `Into::into`); for a `const` or `static`
    /// policy, use [`with_initial_interval`](Self::with_initial_interval)
    /// with a `core::time::Duration`.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::RetryPolicy;
    /// let p = RetryPolicy::new().with_initial_interval_from(embassy_time::Duration::from_millis(10));
    /// assert_eq!(p.delay(1), Duration::from_millis(20));
    /// ```
    #[must_use]
    pub fn with_initial_interval_from(self, interval: impl Into<Duration>) -> Self {
        self.with_initial_interval(interval.into())
    }

    /// The factor each delay grows by. `1` gives a constant delay; `0` waits
    /// the initial interval once, then retries at once.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::RetryPolicy;
    /// let p = RetryPolicy::new().with_multiplier(3);
    /// assert_eq!(p.delay(2), Duration::from_millis(4500));
    /// ```
    #[must_use]
    pub const fn with_multiplier(mut self, multiplier: u32) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The longest any one delay may be, before jitter, as a
    /// [`core::time::Duration`].
    ///
    /// `const`; for another duration type, such as
    /// `embassy_time::Duration`, use
    /// [`with_max_interval_from`](Self::with_max_interval_from).
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::RetryPolicy;
    /// const POLICY: RetryPolicy = RetryPolicy::new().with_max_interval(Duration::from_secs(1));
    /// assert_eq!(POLICY.delay(10), Duration::from_secs(1));
    /// ```
    #[must_use]
    pub const fn with_max_interval(mut self, cap: Duration) -> Self {
        self.max_interval = nanos(cap);
        self
    }

    /// The longest any one delay may be, before jitter, as anything
    /// `Into<Duration>`, such as `embassy_time::Duration`.
    ///
    /// Not `const` (it calls `Into::into`); for a `const` or `static`
    /// policy, use [`with_max_interval`](Self::with_max_interval) with a
    /// `core::time::Duration`.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::RetryPolicy;
    /// let p = RetryPolicy::new().with_max_interval_from(embassy_time::Duration::from_secs(1));
    /// assert_eq!(p.delay(10), Duration::from_secs(1));
    /// ```
    #[must_use]
    pub fn with_max_interval_from(self, cap: impl Into<Duration>) -> Self {
        self.with_max_interval(cap.into())
    }

    /// How the delay is randomised.
    ///
    /// ```
    /// # use transaction_manager::{RetryPolicy, retry::Jitter};
    /// # #[cfg(feature = "jitter")] {
    /// let p = RetryPolicy::new().with_jitter(Jitter::Full);
    /// assert_eq!(p.jitter(), Jitter::Full);
    /// # }
    /// ```
    #[must_use]
    pub const fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Retries after the first attempt.
    ///
    /// ```
    /// # use transaction_manager::RetryPolicy;
    /// assert_eq!(RetryPolicy::default().max_retries(), 0);
    /// ```
    pub const fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// The delay before the first retry.
    ///
    /// ```
    /// # use transaction_manager::RetryPolicy;
    /// assert_eq!(RetryPolicy::new().initial_interval(), RetryPolicy::DEFAULT_INTERVAL);
    /// ```
    pub const fn initial_interval(&self) -> Duration {
        crate::timing::clock::duration_from_nanos(self.initial_interval)
    }

    /// The factor each delay grows by.
    ///
    /// ```
    /// # use transaction_manager::RetryPolicy;
    /// assert_eq!(RetryPolicy::new().multiplier(), 2);
    /// ```
    pub const fn multiplier(&self) -> u32 {
        self.multiplier
    }

    /// The cap on one delay, if any.
    ///
    /// ```
    /// # use transaction_manager::RetryPolicy;
    /// assert_eq!(RetryPolicy::new().max_interval(), None);
    /// ```
    pub const fn max_interval(&self) -> Option<Duration> {
        if self.max_interval == u64::MAX {
            None
        } else {
            Some(crate::timing::clock::duration_from_nanos(self.max_interval))
        }
    }

    /// How the delay is randomised.
    ///
    /// ```
    /// # use transaction_manager::{RetryPolicy, retry::Jitter};
    /// assert_eq!(RetryPolicy::new().jitter(), Jitter::None);
    /// ```
    pub const fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The delay before retry `retry` (0-based), before jitter:
    /// `min(initial_interval * multiplier^retry, max_interval)`, saturating.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::RetryPolicy;
    /// let p = RetryPolicy::new();
    /// assert_eq!(p.delay(0), Duration::from_millis(500));
    /// assert_eq!(p.delay(4), Duration::from_secs(8));
    /// ```
    pub fn delay(&self, retry: u32) -> Duration {
        crate::timing::clock::duration_from_nanos(self.delay_nanos(retry))
    }

    fn delay_nanos(&self, retry: u32) -> u64 {
        let cap = self.max_interval;
        let mut delay = self.initial_interval.min(cap);
        // Stops as soon as the delay can no longer change, so the loop runs
        // at most 64 times even for `retry == u32::MAX`.
        for _ in 0..retry {
            if delay >= cap || delay == 0 || self.multiplier == 1 {
                break;
            }
            delay = delay.saturating_mul(u64::from(self.multiplier)).min(cap);
        }
        delay
    }

    /// Whether every delay is zero without a random draw: a zero initial
    /// interval and no jitter (with jitter, a draw is made even for a zero
    /// delay, and the draws after it depend on it). Inlined, so a policy
    /// that never waits costs one test per retry, no call.
    #[inline(always)]
    pub(crate) fn never_waits(&self) -> bool {
        self.initial_interval == 0 && matches!(self.jitter, Jitter::None)
    }

    /// The delay before retry `retry` with this policy's jitter applied,
    /// drawing randomness from `rng`.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::{RetryPolicy, retry::{Jitter, SplitMix64}};
    /// # #[cfg(feature = "jitter")] {
    /// let p = RetryPolicy::new().with_jitter(Jitter::Equal);
    /// let d = p.jittered_delay(1, &mut SplitMix64::new(7));
    /// assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1));
    /// # }
    /// ```
    pub fn jittered_delay(&self, retry: u32, rng: &mut SplitMix64) -> Duration {
        if self.never_waits() {
            return Duration::ZERO;
        }
        let delay = self.delay_nanos(retry);
        #[cfg(not(feature = "jitter"))]
        {
            // Only `Jitter::None` exists without the feature.
            let _ = rng;
            crate::timing::clock::duration_from_nanos(delay)
        }
        #[cfg(feature = "jitter")]
        {
            // One random draw for both kinds (one copy of it in the code): a
            // fixed part plus a uniform time in `[0, spread]`.
            let (fixed, spread) = match self.jitter {
                Jitter::None => return crate::timing::clock::duration_from_nanos(delay),
                Jitter::Full => (0, delay),
                Jitter::Equal => (delay / 2, delay - delay / 2),
            };
            crate::timing::clock::duration_from_nanos(fixed + uniform_up_to(spread, rng))
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::new()
    }
}

/// A uniformly distributed number of nanoseconds in `[0, max]`.
#[cfg(feature = "jitter")]
fn uniform_up_to(max: u64, rng: &mut SplitMix64) -> u64 {
    let span = u128::from(max) + 1;
    // Lemire's multiply-shift: maps 64 random bits onto [0, span) with no
    // division and a bias below 2^-64 per value.
    ((u128::from(rng.next_u64()) * span) >> 64) as u64
}

/// A tiny, fast, seedable pseudo-random generator (SplitMix64) for jitter.
///
/// Not for cryptography. Each transaction owns one, so jitter needs no
/// global state and the same seed replays the same delays.
///
/// ```
/// use transaction_manager::retry::SplitMix64;
/// let (mut a, mut b) = (SplitMix64::new(1), SplitMix64::new(1));
/// assert_eq!(a.next_u64(), b.next_u64());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`.
    ///
    /// ```
    /// # use transaction_manager::retry::SplitMix64;
    /// let mut rng = SplitMix64::new(0);
    /// assert_ne!(rng.next_u64(), rng.next_u64());
    /// ```
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    ///
    /// ```
    /// # use transaction_manager::retry::SplitMix64;
    /// let _bits: u64 = SplitMix64::new(42).next_u64();
    /// ```
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_waits_only_without_interval_and_jitter() {
        let zero = RetryPolicy::new().with_initial_interval(Duration::ZERO);
        assert!(zero.never_waits());
        let mut rng = SplitMix64::new(3);
        for n in [0, 1, 7, u32::MAX] {
            assert_eq!(zero.jittered_delay(n, &mut rng), Duration::ZERO);
        }
        // No draw was made: the generator is where it started.
        assert_eq!(rng, SplitMix64::new(3));
        // With jitter, a zero delay still draws (the later draws depend on it).
        #[cfg(feature = "jitter")]
        for jitter in [Jitter::Full, Jitter::Equal] {
            let p = zero.with_jitter(jitter);
            assert!(!p.never_waits());
            let mut rng = SplitMix64::new(3);
            assert_eq!(p.jittered_delay(0, &mut rng), Duration::ZERO);
            assert_ne!(rng, SplitMix64::new(3));
        }
        assert!(!RetryPolicy::new().never_waits());
    }

    #[test]
    fn delays_double_from_500ms() {
        let p = RetryPolicy::new();
        let ms: [u64; 5] = [500, 1000, 2000, 4000, 8000];
        for (n, want) in ms.iter().enumerate() {
            assert_eq!(p.delay(n as u32), Duration::from_millis(*want));
        }
    }

    #[test]
    fn huge_inputs_saturate() {
        let p = RetryPolicy::new()
            .with_initial_interval(Duration::MAX)
            .with_multiplier(u32::MAX)
            .with_max_retries(u32::MAX);
        assert_eq!(p.delay(u32::MAX), RetryPolicy::MAX_DELAY);
        let mut rng = SplitMix64::new(3);
        #[cfg(feature = "jitter")]
        let jitters = [Jitter::None, Jitter::Full, Jitter::Equal];
        #[cfg(not(feature = "jitter"))]
        let jitters = [Jitter::None];
        for jitter in jitters {
            let _ = p.with_jitter(jitter).jittered_delay(u32::MAX, &mut rng);
        }
        assert_eq!(RetryPolicy::new().with_multiplier(0).delay(5), Duration::ZERO);
        assert_eq!(RetryPolicy::new().with_multiplier(1).delay(u32::MAX), Duration::from_millis(500));
        let zero = RetryPolicy::new().with_initial_interval(Duration::ZERO);
        assert_eq!(zero.delay(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn a_journal_policy_with_jitter_needs_the_feature() {
        let parts = |jitter| RetryPolicy::from_parts(2, 2, 1_000, u64::MAX, jitter);
        assert_eq!(parts(0).map(|p| p.jitter()), Some(Jitter::None));
        // Full and Equal: read back as written with the feature, refused
        // (the journal cannot be applied) without it.
        #[cfg(feature = "jitter")]
        {
            assert_eq!(parts(1).map(|p| p.jitter()), Some(Jitter::Full));
            assert_eq!(parts(2).map(|p| p.jitter()), Some(Jitter::Equal));
        }
        #[cfg(not(feature = "jitter"))]
        {
            assert!(parts(1).is_none());
            assert!(parts(2).is_none());
        }
        assert!(parts(3).is_none());
    }

    #[test]
    #[cfg(feature = "jitter")]
    fn jitter_stays_in_range_and_replays() {
        let base = RetryPolicy::new().with_initial_interval(Duration::from_millis(100));
        let mut rng = SplitMix64::new(11);
        let mut seen_low = false;
        for n in 0..2000 {
            let d = base.with_jitter(Jitter::Full).jittered_delay(2, &mut rng);
            assert!(d <= Duration::from_millis(400), "{n}: {d:?}");
            seen_low |= d < Duration::from_millis(200);
            let e = base.with_jitter(Jitter::Equal).jittered_delay(2, &mut rng);
            assert!(e >= Duration::from_millis(200) && e <= Duration::from_millis(400));
        }
        assert!(seen_low, "full jitter never went below half the delay");
        let mut r1 = SplitMix64::new(5);
        let mut r2 = SplitMix64::new(5);
        let j = base.with_jitter(Jitter::Full);
        for n in 0..10 {
            assert_eq!(j.jittered_delay(n, &mut r1), j.jittered_delay(n, &mut r2));
        }
    }
}
