//! The `baton` binary as an operator runs it: `baton serve` as a process next to the dev
//! scheduler; drift policies applied by the daemon (`correct` puts an app back, `report` leaves
//! it); `baton drift` reading the daemon's ledger for who changed what; SIGTERM stops the
//! daemon cleanly. Progress is followed through the daemon's own endpoints and the scheduler.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_e2e::devsched::{baton_bin, DevScheduler, TempRepo};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(90);

/// Poll `check` every 100 ms until it holds (at most [`DEADLINE`]): the daemon's state is only
/// observable through its HTTP endpoints.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn drift_json(repo: &TempRepo, marathon: &str, state: &std::path::Path) -> (i32, Value) {
    let out = Command::new(baton_bin())
        .args([
            "drift",
            "--format",
            "json",
            "--marathon",
            marathon,
            "--repo",
        ])
        .arg(repo.path())
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

fn app<'a>(doc: &'a Value, id: &str) -> &'a Value {
    doc["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == id)
        .unwrap()
}

// Multi-threaded: the test blocks on the daemon's stderr while the scheduler serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_corrects_what_it_is_told_to_and_stops_on_sigterm() {
    let sched = DevScheduler::start().await;
    let repo = TempRepo::new("owner: e2e\n");
    let spec = |policy: &str| {
        format!(
            "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\ninstances: 1\nbaton:\n  drift: {policy}\n"
        )
    };
    repo.write("web.yaml", &spec("correct"));
    repo.write("api.yaml", &spec("report"));
    let state = tempfile::tempdir().unwrap();

    let mut daemon = Command::new(baton_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--marathon", &sched.url])
        .arg("--repo")
        .arg(repo.path())
        .arg("--state-dir")
        .arg(state.path())
        .env("BATON_WEBHOOK_SECRET", "e2e")
        .env("BATON_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The address it listens on, from its log line `serving addr=...`.
    let stderr = daemon.stderr.take().unwrap();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let log = std::thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("addr=").nth(1) {
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
            lines.push(line);
        }
        lines
    });
    let addr = tokio::time::timeout(DEADLINE, addr_rx)
        .await
        .unwrap()
        .unwrap();
    let api = format!("http://{addr}");
    let http = reqwest::Client::new();
    until("the first sync", || async {
        http.get(format!("{api}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let (code, doc) = drift_json(&repo, &sched.url, state.path());
    assert_eq!(code, 0, "in sync: exit 0\n{doc:#}");

    // Someone scales both apps by hand.
    for id in ["web", "api"] {
        let r = http
            .put(format!("{}/v2/apps/{id}?partialUpdate=true", sched.url))
            .json(&json!({"instances": 3}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    // `correct`: the daemon puts /web back. `report`: /api stays as it was left.
    until("/web corrected", || async {
        sched
            .app("/web")
            .await
            .is_some_and(|a| a["instances"] == 1 && a["tasksRunning"] == 1)
    })
    .await;
    let api_app = sched.app("/api").await.unwrap();
    assert_eq!(api_app["instances"], 3, "report leaves it");

    // The one-shot report reads the daemon's ledger: who changed /api, and since when.
    until("the drift in the ledger", || async {
        let (_, doc) = drift_json(&repo, &sched.url, state.path());
        app(&doc, "/api")["changed_by"]["client_ip"].is_string()
    })
    .await;
    let (code, doc) = drift_json(&repo, &sched.url, state.path());
    assert_eq!(code, 2, "drift: exit 2");
    let a = app(&doc, "/api");
    assert_eq!(a["state"], "drifted", "{a:#}");
    assert_eq!(a["fields"][0]["pointer"], "/instances", "{a:#}");
    assert_eq!(a["changed_by"]["client_ip"], "127.0.0.1", "{a:#}");
    assert_eq!(a["changed_by"]["uri"], "/v2/apps/api", "{a:#}");
    assert!(a["since"].is_string(), "{a:#}");
    assert_eq!(app(&doc, "/web")["state"], "in_sync");
    // Counted at the end of the correcting cycle, which may still be saving its state.
    until("one correction counted", || async {
        baton_e2e::get_text(&http, &format!("{api}/metrics"))
            .await
            .lines()
            .any(|l| l == "baton_corrections_total 1")
    })
    .await;

    // SIGTERM: a clean stop, exit 0, state on disk.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .unwrap()
        .unwrap();
    let lines = log.join().unwrap();
    assert_eq!(status.code(), Some(0), "{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l.contains("reconcile loop stopped")),
        "{}",
        lines.join("\n")
    );
    assert!(state.path().join("serve-state.json").is_file());
    sched.stop().await;
}

/// The daemon as a process with its log lines collected as they come: (child, lines, address).
async fn start_daemon(
    repo: &TempRepo,
    sched: &DevScheduler,
    state: &std::path::Path,
    extra: &[&str],
    log: &str,
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    String,
) {
    let mut daemon = Command::new(baton_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--marathon", &sched.url])
        .args(extra)
        .arg("--repo")
        .arg(repo.path())
        .arg("--state-dir")
        .arg(state)
        .env("BATON_WEBHOOK_SECRET", "e2e")
        .env("BATON_LOG", log)
        .env("BATON_LOG_FORMAT", "text")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = daemon.stderr.take().unwrap();
    let lines: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let collected = lines.clone();
    std::thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("addr=").nth(1) {
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
            collected.lock().unwrap().push(line);
        }
    });
    let addr = tokio::time::timeout(DEADLINE, addr_rx)
        .await
        .unwrap()
        .unwrap();
    (daemon, lines, format!("http://{addr}"))
}

fn count(lines: &std::sync::Mutex<Vec<String>>, what: &str) -> usize {
    lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(what))
        .count()
}

/// Without `owner:` the daemon deletes nothing and says so in `/api/status` and, once, in its
/// log; with `idPrefixes` it leaves this owner's apps outside them alone and reports them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daemon_without_an_owner_deletes_nothing_and_with_id_prefixes_stays_inside() {
    let sched = DevScheduler::start().await;
    let stale = json!({"id": "/stale", "cmd": "exec sleep 1000", "cpus": 0.01, "mem": 8,
                       "labels": {"baton.dev/owner": "baton"}});
    sched.put(&stale).await;
    let repo = TempRepo::new("");
    std::fs::remove_file(repo.path().join("baton.yaml")).unwrap();
    repo.write(
        "web.yaml",
        "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\ninstances: 1\n",
    );
    let state = tempfile::tempdir().unwrap();
    // Polls every second, and a debug line per cycle to count them by.
    let (mut daemon, lines, api) = start_daemon(
        &repo,
        &sched,
        state.path(),
        &["--poll-interval", "1s"],
        "info,baton::daemon::reconcile=debug",
    )
    .await;
    let http = reqwest::Client::new();
    let status = || async {
        http.get(format!("{api}/api/status"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let no_owner = baton_core::plan::no_owner_reason("baton");
    until("the first sync", || async {
        sched.app("/web").await.is_some() && status().await["ownership"].is_object()
    })
    .await;
    // Several cycles later: /stale still runs, the warning was logged once.
    let cycles = count(&lines, "cycle phases");
    until("three more cycles", || async {
        count(&lines, "cycle phases") >= cycles + 3
    })
    .await;
    assert!(sched.app("/stale").await.is_some(), "nothing deleted");
    let s = status().await;
    crate::serve::validate_status(&s);
    assert_eq!(
        s["ownership"],
        json!({"owner": "baton", "explicit": false, "warning": no_owner,
               "heldDeletes": ["/stale"], "idPrefixes": null, "outOfScope": []}),
    );
    let warned = |what: &str| {
        let all = lines.lock().unwrap();
        let hits: Vec<&String> = all
            .iter()
            .filter(|l| l.contains("WARN") && l.contains(what))
            .collect();
        (
            hits.len(),
            hits.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        )
    };
    let (n, hits) = warned("no `owner:` in baton.yaml");
    assert_eq!(n, 1, "once, not every cycle: {hits:#?}");
    assert!(hits[0].contains("apps=/stale"), "{}", hits[0]);

    // An owner, and a scope that leaves /stale outside: still not deleted, now reported.
    std::fs::write(
        repo.path().join("baton.yaml"),
        "owner: baton\nidPrefixes: [/web]\n",
    )
    .unwrap();
    until("the new config in /api/status", || async {
        status().await["ownership"]["explicit"] == true
    })
    .await;
    let cycles = count(&lines, "cycle phases");
    until("three more cycles", || async {
        count(&lines, "cycle phases") >= cycles + 3
    })
    .await;
    let s = status().await;
    crate::serve::validate_status(&s);
    assert_eq!(
        s["ownership"],
        json!({"owner": "baton", "explicit": true, "warning": null,
               "heldDeletes": [], "idPrefixes": ["/web"], "outOfScope": ["/stale"]}),
    );
    assert!(
        sched.app("/stale").await.is_some(),
        "outside idPrefixes: kept"
    );
    let (n, hits) = warned("outside idPrefixes");
    assert_eq!(n, 1, "once, not every cycle: {hits:#?}");

    // Taken into the scope, it is this repo's again: pruned.
    std::fs::write(
        repo.path().join("baton.yaml"),
        "owner: baton\nidPrefixes: [/web, /stale]\n",
    )
    .unwrap();
    until("/stale pruned", || async {
        sched.app("/stale").await.is_none()
    })
    .await;
    assert!(sched.app("/web").await.is_some());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::task::spawn_blocking(move || daemon.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    sched.stop().await;
}

/// The status fields of a served app, dropped to PUT its definition back as it was.
fn definition(mut app: Value) -> Value {
    for f in [
        "version",
        "versionInfo",
        "tasks",
        "tasksStaged",
        "tasksRunning",
        "tasksHealthy",
        "tasksUnhealthy",
        "deployments",
        "lastTaskFailure",
        "taskStats",
        "readinessCheckResults",
    ] {
        app.as_object_mut().unwrap().remove(f);
    }
    app
}

/// "cycle finished" log events so far.
fn cycles(d: &baton_e2e::daemon::Daemon) -> usize {
    d.events("cycle finished").len()
}

/// Wait until `n` more cycles finished than `before`.
async fn more_cycles(d: &baton_e2e::daemon::Daemon, before: usize, n: usize) {
    d.wait_event("cycle finished", |_| cycles(d) >= before + n)
        .await;
}

/// Item 10 of issue 12: the scheduler "loses" an acknowledged write (the old definition comes
/// back with the old labels, as a scheduler restarted from older state serves it). Baton writes
/// it again, whatever the drift policy; an app edited by hand since is drift and stays reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_the_scheduler_lost_is_written_again_an_edited_app_is_left_alone() {
    use baton_e2e::daemon::{status_app, Daemon};

    let sched = DevScheduler::start().await;
    let repo = TempRepo::new("owner: e2e\n");
    let spec = |cmd: &str| format!("cmd: exec {cmd}\ncpus: 0.01\nmem: 8\ninstances: 1\n");
    repo.write("web.yaml", &spec("sleep 1000"));
    repo.write("api.yaml", &spec("sleep 2000"));
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &[
            "--marathon".as_ref(),
            sched.url.as_ref(),
            "--poll-interval".as_ref(),
            "1s".as_ref(),
            "--repo".as_ref(),
            repo.path().as_os_str(),
            "--state-dir".as_ref(),
            state.path().as_os_str(),
        ],
        &[("BATON_WEBHOOK_SECRET", "e2e")],
    )
    .await;
    let synced = |st: &Value| {
        ["/web", "/api"]
            .iter()
            .all(|id| status_app(st, id).is_some_and(|a| a["sync"] == "synced"))
    };
    let st = d
        .until_status("the first sync", |st| st["ready"] == true && synced(st))
        .await;
    let r1 = st["lastSynced"].as_str().unwrap().to_string();
    let old_web = definition(sched.app("/web").await.unwrap());
    let old_api = definition(sched.app("/api").await.unwrap());
    assert_eq!(old_web["labels"]["baton.dev/commit"], r1.as_str());

    // The next revision is applied...
    baton_e2e::replace_file(&repo.path().join("apps/web.yaml"), &spec("sleep 1001"));
    baton_e2e::replace_file(&repo.path().join("apps/api.yaml"), &spec("sleep 2001"));
    let st = d
        .until_status("the second revision synced", |st| {
            st["lastSynced"].as_str().is_some_and(|r| r != r1)
                && synced(st)
                && st["cycle"].is_null()
        })
        .await;
    let r2 = st["lastSynced"].as_str().unwrap().to_string();
    sched
        .wait_for("both at r2", |apps| {
            apps.iter()
                .all(|a| a["labels"]["baton.dev/commit"] == r2.as_str())
        })
        .await;

    // ...and lost: both back at r1 as Baton wrote them, /api scaled by hand since.
    let mut edited = old_api.clone();
    edited["instances"] = json!(2);
    sched.put(&old_web).await;
    sched.put(&edited).await;
    sched
        .wait_for("/web written again", |apps| {
            apps.iter().any(|a| {
                a["id"] == "/web"
                    && a["cmd"] == "exec sleep 1001"
                    && a["labels"]["baton.dev/commit"] == r2.as_str()
            })
        })
        .await;

    let rewritten = d
        .wait_event(
            "the app is back at an older definition Baton wrote and nobody changed since (a write the scheduler lost): writing it again",
            |e| e["fields"]["app"] == "/web",
        )
        .await;
    assert_eq!(rewritten["level"], "WARN");
    assert_eq!(rewritten["fields"]["found"], r1.as_str(), "{rewritten}");
    assert_eq!(rewritten["fields"]["desired"], r2.as_str(), "{rewritten}");
    // /api (policy report) is drift: several polls later it is as it was left, and reported.
    let before = cycles(&d);
    more_cycles(&d, before, 3).await;
    let api = sched.app("/api").await.unwrap();
    assert_eq!(
        (api["cmd"].clone(), api["instances"].clone()),
        (json!("exec sleep 2000"), json!(2))
    );
    assert!(
        d.events("the app is back at an older definition Baton wrote and nobody changed since (a write the scheduler lost): writing it again")
            .iter()
            .all(|e| e["fields"]["app"] == "/web"),
        "{}",
        d.log_text()
    );
    let drift: Value = d
        .http
        .get(format!("{}/api/drift", d.api))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    baton_e2e::assert_matches_schema("drift.schema.json", &drift);
    assert_eq!(app(&drift, "/api")["state"], "drifted", "{drift:#}");
    assert_eq!(app(&drift, "/web")["state"], "in_sync", "{drift:#}");
    let st = d.status().await;
    assert_eq!(
        status_app(&st, "/api").unwrap()["sync"],
        "outOfSync",
        "{st:#}"
    );
    assert_eq!(d.stop().await, Some(0));
    sched.stop().await;
}

/// Item 9 of issue 12: held work is visible. Every spec removed, then deletions over the
/// budget and an invalid spec: nothing is deleted, `/api/status` lists each held app with the
/// reason (and the invalid one with its error), `/metrics` counts them, the log says each cause
/// once (WARN), not on every poll, and every cycle ends with one INFO line. A deployment that
/// misses its deadline is a WARN line (rollback, failed app) with the app and the reason. The
/// status page shows the held deletions and the invalid spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_deletions_invalid_specs_and_failures_are_shown_logged_once_and_counted() {
    use baton_e2e::daemon::{sample, status_app, Daemon};

    let sched = DevScheduler::start().await;
    let repo = TempRepo::new("owner: e2e\nprune: {maxDeletes: 1, maxDeletesPercent: 0}\n");
    let spec = |cmd: &str| format!("cmd: exec {cmd}\ncpus: 0.01\nmem: 8\ninstances: 1\n");
    repo.write("a.yaml", &spec("sleep 1000"));
    repo.write("b.yaml", &spec("sleep 1001"));
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &[
            "--marathon".as_ref(),
            sched.url.as_ref(),
            "--poll-interval".as_ref(),
            "1s".as_ref(),
            "--repo".as_ref(),
            repo.path().as_os_str(),
            "--state-dir".as_ref(),
            state.path().as_os_str(),
        ],
        &[("BATON_WEBHOOK_SECRET", "e2e")],
    )
    .await;
    d.until_status("the first sync", |st| {
        st["ready"] == true
            && ["/a", "/b"]
                .iter()
                .all(|id| status_app(st, id).is_some_and(|a| a["sync"] == "synced"))
    })
    .await;

    // Every spec removed: the empty repo deletes nothing, and says so.
    repo.remove("a.yaml");
    repo.remove("b.yaml");
    let held = |st: &Value, why: &str| {
        ["/a", "/b"].iter().all(|id| {
            status_app(st, id).is_some_and(|a| {
                a["sync"] == "held" && a["reason"].as_str().is_some_and(|r| r.contains(why))
            })
        })
    };
    let st = d
        .until_status("the held deletions", |st| held(st, "the repo has no apps"))
        .await;
    baton_e2e::assert_matches_schema("status.schema.json", &st);
    assert_eq!(st["history"][0]["held"], 2, "{st:#}");
    assert_eq!(sample(&d.metrics().await, "baton_held_deletes"), Some(2.0));
    let warned = d
        .wait_event("deletions held: nothing was deleted", |e| {
            e["fields"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("the repo has no apps"))
        })
        .await;
    assert_eq!(warned["level"], "WARN");
    assert_eq!(warned["fields"]["deletes"], 2);
    assert_eq!(warned["fields"]["apps"], "/a, /b");
    d.wait_event("cycle finished", |e| {
        e["fields"]["trigger"] == "file-change" && e["fields"]["held"] == 2
    })
    .await;

    // An invalid spec, and deletions over the budget of 1.
    repo.write("bad.yaml", "cmd: exec sleep 1\nmem: lots\n");
    let st = d
        .until_status("the budget hold and the invalid spec", |st| {
            held(st, "exceed the delete budget")
                && status_app(st, "/bad").is_some_and(|a| a["sync"] == "invalid")
        })
        .await;
    baton_e2e::assert_matches_schema("status.schema.json", &st);
    let bad = status_app(&st, "/bad").unwrap();
    let error = bad["lastError"].as_str().unwrap();
    assert!(error.contains("apps/bad.yaml at /mem"), "{bad:#}");
    assert_eq!(bad["reason"], bad["lastError"]);
    let m = d.metrics().await;
    assert_eq!(sample(&m, "baton_held_deletes"), Some(2.0), "{m}");
    assert_eq!(sample(&m, "baton_invalid_specs"), Some(1.0), "{m}");
    let invalid = d
        .wait_event("invalid spec: the app is left untouched", |e| {
            e["fields"]["app"] == "/bad"
        })
        .await;
    assert_eq!(invalid["level"], "WARN");
    assert!(
        invalid["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("/mem"),
        "{invalid}"
    );

    // Polls go on (one INFO line each); each cause was said once.
    let before = cycles(&d);
    more_cycles(&d, before, 3).await;
    let polls = d.events("cycle finished");
    let last = polls.last().unwrap();
    assert_eq!(last["level"], "INFO");
    for field in [
        "trigger", "commit", "outcome", "created", "updated", "deleted", "held", "failed",
        "invalid", "took_ms",
    ] {
        assert!(!last["fields"][field].is_null(), "{field} missing: {last}");
    }
    assert_eq!(
        (
            last["fields"]["held"].clone(),
            last["fields"]["invalid"].clone()
        ),
        (json!(2), json!(1))
    );
    assert_eq!(
        d.events("deletions held: nothing was deleted").len(),
        2,
        "{}",
        d.log_text()
    );
    assert_eq!(
        d.events("invalid spec: the app is left untouched").len(),
        1,
        "{}",
        d.log_text()
    );
    assert!(
        sched.app("/a").await.is_some() && sched.app("/b").await.is_some(),
        "nothing deleted"
    );

    // The status page says it too.
    if let Some(browser) =
        baton_e2e::browser::Browser::start("held_deletions_invalid_specs_and_failures").await
    {
        browser.goto(&format!("{}/", d.api)).await;
        let held = browser
            .wait_for(
                "const p = document.querySelector('#notices p.held'); return p && p.textContent",
                Duration::from_secs(60),
                "the held deletions on the page",
            )
            .await;
        let held = held.as_str().unwrap();
        assert!(held.starts_with("2 deletions held (/a, /b)"), "{held}");
        assert!(held.contains("exceed the delete budget"), "{held}");
        let invalid = browser
            .eval("return document.querySelector('#notices p.invalid').textContent")
            .await;
        assert!(
            invalid.as_str().unwrap().contains("apps/bad.yaml at /mem"),
            "{invalid}"
        );
    }

    // A deployment that misses its deadline: rolled back, the app failed, both WARN lines.
    repo.write(
        "crash.yaml",
        "cmd: exit 3\ncpus: 0.01\nmem: 8\ninstances: 1\nbaton: {deadline: 3s}\n",
    );
    let rollback = d
        .wait_event(
            "no progress before the app's deadline: rolling its deployment back",
            |e| e["fields"]["app"] == "/crash",
        )
        .await;
    assert_eq!(rollback["level"], "WARN");
    let failed = d
        .wait_event("app failed", |e| e["fields"]["app"] == "/crash")
        .await;
    assert_eq!(failed["level"], "WARN");
    assert!(
        failed["fields"]["reason"]
            .as_str()
            .unwrap()
            .contains("no progress within 3s"),
        "{failed}"
    );
    d.wait_event("cycle finished", |e| e["fields"]["failed"] == 1)
        .await;
    assert_eq!(d.stop().await, Some(0));
    sched.stop().await;
}
