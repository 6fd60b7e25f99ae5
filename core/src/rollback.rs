//! Undo records: what a transaction keeps to undo a completed step.

use core::convert::Infallible;
use core::fmt;

/// An undo record: data kept for a completed step, which knows how to undo
/// that step.
///
/// A transaction stores one value of its undo type `U` per completed step
/// that has a rollback, and on failure calls [`Rollback::rollback`] on each,
/// latest first, retrying it under the step's rollback policy. The context
/// `Ctx` is the one the transaction was run with, lent mutably to each
/// rollback in turn — this is how firmware undoes steps on peripherals it
/// owns, without `RefCell`.
///
/// On a microcontroller `U` is usually an enum, one variant per kind of step
/// ("rollbacks as data"): it needs no allocator, and it is plain data that a
/// journal can persist. With the `alloc` feature, [`BoxedRollback`] holds a
/// closure instead, for code that prefers closures.
///
/// ```
/// use transaction_manager::Rollback;
///
/// struct Board { rail_on: bool, bus_ready: bool }
///
/// enum BoardUndo { PowerOff, ReleaseBus }
///
/// impl Rollback<Board> for BoardUndo {
///     type Error = &'static str;
///     async fn rollback(&mut self, board: &mut Board) -> Result<(), Self::Error> {
///         match self {
///             BoardUndo::PowerOff => board.rail_on = false,
///             BoardUndo::ReleaseBus => board.bus_ready = false,
///         }
///         Ok(())
///     }
/// }
/// ```
#[allow(async_fn_in_trait)] // `Send` follows the implementation: see the crate docs.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an undo record of a transaction whose context is `{Ctx}`",
    label = "the undo type of this transaction",
    note = "implement `Rollback<{Ctx}>` for `{Self}` (one variant per kind of step, matched in `rollback`), \
            or use `NoRollback` if no step has a rollback"
)]
pub trait Rollback<Ctx: ?Sized> {
    /// What a failed rollback attempt returns. Its `Display` text goes into
    /// the summary.
    type Error: fmt::Display;

    /// Undoes the step. Called once per attempt; a step's rollback is retried
    /// (with `&mut self` kept between attempts) until it succeeds or its
    /// retries run out.
    async fn rollback(&mut self, ctx: &mut Ctx) -> Result<(), Self::Error>;
}

/// The undo type of a transaction none of whose steps has a rollback.
/// It has no values, so nothing is ever stored or rolled back.
///
/// ```
/// # use transaction_manager::*;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let done = clock.block_on(manager.transaction("read-only").fixed::<NoRollback, 2>().run(async |tx| {
///     tx.step("read").run(|| async { Ok::<_, &str>(5) }).await
/// })).unwrap();
/// assert_eq!(done.into_value(), 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRollback {}

impl<Ctx: ?Sized> Rollback<Ctx> for NoRollback {
    type Error = Infallible;

    async fn rollback(&mut self, _: &mut Ctx) -> Result<(), Infallible> {
        match *self {}
    }
}

/// A rollback closure and the step output it will be called with: what
/// `Execute::rollback` hands to the transaction's undo type through `From`.
///
/// [`BoxedRollback`] and [`LocalBoxedRollback`] convert from it; an undo type
/// of your own can too.
///
/// ```
/// use transaction_manager::RollbackFn;
/// let record = RollbackFn::new(|ip: [u8; 4]| async move { Ok::<_, &str>(()) }, [10, 0, 0, 7]);
/// assert_eq!(record.output(), &[10, 0, 0, 7]);
/// ```
#[derive(Clone, Debug)]
pub struct RollbackFn<G, Out> {
    rollback: G,
    output: Out,
}

impl<G, Out> RollbackFn<G, Out> {
    /// Pairs a rollback closure with the output of its step.
    pub fn new(rollback: G, output: Out) -> Self {
        Self { rollback, output }
    }

    /// The step's output the rollback will receive.
    pub fn output(&self) -> &Out {
        &self.output
    }

    /// The closure and the output.
    pub fn into_parts(self) -> (G, Out) {
        (self.rollback, self.output)
    }
}

#[cfg(feature = "alloc")]
pub use boxed::{BoxError, BoxedRollback, LocalBoxedRollback};

#[cfg(feature = "alloc")]
mod boxed {
    use alloc::boxed::Box;
    use core::future::Future;
    use core::pin::Pin;

    use super::{Rollback, RollbackFn};

    /// A rollback error of any type, boxed: what closure rollbacks return,
    /// so steps with different error types can share one transaction. Use
    /// `downcast_ref` to get the original type back.
    pub type BoxError = Box<dyn core::error::Error + Send + Sync + 'static>;

    macro_rules! boxed_rollback {
        (
            $(#[$doc:meta])*
            $name:ident<$($lt:lifetime)?> $(+ $bound:ident)?, life: $life:lifetime
        ) => {
            $(#[$doc])*
            pub struct $name<$($lt)?>(
                Box<
                    dyn FnMut() -> Pin<Box<dyn Future<Output = Result<(), BoxError>> $(+ $bound)? + $life>>
                        $(+ $bound)?
                        + $life,
                >,
            );

            impl<$($lt)?> $name<$($lt)?> {
                /// Boxes `rollback`, to be called with a clone of `output`
                /// on each attempt.
                pub fn new<G, Out, Fut, E>(mut rollback: G, output: Out) -> Self
                where
                    G: FnMut(Out) -> Fut $(+ $bound)? + $life,
                    Out: Clone $(+ $bound)? + $life,
                    Fut: Future<Output = Result<(), E>> $(+ $bound)? + $life,
                    E: Into<BoxError>,
                {
                    Self(Box::new(move || {
                        let attempt = rollback(output.clone());
                        Box::pin(async move { attempt.await.map_err(Into::into) })
                    }))
                }
            }

            impl<$($lt,)? G, Out, Fut, E> From<RollbackFn<G, Out>> for $name<$($lt)?>
            where
                G: FnMut(Out) -> Fut $(+ $bound)? + $life,
                Out: Clone $(+ $bound)? + $life,
                Fut: Future<Output = Result<(), E>> $(+ $bound)? + $life,
                E: Into<BoxError>,
            {
                fn from(f: RollbackFn<G, Out>) -> Self {
                    let (rollback, output) = f.into_parts();
                    Self::new(rollback, output)
                }
            }

            impl<$($lt,)? Ctx: ?Sized> Rollback<Ctx> for $name<$($lt)?> {
                type Error = BoxError;

                async fn rollback(&mut self, _: &mut Ctx) -> Result<(), BoxError> {
                    (self.0)().await
                }
            }

            impl<$($lt)?> core::fmt::Debug for $name<$($lt)?> {
                fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                    f.write_str(stringify!($name))
                }
            }
        };
    }

    boxed_rollback!(
        /// A rollback closure with its step's output, boxed; `Send + 'static`,
        /// so the transaction can be spawned on a multi-threaded runtime. The
        /// undo type of [`TransactionManager::run`](crate::TransactionManager::run).
        ///
        /// The closure receives a clone of the step's output on every
        /// attempt, so the output must be `Clone` (wrap it in an `Arc` if it
        /// is not). Its error can be of any type that converts into
        /// [`BoxError`].
        ///
        /// The closure and its futures own what they use (`'static`): clone
        /// an `Arc` of your client into the closure, and again into each
        /// future (`move |id| { let api = api.clone(); async move { … } }`).
        /// A lifetime parameter here would make the compiler's `Send` check
        /// of the spawned transaction fail ("implementation of `AsyncFnOnce`
        /// is not general enough", rust-lang/rust#110338). To borrow instead,
        /// use [`LocalBoxedRollback`], which is not `Send`.
        ///
        /// ```
        /// use transaction_manager::{BoxedRollback, Rollback};
        /// let mut undo = BoxedRollback::new(|id: u32| async move {
        ///     if id == 7 { Ok(()) } else { Err("unknown id") }
        /// }, 7);
        /// let ok = futures_lite_block_on(undo.rollback(&mut ()));
        /// # fn futures_lite_block_on<F: core::future::Future>(f: F) -> F::Output {
        /// #     transaction_manager::ManualClock::new().block_on(f)
        /// # }
        /// assert!(ok.is_ok());
        /// ```
        BoxedRollback<> + Send, life: 'static
    );

    /// A dropped transaction's closure rollbacks can finish on a spawned
    /// task.
    impl crate::DetachedRollback for BoxedRollback {
        type Error = BoxError;

        fn rollback_detached(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send {
            (self.0)()
        }
    }

    boxed_rollback!(
        /// Like [`BoxedRollback`] but without the `Send` bound, for
        /// transactions that stay on one thread (`Rc`, `RefCell`, a tokio
        /// `LocalSet`, a single-threaded executor, `ManualClock` tests). Its
        /// closures may borrow from the caller for `'a`.
        ///
        /// ```
        /// use std::rc::Rc;
        /// use transaction_manager::{LocalBoxedRollback, Rollback};
        /// let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        /// let l = log.clone();
        /// let mut undo = LocalBoxedRollback::new(move |id: u32| {
        ///     let l = l.clone();
        ///     async move { l.borrow_mut().push(id); Ok::<_, &str>(()) }
        /// }, 3);
        /// transaction_manager::ManualClock::new().block_on(undo.rollback(&mut ())).unwrap();
        /// assert_eq!(*log.borrow(), [3]);
        /// ```
        LocalBoxedRollback<'a>, life: 'a
    );
}
