//! A SQLite [journal](transaction_manager_core::backend::Journal) for
//! [transaction-manager](https://docs.rs/transaction-manager): the undo
//! records a transaction still owes survive a crash or a power cut, so
//! recovery can roll them back at the next start. The embedded default for
//! `std` programs; SQLite is compiled in (no system library needed).
//!
//! [`SqliteJournal::open`] a file and hand the journal to a manager
//! (`TransactionManager::with_journal`). Several processes may share one
//! file: each has its own writer, ids never collide, and recovery in one
//! leaves alone what another one is running (each journal holds a lock the
//! kernel releases when its process dies).
//!
//! ```
//! use transaction_manager::journal::Journal;
//! use transaction_manager_sqlite::SqliteJournal;
//!
//! # let dir = std::env::temp_dir().join(format!("tm-sqlite-doc-crate-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let journal = SqliteJournal::open(dir.join("journal.db"))?;
//! // At start-up: is anything left over from a crash?
//! let leftover = futures_lite::future::block_on(journal.next_unfinished(None))?;
//! assert_eq!(leftover, None);
//! # drop(journal);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), transaction_manager_sqlite::SqliteJournalError>(())
//! ```
//!
//! How it is stored, how durable it is and how ids stay unique: see
//! [`SqliteJournal`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
mod hwm;
mod journal;
mod oneshot;
mod owner;
mod prune;
mod schema;
mod writer;

pub use error::{SqliteCause, SqliteJournalError};
pub use journal::{MAX_PAYLOAD, SqliteJournal};
pub use transaction_manager_core::backend::{Pruned, Retention};
