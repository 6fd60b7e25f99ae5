//! The ids a journal keys on: a transaction's [`TransactionId`] and a
//! step's [`IdempotencyKey`], printed and parsed back.

use core::fmt;

/// Identifies one transaction run by a manager; unique per manager.
///
/// Journals hand out ids `epoch << 32 | counter` (a new epoch per open of
/// a SQLite file or Postgres worker, per boot of a flash journal), and
/// ids read that way: `tx-3.17` is counter 17 of epoch 3, and an id below
/// 2^32 (epoch 0: a manager without a journal, the in-memory journal) is
/// just `tx-17`. [`FromStr`](core::str::FromStr) reads both forms back.
///
/// ```
/// use transaction_manager::TransactionId;
/// assert_eq!(TransactionId::new(7).to_string(), "tx-7");
/// assert_eq!(TransactionId::new(7).get(), 7);
/// assert_eq!(TransactionId::new(3 << 32 | 17).to_string(), "tx-3.17");
/// assert_eq!("tx-3.17".parse(), Ok(TransactionId::new(3 << 32 | 17)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TransactionId(u64);

impl TransactionId {
    /// An id with the given number.
    ///
    /// ```
    /// # use transaction_manager::TransactionId;
    /// let id = TransactionId::new(1);
    /// # let _ = id;
    /// ```
    pub const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The number.
    ///
    /// ```
    /// # use transaction_manager::TransactionId;
    /// assert_eq!(TransactionId::new(3).get(), 3);
    /// ```
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl TransactionId {
    /// The epoch (high 32 bits) and counter (low 32 bits).
    pub(crate) const fn parts(self) -> (u32, u32) {
        ((self.0 >> 32) as u32, self.0 as u32)
    }

    /// Writes `3.17` (or `17` in epoch 0): the id without `tx-`.
    pub(crate) fn fmt_number(self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (epoch, counter) = self.parts();
        if epoch != 0 {
            fmt::Display::fmt(&epoch, f)?;
            f.write_str(".")?;
        }
        fmt::Display::fmt(&counter, f)
    }
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tx-")?;
        self.fmt_number(f)
    }
}

/// Text that is not a transaction id (`tx-17`, `tx-3.17`) or idempotency
/// key (`tx-3.17.2-9f3a0c5e1b2d4f68`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseIdError;

impl fmt::Display for ParseIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a transaction id (`tx-17`, `tx-3.17`) or idempotency key (`tx-3.17.2-9f3a0c5e1b2d4f68`)")
    }
}

impl core::error::Error for ParseIdError {}

/// Decimal digits only (no sign, no spaces) as a `u32`.
pub(crate) fn parse_u32(text: &str) -> Result<u32, ParseIdError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseIdError);
    }
    text.parse().map_err(|_| ParseIdError)
}

/// `3.17` or `17` (the id without `tx-`).
pub(crate) fn parse_number(text: &str) -> Result<TransactionId, ParseIdError> {
    let (epoch, counter) = match text.split_once('.') {
        Some((epoch, counter)) => (parse_u32(epoch)?, parse_u32(counter)?),
        None => (0, parse_u32(text)?),
    };
    Ok(TransactionId::new(u64::from(epoch) << 32 | u64::from(counter)))
}

impl core::str::FromStr for TransactionId {
    type Err = ParseIdError;

    /// Reads what [`Display`](fmt::Display) writes: `tx-17` or `tx-3.17`.
    fn from_str(text: &str) -> Result<Self, ParseIdError> {
        parse_number(text.strip_prefix("tx-").ok_or(ParseIdError)?)
    }
}

/// A stable key for one step of one transaction: the *origin* of its ids
/// (the journal's, or the manager's without one), the transaction's id and
/// the step's index. Pass it to the external API a step calls (and keep it
/// in the undo record), so that an execute or rollback repeated after a
/// crash is recognised and harmless.
///
/// The origin makes keys unique across journals and processes: two
/// services whose journals both hand out `tx-1` give their first steps
/// different keys. It is the journal's [`Journal::origin`](crate::journal::Journal::origin) (random, made
/// when the journal was created and kept in it; chosen by the user for a
/// flash journal), or for a manager without a journal its
/// [`origin`](crate::TransactionManager::origin): random per manager with
/// `std`, [`with_origin`](crate::TransactionManager::with_origin) on
/// `no_std` (else 0 there). Recovery rebuilds nothing: the key a rollback
/// reads back from its undo record is the key its step saw.
///
/// Printed as `tx-<id>.<index>-<origin>`, the id as
/// [`TransactionId`] prints it without `tx-` and the origin as 16 hex
/// digits: `tx-3.17.2-9f3a0c5e1b2d4f68` is step 2 of `tx-3.17`, and
/// `tx-17.2-9f3a0c5e1b2d4f68` step 2 of `tx-17` (so a search for a
/// transaction's id finds its keys too). Only ASCII letters, digits, `-`
/// and `.`: safe in a header, a URL or a file name.
/// [`FromStr`](core::str::FromStr) reads it back.
///
/// A step gets its own where the call is made:
/// [`Step::execute_keyed`](crate::api::step::Step::execute_keyed),
/// [`Execute::undo_keyed`](crate::api::execute::Execute::undo_keyed),
/// [`Execute::rollback_keyed`](crate::api::execute::Execute::rollback_keyed), and for a
/// group's members [`MemberBuilder::execute_keyed`](crate::api::group::MemberBuilder::execute_keyed)
/// and [`Member::undo_keyed`](crate::api::group::Member::undo_keyed).
///
/// With the `serde` feature (the facade's `serde`, or `postcard` / `json`)
/// it implements serde's `Serialize` and `Deserialize`, as a struct
/// `{ origin, transaction, step }` of three numbers, so an undo record can
/// keep it. A record without `origin` (JSON written before keys had one)
/// reads with origin 0; a binary (`postcard`) record of the old two-number
/// shape does not read correctly: bump the codec's schema if such records
/// may be owed.
///
/// ```
/// use transaction_manager::{TransactionId, journal::IdempotencyKey};
/// let key = IdempotencyKey::new(0x9f3a_0c5e_1b2d_4f68, TransactionId::new(42), 3);
/// assert_eq!(key.to_string(), "tx-42.3-9f3a0c5e1b2d4f68");
/// assert_eq!("tx-42.3-9f3a0c5e1b2d4f68".parse(), Ok(key));
/// # #[cfg(feature = "serde")] {
/// fn keepable<T: serde::Serialize + serde::de::DeserializeOwned>() {}
/// keepable::<IdempotencyKey>();
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct IdempotencyKey {
    #[cfg_attr(feature = "serde", serde(default))]
    origin: u64,
    transaction: u64,
    step: u32,
}

/// A step's index as the journal and the idempotency keys keep it.
pub(crate) fn step_index(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

impl IdempotencyKey {
    /// The key of step `step` of transaction `transaction`, from a journal
    /// (or manager) of origin `origin`.
    pub const fn new(origin: u64, transaction: TransactionId, step: u32) -> Self {
        Self { origin, transaction: transaction.get(), step }
    }

    /// The origin: which journal (or manager without one) gave out the
    /// transaction's id.
    pub const fn origin(self) -> u64 {
        self.origin
    }

    /// The transaction's id.
    pub const fn transaction(self) -> TransactionId {
        TransactionId::new(self.transaction)
    }

    /// The step's index.
    pub const fn step(self) -> u32 {
        self.step
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tx-")?;
        self.transaction().fmt_number(f)?;
        write!(f, ".{}-{:016x}", self.step, self.origin)
    }
}

impl core::str::FromStr for IdempotencyKey {
    type Err = crate::durable::id::ParseIdError;

    /// Reads what [`Display`](fmt::Display) writes:
    /// `tx-3.17.2-9f3a0c5e1b2d4f68` or `tx-17.2-9f3a0c5e1b2d4f68`.
    fn from_str(text: &str) -> Result<Self, crate::durable::id::ParseIdError> {
        use crate::durable::id::ParseIdError;
        let rest = text.strip_prefix("tx-").ok_or(ParseIdError)?;
        let (numbers, origin) = rest.rsplit_once('-').ok_or(ParseIdError)?;
        if origin.len() != 16 || !origin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseIdError);
        }
        let origin = u64::from_str_radix(origin, 16).map_err(|_| ParseIdError)?;
        let (id, step) = numbers.rsplit_once('.').ok_or(ParseIdError)?;
        let step = crate::durable::id::parse_u32(step)?;
        Ok(Self::new(origin, crate::durable::id::parse_number(id)?, step))
    }
}

/// A random non-zero origin: std's randomly keyed hasher over the time,
/// the process id and a counter (no RNG crate needed).
#[cfg(feature = "std")]
pub(crate) fn random_origin() -> u64 {
    use core::hash::{BuildHasher, Hasher};
    static DRAWS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(DRAWS.fetch_add(1, core::sync::atomic::Ordering::Relaxed));
        hasher.write_u32(std::process::id());
        if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            hasher.write_u128(now.as_nanos());
        }
        let origin = hasher.finish();
        if origin != 0 {
            return origin;
        }
    }
}
