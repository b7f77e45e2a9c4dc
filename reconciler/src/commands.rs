//! The one-shot commands (`validate`, `plan`, `apply`): wiring of source -> spec -> scheduler -> plan ->
//! report, with the exit codes documented in the README.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::apply::{self, ApplyOptions, ApplyReport, Outcome, ProgressEvent};
use crate::environment::RepoDir;
use baton_core::app::live::apps_from_text;
use baton_core::plan::{self, Plan, Policy};
use baton_core::report::{self, Style, ValidateReport};
use baton_core::spec::{self, Repo};
use baton_marathon::Scheduler;

/// Exit codes: the contract scripts rely on.
pub mod exit {
    /// Valid / no changes / converged.
    pub const OK: u8 = 0;
    /// Invalid input or an error.
    pub const ERROR: u8 = 1;
    /// `plan`: there are changes. `drift`: there is drift.
    pub const CHANGES: u8 = 2;
    /// `apply`: some apps failed. `status`, `sync --wait`: an app failed.
    pub const APPS_FAILED: u8 = 3;
    /// A client of `baton serve` (`status`, `sync`, `history`, `rollout`): the server is
    /// unreachable or refused the API token.
    pub const SERVER: u8 = 4;
    /// Bad usage: flags, environment or config file (clap's own errors included, which
    /// would otherwise exit 2, the code of "changes").
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
    Scheduler(#[from] baton_marathon::SchedulerError),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
    #[error(transparent)]
    Ledger(#[from] crate::daemon::ledger_file::LedgerError),
    #[error("Vault: {0}")]
    Vault(#[from] crate::secret_zero::vault_admin::VaultAdminError),
    /// A Vault error naming the address asked (it may be an environment's `vaultAddr`).
    #[error("Vault at {addr}: {source}")]
    VaultAt {
        addr: String,
        source: crate::secret_zero::vault_admin::VaultAdminError,
    },
    /// `--app` named apps that are neither in the repo nor on the scheduler (bad usage: 64).
    #[error("--app: no app {apps} in the repo or on the scheduler")]
    UnknownApps { apps: String },
    /// A task that reads the repo beside another did not finish (it panicked).
    #[error("reading the repo stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Environment(#[from] crate::environment::EnvironmentError),
}

/// Whether the one-shot commands free what they loaded before they return (the default).
/// `main` turns it off with [`leave_memory_to_exit`]: the process ends right after the
/// command, and the OS takes its memory back at once, where freeing a 10,000-app repo and
/// live state value by value cost 7% of `baton plan`'s instructions (mostly values freed on
/// another thread than the one that built them). Library callers and tests keep the default.
static FREE_ON_RETURN: AtomicBool = AtomicBool::new(true);

/// For `main`: the process exits after this command, so the one-shot commands (`validate`,
/// `plan`, `drift`) need not free what they loaded.
pub fn leave_memory_to_exit() {
    FREE_ON_RETURN.store(false, Ordering::Relaxed);
}

/// The end of a one-shot command's large data: dropped, or left to the process exit (see
/// [`FREE_ON_RETURN`]).
fn dispose<T>(value: T) {
    if FREE_ON_RETURN.load(Ordering::Relaxed) {
        drop(value);
    } else {
        std::mem::forget(value);
    }
}

/// Read and load a repo directory.
pub fn load_repo(dir: &Path) -> Result<Repo, CommandError> {
    load_repo_as(dir.into())
}

/// Read and load a repo directory as its environment sees it, when one is named.
pub fn load_repo_as(dir: RepoDir) -> Result<Repo, CommandError> {
    crate::environment::read(&dir, spec::load::Keep::Definitions)
}

/// The repo and the live apps. From a scheduler they are read at the same time: loading the
/// repo is CPU work, the fetch mostly waiting on the network, and neither needs the other (a
/// repo that cannot be read is the error reported when both fail). From a file, one after the
/// other: both are CPU work on the same threads, so doing them together gains nothing, and
/// the repo's files and parser are freed before the live state is read, so the two peaks of
/// memory do not add up.
async fn load_repo_and_live(
    dir: RepoDir,
    live: &LiveFrom,
) -> Result<(Repo, Vec<serde_json::Value>), CommandError> {
    if let LiveFrom::File(_) = live {
        let repo = load_repo_as(dir)?;
        return Ok((repo, live_apps(live).await?));
    }
    let loading = tokio::task::spawn_blocking(move || load_repo_as(dir));
    let live = live_apps(live).await;
    let repo = loading.await??;
    Ok((repo, live?))
}

/// `baton validate`: exit 0 when valid, 1 when not.
pub fn validate(
    dir: &Path,
    format: Format,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    // Validation reports on the definitions and needs none of them afterwards; every
    // environment is checked.
    let repo = crate::environment::read_all(dir, spec::load::Keep::Diagnostics)?;
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &ValidateReport::new(&repo))
                .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Text => write!(out, "{}", report::diagnostics_text(&repo, style))?,
    }
    let code = if repo.is_valid() {
        exit::OK
    } else {
        exit::ERROR
    };
    dispose(repo);
    Ok(code)
}

/// Where `plan` gets the live state from.
#[derive(Debug, Clone)]
pub enum LiveFrom {
    /// A saved `GET /v2/apps` response (or a group dump).
    File(PathBuf),
    /// A Marathon-compatible API.
    Scheduler(baton_marathon::marathon::MarathonConfig),
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
            apps_from_text(&text).map_err(live_err)
        }
        LiveFrom::Scheduler(config) => {
            let client = baton_marathon::marathon::Marathon::new(config.clone())?;
            Ok(client.list_apps_raw().await?)
        }
    }
}

/// `baton plan`: exit 0 no changes, 2 changes, 1 error (including invalid specs, which are shown
/// and left untouched).
pub async fn plan(
    dir: impl Into<RepoDir>,
    live: &LiveFrom,
    policy: &Policy,
    format: Format,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    plan_with_vault(
        dir,
        live,
        policy,
        &PlanSecrets::default(),
        None,
        format,
        style,
        out,
    )
    .await
}

/// `baton plan`'s secret-zero settings: Vault access (optional) and the operator's allow-list
/// of extra policies (`--vault-allowed-policies`; default none).
#[derive(Debug, Clone, Default)]
pub struct PlanSecrets {
    pub vault: Option<PlanVault>,
    pub allowed: baton_core::secrets::AllowedPolicies,
}

/// `baton plan --vault-addr ...`: how to read Vault's current `baton-*` objects.
#[derive(Debug, Clone)]
pub struct PlanVault {
    pub admin: crate::secret_zero::vault_admin::VaultAdminConfig,
    /// The gatekeeper URL `baton serve` injects; `None`: taken from the live apps.
    pub gatekeeper_url: Option<String>,
}

/// Shown in place of bootstrap values `baton plan` cannot know.
pub const NEW_ROLE_ID: &str = "<assigned when the role is created>";
pub const UNKNOWN_GATEKEEPER_URL: &str = "<set by baton serve>";

/// The note of a Vault plan made without Vault access.
pub const VAULT_UNKNOWN_NOTE: &str = "current Vault state unknown (no --vault-addr): every policy and role the repo needs is listed as a create, nothing as an update or delete; bootstrap env is taken from the live apps";

pub use baton_core::report::VaultReport;

/// `baton plan` with the Vault plan of secret zero (policies and AppRole roles to create,
/// update or delete): compared with Vault when `vault` is given, else every needed object is a
/// create and the report says the current state is unknown. Apps with a secrets issue (an
/// extra policy the operator did not allow, a name held by a Vault object that is not this
/// Baton's, ...) are shown as invalid (left untouched), as `baton serve` would.
#[allow(clippy::too_many_arguments)]
pub async fn plan_with_vault(
    dir: impl Into<RepoDir>,
    live: &LiveFrom,
    policy: &Policy,
    secrets_config: &PlanSecrets,
    only: Option<&BTreeSet<spec::AppId>>,
    format: Format,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    use baton_core::secrets::{self, env as benv};
    let vault = secrets_config.vault.as_ref();
    let (mut repo, live) = load_repo_and_live(dir.into(), live).await?;
    if let Some(apps) = only {
        check_selection(apps, &repo, &live)?;
    }
    let mut desired = secrets::desired(&repo, &secrets_config.allowed);
    let wanted = vault.is_some() || !desired.apps.is_empty() || !desired.issues.is_empty();
    let mut prepared = None;
    if wanted {
        let (live_vault, role_ids, state) = match vault {
            Some(v) => {
                let at = |source| CommandError::VaultAt {
                    addr: baton_core::userinfo::redact_url(&v.admin.addr),
                    source,
                };
                let admin = crate::secret_zero::vault_admin::VaultAdmin::new(v.admin.clone())
                    .map_err(at)?;
                let lv = admin.observe(&repo.config.owner).await.map_err(at)?;
                secrets::claim_names(&mut desired, &lv);
                if !desired.apps.is_empty() {
                    let mounts = admin.kv_mounts().await.map_err(at)?;
                    secrets::apply_kv_mounts(&mut desired, &mounts);
                }
                let ids = secrets::role_ids(&desired, &lv, &mut |_| NEW_ROLE_ID.to_string());
                if v.gatekeeper_url.is_none() {
                    secrets::carry_live_env(&mut repo, &desired, &live, &[benv::GATEKEEPER_URL]);
                }
                let boot = secrets::Bootstrap {
                    vault_addr: v.admin.addr.clone(),
                    gatekeeper_url: v
                        .gatekeeper_url
                        .clone()
                        .unwrap_or_else(|| UNKNOWN_GATEKEEPER_URL.into()),
                    approle_mount: v.admin.approle_mount.clone(),
                };
                secrets::inject_env(&mut repo, &desired, &ids, &boot);
                (lv, ids, "observed")
            }
            None => {
                secrets::carry_live_env(&mut repo, &desired, &live, &secrets::BOOTSTRAP_ENV);
                (Default::default(), Default::default(), "unknown")
            }
        };
        secrets::block_issues(&mut repo, &desired);
        prepared = Some((live_vault, role_ids, state));
    }
    let mut plan = plan::plan(&repo, &live, policy);
    // Narrowed after the whole plan was made: its safety rules (budget, ownership) hold.
    if let Some(apps) = only {
        baton_core::selection::restrict(&mut plan, apps);
    }
    let vault_report = prepared.map(|(lv, ids, state)| {
        let live_ids: Vec<spec::AppId> = live
            .iter()
            .filter_map(|a| spec::AppId::parse(a.get("id")?.as_str()?).ok())
            .collect();
        VaultReport {
            state,
            note: (state == "unknown").then_some(VAULT_UNKNOWN_NOTE),
            plan: secrets::plan_vault(
                &desired,
                &lv,
                &ids,
                &repo,
                &plan,
                &live_ids,
                policy.allow_deletes,
            ),
        }
    });
    match format {
        Format::Json => {
            let mut report = PlanReport::new(&repo, &plan);
            report.vault = vault_report.as_ref();
            // Buffered: a terminal's stdout is line-buffered, and a large plan has a line per id.
            let mut buffered = std::io::BufWriter::new(&mut *out);
            serde_json::to_writer_pretty(&mut buffered, &report).map_err(std::io::Error::from)?;
            writeln!(buffered)?;
            buffered.flush()?;
        }
        Format::Text => {
            if !repo.diagnostics.is_empty() {
                write!(out, "{}", report::diagnostics_text(&repo, style))?;
            }
            write!(out, "{}", report::plan_text(&plan, style))?;
            if let Some(v) = &vault_report {
                write!(out, "{}", report::vault_text(v))?;
            }
        }
    }
    let vault_changes = vault_report.as_ref().is_some_and(|v| !v.plan.is_empty());
    let code = if !repo.is_valid() {
        exit::ERROR
    } else if plan.is_empty() && !vault_changes {
        exit::OK
    } else {
        exit::CHANGES
    };
    dispose((repo, live, plan, desired, vault_report));
    Ok(code)
}

/// `--app`: every app named must be in the repo or on the scheduler.
fn check_selection(
    apps: &BTreeSet<spec::AppId>,
    repo: &Repo,
    live: &[serde_json::Value],
) -> Result<(), CommandError> {
    let unknown = baton_core::selection::unknown(apps, repo, live);
    if unknown.is_empty() {
        return Ok(());
    }
    let apps: Vec<&str> = unknown.iter().map(|a| a.as_str()).collect();
    Err(CommandError::UnknownApps {
        apps: apps.join(", "),
    })
}

/// The JSON report of `baton plan`: the plan plus the diagnostics that shaped it.
#[derive(Debug, serde::Serialize)]
pub struct PlanReport<'a> {
    pub valid: bool,
    pub plan: &'a Plan,
    pub diagnostics: &'a [spec::Diagnostic],
    /// Secret zero: Vault policies and roles (only when some app reads Vault secrets or Vault
    /// access was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vault: Option<&'a VaultReport>,
}

impl<'a> PlanReport<'a> {
    pub fn new(repo: &'a Repo, plan: &'a Plan) -> Self {
        PlanReport {
            valid: repo.is_valid(),
            plan,
            diagnostics: &repo.diagnostics,
            vault: None,
        }
    }
}

/// How `apply` shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressOutput {
    /// One line per app and state change, on stdout (terminals, `--log-format text`).
    Lines,
    /// `tracing` events (structured logs with `--log-format json`).
    Logs,
}

/// One progress line for a terminal, or `None` for events not worth a line.
pub fn progress_line(ev: &ProgressEvent) -> Option<String> {
    let action = |a: plan::Action| match a {
        plan::Action::Create => "create",
        plan::Action::Update => "update",
        plan::Action::Delete => "delete",
    };
    Some(match ev {
        ProgressEvent::Started { .. } => return None,
        ProgressEvent::Deploying {
            app,
            action: a,
            deployment,
        } => format!(
            "  {:<28} {:<7} deploying (deployment {deployment})",
            app.as_str(),
            action(*a)
        ),
        ProgressEvent::Locked { app, deployments } => format!(
            "  {:<28} {:<7} waiting: locked by deployment(s) {}",
            app.as_str(),
            "",
            deployments.join(", ")
        ),
        ProgressEvent::RollingBack { app, deployment } => format!(
            "  {:<28} {:<7} deadline passed: rolling back deployment {deployment}",
            app.as_str(),
            ""
        ),
        ProgressEvent::Finished { result } => {
            let detail = match &result.outcome {
                Outcome::Failed { reason } => format!(": {reason}"),
                Outcome::Skipped { because } => {
                    format!(": depends on {because}, which did not converge")
                }
                Outcome::Held { reason } => format!(": {reason}"),
                Outcome::Unfinished { deployment } => {
                    format!(": deployment {deployment} still running")
                }
                Outcome::Converged | Outcome::NotStarted => String::new(),
            };
            format!(
                "  {:<28} {:<7} {}{detail}",
                result.app.as_str(),
                action(result.action),
                result.outcome.word()
            )
        }
    })
}

/// Log a progress event with `tracing` (fields for machines).
pub fn progress_log(ev: &ProgressEvent) {
    match ev {
        ProgressEvent::Started { app, action } => {
            tracing::info!(app = %app, action = ?action, state = "writing", "apply")
        }
        ProgressEvent::Deploying {
            app,
            action,
            deployment,
        } => {
            tracing::info!(app = %app, action = ?action, state = "deploying", deployment = %deployment, "apply")
        }
        ProgressEvent::Locked { app, deployments } => {
            tracing::warn!(app = %app, state = "locked", deployments = ?deployments, "apply")
        }
        ProgressEvent::RollingBack { app, deployment } => {
            tracing::warn!(app = %app, state = "rolling_back", deployment = %deployment, "apply")
        }
        ProgressEvent::Finished { result } => {
            let reason = match &result.outcome {
                Outcome::Failed { reason } | Outcome::Held { reason } => reason.clone(),
                Outcome::Skipped { because } => format!("depends on {because}"),
                _ => String::new(),
            };
            if result.outcome.is_failure() {
                tracing::error!(app = %result.app, action = ?result.action, state = result.outcome.word(), reason = %reason, "apply")
            } else {
                tracing::info!(app = %result.app, action = ?result.action, state = result.outcome.word(), reason = %reason, "apply")
            }
        }
    }
}

/// One sync of a loaded repo: live state, plan, apply. Shared by `baton apply` and `baton dev`.
pub async fn sync<S: Scheduler>(
    repo: &Repo,
    scheduler: &S,
    policy: &Policy,
    options: &ApplyOptions,
    progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> Result<(Plan, ApplyReport), CommandError> {
    let live = scheduler.list_apps().await?;
    let plan = plan::plan(repo, &live, policy);
    let report = apply::apply(&plan, scheduler, options, progress).await;
    Ok((plan, report))
}

/// A one-line summary of an apply.
pub fn apply_summary(plan: &Plan, report: &ApplyReport) -> String {
    let n = |f: fn(&Outcome) -> bool| report.apps.iter().filter(|a| f(&a.outcome)).count();
    if plan.is_empty() && plan.held.is_empty() {
        return format!("nothing to do: {} app(s) up to date", plan.unchanged.len());
    }
    let mut s = format!(
        "{} converged, {} failed, {} skipped, {} held, {} unchanged",
        n(|o| matches!(o, Outcome::Converged)),
        n(|o| matches!(o, Outcome::Failed { .. })),
        n(|o| matches!(o, Outcome::Skipped { .. })),
        n(|o| matches!(o, Outcome::Held { .. })),
        plan.unchanged.len()
    );
    if report.cancelled {
        s.push_str(" (cancelled: the rest was not started)");
    }
    if let Some(lost) = &report.lost {
        s.push_str(&format!(" ({lost}: the rest was not started)"));
    }
    s
}

/// What `baton apply` acts on and shows beyond the whole repo's plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyScope<'a> {
    /// `--app`: only these apps (the whole plan narrowed: its safety rules hold).
    pub only: Option<&'a BTreeSet<spec::AppId>>,
    /// A terminal (or `--progress always`): the plan is shown before anything is written, and
    /// a line per app each time its task count moves while its deployment runs
    /// ([`crate::progress`]). Off, the output is what scripts parse, unchanged.
    pub terminal: bool,
}

/// `baton apply`: exit 0 converged, 3 some apps failed, 1 error (scheduler unreachable, invalid
/// specs: those are shown and left untouched while the valid ones are applied, or cancelled),
/// 64 an `--app` that names no app in the repo or on the scheduler.
#[allow(clippy::too_many_arguments)]
pub async fn apply(
    dir: impl Into<RepoDir>,
    marathon: baton_marathon::marathon::MarathonConfig,
    policy: &Policy,
    options: &ApplyOptions,
    output: ProgressOutput,
    scope: ApplyScope<'_>,
    format: Format,
    style: Style,
    out: &mut (dyn Write + Send),
) -> Result<u8, CommandError> {
    let mut repo = load_repo_as(dir.into())?;
    // One-shot apply has no gatekeeper: apps reading Vault secrets need `baton serve`.
    let desired = baton_core::secrets::desired(&repo, &Default::default());
    baton_core::secrets::block_without_vault(&mut repo, &desired);
    let scheduler = baton_marathon::marathon::Marathon::new(marathon)?;
    if !repo.diagnostics.is_empty() && format == Format::Text {
        write!(out, "{}", report::diagnostics_text(&repo, style))?;
    }
    let lines = output == ProgressOutput::Lines && format == Format::Text;
    let live = scheduler.list_apps().await?;
    if let Some(apps) = scope.only {
        check_selection(apps, &repo, &live)?;
    }
    let mut plan = plan::plan(&repo, &live, policy);
    if let Some(apps) = scope.only {
        baton_core::selection::restrict(&mut plan, apps);
    }
    let watched = lines && scope.terminal;
    if watched && !plan.is_empty() {
        write!(out, "{}", report::plan_text(&plan, style))?;
        writeln!(out, "applying:")?;
    }
    let out = std::sync::Mutex::new(out);
    let say = |line: &str| -> std::io::Result<()> {
        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(o, "{line}")
    };
    let deploying = crate::progress::Deploying::default();
    let mut write_err = None;
    let mut progress = |ev: ProgressEvent| {
        if watched {
            match &ev {
                ProgressEvent::Deploying { app, .. } => deploying.started(app),
                ProgressEvent::Finished { result } => deploying.finished(&result.app),
                _ => {}
            }
        }
        if lines {
            if let Some(line) = progress_line(&ev) {
                if let Err(e) = say(&line) {
                    write_err.get_or_insert(e);
                }
            }
        } else {
            progress_log(&ev);
        }
    };
    let applying = apply::apply(&plan, &scheduler, options, &mut progress);
    let report = if watched {
        let emit = |line: String| {
            // A progress line that cannot be written is not worth failing the apply for.
            let _ = say(&line);
        };
        tokio::select! {
            biased;
            report = applying => report,
            never = crate::progress::watch(&scheduler, &deploying, &emit) => match never {},
        }
    } else {
        applying.await
    };
    let out = out.into_inner().unwrap_or_else(|e| e.into_inner());
    crate::daemon::rollout::warn_updated_in_place(&repo, &plan);
    if let Some(e) = write_err {
        return Err(e.into());
    }
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut *out,
                &ApplyJson {
                    valid: repo.is_valid(),
                    plan: &plan,
                    report: &report,
                },
            )
            .map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Format::Text => {
            writeln!(out, "{}", apply_summary(&plan, &report))?;
            write!(out, "{}", report::ownership_notes(&plan, style))?;
        }
    }
    Ok(apply_exit_code(&repo, &report))
}

/// The exit code of an apply: 3 when an app failed, else 1 when specs were invalid, apply was
/// cancelled or the scheduler stopped answering, else 0.
pub fn apply_exit_code(repo: &Repo, report: &ApplyReport) -> u8 {
    if report.failures().next().is_some() {
        exit::APPS_FAILED
    } else if !repo.is_valid() || report.cancelled || report.lost.is_some() {
        exit::ERROR
    } else {
        exit::OK
    }
}

/// The JSON report of `baton apply --format json`.
#[derive(Debug, serde::Serialize)]
pub struct ApplyJson<'a> {
    pub valid: bool,
    pub plan: &'a Plan,
    pub report: &'a ApplyReport,
}

/// Settings of `baton drift` beyond the repo and the live source.
#[derive(Debug, Clone)]
pub struct DriftOptions {
    pub format: baton_core::drift_report::DriftFormat,
    /// `baton serve`'s state directory: its drift ledger tells since when and who (read only).
    pub state_dir: Option<PathBuf>,
    /// API changes seen on the scheduler's event stream (empty for a plain one-shot run).
    pub attributions: baton_core::drift::Attributions,
    /// Unix ms; `None`: the system clock.
    pub now: Option<u64>,
}

/// The drift report of `repo` against `live` at `now`, completed from `ledger` when there is one
/// (the ledger is not changed: a one-shot report never writes the daemon's state).
pub fn drift_report(
    repo: &Repo,
    live: &[serde_json::Value],
    attributions: &baton_core::drift::Attributions,
    ledger: Option<&baton_core::drift::Ledger>,
    now: u64,
) -> baton_core::drift::DriftReport {
    let mut report = baton_core::drift::drift(repo, live, attributions, now);
    if let Some(ledger) = ledger {
        let mut scratch = ledger.clone();
        scratch.observe(&mut report, &Default::default(), now);
        for a in &mut report.apps {
            if a.changed_by.is_none() && a.disagrees() {
                a.changed_by = ledger.open(&a.app).and_then(|e| e.changed_by.clone());
            }
        }
        report.ledger = scratch.entries;
    }
    report
}

/// `baton drift`: exit 0 no drift, 2 drift (drifted or missing apps), 1 error (including invalid
/// specs, which are reported and left alone).
pub async fn drift(
    dir: impl Into<RepoDir>,
    live: &LiveFrom,
    options: &DriftOptions,
    style: Style,
    out: &mut dyn Write,
) -> Result<u8, CommandError> {
    let (repo, live) = load_repo_and_live(dir.into(), live).await?;
    let ledger = match &options.state_dir {
        Some(d) => Some(crate::daemon::ledger_file::load(d)?),
        None => None,
    };
    let now = options.now.unwrap_or_else(unix_ms);
    let report = drift_report(&repo, &live, &options.attributions, ledger.as_ref(), now);
    if options.format == baton_core::drift_report::DriftFormat::Text && !repo.diagnostics.is_empty()
    {
        write!(out, "{}", report::diagnostics_text(&repo, style))?;
    }
    let text = baton_core::drift_report::render(&report, options.format, style);
    write!(out, "{text}")?;
    let code = if !repo.is_valid() {
        exit::ERROR
    } else if report.has_drift() {
        exit::CHANGES
    } else {
        exit::OK
    };
    dispose((repo, live, report));
    Ok(code)
}

/// The system clock in Unix milliseconds (0 before 1970, which no clock we run on reports).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_marathon::marathon::MarathonConfig;

    /// A scheduler nothing listens on, asked once.
    fn unreachable_scheduler() -> LiveFrom {
        let mut config = MarathonConfig::new("http://127.0.0.1:1");
        config.retries = 0;
        LiveFrom::Scheduler(config)
    }

    #[tokio::test]
    async fn an_unreadable_repo_is_the_error_even_when_the_scheduler_fails_too() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-repo");
        let err = load_repo_and_live((&missing).into(), &unreachable_scheduler())
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Source(_)), "{err}");
    }

    #[tokio::test]
    async fn a_scheduler_that_cannot_be_read_is_the_error_when_the_repo_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("apps")).unwrap();
        std::fs::write(dir.path().join("apps/web.yaml"), "cmd: sleep 60\n").unwrap();
        let err = load_repo_and_live(dir.path().into(), &unreachable_scheduler())
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::Scheduler(_)), "{err}");
    }

    /// `baton apply` against a scheduler that stopped answering mid-run is an error (exit 1),
    /// not a success: the apps it waited for are unfinished, not failed.
    #[test]
    fn an_apply_that_lost_the_scheduler_exits_1() {
        use baton_core::spec::AppId;
        let repo = Repo::default();
        let mut report = ApplyReport {
            apps: vec![apply::AppResult {
                app: AppId::parse("/a").unwrap(),
                action: plan::Action::Update,
                outcome: Outcome::Unfinished {
                    deployment: "d1".into(),
                },
                deployment: Some("d1".into()),
            }],
            ..ApplyReport::default()
        };
        assert_eq!(apply_exit_code(&repo, &report), exit::OK);
        report.lost = Some("the scheduler has not answered for 1m (waiting)".into());
        assert_eq!(apply_exit_code(&repo, &report), exit::ERROR);
        let mut plan = plan::plan(&repo, &[], &Policy::default());
        plan.unchanged.push(AppId::parse("/b").unwrap());
        plan.held.push(plan::Held {
            app: AppId::parse("/c").unwrap(),
            reason: "x".into(),
        });
        assert!(apply_summary(&plan, &report).contains("has not answered for 1m"));
    }
}
