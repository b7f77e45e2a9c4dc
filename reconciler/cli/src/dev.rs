//! `baton dev`: the whole loop on one machine. Starts the dev scheduler in-process on a free
//! loopback port, applies a repo (the demo in `fixtures/demo` by default), says where to look,
//! then watches the directory and applies again after every edit. Cancelling the shutdown token
//! (Ctrl-C) lets the apply in flight finish its write, stops the scheduler and waits until every
//! task process it started is gone.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use baton::apply::{ApplyOptions, ApplyReport};
use baton::commands::{self, progress_line, CommandError};
use baton_core::plan::Policy;
use baton_core::spec::AppId;
use baton_dev_scheduler::{DevConfig, DevError, TaskSessions};
use baton_marathon::marathon::{Marathon, MarathonConfig};
use baton_marathon::Scheduler;

/// The repo `baton dev` applies when none is given (relative to the working directory).
pub const DEMO_REPO: &str = "fixtures/demo";

/// Settings of `baton dev`.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// The repo directory to apply and watch.
    pub repo: PathBuf,
    /// The environment of `baton.yaml` to apply (its overlay and owner; its Marathon is not
    /// used: `baton dev` applies to its own dev scheduler). Required when the repo declares
    /// environments.
    pub environment: Option<String>,
    /// Where the scheduler listens (port 0: any free port).
    pub listen: SocketAddr,
    /// Where the status page is served, read-only (port 0: any free port).
    pub page_listen: SocketAddr,
    /// Keep the scheduler's apps across runs here; `None`: in memory.
    pub state_dir: Option<PathBuf>,
    /// Quiet time after the last file event before applying again.
    pub debounce: Duration,
    /// Deadlines, parallelism... (its `cancel` is replaced per run).
    pub apply: ApplyOptions,
    /// The scheduler's task sessions: the caller keeps a clone to kill them when it cannot wait
    /// for [`run`] to return (a second Ctrl-C).
    pub sessions: TaskSessions,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            repo: PathBuf::from(DEMO_REPO),
            environment: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            page_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: None,
            debounce: Duration::from_millis(250),
            apply: ApplyOptions {
                poll_interval: Duration::from_millis(250),
                ..ApplyOptions::default()
            },
            sessions: TaskSessions::default(),
        }
    }
}

/// What stops `baton dev` with an error.
#[derive(Debug, thiserror::Error)]
pub enum DevLoopError {
    #[error("no repo at {path}: run `baton dev` from the Baton source tree (for the demo in {DEMO_REPO}) or pass --repo DIR")]
    NoRepo { path: PathBuf },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Scheduler(#[from] DevError),
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// The repo to use: `repo` if it exists; for the default demo path also the copy in the source
/// tree this binary was built from (so `cargo run -- dev` works from any directory of a clone).
pub fn resolve_repo(repo: &Path) -> Option<PathBuf> {
    if repo.join("apps").is_dir() || repo.join("baton.yaml").is_file() {
        return Some(repo.to_path_buf());
    }
    if repo == Path::new(DEMO_REPO) {
        // This crate is `reconciler/cli`: the workspace root is two levels up.
        let built = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(DEMO_REPO);
        if built.join("apps").is_dir() {
            return Some(built);
        }
    }
    None
}

/// Run until `shutdown` is cancelled. Output (progress, where to look) goes to `out`.
pub async fn run(
    options: DevOptions,
    shutdown: CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<(), DevLoopError> {
    let repo_dir = resolve_repo(&options.repo).ok_or_else(|| DevLoopError::NoRepo {
        path: options.repo.clone(),
    })?;
    let environment = environment(&repo_dir, options.environment.as_deref())?;
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| DevLoopError::Listen {
            addr: options.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DevLoopError::Listen {
            addr: options.listen,
            source,
        })?;
    let url = format!("http://{addr}");
    // The status page: read-only, as every edit is applied anyway and there is nothing to
    // approve; a login would only put a token in the terminal's scrollback.
    let page_listener = tokio::net::TcpListener::bind(options.page_listen)
        .await
        .map_err(|source| DevLoopError::Listen {
            addr: options.page_listen,
            source,
        })?;
    let page_addr = page_listener
        .local_addr()
        .map_err(|source| DevLoopError::Listen {
            addr: options.page_listen,
            source,
        })?;
    let dashboard = baton::daemon::dashboard::Dashboard::new(Default::default());
    let page_stop = CancellationToken::new();
    let page_task = tokio::spawn(baton::daemon::dashboard::serve_read_only(
        page_listener,
        dashboard.clone(),
        page_stop.clone(),
    ));
    let page = Page {
        url: format!("http://{page_addr}/"),
        dashboard,
    };
    let scheduler_stop = CancellationToken::new();
    let config = DevConfig {
        state_dir: options.state_dir.clone(),
        sessions: options.sessions.clone(),
        ..DevConfig::default()
    };
    let server = tokio::spawn(baton_dev_scheduler::run(
        listener,
        config,
        scheduler_stop.clone(),
    ));

    if let Some(env) = &environment {
        let _ = writeln!(
            out,
            "environment: {} (its overlay and owner; its Marathon {} is not used: apps run on this dev scheduler)",
            env.name, env.marathon
        );
    }
    let result = watch_and_apply(&options, &repo_dir, &url, &page, &shutdown, out).await;
    page_stop.cancel();
    if let Ok(Err(e)) = page_task.await {
        tracing::warn!(error = %e, "the status page server failed");
    }

    // Stop the scheduler; its `run` returns once every task process is gone.
    scheduler_stop.cancel();
    let stopped = match server.await {
        Ok(r) => r.map_err(DevLoopError::from),
        Err(e) => {
            tracing::error!(error = %e, "the dev scheduler task failed");
            Ok(())
        }
    };
    let _ = writeln!(out, "dev scheduler stopped; every task process is gone");
    result.and(stopped)
}

/// The environment `baton dev` applies, checked before anything binds: the one named (it must
/// be declared), and in a repo that declares environments one must be named (the error lists
/// them). A `baton.yaml` that does not parse is no error here: each apply reports it.
fn environment(
    repo_dir: &Path,
    name: Option<&str>,
) -> Result<Option<baton_core::environment::Environment>, DevLoopError> {
    if let Some(name) = name {
        return Ok(Some(baton::environment::settings(repo_dir, name)?));
    }
    let (config, _) = baton::source::dir::read_config(repo_dir).map_err(CommandError::from)?;
    if config.environments.is_empty() {
        return Ok(None);
    }
    let known = config.environments.keys().cloned().collect::<Vec<_>>();
    Err(
        CommandError::from(baton::environment::EnvironmentError::Required {
            known: known.join(", "),
        })
        .into(),
    )
}

/// The status page `baton dev` serves: where, and the dashboard each apply publishes to.
struct Page {
    url: String,
    dashboard: std::sync::Arc<baton::daemon::dashboard::Dashboard>,
}

async fn watch_and_apply(
    options: &DevOptions,
    repo_dir: &Path,
    url: &str,
    page: &Page,
    shutdown: &CancellationToken,
    out: &mut (dyn Write + Send),
) -> Result<(), DevLoopError> {
    let mut marathon = MarathonConfig::new(url);
    marathon.timeout = Duration::from_secs(10);
    let scheduler = Marathon::new(marathon).map_err(CommandError::from)?;
    let _ = writeln!(out, "dev scheduler: {url} (Marathon API)");
    let _ = writeln!(out, "status page:   {} (read-only)", page.url);
    let _ = writeln!(out, "repo:          {}", repo_dir.display());

    // Watch before the first apply, so an edit made while it runs is not missed.
    let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel::<()>();
    let _watch = baton::source::watch::watch(repo_dir, options.debounce, move || {
        let _ = tx.send(());
    })
    .map_err(CommandError::from)?;

    let policy = Policy {
        commit: "local".into(),
        allow_deletes: None,
    };
    let mut first = true;
    loop {
        let mut apply = options.apply.clone();
        apply.cancel = shutdown.child_token();
        let cancel = apply.cancel.clone();
        // An edit while an apply waits (for a deployment, up to its deadline) cancels that
        // apply and starts the next at once: the fix of a broken spec must not wait for it.
        let (edited_meanwhile, report) = {
            let dir = baton::environment::RepoDir {
                path: repo_dir.to_path_buf(),
                environment: options.environment.clone(),
            };
            let run = cycle(dir, &scheduler, &policy, &apply, &page.dashboard, out);
            tokio::pin!(run);
            tokio::select! {
                _ = &mut run => (false, None),
                got = changed.recv() => {
                    cancel.cancel();
                    (got.is_some(), run.await)
                }
            }
        };
        if let (true, Some(report)) = (edited_meanwhile, report) {
            supersede(&scheduler, &report, out).await;
        }
        if first {
            where_to_look(&scheduler, url, &page.url, repo_dir, out).await;
            first = false;
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
        if !edited_meanwhile {
            let _ = writeln!(
                out,
                "watching {} for changes (Ctrl-C stops everything)",
                repo_dir.display()
            );
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                got = changed.recv() => if got.is_none() { return Ok(()) },
            }
        }
        // Coalesce a burst of changes into one apply.
        while changed.try_recv().is_ok() {}
        let _ = writeln!(out, "\nchange detected: applying {}", repo_dir.display());
    }
}

/// An apply cancelled by a newer edit left deployments running that it started (a crashing
/// app waiting for its deadline, say): apply rolls them back, so the next apply is not locked
/// out by a version nobody wants any more.
async fn supersede(scheduler: &Marathon, report: &ApplyReport, out: &mut (dyn Write + Send)) {
    let mut starting = |app: &AppId, deployment: &str| {
        let _ = writeln!(
            out,
            "  {:<28} superseded by the edit: rolling back deployment {deployment}",
            app.as_str()
        );
    };
    let rolled = baton::apply::roll_back_unfinished(scheduler, report, &mut starting).await;
    for r in rolled {
        if let Err(e) = r.result {
            let _ = writeln!(out, "  {:<28} rollback failed: {e}", r.app.as_str());
        }
    }
}

/// Load, plan and apply once; problems are printed, never fatal (the next edit tries again).
/// The apply's report, when it got that far.
async fn cycle(
    repo_dir: baton::environment::RepoDir,
    scheduler: &Marathon,
    policy: &Policy,
    options: &ApplyOptions,
    dashboard: &baton::daemon::dashboard::Dashboard,
    out: &mut (dyn Write + Send),
) -> Option<ApplyReport> {
    let repo = match commands::load_repo_as(repo_dir) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            return None;
        }
    };
    if !repo.diagnostics.is_empty() {
        let style = baton_core::report::Style { color: false };
        let _ = write!(
            out,
            "{}",
            baton_core::report::diagnostics_text(&repo, style)
        );
    }
    let result = commands::sync(&repo, scheduler, policy, options, &mut |ev| {
        if let Some(line) = progress_line(&ev) {
            let _ = writeln!(out, "{line}");
        }
    })
    .await;
    match result {
        Ok((plan, report)) => {
            baton::daemon::rollout::warn_updated_in_place(&repo, &plan);
            let _ = writeln!(out, "{}", commands::apply_summary(&plan, &report));
            publish(&repo, scheduler, dashboard).await;
            Some(report)
        }
        Err(e) => {
            let _ = writeln!(out, "error: {e}");
            None
        }
    }
}

/// What the status page shows after an apply: the drift report of the repo against the
/// scheduler now (not published when the scheduler cannot be listed: the page keeps the last).
async fn publish(
    repo: &baton_core::spec::Repo,
    scheduler: &Marathon,
    dashboard: &baton::daemon::dashboard::Dashboard,
) {
    let Ok(live) = scheduler.list_apps().await else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let attributions = baton_core::drift::Attributions::default();
    dashboard.publish_owned(
        baton_core::drift::drift(repo, &live, &attributions, now),
        now,
    );
}

/// Each app's state and endpoints, and commands to look further.
async fn where_to_look(
    scheduler: &Marathon,
    url: &str,
    page_url: &str,
    repo_dir: &Path,
    out: &mut (dyn Write + Send),
) {
    let apps = scheduler.list_apps().await.unwrap_or_default();
    let _ = writeln!(out, "\napps:");
    for app in &apps {
        let id = app.get("id").and_then(Value::as_str).unwrap_or("?");
        let count = |k: &str| app.get(k).and_then(Value::as_u64).unwrap_or(0);
        let mut endpoints = Vec::new();
        for task in app
            .get("tasks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let host = task
                .get("host")
                .and_then(Value::as_str)
                .unwrap_or("127.0.0.1");
            for port in task
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(p) = port.as_u64() {
                    endpoints.push(format!("{host}:{p}"));
                }
            }
        }
        // Healthy tasks only when the app has health checks (not "0 healthy" without).
        let checked = app
            .get("healthChecks")
            .and_then(Value::as_array)
            .is_some_and(|h| !h.is_empty());
        let healthy = if checked {
            format!(", {} healthy", count("tasksHealthy"))
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "  {id:<28} {}/{} running{healthy}  {}",
            count("tasksRunning"),
            count("instances"),
            endpoints.join(" ")
        );
        if app
            .get("healthChecks")
            .and_then(Value::as_array)
            .is_some_and(|h| {
                h.iter()
                    .any(|c| c.get("protocol").and_then(Value::as_str) == Some("HTTP"))
            })
        {
            if let Some(e) = endpoints.first() {
                let _ = writeln!(out, "    try: curl http://{e}/");
            }
        }
    }
    let _ = writeln!(out, "\nwhere to look:");
    let _ = writeln!(out, "  open {:<28} # the status page (read-only)", page_url);
    let _ = writeln!(
        out,
        "  curl {url}/v2/apps            # apps, as Marathon serves them"
    );
    let _ = writeln!(
        out,
        "  curl {url}/v2/deployments     # deployments in progress"
    );
    let _ = writeln!(
        out,
        "  curl -N {url}/v2/events       # the live event stream"
    );
    let _ = writeln!(
        out,
        "  edit {}/apps/... and save: it is applied again within a second\n",
        repo_dir.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo run -- dev` from another directory of the clone still finds the demo repo of the
    /// tree the binary was built from (a relative `fixtures/demo` that does not exist here).
    #[test]
    fn the_demo_repo_is_found_from_the_source_tree_it_was_built_from() {
        let found = resolve_repo(Path::new(DEMO_REPO)).expect("the demo repo");
        // Tests run in the package's directory, where the relative path does not exist.
        assert!(!Path::new(DEMO_REPO).exists());
        assert!(found.join("apps").is_dir(), "{}", found.display());
        let root = found.canonicalize().unwrap();
        let root = root.parent().and_then(Path::parent).unwrap();
        assert!(
            root.join("reconciler").is_dir() && root.join("sidecar").is_dir(),
            "{} is not the workspace root",
            root.display()
        );
        assert_eq!(resolve_repo(Path::new("no/such/repo")), None);
    }
}
