//! The few future combinators the engine needs, written as plain structs.
//!
//! `async fn` wrappers that take a future by value keep two copies of it in
//! their state (the argument and the awaited value), so stacking them
//! doubles a transaction's future at every layer. These store their inner
//! futures once.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use pin_project_lite::pin_project;

use crate::timing::clock::Clock;

pub(crate) enum Either<A, B> {
    Left(A),
    Right(B),
}

pin_project! {
    /// Polls both futures until one is ready; the first wins a tie.
    pub(crate) struct Race<A, B> {
        #[pin]
        a: A,
        #[pin]
        b: B,
    }
}

pub(crate) fn race<A: Future, B: Future>(a: A, b: B) -> Race<A, B> {
    Race { a, b }
}

impl<A: Future, B: Future> Future for Race<A, B> {
    type Output = Either<A::Output, B::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.a.poll(cx) {
            return Poll::Ready(Either::Left(output));
        }
        this.b.poll(cx).map(Either::Right)
    }
}

pin_project! {
    /// Runs a future, giving up when a timeout passes first (`None`). With
    /// no timeout it just runs the future; with a zero timeout the future
    /// gets exactly one poll, the same on every clock (some timers yield
    /// once even when already due). When both are ready at once, the
    /// future wins.
    ///
    /// The timer is made only when it is needed: after the future's first
    /// poll left it pending. A future that is ready at once never reads
    /// the clock, so a clock whose `sleep()` panics (against its
    /// contract) cannot fail it before it ran.
    pub(crate) struct WithTimeout<'c, F, C: Clock> {
        #[pin]
        future: F,
        #[pin]
        timer: Timer<C::Sleep>,
        clock: &'c C,
    }
}

pin_project! {
    /// A timeout's timer, made at the future's first `Pending`.
    #[project = TimerProj]
    pub(crate) enum Timer<S> {
        /// No timeout.
        Off,
        /// A zero timeout: one poll.
        Zero,
        /// Not made yet.
        Due { timeout: Duration },
        /// Running until the clock reads `end`.
        On { #[pin] sleep: S, end: Duration },
    }
}

pub(crate) fn with_timeout<'c, C: Clock, F: Future>(
    clock: &'c C,
    timeout: Option<Duration>,
    future: F,
) -> WithTimeout<'c, F, C> {
    let timer = match timeout {
        None => Timer::Off,
        Some(timeout) if timeout.is_zero() => Timer::Zero,
        Some(timeout) => Timer::Due { timeout },
    };
    WithTimeout { future, timer, clock }
}

impl<F: Future, C: Clock> Future for WithTimeout<'_, F, C> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Some(output));
        }
        poll_timer(this.timer, *this.clock, cx).map(|()| None)
    }
}

/// A timeout's timer, after its future was polled and is pending: ready
/// when the timeout passed. Not generic over the timed future, so one copy
/// serves every step and rollback on a clock (out of line where code size
/// counts).
#[cfg_attr(not(target_pointer_width = "64"), inline(never))]
fn poll_timer<C: Clock>(mut timer: Pin<&mut Timer<C::Sleep>>, clock: &C, cx: &mut Context<'_>) -> Poll<()> {
    if let TimerProj::Due { timeout } = timer.as_mut().project() {
        let timeout = *timeout;
        let end = clock.now().saturating_add(timeout);
        timer.set(Timer::On { sleep: clock.sleep(timeout), end });
    }
    // A timer that wakes early is armed again once per poll; one that is
    // done again at once (a clock whose time does not move) counts as the
    // timeout, rather than spinning here.
    let mut rearmed = false;
    loop {
        match timer.as_mut().project() {
            TimerProj::Off | TimerProj::Due { .. } => return Poll::Pending,
            TimerProj::Zero => return Poll::Ready(()),
            TimerProj::On { sleep, end } => {
                if sleep.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                // A wake-up is not proof (tokio caps a sleep at about 30
                // years): the clock says whether the timeout passed.
                let end = *end;
                let now = clock.now();
                if now >= end || rearmed {
                    return Poll::Ready(());
                }
                rearmed = true;
                timer.set(Timer::On { sleep: clock.sleep(end - now), end });
            }
        }
    }
}

pin_project! {
    /// Maps a future's output with a function pointer (`I` is the future's
    /// output).
    pub(crate) struct Map<F, I, O> {
        #[pin]
        future: F,
        map: fn(I) -> O,
    }
}

pub(crate) fn map<F: Future, O>(future: F, map: fn(F::Output) -> O) -> Map<F, F::Output, O> {
    Map { future, map }
}

impl<F: Future<Output = I>, I, O> Future for Map<F, I, O> {
    type Output = O;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<O> {
        let this = self.project();
        this.future.poll(cx).map(*this.map)
    }
}

pin_project! {
    /// An optional future: runs it if there is one, else is ready at once
    /// with `Ok(())`.
    pub(crate) struct Maybe<F> {
        #[pin]
        future: Option<F>,
    }
}

impl<F> Maybe<F> {
    pub(crate) fn new(future: Option<F>) -> Self {
        Maybe { future }
    }
}

impl<F: Future<Output = Result<(), E>>, E> Future for Maybe<F> {
    type Output = Result<(), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().future.as_pin_mut() {
            Some(future) => future.poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

pin_project! {
    /// Polls its future from a function of its own that is never inlined:
    /// the future's state machine gets its own stack frame, used only while
    /// it is polled, instead of adding its locals to the frame of every
    /// future that awaits it (LLVM does not overlap the locals of coroutines
    /// inlined into one another), and its code is compiled once, not into
    /// each caller's poll.
    pub(crate) struct Outlined<F> {
        #[pin]
        future: F,
    }
}

pub(crate) fn outlined<F: Future>(future: F) -> Outlined<F> {
    Outlined { future }
}

impl<F: Future> Future for Outlined<F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}

/// The text recorded for an attempt that ran out of time.
pub(crate) struct TimedOut(pub(crate) Duration);

impl core::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "timed out after {}", crate::util::text::Dur(self.0))
    }
}

/// A rollback timeout (`Option<Duration>`) in 12 bytes aligned to 4, where
/// an `Option<Duration>` takes 16 aligned to 8: with the 4-byte aligned
/// [`RetryPolicy`](crate::RetryPolicy), an undo record of a small undo value is 48 bytes on
/// 32-bit targets instead of 56.
#[derive(Clone, Copy)]
#[repr(Rust, packed(4))]
pub(crate) struct Timeout {
    secs: u64,
    /// `NONE` for no timeout.
    nanos: u32,
}

/// As the `Option<Duration>` it holds.
impl core::fmt::Debug for Timeout {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(&self.get(), f)
    }
}

impl Timeout {
    /// Not a valid sub-second count: no timeout.
    const NONE: u32 = 1_000_000_000;

    pub(crate) const fn new(timeout: Option<Duration>) -> Self {
        match timeout {
            Some(timeout) => Self { secs: timeout.as_secs(), nanos: timeout.subsec_nanos() },
            None => Self { secs: 0, nanos: Self::NONE },
        }
    }

    pub(crate) const fn get(self) -> Option<Duration> {
        let nanos = self.nanos;
        if nanos >= Self::NONE { None } else { Some(Duration::new(self.secs, nanos)) }
    }
}

#[cfg(test)]
mod tests {
    use super::Timeout;
    use core::time::Duration;

    #[test]
    fn a_packed_timeout_is_the_timeout() {
        for timeout in [None, Some(Duration::ZERO), Some(Duration::new(1, 500)), Some(Duration::MAX)] {
            assert_eq!(Timeout::new(timeout).get(), timeout);
        }
    }
}
