//! One function per command: the checked configuration (from [`baton::config`]) handed to the
//! library, on the one runtime `main` built. Configuration errors are [`Error::Usage`] (exit 64).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;

use baton::commands::{self, exit, CommandError};
use baton::config::{self, ConfigError, ServeArgs, Sources};
use baton_core::plan::Policy;
use baton_core::report::Style;
use baton_dev_scheduler::TaskSessions;
use tokio_util::sync::CancellationToken;

use crate::cli::{ApplyArgs, Cli, Color, Command, DriftArgs, LogFormat, PlanArgs, RolloutCommand};

/// Why a command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A mistake in the flags, the environment or the config file that clap cannot see (a bad
    /// duration, a missing setting, an unreadable secret file): exit 64, as clap's own errors.
    #[error(transparent)]
    Usage(#[from] ConfigError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Dev(#[from] baton_cli::dev::DevLoopError),
    #[error(transparent)]
    DevScheduler(#[from] baton_dev_scheduler::DevError),
    #[error(transparent)]
    Serve(#[from] baton::daemon::serve::ServeError),
    #[error(transparent)]
    Rollout(#[from] baton_cli::rollout::ClientError),
    #[error("cannot write the {what}")]
    Generate {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The exit code of the contract (`commands::exit`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => exit::USAGE,
            _ => exit::ERROR,
        }
    }
}

/// Run the command `cli` names on one runtime; `signals` starts the Ctrl-C/SIGTERM handler
/// for a token.
/// Starts the Ctrl-C/SIGTERM handler: the first signal cancels the token, a second kills the
/// dev scheduler's task sessions (if any) and exits.
pub type Signals = fn(CancellationToken, Option<TaskSessions>);

pub fn run(cli: Cli, sources: Sources, signals: Signals) -> Result<u8, Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let style = Style {
        color: match cli.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => {
                std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
            }
        },
    };
    // The process ends when the command returns: its memory goes back to the OS in one piece.
    commands::leave_memory_to_exit();
    match cli.command {
        Command::Validate { dir, format } => Ok(commands::validate(
            &dir,
            format,
            style,
            &mut std::io::stdout().lock(),
        )?),
        Command::Plan(args) => rt.block_on(plan(args, &sources, style)),
        Command::Drift(args) => rt.block_on(drift(args, &sources, style)),
        Command::Apply(args) => rt.block_on(apply(args, cli.log_format, &sources, style, signals)),
        Command::DiffEnv(args) => Ok(baton_cli::environments::diff_env(
            args,
            &mut std::io::stdout().lock(),
        )?),
        Command::Promote(args) => Ok(baton_cli::environments::promote(
            args,
            &mut std::io::stdout().lock(),
        )?),
        Command::Dev {
            repo,
            listen,
            state_dir,
        } => rt.block_on(dev(repo, listen, state_dir, signals)),
        Command::Serve(args) => rt.block_on(serve(*args, sources, signals)),
        Command::Rollout { command } => rt.block_on(rollout(command)),
        Command::DevScheduler { listen, state_dir } => {
            rt.block_on(dev_scheduler(listen, state_dir, cli.log_format, signals))
        }
        Command::Completions { shell } => {
            let out = &mut std::io::stdout().lock();
            crate::docgen::completions(shell, out).map_err(|source| Error::Generate {
                what: format!("{shell} completion script"),
                source,
            })?;
            Ok(exit::OK)
        }
        Command::Man { dir } => {
            let written = match &dir {
                Some(dir) => crate::docgen::man_pages(dir),
                None => crate::docgen::man_page(&mut std::io::stdout().lock()),
            };
            written.map_err(|source| Error::Generate {
                what: match dir {
                    Some(dir) => format!("man pages into {}", dir.display()),
                    None => "man page".to_owned(),
                },
                source,
            })?;
            Ok(exit::OK)
        }
    }
}

async fn plan(args: PlanArgs, sources: &Sources, style: Style) -> Result<u8, Error> {
    let live = live(
        &args.repo,
        args.environment.as_deref(),
        &args.live,
        &args.auth,
        sources,
    )?;
    let secrets = config::plan_secrets(args.vault, sources, &config::process_env)?;
    let policy = Policy {
        commit: args.commit,
        allow_deletes: args.allow_deletes,
    };
    let mut stdout = std::io::stdout().lock();
    let report = commands::plan_with_vault(
        repo_dir(args.repo, args.environment),
        &live,
        &policy,
        &secrets,
        args.format,
        style,
        &mut stdout,
    );
    Ok(report.await?)
}

async fn drift(args: DriftArgs, sources: &Sources, style: Style) -> Result<u8, Error> {
    let live = live(
        &args.repo,
        args.environment.as_deref(),
        &args.live,
        &args.auth,
        sources,
    )?;
    let options = commands::DriftOptions {
        format: args.format,
        state_dir: args.state_dir,
        attributions: Default::default(),
        now: None,
    };
    let mut stdout = std::io::stdout().lock();
    let dir = repo_dir(args.repo, args.environment);
    Ok(commands::drift(dir, &live, &options, style, &mut stdout).await?)
}

async fn apply(
    args: ApplyArgs,
    log_format: LogFormat,
    sources: &Sources,
    style: Style,
    signals: Signals,
) -> Result<u8, Error> {
    let env = args.environment.as_deref();
    let marathon =
        baton_cli::environments::marathon(&args.repo, env, args.marathon, &args.auth, sources)??;
    let options = config::apply_options(
        &args.lock_wait,
        args.parallelism,
        args.force_delete,
        &marathon,
        sources,
    )?;
    let policy = Policy {
        commit: args.commit,
        allow_deletes: args.allow_deletes,
    };
    let output = match log_format {
        LogFormat::Text => commands::ProgressOutput::Lines,
        LogFormat::Json => commands::ProgressOutput::Logs,
    };
    signals(options.cancel.clone(), None);
    let mut stdout = std::io::stdout();
    let code = commands::apply(
        repo_dir(args.repo, args.environment),
        marathon,
        &policy,
        &options,
        output,
        args.format,
        style,
        &mut stdout,
    );
    Ok(code.await?)
}

/// The repo directory, read as the environment named (if any).
fn repo_dir(path: PathBuf, environment: Option<String>) -> baton::environment::RepoDir {
    baton::environment::RepoDir { path, environment }
}

/// Where `plan` and `drift` read the live apps: `--live`, `--marathon`, or the environment's
/// Marathon.
fn live(
    repo: &std::path::Path,
    environment: Option<&str>,
    args: &config::LiveArgs,
    auth: &config::MarathonArgs,
    sources: &Sources,
) -> Result<commands::LiveFrom, Error> {
    if args.live.is_some() || environment.is_none() {
        return Ok(config::live(args, auth, sources)?);
    }
    let url = args.marathon.clone();
    let marathon = baton_cli::environments::marathon(repo, environment, url, auth, sources)??;
    Ok(commands::LiveFrom::Scheduler(marathon))
}

async fn dev(
    repo: PathBuf,
    listen: SocketAddr,
    state_dir: Option<PathBuf>,
    signals: Signals,
) -> Result<u8, Error> {
    let shutdown = CancellationToken::new();
    // The scheduler's task sessions: a second Ctrl-C kills them without waiting for `run`.
    let sessions = TaskSessions::default();
    signals(shutdown.clone(), Some(sessions.clone()));
    let options = baton_cli::dev::DevOptions {
        repo,
        listen,
        state_dir,
        sessions,
        ..Default::default()
    };
    baton_cli::dev::run(options, shutdown, &mut std::io::stdout()).await?;
    Ok(exit::OK)
}

async fn serve(args: ServeArgs, sources: Sources, signals: Signals) -> Result<u8, Error> {
    // Checked completely before anything binds or connects.
    let config = config::serve(args, sources, &config::process_env)?;
    let listen = config.listen;
    let listener =
        (tokio::net::TcpListener::bind(listen).await).map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    let shutdown = CancellationToken::new();
    signals(shutdown.clone(), None);
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: listen,
        source,
    })?;
    tracing::info!(%addr, repo = %baton::source::git::redact_url(&config.repo), "serving");
    baton::daemon::serve::serve(config, listener, shutdown).await?;
    Ok(exit::OK)
}

async fn rollout(command: RolloutCommand) -> Result<u8, Error> {
    use baton_cli::rollout::Verb;
    let (verb, target) = match command {
        RolloutCommand::Status(t) => (Verb::Status, t),
        RolloutCommand::Promote(t) => (Verb::Promote, t),
        RolloutCommand::Abort(t) => (Verb::Abort, t),
    };
    let token = config::api_token(target.api_token_file.as_deref(), &config::process_env)?;
    let mut stdout = std::io::stdout();
    let code = baton_cli::rollout::run(
        verb,
        &target.app,
        &target.server,
        token.as_ref(),
        target.output,
        &mut stdout,
    );
    Ok(code.await?)
}

async fn dev_scheduler(
    listen: SocketAddr,
    state_dir: Option<PathBuf>,
    log_format: LogFormat,
    signals: Signals,
) -> Result<u8, Error> {
    let listener =
        (tokio::net::TcpListener::bind(listen).await).map_err(|source| Error::Listen {
            addr: listen,
            source,
        })?;
    let shutdown = CancellationToken::new();
    let sessions = TaskSessions::default();
    signals(shutdown.clone(), Some(sessions.clone()));
    let config = baton_dev_scheduler::DevConfig {
        state_dir,
        sessions,
        ..Default::default()
    };
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: listen,
        source,
    })?;
    match log_format {
        LogFormat::Text => eprintln!("dev scheduler listening on http://{addr}"),
        LogFormat::Json => tracing::info!(%addr, "dev scheduler listening on http://{addr}"),
    }
    baton_dev_scheduler::run(listener, config, shutdown).await?;
    Ok(exit::OK)
}
