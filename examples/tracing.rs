//! The library's `tracing` spans for a failing transaction, printed as a
//! tree: one span per transaction, per step attempt and per rollback
//! attempt, each with its outcome, and events for failed attempts,
//! retries (with their delay) and rollback failures.
//!
//! Run with `cargo run --example tracing --features tracing`.

mod common;
#[path = "common/tree.rs"]
mod tree;

use std::sync::Arc;
use std::time::Duration;

use common::{CloudError, FakeCloud};
use tracing_subscriber::layer::SubscriberExt;
use transaction_manager::{RetryPolicy, StepError, TokioClock, TransactionManager};

#[tokio::main]
async fn main() {
    let tree = tree::TreeLayer::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(tree.clone()))
        .expect("no other subscriber is installed");

    let cloud = Arc::new(FakeCloud::new(TokioClock::new()));
    cloud.fail_next("create_vm", 1); // one retry
    cloud.fail_next("assign_ip", 9); // never succeeds
    cloud.fail_next("delete_vm", 1); // its rollback needs a retry

    let manager = TransactionManager::new(TokioClock::new())
        .with_retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(Duration::from_millis(50)));
    let result = manager
        .run("provision", async |tx| {
            let user = tx
                .step("create_user")
                .execute(|| cloud.create_user("erin"))
                .rollback_using(&cloud, |(cloud, user)| async move { cloud.delete_user(user.id).await })
                .await?;
            let vm = tx
                .step("create_vm")
                .execute(|| cloud.create_vm(user.id))
                .rollback_using(&cloud, |(cloud, vm)| async move { cloud.delete_vm(&vm.id).await })
                .await?;
            tx.step("assign_ip").run(|| cloud.assign_ip(&vm.id)).await?;
            Ok::<_, StepError<CloudError>>(())
        })
        .await;

    println!("\nresult: {}\n", result.expect_err("assign_ip keeps failing"));
    println!("spans and events:\n{}", tree.render());
}
