//! A small application for the tests: steps create resources and rollbacks
//! delete them, each writing an effect row in the same database, fenced by
//! the transaction's owner and generation (the way a real store would take
//! the journal's fence).

#![allow(dead_code)]

use transaction_manager::{
    Rollback, TokioClock, TransactionManager,
    abandon::Unattended,
    journal::{IdempotencyKey, Journaled, Json},
};
use transaction_manager_postgres::PostgresJournal;

pub type Manager = TransactionManager<TokioClock, (), Unattended, Journaled<PostgresJournal, Json<1>>>;

pub fn manager(journal: PostgresJournal) -> Manager {
    TransactionManager::new(TokioClock::new()).with_journal(journal, Json::<1>)
}

/// In `public`: the application's own table, beside the journal's schema
/// (`TM_PG_LEAST_PRIVILEGE`).
pub const EFFECTS: &str = "CREATE TABLE IF NOT EXISTS public.effects (
    seq bigserial PRIMARY KEY, key text NOT NULL, what text NOT NULL, owner text NOT NULL, generation bigint NOT NULL)";

/// What steps and rollbacks write to.
pub struct App {
    pub journal: PostgresJournal,
    pub client: tokio_postgres::Client,
    /// Print each effect once it is committed (the worker processes).
    pub report: bool,
}

#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.0)
    }
}

impl std::error::Error for Refused {}

impl App {
    pub async fn connect(journal: PostgresJournal) -> App {
        let (client, connection) = journal.config().connect(journal.tls_connector()).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client.batch_execute(EFFECTS).await.unwrap();
        App { journal, client, report: false }
    }

    /// Writes an effect if the transaction is still this instance's at the
    /// generation it holds: the fence.
    pub async fn effect(&self, what: &str, key: IdempotencyKey) -> Result<(), Refused> {
        let tx = key.transaction().get() as i64;
        let Some(generation) = self.journal.generation(key.transaction()) else {
            return Err(Refused(format!("{what} {key}: not ours")));
        };
        let owner = self.journal.owner();
        let written = self
            .client
            .execute(
                "WITH t AS (SELECT tx FROM tm_transactions WHERE tx = $1 AND owner = $2 AND generation = $3 FOR SHARE)
                 INSERT INTO effects (key, what, owner, generation) SELECT $4, $5, $2, $3 FROM t",
                &[&tx, &owner, &generation, &key.to_string(), &what],
            )
            .await
            .map_err(|e| Refused(format!("{what} {key}: {e}")))?;
        if written == 0 {
            return Err(Refused(format!("{what} {key}: fenced")));
        }
        if self.report {
            println!("{what} {key}");
        }
        Ok(())
    }

    pub async fn effects(&self, what: &str) -> Vec<(String, String, i64)> {
        self.client
            .query("SELECT key, owner, generation FROM effects WHERE what = $1 ORDER BY seq", &[&what])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Undo {
    Delete(IdempotencyKey),
}

impl Rollback<App> for Undo {
    type Error = Refused;

    async fn rollback(&mut self, app: &mut App) -> Result<(), Refused> {
        let Undo::Delete(key) = self;
        app.effect("delete", *key).await
    }
}
