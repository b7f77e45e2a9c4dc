//! The `baton` binary's `validate` and `plan` commands: exit codes and what a human reads.

use std::path::Path;
use std::process::{Command, Output};

use baton::commands::load_repo;
use baton_core::plan::{plan, Action, Policy};
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
        baton_core::report::diagnostics_text(&loaded, baton_core::report::Style { color: false })
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

/// `baton ARGS` with a clean environment (no `BATON_*` from the caller), nothing appended.
fn baton_clean(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Every usage error of every command exits 64, never clap's 2 (`plan`'s "changes", `drift`'s
/// "drift"): unknown flags, bad values (those clap checks and those checked after it, such as
/// durations), missing required settings, conflicting flags, an unknown or missing command.
#[test]
fn every_usage_error_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.json");
    std::fs::write(&live, r#"{"apps": []}"#).unwrap();
    let live = live.to_str().unwrap();
    let repo = fixture("specs/valid");
    let repo = repo.to_str().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let m = "http://127.0.0.1:9";
    // (command line, what stderr must name)
    let cases: &[(&[&str], &str)] = &[
        // The program itself.
        (&[], "Usage"),
        (&["frobnicate"], "frobnicate"),
        (&["--colour", "never", "validate"], "--colour"),
        (&["--color", "sometimes", "validate", repo], "sometimes"),
        (&["--log-format", "xml", "validate", repo], "xml"),
        // validate
        (&["validate", "--strict", repo], "--strict"),
        (&["validate", "--format", "xml", repo], "xml"),
        (&["validate", repo, "extra"], "extra"),
        // plan
        (&["plan", "--repo", repo], "--marathon"),
        (
            &["plan", "--repo", repo, "--live", live, "--marathon", m],
            "cannot be used with",
        ),
        (
            &["plan", "--repo", repo, "--live", live, "--bogus"],
            "--bogus",
        ),
        (
            &[
                "plan",
                "--repo",
                repo,
                "--live",
                live,
                "--allow-deletes",
                "-1",
            ],
            "-1",
        ),
        (
            &["plan", "--repo", repo, "--live", live, "--format", "yaml"],
            "yaml",
        ),
        (
            &[
                "plan",
                "--repo",
                repo,
                "--marathon",
                m,
                "--marathon-timeout",
                "soon",
            ],
            "--marathon-timeout",
        ),
        (
            &[
                "plan",
                "--repo",
                repo,
                "--live",
                live,
                "--vault-addr",
                "http://127.0.0.1:9",
            ],
            "token",
        ),
        // drift
        (&["drift", "--repo", repo], "--marathon"),
        (
            &["drift", "--repo", repo, "--live", live, "--marathon", m],
            "cannot be used with",
        ),
        (
            &["drift", "--repo", repo, "--live", live, "--format", "pdf"],
            "pdf",
        ),
        (
            &[
                "drift",
                "--repo",
                repo,
                "--marathon",
                m,
                "--marathon-timeout",
                "1x",
            ],
            "--marathon-timeout",
        ),
        // apply
        (&["apply", "--repo", repo], "--marathon"),
        (
            &[
                "apply",
                "--repo",
                repo,
                "--marathon",
                m,
                "--parallelism",
                "many",
            ],
            "many",
        ),
        (
            &[
                "apply",
                "--repo",
                repo,
                "--marathon",
                m,
                "--lock-wait",
                "soon",
            ],
            "--lock-wait",
        ),
        (
            &["apply", "--repo", repo, "--marathon", m, "--force"],
            "--force",
        ),
        // dev
        (&["dev", "--listen", "nowhere"], "nowhere"),
        (&["dev", "--watch"], "--watch"),
        // dev-scheduler
        (&["dev-scheduler", "--listen", "localhost"], "localhost"),
        (&["dev-scheduler", "--state"], "--state"),
        // serve: clap's checks, and the configuration checked after it (before binding)
        (&["serve", "--sync", "sometimes"], "sometimes"),
        (&["serve", "--listen", "8088"], "8088"),
        (&["serve", "--state-dir", state, "--marathon", m], "--repo"),
        (&["serve", "--repo", repo, "--marathon", m], "--state-dir"),
        (
            &[
                "serve",
                "--repo",
                repo,
                "--state-dir",
                state,
                "--marathon",
                m,
                "--poll-interval",
                "0.5x",
            ],
            "--poll-interval",
        ),
        (
            &["serve", "--config", "/nonexistent/baton.yaml"],
            "/nonexistent/baton.yaml",
        ),
    ];
    let mut wrong = Vec::new();
    for (args, names) in cases {
        let out = baton_clean(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(64) || !stderr.contains(names) {
            wrong.push(format!(
                "baton {}: exit {:?}, stderr: {stderr}",
                args.join(" "),
                out.status.code()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        !std::path::Path::new(state).exists(),
        "a refused serve created its state dir"
    );
}

/// `--help` and `--version` of every command (and `help`) are not errors: exit 0, on stdout.
#[test]
fn help_and_version_exit_0() {
    let commands = [
        "validate",
        "plan",
        "drift",
        "apply",
        "dev",
        "serve",
        "dev-scheduler",
    ];
    let mut lines: Vec<Vec<&str>> = vec![vec!["--help"], vec!["--version"], vec!["help"]];
    for c in commands {
        lines.push(vec![c, "--help"]);
        lines.push(vec!["help", c]);
    }
    for args in lines {
        let out = baton_clean(&args);
        assert_eq!(out.status.code(), Some(0), "baton {}", args.join(" "));
        assert!(!out.stdout.is_empty(), "baton {}", args.join(" "));
    }
}
/// `baton plan` judges `baton.secrets.policies` against the operator's allow-list
/// (`--vault-allowed-policies`, env `BATON_VAULT_ALLOWED_POLICIES`): default none, names
/// trimmed and case-insensitive, `root` never. A spec asking for more is invalid (exit 1) with
/// the policy and the flag named, and its app is not planned.
#[test]
fn plan_refuses_extra_policies_the_operator_did_not_allow() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    write(root, "baton.yaml", "owner: shop\n");
    let app = |policy: &str| {
        format!("cmd: x\nenv:\n  P: \"vault:secret/data/api#p\"\nbaton:\n  secrets:\n    policies: [\"{policy}\"]\n")
    };
    write(root, "apps/api.yaml", &app(" Metrics-Read"));
    let live = root.join("live.json");
    std::fs::write(&live, r#"{"apps": []}"#).unwrap();
    let run = |extra: &[&str], env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.args(["plan", "--color=never", "--format", "json", "--repo"])
            .arg(root)
            .arg("--live")
            .arg(&live)
            .args(extra)
            .env_remove("BATON_VAULT_ALLOWED_POLICIES")
            .env_remove("BATON_VAULT_ADDR");
        if let Some(v) = env {
            cmd.env("BATON_VAULT_ALLOWED_POLICIES", v);
        }
        let out = cmd.output().unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (
            out.status.code(),
            doc,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Not allowed (the default): invalid, the field pointed at, nothing planned for it.
    let (code, doc, _) = run(&[], None);
    assert_eq!(code, Some(1), "{doc:#}");
    crate::support::assert_matches_schema("plan.schema.json", &doc);
    let diag = &doc["diagnostics"][0];
    assert_eq!(diag["pointer"], "/baton/secrets/policies/0", "{doc:#}");
    let msg = diag["message"].as_str().unwrap();
    for words in [
        "`metrics-read`",
        "--vault-allowed-policies",
        "BATON_VAULT_ALLOWED_POLICIES",
    ] {
        assert!(msg.contains(words), "{msg}");
    }
    assert_eq!(doc["plan"]["waves"], json!([]));
    assert_eq!(doc["plan"]["invalid"], json!(["/api"]));
    assert_eq!(doc["vault"]["issues"][0]["app"], "/api");

    // Allowed by flag or env, whatever the case and spaces: planned, with the policy granted.
    for (args, env) in [
        (
            &["--vault-allowed-policies", "other,metrics-read"][..],
            None,
        ),
        (&[][..], Some(" METRICS-READ ,other")),
    ] {
        let (code, doc, _) = run(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {doc:#}");
        crate::support::assert_matches_schema("plan.schema.json", &doc);
        let role = doc["vault"]["before_apps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "role")
            .unwrap();
        assert_eq!(role["name"], "baton-shop_api");
        assert!(
            role["details"]
                .as_array()
                .unwrap()
                .contains(&json!("token_policies=baton-shop_api,metrics-read")),
            "{role}"
        );
    }

    // `root` is never allowed: not in the list, not in a spec whatever the list says.
    // A list naming it is a usage error (64), as every bad flag value.
    let (code, _, stderr) = run(&["--vault-allowed-policies", "metrics-read, Root"], None);
    assert_eq!(code, Some(64));
    assert!(stderr.contains("`root` can never be allowed"), "{stderr}");
    write(root, "apps/api.yaml", &app(" Root"));
    let (code, doc, _) = run(&["--vault-allowed-policies", "metrics-read"], None);
    assert_eq!(code, Some(1), "{doc:#}");
    let msg = doc["diagnostics"][0]["message"].as_str().unwrap();
    assert!(msg.contains("`root`, which is never granted"), "{msg}");

    // `baton serve` checks its list before it binds or connects to anything.
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["serve", "--repo"])
        .arg(root)
        .arg("--state-dir")
        .arg(root.join("state"))
        .args([
            "--marathon",
            "http://127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--vault-addr", "http://127.0.0.1:9"])
        .env("BATON_WEBHOOK_SECRET", "w")
        .env("BATON_VAULT_TOKEN", "t")
        .env("BATON_VAULT_ALLOWED_POLICIES", "metrics-read,root")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--vault-allowed-policies")
            && stderr.contains("`root` can never be allowed"),
        "{stderr}"
    );
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
            baton_core::plan::no_owner_reason("baton")
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
        baton_core::plan::no_owner_reason("baton")
    );

    // Without a held delete the note still says that nothing would be deleted.
    let only_web = deployed_state(&repo, "c0ffee");
    std::fs::write(&live_file, json!({ "apps": only_web }).to_string()).unwrap();
    let (code, text) = plan_run(&repo, &live_file, "text");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "note: {}",
            baton_core::plan::no_owner_reason("baton")
        )),
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

/// A bad value is named by where it came from: the flag, the environment variable, or the
/// config file's key and path; a flag wins over its environment variable. Exit 64 each time.
#[test]
fn a_bad_value_names_the_flag_env_var_or_config_key_that_gave_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let repo = fixture("specs/valid");
    let repo = repo.to_str().unwrap();
    let m = "http://127.0.0.1:9";
    let config = dir.path().join("baton.yaml");
    std::fs::write(&config, "poll-interval: 0.5x\n").unwrap();
    let config = config.to_str().unwrap();
    let serve = [
        "serve",
        "--repo",
        repo,
        "--state-dir",
        state,
        "--marathon",
        m,
    ];
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stderr)
    };
    let with = |extra: &[&'static str]| [&serve[..], extra].concat();
    type Env<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(Vec<&str>, Env, String)> = vec![
        (
            with(&["--poll-interval", "0.5x"]),
            vec![],
            "bad setting --poll-interval: ".into(),
        ),
        (
            serve.to_vec(),
            vec![("BATON_POLL_INTERVAL", "0.5x")],
            "bad setting --poll-interval (from the environment variable BATON_POLL_INTERVAL): "
                .into(),
        ),
        (
            [&serve[..], &["--config", config]].concat(),
            vec![],
            format!(
                "bad setting --poll-interval (from the config key `poll-interval` in {config}): "
            ),
        ),
        (
            vec!["plan", "--repo", repo, "--marathon", m],
            vec![("BATON_MARATHON_TIMEOUT", "soon")],
            "--marathon-timeout (from the environment variable BATON_MARATHON_TIMEOUT)".into(),
        ),
    ];
    for (args, env, said) in cases {
        let (code, stderr) = run(&args, &env);
        assert_eq!(code, Some(64), "baton {args:?} {env:?}: {stderr}");
        assert!(stderr.contains(&said), "baton {args:?} {env:?}: {stderr}");
    }
    // The flag over its environment variable: the bad env value is never read, the plan runs
    // (and fails to reach the scheduler: exit 1, not a usage error).
    let (code, stderr) = run(
        &[
            "plan",
            "--repo",
            repo,
            "--marathon",
            m,
            "--marathon-timeout",
            "5s",
        ],
        &[("BATON_MARATHON_TIMEOUT", "soon")],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(!stderr.contains("--marathon-timeout"), "{stderr}");
}

/// `baton plan` reads its Vault settings with `baton serve`'s checks: an address that is no
/// http(s) URL, or a token file without an address, is a usage error naming the setting.
#[test]
fn plan_checks_vault_settings_as_serve_does() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.json");
    std::fs::write(&live, r#"{"apps": []}"#).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s.t\n").unwrap();
    let (live, token) = (live.to_str().unwrap(), token.to_str().unwrap());
    let repo = fixture("specs/valid");
    let state = dir.path().join("state");
    let plan = ["plan", "--repo", repo.to_str().unwrap(), "--live", live];
    let serve = [
        "serve",
        "--repo",
        repo.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--marathon",
        "http://127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
    ];
    for (vault, said) in [
        (
            &["--vault-addr", "vault:8200", "--vault-token-file", token][..],
            "bad setting --vault-addr: must be an http:// or https:// URL",
        ),
        (
            &["--vault-token-file", token][..],
            "bad setting --vault-token-file: given without --vault-addr",
        ),
    ] {
        for command in [&plan[..], &serve[..]] {
            let args = [command, vault].concat();
            let out = baton_clean(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "baton {args:?}: {stderr}");
            assert!(stderr.contains(said), "baton {args:?}: {stderr}");
        }
    }
}

/// Every stderr line of `out` parses as a JSON object; returns them.
fn json_lines(what: &str, out: &Output) -> Vec<Value> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.trim().is_empty(), "{what}: nothing on stderr");
    stderr
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}: a stderr line is not JSON ({e}): {line}"));
            assert!(v.is_object(), "{what}: {line}");
            v
        })
        .collect()
}

/// The message of the ERROR line among `lines` (tracing's JSON: `fields.message`).
fn error_message(what: &str, lines: &[Value]) -> String {
    lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .and_then(|l| l["fields"]["message"].as_str())
        .unwrap_or_else(|| panic!("{what}: no ERROR line in {lines:?}"))
        .to_string()
}

/// Issue 16: with `--log-format json` (or `BATON_LOG_FORMAT=json`) every line on stderr is JSON,
/// errors included: a failing command's final error (it was plain `error: ...`), a
/// configuration error found after parsing, clap's own usage errors (the command line that
/// asked for JSON did not parse), and the dev scheduler's "listening" line.
#[test]
fn json_logs_cover_every_stderr_line_errors_included() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fixture("specs/valid");
    let repo = repo.to_str().unwrap();
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let m = "http://127.0.0.1:9";
    // (what, command line, exit code, what the error names)
    let cases: &[(&str, &[&str], i32, &str)] = &[
        (
            "a failing command",
            &[
                "--log-format",
                "json",
                "plan",
                "--repo",
                repo,
                "--live",
                missing,
            ],
            1,
            "missing.json",
        ),
        (
            "a bad value checked after parsing",
            &[
                "--log-format=json",
                "serve",
                "--repo",
                repo,
                "--state-dir",
                state,
                "--marathon",
                m,
                "--poll-interval",
                "0.5x",
            ],
            64,
            "--poll-interval",
        ),
        (
            "an unknown flag",
            &["--log-format", "json", "plan", "--repo", repo, "--bogus"],
            64,
            "--bogus",
        ),
        ("a missing command", &["--log-format", "json"], 64, "Usage"),
    ];
    for (what, args, code, names) in cases {
        let out = baton_clean(args);
        assert_eq!(out.status.code(), Some(*code), "{what}: {out:?}");
        let lines = json_lines(what, &out);
        let message = error_message(what, &lines);
        assert!(message.contains(names), "{what}: {message}");
        assert!(!message.starts_with("error: error"), "{what}: {message}");
    }

    // The environment variable asks for JSON too, also when the flags do not parse.
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["plan", "--repo", repo, "--bogus"])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BATON_LOG_FORMAT", "json")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let lines = json_lines("BATON_LOG_FORMAT=json", &out);
    assert!(error_message("BATON_LOG_FORMAT=json", &lines).contains("--bogus"));

    // Text stays text: the same failure, plain.
    let out = baton_clean(&["plan", "--repo", repo, "--live", missing]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.starts_with("error: "), "{text}");
}

/// Issue 16: a long-running command's own lines are JSON too (`dev-scheduler`'s "listening"
/// line was a plain `eprintln!`).
#[test]
fn json_logs_of_the_dev_scheduler_are_json_from_the_first_line() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::BufRead;

    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "--log-format",
            "json",
            "dev-scheduler",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("BATON_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut lines = Vec::new();
    let listening = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("no listening line in time; got {lines:?}");
        };
        lines.push(line.clone());
        if line.contains("listening") {
            break line;
        }
    };
    kill(pid, Signal::SIGTERM).unwrap();
    // The rest of stderr until it closes (the process exits).
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        lines.push(line);
    }
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = kill(pid, Signal::SIGKILL);
            panic!("the dev scheduler did not stop on SIGTERM: {lines:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}: {lines:?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a stderr line is not JSON ({e}): {line}"));
        assert!(v.is_object(), "{line}");
    }
    let v: Value = serde_json::from_str(&listening).unwrap();
    assert!(
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("dev scheduler listening on http://127.0.0.1:")),
        "{v}"
    );
}
