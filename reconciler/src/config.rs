//! Configuration of every command: flags and `BATON_*` environment variables (declared here,
//! once each, and parsed by clap in the `baton` binary) over an optional YAML file (`baton
//! serve --config FILE`, keys named as the flags) over defaults. Everything is checked before
//! anything binds a port or touches the network, and an error names where the bad value came
//! from: the flag, the environment variable, or the config key and file ([`Origin`]).
//!
//! - [`serve`]: `baton serve` ([`ServeArgs`] -> [`ServeConfig`]); [`resolve`] is its layering.
//! - [`marathon`], [`live`]: the Marathon client of `plan`, `drift`, `apply` ([`MarathonArgs`]).
//! - [`plan_secrets`]: `baton plan`'s Vault access; `serve` reads the same [`VaultArgs`] with
//!   the same checks ([`VaultAccess`]).
//! - [`apply_options`]: `baton apply`'s knobs.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::commands::{LiveFrom, PlanSecrets, PlanVault};
use crate::daemon::reconcile::SyncMode;
use crate::secret_zero::vault_admin::VaultAdminConfig;
use crate::source::git::GitAuth;
use baton_core::environment::Environment;
use baton_core::secrets::AllowedPolicies;
use baton_marathon::marathon::{Auth, MarathonConfig};

/// `baton serve`'s settings: the config file's keys, and (where a key is also a flag of its
/// own) the flags. Every key mirrors a flag (kebab-case). Secrets are given as `*-file` paths,
/// never inline. The Marathon client and Vault keys are flags of [`MarathonArgs`] and
/// [`VaultArgs`], which other commands share.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct FileConfig {
    /// Git URL (https, http, file, ssh), local git repo, or plain directory (watched).
    #[arg(long, env = "BATON_REPO")]
    pub repo: Option<String>,
    /// Branch, tag or commit to follow [default: main].
    #[serde(rename = "ref")]
    #[arg(long = "ref", env = "BATON_REF")]
    pub reference: Option<String>,
    /// Where the bare git cache lives [default: <state-dir>/git-cache].
    #[arg(long, env = "BATON_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Where the sync state is kept across restarts.
    #[arg(long, env = "BATON_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Address of the webhook/status server [default: 127.0.0.1:8088].
    #[arg(long, env = "BATON_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Marathon (or dev scheduler) base URL.
    #[arg(long, env = "BATON_MARATHON")]
    pub marathon: Option<String>,
    /// Per-request timeout of the Marathon client (`30s`).
    #[arg(skip)]
    pub marathon_timeout: Option<String>,
    /// Extra CA certificate (PEM) for Marathon.
    #[arg(skip)]
    pub marathon_ca: Option<PathBuf>,
    /// HTTP basic auth to Marathon: the user, and a file holding the password.
    #[arg(skip)]
    pub marathon_user: Option<String>,
    #[arg(skip)]
    pub marathon_password_file: Option<PathBuf>,
    /// A file holding a DC/OS token (`Authorization: token=...`).
    #[arg(skip)]
    pub marathon_token_file: Option<PathBuf>,
    /// `auto`: apply on change; `manual`: plan and report, apply on `POST /api/sync`.
    #[arg(long, value_enum, env = "BATON_SYNC")]
    pub sync: Option<SyncMode>,
    /// Safety-net poll interval, e.g. `60s` [default: 60s].
    #[arg(long, env = "BATON_POLL_INTERVAL")]
    pub poll_interval: Option<String>,
    /// File holding the webhook secret (or set BATON_WEBHOOK_SECRET).
    #[arg(long, env = "BATON_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// File holding the bearer token `POST /api/sync` requires (or set BATON_API_TOKEN);
    /// without one, only loopback clients may ask for a sync.
    #[arg(long, env = "BATON_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Trust this request header (e.g. `X-Forwarded-User`) to name a logged-in user of the
    /// status page. Only behind a reverse proxy that sets it and strips it from clients.
    #[arg(long, env = "BATON_AUTH_PROXY_HEADER")]
    pub auth_proxy_header: Option<String>,
    /// Allow up to N deletions per sync even over the delete budget.
    #[arg(long, env = "BATON_ALLOW_DELETES")]
    pub allow_deletes: Option<usize>,
    /// User name for HTTPS git auth [default: x-access-token].
    #[arg(long, env = "BATON_GIT_USER")]
    pub git_user: Option<String>,
    /// File holding the HTTPS git token or password (or set BATON_GIT_TOKEN).
    #[arg(long, env = "BATON_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    // Secret zero (all optional: without `vault-addr` no app may read Vault secrets).
    #[arg(skip)]
    pub vault_addr: Option<String>,
    #[arg(skip)]
    pub vault_token_file: Option<PathBuf>,
    #[arg(skip)]
    pub vault_approle_mount: Option<String>,
    #[arg(skip)]
    pub gatekeeper_url: Option<String>,
    /// Secret zero: oldest task (since staging) that may still ask for its secret id [default: 120s].
    #[arg(long, env = "BATON_TASK_MAX_AGE")]
    pub task_max_age: Option<String>,
    /// Secret zero: require requests to come from the task's host [default: true].
    #[arg(long, env = "BATON_GATEKEEPER_HOST_CHECK", num_args = 0..=1, default_missing_value = "true")]
    pub gatekeeper_host_check: Option<bool>,
    /// Secret zero: TTL of the response-wrapped secret id [default: 60s].
    #[arg(long, env = "BATON_WRAP_TTL")]
    pub wrap_ttl: Option<String>,
    /// The extra Vault policies specs may give their apps (`baton.secrets.policies`); none
    /// by default. Compared trimmed and case-insensitively; `root` is refused.
    #[arg(skip)]
    pub vault_allowed_policies: Option<Vec<String>>,
    /// Generic JSON notification webhooks.
    #[arg(skip)]
    pub notify_webhook: Option<Vec<String>>,
    /// File of Slack-compatible webhook URLs, one a line (they carry a token).
    #[arg(long, env = "BATON_NOTIFY_SLACK_FILE")]
    pub notify_slack_file: Option<PathBuf>,
    /// Rollouts: HAProxy stats CSV URLs (`haproxy-stats` in the file: a list).
    #[arg(skip)]
    pub haproxy_stats: Option<Vec<String>>,
    /// Rollouts: `command` checks (code from git, run on this host) may run.
    #[arg(long, env = "BATON_ALLOW_CHECK_COMMANDS", num_args = 0..=1, default_missing_value = "true")]
    pub allow_check_commands: Option<bool>,
    /// Rollouts: the longest wait between two looks at a rollout [default: 5s].
    #[arg(long, env = "BATON_ROLLOUT_TICK", hide = true)]
    pub rollout_tick: Option<String>,
    /// The environment of `baton.yaml` this daemon syncs (one daemon per environment); its
    /// Marathon is the environment's unless `--marathon` is given (docs/environments.md).
    #[arg(long, env = "BATON_ENVIRONMENT")]
    pub environment: Option<String>,
    /// HA: ZooKeeper `HOST:PORT[,...]`; several `baton serve` elect one writer there
    /// (docs/ha.md). Without it: a single replica, as before.
    #[arg(long, env = "BATON_HA_ZOOKEEPER")]
    pub ha_zookeeper: Option<String>,
    /// HA: the group's znode [default: /baton/<hash of repo and ref>].
    #[arg(long, env = "BATON_HA_PATH")]
    pub ha_path: Option<String>,
    /// HA: the ZooKeeper session timeout asked for; a leader stops writing 2/3 of it after
    /// its last confirmed heartbeat [default: 10s].
    #[arg(long, env = "BATON_HA_SESSION_TIMEOUT")]
    pub ha_session_timeout: Option<String>,
    /// HA: this replica's name in the election [default: <hostname>:<listen port>].
    #[arg(long, env = "BATON_HA_ID")]
    pub ha_id: Option<String>,
    /// The file these settings were read from (`None`: flags, or no file), named in errors.
    #[serde(skip)]
    #[arg(skip)]
    pub source: Option<PathBuf>,
}

/// The Marathon client's flags, shared by `plan`, `drift`, `apply` and `serve` (no `Debug`:
/// the password and token are given inline).
#[derive(Clone, Default, clap::Args)]
pub struct MarathonArgs {
    /// HTTP basic auth user.
    #[arg(long, env = "BATON_MARATHON_USER")]
    pub marathon_user: Option<String>,
    /// HTTP basic auth password (prefer the environment variable).
    #[arg(long, env = "BATON_MARATHON_PASSWORD", hide_env_values = true)]
    pub marathon_password: Option<String>,
    /// DC/OS token, sent as `Authorization: token=...`.
    #[arg(long, env = "BATON_MARATHON_TOKEN", hide_env_values = true)]
    pub marathon_token: Option<String>,
    /// Extra CA certificate (PEM) to trust.
    #[arg(long, env = "BATON_MARATHON_CA")]
    pub marathon_ca: Option<PathBuf>,
    /// Per-request timeout, e.g. `30s` [default: 30s].
    #[arg(long, env = "BATON_MARATHON_TIMEOUT")]
    pub marathon_timeout: Option<String>,
}

/// Vault access of the reconciler (secret zero), read by `plan` and `serve` alike; without
/// `--vault-addr` apps may not read Vault secrets (`serve`) or their Vault state is shown as
/// unknown (`plan`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VaultArgs {
    /// Vault address, e.g. `https://vault:8200` (also injected into app envs as VAULT_ADDR).
    #[arg(long, env = "BATON_VAULT_ADDR")]
    pub vault_addr: Option<String>,
    /// File holding the reconciler's Vault token (or set BATON_VAULT_TOKEN or VAULT_TOKEN).
    #[arg(long, env = "BATON_VAULT_TOKEN_FILE")]
    pub vault_token_file: Option<PathBuf>,
    /// AppRole auth mount [default: approle].
    #[arg(long, env = "BATON_VAULT_APPROLE_MOUNT")]
    pub vault_approle_mount: Option<String>,
    /// URL tasks use to reach `POST /v1/secret-zero` [default: http://<listen>/v1/secret-zero].
    #[arg(long, env = "BATON_GATEKEEPER_URL")]
    pub gatekeeper_url: Option<String>,
    /// Extra Vault policies a spec may give its app (`baton.secrets.policies`), comma
    /// separated; compared trimmed and case-insensitively; `root` never [default: none].
    #[arg(long, env = "BATON_VAULT_ALLOWED_POLICIES", value_delimiter = ',')]
    pub vault_allowed_policies: Vec<String>,
}

impl VaultArgs {
    /// These flags as a settings layer (the shape the config file has).
    fn layer(self, into: &mut FileConfig) {
        into.vault_addr = self.vault_addr;
        into.vault_token_file = self.vault_token_file;
        into.vault_approle_mount = self.vault_approle_mount;
        into.gatekeeper_url = self.gatekeeper_url;
        into.vault_allowed_policies =
            (!self.vault_allowed_policies.is_empty()).then_some(self.vault_allowed_policies);
    }
}

/// Where `plan` and `drift` read the live apps from: exactly one of the two.
#[derive(Debug, Clone, Default, clap::Args)]
// Not `required`: with `--environment` the Marathon is the environment's.
#[group(required = false, multiple = false)]
pub struct LiveArgs {
    /// Marathon (or dev scheduler) base URL [default: the environment's].
    #[arg(long, env = "BATON_MARATHON")]
    pub marathon: Option<String>,
    /// A saved `GET /v2/apps` response to plan against, with no server.
    #[arg(long)]
    pub live: Option<PathBuf>,
}

/// Everything `baton serve` takes on its command line (and from the environment).
#[derive(Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Optional YAML config file (keys as the flags, kebab-case); flags and env win over it.
    #[arg(long, env = "BATON_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: FileConfig,
    #[command(flatten)]
    pub marathon: MarathonArgs,
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Generic JSON webhook for notifications (repeatable; the env var takes a comma list).
    #[arg(
        long,
        env = "BATON_NOTIFY_WEBHOOK",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub notify_webhook: Vec<String>,
    /// Slack-compatible incoming webhook (repeatable). Prefer the env var or
    /// --notify-slack-file: the URL holds a token.
    #[arg(
        long,
        env = "BATON_NOTIFY_SLACK",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub notify_slack: Vec<String>,
    /// HAProxy stats CSV URL for rollouts (repeatable; the env var takes a comma list), e.g.
    /// `http://lb:9090/haproxy?stats;csv`. Credentials in the URL are sent as basic auth and
    /// never shown.
    #[arg(
        long,
        env = "BATON_HAPROXY_STATS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub haproxy_stats: Vec<String>,
}

/// Where a setting's value came from: every error about a value names it, so that the
/// operator knows whether to fix a flag, an environment variable or a line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command line (the setting's name is the flag).
    Flag,
    /// The environment variable clap read for the flag.
    Env(String),
    /// A key of the config file (`None`: a file layer given without a path, in tests).
    File { key: String, path: Option<PathBuf> },
    /// The built-in default.
    Default,
    /// The settings of this environment in the repo's `baton.yaml` (docs/environments.md).
    Environment(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => Ok(()),
            Origin::Env(var) => write!(f, " (from the environment variable {var})"),
            Origin::File { key, path: Some(p) } => {
                write!(f, " (from the config key `{key}` in {})", p.display())
            }
            Origin::File { key, path: None } => write!(f, " (from the config key `{key}`)"),
            Origin::Default => write!(f, " (the default)"),
            Origin::Environment(name) => write!(f, " (from environment `{name}` in baton.yaml)"),
        }
    }
}

/// Which flags clap filled from their environment variable (flag -> variable); every other
/// value of the flag layer came from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    env: BTreeMap<String, String>,
}

impl Sources {
    /// `flag` (`--poll-interval`) was given by the environment variable `var`.
    pub fn env(&mut self, flag: impl Into<String>, var: impl Into<String>) {
        self.env.insert(flag.into(), var.into());
    }

    /// Where the flag layer's value of `flag` came from.
    pub fn of(&self, flag: &str) -> Origin {
        match self.env.get(flag) {
            Some(var) => Origin::Env(var.clone()),
            None => Origin::Flag,
        }
    }
}

/// How the environment is read (the process's in the binary, a map in tests): unset and
/// empty are the same.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, empty values as unset.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// What the flags gave (all optional: the file and defaults fill the rest).
#[derive(Debug, Clone, Default)]
pub struct FlagConfig {
    pub file: FileConfig,
    /// Which of `file`'s values clap read from the environment.
    pub sources: Sources,
    /// `BATON_WEBHOOK_SECRET` (inline, from the environment).
    pub webhook_secret: Option<SecretString>,
    /// `BATON_API_TOKEN`.
    pub api_token: Option<SecretString>,
    /// `BATON_GIT_TOKEN` / `BATON_GIT_PASSWORD`.
    pub git_token: Option<SecretString>,
    /// `--notify-webhook` / `BATON_NOTIFY_WEBHOOK` (URLs may carry tokens: kept secret).
    pub notify_webhook: Vec<SecretString>,
    /// `--notify-slack` / `BATON_NOTIFY_SLACK`.
    pub notify_slack: Vec<SecretString>,
    /// `--haproxy-stats` / `BATON_HAPROXY_STATS` (URLs may carry credentials: kept secret).
    pub haproxy_stats: Vec<SecretString>,
    /// `BATON_VAULT_TOKEN` / `VAULT_TOKEN`.
    pub vault_token: Option<SecretString>,
}

/// The reconciler's Vault access, read the same way (same names, same checks) by `plan` and
/// `serve`.
#[derive(Debug, Clone)]
pub struct VaultAccess {
    /// Vault base address (also injected into app envs as `VAULT_ADDR`).
    pub addr: String,
    /// The reconciler's own token (policy in `docs/security.md`).
    pub token: SecretString,
    pub approle_mount: String,
    /// The URL tasks use to reach `POST /v1/secret-zero`; `None`: derived from the address
    /// `serve` listens on (`plan`: taken from the live apps).
    pub gatekeeper_url: Option<String>,
}

/// Secret zero in `baton serve`: the reconciler's Vault access and the gatekeeper's settings.
#[derive(Debug, Clone)]
pub struct VaultServeConfig {
    /// Vault base address (also injected into app envs as `VAULT_ADDR`).
    pub addr: String,
    /// The reconciler's own token (policy in `docs/security.md`).
    pub token: SecretString,
    pub approle_mount: String,
    /// The URL tasks use to reach `POST /v1/secret-zero`; `None`: derived from the address
    /// `serve` listens on.
    pub gatekeeper_url: Option<String>,
    pub task_max_age: Duration,
    pub host_check: bool,
    pub wrap_ttl: Duration,
    /// `--vault-allowed-policies`: the extra policies specs may ask for.
    pub allowed_policies: baton_core::secrets::AllowedPolicies,
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Git URL, local git repo, or plain directory.
    pub repo: String,
    pub reference: String,
    pub cache_dir: PathBuf,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    pub marathon: MarathonConfig,
    pub sync: SyncMode,
    pub poll_interval: Duration,
    /// The push webhooks' shared secret; `None`: no webhook is accepted (a git repo is polled,
    /// a plain directory is watched).
    pub webhook_secret: Option<SecretString>,
    /// Bearer token of `POST /api/sync`; `None`: only loopback clients may call it.
    pub api_token: Option<SecretString>,
    /// `--auth-proxy-header`: the header a trusted reverse proxy names the user in.
    pub auth_proxy_header: Option<axum::http::HeaderName>,
    pub allow_deletes: Option<usize>,
    /// HTTPS git credentials (also those written into `repo`'s URL, which is then without them).
    pub git_auth: Option<GitAuth>,
    /// Secret zero; `None`: apps with `vault:` references are blocked with an error.
    pub vault: Option<VaultServeConfig>,
    /// Where notifications go (empty: nowhere). URLs are redacted in `Debug`.
    pub notify: Vec<crate::daemon::notifications::Sink>,
    /// Rollouts: the HAProxy stats sources (credentials redacted in `Debug`).
    pub haproxy_stats: Vec<crate::daemon::rollout::StatsSource>,
    /// Rollouts: `command` checks may run.
    pub allow_check_commands: bool,
    /// Rollouts: the longest wait between two looks.
    pub rollout_tick: Duration,
    /// The environment synced (`--environment`); `None`: a repo without environments.
    pub environment: Option<String>,
    /// HA on ZooKeeper (`None`: standalone).
    pub ha: Option<crate::ha::HaConfig>,
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("missing setting: {0}")]
    Missing(&'static str),
    #[error("bad setting {name}{origin}: {reason}")]
    Bad {
        name: &'static str,
        origin: Origin,
        reason: String,
    },
}

/// Read a YAML config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let err = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let doc = baton_core::spec::parse::parse(
        &text,
        baton_core::spec::parse::Format::Yaml,
        baton_core::spec::parse::Limits::default(),
    )
    .map_err(|e| err(e.message))?;
    let mut file: FileConfig = serde_json::from_value(doc).map_err(|e| err(e.to_string()))?;
    file.source = Some(path.to_path_buf());
    Ok(file)
}

/// `baton serve`: the flags (and environment) over the config file they name, checked.
pub fn serve(
    args: ServeArgs,
    sources: Sources,
    env: EnvLookup,
) -> Result<ServeConfig, ConfigError> {
    let file = match &args.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let url = args.settings.marathon.clone().unwrap_or_default();
    let marathon = marathon(url, &args.marathon, &sources)?;
    let mut layer = args.settings;
    layer.marathon_timeout = args.marathon.marathon_timeout;
    layer.marathon_ca = args.marathon.marathon_ca;
    layer.marathon_user = args.marathon.marathon_user;
    args.vault.layer(&mut layer);
    let secret = |name: &str| env(name).map(SecretString::from);
    let secrets = |urls: Vec<String>| urls.into_iter().map(SecretString::from).collect();
    let flags = FlagConfig {
        file: layer,
        sources,
        webhook_secret: secret("BATON_WEBHOOK_SECRET"),
        api_token: secret("BATON_API_TOKEN"),
        git_token: secret("BATON_GIT_TOKEN").or_else(|| secret("BATON_GIT_PASSWORD")),
        vault_token: vault_token(env),
        notify_webhook: secrets(args.notify_webhook),
        notify_slack: secrets(args.notify_slack),
        haproxy_stats: secrets(args.haproxy_stats),
    };
    resolve(flags, file, marathon)
}

/// The reconciler's Vault token from the environment (a `--vault-token-file` wins over it).
fn vault_token(env: EnvLookup) -> Option<SecretString> {
    (env("BATON_VAULT_TOKEN").or_else(|| env("VAULT_TOKEN"))).map(SecretString::from)
}

/// A Marathon client's settings from its flags (and their environment variables).
pub fn marathon(
    url: String,
    args: &MarathonArgs,
    sources: &Sources,
) -> Result<MarathonConfig, ConfigError> {
    let mut config = MarathonConfig::new(url);
    if let Some(t) = &args.marathon_timeout {
        config.timeout = duration("--marathon-timeout", t, sources.of("--marathon-timeout"))?;
    }
    config.ca_cert = args.marathon_ca.clone();
    config.auth = match (&args.marathon_token, &args.marathon_user) {
        (Some(t), _) => Some(Auth::Token(SecretString::from(t.clone()))),
        (None, Some(u)) => Some(Auth::Basic {
            user: u.clone(),
            password: SecretString::from(args.marathon_password.clone().unwrap_or_default()),
        }),
        (None, None) => None,
    };
    Ok(config)
}

/// Where `plan` and `drift` read the live apps.
pub fn live(
    args: &LiveArgs,
    auth: &MarathonArgs,
    sources: &Sources,
) -> Result<LiveFrom, ConfigError> {
    if let Some(path) = &args.live {
        return Ok(LiveFrom::File(path.clone()));
    }
    let url = (args.marathon.clone()).ok_or(ConfigError::Missing("one of --marathon or --live"))?;
    Ok(LiveFrom::Scheduler(marathon(url, auth, sources)?))
}

/// `baton plan`'s secret-zero settings: the allow-list, and Vault access when `--vault-addr`
/// is given (the same settings and checks as `serve`'s).
/// With `--environment`, `environment` is that environment: its `vaultAddr` is the address
/// unless `--vault-addr` (or `BATON_VAULT_ADDR`) gives one.
pub fn plan_secrets(
    args: VaultArgs,
    environment: Option<&Environment>,
    sources: &Sources,
    env: EnvLookup,
) -> Result<PlanSecrets, ConfigError> {
    let mut flags = FileConfig::default();
    args.layer(&mut flags);
    let layers = Layers {
        flags: &flags,
        file: &FileConfig::default(),
        sources,
    };
    let (allowed, access) = vault_access(&layers, vault_token(env), environment)?;
    Ok(PlanSecrets {
        vault: access.map(|a| PlanVault {
            admin: VaultAdminConfig {
                addr: a.addr,
                token: a.token,
                approle_mount: a.approle_mount,
                timeout: Duration::from_secs(30),
            },
            gatekeeper_url: a.gatekeeper_url,
        }),
        allowed,
    })
}

/// `baton apply`'s knobs; `marathon` is its client (two request timeouts without an answer is
/// a scheduler gone, as in `baton serve`).
pub fn apply_options(
    lock_wait: &str,
    parallelism: usize,
    force_delete: bool,
    marathon: &MarathonConfig,
    sources: &Sources,
) -> Result<crate::apply::ApplyOptions, ConfigError> {
    Ok(crate::apply::ApplyOptions {
        parallelism,
        lock_wait: duration("--lock-wait", lock_wait, sources.of("--lock-wait"))?,
        force_delete,
        scheduler_silence: marathon.timeout.saturating_mul(2),
        ..Default::default()
    })
}

/// The flag layer over the file layer: each value with where it came from.
struct Layers<'a> {
    flags: &'a FileConfig,
    file: &'a FileConfig,
    sources: &'a Sources,
}

impl Layers<'_> {
    /// `name`'s value (flags or env over the file) and its origin.
    fn pick<T: Clone>(
        &self,
        name: &'static str,
        get: impl Fn(&FileConfig) -> &Option<T>,
    ) -> Option<(T, Origin)> {
        if let Some(v) = get(self.flags) {
            return Some((v.clone(), self.sources.of(name)));
        }
        let origin = Origin::File {
            key: name.trim_start_matches('-').to_string(),
            path: self.file.source.clone(),
        };
        get(self.file).clone().map(|v| (v, origin))
    }

    /// `name`'s value, flags or env over the file.
    fn value<T: Clone>(
        &self,
        name: &'static str,
        get: impl Fn(&FileConfig) -> &Option<T>,
    ) -> Option<T> {
        self.pick(name, get).map(|(v, _)| v)
    }

    /// A secret read from the file `name` names, if any.
    fn secret_file(
        &self,
        name: &'static str,
        get: impl Fn(&FileConfig) -> &Option<PathBuf>,
    ) -> Result<Option<SecretString>, ConfigError> {
        match self.pick(name, get) {
            Some((path, origin)) => read_secret(&path, name, origin).map(Some),
            None => Ok(None),
        }
    }

    /// A duration (`default` when unset) of at least `min`.
    fn duration(
        &self,
        name: &'static str,
        get: impl Fn(&FileConfig) -> &Option<String>,
        default: &str,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let (text, origin) = (self.pick(name, get)).unwrap_or((default.into(), Origin::Default));
        let d = duration(name, &text, origin.clone())?;
        if d < min {
            return Err(ConfigError::Bad {
                name,
                origin,
                reason: format!("must be at least {}", humantime::format_duration(min)),
            });
        }
        Ok(d)
    }
}

fn duration(name: &'static str, text: &str, origin: Origin) -> Result<Duration, ConfigError> {
    baton_core::spec::load::parse_duration(text).map_err(|reason| ConfigError::Bad {
        name,
        origin,
        reason,
    })
}

/// Flags over file over defaults. `marathon` carries the flag-level client settings (auth,
/// CA, timeout); its URL is replaced when only the file gives one.
pub fn resolve(
    flags: FlagConfig,
    file: FileConfig,
    mut marathon: MarathonConfig,
) -> Result<ServeConfig, ConfigError> {
    let l = Layers {
        flags: &flags.file,
        file: &file,
        sources: &flags.sources,
    };
    marathon_from_file(&mut marathon, &l)?;
    let mut repo = (l.value("--repo", |c| &c.repo)).ok_or(ConfigError::Missing("--repo"))?;
    let environment = l.value("--environment", |c| &c.environment);
    // The environment's settings, read once, where a flag (or the config file) leaves its
    // Marathon or its Vault address to it.
    let marathon_given =
        !marathon.url.is_empty() || l.value("--marathon", |c| &c.marathon).is_some();
    let vault_given = l.value("--vault-addr", |c| &c.vault_addr).is_some();
    let settings = match &environment {
        Some(env) if !(marathon_given && vault_given) => {
            crate::environment::serve_environment(&repo, env, l.sources.of("--environment"))?
        }
        _ => None,
    };
    let vault = resolve_vault(&l, flags.vault_token.clone(), settings.as_ref())?;
    // Credentials in the URL become git credentials: the URL is shown in logs and status.
    let url_auth =
        baton_core::userinfo::split_http_userinfo(&repo).map(|(bare, user, password)| {
            repo = bare;
            GitAuth { user, password }
        });
    let reference = (l.value("--ref", |c| &c.reference)).unwrap_or_else(|| "main".into());
    let state_dir =
        (l.value("--state-dir", |c| &c.state_dir)).ok_or(ConfigError::Missing("--state-dir"))?;
    let cache_dir =
        (l.value("--cache-dir", |c| &c.cache_dir)).unwrap_or_else(|| state_dir.join("git-cache"));
    let listen = (l.value("--listen", |c| &c.listen))
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8088)));
    if marathon.url.is_empty() {
        marathon.url = match (l.value("--marathon", |c| &c.marathon), &environment, &settings) {
            (Some(url), _, _) => url,
            (None, Some(_), Some(settings)) => {
                let bad = |e: crate::environment::EnvironmentError| ConfigError::Bad {
                    name: "--environment",
                    origin: l.sources.of("--environment"),
                    reason: e.to_string(),
                };
                marathon = crate::environment::marathon_for(
                    settings,
                    None,
                    marathon,
                    &process_env,
                )
                .map_err(bad)?;
                marathon.url.clone()
            }
            (None, Some(_), None) => {
                return Err(ConfigError::Bad {
                    name: "--environment",
                    origin: l.sources.of("--environment"),
                    reason: "the repo is not a directory on this host with a baton.yaml: give --marathon too (a daemon's Marathon is fixed when it starts)".into(),
                })
            }
            (None, None, _) => return Err(ConfigError::Missing("--marathon")),
        };
    }
    marathon.take_url_credentials();
    let poll_interval = l.duration(
        "--poll-interval",
        |c| &c.poll_interval,
        "60s",
        Duration::from_secs(1),
    )?;
    let webhook_secret = match flags.webhook_secret.clone() {
        Some(s) => Some(s),
        None => l.secret_file("--webhook-secret-file", |c| &c.webhook_secret_file)?,
    };
    let git_token = match flags.git_token.clone() {
        Some(t) => Some(t),
        None => l.secret_file("--git-token-file", |c| &c.git_token_file)?,
    };
    let notify = notify_sinks(&l, &flags.notify_webhook, &flags.notify_slack)?;
    let api_token = match flags.api_token.clone() {
        Some(t) => Some(t),
        None => l.secret_file("--api-token-file", |c| &c.api_token_file)?,
    };
    let haproxy_stats = haproxy_stats(&l, &flags.haproxy_stats)?;
    let auth_proxy_header = match l.pick("--auth-proxy-header", |c| &c.auth_proxy_header) {
        Some((h, origin)) => {
            Some(
                axum::http::HeaderName::try_from(h.trim()).map_err(|e| ConfigError::Bad {
                    name: "--auth-proxy-header",
                    origin,
                    reason: format!("not an HTTP header name: {e}"),
                })?,
            )
        }
        None => None,
    };
    let allow_check_commands =
        (l.value("--allow-check-commands", |c| &c.allow_check_commands)).unwrap_or(false);
    let rollout_tick = l.duration(
        "--rollout-tick",
        |c| &c.rollout_tick,
        "5s",
        Duration::from_millis(100),
    )?;
    let git_auth = git_token
        .map(|password| GitAuth {
            user: (l.value("--git-user", |c| &c.git_user))
                .unwrap_or_else(|| "x-access-token".into()),
            password,
        })
        .or(url_auth);
    let ha = ha(&l, &repo, &reference, listen, vault.as_ref())?;
    Ok(ServeConfig {
        repo,
        reference,
        cache_dir,
        state_dir,
        listen,
        marathon,
        sync: (l.value("--sync", |c| &c.sync)).unwrap_or(SyncMode::Auto),
        poll_interval,
        webhook_secret,
        api_token,
        auth_proxy_header,
        allow_deletes: l.value("--allow-deletes", |c| &c.allow_deletes),
        git_auth,
        vault,
        notify,
        haproxy_stats,
        allow_check_commands,
        rollout_tick,
        environment,
        ha,
    })
}

/// `--ha-*`: checked; with secret zero on, `--gatekeeper-url` is required (one URL for the
/// whole group, or each replica would inject its own and rewrite the others' apps).
fn ha(
    l: &Layers,
    repo: &str,
    reference: &str,
    listen: SocketAddr,
    vault: Option<&VaultServeConfig>,
) -> Result<Option<crate::ha::HaConfig>, ConfigError> {
    let Some((servers, origin)) = l.pick("--ha-zookeeper", |c| &c.ha_zookeeper) else {
        return Ok(None);
    };
    let path = (l.pick("--ha-path", |c| &c.ha_path))
        .unwrap_or_else(|| (crate::ha::default_path(repo, reference), Origin::Default));
    let bad = |name, origin, reason| ConfigError::Bad {
        name,
        origin,
        reason,
    };
    crate::ha::check(&servers, &path.0).map_err(|reason| {
        if reason.contains("znode") || reason.contains("segment") {
            bad("--ha-path", path.1.clone(), reason)
        } else {
            bad("--ha-zookeeper", origin.clone(), reason)
        }
    })?;
    // ZooKeeper bounds what it grants to 2..20 ticks (4 s..40 s with its default tick).
    let session_timeout = l.duration(
        "--ha-session-timeout",
        |c| &c.ha_session_timeout,
        "10s",
        Duration::from_secs(1),
    )?;
    let id = (l.value("--ha-id", |c| &c.ha_id)).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        let host = if host.is_empty() {
            "baton".into()
        } else {
            host
        };
        format!("{host}:{}", listen.port())
    });
    if vault.is_some_and(|v| v.gatekeeper_url.is_none()) {
        return Err(bad(
            "--gatekeeper-url",
            Origin::Default,
            "required with --ha-zookeeper when secret zero is on (--vault-addr): one URL for the whole group, e.g. a load balancer in front of the replicas".into(),
        ));
    }
    Ok(Some(crate::ha::HaConfig {
        servers,
        path: path.0,
        session_timeout,
        id,
    }))
}

/// The HAProxy stats sources: flags/env win over the config file's `haproxy-stats`. Each
/// must be http(s); errors never echo a URL (it may carry a password).
fn haproxy_stats(
    l: &Layers,
    flags: &[SecretString],
) -> Result<Vec<crate::daemon::rollout::StatsSource>, ConfigError> {
    use secrecy::ExposeSecret;
    let (urls, origin) = if flags.is_empty() {
        let file = Origin::File {
            key: "haproxy-stats".into(),
            path: l.file.source.clone(),
        };
        (l.file.haproxy_stats.clone().unwrap_or_default(), file)
    } else {
        let urls = flags
            .iter()
            .map(|u| u.expose_secret().to_string())
            .collect();
        (urls, l.sources.of("--haproxy-stats"))
    };
    (urls.iter().enumerate())
        .map(|(i, url)| {
            crate::daemon::rollout::StatsSource::parse(url.trim()).map_err(|why| ConfigError::Bad {
                name: "--haproxy-stats",
                origin: origin.clone(),
                reason: format!("URL #{} is {why}", i + 1),
            })
        })
        .collect()
}

/// The config file's Marathon client settings, where flags and the environment gave none
/// (`marathon` already holds what they gave).
fn marathon_from_file(marathon: &mut MarathonConfig, l: &Layers) -> Result<(), ConfigError> {
    if let Some((t, origin)) = l.pick("--marathon-timeout", |c| &c.marathon_timeout) {
        marathon.timeout = duration("--marathon-timeout", &t, origin)?;
    }
    let file = l.file;
    let origin = |key: &str| Origin::File {
        key: key.into(),
        path: file.source.clone(),
    };
    if marathon.ca_cert.is_none() {
        marathon.ca_cert = file.marathon_ca.clone();
    }
    if marathon.auth.is_none() {
        marathon.auth = match (&file.marathon_token_file, &file.marathon_user) {
            (Some(path), _) => Some(Auth::Token(read_secret(
                path,
                "marathon-token-file",
                origin("marathon-token-file"),
            )?)),
            (None, Some(user)) => Some(Auth::Basic {
                user: user.clone(),
                password: match &file.marathon_password_file {
                    Some(path) => read_secret(
                        path,
                        "marathon-password-file",
                        origin("marathon-password-file"),
                    )?,
                    None => SecretString::from(String::new()),
                },
            }),
            (None, None) => None,
        };
    }
    Ok(())
}

/// Notification sinks: URLs from flags/env win over the config file's, per kind. Every URL
/// must be http(s); errors never echo a URL (Slack's carry a token).
fn notify_sinks(
    l: &Layers,
    webhook_flags: &[SecretString],
    slack_flags: &[SecretString],
) -> Result<Vec<crate::daemon::notifications::Sink>, ConfigError> {
    use crate::daemon::notifications::{Sink, SinkKind};
    use secrecy::ExposeSecret;
    let exposed = |urls: &[SecretString]| -> Vec<String> {
        urls.iter().map(|u| u.expose_secret().to_string()).collect()
    };
    let (webhooks, webhook_origin) = if webhook_flags.is_empty() {
        let file = Origin::File {
            key: "notify-webhook".into(),
            path: l.file.source.clone(),
        };
        (l.file.notify_webhook.clone().unwrap_or_default(), file)
    } else {
        (exposed(webhook_flags), l.sources.of("--notify-webhook"))
    };
    let (slack, slack_origin) = if !slack_flags.is_empty() {
        (exposed(slack_flags), l.sources.of("--notify-slack"))
    } else if let Some((path, origin)) = l.pick("--notify-slack-file", |c| &c.notify_slack_file) {
        let text = read_secret(&path, "--notify-slack-file", origin.clone())?;
        let urls = (text.expose_secret().lines())
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        (urls, origin)
    } else {
        (Vec::new(), Origin::Default)
    };
    let mut sinks = Vec::new();
    for (kind, name, urls, origin) in [
        (SinkKind::Json, "--notify-webhook", webhooks, webhook_origin),
        (SinkKind::Slack, "--notify-slack", slack, slack_origin),
    ] {
        for (i, url) in urls.into_iter().enumerate() {
            let ok = reqwest::Url::parse(&url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(ConfigError::Bad {
                    name,
                    origin,
                    reason: format!("URL #{} is not an http(s) URL", i + 1),
                });
            }
            sinks.push(Sink { kind, url });
        }
    }
    Ok(sinks)
}

/// The reconciler's Vault access and the operator's allow-list, for `plan` and `serve` alike.
/// The list is checked even without Vault, so a bad one never waits for the day Vault is
/// turned on.
fn vault_access(
    l: &Layers,
    token: Option<SecretString>,
    environment: Option<&Environment>,
) -> Result<(AllowedPolicies, Option<VaultAccess>), ConfigError> {
    let name = "--vault-allowed-policies";
    let allowed = match l.pick(name, |c| &c.vault_allowed_policies) {
        Some((list, origin)) => AllowedPolicies::new(&list).map_err(|reason| ConfigError::Bad {
            name,
            origin,
            reason,
        })?,
        None => AllowedPolicies::default(),
    };
    let token_file = l.pick("--vault-token-file", |c| &c.vault_token_file);
    // The flag (or the config file) over the environment's `vaultAddr`, as for its Marathon.
    let from_environment = environment
        .and_then(|e| (e.vault_addr.clone()).map(|a| (a, Origin::Environment(e.name.clone()))));
    let picked = l
        .pick("--vault-addr", |c| &c.vault_addr)
        .or(from_environment);
    let Some((addr, origin)) = picked else {
        if let Some((_, origin)) = token_file {
            return Err(ConfigError::Bad {
                name: "--vault-token-file",
                origin,
                reason: "given without --vault-addr".into(),
            });
        }
        return Ok((allowed, None));
    };
    if !(addr.starts_with("http://") || addr.starts_with("https://")) {
        return Err(ConfigError::Bad {
            name: "--vault-addr",
            origin,
            reason: "must be an http:// or https:// URL".into(),
        });
    }
    let token = match (token_file, token) {
        (Some((path, origin)), _) => read_secret(&path, "--vault-token-file", origin)?,
        (None, Some(t)) => t,
        (None, None) if matches!(origin, Origin::Environment(_)) => {
            return Err(ConfigError::Bad {
                name: "--vault-addr",
                origin,
                reason: format!(
                "{}: no Vault token (give --vault-token-file, BATON_VAULT_TOKEN or VAULT_TOKEN)",
                baton_core::userinfo::redact_url(&addr)
            ),
            })
        }
        (None, None) => return Err(ConfigError::Missing(
            "a Vault token for --vault-addr (--vault-token-file, BATON_VAULT_TOKEN or VAULT_TOKEN)",
        )),
    };
    let access = VaultAccess {
        addr,
        token,
        approle_mount: (l.value("--vault-approle-mount", |c| &c.vault_approle_mount))
            .unwrap_or_else(|| "approle".into()),
        gatekeeper_url: l.value("--gatekeeper-url", |c| &c.gatekeeper_url),
    };
    Ok((allowed, Some(access)))
}

/// `serve`'s secret-zero settings, when `vault-addr` is given: the Vault access `plan` reads
/// too, and the gatekeeper's own.
fn resolve_vault(
    l: &Layers,
    token: Option<SecretString>,
    environment: Option<&Environment>,
) -> Result<Option<VaultServeConfig>, ConfigError> {
    let (allowed_policies, access) = vault_access(l, token, environment)?;
    let Some(access) = access else {
        return Ok(None);
    };
    if access.gatekeeper_url.is_none() {
        if let Some(listen) = l.value("--listen", |c| &c.listen) {
            if listen.ip().is_unspecified() {
                return Err(ConfigError::Missing(
                    "--gatekeeper-url (tasks cannot reach the unspecified listen address)",
                ));
            }
        }
    }
    let min = Duration::from_secs(1);
    Ok(Some(VaultServeConfig {
        allowed_policies,
        addr: access.addr,
        token: access.token,
        approle_mount: access.approle_mount,
        gatekeeper_url: access.gatekeeper_url,
        task_max_age: l.duration("--task-max-age", |c| &c.task_max_age, "120s", min)?,
        host_check: (l.value("--gatekeeper-host-check", |c| &c.gatekeeper_host_check))
            .unwrap_or(true),
        wrap_ttl: l.duration("--wrap-ttl", |c| &c.wrap_ttl, "60s", min)?,
    }))
}

/// The API token of a client of `baton serve` (`baton rollout`): `BATON_API_TOKEN`, else the
/// file `--api-token-file` names, as `serve` reads its own.
pub fn api_token(file: Option<&Path>, env: EnvLookup) -> Result<Option<SecretString>, ConfigError> {
    if let Some(t) = env("BATON_API_TOKEN") {
        return Ok(Some(SecretString::from(t)));
    }
    file.map(|p| read_secret(p, "--api-token-file", Origin::Flag))
        .transpose()
}

fn read_secret(
    path: &Path,
    name: &'static str,
    origin: Origin,
) -> Result<SecretString, ConfigError> {
    let bad = |reason: String| ConfigError::Bad {
        name,
        origin: origin.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let trimmed = text.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(bad(format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(trimmed.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn flags_win_over_file_and_the_webhook_secret_is_optional() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("serve.yaml");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-file\n").unwrap();
        std::fs::write(
            &cfg,
            format!(
                "repo: /file/repo\nref: dev\nstate-dir: /s\nmarathon: http://m\npoll-interval: 5m\nwebhook-secret-file: {}\n",
                secret.display()
            ),
        )
        .unwrap();
        let file = read_file(&cfg).unwrap();
        let flags = FlagConfig {
            file: FileConfig {
                reference: Some("main".into()),
                ..FileConfig::default()
            },
            ..FlagConfig::default()
        };
        let c = resolve(flags, file.clone(), MarathonConfig::new("")).unwrap();
        assert_eq!(c.repo, "/file/repo");
        assert_eq!(c.reference, "main");
        assert_eq!(c.poll_interval, Duration::from_secs(300));
        assert_eq!(
            c.webhook_secret.as_ref().map(|s| s.expose_secret()),
            Some("from-file")
        );
        assert_eq!(c.cache_dir, PathBuf::from("/s/git-cache"));
        assert_eq!(c.marathon.url, "http://m");

        assert!(c.api_token.is_none());

        // A token in the repo URL becomes the git credentials; the URL is kept without it.
        let flags = FlagConfig {
            file: FileConfig {
                repo: Some("https://ci:glpat-s3cret@git.example/ops.git".into()),
                ..FileConfig::default()
            },
            api_token: Some(SecretString::from("sync-token".to_string())),
            ..FlagConfig::default()
        };
        let c = resolve(flags, file.clone(), MarathonConfig::new("")).unwrap();
        assert_eq!(c.repo, "https://git.example/ops.git");
        let auth = c.git_auth.as_ref().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.expose_secret()),
            ("ci", "glpat-s3cret")
        );
        assert_eq!(c.api_token.as_ref().unwrap().expose_secret(), "sync-token");
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("glpat-s3cret") && !shown.contains("sync-token"),
            "{shown}"
        );

        // No webhook secret is no error: `serve` then accepts no webhook (and says so).
        let mut no_secret = file;
        no_secret.webhook_secret_file = None;
        let c = resolve(FlagConfig::default(), no_secret, MarathonConfig::new("")).unwrap();
        assert!(c.webhook_secret.is_none());
    }

    #[test]
    fn vault_settings_are_optional_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s.reconciler-token\n").unwrap();
        let base = FileConfig {
            repo: Some("/r".into()),
            state_dir: Some("/s".into()),
            marathon: Some("http://m".into()),
            ..FileConfig::default()
        };
        let flags = |file: FileConfig| FlagConfig {
            file,
            webhook_secret: Some(SecretString::from("w".to_string())),
            ..FlagConfig::default()
        };
        let none = resolve(
            flags(base.clone()),
            FileConfig::default(),
            MarathonConfig::new(""),
        );
        assert!(none.unwrap().vault.is_none());

        let with = FileConfig {
            vault_addr: Some("http://vault:8200".into()),
            vault_token_file: Some(token.clone()),
            task_max_age: Some("30s".into()),
            gatekeeper_host_check: Some(false),
            ..base.clone()
        };
        let c = resolve(
            flags(with.clone()),
            FileConfig::default(),
            MarathonConfig::new(""),
        )
        .unwrap()
        .vault
        .unwrap();
        assert_eq!(c.token.expose_secret(), "s.reconciler-token");
        assert_eq!(c.approle_mount, "approle");
        assert_eq!(c.task_max_age, Duration::from_secs(30));
        assert_eq!(c.wrap_ttl, Duration::from_secs(60));
        assert!(!c.host_check);
        assert!(c.gatekeeper_url.is_none());
        assert!(!format!("{c:?}").contains("reconciler-token"));

        // No token at all, or a listen address tasks cannot reach without --gatekeeper-url.
        let no_token = FileConfig {
            vault_token_file: None,
            ..with.clone()
        };
        assert!(matches!(
            resolve(
                flags(no_token),
                FileConfig::default(),
                MarathonConfig::new("")
            ),
            Err(ConfigError::Missing(_))
        ));
        let any = FileConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 8088))),
            ..with
        };
        assert!(resolve(flags(any), FileConfig::default(), MarathonConfig::new("")).is_err());
    }

    /// `vault-allowed-policies`: a config-file list, the flag (or env) winning over it; names
    /// canonical; `root` refused with the setting named, even without Vault.
    /// `--ha-*`: off by default; from the file, checked (the key that was wrong is named); with
    /// secret zero on, `--gatekeeper-url` is required.
    #[test]
    fn ha_settings_are_checked_and_need_one_gatekeeper_url_with_vault() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t\n").unwrap();
        let base = FileConfig {
            repo: Some("https://git/x.git".into()),
            state_dir: Some("/s".into()),
            marathon: Some("http://m".into()),
            listen: Some("127.0.0.1:9000".parse().unwrap()),
            ..FileConfig::default()
        };
        let flags = || FlagConfig {
            webhook_secret: Some(SecretString::from("w".to_string())),
            ..FlagConfig::default()
        };
        let c = resolve(flags(), base.clone(), MarathonConfig::new("")).unwrap();
        assert!(c.ha.is_none(), "off without --ha-zookeeper");
        let ha = FileConfig {
            ha_zookeeper: Some("zk1:2181,zk2:2181".into()),
            ha_session_timeout: Some("6s".into()),
            ..base.clone()
        };
        let c = resolve(flags(), ha.clone(), MarathonConfig::new("")).unwrap();
        let h = c.ha.unwrap();
        assert_eq!(h.servers, "zk1:2181,zk2:2181");
        assert_eq!(h.path, crate::ha::default_path("https://git/x.git", "main"));
        assert_eq!(h.session_timeout, Duration::from_secs(6));
        assert!(h.id.ends_with(":9000"), "{}", h.id);
        let bad = |f: FileConfig| {
            resolve(flags(), f, MarathonConfig::new(""))
                .unwrap_err()
                .to_string()
        };
        let e = bad(FileConfig {
            ha_zookeeper: Some("zk1".into()),
            ..ha.clone()
        });
        assert!(
            e.contains("--ha-zookeeper") && e.contains("ha-zookeeper"),
            "{e}"
        );
        let e = bad(FileConfig {
            ha_path: Some("baton/x".into()),
            ..ha.clone()
        });
        assert!(e.contains("--ha-path"), "{e}");
        let vault = FileConfig {
            vault_addr: Some("http://v:8200".into()),
            vault_token_file: Some(token),
            ..ha.clone()
        };
        let e = bad(vault.clone());
        assert!(
            e.contains("--gatekeeper-url") && e.contains("required"),
            "{e}"
        );
        let c = resolve(
            flags(),
            FileConfig {
                gatekeeper_url: Some("https://baton.example/v1/secret-zero".into()),
                ..vault
            },
            MarathonConfig::new(""),
        )
        .unwrap();
        assert!(c.ha.is_some() && c.vault.is_some());
    }

    #[test]
    fn vault_allowed_policies_from_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "t\n").unwrap();
        let cfg = dir.path().join("serve.yaml");
        std::fs::write(
            &cfg,
            format!(
                "repo: /r\nstate-dir: /s\nmarathon: http://m\nvault-addr: http://v:8200\nvault-token-file: {}\nvault-allowed-policies: [\" Metrics-Read\", shared]\n",
                token.display()
            ),
        )
        .unwrap();
        let file = read_file(&cfg).unwrap();
        let flags = |list: Option<Vec<&str>>| FlagConfig {
            file: FileConfig {
                vault_allowed_policies: list.map(|l| l.into_iter().map(String::from).collect()),
                ..FileConfig::default()
            },
            webhook_secret: Some(SecretString::from("w".to_string())),
            ..FlagConfig::default()
        };
        let allowed = |c: ServeConfig| -> Vec<String> {
            let v = c.vault.unwrap();
            v.allowed_policies.names().map(String::from).collect()
        };
        let c = resolve(flags(None), file.clone(), MarathonConfig::new("")).unwrap();
        assert_eq!(allowed(c), ["metrics-read", "shared"]);
        let c = resolve(
            flags(Some(vec!["Other "])),
            file.clone(),
            MarathonConfig::new(""),
        )
        .unwrap();
        assert_eq!(allowed(c), ["other"]);
        let e = resolve(
            flags(Some(vec!["a", " ROOT"])),
            file.clone(),
            MarathonConfig::new(""),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--vault-allowed-policies") && e.contains("`root`"),
            "{e}"
        );
        let no_vault = FileConfig {
            vault_addr: None,
            vault_token_file: None,
            ..file
        };
        assert!(resolve(
            flags(Some(vec!["root"])),
            no_vault.clone(),
            MarathonConfig::new("")
        )
        .is_err());
        let c = resolve(flags(None), no_vault, MarathonConfig::new("")).unwrap();
        assert!(c.vault.is_none());
    }

    #[test]
    fn notification_sinks_from_flags_file_and_bad_urls() {
        use crate::daemon::notifications::SinkKind;
        let dir = tempfile::tempdir().unwrap();
        let slack = dir.path().join("slack");
        std::fs::write(
            &slack,
            "# team channel\nhttps://hooks.slack.test/T0/B0/tok\n\n",
        )
        .unwrap();
        let base = FileConfig {
            repo: Some("/r".into()),
            state_dir: Some("/s".into()),
            marathon: Some("http://m".into()),
            notify_webhook: Some(vec!["http://127.0.0.1:9/a".into()]),
            notify_slack_file: Some(slack),
            ..FileConfig::default()
        };
        let flags = || FlagConfig {
            webhook_secret: Some(SecretString::from("s".to_string())),
            ..FlagConfig::default()
        };
        let c = resolve(flags(), base.clone(), MarathonConfig::new("")).unwrap();
        let got: Vec<(SinkKind, &str)> =
            c.notify.iter().map(|s| (s.kind, s.url.as_str())).collect();
        assert_eq!(
            got,
            [
                (SinkKind::Json, "http://127.0.0.1:9/a"),
                (SinkKind::Slack, "https://hooks.slack.test/T0/B0/tok")
            ]
        );
        assert!(!format!("{c:?}").contains("B0/tok"), "a sink URL leaked");

        // Flags win over the file, per kind.
        let mut f = flags();
        f.notify_webhook = vec![
            SecretString::from("https://a.test/1".to_string()),
            SecretString::from("https://b.test/2".to_string()),
        ];
        let c = resolve(f, base.clone(), MarathonConfig::new("")).unwrap();
        let kinds: Vec<SinkKind> = c.notify.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [SinkKind::Json, SinkKind::Json, SinkKind::Slack]);

        let mut f = flags();
        f.notify_slack = vec![SecretString::from("ftp://x/secret-token".to_string())];
        let e = resolve(f, base, MarathonConfig::new(""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--notify-slack") && !e.contains("secret-token"),
            "{e}"
        );
    }

    /// The Marathon client settings have config-file keys too; secrets come from files, and
    /// whatever the flags (or the environment) gave wins.
    #[test]
    fn marathon_settings_from_the_file() {
        use baton_marathon::marathon::Auth;
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("pw");
        std::fs::write(&password, "m-pass\n").unwrap();
        let file = FileConfig {
            repo: Some("/r".into()),
            state_dir: Some("/s".into()),
            marathon: Some("https://marathon:8443".into()),
            marathon_timeout: Some("5s".into()),
            marathon_ca: Some("/etc/baton/ca.pem".into()),
            marathon_user: Some("baton".into()),
            marathon_password_file: Some(password),
            ..FileConfig::default()
        };
        let flags = || FlagConfig {
            webhook_secret: Some(SecretString::from("w".to_string())),
            ..FlagConfig::default()
        };
        let c = resolve(flags(), file.clone(), MarathonConfig::new("")).unwrap();
        assert_eq!(c.marathon.timeout, Duration::from_secs(5));
        assert_eq!(c.marathon.ca_cert, Some(PathBuf::from("/etc/baton/ca.pem")));
        let Some(Auth::Basic { user, password }) = &c.marathon.auth else {
            panic!("{:?}", c.marathon.auth);
        };
        assert_eq!(
            (user.as_str(), password.expose_secret()),
            ("baton", "m-pass")
        );
        assert!(!format!("{c:?}").contains("m-pass"));

        // A token given by flag or environment wins over the file's user.
        let mut m = MarathonConfig::new("");
        m.auth = Some(Auth::Token(SecretString::from("dcos".to_string())));
        let c = resolve(flags(), file, m).unwrap();
        assert!(matches!(c.marathon.auth, Some(Auth::Token(_))));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("serve.yaml");
        std::fs::write(&cfg, "repos: x\n").unwrap();
        assert!(read_file(&cfg).is_err());
    }

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            (vars.iter())
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    /// `--haproxy-stats` from the flags (or the env var's comma list, which clap splits) over
    /// the file's `haproxy-stats` list; credentials out of the URL and never in `Debug` or an
    /// error; `--allow-check-commands` and the hidden `--rollout-tick` with their defaults.
    #[test]
    fn rollout_settings_from_flags_file_and_defaults() {
        let base = FileConfig {
            repo: Some("/r".into()),
            state_dir: Some("/s".into()),
            marathon: Some("http://m".into()),
            ..FileConfig::default()
        };
        let c = resolve(FlagConfig::default(), base.clone(), MarathonConfig::new("")).unwrap();
        assert!(c.haproxy_stats.is_empty());
        assert!(!c.allow_check_commands);
        assert_eq!(c.rollout_tick, Duration::from_secs(5));

        let file = FileConfig {
            haproxy_stats: Some(vec![
                "http://stats:pw1@lb1:9090/haproxy?stats;csv".into(),
                "http://lb2:9090/haproxy?stats;csv".into(),
            ]),
            allow_check_commands: Some(true),
            rollout_tick: Some("1s".into()),
            ..base.clone()
        };
        // The config file's keys, as an operator writes them.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serve.yaml");
        std::fs::write(
            &path,
            "haproxy-stats:\n  - http://stats:pw1@lb1:9090/haproxy?stats;csv\n  - http://lb2:9090/haproxy?stats;csv\nallow-check-commands: true\nrollout-tick: 1s\n",
        )
        .unwrap();
        let read = read_file(&path).unwrap();
        assert_eq!(read.haproxy_stats, file.haproxy_stats);
        assert_eq!(read.allow_check_commands, Some(true));
        assert_eq!(read.rollout_tick.as_deref(), Some("1s"));
        let c = resolve(FlagConfig::default(), file.clone(), MarathonConfig::new("")).unwrap();
        let urls: Vec<&str> = c.haproxy_stats.iter().map(|s| s.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://lb1:9090/haproxy?stats;csv",
                "http://lb2:9090/haproxy?stats;csv"
            ]
        );
        let (user, pw) = c.haproxy_stats[0].auth.clone().unwrap();
        assert_eq!((user.as_str(), pw.expose_secret()), ("stats", "pw1"));
        assert!(c.allow_check_commands);
        assert_eq!(c.rollout_tick, Duration::from_secs(1));
        assert!(!format!("{c:?}").contains("pw1"), "a stats password leaked");

        // Flags (or BATON_HAPROXY_STATS) win over the file; a bad one is named, not echoed.
        let mut sources = Sources::default();
        sources.env("--haproxy-stats", "BATON_HAPROXY_STATS");
        let flags = FlagConfig {
            haproxy_stats: vec![SecretString::from("http://lb3/stats;csv".to_string())],
            sources: sources.clone(),
            ..FlagConfig::default()
        };
        let c = resolve(flags, file.clone(), MarathonConfig::new("")).unwrap();
        assert_eq!(c.haproxy_stats.len(), 1);
        assert_eq!(c.haproxy_stats[0].url, "http://lb3/stats;csv");
        let flags = FlagConfig {
            haproxy_stats: vec![SecretString::from("lb:pw2@nowhere".to_string())],
            sources,
            ..FlagConfig::default()
        };
        let e = resolve(flags, file.clone(), MarathonConfig::new(""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--haproxy-stats") && e.contains("BATON_HAPROXY_STATS"),
            "{e}"
        );
        assert!(!e.contains("pw2"), "{e}");
        let bad_tick = FileConfig {
            rollout_tick: Some("10ms".into()),
            ..base
        };
        let e = resolve(FlagConfig::default(), bad_tick, MarathonConfig::new(""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--rollout-tick") && e.contains("rollout-tick"),
            "{e}"
        );
    }

    fn serve_args(settings: FileConfig, vault: VaultArgs) -> ServeArgs {
        ServeArgs {
            settings: FileConfig {
                repo: Some("/r".into()),
                state_dir: Some("/s".into()),
                marathon: Some("http://m".into()),
                ..settings
            },
            vault,
            ..ServeArgs::default()
        }
    }

    /// A bad value is named by where it came from: the flag, the environment variable clap
    /// read for it, or the config file's key (with the file).
    #[test]
    fn a_bad_value_names_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("serve.yaml");
        std::fs::write(
            &cfg,
            "repo: /r\nstate-dir: /s\nmarathon: http://m\npoll-interval: 0.5x\n",
        )
        .unwrap();
        let bad = FileConfig {
            poll_interval: Some("0.5x".into()),
            ..FileConfig::default()
        };
        let error = |args: ServeArgs, sources: Sources| {
            serve(args, sources, &env_of(&[])).unwrap_err().to_string()
        };

        let flag = error(
            serve_args(bad.clone(), VaultArgs::default()),
            Sources::default(),
        );
        assert!(flag.starts_with("bad setting --poll-interval: "), "{flag}");

        let mut from_env = Sources::default();
        from_env.env("--poll-interval", "BATON_POLL_INTERVAL");
        let env = error(serve_args(bad, VaultArgs::default()), from_env);
        assert!(
            env.starts_with(
                "bad setting --poll-interval (from the environment variable BATON_POLL_INTERVAL): "
            ),
            "{env}"
        );

        let in_file = ServeArgs {
            config: Some(cfg.clone()),
            ..ServeArgs::default()
        };
        let file = error(in_file, Sources::default());
        let expected = format!(
            "bad setting --poll-interval (from the config key `poll-interval` in {}): ",
            cfg.display()
        );
        assert!(file.starts_with(&expected), "{file}");

        // A secret file, and a client setting of another command, the same way.
        let missing = dir.path().join("no-such-token");
        std::fs::write(
            &cfg,
            format!(
                "repo: /r\nstate-dir: /s\nmarathon: http://m\nvault-addr: http://v\nvault-token-file: {}\n",
                missing.display()
            ),
        )
        .unwrap();
        let in_file = ServeArgs {
            config: Some(cfg.clone()),
            ..ServeArgs::default()
        };
        let token = error(in_file, Sources::default());
        assert!(
            token.contains("--vault-token-file (from the config key `vault-token-file` in"),
            "{token}"
        );
        let mut from_env = Sources::default();
        from_env.env("--marathon-timeout", "BATON_MARATHON_TIMEOUT");
        let args = MarathonArgs {
            marathon_timeout: Some("soon".into()),
            ..MarathonArgs::default()
        };
        let e = marathon("http://m".into(), &args, &from_env)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("--marathon-timeout (from the environment variable BATON_MARATHON_TIMEOUT)"),
            "{e}"
        );
        let e = apply_options(
            "2x",
            8,
            false,
            &MarathonConfig::new("http://m"),
            &Sources::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("bad setting --lock-wait: "), "{e}");
    }

    /// `baton serve`: flags over the environment's secrets over the config file it names over
    /// defaults.
    #[test]
    fn serve_layers_flags_env_file_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-file\n").unwrap();
        let cfg = dir.path().join("serve.yaml");
        std::fs::write(
            &cfg,
            format!(
                "repo: /file/repo\nref: dev\nstate-dir: /s\nmarathon: http://m\nmarathon-timeout: 5s\npoll-interval: 5m\nwebhook-secret-file: {}\n",
                secret.display()
            ),
        )
        .unwrap();
        let args = || ServeArgs {
            config: Some(cfg.clone()),
            settings: FileConfig {
                reference: Some("release".into()),
                ..FileConfig::default()
            },
            marathon: MarathonArgs {
                marathon_timeout: Some("7s".into()),
                ..MarathonArgs::default()
            },
            ..ServeArgs::default()
        };
        let c = serve(args(), Sources::default(), &env_of(&[])).unwrap();
        assert_eq!(c.repo, "/file/repo"); // the file, where no flag says otherwise
        assert_eq!(c.reference, "release"); // the flag over the file
        assert_eq!(c.marathon.timeout, Duration::from_secs(7)); // a shared client flag too
        assert_eq!(c.poll_interval, Duration::from_secs(300));
        assert_eq!(c.sync, SyncMode::Auto); // the default
        assert_eq!(
            c.webhook_secret.as_ref().map(|s| s.expose_secret()),
            Some("from-file")
        );
        // The environment's secret over the file's.
        let env = [("BATON_WEBHOOK_SECRET", "from-env")];
        let c = serve(args(), Sources::default(), &env_of(&env)).unwrap();
        assert_eq!(
            c.webhook_secret.as_ref().map(|s| s.expose_secret()),
            Some("from-env")
        );
    }

    /// `baton serve --environment NAME`: the environment's `vaultAddr` turns secret zero on
    /// with that address (and its Marathon is the environment's); `--vault-addr` wins over it;
    /// a bad one is named as the environment's.
    #[test]
    fn serve_takes_the_environments_vault_address_unless_vault_addr_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = |vault: &str| {
            format!("environments:\n  qa: {{marathon: 'http://mqa:8080', vaultAddr: '{vault}'}}\n")
        };
        std::fs::write(dir.path().join("baton.yaml"), yaml("http://vault-qa:8200")).unwrap();
        let args = |vault_addr: Option<&str>| ServeArgs {
            settings: FileConfig {
                repo: Some(dir.path().display().to_string()),
                state_dir: Some(dir.path().join("state")),
                environment: Some("qa".into()),
                ..FileConfig::default()
            },
            vault: VaultArgs {
                vault_addr: vault_addr.map(str::to_string),
                ..VaultArgs::default()
            },
            ..ServeArgs::default()
        };
        let token = [("BATON_VAULT_TOKEN", "t")];
        let c = serve(args(None), Sources::default(), &env_of(&token)).unwrap();
        assert_eq!(
            c.vault.map(|v| v.addr).as_deref(),
            Some("http://vault-qa:8200")
        );
        assert_eq!(c.marathon.url, "http://mqa:8080");
        let c = serve(
            args(Some("http://v:8200")),
            Sources::default(),
            &env_of(&token),
        );
        assert_eq!(
            c.unwrap().vault.map(|v| v.addr).as_deref(),
            Some("http://v:8200")
        );
        std::fs::write(dir.path().join("baton.yaml"), yaml("vault-qa:8200")).unwrap();
        let e = serve(args(None), Sources::default(), &env_of(&token)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "bad setting --vault-addr (from environment `qa` in baton.yaml): must be an http:// or https:// URL"
        );
    }

    /// `--auth-proxy-header`: a flag, or the config key `auth-proxy-header`; not a header
    /// name is an error naming where it came from; none by default.
    #[test]
    fn auth_proxy_header_from_flag_or_file_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("serve.yaml");
        let base = "repo: /r\nstate-dir: /s\nmarathon: http://m\n";
        let args = |flag: Option<&str>| ServeArgs {
            config: Some(cfg.clone()),
            settings: FileConfig {
                auth_proxy_header: flag.map(str::to_string),
                ..FileConfig::default()
            },
            ..ServeArgs::default()
        };
        std::fs::write(&cfg, base).unwrap();
        let c = serve(args(None), Sources::default(), &env_of(&[])).unwrap();
        assert_eq!(c.auth_proxy_header, None);
        std::fs::write(&cfg, format!("{base}auth-proxy-header: X-Forwarded-User\n")).unwrap();
        let c = serve(args(None), Sources::default(), &env_of(&[])).unwrap();
        assert_eq!(c.auth_proxy_header.unwrap().as_str(), "x-forwarded-user");
        let c = serve(
            args(Some("X-Remote-User")),
            Sources::default(),
            &env_of(&[]),
        )
        .unwrap();
        assert_eq!(c.auth_proxy_header.unwrap().as_str(), "x-remote-user");
        std::fs::write(&cfg, format!("{base}auth-proxy-header: \"not a header\"\n")).unwrap();
        let e = serve(args(None), Sources::default(), &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "bad setting --auth-proxy-header (from the config key `auth-proxy-header`"
            ),
            "{e}"
        );
        let mut from_env = Sources::default();
        from_env.env("--auth-proxy-header", "BATON_AUTH_PROXY_HEADER");
        let e = serve(args(Some("a b")), from_env, &env_of(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("BATON_AUTH_PROXY_HEADER"), "{e}");
    }

    /// `plan` and `serve` read the Vault settings the same way: every case both accept or
    /// both refuse, with the same message.
    #[test]
    fn plan_and_serve_check_vault_settings_alike() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s.file-token\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let vault = |addr: Option<&str>, file: Option<&Path>, allowed: &[&str]| VaultArgs {
            vault_addr: addr.map(String::from),
            vault_token_file: file.map(Path::to_path_buf),
            vault_approle_mount: Some("ar".into()),
            gatekeeper_url: Some("http://gk/v1/secret-zero".into()),
            vault_allowed_policies: allowed.iter().map(|s| s.to_string()).collect(),
        };
        let env_token = [("VAULT_TOKEN", "s.env-token")];
        // (case, Vault flags, environment, accepted: the token used / refused: words said)
        type Env<'a> = &'a [(&'a str, &'a str)];
        let cases: Vec<(&str, VaultArgs, Env, Result<&str, &str>)> = vec![
            ("no vault", vault(None, None, &[]), &[], Ok("")),
            (
                "file token",
                vault(Some("http://v"), Some(&token), &["x"]),
                &env_token,
                Ok("s.file-token"),
            ),
            (
                "env token",
                vault(Some("https://v"), None, &[]),
                &env_token,
                Ok("s.env-token"),
            ),
            (
                "not a URL",
                vault(Some("v:8200"), Some(&token), &[]),
                &[],
                Err("--vault-addr: must be an http:// or https:// URL"),
            ),
            (
                "token file alone",
                vault(None, Some(&token), &[]),
                &[],
                Err("--vault-token-file: given without --vault-addr"),
            ),
            (
                "empty token file",
                vault(Some("http://v"), Some(&empty), &[]),
                &[],
                Err("is empty"),
            ),
            (
                "no token",
                vault(Some("http://v"), None, &[]),
                &[],
                Err("a Vault token for --vault-addr"),
            ),
            (
                "root allowed",
                vault(None, None, &["a", "root"]),
                &[],
                Err("--vault-allowed-policies: `root` can never be allowed"),
            ),
        ];
        for (case, args, env, expected) in cases {
            let plan = plan_secrets(args.clone(), None, &Sources::default(), &env_of(env));
            let served = serve(
                serve_args(FileConfig::default(), args),
                Sources::default(),
                &env_of(env),
            );
            match expected {
                Ok(token) => {
                    let plan = plan.unwrap_or_else(|e| panic!("{case}: plan: {e}"));
                    let served = served.unwrap_or_else(|e| panic!("{case}: serve: {e}"));
                    let p = plan.vault.as_ref().map(|v| {
                        (
                            v.admin.addr.clone(),
                            v.admin.token.expose_secret().to_string(),
                            v.admin.approle_mount.clone(),
                            v.gatekeeper_url.clone(),
                        )
                    });
                    let s = served.vault.as_ref().map(|v| {
                        (
                            v.addr.clone(),
                            v.token.expose_secret().to_string(),
                            v.approle_mount.clone(),
                            v.gatekeeper_url.clone(),
                        )
                    });
                    assert_eq!(p, s, "{case}");
                    assert_eq!(p.map(|p| p.1).unwrap_or_default(), token, "{case}");
                    let policies =
                        |a: &AllowedPolicies| a.names().map(String::from).collect::<Vec<_>>();
                    let served_allowed =
                        served.vault.as_ref().map(|v| policies(&v.allowed_policies));
                    if let Some(s) = served_allowed {
                        assert_eq!(policies(&plan.allowed), s, "{case}");
                    }
                }
                Err(words) => {
                    let p = plan.err().map(|e| e.to_string()).unwrap_or_default();
                    let s = served.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(p.contains(words), "{case}: plan said {p:?}");
                    assert_eq!(p, s, "{case}");
                }
            }
        }
    }
}
