//! The conformance suite on `ManualClock`: virtual time, no runtime at all.

mod conformance;

use transaction_manager::ManualClock;

macro_rules! on_manual_clock {
    ($scenario:path) => {{
        let clock = ManualClock::new();
        clock.block_on($scenario(&clock, conformance::Timing::Exact));
    }};
}

conformance_suite!(on_manual_clock);
