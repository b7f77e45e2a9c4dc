//! Stop signals: unblocked at start, then the first SIGINT/SIGTERM cancels the shutdown token
//! (graceful) and a second one exits at once.

use tokio_util::sync::CancellationToken;

/// A blocked signal mask is inherited across `exec`: started by a parent that blocks SIGINT and
/// SIGTERM (a harness, a supervisor's thread), Baton would never receive them, so neither Ctrl-C
/// nor SIGTERM could stop `serve`, `dev` or `dev-scheduler` (tokio installs handlers, which
/// also replace an inherited SIG_IGN, but does not touch the mask). Unblocked before any thread
/// exists, since threads inherit the mask of the thread that starts them. A failure is
/// returned for `main` to log once logging is set up (in the format asked for).
pub fn unblock_stop_signals() -> nix::Result<()> {
    use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
}

/// First SIGINT/SIGTERM cancels `token` (graceful); a second one kills the `tasks` of a dev
/// scheduler and exits at once.
pub fn spawn_handler(token: CancellationToken, tasks: Option<baton_dev_scheduler::TaskSessions>) {
    // Both streams made once, before the first signal: a listener made anew each round could
    // miss a second signal sent right after the first. Without one, the other works. Made here,
    // not in the task: the caller says it is listening right after this returns, and a SIGTERM
    // that came before the spawned task ran would have killed the process unhandled.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| tracing::warn!("cannot listen for SIGTERM: {e}"))
        .ok();
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| tracing::warn!("cannot listen for SIGINT: {e}"))
        .ok();
    tokio::spawn(async move {
        for round in 0..2 {
            tokio::select! {
                _ = next_signal(int.as_mut()) => {}
                _ = next_signal(term.as_mut()) => {}
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

/// The next signal of `stream`; never, without one.
async fn next_signal(stream: Option<&mut tokio::signal::unix::Signal>) {
    match stream {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
