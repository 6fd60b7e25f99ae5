//! Retention: the writer thread deletes finished transactions in bounded
//! batches, inside the write transactions it runs anyway, and hands freed
//! pages back to the file system.
//!
//! What it never deletes: an unfinished transaction (running, owing a
//! rollback that failed for good, stuck), since only rows marked
//! `finished` are candidates; a transaction whose ending entry this
//! journal saw fail to commit (it may be durable all the same, and the
//! engine's `Aborted` that follows must be refused: see
//! `Journal::decided`), held in the writer's memory; and
//! a transaction of another journal that is alive (another process, or
//! another journal on the file in this one) that ended less than
//! [`FOREIGN_AGE`] ago (its own writer may be about to do that check).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OptionalExtension, Statement, params};
use transaction_manager_core::backend::{Pruned, Retention};

use crate::owner::Owners;
use crate::schema::unix_millis;

/// The wall clock entries are stamped with and retention measures age by.
pub(crate) type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The most transactions one prune deletes (in one write transaction):
/// bounds how long it delays the appends of its batch.
pub(crate) const PRUNE_BATCH: usize = 512;

/// How often the writer looks for something to prune when none of its own
/// transactions ended since it last looked.
pub(crate) const INTERVAL: Duration = Duration::from_secs(1);

/// A transaction of another journal that is alive is pruned only once it
/// has been over for this long.
pub(crate) const FOREIGN_AGE: Duration = Duration::from_secs(60);

/// Free pages (4 KiB each) above which a prune hands space back, and how
/// many it leaves for the next inserts.
const VACUUM_ABOVE: i64 = 1024;
const VACUUM_KEEP: i64 = 256;

/// The writer's retention: the policy, its clock, when to look, and its
/// statements, prepared once.
pub(crate) struct Pruner<'c> {
    pub(crate) retention: Retention,
    pub(crate) clock: WallClock,
    owner: i64,
    last: Option<Instant>,
    /// The last prune deleted a full batch: more is waiting.
    backlog: bool,
    /// One of this journal's transactions ended since the last prune.
    ended: bool,
    conn: &'c Connection,
    statements: Statements<'c>,
    /// Transactions whose ending entry's commit failed: never pruned by
    /// this journal (a handful: one per failed batch's ending entries).
    held: std::collections::HashSet<i64>,
    /// The file's owners, to tell whether another journal is alive
    /// (`None` where they cannot be told apart: then its transactions
    /// wait [`FOREIGN_AGE`]).
    owners: Option<Owners>,
}

struct Statements<'c> {
    /// `?1` cut, `?2` limit, `?3`, `?4` after this (finished_at, tx).
    older_than: Statement<'c>,
    /// `?1` how many newer ones to skip: the oldest of the newest ones kept.
    boundary: Statement<'c>,
    /// `?1`, `?2` the boundary, `?3` limit, `?4`, `?5` after this
    /// (finished_at, tx).
    before: Statement<'c>,
    floor: Statement<'c>,
    delete_entries: Statement<'c>,
    delete_transaction: Statement<'c>,
}

impl<'c> Pruner<'c> {
    /// A pruner for the writer of `owner`, on `conn`.
    pub(crate) fn new(
        conn: &'c Connection,
        owner: i64,
        owners: Option<Owners>,
        retention: Retention,
    ) -> rusqlite::Result<Pruner<'c>> {
        let statements = Statements {
            older_than: conn.prepare(
                "SELECT tx, owner, finished_at FROM tm_transactions
                 WHERE finished = 1 AND finished_at <= ?1 AND (finished_at, tx) > (?3, ?4)
                 ORDER BY finished_at, tx LIMIT ?2",
            )?,
            boundary: conn.prepare(
                "SELECT finished_at, tx FROM tm_transactions WHERE finished = 1
                 ORDER BY finished_at DESC, tx DESC LIMIT 1 OFFSET ?1",
            )?,
            before: conn.prepare(
                "SELECT tx, owner, finished_at FROM tm_transactions
                 WHERE finished = 1 AND (finished_at, tx) < (?1, ?2) AND (finished_at, tx) > (?4, ?5)
                 ORDER BY finished_at, tx LIMIT ?3",
            )?,
            // `seq` never goes back, even when the last rows go.
            floor: conn.prepare(
                "UPDATE tm_meta SET value = max(value, (SELECT coalesce(max(seq), 0) FROM tm_entries))
                 WHERE key = 'seq_floor'",
            )?,
            delete_entries: conn.prepare("DELETE FROM tm_entries WHERE tx = ?1")?,
            delete_transaction: conn.prepare("DELETE FROM tm_transactions WHERE tx = ?1 AND finished = 1")?,
        };
        Ok(Pruner {
            retention,
            clock: Arc::new(SystemTime::now),
            owner,
            last: None,
            backlog: false,
            ended: false,
            conn,
            statements,
            held: std::collections::HashSet::new(),
            owners,
        })
    }

    /// Now, by the journal's clock, in Unix milliseconds.
    pub(crate) fn now(&self) -> i64 {
        unix_millis((self.clock)())
    }

    /// Whether to look for something to prune now.
    pub(crate) fn due(&self) -> bool {
        self.retention.deletes() && (self.backlog || self.ended || self.last.is_none_or(|at| at.elapsed() >= INTERVAL))
    }

    /// One of this journal's transactions ended (its entry committed).
    pub(crate) fn ended(&mut self) {
        self.ended = true;
    }

    /// Keeps transaction `tx` whatever the retention: its ending entry's
    /// commit failed, and may have been durable all the same.
    pub(crate) fn hold(&mut self, tx: i64) {
        self.held.insert(tx);
    }

    /// One bounded prune, in the write transaction the caller holds.
    pub(crate) fn run(&mut self) -> rusqlite::Result<Pruned> {
        let pruned = self.prune(self.retention, PRUNE_BATCH)?;
        self.last = Some(Instant::now());
        self.ended = false;
        self.backlog = pruned.transactions >= PRUNE_BATCH as u64;
        Ok(pruned)
    }

    /// Whether anything is there to prune (a read, outside a write
    /// transaction: an idle writer takes the write lock only when it has
    /// work).
    pub(crate) fn has_work(&mut self) -> rusqlite::Result<bool> {
        Ok(!self.candidates(self.retention, 1)?.is_empty())
    }

    /// Prunes by `retention` until nothing is left, one write transaction
    /// per batch (an operator's prune).
    pub(crate) fn prune_all(&mut self, retention: Retention) -> rusqlite::Result<Pruned> {
        let conn = self.conn;
        let mut total = Pruned::default();
        loop {
            let pruned = crate::schema::in_write_transaction(conn, || self.prune(retention, PRUNE_BATCH))?;
            total = total + pruned;
            self.vacuum(pruned);
            if pruned.transactions < PRUNE_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Hands free pages back to the file system once there are many (a
    /// burst of deletions), keeping some for the next inserts. Does nothing
    /// on a file without `auto_vacuum` (created by an older version): there
    /// the free pages are only reused.
    pub(crate) fn vacuum(&self, pruned: Pruned) {
        if pruned.transactions == 0 {
            return;
        }
        let free: i64 = self.conn.query_row("PRAGMA freelist_count", [], |row| row.get(0)).unwrap_or(0);
        if free > VACUUM_ABOVE {
            // Stepped to the end: the pragma frees one page per step
            // (`execute_batch` steps once). Space not handed back is no
            // loss: the pages are reused.
            let _ = self.conn.prepare(&format!("PRAGMA incremental_vacuum({})", free - VACUUM_KEEP)).and_then(
                |mut pragma| {
                    let mut steps = pragma.raw_query();
                    while steps.next()?.is_some() {}
                    Ok(())
                },
            );
        }
    }

    /// Deletes up to `limit` finished transactions that `retention` lets go
    /// now, with their entries.
    fn prune(&mut self, retention: Retention, limit: usize) -> rusqlite::Result<Pruned> {
        let txs = self.candidates(retention, limit)?;
        let mut pruned = Pruned::default();
        if txs.is_empty() {
            return Ok(pruned);
        }
        self.statements.floor.execute([])?;
        for tx in txs {
            pruned.entries += self.statements.delete_entries.execute([tx])? as u64;
            pruned.transactions += self.statements.delete_transaction.execute([tx])? as u64;
        }
        Ok(pruned)
    }

    /// The finished transactions `retention` lets go now, oldest first, at
    /// most `limit`, without the held ones and the young ones of other
    /// journals that are alive.
    fn candidates(&mut self, retention: Retention, limit: usize) -> rusqlite::Result<Vec<i64>> {
        let now = self.now();
        // The newest finished transaction `retention` lets go is before
        // this (finished_at, tx), exclusive.
        let until = match retention {
            Retention::DeleteAtOnce => (now, i64::MAX),
            Retention::KeepFor(keep) => (now.saturating_sub(millis(keep)), i64::MAX),
            Retention::KeepLast(n) => match n.checked_sub(1) {
                // The oldest of the newest `n` finished ones: those before
                // it go.
                None => (i64::MAX, i64::MAX),
                Some(skip) => {
                    let skip = i64::try_from(skip).unwrap_or(i64::MAX);
                    let boundary = self
                        .statements
                        .boundary
                        .query_row([skip], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?)))
                        .optional()?;
                    // Fewer than `n`: all kept.
                    let Some(boundary) = boundary else { return Ok(Vec::new()) };
                    boundary
                }
            },
            _ => return Ok(Vec::new()),
        };
        let foreign_cut = now.saturating_sub(millis(FOREIGN_AGE));
        // Whether each other owner is alive, asked once per prune.
        let mut alive: Vec<(i64, bool)> = Vec::new();
        let mut out = Vec::with_capacity(limit.min(PRUNE_BATCH));
        // Read page after page, past the rows left alone (held, or young
        // and of a live journal), until `limit` are found or none is left:
        // rows left alone at the front never stop the ones behind them.
        let page = i64::try_from(limit.max(64)).unwrap_or(i64::MAX);
        let mut after = (i64::MIN, i64::MIN);
        loop {
            let row =
                |row: &rusqlite::Row<'_>| Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?));
            let rows: Vec<(i64, i64, i64)> = match retention {
                Retention::KeepLast(_) => self
                    .statements
                    .before
                    .query_map(params![until.0, until.1, page, after.0, after.1], row)?
                    .collect::<rusqlite::Result<_>>()?,
                _ => self
                    .statements
                    .older_than
                    .query_map(params![until.0, page, after.0, after.1], row)?
                    .collect::<rusqlite::Result<_>>()?,
            };
            let last_page = rows.len() < usize::try_from(page).unwrap_or(usize::MAX);
            for (tx, owner, finished_at) in rows {
                after = (finished_at, tx);
                if self.held.contains(&tx) {
                    continue;
                }
                if owner != self.owner && finished_at > foreign_cut {
                    let known = alive.iter().find(|(o, _)| *o == owner).map(|(_, alive)| *alive);
                    let is_alive = known.unwrap_or_else(|| {
                        // An owner that cannot be checked counts as alive.
                        let is_alive = self.owners.as_ref().is_none_or(|owners| owners.is_alive(owner).unwrap_or(true));
                        alive.push((owner, is_alive));
                        is_alive
                    });
                    if is_alive {
                        continue;
                    }
                }
                out.push(tx);
                if out.len() == limit {
                    return Ok(out);
                }
            }
            if last_page {
                return Ok(out);
            }
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
