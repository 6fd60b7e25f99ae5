//! A NorFlash in RAM that can lose power after any write, or in the middle
//! of one: for tests, and for firmware on boards without a writable flash
//! model (QEMU's mps2 boards).

use core::cell::{Cell, RefCell};
use core::fmt;

use embedded_storage_async::nor_flash::{ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash};

/// The contents and the power rail of a [`RamFlash`]: it outlives the
/// flash handles made from it, as a chip outlives a reboot.
///
/// Flash rules are kept: an erase sets a page to `0xFF`, a write can only
/// clear bits (the stored byte is `old & new`). Counters tell how many
/// writes, programmed words and page erases happened; a cut, set with
/// [`cut_after_writes`](FlashCell::cut_after_writes) or
/// [`cut_after_operations`](FlashCell::cut_after_operations), stops the
/// flash where a power cut would: every later call never returns (the
/// caller drops its future, as a dead CPU stops), and what was written
/// stays exactly as it is.
///
/// ```
/// use transaction_manager_flash::FlashCell;
/// let cell = FlashCell::<1024>::new();
/// assert!(cell.bytes().iter().all(|b| *b == 0xFF));
/// assert_eq!(cell.erases(), 0);
/// ```
pub struct FlashCell<const SIZE: usize> {
    bytes: RefCell<[u8; SIZE]>,
    writes: Cell<u32>,
    operations: Cell<u32>,
    erases: Cell<u32>,
    cut_at_write: Cell<Option<u32>>,
    cut_at_operation: Cell<Option<u32>>,
    dead: Cell<bool>,
}

impl<const SIZE: usize> Default for FlashCell<SIZE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SIZE: usize> FlashCell<SIZE> {
    /// An erased flash (every byte `0xFF`), powered.
    pub const fn new() -> Self {
        Self {
            bytes: RefCell::new([0xFF; SIZE]),
            writes: Cell::new(0),
            operations: Cell::new(0),
            erases: Cell::new(0),
            cut_at_write: Cell::new(None),
            cut_at_operation: Cell::new(None),
            dead: Cell::new(false),
        }
    }

    /// A handle implementing `NorFlash` with pages of `PAGE` bytes and
    /// 4-byte words.
    pub fn flash<const PAGE: usize>(&self) -> RamFlash<'_, SIZE, PAGE> {
        RamFlash { cell: self }
    }

    /// Loses power when `writes` more write or erase calls have completed:
    /// the next one changes nothing and never returns.
    pub fn cut_after_writes(&self, writes: u32) {
        self.cut_at_write.set(Some(self.writes.get() + writes));
    }

    /// Loses power when `operations` more words have been programmed or
    /// pages erased: the next word is torn (its first half programmed, the
    /// rest not), and the call it belongs to never returns.
    pub fn cut_after_operations(&self, operations: u32) {
        self.cut_at_operation.set(Some(self.operations.get() + operations));
    }

    /// Whether the power was cut.
    pub fn is_dead(&self) -> bool {
        self.dead.get()
    }

    /// Powers the flash again (a reboot), with its contents as the cut
    /// left them, and no cut pending.
    pub fn power_on(&self) {
        self.dead.set(false);
        self.cut_at_write.set(None);
        self.cut_at_operation.set(None);
    }

    /// Write and erase calls completed so far.
    pub fn writes(&self) -> u32 {
        self.writes.get()
    }

    /// Words programmed plus pages erased so far.
    pub fn operations(&self) -> u32 {
        self.operations.get()
    }

    /// Pages erased so far (the wear).
    pub fn erases(&self) -> u32 {
        self.erases.get()
    }

    /// A copy of the contents.
    pub fn bytes(&self) -> [u8; SIZE] {
        *self.bytes.borrow()
    }

    /// Replaces the contents (counters and power unchanged): to replay one
    /// flash image under several cuts.
    pub fn set_bytes(&self, bytes: &[u8; SIZE]) {
        *self.bytes.borrow_mut() = *bytes;
    }

    /// Starts one write or erase call: `false` if the power is (now) off.
    fn begin_call(&self) -> bool {
        if self.dead.get() || self.cut_at_write.get() == Some(self.writes.get()) {
            self.dead.set(true);
            return false;
        }
        true
    }

    /// Starts one word or page operation: `false` if the power is (now) off.
    fn begin_operation(&self) -> bool {
        if self.dead.get() || self.cut_at_operation.get() == Some(self.operations.get()) {
            self.dead.set(true);
            return false;
        }
        self.operations.set(self.operations.get() + 1);
        true
    }
}

/// A `NorFlash` over a [`FlashCell`]: pages of `PAGE` bytes, 4-byte
/// words, reads of any size.
///
/// ```
/// use embedded_storage_async::nor_flash::{NorFlash, ReadNorFlash};
/// use transaction_manager_flash::FlashCell;
/// let cell = FlashCell::<1024>::new();
/// let mut flash = cell.flash::<256>();
/// futures_lite::future::block_on(async {
///     flash.write(0, &[1, 2, 3, 4]).await.unwrap();
///     let mut out = [0u8; 4];
///     flash.read(0, &mut out).await.unwrap();
///     assert_eq!(out, [1, 2, 3, 4]);
///     flash.erase(0, 256).await.unwrap();
/// });
/// assert_eq!(cell.erases(), 1);
/// ```
pub struct RamFlash<'a, const SIZE: usize, const PAGE: usize> {
    cell: &'a FlashCell<SIZE>,
}

impl<'a, const SIZE: usize, const PAGE: usize> RamFlash<'a, SIZE, PAGE> {
    /// The cell this flash writes to.
    pub fn cell(&self) -> &'a FlashCell<SIZE> {
        self.cell
    }
}

/// Why a [`RamFlash`] call failed: out of bounds or not aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RamFlashError {
    /// The range is outside the flash.
    OutOfBounds,
    /// The offset or length is not a multiple of the word or page size.
    NotAligned,
}

impl fmt::Display for RamFlashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RamFlashError::OutOfBounds => "out of bounds",
            RamFlashError::NotAligned => "not aligned",
        })
    }
}

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            RamFlashError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            RamFlashError::NotAligned => NorFlashErrorKind::NotAligned,
        }
    }
}

impl<const SIZE: usize, const PAGE: usize> ErrorType for RamFlash<'_, SIZE, PAGE> {
    type Error = RamFlashError;
}

/// A call the power cut stopped: it never returns. It wakes its task at
/// every poll, so that the executor polls whatever races the transaction
/// against the cut (a dead CPU runs nothing; the simulation must notice it
/// and drop the transaction's future).
async fn dead() -> ! {
    core::future::poll_fn(|cx| {
        cx.waker().wake_by_ref();
        core::task::Poll::<()>::Pending
    })
    .await;
    unreachable!()
}

fn range(offset: u32, len: usize, size: usize) -> Result<core::ops::Range<usize>, RamFlashError> {
    let start = offset as usize;
    let end = start.checked_add(len).ok_or(RamFlashError::OutOfBounds)?;
    if end > size {
        return Err(RamFlashError::OutOfBounds);
    }
    Ok(start..end)
}

impl<const SIZE: usize, const PAGE: usize> ReadNorFlash for RamFlash<'_, SIZE, PAGE> {
    const READ_SIZE: usize = 1;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamFlashError> {
        if self.cell.dead.get() {
            dead().await
        }
        let at = range(offset, bytes.len(), SIZE)?;
        bytes.copy_from_slice(&self.cell.bytes.borrow()[at]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl<const SIZE: usize, const PAGE: usize> NorFlash for RamFlash<'_, SIZE, PAGE> {
    const WRITE_SIZE: usize = 4;
    const ERASE_SIZE: usize = PAGE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), RamFlashError> {
        if !(from as usize).is_multiple_of(PAGE) || !(to as usize).is_multiple_of(PAGE) || to < from {
            return Err(RamFlashError::NotAligned);
        }
        range(from, (to - from) as usize, SIZE)?;
        if !self.cell.begin_call() {
            dead().await
        }
        for page in (from as usize..to as usize).step_by(PAGE) {
            if !self.cell.begin_operation() {
                // Torn erase: half the page erased.
                self.cell.bytes.borrow_mut()[page..page + PAGE / 2].fill(0xFF);
                dead().await
            }
            self.cell.bytes.borrow_mut()[page..page + PAGE].fill(0xFF);
            self.cell.erases.set(self.cell.erases.get() + 1);
        }
        self.cell.writes.set(self.cell.writes.get() + 1);
        Ok(())
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamFlashError> {
        if !(offset as usize).is_multiple_of(4) || !bytes.len().is_multiple_of(4) {
            return Err(RamFlashError::NotAligned);
        }
        let at = range(offset, bytes.len(), SIZE)?;
        if !self.cell.begin_call() {
            dead().await
        }
        for (word, new) in at.step_by(4).zip(bytes.chunks(4)) {
            let torn = !self.cell.begin_operation();
            let count = if torn { 2 } else { 4 };
            for (old, new) in self.cell.bytes.borrow_mut()[word..word + count].iter_mut().zip(new) {
                *old &= *new;
            }
            if torn {
                dead().await
            }
        }
        self.cell.writes.set(self.cell.writes.get() + 1);
        Ok(())
    }
}
