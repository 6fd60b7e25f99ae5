//! Building a member: `member(name)`, its options and its execute function.

use super::*;

/// Starts building a member of a parallel group named `name`: set its
/// options, then its execute function ([`MemberBuilder::execute`]), then
/// optionally its rollback, and pass it to [`Transaction::parallel`] or
/// [`Group::run`] with the other members, in a tuple, an array or (with
/// `alloc`) a `Vec` — or return them from the closure given to
/// [`Transaction::parallel_with`] or [`Group::run_with`], which lends the
/// transaction's context to the members ([`MemberBuilder::execute_on`]).
///
/// Options not set default to the manager's, as for [`Transaction::step`].
///
/// ```
/// # use transaction_manager::*;
/// # use transaction_manager::group::member;
/// let clock = ManualClock::new();
/// let manager = TransactionManager::new(&clock);
/// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 2>().run(async |tx| {
///     let (a, b) = tx.parallel((
///         member("a").execute(|| async { Ok::<_, &str>(1) }),
///         member("b").max_retries(2).execute(|| async { Ok::<_, &str>("two") }),
///     )).await?;
///     Ok::<_, StepError<&str>>((a, b))
/// }));
/// assert_eq!(done.unwrap().into_value(), (1, "two"));
/// ```
pub fn member(name: impl Into<Name>) -> MemberBuilder {
    MemberBuilder {
        settings: Settings {
            name: name.into(),
            config: StepConfig::default(),
            own_timeout: false,
            own_retry: false,
            own_max_retries: false,
            max_retries: 0,
        },
    }
}

/// A member's options, as a step's ([`StepConfig`]), collected before
/// the group runs; those not set are the manager's, filled in when the
/// group starts.
#[derive(Debug)]
pub struct Settings {
    pub(super) name: Name,
    pub(super) config: StepConfig,
    /// Its timeout was set (`config.timeout`), not the manager's.
    own_timeout: bool,
    /// Its retry policy was set (`config.retry`), not the manager's.
    own_retry: bool,
    /// Its number of retries was set (`max_retries`), on its policy or
    /// the manager's.
    own_max_retries: bool,
    /// (A `u32` and a flag: an `Option<u32>` would take 8 bytes of each
    /// member, with padding.)
    max_retries: u32,
}

impl Settings {
    /// Fills in the manager's `timeout` and `retry` where the member set none.
    pub(super) fn resolve(&mut self, timeout: Option<Duration>, retry: RetryPolicy) {
        let config = &mut self.config;
        if !self.own_timeout {
            config.timeout = timeout;
        }
        if !self.own_retry {
            config.retry = retry;
        }
        if self.own_max_retries {
            config.retry = config.retry.with_max_retries(self.max_retries);
        }
    }
}

/// A group member being configured. Made by [`member`].
#[derive(Debug)]
#[must_use = "a member does nothing until it is given an execute function and run in a group"]
pub struct MemberBuilder {
    settings: Settings,
}

impl MemberBuilder {
    /// Gives each execute attempt at most `timeout` (see [`Step::timeout`](crate::step::Step::timeout)).
    pub fn timeout(mut self, timeout: impl Into<Duration>) -> Self {
        self.settings.config.timeout = Some(timeout.into());
        self.settings.own_timeout = true;
        self
    }

    /// No timeout, even if the manager sets a default one.
    pub fn no_timeout(mut self) -> Self {
        self.settings.config.timeout = None;
        self.settings.own_timeout = true;
        self
    }

    /// Retries and backoff of execute (and, unless set separately, of the
    /// rollback).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.settings.config.retry = policy;
        self.settings.own_retry = true;
        self
    }

    /// Changes only the number of retries of the member's policy (the
    /// manager's, unless [`retry`](MemberBuilder::retry) set one).
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// let clock = ManualClock::new();
    /// let every_100ms = RetryPolicy::new().with_initial_interval(Duration::from_millis(100));
    /// let manager = TransactionManager::new(&clock).with_retry(every_100ms);
    /// let mut calls = 0;
    /// let done = clock.block_on(manager.transaction("t").fixed::<NoRollback, 1>().run(async |tx| {
    ///     let (n,) = tx.parallel((member("flaky").max_retries(2).execute(|| {
    ///         calls += 1;
    ///         let n = calls;
    ///         async move { if n < 3 { Err("busy") } else { Ok(n) } }
    ///     }),)).await?;
    ///     Ok::<_, StepError<&str>>(n)
    /// }));
    /// assert_eq!(done.unwrap().into_value(), 3);
    /// assert_eq!(clock.now(), Duration::from_millis(300)); // 100 ms, then 200 ms
    /// ```
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.settings.max_retries = retries;
        self.settings.own_max_retries = true;
        self
    }

    /// The rollback's per-attempt timeout (`None`: none), instead of the
    /// member's.
    pub fn rollback_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.settings.config.rollback_timeout = Some(timeout);
        self
    }

    /// The rollback's retries and backoff, instead of the member's.
    pub fn rollback_retry(mut self, policy: RetryPolicy) -> Self {
        self.settings.config.rollback_retry = Some(policy);
        self
    }

    /// Gives the member its execute function, called once per attempt:
    /// `|| api.reserve_ip()`. The function reaches shared clients through
    /// captures (`Arc`s, references); to borrow a part of the
    /// transaction's context mutably, use
    /// [`execute_on`](MemberBuilder::execute_on).
    pub fn execute<F, Fut, Out, E>(self, execute: F) -> Member<Plain<F>, NoUndo>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Out, E>>,
        E: fmt::Display,
    {
        Member::new(self.settings, Plain(execute), NoUndo)
    }

    /// Like [`execute`](MemberBuilder::execute), but each attempt receives
    /// the member's [`IdempotencyKey`] (the transaction's id and the
    /// member's step index, known once its group starts), to pass to the
    /// API it calls.
    ///
    /// ```
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock).with_origin(0x2a);
    /// let done = clock.block_on(manager.transaction("t").with_id(TransactionId::new(2)).fixed::<NoRollback, 2>().run(async |tx| {
    ///     let keys = tx.parallel((
    ///         member("a").execute_keyed(|key| async move { Ok::<_, &str>(key.to_string()) }),
    ///         member("b").execute_keyed(|key| async move { Ok::<_, &str>(key.to_string()) }),
    ///     )).await?;
    ///     Ok::<_, StepError<&str>>(keys)
    /// }));
    /// assert_eq!(done.unwrap().into_value(), ("tx-2.0-000000000000002a".to_string(), "tx-2.1-000000000000002a".to_string()));
    /// ```
    pub fn execute_keyed<F, Fut, Out, E>(self, execute: F) -> Member<Keyed<F>, NoUndo>
    where
        F: FnMut(IdempotencyKey) -> Fut,
        Fut: Future<Output = Result<Out, E>>,
        E: fmt::Display,
    {
        Member::new(self.settings, Keyed(execute), NoUndo)
    }

    /// Gives the member a part it borrows mutably (`&mut board.i2c`) and
    /// its execute function, which gets the part for each attempt:
    /// `async |bus: &mut I2c| bus.init().await`.
    ///
    /// This is how members reach the transaction's context: in
    /// [`Group::run_with`] (or [`Transaction::parallel_with`]) a closure
    /// receives the context and hands disjoint parts of it to the members,
    /// which run at the same time, each with its own part. The part can
    /// also be anything else the body can lend.
    ///
    /// An attempt that the group stops (its timeout, or
    /// [`cancel_on_failure`](Group::cancel_on_failure)) drops the future
    /// and gives the part back for the next attempt. An attempt that
    /// panics (caught with `std`) takes the part with it: the member's
    /// later attempts fail as panics too.
    ///
    /// ```
    /// # use core::time::Duration;
    /// # use transaction_manager::*;
    /// # use transaction_manager::group::member;
    /// struct Board { i2c: u8, spi: u8 }
    /// let clock = ManualClock::new();
    /// let manager = TransactionManager::new(&clock);
    /// let mut board = Board { i2c: 0, spi: 0 };
    /// let done = clock.block_on(manager.transaction("up").fixed::<NoRollback, 2>().run_with(&mut board, async |tx| {
    ///     let clock = tx.clock();
    ///     tx.parallel_with(|board: &mut Board| {
    ///         let Board { i2c, spi } = board;
    ///         (
    ///             member("i2c").execute_on(i2c, async move |i2c: &mut u8| {
    ///                 clock.sleep(Duration::from_millis(3)).await;
    ///                 *i2c = 1;
    ///                 Ok::<_, &str>(())
    ///             }),
    ///             member("spi").execute_on(spi, async move |spi: &mut u8| {
    ///                 clock.sleep(Duration::from_millis(5)).await;
    ///                 *spi = 2;
    ///                 Ok::<_, &str>(())
    ///             }),
    ///         )
    ///     }).await?;
    ///     Ok::<_, StepError<&str>>(clock.now())
    /// }));
    /// assert_eq!(done.unwrap().into_value(), Duration::from_millis(5), "at the same time: 5 ms, not 8");
    /// assert_eq!((board.i2c, board.spi), (1, 2));
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn execute_on<'p, P, F, Out, E>(
        self,
        part: &'p mut P,
        execute: F,
    ) -> Member<Lent<'p, P, F, impl Future<Output = LentEnd<'p, P, F, Out, E>>>, NoUndo>
    where
        P: ?Sized + 'p,
        F: AsyncFnMut(&mut P) -> Result<Out, E> + 'p,
        E: fmt::Display,
    {
        let lent =
            Lent { part: Some(part), execute: Some(execute), stopping: None, attempt: lent_attempt::<P, F, Out, E> };
        Member::new(self.settings, lent, NoUndo)
    }
}
