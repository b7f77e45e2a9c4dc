//! Against OpenBao (a real Vault-API server, `bao server -dev`, started by the shared harness
//! `openbao-harness`): what a token Vault refuses does, and how failing references are reported.

mod binary;
pub mod database;
mod gatekeeper;
mod library;
mod lifecycle;

use openbao_harness::OpenBao;
use serde_json::json;

use crate::support::{baton_env, output, text};

/// A dev server (KV v2 at `secret/`) with KV v1 at `kv1/`.
pub async fn bao() -> OpenBao {
    let bao = OpenBao::start().await;
    bao.enable_kv1("kv1").await;
    bao
}

/// `baton-env -- sh -c 'printf %s "$A"'` with `token` and `vars`.
pub async fn run(bao: &OpenBao, token: &str, vars: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url()).env("VAULT_TOKEN", token);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.args(["--", "sh", "-c", "printf %s \"$A\""]);
    output(cmd).await
}

/// A token Vault does not accept (made up, or revoked) is a refused login: exit 77 (as
/// `docs/sidecar.md` says), and "logged in" is never claimed. It used to log "logged in" and
/// exit 1, as if the reference were at fault.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_vault_refuses_exits_77_without_claiming_a_login() {
    let bao = bao().await;
    bao.kv2_put("app", json!({"user": "svc-user-value"})).await;
    let revoked = bao
        .policy_token(
            "reader",
            "path \"secret/*\" { capabilities = [\"read\"] }",
            true,
        )
        .await;
    let (status, _) = bao
        .call_as(&revoked, "POST", "auth/token/revoke-self", None)
        .await;
    assert_eq!(status, 204, "revoke-self");
    for token in ["hvs.made-up-token", revoked.as_str()] {
        let out = run(&bao, token, &[("A", "vault:secret/app#user")]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(77), "{stderr}");
        assert!(stderr.contains("the Vault token was refused"), "{stderr}");
        assert!(!stderr.contains("logged in"), "{stderr}");
        assert!(!stderr.contains(token), "the token leaked: {stderr}");
        assert!(out.stdout.is_empty(), "the command must not run");
    }
    // The root token, for contrast: logged in, read, ran.
    let out = run(&bao, bao.root_token(), &[("A", "vault:secret/app#user")]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("logged in"), "{stderr}");
    assert_eq!(text(&out.stdout), "svc-user-value");
}

/// A valid token that may not look itself up (no `default` policy) is not mistaken for a bad
/// one: its reads succeed, so it runs the command; and when one of its reads is refused, that
/// is the reference's failure (1), not a login failure.
#[tokio::test(flavor = "multi_thread")]
async fn a_valid_token_without_the_default_policy_still_runs() {
    let bao = bao().await;
    bao.kv2_put("app", json!({"user": "svc-user-value"})).await;
    let token = bao
        .policy_token(
            "app-only",
            "path \"secret/data/app\" { capabilities = [\"read\"] }",
            false,
        )
        .await;
    let out = run(&bao, &token, &[("A", "vault:secret/data/app#user")]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "svc-user-value");
    assert!(stderr.contains("logged in"), "{stderr}");

    let out = run(
        &bao,
        &token,
        &[
            ("A", "vault:secret/data/app#user"),
            ("B", "vault:secret/data/other#x"),
        ],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("environment variable B: cannot read secret/data/other: permission denied"),
        "{stderr}"
    );
}

/// Every failing reference in one run, against a real server: paths missing on KV v1 and
/// v2, a path the token may not read, and a key missing from a path that was read (which
/// used to show only once the paths were fixed); each line says its path once.
#[tokio::test(flavor = "multi_thread")]
async fn every_failing_reference_is_reported_in_one_run() {
    let bao = bao().await;
    bao.kv2_put("app", json!({"user": "svc-user-value"})).await;
    bao.root("POST", "kv1/app", Some(json!({"user": "svc1-user-value"})))
        .await;
    let token = bao
        .policy_token(
            "team",
            "path \"secret/*\" { capabilities = [\"read\"] }\npath \"kv1/*\" { capabilities = [\"read\"] }",
            true,
        )
        .await;
    let out = run(
        &bao,
        &token,
        &[
            ("A", "vault:secret/app#user"),
            ("NO_KEY", "vault:secret/app#password"),
            ("NO_KEY_V1", "vault:kv1/app#password"),
            ("NO_PATH", "vault:secret/nope#k"),
            ("NO_PATH_V1", "vault:kv1/nope#k"),
            ("DENIED", "vault:sys/policies/acl/team#policy"),
        ],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("5 secret reference(s)"), "{stderr}");
    let expected = [
        (
            "NO_PATH",
            "environment variable NO_PATH: cannot read secret/nope (at secret/data/nope): not found",
        ),
        (
            "NO_PATH_V1",
            "environment variable NO_PATH_V1: cannot read kv1/nope: not found",
        ),
        (
            "DENIED",
            "environment variable DENIED: cannot read sys/policies/acl/team: permission denied",
        ),
        (
            "NO_KEY",
            "environment variable NO_KEY: key `password` not found at secret/app",
        ),
        (
            "NO_KEY_V1",
            "environment variable NO_KEY_V1: key `password` not found at kv1/app",
        ),
    ];
    for (var, line) in expected {
        assert!(
            stderr.lines().any(|l| l.trim_start_matches("  - ") == line),
            "{var}: no line `{line}` in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("user-value"), "a value leaked: {stderr}");
}
