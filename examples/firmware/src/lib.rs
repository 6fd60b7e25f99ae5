//! What the two firmware binaries share: the simulated board, the SysTick
//! time driver, the scenarios with their expected outcomes, and the output.
//!
//! `firmware` (src/main.rs) brings the board up through transaction-manager;
//! `hand-written` (src/bin/hand_written.rs) does the same work without it.
//! Both run every scenario in [`scenario::SCENARIOS`] and pass the same
//! checks, so the difference in their size is what the library costs.
//! Nothing here depends on transaction-manager.

#![no_std]

pub mod board;
pub mod scenario;
pub mod stack;
pub mod time_driver;
pub mod trace;

#[cfg(feature = "defmt")]
use defmt_semihosting as _;

/// Prints one line on the host: semihosting text, or with the `defmt`
/// feature a defmt frame (decode with `defmt-print`). Format strings use
/// only `{}`, which both understand.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        #[cfg(feature = "defmt")]
        ::defmt::println!($($arg)*);
        #[cfg(not(feature = "defmt"))]
        ::cortex_m_semihosting::hprintln!($($arg)*);
    }};
}

// Decoded logs show the embassy time of each message, in ms since boot.
#[cfg(feature = "defmt")]
defmt::timestamp!("{=u64:ms}", embassy_time::Instant::now().as_millis());

/// Starts the clock. Call once, first thing in `main`.
pub fn init() {
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        say!("init called twice");
        exit(false);
    };
    time_driver::start(peripherals.SYST);
}

/// Ends the QEMU run: status 0 if `success`, 1 otherwise (semihosting
/// `SYS_EXIT`, which QEMU turns into its own exit status).
pub fn exit(success: bool) -> ! {
    let status =
        if success { cortex_m_semihosting::debug::EXIT_SUCCESS } else { cortex_m_semihosting::debug::EXIT_FAILURE };
    loop {
        cortex_m_semihosting::debug::exit(status);
    }
}

// A panic is a failed run: report where, and exit 1 rather than hang until
// the script's timeout.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    #[cfg(not(feature = "defmt"))]
    cortex_m_semihosting::hprintln!("panic: {}", info);
    // The message would need `core::fmt`, which the defmt build otherwise
    // leaves out of flash; the location is enough to find it.
    #[cfg(feature = "defmt")]
    match info.location() {
        Some(at) => defmt::println!("panic at {=str}:{=u32}", at.file(), at.line()),
        None => defmt::println!("panic"),
    }
    exit(false)
}

/// The size of the future `make` would return, without calling it: building
/// a future only to measure it would give the measuring task's stack frame a
/// slot of that size for good.
pub fn future_size<F: core::future::Future>(_make: impl FnOnce() -> F) -> usize {
    core::mem::size_of::<F>()
}

/// [`future_size`] for a function of three borrowed arguments, given as
/// the function itself: nothing needs to exist to borrow from (a place
/// for an outcome made only to be borrowed here would take its size in the
/// measuring task's frame).
pub fn future_size_of<'a, A: ?Sized + 'a, B: ?Sized + 'a, C: ?Sized + 'a, F: core::future::Future>(
    _make: impl FnOnce(&'a A, &'a mut B, &'a mut C) -> F,
) -> usize {
    core::mem::size_of::<F>()
}
