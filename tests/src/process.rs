//! A `baton` binary run as an operator runs it: its stderr read line by line (the address it
//! listens on comes from its start-up log line), stopped with SIGTERM, killed if a test fails.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `baton` process.
pub struct Daemon {
    child: Child,
    /// `host:port` it listens on.
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Start `command` (stderr is taken) and wait (up to 90 s) for the log line holding
    /// `marker` immediately followed by the listening address (`addr=`, `http://`).
    pub async fn start(mut command: Command, marker: &str) -> Daemon {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start baton");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (lines, marker) = (log.clone(), marker.to_string());
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(marker.as_str()).nth(1) {
                    let addr = rest.split(|c: char| c.is_whitespace() || c == '/').next();
                    if let (Some(tx), Some(addr)) = (tx.take(), addr) {
                        let _ = tx.send(addr.to_string());
                    }
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(90), rx).await {
            Ok(Ok(addr)) => addr,
            _ => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "baton did not start ({status:?}):\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Daemon { child, addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for baton")
    }

    /// Panic, with the exit status and the log, if the process is gone.
    pub fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "{what}: baton exited ({status}):\n{}",
                self.log().join("\n")
            );
        }
    }

    /// SIGTERM, then wait (up to 60 s) for the exit.
    pub async fn stop(mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "baton did not stop on SIGTERM:\n{}",
                self.log().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
