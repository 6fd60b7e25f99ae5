//! `tracing` spans, with nothing left of them when the `tracing` feature is
//! off: one span per transaction, one per step attempt and rollback
//! attempt, each with an `outcome` field filled in when it ends.

use core::future::Future;

#[cfg(feature = "tracing")]
pub(crate) use tracing::Span;

/// Stands in for `tracing::Span` when the feature is off.
#[cfg(not(feature = "tracing"))]
pub(crate) struct Span;

/// `future`, entered in `span` on every poll (`tracing::Instrument`).
#[cfg(feature = "tracing")]
pub(crate) fn within<F: Future>(span: &Span, future: F) -> tracing::instrument::Instrumented<F> {
    tracing::Instrument::instrument(future, span.clone())
}

/// Without `tracing`, the future itself.
#[cfg(not(feature = "tracing"))]
pub(crate) fn within<F: Future>(_: &Span, future: F) -> F {
    future
}

/// `future`, entered in `span` if there is one.
#[cfg(feature = "tracing")]
pub(crate) fn within_some<F: Future>(span: Option<&Span>, future: F) -> tracing::instrument::Instrumented<F> {
    tracing::Instrument::instrument(future, span.cloned().unwrap_or_else(Span::none))
}

/// Without `tracing`, the future itself.
#[cfg(not(feature = "tracing"))]
pub(crate) fn within_some<F: Future>(_: Option<&Span>, future: F) -> F {
    future
}

/// Fills in the span's `outcome` field.
#[cfg(feature = "tracing")]
pub(crate) fn outcome(span: &Span, outcome: &'static str) {
    span.record("outcome", outcome);
}

#[cfg(not(feature = "tracing"))]
pub(crate) fn outcome(_: &Span, _: &'static str) {}

/// `span!(kind, field = value, ...)`: an info-level span named `kind` in
/// the `transaction_manager` target, with an empty `outcome` field.
macro_rules! tm_span {
    ($kind:literal $(, $field:ident = $value:expr)* $(,)?) => {{
        #[cfg(feature = "tracing")]
        let span = ::tracing::info_span!(
            target: "transaction_manager",
            $kind,
            $($field = ::tracing::field::display(&$value),)*
            outcome = ::tracing::field::Empty
        );
        #[cfg(not(feature = "tracing"))]
        let span = {
            // Borrowed in dead code only: the values (often an index into
            // the records, with its bounds check) are not computed.
            if false {
                let _ = ($(&$value),*);
            }
            crate::trace::Span
        };
        span
    }};
}

/// A structured `tracing` event inside `parent`; nothing without the feature.
macro_rules! tm_event {
    ($level:ident, $parent:expr, $message:literal $(, $field:ident = $value:expr)* $(,)?) => {{
        #[cfg(feature = "tracing")]
        ::tracing::$level!(
            target: "transaction_manager",
            parent: $parent,
            $($field = ::tracing::field::display(&$value),)*
            $message
        );
        // Borrowed in dead code only: the values (a record's error text,
        // found through a bounds-checked index) are not computed.
        #[cfg(not(feature = "tracing"))]
        if false {
            let _ = ($parent, $(&$value),*);
        }
    }};
}

/// Shows a value with its `Debug` form, for span and event fields.
pub(crate) struct AsDebug<T>(pub(crate) T);

impl<T: core::fmt::Debug> core::fmt::Display for AsDebug<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&self.0, f)
    }
}

/// Ends a span before the backoff delay, so the delay is not counted in
/// the attempt.
pub(crate) fn close(span: Span) {
    let _ = span;
}
