//! `baton serve` end to end: a bare git repo over `file://`, the dev scheduler in-process, and
//! the daemon in-process: push -> webhook -> app changed; bad signature; replayed delivery;
//! force-push; remote down; restart without redeploying. And the same remote served over HTTP
//! by the real `git http-backend`: push -> webhook -> app changed; the host then requiring basic
//! auth is a clear auth error with the last good state kept; credentials from a token file
//! (`--git-token-file`) are refused over plain `http://` (they would travel in clear text).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use baton::config::ServeConfig;
use baton_marathon::marathon::MarathonConfig;
use secrecy::SecretString;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "e2e-secret";

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

fn write_app(work: &Path, name: &str, cmd: &str) {
    std::fs::create_dir_all(work.join("apps")).unwrap();
    std::fs::write(
        work.join(format!("apps/{name}.yaml")),
        format!("cmd: \"{cmd}\"\ncpus: 0.01\nmem: 16\ninstances: 1\n"),
    )
    .unwrap();
}

fn commit_push(work: &Path, msg: &str, force: bool) -> String {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", msg]);
    let mut args = vec!["push", "-q", "origin", "main"];
    if force {
        args.push("--force");
    }
    git(work, &args);
    git(work, &["rev-parse", "HEAD"])
}

struct Env {
    _tmp: tempfile::TempDir,
    remote: PathBuf,
    work: PathBuf,
    state: PathBuf,
    marathon: String,
    scheduler_stop: CancellationToken,
    scheduler: tokio::task::JoinHandle<()>,
    http: reqwest::Client,
}

async fn setup() -> Env {
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
    std::fs::write(work.join("baton.yaml"), "owner: e2e\n").unwrap();
    write_app(&work, "web", "sleep 600");
    write_app(&work, "worker", "sleep 601");
    commit_push(&work, "initial", false);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let marathon = format!("http://{}", listener.local_addr().unwrap());
    let scheduler_stop = CancellationToken::new();
    let stop = scheduler_stop.clone();
    let scheduler = tokio::spawn(async move {
        let _ = baton_dev_scheduler::run(listener, Default::default(), stop).await;
    });
    Env {
        state: tmp.path().join("state"),
        _tmp: tmp,
        remote,
        work,
        marathon,
        scheduler_stop,
        scheduler,
        http: reqwest::Client::new(),
    }
}

struct Serve {
    url: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

async fn start_serve(env: &Env) -> Serve {
    start_serve_at(env, None).await
}

/// `baton serve` following `remote` (default: the bare repo over `file://`); with `Some(config)`
/// the given configuration instead.
async fn start_serve_at(
    env: &Env,
    config: Option<(ServeConfig, tokio::net::TcpListener)>,
) -> Serve {
    if let Some((config, listener)) = config {
        let addr = config.listen;
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            baton::daemon::serve::serve(config, listener, s)
                .await
                .unwrap();
        });
        return Serve {
            url: format!("http://{addr}"),
            stop,
            task,
        };
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Hourly polls: the test drives cycles by webhook, the poll must not interfere.
    let config = ServeConfig {
        webhook_secret: Some(SecretString::from(SECRET.to_string())),
        ..baton_e2e::serve_config(
            format!("file://{}", env.remote.display()),
            env.marathon.clone(),
            &env.state,
            addr,
        )
    };
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        baton::daemon::serve::serve(config, listener, s)
            .await
            .unwrap();
    });
    Serve {
        url: format!("http://{addr}"),
        stop,
        task,
    }
}

impl Serve {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Poll `check` every 50 ms for up to 60 s.
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn app(env: &Env, id: &str) -> Option<Value> {
    let r = env
        .http
        .get(format!("{}/v2/apps/{id}", env.marathon))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<Value>().await.ok().map(|v| v["app"].clone())
}

async fn status(env: &Env, serve: &Serve) -> Value {
    env.http
        .get(format!("{}/api/status", serve.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn push_hook(
    env: &Env,
    serve: &Serve,
    delivery: &str,
    signature: Option<&str>,
) -> (u16, Value) {
    let body = format!(
        r#"{{"ref":"refs/heads/main","after":"{}"}}"#,
        git(&env.work, &["rev-parse", "HEAD"])
    );
    let sig = signature
        .map(str::to_string)
        .unwrap_or_else(|| baton::daemon::hooks::sign_sha256(SECRET.as_bytes(), body.as_bytes()));
    let r = env
        .http
        .post(format!("{}/hooks/github", serve.url))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", delivery)
        .header("X-Hub-Signature-256", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

fn cmd_of(app: &Option<Value>) -> Option<String> {
    app.as_ref()?.get("cmd")?.as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_webhook_force_push_remote_down_and_restart() {
    if !have_git() {
        return;
    }
    let env = setup().await;
    let serve = start_serve(&env).await;

    // Startup sync deploys both apps.
    wait_for("initial deploy", || async {
        cmd_of(&app(&env, "web").await).as_deref() == Some("sleep 600")
            && app(&env, "worker").await.is_some()
    })
    .await;
    wait_for("ready", || async {
        env.http
            .get(format!("{}/readyz", serve.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;

    // Push -> webhook -> app changed.
    write_app(&env.work, "web", "sleep 700");
    let c2 = commit_push(&env.work, "web 700", false);
    let (code, _) = push_hook(&env, &serve, "d-1", None).await;
    assert_eq!(code, 202);
    wait_for("web updated by the webhook", || async {
        cmd_of(&app(&env, "web").await).as_deref() == Some("sleep 700")
    })
    .await;
    wait_for("status shows the commit", || async {
        let s = status(&env, &serve).await;
        s["lastSynced"] == Value::String(c2.clone())
    })
    .await;
    let web = app(&env, "web").await.unwrap();
    assert_eq!(web["labels"]["baton.dev/commit"], Value::String(c2.clone()));

    // Bad signature: 401, nothing happens.
    write_app(&env.work, "web", "sleep 800");
    commit_push(&env.work, "web 800", false);
    let (code, _) = push_hook(&env, &serve, "d-2", Some("sha256=0000")).await;
    assert_eq!(code, 401);
    // Replaying the accepted delivery id: deduplicated, no cycle.
    let (code, body) = push_hook(&env, &serve, "d-1", None).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("duplicate")));
    let s = status(&env, &serve).await;
    assert_eq!(
        s["lastSynced"],
        Value::String(c2.clone()),
        "no sync without a valid new delivery"
    );
    assert_eq!(
        cmd_of(&app(&env, "web").await).as_deref(),
        Some("sleep 700")
    );

    // Force-push: history rewritten; the new tip is deployed.
    git(&env.work, &["reset", "-q", "--hard", &c2]);
    write_app(&env.work, "web", "sleep 900");
    let forced = commit_push(&env.work, "rewritten", true);
    let (code, _) = push_hook(&env, &serve, "d-3", None).await;
    assert_eq!(code, 202);
    wait_for("force-pushed commit deployed", || async {
        cmd_of(&app(&env, "web").await).as_deref() == Some("sleep 900")
    })
    .await;

    // Remote down: a clear error, last good state kept, nothing deleted. The hook announces
    // another commit (the same body again would be a replay, whatever its delivery id); it
    // never reaches the remote, so the restart below still finds the force-pushed tip.
    git(
        &env.work,
        &["commit", "-q", "--allow-empty", "-m", "never pushed"],
    );
    let moved = env.remote.with_extension("gone");
    std::fs::rename(&env.remote, &moved).unwrap();
    let (code, _) = push_hook(&env, &serve, "d-4", None).await;
    assert_eq!(code, 202);
    wait_for("fetch error reported", || async {
        status(&env, &serve).await["lastError"].is_string()
    })
    .await;
    let s = status(&env, &serve).await;
    let err = s["lastError"].as_str().unwrap().to_string();
    assert!(err.contains("remote"), "{err}");
    assert_eq!(s["lastSynced"], Value::String(forced.clone()));
    assert!(app(&env, "web").await.is_some() && app(&env, "worker").await.is_some());
    std::fs::rename(&moved, &env.remote).unwrap();

    // Restart: resumes from the state directory and writes nothing.
    let version_before = app(&env, "web").await.unwrap()["version"].clone();
    serve.shutdown().await;
    let serve = start_serve(&env).await;
    wait_for("ready after restart", || async {
        env.http
            .get(format!("{}/readyz", serve.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let s = status(&env, &serve).await;
    assert_eq!(s["lastSynced"], Value::String(forced.clone()));
    assert_eq!(app(&env, "web").await.unwrap()["version"], version_before);
    let apps = s["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 2);
    assert!(apps.iter().all(|a| a["sync"] == "synced"), "{apps:?}");
    validate_status(&s);

    serve.shutdown().await;
    env.scheduler_stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), env.scheduler)
        .await
        .unwrap()
        .unwrap();
}

/// `/api/status` output against `schemas/status.schema.json`.
pub(crate) fn validate_status(doc: &Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/status.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let problems: Vec<String> = validator.iter_errors(doc).map(|e| e.to_string()).collect();
    assert!(problems.is_empty(), "{problems:?}");
}

async fn serve_with(env: &Env, repo: String, token_file: Option<PathBuf>) -> Serve {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flags = baton::config::FlagConfig {
        file: baton::config::FileConfig {
            repo: Some(repo),
            reference: Some("main".into()),
            state_dir: Some(env.state.clone()),
            cache_dir: Some(env.state.join("cache")),
            listen: Some(listener.local_addr().unwrap()),
            poll_interval: Some("1h".into()),
            git_user: token_file.as_ref().map(|_| "baton".to_string()),
            git_token_file: token_file,
            ..Default::default()
        },
        webhook_secret: Some(SecretString::from(SECRET.to_string())),
        git_token: None,
        ..Default::default()
    };
    let config = baton::config::resolve(
        flags,
        Default::default(),
        MarathonConfig::new(env.marathon.clone()),
    )
    .unwrap();
    start_serve_at(env, Some((config, listener))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn push_webhook_over_http_git_backend() {
    if !have_git() {
        return;
    }
    if baton_e2e::githttp::http_backend().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "git http-backend is required in CI"
        );
        std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("skipped: git http-backend not found under `git --exec-path`\n"),
        )
        .ok();
        return;
    }
    let env = setup().await;
    let root = env.remote.parent().unwrap().to_path_buf();
    let server = baton_e2e::githttp::GitHttp::start(&root, "baton", None).await;
    let serve = serve_with(&env, server.url("remote.git"), None).await;

    wait_for("initial deploy over HTTP", || async {
        cmd_of(&app(&env, "web").await).as_deref() == Some("sleep 600")
            && app(&env, "worker").await.is_some()
    })
    .await;

    // Push -> webhook -> app changed (fetched over HTTP through git http-backend).
    write_app(&env.work, "web", "sleep 710");
    let c2 = commit_push(&env.work, "web 710", false);
    let (code, _) = push_hook(&env, &serve, "h-1", None).await;
    assert_eq!(code, 202);
    wait_for("web updated over HTTP", || async {
        cmd_of(&app(&env, "web").await).as_deref() == Some("sleep 710")
    })
    .await;
    wait_for("status shows the commit", || async {
        status(&env, &serve).await["lastSynced"] == Value::String(c2.clone())
    })
    .await;

    // The host starts requiring a password: the fetch is refused with a clear auth error and
    // the last good state stays (nothing applied from the new commit, nothing deleted).
    server.require_password(Some("right-password"));
    write_app(&env.work, "web", "sleep 720");
    std::fs::remove_file(env.work.join("apps/worker.yaml")).unwrap();
    commit_push(&env.work, "web 720, worker gone", false);
    let (code, _) = push_hook(&env, &serve, "h-2", None).await;
    assert_eq!(code, 202);
    wait_for("auth error reported", || async {
        status(&env, &serve).await["lastError"].is_string()
    })
    .await;
    let s = status(&env, &serve).await;
    let err = s["lastError"].as_str().unwrap().to_string();
    assert!(err.contains("refused the credentials"), "{err}");
    assert_eq!(s["lastSynced"], Value::String(c2.clone()));
    assert_eq!(
        cmd_of(&app(&env, "web").await).as_deref(),
        Some("sleep 710")
    );
    assert!(app(&env, "worker").await.is_some(), "nothing deleted");
    serve.shutdown().await;

    // Credentials from a token file over plain http:// are never sent (clear text): a clear
    // error naming why, the secret in no message, still nothing applied.
    let token_file = env.state.with_file_name("git-token");
    std::fs::write(&token_file, "right-password\n").unwrap();
    let serve = serve_with(&env, server.url("remote.git"), Some(token_file)).await;
    wait_for("clear-text refusal reported", || async {
        status(&env, &serve).await["lastError"].is_string()
    })
    .await;
    let err = status(&env, &serve).await["lastError"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(err.contains("clear text"), "{err}");
    assert!(
        !err.contains("right-password"),
        "secret in the error: {err}"
    );
    assert_eq!(
        cmd_of(&app(&env, "web").await).as_deref(),
        Some("sleep 710")
    );
    assert!(app(&env, "worker").await.is_some(), "nothing deleted");

    serve.shutdown().await;
    server.stop().await;
    env.scheduler_stop.cancel();
    tokio::time::timeout(Duration::from_secs(60), env.scheduler)
        .await
        .unwrap()
        .unwrap();
}
