//! What the user writes: the manager and its transaction builder, the
//! transaction handle, steps and actions, groups and scopes.

pub(crate) mod action;
pub(crate) mod any_manager;
pub(crate) mod execute;
pub(crate) mod group;
pub(crate) mod manager;
pub(crate) mod scope;
pub(crate) mod step;
pub(crate) mod step_fn;
pub(crate) mod transaction;
pub(crate) mod undo;
