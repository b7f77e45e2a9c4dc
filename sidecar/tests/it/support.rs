//! Test support: the baton-env binary, a throwaway RustyVault server, waiting helpers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_baton-env");

/// A `baton-env` command with a clean environment (PATH only) and debug logs.
pub fn baton_env() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BATON_LOG", "debug")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` on a blocking thread (the stub keeps serving on the runtime meanwhile).
pub async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("spawn baton-env"))
        .await
        .expect("join")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether a tool the test needs is missing: prints the skip reason, or panics under CI.
pub fn missing(tool: &str, why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{tool} is required under CI: {why}");
    }
    std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("skipped: {tool} not available ({why})\n"),
    )
    .ok();
    true
}

/// Polls `f` every 20 ms until it returns Some, or panics after `limit`.
pub async fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Finds `rvault` like rvault-dev.sh does: $RVAULT_BIN, PATH, ~/.cargo/bin.
pub fn rvault_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RVAULT_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let c = dir.join("rvault");
        if c.is_file() {
            return Some(c);
        }
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
    let c = home.join("bin/rvault");
    c.is_file().then_some(c)
}

/// A RustyVault server on a free loopback port with its own temp dir, initialised,
/// unsealed, with KV v1 at `secret/` and AppRole at `approle/`. Killed on drop.
pub struct Rvault {
    pub addr: String,
    pub root_token: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Rvault {
    pub async fn start(bin: &Path) -> Rvault {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("http://127.0.0.1:{port}");
        let d = dir.path().display();
        let config = format!(
            "storage \"file\" {{\n  path = \"{d}/data\"\n}}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = \"true\"\n}}\napi_addr = \"{addr}\"\nlog_level = \"warn\"\nwork_dir = \"{d}/work\"\n"
        );
        let config_path = dir.path().join("config.hcl");
        std::fs::write(&config_path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let child = Command::new(bin)
            .args(["server", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn rvault");
        let mut rv = Rvault {
            addr,
            root_token: String::new(),
            child,
            _dir: dir,
        };
        let http = reqwest::Client::new();
        let init_url = format!("{}/v1/sys/init", rv.addr);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http.get(&init_url).send().await.is_ok() {
                break;
            }
            assert!(
                rv.child.try_wait().expect("try_wait").is_none(),
                "rvault exited during startup"
            );
            assert!(Instant::now() < deadline, "rvault did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let init: serde_json::Value = http
            .put(&init_url)
            .json(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1}))
            .send()
            .await
            .expect("init")
            .json()
            .await
            .expect("init json");
        let key = init["keys"][0].as_str().expect("unseal key").to_owned();
        rv.root_token = init["root_token"].as_str().expect("root token").to_owned();
        let r = http
            .put(format!("{}/v1/sys/unseal", rv.addr))
            .json(&serde_json::json!({ "key": key }))
            .send()
            .await
            .expect("unseal");
        assert!(r.status().is_success(), "unseal: {}", r.status());
        let mounts: serde_json::Value = rv.get("sys/mounts").await;
        if mounts["secret/"]["type"] != "kv" {
            rv.post("sys/mounts/secret", serde_json::json!({"type": "kv"}))
                .await;
        }
        rv.post("sys/auth/approle", serde_json::json!({"type": "approle"}))
            .await;
        rv
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        let r = reqwest::Client::new()
            .get(format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.root_token)
            .send()
            .await
            .expect("get");
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.expect("json")
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> Option<serde_json::Value> {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.root_token)
            .json(&body)
            .send()
            .await
            .expect("post");
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().await.ok()
    }
}

impl Drop for Rvault {
    fn drop(&mut self) {
        // SIGKILL: rvault takes ~2 s to exit on SIGTERM and holds nothing we need.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (and reaped) when the test ends, even by a failed assertion.
pub struct KillOnDrop(pub Option<Child>);

impl KillOnDrop {
    pub fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }

    /// Takes the child out (the caller waits for it).
    pub fn take(&mut self) -> Child {
        self.0.take().expect("child already taken")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A baton-env started in the background, its stderr collected line by line (so a test
/// can wait for a log event), killed on drop.
pub struct Running {
    pub child: KillOnDrop,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Running {
    pub fn start(mut cmd: Command) -> Running {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn baton-env");
        let pipe = child.stderr.take().expect("stderr");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Running {
            child: KillOnDrop(Some(child)),
            stderr,
            reader,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.pid() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal baton-env");
    }

    /// Everything logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub async fn wait_log(&self, needle: &str, limit: Duration) {
        let what = format!("a log line with {needle:?}");
        wait_for(&what, limit, || {
            self.stderr
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(needle))
                .then_some(())
        })
        .await;
    }

    /// Waits for baton-env to exit (panics after `limit`; the drop kills it); returns its
    /// exit code and stderr.
    pub async fn exit(mut self, limit: Duration) -> (Option<i32>, String) {
        let mut child = self.child.take();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "baton-env did not exit within {limit:?}:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The reader ends at EOF, once every holder of the pipe is gone.
        let reader = &self.reader;
        wait_for("the end of stderr", Duration::from_secs(5), || {
            reader.is_finished().then_some(())
        })
        .await;
        (status.code(), self.stderr())
    }
}

/// Lines of a file a child script appends to (empty while it does not exist).
pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Whether a process exists (a zombie counts as existing).
pub fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}
