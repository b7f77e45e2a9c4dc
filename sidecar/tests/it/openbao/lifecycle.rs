//! Token lifecycle against OpenBao: a token that reaches its max TTL means a new login, and
//! every token baton-env logged in with is revoked (matched in the audit log by the HMAC of
//! the token, which the log records instead of the token).

use std::time::Duration;

use nix::sys::signal::Signal;
use openbao_harness::{Audited, OpenBao};
use serde_json::json;

use super::bao;
use crate::support::{baton_env, lines_of, wait_for, Running};

const S: fn(u64) -> Duration = Duration::from_secs;

/// The tokens (HMACs) that read `path` (the seeding write is root's), in order of first use.
fn readers(log: &[Audited], path: &str) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    for r in log
        .iter()
        .filter(|r| r.operation == "read" && r.path == path)
    {
        if let Some(t) = &r.token {
            if !tokens.contains(t) {
                tokens.push(t.clone());
            }
        }
    }
    tokens
}

fn revokes_by(log: &[Audited], token: &str) -> usize {
    log.iter()
        .filter(|r| r.path == "auth/token/revoke-self" && r.token.as_deref() == Some(token))
        .count()
}

/// A token that reaches its max TTL cannot be renewed: baton-env logs in again and restarts
/// the app with credentials read under the new token, then revokes the old one; on exit every
/// token is revoked exactly once, by `revoke-self`, never lease by lease.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_at_its_end_means_a_new_login() {
    let bao: OpenBao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "kv-value"})))
        .await;
    bao.enable_approle().await;
    bao.write_policy("kv1-only", r#"path "kv1/*" { capabilities = ["read"] }"#)
        .await;
    let role_id = bao
        .approle_role(
            "web",
            &["kv1-only"],
            json!({"token_ttl": "2s", "token_max_ttl": "3s"}),
        )
        .await;
    let secret_id = bao.secret_id("web").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("BATON_ROLE_ID", &role_id)
        .env("BATON_SECRET_ID", &secret_id)
        .env("K", "vault:kv1/app#k")
        .env("LOG", &log)
        .args([
            "--grace-period",
            "2s",
            "--",
            "sh",
            "-c",
            r#"echo "start $K" >> "$LOG"; exec sleep 60"#,
        ]);
    let run = Running::start(cmd);
    wait_for("a restart", S(30), || {
        (lines_of(&log).len() >= 2).then_some(())
    })
    .await;
    let audit = bao.audit();
    let logins = audit
        .iter()
        .filter(|r| r.path == "auth/approle/login")
        .count();
    assert!(logins >= 2, "{audit:?}");
    assert!(
        audit.iter().any(|r| r.path == "auth/token/renew-self"),
        "the token was renewed first"
    );
    // The first token is revoked at the restart (just after the new child starts), before we
    // stop anything.
    let first = readers(&audit, "kv1/app")[0].clone();
    wait_for("the first token's revocation", S(20), || {
        (revokes_by(&bao.audit(), &first) == 1).then_some(())
    })
    .await;
    assert_eq!(lines_of(&log)[..2], ["start kv-value", "start kv-value"]);
    run.signal(Signal::SIGTERM);
    let (code, stderr) = run.exit(S(20)).await;
    assert_eq!(code, Some(128 + 15), "{stderr}");
    let audit = bao.audit();
    let tokens = readers(&audit, "kv1/app");
    assert!(tokens.len() >= 2, "{audit:?}");
    for t in &tokens {
        assert_eq!(
            revokes_by(&audit, t),
            1,
            "each token is revoked exactly once"
        );
    }
    assert!(
        !audit.iter().any(|r| r.path == "sys/leases/revoke"),
        "no per-lease revoke under an owned token"
    );
}

/// Vault restarted mid-run (a persistent server: file storage, so the token survives, and an
/// unseal after the restart, as in production): the renewal that falls into the outage fails
/// and is retried; once Vault is back the same token is renewed, the child is neither stopped
/// nor restarted and no new login is made; on exit the token is revoked.
#[tokio::test(flavor = "multi_thread")]
async fn a_vault_restarted_mid_run_keeps_the_token_and_the_child() {
    let mut bao = OpenBao::start_persistent().await;
    bao.enable_kv1("kv1").await;
    bao.root("POST", "kv1/app", Some(json!({"k": "kv-value"})))
        .await;
    bao.enable_approle().await;
    bao.write_policy("kv1-only", r#"path "kv1/*" { capabilities = ["read"] }"#)
        .await;
    // Renewed at two thirds of 45 s (30 s), retried every 7.5 s until it expires at 45 s: a
    // restart has 15 s, ample even on a loaded machine.
    let role_id = bao
        .approle_role(
            "web",
            &["kv1-only"],
            json!({"token_ttl": "45s", "token_max_ttl": "10m"}),
        )
        .await;
    let secret_id = bao.secret_id("web").await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("BATON_ROLE_ID", &role_id)
        .env("BATON_SECRET_ID", &secret_id)
        .env("K", "vault:kv1/app#k")
        .env("LOG", &log)
        .args([
            "--grace-period",
            "2s",
            "--",
            "sh",
            "-c",
            r#"echo "start $K" >> "$LOG"; exec sleep 300"#,
        ]);
    let run = Running::start(cmd);
    wait_for("the child", S(30), || {
        (!lines_of(&log).is_empty()).then_some(())
    })
    .await;
    bao.stop();
    run.wait_log("renewal failed", S(90)).await;
    bao.resume().await;
    wait_for("a renewal after the restart", S(60), || {
        bao.audit()
            .iter()
            .any(|r| r.path == "auth/token/renew-self")
            .then_some(())
    })
    .await;
    let audit = bao.audit();
    let tokens = readers(&audit, "kv1/app");
    assert_eq!(tokens.len(), 1, "{audit:?}");
    let renewed_by: Vec<_> = audit
        .iter()
        .filter(|r| r.path == "auth/token/renew-self")
        .map(|r| r.token.clone())
        .collect();
    assert_eq!(
        renewed_by,
        [Some(tokens[0].clone())],
        "the same token is renewed"
    );
    assert_eq!(
        audit
            .iter()
            .filter(|r| r.path == "auth/approle/login")
            .count(),
        1,
        "no new login"
    );
    assert_eq!(
        lines_of(&log),
        ["start kv-value"],
        "the child was restarted"
    );
    run.signal(Signal::SIGTERM);
    let (code, stderr) = run.exit(S(30)).await;
    assert_eq!(code, Some(128 + 15), "{stderr}");
    assert_eq!(revokes_by(&bao.audit(), &tokens[0]), 1, "{stderr}");
    assert_eq!(lines_of(&log), ["start kv-value"]);
}
