//! baton-env: Vault secrets into a child's environment, and a PID-1 supervisor.
//!
//! Layout:
//! - [`refs`]      `vault:path#key` references and `{{ }}` templates in env values (pure)
//! - [`env`]       parent env + rendered secrets + policy → child env (pure)
//! - [`secret`]    redacting, zeroising holders for secret values
//! - [`vault`]     the [`vault::VaultApi`] seam and its lenient reqwest client
//! - [`transport`] trusted CA certificates and `localhost` resolution, independent of the image
//! - [`auth`]      token / AppRole (wrapped) / JWT / gatekeeper login → token
//! - [`resolve`]   one concurrent read per distinct path, KV v1/v2 detection, render
//! - [`retry`]     backoff with jitter while Vault is unavailable at start
//! - [`supervise`] spawn, forward signals, reap zombies, renew, rotate, revoke; its
//!   decisions in [`supervise::machine`] (pure: `State::step(event, now) -> effects`)
//! - [`error`]     the error enum and the exit-code contract
//! - [`check`]     `baton-env check`: a dry run of a start (login, every reference, revoke)
//!
//! [`run`] is the whole program after flag parsing: `main.rs` builds a [`Config`];
//! [`check`] is `baton-env check`.

pub mod auth;
pub mod check;
pub mod env;
pub mod error;
pub use baton_refs as refs;
pub mod resolve;
pub mod retry;
pub mod secret;
pub mod supervise;
pub mod transport;
pub mod vault;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::{AuthMethod, GatekeeperApi, HttpGatekeeper, NoGatekeeper};
use env::{ChildEnv, EnvPolicy};
use error::Error;
use refs::RefPlan;
use resolve::KvVersions;
use retry::RetryPolicy;
use secret::Secret;
use supervise::{Fetch, Generation, OnRotate, Settings};
use vault::{HttpVault, VaultApi, VaultConfig};

/// How the app is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stay as the app's parent: forward signals, reap, renew, rotate, revoke.
    Supervise,
    /// Replace baton-env with the app (no renewal, nothing revoked).
    Exec,
}

/// Everything `run` needs; built and checked by `main.rs`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None` when no Vault is configured (fine if no variable holds a reference).
    pub vault: Option<VaultConfig>,
    pub auth: AuthMethod,
    /// Gatekeeper URL for `--auth gatekeeper`.
    pub gatekeeper_url: Option<String>,
    pub kv: KvVersions,
    pub mode: Mode,
    pub on_rotate: OnRotate,
    pub env_file: Option<PathBuf>,
    /// Files holding bootstrap material, deleted after login (`--remove-bootstrap-files`).
    pub bootstrap_files: Vec<PathBuf>,
    pub max_wait: Duration,
    pub grace: Duration,
    pub revoke: bool,
    /// Extra variables to remove from the child's environment.
    pub strip_env: BTreeSet<String>,
    pub command: Vec<OsString>,
}

/// Runs baton-env. Returns the exit code (the child's, in supervise mode); in exec mode
/// it only returns on failure.
pub async fn run(config: Config, parent_env: Vec<(OsString, OsString)>) -> Result<i32, Error> {
    // One deadline for the whole start-up: every retry below shares it (`--max-wait`).
    let policy = RetryPolicy::new(config.max_wait);
    if config.command.is_empty() {
        return Err(Error::NoCommand);
    }
    let started = Instant::now();
    let utf8 = parent_env
        .iter()
        .filter_map(|(k, v)| Some((k.to_str()?, v.to_str()?)));
    let (plan, ref_errors) = refs::parse_env(utf8);
    if !ref_errors.is_empty() {
        return Err(Error::Refs(ref_errors));
    }
    let env_policy = EnvPolicy {
        strip: config.strip_env.clone(),
        env_file: config
            .env_file
            .as_ref()
            .map(|p| p.to_string_lossy().into_owned()),
    };

    if plan.is_empty() {
        tracing::info!("no secret references; running the command without Vault");
        let env = env::child_env(parent_env, Vec::new(), &env_policy);
        return launch(
            &config,
            None::<Arc<Source<HttpVault, NoGatekeeper>>>,
            None,
            env,
        )
        .await;
    }

    let vault_config = config.vault.clone().ok_or(Error::NoVaultAddr)?;
    if matches!(&config.auth, AuthMethod::Token(t) if t.is_empty()) {
        return Err(Error::NoToken);
    }
    let api = Arc::new(HttpVault::new(&vault_config)?);
    match &config.gatekeeper_url {
        Some(url) => {
            let http = transport::client_builder(vault_config.ca_cert.as_deref())
                .map_err(vault::ClientError::from)?
                .timeout(vault_config.timeout)
                .build()
                .map_err(|e| Error::Client(vault::ClientError::Build(e)))?;
            let gk = HttpGatekeeper {
                http,
                url: url.clone(),
            };
            start(
                config, api, gk, plan, parent_env, env_policy, policy, started,
            )
            .await
        }
        None => {
            start(
                config,
                api,
                NoGatekeeper,
                plan,
                parent_env,
                env_policy,
                policy,
                started,
            )
            .await
        }
    }
}

/// `baton-env check`: logs in as [`run`] would, checks every reference, revokes what it
/// obtained, runs nothing. Bootstrap files are left in place (`--remove-bootstrap-files` is
/// for starts), though single-use material (a wrapped secret id, the gatekeeper's) is spent.
pub async fn check(
    config: Config,
    parent_env: Vec<(OsString, OsString)>,
) -> Result<check::Report, Error> {
    let utf8 = parent_env
        .iter()
        .filter_map(|(k, v)| Some((k.to_str()?, v.to_str()?)));
    let (plan, ref_errors) = refs::parse_env(utf8);
    if !ref_errors.is_empty() {
        return Err(Error::Refs(ref_errors));
    }
    if plan.is_empty() {
        return Err(Error::NothingToCheck);
    }
    let vault_config = config.vault.clone().ok_or(Error::NoVaultAddr)?;
    if matches!(&config.auth, AuthMethod::Token(t) if t.is_empty()) {
        return Err(Error::NoToken);
    }
    let api = Arc::new(HttpVault::new(&vault_config)?);
    fn source<G>(
        api: Arc<HttpVault>,
        config: &Config,
        plan: RefPlan,
        gatekeeper: G,
    ) -> Source<HttpVault, G> {
        Source {
            api,
            gatekeeper,
            method: config.auth.clone(),
            plan,
            kv: config.kv.clone(),
            policy: RetryPolicy::new(config.max_wait),
            parent_env: Vec::new(),
            env_policy: EnvPolicy::default(),
        }
    }
    match &config.gatekeeper_url {
        Some(url) => {
            let http = transport::client_builder(vault_config.ca_cert.as_deref())
                .map_err(vault::ClientError::from)?
                .timeout(vault_config.timeout)
                .build()
                .map_err(|e| Error::Client(vault::ClientError::Build(e)))?;
            let gk = HttpGatekeeper {
                http,
                url: url.clone(),
            };
            source(api, &config, plan, gk).check().await
        }
        None => source(api, &config, plan, NoGatekeeper).check().await,
    }
}

#[allow(clippy::too_many_arguments)]
async fn start<V: VaultApi + 'static, G: GatekeeperApi + 'static>(
    config: Config,
    api: Arc<V>,
    gatekeeper: G,
    plan: RefPlan,
    parent_env: Vec<(OsString, OsString)>,
    env_policy: EnvPolicy,
    policy: RetryPolicy,
    started: Instant,
) -> Result<i32, Error> {
    let source = Arc::new(Source {
        api,
        gatekeeper,
        method: config.auth.clone(),
        plan,
        kv: config.kv.clone(),
        policy,
        parent_env,
        env_policy,
    });
    let policy = source.policy;
    let login = source.login(&policy).await?;
    // The material is spent (wrapping tokens and single-use secret ids) or now held in
    // memory: the files go before anything else can fail.
    for file in &config.bootstrap_files {
        match std::fs::remove_file(file) {
            Ok(()) => tracing::info!(file = %file.display(), "removed bootstrap file"),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot remove bootstrap file")
            }
        }
    }
    let first = source.generation(login, &policy).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        vars = first.env.vars.len(),
        leases = first.leases.len(),
        "secrets resolved"
    );
    let env = first.env.clone();
    launch(&config, Some(source), Some(first), env).await
}

async fn launch<F: Fetch>(
    config: &Config,
    source: Option<Arc<F>>,
    first: Option<Generation>,
    env: ChildEnv,
) -> Result<i32, Error> {
    match config.mode {
        Mode::Exec => {
            use std::os::unix::process::CommandExt;
            let written = match &config.env_file {
                Some(path) => write_env_file(path, &env.file_vars),
                None => Ok(()),
            };
            let err = match written {
                Err(e) => e,
                Ok(()) => Error::Spawn {
                    program: config.command[0].to_string_lossy().into_owned(),
                    source: supervise::process::command(&config.command, &env).exec(),
                },
            };
            // Only reached when the app could not be started: nobody will use the
            // credentials, so they are revoked like on any other exit.
            if let Some(path) = &config.env_file {
                let _ = std::fs::remove_file(path);
            }
            if let Some(g) = first {
                supervise::revoke(&source, &[&g], None, config.revoke).await;
            }
            Err(err)
        }
        Mode::Supervise => {
            let settings = Settings {
                argv: config.command.clone(),
                on_rotate: config.on_rotate,
                grace: config.grace,
                env_file: config.env_file.clone(),
                revoke: config.revoke,
            };
            supervise::run(settings, source, first, env).await
        }
    }
}

/// Everything needed to (re)fetch credentials: used at start and on rotation.
pub struct Source<V, G> {
    api: Arc<V>,
    gatekeeper: G,
    method: AuthMethod,
    plan: RefPlan,
    kv: KvVersions,
    policy: RetryPolicy,
    parent_env: Vec<(OsString, OsString)>,
    env_policy: EnvPolicy,
}

/// A token just obtained (or given), before anything was read with it.
struct Login {
    token: Arc<Secret>,
    /// `None`: the previous generation's token, whose renewal state carries over.
    ttl: Option<Duration>,
    renewable: bool,
    /// Obtained by a login just now (so revoked if nothing comes of it).
    fresh: bool,
    /// What Vault said when a given token was asked about itself.
    check: TokenCheck,
}

/// A given token is asked about itself (`auth/token/lookup-self`) before a login is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenCheck {
    /// Vault knows the token (or it came from a login just now).
    Valid,
    /// 403: the token is invalid, expired or revoked, or its policies lack Vault's `default`
    /// policy (which grants `lookup-self`). Its reads decide: all refused means the former.
    Denied,
    /// The server could not say (unreachable past `--max-wait`, or no such endpoint).
    Unknown,
}

impl<V: VaultApi + 'static, G: GatekeeperApi + 'static> Source<V, G> {
    /// Whether baton-env obtained its tokens (and so revokes them), vs. was given one.
    fn owns_tokens(&self) -> bool {
        !matches!(self.method, AuthMethod::Token(_))
    }

    /// Logs in with the configured method. A given token is looked up first (its TTL, and
    /// whether Vault knows it): "logged in" is only said of a token Vault accepted.
    async fn login(&self, policy: &RetryPolicy) -> Result<Login, Error> {
        let login = auth::login(self.api.as_ref(), &self.gatekeeper, &self.method, policy).await?;
        let (ttl, renewable, check) = match login.ttl {
            Some(ttl) => (ttl, login.renewable, TokenCheck::Valid),
            None => self.check_token(&login.token, policy).await,
        };
        if check == TokenCheck::Valid {
            tracing::info!(
                method = self.method.name(),
                ttl_s = ttl.as_secs(),
                renewable,
                "logged in"
            );
        }
        Ok(Login {
            token: Arc::new(login.token),
            ttl: Some(ttl),
            renewable,
            fresh: self.owns_tokens(),
            check,
        })
    }

    /// Resolves the plan with `login`'s token into a generation. When that fails, a token
    /// obtained just for it is revoked (with its leases from the reads that succeeded).
    async fn generation(&self, login: Login, policy: &RetryPolicy) -> Result<Generation, Error> {
        let resolved = resolve::resolve(
            self.api.as_ref(),
            &login.token,
            &self.plan,
            &self.kv,
            policy,
        )
        .await;
        let resolved = match resolved {
            Ok(r) => r,
            // Nothing readable and every read refused, after lookup-self was refused too: the
            // token itself is bad (exit 77), not the references.
            Err(e) if login.check == TokenCheck::Denied && e.all_denied() => {
                return Err(auth::AuthError::TokenRefused.into());
            }
            Err(e) => {
                if login.fresh {
                    let revoked = tokio::time::timeout(
                        Duration::from_secs(5),
                        self.api.revoke_self(&login.token),
                    )
                    .await;
                    if !matches!(revoked, Ok(Ok(()))) {
                        tracing::warn!("cannot revoke the token of a failed start");
                    }
                }
                return Err(e.into());
            }
        };
        if login.check == TokenCheck::Denied {
            tracing::info!(
                method = self.method.name(),
                "logged in (the token reads its secrets but may not look itself up: it is not renewed)"
            );
        }
        for (path, took) in &resolved.timings {
            tracing::info!(path = %path, took_ms = took.as_millis() as u64, "read");
        }
        let env = env::child_env(
            self.parent_env.iter().cloned(),
            resolved.vars,
            &self.env_policy,
        );
        Ok(Generation {
            token: login.token,
            token_ttl: login.ttl,
            token_renewable: login.renewable,
            token_owned: self.owns_tokens(),
            leases: resolved.leases,
            env,
        })
    }

    /// A given token's TTL, and whether Vault accepts it. A token Vault cannot say anything
    /// about gets "never expires" (no renewal) and its reads decide.
    async fn check_token(
        &self,
        token: &Secret,
        policy: &RetryPolicy,
    ) -> (Duration, bool, TokenCheck) {
        match retry::retry(policy, "token lookup", || self.api.lookup_self(token)).await {
            Ok(info) => (info.ttl, info.renewable.unwrap_or(true), TokenCheck::Valid),
            Err(vault::VaultError::PermissionDenied { .. }) => {
                tracing::warn!(
                    "the Vault token may not look itself up (auth/token/lookup-self: permission denied): it is invalid, expired or revoked, or lacks Vault's default policy; its reads will tell"
                );
                (Duration::ZERO, false, TokenCheck::Denied)
            }
            Err(e) => {
                tracing::warn!(error = %e, "token lookup failed; the token will not be renewed");
                (Duration::ZERO, false, TokenCheck::Unknown)
            }
        }
    }
}

impl<V: VaultApi + 'static, G: GatekeeperApi + 'static> Fetch for Source<V, G> {
    type Api = V;

    fn api(&self) -> Arc<V> {
        self.api.clone()
    }

    /// Each rotation gets its own `--max-wait` budget.
    async fn fetch(&self, token_ending: bool, token: Arc<Secret>) -> Result<Generation, Error> {
        let policy = self.policy.restarted();
        if self.method.can_relogin() {
            match self.login(&policy).await {
                Ok(login) => return self.generation(login, &policy).await,
                Err(e) if token_ending => return Err(e),
                Err(e) => tracing::warn!(
                    error = %chain(&e),
                    "logging in again failed; reading the rotated secrets with the current token"
                ),
            }
        } else if token_ending {
            return Err(Error::CredentialsExpired);
        }
        let same = Login {
            token,
            ttl: None,
            renewable: false,
            fresh: false,
            check: TokenCheck::Valid,
        };
        self.generation(same, &policy).await
    }
}

/// Writes the env file atomically with mode 0400 (temp file + rename), warning when
/// the directory is not on tmpfs (the secrets would reach a disk).
pub fn write_env_file(path: &Path, vars: &[(String, Secret)]) -> Result<(), Error> {
    let err = |source| Error::EnvFile {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(fs) = nix::sys::statfs::statfs(dir) {
        if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            tracing::warn!(dir = %dir.display(), "env file directory is not on tmpfs; secrets may reach a disk");
        }
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let contents = env::env_file_contents(vars);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    let written = file
        .write_all(contents.expose().as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400)))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// An error and its sources on one line, for logs.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
