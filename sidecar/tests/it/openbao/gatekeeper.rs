//! `--auth gatekeeper` (secret zero) against OpenBao and fake gatekeepers: the happy path,
//! forged wraps (a wrap of something else, another role's secret id), pinned role and role id,
//! an already unwrapped wrap, and retries within --max-wait. The wraps are real: OpenBao's
//! response wrapping of AppRole secret ids; request sequences come from its audit log.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use baton_env::auth::{login, AuthError, AuthMethod, GatekeeperApi, GatekeeperGrant};
use baton_env::retry::RetryPolicy;
use baton_env::secret::Secret;
use baton_env::vault::{HttpVault, VaultConfig};
use openbao_harness::OpenBao;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{baton_env, output, text};

const S: fn(u64) -> Duration = Duration::from_secs;
const ROLE: &str = "baton-web";

fn client(bao: &OpenBao) -> HttpVault {
    HttpVault::new(&VaultConfig {
        addr: bao.url().to_owned(),
        namespace: None,
        ca_cert: None,
        timeout: S(10),
    })
    .unwrap()
}

/// What a fake gatekeeper wraps.
#[derive(Clone, Copy)]
enum Mint {
    /// A secret id of this AppRole role (creation path `auth/approle/role/<role>/secret-id`).
    SecretIdOf(&'static str),
    /// Anything else, wrapped with `sys/wrapping/wrap` (creation path `sys/wrapping/wrap`).
    Foreign,
}

/// A gatekeeper that mints like the real one: a single-use secret id, response-wrapped.
struct Minting<'a> {
    bao: &'a OpenBao,
    role_id: String,
    mint: Mint,
    /// Fail this many calls with "unavailable" first.
    fail_first: u32,
    calls: AtomicU32,
}

impl<'a> Minting<'a> {
    fn new(bao: &'a OpenBao, role_id: &str) -> Self {
        Minting {
            bao,
            role_id: role_id.into(),
            mint: Mint::SecretIdOf(ROLE),
            fail_first: 0,
            calls: AtomicU32::new(0),
        }
    }
}

/// A wrapping token of something that is not a secret id.
async fn foreign_wrap(bao: &OpenBao) -> String {
    let v: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/sys/wrapping/wrap", bao.url()))
        .header("X-Vault-Token", bao.root_token())
        .header("X-Vault-Wrap-TTL", "60s")
        .json(&json!({"secret_id": "attacker-chosen"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["wrap_info"]["token"].as_str().unwrap().to_owned()
}

impl GatekeeperApi for Minting<'_> {
    async fn grant(&self, _task: &str, _app: &str) -> Result<GatekeeperGrant, AuthError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            return Err(AuthError::GatekeeperUnavailable("HTTP 503".into()));
        }
        let wrap = match self.mint {
            Mint::SecretIdOf(role) => self.bao.wrapped_secret_id(role, "60s").await,
            Mint::Foreign => foreign_wrap(self.bao).await,
        };
        Ok(GatekeeperGrant {
            wrap_token: Secret::new(wrap),
            role_id: Secret::new(self.role_id.clone()),
        })
    }
}

fn method(role: &str, role_id: Option<&str>) -> AuthMethod {
    AuthMethod::Gatekeeper {
        mount: "approle".into(),
        task_id: "web.1".into(),
        app_id: "/web".into(),
        role: role.to_owned(),
        role_id: role_id.map(|r| Secret::new(r.to_owned())),
    }
}

/// OpenBao with AppRole, the role `ROLE` (single-use secret ids, reading `kv1/web`) and the
/// role `other`; `ROLE`'s role id.
async fn setup() -> (OpenBao, String) {
    let bao = super::bao().await;
    bao.enable_approle().await;
    bao.write_policy("web", r#"path "kv1/web" { capabilities = ["read"] }"#)
        .await;
    let role_id = bao
        .approle_role(
            ROLE,
            &["web"],
            json!({"secret_id_num_uses": 1, "token_ttl": "600s"}),
        )
        .await;
    bao.approle_role("other", &["web"], json!({})).await;
    (bao, role_id)
}

/// The Vault requests baton-env made after the last secret id was minted.
fn requests_after_minting(bao: &OpenBao) -> Vec<String> {
    let all: Vec<String> = bao.requests().into_iter().map(|(_, p)| p).collect();
    let start = all
        .iter()
        .rposition(|p| p.ends_with("/secret-id") || p == "sys/wrapping/wrap")
        .map_or(0, |i| i + 1);
    all[start..].to_vec()
}

#[tokio::test]
async fn gatekeeper_flow_logs_in_with_the_unwrapped_single_use_secret_id() {
    let (bao, role_id) = setup().await;
    let api = client(&bao);
    let gk = Minting::new(&bao, &role_id);
    let t = login(
        &api,
        &gk,
        &method(ROLE, Some(&role_id)),
        &RetryPolicy::new(S(5)),
    )
    .await
    .unwrap();
    let paths = requests_after_minting(&bao);
    assert!(bao.token_valid(t.token.expose()).await);
    assert_eq!(
        paths,
        [
            "sys/wrapping/lookup",
            "sys/wrapping/unwrap",
            "auth/approle/login"
        ]
    );
}

#[tokio::test]
async fn a_forged_wrap_is_refused_before_unwrapping() {
    let (bao, role_id) = setup().await;
    let api = client(&bao);
    // Not a secret-id path at all.
    let mut gk = Minting::new(&bao, &role_id);
    gk.mint = Mint::Foreign;
    let e = login(&api, &gk, &method(ROLE, None), &RetryPolicy::new(S(5)))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::WrongCreationPath { .. }), "{e}");
    assert!(e.is_security_alarm());
    // Another role's secret id on the same mount (the role is always pinned).
    gk.mint = Mint::SecretIdOf("other");
    let e = login(&api, &gk, &method(ROLE, None), &RetryPolicy::new(S(5)))
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::WrongCreationPath { .. }), "{e}");
    // Never unwrapped: the forged wraps are still there for an investigator.
    assert_eq!(
        bao.requests_to("sys/wrapping/unwrap"),
        0,
        "{:?}",
        bao.requests()
    );
}

#[tokio::test]
async fn a_substituted_role_id_is_an_alarm() {
    let (bao, role_id) = setup().await;
    let api = client(&bao);
    let gk = Minting::new(&bao, "someone-elses-role-id");
    let e = login(
        &api,
        &gk,
        &method(ROLE, Some(&role_id)),
        &RetryPolicy::new(S(5)),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, AuthError::RoleIdMismatch));
    assert!(e.is_security_alarm());
}

#[tokio::test]
async fn unavailable_gatekeeper_is_retried_within_max_wait() {
    let (bao, role_id) = setup().await;
    let api = client(&bao);
    let mut gk = Minting::new(&bao, &role_id);
    gk.fail_first = 2;
    let t = login(&api, &gk, &method(ROLE, None), &RetryPolicy::new(S(10))).await;
    assert!(t.is_ok(), "{:?}", t.err());
    assert_eq!(gk.calls.load(Ordering::SeqCst), 3);

    // Always unavailable: gives up after --max-wait as "unavailable" (exit 69), not refused.
    let mut gk = Minting::new(&bao, &role_id);
    gk.fail_first = u32::MAX;
    let e = login(
        &api,
        &gk,
        &method(ROLE, None),
        &RetryPolicy::new(Duration::from_millis(400)),
    )
    .await
    .unwrap_err();
    assert!(e.is_unavailable() && !e.is_security_alarm(), "{e}");
    assert!(gk.calls.load(Ordering::SeqCst) > 1);
}

/// A one-endpoint HTTP gatekeeper answering every request with `status` and `body`; counts
/// requests.
async fn fake_gatekeeper(status: u16, body: String) -> (String, std::sync::Arc<AtomicU32>) {
    fake_gatekeeper_seq(vec![(status, body, String::new())]).await
}

/// Like [`fake_gatekeeper`], answering the n-th request with `answers[n]` (status, body,
/// extra header lines); the last answer repeats.
async fn fake_gatekeeper_seq(
    answers: Vec<(u16, String, String)>,
) -> (String, std::sync::Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = std::sync::Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 8192];
            let _ = sock.read(&mut buf).await;
            // The token accessor baton-env reports after its login (for the lease sweep) is
            // not a grant: acknowledged, not counted.
            let (status, body, headers) = if buf.starts_with(b"POST /v1/secret-zero/accessor ") {
                (204, String::new(), String::new())
            } else {
                let n = h.fetch_add(1, Ordering::SeqCst) as usize;
                answers[n.min(answers.len() - 1)].clone()
            };
            tokio::spawn(async move {
                let resp = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/v1/secret-zero"), hits)
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_exits_79_when_the_wrap_was_already_unwrapped() {
    let (bao, role_id) = setup().await;
    bao.root("POST", "kv1/web", Some(json!({"password": "pw"})))
        .await;
    let wrap = bao.wrapped_secret_id(ROLE, "60s").await;
    // Someone intercepted and used the wrapping token first.
    let used = reqwest::Client::new()
        .post(format!("{}/v1/sys/wrapping/unwrap", bao.url()))
        .header("X-Vault-Token", &wrap)
        .send()
        .await
        .unwrap();
    assert!(used.status().is_success());
    let (url, _) = fake_gatekeeper(
        200,
        json!({"wrap_token": wrap, "role_id": role_id}).to_string(),
    )
    .await;
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("BATON_AUTH", "gatekeeper")
        .env("BATON_GATEKEEPER_URL", &url)
        .env("BATON_APPROLE_ROLE", ROLE)
        .env("MESOS_TASK_ID", "web.1")
        .env("MARATHON_APP_ID", "/web")
        .env("BATON_MAX_WAIT", "2s")
        .env("P", "vault:kv1/web#password")
        .args(["--", "true"]);
    let out = output(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(79), "{stderr}");
    assert!(stderr.contains("SECURITY ALARM"), "{stderr}");
    assert!(
        !stderr.contains(&wrap),
        "the wrapping token leaked into the logs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_retries_a_503_gatekeeper_then_exits_69_and_a_403_at_once_with_77() {
    let (bao, _) = setup().await;
    let run = |url: String| {
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", bao.url())
            .env("BATON_AUTH", "gatekeeper")
            .env("BATON_GATEKEEPER_URL", url)
            .env("BATON_APPROLE_ROLE", ROLE)
            .env("MESOS_TASK_ID", "web.1")
            .env("MARATHON_APP_ID", "/web")
            // Room for a few retries even when this machine is slow to start the binary.
            .env("BATON_MAX_WAIT", "3s")
            .env("P", "vault:kv1/web#password")
            .args(["--", "true"]);
        output(cmd)
    };
    let (url, hits) = fake_gatekeeper(503, r#"{"errors":["unavailable"]}"#.into()).await;
    let out = run(url).await;
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(hits.load(Ordering::SeqCst) > 1, "503 was not retried");

    let (url, hits) = fake_gatekeeper(403, r#"{"errors":["permission denied"]}"#.into()).await;
    let out = run(url).await;
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        1,
        "a refusal must not be retried"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_refuses_gatekeeper_mode_without_the_role_pin() {
    let (bao, _) = setup().await;
    let (url, hits) = fake_gatekeeper(503, "{}".into()).await;
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("BATON_AUTH", "gatekeeper")
        .env("BATON_GATEKEEPER_URL", &url)
        .env("MESOS_TASK_ID", "web.1")
        .env("MARATHON_APP_ID", "/web")
        .env("P", "vault:kv1/web#password")
        .args(["--", "true"]);
    let out = output(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("BATON_APPROLE_ROLE"), "{stderr}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing is asked without the pin"
    );
    assert!(
        !bao.requests()
            .iter()
            .any(|(_, p)| p.starts_with("sys/wrapping/") || p.ends_with("/login")),
        "Vault was asked without the pin: {:?}",
        bao.requests()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_honours_the_gatekeepers_retry_after() {
    let (bao, role_id) = setup().await;
    bao.root("POST", "kv1/web", Some(json!({"password": "pw-after-429"})))
        .await;
    let wrap = bao.wrapped_secret_id(ROLE, "60s").await;
    let grant = json!({"wrap_token": wrap, "role_id": role_id}).to_string();
    let busy = (429, "{}".to_owned(), "Retry-After: 1\r\n".to_owned());
    let run = |url: String, max_wait: &'static str| {
        let mut cmd = baton_env();
        cmd.env("VAULT_ADDR", bao.url())
            .env("BATON_AUTH", "gatekeeper")
            .env("BATON_GATEKEEPER_URL", url)
            .env("BATON_APPROLE_ROLE", ROLE)
            .env("MESOS_TASK_ID", "web.1")
            .env("MARATHON_APP_ID", "/web")
            .env("BATON_MAX_WAIT", max_wait)
            .env("P", "vault:kv1/web#password")
            .args(["--", "sh", "-c", "printf %s \"$P\""]);
        output(cmd)
    };
    // 429 "come back in 1 s", then the grant: one wait of (at least) a second.
    let (url, hits) = fake_gatekeeper_seq(vec![busy.clone(), (200, grant, String::new())]).await;
    let started = std::time::Instant::now();
    let out = run(url, "10s").await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pw-after-429");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert!(started.elapsed() >= S(1), "Retry-After was not honoured");
    // A Retry-After beyond --max-wait: no point waiting, unavailable (69) at once. The same
    // as an HTTP-date (as a proxy may send it): not understood, it would be retried with
    // backoff until --max-wait.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + S(60));
    for retry_after in ["30".to_owned(), date] {
        let (url, hits) = fake_gatekeeper_seq(vec![(
            429,
            "{}".into(),
            format!("Retry-After: {retry_after}\r\n"),
        )])
        .await;
        let started = std::time::Instant::now();
        let out = run(url, "10s").await;
        assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
        assert_eq!(hits.load(Ordering::SeqCst), 1, "{retry_after}");
        assert!(
            started.elapsed() < S(8),
            "{retry_after}: waited out --max-wait instead of giving up"
        );
    }
}
