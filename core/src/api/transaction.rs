//! The transaction handle's methods for the body: start a step, reach the
//! context, read the id, the next step's key and the records so far.

use crate::api::step::Step;
use crate::engine::manager::TransactionManager;
use crate::engine::transaction::StepConfig;
use crate::engine::transaction::Transaction;
use crate::ledger::record::{StepRecord, TransactionInfo};
use crate::util::storage::Storage;

impl<'t, C, H, A, J, Ctx: ?Sized, U, S: Storage> Transaction<'t, TransactionManager<C, H, A, J>, Ctx, U, S> {
    /// Starts building a step named `name`; set its options, then run it
    /// with [`Step::run`] (no rollback) or [`Step::execute`] followed by a
    /// rollback.
    pub fn step(
        &mut self,
        name: impl Into<crate::util::text::Name>,
    ) -> Step<'_, 't, TransactionManager<C, H, A, J>, Ctx, U, S> {
        self.config = StepConfig {
            timeout: self.manager.timeout,
            retry: self.manager.retry,
            rollback_timeout: None,
            rollback_retry: None,
        };
        Step { name: name.into(), tx: self }
    }

    /// The context the transaction was run with (`()` for
    /// [`run`](crate::TransactionBuilder::run)).
    pub fn context(&mut self) -> &mut Ctx {
        self.ctx
    }

    /// The transaction's id and operation.
    pub fn info(&self) -> &TransactionInfo {
        self.ledger.summary.info()
    }

    /// The transaction's id.
    pub fn id(&self) -> crate::durable::id::TransactionId {
        self.ledger.summary.info().id
    }

    /// The idempotency key of the next step (the one the next
    /// [`step`](Transaction::step) call starts): this transaction's id and
    /// that step's index. Pass it to the API the step calls, and keep it in
    /// its undo record, so that a step or rollback repeated after a crash
    /// is recognised by the API. Where the call is made, a step gets it
    /// without this call: [`Step::key`], [`Step::execute_keyed`],
    /// [`Execute::undo_keyed`](crate::step::Execute::undo_keyed),
    /// [`Execute::rollback_keyed`](crate::step::Execute::rollback_keyed).
    ///
    /// ```
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
    /// let done = clock.block_on(manager.transaction("t").with_id(TransactionId::new(9)).fixed::<NoRollback, 2>().run(async |tx| {
    ///     tx.step("a").run(|| async { Ok::<_, &str>(()) }).await?;
    ///     let key = tx.next_step_key();
    ///     tx.step("b").run(|| async move { Ok::<_, &str>(key.to_string()) }).await
    /// }));
    /// assert_eq!(done.unwrap().into_value(), "tx-9.1-000000000000002a");
    /// ```
    pub fn next_step_key(&self) -> crate::durable::id::IdempotencyKey {
        self.ledger.step_key(self.ledger.summary.steps().len())
    }

    /// The records of the steps run so far.
    pub fn steps(&self) -> &[StepRecord] {
        self.ledger.summary.steps()
    }

    /// The transaction's clock, for steps that need to wait or read the time.
    ///
    /// The returned `&C` outlives this borrow of the transaction, so a step's
    /// execute closure can use it while `tx.step(..)` holds the transaction:
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let done = clock.block_on(manager.transaction("settle").fixed::<NoRollback, 1>().run(async |tx| {
    ///     let clock = tx.clock();
    ///     tx.step("wait_for_settle")
    ///         .run(|| async move {
    ///             clock.sleep(Duration::from_millis(20)).await;
    ///             Ok::<_, &str>(clock.now())
    ///         })
    ///         .await
    /// }));
    /// assert_eq!(done.unwrap().into_value(), Duration::from_millis(20));
    /// ```
    pub fn clock(&self) -> &'t C {
        let manager: &'t TransactionManager<C, H, A, J> = self.manager;
        &manager.clock
    }
}
