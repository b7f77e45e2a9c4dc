//! `baton apply` end to end on the dev scheduler: create, update, scale, prune with budget,
//! dependency order, a failing app rolled back at its deadline, 409, and restart convergence
//! after `kill -9`.

use std::time::Duration;

use baton::apply::{ApplyOptions, ApplyReport, Outcome, ProgressEvent};
use baton::commands;
use baton_core::plan::{Plan, Policy};
use baton_e2e::devsched::{baton_bin, DevScheduler, TempRepo};
use baton_marathon::marathon::Marathon;
use serde_json::json;

fn options() -> ApplyOptions {
    ApplyOptions {
        poll_interval: Duration::from_millis(100),
        lock_wait: Duration::from_secs(2),
        ..ApplyOptions::default()
    }
}

async fn sync_with(
    repo: &TempRepo,
    client: &Marathon,
    policy: &Policy,
    options: &ApplyOptions,
) -> (Plan, ApplyReport, Vec<ProgressEvent>) {
    let loaded = commands::load_repo(repo.path()).unwrap();
    assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
    let mut events = Vec::new();
    let (plan, report) = commands::sync(&loaded, client, policy, options, &mut |e| events.push(e))
        .await
        .unwrap();
    (plan, report, events)
}

async fn sync(repo: &TempRepo, client: &Marathon) -> (Plan, ApplyReport, Vec<ProgressEvent>) {
    sync_with(repo, client, &policy(None), &options()).await
}

fn policy(allow_deletes: Option<usize>) -> Policy {
    Policy {
        commit: "e2e".into(),
        allow_deletes,
    }
}

fn outcome<'r>(report: &'r ApplyReport, app: &str) -> &'r Outcome {
    &report
        .apps
        .iter()
        .find(|r| r.app.as_str() == app)
        .unwrap_or_else(|| panic!("{app} not in {report:?}"))
        .outcome
}

fn sleeper(extra: &str) -> String {
    format!("cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\n{extra}")
}

#[tokio::test]
async fn create_update_scale_and_prune_within_the_budget() {
    let sched = DevScheduler::start().await;
    let client = sched.client();
    let repo = TempRepo::new("owner: e2e\nprune:\n  maxDeletes: 1\n  maxDeletesPercent: 0\n");
    for name in ["a", "b", "c"] {
        repo.write(&format!("{name}.yaml"), &sleeper(""));
    }

    let (plan, report, _) = sync(&repo, &client).await;
    assert_eq!(plan.summary.create, 3);
    assert!(report.converged(), "{report:?}");
    let apps = sched.apps().await;
    assert_eq!(apps.len(), 3);
    assert!(
        apps.iter().all(|a| a["tasksRunning"] == json!(1)),
        "{apps:?}"
    );

    // Converged: a second run writes nothing.
    let (plan, report, events) = sync(&repo, &client).await;
    assert!(plan.is_empty() && report.apps.is_empty() && events.is_empty());

    // Update and scale.
    repo.write("a.yaml", &sleeper("env:\n  COLOR: blue\n"));
    repo.write("b.yaml", &sleeper("instances: 2\n"));
    let (plan, report, _) = sync(&repo, &client).await;
    assert_eq!(plan.summary.update, 2);
    assert!(report.converged(), "{report:?}");
    let a = sched.app("/a").await.unwrap();
    assert_eq!(a["env"]["COLOR"], json!("blue"));
    let b = sched.app("/b").await.unwrap();
    assert_eq!(b["tasksRunning"], json!(2));

    // Removing two files exceeds the budget of one: both held, nothing deleted.
    repo.remove("b.yaml");
    repo.remove("c.yaml");
    let (_, report, _) = sync(&repo, &client).await;
    assert!(matches!(outcome(&report, "/b"), Outcome::Held { .. }));
    assert!(matches!(outcome(&report, "/c"), Outcome::Held { .. }));
    assert_eq!(sched.apps().await.len(), 3);
    // With --allow-deletes 2 they go, and their tasks with them.
    let (_, report, _) = sync_with(&repo, &client, &policy(Some(2)), &options()).await;
    assert!(report.converged(), "{report:?}");
    let ids: Vec<String> = sched
        .apps()
        .await
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["/a"]);
    sched.stop().await;
}

#[tokio::test]
async fn dependencies_deploy_first_and_a_failing_app_is_rolled_back_at_its_deadline() {
    let sched = DevScheduler::start().await;
    let client = sched.client();
    let repo = TempRepo::new("owner: e2e\n");
    repo.write("db.yaml", &sleeper(""));
    repo.write("web.yaml", &sleeper("baton:\n  dependsOn: [/db]\n"));
    repo.write(
        "broken.yaml",
        "cmd: exit 3\ncpus: 0.01\nmem: 8\nbaton:\n  deadline: 3s\n",
    );
    repo.write(
        "needs-broken.yaml",
        &sleeper("baton:\n  dependsOn: [/broken]\n"),
    );

    let (_, report, events) = sync(&repo, &client).await;
    // Order: /db's deployment finished before /web was written.
    let pos = |f: &dyn Fn(&ProgressEvent) -> bool| events.iter().position(f).unwrap();
    let db_done =
        pos(&|e| matches!(e, ProgressEvent::Finished { result } if result.app.as_str() == "/db"));
    let web_start =
        pos(&|e| matches!(e, ProgressEvent::Started { app, .. } if app.as_str() == "/web"));
    assert!(db_done < web_start, "{events:?}");
    assert_eq!(outcome(&report, "/db"), &Outcome::Converged);
    assert_eq!(outcome(&report, "/web"), &Outcome::Converged);

    let Outcome::Failed { reason } = outcome(&report, "/broken") else {
        panic!("{report:?}");
    };
    assert!(reason.contains("rolled back"), "{reason}");
    assert!(reason.contains("last task failure"), "{reason}");
    assert!(
        matches!(outcome(&report, "/needs-broken"), Outcome::Skipped { because } if because.as_str() == "/broken")
    );
    assert!(sched.app("/needs-broken").await.is_none());
    // The rollback of a create removes the app again.
    sched
        .wait_for("the rollback of /broken", |apps| {
            apps.iter().all(|a| a["id"] != json!("/broken"))
        })
        .await;
    sched.stop().await;
}

#[tokio::test]
async fn a_locked_app_is_waited_for_then_reported_with_the_deployment_id() {
    let sched = DevScheduler::start().await;
    let client = sched.client();
    // Someone else deploys an app that never gets healthy (nothing answers its health check):
    // its deployment locks it. (A task that exits at once was racy: seen running for a moment
    // on a loaded machine, it ended the deployment.)
    let lock = sched
        .put(&json!({
            "id": "/locked", "cmd": "exec sleep 1000", "cpus": 0.01, "mem": 8,
            "portDefinitions": [{"port": 0}],
            "healthChecks": [{"protocol": "HTTP", "portIndex": 0, "path": "/",
                              "intervalSeconds": 1, "gracePeriodSeconds": 600}]
        }))
        .await;
    let repo = TempRepo::new("owner: e2e\n");
    repo.write("locked.yaml", &sleeper(""));
    repo.write("free.yaml", &sleeper(""));
    let (_, report, events) = sync(&repo, &client).await;
    let Outcome::Failed { reason } = outcome(&report, "/locked") else {
        panic!("{report:?}");
    };
    assert!(reason.contains(&lock), "{reason}");
    assert!(events.iter().any(
        |e| matches!(e, ProgressEvent::Locked { deployments, .. } if deployments.contains(&lock))
    ));
    assert_eq!(outcome(&report, "/free"), &Outcome::Converged);
    // Not forced: the other deployment still runs and the app keeps its definition.
    assert_eq!(
        sched.app("/locked").await.unwrap()["cmd"],
        json!("exec sleep 1000")
    );
    sched.stop().await;
}

// Multi-threaded: the blocking wait for the binary must not stall the in-process scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_apply_then_rerun_converges_without_touching_unowned_apps() {
    let bin = baton_bin();
    let sched = DevScheduler::start().await;
    let unowned = json!({"id": "/theirs", "cmd": "exec sleep 1000", "cpus": 0.01, "mem": 8});
    sched.put(&unowned).await;
    sched
        .wait_for("/theirs up", |a| {
            a.iter().any(|a| a["tasksRunning"] == json!(1))
        })
        .await;
    let theirs_version = sched.app("/theirs").await.unwrap()["version"].clone();

    let repo = TempRepo::new("owner: e2e\n");
    // /first's deployment cannot finish before the test creates `ready`: the run is killed
    // while it waits for it, however slowly this machine runs.
    let gate = tempfile::tempdir().unwrap();
    let ready = gate.path().join("ready");
    repo.write(
        "first.yaml",
        &sleeper(&format!(
            "healthChecks:\n  - protocol: COMMAND\n    command: {{value: 'test -f {}'}}\n    \
             gracePeriodSeconds: 300\n    intervalSeconds: 1\n    maxConsecutiveFailures: 0\n",
            ready.display()
        )),
    );
    // Later waves: killed before they start.
    for i in 0..4 {
        repo.write(
            &format!("later-{i}.yaml"),
            &sleeper("baton:\n  dependsOn: [/first]\n"),
        );
    }
    let mut child = std::process::Command::new(&bin)
        .args(["apply", "--marathon", &sched.url, "--repo"])
        .arg(repo.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it as soon as the first write was accepted.
    let stdout = child.stdout.take().unwrap();
    let first_line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("deploying"))
    })
    .await
    .unwrap();
    assert!(first_line.is_some_and(|l| l.contains("/first")));
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    assert!(sched.app("/later-0").await.is_none());
    std::fs::write(&ready, "").unwrap();
    sched
        .wait_for("/first healthy and deployed", |apps| {
            apps.iter().any(|a| {
                a["id"] == json!("/first")
                    && a["tasksHealthy"] == json!(1)
                    && a["deployments"].as_array().is_some_and(|d| d.is_empty())
            })
        })
        .await;
    let first_version = sched.app("/first").await.unwrap()["version"].clone();
    let writes_before = sched.writes().await;

    let out = std::process::Command::new(&bin)
        .args(["apply", "--marathon", &sched.url, "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // /first was created by the killed run; the re-run leaves it as it is (no second create,
    // no update) and writes exactly the four apps that were missing.
    assert_eq!(
        sched.app("/first").await.unwrap()["version"],
        first_version,
        "{text}"
    );
    assert_eq!(sched.writes().await - writes_before, 4, "{text}");
    let apps = sched.apps().await;
    let mut ids: Vec<&str> = apps.iter().filter_map(|a| a["id"].as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        ["/first", "/later-0", "/later-1", "/later-2", "/later-3", "/theirs"]
    );
    let theirs = sched.app("/theirs").await.unwrap();
    assert_eq!(theirs["version"], theirs_version);
    assert!(theirs.pointer("/labels/baton.dev~1owner").is_none());

    // And once more: nothing to do, exit 0, no API write.
    let writes_converged = sched.writes().await;
    let out = std::process::Command::new(&bin)
        .args(["apply", "--marathon", &sched.url, "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
    assert_eq!(
        sched.writes().await,
        writes_converged,
        "a converged re-run writes nothing"
    );
    sched.stop().await;
}

// Multi-threaded: the blocking wait for the binary must not stall the in-process scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_3_when_an_app_fails_and_0_once_fixed() {
    let bin = baton_bin();
    let sched = DevScheduler::start().await;
    let repo = TempRepo::new("owner: e2e\n");
    repo.write("ok.yaml", &sleeper(""));
    repo.write(
        "bad.yaml",
        "cmd: exit 3\ncpus: 0.01\nmem: 8\nbaton:\n  deadline: 2s\n",
    );
    let run = || {
        std::process::Command::new(&bin)
            .args(["apply", "--marathon", &sched.url, "--repo"])
            .arg(repo.path())
            .output()
            .unwrap()
    };
    let out = run();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("/bad") && text.contains("failed"), "{text}");
    assert!(sched.app("/ok").await.is_some());
    repo.write("bad.yaml", &sleeper(""));
    let out = run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    sched.stop().await;
}

/// `baton apply` on `repo` against `sched`: (exit code, stdout).
fn apply_bin(
    bin: &std::path::Path,
    sched: &DevScheduler,
    repo: &TempRepo,
) -> (Option<i32>, String) {
    let out = std::process::Command::new(bin)
        .args(["apply", "--color=never", "--marathon", &sched.url, "--repo"])
        .arg(repo.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    (out.status.code(), text)
}

// Multi-threaded: the blocking wait for the binary must not stall the in-process scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_owner_apply_creates_and_updates_but_deletes_nothing() {
    let bin = baton_bin();
    let sched = DevScheduler::start().await;
    // Another repo that never set an owner either: its app carries the default owner label.
    let theirs = json!({"id": "/other-repo/api", "cmd": "exec sleep 1000", "cpus": 0.01,
                        "mem": 8, "labels": {"baton.dev/owner": "baton"}});
    sched.put(&theirs).await;
    let repo = TempRepo::new("");
    std::fs::remove_file(repo.path().join("baton.yaml")).unwrap();
    repo.write("web.yaml", &sleeper(""));

    let (code, text) = apply_bin(&bin, &sched, &repo);
    assert_eq!(code, Some(0), "{text}");
    assert!(sched.app("/web").await.is_some(), "creates go on");
    let held = text
        .lines()
        .find(|l| l.contains("/other-repo/api"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        held.contains("held") && held.contains(&baton_core::plan::no_owner_reason("baton")),
        "{held}"
    );
    assert!(
        text.contains("1 converged, 0 failed, 0 skipped, 1 held"),
        "{text}"
    );
    let version = sched.app("/other-repo/api").await.unwrap()["version"].clone();

    // Updates go on too; the other repo's app is still left alone.
    repo.write("web.yaml", &sleeper("env:\n  COLOR: blue\n"));
    let (code, text) = apply_bin(&bin, &sched, &repo);
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(sched.app("/web").await.unwrap()["env"]["COLOR"], "blue");
    assert_eq!(
        sched.app("/other-repo/api").await.unwrap()["version"],
        version
    );

    // With nothing held, the note still says why nothing would be deleted.
    sched
        .put(
            &json!({"id": "/other-repo/api", "cmd": "exec sleep 1000", "cpus": 0.01,
                      "mem": 8, "labels": {"baton.dev/owner": "another"}}),
        )
        .await;
    let (code, text) = apply_bin(&bin, &sched, &repo);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "note: {}",
            baton_core::plan::no_owner_reason("baton")
        )),
        "{text}"
    );
    sched.stop().await;
}

// Multi-threaded: the blocking wait for the binary must not stall the in-process scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_with_id_prefixes_touches_nothing_outside_them() {
    let bin = baton_bin();
    let sched = DevScheduler::start().await;
    // This owner's apps outside the prefixes: one with a spec in the repo, one without.
    for (id, cmd) in [
        ("/web/api", "exec sleep 1001"),
        ("/legacy/batch", "exec sleep 1002"),
    ] {
        sched
            .put(&json!({"id": id, "cmd": cmd, "cpus": 0.01, "mem": 8,
                         "labels": {"baton.dev/owner": "e2e"}}))
            .await;
    }
    let before: Vec<serde_json::Value> = sched.apps().await;
    let version = |apps: &[serde_json::Value], id: &str| {
        apps.iter()
            .find(|a| a["id"] == id)
            .map(|a| a["version"].clone())
    };
    let repo = TempRepo::new("owner: e2e\nidPrefixes: [/shop/]\n");
    repo.write("shop/web.yaml", &sleeper(""));
    repo.write("web/api.yaml", &sleeper(""));

    let (code, text) = apply_bin(&bin, &sched, &repo);
    assert_eq!(
        code,
        Some(1),
        "a spec outside idPrefixes is invalid: {text}"
    );
    assert!(
        text.contains("apps/web/api.yaml")
            && text.contains("the app id `/web/api` is outside the ids this repo may manage (idPrefixes in baton.yaml: `/shop`)"),
        "{text}"
    );
    assert!(
        text.contains("out of scope: /legacy/batch labelled `e2e` but outside idPrefixes (`/shop`); never touched"),
        "{text}"
    );
    assert!(sched.app("/shop/web").await.is_some(), "inside: created");
    let after = sched.apps().await;
    for id in ["/web/api", "/legacy/batch"] {
        assert_eq!(version(&after, id), version(&before, id), "{id} untouched");
    }
    assert_eq!(after.len(), 3, "{after:?}");
    sched.stop().await;
}
