//! A Postgres cluster of a test's own, in a temp dir, started with
//! `initdb` and `pg_ctl` as a non-root user, on a unix socket only (no TCP
//! port to collide with anything), stopped on drop. Shared by the journal's
//! tests (through `common`) and the operator tool's (`cli/tests`, by path).
//!
//! Binaries: the newest `/usr/lib/postgresql/*/bin`, else `initdb` on
//! `PATH`. As root, the server runs as the `postgres` system user (`runuser`),
//! which the Debian package creates; `scripts/postgres.sh` installs both.
//! Without binaries a test is skipped (it says so), except under CI
//! (`CI` set), where it fails.

#![allow(dead_code)] // Each test file uses a part.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    port: u16,
    tcp: bool,
    least_privilege: bool,
}

/// The least-privilege roles, as the guide's "several processes" chapter shows
/// them: the journal's tables in schema `tm`, owned by `tm_owner` (who runs
/// the migrations); `tm_app` may read, write and delete their rows (delete:
/// retention), take ids, and nothing else (no DDL).
pub const LEAST_PRIVILEGE_ROLES: &str = "
    CREATE ROLE tm_owner LOGIN;
    CREATE ROLE tm_app LOGIN;
    CREATE SCHEMA tm AUTHORIZATION tm_owner;
    GRANT USAGE ON SCHEMA tm TO tm_app;
    ALTER DEFAULT PRIVILEGES FOR ROLE tm_owner IN SCHEMA tm GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO tm_app;
    ALTER DEFAULT PRIVILEGES FOR ROLE tm_owner IN SCHEMA tm GRANT USAGE ON SEQUENCES TO tm_app;
";

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
    /// Journals connect as the superuser even with
    /// `TM_PG_LEAST_PRIVILEGE` (the test makes its roles itself).
    pub superuser: bool,
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
        // `TM_PG_LEAST_PRIVILEGE=1`: the default clusters' journals connect
        // as `tm_app` (the whole suite then runs with the least-privilege
        // role); the tests' own client stays the superuser.
        let least_privilege = std::env::var_os("TM_PG_LEAST_PRIVILEGE").is_some()
            && !setup.tcp
            && setup.hba.is_none()
            && !setup.superuser;
        let cluster = Cluster { dir, bin, run_as, port, tcp: setup.tcp, least_privilege };
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
        if least_privilege {
            cluster.set_up_least_privilege();
        }
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
        self.url_as(if self.least_privilege { "tm_app" } else { "postgres" })
    }

    /// The roles, their schema on each role's `search_path` (the test
    /// application's own `effects` table goes to `public`), and the
    /// migrations, run as `tm_owner`.
    fn set_up_least_privilege(&self) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let client = self.superuser_client().await;
            client.batch_execute(LEAST_PRIVILEGE_ROLES).await.unwrap();
            client
                .batch_execute(
                    "ALTER ROLE tm_app SET search_path = tm, public; ALTER ROLE postgres SET search_path = tm, public;
                     GRANT CREATE ON SCHEMA public TO tm_app;",
                )
                .await
                .unwrap();
            let owner = self.url_as("tm_owner");
            let options = transaction_manager_postgres::PostgresOptions::new().schema("tm");
            transaction_manager_postgres::PostgresJournal::migrate(&owner, options).await.unwrap();
        });
    }

    /// The connection string of the `postgres` database as `user`.
    pub fn url_as(&self, user: &str) -> String {
        format!("host={} port={} user={user} dbname=postgres", self.dir.display(), self.port)
    }

    /// The TCP port (with `Setup::tcp`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A plain client, for the tests' own SQL.
    pub async fn client(&self) -> tokio_postgres::Client {
        self.superuser_client().await
    }

    async fn superuser_client(&self) -> tokio_postgres::Client {
        let (client, connection) = self
            .url_as("postgres")
            .parse::<tokio_postgres::Config>()
            .unwrap()
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
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
