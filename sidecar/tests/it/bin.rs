//! The baton-env binary against the Vault stub, with dynamic database credentials (OpenBao's
//! database engine needs a database): injection, exec mode, rotation, revocation on exit, and
//! leaks. Exit codes and the env file: `openbao::binary`.

use std::time::Duration;

use serde_json::json;
use vault_stub::{spawn, DbRole, Policy, StubConfig, StubHandle, TokenSpec};

use crate::support::{baton_env, output, text, wait_for, KillOnDrop};

const S: fn(u64) -> Duration = Duration::from_secs;

async fn stub() -> StubHandle {
    spawn(StubConfig::default()).await.expect("stub")
}

/// AppRole material for a role allowed `prefixes`: (role_id, secret_id).
fn approle(stub: &StubHandle, prefixes: &[&str]) -> (String, String) {
    let role_id = stub.add_approle(
        "web",
        0,
        TokenSpec::new(Policy::paths(prefixes.iter().copied()), S(600)),
    );
    let secret_id = stub.secret_id("web").unwrap();
    (role_id, secret_id)
}

#[tokio::test(flavor = "multi_thread")]
async fn supervise_injects_strips_bootstrap_and_revokes_on_exit() {
    let stub = stub().await;
    stub.add_db_role(
        "app",
        DbRole {
            default_ttl: S(300),
            max_ttl: S(600),
        },
    );
    stub.put_kv2("secret/app", json!({"key": "api-key-value"}));
    let (role_id, secret_id) = approle(&stub, &["database/creds/", "secret/data/app"]);
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("env");
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", stub.url())
        .env("BATON_ROLE_ID", &role_id)
        .env("BATON_SECRET_ID", &secret_id)
        .env("DB_PASSWORD", "vault:database/creds/app#password")
        .env("DB_USER", "vault:database/creds/app#username")
        .env("API_KEY", "vault:secret/data/app#key")
        .env("PLAIN", "kept")
        .args(["--", "sh", "-c", "env > \"$0\"; exit 3"])
        .arg(&dump);
    let out = output(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let env = std::fs::read_to_string(&dump).unwrap();
    assert!(env.contains("API_KEY=api-key-value"));
    assert!(env.contains("PLAIN=kept"));
    assert!(env.lines().any(|l| l.starts_with("DB_USER=v-token-app-")));
    for var in ["BATON_ROLE_ID", "BATON_SECRET_ID", "VAULT_TOKEN"] {
        assert!(!env.contains(var), "{var} leaked into the child");
    }
    assert!(!env.contains(&secret_id) && !env.contains(&role_id));
    // One lease; on exit the login token is revoked, and the lease with it (no per-lease
    // revoke: Baton's policies do not grant sys/leases/revoke).
    assert_eq!(stub.creds_issued(), 1);
    crate::regression::assert_all_revoked_by_token(&stub, 1);
    // Logs carry paths, never values.
    assert!(stderr.contains("database/creds/app"));
    let password = env
        .lines()
        .find_map(|l| l.strip_prefix("DB_PASSWORD="))
        .unwrap();
    for value in [password, "api-key-value", secret_id.as_str()] {
        assert!(!stderr.contains(value), "a secret value reached the logs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_mode_replaces_the_process_and_keeps_the_lease() {
    let stub = stub().await;
    stub.add_db_role(
        "app",
        DbRole {
            default_ttl: S(300),
            max_ttl: S(600),
        },
    );
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", stub.url())
        .env("VAULT_TOKEN", stub.root_token())
        .env("DB_USER", "vault:database/creds/app#username")
        .args([
            "--mode",
            "exec",
            "--",
            "sh",
            "-c",
            "echo $$; echo \"$DB_USER\"",
        ]);
    let child = tokio::task::spawn_blocking(move || {
        let c = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = c.id();
        (pid, c.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    let (pid, out) = child;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(pid.to_string().as_str()),
        "the shell must be baton-env's own process"
    );
    assert!(lines.next().unwrap().starts_with("v-token-app-"));
    // The app still uses the credentials: nothing is revoked in exec mode.
    assert!(stub.leases().iter().all(|(_, revoked)| !*revoked));
}

/// Leases of 2 s (max 3 s) cannot outlive their max TTL: the child is restarted with
/// new credentials before the old ones die, and the old lease is revoked.
#[tokio::test(flavor = "multi_thread")]
async fn rotation_restarts_the_child_with_new_credentials() {
    let stub = stub().await;
    stub.add_db_role(
        "app",
        DbRole {
            default_ttl: S(2),
            max_ttl: S(3),
        },
    );
    let (role_id, secret_id) = approle(&stub, &["database/creds/"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("starts");
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", stub.url())
        .env("BATON_ROLE_ID", role_id)
        .env("BATON_SECRET_ID", secret_id)
        .env("DB_USER", "vault:database/creds/app#username")
        .env("LOG", &log)
        .args([
            "--grace-period",
            "2s",
            "--",
            "sh",
            "-c",
            "echo \"$DB_USER\" >> \"$LOG\"; exec sleep 60",
        ]);
    let mut child = KillOnDrop(Some(
        cmd.stderr(std::process::Stdio::null()).spawn().unwrap(),
    ));
    let starts = wait_for("a second start", S(30), || {
        let s = std::fs::read_to_string(&log).ok()?;
        (s.lines().count() >= 2).then_some(s)
    })
    .await;
    let users: Vec<&str> = starts.lines().collect();
    assert_ne!(
        users[0], users[1],
        "the restarted child must get new credentials"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut child = child.take();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    assert!(stub.creds_issued() >= 2);
    // Each rotation logged in again; every generation was retired by revoking its token.
    let logins = stub.login_tokens().len();
    assert!(logins >= 2);
    crate::regression::assert_all_revoked_by_token(&stub, logins);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_carry_paths_and_timings_not_values() {
    let stub = spawn(StubConfig {
        root_token: "hvs.root-token-xyz".into(),
        ..StubConfig::default()
    })
    .await
    .unwrap();
    stub.add_db_role(
        "app",
        DbRole {
            default_ttl: S(300),
            max_ttl: S(600),
        },
    );
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", stub.url())
        .env("VAULT_TOKEN", stub.root_token())
        .env("DB_PASSWORD", "vault:database/creds/app#password")
        .args([
            "--log-format",
            "json",
            "--",
            "sh",
            "-c",
            "printf %s \"$DB_PASSWORD\"",
        ]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0));
    let password = text(&out.stdout);
    assert!(password.starts_with("pw-"));
    let stderr = text(&out.stderr);
    assert!(!stderr.contains(&password));
    assert!(!stderr.contains(stub.root_token()));
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON log line"))
        .collect();
    assert!(lines
        .iter()
        .any(|l| l["path"] == "database/creds/app" && l["took_ms"].is_u64()));
    // Lease ids are truncated in logs.
    let (lease, _) = stub.leases().pop().unwrap();
    assert!(!stderr.contains(&lease));
}
