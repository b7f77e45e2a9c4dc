//! Against a real Vault when VAULT_ADDR and VAULT_TOKEN are set (e.g. `vault server -dev`):
//! KV v2 detection and a read through the binary. Skipped otherwise.

use serde_json::json;

use crate::support::{baton_env, output, text};

#[tokio::test(flavor = "multi_thread")]
async fn kv2_read_through_the_binary() {
    let (Some(addr), Some(token)) = (
        std::env::var_os("VAULT_ADDR"),
        std::env::var_os("VAULT_TOKEN"),
    ) else {
        std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("skipped: VAULT_ADDR and VAULT_TOKEN not set (no real Vault)\n"),
        )
        .ok();
        return;
    };
    let (addr, token) = (
        addr.to_string_lossy().into_owned(),
        token.to_string_lossy().into_owned(),
    );
    let r = reqwest::Client::new()
        .post(format!("{addr}/v1/secret/data/baton-it"))
        .header("X-Vault-Token", &token)
        .json(&json!({"data": {"key": "real-vault-value"}}))
        .send()
        .await
        .expect("write to Vault");
    assert!(
        r.status().is_success(),
        "writing secret/data/baton-it: {}",
        r.status()
    );
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", &addr)
        .env("VAULT_TOKEN", &token)
        .env("K", "vault:secret/baton-it#key")
        .args(["--no-revoke", "--", "sh", "-c", "printf %s \"$K\""]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "real-vault-value");
}
