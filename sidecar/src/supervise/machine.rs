//! The supervisor's rule, pure: [`State::step`] takes one [`Event`] and the time it
//! arrived and returns the [`Effect`]s to perform, in order. No I/O, no clock, no
//! channels: the shell in [`super`] waits for events, performs effects and feeds the
//! outcome of a fallible effect (a launch, an env-file rewrite) back as the next event.
//!
//! Generations of credentials are named by number ([`Gen`]); the shell holds the
//! secrets. Every generation obtained stays in exactly one role until it is revoked:
//! `current` (the running child's), `pending` (fetched, not in use yet), `retiring`
//! (replaced under `--on-rotate signal:*`, revoked after the grace period) or `spent`
//! (never to be used). [`State::held`] lists them all for the one shutdown path.

use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::time::Instant;

use super::schedule::RETRY_AFTER;
use super::OnRotate;
use crate::error::Error;

/// A generation of credentials, numbered in the order they were obtained (1 = the first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gen(pub u32);

/// An error carried to the exit. Compared by what the user gets (exit code and message),
/// so tables can state the exit-code contract.
#[derive(Debug)]
pub struct Failure(pub Error);

impl PartialEq for Failure {
    fn eq(&self, other: &Self) -> bool {
        self.0.exit_code(1) == other.0.exit_code(1) && self.0.to_string() == other.0.to_string()
    }
}

/// Why the child is being stopped.
#[derive(Debug, PartialEq)]
pub enum Stop {
    /// A signal asked us to stop: exit with the child's code.
    Shutdown,
    /// Rotated credentials are pending: start a new child with them.
    Restart,
    /// Exit with this error once the child is gone (`--on-rotate exit`, credentials
    /// that cannot be replaced, an env file that cannot be rewritten).
    Fail(Failure),
}

/// How supervision ends.
#[derive(Debug, PartialEq)]
pub enum Exit {
    /// The child's code (128 + N when killed by signal N).
    Child(i32),
    /// An error; its documented exit code applies.
    Failed(Failure),
}

impl Exit {
    /// What [`super::run`] returns: the child's code, or the error whose documented exit
    /// code applies.
    pub fn into_result(self) -> Result<i32, Error> {
        match self {
            Self::Child(code) => Ok(code),
            Self::Failed(Failure(e)) => Err(e),
        }
    }
}

/// Everything the supervisor reacts to.
#[derive(Debug)]
pub enum Event {
    /// Supervision begins: start the child.
    Start,
    /// A forwarded signal (SIGCHLD never: the reaper turns it into [`Event::ChildExited`]).
    Signal(Signal),
    /// The reaper collected the child: its exit code, or 128 + N for signal N.
    ChildExited(i32),
    /// The renewal task: something cannot be renewed any further. `token`: it is the
    /// token, so the next fetch must log in again.
    RenewalEnding { token: bool },
    /// A rotation fetch returned new credentials; the shell holds them as this generation.
    Fetched(Gen),
    /// A rotation fetch failed.
    FetchFailed(Error),
    /// Outcome of [`Effect::Launch`]: the child runs as this pid.
    Launched(Pid),
    /// Outcome of [`Effect::Launch`]: the env file or the spawn failed; no child runs.
    LaunchFailed(Error),
    /// Outcome of [`Effect::Rewrite`]: the env file holds the new generation.
    Rewritten,
    /// Outcome of [`Effect::Rewrite`]: the env file could not be written.
    RewriteFailed(Error),
    /// `kill_at` came: the child did not exit within the grace period.
    GraceElapsed,
    /// `refetch_at` came: try the failed fetch again.
    RefetchDue,
    /// The earliest `retiring` time came.
    RetireDue,
}

/// What the shell logs when the rule decided something it cannot see from the effects.
#[derive(Debug, PartialEq)]
pub enum Note {
    /// Credentials arrived while stopping for good: they are revoked, never used.
    FetchedWhileStopping,
    /// A fetch failed while stopping for good: nothing to do.
    FetchFailedWhileStopping(Failure),
    /// A fetch failed and retrying cannot help: stopping, exit 75.
    CannotReplace(Failure),
    /// A fetch failed and may succeed later: retried after [`RETRY_AFTER`].
    RetryingFetch(Failure),
}

/// What the shell does, in the order given.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Write the env file (when configured) and spawn the child with this generation's
    /// environment (`None`: the plain one, no secrets). Answered by `Launched` or
    /// `LaunchFailed`; always the last effect of its step.
    Launch {
        gen: Option<Gen>,
        restart: bool,
    },
    /// Write the env file with this generation's variables. Answered by `Rewritten` or
    /// `RewriteFailed`; always the last effect of its step.
    Rewrite(Gen),
    /// Forward a signal to the child's process group.
    Forward(Pid, Signal),
    /// Tell the app about rotated credentials (`--on-rotate signal:*`).
    Notify(Pid, Signal),
    /// SIGTERM to the child's group (a stop; SIGKILL follows at `kill_at`).
    Terminate(Pid),
    /// SIGKILL to the child's group: the grace period is over.
    Kill(Pid),
    /// Fetch credentials to replace `replacing`'s; `relogin`: its token is ending.
    Fetch {
        replacing: Gen,
        relogin: bool,
    },
    /// Have the renewal task keep this generation alive (starting the task at first).
    Renew(Gen),
    /// Revoke these generations now, sparing `in_use`'s token.
    Revoke {
        gens: Vec<Gen>,
        in_use: Option<Gen>,
    },
    Log(Note),
    /// Leave the loop; the shell's `finish` revokes [`State::held`] and removes the env
    /// file. Only ever emitted with no child running.
    Exit(Exit),
}

/// What does not change while supervising.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub on_rotate: OnRotate,
    pub grace: Duration,
    /// Credentials come from Vault: renewed, and fetched again on rotation.
    pub vault: bool,
}

/// The supervisor's state: the child, why it is being stopped, the timers, and which
/// generation plays which role.
#[derive(Debug, PartialEq)]
pub struct State {
    pub rules: Rules,
    /// The running child (leader of its own process group).
    pub child: Option<Pid>,
    pub stopping: Option<Stop>,
    /// An [`Effect::Exit`] was emitted: nothing is started or used any more.
    pub exited: bool,
    /// SIGKILL is due (grace period after SIGTERM).
    pub kill_at: Option<Instant>,
    /// A failed fetch is retried.
    pub refetch_at: Option<Instant>,
    /// The next fetch must log in again (the token is ending).
    pub relogin: bool,
    /// A fetch is in flight.
    pub fetching: bool,
    /// The generation the running child uses.
    pub current: Option<Gen>,
    /// Fetched for a restart (or being written for a signal rotation), not in use yet.
    pub pending: Option<Gen>,
    /// Replaced under `--on-rotate signal:*`: revoked once the app had the grace period
    /// to switch over.
    pub retiring: Vec<(Instant, Gen)>,
    /// Never to be used (fetched while stopping, superseded, or left by a failed restart).
    pub spent: Vec<Gen>,
}

impl State {
    /// Before the start; `first` is `None` when no secrets are involved.
    pub fn new(rules: Rules, first: Option<Gen>) -> Self {
        Self {
            rules,
            child: None,
            stopping: None,
            exited: false,
            kill_at: None,
            refetch_at: None,
            relogin: false,
            fetching: false,
            current: first,
            pending: None,
            retiring: Vec::new(),
            spent: Vec::new(),
        }
    }

    /// Stopping for good: nothing that happens now changes the way out.
    pub fn is_final(&self) -> bool {
        self.exited || matches!(self.stopping, Some(Stop::Shutdown | Stop::Fail(_)))
    }

    /// When the earliest retiring generation is due.
    pub fn next_retire(&self) -> Option<Instant> {
        self.retiring.iter().map(|(at, _)| *at).min()
    }

    /// Every generation not revoked yet, whatever its role: what the shutdown revokes.
    pub fn held(&self) -> Vec<Gen> {
        let mut all: Vec<Gen> = Vec::new();
        all.extend(self.current);
        all.extend(self.pending);
        all.extend(self.retiring.iter().map(|(_, g)| *g));
        all.extend(self.spent.iter().copied());
        all
    }

    /// The rule: one event at `now` -> the effects to perform, in order.
    pub fn step(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        if self.exited {
            return self.after_exit(event);
        }
        match event {
            Event::Start => vec![Effect::Launch {
                gen: self.current,
                restart: false,
            }],
            Event::Signal(sig) => self.signal(sig, now),
            Event::ChildExited(code) => self.child_exited(code),
            Event::RenewalEnding { token } => {
                self.relogin |= token;
                if self.stopping.is_none() && self.refetch_at.is_none() {
                    self.fetch()
                } else {
                    vec![]
                }
            }
            Event::Fetched(gen) => self.fetched(gen, now),
            Event::FetchFailed(e) => self.fetch_failed(e, now),
            Event::Launched(pid) => self.launched(pid),
            Event::LaunchFailed(e) => {
                // A restart's credentials never reached a child.
                self.spent.extend(self.pending.take());
                self.exit(Exit::Failed(Failure(e)))
            }
            Event::Rewritten => self.rewritten(now),
            Event::RewriteFailed(e) => {
                self.spent.extend(self.pending.take());
                self.stop(Stop::Fail(Failure(e)), now)
            }
            Event::GraceElapsed => {
                self.kill_at = None;
                self.child.map(Effect::Kill).into_iter().collect()
            }
            Event::RefetchDue => {
                self.refetch_at = None;
                if self.stopping.is_none() {
                    self.fetch()
                } else {
                    vec![]
                }
            }
            Event::RetireDue => {
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retiring)
                    .into_iter()
                    .partition(|(at, _)| *at <= now);
                self.retiring = later;
                if due.is_empty() {
                    return vec![];
                }
                vec![Effect::Revoke {
                    gens: due.into_iter().map(|(_, g)| g).collect(),
                    in_use: self.current,
                }]
            }
        }
    }

    /// After the exit only a fetch still in flight can report (awaited by `finish`):
    /// what it got is spent, revoked with the rest.
    fn after_exit(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::Fetched(gen) => {
                self.fetching = false;
                self.spent.push(gen);
                vec![Effect::Log(Note::FetchedWhileStopping)]
            }
            Event::FetchFailed(e) => {
                self.fetching = false;
                vec![Effect::Log(Note::FetchFailedWhileStopping(Failure(e)))]
            }
            _ => vec![],
        }
    }

    fn signal(&mut self, sig: Signal, now: Instant) -> Vec<Effect> {
        let effects = self.child.map(|pid| Effect::Forward(pid, sig));
        if matches!(sig, Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT) {
            if !self.is_final() {
                self.stopping = Some(Stop::Shutdown);
            }
            self.kill_at.get_or_insert(now + self.rules.grace);
        }
        effects.into_iter().collect()
    }

    fn child_exited(&mut self, code: i32) -> Vec<Effect> {
        self.child = None;
        self.kill_at = None;
        match self.stopping.take() {
            Some(Stop::Restart) if self.pending.is_some() => vec![Effect::Launch {
                gen: self.pending,
                restart: true,
            }],
            Some(Stop::Fail(f)) => self.exit(Exit::Failed(f)),
            Some(Stop::Restart | Stop::Shutdown) | None => self.exit(Exit::Child(code)),
        }
    }

    fn launched(&mut self, pid: Pid) -> Vec<Effect> {
        self.child = Some(pid);
        let Some(next) = self.pending.take() else {
            // The first start: renew what the child was given.
            return match self.current {
                Some(g) if self.rules.vault => vec![Effect::Renew(g)],
                _ => vec![],
            };
        };
        // A restart: the new child runs, the old generation goes (its token spared if
        // the new one still uses it).
        let mut effects = vec![Effect::Renew(next)];
        if let Some(old) = self.current.replace(next) {
            effects.push(Effect::Revoke {
                gens: vec![old],
                in_use: Some(next),
            });
        }
        effects
    }

    fn fetched(&mut self, gen: Gen, now: Instant) -> Vec<Effect> {
        self.fetching = false;
        if self.is_final() {
            // Stopping for good: the new credentials will never be used.
            self.spent.push(gen);
            return vec![Effect::Log(Note::FetchedWhileStopping)];
        }
        self.relogin = false;
        if self.child.is_none() {
            self.spent.push(gen);
            return vec![];
        }
        match self.rules.on_rotate {
            OnRotate::Restart => {
                if let Some(old) = self.pending.replace(gen) {
                    self.spent.push(old);
                }
                self.stop(Stop::Restart, now)
            }
            OnRotate::Signal(_) => {
                self.spent.extend(self.pending.replace(gen));
                vec![Effect::Rewrite(gen)]
            }
            OnRotate::Exit => {
                self.spent.push(gen);
                self.stop(Stop::Fail(Failure(Error::RotateExit)), now)
            }
        }
    }

    fn rewritten(&mut self, now: Instant) -> Vec<Effect> {
        let (Some(next), Some(pid), OnRotate::Signal(sig)) =
            (self.pending, self.child, self.rules.on_rotate)
        else {
            return vec![];
        };
        self.pending = None;
        if let Some(old) = self.current.replace(next) {
            // Give the app the grace period to switch over.
            self.retiring.push((now + self.rules.grace, old));
        }
        vec![Effect::Notify(pid, sig), Effect::Renew(next)]
    }

    fn fetch_failed(&mut self, e: Error, now: Instant) -> Vec<Effect> {
        self.fetching = false;
        if self.is_final() {
            return vec![Effect::Log(Note::FetchFailedWhileStopping(Failure(e)))];
        }
        if cannot_replace(&e) {
            // Without a way to log in again, retrying cannot help: stop the child
            // gracefully and exit 75 so the scheduler starts a fresh task.
            let mut effects = vec![Effect::Log(Note::CannotReplace(Failure(e)))];
            effects.extend(self.stop(Stop::Fail(Failure(Error::CredentialsExpired)), now));
            effects
        } else {
            self.refetch_at = Some(now + RETRY_AFTER);
            vec![Effect::Log(Note::RetryingFetch(Failure(e)))]
        }
    }

    /// Starts a fetch unless one is in flight (or there is nothing to replace).
    fn fetch(&mut self) -> Vec<Effect> {
        match self.current {
            Some(replacing) if self.rules.vault && !self.fetching => {
                self.fetching = true;
                vec![Effect::Fetch {
                    replacing,
                    relogin: self.relogin,
                }]
            }
            _ => vec![],
        }
    }

    /// Stops the child for `why`: SIGTERM now, SIGKILL after the grace period (or
    /// earlier, if already due). Without a child, exits at once.
    fn stop(&mut self, why: Stop, now: Instant) -> Vec<Effect> {
        let Some(pid) = self.child else {
            return match why {
                Stop::Fail(f) => self.exit(Exit::Failed(f)),
                Stop::Shutdown | Stop::Restart => vec![],
            };
        };
        self.stopping = Some(why);
        let at = now + self.rules.grace;
        self.kill_at = Some(self.kill_at.map_or(at, |k| k.min(at)));
        vec![Effect::Terminate(pid)]
    }

    fn exit(&mut self, exit: Exit) -> Vec<Effect> {
        self.exited = true;
        self.kill_at = None;
        self.refetch_at = None;
        vec![Effect::Exit(exit)]
    }
}

/// A fetch error retrying cannot fix: the token ended and no new login is possible, or
/// the login was refused.
pub fn cannot_replace(e: &Error) -> bool {
    matches!(e, Error::CredentialsExpired) || matches!(e, Error::Auth(a) if !a.is_unavailable())
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;
    use crate::auth::AuthError;

    const GRACE: Duration = Duration::from_secs(10);
    const S: fn(u64) -> Duration = Duration::from_secs;
    const G1: Gen = Gen(1);
    const G2: Gen = Gen(2);
    const G3: Gen = Gen(3);
    const RESTART: OnRotate = OnRotate::Restart;
    const HUP: OnRotate = OnRotate::Signal(Signal::SIGHUP);
    const EXIT: OnRotate = OnRotate::Exit;

    fn child() -> Pid {
        Pid::from_raw(4242)
    }

    fn rules(on_rotate: OnRotate) -> Rules {
        Rules {
            on_rotate,
            grace: GRACE,
            vault: true,
        }
    }

    /// Before the start, with the first generation.
    fn fresh(on_rotate: OnRotate) -> State {
        State::new(rules(on_rotate), Some(G1))
    }

    /// Without secrets (a plain PID-1 supervisor).
    fn plain() -> State {
        State::new(
            Rules {
                vault: false,
                ..rules(RESTART)
            },
            None,
        )
    }

    /// The first generation's child runs, nothing else going on.
    fn running(on_rotate: OnRotate) -> State {
        with(fresh(on_rotate), |s| s.child = Some(child()))
    }

    fn with(mut s: State, change: impl FnOnce(&mut State)) -> State {
        change(&mut s);
        s
    }

    fn expired() -> Error {
        Error::CredentialsExpired
    }
    fn refused() -> Error {
        Error::Auth(AuthError::TokenRefused)
    }
    fn unavailable() -> Error {
        Error::Auth(AuthError::GatekeeperUnavailable("503".into()))
    }
    fn env_file() -> Error {
        Error::EnvFile {
            path: "/run/app.env".into(),
            source: io::ErrorKind::PermissionDenied.into(),
        }
    }
    fn not_found() -> Error {
        Error::Spawn {
            program: "app".into(),
            source: io::ErrorKind::NotFound.into(),
        }
    }
    fn failed(e: Error) -> Effect {
        Effect::Exit(Exit::Failed(Failure(e)))
    }

    struct Row {
        name: String,
        given: State,
        event: Event,
        effects: Vec<Effect>,
        then: State,
    }

    fn row(name: &str, given: State, event: Event, effects: Vec<Effect>, then: State) -> Row {
        Row {
            name: name.into(),
            given,
            event,
            effects,
            then,
        }
    }

    /// Every transition the supervisor's `select!` arms made before the rule was pulled
    /// out of them, plus the launch and rewrite outcomes. Each event arrives at `t0`.
    fn table(t0: Instant) -> Vec<Row> {
        let shutting_down = |on_rotate| {
            with(running(on_rotate), |s| {
                s.stopping = Some(Stop::Shutdown);
                s.kill_at = Some(t0 + GRACE);
            })
        };
        let exited = || {
            with(fresh(RESTART), |s| {
                s.exited = true;
                s.fetching = true;
            })
        };
        let mut rows =
            vec![
            // Start.
            row(
                "start: the child is launched with the first generation",
                fresh(RESTART),
                Event::Start,
                vec![Effect::Launch { gen: Some(G1), restart: false }],
                fresh(RESTART),
            ),
            row(
                "start without secrets: the child is launched with the plain environment",
                plain(),
                Event::Start,
                vec![Effect::Launch { gen: None, restart: false }],
                plain(),
            ),
            row(
                "launched: the renewal task takes the first generation",
                fresh(RESTART),
                Event::Launched(child()),
                vec![Effect::Renew(G1)],
                running(RESTART),
            ),
            row(
                "launched without secrets: nothing to renew",
                plain(),
                Event::Launched(child()),
                vec![],
                with(plain(), |s| s.child = Some(child())),
            ),
            row(
                "launch failed at the start: exit 127, the first generation still held",
                fresh(RESTART),
                Event::LaunchFailed(not_found()),
                vec![failed(not_found())],
                with(fresh(RESTART), |s| s.exited = true),
            ),
            // Signals.
            row(
                "SIGHUP: forwarded to the child's group, nothing else",
                running(RESTART),
                Event::Signal(Signal::SIGHUP),
                vec![Effect::Forward(child(), Signal::SIGHUP)],
                running(RESTART),
            ),
            row(
                "SIGTERM during a restart: now a shutdown, the earlier SIGKILL time kept",
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Restart);
                    s.pending = Some(G2);
                    s.kill_at = Some(t0 + S(3));
                }),
                Event::Signal(Signal::SIGTERM),
                vec![Effect::Forward(child(), Signal::SIGTERM)],
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Shutdown);
                    s.pending = Some(G2);
                    s.kill_at = Some(t0 + S(3));
                }),
            ),
            row(
                "SIGTERM after a failure: the failure (and its exit code) stays",
                with(running(EXIT), |s| {
                    s.stopping = Some(Stop::Fail(Failure(Error::RotateExit)));
                    s.spent = vec![G2];
                    s.kill_at = Some(t0 + S(3));
                }),
                Event::Signal(Signal::SIGTERM),
                vec![Effect::Forward(child(), Signal::SIGTERM)],
                with(running(EXIT), |s| {
                    s.stopping = Some(Stop::Fail(Failure(Error::RotateExit)));
                    s.spent = vec![G2];
                    s.kill_at = Some(t0 + S(3));
                }),
            ),
            // The child's exit.
            row(
                "the child exits on its own: exit with its code",
                running(RESTART),
                Event::ChildExited(3),
                vec![Effect::Exit(Exit::Child(3))],
                with(fresh(RESTART), |s| s.exited = true),
            ),
            row(
                "the child exits after SIGTERM: exit with its code (143), no SIGKILL",
                shutting_down(RESTART),
                Event::ChildExited(143),
                vec![Effect::Exit(Exit::Child(143))],
                with(fresh(RESTART), |s| s.exited = true),
            ),
            row(
                "the child exits after a failure: exit with the failure (75)",
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Fail(Failure(expired())));
                    s.kill_at = Some(t0 + GRACE);
                }),
                Event::ChildExited(143),
                vec![failed(expired())],
                with(fresh(RESTART), |s| s.exited = true),
            ),
            row(
                "the child exits for a restart: launched again with the pending generation",
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Restart);
                    s.pending = Some(G2);
                    s.kill_at = Some(t0 + GRACE);
                }),
                Event::ChildExited(143),
                vec![Effect::Launch { gen: Some(G2), restart: true }],
                with(fresh(RESTART), |s| s.pending = Some(G2)),
            ),
            row(
                "a restart with nothing pending ends like a shutdown",
                with(running(RESTART), |s| s.stopping = Some(Stop::Restart)),
                Event::ChildExited(143),
                vec![Effect::Exit(Exit::Child(143))],
                with(fresh(RESTART), |s| s.exited = true),
            ),
            row(
                "restarted: the new generation renewed, the old revoked sparing the new token",
                with(fresh(RESTART), |s| s.pending = Some(G2)),
                Event::Launched(Pid::from_raw(4343)),
                vec![
                    Effect::Renew(G2),
                    Effect::Revoke { gens: vec![G1], in_use: Some(G2) },
                ],
                with(fresh(RESTART), |s| {
                    s.child = Some(Pid::from_raw(4343));
                    s.current = Some(G2);
                }),
            ),
            row(
                "a restart's env file cannot be written: exit 71, the new generation spent",
                with(fresh(RESTART), |s| s.pending = Some(G2)),
                Event::LaunchFailed(env_file()),
                vec![failed(env_file())],
                with(fresh(RESTART), |s| {
                    s.spent = vec![G2];
                    s.exited = true;
                }),
            ),
            row(
                "a restart cannot spawn: exit 127, the new generation spent",
                with(fresh(RESTART), |s| s.pending = Some(G2)),
                Event::LaunchFailed(not_found()),
                vec![failed(not_found())],
                with(fresh(RESTART), |s| {
                    s.spent = vec![G2];
                    s.exited = true;
                }),
            ),
            // Renewal.
            row(
                "a lease cannot be renewed: fetch with the same token",
                running(RESTART),
                Event::RenewalEnding { token: false },
                vec![Effect::Fetch { replacing: G1, relogin: false }],
                with(running(RESTART), |s| s.fetching = true),
            ),
            row(
                "the token cannot be renewed: fetch with a new login",
                running(RESTART),
                Event::RenewalEnding { token: true },
                vec![Effect::Fetch { replacing: G1, relogin: true }],
                with(running(RESTART), |s| {
                    s.fetching = true;
                    s.relogin = true;
                }),
            ),
            row(
                "the token ends while a fetch is in flight: the next fetch logs in again",
                with(running(RESTART), |s| s.fetching = true),
                Event::RenewalEnding { token: true },
                vec![],
                with(running(RESTART), |s| {
                    s.fetching = true;
                    s.relogin = true;
                }),
            ),
            row(
                "a lease ends while a retry waits: the retry will fetch",
                with(running(RESTART), |s| s.refetch_at = Some(t0 + S(5))),
                Event::RenewalEnding { token: false },
                vec![],
                with(running(RESTART), |s| s.refetch_at = Some(t0 + S(5))),
            ),
            row(
                "something ends while shutting down: nothing fetched",
                shutting_down(RESTART),
                Event::RenewalEnding { token: true },
                vec![],
                with(shutting_down(RESTART), |s| s.relogin = true),
            ),
            // Rotation.
            row(
                "fetched, --on-rotate restart: SIGTERM for a restart, the generation pending",
                with(running(RESTART), |s| {
                    s.fetching = true;
                    s.relogin = true;
                }),
                Event::Fetched(G2),
                vec![Effect::Terminate(child())],
                with(running(RESTART), |s| {
                    s.pending = Some(G2);
                    s.stopping = Some(Stop::Restart);
                    s.kill_at = Some(t0 + GRACE);
                }),
            ),
            row(
                "fetched again while restarting: the older pending spent, SIGKILL not postponed",
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Restart);
                    s.pending = Some(G2);
                    s.kill_at = Some(t0 + S(3));
                    s.fetching = true;
                }),
                Event::Fetched(G3),
                vec![Effect::Terminate(child())],
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Restart);
                    s.pending = Some(G3);
                    s.spent = vec![G2];
                    s.kill_at = Some(t0 + S(3));
                }),
            ),
            row(
                "fetched, --on-rotate signal: the env file is rewritten first",
                with(running(HUP), |s| s.fetching = true),
                Event::Fetched(G2),
                vec![Effect::Rewrite(G2)],
                with(running(HUP), |s| s.pending = Some(G2)),
            ),
            row(
                "rewritten: the app signalled, the new generation renewed, the old retiring",
                with(running(HUP), |s| s.pending = Some(G2)),
                Event::Rewritten,
                vec![Effect::Notify(child(), Signal::SIGHUP), Effect::Renew(G2)],
                with(running(HUP), |s| {
                    s.current = Some(G2);
                    s.retiring = vec![(t0 + GRACE, G1)];
                }),
            ),
            row(
                "the env file cannot be rewritten: the child stopped for exit 71, the new spent",
                with(running(HUP), |s| s.pending = Some(G2)),
                Event::RewriteFailed(env_file()),
                vec![Effect::Terminate(child())],
                with(running(HUP), |s| {
                    s.spent = vec![G2];
                    s.stopping = Some(Stop::Fail(Failure(env_file())));
                    s.kill_at = Some(t0 + GRACE);
                }),
            ),
            row(
                "fetched, --on-rotate exit: the child stopped for exit 75, the new spent",
                with(running(EXIT), |s| s.fetching = true),
                Event::Fetched(G2),
                vec![Effect::Terminate(child())],
                with(running(EXIT), |s| {
                    s.spent = vec![G2];
                    s.stopping = Some(Stop::Fail(Failure(Error::RotateExit)));
                    s.kill_at = Some(t0 + GRACE);
                }),
            ),
            row(
                "fetched while shutting down: revoked, never used",
                with(shutting_down(RESTART), |s| s.fetching = true),
                Event::Fetched(G2),
                vec![Effect::Log(Note::FetchedWhileStopping)],
                with(shutting_down(RESTART), |s| s.spent = vec![G2]),
            ),
            row(
                "fetched while stopping for a failure: revoked, never used",
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Fail(Failure(expired())));
                    s.fetching = true;
                }),
                Event::Fetched(G2),
                vec![Effect::Log(Note::FetchedWhileStopping)],
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Fail(Failure(expired())));
                    s.spent = vec![G2];
                }),
            ),
            row(
                "fetched after the exit (awaited by finish): revoked, never used",
                exited(),
                Event::Fetched(G2),
                vec![Effect::Log(Note::FetchedWhileStopping)],
                with(exited(), |s| {
                    s.fetching = false;
                    s.spent = vec![G2];
                }),
            ),
            // Failed fetches.
            row(
                "fetch failed, Vault unavailable: retried in 5 s",
                with(running(RESTART), |s| s.fetching = true),
                Event::FetchFailed(unavailable()),
                vec![Effect::Log(Note::RetryingFetch(Failure(unavailable())))],
                with(running(RESTART), |s| s.refetch_at = Some(t0 + RETRY_AFTER)),
            ),
            row(
                "fetch failed, no new login possible: the child stopped for exit 75",
                with(running(RESTART), |s| s.fetching = true),
                Event::FetchFailed(expired()),
                vec![
                    Effect::Log(Note::CannotReplace(Failure(expired()))),
                    Effect::Terminate(child()),
                ],
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Fail(Failure(expired())));
                    s.kill_at = Some(t0 + GRACE);
                }),
            ),
            row(
                "fetch failed, login refused: the child stopped for exit 75",
                with(running(RESTART), |s| s.fetching = true),
                Event::FetchFailed(refused()),
                vec![
                    Effect::Log(Note::CannotReplace(Failure(refused()))),
                    Effect::Terminate(child()),
                ],
                with(running(RESTART), |s| {
                    s.stopping = Some(Stop::Fail(Failure(expired())));
                    s.kill_at = Some(t0 + GRACE);
                }),
            ),
            row(
                "fetch failed while shutting down: nothing more",
                with(shutting_down(RESTART), |s| s.fetching = true),
                Event::FetchFailed(expired()),
                vec![Effect::Log(Note::FetchFailedWhileStopping(Failure(expired())))],
                shutting_down(RESTART),
            ),
            row(
                "fetch failed after the exit: nothing more",
                exited(),
                Event::FetchFailed(unavailable()),
                vec![Effect::Log(Note::FetchFailedWhileStopping(Failure(unavailable())))],
                with(exited(), |s| s.fetching = false),
            ),
            // Timers.
            row(
                "the grace period elapsed: SIGKILL",
                shutting_down(RESTART),
                Event::GraceElapsed,
                vec![Effect::Kill(child())],
                with(shutting_down(RESTART), |s| s.kill_at = None),
            ),
            row(
                "a retry is due: fetch again, the new login still owed",
                with(running(RESTART), |s| {
                    s.refetch_at = Some(t0);
                    s.relogin = true;
                }),
                Event::RefetchDue,
                vec![Effect::Fetch { replacing: G1, relogin: true }],
                with(running(RESTART), |s| {
                    s.fetching = true;
                    s.relogin = true;
                }),
            ),
            row(
                "a retry is due while shutting down: dropped",
                with(shutting_down(RESTART), |s| s.refetch_at = Some(t0)),
                Event::RefetchDue,
                vec![],
                shutting_down(RESTART),
            ),
            row(
                "retiring is due: those due revoked, sparing the current token",
                with(running(HUP), |s| {
                    s.current = Some(G3);
                    s.retiring = vec![(t0, G1), (t0 + S(5), G2)];
                }),
                Event::RetireDue,
                vec![Effect::Revoke { gens: vec![G1], in_use: Some(G3) }],
                with(running(HUP), |s| {
                    s.current = Some(G3);
                    s.retiring = vec![(t0 + S(5), G2)];
                }),
            ),
            row(
                "after the exit a signal changes nothing",
                exited(),
                Event::Signal(Signal::SIGTERM),
                vec![],
                exited(),
            ),
        ];
        for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
            rows.push(row(
                &format!("{sig}: forwarded, a shutdown, SIGKILL due after the grace period"),
                running(RESTART),
                Event::Signal(sig),
                vec![Effect::Forward(child(), sig)],
                shutting_down(RESTART),
            ));
        }
        rows
    }

    #[test]
    fn every_transition_of_the_supervisor() {
        let t0 = Instant::now();
        let mut wrong = Vec::new();
        for mut r in table(t0) {
            let effects = r.given.step(r.event, t0);
            if effects != r.effects {
                wrong.push(format!(
                    "{}: effects\n    got  {effects:?}\n    want {:?}",
                    r.name, r.effects
                ));
            }
            if r.given != r.then {
                wrong.push(format!(
                    "{}: state\n    got  {:?}\n    want {:?}",
                    r.name, r.given, r.then
                ));
            }
            // Kept by every transition: exit only once the child is reaped; an effect
            // whose outcome comes back as an event ends its step.
            let exits = effects.iter().any(|e| matches!(e, Effect::Exit(_)));
            if exits && (r.given.child.is_some() || !r.given.exited) {
                wrong.push(format!("{}: exit with a child running", r.name));
            }
            let answered = |e: &Effect| matches!(e, Effect::Launch { .. } | Effect::Rewrite(_));
            if effects.iter().rev().skip(1).any(answered) {
                wrong.push(format!("{}: a launch or rewrite is not last", r.name));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// Runs events at `t0 + at`, returning every effect in order.
    fn run(s: &mut State, t0: Instant, events: Vec<(u64, Event)>) -> Vec<Effect> {
        events
            .into_iter()
            .flat_map(|(at, e)| s.step(e, t0 + S(at)))
            .collect()
    }

    /// The one shutdown path: SIGTERM, credentials arriving while stopping, SIGKILL, the
    /// reaped child, then the exit; every generation (current, retiring and the late one)
    /// is still held for `finish` to revoke, and the late one was never used.
    #[test]
    fn the_shutdown_path_reaps_the_child_before_the_exit_and_holds_every_generation() {
        let t0 = Instant::now();
        let mut s = fresh(HUP);
        let effects = run(
            &mut s,
            t0,
            vec![
                (0, Event::Start),
                (0, Event::Launched(child())),
                (1, Event::RenewalEnding { token: false }),
                (1, Event::Fetched(G2)),
                (1, Event::Rewritten),
                (2, Event::RenewalEnding { token: true }),
                (3, Event::Signal(Signal::SIGTERM)),
                (4, Event::Fetched(G3)),
                (13, Event::GraceElapsed),
            ],
        );
        assert!(!effects.iter().any(|e| matches!(e, Effect::Exit(_))));
        assert_eq!(s.child, Some(child()), "not reaped yet: still supervising");
        let late = [
            Effect::Launch {
                gen: Some(G3),
                restart: true,
            },
            Effect::Rewrite(G3),
            Effect::Renew(G3),
        ];
        assert!(!effects.iter().any(|e| late.contains(e)), "{effects:?}");
        assert_eq!(
            &effects[effects.len() - 3..],
            [
                Effect::Forward(child(), Signal::SIGTERM),
                Effect::Log(Note::FetchedWhileStopping),
                Effect::Kill(child()),
            ]
        );
        assert_eq!(
            s.step(Event::ChildExited(137), t0 + S(14)),
            [Effect::Exit(Exit::Child(137))]
        );
        assert_eq!(s.child, None);
        assert_eq!(
            s.held(),
            [G2, G1, G3],
            "current, retiring, fetched while stopping"
        );
        // Whatever still arrives changes nothing but what is held.
        assert_eq!(s.step(Event::Signal(Signal::SIGTERM), t0 + S(15)), []);
        assert_eq!(s.step(Event::RetireDue, t0 + S(15)), []);
    }

    /// A restart end to end: the old generation is revoked only once the new child runs.
    #[test]
    fn a_restart_revokes_the_old_generation_once_the_new_child_runs() {
        let t0 = Instant::now();
        let mut s = running(RESTART);
        let effects = run(
            &mut s,
            t0,
            vec![
                (0, Event::RenewalEnding { token: true }),
                (1, Event::Fetched(G2)),
                (2, Event::ChildExited(143)),
            ],
        );
        assert_eq!(
            effects,
            [
                Effect::Fetch {
                    replacing: G1,
                    relogin: true
                },
                Effect::Terminate(child()),
                Effect::Launch {
                    gen: Some(G2),
                    restart: true
                },
            ]
        );
        assert_eq!(
            s.held(),
            [G1, G2],
            "the old one is still the child's until the launch"
        );
        let next = Pid::from_raw(4343);
        assert_eq!(
            s.step(Event::Launched(next), t0 + S(2)),
            [
                Effect::Renew(G2),
                Effect::Revoke {
                    gens: vec![G1],
                    in_use: Some(G2)
                },
            ]
        );
        assert_eq!(
            (s.child, s.current, s.relogin),
            (Some(next), Some(G2), false)
        );
        assert_eq!(
            s.kill_at, None,
            "the old child's SIGKILL is not aimed at the new one"
        );
    }

    /// The exit-code contract: the child's code as is (128 + N for signal N, computed by
    /// the reaper), 75 to restart the task, 71 for the env file, 126/127 for the command.
    #[test]
    fn exits_follow_the_exit_code_contract() {
        let cases = [
            (Exit::Child(0), 0),
            (Exit::Child(42), 42),
            (Exit::Child(128 + 15), 143),
            (Exit::Failed(Failure(expired())), 75),
            (Exit::Failed(Failure(Error::RotateExit)), 75),
            (Exit::Failed(Failure(env_file())), 71),
            (Exit::Failed(Failure(not_found())), 127),
            (
                Exit::Failed(Failure(Error::Spawn {
                    program: "app".into(),
                    source: io::ErrorKind::PermissionDenied.into(),
                })),
                126,
            ),
        ];
        for (exit, code) in cases {
            let shown = format!("{exit:?}");
            let got = match exit.into_result() {
                Ok(code) => code,
                Err(e) => i32::from(e.exit_code(1)),
            };
            assert_eq!(got, code, "{shown}");
        }
    }
}
