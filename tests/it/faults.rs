//! Apply when the scheduler misbehaves: unreachable, answering 500, or too slow. Each gives a
//! clear error, deletes nothing, and the next run against a healthy scheduler converges.
//! The daemon under faults of its own: a damaged git cache, a flood of slow connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton::apply::ApplyOptions;
use baton::commands::{self, CommandError};
use baton_core::plan::Policy;
use baton_e2e::devsched::{DevScheduler, TempRepo};
use baton_marathon::marathon::{Marathon, MarathonConfig};
use baton_marathon::SchedulerError;

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
fn git(dir: &std::path::Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `apps/a.yaml` running `exec sleep <secs>`, committed: the commit id.
fn commit_app(work: &std::path::Path, secs: u32) -> String {
    std::fs::create_dir_all(work.join("apps")).unwrap();
    std::fs::write(
        work.join("apps/a.yaml"),
        format!("cmd: exec sleep {secs}\ncpus: 0.01\nmem: 8\n"),
    )
    .unwrap();
    git(work, &["add", "-A"]);
    git(work, &["commit", "-qm", &format!("sleep {secs}")]);
    git(work, &["rev-parse", "HEAD"]).unwrap()
}

/// Each pack file of the cache at `cache` (`.pack` and, with `indices`, `.idx`) passed to `harm`.
fn harm_packs(cache: &std::path::Path, indices: bool, harm: impl Fn(&std::path::Path)) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(cache.join("objects/pack")).unwrap() {
        let path = entry.unwrap().path();
        let ext = path.extension().and_then(|e| e.to_str());
        if ext == Some("pack") || (indices && ext == Some("idx")) {
            harm(&path);
            n += 1;
        }
    }
    n
}

/// `baton serve` following the git repo at `work`, polling only hourly (cycles come from
/// `POST /api/sync`).
async fn start_serve(
    work: &std::path::Path,
    state: &std::path::Path,
    marathon: &str,
) -> baton_e2e::process::Daemon {
    let mut cmd = std::process::Command::new(baton_e2e::devsched::baton_bin());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--poll-interval", "1h"])
        .args(["--marathon", marathon, "--repo"])
        .arg(work)
        .arg("--state-dir")
        .arg(state)
        .env("BATON_WEBHOOK_SECRET", "e2e")
        .env("BATON_LOG", "info");
    baton_e2e::process::Daemon::start(cmd, "addr=").await
}

/// Ask for a cycle and wait (up to 90 s) until `commit` is synced; fails at once, with the
/// exit status and log, should the daemon die on the way.
async fn sync_until(daemon: &mut baton_e2e::process::Daemon, commit: &str) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut asked = false;
    loop {
        daemon.assert_running(&format!("syncing {commit}"));
        if !asked {
            asked = http
                .post(format!("{}/api/sync", daemon.url()))
                .send()
                .await
                .is_ok_and(|r| r.status() == 202);
        }
        let status: Option<serde_json::Value> = match http
            .get(format!("{}/api/status", daemon.url()))
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        if status.is_some_and(|s| s["lastSynced"] == commit) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{commit} not synced:\n{}",
            daemon.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Issue 12, item 6: the git cache damaged under a running `baton serve` (every pack cut to
/// nothing: it used to die of SIGBUS, exit 135) and before a restart (packs and indices full of
/// random bytes: every cycle failed or panicked for good). Each time the daemon stays up, says
/// so in its log, sets the cache aside as `<cache>.damaged`, fetches afresh and deploys the
/// commit pushed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_git_cache_is_set_aside_and_fetched_afresh_by_the_daemon() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    if git(&work, &["init", "-q", "-b", "main"]).is_none() {
        assert!(std::env::var_os("CI").is_none(), "git is required in CI");
        eprintln!("skipped: git is not installed");
        return;
    }
    std::fs::write(work.join("baton.yaml"), "owner: e2e\n").unwrap();
    let c1 = commit_app(&work, 1000);
    let sched = DevScheduler::start().await;
    let state = tmp.path().join("state");
    let cache = state.join("git-cache");
    let aside = state.join("git-cache.damaged");
    let damaged_lines = |d: &baton_e2e::process::Daemon| {
        d.log()
            .iter()
            .filter(|l| l.contains("WARN") && l.contains("the git cache is damaged"))
            .count()
    };

    let mut serve = start_serve(&work, &state, &sched.url).await;
    sync_until(&mut serve, &c1).await;

    // Under the running daemon: every pack emptied, then a push.
    let n = harm_packs(&cache, false, |p| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .and_then(|f| f.set_len(0))
            .unwrap()
    });
    assert!(n > 0);
    let c2 = commit_app(&work, 2000);
    sync_until(&mut serve, &c2).await;
    assert!(aside.join("HEAD").exists(), "set aside, not deleted");
    assert_eq!(damaged_lines(&serve), 1, "{:#?}", serve.log());
    assert_eq!(sched.app("/a").await.unwrap()["cmd"], "exec sleep 2000");
    assert!(serve.stop().await.success());

    // Before a restart: packs and indices overwritten with random bytes of their size.
    harm_packs(&cache, true, |p| {
        let len = std::fs::metadata(p).unwrap().len() as usize;
        std::fs::write(
            p,
            (0..len).map(|_| rand::random::<u8>()).collect::<Vec<_>>(),
        )
        .unwrap()
    });
    let c3 = commit_app(&work, 3000);
    let mut serve = start_serve(&work, &state, &sched.url).await;
    sync_until(&mut serve, &c3).await;
    assert_eq!(damaged_lines(&serve), 1, "{:#?}", serve.log());
    assert_eq!(sched.app("/a").await.unwrap()["cmd"], "exec sleep 3000");
    assert!(serve.stop().await.success());
    sched.stop().await;
}

/// Header timeout of Baton's HTTP servers.
const HEADER_TIMEOUT: Duration = baton_listen::HEADER_TIMEOUT;

/// The open-files limit the servers under test run with (`ulimit -n`).
const OPEN_FILES: u64 = 256;

/// Slow connections per flood: far more than the servers' open-files limit.
const FLOOD: usize = 2000;

/// Raise this test process's own open-files limit to its hard limit (it holds a whole flood):
/// how many connections it can open, at most [`FLOOD`].
fn raise_own_open_files_limit() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    let room = usize::try_from(hard)
        .unwrap_or(usize::MAX)
        .saturating_sub(200);
    if room < FLOOD {
        eprintln!("open-files hard limit {hard}: a flood of {room} connections instead of {FLOOD}");
    }
    room.min(FLOOD)
}

/// `command` run by `sh` under an open-files limit of [`OPEN_FILES`].
fn under_open_files_limit(command: &[&str]) -> std::process::Command {
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c")
        .arg(format!("ulimit -n {OPEN_FILES} && exec \"$0\" \"$@\""))
        .arg(baton_e2e::devsched::baton_bin())
        .args(command);
    sh
}

/// Up to `n` connections from 127.0.0.1 to `addr`, each sending half a request line (as a
/// slowloris does), opened as fast as the server takes them (those it closes at once are kept
/// too). Stops early when a connection cannot even be opened within 10 s (a server that no
/// longer accepts: the kernel's queue is full).
async fn slow_connections(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let connect = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr));
        match connect.await {
            Ok(Ok(mut stream)) => {
                let _ = stream.write_all(b"GET /healthz HT").await;
                held.push(stream);
            }
            // Closed by the server before the handshake finished: refused, as intended.
            Ok(Err(_)) => continue,
            Err(_) => break,
        }
    }
    held
}

/// Wait until the server has closed every stream (end of stream or a reset), at most until
/// `deadline`: how many are still open then.
async fn still_open_at(
    streams: Vec<tokio::net::TcpStream>,
    deadline: tokio::time::Instant,
) -> usize {
    use tokio::io::AsyncReadExt;
    let waits = streams.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout_at(deadline, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        });
        closed.await.is_err()
    });
    let open = futures::future::join_all(waits).await;
    open.into_iter().filter(|o| *o).count()
}

/// A client from 127.0.0.2: another source than the flood's.
fn second_source() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Flood `daemon` with slow connections from 127.0.0.1; meanwhile `answers` (requests from
/// 127.0.0.2) must get an HTTP answer each; then every slow connection must be closed within
/// the header timeout (a generous margin on top for a loaded machine). Returns the answers.
async fn under_flood(
    daemon: &mut baton_e2e::process::Daemon,
    flood: usize,
    answers: Vec<reqwest::RequestBuilder>,
) -> Vec<(u16, String)> {
    let started = tokio::time::Instant::now();
    let slow = slow_connections(&daemon.addr, flood).await;
    let opened = tokio::time::Instant::now();
    let mut got = Vec::new();
    for request in answers {
        let asked = std::time::Instant::now();
        let response = request.send().await.unwrap_or_else(|e| {
            panic!(
                "no answer while flooded ({:?} after the flood began): {e}\n{}",
                started.elapsed(),
                daemon.log().join("\n")
            )
        });
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert!(asked.elapsed() < Duration::from_secs(10));
        got.push((status, body));
    }
    daemon.assert_running("under the flood");
    assert!(
        slow.len() >= flood * 9 / 10,
        "only {} of {flood} slow connections could be opened",
        slow.len()
    );
    // Those accepted are closed by the header timeout, counted from when they were opened.
    let open = still_open_at(slow, opened + HEADER_TIMEOUT + Duration::from_secs(20)).await;
    assert_eq!(open, 0, "slow connections still open");
    got
}

/// Issue 12, item 7: `baton serve` with an open-files limit of 256 under 2,000 connections that
/// send half a request line (it used to keep them all for 60 s and stop answering: "Too many
/// open files"). From another address, `/healthz`, a webhook and the gatekeeper answer at once;
/// every slow connection is closed within the header timeout; refusals are logged and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_keeps_answering_under_a_flood_of_slow_connections() {
    let flood = raise_own_open_files_limit();
    // A real Vault, the reconciler holding the documented token: the gatekeeper's route is
    // mounted only with Vault configured.
    let vault = baton_e2e::openbao::OpenBao::start().await;
    vault.enable_approle().await;
    let vault_token = vault.reconciler_token("e2e").await;
    let sched = DevScheduler::start().await;
    let repo = TempRepo::new("owner: e2e\n");
    // A git repo: webhooks are served only for one (a plain directory is watched instead).
    for args in [
        &["init", "-q", "-b", "main"][..],
        &["add", "-A"],
        &[
            "-c",
            "user.name=e2e",
            "-c",
            "user.email=e2e@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "init",
        ],
    ] {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(repo.path())
            .status()
            .unwrap();
        assert!(ok.success(), "git {args:?}");
    }
    let state = tempfile::tempdir().unwrap();
    let mut cmd = under_open_files_limit(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.args(["--marathon", &sched.url, "--vault-addr", vault.url()])
        .arg("--repo")
        .arg(repo.path())
        .arg("--state-dir")
        .arg(state.path())
        .env("BATON_WEBHOOK_SECRET", "e2e-secret")
        .env("BATON_VAULT_TOKEN", &vault_token)
        .env("BATON_LOG", "info");
    let mut serve = baton_e2e::process::Daemon::start(cmd, "addr=").await;
    let url = serve.url();
    let http = second_source();

    let push = br#"{"ref":"refs/heads/main","after":"0123456789abcdef0123456789abcdef01234567"}"#;
    let answers = vec![
        http.get(format!("{url}/healthz")),
        http.post(format!("{url}/hooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "flood-1")
            .header(
                "X-Hub-Signature-256",
                baton::daemon::hooks::sign_sha256(b"e2e-secret", push),
            )
            .body(push.to_vec()),
        http.post(format!("{url}/v1/secret-zero"))
            .json(&serde_json::json!({"task_id": "made-up.task", "app_id": "/web"})),
    ];
    let got = under_flood(&mut serve, flood, answers).await;
    assert_eq!(got[0], (200, "ok".to_string()), "healthz");
    assert_eq!(got[1].0, 202, "webhook accepted: {}", got[1].1);
    // The gatekeeper's own answer (it knows no such task), not a missing route.
    assert_ne!(got[2].0, 404, "{:?}", got[2]);
    assert!(
        serde_json::from_str::<serde_json::Value>(&got[2].1).is_ok(),
        "{:?}",
        got[2]
    );

    let metrics = http.get(format!("{url}/metrics")).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let value = |line: &str| -> u64 {
        let found = metrics.lines().find_map(|l| l.strip_prefix(line));
        found
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{line}\n{metrics}"))
    };
    // The limits follow the open-files limit: 256 - 64 kept for the process; an eighth per client.
    assert_eq!(value("baton_http_connections_max{scope=\"server\"}"), 192);
    assert_eq!(value("baton_http_connections_max{scope=\"client\"}"), 24);
    let refused = value("baton_http_connections_refused_total{reason=\"client_full\"}");
    assert!(
        refused as usize >= flood - 24,
        "refused {refused} of {flood}"
    );
    assert!(value("baton_http_timeouts_total{phase=\"headers\"}") >= 1);
    let log = serve.log();
    assert!(
        log.iter()
            .any(|l| l.contains("WARN") && l.contains("connection refused")),
        "{log:#?}"
    );
    assert!(serve.stop().await.success());
    sched.stop().await;
}

/// The dev scheduler's server under the same flood: its API keeps answering another address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dev_scheduler_keeps_answering_under_a_flood_of_slow_connections() {
    let flood = raise_own_open_files_limit();
    let state = tempfile::tempdir().unwrap();
    let mut cmd = under_open_files_limit(&["dev-scheduler", "--listen", "127.0.0.1:0"]);
    cmd.arg("--state-dir")
        .arg(state.path())
        .env("BATON_LOG", "info");
    let mut sched = baton_e2e::process::Daemon::start(cmd, "listening on http://").await;
    let http = second_source();
    let apps = http.get(format!("{}/v2/apps", sched.url()));
    let got = under_flood(&mut sched, flood, vec![apps]).await;
    assert_eq!(got[0].0, 200, "{:?}", got[0]);
    assert!(sched.stop().await.success());
}
