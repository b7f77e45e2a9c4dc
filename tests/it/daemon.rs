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
