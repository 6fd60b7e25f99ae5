//! One bound for code that takes the application's manager, whatever its
//! clock, hooks and abandon policy.

use crate::{api::manager::TransactionManager, observe::hooks::Hooks, timing::clock::Clock};

/// Any [`TransactionManager`]: the bound for a library that runs
/// transactions with a manager the application built, whatever its clock,
/// hooks and spawner. Write `manager: &impl Manager` (or `M: Manager`)
/// instead of naming `TransactionManager<C, H, A>` and its bounds.
///
/// [`manager()`](Manager::manager) gives the `TransactionManager` back. With
/// the `alloc` feature the bounds that closure transactions need
/// ([`TransactionManager::run`], [`transaction(..).run(..)`](crate::TransactionBuilder::run))
/// come with the trait, so they need nothing more. A transaction with a
/// fixed undo log of type `U` and capacity `N` adds one bound for the
/// manager's abandon policy:
/// `where M::Abandon: AbandonPolicy<M::Clock, M::Hooks, (), U, Fixed<N>>`.
///
/// Every `TransactionManager` implements it (with `alloc`: every one whose
/// abandon policy can take closure rollbacks, which [`Unattended`](crate::abandon::Unattended)
/// and [`Spawned`](crate::abandon::Spawned) can); it is sealed.
///
/// ```
/// # #[cfg(feature = "alloc")] {
/// use transaction_manager::{Manager, StepError};
///
/// /// A library function: runs on any runtime, with any hooks or spawner.
/// pub async fn provision(manager: &impl Manager, name: &str) -> Result<u32, StepError<&'static str>> {
///     let name = name.to_owned();
///     let done = manager
///         .manager()
///         .run("provision", async |tx| {
///             let id = tx
///                 .step("create_user")
///                 .execute(|| async { Ok::<_, &str>(7) })
///                 .rollback(move |id| { let name = name.clone(); async move { println!("delete {name} ({id})"); Ok::<_, &str>(()) } })
///                 .await?;
///             Ok::<_, StepError<&str>>(id)
///         })
///         .await
///         .map_err(|e| e.into_cause())?;
///     Ok(done.into_value())
/// }
///
/// // The application: a manager with hooks, on virtual time here.
/// # use transaction_manager::{ManualClock, TransactionManager, hooks::Hooks};
/// struct Audit;
/// impl Hooks for Audit {}
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock).with_hooks(Audit);
/// assert_eq!(clock.block_on(provision(&manager, "alice")), Ok(7));
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `TransactionManager` that can run closure transactions",
    label = "not a transaction manager",
    note = "pass the manager by reference (`&manager`); with a spawner (`with_spawner`), the clock must be \
            `Clone + Send + Sync + 'static` for its abandoned rollbacks to run on another task"
)]
pub trait Manager: sealed::Sealed {
    /// The manager's clock.
    type Clock: Clock;
    /// The manager's hooks.
    type Hooks: Hooks;
    /// What the manager does with the rollbacks of a dropped transaction.
    #[cfg(feature = "alloc")]
    type Abandon: crate::engine::abandon::AbandonPolicy<
            Self::Clock,
            Self::Hooks,
            (),
            crate::api::rollback::BoxedRollback,
            crate::util::storage::Unbounded,
        >;
    /// What the manager does with the rollbacks of a dropped transaction.
    #[cfg(not(feature = "alloc"))]
    type Abandon;

    /// The manager itself, to start transactions with.
    fn manager(&self) -> &TransactionManager<Self::Clock, Self::Hooks, Self::Abandon>;
}

#[cfg(feature = "alloc")]
impl<C: Clock, H: Hooks, A> Manager for TransactionManager<C, H, A>
where
    A: crate::engine::abandon::AbandonPolicy<
            C,
            H,
            (),
            crate::api::rollback::BoxedRollback,
            crate::util::storage::Unbounded,
        >,
{
    type Clock = C;
    type Hooks = H;
    type Abandon = A;

    fn manager(&self) -> &Self {
        self
    }
}

#[cfg(not(feature = "alloc"))]
impl<C: Clock, H: Hooks, A> Manager for TransactionManager<C, H, A> {
    type Clock = C;
    type Hooks = H;
    type Abandon = A;

    fn manager(&self) -> &Self {
        self
    }
}

impl<M: Manager + ?Sized> Manager for &M {
    type Clock = M::Clock;
    type Hooks = M::Hooks;
    type Abandon = M::Abandon;

    fn manager(&self) -> &TransactionManager<M::Clock, M::Hooks, M::Abandon> {
        (**self).manager()
    }
}

mod sealed {
    pub trait Sealed {}
    impl<C, H, A> Sealed for crate::api::manager::TransactionManager<C, H, A> {}
    impl<M: Sealed + ?Sized> Sealed for &M {}
}
