//! The engine behind the handles: recovery of what a crash left, and the
//! rollbacks of a dropped transaction.

pub(crate) mod abandon;
pub(crate) mod attempt;
pub(crate) mod binding;
pub(crate) mod manager;
pub(crate) mod recovery;
pub(crate) mod replay;
pub(crate) mod report;
pub(crate) mod rollback;
pub(crate) mod run;
pub(crate) mod schedule;
pub(crate) mod spawn;
pub(crate) mod step_run;
pub(crate) mod transaction;
