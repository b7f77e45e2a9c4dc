//! The reconcile loop of `baton serve`: a closed [`Trigger`] enum, one `tokio::select!`, one
//! cycle at a time. A cycle is fetch -> load -> plan -> apply ([`crate::apply`], the same safety
//! rules as `baton apply`); it returns an [`Action`], and every failure goes through
//! [`error_policy`].
//!
//! Invariants:
//! - Triggers that arrive while a cycle runs are coalesced into the next single cycle.
//! - A failed fetch or load keeps the last good snapshot and plans nothing from it: the cycle
//!   fails, nothing is pruned. (An incomplete repo already holds deletes in [`crate::plan`].)
//! - A revision is applied once. Later cycles at the same revision only report drift, except
//!   for apps whose apply failed: those are retried with backoff ([`crate::state`]) until a newer
//!   revision supersedes the failed one. `POST /api/sync` applies everything.
//! - A restart reads the state directory and, at an already synced revision, writes nothing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{self, ApplyOptions, Outcome as AppOutcome};
use crate::plan::{self, Action as PlanAction, Plan, Policy};
use crate::scheduler::{app_is_up, Scheduler, SchedulerError};
use crate::source::{SourceError, SpecSource};
use crate::spec::{AppId, Repo};
use crate::state::{self, Outcome, State, StateError, SyncRecord};

/// Capacity of the trigger channel; when full, a cycle is pending anyway (coalescing).
pub const TRIGGER_QUEUE: usize = 64;
/// First backoff of a failing cycle; doubled per consecutive failure up to [`ERROR_BACKOFF_MAX`].
pub const ERROR_BACKOFF_BASE: Duration = Duration::from_secs(1);
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// History entries shown in `/api/status`.
const STATUS_HISTORY: usize = 10;
/// Pushes remembered for the push-to-deployed latency.
const MAX_PENDING_PUSHES: usize = 256;

/// What woke the loop. Closed: every cycle starts from one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The first cycle after start.
    Startup,
    /// A verified push to the followed ref.
    Webhook {
        delivery: String,
    },
    /// The safety-net poll timer.
    Poll,
    /// The scheduler reported a change to an app (drift is checked against the last snapshot).
    SchedulerEvent {
        app: String,
    },
    /// `POST /api/sync`: apply now, also in manual mode.
    ManualSync,
    /// A requeue after a failure or a failed app's backoff.
    Retry,
    /// The directory source changed on disk.
    FileChange,
    Shutdown,
}

impl Trigger {
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Webhook { .. } => "webhook",
            Trigger::Poll => "poll",
            Trigger::SchedulerEvent { .. } => "scheduler-event",
            Trigger::ManualSync => "manual-sync",
            Trigger::Retry => "retry",
            Trigger::FileChange => "file-change",
            Trigger::Shutdown => "shutdown",
        }
    }

    /// Whether the cycle asks the source for news (a scheduler event only re-plans).
    fn fetches(&self) -> bool {
        !matches!(self, Trigger::SchedulerEvent { .. })
    }

    /// Of several queued triggers the cycle runs as the strongest.
    fn rank(&self) -> u8 {
        match self {
            Trigger::Shutdown => 7,
            Trigger::ManualSync => 6,
            Trigger::Webhook { .. } => 5,
            Trigger::FileChange => 4,
            Trigger::Startup => 3,
            Trigger::Retry => 2,
            Trigger::Poll => 1,
            Trigger::SchedulerEvent { .. } => 0,
        }
    }
}

/// What the loop does after a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Run again after `d` (as [`Trigger::Retry`]).
    pub fn requeue(d: Duration) -> Self {
        Action {
            requeue_after: Some(d),
        }
    }

    /// Wait for a trigger (the poll timer stays on as the safety net).
    pub fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// Auto-sync, or plan-and-report with apply on `POST /api/sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Auto,
    Manual,
}

/// Settings of the loop.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    pub sync: SyncMode,
    /// Safety-net poll; each wait gets up to 10% random jitter.
    pub poll_interval: Duration,
    pub state_dir: std::path::PathBuf,
    /// `--allow-deletes N`.
    pub allow_deletes: Option<usize>,
    /// Passed to apply (its `cancel` is replaced by a child of the shutdown token).
    pub apply: ApplyOptions,
    /// Secret zero (Vault policies and roles, bootstrap env, the gatekeeper's app set); `None`:
    /// apps reading Vault secrets are blocked with an error.
    pub secrets: Option<crate::vault_admin::SecretsWiring>,
    /// Where sync failures, drift and finished deployments are announced (None: nowhere).
    pub notifier: Option<crate::notifications::Notifier>,
}

/// Why a cycle failed.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the source task failed: {0}")]
    Task(String),
    /// Vault could not be read or written: no app was written after it, nothing was deleted.
    #[error("Vault: {0}")]
    Vault(#[from] crate::vault_admin::VaultAdminError),
}

/// `GET /api/status`: the loop's view, as JSON (schema: `schemas/status.schema.json`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub source: String,
    pub sync_mode: String,
    pub ready: bool,
    pub last_fetched: Option<String>,
    pub last_synced: Option<String>,
    /// The last fetch/load/scheduler error, until a cycle succeeds.
    pub last_error: Option<String>,
    pub pending: Option<plan::Summary>,
    pub apps: Vec<AppStatus>,
    pub history: Vec<SyncRecord>,
}

/// One app in `/api/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub id: String,
    /// `synced`, `outOfSync`, `failed`, `invalid`, `conflict`, `deleted`.
    pub sync: &'static str,
    /// `healthy`, `progressing`, `missing`, `unknown`.
    pub health: &'static str,
    /// The commit last applied (or found in place).
    pub commit: Option<String>,
    pub last_error: Option<String>,
}

/// What the loop shares with the HTTP server.
#[derive(Debug)]
pub struct Shared {
    pub status: RwLock<Status>,
    /// Set after the first successful cycle.
    pub ready: AtomicBool,
    pub triggers: mpsc::Sender<Trigger>,
    /// The status page, `/api/drift` and `/metrics` (see [`crate::dashboard`]).
    pub dashboard: Arc<crate::dashboard::Dashboard>,
    /// API changes seen on the scheduler's event stream, for drift attribution.
    pub attributions: Arc<Mutex<crate::drift::Attributions>>,
    /// Accepted pushes not yet deployed: (commit, when the webhook arrived), for the
    /// push-to-deployed latency.
    pub pushes: Mutex<Vec<(String, std::time::Instant)>>,
}

impl Shared {
    pub fn new(source: String, sync: SyncMode) -> (Arc<Shared>, mpsc::Receiver<Trigger>) {
        let (tx, rx) = mpsc::channel(TRIGGER_QUEUE);
        let status = Status {
            source,
            sync_mode: match sync {
                SyncMode::Auto => "auto",
                SyncMode::Manual => "manual",
            }
            .into(),
            ..Status::default()
        };
        (
            Arc::new(Shared {
                status: RwLock::new(status),
                ready: AtomicBool::new(false),
                triggers: tx,
                dashboard: crate::dashboard::Dashboard::new(Default::default()),
                attributions: Default::default(),
                pushes: Default::default(),
            }),
            rx,
        )
    }

    /// Queue a trigger; a full queue means a cycle is pending already, so dropping is fine.
    pub fn trigger(&self, t: Trigger) {
        let _ = self.triggers.try_send(t);
    }

    /// Remember that a push of `commit` arrived now (bounded: the oldest are forgotten).
    pub fn note_push(&self, commit: &str) {
        let mut p = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        if p.len() >= MAX_PENDING_PUSHES {
            p.remove(0);
        }
        p.push((commit.to_string(), std::time::Instant::now()));
    }

    /// `commit` is deployed: how long ago each push of it arrived. Pushes of other commits
    /// that arrived before `cycle_started` were superseded (or never deploy): forgotten.
    pub fn pushes_deployed(
        &self,
        commit: &str,
        cycle_started: std::time::Instant,
    ) -> Vec<Duration> {
        let mut p = self.pushes.lock().unwrap_or_else(|e| e.into_inner());
        let mut deployed = Vec::new();
        p.retain(|(c, at)| {
            if c == commit {
                deployed.push(at.elapsed());
                false
            } else {
                *at >= cycle_started
            }
        });
        deployed
    }

    pub fn status(&self) -> Status {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Backoff of the n-th consecutive failed cycle: `ERROR_BACKOFF_BASE * 2^(n-1)`, capped at
/// `ERROR_BACKOFF_MAX`. The process never exits because of a failed cycle.
pub fn error_policy(err: &CycleError, consecutive: u32) -> Action {
    let exp = consecutive.saturating_sub(1).min(16);
    let delay = ERROR_BACKOFF_BASE
        .saturating_mul(1u32 << exp)
        .min(ERROR_BACKOFF_MAX);
    tracing::warn!(error = %err, retry_in = ?delay, "sync failed");
    Action::requeue(delay)
}

/// The loop state besides the persisted [`State`].
struct Reconciler<Src, S> {
    source: Arc<Mutex<Src>>,
    scheduler: Arc<S>,
    config: LoopConfig,
    state: State,
    /// The last revision loaded without a source error.
    last_good: Option<(String, Arc<Repo>)>,
    shared: Arc<Shared>,
    /// Drift report, ledger and self-heal decisions between cycles.
    drift: crate::drift_keeper::DriftKeeper,
    /// The last sync failure announced, so a failure retried with backoff is announced once.
    announced_failure: Option<String>,
}

/// Run the loop until `shutdown`. Loads the state directory first (a corrupt state file is an
/// error: better to stop than to forget what was applied).
pub async fn run<Src, S>(
    source: Src,
    scheduler: Arc<S>,
    config: LoopConfig,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Trigger>,
    shutdown: CancellationToken,
) -> Result<(), StateError>
where
    Src: SpecSource,
    S: Scheduler + 'static,
{
    let state = state::load(&config.state_dir)?;
    let mut source = source;
    if let Some(rev) = &state.last_fetched {
        source.resume_from(rev);
    }
    let drift = crate::drift_keeper::DriftKeeper::new(
        config.state_dir.clone(),
        shared.dashboard.clone(),
        shared.attributions.clone(),
        config.notifier.clone(),
    )
    .map_err(|e| StateError::Format {
        path: config.state_dir.join(crate::drift::ledger::LEDGER_FILE),
        message: e.to_string(),
    })?;
    let poll_interval = config.poll_interval;
    let mut r = Reconciler {
        source: Arc::new(Mutex::new(source)),
        scheduler,
        config,
        state,
        last_good: None,
        shared,
        drift,
        announced_failure: None,
    };
    r.publish_status(None, None, None, None);
    let mut pending = Some(Trigger::Startup);
    let mut requeue_at: Option<Instant> = None;
    let mut poll_at = Instant::now() + jitter(poll_interval);
    let mut failures: u32 = 0;
    let mut cycle: u64 = 0;
    loop {
        let first = match pending.take() {
            Some(t) => t,
            None => tokio::select! {
                biased;
                _ = shutdown.cancelled() => Trigger::Shutdown,
                t = rx.recv() => t.unwrap_or(Trigger::Shutdown),
                _ = sleep_until_opt(requeue_at) => Trigger::Retry,
                _ = tokio::time::sleep_until(poll_at) => Trigger::Poll,
            },
        };
        let trigger = coalesce(first, &mut rx);
        if trigger == Trigger::Shutdown || shutdown.is_cancelled() {
            break;
        }
        cycle += 1;
        let span = tracing::info_span!("cycle", n = cycle, trigger = trigger.name());
        let result = r
            .reconcile(&trigger, &shutdown)
            .instrument(span.clone())
            .await;
        let action = match result {
            Ok(a) => {
                failures = 0;
                a
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let _g = span.enter();
                error_policy(&e, failures)
            }
        };
        requeue_at = action.requeue_after().map(|d| Instant::now() + d);
        if trigger.fetches() {
            poll_at = Instant::now() + jitter(poll_interval);
        }
    }
    tracing::info!("reconcile loop stopped");
    Ok(())
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The strongest of `first` and everything already queued.
fn coalesce(first: Trigger, rx: &mut mpsc::Receiver<Trigger>) -> Trigger {
    let mut best = first;
    while let Ok(t) = rx.try_recv() {
        if t.rank() > best.rank() {
            best = t;
        }
    }
    best
}

/// `d` plus up to 10% random jitter, so many daemons do not poll one server in step.
fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    let extra = d.as_millis() as u64 / 10;
    let j = if extra == 0 {
        0
    } else {
        rand::thread_rng().gen_range(0..=extra)
    };
    d + Duration::from_millis(j)
}

/// The `outcome` label of `baton_syncs_total`.
fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Synced => "synced",
        Outcome::Partial => "partial",
        Outcome::Failed => "failed",
        Outcome::Planned => "planned",
        Outcome::Abandoned => "abandoned",
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl<Src: SpecSource, S: Scheduler + 'static> Reconciler<Src, S> {
    async fn reconcile(
        &mut self,
        trigger: &Trigger,
        shutdown: &CancellationToken,
    ) -> Result<Action, CycleError> {
        let started = now_ms();
        let clock = std::time::Instant::now();
        match self.cycle(trigger, shutdown, started).await {
            Ok(a) => Ok(a),
            Err(e) => {
                self.shared
                    .dashboard
                    .metrics
                    .sync_finished("failed", clock.elapsed());
                // No commit: a fetch or load that failed has none to name (the error says what).
                self.announce_failure(None, e.to_string(), Vec::new());
                let record = SyncRecord {
                    started_ms: started,
                    finished_ms: now_ms(),
                    trigger: trigger.name().into(),
                    commit: self.last_good.as_ref().map(|(r, _)| r.clone()),
                    outcome: Outcome::Failed,
                    changes: 0,
                    error: Some(e.to_string()),
                };
                self.state.push_history(record);
                if let Err(se) = state::save(&self.config.state_dir, &self.state) {
                    tracing::warn!(error = %se, "cannot save the state");
                }
                let msg = e.to_string();
                self.publish_status(None, None, None, Some(msg));
                Err(e)
            }
        }
    }

    /// Fetch (unless only the scheduler changed) and load; `None` when nothing was ever loaded
    /// and this trigger does not fetch.
    async fn snapshot(&mut self, trigger: &Trigger) -> Result<(String, Arc<Repo>), CycleError> {
        if !trigger.fetches() {
            if let Some(good) = &self.last_good {
                return Ok(good.clone());
            }
        }
        let source = self.source.clone();
        let known = self.last_good.as_ref().map(|(r, _)| r.clone());
        let metrics = self.shared.dashboard.metrics.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let mut src = source.lock().unwrap_or_else(|e| e.into_inner());
            let fetch_started = std::time::Instant::now();
            let fetched = src.fetch();
            if src.is_git() {
                // Failed fetches too: a remote that times out is what this should show.
                metrics.git_fetch(fetch_started.elapsed());
            }
            let rev = fetched?;
            if known.as_deref() == Some(rev.as_str()) {
                return Ok::<_, SourceError>((rev, None));
            }
            let repo = src.load(&rev)?;
            Ok((rev, Some(repo)))
        })
        .await
        .map_err(|e| CycleError::Task(e.to_string()))??;
        match loaded {
            (rev, Some(repo)) => {
                tracing::info!(revision = %rev, apps = repo.specs.len(), invalid = repo.invalid.len(), "loaded");
                self.state.last_fetched = Some(rev.clone());
                let good = (rev, Arc::new(repo));
                self.last_good = Some(good.clone());
                Ok(good)
            }
            (_, None) => self
                .last_good
                .clone()
                .ok_or_else(|| CycleError::Task("no snapshot".into())),
        }
    }

    async fn cycle(
        &mut self,
        trigger: &Trigger,
        shutdown: &CancellationToken,
        started: u64,
    ) -> Result<Action, CycleError> {
        let clock = std::time::Instant::now();
        let (rev, repo) = self.snapshot(trigger).await?;
        // Already recorded in the state; merged into this cycle's report below so that what it
        // deployed is announced, counted and shown like the rest of the cycle.
        let fast = self.fast_sync(trigger, &rev, &repo, shutdown).await;
        let live = self.scheduler.list_apps().await?;
        let (repo, vault_sync) = self.secrets_prepare(repo).await?;
        let mut plan = plan::plan(
            &repo,
            &live,
            &Policy {
                commit: rev.clone(),
                allow_deletes: self.config.allow_deletes,
            },
        );
        let now = now_ms();
        for id in &plan.unchanged {
            self.state.record_success(id.as_str(), &rev);
        }
        // Drift: report, ledger, and the apps a `correct` policy wants put back now.
        let failed: Vec<(AppId, String)> = self
            .state
            .apps
            .iter()
            .filter_map(|(id, a)| Some((AppId::parse(id).ok()?, a.last_error.clone()?)))
            .collect();
        let (drift_report, corrections) = self.drift.observe(
            &repo,
            &live,
            failed.iter().map(|(a, e)| (a, e.as_str())),
            now,
        );
        let corrections: BTreeSet<AppId> = corrections.into_iter().collect();

        // Which changes this cycle may apply.
        let new_rev = self.state.last_synced.as_deref() != Some(rev.as_str());
        let manual = self.config.sync == SyncMode::Manual;
        let apply_all = if manual {
            *trigger == Trigger::ManualSync
        } else {
            new_rev || *trigger == Trigger::ManualSync
        };
        let state = &self.state;
        let retry_due = |app: &AppId| {
            state
                .apps
                .get(app.as_str())
                .and_then(|a| a.failure.as_ref())
                .is_some_and(|f| f.commit == rev && now >= f.retry_at_ms)
        };
        let may_retry = !manual || *trigger == Trigger::ManualSync;
        let held_back = retain_changes(&mut plan, |c| {
            let correct = !manual && c.action != PlanAction::Delete && corrections.contains(&c.app);
            let allowed = apply_all || (may_retry && retry_due(&c.app)) || correct;
            allowed && state.may_apply(c.app.as_str(), &rev, now)
        });
        let planned_total = plan.summary.create + plan.summary.update + plan.summary.delete;
        // Vault objects are Baton's own: in auto mode every cycle puts them back (drift-check).
        let vault_writes = !manual || *trigger == Trigger::ManualSync;
        let vault_plan = self
            .secrets_before_apps(vault_sync.as_ref(), &repo, &plan, &live, vault_writes)
            .await?;

        let report = if plan.is_empty() {
            None
        } else {
            let mut options = self.config.apply.clone();
            options.cancel = shutdown.child_token();
            tracing::info!(
                create = plan.summary.create,
                update = plan.summary.update,
                delete = plan.summary.delete,
                "applying"
            );
            Some(apply::apply(&plan, self.scheduler.as_ref(), &options, &mut |_| {}).await)
        };
        if let Some(report) = &report {
            self.drift.written(
                (report.apps.iter())
                    .filter(|r| r.outcome == AppOutcome::Converged)
                    .map(|r| r.app.clone()),
            );
            for r in &report.apps {
                match (&r.outcome, r.action) {
                    (AppOutcome::Converged, PlanAction::Delete) => {
                        self.state.forget(r.app.as_str())
                    }
                    (AppOutcome::Converged, _) => self.state.record_success(r.app.as_str(), &rev),
                    (AppOutcome::Failed { reason }, _) => {
                        self.state
                            .record_failure(r.app.as_str(), &rev, reason, now_ms())
                    }
                    (AppOutcome::Skipped { because }, _) => self.state.record_failure(
                        r.app.as_str(),
                        &rev,
                        &format!("skipped: {because} did not converge"),
                        now_ms(),
                    ),
                    _ => {}
                }
            }
        }
        let report = apply::ApplyReport::merge(fast, report);
        let outcome = match &report {
            None => Outcome::Synced,
            Some(r) if r.cancelled => Outcome::Abandoned,
            Some(r) if r.converged() => Outcome::Synced,
            Some(_) => Outcome::Partial,
        };
        if let (Some(vp), Some(w), true) = (&vault_plan, &self.config.secrets, vault_writes) {
            let deletes =
                crate::vault_admin::deletes_after_cycle(vp, report.as_ref(), &plan.unchanged);
            if let Err(e) = w.admin.apply(&deletes).await {
                state::save(&self.config.state_dir, &self.state)?;
                return Err(e.into());
            }
        }
        if apply_all && outcome != Outcome::Abandoned {
            self.state.last_synced = Some(rev.clone());
        }
        if report.is_some() {
            self.observe_after_apply(&repo).await;
        }
        let outcome = if manual && !held_back.is_empty() && report.is_none() {
            Outcome::Planned
        } else {
            outcome
        };
        let worth_recording = report.is_some() || new_rev || *trigger == Trigger::ManualSync;
        if worth_recording {
            let failed: Vec<String> = report
                .iter()
                .flat_map(|r| r.failures())
                .map(|a| a.app.to_string())
                .collect();
            self.state.push_history(SyncRecord {
                started_ms: started,
                finished_ms: now_ms(),
                trigger: trigger.name().into(),
                commit: Some(rev.clone()),
                outcome,
                changes: planned_total,
                error: (!failed.is_empty()).then(|| format!("failed: {}", failed.join(", "))),
            });
        }
        state::save(&self.config.state_dir, &self.state)?;
        // A cycle that applies a revision as a whole deploys: its writes are no corrections,
        // even of apps a `correct` policy would have put back anyway.
        let corrected = if apply_all {
            BTreeSet::new()
        } else {
            corrections
        };
        self.announce_cycle(
            &rev,
            outcome,
            worth_recording,
            apply_all && new_rev,
            report.as_ref(),
            &corrected,
            clock,
        );
        self.shared.ready.store(true, Ordering::Relaxed);
        let pending = (!held_back.is_empty()).then(|| pending_summary(&held_back));
        let held_ids: BTreeSet<AppId> = held_back.iter().map(|(id, _)| id.clone()).collect();
        self.publish_status(
            Some(&repo),
            Some(&live),
            Some((&plan, report.as_ref(), &held_ids)),
            None,
        );
        if let Some(p) = pending {
            if let Ok(mut s) = self.shared.status.write() {
                s.pending = Some(p);
            }
        }

        let correction_at = self
            .drift
            .next_correction(&drift_report, now)
            .map(|d| now + u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let wake = match (self.state.next_retry_ms(), correction_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(match wake {
            Some(at) => {
                Action::requeue(Duration::from_millis(at.saturating_sub(now_ms()).max(1000)))
            }
            None => Action::await_change(),
        })
    }

    /// Secret zero before planning: with Vault, observe it and inject the bootstrap env (a Vault
    /// error fails the cycle before anything is planned); without, block the apps that read
    /// Vault secrets (left untouched, shown as invalid with the reason).
    async fn secrets_prepare(
        &self,
        repo: Arc<Repo>,
    ) -> Result<(Arc<Repo>, Option<crate::vault_admin::SecretsSync>), CycleError> {
        let Some(wiring) = &self.config.secrets else {
            let desired = crate::secrets::desired(&repo);
            if desired.apps.is_empty() && desired.issues.is_empty() {
                return Ok((repo, None));
            }
            let mut blocked = (*repo).clone();
            let n = crate::secrets::block_without_vault(&mut blocked, &desired);
            tracing::warn!(
                apps = n,
                "apps read Vault secrets but no Vault is configured: left untouched"
            );
            return Ok((Arc::new(blocked), None));
        };
        let mut prepared = (*repo).clone();
        let sync = wiring.prepare(&mut prepared).await?;
        Ok((Arc::new(prepared), Some(sync)))
    }

    /// The Vault plan of this cycle; its creates and updates are written now (before any app,
    /// so a task never starts before its role exists) when `write` says so.
    async fn secrets_before_apps(
        &self,
        sync: Option<&crate::vault_admin::SecretsSync>,
        repo: &Repo,
        plan: &Plan,
        live: &[serde_json::Value],
        write: bool,
    ) -> Result<Option<crate::secrets::VaultPlan>, CycleError> {
        let (Some(wiring), Some(sync)) = (&self.config.secrets, sync) else {
            return Ok(None);
        };
        let live_ids: Vec<AppId> = live
            .iter()
            .filter_map(|a| AppId::parse(a.get("id")?.as_str()?).ok())
            .collect();
        let vp = crate::secrets::plan_vault(
            &sync.desired,
            &sync.live,
            &sync.role_ids,
            repo,
            plan,
            &live_ids,
        );
        for i in &vp.issues {
            tracing::warn!(app = %i.app, issue = %i.message, "secrets issue: app left untouched");
        }
        if write && !vp.before_apps.is_empty() {
            tracing::info!(
                writes = vp.before_apps.len(),
                "vault: writing policies and roles"
            );
            wiring.admin.apply(&vp.before_apps).await?;
        }
        Ok(Some(vp))
    }

    /// Look at the scheduler again after writing, so the drift report, the apps-by-state
    /// gauges and the ledger show the result of this cycle now rather than at the next trigger.
    async fn observe_after_apply(&mut self, repo: &Repo) {
        match self.scheduler.list_apps().await {
            Ok(live) => {
                let failed: Vec<(AppId, String)> = (self.state.apps.iter())
                    .filter_map(|(id, a)| Some((AppId::parse(id).ok()?, a.last_error.clone()?)))
                    .collect();
                let failures = failed.iter().map(|(a, e)| (a, e.as_str()));
                let _ = self.drift.observe(repo, &live, failures, now_ms());
            }
            Err(e) => tracing::debug!(error = %e, "cannot list apps after applying"),
        }
    }

    /// Metrics and notifications of a cycle that ran to its end. Never blocks: the notifier
    /// only queues. `deploying` says the cycle applied a new revision as a whole.
    #[allow(clippy::too_many_arguments)]
    fn announce_cycle(
        &mut self,
        rev: &str,
        outcome: Outcome,
        recorded: bool,
        deploying: bool,
        report: Option<&apply::ApplyReport>,
        corrections: &BTreeSet<AppId>,
        clock: std::time::Instant,
    ) {
        let metrics = self.shared.dashboard.metrics.clone();
        let took = clock.elapsed();
        let label = if recorded {
            outcome_word(outcome)
        } else {
            "noop"
        };
        metrics.sync_finished(label, took);
        if self.state.last_synced.as_deref() == Some(rev) {
            // Pushes of an already deployed revision are forgotten without a sample.
            let waited = self.shared.pushes_deployed(rev, clock);
            if deploying && outcome == Outcome::Synced {
                for d in waited {
                    metrics.push_to_deployed(d);
                }
            }
        }
        let failed: Vec<(AppId, String)> = report
            .iter()
            .flat_map(|r| r.apps.iter())
            .filter_map(|r| match &r.outcome {
                AppOutcome::Failed { reason } => Some((r.app.clone(), reason.clone())),
                AppOutcome::Skipped { because } => Some((
                    r.app.clone(),
                    format!("skipped: {because} did not converge"),
                )),
                _ => None,
            })
            .collect();
        if let Some(report) = report {
            let converged: Vec<&apply::AppResult> = (report.apps.iter())
                .filter(|r| r.outcome == AppOutcome::Converged)
                .collect();
            let corrected = (converged.iter())
                .filter(|r| r.action != PlanAction::Delete && corrections.contains(&r.app))
                .count();
            if corrected > 0 {
                metrics.corrected(corrected);
            }
            if !converged.is_empty() {
                self.notify(crate::notifications::Notification::DeploymentFinished {
                    commit: Some(rev.to_string()),
                    apps: converged.iter().map(|r| r.app.clone()).collect(),
                    took,
                });
            }
        }
        if !failed.is_empty() {
            let error = format!("{} app(s) did not converge", failed.len());
            self.announce_failure(Some(rev.to_string()), error, failed);
        } else if self.state.apps.values().all(|a| a.last_error.is_none()) {
            self.announced_failure = None;
        }
    }

    /// Announce a sync failure, once per distinct failure (a retry failing the same way is
    /// not news).
    fn announce_failure(
        &mut self,
        commit: Option<String>,
        error: String,
        apps: Vec<(AppId, String)>,
    ) {
        let ids: Vec<&str> = apps.iter().map(|(a, _)| a.as_str()).collect();
        let key = format!("{commit:?}|{error}|{}", ids.join(","));
        if self.announced_failure.as_deref() == Some(key.as_str()) {
            return;
        }
        self.announced_failure = Some(key);
        self.notify(crate::notifications::Notification::SyncFailed {
            commit,
            error,
            apps,
        });
    }

    fn notify(&self, n: crate::notifications::Notification) {
        if let Some(notifier) = &self.config.notifier {
            notifier.notify(n);
        }
    }

    /// Rebuild `/api/status` from the last cycle's data.
    fn publish_status(
        &self,
        repo: Option<&Repo>,
        live: Option<&[serde_json::Value]>,
        applied: Option<(&Plan, Option<&apply::ApplyReport>, &BTreeSet<AppId>)>,
        error: Option<String>,
    ) {
        let mut st = self
            .shared
            .status
            .write()
            .unwrap_or_else(|e| e.into_inner());
        st.ready = self.shared.ready.load(Ordering::Relaxed);
        st.last_fetched = self.state.last_fetched.clone();
        st.last_synced = self.state.last_synced.clone();
        st.history = self
            .state
            .history
            .iter()
            .rev()
            .take(STATUS_HISTORY)
            .cloned()
            .collect();
        if error.is_some() {
            st.last_error = error;
            return;
        }
        let (Some(repo), Some(live), Some((plan, report, held))) = (repo, live, applied) else {
            return;
        };
        st.last_error = None;
        st.pending = None;
        let live_by_id: std::collections::HashMap<&str, &serde_json::Value> = live
            .iter()
            .filter_map(|a| a.get("id").and_then(|i| i.as_str()).map(|i| (i, a)))
            .collect();
        let conflicts: BTreeSet<&AppId> = plan.conflicts.iter().map(|c| &c.app).collect();
        let results: std::collections::HashMap<&AppId, &AppOutcome> = report
            .map(|r| r.apps.iter().map(|a| (&a.app, &a.outcome)).collect())
            .unwrap_or_default();
        let mut ids: BTreeSet<AppId> = repo.specs.keys().cloned().collect();
        ids.extend(repo.invalid.iter().cloned());
        ids.extend(held.iter().cloned());
        st.apps = ids
            .into_iter()
            .map(|id| {
                let live_app = live_by_id.get(id.as_str());
                let result = results.get(&id);
                let app_state = self.state.apps.get(id.as_str());
                let sync = if repo.invalid.contains(&id) {
                    "invalid"
                } else if conflicts.contains(&id) {
                    "conflict"
                } else if held.contains(&id) {
                    // Held back: waiting out the backoff of a failed apply, or not applied yet.
                    if app_state.is_some_and(|a| a.last_error.is_some()) {
                        "failed"
                    } else {
                        "outOfSync"
                    }
                } else {
                    match result {
                        Some(AppOutcome::Converged) if !repo.specs.contains_key(&id) => "deleted",
                        Some(AppOutcome::Converged) => "synced",
                        Some(o) if o.is_failure() => "failed",
                        Some(_) => "outOfSync",
                        None => "synced",
                    }
                };
                let health = match (result, live_app) {
                    (Some(AppOutcome::Converged), _) => "healthy",
                    (_, Some(app)) if app_is_up(app) => "healthy",
                    (_, Some(_)) => "progressing",
                    (_, None) => "missing",
                };
                AppStatus {
                    id: id.to_string(),
                    sync,
                    health,
                    commit: app_state.and_then(|a| a.last_applied.clone()),
                    last_error: app_state.and_then(|a| a.last_error.clone()),
                }
            })
            .collect();
    }
}

/// At most this many apps go through the fast path; a larger push is a full cycle anyway.
pub const FAST_SYNC_MAX: usize = 32;

/// The apps a push may sync before the full cycle ("fast path"): those whose spec file was
/// added or modified (`changed`), that load as valid specs, and that depend on nothing (their
/// order within waves is then irrelevant). Empty when more than [`FAST_SYNC_MAX`] qualify.
/// Removed files never appear here: deletions go through the full plan, with its budget and
/// ownership checks. Pure.
pub fn fast_sync_candidates(changed: &[std::path::PathBuf], repo: &Repo) -> Vec<AppId> {
    if changed.is_empty() || changed.len() > FAST_SYNC_MAX {
        return Vec::new();
    }
    let paths: std::collections::HashSet<&std::path::Path> =
        changed.iter().map(|p| p.as_path()).collect();
    let picked: Vec<AppId> = repo
        .specs
        .iter()
        .filter(|(id, spec)| {
            paths.contains(spec.file.as_path())
                && spec.baton.depends_on.is_empty()
                && !repo.invalid.contains(*id)
                // Apps reading Vault secrets need their policy, role and bootstrap env from the
                // full cycle first.
                && crate::secrets::referenced_paths(&spec.app).is_ok_and(|p| p.is_empty())
        })
        .map(|(id, _)| id.clone())
        .collect();
    if picked.len() > FAST_SYNC_MAX {
        return Vec::new();
    }
    picked
}

/// The repo the fast path plans: only `apps`, marked incomplete so that [`plan::plan`] would
/// hold any deletion even if one appeared.
pub fn fast_sync_repo(repo: &Repo, apps: &[AppId]) -> Repo {
    Repo {
        config: repo.config.clone(),
        specs: apps
            .iter()
            .filter_map(|id| repo.specs.get(id).map(|s| (id.clone(), s.clone())))
            .collect(),
        invalid: Default::default(),
        incomplete: true,
        diagnostics: Vec::new(),
    }
}

impl<Src: SpecSource, S: Scheduler + 'static> Reconciler<Src, S> {
    /// The fast path of a push in auto mode: plan the apps whose files changed against their
    /// live state fetched by id and apply those creates/updates first, so the first write does
    /// not wait for listing and planning every app. Never deletes. Any failure only logs: the
    /// full cycle that follows (list all, plan, drift, prune) covers everything again.
    ///
    /// The outcomes are recorded in the state here (a failed app must not be written again by
    /// the full plan of the same cycle); the report is returned for the cycle to announce.
    async fn fast_sync(
        &mut self,
        trigger: &Trigger,
        rev: &str,
        repo: &Repo,
        shutdown: &CancellationToken,
    ) -> Option<apply::ApplyReport> {
        if self.config.sync != SyncMode::Auto
            || !trigger.fetches()
            || self.state.last_synced.as_deref() == Some(rev)
        {
            return None;
        }
        let changed = {
            let src = self.source.lock().unwrap_or_else(|e| e.into_inner());
            src.changed_last()
        };
        let (loaded_rev, paths) = changed?;
        if loaded_rev != rev {
            return None;
        }
        let now = now_ms();
        let apps: Vec<AppId> = fast_sync_candidates(&paths, repo)
            .into_iter()
            .filter(|id| self.state.may_apply(id.as_str(), rev, now))
            .collect();
        if apps.is_empty() {
            return None;
        }
        let scheduler = self.scheduler.clone();
        let fetched = futures::future::join_all(apps.iter().map(|id| scheduler.get_app(id))).await;
        let mut live = Vec::with_capacity(apps.len());
        for r in fetched {
            match r {
                Ok(Some(app)) => live.push(app),
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "fast path skipped: cannot read an app");
                    return None;
                }
            }
        }
        let sub = fast_sync_repo(repo, &apps);
        let mut plan = plan::plan(
            &sub,
            &live,
            &Policy {
                commit: rev.to_string(),
                allow_deletes: None,
            },
        );
        retain_changes(&mut plan, |c| c.action != PlanAction::Delete);
        if plan.is_empty() {
            return None;
        }
        let mut options = self.config.apply.clone();
        options.cancel = shutdown.child_token();
        tracing::info!(
            create = plan.summary.create,
            update = plan.summary.update,
            "applying changed apps first (fast path)"
        );
        let report = apply::apply(&plan, self.scheduler.as_ref(), &options, &mut |_| {}).await;
        self.drift.written(
            (report.apps.iter())
                .filter(|r| r.outcome == AppOutcome::Converged)
                .map(|r| r.app.clone()),
        );
        for r in &report.apps {
            match &r.outcome {
                AppOutcome::Converged => self.state.record_success(r.app.as_str(), rev),
                AppOutcome::Failed { reason } => {
                    self.state
                        .record_failure(r.app.as_str(), rev, reason, now_ms())
                }
                _ => {}
            }
        }
        Some(report)
    }
}

/// Remove the changes `keep` rejects from `plan` (dropping empty waves, recounting); returns
/// the removed ones.
pub fn retain_changes(
    plan: &mut Plan,
    mut keep: impl FnMut(&plan::Change) -> bool,
) -> Vec<(AppId, PlanAction)> {
    let mut removed = Vec::new();
    for wave in &mut plan.waves {
        wave.changes.retain(|c| {
            let k = keep(c);
            if !k {
                removed.push((c.app.clone(), c.action));
            }
            k
        });
    }
    plan.waves.retain(|w| !w.changes.is_empty());
    let count = |p: &Plan, a: PlanAction| p.changes().filter(|c| c.action == a).count();
    plan.summary.create = count(plan, PlanAction::Create);
    plan.summary.update = count(plan, PlanAction::Update);
    plan.summary.delete = count(plan, PlanAction::Delete);
    removed
}

fn pending_summary(held: &[(AppId, PlanAction)]) -> plan::Summary {
    let n = |a: PlanAction| held.iter().filter(|(_, x)| *x == a).count();
    plan::Summary {
        create: n(PlanAction::Create),
        update: n(PlanAction::Update),
        delete: n(PlanAction::Delete),
        ..plan::Summary::default()
    }
}

/// Follow Marathon's `/v2/events` and wake the loop when someone else changes an app Baton
/// owns: an `api_post_event` whose definition no longer matches its `baton.dev/digest` label.
/// Reconnects with backoff (1 s doubling to 60 s) until `shutdown`.
pub async fn watch_scheduler_events(
    marathon: crate::scheduler::marathon::Marathon,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    use futures::StreamExt;
    let mut delay = Duration::from_secs(1);
    loop {
        let resp = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = marathon.event_stream("event_type=api_post_event") => r,
        };
        match resp {
            Ok(resp) => {
                delay = Duration::from_secs(1);
                let mut body = resp.bytes_stream();
                let mut parser = crate::scheduler::sse::Parser::default();
                loop {
                    let chunk = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        c = body.next() => c,
                    };
                    let Some(Ok(chunk)) = chunk else { break };
                    for raw in parser.feed(&chunk) {
                        if let Ok(data) = serde_json::from_str::<serde_json::Value>(&raw.data) {
                            let mut att = shared.attributions.lock();
                            let att = att.as_mut().unwrap_or_else(|e| e.get_mut());
                            att.ingest(&raw.event, &data);
                        }
                        if let Some(app) = changed_outside(&raw) {
                            tracing::debug!(app = %app, "scheduler event: owned app changed");
                            shared.trigger(Trigger::SchedulerEvent { app });
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "event stream not open"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(60));
    }
}

/// The app id of an `api_post_event` for an owned app whose definition does not match the
/// digest Baton wrote (so Baton's own writes do not wake the loop).
pub fn changed_outside(raw: &crate::scheduler::sse::RawEvent) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_str(&raw.data).ok()?;
    let kind = doc
        .get("eventType")
        .and_then(|v| v.as_str())
        .unwrap_or(&raw.event);
    if kind != "api_post_event" {
        return None;
    }
    let app = doc.get("appDefinition")?;
    crate::ownership::owner_of(app)?;
    let written = app
        .pointer("/labels")
        .and_then(|l| l.get(crate::ownership::DIGEST))
        .and_then(|d| d.as_str());
    if written == Some(crate::ownership::digest_of(app).as_str()) {
        return None;
    }
    app.get("id").and_then(|i| i.as_str()).map(str::to_string)
}

#[cfg(test)]
mod fast_path_tests;
