//! baton-env as PID 1 of a fresh PID namespace (`unshare --pid --fork --mount-proc`):
//! exit codes propagate, orphans are reaped, signals reach the child, and a child that
//! ignores SIGTERM is killed after the grace period.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{missing, text, BIN};

/// unshare flags that work here: as root a PID namespace alone; otherwise inside a new
/// user namespace (unprivileged CI runners, where the kernel allows it).
const FLAG_SETS: [&[&str]; 2] = [
    &["--pid", "--fork", "--mount-proc"],
    &[
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--mount-proc",
    ],
];

/// `unshare` + baton-env; `None` (skipped) when PID namespaces are not available here.
fn in_namespace(args: &[&str]) -> Option<Command> {
    let mut why = String::new();
    for flags in FLAG_SETS {
        match Command::new("unshare")
            .args(flags)
            .arg("true")
            .stderr(Stdio::piped())
            .output()
        {
            Ok(o) if o.status.success() => {
                let mut cmd = Command::new("unshare");
                cmd.args(flags)
                    .arg(BIN)
                    .args(args)
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .stdin(Stdio::null());
                return Some(cmd);
            }
            Ok(o) => why = text(&o.stderr).trim().to_owned(),
            Err(_) => {
                missing("unshare", "util-linux, for PID-namespace tests");
                return None;
            }
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("unshare --pid failed under CI: {why}");
    }
    std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("skipped: unshare --pid --fork --mount-proc failed ({why})\n"),
    )
    .ok();
    None
}

/// The pid (in our namespace) of unshare's child, i.e. baton-env as the namespace's PID 1.
fn namespace_init(unshare: u32) -> Pid {
    try_namespace_init(unshare).expect("unshare has a child")
}

fn try_namespace_init(unshare: u32) -> Option<Pid> {
    let children =
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).ok()?;
    let pid: i32 = children.split_whitespace().next()?.parse().ok()?;
    Some(Pid::from_raw(pid))
}

/// Every wait in these tests is bounded: when a test has not finished within its limit,
/// the watchdog SIGKILLs the namespace's PID 1 (which takes the whole namespace down) and
/// unshare, so blocked reads and waits return and the test fails instead of hanging.
struct Watchdog {
    cancel: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
}

impl Watchdog {
    fn arm(unshare: u32, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = fired.clone();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                flag.store(true, Ordering::SeqCst);
                if let Some(init) = try_namespace_init(unshare) {
                    let _ = kill(init, Signal::SIGKILL);
                }
                let _ = kill(Pid::from_raw(unshare as i32), Signal::SIGKILL);
            }
        });
        Watchdog {
            cancel: Some(tx),
            fired,
        }
    }

    /// Stops the watchdog; panics if it had fired.
    fn disarm(mut self, what: &str) {
        self.cancel.take();
        assert!(
            !self.fired.load(Ordering::SeqCst),
            "timed out: {what} (killed by the watchdog)"
        );
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.cancel.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs `cmd` to completion within `limit`: (exit code, stderr).
fn run_bounded(mut cmd: Command, limit: Duration) -> (Option<i32>, String) {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dog = Watchdog::arm(child.id(), limit);
    let out = child.wait_with_output().unwrap();
    dog.disarm("the command did not finish");
    (out.status.code(), text(&out.stderr))
}

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn exit_code_and_signal_status_propagate() {
    let Some(cmd) = in_namespace(&["--", "sh", "-c", "[ $PPID = 1 ] || exit 99; exit 7"]) else {
        return;
    };
    let (code, stderr) = run_bounded(cmd, LIMIT);
    assert_eq!(code, Some(7), "{stderr}");
    let Some(cmd) = in_namespace(&["--", "sh", "-c", "kill -KILL $$"]) else {
        return;
    };
    assert_eq!(run_bounded(cmd, LIMIT).0, Some(128 + 9));
}

#[test]
fn orphaned_grandchildren_are_reaped() {
    // The subshell starts `sleep` and exits at once: sleep is orphaned, re-parented to
    // PID 1 (baton-env), and must vanish from /proc once it exits, not stay a zombie.
    let script = r#"
        gc=$( (sleep 0.2 >/dev/null 2>&1 & echo $!) )
        i=0
        while [ -e /proc/$gc ] && [ $i -lt 200 ]; do
          if grep -q '^State:.*Z' /proc/$gc/status 2>/dev/null && [ $i -gt 100 ]; then exit 3; fi
          sleep 0.05; i=$((i+1))
        done
        [ -e /proc/$gc ] && exit 4
        exit 0
    "#;
    let Some(cmd) = in_namespace(&["--", "sh", "-c", script]) else {
        return;
    };
    let (code, stderr) = run_bounded(cmd, LIMIT);
    assert_eq!(code, Some(0), "zombie left behind: {stderr}");
}

/// Starts `script` (which prints `ready` once its traps are set), waits for it, and
/// sends SIGTERM to baton-env from outside the namespace. Returns the exit code, the
/// script's further output, and how long baton-env took to exit after SIGTERM.
fn terminate_when_ready(extra: &[&str], script: &str) -> Option<(i32, String, Duration)> {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--", "sh", "-c", script]);
    let mut cmd = in_namespace(&args)?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dog = Watchdog::arm(child.id(), LIMIT);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(first.as_deref(), Some("ready"));
    let sent = Instant::now();
    kill(namespace_init(child.id()), Signal::SIGTERM).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    let took = sent.elapsed();
    dog.disarm("baton-env did not exit after SIGTERM");
    Some((status.code().unwrap_or(-1), rest.join("\n"), took))
}

#[test]
fn sigterm_reaches_the_child() {
    let script = r#"trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done"#;
    let Some((code, out, _)) = terminate_when_ready(&[], script) else {
        return;
    };
    assert_eq!(out, "got-term");
    assert_eq!(code, 42);
}

#[test]
fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
    let script = r#"trap '' TERM; echo ready; while :; do sleep 0.05; done"#;
    let Some((code, _, took)) = terminate_when_ready(&["--grace-period", "500ms"], script) else {
        return;
    };
    assert_eq!(code, 128 + 9);
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "SIGKILL after {took:?}, grace period 500 ms"
    );
}
