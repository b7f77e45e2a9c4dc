//! The library against OpenBao (ported from the stub): KV v1/v2 with versions, `data/` paths
//! and templates, `--kv-version`, denials from a real ACL policy, missing paths and keys, a
//! sealed Vault, AppRole (plain and response-wrapped secret ids), token renew (capped by its
//! max TTL) and revoke. Request counts come from OpenBao's own audit log.

use std::process::Stdio;
use std::time::Duration;

use baton_env::auth::{login, AuthError, AuthMethod, NoGatekeeper, SecretIdSource};
use baton_env::refs::parse_env;
use baton_env::resolve::{resolve, KvVersions};
use baton_env::retry::RetryPolicy;
use baton_env::secret::Secret;
use baton_env::vault::{HttpVault, VaultApi, VaultConfig};
use openbao_harness::OpenBao;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::bao;
use crate::support::BIN;

const S: fn(u64) -> Duration = Duration::from_secs;

fn client(bao: &OpenBao) -> HttpVault {
    HttpVault::new(&VaultConfig {
        addr: bao.url().to_owned(),
        namespace: None,
        ca_cert: None,
        timeout: S(10),
    })
    .expect("client")
}

fn root(bao: &OpenBao) -> Secret {
    Secret::new(bao.root_token().to_owned())
}

fn quick() -> RetryPolicy {
    RetryPolicy::new(S(5))
}

fn get<'a>(vars: &'a [(String, Secret)], name: &str) -> &'a str {
    vars.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.expose())
        .unwrap_or_else(|| panic!("{name} not rendered"))
}

/// KV v2: the latest version through the `data/` path or without it, a given version, a
/// template over two keys of one path; KV v1 beside it. One read per distinct path (and
/// version), counted in the server's audit log.
#[tokio::test(flavor = "multi_thread")]
async fn kv2_versions_data_paths_and_templates_one_read_per_path() {
    let bao = bao().await;
    bao.kv2_put("app", json!({"key": "v1-key"})).await;
    bao.kv2_put("app", json!({"key": "v2-key", "user": "svc"}))
        .await;
    bao.root("POST", "kv1/app", Some(json!({"k": "legacy"})))
        .await;
    let (plan, errors) = parse_env([
        ("API_KEY", "vault:secret/data/app#key"),
        ("SAME", "vault:secret/app#user"),
        ("OLD_KEY", "vault:secret/app#key?version=1"),
        (
            "URL",
            "https://{{ vault:secret/app#user }}:{{ vault:secret/app#key }}@host",
        ),
        ("LEGACY", "vault:kv1/app#k"),
    ]);
    assert!(errors.is_empty());
    let r = resolve(
        &client(&bao),
        &root(&bao),
        &plan,
        &KvVersions::default(),
        &quick(),
    )
    .await
    .expect("resolve");
    assert_eq!(get(&r.vars, "API_KEY"), "v2-key");
    assert_eq!(get(&r.vars, "SAME"), "svc");
    assert_eq!(get(&r.vars, "OLD_KEY"), "v1-key");
    assert_eq!(get(&r.vars, "URL"), "https://svc:v2-key@host");
    assert_eq!(get(&r.vars, "LEGACY"), "legacy");
    assert!(r.leases.is_empty(), "KV reads have no lease");
    // One read per distinct path as written (and version): `secret/data/app`, `secret/app`
    // (shared by SAME and both halves of URL) and `secret/app?version=1`; the audit log
    // shows the KV v2 path without the query string.
    assert_eq!(bao.reads_of("secret/data/app"), 3, "{:?}", bao.requests());
    assert_eq!(bao.reads_of("kv1/app"), 1, "{:?}", bao.requests());
}

/// A deleted version is "not found", never the data of another version.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_version_is_not_found() {
    let bao = bao().await;
    bao.kv2_put("app", json!({"key": "v1-key"})).await;
    bao.kv2_put("app", json!({"key": "v2-key"})).await;
    bao.root("POST", "secret/delete/app", Some(json!({"versions": [1]})))
        .await;
    let (plan, _) = parse_env([("OLD", "vault:secret/app#key?version=1")]);
    let err = resolve(
        &client(&bao),
        &root(&bao),
        &plan,
        &KvVersions::default(),
        &quick(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("OLD") && msg.contains("secret/app?version=1") && msg.contains("not found"),
        "{msg}"
    );
    assert!(!msg.contains("v2-key") && !msg.contains("v1-key"), "{msg}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kv_version_flag_skips_detection() {
    let bao = bao().await;
    bao.kv2_put("app", json!({"k": "v"})).await;
    bao.root("POST", "kv1/app", Some(json!({"k": "w"}))).await;
    let (plan, _) = parse_env([("A", "vault:secret/app#k"), ("B", "vault:kv1/app#k")]);
    let kv = KvVersions::parse(["secret=2", "kv1=1"]).unwrap();
    let r = resolve(&client(&bao), &root(&bao), &plan, &kv, &quick())
        .await
        .unwrap();
    assert_eq!(get(&r.vars, "A"), "v");
    assert_eq!(get(&r.vars, "B"), "w");
    let requests = bao.requests();
    assert!(
        requests.iter().all(|(_, p)| !p.starts_with("sys/internal")),
        "{requests:?}"
    );
    // And without the flag the mount is asked (so the assertion above can fail).
    let (plan, _) = parse_env([("A", "vault:secret/app#k")]);
    resolve(
        &client(&bao),
        &root(&bao),
        &plan,
        &KvVersions::default(),
        &quick(),
    )
    .await
    .unwrap();
    assert!(bao
        .requests()
        .iter()
        .any(|(_, p)| p.starts_with("sys/internal/ui/mounts/")));
}

const KV1_ONLY: &str = r#"path "kv1/*" { capabilities = ["read"] }"#;

#[tokio::test(flavor = "multi_thread")]
async fn denied_missing_path_and_missing_key_name_the_variable() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"present": "s3cr3t-value"})))
        .await;
    bao.kv2_put("other", json!({"x": "other-secret"})).await;
    let token = bao.policy_token("kv1-only", KV1_ONLY, true).await;
    let (plan, _) = parse_env([
        ("DENIED", "vault:secret/data/other#x"),
        ("MISSING_PATH", "vault:kv1/nope#k"),
    ]);
    let err = resolve(
        &client(&bao),
        &Secret::new(token.clone()),
        &plan,
        &KvVersions::default(),
        &quick(),
    )
    .await
    .unwrap_err();
    assert!(!err.is_unavailable());
    let msg = err.to_string();
    assert!(
        msg.contains("DENIED")
            && msg.contains("secret/data/other")
            && msg.contains("permission denied"),
        "{msg}"
    );
    assert!(
        msg.contains("MISSING_PATH") && msg.contains("kv1/nope") && msg.contains("not found"),
        "{msg}"
    );
    assert!(!msg.contains("other-secret"));

    let (plan, _) = parse_env([("NO_KEY", "vault:kv1/app#absent")]);
    let err = resolve(
        &client(&bao),
        &Secret::new(token.clone()),
        &plan,
        &KvVersions::default(),
        &quick(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("NO_KEY") && msg.contains("kv1/app") && msg.contains("absent"),
        "{msg}"
    );
    assert!(!msg.contains("s3cr3t-value"));
}

/// Every failing reference is reported in one run: a key missing from a path that was read
/// together with the paths that could not be read (it used to show only once those were
/// fixed), each line naming its path once ("cannot read X: X: not found" said it twice).
#[tokio::test(flavor = "multi_thread")]
async fn every_failing_reference_is_reported_in_one_run() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"present": "s3cr3t-value"})))
        .await;
    let token = bao.policy_token("kv1-only", KV1_ONLY, true).await;
    let (plan, _) = parse_env([
        ("OK", "vault:kv1/app#present"),
        ("NO_KEY", "vault:kv1/app#absent"),
        ("MISSING_PATH", "vault:kv1/nope#k"),
        ("DENIED", "vault:secret/data/other#x"),
        (
            "MIXED",
            "{{ vault:kv1/gone#k }}-{{ vault:kv1/app#also_absent }}",
        ),
    ]);
    let err = resolve(
        &client(&bao),
        &Secret::new(token),
        &plan,
        &KvVersions::default(),
        &quick(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    let lines: Vec<&str> = msg.lines().skip(1).collect();
    let expected = [
        ("MISSING_PATH", "kv1/nope", "not found"),
        ("DENIED", "secret/data/other", "permission denied"),
        ("MIXED", "kv1/gone", "not found"),
        ("NO_KEY", "kv1/app", "`absent`"),
        ("MIXED", "kv1/app", "`also_absent`"),
    ];
    assert_eq!(lines.len(), expected.len(), "{msg}");
    for (var, path, what) in expected {
        let line = lines
            .iter()
            .find(|l| l.contains(var) && l.contains(path) && l.contains(what))
            .unwrap_or_else(|| panic!("no line for {var} {path} {what}:\n{msg}"));
        assert_eq!(line.matches(path).count(), 1, "{path} said twice: {line}");
    }
    assert!(msg.starts_with("5 secret reference(s)"), "{msg}");
    assert!(!msg.contains("s3cr3t-value"), "{msg}");
    assert!(!err.is_unavailable());
}

/// A 403 from the policy is an answer, not an outage: asked once, never retried.
#[tokio::test(flavor = "multi_thread")]
async fn denied_is_not_retried() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "v"}))).await;
    let token = bao
        .policy_token(
            "nothing",
            r#"path "nothing/*" { capabilities = ["read"] }"#,
            true,
        )
        .await;
    let (plan, _) = parse_env([("A", "vault:kv1/app#k")]);
    let err = resolve(
        &client(&bao),
        &Secret::new(token),
        &plan,
        &KvVersions::default(),
        &quick(),
    )
    .await
    .unwrap_err();
    assert!(!err.is_unavailable());
    assert_eq!(bao.reads_of("kv1/app"), 1, "{:?}", bao.requests());
}

/// A sealed Vault (503) at start is retried: baton-env waits, and reads once it is unsealed
/// (the unseal happens only after baton-env said it is retrying). Still sealed past
/// `--max-wait`: exit 69.
#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_vault_is_retried_until_unsealed_then_69_past_max_wait() {
    let bao = bao().await;
    bao.root("POST", "kv1/app", Some(json!({"k": "unsealed-value"})))
        .await;
    bao.seal().await;
    let mut child = tokio::process::Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("VAULT_ADDR", bao.url())
        .env("VAULT_TOKEN", bao.root_token())
        .env("A", "vault:kv1/app#k")
        .args(["--max-wait", "120s", "--", "sh", "-c", "printf %s \"$A\""])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn baton-env");
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let retrying = tokio::time::timeout(S(60), async {
        while let Some(line) = stderr.next_line().await.unwrap() {
            let hit = line.contains("Vault not ready, retrying") && line.contains("503");
            seen.push(line);
            if hit {
                return;
            }
        }
    })
    .await;
    assert!(
        retrying.is_ok(),
        "no retry on a sealed Vault:\n{}",
        seen.join("\n")
    );
    bao.unseal().await;
    let drain = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(l)) = stderr.next_line().await {
            rest.push(l);
        }
        rest
    });
    let out = tokio::time::timeout(S(120), child.wait_with_output())
        .await
        .expect("baton-env ends once Vault is unsealed")
        .unwrap();
    let rest = drain.await.unwrap().join("\n");
    assert_eq!(out.status.code(), Some(0), "{rest}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unsealed-value");

    bao.seal().await;
    let mut cmd = crate::support::baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("VAULT_TOKEN", bao.root_token())
        .env("A", "vault:kv1/app#k")
        .args(["--max-wait", "2s", "--", "true"]);
    let out = crate::support::output(cmd).await;
    let stderr = crate::support::text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("sealed or unavailable"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn approle_secret_id_num_uses_is_honoured() {
    let bao = bao().await;
    bao.enable_approle().await;
    bao.write_policy("kv1-only", KV1_ONLY).await;
    let role_id = bao
        .approle_role(
            "web",
            &["kv1-only"],
            json!({"secret_id_num_uses": 1, "token_ttl": "60s"}),
        )
        .await;
    let secret_id = bao.secret_id("web").await;
    let method = AuthMethod::AppRole {
        mount: "approle".into(),
        role_id: Secret::new(role_id),
        secret_id: SecretIdSource::Plain(Secret::new(secret_id.clone())),
    };
    let api = client(&bao);
    let t = login(&api, &NoGatekeeper, &method, &quick()).await.unwrap();
    assert_eq!(t.ttl, Some(S(60)));
    assert!(bao.token_valid(t.token.expose()).await);
    let again = login(&api, &NoGatekeeper, &method, &quick())
        .await
        .unwrap_err();
    assert!(
        matches!(again, AuthError::Login { .. })
            && !again.is_unavailable()
            && !again.is_security_alarm(),
        "{again}"
    );
    // The error names the method and the server's reason, not the secret id.
    let chain = baton_env::chain(&again);
    assert!(chain.contains("invalid"), "{chain}");
    assert!(!chain.contains(&secret_id), "{chain}");
}

/// A response-wrapped secret id unwraps once; a replay is a security alarm; a wrapping token
/// minted for something else is refused at the lookup, before it is unwrapped (it is still
/// valid afterwards, and the audit log shows one unwrap in all).
#[tokio::test(flavor = "multi_thread")]
async fn wrapped_secret_id_unwraps_once_then_raises_the_alarm() {
    let bao = bao().await;
    bao.enable_approle().await;
    bao.write_policy("kv1-only", KV1_ONLY).await;
    let role_id = bao.approle_role("web", &["kv1-only"], json!({})).await;
    let wrap = bao.wrapped_secret_id("web", "60s").await;
    let method = AuthMethod::AppRole {
        mount: "approle".into(),
        role_id: Secret::new(role_id.clone()),
        secret_id: SecretIdSource::Wrapped(Secret::new(wrap)),
    };
    let api = client(&bao);
    let t = login(&api, &NoGatekeeper, &method, &quick()).await.unwrap();
    assert!(bao.token_valid(t.token.expose()).await);
    // Replayed (= someone else unwrapped first): alarm.
    let e = login(&api, &NoGatekeeper, &method, &quick())
        .await
        .unwrap_err();
    assert!(
        e.is_security_alarm() && e.to_string().contains("intercepted"),
        "{e}"
    );

    // A wrapping token minted elsewhere (`sys/wrapping/wrap`) is refused before unwrapping.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sys/wrapping/wrap", bao.url()))
        .header("X-Vault-Token", bao.root_token())
        .header("X-Vault-Wrap-TTL", "60s")
        .json(&json!({"secret_id": "x"}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    let other = v["wrap_info"]["token"].as_str().unwrap().to_owned();
    assert_eq!(v["wrap_info"]["creation_path"], "sys/wrapping/wrap");
    let method = AuthMethod::AppRole {
        mount: "approle".into(),
        role_id: Secret::new(role_id),
        secret_id: SecretIdSource::Wrapped(Secret::new(other.clone())),
    };
    let e = login(&api, &NoGatekeeper, &method, &quick())
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::WrongCreationPath { .. }), "{e}");
    let (status, _) = bao
        .call_as(
            bao.root_token(),
            "POST",
            "sys/wrapping/lookup",
            Some(json!({ "token": other })),
        )
        .await;
    assert_eq!(status, 200, "the foreign wrapping token was unwrapped");
    assert_eq!(
        bao.requests_to("sys/wrapping/unwrap"),
        1,
        "the replay and the foreign token must stop at the lookup: {:?}",
        bao.requests()
    );
}

/// Token renewal and revocation on a real server: renewed, capped by its max TTL, revoked.
#[tokio::test(flavor = "multi_thread")]
async fn token_renew_is_capped_by_max_ttl_and_revoke_ends_it() {
    let bao = bao().await;
    let v = bao
        .root(
            "POST",
            "auth/token/create",
            Some(json!({"policies": ["default"], "ttl": "60s", "explicit_max_ttl": "90s", "renewable": true})),
        )
        .await;
    let token = Secret::new(v["auth"]["client_token"].as_str().unwrap().to_owned());
    let api = client(&bao);
    let info = api.lookup_self(&token).await.unwrap();
    assert_eq!(info.renewable, Some(true));
    assert!(info.ttl <= S(60) && info.ttl >= S(50), "{info:?}");
    let renewed = api.renew_self(&token, S(60)).await.unwrap();
    assert!(renewed.lease_duration >= S(50), "{renewed:?}");
    // Max TTL 90 s caps a 300 s increment at what is left of the 90 s.
    let capped = api.renew_self(&token, S(300)).await.unwrap();
    assert!(capped.lease_duration <= S(90), "{capped:?}");
    api.revoke_self(&token).await.unwrap();
    assert!(!bao.token_valid(token.expose()).await);
    assert!(api.renew_self(&token, S(30)).await.is_err());
}
