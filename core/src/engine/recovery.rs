//! Recovery: after a restart, roll back every transaction the journal
//! shows unfinished, with the same engine, policies and hooks.

use crate::engine::replay::{NOT_RETRIED, Problem, Read, apply};
use crate::engine::report::{OwedStep, RecoveredTransaction, Recovery, RecoveryError, RecoveryOutcome};
use core::fmt::Write as _;
use core::time::Duration;

use crate::engine::rollback::{Fork, Services, ViaRollback};
use crate::ledger::book::Ledger;
use crate::util::panic::guarded_call;
use crate::util::text::Truncating;
use crate::{
    durable::id::TransactionId,
    engine::manager::TransactionManager,
    ledger::record::TransactionInfo,
    observe::hooks::Hooks,
    timing::clock::Clock,
    util::{storage::Storage, text::Name},
};
use crate::{
    durable::{
        codec::UndoCodec,
        entry::{Entry, EntryKind},
        journal::{Journal, JournalFailure},
    },
    engine::{binding::Journaled, schedule::OwedRetry},
};

impl<C: Clock, H: Hooks, A, J: Journal, Co> TransactionManager<C, H, A, Journaled<J, Co>> {
    /// When recovery tries the owed rollbacks of a transaction again once
    /// one failed for good: at every recovery (the default), backing off
    /// over recovery rounds, or never by itself (stuck for an operator).
    /// See [`OwedRetry`].
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// # use transaction_manager::*;
    /// # use transaction_manager::journal::{MemoryJournal, OwedRetry, Postcard};
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock)
    ///     .with_journal(MemoryJournal::new(), Postcard::<1>)
    ///     .with_owed_retry(OwedRetry::Backoff { cap: 60 });
    /// # let _ = manager;
    /// # }
    /// ```
    #[must_use]
    pub fn with_owed_retry(mut self, schedule: OwedRetry) -> Self {
        self.journal.owed_retry = schedule;
        self
    }

    /// The longest recovery spends rolling back one transaction (default:
    /// 10 minutes; `None`: no bound). When it passes, the rollback under
    /// way is dropped, what was not rolled back stays owed for the next
    /// recovery ([`RecoveryOutcome::Owed`]), and recovery goes on with the
    /// next transaction: one transaction whose rollbacks hang, or whose
    /// retry policy waits for years, never holds up the others.
    ///
    /// ```
    /// # #[cfg(feature = "std")] {
    /// # use transaction_manager::*;
    /// # use transaction_manager::journal::{MemoryJournal, Postcard};
    /// # use core::time::Duration;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock)
    ///     .with_journal(MemoryJournal::new(), Postcard::<1>)
    ///     .with_recovery_bound(Some(Duration::from_secs(30)));
    /// # let _ = manager;
    /// # }
    /// ```
    #[must_use]
    pub fn with_recovery_bound(mut self, bound: Option<Duration>) -> Self {
        self.journal.recovery_bound = bound;
        self
    }

    /// Rolls back every transaction the journal shows unfinished — cut by
    /// a crash, a power cut or a dropped future — and returns what it did.
    /// Call it at start-up, **before** this process runs transactions on
    /// the journal (it cannot tell an unfinished transaction from one still
    /// running), and in every process sharing the journal only when none
    /// of them is running transactions — unless the journal's
    /// [`next_unfinished`](Journal::next_unfinished) hands out only
    /// transactions nobody is running: the Postgres journal claims only
    /// those whose owner's lease expired, so there `recover` may run
    /// continuously in every process beside their transactions.
    ///
    /// Recovery rolls back; it never replays a body. Each owed undo record
    /// (a durable `Done`, or an uncertain step's intent) is decoded with the
    /// manager's codec and rolled back with `ctx`, latest first, under the
    /// rollback policy and timeout it was written with, calling
    /// [`Hooks::on_transaction_recovered`], the rollback hooks and
    /// `on_transaction_complete`. `S` is the storage of one recovered
    /// transaction's records (`Fixed<N>` with `N` at least the transaction
    /// capacity used when running, or `Unbounded`).
    ///
    /// A transaction that cannot be rolled back — an undo record the codec
    /// cannot decode (corrupt, an unknown variant, a newer schema), an entry
    /// of an unknown kind, more owed rollbacks than `S` holds — is never
    /// dropped: it is marked *stuck* in the journal, reported to
    /// [`Hooks::on_transaction_stuck`], listed by
    /// [`stuck`](TransactionManager::stuck), tried again by the next
    /// recovery (not with [`OwedRetry::Never`]: then only
    /// [`recover_transaction`](TransactionManager::recover_transaction)
    /// tries it), and ends only when rolled back or
    /// [`resolve`](TransactionManager::resolve)d by an operator. A
    /// transaction that owes a rollback that failed for good is tried again
    /// on the manager's [`OwedRetry`] schedule, and one transaction's
    /// recovery is bounded in time
    /// ([`with_recovery_bound`](TransactionManager::with_recovery_bound)).
    ///
    /// Fails only when the journal cannot be read or a `Stuck` entry cannot
    /// be written; what was rolled back before that stays rolled back.
    pub async fn recover<U, S, Ctx>(&self, ctx: &mut Ctx) -> Result<Recovery, RecoveryError>
    where
        Ctx: ?Sized,
        U: crate::ledger::rollback::Rollback<Ctx> + Sync,
        Co: UndoCodec<U> + Sync,
        S: Storage,
    {
        self.recover_each::<U, S, Ctx>(ctx, |_| {}).await
    }

    /// [`recover`](TransactionManager::recover), calling `visit` with each
    /// transaction it touched and how it left it (rolled back, still owed,
    /// stuck, or running and left alone), as it goes: no allocator needed.
    ///
    /// ```
    /// # #[cfg(all(feature = "std", feature = "postcard"))] {
    /// # use transaction_manager::*;
    /// # use transaction_manager::{journal::{MemoryJournal, Postcard, RecoveredTransaction}, storage::Fixed};
    /// # #[derive(serde::Serialize, serde::Deserialize)] enum Undo { Off }
    /// # impl Rollback<()> for Undo { type Error = core::convert::Infallible;
    /// #     async fn rollback(&mut self, _: &mut ()) -> Result<(), Self::Error> { Ok(()) } }
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_journal(MemoryJournal::new(), Postcard::<1>);
    /// let report = clock.block_on(manager.recover_each::<Undo, Fixed<4>, _>(&mut (), |tx: &RecoveredTransaction<'_>| {
    ///     println!("{tx}");   // tx-7 `provision`: partially rolled back, still owed (1 rollback(s) owed)
    /// }));
    /// assert_eq!(report.unwrap().found(), 0);
    /// # }
    /// ```
    pub async fn recover_each<U, S, Ctx>(
        &self,
        ctx: &mut Ctx,
        mut visit: impl FnMut(&RecoveredTransaction<'_>),
    ) -> Result<Recovery, RecoveryError>
    where
        Ctx: ?Sized,
        U: crate::ledger::rollback::Rollback<Ctx> + Sync,
        Co: UndoCodec<U> + Sync,
        S: Storage,
    {
        let mut report = Recovery::default();
        let mut after = None;
        let journal = self.journal.journal();
        while let Some(id) = journal.next_unfinished(after).await.map_err(|e| JournalFailure::reading(&e))? {
            after = Some(id);
            self.recover_one::<U, S, Ctx, _>(id, false, ctx, &mut report, &mut visit).await?;
        }
        if report.found > 0 {
            tm_info!("recovery: {}", report);
        }
        Ok(report)
    }

    /// Rolls back the journaled transactions of this manager that were
    /// dropped before they finished (a `select!` that picked another
    /// branch, an aborted task), from their journal records — while other
    /// transactions run, as [`recover`](TransactionManager::recover) may too.
    /// Call it now and then (after a request was cancelled, or on a timer).
    ///
    /// The manager keeps the ids of up to 16 dropped transactions between
    /// calls; one dropped when all 16 wait is logged and left to the next
    /// `recover`. Needs 64-bit atomics (every server target;
    /// on a 32-bit microcontroller nothing is kept and the next boot's
    /// `recover` rolls them back). A transaction whose rollbacks the
    /// abandon policy already ran in memory (a spawner) is rolled back
    /// again from the journal: rollbacks must be idempotent.
    pub async fn recover_dropped<U, S, Ctx>(&self, ctx: &mut Ctx) -> Result<Recovery, RecoveryError>
    where
        Ctx: ?Sized,
        U: crate::ledger::rollback::Rollback<Ctx> + Sync,
        Co: UndoCodec<U> + Sync,
        S: Storage,
    {
        let mut report = Recovery::default();
        while let Some(id) = self.journal.dropped.take() {
            self.recover_one::<U, S, Ctx, _>(id, false, ctx, &mut report, &mut |_: &RecoveredTransaction<'_>| {})
                .await?;
        }
        Ok(report)
    }

    /// Recovers one transaction now, whatever the
    /// [`OwedRetry`] schedule says: what an operator runs to try a stuck or
    /// owed transaction again (after fixing what made its rollback fail).
    /// Returns how it left it, or `None` when the journal holds it
    /// finished (or holds nothing of it). Running in this process, it is
    /// left alone ([`RecoveryOutcome::Running`]).
    ///
    /// ```
    /// # #[cfg(all(feature = "std", feature = "postcard"))] {
    /// # use transaction_manager::*;
    /// # use transaction_manager::{journal::{MemoryJournal, Postcard}, storage::Fixed};
    /// # #[derive(serde::Serialize, serde::Deserialize)] enum Undo { Off }
    /// # impl Rollback<()> for Undo { type Error = core::convert::Infallible;
    /// #     async fn rollback(&mut self, _: &mut ()) -> Result<(), Self::Error> { Ok(()) } }
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_journal(MemoryJournal::new(), Postcard::<1>);
    /// let outcome = clock.block_on(manager.recover_transaction::<Undo, Fixed<4>, _>(TransactionId::new(7), &mut ()));
    /// assert_eq!(outcome, Ok(None));   // nothing of it in the journal
    /// # }
    /// ```
    pub async fn recover_transaction<U, S, Ctx>(
        &self,
        id: TransactionId,
        ctx: &mut Ctx,
    ) -> Result<Option<RecoveryOutcome>, RecoveryError>
    where
        Ctx: ?Sized,
        U: crate::ledger::rollback::Rollback<Ctx> + Sync,
        Co: UndoCodec<U> + Sync,
        S: Storage,
    {
        let mut outcome = None;
        let mut report = Recovery::default();
        self.recover_one::<U, S, Ctx, _>(id, true, ctx, &mut report, &mut |tx: &RecoveredTransaction<'_>| {
            outcome = Some(tx.outcome());
        })
        .await?;
        Ok(outcome)
    }

    /// Marks a transaction stuck, for an operator: its `Stuck` entry, with
    /// the reason, and the stuck hook. Every way a recovery finds or leaves
    /// a transaction stuck goes through here.
    async fn mark_stuck(&self, info: &TransactionInfo, reason: &str) -> Result<(), JournalFailure> {
        let entry = Entry::new(info.id, None, EntryKind::Stuck).with_text(reason);
        self.journal.journal().append(&entry).await.map_err(|e| JournalFailure::new(EntryKind::Stuck, &e))?;
        if H::ENABLED {
            let hooks = &self.hooks;
            if let Err(panic) = guarded_call(|| hooks.on_transaction_stuck(info, reason)).await {
                tm_error!("on_transaction_stuck hook panicked: {}", panic);
            }
        }
        Ok(())
    }

    /// Rolls back one unfinished transaction from its journal records, or
    /// marks it stuck; leaves it alone if it runs in this process, or (not
    /// `forced`) if the [`OwedRetry`] schedule says so.
    async fn recover_one<U, S, Ctx, V>(
        &self,
        id: TransactionId,
        forced: bool,
        ctx: &mut Ctx,
        report: &mut Recovery,
        visit: &mut V,
    ) -> Result<(), RecoveryError>
    where
        V: FnMut(&RecoveredTransaction<'_>),
        Ctx: ?Sized,
        U: crate::ledger::rollback::Rollback<Ctx> + Sync,
        Co: UndoCodec<U> + Sync,
        S: Storage,
    {
        let live = &self.journal.live;
        if live.contains(id) {
            tm_debug!("{}: running in this process, left alone by recovery", id);
            report.count(RecoveryOutcome::Running);
            visit(&RecoveredTransaction { id, operation: "(running)", outcome: RecoveryOutcome::Running, owed: 0 });
            return Ok(());
        }
        let untracked = live.untracked();
        if untracked > 0 {
            let error = RecoveryError::LiveUnknown { running: untracked };
            tm_error!("{}", error);
            return Err(error);
        }
        // Held live while recovered: a second recovery leaves it alone, and
        // `with_id` cannot start a transaction under its id.
        let _held = live.hold(id);
        let journal = self.journal.journal();
        let schedule = self.journal.owed_retry;
        let backoffs = &self.journal.backoffs;
        let read = self.read_transaction::<U, S>(id).await?;
        // An id the operator named that the journal holds nothing of is
        // not a transaction: nothing is written for it. (One the journal
        // handed out is recovered even without entries: on flash an append
        // cut halfway holds a slot that only its end frees.)
        if read.finished || (forced && !read.found) {
            backoffs.ended(id);
            return Ok(());
        }
        let Read { mut ledger, mut problem, failed_before, .. } = read;
        let info = ledger.summary.info().clone();
        // An operator's request (`tmctl retry`) makes this recovery try it
        // now, as `recover_transaction` would. Asked only of a transaction
        // whose rollback failed before: the only kind the schedule holds
        // back (a backoff wait, or stuck with `OwedRetry::Never`).
        let mut forced = forced;
        if !forced && failed_before && journal.take_retry_request(id).await.map_err(|e| JournalFailure::reading(&e))? {
            tm_info!("{} `{}`: an operator asked to retry it: tried now", info.id, info.operation);
            forced = true;
        }
        if !forced && matches!(schedule, OwedRetry::Backoff { .. }) && backoffs.defer(id) {
            let owed = ledger.owed();
            tm_info!("{} `{}`: owed, not tried by this recovery (backing off)", info.id, info.operation);
            report.count(RecoveryOutcome::Deferred);
            visit(&RecoveredTransaction {
                id,
                operation: info.operation.as_str(),
                outcome: RecoveryOutcome::Deferred,
                owed,
            });
            return Ok(());
        }
        if !forced && schedule == OwedRetry::Never && failed_before && problem.is_none() {
            problem = Some(Problem::NotRetried);
        }
        if let Some(problem) = problem {
            report.count(RecoveryOutcome::Stuck);
            let mut reason = Truncating::<120>::new();
            let _ = write!(reason, "{problem}");
            let reason = reason.finish();
            tm_error!("{} `{}`: STUCK, cannot be rolled back: {}", info.id, info.operation, reason.as_str());
            self.mark_stuck(&info, reason.as_str()).await?;
            let owed = ledger.owed();
            visit(&RecoveredTransaction {
                id,
                operation: info.operation.as_str(),
                outcome: RecoveryOutcome::Stuck,
                owed,
            });
            return Ok(());
        }
        let owed = ledger.owed();
        tm_warn!("{} `{}`: recovered unfinished; rolling back {} step(s)", info.id, info.operation, owed);
        if H::ENABLED {
            let hooks = &self.hooks;
            if let Err(panic) = guarded_call(|| hooks.on_transaction_recovered(&info, owed)).await {
                tm_error!("on_transaction_recovered hook panicked: {}", panic);
            }
        }
        // One transaction's recovery is bounded: what its rollbacks have not
        // done by then stays owed, and recovery goes on with the next.
        let bound = self.journal.recovery_bound;
        let rolling_back = ledger.roll_back::<ViaRollback, _, _, _, _>(
            &mut *ctx,
            Fork::NONE,
            Services { clock: &self.clock, hooks: &self.hooks, journal: &self.journal },
        );
        let failures =
            crate::timing::future::with_timeout(&self.clock, bound, rolling_back).await.map(|failures| failures.len());
        if failures.is_none() {
            tm_error!(
                "{} `{}`: recovery cut after {:?}; what it did not roll back stays owed",
                info.id,
                info.operation,
                bound.unwrap_or_default()
            );
            // The rollbacks not done (the one cut midway too) are owed.
            ledger.leave_to_recovery();
        }
        // Only a clean rollback ends the transaction: what is still owed
        // stays unfinished, for the next recovery. Decided by the ledger.
        let end = ledger.rollback_ended(failures, crate::timing::clock::now(&self.clock));
        let still_owed = ledger.summary.rollback_errors() + ledger.summary.rollback_skipped_steps();
        let outcome = if let Some(entry) = end {
            tm_info!("{} `{}`: recovered and rolled back", info.id, info.operation);
            if let Err(error) = journal.append(&entry).await {
                // Lazy: the next recovery repeats the idempotent rollbacks.
                tm_error!("{}: {}", id, JournalFailure::new(EntryKind::RolledBack, &error));
            }
            backoffs.ended(id);
            RecoveryOutcome::RolledBack
        } else if schedule == OwedRetry::Never {
            tm_error!(
                "{} `{}`: recovered, PARTIALLY rolled back: {} rollback(s) still owed, STUCK for an operator",
                info.id,
                info.operation,
                still_owed
            );
            self.mark_stuck(&info, NOT_RETRIED).await?;
            RecoveryOutcome::Stuck
        } else {
            tm_error!(
                "{} `{}`: recovered, PARTIALLY rolled back: {} rollback(s) still owed, tried again at a later recovery",
                info.id,
                info.operation,
                still_owed
            );
            if let OwedRetry::Backoff { cap } = schedule {
                backoffs.failed(id, cap);
            }
            RecoveryOutcome::Owed
        };
        report.count(outcome);
        crate::observe::hooks::complete(&self.hooks, &ledger.summary, false).await;
        visit(&RecoveredTransaction { id, operation: info.operation.as_str(), outcome, owed: still_owed });
        Ok(())
    }

    /// Calls `visit` with each rollback that failed for good and is still
    /// owed — its transaction, step and error — and returns how many there
    /// are. Such a transaction stays unfinished in the journal: later
    /// recoveries try its owed rollbacks again, on the manager's
    /// [`OwedRetry`] schedule, and it ends when they all succeeded or an operator
    /// [`resolve`](TransactionManager::resolve)s it. No allocator needed
    /// (the journal is read once per owed step).
    pub async fn owed(&self, mut visit: impl FnMut(&OwedStep<'_>)) -> Result<usize, JournalFailure> {
        let journal = self.journal.journal();
        let mut after = None;
        let mut count = 0;
        while let Some(id) = journal.next_unfinished(after).await.map_err(|e| JournalFailure::reading(&e))? {
            after = Some(id);
            // First read: the operation, and how many `UndoFailed` entries.
            let mut operation = Truncating::<64>::new();
            let mut failed = 0usize;
            journal
                .read(id, &mut |entry| match EntryKind::from_code(entry.kind) {
                    Some(EntryKind::Begin) => {
                        let _ = operation.write_str(core::str::from_utf8(entry.payload).unwrap_or("?"));
                    }
                    Some(EntryKind::UndoFailed) => failed += 1,
                    _ => {}
                })
                .await
                .map_err(|e| JournalFailure::reading(&e))?;
            if failed == 0 {
                continue;
            }
            let operation = operation.finish();
            let operation = if operation.is_empty() { "(unknown)" } else { operation.as_str() };
            // One more read per failed rollback: is it still owed, and what
            // are its step's name and error?
            for nth in 0..failed {
                let mut seen = 0usize;
                let mut step: Option<u32> = None;
                let mut name = Truncating::<64>::new();
                let mut error = Truncating::<120>::new();
                let mut has_error = false;
                let mut settled = false;
                journal
                    .read(id, &mut |entry| {
                        let kind = EntryKind::from_code(entry.kind);
                        match (kind, step) {
                            (Some(EntryKind::UndoFailed), None) => {
                                if seen == nth {
                                    step = entry.step;
                                    has_error = !entry.payload.is_empty();
                                    let _ = error.write_str(core::str::from_utf8(entry.payload).unwrap_or("?"));
                                }
                                seen += 1;
                            }
                            (Some(EntryKind::Undone | EntryKind::Released), Some(owed)) if entry.step == Some(owed) => {
                                settled = true;
                            }
                            _ => {}
                        }
                    })
                    .await
                    .map_err(|e| JournalFailure::reading(&e))?;
                let Some(index) = step else { continue };
                if settled {
                    continue;
                }
                // The step's name is in its `Done` (or intent).
                journal
                    .read(id, &mut |entry| {
                        if entry.step == Some(index)
                            && matches!(EntryKind::from_code(entry.kind), Some(EntryKind::Done | EntryKind::Intent))
                            && name.is_empty()
                        {
                            if let Ok(payload) = crate::durable::entry::decode_undo_payload(entry.payload) {
                                let _ = name.write_str(payload.name);
                            }
                        }
                    })
                    .await
                    .map_err(|e| JournalFailure::reading(&e))?;
                let name = name.finish();
                let error = error.finish();
                count += 1;
                visit(&OwedStep {
                    transaction: id,
                    operation,
                    step: if name.is_empty() { "(unknown)" } else { name.as_str() },
                    index,
                    error: if has_error { Some(error.as_str()) } else { None },
                });
            }
        }
        Ok(count)
    }

    /// Calls `visit` with the id and reason of each *stuck* transaction
    /// (one an earlier [`recover`](TransactionManager::recover) could not
    /// roll back), and returns how many there are.
    pub async fn stuck(&self, mut visit: impl FnMut(TransactionId, &str)) -> Result<usize, JournalFailure> {
        let journal = self.journal.journal();
        let mut after = None;
        let mut count = 0;
        while let Some(id) = journal.next_unfinished(after).await.map_err(|e| JournalFailure::reading(&e))? {
            after = Some(id);
            let mut reason: Option<Truncating<120>> = None;
            journal
                .read(id, &mut |entry| {
                    if entry.kind == EntryKind::Stuck.code() && reason.is_none() {
                        let mut text = Truncating::<120>::new();
                        let _ = text.write_str(core::str::from_utf8(entry.payload).unwrap_or("?"));
                        reason = Some(text);
                    }
                })
                .await
                .map_err(|e| JournalFailure::reading(&e))?;
            if let Some(reason) = reason {
                count += 1;
                visit(id, reason.finish().as_str());
            }
        }
        Ok(count)
    }

    /// Ends a stuck transaction by hand: an operator has dealt with what it
    /// owed (or decided nothing is owed). Recovery leaves it alone from
    /// then on. Durable when it returns.
    pub async fn resolve(&self, id: TransactionId) -> Result<(), JournalFailure> {
        let entry = Entry::new(id, None, EntryKind::Resolved);
        self.journal.journal().append(&entry).await.map_err(|e| JournalFailure::new(EntryKind::Resolved, &e))?;
        self.journal.backoffs.ended(id);
        tm_warn!("{}: resolved by hand", id);
        Ok(())
    }

    /// Reads one transaction's entries into a ledger of what it owes.
    async fn read_transaction<U, S>(&self, id: TransactionId) -> Result<Read<U, S>, JournalFailure>
    where
        Co: UndoCodec<U>,
        S: Storage,
    {
        let info = TransactionInfo { id, operation: Name::from("(unknown)") };
        let now = crate::timing::clock::now(&self.clock);
        let seed = self.jitter_seed_for(id);
        // The manager's policy: with `Stop`, recovery stops at the first
        // rollback that fails again, as the transaction would have.
        let mut ledger = Ledger::new(info, now, seed, self.on_rollback_failure, self.step_times);
        ledger.origin = self.journal.journal().origin();
        let mut read = Read { ledger, problem: None, finished: false, failed_before: false, found: false };
        let codec = self.journal.codec();
        self.journal
            .journal()
            .read(id, &mut |entry| apply(&mut read, codec, entry))
            .await
            .map_err(|e| JournalFailure::reading(&e))?;
        Ok(read)
    }
}
