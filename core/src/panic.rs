//! Panics in user code (steps, rollbacks, hooks) become failures of the
//! attempt they happened in — with the `std` feature, where unwinding can
//! be caught. Without it, panics behave as the target's panic strategy says.

use core::fmt;
use core::future::Future;

use crate::text::ErrorText;

/// The message of a panic caught in a step, a rollback or a hook.
///
/// Only produced with the `std` feature (catching a panic needs
/// unwinding); the type exists everywhere so matching on errors is the same
/// with and without it.
///
/// ```
/// # use transaction_manager_core::*;
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
pub struct PanicMessage(pub(crate) ErrorText);

impl PanicMessage {
    /// The panic's message (`"<non-string panic payload>"` when the payload
    /// was not text).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
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

/// Awaits `future`, turning a panic while polling it into `Err`.
#[cfg(feature = "std")]
pub(crate) async fn guarded<F: Future>(future: F) -> Result<F::Output, PanicMessage> {
    caught(future).await.map_err(|payload| message_of(&*payload))
}

/// Without `std`, panics are not caught.
#[cfg(not(feature = "std"))]
pub(crate) async fn guarded<F: Future>(future: F) -> Result<F::Output, PanicMessage> {
    Ok(future.await)
}

/// A caught panic's payload, to resume unwinding with later.
#[cfg(feature = "std")]
pub(crate) type Payload = std::boxed::Box<dyn core::any::Any + Send + 'static>;

/// Awaits `future`, returning a panic's payload instead of unwinding.
#[cfg(feature = "std")]
pub(crate) async fn caught<F: Future>(future: F) -> Result<F::Output, Payload> {
    use core::pin::pin;
    use core::task::Poll;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    let mut future = pin!(future);
    // The future is not polled again after it panicked, so no broken
    // invariant inside it can be observed: asserting unwind safety is sound.
    core::future::poll_fn(|cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(payload)),
    })
    .await
}

/// Runs `f`, catching a panic (used in `Drop`, where a panic while
/// unwinding would abort the process).
#[cfg(feature = "std")]
pub(crate) fn caught_sync(f: impl FnOnce()) -> Result<(), PanicMessage> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| message_of(&*payload))
}

#[cfg(not(feature = "std"))]
pub(crate) fn caught_sync(f: impl FnOnce()) -> Result<(), PanicMessage> {
    f();
    Ok(())
}

#[cfg(feature = "std")]
pub(crate) fn message_of(payload: &(dyn core::any::Any + Send)) -> PanicMessage {
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

/// Awaits the body, catching a panic in it (with `std`).
#[cfg(feature = "std")]
pub(crate) async fn guarded_body<F: Future>(body: F) -> Result<F::Output, BodyPanic> {
    caught(body).await
}

#[cfg(not(feature = "std"))]
pub(crate) async fn guarded_body<F: Future>(body: F) -> Result<F::Output, BodyPanic> {
    Ok(body.await)
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

/// The cause recorded while rolling back after the body panicked (the
/// transaction's result is never returned: the panic resumes).
pub(crate) struct BodyPanicked;
