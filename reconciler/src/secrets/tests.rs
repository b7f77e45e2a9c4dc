use super::*;
use crate::plan::{plan, Policy};
use crate::spec::{BatonBlock, Spec};
use serde_json::json;

fn spec(id: &str, app: Value, secrets: Option<Value>) -> Spec {
    let id = AppId::parse(id).unwrap();
    let mut app = app;
    app["id"] = json!(id.as_str());
    Spec {
        file: format!("apps{}.yaml", id.as_str()).into(),
        id,
        app,
        baton: BatonBlock {
            secrets,
            ..Default::default()
        },
    }
}

fn repo(specs: Vec<Spec>) -> Repo {
    let mut r = Repo::default();
    r.config.owner = "test".into();
    r.config.owner_explicit = true;
    for s in specs {
        r.specs.insert(s.id.clone(), std::sync::Arc::new(s));
    }
    r
}

fn web() -> Spec {
    spec(
        "/prod/web-api",
        json!({"cmd": "baton-env -- ./web", "env": {
            "DB_PASSWORD": "vault:database/creds/web#password",
            "DB_USER": "vault:database/creds/web#username",
            "API_KEY": "vault:secret/data/web#key?version=2",
            "URL": "postgres://{{ vault:secret/data/shared#user }}@db",
            "PLAIN": "vault:8200",
            "OTHER": {"secret": "x"}
        }}),
        None,
    )
}

#[test]
fn policy_grants_read_on_exactly_the_referenced_paths() {
    let d = desired(&repo(vec![web()]));
    assert!(d.issues.is_empty(), "{:?}", d.issues);
    let app = &d.apps["baton-prod-web-api"];
    let paths: Vec<&str> = app.paths.iter().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "database/creds/web",
            "secret/data/shared",
            "secret/data/web"
        ]
    );
    assert_eq!(policy_paths(&app.policy), app.paths);
    assert!(!app.policy.contains("create") && !app.policy.contains('*'));
    assert_eq!(app.role.token_policies, ["baton-prod-web-api"]);
    assert_eq!(app.role.secret_id_num_uses, 1);
    assert_eq!(app.role.secret_id_ttl, DEFAULT_SECRET_ID_TTL.as_secs());
}

#[test]
fn apps_without_references_get_nothing() {
    let plain = spec("/plain", json!({"cmd": "x", "env": {"A": "b"}}), None);
    assert!(desired(&repo(vec![plain])).apps.is_empty());
}

#[test]
fn secrets_block_sets_ttls_and_extra_policies() {
    let s = spec(
        "/a/job",
        json!({"cmd": "x"}),
        Some(
            json!({"tokenTtl": "5m", "tokenMaxTtl": 1800, "secretIdTtl": "30s", "policies": ["metrics-read"]}),
        ),
    );
    let d = desired(&repo(vec![s]));
    let r = &d.apps["baton-a-job"].role;
    assert_eq!(
        (r.token_ttl, r.token_max_ttl, r.secret_id_ttl),
        (300, 1800, 30)
    );
    assert_eq!(r.token_policies, ["baton-a-job", "metrics-read"]);
    // No references: the policy grants nothing.
    assert!(d.apps["baton-a-job"].paths.is_empty());
}

#[test]
fn bad_settings_and_bad_references_are_issues_not_objects() {
    let bad_block = spec(
        "/a/one",
        json!({"cmd": "x"}),
        Some(json!({"policies": ["root"]})),
    );
    let unknown = spec(
        "/a/two",
        json!({"cmd": "x"}),
        Some(json!({"tokenTTL": "5m"})),
    );
    let bad_ref = spec(
        "/a/three",
        json!({"cmd": "x", "env": {"P": "vault:secret/x"}}),
        None,
    );
    let zero = spec("/a/four", json!({"cmd": "x"}), Some(json!({"tokenTtl": 0})));
    let d = desired(&repo(vec![bad_block, unknown, bad_ref, zero]));
    assert!(d.apps.is_empty());
    assert_eq!(d.issues.len(), 4);
    assert!(d.issues.iter().any(|i| i.message.contains("env P")));
    // Never echo a value: the issue names the variable only.
    assert!(d.issues.iter().all(|i| !i.message.contains("secret/x")));
}

#[test]
fn colliding_names_get_no_vault_access() {
    let a = spec(
        "/a-b/c",
        json!({"cmd": "x", "env": {"P": "vault:kv/a#k"}}),
        None,
    );
    let b = spec(
        "/a/b-c",
        json!({"cmd": "x", "env": {"P": "vault:kv/b#k"}}),
        None,
    );
    let d = desired(&repo(vec![a, b]));
    assert!(d.apps.is_empty());
    assert_eq!(d.issues.len(), 2);
}

fn fresh() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("fresh-{n}")
    }
}

#[test]
fn new_app_creates_policy_and_role_with_a_fresh_role_id_and_env() {
    let mut r = repo(vec![web()]);
    let d = desired(&r);
    let live = LiveVault::default();
    let ids = role_ids(&d, &live, &mut fresh());
    let boot = Bootstrap {
        vault_addr: "https://vault:8200".into(),
        gatekeeper_url: "https://baton:8443/v1/secret-zero".into(),
        approle_mount: "approle".into(),
    };
    inject_env(&mut r, &d, &ids, &boot);
    let p = plan(&r, &[], &Policy::default());
    let vp = plan_vault(&d, &live, &ids, &r, &p, &[]);
    assert_eq!(vp.before_apps.len(), 2);
    assert!(vp.after_apps.is_empty());
    let role = vp
        .before_apps
        .iter()
        .find(|c| c.kind == ObjectKind::Role)
        .unwrap();
    assert_eq!(role.action, Action::Create);
    assert_eq!(role.body.as_ref().unwrap()["role_id"], "fresh-1");
    assert_eq!(role.body.as_ref().unwrap()["secret_id_num_uses"], 1);
    // The body sent to the scheduler carries the bootstrap settings, no secret.
    let body = p.changes().next().unwrap().body.clone().unwrap();
    assert_eq!(body["env"]["BATON_ROLE_ID"], "fresh-1");
    assert_eq!(body["env"]["BATON_AUTH"], "gatekeeper");
    assert_eq!(body["env"]["BATON_APPROLE_ROLE"], "baton-prod-web-api");
    assert_eq!(body["env"]["VAULT_ADDR"], "https://vault:8200");
    assert_eq!(
        body["env"]["DB_PASSWORD"],
        "vault:database/creds/web#password"
    );
    let text = vault_plan_text(&vp);
    assert!(
        text.contains("+ create policy baton-prod-web-api"),
        "{text}"
    );
    assert!(text.contains("read database/creds/web"), "{text}");
}

fn live_of(d: &Desired) -> LiveVault {
    let mut live = LiveVault::default();
    for (n, a) in &d.apps {
        live.policies.insert(n.clone(), a.policy.clone());
        live.roles.insert(
            n.clone(),
            LiveRole {
                settings: a.role.clone(),
                role_id: "live-id".into(),
            },
        );
    }
    live
}

#[test]
fn in_sync_is_empty_and_keeps_the_live_role_id() {
    let r = repo(vec![web()]);
    let d = desired(&r);
    let live = live_of(&d);
    let ids = role_ids(&d, &live, &mut fresh());
    assert_eq!(ids["baton-prod-web-api"], "live-id");
    let p = plan(&r, &[], &Policy::default());
    assert!(plan_vault(&d, &live, &ids, &r, &p, &[]).is_empty());
}

#[test]
fn changed_paths_and_ttls_are_updates_with_details() {
    let r = repo(vec![web()]);
    let d = desired(&r);
    let mut live = live_of(&d);
    live.policies.insert(
        "baton-prod-web-api".into(),
        policy_text(
            &AppId::parse("/prod/web-api").unwrap(),
            &["secret/data/old".to_string()].into(),
        ),
    );
    live.roles
        .get_mut("baton-prod-web-api")
        .unwrap()
        .settings
        .token_ttl = 99;
    let ids = role_ids(&d, &live, &mut fresh());
    let p = plan(&r, &[], &Policy::default());
    let vp = plan_vault(&d, &live, &ids, &r, &p, &[]);
    let text = vault_plan_text(&vp);
    assert!(text.contains("~ update policy"), "{text}");
    assert!(text.contains("- read secret/data/old"), "{text}");
    assert!(text.contains("+ read database/creds/web"), "{text}");
    assert!(text.contains("token_ttl: 99s -> 900s"), "{text}");
    // An update never resets the role id.
    let role = vp
        .before_apps
        .iter()
        .find(|c| c.kind == ObjectKind::Role)
        .unwrap();
    assert!(role.body.as_ref().unwrap().get("role_id").is_none());
}

#[test]
fn pruned_app_loses_its_objects_after_the_app_is_deleted() {
    // Live: two secret apps and their objects; the repo keeps one.
    let keep = spec(
        "/keep",
        json!({"cmd": "x", "env": {"P": "vault:kv/k#k"}}),
        None,
    );
    let gone = spec(
        "/gone",
        json!({"cmd": "x", "env": {"P": "vault:kv/g#k"}}),
        None,
    );
    let before = repo(vec![keep.clone(), gone.clone()]);
    let live = live_of(&desired(&before));
    let owned = |id: &str| json!({"id": id, "cmd": "x", "labels": {"baton.dev/owner": "test"}});
    let live_apps = vec![owned("/keep"), owned("/gone")];
    let ids: Vec<AppId> = ["/keep", "/gone"]
        .iter()
        .map(|s| AppId::parse(s).unwrap())
        .collect();

    let mut after = repo(vec![keep]);
    after.config.prune.max_deletes = 5;
    let d = desired(&after);
    let p = plan(&after, &live_apps, &Policy::default());
    let vp = plan_vault(
        &d,
        &live,
        &role_ids(&d, &live, &mut fresh()),
        &after,
        &p,
        &ids,
    );
    let names: Vec<(ObjectKind, &str, Action)> = vp
        .after_apps
        .iter()
        .map(|c| (c.kind, c.name.as_str(), c.action))
        .collect();
    assert_eq!(
        names,
        [
            (ObjectKind::Role, "baton-gone", Action::Delete),
            (ObjectKind::Policy, "baton-gone", Action::Delete)
        ]
    );

    // A held deletion (budget 0) keeps the objects; so does an incomplete repo.
    after.config.prune.max_deletes = 0;
    after.config.prune.max_percent = 0.0;
    let p = plan(&after, &live_apps, &Policy::default());
    assert!(!p.held.is_empty());
    let vp = plan_vault(
        &d,
        &live,
        &role_ids(&d, &live, &mut fresh()),
        &after,
        &p,
        &ids,
    );
    assert!(vp.after_apps.is_empty());
    after.incomplete = true;
    let vp = plan_vault(
        &d,
        &live,
        &role_ids(&d, &live, &mut fresh()),
        &after,
        &p,
        &ids,
    );
    assert!(vp.after_apps.is_empty());
}

#[test]
fn invalid_spec_keeps_its_objects() {
    let r0 = repo(vec![web()]);
    let live = live_of(&desired(&r0));
    let mut r = repo(vec![]);
    r.invalid.insert(AppId::parse("/prod/web-api").unwrap());
    let d = desired(&r);
    let p = plan(&r, &[], &Policy::default());
    assert!(plan_vault(&d, &live, &BTreeMap::new(), &r, &p, &[]).is_empty());
}

#[test]
fn spec_values_win_over_injected_ones() {
    let mut s = web();
    s.app["env"]["VAULT_ADDR"] = json!("https://other:8200");
    let mut r = repo(vec![s]);
    let d = desired(&r);
    let boot = Bootstrap {
        vault_addr: "https://vault:8200".into(),
        gatekeeper_url: "u".into(),
        approle_mount: "approle".into(),
    };
    inject_env(&mut r, &d, &BTreeMap::new(), &boot);
    let env = &r.specs.values().next().unwrap().app["env"];
    assert_eq!(env["VAULT_ADDR"], "https://other:8200");
    assert!(env.get("BATON_ROLE_ID").is_none());
}

#[test]
fn without_vault_secret_apps_are_blocked_not_deployed_nor_deleted() {
    let plain = spec("/plain", json!({"cmd": "x"}), None);
    let mut r = repo(vec![web(), plain]);
    let d = desired(&r);
    assert_eq!(block_without_vault(&mut r, &d), 1);
    let web_id = AppId::parse("/prod/web-api").unwrap();
    assert!(!r.specs.contains_key(&web_id) && r.invalid.contains(&web_id));
    assert!(!r.is_valid());
    let diag = r
        .diagnostics
        .iter()
        .find(|d| d.app.as_ref() == Some(&web_id));
    assert!(diag.unwrap().message.contains("no Vault is configured"));
    // The live app is neither updated nor deleted; the plain app still deploys.
    let live =
        vec![json!({"id": "/prod/web-api", "cmd": "old", "labels": {"baton.dev/owner": "test"}})];
    let p = plan(&r, &live, &Policy::default());
    let touched: Vec<&str> = p.changes().map(|c| c.app.as_str()).collect();
    assert_eq!(touched, ["/plain"]);
}

#[test]
fn live_bootstrap_env_is_carried_only_where_the_spec_is_silent() {
    let mut r = repo(vec![web()]);
    let d = desired(&r);
    let live = vec![json!({"id": "/prod/web-api", "env": {
        "BATON_ROLE_ID": "live-role-id", "BATON_AUTH": "gatekeeper", "DB_USER": "changed", "X": "y"
    }})];
    carry_live_env(&mut r, &d, &live, &BOOTSTRAP_ENV);
    let env = &r.specs[&AppId::parse("/prod/web-api").unwrap()].app["env"];
    assert_eq!(env["BATON_ROLE_ID"], "live-role-id");
    assert_eq!(env["BATON_AUTH"], "gatekeeper");
    // Not a bootstrap name, or set by the spec: left as the spec says.
    assert_eq!(env["DB_USER"], "vault:database/creds/web#username");
    assert!(env.get("X").is_none());
}

/// On a KV v2 mount the sidecar reads `<mount>data/<rest>`: the policy grants that path for a
/// reference written without `data/`, and the app is told the versions of the mounts it reads.
#[test]
fn kv2_paths_written_without_data_are_granted_where_the_sidecar_reads() {
    let app = spec(
        "/shop/api",
        json!({"cmd": "baton-env -- ./api", "env": {
            "A": "vault:secret/api#a",
            "B": "vault:secret/data/api#b",
            "C": "vault:kv1/api#c",
            "D": "vault:database/creds/api#password",
            "E": "vault:team/kv/api#e"
        }}),
        None,
    );
    let mut r = repo(vec![app]);
    let mut d = desired(&r);
    let mounts: KvMounts = [
        ("secret/".to_string(), 2),
        ("kv1/".to_string(), 1),
        ("team/kv/".to_string(), 2),
    ]
    .into();
    apply_kv_mounts(&mut d, &mounts);
    let a = &d.apps["baton-shop-api"];
    let granted: Vec<String> = policy_paths(&a.policy).into_iter().collect();
    assert_eq!(
        granted,
        [
            "database/creds/api",
            "kv1/api",
            "secret/data/api",
            "team/kv/data/api"
        ]
    );
    assert_eq!(a.kv_versions, mounts);

    let boot = Bootstrap {
        vault_addr: "http://vault:8200".into(),
        gatekeeper_url: "http://baton/v1/secret-zero".into(),
        approle_mount: "approle".into(),
    };
    inject_env(&mut r, &d, &BTreeMap::new(), &boot);
    let env = &r.specs[&AppId::parse("/shop/api").unwrap()].app["env"];
    assert_eq!(env[env::KV_VERSIONS], "kv1=1,secret=2,team/kv=2");

    // Mounts unknown: granted as written, nothing injected.
    let mut unknown = desired(&repo(vec![web()]));
    let before = unknown.apps["baton-prod-web-api"].policy.clone();
    apply_kv_mounts(&mut unknown, &KvMounts::new());
    assert_eq!(unknown.apps["baton-prod-web-api"].policy, before);
    assert!(unknown.apps["baton-prod-web-api"].kv_versions.is_empty());
}

#[test]
fn kv_mounts_are_read_from_vault_and_rustyvault_answers() {
    let vault = json!({
        "request_id": "x",
        "data": {
            "secret/": {"type": "kv", "options": {"version": "2"}},
            "kv1/": {"type": "kv", "options": null},
            "old/": {"type": "generic"},
            "database/": {"type": "database"},
            "sys/": {"type": "system"}
        },
        "secret/": {"type": "kv", "options": {"version": "2"}}
    });
    let expected: KvMounts = [
        ("kv1/".to_string(), 1),
        ("old/".to_string(), 1),
        ("secret/".to_string(), 2),
    ]
    .into();
    assert_eq!(crate::vault_admin::kv_mounts_from(&vault), expected);
    // RustyVault: the bare map, no envelope.
    let bare = json!({"secret/": {"type": "kv", "options": null}});
    assert_eq!(
        crate::vault_admin::kv_mounts_from(&bare),
        KvMounts::from([("secret/".to_string(), 1)])
    );
}
