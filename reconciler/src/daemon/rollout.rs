//! Rollouts under `baton serve` (issue 15; `docs/rollout.md`): the I/O around the core's pure
//! state machine ([`baton_core::rollout::machine`]).
//!
//! A cycle whose rule moves an update into `Decision.rollout_starts` persists
//! [`machine::start`](baton_core::rollout::machine::start) in `State.rollouts` ([`start`]); the
//! loop then runs [`Trigger::Rollout`](baton_core::cycle::Trigger::Rollout) ticks. A tick
//! ([`tick`]), per active rollout: reads the stable and the canary app (tasks embedded), one
//! sample of every `--haproxy-stats` source ([`sample`]: any failure is no sample, so nothing is
//! judged), calls `advance`; runs the check it asks for ([`run_check`]) and calls `advance`
//! again with the outcome; **saves the state before** applying the decision's writes (write
//! ahead: a crash between the two repeats nothing, the machine being level-triggered); applies
//! them with [`crate::apply`] (owned apps only, checked here again: [`guard_plan`];
//! `partialUpdate=false`; never `force`); records the outcome.
//!
//! The tick is preemptible by a push until it writes: it stops before its first write and runs
//! again after the push's cycle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::Value;

use crate::apply::{self, ApplyOptions, ApplyReport};
use crate::daemon::state::{self, StateError};
use baton_core::cycle::state::{RolledBack, State, SyncRecord};
use baton_core::plan::{Action as PlanAction, Plan};
use baton_core::rollout::{
    self, CheckOutcome, CheckRun, Decision, Input, OperatorCommand, Outcome, Phase, Reason,
    RolloutState, RolloutStatus, Sample,
};
use baton_core::spec::{AppId, Repo, Spec};
use baton_marathon::Scheduler;

/// How long one stats source or one HTTP check may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a stats CSV read (a few thousand servers fit in well under this).
pub const STATS_MAX_BYTES: usize = 4 * 1024 * 1024;
/// What is kept of a check command's output (its end).
pub const CHECK_OUTPUT_TAIL: usize = 2048;
/// Default of `--rollout-tick`.
pub const DEFAULT_TICK: Duration = Duration::from_secs(5);

/// One `--haproxy-stats` source: the URL without credentials (shown in logs and errors) and
/// the credentials its user info held (sent as basic auth, never shown).
#[derive(Clone)]
pub struct StatsSource {
    pub url: String,
    pub auth: Option<(String, SecretString)>,
}

impl std::fmt::Debug for StatsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsSource")
            .field("url", &self.url)
            .field("auth", &self.auth.as_ref().map(|_| "(redacted)"))
            .finish()
    }
}

impl StatsSource {
    /// An `http(s)` URL, its user info taken out ([`baton_core::userinfo`]). The error never
    /// repeats the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<StatsSource, String> {
        let (bare, auth) = match baton_core::userinfo::split_http_userinfo(url) {
            Some((bare, user, password)) => (bare, Some((user, password))),
            None => (url.to_string(), None),
        };
        let ok = reqwest::Url::parse(&bare)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
        if !ok {
            return Err("not an http(s) URL".into());
        }
        Ok(StatsSource { url: bare, auth })
    }
}

/// The pure functions a tick drives: the core's, or a test's scripted machine.
#[derive(Clone, Copy)]
pub struct Machine {
    pub start: fn(&Spec, &str, u64) -> RolloutState,
    pub advance: fn(&RolloutState, &Input<'_>) -> Decision,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            start: rollout::machine::start,
            advance: rollout::machine::advance,
        }
    }
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Machine")
    }
}

/// The rollout settings of `baton serve`.
#[derive(Debug, Clone)]
pub struct RolloutConfig {
    /// `--haproxy-stats`: every source is read on every tick; their rows are summed.
    pub stats: Vec<StatsSource>,
    /// `--allow-check-commands`: `command` checks (code from git) may run on this host.
    pub allow_check_commands: bool,
    /// `--rollout-tick`: the longest a rollout waits between two looks.
    pub tick: Duration,
    /// Where command checks run (the repo root of a directory source; else a temp dir).
    pub check_dir: Option<PathBuf>,
    pub machine: Machine,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        RolloutConfig {
            stats: Vec::new(),
            allow_check_commands: false,
            tick: DEFAULT_TICK,
            check_dir: None,
            machine: Machine::default(),
        }
    }
}

impl RolloutConfig {
    /// What the cycle rule's view needs of these settings.
    pub fn settings(&self) -> RolloutSettings {
        RolloutSettings {
            stats_sources: self.stats.len(),
            allow_check_commands: self.allow_check_commands,
        }
    }
}

pub use baton_core::rollout::view::{view, RolloutSettings};

/// Persist a new rollout for each app the cycle rule diverted (`Decision.rollout_starts`):
/// returns the apps started. An app whose spec is gone, or that already rolls out, is skipped.
pub fn start(
    state: &mut State,
    starts: &[AppId],
    repo: &Repo,
    rev: &str,
    now_ms: u64,
    machine: &Machine,
) -> Vec<AppId> {
    let mut started = Vec::new();
    for id in starts {
        let Some(spec) = repo.specs.get(id) else {
            continue;
        };
        if state.rollouts.contains_key(id.as_str()) {
            continue;
        }
        let rs = (machine.start)(spec, rev, now_ms);
        state.rollouts.insert(id.to_string(), rs);
        started.push(id.clone());
    }
    started
}

/// The updates of `plan` whose spec asks for a rollout: `baton apply` and `baton dev` write them
/// in place (rollouts need the daemon's ticks, stats and state).
pub fn updated_in_place(repo: &Repo, plan: &Plan) -> Vec<AppId> {
    plan.changes()
        .filter(|c| c.action == PlanAction::Update)
        .filter(|c| (repo.specs.get(&c.app)).is_some_and(|s| s.baton.rollout.is_some()))
        .map(|c| c.app.clone())
        .collect()
}

/// One WARN line for [`updated_in_place`] (none when there are none).
pub fn warn_updated_in_place(repo: &Repo, plan: &Plan) {
    let apps = updated_in_place(repo, plan);
    if !apps.is_empty() {
        let apps: Vec<&str> = apps.iter().map(AppId::as_str).collect();
        tracing::warn!(
            apps = %apps.join(", "),
            "rollouts run under `baton serve`: these apps were updated in place"
        );
    }
}

/// Operator commands (`POST /api/rollouts/{app}/promote|abort`) waiting for the next tick.
#[derive(Debug, Default)]
pub struct Operators {
    queued: Mutex<BTreeMap<String, OperatorCommand>>,
}

impl Operators {
    /// Queue `cmd` for `app` (a later command replaces one not taken yet).
    pub fn queue(&self, app: &str, cmd: OperatorCommand) {
        self.lock().insert(app.to_string(), cmd);
    }

    /// The command waiting for `app`, taken.
    pub fn take(&self, app: &str) -> Option<OperatorCommand> {
        self.lock().remove(app)
    }

    /// Give back a command a stopped tick took but did not act on.
    fn put_back(&self, app: &str, cmd: Option<OperatorCommand>) {
        if let Some(cmd) = cmd {
            self.lock().entry(app.to_string()).or_insert(cmd);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, OperatorCommand>> {
        self.queued.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The word of a phase, as `/api/status` shows it (and as the API's 409 judges it).
pub fn phase_word(p: &Phase) -> &'static str {
    match p {
        Phase::Launch => "launch",
        Phase::Check => "check",
        Phase::Step { .. } => "step",
        Phase::Switch => "switch",
        Phase::UpdateStable => "updateStable",
        Phase::Retire => "retire",
        Phase::RollBack { .. } => "rollBack",
    }
}

/// Phases in which a rollout is already finishing: promote and abort answer 409.
pub fn finishing(phase: &str) -> bool {
    matches!(phase, "updateStable" | "retire" | "rollBack")
}

/// A rolled-back rollout in `/api/status` (`apps[].rolledBack`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledBackStatus {
    pub commit: String,
    /// The traffic step it was rolled back in, when the reason names one.
    pub step: Option<usize>,
    pub reason: Reason,
    /// The reason in words, with the numbers.
    pub summary: String,
    pub at_ms: u64,
}

impl RolledBackStatus {
    pub fn of(rb: &RolledBack) -> Self {
        RolledBackStatus {
            commit: rb.commit.clone(),
            step: reason_step(&rb.reason),
            reason: rb.reason.clone(),
            summary: reason_text(&rb.reason),
            at_ms: rb.at_ms,
        }
    }
}

fn reason_step(r: &Reason) -> Option<usize> {
    match r {
        Reason::Analysis { step, .. } => Some(*step),
        _ => None,
    }
}

/// A reason in words, for logs, notifications and the status page.
pub fn reason_text(r: &Reason) -> String {
    rollout::machine::describe(r)
}

/// One rollout that ended in a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub app: AppId,
    /// The rollout as it was when it ended.
    pub rollout: RolloutState,
    pub outcome: Outcome,
}

/// What a tick did.
#[derive(Debug, Default)]
pub struct TickReport {
    /// The status of every rollout looked at (ended ones too, as they ended).
    pub statuses: BTreeMap<String, RolloutStatus>,
    /// When each rollout wants to be looked at again (Unix ms).
    pub wake: BTreeMap<String, u64>,
    pub ended: Vec<Ended>,
    /// Apply reports of the writes made.
    pub applied: Vec<ApplyReport>,
    /// A push arrived before the tick wrote anything: it stopped; run it again later.
    pub preempted: bool,
    /// The scheduler fell silent during a write (the state was saved before it).
    pub lost: Option<String>,
}

/// What a tick works with.
pub struct TickEnv<'a, S> {
    pub scheduler: &'a S,
    pub state: &'a mut State,
    pub state_dir: &'a Path,
    /// The last good snapshot and its revision.
    pub repo: &'a Repo,
    pub rev: &'a str,
    pub config: &'a RolloutConfig,
    pub apply: ApplyOptions,
    pub operators: &'a Operators,
    pub http: &'a reqwest::Client,
    /// A push asks this tick to stop (asked only before its first write).
    pub preempted: &'a (dyn Fn() -> bool + Send + Sync),
    pub now_ms: &'a (dyn Fn() -> u64 + Send + Sync),
    /// HA: the rollout state is also written ahead to ZooKeeper (docs/ha.md).
    pub handoff: Option<&'a crate::ha::handoff::Handoff>,
}

/// Save the state (write ahead): to the state dir, and under HA to ZooKeeper.
async fn save(
    dir: &Path,
    state: &State,
    handoff: Option<&crate::ha::handoff::Handoff>,
) -> Result<(), TickError> {
    state::save(dir, state)?;
    if let Some(h) = handoff {
        h.save(state).await?;
    }
    Ok(())
}

/// Why a tick failed.
#[derive(Debug, thiserror::Error)]
pub enum TickError {
    #[error(transparent)]
    State(#[from] StateError),
    /// HA: the rollout state could not be handed to ZooKeeper (nothing was written after it).
    #[error(transparent)]
    Handoff(#[from] crate::ha::handoff::HandoffError),
}

/// One look at every active rollout (see the module documentation).
pub async fn tick<S: Scheduler>(env: TickEnv<'_, S>) -> Result<TickReport, TickError> {
    let mut report = TickReport::default();
    if env.state.rollouts.is_empty() {
        return Ok(report);
    }
    let owner = env.repo.config.owner.clone();
    let sample = if (env.preempted)() {
        report.preempted = true;
        return Ok(report);
    } else {
        sample(env.http, &env.config.stats).await
    };
    let mut wrote = false;
    let active: Vec<(String, RolloutState)> = (env.state.rollouts.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (app, rs) in active {
        if !wrote && (env.preempted)() {
            report.preempted = true;
            return Ok(report);
        }
        let (Ok(id), Ok(canary_id)) = (AppId::parse(&app), AppId::parse(&rs.canary)) else {
            tracing::warn!(app = %app, "a persisted rollout names an invalid app id: dropped");
            env.state.rollouts.remove(&app);
            save(env.state_dir, env.state, env.handoff).await?;
            continue;
        };
        let retry_at = (env.now_ms)() + env.config.tick.as_millis() as u64;
        // Bounded like apply's calls: a silent scheduler ends the tick, not the loop.
        let read = tokio::time::timeout(env.apply.scheduler_silence, async {
            futures::join!(
                env.scheduler.get_app(&id),
                env.scheduler.get_app(&canary_id)
            )
        })
        .await;
        let (stable, canary) = match read {
            Ok((Ok(s), Ok(c))) => (s, c),
            Ok((Err(e), _) | (_, Err(e))) => {
                // Level-triggered: the next tick looks again; nothing was decided on a guess.
                tracing::warn!(app = %app, error = %e, "rollout: cannot read the apps; looking again later");
                report.wake.insert(app, retry_at);
                continue;
            }
            Err(_) => {
                report.lost = Some(format!(
                    "the scheduler has not answered for {} (reading the apps of the rollout of {app})",
                    humantime::format_duration(env.apply.scheduler_silence)
                ));
                return Ok(report);
            }
        };
        let spec = env.repo.specs.get(&id).map(|s| &**s);
        let operator = env.operators.take(&app);
        let input = Input {
            spec,
            spec_invalid: env.repo.invalid.contains(&id),
            owner: &owner,
            rev: env.rev,
            stable: stable.as_ref(),
            canary: canary.as_ref(),
            sample: sample.as_ref(),
            check: None,
            operator,
            now_ms: (env.now_ms)(),
        };
        let mut d = (env.config.machine.advance)(&rs, &input);
        if let Some(run) = d.run_check.clone() {
            if !wrote && (env.preempted)() {
                env.operators.put_back(&app, operator);
                report.preempted = true;
                return Ok(report);
            }
            let outcome = run_check(&run, env.config, env.http).await;
            if let CheckOutcome::Failed { output } = &outcome {
                tracing::info!(app = %app, output = %output, "rollout: the isolated check failed");
            }
            let base = d.next.clone().unwrap_or_else(|| rs.clone());
            let again = Input {
                check: Some(&outcome),
                operator: None,
                now_ms: (env.now_ms)(),
                ..input
            };
            d = (env.config.machine.advance)(&base, &again);
        }
        let live = (stable.as_ref(), canary.as_ref());
        if let Err(why) = guard_plan(&d.plan, &id, &canary_id, &owner, live) {
            // A plan outside the rollout's two apps is a bug: nothing of it is written and the
            // rollout stays where it was.
            tracing::error!(app = %app, reason = %why, "rollout: refused to write a plan outside its apps");
            report.wake.insert(app.clone(), retry_at);
            report.statuses.insert(app, d.status);
            continue;
        }
        if !d.plan.is_empty() && !wrote && (env.preempted)() {
            env.operators.put_back(&app, operator);
            report.preempted = true;
            return Ok(report);
        }
        // Write ahead: the state that follows these writes is on disk (and, under HA,
        // in ZooKeeper) before any is sent.
        let changed = d.next.as_ref() != Some(&rs) || d.outcome.is_some();
        match &d.next {
            Some(next) => {
                env.state.rollouts.insert(app.clone(), next.clone());
            }
            None => {
                env.state.rollouts.remove(&app);
            }
        }
        let now = (env.now_ms)();
        if let Some(outcome) = &d.outcome {
            record_outcome(env.state, &id, &rs, outcome, writes(&d.plan), now);
            report.ended.push(Ended {
                app: id.clone(),
                rollout: rs.clone(),
                outcome: outcome.clone(),
            });
        }
        if changed || !d.plan.is_empty() {
            save(env.state_dir, env.state, env.handoff).await?;
        }
        report.wake.insert(app.clone(), d.wake_at_ms);
        report.statuses.insert(app.clone(), d.status.clone());
        if d.plan.is_empty() {
            continue;
        }
        wrote = true;
        tracing::info!(
            app = %app,
            phase = phase_word(d.next.as_ref().map_or(&rs.phase, |n| &n.phase)),
            create = d.plan.summary.create,
            update = d.plan.summary.update,
            delete = d.plan.summary.delete,
            "rollout: writing"
        );
        let mut progress = |ev: apply::ProgressEvent| rollout_progress(&ev);
        let applied = apply::apply(&d.plan, env.scheduler, &env.apply, &mut progress).await;
        let lost = applied.lost.clone();
        report.applied.push(applied);
        if let Some(lost) = lost {
            // Nothing more is asked of a silent scheduler; the state says where to resume.
            report.lost = Some(lost);
            return Ok(report);
        }
    }
    Ok(report)
}

/// Apply's progress during a rollout's writes: only what an operator must hear of.
fn rollout_progress(ev: &apply::ProgressEvent) {
    use apply::ProgressEvent as P;
    match ev {
        P::Locked { app, deployments } => {
            tracing::warn!(app = %app, deployments = %deployments.join(", "), "rollout: the app is locked by deployments Baton did not start: waiting for them");
        }
        P::RollingBack { app, deployment } => {
            tracing::warn!(app = %app, deployment = %deployment, "rollout: no progress before the deadline: rolling the deployment back");
        }
        P::Finished { result } if result.outcome.is_failure() => {
            tracing::warn!(app = %result.app, outcome = result.outcome.word(), "rollout: a write did not converge; the next tick looks again");
        }
        _ => {}
    }
}

/// Writes a plan makes (for the history entry).
fn writes(plan: &Plan) -> usize {
    plan.summary.create + plan.summary.update + plan.summary.delete
}

/// Note how a rollout ended in the state: a success is the commit applied; a rollback (other
/// than a newer commit superseding it) holds that definition until it changes or is promoted;
/// both are a history entry.
fn record_outcome(
    state: &mut State,
    app: &AppId,
    rs: &RolloutState,
    outcome: &Outcome,
    changes: usize,
    now_ms: u64,
) {
    let started = rs.timeline.first().map_or(rs.entered_ms, |t| t.at_ms);
    let (outcome_word, error) = match outcome {
        Outcome::Completed => {
            state.record_success(app.as_str(), &rs.commit);
            if let Some(a) = state.apps.get_mut(app.as_str()) {
                a.rolled_back = None;
            }
            (baton_core::cycle::state::Outcome::Synced, None)
        }
        Outcome::RolledBack { reason } => {
            if *reason != Reason::Superseded {
                let entry = state.apps.entry(app.to_string()).or_default();
                entry.rolled_back = Some(RolledBack {
                    commit: rs.commit.clone(),
                    digest: rs.digest.clone(),
                    reason: reason.clone(),
                    at_ms: now_ms,
                });
            }
            (
                baton_core::cycle::state::Outcome::Failed,
                Some(format!(
                    "rollout of {app} rolled back: {}",
                    reason_text(reason)
                )),
            )
        }
    };
    state.push_history(SyncRecord {
        started_ms: started,
        finished_ms: now_ms,
        trigger: "rollout".into(),
        commit: Some(rs.commit.clone()),
        outcome: outcome_word,
        changes,
        held: 0,
        invalid: 0,
        error,
        author: None,
        message: None,
        requests: None,
    });
}

/// Every change of `plan` must be a rollout's own: the canary (any write; when it exists, it
/// must carry this owner and `baton.dev/rollout-of` = the stable, so nobody else's app is
/// replaced or deleted; a body must name the stable too), or an update of the stable while it
/// is not another owner's. Never a delete of the stable. `live`: the stable and the canary as
/// read this tick.
pub fn guard_plan(
    plan: &Plan,
    stable: &AppId,
    canary: &AppId,
    owner: &str,
    live: (Option<&Value>, Option<&Value>),
) -> Result<(), String> {
    let (stable_live, canary_live) = live;
    for c in plan.changes() {
        if c.app == *canary {
            if let Some(live) = canary_live {
                let labels = live.pointer("/labels");
                let of = labels
                    .and_then(|l| l.get(rollout::ROLLOUT_OF))
                    .and_then(Value::as_str);
                let by = baton_core::ownership::owner_of(live);
                if of != Some(stable.as_str()) || by != Some(owner) {
                    return Err(format!(
                        "{canary} exists but is not this Baton's canary of {stable}"
                    ));
                }
            }
            if let Some(body) = &c.body {
                let of = body
                    .pointer("/labels")
                    .and_then(|l| l.get(rollout::ROLLOUT_OF))
                    .and_then(Value::as_str);
                if of != Some(stable.as_str()) {
                    return Err(format!("the body of {canary} does not name {stable}"));
                }
            }
        } else if c.app == *stable {
            if c.action != PlanAction::Update {
                return Err(format!("a {:?} of the stable app {stable}", c.action));
            }
            let by = stable_live.and_then(baton_core::ownership::owner_of);
            if by.is_some_and(|by| by != owner) {
                return Err(format!("{stable} is owned by another Baton"));
            }
        } else {
            return Err(format!("{} is neither {stable} nor {canary}", c.app));
        }
    }
    if !plan.held.is_empty() {
        return Err("a rollout's plan holds deletions".into());
    }
    Ok(())
}

// --- HAProxy stats -----------------------------------------------------------------------------

/// Why a stats source gave nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsError {
    #[error("{url}: {reason}")]
    Fetch { url: String, reason: String },
    #[error("{url}: the answer is over {max} bytes", max = STATS_MAX_BYTES)]
    TooLarge { url: String },
    #[error("{url}: {reason}")]
    Parse { url: String, reason: String },
}

/// The HTTP client of stats fetches and HTTP checks: bounded in time, no redirects (basic auth
/// must not follow one elsewhere), no proxy from the environment.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap_or_default()
}

/// The body of one source, up to [`STATS_MAX_BYTES`].
pub async fn fetch(client: &reqwest::Client, source: &StatsSource) -> Result<Vec<u8>, StatsError> {
    let url = source.url.clone();
    let fail = |reason: String| StatsError::Fetch {
        url: url.clone(),
        reason,
    };
    let mut req = client.get(&source.url);
    if let Some((user, password)) = &source.auth {
        req = req.basic_auth(user, Some(password.expose_secret()));
    }
    // `without_url`: the error names our redacted URL, never reqwest's copy.
    let mut resp = (req.send().await).map_err(|e| fail(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status().as_u16())));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > STATS_MAX_BYTES as u64)
    {
        return Err(StatsError::TooLarge { url });
    }
    let mut body = Vec::new();
    while let Some(chunk) = (resp.chunk().await).map_err(|e| fail(e.without_url().to_string()))? {
        if body.len() + chunk.len() > STATS_MAX_BYTES {
            return Err(StatsError::TooLarge { url });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// One sample of every source, or `None` when any failed (nothing is judged on part of the
/// traffic). No source: an empty sample.
pub async fn sample(client: &reqwest::Client, sources: &[StatsSource]) -> Option<Sample> {
    let fetched = futures::future::join_all(sources.iter().map(|s| fetch(client, s))).await;
    let mut rows = Vec::new();
    for (i, (source, body)) in sources.iter().zip(fetched).enumerate() {
        let parsed = body.and_then(|b| {
            rollout::haproxy::parse_csv(i, &b).map_err(|e| StatsError::Parse {
                url: source.url.clone(),
                reason: e.to_string(),
            })
        });
        match parsed {
            Ok(r) => rows.extend(r),
            Err(e) => {
                tracing::warn!(error = %e, "rollout: a stats source failed: nothing is judged this tick");
                return None;
            }
        }
    }
    Some(Sample { rows })
}

// --- checks ------------------------------------------------------------------------------------

/// Run the check a decision asks for. Never fails as such: what went wrong is the outcome.
pub async fn run_check(
    run: &CheckRun,
    config: &RolloutConfig,
    http: &reqwest::Client,
) -> CheckOutcome {
    match &run.check {
        rollout::Check::Http { path, expect } => http_check(run, path, *expect, http).await,
        rollout::Check::Command { cmd, timeout } => {
            if !config.allow_check_commands {
                // The rule holds such apps; a decision asking anyway is refused here too.
                return CheckOutcome::Failed {
                    output: "command checks need --allow-check-commands".into(),
                };
            }
            command_check(run, cmd, *timeout, config.check_dir.as_deref()).await
        }
    }
}

/// `http://host:port` of a check's task (IPv6 hosts bracketed); `None` without a port.
fn base_url(run: &CheckRun) -> Option<String> {
    let port = run.ports.first()?;
    let host = if run.host.contains(':') {
        format!("[{}]", run.host)
    } else {
        run.host.clone()
    };
    Some(format!("http://{host}:{port}"))
}

async fn http_check(
    run: &CheckRun,
    path: &str,
    expect: u16,
    http: &reqwest::Client,
) -> CheckOutcome {
    let Some(base) = base_url(run) else {
        return CheckOutcome::Failed {
            output: "the canary's task has no port".into(),
        };
    };
    let sep = if path.starts_with('/') { "" } else { "/" };
    let url = format!("{base}{sep}{path}");
    match http.get(&url).send().await {
        Ok(r) if r.status().as_u16() == expect => CheckOutcome::Passed,
        Ok(r) => CheckOutcome::Failed {
            output: format!(
                "GET {url} answered {}, expected {expect}",
                r.status().as_u16()
            ),
        },
        Err(e) => CheckOutcome::Failed {
            output: format!("GET {url}: {}", e.without_url()),
        },
    }
}

/// The end of a byte stream, at most [`CHECK_OUTPUT_TAIL`] bytes kept while reading.
async fn tail_of(mut r: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > CHECK_OUTPUT_TAIL {
                    kept.drain(..kept.len() - CHECK_OUTPUT_TAIL);
                }
            }
        }
    }
}

/// `sh -c cmd` in its own process group with only `PATH` and `BATON_CHECK_*` in its env (no
/// secret of Baton's), killed (the whole group) at `timeout`; passes on exit 0.
async fn command_check(
    run: &CheckRun,
    cmd: &str,
    timeout: Duration,
    dir: Option<&Path>,
) -> CheckOutcome {
    let temp = match dir {
        Some(_) => None,
        None => match tempfile::tempdir() {
            Ok(t) => Some(t),
            Err(e) => {
                return CheckOutcome::Failed {
                    output: format!("cannot make a directory for the check: {e}"),
                }
            }
        },
    };
    let cwd = dir.or(temp.as_ref().map(|t| t.path()));
    let base = base_url(run).unwrap_or_default();
    let ports: Vec<String> = run.ports.iter().map(u16::to_string).collect();
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg(cmd)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("BATON_CHECK_HOST", &run.host)
        .env(
            "BATON_CHECK_PORT",
            run.ports.first().map(u16::to_string).unwrap_or_default(),
        )
        .env("BATON_CHECK_PORTS", ports.join(","))
        .env("BATON_CHECK_URL", &base)
        .env("BATON_CHECK_APP", &run.app)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CheckOutcome::Failed {
                output: format!("cannot start sh: {e}"),
            }
        }
    };
    let pgid = child.id().and_then(|p| i32::try_from(p).ok());
    let out = child.stdout.take().map(|o| tokio::spawn(tail_of(o)));
    let err = child.stderr.take().map(|e| tokio::spawn(tail_of(e)));
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // The whole group goes, also what the command left running in the background.
    let kill_group = || {
        if let Some(pgid) = pgid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    };
    kill_group();
    let status = match waited {
        Ok(Ok(s)) => Some(s),
        Ok(Err(_)) => None,
        Err(_) => {
            let _ = child.wait().await;
            None
        }
    };
    let mut output = Vec::new();
    for h in [out, err].into_iter().flatten() {
        // Bounded: a descendant that escaped the group could hold a pipe open.
        if let Ok(Ok(t)) = tokio::time::timeout(Duration::from_secs(1), h).await {
            output.extend(t);
        }
    }
    if output.len() > CHECK_OUTPUT_TAIL {
        output.drain(..output.len() - CHECK_OUTPUT_TAIL);
    }
    let text = String::from_utf8_lossy(&output).trim().to_string();
    match (waited.is_err(), status) {
        (false, Some(s)) if s.success() => CheckOutcome::Passed,
        (true, _) => CheckOutcome::Failed {
            output: format!(
                "timed out after {}; {text}",
                humantime::format_duration(timeout)
            ),
        },
        (false, Some(s)) => CheckOutcome::Failed {
            output: format!(
                "exit {}; {text}",
                s.code().map_or("signal".into(), |c| c.to_string())
            ),
        },
        (false, None) => CheckOutcome::Failed {
            output: format!("the check could not be waited for; {text}"),
        },
    }
}

/// When the loop looks at the rollouts next: the earliest wake, at least `min(tick, 1 s)` and
/// at most `tick` from now (the tick bounds how stale a window's numbers get).
pub fn next_tick(wake: &BTreeMap<String, u64>, tick: Duration, now_ms: u64) -> Duration {
    let floor = tick.min(Duration::from_secs(1));
    let at = wake.values().min().copied();
    let wait = at.map_or(tick, |at| Duration::from_millis(at.saturating_sub(now_ms)));
    wait.clamp(floor, tick)
}

#[cfg(test)]
mod tests;
