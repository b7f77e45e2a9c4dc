//! Metrics and notifications of `baton serve` end to end: a bare git repo over `file://`, the dev
//! scheduler and the daemon in-process, and a local receiver standing in for a generic JSON
//! webhook and a Slack incoming webhook. A push deploys (`deployment_finished` names the app
//! and commit; `/metrics` counts the sync, the webhook and the apps by state); an app that cannot
//! start fails (`sync_failed`); an out-of-band scale is drift (`drift_detected`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::routing::post;
use axum::{Json, Router};
use baton::config::ServeConfig;
use baton::daemon::notifications::{Sink, SinkKind};
use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "e2e-secret";
const DEADLINE: Duration = Duration::from_secs(90);

fn have_git() -> bool {
    let ok = Command::new("git").arg("--version").output().is_ok();
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "git is required in CI");
        std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("skipped: git is not installed\n"),
        )
        .ok();
    }
    ok
}

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

fn write(work: &Path, rel: &str, text: &str) {
    let p = work.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn commit_push(work: &Path, msg: &str) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg]);
    git(work, &["push", "-q", "origin", "main"]);
    git(work, &["rev-parse", "HEAD"])
}

/// The notification receiver: every POST to `/{sink}` is passed on as `(sink, body)`.
async fn receiver() -> (
    String,
    mpsc::UnboundedReceiver<(String, Value)>,
    CancellationToken,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/{sink}",
            post(
                |State(tx): State<mpsc::UnboundedSender<(String, Value)>>,
                 UrlPath(sink): UrlPath<String>,
                 Json(body): Json<Value>| async move {
                    let _ = tx.send((sink, body));
                    "ok"
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await
            .unwrap();
    });
    (url, rx, stop)
}

/// Notifications seen so far, and a way to wait for one.
struct Inbox {
    rx: mpsc::UnboundedReceiver<(String, Value)>,
    seen: Vec<(String, Value)>,
}

impl Inbox {
    /// The first notification on `sink` (seen before or arriving within [`DEADLINE`]) that
    /// `matches`; removed from the inbox.
    async fn expect(&mut self, sink: &str, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(i) = self.seen.iter().position(|(s, b)| s == sink && matches(b)) {
                return self.seen.remove(i).1;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(n)) => self.seen.push(n),
                _ => panic!("no {what} on {sink}; got {:#?}", self.seen),
            }
        }
    }
}

fn mentions(v: &Value, app: &str) -> bool {
    v.as_array()
        .is_some_and(|a| a.iter().any(|x| x == app || x["app"] == app))
}

struct Env {
    _tmp: tempfile::TempDir,
    remote: PathBuf,
    work: PathBuf,
    state: PathBuf,
    marathon: String,
    http: reqwest::Client,
}

/// Poll `check` every 50 ms until it holds (at most [`DEADLINE`]).
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// One sample of `/metrics` (None: the series is absent).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
}

async fn metrics(env: &Env, serve: &str) -> String {
    let r = env
        .http
        .get(format!("{serve}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.unwrap()
}

async fn push_hook(env: &Env, serve: &str, delivery: &str, signature: Option<&str>) -> u16 {
    let body = format!(
        r#"{{"ref":"refs/heads/main","after":"{}"}}"#,
        git(&env.work, &["rev-parse", "HEAD"])
    );
    let sig = signature
        .map(str::to_string)
        .unwrap_or_else(|| baton::daemon::hooks::sign_sha256(SECRET.as_bytes(), body.as_bytes()));
    env.http
        .post(format!("{serve}/hooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_and_notifications_follow_pushes_failures_and_drift() {
    if !have_git() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let remote = tmp.path().join("remote.git");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
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
    write(&work, "baton.yaml", "owner: e2e\n");
    let web = |cmd: &str| format!("cmd: \"{cmd}\"\ncpus: 0.01\nmem: 16\ninstances: 1\n");
    write(&work, "apps/web.yaml", &web("sleep 600"));
    let c1 = commit_push(&work, "initial");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let marathon = format!("http://{}", listener.local_addr().unwrap());
    let scheduler_stop = CancellationToken::new();
    let stop = scheduler_stop.clone();
    let scheduler = tokio::spawn(async move {
        let _ = baton_dev_scheduler::run(listener, Default::default(), stop).await;
    });
    let env = Env {
        state: tmp.path().join("state"),
        _tmp: tmp,
        remote,
        work,
        marathon,
        http: reqwest::Client::new(),
    };
    let (sink_url, rx, receiver_stop) = receiver().await;
    let mut inbox = Inbox {
        rx,
        seen: Vec::new(),
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = ServeConfig {
        repo: format!("file://{}", env.remote.display()),
        webhook_secret: Some(SecretString::from(SECRET.to_string())),
        notify: vec![
            Sink {
                kind: SinkKind::Json,
                url: format!("{sink_url}/json"),
            },
            Sink {
                kind: SinkKind::Slack,
                url: format!("{sink_url}/slack"),
            },
        ],
        // Cycles are driven by webhooks and scheduler events here (hourly polls).
        ..baton_e2e::serve_config("", env.marathon.clone(), &env.state, addr)
    };
    let serve_stop = CancellationToken::new();
    let s = serve_stop.clone();
    let serve_task = tokio::spawn(async move {
        baton::daemon::serve::serve(config, listener, s)
            .await
            .unwrap();
    });
    let serve = format!("http://{addr}");

    // Startup deploys /web from the first commit.
    let n = inbox
        .expect("json", "the first deployment", |b| {
            b["event"] == "deployment_finished" && b["details"]["commit"] == c1.as_str()
        })
        .await;
    assert!(mentions(&n["details"]["apps"], "/web"), "{n:#}");
    // The owner is the repo's (`baton.yaml`), not a built-in default.
    assert_eq!(n["owner"], "e2e", "{n:#}");

    // A push, a webhook: deployed, announced in both formats, counted.
    write(&env.work, "apps/web.yaml", &web("sleep 700"));
    let c2 = commit_push(&env.work, "web 700");
    assert_eq!(push_hook(&env, &serve, "d-1", None).await, 202);
    let n = inbox
        .expect("json", "the pushed deployment", |b| {
            b["event"] == "deployment_finished" && b["details"]["commit"] == c2.as_str()
        })
        .await;
    assert_eq!(n["details"]["apps"], json!(["/web"]), "{n:#}");
    assert!(n["summary"].as_str().unwrap().contains(&c2[..12]), "{n:#}");
    let slack = inbox
        .expect("slack", "the Slack form of the deployment", |b| {
            b["text"].as_str().is_some_and(|t| t.contains(&c2[..12]))
        })
        .await;
    assert!(
        slack["text"].as_str().unwrap().contains("[e2e]"),
        "{slack:#}"
    );
    assert!(
        slack["text"].as_str().unwrap().contains("/web"),
        "{slack:#}"
    );
    // Replayed and forged deliveries are counted by outcome, and start nothing.
    assert_eq!(push_hook(&env, &serve, "d-1", None).await, 200);
    assert_eq!(push_hook(&env, &serve, "d-2", Some("sha256=00")).await, 401);

    let m = metrics(&env, &serve).await;
    let s = |series: &str| sample(&m, series);
    // Startup and the webhook: two syncs that deployed something.
    assert_eq!(s("baton_syncs_total{outcome=\"synced\"}"), Some(2.0), "{m}");
    assert_eq!(s("baton_syncs_total{outcome=\"failed\"}"), None, "{m}");
    assert!(
        s("baton_sync_duration_seconds_count").unwrap() >= 2.0,
        "{m}"
    );
    for (outcome, n) in [("accepted", 1.0), ("duplicate", 1.0), ("rejected", 1.0)] {
        let series = format!("baton_webhook_deliveries_total{{outcome=\"{outcome}\"}}");
        assert_eq!(s(&series), Some(n), "{series}\n{m}");
    }
    assert_eq!(s("baton_apps{state=\"in_sync\"}"), Some(1.0), "{m}");
    assert_eq!(s("baton_apps{state=\"drifted\"}"), Some(0.0), "{m}");
    assert_eq!(s("baton_apps{state=\"missing\"}"), Some(0.0), "{m}");
    assert_eq!(s("baton_drifted_apps"), Some(0.0), "{m}");
    assert_eq!(s("baton_push_to_deployed_seconds_count"), Some(1.0), "{m}");
    assert!(
        s("baton_git_fetch_duration_seconds_count").unwrap() >= 2.0,
        "{m}"
    );
    // A delivery counts as sent once the receiver has answered, which is just after it handed
    // us the body: wait for all four (two per deployment, one per sink).
    wait_for("four notifications counted as sent", || async {
        sample(
            &metrics(&env, &serve).await,
            "baton_notifications_total{outcome=\"sent\"}",
        )
        .is_some_and(|n| n >= 4.0)
    })
    .await;

    // An app that exits at once misses its 3 s deadline: the sync fails and says why.
    write(
        &env.work,
        "apps/broken.yaml",
        "cmd: exit 3\ncpus: 0.01\nmem: 8\nbaton:\n  deadline: 3s\n",
    );
    let c3 = commit_push(&env.work, "broken app");
    assert_eq!(push_hook(&env, &serve, "d-3", None).await, 202);
    let n = inbox
        .expect("json", "the sync failure", |b| b["event"] == "sync_failed")
        .await;
    assert_eq!(n["details"]["commit"], c3.as_str(), "{n:#}");
    assert_eq!(n["details"]["apps"][0]["app"], "/broken", "{n:#}");
    let reason = n["details"]["apps"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("rolled back"), "{reason}");
    assert!(n["summary"].as_str().unwrap().contains("/broken"), "{n:#}");
    let m = metrics(&env, &serve).await;
    assert_eq!(
        sample(&m, "baton_syncs_total{outcome=\"partial\"}"),
        Some(1.0),
        "{m}"
    );

    // Scaled out of band: drift, announced with the field and the policy.
    let r = env
        .http
        .put(format!("{}/v2/apps/web?partialUpdate=true", env.marathon))
        .json(&json!({"instances": 2}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let n = inbox
        .expect("json", "the drift", |b| {
            b["event"] == "drift_detected" && b["details"]["app"] == "/web"
        })
        .await;
    assert_eq!(n["details"]["fields"], json!(["/instances"]), "{n:#}");
    assert_eq!(n["details"]["policy"], "report", "{n:#}");
    wait_for("the drift in /metrics", || async {
        let m = metrics(&env, &serve).await;
        sample(&m, "baton_apps{state=\"drifted\"}") == Some(1.0)
            && sample(&m, "baton_drifted_apps").is_some_and(|n| n >= 1.0)
    })
    .await;
    // A deploy is not drift: no drift notification ever named the pushed changes.
    assert!(
        !inbox.seen.iter().any(|(s, b)| s == "json"
            && b["event"] == "drift_detected"
            && b["details"]["fields"] != json!(["/instances"])),
        "{:#?}",
        inbox.seen
    );

    // The dev scheduler counted the daemon's API calls (the benchmarks read these).
    let counts: Value = env
        .http
        .get(format!("{}/baton-dev/requests", env.marathon))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(counts["GET /v2/apps"].as_u64().unwrap() >= 3, "{counts}");
    assert!(counts["PUT /v2/apps/*"].as_u64().unwrap() >= 1, "{counts}");
    assert!(counts.get("GET /baton-dev/requests").is_none(), "{counts}");

    serve_stop.cancel();
    tokio::time::timeout(Duration::from_secs(30), serve_task)
        .await
        .unwrap()
        .unwrap();
    receiver_stop.cancel();
    scheduler_stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), scheduler)
        .await
        .unwrap()
        .unwrap();
}
