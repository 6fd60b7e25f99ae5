//! Connecting safely: credentials never appear in an error (`Display`,
//! `Debug`, sources) or a log line; TLS with libpq's `sslmode`s against a
//! server whose certificate comes from a test CA made here.

mod common;

use std::sync::Mutex;

use common::pki::{pki, tls_cluster};
use common::{Cluster, Setup};
use transaction_manager_postgres::{CertificateProblem, PostgresJournal, PostgresJournalError, PostgresOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// Every log line of this test binary (any crate, any level).
static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        LOGS.lock().unwrap().push(format!("{} {}: {}", record.level(), record.target(), record.args()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static CAPTURE: Capture = Capture;
    let _ = log::set_logger(&CAPTURE);
    log::set_max_level(log::LevelFilter::Trace);
}

/// The error's text, its `Debug` and its sources' texts, all of which a
/// program may print or a panic may show.
fn every_text(error: &PostgresJournalError) -> String {
    let mut text = format!("{error}\n{error:?}\n{error:#?}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!("\n{cause}\n{cause:?}"));
        source = cause.source();
    }
    text
}

fn assert_secret_nowhere(secret: &str, error: &PostgresJournalError) {
    let text = every_text(error);
    assert!(!text.contains(secret), "the secret is in the error: {text}");
    let logs = LOGS.lock().unwrap();
    assert!(!logs.iter().any(|line| line.contains(secret)), "the secret is in a log line");
    assert!(!error.to_string().contains('\n'), "one line: {error}");
}

async fn connect_err(url: &str, options: PostgresOptions) -> PostgresJournalError {
    match PostgresJournal::connect(url, options).await {
        Ok(_) => panic!("connected"),
        Err(error) => error,
    }
}

/// A cluster on 127.0.0.1 that wants a SCRAM password over TCP, with a
/// role `app` whose password is `RIGHT`.
fn password_cluster(name: &str) -> Option<Cluster> {
    let cluster = Cluster::start_with(
        name,
        Setup {
            tcp: true,
            conf: vec!["password_encryption = 'scram-sha-256'".into()],
            hba: Some("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n".into()),
            ..Setup::default()
        },
    )?;
    runtime().block_on(async {
        let client = cluster.client().await;
        client.batch_execute(&format!("CREATE ROLE app LOGIN SUPERUSER PASSWORD '{RIGHT}'")).await.unwrap();
    });
    // tokio-postgres logs a batch's text at debug level: the line above
    // is the test's own SQL, not the journal's.
    LOGS.lock().unwrap().retain(|line| !line.contains("CREATE ROLE app"));
    Some(cluster)
}

const RIGHT: &str = "right-Secret-4711";
const WRONG: &str = "wrong-Secret-0815";

#[test]
fn credentials_never_appear_in_logs_or_errors() {
    capture_logs();
    let Some(cluster) = password_cluster("secrets") else { return };
    let port = cluster.port();
    let dir = cluster.dir().to_owned();
    runtime().block_on(async {
        // A wrong password, in each place a password can be.
        let passfile = dir.join("pgpass");
        std::fs::write(&passfile, format!("*:*:*:app:{WRONG}\n")).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        for url in [
            format!("host=127.0.0.1 port={port} user=app dbname=postgres password={WRONG}"),
            format!("host=127.0.0.1 port={port} user=app dbname=postgres password='{WRONG}' sslmode=disable"),
            format!("postgres://app:{WRONG}@127.0.0.1:{port}/postgres"),
            format!("postgresql://app@127.0.0.1:{port}/postgres?password={WRONG}&sslmode=prefer"),
            format!("host=127.0.0.1 port={port} user=app dbname=postgres passfile={}", passfile.display()),
        ] {
            let error = connect_err(&url, PostgresOptions::new()).await;
            assert!(matches!(error, PostgresJournalError::Connect(_)), "{error}");
            assert!(error.to_string().contains("password authentication failed"), "{error}");
            assert_secret_nowhere(WRONG, &error);
        }
        // An unreachable host and a missing certificate file, a password given.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let error =
            connect_err(&format!("postgres://app:{WRONG}@127.0.0.1:{closed}/postgres"), PostgresOptions::new()).await;
        assert!(matches!(error, PostgresJournalError::Connect(_)), "{error}");
        assert_secret_nowhere(WRONG, &error);
        let missing = dir.join("no-such-ca.pem");
        let url = format!(
            "host=localhost port={port} user=app password={WRONG} sslmode=verify-full sslrootcert={}",
            missing.display()
        );
        let error = connect_err(&url, PostgresOptions::new()).await;
        assert!(matches!(error, PostgresJournalError::InvalidConfig { .. }), "{error}");
        assert!(error.to_string().contains("no-such-ca.pem"), "{error}");
        assert_secret_nowhere(WRONG, &error);
        // A stray space splits the password: the rest is neither a key
        // nor a value shown.
        let error = connect_err(
            &format!("host=127.0.0.1 port={port} user=app password=wrong {WRONG}=x"),
            PostgresOptions::new(),
        )
        .await;
        assert!(matches!(error, PostgresJournalError::InvalidConfig { .. }), "{error}");
        assert_secret_nowhere(WRONG, &error);

        // The right one, from the URL and from the password file: the
        // journal connects, and neither its config's `Debug` nor the
        // options' show it.
        std::fs::write(&passfile, format!("127.0.0.1:{port}:postgres:app:{RIGHT}\n")).unwrap();
        for url in [
            format!("postgres://app:{RIGHT}@127.0.0.1:{port}/postgres"),
            format!("host=127.0.0.1 port={port} user=app dbname=postgres passfile={}", passfile.display()),
        ] {
            let options = PostgresOptions::new().durable_connections(1).lazy_connections(1);
            let journal = PostgresJournal::connect(&url, options.clone()).await.unwrap();
            let shown = format!("{:?} {options:?}", journal.config());
            assert!(!shown.contains(RIGHT), "{shown}");
        }
        let logs = LOGS.lock().unwrap();
        let leaks: Vec<&String> = logs.iter().filter(|line| line.contains(RIGHT) || line.contains(WRONG)).collect();
        assert!(leaks.is_empty(), "a secret in the logs: {leaks:?}");
    });
}

fn few() -> PostgresOptions {
    PostgresOptions::new().durable_connections(1).lazy_connections(1)
}

#[test]
fn tls_modes_verify_as_libpq_does() {
    let pki = pki();
    let Some(cluster) = tls_cluster("tls", &pki, true) else { return };
    let port = cluster.port();
    let ca_file = cluster.dir().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let other_ca = pki_other_ca();
    // `localhost` is the certificate's name; the address is given so that
    // the name is not looked up (it could be ::1 first).
    let by_name = format!("host=localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres");
    let by_address = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    runtime().block_on(async {
        // verify-full: the right CA (a file, or PEM in code) and name.
        let url = format!("{by_name} sslmode=verify-full sslrootcert={}", ca_file.display());
        let journal = PostgresJournal::connect(&url, few()).await.unwrap();
        // (The server takes TLS only; and the server says so.)
        let (client, connection) = journal.config().connect(journal.tls_connector()).await.unwrap();
        tokio::spawn(connection);
        let row =
            client.query_one("SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap();
        let (ssl, version): (bool, String) = (row.get(0), row.get(1));
        assert!(ssl && version.starts_with("TLSv1."), "{ssl} {version}");
        drop(journal);
        let journal = PostgresJournal::connect(
            &format!("{by_name} sslmode=verify-full"),
            few().root_certificate_pem(pki.ca_pem.clone()),
        )
        .await
        .unwrap();
        drop(journal);
        // …refuses another CA, and another name (the address is not in
        // the certificate).
        let error =
            connect_err(&format!("{by_name} sslmode=verify-full"), few().root_certificate_pem(other_ca.clone())).await;
        assert!(
            matches!(error, PostgresJournalError::Certificate { problem: CertificateProblem::NotTrusted, .. }),
            "{error}"
        );
        assert!(!error.to_string().contains('\n'));
        let url = format!("{by_address} sslmode=verify-full sslrootcert={}", ca_file.display());
        let error = connect_err(&url, few()).await;
        assert!(
            matches!(error, PostgresJournalError::Certificate { problem: CertificateProblem::WrongHost, .. }),
            "{error}"
        );
        // verify-ca: the chain only, so the address will do; not another CA.
        let url = format!("{by_address} sslmode=verify-ca sslrootcert={}", ca_file.display());
        drop(PostgresJournal::connect(&url, few()).await.unwrap());
        let error = connect_err(&format!("{by_address} sslmode=verify-ca"), few().root_certificate_pem(other_ca)).await;
        assert!(
            matches!(error, PostgresJournalError::Certificate { problem: CertificateProblem::NotTrusted, .. }),
            "{error}"
        );
        // verify-* without a root certificate: refused before connecting.
        let error = connect_err(&format!("{by_name} sslmode=verify-full"), few()).await;
        assert!(matches!(error, PostgresJournalError::InvalidConfig { .. }), "{error}");
        // require: encrypted, the certificate not checked; prefer too.
        drop(PostgresJournal::connect(&format!("{by_address} sslmode=require"), few()).await.unwrap());
        drop(PostgresJournal::connect(&by_address, few()).await.unwrap());
        // disable, against a server that takes TLS only: a clear refusal.
        let error = connect_err(&format!("{by_address} sslmode=disable"), few()).await;
        assert!(matches!(error, PostgresJournalError::Connect(_)), "{error}");
        assert!(error.to_string().contains("no encryption"), "{error}");
    });
}

/// The PEM of a CA that signed nothing here.
fn pki_other_ca() -> String {
    pki().ca_pem
}

/// The SQLSTATE of a failed statement.
fn sqlstate(result: Result<u64, tokio_postgres::Error>) -> Option<String> {
    result.err().and_then(|e| e.code().map(|c| c.code().to_owned()))
}

#[test]
fn a_least_privilege_role_uses_the_journal_and_nothing_else() {
    use transaction_manager::{
        TransactionId,
        journal::{Entry, EntryKind, Journal},
    };
    let Some(cluster) = Cluster::start_with("least", Setup { superuser: true, ..Setup::default() }) else { return };
    runtime().block_on(async {
        let superuser = cluster.client().await;
        superuser.batch_execute(common::LEAST_PRIVILEGE_ROLES).await.unwrap();
        let app = || few().schema("tm").migrate(false);
        // Before the owner migrated: a typed error, nothing created.
        let error = connect_err(&cluster.url_as("tm_app"), app()).await;
        assert!(matches!(error, PostgresJournalError::NotMigrated { found: 0, needed: 4 }), "{error}");
        // With migrations on, the app role may not create the tables.
        let error = connect_err(&cluster.url_as("tm_app"), few().schema("tm")).await;
        assert!(
            matches!(error, PostgresJournalError::Postgres(ref cause) if cause.sqlstate() == Some("42501")),
            "{error}"
        );
        PostgresJournal::migrate(&cluster.url_as("tm_owner"), PostgresOptions::new().schema("tm")).await.unwrap();

        let journal = PostgresJournal::connect(&cluster.url_as("tm_app"), app()).await.unwrap();
        let id = journal.next_id();
        journal.append(&Entry::new_raw(id, None, EntryKind::Begin, b"op")).await.unwrap();
        journal.append(&Entry::new_raw(id, Some(0), EntryKind::Done, b"undo")).await.unwrap();
        let mut steps = Vec::new();
        journal.read(id, &mut |e| steps.push(e.step)).await.unwrap();
        assert_eq!(steps, [None, Some(0)]);
        // Recovery as the app role: a restarted instance (same owner id,
        // a later connect) claims what its earlier connect left.
        let before = PostgresJournal::connect(&cluster.url_as("tm_app"), app().owner("worker-1")).await.unwrap();
        let abandoned = before.next_id();
        before.append(&Entry::new_raw(abandoned, None, EntryKind::Begin, b"op")).await.unwrap();
        drop(before);
        let restarted = PostgresJournal::connect(&cluster.url_as("tm_app"), app().owner("worker-1")).await.unwrap();
        let claimed = restarted.next_unfinished(None).await.unwrap();
        assert_eq!(claimed, Some(abandoned));

        // Retention: the role deletes what is over (and only that).
        journal.append(&Entry::new_raw(id, None, EntryKind::Committed, b"")).await.unwrap();
        let pruned = journal.prune(transaction_manager::journal::Retention::DeleteAtOnce).await.unwrap();
        assert_eq!((pruned.transactions, pruned.entries), (1, 3));

        // The role can do nothing else with the journal's schema.
        let (client, connection) = journal.config().connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        assert_eq!(sqlstate(client.execute("CREATE TABLE tm.mine (a int)", &[]).await), Some("42501".into()));
        assert_eq!(sqlstate(client.execute("DROP TABLE tm.tm_entries", &[]).await), Some("42501".into()));
        assert_eq!(sqlstate(client.execute("TRUNCATE tm.tm_transactions", &[]).await), Some("42501".into()));

        // A second application's journal in another schema of the same
        // database sees none of the first one's transactions.
        PostgresJournal::migrate(&cluster.url(), PostgresOptions::new().schema("billing")).await.unwrap();
        let billing = PostgresJournal::connect(&cluster.url(), few().schema("billing")).await.unwrap();
        assert_eq!(billing.next_unfinished(None).await.unwrap(), None::<TransactionId>);
        let tables: i64 = superuser
            .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'billing' AND tablename LIKE 'tm_%'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(tables, 4);
    });
}
