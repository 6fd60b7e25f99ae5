//! Custom hooks see every event of a transaction's life. This one fails on
//! its third step after a retry, and its first rollback fails once before
//! it succeeds — so every hook fires.
//!
//! Run with `cargo run --example hooks`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{CloudError, FakeCloud};
use transaction_manager::{
    RetryPolicy, StepError, Summary, TokioClock, TransactionInfo, TransactionManager,
    hooks::{Hooks, StepEvent},
    storage::Storage,
};

/// Prints each event as it happens.
struct Narrator;

impl Hooks for Narrator {
    async fn on_transaction_start(&self, tx: &TransactionInfo) {
        println!("[hook] transaction {} ({}) started", tx.operation(), tx.id());
    }
    async fn on_step_execute(&self, e: &StepEvent<'_>) {
        println!("[hook]   {} attempt {} starting", e.step.name(), e.attempt);
    }
    async fn on_step_success(&self, e: &StepEvent<'_>) {
        println!("[hook]   {} succeeded on attempt {}", e.step.name(), e.attempt);
    }
    async fn on_step_failure(&self, e: &StepEvent<'_>) {
        println!(
            "[hook]   {} attempt {} failed ({}): {}",
            e.step.name(),
            e.attempt,
            e.step.status(),
            e.step.error().unwrap_or("?")
        );
    }
    async fn on_rollback_start(&self, tx: &TransactionInfo) {
        println!("[hook] rolling back {}", tx.id());
    }
    async fn on_step_rollback(&self, e: &StepEvent<'_>) {
        println!("[hook]   undid {} (attempt {})", e.step.name(), e.attempt);
    }
    async fn on_step_rollback_failure(&self, e: &StepEvent<'_>) {
        println!(
            "[hook]   undoing {} failed on attempt {}: {}",
            e.step.name(),
            e.attempt,
            e.step.rollback_error().unwrap_or("?")
        );
    }
    async fn on_transaction_complete<S: Storage>(&self, tx: &TransactionInfo, success: bool, summary: &Summary<S>) {
        println!(
            "[hook] transaction {} complete: success={success}, {} rolled back, {} rollback errors",
            tx.id(),
            summary.rolled_back_steps(),
            summary.rollback_errors()
        );
    }
}

/// Counts attempts: a second hook, called after the first for each event.
#[derive(Default)]
struct AttemptCounter(AtomicU32);

impl Hooks for AttemptCounter {
    async fn on_step_execute(&self, _: &StepEvent<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[tokio::main]
async fn main() {
    let cloud = Arc::new(FakeCloud::new(TokioClock::new()));
    cloud.fail_next("create_vm", 1); // the VM needs a retry
    cloud.fail_next("assign_ip", 2); // the address never comes
    cloud.fail_next("delete_user", 1); // undoing the user needs a retry

    let manager = TransactionManager::new(TokioClock::new())
        .with_hooks((Narrator, AttemptCounter::default()))
        .with_retry(RetryPolicy::new().with_max_retries(1).with_initial_interval(Duration::from_millis(100)));

    let result = manager
        .run("provision", async |tx| {
            let user = tx
                .step("create_user")
                .execute(|| cloud.create_user("carol"))
                .rollback_using(&cloud, |(cloud, user)| async move { cloud.delete_user(user.id).await })
                .await?;
            let vm = tx
                .step("create_vm")
                .execute(|| cloud.create_vm(user.id))
                .rollback_using(&cloud, |(cloud, vm)| async move { cloud.delete_vm(&vm.id).await })
                .await?;
            tx.step("assign_ip").run(|| cloud.assign_ip(&vm.id)).await?;
            Ok::<_, StepError<CloudError>>(())
        })
        .await;

    let error = result.expect_err("assign_ip fails twice");
    println!("result: {error}");
    println!("execute attempts counted by the second hook: {}", manager.hooks().1.0.load(Ordering::Relaxed));
    println!("left in the cloud: {}", cloud.inventory());
}
