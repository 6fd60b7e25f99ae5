//! The engine of [transaction-manager](https://crates.io/crates/transaction-manager):
//! multi-step async transactions that roll back every completed step, in
//! reverse order, when a later step fails.
//!
//! Its behaviour follows the Python package `async-transaction-manager`
//! 0.1.2, with typed errors where that package returns nulls and strings.
//!
//! `#![no_std]`, no allocator needed, no runtime: time comes from a
//! [`Clock`] that an adapter crate binds to tokio, smol or embassy, or from
//! [`ManualClock`] in tests.
//!
//! ```
//! use core::time::Duration;
//! use transaction_manager_core::*;
//!
//! // Firmware style: the peripherals are a context lent to every step and
//! // rollback, and rollbacks are data (an enum), so no allocator is needed.
//! #[derive(Default)]
//! struct Board { rail_on: bool, bus_ready: bool }
//!
//! enum Undo { PowerOff, ReleaseBus }
//!
//! impl Rollback<Board> for Undo {
//!     type Error = &'static str;
//!     async fn rollback(&mut self, board: &mut Board) -> Result<(), Self::Error> {
//!         match self {
//!             Undo::PowerOff => board.rail_on = false,
//!             Undo::ReleaseBus => board.bus_ready = false,
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let clock = ManualClock::new();
//! let manager = TransactionManager::new(&clock).with_timeout(Duration::from_millis(100));
//! let mut board = Board::default();
//!
//! let result = clock.block_on(manager.transaction("bring-up").fixed::<Undo, 4>().run_with(
//!     &mut board,
//!     async |tx| {
//!         tx.step("power").execute_with(async |b: &mut Board| { b.rail_on = true; Ok(()) }).undo(|_| Undo::PowerOff).await?;
//!         tx.step("bus").execute_with(async |b: &mut Board| { b.bus_ready = true; Ok(()) }).undo(|_| Undo::ReleaseBus).await?;
//!         tx.step("sensor").run(|| async { Err::<(), _>("no ACK") }).await?;
//!         Ok::<_, StepError<&str>>(())
//!     },
//! ));
//!
//! let error = result.unwrap_err();
//! assert_eq!(error.cause().to_string(), "step `sensor` failed: no ACK");
//! assert!(error.rollback_state().is_clean());
//! assert!(!board.rail_on && !board.bus_ready);
//! ```
//!
//! # `Send`
//!
//! [`Hooks`] and [`Rollback`] use `async fn` in traits. A transaction future
//! is `Send` exactly when everything it holds across an await is: the
//! compiler checks this on the concrete types where you spawn it, so a
//! transaction of `Send` steps can go to `tokio::spawn`, and one of `!Send`
//! steps still runs on a single-threaded executor.
//!
//! # Features
//!
//! - `alloc`: [`Unbounded`] storage, closure rollbacks ([`BoxedRollback`]),
//!   [`TransactionManager::run`], names from `String`, whole error texts.
//! - `std`: implies `alloc`.
//! - `jitter` (implied by `alloc`): randomised backoff, [`Jitter`]`::Full`
//!   and `::Equal`; without it only `Jitter::None` exists and no random
//!   draw is compiled.
//! - `log`: log messages through the `log` crate, with transaction id, step
//!   and attempt; silent until the application installs a logger.
//! - `tracing`: a `tracing` span per transaction (id, operation, outcome),
//!   per step attempt and per rollback attempt (step, index, attempt,
//!   outcome), and events for retries (with their delay) and rollback
//!   failures.
//! - `metrics`: [`Metrics`], a hook counting executes, retries, rollbacks,
//!   failures and durations per step name, in a fixed table.
//! - `serde`: `Serialize` for summaries, step records, statuses and errors
//!   (errors as text).
//! - `defmt`: the same messages through `defmt`, and `defmt::Format` for the
//!   public types, for microcontrollers. With `log` and `defmt` both on,
//!   every message goes to both (features stay additive).
//!
//! These docs are complete with every feature on (as on docs.rs); a build
//! without a feature links the items it would add to docs.rs instead.
// Link reference definitions, in doc attributes of their own, join the
// crate docs above only when the item is not in this build.
#![cfg_attr(not(all(feature = "alloc", feature = "metrics")), doc = "")]
#![cfg_attr(
    not(feature = "metrics"),
    doc = "[`Metrics`]: https://docs.rs/transaction-manager-core/latest/transaction_manager_core/struct.Metrics.html"
)]
#![cfg_attr(
    not(feature = "alloc"),
    doc = "[`Unbounded`]: https://docs.rs/transaction-manager-core/latest/transaction_manager_core/struct.Unbounded.html"
)]
#![cfg_attr(
    not(feature = "alloc"),
    doc = "[`BoxedRollback`]: https://docs.rs/transaction-manager-core/latest/transaction_manager_core/struct.BoxedRollback.html"
)]
#![cfg_attr(
    not(feature = "alloc"),
    doc = "[`TransactionManager::run`]: https://docs.rs/transaction-manager-core/latest/transaction_manager_core/struct.TransactionManager.html#method.run"
)]
// Other items' docs name alloc-only items too (closure rollbacks,
// unbounded storage); their links are checked in the all-features build
// (CI's `cargo doc --all-features` with `-D warnings`).
#![cfg_attr(not(feature = "alloc"), allow(rustdoc::broken_intra_doc_links))]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[macro_use]
mod fmt;
#[macro_use]
mod trace;

mod abandon;
mod action;
mod any_manager;
mod clock;
mod condition;
#[cfg(feature = "defmt")]
mod defmt_impls;
mod error;
mod future;
mod group;
mod hooks;
mod interrupt;
mod journal;
mod ledger;
mod manager;
mod manual_clock;
#[cfg(feature = "std")]
mod memory_journal;
#[cfg(feature = "metrics")]
mod metrics;
mod panic;
mod record;
mod recovery;
mod retry;
mod rollback;
mod scope;
#[cfg(feature = "serde")]
mod serde_impls;
mod spawn;
mod step;
mod storage;
mod summary;
mod text;
mod transaction;

pub use abandon::{AbandonPolicy, Abandoned, DetachedRollback, RollbackReport, Spawned, Unattended};
pub use action::Action;
pub use any_manager::Manager;
pub use clock::Clock;
#[doc(hidden)]
pub use clock::div_rem_narrow;
pub use condition::{RetryAlways, RetryCondition};
pub use error::{
    Committed, RollbackErrorKind, RollbackFailure, RollbackState, StepError, StepErrorKind, TransactionError,
};
pub use group::{
    Attempts, Group, GroupError, KeyedAttempts, Lend, LendFlag, Lent, LentEnd, MapErrors, Member, MemberBuilder,
    MemberFn, MemberUndo, Members, NoUndo, OnCompleted, OnCompletedUsing, OnUncertain, UndoKeyed, UndoMaybe, UndoWith,
    member,
};
pub use hooks::{Hooks, StepEvent};
pub use interrupt::{
    Cancel, Deadline, Interrupt, InterruptReason, Interrupted, IntoBodyError, IntoReason, Never, NoInterrupt,
};
#[cfg(feature = "json")]
pub use journal::Json;
#[cfg(feature = "postcard")]
pub use journal::Postcard;
pub use journal::{
    CodecError, Entry, EntryKind, FORMAT, IdempotencyKey, Journal, JournalFailure, JournalFor, JournalRun, Journaled,
    NoJournal, StoredEntry, UndoCodec,
};
pub use ledger::RollbackFailurePolicy;
pub use manager::{
    Closures, JournalKeeps, LocalClosures, Outcome, Records, TransactionBuilder, TransactionManager, UndoLog,
};
pub use manual_clock::{ManualClock, ManualSleep};
#[cfg(feature = "std")]
pub use memory_journal::{JournalRow, MemoryJournal, MemoryJournalError};
#[cfg(feature = "metrics")]
pub use metrics::{Metrics, StepMetrics};
pub use panic::PanicMessage;
pub use record::{ParseIdError, StepRecord, StepStatus, TransactionId, TransactionInfo};
pub use recovery::{OwedRetry, OwedStep, RecoveredTransaction, Recovery, RecoveryError, RecoveryOutcome};
pub use retry::{Jitter, RetryPolicy, SplitMix64};
#[cfg(feature = "alloc")]
pub use rollback::{BoxError, BoxedRollback, LocalBoxedRollback};
pub use rollback::{NoRollback, Rollback, RollbackFn};
pub use scope::ScopeError;
pub use spawn::Spawner;
pub use step::{Execute, Keyed, MapErr, Maybe, Plain, Step, StepFn, WithContext};
#[cfg(feature = "alloc")]
pub use storage::Unbounded;
pub use storage::{Fixed, List, Storage};
pub use summary::Summary;
pub use text::Name;
pub use transaction::Transaction;
