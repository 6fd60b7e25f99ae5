//! The stack high-water mark: how many bytes of stack the program has used
//! at its deepest, since reset.
//!
//! cortex-m-rt's `paint-stack` feature fills the whole stack region, from
//! `_stack_end` (the end of the statics) up to `_stack_start` (the initial
//! stack pointer), with [`PAINT`] in the reset handler, before `main` runs.
//! The stack grows down from `_stack_start`, so whatever was ever used is
//! the part above the lowest word that no longer holds the paint: scan up
//! from `_stack_end` for the first changed word. Interrupt handlers (the
//! SysTick time driver) run on the same stack and are counted too.
//!
//! A used word that happens to hold the paint value is missed only if it
//! is the lowest one used, which would make the figure 4 bytes low.

/// The value cortex-m-rt paints the stack with (`STACK_PAINT_VALUE`).
pub const PAINT: u32 = cortex_m_rt::STACK_PAINT_VALUE;

unsafe extern "C" {
    // From cortex-m-rt's link.x: the top of the stack (it grows down from
    // here) and the lowest address it may reach.
    static _stack_start: u32;
    static _stack_end: u32;
}

/// Bytes of stack used at the deepest point since reset.
pub fn high_water_mark() -> usize {
    let top = &raw const _stack_start as usize;
    let bottom = &raw const _stack_end as usize;
    let mut word = bottom;
    // SAFETY: every word in `_stack_end.._stack_start` is RAM reserved for
    // the stack; volatile reads, because the compiler cannot know that
    // other code wrote there.
    while word < top && unsafe { core::ptr::read_volatile(word as *const u32) } == PAINT {
        word += 4;
    }
    top - word
}

/// Bytes of RAM reserved for the stack (`_stack_start - _stack_end`).
pub fn size() -> usize {
    &raw const _stack_start as usize - &raw const _stack_end as usize
}
