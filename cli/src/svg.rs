//! A transaction's timeline as an SVG picture (`show ID --svg FILE`): one
//! lane per step on one time axis, its run as a bar coloured by how it
//! ended, its rollback as a mark where it ended (the journal keeps when a
//! rollback ended, not when it began: rollbacks run latest step first), the
//! decision as a line across every lane. Readable in a browser; hover a
//! bar for its times.

use std::fmt::Write as _;

use transaction_manager::journal::inspect::{History, StepState};

use crate::timeline::{Lane, lanes};

const LABEL: f64 = 170.0;
const AXIS: f64 = 600.0;
const LANE: f64 = 30.0;
const TOP: f64 = 64.0;
const BAR: f64 = 14.0;

const RAN: &str = "#2e7d32";
const UNCERTAIN: &str = "#9e9e9e";
const UNDONE: &str = "#ef6c00";
const FAILED: &str = "#c62828";
const DECISION: &str = "#1565c0";

/// Escapes text for SVG (XML).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The picture of `t`, or `None` if its journal keeps no times.
pub(crate) fn svg(t: &History) -> Option<String> {
    let t0 = t.started_at?;
    let end = t.entries.iter().filter_map(|entry| entry.at).max().unwrap_or(t0);
    let span = end.saturating_sub(t0).max(1);
    let x = |ms: u64| LABEL + (ms.min(span) as f64) * AXIS / span as f64;
    let (lanes, decision) = lanes(t);
    let height = TOP + LANE * (lanes.len() as f64 + 1.0) + 40.0;
    let width = LABEL + AXIS + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let title = format!("{} `{}`: {}", t.id, t.operation.as_deref().unwrap_or("-"), t.state);
    let _ = writeln!(out, "<title>{}</title>", escape(&title));
    let _ = writeln!(out, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#, escape(&title));
    let _ = writeln!(
        out,
        r##"<text x="10" y="38" fill="#555">0 = {}, {span} ms across</text>"##,
        escape(&crate::render::time(Some(t0)))
    );
    // The axis, with ticks at 0, a half and the end.
    let axis_y = TOP - 8.0;
    let _ = writeln!(out, r##"<line x1="{LABEL}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#999"/>"##, LABEL + AXIS);
    for ms in [0, span / 2, span] {
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{}" fill="#555" text-anchor="middle">{ms} ms</text>"##,
            x(ms),
            axis_y - 4.0
        );
    }
    for (i, lane) in lanes.iter().enumerate() {
        lane_svg(&mut out, i, lane, &x);
    }
    if let Some((kind, at)) = &decision {
        let bottom = TOP + LANE * lanes.len() as f64 + 6.0;
        let _ = writeln!(
            out,
            r#"<g class="decision"><line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{bottom}" stroke="{DECISION}" stroke-dasharray="4 3"/><text x="{0:.1}" y="{2}" fill="{DECISION}" text-anchor="{4}">{3} +{at} ms</text></g>"#,
            x(*at),
            TOP - 4.0,
            bottom + 14.0,
            escape(kind),
            if x(*at) > LABEL + AXIS * 0.75 { "end" } else { "middle" }
        );
    }
    let legend_y = height - 12.0;
    let mut legend_x = 10.0;
    for (colour, what) in [
        (RAN, "ran, completed"),
        (UNCERTAIN, "did not complete"),
        (UNDONE, "rollback ended"),
        (FAILED, "rollback failed"),
    ] {
        let _ = writeln!(
            out,
            r#"<rect x="{legend_x}" y="{}" width="12" height="10" fill="{colour}"/><text x="{}" y="{legend_y}">{what}</text>"#,
            legend_y - 9.0,
            legend_x + 16.0
        );
        legend_x += 150.0;
    }
    out.push_str("</svg>\n");
    Some(out)
}

fn lane_svg(out: &mut String, i: usize, lane: &Lane, x: &impl Fn(u64) -> f64) {
    let y = TOP + LANE * i as f64;
    let bar_y = y + (LANE - BAR) / 2.0;
    let _ = writeln!(out, r#"<g class="lane" data-step="{}">"#, escape(&lane.label));
    if i % 2 == 0 {
        let _ =
            writeln!(out, r##"<rect x="0" y="{y}" width="{}" height="{LANE}" fill="#f5f5f5"/>"##, LABEL + AXIS + 30.0);
    }
    let _ = writeln!(out, r#"<text x="10" y="{:.1}">{}</text>"#, y + LANE / 2.0 + 4.0, escape(&lane.label));
    let bar = |out: &mut String, from: u64, to: u64, colour: &str, what: &str| {
        let width = (x(to) - x(from)).max(3.0);
        let _ = writeln!(
            out,
            r#"<rect class="run" x="{:.1}" y="{bar_y}" width="{width:.1}" height="{BAR}" rx="2" fill="{colour}"><title>{}: +{from} ms to +{to} ms</title></rect>"#,
            x(from),
            escape(what)
        );
    };
    let mark = |out: &mut String, at: u64, colour: &str, what: &str| {
        let _ = writeln!(
            out,
            r#"<path class="rollback" d="M {:.1} {} l -8 {} l 8 {} z" fill="{colour}"><title>{}: ended at +{at} ms</title></path>"#,
            x(at),
            bar_y - 2.0,
            BAR / 2.0 + 2.0,
            BAR / 2.0 + 2.0,
            escape(what)
        );
    };
    match (lane.start, lane.done) {
        (Some(start), Some(done)) => bar(out, start, done, RAN, "ran and completed"),
        (Some(start), None) => bar(out, start, lane.settled.unwrap_or(start), UNCERTAIN, "did not complete"),
        _ => {}
    }
    if let Some(at) = lane.settled {
        match lane.state {
            StepState::Undone => mark(out, at, UNDONE, "rolled back"),
            StepState::UndoFailed => mark(out, at, FAILED, "rollback failed for good"),
            _ => {}
        }
    }
    out.push_str("</g>\n");
}
