//! Retry conditions: errors a step or a rollback says are permanent fail
//! it for good at once, with no backoff wait, in steps, rollbacks and
//! group members alike; a condition that panics is a failed condition.

use transaction_manager::*;

use transaction_manager::{group::member, rollback::BoxError};

use super::{Log, Recorder, Timing};

type R<T> = Result<T, StepError<&'static str>>;

fn manager<C: Clock>(clock: C, log: &Log) -> TransactionManager<C, Recorder> {
    TransactionManager::new(clock).with_hooks(Recorder(log.clone()))
}

/// The error a zone API answers when it will never accept the name.
const REFUSED: &str = "zone refuses this name";

/// A step whose condition rejects an error fails for good on that attempt:
/// no backoff wait, no further attempt, and its record says why. Errors
/// the condition accepts are retried as before; the completed step before
/// it is rolled back.
pub async fn permanent_errors_are_not_retried<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let start = clock.now();
    let mut calls = 0u32;
    let err = manager
        .run("register", async |tx| {
            tx.step("reserve")
                .execute(|| async { Ok(1u8) })
                .rollback(move |_| async move {
                    log.push("undo reserve");
                    Ok::<_, &str>(())
                })
                .await?;
            tx.step("name")
                .retry(t.retries(3))
                .execute(|| {
                    calls += 1;
                    let error = if calls == 1 { "busy" } else { REFUSED };
                    async move { Err::<(), _>(error) }
                })
                .retry_if(|error| *error != REFUSED)
                .no_rollback()
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("the name is refused");

    assert_eq!(calls, 2, "not retried after the permanent error");
    // One backoff (after "busy"), none after the refusal.
    t.assert_at(clock.now() - start, t.ms(500));
    assert_eq!(err.cause().kind(), &StepErrorKind::Failed(REFUSED), "the error stays typed");
    let step = &err.summary().steps()[1];
    assert_eq!((step.status(), step.attempts()), (StepStatus::Failed, 2));
    assert_eq!(step.error(), Some("not retried: permanent: zone refuses this name"));
    let failures: Vec<_> =
        log.take().into_iter().filter(|e| e.starts_with("hook failure") || !e.starts_with("hook")).collect();
    assert_eq!(
        failures,
        [
            "hook failure name #1 in_progress: busy",
            "hook failure name #2 failed: not retried: permanent: zone refuses this name",
            "undo reserve",
        ]
    );
    assert_eq!(err.summary().steps()[0].status(), StepStatus::RolledBack);
}

/// An undo record (data) that says which of its errors are permanent.
#[derive(Debug)]
pub enum DnsUndo {
    /// Delete a record; the zone answers `REFUSED` for a locked one.
    Delete(&'static str),
}

impl Rollback<()> for DnsUndo {
    type Error = &'static str;

    async fn rollback(&mut self, _: &mut ()) -> Result<(), &'static str> {
        let DnsUndo::Delete(answer) = self;
        Err(*answer)
    }

    fn retry_if(&mut self, error: &&'static str) -> bool {
        *error != REFUSED
    }
}

/// A rollback whose condition rejects its error fails for good at once
/// (rollback-failed, "not retried"), and rollback goes on with the earlier
/// steps: for closure rollbacks (the step's `rollback_retry_if`) and for
/// undo records as data (`Rollback::retry_if`).
pub async fn permanent_rollback_errors_are_not_retried<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let start = clock.now();
    let err = manager
        .run("closures", async |tx| {
            tx.step("first")
                .execute(|| async { Ok(()) })
                .rollback(move |()| async move {
                    log.push("undo first");
                    Ok::<_, &str>(())
                })
                .await?;
            tx.step("record")
                .retry(t.retries(3))
                .execute(|| async { Ok(()) })
                .rollback_retry_if(|error: &BoxError| error.to_string() != REFUSED)
                .rollback(move |()| async move {
                    log.push("undo record");
                    Err::<(), _>(REFUSED)
                })
                .await?;
            tx.step("fails").run(|| async { Err::<(), _>("boom") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("the body fails");
    t.assert_at(clock.now() - start, t.ms(0));
    assert_eq!(log.calls(), ["undo record", "undo first"], "one attempt, then the earlier step");
    let [failure] = err.rollback_failures() else { panic!("{:?}", err.rollback_failures()) };
    assert_eq!(failure.step(), "record");
    let record = &err.summary().steps()[1];
    assert_eq!((record.status(), record.rollback_attempts()), (StepStatus::RollbackFailed, 1));
    assert_eq!(record.rollback_error(), Some("not retried: permanent: zone refuses this name"));

    // As data: the undo type's own condition.
    let manager = TransactionManager::new(clock.clone());
    let start = clock.now();
    let err = manager
        .transaction("data")
        .fixed::<DnsUndo, 2>()
        .run(async |tx| {
            tx.step("locked")
                .retry(t.retries(3))
                .execute(|| async { Ok(()) })
                .undo(|()| DnsUndo::Delete(REFUSED))
                .await?;
            tx.step("busy").retry(t.retries(1)).execute(|| async { Ok(()) }).undo(|()| DnsUndo::Delete("busy")).await?;
            tx.step("fails").run(|| async { Err::<(), _>("boom") }).await?;
            R::Ok(())
        })
        .await
        .expect_err("the body fails");
    // "busy" is retried once (500 ms), the refusal is not retried.
    t.assert_at(clock.now() - start, t.ms(500));
    let steps = err.summary().steps();
    assert_eq!((steps[1].rollback_attempts(), steps[1].rollback_error()), (2, Some("busy")));
    assert_eq!(
        (steps[0].status(), steps[0].rollback_attempts(), steps[0].rollback_error()),
        (StepStatus::RollbackFailed, 1, Some("not retried: permanent: zone refuses this name"))
    );
}

/// A condition that panics is a failed condition: the attempt fails for
/// good with the panic recorded, the transaction rolls back as for any
/// failure, and the panic does not escape.
pub async fn panicking_retry_conditions_fail_for_good<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let start = clock.now();
    let err = manager
        .run("buggy condition", async |tx| {
            tx.step("first")
                .retry(t.retries(2))
                .execute(|| async { Ok(()) })
                .rollback_retry_if(|_: &BoxError| panic!("injected: rollback condition bug"))
                .rollback(move |()| async move {
                    log.push("undo first");
                    Err::<(), _>("undo failed")
                })
                .await?;
            tx.step("second")
                .retry(t.retries(2))
                .execute(|| async { Err::<(), _>("busy") })
                .retry_if(|_| panic!("injected: condition bug"))
                .no_rollback()
                .await?;
            R::Ok(())
        })
        .await
        .expect_err("the step fails");
    t.assert_at(clock.now() - start, t.ms(0));
    assert_eq!(err.cause().kind(), &StepErrorKind::Failed("busy"));
    let steps = err.summary().steps();
    assert_eq!((steps[1].status(), steps[1].attempts()), (StepStatus::Failed, 1));
    assert_eq!(steps[1].error(), Some("not retried: the retry condition panicked (injected: condition bug): busy"));
    assert_eq!(log.calls(), ["undo first"]);
    assert_eq!((steps[0].status(), steps[0].rollback_attempts()), (StepStatus::RollbackFailed, 1));
    assert_eq!(
        steps[0].rollback_error(),
        Some("not retried: the retry condition panicked (injected: rollback condition bug): undo failed")
    );
}

/// A group member's condition works as a step's: the member fails for
/// good at once, the other members finish, and the body rolls them back;
/// a member's rollback condition stops its rollback's retries.
pub async fn group_members_take_retry_conditions<C: Clock + Clone>(clock: C, t: Timing) {
    let log = Log::leaked();
    let manager = manager(clock.clone(), log);
    let start = clock.now();
    let mut calls = 0u32;
    let err = manager
        .run("group", async |tx| {
            tx.parallel((
                member("name")
                    .retry(t.retries(3))
                    .execute(|| {
                        calls += 1;
                        let error = if calls == 1 { "busy" } else { REFUSED };
                        async move { Err::<(), _>(error) }
                    })
                    .retry_if(|error| *error != REFUSED),
                member("buggy")
                    .retry(t.retries(3))
                    .execute(|| async { Err::<(), _>("busy") })
                    .retry_if(|_| panic!("injected: member condition bug")),
                member("ok").execute(|| async { Ok(()) }).rollback(move |()| async move {
                    log.push("undo ok");
                    Ok::<_, &str>(())
                }),
                member("locked")
                    .retry(t.retries(3))
                    .execute(|| async { Ok(()) })
                    .rollback(move |()| async move {
                        log.push("undo locked");
                        Err::<(), _>(REFUSED)
                    })
                    .rollback_retry_if(|error: &BoxError| error.to_string() != REFUSED),
            ))
            .await?;
            R::Ok(())
        })
        .await
        .expect_err("a member fails");
    t.assert_at(clock.now() - start, t.ms(500));
    assert_eq!(calls, 2);
    let steps = err.summary().steps();
    assert_eq!((steps[0].status(), steps[0].attempts()), (StepStatus::Failed, 2));
    assert_eq!(steps[0].error(), Some("not retried: permanent: zone refuses this name"));
    assert_eq!((steps[1].status(), steps[1].attempts()), (StepStatus::Failed, 1));
    assert_eq!(
        steps[1].error(),
        Some("not retried: the retry condition panicked (injected: member condition bug): busy")
    );
    assert_eq!(steps[2].status(), StepStatus::RolledBack);
    assert_eq!(
        (steps[3].status(), steps[3].rollback_attempts(), steps[3].rollback_error()),
        (StepStatus::RollbackFailed, 1, Some("not retried: permanent: zone refuses this name"))
    );
    assert_eq!(log.calls(), ["undo locked", "undo ok"]);
}
