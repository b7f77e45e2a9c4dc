//! The command line: commands and their flags. The settings they share with the config file
//! (and their checks) are declared once in [`baton::config`]; this module adds the rest.

use std::net::SocketAddr;
use std::path::PathBuf;

use baton::commands::Format;
use baton::config::{LiveArgs, MarathonArgs, ServeArgs, Sources, VaultArgs};
use baton_core::drift_report::DriftFormat;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Baton: GitOps for Marathon.
#[derive(Parser)]
#[command(name = "baton", version = env!("BATON_VERSION"), about)]
pub struct Cli {
    /// When to colour terminal output.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto, env = "BATON_COLOR")]
    pub color: Color,
    /// Log format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "BATON_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// What promoting environment FROM to TO would change, field by field; exit 0 none, 2
    /// some, 1 error.
    DiffEnv(baton_cli::environments::DiffEnvArgs),
    /// Write FROM's values of APPs into TO's overlay in the working tree (no cluster is
    /// touched); `--commit` commits them.
    Promote(baton_cli::environments::PromoteArgs),
    /// Run the dev scheduler in-process, apply a repo (the demo by default) and redeploy on
    /// every edit. Ctrl-C stops everything.
    Dev {
        /// The repo directory to apply and watch.
        #[arg(long, default_value = baton_cli::dev::DEMO_REPO)]
        repo: PathBuf,
        /// The environment of `baton.yaml` to apply (its overlay and owner; its Marathon is
        /// not used: apps run on the dev scheduler); required when the repo declares some.
        #[arg(long, env = "BATON_ENVIRONMENT")]
        environment: Option<String>,
        /// Address of the dev scheduler (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Address of the read-only status page (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        page_listen: SocketAddr,
        /// Keep the scheduler's apps across runs in this directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Run the GitOps daemon: follow a git ref (or directory), sync on push webhooks and polls.
    Serve(Box<ServeArgs>),
    /// Look at or steer a rollout of a running `baton serve`; exit 0 done, 1 refused or
    /// failed, 64 bad usage.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// The apps of a running `baton serve` (or one APP); exit 0 synced, 2 out of sync, 3 an
    /// app failed, 1 no such app, 4 server unreachable or token refused.
    Status {
        /// Only this app (`/shop/web`).
        app: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Ask a running `baton serve` to sync now (every app, or those named); with --wait, exit
    /// with that sync's outcome (0 synced, 3 apps failed, 1 failed or timed out).
    Sync {
        /// Only this app (repeatable).
        #[arg(long = "app", value_name = "APP")]
        apps: Vec<String>,
        /// Wait for the cycle that serves this request and report its outcome.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value = "10m", requires = "wait")]
        timeout: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The last cycles of a running `baton serve`, most recent first.
    History {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Write APP's spec as it was at COMMIT back into the repo as a new commit (and with
    /// --now apply it at once, as `apply --app APP`); exit 0 done, 1 refused or failed, 3 the
    /// app failed to deploy (--now), 64 bad usage.
    Rollback(RollbackArgs),
    /// Run the Marathon-compatible dev scheduler (apps run as local processes).
    DevScheduler {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Keep apps across restarts in this directory.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Print the shell completion script for SHELL (docs/install.md says where it goes).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page of `baton` (roff), or with --dir write one page per command there.
    Man {
        /// Write baton.1 and baton-COMMAND.1 into this directory instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum RolloutCommand {
    /// The rollout's phase, step, traffic share, error rates and timeline (and the last one
    /// rolled back).
    Status(RolloutTarget),
    /// Pass the current check or analysis window now.
    Promote(RolloutTarget),
    /// Roll back now: the canary is removed, the stable app stays as it is.
    Abort(RolloutTarget),
}

#[derive(Args)]
pub struct RolloutTarget {
    /// The app id (`/shop/api`).
    pub app: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Where a client command finds `baton serve`, and how it shows the answer.
#[derive(Args)]
pub struct ServerArgs {
    /// The address of `baton serve`'s HTTP API.
    #[arg(long, env = "BATON_SERVER", default_value = "http://127.0.0.1:8088")]
    pub server: String,
    /// File holding the API token `baton serve` was given (or set BATON_API_TOKEN).
    #[arg(long, env = "BATON_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Text, alias = "format")]
    pub output: Format,
}

#[derive(Args)]
pub struct PlanArgs {
    /// The environment of `baton.yaml` to sync (its overlay, owner and Marathon).
    #[arg(long, env = "BATON_ENVIRONMENT")]
    pub environment: Option<String>,
    /// The repo directory.
    #[arg(long, default_value = ".", env = "BATON_REPO")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub auth: MarathonArgs,
    /// Allow up to N deletions even when they exceed the delete budget.
    #[arg(long)]
    pub allow_deletes: Option<usize>,
    /// Commit id recorded in the labels (defaults to `local` for a plain directory).
    #[arg(long, default_value = "local")]
    pub commit: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(flatten)]
    pub vault: VaultArgs,
    /// Only this app (repeatable): the whole plan narrowed to it.
    #[arg(long = "app", value_name = "APP")]
    pub apps: Vec<String>,
}

#[derive(Args)]
pub struct ApplyArgs {
    /// The environment of `baton.yaml` to sync (its overlay, owner and Marathon).
    #[arg(long, env = "BATON_ENVIRONMENT")]
    pub environment: Option<String>,
    /// The repo directory.
    #[arg(long, default_value = ".", env = "BATON_REPO")]
    pub repo: PathBuf,
    /// Marathon (or dev scheduler) base URL [default: the environment's].
    #[arg(long, env = "BATON_MARATHON")]
    pub marathon: Option<String>,
    #[command(flatten)]
    pub auth: MarathonArgs,
    /// Allow up to N deletions even when they exceed the delete budget.
    #[arg(long)]
    pub allow_deletes: Option<usize>,
    /// Commit id recorded in the labels (defaults to `local` for a plain directory).
    #[arg(long, default_value = "local")]
    pub commit: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Writes in flight at once within a wave.
    #[arg(long, default_value_t = 8)]
    pub parallelism: usize,
    /// How long to wait for a deployment that locks an app (409) before reporting it.
    #[arg(long, default_value = "2m")]
    pub lock_wait: String,
    /// Delete apps even while a deployment locks them (`force=true`). Never implied: without
    /// this flag Baton waits for the lock and reports it.
    #[arg(long)]
    pub force_delete: bool,
    /// Only this app (repeatable): the whole plan narrowed to it, under the same safety rules.
    #[arg(long = "app", value_name = "APP")]
    pub apps: Vec<String>,
    /// Show the plan before writing and task counts while deployments run (auto: on a
    /// terminal).
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub progress: Color,
}

#[derive(Args)]
pub struct RollbackArgs {
    /// The app id (`/shop/web`).
    pub app: String,
    /// The commit (any git revision) whose spec of APP is written back.
    #[arg(long = "to", value_name = "COMMIT")]
    pub to: String,
    /// The repo directory (inside a git work tree; the commit goes on its current branch).
    #[arg(long, default_value = ".", env = "BATON_REPO")]
    pub repo: PathBuf,
    /// Also apply APP at once (`baton apply --app APP` with the new commit), under the repo's
    /// safety rules.
    #[arg(long, requires = "marathon")]
    pub now: bool,
    /// Marathon (or dev scheduler) base URL, for --now.
    #[arg(long, env = "BATON_MARATHON")]
    pub marathon: Option<String>,
    #[command(flatten)]
    pub auth: MarathonArgs,
}

#[derive(Args)]
pub struct DriftArgs {
    /// The environment of `baton.yaml` to sync (its overlay, owner and Marathon).
    #[arg(long, env = "BATON_ENVIRONMENT")]
    pub environment: Option<String>,
    /// The repo directory.
    #[arg(long, default_value = ".", env = "BATON_REPO")]
    pub repo: PathBuf,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub auth: MarathonArgs,
    /// `baton serve`'s state directory: its drift ledger adds since when and who (read only).
    #[arg(long, env = "BATON_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DriftFormat::Text)]
    pub format: DriftFormat,
}

impl Cli {
    /// Parse the process's arguments (and `BATON_*` variables), noting which flags of the
    /// chosen command clap took from the environment, so errors can name the variable.
    pub fn parse_with_sources() -> Result<(Cli, Sources), clap::Error> {
        Self::parse_from_with_sources(std::env::args_os())
    }

    pub fn parse_from_with_sources<I, T>(args: I) -> Result<(Cli, Sources), clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = Cli::command();
        let matches = command.clone().try_get_matches_from(args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        let mut sources = Sources::default();
        if let Some((name, sub)) = matches.subcommand() {
            let args = command.find_subcommand(name).into_iter();
            for arg in args.flat_map(|c| c.get_arguments()) {
                let from_env =
                    sub.value_source(arg.get_id().as_str()) == Some(ValueSource::EnvVariable);
                if let (true, Some(long), Some(var)) = (from_env, arg.get_long(), arg.get_env()) {
                    sources.env(format!("--{long}"), var.to_string_lossy());
                }
            }
        }
        Ok((cli, sources))
    }
}

/// Whether the raw command line (or else `BATON_LOG_FORMAT`) asks for JSON logs: for an error
/// clap reports before it could parse `--log-format` itself. The last `--log-format` given
/// before a `--` wins, as in clap.
pub fn json_logs_requested(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    env: Option<std::ffi::OsString>,
) -> bool {
    let mut given = None;
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        } else if arg == "--log-format" {
            given = args.next();
        } else if let Some(v) = arg.strip_prefix("--log-format=") {
            given = Some(v.to_string());
        }
    }
    given
        .or_else(|| env.map(|e| e.to_string_lossy().into_owned()))
        .is_some_and(|v| v.eq_ignore_ascii_case("json"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton::config::Origin;

    #[test]
    fn json_logs_are_seen_in_a_command_line_that_does_not_parse() {
        let args = |a: &[&str]| a.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(json_logs_requested(
            args(&["baton", "--log-format", "json", "plan", "--bogus"]),
            None
        ));
        assert!(json_logs_requested(
            args(&["baton", "plan", "--log-format=json"]),
            None
        ));
        assert!(json_logs_requested(
            args(&["baton", "plan", "--bogus"]),
            Some("json".into())
        ));
        assert!(!json_logs_requested(
            args(&["baton", "--log-format", "json", "--log-format", "text"]),
            Some("json".into())
        ));
        assert!(!json_logs_requested(
            args(&["baton", "dev", "--", "--log-format", "json"]),
            None
        ));
        assert!(!json_logs_requested(args(&["baton", "plan"]), None));
    }

    /// A flag given on the command line is the flag's; one clap read from its environment
    /// variable is named by that variable (the rest of the process env plays no part here:
    /// `BATON_POLL_INTERVAL` is not set by the test harness).
    #[test]
    fn sources_say_which_flags_came_from_the_command_line() {
        let (cli, sources) = Cli::parse_from_with_sources([
            "baton",
            "serve",
            "--poll-interval",
            "5m",
            "--vault-allowed-policies",
            "a,b",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Serve(_)));
        assert_eq!(sources.of("--poll-interval"), Origin::Flag);
        assert_eq!(sources, Sources::default());
    }

    /// The rollout flags of `serve`: `--haproxy-stats` repeatable, `--allow-check-commands`
    /// a switch, `--rollout-tick` hidden from `--help`; `baton rollout` takes an app and a
    /// server.
    #[test]
    fn rollout_flags_parse() {
        let (cli, _) = Cli::parse_from_with_sources([
            "baton",
            "serve",
            "--haproxy-stats",
            "http://lb1/stats;csv",
            "--haproxy-stats",
            "http://lb2/stats;csv",
            "--allow-check-commands",
            "--rollout-tick",
            "1s",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            args.haproxy_stats,
            ["http://lb1/stats;csv", "http://lb2/stats;csv"]
        );
        assert_eq!(args.settings.allow_check_commands, Some(true));
        assert_eq!(args.settings.rollout_tick.as_deref(), Some("1s"));
        let serve = Cli::command();
        let serve = serve.find_subcommand("serve").unwrap();
        let tick = serve
            .get_arguments()
            .find(|a| a.get_long() == Some("rollout-tick"))
            .unwrap();
        assert!(tick.is_hide_set());

        let (cli, _) = Cli::parse_from_with_sources([
            "baton",
            "rollout",
            "abort",
            "/shop/api",
            "--server",
            "http://h:1",
            "--output",
            "json",
        ])
        .unwrap();
        let Command::Rollout {
            command: RolloutCommand::Abort(t),
        } = cli.command
        else {
            panic!("not rollout abort")
        };
        assert_eq!(
            (t.app.as_str(), t.server.server.as_str()),
            ("/shop/api", "http://h:1")
        );
        assert_eq!(t.server.output, Format::Json);
    }

    #[test]
    fn the_command_line_parses() {
        Cli::command().debug_assert();
    }
}
