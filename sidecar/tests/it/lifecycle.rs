//! Rotation policies (`--on-rotate signal:HUP`, `exit`) of dynamic credentials, and which
//! revocations are made (by token, or lease by lease under a given token), against the stub's
//! short database leases. Re-login when the token ends: `openbao::lifecycle`.

use std::time::Duration;

use nix::sys::signal::Signal;
use vault_stub::{spawn, DbRole, Policy, StubConfig, StubHandle, TokenSpec};

use crate::regression::{approle_cmd, assert_all_revoked_by_token, rotating_stub};
use crate::support::{baton_env, lines_of, wait_for, Running};

const S: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(flavor = "multi_thread")]
async fn on_rotate_signal_rewrites_the_env_file_and_signals_the_running_child() {
    let (stub, role_id, secret_id) = rotating_stub().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = approle_cmd(&stub, &role_id, &secret_id);
    cmd.env("LOG", &log)
        .args([
            "--on-rotate",
            "signal:HUP",
            "--grace-period",
            "1s",
            "--env-file",
        ])
        .arg(dir.path().join("secrets.env"))
        .args([
            "--",
            "sh",
            "-c",
            r#"trap 'echo "hup $(cat "$BATON_ENV_FILE")" >> "$LOG"' HUP
               echo "start $(cat "$BATON_ENV_FILE")" >> "$LOG"; while :; do sleep 0.05; done"#,
        ]);
    let run = Running::start(cmd);
    let lines = wait_for("a HUP", S(15), || {
        let l = lines_of(&log);
        l.iter().any(|l| l.starts_with("hup")).then_some(l)
    })
    .await;
    assert!(
        lines[0].starts_with("start DB_USER='v-token-app-"),
        "{lines:?}"
    );
    let hup = lines.iter().find(|l| l.starts_with("hup")).unwrap();
    assert_ne!(
        lines[0].strip_prefix("start"),
        hup.strip_prefix("hup"),
        "the env file must hold the rotated credentials"
    );
    // The first generation's token (and with it its lease) is revoked once the app had
    // the grace period to switch over, while the app keeps running.
    let first_token = stub
        .request_log()
        .into_iter()
        .find(|r| r.path == "database/creds/app")
        .and_then(|r| r.token)
        .unwrap();
    revoked(&stub, &first_token).await;
    assert!(
        nix::sys::signal::kill(run.pid(), None).is_ok(),
        "still supervising"
    );
    run.signal(Signal::SIGTERM);
    let (code, stderr) = run.exit(S(20)).await;
    assert_eq!(code, Some(128 + 15), "{stderr}");
    let starts = lines_of(&log)
        .iter()
        .filter(|l| l.starts_with("start"))
        .count();
    assert_eq!(starts, 1, "signal mode never restarts the child");
    let logins = stub.login_tokens().len();
    assert!(logins >= 2);
    assert_all_revoked_by_token(&stub, logins);
}

#[tokio::test(flavor = "multi_thread")]
async fn on_rotate_exit_stops_the_child_and_exits_75() {
    let (stub, role_id, secret_id) = rotating_stub().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = approle_cmd(&stub, &role_id, &secret_id);
    cmd.env("LOG", &log).args([
        "--on-rotate",
        "exit",
        "--grace-period",
        "5s",
        "--",
        "sh",
        "-c",
        r#"trap 'echo term >> "$LOG"; exit 0' TERM; echo start >> "$LOG"; while :; do sleep 0.05; done"#,
    ]);
    let (code, stderr) = Running::start(cmd).exit(S(20)).await;
    assert_eq!(code, Some(75), "{stderr}");
    assert_eq!(lines_of(&log), ["start", "term"]);
    // The credentials fetched for the rotation were never used: revoked with the rest.
    assert_all_revoked_by_token(&stub, 2);
}

/// A given token is not ours to revoke: its leases are revoked one by one instead.
#[tokio::test(flavor = "multi_thread")]
async fn a_given_token_is_kept_and_its_leases_revoked_one_by_one() {
    let stub = spawn(StubConfig::default()).await.unwrap();
    stub.add_db_role(
        "app",
        DbRole {
            default_ttl: S(300),
            max_ttl: S(600),
        },
    );
    let token = stub.create_token(TokenSpec::new(Policy::Root, S(600)));
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", stub.url())
        .env("VAULT_TOKEN", &token)
        .env("DB_USER", "vault:database/creds/app#username")
        .args(["--", "true"]);
    let (code, stderr) = Running::start(cmd).exit(S(20)).await;
    assert_eq!(code, Some(0), "{stderr}");
    let (lease, _) = stub.leases().pop().unwrap();
    let log = stub.request_log();
    let revokes: Vec<_> = log
        .iter()
        .filter(|r| r.path == "sys/leases/revoke")
        .map(|r| r.lease_id.clone())
        .collect();
    assert_eq!(revokes, [Some(lease.clone())]);
    assert!(!log.iter().any(|r| r.path == "auth/token/revoke-self"));
    assert!(stub.token_valid(&token));
    assert_eq!(stub.revoked_leases(), [lease]);
}

/// Wait until `token` revoked itself (`auth/token/revoke-self` with it) at the stub.
async fn revoked(stub: &StubHandle, token: &str) {
    wait_for("the token's revocation", S(10), || {
        stub.request_log()
            .iter()
            .any(|r| r.path == "auth/token/revoke-self" && r.token.as_deref() == Some(token))
            .then_some(())
    })
    .await;
}
