//! What a transaction knows and owes: its step records and summary, and
//! its undo records.

pub(crate) mod book;
pub(crate) mod record;
pub(crate) mod summary;
