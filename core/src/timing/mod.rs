//! Time: the clock, virtual time, retry policies and conditions, and the
//! interrupts (deadline, cancel) that stop a transaction from outside.

pub(crate) mod clock;
pub(crate) mod condition;
pub(crate) mod future;
pub(crate) mod interrupt;
pub(crate) mod manual_clock;
pub(crate) mod retry;
