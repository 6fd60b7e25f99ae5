//! What a journal stores: entries (a transaction's id, a step's index,
//! a kind and a payload) and the payload format the core writes and reads.

use crate::durable::codec::{CodecError, FORMAT};
use crate::{durable::id::TransactionId, timing::retry::RetryPolicy};
use core::fmt;
use core::time::Duration;

/// The kinds of journal entries, in the order a transaction writes them.
///
/// The number of each kind ([`EntryKind::code`]) is part of the journal
/// format: backends store it, and it never changes.
///
/// ```
/// use transaction_manager::journal::EntryKind;
/// assert_eq!(EntryKind::from_code(EntryKind::Done.code()), Some(EntryKind::Done));
/// assert!(EntryKind::Done.is_durable());
/// assert!(!EntryKind::Undone.is_durable());
/// assert!(EntryKind::Committed.ends_transaction());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// The transaction started (payload: its operation name).
    Begin,
    /// A step that opted into uncertain rollback is about to make its first
    /// attempt (payload: its uncertain undo record). Durable.
    Intent,
    /// A step completed (payload: its undo record). Durable before the
    /// step's value returns to the body.
    Done,
    /// A step's uncertain undo record is not owed: every attempt failed
    /// cleanly.
    Released,
    /// A step was rolled back.
    Undone,
    /// A step's rollback failed for good.
    UndoFailed,
    /// The transaction committed. Durable before `run` returns `Ok`.
    Committed,
    /// The transaction ended rolled back (payload: `1` if every rollback
    /// succeeded, `0` if some failed).
    RolledBack,
    /// Recovery could not roll the transaction back (payload: why, as
    /// text): an undo record that cannot be decoded, or more owed
    /// rollbacks than the recovery's storage holds. It stays unfinished
    /// until a later recovery can roll it back or an operator resolves it.
    Stuck,
    /// An operator resolved a stuck transaction by hand.
    Resolved,
    /// The transaction will not commit: its `Committed` entry could not be
    /// written, and its completed steps are about to be rolled back.
    /// Durable before the first rollback, so that the journal holds one
    /// decision (`Committed` or `Aborted`, whichever came first: see
    /// [`Journal::decided`](crate::journal::Journal::decided)) before anything acts on it. It does not end
    /// the transaction: the rollbacks are still owed, and recovery rolls
    /// back a transaction that holds it.
    Aborted,
}

impl EntryKind {
    /// Every kind, in code order.
    pub const ALL: [EntryKind; 11] = [
        EntryKind::Begin,
        EntryKind::Intent,
        EntryKind::Done,
        EntryKind::Released,
        EntryKind::Undone,
        EntryKind::UndoFailed,
        EntryKind::Committed,
        EntryKind::RolledBack,
        EntryKind::Stuck,
        EntryKind::Resolved,
        EntryKind::Aborted,
    ];

    /// The kind's number in the journal format (1 to 11).
    pub const fn code(self) -> u8 {
        match self {
            EntryKind::Begin => 1,
            EntryKind::Intent => 2,
            EntryKind::Done => 3,
            EntryKind::Released => 4,
            EntryKind::Undone => 5,
            EntryKind::UndoFailed => 6,
            EntryKind::Committed => 7,
            EntryKind::RolledBack => 8,
            EntryKind::Stuck => 9,
            EntryKind::Resolved => 10,
            EntryKind::Aborted => 11,
        }
    }

    /// The kind with number `code`, if there is one.
    pub const fn from_code(code: u8) -> Option<EntryKind> {
        Some(match code {
            1 => EntryKind::Begin,
            2 => EntryKind::Intent,
            3 => EntryKind::Done,
            4 => EntryKind::Released,
            5 => EntryKind::Undone,
            6 => EntryKind::UndoFailed,
            7 => EntryKind::Committed,
            8 => EntryKind::RolledBack,
            9 => EntryKind::Stuck,
            10 => EntryKind::Resolved,
            11 => EntryKind::Aborted,
            _ => return None,
        })
    }

    /// Whether [`Journal::append`](crate::journal::Journal::append) must make the entry durable before it
    /// returns: `Intent`, `Done`, `Committed`, `Aborted`, `Stuck` and
    /// `Resolved`. The
    /// others may be written lazily: losing one only repeats an idempotent
    /// rollback at recovery.
    pub const fn is_durable(self) -> bool {
        matches!(
            self,
            EntryKind::Intent
                | EntryKind::Done
                | EntryKind::Committed
                | EntryKind::Aborted
                | EntryKind::Stuck
                | EntryKind::Resolved
        )
    }

    /// Whether the transaction is over once this entry is written
    /// (`Committed`, `RolledBack`, `Resolved`): recovery leaves it alone.
    /// (`Aborted` does not end it: its rollbacks are still owed.)
    pub const fn ends_transaction(self) -> bool {
        matches!(self, EntryKind::Committed | EntryKind::RolledBack | EntryKind::Resolved)
    }

    /// Whether the entry is a transaction's decision, `Committed` or
    /// `Aborted`: a journal holds at most one of the two per transaction,
    /// the first one appended (see [`Journal::decided`](crate::journal::Journal::decided)).
    pub const fn is_decision(self) -> bool {
        matches!(self, EntryKind::Committed | EntryKind::Aborted)
    }

    /// The kind's name, snake_case.
    pub const fn as_str(self) -> &'static str {
        match self {
            EntryKind::Begin => "begin",
            EntryKind::Intent => "intent",
            EntryKind::Done => "done",
            EntryKind::Released => "released",
            EntryKind::Undone => "undone",
            EntryKind::UndoFailed => "undo_failed",
            EntryKind::Committed => "committed",
            EntryKind::RolledBack => "rolled_back",
            EntryKind::Stuck => "stuck",
            EntryKind::Resolved => "resolved",
            EntryKind::Aborted => "aborted",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry a transaction appends to its journal.
///
/// A journal stores, per entry: the transaction's id, the step's index
/// (none for the transaction's own entries), the kind's
/// [`code`](EntryKind::code), and the payload bytes that
/// [`write_payload`](Entry::write_payload) produces. Entries are
/// idempotent: the same (transaction, step, kind) may be appended again
/// (a retried write, a repeated recovery), and keeping either copy is
/// right.
pub struct Entry<'a> {
    transaction: TransactionId,
    step: Option<u32>,
    kind: EntryKind,
    payload: Payload<'a>,
}

enum Payload<'a> {
    None,
    Text(&'a str),
    Byte(u8),
    Raw(&'a [u8]),
    Undo(&'a UndoPayload<'a>),
}

/// What the journal keeps of an owed rollback: everything recovery needs
/// to run it as the transaction would have.
pub(crate) struct UndoPayload<'a> {
    pub(crate) name: &'a str,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) schema: u32,
    pub(crate) undo: &'a (dyn Fn(&mut [u8]) -> Result<usize, CodecError> + Sync),
}

impl<'a> Entry<'a> {
    pub(crate) fn new(transaction: TransactionId, step: Option<u32>, kind: EntryKind) -> Self {
        Self { transaction, step, kind, payload: Payload::None }
    }

    /// An entry whose payload is `payload`, as it is: for the tests and
    /// benchmarks of journal implementations, which need entries without
    /// running transactions. The engine builds its own entries.
    ///
    /// ```
    /// use transaction_manager::{TransactionId, journal::{Entry, EntryKind}};
    /// let entry = Entry::new_raw(TransactionId::new(7), Some(0), EntryKind::Done, b"undo");
    /// let mut buf = [0u8; 8];
    /// let n = entry.write_payload(&mut buf).unwrap();
    /// assert_eq!(&buf[..n], b"undo");
    /// assert_eq!(entry.payload_len_hint(), 4);
    /// ```
    pub fn new_raw(transaction: TransactionId, step: Option<u32>, kind: EntryKind, payload: &'a [u8]) -> Self {
        Self { transaction, step, kind, payload: Payload::Raw(payload) }
    }

    pub(crate) fn with_text(mut self, text: &'a str) -> Self {
        self.payload = Payload::Text(text);
        self
    }

    pub(crate) fn with_byte(mut self, byte: u8) -> Self {
        self.payload = Payload::Byte(byte);
        self
    }

    pub(crate) fn with_undo(mut self, undo: &'a UndoPayload<'a>) -> Self {
        self.payload = Payload::Undo(undo);
        self
    }

    /// The transaction's id.
    pub fn transaction(&self) -> TransactionId {
        self.transaction
    }

    /// The step's index, or `None` for the transaction's own entries
    /// (`Begin`, `Committed`, `Aborted`, `RolledBack`, `Stuck`, `Resolved`).
    pub fn step(&self) -> Option<u32> {
        self.step
    }

    /// The entry's kind.
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// Whether the entry must be durable when `append` returns (see
    /// [`EntryKind::is_durable`]).
    pub fn is_durable(&self) -> bool {
        self.kind.is_durable()
    }

    /// Writes the payload into `buf` and returns its length. On
    /// [`CodecError::BufferTooSmall`], a journal with a growable buffer
    /// retries with a larger one (`payload_len_hint` is a good start); a
    /// journal with a fixed buffer fails the append.
    pub fn write_payload(&self, buf: &mut [u8]) -> Result<usize, CodecError> {
        match &self.payload {
            Payload::None => Ok(0),
            Payload::Text(text) => put(buf, 0, text.as_bytes()),
            Payload::Byte(byte) => put(buf, 0, &[*byte]),
            Payload::Raw(bytes) => put(buf, 0, bytes),
            Payload::Undo(undo) => {
                let name = undo.name.as_bytes();
                let name_len = u16::try_from(name.len()).unwrap_or(u16::MAX);
                let name = &name[..usize::from(name_len)];
                let (max_retries, multiplier, initial, max, jitter) = undo.retry.to_parts();
                let timeout = match undo.timeout {
                    Some(timeout) => u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX - 1),
                    None => u64::MAX,
                };
                let mut at = put(buf, 0, &[FORMAT])?;
                at = put(buf, at, &undo.schema.to_le_bytes())?;
                at = put(buf, at, &name_len.to_le_bytes())?;
                at = put(buf, at, name)?;
                at = put(buf, at, &max_retries.to_le_bytes())?;
                at = put(buf, at, &multiplier.to_le_bytes())?;
                at = put(buf, at, &initial.to_le_bytes())?;
                at = put(buf, at, &max.to_le_bytes())?;
                at = put(buf, at, &[jitter])?;
                at = put(buf, at, &timeout.to_le_bytes())?;
                let rest = buf.get_mut(at..).ok_or(CodecError::BufferTooSmall)?;
                at += (undo.undo)(rest)?;
                // A damaged record (one flipped bit turned a 1 ms retry
                // interval into years) makes its transaction stuck instead
                // of being trusted.
                let checksum = crc32(&buf[..at]);
                put(buf, at, &checksum.to_le_bytes())
            }
        }
    }

    /// A size the payload usually fits in: the exact size without an undo
    /// record, the fixed part plus 64 bytes with one.
    pub fn payload_len_hint(&self) -> usize {
        match &self.payload {
            Payload::None => 0,
            Payload::Text(text) => text.len(),
            Payload::Byte(_) => 1,
            Payload::Raw(bytes) => bytes.len(),
            Payload::Undo(undo) => UNDO_HEADER + undo.name.len() + 64,
        }
    }

    /// The payload in a buffer that grows as needed, from
    /// [`payload_len_hint`](Entry::payload_len_hint) up to `limit` bytes:
    /// what a journal with a growable buffer calls. A payload larger than
    /// `limit` fails with [`CodecError::BufferTooSmall`].
    ///
    /// ```
    /// # use transaction_manager::{TransactionId, journal::{CodecError, Entry, EntryKind}};
    /// let entry = Entry::new_raw(TransactionId::new(1), None, EntryKind::Resolved, b"abc");
    /// assert_eq!(entry.payload_to_vec(16).unwrap(), b"abc");
    /// assert_eq!(entry.payload_to_vec(2), Err(CodecError::BufferTooSmall));
    /// ```
    #[cfg(feature = "alloc")]
    pub fn payload_to_vec(&self, limit: usize) -> Result<alloc::vec::Vec<u8>, CodecError> {
        let mut len = self.payload_len_hint().min(limit);
        loop {
            let mut buf = alloc::vec![0; len];
            match self.write_payload(&mut buf) {
                Ok(written) => {
                    buf.truncate(written);
                    return Ok(buf);
                }
                Err(CodecError::BufferTooSmall) if len < limit => len = len.saturating_mul(2).max(64).min(limit),
                Err(error) => return Err(error),
            }
        }
    }
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("transaction", &self.transaction)
            .field("step", &self.step)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Bytes of an undo payload besides the name and the undo record: the
/// header before them and the checksum after.
const UNDO_HEADER: usize = 1 + 4 + 2 + 4 + 4 + 8 + 8 + 1 + 8 + 4;

/// CRC-32 (IEEE 802.3, the zlib one), bit by bit: a few dozen bytes of
/// code, fast enough for the undo records it guards (tens of bytes).
pub(crate) fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) -> Result<usize, CodecError> {
    let end = at + bytes.len();
    buf.get_mut(at..end).ok_or(CodecError::BufferTooSmall)?.copy_from_slice(bytes);
    Ok(end)
}

/// An entry as a journal hands it back to recovery.
#[derive(Clone, Copy, Debug)]
pub struct StoredEntry<'a> {
    /// The step's index, or `None` for the transaction's own entries.
    pub step: Option<u32>,
    /// The kind's [`code`](EntryKind::code) as stored: an unknown code
    /// makes the transaction stuck.
    pub kind: u8,
    /// The payload bytes as written by [`Entry::write_payload`].
    pub payload: &'a [u8],
}

impl<'a> StoredEntry<'a> {
    /// The step's name and the codec's bytes of the undo record, for an
    /// `Intent` or `Done` entry whose payload checks out (its format known,
    /// its checksum right); `None` otherwise. For journals that show undo
    /// records to operators (the Postgres journal keeps JSON ones as
    /// `jsonb`): the payload's layout stays the core's business.
    ///
    /// ```
    /// use transaction_manager::journal::{EntryKind, StoredEntry};
    /// let entry = StoredEntry { step: Some(0), kind: EntryKind::Done.code(), payload: b"not an undo payload" };
    /// assert_eq!(entry.undo_parts(), None);
    /// ```
    pub fn undo_parts(&self) -> Option<(&'a str, &'a [u8])> {
        if !matches!(EntryKind::from_code(self.kind), Some(EntryKind::Intent | EntryKind::Done)) {
            return None;
        }
        let decoded = decode_undo_payload(self.payload).ok()?;
        Some((decoded.name, decoded.undo))
    }
}

/// A decoded undo payload.
pub(crate) struct DecodedUndo<'a> {
    pub(crate) name: &'a str,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) schema: u32,
    pub(crate) undo: &'a [u8],
}

/// Reads an undo payload written by [`Entry::write_payload`].
pub(crate) fn decode_undo_payload(bytes: &[u8]) -> Result<DecodedUndo<'_>, CodecError> {
    let format = *bytes.first().ok_or(CodecError::Invalid)?;
    let bytes = match format {
        0 => return Err(CodecError::Invalid),
        1 => bytes,
        2 => {
            let (rest, checksum) = bytes.split_at_checked(bytes.len().wrapping_sub(4)).ok_or(CodecError::Invalid)?;
            let checksum = u32::from_le_bytes(checksum.try_into().map_err(|_| CodecError::Invalid)?);
            if crc32(rest) != checksum {
                return Err(CodecError::Damaged);
            }
            rest
        }
        _ => return Err(CodecError::NewerFormat { found: format }),
    };
    let mut reader = Reader(bytes);
    reader.take::<1>()?;
    let schema = u32::from_le_bytes(reader.take()?);
    let name_len = usize::from(u16::from_le_bytes(reader.take()?));
    let name = core::str::from_utf8(reader.slice(name_len)?).map_err(|_| CodecError::Invalid)?;
    let max_retries = u32::from_le_bytes(reader.take()?);
    let multiplier = u32::from_le_bytes(reader.take()?);
    let initial = u64::from_le_bytes(reader.take()?);
    let max = u64::from_le_bytes(reader.take()?);
    let jitter = reader.take::<1>()?[0];
    let retry = RetryPolicy::from_parts(max_retries, multiplier, initial, max, jitter).ok_or(CodecError::Invalid)?;
    let timeout = match u64::from_le_bytes(reader.take()?) {
        u64::MAX => None,
        nanos => Some(crate::timing::clock::duration_from_nanos(nanos)),
    };
    Ok(DecodedUndo { name, retry, timeout, schema, undo: reader.0 })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn slice(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Invalid);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.slice(N)?);
        Ok(out)
    }
}
