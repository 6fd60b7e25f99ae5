//! Owned text that works with and without an allocator: step and operation
//! names, and the error text kept in summaries.

use core::fmt::{self, Display, Write};

#[cfg(feature = "alloc")]
use alloc::string::String;

/// The name of a step or an operation.
///
/// Built from a `&'static str` on any target, and with the `alloc` feature
/// also from a `String`, so servers can name steps at run time
/// (`format!("attach-disk-{n}")`). Names need not be unique: steps are told
/// apart by their index.
///
/// ```
/// use transaction_manager::summary::Name;
/// let name = Name::from("create_user");
/// assert_eq!(name.as_str(), "create_user");
/// assert_eq!(name, "create_user");
/// ```
#[derive(Clone)]
pub struct Name(NameRepr);

#[derive(Clone)]
enum NameRepr {
    Static(&'static str),
    /// A name the library formats itself (the default operation name).
    Inline(heapless::String<{ Name::INLINE }>),
    #[cfg(feature = "alloc")]
    Owned(String),
}

impl Name {
    /// The name as text.
    ///
    /// ```
    /// # use transaction_manager::summary::Name;
    /// assert_eq!(Name::from("vm").as_str(), "vm");
    /// ```
    pub fn as_str(&self) -> &str {
        match &self.0 {
            NameRepr::Static(s) => s,
            NameRepr::Inline(s) => s.as_str(),
            #[cfg(feature = "alloc")]
            NameRepr::Owned(s) => s.as_str(),
        }
    }

    /// Bytes of a name the library formats itself (the default operation
    /// name, names read from a journal without `alloc`). 16, not more: a
    /// `Name` is then 24 bytes on 32-bit targets instead of 32, in every
    /// step record, step error and rollback failure.
    pub(crate) const INLINE: usize = 16;

    /// Formats `value` into a name of at most 16 bytes (longer text is cut at
    /// a character boundary). Needs no allocator.
    pub(crate) fn format(value: impl Display) -> Self {
        let mut out = Truncating::<{ Name::INLINE }>::new();
        let _ = write!(out, "{value}");
        Self(NameRepr::Inline(out.finish()))
    }
}

impl From<&'static str> for Name {
    fn from(s: &'static str) -> Self {
        Self(NameRepr::Static(s))
    }
}

#[cfg(feature = "alloc")]
impl From<String> for Name {
    fn from(s: String) -> Self {
        Self(NameRepr::Owned(s))
    }
}

#[cfg(feature = "alloc")]
impl From<&String> for Name {
    fn from(s: &String) -> Self {
        Self(NameRepr::Owned(s.clone()))
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bytes of error text a summary keeps per error without an allocator
/// (with the length, 64 bytes per text).
#[cfg(all(feature = "error-text", not(feature = "alloc")))]
pub(crate) const ERROR_TEXT_BYTES: usize = 56;

/// The `Display` text of an error, kept in a summary after the error value
/// itself has moved on (into the final error, or been dropped after a
/// retry). With `alloc` the whole text is kept; without, the first
/// `ERROR_TEXT_BYTES` (56) bytes, ending in `…` when cut.
///
/// Without the `error-text` feature (and without `alloc`, which implies
/// it) no text is kept at all: the type is empty, capturing does nothing,
/// and records report no error text — the compact firmware profile.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ErrorText(
    #[cfg(feature = "alloc")] String,
    #[cfg(all(feature = "error-text", not(feature = "alloc")))] heapless::String<ERROR_TEXT_BYTES>,
);

impl ErrorText {
    /// Whether texts are kept (the `error-text` feature).
    pub(crate) const KEPT: bool = cfg!(feature = "error-text");

    /// The text of `error`. A `Display` that panics (user code) leaves a
    /// text saying so instead of unwinding through the engine (with `std`).
    #[cfg(not(feature = "error-text"))]
    pub(crate) fn capture(_: &dyn Display) -> Self {
        Self()
    }

    /// The text of `error`. A `Display` that panics (user code) leaves a
    /// text saying so instead of unwinding through the engine (with `std`).
    #[cfg(feature = "error-text")]
    pub(crate) fn capture(error: &dyn Display) -> Self {
        match crate::util::text::caught(|| Self::capture_unguarded(error)) {
            Ok(text) => text,
            Err(panic) => Self::capture_unguarded(&DisplayPanicked(&panic)),
        }
    }

    /// Puts the text of `error` in `slot`, as `*slot =
    /// Some(ErrorText::capture(error))` does, but reusing the text already
    /// there: with `alloc`, a retried attempt's text is written into the
    /// previous attempt's buffer instead of a new allocation (and a free).
    pub(crate) fn capture_into(slot: &mut Option<Self>, error: &dyn Display) {
        #[cfg(feature = "alloc")]
        if let Some(Self(text)) = slot {
            text.clear();
            match crate::util::text::caught(|| fmt::write(text, format_args!("{error}"))) {
                Ok(Ok(())) => return,
                // A `Display` that returned an error (against its
                // contract): as `capture` has it.
                Ok(Err(fmt::Error)) => {}
                Err(panic) => {
                    text.clear();
                    let _ = write!(text, "{}", DisplayPanicked(&panic));
                    return;
                }
            }
        }
        *slot = Some(Self::capture(error));
    }

    #[cfg(feature = "error-text")]
    fn capture_unguarded(error: &dyn Display) -> Self {
        #[cfg(feature = "alloc")]
        {
            use alloc::string::ToString;
            Self(error.to_string())
        }
        #[cfg(all(feature = "error-text", not(feature = "alloc")))]
        {
            let mut out = Truncating::<ERROR_TEXT_BYTES>::new();
            let _ = write!(out, "{error}");
            Self(out.finish())
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        #[cfg(feature = "error-text")]
        {
            self.0.as_str()
        }
        #[cfg(not(feature = "error-text"))]
        ""
    }
}

/// The text kept for an error whose `Display` panicked.
#[cfg(feature = "error-text")]
struct DisplayPanicked<'a>(&'a crate::util::text::PanicMessage);

#[cfg(feature = "error-text")]
impl Display for DisplayPanicked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<its Display panicked: {}>", self.0)
    }
}

impl fmt::Debug for ErrorText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// A `fmt::Write` into a fixed buffer that keeps what fits and marks a cut
/// with `…` instead of failing.
pub(crate) struct Truncating<const N: usize> {
    buf: heapless::String<N>,
    cut: bool,
}

impl<const N: usize> Truncating<N> {
    const ELLIPSIS: &'static str = "…";

    pub(crate) fn new() -> Self {
        Self { buf: heapless::String::new(), cut: false }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn finish(mut self) -> heapless::String<N> {
        if self.cut {
            // Make room for the marker at a character boundary.
            while self.buf.len() + Self::ELLIPSIS.len() > N {
                if self.buf.pop().is_none() {
                    break;
                }
            }
            let _ = self.buf.push_str(Self::ELLIPSIS);
        }
        self.buf
    }
}

impl<const N: usize> Write for Truncating<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Err(fmt::Error);
        }
        for c in s.chars() {
            if self.buf.push(c).is_err() {
                self.cut = true;
                // Stop formatting: nothing more will be kept.
                return Err(fmt::Error);
            }
        }
        Ok(())
    }
}

/// The message of a panic caught in a step, a rollback or a hook.
///
/// Only produced with the `std` feature (catching a panic needs
/// unwinding); the type exists everywhere so matching on errors is the same
/// with and without it. Without `std` it has no values at all, so errors
/// and records carry no room for a message that can never exist, and the
/// code that would handle one is compiled out.
///
/// ```
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// # #[cfg(feature = "std")] {
/// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
///     tx.step("boom").run(|| async { if true { panic!("sensor driver bug") } Ok::<(), &str>(()) }).await
/// })).unwrap_err();
/// let StepErrorKind::Panicked(message) = err.cause().kind() else { panic!() };
/// assert_eq!(message.as_str(), "sensor driver bug");
/// # }
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PanicMessage(
    #[cfg(feature = "std")] pub(crate) ErrorText,
    #[cfg(not(feature = "std"))] pub(crate) core::convert::Infallible,
);

impl PanicMessage {
    /// The panic's message (`"<non-string panic payload>"` when the payload
    /// was not text).
    pub fn as_str(&self) -> &str {
        #[cfg(feature = "std")]
        {
            self.0.as_str()
        }
        #[cfg(not(feature = "std"))]
        match self.0 {}
    }
}

impl fmt::Debug for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for PanicMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs `f`, returning a panic in it as `Err` (with `std`; without, a panic
/// follows the target's panic strategy).
#[cfg(feature = "std")]
pub(crate) fn caught<T>(f: impl FnOnce() -> T) -> Result<T, PanicMessage> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(message_of)
}

#[cfg(not(feature = "std"))]
pub(crate) fn caught<T>(f: impl FnOnce() -> T) -> Result<T, PanicMessage> {
    Ok(f())
}

/// A caught panic's payload, to resume unwinding with later.
#[cfg(feature = "std")]
pub(crate) type Payload = std::boxed::Box<dyn core::any::Any + Send + 'static>;

#[cfg(feature = "std")]
pub(crate) fn message_of(payload: Payload) -> PanicMessage {
    let text: &str = if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<std::string::String>() {
        s
    } else {
        "<non-string panic payload>"
    };
    PanicMessage(ErrorText::capture(&text))
}

/// Without `std` nothing is caught, so there is never a message to take.
#[cfg(not(feature = "std"))]
pub(crate) fn message_of(never: core::convert::Infallible) -> PanicMessage {
    match never {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries() {
        let mut t = Truncating::<8>::new();
        let _ = write!(t, "héllo wörld");
        let s = t.finish();
        assert!(s.len() <= 8);
        assert!(s.ends_with('…'), "{s}");
        assert!(s.starts_with("hé"));
    }

    /// A retried attempt's text replaces the previous one in its buffer,
    /// and reads exactly as a fresh capture; a `Display` that fails or
    /// panics leaves the same text as `capture` gives.
    #[cfg(feature = "alloc")]
    #[test]
    fn capture_into_reads_as_capture() {
        let mut slot = None;
        ErrorText::capture_into(&mut slot, &"a longer first error");
        assert_eq!(slot.as_ref().map(ErrorText::as_str), Some("a longer first error"));
        let before = slot.as_ref().map(|t| t.0.as_ptr());
        ErrorText::capture_into(&mut slot, &"second");
        assert_eq!(slot.as_ref().map(ErrorText::as_str), Some("second"));
        assert_eq!(slot.as_ref().map(|t| t.0.as_ptr()), before, "the buffer is reused");
        #[cfg(feature = "std")]
        {
            struct Fails;
            impl Display for Fails {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("partial")?;
                    Err(fmt::Error)
                }
            }
            let fresh = std::panic::catch_unwind(|| ErrorText::capture(&Fails)).ok();
            let mut slot = Some(ErrorText::capture(&"x"));
            let reused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                ErrorText::capture_into(&mut slot, &Fails);
                slot
            }))
            .ok()
            .flatten();
            assert_eq!(reused.as_ref().map(ErrorText::as_str), fresh.as_ref().map(ErrorText::as_str));
            assert!(fresh.is_some_and(|t| t.as_str().starts_with("<its Display panicked")));
            struct Panics;
            impl Display for Panics {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("partial")?;
                    panic!("display bug")
                }
            }
            let mut slot = Some(ErrorText::capture(&"x"));
            ErrorText::capture_into(&mut slot, &Panics);
            assert_eq!(slot.as_ref().map(ErrorText::as_str), Some(ErrorText::capture(&Panics).as_str()));
            assert_eq!(slot.as_ref().map(ErrorText::as_str), Some("<its Display panicked: display bug>"));
        }
    }

    #[test]
    fn short_text_is_kept_whole() {
        let mut t = Truncating::<8>::new();
        let _ = write!(t, "{}", 1234);
        assert_eq!(t.finish().as_str(), "1234");
        assert_eq!(Name::format(format_args!("tx-{}", 7)).as_str(), "tx-7");
    }

    #[test]
    fn formatted_names_keep_sixteen_bytes() {
        assert_eq!(Name::format(format_args!("tx-{}", 1_234_567_890_123u64)).as_str(), "tx-1234567890123");
        let cut = Name::format("a-step-name-that-is-long");
        assert!(cut.as_str().len() <= 16 && cut.as_str().ends_with('…'), "{cut}");
        assert!(cut.as_str().starts_with("a-step-name"));
    }
}

/// A duration as text like `Debug` writes it (`20ms`, `1.5s`, `250µs`) but
/// with 32-bit integer arithmetic only: `Duration`'s own `Debug` costs about
/// 1.5 KB of flash on a Cortex-M.
pub(crate) struct Dur(pub(crate) core::time::Duration);

/// A `u64` in decimal, without `core`'s `u64` formatter: a few bytes of
/// code where that one (with its padding support) is a few hundred, on
/// targets where `u64` arithmetic is not native. Ids and long durations
/// only; no padding.
pub(crate) struct Decimal(pub(crate) u64);

impl Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Ok(small) = u32::try_from(self.0) {
            return Display::fmt(&small, f);
        }
        let mut digits = [0u8; 20];
        let mut n = self.0;
        let mut start = digits.len();
        while n > 0 {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        for &digit in &digits[start..] {
            f.write_char(char::from(digit))?;
        }
        Ok(())
    }
}

impl Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        let (whole, fraction, digits, unit): (u64, u32, u32, &str) = if secs > 0 {
            (secs, nanos, 9, "s")
        } else if nanos >= 1_000_000 {
            (u64::from(nanos / 1_000_000), nanos % 1_000_000, 6, "ms")
        } else if nanos >= 1_000 {
            (u64::from(nanos / 1_000), nanos % 1_000, 3, "µs")
        } else {
            (u64::from(nanos), 0, 0, "ns")
        };
        Display::fmt(&Decimal(whole), f)?;
        if fraction > 0 {
            // The fraction's digits, without trailing zeros.
            let mut fraction = fraction;
            let mut digits = digits;
            while fraction % 10 == 0 {
                fraction /= 10;
                digits -= 1;
            }
            write!(f, ".{fraction:0width$}", width = digits as usize)?;
        }
        f.write_str(unit)
    }
}

#[cfg(test)]
mod dur_tests {
    use super::*;
    use core::time::Duration;

    #[test]
    fn decimal_like_display() {
        for n in [0, 7, u64::from(u32::MAX), u64::from(u32::MAX) + 1, 10_000_000_000_000_000_000, u64::MAX] {
            let mut out = Truncating::<32>::new();
            let _ = write!(out, "{}", Decimal(n));
            let mut expected = Truncating::<32>::new();
            let _ = write!(expected, "{n}");
            assert_eq!(out.finish().as_str(), expected.finish().as_str());
        }
    }

    #[test]
    fn like_debug() {
        for d in [
            Duration::ZERO,
            Duration::from_nanos(7),
            Duration::from_micros(250),
            Duration::from_millis(20),
            Duration::from_millis(1500),
            Duration::from_secs(30),
            Duration::new(42, 477_002),
            Duration::from_nanos(42_477_002),
            Duration::MAX,
        ] {
            let mut ours = heapless::String::<64>::new();
            let mut theirs = heapless::String::<64>::new();
            write!(ours, "{}", Dur(d)).unwrap();
            write!(theirs, "{d:?}").unwrap();
            assert_eq!(ours, theirs);
        }
    }
}
