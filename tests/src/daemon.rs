//! `baton serve` as a process, the way an operator runs it: JSON logs collected line by line (so
//! a test can wait for a log event and count them), its HTTP API at [`Daemon::api`].

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// How long a test waits for the daemon to do something (a loaded CI machine is slow).
pub const DEADLINE: Duration = Duration::from_secs(90);

/// A running `baton serve`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    /// `http://<addr>` of its API.
    pub api: String,
    /// Every log line so far (JSON events, or the raw text of a line that is not JSON).
    log: Arc<Mutex<Vec<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    pub http: reqwest::Client,
}

impl Daemon {
    /// Start `baton serve --listen 127.0.0.1:0 --log-format json <args>` with `env`, and wait
    /// until it says where it listens.
    pub async fn start(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(crate::devsched::baton_bin());
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env("BATON_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("baton serve starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let lines = log.clone();
        let reader = std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let event: Value =
                    serde_json::from_str(&line).unwrap_or_else(|_| Value::String(line.clone()));
                if let Some(addr) = event.pointer("/fields/addr").and_then(Value::as_str) {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr.to_string());
                    }
                }
                lines.lock().unwrap().push(event);
            }
        });
        let mut d = Daemon {
            child: Some(child),
            api: String::new(),
            log,
            reader: Some(reader),
            http: reqwest::Client::new(),
        };
        let addr = match tokio::time::timeout(DEADLINE, addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!("baton serve did not start:\n{}", d.log_text()),
        };
        d.api = format!("http://{addr}");
        d
    }

    /// The process id (`None` once stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Send `signal` to the process (`SIGKILL`, `SIGSTOP`, `SIGCONT`).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
        }
    }

    /// The log so far, one event per line (for failure messages).
    pub fn log_text(&self) -> String {
        let log = self.log.lock().unwrap();
        log.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The log events whose message is `message` (at any level).
    pub fn events(&self, message: &str) -> Vec<Value> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|e| e.pointer("/fields/message").and_then(Value::as_str) == Some(message))
            .cloned()
            .collect()
    }

    /// Wait until the log has an event with `message` that `matches`; returns it.
    pub async fn wait_event(&self, message: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(e) = self.events(message).into_iter().find(|e| matches(e)) {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "no log event `{message}` as expected:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `GET /api/status`.
    pub async fn status(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/api/status", self.api))
            .send()
            .await
            .expect("GET /api/status");
        r.json().await.expect("status JSON")
    }

    /// `GET /metrics`.
    pub async fn metrics(&self) -> String {
        crate::get_text(&self.http, &format!("{}/metrics", self.api)).await
    }

    /// Poll `/api/status` until `check` holds (at most [`DEADLINE`]); returns that status.
    pub async fn until_status(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            let st = self.status().await;
            if check(&st) {
                return st;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "timed out waiting for {what}: {st:#}\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, and wait for the exit; returns the exit code.
    pub async fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("wait task")
            .expect("wait");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        status.code()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One sample of a `/metrics` text (`None`: the series is absent).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The entry of app `id` in `/api/status`.
pub fn status_app<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["apps"].as_array()?.iter().find(|a| a["id"] == id)
}
