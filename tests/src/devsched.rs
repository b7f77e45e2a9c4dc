//! An in-process dev scheduler for apply's end-to-end tests, and repos written on the fly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_marathon::marathon::{Marathon, MarathonConfig};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A dev scheduler on `127.0.0.1:<free port>`; [`DevScheduler::stop`] kills its tasks.
pub struct DevScheduler {
    pub url: String,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl DevScheduler {
    pub async fn start() -> DevScheduler {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let stop = CancellationToken::new();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let _ = baton_dev_scheduler::run(listener, Default::default(), s).await;
        });
        DevScheduler {
            url,
            stop,
            task: Some(task),
        }
    }

    /// A client with quick retries.
    pub fn client(&self) -> Marathon {
        client(&self.url)
    }

    /// Stop and wait until every task process is gone.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// `GET /v2/apps` as JSON apps.
    pub async fn apps(&self) -> Vec<Value> {
        let doc: Value = reqwest::get(format!("{}/v2/apps?embed=apps.tasks", self.url))
            .await
            .expect("GET /v2/apps")
            .json()
            .await
            .expect("JSON");
        doc["apps"].as_array().cloned().unwrap_or_default()
    }

    /// API writes received so far (`PUT`, `POST`, `DELETE` of any route), from the dev
    /// scheduler's own request counts.
    pub async fn writes(&self) -> u64 {
        let counts: Value = reqwest::get(format!("{}/baton-dev/requests", self.url))
            .await
            .expect("GET /baton-dev/requests")
            .json()
            .await
            .expect("JSON");
        counts
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(route, _)| !route.starts_with("GET "))
            .filter_map(|(_, n)| n.as_u64())
            .sum()
    }

    /// One app, if it exists.
    pub async fn app(&self, id: &str) -> Option<Value> {
        self.apps()
            .await
            .into_iter()
            .find(|a| a["id"].as_str() == Some(id))
    }

    /// `PUT` an app directly (someone else's change); returns the deployment id.
    pub async fn put(&self, app: &Value) -> String {
        let id = app["id"].as_str().expect("app id");
        let resp = reqwest::Client::new()
            .put(format!("{}/v2/apps{id}?partialUpdate=false", self.url))
            .json(app)
            .send()
            .await
            .expect("PUT");
        assert!(resp.status().is_success(), "PUT {id}: {}", resp.status());
        let doc: Value = resp.json().await.expect("JSON");
        doc["deploymentId"].as_str().unwrap_or_default().to_string()
    }

    /// Wait (bounded) until `check` holds for the app list.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&[Value]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if check(&self.apps().await) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for DevScheduler {
    fn drop(&mut self) {
        // A failed test still takes its processes down (the runtime drives the shutdown).
        self.stop.cancel();
    }
}

/// A Marathon client for `url` with short retries and timeouts.
pub fn client(url: &str) -> Marathon {
    let mut c = MarathonConfig::new(url);
    c.timeout = Duration::from_secs(5);
    c.retries = 2;
    c.retry_base = Duration::from_millis(20);
    Marathon::new(c).expect("client")
}

/// A repo directory: `baton.yaml` and `apps/<path>` files.
pub struct TempRepo {
    pub dir: tempfile::TempDir,
}

impl TempRepo {
    pub fn new(config: &str) -> TempRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("apps")).expect("apps dir");
        std::fs::write(dir.path().join("baton.yaml"), config).expect("baton.yaml");
        TempRepo { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `apps/<rel>`.
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.dir.path().join("apps").join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write spec");
    }

    pub fn remove(&self, rel: &str) {
        std::fs::remove_file(self.dir.path().join("apps").join(rel)).expect("remove spec");
    }
}

/// The `baton` binary, built if needed (`cargo test -p baton-e2e` alone does not build it).
pub fn baton_bin() -> PathBuf {
    if let Some(cargo) = std::env::var_os("CARGO") {
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "baton-cli", "--bin", "baton"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of baton failed");
    }
    crate::workspace_bin("baton").expect("the baton binary next to the test executable")
}
