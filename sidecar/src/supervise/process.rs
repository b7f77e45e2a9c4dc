//! Process plumbing for PID-1 duty: spawning the child in its own process group,
//! signalling the group, and reaping every zombie (tini's `reap_zombies`).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::env::ChildEnv;

/// Signals forwarded to the child's process group (tini's list minus job control).
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// A `Command` for `argv` with exactly `env` as its environment.
pub fn command(argv: &[OsString], env: &ChildEnv) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.vars.iter().map(|(k, v)| (k, v.as_os_str())));
    cmd
}

/// Starts the child as leader of a new process group (pgid = its pid), so signals can
/// go to it and everything it starts, and a terminal's Ctrl-C does not hit it twice.
/// The child is never `wait`ed through std: the reaper collects its status. It dies with
/// baton-env ([`die_with_parent`]).
pub fn spawn(argv: &[OsString], env: &ChildEnv) -> std::io::Result<Pid> {
    let mut cmd = command(argv, env);
    cmd.process_group(0);
    die_with_parent(&mut cmd);
    let child = cmd.spawn()?;
    let pid = Pid::from_raw(child.id() as i32);
    // Dropping std's Child neither waits nor kills; the reaper owns the status.
    drop(child);
    Ok(pid)
}

/// Has the kernel SIGKILL the child when baton-env dies without stopping it (SIGKILL, the OOM
/// killer, a crash): its shutdown path cannot run then, so nobody would renew or revoke the
/// credentials the child holds, and the child, in a process group of its own, would escape a
/// kill of baton-env's group. As PID 1 of a container this changes nothing (the kernel kills
/// the whole PID namespace when PID 1 dies); elsewhere (a Mesos task without PID isolation,
/// the dev scheduler, a plain service manager) it keeps an unsupervised app from running on
/// with its secrets. SIGKILL rather than SIGTERM: a supervisor that is gone cannot enforce a
/// grace period, and it is what the child gets when a container's PID 1 dies.
///
/// The kernel sends the signal when the *thread* that forked the child exits: baton-env
/// spawns children only from its main thread (a current-thread runtime), which lives as long
/// as the process. A set-user-ID program clears the setting when it is executed.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec and calls only prctl(2) and
    // getppid(2), both async-signal-safe; it allocates nothing (errors are raw OS errors).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // baton-env died between fork and prctl: no signal will come, so do not start.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::from(Errno::ESRCH));
            }
            Ok(())
        });
    }
}

/// Sends `sig` to the group led by `leader`. A group that is already gone is fine.
pub fn signal_group(leader: Pid, sig: Signal) {
    match killpg(leader, sig) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => {
            tracing::warn!(signal = %sig, error = %e, "cannot signal the child's process group")
        }
    }
}

/// Reaps every exited process (ours, and orphans re-parented to us as PID 1 or
/// subreaper) until none is left. Returns the exit code of `main` if it was among them:
/// its own code, or 128 + N when killed by signal N.
pub fn reap_all(main: Option<Pid>) -> Option<i32> {
    let mut main_code = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                tracing::debug!(pid = pid.as_raw(), code, "reaped");
                if Some(pid) == main {
                    main_code = Some(code);
                }
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                tracing::debug!(pid = pid.as_raw(), signal = %sig, "reaped");
                if Some(pid) == main {
                    main_code = Some(128 + sig as i32);
                }
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "waitpid failed");
                break;
            }
        }
    }
    main_code
}

/// When not PID 1, become the child subreaper so orphans of the app are reparented to
/// us and reaped, as they would be by PID 1.
pub fn become_subreaper() {
    if std::process::id() != 1 {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "cannot register as child subreaper");
        }
    }
}
