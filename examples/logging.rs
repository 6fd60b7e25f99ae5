//! The library's own log messages, through the `log` crate: silent until
//! the application installs a logger. Here `env_logger` prints them (all
//! levels, unless `RUST_LOG` says otherwise): a retry, then a rollback.
//!
//! Run with `cargo run --example logging` (the examples build the library
//! with its `log` feature; in your application, enable it in `Cargo.toml`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{CloudError, FakeCloud};
use transaction_manager::{RetryPolicy, StepError, TokioClock, TransactionManager};

#[tokio::main]
async fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("transaction_manager=debug"))
        .format_timestamp_millis()
        .init();

    let cloud = Arc::new(FakeCloud::new(TokioClock::new()));
    cloud.fail_next("create_user", 1); // one retry
    cloud.fail_next("charge", 5); // then the payment never goes through

    let manager = TransactionManager::new(TokioClock::new())
        .with_retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(Duration::from_millis(50)));

    let result = manager
        .run("signup", async |tx| {
            let user = tx
                .step("create_user")
                .execute(|| cloud.create_user("dave"))
                .rollback_using(&cloud, |(cloud, user)| async move { cloud.delete_user(user.id).await })
                .await?;
            tx.step("charge").run(|| cloud.charge(user.id, 1_000)).await?;
            Ok::<_, StepError<CloudError>>(())
        })
        .await;

    if let Err(error) = result {
        println!("result: {error}");
    }
}
