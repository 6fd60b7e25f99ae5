//! Observability: hooks and the metrics hook.

pub(crate) mod hooks;
#[cfg(feature = "metrics")]
pub(crate) mod metrics;
