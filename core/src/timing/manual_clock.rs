//! Virtual time for deterministic tests.

use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::{Pin, pin};
use core::task::{Context, Poll, Waker};
use core::time::Duration;

use crate::timing::clock::Clock;

/// How many sleeps can wait on one [`ManualClock`] with a registered waker.
/// Further sleeps still work: they re-poll themselves until their deadline.
const SLOTS: usize = 32;

/// Consecutive polls without progress and without a pending timer after
/// which [`ManualClock::block_on`] gives up (see its `# Panics`).
const STALL_LIMIT: u32 = 100_000;

/// A [`Clock`] whose time moves only when a test moves it.
///
/// Time starts at zero. [`advance`](ManualClock::advance) moves it forward and
/// wakes every sleep whose deadline has passed; [`block_on`](ManualClock::block_on)
/// drives a future to completion and, whenever the future can only make
/// progress by time passing, jumps straight to the next deadline — so a test
/// of a 30-second timeout with three retries runs in microseconds, and the
/// times it observes are exact.
///
/// `ManualClock` is for tests: it uses `Cell`s, so it is `!Sync` and a
/// transaction that uses it is `!Send`. `&ManualClock` is the [`Clock`]:
/// the test keeps the clock and lends it to the transaction.
///
/// ```
/// use core::time::Duration;
/// use transaction_manager::ManualClock;
///
/// let clock = ManualClock::new();
/// let slept = clock.block_on(async {
///     clock.sleep(Duration::from_secs(30)).await;
///     clock.now()
/// });
/// assert_eq!(slept, Duration::from_secs(30));
/// ```
pub struct ManualClock {
    now: Cell<Duration>,
    slots: RefCell<[Slot; SLOTS]>,
    /// Earliest deadline of the sleeps that found no free slot.
    overflow: Cell<Option<Duration>>,
}

#[derive(Default)]
struct Slot {
    deadline: Option<Duration>,
    waker: Option<Waker>,
}

impl ManualClock {
    /// The current virtual time.
    ///
    /// ```
    /// # use transaction_manager::ManualClock;
    /// assert_eq!(ManualClock::new().now(), core::time::Duration::ZERO);
    /// ```
    pub fn now(&self) -> Duration {
        self.now.get()
    }

    /// A future that completes once virtual time has moved `duration` past
    /// the current time. The same as `Clock::sleep` on `&ManualClock`.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::ManualClock;
    /// let clock = ManualClock::new();
    /// clock.block_on(clock.sleep(Duration::from_secs(1)));
    /// assert_eq!(clock.now(), Duration::from_secs(1));
    /// ```
    pub fn sleep(&self, duration: Duration) -> ManualSleep<'_> {
        ManualSleep { clock: self, deadline: self.now.get().saturating_add(duration), slot: None }
    }

    /// A clock at time zero with no pending sleeps.
    pub fn new() -> Self {
        Self { now: Cell::new(Duration::ZERO), slots: RefCell::new(Default::default()), overflow: Cell::new(None) }
    }

    /// Moves time forward by `by` (saturating at `Duration::MAX`) and wakes
    /// the sleeps that are due.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::ManualClock;
    /// let clock = ManualClock::new();
    /// clock.advance(Duration::from_millis(1500));
    /// assert_eq!(clock.now(), Duration::from_millis(1500));
    /// ```
    pub fn advance(&self, by: Duration) {
        self.advance_to(self.now.get().saturating_add(by));
    }

    /// Moves time forward to `to` and wakes the sleeps that are due. Time
    /// never goes backwards: a `to` in the past leaves it where it is.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::ManualClock;
    /// let clock = ManualClock::new();
    /// clock.advance_to(Duration::from_secs(2));
    /// clock.advance_to(Duration::from_secs(1));
    /// assert_eq!(clock.now(), Duration::from_secs(2));
    /// ```
    pub fn advance_to(&self, to: Duration) {
        let now = to.max(self.now.get());
        self.now.set(now);
        if self.overflow.get().is_some_and(|d| d <= now) {
            self.overflow.set(None);
        }
        // Take the wakers out before waking them: a waker may poll a sleep
        // of this clock synchronously, which borrows the slots again.
        let mut due: [Option<Waker>; SLOTS] = Default::default();
        for (slot, out) in self.slots.borrow_mut().iter_mut().zip(due.iter_mut()) {
            if slot.deadline.is_some_and(|d| d <= now) {
                *out = slot.waker.take();
            }
        }
        due.into_iter().flatten().for_each(Waker::wake);
    }

    /// The earliest deadline among the sleeps waiting on this clock.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::ManualClock;
    /// let clock = ManualClock::new();
    /// assert_eq!(clock.next_deadline(), None);
    /// ```
    pub fn next_deadline(&self) -> Option<Duration> {
        let slots = self.slots.borrow();
        let registered = slots.iter().filter_map(|s| s.deadline).min();
        match (registered, self.overflow.get()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs `future` to completion on the current thread, advancing virtual
    /// time to the next deadline whenever the future is waiting.
    ///
    /// # Panics
    ///
    /// Panics if the future stays pending for 100,000 polls in a row without
    /// waking itself while no sleep is waiting on this clock: it waits on
    /// something that only another thread or runtime could provide, and
    /// would never finish here. (Without the `alloc` feature wakes cannot be
    /// observed, so 100,000 pending polls in a row without a timer count as
    /// stuck even if the future woke itself each time.)
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::ManualClock;
    /// let clock = ManualClock::new();
    /// let value = clock.block_on(async {
    ///     clock.sleep(Duration::from_millis(500)).await;
    ///     42
    /// });
    /// assert_eq!((value, clock.now()), (42, Duration::from_millis(500)));
    /// ```
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let mut future = pin!(future);
        let woken = WakeFlag::new();
        let waker = woken.waker();
        let mut cx = Context::from_waker(&waker);
        let mut idle = 0u32;
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            if woken.take() {
                // It woke itself (a yield, a channel): progress, poll again.
                idle = 0;
                continue;
            }
            match self.next_deadline() {
                Some(deadline) => {
                    idle = 0;
                    self.advance_to(deadline);
                }
                None => {
                    // Nothing woke it and no timer will: it waits on
                    // something outside this clock. (Without `alloc` there
                    // is no real waker, so every pending poll lands here,
                    // and only a long run of them counts as stuck.)
                    idle += 1;
                    assert!(
                        idle < STALL_LIMIT,
                        "ManualClock::block_on: the future is pending and no sleep waits on this \
                         clock; it can never finish"
                    );
                }
            }
        }
    }

    fn register(&self, slot: &mut Option<usize>, deadline: Duration, waker: &Waker) {
        let mut slots = self.slots.borrow_mut();
        let index = slot.or_else(|| slots.iter().position(|s| s.deadline.is_none()));
        match index {
            Some(i) => {
                *slot = Some(i);
                slots[i].deadline = Some(deadline);
                match &mut slots[i].waker {
                    Some(w) if w.will_wake(waker) => {}
                    w => *w = Some(waker.clone()),
                }
            }
            None => {
                let earliest = self.overflow.get().map_or(deadline, |d| d.min(deadline));
                self.overflow.set(Some(earliest));
                waker.wake_by_ref();
            }
        }
    }

    fn release(&self, slot: Option<usize>) {
        if let Some(i) = slot {
            self.slots.borrow_mut()[i] = Slot::default();
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now.get())
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

impl<'a> Clock for &'a ManualClock {
    type Sleep = ManualSleep<'a>;

    fn now(&self) -> Duration {
        self.now.get()
    }

    fn sleep(&self, duration: Duration) -> Self::Sleep {
        ManualClock::sleep(self, duration)
    }
}

/// The future of [`ManualClock`]'s `sleep`: ready once virtual time reaches
/// its deadline.
#[must_use = "futures do nothing unless awaited"]
#[derive(Debug)]
pub struct ManualSleep<'a> {
    clock: &'a ManualClock,
    deadline: Duration,
    slot: Option<usize>,
}

impl Future for ManualSleep<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let clock = this.clock;
        if clock.now.get() >= this.deadline {
            clock.release(this.slot.take());
            return Poll::Ready(());
        }
        clock.register(&mut this.slot, this.deadline, cx.waker());
        Poll::Pending
    }
}

impl Drop for ManualSleep<'_> {
    fn drop(&mut self) {
        self.clock.release(self.slot.take());
    }
}

/// Whether the future `block_on` drives has woken itself since the last
/// poll. A real waker needs `Arc` (and atomics); without them every poll is
/// treated as "not woken".
#[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
struct WakeFlag(alloc::sync::Arc<Flag>);

#[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
struct Flag(core::sync::atomic::AtomicBool);

#[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
impl alloc::task::Wake for Flag {
    fn wake(self: alloc::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &alloc::sync::Arc<Self>) {
        self.0.store(true, core::sync::atomic::Ordering::Release);
    }
}

#[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
impl WakeFlag {
    fn new() -> Self {
        Self(alloc::sync::Arc::new(Flag(core::sync::atomic::AtomicBool::new(false))))
    }

    fn waker(&self) -> Waker {
        Waker::from(self.0.clone())
    }

    fn take(&self) -> bool {
        self.0.0.swap(false, core::sync::atomic::Ordering::Acquire)
    }
}

#[cfg(not(all(feature = "alloc", target_has_atomic = "ptr")))]
struct WakeFlag;

#[cfg(not(all(feature = "alloc", target_has_atomic = "ptr")))]
impl WakeFlag {
    fn new() -> Self {
        Self
    }

    fn waker(&self) -> Waker {
        Waker::noop().clone()
    }

    fn take(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending `n` times, waking itself each time (a yield).
    #[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
    struct Yields(u32);

    #[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
    impl Future for Yields {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 == 0 {
                return Poll::Ready(());
            }
            self.0 -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[cfg(all(feature = "alloc", target_has_atomic = "ptr"))]
    #[test]
    fn many_self_wakes_are_progress_not_a_stall() {
        let clock = ManualClock::new();
        clock.block_on(Yields(3 * STALL_LIMIT));
    }

    #[test]
    #[should_panic(expected = "can never finish")]
    fn a_future_nothing_can_wake_is_reported() {
        let clock = ManualClock::new();
        clock.block_on(core::future::pending::<()>());
    }

    #[test]
    fn sleeps_end_exactly_at_their_deadline() {
        let clock = ManualClock::new();
        let order = core::cell::RefCell::new(heapless::Vec::<u64, 4>::new());
        clock.block_on(async {
            let late = async {
                clock.sleep(Duration::from_millis(30)).await;
                order.borrow_mut().push(30).unwrap();
            };
            let early = async {
                clock.sleep(Duration::from_millis(10)).await;
                order.borrow_mut().push(10).unwrap();
            };
            crate::timing::future::race(crate::timing::future::race(late, early), core::future::pending::<()>()).await;
        });
        assert_eq!(order.borrow().as_slice(), [10]);
        assert_eq!(clock.now(), Duration::from_millis(10));
    }
}
