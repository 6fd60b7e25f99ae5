//! A step's execute given as closures: [`StepFn`] and its forms (plain,
//! with the context, keyed, with its error mapped), and the parts the
//! attempt loop runs.

use core::fmt;
use core::future::Future;

use crate::api::undo::MakeUndo;
use crate::durable::id::IdempotencyKey;
use crate::engine::attempt::{Maybe, StepParts};
use crate::timing::condition::RetryCondition;

/// One attempt of a step's execute function, however it was given.
///
/// Implemented by [`Plain`] (`FnMut() -> Future`) and [`WithContext`]
/// (`AsyncFnMut(&mut Ctx)`); you do not implement it yourself.
pub trait StepFn<Ctx: ?Sized> {
    /// What a successful attempt returns.
    type Output;
    /// What a failed attempt returns.
    type Error: fmt::Display;

    /// Starts one attempt of the step whose idempotency key is `key`.
    fn call(
        &mut self,
        ctx: &mut Ctx,
        key: crate::durable::id::IdempotencyKey,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>>;
}

/// An execute function that takes no context: `FnMut() -> Future`.
#[derive(Debug)]
pub struct Plain<F>(pub(crate) F);

impl<Ctx: ?Sized, F, Fut, Out, E> StepFn<Ctx> for Plain<F>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Out, E>>,
    E: fmt::Display,
{
    type Output = Out;
    type Error = E;

    fn call(&mut self, _: &mut Ctx, _: crate::durable::id::IdempotencyKey) -> impl Future<Output = Result<Out, E>> {
        (self.0)()
    }
}

/// An execute function that borrows the context: `AsyncFnMut(&mut Ctx)`.
#[derive(Debug)]
pub struct WithContext<F>(pub(crate) F);

impl<Ctx: ?Sized, F, Out, E> StepFn<Ctx> for WithContext<F>
where
    F: AsyncFnMut(&mut Ctx) -> Result<Out, E>,
    E: fmt::Display,
{
    type Output = Out;
    type Error = E;

    fn call(&mut self, ctx: &mut Ctx, _: crate::durable::id::IdempotencyKey) -> impl Future<Output = Result<Out, E>> {
        (self.0)(ctx)
    }
}

/// An execute function that receives the step's idempotency key:
/// `FnMut(IdempotencyKey) -> Future`. Made by
/// [`Step::execute_keyed`](crate::step::Step::execute_keyed) and, for a
/// group member, [`MemberBuilder::execute_keyed`](crate::group::MemberBuilder::execute_keyed).
#[derive(Debug)]
pub struct Keyed<F>(pub(crate) F);

impl<Ctx: ?Sized, F, Fut, Out, E> StepFn<Ctx> for Keyed<F>
where
    F: FnMut(crate::durable::id::IdempotencyKey) -> Fut,
    Fut: Future<Output = Result<Out, E>>,
    E: fmt::Display,
{
    type Output = Out;
    type Error = E;

    fn call(&mut self, _: &mut Ctx, key: crate::durable::id::IdempotencyKey) -> impl Future<Output = Result<Out, E>> {
        (self.0)(key)
    }
}

/// An execute function whose errors are converted, attempt by attempt. Made
/// by [`Execute::map_err`](crate::step::Execute::map_err) and [`Execute::err_into`](crate::step::Execute::err_into).
pub struct MapErr<F, G> {
    pub(crate) execute: F,
    pub(crate) map: G,
}

impl<F: fmt::Debug, G> fmt::Debug for MapErr<F, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapErr").field("execute", &self.execute).finish_non_exhaustive()
    }
}

impl<Ctx: ?Sized, F, G, E2> StepFn<Ctx> for MapErr<F, G>
where
    F: StepFn<Ctx>,
    G: FnMut(F::Error) -> E2,
    E2: fmt::Display,
{
    type Output = F::Output;
    type Error = E2;

    fn call(
        &mut self,
        ctx: &mut Ctx,
        key: crate::durable::id::IdempotencyKey,
    ) -> impl Future<Output = Result<F::Output, E2>> {
        let MapErr { execute, map } = self;
        let attempt = execute.call(ctx, key);
        async move { attempt.await.map_err(map) }
    }
}

/// A step given as closures: an execute function, an undo maker, and a
/// retry condition.
pub(crate) struct Parts<F, M, W> {
    pub(crate) execute: F,
    pub(crate) undo: M,
    pub(crate) retry_if: W,
}

impl<Ctx: ?Sized, U, F, M, W> StepParts<Ctx, U> for Parts<F, M, W>
where
    F: StepFn<Ctx>,
    M: MakeUndo<F::Output, U>,
    W: RetryCondition<F::Error>,
{
    type Output = F::Output;
    type Error = F::Error;

    const CONDITIONAL: bool = !W::ALWAYS;

    fn retries(&mut self, error: &F::Error) -> bool {
        self.retry_if.retries(error)
    }

    fn has_undo(&self) -> bool {
        self.undo.has_undo()
    }

    fn call(&mut self, ctx: &mut Ctx, key: IdempotencyKey) -> impl Future<Output = Result<F::Output, F::Error>> {
        self.execute.call(ctx, key)
    }

    fn make_undo(&mut self, output: Maybe<&F::Output>, key: IdempotencyKey) -> Option<U> {
        self.undo.make(output, key)
    }
}
