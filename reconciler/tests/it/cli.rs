//! The `baton` binary's `validate` and `plan` commands: exit codes and what a human reads.

use std::path::Path;
use std::process::{Command, Output};

use baton::commands::load_repo;
use baton::plan::{plan, Action, Policy};
use serde_json::{json, Value};

use crate::support::fixture;

fn baton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .arg("--color=never")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn validate_exits_0_on_a_valid_repo() {
    let dir = fixture("specs/valid");
    let out = baton(&["validate", dir.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text, "valid: 2 apps, 0 invalid; 0 errors, 0 warnings in 0 files\n",
        "a valid repo prints only the summary"
    );
}

#[test]
fn validate_groups_human_output_by_file() {
    // Two broken files with two findings each, a file with a warning, and a valid file; the
    // dependency error is found by the repo-wide pass, after every file was read.
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    write(root, "apps/a/one.yaml", "cmd: x\ninstance: 2\ncpus: many\n");
    write(
        root,
        "apps/b/two.json",
        r#"{"cmd": "x", "mem": -1, "labls": {}}"#,
    );
    write(
        root,
        "apps/c/three.yaml",
        "cmd: x\ncontainer:\n  docker: {image: nginx, forcePull: true}\nbaton: {dependsOn: [/nowhere]}\n",
    );
    write(root, "apps/ok.yaml", "cmd: x\n");
    let out = baton(&["validate", root.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);

    // What the binary prints is exactly the library's report of that repo.
    let loaded = load_repo(root).unwrap();
    assert_eq!(
        text,
        baton::report::diagnostics_text(&loaded, baton::report::Style { color: false })
    );

    // Each file is a heading exactly once, followed by its findings (indented), in file order;
    // the valid file gets no heading; the summary comes last.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            assert_eq!(
                line,
                "invalid: 1 apps, 3 invalid; 5 errors, 1 warnings in 3 files"
            );
        } else if let Some(finding) = line.strip_prefix("  ") {
            groups
                .last_mut()
                .expect("a finding before any file heading")
                .1
                .push(finding.to_string());
        } else {
            groups.push((line.to_string(), Vec::new()));
        }
    }
    let files: Vec<&str> = groups.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        files,
        ["apps/a/one.yaml", "apps/b/two.json", "apps/c/three.yaml"]
    );
    let expected: [&[&str]; 3] = [
        &[
            "error       2:1 /instance: unknown field `instance` (did you mean `instances`?)",
            "error       3:1 /cpus: expected number, found a string",
        ],
        &[
            "error      1:14 /mem: must be at least 0, found -1",
            "error      1:25 /labls: unknown field `labls` (did you mean `labels`?)",
        ],
        &[
            "warning    3:26 /container/docker/forcePull: unknown field `forcePull` (did you mean `forcePullImage`?); Marathon ignores it",
            "error      4:21 /baton/dependsOn/0: `/nowhere` is not an app of this repo",
        ],
    ];
    for (group, lines) in groups.iter().zip(expected) {
        assert_eq!(group.1, lines, "under {}:\n{text}", group.0);
    }
}

/// The fixture repo and a `--live` file holding exactly what `baton` would deploy for it.
fn deployed_state(dir: &Path, commit: &str) -> Vec<Value> {
    let repo = load_repo(dir).unwrap();
    let policy = Policy {
        commit: commit.into(),
        allow_deletes: None,
    };
    let from_nothing = plan(&repo, &[], &policy);
    assert!(from_nothing.changes().all(|c| c.action == Action::Create));
    let bodies: Vec<Value> = from_nothing
        .changes()
        .map(|c| c.body.clone().unwrap())
        .collect();
    assert_eq!(bodies.len(), repo.specs.len());
    bodies
}

#[test]
fn plan_exits_0_when_the_live_state_is_what_it_would_deploy() {
    let dir = fixture("specs/valid");
    let live = tempfile::tempdir().unwrap();
    let live_file = live.path().join("live.json");
    let mut apps = deployed_state(&dir, "c0ffee");
    std::fs::write(&live_file, json!({ "apps": apps }).to_string()).unwrap();
    let args = |format: &'static str| {
        vec![
            "plan".to_string(),
            "--repo".into(),
            dir.display().to_string(),
            "--live".into(),
            live_file.display().to_string(),
            "--commit".into(),
            "c0ffee".into(),
            "--format".into(),
            format.into(),
        ]
    };
    let run = |format| {
        let a = args(format);
        baton(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let text = run("text");
    assert_eq!(text.status.code(), Some(0), "{}", stdout(&text));
    assert!(
        stdout(&text).contains("No changes: the scheduler matches the repo."),
        "{}",
        stdout(&text)
    );
    let json_out = run("json");
    assert_eq!(json_out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(doc["plan"]["summary"]["unchanged"], 2);
    assert_eq!(doc["plan"]["waves"], json!([]));

    // The same live state with one field changed is a change (exit 2): the 0 above is earned.
    apps[0]["mem"] = json!(4096);
    std::fs::write(&live_file, json!({ "apps": apps }).to_string()).unwrap();
    let changed = run("text");
    assert_eq!(changed.status.code(), Some(2), "{}", stdout(&changed));
}

/// `baton plan --repo DIR --live FILE` with the flags every run here uses: (exit code, stdout).
fn plan_run(dir: &Path, live_file: &Path, format: &str) -> (Option<i32>, String) {
    let out = baton(&[
        "plan",
        "--repo",
        dir.to_str().unwrap(),
        "--live",
        live_file.to_str().unwrap(),
        "--commit",
        "c0ffee",
        "--format",
        format,
    ]);
    (out.status.code(), stdout(&out))
}

#[test]
fn plan_without_an_owner_holds_every_delete_and_says_how_to_fix_it() {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    write(&repo, "apps/web.yaml", "cmd: ./web\n");
    // /web as this repo would deploy it; /stale, labelled with the default owner, is maybe
    // another repo's that never set an owner either.
    let mut apps = deployed_state(&repo, "c0ffee");
    apps.push(json!({"id": "/stale", "cmd": "sleep 1", "labels": {"baton.dev/owner": "baton"}}));
    let live_file = root.path().join("live.json");
    std::fs::write(&live_file, json!({ "apps": apps }).to_string()).unwrap();

    let (code, text) = plan_run(&repo, &live_file, "text");
    assert_eq!(code, Some(0), "nothing would be written: {text}");
    assert!(
        text.starts_with(
            "Plan: 0 to create, 0 to update, 0 to delete, 1 unchanged (owner baton by default,"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "held 1 delete: /stale: {}",
            baton::plan::no_owner_reason("baton")
        )),
        "{text}"
    );
    assert!(
        text.contains("so it deletes nothing; set `owner:` in baton.yaml"),
        "{text}"
    );
    let (code, out) = plan_run(&repo, &live_file, "json");
    assert_eq!(code, Some(0));
    let doc: Value = serde_json::from_str(&out).unwrap();
    crate::support::assert_matches_schema("plan.schema.json", &doc);
    assert_eq!(doc["plan"]["owner_explicit"], false);
    assert_eq!(doc["plan"]["held"][0]["app"], "/stale");
    assert_eq!(
        doc["plan"]["held"][0]["reason"],
        baton::plan::no_owner_reason("baton")
    );

    // Without a held delete the note still says that nothing would be deleted.
    let only_web = deployed_state(&repo, "c0ffee");
    std::fs::write(&live_file, json!({ "apps": only_web }).to_string()).unwrap();
    let (code, text) = plan_run(&repo, &live_file, "text");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("note: {}", baton::plan::no_owner_reason("baton"))),
        "{text}"
    );

    // Doing what the message says: the delete is planned (exit 2), and the note is gone.
    std::fs::write(&live_file, json!({ "apps": apps }).to_string()).unwrap();
    write(&repo, "baton.yaml", "owner: baton\n");
    let (code, text) = plan_run(&repo, &live_file, "text");
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("- delete /stale"), "{text}");
    assert!(!text.contains("owner:"), "{text}");
}

#[test]
fn plan_with_id_prefixes_exits_1_naming_each_spec_outside_and_reports_owned_apps_outside() {
    let dir = fixture("plan/id-prefixes");
    let live_file = dir.join("live.json");
    let (code, text) = plan_run(&dir, &live_file, "text");
    assert_eq!(
        code,
        Some(1),
        "specs outside idPrefixes are invalid: {text}"
    );
    for (file, app) in [
        ("apps/shopping/cart.yaml", "/shopping/cart"),
        ("apps/web/api.yaml", "/web/api"),
    ] {
        let heading = text
            .find(&format!("{file}\n"))
            .unwrap_or_else(|| panic!("{text}"));
        let line = text[heading..].lines().nth(1).unwrap();
        assert!(
            line.contains(&format!("the app id `{app}` is outside"))
                && line.contains("(idPrefixes in baton.yaml: `/shop`, `/shared/cache`)"),
            "{line}"
        );
    }
    assert!(
        text.contains("invalid: /shopping/cart, /web/api (spec invalid; left untouched)"),
        "{text}"
    );
    assert!(
        text.contains(
            "out of scope: /legacy/batch, /shared/cache-old, /shopping/old labelled `shop-team` \
             but outside idPrefixes (`/shop`, `/shared/cache`); never touched"
        ),
        "{text}"
    );
    let (code, out) = plan_run(&dir, &live_file, "json");
    assert_eq!(code, Some(1));
    let doc: Value = serde_json::from_str(&out).unwrap();
    crate::support::assert_matches_schema("plan.schema.json", &doc);
    assert_eq!(
        doc["plan"]["id_prefixes"],
        json!(["/shop", "/shared/cache"])
    );
    assert_eq!(
        doc["plan"]["out_of_scope"],
        json!(["/legacy/batch", "/shared/cache-old", "/shopping/old"])
    );
    let written: Vec<&str> = doc["plan"]["waves"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["changes"].as_array().unwrap())
        .map(|c| c["app"].as_str().unwrap())
        .collect();
    assert!(
        written
            .iter()
            .all(|a| a.starts_with("/shop/") || *a == "/shared/cache"),
        "{written:?}"
    );
}
