//! `baton`: flags -> config -> tracing -> the library -> exit code. Nothing else lives here:
//! the command line is [`cli`], each command's wiring [`run`], stop signals [`signals`], its
//! settings `baton::config`.

mod cli;
mod docgen;
mod run;
mod signals;

use std::process::ExitCode;

use baton::commands::exit;
use cli::{Cli, LogFormat};

/// mimalloc rather than glibc malloc: loading and planning build millions of small values on
/// every core, and glibc's allocator was a quarter of `baton plan`'s instructions (callgrind at
/// 10,000 apps); see docs/benchmarks.md, "validate and plan".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let unblocked = signals::unblock_stop_signals();
    // Not `Cli::parse()`: clap exits 2 on bad usage, which is also `plan`'s "changes" and
    // `drift`'s "drift". Every usage error exits 64; `--help` and `--version` exit 0.
    let (cli, sources) = match Cli::parse_with_sources() {
        Ok(parsed) => parsed,
        Err(e) => {
            // A usage error is a log line too: JSON when JSON logs were asked for, even though
            // the command line that asked did not parse.
            let json =
                cli::json_logs_requested(std::env::args_os(), std::env::var_os("BATON_LOG_FORMAT"));
            if e.use_stderr() && json {
                init_tracing(LogFormat::Json);
                tracing::error!(
                    exit_code = exit::USAGE,
                    "{}",
                    e.render().to_string().trim_end()
                );
            } else {
                let _ = e.print();
            }
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    let format = cli.log_format;
    init_tracing(format);
    if let Err(e) = unblocked {
        tracing::warn!("cannot unblock SIGINT and SIGTERM: {e}");
    }
    match run::run(cli, sources, signals::spawn_handler) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            let e = anyhow::Error::from(e);
            match format {
                LogFormat::Json => tracing::error!(exit_code = code, "{e:#}"),
                LogFormat::Text => eprintln!("error: {e:#}"),
            }
            ExitCode::from(code)
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BATON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a terminal: in files, journald and pipes they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => {
            builder.with_ansi(false).json().init();
            // A panic's message is a log line like any other, not text between JSON lines.
            std::panic::set_hook(Box::new(|info| {
                tracing::error!(panic = true, "{info}");
            }));
        }
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}
