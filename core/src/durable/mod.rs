//! The journal: the byte-level trait, its entries and codecs, the binding
//! of a journal to a manager, and the memory journal.

pub(crate) mod codec;
pub(crate) mod entry;
pub(crate) mod id;
#[cfg(feature = "alloc")]
pub mod inspect;
pub(crate) mod journal;
#[cfg(feature = "std")]
pub(crate) mod memory;
pub(crate) mod retention;
