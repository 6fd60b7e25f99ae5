//! The firmware: brings the board up as one transaction with
//! transaction-manager, in every scenario of `firmware::scenario`, and exits
//! with status 0 only if each ended as expected.
//!
//! This file is what a firmware author writes: an undo enum, and a
//! transaction whose steps borrow the board.

#![no_std]
#![no_main]

use core::future::Future;
use core::time::Duration;

use embassy_executor::Spawner;
use firmware::board::{Board, HwError};
#[cfg(not(feature = "sequential-buses"))]
use firmware::board::{I2cBus, SpiBus};
use firmware::say;
use firmware::scenario::{self, Outcome, Report, Status};
#[cfg(not(feature = "sequential-buses"))]
use transaction_manager::group::member;
use transaction_manager::{
    Action, Committed, EmbassyClock, RetryPolicy, Rollback, StepError, StepStatus, TransactionError,
    TransactionManager, step::Maybe, storage::Fixed,
};

/// How to undo each step that has a rollback: plain data, kept inline in
/// the transaction (no allocator).
enum Undo {
    RailOff,
    ReleaseBus,
    ReleaseSpi,
    RadioOff,
}

impl Rollback<Board> for Undo {
    type Error = HwError;

    async fn rollback(&mut self, board: &mut Board) -> Result<(), HwError> {
        match self {
            Undo::RailOff => board.power.off().await,
            Undo::ReleaseBus => board.i2c.release().await,
            Undo::ReleaseSpi => board.spi.release().await,
            Undo::RadioOff => board.radio.stop().await,
        }
    }
}

/// What a successful bring-up returns.
struct Up {
    rail_mv: u16,
    chip_id: u8,
}

const POWER_RETRY: RetryPolicy =
    RetryPolicy::new().with_max_retries(2).with_initial_interval(Duration::from_millis(10));
const BUS_RETRY: RetryPolicy = RetryPolicy::new().with_max_retries(1).with_initial_interval(Duration::from_millis(5));
const RADIO_RETRY: RetryPolicy = POWER_RETRY;

/// The steps of the bring-up, as data: every step shares one copy of the
/// library's step engine. (The two buses are members of a parallel group,
/// each borrowing its own bus; with `sequential-buses`, built only to
/// measure what the group costs, they are two steps here instead.)
enum BringUp {
    Power,
    #[cfg(feature = "sequential-buses")]
    Bus,
    #[cfg(feature = "sequential-buses")]
    Spi,
    Sensor,
    Radio,
}

/// What a step returns.
enum Done {
    Rail(u16),
    #[cfg(feature = "sequential-buses")]
    Bus,
    Chip(u8),
    Radio,
}

impl Action<Board> for BringUp {
    type Output = Done;
    type Error = HwError;
    type Undo = Undo;

    async fn execute(&mut self, board: &mut Board) -> Result<Done, HwError> {
        match self {
            BringUp::Power => board.power.on().await.map(Done::Rail),
            #[cfg(feature = "sequential-buses")]
            BringUp::Bus => board.i2c.init().await.map(|()| Done::Bus),
            #[cfg(feature = "sequential-buses")]
            BringUp::Spi => board.spi.init().await.map(|()| Done::Bus),
            BringUp::Sensor => board.sensor.probe().await.map(Done::Chip),
            BringUp::Radio => board.radio.start().await.map(|()| Done::Radio),
        }
    }

    fn undo(&self, output: Maybe<&Done>) -> Option<Undo> {
        match (self, output) {
            (_, Maybe::Uncertain) => None,
            (BringUp::Power, _) => Some(Undo::RailOff),
            #[cfg(feature = "sequential-buses")]
            (BringUp::Bus, _) => Some(Undo::ReleaseBus),
            #[cfg(feature = "sequential-buses")]
            (BringUp::Spi, _) => Some(Undo::ReleaseSpi),
            // Reading an id changes nothing: no rollback.
            (BringUp::Sensor, _) => None,
            (BringUp::Radio, _) => Some(Undo::RadioOff),
        }
    }
}

type BringUpResult = Result<Committed<Up, Fixed<5>>, TransactionError<StepError<HwError>, HwError, Fixed<5>>>;

/// Brings the board up, writing the outcome into `result`: a returned
/// outcome would pass through the awaiting task's stack frame twice.
fn bring_up<'a>(
    manager: &'a TransactionManager<EmbassyClock>,
    board: &'a mut Board,
    result: &'a mut Option<BringUpResult>,
) -> impl Future<Output = ()> + 'a {
    manager.transaction("bring-up").fixed::<Undo, 5>().run_with_into(board, result, async |tx| {
        let Done::Rail(rail_mv) = tx.step("power").retry(POWER_RETRY).perform(BringUp::Power).await? else {
            unreachable!()
        };
        // Two independent buses at once: each member borrows its own part
        // of the board for the group's duration.
        #[cfg(not(feature = "sequential-buses"))]
        tx.parallel_with(|board: &mut Board| {
            let Board { i2c, spi, .. } = board;
            (
                member("i2c")
                    .retry(BUS_RETRY)
                    .execute_on(i2c, async |bus: &mut I2cBus| bus.init().await)
                    .undo(|_| Undo::ReleaseBus),
                member("spi")
                    .retry(BUS_RETRY)
                    .execute_on(spi, async |bus: &mut SpiBus| bus.init().await)
                    .undo(|_| Undo::ReleaseSpi),
            )
        })
        .await?;
        #[cfg(feature = "sequential-buses")]
        {
            tx.step("i2c").retry(BUS_RETRY).perform(BringUp::Bus).await?;
            tx.step("spi").retry(BUS_RETRY).perform(BringUp::Spi).await?;
        }
        let Done::Chip(chip_id) =
            tx.step("sensor").timeout(Duration::from_millis(20)).retry(BUS_RETRY).perform(BringUp::Sensor).await?
        else {
            unreachable!()
        };
        tx.step("radio").retry(RADIO_RETRY).perform(BringUp::Radio).await?;
        Ok::<_, StepError<HwError>>(Up { rail_mv, chip_id })
    })
}

/// Prints the outcome as a firmware would log it, and reduces it to the
/// report the scenario checks compare.
fn report(result: &BringUpResult) -> Report {
    let summary = match result {
        Ok(done) => done.summary(),
        Err(error) => error.summary(),
    };
    let mut steps = [Status::NotRun; 5];
    for (status, record) in steps.iter_mut().zip(summary.steps()) {
        // The full profile prints the library's summary lines; the compact
        // one what the hand-written bring-up prints, so that the library's
        // `Display` code is not linked (see README.md).
        #[cfg(feature = "error-text")]
        say!("  {}", record);
        #[cfg(not(feature = "error-text"))]
        say!("  #{} `{}` {}", record.index(), record.name().as_str(), record.status().as_str());
        *status = match record.status() {
            StepStatus::Completed => Status::Done,
            StepStatus::Failed => Status::Failed,
            StepStatus::RolledBack => Status::RolledBack,
            StepStatus::RollbackFailed => Status::RollbackFailed,
            _ => Status::NotRun,
        };
    }
    let outcome = match result {
        Ok(done) => {
            let up = done.value();
            say!("board up: rail {} mV, sensor {}", up.rail_mv, up.chip_id);
            Outcome::Up { rail_mv: up.rail_mv, chip_id: up.chip_id }
        }
        Err(error) => {
            #[cfg(feature = "error-text")]
            say!("{}", error);
            #[cfg(not(feature = "error-text"))]
            {
                let cause = error.cause();
                match cause.error() {
                    Some(hw) => say!("bring-up failed: step `{}`: {}", cause.step().as_str(), hw),
                    None => say!("bring-up failed: step `{}`: {}", cause.step().as_str(), cause.kind().as_str()),
                }
                say!(
                    "{}",
                    if error.is_partially_rolled_back() { "PARTIALLY rolled back" } else { "rolled back cleanly" }
                );
            }
            Outcome::Failed {
                step: error.cause().index(),
                timed_out: error.cause().is_timeout(),
                partial: error.is_partially_rolled_back(),
            }
        }
    };
    Report { outcome, steps }
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    firmware::init();
    let manager = TransactionManager::new(EmbassyClock).with_timeout(Duration::from_millis(50));

    // Measured, not run: the transaction's future is what the task stores
    // while the bring-up runs.
    say!("transaction future: {} bytes", firmware::future_size_of(bring_up));

    let passed = scenario::run_all(async |board| {
        // Kept in the task, across the `.await`, and read in place.
        let mut result = None;
        bring_up(&manager, board, &mut result).await;
        report(result.as_ref().expect("the transaction ended"))
    })
    .await;
    // Read before printing it: the print's own frames are not the
    // bring-up's. scripts/firmware.sh parses this line.
    let stack = firmware::stack::high_water_mark();
    say!("stack high-water mark: {} bytes (of {} reserved)", stack, firmware::stack::size());
    firmware::exit(passed)
}
