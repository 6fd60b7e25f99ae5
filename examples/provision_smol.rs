//! `provision` on smol: the same transaction, only the clock and the
//! executor change.
//!
//! Run with `cargo run --example provision_smol --features smol`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::FakeCloud;
use transaction_manager::{RetryPolicy, SmolClock, TransactionManager};

fn main() -> Result<(), String> {
    smol::block_on(async {
        let clock = SmolClock::new();
        let cloud = Arc::new(FakeCloud::new(clock));
        let manager = TransactionManager::new(clock)
            .with_retry(RetryPolicy::new().with_max_retries(2))
            .with_timeout(Duration::from_secs(5));

        common::provision::provision(&manager, &cloud, "alice").await?;
        Ok(())
    })
}
