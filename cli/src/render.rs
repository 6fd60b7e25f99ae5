//! What the commands print: aligned tables for people, one JSON document
//! for scripts (its shape is documented in `cli/README.md` and kept
//! stable: fields are only ever added).

use std::fmt::Write as _;

use comfy_table::{Cell, Color, ContentArrangement, Table, presets};
use serde::Serialize;
use transaction_manager::TransactionId;
use transaction_manager::journal::inspect::{History, StepHistory, StepState, TransactionState};

use crate::timeline;

/// A time for people: RFC 3339 in UTC, to the millisecond.
pub(crate) fn time(at: Option<u64>) -> String {
    match at {
        Some(at) => {
            humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(at)).to_string()
        }
        None => "-".into(),
    }
}

fn state_colour(state: TransactionState) -> Color {
    match state {
        TransactionState::Committed => Color::Green,
        TransactionState::RolledBack | TransactionState::Resolved => Color::Yellow,
        TransactionState::Owed | TransactionState::Stuck => Color::Red,
        _ => Color::Cyan,
    }
}

fn step_colour(state: StepState) -> Color {
    match state {
        StepState::Done => Color::Green,
        StepState::Undone | StepState::Released => Color::Yellow,
        StepState::UndoFailed => Color::Red,
        _ => Color::Cyan,
    }
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    // Columns separated by spaces, no borders: greppable, like `ps`.
    table.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled).set_header(header);
    table
}

/// `list` and `stuck` as a table (`stuck` adds the reason).
pub(crate) fn list_table(found: &[History], with_reason: bool) -> String {
    if found.is_empty() {
        return "no transactions\n".into();
    }
    let mut header = vec!["ID", "OPERATION", "STATE", "STARTED", "ENDED", "STEPS", "HELD BY"];
    if with_reason {
        header.push("REASON");
    }
    let mut table = table(&header);
    for t in found {
        let mut row = vec![
            Cell::new(t.id),
            Cell::new(t.operation.as_deref().unwrap_or("-")),
            Cell::new(t.state).fg(state_colour(t.state)),
            Cell::new(time(t.started_at)),
            Cell::new(time(t.ended_at)),
            Cell::new(t.steps.len()),
            Cell::new(held_by(t)),
        ];
        if with_reason {
            row.push(Cell::new(t.stuck_reason.as_deref().unwrap_or("-")));
        }
        table.add_row(row);
    }
    trimmed(&mut table)
}

/// Who holds a transaction that is not over, for people: `journal 3
/// (alive)`, `billing-7 (lease until 2026-…Z)`, `journal 2 (gone)`.
fn held_by(t: &History) -> String {
    let Some(held) = &t.held_by else { return "-".into() };
    match (held.alive, held.lease_until) {
        (Some(true), Some(until)) => format!("{} (lease until {})", held.owner, time(Some(until))),
        (Some(true), None) => format!("{} (alive)", held.owner),
        (Some(false), _) => format!("{} (gone: the next recovery takes it over)", held.owner),
        (None, _) => held.owner.clone(),
    }
}

/// The table's lines without trailing spaces, then a newline; columns two
/// spaces apart.
fn trimmed(table: &mut Table) -> String {
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    let mut out = String::new();
    for line in table.lines() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// `show`: the transaction, its steps, its timeline.
pub(crate) fn show_text(t: &History) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} `{}`: {}", t.id, t.operation.as_deref().unwrap_or("-"), t.state);
    let _ = writeln!(out, "started {}, ended {}", time(t.started_at), time(t.ended_at));
    if let Some(reason) = &t.stuck_reason {
        let _ = writeln!(out, "stuck: {reason}");
    }
    if let Some(resolution) = &t.resolution {
        let _ = writeln!(out, "resolved: {resolution}");
    }
    if t.held_by.is_some() {
        let _ = writeln!(out, "held by {}", held_by(t));
    }
    out.push('\n');
    if t.steps.is_empty() {
        out.push_str("no steps\n");
    } else {
        let mut table = table(&["#", "STEP", "STATE", "DONE", "SETTLED", "KEY", "UNDO", "ROLLBACK ERROR"]);
        for step in &t.steps {
            table.add_row(vec![
                Cell::new(step.index),
                Cell::new(step.name.as_deref().unwrap_or("-")),
                Cell::new(step.state).fg(step_colour(step.state)),
                Cell::new(time(step.done_at)),
                Cell::new(time(step.settled_at)),
                Cell::new(step.key),
                Cell::new(undo_text(step)),
                Cell::new(step.rollback_error.as_deref().unwrap_or("-")),
            ]);
        }
        out.push_str(&trimmed(&mut table));
    }
    out.push('\n');
    out.push_str(&timeline::text(t));
    out
}

/// An undo record for people: its JSON, or its bytes in hex.
fn undo_text(step: &StepHistory) -> String {
    match (&step.undo, step.undo_text()) {
        (_, Some(text)) => text.to_string(),
        (Some(bytes), None) => format!("0x{}", hex(bytes)),
        (None, None) => "-".into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
        let _ = write!(out, "{byte:02x}");
        out
    })
}

// --- JSON ----------------------------------------------------------------

#[derive(Serialize)]
struct TransactionJson<'a> {
    id: String,
    operation: Option<&'a str>,
    state: &'static str,
    started_at: Option<u64>,
    ended_at: Option<u64>,
    stuck_reason: Option<&'a str>,
    resolution: Option<&'a str>,
    held_by: Option<HeldByJson<'a>>,
    steps: Vec<StepJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entries: Option<Vec<EntryJson<'a>>>,
}

#[derive(Serialize)]
struct HeldByJson<'a> {
    owner: &'a str,
    lease_until: Option<u64>,
    alive: Option<bool>,
}

#[derive(Serialize)]
struct StepJson<'a> {
    index: u32,
    name: Option<&'a str>,
    state: &'static str,
    key: String,
    undo: Option<UndoJson>,
    rollback_error: Option<&'a str>,
    done_at: Option<u64>,
    settled_at: Option<u64>,
}

#[derive(Serialize)]
struct UndoJson {
    schema: Option<u32>,
    /// The record itself, when the codec wrote JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    json: Option<serde_json::Value>,
    /// Its bytes in hex, when it is not JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
}

#[derive(Serialize)]
struct EntryJson<'a> {
    kind: String,
    step: Option<u32>,
    at: Option<u64>,
    text: Option<&'a str>,
}

fn transaction_json(t: &History, with_entries: bool) -> TransactionJson<'_> {
    TransactionJson {
        id: t.id.to_string(),
        operation: t.operation.as_deref(),
        state: t.state.as_str(),
        started_at: t.started_at,
        ended_at: t.ended_at,
        stuck_reason: t.stuck_reason.as_deref(),
        resolution: t.resolution.as_deref(),
        held_by: t.held_by.as_ref().map(|held| HeldByJson {
            owner: &held.owner,
            lease_until: held.lease_until,
            alive: held.alive,
        }),
        steps: t
            .steps
            .iter()
            .map(|step| StepJson {
                index: step.index,
                name: step.name.as_deref(),
                state: step.state.as_str(),
                key: step.key.to_string(),
                undo: step.undo.as_ref().map(|bytes| {
                    match step.undo_text().and_then(|text| serde_json::from_str(text).ok()) {
                        Some(json) => UndoJson { schema: step.schema, json: Some(json), hex: None },
                        None => UndoJson { schema: step.schema, json: None, hex: Some(hex(bytes)) },
                    }
                }),
                rollback_error: step.rollback_error.as_deref(),
                done_at: step.done_at,
                settled_at: step.settled_at,
            })
            .collect(),
        entries: with_entries.then(|| {
            t.entries
                .iter()
                .map(|entry| EntryJson {
                    kind: match entry.kind {
                        Some(kind) => kind.to_string(),
                        None => format!("unknown({})", entry.code),
                    },
                    step: entry.step,
                    at: entry.at,
                    text: entry.text.as_deref(),
                })
                .collect()
        }),
    }
}

fn json(value: &impl Serialize) -> String {
    let mut out = serde_json::to_string_pretty(value).expect("the shapes above always serialize");
    out.push('\n');
    out
}

#[derive(Serialize)]
struct ListJson<'a> {
    transactions: Vec<TransactionJson<'a>>,
}

pub(crate) fn list_json(found: &[History]) -> String {
    json(&ListJson { transactions: found.iter().map(|t| transaction_json(t, false)).collect() })
}

pub(crate) fn show_json(t: &History) -> String {
    json(&transaction_json(t, true))
}

pub(crate) fn resolved_json(id: TransactionId, reason: &str) -> String {
    json(&serde_json::json!({ "resolved": id.to_string(), "reason": reason }))
}

pub(crate) fn retry_json(id: TransactionId) -> String {
    json(&serde_json::json!({ "retry_requested": id.to_string() }))
}

pub(crate) fn pruned_json(transactions: u64, entries: u64) -> String {
    json(&serde_json::json!({ "pruned": { "transactions": transactions, "entries": entries } }))
}
