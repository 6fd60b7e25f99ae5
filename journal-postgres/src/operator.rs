//! The operator's view: stuck transactions with their steps, and resolving
//! one by hand.

use transaction_manager_core::backend::{EntryKind, TransactionId};

use crate::{PostgresJournal, PostgresJournalError};

/// A transaction recovery could not roll back (see
/// [`PostgresJournal::stuck`]).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StuckTransaction {
    /// Its id.
    pub id: TransactionId,
    /// Its operation name.
    pub operation: String,
    /// The instance holding it now.
    pub owner: String,
    /// The generation it is held at.
    pub generation: i64,
    /// Why recovery could not roll it back (the last `Stuck` reason).
    pub reason: String,
    /// Its steps, by index.
    pub steps: Vec<StuckStep>,
}

/// One step of a [`StuckTransaction`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StuckStep {
    /// The step's index.
    pub index: u32,
    /// Its name, from its undo record.
    pub name: Option<String>,
    /// The kinds of its entries, in order (`intent`, `done`, `undone`,
    /// `undo_failed`, …): `done` without `undone` is a rollback still owed;
    /// `undo_failed` is a rollback that failed for good.
    pub entries: Vec<String>,
    /// Its undo record as JSON, if its codec wrote JSON.
    pub undo: Option<String>,
}

impl PostgresJournal {
    /// Every unfinished transaction marked *stuck* (recovery could not
    /// decode what it owes), with its steps. Reads only: unlike the core's
    /// `TransactionManager::stuck`, it claims nothing.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal) -> Result<(), transaction_manager_postgres::PostgresJournalError> {
    /// for stuck in journal.stuck().await? {
    ///     println!("{} `{}` held by {}: {}", stuck.id, stuck.operation, stuck.owner, stuck.reason);
    ///     for step in &stuck.steps {
    ///         println!("  #{} {:?} {:?} undo {:?}", step.index, step.name, step.entries, step.undo);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn stuck(&self) -> Result<Vec<StuckTransaction>, PostgresJournalError> {
        let rows = self
            .reader_client(async |client| {
                client
                    .query(
                        "SELECT t.tx, t.operation, t.owner, t.generation, t.stuck, e.step, e.kind, e.step_name,
                                e.undo::text
                         FROM tm_transactions t LEFT JOIN tm_entries e ON e.tx = t.tx AND e.step >= 0
                         WHERE NOT t.finished AND t.stuck IS NOT NULL
                         ORDER BY t.tx, e.seq",
                        &[],
                    )
                    .await
            })
            .await?;
        let mut out: Vec<StuckTransaction> = Vec::new();
        for row in rows {
            let id = TransactionId::new(row.get::<_, i64>(0) as u64);
            if out.last().is_none_or(|t| t.id != id) {
                out.push(StuckTransaction {
                    id,
                    operation: row.get(1),
                    owner: row.get(2),
                    generation: row.get(3),
                    reason: row.get(4),
                    steps: Vec::new(),
                });
            }
            let Some(step) = row.get::<_, Option<i32>>(5) else { continue };
            let index = u32::try_from(step).map_err(|_| PostgresJournalError::Corrupt { what: "a negative step" })?;
            let kind: i16 = row.get(6);
            let kind = u8::try_from(kind)
                .ok()
                .and_then(EntryKind::from_code)
                .map_or_else(|| format!("unknown({kind})"), |k| k.as_str().to_owned());
            let transaction = out.last_mut().expect("pushed above");
            let at = match transaction.steps.iter().position(|s| s.index == index) {
                Some(at) => at,
                None => {
                    transaction.steps.push(StuckStep { index, name: None, entries: Vec::new(), undo: None });
                    transaction.steps.len() - 1
                }
            };
            let record = &mut transaction.steps[at];
            record.entries.push(kind);
            if let Some(name) = row.get::<_, Option<String>>(7) {
                record.name = Some(name);
            }
            if let Some(undo) = row.get::<_, Option<String>>(8) {
                record.undo = Some(undo);
            }
        }
        for transaction in &mut out {
            transaction.steps.sort_by_key(|s| s.index);
        }
        Ok(out)
    }

    /// Ends transaction `id` by hand (an operator dealt with what it owed):
    /// writes its `Resolved` entry, whoever holds it. The same as the
    /// core's `TransactionManager::resolve` on this journal.
    ///
    /// # Errors
    ///
    /// [`NotFound`](PostgresJournalError::NotFound) if the journal does not
    /// hold `id`, or the database could not be written.
    ///
    /// ```no_run
    /// # async fn f(journal: transaction_manager_postgres::PostgresJournal) -> Result<(), transaction_manager_postgres::PostgresJournalError> {
    /// for stuck in journal.stuck().await? {
    ///     // ... after dealing with what it owed by hand:
    ///     journal.resolve(stuck.id).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn resolve(&self, id: TransactionId) -> Result<(), PostgresJournalError> {
        use transaction_manager_core::backend::Journal;
        let entry = transaction_manager_core::backend::Entry::new_raw(id, None, EntryKind::Resolved, &[]);
        self.append(&entry).await
    }
}
