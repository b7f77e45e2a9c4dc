//! The dev scheduler: a Marathon-compatible server that runs apps as local processes.
//!
//! `baton dev-scheduler --listen ADDR [--state-dir DIR]` and `baton dev` call [`run`]. Layout:
//! - [`api`]: the `/v2` HTTP endpoints (axum), Marathon's shapes, status codes and defaults; one
//!   module per resource (apps, tasks, deployments, groups, queue, info, events), the parsing of
//!   query strings, `embed`, label selectors and app paths pure in `api/query.rs`.
//! - [`store`]: apps, versions, service ports, the version clock.
//! - [`journal`]: `--state-dir` persistence: a change is on disk before it is acknowledged.
//! - [`deploy`]: deployments and the scheduling step (rolling upgrades, scaling, rollback).
//! - [`tasks`]: task processes: environment, launch, kill (SIGTERM, then SIGKILL), exits, backoff.
//! - [`session`]: a task's processes, all of its session, found through `/proc`; the
//!   [`TaskSessions`] handle a caller owns to kill them all when it cannot wait (a second Ctrl-C).
//! - [`leftovers`]: task processes of a run killed with `kill -9`, ended at the next start.
//! - [`health`]: HTTP, TCP and COMMAND health checks.
//! - [`events`]: the `/v2/events` SSE bus.
//! - [`validate`]: Marathon's 422 validation of submitted apps.
//!
//! Invariants: the [`store::World`] is behind one mutex that is never held across an `.await`;
//! only [`deploy::step`] decides launches; every child process is waited for by exactly one
//! future, and [`run`] returns only after every process of every task session is gone; with a
//! state dir, no write is answered with a 2xx before it is durable (`Shared::commit`). No state
//! is process-wide: two schedulers in one process (the tests run many) share nothing.

pub mod api;
pub mod deploy;
pub mod events;
pub mod health;
pub mod journal;
pub mod leftovers;
pub mod session;
pub mod store;
pub mod tasks;
pub mod validate;

pub use session::TaskSessions;

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
    /// Apps and their versions are kept here across restarts (`apps.json` and its journal), and
    /// the running tasks' processes (`tasks/`), so a restart ends those of a killed run; `None`:
    /// in memory.
    pub state_dir: Option<PathBuf>,
    /// The agent's host name: the tasks' `host` and `HOST`, and where health checks connect.
    pub hostname: String,
    /// Task sandboxes (working directory, `stdout`, `stderr`). `None`: `<state_dir>/sandboxes`,
    /// or without a state dir a temporary directory removed on shutdown.
    pub sandbox_dir: Option<PathBuf>,
    /// Where the running tasks' sessions are listed. The caller keeps a clone to kill them
    /// all when it cannot wait for [`run`] to return (a second Ctrl-C); by default a list of
    /// this scheduler's own that nobody else sees.
    pub sessions: TaskSessions,
}

impl Default for DevConfig {
    fn default() -> Self {
        DevConfig {
            state_dir: None,
            hostname: "127.0.0.1".to_string(),
            sandbox_dir: None,
            sessions: TaskSessions::default(),
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
    #[error("cannot make the change durable: {0}")]
    Commit(String),
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
    /// The state dir's journal; `None` without a state dir.
    journal: Option<Mutex<journal::Journal>>,
    /// Where running tasks are recorded (`<state dir>/tasks`); `None` without a state dir.
    pub(crate) task_records: Option<PathBuf>,
    /// `/proc` walks shared by tasks waiting for their sessions to end.
    pub(crate) scans: session::Scans,
}

impl Shared {
    /// The world, even if a panic elsewhere poisoned the lock (its data stays consistent:
    /// every critical section is a few assignments).
    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make every change of apps made so far durable (with a state dir; nothing to do
    /// without). A write is answered only once this has returned `Ok`: then it survives
    /// `kill -9`. Concurrent callers share one append and fsync. The file I/O runs on the
    /// blocking pool, never on the async workers.
    pub(crate) async fn commit(self: &Arc<Self>) -> Result<(), DevError> {
        if self.journal.is_none() {
            return Ok(());
        }
        let shared = self.clone();
        tokio::task::spawn_blocking(move || shared.commit_now())
            .await
            .unwrap_or_else(|e| {
                Err(DevError::Commit(format!(
                    "the writer stopped before finishing: {e}"
                )))
            })
    }

    fn commit_now(&self) -> Result<(), DevError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let mut journal = journal.lock().unwrap_or_else(|e| e.into_inner());
        journal.commit(&self.world)
    }
}

/// Serve the Marathon API on `listener` until `shutdown` is cancelled, then kill every task
/// (SIGTERM, SIGKILL after its grace period), wait for all of them and return.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: DevConfig,
    shutdown: CancellationToken,
) -> Result<(), DevError> {
    let (journal, apps) = match &config.state_dir {
        Some(dir) => {
            let (journal, apps) = journal::Journal::open(dir)?;
            // Before anything is launched: no process of a killed run runs beside new ones.
            let ended = leftovers::end_previous(&leftovers::dir(dir)).await;
            if ended > 0 {
                tracing::warn!(
                    processes = ended,
                    "dev scheduler: ended the task processes a previous run left behind"
                );
            }
            (Some(Mutex::new(journal)), apps)
        }
        None => (None, Default::default()),
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

    let mut world = World::with_apps(apps);
    world.journaling = journal.is_some();
    let task_records = config.state_dir.as_deref().map(leftovers::dir);
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
        journal,
        task_records,
        scans: Default::default(),
    });

    let scheduler = tokio::spawn(schedule_loop(shared.clone()));
    let app = api::router(shared.clone());
    // Bodies up to axum's default limit, the one its JSON extractors apply.
    let limits = baton_listen::Limits::from_rlimit(2 * 1024 * 1024);
    let stats = Arc::new(baton_listen::Stats::default());
    let served = baton_listen::serve(listener, app, limits, stats, shutdown.clone()).await;

    // Stop scheduling, then take every task down and wait for all of them.
    shared.shutdown.cancel();
    shared.wake.notify_one();
    let _ = scheduler.await;
    tasks::kill_all(&shared);
    shared.tracker.close();
    shared.tracker.wait().await;
    if let Err(e) = shared.commit().await {
        tracing::warn!(error = %baton_core::error_chain(&e), "dev scheduler: cannot write the state at shutdown");
    }
    if temporary {
        let _ = std::fs::remove_dir_all(&sandbox_root);
    }
    served.map_err(DevError::Serve)
}

/// The scheduling loop: one [`deploy::step`] per wake-up or tick, its decisions carried out.
/// It also retries a commit that failed (the API answered it with an error).
async fn schedule_loop(shared: Arc<Shared>) {
    let mut failing = false;
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
        match shared.commit().await {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %baton_core::error_chain(&e), "dev scheduler: cannot write the state; retrying");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Generous: the machine may be loaded.
    const DEADLINE: Duration = Duration::from_secs(60);

    /// Poll `done` until it holds, failing after [`DEADLINE`] with `what`.
    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn alive(pid: i32) -> bool {
        session::stat(pid).is_some_and(|p| !p.zombie)
    }

    struct Running {
        sessions: TaskSessions,
        stop: CancellationToken,
        server: tokio::task::JoinHandle<Result<(), DevError>>,
        pid: i32,
    }

    /// A dev scheduler with one task whose leader writes its pid into `pid_file`.
    async fn scheduler_with_a_task(pid_file: &std::path::Path) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let sessions = TaskSessions::default();
        let config = DevConfig {
            sessions: sessions.clone(),
            ..DevConfig::default()
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(run(listener, config, stop.clone()));
        let app = json!({
            "id": "/sleeper",
            "cmd": format!("echo $$ > {}; exec sleep 300", pid_file.display()),
            "cpus": 0.01,
            "mem": 16,
            "instances": 1,
        });
        let status = reqwest::Client::new()
            .post(format!("{url}/v2/apps"))
            .json(&app)
            .send()
            .await
            .expect("POST /v2/apps")
            .status();
        assert_eq!(status.as_u16(), 201);
        let read_pid = || {
            std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        };
        wait_until("the task to start", || {
            read_pid().is_some_and(alive) && sessions.len() == 1
        })
        .await;
        let pid = read_pid().expect("pid written");
        Running {
            sessions,
            stop,
            server,
            pid,
        }
    }

    /// What a second Ctrl-C does: kill one scheduler's task sessions through the handle its
    /// caller owns, and only that scheduler's (a process-wide list killed every scheduler's).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_sessions_handle_kills_its_own_schedulers_tasks_and_no_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = scheduler_with_a_task(&dir.path().join("a.pid")).await;
        let b = scheduler_with_a_task(&dir.path().join("b.pid")).await;
        assert_ne!(a.pid, b.pid);

        assert_eq!(a.sessions.kill_all(), 1);
        wait_until("a's task to die", || !alive(a.pid)).await;
        assert!(alive(b.pid), "b's task must survive a's kill_all");
        assert_eq!(b.sessions.len(), 1);

        for s in [a, b] {
            s.stop.cancel();
            tokio::time::timeout(DEADLINE, s.server)
                .await
                .expect("run returns after shutdown")
                .expect("join")
                .expect("run");
            assert!(!alive(s.pid));
            assert!(s.sessions.is_empty(), "{:?}", s.sessions);
        }
    }
}
