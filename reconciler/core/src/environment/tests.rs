use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::compare::{diff_env, promote_patch, AppStatus};
use super::overlay::{self, merge_patch};
use crate::spec::load::{parse_config, Keep, Snapshot, SourceFile};
use crate::spec::{AppId, Repo, Severity};

fn file(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: PathBuf::from(path),
        bytes: text.as_bytes().to_vec(),
    }
}

/// The repo as a directory source would hand it over: `baton.yaml`, the base specs (under
/// `apps/`) and every environment's overlay files (under `environments/`).
fn snapshot(files: &[(&str, &str)]) -> (Snapshot, Vec<SourceFile>) {
    let config = files
        .iter()
        .find(|(p, _)| *p == "baton.yaml")
        .map(|(p, t)| file(p, t));
    let (config, diagnostics) = parse_config(config.as_ref());
    let base = files
        .iter()
        .filter(|(p, _)| p.starts_with("apps/"))
        .map(|(p, t)| file(p, t))
        .collect();
    let overlays = files
        .iter()
        .filter(|(p, _)| p.starts_with("environments/"))
        .map(|(p, t)| file(p, t))
        .collect();
    (
        Snapshot {
            config,
            files: base,
            diagnostics,
            incomplete: false,
        },
        overlays,
    )
}

fn env_repo(files: &[(&str, &str)], name: &str) -> Repo {
    let (snap, overlays) = snapshot(files);
    let env = snap.config.environments[name].clone();
    let overlays = overlays
        .into_iter()
        .filter(|f| f.path.starts_with(format!("environments/{name}/")))
        .collect();
    overlay::load(snap, &env, overlays, Keep::Definitions)
}

const CONFIG: &str = "owner: shop
environments:
  qa: {marathon: 'http://qa:8080'}
  prod:
    marathon: http://prod:8080
    owner: shop-prod
    marathonTokenFile: /etc/baton/prod-token
    prune: {maxDeletes: 1}
    defaults: {instances: 3}
";

const WEB: &str = "cpus: 0.5
mem: 128
instances: 1
cmd: python3 -m http.server $PORT0
env: {LOG: info, MODE: base}
labels: {team: web}
constraints: [[hostname, UNIQUE]]
";

fn id(s: &str) -> AppId {
    AppId::parse(s).unwrap()
}

#[test]
fn environments_are_read_with_their_settings() {
    let (config, diags) = parse_config(Some(&file("baton.yaml", CONFIG)));
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(config.environments.len(), 2);
    let prod = &config.environments["prod"];
    assert_eq!(prod.marathon, "http://prod:8080");
    assert_eq!(
        prod.marathon_token,
        Some(super::SecretRef::File("/etc/baton/prod-token".into()))
    );
    let qa_config = super::config_for(&config, &config.environments["qa"]);
    assert_eq!(qa_config.owner, "shop.qa");
    assert!(qa_config.owner_explicit);
    let prod_config = super::config_for(&config, prod);
    assert_eq!(prod_config.owner, "shop-prod");
    assert_eq!(prod_config.prune.max_deletes, 1);
    assert_eq!(prod_config.defaults.get("instances"), Some(&json!(3)));
    assert_eq!(prod_config.environment.as_deref(), Some("prod"));
}

#[test]
fn an_inline_secret_is_an_error_at_its_line() {
    let text =
        "environments:\n  qa:\n    marathon: http://qa:8080\n    marathonPassword: hunter2\n";
    let (config, diags) = parse_config(Some(&file("baton.yaml", text)));
    let d = diags
        .iter()
        .find(|d| d.pointer == "/environments/qa/marathonPassword")
        .expect("a diagnostic for the inline secret");
    assert_eq!(d.severity, Severity::Error);
    assert_eq!(d.line, Some(4));
    assert!(d.message.contains("marathonPasswordFile"), "{}", d.message);
    assert!(!d.message.contains("hunter2"));
    assert!(config.environments.is_empty());
}

#[test]
fn credentials_in_the_url_and_unknown_keys_are_errors() {
    let text = "environments:\n  qa: {marathon: 'http://u:secret@qa:8080'}\n";
    let (_, diags) = parse_config(Some(&file("baton.yaml", text)));
    assert!(diags
        .iter()
        .any(|d| d.pointer == "/environments/qa/marathon" && d.line == Some(2)));
    assert!(diags.iter().all(|d| !d.message.contains("secret@")));
    let text = "environments:\n  qa: {marathon: 'http://qa:8080', marathonn: x}\n";
    let (_, diags) = parse_config(Some(&file("baton.yaml", text)));
    assert!(
        diags.iter().any(|d| d.severity == Severity::Error),
        "{diags:?}"
    );
    let text = "environments:\n  QA: {marathon: 'http://qa:8080'}\n";
    let (_, diags) = parse_config(Some(&file("baton.yaml", text)));
    assert!(
        diags.iter().any(|d| d.severity == Severity::Error),
        "{diags:?}"
    );
}

#[test]
fn two_environments_on_one_marathon_under_one_owner_are_refused() {
    let text = "environments:\n  qa: {marathon: 'http://m:8080', owner: x}\n  staging: {marathon: 'http://m:8080/', owner: x}\n";
    let (_, diags) = parse_config(Some(&file("baton.yaml", text)));
    assert!(
        diags.iter().any(|d| d.message.contains("same owner")),
        "{diags:?}"
    );
    // The derived owners differ: allowed.
    let text = "owner: shop\nenvironments:\n  qa: {marathon: 'http://m:8080'}\n  staging: {marathon: 'http://m:8080'}\n";
    let (_, diags) = parse_config(Some(&file("baton.yaml", text)));
    assert!(diags.is_empty(), "{diags:?}");
}

#[test]
fn merge_patch_follows_rfc_7386() {
    let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "s": "x"});
    merge_patch(
        &mut doc,
        &json!({"a": {"b": null, "d": 3}, "l": [3], "s": {"k": 1}}),
    );
    assert_eq!(doc, json!({"a": {"c": 2, "d": 3}, "l": [3], "s": {"k": 1}}));
}

#[test]
fn an_overlay_merges_maps_replaces_lists_and_deletes_with_null() {
    let files = [
        ("baton.yaml", CONFIG),
        ("apps/web.yaml", WEB),
        (
            "environments/qa/apps/web.yaml",
            "env: {MODE: qa, LOG: null}\nconstraints: [[rack, CLUSTER, a]]\nlabels: {tier: qa}\n",
        ),
    ];
    let qa = env_repo(&files, "qa");
    assert!(qa.is_valid(), "{:?}", qa.diagnostics);
    let app = &qa.specs[&id("/web")].app;
    assert_eq!(app["env"], json!({"MODE": "qa"}));
    assert_eq!(app["labels"], json!({"team": "web", "tier": "qa"}));
    assert_eq!(app["constraints"], json!([["rack", "CLUSTER", "a"]]));
    assert_eq!(qa.specs[&id("/web")].file, PathBuf::from("apps/web.yaml"));
    assert_eq!(qa.config.owner, "shop.qa");
    // prod has no overlay of web: the base, with prod's defaults under it (the spec wins).
    let prod = env_repo(&files, "prod");
    let app = &prod.specs[&id("/web")].app;
    assert_eq!(app["env"], json!({"LOG": "info", "MODE": "base"}));
    assert_eq!(app["instances"], json!(1));
}

#[test]
fn an_overlay_adds_apps_and_leaves_base_apps_out() {
    let files = [
        ("baton.yaml", CONFIG),
        ("apps/web.yaml", WEB),
        ("apps/worker.yaml", "cmd: sleep 1000\ncpus: 0.1\nmem: 32\n"),
        (
            "environments/qa/apps/worker.yaml",
            "baton: {exclude: true}\n",
        ),
        (
            "environments/qa/apps/debug.yaml",
            "cmd: sleep 1000\ncpus: 0.1\nmem: 32\n",
        ),
    ];
    let qa = env_repo(&files, "qa");
    assert!(qa.is_valid(), "{:?}", qa.diagnostics);
    let ids: Vec<&str> = qa.specs.keys().map(|i| i.as_str()).collect();
    assert_eq!(ids, ["/debug", "/web"]);
    assert_eq!(
        qa.specs[&id("/debug")].file,
        PathBuf::from("environments/qa/apps/debug.yaml")
    );
    let prod = env_repo(&files, "prod");
    let ids: Vec<&str> = prod.specs.keys().map(|i| i.as_str()).collect();
    assert_eq!(ids, ["/web", "/worker"]);
}

#[test]
fn diagnostics_name_the_file_and_line_that_produced_the_value() {
    let files = [
        ("baton.yaml", CONFIG),
        (
            "apps/web.yaml",
            "cmd: run\ncpus: 0.5\nmem: 128\ninstances: 1\n",
        ),
        (
            "environments/qa/apps/web.yaml",
            "# qa runs more\n\ninstances: many\n",
        ),
    ];
    let qa = env_repo(&files, "qa");
    assert!(qa.invalid.contains(&id("/web")));
    let d = qa
        .diagnostics
        .iter()
        .find(|d| d.pointer == "/instances")
        .expect("a diagnostic on /instances");
    assert_eq!(d.file, PathBuf::from("environments/qa/apps/web.yaml"));
    assert_eq!(d.line, Some(3));
    assert!(d.message.contains("base apps/web.yaml"), "{}", d.message);
    // A value of the base file: the base file's line, the overlay named.
    let files = [
        ("baton.yaml", CONFIG),
        ("apps/web.yaml", "cmd: run\ncpus: 0.5\nmem: lots\n"),
        ("environments/qa/apps/web.yaml", "instances: 2\n"),
    ];
    let qa = env_repo(&files, "qa");
    let d = qa
        .diagnostics
        .iter()
        .find(|d| d.pointer == "/mem")
        .expect("a diagnostic on /mem");
    assert_eq!(d.file, PathBuf::from("apps/web.yaml"));
    assert_eq!(d.line, Some(3));
    assert!(
        d.message.contains("overlay environments/qa/apps/web.yaml"),
        "{}",
        d.message
    );
    // The other environment does not see qa's overlay.
    assert!(env_repo(&files, "prod")
        .diagnostics
        .iter()
        .all(|d| d.pointer != "/instances"));
}

#[test]
fn a_broken_overlay_makes_its_app_invalid_in_that_environment_only() {
    let files = [
        ("baton.yaml", CONFIG),
        ("apps/web.yaml", WEB),
        ("environments/qa/apps/web.yaml", "env: [unclosed\n"),
    ];
    let qa = env_repo(&files, "qa");
    assert!(qa.invalid.contains(&id("/web")));
    assert!(!qa.specs.contains_key(&id("/web")));
    assert!(qa
        .diagnostics
        .iter()
        .any(|d| d.file == Path::new("environments/qa/apps/web.yaml")));
    let prod = env_repo(&files, "prod");
    assert!(prod.specs.contains_key(&id("/web")));
}

#[test]
fn an_overlay_cannot_change_the_owner_label() {
    let files = [
        ("baton.yaml", CONFIG),
        ("apps/web.yaml", WEB),
        (
            "environments/qa/apps/web.yaml",
            "labels: {baton.dev/owner: shop-prod}\n",
        ),
    ];
    let qa = env_repo(&files, "qa");
    let plan = crate::plan::plan(&qa, &[], &crate::plan::Policy::default());
    let body = plan.waves[0].changes[0].body.clone().unwrap();
    assert_eq!(body["labels"]["baton.dev/owner"], json!("shop.qa"));
}

#[test]
fn two_environments_on_one_marathon_never_prune_each_other() {
    let text = "owner: shop\nenvironments:\n  qa: {marathon: 'http://m:8080'}\n  staging: {marathon: 'http://m:8080'}\n";
    let files = [
        ("baton.yaml", text),
        ("apps/web.yaml", WEB),
        (
            "environments/staging/apps/web.yaml",
            "baton: {exclude: true}\n",
        ),
    ];
    let qa = env_repo(&files, "qa");
    let policy = crate::plan::Policy {
        commit: "c1".into(),
        ..Default::default()
    };
    // What qa's apply put on the shared Marathon.
    let plan = crate::plan::plan(&qa, &[], &policy);
    let live: Vec<Value> = plan.waves[0]
        .changes
        .iter()
        .filter_map(|c| c.body.clone())
        .collect();
    assert_eq!(live.len(), 1);
    // staging has no /web and sees qa's app as someone else's: no delete.
    let staging = env_repo(&files, "staging");
    let plan = crate::plan::plan(&staging, &live, &policy);
    assert!(plan.waves.is_empty(), "{:?}", plan.waves);
    assert_eq!(plan.unmanaged, vec![id("/web")]);
    // qa itself with /web gone would delete it: the labels are qa's.
    let qa_without = env_repo(
        &[
            ("baton.yaml", text),
            ("apps/other.yaml", "cmd: x\ncpus: 0.1\nmem: 32\n"),
        ],
        "qa",
    );
    let plan = crate::plan::plan(&qa_without, &live, &policy);
    assert_eq!(plan.summary.delete, 1);
}

#[test]
fn a_repo_without_environments_loads_as_before() {
    let (snap, _) = snapshot(&[("apps/web.yaml", WEB)]);
    assert!(snap.config.environments.is_empty());
    assert_eq!(snap.config.environment, None);
    let repo = crate::spec::load::load(snap);
    assert_eq!(repo.config.owner, "baton");
    let plan = crate::plan::plan(&repo, &[], &crate::plan::Policy::default());
    let body = plan.waves[0].changes[0].body.clone().unwrap();
    assert_eq!(body["labels"]["baton.dev/owner"], json!("baton"));
}

#[test]
fn diff_env_lists_the_fields_that_differ_with_secrets_redacted() {
    let files = [
        ("baton.yaml", CONFIG),
        ("apps/web.yaml", WEB),
        ("apps/same.yaml", "cmd: x\ncpus: 0.1\nmem: 32\ninstances: 1\n"),
        (
            "environments/qa/apps/web.yaml",
            "container: {type: DOCKER, docker: {image: 'web:2'}}\nenv: {API_TOKEN: qa-token}\n",
        ),
        (
            "environments/prod/apps/web.yaml",
            "container: {type: DOCKER, docker: {image: 'web:1'}}\nenv: {API_TOKEN: prod-token}\ninstances: 1\n",
        ),
    ];
    let qa = env_repo(&files, "qa");
    let prod = env_repo(&files, "prod");
    let d = diff_env(("qa", &qa), ("prod", &prod), &[]);
    assert_eq!(d.apps.len(), 1, "{d:?}");
    assert_eq!(d.apps[0].app, id("/web"));
    assert_eq!(d.apps[0].status, AppStatus::Changed);
    let pointers: Vec<&str> = d.apps[0]
        .fields
        .iter()
        .map(|f| f.pointer.as_str())
        .collect();
    assert_eq!(pointers, ["/container/docker/image", "/env/API_TOKEN"]);
    assert_eq!(d.apps[0].fields[0].from, Some(json!("web:2")));
    assert_eq!(d.apps[0].fields[0].to, Some(json!("web:1")));
    let shown = serde_json::to_string(&d).unwrap();
    assert!(
        !shown.contains("qa-token") && !shown.contains("prod-token"),
        "{shown}"
    );
}

#[test]
fn promote_writes_exactly_the_asked_fields_into_the_overlay() {
    let from = json!({"id": "/web", "cpus": 1, "container": {"docker": {"image": "web:2"}}, "constraints": [["a", "UNIQUE"]]});
    let to = json!({"id": "/web", "cpus": 2, "container": {"docker": {"image": "web:1"}}, "constraints": [["b", "UNIQUE"]], "mem": 64});
    let existing = json!({"cpus": 2, "container": {"docker": {"image": "web:1"}}});
    let (doc, done) = promote_patch(
        &from,
        &to,
        &["/container/docker/image".into()],
        Some(existing),
    )
    .unwrap();
    assert_eq!(
        doc,
        json!({"cpus": 2, "container": {"docker": {"image": "web:2"}}})
    );
    assert_eq!(done, ["/container/docker/image"]);
    // Every differing field: lists whole, a field FROM lacks deleted.
    let (doc, done) = promote_patch(&from, &to, &[], None).unwrap();
    assert_eq!(
        doc,
        json!({"cpus": 1, "container": {"docker": {"image": "web:2"}}, "constraints": [["a", "UNIQUE"]], "mem": null})
    );
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(promote_patch(&from, &to, &["cpus".into()], None).is_err());
}

#[test]
fn promoted_overlays_are_written_as_yaml_that_loads_back() {
    let doc = json!({"container": {"docker": {"image": "web:2"}}, "env": {"N": "123", "B": "true"}, "cpus": 0.5});
    let text = super::compare::to_yaml(&doc);
    let back = crate::spec::parse::parse(
        &text,
        crate::spec::parse::Format::Yaml,
        crate::spec::parse::Limits::default(),
    )
    .unwrap();
    assert_eq!(back, doc, "{text}");
}
