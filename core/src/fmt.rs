//! The one place log messages leave the crate.
//!
//! Every message the engine emits goes through these macros: to the `log`
//! crate with the `log` feature, to `defmt` with the `defmt` feature, and
//! nowhere otherwise — then the arguments are only borrowed, in dead code,
//! so call sites compile without "unused" warnings and nothing is computed.
//! Format strings use only `{}` and `{:?}`, which both backends understand.
//!
//! With both features on, messages go to both: features stay additive, so
//! a dependency that turns `log` on cannot break a firmware build that
//! uses `defmt`.

#![allow(unused_macros)]

macro_rules! tm_log {
    ($level:ident, $s:literal $(, $x:expr)* $(,)?) => {{
        #[cfg(feature = "log")]
        ::log::$level!(target: "transaction_manager", $s $(, $x)*);
        #[cfg(feature = "defmt")]
        ::defmt::$level!($s $(, $x)*);
        // Borrowed in dead code only: the arguments (often a record found
        // through a bounds-checked index) are not computed.
        #[cfg(not(any(feature = "log", feature = "defmt")))]
        if false {
            let _ = ($(&$x),*);
        }
    }};
}

macro_rules! tm_debug {
    ($($t:tt)*) => { tm_log!(debug, $($t)*) };
}

macro_rules! tm_info {
    ($($t:tt)*) => { tm_log!(info, $($t)*) };
}

macro_rules! tm_warn {
    ($($t:tt)*) => { tm_log!(warn, $($t)*) };
}

macro_rules! tm_error {
    ($($t:tt)*) => { tm_log!(error, $($t)*) };
}
