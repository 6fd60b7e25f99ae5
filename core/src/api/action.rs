//! Steps as data: an enum whose variants are the steps of a transaction,
//! run by one copy of the step engine.

use core::fmt;
use core::future::Future;

use crate::engine::attempt::Maybe;
use crate::engine::attempt::StepParts;

/// A step given as data: typically an enum with one variant per step of a
/// bring-up, whose `execute` matches on the variant. Run it with
/// [`Step::perform`](crate::step::Step::perform).
///
/// Every step performed with the same action type shares one copy of the
/// step engine (attempts, timeout race, retries, hooks, records), where a
/// step given as closures gets a copy of its own: on a microcontroller
/// this is what keeps the library's flash cost per transaction rather
/// than per step (see the facade's guide, `guide::microcontrollers`). Like an undo
/// enum implementing [`Rollback`](crate::Rollback), it reaches the
/// peripherals through the context, so it needs no `RefCell`.
///
/// `undo` says which undo record the step owes: for `Maybe::Completed`
/// once an attempt succeeded, and — to opt into uncertain rollbacks — for
/// `Maybe::Uncertain` while an attempt is in flight or after one that may
/// have taken effect (timed out, panicked). The default owes none.
///
/// ```
/// use transaction_manager::*;
/// use transaction_manager::step::Maybe;
///
/// struct Board { rail_on: bool }
///
/// enum BringUp { Power, Probe }
/// enum Up { RailMv(u16), ChipId(u8) }
/// enum Undo { RailOff }
///
/// impl Action<Board> for BringUp {
///     type Output = Up;
///     type Error = &'static str;
///     type Undo = Undo;
///
///     async fn execute(&mut self, board: &mut Board) -> Result<Up, &'static str> {
///         match self {
///             BringUp::Power => { board.rail_on = true; Ok(Up::RailMv(3300)) }
///             BringUp::Probe => Err("no answer"),
///         }
///     }
///
///     fn undo(&self, output: Maybe<&Up>) -> Option<Undo> {
///         match (self, output) {
///             (BringUp::Power, Maybe::Completed(_)) => Some(Undo::RailOff),
///             _ => None,
///         }
///     }
/// }
///
/// impl Rollback<Board> for Undo {
///     type Error = &'static str;
///     async fn rollback(&mut self, board: &mut Board) -> Result<(), &'static str> {
///         match self { Undo::RailOff => board.rail_on = false }
///         Ok(())
///     }
/// }
///
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let mut board = Board { rail_on: false };
/// let err = clock.block_on(manager.transaction("bring-up").fixed::<Undo, 2>().run_with(&mut board, async |tx| {
///     let Up::RailMv(mv) = tx.step("power").perform(BringUp::Power).await? else { unreachable!() };
///     tx.step("probe").perform(BringUp::Probe).await?;
///     Ok::<_, StepError<&str>>(mv)
/// })).unwrap_err();
/// assert_eq!(err.cause().step(), "probe");
/// assert!(!board.rail_on, "rolled back");
/// ```
pub trait Action<Ctx: ?Sized> {
    /// What a completed step returns to the body.
    type Output;
    /// What a failed attempt returns.
    type Error: fmt::Display;
    /// The transaction's undo record type.
    type Undo;

    /// One attempt of the step.
    fn execute(&mut self, ctx: &mut Ctx) -> impl Future<Output = Result<Self::Output, Self::Error>>;

    /// The undo record the step owes for `output`, if any (see the trait's
    /// docs for `Maybe::Uncertain`).
    fn undo(&self, output: Maybe<&Self::Output>) -> Option<Self::Undo> {
        let _ = output;
        None
    }

    /// Whether an attempt that failed with `error` may be retried (the
    /// default: always, as the step's retry policy allows). Return `false`
    /// for a permanent error: the step then fails for good at once, with
    /// no backoff wait, its record's error reading `not retried:
    /// permanent: …` — as [`Execute::retry_if`](crate::step::Execute::retry_if)
    /// does for a step given as closures. Asked only about errors (not
    /// timeouts or panics); a panic in it fails the step for good.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// enum Zone { AddRecord }
    ///
    /// impl Action<()> for Zone {
    ///     type Output = ();
    ///     type Error = &'static str;
    ///     type Undo = NoRollback;
    ///     async fn execute(&mut self, _: &mut ()) -> Result<(), &'static str> {
    ///         Err("zone refuses this name")
    ///     }
    ///     fn retry_if(&mut self, error: &&'static str) -> bool {
    ///         *error != "zone refuses this name"
    ///     }
    /// }
    ///
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let err = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
    ///     tx.step("record").max_retries(3).perform(Zone::AddRecord).await
    /// })).unwrap_err();
    /// let record = &err.summary().steps()[0];
    /// assert_eq!((record.status(), record.attempts()), (StepStatus::Failed, 1));
    /// assert_eq!(clock.now(), core::time::Duration::ZERO);   // no backoff wait
    /// # #[cfg(feature = "error-text")]
    /// assert_eq!(record.error(), Some("not retried: permanent: zone refuses this name"));
    /// ```
    fn retry_if(&mut self, error: &Self::Error) -> bool {
        let _ = error;
        true
    }
}

/// An [`Action`] as the engine runs it.
pub(crate) struct ActionParts<A>(pub(crate) A);

impl<Ctx: ?Sized, A: Action<Ctx>> StepParts<Ctx, A::Undo> for ActionParts<A> {
    type Output = A::Output;
    type Error = A::Error;

    fn has_undo(&self) -> bool {
        true
    }

    fn call(
        &mut self,
        ctx: &mut Ctx,
        _: crate::durable::id::IdempotencyKey,
    ) -> impl Future<Output = Result<A::Output, A::Error>> {
        self.0.execute(ctx)
    }

    // Asked like a rollback's `retry_if`: an action that keeps the default
    // answers `true` at the cost of one call per failed attempt.
    const CONDITIONAL: bool = true;

    fn retries(&mut self, error: &A::Error) -> bool {
        self.0.retry_if(error)
    }

    fn make_undo(&mut self, output: Maybe<&A::Output>, _: crate::durable::id::IdempotencyKey) -> Option<A::Undo> {
        self.0.undo(output)
    }
}
