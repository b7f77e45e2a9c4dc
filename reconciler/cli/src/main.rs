//! `baton`: flags -> config -> tracing -> the library -> exit code. Nothing else lives here:
//! the command line is [`cli`], each command's wiring [`run`], its settings `baton::config`.

mod cli;
mod run;

use std::process::ExitCode;

use baton::commands::exit;
use cli::{Cli, LogFormat};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than glibc malloc: loading and planning build millions of small values on
/// every core, and glibc's allocator was a quarter of `baton plan`'s instructions (callgrind at
/// 10,000 apps); see docs/benchmarks.md, "validate and plan".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    unblock_stop_signals();
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
    match run::run(cli, sources, spawn_signal_handler) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = e.exit_code();
            eprintln!("error: {:#}", anyhow::Error::from(e));
            ExitCode::from(code)
        }
    }
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

/// First SIGINT/SIGTERM cancels `token` (graceful); a second one exits at once.
fn spawn_signal_handler(token: CancellationToken) {
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
                baton_dev_scheduler::kill_all_tasks();
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
