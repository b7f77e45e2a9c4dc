//! Benchmark (ignored by default): latency from a push webhook request to the first scheduler
//! write for a one-file change in repos of N apps. Prints median and p99; asserts nothing about
//! time (it checks that every push was written and synced).
//!
//! - **first write**: from sending `POST /hooks/github` to the scheduler's `api_post_event` for
//!   the pushed app (read from its `/v2/events` stream), split into the git fetch of that push
//!   (the daemon's `baton_git_fetch_duration_seconds` histogram, read between pushes) and the
//!   rest (webhook handling, incremental load, the fast path's read, plan and write).
//! - **whole cycle**: until the daemon's `deployment_finished` notification for the pushed
//!   commit reaches a local webhook receiver (sent when the cycle has finished: listing and
//!   planning every app, drift, state, status). The next push is sent only then, so pushes are
//!   never coalesced; nothing polls the daemon's status meanwhile.
//!
//! The dev scheduler runs as its own process (`baton dev-scheduler`, the binary next to this
//! test; build it with `cargo build --profile profiling -p baton-cli --bin baton`), so
//! the daemon does not share its runtime with the scheduler it is measured against; without
//! the binary it runs in this process on a runtime of its own (the output says which).
//!
//! Layout (`BATON_BENCH_LAYOUT`): `flat` (default) puts every spec in `apps/`, so each push
//! changes a git tree object listing all N files (what git itself must diff, pack and send);
//! `grouped` puts 100 specs per directory (`apps/gNNN/appNNNNN.yaml`), as repos of many apps
//! usually are, so a push changes trees of ~100 entries whatever N is.
//!
//! `BATON_BENCH_SIZES=100,1000,10000 BATON_BENCH_PUSHES=50 cargo test --profile profiling
//!  -p baton-e2e --test e2e serve_bench -- --ignored --nocapture` (`BATON_BENCH_LOG=baton=debug`
//! prints the daemon's logs, with the phases of every cycle).

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use baton::config::ServeConfig;
use baton::daemon::notifications::{Sink, SinkKind};
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "bench";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn spec(cmd: &str) -> String {
    // No instances: the dev scheduler starts no processes, so only Baton's path is measured.
    format!("cmd: \"{cmd}\"\ncpus: 0.01\nmem: 16\ninstances: 0\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored and an optimised profile"]
async fn serve_bench() {
    if let Ok(filter) = std::env::var("BATON_BENCH_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
    let sizes: Vec<usize> = std::env::var("BATON_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let pushes: usize = std::env::var("BATON_BENCH_PUSHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let grouped = std::env::var("BATON_BENCH_LAYOUT").is_ok_and(|l| l == "grouped");
    let layout = if grouped { "grouped" } else { "flat" };
    for n in sizes {
        let r = run_size(n, pushes, grouped).await;
        let rest: Vec<Duration> = (r.write.iter().zip(&r.fetch))
            .map(|(w, f)| w.saturating_sub(*f))
            .collect();
        println!(
            "serve_bench apps={n} layout={layout} pushes={pushes} scheduler={} setup={:.1?} \
             first-write {} fetch {} rest {} whole-cycle {}",
            r.scheduler,
            r.setup,
            stats(&r.write),
            stats(&r.fetch),
            stats(&rest),
            stats(&r.cycle)
        );
    }
}

/// `median=.. p99=..` in milliseconds.
fn stats(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    let median = s[s.len() / 2];
    let p99 = s[((s.len() * 99).div_ceil(100))
        .saturating_sub(1)
        .min(s.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!("median={:.1}ms p99={:.1}ms", ms(median), ms(p99))
}

struct Samples {
    scheduler: &'static str,
    setup: Duration,
    write: Vec<Duration>,
    fetch: Vec<Duration>,
    cycle: Vec<Duration>,
}

/// A dev scheduler for the benchmark: the `baton` binary's `dev-scheduler` in a process of its
/// own, or (binary not built) in this process on a runtime thread of its own.
enum Scheduler {
    Process(std::process::Child),
    Thread(CancellationToken, Option<std::thread::JoinHandle<()>>),
}

impl Scheduler {
    fn start() -> (Scheduler, String) {
        if let Some(bin) = baton_e2e::workspace_bin("baton") {
            let mut child = Command::new(bin)
                .args(["dev-scheduler", "--listen", "127.0.0.1:0"])
                .env("BATON_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
            let url = loop {
                let mut line = String::new();
                assert!(
                    stderr.read_line(&mut line).unwrap() > 0,
                    "dev-scheduler exited"
                );
                if let Some(url) = line.trim().strip_prefix("dev scheduler listening on ") {
                    break url.to_string();
                }
            };
            // Keep reading its output, so a full pipe never stops it.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (Scheduler::Process(child), url);
        }
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(format!("http://{}", listener.local_addr().unwrap()))
                    .unwrap();
                let _ = baton_dev_scheduler::run(listener, Default::default(), s).await;
            });
        });
        let url = rx.recv().unwrap();
        (Scheduler::Thread(stop, Some(thread)), url)
    }

    fn kind(&self) -> &'static str {
        match self {
            Scheduler::Process(_) => "process",
            Scheduler::Thread(..) => "in-process",
        }
    }

    fn stop(&mut self) {
        match self {
            Scheduler::Process(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Scheduler::Thread(stop, thread) => {
                stop.cancel();
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

/// A local receiver for the daemon's JSON notifications.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Value>, CancellationToken) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/",
            post(
                |axum::extract::State(tx): axum::extract::State<mpsc::UnboundedSender<Value>>,
                 Json(body): Json<Value>| async move {
                    let _ = tx.send(body);
                    "ok"
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    (url, rx, stop)
}

/// Wait for the `deployment_finished` notification of `commit`.
async fn finished(inbox: &mut mpsc::UnboundedReceiver<Value>, commit: &str, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let n = tokio::time::timeout_at(deadline, inbox.recv())
            .await
            .unwrap_or_else(|_| panic!("no deployment_finished for {commit}"))
            .unwrap();
        if n["event"] == "deployment_finished" && n["details"]["commit"] == commit {
            return;
        }
    }
}

/// The sum of the daemon's git fetch histogram, in seconds.
async fn fetch_seconds(http: &reqwest::Client, url: &str) -> f64 {
    let text = baton_e2e::get_text(http, &format!("{url}/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix("baton_git_fetch_duration_seconds_sum "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The spec file of app `i`.
fn spec_path(i: usize, grouped: bool) -> String {
    if grouped {
        format!("apps/g{:03}/app{i:05}.yaml", i / 100)
    } else {
        format!("apps/app{i:05}.yaml")
    }
}

async fn run_size(n: usize, pushes: usize, grouped: bool) -> Samples {
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote.git");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(work.join("apps")).unwrap();
    git(
        tmp.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    git(&work, &["init", "-q", "-b", "main"]);
    git(
        &work,
        &["remote", "add", "origin", remote.to_str().unwrap()],
    );
    for i in 0..n {
        let path = work.join(spec_path(i, grouped));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, spec(&format!("sleep {i}"))).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "initial"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let initial = git(&work, &["rev-parse", "HEAD"]);

    let (mut scheduler, marathon) = Scheduler::start();
    let (sink, mut inbox, sink_stop) = receiver().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig {
        webhook_secret: Some(SecretString::from(SECRET.to_string())),
        notify: vec![Sink {
            kind: SinkKind::Json,
            url: sink,
        }],
        ..baton_e2e::serve_config(
            format!("file://{}", remote.display()),
            marathon.clone(),
            &tmp.path().join("state"),
            addr,
        )
    };
    let stop = CancellationToken::new();
    let st = stop.clone();
    let setup = Instant::now();
    let serve = tokio::spawn(async move {
        baton::daemon::serve::serve(config, listener, st)
            .await
            .unwrap()
    });
    let http = reqwest::Client::new();
    let url = format!("http://{addr}");
    // The initial deploy of every app.
    finished(&mut inbox, &initial, Duration::from_secs(3600)).await;
    let setup = setup.elapsed();

    let mut events = http
        .get(format!("{marathon}/v2/events?event_type=api_post_event"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut samples = Samples {
        scheduler: scheduler.kind(),
        setup,
        write: Vec::new(),
        fetch: Vec::new(),
        cycle: Vec::new(),
    };
    let mut buf = String::new();
    for p in 0..pushes {
        let target = (p * 7919) % n;
        std::fs::write(
            work.join(spec_path(target, grouped)),
            spec(&format!("sleep push{p}")),
        )
        .unwrap();
        git(&work, &["commit", "-q", "-am", &format!("push {p}")]);
        git(&work, &["push", "-q", "origin", "main"]);
        let commit = git(&work, &["rev-parse", "HEAD"]);
        let body = format!(r#"{{"ref":"refs/heads/main","after":"{commit}"}}"#);
        let sig = baton::daemon::hooks::sign_sha256(SECRET.as_bytes(), body.as_bytes());
        let fetched_before = fetch_seconds(&http, &url).await;
        let started = Instant::now();
        let r = http
            .post(format!("{url}/hooks/github"))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", format!("bench-{p}"))
            .header("X-Hub-Signature-256", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        // The api_post_event of this app.
        let needle = format!("sleep push{p}\"");
        loop {
            if let Some(at) = buf.find(&needle) {
                buf.drain(..at + needle.len());
                break;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(120), events.chunk())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
        }
        samples.write.push(started.elapsed());
        finished(&mut inbox, &commit, Duration::from_secs(600)).await;
        samples.cycle.push(started.elapsed());
        let fetched = fetch_seconds(&http, &url).await - fetched_before;
        samples
            .fetch
            .push(Duration::from_secs_f64(fetched.max(0.0)));
    }
    stop.cancel();
    let _ = serve.await;
    sink_stop.cancel();
    scheduler.stop();
    samples
}
