//! The dev scheduler: a Marathon-compatible server that runs apps as local processes.
//!
//! `baton dev-scheduler --listen ADDR [--state-dir DIR]` and `baton dev` call [`run`]. Layout:
//! - [`api`]: the `/v2` HTTP endpoints (axum), Marathon's shapes, status codes and defaults.
//! - [`store`]: apps, versions, service ports, the version clock, `--state-dir` persistence.
//! - [`deploy`]: deployments and the scheduling step (rolling upgrades, scaling, rollback).
//! - [`tasks`]: task processes: environment, launch, kill (SIGTERM, then SIGKILL), exits, backoff.
//! - [`health`]: HTTP, TCP and COMMAND health checks.
//! - [`events`]: the `/v2/events` SSE bus.
//! - [`validate`]: Marathon's 422 validation of submitted apps.
//!
//! Invariants: the [`store::World`] is behind one mutex that is never held across an `.await`;
//! only [`deploy::step`] decides launches; every child process is waited for by exactly one
//! future, and [`run`] returns only after every task process group is gone.

pub mod api;
pub mod deploy;
pub mod events;
pub mod health;
pub mod store;
pub mod tasks;
pub mod validate;

pub use tasks::kill_all_task_groups;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use events::EventBus;
use store::World;

/// How often the scheduler looks at the world when nothing wakes it (backoff expiry, timers).
const TICK: Duration = Duration::from_millis(200);

/// Settings of a dev scheduler.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// Apps and their versions are kept here (`apps.json`) across restarts; `None`: in memory.
    pub state_dir: Option<PathBuf>,
    /// The agent's host name: the tasks' `host` and `HOST`, and where health checks connect.
    pub hostname: String,
    /// Task sandboxes (working directory, `stdout`, `stderr`). `None`: `<state_dir>/sandboxes`,
    /// or without a state dir a temporary directory removed on shutdown.
    pub sandbox_dir: Option<PathBuf>,
}

impl Default for DevConfig {
    fn default() -> Self {
        DevConfig {
            state_dir: None,
            hostname: "127.0.0.1".to_string(),
            sandbox_dir: None,
        }
    }
}

/// What can stop the dev scheduler.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot read or write the state at {path}")]
    State {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state file {path} is not valid: {message}")]
    StateFormat { path: PathBuf, message: String },
    #[error("cannot create the sandbox directory {path}")]
    Sandbox {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the health check HTTP client")]
    HttpClient(#[source] reqwest::Error),
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// State shared by the API, the scheduling loop, task runners and health checkers.
pub struct Shared {
    world: Mutex<World>,
    pub(crate) bus: EventBus,
    pub(crate) config: DevConfig,
    /// Wakes the scheduling loop after a change.
    pub(crate) wake: Notify,
    /// Task runners, kill timers and health checkers: waited for on shutdown.
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the scheduler stops: no new launches, checkers end.
    pub(crate) shutdown: CancellationToken,
    /// The caller's token: ends SSE streams so the HTTP server can drain.
    pub(crate) http_stop: CancellationToken,
    pub(crate) http: reqwest::Client,
    pub(crate) sandbox_root: PathBuf,
    /// API requests served, by method and route (`GET /baton-dev/requests`, for benchmarks).
    pub(crate) requests: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Shared {
    /// The world, even if a panic elsewhere poisoned the lock (its data stays consistent:
    /// every critical section is a few assignments).
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serve the Marathon API on `listener` until `shutdown` is cancelled, then kill every task
/// (SIGTERM, SIGKILL after its grace period), wait for all of them and return.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: DevConfig,
    shutdown: CancellationToken,
) -> Result<(), DevError> {
    let apps = match &config.state_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|source| DevError::State {
                path: dir.clone(),
                source,
            })?;
            store::load(dir)?
        }
        None => Default::default(),
    };
    let (sandbox_root, temporary) = match (&config.sandbox_dir, &config.state_dir) {
        (Some(d), _) => (d.clone(), false),
        (None, Some(s)) => (s.join("sandboxes"), false),
        (None, None) => (
            std::env::temp_dir().join(format!(
                "baton-dev-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            )),
            true,
        ),
    };
    std::fs::create_dir_all(&sandbox_root).map_err(|source| DevError::Sandbox {
        path: sandbox_root.clone(),
        source,
    })?;
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(DevError::HttpClient)?;

    let world = World::with_apps(apps);
    let shared = Arc::new(Shared {
        world: Mutex::new(world),
        bus: EventBus::default(),
        config,
        wake: Notify::new(),
        tracker: TaskTracker::new(),
        shutdown: CancellationToken::new(),
        http_stop: shutdown.clone(),
        http,
        sandbox_root: sandbox_root.clone(),
        requests: Default::default(),
    });

    let scheduler = tokio::spawn(schedule_loop(shared.clone()));
    let app = api::router(shared.clone());
    // Bodies up to axum's default limit, the one its JSON extractors apply.
    let limits = crate::listen::Limits::from_rlimit(2 * 1024 * 1024);
    let stats = Arc::new(crate::listen::Stats::default());
    let served = crate::listen::serve(listener, app, limits, stats, shutdown.clone()).await;

    // Stop scheduling, then take every task down and wait for all of them.
    shared.shutdown.cancel();
    shared.wake.notify_one();
    let _ = scheduler.await;
    tasks::kill_all(&shared);
    shared.tracker.close();
    shared.tracker.wait().await;
    persist(&shared);
    if temporary {
        let _ = std::fs::remove_dir_all(&sandbox_root);
    }
    served.map_err(DevError::Serve)
}

/// The scheduling loop: one [`deploy::step`] per wake-up or tick, its decisions carried out, the
/// state file written when apps changed.
async fn schedule_loop(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        let decisions = {
            let mut world = shared.lock();
            deploy::step(&mut world, &shared.bus, Instant::now())
        };
        tasks::execute(&shared, decisions);
        persist(&shared);
    }
}

/// Write the state file if apps changed since the last write. A failed write is logged and
/// retried on the next change: the running scheduler stays correct, only a restart would lose it.
fn persist(shared: &Shared) {
    let Some(dir) = &shared.config.state_dir else {
        return;
    };
    let snapshot = {
        let mut world = shared.lock();
        if !world.dirty {
            return;
        }
        world.dirty = false;
        store::snapshot(&world.apps)
    };
    if let Err(e) = store::save(dir, &snapshot) {
        tracing::warn!(error = %e, "dev scheduler: cannot write the state file");
        shared.lock().dirty = true;
    }
}
