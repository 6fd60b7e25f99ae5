//! Where a transaction keeps its step records and undo records.

use core::ops::{Deref, DerefMut};

mod sealed {
    pub trait Sealed {}
}

/// Where a transaction keeps its records: a fixed capacity chosen at compile
/// time ([`Fixed`]), or, with the `alloc` feature, a growable list
/// ([`Unbounded`]).
///
/// A transaction keeps one [`StepRecord`](crate::StepRecord) per step (this
/// is its [`Summary`](crate::Summary)) and one undo record per completed step
/// that has a rollback. With `Fixed<N>` the transaction runs at most `N`
/// steps; step `N + 1` fails with
/// [`StepErrorKind::CapacityExceeded`](crate::StepErrorKind::CapacityExceeded)
/// before it runs, and, when the body passes that error on with `?`, the
/// `N` completed steps are rolled back as for any other failure.
///
/// This trait is sealed: the engine relies on both lists of one storage
/// having the same capacity.
///
/// ```
/// use transaction_manager::storage::{Fixed, Storage};
/// assert_eq!(Fixed::<4>::CAPACITY, Some(4));
/// ```
pub trait Storage: sealed::Sealed {
    /// The most steps one transaction can hold, or `None` for no limit.
    const CAPACITY: Option<usize>;

    /// A list of `T` with this storage's capacity.
    type List<T>: List<T>;
}

/// A list in a [`Storage`]: a slice that can grow up to the storage's
/// capacity. Sealed; implemented by `heapless::Vec` and, with `alloc`,
/// `alloc::vec::Vec`.
pub trait List<T>: Default + Deref<Target = [T]> + DerefMut + sealed::Sealed {
    /// Appends `item`, or gives it back when the list is full.
    fn push(&mut self, item: T) -> Result<(), T>;

    /// Removes and returns the last item.
    fn pop(&mut self) -> Option<T>;

    /// Whether one more item fits.
    fn has_room(&self) -> bool;

    /// Removes and returns the item at `index`, shifting the later ones
    /// down (keeps their order).
    #[doc(hidden)]
    fn remove_at(&mut self, index: usize) -> T;
}

/// Pushes `item`, if there is one, onto `list` (dropped if full).
///
/// Not inlined: the item arrives behind its own pointer, so moving it into
/// the list is a `memcpy`. Inlined into a coroutine that holds both, the
/// move became a `memmove` (LLVM could not tell them apart), which linked
/// `memmove` (712 bytes on thumbv7m) for this one call.
#[inline(never)]
pub(crate) fn push_some<T, L: List<T>>(list: &mut L, item: Option<T>) {
    if let Some(item) = item {
        let _ = list.push(item);
    }
}

/// Room for `N` steps, inline in the transaction: no allocator needed.
///
/// ```
/// use transaction_manager::storage::{Fixed, Storage};
/// assert_eq!(<Fixed<8> as Storage>::CAPACITY, Some(8));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Fixed<const N: usize>;

impl<const N: usize> sealed::Sealed for Fixed<N> {}

impl<const N: usize> Storage for Fixed<N> {
    const CAPACITY: Option<usize> = Some(N);
    type List<T> = heapless::Vec<T, N>;
}

impl<T, const N: usize> sealed::Sealed for heapless::Vec<T, N> {}

impl<T, const N: usize> List<T> for heapless::Vec<T, N> {
    fn push(&mut self, item: T) -> Result<(), T> {
        heapless::Vec::push(self, item)
    }

    fn pop(&mut self) -> Option<T> {
        heapless::Vec::pop(self)
    }

    fn has_room(&self) -> bool {
        !self.is_full()
    }

    fn remove_at(&mut self, index: usize) -> T {
        heapless::Vec::remove(self, index)
    }
}

/// No limit on steps; records live on the heap. Needs the `alloc` feature.
///
/// ```
/// use transaction_manager::storage::{Storage, Unbounded};
/// assert_eq!(Unbounded::CAPACITY, None);
/// ```
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Unbounded;

#[cfg(feature = "alloc")]
impl sealed::Sealed for Unbounded {}

#[cfg(feature = "alloc")]
impl Storage for Unbounded {
    const CAPACITY: Option<usize> = None;
    type List<T> = alloc::vec::Vec<T>;
}

#[cfg(feature = "alloc")]
impl<T> sealed::Sealed for alloc::vec::Vec<T> {}

#[cfg(feature = "alloc")]
impl<T> List<T> for alloc::vec::Vec<T> {
    fn push(&mut self, item: T) -> Result<(), T> {
        alloc::vec::Vec::push(self, item);
        Ok(())
    }

    fn pop(&mut self) -> Option<T> {
        alloc::vec::Vec::pop(self)
    }

    fn has_room(&self) -> bool {
        true
    }

    fn remove_at(&mut self, index: usize) -> T {
        alloc::vec::Vec::remove(self, index)
    }
}
