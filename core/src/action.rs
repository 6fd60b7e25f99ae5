//! Steps as data: an enum whose variants are the steps of a transaction,
//! run by one copy of the step engine.

use core::fmt;
use core::future::Future;

use crate::Maybe;
use crate::step::StepParts;

/// A step given as data: typically an enum with one variant per step of a
/// bring-up, whose `execute` matches on the variant. Run it with
/// [`Step::perform`](crate::Step::perform).
///
/// Every step performed with the same action type shares one copy of the
/// step engine (attempts, timeout race, retries, hooks, records), where a
/// step given as closures gets a copy of its own: on a microcontroller
/// this is what keeps the library's flash cost per transaction rather
/// than per step (see the README's Microcontrollers section). Like an undo
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
}

/// An [`Action`] as the engine runs it.
pub(crate) struct ActionParts<A>(pub(crate) A);

impl<Ctx: ?Sized, A: Action<Ctx>> StepParts<Ctx, A::Undo> for ActionParts<A> {
    type Output = A::Output;
    type Error = A::Error;

    fn has_undo(&self) -> bool {
        true
    }

    fn call(&mut self, ctx: &mut Ctx) -> impl Future<Output = Result<A::Output, A::Error>> {
        self.0.execute(ctx)
    }

    fn make_undo(&mut self, output: Maybe<&A::Output>) -> Option<A::Undo> {
        self.0.undo(output)
    }
}
