//! Bootstrap inputs from files (`--token-file`, `--role-id-file`, `--secret-id-file`),
//! `--remove-bootstrap-files` (against OpenBao), and the Vault namespace header.

use serde_json::json;

use crate::openbao::bao;
use crate::support::{baton_env, output, text};

const KV1_ONLY: &str = r#"path "kv1/*" { capabilities = ["read"] }"#;

#[tokio::test(flavor = "multi_thread")]
async fn token_file_is_read_and_removed_on_request() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "from-token-file"})))
        .await;
    let token = bao.policy_token("kv1-only", KV1_ONLY, true).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    for remove in [false, true] {
        std::fs::write(&file, format!("{token}\n")).unwrap();
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", bao.url())
            .env("BATON_TOKEN_FILE", &file)
            .env("K", "vault:kv1/app#k");
        if remove {
            cmd.arg("--remove-bootstrap-files");
        }
        cmd.args(["--", "sh", "-c", "printf '%s\\n' \"$K\"; env"]);
        let out = output(cmd).await;
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(stdout.starts_with("from-token-file\n"), "{stdout}");
        assert!(!stdout.contains(&token), "the token reached the child");
        assert!(!stdout.contains("BATON_TOKEN_FILE"));
        assert_eq!(file.exists(), !remove, "remove = {remove}");
    }
    // A given token is never revoked.
    assert!(bao.token_valid(&token).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn approle_files_are_read_removed_and_kept_from_the_child() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "from-approle-files"})))
        .await;
    bao.enable_approle().await;
    bao.write_policy("kv1-only", KV1_ONLY).await;
    let role_id = bao
        .approle_role("web", &["kv1-only"], json!({"secret_id_num_uses": 1}))
        .await;
    let secret_id = bao.secret_id("web").await;
    let dir = tempfile::tempdir().unwrap();
    let (role_file, secret_file) = (dir.path().join("role-id"), dir.path().join("secret-id"));
    std::fs::write(&role_file, &role_id).unwrap();
    std::fs::write(&secret_file, format!("{secret_id}\n")).unwrap();
    let dump = dir.path().join("env");
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("K", "vault:kv1/app#k")
        .arg("--role-id-file")
        .arg(&role_file)
        .env("BATON_SECRET_ID_FILE", &secret_file)
        .args(["--remove-bootstrap-files", "--", "sh", "-c", "env > \"$0\""])
        .arg(&dump);
    let out = output(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let env = std::fs::read_to_string(&dump).unwrap();
    assert!(env.contains("K=from-approle-files"), "{env}");
    assert!(
        !role_file.exists() && !secret_file.exists(),
        "bootstrap files removed"
    );
    for value in [role_id.as_str(), secret_id.as_str()] {
        assert!(!env.contains(value), "bootstrap material reached the child");
        assert!(
            !stderr.contains(value),
            "bootstrap material reached the logs"
        );
    }
    assert!(!env.contains("BATON_SECRET_ID_FILE"));
    // The single-use secret id was spent by this login (it came from the file).
    let (status, _) = bao
        .call_as(
            "",
            "POST",
            "auth/approle/login",
            Some(json!({"role_id": role_id, "secret_id": secret_id})),
        )
        .await;
    assert_eq!(status, 400, "the secret id was not used by baton-env");
}
