//! The reconcile loop of `baton serve`: a closed [`Trigger`] enum, one `tokio::select!`, one
//! cycle at a time. A cycle is fetch -> load -> plan -> decide -> apply ([`crate::apply`], the
//! same safety rules as `baton apply`); it returns an [`Action`], and every failure goes through
//! [`error_policy`]. What a cycle applies, holds and does next is the core's pure cycle rule
//! ([`baton_core::cycle`]): this module and [`partial`] only do the I/O around it.
//!
//! Invariants:
//! - Triggers that arrive while a cycle runs are coalesced into the next single cycle.
//! - A failed fetch or load keeps the last good snapshot and plans nothing from it: the cycle
//!   fails, nothing is pruned. (An incomplete repo already holds deletes in [`baton_core::plan`].)
//! - A revision is applied once. Later cycles at the same revision only report drift, except
//!   for apps whose apply failed: those are retried with backoff ([`crate::daemon::state`]) until a newer
//!   revision supersedes the failed one; and apps found back at an older definition Baton wrote
//!   and nobody edited since ([`baton_core::ownership::Standing::Behind`]: a write the scheduler
//!   lost), written again whatever their drift policy, with backoff per commit. `POST
//!   /api/sync` applies everything.
//! - A restart reads the state directory and, at an already synced revision, writes nothing.
//! - Every scheduler wait is bounded (apply's [`ApplyOptions::scheduler_silence`], the client's
//!   request timeout); a cycle in flight shows its phase and deployments in `/api/status`, and
//!   one that loses the scheduler fails ([`CycleError::Lost`]) and is retried by
//!   [`error_policy`].
//! - Every cycle ends with one INFO line saying what it did; held deletions and invalid specs
//!   are logged as WARN once per distinct cause.
//! - Rollouts ([`crate::daemon::rollout`], `rollouts.rs`): a cycle persists the rollouts its
//!   rule starts; [`Trigger::Rollout`] ticks, on a timer of their own between the retry and the
//!   poll timers, look at them and never move either timer.

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
use crate::daemon::state::{self, Outcome, State, StateError, SyncRecord};
use crate::source::{SourceError, SpecSource};
use baton_core::app::is_up as app_is_up;
use baton_core::cycle::{self, Decision, View};
use baton_core::plan::{self, Action as PlanAction, Plan, Policy};
use baton_core::spec::{AppId, Repo};
use baton_marathon::{Scheduler, SchedulerError};

/// Capacity of the trigger channel; when full, a cycle is pending anyway (coalescing).
pub const TRIGGER_QUEUE: usize = 64;
/// History entries shown in `/api/status`.
const STATUS_HISTORY: usize = 10;
/// Pushes remembered for the push-to-deployed latency.
const MAX_PENDING_PUSHES: usize = 256;

// The trigger enum, the action a cycle ends with and the sync mode are the cycle rule's data.
pub use baton_core::cycle::{Action, SyncMode, Trigger, ERROR_BACKOFF_BASE, ERROR_BACKOFF_MAX};

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
    pub secrets: Option<crate::secret_zero::wiring::SecretsWiring>,
    /// Where sync failures, drift and finished deployments are announced (None: nowhere).
    pub notifier: Option<crate::daemon::notifications::Notifier>,
    /// Rollouts: stats sources, checks, the tick ([`crate::daemon::rollout`]).
    pub rollout: crate::daemon::rollout::RolloutConfig,
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
    Vault(#[from] crate::secret_zero::vault_admin::VaultAdminError),
    /// The scheduler stopped answering while apply wrote or waited (see
    /// [`ApplyOptions::scheduler_silence`]).
    #[error("{0}")]
    Lost(String),
    /// HA: the rollout state could not be read from or written to ZooKeeper.
    #[error(transparent)]
    Handoff(#[from] crate::ha::handoff::HandoffError),
}

/// `GET /api/status`: the loop's view, as JSON (schema: `schemas/status.schema.json`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub source: String,
    /// The repo followed: a git URL without credentials, or a directory.
    pub repo: String,
    /// The followed branch or ref (`None`: a plain directory).
    pub branch: Option<String>,
    /// The commit last fetched and loaded, with its author and message (git sources).
    pub head: Option<crate::source::CommitInfo>,
    /// The newest entry of `history`: when the last sync finished and how.
    pub last_sync: Option<SyncRecord>,
    /// The environment this daemon syncs (`--environment`; docs/environments.md), or null.
    pub environment: Option<String>,
    pub sync_mode: String,
    pub ready: bool,
    pub last_fetched: Option<String>,
    pub last_synced: Option<String>,
    /// The last fetch/load/scheduler error, until a cycle succeeds.
    pub last_error: Option<String>,
    pub pending: Option<plan::Summary>,
    /// The cycle running now (`None` between cycles).
    pub cycle: Option<CycleStatus>,
    pub apps: Vec<AppStatus>,
    pub history: Vec<SyncRecord>,
    /// Secret zero, as of the last cycle that read Vault (`None` without Vault, or before).
    pub vault: Option<VaultStatus>,
    /// The repo's ownership settings and what they hold back (`None` before a first plan).
    pub ownership: Option<OwnershipStatus>,
    /// HA: this replica's role, who leads, whether it may write (docs/ha.md).
    pub ha: crate::ha::HaStatus,
}

/// The Vault part of `/api/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VaultStatus {
    /// `baton-*` policies and roles that are not this Baton's: never touched.
    pub unmanaged: Vec<baton_core::secrets::Unmanaged>,
    /// Vault deletions withheld (delete budget, an empty repo).
    pub held: Vec<baton_core::secrets::VaultHeld>,
}

/// `ownership` in `/api/status`: who this repo is on the scheduler, and what that keeps Baton
/// from touching.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipStatus {
    /// The owner label written into the apps.
    pub owner: String,
    /// `owner:` is set in `baton.yaml`; without it nothing is deleted.
    pub explicit: bool,
    /// Why nothing is deleted and how to fix it (no explicit owner), else `None`.
    pub warning: Option<String>,
    /// Deletions the last plan held because there is no explicit owner.
    pub held_deletes: Vec<AppId>,
    /// `idPrefixes` of `baton.yaml` (`None`: every app id).
    pub id_prefixes: Option<Vec<baton_core::spec::IdPrefix>>,
    /// Live apps labelled with this owner outside `idPrefixes`: reported, never touched.
    pub out_of_scope: Vec<AppId>,
}

impl OwnershipStatus {
    /// What `plan` of `repo` shows. No warning while `baton.yaml` itself is broken: its owner
    /// is then unknown rather than absent, and the config's diagnostics say what is wrong.
    pub fn of(repo: &Repo, plan: &Plan) -> Self {
        let config_broken = repo.diagnostics.iter().any(|d| {
            d.severity == baton_core::spec::Severity::Error
                && d.file.as_path() == std::path::Path::new(baton_core::spec::load::CONFIG_FILE)
        });
        OwnershipStatus {
            owner: plan.owner.clone(),
            explicit: plan.owner_explicit,
            warning: (!plan.owner_explicit && !config_broken)
                .then(|| plan::no_owner_reason(&plan.owner)),
            held_deletes: plan.held_for_no_owner().cloned().collect(),
            id_prefixes: plan.id_prefixes.clone(),
            out_of_scope: plan.out_of_scope.clone(),
        }
    }
}

/// Ids for a log line: the first few, then how many more.
fn ids_shown(ids: &[AppId]) -> String {
    const SHOWN: usize = 10;
    let mut s: Vec<&str> = ids.iter().take(SHOWN).map(AppId::as_str).collect();
    let more = ids.len().saturating_sub(SHOWN);
    let more = format!("and {more} more");
    if ids.len() > SHOWN {
        s.push(&more);
    }
    s.join(", ")
}

/// The cycle in flight, in `/api/status`: a cycle waiting on a slow or silent scheduler is
/// seen waiting, and where.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CycleStatus {
    /// What woke it (`poll`, `webhook`, ...).
    pub trigger: &'static str,
    /// The commit it works on, once known.
    pub commit: Option<String>,
    /// `fetch`, `fast-path`, `list`, `read`, `vault`, `plan`, `apply`, `observe`, `save`.
    pub phase: &'static str,
    pub started_ms: u64,
    pub phase_since_ms: u64,
}

/// One app in `/api/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub id: String,
    /// `synced`, `outOfSync`, `failed`, `invalid`, `conflict`, `held` (a deletion withheld),
    /// `deleted`.
    pub sync: &'static str,
    /// `healthy`, `progressing`, `missing`, `unknown`.
    pub health: &'static str,
    /// The commit last applied (or found in place).
    pub commit: Option<String>,
    /// The last apply error, or an invalid spec's first error.
    pub last_error: Option<String>,
    /// Why Baton holds the app back on purpose: an invalid spec's error, the reason a deletion
    /// is withheld, the owner of a conflicting app.
    pub reason: Option<String>,
    /// The deployment Baton started for it that has not finished, and since when.
    pub deploying: Option<Deploying>,
    /// The rollout in progress ([`crate::daemon::rollout`]), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<baton_core::rollout::RolloutStatus>,
    /// The last rollout of this app that was rolled back: which commit, step, why, numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<crate::daemon::rollout::RolledBackStatus>,
}

/// A deployment Baton waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deploying {
    pub deployment: String,
    pub since_ms: u64,
}

/// What the loop shares with the HTTP server.
#[derive(Debug)]
pub struct Shared {
    pub status: RwLock<Status>,
    /// Set after the first successful cycle.
    pub ready: AtomicBool,
    pub triggers: mpsc::Sender<Trigger>,
    /// The status page, `/api/drift` and `/metrics` (see [`crate::daemon::dashboard`]).
    pub dashboard: Arc<crate::daemon::dashboard::Dashboard>,
    /// API changes seen on the scheduler's event stream, for drift attribution.
    pub attributions: Arc<Mutex<baton_core::drift::Attributions>>,
    /// Accepted pushes not yet deployed: (commit, when the webhook arrived), for the
    /// push-to-deployed latency.
    pub pushes: Mutex<Vec<(String, std::time::Instant)>>,
    /// Baton's own writes, so their scheduler events do not wake the loop.
    pub own_writes: Arc<OwnWrites>,
    /// Operator commands for rollouts (`POST /api/rollouts/...`), taken by the next tick.
    pub operators: crate::daemon::rollout::Operators,
    /// The rollouts in progress and their phase words (what the API's 404/409 judge).
    rollouts: Mutex<std::collections::BTreeMap<String, &'static str>>,
    /// `POST /api/sync` requests not yet taken by a cycle (ids, the apps they name).
    pub sync_requests: crate::daemon::sync_requests::SyncRequests,
    /// Cancelled by [`Shared::trigger`] when a push arrives: set while the loop waits and while
    /// it runs a preemptible cycle ([`Trigger::preemptible`]).
    preempt: Mutex<Option<CancellationToken>>,
    /// HA on ZooKeeper (set once at start; unset: standalone).
    pub ha: std::sync::OnceLock<crate::ha::Handle>,
}

impl Shared {
    pub fn new(source: String, sync: SyncMode) -> (Arc<Shared>, mpsc::Receiver<Trigger>) {
        let (tx, rx) = mpsc::channel(TRIGGER_QUEUE);
        let status = Status {
            repo: source.clone(),
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
                dashboard: crate::daemon::dashboard::Dashboard::new(Default::default()),
                attributions: Default::default(),
                pushes: Default::default(),
                own_writes: Default::default(),
                operators: Default::default(),
                rollouts: Default::default(),
                sync_requests: Default::default(),
                preempt: Mutex::new(None),
                ha: std::sync::OnceLock::new(),
            }),
            rx,
        )
    }

    /// Queue a trigger; a full queue means a cycle is pending already, so dropping is fine. A
    /// push also stops a cycle that only looks and has not written anything yet.
    pub fn trigger(&self, t: Trigger) {
        let preempts = t.preempts();
        let _ = self.triggers.try_send(t);
        if preempts {
            let token = self
                .preempt
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(token) = token {
                token.cancel();
            }
        }
    }

    /// The phase word of `app`'s rollout in progress, if one is.
    pub fn rollout_phase(&self, app: &str) -> Option<&'static str> {
        let r = self.rollouts.lock().unwrap_or_else(|e| e.into_inner());
        r.get(app).copied()
    }

    /// The rollouts in progress, as persisted now (the loop calls it whenever they change).
    pub fn set_rollouts(&self, state: &State) {
        let now = (state.rollouts.iter())
            .map(|(app, r)| (app.clone(), crate::daemon::rollout::phase_word(&r.phase)))
            .collect();
        *self.rollouts.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }

    /// A fresh preemption token for the next cycle (see [`Trigger::preemptible`]).
    fn arm_preempt(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.preempt.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        token
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

    /// Where the specs come from, as the status page's header shows it (no credentials).
    pub fn set_origin(&self, repo: String, branch: Option<String>) {
        self.with_status(|st| {
            st.repo = repo;
            st.branch = branch;
        });
    }

    pub fn status(&self) -> Status {
        let mut st = self
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(ha) = self.ha.get() {
            st.ha = ha.leadership.status();
        }
        st
    }

    pub(crate) fn with_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.write().unwrap_or_else(|e| e.into_inner()));
    }

    /// The cycle in flight entered `phase`.
    fn phase(&self, phase: &'static str) {
        self.with_status(|st| {
            if let Some(c) = &mut st.cycle {
                c.phase = phase;
                c.phase_since_ms = now_ms();
            }
        });
    }

    /// Show what apply is doing as it happens (deployments waited for), and log what an
    /// operator must hear of at INFO: locks, rollbacks and failed apps are WARN lines.
    fn apply_progress(&self, ev: &apply::ProgressEvent) {
        use apply::ProgressEvent as P;
        match ev {
            P::Started { app, action } => {
                tracing::debug!(app = %app, action = ?action, "writing");
            }
            P::Deploying {
                app, deployment, ..
            } => {
                tracing::debug!(app = %app, deployment = %deployment, "deploying");
                let deploying = Deploying {
                    deployment: deployment.clone(),
                    since_ms: now_ms(),
                };
                self.with_status(|st| {
                    let entry = status_entry(&mut st.apps, app);
                    entry.deploying = Some(deploying);
                    entry.health = "progressing";
                    if entry.sync == "synced" {
                        entry.sync = "outOfSync";
                    }
                });
            }
            P::Locked { app, deployments } => {
                tracing::warn!(app = %app, deployments = %deployments.join(", "), "the app is locked by deployments Baton did not start: waiting for them");
            }
            P::RollingBack { app, deployment } => {
                tracing::warn!(app = %app, deployment = %deployment, "no progress before the app's deadline: rolling its deployment back");
            }
            P::Finished { result } => {
                match &result.outcome {
                    AppOutcome::Failed { reason } => {
                        tracing::warn!(app = %result.app, action = ?result.action, reason = %reason, "app failed");
                    }
                    AppOutcome::Skipped { because } => {
                        tracing::warn!(app = %result.app, action = ?result.action, reason = %format!("depends on {because}, which did not converge"), "app skipped");
                    }
                    _ => {}
                }
                if !matches!(result.outcome, AppOutcome::Unfinished { .. }) {
                    self.with_status(|st| {
                        if let Ok(i) = st
                            .apps
                            .binary_search_by(|a| a.id.as_str().cmp(result.app.as_str()))
                        {
                            st.apps[i].deploying = None;
                        }
                    });
                }
            }
        }
    }
}

/// The entry of `app` in the sorted `apps`, added (out of sync, no error) when missing.
fn status_entry<'a>(apps: &'a mut Vec<AppStatus>, app: &AppId) -> &'a mut AppStatus {
    let i = match apps.binary_search_by(|a| a.id.as_str().cmp(app.as_str())) {
        Ok(i) => i,
        Err(i) => {
            apps.insert(
                i,
                AppStatus {
                    id: app.to_string(),
                    sync: "outOfSync",
                    health: "missing",
                    commit: None,
                    last_error: None,
                    reason: None,
                    deploying: None,
                    rollout: None,
                    rolled_back: None,
                },
            );
            i
        }
    };
    &mut apps[i]
}

/// Backoff of the n-th consecutive failed cycle: `ERROR_BACKOFF_BASE * 2^(n-1)`, capped at
/// `ERROR_BACKOFF_MAX`. The process never exits because of a failed cycle.
pub fn error_policy(err: &CycleError, consecutive: u32) -> Action {
    let delay = cycle::error_backoff(consecutive);
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
    drift: crate::daemon::drift_keeper::DriftKeeper,
    /// The last sync failure announced, so a failure retried with backoff is announced once.
    announced_failure: Option<String>,
    /// What the last ownership warning said, so it is logged once, not every cycle.
    warned_ownership: Option<OwnershipStatus>,
    /// The causes of held work (withheld deletions, invalid specs) the last full cycle logged:
    /// each distinct cause is a WARN line once, not on every poll.
    warned: BTreeSet<String>,
    /// Deletions withheld and invalid specs as the last full cycle saw them (a cycle that
    /// looks at a few apps reports these).
    held_work: (usize, usize),
    /// What the cycle in flight did, for its closing log line.
    done: CycleSummary,
    /// The last status of each rollout in progress (from its last tick).
    rollout_status: std::collections::BTreeMap<String, baton_core::rollout::RolloutStatus>,
    /// When each rollout in progress wants its next look (Unix ms).
    rollout_wake: std::collections::BTreeMap<String, u64>,
    /// HA: the leadership term whose rollout state was taken over from ZooKeeper.
    handoff_term: Option<u64>,
    /// Stats fetches and HTTP checks.
    http: reqwest::Client,
    /// The commit last loaded: author and message (git sources).
    head: Option<crate::source::CommitInfo>,
    /// The `POST /api/sync` requests the cycle in flight serves (a manual-sync cycle only).
    asked: Option<crate::daemon::sync_requests::Taken>,
}

/// What one cycle did: its closing INFO line.
#[derive(Debug, Default)]
struct CycleSummary {
    commit: Option<String>,
    outcome: &'static str,
    created: usize,
    updated: usize,
    deleted: usize,
    held: usize,
    failed: usize,
    invalid: usize,
}

impl CycleSummary {
    /// Count what `report` wrote and what failed.
    fn count(&mut self, report: &apply::ApplyReport) {
        for r in &report.apps {
            match (&r.outcome, r.action) {
                (AppOutcome::Converged, PlanAction::Create) => self.created += 1,
                (AppOutcome::Converged, PlanAction::Update) => self.updated += 1,
                (AppOutcome::Converged, PlanAction::Delete) => self.deleted += 1,
                (o, _) if o.is_failure() => self.failed += 1,
                _ => {}
            }
        }
    }
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
    let drift = crate::daemon::drift_keeper::DriftKeeper::new(
        config.state_dir.clone(),
        shared.dashboard.clone(),
        shared.attributions.clone(),
        config.notifier.clone(),
    )
    .map_err(|e| StateError::Format {
        path: config
            .state_dir
            .join(baton_core::drift::ledger::LEDGER_FILE),
        message: e.to_string(),
    })?;
    let poll_interval = config.poll_interval;
    let scheduler = Arc::new(Recording {
        inner: scheduler,
        own: shared.own_writes.clone(),
    });
    let mut r = Reconciler {
        source: Arc::new(Mutex::new(source)),
        scheduler,
        config,
        state,
        last_good: None,
        head: None,
        shared,
        drift,
        announced_failure: None,
        warned_ownership: None,
        warned: BTreeSet::new(),
        held_work: (0, 0),
        done: CycleSummary::default(),
        rollout_status: Default::default(),
        rollout_wake: Default::default(),
        handoff_term: None,
        http: crate::daemon::rollout::http_client(),
        asked: None,
    };
    r.shared.set_rollouts(&r.state);
    r.publish_status(None, None, None, None);
    let mut pending = Some(Trigger::Startup);
    let mut requeue_at: Option<Instant> = None;
    // The next rollout tick: set while rollouts are in progress (ranked between the retry and
    // the poll timers; a tick never moves either of them).
    let mut rollout_at: Option<Instant> = None;
    let mut rollout_failures: u32 = 0;
    let mut poll_at = Instant::now() + jitter(poll_interval);
    let mut failures: u32 = 0;
    let mut cycle: u64 = 0;
    loop {
        // Armed before waiting, so a push that arrives between picking the trigger and the
        // cycle's first look at the token still stops a preemptible cycle.
        let preempt = r.shared.arm_preempt();
        let first = match pending.take() {
            Some(t) => t,
            None => tokio::select! {
                biased;
                _ = shutdown.cancelled() => Trigger::Shutdown,
                t = rx.recv() => t.unwrap_or(Trigger::Shutdown),
                _ = sleep_until_opt(requeue_at) => Trigger::Retry,
                _ = sleep_until_opt(rollout_at) => Trigger::Rollout,
                _ = tokio::time::sleep_until(poll_at) => Trigger::Poll,
            },
        };
        let (trigger, events) = coalesce(first, &mut rx);
        if trigger == Trigger::Shutdown || shutdown.is_cancelled() {
            break;
        }
        cycle += 1;
        // A manual sync serves every request queued so far (and only the apps they name).
        r.asked = (trigger == Trigger::ManualSync)
            .then(|| r.shared.sync_requests.take())
            .flatten();
        let span = tracing::info_span!("cycle", n = cycle, trigger = trigger.name());
        let preempt = Preempt(trigger.preemptible().then_some(preempt));
        if trigger == Trigger::Rollout && !r.leads() {
            // HA: only the leader drives rollouts; a follower looks again later.
            rollout_at = Some(Instant::now() + r.config.rollout.tick);
            continue;
        }
        if trigger == Trigger::Rollout {
            // A tick only looks at the rollouts: the retry and poll timers stay as they are.
            let tick = r.config.rollout.tick;
            let ran = r
                .rollout_cycle(&preempt, &shutdown)
                .instrument(span.clone())
                .await;
            rollout_at = match ran {
                // Stopped by a push before writing: still due, after the push's cycle.
                Ok(None) => rollout_at.or(Some(Instant::now())),
                Ok(Some(wait)) => {
                    rollout_failures = 0;
                    Some(Instant::now() + wait)
                }
                Err(e) => {
                    rollout_failures = rollout_failures.saturating_add(1);
                    let wait = cycle::error_backoff(rollout_failures).max(tick);
                    let _g = span.enter();
                    tracing::warn!(error = %e, retry_in = ?wait, "rollout tick failed");
                    Some(Instant::now() + wait)
                }
            };
            if r.state.rollouts.is_empty() {
                rollout_at = None;
            }
            continue;
        }
        let result = r
            .reconcile(&trigger, &events, &preempt, &shutdown)
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
        let next = action.requeue_after().map(|d| Instant::now() + d);
        requeue_at = cycle::next_requeue(&trigger, requeue_at, next);
        // A per-app sync applies a new revision only to the apps it names; in auto mode the
        // rest follows at once (a push coalesced into it must not wait for the poll).
        let per_app = r.asked.take().is_some_and(|t| t.apps.is_some());
        if per_app && r.config.sync == SyncMode::Auto && r.state.last_synced != r.state.last_fetched
        {
            pending = Some(Trigger::Retry);
        }
        if trigger.fetches() {
            poll_at = Instant::now() + jitter(poll_interval);
        }
        // A rollout this cycle started (or one found in the state after a restart) is looked
        // at now; one already scheduled keeps its time.
        rollout_at = match (r.state.rollouts.is_empty(), rollout_at) {
            (true, _) => None,
            (false, at) => at.or(Some(Instant::now())),
        };
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

/// The strongest of `first` and everything already queued, and the (app, version) pairs of
/// every scheduler event among them (what a scheduler-event cycle looks at).
fn coalesce(first: Trigger, rx: &mut mpsc::Receiver<Trigger>) -> (Trigger, Vec<EventApp>) {
    let mut events = Vec::new();
    let mut note = |t: &Trigger| {
        if let Trigger::SchedulerEvent { app, version } = t {
            events.push((app.clone(), version.clone()));
        }
    };
    note(&first);
    let mut best = first;
    while let Ok(t) = rx.try_recv() {
        note(&t);
        if t.rank() > best.rank() {
            best = t;
        }
    }
    (best, events)
}

/// An app named by a scheduler event, and the version the event announced.
type EventApp = (String, Option<String>);

/// A cycle's preemption token: `None` for a cycle no push may stop.
struct Preempt(Option<CancellationToken>);

impl Preempt {
    /// A push arrived: stop here (only ever asked before anything is written).
    fn requested(&self) -> bool {
        self.0.as_ref().is_some_and(|t| t.is_cancelled())
    }

    /// `fut`, or `None` as soon as a push arrives (for reads that may be dropped midway).
    async fn unless<T>(&self, fut: impl std::future::Future<Output = T>) -> Option<T> {
        match &self.0 {
            None => Some(fut.await),
            Some(token) => tokio::select! {
                biased;
                _ = token.cancelled() => None,
                v = fut => Some(v),
            },
        }
    }
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

/// Wall time of the phases of one cycle, for a debug log line (`snapshot=3.1ms list=...`).
struct Phases {
    last: std::time::Instant,
    done: Vec<(&'static str, Duration)>,
}

impl Phases {
    fn new() -> Self {
        Phases {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    /// The phase `name` ended now.
    fn mark(&mut self, name: &'static str) {
        self.mark_at(name, std::time::Instant::now());
    }

    /// The phase `name` ended at `at`.
    fn mark_at(&mut self, name: &'static str, at: std::time::Instant) {
        self.done
            .push((name, at.saturating_duration_since(self.last)));
        self.last = at;
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.done.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            write!(f, "{sep}{name}={:.1}ms", d.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
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
        events: &[EventApp],
        preempt: &Preempt,
        shutdown: &CancellationToken,
    ) -> Result<Action, CycleError> {
        let started = now_ms();
        let clock = std::time::Instant::now();
        self.done = CycleSummary {
            commit: self.last_good.as_ref().map(|(r, _)| r.clone()),
            outcome: "noop",
            held: self.held_work.0,
            invalid: self.held_work.1,
            ..CycleSummary::default()
        };
        let commit = self.done.commit.clone();
        self.shared.with_status(|st| {
            st.cycle = Some(CycleStatus {
                trigger: trigger.name(),
                commit,
                phase: if trigger.fetches() { "fetch" } else { "read" },
                started_ms: started,
                phase_since_ms: started,
            })
        });
        let ran = self
            .run_cycle(trigger, events, preempt, shutdown, started, clock)
            .await;
        self.shared.with_status(|st| st.cycle = None);
        let d = &self.done;
        let outcome = if ran.is_err() { "failed" } else { d.outcome };
        tracing::info!(
            trigger = trigger.name(),
            commit = d.commit.as_deref().unwrap_or("-"),
            outcome,
            created = d.created,
            updated = d.updated,
            deleted = d.deleted,
            held = d.held,
            failed = d.failed,
            invalid = d.invalid,
            took_ms = clock.elapsed().as_millis() as u64,
            "cycle finished"
        );
        ran
    }

    async fn run_cycle(
        &mut self,
        trigger: &Trigger,
        events: &[EventApp],
        preempt: &Preempt,
        shutdown: &CancellationToken,
        started: u64,
        clock: std::time::Instant,
    ) -> Result<Action, CycleError> {
        // HA: a new leader takes the rollouts over before anything else.
        let taken = self.take_over_rollouts().await;
        let ran = match (trigger, taken) {
            // HA: a follower reads and relays, never writes.
            _ if !self.leads() => self.follower_cycle(trigger).await,
            (_, Err(e)) => Err(e),
            (Trigger::SchedulerEvent { .. }, Ok(())) => {
                match self
                    .event_cycle(trigger, events, preempt, shutdown, started)
                    .await
                {
                    Ok(Some(a)) => Ok(a),
                    Ok(None) => self.cycle(trigger, preempt, shutdown, started).await,
                    Err(e) => Err(e),
                }
            }
            (_, Ok(())) => self.cycle(trigger, preempt, shutdown, started).await,
        };
        match ran {
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
                    held: self.done.held,
                    invalid: self.done.invalid,
                    error: Some(e.to_string()),
                    author: None,
                    message: None,
                    requests: self.asked.as_ref().map(|t| t.record()),
                };
                let record = self.with_commit_words(record);
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
            let fetch_took = fetch_started.elapsed();
            if src.is_git() {
                // Failed fetches too: a remote that times out is what this should show.
                metrics.git_fetch(fetch_took);
            }
            let rev = fetched?;
            if known.as_deref() == Some(rev.as_str()) {
                tracing::debug!(
                    fetch_ms = fetch_took.as_secs_f64() * 1e3,
                    "fetched: no change"
                );
                return Ok::<_, SourceError>((rev, None));
            }
            let load_started = std::time::Instant::now();
            let repo = src.load(&rev)?;
            let head = src.commit_info(&rev);
            tracing::debug!(
                fetch_ms = fetch_took.as_secs_f64() * 1e3,
                load_ms = load_started.elapsed().as_secs_f64() * 1e3,
                "fetched and loaded"
            );
            Ok((rev, Some((repo, head))))
        })
        .await
        .map_err(|e| CycleError::Task(e.to_string()))??;
        match loaded {
            (rev, Some((repo, head))) => {
                tracing::info!(revision = %rev, apps = repo.specs.len(), invalid = repo.invalid.len(), "loaded");
                self.head = head.clone();
                self.shared.with_status(|st| st.head = head);
                self.state.last_fetched = Some(rev.clone());
                if let Some(notifier) = &self.config.notifier {
                    notifier.set_owner(&repo.config.owner);
                }
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

    /// A cycle stopped by a push before it wrote anything: counted, and the push's cycle runs
    /// next (its trigger is queued).
    fn preempted(&mut self, clock: std::time::Instant) -> Action {
        tracing::debug!("a push arrived: this cycle stops before writing anything");
        (self.shared.dashboard.metrics).sync_finished("preempted", clock.elapsed());
        self.done.outcome = "preempted";
        Action::await_change()
    }

    async fn cycle(
        &mut self,
        trigger: &Trigger,
        preempt: &Preempt,
        shutdown: &CancellationToken,
        started: u64,
    ) -> Result<Action, CycleError> {
        let clock = std::time::Instant::now();
        let mut phases = Phases::new();
        let (rev, repo) = self.snapshot(trigger).await?;
        self.done.commit = Some(rev.clone());
        self.shared.with_status(|st| {
            if let Some(c) = &mut st.cycle {
                c.commit = Some(rev.clone());
            }
        });
        phases.mark("snapshot");
        // Already recorded in the state; merged into this cycle's report below so that what it
        // deployed is announced, counted and shown like the rest of the cycle.
        self.shared.phase("fast-path");
        let fast = self.fast_sync(trigger, &rev, &repo, shutdown).await;
        phases.mark("fast-path");
        if let Some((report, lost)) = fast.as_ref().and_then(|r| Some((r, r.lost.clone()?))) {
            // Its outcomes are in the state already; a silent scheduler is asked nothing more.
            self.done.count(report);
            state::save(&self.config.state_dir, &self.state)?;
            return Err(CycleError::Lost(lost));
        }
        // Once something was written, the cycle runs to its end.
        let no_preempt = Preempt(None);
        let preempt = if fast.is_some() { &no_preempt } else { preempt };
        if preempt.requested() {
            return Ok(self.preempted(clock));
        }
        self.shared.phase("list");
        let Some(live) = preempt.unless(self.scheduler.list_apps()).await else {
            return Ok(self.preempted(clock));
        };
        let live = live?;
        phases.mark("list");
        self.shared.phase("vault");
        let (repo, vault_sync) = self.secrets_prepare(repo).await?;
        if preempt.requested() {
            return Ok(self.preempted(clock));
        }
        self.shared.phase("plan");
        let plan = plan::plan(
            &repo,
            &live,
            &Policy {
                commit: rev.clone(),
                allow_deletes: self.config.allow_deletes,
            },
        );
        phases.mark("plan");
        self.warn_ownership(&repo, &plan);
        if preempt.requested() {
            return Ok(self.preempted(clock));
        }
        self.warn_held_work(&repo, &plan);
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
        let state = &self.state;
        let corrections = self.drift.observe(
            &repo,
            &live,
            failed.iter().map(|(a, e)| (a, e.as_str())),
            |a| state.deployed(a.as_str()),
            now,
        );
        let corrections: BTreeSet<AppId> = corrections.into_iter().collect();
        phases.mark("drift");
        // Past here Vault or the scheduler may be written: no push stops the cycle any more.
        if preempt.requested() {
            return Ok(self.preempted(clock));
        }

        // Which changes this cycle may apply: the cycle rule.
        let lost_writes = cycle::lost_writes(&repo, &live, &plan);
        let rollouts = self.rollout_view(&repo, &live);
        let decision = cycle::decide(
            &cycle::Input {
                trigger,
                mode: self.config.sync,
                view: View::All,
                rev: &rev,
                state: &self.state,
                corrections: &corrections,
                lost_writes: &lost_writes,
                rollouts: &rollouts,
                now_ms: now,
                // A per-app `POST /api/sync?app=`: only those apps.
                only: self.asked.as_ref().and_then(|t| t.apps.as_ref()),
            },
            plan,
        );
        self.rewriting(&decision, &live, &rev, now);
        self.start_rollouts(&decision.rollout_starts, &repo, &rev, now);
        let plan = &decision.plan;
        let planned_total = plan.summary.create + plan.summary.update + plan.summary.delete;
        // Vault objects are Baton's own: in auto mode every cycle puts them back (drift-check).
        let vault_writes = decision.vault_writes;
        let vault_plan = self
            .secrets_before_apps(vault_sync.as_ref(), &repo, plan, &live, vault_writes)
            .await?;

        self.log_held(&decision);
        let held_ids = decision.held_ids();
        let report = if plan.is_empty() {
            None
        } else {
            // What is about to be written shows as out of sync while it is (not as the
            // previous cycle left it), and each deployment as it starts.
            let apps = self.status_apps(&repo, &live, (plan, None, &held_ids));
            self.shared.with_status(|st| st.apps = apps);
            self.shared.phase("apply");
            let mut options = self.config.apply.clone();
            options.cancel = shutdown.child_token();
            tracing::info!(
                create = plan.summary.create,
                update = plan.summary.update,
                delete = plan.summary.delete,
                "applying"
            );
            let shared = self.shared.clone();
            let mut progress = move |ev: apply::ProgressEvent| shared.apply_progress(&ev);
            Some(apply::apply(plan, self.scheduler.as_ref(), &options, &mut progress).await)
        };
        phases.mark("apply");
        if let Some(report) = &report {
            self.record_report(report, &rev);
        }
        let report = apply::ApplyReport::merge(fast, report);
        if let Some(r) = &report {
            self.done.count(r);
        }
        if let Some(lost) = report.as_ref().and_then(|r| r.lost.clone()) {
            // Nothing more is asked of a silent scheduler: what is known is kept and shown,
            // and the cycle fails (retried by the error policy).
            state::save(&self.config.state_dir, &self.state)?;
            let apps = self.status_apps(&repo, &live, (plan, report.as_ref(), &held_ids));
            self.shared.with_status(|st| st.apps = apps);
            return Err(CycleError::Lost(lost));
        }
        let outcome = match &report {
            None => Outcome::Synced,
            Some(r) if r.cancelled => Outcome::Abandoned,
            Some(r) if r.converged() => Outcome::Synced,
            Some(_) => Outcome::Partial,
        };
        if let (Some(vp), Some(w), true) = (&vault_plan, &self.config.secrets, vault_writes) {
            let deletes = crate::secret_zero::wiring::deletes_after_cycle(
                vp,
                report.as_ref(),
                &plan.unchanged,
            );
            if let Err(e) = w.admin.apply(&deletes).await {
                state::save(&self.config.state_dir, &self.state)?;
                return Err(e.into());
            }
        }
        if decision.completes_revision && outcome != Outcome::Abandoned {
            self.state.last_synced = Some(rev.clone());
        }
        if let Some(report) = &report {
            self.shared.phase("observe");
            self.observe_after_apply(&repo, report).await;
            phases.mark("observe");
        }
        let outcome = if decision.planned_only {
            Outcome::Planned
        } else {
            outcome
        };
        let worth_recording = decision.record;
        if worth_recording {
            let failed: Vec<String> = report
                .iter()
                .flat_map(|r| r.failures())
                .map(|a| a.app.to_string())
                .collect();
            let record = SyncRecord {
                started_ms: started,
                finished_ms: now_ms(),
                trigger: trigger.name().into(),
                commit: Some(rev.clone()),
                outcome,
                changes: planned_total,
                held: plan.held.len(),
                invalid: repo.invalid.len(),
                error: (!failed.is_empty()).then(|| format!("failed: {}", failed.join(", "))),
                author: None,
                message: None,
                requests: self.asked.as_ref().map(|t| t.record()),
            };
            let record = self.with_commit_words(record);
            self.state.push_history(record);
        }
        self.shared.phase("save");
        state::save(&self.config.state_dir, &self.state)?;
        phases.mark("save");
        self.shared.ready.store(true, Ordering::Relaxed);
        let pending = decision.pending();
        self.publish_status(
            Some(&repo),
            Some(&live),
            Some((plan, report.as_ref(), &held_ids)),
            None,
        );
        if let Some(p) = pending {
            if let Ok(mut s) = self.shared.status.write() {
                s.pending = Some(p);
            }
        }
        phases.mark("status");
        self.done.outcome = if worth_recording {
            outcome_word(outcome)
        } else {
            "noop"
        };
        // Last: whoever hears of this cycle (metrics, notifications) finds the status showing it.
        self.announce_cycle(
            &rev,
            outcome,
            worth_recording,
            decision.completes_revision && decision.new_revision,
            report.as_ref(),
            &decision.corrections,
            clock,
        );
        tracing::debug!(phases = %phases, "cycle phases");

        Ok(self.next_action(now))
    }

    /// WARN about what the repo's ownership settings hold back: no explicit owner (nothing is
    /// deleted), live apps of this owner outside `idPrefixes`. Once per distinct situation,
    /// not every cycle.
    fn warn_ownership(&mut self, repo: &Repo, plan: &Plan) {
        let now = OwnershipStatus::of(repo, plan);
        let before = self.warned_ownership.as_ref();
        let same_owner =
            before.is_some_and(|b| (&b.owner, b.explicit) == (&now.owner, now.explicit));
        let same_held = same_owner && before.is_some_and(|b| b.held_deletes == now.held_deletes);
        // Held deletions are logged with their reason by `warn_held_work`; this is the note
        // that nothing would be deleted, once, when none is held.
        let note = now.held_deletes.is_empty() && !same_held;
        if let Some(warning) = now.warning.as_ref().filter(|_| note) {
            tracing::warn!(
                owner = %now.owner,
                held_deletes = now.held_deletes.len(),
                apps = %ids_shown(&now.held_deletes),
                "{warning}"
            );
        }
        let same_scope = same_owner && before.is_some_and(|b| b.out_of_scope == now.out_of_scope);
        if !now.out_of_scope.is_empty() && !same_scope {
            tracing::warn!(
                owner = %now.owner,
                apps = %ids_shown(&now.out_of_scope),
                "live apps labelled with this owner are outside idPrefixes of baton.yaml: left alone"
            );
        }
        self.warned_ownership = Some(now);
    }

    /// Log the apps about to be written again because the scheduler lost Baton's write of
    /// them, and start their backoff (see [`State::record_rewrite`]).
    fn rewriting(&mut self, decision: &Decision, live: &[serde_json::Value], rev: &str, now: u64) {
        for app in &decision.rewrites {
            let found = live
                .iter()
                .find(|a| a.get("id").and_then(|i| i.as_str()) == Some(app.as_str()))
                .and_then(|a| {
                    a.pointer("/labels")?
                        .get(baton_core::ownership::COMMIT)?
                        .as_str()
                });
            tracing::warn!(
                app = %app,
                found = found.unwrap_or("-"),
                desired = rev,
                "the app is back at an older definition Baton wrote and nobody changed since (a write the scheduler lost): writing it again"
            );
            self.state.record_rewrite(app.as_str(), rev, now);
        }
    }

    /// Say at DEBUG what the cycle rule held back and why, one line per reason (the apps show
    /// in `/api/status`).
    fn log_held(&self, decision: &Decision) {
        let mut by_reason: std::collections::BTreeMap<String, Vec<AppId>> = Default::default();
        for h in &decision.held {
            let reason = match h.reason {
                // One line for every backoff, whatever its end.
                cycle::HoldReason::Backoff { .. } => "a failed apply backs off".to_string(),
                cycle::HoldReason::RewriteBackoff { .. } => {
                    "a lost write written again backs off".to_string()
                }
                ref r => r.to_string(),
            };
            by_reason.entry(reason).or_default().push(h.app.clone());
        }
        for (reason, apps) in by_reason {
            tracing::debug!(changes = apps.len(), apps = %ids_shown(&apps), reason, "held back");
        }
    }

    /// WARN once per distinct cause of held work: each reason deletions are withheld for (with
    /// the apps), each invalid spec (with its error). Also sets the held-work gauges.
    fn warn_held_work(&mut self, repo: &Repo, plan: &Plan) {
        self.done.held = plan.held.len();
        self.done.invalid = repo.invalid.len();
        self.held_work = (plan.held.len(), repo.invalid.len());
        (self.shared.dashboard.metrics).set_held_work(plan.held.len(), repo.invalid.len());
        let mut causes = BTreeSet::new();
        let mut by_reason: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for h in &plan.held {
            by_reason
                .entry(h.reason.as_str())
                .or_default()
                .push(h.app.as_str());
        }
        for (reason, apps) in by_reason {
            let key = format!("held|{reason}|{}", apps.join(","));
            if !self.warned.contains(&key) {
                const SHOWN: usize = 20;
                let more = apps.len().saturating_sub(SHOWN);
                let mut list = apps[..apps.len().min(SHOWN)].join(", ");
                if more > 0 {
                    list.push_str(&format!(" and {more} more"));
                }
                tracing::warn!(deletes = apps.len(), reason, apps = %list, "deletions held: nothing was deleted");
            }
            causes.insert(key);
        }
        for id in &repo.invalid {
            let reason = baton_core::drift::first_error(repo, id)
                .unwrap_or_else(|| "its spec does not validate".into());
            let key = format!("invalid|{id}|{reason}");
            if !self.warned.contains(&key) {
                tracing::warn!(app = %id, reason = %reason, "invalid spec: the app is left untouched");
            }
            causes.insert(key);
        }
        self.warned = causes;
    }

    /// Requeue for the earliest failed-app retry or `correctAfter` grace period, if any
    /// ([`cycle::next_action`]).
    fn next_action(&self, now: u64) -> Action {
        let correction_at = self
            .drift
            .next_correction(now)
            .map(|d| now + u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        // Rollouts keep their own timer (`reconcile/rollouts.rs`), not this requeue.
        cycle::next_action(&self.state, correction_at, None, now_ms())
    }

    /// Secret zero before planning: with Vault, observe it and inject the bootstrap env (a Vault
    /// error fails the cycle before anything is planned); without, block the apps that read
    /// Vault secrets (left untouched, shown as invalid with the reason).
    async fn secrets_prepare(
        &self,
        repo: Arc<Repo>,
    ) -> Result<(Arc<Repo>, Option<crate::secret_zero::wiring::SecretsSync>), CycleError> {
        let Some(wiring) = &self.config.secrets else {
            // Without Vault no extra policy is allowed either (the apps are blocked anyway).
            let desired = baton_core::secrets::desired(&repo, &Default::default());
            if desired.apps.is_empty() && desired.issues.is_empty() {
                return Ok((repo, None));
            }
            let mut blocked = (*repo).clone();
            let n = baton_core::secrets::block_without_vault(&mut blocked, &desired);
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
        sync: Option<&crate::secret_zero::wiring::SecretsSync>,
        repo: &Repo,
        plan: &Plan,
        live: &[serde_json::Value],
        write: bool,
    ) -> Result<Option<baton_core::secrets::VaultPlan>, CycleError> {
        let (Some(wiring), Some(sync)) = (&self.config.secrets, sync) else {
            return Ok(None);
        };
        let live_ids: Vec<AppId> = live
            .iter()
            .filter_map(|a| AppId::parse(a.get("id")?.as_str()?).ok())
            .collect();
        let vp = baton_core::secrets::plan_vault(
            &sync.desired,
            &sync.live,
            &sync.role_ids,
            repo,
            plan,
            &live_ids,
            self.config.allow_deletes,
        );
        for i in &vp.issues {
            tracing::warn!(app = %i.app, issue = %i.message, "secrets issue: app left untouched");
        }
        if let Some(h) = vp.held.first() {
            tracing::warn!(
                objects = vp.held.len(),
                reason = %h.reason,
                "vault: deletions held back"
            );
        }
        if let Ok(mut st) = self.shared.status.write() {
            st.vault = Some(VaultStatus {
                unmanaged: vp.unmanaged.clone(),
                held: vp.held.clone(),
            });
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

    /// What an apply did, into the state: converged apps are at `rev` (deleted ones forgotten),
    /// failed and skipped ones back off.
    fn record_report(&mut self, report: &apply::ApplyReport, rev: &str) {
        self.drift.written(
            (report.apps.iter())
                .filter(|r| r.outcome == AppOutcome::Converged)
                .map(|r| r.app.clone()),
        );
        for r in &report.apps {
            match (&r.outcome, r.action) {
                (AppOutcome::Converged, PlanAction::Delete) => self.state.forget(r.app.as_str()),
                (AppOutcome::Converged, _) => {
                    self.state.record_success(r.app.as_str(), rev);
                }
                (AppOutcome::Failed { reason }, _) => {
                    self.state
                        .record_failure(r.app.as_str(), rev, reason, now_ms())
                }
                (AppOutcome::Skipped { because }, _) => self.state.record_failure(
                    r.app.as_str(),
                    rev,
                    &format!("skipped: {because} did not converge"),
                    now_ms(),
                ),
                _ => {}
            }
        }
    }

    /// Look at the scheduler again after writing, so the drift report, the apps-by-state
    /// gauges and the ledger show the result of this cycle now rather than at the next trigger.
    /// Only the apps `report` names changed since the cycle looked: up to
    /// [`partial::EVENT_CYCLE_MAX`] of them are re-read by id; more, and everything is listed.
    async fn observe_after_apply(&mut self, repo: &Repo, report: &apply::ApplyReport) {
        let ids: BTreeSet<AppId> = report.apps.iter().map(|r| r.app.clone()).collect();
        if ids.len() <= partial::EVENT_CYCLE_MAX {
            let list: Vec<&AppId> = ids.iter().collect();
            let read =
                futures::future::join_all(list.iter().map(|id| self.scheduler.get_app(id))).await;
            let mut live = Vec::new();
            for r in read {
                match r {
                    Ok(app) => live.extend(app),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read the apps written");
                        return;
                    }
                }
            }
            let failed = self.failures_of(&ids);
            let failures = failed.iter().map(|(a, e)| (a, e.as_str()));
            let state = &self.state;
            let deployed = |a: &AppId| state.deployed(a.as_str());
            let _ = (self.drift).observe_apps(repo, &live, &ids, failures, deployed, now_ms());
            return;
        }
        match self.scheduler.list_apps().await {
            Ok(live) => {
                let failed: Vec<(AppId, String)> = (self.state.apps.iter())
                    .filter_map(|(id, a)| Some((AppId::parse(id).ok()?, a.last_error.clone()?)))
                    .collect();
                let failures = failed.iter().map(|(a, e)| (a, e.as_str()));
                let state = &self.state;
                let deployed = |a: &AppId| state.deployed(a.as_str());
                let _ = self
                    .drift
                    .observe(repo, &live, failures, deployed, now_ms());
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
                self.notify(
                    crate::daemon::notifications::Notification::DeploymentFinished {
                        commit: Some(rev.to_string()),
                        apps: converged.iter().map(|r| r.app.clone()).collect(),
                        took,
                    },
                );
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
        self.notify(crate::daemon::notifications::Notification::SyncFailed {
            commit,
            error,
            apps,
        });
    }

    fn notify(&self, n: crate::daemon::notifications::Notification) {
        if let Some(notifier) = &self.config.notifier {
            notifier.notify(n);
        }
    }

    /// Rebuild `/api/status` from the last cycle's data.
    /// `record` with the author and message of its commit, when it is the one last loaded.
    fn with_commit_words(&self, mut record: SyncRecord) -> SyncRecord {
        if let Some(head) = &self.head {
            if record.commit.as_deref() == Some(head.commit.as_str()) {
                record.author = head.author.clone();
                record.message = Some(head.message.clone());
            }
        }
        record
    }

    fn publish_status(
        &self,
        repo: Option<&Repo>,
        live: Option<&[serde_json::Value]>,
        applied: Option<(&Plan, Option<&apply::ApplyReport>, &BTreeSet<AppId>)>,
        error: Option<String>,
    ) {
        let apps = match (repo, live, applied, &error) {
            (Some(repo), Some(live), Some(applied), None) => {
                Some(self.status_apps(repo, live, applied))
            }
            _ => None,
        };
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
        st.last_sync = st.history.first().cloned();
        if error.is_some() {
            st.last_error = error;
            return;
        }
        let Some(apps) = apps else {
            return;
        };
        st.last_error = None;
        st.pending = None;
        if let (Some(repo), Some((plan, _, _))) = (repo, applied) {
            st.ownership = Some(OwnershipStatus::of(repo, plan));
        }
        st.apps = apps;
    }

    /// Every app's `/api/status` entry after a full look: each app with a spec, an invalid spec,
    /// a change held back or a deletion withheld, and each app the plan or the apply touched.
    fn status_apps(
        &self,
        repo: &Repo,
        live: &[serde_json::Value],
        applied: (&Plan, Option<&apply::ApplyReport>, &BTreeSet<AppId>),
    ) -> Vec<AppStatus> {
        let (plan, report, held) = applied;
        let mut ids: BTreeSet<AppId> = repo.specs.keys().cloned().collect();
        ids.extend(repo.invalid.iter().cloned());
        ids.extend(held.iter().cloned());
        ids.extend((self.state.rollouts.keys()).filter_map(|a| AppId::parse(a).ok()));
        ids.extend(plan.held.iter().map(|h| h.app.clone()));
        ids.extend(plan.changes().map(|c| c.app.clone()));
        ids.extend(
            report
                .iter()
                .flat_map(|r| r.apps.iter().map(|a| a.app.clone())),
        );
        let seen = Seen::new(repo, live, plan, report, held);
        // The deployments shown so far (few): kept for the apps apply stopped waiting for.
        let deploying: Vec<(String, Deploying)> = {
            let st = self.shared.status.read().unwrap_or_else(|e| e.into_inner());
            (st.apps.iter())
                .filter_map(|a| Some((a.id.clone(), a.deploying.clone()?)))
                .collect()
        };
        let was_deploying = |id: &AppId| {
            (deploying.iter())
                .find(|(a, _)| a == id.as_str())
                .map(|(_, d)| d.clone())
        };
        ids.into_iter()
            .map(|id| self.app_status(&id, &seen, &was_deploying))
            .collect()
    }

    /// Patch `/api/status` for the apps `ids` only (a cycle that looked at just those): their
    /// entries are recomputed as [`publish_status`](Self::publish_status) would, an app that
    /// would not be listed is taken out; the rest stays.
    fn publish_status_apps(
        &self,
        repo: &Repo,
        live: &[serde_json::Value],
        ids: &BTreeSet<AppId>,
        applied: (&Plan, Option<&apply::ApplyReport>, &BTreeSet<AppId>),
    ) {
        let (plan, report, held) = applied;
        let seen = Seen::new(repo, live, plan, report, held);
        let mut st = self
            .shared
            .status
            .write()
            .unwrap_or_else(|e| e.into_inner());
        st.ready = self.shared.ready.load(Ordering::Relaxed);
        st.history = self
            .state
            .history
            .iter()
            .rev()
            .take(STATUS_HISTORY)
            .cloned()
            .collect();
        for id in ids {
            let listed = repo.specs.contains_key(id)
                || repo.invalid.contains(id)
                || held.contains(id)
                || seen.planned.contains(id);
            let at = st.apps.binary_search_by(|a| a.id.as_str().cmp(id.as_str()));
            let was = at.ok().and_then(|i| st.apps[i].deploying.clone());
            let entry = || self.app_status(id, &seen, &|_: &AppId| was.clone());
            match (at, listed) {
                (Ok(i), true) => st.apps[i] = entry(),
                (Ok(i), false) => {
                    st.apps.remove(i);
                }
                (Err(i), true) => st.apps.insert(i, entry()),
                (Err(_), false) => {}
            }
        }
    }

    /// One app's entry of `/api/status`; `was_deploying` (what was shown so far) keeps the
    /// deployment of an app apply stopped waiting for.
    fn app_status(
        &self,
        id: &AppId,
        seen: &Seen<'_>,
        was_deploying: &dyn Fn(&AppId) -> Option<Deploying>,
    ) -> AppStatus {
        let (repo, held) = (seen.repo, seen.held);
        let live_app = seen.live.get(id.as_str());
        let rollout = self.rollout_status.get(id.as_str()).cloned();
        let rolled_back = (self.state.apps.get(id.as_str()))
            .and_then(|a| a.rolled_back.as_ref())
            .map(crate::daemon::rollout::RolledBackStatus::of);
        let result = seen.results.get(id);
        let app_state = self.state.apps.get(id.as_str());
        let invalid = repo.invalid.contains(id).then(|| {
            baton_core::drift::first_error(repo, id)
                .unwrap_or_else(|| "its spec does not validate".into())
        });
        let withheld = seen.withheld.get(id).copied();
        let conflict = seen.conflicts.get(id).copied();
        let sync = if invalid.is_some() {
            "invalid"
        } else if conflict.is_some() {
            "conflict"
        } else if withheld.is_some() && !repo.specs.contains_key(id) {
            "held"
        } else if held.contains(id) {
            // Held back: waiting out the backoff of a failed apply, or not applied yet.
            if app_state.is_some_and(|a| a.last_error.is_some()) {
                "failed"
            } else {
                "outOfSync"
            }
        } else {
            match result {
                Some(AppOutcome::Converged) if !repo.specs.contains_key(id) => "deleted",
                Some(AppOutcome::Converged) => "synced",
                Some(o) if o.is_failure() => "failed",
                Some(_) => "outOfSync",
                None if seen.planned.contains(id) => "outOfSync",
                None => "synced",
            }
        };
        let deploying = match result {
            Some(AppOutcome::Unfinished { .. }) => was_deploying(id),
            _ => None,
        };
        let health = match (result, live_app) {
            (Some(AppOutcome::Converged), _) => "healthy",
            _ if deploying.is_some() => "progressing",
            (_, Some(app)) if app_is_up(app) => "healthy",
            (_, Some(_)) => "progressing",
            (_, None) => "missing",
        };
        let reason = invalid
            .clone()
            .or_else(|| withheld.map(str::to_string))
            .or_else(|| conflict.map(|owner| format!("owned by `{owner}`; left alone")));
        AppStatus {
            id: id.to_string(),
            sync,
            health,
            commit: app_state.and_then(|a| a.last_applied.clone()),
            last_error: app_state.and_then(|a| a.last_error.clone()).or(invalid),
            reason,
            deploying,
            rollout,
            rolled_back,
        }
    }
}

impl<Src: SpecSource, S: Scheduler + 'static> Reconciler<Src, S> {
    /// The last apply error of each of `ids` that has one (from the state).
    fn failures_of(&self, ids: &BTreeSet<AppId>) -> Vec<(AppId, String)> {
        ids.iter()
            .filter_map(|id| {
                let error = self.state.apps.get(id.as_str())?.last_error.clone()?;
                Some((id.clone(), error))
            })
            .collect()
    }
}

/// What a cycle saw, for the `/api/status` entries of its apps.
struct Seen<'a> {
    repo: &'a Repo,
    live: std::collections::HashMap<&'a str, &'a serde_json::Value>,
    /// Apps another owner manages, with that owner.
    conflicts: std::collections::HashMap<&'a AppId, &'a str>,
    /// Changes planned but not applied this cycle.
    held: &'a BTreeSet<AppId>,
    /// Deletions withheld, with the reason.
    withheld: std::collections::HashMap<&'a AppId, &'a str>,
    /// Apps the plan writes.
    planned: BTreeSet<&'a AppId>,
    results: std::collections::HashMap<&'a AppId, &'a AppOutcome>,
}

impl<'a> Seen<'a> {
    /// The lookups of one cycle's outcome: live apps by id, conflicts, apply results.
    fn new(
        repo: &'a Repo,
        live: &'a [serde_json::Value],
        plan: &'a Plan,
        report: Option<&'a apply::ApplyReport>,
        held: &'a BTreeSet<AppId>,
    ) -> Self {
        Seen {
            repo,
            live: live
                .iter()
                .filter_map(|a| a.get("id").and_then(|i| i.as_str()).map(|i| (i, a)))
                .collect(),
            conflicts: (plan.conflicts.iter())
                .map(|c| (&c.app, c.owner.as_str()))
                .collect(),
            held,
            withheld: (plan.held.iter())
                .map(|h| (&h.app, h.reason.as_str()))
                .collect(),
            planned: plan.changes().map(|c| &c.app).collect(),
            results: report
                .map(|r| r.apps.iter().map(|a| (&a.app, &a.outcome)).collect())
                .unwrap_or_default(),
        }
    }
}

pub use baton_core::cycle::retain_changes;
pub use baton_core::cycle::scope::{fast_sync_candidates, fast_sync_repo, FAST_SYNC_MAX};

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
        if !cycle::scope::fast_path_open(trigger, self.config.sync, &self.state, rev) {
            return None;
        }
        let changed = {
            let src = self.source.lock().unwrap_or_else(|e| e.into_inner());
            src.changed_last()
        };
        let now = now_ms();
        let apps = cycle::scope::fast_path_apps(changed, rev, repo, &self.state, now);
        if apps.is_empty() {
            return None;
        }
        let mut phases = Phases::new();
        let scheduler = self.scheduler.clone();
        let fetched = futures::future::join_all(apps.iter().map(|id| scheduler.get_app(id))).await;
        phases.mark("read");
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
        let plan = plan::plan(
            &sub,
            &live,
            &Policy {
                commit: rev.to_string(),
                allow_deletes: None,
            },
        );
        // A new revision in auto mode: everything in view applies, except deletions.
        let none = BTreeSet::new();
        let decision = cycle::decide(
            &cycle::Input {
                trigger,
                mode: self.config.sync,
                view: View::Apps,
                rev,
                state: &self.state,
                corrections: &none,
                lost_writes: &none,
                // Rollouts start from the full cycle that follows (its view has every app).
                rollouts: &self.rollout_view(repo, &live),
                now_ms: now,
                // A per-app sync's fast path writes only the apps it names, too.
                only: self.asked.as_ref().and_then(|t| t.apps.as_ref()),
            },
            plan,
        );
        let plan = decision.plan;
        phases.mark("plan");
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
        let (mut sending_at, mut written_at) = (None, None);
        let shared = self.shared.clone();
        let mut progress = |ev: apply::ProgressEvent| {
            shared.apply_progress(&ev);
            let at = match ev {
                apply::ProgressEvent::Started { .. } => &mut sending_at,
                apply::ProgressEvent::Deploying { .. } => &mut written_at,
                _ => return,
            };
            at.get_or_insert_with(std::time::Instant::now);
        };
        let report = apply::apply(&plan, self.scheduler.as_ref(), &options, &mut progress).await;
        if let (Some(sending), Some(written)) = (sending_at, written_at) {
            phases.mark_at("subscribe", sending);
            phases.mark_at("write", written);
        }
        phases.mark("await");
        tracing::debug!(phases = %phases, "fast path phases");
        self.drift.written(
            (report.apps.iter())
                .filter(|r| r.outcome == AppOutcome::Converged)
                .map(|r| r.app.clone()),
        );
        for r in &report.apps {
            match &r.outcome {
                AppOutcome::Converged => {
                    self.state.record_success(r.app.as_str(), rev);
                }
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

/// Follow Marathon's `/v2/events` and wake the loop when someone else changes an app Baton
/// owns: an `api_post_event` whose definition no longer matches its `baton.dev/digest` label.
/// Reconnects with backoff (1 s doubling to 60 s) until `shutdown`.
pub async fn watch_scheduler_events(
    marathon: baton_marathon::marathon::Marathon,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    crate::daemon::attribution_feed::follow_api_posts(
        &marathon,
        &shutdown,
        || {},
        |raw| {
            if let Ok(data) = serde_json::from_str::<serde_json::Value>(&raw.data) {
                let mut att = shared.attributions.lock();
                let att = att.as_mut().unwrap_or_else(|e| e.get_mut());
                att.ingest(&raw.event, &data);
            }
            if let Some((app, version)) = changed_outside(raw, &shared.own_writes) {
                tracing::debug!(app = %app, "scheduler event: owned app changed");
                shared.trigger(Trigger::SchedulerEvent { app, version });
            }
        },
    )
    .await;
}

/// The app id (and the version it announces) of an `api_post_event` for an owned app changed
/// outside Baton, so Baton's own writes do not wake the loop: not one of Baton's writes
/// (`own`, by app and version; the entry is used up), and not matching the digest Baton wrote.
/// The digest alone does not tell: the scheduler fills in fields (service ports) the written
/// definition left to it.
pub fn changed_outside(
    raw: &baton_core::app::sse::RawEvent,
    own: &OwnWrites,
) -> Option<(String, Option<String>)> {
    let doc: serde_json::Value = serde_json::from_str(&raw.data).ok()?;
    let kind = doc
        .get("eventType")
        .and_then(|v| v.as_str())
        .unwrap_or(&raw.event);
    if kind != "api_post_event" {
        return None;
    }
    let app = doc.get("appDefinition")?;
    baton_core::ownership::owner_of(app)?;
    let written = app
        .pointer("/labels")
        .and_then(|l| l.get(baton_core::ownership::DIGEST))
        .and_then(|d| d.as_str());
    let id = app.get("id").and_then(|i| i.as_str())?;
    let version = app.get("version").and_then(|v| v.as_str());
    if version.is_some_and(|v| own.take(id, v)) {
        return None;
    }
    if written == Some(baton_core::ownership::digest_of(app).as_str()) {
        return None;
    }
    Some((id.to_string(), version.map(str::to_string)))
}

#[cfg(test)]
mod cycle_tests;
#[cfg(test)]
mod fast_path_tests;
mod follower;
mod own_writes;
#[cfg(test)]
mod ownership_tests;
pub mod partial;
#[cfg(test)]
mod partial_tests;
#[cfg(test)]
mod rollout_tests;
mod rollouts;

pub use own_writes::OwnWrites;
use own_writes::Recording;
