//! The secret-zero gatekeeper (`POST /v1/secret-zero` on `baton serve`): the reconciler vouches
//! for a task the scheduler launched for one of its apps by handing the task's `baton-env` a
//! response-wrapped, single-use AppRole secret id, minted by Vault, that the gatekeeper never
//! sees unwrapped (trusted-orchestrator pattern).
//!
//! - [`decide`] is the whole policy, pure: known app with secrets, task exists and belongs to
//!   it, owned by us, staging/running, younger than `max_age`, asked from the task's host, never
//!   served before, within the app's rate. Checks that a forger could probe cheaply come first,
//!   and only requests that pass every other check spend a rate-limit token (so nobody can
//!   exhaust an app's budget with made-up task ids).
//! - [`Gatekeeper`] is the thin shell: task lookup through a [`TaskLookup`] (the scheduler, with
//!   a short cache), the served set persisted in the state dir ([`served_path`], atomically and
//!   0600 with [`crate::daemon::state_dir`], group-committed) *before* a secret id is minted, so a restart or a crash never
//!   reopens the door; Vault through [`crate::secret_zero::vault_admin::VaultAdmin`].
//! - [`router`] is the axum route `serve` mounts; peers come from `ConnectInfo<SocketAddr>`.
//!
//! Until the loop has told it its apps (the first cycle that reached Vault), every request gets
//! `503` with `Retry-After`: the sidecar retries, where a `403` would be final. With the host
//! check on, each secret id is bound to the address that asked for it (`cidr_list`), which the
//! host check tied to the task's host: a stolen secret id is useless from anywhere else.
//!
//! Every decision is logged (task id, app, peer, reason) and counted ([`Counters`]); the HTTP
//! answer to any denial is the same bare 403, so a caller learns nothing about why.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::secret_zero::vault_admin::VaultAdmin;
use baton_core::ownership;
use baton_core::secrets::Desired;
use baton_core::spec::{AppId, Repo};
use baton_marathon::Scheduler;

pub mod sweep;

/// The route.
pub const PATH: &str = "/v1/secret-zero";
/// File name of the served-task set inside the state dir.
pub const SERVED_FILE: &str = "secret-zero-served.json";
/// The served-task file format this Baton reads and writes.
pub const SERVED_VERSION: u32 = 1;
/// `Retry-After` (seconds) while the gatekeeper does not know its apps yet.
pub const NOT_READY_RETRY_AFTER: u64 = 2;

/// What the sidecar sends.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SecretZeroRequest {
    pub task_id: String,
    pub app_id: String,
}

/// The body of `POST /v1/secret-zero` (at most 4 KiB, read by the handler) as a request; any
/// other shape is refused as malformed. Separate from the handler so that it is fuzzed as is
/// (`fuzz/`, target `gatekeeper_request`).
pub fn parse_request(body: &[u8]) -> Result<SecretZeroRequest, DenyReason> {
    serde_json::from_slice(body).map_err(|_| DenyReason::Malformed)
}

/// What the scheduler says about a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub app_id: String,
    /// The owner label of the task's app.
    pub owner: Option<String>,
    /// Mesos state, e.g. `TASK_RUNNING`.
    pub state: String,
    /// When the scheduler staged it (Unix ms).
    pub staged_at_ms: Option<u64>,
    /// The addresses of the task's host (its `host`, resolved, and its `ipAddresses`).
    pub addrs: Vec<IpAddr>,
    /// The `baton.dev/rollout-of` label of the task's app: the stable app a rollout's canary
    /// stands in for.
    pub rollout_of: Option<String>,
}

/// An app the gatekeeper serves: one with Vault access in the current desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppGate {
    /// AppRole role (and policy) name.
    pub role: String,
    /// Cached role id; read from Vault on first use when unknown.
    pub role_id: Option<String>,
    /// Instances: the burst of the app's rate limit is at least this.
    pub instances: u64,
    /// This gate is the canary of a rollout (`<stable>-canary`, baton_core::rollout): it serves
    /// the stable app's role, to tasks of an app labelled `baton.dev/rollout-of: <stable>` only.
    pub canary_of: Option<AppId>,
}

/// The apps to serve, from a desired state and the role ids known for it. An app with a
/// `baton.rollout` block is served under its canary's id too (the canary runs the new
/// definition with the same secrets; spec validation keeps `<id>-canary` from being an app of
/// the repo then), to tasks of Baton's canary only.
pub fn apps_from(
    repo: &Repo,
    desired: &Desired,
    role_ids: &BTreeMap<String, String>,
) -> BTreeMap<AppId, AppGate> {
    let mut apps = BTreeMap::new();
    for d in desired.apps.values() {
        let spec = repo.specs.get(&d.app);
        let instances = spec
            .and_then(|s| s.app.get("instances"))
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let gate = AppGate {
            role: d.name.clone(),
            role_id: role_ids.get(&d.name).cloned(),
            instances,
            canary_of: None,
        };
        let canary = (spec.filter(|s| s.baton.rollout.is_some()))
            .and_then(|_| AppId::parse(&baton_core::rollout::canary_id(d.app.as_str())).ok());
        if let Some(canary) = canary {
            let canary_gate = AppGate {
                canary_of: Some(d.app.clone()),
                ..gate.clone()
            };
            apps.insert(canary, canary_gate);
        }
        apps.insert(d.app.clone(), gate);
    }
    apps
}

/// Per-app token bucket settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateConfig {
    /// Bucket size; an app's bucket holds at least its instance count.
    pub burst: u32,
    /// Refill per second.
    pub per_second: f64,
}

/// Gatekeeper settings (`baton serve --task-max-age ...`).
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Our owner label: tasks of apps owned by someone else are refused.
    pub owner: String,
    /// Oldest task (since staging) that may still ask (`--task-max-age`, default 120 s).
    pub max_age: Duration,
    /// Require the request to come from one of the task host's addresses.
    pub check_host: bool,
    /// `X-Vault-Wrap-TTL` of the secret id (default 60 s).
    pub wrap_ttl: Duration,
    pub rate: RateConfig,
    /// Where the served set lives; `None` keeps it in memory only (tests).
    pub state_dir: Option<PathBuf>,
    /// How long a served task id is remembered (beyond `max_age` it would be refused anyway).
    pub served_retention: Duration,
    /// How often the lease sweep compares the recorded tokens with the scheduler's tasks (the
    /// bound on how long a gone task's token outlives it, plus one listing and one Vault call).
    pub sweep_interval: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            owner: "baton".into(),
            max_age: Duration::from_secs(120),
            check_host: true,
            wrap_ttl: Duration::from_secs(60),
            rate: RateConfig {
                burst: 20,
                per_second: 5.0,
            },
            state_dir: None,
            served_retention: Duration::from_secs(24 * 3600),
            sweep_interval: Duration::from_secs(10),
        }
    }
}

/// Why a request was refused (logged and counted; never told to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    Malformed,
    UnknownApp,
    UnknownTask,
    AppMismatch,
    NotOwned,
    NotActive,
    TooOld,
    WrongHost,
    Replayed,
    RateLimited,
}

impl DenyReason {
    pub const ALL: [DenyReason; 10] = [
        DenyReason::Malformed,
        DenyReason::UnknownApp,
        DenyReason::UnknownTask,
        DenyReason::AppMismatch,
        DenyReason::NotOwned,
        DenyReason::NotActive,
        DenyReason::TooOld,
        DenyReason::WrongHost,
        DenyReason::Replayed,
        DenyReason::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::Malformed => "malformed",
            DenyReason::UnknownApp => "unknown_app",
            DenyReason::UnknownTask => "unknown_task",
            DenyReason::AppMismatch => "app_mismatch",
            DenyReason::NotOwned => "not_owned",
            DenyReason::NotActive => "not_active",
            DenyReason::TooOld => "too_old",
            DenyReason::WrongHost => "wrong_host",
            DenyReason::Replayed => "replayed",
            DenyReason::RateLimited => "rate_limited",
        }
    }
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Mint a wrapped secret id for this role.
    Grant {
        role: String,
    },
    Deny(DenyReason),
}

/// Task ids already served, with when (Unix ms), and the tokens their sidecars reported for
/// the lease sweep ([`sweep`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    pub version: u32,
    pub served: BTreeMap<String, u64>,
    /// Task id -> the token its sidecar logged in with (absent in files of earlier Batons,
    /// which read the field as unknown and ignore it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub accessors: BTreeMap<String, sweep::Recorded>,
}

impl Served {
    pub fn contains(&self, task_id: &str) -> bool {
        self.served.contains_key(task_id)
    }
    /// Forget entries older than `retention` (their tasks are past `max_age` anyway).
    pub fn prune(&mut self, now_ms: u64, retention: Duration) {
        let cutoff = now_ms.saturating_sub(retention.as_millis() as u64);
        self.served.retain(|_, at| *at >= cutoff);
        // A token recorded a day ago has outlived any app token's max TTL Baton sets.
        self.accessors.retain(|_, r| r.at >= cutoff);
    }

    /// Record `task_id` as served at `now_ms`, forgetting what is past `retention`: a
    /// long-running `baton serve` keeps (and rewrites on every grant) only a day of task ids,
    /// not every task it ever served.
    pub fn reserve(&mut self, task_id: &str, now_ms: u64, retention: Duration) {
        self.prune(now_ms, retention);
        self.served.insert(task_id.to_owned(), now_ms);
    }
}

/// Per-app token buckets (time in Unix ms, passed in).
#[derive(Debug, Clone, Default)]
pub struct RateLimiter {
    buckets: HashMap<AppId, (f64, u64)>,
}

impl RateLimiter {
    /// Takes one token from `app`'s bucket of size `capacity`; false when empty.
    pub fn take(&mut self, app: &AppId, capacity: f64, per_second: f64, now_ms: u64) -> bool {
        let (tokens, last) = self
            .buckets
            .entry(app.clone())
            .or_insert((capacity, now_ms));
        let elapsed = now_ms.saturating_sub(*last) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * per_second).min(capacity);
        *last = now_ms.max(*last);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

const ACTIVE: [&str; 3] = ["TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"];

/// The gatekeeper's policy. Pure: every input, the clock included, is an argument. Takes a
/// rate-limit token only when every other check passed; the caller records a grant in `served`
/// under the same lock.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    req: &SecretZeroRequest,
    peer: Option<IpAddr>,
    task: Option<&TaskInfo>,
    apps: &BTreeMap<AppId, AppGate>,
    served: &Served,
    limiter: &mut RateLimiter,
    now_ms: u64,
    config: &GateConfig,
) -> Decision {
    use DenyReason::*;
    let Ok(app_id) = AppId::parse(&req.app_id) else {
        return Decision::Deny(Malformed);
    };
    if req.task_id.is_empty() || req.task_id.len() > 512 {
        return Decision::Deny(Malformed);
    }
    let Some(gate) = apps.get(&app_id) else {
        return Decision::Deny(UnknownApp);
    };
    let Some(task) = task else {
        return Decision::Deny(UnknownTask);
    };
    if task.id != req.task_id || task.app_id.trim_end_matches('/') != app_id.as_str() {
        return Decision::Deny(AppMismatch);
    }
    if task.owner.as_deref() != Some(config.owner.as_str()) {
        return Decision::Deny(NotOwned);
    }
    // A canary's gate serves only the app Baton labelled as that stable's canary.
    if let Some(stable) = &gate.canary_of {
        if task.rollout_of.as_deref() != Some(stable.as_str()) {
            return Decision::Deny(AppMismatch);
        }
    }
    if !ACTIVE.contains(&task.state.as_str()) {
        return Decision::Deny(NotActive);
    }
    // A task with no staging time cannot prove it is fresh.
    let Some(staged) = task.staged_at_ms else {
        return Decision::Deny(TooOld);
    };
    if now_ms.saturating_sub(staged) > config.max_age.as_millis() as u64 {
        return Decision::Deny(TooOld);
    }
    if config.check_host && !peer.is_some_and(|p| task.addrs.iter().any(|a| same_ip(*a, p))) {
        return Decision::Deny(WrongHost);
    }
    if served.contains(&req.task_id) {
        return Decision::Deny(Replayed);
    }
    let capacity = f64::from(config.rate.burst).max(gate.instances as f64);
    if !limiter.take(&app_id, capacity, config.rate.per_second, now_ms) {
        return Decision::Deny(RateLimited);
    }
    Decision::Grant {
        role: gate.role.clone(),
    }
}

/// IPv4 and IPv4-mapped IPv6 addresses are the same host.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Where tasks are looked up: the scheduler ([`SchedulerTasks`]) or a fixed table ([`StaticTasks`]).
pub trait TaskLookup: Send + Sync + 'static {
    fn task(
        &self,
        app: &AppId,
        task_id: &str,
    ) -> impl Future<Output = Result<Option<TaskInfo>, String>> + Send;

    /// Every app and task the scheduler knows now (fresh, not from a cache; hosts not
    /// resolved): what the lease sweep compares its records with.
    fn all_tasks(&self) -> impl Future<Output = Result<sweep::Listing, String>> + Send;
}

/// Tasks from `Scheduler::list_apps` (which embeds tasks), cached: a miss refreshes the cache
/// at most every `min_refresh`, one refresh at a time (so 1,000 tasks starting together cost a
/// handful of app listings, not 1,000).
pub struct SchedulerTasks<S> {
    scheduler: S,
    cache: tokio::sync::Mutex<TaskCache>,
    pub min_refresh: Duration,
    pub max_staleness: Duration,
}

#[derive(Default)]
struct TaskCache {
    at: Option<Instant>,
    tasks: HashMap<String, TaskInfo>,
    /// Resolved agent host names, with when they were resolved.
    hosts: HashMap<String, (Instant, Vec<IpAddr>)>,
}

/// How long a resolved agent host is trusted; a name that did not resolve is tried again
/// sooner, so a passing DNS failure does not deny that host's tasks for good.
const HOST_TTL: Duration = Duration::from_secs(300);
const HOST_FAILED_TTL: Duration = Duration::from_secs(15);

impl<S: Scheduler> SchedulerTasks<S> {
    pub fn new(scheduler: S) -> Self {
        SchedulerTasks {
            scheduler,
            cache: tokio::sync::Mutex::new(TaskCache::default()),
            min_refresh: Duration::from_millis(200),
            max_staleness: Duration::from_secs(5),
        }
    }
}

impl<S: Scheduler + 'static> TaskLookup for SchedulerTasks<S> {
    async fn task(&self, _app: &AppId, task_id: &str) -> Result<Option<TaskInfo>, String> {
        let mut cache = self.cache.lock().await;
        let age = cache.at.map(|t| t.elapsed());
        let hit = cache.tasks.contains_key(task_id);
        let refresh = match age {
            None => true,
            Some(a) if hit => a > self.max_staleness,
            Some(a) => a > self.min_refresh,
        };
        if refresh {
            let apps = self
                .scheduler
                .list_apps()
                .await
                .map_err(|e| e.to_string())?;
            let mut tasks = HashMap::new();
            for app in &apps {
                for mut t in tasks_of(app) {
                    if let Some(host) = host_of(app, &t.id) {
                        let fresh = |(at, a): &(Instant, Vec<IpAddr>)| {
                            let ttl = if a.is_empty() {
                                HOST_FAILED_TTL
                            } else {
                                HOST_TTL
                            };
                            at.elapsed() < ttl
                        };
                        let addrs = match cache.hosts.get(&host).filter(|e| fresh(e)) {
                            Some((_, a)) => a.clone(),
                            None => {
                                let a = resolve(&host).await;
                                cache
                                    .hosts
                                    .insert(host.clone(), (Instant::now(), a.clone()));
                                a
                            }
                        };
                        t.addrs.extend(addrs);
                    }
                    tasks.insert(t.id.clone(), t);
                }
            }
            cache.tasks = tasks;
            cache.at = Some(Instant::now());
        }
        Ok(cache.tasks.get(task_id).cloned())
    }

    async fn all_tasks(&self) -> Result<sweep::Listing, String> {
        let apps = self
            .scheduler
            .list_apps()
            .await
            .map_err(|e| e.to_string())?;
        Ok(sweep::Listing {
            apps: apps
                .iter()
                .filter_map(|a| a.get("id").and_then(Value::as_str))
                .map(|id| id.trim_end_matches('/').to_owned())
                .collect(),
            tasks: apps.iter().flat_map(tasks_of).collect(),
        })
    }
}

async fn resolve(host: &str) -> Vec<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    match tokio::net::lookup_host((host, 0)).await {
        Ok(addrs) => addrs.map(|a| a.ip()).collect(),
        Err(e) => {
            tracing::warn!(host, error = %e, "cannot resolve a task host");
            Vec::new()
        }
    }
}

fn host_of(app: &Value, task_id: &str) -> Option<String> {
    app.get("tasks")?
        .as_array()?
        .iter()
        .find(|t| t.get("id").and_then(Value::as_str) == Some(task_id))?
        .get("host")?
        .as_str()
        .map(str::to_owned)
}

/// The tasks embedded in a Marathon app (`embed=apps.tasks`), without host resolution.
pub fn tasks_of(app: &Value) -> Vec<TaskInfo> {
    let owner = ownership::owner_of(app).map(str::to_owned);
    let app_id = app.get("id").and_then(Value::as_str).unwrap_or_default();
    let rollout_of = (app
        .pointer("/labels")
        .and_then(|l| l.get(baton_core::rollout::ROLLOUT_OF)))
    .and_then(Value::as_str)
    .map(str::to_owned);
    app.get("tasks")
        .and_then(Value::as_array)
        .map(|tasks| {
            tasks
                .iter()
                .filter_map(|t| {
                    let id = t.get("id")?.as_str()?.to_owned();
                    let addrs = t
                        .get("ipAddresses")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|i| i.get("ipAddress")?.as_str()?.parse().ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(TaskInfo {
                        id,
                        app_id: t
                            .get("appId")
                            .and_then(Value::as_str)
                            .unwrap_or(app_id)
                            .to_owned(),
                        owner: owner.clone(),
                        rollout_of: rollout_of.clone(),
                        state: t
                            .get("state")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        staged_at_ms: t
                            .get("stagedAt")
                            .and_then(Value::as_str)
                            .and_then(rfc3339_ms),
                        addrs,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A fixed task table (tests, benchmarks).
#[derive(Default)]
pub struct StaticTasks {
    tasks: Mutex<HashMap<String, TaskInfo>>,
}

impl StaticTasks {
    pub fn insert(&self, t: TaskInfo) {
        lock(&self.tasks).insert(t.id.clone(), t);
    }

    /// The task is gone (killed, lost).
    pub fn remove(&self, task_id: &str) {
        lock(&self.tasks).remove(task_id);
    }
}

impl TaskLookup for StaticTasks {
    async fn task(&self, _app: &AppId, task_id: &str) -> Result<Option<TaskInfo>, String> {
        Ok(lock(&self.tasks).get(task_id).cloned())
    }

    /// The apps are those of the tasks in the table.
    async fn all_tasks(&self) -> Result<sweep::Listing, String> {
        let tasks: Vec<TaskInfo> = lock(&self.tasks).values().cloned().collect();
        Ok(sweep::Listing {
            apps: tasks
                .iter()
                .map(|t| t.app_id.trim_end_matches('/').to_owned())
                .collect(),
            tasks,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decision counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub granted: AtomicU64,
    denied: [AtomicU64; 10],
    /// The scheduler or Vault could not be asked (503, the sidecar retries).
    pub unavailable: AtomicU64,
    /// Asked before the first cycle gave the gatekeeper its apps (503, the sidecar retries).
    pub not_ready: AtomicU64,
    /// Vault answered a secret-id request without wrapping it: refused.
    pub not_wrapped: AtomicU64,
    /// Accessor reports and the lease sweep.
    pub sweep: sweep::SweepCounters,
}

impl Counters {
    pub fn denied(&self, reason: DenyReason) -> u64 {
        self.denied[reason as usize].load(Ordering::Relaxed)
    }

    fn deny(&self, reason: DenyReason) {
        self.denied[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self) -> String {
        let mut s = String::from(
            "# HELP baton_secret_zero_requests_total Gatekeeper decisions.\n# TYPE baton_secret_zero_requests_total counter\n",
        );
        s.push_str(&format!(
            "baton_secret_zero_requests_total{{decision=\"granted\"}} {}\n",
            self.granted.load(Ordering::Relaxed)
        ));
        for r in DenyReason::ALL {
            s.push_str(&format!(
                "baton_secret_zero_requests_total{{decision=\"denied\",reason=\"{}\"}} {}\n",
                r.as_str(),
                self.denied(r)
            ));
        }
        s.push_str(&format!(
            "baton_secret_zero_requests_total{{decision=\"unavailable\"}} {}\n",
            self.unavailable.load(Ordering::Relaxed)
        ));
        s.push_str(&format!(
            "baton_secret_zero_requests_total{{decision=\"not_ready\"}} {}\n",
            self.not_ready.load(Ordering::Relaxed)
        ));
        s.push_str(&format!(
            "# HELP baton_secret_zero_not_wrapped_total Secret-id answers refused for lacking wrap_info.\n# TYPE baton_secret_zero_not_wrapped_total counter\nbaton_secret_zero_not_wrapped_total {}\n",
            self.not_wrapped.load(Ordering::Relaxed)
        ));
        s.push_str(&self.sweep.prometheus());
        s
    }
}

/// The current time in Unix ms (injectable for tests).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

struct Inner {
    apps: BTreeMap<AppId, AppGate>,
    /// The loop has told us the apps at least once: until then no request can be judged.
    known: bool,
    /// The repo's owner label, once the loop has loaded a repo (overrides `config.owner`).
    owner: Option<String>,
    served: Served,
    limiter: RateLimiter,
    /// Bumped on every change of `served`.
    generation: u64,
}

/// Errors starting the gatekeeper.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("cannot read or write the served-task file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the served-task file {path} is not valid: {message}")]
    Format { path: PathBuf, message: String },
}

/// The gatekeeper service.
pub struct Gatekeeper<T> {
    tasks: T,
    vault: VaultAdmin,
    config: GateConfig,
    clock: Clock,
    inner: Mutex<Inner>,
    /// Generation last written to disk; held while writing (group commit).
    written: tokio::sync::Mutex<u64>,
    pub counters: Counters,
    /// Wakes the lease sweep now: the scheduler said a recorded task ended.
    sweep_now: tokio::sync::Notify,
    /// HA: the served set every replica shares (a task is granted once across all of them).
    grants: Option<crate::ha::grants::Grants>,
}

/// The served-set file in a state dir.
pub fn served_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SERVED_FILE)
}

/// Loads the served set; a missing file is an empty set, a corrupt one or one of a format
/// version this Baton does not know (written by a newer Baton, or edited) an error: never a
/// silently reopened door.
pub fn load_served(path: &Path) -> Result<Served, GateError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let served: Served = serde_json::from_slice(&bytes).map_err(|e| GateError::Format {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            if served.version != SERVED_VERSION {
                return Err(GateError::Format {
                    path: path.to_owned(),
                    message: format!(
                        "unknown version {} (this Baton reads version {SERVED_VERSION}); refusing to start rather than forget which tasks were served",
                        served.version
                    ),
                });
            }
            Ok(served)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Served {
            version: SERVED_VERSION,
            ..Default::default()
        }),
        Err(source) => Err(GateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes the served set atomically, mode 0600 ([`crate::daemon::state_dir::write_atomic`]).
pub fn save_served(path: &Path, served: &Served) -> Result<(), GateError> {
    let io = |source| GateError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec(served).map_err(|e| io(std::io::Error::other(e)))?;
    crate::daemon::state_dir::write_atomic(path, &bytes).map_err(io)
}

/// How one request ended, for the HTTP layer.
#[derive(Debug)]
pub enum Outcome {
    Granted {
        wrap_token: String,
        role_id: String,
    },
    Denied(DenyReason),
    /// The scheduler, Vault or the disk failed; nothing was handed out; the caller may retry.
    Unavailable,
    /// No cycle has told the gatekeeper its apps yet; the caller may retry.
    NotReady,
}

impl<T: TaskLookup> Gatekeeper<T> {
    /// A gatekeeper; loads the served set from `config.state_dir`.
    pub fn new(
        tasks: T,
        vault: VaultAdmin,
        config: GateConfig,
        clock: Clock,
    ) -> Result<Self, GateError> {
        let mut served = match &config.state_dir {
            Some(dir) => load_served(&served_path(dir))?,
            None => Served::default(),
        };
        served.version = SERVED_VERSION;
        served.prune(clock(), config.served_retention);
        Ok(Gatekeeper {
            tasks,
            vault,
            config,
            clock,
            inner: Mutex::new(Inner {
                apps: BTreeMap::new(),
                known: false,
                owner: None,
                served,
                limiter: RateLimiter::default(),
                generation: 0,
            }),
            written: tokio::sync::Mutex::new(0),
            counters: Counters::default(),
            sweep_now: tokio::sync::Notify::new(),
            grants: None,
        })
    }

    /// HA: claim each task in ZooKeeper too before minting (see [`crate::ha::grants`]).
    pub fn with_grants(mut self, grants: crate::ha::grants::Grants) -> Self {
        self.grants = Some(grants);
        self
    }

    /// Replaces the apps served (after each reconcile).
    pub fn set_apps(&self, apps: BTreeMap<AppId, AppGate>) {
        let mut inner = lock(&self.inner);
        inner.known = true;
        // Keep role ids already learnt for unchanged roles.
        let old = std::mem::take(&mut inner.apps);
        inner.apps = apps
            .into_iter()
            .map(|(id, mut g)| {
                if g.role_id.is_none() {
                    g.role_id = old
                        .get(&id)
                        .filter(|o| o.role == g.role)
                        .and_then(|o| o.role_id.clone());
                }
                (id, g)
            })
            .collect();
    }

    pub fn served_count(&self) -> usize {
        lock(&self.inner).served.served.len()
    }

    /// Where it looks tasks up (a test's [`StaticTasks`] table is changed through it: a task
    /// killed or lost).
    pub fn tasks(&self) -> &T {
        &self.tasks
    }

    /// Handles one request end to end.
    pub async fn handle(&self, req: &SecretZeroRequest, peer: Option<IpAddr>) -> Outcome {
        let outcome = self.handle_inner(req, peer).await;
        match &outcome {
            Outcome::Granted { .. } => {
                self.counters.granted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(task_id = %req.task_id, app = %req.app_id, peer = ?peer, decision = "granted", "secret zero");
            }
            Outcome::Denied(r) => {
                self.counters.deny(*r);
                tracing::warn!(task_id = %req.task_id, app = %req.app_id, peer = ?peer, decision = "denied", reason = r.as_str(), "secret zero");
            }
            Outcome::Unavailable => {
                self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::NotReady => {
                self.counters.not_ready.fetch_add(1, Ordering::Relaxed);
                tracing::info!(task_id = %req.task_id, app = %req.app_id, peer = ?peer, decision = "not_ready", "secret zero: no cycle has given the gatekeeper its apps yet (503, the task retries)");
            }
        }
        outcome
    }

    async fn handle_inner(&self, req: &SecretZeroRequest, peer: Option<IpAddr>) -> Outcome {
        // Before the first cycle every app looks unknown: a 403 would be final for the task.
        if !lock(&self.inner).known {
            return Outcome::NotReady;
        }
        let known = AppId::parse(&req.app_id)
            .ok()
            .filter(|id| lock(&self.inner).apps.contains_key(id));
        // Unknown apps are refused without asking the scheduler.
        let task = match &known {
            Some(id) => match self.tasks.task(id, &req.task_id).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "secret zero: cannot look the task up");
                    return Outcome::Unavailable;
                }
            },
            None => None,
        };
        let now = (self.clock)();
        let (decision, role_id, generation) = {
            let mut inner = lock(&self.inner);
            let inner = &mut *inner;
            let owned;
            let config = match &inner.owner {
                Some(o) if *o != self.config.owner => {
                    owned = GateConfig {
                        owner: o.clone(),
                        ..self.config.clone()
                    };
                    &owned
                }
                _ => &self.config,
            };
            let d = decide(
                req,
                peer,
                task.as_ref(),
                &inner.apps,
                &inner.served,
                &mut inner.limiter,
                now,
                config,
            );
            if matches!(d, Decision::Grant { .. }) {
                // Reserve under the same lock: a concurrent replay now sees it.
                inner
                    .served
                    .reserve(&req.task_id, now, self.config.served_retention);
                inner.generation += 1;
            }
            let role_id = known
                .as_ref()
                .and_then(|id| inner.apps.get(id))
                .and_then(|g| g.role_id.clone());
            (d, role_id, inner.generation)
        };
        let role = match decision {
            Decision::Deny(r) => return Outcome::Denied(r),
            Decision::Grant { role } => role,
        };
        // Persist before minting: a crash after this point cannot reopen the door.
        if let Err(e) = self.persist(generation).await {
            tracing::error!(error = %e, "secret zero: cannot persist the served set; refusing");
            self.release(&req.task_id).await;
            return Outcome::Unavailable;
        }
        // HA: the replicas' shared served set decides; a claim that fails or is another
        // replica's keeps the local reservation (this task is not granted here either way).
        if let Some(grants) = &self.grants {
            match grants.claim(&req.task_id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(task = %req.task_id, "secret zero: another replica granted this task already");
                    return Outcome::Denied(DenyReason::Replayed);
                }
                Err(e) => {
                    tracing::error!(error = %e, "secret zero: cannot claim the task in ZooKeeper; refusing");
                    self.release(&req.task_id).await;
                    return Outcome::Unavailable;
                }
            }
        }
        let role_id = match role_id {
            Some(id) => id,
            None => match self.vault.role_id(&role).await {
                Ok(Some(id)) => {
                    if let Some(id_app) = known.as_ref() {
                        if let Some(g) = lock(&self.inner).apps.get_mut(id_app) {
                            g.role_id = Some(id.clone());
                        }
                    }
                    id
                }
                Ok(None) | Err(_) => {
                    tracing::error!(role, "secret zero: cannot read the role id");
                    self.release(&req.task_id).await;
                    return Outcome::Unavailable;
                }
            },
        };
        // `decide` checked that `peer` is one of the task host's addresses: the secret id is
        // good from there only.
        let bind = peer.filter(|_| self.config.check_host);
        match self
            .vault
            .wrapped_secret_id(&role, &req.task_id, self.config.wrap_ttl, bind)
            .await
        {
            Ok(w) => Outcome::Granted {
                wrap_token: w.token.expose_secret().to_owned(),
                role_id,
            },
            Err(e) => {
                if matches!(
                    e,
                    crate::secret_zero::vault_admin::VaultAdminError::NotWrapped { .. }
                ) {
                    self.counters.not_wrapped.fetch_add(1, Ordering::Relaxed);
                }
                tracing::error!(error = %e, role, "secret zero: cannot mint a wrapped secret id");
                // Nothing reached the task: it may ask again.
                self.release(&req.task_id).await;
                Outcome::Unavailable
            }
        }
    }

    /// Forgets a reservation whose secret id was never handed out (here and, with HA, in
    /// ZooKeeper).
    async fn release(&self, task_id: &str) {
        if let Some(grants) = &self.grants {
            if let Err(e) = grants.release(task_id).await {
                tracing::warn!(error = %e, "cannot release the ZooKeeper claim (the task stays refused)");
            }
        }
        let generation = {
            let mut inner = lock(&self.inner);
            inner.served.served.remove(task_id);
            inner.generation += 1;
            inner.generation
        };
        if let Err(e) = self.persist(generation).await {
            tracing::warn!(error = %e, "cannot persist a released reservation (the task stays refused)");
        }
    }

    /// Makes sure generation `generation` (or later) is on disk. Whoever holds the writer lock
    /// writes the newest snapshot, so concurrent grants share one write.
    async fn persist(&self, generation: u64) -> Result<(), GateError> {
        let Some(dir) = &self.config.state_dir else {
            return Ok(());
        };
        let mut written = self.written.lock().await;
        if *written >= generation {
            return Ok(());
        }
        let (snapshot, g) = {
            let inner = lock(&self.inner);
            (inner.served.clone(), inner.generation)
        };
        let path = served_path(dir);
        tokio::task::spawn_blocking(move || save_served(&path, &snapshot))
            .await
            .map_err(|e| GateError::Io {
                path: served_path(dir),
                source: std::io::Error::other(e),
            })??;
        *written = g;
        Ok(())
    }
}

/// A running gatekeeper as `serve` and its loop see it (object safe, so neither needs to know
/// the gatekeeper's task lookup type).
pub trait ServedApps: Send + Sync {
    /// The repo's owner label and the apps to serve now (after each plan).
    fn serve_apps(&self, owner: &str, apps: BTreeMap<AppId, AppGate>);
    /// The route, to merge into `serve`'s router.
    fn routes(self: Arc<Self>) -> Router;
    /// The decision counters, Prometheus text.
    fn metrics(&self) -> String;
    /// The scheduler says this task ended (a terminal status event): sweep now if its token
    /// is recorded.
    fn task_ended(&self, task_id: &str);
    /// The lease sweep, until `stop` ([`Gatekeeper::sweep_loop`]).
    fn sweeper(
        self: Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
}

impl<T: TaskLookup> ServedApps for Gatekeeper<T> {
    fn serve_apps(&self, owner: &str, apps: BTreeMap<AppId, AppGate>) {
        lock(&self.inner).owner = Some(owner.to_owned());
        self.set_apps(apps);
    }
    fn routes(self: Arc<Self>) -> Router {
        router(self)
    }
    fn metrics(&self) -> String {
        self.counters.prometheus()
    }
    fn task_ended(&self, task_id: &str) {
        Gatekeeper::task_ended(self, task_id)
    }
    fn sweeper(
        self: Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.sweep_loop(stop))
    }
}

/// The axum route for `serve`: `POST /v1/secret-zero`. Serve with
/// `into_make_service_with_connect_info::<SocketAddr>()` so the peer address is known; without it
/// every request fails the host check (fail closed).
pub fn router<T: TaskLookup>(gk: Arc<Gatekeeper<T>>) -> Router {
    Router::new()
        .route(PATH, post(secret_zero::<T>))
        .route(sweep::ACCESSOR_PATH, post(sweep::report_accessor::<T>))
        .with_state(gk)
}

async fn secret_zero<T: TaskLookup>(
    State(gk): State<Arc<Gatekeeper<T>>>,
    request: Request,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let body = match axum::body::to_bytes(request.into_body(), 4096).await {
        Ok(b) => b,
        Err(_) => return denied(&gk, DenyReason::Malformed),
    };
    let req = match parse_request(&body) {
        Ok(r) => r,
        Err(reason) => return denied(&gk, reason),
    };
    // Run to completion even if the caller hangs up: a reservation whose mint failed must
    // always be released, and a hung-up caller must not leave one half done.
    let worker = gk.clone();
    let outcome = tokio::spawn(async move { worker.handle(&req, peer).await })
        .await
        .unwrap_or(Outcome::Unavailable);
    match outcome {
        Outcome::Granted {
            wrap_token,
            role_id,
        } => (
            StatusCode::OK,
            Json(json!({ "wrap_token": wrap_token, "role_id": role_id })),
        )
            .into_response(),
        // Rate limiting is the one refusal a legitimate caller must know about, to back off.
        Outcome::Denied(DenyReason::RateLimited) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "errors": ["slow down"] })),
        )
            .into_response(),
        Outcome::Denied(_) => forbidden(),
        Outcome::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            Json(json!({ "errors": ["unavailable"] })),
        )
            .into_response(),
        Outcome::NotReady => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, NOT_READY_RETRY_AFTER.to_string())],
            Json(json!({ "errors": ["not ready"] })),
        )
            .into_response(),
    }
}

fn denied<T>(gk: &Gatekeeper<T>, reason: DenyReason) -> Response {
    gk.counters.deny(reason);
    tracing::warn!(decision = "denied", reason = reason.as_str(), "secret zero");
    forbidden()
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({ "errors": ["permission denied"] })),
    )
        .into_response()
}

#[cfg(test)]
mod tests;
