//! `baton serve` wiring: the source (git via gix, or a watched directory), the Marathon client,
//! the reconcile loop, the HTTP server, the scheduler event watcher and (with `--notify-*`) the
//! notification sender, under one shutdown tree.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apply::ApplyOptions;
use crate::config::ServeConfig;
use crate::daemon::reconcile::{self, LoopConfig, Shared, Trigger};
use crate::daemon::server::{self, AppState, HookSettings};
use crate::source::git::{GitConfig, GitSource};
use crate::source::watch::{self, DirSource};
use crate::source::{SourceError, SpecSource};
use baton_marathon::marathon::Marathon;

/// Why `serve` could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Scheduler(#[from] baton_marathon::SchedulerError),
    #[error(transparent)]
    State(#[from] crate::daemon::state::StateError),
    #[error("the HTTP server failed: {0}")]
    Http(#[source] std::io::Error),
    #[error("secret zero: {0}")]
    Vault(#[from] crate::secret_zero::vault_admin::VaultAdminError),
    #[error("secret zero: {0}")]
    Gate(#[from] crate::secret_zero::gatekeeper::GateError),
    #[error("cannot start the notifier: {0}")]
    Notify(#[source] reqwest::Error),
    #[error("cannot prepare the state directory {}", .path.display())]
    StateDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Whether `repo` names a git repository (URL, or a local path holding one) rather than a
/// plain directory.
pub fn is_git(repo: &str) -> bool {
    if repo.contains("://") {
        return true;
    }
    let p = Path::new(repo);
    if p.exists() {
        return p.join(".git").exists() || (p.join("HEAD").is_file() && p.join("objects").is_dir());
    }
    // scp-like `user@host:path`
    repo.contains('@') && repo.contains(':')
}

/// The rollout settings of `config`: command checks run in the repo of a directory source
/// (a git repo's checkout is a bare cache: they get a temp dir).
fn rollout_config(config: &ServeConfig, git: bool) -> crate::daemon::rollout::RolloutConfig {
    crate::daemon::rollout::RolloutConfig {
        stats: config.haproxy_stats.clone(),
        allow_check_commands: config.allow_check_commands,
        tick: config.rollout_tick,
        check_dir: (!git).then(|| std::path::PathBuf::from(&config.repo)),
        machine: Default::default(),
    }
}

/// Whether push webhooks are accepted: only for a git repo with a secret. A plain directory is
/// watched (no push can concern it); a git repo without a secret is polled. Said at start.
fn hook_settings(config: &ServeConfig, git: bool) -> HookSettings {
    match (git, &config.webhook_secret) {
        (true, Some(secret)) => HookSettings::On {
            secret: secret.clone(),
            followed_ref: config.reference.clone(),
        },
        (true, None) => {
            tracing::warn!(
                poll_interval = ?config.poll_interval,
                "no webhook secret (BATON_WEBHOOK_SECRET or --webhook-secret-file): webhooks are not accepted (POST /hooks/* answers 404); changes are found by polling"
            );
            HookSettings::Off {
                reason: "webhooks are off: baton serve has no webhook secret (BATON_WEBHOOK_SECRET or --webhook-secret-file); the repo is polled",
            }
        }
        (false, secret) => {
            tracing::info!(
                secret_unused = secret.is_some(),
                "webhooks are not served: the repo is a plain directory, watched for changes"
            );
            HookSettings::Off {
                reason:
                    "webhooks are not served: the repo is a plain directory, watched for changes",
            }
        }
    }
}

/// Run until `shutdown`: first cancellation stops new work; an apply in flight finishes its
/// writes (apply's own cancel rules), then everything drains.
pub async fn serve(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    // First: the git cache, the state and the gatekeeper's served set all go in here.
    crate::daemon::state_dir::prepare(&config.state_dir).map_err(|source| {
        ServeError::StateDir {
            path: config.state_dir.clone(),
            source,
        }
    })?;
    let marathon = Marathon::new(config.marathon.clone())?;
    // HA: the election runs from the start; until elected this replica only reads.
    let ha = (config.ha.clone()).map(|c| crate::ha::spawn(c, shutdown.child_token()));
    let leadership = ha.as_ref().map(|(h, _, _)| h.leadership.clone());
    let scheduler = Arc::new(crate::ha::Fenced::new(marathon.clone(), leadership));
    let loop_config = LoopConfig {
        sync: config.sync,
        poll_interval: config.poll_interval,
        state_dir: config.state_dir.clone(),
        allow_deletes: config.allow_deletes,
        apply: ApplyOptions {
            // Two full request timeouts without any answer: the scheduler is gone, not slow.
            scheduler_silence: config.marathon.timeout.saturating_mul(2),
            ..ApplyOptions::default()
        },
        secrets: secret_zero(&config, &listener, &marathon, ha.as_ref().map(|h| &h.0))?,
        notifier: None,
        rollout: rollout_config(&config, is_git(&config.repo)),
    };
    let tracker = TaskTracker::new();
    let mut _watch_guard = None;
    let git = is_git(&config.repo);
    let hooks = hook_settings(&config, git);
    let (shared, result) = if git {
        let mut source = GitSource::open(GitConfig {
            url: config.repo.clone(),
            reference: config.reference.clone(),
            cache_dir: config.cache_dir.clone(),
            auth: config.git_auth.clone(),
        })?;
        source.set_environment(config.environment.clone());
        let interrupt = source.interrupt_flag();
        let stop = shutdown.clone();
        tracker.spawn(async move {
            stop.cancelled().await;
            interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        start(
            source,
            scheduler,
            loop_config,
            &config,
            hooks,
            listener,
            &shutdown,
            &tracker,
            marathon,
        )
    } else {
        let root = std::path::PathBuf::from(&config.repo);
        let source = DirSource::new(root.clone()).with_environment(config.environment.clone());
        let (shared, rx) = Shared::new(source.describe(), config.sync);
        let s = shared.clone();
        _watch_guard = Some(watch::watch(
            &root,
            Duration::from_millis(200),
            move || s.trigger(Trigger::FileChange),
        )?);
        start_with(
            source,
            scheduler,
            loop_config,
            &config,
            hooks,
            listener,
            &shutdown,
            &tracker,
            marathon,
            shared,
            rx,
        )
    };
    if let Some((handle, events, task)) = ha {
        crate::daemon::ha_wiring::wire(&shared, handle, events, task, &tracker, &shutdown);
    }
    let loop_result = result.await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    drop(shared);
    loop_result
}

type Running = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ServeError>> + Send>>;

#[allow(clippy::too_many_arguments)]
fn start<Src: SpecSource>(
    source: Src,
    scheduler: Arc<crate::ha::Fenced<Marathon>>,
    loop_config: LoopConfig,
    config: &ServeConfig,
    hooks: HookSettings,
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    marathon: Marathon,
) -> (Arc<Shared>, Running) {
    let (shared, rx) = Shared::new(source.describe(), config.sync);
    start_with(
        source,
        scheduler,
        loop_config,
        config,
        hooks,
        listener,
        shutdown,
        tracker,
        marathon,
        shared,
        rx,
    )
}

#[allow(clippy::too_many_arguments)]
fn start_with<Src: SpecSource>(
    source: Src,
    scheduler: Arc<crate::ha::Fenced<Marathon>>,
    loop_config: LoopConfig,
    config: &ServeConfig,
    hooks: HookSettings,
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    marathon: Marathon,
    shared: Arc<Shared>,
    rx: tokio::sync::mpsc::Receiver<Trigger>,
) -> (Arc<Shared>, Running) {
    let mut loop_config = loop_config;
    if !config.notify.is_empty() {
        let settings = crate::daemon::notifications::NotifierConfig {
            sinks: config.notify.clone(),
            environment: config.environment.clone(),
            ..Default::default()
        };
        let metrics = shared.dashboard.metrics.clone();
        match crate::daemon::notifications::spawn(settings, metrics, shutdown.child_token()) {
            Ok((notifier, task)) => {
                tracker.spawn(async move {
                    let _ = task.await;
                });
                loop_config.notifier = Some(notifier);
            }
            Err(e) => return (shared, Box::pin(async move { Err(ServeError::Notify(e)) })),
        }
    }
    if let Ok(mut status) = shared.status.write() {
        status.environment = config.environment.clone();
    }
    let git = is_git(&config.repo);
    shared.set_origin(config.repo.clone(), git.then(|| config.reference.clone()));
    let state = AppState::new(shared.clone(), hooks)
        .with_api_token(config.api_token.clone())
        .with_proxy_header(config.auth_proxy_header.clone());
    if let Some(h) = &config.auth_proxy_header {
        tracing::warn!(header = %h, "status page: the header {h} is trusted to name a logged-in user; only safe behind a proxy that sets it and strips it from clients");
    }
    let http_stop = shutdown.clone();
    let mut routes = server::router(state);
    if let Some(gate) = loop_config.secrets.as_ref().and_then(|s| s.gate.clone()) {
        let g = gate.clone();
        (shared.dashboard).add_metrics_source(crate::daemon::dashboard::MetricsSource(Arc::new(
            move || g.metrics(),
        )));
        routes = routes.merge(gate.clone().routes());
        tracker.spawn(gate.clone().sweeper(shutdown.child_token()));
        // Terminal task events wake the sweep at once (the periodic pass is the safety net).
        let (events, stop) = (marathon.clone(), shutdown.child_token());
        tracker.spawn(async move {
            crate::daemon::attribution_feed::follow_events(
                &events,
                &stop,
                "event_type=status_update_event",
                |raw| {
                    let data = serde_json::from_str::<serde_json::Value>(&raw.data);
                    if let Some(task) = data
                        .as_ref()
                        .ok()
                        .and_then(crate::secret_zero::gatekeeper::sweep::ended_task)
                    {
                        gate.task_ended(task);
                    }
                },
            )
            .await
        });
    }
    let connections = Arc::new(baton_listen::Stats::default());
    let c = connections.clone();
    (shared.dashboard).add_metrics_source(crate::daemon::dashboard::MetricsSource(Arc::new(
        move || c.prometheus(),
    )));
    let http = tracker.spawn(server::run_router(
        listener,
        routes,
        server::limits(),
        connections,
        http_stop,
    ));
    tracker.spawn(reconcile::watch_scheduler_events(
        marathon,
        shared.clone(),
        shutdown.child_token(),
    ));
    let loop_shared = shared.clone();
    let stop = shutdown.clone();
    let fut = async move {
        let r = reconcile::run(
            source,
            scheduler,
            loop_config,
            loop_shared,
            rx,
            stop.clone(),
        )
        .await;
        stop.cancel();
        let served = http.await;
        r?;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Http(e)),
            Err(e) => Err(ServeError::Http(std::io::Error::other(e.to_string()))),
        }
    };
    (shared, Box::pin(fut))
}

/// Secret zero, when Vault is configured: the admin client, the gatekeeper (served set in the
/// state dir) and the bootstrap settings the loop injects into app envs.
fn secret_zero(
    config: &ServeConfig,
    listener: &tokio::net::TcpListener,
    marathon: &Marathon,
    ha: Option<&crate::ha::Handle>,
) -> Result<Option<crate::secret_zero::wiring::SecretsWiring>, ServeError> {
    use crate::secret_zero::gatekeeper::{self, GateConfig, Gatekeeper, SchedulerTasks};
    use crate::secret_zero::vault_admin::{VaultAdmin, VaultAdminConfig};
    use crate::secret_zero::wiring::SecretsWiring;
    let Some(v) = &config.vault else {
        return Ok(None);
    };
    let admin = VaultAdmin::new(VaultAdminConfig {
        addr: v.addr.clone(),
        token: v.token.clone(),
        approle_mount: v.approle_mount.clone(),
        timeout: Duration::from_secs(30),
    })?;
    let admin = match ha {
        Some(h) => admin.with_fence(h.leadership.clone()),
        None => admin,
    };
    let gatekeeper_url = match &v.gatekeeper_url {
        Some(u) => u.clone(),
        None => {
            let addr = listener.local_addr().map_err(ServeError::Http)?;
            format!("http://{addr}{}", gatekeeper::PATH)
        }
    };
    let gk = Gatekeeper::new(
        SchedulerTasks::new(marathon.clone()),
        admin.clone(),
        GateConfig {
            max_age: v.task_max_age,
            check_host: v.host_check,
            wrap_ttl: v.wrap_ttl,
            state_dir: Some(config.state_dir.clone()),
            ..GateConfig::default()
        },
        gatekeeper::system_clock(),
    )?;
    let gk = match ha {
        Some(h) => gk.with_grants(crate::ha::grants::Grants::new(h.clone())),
        None => gk,
    };
    let allowed: Vec<&str> = v.allowed_policies.names().collect();
    tracing::info!(vault = %v.addr, gatekeeper = %gatekeeper_url, host_check = v.host_check, allowed_policies = %allowed.join(","), "secret zero enabled");
    Ok(Some(SecretsWiring {
        allowed: v.allowed_policies.clone(),
        admin,
        boot: baton_core::secrets::Bootstrap {
            vault_addr: v.addr.clone(),
            gatekeeper_url,
            approle_mount: v.approle_mount.clone(),
        },
        gate: Some(Arc::new(gk)),
    }))
}
