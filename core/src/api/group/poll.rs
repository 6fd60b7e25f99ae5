//! Polling the members: their attempts, timeouts and backoffs under one timer.

use super::*;

/// What woke the group.
pub(super) enum Event<E> {
    /// Member `i`'s attempt ended.
    Ended(usize, Result<(), StepErrorKind<E>>),
    /// Member `i`'s attempt ran out of time.
    TimedOut(usize),
    /// Member `i`'s backoff is over.
    Due(usize),
}

/// Polls every attempt in flight (an attempt ready at its timeout wins),
/// then the timeouts and backoffs, with one timer for the earliest of them.
pub(super) fn poll_members<Ms, U, E, C>(
    clock: &C,
    mut pinned: Pin<&mut Ms::Pinned>,
    n: usize,
    timer: &mut Pin<&mut Option<C::Sleep>>,
    timer_at: &mut Option<Duration>,
    cx: &mut Context<'_>,
) -> Poll<Event<E>>
where
    Ms: Members<U, E>,
    C: Clock,
{
    for i in 0..n {
        let mut slot = Ms::slot(pinned.as_mut(), i);
        if !matches!(slot.as_mut().run_mut().phase, Phase::Running { .. }) {
            continue;
        }
        let span = slot.as_mut().run_mut().span.take();
        let polled = within_span(&span, || caught(|| slot.as_mut().poll_attempt(cx)));
        slot.as_mut().run_mut().span = span;
        match polled {
            Ok(Poll::Pending) => {}
            Ok(Poll::Ready(result)) => {
                slot.as_mut().stop();
                return Poll::Ready(Event::Ended(i, result.map_err(StepErrorKind::Failed)));
            }
            Err(panic) => {
                slot.as_mut().stop();
                return Poll::Ready(Event::Ended(i, Err(StepErrorKind::Panicked(panic))));
            }
        }
    }
    loop {
        let now = crate::timing::clock::now(clock);
        let mut wake: Option<Duration> = None;
        for i in 0..n {
            let mut slot = Ms::slot(pinned.as_mut(), i);
            let until = match slot.as_mut().run_mut().phase {
                Phase::Running { until: Some(until) } if until <= now => return Poll::Ready(Event::TimedOut(i)),
                Phase::Backoff { until } if until <= now => return Poll::Ready(Event::Due(i)),
                Phase::Running { until: Some(until) } | Phase::Backoff { until } => until,
                _ => continue,
            };
            wake = Some(wake.map_or(until, |w| w.min(until)));
        }
        let Some(wake) = wake else {
            timer.set(None);
            *timer_at = None;
            return Poll::Pending;
        };
        if *timer_at != Some(wake) {
            match caught(|| clock.sleep(wake.saturating_sub(now))) {
                Ok(sleep) => timer.set(Some(sleep)),
                Err(panic) => {
                    // The clock broke its contract: nothing wakes this group
                    // but its attempts (or the transaction's interrupt).
                    tm_error!("the clock's sleep() panicked in a parallel group: {}", panic);
                    timer.set(None);
                }
            }
            *timer_at = Some(wake);
        }
        let fired = match timer.as_mut().as_pin_mut() {
            Some(sleep) => matches!(caught(|| sleep.poll(cx)), Ok(Poll::Ready(())) | Err(_)),
            None => false,
        };
        if !fired {
            return Poll::Pending;
        }
        timer.set(None);
        *timer_at = None;
    }
}

/// Where a member is in its life.
#[derive(Clone, Copy, Debug, Default)]
pub enum Phase {
    /// Its next attempt starts as soon as the group gets to it.
    #[default]
    Due,
    /// An attempt is in flight, timing out at `until`.
    Running { until: Option<Duration> },
    /// Waiting to retry until `until`.
    Backoff { until: Duration },
    /// Completed or failed for good.
    Done,
}

/// A member's options and bookkeeping while its group runs.
pub struct Run {
    pub(crate) settings: Settings,
    /// Its way through its attempts, as a plain step's.
    pub(crate) step: StepRun,
    pub(crate) phase: Phase,
    pub(crate) span: Option<crate::trace::Span>,
}

impl Run {
    pub(super) fn new(settings: Settings) -> Self {
        Run { settings, step: StepRun::default(), phase: Phase::Due, span: None }
    }

    pub(super) fn is_due(&self) -> bool {
        matches!(self.phase, Phase::Due)
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run").field("index", &self.step.index).field("phase", &self.phase).finish_non_exhaustive()
    }
}
