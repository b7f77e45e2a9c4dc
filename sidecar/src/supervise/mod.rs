//! `--mode supervise`: run the app as our child and stay around as its PID 1.
//!
//! One event loop (tini's shape): forwarded signals go to the child's process group;
//! SIGCHLD reaps every zombie with `waitpid(-1, WNOHANG)` and notices the child's exit;
//! the renewal task reports credentials that are about to die, a fetch task gets new
//! ones, and `--on-rotate` decides how the app picks them up.
//!
//! Every way out of [`run`] (the child's exit, a signal, a spawn or env-file failure)
//! goes through one shutdown path: the child, if any, is stopped (SIGTERM, SIGKILL after
//! the grace period) and reaped, every generation of credentials obtained (current,
//! pending, retired, or fetched while stopping) is revoked, and the env file removed.
//!
//! Revocation goes by token where it can: revoking a token revokes every lease it
//! created, and Baton's generated policies grant no `sys/leases/revoke`. Leases are revoked
//! one by one only under a token baton-env does not own (a given `VAULT_TOKEN`).

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

/// Fetches a new generation of credentials.
pub trait Fetch: Send + Sync + 'static {
    type Api: VaultApi + 'static;
    fn api(&self) -> Arc<Self::Api>;
    /// New credentials to replace those of `token`'s generation. `token_ending`: `token`
    /// is about to die, so a new login is required. Otherwise a new login is made when
    /// the method allows one (each generation then owns its token, and the old one is
    /// retired by revoking its token), else `token` is used again.
    fn fetch(
        &self,
        token_ending: bool,
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

/// Bound on revocation (and on waiting for a fetch in flight) when stopping: it must not
/// keep a stopping container alive.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the child is being stopped.
#[derive(Debug)]
enum Stop {
    /// A signal asked us to stop: exit with the child's code.
    Shutdown,
    /// Rotated credentials are pending: start a new child with them.
    Restart,
    /// Exit with this error once the child is gone (`--on-rotate exit`, credentials
    /// that cannot be replaced, an env file that cannot be rewritten).
    Fail(Error),
}

impl Stop {
    /// Shutdown and Fail are final: nothing that happens afterwards changes them.
    fn is_final(stopping: &Option<Stop>) -> bool {
        matches!(stopping, Some(Stop::Shutdown | Stop::Fail(_)))
    }
}

/// Supervises the child until it exits; returns the code baton-env should exit with.
/// `first` is `None` when no secrets are involved (a plain PID-1 supervisor).
pub async fn run<F: Fetch>(
    settings: Settings,
    source: Option<Arc<F>>,
    first: Option<Generation>,
    plain_env: ChildEnv,
) -> Result<i32, Error> {
    let (fetch_tx, fetch_rx) = mpsc::channel::<Result<Generation, Error>>(1);
    let mut sup = Supervisor {
        settings,
        source,
        current: first,
        pending: None,
        retiring: Vec::new(),
        spent: Vec::new(),
        fetch_tx,
        fetch_rx,
        fetching: false,
    };
    let outcome = sup.supervise(&plain_env).await;
    sup.finish().await;
    outcome
}

/// The supervisor's state: every generation it holds, so that [`Supervisor::finish`]
/// can revoke all of them whichever way the loop ended.
struct Supervisor<F> {
    settings: Settings,
    source: Option<Arc<F>>,
    /// The generation the running child uses.
    current: Option<Generation>,
    /// Fetched for a restart, not in use yet.
    pending: Option<Generation>,
    /// Replaced under `--on-rotate signal:*`: revoked once the app had the grace period
    /// to switch over.
    retiring: Vec<(Instant, Generation)>,
    /// Never used (fetched while stopping, or left over by a failed restart).
    spent: Vec<Generation>,
    fetch_tx: mpsc::Sender<Result<Generation, Error>>,
    fetch_rx: mpsc::Receiver<Result<Generation, Error>>,
    /// A fetch task is running.
    fetching: bool,
}

impl<F: Fetch> Supervisor<F> {
    /// The event loop. May return early (with `?`) only while no child is running.
    async fn supervise(&mut self, plain_env: &ChildEnv) -> Result<i32, Error> {
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

        let env = self.current.as_ref().map_or(plain_env, |g| &g.env);
        if let Some(path) = &self.settings.env_file {
            crate::write_env_file(path, &env.file_vars)?;
        }
        let mut child = Some(spawn_child(&self.settings.argv, env)?);
        tracing::info!(pid = child.map(Pid::as_raw), "child started");

        let (replace_tx, replace_rx) = mpsc::channel::<Credentials>(1);
        let (event_tx, mut event_rx) = mpsc::channel::<RenewEvent>(8);
        if let (Some(g), Some(source)) = (&self.current, &self.source) {
            tokio::spawn(renew::run(
                source.api(),
                g.credentials(),
                replace_rx,
                event_tx,
            ));
        } else {
            drop(event_tx);
        }

        let grace = self.settings.grace;
        let mut stopping: Option<Stop> = None;
        let mut kill_at: Option<Instant> = None;
        let mut refetch_at: Option<Instant> = None;
        let mut relogin = false;
        let far = || Instant::now() + Duration::from_secs(86_400 * 365);
        // SIGTERM now, SIGKILL after the grace period (or earlier, if already due).
        let terminate = |pid: Pid, kill_at: &mut Option<Instant>| {
            signal_group(pid, Signal::SIGTERM);
            let at = Instant::now() + grace;
            *kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
        };

        loop {
            let next_retire = self.retiring.iter().map(|(at, _)| *at).min();
            tokio::select! {
                Some(sig) = sig_rx.recv() => {
                    if sig != Signal::SIGCHLD {
                        if let Some(pid) = child {
                            tracing::debug!(signal = %sig, "forwarding");
                            signal_group(pid, sig);
                        }
                        if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
                            if !Stop::is_final(&stopping) {
                                stopping = Some(Stop::Shutdown);
                            }
                            kill_at.get_or_insert_with(|| Instant::now() + grace);
                        }
                        continue;
                    }
                    let Some(code) = reap_all(child) else { continue };
                    tracing::info!(code, "child exited");
                    kill_at = None;
                    match stopping.take() {
                        Some(Stop::Restart) => {
                            let Some(next) = self.pending.take() else { return Ok(code) };
                            if let Some(path) = &self.settings.env_file {
                                if let Err(e) = crate::write_env_file(path, &next.env.file_vars) {
                                    self.spent.push(next);
                                    return Err(e);
                                }
                            }
                            let pid = match spawn_child(&self.settings.argv, &next.env) {
                                Ok(pid) => pid,
                                Err(e) => {
                                    self.spent.push(next);
                                    return Err(e);
                                }
                            };
                            tracing::info!(pid = pid.as_raw(), "child restarted with rotated credentials");
                            child = Some(pid);
                            let _ = replace_tx.send(next.credentials()).await;
                            if let Some(old) = self.current.replace(next) {
                                self.retire(vec![old]).await;
                            }
                        }
                        Some(Stop::Fail(e)) => return Err(e),
                        Some(Stop::Shutdown) | None => return Ok(code),
                    }
                }
                Some(event) = event_rx.recv() => {
                    relogin |= event == RenewEvent::TokenEnding;
                    if !self.fetching && stopping.is_none() && refetch_at.is_none() {
                        self.start_fetch(relogin);
                    }
                }
                Some(result) = self.fetch_rx.recv() => {
                    self.fetching = false;
                    tracing::debug!(ok = result.is_ok(), "rotation fetch finished");
                    if Stop::is_final(&stopping) {
                        // Stopping for good: the new credentials will never be used.
                        match result {
                            Ok(next) => {
                                tracing::info!("credentials fetched while stopping; revoking them");
                                self.spent.push(next);
                            }
                            Err(e) => tracing::debug!(error = %crate::chain(&e), "fetch failed while stopping"),
                        }
                        continue;
                    }
                    let next = match result {
                        Ok(next) => next,
                        Err(e) => {
                            // Without a way to log in again, retrying cannot help: stop the
                            // child gracefully and exit 75 so the scheduler starts a fresh task.
                            let fatal = matches!(e, Error::CredentialsExpired)
                                || matches!(&e, Error::Auth(a) if !a.is_unavailable());
                            if fatal {
                                tracing::error!(error = %crate::chain(&e), "credentials cannot be replaced; stopping");
                                let Some(pid) = child else { return Err(Error::CredentialsExpired) };
                                stopping = Some(Stop::Fail(Error::CredentialsExpired));
                                terminate(pid, &mut kill_at);
                            } else {
                                tracing::error!(error = %crate::chain(&e), "fetching rotated credentials failed; retrying in 5 s");
                                refetch_at = Some(Instant::now() + schedule::RETRY_AFTER);
                            }
                            continue;
                        }
                    };
                    relogin = false;
                    let Some(pid) = child else {
                        self.spent.push(next);
                        continue;
                    };
                    match self.settings.on_rotate {
                        OnRotate::Restart => {
                            if let Some(old) = self.pending.replace(next) {
                                self.spent.push(old);
                            }
                            stopping = Some(Stop::Restart);
                            terminate(pid, &mut kill_at);
                        }
                        OnRotate::Signal(sig) => {
                            if let Some(path) = &self.settings.env_file {
                                if let Err(e) = crate::write_env_file(path, &next.env.file_vars) {
                                    tracing::error!(error = %crate::chain(&e), "cannot rewrite the env file; stopping");
                                    self.spent.push(next);
                                    stopping = Some(Stop::Fail(e));
                                    terminate(pid, &mut kill_at);
                                    continue;
                                }
                            }
                            signal_group(pid, sig);
                            tracing::info!(signal = %sig, "env file rewritten with rotated credentials; child signalled");
                            let _ = replace_tx.send(next.credentials()).await;
                            if let Some(old) = self.current.replace(next) {
                                // Give the app the grace period to switch over.
                                self.retiring.push((Instant::now() + grace, old));
                            }
                        }
                        OnRotate::Exit => {
                            self.spent.push(next);
                            stopping = Some(Stop::Fail(Error::RotateExit));
                            terminate(pid, &mut kill_at);
                        }
                    }
                }
                _ = sleep_until(kill_at.unwrap_or_else(far)), if kill_at.is_some() => {
                    kill_at = None;
                    if let Some(pid) = child {
                        tracing::warn!(grace_s = grace.as_secs_f32(), "child did not exit within the grace period; sending SIGKILL");
                        signal_group(pid, Signal::SIGKILL);
                    }
                }
                _ = sleep_until(refetch_at.unwrap_or_else(far)), if refetch_at.is_some() => {
                    refetch_at = None;
                    if !self.fetching && stopping.is_none() {
                        self.start_fetch(relogin);
                    }
                }
                _ = sleep_until(next_retire.unwrap_or_else(far)), if next_retire.is_some() => {
                    let now = Instant::now();
                    let (due, later): (Vec<_>, Vec<_>) =
                        std::mem::take(&mut self.retiring).into_iter().partition(|(at, _)| *at <= now);
                    self.retiring = later;
                    self.retire(due.into_iter().map(|(_, g)| g).collect()).await;
                }
            }
        }
    }

    fn start_fetch(&mut self, token_ending: bool) {
        let (Some(token), Some(source)) = (
            self.current.as_ref().map(|g| g.token.clone()),
            self.source.clone(),
        ) else {
            return;
        };
        self.fetching = true;
        let tx = self.fetch_tx.clone();
        tokio::spawn(async move {
            let result = source.fetch(token_ending, token).await;
            let _ = tx.send(result).await;
        });
    }

    /// Revokes generations no longer in use, sparing the current one's token.
    async fn retire(&self, old: Vec<Generation>) {
        let keep = self.current.as_ref().map(|g| g.token.clone());
        let old: Vec<&Generation> = old.iter().collect();
        revoke(&self.source, &old, keep.as_deref(), self.settings.revoke).await;
    }

    /// The one shutdown path: waits (bounded) for a fetch in flight, revokes every
    /// generation held, removes the env file.
    async fn finish(&mut self) {
        if self.fetching {
            match tokio::time::timeout(REVOKE_TIMEOUT, self.fetch_rx.recv()).await {
                Ok(Some(Ok(g))) => self.spent.push(g),
                Ok(_) => {}
                Err(_) => tracing::warn!(
                    "a credential fetch was still running at exit; what it obtains is not revoked"
                ),
            }
            self.fetching = false;
        }
        let mut all: Vec<Generation> = Vec::new();
        all.extend(self.current.take());
        all.extend(self.pending.take());
        all.extend(self.retiring.drain(..).map(|(_, g)| g));
        all.append(&mut self.spent);
        let all: Vec<&Generation> = all.iter().collect();
        revoke(&self.source, &all, None, self.settings.revoke).await;
        if let Some(path) = &self.settings.env_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn spawn_child(argv: &[OsString], env: &ChildEnv) -> Result<Pid, Error> {
    spawn(argv, env).map_err(|source| Error::Spawn {
        program: argv[0].to_string_lossy().into_owned(),
        source,
    })
}

/// What retiring some generations must revoke.
#[derive(Debug, Default)]
pub struct Revocations {
    /// Tokens baton-env owns and nobody uses any more (each once): `revoke-self`, which
    /// also revokes every lease the token created.
    pub tokens: Vec<Arc<Secret>>,
    /// (token, lease id): leases under a token baton-env does not own, revoked one by one
    /// with `sys/leases/revoke` (the token is the operator's and stays valid).
    pub leases: Vec<(Arc<Secret>, String)>,
}

/// Plans the revocation of `gens`, given the token still in use (`None` on exit). Pure.
///
/// - An owned token not in use is revoked; its leases go with it (no per-lease call,
///   which Baton's policies do not grant).
/// - An owned token still in use (a rotation that could not log in again) is kept, and so
///   are its old leases: they are at most a third of their last grant from expiring, and
///   revoking the token on exit revokes them.
/// - Under a given token (not ours to revoke), leases are revoked one by one.
pub fn plan_revocations(gens: &[&Generation], in_use: Option<&Secret>) -> Revocations {
    let mut plan = Revocations::default();
    let same = |a: &Secret, b: &Secret| a.expose() == b.expose();
    for g in gens {
        if g.token_owned {
            let used = in_use.is_some_and(|t| same(t, &g.token));
            if !used && !plan.tokens.iter().any(|t| same(t, &g.token)) {
                plan.tokens.push(g.token.clone());
            }
        } else {
            plan.leases
                .extend(g.leases.iter().map(|l| (g.token.clone(), l.id.clone())));
        }
    }
    plan
}

/// Revokes what [`plan_revocations`] says. Best effort, bounded: revocation must not keep
/// a stopping container alive.
pub(crate) async fn revoke<F: Fetch>(
    source: &Option<Arc<F>>,
    gens: &[&Generation],
    in_use: Option<&Secret>,
    enabled: bool,
) {
    let Some(source) = source.as_ref().filter(|_| enabled) else {
        return;
    };
    let plan = plan_revocations(gens, in_use);
    if plan.tokens.is_empty() && plan.leases.is_empty() {
        return;
    }
    let api = source.api();
    let work = async {
        for (token, lease) in &plan.leases {
            match api.revoke_lease(token, lease).await {
                Ok(()) => tracing::info!(lease = %truncate_id(lease), "revoked lease"),
                Err(e) => {
                    tracing::warn!(lease = %truncate_id(lease), error = %e, "lease revocation failed")
                }
            }
        }
        for token in &plan.tokens {
            match api.revoke_self(token).await {
                Ok(()) => tracing::info!("revoked token (and its leases)"),
                Err(e) => tracing::warn!(error = %e, "token revocation failed"),
            }
        }
    };
    if tokio::time::timeout(REVOKE_TIMEOUT, work).await.is_err() {
        tracing::warn!("revocation timed out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generation(token: &str, owned: bool, leases: &[&str]) -> Generation {
        Generation {
            token: Arc::new(Secret::new(token.into())),
            token_ttl: None,
            token_renewable: false,
            token_owned: owned,
            leases: leases
                .iter()
                .map(|id| Lease {
                    id: (*id).into(),
                    duration: Duration::from_secs(60),
                    renewable: true,
                })
                .collect(),
            env: ChildEnv::default(),
        }
    }

    fn tokens(plan: &Revocations) -> Vec<&str> {
        plan.tokens.iter().map(|t| t.expose()).collect()
    }

    fn leases(plan: &Revocations) -> Vec<(&str, &str)> {
        plan.leases
            .iter()
            .map(|(t, l)| (t.expose(), l.as_str()))
            .collect()
    }

    #[test]
    fn on_exit_owned_tokens_are_revoked_once_and_their_leases_with_them() {
        let a = generation("t1", true, &["db/1"]);
        let b = generation("t1", true, &["db/2"]);
        let c = generation("t2", true, &["db/3"]);
        let plan = plan_revocations(&[&a, &b, &c], None);
        assert_eq!(tokens(&plan), ["t1", "t2"]);
        assert!(
            plan.leases.is_empty(),
            "no per-lease revoke under an owned token"
        );
    }

    #[test]
    fn after_a_rotation_the_old_token_goes_unless_still_in_use() {
        let old = generation("t1", true, &["db/1"]);
        // Logged in again: the old token (and with it its lease) is revoked.
        let plan = plan_revocations(&[&old], Some(&Secret::new("t2".into())));
        assert_eq!(tokens(&plan), ["t1"]);
        assert!(plan.leases.is_empty());
        // Same token (no new login possible): nothing now; the token goes on exit.
        let plan = plan_revocations(&[&old], Some(&Secret::new("t1".into())));
        assert!(plan.tokens.is_empty() && plan.leases.is_empty());
    }

    #[test]
    fn a_given_token_is_kept_and_its_leases_revoked_one_by_one() {
        let g = generation("given", false, &["db/1", "db/2"]);
        for in_use in [None, Some(Secret::new("given".into()))] {
            let plan = plan_revocations(&[&g], in_use.as_ref());
            assert!(plan.tokens.is_empty());
            assert_eq!(leases(&plan), [("given", "db/1"), ("given", "db/2")]);
        }
    }
}
