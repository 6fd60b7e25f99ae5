//! One bound for code that takes the application's manager, whatever its
//! clock, hooks, abandon policy and journal.

use crate::engine::abandon::AbandonPolicy;
use crate::engine::binding::JournalIds;
use crate::util::storage::Storage;
use crate::{engine::manager::TransactionManager, observe::hooks::Hooks, timing::clock::Clock};

/// Any [`TransactionManager`], journaled or not: the bound for a library
/// that runs transactions with a manager the application built, whatever
/// its clock, hooks, spawner and journal. Write `manager: &impl Manager`
/// (or `M: Manager`) instead of naming `TransactionManager<C, H, A, J>`
/// and its bounds.
///
/// [`manager()`](Manager::manager) gives the `TransactionManager` back.
/// What a transaction needs of the manager's journal depends on its undo
/// records:
///
/// - undo records that are data ([`fixed`](crate::TransactionBuilder::fixed),
///   [`unbounded`](crate::TransactionBuilder::unbounded)) run on every
///   manager, journaled or not; the function states that the journal, if
///   any, can encode them: `where M::Journal: JournalRun<Undo, BodyError>`
///   (see [`JournalRun`](crate::journal::JournalRun)).
/// - closure rollbacks ([`TransactionManager::run`],
///   [`transaction(..).run(..)`](crate::TransactionBuilder::run)) cannot be
///   written to a journal, so they run only on a manager without one: take
///   `manager: &impl Manager<Journal = NoJournal>`. With the `alloc`
///   feature, the rest of what they need comes with the trait.
///
/// A transaction with a fixed undo log of type `U` and capacity `N` takes
/// `M: ManagerFor<U, Fixed<N>>` instead ([`ManagerFor`]: its manager can
/// hand the rollbacks of a dropped transaction to its abandon policy).
///
/// Every `TransactionManager` implements it (with `alloc`: every one whose
/// abandon policy can take closure rollbacks, which [`Unattended`](crate::abandon::Unattended)
/// and [`Spawned`](crate::abandon::Spawned) can), and so does a reference to one;
/// it is sealed.
///
/// ```
/// # #[cfg(feature = "alloc")] {
/// use transaction_manager::{Manager, StepError, journal::NoJournal};
///
/// /// A library function with closure rollbacks: runs on any runtime, with
/// /// any hooks or spawner, on a manager without a journal.
/// pub async fn provision(
///     manager: &impl Manager<Journal = NoJournal>,
///     name: &str,
/// ) -> Result<u32, StepError<&'static str>> {
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
///
/// Undo records that are data run on a journaled manager too:
///
/// ```
/// # #[cfg(all(feature = "std", feature = "postcard"))] {
/// use transaction_manager::{ManagerFor, Rollback, StepError, journal::JournalRun, storage::Fixed};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub enum Undo { ReleaseIp(u32) }
///
/// impl Rollback<()> for Undo {
///     type Error = &'static str;
///     async fn rollback(&mut self, _: &mut ()) -> Result<(), &'static str> {
///         let Undo::ReleaseIp(_ip) = self;
///         Ok(()) // call the API here
///     }
/// }
///
/// /// A library function: any manager, journaled or not.
/// pub async fn reserve_ip<M: ManagerFor<Undo, Fixed<2>>>(manager: &M) -> Result<u32, StepError<&'static str>>
/// where
///     M::Journal: JournalRun<Undo, StepError<&'static str>>,
/// {
///     let done = manager
///         .manager()
///         .transaction("reserve-ip")
///         .fixed::<Undo, 2>()
///         .run(async |tx| tx.step("reserve").execute(|| async { Ok::<_, &str>(10) }).undo(|ip| Undo::ReleaseIp(*ip)).await)
///         .await
///         .map_err(|e| e.into_cause())?;
///     Ok(done.into_value())
/// }
///
/// # use transaction_manager::{ManualClock, TransactionManager, journal::{MemoryJournal, Postcard}};
/// let clock = ManualClock::new();
/// let journaled = TransactionManager::new(&clock).with_journal(MemoryJournal::new(), Postcard::<1>);
/// assert_eq!(clock.block_on(reserve_ip(&journaled)), Ok(10));
/// let plain = TransactionManager::new(&clock);
/// assert_eq!(clock.block_on(reserve_ip(&plain)), Ok(10));
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `TransactionManager`",
    label = "expected a transaction manager",
    note = "`Manager` is implemented by every `TransactionManager` (any clock, hooks, abandon policy and journal) \
            and by references to one"
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
            crate::ledger::rollback::BoxedRollback,
            crate::util::storage::Unbounded,
        >;
    /// What the manager does with the rollbacks of a dropped transaction.
    #[cfg(not(feature = "alloc"))]
    type Abandon;
    /// The manager's journal: [`NoJournal`](crate::journal::NoJournal), or a
    /// [`Journaled`](crate::journal::Journaled) journal and codec.
    type Journal: JournalIds;

    /// The manager itself, to start transactions with.
    fn manager(&self) -> &TransactionManager<Self::Clock, Self::Hooks, Self::Abandon, Self::Journal>;
}

#[cfg(feature = "alloc")]
impl<C: Clock, H: Hooks, A, J: JournalIds> Manager for TransactionManager<C, H, A, J>
where
    A: crate::engine::abandon::AbandonPolicy<
            C,
            H,
            (),
            crate::ledger::rollback::BoxedRollback,
            crate::util::storage::Unbounded,
        >,
{
    type Clock = C;
    type Hooks = H;
    type Abandon = A;
    type Journal = J;

    fn manager(&self) -> &Self {
        self
    }
}

#[cfg(not(feature = "alloc"))]
impl<C: Clock, H: Hooks, A, J: JournalIds> Manager for TransactionManager<C, H, A, J> {
    type Clock = C;
    type Hooks = H;
    type Abandon = A;
    type Journal = J;

    fn manager(&self) -> &Self {
        self
    }
}

/// A [`Manager`] that runs transactions whose undo records are `U`, kept
/// in `S` (with a context `Ctx`, `()` by default): its abandon policy can
/// take the rollbacks such a transaction owes if its future is dropped.
/// The bound for a library function with a fixed undo log
/// (`M: ManagerFor<Undo, Fixed<2>>`), instead of spelling out the
/// policy's own bound (`M::Abandon: AbandonPolicy<M::Clock, M::Hooks, (),
/// Undo, Fixed<2>>`, which it implies). Implemented for every manager
/// whose policy takes them: [`Unattended`](crate::abandon::Unattended)
/// takes every undo type; [`Spawned`](crate::abandon::Spawned) takes those
/// it can run on a spawned task.
///
/// ```
/// use transaction_manager::{ManagerFor, NoRollback, StepError, journal::NoJournal, storage::Fixed};
///
/// /// A fixed undo log (no allocator): any manager without a journal.
/// pub async fn health_check(
///     manager: &impl ManagerFor<NoRollback, Fixed<2>, Journal = NoJournal>,
/// ) -> Result<u32, StepError<&'static str>> {
///     let done = manager
///         .manager()
///         .transaction("health-check")
///         .fixed::<NoRollback, 2>()
///         .run(async |tx| {
///             let a = tx.step("ping_a").run(|| async { Ok(1) }).await?;
///             let b = tx.step("ping_b").run(|| async { Ok(2) }).await?;
///             Ok::<_, StepError<&str>>(a + b)
///         })
///         .await
///         .map_err(|e| e.into_cause())?;
///     Ok(done.into_value())
/// }
///
/// let clock = transaction_manager::ManualClock::new();
/// let manager = transaction_manager::TransactionManager::new(&clock);
/// assert_eq!(clock.block_on(health_check(&manager)), Ok(3));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run transactions whose undo records are `{U}` kept in `{S}`",
    label = "its abandon policy cannot take these undo records",
    note = "a `Spawned` policy takes only undo records it can run on a spawned task; \
            `Unattended` (the default) takes every one"
)]
pub trait ManagerFor<U, S: Storage, Ctx: ?Sized = ()>:
    Manager<Abandon: AbandonPolicy<<Self as Manager>::Clock, <Self as Manager>::Hooks, Ctx, U, S>>
{
}

impl<M: Manager + ?Sized, U, S: Storage, Ctx: ?Sized> ManagerFor<U, S, Ctx> for M where
    M::Abandon: AbandonPolicy<M::Clock, M::Hooks, Ctx, U, S>
{
}

impl<M: Manager + ?Sized> Manager for &M {
    type Clock = M::Clock;
    type Hooks = M::Hooks;
    type Abandon = M::Abandon;
    type Journal = M::Journal;

    fn manager(&self) -> &TransactionManager<M::Clock, M::Hooks, M::Abandon, M::Journal> {
        (**self).manager()
    }
}

mod sealed {
    pub trait Sealed {}
    impl<C, H, A, J> Sealed for crate::engine::manager::TransactionManager<C, H, A, J> {}
    impl<M: Sealed + ?Sized> Sealed for &M {}
}
