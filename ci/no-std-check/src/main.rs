//! A `#![no_std]` program that runs a transaction on `ManualClock` and
//! exits 0 only if it rolled back as expected. It links against libc only
//! for the C runtime's `main` entry, `memcpy` and `exit`.

#![no_std]
#![no_main]

use core::time::Duration;

use transaction_manager_core::{ManualClock, RetryPolicy, Rollback, StepError, StepErrorKind, TransactionManager};

unsafe extern "C" {
    fn exit(status: i32) -> !;
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `exit` is libc's; it ends the process and never returns.
    unsafe { exit(101) }
}

/// The prebuilt `core` refers to this symbol; with `panic = "abort"` it is
/// never called.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

struct Pins {
    power: bool,
    bus: bool,
}

enum Undo {
    PowerOff,
    BusOff,
}

impl Rollback<Pins> for Undo {
    type Error = &'static str;

    async fn rollback(&mut self, pins: &mut Pins) -> Result<(), &'static str> {
        match self {
            Undo::PowerOff => pins.power = false,
            Undo::BusOff => pins.bus = false,
        }
        Ok(())
    }
}

fn check() -> bool {
    let clock = ManualClock::new();
    let manager = TransactionManager::new(&clock)
        .with_retry(RetryPolicy::new().with_max_retries(2))
        .with_timeout(Duration::from_millis(100));
    let mut pins = Pins { power: false, bus: false };
    let result = clock.block_on(manager.transaction("bring-up").fixed::<Undo, 4>().run_with(&mut pins, async |tx| {
        tx.step("power")
            .execute_with(async |p: &mut Pins| {
                p.power = true;
                Ok(())
            })
            .undo(|_| Undo::PowerOff)
            .await?;
        tx.step("bus")
            .execute_with(async |p: &mut Pins| {
                p.bus = true;
                Ok(())
            })
            .undo(|_| Undo::BusOff)
            .await?;
        tx.step("sensor")
            .run(|| async {
                clock.sleep(Duration::from_secs(1)).await;
                Ok::<(), core::convert::Infallible>(())
            })
            .await?;
        Ok::<(), StepError<core::convert::Infallible>>(())
    }));
    let Err(error) = result else { return false };
    matches!(error.cause().kind(), StepErrorKind::TimedOut { .. })
        && error.rollback_state().is_clean()
        && error.summary().rolled_back_steps() == 2
        && error.summary().steps()[2].attempts() == 3
        && clock.now() == Duration::from_millis(100 + 500 + 100 + 1000 + 100)
        && !pins.power
        && !pins.bus
}

#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: i32, _argv: *const *const u8) -> i32 {
    if check() { 0 } else { 1 }
}
