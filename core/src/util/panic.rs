//! Panics in user code (steps, rollbacks, hooks) become failures of the
//! attempt they happened in — with the `std` feature, where unwinding can
//! be caught. Without it, panics behave as the target's panic strategy says.

use core::fmt;
use core::future::Future;

#[cfg(feature = "std")]
use crate::util::text::ErrorText;

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
    #[cfg(not(feature = "std"))] crate::timing::interrupt::Never,
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

pin_project_lite::pin_project! {
    /// A future whose panics (while polling it) become `Err`: with `std`,
    /// the message of the panic; without, panics are not caught.
    pub(crate) struct Guarded<F> {
        #[pin]
        future: F,
    }
}

/// Awaits `future`, turning a panic while polling it into `Err`.
pub(crate) fn guarded<F: Future>(future: F) -> Guarded<F> {
    Guarded { future }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, PanicMessage>;

    fn poll(self: core::pin::Pin<&mut Self>, cx: &mut core::task::Context<'_>) -> core::task::Poll<Self::Output> {
        poll_catching(self.project().future, cx).map(|result| result.map_err(message_of))
    }
}

/// Calls `make` and awaits the future it returns, both inside the guard: a
/// panic in the call itself (an execute closure, a `Rollback` impl that
/// does work before its first `.await`, a hook, a clock's `sleep`) is
/// caught like a panic while polling.
pub(crate) fn guarded_call<Fut: Future>(
    make: impl FnOnce() -> Fut,
) -> impl Future<Output = Result<Fut::Output, PanicMessage>> {
    guarded(async move { make().await })
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

/// The clock's time; a `now()` that panics (against the [`Clock`]
/// contract) reads as zero instead of unwinding through the engine's
/// bookkeeping, where it could stop a rollback.
///
/// [`Clock`]: crate::Clock
pub(crate) fn now<C: crate::timing::clock::Clock + ?Sized>(clock: &C) -> core::time::Duration {
    caught(|| clock.now()).unwrap_or_else(|panic| {
        tm_error!("the clock's now() panicked: {}", panic);
        core::time::Duration::ZERO
    })
}

/// Polls `future`, returning a panic in it as `Err` (with `std`; without,
/// a panic follows the target's panic strategy and `Err` never happens).
fn poll_catching<F: Future>(
    future: core::pin::Pin<&mut F>,
    cx: &mut core::task::Context<'_>,
) -> core::task::Poll<Result<F::Output, BodyPanic>> {
    #[cfg(feature = "std")]
    {
        // The future is not polled again after it panicked, so no broken
        // invariant inside it can be observed: asserting unwind safety is
        // sound.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| future.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(payload) => core::task::Poll::Ready(Err(payload)),
        }
    }
    #[cfg(not(feature = "std"))]
    {
        future.poll(cx).map(Ok)
    }
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

/// What a panic in the body leaves: its payload (with `std`), or nothing
/// (without, where it cannot be caught).
#[cfg(feature = "std")]
pub(crate) type BodyPanic = Payload;
#[cfg(not(feature = "std"))]
pub(crate) type BodyPanic = core::convert::Infallible;

pin_project_lite::pin_project! {
    /// The body's future, with a panic in it kept (with `std`) to resume
    /// after the rollback.
    pub(crate) struct GuardedBody<F> {
        #[pin]
        body: F,
    }
}

/// Awaits the body, catching a panic in it (with `std`).
pub(crate) fn guarded_body<F: Future>(body: F) -> GuardedBody<F> {
    GuardedBody { body }
}

impl<F: Future> Future for GuardedBody<F> {
    type Output = Result<F::Output, BodyPanic>;

    fn poll(self: core::pin::Pin<&mut Self>, cx: &mut core::task::Context<'_>) -> core::task::Poll<Self::Output> {
        poll_catching(self.project().body, cx)
    }
}

/// Resumes a caught panic of the body, after its rollback.
#[cfg(feature = "std")]
pub(crate) fn resume(panic: BodyPanic) -> ! {
    std::panic::resume_unwind(panic)
}

#[cfg(not(feature = "std"))]
pub(crate) fn resume(panic: BodyPanic) -> ! {
    match panic {}
}

/// Resumes, after the rollback, a panic that was caught as a message (in
/// the interrupt: a cancel future or the clock).
#[cfg(feature = "std")]
pub(crate) fn resume_message(panic: PanicMessage) -> ! {
    std::panic::resume_unwind(std::boxed::Box::new(std::string::String::from(panic.as_str())))
}

#[cfg(not(feature = "std"))]
pub(crate) fn resume_message(panic: PanicMessage) -> ! {
    // Without `std` nothing is caught: no message exists.
    match panic.0 {}
}

/// Without `std` nothing is caught, so there is never a message to take.
#[cfg(not(feature = "std"))]
fn message_of(never: BodyPanic) -> PanicMessage {
    match never {}
}
