//! Apply: executes a [`Plan`] on a [`Scheduler`]. The only code that changes the scheduler.
//!
//! Wave by wave: the writes of a wave run in parallel (at most `parallelism` at once), then apply
//! waits for their deployments (events, with polling of `GET /v2/deployments` as the fallback
//! and safety net) and for their tasks to be up. An app that makes no progress before its
//! deadline has its deployment rolled back (`DELETE /v2/deployments/{id}`, never `force`) and is
//! marked failed with the scheduler's diagnosis; apps that depend on it are skipped, the others
//! carry on. A 409 (app locked by a deployment) is waited on for `lock_wait`, then reported with
//! the deployment ids. An empty plan makes no API call at all.
//!
//! Cancellation ([`ApplyOptions::cancel`]): writes already sent finish, no new write starts,
//! waiting stops, and the report says which apps were not started or not awaited.
//!
//! A scheduler that stops answering (no reply to any request and no event for
//! [`ApplyOptions::scheduler_silence`]) ends the run the same way, with
//! [`ApplyReport::lost`] saying so: apply never waits on a silent scheduler until every
//! deadline has passed, and never tries to roll back through one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::join_all;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use baton_core::app::is_up as app_is_up;
use baton_core::plan::{Action, Change, Plan};
use baton_core::spec::AppId;
use baton_marathon::{EventStream, Scheduler, SchedulerError, SchedulerEvent, Written};

/// Knobs of one apply run.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Writes in flight at once within a wave.
    pub parallelism: usize,
    /// How long a write refused with 409 (app locked) waits for the locking deployments.
    pub lock_wait: Duration,
    /// How often running deployments are polled (slower while the event stream is up).
    pub poll_interval: Duration,
    /// Delete locked apps with `force=true` (only when the user asked with `--force-delete`).
    pub force_delete: bool,
    /// Cancelled: finish the writes in flight, start no new one, return a report.
    pub cancel: CancellationToken,
    /// How long the scheduler may stay silent (no answer to any request, no event) while apply
    /// writes or waits: past it apply stops as if cancelled and reports it lost.
    pub scheduler_silence: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            parallelism: 8,
            lock_wait: Duration::from_secs(120),
            poll_interval: Duration::from_secs(1),
            force_delete: false,
            cancel: CancellationToken::new(),
            scheduler_silence: Duration::from_secs(60),
        }
    }
}

/// How one app ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Outcome {
    /// Written, deployed, tasks up (or deleted).
    Converged,
    /// Refused, rolled back after its deadline, or otherwise not done; `reason` says why.
    Failed { reason: String },
    /// Not attempted because an app it depends on failed or was skipped.
    Skipped { because: AppId },
    /// A deletion the plan withheld (budget, `prune: false`, incomplete repo).
    Held { reason: String },
    /// Not attempted: apply was cancelled first.
    NotStarted,
    /// Written, but apply was cancelled before its deployment finished.
    Unfinished { deployment: String },
}

impl Outcome {
    /// Failed, or skipped because of a failure: apply did not converge it.
    pub fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed { .. } | Outcome::Skipped { .. })
    }

    /// A short word for progress lines.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::Failed { .. } => "failed",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Held { .. } => "held",
            Outcome::NotStarted => "not started",
            Outcome::Unfinished { .. } => "unfinished",
        }
    }
}

/// The result for one app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppResult {
    pub app: AppId,
    pub action: Action,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The deployment the write started, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// What an apply run did, app by app (in plan order, held deletions last).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    pub apps: Vec<AppResult>,
    /// Apply was cancelled before it finished.
    pub cancelled: bool,
    /// The scheduler stopped answering: why apply gave up (apps written but not awaited are
    /// `unfinished`, the rest `not_started`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
}

impl ApplyReport {
    /// Two applies of one cycle as one report (either may be absent): the apps of both, in
    /// order, cancelled if either was.
    pub fn merge(first: Option<ApplyReport>, then: Option<ApplyReport>) -> Option<ApplyReport> {
        match (first, then) {
            (Some(mut a), Some(b)) => {
                a.apps.extend(b.apps);
                a.cancelled |= b.cancelled;
                a.lost = a.lost.or(b.lost);
                Some(a)
            }
            (a, b) => a.or(b),
        }
    }

    /// Apps that failed or were skipped.
    pub fn failures(&self) -> impl Iterator<Item = &AppResult> {
        self.apps.iter().filter(|a| a.outcome.is_failure())
    }

    /// True when every planned change converged (held deletions do not count against it).
    pub fn converged(&self) -> bool {
        !self.cancelled
            && self.lost.is_none()
            && self
                .apps
                .iter()
                .all(|a| matches!(a.outcome, Outcome::Converged | Outcome::Held { .. }))
    }
}

/// Progress, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// The write of an app is being sent.
    Started { app: AppId, action: Action },
    /// The write was accepted; its deployment runs.
    Deploying {
        app: AppId,
        action: Action,
        deployment: String,
    },
    /// The app is locked by these deployments; apply waits for them.
    Locked {
        app: AppId,
        deployments: Vec<String>,
    },
    /// The deadline passed; the deployment is being rolled back.
    RollingBack { app: AppId, deployment: String },
    /// The app is done, one way or another.
    Finished { result: AppResult },
}

type Progress<'a> = Mutex<&'a mut (dyn FnMut(ProgressEvent) + Send)>;

/// How long the scheduler has been silent in this run, against the bound: every scheduler call
/// apply makes goes through [`Silence::ask`]. Silence is counted from the first request that got
/// no answer since the last answer (a reply to any request, an event), so time spent between
/// polls never counts.
struct Silence {
    bound: Duration,
    /// When the scheduler was first asked without answering since its last answer.
    silent_since: Mutex<Option<Instant>>,
    /// Set once the bound passed: why apply gives up.
    lost: Mutex<Option<String>>,
}

impl Silence {
    fn new(bound: Duration) -> Self {
        Silence {
            bound,
            silent_since: Mutex::new(None),
            lost: Mutex::new(None),
        }
    }

    /// The scheduler answered.
    fn heard(&self) {
        *self.silent_since.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// When a request sent now gives up, unless it is answered.
    fn deadline(&self) -> Instant {
        let mut since = self.silent_since.lock().unwrap_or_else(|e| e.into_inner());
        *since.get_or_insert_with(Instant::now) + self.bound
    }

    fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn give_up(&self, what: &str) {
        let mut lost = self.lost.lock().unwrap_or_else(|e| e.into_inner());
        lost.get_or_insert_with(|| {
            format!(
                "the scheduler has not answered for {} ({what}); stopped waiting",
                humantime::format_duration(self.bound)
            )
        });
    }

    /// `call`, unless the scheduler stays silent past the bound (then `None`, and the run is
    /// lost). A refused connection, a timeout or a 5xx is silence too (a proxy answers 502 for
    /// a scheduler that is gone): the call's own retries may go on until the bound.
    async fn ask<T>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, SchedulerError>>,
    ) -> Option<Result<T, SchedulerError>> {
        if self.lost().is_some() {
            return None;
        }
        let deadline = self.deadline();
        match tokio::time::timeout_at(deadline, call).await {
            Ok(r) => {
                let silent = r.as_ref().err().is_some_and(is_silence);
                if !silent {
                    self.heard();
                } else if Instant::now() >= deadline {
                    self.give_up(what);
                    return None;
                }
                Some(r)
            }
            Err(_) => {
                self.give_up(what);
                None
            }
        }
    }
}

fn emit(progress: &Progress<'_>, ev: ProgressEvent) {
    let mut f = progress.lock().unwrap_or_else(|e| e.into_inner());
    (*f)(ev);
}

/// Whether an error means the scheduler did not answer (rather than answered "no").
fn is_silence(e: &SchedulerError) -> bool {
    matches!(
        e,
        SchedulerError::Unreachable { .. } | SchedulerError::Status { status: 500.., .. }
    )
}

/// What happened to one write.
enum WriteResult {
    Written(Written),
    /// A delete found the app already gone.
    Gone,
    Failed(String),
    NotStarted,
    /// The scheduler fell silent before it answered: the write may or may not have landed.
    Unanswered,
}

/// A written change whose deployment (or tasks) apply waits for.
struct Pending<'p> {
    change: &'p Change,
    /// `None` once the deployment finished; then the tasks must be up.
    deployment: Option<String>,
    written: String,
    deadline: Instant,
}

/// Execute `plan` on `scheduler`. Never fails as a whole: every app gets an [`Outcome`]; an
/// unreachable scheduler shows up as failed writes.
pub async fn apply<S: Scheduler>(
    plan: &Plan,
    scheduler: &S,
    options: &ApplyOptions,
    progress: &mut (dyn FnMut(ProgressEvent) + Send),
) -> ApplyReport {
    let progress: Progress<'_> = Mutex::new(progress);
    let mut results: Vec<AppResult> = Vec::new();
    let finish = |results: &mut Vec<AppResult>, r: AppResult| {
        emit(&progress, ProgressEvent::Finished { result: r.clone() });
        results.push(r);
    };
    // Apps that did not converge: their dependents are skipped.
    let mut broken: BTreeSet<AppId> = BTreeSet::new();
    let mut cancelled = false;
    let silence = Silence::new(options.scheduler_silence);

    // Subscribe before the first write so no deployment event can be missed; polling covers a
    // stream that cannot be opened or ends.
    let mut events = if plan.is_empty() {
        None
    } else {
        match tokio::time::timeout_at(silence.deadline(), scheduler.events()).await {
            Ok(Ok(s)) => {
                silence.heard();
                Some(s)
            }
            Ok(Err(e)) => {
                if !is_silence(&e) {
                    silence.heard();
                }
                tracing::debug!(error = %e, "no event stream; polling deployments");
                None
            }
            Err(_) => {
                tracing::debug!("the event stream did not open in time; polling deployments");
                None
            }
        }
    };

    for wave in &plan.waves {
        let mut todo: Vec<&Change> = Vec::new();
        for change in &wave.changes {
            let result = |outcome| AppResult {
                app: change.app.clone(),
                action: change.action,
                outcome,
                deployment: None,
            };
            if options.cancel.is_cancelled() {
                cancelled = true;
                finish(&mut results, result(Outcome::NotStarted));
            } else if silence.lost().is_some() {
                finish(&mut results, result(Outcome::NotStarted));
            } else if let Some(dep) = change.depends_on.iter().find(|d| broken.contains(*d)) {
                broken.insert(change.app.clone());
                finish(
                    &mut results,
                    result(Outcome::Skipped {
                        because: dep.clone(),
                    }),
                );
            } else {
                todo.push(change);
            }
        }

        let semaphore = Semaphore::new(options.parallelism.max(1));
        let written = join_all(todo.iter().map(|change| {
            let semaphore = &semaphore;
            let progress = &progress;
            let silence = &silence;
            async move {
                let Ok(_permit) = semaphore.acquire().await else {
                    return (*change, WriteResult::NotStarted);
                };
                if options.cancel.is_cancelled() || silence.lost().is_some() {
                    return (*change, WriteResult::NotStarted);
                }
                (
                    *change,
                    write(change, scheduler, options, progress, silence).await,
                )
            }
        }))
        .await;

        let mut pending: Vec<Pending<'_>> = Vec::new();
        for (change, w) in written {
            let result = |outcome, deployment| AppResult {
                app: change.app.clone(),
                action: change.action,
                outcome,
                deployment,
            };
            match w {
                WriteResult::Written(w) => {
                    emit(
                        &progress,
                        ProgressEvent::Deploying {
                            app: change.app.clone(),
                            action: change.action,
                            deployment: w.deployment_id.clone(),
                        },
                    );
                    pending.push(Pending {
                        change,
                        deployment: Some(w.deployment_id.clone()),
                        written: w.deployment_id,
                        deadline: Instant::now() + Duration::from_secs(change.deadline_seconds),
                    });
                }
                WriteResult::Gone => finish(&mut results, result(Outcome::Converged, None)),
                WriteResult::Failed(reason) => {
                    broken.insert(change.app.clone());
                    finish(&mut results, result(Outcome::Failed { reason }, None));
                }
                WriteResult::NotStarted => {
                    cancelled |= options.cancel.is_cancelled();
                    finish(&mut results, result(Outcome::NotStarted, None));
                }
                WriteResult::Unanswered => {
                    broken.insert(change.app.clone());
                    let reason = "the scheduler fell silent before it answered this write: it may or may not have landed".to_string();
                    finish(&mut results, result(Outcome::Failed { reason }, None));
                }
            }
        }

        let done = wait(
            pending,
            scheduler,
            options,
            &mut events,
            &progress,
            &silence,
        )
        .await;
        for r in done {
            match &r.outcome {
                Outcome::Converged => {}
                Outcome::Unfinished { .. } => {
                    cancelled |= options.cancel.is_cancelled();
                    broken.insert(r.app.clone());
                }
                _ => {
                    broken.insert(r.app.clone());
                }
            }
            finish(&mut results, r);
        }
    }

    for held in &plan.held {
        finish(
            &mut results,
            AppResult {
                app: held.app.clone(),
                action: Action::Delete,
                outcome: Outcome::Held {
                    reason: held.reason.clone(),
                },
                deployment: None,
            },
        );
    }

    // Plan order, held deletions last.
    let order: BTreeMap<&AppId, usize> = plan
        .changes()
        .map(|c| &c.app)
        .chain(plan.held.iter().map(|h| &h.app))
        .enumerate()
        .map(|(i, a)| (a, i))
        .collect();
    results.sort_by_key(|r| order.get(&r.app).copied().unwrap_or(usize::MAX));
    ApplyReport {
        apps: results,
        cancelled: cancelled || options.cancel.is_cancelled(),
        lost: silence.lost(),
    }
}

/// Send one change; on 409, wait (bounded) for the locking deployments and try again.
async fn write<S: Scheduler>(
    change: &Change,
    scheduler: &S,
    options: &ApplyOptions,
    progress: &Progress<'_>,
    silence: &Silence,
) -> WriteResult {
    emit(
        progress,
        ProgressEvent::Started {
            app: change.app.clone(),
            action: change.action,
        },
    );
    let give_up = Instant::now() + options.lock_wait;
    loop {
        let what = format!("writing {}", change.app);
        let sent = match (change.action, &change.body) {
            (Action::Delete, _) => {
                silence
                    .ask(
                        &what,
                        scheduler.delete_app(&change.app, options.force_delete),
                    )
                    .await
            }
            (_, Some(body)) => {
                silence
                    .ask(&what, scheduler.put_app(&change.app, body))
                    .await
            }
            (_, None) => return WriteResult::Failed("the plan has no definition to send".into()),
        };
        let Some(sent) = sent else {
            return WriteResult::Unanswered;
        };
        let locks = match sent {
            Ok(w) => return WriteResult::Written(w),
            Err(SchedulerError::NotFound { .. }) if change.action == Action::Delete => {
                return WriteResult::Gone
            }
            Err(SchedulerError::Locked { deployments, .. }) => deployments,
            Err(SchedulerError::Invalid {
                message, details, ..
            }) => {
                return WriteResult::Failed(invalid_reason(
                    change.file.as_deref(),
                    &message,
                    &details,
                ))
            }
            Err(e) => return WriteResult::Failed(e.to_string()),
        };
        if Instant::now() >= give_up {
            return WriteResult::Failed(format!(
                "locked by deployment(s) {} for more than {}; Baton never forces a change: wait for them or cancel them, then apply again",
                locks.join(", "),
                humantime::format_duration(options.lock_wait)
            ));
        }
        emit(
            progress,
            ProgressEvent::Locked {
                app: change.app.clone(),
                deployments: locks.clone(),
            },
        );
        // Wait until none of the locking deployments runs (or the bound), then try again.
        loop {
            tokio::select! {
                _ = options.cancel.cancelled() => return WriteResult::NotStarted,
                _ = tokio::time::sleep_until(give_up.min(Instant::now() + options.poll_interval)) => {}
            }
            if Instant::now() >= give_up {
                break;
            }
            let what = format!(
                "waiting for deployment(s) {} locking {}",
                locks.join(", "),
                change.app
            );
            match silence.ask(&what, scheduler.deployments()).await {
                None => return WriteResult::Unanswered,
                Some(Ok(running)) if !running.iter().any(|d| locks.contains(&d.id)) => break,
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "cannot list deployments"),
            }
        }
    }
}

/// A 422, with the spec file and Marathon's details verbatim.
fn invalid_reason(
    file: Option<&Path>,
    message: &str,
    details: &[baton_marathon::InvalidDetail],
) -> String {
    let mut s = match file {
        Some(f) => format!("{}: the scheduler rejected the app: {message}", f.display()),
        None => format!("the scheduler rejected the change: {message}"),
    };
    for d in details {
        for e in &d.errors {
            s.push_str(&format!("\n    {}: {e}", d.path));
        }
    }
    s
}

/// Wait for the deployments of one wave, then for their tasks; roll back what passes its
/// deadline.
async fn wait<S: Scheduler>(
    mut pending: Vec<Pending<'_>>,
    scheduler: &S,
    options: &ApplyOptions,
    events: &mut Option<EventStream>,
    progress: &Progress<'_>,
    silence: &Silence,
) -> Vec<AppResult> {
    let mut out = Vec::new();
    let result = |p: &Pending<'_>, outcome| AppResult {
        app: p.change.app.clone(),
        action: p.change.action,
        outcome,
        deployment: Some(p.written.clone()),
    };
    let mut next_poll = Instant::now() + options.poll_interval;
    while !pending.is_empty() {
        if silence.lost().is_some() {
            for p in pending.drain(..) {
                let r = result(
                    &p,
                    Outcome::Unfinished {
                        deployment: p.written.clone(),
                    },
                );
                out.push(r);
            }
            break;
        }
        // Tasks of finished deployments: checked once all deployments of the wave are done, and
        // on every poll tick before that (one app list for the whole wave).
        let mut check_up = pending.iter().all(|p| p.deployment.is_none());
        let Some(deadline) = pending.iter().map(|p| p.deadline).min() else {
            break;
        };
        tokio::select! {
            biased;
            _ = options.cancel.cancelled() => {
                for p in pending.drain(..) {
                    let r = result(&p, Outcome::Unfinished { deployment: p.written.clone() });
                    out.push(r);
                }
                break;
            }
            ev = next_event(events) => match ev {
                Some(SchedulerEvent::DeploymentSuccess { id }) => {
                    silence.heard();
                    for p in pending.iter_mut().filter(|p| p.deployment.as_deref() == Some(&id)) {
                        p.deployment = None;
                    }
                    check_up = pending.iter().all(|p| p.deployment.is_none());
                }
                Some(SchedulerEvent::DeploymentFailed { id }) => {
                    silence.heard();
                    let (failed, rest): (Vec<_>, Vec<_>) = pending
                        .into_iter()
                        .partition(|p| p.deployment.as_deref() == Some(&id));
                    pending = rest;
                    for p in failed {
                        let reason = format!(
                            "deployment {id} failed (cancelled, forced over or rolled back outside this apply)"
                        );
                        out.push(result(&p, Outcome::Failed { reason }));
                    }
                }
                None => {
                    tracing::debug!("event stream ended; polling deployments");
                    *events = None;
                }
            },
            _ = tokio::time::sleep_until(next_poll) => {
                let interval = if events.is_some() { options.poll_interval * 5 } else { options.poll_interval };
                next_poll = Instant::now() + interval;
                let running: Vec<&str> = pending.iter().filter_map(|p| p.deployment.as_deref()).collect();
                if !running.is_empty() {
                    let what = format!("waiting for deployment(s) {}", running.join(", "));
                    match silence.ask(&what, scheduler.deployments()).await {
                        None => continue,
                        Some(Ok(running)) => {
                            let ids: BTreeSet<&str> = running.iter().map(|d| d.id.as_str()).collect();
                            for p in pending.iter_mut() {
                                if p.deployment.as_deref().is_some_and(|d| !ids.contains(d)) {
                                    p.deployment = None;
                                }
                            }
                        }
                        Some(Err(e)) => tracing::debug!(error = %e, "cannot list deployments"),
                    }
                }
                check_up = true;
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                let (late, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| p.deadline <= now);
                pending = rest;
                for mut p in late {
                    match past_deadline(&mut p, scheduler, options, progress, silence).await {
                        Some(outcome) => out.push(result(&p, outcome)),
                        None => pending.push(p),
                    }
                }
            }
        }
        if check_up && pending.iter().any(|p| p.deployment.is_none()) {
            let (done, rest) = tasks_up(pending, scheduler, silence).await;
            pending = rest;
            out.extend(done.into_iter().map(|p| result(&p, Outcome::Converged)));
        }
    }
    out
}

async fn next_event(events: &mut Option<EventStream>) -> Option<SchedulerEvent> {
    match events {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Up to this many apps whose tasks must be checked are read one by one (`GET /v2/apps/{id}`);
/// more, and all apps are listed once.
const READ_BY_ID_MAX: usize = 16;

/// Split finished deployments into those whose tasks are up (or whose app is gone, for
/// deletes) and the rest.
async fn tasks_up<'p, S: Scheduler>(
    pending: Vec<Pending<'p>>,
    scheduler: &S,
    silence: &Silence,
) -> (Vec<Pending<'p>>, Vec<Pending<'p>>) {
    let to_check: Vec<&AppId> = pending
        .iter()
        .filter(|p| p.deployment.is_none() && p.change.action != Action::Delete)
        .map(|p| &p.change.app)
        .collect();
    let what = "reading the apps deployed to see their tasks up";
    let apps = if to_check.is_empty() {
        Vec::new()
    } else if to_check.len() <= READ_BY_ID_MAX {
        // A few apps (a push's fast path, a correction): their cost, not the scheduler's size.
        let read = join_all(
            to_check
                .iter()
                .map(|id| silence.ask(what, scheduler.get_app(id))),
        );
        let read: Option<Vec<_>> = read.await.into_iter().collect();
        match read.map(|r| r.into_iter().collect::<Result<Vec<_>, _>>()) {
            Some(Ok(apps)) => apps.into_iter().flatten().collect(),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "cannot read apps");
                return (Vec::new(), pending);
            }
            None => return (Vec::new(), pending),
        }
    } else {
        match silence.ask(what, scheduler.list_apps()).await {
            Some(Ok(apps)) => apps,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "cannot list apps");
                return (Vec::new(), pending);
            }
            None => return (Vec::new(), pending),
        }
    };
    let by_id: BTreeMap<&str, &serde_json::Value> = apps
        .iter()
        .filter_map(|a| Some((a.get("id")?.as_str()?, a)))
        .collect();
    pending.into_iter().partition(|p| {
        p.deployment.is_none()
            && (p.change.action == Action::Delete
                || by_id
                    .get(p.change.app.as_str())
                    .is_some_and(|a| app_is_up(a)))
    })
}

/// How rolling back one deployment an interrupted apply left went.
#[derive(Debug)]
pub struct RolledBack {
    pub app: AppId,
    /// The deployment apply started and did not see finish.
    pub deployment: String,
    /// The rollback deployment, or why the scheduler refused.
    pub result: Result<Written, SchedulerError>,
}

/// Roll back the deployments a cancelled apply left running (its `Unfinished` apps), one at a
/// time, in report order: a newer apply must not be locked out by a version nobody wants any
/// more (`baton dev` after an edit). A rollback (`DELETE /v2/deployments/{id}`), never
/// `force`. `starting` is told of each before its request goes out.
pub async fn roll_back_unfinished<S: Scheduler>(
    scheduler: &S,
    report: &ApplyReport,
    starting: &mut (dyn FnMut(&AppId, &str) + Send),
) -> Vec<RolledBack> {
    let mut done = Vec::new();
    for r in &report.apps {
        if let Outcome::Unfinished { deployment } = &r.outcome {
            starting(&r.app, deployment);
            done.push(RolledBack {
                app: r.app.clone(),
                deployment: deployment.clone(),
                result: scheduler.rollback(deployment).await,
            });
        }
    }
    done
}

/// The deadline passed: roll the deployment back and say why. `None`: the deployment had just
/// finished after all; keep waiting a little for its tasks.
async fn past_deadline<S: Scheduler>(
    p: &mut Pending<'_>,
    scheduler: &S,
    options: &ApplyOptions,
    progress: &Progress<'_>,
    silence: &Silence,
) -> Option<Outcome> {
    let limit = humantime::format_duration(Duration::from_secs(p.change.deadline_seconds));
    // A diagnosis is a nicety: bounded by the silence left, and no answer is no diagnosis.
    let diagnosis = tokio::time::timeout_at(silence.deadline(), scheduler.diagnose(&p.change.app))
        .await
        .ok()
        .flatten();
    if diagnosis.is_some() {
        silence.heard();
    }
    let diagnosis = diagnosis.map(|d| format!(" ({d})")).unwrap_or_default();
    let Some(deployment) = p.deployment.clone() else {
        return Some(Outcome::Failed {
            reason: format!("deployed, but its tasks were not up within {limit}{diagnosis}"),
        });
    };
    emit(
        progress,
        ProgressEvent::RollingBack {
            app: p.change.app.clone(),
            deployment: deployment.clone(),
        },
    );
    let what = format!("rolling back deployment {deployment} of {}", p.change.app);
    // Silent: the wait loop ends this run; the deployment is left to the next cycle.
    let rolled = silence.ask(&what, scheduler.rollback(&deployment)).await?;
    let reason = match rolled {
        Ok(w) => format!(
            "no progress within {limit}{diagnosis}; deployment {deployment} rolled back (rollback deployment {})",
            w.deployment_id
        ),
        Err(SchedulerError::NotFound { .. }) => {
            // It finished between the last poll and now: give its tasks one more poll.
            p.deployment = None;
            p.deadline = Instant::now() + options.poll_interval * 2;
            return None;
        }
        Err(e) => format!("no progress within {limit}{diagnosis}; the rollback of {deployment} failed: {e}"),
    };
    Some(Outcome::Failed { reason })
}

#[cfg(test)]
mod tests;
