//! The group engine: reserve, start, poll, bookkeeping, until every member is done.

use super::*;
use crate::observe::hooks::hook_call;
use crate::trace::within_some;

/// The group engine runs on a handle without the context
/// ([`Transaction::split`]): the members may hold parts of the context
/// while it runs, and one copy of the engine serves groups with and
/// without them.
impl<'t, C, H, A, J, U, S: Storage> Transaction<'t, TransactionManager<C, H, A, J>, NoContext, U, S>
where
    C: Clock,
    H: Hooks,
    J: crate::engine::binding::JournalFor<U>,
{
    /// The group engine: reserve, start, poll, bookkeeping, until every
    /// member is done. Generic over the members only where it must be
    /// (pinning and outputs); the bookkeeping helpers below take a
    /// `dyn Slot` and are compiled once per transaction type.
    ///
    /// Takes a function that makes the members: members built inside this
    /// future are kept once (an `async fn` keeps its arguments for good,
    /// next to the pinned copy it polls).
    ///
    /// Not an `async fn`: one moves its arguments into locals, and the
    /// handle (136 bytes on 32-bit targets) would be kept twice for good.
    /// An `async move` block uses what it captures where it is.
    #[allow(clippy::manual_async_fn)]
    pub(super) fn run_group<Ms, E>(
        mut self,
        on_failure: OnMemberFailure,
        concurrent_rollbacks: bool,
        make: impl FnOnce() -> Ms,
    ) -> impl Future<Output = Result<Ms::Output, GroupError<E, S>>>
    where
        Ms: Members<U, E>,
        E: fmt::Display,
    {
        async move {
            if self.past_deadline() {
                // No step starts at or after the deadline: wait for the
                // interrupt, which is due and stops the body.
                core::future::pending::<()>().await;
            }
            self.settle_dropped_step();
            // No `members` local: a value moved out of keeps its place in the
            // future until its scope ends (576 bytes for the firmware's two).
            let mut pinned = pin!(make().into_pinned());
            let n = Ms::count_pinned(pinned.as_mut());
            // Reserve: every member fits, or none runs.
            let base = self.ledger.summary.steps().len();
            let capacity = S::CAPACITY.unwrap_or(usize::MAX);
            let step_room = capacity.saturating_sub(base);
            let mut undo_room = capacity.saturating_sub(self.ledger.owed());
            for i in 0..n {
                let slot = Ms::slot(pinned.as_mut(), i);
                let refused = if slot.settings().name.as_str().is_empty() {
                    Some(StepErrorKind::EmptyName)
                } else if i >= step_room || (slot.has_undo() && undo_room == 0) {
                    Some(StepErrorKind::CapacityExceeded { capacity })
                } else {
                    None
                };
                if let Some(kind) = refused {
                    let info = self.ledger.summary.info();
                    tm_error!(
                        "{} `{}`: group of {} step(s) refused at member `{}`: {}",
                        info.id,
                        info.operation,
                        n,
                        slot.settings().name,
                        kind.as_str()
                    );
                    let first = StepError { step: slot.settings().name.clone(), index: base + i, kind };
                    return Err(GroupError { first, others: S::List::default() });
                }
                if slot.has_undo() {
                    undo_room -= 1;
                }
            }
            for i in 0..n {
                self.enroll(Ms::slot(pinned.as_mut(), i));
            }
            #[cfg(feature = "alloc")]
            if concurrent_rollbacks {
                // One number per group: its first step's index, from 1.
                let group = u32::try_from(base + 1).unwrap_or(u32::MAX);
                self.ledger.roll_back_together(base, group);
            }
            #[cfg(not(feature = "alloc"))]
            let _ = concurrent_rollbacks;
            let info = self.ledger.summary.info();
            tm_info!("{} `{}`: group of {} step(s) started", info.id, info.operation, n);

            let manager = self.manager;
            let hooks = &manager.hooks;
            let mut timer = pin!(None::<C::Sleep>);
            let mut timer_at: Option<Duration> = None;
            let mut first: Option<usize> = None;
            loop {
                // Start the members that are due: hook, then attempt.
                for i in 0..n {
                    if !Ms::slot(pinned.as_mut(), i).run_mut().is_due() || self.past_deadline() {
                        continue;
                    }
                    let (index, attempt) = self.next_attempt(Ms::slot(pinned.as_mut(), i));
                    let hook = if H::ENABLED {
                        let span = Ms::slot(pinned.as_mut(), i).run_mut().span.as_ref();
                        let event = self.step_event(index, attempt);
                        within_some(span, hook_call(hooks, || hooks.on_step_execute(&event))).await
                    } else {
                        Ok(())
                    };
                    // A broken hook fails the attempt before it starts. (One
                    // `failed` for every way it can fail: each value kept
                    // across an await takes room in the group's future.)
                    let mut failed = hook.err().map(|panic| (StepErrorKind::Panicked(panic), false));
                    // Some(whether its rollback is released), once it ended
                    // for good.
                    let mut ended = None;
                    if failed.is_none() {
                        let intent = match self.owe_uncertain(Ms::slot(pinned.as_mut(), i)) {
                            Ok(intent) => intent,
                            // Its undo record cannot be made: it fails for good.
                            Err(panic) => {
                                let kind = StepErrorKind::Panicked(panic);
                                ended = Some(self.member_ended(Ms::slot(pinned.as_mut(), i), kind, &mut first, i));
                                false
                            }
                        };
                        // The intent is durable before the first attempt; if
                        // it cannot be written, the member does not run.
                        if J::ENABLED && intent {
                            if let Err(failure) = self.journal_step(index, EntryKind::Intent).await {
                                // As a step's: it fails for good, its record
                                // says why (`journal_step`).
                                let mut slot = Ms::slot(pinned.as_mut(), i);
                                slot.as_mut().run_mut().step.intent_refused();
                                let kind = StepErrorKind::Journal(failure);
                                ended = Some(self.member_ended(slot, kind, &mut first, i));
                            }
                        }
                        if failed.is_none() && ended.is_none() {
                            failed = self.start_attempt(Ms::slot(pinned.as_mut(), i)).map(|kind| (kind, true));
                        }
                    }
                    if let Some((kind, ran)) = failed {
                        ended = self.member_failed::<Ms, E>(pinned.as_mut(), i, kind, ran, &mut first).await;
                    }
                    if let Some(released) = ended {
                        self.after_member_ended::<Ms, E>(pinned.as_mut(), released, on_failure).await;
                    }
                }
                if (0..n).all(|i| Ms::slot(pinned.as_mut(), i).run_mut().is_done()) {
                    break;
                }
                let event = poll_fn(|cx| {
                    poll_members::<Ms, U, E, C>(&manager.clock, pinned.as_mut(), n, &mut timer, &mut timer_at, cx)
                })
                .await;
                let mut ended = None;
                let failed = match event {
                    Event::Ended(i, Ok(())) => {
                        let (mut owed, mut failed) = (false, None);
                        match self.member_completed(Ms::slot(pinned.as_mut(), i)) {
                            Ok(owes) => owed = owes,
                            // Its undo record cannot be made: it fails for good.
                            Err(panic) => failed = Some(StepErrorKind::Panicked(panic)),
                        }
                        let (index, attempt) = {
                            let run = Ms::slot(pinned.as_mut(), i).run_mut();
                            run.phase = Phase::Done;
                            (run.step.index, run.step.attempt)
                        };
                        if J::ENABLED && owed && failed.is_none() {
                            // Durable before the group's values reach the body.
                            failed = self.journal_step(index, EntryKind::Done).await.err().map(StepErrorKind::Journal);
                        }
                        if H::ENABLED && failed.is_none() {
                            // Its span has ended with its outcome.
                            let event = self.step_event(index, attempt);
                            let called = hook_call(hooks, || hooks.on_step_success(&event)).await;
                            failed = self.success_hook_ended(index, called).err().map(StepErrorKind::Panicked);
                        }
                        if let Some(kind) = failed {
                            // Its undo record, if made, stays owed.
                            ended = Some(self.member_ended(Ms::slot(pinned.as_mut(), i), kind, &mut first, i));
                        }
                        None
                    }
                    Event::Ended(i, Err(kind)) => Some((i, kind)),
                    Event::TimedOut(i) => {
                        let timeout = {
                            let mut slot = Ms::slot(pinned.as_mut(), i);
                            slot.as_mut().stop();
                            slot.settings().config.timeout.unwrap_or_default()
                        };
                        Some((i, StepErrorKind::TimedOut { timeout }))
                    }
                    Event::Due(i) => {
                        Ms::slot(pinned.as_mut(), i).run_mut().phase = Phase::Due;
                        None
                    }
                };
                if let Some((i, kind)) = failed {
                    ended = self.member_failed::<Ms, E>(pinned.as_mut(), i, kind, true, &mut first).await;
                }
                if let Some(released) = ended {
                    self.after_member_ended::<Ms, E>(pinned.as_mut(), released, on_failure).await;
                }
            }
            match first {
                None => match Ms::outputs(pinned.as_mut()) {
                    Some(outputs) => Ok(outputs),
                    // Every member completed, so every output is there.
                    None => Err(GroupError {
                        first: StepError { step: Name::from("(group)"), index: base, kind: StepErrorKind::Cancelled },
                        others: S::List::default(),
                    }),
                },
                Some(first) => {
                    let mut others = S::List::default();
                    let mut first_error = None;
                    for i in 0..n {
                        let mut slot = Ms::slot(pinned.as_mut(), i);
                        let Some(kind) = slot.as_mut().take_error() else { continue };
                        let error = StepError {
                            step: slot.settings().name.clone(),
                            index: slot.as_mut().run_mut().step.index,
                            kind,
                        };
                        if i == first {
                            first_error = Some(error);
                        } else {
                            // Cannot fail: room for every member was reserved.
                            let _ = others.push(error);
                        }
                    }
                    let first = first_error.unwrap_or(StepError {
                        step: Name::from("(group)"),
                        index: base + first,
                        kind: StepErrorKind::Cancelled,
                    });
                    Err(GroupError { first, others })
                }
            }
        }
    }

    /// Gives a member its step record (in progress from now on) and its
    /// policies.
    fn enroll<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) {
        let now = self.stamp();
        let manager = self.manager;
        let has_undo = slot.has_undo();
        let run = slot.as_mut().run_mut();
        let settings = &mut run.settings;
        settings.resolve(manager.timeout, manager.retry);
        // Room was reserved.
        let index = self.ledger.step_begins(settings.name.clone(), settings.config.timeout, has_undo, self.scope, now);
        run.step = StepRun::new(index);
    }

    /// Counts a member's next attempt.
    fn next_attempt<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) -> (usize, u32) {
        let run = slot.as_mut().run_mut();
        run.span = Some(run.step.next_attempt(self.ledger));
        (run.step.index, run.step.attempt)
    }

    /// Starts a member's attempt: its uncertain undo record goes into the
    /// ledger while it is in flight. A panic in the execute closure fails
    /// the attempt.
    fn start_attempt<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) -> Option<StepErrorKind<E>> {
        let now = crate::timing::clock::now(&self.manager.clock);
        let timeout = slot.settings().config.timeout;
        let run = slot.as_mut().run_mut();
        let span = run.span.take();
        let key = self.ledger.step_key(run.step.index);
        let started = within_span(&span, || caught(|| slot.as_mut().start(key)));
        let run = slot.as_mut().run_mut();
        run.span = span;
        match started {
            Ok(()) => {
                run.phase = Phase::Running { until: timeout.map(|t| now.saturating_add(t)) };
                None
            }
            Err(panic) => Some(StepErrorKind::Panicked(panic)),
        }
    }

    /// Puts a member's uncertain undo record into the ledger before its
    /// attempt starts (`StepRun::owe_uncertain`).
    fn owe_uncertain<E>(
        &mut self,
        slot: Pin<&mut dyn driver::Slot<U, E>>,
    ) -> Result<bool, crate::util::text::PanicMessage> {
        let (run, ask) = slot.split();
        let make = |key| ask.make_undo(false, key);
        let env = StepEnv { ledger: self.ledger, clock: &self.manager.clock, config: &run.settings.config };
        run.step.owe_uncertain(env, make)
    }

    /// A member's attempt succeeded (`StepRun::completed`): its undo
    /// record joins the ledger now (completion order), and its span ends.
    fn member_completed<E>(
        &mut self,
        slot: Pin<&mut dyn driver::Slot<U, E>>,
    ) -> Result<bool, crate::util::text::PanicMessage> {
        let (run, ask) = slot.split();
        let span = run.span.take();
        let make = |key| ask.make_undo(true, key);
        let env = StepEnv { ledger: self.ledger, clock: &self.manager.clock, config: &run.settings.config };
        let completed = run.step.completed(env, make, span.as_ref());
        if let Some(span) = span {
            crate::trace::close(span);
        }
        completed
    }

    /// A member failed for good with `kind`: after its last attempt, or
    /// outside its attempts (its undo record could not be made, its `Done`
    /// could not be written, its success hook panicked). Returns its index
    /// if its uncertain rollback is released (it owes none).
    fn member_ended<E>(
        &mut self,
        mut slot: Pin<&mut dyn driver::Slot<U, E>>,
        kind: StepErrorKind<E>,
        first: &mut Option<usize>,
        i: usize,
    ) -> Option<usize> {
        close_span(slot.as_mut().run_mut());
        let step = slot.as_mut().run_mut().step;
        self.member_done(slot, Some(kind), first, i);
        step.released().then_some(step.index)
    }

    /// After a member ended (`member_ended`): its uncertain rollback is
    /// `released`, if given, and with `cancel_on_failure` the others end
    /// too. (Not one `async fn` with `member_ended`: its arguments, the
    /// error among them, would be kept in the group's future.)
    async fn after_member_ended<Ms, E>(
        &mut self,
        mut pinned: Pin<&mut Ms::Pinned>,
        released: Option<usize>,
        on_failure: OnMemberFailure,
    ) where
        Ms: Members<U, E>,
        E: fmt::Display,
    {
        if let Some(index) = released {
            self.release_rollback(index).await;
        }
        if on_failure == OnMemberFailure::Cancel {
            let n = Ms::count_pinned(pinned.as_mut());
            self.cancel_members::<Ms, E>(pinned.as_mut(), n).await;
        }
    }

    /// A member's attempt failed: record it, call `on_step_failure`, then
    /// retry after its backoff, or end the member: then returns whether
    /// its rollback is released, for `after_member_ended`.
    async fn member_failed<Ms, E>(
        &mut self,
        mut pinned: Pin<&mut Ms::Pinned>,
        i: usize,
        kind: StepErrorKind<E>,
        ran: bool,
        first: &mut Option<usize>,
    ) -> Option<Option<usize>>
    where
        Ms: Members<U, E>,
        E: fmt::Display,
    {
        let (index, attempt, mut last) = self.attempt_failed(Ms::slot(pinned.as_mut(), i), &kind, ran);
        if H::ENABLED {
            let hooks = &self.manager.hooks;
            let span = Ms::slot(pinned.as_mut(), i).run_mut().span.as_ref();
            let event = self.step_event(index, attempt);
            let called = within_some(span, hook_call(hooks, || hooks.on_step_failure(&event))).await;
            last |= self.failure_hook_ended(index, called);
        }
        if last {
            return Some(self.member_ended(Ms::slot(pinned.as_mut(), i), kind, first, i));
        }
        // The error of an attempt that will be retried is dropped here;
        // its text stays in the step's record.
        drop(kind);
        let now = crate::timing::clock::now(&self.manager.clock);
        let mut slot = Ms::slot(pinned.as_mut(), i);
        let run = slot.as_mut().run_mut();
        let env = StepEnv { ledger: self.ledger, clock: &self.manager.clock, config: &run.settings.config };
        let delay = run.step.backoff(env);
        if let Some(span) = &run.span {
            tm_event!(info, span, "retrying", delay = crate::trace::AsDebug(delay));
        }
        close_span(run);
        tm_debug!("step `{}` retrying in {:?}", self.ledger.summary.steps()[index].name, delay);
        run.phase = if delay.is_zero() { Phase::Due } else { Phase::Backoff { until: now.saturating_add(delay) } };
        None
    }

    /// Bookkeeping of a failed attempt (`StepRun::failed`); returns the
    /// member's index, the attempt, and whether it was the last.
    fn attempt_failed<E: fmt::Display>(
        &mut self,
        slot: Pin<&mut dyn driver::Slot<U, E>>,
        kind: &StepErrorKind<E>,
        ran: bool,
    ) -> (usize, u32, bool) {
        let (run, ask) = slot.split();
        let env = StepEnv { ledger: self.ledger, clock: &self.manager.clock, config: &run.settings.config };
        let ask = |error: &E| ask.retries(error);
        let last = run.step.failed(env, kind, ran, ask, run.span.as_ref());
        (run.step.index, run.step.attempt, last)
    }

    /// A member ended for good, failed with `kind` if given.
    fn member_done<E>(
        &mut self,
        mut slot: Pin<&mut dyn driver::Slot<U, E>>,
        kind: Option<StepErrorKind<E>>,
        first: &mut Option<usize>,
        i: usize,
    ) {
        let run = slot.as_mut().run_mut();
        run.phase = Phase::Done;
        if let Some(kind) = kind {
            if first.is_none() {
                *first = Some(i);
            }
            slot.as_mut().fail(kind);
        }
    }

    /// Cancels every member still running or waiting to retry: an attempt
    /// in flight is dropped (uncertain: its undo record, if it opted in,
    /// stays owed), one waiting fails cleanly.
    async fn cancel_members<Ms, E>(&mut self, mut pinned: Pin<&mut Ms::Pinned>, n: usize)
    where
        Ms: Members<U, E>,
        E: fmt::Display,
    {
        for j in 0..n {
            let Some(step) = self.cancel_member(Ms::slot(pinned.as_mut(), j)) else { continue };
            if step.released() {
                self.release_rollback(step.index).await;
            }
            if H::ENABLED {
                // Its span has ended, cancelled; the step has failed for
                // good already, whatever the hook does.
                let hooks = &self.manager.hooks;
                let event = self.step_event(step.index, step.attempt);
                let called = hook_call(hooks, || hooks.on_step_failure(&event)).await;
                self.failure_hook_ended(step.index, called);
            }
        }
    }

    fn cancel_member<E>(&mut self, mut slot: Pin<&mut dyn driver::Slot<U, E>>) -> Option<StepRun> {
        let run = slot.as_mut().run_mut();
        let in_flight = match run.phase {
            Phase::Done => return None,
            Phase::Running { .. } => true,
            Phase::Due | Phase::Backoff { .. } => false,
        };
        end_span(run, "cancelled");
        slot.as_mut().stop();
        let run = slot.as_mut().run_mut();
        run.step.cancelled(self.ledger, &self.manager.clock, in_flight);
        let step = run.step;
        let mut first = Some(usize::MAX);
        self.member_done(slot, Some(StepErrorKind::Cancelled), &mut first, usize::MAX);
        Some(step)
    }
}

/// Ends the span of a member's attempt with its outcome.
fn end_span(run: &mut Run, outcome: &'static str) {
    if let Some(span) = run.span.take() {
        crate::trace::outcome(&span, outcome);
        crate::trace::close(span);
    }
}

/// Ends the span of a member's attempt whose outcome is recorded.
fn close_span(run: &mut Run) {
    if let Some(span) = run.span.take() {
        crate::trace::close(span);
    }
}

/// Runs `f` inside `span` (entered), when there is one.
pub(super) fn within_span<R>(span: &Option<crate::trace::Span>, f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "tracing")]
    if let Some(span) = span {
        return span.in_scope(f);
    }
    let _ = span;
    f()
}
