//! `baton-env check` against OpenBao: a mix of good and bad references (KV v1 and v2, versions,
//! a deleted version, a missing path and key, a path the policy denies), each login method a
//! task uses, the exit codes of a start, no value in any output, and what it revokes.
//! The lease row: OpenBao's database engine over a throwaway PostgreSQL.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use openbao_harness::OpenBao;
use serde_json::{json, Value};

use crate::openbao::bao;
use crate::support::{baton_env, output, text};

/// Values seeded into Vault: none may appear in any output of a check.
const VALUES: [&str; 5] = [
    "v1-of-app-value",
    "v2-of-app-value",
    "deleted-v2-value",
    "kv1-legacy-value",
    "other-secret-value",
];

/// `baton-env check` with `auth` (env pairs) and the references `refs`.
async fn check(bao: &OpenBao, auth: &[(&str, &str)], refs: &[(&str, &str)], json: bool) -> Output {
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url()).arg("check");
    if json {
        cmd.arg("--json");
    }
    for (k, v) in auth.iter().chain(refs) {
        cmd.env(k, v);
    }
    output(cmd).await
}

fn assert_no_value(out: &Output, secrets: &[&str]) {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    for v in VALUES.iter().chain(secrets) {
        assert!(!all.contains(v), "`{v}` leaked:\n{all}");
    }
}

/// Validates `doc` against `schemas/<name>`.
fn assert_matches_schema(name: &str, doc: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas")
        .join(name);
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{name}: {errors:#?}\n{doc:#}");
}

/// The seeded server: `secret/app` with versions 1 and 3 and a deleted version 2, `kv1/app`,
/// `secret/other` (which the team policy may not read).
async fn seeded() -> OpenBao {
    let bao = bao().await;
    bao.kv2_put("app", json!({"user": VALUES[0]})).await;
    bao.kv2_put("app", json!({"user": VALUES[2]})).await;
    bao.kv2_put("app", json!({"user": VALUES[1], "pass": VALUES[1]}))
        .await;
    bao.root("POST", "secret/delete/app", Some(json!({"versions": [2]})))
        .await;
    bao.root("POST", "kv1/app", Some(json!({"user": VALUES[3]})))
        .await;
    bao.kv2_put("other", json!({"user": VALUES[4]})).await;
    bao
}

const TEAM_POLICY: &str = r#"
path "secret/data/app" { capabilities = ["read"] }
path "secret/data/nope" { capabilities = ["read"] }
path "kv1/*" { capabilities = ["read"] }
"#;

/// The mix of references of the table test.
const MIX: [(&str, &str); 9] = [
    ("LATEST", "vault:secret/app#user"),
    ("PASS", "vault:secret/data/app#pass?version=3"),
    ("FIRST", "vault:secret/app#user?version=1"),
    ("DELETED", "vault:secret/app#user?version=2"),
    ("LEGACY", "vault:kv1/app#user"),
    ("NO_KEY", "vault:secret/app#password"),
    ("NO_PATH", "vault:secret/nope#k"),
    ("NO_PATH_V1", "vault:kv1/nope#k"),
    ("DENIED", "vault:secret/other#user"),
];

/// One line per reference: the good ones with their KV version and the version read, each bad
/// one with why; exit 1 as a start with unresolvable references; no value anywhere; the given
/// token is kept. Then the same run as JSON, validated against its schema.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_each_reference_and_exits_like_a_start() {
    let bao = seeded().await;
    let token = bao.policy_token("team", TEAM_POLICY, true).await;
    let auth = [("VAULT_TOKEN", token.as_str())];

    let out = check(&bao, &auth, &MIX, false).await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert_no_value(&out, &[&token]);
    let row = |var: &str| -> String {
        stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(var))
            .unwrap_or_else(|| panic!("no row for {var}:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        row("LATEST"),
        "ok LATEST secret/app#user ok kv v2, version 3"
    );
    assert_eq!(
        row("PASS"),
        "ok PASS secret/data/app#pass?version=3 ok kv v2, version 3"
    );
    assert_eq!(
        row("FIRST"),
        "ok FIRST secret/app#user?version=1 ok kv v2, version 1"
    );
    assert_eq!(
        row("DELETED"),
        "FAIL DELETED secret/app#user?version=2 not found not found (at secret/data/app)"
    );
    assert_eq!(row("LEGACY"), "ok LEGACY kv1/app#user ok kv v1");
    assert!(
        row("NO_KEY").starts_with("FAIL NO_KEY secret/app#password key missing kv v2, version 3, key `password` not found"),
        "{stdout}"
    );
    assert_eq!(
        row("NO_PATH"),
        "FAIL NO_PATH secret/nope#k not found not found (at secret/data/nope)"
    );
    assert_eq!(
        row("NO_PATH_V1"),
        "FAIL NO_PATH_V1 kv1/nope#k not found not found"
    );
    assert_eq!(
        row("DENIED"),
        "FAIL DENIED secret/other#user permission denied permission denied (at secret/data/other)"
    );
    assert!(stdout.contains("9 reference(s), 5 failing"), "{stdout}");
    assert!(
        bao.token_valid(&token).await,
        "a given token is not revoked"
    );

    let out = check(&bao, &auth, &MIX, true).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_no_value(&out, &[&token]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_matches_schema("check.schema.json", &doc);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["login"]["method"], "token");
    assert_eq!(doc["login"]["looked_up"], true);
    let refs = doc["references"].as_array().unwrap();
    assert_eq!(refs.len(), MIX.len());
    let by_var = |var: &str| refs.iter().find(|r| r["var"] == var).unwrap().clone();
    assert_eq!(by_var("FIRST")["status"], "ok");
    assert_eq!(by_var("FIRST")["version"], 1);
    assert_eq!(by_var("FIRST")["requested_version"], 1);
    assert_eq!(by_var("FIRST")["read_path"], "secret/data/app");
    assert_eq!(by_var("LEGACY")["kv_version"], 1);
    assert_eq!(by_var("NO_KEY")["status"], "missing_key");
    assert_eq!(by_var("NO_PATH")["status"], "not_found");
    assert_eq!(by_var("DELETED")["status"], "not_found");
    assert_eq!(by_var("DENIED")["status"], "denied");
    assert_eq!(doc["cleanup"]["token_revoked"], false);

    // Only good references: 0, and `ok: true`.
    let good = [MIX[0], MIX[1], MIX[2], MIX[4]];
    let out = check(&bao, &auth, &good, true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_matches_schema("check.schema.json", &doc);
    assert_eq!(doc["ok"], true);
    assert_no_value(&out, &[&token]);
}

/// Exit codes of a start: a token Vault refuses is 77, a missing token 64, a sealed Vault 69
/// (after `--max-wait`), a malformed reference 1 (or `--resolve-exit-code`).
#[tokio::test(flavor = "multi_thread")]
async fn check_exit_codes_are_those_of_a_start() {
    let bao = seeded().await;
    let refs = [MIX[0]];
    let out = check(&bao, &[("VAULT_TOKEN", "hvs.made-up")], &refs, false).await;
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "no report without a login");

    let out = check(&bao, &[], &refs, false).await;
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));

    let bad = [("BAD", "vault:secret/app#")];
    let out = check(&bao, &[("VAULT_TOKEN", bao.root_token())], &bad, false).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("VAULT_TOKEN", bao.root_token())
        .env("BAD", "vault:secret/app#")
        .args(["check", "--resolve-exit-code", "3"]);
    assert_eq!(output(cmd).await.status.code(), Some(3));

    bao.seal().await;
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", bao.url())
        .env("VAULT_TOKEN", bao.root_token())
        .env("LATEST", MIX[0].1)
        .args(["check", "--max-wait", "2s"]);
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("unavailable"),
        "{}",
        text(&out.stdout)
    );
}

/// AppRole: the check logs in as the task would and revokes its token afterwards (Vault's
/// token count is back where it was), with a plain secret id that can be used again.
#[tokio::test(flavor = "multi_thread")]
async fn check_with_approle_revokes_the_token_it_logged_in_with() {
    let bao = seeded().await;
    bao.enable_approle().await;
    bao.write_policy("team", TEAM_POLICY).await;
    let role_id = bao.approle_role("web", &["team"], json!({})).await;
    let secret_id = bao.secret_id("web").await;
    let before = bao.token_count().await;
    let auth = [
        ("BATON_ROLE_ID", role_id.as_str()),
        ("BATON_SECRET_ID", secret_id.as_str()),
    ];
    let out = check(&bao, &auth, &[MIX[0], MIX[4]], true).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_no_value(&out, &[&role_id, &secret_id]);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_matches_schema("check.schema.json", &doc);
    assert_eq!(doc["login"]["method"], "approle");
    assert_eq!(doc["cleanup"]["token_revoked"], true);
    assert_eq!(
        bao.token_count().await,
        before,
        "the check's token was left alive"
    );

    // A failing check revokes its token too.
    let out = check(&bao, &auth, &[MIX[8]], true).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        bao.token_count().await,
        before,
        "the check's token was left alive"
    );
}

/// A wrapped secret id is single use: the check spends it (as its help says), so a second
/// check (or the task) with the same wrapping token raises the alarm, exit 79.
#[tokio::test(flavor = "multi_thread")]
async fn check_spends_a_wrapped_secret_id() {
    let bao = seeded().await;
    bao.enable_approle().await;
    bao.write_policy("team", TEAM_POLICY).await;
    let role_id = bao.approle_role("web", &["team"], json!({})).await;
    let wrap = bao.wrapped_secret_id("web", "120s").await;
    let auth = [
        ("BATON_ROLE_ID", role_id.as_str()),
        ("BATON_WRAPPED_SECRET_ID", wrap.as_str()),
    ];
    let out = check(&bao, &auth, &[MIX[0]], false).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_no_value(&out, &[&wrap]);
    let out = check(&bao, &auth, &[MIX[0]], false).await;
    assert_eq!(out.status.code(), Some(79), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());

    let mut cmd = baton_env();
    cmd.args(["check", "--help"]);
    let help = text(&output(cmd).await.stdout);
    assert!(help.contains("SPENT by the check"), "{help}");
    assert!(help.contains("Usage: baton-env check [OPTIONS]"), "{help}");
    let mut cmd = baton_env();
    cmd.arg("--help");
    let help = text(&output(cmd).await.stdout);
    assert!(help.contains("baton-env check"), "{help}");
}

/// A dynamic secret's lease (OpenBao's database engine over a throwaway PostgreSQL):
/// reported renewable with its TTL, username and password of one lease in one read, and
/// revoked afterwards (the user dropped at once, not when its 300 s end): one by one under a
/// given token (which is kept), with the token under AppRole.
#[tokio::test(flavor = "multi_thread")]
async fn check_reports_a_dynamic_lease_and_revokes_it() {
    use crate::openbao::database::{Db, CREDS};
    let db = Db::start(Duration::from_secs(300), Duration::from_secs(600)).await;
    let refs = [
        ("DB_USER", "vault:database/creds/app#username"),
        ("DB_PASSWORD", "vault:database/creds/app#password"),
    ];
    let token = db.bao.token_with(&["root"]).await;
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", db.bao.url())
        .env("VAULT_TOKEN", &token)
        .args(["check", "--json"]);
    for (k, v) in refs {
        cmd.env(k, v);
    }
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_matches_schema("check.schema.json", &doc);
    for r in doc["references"].as_array().unwrap() {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["lease"]["renewable"], true, "{r}");
        assert_eq!(r["lease"]["ttl_s"], 300, "{r}");
        assert!(r.get("kv_version").is_none(), "{r}");
    }
    assert_eq!(doc["cleanup"]["leases_revoked"], 1);
    let issued = db.bao.issued_leases(CREDS);
    assert_eq!(issued.len(), 1, "one read for both keys");
    let lease = db.bao.audit_hash(&issued[0].lease_id).await;
    let revoked: Vec<_> = db.bao.lease_revokes().into_iter().map(|(l, _)| l).collect();
    assert_eq!(revoked, [Some(lease)]);
    assert!(db.bao.live_leases(CREDS).await.is_empty());
    assert!(db.users().is_empty(), "the user is dropped");
    assert!(db.bao.token_valid(&token).await, "a given token is kept");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains(&token), "{all}");
    assert!(!all.contains("v-token-app-"), "a username leaked: {all}");

    // AppRole: the token goes, its lease with it.
    let (role_id, secret_id) = db.approle("").await;
    let mut cmd = baton_env();
    cmd.env("VAULT_ADDR", db.bao.url())
        .env("BATON_ROLE_ID", &role_id)
        .env("BATON_SECRET_ID", &secret_id)
        .args(["check"]);
    for (k, v) in refs {
        cmd.env(k, v);
    }
    let out = output(cmd).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        stdout.contains("ttl 300s renewable") && stdout.contains("token revoked with its leases"),
        "{stdout}"
    );
    assert_eq!(db.creds_issued(), 2);
    let alive = db.bao.tokens_of_role("web").await;
    assert!(alive.is_empty(), "tokens left alive: {alive:?}");
    assert_eq!(
        db.bao.lease_revokes().len(),
        1,
        "no per-lease revoke under AppRole"
    );
    db.wait_all_leases_gone().await;
}
