//! Stopping tasks (issue 12, item 14): every way the dev scheduler stops a task ends the task's
//! whole process session, processes that moved to a process group of their own included (the
//! child `baton-env` starts, a program that calls `setpgid`), and a `baton-env` given a grace
//! period runs its shutdown (stops its child, revokes its token) before anything is SIGKILLed.
//!
//! - `baton dev` with its output piped into `tee`, stopped by SIGINT to its process group (what
//!   Ctrl-C does) or by SIGTERM to `baton` alone, also when started with both signals blocked
//!   (an inherited signal mask: before, baton then never saw them and ignored both);
//! - an app deleted through the API, its task `sh -c 'baton-env -- sleep ...; true'` (the shell
//!   dies on SIGTERM at once; baton-env outlives it while it revokes);
//! - the dev scheduler shut down while baton-env cannot run its shutdown (grace period 0).
//!
//! Processes are found by pid through `/proc` (their `MESOS_TASK_ID`), and waits are bounded.
//!
//! The tasks log in to OpenBao (a real Vault-API server), except in
//! `a_deleted_task_under_baton_env_revokes_its_token_and_leaves_no_process`, which stays on the
//! Vault stub: it holds baton-env's `auth/token/revoke-self` unanswered until the test has seen
//! it (`StubHandle::hold`), so that the task is proven to outlive its shell while it revokes;
//! OpenBao answers at once and cannot be made to wait.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use baton_e2e::openbao::OpenBao;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use vault_stub::{spawn, Policy, StubConfig, StubHandle, TokenSpec};

/// Generous bounds: a loaded 2-core CI machine.
const LIMIT: Duration = Duration::from_secs(90);

/// Live (not zombie) processes whose environment names one of `task_ids`, with their command.
fn processes_of(task_ids: &BTreeSet<String>) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let names_a_task = env.split(|b| *b == 0).any(|kv| {
            kv.strip_prefix(b"MESOS_TASK_ID=")
                .is_some_and(|id| task_ids.contains(&*String::from_utf8_lossy(id)))
        });
        if names_a_task && running(pid) {
            let cmd = std::fs::read(entry.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            found.push((pid, cmd));
        }
    }
    found
}

/// `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

/// The fields of `/proc/<pid>/stat` after the command name (state, ppid, pgrp, session, ...).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(") ")?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn pgid_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// Poll `f` every 50 ms until it gives `Some`; fail after [`LIMIT`] with `context()`.
async fn wait_for<T>(
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let end = Instant::now() + LIMIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGKILLs processes a failed test would leave behind.
struct Reaper(Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            if running(*pid) {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
        }
    }
}

/// A `baton dev` pipeline a failed test leaves running: SIGTERM to its group (baton stops its
/// tasks), SIGKILL after a while.
struct Pipeline(Child);

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let group = Pid::from_raw(self.0.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end && self.0.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

fn has_python3() -> bool {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is required in CI"
        );
        eprintln!("skipped: python3 is not installed");
    }
    ok
}

fn baton_env_bin() -> Option<PathBuf> {
    let found = baton_e2e::workspace_bin("baton-env");
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "baton-env must be built in CI (cargo build -p baton-sidecar)"
        );
        eprintln!("skipped: baton-env is not built (cargo build -p baton-sidecar)");
    }
    found
}

/// A task that starts a process in a process group of its own (as baton-env does with its
/// child) and waits for it: a stop that signals only the task's process group misses it.
const GROUP_ESCAPING_CMD: &str =
    "python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(1000)' & wait";

#[derive(Clone, Copy)]
enum Stop {
    /// SIGINT to the pipeline's process group: Ctrl-C in a terminal (`tee` dies too).
    InterruptGroup,
    /// SIGTERM to `baton` alone (`tee` reads on until the pipe closes).
    TerminateBaton,
}

/// `sh -c 'baton dev --repo R 2>ERR | tee LOG'` in a process group of its own, stopped by
/// `stop`: it must exit promptly, and no process of its tasks may be left. With `blocked`, the
/// pipeline starts with SIGINT and SIGTERM blocked, as a parent that blocks them (a harness, a
/// supervisor's signal thread) passes its mask on through `exec`.
async fn baton_dev_piped_stops(stop: Stop, blocked: bool) {
    if !has_python3() {
        return;
    }
    let baton = baton_e2e::devsched::baton_bin();
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(repo.join("apps")).unwrap();
    std::fs::write(repo.join("baton.yaml"), "owner: e2e\n").unwrap();
    let app = json!({"cmd": GROUP_ESCAPING_CMD, "cpus": 0.01, "mem": 16, "instances": 2});
    std::fs::write(repo.join("apps/grouped.json"), app.to_string()).unwrap();
    let log = tmp.path().join("log");
    let err = tmp.path().join("err");
    let script = format!(
        "exec 2>'{}'; '{}' dev --repo '{}' | tee '{}' >/dev/null",
        err.display(),
        baton.display(),
        repo.display(),
        log.display()
    );
    let mut command = if blocked {
        let mut c = Command::new("python3");
        c.args([
            "-c",
            "import os, signal; \
             signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}); \
             os.execvp('sh', ['sh', '-c', os.environ['PIPELINE']])",
        ])
        .env("PIPELINE", &script);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let child = command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let group = child.id() as i32;
    // Dropped in reverse: baton is stopped first, then whatever is left is killed.
    let mut reaper = Reaper(Vec::new());
    let mut pipeline = Pipeline(child);
    let context = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default()
        )
    };
    let url = wait_for(
        "baton dev to apply the repo",
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("watching")
                .then(|| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("dev scheduler: "))
                        .and_then(|l| l.split_whitespace().next())
                        .map(str::to_owned)
                })
                .flatten()
        },
        context,
    )
    .await;
    let tasks: Value = reqwest::get(format!("{url}/v2/tasks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: BTreeSet<String> = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{tasks:#}");
    // Each task: its shell, and python in a process group of its own.
    let pids = wait_for(
        "both tasks' processes, python in a group of its own",
        || {
            let procs = processes_of(&ids);
            // Killed by the test's end whatever happens.
            reaper.0.extend(procs.iter().map(|(p, _)| *p));
            let escaped = procs
                .iter()
                .filter(|(pid, cmd)| {
                    // python (under whatever path) rather than the shell that started it
                    !cmd.starts_with("/bin/sh")
                        && cmd.contains("setpgid")
                        && pgid_of(*pid) == Some(*pid)
                })
                .count();
            (procs.len() >= 4 && escaped == 2).then_some(procs)
        },
        context,
    )
    .await;
    let baton_pid = wait_for(
        "the baton process",
        || {
            std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
                let pid: i32 = e.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                (comm.trim() == "baton" && pgid_of(pid) == Some(group)).then_some(pid)
            })
        },
        context,
    )
    .await;
    reaper.0.push(baton_pid);

    let stopped_at = Instant::now();
    match stop {
        Stop::InterruptGroup => killpg(Pid::from_raw(group), Signal::SIGINT).unwrap(),
        Stop::TerminateBaton => kill(Pid::from_raw(baton_pid), Signal::SIGTERM).unwrap(),
    }
    wait_for(
        "the pipeline to exit",
        || pipeline.0.try_wait().unwrap(),
        context,
    )
    .await;
    wait_for(
        "baton to exit",
        || (!running(baton_pid)).then_some(()),
        context,
    )
    .await;
    let took = stopped_at.elapsed();
    let left: Vec<&(i32, String)> = pids.iter().filter(|(p, _)| running(*p)).collect();
    assert!(
        left.is_empty(),
        "task processes left after baton dev stopped: {left:?}\n{}",
        context()
    );
    assert_eq!(processes_of(&ids), Vec::new());
    assert!(
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .contains("shutting down"),
        "{}",
        context()
    );
    // The tasks' grace period is 3 s; anything near the bound means a hang, not a stop.
    assert!(took < LIMIT, "stopping took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_dev_piped_into_tee_stops_on_sigint_to_its_group_and_leaves_no_process() {
    baton_dev_piped_stops(Stop::InterruptGroup, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_dev_piped_into_tee_stops_on_sigterm_and_leaves_no_process() {
    baton_dev_piped_stops(Stop::TerminateBaton, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_dev_started_with_signals_blocked_still_stops_on_sigint_to_its_group() {
    baton_dev_piped_stops(Stop::InterruptGroup, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_dev_started_with_signals_blocked_still_stops_on_sigterm() {
    baton_dev_piped_stops(Stop::TerminateBaton, true).await;
}

/// A dev scheduler in process, its sandboxes in `dir`.
struct Scheduler {
    url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn scheduler(dir: &Path) -> Scheduler {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let config = baton_dev_scheduler::DevConfig {
        sandbox_dir: Some(dir.to_path_buf()),
        ..Default::default()
    };
    let s = stop.clone();
    let task = tokio::spawn(async move {
        baton_dev_scheduler::run(listener, config, s).await.unwrap();
    });
    Scheduler { url, stop, task }
}

/// The Vault `/web`'s task logs in to: the AppRole role `web` (a reusable secret id), whose
/// tokens may read `secret/web`.
enum WebVault {
    /// Only to hold a request (see the module doc).
    Stub(StubHandle),
    Bao(OpenBao),
}

impl WebVault {
    fn url(&self) -> String {
        match self {
            WebVault::Stub(s) => s.url(),
            WebVault::Bao(b) => b.url().to_owned(),
        }
    }

    /// Whether the task's baton-env has logged in (once) and read its secret.
    fn logged_in(&self) -> bool {
        match self {
            WebVault::Stub(s) => s.login_tokens().len() == 1,
            WebVault::Bao(b) => {
                let log = b.requests();
                let count = |path: &str| log.iter().filter(|(_, p)| p == path).count();
                count("auth/approle/login") == 1 && count("secret/data/web") >= 1
            }
        }
    }
}

/// The stub with the role `web`: (vault, role id, secret id).
async fn stub_vault() -> (WebVault, String, String) {
    let stub = spawn(StubConfig::default()).await.unwrap();
    stub.put_kv2("secret/web", json!({"password": "s3cr3t"}));
    let role_id = stub.add_approle(
        "web",
        0,
        TokenSpec::new(Policy::paths(["secret/"]), Duration::from_secs(600)),
    );
    let secret_id = stub.secret_id("web").unwrap();
    (WebVault::Stub(stub), role_id, secret_id)
}

/// OpenBao with the role `web`, made as an operator would: (vault, role id, secret id).
async fn bao_vault() -> (WebVault, String, String) {
    let bao = OpenBao::start().await;
    bao.enable_approle().await;
    bao.root(
        "POST",
        "secret/data/web",
        Some(json!({"data": {"password": "s3cr3t"}})),
    )
    .await;
    bao.write_policy(
        "web",
        "path \"secret/data/web\" { capabilities = [\"read\"] }\n",
    )
    .await;
    bao.root(
        "POST",
        "auth/approle/role/web",
        Some(json!({"token_policies": ["web"], "token_ttl": 600})),
    )
    .await;
    let role_id = bao.root("GET", "auth/approle/role/web/role-id", None).await;
    let secret_id = bao
        .root("POST", "auth/approle/role/web/secret-id", None)
        .await;
    let id = |v: &Value, k: &str| v["data"][k].as_str().unwrap().to_owned();
    let (role_id, secret_id) = (id(&role_id, "role_id"), id(&secret_id, "secret_id"));
    (WebVault::Bao(bao), role_id, secret_id)
}

/// Start `/web`: `sh -c 'baton-env -- sleep 1000; true'` (the shell stays, baton-env is its
/// child in the task's process group, sleep in a group of its own), logged in to `vault`.
/// Returns the task id and its processes once all three run and baton-env has logged in.
async fn start_web(
    s: &Scheduler,
    baton_env: &Path,
    vault: &WebVault,
    role_id: &str,
    secret_id: &str,
    grace_seconds: u64,
    sandboxes: &Path,
) -> (String, Vec<(i32, String)>) {
    let app = json!({
        "id": "/web",
        "cmd": format!("'{}' --grace-period 10s -- sleep 1000; true", baton_env.display()),
        "cpus": 0.01, "mem": 16, "instances": 1,
        "taskKillGracePeriodSeconds": grace_seconds,
        "env": {
            "VAULT_ADDR": vault.url(),
            "BATON_ROLE_ID": role_id,
            "BATON_SECRET_ID": secret_id,
            "DB_PASSWORD": "vault:secret/data/web#password",
            "BATON_LOG": "debug",
        },
    });
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v2/apps", s.url))
        .json(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let context = || sandbox_logs(sandboxes);
    let task_id = wait_for(
        "the task",
        || {
            std::fs::read_dir(sandboxes)
                .ok()?
                .flatten()
                .find_map(|e| e.file_name().to_str().map(str::to_owned))
        },
        context,
    )
    .await;
    let ids = BTreeSet::from([task_id.clone()]);
    let procs = wait_for(
        "sh, baton-env and sleep, baton-env logged in",
        || {
            let procs = processes_of(&ids);
            let sleep = procs
                .iter()
                .any(|(pid, cmd)| cmd.starts_with("sleep") && pgid_of(*pid) == Some(*pid));
            (procs.len() == 3 && sleep && vault.logged_in()).then_some(procs)
        },
        context,
    )
    .await;
    (task_id, procs)
}

/// The tasks' stderr files (baton-env's log), for failure messages.
fn sandbox_logs(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path().join("stderr")).unwrap_or_default();
        out.push_str(&format!("{}:\n{text}\n", e.path().display()));
    }
    out
}

/// Deleting the app stops its task: SIGTERM reaches the shell and baton-env; the shell dies at
/// once, baton-env forwards to its child (in a group of its own), then revokes its token, which
/// the stub holds until the test sees the request. Only then may the task end: the token is
/// revoked and neither baton-env nor its child is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_task_under_baton_env_revokes_its_token_and_leaves_no_process() {
    let Some(baton_env) = baton_env_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (vault, role_id, secret_id) = stub_vault().await;
    let s = scheduler(tmp.path()).await;
    let (task_id, procs) =
        start_web(&s, &baton_env, &vault, &role_id, &secret_id, 20, tmp.path()).await;
    let WebVault::Stub(stub) = &vault else {
        unreachable!("stub_vault")
    };
    let _reaper = Reaper(procs.iter().map(|(p, _)| *p).collect());
    let token = stub.login_tokens().pop().unwrap();
    assert!(stub.token_valid(&token));

    let hold = stub.hold("auth/token/revoke-self");
    let resp = reqwest::Client::new()
        .delete(format!("{}/v2/apps/web", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let context = || sandbox_logs(tmp.path());
    wait_for(
        "baton-env to revoke its token",
        || {
            stub.requests()
                .iter()
                .any(|(_, p)| p == "auth/token/revoke-self")
                .then_some(())
        },
        context,
    )
    .await;
    hold.release();
    let ids = BTreeSet::from([task_id]);
    // By pid as well: a process that is exiting may no longer show its environment.
    wait_for(
        "the task's processes to go",
        || {
            (processes_of(&ids).is_empty() && procs.iter().all(|(pid, _)| !running(*pid)))
                .then_some(())
        },
        context,
    )
    .await;
    assert!(
        !stub.token_valid(&token),
        "the token was not revoked\n{}",
        context()
    );
    s.stop.cancel();
    tokio::time::timeout(LIMIT, s.task).await.unwrap().unwrap();
}

/// With no grace period, stopping the dev scheduler SIGKILLs baton-env before it can do
/// anything: its child, in a process group of its own, must go all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_baton_env_is_killed_at_shutdown_leaves_no_process() {
    let Some(baton_env) = baton_env_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (vault, role_id, secret_id) = bao_vault().await;
    let s = scheduler(tmp.path()).await;
    let (task_id, procs) =
        start_web(&s, &baton_env, &vault, &role_id, &secret_id, 0, tmp.path()).await;
    let _reaper = Reaper(procs.iter().map(|(p, _)| *p).collect());
    s.stop.cancel();
    tokio::time::timeout(LIMIT, s.task)
        .await
        .expect("the dev scheduler stops")
        .unwrap();
    // `run` has returned: every process of the task's session is gone already.
    for (pid, cmd) in &procs {
        assert!(
            !running(*pid),
            "{cmd} ({pid}) outlived the dev scheduler\n{}",
            sandbox_logs(tmp.path())
        );
    }
    assert_eq!(processes_of(&BTreeSet::from([task_id])), Vec::new());
}
