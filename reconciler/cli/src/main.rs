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
    signals::unblock_stop_signals();
    // Not `Cli::parse()`: clap exits 2 on bad usage, which is also `plan`'s "changes" and
    // `drift`'s "drift". Every usage error exits 64; `--help` and `--version` exit 0.
    let (cli, sources) = match Cli::parse_with_sources() {
        Ok(parsed) => parsed,
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
    match run::run(cli, sources, signals::spawn_handler) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("error: {:#}", anyhow::Error::from(e));
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
