//! The library against the Vault stub: KV v1/v2, dynamic credentials, policies, faults,
//! AppRole (plain and wrapped), JWT, token and lease renewal/revocation.

use std::sync::Arc;
use std::time::Duration;

use baton_env::auth::{login, AuthError, AuthMethod, JwtSource, NoGatekeeper, SecretIdSource};
use baton_env::refs::parse_env;
use baton_env::resolve::{resolve, KvVersions};
use baton_env::retry::RetryPolicy;
use baton_env::secret::Secret;
use baton_env::supervise::renew::{self, Credentials, RenewEvent};
use baton_env::vault::{HttpVault, VaultApi, VaultConfig};
use serde_json::json;
use vault_stub::{spawn, DbRole, Fault, Policy, StubConfig, StubHandle, TokenSpec};

const S: fn(u64) -> Duration = Duration::from_secs;

async fn stub() -> StubHandle {
    spawn(StubConfig::default()).await.expect("stub")
}

fn client(stub: &StubHandle) -> HttpVault {
    HttpVault::new(&VaultConfig {
        addr: stub.url(),
        namespace: None,
        ca_cert: None,
        timeout: S(5),
    })
    .expect("client")
}

fn root(stub: &StubHandle) -> Secret {
    Secret::new(stub.root_token().to_owned())
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

#[tokio::test]
async fn one_read_per_path_kv2_versions_and_templates() {
    let stub = stub().await;
    stub.put_kv2("secret/app", json!({"key": "v1-key"}));
    stub.put_kv2("secret/app", json!({"key": "v2-key", "user": "svc"}));
    stub.add_db_role(
        "app",
        DbRole {
            default_ttl: S(60),
            max_ttl: S(120),
        },
    );
    let (plan, errors) = parse_env([
        ("DB_USER", "vault:database/creds/app#username"),
        ("DB_PASSWORD", "vault:database/creds/app#password"),
        ("DB_URL", "postgres://{{ vault:database/creds/app#username }}:{{ vault:database/creds/app#password }}@db:5432/app"),
        ("API_KEY", "vault:secret/data/app#key"),
        ("OLD_KEY", "vault:secret/app#key?version=1"),
    ]);
    assert!(errors.is_empty());
    let api = client(&stub);
    let r = resolve(&api, &root(&stub), &plan, &KvVersions::default(), &quick())
        .await
        .expect("resolve");
    let user = get(&r.vars, "DB_USER").to_owned();
    let pass = get(&r.vars, "DB_PASSWORD").to_owned();
    assert!(user.starts_with("v-token-app-"));
    assert_eq!(
        get(&r.vars, "DB_URL"),
        format!("postgres://{user}:{pass}@db:5432/app")
    );
    assert_eq!(get(&r.vars, "API_KEY"), "v2-key");
    assert_eq!(get(&r.vars, "OLD_KEY"), "v1-key");
    // Username and password come from ONE lease.
    assert_eq!(stub.creds_issued(), 1);
    assert_eq!(r.leases.len(), 1);
    let reads: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|(_, p)| !p.starts_with("sys/internal/ui/mounts/"))
        .collect();
    assert_eq!(reads.len(), 3, "{reads:?}");
    assert!(reads
        .iter()
        .any(|(m, p)| m == "GET" && p == "secret/data/app"));
}

#[tokio::test]
async fn kv_version_flag_skips_detection() {
    let stub = stub().await;
    stub.put_kv2("secret/app", json!({"k": "v"}));
    stub.put_kv1("kv1/app", json!({"k": "w"}));
    let (plan, _) = parse_env([("A", "vault:secret/app#k"), ("B", "vault:kv1/app#k")]);
    let kv = KvVersions::parse(["secret=2", "kv1=1"]).unwrap();
    let r = resolve(&client(&stub), &root(&stub), &plan, &kv, &quick())
        .await
        .unwrap();
    assert_eq!(get(&r.vars, "A"), "v");
    assert_eq!(get(&r.vars, "B"), "w");
    assert!(stub
        .requests()
        .iter()
        .all(|(_, p)| !p.starts_with("sys/internal")));
}

#[tokio::test]
async fn denied_missing_path_and_missing_key_name_the_variable() {
    let stub = stub().await;
    stub.put_kv1("kv1/app", json!({"present": "s3cr3t-value"}));
    stub.put_kv2("secret/other", json!({"x": "other-secret"}));
    let token = stub.create_token(TokenSpec::new(Policy::paths(["kv1/"]), S(600)));
    let (plan, _) = parse_env([
        ("DENIED", "vault:secret/data/other#x"),
        ("MISSING_PATH", "vault:kv1/nope#k"),
    ]);
    let err = resolve(
        &client(&stub),
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
        &client(&stub),
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
}

/// Every failing reference is reported in one run: a key missing from a path that was read
/// together with the paths that could not be read (it used to show only once those were
/// fixed), each line naming its path once ("cannot read X: X: not found" said it twice).
#[tokio::test]
async fn every_failing_reference_is_reported_in_one_run() {
    let stub = stub().await;
    stub.put_kv1("kv1/app", json!({"present": "s3cr3t-value"}));
    let token = stub.create_token(TokenSpec::new(Policy::paths(["kv1/"]), S(600)));
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
        &client(&stub),
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
    assert!(!msg.contains("s3cr3t-value"));
}

#[tokio::test]
async fn sealed_and_5xx_are_retried_denied_is_not() {
    let stub = stub().await;
    stub.put_kv1("kv1/app", json!({"k": "v"}));
    let (plan, _) = parse_env([("A", "vault:kv1/app#k")]);
    stub.fail_next(2, Fault::Sealed);
    stub.fail_next(1, Fault::Internal);
    let r = resolve(
        &client(&stub),
        &root(&stub),
        &plan,
        &KvVersions::default(),
        &quick(),
    )
    .await
    .unwrap();
    assert_eq!(get(&r.vars, "A"), "v");

    // Still sealed after max-wait: reported as unavailable.
    stub.fail_next(10_000, Fault::Sealed);
    let err = resolve(
        &client(&stub),
        &root(&stub),
        &plan,
        &KvVersions::default(),
        &RetryPolicy::new(S(1)),
    )
    .await
    .unwrap_err();
    assert!(err.is_unavailable(), "{err}");

    // Denied is answered once, without retries.
    let stub = self::stub().await;
    let token = stub.create_token(TokenSpec::new(Policy::paths(["nothing/"]), S(600)));
    stub.clear_requests();
    let (plan, _) = parse_env([("A", "vault:kv1/app#k")]);
    let err = resolve(
        &client(&stub),
        &Secret::new(token),
        &plan,
        &KvVersions::default(),
        &quick(),
    )
    .await
    .unwrap_err();
    assert!(!err.is_unavailable());
    let reads = stub
        .requests()
        .into_iter()
        .filter(|(_, p)| p == "kv1/app")
        .count();
    assert_eq!(reads, 1);
}

#[tokio::test]
async fn approle_secret_id_num_uses_is_honoured() {
    let stub = stub().await;
    let role_id = stub.add_approle("web", 1, TokenSpec::new(Policy::paths(["kv1/"]), S(60)));
    let secret_id = stub.secret_id("web").unwrap();
    let method = AuthMethod::AppRole {
        mount: "approle".into(),
        role_id: Secret::new(role_id),
        secret_id: SecretIdSource::Plain(Secret::new(secret_id)),
    };
    let api = client(&stub);
    let t = login(&api, &NoGatekeeper, &method, &quick()).await.unwrap();
    assert_eq!(t.ttl, Some(S(60)));
    assert!(stub.token_valid(t.token.expose()));
    let again = login(&api, &NoGatekeeper, &method, &quick())
        .await
        .unwrap_err();
    assert!(
        matches!(again, AuthError::Login { .. })
            && !again.is_unavailable()
            && !again.is_security_alarm()
    );
    // The error names the method and the server's reason, not the secret id.
    assert!(baton_env::chain(&again).contains("invalid role or secret ID"));
}

#[tokio::test]
async fn wrapped_secret_id_unwraps_once_then_raises_the_alarm() {
    let stub = stub().await;
    let role_id = stub.add_approle("web", 0, TokenSpec::new(Policy::Root, S(60)));
    // Wrap through the HTTP API like a provisioner would, and check wrap_info is there
    // (a server that ignores X-Vault-Wrap-TTL would hand out the bare secret id).
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/auth/approle/role/web/secret-id", stub.url()))
        .header("X-Vault-Token", stub.root_token())
        .header("X-Vault-Wrap-TTL", "60s")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(resp["data"].is_null());
    assert_eq!(
        resp["wrap_info"]["creation_path"],
        "auth/approle/role/web/secret-id"
    );
    let wrap = resp["wrap_info"]["token"].as_str().unwrap().to_owned();
    let method = AuthMethod::AppRole {
        mount: "approle".into(),
        role_id: Secret::new(role_id.clone()),
        secret_id: SecretIdSource::Wrapped(Secret::new(wrap)),
    };
    let api = client(&stub);
    let t = login(&api, &NoGatekeeper, &method, &quick()).await.unwrap();
    assert!(stub.token_valid(t.token.expose()));
    // Replayed (= someone else unwrapped first): alarm.
    let e = login(&api, &NoGatekeeper, &method, &quick())
        .await
        .unwrap_err();
    assert!(
        e.is_security_alarm() && e.to_string().contains("intercepted"),
        "{e}"
    );

    // A wrapping token minted elsewhere is refused before unwrapping.
    let other = stub.wrap(
        json!({"data": {"secret_id": "x"}}),
        "secret/data/app",
        S(60),
    );
    let method = AuthMethod::AppRole {
        mount: "approle".into(),
        role_id: Secret::new(role_id),
        secret_id: SecretIdSource::Wrapped(Secret::new(other)),
    };
    let e = login(&api, &NoGatekeeper, &method, &quick())
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::WrongCreationPath { .. }), "{e}");
    let unwraps = stub
        .requests()
        .iter()
        .filter(|(_, p)| p == "sys/wrapping/unwrap")
        .count();
    assert_eq!(
        unwraps, 1,
        "the replay and the foreign token must stop at the lookup"
    );
}

#[tokio::test]
async fn jwt_login() {
    let stub = stub().await;
    stub.add_jwt_role(
        "app",
        "header.payload.sig",
        TokenSpec::new(Policy::Root, S(30)),
    );
    let api = client(&stub);
    let ok = AuthMethod::Jwt {
        mount: "jwt".into(),
        role: "app".into(),
        jwt: JwtSource::Given(Secret::new("header.payload.sig".into())),
    };
    let t = login(&api, &NoGatekeeper, &ok, &quick()).await.unwrap();
    assert!(stub.token_valid(t.token.expose()));
    let bad = AuthMethod::Jwt {
        mount: "jwt".into(),
        role: "app".into(),
        jwt: JwtSource::Given(Secret::new("forged".into())),
    };
    let e = login(&api, &NoGatekeeper, &bad, &quick())
        .await
        .unwrap_err();
    assert!(!baton_env::chain(&e).contains("forged"));

    // From a file, read again at each login: the issuer rotated it in between.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("jwt");
    std::fs::write(&file, "forged\n").unwrap();
    let from_file = AuthMethod::Jwt {
        mount: "jwt".into(),
        role: "app".into(),
        jwt: JwtSource::File(file.clone()),
    };
    let e = login(&api, &NoGatekeeper, &from_file, &quick())
        .await
        .unwrap_err();
    assert!(!baton_env::chain(&e).contains("forged"));
    std::fs::write(&file, "header.payload.sig\n").unwrap();
    let t = login(&api, &NoGatekeeper, &from_file, &quick())
        .await
        .unwrap();
    assert!(stub.token_valid(t.token.expose()));
    std::fs::remove_file(&file).unwrap();
    let e = login(&api, &NoGatekeeper, &from_file, &quick())
        .await
        .unwrap_err();
    assert!(matches!(e, AuthError::JwtFile { .. }), "{e}");
}

#[tokio::test]
async fn token_and_lease_renew_and_revoke() {
    let stub = stub().await;
    stub.add_db_role(
        "app",
        DbRole {
            default_ttl: S(30),
            max_ttl: S(40),
        },
    );
    let token = stub.create_token(TokenSpec {
        policy: Policy::Root,
        ttl: S(60),
        max_ttl: S(90),
        renewable: true,
    });
    let token = Secret::new(token);
    let api = client(&stub);
    let info = api.lookup_self(&token).await.unwrap();
    assert_eq!(info.renewable, Some(true));
    assert!(info.ttl <= S(60) && info.ttl >= S(58));
    let renewed = api.renew_self(&token, S(60)).await.unwrap();
    assert!(renewed.lease_duration >= S(59));
    let read = api.read(&token, "database/creds/app", None).await.unwrap();
    let lease = read.lease.unwrap();
    assert_eq!(lease.duration, S(30));
    // Max TTL 40 s caps a 30 s increment asked for now at ~40 s from issue.
    let l = api.renew_lease(&token, &lease.id, S(60)).await.unwrap();
    assert!(l.duration <= S(40));
    api.revoke_lease(&token, &lease.id).await.unwrap();
    assert!(stub.leases().iter().all(|(_, revoked)| *revoked));
    assert!(api.renew_lease(&token, &lease.id, S(30)).await.is_err());
    api.revoke_self(&token).await.unwrap();
    assert!(!stub.token_valid(token.expose()));
}

/// Short real leases (2 s, max 3 s): renewed once, then reported as ending before they die.
#[tokio::test]
async fn renewer_renews_then_reports_the_lease_ending() {
    let stub = stub().await;
    stub.add_db_role(
        "app",
        DbRole {
            default_ttl: S(2),
            max_ttl: S(3),
        },
    );
    let token = Arc::new(root(&stub));
    let api = Arc::new(client(&stub));
    let read = api.read(&token, "database/creds/app", None).await.unwrap();
    let lease = read.lease.unwrap();
    let (_replace_tx, replace_rx) = tokio::sync::mpsc::channel(1);
    let (event_tx, mut event_rx) = tokio::sync::mpsc::channel(4);
    let creds = Credentials {
        token,
        token_ttl: Some(Duration::ZERO),
        token_renewable: false,
        leases: vec![lease.clone()],
    };
    let task = tokio::spawn(renew::run(api, creds, replace_rx, event_tx));
    let event = tokio::time::timeout(S(10), event_rx.recv())
        .await
        .expect("an event")
        .expect("open");
    assert!(matches!(event, RenewEvent::LeaseEnding { .. }));
    let renewals = stub
        .requests()
        .iter()
        .filter(|(_, p)| p == "sys/leases/renew")
        .count();
    assert!(renewals >= 1);
    task.abort();
}
