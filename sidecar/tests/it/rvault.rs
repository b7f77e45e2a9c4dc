//! Against RustyVault 0.2.1 (`rvault`): token and AppRole login (secret_id_num_uses),
//! KV v1 reads, missing paths and keys. An optional compatibility test: OpenBao covers the
//! behaviour; what this adds is RustyVault's lean bodies (no `request_id`, no auth `accessor`,
//! errors as `{"error": "..."}`, a 404 for `sys/internal/ui/mounts`), which the lenient client
//! is meant to accept. Skipped with a printed reason when `rvault` is not installed (also
//! under CI: it is no longer part of the required install).

use serde_json::json;

use crate::support::{baton_env, output, rvault_bin, text, Rvault};

async fn server() -> Option<Rvault> {
    match rvault_bin() {
        Some(bin) => Some(Rvault::start(&bin).await),
        None => {
            std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!(
                    "skipped: rvault not installed (optional compatibility test; `cargo install \
                     rusty_vault --version 0.2.1 --locked` to run it)\n"
                ),
            )
            .ok();
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_login_kv1_reads_and_missing_paths_and_keys() {
    let Some(rv) = server().await else { return };
    rv.post(
        "secret/app",
        json!({"user": "svc", "pass": "rv-secret-pass"}),
    )
    .await;
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", &rv.addr)
            .env("VAULT_TOKEN", &rv.root_token);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args(["--", "sh", "-c", "printf '%s:%s' \"$U\" \"$P\""]);
        output(cmd)
    };
    let out = run(&[
        ("U", "vault:secret/app#user"),
        ("P", "vault:secret/app#pass"),
    ])
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "svc:rv-secret-pass");
    assert!(!stderr.contains("rv-secret-pass"));

    let out = run(&[("U", "vault:secret/nope#user")]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("U") && stderr.contains("secret/nope") && stderr.contains("not found"),
        "{stderr}"
    );

    let out = run(&[("P", "vault:secret/app#nokey")]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("nokey"));
    assert!(!text(&out.stderr).contains("rv-secret-pass"));
}

#[tokio::test(flavor = "multi_thread")]
async fn approle_login_honours_secret_id_num_uses() {
    let Some(rv) = server().await else { return };
    rv.post("secret/app", json!({"k": "approle-secret"})).await;
    rv.post(
        "auth/approle/role/web",
        json!({"secret_id_num_uses": 1, "token_ttl": 600, "token_policies": "default"}),
    )
    .await;
    let role_id = rv.get("auth/approle/role/web/role-id").await["data"]["role_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sid = rv
        .post("auth/approle/role/web/secret-id", json!({}))
        .await
        .unwrap();
    let secret_id = sid["data"]["secret_id"].as_str().unwrap().to_owned();
    let run = || {
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", &rv.addr)
            .env("BATON_ROLE_ID", &role_id)
            .env("BATON_SECRET_ID", &secret_id)
            .env("K", "vault:secret/app#k")
            // RustyVault cannot revoke-self (500): do not let that slow the exit.
            .args([
                "--no-revoke",
                "--",
                "sh",
                "-c",
                "printf %s \"$K\"; env | grep -c -e BATON_ROLE_ID -e BATON_SECRET_ID || true",
            ]);
        output(cmd)
    };
    let out = run().await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "approle-secret0\n");
    assert!(!stderr.contains(&secret_id));
    // Single-use secret id: the second start is refused (77), naming the reason.
    let out = run().await;
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("invalid secret id"));
}
