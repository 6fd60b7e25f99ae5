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
//! # The guide
//!
//! The [`guide`] explains the library topic by topic, every example
//! compiled: [steps and rollbacks](guide::steps); [retries, timeouts and
//! interrupts](guide::retries); [parallel groups](guide::groups);
//! [scopes](guide::scopes); [durability and recovery](guide::durability);
//! [several processes](guide::processes);
//! [observability](guide::observability);
//! [microcontrollers](guide::microcontrollers);
//! [runtimes](guide::runtimes); [testing with virtual
//! time](guide::testing); [troubleshooting](guide::troubleshooting).
//!
//! # Choosing a runtime
//!
//! The engine is the same on every runtime; only the [`Clock`] changes. A
//! feature flag brings in an adapter:
//!
//! | runtime | feature | clock | spawner |
//! |---|---|---|---|
//! | tokio | `tokio` (default) | `TokioClock` | `TokioSpawner` |
//! | smol / async-executor | `smol` | `SmolClock` | `SmolSpawner` (an executor of yours, or smol's global one) |
//! | embassy | `embassy` | `EmbassyClock` | a rollback task (see the embassy adapter) |
//! | tests, any | — | [`ManualClock`] | — |
//!
//! A library that runs transactions but should not choose a runtime depends
//! on `transaction-manager` with `default-features = false` (plus `alloc`
//! for closure rollbacks) and takes the application's manager as
//! [`&impl Manager`](Manager): any clock, any hooks, with or without a
//! spawner or a journal. Closure rollbacks cannot be written to a journal,
//! so a function that runs them takes `&impl Manager<Journal = NoJournal>`.
//! A transaction with a fixed undo log of type `U` and capacity `N` takes
//! [`&impl ManagerFor<U, Fixed<N>>`](ManagerFor) instead (its manager can
//! take the rollbacks of a dropped transaction of that kind):
//!
//! ```
//! use transaction_manager::{Manager, ManagerFor, NoRollback, StepError, journal::NoJournal, storage::Fixed};
//!
//! /// Closure rollbacks: any manager without a journal.
//! pub async fn create_account(manager: &impl Manager<Journal = NoJournal>) -> Result<u64, StepError<std::io::Error>> {
//!     let committed = manager
//!         .manager()
//!         .run("create_account", async |tx| {
//!             tx.step("insert")
//!                 .execute(|| async { Ok::<_, std::io::Error>(42) })
//!                 .rollback(|id| async move { println!("delete {id}"); Ok::<_, std::io::Error>(()) })
//!                 .await
//!         })
//!         .await
//!         .map_err(|error| error.into_cause())?;
//!     Ok(committed.into_value())
//! }
//!
//! /// A fixed undo log (no allocator): its undo type and capacity in the bound.
//! pub async fn health_check(
//!     manager: &impl ManagerFor<NoRollback, Fixed<2>, Journal = NoJournal>,
//! ) -> Result<u32, StepError<&'static str>> {
//!     let done = manager
//!         .manager()
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
//! // The application picks the runtime, the hooks, the spawner; here,
//! // virtual time and a hook.
//! struct Audit;
//! impl transaction_manager::hooks::Hooks for Audit {}
//! let clock = transaction_manager::ManualClock::new();
//! let manager = transaction_manager::TransactionManager::new(&clock).with_hooks(Audit);
//! assert_eq!(clock.block_on(create_account(&manager)).unwrap(), 42);
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
//!
//! Any combination builds: CI checks every combination of the core's
//! features, and every combination of up to three of the facade's, with
//! `cargo hack --feature-powerset`, except the journal features (the
//! codecs, `sqlite`, `postgres`), checked on their own and in a few pairs,
//! and `jitter`, which only adds two `Jitter` variants and is checked on
//! its own and with `defmt` and `serde`. `Jitter`
//! is `#[non_exhaustive]`, so a `match` on it keeps compiling when another
//! crate turns `jitter` on. With none of `tracing`, `serde`, `defmt`,
//! `metrics`, none of their crates is compiled (CI checks `cargo tree`).
//! `log` and `defmt` together send messages to both. With
//! `default-features = false` you get the `no_std` core only; pick a
//! storage with `.fixed::<Undo, N>()`.
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
pub use transaction_manager_smol::SmolClock;
#[cfg(feature = "tokio")]
#[doc(inline)]
pub use transaction_manager_tokio::TokioClock;

pub mod guide;

pub mod journal {
    //! Durability: the journal a transaction writes so that a crash or a
    //! power cut does not lose the rollbacks it owes, its codecs, the memory
    //! journal for tests, recovery, and the SQLite and Postgres journals
    //! (features `sqlite`, `postgres`).
    #[doc(inline)]
    pub use transaction_manager_core::journal::*;
    #[cfg(feature = "postgres")]
    #[doc(inline)]
    pub use transaction_manager_postgres::{PostgresJournal, PostgresJournalError, PostgresOptions};
    #[cfg(feature = "sqlite")]
    #[doc(inline)]
    pub use transaction_manager_sqlite::{SqliteCause, SqliteJournal, SqliteJournalError};
}

pub mod abandon {
    //! What happens to the rollbacks of a transaction that is dropped before
    //! it ends, and the spawners that finish them on a task of their own
    //! (features `tokio`, `smol`).
    #[doc(inline)]
    pub use transaction_manager_core::abandon::*;
    #[cfg(feature = "smol")]
    #[doc(inline)]
    pub use transaction_manager_smol::SmolSpawner;
    #[cfg(feature = "tokio")]
    #[doc(inline)]
    pub use transaction_manager_tokio::TokioSpawner;
}

pub mod time {
    //! Time: the [`Clock`] a runtime adapter implements, and the sleep
    //! futures of [`ManualClock`] and (feature `smol`) `SmolClock`.
    #[doc(inline)]
    pub use transaction_manager_core::time::*;
    #[cfg(feature = "smol")]
    #[doc(inline)]
    pub use transaction_manager_smol::SmolSleep;
}

/// The README's examples, checked by `cargo test --doc`: every Rust block
/// in it compiles and runs.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
