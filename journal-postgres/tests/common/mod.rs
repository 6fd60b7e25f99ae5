//! Shared by the tests: a Postgres cluster of their own, in a temp dir,
//! started with `initdb` and `pg_ctl` as a non-root user, on a unix socket
//! only (no TCP port to collide with anything), stopped on drop.
//!
//! Binaries: the newest `/usr/lib/postgresql/*/bin`, else `initdb` on
//! `PATH`. As root, the server runs as the `postgres` system user (`runuser`),
//! which the Debian package creates; `scripts/postgres.sh` installs both.
//! Without binaries a test is skipped (it says so), except under CI
//! (`CI` set), where it fails.

#![allow(dead_code)] // Each test file uses a part.

pub mod app;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
}

fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
}

impl Cluster {
    /// A new cluster, started; `None` (and a line saying the test is
    /// skipped) without Postgres binaries outside CI.
    pub fn start(name: &str) -> Option<Cluster> {
        let Some(bin) = find_bin() else {
            assert!(std::env::var_os("CI").is_none(), "no Postgres binaries: run scripts/postgres.sh install");
            eprintln!("SKIPPED {name}: no Postgres binaries (scripts/postgres.sh install)");
            return None;
        };
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tm-pg-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let root = is_root();
        let run_as = root.then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            run(Command::new("chown").arg(user).arg(&dir));
        }
        let cluster = Cluster { dir, bin, run_as };
        cluster.pg("initdb", &["-D", "data", "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        cluster.start_again();
        Some(cluster)
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(tool);
                c
            }
            None => Command::new(tool),
        };
        command.args(args).current_dir(&self.dir);
        run(&mut command);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the server (again, after `stop`).
    pub fn start_again(&self) {
        let options = format!(
            "-k {} -c listen_addresses= -p 5432 -c max_connections=300 -c shared_buffers=32MB",
            self.dir.display()
        );
        self.pg("pg_ctl", &["-D", "data", "-o", &options, "-l", "server.log", "-w", "-t", "60", "start"]);
    }

    /// Stops the server at once (`immediate`: like a crash).
    pub fn stop(&self) {
        self.pg("pg_ctl", &["-D", "data", "-m", "immediate", "-w", "stop"]);
    }

    /// The connection string of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("host={} port=5432 user=postgres dbname=postgres", self.dir.display())
    }

    /// A plain client, for the tests' own SQL.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) =
            self.url().parse::<tokio_postgres::Config>().unwrap().connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| self.pg("pg_ctl", &["-D", "data", "-m", "immediate", "-w", "stop"]));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
