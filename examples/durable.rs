//! A crash in the middle of a transaction, and the recovery that follows.
//!
//! The program runs itself twice. The child provisions a user and a VM as
//! one journaled transaction (SQLite) and is killed with SIGKILL while its
//! third step is still running, so its in-memory rollback never happens.
//! The parent then restarts as a new process would: it opens the journal,
//! recovers, and prints what recovery rolled back. Cloud resources are
//! files in a temporary directory, so you can see them come and go.
//!
//! Run with `cargo run --example durable --features sqlite`. With
//! `-- --journal PATH` the journal is kept at `PATH` afterwards, for the
//! operator's tool: `cargo run -p transaction-manager-cli -- show --sqlite
//! PATH tx-…` shows the transaction, its steps and undo records (JSON) and
//! its timeline, from the crash to the recovery.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use transaction_manager::{
    Rollback, StepError, TokioClock, TransactionManager,
    journal::{Json, SqliteJournal},
    storage::Unbounded,
};

/// The fake cloud: one file per resource.
struct Cloud {
    dir: PathBuf,
}

impl Cloud {
    fn create(&self, name: &str) -> std::io::Result<String> {
        std::fs::write(self.dir.join(name), b"")?;
        Ok(name.to_string())
    }

    fn resources(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with("journal"))
            .collect();
        names.sort();
        names
    }
}

/// The undo records: plain data, so the journal can keep them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Undo {
    DeleteUser(String),
    DeleteVm(String),
}

impl Rollback<Cloud> for Undo {
    type Error = std::io::Error;

    async fn rollback(&mut self, cloud: &mut Cloud) -> Result<(), std::io::Error> {
        let (Undo::DeleteUser(name) | Undo::DeleteVm(name)) = self;
        // Idempotent: recovery may repeat a rollback whose end was not
        // recorded before a crash.
        match std::fs::remove_file(cloud.dir.join(&*name)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        println!("  rolled back: {self:?}");
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, dir, journal] = args.as_slice() {
        if flag == "--child" {
            return child(Path::new(dir), Path::new(journal)).await;
        }
    }
    let kept = match args.as_slice() {
        [] => None,
        [flag, path] if flag == "--journal" => Some(PathBuf::from(path)),
        _ => return Err("usage: durable [--journal PATH]".into()),
    };

    let dir = std::env::temp_dir().join(format!("tm-durable-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let journal_path = kept.clone().unwrap_or_else(|| dir.join("journal.db"));
    println!("1. A process provisions a user and a VM, journaled in {}", journal_path.display());
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--child")
        .arg(&dir)
        .arg(&journal_path)
        .stdout(Stdio::piped())
        .spawn()?;
    let lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
    for line in lines {
        let line = line?;
        println!("   child: {line}");
        if line.starts_with("waiting") {
            break;
        }
    }
    child.kill()?; // SIGKILL: no destructor, no rollback, nothing flushed
    child.wait()?;
    let mut cloud = Cloud { dir: dir.clone() };
    println!("2. Killed mid-transaction. Left behind: {:?}", cloud.resources());

    println!("3. Restart: open the journal and recover before running anything");
    let journal = SqliteJournal::open(&journal_path)?;
    let manager = TransactionManager::new(TokioClock::new()).with_journal(journal, Json::<1>);
    let report = manager.recover::<Undo, Unbounded, _>(&mut cloud).await?;
    println!("   {report}");
    println!("4. Left behind now: {:?}", cloud.resources());
    assert!(cloud.resources().is_empty(), "recovery rolled everything back");
    drop(manager);
    std::fs::remove_dir_all(&dir)?;
    if let Some(path) = kept {
        println!("5. The journal is kept: cargo run -p transaction-manager-cli -- list --sqlite {}", path.display());
    }
    Ok(())
}

/// The process that gets killed.
async fn child(dir: &Path, journal: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let journal = SqliteJournal::open(journal)?;
    let clock = TokioClock::new();
    let manager = TransactionManager::new(clock).with_journal(journal, Json::<1>);
    let mut cloud = Cloud { dir: dir.to_path_buf() };
    let _ = manager
        .transaction("provision")
        .unbounded::<Undo>()
        .run_with(&mut cloud, async |tx| {
            let user = tx
                .step("create_user")
                .execute_with(async |cloud: &mut Cloud| cloud.create("user-alice"))
                .undo(|user| Undo::DeleteUser(user.clone()))
                .await?;
            // The step's `Done` is durable before its value gets here.
            println!("created {user} (step {})", tx.steps().len() - 1);
            let vm = tx
                .step("create_vm")
                .execute_with(async |cloud: &mut Cloud| cloud.create("vm-for-alice"))
                .undo(|vm| Undo::DeleteVm(vm.clone()))
                .await?;
            println!("created {vm} (step {})", tx.steps().len() - 1);
            tx.step("attach_disk")
                .run(|| async {
                    println!("waiting for the disk...");
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    Ok::<_, std::io::Error>(())
                })
                .await?;
            Ok::<_, StepError<std::io::Error>>(())
        })
        .await;
    Ok(())
}
