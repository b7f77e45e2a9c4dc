//! Against a real Vault-API server: KV v2 detection and a read through the binary. By default
//! OpenBao (`bao server -dev`, started by the shared harness, so this runs in CI); against
//! another Vault when `VAULT_ADDR` and `VAULT_TOKEN` are set (e.g. a HashiCorp `vault server
//! -dev`), with KV v2 at `secret/`.

use openbao_harness::OpenBao;
use serde_json::json;

use crate::support::{baton_env, output, text};

/// The server: `VAULT_ADDR`/`VAULT_TOKEN` when both are set, else a fresh OpenBao (kept alive
/// by the returned handle).
async fn server() -> (String, String, Option<OpenBao>) {
    if let (Some(addr), Some(token)) = (
        std::env::var_os("VAULT_ADDR"),
        std::env::var_os("VAULT_TOKEN"),
    ) {
        eprintln!("against the Vault at VAULT_ADDR");
        return (
            addr.to_string_lossy().into_owned(),
            token.to_string_lossy().into_owned(),
            None,
        );
    }
    let bao = OpenBao::start().await;
    (bao.url().to_owned(), bao.root_token().to_owned(), Some(bao))
}

#[tokio::test(flavor = "multi_thread")]
async fn kv2_read_through_the_binary() {
    let (addr, token, _bao) = server().await;
    let http = reqwest::Client::new();
    for value in ["real-vault-value-1", "real-vault-value-2"] {
        let r = http
            .post(format!("{addr}/v1/secret/data/baton-it"))
            .header("X-Vault-Token", &token)
            .json(&json!({"data": {"key": value}}))
            .send()
            .await
            .expect("write to Vault");
        assert!(
            r.status().is_success(),
            "writing secret/data/baton-it: {}",
            r.status()
        );
    }
    // Latest (the `data/` path detected from the mount), and a given version.
    for (reference, expected) in [
        ("vault:secret/baton-it#key", "real-vault-value-2"),
        ("vault:secret/baton-it#key?version=1", "real-vault-value-1"),
    ] {
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", &addr)
            .env("VAULT_TOKEN", &token)
            .env("K", reference)
            .args(["--no-revoke", "--", "sh", "-c", "printf %s \"$K\""]);
        let out = output(cmd).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected);
    }
}
