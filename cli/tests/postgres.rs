//! `tmctl --postgres` against a real server (started by the test, as the
//! journal's own tests do): transactions made by the engine listed and
//! shown, a stuck one asked to retry and then resolved, finished ones pruned; a server that refuses
//! the connection and a wrong password are one clear line (the password
//! never shown) and a non-zero exit.

#[path = "../../journal-postgres/tests/common/cluster.rs"]
mod cluster;
mod common;

use cluster::{Cluster, Setup};
use common::{fails, json, states, tmctl};
use serde::{Deserialize, Serialize};
use transaction_manager::journal::{Entry, EntryKind, Journal, Json, Retention};
use transaction_manager::{ManualClock, Rollback, StepError, TransactionId, TransactionManager};
use transaction_manager_postgres::{PostgresJournal, PostgresOptions};

#[derive(Debug, Serialize, Deserialize)]
struct Delete(String);

impl Rollback<()> for Delete {
    type Error = std::io::Error;

    async fn rollback(&mut self, _: &mut ()) -> Result<(), std::io::Error> {
        Ok(())
    }
}

#[test]
fn tmctl_lists_shows_retries_resolves_and_prunes_a_postgres_journal() {
    let Some(cluster) = Cluster::start("tmctl") else { return };
    let url = cluster.url();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (journal, committed, rolled_back, stuck) = runtime.block_on(async {
        let journal =
            PostgresJournal::connect(&url, PostgresOptions::new().retention(Retention::KeepAll)).await.unwrap();
        let clock = ManualClock::new();
        let manager = TransactionManager::new(&clock).with_journal(journal.clone(), Json::<1>);
        let mut ids = Vec::new();
        for fail in [false, true] {
            let mut id = None;
            let _ = manager
                .transaction("provision")
                .unbounded::<Delete>()
                .run(async |tx| {
                    id = Some(tx.id());
                    tx.step("create_user")
                        .execute(|| async { Ok::<_, std::io::Error>("user-1".to_string()) })
                        .undo(|user| Delete(user.clone()))
                        .await?;
                    if fail {
                        tx.step("create_vm")
                            .run(|| async { Err::<(), _>(std::io::Error::other("no capacity")) })
                            .await?;
                    }
                    Ok::<_, StepError<std::io::Error>>(())
                })
                .await;
            ids.push(id.unwrap());
        }
        let stuck = journal.next_id();
        journal.append(&Entry::new_raw(stuck, None, EntryKind::Begin, b"import")).await.unwrap();
        journal.append(&Entry::new_raw(stuck, None, EntryKind::Stuck, b"undecodable")).await.unwrap();
        (journal, ids[0], ids[1], stuck)
    });
    let id = |id: TransactionId| id.to_string();

    let list = json(&["list", "--postgres", &url]);
    assert_eq!(
        states(&list),
        [
            (id(committed), "committed".to_string()),
            (id(rolled_back), "rolled_back".to_string()),
            (id(stuck), "stuck".to_string()),
        ]
    );
    // The stuck one is held by the instance that wrote it, its lease running.
    let held = &list["transactions"][2]["held_by"];
    assert_eq!((held["owner"].as_str(), held["alive"].as_bool()), (Some(journal.owner()), Some(true)), "{held}");
    assert!(held["lease_until"].as_u64().is_some(), "{held}");
    assert_eq!(list["transactions"][0]["held_by"], serde_json::Value::Null);
    let shown = json(&["show", "--postgres", &url, &id(rolled_back)]);
    assert_eq!(shown["steps"][0]["name"], "create_user");
    assert_eq!(shown["steps"][0]["state"], "undone");
    assert_eq!(shown["steps"][0]["undo"]["json"], "user-1");
    assert!(shown["entries"][0]["at"].as_u64().is_some(), "{shown}");

    // A retry request, taken once by the instance that holds it (its next
    // recovery).
    let asked = json(&["retry", "--postgres", &url, &id(stuck)]);
    assert_eq!(asked["retry_requested"], id(stuck));
    runtime.block_on(async {
        assert!(journal.take_retry_request(stuck).await.unwrap());
        assert!(!journal.take_retry_request(stuck).await.unwrap(), "one request, one try");
    });
    let over = fails(&["retry", "--postgres", &url, &id(committed)], 1);
    assert!(over.contains("already over (committed)"), "{over}");

    let resolved = json(&["resolve", "--postgres", &url, &id(stuck), "--reason", "import rows deleted by hand"]);
    assert_eq!(resolved["resolved"], id(stuck));
    let shown = json(&["show", "--postgres", &url, &id(stuck)]);
    assert_eq!(
        (shown["state"].as_str(), shown["resolution"].as_str()),
        (Some("resolved"), Some("import rows deleted by hand"))
    );

    let pruned = json(&["prune", "--postgres", &url, "--delete-at-once"]);
    assert_eq!(pruned["pruned"]["transactions"], 3);
    assert_eq!(states(&json(&["list", "--postgres", &url])), []);
}

#[test]
fn a_refused_connection_and_a_wrong_password_are_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("tm-cli-no-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = tmctl(&["list", "--postgres", &format!("host={} port=5432 user=x dbname=x", dir.display())]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("connect"), "{stderr}");

    let Some(cluster) = Cluster::start_with(
        "tmctl-password",
        Setup {
            tcp: true,
            conf: vec!["password_encryption = 'scram-sha-256'".into()],
            hba: Some("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n".into()),
            ..Setup::default()
        },
    ) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        cluster
            .client()
            .await
            .batch_execute("CREATE ROLE app LOGIN SUPERUSER PASSWORD 'right-Secret-4711'")
            .await
            .unwrap();
    });
    let wrong = "wrong-Secret-0815";
    let url = format!("host=127.0.0.1 port={} user=app dbname=postgres password={wrong}", cluster.port());
    let out = tmctl(&["list", "--postgres", &url]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("password authentication failed"), "{stderr}");
    assert!(!stderr.contains(wrong) && !String::from_utf8_lossy(&out.stdout).contains(wrong));
}
