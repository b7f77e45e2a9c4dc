//! Bootstrap inputs from files (`--token-file`, `--role-id-file`, `--secret-id-file`),
//! `--remove-bootstrap-files`, and the Vault namespace header.

use std::time::Duration;

use serde_json::json;
use vault_stub::{spawn, DbRole, Policy, StubConfig, TokenSpec};

use crate::support::{baton_env, output, text};

const S: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(flavor = "multi_thread")]
async fn token_file_is_read_and_removed_on_request() {
    let stub = spawn(StubConfig::default()).await.unwrap();
    stub.put_kv1("kv1/app", json!({"k": "from-token-file"}));
    let token = stub.create_token(TokenSpec::new(Policy::paths(["kv1/"]), S(600)));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    for remove in [false, true] {
        std::fs::write(&file, format!("{token}\n")).unwrap();
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", stub.url())
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
    assert!(stub.token_valid(&token));
}

#[tokio::test(flavor = "multi_thread")]
async fn approle_files_are_read_removed_and_kept_from_the_child() {
    let stub = spawn(StubConfig::default()).await.unwrap();
    stub.put_kv1("kv1/app", json!({"k": "from-approle-files"}));
    let role_id = stub.add_approle("web", 1, TokenSpec::new(Policy::paths(["kv1/"]), S(600)));
    let secret_id = stub.secret_id("web").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (role_file, secret_file) = (dir.path().join("role-id"), dir.path().join("secret-id"));
    std::fs::write(&role_file, &role_id).unwrap();
    std::fs::write(&secret_file, format!("{secret_id}\n")).unwrap();
    let dump = dir.path().join("env");
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", stub.url())
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
    assert_eq!(stub.login_tokens().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_namespace_header_is_sent_on_every_request() {
    let stub = spawn(StubConfig::default()).await.unwrap();
    stub.put_kv2("secret/app", json!({"k": "v"}));
    stub.add_db_role(
        "app",
        DbRole {
            default_ttl: S(300),
            max_ttl: S(600),
        },
    );
    let role_id = stub.add_approle("web", 0, TokenSpec::new(Policy::Root, S(600)));
    let secret_id = stub.secret_id("web").unwrap();
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", stub.url())
        .env("VAULT_NAMESPACE", "team-a/")
        .env("BATON_ROLE_ID", &role_id)
        .env("BATON_SECRET_ID", &secret_id)
        .env("K", "vault:secret/app#k")
        .env("U", "vault:database/creds/app#username")
        .args(["--", "true"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let log = stub.request_log();
    let paths: Vec<&str> = log.iter().map(|r| r.path.as_str()).collect();
    for p in [
        "auth/approle/login",
        "sys/internal/ui/mounts/secret/app",
        "secret/data/app",
        "database/creds/app",
        "auth/token/revoke-self",
    ] {
        assert!(paths.contains(&p), "{p} not requested: {paths:?}");
    }
    for r in &log {
        assert_eq!(
            r.namespace.as_deref(),
            Some("team-a/"),
            "{} {}",
            r.method,
            r.path
        );
    }
}
