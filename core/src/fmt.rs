//! The one place log messages leave the crate.
//!
//! Every message the engine emits goes through these macros, so switching the
//! backend (or compiling messages out) is a change to this file only. Without
//! a logging feature the arguments are still evaluated by reference, so the
//! call sites compile without "unused variable" warnings and cost nothing.

#![allow(unused_macros)]

macro_rules! tm_debug {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::debug!(target: "transaction_manager", $s $(, $x)*);
        #[cfg(not(feature = "log"))]
        let _ = ($(&$x),*);
    }};
}

macro_rules! tm_info {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::info!(target: "transaction_manager", $s $(, $x)*);
        #[cfg(not(feature = "log"))]
        let _ = ($(&$x),*);
    }};
}

macro_rules! tm_warn {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::warn!(target: "transaction_manager", $s $(, $x)*);
        #[cfg(not(feature = "log"))]
        let _ = ($(&$x),*);
    }};
}

macro_rules! tm_error {
    ($s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::error!(target: "transaction_manager", $s $(, $x)*);
        #[cfg(not(feature = "log"))]
        let _ = ($(&$x),*);
    }};
}
