//! The dev scheduler driven over HTTP, as Marathon clients would: in-process servers on
//! `127.0.0.1:0`, real task processes, waits bounded by deadlines (never bare sleeps).

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use baton_dev_scheduler::{run, DevConfig, DevError};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::{repo_root, shared_marathon};

/// Generous: CI machines are slow and tests run in parallel.
const DEADLINE: Duration = Duration::from_secs(60);

struct Server {
    url: String,
    http: reqwest::Client,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), DevError>>,
}

async fn start(config: DevConfig) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(run(listener, config, shutdown.clone()));
    Server {
        url,
        http: reqwest::Client::new(),
        shutdown,
        handle,
    }
}

impl Server {
    /// Stop the server; `run` returns only when every task process is gone.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("run() must return after shutdown")
            .unwrap()
            .unwrap();
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, v)
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(reqwest::Method::GET, path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }

    async fn no_deployments(&self) {
        eventually("no deployment left", || async {
            let d = self.get("/v2/deployments").await;
            d.as_array().unwrap().is_empty().then_some(())
        })
        .await
    }

    async fn app(&self, id: &str) -> Value {
        self.get(&format!("/v2/apps{id}")).await["app"].clone()
    }
}

/// Poll `f` every 100 ms until it gives `Some`, or fail after [`DEADLINE`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .filter(|s| s.ends_with('\n'))
}

/// A process exists and is not a zombie (an orphan waiting for init to reap it).
fn alive(pid: i32) -> bool {
    let exists = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false);
    exists && !zombie
}

fn has_python3() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A missing tool skips the test, except in CI (there it is a failure).
fn tool_missing(test: &str, why: &str) -> bool {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {why} (CI must install it)");
    }
    std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!("skipped {test}: {why}\n"),
    )
    .ok();
    true
}

#[tokio::test]
async fn create_runs_a_task_with_marathon_env_and_scales() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let s = start(DevConfig::default()).await;
    let cmd = format!(
        "echo \"$PORT0 $PORT $PORTS $HOST $MESOS_TASK_ID $MARATHON_APP_ID $MARATHON_APP_VERSION $GREETING\" > {}.$MESOS_TASK_ID; sleep 1000",
        out.display()
    );
    let (status, body) = s
        .post("/v2/apps", json!({"id": "/env-app", "cmd": cmd, "cpus": 0.1, "mem": 16, "env": {"GREETING": "hi"}}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["id"], "/env-app");
    assert_eq!(body["deployments"].as_array().unwrap().len(), 1);
    assert_eq!(body["tasksRunning"], 0);
    assert_eq!(body["backoffFactor"], 1.15, "defaults are filled");
    let service_port = body["portDefinitions"][0]["port"].as_u64().unwrap();
    assert!(service_port >= 10000, "a service port is assigned: {body}");
    assert!(body["version"].as_str().unwrap().ends_with('Z'));

    s.no_deployments().await;
    let tasks = s.get("/v2/apps/env-app/tasks").await["tasks"].clone();
    assert_eq!(tasks.as_array().unwrap().len(), 1);
    let task = &tasks[0];
    assert_eq!(task["state"], "TASK_RUNNING");
    let id = task["id"].as_str().unwrap();
    assert!(id.starts_with("env-app."), "{id}");
    let port = task["ports"][0].as_u64().unwrap();
    assert_eq!(task["servicePorts"][0].as_u64(), Some(service_port));
    let file = PathBuf::from(format!("{}.{id}", out.display()));
    let line = eventually("the task wrote its env", || async { read(&file) }).await;
    let version = body["version"].as_str().unwrap();
    assert_eq!(
        line.trim(),
        format!("{port} {port} {port} 127.0.0.1 {id} /env-app {version} hi")
    );

    // Scale to 3 (a plain PUT merges) and back to 1.
    let (status, d) = s.put("/v2/apps/env-app", json!({"instances": 3})).await;
    assert_eq!(status, 200, "{d}");
    assert!(d["deploymentId"].is_string() && d["version"].is_string());
    s.no_deployments().await;
    let app = s.app("/env-app").await;
    assert_eq!(
        (app["instances"].as_u64(), app["tasksRunning"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(
        app["cmd"].as_str(),
        Some(cmd.as_str()),
        "a scaling keeps the rest"
    );
    assert_eq!(
        app["versionInfo"]["lastConfigChangeAt"].as_str(),
        Some(version)
    );
    assert_ne!(app["versionInfo"]["lastScalingAt"].as_str(), Some(version));
    let (status, _) = s.put("/v2/apps/env-app", json!({"instances": 1})).await;
    assert_eq!(status, 200);
    s.no_deployments().await;
    let tasks = s.get("/v2/tasks").await["tasks"].clone();
    assert_eq!(tasks.as_array().unwrap().len(), 1);
    assert_eq!(
        tasks[0]["id"].as_str(),
        Some(id),
        "YOUNGEST_FIRST kills the new ones"
    );
    let versions = s.get("/v2/apps/env-app/versions").await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 3);
    s.stop().await;
}

#[tokio::test]
async fn partial_update_keeps_fields_and_full_replace_removes_them() {
    let s = start(DevConfig::default()).await;
    let (status, _) = s
        .put(
            "/v2/apps/upd?partialUpdate=false",
            json!({"id": "/upd", "cmd": "sleep 1000", "labels": {"team": "a"}, "env": {"K": "v"}}),
        )
        .await;
    assert_eq!(status, 201, "PUT creates a missing app");
    s.no_deployments().await;

    let (status, _) = s.put("/v2/apps/upd", json!({"cmd": "sleep 1001"})).await;
    assert_eq!(status, 200);
    s.no_deployments().await;
    let app = s.app("/upd").await;
    assert_eq!(app["cmd"], "sleep 1001");
    assert_eq!(
        app["labels"],
        json!({"team": "a"}),
        "partialUpdate defaults to true"
    );

    let (status, _) = s
        .put(
            "/v2/apps/upd?partialUpdate=false",
            json!({"cmd": "sleep 1002"}),
        )
        .await;
    assert_eq!(status, 200);
    s.no_deployments().await;
    let app = s.app("/upd").await;
    assert_eq!(app["cmd"], "sleep 1002");
    assert!(app.get("labels").is_none_or(|l| l == &json!({})), "{app}");
    assert!(app.get("env").is_none_or(|e| e == &json!({})), "{app}");
    let tasks = app["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["version"], app["version"], "the task was replaced");
    s.stop().await;
}

/// An app whose TCP health check never passes: its deployment never finishes.
fn stuck_app(id: &str) -> Value {
    json!({"id": id, "cmd": "sleep 1000", "portDefinitions": [{"port": 0}],
           "healthChecks": [{"protocol": "TCP", "gracePeriodSeconds": 0, "intervalSeconds": 1,
                             "timeoutSeconds": 1, "maxConsecutiveFailures": 0}]})
}

#[tokio::test]
async fn locked_app_conflicts_and_delete_defaults_to_force() {
    let s = start(DevConfig::default()).await;
    let (status, _) = s.post("/v2/apps", stuck_app("/locked")).await;
    assert_eq!(status, 201);
    let app = eventually("an unhealthy task", || async {
        let app = s.app("/locked").await;
        (app["tasksUnhealthy"] == 1).then_some(app)
    })
    .await;
    let deployment = app["deployments"][0]["id"].as_str().unwrap().to_string();
    let result = &app["tasks"][0]["healthCheckResults"][0];
    assert_eq!(result["alive"], false);
    assert!(
        result["lastFailureCause"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{result}"
    );
    assert_eq!(s.get("/v2/deployments").await[0]["id"], deployment.as_str());

    let (status, body) = s.put("/v2/apps/locked", json!({"instances": 2})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["deployments"][0]["id"], deployment.as_str());
    let (status, body) = s.delete("/v2/apps/locked?force=false").await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("locked"));

    let (status, body) = s.post("/v2/apps", stuck_app("/locked")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["message"], "An app with id [/locked] already exists.");

    let (status, body) = s.delete("/v2/apps/locked").await;
    assert_eq!(status, 200, "no force parameter means force=true: {body}");
    let (status, _) = s.call(reqwest::Method::GET, "/v2/apps/locked", None).await;
    assert_eq!(status, 404);
    s.no_deployments().await;
    assert!(s.get("/v2/tasks").await["tasks"]
        .as_array()
        .unwrap()
        .is_empty());
    s.stop().await;
}

#[tokio::test]
async fn failing_deployment_stays_until_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(DevConfig::default()).await;
    let (status, _) = s
        .post("/v2/apps", json!({"id": "/rb", "cmd": "sleep 1000"}))
        .await;
    assert_eq!(status, 201);
    s.no_deployments().await;
    let good = s.app("/rb").await;
    let runs = dir.path().join("runs");
    let bad_cmd = format!("echo run >> {}; exit 3", runs.display());
    let (status, d) = s
        .put(
            "/v2/apps/rb",
            json!({"cmd": bad_cmd, "backoffSeconds": 1, "backoffFactor": 1.5}),
        )
        .await;
    assert_eq!(status, 200);
    let bad_deployment = d["deploymentId"].as_str().unwrap().to_string();

    // The new version keeps failing: relaunched with backoff, reported, deployment kept.
    // Waited on the scheduler's own view, not only the file: the second run's line can be
    // written before the scheduler has reaped that task and queued the next launch. The old
    // task must keep running meanwhile (minimumHealthCapacity 1): if it were killed, this
    // wait would time out.
    let (app, queue) = eventually(
        "relaunched after failing, queued, the old task still running",
        || async {
            read(&runs).filter(|r| r.lines().count() >= 2)?;
            let app = s.app("/rb").await;
            let queue = s.get("/v2/queue").await;
            (app["tasksRunning"] == 1 && queue["queue"][0]["app"]["id"] == "/rb")
                .then_some((app, queue))
        },
    )
    .await;
    let failure = &app["lastTaskFailure"];
    assert_eq!(failure["state"], "TASK_FAILED", "{app}");
    assert_eq!(failure["message"], "Command exited with status 3");
    assert_eq!(failure["version"], app["version"]);
    assert_eq!(queue["queue"][0]["count"], 1);
    assert!(queue["queue"][0]["delay"]["timeLeftSeconds"].is_u64());
    let ds = s.get("/v2/deployments").await;
    assert_eq!(ds[0]["id"], bad_deployment.as_str());
    assert_eq!(ds[0]["currentActions"][0]["action"], "RestartApplication");

    let (status, rollback) = s.delete(&format!("/v2/deployments/{bad_deployment}")).await;
    assert_eq!(status, 200, "{rollback}");
    assert_ne!(rollback["deploymentId"], bad_deployment.as_str());
    s.no_deployments().await;
    let app = s.app("/rb").await;
    assert_eq!(app["cmd"], "sleep 1000");
    assert_eq!(app["tasksRunning"], 1);
    assert_eq!(
        app["tasks"][0]["stagedAt"], good["tasks"][0]["stagedAt"],
        "the original task was kept"
    );

    // force=true only stops the deployment.
    let (_, d) = s.put("/v2/apps/rb", json!({"cmd": "exit 1"})).await;
    let id = d["deploymentId"].as_str().unwrap();
    let (status, body) = s.delete(&format!("/v2/deployments/{id}?force=true")).await;
    assert_eq!((status, body), (202, Value::Null));
    assert!(s
        .get("/v2/deployments")
        .await
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        s.app("/rb").await["cmd"],
        "exit 1",
        "a forced stop does not roll back"
    );
    let (status, _) = s.delete("/v2/deployments/nope").await;
    assert_eq!(status, 404);
    s.stop().await;
}

#[tokio::test]
async fn http_health_checks_gate_the_deployment() {
    if !has_python3()
        && tool_missing(
            "http_health_checks_gate_the_deployment",
            "python3 is not installed",
        )
    {
        return;
    }
    let s = start(DevConfig::default()).await;
    let (status, body) = s
        .post(
            "/v2/apps",
            json!({"id": "/web", "cmd": "exec python3 -m http.server $PORT0 --bind 127.0.0.1",
                   "healthChecks": [{"protocol": "HTTP", "path": "/", "gracePeriodSeconds": 30,
                                     "intervalSeconds": 1, "timeoutSeconds": 2}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    s.no_deployments().await;
    let app = s.app("/web").await;
    assert_eq!(app["tasksHealthy"], 1, "{app}");
    let result = &app["tasks"][0]["healthCheckResults"][0];
    assert_eq!(result["alive"], true);
    assert!(result["lastSuccess"].as_str().unwrap().ends_with('Z'));

    // A check that fails counts once the grace period is over, and kills the task. (The grace
    // period also covers the new task's start: on a loaded machine python may take over a
    // second to listen, and a refused connection is not the failure this test is about.)
    let (status, _) = s
        .put(
            "/v2/apps/web",
            json!({"healthChecks": [{"protocol": "HTTP", "path": "/missing", "gracePeriodSeconds": 3,
                                     "intervalSeconds": 1, "maxConsecutiveFailures": 2}]}),
        )
        .await;
    assert_eq!(status, 200);
    let app = eventually(
        "a task killed for failing its health check with 404",
        || async {
            let app = s.app("/web").await;
            app["lastTaskFailure"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("health check failed") && m.contains("404"))
                .then_some(app)
        },
    )
    .await;
    assert_eq!(app["lastTaskFailure"]["state"], "TASK_KILLED");
    s.stop().await;
}

/// Read SSE events (type, JSON) until `done` says stop.
async fn read_events(
    resp: reqwest::Response,
    mut done: impl FnMut(&[(String, Value)]) -> bool,
) -> Vec<(String, Value)> {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    let end = tokio::time::Instant::now() + DEADLINE;
    while !done(&events) {
        let chunk = tokio::time::timeout_at(end, stream.next())
            .await
            .expect("events in time")
            .expect("stream open")
            .unwrap();
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = Some(k.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(serde_json::from_str::<Value>(d).unwrap());
                }
            }
            if let (Some(k), Some(d)) = (kind, data) {
                events.push((k, d));
            }
        }
    }
    events
}

#[tokio::test]
async fn events_stream_in_marathon_format() {
    let s = start(DevConfig::default()).await;
    let resp = s
        .http
        .get(format!("{}/v2/events", s.url))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let poster = async {
        let (status, _) = s
            .post("/v2/apps", json!({"id": "/ev", "cmd": "sleep 1000"}))
            .await;
        assert_eq!(status, 201);
    };
    let reader = read_events(resp, |evs| {
        evs.iter().any(|(k, _)| k == "deployment_success")
    });
    let ((), events) = tokio::join!(poster, reader);
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds[0], "event_stream_attached");
    for (kind, body) in &events {
        assert_eq!(body["eventType"], kind.as_str());
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let find = |k: &str| {
        events
            .iter()
            .find(|(kind, _)| kind == k)
            .map(|(_, b)| b.clone())
    };
    let post = find("api_post_event").expect("api_post_event");
    assert_eq!(post["clientIp"], "127.0.0.1");
    assert_eq!(post["uri"], "/v2/apps");
    assert_eq!(post["appDefinition"]["id"], "/ev");
    let running = events
        .iter()
        .find(|(k, b)| k == "status_update_event" && b["taskStatus"] == "TASK_RUNNING")
        .expect("TASK_RUNNING");
    assert_eq!(running.1["appId"], "/ev");
    assert!(running.1["ports"].is_array() && running.1["taskId"].is_string());
    assert!(find("deployment_success").unwrap()["id"].is_string());
    s.stop().await;
}

#[tokio::test]
async fn invalid_apps_get_marathon_errors() {
    let s = start(DevConfig::default()).await;
    let (status, body) = s
        .post(
            "/v2/apps",
            json!({"id": "/bad", "cmd": "x", "upgradeStrategy": {"minimumHealthCapacity": 1.5}}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        body,
        json!({"message": "Object is not valid",
               "details": [{"path": "/upgradeStrategy/minimumHealthCapacity", "errors": ["is greater than 1"]}]})
    );
    let (status, body) = s
        .post("/v2/apps", json!({"id": "/Bad_Id", "cmd": "x"}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["details"][0]["path"], "/id");
    let (status, body) = s.post("/v2/apps", json!({"id": "/nothing"})).await;
    assert_eq!(status, 422, "{body}");
    let resp = s
        .http
        .post(format!("{}/v2/apps", s.url))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Invalid JSON");
    let (status, body) = s.call(reqwest::Method::GET, "/v2/apps/missing", None).await;
    assert_eq!(
        (status, body),
        (404, json!({"message": "App '/missing' does not exist"}))
    );
    assert!(s.get("/v2/apps").await["apps"]
        .as_array()
        .unwrap()
        .is_empty());
    s.stop().await;
}

#[tokio::test]
async fn label_filter_and_embeds() {
    let s = start(DevConfig::default()).await;
    for (id, owner) in [("/l/a", "baton"), ("/l/b", "someone")] {
        let (status, _) = s
            .post(
                "/v2/apps",
                json!({"id": id, "cmd": "sleep 1000", "labels": {"baton.dev/owner": owner}}),
            )
            .await;
        assert_eq!(status, 201);
    }
    s.no_deployments().await;
    let list = s
        .get("/v2/apps?embed=apps.tasks&embed=apps.deployments&label=baton.dev%2Fowner%3D%3Dbaton")
        .await;
    let apps = list["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["id"], "/l/a");
    assert_eq!(apps[0]["tasks"].as_array().unwrap().len(), 1);
    assert_eq!(apps[0]["deployments"], json!([]));
    let plain = s.get("/v2/apps").await;
    assert!(plain["apps"][0].get("tasks").is_none());
    let group = s.get("/v2/groups").await;
    assert_eq!(group["id"], "/");
    assert_eq!(group["groups"][0]["id"], "/l");
    assert_eq!(group["groups"][0]["apps"].as_array().unwrap().len(), 2);
    assert!(group.get("enforceRole").is_none());
    s.stop().await;
}

#[tokio::test]
async fn state_dir_keeps_apps_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = DevConfig {
        state_dir: Some(dir.path().to_path_buf()),
        ..DevConfig::default()
    };
    let s = start(config.clone()).await;
    let (status, _) = s
        .post(
            "/v2/apps",
            json!({"id": "/keep", "cmd": "sleep 1000", "labels": {"x": "y"}}),
        )
        .await;
    assert_eq!(status, 201);
    s.no_deployments().await;
    let before = s.app("/keep").await;
    s.stop().await;

    let s = start(config).await;
    let after = s.app("/keep").await;
    assert_eq!(after["version"], before["version"]);
    assert_eq!(after["labels"], before["labels"]);
    assert_eq!(
        after["portDefinitions"], before["portDefinitions"],
        "service ports are kept"
    );
    eventually("the task is relaunched", || async {
        (s.app("/keep").await["tasksRunning"] == 1).then_some(())
    })
    .await;
    s.stop().await;
}

/// `baton dev-scheduler` as its own process, so that it can be killed with SIGKILL; killed
/// (and reaped) on drop.
struct Binary {
    child: std::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Binary {
    fn start(state_dir: &Path) -> Binary {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["dev-scheduler", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state_dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads on until the process is gone, so its logs never fill the pipe.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(url) = line.strip_prefix("dev scheduler listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx
            .recv_timeout(DEADLINE)
            .expect("the dev scheduler says where it listens");
        Binary {
            child,
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

impl Drop for Binary {
    /// SIGTERM (it stops its tasks), SIGKILL if it has not exited within a while.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let end = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < end && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILLs processes a failed test would leave behind.
struct Reaper(Vec<i32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Issue 12, item 10: a write the dev scheduler acknowledged survives `kill -9`, and a
/// restart on the same state dir ends the killed run's task processes (a child in a process
/// group of its own included) before it launches new ones.
///
/// A state of 2,000 apps makes writing it take a while, so a write made durable only after it
/// was answered is lost to a `kill -9` sent right after the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write_and_the_old_runs_processes_are_ended() {
    if !has_python3() && tool_missing("kill_9 test", "python3 (for setpgid) is not installed") {
        return;
    }
    let state = tempfile::tempdir().unwrap();
    let pids = tempfile::tempdir().unwrap();
    let d = pids.path().display();
    let s = Binary::start(state.path());
    // The task's shell, and a process in a group of its own (as baton-env's child is).
    let cmd = format!(
        "python3 -c 'import os, time; os.setpgid(0, 0); time.sleep(1000)' & echo $! > {d}/child; echo $$ > {d}/leader; wait"
    );
    let (status, body) = s
        .send(
            reqwest::Method::POST,
            "/v2/apps",
            json!({"id": "/keep", "cmd": cmd, "cpus": 0.01, "mem": 16}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut old = Vec::new();
    for name in ["leader", "child"] {
        let file = pids.path().join(name);
        let pid: i32 = eventually("the task wrote its pids", || async { read(&file) })
            .await
            .trim()
            .parse()
            .unwrap();
        old.push(pid);
    }
    let _reaper = Reaper(old.clone());
    let child = old[1];
    eventually("the child in a process group of its own", || async {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        let pgid = stat.rsplit_once(") ")?.1.split(' ').nth(2)?.to_string();
        (pgid == child.to_string()).then_some(())
    })
    .await;

    let filler: Vec<Value> = (0..2000)
        .map(|i| {
            json!({"id": format!("/fill/app{i}"), "cmd": "sleep 1", "instances": 0,
                   "env": {"PAD": "x".repeat(400)}})
        })
        .collect();
    let (status, body) = s
        .send(reqwest::Method::PUT, "/v2/apps", Value::Array(filler))
        .await;
    assert_eq!(status, 200, "{body}");
    let target = json!({"cmd": "sleep 1", "instances": 0, "env": {"V": "old"}});
    let (status, body) = s
        .send(reqwest::Method::PUT, "/v2/apps/target", target)
        .await;
    assert_eq!(status, 201, "{body}");
    // The creates' deployments end at once (no instances); until then the app is locked.
    eventually("no deployment left", || async {
        let (_, d) = s.get("/v2/deployments").await;
        (d == json!([])).then_some(())
    })
    .await;
    let (status, body) = s
        .send(
            reqwest::Method::PUT,
            "/v2/apps/target?partialUpdate=false",
            json!({"cmd": "sleep 1", "instances": 0, "env": {"V": "new"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut s = s;
    s.child.kill().unwrap(); // SIGKILL, right after the answer
    s.child.wait().unwrap();
    assert!(old.iter().all(|p| alive(*p)), "the tasks outlive a kill -9");

    let s = Binary::start(state.path());
    let (status, app) = s.get("/v2/apps/target").await;
    assert_eq!(status, 200, "the acknowledged create is kept: {app}");
    assert_eq!(
        app["app"]["env"]["V"], "new",
        "the acknowledged update is kept"
    );
    let (_, fill) = s.get("/v2/apps/fill/app1999").await;
    assert_eq!(fill["app"]["env"]["PAD"].as_str().map(str::len), Some(400));
    // The API answers only once the previous run's processes are gone.
    for pid in &old {
        assert!(
            !alive(*pid),
            "process {pid} of the killed run is still running"
        );
    }
    // /keep runs again, as a new task with new processes.
    let leader = pids.path().join("leader");
    let new_leader: i32 = eventually("the task is relaunched", || async {
        let pid: i32 = read(&leader)?.trim().parse().ok()?;
        (pid != old[0]).then_some(pid)
    })
    .await;
    assert!(alive(new_leader));
    // A graceful stop ends the new run's tasks and leaves no record behind.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut s = s;
    let end = tokio::time::Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "the dev scheduler did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(!alive(new_leader));
    let records: Vec<_> = std::fs::read_dir(state.path().join("tasks"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(records.is_empty(), "{records:?}");
}

#[tokio::test]
async fn shutdown_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let s = start(DevConfig::default()).await;
    // One task ignores SIGTERM (SIGKILL after the grace period), both leave a child behind.
    for (id, trap) in [("/polite", ""), ("/stubborn", "trap '' TERM; ")] {
        let name = id.trim_start_matches('/');
        let cmd = format!(
            "{trap}sleep 1000 & echo $! > {d}/{name}.child; echo $$ > {d}/{name}.leader; wait"
        );
        let (status, _) = s
            .post(
                "/v2/apps",
                json!({"id": id, "cmd": cmd, "taskKillGracePeriodSeconds": 1}),
            )
            .await;
        assert_eq!(status, 201);
    }
    let mut pids = Vec::new();
    for name in ["polite", "stubborn"] {
        for kind in ["child", "leader"] {
            let file = dir.path().join(format!("{name}.{kind}"));
            let pid: i32 = eventually("the task wrote its pids", || async { read(&file) })
                .await
                .trim()
                .parse()
                .unwrap();
            assert!(alive(pid));
            pids.push(pid);
        }
    }
    s.stop().await;
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived the shutdown");
    }
}

#[tokio::test]
async fn kill_task_and_relaunch() {
    let s = start(DevConfig::default()).await;
    let (status, _) = s
        .post(
            "/v2/apps",
            json!({"id": "/k", "cmd": "sleep 1000", "instances": 2}),
        )
        .await;
    assert_eq!(status, 201);
    s.no_deployments().await;
    let tasks = s.get("/v2/apps/k/tasks").await["tasks"].clone();
    let victim = tasks[0]["id"].as_str().unwrap().to_string();
    let (status, body) = s.delete(&format!("/v2/apps/k/tasks/{victim}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["task"]["id"], victim.as_str());
    eventually("a replacement task", || async {
        let tasks = s.get("/v2/apps/k/tasks").await["tasks"].clone();
        let ids: BTreeSet<String> = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "TASK_RUNNING")
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect();
        (ids.len() == 2 && !ids.contains(&victim)).then_some(())
    })
    .await;
    let (status, d) = s.delete("/v2/apps/k/tasks?scale=true").await;
    assert_eq!(status, 200);
    assert!(d["deploymentId"].is_string());
    s.no_deployments().await;
    assert_eq!(s.app("/k").await["instances"], 0);
    s.stop().await;
}

#[tokio::test]
async fn docker_app_without_engine_fails_with_a_clear_message() {
    let engine = std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if engine {
        // With an engine the task would pull an image: not something a unit-level test may do.
        std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("skipped docker_app_without_engine_fails_with_a_clear_message: a Docker engine is reachable\n")).ok();
        return;
    }
    let s = start(DevConfig::default()).await;
    let (status, body) = s
        .post(
            "/v2/apps",
            json!({"id": "/dock", "container": {"type": "DOCKER", "docker": {"image": "nginx:1.25"}},
                   "networks": [{"mode": "container/bridge"}]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["container"]["portMappings"][0]["servicePort"]
            .as_u64()
            .map(|p| p >= 10000),
        Some(true)
    );
    let failure = eventually("the docker task failed", || async {
        s.app("/dock").await.get("lastTaskFailure").cloned()
    })
    .await;
    assert_eq!(failure["state"], "TASK_FAILED");
    let message = failure["message"].as_str().unwrap();
    assert!(
        message.contains("Docker engine is not reachable"),
        "{message}"
    );
    assert_eq!(
        s.get("/v2/deployments").await.as_array().unwrap().len(),
        1,
        "the deployment stays"
    );
    s.stop().await;
}

/// The independent PyPI client `marathon` (0.13.0) against the dev scheduler.
#[tokio::test]
async fn python_marathon_client_works() {
    const TEST: &str = "python_marathon_client_works";
    if !has_python3() && tool_missing(TEST, "python3 is not installed") {
        return;
    }
    // scripts/install-deps.sh installs the client into its own virtualenv (Debian's system
    // Python refuses pip installs); any other interpreter holding it works too.
    let venv = repo_root().join("target/test-python/bin/python3");
    let python = std::env::var_os("BATON_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            if venv.exists() {
                venv
            } else {
                "python3".into()
            }
        });
    let probe = tokio::process::Command::new(&python)
        .args([
            "-c",
            "import marathon; from importlib.metadata import version; print(version(\"marathon\"))",
        ])
        .output()
        .await
        .unwrap();
    let version = String::from_utf8_lossy(&probe.stdout).trim().to_string();
    if (!probe.status.success() || version != "0.13.0")
        && tool_missing(
            TEST,
            "the python package `marathon` 0.13.0 is missing (scripts/install-deps.sh)",
        )
    {
        return;
    }
    let s = start(DevConfig::default()).await;
    let script = repo_root().join("tests/python/marathon_client_test.py");
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new(&python)
            .arg(&script)
            .arg(&s.url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the python client test finished in time")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client test failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("ALL OK"), "{stdout}");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Conformance with Marathon's own examples (../shared/marathon)

/// Property names documented in a RAML types file: of one type (`Some(name)`) or of all types.
fn raml_properties(text: &str, type_name: Option<&str>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_type = type_name.is_none();
    let mut props: Option<usize> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(name) = type_name {
            if indent == 2 {
                in_type = trimmed == format!("{name}:");
                props = None;
                continue;
            }
        }
        if !in_type {
            continue;
        }
        if let Some(p) = props {
            if indent <= p {
                props = None;
            } else if indent == p + 2 {
                let key: String = trimmed
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let rest = &trimmed[key.len()..];
                if !key.is_empty() && (rest.starts_with(':') || rest.starts_with("?:")) {
                    out.insert(key);
                }
                continue;
            } else {
                continue;
            }
        }
        if trimmed == "properties:" {
            props = Some(indent);
        }
    }
    out
}

/// What Marathon documents: the app's properties (`App` in app.raml, plus the status fields of
/// an app answer) and every property of every type (for the other objects).
struct Documented {
    app: BTreeSet<String>,
    any: BTreeSet<String>,
}

impl Documented {
    fn load(marathon: &Path) -> Documented {
        let types = marathon.join("raml/v2/types");
        let app_raml = std::fs::read_to_string(types.join("app.raml")).unwrap();
        let mut app = raml_properties(&app_raml, Some("App"));
        assert!(
            app.contains("portDefinitions") && app.contains("upgradeStrategy"),
            "app.raml parsed: {app:?}"
        );
        // AppInfo (the answer's status part), from apps.raml's embed parameters.
        for k in [
            "tasks",
            "tasksStaged",
            "tasksRunning",
            "tasksHealthy",
            "tasksUnhealthy",
            "deployments",
            "lastTaskFailure",
            "readinessCheckResults",
            "taskStats",
        ] {
            app.insert(k.to_string());
        }
        let mut any = BTreeSet::new();
        for entry in std::fs::read_dir(&types).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            any.extend(raml_properties(&text, None));
        }
        Documented { app, any }
    }
}

/// App fields Marathon always serves; other fields of an example app are optional.
const APP_ALWAYS: &[&str] = &[
    "id",
    "instances",
    "cpus",
    "mem",
    "disk",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "upgradeStrategy",
    "requirePorts",
    "version",
    "versionInfo",
];

/// Keys of Marathon's examples we do not emit, and why.
fn legacy_or_absent(key: &str) -> bool {
    matches!(
        key,
        // Fault-domain fields: only when the agent has a fault domain.
        "region" | "zone"
        // Offer statistics: there are no offers on a local agent.
        | "lastUnusedOfferAt" | "lastUsedOfferAt"
    )
}

/// Free-form maps: their keys are data, not shape.
const FREE_FORM: &[&str] = &["labels", "env", "secrets"];

/// Compare key sets recursively: every key we emit is in Marathon's example or documented in its
/// RAML; every key of the example is in ours, unless optional (app fields) or [`legacy_or_absent`].
fn compare_shape(
    doc: &Documented,
    ours: &Value,
    theirs: &Value,
    path: &str,
    problems: &mut Vec<String>,
) {
    match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) => {
            let is_app = path == "/app" || path.ends_with("/app") || path.ends_with("apps/*");
            for k in o.keys() {
                let documented = if is_app {
                    doc.app.contains(k)
                } else {
                    doc.any.contains(k)
                };
                if !t.contains_key(k) && !documented {
                    problems.push(format!(
                        "{path}: we emit `{k}`, which Marathon neither shows nor documents"
                    ));
                }
            }
            for (k, tv) in t {
                match o.get(k) {
                    Some(_) if FREE_FORM.contains(&k.as_str()) => {}
                    Some(ov) => compare_shape(doc, ov, tv, &format!("{path}/{k}"), problems),
                    None if is_app && !APP_ALWAYS.contains(&k.as_str()) => {}
                    // Marathon leaves out empty label/env maps in places (omitEmpty).
                    None if FREE_FORM.contains(&k.as_str()) => {}
                    None if legacy_or_absent(k) => {}
                    None => {
                        problems.push(format!("{path}: Marathon's example has `{k}`, we do not"))
                    }
                }
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            if let (Some(of), Some(tf)) = (o.first(), t.first()) {
                compare_shape(doc, of, tf, &format!("{path}/*"), problems);
            }
        }
        _ => {}
    }
}

fn example(dir: &Path, name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

#[tokio::test]
async fn shared_examples_are_accepted_and_answers_have_marathons_shapes() {
    let Some(marathon) =
        shared_marathon("shared_examples_are_accepted_and_answers_have_marathons_shapes")
    else {
        return;
    };
    let s = start(DevConfig::default()).await;

    // Every example app (and every app of the group examples) is accepted.
    let mut ids = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(marathon.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let mut apps = Vec::new();
        collect_apps(&doc, "", &mut apps);
        assert!(!apps.is_empty(), "{} holds no app", file.display());
        for mut app in apps {
            // Examples may share ids (sleep apps); give each its own.
            let id = format!(
                "/examples/{}{}",
                file.file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .to_lowercase()
                    .replace(['_', '.'], "-"),
                app["id"].as_str().unwrap_or("/x")
            );
            app["id"] = json!(id);
            // Instances 0: accepted and stored, nothing launched (Docker images, DC/OS volumes).
            app["instances"] = json!(0);
            app.as_object_mut().unwrap().remove("dependencies");
            let (status, body) = s
                .put(&format!("/v2/apps{id}?partialUpdate=false&force=true"), app)
                .await;
            assert!(
                (200..300).contains(&status),
                "{} ({id}) refused: {status} {body}",
                file.display()
            );
            ids.push(id);
        }
    }
    s.no_deployments().await;

    // Now one running app, for tasks and the queue.
    let (status, created) = s
        .post(
            "/v2/apps",
            json!({"id": "/shape", "cmd": "sleep 1000", "instances": 1}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = s
        .post(
            "/v2/apps",
            json!({"id": "/queued", "cmd": "exit 1", "instances": 1}),
        )
        .await;
    assert_eq!(status, 201);
    eventually("the queued app failed once", || async {
        s.app("/queued").await.get("lastTaskFailure").map(|_| ())
    })
    .await;
    let doc = Documented::load(&marathon);
    let mut problems = Vec::new();
    let api = marathon.join("api-examples");
    let mut app_list = s.get("/v2/apps?embed=apps.deployments").await;
    // Compare the plain app (the example shows one without tasks).
    app_list["apps"] = json!([s.get("/v2/apps").await["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "/shape")
        .unwrap()]);
    compare_shape(
        &doc,
        &app_list,
        &example(&api, "app_list.json"),
        "",
        &mut problems,
    );
    compare_shape(
        &doc,
        &created,
        &example(&api, "app.json"),
        "/app",
        &mut problems,
    );
    compare_shape(
        &doc,
        &s.get("/v2/apps/shape/tasks").await,
        &example(&api, "app_tasks.json"),
        "",
        &mut problems,
    );
    compare_shape(
        &doc,
        &s.get("/v2/tasks").await,
        &example(&api, "tasks.json"),
        "",
        &mut problems,
    );
    let queue = s.get("/v2/queue?embed=lastUnusedOffers").await;
    compare_shape(
        &doc,
        &queue,
        &example(&api, "queue.json"),
        "",
        &mut problems,
    );
    compare_shape(
        &doc,
        &s.get("/v2/info").await,
        &example(&api, "info.json"),
        "",
        &mut problems,
    );
    let group = s.get("/v2/groups").await;
    compare_shape(
        &doc,
        &group,
        &example(&api, "group.json"),
        "",
        &mut problems,
    );
    let deployments = s.get("/v2/deployments").await;
    assert!(
        !deployments.as_array().unwrap().is_empty(),
        "/queued keeps its deployment"
    );
    compare_shape(
        &doc,
        &deployments,
        &example(&api, "deployments.json"),
        "",
        &mut problems,
    );
    let (_, result) = s
        .put("/v2/apps/shape?force=true", json!({"instances": 2}))
        .await;
    compare_shape(
        &doc,
        &result,
        &example(&api, "deployments_result.json"),
        "",
        &mut problems,
    );
    assert!(
        problems.is_empty(),
        "shape differences:\n{}",
        problems.join("\n")
    );

    // Events: `event: <type>` and `data: <json>` with eventType and timestamp, as in events.txt.
    let transcript = std::fs::read_to_string(api.join("events.txt")).unwrap();
    let theirs: Vec<&str> = transcript
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert!(theirs.contains(&"status_update_event"));
    let resp = s
        .http
        .get(format!("{}/v2/events", s.url))
        .header("Accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let scaler = async {
        let (status, _) = s
            .put("/v2/apps/shape?force=true", json!({"instances": 1}))
            .await;
        assert_eq!(status, 200);
    };
    let reader = read_events(resp, |evs| {
        evs.iter().any(|(k, _)| k == "status_update_event")
    });
    let ((), events) = tokio::join!(scaler, reader);
    let ours = &events
        .iter()
        .find(|(k, _)| k == "status_update_event")
        .unwrap()
        .1;
    let their_line = transcript
        .lines()
        .skip_while(|l| *l != "event: status_update_event")
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let mut their_event: Value = serde_json::from_str(their_line).unwrap();
    their_event.as_object_mut().unwrap().remove("message");
    let mut ours = ours.clone();
    ours.as_object_mut().unwrap().remove("message");
    let mut problems = Vec::new();
    compare_shape(&doc, &ours, &their_event, "", &mut problems);
    assert!(
        problems.is_empty(),
        "event shape differences:\n{}",
        problems.join("\n")
    );

    for id in ids {
        let (status, _) = s.delete(&format!("/v2/apps{id}")).await;
        assert_eq!(status, 200);
    }
    s.stop().await;
}

/// Apps of an example file: an app, a list of apps, or a group (recursively), ids made absolute.
fn collect_apps(doc: &Value, parent: &str, out: &mut Vec<Value>) {
    match doc {
        Value::Array(list) => list.iter().for_each(|d| collect_apps(d, parent, out)),
        Value::Object(o) if o.contains_key("apps") || o.contains_key("groups") => {
            let gid = o.get("id").and_then(Value::as_str).unwrap_or("");
            let gid = absolute(parent, gid);
            for key in ["apps", "groups"] {
                if let Some(items) = o.get(key) {
                    collect_apps(items, &gid, out);
                }
            }
        }
        Value::Object(_) => {
            let mut app = doc.clone();
            let id = app.get("id").and_then(Value::as_str).unwrap_or("app");
            app["id"] = json!(absolute(parent, id));
            out.push(app);
        }
        _ => {}
    }
}

fn absolute(parent: &str, id: &str) -> String {
    if id.starts_with('/') {
        id.trim_end_matches('/').to_string()
    } else {
        format!("{}/{}", parent.trim_end_matches('/'), id)
    }
}

/// An open `/v2/events` stream, read event by event.
struct EventFeed {
    stream:
        std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<axum::body::Bytes>> + Send>>,
    buf: String,
}

impl EventFeed {
    async fn open(s: &Server) -> EventFeed {
        let resp = s
            .http
            .get(format!("{}/v2/events", s.url))
            .header("Accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        EventFeed {
            stream: Box::pin(resp.bytes_stream()),
            buf: String::new(),
        }
    }

    /// The next event of kind `kind` whose body satisfies `pred` (others are skipped).
    async fn next(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let end = tokio::time::Instant::now() + DEADLINE;
        loop {
            while let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                let k = block.lines().find_map(|l| l.strip_prefix("event: "));
                let d = block.lines().find_map(|l| l.strip_prefix("data: "));
                if let (Some(k), Some(d)) = (k, d) {
                    let body: Value = serde_json::from_str(d).unwrap();
                    if k == kind && pred(&body) {
                        return body;
                    }
                }
            }
            let chunk = tokio::time::timeout_at(end, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} in time"))
                .expect("stream open")
                .unwrap();
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// COMMAND health checks run in the task's environment and gate the deployment; their
/// transitions are `health_status_changed_event`s; a forced change supersedes the running
/// deployment, which ends with `deployment_failed`, as in Marathon.
#[tokio::test]
async fn command_health_checks_and_deployment_events() {
    let s = start(DevConfig::default()).await;
    let mut events = EventFeed::open(&s).await;
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("healthy");
    let app = |cmd: &str| {
        json!({
            "id": "/hc", "cmd": cmd, "cpus": 0.01, "mem": 8,
            "healthChecks": [{
                "protocol": "COMMAND",
                "command": {"value": format!("test -f {} && test -n \"$MESOS_TASK_ID\"", flag.display())},
                "gracePeriodSeconds": 0, "intervalSeconds": 1, "timeoutSeconds": 5, "delaySeconds": 0,
                "maxConsecutiveFailures": 0
            }]
        })
    };
    let (status, first) = s.post("/v2/apps", app("exec sleep 1000")).await;
    assert_eq!(status, 201, "{first}");
    let first_deployment = first["deployments"][0]["id"].as_str().unwrap().to_string();
    let down = events
        .next("health_status_changed_event", |b| b["appId"] == "/hc")
        .await;
    assert_eq!(down["alive"], false, "{down}");
    assert_eq!(
        s.get("/v2/deployments").await.as_array().unwrap().len(),
        1,
        "an unhealthy task holds the deployment"
    );

    // Not forced: refused while the deployment runs. Forced: the old deployment fails.
    let (status, _) = s.put("/v2/apps/hc", app("exec sleep 1001")).await;
    assert_eq!(status, 409);
    let (status, second) = s
        .put("/v2/apps/hc?force=true", app("exec sleep 1001"))
        .await;
    assert_eq!(status, 200, "{second}");
    let failed = events
        .next("deployment_failed", |b| {
            b["id"] == first_deployment.as_str()
        })
        .await;
    assert_eq!(failed["id"], first_deployment.as_str());

    // The check passes: the task turns healthy and the new deployment succeeds.
    std::fs::write(&flag, "").unwrap();
    let up = events
        .next("health_status_changed_event", |b| {
            b["appId"] == "/hc" && b["alive"] == true
        })
        .await;
    assert!(up["taskId"].is_string(), "{up}");
    let done = events
        .next("deployment_success", |b| b["id"] == second["deploymentId"])
        .await;
    assert!(done["id"].is_string());
    let hc = s.get("/v2/apps/hc").await;
    assert_eq!(hc["app"]["tasksHealthy"], 1, "{hc}");
    assert_eq!(hc["app"]["cmd"], "exec sleep 1001", "{hc}");
    s.stop().await;
}

/// SIGKILLs a process on drop, so that a failing test leaves nothing running.
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The next stderr line of `baton` that contains `needle`, within [`DEADLINE`].
fn line_with(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?} from baton: {e}"),
        }
    }
}

/// A second SIGINT does not wait for the graceful stop (here for a task that ignores SIGTERM
/// and has a 600 s grace period): `baton dev-scheduler` kills every task session through the
/// handle it gave the scheduler, and exits with 130 at once, leaving no task process behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_dev_scheduler_killed_by_a_second_sigint_leaves_no_task_process() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    use std::io::BufRead;

    let dir = tempfile::tempdir().unwrap();
    let mut baton = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["dev-scheduler", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .env("BATON_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let baton_pid = i32::try_from(baton.id()).unwrap();
    let _baton_guard = KillOnDrop(baton_pid);
    let (tx, lines) = std::sync::mpsc::channel();
    let stderr = baton.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let listening = line_with(&lines, "dev scheduler listening on ");
    let url = listening
        .rsplit_once(' ')
        .map(|(_, url)| url.to_string())
        .unwrap();

    let pid_file = dir.path().join("task.pid");
    let app = json!({
        "id": "/stubborn",
        "cmd": format!("trap '' TERM; echo $$ > {}; exec sleep 1000", pid_file.display()),
        "cpus": 0.01,
        "mem": 16,
        "instances": 1,
        "taskKillGracePeriodSeconds": 600,
    });
    let resp = reqwest::Client::new()
        .post(format!("{url}/v2/apps"))
        .json(&app)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let task_pid = eventually("the task to start", || async {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|pid| alive(*pid))
    })
    .await;
    let _task_guard = KillOnDrop(task_pid);

    // The first signal starts the graceful stop, which would wait out the grace period.
    kill(Pid::from_raw(baton_pid), Signal::SIGINT).unwrap();
    line_with(&lines, "shutting down (signal again to exit at once)");
    assert!(alive(task_pid), "the task ignores SIGTERM");

    // Again until it exits, as a user would press Ctrl-C: a signal that arrives while the
    // handler re-arms after the first one can be missed (a new `ctrl_c()` each round).
    let end = std::time::Instant::now() + DEADLINE;
    let mut next_signal = std::time::Instant::now();
    let status = loop {
        if let Some(status) = baton.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < end,
            "baton did not exit after a second SIGINT"
        );
        if std::time::Instant::now() >= next_signal {
            kill(Pid::from_raw(baton_pid), Signal::SIGINT).unwrap();
            next_signal += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
    eventually("the task to be gone", || async {
        (!alive(task_pid)).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Issue 16: what real Marathon clients call (shpkpr, marathon-deploy)

/// The ids of an app's tasks.
async fn task_ids(s: &Server, app: &str) -> BTreeSet<String> {
    s.get(&format!("/v2/apps{app}/tasks")).await["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

/// `PUT /v2/apps/` and `GET /v2/apps/` (shpkpr's multi-app deploy; 404 before), and the other
/// collections with a trailing slash, as Marathon (JAX-RS) takes them.
#[tokio::test]
async fn collections_answer_with_a_trailing_slash() {
    let s = start(DevConfig::default()).await;
    let apps = json!([
        {"id": "/slash/a", "cmd": "sleep 600", "cpus": 0.01, "mem": 8},
        {"id": "/slash/b", "cmd": "sleep 600", "cpus": 0.01, "mem": 8}
    ]);
    let (status, body) = s.put("/v2/apps/", apps).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["deploymentId"].is_string(), "{body}");
    assert!(body["version"].is_string(), "{body}");
    let listed: BTreeSet<String> = s.get("/v2/apps/").await["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        listed,
        BTreeSet::from(["/slash/a".to_string(), "/slash/b".to_string()])
    );
    assert!(s.get("/v2/deployments/").await.is_array());
    assert!(s.get("/v2/tasks/").await["tasks"].is_array());
    assert!(s.get("/v2/queue/").await["queue"].is_array());
    assert_eq!(s.get("/v2/groups/").await["id"], "/");
    s.no_deployments().await;
    s.stop().await;
}

/// `/ping` as Marathon's `SystemResource.ping` answers it: `"pong"` as JSON to a client that
/// asks for JSON (the PyPI `marathon` client, so marathon-deploy), `pong` as text otherwise.
#[tokio::test]
async fn ping_answers_as_marathon_does() {
    let s = start(DevConfig::default()).await;
    for (accept, body, media_type) in [
        (Some("application/json"), "\"pong\"", "application/json"),
        (Some("*/*"), "pong", "text/plain"),
        (None, "pong", "text/plain"),
    ] {
        let mut req = s.http.get(format!("{}/ping", s.url));
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "{accept:?}");
        let ct = resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(ct.starts_with(media_type), "{accept:?}: {ct}");
        assert_eq!(resp.text().await.unwrap(), body, "{accept:?}");
    }
    let resp = s
        .http
        .get(format!("{}/ping", s.url))
        .header(reqwest::header::ACCEPT, "image/png")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "nothing acceptable: no content");
    s.stop().await;
}

/// `POST /v2/apps/{id}/restart` (marathon-deploy's `--restart`; 405 before): a new deployment
/// that replaces every task with the same definition, answered `{deploymentId, version}` with
/// the deployment's id in `Marathon-Deployment-Id`; an app a deployment locks is refused
/// without `force` (Marathon's default) and restarted with it; an unknown app is 404.
#[tokio::test]
async fn restart_replaces_every_task_and_honours_force() {
    let s = start(DevConfig::default()).await;
    let (status, body) = s
        .post(
            "/v2/apps",
            json!({"id": "/restart/me", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 2}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    s.no_deployments().await;
    let old = eventually("two running tasks", || async {
        let ids = task_ids(&s, "/restart/me").await;
        (ids.len() == 2).then_some(ids)
    })
    .await;
    let before = s.app("/restart/me").await;

    let resp = s
        .http
        .post(format!("{}/v2/apps/restart/me/restart", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header = resp.headers()["Marathon-Deployment-Id"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["deploymentId"], header.as_str(), "{body}");
    let version = body["version"].as_str().unwrap().to_string();
    assert_ne!(version, before["version"].as_str().unwrap());
    let new = eventually("two new tasks and no deployment", || async {
        let ids = task_ids(&s, "/restart/me").await;
        let idle = s
            .get("/v2/deployments")
            .await
            .as_array()
            .unwrap()
            .is_empty();
        (idle && ids.len() == 2 && ids.is_disjoint(&old)).then_some(ids)
    })
    .await;
    assert_eq!(new.len(), 2);
    let after = s.app("/restart/me").await;
    assert_eq!(after["cmd"], before["cmd"], "the definition is unchanged");
    assert_eq!(after["version"], version.as_str());
    assert_eq!(
        after["versionInfo"]["lastConfigChangeAt"],
        version.as_str(),
        "a restart is a config change"
    );
    let versions = s.get("/v2/apps/restart/me/versions").await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);

    let (status, body) = s.post("/v2/apps", stuck_app("/restart/stuck")).await;
    assert_eq!(status, 201, "{body}");
    let locked_by = eventually("the stuck app's deployment", || async {
        let d = s.get("/v2/deployments").await;
        d[0]["id"].as_str().map(str::to_string)
    })
    .await;
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/v2/apps/restart/stuck/restart",
            None,
        )
        .await;
    assert_eq!(status, 409, "force=false by default: {body}");
    assert_eq!(body["deployments"][0]["id"], locked_by.as_str());
    let (status, body) = s
        .call(
            reqwest::Method::POST,
            "/v2/apps/restart/stuck/restart?force=true",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["deploymentId"], locked_by.as_str());
    let (status, _) = s
        .call(reqwest::Method::POST, "/v2/apps/restart/none/restart", None)
        .await;
    assert_eq!(status, 404);
    let (status, _) = s
        .call(reqwest::Method::POST, "/v2/apps/restart/me", None)
        .await;
    assert_eq!(status, 405, "only restart takes a POST");
    let (status, _) = s.delete("/v2/apps/restart/stuck").await;
    assert_eq!(status, 200);
    s.stop().await;
}

/// A client's virtualenv under `target/` (scripts/install-deps.sh), or `None` (skipped with a
/// printed reason; CI installs it) when it is absent.
fn client_venv(test: &str, dir: &str, bin: &str) -> Option<PathBuf> {
    let path = repo_root().join("target").join(dir).join("bin").join(bin);
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is missing (scripts/install-deps.sh installs it)",
        path.display()
    );
    tool_missing(test, &why);
    None
}

async fn run_client(cmd: &mut tokio::process::Command) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.kill_on_drop(true).output())
        .await
        .expect("the client finished in time")
        .unwrap();
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The PyPI client shpkpr (4.1.2) deploys two apps at once: `PUT /v2/apps/` with both, then
/// `GET /v2/deployments` until the deployment is gone.
#[tokio::test]
async fn shpkpr_deploys_several_apps_at_once() {
    const TEST: &str = "shpkpr_deploys_several_apps_at_once";
    let Some(shpkpr) = client_venv(TEST, "shpkpr", "shpkpr") else {
        return;
    };
    let s = start(DevConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["one", "two"] {
        std::fs::write(
            dir.path().join(format!("{name}.json")),
            format!(
                r#"{{"id": "/shpkpr/{name}", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 1,
                    "labels": {{"via": "{{{{ LABEL }}}}"}}}}"#
            ),
        )
        .unwrap();
    }
    let (ok, out) = run_client(
        tokio::process::Command::new(&shpkpr)
            .args(["apps", "deploy", "--marathon-url", &s.url])
            .args(["--template-dir", dir.path().to_str().unwrap()])
            .args(["-t", "one.json", "-t", "two.json", "--timeout", "240"])
            .env("SHPKPR_LABEL", "shpkpr"),
    )
    .await;
    assert!(ok, "shpkpr failed\n{out}");
    let mut versions = BTreeSet::new();
    for name in ["one", "two"] {
        let app = s.app(&format!("/shpkpr/{name}")).await;
        assert_eq!(app["labels"]["via"], "shpkpr", "{app}");
        assert_eq!(app["tasksRunning"], 1, "{app}");
        versions.insert(app["version"].as_str().unwrap().to_string());
    }
    assert_eq!(
        versions.len(),
        1,
        "one write of both apps (one PUT /v2/apps/)"
    );
    s.stop().await;
}

/// The PyPI client marathon-deploy (3.0.2): it pings first and gives up unless the answer is
/// Marathon's `"pong"`, then `--restart` posts `/v2/apps/{id}/restart?force=True` and watches
/// `/v2/deployments` until the restart is done.
#[tokio::test]
async fn marathon_deploy_restarts_an_app() {
    const TEST: &str = "marathon_deploy_restarts_an_app";
    let Some(tool) = client_venv(TEST, "marathon-deploy", "marathon-deploy") else {
        return;
    };
    let s = start(DevConfig::default()).await;
    let (status, body) = s
        .post(
            "/v2/apps",
            json!({"id": "/md/web", "cmd": "sleep 600", "cpus": 0.01, "mem": 8, "instances": 2}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    s.no_deployments().await;
    let old = eventually("two running tasks", || async {
        let ids = task_ids(&s, "/md/web").await;
        (ids.len() == 2).then_some(ids)
    })
    .await;
    let (ok, out) = run_client(
        tokio::process::Command::new(&tool)
            .args(["-m", &s.url, "--appid", "/md/web", "--restart"])
            .stdin(std::process::Stdio::null()),
    )
    .await;
    assert!(ok, "marathon-deploy failed\n{out}");
    assert!(
        out.contains("\"pong\""),
        "it printed the ping answer\n{out}"
    );
    assert!(out.contains("complete"), "{out}");
    let new = eventually("two new tasks", || async {
        let ids = task_ids(&s, "/md/web").await;
        (ids.len() == 2 && ids.is_disjoint(&old)).then_some(ids)
    })
    .await;
    assert_eq!(new.len(), 2);
    s.stop().await;
}
