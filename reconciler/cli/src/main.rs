//! `baton`: flags -> config -> tracing -> the library -> exit code. Nothing else lives here.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use baton::commands::{self, exit, Format, LiveFrom};
use baton_core::drift_report::DriftFormat;
use baton_core::plan::Policy;
use baton_core::report::Style;
use baton_marathon::marathon::{Auth, MarathonConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc malloc: loading and planning build millions of small values on
/// every core, and glibc's allocator was a quarter of `baton plan`'s instructions (callgrind at
/// 10,000 apps); see docs/benchmarks.md, "validate and plan".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Baton: GitOps for Marathon.
#[derive(Parser)]
#[command(name = "baton", version, about)]
struct Cli {
    /// When to colour terminal output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto, env = "BATON_COLOR")]
    color: Color,
    /// Log format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BATON_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check every spec of a repo directory; exit 0 valid, 1 invalid.
    Validate {
        /// The repo directory (holding `baton.yaml` and `apps/`).
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show what a sync would do; exit 0 no changes, 2 changes, 1 error.
    Plan(PlanArgs),
    /// Report where the scheduler and git disagree; exit 0 no drift, 2 drift, 1 error.
    Drift(DriftArgs),
    /// Sync the repo onto Marathon; exit 0 converged, 3 some apps failed, 1 error.
    Apply(ApplyArgs),
    /// Run the dev scheduler in-process, apply a repo (the demo by default) and redeploy on
    /// every edit. Ctrl-C stops everything.
    Dev {
        /// The repo directory to apply and watch.
        #[arg(long, default_value = baton_cli::dev::DEMO_REPO)]
        repo: PathBuf,
        /// Address of the dev scheduler (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Keep the scheduler's apps across runs in this directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Run the GitOps daemon: follow a git ref (or directory), sync on push webhooks and polls.
    Serve(Box<ServeArgs>),
    /// Run the Marathon-compatible dev scheduler (apps run as local processes).
    DevScheduler {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Keep apps across restarts in this directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Optional YAML config file (keys as the flags, kebab-case); flags and env win over it.
    #[arg(long, env = "BATON_CONFIG")]
    config: Option<PathBuf>,
    /// Git URL (https, http, file, ssh), local git repo, or plain directory (watched).
    #[arg(long, env = "BATON_REPO")]
    repo: Option<String>,
    /// Branch, tag or commit to follow [default: main].
    #[arg(long = "ref", env = "BATON_REF")]
    reference: Option<String>,
    /// Where the bare git cache lives [default: <state-dir>/git-cache].
    #[arg(long, env = "BATON_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Where the sync state is kept across restarts.
    #[arg(long, env = "BATON_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Address of the webhook/status server [default: 127.0.0.1:8088].
    #[arg(long, env = "BATON_LISTEN")]
    listen: Option<SocketAddr>,
    /// Marathon (or dev scheduler) base URL.
    #[arg(long, env = "BATON_MARATHON")]
    marathon: Option<String>,
    #[command(flatten)]
    auth: MarathonAuthArgs,
    /// `auto`: apply on change; `manual`: plan and report, apply on `POST /api/sync`.
    #[arg(long, value_enum, env = "BATON_SYNC")]
    sync: Option<baton::daemon::reconcile::SyncMode>,
    /// Safety-net poll interval, e.g. `60s` [default: 60s].
    #[arg(long, env = "BATON_POLL_INTERVAL")]
    poll_interval: Option<String>,
    /// File holding the webhook secret (or set BATON_WEBHOOK_SECRET).
    #[arg(long, env = "BATON_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// File holding the bearer token `POST /api/sync` requires (or set BATON_API_TOKEN);
    /// without one, only loopback clients may ask for a sync.
    #[arg(long, env = "BATON_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Allow up to N deletions per sync even over the delete budget.
    #[arg(long, env = "BATON_ALLOW_DELETES")]
    allow_deletes: Option<usize>,
    /// User name for HTTPS git auth [default: x-access-token].
    #[arg(long, env = "BATON_GIT_USER")]
    git_user: Option<String>,
    /// File holding the HTTPS git token or password (or set BATON_GIT_TOKEN).
    #[arg(long, env = "BATON_GIT_TOKEN_FILE")]
    git_token_file: Option<PathBuf>,
    /// Generic JSON webhook for notifications (repeatable; the env var takes a comma list).
    #[arg(
        long,
        env = "BATON_NOTIFY_WEBHOOK",
        value_delimiter = ',',
        hide_env_values = true
    )]
    notify_webhook: Vec<String>,
    /// Slack-compatible incoming webhook (repeatable). Prefer the env var or
    /// --notify-slack-file: the URL holds a token.
    #[arg(
        long,
        env = "BATON_NOTIFY_SLACK",
        value_delimiter = ',',
        hide_env_values = true
    )]
    notify_slack: Vec<String>,
    /// File of Slack-compatible webhook URLs, one a line.
    #[arg(long, env = "BATON_NOTIFY_SLACK_FILE")]
    notify_slack_file: Option<PathBuf>,
    #[command(flatten)]
    vault: VaultArgs,
    /// Secret zero: oldest task (since staging) that may still ask for its secret id [default: 120s].
    #[arg(long, env = "BATON_TASK_MAX_AGE")]
    task_max_age: Option<String>,
    /// Secret zero: require requests to come from the task's host [default: true].
    #[arg(long, env = "BATON_GATEKEEPER_HOST_CHECK", num_args = 0..=1, default_missing_value = "true")]
    gatekeeper_host_check: Option<bool>,
    /// Secret zero: TTL of the response-wrapped secret id [default: 60s].
    #[arg(long, env = "BATON_WRAP_TTL")]
    wrap_ttl: Option<String>,
}

/// Vault access of the reconciler (secret zero); without `--vault-addr` apps may not read
/// Vault secrets (`serve`) or their Vault state is shown as unknown (`plan`).
#[derive(Args)]
struct VaultArgs {
    /// Vault address, e.g. `https://vault:8200` (also injected into app envs as VAULT_ADDR).
    #[arg(long, env = "BATON_VAULT_ADDR")]
    vault_addr: Option<String>,
    /// File holding the reconciler's Vault token (or set BATON_VAULT_TOKEN or VAULT_TOKEN).
    #[arg(long, env = "BATON_VAULT_TOKEN_FILE")]
    vault_token_file: Option<PathBuf>,
    /// AppRole auth mount [default: approle].
    #[arg(long, env = "BATON_VAULT_APPROLE_MOUNT")]
    vault_approle_mount: Option<String>,
    /// URL tasks use to reach `POST /v1/secret-zero` [default: http://<listen>/v1/secret-zero].
    #[arg(long, env = "BATON_GATEKEEPER_URL")]
    gatekeeper_url: Option<String>,
    /// Extra Vault policies a spec may give its app (`baton.secrets.policies`), comma
    /// separated; compared trimmed and case-insensitively; `root` never [default: none].
    #[arg(long, env = "BATON_VAULT_ALLOWED_POLICIES", value_delimiter = ',')]
    vault_allowed_policies: Vec<String>,
}

#[derive(Args)]
struct PlanArgs {
    /// The repo directory.
    #[arg(long, default_value = ".", env = "BATON_REPO")]
    repo: PathBuf,
    #[command(flatten)]
    live: LiveArgs,
    #[command(flatten)]
    auth: MarathonAuthArgs,
    /// Allow up to N deletions even when they exceed the delete budget.
    #[arg(long)]
    allow_deletes: Option<usize>,
    /// Commit id recorded in the labels (defaults to `local` for a plain directory).
    #[arg(long, default_value = "local")]
    commit: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    vault: VaultArgs,
}

#[derive(Args)]
struct ApplyArgs {
    /// The repo directory.
    #[arg(long, default_value = ".", env = "BATON_REPO")]
    repo: PathBuf,
    /// Marathon (or dev scheduler) base URL.
    #[arg(long, env = "BATON_MARATHON")]
    marathon: String,
    #[command(flatten)]
    auth: MarathonAuthArgs,
    /// Allow up to N deletions even when they exceed the delete budget.
    #[arg(long)]
    allow_deletes: Option<usize>,
    /// Commit id recorded in the labels (defaults to `local` for a plain directory).
    #[arg(long, default_value = "local")]
    commit: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Writes in flight at once within a wave.
    #[arg(long, default_value_t = 8)]
    parallelism: usize,
    /// How long to wait for a deployment that locks an app (409) before reporting it.
    #[arg(long, default_value = "2m")]
    lock_wait: String,
    /// Delete apps even while a deployment locks them (`force=true`). Never implied: without
    /// this flag Baton waits for the lock and reports it.
    #[arg(long)]
    force_delete: bool,
}

#[derive(Args)]
struct DriftArgs {
    /// The repo directory.
    #[arg(long, default_value = ".", env = "BATON_REPO")]
    repo: PathBuf,
    #[command(flatten)]
    live: LiveArgs,
    #[command(flatten)]
    auth: MarathonAuthArgs,
    /// `baton serve`'s state directory: its drift ledger adds since when and who (read only).
    #[arg(long, env = "BATON_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DriftFormat::Text)]
    format: DriftFormat,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct LiveArgs {
    /// Marathon (or dev scheduler) base URL.
    #[arg(long, env = "BATON_MARATHON")]
    marathon: Option<String>,
    /// A saved `GET /v2/apps` response to plan against, with no server.
    #[arg(long)]
    live: Option<PathBuf>,
}

#[derive(Args)]
struct MarathonAuthArgs {
    /// HTTP basic auth user.
    #[arg(long, env = "BATON_MARATHON_USER")]
    marathon_user: Option<String>,
    /// HTTP basic auth password (prefer the environment variable).
    #[arg(long, env = "BATON_MARATHON_PASSWORD", hide_env_values = true)]
    marathon_password: Option<String>,
    /// DC/OS token, sent as `Authorization: token=...`.
    #[arg(long, env = "BATON_MARATHON_TOKEN", hide_env_values = true)]
    marathon_token: Option<String>,
    /// Extra CA certificate (PEM) to trust.
    #[arg(long, env = "BATON_MARATHON_CA")]
    marathon_ca: Option<PathBuf>,
    /// Per-request timeout, e.g. `30s` [default: 30s].
    #[arg(long, env = "BATON_MARATHON_TIMEOUT")]
    marathon_timeout: Option<String>,
}

fn main() -> ExitCode {
    unblock_stop_signals();
    // Not `Cli::parse()`: clap exits 2 on bad usage, which is also `plan`'s "changes" and
    // `drift`'s "drift". Every usage error exits 64; `--help` and `--version` exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    init_tracing(cli.log_format);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = e.downcast_ref::<Usage>().is_some();
            ExitCode::from(if usage { exit::USAGE } else { exit::ERROR })
        }
    }
}

/// A mistake in the flags, the environment or the config file that clap cannot see (a bad
/// duration, a missing setting, an unreadable secret file): exit 64, as clap's own errors.
#[derive(Debug)]
struct Usage(anyhow::Error);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for Usage {}

/// Marks an error of the configuration stage (before anything binds or connects) as bad usage.
fn usage(e: impl Into<anyhow::Error>) -> anyhow::Error {
    Usage(e.into()).into()
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let style = Style {
        color: match cli.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        },
    };
    let mut stdout = std::io::stdout().lock();
    // The process ends when the command returns: its memory goes back to the OS in one piece.
    commands::leave_memory_to_exit();
    match cli.command {
        Command::Validate { dir, format } => {
            Ok(commands::validate(&dir, format, style, &mut stdout)?)
        }
        Command::Plan(args) => {
            let live = live_from(&args.live, Some(&args.auth)).map_err(usage)?;
            let policy = Policy {
                commit: args.commit,
                allow_deletes: args.allow_deletes,
            };
            let secrets = commands::PlanSecrets {
                vault: plan_vault(&args.vault).map_err(usage)?,
                allowed: baton_core::secrets::AllowedPolicies::new(
                    &args.vault.vault_allowed_policies,
                )
                .map_err(|e| usage(anyhow::anyhow!("--vault-allowed-policies: {e}")))?,
            };
            let rt = runtime()?;
            Ok(rt.block_on(commands::plan_with_vault(
                &args.repo,
                &live,
                &policy,
                &secrets,
                args.format,
                style,
                &mut stdout,
            ))?)
        }
        Command::Apply(args) => {
            let marathon = marathon_config(args.marathon, Some(&args.auth)).map_err(usage)?;
            let policy = Policy {
                commit: args.commit,
                allow_deletes: args.allow_deletes,
            };
            let output = match cli.log_format {
                LogFormat::Text => commands::ProgressOutput::Lines,
                LogFormat::Json => commands::ProgressOutput::Logs,
            };
            let options = baton::apply::ApplyOptions {
                parallelism: args.parallelism,
                lock_wait: parse_duration(&args.lock_wait)
                    .context("--lock-wait")
                    .map_err(usage)?,
                force_delete: args.force_delete,
                // As `baton serve`: two request timeouts without an answer is a scheduler gone.
                scheduler_silence: marathon.timeout.saturating_mul(2),
                ..Default::default()
            };
            let rt = runtime()?;
            rt.block_on(async move {
                spawn_signal_handler(options.cancel.clone(), None);
                let mut stdout = std::io::stdout();
                Ok(commands::apply(
                    &args.repo,
                    marathon,
                    &policy,
                    &options,
                    output,
                    args.format,
                    style,
                    &mut stdout,
                )
                .await?)
            })
        }
        Command::Dev {
            repo,
            listen,
            state_dir,
        } => {
            let rt = runtime()?;
            rt.block_on(async move {
                let shutdown = CancellationToken::new();
                let sessions = baton_dev_scheduler::TaskSessions::default();
                spawn_signal_handler(shutdown.clone(), Some(sessions.clone()));
                let options = baton_cli::dev::DevOptions {
                    repo,
                    listen,
                    state_dir,
                    sessions,
                    ..Default::default()
                };
                let mut stdout = std::io::stdout();
                baton_cli::dev::run(options, shutdown, &mut stdout).await?;
                Ok(exit::OK)
            })
        }
        Command::Drift(args) => {
            let live = live_from(&args.live, Some(&args.auth)).map_err(usage)?;
            let options = commands::DriftOptions {
                format: args.format,
                state_dir: args.state_dir,
                attributions: Default::default(),
                now: None,
            };
            let rt = runtime()?;
            let report = commands::drift(&args.repo, &live, &options, style, &mut stdout);
            Ok(rt.block_on(report)?)
        }
        Command::Serve(args) => {
            let config = serve_config(*args).map_err(usage)?;
            let rt = runtime()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.listen))?;
                let shutdown = CancellationToken::new();
                spawn_signal_handler(shutdown.clone(), None);
                tracing::info!(addr = %listener.local_addr()?, repo = %baton::source::git::redact_url(&config.repo), "serving");
                baton::daemon::serve::serve(config, listener, shutdown).await?;
                Ok(exit::OK)
            })
        }
        Command::DevScheduler { listen, state_dir } => {
            let rt = runtime()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let shutdown = CancellationToken::new();
                let sessions = baton_dev_scheduler::TaskSessions::default();
                spawn_signal_handler(shutdown.clone(), Some(sessions.clone()));
                let config = baton_dev_scheduler::DevConfig {
                    state_dir,
                    sessions,
                    ..Default::default()
                };
                eprintln!(
                    "dev scheduler listening on http://{}",
                    listener.local_addr()?
                );
                baton_dev_scheduler::run(listener, config, shutdown).await?;
                Ok(exit::OK)
            })
        }
    }
}

/// Flags and env over the config file; checked before anything binds or connects.
fn serve_config(args: ServeArgs) -> anyhow::Result<baton::config::ServeConfig> {
    use baton::config::{FileConfig, FlagConfig};
    let file = match &args.config {
        Some(p) => baton::config::read_file(p)?,
        None => FileConfig::default(),
    };
    let secret = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(SecretString::from)
    };
    let marathon = marathon_config(args.marathon.clone().unwrap_or_default(), Some(&args.auth))?;
    let flags = FlagConfig {
        file: FileConfig {
            repo: args.repo,
            reference: args.reference,
            cache_dir: args.cache_dir,
            state_dir: args.state_dir,
            listen: args.listen,
            marathon: args.marathon,
            sync: args.sync,
            poll_interval: args.poll_interval,
            webhook_secret_file: args.webhook_secret_file,
            api_token_file: args.api_token_file,
            marathon_timeout: args.auth.marathon_timeout.clone(),
            marathon_ca: args.auth.marathon_ca.clone(),
            marathon_user: args.auth.marathon_user.clone(),
            marathon_password_file: None,
            marathon_token_file: None,
            allow_deletes: args.allow_deletes,
            git_user: args.git_user,
            git_token_file: args.git_token_file,
            vault_addr: args.vault.vault_addr,
            vault_token_file: args.vault.vault_token_file,
            vault_approle_mount: args.vault.vault_approle_mount,
            gatekeeper_url: args.vault.gatekeeper_url,
            task_max_age: args.task_max_age,
            gatekeeper_host_check: args.gatekeeper_host_check,
            wrap_ttl: args.wrap_ttl,
            vault_allowed_policies: (!args.vault.vault_allowed_policies.is_empty())
                .then_some(args.vault.vault_allowed_policies),
            notify_webhook: None,
            notify_slack_file: args.notify_slack_file,
        },
        webhook_secret: secret("BATON_WEBHOOK_SECRET"),
        api_token: secret("BATON_API_TOKEN"),
        git_token: secret("BATON_GIT_TOKEN").or_else(|| secret("BATON_GIT_PASSWORD")),
        vault_token: secret("BATON_VAULT_TOKEN").or_else(|| secret("VAULT_TOKEN")),
        notify_webhook: args
            .notify_webhook
            .into_iter()
            .map(SecretString::from)
            .collect(),
        notify_slack: args
            .notify_slack
            .into_iter()
            .map(SecretString::from)
            .collect(),
    };
    Ok(baton::config::resolve(flags, file, marathon)?)
}

/// `baton plan`'s Vault access: none without `--vault-addr`.
fn plan_vault(args: &VaultArgs) -> anyhow::Result<Option<commands::PlanVault>> {
    let Some(addr) = args.vault_addr.clone() else {
        return Ok(None);
    };
    let token = match &args.vault_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        None => ["BATON_VAULT_TOKEN", "VAULT_TOKEN"]
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
            .context(
                "--vault-addr needs a token: --vault-token-file, BATON_VAULT_TOKEN or VAULT_TOKEN",
            )?,
    };
    anyhow::ensure!(!token.is_empty(), "the Vault token is empty");
    Ok(Some(commands::PlanVault {
        admin: baton::secret_zero::vault_admin::VaultAdminConfig {
            addr,
            token: SecretString::from(token),
            approle_mount: args
                .vault_approle_mount
                .clone()
                .unwrap_or_else(|| "approle".into()),
            timeout: Duration::from_secs(30),
        },
        gatekeeper_url: args.gatekeeper_url.clone(),
    }))
}

fn live_from(args: &LiveArgs, auth: Option<&MarathonAuthArgs>) -> anyhow::Result<LiveFrom> {
    if let Some(path) = &args.live {
        return Ok(LiveFrom::File(path.clone()));
    }
    let url = args
        .marathon
        .clone()
        .context("one of --marathon or --live is required")?;
    Ok(LiveFrom::Scheduler(marathon_config(url, auth)?))
}

fn marathon_config(url: String, auth: Option<&MarathonAuthArgs>) -> anyhow::Result<MarathonConfig> {
    let mut config = MarathonConfig::new(url);
    if let Some(a) = auth {
        config.timeout = parse_duration(a.marathon_timeout.as_deref().unwrap_or("30s"))
            .context("--marathon-timeout")?;
        config.ca_cert = a.marathon_ca.clone();
        config.auth = match (&a.marathon_token, &a.marathon_user, &a.marathon_password) {
            (Some(t), _, _) => Some(Auth::Token(SecretString::from(t.clone()))),
            (None, Some(u), p) => Some(Auth::Basic {
                user: u.clone(),
                password: SecretString::from(p.clone().unwrap_or_default()),
            }),
            _ => None,
        };
    }
    Ok(config)
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    baton_core::spec::load::parse_duration(s).map_err(anyhow::Error::msg)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A blocked signal mask is inherited across `exec`: started by a parent that blocks SIGINT and
/// SIGTERM (a harness, a supervisor's thread), Baton would never receive them, so neither Ctrl-C
/// nor SIGTERM could stop `serve`, `dev` or `dev-scheduler` (tokio installs handlers, which
/// also replace an inherited SIG_IGN, but does not touch the mask). Unblocked before any thread
/// exists, since threads inherit the mask of the thread that starts them.
fn unblock_stop_signals() {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if let Err(e) = sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None) {
        eprintln!("warning: cannot unblock SIGINT and SIGTERM: {e}");
    }
}

/// First SIGINT/SIGTERM cancels `token` (graceful); a second one kills the `tasks` of a dev
/// scheduler and exits at once.
fn spawn_signal_handler(
    token: CancellationToken,
    tasks: Option<baton_dev_scheduler::TaskSessions>,
) {
    tokio::spawn(async move {
        // Without a SIGTERM handler, Ctrl-C still works.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| tracing::warn!("cannot listen for SIGTERM: {e}"))
            .ok();
        for round in 0..2 {
            let sigterm = async {
                match term.as_mut() {
                    Some(t) => t.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = sigterm => {}
            }
            if round == 0 {
                tracing::info!("shutting down (signal again to exit at once)");
                token.cancel();
            } else {
                // No time for the graceful path: still, no dev-scheduler task outlives us.
                if let Some(tasks) = &tasks {
                    tasks.kill_all();
                }
                std::process::exit(130);
            }
        }
    });
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a terminal: in files, journald and pipes they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
