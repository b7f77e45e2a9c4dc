//! The baton-env binary against OpenBao: the exit-code contract (denials from a real policy,
//! refused tokens and secret ids, a replayed wrap), the env file.

use serde_json::json;

use super::bao;
use crate::support::{baton_env, output, text};

const KV1_ONLY: &str = r#"path "kv1/*" { capabilities = ["read"] }"#;

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_are_a_contract() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "topsecret-kv"})))
        .await;
    let restricted = bao.policy_token("kv1-only", KV1_ONLY, true).await;
    let run =
        |token: String, var: &'static str, value: &'static str, extra: &'static [&'static str]| {
            let mut cmd = baton_env();
            cmd.env("VAULT_ADDR", bao.url())
                .env("VAULT_TOKEN", token)
                .env(var, value)
                .args(extra)
                .args(["--", "true"]);
            output(cmd)
        };
    // Missing key, missing path, denied: 1, naming the variable and the path.
    for (var, value, path) in [
        ("NO_KEY", "vault:kv1/app#absent", "kv1/app"),
        ("NO_PATH", "vault:kv1/missing#k", "kv1/missing"),
        ("DENIED", "vault:secret/data/app#k", "secret/data/app"),
    ] {
        let out = run(restricted.clone(), var, value, &[]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{var}: {stderr}");
        assert!(stderr.contains(var) && stderr.contains(path), "{stderr}");
        assert!(!stderr.contains("topsecret-kv"));
    }
    // Configurable.
    let out = run(
        restricted.clone(),
        "NO_KEY",
        "vault:kv1/app#absent",
        &["--resolve-exit-code", "42"],
    )
    .await;
    assert_eq!(out.status.code(), Some(42));
    // Malformed reference.
    let out = run(restricted.clone(), "BAD", "vault:kv1/app", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("BAD"));
    // Unknown token: refused by Vault (lookup-self and the read both 403): a login failure,
    // 77, and never "logged in".
    let out = run("hvs.unknown-token".into(), "A", "vault:kv1/app#k", &[]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("token was refused"), "{stderr}");
    assert!(!stderr.contains("logged in"), "{stderr}");
    assert!(!stderr.contains("hvs.unknown-token"));
    // No token at all (and no other login method) is bad usage: 64, before any request.
    let requests = bao.requests().len();
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("A", "vault:kv1/app#k")
        .args(["--", "true"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("VAULT_TOKEN"));
    assert_eq!(bao.requests().len(), requests);
    // Vault unreachable for longer than --max-wait: 69.
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", "http://127.0.0.1:9")
        .env("VAULT_TOKEN", "t")
        .env("A", "vault:kv1/app#k")
        .args(["--max-wait", "1s", "--", "true"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    // Bad secret id: 77.
    bao.enable_approle().await;
    let role_id = bao.approle_role("web", &["kv1-only"], json!({})).await;
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("BATON_ROLE_ID", &role_id)
        .env("BATON_SECRET_ID", "not-a-secret-id")
        .env("A", "vault:kv1/app#k")
        .args(["--", "true"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    // Replayed wrapping token: 79, reported as possible interception.
    let wrap = bao.wrapped_secret_id("web", "60s").await;
    assert!(reqwest::Client::new()
        .post(format!("{}/v1/sys/wrapping/unwrap", bao.url()))
        .header("X-Vault-Token", &wrap)
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("BATON_ROLE_ID", &role_id)
        .env("BATON_WRAPPED_SECRET_ID", &wrap)
        .env("A", "vault:kv1/app#k")
        .args(["--", "true"]);
    let out = output(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(79), "{stderr}");
    assert!(stderr.contains("SECURITY ALARM") && stderr.contains("intercepted"));
    assert!(!stderr.contains(&wrap));
    // Command not found: 127.
    let mut cmd = baton_env();
    cmd.args(["--", "/nonexistent/app"]);
    assert_eq!(output(cmd).await.status.code(), Some(127));
}

#[tokio::test(flavor = "multi_thread")]
async fn env_file_keeps_secrets_out_of_environ() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "file-secret"})))
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.env");
    let report = dir.path().join("report");
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("VAULT_TOKEN", bao.root_token())
        .env("SECRET", "vault:kv1/app#k")
        .arg("--env-file")
        .arg(&file)
        .args([
            "--",
            "sh",
            "-c",
            "{ stat -c %a \"$BATON_ENV_FILE\"; cat \"$BATON_ENV_FILE\"; echo \"env:${SECRET-unset}\"; } > \"$0\"",
        ])
        .arg(&report);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = std::fs::read_to_string(&report).unwrap();
    assert_eq!(report, "400\nSECRET='file-secret'\nenv:unset\n");
    assert!(!file.exists(), "the env file is removed on exit");
}
