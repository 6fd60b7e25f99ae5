//! Codecs: how undo records become bytes and back ([`Postcard`],
//! [`Json`], or your own [`UndoCodec`]).

use core::fmt;

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
