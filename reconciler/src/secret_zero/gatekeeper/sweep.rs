//! The lease sweep: what a gone task's sidecar obtained is revoked by the reconciler, so a task
//! that dies without revoking (`kill -9` of baton-env, a lost agent) does not leave its token
//! and its leases (a dynamic database user) alive until their TTL.
//!
//! 1. After its gatekeeper login, `baton-env` reports its token's **accessor**:
//!    `POST /v1/secret-zero/accessor {"task_id","accessor"}` ([`ACCESSOR_PATH`]).
//! 2. The gatekeeper judges the report like a grant ([`judge_report`], pure): the task was
//!    served, exists, belongs to an app we serve and own, and the report comes from its host.
//!    Then Vault vouches for the token (`auth/token/lookup-accessor`, [`check_token`], pure):
//!    created by an AppRole login on our mount, role `role_name` = the app's role, metadata
//!    `task_id` = the task (the gatekeeper put it on the secret id it minted for that task, and
//!    AppRole copies it onto the token). A report failing any check is refused and never
//!    recorded, so nobody can get another app's or task's token revoked through it.
//! 3. The accessor is recorded in the served-task file (persisted before the answer).
//! 4. When the scheduler's events say a recorded task ended ([`ended_task`]), and every
//!    [`super::GateConfig::sweep_interval`] while accessors are recorded, the scheduler's task
//!    list is read; each recorded task that is no longer listed, or listed in a terminal state,
//!    is due ([`due`], pure) and its token revoked with `auth/token/revoke-accessor`, which
//!    revokes every lease the token created. Counted in `/metrics`
//!    (`baton_leases_swept_total{result}`). A failed revocation stays recorded and is tried again
//!    at the next pass.
//!
//! Accessors are sensitive (whoever holds one and the right to use it can look up or revoke the
//! token): they are in the 0600 state file only, never logged in full ([`Accessor`]'s Debug and
//! Display show 4 characters).

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{forbidden, lock, same_ip, AppGate, Gatekeeper, Served, TaskInfo, TaskLookup};
use crate::secret_zero::vault_admin::{Revoked, TokenInfo};
use baton_core::spec::AppId;

/// The route the sidecar reports its token accessor to (beside [`super::PATH`]).
pub const ACCESSOR_PATH: &str = "/v1/secret-zero/accessor";

/// A Vault token accessor: serialised as is (into the 0600 state file only); Debug and Display
/// show its first 4 characters.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Accessor(String);

impl Accessor {
    pub fn new(s: impl Into<String>) -> Self {
        Accessor(s.into())
    }
    /// The full accessor, for the Vault call that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Accessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Accessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head: String = self.0.chars().take(4).collect();
        write!(f, "{head}…")
    }
}

/// A token a served task's sidecar logged in with, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub accessor: Accessor,
    /// The task's app.
    pub app: String,
    /// When it was recorded (Unix ms).
    pub at: u64,
}

/// What the sidecar sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AccessorReport {
    pub task_id: String,
    pub app_id: String,
    pub accessor: Accessor,
}

/// The body of `POST /v1/secret-zero/accessor` (at most 4 KiB).
pub fn parse_report(body: &[u8]) -> Option<AccessorReport> {
    let r: AccessorReport = serde_json::from_slice(body).ok()?;
    let ok = |s: &str, max| !s.is_empty() && s.len() <= max;
    (ok(&r.task_id, 512) && ok(&r.app_id, 512) && ok(r.accessor.expose(), 128)).then_some(r)
}

/// Why a report was refused (logged and counted; the caller gets a bare 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRefusal {
    Malformed,
    /// The task was never granted secret zero (or was forgotten past retention).
    NotServed,
    UnknownTask,
    /// The task's app is not one this gatekeeper serves, or not ours.
    NotOurs,
    WrongHost,
    /// Vault does not know the accessor, or its token is not the task's AppRole login.
    Forged,
    /// Vault vouched for a token, but the task already has a different one recorded (a task
    /// logs in once).
    Conflict,
}

impl ReportRefusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotServed => "not_served",
            Self::UnknownTask => "unknown_task",
            Self::NotOurs => "not_ours",
            Self::WrongHost => "wrong_host",
            Self::Forged => "forged",
            Self::Conflict => "conflict",
        }
    }
}

/// The checks on a report before Vault is asked (pure): the task was served, is listed, belongs
/// to an app this gatekeeper serves, is owned by `owner`, and the report comes from its host
/// (when `check_host`). Returns the app and its role.
pub fn judge_report(
    report: &AccessorReport,
    peer: Option<IpAddr>,
    task: Option<&TaskInfo>,
    apps: &BTreeMap<AppId, AppGate>,
    served: &Served,
    owner: &str,
    check_host: bool,
) -> Result<(AppId, String), ReportRefusal> {
    if !served.contains(&report.task_id) {
        return Err(ReportRefusal::NotServed);
    }
    let app = AppId::parse(&report.app_id).map_err(|_| ReportRefusal::Malformed)?;
    let gate = apps.get(&app).ok_or(ReportRefusal::NotOurs)?;
    let task = task
        .filter(|t| t.id == report.task_id)
        .ok_or(ReportRefusal::UnknownTask)?;
    if task.app_id.trim_end_matches('/') != app.as_str() {
        return Err(ReportRefusal::NotOurs);
    }
    if task.owner.as_deref() != Some(owner) {
        return Err(ReportRefusal::NotOurs);
    }
    if check_host && !peer.is_some_and(|p| task.addrs.iter().any(|a| same_ip(*a, p))) {
        return Err(ReportRefusal::WrongHost);
    }
    Ok((app, gate.role.clone()))
}

/// Whether Vault's account of a token makes it `task_id`'s AppRole login for `role` on `mount`
/// (pure): the metadata AppRole copied from the secret id the gatekeeper minted for that task.
pub fn check_token(info: &TokenInfo, mount: &str, role: &str, task_id: &str) -> bool {
    let login_path = format!("auth/{}/login", mount.trim_matches('/'));
    info.path.trim_end_matches('/') == login_path
        && info.role_name.as_deref() == Some(role)
        && info.task_id.as_deref() == Some(task_id)
}

/// Mesos states after which a task never runs again. `TASK_UNREACHABLE` and `TASK_UNKNOWN` are
/// not among them: such a task may come back, and its credentials with it.
const TERMINAL: [&str; 8] = [
    "TASK_FINISHED",
    "TASK_FAILED",
    "TASK_KILLED",
    "TASK_LOST",
    "TASK_ERROR",
    "TASK_DROPPED",
    "TASK_GONE",
    "TASK_GONE_BY_OPERATOR",
];

/// What the scheduler lists: every app (with or without tasks) and every task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub apps: HashSet<String>,
    pub tasks: Vec<TaskInfo>,
}

/// The recorded tasks whose tokens are due for revocation (pure). Only records older than the
/// listing count (a report newer than `listed_at` may be of a task the listing missed). A task
/// is gone when:
/// - its app is listed and the task is not, or is listed in a terminal state; or
/// - its app is not listed and this gatekeeper no longer serves it (deleted from the repo).
///
/// An app Baton still serves that the scheduler does not list is left alone: Baton is about to
/// create it again, or the scheduler's answer is wrong (a leader still loading its state);
/// either way the token's TTL still bounds it.
pub fn due(
    recorded: &BTreeMap<String, Recorded>,
    listing: &Listing,
    served_apps: &BTreeMap<AppId, AppGate>,
    listed_at: u64,
) -> Vec<String> {
    let running: HashSet<&str> = listing
        .tasks
        .iter()
        .filter(|t| !TERMINAL.contains(&t.state.as_str()))
        .map(|t| t.id.as_str())
        .collect();
    let app_listed = |app: &str| listing.apps.contains(app.trim_end_matches('/'));
    let still_served = |app: &str| AppId::parse(app).is_ok_and(|id| served_apps.contains_key(&id));
    recorded
        .iter()
        .filter(|(task, r)| {
            r.at < listed_at
                && !running.contains(task.as_str())
                && (app_listed(&r.app) || !still_served(&r.app))
        })
        .map(|(task, _)| task.clone())
        .collect()
}

/// The task a scheduler event says ended for good: a `status_update_event` with a terminal
/// `taskStatus` (pure).
pub fn ended_task(event: &serde_json::Value) -> Option<&str> {
    let kind = event.get("eventType").and_then(serde_json::Value::as_str);
    let status = event
        .get("taskStatus")
        .and_then(serde_json::Value::as_str)?;
    (kind.is_none_or(|k| k == "status_update_event") && TERMINAL.contains(&status))
        .then(|| event.get("taskId")?.as_str())
        .flatten()
}

/// Report and sweep counters for `/metrics`.
#[derive(Debug, Default)]
pub struct SweepCounters {
    pub recorded: AtomicU64,
    pub refused: AtomicU64,
    pub unavailable: AtomicU64,
    /// Tokens revoked by the sweep (and every lease they created).
    pub revoked: AtomicU64,
    /// Due tokens Vault no longer knew (the sidecar revoked them, or they expired).
    pub gone: AtomicU64,
    /// Revocations that failed (tried again next pass).
    pub failed: AtomicU64,
    /// Passes that could not list the scheduler's tasks.
    pub list_failed: AtomicU64,
}

impl SweepCounters {
    pub fn prometheus(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP baton_secret_zero_accessor_reports_total Token accessors reported by sidecars after a gatekeeper login.\n\
             # TYPE baton_secret_zero_accessor_reports_total counter\n\
             baton_secret_zero_accessor_reports_total{{decision=\"recorded\"}} {}\n\
             baton_secret_zero_accessor_reports_total{{decision=\"refused\"}} {}\n\
             baton_secret_zero_accessor_reports_total{{decision=\"unavailable\"}} {}\n\
             # HELP baton_leases_swept_total Tokens of gone tasks the lease sweep revoked (with their leases), found already gone, or failed to revoke.\n\
             # TYPE baton_leases_swept_total counter\n\
             baton_leases_swept_total{{result=\"revoked\"}} {}\n\
             baton_leases_swept_total{{result=\"already_gone\"}} {}\n\
             baton_leases_swept_total{{result=\"failed\"}} {}\n\
             # HELP baton_lease_sweep_list_failures_total Sweep passes skipped because the scheduler's tasks could not be listed.\n\
             # TYPE baton_lease_sweep_list_failures_total counter\n\
             baton_lease_sweep_list_failures_total {}\n",
            n(&self.recorded),
            n(&self.refused),
            n(&self.unavailable),
            n(&self.revoked),
            n(&self.gone),
            n(&self.failed),
            n(&self.list_failed),
        )
    }
}

/// How a report ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportOutcome {
    Recorded,
    Refused(ReportRefusal),
    /// The scheduler, Vault or the disk failed, or no cycle ran yet: the sidecar may retry.
    Unavailable,
}

/// What one sweep pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepPass {
    pub revoked: u64,
    pub gone: u64,
    pub failed: u64,
}

impl<T: TaskLookup> Gatekeeper<T> {
    /// Judges and records one report (see the module doc).
    pub async fn handle_report(
        &self,
        report: &AccessorReport,
        peer: Option<IpAddr>,
    ) -> ReportOutcome {
        let outcome = self.handle_report_inner(report, peer).await;
        let c = &self.counters.sweep;
        match outcome {
            ReportOutcome::Recorded => {
                c.recorded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(task_id = %report.task_id, accessor = %report.accessor, peer = ?peer, "secret zero: token accessor recorded for the lease sweep");
            }
            ReportOutcome::Refused(r) => {
                c.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(task_id = %report.task_id, accessor = %report.accessor, peer = ?peer, reason = r.as_str(), "secret zero: token accessor report refused");
            }
            ReportOutcome::Unavailable => {
                c.unavailable.fetch_add(1, Ordering::Relaxed);
            }
        }
        outcome
    }

    async fn handle_report_inner(
        &self,
        report: &AccessorReport,
        peer: Option<IpAddr>,
    ) -> ReportOutcome {
        let (known, served, on_record) = {
            let inner = lock(&self.inner);
            (
                inner.known,
                inner.served.contains(&report.task_id),
                inner
                    .served
                    .accessors
                    .get(&report.task_id)
                    .map(|r| r.accessor == report.accessor),
            )
        };
        if !known {
            return ReportOutcome::Unavailable;
        }
        // Never-served task ids are refused without asking the scheduler or Vault.
        if !served {
            return ReportOutcome::Refused(ReportRefusal::NotServed);
        }
        // A task reports once; repeats cost neither a scheduler nor a Vault call (a task
        // posting in a loop must not turn the gatekeeper into a load on Vault). The same
        // accessor again changes nothing; another one is refused as below.
        match on_record {
            Some(true) => return ReportOutcome::Recorded,
            Some(false) => return ReportOutcome::Refused(ReportRefusal::Conflict),
            None => {}
        }
        let task = match AppId::parse(&report.app_id) {
            Ok(app) => match self.tasks.task(&app, &report.task_id).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "secret zero: cannot look the reporting task up");
                    return ReportOutcome::Unavailable;
                }
            },
            Err(_) => return ReportOutcome::Refused(ReportRefusal::Malformed),
        };
        let (app, role) = {
            let inner = lock(&self.inner);
            let owner = inner
                .owner
                .clone()
                .unwrap_or_else(|| self.config.owner.clone());
            match judge_report(
                report,
                peer,
                task.as_ref(),
                &inner.apps,
                &inner.served,
                &owner,
                self.config.check_host,
            ) {
                Ok(x) => x,
                Err(r) => return ReportOutcome::Refused(r),
            }
        };
        match self.vault.lookup_accessor(report.accessor.expose()).await {
            Ok(Some(info)) if check_token(&info, self.vault.mount(), &role, &report.task_id) => {}
            Ok(_) => return ReportOutcome::Refused(ReportRefusal::Forged),
            Err(e) => {
                tracing::warn!(error = %e, "secret zero: cannot look a reported token accessor up");
                return ReportOutcome::Unavailable;
            }
        }
        let now = (self.clock)();
        let generation = {
            let mut inner = lock(&self.inner);
            // A task logs in once (its secret id is single use): Vault vouching for a second
            // token of the same task would be a bug or an attack; keep the first.
            if let Some(r) = inner.served.accessors.get(&report.task_id) {
                if r.accessor != report.accessor {
                    return ReportOutcome::Refused(ReportRefusal::Conflict);
                }
            }
            inner.served.accessors.insert(
                report.task_id.clone(),
                Recorded {
                    accessor: report.accessor.clone(),
                    app: app.as_str().to_owned(),
                    at: now,
                },
            );
            inner.generation += 1;
            inner.generation
        };
        match self.persist(generation).await {
            Ok(()) => ReportOutcome::Recorded,
            Err(e) => {
                tracing::error!(error = %e, "secret zero: cannot persist a token accessor");
                ReportOutcome::Unavailable
            }
        }
    }

    /// The number of tokens recorded for the sweep.
    pub fn recorded_count(&self) -> usize {
        lock(&self.inner).served.accessors.len()
    }

    /// One pass: list the tasks, revoke the tokens of recorded tasks that are gone. Nothing is
    /// listed while nothing is recorded.
    pub async fn sweep_once(&self) -> SweepPass {
        let mut pass = SweepPass::default();
        if lock(&self.inner).served.accessors.is_empty() {
            return pass;
        }
        let listed_at = (self.clock)();
        let listing = match self.tasks.all_tasks().await {
            Ok(l) => l,
            Err(e) => {
                self.counters
                    .sweep
                    .list_failed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "lease sweep: cannot list the scheduler's tasks; trying again next pass");
                return pass;
            }
        };
        let due: Vec<(String, Recorded)> = {
            let inner = lock(&self.inner);
            due(&inner.served.accessors, &listing, &inner.apps, listed_at)
                .into_iter()
                .filter_map(|t| inner.served.accessors.get(&t).cloned().map(|r| (t, r)))
                .collect()
        };
        let mut done = Vec::new();
        for (task_id, r) in due {
            match self.vault.revoke_accessor(r.accessor.expose()).await {
                Ok(Revoked::Revoked) => {
                    pass.revoked += 1;
                    tracing::info!(task_id, app = %r.app, accessor = %r.accessor, "lease sweep: the gone task's token and leases revoked");
                    done.push(task_id);
                }
                Ok(Revoked::AlreadyGone) => {
                    pass.gone += 1;
                    tracing::debug!(task_id, app = %r.app, "lease sweep: the gone task's token was already revoked or expired");
                    done.push(task_id);
                }
                Err(e) => {
                    pass.failed += 1;
                    tracing::warn!(task_id, app = %r.app, error = %e, "lease sweep: cannot revoke the gone task's token; trying again next pass");
                }
            }
        }
        let c = &self.counters.sweep;
        c.revoked.fetch_add(pass.revoked, Ordering::Relaxed);
        c.gone.fetch_add(pass.gone, Ordering::Relaxed);
        c.failed.fetch_add(pass.failed, Ordering::Relaxed);
        if !done.is_empty() {
            let generation = {
                let mut inner = lock(&self.inner);
                for t in &done {
                    inner.served.accessors.remove(t);
                }
                inner.generation += 1;
                inner.generation
            };
            if let Err(e) = self.persist(generation).await {
                // Revoking again after a restart is harmless (Vault answers "already gone").
                tracing::warn!(error = %e, "lease sweep: cannot persist the swept records");
            }
        }
        pass
    }

    /// The scheduler says `task_id` ended: sweep now when its token is recorded (the listing
    /// still decides; a scheduler whose listing lags its events is caught by the next pass).
    pub fn task_ended(&self, task_id: &str) {
        if lock(&self.inner).served.accessors.contains_key(task_id) {
            self.sweep_now.notify_one();
        }
    }

    /// Sweeps every [`super::GateConfig::sweep_interval`], and at once when
    /// [`Gatekeeper::task_ended`] names a recorded task, until `stop`.
    pub async fn sweep_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick =
            tokio::time::interval(self.config.sweep_interval.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.sweep_now.notified() => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.sweep_once() => {}
            }
        }
    }
}

/// `POST /v1/secret-zero/accessor`: 204 recorded, 403 refused, 503 try again.
pub(super) async fn report_accessor<T: TaskLookup>(
    State(gk): State<Arc<Gatekeeper<T>>>,
    request: Request,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let body = axum::body::to_bytes(request.into_body(), 4096).await.ok();
    let Some(report) = body.as_deref().and_then(parse_report) else {
        gk.counters.sweep.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reason = ReportRefusal::Malformed.as_str(),
            "secret zero: token accessor report refused"
        );
        return forbidden();
    };
    // To completion even if the caller hangs up: a half-recorded report is never left.
    let worker = gk.clone();
    let outcome = tokio::spawn(async move { worker.handle_report(&report, peer).await })
        .await
        .unwrap_or(ReportOutcome::Unavailable);
    match outcome {
        ReportOutcome::Recorded => StatusCode::NO_CONTENT.into_response(),
        ReportOutcome::Refused(_) => forbidden(),
        ReportOutcome::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            axum::Json(json!({ "errors": ["unavailable"] })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
