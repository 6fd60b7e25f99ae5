//! The one thread that writes: it owns the write connection and commits
//! every request waiting in its channel in one SQLite transaction (group
//! commit: one fsync for the whole batch), then answers them all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rusqlite::{Connection, OptionalExtension, Statement, params};
use transaction_manager_core::backend::{EntryKind, Retention, TransactionId};

use crate::prune::{Pruner, WallClock};
use crate::{SqliteJournalError, oneshot, schema};
use transaction_manager_core::backend::Pruned;

/// The most rows one SQLite transaction takes: bounds how long the first
/// appender of a big batch waits.
const MAX_BATCH: usize = 1024;

/// One entry, encoded by the appender.
pub(crate) struct Row {
    pub(crate) tx: i64,
    pub(crate) step: i64,
    pub(crate) kind: u8,
    /// `Entry::is_durable`: its appender waits for the commit.
    pub(crate) durable: bool,
    /// `EntryKind::ends_transaction`: the transaction is marked finished.
    pub(crate) ends: bool,
    pub(crate) payload: Vec<u8>,
    /// Set by the writer: a decision refused because the transaction
    /// holds this other one (nothing was written).
    pub(crate) refused: Option<EntryKind>,
}

/// What the writer thread is asked to do.
pub(crate) enum Request {
    /// Write a row; answer when it is committed (`Some`: durable entries),
    /// or not at all (lazy ones, already acknowledged).
    Append(Row, Option<oneshot::Sender>),
    /// Answer when everything sent before is committed.
    Flush(oneshot::Sender),
    /// Take a new epoch (the id counter ran out).
    NewEpoch(SyncSender<Result<u32, SqliteJournalError>>),
    /// Take over every unfinished transaction of the gone owner `from`;
    /// answers whether `tx` is now this journal's (another journal may have
    /// taken it first, or it finished).
    Claim { tx: i64, from: i64, reply: oneshot::Sender<bool> },
    /// Prune from now on by this retention.
    Retention(Retention),
    /// Stamp entries and measure retention by this clock from now on.
    Clock(WallClock),
    /// Prune by this retention until nothing is left (an operator's prune).
    Prune(Retention, oneshot::Sender<Pruned>),
    /// Set (an operator's request) or take (recovery) `tx`'s request to
    /// retry its owed rollbacks now; answers whether the row changed.
    Retry { tx: i64, request: bool, reply: oneshot::Sender<bool> },
}

/// Lazy rows sent but not committed yet, counted per transaction: a read
/// that could see one of them waits for it (a flush), so a journal reads its
/// own writes, and a read that cannot (recovery reading the next
/// transaction while the last one's `Undone` rows are on their way) does
/// not wait for an fsync.
pub(crate) type PendingLazy = Arc<Pending>;

/// See [`PendingLazy`].
#[derive(Default)]
pub(crate) struct Pending(Mutex<BTreeMap<u64, usize>>);

impl Pending {
    fn counts(&self) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One more lazy row of transaction `tx` on its way.
    pub(crate) fn add(&self, tx: u64) {
        *self.counts().entry(tx).or_default() += 1;
    }

    /// One lazy row of transaction `tx` committed (or never sent).
    pub(crate) fn remove(&self, tx: u64) {
        let mut counts = self.counts();
        if let Some(count) = counts.get_mut(&tx) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&tx);
            }
        }
    }

    /// Whether a lazy row of a transaction in `range` is on its way.
    pub(crate) fn any_in(&self, range: impl core::ops::RangeBounds<u64>) -> bool {
        self.counts().range(range).next().is_some()
    }
}

/// The writer thread's body: runs until every sender is dropped, then
/// writes what is left and returns. New transactions are `owner`'s.
pub(crate) fn run(
    conn: Connection,
    owner: i64,
    owners: Option<crate::owner::Owners>,
    mut mark: Option<crate::hwm::Mark>,
    requests: Receiver<Request>,
    pending_lazy: PendingLazy,
) {
    let (mut statements, mut pruner) = match Statements::prepare(&conn, owner)
        .and_then(|s| Ok((s, Pruner::new(&conn, owner, owners, DEFAULT_RETENTION)?)))
    {
        Ok(prepared) => prepared,
        // Answered by dropping the replies: `WriterGone`. (Unreachable in
        // practice: `open` created these tables just before.)
        Err(_) => return,
    };
    // Lazy rows of a batch that failed: already acknowledged, so they are
    // written again with the next batch instead of being dropped.
    let mut carried: Vec<Row> = Vec::new();
    while let Some(first) = next_request(&requests, &conn, &mut pruner) {
        let mut rows = std::mem::take(&mut carried);
        // Each reply, with the row it answers for (a flush answers for none).
        let mut waiting = Vec::new();
        let mut take = |request: Request, rows: &mut Vec<Row>| match request {
            Request::Append(row, reply) => {
                if let Some(reply) = reply {
                    waiting.push((Some(rows.len()), reply));
                }
                rows.push(row);
            }
            Request::Flush(reply) => waiting.push((None, reply)),
            Request::NewEpoch(reply) => {
                // Rare (every 2^32 ids): its own transaction, at once.
                let _ = reply.send(schema::allocate_epoch(&conn));
            }
            Request::Claim { tx, from, reply } => {
                // Its own transaction, at once: the answer says who rolls
                // the transaction back.
                reply.send(claim(&conn, tx, from, owner));
            }
            Request::Retention(retention) => pruner.retention = retention,
            Request::Clock(clock) => pruner.clock = clock,
            Request::Prune(retention, reply) => {
                reply.send(pruner.prune_all(retention).map_err(SqliteJournalError::from_sqlite));
            }
            Request::Retry { tx, request, reply } => reply.send(retry(&conn, tx, request)),
        };
        take(first, &mut rows);
        while rows.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => take(request, &mut rows),
                Err(_) => break,
            }
        }
        match statements.write(&conn, &mut rows, &mut pruner) {
            Ok((pruned, last_seq)) => {
                pruner.vacuum(pruned);
                if rows.iter().any(|row| row.ends && row.refused.is_none()) {
                    pruner.ended();
                }
                // The high-water mark, before anyone is told: a commit
                // later lost from a damaged WAL is caught at the next open.
                // (A failure here loses no entry, only that check.)
                if let (Some(mark), false) = (&mut mark, rows.is_empty()) {
                    if let Err(error) = mark.set(last_seq) {
                        log::warn!("the journal's high-water mark could not be written: {error}");
                    }
                }
                for row in rows.iter().filter(|row| row.is_lazy()) {
                    pending_lazy.remove(schema::from_sql(row.tx));
                }
                for (at, reply) in waiting {
                    let refused = at.and_then(|at| Some((rows[at].tx, rows[at].refused?)));
                    reply.send(match refused {
                        Some((tx, held)) => Err(SqliteJournalError::AlreadyDecided {
                            transaction: TransactionId::new(schema::from_sql(tx)),
                            held,
                        }),
                        None => Ok(()),
                    });
                }
            }
            Err(error) => {
                let error = SqliteJournalError::from_sqlite(error);
                for row in rows.iter().filter(|row| row.ends) {
                    pruner.hold(row.tx);
                }
                carried = rows.into_iter().filter(Row::is_lazy).collect();
                for (_, reply) in waiting {
                    reply.send(Err(error.clone()));
                }
            }
        }
    }
    // Every sender is gone (the journal was dropped): one last try for lazy
    // rows a failed batch left; nobody is left to tell if it fails too.
    if !carried.is_empty() {
        let _ = statements.write(&conn, &mut carried, &mut pruner);
    }
}

/// The retention of a journal nobody set one on.
pub(crate) const DEFAULT_RETENTION: Retention = Retention::KeepFor(std::time::Duration::from_secs(7 * 24 * 60 * 60));

/// The next request; while none comes, prunes when there is something to
/// prune (a retention that keeps for a while finds work as time passes).
/// `None` once every sender is gone.
fn next_request(requests: &Receiver<Request>, conn: &Connection, pruner: &mut Pruner<'_>) -> Option<Request> {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        if !pruner.retention.deletes() {
            return requests.recv().ok();
        }
        match requests.recv_timeout(crate::prune::INTERVAL) {
            Ok(request) => return Some(request),
            Err(RecvTimeoutError::Disconnected) => return None,
            Err(RecvTimeoutError::Timeout) => {
                // An idle prune takes the write lock only when it has work;
                // a failure is left to the next one (and to the appends,
                // which report it).
                if pruner.due() && pruner.has_work().unwrap_or(false) {
                    if let Ok(pruned) = schema::in_write_transaction(conn, || pruner.run()) {
                        pruner.vacuum(pruned);
                    }
                }
            }
        }
    }
}

/// Sets (`request`: answers whether `tx` is unfinished) or takes (answers
/// whether there was a request: of two recoveries taking it at once, one
/// gets it) the retry request of transaction `tx`, in its own write
/// transaction.
fn retry(conn: &Connection, tx: i64, request: bool) -> Result<bool, SqliteJournalError> {
    let statement = if request {
        "UPDATE tm_transactions SET retry_requested = 1 WHERE tx = ?1 AND finished = 0"
    } else {
        "UPDATE tm_transactions SET retry_requested = 0 WHERE tx = ?1 AND retry_requested = 1"
    };
    schema::in_write_transaction(conn, || Ok(conn.prepare(statement)?.execute([tx])? > 0))
}

/// Takes every unfinished transaction of the gone owner `from` over for
/// `owner`, in one write transaction (one fsync, however many it left),
/// and answers whether `tx` is now `owner`'s: one compare-and-set per row,
/// so of two journals claiming at once exactly one gets each transaction.
/// (One claim per transaction cost an fsync each: recovering 10,000
/// transactions of a killed process took 4.8 s, against 0.16 s before
/// owners existed.)
fn claim(conn: &Connection, tx: i64, from: i64, owner: i64) -> Result<bool, SqliteJournalError> {
    schema::in_write_transaction(conn, || {
        conn.prepare("UPDATE tm_transactions SET owner = ?1 WHERE owner = ?2 AND finished = 0")?
            .execute([owner, from])?;
        let now: Option<i64> = conn
            .prepare("SELECT owner FROM tm_transactions WHERE tx = ?1 AND finished = 0")?
            .query_row([tx], |row| row.get(0))
            .optional()?;
        Ok::<_, SqliteJournalError>(now == Some(owner))
    })
}

/// The writer's statements, prepared once.
struct Statements<'c> {
    owner: i64,
    insert: Statement<'c>,
    /// The last `seq` handed out ([`schema::LAST_SEQ`]).
    last_seq: Statement<'c>,
    open: Statement<'c>,
    finish: Statement<'c>,
    /// `?1` tx, `?2` kind: whether the transaction holds that decision.
    decided: Statement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(conn: &'c Connection, owner: i64) -> rusqlite::Result<Self> {
        Ok(Statements {
            owner,
            // First write kept: a repeated entry is the same entry. Only
            // that conflict is ignored: one on `seq` (which cannot happen:
            // it is numbered from the last one inside the write
            // transaction) would be an error, never a lost entry.
            insert: conn.prepare(
                "INSERT INTO tm_entries (seq, tx, step, kind, payload, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (tx, step, kind) DO NOTHING",
            )?,
            last_seq: conn.prepare(schema::LAST_SEQ)?,
            // A transaction's owner is the journal that wrote its first
            // entry; a claim moves it.
            open: conn.prepare("INSERT OR IGNORE INTO tm_transactions (tx, finished, owner) VALUES (?1, 0, ?2)")?,
            finish: conn.prepare(
                "INSERT INTO tm_transactions (tx, finished, owner, finished_at) VALUES (?1, 1, ?2, ?3)
                 ON CONFLICT (tx) DO UPDATE SET finished = 1, finished_at = coalesce(finished_at, ?3)",
            )?,
            decided: conn.prepare("SELECT 1 FROM tm_entries WHERE tx = ?1 AND step = -1 AND kind = ?2")?,
        })
    }

    /// Writes `rows` in one transaction: one fsync at its commit. A
    /// decision for a transaction that holds the other one is not written
    /// (`refused`): checked inside the write transaction, which the writer
    /// thread serialises in this process and `BEGIN IMMEDIATE` across
    /// processes, so of two decisions the first one stays. A prune that is
    /// due runs first, in the same transaction (before the rows, so it
    /// never sees a transaction that ends in this batch), and what it
    /// deleted is returned, with the last `seq` once the rows are in (what
    /// the high-water mark records: no second query for it).
    fn write(
        &mut self,
        conn: &Connection,
        rows: &mut [Row],
        pruner: &mut Pruner<'_>,
    ) -> rusqlite::Result<(Pruned, u64)> {
        if rows.is_empty() {
            return Ok((Pruned::default(), 0));
        }
        schema::in_write_transaction(conn, || {
            let pruned = if pruner.due() { pruner.run()? } else { Pruned::default() };
            let at = pruner.now();
            let mut seq: i64 = self.last_seq.query_row([], |row| row.get(0))?;
            for row in rows.iter_mut() {
                row.refused = None;
                if let Some(other) = other_decision(row.kind) {
                    if self.decided.query_row(params![row.tx, other.code()], |_| Ok(())).optional()?.is_some() {
                        row.refused = Some(other);
                        continue;
                    }
                }
                if self.insert.execute(params![seq + 1, row.tx, row.step, row.kind, row.payload, at])? == 1 {
                    seq += 1;
                }
                if row.ends {
                    self.finish.execute([row.tx, self.owner, at])?;
                } else {
                    self.open.execute([row.tx, self.owner])?;
                }
            }
            Ok((pruned, u64::try_from(seq).unwrap_or(0)))
        })
    }
}

impl Row {
    fn is_lazy(&self) -> bool {
        !self.durable
    }
}

/// For a decision's kind code, the other decision.
fn other_decision(kind: u8) -> Option<EntryKind> {
    match EntryKind::from_code(kind)? {
        EntryKind::Committed => Some(EntryKind::Aborted),
        EntryKind::Aborted => Some(EntryKind::Committed),
        _ => None,
    }
}
