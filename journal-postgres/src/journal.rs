//! `PostgresJournal`: the `Journal` on a Postgres database shared by many
//! instances.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;
use transaction_manager_core::backend::{
    Browse, CodecError, Entry, EntryKind, Holder, Journal, Pruned, Retention, StoredEntry, TransactionId,
};

use crate::connection::{Target, TlsPem};
use crate::statements::Statements;
use crate::{PostgresJournalError, schema};

/// The largest payload (encoded undo record and its header) an entry may
/// have: 16 MiB, as for the SQLite journal.
pub const MAX_PAYLOAD: usize = 16 << 20;

/// How a [`PostgresJournal`] connects and leases.
///
/// ```
/// use std::time::Duration;
/// use transaction_manager_postgres::PostgresOptions;
/// let options = PostgresOptions::new().owner("billing-7").lease(Duration::from_secs(10));
/// assert_eq!(options.lease_duration(), Duration::from_secs(10));
/// ```
#[derive(Clone)]
pub struct PostgresOptions {
    owner: Option<String>,
    lease: Duration,
    renew_every: Option<Duration>,
    durable_connections: usize,
    lazy_connections: usize,
    schema: Option<String>,
    migrate: bool,
    tls: TlsPem,
    retention: Retention,
    prune_every: Duration,
}

/// Without the PEM texts: a client key is a secret.
impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .field("renew_every", &self.renew_every)
            .field("durable_connections", &self.durable_connections)
            .field("lazy_connections", &self.lazy_connections)
            .field("schema", &self.schema)
            .field("migrate", &self.migrate)
            .field("retention", &self.retention)
            .field("prune_every", &self.prune_every)
            .field("root_certificate_pem", &self.tls.root.is_some())
            .field("client_certificate_pem", &self.tls.client.is_some())
            .finish()
    }
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl PostgresOptions {
    /// A 30-second lease renewed every 10 seconds, 4 connections for
    /// durable entries and 2 for lazy ones, an owner id made up at connect.
    ///
    /// ```
    /// # use transaction_manager_postgres::PostgresOptions;
    /// assert_eq!(PostgresOptions::new().lease_duration(), std::time::Duration::from_secs(30));
    /// ```
    pub fn new() -> Self {
        PostgresOptions {
            owner: None,
            lease: Duration::from_secs(30),
            renew_every: None,
            durable_connections: 4,
            lazy_connections: 2,
            schema: None,
            migrate: true,
            tls: TlsPem::default(),
            retention: Retention::KeepFor(Duration::from_secs(7 * 24 * 60 * 60)),
            prune_every: Duration::from_secs(60),
        }
    }

    /// How long finished transactions (committed, rolled back, resolved)
    /// are kept before this instance's pruning task deletes them (default:
    /// [`Retention::KeepFor`] 7 days; [`Retention::KeepAll`] never). Every
    /// instance prunes, in batches of 512 (`SKIP LOCKED`: they never wait
    /// for each other), every [`prune_every`](Self::prune_every). A
    /// transaction that is not over — running, owing a rollback that failed
    /// for good, stuck — is never deleted. The role needs `DELETE` on
    /// `tm_entries` and `tm_transactions`; without it, pruning logs one
    /// warning and the rows are kept.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use transaction_manager_postgres::{PostgresOptions, Retention};
    /// let options = PostgresOptions::new().retention(Retention::KeepFor(Duration::from_secs(24 * 60 * 60)));
    /// ```
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// How often this instance prunes (default: every minute, at least
    /// every 10 ms; see [`retention`](Self::retention)).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use transaction_manager_postgres::PostgresOptions;
    /// let options = PostgresOptions::new().prune_every(Duration::from_secs(10));
    /// ```
    pub fn prune_every(mut self, every: Duration) -> Self {
        self.prune_every = every.max(Duration::from_millis(10));
        self
    }

    /// The Postgres schema that holds the journal's tables (default: the
    /// connection's `search_path`, usually `public`), so that several
    /// applications can share one database. Every connection of the
    /// journal sets its `search_path` to it; migrating creates it if it
    /// does not exist.
    ///
    /// ```
    /// # use transaction_manager_postgres::PostgresOptions;
    /// let options = PostgresOptions::new().schema("billing_journal");
    /// ```
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Whether [`PostgresJournal::connect`] creates or upgrades the
    /// journal's tables (default: yes). Off, it only checks that they are
    /// up to date ([`NotMigrated`](PostgresJournalError::NotMigrated) if
    /// not): for a role that may use the tables but not create them, after
    /// [`PostgresJournal::migrate`] ran as their owner.
    ///
    /// ```
    /// # use transaction_manager_postgres::PostgresOptions;
    /// let options = PostgresOptions::new().schema("tm").migrate(false);
    /// ```
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The root certificate (PEM, one or more) that the server's
    /// certificate must chain to, instead of a `sslrootcert` file in the
    /// connection string. As with libpq, with a root certificate `prefer`
    /// and `require` check the chain too.
    ///
    /// ```
    /// # use transaction_manager_postgres::PostgresOptions;
    /// # let ca_pem = b"-----BEGIN CERTIFICATE-----...".to_vec();
    /// let options = PostgresOptions::new().root_certificate_pem(ca_pem);
    /// ```
    pub fn root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root = Some(pem.into());
        self
    }

    /// A client certificate and its private key (PEM), instead of
    /// `sslcert` and `sslkey` files in the connection string. The key is
    /// never shown (`Debug` says only whether one is set).
    ///
    /// ```
    /// # use transaction_manager_postgres::PostgresOptions;
    /// # let (cert_pem, key_pem) = (Vec::new(), Vec::new());
    /// let options = PostgresOptions::new().client_certificate_pem(cert_pem, key_pem);
    /// ```
    pub fn client_certificate_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }

    /// This instance's owner id (default: `<HOSTNAME>-<pid>-e<epoch>`,
    /// unique per connect). A stable id (`worker-3`) lets a restarted
    /// instance take its own unfinished transactions back at once, without
    /// waiting for their lease to expire.
    ///
    /// ```
    /// # use transaction_manager_postgres::PostgresOptions;
    /// let options = PostgresOptions::new().owner(format!("billing-{}", 3));
    /// # let _ = options;
    /// ```
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// How long this instance's lease lasts after each renewal: another
    /// instance's recovery claims its unfinished transactions once it has
    /// not renewed for this long.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use transaction_manager_postgres::PostgresOptions;
    /// let options = PostgresOptions::new().lease(Duration::from_secs(5));
    /// assert_eq!(options.lease_duration(), Duration::from_secs(5));
    /// ```
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How often the lease is renewed (default: a third of the lease).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use transaction_manager_postgres::PostgresOptions;
    /// let options = PostgresOptions::new().lease(Duration::from_secs(3)).renew_every(Duration::from_millis(500));
    /// # let _ = options;
    /// ```
    pub fn renew_every(mut self, every: Duration) -> Self {
        self.renew_every = Some(every);
        self
    }

    /// Connections for durable entries (at least 1): Postgres commits
    /// concurrent transactions of different connections with one WAL flush
    /// (group commit), so more connections let more appends share one.
    ///
    /// ```
    /// # use transaction_manager_postgres::PostgresOptions;
    /// let options = PostgresOptions::new().durable_connections(8).lazy_connections(2);
    /// # let _ = options;
    /// ```
    pub fn durable_connections(mut self, n: usize) -> Self {
        self.durable_connections = n.max(1);
        self
    }

    /// Connections for lazy entries (at least 1), which commit with
    /// `synchronous_commit = off`.
    ///
    /// ```
    /// # use transaction_manager_postgres::PostgresOptions;
    /// let options = PostgresOptions::new().lazy_connections(1);
    /// # let _ = options;
    /// ```
    pub fn lazy_connections(mut self, n: usize) -> Self {
        self.lazy_connections = n.max(1);
        self
    }

    /// The lease duration.
    ///
    /// ```
    /// # use transaction_manager_postgres::PostgresOptions;
    /// assert!(PostgresOptions::new().lease_duration().as_secs() > 0);
    /// ```
    pub fn lease_duration(&self) -> Duration {
        self.lease
    }
}

/// A [`Journal`] in a Postgres database, shared by any number of
/// processes on any number of machines. Needs a tokio runtime (the
/// client's connections and the lease's heartbeat run as tasks on it).
/// Cloning is cheap: clones share the connections, the lease and the ids.
///
/// - **Records**: the same as the SQLite journal. One row per entry in
///   `tm_entries`, idempotent on (transaction, step, kind) (the first
///   write is kept), read back in first-append order; the raw payload as
///   `bytea`, and the undo record also as `JSONB` when its codec wrote JSON
///   (the `Json` codec), for operators to read.
/// - **Durability**: a durable entry is committed with
///   `synchronous_commit = on` before `append` returns; lazy ones on
///   connections with `synchronous_commit = off` (visible at once, flushed
///   within the server's `wal_writer_delay`). Postgres flushes concurrent
///   commits together (group commit).
/// - **Ids**: each connect takes an *epoch* from a sequence; ids are
///   `epoch << 32 | counter`, from an atomic counter, with no I/O.
/// - **Ownership**: each instance has an owner id and a lease in
///   `tm_owners`, renewed by a heartbeat task. Every transaction row holds
///   its owner and a *generation*. [`next_unfinished`](Journal::next_unfinished)
///   claims — `FOR UPDATE SKIP LOCKED`, bumping the generation — only
///   transactions of an owner whose lease expired, or of this owner id
///   but an earlier connect; never one this journal is running. So
///   [`TransactionManager::recover`](transaction_manager_core::TransactionManager::recover)
///   may run continuously, in every instance, while they all run
///   transactions.
/// - **Fencing**: every append checks owner and generation in the same
///   statement that writes. An instance that was paused past its lease and
///   wakes up gets [`PostgresJournalError::Fenced`] at its next append; its
///   step fails and the transaction rolls back in memory, while the
///   instance that claimed it rolls it back for real. Give steps the fence
///   ([`generation`](Self::generation)) when they write to a store that
///   can check it, so that the stale instance's in-memory rollbacks are
///   refused there too.
/// - **Retention**: each instance deletes finished transactions (committed,
///   rolled back, resolved) 7 days after they ended, in batches
///   ([`PostgresOptions::retention`], [`prune`](Self::prune) by hand);
///   never one that is not over. An append for a transaction already
///   deleted finds no row and is refused, so a late `Aborted` can never
///   turn a pruned commit into a rollback.
pub struct PostgresJournal {
    inner: Arc<Inner>,
}

impl Clone for PostgresJournal {
    fn clone(&self) -> Self {
        PostgresJournal { inner: self.inner.clone() }
    }
}

struct Inner {
    /// The journal's origin (`tm_meta`, made by migration 3).
    origin: u64,
    target: Target,
    owner: String,
    lease: Duration,
    durable: Vec<Slot>,
    lazy: Vec<Slot>,
    reader: Slot,
    next_slot: AtomicUsize,
    ids: Arc<Ids>,
    /// The generation this journal holds of each transaction it runs or
    /// has claimed and not ended.
    generations: Mutex<HashMap<u64, i64>>,
    fenced: AtomicU64,
    heartbeat: tokio::task::JoinHandle<()>,
    /// The pruning task, if the retention deletes anything.
    pruner: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Some(pruner) = &self.pruner {
            pruner.abort();
        }
    }
}

/// One connection, opened again when it was lost.
struct Slot {
    lazy: bool,
    conn: Mutex<Option<Arc<Conn>>>,
}

struct Conn {
    client: Client,
    statements: Statements,
}

impl Slot {
    fn new(lazy: bool, conn: Conn) -> Self {
        Slot { lazy, conn: Mutex::new(Some(Arc::new(conn))) }
    }

    async fn get(&self, target: &Target) -> Result<Arc<Conn>, PostgresJournalError> {
        if let Some(conn) = &*self.conn.lock().unwrap_or_else(PoisonError::into_inner) {
            if !conn.client.is_closed() {
                return Ok(conn.clone());
            }
        }
        let conn = Arc::new(open(target, self.lazy).await.map_err(|error| match error {
            PostgresJournalError::Connect(cause) => PostgresJournalError::ConnectionLost(cause),
            other => other,
        })?);
        *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets a connection that failed, so the next call opens a new one.
    fn forget_if_lost(&self, error: &PostgresJournalError) {
        if error.is_connection_lost() {
            *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

pub(crate) async fn connect(target: &Target) -> Result<Client, PostgresJournalError> {
    let (client, connection) =
        target.config.connect(target.tls.clone()).await.map_err(PostgresJournalError::connecting)?;
    // The connection's I/O; it ends when the client is dropped or the
    // server goes away (the client then reports itself closed).
    tokio::spawn(async move {
        let _ = connection.await;
    });
    if let Some(schema) = &target.schema {
        let set = format!("SET search_path TO {}", schema::quote_identifier(schema));
        client.batch_execute(&set).await.map_err(PostgresJournalError::connecting)?;
    }
    Ok(client)
}

async fn open(target: &Target, lazy: bool) -> Result<Conn, PostgresJournalError> {
    let client = connect(target).await?;
    if lazy {
        // Lazy entries may be lost with the server's last few hundred
        // milliseconds of commits (not with the client): the core only
        // ever repeats an idempotent rollback for one.
        client.batch_execute("SET synchronous_commit = off").await.map_err(PostgresJournalError::from_pg)?;
    }
    let statements = Statements::prepare(&client).await.map_err(PostgresJournalError::from_pg)?;
    Ok(Conn { client, statements })
}

impl PostgresJournal {
    /// Connects to the database at `url` (a libpq-style connection string:
    /// `host=/tmp port=5432 user=app dbname=app`, or a `postgresql://` URL),
    /// creates or upgrades the journal's tables, takes an id epoch, and
    /// starts this instance's lease and its heartbeat.
    ///
    /// TLS (rustls) as libpq does it, from the string's `sslmode`:
    /// `disable`; `prefer` (the default: TLS if the server offers it, else
    /// plain; over a unix socket always plain); `require` (TLS or no
    /// connection); `verify-ca` (the server's certificate must chain to the
    /// root certificate; host name not checked); `verify-full` (chain and
    /// host name). The root certificate is the file `sslrootcert` or
    /// [`PostgresOptions::root_certificate_pem`]; with one, `prefer` and
    /// `require` check the chain too. A client certificate: `sslcert` and
    /// `sslkey` files, or [`PostgresOptions::client_certificate_pem`].
    /// (Not read: libpq's `~/.postgresql/` default files,
    /// `sslrootcert=system`, `PGSSL*` variables.)
    ///
    /// The password: the string's `password`, else `PGPASSWORD`, else the
    /// first matching line of the password file (`passfile`, `PGPASSFILE`,
    /// or `~/.pgpass`; `host:port:dbname:user:password`, `*` for any; on
    /// Unix ignored if group or others may read it), as libpq. It never
    /// appears in an error, its `Debug`, or this crate's output.
    ///
    /// Appends wait for the database as long as it takes. To bound that,
    /// put a statement timeout in the connection string
    /// (`options='-c statement_timeout=5s'`): an append that runs out is
    /// cancelled by the server, not written, and returned as
    /// [`Postgres`](PostgresJournalError::Postgres) with SQLSTATE `57014`.
    ///
    /// # Errors
    ///
    /// [`InvalidConfig`](PostgresJournalError::InvalidConfig) for a bad
    /// connection string or a certificate file that cannot be read,
    /// [`Connect`](PostgresJournalError::Connect) if the database cannot be
    /// reached or refuses the credentials,
    /// [`Certificate`](PostgresJournalError::Certificate) if its TLS
    /// certificate is refused, [`NewerSchema`](PostgresJournalError::NewerSchema) if a
    /// newer version of this crate set it up,
    /// [`NotMigrated`](PostgresJournalError::NotMigrated) with migrations
    /// off and tables not up to date.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), transaction_manager_postgres::PostgresJournalError> {
    /// use transaction_manager_postgres::{PostgresJournal, PostgresOptions};
    /// let journal = PostgresJournal::connect("host=/run/postgresql dbname=app", PostgresOptions::new()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<Self, PostgresJournalError> {
        let target = crate::connection::target(url, &options.tls, options.schema.clone())?;
        let pg = PostgresJournalError::from_pg;
        let mut first = connect(&target).await?;
        if options.migrate {
            schema::migrate(&mut first, options.schema.as_deref()).await?;
        } else {
            schema::check(&first).await?;
        }
        let origin = schema::origin(&first).await?;
        let epoch = take_epoch(&first).await?;
        let spare = take_epoch(&first).await?;
        let owner = options.owner.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
            format!("{host}-{}-e{epoch}", std::process::id())
        });
        let lease_secs = options.lease.as_secs_f64();
        first
            .execute(
                "INSERT INTO tm_owners (owner, lease_until) VALUES ($1, clock_timestamp() + make_interval(secs => $2))
                 ON CONFLICT (owner) DO UPDATE SET lease_until = EXCLUDED.lease_until, renewed_at = clock_timestamp()",
                &[&owner, &lease_secs],
            )
            .await
            .map_err(pg)?;
        let statements = Statements::prepare(&first).await.map_err(pg)?;
        let reader = Slot::new(false, Conn { client: first, statements });
        let mut durable = Vec::new();
        for _ in 0..options.durable_connections.max(1) {
            durable.push(Slot::new(false, open(&target, false).await?));
        }
        let mut lazy = Vec::new();
        for _ in 0..options.lazy_connections.max(1) {
            lazy.push(Slot::new(true, open(&target, true).await?));
        }
        let renew_every = options.renew_every.unwrap_or(options.lease / 3);
        let heartbeat = tokio::spawn(heartbeat(target.clone(), owner.clone(), options.lease, renew_every));
        let pruner = options.retention.deletes().then(|| {
            tokio::spawn(crate::retention::background(target.clone(), options.retention, options.prune_every))
        });
        let ids = Arc::new(Ids::new(epoch, spare));
        Ok(PostgresJournal {
            inner: Arc::new(Inner {
                origin,
                target,
                owner,
                lease: options.lease,
                durable,
                lazy,
                reader,
                next_slot: AtomicUsize::new(0),
                ids,
                generations: Mutex::new(HashMap::new()),
                fenced: AtomicU64::new(0),
                heartbeat,
                pruner,
            }),
        })
    }

    /// Creates or upgrades the journal's tables (in the options'
    /// [`schema`](PostgresOptions::schema), created if missing) and
    /// returns, without taking ids or a lease: for a deployment step run as
    /// the tables' owner, when the application's role may not create them
    /// and connects with [`migrate(false)`](PostgresOptions::migrate).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), transaction_manager_postgres::PostgresJournalError> {
    /// use transaction_manager_postgres::{PostgresJournal, PostgresOptions};
    /// let options = PostgresOptions::new().schema("tm");
    /// PostgresJournal::migrate("host=db.internal user=tm_owner dbname=app sslmode=verify-full", options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(url: &str, options: PostgresOptions) -> Result<(), PostgresJournalError> {
        let target = crate::connection::target(url, &options.tls, options.schema.clone())?;
        let mut client = connect(&target).await?;
        schema::migrate(&mut client, options.schema.as_deref()).await
    }

    /// This instance's owner id.
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal) {
    /// println!("this instance is {}", journal.owner());
    /// # }
    /// ```
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// This instance's lease duration.
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal) {
    /// assert!(journal.lease().as_millis() > 0);
    /// # }
    /// ```
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// The generation at which this instance holds transaction `id` (it
    /// runs it, or its recovery claimed it), or `None`. With the
    /// [`owner`](Self::owner) it is the *fence* of the transaction: a store
    /// that keeps the effects of steps can refuse a write whose (owner,
    /// generation) is no longer the transaction's row in `tm_transactions`.
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal, key: transaction_manager::journal::IdempotencyKey) {
    /// // In a step: write the effect only while the transaction is ours.
    /// let fence = (journal.owner(), journal.generation(key.transaction()));
    /// # let _ = fence;
    /// # }
    /// ```
    pub fn generation(&self, id: TransactionId) -> Option<i64> {
        self.generations().get(&id.get()).copied()
    }

    /// How many appends of this instance were refused with
    /// [`Fenced`](PostgresJournalError::Fenced) so far: transactions
    /// another instance took over while this one was paused or cut off
    /// (a lazy entry's refusal is only logged by the engine: this counts
    /// it too).
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal) {
    /// if journal.fenced_appends() > 0 {
    ///     eprintln!("this instance was paused past its lease at least once");
    /// }
    /// # }
    /// ```
    pub fn fenced_appends(&self) -> u64 {
        self.inner.fenced.load(Ordering::Relaxed)
    }

    /// For a decision (`Committed` or `Aborted`), the other one, if the
    /// transaction holds it.
    async fn other_decision(
        &self,
        transaction: TransactionId,
        kind: EntryKind,
    ) -> Result<Option<EntryKind>, PostgresJournalError> {
        let other = match kind {
            EntryKind::Committed => EntryKind::Aborted,
            EntryKind::Aborted => EntryKind::Committed,
            _ => return Ok(None),
        };
        let (tx, code) = (to_sql(transaction), i16::from(other.code()));
        let held = self
            .with_conn(self.slot(true), async |c: &Conn| {
                c.client
                    .query_opt("SELECT 1 FROM tm_entries WHERE tx = $1 AND step = -1 AND kind = $2", &[&tx, &code])
                    .await
            })
            .await?;
        Ok(held.map(|_| other))
    }

    fn fenced(&self, transaction: TransactionId) -> PostgresJournalError {
        self.inner.fenced.fetch_add(1, Ordering::Relaxed);
        self.generations().remove(&transaction.get());
        PostgresJournalError::Fenced { transaction }
    }

    fn generations(&self) -> std::sync::MutexGuard<'_, HashMap<u64, i64>> {
        self.inner.generations.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The config the journal connects with (for tools that need their own
    /// connection to the same database), with [`tls_connector`](Self::tls_connector).
    /// Its `Debug` does not show the password.
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal) -> Result<(), tokio_postgres::Error> {
    /// let (client, connection) = journal.config().connect(journal.tls_connector()).await?;
    /// # let _ = (client, connection);
    /// # Ok(()) }
    /// ```
    pub fn config(&self) -> &Config {
        &self.inner.target.config
    }

    /// The TLS connector the journal connects with: the connection
    /// string's `sslmode` and certificates, for a connection of your own
    /// with [`config`](Self::config). Cloning is cheap.
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal) -> Result<(), tokio_postgres::Error> {
    /// let (client, connection) = journal.config().connect(journal.tls_connector()).await?;
    /// # let _ = (client, connection);
    /// # Ok(()) }
    /// ```
    pub fn tls_connector(&self) -> MakeRustlsConnect {
        self.inner.target.tls.clone()
    }

    fn slot(&self, durable: bool) -> &Slot {
        let n = self.inner.next_slot.fetch_add(1, Ordering::Relaxed);
        let pool = if durable { &self.inner.durable } else { &self.inner.lazy };
        &pool[n % pool.len()]
    }

    async fn with_conn<T, F>(&self, slot: &Slot, run: F) -> Result<T, PostgresJournalError>
    where
        F: AsyncFnOnce(&Conn) -> Result<T, tokio_postgres::Error>,
    {
        let conn = slot.get(&self.inner.target).await?;
        let result = run(&conn).await.map_err(PostgresJournalError::from_pg);
        if let Err(error) = &result {
            slot.forget_if_lost(error);
        }
        result
    }

    /// A connection for the operator view.
    pub(crate) async fn reader_client<T, F>(&self, run: F) -> Result<T, PostgresJournalError>
    where
        F: AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    {
        self.with_conn(&self.inner.reader, async |conn: &Conn| run(&conn.client).await).await
    }
}

impl PostgresJournal {
    /// Deletes, now, every finished transaction `retention` lets go (an
    /// operator's prune), in batches of 512. Never one that is not over.
    ///
    /// # Errors
    ///
    /// The database could not be reached, or refused the delete (the role
    /// needs `DELETE` on `tm_entries` and `tm_transactions`); batches
    /// before the failure stay deleted.
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal) -> Result<(), transaction_manager_postgres::PostgresJournalError> {
    /// use transaction_manager_postgres::Retention;
    /// let pruned = journal.prune(Retention::KeepLast(10_000)).await?;
    /// println!("{} transactions deleted", pruned.transactions);
    /// # Ok(()) }
    /// ```
    pub async fn prune(&self, retention: Retention) -> Result<Pruned, PostgresJournalError> {
        let conn = self.inner.reader.get(&self.inner.target).await?;
        let result = crate::retention::prune_all(&conn.client, retention).await;
        if let Err(error) = &result {
            self.inner.reader.forget_if_lost(error);
        }
        result
    }
}

impl PostgresJournal {
    /// Asks the recovery that next finds transaction `id` to try its owed
    /// rollbacks at once, whatever its manager's `OwedRetry` schedule says
    /// (no backoff wait; tried even with `OwedRetry::Never`): what
    /// `tmctl retry` runs. The instance holding the transaction takes the
    /// request at its next recovery
    /// ([`take_retry_request`](Journal::take_retry_request)): one request,
    /// one try. Returns `false` when the journal holds no unfinished
    /// transaction of that id.
    ///
    /// # Errors
    ///
    /// The database could not be reached or written.
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal) -> Result<(), transaction_manager_postgres::PostgresJournalError> {
    /// for stuck in journal.stuck().await? {
    ///     // ... after fixing what made its rollback fail:
    ///     journal.request_retry(stuck.id).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn request_retry(&self, id: TransactionId) -> Result<bool, PostgresJournalError> {
        let tx = to_sql(id);
        let changed = self
            .with_conn(self.slot(true), async |c: &Conn| {
                c.client
                    .execute("UPDATE tm_transactions SET retry_requested = true WHERE tx = $1 AND NOT finished", &[&tx])
                    .await
            })
            .await?;
        Ok(changed > 0)
    }
}

impl Browse for PostgresJournal {
    async fn next_transaction(
        &self,
        after: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, PostgresJournalError> {
        let after = after.map_or(-1, to_sql);
        let row = self
            .with_conn(&self.inner.reader, async |c: &Conn| {
                let statement = if unfinished_only { &c.statements.next_unfinished } else { &c.statements.next };
                c.client.query_opt(statement, &[&after]).await
            })
            .await?;
        Ok(row.map(|row| TransactionId::new(row.get::<_, i64>(0) as u64)))
    }

    /// (Ids stay below 2^63: epochs below 2^31.)
    async fn previous_transaction(
        &self,
        before: Option<TransactionId>,
        unfinished_only: bool,
    ) -> Result<Option<TransactionId>, PostgresJournalError> {
        let before = before.map_or(i64::MAX, to_sql);
        let row = self
            .with_conn(&self.inner.reader, async |c: &Conn| {
                let statement =
                    if unfinished_only { &c.statements.previous_unfinished } else { &c.statements.previous };
                c.client.query_opt(statement, &[&before]).await
            })
            .await?;
        Ok(row.map(|row| TransactionId::new(row.get::<_, i64>(0) as u64)))
    }

    /// Each entry's time is the database's clock when it was written
    /// (`written_at`).
    async fn read_timed(
        &self,
        id: TransactionId,
        visit: &mut dyn FnMut(StoredEntry<'_>, Option<u64>),
    ) -> Result<(), PostgresJournalError> {
        let tx = to_sql(id);
        let rows = self
            .with_conn(&self.inner.reader, async |c: &Conn| c.client.query(&c.statements.read_timed, &[&tx]).await)
            .await?;
        for row in &rows {
            let (step, kind, payload) = stored(row)?;
            let at = u64::try_from(row.get::<_, i64>(3)).ok();
            visit(StoredEntry { step, kind, payload }, at);
        }
        Ok(())
    }

    /// The instance that holds the transaction (its owner id) and its
    /// lease, by the database's clock: alive while the lease runs.
    async fn read_holder(
        &self,
        id: TransactionId,
        visit: &mut dyn FnMut(Holder<'_>),
    ) -> Result<(), PostgresJournalError> {
        let tx = to_sql(id);
        let row = self
            .with_conn(&self.inner.reader, async |c: &Conn| {
                c.client
                    .query_opt(
                        "SELECT t.owner, (extract(epoch FROM o.lease_until) * 1000)::bigint,
                                o.lease_until > clock_timestamp()
                         FROM tm_transactions t LEFT JOIN tm_owners o ON o.owner = t.owner
                         WHERE t.tx = $1 AND NOT t.finished",
                        &[&tx],
                    )
                    .await
            })
            .await?;
        if let Some(row) = row {
            let owner: String = row.get(0);
            let lease_until = row.get::<_, Option<i64>>(1).and_then(|at| u64::try_from(at).ok());
            // No lease row: the owner is gone for good.
            let alive = row.get::<_, Option<bool>>(2).unwrap_or(false);
            visit(Holder::new(&owner, lease_until, Some(alive)));
        }
        Ok(())
    }
}

/// An entry's step, kind and payload from a row of `tm_entries`.
fn stored(row: &tokio_postgres::Row) -> Result<(Option<u32>, u8, &[u8]), PostgresJournalError> {
    let step: i32 = row.get(0);
    let step = match step {
        -1 => None,
        step => Some(u32::try_from(step).map_err(|_| PostgresJournalError::Corrupt { what: "a negative step" })?),
    };
    let kind: i16 = row.get(1);
    let kind = u8::try_from(kind).map_err(|_| PostgresJournalError::Corrupt { what: "a kind out of range" })?;
    Ok((step, kind, row.get(2)))
}

async fn take_epoch(client: &Client) -> Result<u32, PostgresJournalError> {
    let row = client.query_one("SELECT nextval('tm_epochs')", &[]).await.map_err(|error| {
        // The sequence's MAXVALUE reached: 55000 (object_not_in_prerequisite_state)? No: 2200H.
        match error.code().map(|c| c.code()) {
            Some("2200H") => PostgresJournalError::IdsExhausted,
            _ => PostgresJournalError::from_pg(error),
        }
    })?;
    let epoch: i64 = row.get(0);
    u32::try_from(epoch).ok().filter(|&e| e > 0).ok_or(PostgresJournalError::IdsExhausted)
}

/// Renews the lease every `every` until the journal is dropped. A renewal
/// that fails (the database is slow or away) is tried again at the next
/// tick; if the lease expires meanwhile, other instances may claim this
/// one's transactions, and its appends to them are fenced. A renewal after
/// the lease expired makes it live again: what was claimed meanwhile stays
/// with its claimer (the claim bumped its generation), the rest stays this
/// instance's.
async fn heartbeat(target: Target, owner: String, lease: Duration, every: Duration) {
    let lease_secs = lease.as_secs_f64();
    let mut client: Option<Client> = None;
    loop {
        tokio::time::sleep(every).await;
        if client.as_ref().is_none_or(Client::is_closed) {
            client = connect(&target).await.ok();
        }
        let Some(c) = &client else { continue };
        let renewed = c
            .execute(
                "UPDATE tm_owners SET lease_until = clock_timestamp() + make_interval(secs => $2), \
                 renewed_at = clock_timestamp() WHERE owner = $1",
                &[&owner, &lease_secs],
            )
            .await;
        if renewed.is_err() {
            client = None;
        }
    }
}

/// Encodes an entry's payload, up to `MAX_PAYLOAD` bytes.
fn encode(entry: &Entry<'_>) -> Result<Vec<u8>, PostgresJournalError> {
    entry.payload_to_vec(MAX_PAYLOAD).map_err(|error| match error {
        CodecError::BufferTooSmall => PostgresJournalError::PayloadTooLarge { limit: MAX_PAYLOAD },
        error => PostgresJournalError::Encode(error),
    })
}

/// The record as JSON text, if the codec wrote JSON (an object, an array
/// or a string: what serde gives for the enums undo records are). Text
/// Postgres would refuse in `jsonb` (a NUL character) is left out.
fn undo_json(record: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(record).ok()?;
    if !(value.is_object() || value.is_array() || value.is_string()) {
        return None;
    }
    let text = String::from_utf8(record.to_vec()).ok()?;
    (!text.contains("\\u0000")).then_some(text)
}

/// Ids as stored: every id this crate hands out is below 2^63 (epochs stop
/// at 2^31 - 1).
fn to_sql(id: TransactionId) -> i64 {
    id.get() as i64
}

impl Journal for PostgresJournal {
    type Error = PostgresJournalError;

    fn next_id(&self) -> TransactionId {
        TransactionId::new(self.inner.ids.next(&self.inner.target))
    }

    /// Made at random by the migration that added it, kept in `tm_meta`:
    /// every worker on the database shares it (ids are unique within the
    /// database already).
    fn origin(&self) -> u64 {
        self.inner.origin
    }

    async fn append(&self, entry: &Entry<'_>) -> Result<(), PostgresJournalError> {
        let payload = encode(entry)?;
        let kind = entry.kind();
        let (step_name, json) = match kind {
            EntryKind::Intent | EntryKind::Done => {
                match (StoredEntry { step: entry.step(), kind: kind.code(), payload: &payload }).undo_parts() {
                    Some((name, record)) => (Some(name.to_owned()), undo_json(record)),
                    None => (None, None),
                }
            }
            _ => (None, None),
        };
        let tx = to_sql(entry.transaction());
        let step = entry.step().map_or(-1, |s| i32::try_from(s).unwrap_or(i32::MAX));
        let code = i16::from(kind.code());
        let owner = self.inner.owner.as_str();
        let slot = self.slot(entry.is_durable());
        match kind {
            EntryKind::Begin => {
                let operation = String::from_utf8_lossy(&payload).into_owned();
                let inserted: i64 = self
                    .with_conn(slot, async |c: &Conn| {
                        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
                            [&tx, &owner, &step, &code, &payload, &json, &step_name, &operation];
                        Ok(c.client.query_one(&c.statements.begin, &params).await?.get(0))
                    })
                    .await?;
                let mut generations = self.generations();
                if inserted == 1 {
                    generations.insert(entry.transaction().get(), 1);
                } else if !generations.contains_key(&entry.transaction().get()) {
                    // The id exists and is not ours.
                    drop(generations);
                    return Err(self.fenced(entry.transaction()));
                }
                Ok(())
            }
            EntryKind::Resolved => {
                let resolved: i64 = self
                    .with_conn(slot, async |c: &Conn| {
                        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 7] =
                            [&tx, &owner, &step, &code, &payload, &json, &step_name];
                        Ok(c.client.query_one(&c.statements.resolve, &params).await?.get(0))
                    })
                    .await?;
                self.generations().remove(&entry.transaction().get());
                if resolved == 0 {
                    return Err(PostgresJournalError::NotFound { transaction: entry.transaction() });
                }
                Ok(())
            }
            _ => {
                let Some(generation) = self.generation(entry.transaction()) else {
                    // Not held here: ended (a decision after its commit is
                    // refused as such), or another instance's.
                    if let Some(held) = self.other_decision(entry.transaction(), kind).await? {
                        return Err(PostgresJournalError::AlreadyDecided { transaction: entry.transaction(), held });
                    }
                    return Err(self.fenced(entry.transaction()));
                };
                let reason = String::from_utf8_lossy(&payload).into_owned();
                let appended = self
                    .with_conn(slot, async |c: &Conn| {
                        let row = if kind == EntryKind::Stuck {
                            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
                                [&tx, &owner, &step, &code, &payload, &json, &step_name, &generation, &reason];
                            c.client.query_one(&c.statements.append_stuck, &params).await?
                        } else {
                            let statement =
                                if kind.ends_transaction() { &c.statements.append_end } else { &c.statements.append };
                            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] =
                                [&tx, &owner, &step, &code, &payload, &json, &step_name, &generation];
                            c.client.query_one(statement, &params).await?
                        };
                        Ok((row.get(0), row.get(1)))
                    })
                    .await;
                let (ours, exists): (i64, bool) = match appended {
                    // One decision per transaction: the other one is there.
                    Err(error) if kind.is_decision() && error.is_second_decision() => {
                        let held = if kind == EntryKind::Committed { EntryKind::Aborted } else { EntryKind::Committed };
                        if held == EntryKind::Committed {
                            // It is over: committed.
                            self.generations().remove(&entry.transaction().get());
                        }
                        return Err(PostgresJournalError::AlreadyDecided { transaction: entry.transaction(), held });
                    }
                    appended => appended?,
                };
                if ours == 0 {
                    self.generations().remove(&entry.transaction().get());
                    return Err(if exists {
                        self.fenced(entry.transaction())
                    } else {
                        PostgresJournalError::NotFound { transaction: entry.transaction() }
                    });
                }
                // A stuck transaction is let go too: the next recovery
                // pass claims it again (it is still this owner's).
                if kind.ends_transaction() || kind == EntryKind::Stuck {
                    self.generations().remove(&entry.transaction().get());
                }
                Ok(())
            }
        }
    }

    fn decided(error: &PostgresJournalError) -> Option<EntryKind> {
        match error {
            PostgresJournalError::AlreadyDecided { held, .. } => Some(*held),
            _ => None,
        }
    }

    async fn next_unfinished(
        &self,
        after: Option<TransactionId>,
    ) -> Result<Option<TransactionId>, PostgresJournalError> {
        let after = after.map_or(-1, to_sql);
        let owner = self.inner.owner.as_str();
        let epochs = self.inner.ids.epochs();
        let held: Vec<i64> = self.generations().keys().map(|&tx| tx as i64).collect();
        let claimed = self
            .with_conn(self.slot(true), async |c: &Conn| {
                let row = c.client.query_opt(&c.statements.claim, &[&owner, &after, &epochs, &held]).await?;
                Ok(row.map(|row| (row.get::<_, i64>(0), row.get::<_, i64>(1))))
            })
            .await?;
        Ok(claimed.map(|(tx, generation)| {
            let id = TransactionId::new(tx as u64);
            self.generations().insert(id.get(), generation);
            id
        }))
    }

    async fn read(
        &self,
        id: TransactionId,
        visit: &mut dyn FnMut(StoredEntry<'_>),
    ) -> Result<(), PostgresJournalError> {
        let tx = to_sql(id);
        let rows = self
            .with_conn(&self.inner.reader, async |c: &Conn| c.client.query(&c.statements.read, &[&tx]).await)
            .await?;
        for row in &rows {
            let (step, kind, payload) = stored(row)?;
            visit(StoredEntry { step, kind, payload });
        }
        Ok(())
    }

    /// Taken only by the instance that holds the transaction (the one whose
    /// recovery claimed it).
    async fn take_retry_request(&self, id: TransactionId) -> Result<bool, PostgresJournalError> {
        let tx = to_sql(id);
        let owner = self.inner.owner.as_str();
        let changed = self
            .with_conn(self.slot(true), async |c: &Conn| {
                c.client
                    .execute(
                        "UPDATE tm_transactions SET retry_requested = false
                         WHERE tx = $1 AND owner = $2 AND retry_requested",
                        &[&tx, &owner],
                    )
                    .await
            })
            .await?;
        Ok(changed > 0)
    }
}

/// Transaction ids `epoch << 32 | counter`. When the counter runs out the
/// spare epoch (taken at connect) takes over and a new spare is fetched in
/// the background: `next_id` never waits for the database.
struct Ids {
    last: AtomicU64,
    spare: Mutex<Option<u32>>,
    epochs: Mutex<Vec<i64>>,
}

impl Ids {
    fn new(epoch: u32, spare: u32) -> Self {
        Ids {
            last: AtomicU64::new(u64::from(epoch) << 32),
            spare: Mutex::new(Some(spare)),
            epochs: Mutex::new(vec![i64::from(epoch)]),
        }
    }

    fn epochs(&self) -> Vec<i64> {
        self.epochs.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn next(self: &Arc<Self>, target: &Target) -> u64 {
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            if last & u64::from(u32::MAX) == u64::from(u32::MAX) {
                let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
                if self.last.load(Ordering::Relaxed) == last {
                    // 2^32 ids before one round trip to the database
                    // fetched a new spare: not a program that exists.
                    let epoch = spare.take().expect("a new id epoch is fetched long before 2^32 more ids are used");
                    self.epochs.lock().unwrap_or_else(PoisonError::into_inner).push(i64::from(epoch));
                    self.last.store(u64::from(epoch) << 32, Ordering::Relaxed);
                    let ids = self.clone();
                    let target = target.clone();
                    tokio::spawn(async move {
                        loop {
                            if let Ok(client) = connect(&target).await {
                                if let Ok(epoch) = take_epoch(&client).await {
                                    *ids.spare.lock().unwrap_or_else(PoisonError::into_inner) = Some(epoch);
                                    return;
                                }
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    });
                }
                drop(spare);
                last = self.last.load(Ordering::Relaxed);
                continue;
            }
            match self.last.compare_exchange_weak(last, last + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return last + 1,
                Err(now) => last = now,
            }
        }
    }
}
