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

/// The desired objects with no extra policy allowed (the default).
fn desired(r: &Repo) -> Desired {
    super::desired(r, &AllowedPolicies::default())
}

fn allowed(names: &[&str]) -> AllowedPolicies {
    AllowedPolicies::new(names).unwrap()
}

/// `plan_vault` without `--allow-deletes`.
fn plan_vault(
    d: &Desired,
    live: &LiveVault,
    ids: &BTreeMap<String, String>,
    r: &Repo,
    p: &Plan,
    live_apps: &[AppId],
) -> VaultPlan {
    super::plan_vault(d, live, ids, r, p, live_apps, None)
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
    let app = &d.apps["baton-test_prod_web-api"];
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
    assert_eq!(app.role.token_policies, ["baton-test_prod_web-api"]);
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
    let d = super::desired(&repo(vec![s]), &allowed(&["metrics-read"]));
    let r = &d.apps["baton-test_a_job"].role;
    assert_eq!(
        (r.token_ttl, r.token_max_ttl, r.secret_id_ttl),
        (300, 1800, 30)
    );
    assert_eq!(r.token_policies, ["baton-test_a_job", "metrics-read"]);
    // No references: the policy grants nothing.
    assert!(d.apps["baton-test_a_job"].paths.is_empty());
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

/// `/a-b/c` and `/a/b-c` once shared `baton-a-b-c`; with `_` between segments (which neither
/// app ids nor owners can hold) every app of every owner has a name of its own.
#[test]
fn apps_that_once_collided_get_names_of_their_own() {
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
    assert!(d.issues.is_empty(), "{:?}", d.issues);
    let names: Vec<&str> = d.apps.keys().map(String::as_str).collect();
    assert_eq!(names, ["baton-test_a-b_c", "baton-test_a_b-c"]);
}

fn fresh() -> impl FnMut(&str) -> String {
    let mut n = 0;
    move |name| {
        n += 1;
        new_role_id(name, &format!("fresh-{n}"))
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
    assert_eq!(
        role.body.as_ref().unwrap()["role_id"],
        "baton-test_prod_web-api:fresh-1"
    );
    assert_eq!(role.body.as_ref().unwrap()["secret_id_num_uses"], 1);
    // The body sent to the scheduler carries the bootstrap settings, no secret.
    let body = p.changes().next().unwrap().body.clone().unwrap();
    assert_eq!(
        body["env"]["BATON_ROLE_ID"],
        "baton-test_prod_web-api:fresh-1"
    );
    assert_eq!(body["env"]["BATON_AUTH"], "gatekeeper");
    assert_eq!(body["env"]["BATON_APPROLE_ROLE"], "baton-test_prod_web-api");
    assert_eq!(body["env"]["VAULT_ADDR"], "https://vault:8200");
    assert_eq!(
        body["env"]["DB_PASSWORD"],
        "vault:database/creds/web#password"
    );
    let text = vault_plan_text(&vp);
    assert!(
        text.contains("+ create policy baton-test_prod_web-api"),
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
                role_id: new_role_id(n, "live"),
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
    assert_eq!(
        ids["baton-test_prod_web-api"],
        "baton-test_prod_web-api:live"
    );
    let p = plan(&r, &[], &Policy::default());
    assert!(plan_vault(&d, &live, &ids, &r, &p, &[]).is_empty());
}

#[test]
fn changed_paths_and_ttls_are_updates_with_details() {
    let r = repo(vec![web()]);
    let d = desired(&r);
    let mut live = live_of(&d);
    live.policies.insert(
        "baton-test_prod_web-api".into(),
        policy_text(
            "test",
            &AppId::parse("/prod/web-api").unwrap(),
            &["secret/data/old".to_string()].into(),
        ),
    );
    live.roles
        .get_mut("baton-test_prod_web-api")
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
            (ObjectKind::Role, "baton-test_gone", Action::Delete),
            (ObjectKind::Policy, "baton-test_gone", Action::Delete)
        ]
    );
    // The app still runs: its objects wait for its deletion to converge.
    assert!(vp.after_apps.iter().all(|c| c.waits_for_app));
    // Gone already (not live): nothing to wait for.
    let vp = plan_vault(
        &d,
        &live,
        &role_ids(&d, &live, &mut fresh()),
        &after,
        &plan(&after, &live_apps[..1], &Policy::default()),
        &ids[..1],
    );
    assert_eq!(vp.after_apps.len(), 2);
    assert!(vp.after_apps.iter().all(|c| !c.waits_for_app));

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
        "BATON_ROLE_ID": "live-role-id", "BATON_AUTH": "gatekeeper", "DB_USER": "changed", "X": "y",
        "BATON_APPROLE_ROLE": "baton-test_prod_web-api"
    }})];
    carry_live_env(&mut r, &d, &live, &BOOTSTRAP_ENV);
    let env = &r.specs[&AppId::parse("/prod/web-api").unwrap()].app["env"];
    assert_eq!(env["BATON_ROLE_ID"], "live-role-id");
    assert_eq!(env["BATON_AUTH"], "gatekeeper");
    assert_eq!(env["BATON_APPROLE_ROLE"], "baton-test_prod_web-api");
    // Not a bootstrap name, or set by the spec: left as the spec says.
    assert_eq!(env["DB_USER"], "vault:database/creds/web#username");
    assert!(env.get("X").is_none());
}

/// An app deployed under the earlier naming (`baton-prod-web-api`): `baton plan` without
/// Vault shows the new role name, and no longer carries the old role's id.
#[test]
fn an_app_on_an_old_role_shows_the_new_role_in_the_plan() {
    let mut r = repo(vec![web()]);
    let d = desired(&r);
    let live = vec![json!({"id": "/prod/web-api", "env": {
        "BATON_ROLE_ID": "0f3c-old", "BATON_AUTH": "gatekeeper",
        "BATON_APPROLE_ROLE": "baton-prod-web-api"
    }})];
    carry_live_env(&mut r, &d, &live, &BOOTSTRAP_ENV);
    let env = &r.specs[&AppId::parse("/prod/web-api").unwrap()].app["env"];
    assert_eq!(env["BATON_APPROLE_ROLE"], "baton-test_prod_web-api");
    assert!(env.get("BATON_ROLE_ID").is_none(), "{env}");
    assert_eq!(env["BATON_AUTH"], "gatekeeper");
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
    let a = &d.apps["baton-test_shop_api"];
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
    let before = unknown.apps["baton-test_prod_web-api"].policy.clone();
    apply_kv_mounts(&mut unknown, &KvMounts::new());
    assert_eq!(unknown.apps["baton-test_prod_web-api"].policy, before);
    assert!(unknown.apps["baton-test_prod_web-api"]
        .kv_versions
        .is_empty());
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
    assert_eq!(super::kv_mounts_from(&vault), expected);
    // RustyVault: the bare map, no envelope.
    let bare = json!({"secret/": {"type": "kv", "options": null}});
    assert_eq!(
        super::kv_mounts_from(&bare),
        KvMounts::from([("secret/".to_string(), 1)])
    );
}

/// Names are owner-scoped and give back exactly their (owner, app): the same app id under two
/// owners (QA and PROD on one Vault) never shares a name, and no name of one owner starts with
/// another owner's prefix (a Vault ACL glob on the prefix confines a reconciler to its own).
#[test]
fn names_are_owner_scoped_and_reversible() {
    let cases = [
        ("shop", "/prod/web-api", "baton-shop_prod_web-api"),
        ("shop-qa", "/prod/web-api", "baton-shop-qa_prod_web-api"),
        ("team", "/b-x", "baton-team_b-x"),
        ("team-b", "/x", "baton-team-b_x"),
        ("a.b", "/v1.2/c", "baton-a.b_v1.2_c"),
    ];
    for (owner, app, name) in cases {
        let id = AppId::parse(app).unwrap();
        assert_eq!(object_name(owner, &id), name, "{owner} {app}");
        assert_eq!(app_of_name(owner, name), Some(id.clone()), "{name}");
        for (other, _, _) in cases.iter().filter(|(o, _, _)| *o != owner) {
            assert_eq!(
                app_of_name(other, name),
                None,
                "{other} must not claim {name}"
            );
            assert!(
                !name.starts_with(&owner_prefix(other)),
                "{other} glob covers {name}"
            );
        }
    }
    // Names Baton never gives, even under the owner's prefix.
    for name in [
        "baton-shop_",
        "baton-shop_Web",
        "baton-shop__x",
        "baton-shop_x_",
        "baton-shop",
        "baton-reconciler",
        "shop_x",
    ] {
        assert_eq!(app_of_name("shop", name), None, "{name}");
    }
}

#[test]
fn role_ids_baton_sets_name_their_role() {
    let cases = [
        ("baton-t_web", "baton-t_web:0f3c", true),
        ("baton-t_web", "baton-t_web:", false),
        ("baton-t_web", "baton-t_webx:0f3c", false),
        ("baton-t_web", "baton-t_we:b:0f3c", false),
        ("baton-t_web", "7a6aca58-25db-ef01-7c51-617e2216c5f7", false),
        ("baton-t_web", "", false),
    ];
    for (role, id, ours) in cases {
        assert_eq!(is_baton_role_id(role, id), ours, "{role} {id}");
    }
    assert!(is_baton_role_id(
        "baton-t_web",
        &new_role_id("baton-t_web", "u")
    ));
}

/// The operator's allow-list: names trimmed and case-insensitive, `root` never.
#[test]
fn allow_list_is_trimmed_case_insensitive_and_never_root() {
    let ok = AllowedPolicies::new([" Metrics-Read", "shared ", "", "SHARED"]).unwrap();
    assert_eq!(ok.names().collect::<Vec<_>>(), ["metrics-read", "shared"]);
    assert!(ok.allows("metrics-read") && ok.allows(" METRICS-read ") && !ok.allows("metrics"));
    for bad in ["root", " Root", "ROOT ", "\troot"] {
        let e = AllowedPolicies::new([bad]).unwrap_err();
        assert!(e.contains("`root` can never be allowed"), "{bad}: {e}");
    }
    assert!(!AllowedPolicies::default().allows("default"));
}

/// `baton.secrets.policies` against the allow-list: (allowed, asked) -> the role's policies, or
/// the issue's words and JSON pointer.
#[test]
fn extra_policies_must_be_allowed() {
    type Want = Result<&'static [&'static str], (&'static [&'static str], &'static str)>;
    let cases: [(&[&str], Value, Want); 8] = [
        (
            &[],
            json!(["metrics-read"]),
            Err((
                &[
                    "`metrics-read`",
                    "has not allowed (none is allowed)",
                    "--vault-allowed-policies",
                    "BATON_VAULT_ALLOWED_POLICIES",
                    "vault-allowed-policies",
                ],
                "/baton/secrets/policies/0",
            )),
        ),
        (
            &["metrics-read"],
            json!(["metrics-read"]),
            Ok(&["metrics-read"]),
        ),
        (
            &["Metrics-Read "],
            json!([" metrics-READ"]),
            Ok(&["metrics-read"]),
        ),
        (
            &["a"],
            json!(["a", "b"]),
            Err((&["`b`", "(allowed: a)"], "/baton/secrets/policies/1")),
        ),
        (&["a", "b"], json!(["b", "a", "B"]), Ok(&["b", "a"])),
        (
            &["a"],
            json!(["Root"]),
            Err((
                &["`root`, which is never granted"],
                "/baton/secrets/policies/0",
            )),
        ),
        (
            &[],
            json!([" root"]),
            Err((
                &["`root`, which is never granted"],
                "/baton/secrets/policies/0",
            )),
        ),
        (
            &["a"],
            json!(["a", ""]),
            Err((
                &["must be a list of policy names"],
                "/baton/secrets/policies",
            )),
        ),
    ];
    for (allow, asked, want) in cases {
        let s = spec(
            "/a/job",
            json!({"cmd": "x"}),
            Some(json!({"policies": asked})),
        );
        let d = super::desired(&repo(vec![s]), &allowed(allow));
        match want {
            Ok(extra) => {
                assert!(d.issues.is_empty(), "{allow:?} {asked}: {:?}", d.issues);
                let mut want = vec!["baton-test_a_job"];
                want.extend(extra);
                assert_eq!(
                    d.apps["baton-test_a_job"].role.token_policies, want,
                    "{asked}"
                );
            }
            Err((words, pointer)) => {
                assert!(d.apps.is_empty(), "{allow:?} {asked}");
                let issue = &d.issues[0];
                for w in words {
                    assert!(
                        issue.message.contains(w),
                        "{asked}: `{w}` not in {}",
                        issue.message
                    );
                }
                assert_eq!(issue.pointer, pointer, "{asked}");
            }
        }
    }
}

/// An app asking for a policy the operator did not allow is blocked like an invalid spec: its
/// live app is neither updated nor deleted, and the diagnostic points at the policy.
#[test]
fn an_app_asking_for_more_is_left_untouched() {
    let greedy = spec(
        "/greedy",
        json!({"cmd": "new", "env": {"P": "vault:kv/g#k"}}),
        Some(json!({"policies": ["baton-reconciler"]})),
    );
    let mut r = repo(vec![greedy, spec("/plain", json!({"cmd": "x"}), None)]);
    r.config.prune.max_deletes = 5;
    let d = desired(&r);
    block_issues(&mut r, &d);
    let id = AppId::parse("/greedy").unwrap();
    assert!(r.invalid.contains(&id) && !r.specs.contains_key(&id));
    let diag = r
        .diagnostics
        .iter()
        .find(|x| x.app.as_ref() == Some(&id))
        .unwrap();
    assert_eq!(diag.pointer, "/baton/secrets/policies/0");
    assert!(
        diag.message.contains("`baton-reconciler`"),
        "{}",
        diag.message
    );
    let live = vec![json!({"id": "/greedy", "cmd": "old", "labels": {"baton.dev/owner": "test"}})];
    let p = plan(&r, &live, &Policy::default());
    let touched: Vec<&str> = p.changes().map(|c| c.app.as_str()).collect();
    assert_eq!(touched, ["/plain"]);
}

fn policy_of(owner: &str, app: &str) -> String {
    policy_text(
        owner,
        &AppId::parse(app).unwrap(),
        &["kv/x".to_string()].into(),
    )
}

fn role_with(role_id: &str) -> LiveRole {
    LiveRole {
        settings: RoleSettings {
            token_policies: vec![],
            token_ttl: 1,
            token_max_ttl: 1,
            secret_id_num_uses: 1,
            secret_id_ttl: 1,
        },
        role_id: role_id.into(),
    }
}

/// Which objects are this owner's: name and marker must agree; everything else named
/// `baton-*` is unmanaged with a reason; other names are none of Baton's business.
#[test]
fn only_marked_objects_under_the_owners_prefix_are_ours() {
    let old_header = "# Managed by Baton for /web; changes are overwritten.\npath \"kv/x\" {\n  capabilities = [\"read\"]\n}\n";
    let policies: [(&str, Option<String>, Option<&str>); 9] = [
        ("baton-test_web", Some(policy_of("test", "/web")), None),
        (
            "baton-test_old",
            Some(old_header.into()),
            Some("no Baton marker"),
        ),
        (
            "baton-test_web2",
            Some(policy_of("test", "/web")),
            Some("no Baton marker"),
        ),
        (
            "baton-test_web3",
            Some(policy_of("other", "/web3")),
            Some("no Baton marker"),
        ),
        (
            "baton-test_Bad",
            Some(policy_of("test", "/bad")),
            Some("not a name Baton gives"),
        ),
        ("baton-reconciler", None, Some("not an owner-scoped name")),
        ("baton-web", None, Some("not an owner-scoped name")),
        ("baton-other_web", None, Some("another owner (`other`)")),
        ("default", None, None),
    ];
    let roles: [(&str, Option<&str>, Option<&str>); 6] = [
        ("baton-test_web", Some("baton-test_web:1"), None),
        (
            "baton-test_uuid",
            Some("7a6aca58-25db-ef01-7c51-617e2216c5f7"),
            Some("role id is not one this Baton set"),
        ),
        (
            "baton-test_copy",
            Some("baton-test_web:1"),
            Some("role id is not one this Baton set"),
        ),
        ("baton-teamb-x", None, Some("not an owner-scoped name")),
        ("baton-test-qa_web", None, Some("another owner (`test-qa`)")),
        ("app-role", None, None),
    ];
    let mut observed = Observed::default();
    for (name, text, _) in &policies {
        observed.policy_names.push(name.to_string());
        if let Some(t) = text {
            observed.policies.insert(name.to_string(), t.clone());
        }
    }
    for (name, id, _) in &roles {
        observed.role_names.push(name.to_string());
        if let Some(id) = id {
            observed.roles.insert(name.to_string(), role_with(id));
        }
    }
    // Listed, then gone before it was read: neither ours nor reported.
    observed.policy_names.push("baton-test_gone".into());
    let live = classify("test", observed);
    assert_eq!(live.policies.keys().collect::<Vec<_>>(), ["baton-test_web"]);
    assert_eq!(live.roles.keys().collect::<Vec<_>>(), ["baton-test_web"]);
    let expect = (policies
        .iter()
        .map(|(n, _, r)| (ObjectKind::Policy, *n, *r)))
    .chain(roles.iter().map(|(n, _, r)| (ObjectKind::Role, *n, *r)));
    for (kind, name, reason) in expect {
        let found = live
            .unmanaged
            .iter()
            .find(|u| u.kind == kind && u.name == name);
        match (reason, found) {
            (None, None) => {}
            (Some(r), Some(u)) => assert!(u.reason.contains(r), "{name}: {}", u.reason),
            (r, u) => panic!("{kind:?} {name}: expected {r:?}, found {u:?}"),
        }
    }
    assert_eq!(live.unmanaged.len(), 11);
}

/// A name held by an object that is not ours blocks the app: no write over it, no deploy, and
/// the app's own objects (here its policy) are kept.
#[test]
fn a_name_taken_by_a_foreign_object_blocks_the_app() {
    let mut r = repo(vec![web()]);
    let mut d = desired(&r);
    let name = "baton-test_prod_web-api";
    let mut live = LiveVault::default();
    live.policies
        .insert(name.into(), d.apps[name].policy.clone());
    live.unmanaged.push(Unmanaged {
        kind: ObjectKind::Role,
        name: name.into(),
        reason: "its role id is not one this Baton set".into(),
    });
    // Without claiming first, plan_vault still writes nothing over it.
    let p = plan(&r, &[], &Policy::default());
    let vp = plan_vault(&d, &live, &BTreeMap::new(), &r, &p, &[]);
    assert!(vp.is_empty(), "{vp:?}");
    assert_eq!(vp.issues.len(), 1);
    assert_eq!(vp.unmanaged, live.unmanaged);

    claim_names(&mut d, &live);
    assert!(d.apps.is_empty());
    let msg = &d.issues[0].message;
    assert!(
        msg.contains("AppRole role `baton-test_prod_web-api`") && msg.contains("not this Baton's"),
        "{msg}"
    );
    block_issues(&mut r, &d);
    let owned = |id: &str| json!({"id": id, "cmd": "x", "labels": {"baton.dev/owner": "test"}});
    let p = plan(&r, &[owned("/prod/web-api")], &Policy::default());
    assert!(p.is_empty(), "{:?}", p.waves);
    let vp = plan_vault(
        &d,
        &live,
        &BTreeMap::new(),
        &r,
        &p,
        &[AppId::parse("/prod/web-api").unwrap()],
    );
    assert!(vp.is_empty(), "its own policy is kept: {vp:?}");
    let text = vault_plan_text(&vp);
    assert!(text.starts_with("Vault: in sync\n"), "{text}");
    assert!(
        text.contains("unmanaged (never touched): approle baton-test_prod_web-api: its role id"),
        "{text}"
    );
}

/// `count` owned apps `/s0..` with Vault objects (policy and role each).
fn owned_vault(count: usize) -> (LiveVault, Vec<AppId>) {
    let mut live = LiveVault::default();
    let mut ids = Vec::new();
    for i in 0..count {
        let id = AppId::parse(&format!("/s{i}")).unwrap();
        let name = object_name("test", &id);
        live.policies
            .insert(name.clone(), policy_of("test", id.as_str()));
        live.roles
            .insert(name.clone(), role_with(&new_role_id(&name, "x")));
        ids.push(id);
    }
    (live, ids)
}

/// Vault deletions fall under the repo's delete budget. Objects of apps this plan deletes
/// follow their app (its deletion was budgeted); others count: over the budget none goes and
/// each is held, `--allow-deletes` lifts it; an empty repo deletes nothing.
#[test]
fn vault_deletions_are_budgeted() {
    struct Case {
        what: &'static str,
        /// Apps with Vault objects / of them still live (owned) in Marathon.
        vault: usize,
        live: usize,
        /// Other owned live apps (no Vault), to size the app budget.
        plain: usize,
        max_deletes: usize,
        max_percent: f64,
        allow: Option<usize>,
        empty_repo: bool,
        /// `owner:` set in baton.yaml.
        explicit_owner: bool,
        deleted: usize,
        held: usize,
    }
    let cases = [
        Case {
            what: "6 orphans over maxDeletes 5",
            vault: 6,
            live: 0,
            plain: 1,
            max_deletes: 5,
            max_percent: 0.0,
            allow: None,
            empty_repo: false,
            explicit_owner: true,
            deleted: 0,
            held: 12,
        },
        Case {
            what: "5 orphans within maxDeletes 5",
            vault: 5,
            live: 0,
            plain: 1,
            max_deletes: 5,
            max_percent: 0.0,
            allow: None,
            empty_repo: false,
            explicit_owner: true,
            deleted: 10,
            held: 0,
        },
        Case {
            what: "--allow-deletes 6",
            vault: 6,
            live: 0,
            plain: 1,
            max_deletes: 5,
            max_percent: 0.0,
            allow: Some(6),
            empty_repo: false,
            explicit_owner: true,
            deleted: 12,
            held: 0,
        },
        Case {
            what: "an empty repo",
            vault: 2,
            live: 0,
            plain: 0,
            max_deletes: 5,
            max_percent: 0.0,
            allow: Some(9),
            empty_repo: true,
            explicit_owner: true,
            deleted: 0,
            held: 4,
        },
        // 4 of 10 owned apps deleted: the app budget (50% of 10) allows it; 50% of the 4 apps
        // with Vault objects would not, but their objects follow the budgeted app deletions.
        Case {
            what: "objects follow budgeted app deletions",
            vault: 4,
            live: 4,
            plain: 6,
            max_deletes: 0,
            max_percent: 50.0,
            allow: None,
            empty_repo: false,
            explicit_owner: true,
            deleted: 8,
            held: 0,
        },
        // Without `owner:` in baton.yaml nothing is deleted in Vault either, budget or not.
        Case {
            what: "no explicit owner",
            vault: 2,
            live: 0,
            plain: 1,
            max_deletes: 5,
            max_percent: 0.0,
            allow: Some(9),
            empty_repo: false,
            explicit_owner: false,
            deleted: 0,
            held: 4,
        },
        // Held app deletions keep their objects (nothing to hold on the Vault side).
        Case {
            what: "held app deletions keep their objects",
            vault: 4,
            live: 4,
            plain: 6,
            max_deletes: 0,
            max_percent: 10.0,
            allow: None,
            empty_repo: false,
            explicit_owner: true,
            deleted: 0,
            held: 0,
        },
    ];
    for c in cases {
        let (live, ids) = owned_vault(c.vault);
        let mut live_apps: Vec<Value> = ids[..c.live]
            .iter()
            .map(|id| json!({"id": id.as_str(), "cmd": "x", "labels": {"baton.dev/owner": "test"}}))
            .collect();
        let plain: Vec<Spec> = (0..c.plain)
            .map(|i| spec(&format!("/p{i}"), json!({"cmd": "x"}), None))
            .collect();
        for s in &plain {
            live_apps.push(
                json!({"id": s.id.as_str(), "cmd": "x", "labels": {"baton.dev/owner": "test"}}),
            );
        }
        let mut r = repo(if c.empty_repo { vec![] } else { plain });
        r.config.prune.max_deletes = c.max_deletes;
        r.config.prune.max_percent = c.max_percent;
        r.config.owner_explicit = c.explicit_owner;
        let policy = Policy {
            allow_deletes: c.allow,
            ..Policy::default()
        };
        let p = plan(&r, &live_apps, &policy);
        let live_ids: Vec<AppId> = live_apps
            .iter()
            .map(|a| AppId::parse(a["id"].as_str().unwrap()).unwrap())
            .collect();
        let d = desired(&r);
        let vp = super::plan_vault(&d, &live, &BTreeMap::new(), &r, &p, &live_ids, c.allow);
        assert_eq!(
            (vp.after_apps.len(), vp.held.len()),
            (c.deleted, c.held),
            "{}: {vp:?}",
            c.what
        );
        if c.held > 0 {
            let text = vault_plan_text(&vp);
            assert!(
                text.contains(&format!("held {} Vault deletes", c.held)),
                "{}: {text}",
                c.what
            );
            if !c.explicit_owner {
                assert!(
                    vp.held[0].reason.contains("no `owner:`"),
                    "{}",
                    vp.held[0].reason
                );
            } else if !c.empty_repo {
                assert!(
                    vp.held[0]
                        .reason
                        .contains(&format!("--allow-deletes {}", c.vault)),
                    "{}",
                    vp.held[0].reason
                );
            }
        }
    }
}

/// Objects that are not this Baton's are never planned for deletion, whatever the repo says.
#[test]
fn unmanaged_objects_are_never_deleted() {
    let mut observed = Observed::default();
    for name in [
        "baton-reconciler",
        "baton-teamb-x",
        "baton-other_web",
        "baton-test_x",
    ] {
        observed.policy_names.push(name.into());
        observed.role_names.push(name.into());
    }
    // Under our prefix but unmarked (hand-made) and with a hand-set role id.
    observed
        .policies
        .insert("baton-test_x".into(), "path \"*\" {}\n".into());
    observed
        .roles
        .insert("baton-test_x".into(), role_with("hand-made"));
    let live = classify("test", observed);
    assert!(live.policies.is_empty() && live.roles.is_empty());
    let mut r = repo(vec![spec("/plain", json!({"cmd": "x"}), None)]);
    r.config.prune.max_deletes = 100;
    let d = desired(&r);
    let p = plan(&r, &[], &Policy::default());
    let vp = super::plan_vault(&d, &live, &BTreeMap::new(), &r, &p, &[], Some(100));
    assert!(vp.is_empty() && vp.held.is_empty(), "{vp:?}");
    assert_eq!(vp.unmanaged.len(), 8);
}
