//! The durable journal: what a transaction writes down so that, after a
//! crash or a power cut, the rollbacks it still owed are not lost.
//!
//! Recovery rolls back; it never replays the body. After a crash an
//! unfinished transaction is failed, and its owed undo records (plain data,
//! decoded with an [`UndoCodec`]) are rolled back by the same engine, with
//! the same policies and hooks. Bodies therefore need no determinism, and
//! versioning is only about decoding old undo records.
//!
//! The core works on bytes: a [`Journal`] stores [`Entry`]s whose payload
//! the core encodes, so it needs no serde. Codecs sit beside it
//! ([`Postcard`] with the `postcard` feature, `no_std`; [`Json`] with
//! `json`).

use core::fmt;
use core::time::Duration;

use crate::util::text::ErrorText;
use crate::{durable::id::TransactionId, timing::retry::RetryPolicy, util::text::Name};

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
    /// [`Journal::decided`]) before anything acts on it. It does not end
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

    /// Whether [`Journal::append`] must make the entry durable before it
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
    /// the first one appended (see [`Journal::decided`]).
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

/// Why a payload could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The buffer the journal offered is too small; a journal with a
    /// growable buffer retries with a larger one.
    BufferTooSmall,
    /// The bytes are not a valid payload (corrupt, or an unknown variant).
    Invalid,
    /// The payload was written by a newer version of the program: its
    /// schema number is above the codec's.
    NewerSchema {
        /// The schema number in the journal.
        found: u32,
        /// The newest schema the codec knows.
        known: u32,
    },
    /// The journal entry was written in a newer format than this library
    /// reads.
    NewerFormat {
        /// The format number in the journal.
        found: u8,
    },
    /// The undo record's checksum does not match its bytes: it was damaged
    /// on its medium (a flipped bit, a torn write the journal missed).
    Damaged,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::BufferTooSmall => f.write_str("the buffer is too small for the undo record"),
            CodecError::Invalid => f.write_str("the undo record cannot be decoded (corrupt, or an unknown variant)"),
            CodecError::NewerSchema { found, known } => {
                write!(f, "the undo record has schema {found}, newer than this program's {known}")
            }
            CodecError::NewerFormat { found } => {
                write!(f, "the journal entry has format {found}, newer than this library's {FORMAT}")
            }
            CodecError::Damaged => f.write_str("the undo record is damaged (its checksum does not match)"),
        }
    }
}

impl core::error::Error for CodecError {}

/// Turns undo records of type `U` into bytes and back, for a journal.
///
/// `SCHEMA` numbers the layout of `U`. Raise it when `U` changes in a way
/// old bytes no longer decode as (a variant removed or reordered, a field
/// changed); `decode` receives the schema an entry was written with, so
/// it can decode old entries the old way. An entry with a schema above
/// the codec's is never guessed at: its transaction becomes *stuck*
/// (listed by recovery, resolved by an operator or by a newer program).
///
/// ```
/// use transaction_manager::journal::{CodecError, UndoCodec};
///
/// #[derive(Debug, PartialEq)]
/// enum Undo { PowerOff, Release(u8) }
///
/// struct Bytes;
/// impl UndoCodec<Undo> for Bytes {
///     const SCHEMA: u32 = 1;
///     fn encode(&self, undo: &Undo, buf: &mut [u8]) -> Result<usize, CodecError> {
///         let bytes = match undo { Undo::PowerOff => [0, 0], Undo::Release(n) => [1, *n] };
///         buf.get_mut(..2).ok_or(CodecError::BufferTooSmall)?.copy_from_slice(&bytes);
///         Ok(2)
///     }
///     fn decode(&self, _schema: u32, bytes: &[u8]) -> Result<Undo, CodecError> {
///         match bytes {
///             [0, 0] => Ok(Undo::PowerOff),
///             [1, n] => Ok(Undo::Release(*n)),
///             _ => Err(CodecError::Invalid),
///         }
///     }
/// }
///
/// let mut buf = [0u8; 8];
/// let n = Bytes.encode(&Undo::Release(7), &mut buf).unwrap();
/// assert_eq!(Bytes.decode(1, &buf[..n]), Ok(Undo::Release(7)));
/// ```
// Shown when a journaled transaction's undo type is one the codec has no
// impl for at all (a codec of the application's own and the default
// `BoxedRollback`); for `Postcard` and `Json`, rustc names serde's unmet
// bound instead (see `JournalFor`).
#[diagnostic::on_unimplemented(
    message = "the journal's codec `{Self}` cannot encode undo records of type `{U}`",
    label = "a journaled transaction needs undo records this codec encodes",
    note = "closure rollbacks (`BoxedRollback`, the default undo type) cannot be journaled: give the \
            transaction an undo type this codec encodes, with `.fixed::<Undo, N>()` or \
            `.unbounded::<Undo>()`, and `.undo(|output| Undo::…)` on its steps, or run it on a \
            manager without a journal"
)]
pub trait UndoCodec<U> {
    /// The schema number of `U`'s current layout.
    const SCHEMA: u32;

    /// Writes `undo` into `buf`, returning the number of bytes written, or
    /// [`CodecError::BufferTooSmall`].
    fn encode(&self, undo: &U, buf: &mut [u8]) -> Result<usize, CodecError>;

    /// Reads an undo record written with schema `schema` (at most
    /// `Self::SCHEMA`: newer ones are refused before this is called).
    fn decode(&self, schema: u32, bytes: &[u8]) -> Result<U, CodecError>;
}

/// The [postcard](https://docs.rs/postcard) codec: compact, `no_std`, no
/// allocator. For undo types that implement serde's `Serialize` and
/// `Deserialize`. `SCHEMA` is the schema number (default 1).
///
/// ```
/// use transaction_manager::journal::{Postcard, UndoCodec};
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum Undo { DeleteVm { id: u64 } }
///
/// let mut buf = [0u8; 16];
/// let n = Postcard::<1>.encode(&Undo::DeleteVm { id: 300 }, &mut buf).unwrap();
/// assert_eq!(Postcard::<1>.decode(1, &buf[..n]), Ok(Undo::DeleteVm { id: 300 }));
/// ```
#[cfg(feature = "postcard")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard<const SCHEMA: u32 = 1>;

#[cfg(feature = "postcard")]
impl<U, const SCHEMA: u32> UndoCodec<U> for Postcard<SCHEMA>
where
    U: serde::Serialize + serde::de::DeserializeOwned,
{
    const SCHEMA: u32 = SCHEMA;

    fn encode(&self, undo: &U, buf: &mut [u8]) -> Result<usize, CodecError> {
        match postcard::to_slice(undo, buf) {
            Ok(written) => Ok(written.len()),
            Err(postcard::Error::SerializeBufferFull) => Err(CodecError::BufferTooSmall),
            Err(_) => Err(CodecError::Invalid),
        }
    }

    fn decode(&self, _: u32, bytes: &[u8]) -> Result<U, CodecError> {
        match postcard::take_from_bytes::<U>(bytes) {
            Ok((undo, [])) => Ok(undo),
            _ => Err(CodecError::Invalid),
        }
    }
}

/// A JSON codec (with `serde_json`): readable in the journal, for servers.
/// For undo types that implement serde's `Serialize` and `Deserialize`.
/// `SCHEMA` is the schema number (default 1).
///
/// ```
/// use transaction_manager::journal::{Json, UndoCodec};
///
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum Undo { DeleteVm { id: u64 } }
///
/// let mut buf = [0u8; 64];
/// let n = Json::<1>.encode(&Undo::DeleteVm { id: 300 }, &mut buf).unwrap();
/// assert_eq!(&buf[..n], br#"{"DeleteVm":{"id":300}}"#);
/// assert_eq!(Json::<1>.decode(1, &buf[..n]), Ok(Undo::DeleteVm { id: 300 }));
/// ```
#[cfg(feature = "json")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Json<const SCHEMA: u32 = 1>;

#[cfg(feature = "json")]
impl<U, const SCHEMA: u32> UndoCodec<U> for Json<SCHEMA>
where
    U: serde::Serialize + serde::de::DeserializeOwned,
{
    const SCHEMA: u32 = SCHEMA;

    fn encode(&self, undo: &U, buf: &mut [u8]) -> Result<usize, CodecError> {
        let bytes = serde_json::to_vec(undo).map_err(|_| CodecError::Invalid)?;
        let out = buf.get_mut(..bytes.len()).ok_or(CodecError::BufferTooSmall)?;
        out.copy_from_slice(&bytes);
        Ok(bytes.len())
    }

    fn decode(&self, _: u32, bytes: &[u8]) -> Result<U, CodecError> {
        serde_json::from_slice(bytes).map_err(|_| CodecError::Invalid)
    }
}

/// The format number of the payloads the core writes. Entries with a
/// higher number are refused (the transaction becomes stuck), never
/// guessed at. Format 2 ends an undo payload with a CRC-32 of the rest;
/// format 1 (no checksum) is still read.
pub const FORMAT: u8 = 2;

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

/// Durable storage for the entries of journaled transactions: SQLite
/// (`transaction-manager-sqlite`), flash, Postgres, or an in-memory one in
/// tests.
///
/// An implementation MUST:
/// - make an entry whose [`is_durable`](Entry::is_durable) is true survive
///   a crash or power cut before `append` returns `Ok` (other entries may
///   be buffered and written with a later one);
/// - keep entries idempotent: appending the same (transaction, step, kind)
///   again is not an error;
/// - hand entries back in [`read`](Journal::read) in the order they were
///   first appended (a journal that overwrites a step's record as the step
///   moves on, as on flash, may hand back each step's latest entry only,
///   in the order the steps were first written: recovery reaches the same
///   decisions, but rolls a parallel group back in reverse member order rather
///   than in reverse completion order);
/// - give out ids with [`next_id`](Journal::next_id) that no transaction of
///   this journal had before, in this process or an earlier one, or in
///   another process sharing the journal;
/// - never drop an entry it accepted: a write that fails is an `Err` from
///   `append` (a full disk, a read-only file), never a silent loss;
/// - hold one decision per transaction, the first: refuse to append a
///   decision ([`EntryKind::is_decision`]: `Committed` or `Aborted`) for a
///   transaction that already holds the other one, with an error that
///   [`decided`](Journal::decided) recognises, checked where the write is
///   serialised (in the write transaction, under a lock, or by a unique
///   key), so that of two racing decisions exactly one is stored. This is
///   what lets the engine find out, after a `Committed` append that
///   failed, whether it reached the journal after all (a connection lost
///   after the statement was sent, an I/O error after the write): it
///   appends `Aborted`, and the refusal says the commit is durable.
#[allow(async_fn_in_trait)] // `Send` follows the implementation: see the crate docs.
pub trait Journal {
    /// What a failed journal call returns.
    type Error: fmt::Display;

    /// A transaction id never given out before by this journal.
    fn next_id(&self) -> TransactionId;

    /// This journal's origin, which every [`IdempotencyKey`](crate::journal::IdempotencyKey) of its
    /// transactions carries: a number made once, when the journal (its
    /// file, database or flash range) was created, kept in it and the same
    /// at every open, and different from every other journal's (random,
    /// or a device-unique value). Two journals with the same origin hand
    /// out the same keys.
    fn origin(&self) -> u64;

    /// Appends `entry` (durably, if [`Entry::is_durable`]).
    async fn append(&self, entry: &Entry<'_>) -> Result<(), Self::Error>;

    /// The unfinished transaction (one without an entry that
    /// [`ends_transaction`](EntryKind::ends_transaction)) with the smallest
    /// id above `after` (any id if `None`), if there is one.
    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error>;

    /// Calls `visit` with each entry of transaction `id`, in the order they
    /// were appended.
    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error>;

    /// The decision the journal already held when it refused `error`'s
    /// append of the other one (`Some(EntryKind::Committed)` for a refused
    /// `Aborted`, and the reverse), or `None` for any other error. A
    /// journal MUST return it for its "already decided" error (see the
    /// MUST list above); the default, for a journal that never refuses
    /// (and so cannot tell the engine that a commit it saw fail was
    /// durable), is `None`.
    fn decided(error: &Self::Error) -> Option<EntryKind> {
        let _ = error;
        None
    }
}

impl<J: Journal + ?Sized> Journal for &J {
    type Error = J::Error;

    fn next_id(&self) -> TransactionId {
        (**self).next_id()
    }

    fn origin(&self) -> u64 {
        (**self).origin()
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), Self::Error> {
        (**self).append(entry).await
    }

    async fn next_unfinished(&self, after: Option<TransactionId>) -> Result<Option<TransactionId>, Self::Error> {
        (**self).next_unfinished(after).await
    }

    async fn read(&self, id: TransactionId, visit: &mut dyn FnMut(StoredEntry<'_>)) -> Result<(), Self::Error> {
        (**self).read(id, visit).await
    }

    fn decided(error: &Self::Error) -> Option<EntryKind> {
        J::decided(error)
    }
}

/// A journal call that failed: which entry, and the journal's error text.
/// What a journaled step returns (as [`StepErrorKind::Journal`](crate::StepErrorKind::Journal))
/// when its `Done` or intent could not be written, and what a journaled
/// transaction's body error is built from when its `Committed` could not
/// be (`B: From<JournalFailure>`; `StepError<E>` qualifies).
///
/// ```
/// use transaction_manager::journal::{EntryKind, JournalFailure};
/// let failure = JournalFailure::new(EntryKind::Done, &"disk full");
/// assert_eq!(failure.entry(), Some(EntryKind::Done));
/// # #[cfg(feature = "error-text")]
/// assert_eq!(failure.to_string(), "journal: writing `done` failed: disk full");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalFailure {
    entry: Option<EntryKind>,
    decided: Option<EntryKind>,
    text: ErrorText,
}

impl JournalFailure {
    /// A failure to write `entry`, for `error` (its text is kept with the
    /// `error-text` feature).
    pub fn new(entry: EntryKind, error: &dyn fmt::Display) -> Self {
        Self { entry: Some(entry), decided: None, text: ErrorText::capture(error) }
    }

    /// A failure to read the journal (recovery), for `error`.
    pub fn reading(error: &dyn fmt::Display) -> Self {
        Self { entry: None, decided: None, text: ErrorText::capture(error) }
    }

    /// A failure to write `entry` that the journal refused because the
    /// transaction already holds the decision `decided` ([`Journal::decided`]).
    pub(crate) fn refused(entry: EntryKind, decided: Option<EntryKind>, error: &dyn fmt::Display) -> Self {
        Self { entry: Some(entry), decided, text: ErrorText::capture(error) }
    }

    /// The entry that could not be written, or `None` if reading failed.
    pub fn entry(&self) -> Option<EntryKind> {
        self.entry
    }

    /// The decision the transaction already held when the journal refused
    /// this one ([`Journal::decided`]), if that is why it failed.
    pub fn decided(&self) -> Option<EntryKind> {
        self.decided
    }

    /// The journal's error text (empty without the `error-text` feature).
    pub fn error(&self) -> &str {
        self.text.as_str()
    }
}

impl fmt::Display for JournalFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entry {
            Some(entry) => write!(f, "journal: writing `{entry}` failed")?,
            None => f.write_str("journal: reading failed")?,
        }
        if !self.text.as_str().is_empty() {
            write!(f, ": {}", self.text.as_str())?;
        }
        Ok(())
    }
}

impl core::error::Error for JournalFailure {}

impl<B: From<JournalFailure>> crate::timing::interrupt::IntoBodyError<B> for JournalFailure {
    fn into_body_error(self, _: Option<(Name, usize)>, _: usize) -> B {
        B::from(self)
    }
}
