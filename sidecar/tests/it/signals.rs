//! baton-env as a plain parent (not PID 1): every forwarded signal reaches the child, and
//! orphans are re-parented to baton-env (child subreaper) and reaped.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::{baton_env, lines_of, wait_for, Running};

const S: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(flavor = "multi_thread")]
async fn every_forwarded_signal_reaches_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = r#"
        for sig in HUP USR1 USR2 WINCH INT; do trap "echo $sig >> \"\$LOG\"" $sig; done
        trap 'echo QUIT >> "$LOG"; exit 3' QUIT
        echo ready >> "$LOG"
        while :; do sleep 0.05; done
    "#;
    let mut cmd = baton_env();
    // SIGINT starts a graceful stop: a long grace period keeps the child alive for QUIT.
    cmd.current_dir(dir.path()).env("LOG", &log).args([
        "--grace-period",
        "60s",
        "--",
        "sh",
        "-c",
        script,
    ]);
    let run = Running::start(cmd);
    wait_for("the child's traps", S(10), || {
        (lines_of(&log) == ["ready"]).then_some(())
    })
    .await;
    let mut expected = vec!["ready".to_owned()];
    for sig in [
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGINT,
    ] {
        run.signal(sig);
        expected.push(sig.as_str().trim_start_matches("SIG").to_owned());
        wait_for(sig.as_str(), S(10), || {
            (lines_of(&log) == expected).then_some(())
        })
        .await;
    }
    run.signal(Signal::SIGQUIT);
    let (code, stderr) = run.exit(S(10)).await;
    assert_eq!(code, Some(3), "{stderr}");
    expected.push("QUIT".into());
    assert_eq!(lines_of(&log), expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_are_reparented_to_baton_env_and_reaped() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    // The subshell starts `sleep` and exits at once: sleep is orphaned. As child subreaper
    // baton-env becomes its parent, and must reap it (no zombie left).
    let script = r#"
        gc=$( (sleep 0.3 >/dev/null 2>&1 & echo $!) )
        echo "parent $(awk '/^PPid:/{print $2}' /proc/$gc/status)" >> "$LOG"
        i=0
        while [ -e /proc/$gc ] && [ $i -lt 200 ]; do
          if grep -q '^State:.*Z' /proc/$gc/status 2>/dev/null && [ $i -gt 60 ]; then
            echo zombie >> "$LOG"; exit 3
          fi
          sleep 0.05; i=$((i+1))
        done
        [ -e /proc/$gc ] && { echo still-there >> "$LOG"; exit 4; }
        echo reaped >> "$LOG"
    "#;
    let mut cmd = baton_env();
    cmd.env("LOG", &log).args(["--", "sh", "-c", script]);
    let run = Running::start(cmd);
    let pid = run.pid().as_raw();
    let (code, stderr) = run.exit(S(20)).await;
    assert_eq!(
        lines_of(&log),
        [format!("parent {pid}"), "reaped".to_owned()],
        "{stderr}"
    );
    assert_eq!(code, Some(0));
}

/// baton-env killed with SIGKILL cannot stop its child, which runs in a process group of its
/// own (a kill of baton-env's group misses it): the kernel must end it (`PR_SET_PDEATHSIG`),
/// so no app runs on unsupervised with its secrets. (Issue 12, item 14.)
#[tokio::test(flavor = "multi_thread")]
async fn the_child_dies_when_baton_env_is_killed_with_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = baton_env();
    cmd.env("LOG", &log).args([
        "--",
        "sh",
        "-c",
        r#"echo "$$ $(cut -d' ' -f5 /proc/$$/stat)" >> "$LOG"; while :; do sleep 0.05; done"#,
    ]);
    let run = Running::start(cmd);
    let line = wait_for("the child's pid", S(10), || lines_of(&log).pop()).await;
    let mut fields = line.split(' ').map(|f| f.parse::<i32>().unwrap());
    let (child, pgid) = (fields.next().unwrap(), fields.next().unwrap());
    assert_eq!(child, pgid, "the child leads a process group of its own");
    assert_ne!(pgid, run.pid().as_raw());
    let guard = ChildGuard(child);
    run.signal(Signal::SIGKILL);
    wait_for("the child to die with baton-env", S(10), || {
        (!running(child)).then_some(())
    })
    .await;
    // Gone: its pid may be someone else's from now on.
    std::mem::forget(guard);
}

/// Whether `pid` runs (exists and is not a zombie waiting to be reaped).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Kills a process left behind by a failed test.
struct ChildGuard(i32);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), Signal::SIGKILL);
    }
}
