//! `baton serve` started as an operator starts it (the binary, flags, no webhook secret):
//! what it needs, what it says at start, and how it leaves its state directory.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `baton serve --log-format json`, its log lines read as they come.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    url: String,
}

impl Serve {
    /// Starts `baton serve ARGS --listen 127.0.0.1:0` with a clean environment (plus `env`)
    /// and waits for its "serving" line (which names the bound address).
    fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("BATON_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let doc = serde_json::from_str(&line).unwrap_or(Value::String(line));
                if tx.send(doc).is_err() {
                    break;
                }
            }
        });
        let mut serve = Serve {
            child,
            lines,
            seen: Vec::new(),
            url: String::new(),
        };
        let serving = serve.wait_log("the serving line", |l| message(l) == "serving");
        serve.url = format!("http://{}", serving["fields"]["addr"].as_str().unwrap());
        serve
    }

    /// The first log line (seen or to come) that `matches`, within a generous bound.
    fn wait_log(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(l) = self.seen.iter().find(|l| matches(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(e) => {
                    let status = self.child.try_wait().ok().flatten();
                    panic!(
                        "no {what} ({e:?}; exit {status:?}); the log:\n{}",
                        self.seen
                            .iter()
                            .map(Value::to_string)
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
            }
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// A scheduler address nothing listens on: cycles fail, the server keeps answering.
fn no_scheduler() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

async fn post_hook(url: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/hooks/github"))
        .header("X-GitHub-Event", "push")
        .header("X-GitHub-Delivery", "d-1")
        .header("X-Hub-Signature-256", "sha256=00")
        .body(r#"{"ref":"refs/heads/main","after":"0123"}"#)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A plain directory needs no webhook secret (no push can concern it): `serve` starts, says
/// at start that webhooks are not served, and `POST /hooks/*` answers 404 saying why.
#[tokio::test(flavor = "multi_thread")]
async fn a_plain_directory_needs_no_webhook_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    write(&repo, "baton.yaml", "owner: team-a\n");
    write(&repo, "apps/web.yaml", "cmd: sleep 600\n");
    let state = tmp.path().join("state");
    let mut serve = Serve::start(
        &[
            "--repo",
            repo.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--marathon",
            &no_scheduler(),
        ],
        &[],
    );
    let said = serve.wait_log("a word about webhooks", |l| {
        message(l).contains("webhooks are not served")
    });
    assert_eq!(said["level"], "INFO", "{said}");
    let (code, body) = post_hook(&serve.url).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("plain directory"),
        "{body}"
    );
}

/// A git repo without a webhook secret starts (polling finds its changes), warns at start,
/// and refuses every webhook with 404 and the reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_git_repo_without_a_webhook_secret_starts_and_refuses_webhooks() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let remote = format!("file://{}/remote.git", tmp.path().display());
    let mut serve = Serve::start(
        &[
            "--repo",
            &remote,
            "--state-dir",
            state.to_str().unwrap(),
            "--marathon",
            &no_scheduler(),
        ],
        &[],
    );
    let said = serve.wait_log("a warning about webhooks", |l| {
        message(l).contains("no webhook secret")
    });
    assert_eq!(said["level"], "WARN", "{said}");
    let (code, body) = post_hook(&serve.url).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no webhook secret"),
        "{body}"
    );
    let health = reqwest::get(format!("{}/healthz", serve.url))
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
}

/// The state directory is Baton's alone: one left 0755 with a 0644 state file (as older
/// versions wrote them) is tightened to 0700 / 0600 at start, with a log line for each.
#[tokio::test(flavor = "multi_thread")]
async fn the_state_dir_is_tightened_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    baton::daemon::state::save(&state, &baton::daemon::state::State::new()).unwrap();
    let file = state.join(baton::daemon::state::STATE_FILE);
    let set = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    };
    set(&state, 0o755);
    set(&file, 0o644);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // A git remote and a webhook secret: this test is about the state dir alone.
    let remote = format!("file://{}/remote.git", tmp.path().display());
    let mut serve = Serve::start(
        &[
            "--repo",
            &remote,
            "--state-dir",
            state.to_str().unwrap(),
            "--marathon",
            &no_scheduler(),
        ],
        &[("BATON_WEBHOOK_SECRET", "s3cret")],
    );
    for (path, was) in [(&state, "0755"), (&file, "0644")] {
        let shown = path.display().to_string();
        let line = serve.wait_log("a line about the tightened permissions", |l| {
            message(l).contains("permissions tightened") && l["fields"]["path"] == shown.as_str()
        });
        assert_eq!(line["fields"]["was"], was, "{line}");
    }
    assert_eq!((mode(&state), mode(&file)), (0o700, 0o600));
}

/// Every file `serve` keeps in its state directory (its state, the drift ledger, the
/// gatekeeper's served tasks) is written 0600, in a directory created 0700.
#[test]
fn state_files_are_written_0600_in_a_0700_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    baton::daemon::state::save(&state, &baton::daemon::state::State::new()).unwrap();
    baton::daemon::ledger_file::save(&state, &Default::default()).unwrap();
    let served = baton::secret_zero::gatekeeper::served_path(&state);
    baton::secret_zero::gatekeeper::save_served(&served, &Default::default()).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    let mut files: Vec<(String, u32)> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                mode(&e.path()),
            )
        })
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            (baton_core::drift::ledger::LEDGER_FILE.to_string(), 0o600),
            (
                baton::secret_zero::gatekeeper::SERVED_FILE.to_string(),
                0o600
            ),
            (baton::daemon::state::STATE_FILE.to_string(), 0o600),
        ]
    );
}
