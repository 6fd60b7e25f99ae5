//! What a transaction knows and owes: its step records and summary, its
//! undo records and the `Rollback` trait they implement, and the errors
//! and outcomes it ends with.
//!
//! A step record's fields and the undo list are private to this folder:
//! `transitions` is the one place a record changes, `owed` the one place
//! an undo record is owed, kept, taken back or paid.

pub(crate) mod abandoned;
pub(crate) mod book;
pub(crate) mod error;
pub(crate) mod outcome;
pub(crate) mod owed;
pub(crate) mod record;
pub(crate) mod rollback;
pub(crate) mod summary;
pub(crate) mod transitions;
