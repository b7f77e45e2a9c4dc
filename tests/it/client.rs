//! `baton status`, `baton sync`, `baton history` as an operator runs them against a real
//! `baton serve` (manual sync mode, an API token) and the dev scheduler: a per-app sync writes
//! only the app it names and `--wait` exits with that cycle's outcome; the exit codes of the
//! contract (0, 2 out of sync, 1 unknown app, 4 unreachable or token refused); JSON output
//! validated against its schema.

use std::process::Command;

use baton_e2e::daemon::{status_app, Daemon};
use baton_e2e::devsched::{baton_bin, DevScheduler, TempRepo};
use serde_json::Value;

/// `baton <args> --server <api>` with a clean client environment (the token only when given,
/// from `BATON_API_TOKEN`); (exit code, stdout, stderr).
fn baton(api: &str, args: &[&str], token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(baton_bin());
    cmd.args(args).args(["--server", api]);
    cmd.env_remove("BATON_API_TOKEN")
        .env_remove("BATON_API_TOKEN_FILE")
        .env_remove("BATON_SERVER");
    if let Some(t) = token {
        cmd.env("BATON_API_TOKEN", t);
    }
    let out = cmd.output().expect("baton runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run [`baton`] off the async runtime.
async fn run(api: &str, args: &[&str], token: Option<&'static str>) -> (i32, String, String) {
    let api = api.to_string();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        baton(&api, &args, token)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_app_sync_writes_only_that_app_and_the_client_exits_by_the_contract() {
    let sched = DevScheduler::start().await;
    let repo = TempRepo::new("owner: e2e\n");
    let spec = |cmd: &str| format!("cmd: exec {cmd}\ncpus: 0.01\nmem: 8\ninstances: 1\n");
    repo.write("web.yaml", &spec("sleep 1000"));
    repo.write("api.yaml", &spec("sleep 2000"));
    let state = tempfile::tempdir().unwrap();
    let token_file = state.path().join("token");
    std::fs::write(&token_file, "client-tok\n").unwrap();
    let d = Daemon::start(
        &[
            "--marathon".as_ref(),
            sched.url.as_ref(),
            "--sync".as_ref(),
            "manual".as_ref(),
            "--api-token-file".as_ref(),
            token_file.as_os_str(),
            "--repo".as_ref(),
            repo.path().as_os_str(),
            "--state-dir".as_ref(),
            state.path().join("state").as_os_str(),
        ],
        &[],
    )
    .await;
    let api = d.api.clone();
    // Manual mode: the first cycle plans both apps and writes nothing.
    d.until_status("both apps planned", |st| {
        ["/web", "/api"]
            .iter()
            .all(|id| status_app(st, id).is_some_and(|a| a["sync"] == "outOfSync"))
            && st["cycle"].is_null()
    })
    .await;

    // Out of sync: 2, like `drift`; the whole status in JSON as its schema says.
    let (code, out, err) = run(&api, &["status"], None).await;
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("/web") && out.contains("outOfSync"), "{out}");
    let (code, out, err) = run(&api, &["status", "--output", "json"], None).await;
    assert_eq!(code, 2, "{err}");
    baton_e2e::assert_matches_schema("status.schema.json", &serde_json::from_str(&out).unwrap());

    // The token refused: 4, saying so; nothing written.
    let (code, _, err) = run(&api, &["sync", "--app", "/web", "--wait"], None).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("HTTP 401"), "{err}");
    let (code, _, err) = run(&api, &["sync", "--app", "/web"], Some("wrong")).await;
    assert_eq!(code, 4, "{err}");
    // An app the server does not know: the server's 404, exit 1, naming it.
    let (code, _, err) = run(&api, &["sync", "--app", "/nope"], Some("client-tok")).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no app /nope"), "{err}");
    assert!(
        sched.apps().await.is_empty(),
        "nothing refused wrote anything"
    );

    // Sync /web only and wait: 0, the record of the cycle that served it.
    let (code, out, err) = run(
        &api,
        &[
            "sync",
            "--app",
            "web",
            "--wait",
            "--timeout",
            "3m",
            "--output",
            "json",
        ],
        Some("client-tok"),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    baton_e2e::assert_matches_schema("sync.schema.json", &doc);
    assert_eq!(doc["apps"], serde_json::json!(["/web"]));
    assert_eq!(doc["record"]["outcome"], "synced", "{doc}");
    assert_eq!(doc["record"]["trigger"], "manual-sync");
    let ids: Vec<String> = (sched.apps().await.iter())
        .map(|a| a["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids, ["/web"], "only the app named was written");

    // /web is synced (0); the whole status still has /api out of sync (2).
    let (code, out, err) = run(&api, &["status", "/web"], None).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("synced"), "{out}");
    let (code, out, _) = run(&api, &["status", "api"], None).await;
    assert_eq!(code, 2, "{out}");
    let (code, _, err) = run(&api, &["status", "/nope"], None).await;
    assert_eq!(code, 1, "{err}");

    // The history names the sync and its app.
    let (code, out, err) = run(&api, &["history", "--output", "json"], None).await;
    assert_eq!(code, 0, "{err}");
    let history: Value = serde_json::from_str(&out).unwrap();
    baton_e2e::assert_matches_schema("history.schema.json", &history);
    assert_eq!(
        history[0]["requests"]["apps"],
        serde_json::json!(["/web"]),
        "{history}"
    );
    let (code, out, _) = run(&api, &["history"], None).await;
    assert_eq!(code, 0);
    assert!(
        out.contains("manual-sync") && out.contains("apps /web"),
        "{out}"
    );

    // A sync of every app without waiting: queued, 0.
    let (code, out, err) = run(&api, &["sync"], Some("client-tok")).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("queued (every app)"), "{out}");
    sched
        .wait_for("/api written by the full sync", |apps| {
            apps.iter().any(|a| a["id"] == "/api")
        })
        .await;

    // Nobody listening: 4.
    let (code, _, err) = run("http://127.0.0.1:1", &["status"], None).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cannot reach baton serve"), "{err}");
    d.stop().await;
    sched.stop().await;
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Auto mode, a git repo polled hourly (no webhook, no watch): a per-app sync whose own fetch
/// finds a new commit applies it to the app it names first, and the rest of that commit follows
/// at once rather than at the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_auto_mode_the_rest_of_a_new_commit_follows_a_per_app_sync() {
    let sched = DevScheduler::start().await;
    let repo = TempRepo::new("owner: e2e\n");
    let spec = |cmd: &str| format!("cmd: exec {cmd}\ncpus: 0.01\nmem: 8\ninstances: 1\n");
    repo.write("web.yaml", &spec("sleep 1000"));
    repo.write("api.yaml", &spec("sleep 2000"));
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "one"]);
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &[
            "--marathon".as_ref(),
            sched.url.as_ref(),
            "--poll-interval".as_ref(),
            "1h".as_ref(),
            "--repo".as_ref(),
            repo.path().as_os_str(),
            "--state-dir".as_ref(),
            state.path().as_os_str(),
        ],
        &[],
    )
    .await;
    let st = d
        .until_status("the first commit synced", |st| {
            st["ready"] == true
                && ["/web", "/api"]
                    .iter()
                    .all(|id| status_app(st, id).is_some_and(|a| a["sync"] == "synced"))
        })
        .await;
    let first = st["lastSynced"].as_str().unwrap().to_string();
    // A second commit changes both apps; nothing fetches it but the sync below.
    repo.write("web.yaml", &spec("sleep 1001"));
    repo.write("api.yaml", &spec("sleep 2001"));
    git(repo.path(), &["commit", "-q", "-am", "two"]);

    let api = d.api.clone();
    let (code, out, err) = run(
        &api,
        &["sync", "--app", "/web", "--wait", "--output", "json"],
        None,
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let second = doc["record"]["commit"].as_str().unwrap().to_string();
    assert_ne!(
        second, first,
        "the per-app cycle fetched the new commit: {doc}"
    );
    // The rest of the commit follows in a cycle of its own at once (the poll is an hour
    // away), which writes /api: /web's per-app cycle (fast path included) did not.
    let st = d
        .until_status("the rest of the second commit applied", |st| {
            st["lastSynced"].as_str() == Some(second.as_str())
        })
        .await;
    assert!(
        (st["history"].as_array().unwrap().iter())
            .any(|r| r["trigger"] == "retry" && r["commit"] == second.as_str()),
        "no follow-up cycle: {st}"
    );
    // What each cycle wrote (its fast path included), from its closing log line.
    let updated = |trigger: &str| -> Vec<u64> {
        (d.events("cycle finished").iter())
            .filter(|e| e.pointer("/fields/trigger").and_then(Value::as_str) == Some(trigger))
            .filter_map(|e| e.pointer("/fields/updated").and_then(Value::as_u64))
            .collect()
    };
    assert_eq!(
        updated("manual-sync"),
        [1],
        "the per-app cycle wrote /web alone"
    );
    assert_eq!(updated("retry"), [1], "the follow-up wrote /api");
    assert_eq!(status_app(&st, "/api").unwrap()["sync"], "synced", "{st}");
    let api_app = sched.app("/api").await.unwrap();
    assert_eq!(api_app["cmd"], "exec sleep 2001");
    d.stop().await;
    sched.stop().await;
}
