//! Regression tests, each named for the defect it guards against (audit of the supervisor:
//! shutdown race, early returns that skipped cleanup, per-call --max-wait). On OpenBao's
//! database engine over a throwaway PostgreSQL ([`Db`]), except `max_wait_bounds_the_whole_start`
//! (on the stub: it counts requests a sealed server answers, which OpenBao's audit log does
//! not record).

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use vault_stub::{spawn, StubConfig};

use crate::openbao::database::{Db, CREDS};
use crate::support::{alive, baton_env, lines_of, wait_for, Running};

const S: fn(u64) -> Duration = Duration::from_secs;

/// Audit 1: a rotation fetch that completes after SIGTERM overwrote the shutdown with a
/// restart. Now the terminating app is not restarted, baton-env exits with its code, and
/// the credentials fetched too late are revoked. The fetch is held in flight by the database:
/// the new user's creation waits for an advisory lock the test holds.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_fetched_after_sigterm_does_not_restart_the_child() {
    const LOCK: u32 = 4242;
    // Leases of 4 s (max 5 s): the rotation's read comes about 4 s after the start, ample
    // time to take the lock first.
    let db = Db::start(S(4), S(5)).await;
    db.creation_waits_for(LOCK).await;
    let (role_id, secret_id) = db.approle("").await;
    let dir = tempfile::tempdir().unwrap();
    let (log, go) = (dir.path().join("log"), dir.path().join("go"));
    let mut cmd = db.approle_cmd(&role_id, &secret_id);
    cmd.env("LOG", &log).env("GO", &go).args([
        "--grace-period",
        "60s",
        "--",
        "sh",
        "-c",
        r#"trap 'echo term >> "$LOG"; while [ ! -e "$GO" ]; do sleep 0.02; done; exit 42' TERM
           echo "start $DB_USER" >> "$LOG"; while :; do sleep 0.05; done"#,
    ]);
    let run = Running::start(cmd);
    wait_for("the child's start", S(30), || {
        (!lines_of(&log).is_empty()).then_some(())
    })
    .await;
    // Hold the rotation's read: the fetch is in flight when SIGTERM arrives.
    let hold = tokio::task::block_in_place(|| db.pg.hold_advisory_lock(LOCK));
    wait_for("the rotation's read", S(30), || {
        (db.bao.reads_of(CREDS) >= 2).then_some(())
    })
    .await;
    run.signal(Signal::SIGTERM);
    wait_for("the child to get SIGTERM", S(10), || {
        lines_of(&log).contains(&"term".to_owned()).then_some(())
    })
    .await;
    assert_eq!(db.creds_issued(), 1, "the rotation's read was not held");
    hold.release();
    run.wait_log("rotation fetch finished", S(30)).await;
    std::fs::write(&go, "").unwrap();
    let (code, stderr) = run.exit(S(30)).await;
    assert_eq!(code, Some(42), "{stderr}");
    let starts = lines_of(&log)
        .iter()
        .filter(|l| l.starts_with("start"))
        .count();
    assert_eq!(starts, 1, "a terminating app must not be restarted");
    assert!(
        stderr.contains("credentials fetched while stopping"),
        "{stderr}"
    );
    assert_eq!(db.creds_issued(), 2);
    db.assert_all_revoked_by_token(2).await;
}

/// Audit 2: an initial spawn failure (127) returned before revoking.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_start_leaves_no_credentials_behind() {
    let db = Db::rotating().await;
    let (role_id, secret_id) = db.approle("").await;
    let mut cmd = db.approle_cmd(&role_id, &secret_id);
    cmd.args(["--", "/nonexistent/app"]);
    let (code, stderr) = Running::start(cmd).exit(S(20)).await;
    assert_eq!(code, Some(127), "{stderr}");
    assert_eq!(db.creds_issued(), 1);
    db.assert_all_revoked_by_token(1).await;
}

/// Audit 2: a restart whose spawn failed returned before revoking either generation.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_restart_revokes_every_generation() {
    let db = Db::rotating().await;
    let (role_id, secret_id) = db.approle("").await;
    let dir = tempfile::tempdir().unwrap();
    let (log, app) = (dir.path().join("log"), dir.path().join("app.sh"));
    std::fs::write(
        &app,
        "#!/bin/sh\necho \"start $DB_USER\" >> \"$LOG\"\nexec sleep 60\n",
    )
    .unwrap();
    std::fs::set_permissions(&app, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut cmd = db.approle_cmd(&role_id, &secret_id);
    cmd.env("LOG", &log)
        .args(["--grace-period", "2s", "--"])
        .arg(&app);
    let run = Running::start(cmd);
    wait_for("the child's start", S(30), || {
        (!lines_of(&log).is_empty()).then_some(())
    })
    .await;
    std::fs::remove_file(&app).unwrap();
    let (code, stderr) = run.exit(S(30)).await;
    assert_eq!(code, Some(127), "{stderr}");
    assert_eq!(lines_of(&log).len(), 1);
    db.assert_all_revoked_by_token(2).await;
}

/// Audit 2: with `--on-rotate signal:HUP`, an env file that could not be rewritten made
/// baton-env exit 71 while the child kept running. Now the child is stopped first.
#[tokio::test(flavor = "multi_thread")]
async fn an_env_file_that_cannot_be_rewritten_stops_the_child_first() {
    let db = Db::rotating().await;
    let (role_id, secret_id) = db.approle("").await;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    let pid_file = dir.path().join("pid");
    let mut cmd = db.approle_cmd(&role_id, &secret_id);
    cmd.env("PID_FILE", &pid_file)
        .args([
            "--on-rotate",
            "signal:HUP",
            "--grace-period",
            "2s",
            "--env-file",
        ])
        .arg(sub.join("secrets.env"))
        .args(["--", "sh", "-c", r#"echo $$ > "$PID_FILE"; exec sleep 60"#]);
    let run = Running::start(cmd);
    let pid: i32 = wait_for("the child's pid", S(30), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    // The env file's directory vanishes: the rotation cannot write the new file.
    std::fs::remove_dir_all(&sub).unwrap();
    let (code, stderr) = run.exit(S(30)).await;
    assert_eq!(code, Some(71), "{stderr}");
    assert!(stderr.contains("cannot rewrite the env file"), "{stderr}");
    assert!(!alive(pid), "the child must not outlive baton-env");
    db.assert_all_revoked_by_token(2).await;
}

/// Audit 3: --max-wait applied to each call, so a start could wait several times over.
/// Token lookup and mount lookup both retry while Vault is sealed: with the old per-call
/// budget of 5 s each they took at least 6.3 s together (the jitter's lower bound); now
/// the whole start ends at 5 s plus one request.
#[tokio::test(flavor = "multi_thread")]
async fn max_wait_bounds_the_whole_start() {
    let stub = spawn(StubConfig::default()).await.expect("stub");
    stub.put_kv1("kv1/app", serde_json::json!({"k": "v"}));
    stub.fail_next(100_000, vault_stub::Fault::Sealed);
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", stub.url())
        .env("VAULT_TOKEN", stub.root_token())
        .env("A", "vault:kv1/app#k")
        .args(["--max-wait", "5s", "--", "true"]);
    let run = Running::start(cmd);
    // Timed from the first Vault request, so a slow process start on a loaded machine does not
    // count (the old per-call budgets took at least 6.3 s from there).
    wait_for("the first Vault request", S(30), || {
        (!stub.requests().is_empty()).then_some(())
    })
    .await;
    let started = Instant::now();
    let (code, stderr) = run.exit(S(30)).await;
    let took = started.elapsed();
    assert_eq!(code, Some(69), "{stderr}");
    assert!(took < S(6), "start took {took:?}, --max-wait was 5 s");
    for kind in ["auth/token/lookup-self", "sys/internal/ui/mounts/kv1/app"] {
        assert!(
            stub.requests().iter().any(|(_, p)| p == kind),
            "{kind} never tried"
        );
    }
}

/// Issue 16: with JSON logs every line baton-env writes to stderr is JSON, errors included:
/// clap's usage errors (plain text before, although `--log-format json` or
/// `BATON_LOG_FORMAT=json` asked for JSON) and a start that fails.
#[test]
fn json_logs_cover_usage_errors_and_failed_starts() {
    /// What, flags, extra env, exit code (0: any failure), what the error names.
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        &'a [(&'a str, &'a str)],
        i32,
        &'a str,
    );
    let cases: &[Case] = &[
        (
            "an unknown flag",
            &["--log-format", "json", "--bogus", "--", "true"],
            &[],
            64,
            "--bogus",
        ),
        (
            "an unknown flag, JSON from the environment",
            &["--bogus", "--", "true"],
            &[("BATON_LOG_FORMAT", "json")],
            64,
            "--bogus",
        ),
        (
            "a bad value",
            &["--log-format=json", "--max-wait", "soon", "--", "true"],
            &[],
            64,
            "soon",
        ),
        (
            "an unreachable Vault",
            &["--log-format", "json", "--max-wait", "1s", "--", "true"],
            &[
                ("VAULT_ADDR", "http://127.0.0.1:9"),
                ("BATON_TOKEN", "not-a-real-token"),
                ("K", "vault:secret/data/app#k"),
            ],
            0,
            "",
        ),
    ];
    for (what, args, env, code, names) in cases {
        let mut cmd = baton_env();
        cmd.args(*args).envs(env.iter().copied());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.trim().is_empty(), "{what}: nothing on stderr");
        let lines: Vec<serde_json::Value> = stderr
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{what}: a stderr line is not JSON ({e}): {l}"))
            })
            .collect();
        let error = lines
            .iter()
            .find(|l| l["level"] == "ERROR")
            .unwrap_or_else(|| panic!("{what}: no ERROR line: {stderr}"));
        assert!(
            error["message"].as_str().is_some_and(|m| m.contains(names)),
            "{what}: {error}"
        );
        assert_ne!(out.status.code(), Some(0), "{what}");
        if *code == 64 {
            assert_eq!(out.status.code(), Some(64), "{what}: {stderr}");
        }
    }
}
