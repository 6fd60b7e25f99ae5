//! The scenarios every bring-up must get through, and how each must end.
//!
//! A bring-up (the library's or the hand-written one) runs on a fresh
//! [`Board`] per scenario and returns a [`Report`]. The firmware then checks
//! the report, the board's state and the [trace](crate::trace) of what the
//! peripherals did, against the expectations written here, and the run exits
//! with status 1 if any scenario did not end as expected.

use crate::board::{Board, Faults, Sensor};
use crate::say;
use crate::trace::{self, Event};

/// The steps of the bring-up, in order: `i2c` and `spi` run at the same
/// time (a parallel group in `firmware`, a join in `hand-written`).
pub const STEPS: [&str; 5] = ["power", "i2c", "spi", "sensor", "radio"];

/// How a bring-up ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step completed.
    Up { rail_mv: u16, chip_id: u8 },
    /// Step `step` (an index into [`STEPS`]) failed for good, and the steps
    /// before it were rolled back — `partial` when a rollback failed.
    Failed { step: usize, timed_out: bool, partial: bool },
}

/// Where each step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    NotRun,
    Done,
    Failed,
    RolledBack,
    RollbackFailed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::NotRun => "not run",
            Status::Done => "done",
            Status::Failed => "failed",
            Status::RolledBack => "rolled back",
            Status::RollbackFailed => "ROLLBACK FAILED",
        }
    }
}

/// What a bring-up reports about one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Report {
    pub outcome: Outcome,
    pub steps: [Status; 5],
}

/// Which peripherals are left on after a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Left {
    pub rail: bool,
    pub bus: bool,
    pub spi: bool,
    pub radio: bool,
}

/// One scenario: what goes wrong, and how it must end.
pub struct Scenario {
    pub name: &'static str,
    pub faults: Faults,
    pub outcome: Outcome,
    pub steps: [Status; 5],
    pub left: Left,
    /// Every event the peripherals record, with its time in ms after the
    /// first one: this pins down retries, backoff delays, timeouts and the
    /// order of rollbacks.
    pub trace: &'static [(Event, u32)],
}

use Event::*;
use Status::*;

/// The policies both bring-ups use (the trace times below follow from them):
///
/// | step   | timeout | retries | first backoff | rollback        |
/// |--------|---------|---------|---------------|-----------------|
/// | power  | 50 ms   | 2       | 10 ms         | rail off        |
/// | i2c    | 50 ms   | 1       | 5 ms          | release the bus |
/// | spi    | 50 ms   | 1       | 5 ms          | release the bus |
/// | sensor | 20 ms   | 1       | 5 ms          | none            |
/// | radio  | 50 ms   | 2       | 10 ms         | radio off       |
///
/// Backoff doubles on each retry; a rollback uses its step's policy.
///
/// `i2c` (4 ms) and `spi` (6 ms) start together right after the rail is
/// on: `SpiUp` at 6 and the sensor probe at 6 show that they overlapped
/// and that the next step waited for the slower one only (one after the
/// other, both would be at 10).
pub const SCENARIOS: [Scenario; 5] = [
    Scenario {
        name: "all steps succeed",
        faults: Faults { radio_silent_starts: 0, sensor_hangs: false, bus_stuck: false, spi_dead: false },
        outcome: Outcome::Up { rail_mv: 3300, chip_id: Sensor::CHIP_ID },
        steps: [Done, Done, Done, Done, Done],
        left: Left { rail: true, bus: true, spi: true, radio: true },
        trace: &[(RailOn, 0), (BusUp, 4), (SpiUp, 6), (SensorProbe, 6), (SensorReady, 8), (RadioUp, 11)],
    },
    Scenario {
        name: "radio answers on the third try",
        faults: Faults { radio_silent_starts: 2, sensor_hangs: false, bus_stuck: false, spi_dead: false },
        outcome: Outcome::Up { rail_mv: 3300, chip_id: Sensor::CHIP_ID },
        steps: [Done, Done, Done, Done, Done],
        left: Left { rail: true, bus: true, spi: true, radio: true },
        trace: &[
            (RailOn, 0),
            (BusUp, 4),
            (SpiUp, 6),
            (SensorProbe, 6),
            (SensorReady, 8),
            (RadioNack, 11),
            // 10 ms backoff, then 3 ms to find no answer again.
            (RadioNack, 24),
            // 20 ms backoff.
            (RadioUp, 47),
        ],
    },
    Scenario {
        name: "sensor hangs: spi, i2c and power rolled back",
        faults: Faults { radio_silent_starts: 0, sensor_hangs: true, bus_stuck: false, spi_dead: false },
        outcome: Outcome::Failed { step: 3, timed_out: true, partial: false },
        steps: [RolledBack, RolledBack, RolledBack, Failed, NotRun],
        left: Left { rail: false, bus: false, spi: false, radio: false },
        trace: &[
            (RailOn, 0),
            (BusUp, 4),
            (SpiUp, 6),
            (SensorProbe, 6),
            // Timed out after 20 ms, retried after 5 ms.
            (SensorProbe, 31),
            // Timed out again at 51: rollback, latest step first (the
            // buses in reverse order of completion: spi came up last).
            (SpiDown, 52),
            (BusDown, 53),
            (RailOff, 54),
        ],
    },
    Scenario {
        name: "radio dead, bus stuck: partially rolled back",
        faults: Faults { radio_silent_starts: u8::MAX, sensor_hangs: false, bus_stuck: true, spi_dead: false },
        outcome: Outcome::Failed { step: 4, timed_out: false, partial: true },
        steps: [RolledBack, RollbackFailed, RolledBack, Done, Failed],
        left: Left { rail: false, bus: true, spi: false, radio: false },
        trace: &[
            (RailOn, 0),
            (BusUp, 4),
            (SpiUp, 6),
            (SensorProbe, 6),
            (SensorReady, 8),
            (RadioNack, 11),
            (RadioNack, 24),
            (RadioNack, 47),
            // The radio's own step failed: nothing to undo there; the
            // sensor step has no rollback. SPI is released; the I2C bus
            // release fails twice (one retry after 5 ms), and rollback
            // goes on with power.
            (SpiDown, 48),
            (BusStuck, 49),
            (BusStuck, 55),
            (RailOff, 56),
        ],
    },
    Scenario {
        name: "spi dead while i2c comes up: i2c and power rolled back",
        faults: Faults { radio_silent_starts: 0, sensor_hangs: false, bus_stuck: false, spi_dead: true },
        outcome: Outcome::Failed { step: 2, timed_out: false, partial: false },
        steps: [RolledBack, RolledBack, Failed, NotRun, NotRun],
        left: Left { rail: false, bus: false, spi: false, radio: false },
        trace: &[
            (RailOn, 0),
            // Both buses start at 0: I2C is up at 4 while SPI's first
            // start is still waiting for its clock (it fails at 6).
            (BusUp, 4),
            (SpiNack, 6),
            // 5 ms backoff, 6 ms start: fails for good at 17.
            (SpiNack, 17),
            // Only then the group fails: the bus that came up is
            // released, then the rail.
            (BusDown, 18),
            (RailOff, 19),
        ],
    },
];

/// Runs every scenario through `bring_up` and checks each. Returns whether
/// all ended as expected.
pub async fn run_all(mut bring_up: impl AsyncFnMut(&mut Board) -> Report) -> bool {
    let mut unexpected = 0;
    for scenario in &SCENARIOS {
        say!("--- {}", scenario.name);
        trace::clear();
        let mut board = Board::new(scenario.faults);
        let report = bring_up(&mut board).await;
        if check(scenario, &report, &board) {
            say!("ok: {}", scenario.name);
        } else {
            unexpected += 1;
            say!("UNEXPECTED: {}", scenario.name);
        }
    }
    say!("scenarios: {} as expected, {} unexpected", SCENARIOS.len() - unexpected, unexpected);
    unexpected == 0
}

fn check(scenario: &Scenario, report: &Report, board: &Board) -> bool {
    let mut ok = true;
    if report.outcome != scenario.outcome {
        ok = false;
        say_outcome("  outcome expected", scenario.outcome);
        say_outcome("  outcome got     ", report.outcome);
    }
    for (i, (got, want)) in report.steps.iter().zip(scenario.steps).enumerate() {
        if *got != want {
            ok = false;
            say!("  step {}: expected {}, got {}", STEPS[i], want.as_str(), got.as_str());
        }
    }
    let left =
        Left { rail: board.power.is_on(), bus: board.i2c.is_up(), spi: board.spi.is_up(), radio: board.radio.is_up() };
    if left != scenario.left {
        ok = false;
        say!(
            "  left on (rail, bus, spi, radio): expected {} {} {} {}, got {} {} {} {}",
            scenario.left.rail,
            scenario.left.bus,
            scenario.left.spi,
            scenario.left.radio,
            left.rail,
            left.bus,
            left.spi,
            left.radio
        );
    }
    if !trace_matches(scenario.trace) {
        ok = false;
        say!("  trace (event, ms after the first), expected then got:");
        for (event, ms) in scenario.trace {
            say!("    {} {}", event_name(*event), ms);
        }
        let start = trace::get(0).map_or(0, |(_, t)| t);
        for i in 0..trace::len() {
            match trace::get(i) {
                Some((event, t)) => say!("    got {} {}", event_name(event), t - start),
                None => say!("    got (lost: trace full)"),
            }
        }
    }
    ok
}

/// Tick boundaries can move an event by one ms either way.
const SLACK_MS: u32 = 1;

fn trace_matches(expected: &[(Event, u32)]) -> bool {
    if trace::len() != expected.len() {
        return false;
    }
    let start = trace::get(0).map_or(0, |(_, t)| t);
    expected.iter().enumerate().all(|(i, (event, ms))| {
        trace::get(i).is_some_and(|(got, t)| got == *event && (t - start).abs_diff(*ms) <= SLACK_MS)
    })
}

fn say_outcome(label: &str, outcome: Outcome) {
    match outcome {
        Outcome::Up { rail_mv, chip_id } => {
            say!("{}: up, rail {} mV, sensor chip id {}", label, rail_mv, chip_id)
        }
        Outcome::Failed { step, timed_out, partial } => {
            say!("{}: failed at {}, timed out: {}, partial rollback: {}", label, STEPS[step], timed_out, partial)
        }
    }
}

fn event_name(event: Event) -> &'static str {
    match event {
        RailOn => "RailOn",
        RailOff => "RailOff",
        BusUp => "BusUp",
        BusDown => "BusDown",
        BusStuck => "BusStuck",
        SensorProbe => "SensorProbe",
        SensorReady => "SensorReady",
        RadioNack => "RadioNack",
        RadioUp => "RadioUp",
        RadioDown => "RadioDown",
        SpiUp => "SpiUp",
        SpiNack => "SpiNack",
        SpiDown => "SpiDown",
    }
}
