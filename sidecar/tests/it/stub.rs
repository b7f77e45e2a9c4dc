//! The library against the Vault stub, for what OpenBao cannot serve here: 5xx faults, JWT
//! login (no issuer). The rest runs against OpenBao: `openbao::library`, and dynamic database
//! credentials with their leases `openbao::database`.

use std::time::Duration;

use baton_env::auth::{login, AuthError, AuthMethod, JwtSource, NoGatekeeper};
use baton_env::refs::parse_env;
use baton_env::resolve::{resolve, KvVersions};
use baton_env::retry::RetryPolicy;
use baton_env::secret::Secret;
use baton_env::vault::{HttpVault, VaultConfig};
use serde_json::json;
use vault_stub::{spawn, Fault, Policy, StubConfig, StubHandle, TokenSpec};

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
