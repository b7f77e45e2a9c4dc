//! A [`DriftReport`] for people: text for terminals (aligned, coloured when asked), Markdown (a
//! PR comment or a ticket) and HTML (one self-contained file, inline CSS, no external assets).
//! JSON is the report's own serialisation (`schemas/drift.schema.json`). Pure: string in, out.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::drift::{human, policy_word, rfc3339, AppDrift, DriftReport, DriftState};
use crate::report::Style;

/// Output formats of `baton drift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DriftFormat {
    Text,
    Json,
    Markdown,
    Html,
}

/// Render `report` in `format`.
pub fn render(report: &DriftReport, format: DriftFormat, style: Style) -> String {
    match format {
        DriftFormat::Text => text(report, style),
        DriftFormat::Json => {
            let mut s = serde_json::to_string_pretty(report)
                .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            s.push('\n');
            s
        }
        DriftFormat::Markdown => markdown(report),
        DriftFormat::Html => html(report),
    }
}

/// The apps a report lists one by one: all but in-sync apps and plain unmanaged ones (those are
/// counted; a Marathon shared by many teams has many).
fn listed(report: &DriftReport) -> impl Iterator<Item = &AppDrift> {
    report.apps.iter().filter(|a| match a.state {
        DriftState::InSync => false,
        DriftState::Unmanaged => a.note.is_some(),
        _ => true,
    })
}

fn summary_line(report: &DriftReport) -> String {
    let s = &report.summary;
    // Pending deploys are transient: named only when there are some.
    let pending = if s.pending > 0 {
        format!(", {} pending", s.pending)
    } else {
        String::new()
    };
    format!(
        "{} drifted, {} missing{pending}, {} failed, {} invalid, {} in sync, {} unmanaged",
        s.drifted, s.missing, s.failed, s.invalid, s.in_sync, s.unmanaged
    )
}

/// `2026-11-19 10:00:00Z (5m ago)`.
fn when(ms: u64, now: u64) -> String {
    format!(
        "{} ({} ago)",
        short_time(ms),
        human(Duration::from_millis(now.saturating_sub(ms)))
    )
}

fn short_time(ms: u64) -> String {
    let t = rfc3339(ms);
    // 2026-11-19T10:00:00.000Z -> 2026-11-19 10:00:00Z
    match (t.get(..10), t.get(11..19)) {
        (Some(d), Some(h)) => format!("{d} {h}Z"),
        _ => t,
    }
}

fn changed_by(a: &AppDrift) -> String {
    match &a.changed_by {
        Some(c) => format!("{} via {} at {}", c.client_ip, c.uri, short_time(c.at)),
        None => "-".into(),
    }
}

fn policy(a: &AppDrift) -> String {
    a.policy
        .as_ref()
        .map(policy_word)
        .unwrap_or_else(|| "-".into())
}

/// A JSON value on one line, shortened to `max` characters.
fn shown(v: Option<&Value>, max: usize) -> String {
    match v {
        None => "(absent)".into(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > max {
                format!(
                    "{}...",
                    s.chars().take(max.saturating_sub(3)).collect::<String>()
                )
            } else {
                s
            }
        }
    }
}

fn pointer(p: &str) -> &str {
    if p.is_empty() {
        "(app)"
    } else {
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Text

fn paint_state(style: Style, state: DriftState, padded: &str) -> String {
    let code = match state {
        DriftState::InSync => "32",
        DriftState::Drifted | DriftState::Missing => "33",
        DriftState::Pending => "36",
        DriftState::Failed | DriftState::Invalid => "31",
        DriftState::Unmanaged => "2",
    };
    if style.color {
        format!("\x1b[{code}m{padded}\x1b[0m")
    } else {
        padded.to_string()
    }
}

fn bold(style: Style, s: &str) -> String {
    if style.color {
        format!("\x1b[1m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn dim(style: Style, s: &str) -> String {
    if style.color {
        format!("\x1b[2m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// A table of the listed apps (columns aligned on their visible width), each followed by its
/// field differences, then notes.
pub fn text(report: &DriftReport, style: Style) -> String {
    let mut out = String::new();
    let verdict = if report.has_drift() {
        "Drift:"
    } else {
        "No drift:"
    };
    let _ = writeln!(
        out,
        "{} {} (owner {}, {})",
        bold(style, verdict),
        summary_line(report),
        report.owner,
        short_time(report.generated_at)
    );
    let apps: Vec<&AppDrift> = listed(report).collect();
    if apps.is_empty() {
        return out;
    }
    let header = ["APP", "STATE", "SINCE", "CHANGED BY", "POLICY"].map(String::from);
    let rows: Vec<[String; 5]> = apps
        .iter()
        .map(|a| {
            [
                a.app.to_string(),
                a.state.word().to_string(),
                a.since
                    .map(|s| when(s, report.generated_at))
                    .unwrap_or_else(|| "-".into()),
                changed_by(a),
                policy(a),
            ]
        })
        .collect();
    let mut width = [0usize; 5];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let pad = |s: &str, w: usize| format!("{s:<w$}");
    let _ = writeln!(out);
    let head: Vec<String> = header.iter().zip(width).map(|(h, w)| pad(h, w)).collect();
    let _ = writeln!(out, "  {}", dim(style, head.join("  ").trim_end()));
    for (a, r) in apps.iter().zip(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(width)
            .enumerate()
            .map(|(i, (c, w))| {
                let p = pad(c, w);
                if i == 1 {
                    paint_state(style, a.state, &p)
                } else {
                    p
                }
            })
            .collect();
        let _ = writeln!(out, "  {}", cells.join("  ").trim_end());
        let pw = a
            .fields
            .iter()
            .map(|f| pointer(&f.pointer).chars().count())
            .max()
            .unwrap_or(0);
        let gits: Vec<String> = a
            .fields
            .iter()
            .map(|f| shown(f.desired.as_ref(), 60))
            .collect();
        let gw = gits.iter().map(|g| g.chars().count()).max().unwrap_or(0);
        for (f, g) in a.fields.iter().zip(&gits) {
            let _ = writeln!(
                out,
                "      {}  {} {}  {} {}",
                pad(pointer(&f.pointer), pw),
                dim(style, "git"),
                pad(g, gw),
                dim(style, "live"),
                shown(f.live.as_ref(), 60)
            );
        }
        if let Some(n) = &a.note {
            let _ = writeln!(out, "      {}", dim(style, n));
        }
    }
    let plain_unmanaged = report
        .apps
        .iter()
        .filter(|a| a.state == DriftState::Unmanaged && a.note.is_none())
        .count();
    if plain_unmanaged > 0 {
        let _ = writeln!(
            out,
            "\n  {}",
            dim(
                style,
                &format!(
                    "{plain_unmanaged} unmanaged apps (not owned by `{}`, not in git) not listed",
                    report.owner
                )
            )
        );
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Markdown

/// A Markdown code span that survives any content (pipes escaped for tables).
fn md_code(s: &str) -> String {
    let s = s.replace('|', "\\|").replace('\n', " ");
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

fn md_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '|' | '*' | '_' | '`' | '<' | '>' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(if c == '\n' { ' ' } else { c });
    }
    out
}

/// A summary table of the listed apps, then one section per app with its field table.
pub fn markdown(report: &DriftReport) -> String {
    let mut out = String::new();
    let icon = if report.has_drift() { "⚠️" } else { "✅" };
    let _ = writeln!(
        out,
        "## {icon} Drift report: owner {}\n",
        md_code(&report.owner)
    );
    let _ = writeln!(
        out,
        "{} (at {})\n",
        summary_line(report),
        short_time(report.generated_at)
    );
    let apps: Vec<&AppDrift> = listed(report).collect();
    if apps.is_empty() {
        let _ = writeln!(out, "Every app runs as git says.");
        return out;
    }
    let _ = writeln!(out, "| App | State | Since | Changed by | Policy |");
    let _ = writeln!(out, "|---|---|---|---|---|");
    for a in &apps {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            md_code(a.app.as_str()),
            a.state.word(),
            a.since
                .map(|s| when(s, report.generated_at))
                .unwrap_or_else(|| "-".into()),
            md_text(&changed_by(a)),
            md_text(&policy(a)),
        );
    }
    for a in apps
        .iter()
        .filter(|a| !a.fields.is_empty() || a.note.is_some())
    {
        let _ = writeln!(
            out,
            "\n### {} ({})\n",
            md_code(a.app.as_str()),
            a.state.word()
        );
        if let Some(n) = &a.note {
            let _ = writeln!(out, "{}", md_text(n));
        }
        if !a.fields.is_empty() {
            if a.note.is_some() {
                out.push('\n');
            }
            let _ = writeln!(out, "| Field | Git | Live |");
            let _ = writeln!(out, "|---|---|---|");
            for f in &a.fields {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    md_code(pointer(&f.pointer)),
                    md_code(&shown(f.desired.as_ref(), 200)),
                    md_code(&shown(f.live.as_ref(), 200))
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Text safe inside HTML elements and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const HTML_STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1d232b}\
h1{font-size:1.3rem}table{border-collapse:collapse;margin:.5rem 0 1.2rem}\
th,td{border-bottom:1px solid #dde2e8;padding:.3rem .7rem;text-align:left;vertical-align:top}\
th{background:#f3f5f8}code{font:12px ui-monospace,monospace;background:#f3f5f8;padding:1px 4px;border-radius:3px}\
.s{font-weight:600;border-radius:3px;padding:1px 6px}.drifted,.missing{background:#fff1c2}\
.pending{background:#dcecff}.failed,.invalid{background:#ffd9d6}.in_sync{background:#d8f5dc}.unmanaged{background:#eceff3}\
.git{color:#0b6b2b}.live{color:#a4120a}.note{color:#59636e}";

/// One self-contained HTML file.
pub fn html(report: &DriftReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Baton drift report: {}</title><style>{HTML_STYLE}</style></head><body>\n",
        escape_html(&report.owner)
    );
    let _ = writeln!(
        out,
        "<h1>Drift report: owner <code>{}</code></h1>\n<p>{} <span class=\"note\">(at {})</span></p>",
        escape_html(&report.owner),
        escape_html(&summary_line(report)),
        escape_html(&short_time(report.generated_at))
    );
    let apps: Vec<&AppDrift> = listed(report).collect();
    if apps.is_empty() {
        out.push_str("<p>Every app runs as git says.</p>\n");
    } else {
        out.push_str("<table><thead><tr><th>App</th><th>State</th><th>Since</th><th>Changed by</th><th>Policy</th></tr></thead><tbody>\n");
        for a in &apps {
            let _ = writeln!(
                out,
                "<tr><td><a href=\"#app-{id}\"><code>{id}</code></a></td><td><span class=\"s {cls}\">{state}</span></td><td>{since}</td><td>{by}</td><td>{policy}</td></tr>",
                id = escape_html(a.app.as_str()),
                cls = state_class(a.state),
                state = a.state.word(),
                since = escape_html(&a.since.map(|s| when(s, report.generated_at)).unwrap_or_else(|| "-".into())),
                by = escape_html(&changed_by(a)),
                policy = escape_html(&policy(a)),
            );
        }
        out.push_str("</tbody></table>\n");
        for a in apps
            .iter()
            .filter(|a| !a.fields.is_empty() || a.note.is_some())
        {
            let _ = writeln!(
                out,
                "<h2 id=\"app-{id}\"><code>{id}</code> <span class=\"s {cls}\">{state}</span></h2>",
                id = escape_html(a.app.as_str()),
                cls = state_class(a.state),
                state = a.state.word()
            );
            if let Some(n) = &a.note {
                let _ = writeln!(out, "<p class=\"note\">{}</p>", escape_html(n));
            }
            if !a.fields.is_empty() {
                out.push_str("<table><thead><tr><th>Field</th><th>Git</th><th>Live</th></tr></thead><tbody>\n");
                for f in &a.fields {
                    let _ = writeln!(
                        out,
                        "<tr><td><code>{}</code></td><td class=\"git\"><code>{}</code></td><td class=\"live\"><code>{}</code></td></tr>",
                        escape_html(pointer(&f.pointer)),
                        escape_html(&shown(f.desired.as_ref(), 500)),
                        escape_html(&shown(f.live.as_ref(), 500))
                    );
                }
                out.push_str("</tbody></table>\n");
            }
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn state_class(s: DriftState) -> &'static str {
    match s {
        DriftState::InSync => "in_sync",
        DriftState::Drifted => "drifted",
        DriftState::Pending => "pending",
        DriftState::Missing => "missing",
        DriftState::Unmanaged => "unmanaged",
        DriftState::Failed => "failed",
        DriftState::Invalid => "invalid",
    }
}

#[cfg(test)]
mod tests;
