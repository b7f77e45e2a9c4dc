//! The library against the Vault stub, for what OpenBao cannot serve here: dynamic
//! credentials (no database), 5xx faults, JWT login (no issuer), short real leases. The rest
//! runs against OpenBao: `openbao::library`.

use std::sync::Arc;
use std::time::Duration;

use baton_env::auth::{login, AuthError, AuthMethod, JwtSource, NoGatekeeper};
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

/// Dynamic credentials (OpenBao's database engine needs a database: the stub's): username
/// and password from one lease, in a template too. (KV versions, `data/` paths and templates:
/// `openbao::library::kv2_versions_data_paths_and_templates_one_read_per_path`.)
#[tokio::test]
async fn dynamic_credentials_one_lease_per_path_and_templates() {
    let stub = stub().await;
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
    // Username and password come from ONE lease.
    assert_eq!(stub.creds_issued(), 1);
    assert_eq!(r.leases.len(), 1);
    let reads: Vec<_> = stub
        .requests()
        .into_iter()
        .filter(|(_, p)| !p.starts_with("sys/internal/ui/mounts/"))
        .collect();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert!(reads
        .iter()
        .any(|(m, p)| m == "GET" && p == "database/creds/app"));
}

/// Injected faults on a count of requests (a 500 OpenBao cannot be made to answer; a sealed
/// OpenBao and a 403 that is not retried: `openbao::library`).
#[tokio::test]
async fn sealed_and_5xx_are_retried() {
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

/// A dynamic lease renewed (capped by its max TTL) and revoked, then the token revoked (the
/// token's own renewal and max TTL: `openbao::library::token_renew_is_capped_by_max_ttl_and_revoke_ends_it`).
#[tokio::test]
async fn lease_renew_and_revoke() {
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
