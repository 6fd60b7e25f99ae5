//! Retry conditions: which failed attempts may be retried at all. An error
//! a condition rejects (a permanent one: "zone refuses this name") fails
//! its step or rollback for good at once, with no backoff wait.

use core::fmt;

use crate::util::text::PanicMessage;

/// Decides, after an attempt failed with an error, whether the attempt may
/// be retried: `true` retries it (as the retry policy allows), `false`
/// fails the step (or rollback) for good at once, with no backoff wait —
/// backon's `when`, tokio-retry's `RetryIf`.
///
/// Implemented by every `FnMut(&E) -> bool` and by [`RetryAlways`], the
/// default; you pass a closure to [`Execute::retry_if`](crate::step::Execute::retry_if),
/// [`Execute::rollback_retry_if`](crate::step::Execute::rollback_retry_if) or
/// [`Member::retry_if`](crate::group::Member::retry_if). Only errors are asked
/// about: an attempt that timed out or panicked may have taken effect and
/// is retried as the policy says. A condition that panics (caught with
/// `std`) counts as a rejection: the attempt fails for good, with the
/// panic in its record.
///
/// ```
/// use transaction_manager::retry::{RetryAlways, RetryCondition};
/// let mut transient = |error: &&str| *error == "busy";
/// assert!(transient.retries(&"busy"));
/// assert!(!transient.retries(&"zone refuses this name"));
/// assert!(RetryAlways.retries(&"anything"));
/// ```
pub trait RetryCondition<E: ?Sized> {
    /// `true` only for [`RetryAlways`]: the engine then asks nothing, and
    /// a step without a condition compiles no call to one.
    const ALWAYS: bool = false;

    /// Whether an attempt that failed with `error` may be retried.
    fn retries(&mut self, error: &E) -> bool;
}

impl<E: ?Sized, F: FnMut(&E) -> bool> RetryCondition<E> for F {
    fn retries(&mut self, error: &E) -> bool {
        self(error)
    }
}

/// The default retry condition: every error may be retried (as the retry
/// policy allows). Zero-sized, and never called: a step without a
/// condition pays nothing for the option.
///
/// ```
/// use transaction_manager::retry::{RetryAlways, RetryCondition};
/// assert!(<RetryAlways as RetryCondition<str>>::ALWAYS);
/// assert_eq!(core::mem::size_of::<RetryAlways>(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryAlways;

impl<E: ?Sized> RetryCondition<E> for RetryAlways {
    const ALWAYS: bool = true;

    fn retries(&mut self, _: &E) -> bool {
        true
    }
}

/// What a condition said about a failed attempt. (`pub` in a private
/// module: it appears in the sealed group driver's trait.)
#[derive(Debug)]
pub enum Verdict {
    /// Retry it, as the policy allows.
    Retry,
    /// Permanent: fail for good now.
    Permanent,
    /// The condition panicked: fail for good now.
    Panicked(PanicMessage),
}

impl Verdict {
    /// Whether the attempt may be retried.
    pub(crate) fn retries(&self) -> bool {
        matches!(self, Verdict::Retry)
    }
}

/// Asks a condition (`ask` calls it), inside the panic guard.
pub(crate) fn ask(ask: impl FnOnce() -> bool) -> Verdict {
    match crate::util::text::caught(ask) {
        Ok(true) => Verdict::Retry,
        Ok(false) => Verdict::Permanent,
        Err(panic) => {
            tm_error!("a retry condition panicked: {}", panic);
            Verdict::Panicked(panic)
        }
    }
}

/// The text recorded for an error its condition rejected: the reason it
/// was not retried first, so that a text cut short (56 bytes without an
/// allocator) still says it.
pub(crate) struct NotRetried<'a, E: ?Sized>(pub(crate) &'a Verdict, pub(crate) &'a E);

impl<E: fmt::Display + ?Sized> fmt::Display for NotRetried<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Verdict::Retry => {}
            Verdict::Permanent => f.write_str("not retried: permanent: ")?,
            Verdict::Panicked(panic) => write!(f, "not retried: the retry condition panicked ({panic}): ")?,
        }
        fmt::Display::fmt(self.1, f)
    }
}
