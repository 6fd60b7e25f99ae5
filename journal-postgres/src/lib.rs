//! A Postgres [journal](transaction_manager_core::backend::Journal) for
//! [transaction-manager](https://docs.rs/transaction-manager), shared by
//! many processes on many machines: each instance leases the transactions
//! it runs, recovery in any instance claims those whose owner's lease
//! expired, and every append is fenced by owner and generation, so an
//! instance that was paused and wakes up cannot write into a transaction
//! another one took over.
//!
//! ```no_run
//! use std::time::Duration;
//! use transaction_manager::{TokioClock, TransactionManager, journal::Json, storage::Unbounded};
//! use transaction_manager_postgres::{PostgresJournal, PostgresOptions};
//! # #[derive(serde::Serialize, serde::Deserialize)] enum Undo {}
//! # impl transaction_manager::Rollback<()> for Undo { type Error = std::io::Error;
//! #   async fn rollback(&mut self, _: &mut ()) -> Result<(), std::io::Error> { match *self {} } }
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let options = PostgresOptions::new().owner("worker-3").lease(Duration::from_secs(10));
//! let journal = PostgresJournal::connect("host=/run/postgresql dbname=app", options).await?;
//! let manager = TransactionManager::new(TokioClock::new()).with_journal(journal, Json::<1>);
//! // In a task of its own, as often as you like, in every instance:
//! let report = manager.recover::<Undo, Unbounded, _>(&mut ()).await?;
//! # Ok(()) }
//! ```
//!
//! Tables, durability, leases and fencing: see [`PostgresJournal`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod connection;
mod error;
mod journal;
mod operator;
mod retention;
pub mod schema;
mod statements;

pub use error::{CertificateProblem, PostgresCause, PostgresJournalError};
pub use journal::{MAX_PAYLOAD, PostgresJournal, PostgresOptions};
pub use operator::{StuckStep, StuckTransaction};
pub use tokio_postgres::Config;
pub use tokio_postgres_rustls::MakeRustlsConnect;
pub use transaction_manager_core::backend::{Pruned, Retention};
