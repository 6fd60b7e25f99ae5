//! An embassy-time driver on SysTick, for boards no embassy HAL covers
//! (QEMU's mps2-an385 and mps2-an386).
//!
//! SysTick interrupts at 1 kHz (the `tick-hz-1_000` embassy-time feature) and
//! counts ticks in a 64-bit counter, which never overflows in practice.
//! Timers waiting on embassy-time sit in embassy-time-queue-utils' queue
//! (integrated into embassy-executor's tasks: every waker here is a task's).
//! Each tick the handler compares the time with the earliest deadline and,
//! when it has come, wakes the expired timers.
//!
//! Trade-offs, fine for this example and many small firmwares: the CPU is
//! interrupted every millisecond even when idle (a tickless driver would
//! program a one-shot timer instead), and a deadline is met to within one
//! tick.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::{Driver, TICK_HZ};
use embassy_time_queue_utils::Queue;

/// SysTick's clock on the mps2 boards (the CPU clock QEMU models).
const SYSTICK_HZ: u64 = 25_000_000;

struct SysTickDriver {
    ticks: Mutex<Cell<u64>>,
    /// Ticks at which the earliest queued timer expires (`u64::MAX`: none).
    next_deadline: Mutex<Cell<u64>>,
    // The driver's state is shared with the SysTick handler, so it lives in
    // a static behind critical sections; the queue needs `&mut` to update.
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    next_deadline: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        // A 64-bit read is two loads on Cortex-M: keep the handler out.
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow_ref_mut(cs);
            if queue.schedule_wake(at, waker) {
                // Also wakes at once a timer whose deadline has passed.
                let now = self.ticks.borrow(cs).get();
                self.next_deadline.borrow(cs).set(queue.next_expiration(now));
            }
        });
    }
}

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        let now = ticks.get() + 1;
        ticks.set(now);
        let next_deadline = DRIVER.next_deadline.borrow(cs);
        if now >= next_deadline.get() {
            let mut queue = DRIVER.queue.borrow_ref_mut(cs);
            next_deadline.set(queue.next_expiration(now));
        }
    });
}

/// Starts the tick. Time stands still (at 0) until this is called.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload((SYSTICK_HZ / TICK_HZ - 1) as u32);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}
