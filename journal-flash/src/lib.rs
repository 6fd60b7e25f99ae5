//! A durable journal for [transaction-manager](https://docs.rs/transaction-manager)
//! on microcontroller flash: `#![no_std]`, no allocator, over any
//! `embedded-storage-async` `NorFlash`, through
//! [sequential-storage](https://docs.rs/sequential-storage).
//!
//! A journaled transaction writes each step's undo record to flash before
//! the step's value returns to the body; after a power cut, the next boot
//! opens the journal and `recover`s, which rolls back every step of every
//! unfinished transaction, latest first. See [`FlashJournal`].
//!
//! [`FlashCell`] and [`RamFlash`] are a `NorFlash` in RAM that can lose
//! power after any write or in the middle of one: for tests, and for
//! boards (or emulators) without a writable flash.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod journal;
mod ram;

pub use journal::{FlashJournal, FlashJournalError, MAX_STEP};
pub use ram::{FlashCell, RamFlash, RamFlashError};
