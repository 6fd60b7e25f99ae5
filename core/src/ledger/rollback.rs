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

    /// Whether a rollback attempt that failed with `error` may be retried
    /// (the default: always, as the rollback policy allows). Return
    /// `false` for a permanent error: the rollback then fails for good at
    /// once, with no backoff wait, its record's rollback error reading
    /// `not retried: permanent: …`; like any rollback that failed for
    /// good it stays owed in a journal. Asked live and by recovery alike,
    /// only about errors (not timeouts or panics); a panic in it fails the
    /// rollback for good, with the panic in the record.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// enum DnsUndo { Delete(&'static str) }
    ///
    /// impl Rollback<()> for DnsUndo {
    ///     type Error = &'static str;
    ///     async fn rollback(&mut self, _: &mut ()) -> Result<(), &'static str> {
    ///         let DnsUndo::Delete(_name) = self;
    ///         Err("record is locked")
    ///     }
    ///     fn retry_if(&mut self, error: &&'static str) -> bool {
    ///         *error != "record is locked"
    ///     }
    /// }
    ///
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.transaction("t").fixed::<DnsUndo, 2>().run(async |tx| {
    ///     tx.step("record").max_retries(3).execute(|| async { Ok::<_, &str>(()) })
    ///         .undo(|()| DnsUndo::Delete("www")).await?;
    ///     tx.step("fails").run(|| async { Err::<(), _>("boom") }).await
    /// })).unwrap_err();
    /// let record = &err.summary().steps()[0];
    /// assert_eq!((record.status(), record.rollback_attempts()), (StepStatus::RollbackFailed, 1));
    /// assert_eq!(clock.now(), core::time::Duration::ZERO);
    /// ```
    fn retry_if(&mut self, error: &Self::Error) -> bool {
        let _ = error;
        true
    }
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
/// `Execute::rollback` hands to the transaction's undo type through `From`,
/// with the step's rollback retry condition `W`
/// ([`Execute::rollback_retry_if`](crate::step::Execute::rollback_retry_if);
/// [`RetryAlways`](crate::retry::RetryAlways) when none was set).
///
/// [`BoxedRollback`] and [`LocalBoxedRollback`] convert from it, condition
/// included; an undo type of your own can too (from `RollbackFn<G, Out>`:
/// a step with a rollback condition then does not compile, rather than
/// lose it).
///
/// ```
/// use transaction_manager::rollback::RollbackFn;
/// let record = RollbackFn::new(|ip: [u8; 4]| async move { Ok::<_, &str>(()) }, [10, 0, 0, 7]);
/// assert_eq!(record.output(), &[10, 0, 0, 7]);
/// ```
#[derive(Clone, Debug)]
pub struct RollbackFn<G, Out, W = crate::timing::condition::RetryAlways> {
    rollback: G,
    output: Out,
    retry_if: W,
}

impl<G, Out> RollbackFn<G, Out> {
    /// Pairs a rollback closure with the output of its step.
    pub fn new(rollback: G, output: Out) -> Self {
        Self { rollback, output, retry_if: crate::timing::condition::RetryAlways }
    }

    /// The closure and the output.
    pub fn into_parts(self) -> (G, Out) {
        (self.rollback, self.output)
    }
}

impl<G, Out, W> RollbackFn<G, Out, W> {
    /// The step's output the rollback will receive.
    pub fn output(&self) -> &Out {
        &self.output
    }

    /// The same rollback, retried only when `condition` accepts its error
    /// (see [`Rollback::retry_if`]).
    ///
    /// ```
    /// use transaction_manager::{retry::RetryCondition, rollback::RollbackFn};
    /// let record = RollbackFn::new(|id: u32| async move { Ok::<_, &str>(()) }, 7)
    ///     .with_retry_if(|error: &&str| *error != "gone");
    /// let (_rollback, output, mut condition) = record.into_parts_and_condition();
    /// assert_eq!((output, condition.retries(&"gone")), (7, false));
    /// ```
    pub fn with_retry_if<W2>(self, condition: W2) -> RollbackFn<G, Out, W2> {
        RollbackFn { rollback: self.rollback, output: self.output, retry_if: condition }
    }

    /// The closure, the output and the retry condition.
    pub fn into_parts_and_condition(self) -> (G, Out, W) {
        (self.rollback, self.output, self.retry_if)
    }
}

/// An undo record that can be rolled back on another task, with no context:
/// what [`Spawned`](crate::abandon::Spawned) needs to finish the rollbacks of a dropped transaction.
///
/// The future must be `Send`; implement it with an `async fn` whose future
/// is. [`BoxedRollback`](crate::BoxedRollback) implements it.
///
/// ```
/// use transaction_manager::abandon::DetachedRollback;
///
/// enum Undo { DeleteUser(u32) }
///
/// impl DetachedRollback for Undo {
///     type Error = std::io::Error;
///     async fn rollback_detached(&mut self) -> Result<(), Self::Error> {
///         match self {
///             Undo::DeleteUser(_id) => Ok(()), // call the API here
///         }
///     }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be rolled back on a spawned task: it does not implement `DetachedRollback`",
    label = "the manager has a spawner, so its undo records must implement `DetachedRollback`",
    note = "`with_spawner` finishes a dropped transaction's rollbacks on another task, without the context: \
            implement `DetachedRollback` for `{Self}`, or build this manager without `with_spawner` \
            (the default `Unattended` policy takes any undo type)"
)]
pub trait DetachedRollback: Send + 'static {
    /// What a failed attempt returns.
    type Error: fmt::Display + Send + 'static;

    /// Undoes the step; called once per attempt.
    fn rollback_detached(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether an attempt that failed with `error` may be retried, as
    /// [`Rollback::retry_if`](crate::Rollback::retry_if) (the default:
    /// always).
    ///
    /// ```
    /// # #[cfg(feature = "alloc")] {
    /// # use transaction_manager::*;
    /// # use transaction_manager::{abandon::DetachedRollback, rollback::{BoxError, RollbackFn}};
    /// let mut undo = BoxedRollback::from(
    ///     RollbackFn::new(|()| async { Err::<(), _>("gone") }, ()).with_retry_if(|e: &BoxError| e.to_string() != "gone"),
    /// );
    /// assert!(!DetachedRollback::retry_if(&mut undo, &BoxError::from("gone")));
    /// # }
    /// ```
    fn retry_if(&mut self, error: &Self::Error) -> bool {
        let _ = error;
        true
    }
}

/// A transaction without rollbacks owes nothing, so a manager with a
/// spawner runs it too.
impl DetachedRollback for NoRollback {
    type Error = core::convert::Infallible;

    async fn rollback_detached(&mut self) -> Result<(), Self::Error> {
        match *self {}
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
    use crate::timing::condition::RetryCondition;

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
                /// The retry condition, if the step set one.
                Option<Box<dyn FnMut(&BoxError) -> bool $(+ $bound)? + $life>>,
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
                    }), None)
                }
            }

            impl<$($lt,)? G, Out, Fut, E, W> From<RollbackFn<G, Out, W>> for $name<$($lt)?>
            where
                G: FnMut(Out) -> Fut $(+ $bound)? + $life,
                Out: Clone $(+ $bound)? + $life,
                Fut: Future<Output = Result<(), E>> $(+ $bound)? + $life,
                E: Into<BoxError>,
                W: RetryCondition<BoxError> $(+ $bound)? + $life,
            {
                fn from(f: RollbackFn<G, Out, W>) -> Self {
                    let (rollback, output, mut condition) = f.into_parts_and_condition();
                    let mut boxed = Self::new(rollback, output);
                    if !W::ALWAYS {
                        boxed.1 = Some(Box::new(move |error: &BoxError| condition.retries(error)));
                    }
                    boxed
                }
            }

            impl<$($lt,)? Ctx: ?Sized> Rollback<Ctx> for $name<$($lt)?> {
                type Error = BoxError;

                async fn rollback(&mut self, _: &mut Ctx) -> Result<(), BoxError> {
                    (self.0)().await
                }

                fn retry_if(&mut self, error: &BoxError) -> bool {
                    self.1.as_mut().is_none_or(|condition| condition(error))
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
    impl crate::ledger::rollback::DetachedRollback for BoxedRollback {
        type Error = BoxError;

        fn rollback_detached(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send {
            (self.0)()
        }

        fn retry_if(&mut self, error: &BoxError) -> bool {
            <Self as Rollback<()>>::retry_if(self, error)
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
        /// use transaction_manager::{Rollback, rollback::LocalBoxedRollback};
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
