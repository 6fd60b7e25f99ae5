//! The ready-made `Metrics` hook: counts executes, retries, failures,
//! rollbacks and durations per step name, in a fixed table (no
//! allocation), and exports them in the Prometheus text format.
//!
//! Run with `cargo run --example metrics --features metrics`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CloudError, FakeCloud};
use transaction_manager::{RetryPolicy, StepError, TokioClock, TransactionManager, hooks::Metrics};

#[tokio::main]
async fn main() {
    let cloud = Arc::new(FakeCloud::new(TokioClock::new()));
    let manager = TransactionManager::new(TokioClock::new())
        .with_hooks(Metrics::<16>::new())
        .with_retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(Duration::from_millis(10)));

    // Five signups: one needs a retry, one is over the payment limit.
    cloud.fail_next("create_user", 1);
    for (name, cents) in [("ann", 500), ("bo", 900), ("cy", 25_000), ("di", 100), ("ed", 700)] {
        let result = manager
            .run("signup", async |tx| {
                let user = tx
                    .step("create_user")
                    .execute(|| cloud.create_user(name))
                    .rollback_using(&cloud, |(cloud, user)| async move { cloud.delete_user(user.id).await })
                    .await?;
                tx.step("charge").run(|| cloud.charge(user.id, cents)).await?;
                Ok::<_, StepError<CloudError>>(())
            })
            .await;
        println!("{name}: {}", if result.is_ok() { "signed up".to_string() } else { "rolled back".to_string() });
    }

    let mut exposition = String::new();
    manager.hooks().write_prometheus(&mut exposition).expect("a String never fails to write");
    println!("\n{exposition}");
}
