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
    port: u16,
    tcp: bool,
}

/// What a test's cluster has beyond the default (unix socket, trust): a
/// TCP listener on 127.0.0.1 (on a free port), lines for
/// `postgresql.conf`, a `pg_hba.conf` replacing initdb's, and files put
/// in the data directory (a certificate and its key), private to the
/// server's user.
#[derive(Default)]
pub struct Setup {
    pub tcp: bool,
    pub conf: Vec<String>,
    pub hba: Option<String>,
    pub files: Vec<(&'static str, Vec<u8>)>,
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
        Cluster::start_with(name, Setup::default())
    }

    /// A new cluster set up as `setup` says, started.
    pub fn start_with(name: &str, setup: Setup) -> Option<Cluster> {
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
        // A free port: the OS gives one, the listener closes, the server
        // takes it (a unix socket's name needs one even without TCP).
        let port = if setup.tcp {
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
        } else {
            5432
        };
        let cluster = Cluster { dir, bin, run_as, port, tcp: setup.tcp };
        cluster.pg("initdb", &["-D", "data", "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        let data = cluster.dir.join("data");
        if !setup.conf.is_empty() {
            let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            conf.push('\n');
            conf.push_str(&setup.conf.join("\n"));
            conf.push('\n');
            std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        }
        if let Some(hba) = &setup.hba {
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        }
        for (name, contents) in &setup.files {
            use std::os::unix::fs::PermissionsExt;
            let file = data.join(name);
            std::fs::write(&file, contents).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            if let Some(user) = &cluster.run_as {
                run(Command::new("chown").arg(user).arg(&file));
            }
        }
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
        let listen = if self.tcp { "127.0.0.1" } else { "" };
        let options = format!(
            "-k {} -c listen_addresses={listen} -p {} -c max_connections=300 -c shared_buffers=32MB",
            self.dir.display(),
            self.port
        );
        self.pg("pg_ctl", &["-D", "data", "-o", &options, "-l", "server.log", "-w", "-t", "60", "start"]);
    }

    /// Stops the server at once (`immediate`: like a crash).
    pub fn stop(&self) {
        self.pg("pg_ctl", &["-D", "data", "-m", "immediate", "-w", "stop"]);
    }

    /// The connection string of the server's `postgres` database.
    pub fn url(&self) -> String {
        format!("host={} port={} user=postgres dbname=postgres", self.dir.display(), self.port)
    }

    /// The TCP port (with `Setup::tcp`).
    pub fn port(&self) -> u16 {
        self.port
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
