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
use firmware::board::{Board, Faults, HwError};
use firmware::say;
use firmware::scenario::{self, Outcome, Report, Status};
use transaction_manager::{
    Committed, EmbassyClock, Fixed, RetryPolicy, Rollback, StepError, StepStatus, TransactionError, TransactionManager,
};

/// How to undo each step that has a rollback: plain data, kept inline in
/// the transaction (no allocator).
enum Undo {
    RailOff,
    ReleaseBus,
    RadioOff,
}

impl Rollback<Board> for Undo {
    type Error = HwError;

    async fn rollback(&mut self, board: &mut Board) -> Result<(), HwError> {
        match self {
            Undo::RailOff => board.power.off().await,
            Undo::ReleaseBus => board.i2c.release().await,
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

type BringUp = Result<Committed<Up, Fixed<4>>, TransactionError<StepError<HwError>, HwError, Fixed<4>>>;

/// The transaction. The board is lent to each step and each rollback in
/// turn; the closures capture nothing and reach it through their argument.
fn bring_up<'a>(
    manager: &'a TransactionManager<EmbassyClock>,
    board: &'a mut Board,
) -> impl Future<Output = BringUp> + 'a {
    manager.transaction("bring-up").fixed::<Undo, 4>().run_with(board, async |tx| {
        let rail_mv = tx
            .step("power")
            .retry(POWER_RETRY)
            .execute_with(async |b: &mut Board| b.power.on().await)
            .undo(|_| Undo::RailOff)
            .await?;
        tx.step("i2c")
            .retry(BUS_RETRY)
            .execute_with(async |b: &mut Board| b.i2c.init().await)
            .undo(|_| Undo::ReleaseBus)
            .await?;
        // Reading an id changes nothing: no rollback.
        let chip_id = tx
            .step("sensor")
            .timeout(Duration::from_millis(20))
            .retry(BUS_RETRY)
            .run_with(async |b: &mut Board| b.sensor.probe().await)
            .await?;
        tx.step("radio")
            .retry(RADIO_RETRY)
            .execute_with(async |b: &mut Board| b.radio.start().await)
            .undo(|_| Undo::RadioOff)
            .await?;
        Ok::<_, StepError<HwError>>(Up { rail_mv, chip_id })
    })
}

/// Prints the outcome as a firmware would log it, and reduces it to the
/// report the scenario checks compare.
fn report(result: &BringUp) -> Report {
    let summary = match result {
        Ok(done) => done.summary(),
        Err(error) => error.summary(),
    };
    let mut steps = [Status::NotRun; 4];
    for (status, record) in steps.iter_mut().zip(summary.steps()) {
        say!("  {}", record);
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
            say!("{}", error);
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
    let mut board = Board::new(Faults::default());
    say!("transaction future: {} bytes", core::mem::size_of_val(&bring_up(&manager, &mut board)));

    let passed = scenario::run_all(async |board| report(&bring_up(&manager, board).await)).await;
    // Read before printing it: the print's own frames are not the
    // bring-up's. scripts/firmware.sh parses this line.
    let stack = firmware::stack::high_water_mark();
    say!("stack high-water mark: {} bytes (of {} reserved)", stack, firmware::stack::size());
    firmware::exit(passed)
}
