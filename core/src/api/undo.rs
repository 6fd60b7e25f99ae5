//! How a step's or a group member's undo record is made from its output:
//! one set of undo makers for both, so a step and a member given their
//! rollback the same way owe the same record.

use crate::durable::id::IdempotencyKey;
use crate::engine::attempt::Maybe;
use crate::ledger::rollback::RollbackFn;
use crate::timing::condition::RetryAlways;

/// The undo record a step or a group member owes for its output, if any:
/// how its rollback was given. Implemented by [`NoUndo`], [`OnCompleted`],
/// [`OnCompletedUsing`], [`OnUncertain`], [`UndoWith`], [`UndoKeyed`] and
/// [`UndoMaybe`] (and two makers only steps use, for `rollback_keyed` and
/// `rollback_uncertain_using`); you do not implement it yourself.
pub trait MakeUndo<Out, U> {
    /// Whether the step may owe an undo record (it needs room for one).
    fn has_undo(&self) -> bool;

    /// The undo record owed for `output`, if any, by the step whose
    /// idempotency key is `key`.
    fn make(&mut self, output: Maybe<&Out>, key: IdempotencyKey) -> Option<U>;
}

/// A step or member without a rollback.
#[derive(Clone, Copy, Debug)]
pub struct NoUndo;

impl<Out, U> MakeUndo<Out, U> for NoUndo {
    fn has_undo(&self) -> bool {
        false
    }

    fn make(&mut self, _: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        None
    }
}

/// A rollback closure given the step's output, and its retry condition
/// `RW`. Made by [`Member::rollback`](crate::group::Member::rollback) and
/// [`Execute::rollback`](crate::step::Execute::rollback).
#[derive(Debug)]
pub struct OnCompleted<G, RW = RetryAlways>(pub(crate) Option<(G, RW)>);

impl<Out: Clone, U, G, RW> MakeUndo<Out, U> for OnCompleted<G, RW>
where
    U: From<RollbackFn<G, Out, RW>>,
{
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        let output = output.completed()?;
        let (rollback, condition) = self.0.take()?;
        Some(U::from(RollbackFn::new(rollback, output.clone()).with_retry_if(condition)))
    }
}

/// A rollback closure given a shared state and the step's output, and
/// its retry condition `RW`. Made by [`Member::rollback_using`](crate::group::Member::rollback_using)
/// and [`Execute::rollback_using`](crate::step::Execute::rollback_using).
#[derive(Debug)]
pub struct OnCompletedUsing<St, G, RW = RetryAlways>(pub(crate) St, pub(crate) Option<(G, RW)>);

impl<Out: Clone, U, St: Clone, G, RW> MakeUndo<Out, U> for OnCompletedUsing<St, G, RW>
where
    U: From<RollbackFn<G, (St, Out), RW>>,
{
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        let output = output.completed()?;
        let (rollback, condition) = self.1.take()?;
        Some(U::from(RollbackFn::new(rollback, (self.0.clone(), output.clone())).with_retry_if(condition)))
    }
}

/// A rollback closure that also covers an uncertain outcome, and its retry
/// condition `RW`. Made by
/// [`Member::rollback_uncertain`](crate::group::Member::rollback_uncertain) and
/// [`Execute::rollback_uncertain`](crate::step::Execute::rollback_uncertain).
#[derive(Debug)]
pub struct OnUncertain<G, RW = RetryAlways>(pub(crate) G, pub(crate) RW);

impl<Out: Clone, U, G: Clone, RW: Clone> MakeUndo<Out, U> for OnUncertain<G, RW>
where
    U: From<RollbackFn<G, Maybe<Out>, RW>>,
{
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        Some(U::from(RollbackFn::new(self.0.clone(), output.cloned()).with_retry_if(self.1.clone())))
    }
}

/// A rollback closure given the step's idempotency key and output, and its
/// retry condition `RW`. Made by
/// [`Execute::rollback_keyed`](crate::step::Execute::rollback_keyed).
#[derive(Debug)]
pub(crate) struct OnCompletedKeyed<G, RW = RetryAlways>(pub(crate) Option<(G, RW)>);

impl<Out: Clone, U, G, RW> MakeUndo<Out, U> for OnCompletedKeyed<G, RW>
where
    U: From<RollbackFn<G, (IdempotencyKey, Out), RW>>,
{
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, key: IdempotencyKey) -> Option<U> {
        let output = output.completed()?;
        let (rollback, condition) = self.0.take()?;
        Some(U::from(RollbackFn::new(rollback, (key, output.clone())).with_retry_if(condition)))
    }
}

/// A rollback closure given a shared state and the step's output, that
/// also covers an uncertain outcome, and its retry condition `RW`. Made by
/// [`Execute::rollback_uncertain_using`](crate::step::Execute::rollback_uncertain_using).
#[derive(Debug)]
pub(crate) struct OnUncertainUsing<St, G, RW = RetryAlways>(pub(crate) St, pub(crate) G, pub(crate) RW);

impl<Out: Clone, U, St: Clone, G: Clone, RW: Clone> MakeUndo<Out, U> for OnUncertainUsing<St, G, RW>
where
    U: From<RollbackFn<G, (St, Maybe<Out>), RW>>,
{
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        let undo = RollbackFn::new(self.1.clone(), (self.0.clone(), output.cloned()));
        Some(U::from(undo.with_retry_if(self.2.clone())))
    }
}

impl<G> OnCompleted<G> {
    pub(crate) fn retry_if<RW>(self, condition: RW) -> OnCompleted<G, RW> {
        OnCompleted(self.0.map(|(rollback, RetryAlways)| (rollback, condition)))
    }
}

impl<St, G> OnCompletedUsing<St, G> {
    pub(crate) fn retry_if<RW>(self, condition: RW) -> OnCompletedUsing<St, G, RW> {
        OnCompletedUsing(self.0, self.1.map(|(rollback, RetryAlways)| (rollback, condition)))
    }
}

impl<G> OnUncertain<G> {
    pub(crate) fn retry_if<RW>(self, condition: RW) -> OnUncertain<G, RW> {
        OnUncertain(self.0, condition)
    }
}

/// An undo record (data) made from the step's output. Made by
/// [`Member::undo`](crate::group::Member::undo) and [`Execute::undo`](crate::step::Execute::undo).
#[derive(Debug)]
pub struct UndoWith<Mk>(pub(crate) Option<Mk>);

impl<Out, U, Mk: FnOnce(&Out) -> U> MakeUndo<Out, U> for UndoWith<Mk> {
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        let output = output.completed()?;
        Some(self.0.take()?(output))
    }
}

/// An undo record (data) made from the step's output and its idempotency
/// key. Made by [`Member::undo_keyed`](crate::group::Member::undo_keyed) and
/// [`Execute::undo_keyed`](crate::step::Execute::undo_keyed).
#[derive(Debug)]
pub struct UndoKeyed<Mk>(pub(crate) Option<Mk>);

impl<Out, U, Mk: FnOnce(&Out, IdempotencyKey) -> U> MakeUndo<Out, U> for UndoKeyed<Mk> {
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, key: IdempotencyKey) -> Option<U> {
        let output = output.completed()?;
        Some(self.0.take()?(output, key))
    }
}

/// An undo record (data) that also covers an uncertain outcome. Made by
/// [`Member::undo_uncertain`](crate::group::Member::undo_uncertain) and
/// [`Execute::undo_uncertain`](crate::step::Execute::undo_uncertain).
#[derive(Debug)]
pub struct UndoMaybe<Mk>(pub(crate) Mk);

impl<Out, U, Mk: FnMut(Maybe<&Out>) -> U> MakeUndo<Out, U> for UndoMaybe<Mk> {
    fn has_undo(&self) -> bool {
        true
    }

    fn make(&mut self, output: Maybe<&Out>, _: IdempotencyKey) -> Option<U> {
        Some((self.0)(output))
    }
}
