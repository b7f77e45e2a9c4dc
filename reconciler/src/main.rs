//! `baton`: flags -> config -> tracing -> the library -> exit code. Nothing else lives here.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use baton::commands::{self, exit, Format, LiveFrom};
use baton::plan::Policy;
use baton::report::Style;
use baton::scheduler::marathon::{Auth, MarathonConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

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
    /// Per-request timeout, e.g. `30s`.
    #[arg(long, default_value = "30s")]
    marathon_timeout: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let style = Style {
        color: match cli.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        },
    };
    let mut stdout = std::io::stdout().lock();
    match cli.command {
        Command::Validate { dir, format } => Ok(commands::validate(&dir, format, style, &mut stdout)?),
        Command::Plan(args) => {
            let live = live_from(&args.live, Some(&args.auth))?;
            let policy = Policy {
                commit: args.commit,
                allow_deletes: args.allow_deletes,
            };
            let rt = runtime()?;
            Ok(rt.block_on(commands::plan(&args.repo, &live, &policy, args.format, style, &mut stdout))?)
        }
        Command::DevScheduler { listen, state_dir } => {
            let rt = runtime()?;
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let shutdown = CancellationToken::new();
                spawn_signal_handler(shutdown.clone());
                let config = baton::scheduler::dev::DevConfig {
                    state_dir,
                    ..Default::default()
                };
                eprintln!("dev scheduler listening on http://{}", listener.local_addr()?);
                baton::scheduler::dev::run(listener, config, shutdown).await?;
                Ok(exit::OK)
            })
        }
    }
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
        config.timeout = parse_duration(&a.marathon_timeout)?;
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
    baton::spec::load::parse_duration(s).map_err(anyhow::Error::msg)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// First SIGINT/SIGTERM cancels `token` (graceful); a second one exits at once.
fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                return;
            }
        };
        for round in 0..2 {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                tracing::info!("shutting down (signal again to exit at once)");
                token.cancel();
            } else {
                std::process::exit(130);
            }
        }
    });
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
