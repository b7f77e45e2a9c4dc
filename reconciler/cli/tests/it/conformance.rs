//! Conformance with Marathon: the normalisation corpus in `fixtures/normalize/` (always), and
//! Marathon's own examples and serialised apps in `../shared/marathon/` (skipped with a printed
//! reason when absent).

use std::path::Path;

use baton::commands::load_repo;
use baton_core::diff::diff;
use baton_core::spec::normalize::{normalize, Tolerance};
use baton_core::spec::{defaults, marathon_form, Severity};
use serde_json::Value;

use crate::support::{diagnostics_lines, fixture, shared_marathon};

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Differences between a spec and what the scheduler returned for it, after normalisation.
fn noise(spec_app: &Value, returned: &Value) -> Vec<String> {
    let tolerance = Tolerance::for_spec(spec_app);
    diff(&normalize(spec_app), &normalize(returned))
        .into_iter()
        .filter(|c| !tolerance.allows(&c.pointer, c.desired.as_ref(), c.live.as_ref()))
        .map(|c| format!("{}: spec {:?}, returned {:?}", c.pointer, c.desired, c.live))
        .collect()
}

/// Write `apps` into a fresh repo (one file per app, path from its id) and load it.
fn load_apps(apps: &[(String, Value)]) -> (tempfile::TempDir, baton_core::spec::Repo) {
    let dir = tempfile::tempdir().unwrap();
    for (id, app) in apps {
        let path = dir
            .path()
            .join("apps")
            .join(format!("{}.json", id.trim_start_matches('/')));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec_pretty(app).unwrap()).unwrap();
    }
    let repo = load_repo(dir.path()).unwrap();
    (dir, repo)
}

#[test]
fn normalize_corpus_has_no_noise() {
    let dir = fixture("normalize");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(case) = name.strip_suffix(".returned.json") else {
            continue;
        };
        let returned = read_json(&path);
        let submitted = ["yaml", "json"]
            .iter()
            .map(|ext| dir.join(format!("{case}.submitted.{ext}")))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{case}: no submitted spec"));
        // Load the submitted file as a real spec (validation included), as /<case>.
        let repo_dir = tempfile::tempdir().unwrap();
        let target = repo_dir.path().join("apps").join(format!(
            "{case}.{}",
            submitted.extension().unwrap().to_string_lossy()
        ));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&submitted, &target).unwrap();
        let repo = load_repo(repo_dir.path()).unwrap();
        assert!(repo.is_valid(), "{case}: {}", diagnostics_lines(&repo));
        let spec = repo.specs.values().next().unwrap();
        let n = noise(&spec.app, &returned);
        assert!(
            n.is_empty(),
            "{case}: normalisation noise:\n{}",
            n.join("\n")
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} corpus pairs");
}

#[test]
fn real_differences_survive_normalisation() {
    let spec = serde_json::json!({"id": "/a", "cmd": "sleep 1", "mem": 64, "env": {"A": "1"}});
    let mut returned = spec.clone();
    marathon_form(&mut returned);
    assert!(noise(&spec, &returned).is_empty());
    returned["mem"] = serde_json::json!(65);
    returned["env"]["B"] = serde_json::json!("2");
    returned["portDefinitions"][0]["protocol"] = serde_json::json!("udp");
    let n = noise(&spec, &returned);
    assert_eq!(n.len(), 3, "{n:#?}");
}

/// Every app of a Marathon file with its full id: the file itself, or the apps of a group.
fn apps_of(doc: &Value) -> Vec<(String, Value)> {
    if doc.get("apps").is_none() && doc.get("groups").is_none() {
        return vec![(String::new(), doc.clone())];
    }
    let mut out = Vec::new();
    let mut todo = vec![doc];
    while let Some(g) = todo.pop() {
        for app in g
            .get("apps")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push((String::new(), app.clone()));
        }
        todo.extend(
            g.get("groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten(),
        );
    }
    out
}

#[test]
fn marathon_examples_load_as_specs_in_canonical_form() {
    let Some(shared) = shared_marathon("marathon_examples_load_as_specs_in_canonical_form") else {
        return;
    };
    let mut apps = Vec::new();
    for entry in std::fs::read_dir(shared.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let doc = read_json(&path);
        for (_, app) in apps_of(&doc) {
            // Relative ids (legacy examples) are placed at the top level.
            let raw = app["id"].as_str().unwrap_or("app");
            let id = format!("/{}", raw.trim_start_matches('/').to_lowercase());
            apps.push((id, app));
        }
    }
    assert!(apps.len() >= 24, "found {} example apps", apps.len());
    let (_dir, repo) = load_apps(&apps);
    let errors: Vec<_> = repo
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    assert!(
        errors.is_empty(),
        "examples rejected:\n{}",
        diagnostics_lines(&repo)
    );
    assert_eq!(repo.specs.len(), apps.len());
    for spec in repo.specs.values() {
        let mut canonical = spec.app.clone();
        marathon_form(&mut canonical);
        for legacy in [
            "/ports",
            "/uris",
            "/ipAddress",
            "/container/docker/network",
            "/container/docker/portMappings",
        ] {
            assert!(
                canonical.pointer(legacy).is_none(),
                "{}: {legacy} left in canonical form",
                spec.id
            );
        }
        assert!(
            canonical.get("networks").is_some(),
            "{}: no networks",
            spec.id
        );
    }
    let rails = &repo.specs[&baton_core::spec::AppId::parse("/hello-rails").unwrap()].app;
    let mut canonical = rails.clone();
    marathon_form(&mut canonical);
    assert!(
        canonical["fetch"].as_array().is_some_and(|f| !f.is_empty()),
        "uris became fetch"
    );
}

/// Strip what Marathon fills in by default (top level) and the status fields: what a user would
/// have written.
fn strip_defaults(live: &Value) -> Value {
    let mut spec = live.clone();
    let table = defaults::table();
    if let Value::Object(m) = &mut spec {
        for f in baton_core::spec::normalize::STATUS_FIELDS {
            m.remove(*f);
        }
        m.retain(|k, v| {
            let default = table.get(k).map(|d| d.get("$default").unwrap_or(d));
            let empty = v.is_null()
                || v.as_array().is_some_and(|a| a.is_empty())
                || v.as_object().is_some_and(|o| o.is_empty());
            !empty && default != Some(v)
        });
    }
    spec
}

#[test]
fn live_group_dumps_normalise_without_noise() {
    let Some(shared) = shared_marathon("live_group_dumps_normalise_without_noise") else {
        return;
    };
    for name in ["apps-100.json", "apps-200.json", "apps-500.json"] {
        let doc = read_json(&shared.join("live").join(name));
        let live = baton_core::app::live::apps_from_response(doc).unwrap();
        assert!(!live.is_empty(), "{name}: no apps");
        let stripped: Vec<(String, Value)> = live
            .iter()
            .map(|a| (a["id"].as_str().unwrap().to_string(), strip_defaults(a)))
            .collect();
        assert!(
            stripped.iter().all(|(_, s)| s.get("cpus").is_some()),
            "non-default fields stay"
        );
        let (_dir, repo) = load_apps(&stripped);
        assert!(repo.is_valid(), "{name}: {}", diagnostics_lines(&repo));
        assert_eq!(repo.specs.len(), live.len(), "{name}");
        for app in &live {
            let id = baton_core::spec::AppId::parse(app["id"].as_str().unwrap()).unwrap();
            let n = noise(&repo.specs[&id].app, app);
            assert!(n.is_empty(), "{name} {id}: {}", n.join("\n"));
        }
    }
}
