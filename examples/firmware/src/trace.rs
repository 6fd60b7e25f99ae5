//! A logic analyser on the simulated board: every peripheral records what it
//! did, and when, so a scenario can check the order and timing of steps,
//! retries and rollbacks afterwards.
//!
//! It is a static of atomics, not a field of the board, so that peripheral
//! methods stay `&mut self` calls like a real driver's (`board.radio.start()`).

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// Something a peripheral did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Event {
    RailOn = 1,
    RailOff,
    BusUp,
    BusDown,
    /// A bus release that failed: SDA held low.
    BusStuck,
    /// A probe started (it may never answer).
    SensorProbe,
    SensorReady,
    /// A radio start that got no answer.
    RadioNack,
    RadioUp,
    RadioDown,
    SpiUp,
    /// An SPI start whose clock did not lock.
    SpiNack,
    SpiDown,
}

impl Event {
    const ALL: [Event; 13] = [
        Event::RailOn,
        Event::RailOff,
        Event::BusUp,
        Event::BusDown,
        Event::BusStuck,
        Event::SensorProbe,
        Event::SensorReady,
        Event::RadioNack,
        Event::RadioUp,
        Event::RadioDown,
        Event::SpiUp,
        Event::SpiNack,
        Event::SpiDown,
    ];

    fn from_code(code: u8) -> Option<Event> {
        Event::ALL.into_iter().find(|e| *e as u8 == code)
    }
}

/// More than any scenario records; later events are counted, not kept.
pub const CAPACITY: usize = 24;

// Each slot packs the event (low 8 bits) and the time in ms (high 24 bits:
// 4.6 hours, far more than a run takes).
static SLOTS: [AtomicU32; CAPACITY] = [const { AtomicU32::new(0) }; CAPACITY];
static LEN: AtomicUsize = AtomicUsize::new(0);

/// Records `event` at the current embassy time.
pub fn record(event: Event) {
    let ms = embassy_time::Instant::now().as_millis() as u32;
    let slot = LEN.fetch_add(1, Ordering::Relaxed);
    if let Some(cell) = SLOTS.get(slot) {
        cell.store((ms << 8) | event as u32, Ordering::Relaxed);
    }
}

/// Forgets everything recorded.
pub fn clear() {
    LEN.store(0, Ordering::Relaxed);
}

/// How many events were recorded (including any past [`CAPACITY`]).
pub fn len() -> usize {
    LEN.load(Ordering::Relaxed)
}

/// The `i`th event recorded and its time in ms since boot.
pub fn get(i: usize) -> Option<(Event, u32)> {
    if i >= len() {
        return None;
    }
    let packed = SLOTS.get(i)?.load(Ordering::Relaxed);
    Some((Event::from_code(packed as u8)?, packed >> 8))
}
