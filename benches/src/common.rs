//! The work both bench binaries time: the same futures for the library and
//! for the hand-written code, and the transactions built from them.

// `Work` spells out `Send + 'static` on its futures, so the impls keep the
// `-> impl Future` form.
#![allow(clippy::manual_async_fn)]

use std::fmt;
use std::future::Future;
use std::hint::black_box;

use transaction_manager_core::Rollback;

/// The error every step and rollback uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Boom;

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

/// What a step, a failing step, a flaky step and a rollback do.
pub trait Work: Copy + Send + Sync + 'static {
    fn step(self, v: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static;
    fn fail(self, v: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static;
    /// Fails on attempts 1 and 2, succeeds on the third.
    fn flaky(self, attempt: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static;
    fn undo(self, v: u32) -> impl Future<Output = Result<(), Boom>> + Send + 'static;
}

/// Futures that are ready at once.
#[derive(Clone, Copy)]
pub struct Noop;

impl Work for Noop {
    fn step(self, v: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static {
        async move { Ok(black_box(v)) }
    }
    fn fail(self, v: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static {
        async move {
            black_box(v);
            Err(black_box(Boom))
        }
    }
    fn flaky(self, attempt: u32) -> impl Future<Output = Result<u32, Boom>> + Send + 'static {
        async move { if black_box(attempt) < 3 { Err(Boom) } else { Ok(attempt) } }
    }
    fn undo(self, v: u32) -> impl Future<Output = Result<(), Boom>> + Send + 'static {
        async move {
            black_box(v);
            Ok(())
        }
    }
}

/// Rollbacks as data: the no-alloc path's undo record.
#[derive(Clone, Copy)]
pub enum Undo<W> {
    Release(W, u32),
}

impl<W: Work> Rollback<()> for Undo<W> {
    type Error = Boom;

    async fn rollback(&mut self, _: &mut ()) -> Result<(), Boom> {
        let Undo::Release(w, v) = *self;
        w.undo(v).await
    }
}

/// The hand-written transaction's error: the cause, which step, and how
/// many rollbacks failed.
#[derive(Debug)]
#[allow(dead_code)] // Read through `Debug` and the checks only.
pub struct HandError {
    pub cause: Boom,
    pub step: usize,
    pub rollback_failures: u32,
}

// ---------------------------------------------------------------------------
// The transactions, library and hand-written, generated for any number of
// steps. `ok` steps succeed, a `fail` step fails; each step gets the
// previous step's value plus one.

/// No-alloc path: `fixed::<Undo, N>()`, enum undo records.
#[allow(unused_macros)]
macro_rules! lib_fixed {
    ($m:expr, $w:expr, $cap:literal; $($name:literal => $kind:ident),+) => {{
        let w = $w;
        $m.transaction("op").fixed::<Undo<_>, $cap>().run(async move |tx| {
            let mut acc = 0u32;
            $(
                let prev = acc;
                acc = tx
                    .step($name)
                    .execute(move || w.$kind(prev + 1))
                    .undo(|&v| Undo::Release(w, v))
                    .await?;
            )+
            Ok::<_, ::transaction_manager_core::StepError<Boom>>(acc)
        })
    }};
}

/// Default (alloc) path: `manager.run`, closure rollbacks (`BoxedRollback`).
#[allow(unused_macros)]
macro_rules! lib_alloc {
    ($m:expr, $w:expr; $($name:literal => $kind:ident),+) => {{
        let w = $w;
        $m.run("op", async move |tx| {
            let mut acc = 0u32;
            $(
                let prev = acc;
                acc = tx
                    .step($name)
                    .execute(move || w.$kind(prev + 1))
                    .rollback(move |v| w.undo(v))
                    .await?;
            )+
            Ok::<_, StepError<Boom>>(acc)
        })
    }};
}

/// By hand: the same futures, the completed steps' values kept in an
/// array, and on failure each completed step rolled back, latest first,
/// counting failed rollbacks.
#[allow(unused_macros)]
macro_rules! hand {
    ($w:expr, $cap:literal; $($name:literal => $kind:ident),+) => {{
        let w = $w;
        // The last step's bookkeeping is never read: fine, it is the same
        // code for every step.
        #[allow(unused_assignments)]
        let transaction = async move {
            let mut done = [0u32; $cap];
            let mut len = 0usize;
            let mut acc = 0u32;
            $(
                let _: &str = $name;
                match w.$kind(acc + 1).await {
                    Ok(v) => {
                        done[len] = v;
                        len += 1;
                        acc = v;
                    }
                    Err(cause) => {
                        let mut rollback_failures = 0;
                        for &v in done[..len].iter().rev() {
                            if w.undo(v).await.is_err() {
                                rollback_failures += 1;
                            }
                        }
                        return Err(HandError { cause, step: len, rollback_failures });
                    }
                }
            )+
            Ok::<u32, HandError>(acc)
        };
        transaction
    }};
}
