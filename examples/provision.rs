//! The main example: provision a user and a VM that uses the user's id, as
//! one transaction on tokio. Everything succeeds; the summary says so.
//!
//! The transaction is in `common/provision.rs`, generic over the clock: the
//! same code runs on smol (`provision_smol`) and embassy
//! (`examples/embassy-host`).
//!
//! Run with `cargo run --example provision`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::FakeCloud;
use transaction_manager::{RetryPolicy, TokioClock, TransactionManager};

#[tokio::main]
async fn main() -> Result<(), String> {
    let clock = TokioClock::new();
    let cloud = Arc::new(FakeCloud::new(clock));
    let manager = TransactionManager::new(clock)
        .with_retry(RetryPolicy::new().with_max_retries(2))
        .with_timeout(Duration::from_secs(5));

    common::provision::provision(&manager, &cloud, "alice").await?;
    Ok(())
}
