//! `tmctl`: the operator's tool for a transaction-manager journal.
//!
//! Run it against a live service's journal without stopping the service:
//! reading commands open a SQLite file read-only (SQLite's WAL lets a
//! reader run beside the writer). `resolve`, `retry` and `prune` open it for writing,
//! as one more journal on the file (they never touch what the service is
//! running). A Postgres journal (`--postgres`) is joined as one more
//! instance that runs, claims and prunes nothing by itself.
//!
//! Human output by default (aligned tables, colour only on a terminal);
//! `--json` prints one JSON document whose shape is in `cli/README.md`.
//! Errors are one line on stderr and exit code 1 (2 for a bad command
//! line).

mod render;
mod source;
mod svg;
mod timeline;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use transaction_manager::TransactionId;
use transaction_manager::journal::Retention;
use transaction_manager::journal::inspect::{Filter, TransactionState};

use crate::source::{Source, Target};

/// The operator's tool for transaction-manager journals.
#[derive(Parser)]
#[command(name = "tmctl", version, about, long_about = None)]
struct Cli {
    /// The SQLite journal file.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "postgres")]
    sqlite: Option<PathBuf>,
    /// The Postgres journal: a connection string (`host=/run/postgresql
    /// dbname=app user=ops`, or a `postgresql://` URL; the password as libpq
    /// finds it: the string, `PGPASSWORD`, `~/.pgpass`).
    #[arg(long, global = true, value_name = "CONNINFO")]
    postgres: Option<String>,
    /// The Postgres schema that holds the journal's tables (default: the
    /// connection's `search_path`).
    #[arg(long, global = true, value_name = "NAME", requires = "postgres")]
    schema: Option<String>,
    /// Print one JSON document (shape: cli/README.md) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List transactions, oldest first (the newest 50 unless `--limit` or `--all`).
    List {
        /// Only in this state: running, committed, rolled_back, owed, stuck, resolved
        /// (may be given more than once).
        #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
        states: Vec<TransactionState>,
        /// Only of this operation.
        #[arg(long, value_name = "NAME")]
        operation: Option<String>,
        /// Only started since: a duration ago (`10m`, `2h 30m`) or a time
        /// (`2026-12-07T21:00:00Z`).
        #[arg(long, value_name = "WHEN", value_parser = parse_since)]
        since: Option<SystemTime>,
        /// At most this many, the newest.
        #[arg(long, default_value_t = 50, conflicts_with = "all")]
        limit: usize,
        /// Every one that matches.
        #[arg(long)]
        all: bool,
    },
    /// Show one transaction: its steps, then its timeline.
    Show {
        /// Its id, as printed (`tx-3.17`).
        #[arg(value_parser = parse_id)]
        id: TransactionId,
        /// Also draw the timeline as an SVG picture into FILE.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
    /// List the stuck transactions, with why recovery could not roll them back.
    Stuck,
    /// Resolve a stuck or owed transaction by hand: recovery leaves it alone
    /// from then on. The reason is kept in the journal.
    Resolve {
        /// Its id, as printed (`tx-3.17`).
        #[arg(value_parser = parse_id)]
        id: TransactionId,
        /// What was done about what it owed (kept in the journal).
        #[arg(long, value_name = "TEXT")]
        reason: String,
        /// Resolve it even if it is running (it may be running in a live
        /// process: only when you know it is not).
        #[arg(long)]
        force: bool,
    },
    /// Ask the service's next recovery to try an owed or stuck transaction's
    /// rollbacks again at once, ignoring its backoff (and trying it even if
    /// the service never retries by itself). One request, one try.
    Retry {
        /// Its id, as printed (`tx-3.17`).
        #[arg(value_parser = parse_id)]
        id: TransactionId,
    },
    /// Delete finished transactions (committed, rolled back, resolved) now.
    /// Never an unfinished, owed or stuck one; one of a process that is
    /// still running only once it has been over for a minute.
    Prune {
        /// Every finished transaction.
        #[arg(long, group = "policy", required_unless_present_any = ["keep_for", "keep_last"])]
        delete_at_once: bool,
        /// Those over for longer than this (`7d`, `12h`).
        #[arg(long, group = "policy", value_name = "DURATION", value_parser = parse_duration)]
        keep_for: Option<Duration>,
        /// All but the newest N.
        #[arg(long, group = "policy", value_name = "N")]
        keep_last: Option<u64>,
    },
}

fn parse_state(text: &str) -> Result<TransactionState, String> {
    text.parse().map_err(|error: transaction_manager::journal::inspect::UnknownState| error.to_string())
}

fn parse_id(text: &str) -> Result<TransactionId, String> {
    text.parse().map_err(|error: transaction_manager::journal::ParseIdError| error.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("{error} (a duration such as `10m` or `7d`)"))
}

fn parse_since(text: &str) -> Result<SystemTime, String> {
    if let Ok(ago) = humantime::parse_duration(text) {
        return SystemTime::now().checked_sub(ago).ok_or_else(|| format!("`{text}` ago is before any time"));
    }
    humantime::parse_rfc3339_weak(text)
        .map_err(|_| format!("`{text}` is neither a duration (`10m`) nor a time (`2026-12-07T21:00:00Z`)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tmctl: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; its output, or the one-line error.
fn run(cli: Cli) -> Result<String, String> {
    let path = match (cli.sqlite, cli.postgres) {
        (Some(path), _) => Target::Sqlite(path),
        (None, Some(url)) => Target::Postgres { url, schema: cli.schema },
        (None, None) => return Err("no journal given: pass `--sqlite PATH` or `--postgres CONNINFO`".into()),
    };
    let json = cli.json;
    match cli.command {
        Command::List { states, operation, since, limit, all } => {
            let mut filter = Filter::new();
            filter.states = states;
            filter.operation = operation;
            filter.since = since.map(unix_millis);
            filter.limit = (!all).then_some(limit);
            let found = Source::read(&path)?.list(&filter)?;
            Ok(if json { render::list_json(&found) } else { render::list_table(&found, false) })
        }
        Command::Stuck => {
            let found = Source::read(&path)?.list(&Filter::new().state(TransactionState::Stuck))?;
            Ok(if json { render::list_json(&found) } else { render::list_table(&found, true) })
        }
        Command::Show { id, svg } => {
            let Some(found) = Source::read(&path)?.history(id)? else {
                return Err(format!("{id} is not in the journal (never there, or pruned after it ended)"));
            };
            if let Some(file) = svg {
                let picture = svg::svg(&found).ok_or("the journal keeps no times for it: no picture to draw")?;
                std::fs::write(&file, picture).map_err(|error| format!("cannot write {}: {error}", file.display()))?;
            }
            Ok(if json { render::show_json(&found) } else { render::show_text(&found) })
        }
        Command::Resolve { id, reason, force } => {
            let source = Source::write(&path)?;
            let Some(found) = source.history(id)? else {
                return Err(format!("{id} is not in the journal"));
            };
            match found.state {
                TransactionState::Stuck | TransactionState::Owed => {}
                TransactionState::Running if force => {}
                TransactionState::Running => {
                    return Err(format!(
                        "{id} is running (or waiting for recovery), not stuck: it may be running in a live \
                         process; pass --force if you know it is not"
                    ));
                }
                over => return Err(format!("{id} is already over ({over}): nothing to resolve")),
            }
            source.resolve(id, &reason)?;
            Ok(if json { render::resolved_json(id, &reason) } else { format!("{id} resolved: {reason}\n") })
        }
        Command::Retry { id } => {
            let source = Source::write(&path)?;
            let Some(found) = source.history(id)? else {
                return Err(format!("{id} is not in the journal"));
            };
            match found.state {
                TransactionState::Stuck | TransactionState::Owed => {}
                TransactionState::Running => {
                    return Err(format!(
                        "{id} is running (or waiting for its first recovery): no rollback of it failed, so there \
                         is nothing to retry"
                    ));
                }
                over => return Err(format!("{id} is already over ({over}): nothing to retry")),
            }
            if !source.request_retry(id)? {
                return Err(format!("{id} ended while the request was written: nothing to retry"));
            }
            Ok(if json {
                render::retry_json(id)
            } else {
                format!("{id}: retry requested; the service's next recovery tries its rollbacks\n")
            })
        }
        Command::Prune { delete_at_once, keep_for, keep_last } => {
            let retention = match (delete_at_once, keep_for, keep_last) {
                (_, Some(keep), _) => Retention::KeepFor(keep),
                (_, _, Some(n)) => Retention::KeepLast(n),
                _ => Retention::DeleteAtOnce,
            };
            let pruned = Source::write(&path)?.prune(retention)?;
            Ok(if json {
                render::pruned_json(pruned.transactions, pruned.entries)
            } else {
                format!("pruned {} transactions ({} entries)\n", pruned.transactions, pruned.entries)
            })
        }
    }
}

/// A time as Unix milliseconds (0 before 1970).
fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}
