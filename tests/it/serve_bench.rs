//! Benchmark (ignored by default): latency from a push webhook request to the first scheduler
//! write (the dev scheduler's `api_post_event` for the changed app), for a one-file change in
//! repos of N apps. Prints median and p99; asserts nothing about time. Also prints the time
//! until `/api/status` shows the commit synced (the whole cycle: fast path, then list all,
//! plan, drift, state), polled every 20 ms, which is what the first write waited for before the
//! fast path existed.
//!
//! `BATON_BENCH_SIZES=100,1000,10000 BATON_BENCH_PUSHES=50 cargo test --release -p baton-e2e
//!  --test e2e serve_bench -- --ignored --nocapture`

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use baton::config::ServeConfig;
use baton::reconcile::SyncMode;
use baton::scheduler::marathon::MarathonConfig;
use secrecy::SecretString;
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
#[ignore = "benchmark: run with --ignored --release"]
async fn serve_bench() {
    let sizes: Vec<usize> = std::env::var("BATON_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let pushes: usize = std::env::var("BATON_BENCH_PUSHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    for n in sizes {
        let (write, synced) = run_size(n, pushes).await;
        let (median, p99) = stats(write);
        let (s_median, s_p99) = stats(synced);
        println!(
            "serve_bench apps={n} pushes={pushes} first-write median={median:?} p99={p99:?} \
             cycle-synced median={s_median:?} p99={s_p99:?}"
        );
    }
}

fn stats(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[((samples.len() * 99).div_ceil(100))
        .saturating_sub(1)
        .min(samples.len() - 1)];
    (median, p99)
}

async fn run_size(n: usize, pushes: usize) -> (Vec<Duration>, Vec<Duration>) {
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
        std::fs::write(
            work.join(format!("apps/app{i:05}.yaml")),
            spec(&format!("sleep {i}")),
        )
        .unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "initial"]);
    git(&work, &["push", "-q", "origin", "main"]);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let marathon = format!("http://{}", listener.local_addr().unwrap());
    let sched_stop = CancellationToken::new();
    let s = sched_stop.clone();
    let sched = tokio::spawn(async move {
        let _ = baton::scheduler::dev::run(listener, Default::default(), s).await;
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig {
        repo: format!("file://{}", remote.display()),
        reference: "main".into(),
        cache_dir: tmp.path().join("state/cache"),
        state_dir: tmp.path().join("state"),
        listen: addr,
        marathon: MarathonConfig::new(marathon.clone()),
        sync: SyncMode::Auto,
        poll_interval: Duration::from_secs(3600),
        webhook_secret: SecretString::from(SECRET.to_string()),
        api_token: None,
        allow_deletes: None,
        git_auth: None,
        vault: None,
        notify: Vec::new(),
    };
    let stop = CancellationToken::new();
    let st = stop.clone();
    let serve =
        tokio::spawn(async move { baton::serve::serve(config, listener, st).await.unwrap() });
    let http = reqwest::Client::new();
    let url = format!("http://{addr}");
    // Initial deploy of all apps.
    let deadline = Instant::now() + Duration::from_secs(1800);
    loop {
        let s: serde_json::Value = match http.get(format!("{url}/api/status")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        if s["lastSynced"].is_string() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "initial deploy of {n} apps did not finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut events = http
        .get(format!("{marathon}/v2/events?event_type=api_post_event"))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let mut samples = Vec::new();
    let mut synced = Vec::new();
    for p in 0..pushes {
        let target = format!("app{:05}", p % n);
        std::fs::write(
            work.join(format!("apps/{target}.yaml")),
            spec(&format!("sleep push{p}")),
        )
        .unwrap();
        git(&work, &["commit", "-q", "-am", &format!("push {p}")]);
        git(&work, &["push", "-q", "origin", "main"]);
        let body = format!(
            r#"{{"ref":"refs/heads/main","after":"{}"}}"#,
            git(&work, &["rev-parse", "HEAD"])
        );
        let sig = baton::hooks::sign_sha256(SECRET.as_bytes(), body.as_bytes());
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
        // Wait for the api_post_event of this app.
        let needle = format!("sleep push{p}");
        let mut buf = String::new();
        loop {
            let chunk = tokio::time::timeout(Duration::from_secs(120), events.chunk())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            buf.push_str(&String::from_utf8_lossy(&chunk));
            if buf.contains(&needle) {
                break;
            }
        }
        samples.push(started.elapsed());
        // Let the cycle finish (its deployment) before the next push, so pushes do not coalesce.
        let commit = git(&work, &["rev-parse", "HEAD"]);
        loop {
            let s: serde_json::Value = http
                .get(format!("{url}/api/status"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if s["lastSynced"] == serde_json::Value::String(commit.clone()) {
                synced.push(started.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.cancel();
    let _ = serve.await;
    sched_stop.cancel();
    let _ = sched.await;
    (samples, synced)
}
