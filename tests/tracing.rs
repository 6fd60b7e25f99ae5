//! The `tracing` feature: the span tree of a failing transaction, captured
//! with a test subscriber and compared whole.

#[path = "../examples/common/tree.rs"]
mod tree;

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt;
use transaction_manager::group::member;
use transaction_manager::*;

#[test]
fn spans_form_a_tree_with_outcomes() {
    let tree = tree::TreeLayer::default();
    let subscriber = tracing_subscriber::registry().with(tree.clone());
    let clock = &ManualClock::new();
    let manager = TransactionManager::new(clock);
    tracing::subscriber::with_default(subscriber, || {
        let mut calls = 0;
        let result =
            clock.block_on(manager.transaction("provision").with_id(TransactionId::new(7)).local().run(async |tx| {
                tx.step("create_user")
                    .execute(|| async { Ok::<_, &str>(1) })
                    .rollback(|_| async { Err::<(), _>("locked") })
                    .await?;
                tx.step("create_vm")
                    .retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(Duration::from_millis(100)))
                    .timeout(Duration::from_secs(1))
                    .run(|| {
                        calls += 1;
                        let first = calls == 1;
                        async move {
                            if first {
                                Err("quota")
                            } else {
                                clock.sleep(Duration::from_secs(5)).await;
                                Ok(())
                            }
                        }
                    })
                    .await?;
                Ok::<_, StepError<&str>>(())
            }));
        assert!(result.is_err());
    });
    assert_eq!(
        tree.render(),
        "\
transaction{id=tx-7 operation=provision outcome=partially_rolled_back}
  step{name=create_user index=0 attempt=1 outcome=ok}
  step{name=create_vm index=1 attempt=1 outcome=error}
    WARN attempt failed error=quota
    INFO retrying delay=100ms
  step{name=create_vm index=1 attempt=2 outcome=timeout}
    WARN attempt failed error=timed out after 1s
  rollback{step=create_user index=0 attempt=1 outcome=error}
    ERROR rollback attempt failed error=locked
"
    );
}

/// A parallel group: one span per member attempt, with its outcome, and
/// the retry events inside the attempt that failed.
#[test]
fn group_members_have_spans_of_their_own() {
    let tree = tree::TreeLayer::default();
    let subscriber = tracing_subscriber::registry().with(tree.clone());
    let clock = &ManualClock::new();
    let manager = TransactionManager::new(clock);
    tracing::subscriber::with_default(subscriber, || {
        let mut calls = 0;
        let result =
            clock.block_on(manager.transaction("provision").with_id(TransactionId::new(8)).local().run(async |tx| {
                tx.parallel((
                    member("create_vm").timeout(Duration::from_secs(1)).execute(|| async {
                        clock.sleep(Duration::from_secs(5)).await;
                        Ok::<_, &str>(())
                    }),
                    member("reserve_ip").retry(RetryPolicy::new().with_max_retries(1)).execute(|| {
                        calls += 1;
                        let first = calls == 1;
                        async move { if first { Err("busy") } else { Ok(()) } }
                    }),
                ))
                .await?;
                Ok::<_, StepError<&str>>(())
            }));
        assert!(result.is_err());
    });
    assert_eq!(
        tree.render(),
        "\
transaction{id=tx-8 operation=provision outcome=rolled_back}
  step{name=create_vm index=0 attempt=1 outcome=timeout}
    WARN attempt failed error=timed out after 1s
  step{name=reserve_ip index=1 attempt=1 outcome=error}
    WARN attempt failed error=busy
    INFO retrying delay=500ms
  step{name=reserve_ip index=1 attempt=2 outcome=ok}
"
    );
}
