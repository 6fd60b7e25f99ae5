//! The rollback of a step receives what the step returned: here the IP
//! address the cloud assigned, which only exists once the step ran. When
//! opening a port fails, the address is released by its value.
//!
//! Run with `cargo run --example rollback_from_output`.

mod common;

use std::sync::Arc;

use common::{CloudError, FakeCloud, Ip};
use transaction_manager::{StepError, TokioClock, TransactionManager};

#[tokio::main]
async fn main() {
    let cloud = Arc::new(FakeCloud::new(TokioClock::new()));
    // Opening the port keeps failing: nothing retries it.
    cloud.fail_next("open_port", 1);
    let manager = TransactionManager::new(TokioClock::new());

    println!("exposing a web server:");
    let result = manager
        .run("expose", async |tx| {
            let vm = tx
                .step("create_vm")
                .execute(|| cloud.create_vm(1))
                .rollback_using(&cloud, |(cloud, vm)| async move { cloud.delete_vm(&vm.id).await })
                .await?;

            let ip: Ip = tx
                .step("assign_ip")
                .execute(|| cloud.assign_ip(&vm.id))
                // `ip` is the address this step returned: the rollback
                // releases exactly that one.
                .rollback_using(&cloud, |(cloud, ip)| async move {
                    println!("  rollback of assign_ip got {ip} from the step");
                    cloud.release_ip(ip).await
                })
                .await?;
            println!("  {} got address {ip}", vm.id);

            tx.step("open_port").run(|| cloud.open_port(ip, 443)).await?;
            Ok::<_, StepError<CloudError>>(ip)
        })
        .await;

    match result {
        Ok(done) => println!("reachable at {}", done.value()),
        Err(error) => {
            println!("transaction failed: {error}");
            println!("{}", error.summary());
        }
    }
    println!("left in the cloud: {}", cloud.inventory());
}
