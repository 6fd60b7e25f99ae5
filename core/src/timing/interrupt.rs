//! Stopping a running transaction from outside — a deadline for the whole
//! transaction, or a cancel signal — so that it rolls back before it gives
//! up, on any runtime.

use core::fmt;
use core::future::{Future, pending};
use core::time::Duration;

use crate::{timing::clock::Clock, util::text::Name};

/// Why a transaction was stopped from outside its body.
///
/// ```
/// use core::time::Duration;
/// use transaction_manager::interrupt::InterruptReason;
/// let why = InterruptReason::DeadlineExceeded { deadline: Duration::from_secs(30) };
/// assert_eq!(why.to_string(), "the transaction's deadline of 30s passed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InterruptReason {
    /// The whole-transaction deadline passed
    /// ([`TransactionBuilder::with_deadline`](crate::TransactionBuilder::with_deadline)).
    DeadlineExceeded {
        /// The deadline, from the start of the transaction.
        deadline: Duration,
    },
    /// The cancel signal fired
    /// ([`TransactionBuilder::cancel_on`](crate::TransactionBuilder::cancel_on)).
    Cancelled,
}

impl fmt::Display for InterruptReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InterruptReason::DeadlineExceeded { deadline } => {
                write!(f, "the transaction's deadline of {} passed", crate::util::text::Dur(*deadline))
            }
            InterruptReason::Cancelled => f.write_str("the transaction was cancelled"),
        }
    }
}

/// A transaction stopped from outside: its body was dropped at its current
/// await point (the step in progress, if any, is abandoned and counts as
/// failed) and the completed steps were rolled back.
///
/// This is the error value the body's error type is built from, with
/// `From<Interrupted>`: a transaction with a deadline or a cancel signal
/// needs `B: From<Interrupted>`. `StepError<E>` has it, so a body returning
/// `Result<T, StepError<E>>` works unchanged.
///
/// ```
/// use core::time::Duration;
/// use transaction_manager::*;
/// use transaction_manager::interrupt::{InterruptReason, Interrupted};
///
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let err = clock.block_on(
///     manager
///         .transaction("slow")
///         .with_deadline(Duration::from_secs(1))
///         .fixed::<NoRollback, 2>()
///         .run(async |tx| {
///             tx.step("wait").run(|| async { clock.sleep(Duration::from_secs(5)).await; Ok::<_, &str>(()) }).await
///         }),
/// ).unwrap_err();
/// assert_eq!(
///     err.cause().kind(),
///     &StepErrorKind::Interrupted(InterruptReason::DeadlineExceeded { deadline: Duration::from_secs(1) })
/// );
/// assert_eq!(err.cause().step(), "wait");
/// assert_eq!(clock.now(), Duration::from_secs(1));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interrupted {
    pub(crate) reason: InterruptReason,
    /// The step in progress when it happened, and its index.
    pub(crate) step: Option<(Name, usize)>,
    /// How many steps had started.
    pub(crate) steps: usize,
}

impl Interrupted {
    /// Why.
    pub fn reason(&self) -> InterruptReason {
        self.reason
    }

    /// The step that was in progress, if the body was inside one.
    pub fn step(&self) -> Option<&Name> {
        self.step.as_ref().map(|(name, _)| name)
    }
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.step {
            Some((name, _)) => write!(f, "{} during step `{name}`", self.reason),
            None => write!(f, "{} between steps", self.reason),
        }
    }
}

impl core::error::Error for Interrupted {}

/// A value that cannot exist: what [`NoInterrupt`] resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Never {}

/// Something that can stop a transaction from outside. Implemented by
/// [`NoInterrupt`] (the default), [`Deadline`], [`Cancel`] and pairs of
/// them; set with the builder's `with_deadline` and `cancel_on`.
pub trait Interrupt<C> {
    /// [`InterruptReason`] for real interrupts, [`Never`] for none.
    type Output: IntoReason + Copy;

    /// Resolves when the transaction must stop.
    fn wait(self, clock: &C) -> impl Future<Output = Self::Output>;

    /// The deadline among these interrupts, if any, from when the body
    /// starts: no step or retry starts at or after it, even if the body is
    /// polled before `wait` resolves.
    fn deadline(&self) -> Option<Duration> {
        None
    }
}

/// No interrupt: the transaction runs until its body returns.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInterrupt;

impl<C> Interrupt<C> for NoInterrupt {
    type Output = Never;

    fn wait(self, _: &C) -> impl Future<Output = Never> {
        pending()
    }
}

/// A deadline for the whole transaction, measured on its clock from when
/// the body starts.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Duration);

impl<C: Clock> Interrupt<C> for Deadline {
    type Output = InterruptReason;

    fn wait(self, clock: &C) -> impl Future<Output = InterruptReason> {
        let end = clock.now().saturating_add(self.0);
        UntilDeadline { sleep: clock.sleep(self.0), clock, end, deadline: self.0 }
    }

    fn deadline(&self) -> Option<Duration> {
        Some(self.0)
    }
}

pin_project_lite::pin_project! {
    /// Sleeps until the clock reads `end`. A timer that wakes early (tokio
    /// caps a sleep at about 30 years, so a `Duration::MAX` deadline wakes
    /// then) is slept again for what is left: a wake-up is not proof that
    /// the deadline passed, the clock is.
    struct UntilDeadline<'c, C: Clock> {
        #[pin]
        sleep: C::Sleep,
        clock: &'c C,
        end: Duration,
        deadline: Duration,
    }
}

impl<C: Clock> Future for UntilDeadline<'_, C> {
    type Output = InterruptReason;

    fn poll(self: core::pin::Pin<&mut Self>, cx: &mut core::task::Context<'_>) -> core::task::Poll<InterruptReason> {
        let mut this = self.project();
        // Armed again once per poll: a timer done again at once (a clock
        // whose time does not move) counts as the deadline, rather than
        // spinning here.
        let mut rearmed = false;
        loop {
            if this.sleep.as_mut().poll(cx).is_pending() {
                return core::task::Poll::Pending;
            }
            let now = this.clock.now();
            if now >= *this.end || rearmed {
                return core::task::Poll::Ready(InterruptReason::DeadlineExceeded { deadline: *this.deadline });
            }
            rearmed = true;
            this.sleep.set(this.clock.sleep(*this.end - now));
        }
    }
}

/// A cancel signal: the transaction stops when the future completes (an
/// `embassy_sync::signal::Signal::wait()`, a `tokio::sync::oneshot`
/// receiver, a `CancellationToken::cancelled()`...).
#[derive(Debug)]
pub struct Cancel<F>(pub F);

impl<C, F: Future> Interrupt<C> for Cancel<F> {
    type Output = InterruptReason;

    fn wait(self, _: &C) -> impl Future<Output = InterruptReason> {
        Then { future: self.0, value: InterruptReason::Cancelled }
    }
}

pin_project_lite::pin_project! {
    /// Completes with `value` when `future` completes.
    struct Then<F> {
        #[pin]
        future: F,
        value: InterruptReason,
    }
}

impl<F: Future> Future for Then<F> {
    type Output = InterruptReason;

    fn poll(self: core::pin::Pin<&mut Self>, cx: &mut core::task::Context<'_>) -> core::task::Poll<InterruptReason> {
        let this = self.project();
        this.future.poll(cx).map(|_| *this.value)
    }
}

/// The first of two interrupts.
impl<C, A, B> Interrupt<C> for (A, B)
where
    A: Interrupt<C>,
    B: Interrupt<C>,
{
    type Output = InterruptReason;

    fn wait(self, clock: &C) -> impl Future<Output = InterruptReason> {
        let (a, b) = self;
        crate::timing::future::map(crate::timing::future::race(a.wait(clock), b.wait(clock)), |either| match either {
            crate::timing::future::Either::Left(first) => first.into_reason(),
            crate::timing::future::Either::Right(second) => second.into_reason(),
        })
    }

    fn deadline(&self) -> Option<Duration> {
        match (self.0.deadline(), self.1.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What an interrupt resolved to, as the reason the transaction stopped.
pub trait IntoReason {
    /// As an [`InterruptReason`].
    fn into_reason(self) -> InterruptReason;
}

impl IntoReason for Never {
    fn into_reason(self) -> InterruptReason {
        match self {}
    }
}

impl IntoReason for InterruptReason {
    fn into_reason(self) -> InterruptReason {
        self
    }
}

/// Builds the body's error from what an interrupt resolved to: any error
/// type for [`Never`] (no interrupt can happen), one that converts from
/// [`Interrupted`] for a real [`InterruptReason`].
pub trait IntoBodyError<B> {
    /// The body's error, given the step in progress and how many steps
    /// had started.
    fn into_body_error(self, step: Option<(Name, usize)>, steps: usize) -> B;
}

impl<B> IntoBodyError<B> for Never {
    fn into_body_error(self, _: Option<(Name, usize)>, _: usize) -> B {
        match self {}
    }
}

impl<B: From<Interrupted>> IntoBodyError<B> for InterruptReason {
    fn into_body_error(self, step: Option<(Name, usize)>, steps: usize) -> B {
        B::from(Interrupted { reason: self, step, steps })
    }
}
