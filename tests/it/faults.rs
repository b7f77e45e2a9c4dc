//! Apply when the scheduler misbehaves: unreachable, answering 500, or too slow. Each gives a
//! clear error, deletes nothing, and the next run against a healthy scheduler converges.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton::apply::ApplyOptions;
use baton::commands::{self, CommandError};
use baton::plan::Policy;
use baton::scheduler::marathon::{Marathon, MarathonConfig};
use baton::scheduler::SchedulerError;
use baton_e2e::devsched::{DevScheduler, TempRepo};

/// A server that answers everything with 500, or sleeps `delay` first; counts requests and
/// writes (non-GET).
async fn stub(
    delay: Option<Duration>,
) -> (
    String,
    Arc<AtomicUsize>,
    Arc<AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let hits = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(AtomicUsize::new(0));
    let (h, w) = (hits.clone(), writes.clone());
    let app = axum::Router::new().fallback(move |method: axum::http::Method| {
        let (h, w) = (h.clone(), w.clone());
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            if method != axum::http::Method::GET {
                w.fetch_add(1, Ordering::SeqCst);
            }
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom")
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, hits, writes, task)
}

fn client(url: &str, timeout: Duration) -> Marathon {
    let mut c = MarathonConfig::new(url);
    c.timeout = timeout;
    c.retries = 2;
    c.retry_base = Duration::from_millis(10);
    Marathon::new(c).unwrap()
}

async fn sync(
    repo: &TempRepo,
    client: &Marathon,
) -> Result<baton::apply::ApplyReport, CommandError> {
    let loaded = commands::load_repo(repo.path()).unwrap();
    let policy = Policy {
        commit: "e2e".into(),
        allow_deletes: None,
    };
    let options = ApplyOptions {
        poll_interval: Duration::from_millis(100),
        ..ApplyOptions::default()
    };
    commands::sync(&loaded, client, &policy, &options, &mut |_| {})
        .await
        .map(|(_, r)| r)
}

fn repo() -> TempRepo {
    let repo = TempRepo::new("owner: e2e\n");
    repo.write("a.yaml", "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\n");
    repo
}

/// The same repo against a healthy scheduler converges.
async fn next_run_converges(repo: &TempRepo) {
    let sched = DevScheduler::start().await;
    let report = sync(repo, &sched.client()).await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert!(sched.app("/a").await.is_some());
    sched.stop().await;
}

#[tokio::test]
async fn unreachable_scheduler_is_a_clear_error() {
    // Bound but not listening: connections are refused, and while `held` lives no other
    // test can be given this port.
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = held.local_addr().unwrap();
    let repo = repo();
    let err = sync(
        &repo,
        &client(&format!("http://{addr}"), Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            CommandError::Scheduler(SchedulerError::Unreachable { .. })
        ),
        "{msg}"
    );
    assert!(
        msg.contains("cannot reach the scheduler") && msg.contains(&addr.to_string()),
        "{msg}"
    );
    next_run_converges(&repo).await;
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_and_nothing_is_written() {
    let (url, hits, writes, task) = stub(None).await;
    let repo = repo();
    let err = sync(&repo, &client(&url, Duration::from_secs(2)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("500"), "{err}");
    // The GET was retried (1 + 2 retries); no write reached the server.
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    task.abort();
    next_run_converges(&repo).await;
}

#[tokio::test]
async fn a_slow_scheduler_times_out_with_a_clear_error() {
    let (url, _, writes, task) = stub(Some(Duration::from_secs(30))).await;
    let repo = repo();
    let err = sync(&repo, &client(&url, Duration::from_millis(300)))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("timed out") || msg.contains("timeout"),
        "{msg}"
    );
    assert_eq!(writes.load(Ordering::SeqCst), 0);
    task.abort();
    next_run_converges(&repo).await;
}

/// A proxy to `upstream` that passes reads through and answers every write with 500: the
/// scheduler reads fine but cannot change anything (a Marathon whose leader is failing over).
async fn failing_writes(
    upstream: String,
) -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let writes = Arc::new(AtomicUsize::new(0));
    let w = writes.clone();
    let http = reqwest::Client::new();
    let app =
        axum::Router::new().fallback(move |method: axum::http::Method, uri: axum::http::Uri| {
            let (w, http, upstream) = (w.clone(), http.clone(), upstream.clone());
            async move {
                if method != axum::http::Method::GET {
                    w.fetch_add(1, Ordering::SeqCst);
                    return (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        String::from("boom"),
                    );
                }
                let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                let r = http.get(format!("{upstream}{pq}")).send().await.unwrap();
                let status = axum::http::StatusCode::from_u16(r.status().as_u16()).unwrap();
                (status, r.text().await.unwrap())
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, writes, task)
}

/// Reads work, writes fail: each write is retried and reported, nothing is deleted or changed,
/// and the next run against the same (now healthy) scheduler converges from what is there.
/// The proxy also buffers the event stream (as a buffering HTTP proxy does): apply must give up
/// on it after the client timeout and poll, not wait forever for its headers.
#[tokio::test]
async fn failing_writes_change_nothing_and_the_next_run_converges() {
    let sched = DevScheduler::start().await;
    let repo = repo();
    repo.write("old.yaml", "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\n");
    let report = sync(&repo, &sched.client()).await.unwrap();
    assert!(report.converged(), "{report:?}");
    let a_version = sched.app("/a").await.unwrap()["version"].clone();

    // Next commit: /old removed, /b added, /a changed.
    repo.remove("old.yaml");
    repo.write("b.yaml", "cmd: exec sleep 1000\ncpus: 0.01\nmem: 8\n");
    repo.write("a.yaml", "cmd: exec sleep 2000\ncpus: 0.01\nmem: 8\n");
    let (proxy, writes, task) = failing_writes(sched.url.clone()).await;
    let report = sync(&repo, &client(&proxy, Duration::from_secs(5)))
        .await
        .unwrap();
    assert!(!report.converged(), "{report:?}");
    let failed: Vec<&str> = report.failures().map(|r| r.app.as_str()).collect();
    assert!(
        failed.contains(&"/a") && failed.contains(&"/b"),
        "{report:?}"
    );
    // Every write was tried (creates and updates with retries, the delete too), none landed.
    assert!(writes.load(Ordering::SeqCst) >= 3, "{report:?}");
    assert!(sched.app("/old").await.is_some(), "nothing deleted");
    assert!(sched.app("/b").await.is_none());
    assert_eq!(sched.app("/a").await.unwrap()["version"], a_version);
    task.abort();

    let report = sync(&repo, &sched.client()).await.unwrap();
    assert!(report.converged(), "{report:?}");
    assert!(sched.app("/old").await.is_none());
    assert!(sched.app("/b").await.is_some());
    assert_eq!(sched.app("/a").await.unwrap()["cmd"], "exec sleep 2000");
    sched.stop().await;
}

/// `baton serve` (the binary) against a scheduler that freezes right after answering a write
/// (a proxy that stops forwarding, as `kill -STOP` would): the cycle waiting on the deployment
/// shows it in `/api/status` (phase, deployment, since when), the pending deploy is no drift in
/// `/metrics`, and once the scheduler has been silent for twice `--marathon-timeout` the cycle
/// fails visibly (lastError, a WARN line, `baton_syncs_total{outcome="failed"}`); when the
/// scheduler is back, the retry converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduler_that_freezes_mid_sync_fails_the_cycle_visibly_then_recovers() {
    use baton_e2e::daemon::{sample, status_app, Daemon};
    use baton_e2e::freeze::FreezableProxy;
    use serde_json::Value;

    let sched = DevScheduler::start().await;
    let proxy = FreezableProxy::start(&sched.url).await;
    let repo = TempRepo::new("owner: e2e\n");
    let spec = |cmd: &str| format!("cmd: exec {cmd}\ncpus: 0.01\nmem: 8\ninstances: 1\n");
    repo.write("web.yaml", &spec("sleep 1000"));
    let state = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        &[
            "--marathon".as_ref(),
            proxy.url.as_ref(),
            "--marathon-timeout".as_ref(),
            "3s".as_ref(),
            // Only the error policy's retry may bring the daemon back, not a poll.
            "--poll-interval".as_ref(),
            "1h".as_ref(),
            "--repo".as_ref(),
            repo.path().as_os_str(),
            "--state-dir".as_ref(),
            state.path().as_os_str(),
        ],
        &[("BATON_WEBHOOK_SECRET", "e2e")],
    )
    .await;
    d.until_status("the first sync", |st| {
        st["ready"] == true && status_app(st, "/web").is_some_and(|a| a["sync"] == "synced")
    })
    .await;

    // A new revision: its write is answered, then the scheduler freezes.
    proxy.freeze_after_next_write();
    baton_e2e::replace_file(&repo.path().join("apps/web.yaml"), &spec("sleep 1001"));
    let st = d
        .until_status("the cycle waiting for /web's deployment", |st| {
            status_app(st, "/web").is_some_and(|a| a["deploying"].is_object())
        })
        .await;
    assert!(proxy.is_frozen());
    baton_e2e::assert_matches_schema("status.schema.json", &st);
    assert_eq!(st["cycle"]["phase"], "apply", "{st:#}");
    assert_eq!(st["cycle"]["trigger"], "file-change", "{st:#}");
    let web = status_app(&st, "/web").unwrap();
    assert_eq!(web["sync"], "outOfSync", "{web:#}");
    assert_eq!(web["health"], "progressing", "{web:#}");
    assert!(web["deploying"]["deployment"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(
        web["deploying"]["sinceMs"].as_u64().unwrap() >= st["cycle"]["startedMs"].as_u64().unwrap()
    );
    let m = d.metrics().await;
    assert_eq!(sample(&m, "baton_drifted_apps"), Some(0.0), "{m}");
    assert_eq!(
        sample(&m, "baton_apps{state=\"drifted\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "baton_apps{state=\"pending\"}"),
        Some(1.0),
        "{m}"
    );

    // Silent for 2 x 3 s: the cycle fails and says so everywhere.
    let st = d
        .until_status("the cycle to fail", |st| st["lastError"].is_string())
        .await;
    let error = st["lastError"].as_str().unwrap();
    assert!(error.contains("has not answered for 6s"), "{error}");
    assert!(error.contains("waiting for deployment(s)"), "{error}");
    assert_eq!(st["history"][0]["outcome"], "failed", "{st:#}");
    let m = d.metrics().await;
    assert_eq!(
        sample(&m, "baton_syncs_total{outcome=\"failed\"}"),
        Some(1.0),
        "{m}"
    );
    let warn = d.wait_event("sync failed", |e| e["level"] == "WARN").await;
    assert!(
        warn["fields"]["error"]
            .as_str()
            .unwrap()
            .contains("has not answered"),
        "{warn}"
    );
    let finished = d
        .wait_event("cycle finished", |e| e["fields"]["outcome"] == "failed")
        .await;
    assert_eq!(finished["level"], "INFO", "{finished}");
    assert_eq!(finished["fields"]["trigger"], "file-change", "{finished}");

    // The scheduler is back: the error policy's retry converges.
    proxy.thaw();
    let st = d
        .until_status("the retry to converge", |st| {
            st["lastError"].is_null()
                && st["cycle"].is_null()
                && status_app(st, "/web")
                    .is_some_and(|a| a["sync"] == "synced" && a["deploying"].is_null())
        })
        .await;
    baton_e2e::assert_matches_schema("status.schema.json", &st);
    sched
        .wait_for("/web at its new command", |apps| {
            apps.iter()
                .any(|a: &Value| a["id"] == "/web" && a["cmd"] == "exec sleep 1001")
        })
        .await;
    assert_eq!(d.stop().await, Some(0));
    sched.stop().await;
}
