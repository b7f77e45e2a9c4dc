//! `--mode supervise`: run the app as our child and stay around as its PID 1.
//!
//! One event loop (tini's shape): forwarded signals go to the child's process group;
//! SIGCHLD reaps every zombie with `waitpid(-1, WNOHANG)` and notices the child's exit;
//! the renewal task reports credentials that are about to die, a fetch task gets new
//! ones, and `--on-rotate` decides how the app picks them up.
//!
//! What to do is decided by a pure rule, [`machine::State::step`]: each arm of the loop's
//! one `select!` only turns what arrived into a [`machine::Event`], and the shell here
//! performs the [`machine::Effect`]s the rule returns (signals, spawns, fetches, renewal,
//! revocation, the exit).
//!
//! Every way out of [`run`] (the child's exit, a signal, a spawn or env-file failure)
//! goes through one shutdown path: the child, if any, is stopped (SIGTERM, SIGKILL after
//! the grace period) and reaped, every generation of credentials obtained (current,
//! pending, retired, or fetched while stopping) is revoked, and the env file removed.
//!
//! Revocation goes by token where it can: revoking a token revokes every lease it
//! created, and Baton's generated policies grant no `sys/leases/revoke`. Leases are revoked
//! one by one only under a token baton-env does not own (a given `VAULT_TOKEN`).

pub mod machine;
pub mod process;
pub mod renew;
pub mod schedule;

use std::collections::{BTreeMap, VecDeque};
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
use machine::{Effect, Event, Exit, Failure, Gen, Note, Rules, State};
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

/// Supervises the child until it exits; returns the code baton-env should exit with.
/// `first` is `None` when no secrets are involved (a plain PID-1 supervisor).
pub async fn run<F: Fetch>(
    settings: Settings,
    source: Option<Arc<F>>,
    first: Option<Generation>,
    plain_env: ChildEnv,
) -> Result<i32, Error> {
    let (fetch_tx, fetch_rx) = mpsc::channel::<Result<Generation, Error>>(1);
    let rules = Rules {
        on_rotate: settings.on_rotate,
        grace: settings.grace,
        vault: source.is_some(),
    };
    let mut gens = BTreeMap::new();
    let first = first.map(|g| {
        gens.insert(Gen(1), g);
        Gen(1)
    });
    let mut sup = Supervisor {
        settings,
        source,
        plain_env,
        state: State::new(rules, first),
        gens,
        last_gen: 1,
        fetch_tx,
        fetch_rx,
        renew_events: None,
        renewal: None,
    };
    let outcome = sup.supervise().await;
    sup.finish().await;
    outcome
}

/// The shell around [`machine::State::step`]: it waits for events, performs the effects,
/// and holds what the rule only names: the generations' secrets, the channels, the
/// renewal task.
struct Supervisor<F> {
    settings: Settings,
    source: Option<Arc<F>>,
    plain_env: ChildEnv,
    state: State,
    /// Every generation not revoked yet, by the number the rule knows it by.
    gens: BTreeMap<Gen, Generation>,
    /// The number given to the latest generation obtained.
    last_gen: u32,
    fetch_tx: mpsc::Sender<Result<Generation, Error>>,
    fetch_rx: mpsc::Receiver<Result<Generation, Error>>,
    /// Where the renewal task will report, until it is started.
    renew_events: Option<mpsc::Sender<RenewEvent>>,
    /// Hands a new generation to the renewal task, once started.
    renewal: Option<mpsc::Sender<Credentials>>,
}

/// What performing one effect led to.
enum Performed {
    Done,
    /// The outcome of a launch or rewrite, for the rule.
    Then(Event),
    Exit(Exit),
}

impl<F: Fetch> Supervisor<F> {
    /// The event loop: waits for the next event and hands it to [`Self::handle`]. May
    /// return early (with `?`) only before the child is started.
    async fn supervise(&mut self) -> Result<i32, Error> {
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

        let (renew_tx, mut renew_rx) = mpsc::channel::<RenewEvent>(8);
        self.renew_events = Some(renew_tx);
        let far = || Instant::now() + Duration::from_secs(86_400 * 365);
        if let Some(exit) = self.handle(Event::Start).await {
            return exit.into_result();
        }
        loop {
            let (kill_at, refetch_at, retire_at) = (
                self.state.kill_at,
                self.state.refetch_at,
                self.state.next_retire(),
            );
            let event = tokio::select! {
                Some(sig) = sig_rx.recv() => {
                    if sig != Signal::SIGCHLD {
                        Event::Signal(sig)
                    } else if let Some(code) = reap_all(self.state.child) {
                        tracing::info!(code, "child exited");
                        Event::ChildExited(code)
                    } else {
                        continue;
                    }
                }
                Some(ending) = renew_rx.recv() => Event::RenewalEnding {
                    token: ending == RenewEvent::TokenEnding,
                },
                Some(result) = self.fetch_rx.recv() => self.fetched(result),
                _ = sleep_until(kill_at.unwrap_or_else(far)), if kill_at.is_some() => Event::GraceElapsed,
                _ = sleep_until(refetch_at.unwrap_or_else(far)), if refetch_at.is_some() => Event::RefetchDue,
                _ = sleep_until(retire_at.unwrap_or_else(far)), if retire_at.is_some() => Event::RetireDue,
            };
            if let Some(exit) = self.handle(event).await {
                return exit.into_result();
            }
        }
    }

    /// Steps the rule with `event` and performs its effects in order; the outcome of a
    /// launch or rewrite (always the last effect of a step) is stepped at once. Returns
    /// the exit when the rule gives one.
    async fn handle(&mut self, event: Event) -> Option<Exit> {
        let mut effects = VecDeque::from(self.state.step(event, Instant::now()));
        while let Some(effect) = effects.pop_front() {
            match self.perform(effect).await {
                Performed::Done => {}
                Performed::Then(next) => effects.extend(self.state.step(next, Instant::now())),
                Performed::Exit(exit) => return Some(exit),
            }
        }
        None
    }

    /// A fetch's result, as an event; new credentials are kept under the next number.
    fn fetched(&mut self, result: Result<Generation, Error>) -> Event {
        tracing::debug!(ok = result.is_ok(), "rotation fetch finished");
        match result {
            Ok(g) => {
                self.last_gen += 1;
                let id = Gen(self.last_gen);
                self.gens.insert(id, g);
                Event::Fetched(id)
            }
            Err(e) => Event::FetchFailed(e),
        }
    }

    async fn perform(&mut self, effect: Effect) -> Performed {
        match effect {
            Effect::Launch { gen, restart } => {
                let env = match gen {
                    None => &self.plain_env,
                    Some(id) => match self.gens.get(&id) {
                        Some(g) => &g.env,
                        None => return Performed::Then(Event::LaunchFailed(unknown(id))),
                    },
                };
                let launched = match &self.settings.env_file {
                    Some(path) => crate::write_env_file(path, &env.file_vars),
                    None => Ok(()),
                }
                .and_then(|()| spawn_child(&self.settings.argv, env));
                Performed::Then(match launched {
                    Ok(pid) => {
                        if restart {
                            tracing::info!(
                                pid = pid.as_raw(),
                                "child restarted with rotated credentials"
                            );
                        } else {
                            tracing::info!(pid = pid.as_raw(), "child started");
                        }
                        Event::Launched(pid)
                    }
                    Err(e) => Event::LaunchFailed(e),
                })
            }
            Effect::Rewrite(id) => {
                let Some(g) = self.gens.get(&id) else {
                    return Performed::Then(Event::RewriteFailed(unknown(id)));
                };
                let written = match &self.settings.env_file {
                    Some(path) => crate::write_env_file(path, &g.env.file_vars),
                    None => Ok(()),
                };
                Performed::Then(match written {
                    Ok(()) => Event::Rewritten,
                    Err(e) => {
                        tracing::error!(error = %crate::chain(&e), "cannot rewrite the env file; stopping");
                        Event::RewriteFailed(e)
                    }
                })
            }
            Effect::Forward(pid, sig) => {
                tracing::debug!(signal = %sig, "forwarding");
                signal_group(pid, sig);
                Performed::Done
            }
            Effect::Notify(pid, sig) => {
                signal_group(pid, sig);
                tracing::info!(signal = %sig, "env file rewritten with rotated credentials; child signalled");
                Performed::Done
            }
            Effect::Terminate(pid) => {
                signal_group(pid, Signal::SIGTERM);
                Performed::Done
            }
            Effect::Kill(pid) => {
                tracing::warn!(
                    grace_s = self.settings.grace.as_secs_f32(),
                    "child did not exit within the grace period; sending SIGKILL"
                );
                signal_group(pid, Signal::SIGKILL);
                Performed::Done
            }
            Effect::Fetch { replacing, relogin } => {
                if let (Some(g), Some(source)) = (self.gens.get(&replacing), self.source.clone()) {
                    let (token, tx) = (g.token.clone(), self.fetch_tx.clone());
                    tokio::spawn(async move {
                        let result = source.fetch(relogin, token).await;
                        let _ = tx.send(result).await;
                    });
                }
                Performed::Done
            }
            Effect::Renew(id) => {
                let Some(creds) = self.gens.get(&id).map(Generation::credentials) else {
                    return Performed::Done;
                };
                match (&self.renewal, self.renew_events.take(), &self.source) {
                    (Some(replace), _, _) => {
                        let _ = replace.send(creds).await;
                    }
                    (None, Some(events), Some(source)) => {
                        let (replace, replace_rx) = mpsc::channel::<Credentials>(1);
                        tokio::spawn(renew::run(source.api(), creds, replace_rx, events));
                        self.renewal = Some(replace);
                    }
                    _ => {}
                }
                Performed::Done
            }
            Effect::Revoke { gens, in_use } => {
                let old: Vec<Generation> =
                    gens.iter().filter_map(|id| self.gens.remove(id)).collect();
                let old: Vec<&Generation> = old.iter().collect();
                let keep = in_use
                    .and_then(|id| self.gens.get(&id))
                    .map(|g| g.token.clone());
                revoke(&self.source, &old, keep.as_deref(), self.settings.revoke).await;
                Performed::Done
            }
            Effect::Log(note) => {
                log(note);
                Performed::Done
            }
            Effect::Exit(exit) => Performed::Exit(exit),
        }
    }

    /// The one shutdown path: waits (bounded) for a fetch in flight, revokes every
    /// generation held, removes the env file.
    async fn finish(&mut self) {
        if self.state.fetching {
            match tokio::time::timeout(REVOKE_TIMEOUT, self.fetch_rx.recv()).await {
                Ok(Some(result)) => {
                    let event = self.fetched(result);
                    // After the exit the rule only records and logs.
                    for effect in self.state.step(event, Instant::now()) {
                        if let Effect::Log(note) = effect {
                            log(note);
                        }
                    }
                }
                Ok(None) => {}
                Err(_) => tracing::warn!(
                    "a credential fetch was still running at exit; what it obtains is not revoked"
                ),
            }
        }
        let all: Vec<Generation> = self
            .state
            .held()
            .iter()
            .filter_map(|id| self.gens.remove(id))
            .collect();
        let all: Vec<&Generation> = all.iter().collect();
        revoke(&self.source, &all, None, self.settings.revoke).await;
        if let Some(path) = &self.settings.env_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn log(note: Note) {
    match note {
        Note::FetchedWhileStopping => {
            tracing::info!("credentials fetched while stopping; revoking them")
        }
        Note::FetchFailedWhileStopping(Failure(e)) => {
            tracing::debug!(error = %crate::chain(&e), "fetch failed while stopping")
        }
        Note::CannotReplace(Failure(e)) => {
            tracing::error!(error = %crate::chain(&e), "credentials cannot be replaced; stopping")
        }
        Note::RetryingFetch(Failure(e)) => tracing::error!(
            error = %crate::chain(&e),
            "fetching rotated credentials failed; retrying in 5 s"
        ),
    }
}

/// A generation the rule names but the shell does not hold: a bug, reported as one
/// rather than a panic while the child runs.
fn unknown(id: Gen) -> Error {
    Error::Internal(format!("generation {} is not held", id.0))
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
