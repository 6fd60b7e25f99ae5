//! The bring-up journaled to flash, and a power cut at every write.
//!
//! The same four steps as `firmware` (src/main.rs), with a
//! `FlashJournal` (transaction-manager-flash): each step that switches
//! something on opts into uncertain rollback, so its undo record is on
//! flash before its first attempt and, after a power cut, the next boot
//! switches it off again even if the cut came before the step's `Done`.
//!
//! QEMU's mps2 boards have no writable NorFlash model, so the flash is a
//! RAM region (`FlashCell`, 3 KiB: 4 pages of 512 bytes for the records, 2
//! for the boot counter) that can lose power after any write. For every k
//! from 0 to the number of writes a clean bring-up makes, the firmware:
//!
//! 1. opens the journal and cuts the power after k more writes: the k+1-th
//!    write call never returns, the flash keeps exactly what was written,
//!    and the bring-up's future is dropped (the CPU stops);
//! 2. "reboots": a new journal and manager over the same flash contents
//!    (the peripherals keep their state, as external devices on their own
//!    supply would), and recovers;
//! 3. checks that, unless the commit reached the flash, every peripheral
//!    that was brought up is off again, switched off in reverse order
//!    (radio, bus, rail), and that a committed bring-up is left alone.
//!
//! It exits with status 0 only if every cut point passed.

#![no_std]
#![no_main]

use core::future::{Future, poll_fn};
use core::ops::Range;
use core::pin::pin;
use core::task::Poll;
use core::time::Duration;

use embassy_executor::Spawner;
use firmware::board::{Board, Faults, HwError};
use firmware::say;
use firmware::trace::{self, Event};
use transaction_manager::{
    Action, EmbassyClock, RetryPolicy, Rollback, StepError, TransactionManager,
    abandon::Unattended,
    journal::{Journaled, Postcard},
    step::Maybe,
    storage::Fixed,
};
use transaction_manager_flash::{FlashCell, FlashJournal, RamFlash};

/// How to undo each step that has a rollback: data, encoded by postcard
/// into the journal.
#[derive(serde::Serialize, serde::Deserialize)]
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

enum BringUp {
    Power,
    Bus,
    Sensor,
    Radio,
}

enum Done {
    Rail,
    Bus,
    Chip,
    Radio,
}

impl Action<Board> for BringUp {
    type Output = Done;
    type Error = HwError;
    type Undo = Undo;

    async fn execute(&mut self, board: &mut Board) -> Result<Done, HwError> {
        match self {
            BringUp::Power => board.power.on().await.map(|_| Done::Rail),
            BringUp::Bus => board.i2c.init().await.map(|()| Done::Bus),
            BringUp::Sensor => board.sensor.probe().await.map(|_| Done::Chip),
            BringUp::Radio => board.radio.start().await.map(|()| Done::Radio),
        }
    }

    // Uncertain too: a cut between switching on and the `Done` reaching
    // the flash must still switch off (each rollback is harmless on a
    // peripheral that is already off).
    fn undo(&self, _: Maybe<&Done>) -> Option<Undo> {
        match self {
            BringUp::Power => Some(Undo::RailOff),
            BringUp::Bus => Some(Undo::ReleaseBus),
            BringUp::Sensor => None,
            BringUp::Radio => Some(Undo::RadioOff),
        }
    }
}

/// The RAM flash: 4 pages of 512 bytes for the records, 2 for the meta map.
const PAGE: usize = 512;
const SIZE: usize = 6 * PAGE;
const RECORDS: Range<u32> = 0..(4 * PAGE) as u32;
const META: Range<u32> = (4 * PAGE) as u32..SIZE as u32;

/// One slot, records of at most 128 bytes.
type Journal<'c> = FlashJournal<RamFlash<'c, SIZE, PAGE>, 1, 128>;
type Manager<'c> = TransactionManager<EmbassyClock, (), Unattended, Journaled<Journal<'c>, Postcard<1>>>;

const RETRY: RetryPolicy = RetryPolicy::new().with_max_retries(1).with_initial_interval(Duration::from_millis(5));

fn bring_up<'a>(manager: &'a Manager<'_>, board: &'a mut Board) -> impl Future<Output = bool> + 'a {
    async move {
        manager
            .transaction("bring-up")
            .fixed::<Undo, 4>()
            .run_with(board, async |tx| {
                tx.step("power").retry(RETRY).perform(BringUp::Power).await?;
                tx.step("i2c").retry(RETRY).perform(BringUp::Bus).await?;
                tx.step("sensor").timeout(Duration::from_millis(20)).perform(BringUp::Sensor).await?;
                tx.step("radio").retry(RETRY).perform(BringUp::Radio).await?;
                Ok::<_, StepError<HwError>>(())
            })
            .await
            .is_ok()
    }
}

async fn open(cell: &FlashCell<SIZE>) -> Option<Manager<'_>> {
    match Journal::open(cell.flash::<PAGE>(), RECORDS, META).await {
        Ok(journal) => Some(
            TransactionManager::new(EmbassyClock)
                .with_timeout(Duration::from_millis(50))
                .with_journal(journal, transaction_manager::journal::Postcard::<1>),
        ),
        Err(_) => {
            say!("UNEXPECTED: the journal does not open");
            None
        }
    }
}

/// Runs the bring-up until it ends or the power is cut; `None` if cut.
async fn run_until_cut(manager: &Manager<'_>, board: &mut Board, cell: &FlashCell<SIZE>) -> Option<bool> {
    let mut run = pin!(bring_up(manager, board));
    poll_fn(|cx| {
        if cell.is_dead() {
            return Poll::Ready(None);
        }
        run.as_mut().poll(cx).map(Some)
    })
    .await
}

/// One cut point: bring-up cut after `cut` writes (never if `None`),
/// reboot, recover, check. Returns the writes a run made, and whether it
/// passed.
async fn cut_and_recover(cell: &FlashCell<SIZE>, cut: Option<u32>) -> (u32, bool) {
    let mut board = Board::new(Faults::default());
    trace::clear();
    let Some(manager) = open(cell).await else { return (0, false) };
    let before = cell.writes();
    if let Some(k) = cut {
        cell.cut_after_writes(k);
    }
    let outcome = run_until_cut(&manager, &mut board, cell).await;
    let writes = cell.writes() - before;
    cell.power_on();
    let up = (board.power.is_on(), board.i2c.is_up(), board.radio.is_up());
    let events_before = trace::len();

    // The next boot: a new journal and manager on the flash as it is.
    let Some(manager) = open(cell).await else { return (writes, false) };
    let report = match manager.recover::<Undo, Fixed<4>, _>(&mut board).await {
        Ok(report) => report,
        Err(_) => {
            say!("UNEXPECTED: recovery failed");
            return (writes, false);
        }
    };
    let left = (board.power.is_on(), board.i2c.is_up(), board.radio.is_up());
    // What recovery did, in order.
    let mut order = [0u8; 8];
    let mut n = 0;
    for i in events_before..trace::len() {
        if let (Some((event, _)), Some(slot)) = (trace::get(i), order.get_mut(n)) {
            *slot = event as u8;
            n += 1;
        }
    }
    let recovered = &order[..n];
    let committed = report.found() == 0 && recovered.is_empty() && up == (true, true, true);
    let reverse = [Event::RadioDown as u8, Event::BusDown as u8, Event::RailOff as u8];
    // Rollbacks in reverse order: a subsequence of radio, bus, rail.
    let mut expected = reverse.iter();
    let in_reverse_order = recovered.iter().all(|e| expected.any(|r| r == e));
    let all_off = left == (false, false, false);
    let passed = match cut {
        // Not cut: committed, nothing owed, everything left on.
        None => outcome == Some(true) && committed,
        // Cut: either the commit reached the flash and everything stays
        // on, or everything that came up is off again, in reverse order.
        Some(_) => committed || (all_off && in_reverse_order),
    };
    let verdict = if committed { "committed, left on" } else { "all off, in reverse order" };
    let unexpected = if passed { "" } else { " -- UNEXPECTED" };
    match cut {
        Some(k) => say!("cut after write {}: {} rollback(s) at recovery, {}{}", k, n, verdict, unexpected),
        None => say!("no cut: {} rollback(s) at recovery, {}{}", n, verdict, unexpected),
    }
    (writes, passed)
}

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    firmware::init();
    let cell = FlashCell::<SIZE>::new();
    {
        // Measured, not run (see `firmware::future_size`).
        let manager = open(&cell).await;
        let mut board = Board::new(Faults::default());
        if let Some(manager) = &manager {
            say!("transaction future: {} bytes", firmware::future_size(|| bring_up(manager, &mut board)));
            say!("flash journal: {} bytes", core::mem::size_of::<Journal<'_>>());
        }
    }
    let erases = cell.erases();
    let (total, clean) = cut_and_recover(&cell, None).await;
    say!("a bring-up makes {} flash writes; page erases so far: {}", total, cell.erases() - erases);
    let mut passed = clean;
    let mut runs = 0;
    for k in 0..total {
        let (_, ok) = cut_and_recover(&cell, Some(k)).await;
        passed &= ok;
        runs += 1;
    }
    say!("power cuts: {} cut points, {}", runs, if passed { "all recovered" } else { "SOME UNEXPECTED" });
    say!("page erases over {} bring-ups: {}", runs + 1, cell.erases() - erases);
    let stack = firmware::stack::high_water_mark();
    say!("stack high-water mark: {} bytes (of {} reserved)", stack, firmware::stack::size());
    firmware::exit(passed && runs > 0)
}
