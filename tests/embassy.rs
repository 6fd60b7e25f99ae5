//! The conformance suite on embassy-time, on the host, with embassy's own
//! `MockDriver` (virtual time): a `block_on` that, whenever the transaction
//! waits, advances the mock clock 1 ms and wakes due timers. Every scenario
//! uses whole milliseconds, so times are exact.

mod conformance;

use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use embassy_time::MockDriver;
use transaction_manager::{Clock, EmbassyClock};

/// The mock driver is global: one scenario at a time.
static DRIVER_IN_USE: Mutex<()> = Mutex::new(());

/// The longest a scenario may wait in virtual time before it is declared
/// stuck (no scenario comes near it).
const MAX_VIRTUAL_TIME: Duration = Duration::from_secs(3600);

fn block_on_mock_time<F: Future>(future: F) -> F::Output {
    let _serial = DRIVER_IN_USE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let driver = MockDriver::get();
    driver.reset();
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    let step = embassy_time::Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        driver.advance(step);
        waited += Duration::from_millis(1);
        assert!(waited < MAX_VIRTUAL_TIME, "the scenario waited an hour of virtual time: stuck");
    }
}

macro_rules! on_embassy_mock_time {
    ($scenario:path) => {{
        block_on_mock_time($scenario(EmbassyClock, conformance::Timing::Exact));
    }};
}

conformance_suite!(on_embassy_mock_time);

/// The clock reads the driver, and sleeps of any length neither overflow
/// nor end early.
#[test]
fn clock_follows_the_mock_driver() {
    block_on_mock_time(async {
        let clock = EmbassyClock;
        assert_eq!(clock.now(), Duration::ZERO);
        clock.sleep(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), Duration::from_millis(1500));
        clock.sleep(Duration::from_nanos(1)).await;
        assert!(clock.now() > Duration::from_millis(1500), "a 1 ns sleep still waits one tick");
        let mut forever = pin!(clock.sleep(Duration::MAX));
        let mut cx = Context::from_waker(Waker::noop());
        MockDriver::get().advance(embassy_time::Duration::from_secs(365 * 24 * 3600));
        assert!(forever.as_mut().poll(&mut cx).is_pending());
    });
}

/// A retry policy built from `embassy_time::Duration`s (the non-`const`
/// builders that take anything `Into<Duration>`) waits exactly those
/// intervals, capped, on embassy's clock.
#[test]
fn retry_policy_takes_embassy_durations() {
    use std::cell::RefCell;
    use transaction_manager::{RetryPolicy, StepError, TransactionManager};

    let policy = RetryPolicy::new()
        .with_max_retries(3)
        .with_initial_interval_from(embassy_time::Duration::from_millis(5))
        .with_max_interval_from(embassy_time::Duration::from_millis(15));
    assert_eq!(policy.initial_interval(), Duration::from_millis(5));
    assert_eq!(policy.max_interval(), Some(Duration::from_millis(15)));
    let attempts_at = RefCell::new(Vec::new());
    let result = block_on_mock_time(TransactionManager::new(EmbassyClock).run("embassy-retry", async |tx| {
        tx.step("flaky")
            .retry(policy)
            .run(|| async {
                attempts_at.borrow_mut().push(EmbassyClock.now());
                Err::<(), _>("not yet")
            })
            .await?;
        Ok::<_, StepError<&str>>(())
    }));
    assert!(result.is_err());
    let ms = Duration::from_millis;
    // Delays 5, 10, then 20 capped at 15.
    assert_eq!(*attempts_at.borrow(), [ms(0), ms(5), ms(15), ms(30)]);
}
