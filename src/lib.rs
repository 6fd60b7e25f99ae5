//! Multi-step async transactions that roll back every completed step, in
//! reverse order, when a later step fails.
//!
//! This facade re-exports [`transaction-manager-core`](transaction_manager_core)
//! (the whole engine, `no_std`) and the runtime adapters enabled by features.
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
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tokio` | yes | [`TokioClock`], a clock on `tokio::time` (implies `std`) |
//! | `alloc` | via `std` | unbounded undo logs, closure rollbacks, [`TransactionManager::run`] |
//! | `std` | via `tokio` | implies `alloc` |
//! | `log` | no | log messages through the `log` crate |

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[doc(inline)]
pub use transaction_manager_core::*;

#[cfg(feature = "tokio")]
#[doc(inline)]
pub use transaction_manager_tokio::TokioClock;
