//! [embassy](https://embassy.dev) adapter of
//! [transaction-manager](https://crates.io/crates/transaction-manager): a
//! [`Clock`] on `embassy-time`. `#![no_std]`, no allocator.
//!
//! Summary times and timeouts use `embassy_time::Instant` and `Timer`, so
//! they follow whatever time driver the firmware links (a HAL's, a SysTick
//! driver, or embassy-time's `mock-driver` in host tests).
//!
//! A firmware transaction keeps its undo records as an enum in fixed
//! capacity and lends its peripherals to steps and rollbacks:
//!
//! ```
//! use transaction_manager::{EmbassyClock, Rollback, StepError, TransactionManager};
//!
//! struct Board { rail_on: bool }
//! enum Undo { RailOff }
//!
//! impl Rollback<Board> for Undo {
//!     type Error = &'static str;
//!     async fn rollback(&mut self, board: &mut Board) -> Result<(), &'static str> {
//!         board.rail_on = false;
//!         Ok(())
//!     }
//! }
//!
//! async fn bring_up(board: &mut Board) -> bool {
//!     let manager = TransactionManager::new(EmbassyClock);
//!     manager
//!         .transaction("bring-up")
//!         .fixed::<Undo, 4>()
//!         .run_with(board, async |tx| {
//!             tx.step("rail")
//!                 .execute_with(async |b: &mut Board| { b.rail_on = true; Ok::<_, &str>(()) })
//!                 .undo(|_| Undo::RailOff)
//!                 .await?;
//!             Ok::<_, StepError<&str>>(())
//!         })
//!         .await
//!         .is_ok()
//! }
//! ```
//!
//! # In place of a `Spawner`
//!
//! embassy spawns only `#[embassy_executor::task]` functions, whose futures
//! live in static memory sized at compile time; it cannot run an arbitrary
//! future handed over at run time, so this crate has no
//! [`Spawner`](transaction_manager_core::backend::Spawner). What takes its place is
//! a task the firmware writes once — "the rollback task" — fed the *data*
//! of pending rollbacks (the undo enum, which is plain data) through a
//! static `embassy_sync::channel::Channel`; it owns or borrows the
//! peripherals and runs each rollback with the same engine.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use core::time::Duration;

use embassy_time::{Instant, TICK_HZ, Timer};
pub use transaction_manager_core::backend::Clock;

/// A [`Clock`] on `embassy-time`: `now` is `embassy_time::Instant::now()`
/// (time since boot), `sleep` an `embassy_time::Timer`.
///
/// Durations are converted to driver ticks rounding up, so a sleep never
/// ends early; one too long for the tick counter waits until
/// `Instant::MAX` ("forever") instead of overflowing.
///
/// ```
/// use transaction_manager::EmbassyClock;
/// let clock = EmbassyClock;
/// # let _ = clock;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct EmbassyClock;

impl Clock for EmbassyClock {
    type Sleep = Timer;

    fn now(&self) -> Duration {
        ticks_to_duration(Instant::now().as_ticks())
    }

    fn sleep(&self, duration: Duration) -> Timer {
        let ticks = duration_to_ticks(duration);
        let deadline = Instant::now().checked_add(embassy_time::Duration::from_ticks(ticks)).unwrap_or(Instant::MAX);
        Timer::at(deadline)
    }
}

/// Nanoseconds per tick, when a tick is a whole number of nanoseconds
/// (every common tick rate): then conversions need only 32-bit division,
/// which Cortex-M does in hardware.
const NANOS_PER_TICK: Option<u32> =
    if 1_000_000_000 % TICK_HZ == 0 { Some((1_000_000_000 / TICK_HZ) as u32) } else { None };

/// Ticks of the driver for `duration`, rounded up, saturating at `u64::MAX`.
pub fn duration_to_ticks(duration: Duration) -> u64 {
    let whole = duration.as_secs().saturating_mul(TICK_HZ);
    let sub_second = match NANOS_PER_TICK {
        Some(per_tick) => u64::from(duration.subsec_nanos().div_ceil(per_tick)),
        // subsec_nanos < 1e9 and TICK_HZ < 2^34, so this cannot overflow.
        None => (u64::from(duration.subsec_nanos()) * TICK_HZ).div_ceil(1_000_000_000),
    };
    whole.saturating_add(sub_second)
}

/// The time `ticks` of the driver stand for, saturating at `Duration::MAX`.
pub fn ticks_to_duration(ticks: u64) -> Duration {
    // Below 2^24 ticks a second (every common rate), with 32-bit divisions
    // only: no 64-bit division routine on a 32-bit Cortex-M.
    let (secs, rest) = if TICK_HZ < 1 << 24 {
        let (secs, rest) = transaction_manager_core::backend::div_rem_narrow(ticks, TICK_HZ as u32);
        (secs, u64::from(rest))
    } else {
        (ticks / TICK_HZ, ticks % TICK_HZ)
    };
    let nanos = match NANOS_PER_TICK {
        Some(per_tick) => rest as u32 * per_tick,
        None => (rest * 1_000_000_000 / TICK_HZ) as u32,
    };
    Duration::new(secs, nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_up_and_saturate() {
        assert_eq!(duration_to_ticks(Duration::ZERO), 0);
        assert_eq!(duration_to_ticks(Duration::MAX), u64::MAX);
        let one_tick = ticks_to_duration(1);
        assert_eq!(duration_to_ticks(one_tick), 1);
        assert_eq!(duration_to_ticks(Duration::from_nanos(1)), 1, "never rounds a wait down to zero");
        assert_eq!(ticks_to_duration(duration_to_ticks(Duration::from_millis(1500))), Duration::from_millis(1500));
        let _ = ticks_to_duration(u64::MAX);
    }
}
