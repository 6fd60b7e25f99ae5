//! The journal on NorFlash: one map of records (sequential-storage), one
//! map for the boot counter and the clear generation.

use core::cell::{Cell, RefCell, RefMut};
use core::fmt;
use core::future::poll_fn;
use core::ops::Range;
use core::task::Poll;

use embedded_storage_async::nor_flash::NorFlash;
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::map::{MapConfig, MapStorage, SerializationError, Value};
use transaction_manager_core::backend::{Browse, Entry, EntryKind, Journal, StoredEntry, TransactionId};

/// The key of a transaction's own record within its slot.
const TRANSACTION: u8 = 0;
/// The key of a stuck transaction's reason within its slot.
const STUCK_NOTE: u8 = 255;
/// The highest step index a record can have (keys 1 to 254 are steps 0 to 253).
pub const MAX_STEP: u32 = 253;
/// The meta map's only key (a `u16` like the records' keys: one copy of
/// sequential-storage's map code serves both).
const META: u16 = 0;
/// Bytes of a record before the entry's payload: generation, id, kind.
const HEADER: usize = 4 + 8 + 1;

type Uncache<K> = Cache<Uncached, Uncached, Uncached, K>;
/// A map of keys `K` over a borrowed flash, without a cache.
type Map<'a, K, S> = MapStorage<K, &'a mut S, Uncache<K>>;

/// A [`Journal`] on microcontroller flash (any `embedded-storage-async`
/// `NorFlash`), through [sequential-storage](https://docs.rs/sequential-storage)'s
/// map: power-fail safe items with a CRC, no allocator, no
/// `MultiwriteNorFlash` needed.
///
/// **Layout.** Two ranges of whole pages, at least two pages each: the
/// *records* (what transactions write) and the *meta* range (a boot
/// counter and a clear generation, written once per boot and once per
/// clear). A transaction takes one of `SLOTS` slots when it begins (more
/// transactions at once than slots: `Begin` fails with
/// [`FlashJournalError::NoFreeSlot`]), and each step has one key in its
/// slot that is overwritten as the step moves intent → done → undone, so
/// the map holds at most `SLOTS × (steps + 2)` live items. When no
/// transaction is unfinished and the records written since the last clear
/// fill all but one and a half pages of the records range (before
/// sequential-storage would erase a page itself), the journal *clears* it:
/// it raises the generation in the meta range first, then erases the pages
/// that are not blank; records of an older generation are ignored, so an
/// erase cut halfway cannot bring an old transaction back.
///
/// **Guarantees** (the [`Journal`] MUST list):
/// - every `append` that returns `Ok` is on flash (all entries, not only
///   durable ones: there is no buffer), and an append cut or cancelled
///   halfway leaves its record either there or not, never half-read
///   (sequential-storage's CRC and repair);
/// - ids are unique across boots: `boot << 32 | n`, the boot counter kept
///   in the meta range and raised by [`open`](FlashJournal::open);
/// - [`read`](Journal::read) hands back the transaction's record, then each
///   step's latest state (`Intent` replaced by `Done`, `Done` by `Undone`,
///   `Intent` by `Released`), in the order the steps were first appended
///   (their index order: journaled steps run one after another), then a
///   `Stuck` reason. An `UndoFailed` is not written: it changes nothing
///   for recovery, which tries the step's owed rollback again, exactly as
///   it does with the `Done` that stays;
/// - one decision per transaction: the transaction's own record is read
///   before `Committed` or `Aborted` is written over it, and a decision
///   for a transaction whose record holds the other one is refused
///   ([`FlashJournalError::AlreadyDecided`]). `Aborted` replaces `Begin`
///   (the operation's name is then not shown by recovery), and
///   `RolledBack` replaces `Aborted`. After a commit, the record is found
///   until the next clear of the records range (when no transaction is
///   unfinished and the range is nearly full): an `Aborted` appended after
///   that clear fails with `UnknownTransaction`, not `AlreadyDecided`, and
///   the engine reports the outcome unknown (recovery finds the
///   transaction ended);
/// - a write the flash refuses is an `Err`, never a silent loss.
///
/// `BUF` is the buffer one record is built and read in: the longest
/// entry's payload (an undo record: 36 bytes, the step name and the
/// encoded undo value) plus 32. The journal is not `Sync`: one executor
/// (an embassy task, a single-threaded runtime) uses it.
///
/// ```
/// use transaction_manager::{ManualClock, TransactionManager, journal::Postcard, storage::Unbounded};
/// use transaction_manager_flash::{FlashCell, FlashJournal};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum Undo { RailOff }
/// # impl transaction_manager::Rollback<()> for Undo {
/// #     type Error = core::convert::Infallible;
/// #     async fn rollback(&mut self, _: &mut ()) -> Result<(), Self::Error> { Ok(()) }
/// # }
///
/// let cell = FlashCell::<{ 4 * 1024 }>::new();            // a RAM flash here; a real NorFlash on a board
/// futures_lite::future::block_on(async {
///     let journal = FlashJournal::<_>::open(cell.flash::<1024>(), 0..2048, 2048..4096).await.unwrap();
///     let clock = ManualClock::new();
///     let manager = TransactionManager::new(&clock).with_journal(journal, Postcard::<1>);
///     let report = manager.recover::<Undo, Unbounded, _>(&mut ()).await.unwrap();   // first thing at boot
///     assert_eq!(report.found(), 0);
/// });
/// ```
pub struct FlashJournal<S: NorFlash, const SLOTS: usize = 1, const BUF: usize = 256> {
    state: RefCell<State<S, SLOTS, BUF>>,
    boot: u32,
    next: Cell<u32>,
    origin: u64,
}

struct State<S, const SLOTS: usize, const BUF: usize> {
    flash: S,
    records: Range<u32>,
    meta: Range<u32>,
    buf: [u8; BUF],
    slots: [Option<TransactionId>; SLOTS],
    generation: u32,
    boot: u32,
    /// Bytes stored in the records range since it was last cleared.
    written: u32,
    /// A clear was cut or cancelled while writing the new generation: the
    /// one on flash is read again before the next record is written.
    generation_unsure: bool,
}

/// Why a [`FlashJournal`] call failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum FlashJournalError<E> {
    /// The flash or sequential-storage failed (a flash error, a full range,
    /// corruption it could not repair).
    Storage(sequential_storage::Error<E>),
    /// A range is not whole pages, or shorter than two pages.
    Config,
    /// A transaction began while every slot held an unfinished one
    /// (recover, or resolve a stuck one, or use more slots).
    NoFreeSlot,
    /// An entry for a transaction that does not hold a slot.
    UnknownTransaction(TransactionId),
    /// A step index above [`MAX_STEP`].
    StepOutOfRange(u32),
    /// The boot counter reached `u32::MAX`.
    BootsExhausted,
    /// A decision (`Committed` or `Aborted`) was refused: the transaction's
    /// record holds the other one, and the first decision stays. Nothing
    /// was written. [`Journal::decided`] returns `held`.
    AlreadyDecided {
        /// The transaction.
        transaction: TransactionId,
        /// The decision its record holds.
        held: EntryKind,
    },
}

impl<E: fmt::Debug> fmt::Display for FlashJournalError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlashJournalError::Storage(error) => write!(f, "flash storage: {error:?}"),
            FlashJournalError::Config => f.write_str("a flash range is not at least two whole pages"),
            FlashJournalError::NoFreeSlot => f.write_str("every journal slot holds an unfinished transaction"),
            FlashJournalError::UnknownTransaction(id) => write!(f, "{id} holds no journal slot"),
            FlashJournalError::StepOutOfRange(step) => write!(f, "step #{step} is above the journal's {MAX_STEP}"),
            FlashJournalError::BootsExhausted => f.write_str("the boot counter is exhausted"),
            FlashJournalError::AlreadyDecided { transaction, held } => {
                write!(f, "{transaction} is already decided: the journal holds `{held}`")
            }
        }
    }
}

impl<E: fmt::Debug> core::error::Error for FlashJournalError<E> {}

impl<E> From<sequential_storage::Error<E>> for FlashJournalError<E> {
    fn from(error: sequential_storage::Error<E>) -> Self {
        FlashJournalError::Storage(error)
    }
}

/// A record as stored: generation, transaction id, kind code, the entry's
/// payload.
struct Record<'a> {
    generation: u32,
    id: u64,
    kind: u8,
    /// The serialized length, once serialized (for the clear's estimate).
    len: Cell<usize>,
    entry: &'a Entry<'a>,
}

impl<'a> Value<'a> for Record<'_> {
    fn serialize_into(&self, buffer: &mut [u8]) -> Result<usize, SerializationError> {
        let header = buffer.get_mut(..HEADER).ok_or(SerializationError::BufferTooSmall)?;
        header[..4].copy_from_slice(&self.generation.to_le_bytes());
        header[4..12].copy_from_slice(&self.id.to_le_bytes());
        header[12] = self.kind;
        let rest = &mut buffer[HEADER..];
        let len = self.entry.write_payload(rest).map_err(|error| match error {
            transaction_manager_core::backend::CodecError::BufferTooSmall => SerializationError::BufferTooSmall,
            _ => SerializationError::InvalidData,
        })?;
        self.len.set(HEADER + len);
        Ok(HEADER + len)
    }

    fn deserialize_from(_: &'a [u8]) -> Result<(Self, usize), SerializationError> {
        // Records are read as bytes (`parse`).
        Err(SerializationError::InvalidFormat)
    }
}

/// A stored record, read back.
struct Stored<'a> {
    generation: u32,
    id: u64,
    kind: u8,
    payload: &'a [u8],
}

fn parse(bytes: &[u8]) -> Option<Stored<'_>> {
    if bytes.len() < HEADER {
        return None;
    }
    Some(Stored {
        generation: u32::from_le_bytes(bytes[..4].try_into().ok()?),
        id: u64::from_le_bytes(bytes[4..12].try_into().ok()?),
        kind: bytes[12],
        payload: &bytes[HEADER..],
    })
}

fn key(slot: usize, sub: u8) -> u16 {
    (slot as u16) << 8 | u16::from(sub)
}

/// Waits until no other call holds the state: calls of one journal may
/// interleave on one executor (two transactions at once); each holds the
/// state for its whole flash operation.
async fn lock<T>(cell: &RefCell<T>) -> RefMut<'_, T> {
    poll_fn(|cx| match cell.try_borrow_mut() {
        Ok(state) => Poll::Ready(state),
        Err(_) => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// A sequential-storage map over `range`, without a cache: the journal's
/// operations are few and small, and a cache would cost RAM per page.
fn map<'a, K: sequential_storage::map::Key, S: NorFlash>(
    flash: &'a mut S,
    range: &Range<u32>,
) -> Result<Map<'a, K, S>, FlashJournalError<S::Error>> {
    let config = MapConfig::try_new(range.clone()).map_err(|_| FlashJournalError::Config)?;
    Ok(MapStorage::new(flash, config, Cache::new_uncached()))
}

impl<S: NorFlash, const SLOTS: usize, const BUF: usize> State<S, SLOTS, BUF> {
    async fn read_meta(&mut self) -> Result<(u32, u32), FlashJournalError<S::Error>> {
        let mut map = map::<u16, S>(&mut self.flash, &self.meta)?;
        Ok(match map.fetch_item::<&[u8]>(&mut self.buf, &META).await? {
            Some(bytes) if bytes.len() == 8 => (
                u32::from_le_bytes(bytes[..4].try_into().unwrap_or_default()),
                u32::from_le_bytes(bytes[4..].try_into().unwrap_or_default()),
            ),
            _ => (0, 0),
        })
    }

    async fn write_meta(&mut self, boot: u32, generation: u32) -> Result<(), FlashJournalError<S::Error>> {
        let mut map = map::<u16, S>(&mut self.flash, &self.meta)?;
        let mut value = [0u8; 8];
        value[..4].copy_from_slice(&boot.to_le_bytes());
        value[4..].copy_from_slice(&generation.to_le_bytes());
        map.store_item(&mut self.buf, &META, &&value[..]).await?;
        Ok(())
    }

    async fn store(&mut self, key: u16, record: &Record<'_>) -> Result<(), FlashJournalError<S::Error>> {
        let mut map = map::<u16, S>(&mut self.flash, &self.records)?;
        map.store_item(&mut self.buf, &key, record).await?;
        // The item: its header and CRC (8 bytes with 4-byte words), the
        // key, the record, padded to a word.
        let item = 8 + 2 + record.len.get() as u32;
        self.written = self.written.saturating_add(item.next_multiple_of(4));
        Ok(())
    }

    /// The record of `key`, if it belongs to this generation, parsed into
    /// `self.buf`.
    async fn fetch(&mut self, key: u16) -> Result<Option<Stored<'_>>, FlashJournalError<S::Error>> {
        let generation = self.generation;
        let mut map = map::<u16, S>(&mut self.flash, &self.records)?;
        let found = map.fetch_item::<&[u8]>(&mut self.buf, &key).await?;
        Ok(found.and_then(parse).filter(|record| record.generation == generation))
    }

    /// Reads the generation back from flash after a clear that did not
    /// finish (cancelled, or failed): records must carry the generation
    /// the next boot will find.
    async fn settle_generation(&mut self) -> Result<(), FlashJournalError<S::Error>> {
        if self.generation_unsure {
            let (_, generation) = self.read_meta().await?;
            self.generation = generation;
            self.generation_unsure = false;
        }
        Ok(())
    }

    fn slot_of(&self, id: TransactionId) -> Option<usize> {
        self.slots.iter().position(|slot| *slot == Some(id))
    }

    /// The kind of transaction `id`'s own record, in `slot` or (a
    /// transaction that ended, whose slot is free) in any slot.
    async fn own_kind(
        &mut self,
        id: TransactionId,
        slot: Option<usize>,
    ) -> Result<Option<u8>, FlashJournalError<S::Error>> {
        for at in slot.map_or(0..SLOTS, |slot| slot..slot + 1) {
            if let Some(record) = self.fetch(key(at, TRANSACTION)).await? {
                if record.id == id.get() {
                    return Ok(Some(record.kind));
                }
            }
        }
        Ok(None)
    }

    /// Erases the records range when nothing is unfinished and all but one
    /// and a half of its pages have been written: the generation goes up
    /// first, so an erase cut halfway leaves only records the journal
    /// ignores.
    async fn clear_if_idle(&mut self) -> Result<(), FlashJournalError<S::Error>> {
        // Before sequential-storage must erase a page itself: it keeps one
        // page free.
        let page = S::ERASE_SIZE as u32;
        let threshold = (self.records.end - self.records.start).saturating_sub(page + page / 2);
        if self.slots.iter().any(Option::is_some) || self.written < threshold {
            return Ok(());
        }
        let mut first = true;
        let mut at = self.records.start;
        while at < self.records.end {
            if !self.page_is_blank(at).await? {
                if first {
                    first = false;
                    let next = self.generation.wrapping_add(1);
                    // Dropped halfway, this write may or may not be on
                    // flash: until it returns, the generation is read back.
                    self.generation_unsure = true;
                    self.write_meta(self.boot, next).await?;
                    self.generation = next;
                    self.generation_unsure = false;
                }
                self.flash
                    .erase(at, at + page)
                    .await
                    .map_err(|value| FlashJournalError::Storage(sequential_storage::Error::Storage { value }))?;
            }
            at += page;
        }
        self.written = 0;
        Ok(())
    }

    async fn page_is_blank(&mut self, page: u32) -> Result<bool, FlashJournalError<S::Error>> {
        let end = page + S::ERASE_SIZE as u32;
        let chunk = (BUF / S::READ_SIZE.max(1) * S::READ_SIZE.max(1)).max(1) as u32;
        let mut at = page;
        while at < end {
            let len = chunk.min(end - at) as usize;
            self.flash
                .read(at, &mut self.buf[..len])
                .await
                .map_err(|value| FlashJournalError::Storage(sequential_storage::Error::Storage { value }))?;
            if self.buf[..len].iter().any(|byte| *byte != 0xFF) {
                return Ok(false);
            }
            at += len as u32;
        }
        Ok(true)
    }
}

impl<S: NorFlash, const SLOTS: usize, const BUF: usize> FlashJournal<S, SLOTS, BUF> {
    /// Opens the journal kept in `records` and `meta` (flash addresses,
    /// whole pages, at least two each, not overlapping) — at boot, before
    /// [`recover`](transaction_manager_core::TransactionManager::recover).
    /// Raises the boot counter (one small write), and finds the
    /// unfinished transactions. A blank flash is an empty journal.
    pub async fn open(flash: S, records: Range<u32>, meta: Range<u32>) -> Result<Self, FlashJournalError<S::Error>> {
        MapConfig::<S>::try_new(records.clone()).map_err(|_| FlashJournalError::Config)?;
        MapConfig::<S>::try_new(meta.clone()).map_err(|_| FlashJournalError::Config)?;
        if records.start < meta.end && meta.start < records.end {
            return Err(FlashJournalError::Config);
        }
        let mut state = State {
            flash,
            written: 0,
            records,
            meta,
            buf: [0; BUF],
            slots: [None; SLOTS],
            generation: 0,
            boot: 0,
            generation_unsure: false,
        };
        let (boot, generation) = state.read_meta().await?;
        let boot = boot.checked_add(1).ok_or(FlashJournalError::BootsExhausted)?;
        state.write_meta(boot, generation).await?;
        state.boot = boot;
        state.generation = generation;
        // What is written since the last clear, to the page: the records
        // range is written from its start.
        state.written = 0;
        let mut page = state.records.start;
        while page < state.records.end {
            if !state.page_is_blank(page).await? {
                state.written += S::ERASE_SIZE as u32;
            }
            page += S::ERASE_SIZE as u32;
        }
        for slot in 0..SLOTS {
            let unfinished = match state.fetch(key(slot, TRANSACTION)).await? {
                Some(record) if !EntryKind::from_code(record.kind).is_some_and(EntryKind::ends_transaction) => {
                    Some(TransactionId::new(record.id))
                }
                _ => None,
            };
            state.slots[slot] = unfinished;
        }
        Ok(Self { state: RefCell::new(state), boot, next: Cell::new(1), origin: 0 })
    }

    /// Sets the journal's [`origin`](Journal::origin), which every
    /// idempotency key of its transactions carries: a value unique to the
    /// device and the same at every boot, such as the chip's unique id
    /// (the flash journal has no random source and keeps nothing for it in
    /// the meta range). Without it the origin is 0, and two devices hand
    /// out the same keys (`tx-1.1.0-0000000000000000`): set it on every
    /// device whose keys reach a shared API.
    ///
    /// ```
    /// # use transaction_manager::journal::Journal;
    /// # use transaction_manager_flash::FlashJournal;
    /// # fn chip_unique_id() -> u64 { 0x1234 }
    /// # async fn example<S: embedded_storage_async::nor_flash::NorFlash>(flash: S) {
    /// let journal = FlashJournal::<_>::open(flash, 0..8192, 8192..16384).await.unwrap().with_origin(chip_unique_id());
    /// assert_eq!(journal.origin(), 0x1234);
    /// # }
    /// ```
    #[must_use]
    pub fn with_origin(mut self, origin: u64) -> Self {
        self.origin = origin;
        self
    }

    /// This boot's number (1 on a blank flash), the high half of every id
    /// given out since [`open`](FlashJournal::open).
    pub fn boot(&self) -> u32 {
        self.boot
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> S {
        self.state.into_inner().flash
    }
}

/// The transactions a flash journal holds are its unfinished ones: it
/// clears what is over by itself (it has no retention to set), so the
/// operator's view of a flash journal — on the device, or on the host over
/// a copy of its flash (`FlashCell::set_bytes`) — lists the transactions
/// recovery would roll back, with their steps and undo records. No times:
/// flash keeps none.
impl<S: NorFlash, const SLOTS: usize, const BUF: usize> Browse for FlashJournal<S, SLOTS, BUF> {
    /// Every transaction it holds is unfinished.
    async fn next_transaction(
        &self,
        after: Option<TransactionId>,
        _: bool,
    ) -> Result<Option<TransactionId>, Self::Error> {
        self.next_unfinished(after).await
    }

    async fn previous_transaction(
        &self,
        before: Option<TransactionId>,
        _: bool,
    ) -> Result<Option<TransactionId>, Self::Error> {
        let state = lock(&self.state).await;
        Ok(state.slots.iter().flatten().copied().filter(|id| before.is_none_or(|before| *id < before)).max())
    }
}

impl<S: NorFlash, const SLOTS: usize, const BUF: usize> Journal for FlashJournal<S, SLOTS, BUF> {
    type Error = FlashJournalError<S::Error>;

    fn next_id(&self) -> TransactionId {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        TransactionId::new(u64::from(self.boot) << 32 | u64::from(n))
    }

    /// The value given to [`with_origin`](FlashJournal::with_origin), 0
    /// without one.
    fn origin(&self) -> u64 {
        self.origin
    }

    // Holding the state across the flash operation is the point: it is
    // this journal's lock (see `lock`).
    #[allow(clippy::await_holding_refcell_ref)]
    async fn append(&self, entry: &Entry<'_>) -> Result<(), Self::Error> {
        let mut state = lock(&self.state).await;
        let state = &mut *state;
        state.settle_generation().await?;
        let id = entry.transaction();
        let kind = entry.kind();
        // One decision per transaction: the record is read before a
        // decision is written over it (the state is this journal's lock, so
        // nothing comes in between).
        let other = match kind {
            EntryKind::Committed => Some(EntryKind::Aborted),
            EntryKind::Aborted => Some(EntryKind::Committed),
            _ => None,
        };
        if let Some(other) = other {
            let held = state.own_kind(id, state.slot_of(id)).await?;
            if held == Some(other.code()) {
                return Err(FlashJournalError::AlreadyDecided { transaction: id, held: other });
            }
        }
        let slot = match (kind, state.slot_of(id)) {
            (_, Some(slot)) => slot,
            (EntryKind::Begin, None) => {
                let free = state.slots.iter().position(Option::is_none).ok_or(FlashJournalError::NoFreeSlot)?;
                // Taken before the write: a Begin cut halfway leaves a
                // transaction that recovery finds (and ends) either way.
                state.slots[free] = Some(id);
                free
            }
            // Ended already (or never begun): nothing is owed.
            (EntryKind::Committed | EntryKind::RolledBack | EntryKind::Resolved, None) => return Ok(()),
            (_, None) => return Err(FlashJournalError::UnknownTransaction(id)),
        };
        let sub = match (entry.step(), kind) {
            (_, EntryKind::Stuck) => STUCK_NOTE,
            (None, _) => TRANSACTION,
            // Recovery tries the owed rollback again either way: keep `Done`.
            (Some(_), EntryKind::UndoFailed) => return Ok(()),
            (Some(step), _) if step > MAX_STEP => return Err(FlashJournalError::StepOutOfRange(step)),
            (Some(step), _) => step as u8 + 1,
        };
        let record = Record { generation: state.generation, id: id.get(), kind: kind.code(), len: Cell::new(0), entry };
        let stored = state.store(key(slot, sub), &record).await;
        if let Err(error) = stored {
            if kind == EntryKind::Begin {
                state.slots[slot] = None;
            }
            return Err(error);
        }
        if kind.ends_transaction() {
            state.slots[slot] = None;
            // The entry is on flash: a clear that fails is only put off to
            // the next idle moment (`written` stays), not a failed append.
            let _ = state.clear_if_idle().await;
        }
        Ok(())
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error> {
        let state = lock(&self.state).await;
        Ok(state.slots.iter().flatten().copied().filter(|id| after.is_none_or(|after| *id > after)).min())
    }

    fn decided(error: &Self::Error) -> Option<EntryKind> {
        match error {
            FlashJournalError::AlreadyDecided { held, .. } => Some(*held),
            _ => None,
        }
    }

    #[allow(clippy::await_holding_refcell_ref)]
    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error> {
        let mut state = lock(&self.state).await;
        let state = &mut *state;
        state.settle_generation().await?;
        let slot = match state.slot_of(id) {
            Some(slot) => slot,
            None => {
                let mut found = None;
                for slot in 0..SLOTS {
                    if state.fetch(key(slot, TRANSACTION)).await?.is_some_and(|record| record.id == id.get()) {
                        found = Some(slot);
                        break;
                    }
                }
                match found {
                    Some(slot) => slot,
                    None => return Ok(()),
                }
            }
        };
        // Which step keys the slot has (of any transaction and version).
        let mut present = [0u32; 8];
        {
            let mut map = map::<u16, S>(&mut state.flash, &state.records)?;
            let buf = &mut state.buf;
            let mut items = map.fetch_all_items(buf).await?;
            while let Some((key, _)) = items.next::<&[u8]>(buf).await? {
                if usize::from(key >> 8) == slot {
                    let sub = (key & 0xFF) as u8;
                    present[usize::from(sub / 32)] |= 1 << (sub % 32);
                }
            }
        }
        let has = |sub: u8| present[usize::from(sub / 32)] & (1 << (sub % 32)) != 0;
        let mut visit_record = |sub: u8, record: &Stored<'_>| {
            let step = match sub {
                TRANSACTION | STUCK_NOTE => None,
                sub => Some(u32::from(sub) - 1),
            };
            visit(StoredEntry { step, kind: record.kind, payload: record.payload });
        };
        for sub in 0..=STUCK_NOTE {
            if !has(sub) {
                continue;
            }
            if let Some(record) = state.fetch(key(slot, sub)).await? {
                if record.id == id.get() {
                    visit_record(sub, &record);
                }
            }
        }
        Ok(())
    }
}

impl<S: NorFlash, const SLOTS: usize, const BUF: usize> fmt::Debug for FlashJournal<S, SLOTS, BUF> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlashJournal").field("boot", &self.boot).finish_non_exhaustive()
    }
}
