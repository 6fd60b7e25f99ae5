//! What a member is made of: its attempts (`MemberFn`), and what answers
//! the engine's questions about it (`Ask`: its undo maker and retry
//! condition).

use super::*;

/// What an attempt of a member with a part ([`MemberBuilder::execute_on`])
/// ends with: its result (`None` if the group stopped it), and the part
/// and execute function, handed back for the next attempt.
pub type LentEnd<'p, P, F, Out, E> = (Option<Result<Out, E>>, &'p mut P, F);

/// One attempt of a member with a part: the part and the execute function
/// go into the attempt, and come back out when it ends — also when the
/// group stops it, which it does by raising `stopping` and polling once.
pub(super) async fn lent_attempt<'p, P, F, Out, E>(
    part: &'p mut P,
    mut execute: F,
    stopping: Option<&'p AtomicBool>,
) -> LentEnd<'p, P, F, Out, E>
where
    P: ?Sized + 'p,
    F: AsyncFnMut(&mut P) -> Result<Out, E> + 'p,
{
    let result = Stoppable { stopping, attempt: execute(&mut *part) }.await;
    (result, part, execute)
}

pin_project! {
    /// An attempt that ends with `None`, dropping the user's future, when
    /// polled while the group stops it.
    struct Stoppable<'s, Fut> {
        stopping: Option<&'s AtomicBool>,
        #[pin]
        attempt: Fut,
    }
}

impl<Fut: Future> Future for Stoppable<'_, Fut> {
    type Output = Option<Fut::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.stopping.is_some_and(|stopping| stopping.load(Ordering::Relaxed)) {
            return Poll::Ready(None);
        }
        this.attempt.poll(cx).map(Some)
    }
}

/// A member's execute function with the part it borrows. Made by
/// [`MemberBuilder::execute_on`].
pub struct Lent<'p, P: ?Sized, F, A> {
    /// Here between attempts; in the attempt while it runs.
    pub(super) part: Option<&'p mut P>,
    pub(super) execute: Option<F>,
    /// The transaction's stop flag, lent by the group before it starts.
    pub(super) stopping: Option<&'p AtomicBool>,
    pub(super) attempt: fn(&'p mut P, F, Option<&'p AtomicBool>) -> A,
}

impl<P: ?Sized, F, A> fmt::Debug for Lent<'_, P, F, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lent").field("lent", &self.part.is_some()).finish_non_exhaustive()
    }
}

impl<'p, P: ?Sized, F, A, Out, E> MemberFn for Lent<'p, P, F, A>
where
    A: Future<Output = LentEnd<'p, P, F, Out, E>>,
    E: fmt::Display,
{
    type Output = Out;
    type Raw = E;
    type Error = E;
    type Attempt = A;

    fn start(&mut self, _: IdempotencyKey) -> A {
        match (self.part.take(), self.execute.take()) {
            (Some(part), Some(execute)) => (self.attempt)(part, execute, self.stopping),
            // Only after an attempt that panicked: it took the part along.
            _ => panic!("the member's part was lost with an attempt that panicked"),
        }
    }

    fn finish(&mut self, (result, part, execute): LentEnd<'p, P, F, Out, E>) -> Option<Result<Out, E>> {
        self.part = Some(part);
        self.execute = Some(execute);
        result
    }

    fn stopping(&mut self, on: bool) -> bool {
        match self.stopping {
            Some(stopping) => {
                stopping.store(on, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    fn convert(&mut self, raw: E) -> E {
        raw
    }
}

/// Receives the transaction's stop flag before the group starts; see
/// [`Lend`].
pub trait LendFlag<'s> {
    /// Keeps `stopping`.
    fn lend(&mut self, stopping: &'s AtomicBool);
}

impl<'s, F> LendFlag<'s> for Plain<F> {
    fn lend(&mut self, _: &'s AtomicBool) {}
}

impl<'s, F> LendFlag<'s> for Keyed<F> {
    fn lend(&mut self, _: &'s AtomicBool) {}
}

impl<'s, F: LendFlag<'s>, G> LendFlag<'s> for MapErr<F, G> {
    fn lend(&mut self, stopping: &'s AtomicBool) {
        self.execute.lend(stopping);
    }
}

impl<'s: 'p, 'p, P: ?Sized, F, A> LendFlag<'s> for Lent<'p, P, F, A> {
    fn lend(&mut self, stopping: &'s AtomicBool) {
        self.stopping = Some(stopping);
    }
}

/// How a member makes its attempts: its execute function, and how its
/// errors are converted. Implemented by [`Plain`], [`Keyed`], [`Lent`]
/// and [`MapErr`] (all but `Lent` are a step's too: a member's execute
/// function, keyed or not, and its error mapping are a step's); you do not
/// implement it yourself.
pub trait MemberFn {
    /// What a successful attempt returns.
    type Output;
    /// What an attempt's future fails with, before conversion.
    type Raw;
    /// The member's error type, after conversion.
    type Error: fmt::Display;
    /// One attempt.
    type Attempt: Future;

    /// Starts an attempt of the member whose idempotency key is `key`.
    fn start(&mut self, key: IdempotencyKey) -> Self::Attempt;

    /// Takes what an attempt ended with: its result, or `None` if the
    /// group stopped it (see [`stopping`](MemberFn::stopping)).
    fn finish(&mut self, ended: <Self::Attempt as Future>::Output) -> Option<Result<Self::Output, Self::Raw>>;

    /// Raises (`on`) or lowers the flag that makes the attempt in flight
    /// end at its next poll instead of being dropped; returns whether this
    /// member has one.
    fn stopping(&mut self, on: bool) -> bool {
        let _ = on;
        false
    }

    /// Converts a failed attempt's error.
    fn convert(&mut self, raw: Self::Raw) -> Self::Error;
}

impl<F, Fut, Out, E> MemberFn for Plain<F>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Out, E>>,
    E: fmt::Display,
{
    type Output = Out;
    type Raw = E;
    type Error = E;
    type Attempt = Fut;

    fn start(&mut self, _: IdempotencyKey) -> Fut {
        (self.0)()
    }

    fn finish(&mut self, ended: Result<Out, E>) -> Option<Result<Out, E>> {
        Some(ended)
    }

    fn convert(&mut self, raw: E) -> E {
        raw
    }
}

impl<F, Fut, Out, E> MemberFn for Keyed<F>
where
    F: FnMut(IdempotencyKey) -> Fut,
    Fut: Future<Output = Result<Out, E>>,
    E: fmt::Display,
{
    type Output = Out;
    type Raw = E;
    type Error = E;
    type Attempt = Fut;

    fn start(&mut self, key: IdempotencyKey) -> Fut {
        (self.0)(key)
    }

    fn finish(&mut self, ended: Result<Out, E>) -> Option<Result<Out, E>> {
        Some(ended)
    }

    fn convert(&mut self, raw: E) -> E {
        raw
    }
}

impl<F, G, E2> MemberFn for MapErr<F, G>
where
    F: MemberFn,
    G: FnMut(F::Error) -> E2,
    E2: fmt::Display,
{
    type Output = F::Output;
    type Raw = F::Raw;
    type Error = E2;
    type Attempt = F::Attempt;

    fn start(&mut self, key: IdempotencyKey) -> F::Attempt {
        self.execute.start(key)
    }

    fn finish(&mut self, ended: <F::Attempt as Future>::Output) -> Option<Result<F::Output, F::Raw>> {
        self.execute.finish(ended)
    }

    fn stopping(&mut self, on: bool) -> bool {
        self.execute.stopping(on)
    }

    fn convert(&mut self, raw: F::Raw) -> E2 {
        let error = self.execute.convert(raw);
        (self.map)(error)
    }
}

/// What the engine asks a member while its step changes: the questions a
/// plain step's parts answer (`StepParts`).
pub trait Ask<U, E> {
    /// The undo record owed, by the member whose key is `key`: for its
    /// output if `completed`, else for an uncertain outcome.
    fn make_undo(&mut self, completed: bool, key: IdempotencyKey) -> Option<U>;
    /// Asks the member's retry condition about an attempt that failed
    /// with `error` (`None` without a condition).
    fn retries(&mut self, error: &E) -> Option<crate::timing::condition::Verdict>;
}

/// A member's undo maker, retry condition and output: what answers
/// [`Ask`].
#[derive(Debug)]
pub struct Asks<R, W, O> {
    pub(super) undo: R,
    pub(super) retry_if: W,
    pub(super) output: Option<O>,
}

impl<U, E, O, R: MakeUndo<O, U>, W: RetryCondition<E>> Ask<U, E> for Asks<R, W, O> {
    fn make_undo(&mut self, completed: bool, key: IdempotencyKey) -> Option<U> {
        match (completed, self.output.as_ref()) {
            (true, Some(output)) => self.undo.make(Maybe::Completed(output), key),
            (true, None) => None,
            (false, _) => self.undo.make(Maybe::Uncertain, key),
        }
    }

    fn retries(&mut self, error: &E) -> Option<crate::timing::condition::Verdict> {
        if W::ALWAYS {
            return None;
        }
        let condition = &mut self.retry_if;
        Some(crate::timing::condition::ask(|| condition.retries(error)))
    }
}
