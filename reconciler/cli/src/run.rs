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

use crate::cli::{
    ApplyArgs, Cli, Color, Command, DriftArgs, LogFormat, PlanArgs, RolloutCommand, ServerArgs,
};

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
    /// A client of `baton serve` (`status`, `sync`, `history`, `rollout`).
    #[error(transparent)]
    Client(#[from] baton_cli::client::ClientError),
    #[error("cannot write the {what}")]
    Generate {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Rollback(#[from] baton::rollback::RollbackError),
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
            Error::Client(e) => e.exit_code(),
            Error::Command(CommandError::UnknownApps { .. }) => exit::USAGE,
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
            environment,
            listen,
            page_listen,
            state_dir,
        } => {
            let repo = baton::environment::RepoDir {
                path: repo,
                environment,
            };
            rt.block_on(dev(repo, listen, page_listen, state_dir, signals))
        }
        Command::Serve(args) => rt.block_on(serve(*args, sources, signals)),
        Command::Rollout { command } => rt.block_on(rollout(command)),
        Command::Rollback(args) => rt.block_on(rollback(args, &sources, style, signals)),
        Command::Status { app, server } => rt.block_on(remote(server, |s, f, out| {
            Box::pin(async move { baton_cli::remote::status(s, app.as_deref(), f, out).await })
        })),
        Command::History { server } => rt.block_on(remote(server, |s, f, out| {
            Box::pin(baton_cli::remote::history(s, f, out))
        })),
        Command::Sync {
            apps,
            wait,
            timeout,
            server,
        } => {
            let wait = match wait {
                true => Some(baton_core::spec::load::parse_duration(&timeout).map_err(
                    |reason| ConfigError::Bad {
                        name: "--timeout",
                        origin: config::Origin::Flag,
                        reason,
                    },
                )?),
                false => None,
            };
            rt.block_on(remote(server, |s, f, out| {
                Box::pin(async move {
                    let request = baton_cli::remote::SyncRequest { apps: &apps, wait };
                    baton_cli::remote::sync(s, &request, f, out).await
                })
            }))
        }
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
    let environment = baton_cli::environments::settings(&args.repo, args.environment.as_deref())?;
    let live = live(environment.as_ref(), &args.live, &args.auth, sources)?;
    let env = environment.as_ref();
    let secrets = config::plan_secrets(args.vault, env, sources, &config::process_env)?;
    let policy = Policy {
        commit: args.commit,
        allow_deletes: args.allow_deletes,
    };
    let only = selection(&args.apps)?;
    let mut stdout = std::io::stdout().lock();
    let report = commands::plan_with_vault(
        repo_dir(args.repo, args.environment),
        &live,
        &policy,
        &secrets,
        only.as_ref(),
        args.format,
        style,
        &mut stdout,
    );
    Ok(report.await?)
}

/// `baton rollback`: the commit, then with `--now` the apply of that one app.
async fn rollback(
    args: crate::cli::RollbackArgs,
    sources: &Sources,
    style: Style,
    signals: Signals,
) -> Result<u8, Error> {
    let Some(only) = selection(std::slice::from_ref(&args.app))? else {
        return Ok(exit::USAGE);
    };
    let marathon = match (&args.marathon, args.now) {
        (Some(url), true) => Some(config::marathon(url.clone(), &args.auth, sources)?),
        _ => None,
    };
    let app = only
        .iter()
        .next()
        .cloned()
        .ok_or_else(|| ConfigError::Bad {
            name: "APP",
            origin: config::Origin::Flag,
            reason: "no app".into(),
        })?;
    let (repo, to) = (args.repo.clone(), args.to.clone());
    let done = tokio::task::spawn_blocking(move || baton::rollback::rollback(&repo, &app, &to))
        .await
        .map_err(|e| Error::Command(e.into()))??;
    let commit = match done {
        baton::rollback::Rolled::AlreadyThere { file, head } => {
            println!(
                "{} is already as at {} ({}): nothing committed",
                args.app,
                args.to,
                file.display()
            );
            head
        }
        baton::rollback::Rolled::Committed {
            commit,
            file,
            removed,
        } => {
            let moved = removed
                .map(|r| format!(", {} removed", r.display()))
                .unwrap_or_default();
            println!(
                "committed {commit}: {} as at {} ({}{moved})",
                args.app,
                args.to,
                file.display()
            );
            commit
        }
    };
    let Some(marathon) = marathon else {
        return Ok(exit::OK);
    };
    let options = config::apply_options("2m", 8, false, &marathon, sources)?;
    let policy = Policy {
        // The labels name the commit that holds what is applied.
        commit,
        allow_deletes: None,
    };
    signals(options.cancel.clone(), None);
    let scope = commands::ApplyScope {
        only: Some(&only),
        terminal: std::io::stdout().is_terminal(),
    };
    let mut stdout = std::io::stdout();
    let code = commands::apply(
        &args.repo,
        marathon,
        &policy,
        &options,
        commands::ProgressOutput::Lines,
        scope,
        commands::Format::Text,
        style,
        &mut stdout,
    );
    Ok(code.await?)
}

/// `--app` values as app ids (`shop/web` and `/shop/web` alike); a malformed one is bad usage.
fn selection(
    apps: &[String],
) -> Result<Option<std::collections::BTreeSet<baton_core::spec::AppId>>, Error> {
    if apps.is_empty() {
        return Ok(None);
    }
    let parse = |a: &String| {
        baton_core::spec::AppId::parse(&format!("/{}", a.trim_start_matches('/'))).map_err(
            |reason| ConfigError::Bad {
                name: "--app",
                origin: config::Origin::Flag,
                reason: format!("`{a}`: {reason}"),
            },
        )
    };
    Ok(Some(apps.iter().map(parse).collect::<Result<_, _>>()?))
}

async fn drift(args: DriftArgs, sources: &Sources, style: Style) -> Result<u8, Error> {
    let environment = baton_cli::environments::settings(&args.repo, args.environment.as_deref())?;
    let live = live(environment.as_ref(), &args.live, &args.auth, sources)?;
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
    let environment = baton_cli::environments::settings(&args.repo, args.environment.as_deref())?;
    let env = environment.as_ref();
    let marathon = baton_cli::environments::marathon(env, args.marathon, &args.auth, sources)??;
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
    let only = selection(&args.apps)?;
    let scope = commands::ApplyScope {
        only: only.as_ref(),
        terminal: match args.progress {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stdout().is_terminal(),
        },
    };
    signals(options.cancel.clone(), None);
    let mut stdout = std::io::stdout();
    let code = commands::apply(
        repo_dir(args.repo, args.environment),
        marathon,
        &policy,
        &options,
        output,
        scope,
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
    environment: Option<&baton_core::environment::Environment>,
    args: &config::LiveArgs,
    auth: &config::MarathonArgs,
    sources: &Sources,
) -> Result<commands::LiveFrom, Error> {
    if args.live.is_some() || environment.is_none() {
        return Ok(config::live(args, auth, sources)?);
    }
    let url = args.marathon.clone();
    let marathon = baton_cli::environments::marathon(environment, url, auth, sources)??;
    Ok(commands::LiveFrom::Scheduler(marathon))
}

async fn dev(
    repo: baton::environment::RepoDir,
    listen: SocketAddr,
    page_listen: SocketAddr,
    state_dir: Option<PathBuf>,
    signals: Signals,
) -> Result<u8, Error> {
    let shutdown = CancellationToken::new();
    // The scheduler's task sessions: a second Ctrl-C kills them without waiting for `run`.
    let sessions = TaskSessions::default();
    signals(shutdown.clone(), Some(sessions.clone()));
    let options = baton_cli::dev::DevOptions {
        repo: repo.path,
        environment: repo.environment,
        listen,
        page_listen,
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
    let remote = target.server;
    let token = config::api_token(remote.api_token_file.as_deref(), &config::process_env)?;
    let mut stdout = std::io::stdout();
    let code = baton_cli::rollout::run(
        verb,
        &target.app,
        &remote.server,
        token.as_ref(),
        remote.output,
        &mut stdout,
    );
    Ok(code.await?)
}

/// The answer of a client command: its exit code.
type ClientFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<u8, baton_cli::client::ClientError>> + 'a>,
>;

/// A client command of `baton serve` (`status`, `sync`, `history`): the server and its token
/// from the flags (a token file that cannot be read is bad usage), then `command`.
async fn remote<F>(args: ServerArgs, command: F) -> Result<u8, Error>
where
    F: for<'a> FnOnce(
        &'a baton_cli::client::Server,
        baton::commands::Format,
        &'a mut (dyn std::io::Write + Send),
    ) -> ClientFuture<'a>,
{
    let token = config::api_token(args.api_token_file.as_deref(), &config::process_env)?;
    let server = baton_cli::client::Server::new(&args.server, token)?;
    let mut stdout = std::io::stdout();
    Ok(command(&server, args.output, &mut stdout).await?)
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
