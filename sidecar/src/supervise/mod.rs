//! `--mode supervise`: run the app as our child and stay around as its PID 1.
//!
//! One event loop (tini's shape): forwarded signals go to the child's process group;
//! SIGCHLD reaps every zombie with `waitpid(-1, WNOHANG)` and notices the child's exit;
//! the renewal task reports credentials that are about to die, a fetch task gets new
//! ones, and `--on-rotate` decides how the app picks them up. On exit, the leases and
//! the token are revoked and the env file removed.

pub mod process;
pub mod renew;
pub mod schedule;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

use crate::env::ChildEnv;
use crate::error::Error;
use crate::secret::Secret;
use crate::vault::{truncate_id, Lease, VaultApi};
use process::{reap_all, signal_group, spawn, FORWARDED};
use renew::{Credentials, RenewEvent};

/// How the app learns about rotated credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRotate {
    /// Stop the child gracefully (SIGTERM, SIGKILL after the grace period), start a new
    /// one with the new environment.
    Restart,
    /// Rewrite the env file and send this signal (needs `--env-file`).
    Signal(Signal),
    /// Stop the child and exit with [`crate::error::exit::TEMPFAIL`] so the scheduler
    /// starts a fresh task.
    Exit,
}

/// One set of credentials and the environment rendered from them.
#[derive(Debug)]
pub struct Generation {
    pub token: Arc<Secret>,
    /// Token TTL at issue (zero = never expires); `None` when the token is the previous
    /// generation's, whose renewal state carries over.
    pub token_ttl: Option<Duration>,
    pub token_renewable: bool,
    /// Whether baton-env obtained this token (and so revokes it on exit).
    pub token_owned: bool,
    pub leases: Vec<Lease>,
    pub env: ChildEnv,
}

impl Generation {
    fn credentials(&self) -> Credentials {
        Credentials {
            token: self.token.clone(),
            token_ttl: self.token_ttl,
            token_renewable: self.token_renewable,
            leases: self.leases.clone(),
        }
    }
}

/// Fetches a new generation: optionally logging in again first.
pub trait Fetch: Send + Sync + 'static {
    type Api: VaultApi + 'static;
    fn api(&self) -> Arc<Self::Api>;
    fn fetch(
        &self,
        relogin: bool,
        token: Arc<Secret>,
    ) -> impl std::future::Future<Output = Result<Generation, Error>> + Send;
}

/// Settings of the supervisor.
#[derive(Debug, Clone)]
pub struct Settings {
    pub argv: Vec<OsString>,
    pub on_rotate: OnRotate,
    pub grace: Duration,
    pub env_file: Option<PathBuf>,
    /// Revoke leases (and tokens we obtained) on exit.
    pub revoke: bool,
}

/// Why the child is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Shutdown,
    Restart,
    RotateExit,
}

/// Supervises the child until it exits; returns the code baton-env should exit with.
/// `first` is `None` when no secrets are involved (a plain PID-1 supervisor).
pub async fn run<F: Fetch>(
    settings: Settings,
    source: Option<Arc<F>>,
    first: Option<Generation>,
    plain_env: ChildEnv,
) -> Result<i32, Error> {
    // Handlers before the child exists, so no early SIGCHLD or SIGTERM is lost.
    let (sig_tx, mut sig_rx) = mpsc::channel::<Signal>(64);
    for sig in FORWARDED.into_iter().chain([Signal::SIGCHLD]) {
        let mut stream = signal(SignalKind::from_raw(sig as i32)).map_err(Error::Signals)?;
        let tx = sig_tx.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if tx.send(sig).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(sig_tx);
    process::become_subreaper();

    let mut current = first;
    let env = current.as_ref().map_or(&plain_env, |g| &g.env);
    if let Some(path) = &settings.env_file {
        crate::write_env_file(path, &env.file_vars)?;
    }
    let mut child = Some(spawn_child(&settings.argv, env)?);
    tracing::info!(pid = child.map(Pid::as_raw), "child started");

    let (replace_tx, replace_rx) = mpsc::channel::<Credentials>(1);
    let (event_tx, mut event_rx) = mpsc::channel::<RenewEvent>(8);
    if let (Some(g), Some(source)) = (&current, &source) {
        tokio::spawn(renew::run(
            source.api(),
            g.credentials(),
            replace_rx,
            event_tx,
        ));
    } else {
        drop(event_tx);
    }
    let (fetch_tx, mut fetch_rx) = mpsc::channel::<Result<Generation, Error>>(1);

    let mut stopping: Option<Stop> = None;
    let mut kill_at: Option<Instant> = None;
    let mut refetch_at: Option<Instant> = None;
    let mut fetching = false;
    let mut relogin = false;
    let mut pending: Option<Generation> = None;
    let far = || Instant::now() + Duration::from_secs(86_400 * 365);

    let outcome = loop {
        tokio::select! {
            Some(sig) = sig_rx.recv() => {
                if sig != Signal::SIGCHLD {
                    if let Some(pid) = child {
                        tracing::debug!(signal = %sig, "forwarding");
                        signal_group(pid, sig);
                    }
                    if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
                        stopping = Some(Stop::Shutdown);
                        kill_at.get_or_insert_with(|| Instant::now() + settings.grace);
                    }
                    continue;
                }
                let Some(code) = reap_all(child) else { continue };
                tracing::info!(code, "child exited");
                kill_at = None;
                match stopping.take() {
                    Some(Stop::Restart) => {
                        let Some(next) = pending.take() else { break Ok(code) };
                        if let Some(path) = &settings.env_file {
                            crate::write_env_file(path, &next.env.file_vars)?;
                        }
                        let pid = spawn_child(&settings.argv, &next.env)?;
                        tracing::info!(pid = pid.as_raw(), "child restarted with rotated credentials");
                        child = Some(pid);
                        let _ = replace_tx.send(next.credentials()).await;
                        if let Some(old) = current.replace(next) {
                            revoke_old(&source, old, current.as_ref(), settings.revoke).await;
                        }
                    }
                    Some(Stop::RotateExit) => break Err(Error::RotateExit),
                    Some(Stop::Shutdown) | None => break Ok(code),
                }
            }
            Some(event) = event_rx.recv() => {
                relogin |= event == RenewEvent::TokenEnding;
                if !fetching && stopping.is_none() && refetch_at.is_none() {
                    fetching = true;
                    start_fetch(&source, &current, relogin, &fetch_tx);
                }
            }
            Some(result) = fetch_rx.recv() => {
                fetching = false;
                match result {
                    Err(e) => {
                        // Without a way to log in again, retrying cannot help: stop the
                        // child gracefully and exit 75 so the scheduler starts a fresh task.
                        let fatal = matches!(e, Error::CredentialsExpired)
                            || matches!(&e, Error::Auth(a) if !a.is_unavailable());
                        if fatal {
                            tracing::error!(error = %crate::chain(&e), "credentials cannot be replaced; stopping");
                            if let Some(pid) = child {
                                stopping = Some(Stop::RotateExit);
                                signal_group(pid, Signal::SIGTERM);
                                kill_at = Some(Instant::now() + settings.grace);
                            } else {
                                break Err(Error::CredentialsExpired);
                            }
                        } else {
                            tracing::error!(error = %crate::chain(&e), "fetching rotated credentials failed; retrying in 5 s");
                            refetch_at = Some(Instant::now() + schedule::RETRY_AFTER);
                        }
                    }
                    Ok(next) => {
                        relogin = false;
                        let Some(pid) = child else { continue };
                        match settings.on_rotate {
                            OnRotate::Restart => {
                                pending = Some(next);
                                stopping = Some(Stop::Restart);
                                signal_group(pid, Signal::SIGTERM);
                                kill_at = Some(Instant::now() + settings.grace);
                            }
                            OnRotate::Signal(sig) => {
                                if let Some(path) = &settings.env_file {
                                    crate::write_env_file(path, &next.env.file_vars)?;
                                }
                                signal_group(pid, sig);
                                let _ = replace_tx.send(next.credentials()).await;
                                if let Some(old) = current.replace(next) {
                                    // Give the app the grace period to switch over.
                                    let source = source.clone();
                                    let keep = current.as_ref().map(|g| g.token.clone());
                                    let (revoke, grace) = (settings.revoke, settings.grace);
                                    tokio::spawn(async move {
                                        tokio::time::sleep(grace).await;
                                        revoke_generation(&source, old, keep.as_deref(), revoke).await;
                                    });
                                }
                            }
                            OnRotate::Exit => {
                                pending = Some(next);
                                stopping = Some(Stop::RotateExit);
                                signal_group(pid, Signal::SIGTERM);
                                kill_at = Some(Instant::now() + settings.grace);
                            }
                        }
                    }
                }
            }
            _ = sleep_until(kill_at.unwrap_or_else(far)), if kill_at.is_some() => {
                kill_at = None;
                if let Some(pid) = child {
                    tracing::warn!(grace_s = settings.grace.as_secs_f32(), "child did not exit within the grace period; sending SIGKILL");
                    signal_group(pid, Signal::SIGKILL);
                }
            }
            _ = sleep_until(refetch_at.unwrap_or_else(far)), if refetch_at.is_some() => {
                refetch_at = None;
                if !fetching && stopping.is_none() {
                    fetching = true;
                    start_fetch(&source, &current, relogin, &fetch_tx);
                }
            }
        }
    };

    drop(replace_tx);
    if let Some(g) = pending.take() {
        revoke_generation(&source, g, None, settings.revoke).await;
    }
    if let Some(g) = current.take() {
        revoke_generation(&source, g, None, settings.revoke).await;
    }
    if let Some(path) = &settings.env_file {
        let _ = std::fs::remove_file(path);
    }
    outcome
}

fn spawn_child(argv: &[OsString], env: &ChildEnv) -> Result<Pid, Error> {
    spawn(argv, env).map_err(|source| Error::Spawn {
        program: argv[0].to_string_lossy().into_owned(),
        source,
    })
}

fn start_fetch<F: Fetch>(
    source: &Option<Arc<F>>,
    current: &Option<Generation>,
    relogin: bool,
    tx: &mpsc::Sender<Result<Generation, Error>>,
) {
    let (Some(token), Some(source)) = (current.as_ref().map(|g| g.token.clone()), source.clone())
    else {
        return;
    };
    let tx = tx.clone();
    tokio::spawn(async move {
        let result = source.fetch(relogin, token).await;
        let _ = tx.send(result).await;
    });
}

/// Revokes what `old` holds that `new` does not share (a relogin changes the token).
async fn revoke_old<F: Fetch>(
    source: &Option<Arc<F>>,
    old: Generation,
    new: Option<&Generation>,
    revoke: bool,
) {
    let keep = new.map(|g| g.token.clone());
    revoke_generation(source, old, keep.as_deref(), revoke).await;
}

/// Best effort, bounded: revocation must not keep a stopping container alive.
async fn revoke_generation<F: Fetch>(
    source: &Option<Arc<F>>,
    g: Generation,
    keep_token: Option<&Secret>,
    revoke: bool,
) {
    let Some(source) = source.as_ref().filter(|_| revoke) else {
        return;
    };
    let api = source.api();
    let work = async {
        for lease in &g.leases {
            match api.revoke_lease(&g.token, &lease.id).await {
                Ok(()) => tracing::info!(lease = %truncate_id(&lease.id), "revoked lease"),
                Err(e) => {
                    tracing::warn!(lease = %truncate_id(&lease.id), error = %e, "lease revocation failed")
                }
            }
        }
        let shared = keep_token.is_some_and(|k| k.expose() == g.token.expose());
        if g.token_owned && !shared {
            match api.revoke_self(&g.token).await {
                Ok(()) => tracing::info!("revoked token"),
                Err(e) => tracing::warn!(error = %e, "token revocation failed"),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .is_err()
    {
        tracing::warn!("revocation timed out");
    }
}
