//! `provision` on embassy (std platform, real time): the same transaction
//! as the tokio and smol examples, only the clock and the executor change.

#[path = "../../common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::FakeCloud;
use embassy_executor::Spawner;
use transaction_manager::{EmbassyClock, RetryPolicy, TransactionManager};

#[embassy_executor::main]
async fn main(_spawner: Spawner) {
    let clock = EmbassyClock;
    let cloud = Arc::new(FakeCloud::new(clock));
    let manager = TransactionManager::new(clock)
        .with_retry(RetryPolicy::new().with_max_retries(2))
        .with_timeout(Duration::from_secs(5));

    let result = common::provision::provision(&manager, &cloud, "alice").await;
    // The embassy executor never returns on its own: end the process here.
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}
