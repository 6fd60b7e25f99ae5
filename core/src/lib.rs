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
//! # Layout
//!
//! The engine is layered (`util` < `timing` < `durable` < `ledger` <
//! `observe` < `engine` < `api`, imports running one way); the public names
//! live at this root and in the modules below. `ARCHITECTURE.md` in the
//! repository draws the layers and says what lives where.
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
//!
//! [`Hooks`]: hooks::Hooks
//! [`Jitter`]: retry::Jitter
// Link reference definitions, in doc attributes of their own, join the
// crate docs above only when the item is not in this build.
#![cfg_attr(not(all(feature = "alloc", feature = "metrics")), doc = "")]
#![cfg_attr(feature = "metrics", doc = "[`Metrics`]: hooks::Metrics")]
#![cfg_attr(feature = "alloc", doc = "[`Unbounded`]: storage::Unbounded")]
#![cfg_attr(
    not(feature = "metrics"),
    doc = "[`Metrics`]: https://docs.rs/transaction-manager-core/latest/transaction_manager_core/hooks/struct.Metrics.html"
)]
#![cfg_attr(
    not(feature = "alloc"),
    doc = "[`Unbounded`]: https://docs.rs/transaction-manager-core/latest/transaction_manager_core/storage/struct.Unbounded.html"
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

mod api;
#[cfg(feature = "defmt")]
mod defmt_impls;
mod durable;
mod engine;
mod ledger;
mod observe;
#[cfg(feature = "serde")]
mod serde_impls;
mod timing;
mod util;

pub use crate::api::action::Action;
pub use crate::api::any_manager::{Manager, ManagerFor};
pub use crate::durable::id::TransactionId;
pub use crate::engine::manager::TransactionManager;
pub use crate::engine::run::TransactionBuilder;
pub use crate::engine::transaction::Transaction;
pub use crate::ledger::error::RollbackState;
pub use crate::ledger::error::StepError;
pub use crate::ledger::error::StepErrorKind;
pub use crate::ledger::outcome::Committed;
pub use crate::ledger::outcome::Outcome;
pub use crate::ledger::outcome::TransactionError;
pub use crate::ledger::record::StepRecord;
pub use crate::ledger::record::StepStatus;
pub use crate::ledger::record::TransactionInfo;
#[cfg(feature = "alloc")]
pub use crate::ledger::rollback::BoxedRollback;
pub use crate::ledger::rollback::NoRollback;
pub use crate::ledger::rollback::Rollback;
pub use crate::ledger::summary::Summary;
pub use crate::timing::clock::Clock;
pub use crate::timing::manual_clock::ManualClock;
pub use crate::timing::retry::RetryPolicy;

pub mod step {
    //! The step builder, [`Step`], which [`Transaction::step`](crate::Transaction::step)
    //! returns, and the states it goes through as it is given an execute, a
    //! rollback, a retry condition. You rarely name them.
    pub use crate::api::execute::Execute;
    pub use crate::api::step::Step;
    pub use crate::api::step_fn::Keyed;
    pub use crate::api::step_fn::MapErr;
    pub use crate::api::step_fn::Plain;
    #[doc(hidden)]
    pub use crate::api::step_fn::StepFn;
    pub use crate::api::step_fn::WithContext;
    pub use crate::engine::attempt::Maybe;
}

pub mod group {
    //! Parallel groups: several steps run at once, each with its own retries and
    //! rollback, rolled back together if one fails. See [`Group`].
    pub use crate::api::group::Group;
    pub use crate::api::group::GroupError;
    #[doc(hidden)]
    pub use crate::api::group::Lend;
    #[doc(hidden)]
    pub use crate::api::group::LendFlag;
    pub use crate::api::group::Lent;
    pub use crate::api::group::LentEnd;
    #[doc(hidden)]
    pub use crate::api::group::MakeUndo;
    pub use crate::api::group::Member;
    pub use crate::api::group::MemberBuilder;
    #[doc(hidden)]
    pub use crate::api::group::MemberFn;
    pub use crate::api::group::Members;
    pub use crate::api::group::NoUndo;
    pub use crate::api::group::OnCompleted;
    pub use crate::api::group::OnCompletedUsing;
    pub use crate::api::group::OnUncertain;
    pub use crate::api::group::UndoKeyed;
    pub use crate::api::group::UndoMaybe;
    pub use crate::api::group::UndoWith;
    pub use crate::api::group::member;
}

pub mod scope {
    //! Scopes: a part of a transaction that rolls back on its own
    //! ([`Transaction::scope`](crate::Transaction::scope)).
    pub use crate::api::scope::ScopeError;
}

pub mod rollback {
    //! Rollbacks as closures and what happens when one fails for good.
    pub use crate::ledger::book::RollbackFailurePolicy;
    pub use crate::ledger::error::RollbackErrorKind;
    pub use crate::ledger::error::RollbackFailure;
    #[cfg(feature = "alloc")]
    pub use crate::ledger::rollback::BoxError;
    #[cfg(feature = "alloc")]
    pub use crate::ledger::rollback::LocalBoxedRollback;
    pub use crate::ledger::rollback::RollbackFn;
}

pub mod retry {
    //! Retry policies' parts: jitter, the random source and retry conditions.
    //! [`RetryPolicy`](crate::RetryPolicy) itself is at the crate root.
    pub use crate::timing::condition::RetryAlways;
    pub use crate::timing::condition::RetryCondition;
    pub use crate::timing::retry::Jitter;
    pub use crate::timing::retry::SplitMix64;
}

pub mod interrupt {
    //! Stopping a transaction from outside: a deadline for the whole
    //! transaction, or a cancel signal.
    pub use crate::timing::interrupt::Cancel;
    pub use crate::timing::interrupt::Deadline;
    pub use crate::timing::interrupt::Interrupt;
    pub use crate::timing::interrupt::InterruptReason;
    pub use crate::timing::interrupt::Interrupted;
    #[doc(hidden)]
    pub use crate::timing::interrupt::IntoBodyError;
    pub use crate::timing::interrupt::IntoReason;
    pub use crate::timing::interrupt::Never;
    pub use crate::timing::interrupt::NoInterrupt;
}

pub mod hooks {
    //! Observability: [`Hooks`] called at each step, attempt, retry and
    //! rollback, and a ready-made [`Metrics`] hook.
    pub use crate::observe::hooks::Hooks;
    pub use crate::observe::hooks::StepEvent;
    #[cfg(feature = "metrics")]
    pub use crate::observe::metrics::Metrics;
    #[cfg(feature = "metrics")]
    pub use crate::observe::metrics::StepMetrics;
    #[cfg(feature = "metrics")]
    pub use crate::observe::metrics::TransactionMetrics;
}

pub mod journal {
    //! Durability: the journal a transaction writes so that a crash or a
    //! power cut does not lose the rollbacks it owes, its codecs, the memory
    //! journal for tests, and recovery.
    pub use crate::durable::codec::CodecError;
    pub use crate::durable::codec::FORMAT;
    #[cfg(feature = "json")]
    pub use crate::durable::codec::Json;
    #[cfg(feature = "postcard")]
    pub use crate::durable::codec::Postcard;
    pub use crate::durable::codec::UndoCodec;
    pub use crate::durable::entry::Entry;
    pub use crate::durable::entry::EntryKind;
    pub use crate::durable::entry::StoredEntry;
    pub use crate::durable::id::IdempotencyKey;
    pub use crate::durable::id::ParseIdError;
    #[cfg(feature = "alloc")]
    pub use crate::durable::inspect;
    pub use crate::durable::journal::Browse;
    pub use crate::durable::journal::Holder;
    pub use crate::durable::journal::Journal;
    pub use crate::durable::journal::JournalFailure;
    #[cfg(feature = "std")]
    pub use crate::durable::memory::JournalRow;
    #[cfg(feature = "std")]
    pub use crate::durable::memory::MemoryJournal;
    #[cfg(feature = "std")]
    pub use crate::durable::memory::MemoryJournalError;
    pub use crate::durable::retention::Pruned;
    pub use crate::durable::retention::Retention;
    #[doc(hidden)]
    pub use crate::engine::binding::JournalFor;
    pub use crate::engine::binding::JournalRun;
    pub use crate::engine::binding::Journaled;
    pub use crate::engine::binding::NoJournal;
    pub use crate::engine::report::OwedStep;
    pub use crate::engine::report::RecoveredTransaction;
    pub use crate::engine::report::Recovery;
    pub use crate::engine::report::RecoveryError;
    pub use crate::engine::report::RecoveryOutcome;
    pub use crate::engine::run::JournalKeeps;
    pub use crate::engine::schedule::OwedRetry;
}

pub mod storage {
    //! Where a transaction keeps its step records and undo records: a fixed
    //! capacity ([`Fixed`], no allocator) or a growing list ([`Unbounded`]).
    pub use crate::engine::run::Closures;
    pub use crate::engine::run::LocalClosures;
    pub use crate::engine::run::Records;
    pub use crate::engine::run::UndoLog;
    pub use crate::util::storage::Fixed;
    pub use crate::util::storage::List;
    pub use crate::util::storage::Storage;
    #[cfg(feature = "alloc")]
    pub use crate::util::storage::Unbounded;
}

pub mod abandon {
    //! What happens to the rollbacks of a transaction that is dropped before it ends.
    pub use crate::engine::abandon::AbandonPolicy;
    pub use crate::engine::abandon::RollbackReport;
    pub use crate::engine::abandon::Spawned;
    pub use crate::engine::abandon::Unattended;
    pub use crate::ledger::abandoned::Abandoned;
    pub use crate::ledger::rollback::DetachedRollback;
}

pub mod summary {
    //! The parts of a transaction's [`Summary`](crate::Summary): names and panic messages.
    pub use crate::util::text::Name;
    pub use crate::util::text::PanicMessage;
}

pub mod time {
    //! Time: the [`Clock`] a runtime adapter implements, and [`ManualClock`]'s
    //! sleep future. Tests run on virtual time with [`ManualClock`].
    pub use crate::timing::clock::Clock;
    pub use crate::timing::manual_clock::ManualClock;
    pub use crate::timing::manual_clock::ManualSleep;
}

pub mod backend {
    //! The surface for runtime adapters and journal backends: what a crate that
    //! implements [`Clock`], [`Spawner`] or [`Journal`] needs, and nothing else.
    //! The engine can change behind it without touching them.
    pub use crate::durable::codec::CodecError;
    pub use crate::durable::entry::Entry;
    pub use crate::durable::entry::EntryKind;
    pub use crate::durable::entry::StoredEntry;
    pub use crate::durable::id::IdempotencyKey;
    pub use crate::durable::id::ParseIdError;
    pub use crate::durable::id::TransactionId;
    pub use crate::durable::journal::Browse;
    pub use crate::durable::journal::Holder;
    pub use crate::durable::journal::Journal;
    pub use crate::durable::retention::Pruned;
    pub use crate::durable::retention::Retention;
    pub use crate::engine::spawn::Spawner;
    pub use crate::timing::clock::Clock;
    pub use crate::timing::clock::div_rem_narrow;
}
