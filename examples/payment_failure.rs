//! A payment above the account's limit fails after the user was created:
//! the user is rolled back, and the error says why, with the summary.
//!
//! Run with `cargo run --example payment_failure`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CloudError, FakeCloud};
use transaction_manager::{StepError, StepErrorKind, TokioClock, TransactionManager};

#[tokio::main]
async fn main() {
    let cloud = Arc::new(FakeCloud::new(TokioClock::new()));
    let manager = TransactionManager::new(TokioClock::new()).with_timeout(Duration::from_secs(5));

    println!("signing up bob on the $250 plan (the account limit is $100):");
    let result = manager
        .run("signup", async |tx| {
            println!("  step 1: create the user");
            let user = tx
                .step("create_user")
                .execute(|| cloud.create_user("bob"))
                .rollback_using(&cloud, |(cloud, user)| async move { cloud.delete_user(user.id).await })
                .await?;

            println!("  step 2: charge $250");
            let payment = tx.step("charge").run(|| cloud.charge(user.id, 25_000)).await?;

            Ok::<_, StepError<CloudError>>(payment)
        })
        .await;

    let error = result.expect_err("the payment is above the limit");
    println!("transaction failed: {error}");
    // The cause keeps the API's own error type: match on it.
    if let StepErrorKind::Failed(CloudError::LimitExceeded { amount_cents, limit_cents }) = error.cause().kind() {
        println!("  -> ask bob for a plan under ${} (asked for ${})", limit_cents / 100, amount_cents / 100);
    }
    println!("rolled back cleanly: {}", error.rollback_state().is_clean());
    println!("{}", error.summary());
    println!("left in the cloud: {}", cloud.inventory());
}
