//! Plans from fixtures (`fixtures/plan/<case>/`: a repo plus a saved `GET /v2/apps`): one snapshot
//! per case, plus the safety rules as explicit assertions, plus properties over generated specs.

use baton::commands::load_repo;
use baton_core::app::live::apps_from_response;
use baton_core::plan::{plan, Action, Plan, Policy};
use baton_core::report::{plan_text, Style};
use baton_core::spec::AppId;
use serde_json::Value;

use crate::support::fixture;

fn case(name: &str, allow_deletes: Option<usize>) -> (Plan, Vec<Value>) {
    let dir = fixture(&format!("plan/{name}"));
    let repo = load_repo(&dir).unwrap();
    let live_doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("live.json")).unwrap()).unwrap();
    let live = apps_from_response(live_doc).unwrap();
    let policy = Policy {
        commit: "c0ffee".into(),
        allow_deletes,
    };
    let p = plan(&repo, &live, &policy);
    assert_eq!(p, plan(&repo, &live, &policy), "plans are deterministic");
    (p, live)
}

fn snapshot(name: &str, p: &Plan) {
    insta::assert_snapshot!(format!("plan_{name}"), plan_text(p, Style { color: false }));
}

fn id(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

fn action_of(p: &Plan, app: &str) -> Option<Action> {
    p.changes()
        .find(|c| c.app.as_str() == app)
        .map(|c| c.action)
}

#[test]
fn basic_create_update_delete_and_what_is_never_touched() {
    let (p, _) = case("basic", None);
    snapshot("basic", &p);
    assert_eq!(action_of(&p, "/new"), Some(Action::Create));
    assert_eq!(action_of(&p, "/changed"), Some(Action::Update));
    assert_eq!(action_of(&p, "/gone"), Some(Action::Delete));
    assert_eq!(
        p.unchanged,
        vec![id("/same")],
        "Marathon's padded form of /same is no change"
    );
    assert_eq!(
        action_of(&p, "/broken"),
        None,
        "an invalid spec never changes or deletes its app"
    );
    assert_eq!(p.invalid, vec![id("/broken")]);
    assert_eq!(
        action_of(&p, "/other"),
        None,
        "unowned apps are never pruned"
    );
    assert_eq!(
        action_of(&p, "/theirs"),
        None,
        "apps of another owner are never pruned"
    );
    assert_eq!(p.unmanaged, vec![id("/other"), id("/theirs")]);
    let changed = p.changes().find(|c| c.app.as_str() == "/changed").unwrap();
    let pointers: Vec<&str> = changed.fields.iter().map(|f| f.pointer.as_str()).collect();
    assert_eq!(pointers, ["/env/LEVEL", "/env/OLD", "/instances"]);
    let body = changed.body.as_ref().unwrap();
    assert_eq!(body["labels"]["baton.dev/owner"], "team-a");
    assert_eq!(body["labels"]["baton.dev/commit"], "c0ffee");
    assert!(body["labels"]["baton.dev/digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(body.get("baton").is_none());
    let waves: Vec<Vec<Action>> = p
        .waves
        .iter()
        .map(|w| w.changes.iter().map(|c| c.action).collect())
        .collect();
    assert_eq!(
        waves.last().unwrap(),
        &vec![Action::Delete],
        "deletes come last"
    );
}

#[test]
fn deletes_over_the_budget_are_held_unless_allowed() {
    let (p, _) = case("budget", None);
    snapshot("budget_exceeded", &p);
    assert_eq!(p.summary.delete, 0);
    assert_eq!(p.held.len(), 8);
    assert!(
        p.held[0].reason.contains("--allow-deletes 8"),
        "{}",
        p.held[0].reason
    );
    let (p, _) = case("budget", Some(7));
    assert_eq!(
        p.summary.delete, 0,
        "allowing fewer than planned still holds all"
    );
    let (p, _) = case("budget", Some(8));
    assert_eq!(p.summary.delete, 8);
    assert!(p.held.is_empty());
}

#[test]
fn an_empty_repo_deletes_nothing() {
    let (p, live) = case("empty-repo", Some(100));
    snapshot("empty_repo", &p);
    assert!(p.is_empty());
    assert_eq!(p.held.len(), live.len());
}

#[test]
fn a_moved_file_is_reported_as_a_move() {
    let (p, _) = case("move", None);
    snapshot("move", &p);
    assert_eq!(p.moves.len(), 1);
    assert_eq!(
        (p.moves[0].from.as_str(), p.moves[0].to.as_str()),
        ("/old/api", "/new/api")
    );
    assert_eq!(action_of(&p, "/new/api"), Some(Action::Create));
    assert_eq!(action_of(&p, "/old/api"), Some(Action::Delete));
    let order: Vec<&str> = p.changes().map(|c| c.app.as_str()).collect();
    assert!(
        order.iter().position(|a| *a == "/new/api") < order.iter().position(|a| *a == "/old/api"),
        "create before delete"
    );
}

#[test]
fn ignored_fields_never_fight_their_owner() {
    let (p, live) = case("ignore", None);
    snapshot("ignore", &p);
    let c = p.changes().next().unwrap();
    assert_eq!(c.fields.len(), 1, "only env differs: {:?}", c.fields);
    assert_eq!(c.fields[0].pointer, "/env/COLOR");
    assert_eq!(
        c.body.as_ref().unwrap()["instances"],
        live[0]["instances"],
        "the autoscaler's value is kept"
    );
}

#[test]
fn ownership_adopt_conflict_and_prune_protection() {
    let (p, _) = case("ownership", None);
    snapshot("ownership", &p);
    let adopt = p.changes().find(|c| c.app.as_str() == "/adopted").unwrap();
    assert!(adopt.adopt);
    assert!(
        adopt.fields[0].pointer.starts_with("/labels"),
        "{:?}",
        adopt.fields
    );
    assert_eq!(p.conflicts.len(), 1);
    assert_eq!(p.conflicts[0].owner, "other-team");
    assert_eq!(action_of(&p, "/contested"), None);
    assert_eq!(action_of(&p, "/protected"), None);
    assert!(p
        .held
        .iter()
        .any(|h| h.app.as_str() == "/protected" && h.reason.contains("prune")));
}

#[test]
fn waves_follow_dependencies_and_deletes_go_dependents_first() {
    let (p, _) = case("waves", None);
    snapshot("waves", &p);
    let waves: Vec<Vec<&str>> = p
        .waves
        .iter()
        .map(|w| w.changes.iter().map(|c| c.app.as_str()).collect())
        .collect();
    assert_eq!(
        waves,
        vec![
            vec!["/solo"],
            vec!["/b"],
            vec!["/a"],
            vec!["/front"],
            vec!["/middle"],
            vec!["/back"]
        ]
    );
}

#[test]
fn without_an_explicit_owner_every_delete_is_held_and_creates_and_updates_go_on() {
    let (p, _) = case("no-owner", Some(100));
    snapshot("no_owner", &p);
    assert!(!p.owner_explicit);
    assert_eq!(p.owner, "baton");
    assert_eq!(action_of(&p, "/web"), Some(Action::Create));
    assert_eq!(action_of(&p, "/api"), Some(Action::Update));
    assert_eq!(p.summary.delete, 0, "even --allow-deletes deletes nothing");
    let reason = baton_core::plan::no_owner_reason("baton");
    assert!(reason.contains("set `owner:` in baton.yaml"), "{reason}");
    let held: Vec<(&str, &str)> = p
        .held
        .iter()
        .map(|h| (h.app.as_str(), h.reason.as_str()))
        .collect();
    assert_eq!(
        held,
        [
            ("/kept", "marked `baton.prune: false`"),
            ("/stale", reason.as_str()),
            ("/theirs", reason.as_str())
        ]
    );
    let no_owner: Vec<&str> = p.held_for_no_owner().map(|a| a.as_str()).collect();
    assert_eq!(no_owner, ["/stale", "/theirs"]);

    // The same repo with `owner: baton` written out deletes as before.
    let dir = tempfile::tempdir().unwrap();
    let src = crate::support::fixture("plan/no-owner");
    for f in ["apps/api.yaml", "apps/web.yaml"] {
        std::fs::create_dir_all(dir.path().join("apps")).unwrap();
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("baton.yaml"), "owner: baton\n").unwrap();
    let repo = load_repo(dir.path()).unwrap();
    assert!(repo.config.owner_explicit);
    let live = apps_from_response(
        serde_json::from_str(&std::fs::read_to_string(src.join("live.json")).unwrap()).unwrap(),
    )
    .unwrap();
    let explicit = plan(
        &repo,
        &live,
        &Policy {
            commit: "c0ffee".into(),
            allow_deletes: None,
        },
    );
    assert_eq!(action_of(&explicit, "/stale"), Some(Action::Delete));
    assert_eq!(action_of(&explicit, "/theirs"), Some(Action::Delete));
    assert_eq!(explicit.held_for_no_owner().count(), 0);
}

#[test]
fn id_prefixes_bound_what_is_created_changed_and_deleted() {
    let (p, live) = case("id-prefixes", Some(100));
    snapshot("id_prefixes", &p);
    let repo = load_repo(&crate::support::fixture("plan/id-prefixes")).unwrap();
    let prefixes: Vec<&str> = repo
        .config
        .id_prefixes
        .iter()
        .flatten()
        .map(|p| p.as_str())
        .collect();
    assert_eq!(
        prefixes,
        ["/shop", "/shared/cache"],
        "`/shop/` is read as `/shop`"
    );

    // Inside: planned as usual, the exact prefix `/shared/cache` included.
    assert_eq!(action_of(&p, "/shop/new"), Some(Action::Create));
    assert_eq!(action_of(&p, "/shared/cache"), Some(Action::Create));
    assert_eq!(action_of(&p, "/shop/web"), Some(Action::Update));
    assert_eq!(action_of(&p, "/shop/gone"), Some(Action::Delete));
    // Outside: nothing is written, whatever the spec or the owner label says.
    let touched: Vec<&str> = p.changes().map(|c| c.app.as_str()).collect();
    assert_eq!(
        touched,
        ["/shared/cache", "/shop/new", "/shop/web", "/shop/gone"],
        "only apps inside idPrefixes are written"
    );
    assert_eq!(
        p.invalid,
        vec![id("/shopping/cart"), id("/web/api")],
        "specs outside idPrefixes (`/shop` does not cover `/shopping`) are invalid"
    );
    assert_eq!(
        p.out_of_scope,
        vec![
            id("/legacy/batch"),
            id("/shared/cache-old"),
            id("/shopping/old")
        ],
        "this owner's live apps outside idPrefixes are reported, not pruned"
    );
    assert_eq!(p.unmanaged, vec![id("/other/thing")]);
    assert!(p.held.is_empty(), "{:?}", p.held);
    assert!(live.iter().any(|a| a["id"] == "/shopping/old"));

    // Each spec outside names its file, its app id and the allowed prefixes.
    let outside: Vec<(String, Option<&str>, &str)> = repo
        .diagnostics
        .iter()
        .map(|d| {
            (
                d.file.display().to_string(),
                d.app.as_ref().map(|a| a.as_str()),
                d.message.as_str(),
            )
        })
        .collect();
    assert_eq!(outside.len(), 2, "{outside:#?}");
    for ((file, app, message), (want_file, want_app)) in outside.iter().zip([
        ("apps/shopping/cart.yaml", "/shopping/cart"),
        ("apps/web/api.yaml", "/web/api"),
    ]) {
        assert_eq!((file.as_str(), *app), (want_file, Some(want_app)));
        assert!(
            message.contains(&format!("`{want_app}`"))
                && message.contains("idPrefixes in baton.yaml: `/shop`, `/shared/cache`"),
            "{message}"
        );
    }
}

/// A repo built without `load` (as the daemon's fast path and partial cycles build theirs)
/// still gets nothing outside `idPrefixes` written: the plan checks the scope itself.
#[test]
fn the_plan_itself_never_writes_a_spec_outside_id_prefixes() {
    use baton_core::spec::IdPrefix;
    let mut repo = load_repo(&crate::support::fixture("plan/id-prefixes")).unwrap();
    assert!(repo.specs.contains_key(&id("/shop/web")));
    let inside = repo.specs[&id("/shop/web")].clone();
    let mut outside = (*inside).clone();
    outside.id = id("/web/api");
    repo.specs.insert(id("/web/api"), outside.into());
    repo.invalid.remove(&id("/web/api"));
    repo.config.id_prefixes = Some(vec![
        IdPrefix::parse("/shop").unwrap(),
        IdPrefix::parse("/shared/cache").unwrap(),
    ]);
    let live = apps_from_response(
        serde_json::from_str(
            &std::fs::read_to_string(crate::support::fixture("plan/id-prefixes/live.json"))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let p = plan(
        &repo,
        &live,
        &Policy {
            commit: "c0ffee".into(),
            allow_deletes: Some(100),
        },
    );
    assert_eq!(action_of(&p, "/web/api"), None);
    assert!(p.invalid.contains(&id("/web/api")), "{:?}", p.invalid);
}

/// Issue 16: DC/OS secret references diff like any other value: an app Marathon returns as
/// submitted is unchanged; a moved `source`, a new declaration and a plain value that became a
/// reference are each a change at their own pointer.
#[test]
fn dcos_secret_references_diff_field_by_field() {
    let (p, _) = case("dcos-secrets", None);
    snapshot("dcos_secrets", &p);
    assert_eq!(p.unchanged, vec![id("/same")]);
    let change = p
        .changes()
        .find(|c| c.app.as_str() == "/moved")
        .expect("/moved is updated");
    let pointers: Vec<&str> = change.fields.iter().map(|f| f.pointer.as_str()).collect();
    assert_eq!(
        pointers,
        ["/env/TOKEN", "/secrets/key/source", "/secrets/token"]
    );
}

#[test]
fn plan_json_matches_its_schema() {
    let dir = fixture("plan/basic");
    let mut out = Vec::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = rt
        .block_on(baton::commands::plan(
            &dir,
            &baton::commands::LiveFrom::File(dir.join("live.json")),
            &Policy {
                commit: "c0ffee".into(),
                allow_deletes: None,
            },
            baton::commands::Format::Json,
            Style { color: false },
            &mut out,
        ))
        .unwrap();
    assert_eq!(
        code,
        baton::commands::exit::ERROR,
        "an invalid spec makes plan exit 1"
    );
    let doc: Value = serde_json::from_slice(&out).unwrap();
    crate::support::assert_matches_schema("plan.schema.json", &doc);
    assert_eq!(doc["plan"]["summary"]["create"], 1);
}

mod properties {
    //! Properties over generated specs: applying a plan and planning again yields nothing, and
    //! plans are deterministic.
    use std::collections::BTreeMap;

    use baton_core::plan::{plan, Action, Policy};
    use baton_core::spec::{marathon_form, AppId, BatonBlock, Repo, Spec};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn app_strategy() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just(0.1), Just(0.5), Just(1.0), Just(2.0)],
            prop_oneof![Just(32.0), Just(128.0), Just(1024.0)],
            0u64..4,
            proptest::collection::btree_map("[A-Z]{1,4}", "[a-z0-9]{0,6}", 0..3),
            proptest::option::of(prop_oneof![Just("hostname"), Just("rack")]),
            any::<bool>(),
            0usize..3,
            any::<bool>(),
        )
            .prop_map(
                |(cpus, mem, instances, env, constraint, health, ports, docker)| {
                    let mut app =
                        json!({"cpus": cpus, "mem": mem, "instances": instances, "env": env});
                    if let Some(c) = constraint {
                        app["constraints"] = json!([[c, "UNIQUE"]]);
                    }
                    if health {
                        app["healthChecks"] = json!([{"protocol": "TCP"}]);
                    }
                    if docker {
                        app["container"] = json!({"docker": {"image": "nginx"}});
                        app["networks"] = json!([{"mode": "container/bridge"}]);
                    } else {
                        app["cmd"] = json!("sleep 100");
                        app["portDefinitions"] =
                            Value::Array((0..ports).map(|_| json!({"port": 0})).collect());
                    }
                    app
                },
            )
    }

    fn repo_of(apps: &[Value]) -> Repo {
        let mut specs = BTreeMap::new();
        for (i, app) in apps.iter().enumerate() {
            let id = AppId::parse(&format!("/g{}/app-{i}", i % 3)).unwrap();
            let mut app = app.clone();
            app["id"] = json!(id.as_str());
            specs.insert(
                id.clone(),
                Spec {
                    id,
                    file: format!("apps/{i}.yaml").into(),
                    app,
                    baton: BatonBlock::default(),
                }
                .into(),
            );
        }
        let mut repo = Repo {
            specs,
            ..Repo::default()
        };
        // Deletions are part of what converges: they need an explicit owner.
        repo.config.owner_explicit = true;
        repo
    }

    /// What a Marathon-like scheduler serves after accepting `body`: canonical form, assigned
    /// service ports, status fields.
    fn served(body: &Value, next_port: &mut u64) -> Value {
        let mut app = body.clone();
        marathon_form(&mut app);
        for list in ["/portDefinitions", "/container/portMappings"] {
            if let Some(items) = app.pointer_mut(list).and_then(Value::as_array_mut) {
                for item in items {
                    let key = if list == "/portDefinitions" {
                        "port"
                    } else {
                        "servicePort"
                    };
                    if item[key] == json!(0) {
                        item[key] = json!(*next_port);
                        *next_port += 1;
                    }
                }
            }
        }
        app["version"] = json!("2026-11-21T00:00:00.000Z");
        app["tasksRunning"] = app["instances"].clone();
        app["deployments"] = json!([]);
        app
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn applying_a_plan_converges(
            apps in proptest::collection::vec(app_strategy(), 1..12),
            stale in proptest::collection::vec(app_strategy(), 0..4),
            unowned in proptest::collection::vec(app_strategy(), 0..3),
            seed in 0usize..4,
        ) {
            let repo = repo_of(&apps);
            let policy = Policy { commit: "abc".into(), allow_deletes: Some(100) };
            // Live: some of the repo's apps already there but different, stale owned apps, and
            // apps nobody owns.
            let mut next_port = 10000;
            let mut live: BTreeMap<String, Value> = BTreeMap::new();
            for (i, (id, spec)) in repo.specs.iter().enumerate() {
                if (i + seed) % 3 == 0 {
                    let mut other = apps[(i + 1) % apps.len()].clone();
                    other["id"] = json!(id.as_str());
                    other["labels"] = json!({"baton.dev/owner": "baton"});
                    live.insert(id.to_string(), served(&other, &mut next_port));
                }
                let _ = spec;
            }
            for (k, app) in stale.iter().enumerate() {
                let mut a = app.clone();
                a["id"] = json!(format!("/old/app-{k}"));
                a["labels"] = json!({"baton.dev/owner": "baton"});
                live.insert(format!("/old/app-{k}"), served(&a, &mut next_port));
            }
            for (k, app) in unowned.iter().enumerate() {
                let mut a = app.clone();
                a["id"] = json!(format!("/theirs/app-{k}"));
                live.insert(format!("/theirs/app-{k}"), served(&a, &mut next_port));
            }
            let live_list: Vec<Value> = live.values().cloned().collect();
            let first = plan(&repo, &live_list, &policy);
            prop_assert_eq!(&first, &plan(&repo, &live_list, &policy), "deterministic");
            for c in first.changes() {
                prop_assert!(!c.app.as_str().starts_with("/theirs"), "unowned app touched: {}", c.app);
                match c.action {
                    Action::Create | Action::Update => {
                        let served_app = served(c.body.as_ref().unwrap(), &mut next_port);
                        live.insert(c.app.to_string(), served_app);
                    }
                    Action::Delete => {
                        live.remove(c.app.as_str());
                    }
                }
            }
            let live_list: Vec<Value> = live.values().cloned().collect();
            let second = plan(&repo, &live_list, &policy);
            prop_assert!(second.is_empty(), "not converged: {:#?}", second.waves);
            prop_assert_eq!(second.unchanged.len(), repo.specs.len());
            prop_assert_eq!(second.unmanaged.len(), unowned.len());
        }

        /// The plan depends on what the repo and the scheduler hold, not on the order in which
        /// the source lists the files or the scheduler lists its apps.
        #[test]
        fn plans_do_not_depend_on_file_or_live_order(
            (apps, file_order) in proptest::collection::vec(app_strategy(), 1..16)
                .prop_flat_map(|apps| {
                    let order: Vec<usize> = (0..apps.len()).collect();
                    (Just(apps), Just(order).prop_shuffle())
                }),
            deps in proptest::collection::vec((0usize..16, 0usize..16), 0..8),
            broken in proptest::collection::vec(0usize..16, 0..3),
            stale in proptest::collection::vec(app_strategy(), 0..4),
            unowned in proptest::collection::vec(app_strategy(), 0..3),
            live_order in Just((0..32usize).collect::<Vec<_>>()).prop_shuffle(),
            seed in 0usize..4,
        ) {
            use baton_core::spec::load::{Snapshot, SourceFile};
            // Files of a repo: JSON and YAML, dependencies on earlier apps, some invalid specs.
            let mut files = Vec::new();
            for (i, app) in apps.iter().enumerate() {
                let mut app = app.clone();
                let on: Vec<String> = deps
                    .iter()
                    .filter(|(from, to)| *from == i && *to < i)
                    .map(|(_, to)| format!("/g{}/app-{to}", to % 3))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if !on.is_empty() {
                    app["baton"] = json!({"dependsOn": on});
                }
                if broken.contains(&i) {
                    app["instances"] = json!("many");
                }
                let (ext, bytes) = if i % 2 == 0 {
                    ("json", serde_json::to_vec(&app).unwrap())
                } else {
                    ("yaml", serde_yaml::to_string(&app).unwrap().into_bytes())
                };
                files.push(SourceFile {
                    path: format!("apps/g{}/app-{i}.{ext}", i % 3).into(),
                    bytes,
                });
            }
            // An explicit owner, so that deletions are planned, not all held.
            let config = baton_core::spec::RepoConfig {
                owner_explicit: true,
                ..Default::default()
            };
            let snapshot = |files: Vec<SourceFile>| Snapshot {
                files,
                config: config.clone(),
                ..Snapshot::default()
            };
            let repo = baton_core::spec::load(snapshot(files.clone()));
            let shuffled_files: Vec<SourceFile> =
                file_order.iter().map(|&i| files[i].clone()).collect();
            let shuffled_repo = baton_core::spec::load(snapshot(shuffled_files));
            prop_assert_eq!(&repo.diagnostics, &shuffled_repo.diagnostics);

            // Live: some of the repo's apps (some different), stale owned apps, unowned apps.
            let mut next_port = 10000;
            let mut live = Vec::new();
            for (i, id) in repo.specs.keys().enumerate() {
                if (i + seed) % 3 != 0 {
                    let mut other = apps[(i + seed) % apps.len()].clone();
                    other["id"] = json!(id.as_str());
                    other["labels"] = json!({"baton.dev/owner": "baton"});
                    live.push(served(&other, &mut next_port));
                }
            }
            for (k, app) in stale.iter().enumerate() {
                let mut a = app.clone();
                a["id"] = json!(format!("/old/app-{k}"));
                a["labels"] = json!({"baton.dev/owner": "baton"});
                a["dependencies"] = json!([format!("/old/app-{}", (k + 1) % stale.len())]);
                live.push(served(&a, &mut next_port));
            }
            for (k, app) in unowned.iter().enumerate() {
                let mut a = app.clone();
                a["id"] = json!(format!("/theirs/app-{k}"));
                live.push(served(&a, &mut next_port));
            }
            let mut shuffled_live: Vec<(usize, Value)> = live
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, app)| (live_order.iter().position(|&p| p == i).unwrap_or(i), app))
                .collect();
            shuffled_live.sort_by_key(|(rank, _)| *rank);
            let shuffled_live: Vec<Value> = shuffled_live.into_iter().map(|(_, a)| a).collect();

            let policy = Policy { commit: "abc".into(), allow_deletes: None };
            let expected = plan(&repo, &live, &policy);
            prop_assert_eq!(&expected, &plan(&shuffled_repo, &live, &policy), "file order");
            prop_assert_eq!(&expected, &plan(&repo, &shuffled_live, &policy), "live order");
            prop_assert_eq!(&expected, &plan(&shuffled_repo, &shuffled_live, &policy), "both");
        }
    }
}

/// Issue 15: a rollout's canary (`<stable>-canary`, owned, labelled `baton.dev/rollout-of` a
/// stable whose spec rolls out) is the rollout's to make and remove: the plan neither deletes
/// it nor reports it unmanaged. Orphans are pruned as any owned app; another owner's never.
#[test]
fn a_rollouts_canary_is_left_to_the_rollout_and_orphans_are_pruned() {
    let (p, _) = case("rollout-companion", None);
    snapshot("rollout_companion", &p);
    for companion in ["/shop/api-canary", "/shop/cart-canary"] {
        assert_eq!(action_of(&p, companion), None, "{companion}");
        assert!(!p.unmanaged.contains(&id(companion)), "{companion}");
        assert!(
            !p.held.iter().any(|h| h.app == id(companion)),
            "{companion}"
        );
    }
    for orphan in ["/shop/web-canary", "/shop/gone-canary", "/shop/api-copy"] {
        assert_eq!(action_of(&p, orphan), Some(Action::Delete), "{orphan}");
    }
    assert_eq!(action_of(&p, "/team/x-canary"), None);
    assert_eq!(p.unmanaged, vec![id("/team/x-canary")]);
    // The stable without the group label: a plain update lands it (the next change rolls out).
    let api = p.changes().find(|c| c.app == id("/shop/api")).unwrap();
    assert_eq!(api.action, Action::Update);
    assert!(
        api.fields
            .iter()
            .any(|f| f.pointer == "/labels/HAPROXY_DEPLOYMENT_GROUP"),
        "{:?}",
        api.fields
    );
    let body = api.body.as_ref().unwrap();
    assert_eq!(body["labels"]["HAPROXY_DEPLOYMENT_GROUP"], "/shop/api");
}
