//! The provisioning transaction itself, generic over the manager (so over
//! the runtime's clock, the hooks and the spawner; its closure rollbacks
//! need a manager without a journal):
//! `provision` (tokio), `provision_smol` and the embassy host example all
//! run exactly this code, and print the same story.

use std::sync::Arc;

use transaction_manager::{Clock, Manager, StepError, journal::NoJournal};

use super::{CloudError, FakeCloud, User, Vm};

/// Creates a user, then a VM owned by that user, as one transaction. If the
/// VM cannot be created, the user is deleted again.
pub async fn provision<M: Manager<Journal = NoJournal>>(
    manager: &M,
    cloud: &Arc<FakeCloud<M::Clock>>,
    name: &str,
) -> Result<(User, Vm), String>
where
    // The rollbacks hold the cloud (and so its clock) and are `Send +
    // 'static`, so that the transaction can be spawned on any runtime.
    M::Clock: Send + Sync + 'static,
    <M::Clock as Clock>::Sleep: Send,
{
    println!("provisioning {name}'s workspace:");
    let result = manager
        .manager()
        .run("provision", async |tx| {
            println!("  step 1: create the user");
            let user = tx
                .step("create_user")
                .execute(|| cloud.create_user(name))
                // The rollback gets the user the step created.
                .rollback_using(cloud, |(cloud, user)| async move { cloud.delete_user(user.id).await })
                .await?;

            println!("  step 2: create a VM owned by user {}", user.id);
            let vm = tx
                .step("create_vm")
                .execute(|| cloud.create_vm(user.id))
                .rollback_using(cloud, |(cloud, vm)| async move { cloud.delete_vm(&vm.id).await })
                .await?;

            Ok::<_, StepError<CloudError>>((user, vm))
        })
        .await;

    match result {
        Ok(committed) => {
            println!("committed: {} owns {}", committed.value().0.name, committed.value().1.id);
            println!("{}", committed.summary());
            println!("left in the cloud: {}", cloud.inventory());
            Ok(committed.into_value())
        }
        Err(error) => {
            println!("transaction failed: {error}");
            println!("{}", error.summary());
            println!("left in the cloud: {}", cloud.inventory());
            Err(error.to_string())
        }
    }
}
