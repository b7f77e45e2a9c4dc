//! The one-shot commands (`validate`, `plan`): wiring of source -> spec -> scheduler -> plan ->
//! report, with the exit codes documented in the README.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::plan::{self, Plan, Policy};
use crate::report::{self, Style, ValidateReport};
use crate::scheduler::live::apps_from_response;
use crate::spec::{self, Repo};

/// Exit codes: the contract scripts rely on.
pub mod exit {
    /// Valid / no changes / converged.
    pub const OK: u8 = 0;
    /// Invalid input or an error.
    pub const ERROR: u8 = 1;
    /// `plan`: there are changes. `drift`: there is drift.
    pub const CHANGES: u8 = 2;
    /// `apply`: some apps failed.
    pub const APPS_FAILED: u8 = 3;
    /// Bad usage (flags).
    pub const USAGE: u8 = 64;
}

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Errors of the command layer (the library's own errors, with context).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("cannot read live state from {path}: {reason}")]
    Live { path: PathBuf, reason: String },
    #[error(transparent)]
    Scheduler(#[from] crate::scheduler::SchedulerError),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Read and load a repo directory.
pub fn load_repo(dir: &Path) -> Result<Repo, CommandError> {
    let snapshot = crate::source::read_dir(dir)?;
    Ok(spec::load(snapshot))
}

/// `baton validate`: exit 0 when valid, 1 when not.
pub fn validate(dir: &Path, format: Format, style: Style, out: &mut dyn Write) -> Result<u8, CommandError> {
    let repo = load_repo(dir)?;
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &ValidateReport::new(&repo))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Text => write!(out, "{}", report::diagnostics_text(&repo, style))?,
    }
    Ok(if repo.is_valid() { exit::OK } else { exit::ERROR })
}

/// Where `plan` gets the live state from.
#[derive(Debug, Clone)]
pub enum LiveFrom {
    /// A saved `GET /v2/apps` response (or a group dump).
    File(PathBuf),
    /// A Marathon-compatible API.
    Scheduler(crate::scheduler::marathon::MarathonConfig),
}

/// Fetch the live apps.
pub async fn live_apps(from: &LiveFrom) -> Result<Vec<serde_json::Value>, CommandError> {
    match from {
        LiveFrom::File(path) => {
            let live_err = |reason: String| CommandError::Live {
                path: path.clone(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| live_err(e.to_string()))?;
            let doc: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| live_err(e.to_string()))?;
            apps_from_response(&doc).map_err(live_err)
        }
        LiveFrom::Scheduler(config) => {
            let client = crate::scheduler::marathon::Marathon::new(config.clone())?;
            Ok(client.list_apps_raw().await?)
        }
    }
}

/// `baton plan`: exit 0 no changes, 2 changes, 1 error (including invalid specs, which are shown
/// and left untouched).
pub async fn plan(
    dir: &Path,
    live: &LiveFrom,
    policy: &Policy,
    format: Format,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let repo = load_repo(dir)?;
    let live = live_apps(live).await?;
    let plan = plan::plan(&repo, &live, policy);
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &PlanReport::new(&repo, &plan))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Text => {
            if !repo.diagnostics.is_empty() {
                write!(out, "{}", report::diagnostics_text(&repo, style))?;
            }
            write!(out, "{}", report::plan_text(&plan, style))?;
        }
    }
    Ok(if !repo.is_valid() {
        exit::ERROR
    } else if plan.is_empty() {
        exit::OK
    } else {
        exit::CHANGES
    })
}

/// The JSON report of `baton plan`: the plan plus the diagnostics that shaped it.
#[derive(Debug, serde::Serialize)]
pub struct PlanReport<'a> {
    pub valid: bool,
    pub plan: &'a Plan,
    pub diagnostics: &'a [spec::Diagnostic],
}

impl<'a> PlanReport<'a> {
    pub fn new(repo: &'a Repo, plan: &'a Plan) -> Self {
        PlanReport {
            valid: repo.is_valid(),
            plan,
            diagnostics: &repo.diagnostics,
        }
    }
}
