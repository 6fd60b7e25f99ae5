//! What every layer uses: names and error texts, panic guards, the
//! timeout race, and the storage of records.

pub(crate) mod panic;
pub(crate) mod storage;
pub(crate) mod text;
