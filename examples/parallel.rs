//! A parallel group: a VM and an IP address are reserved at the same time,
//! from one task (no spawning). The first run succeeds and takes as long
//! as the slower of the two, not their sum. In the second, reserving the
//! address keeps failing: the VM, which was created meanwhile, is rolled
//! back.
//!
//! Run with `cargo run --example parallel`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{CloudError, FakeCloud};
use transaction_manager::{RetryPolicy, StepError, TokioClock, TransactionManager, group::member};

#[tokio::main]
async fn main() {
    let cloud = Arc::new(FakeCloud::new(TokioClock::new()));
    let manager = TransactionManager::new(TokioClock::new())
        .with_retry(RetryPolicy::new().with_max_retries(2).with_initial_interval(Duration::from_millis(50)))
        .with_timeout(Duration::from_secs(5));

    for attempt in ["everything works", "the address pool is exhausted"] {
        if attempt != "everything works" {
            // Every attempt of reserve_ip fails: 1 + 2 retries.
            cloud.fail_next("reserve_ip", 3);
        }
        println!("provisioning ({attempt}):");
        let started = Instant::now();
        let result = manager
            .run("provision", async |tx| {
                let (vm, ip) = tx
                    .parallel((
                        member("create_vm")
                            .execute(|| cloud.create_vm(1))
                            .rollback_using(&cloud, |(cloud, vm)| async move { cloud.delete_vm(&vm.id).await }),
                        member("reserve_ip")
                            .execute(|| cloud.reserve_ip())
                            .rollback_using(&cloud, |(cloud, ip)| async move { cloud.release_ip(ip).await }),
                    ))
                    .await?;
                tx.step("open_port").run(|| cloud.open_port(ip, 443)).await?;
                Ok::<_, StepError<CloudError>>((vm, ip))
            })
            .await;
        let took = started.elapsed();
        match result {
            Ok(done) => {
                let (vm, ip) = done.value();
                println!("  {} is reachable at {ip} (took {took:.0?})", vm.id);
                println!("{}", done.summary());
            }
            Err(error) => {
                println!("  failed: {error} (took {took:.0?})");
                println!("{}", error.summary());
            }
        }
        println!("  left in the cloud: {}\n", cloud.inventory());
    }
}
