//! The baseline: the bring-up of src/main.rs written by hand, with the same
//! retries, backoff, per-attempt timeouts and reverse-order rollback, and
//! nothing the scenarios do not need (no summary, hooks, error texts or step
//! times). It runs the same scenarios and passes the same checks, so the
//! difference in size between this binary and `firmware` is what
//! transaction-manager costs.

#![no_std]
#![no_main]

use embassy_executor::Spawner;
use embassy_futures::join::join;
use embassy_time::{Duration, Timer, with_timeout};
use firmware::board::{Board, Faults, HwError, I2cBus, SpiBus};
use firmware::say;
use firmware::scenario::{self, Outcome, Report, STEPS, Status};

/// Retries and timeout of one step (and of its rollback).
struct Policy {
    timeout: Duration,
    retries: u32,
    /// Before the first retry; doubles on each retry after that.
    backoff: Duration,
}

const POWER: Policy = Policy { timeout: Duration::from_millis(50), retries: 2, backoff: Duration::from_millis(10) };
const BUS: Policy = Policy { timeout: Duration::from_millis(50), retries: 1, backoff: Duration::from_millis(5) };
const SENSOR: Policy = Policy { timeout: Duration::from_millis(20), ..BUS };
const RADIO: Policy = POWER;

/// Why an operation failed on its last attempt.
enum Failure {
    Error(HwError),
    TimedOut,
}

/// Runs `op` on `part` (the board, or one bus of it) until it succeeds or
/// `policy` has no retries left.
async fn attempt<P, T>(
    part: &mut P,
    policy: &Policy,
    mut op: impl AsyncFnMut(&mut P) -> Result<T, HwError>,
) -> Result<T, Failure> {
    let mut retry = 0;
    loop {
        let failure = match with_timeout(policy.timeout, op(part)).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => Failure::Error(error),
            Err(_) => Failure::TimedOut,
        };
        if retry == policy.retries {
            return Err(failure);
        }
        Timer::after(policy.backoff * (1 << retry)).await;
        retry += 1;
    }
}

async fn bring_up(board: &mut Board) -> Report {
    let mut steps = [Status::NotRun; 5];
    let (failed, failure) = 'run: {
        let rail_mv = match attempt(board, &POWER, async |b: &mut Board| b.power.on().await).await {
            Ok(mv) => mv,
            Err(failure) => break 'run (0, failure),
        };
        steps[0] = Status::Done;
        // The two buses at once, each borrowing its own; both run to the end.
        let (i2c, spi) = join(
            attempt(&mut board.i2c, &BUS, async |bus: &mut I2cBus| bus.init().await),
            attempt(&mut board.spi, &BUS, async |bus: &mut SpiBus| bus.init().await),
        )
        .await;
        steps[1] = if i2c.is_ok() { Status::Done } else { Status::Failed };
        steps[2] = if spi.is_ok() { Status::Done } else { Status::Failed };
        match (i2c, spi) {
            (Err(failure), _) => break 'run (1, failure),
            (_, Err(failure)) => break 'run (2, failure),
            _ => {}
        }
        let chip_id = match attempt(board, &SENSOR, async |b: &mut Board| b.sensor.probe().await).await {
            Ok(id) => id,
            Err(failure) => break 'run (3, failure),
        };
        steps[3] = Status::Done;
        if let Err(failure) = attempt(board, &RADIO, async |b: &mut Board| b.radio.start().await).await {
            break 'run (4, failure);
        }
        steps[4] = Status::Done;
        say!("board up: rail {} mV, sensor {}", rail_mv, chip_id);
        return Report { outcome: Outcome::Up { rail_mv, chip_id }, steps };
    };
    steps[failed] = Status::Failed;
    match failure {
        Failure::Error(error) => say!("bring-up failed: step `{}`: {}", STEPS[failed], error),
        Failure::TimedOut => say!("bring-up failed: step `{}` timed out", STEPS[failed]),
    }

    // Undo what completed, latest first (of the buses, spi comes up last);
    // a failed undo does not stop the others.
    let mut partial = false;
    for step in (0..steps.len()).rev() {
        if steps[step] != Status::Done {
            continue;
        }
        let undone = match step {
            0 => attempt(board, &POWER, async |b: &mut Board| b.power.off().await).await,
            1 => attempt(board, &BUS, async |b: &mut Board| b.i2c.release().await).await,
            2 => attempt(board, &BUS, async |b: &mut Board| b.spi.release().await).await,
            4 => attempt(board, &RADIO, async |b: &mut Board| b.radio.stop().await).await,
            _ => continue, // reading the sensor's id changed nothing
        };
        steps[step] = match undone {
            Ok(()) => Status::RolledBack,
            Err(_) => {
                say!("rollback of step `{}` failed", STEPS[step]);
                partial = true;
                Status::RollbackFailed
            }
        };
    }
    say!("{}", if partial { "PARTIALLY rolled back" } else { "rolled back cleanly" });
    Report {
        outcome: Outcome::Failed { step: failed, timed_out: matches!(failure, Failure::TimedOut), partial },
        steps,
    }
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    firmware::init();

    let mut board = Board::new(Faults::default());
    say!("bring-up future: {} bytes", firmware::future_size(|| bring_up(&mut board)));

    let passed = scenario::run_all(async |board| bring_up(board).await).await;
    // Read before printing it: the print's own frames are not the
    // bring-up's. scripts/firmware.sh parses this line.
    let stack = firmware::stack::high_water_mark();
    say!("stack high-water mark: {} bytes (of {} reserved)", stack, firmware::stack::size());
    firmware::exit(passed)
}
