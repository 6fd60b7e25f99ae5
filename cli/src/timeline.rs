//! A transaction's timeline as text: one lane per step on one time axis
//! (from the step's start — its intent, or the entry before it — to its
//! completion, then a mark where it was rolled back), the decision marked,
//! then every entry in order with its offset.
//!
//! Only what the journal holds: attempts, backoff waits and timeouts are
//! not journaled (see the core's `journal::inspect`).

use std::fmt::Write as _;

use transaction_manager::journal::EntryKind;
use transaction_manager::journal::inspect::{History, StepState};

/// Columns of the time axis.
const WIDTH: usize = 60;

/// Where each step runs and settles on the axis, in milliseconds from the
/// transaction's first entry.
pub(crate) struct Lane {
    pub(crate) label: String,
    pub(crate) state: StepState,
    pub(crate) start: Option<u64>,
    pub(crate) done: Option<u64>,
    pub(crate) settled: Option<u64>,
}

/// The lanes of `t`, and the decision (its kind and time), from its entries.
pub(crate) fn lanes(t: &History) -> (Vec<Lane>, Option<(String, u64)>) {
    let t0 = t.started_at.unwrap_or(0);
    let offset = |at: Option<u64>| at.map(|at| at.saturating_sub(t0));
    let mut lanes = Vec::new();
    // A step starts at its intent, or else where the entry before its
    // `done` was written.
    let mut previous = Some(0);
    let mut decision = None;
    let mut seen = Vec::new();
    for entry in &t.entries {
        match (entry.kind, entry.step) {
            (Some(EntryKind::Intent | EntryKind::Done), Some(index)) if !seen.contains(&index) => {
                seen.push(index);
                if let Some(step) = t.steps.iter().find(|step| step.index == index) {
                    let name = step.name.as_deref().unwrap_or("?");
                    let start = if entry.kind == Some(EntryKind::Intent) { offset(entry.at) } else { previous };
                    lanes.push(Lane {
                        label: format!("#{index} {name}"),
                        state: step.state,
                        start,
                        done: offset(step.done_at),
                        settled: offset(step.settled_at),
                    });
                }
            }
            (
                Some(
                    kind @ (EntryKind::Committed
                    | EntryKind::Aborted
                    | EntryKind::RolledBack
                    | EntryKind::Stuck
                    | EntryKind::Resolved),
                ),
                None,
            ) => {
                if let (Some(at), true) = (offset(entry.at), decision.is_none() || kind != EntryKind::RolledBack) {
                    decision = Some((kind.to_string(), at));
                }
            }
            _ => {}
        }
        if entry.at.is_some() {
            previous = offset(entry.at);
        }
    }
    (lanes, decision)
}

/// The timeline as text.
pub(crate) fn text(t: &History) -> String {
    let mut out = String::new();
    let has_times = t.entries.iter().any(|entry| entry.at.is_some());
    if has_times {
        let t0 = t.started_at.unwrap_or(0);
        let span = t.entries.iter().filter_map(|entry| entry.at).max().unwrap_or(t0).saturating_sub(t0).max(1);
        let column = |ms: u64| usize::try_from(ms.min(span) * (WIDTH as u64 - 1) / span).unwrap_or(WIDTH - 1);
        let (lanes, decision) = lanes(t);
        let label_width = lanes.iter().map(|lane| lane.label.chars().count()).max().unwrap_or(0).max(8);
        let _ = writeln!(
            out,
            "timeline: 0 = {}, {} ms across (━ running, ● done, ◄ rolled back, ✗ rollback failed, ○ released)",
            crate::render::time(t.started_at),
            span
        );
        for lane in &lanes {
            let mut row = vec![' '; WIDTH];
            if let (Some(start), Some(done)) = (lane.start, lane.done) {
                for cell in row.iter_mut().take(column(done)).skip(column(start)) {
                    *cell = '━';
                }
                row[column(done)] = '●';
            } else if let Some(start) = lane.start {
                row[column(start)] = '┄';
            }
            if let Some(settled) = lane.settled {
                row[column(settled)] = match lane.state {
                    StepState::Undone => '◄',
                    StepState::UndoFailed => '✗',
                    StepState::Released => '○',
                    _ => '·',
                };
            }
            let _ = writeln!(out, "{:<label_width$} |{}| {}", lane.label, row.iter().collect::<String>(), lane.state);
        }
        if let Some((kind, at)) = &decision {
            let mut row = vec![' '; WIDTH];
            row[column(*at)] = '▲';
            let _ = writeln!(out, "{:<label_width$} |{}| {kind} +{at} ms", "decision", row.iter().collect::<String>());
        }
        out.push('\n');
    }
    let _ = writeln!(out, "entries:");
    let t0 = t.started_at.unwrap_or(0);
    for entry in &t.entries {
        let when = match entry.at {
            Some(at) => format!("+{} ms", at.saturating_sub(t0)),
            None => "-".into(),
        };
        let kind = match entry.kind {
            Some(kind) => kind.to_string(),
            None => format!("unknown kind {}", entry.code),
        };
        let step = entry.step.map_or(String::new(), |index| format!(" #{index}"));
        let text = entry.text.as_deref().map_or(String::new(), |text| format!(": {text}"));
        let _ = writeln!(out, "  {when:>10}  {kind}{step}{text}");
    }
    out
}
