//! Output of diagnostics and plans: text for terminals (grouped, coloured when asked) and JSON
//! (the shapes in `schemas/validate.schema.json` and `schemas/plan.schema.json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

use crate::plan::{Action, Plan};
use crate::spec::{Diagnostic, Repo, Severity};

/// ANSI colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn red(&self, s: &str) -> String {
        self.paint("31", s)
    }
    fn green(&self, s: &str) -> String {
        self.paint("32", s)
    }
    fn yellow(&self, s: &str) -> String {
        self.paint("33", s)
    }
    fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// The JSON report of `baton validate`.
#[derive(Debug, Serialize)]
pub struct ValidateReport<'a> {
    pub valid: bool,
    pub apps: usize,
    pub invalid_apps: usize,
    pub errors: usize,
    pub warnings: usize,
    pub diagnostics: &'a [Diagnostic],
}

impl<'a> ValidateReport<'a> {
    pub fn new(repo: &'a Repo) -> Self {
        let errors = count(&repo.diagnostics, Severity::Error);
        ValidateReport {
            valid: errors == 0,
            apps: repo.specs.len(),
            invalid_apps: repo.invalid.len(),
            errors,
            warnings: count(&repo.diagnostics, Severity::Warning),
            diagnostics: &repo.diagnostics,
        }
    }
}

fn count(d: &[Diagnostic], s: Severity) -> usize {
    d.iter().filter(|x| x.severity == s).count()
}

/// Diagnostics grouped by file, one line each, then a summary line.
pub fn diagnostics_text(repo: &Repo, style: Style) -> String {
    let mut out = String::new();
    let mut by_file: BTreeMap<&PathBuf, Vec<&Diagnostic>> = BTreeMap::new();
    for d in &repo.diagnostics {
        by_file.entry(&d.file).or_default().push(d);
    }
    for (file, diags) in &by_file {
        let _ = writeln!(out, "{}", style.bold(&file.display().to_string()));
        for d in diags {
            let level = match d.severity {
                Severity::Error => style.red("error  "),
                Severity::Warning => style.yellow("warning"),
            };
            let pos = match (d.line, d.column) {
                (Some(l), Some(c)) => format!("{l}:{c}"),
                (Some(l), None) => format!("{l}"),
                _ => "-".to_string(),
            };
            let pointer = if d.pointer.is_empty() {
                String::new()
            } else {
                format!(" {}", style.dim(&d.pointer))
            };
            let _ = writeln!(out, "  {level} {pos:>7}{pointer}: {}", d.message);
        }
    }
    let r = ValidateReport::new(repo);
    let verdict = if r.valid {
        style.green("valid")
    } else {
        style.red("invalid")
    };
    let _ = writeln!(
        out,
        "{verdict}: {} apps, {} invalid; {} errors, {} warnings in {} files",
        r.apps,
        r.invalid_apps,
        r.errors,
        r.warnings,
        by_file.len()
    );
    out
}

/// A plan for a terminal: a summary, then each wave with its changes and their fields.
pub fn plan_text(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    let s = &plan.summary;
    let _ = writeln!(
        out,
        "{} {} to create, {} to update, {} to delete, {} unchanged (owner {}{}, commit {})",
        style.bold("Plan:"),
        s.create,
        s.update,
        s.delete,
        s.unchanged,
        plan.owner,
        if plan.owner_explicit {
            ""
        } else {
            " by default"
        },
        short(&plan.commit)
    );
    if plan.is_empty() {
        let _ = writeln!(out, "No changes: the scheduler matches the repo.");
    }
    for (i, wave) in plan.waves.iter().enumerate() {
        let _ = writeln!(out, "{}", style.dim(&format!("wave {}", i + 1)));
        for c in &wave.changes {
            let (mark, word) = match c.action {
                Action::Create => (style.green("+"), style.green("create")),
                Action::Update if c.adopt => (style.yellow("~"), style.yellow("adopt ")),
                Action::Update => (style.yellow("~"), style.yellow("update")),
                Action::Delete => (style.red("-"), style.red("delete")),
            };
            let file = c
                .file
                .as_ref()
                .map(|f| style.dim(&format!("  ({})", f.display())))
                .unwrap_or_default();
            let _ = writeln!(out, "  {mark} {word} {}{file}", c.app);
            for f in &c.fields {
                let _ = writeln!(
                    out,
                    "      {}: {} {} {}",
                    f.pointer,
                    style.red(&shown(f.live.as_ref())),
                    style.dim("->"),
                    style.green(&shown(f.desired.as_ref()))
                );
            }
        }
    }
    for m in &plan.moves {
        let _ = writeln!(
            out,
            "{} {} -> {} (same definition)",
            style.bold("move:"),
            m.from,
            m.to
        );
    }
    // One line per reason: a held budget lists every app once, not the reason eight times.
    let mut by_reason: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for h in &plan.held {
        by_reason
            .entry(&h.reason)
            .or_default()
            .push(h.app.to_string());
    }
    for (reason, apps) in by_reason {
        let _ = writeln!(
            out,
            "{} {}: {reason}",
            style.yellow(&format!(
                "held {} delete{}:",
                apps.len(),
                if apps.len() == 1 { "" } else { "s" }
            )),
            apps.join(", ")
        );
    }
    for c in &plan.conflicts {
        let _ = writeln!(
            out,
            "{} {} is owned by `{}`; left alone",
            style.yellow("conflict:"),
            c.app,
            c.owner
        );
    }
    if !plan.invalid.is_empty() {
        let ids: Vec<String> = plan.invalid.iter().map(|i| i.to_string()).collect();
        let _ = writeln!(
            out,
            "{} {} (spec invalid; left untouched)",
            style.red("invalid:"),
            ids.join(", ")
        );
    }
    if !plan.unmanaged.is_empty() {
        let _ = writeln!(
            out,
            "{} {} apps not owned by `{}` (never touched)",
            style.dim("unmanaged:"),
            plan.unmanaged.len(),
            plan.owner
        );
    }
    out.push_str(&ownership_notes(plan, style));
    out
}

/// What the repo's ownership settings keep Baton from doing, for a terminal (plan and apply):
/// live apps of this owner outside `idPrefixes`, and, without an explicit `owner`, that nothing
/// is deleted (unless a held delete already says so).
pub fn ownership_notes(plan: &Plan, style: Style) -> String {
    let mut out = String::new();
    if !plan.out_of_scope.is_empty() {
        let ids: Vec<String> = plan.out_of_scope.iter().map(|i| i.to_string()).collect();
        let prefixes: Vec<String> = (plan.id_prefixes.iter().flatten())
            .map(|p| format!("`{p}`"))
            .collect();
        let _ = writeln!(
            out,
            "{} {} labelled `{}` but outside idPrefixes ({}); never touched",
            style.yellow("out of scope:"),
            ids.join(", "),
            plan.owner,
            prefixes.join(", ")
        );
    }
    if !plan.owner_explicit && plan.held_for_no_owner().next().is_none() {
        let _ = writeln!(
            out,
            "{} {}",
            style.yellow("note:"),
            crate::plan::no_owner_reason(&plan.owner)
        );
    }
    out
}

fn short(commit: &str) -> &str {
    if commit.len() > 12 && commit.chars().all(|c| c.is_ascii_hexdigit()) {
        &commit[..12]
    } else {
        commit
    }
}

fn shown(v: Option<&Value>) -> String {
    match v {
        None => "(absent)".to_string(),
        Some(v) => {
            let s = v.to_string();
            if s.chars().count() > 120 {
                format!("{}...", s.chars().take(117).collect::<String>())
            } else {
                s
            }
        }
    }
}

/// The Vault part of a plan and how it was made.
#[derive(Debug, serde::Serialize)]
pub struct VaultReport {
    /// `observed`: compared with Vault's current objects; `unknown`: no Vault access.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    #[serde(flatten)]
    pub plan: crate::secrets::VaultPlan,
}

/// The Vault part of `baton plan` for a terminal: [`crate::secrets::vault_plan_text`] plus how
/// it was made.
pub fn vault_text(v: &VaultReport) -> String {
    let mut out = crate::secrets::vault_plan_text(&v.plan);
    if let Some(note) = v.note {
        out.push_str(&format!("  note: {note}\n"));
    }
    out
}
