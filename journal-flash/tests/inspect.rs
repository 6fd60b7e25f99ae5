//! The operator's view of a flash journal, on the host, over a copy of the
//! device's flash: the transactions recovery would roll back, with their
//! steps and undo records (a finished one is cleared from flash by then).

use std::time::Duration;

use futures_lite::future;
use transaction_manager::journal::inspect::{self, Filter, StepState, TransactionState};
use transaction_manager::journal::{Journal as _, Postcard};
use transaction_manager::{ManualClock, Rollback, StepError, TransactionManager};
use transaction_manager_flash::{FlashCell, FlashJournal};

const PAGE: usize = 512;
const SIZE: usize = 6 * PAGE;
const RECORDS: core::ops::Range<u32> = 0..(4 * PAGE) as u32;
const META: core::ops::Range<u32> = (4 * PAGE) as u32..SIZE as u32;

type Journal<'c> = FlashJournal<transaction_manager_flash::RamFlash<'c, SIZE, PAGE>, 2>;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Undo {
    RailOff(u8),
    ReleaseBus,
}

impl Rollback<()> for Undo {
    type Error = &'static str;

    async fn rollback(&mut self, _: &mut ()) -> Result<(), &'static str> {
        Ok(())
    }
}

#[test]
fn a_copy_of_the_flash_lists_what_recovery_would_roll_back() {
    let clock = ManualClock::new();
    let device = FlashCell::<SIZE>::new();
    let journal: Journal<'_> = clock.block_on(FlashJournal::open(device.flash::<PAGE>(), RECORDS, META)).unwrap();
    let manager = TransactionManager::new(&clock).with_journal(&journal, Postcard::<1>);
    let bring_up = async |hang: bool| {
        let mut id = None;
        let _ = manager
            .transaction("bring-up")
            .fixed::<Undo, 3>()
            .run(async |tx| {
                id = Some(tx.id());
                tx.step("power").execute(|| async { Ok::<_, &str>(3) }).undo(|rail| Undo::RailOff(*rail)).await?;
                tx.step("bus").execute(|| async { Ok::<_, &str>(()) }).undo(|_| Undo::ReleaseBus).await?;
                if hang {
                    // The power goes while the radio comes up.
                    clock.sleep(Duration::from_secs(3600)).await;
                }
                Ok::<_, StepError<&str>>(())
            })
            .await;
        id.unwrap()
    };
    let committed = clock.block_on(bring_up(false));
    let mut cut = Box::pin(bring_up(true));
    assert!(clock.block_on(future::poll_once(&mut cut)).is_none(), "hangs in its third step");
    drop(cut);

    // On the host: the device's flash, read out, in a flash of our own.
    let copy = FlashCell::<SIZE>::new();
    copy.set_bytes(&device.bytes());
    let read: Journal<'_> = clock.block_on(FlashJournal::open(copy.flash::<PAGE>(), RECORDS, META)).unwrap();
    let found = clock.block_on(inspect::list(&read, &Filter::new())).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let cut = &found[0];
    assert_ne!(cut.id, committed);
    assert_eq!((cut.operation.as_deref(), cut.state), (Some("bring-up"), TransactionState::Running));
    let steps: Vec<_> = cut.steps.iter().map(|s| (s.index, s.name.as_deref(), s.state)).collect();
    assert_eq!(steps, [(0, Some("power"), StepState::Done), (1, Some("bus"), StepState::Done)]);
    // The undo records as the codec wrote them (postcard: bytes, not text).
    assert_eq!(cut.steps[0].undo.as_deref(), Some(&[0, 3][..]));
    assert_eq!(cut.steps[1].undo.as_deref(), Some(&[1][..]));
    assert_eq!(cut.steps[0].key.origin(), read.origin());
    assert!(cut.started_at.is_none(), "flash keeps no times");
    assert_eq!(clock.block_on(inspect::history(&read, committed)).unwrap(), None);
}
