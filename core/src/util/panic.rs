//! Panics in user code (steps, rollbacks, hooks) become failures of the
//! attempt they happened in — with the `std` feature, where unwinding can
//! be caught. Without it, panics behave as the target's panic strategy says.

use core::future::Future;

use crate::util::text::PanicMessage;
#[cfg(not(feature = "std"))]
use crate::util::text::message_of;
#[cfg(feature = "std")]
use crate::util::text::{Payload, message_of};

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
