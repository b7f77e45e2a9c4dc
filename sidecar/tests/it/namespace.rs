//! The Vault namespace header on every request (the stub's request log records it; OpenBao's
//! namespaces would hide a missing header on requests that also work in the root namespace).

use std::time::Duration;

use serde_json::json;
use vault_stub::{spawn, DbRole, Policy, StubConfig, TokenSpec};

use crate::support::{baton_env, output, text};

const S: fn(u64) -> Duration = Duration::from_secs;

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
