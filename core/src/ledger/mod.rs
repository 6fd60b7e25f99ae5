//! What a transaction knows and owes: its step records and summary, its
//! undo records and the `Rollback` trait they implement, and the errors
//! and outcomes it ends with.

pub(crate) mod abandoned;
pub(crate) mod book;
pub(crate) mod error;
pub(crate) mod outcome;
pub(crate) mod owed;
pub(crate) mod record;
pub(crate) mod rollback;
pub(crate) mod summary;
pub(crate) mod transitions;
