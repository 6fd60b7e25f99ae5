//! Multi-step async transactions that roll back every completed step, in
//! reverse order, when a later step fails.
//!
//! This facade re-exports [`transaction-manager-core`](transaction_manager_core)
//! (the whole engine, `no_std`) and the runtime adapters enabled by
//! features. It is `no_std` itself unless a feature brings in `std`.
//!
//! ```
//! use std::time::Duration;
//! use transaction_manager::{RetryPolicy, StepError, TokioClock, TransactionManager};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let manager = TransactionManager::new(TokioClock::new())
//!     .with_retry(RetryPolicy::new().with_max_retries(2))
//!     .with_timeout(Duration::from_secs(10));
//!
//! let result = manager.run("provision", async |tx| {
//!     let user = tx.step("create_user")
//!         .execute(|| async { Ok::<_, std::io::Error>(42) })
//!         .rollback(|id| async move { println!("deleting user {id}"); Ok::<_, std::io::Error>(()) })
//!         .await?;
//!     let vm = tx.step("create_vm")
//!         .execute(|| async { Ok::<_, std::io::Error>(format!("vm-of-{user}")) })
//!         .rollback(|vm| async move { println!("deleting {vm}"); Ok::<_, std::io::Error>(()) })
//!         .await?;
//!     Ok::<_, StepError<std::io::Error>>(vm)
//! }).await;
//!
//! let committed = result.unwrap();
//! assert_eq!(committed.value(), "vm-of-42");
//! println!("{}", committed.summary());
//! # }
//! ```
//!
//! # Choosing a runtime
//!
//! The engine is the same on every runtime; only the [`Clock`] changes. A
//! feature flag brings in an adapter:
//!
//! | runtime | feature | clock | spawner |
//! |---|---|---|---|
//! | tokio | `tokio` (default) | `TokioClock` | `TokioSpawner` |
//! | smol / async-executor | `smol` | `SmolClock` | `SmolSpawner` |
//! | embassy | `embassy` | `EmbassyClock` | a rollback task (see the embassy adapter) |
//! | tests, any | — | [`ManualClock`] | — |
//!
//! A library that runs transactions but should not choose a runtime depends
//! on `transaction-manager` with `default-features = false` and stays
//! generic over [`Clock`]:
//!
//! ```
//! use transaction_manager::{Clock, Fixed, NoRollback, StepError, Summary, TransactionManager};
//!
//! /// Works on any runtime: the application passes its manager.
//! pub async fn health_check<C: Clock>(manager: &TransactionManager<C>) -> Result<u32, StepError<&'static str>> {
//!     let done = manager
//!         .transaction("health-check")
//!         .fixed::<NoRollback, 2>()
//!         .run(async |tx| {
//!             let a = tx.step("ping_a").run(|| async { Ok(1) }).await?;
//!             let b = tx.step("ping_b").run(|| async { Ok(2) }).await?;
//!             Ok::<_, StepError<&str>>(a + b)
//!         })
//!         .await
//!         .map_err(|e| e.into_cause())?;
//!     Ok(done.into_value())
//! }
//!
//! // The application picks the runtime; here, virtual time.
//! let clock = transaction_manager::ManualClock::new();
//! let manager = TransactionManager::new(&clock);
//! assert_eq!(clock.block_on(health_check(&manager)), Ok(3));
//! ```
//!
//! # Feature flags
//!
//! Every feature is additive.
#![cfg_attr(feature = "docs", doc = document_features::document_features!())]
#![cfg_attr(
    not(feature = "docs"),
    doc = "The table of features is rendered on docs.rs (the `docs` feature); they are listed in `Cargo.toml`."
)]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[doc(inline)]
pub use transaction_manager_core::*;

#[cfg(feature = "embassy")]
#[doc(inline)]
pub use transaction_manager_embassy::EmbassyClock;
#[cfg(feature = "smol")]
#[doc(inline)]
pub use transaction_manager_smol::{SmolClock, SmolSleep, SmolSpawner};
#[cfg(feature = "tokio")]
#[doc(inline)]
pub use transaction_manager_tokio::{TokioClock, TokioSpawner};
