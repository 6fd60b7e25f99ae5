//! The main example: provision a user and a VM that uses the user's id, as
//! one transaction on tokio. Everything succeeds; the summary says so.
//!
//! Run with `cargo run --example provision`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CloudError, FakeCloud};
use transaction_manager::{RetryPolicy, StepError, TokioClock, TransactionManager};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cloud = Arc::new(FakeCloud::new());
    let manager = TransactionManager::new(TokioClock::new())
        .with_retry(RetryPolicy::new().with_max_retries(2))
        .with_timeout(Duration::from_secs(5));

    println!("provisioning alice's workspace:");
    let committed = manager
        .run("provision", async |tx| {
            println!("  step 1: create the user");
            let user = tx
                .step("create_user")
                .execute(|| cloud.create_user("alice"))
                .rollback_using(&cloud, |(cloud, user)| async move {
                    cloud.delete_user(user.id).await
                })
                .await?;

            println!("  step 2: create a VM owned by user {}", user.id);
            let vm = tx
                .step("create_vm")
                .execute(|| cloud.create_vm(user.id))
                .rollback_using(&cloud, |(cloud, vm)| async move {
                    cloud.delete_vm(&vm.id).await
                })
                .await?;

            Ok::<_, StepError<CloudError>>((user, vm))
        })
        .await?;

    let (user, vm) = committed.value();
    println!("committed: {} owns {}", user.name, vm.id);
    println!("{}", committed.summary());
    println!("left in the cloud: {}", cloud.inventory());
    Ok(())
}
