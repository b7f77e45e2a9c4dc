//! baton-env: flags → [`baton_env::Config`] → tracing → [`baton_env::run`] → exit code.
//!
//! Secret-bearing inputs are read from the environment or from files only, never from
//! flags (flags are visible in `/proc/<pid>/cmdline`).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use baton_env::auth::{AuthMethod, JwtSource, SecretIdSource};
use baton_env::error::exit;
use baton_env::resolve::KvVersions;
use baton_env::secret::Secret;
use baton_env::supervise::OnRotate;
use baton_env::vault::VaultConfig;
use baton_env::{Config, Mode};
use clap::{Parser, ValueEnum};
use nix::sys::signal::Signal;
use zeroize::Zeroize;

/// Resolve `vault:` secret references in the environment, then run COMMAND.
///
/// Secret inputs come only from the environment or files: VAULT_TOKEN (or --token-file),
/// BATON_ROLE_ID, BATON_SECRET_ID, BATON_WRAPPED_SECRET_ID (or the --*-file flags).
///
/// `baton-env check [OPTIONS]` is a dry run of a start (see `baton-env check --help`).
#[derive(Debug, Parser)]
#[command(
    name = "baton-env",
    version = env!("BATON_VERSION"),
    about,
    long_about = None,
    after_help = "A dry run of a start (log in, check every reference, revoke, run nothing): \
                  baton-env check [OPTIONS] (see baton-env check --help)."
)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    /// The command to run, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<OsString>,
}

/// Dry run of a container start: log in exactly as the task would, check every `vault:`
/// reference of the environment, revoke what was obtained, run nothing.
///
/// Prints one line per reference (variable, path#key, ok or why not, KV version and the
/// version read, a dynamic secret's lease: renewable, TTL): names and metadata, never a
/// value. Takes the same flags and environment as a start (flags about running a command are
/// accepted and ignored). Exit codes as for a start: 0 every reference resolves, 1 (or
/// --resolve-exit-code) one does not, 64 bad configuration, 69 Vault unavailable, 77 login
/// refused, 79 security alarm.
///
/// The check logs in for real: with --auth gatekeeper, or a wrapped secret id, the one-time
/// credential is SPENT by the check (the gatekeeper grants a task once; a wrapping token
/// unwraps once), so a task started afterwards with the same material is refused. Run it
/// with its own task id, or with a plain secret id or a token. The token it logged in with is
/// revoked at the end with its leases (a given token is kept and its leases are revoked one
/// by one). Bootstrap files are not removed.
#[derive(Debug, Parser)]
#[command(name = "baton-env check", version = env!("BATON_VERSION"))]
struct CheckCli {
    #[command(flatten)]
    opts: Opts,
    /// One JSON document on stdout instead of the table (schema: schemas/check.schema.json).
    #[arg(long)]
    json: bool,
}

/// The flags of a start, shared by `baton-env check`.
#[derive(Debug, clap::Args)]
struct Opts {
    /// Vault address, e.g. https://vault.service:8200.
    #[arg(long, env = "VAULT_ADDR")]
    vault_addr: Option<String>,
    /// Vault Enterprise namespace.
    #[arg(long, env = "VAULT_NAMESPACE")]
    namespace: Option<String>,
    /// PEM file with CA certificates to trust for Vault's TLS.
    #[arg(long, env = "VAULT_CACERT")]
    ca_cert: Option<PathBuf>,
    /// Timeout of each Vault request.
    #[arg(long, env = "BATON_VAULT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    vault_timeout: Duration,

    /// Login method; default: approle when a role id is given, jwt when a JWT file is
    /// given, else token.
    #[arg(long, env = "BATON_AUTH", value_enum)]
    auth: Option<AuthKind>,
    /// File holding the Vault token (instead of VAULT_TOKEN).
    #[arg(long, env = "BATON_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// AppRole auth mount.
    #[arg(long, env = "BATON_APPROLE_MOUNT", default_value = "approle")]
    approle_mount: String,
    /// --auth gatekeeper: the AppRole role the wrapped secret id must have been minted for
    /// (its wrapping token's creation path is checked against it).
    #[arg(long, env = "BATON_APPROLE_ROLE")]
    approle_role: Option<String>,
    /// File holding the AppRole role id (instead of BATON_ROLE_ID).
    #[arg(long, env = "BATON_ROLE_ID_FILE")]
    role_id_file: Option<PathBuf>,
    /// File holding the AppRole secret id (instead of BATON_SECRET_ID).
    #[arg(long, env = "BATON_SECRET_ID_FILE")]
    secret_id_file: Option<PathBuf>,
    /// File holding a response-wrapping token for the secret id (instead of
    /// BATON_WRAPPED_SECRET_ID).
    #[arg(long, env = "BATON_WRAPPED_SECRET_ID_FILE")]
    wrapped_secret_id_file: Option<PathBuf>,
    /// JWT auth mount.
    #[arg(long, env = "BATON_JWT_MOUNT", default_value = "jwt")]
    jwt_mount: String,
    /// JWT auth role.
    #[arg(long, env = "BATON_JWT_ROLE")]
    jwt_role: Option<String>,
    /// File holding the JWT (re-read on every login: workload identity tokens rotate).
    #[arg(long, env = "BATON_JWT_FILE")]
    jwt_file: Option<PathBuf>,
    /// Gatekeeper URL for --auth gatekeeper.
    #[arg(long, env = "BATON_GATEKEEPER_URL")]
    gatekeeper_url: Option<String>,
    /// Task id sent to the gatekeeper.
    #[arg(long, env = "MESOS_TASK_ID")]
    task_id: Option<String>,
    /// App id sent to the gatekeeper.
    #[arg(long, env = "MARATHON_APP_ID")]
    app_id: Option<String>,
    /// Delete the token/secret-id/wrapping-token/role-id files after login.
    #[arg(long, env = "BATON_REMOVE_BOOTSTRAP_FILES")]
    remove_bootstrap_files: bool,

    /// KV version of a mount, skipping detection: MOUNT=1|2 (repeatable, or comma-separated).
    #[arg(long = "kv-version", env = "BATON_KV_VERSIONS", value_delimiter = ',')]
    kv_versions: Vec<String>,
    /// supervise: stay as the app's parent (renewal, rotation, revocation);
    /// exec: replace baton-env with the app.
    #[arg(long, env = "BATON_MODE", value_enum, default_value = "supervise")]
    mode: ModeArg,
    /// What to do when credentials rotate: restart, exit, or signal:NAME (e.g. signal:HUP,
    /// needs --env-file).
    #[arg(long, env = "BATON_ON_ROTATE", default_value = "restart", value_parser = parse_on_rotate)]
    on_rotate: OnRotate,
    /// Write secrets to this file (mode 0400, on tmpfs) instead of the environment; the
    /// child gets its path as BATON_ENV_FILE.
    #[arg(long, env = "BATON_ENV_FILE")]
    env_file: Option<PathBuf>,
    /// How long to retry while Vault is unreachable, sealed or failing at start.
    #[arg(long, env = "BATON_MAX_WAIT", default_value = "60s", value_parser = humantime::parse_duration)]
    max_wait: Duration,
    /// How long the child gets between SIGTERM and SIGKILL.
    #[arg(long, env = "BATON_GRACE_PERIOD", default_value = "10s", value_parser = humantime::parse_duration)]
    grace_period: Duration,
    /// Do not revoke leases and the token on exit.
    #[arg(long, env = "BATON_NO_REVOKE")]
    no_revoke: bool,
    /// Also remove this variable from the child's environment (repeatable).
    #[arg(long = "strip-env", env = "BATON_STRIP_ENV", value_delimiter = ',')]
    strip_env: Vec<String>,
    /// Exit code when a secret reference cannot be resolved.
    #[arg(long, env = "BATON_RESOLVE_EXIT_CODE", default_value_t = exit::RESOLVE)]
    resolve_exit_code: u8,

    /// Log format on stderr.
    #[arg(long, env = "BATON_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter (tracing env-filter syntax).
    #[arg(long, env = "BATON_LOG", default_value = "info")]
    log_level: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AuthKind {
    Token,
    Approle,
    Jwt,
    Gatekeeper,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Supervise,
    Exec,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_on_rotate(s: &str) -> Result<OnRotate, String> {
    match s {
        "restart" => Ok(OnRotate::Restart),
        "exit" => Ok(OnRotate::Exit),
        _ => {
            let name = s
                .strip_prefix("signal:")
                .ok_or_else(|| format!("expected restart, exit or signal:NAME, got {s:?}"))?;
            let full = if name.starts_with("SIG") {
                name.to_owned()
            } else {
                format!("SIG{name}")
            };
            full.parse::<Signal>()
                .map(OnRotate::Signal)
                .map_err(|_| format!("unknown signal {name:?}"))
        }
    }
}

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    // `baton-env check ...`: a start's command always comes after `--`, so a first argument
    // `check` is unambiguous.
    if args.get(1).is_some_and(|a| a == "check") {
        args.remove(1);
        // The program name clap shows in usage and errors.
        args[0] = OsString::from("baton-env check");
        let cli = parse::<CheckCli>(args);
        check_main(cli.opts, cli.json);
    }
    let cli = parse::<Cli>(args);
    init_tracing(&cli.opts);
    let resolve_code = cli.opts.resolve_exit_code;
    let config = match config(cli.opts, cli.command) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::exit(exit::USAGE.into());
        }
    };
    let runtime = runtime();
    let parent_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let code = match runtime.block_on(baton_env::run(config, parent_env)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{}", baton_env::chain(&e));
            e.exit_code(resolve_code).into()
        }
    };
    std::process::exit(code);
}

/// Parses the flags; clap's own errors exit 64 (help and version 0). With JSON logs asked for
/// (`--log-format json` before `--`, or `BATON_LOG_FORMAT=json`), a usage error is a JSON log
/// line like every other line of baton-env's, although the flags that asked did not parse.
fn parse<P: Parser>(args: Vec<OsString>) -> P {
    let json = json_logs_requested(&args, std::env::var_os("BATON_LOG_FORMAT"));
    match P::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            if e.use_stderr() && json {
                init_json_tracing(tracing_subscriber::EnvFilter::new("info"));
                tracing::error!("{}", e.render().to_string().trim_end());
            } else {
                let _ = e.print();
            }
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            std::process::exit(code.into());
        }
    }
}

/// Whether the raw flags (up to `--`, after which the child's command starts) or else
/// `BATON_LOG_FORMAT` ask for JSON logs; the last `--log-format` wins, as in clap.
fn json_logs_requested(args: &[OsString], env: Option<OsString>) -> bool {
    let mut given = None;
    let mut args = args.iter().map(|a| a.to_string_lossy().into_owned());
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

/// JSON logs on stderr, and a panic's message as one of them rather than plain text.
fn init_json_tracing(filter: tracing_subscriber::EnvFilter) {
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .with_target(false)
        .json()
        .flatten_event(true)
        .init();
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = true, "{info}");
    }));
}

fn runtime() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            std::process::exit(exit::OS.into());
        }
    }
}

/// `baton-env check`: the report on stdout, the exit code of a start.
fn check_main(opts: Opts, json: bool) -> ! {
    init_tracing(&opts);
    let resolve_code = opts.resolve_exit_code;
    let config = match config(opts, Vec::new()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::exit(exit::USAGE.into());
        }
    };
    let parent_env: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let report = match runtime().block_on(baton_env::check(config, parent_env)) {
        Ok(report) => report,
        Err(e) => {
            tracing::error!("{}", baton_env::chain(&e));
            std::process::exit(e.exit_code(resolve_code).into());
        }
    };
    let printed = if json {
        serde_json::to_string_pretty(&report).map(|mut s| {
            s.push('\n');
            s
        })
    } else {
        Ok(report.table())
    };
    let written = printed
        .map_err(std::io::Error::from)
        .and_then(|text| std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes()));
    if let Err(e) = written {
        tracing::error!(error = %e, "cannot write the report");
        std::process::exit(exit::OS.into());
    }
    let code = if report.ok {
        0
    } else if report.only_unavailable() {
        exit::UNAVAILABLE
    } else {
        resolve_code
    };
    std::process::exit(code.into());
}

fn init_tracing(cli: &Opts) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    match cli.log_format {
        LogFormat::Json => init_json_tracing(filter),
        // Colour codes only for a terminal: container logs are files and pipes.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_target(false)
            .init(),
    }
}

/// Checks the flags and loads bootstrap material into redacting holders.
fn config(cli: Opts, command: Vec<OsString>) -> anyhow::Result<Config> {
    let vault = cli.vault_addr.clone().map(|addr| VaultConfig {
        addr,
        namespace: cli.namespace.clone(),
        ca_cert: cli.ca_cert.clone(),
        timeout: cli.vault_timeout,
    });
    let role_id_given = std::env::var_os("BATON_ROLE_ID").is_some() || cli.role_id_file.is_some();
    let kind = cli.auth.unwrap_or(if role_id_given {
        AuthKind::Approle
    } else if cli.jwt_file.is_some() {
        AuthKind::Jwt
    } else if cli.gatekeeper_url.is_some() {
        AuthKind::Gatekeeper
    } else {
        AuthKind::Token
    });
    let mut bootstrap_files = Vec::new();
    let auth = match kind {
        // No token is fine as long as no variable holds a reference (a plain PID-1
        // supervisor); `run` refuses an empty token otherwise (exit 64).
        AuthKind::Token => AuthMethod::Token(
            secret_input(
                "VAULT_TOKEN",
                cli.token_file.as_deref(),
                &mut bootstrap_files,
            )?
            .unwrap_or_else(|| Secret::new(String::new())),
        ),
        AuthKind::Approle => {
            let role_id = secret_input(
                "BATON_ROLE_ID",
                cli.role_id_file.as_deref(),
                &mut bootstrap_files,
            )?
            .context("--auth approle needs BATON_ROLE_ID or --role-id-file")?;
            let plain = secret_input(
                "BATON_SECRET_ID",
                cli.secret_id_file.as_deref(),
                &mut bootstrap_files,
            )?;
            let wrapped = secret_input(
                "BATON_WRAPPED_SECRET_ID",
                cli.wrapped_secret_id_file.as_deref(),
                &mut bootstrap_files,
            )?;
            let secret_id = match (plain, wrapped) {
                (Some(_), Some(_)) => bail!("give either a secret id or a wrapped secret id, not both"),
                (Some(s), None) => SecretIdSource::Plain(s),
                (None, Some(w)) => SecretIdSource::Wrapped(w),
                (None, None) => bail!(
                    "--auth approle needs BATON_SECRET_ID, BATON_WRAPPED_SECRET_ID or a --*secret-id-file"
                ),
            };
            AuthMethod::AppRole {
                mount: cli.approle_mount.trim_matches('/').to_owned(),
                role_id,
                secret_id,
            }
        }
        AuthKind::Jwt => {
            let role = cli
                .jwt_role
                .clone()
                .context("--auth jwt needs --jwt-role")?;
            let file = cli
                .jwt_file
                .as_deref()
                .context("--auth jwt needs --jwt-file")?;
            AuthMethod::Jwt {
                mount: cli.jwt_mount.trim_matches('/').to_owned(),
                role,
                jwt: JwtSource::File(file.to_path_buf()),
            }
        }
        AuthKind::Gatekeeper => {
            if cli.gatekeeper_url.is_none() {
                bail!("--auth gatekeeper needs --gatekeeper-url");
            }
            // Required pin: without it any role's secret id on the mount would be accepted.
            let role = cli
                .approle_role
                .clone()
                .filter(|r| !r.trim().is_empty())
                .context(
                    "--auth gatekeeper needs --approle-role or BATON_APPROLE_ROLE (the role the \
                     wrapped secret id must have been minted for)",
                )?;
            // Optional pin: the gatekeeper must answer with this role id.
            let role_id = secret_input(
                "BATON_ROLE_ID",
                cli.role_id_file.as_deref(),
                &mut bootstrap_files,
            )?;
            AuthMethod::Gatekeeper {
                mount: cli.approle_mount.trim_matches('/').to_owned(),
                role,
                role_id,
                task_id: cli
                    .task_id
                    .clone()
                    .context("--auth gatekeeper needs --task-id or MESOS_TASK_ID")?,
                app_id: cli
                    .app_id
                    .clone()
                    .context("--auth gatekeeper needs --app-id or MARATHON_APP_ID")?,
            }
        }
    };
    if matches!(cli.on_rotate, OnRotate::Signal(_)) && cli.env_file.is_none() {
        bail!("--on-rotate signal:NAME needs --env-file (a running process cannot get a new environment)");
    }
    let kv = KvVersions::parse(cli.kv_versions.iter().map(String::as_str))
        .map_err(anyhow::Error::msg)?;
    Ok(Config {
        vault,
        auth,
        gatekeeper_url: cli.gatekeeper_url,
        kv,
        mode: match cli.mode {
            ModeArg::Supervise => Mode::Supervise,
            ModeArg::Exec => Mode::Exec,
        },
        on_rotate: cli.on_rotate,
        env_file: cli.env_file,
        bootstrap_files: if cli.remove_bootstrap_files {
            bootstrap_files
        } else {
            Vec::new()
        },
        max_wait: cli.max_wait,
        grace: cli.grace_period,
        revoke: !cli.no_revoke,
        strip_env: cli.strip_env.into_iter().collect::<BTreeSet<_>>(),
        command,
    })
}

/// A secret from the environment variable `var`, else from `file` (recorded for
/// `--remove-bootstrap-files`).
fn secret_input(
    var: &str,
    file: Option<&Path>,
    files: &mut Vec<PathBuf>,
) -> anyhow::Result<Option<Secret>> {
    if let Some(value) = std::env::var_os(var) {
        let value = value
            .into_string()
            .map_err(|_| anyhow::anyhow!("{var} is not valid UTF-8"))?;
        return Ok(Some(Secret::new(value.trim().to_owned())));
    }
    match file {
        Some(path) => {
            files.push(path.to_owned());
            read_secret_file(path).map(Some)
        }
        None => Ok(None),
    }
}

fn read_secret_file(path: &Path) -> anyhow::Result<Secret> {
    let mut raw =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let secret = Secret::new(raw.trim().to_owned());
    raw.zeroize();
    Ok(secret)
}
