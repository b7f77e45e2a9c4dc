//! The answers Marathon clients index without checking: an in-process server, real requests.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::{run, DevConfig};

/// Generous: the machine may be loaded.
const DEADLINE: Duration = Duration::from_secs(60);

struct Server {
    url: String,
    http: reqwest::Client,
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), crate::DevError>>,
}

impl Server {
    async fn start() -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let stop = CancellationToken::new();
        let handle = tokio::spawn(run(listener, DevConfig::default(), stop.clone()));
        Server {
            url,
            http: reqwest::Client::new(),
            stop,
            handle,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON answer"))
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self
            .send(self.http.get(format!("{}{path}", self.url)))
            .await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.handle)
            .await
            .expect("run returns after shutdown")
            .expect("join")
            .expect("run");
    }
}

/// An app created without labels is shown with `"labels": {}` everywhere Marathon shows an app,
/// as Marathon does: marathon-lb reads `app['labels']` of every app in the listing and, on a
/// `KeyError`, configures no app at all. Also the other fields marathon-lb reads without a
/// default (`id`, `instances`, `tasks` and the task's `id`, `host`, `ports`, `state`).
#[tokio::test]
async fn apps_without_labels_are_shown_with_empty_labels() {
    let s = Server::start().await;
    let (status, created) = s
        .send(
            s.http
                .post(format!("{}/v2/apps", s.url))
                .json(&json!({"id": "/plain", "cmd": "sleep 1000", "cpus": 0.01, "mem": 16})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["labels"], json!({}), "the create answer: {created}");

    // The listing marathon-lb reads, once the task runs.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let app = loop {
        let list = s.get("/v2/apps?embed=apps.tasks").await;
        let app = list["apps"][0].clone();
        if app["tasks"][0]["state"] == "TASK_RUNNING" {
            break app;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no running task: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(app["labels"], json!({}), "GET /v2/apps: {app}");
    assert_eq!(app["id"], "/plain");
    assert_eq!(app["instances"], 1);
    assert_eq!(app["networks"], json!([{"mode": "host"}]));
    assert_eq!(
        app["portDefinitions"][0]["port"].as_u64().map(|p| p > 0),
        Some(true),
        "{app}"
    );
    let task = &app["tasks"][0];
    assert!(
        task["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("plain.")),
        "{task}"
    );
    assert_eq!(task["host"], "127.0.0.1");
    assert_eq!(task["ports"].as_array().map(Vec::len), Some(1), "{task}");

    let one = s.get("/v2/apps/plain").await;
    assert_eq!(one["app"]["labels"], json!({}), "GET /v2/apps/plain: {one}");
    let version = one["app"]["version"].as_str().expect("version").to_string();
    let old = s.get(&format!("/v2/apps/plain/versions/{version}")).await;
    assert_eq!(old["labels"], json!({}), "the version: {old}");
    let root = s.get("/v2/groups").await;
    assert_eq!(
        root["apps"][0]["labels"],
        json!({}),
        "GET /v2/groups: {root}"
    );

    // A full replace without labels drops them to `{}`, and a labelled app keeps its own.
    let (status, body) = s
        .send(
            s.http
                .put(format!("{}/v2/apps/tagged?partialUpdate=false", s.url))
                .json(&json!({"id": "/tagged", "cmd": "sleep 1000", "instances": 0, "labels": {"team": "a"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        s.get("/v2/apps/tagged").await["app"]["labels"],
        json!({"team": "a"})
    );
    let (status, body) = s
        .send(
            s.http
                .put(format!("{}/v2/apps/tagged?partialUpdate=false", s.url))
                .json(&json!({"cmd": "sleep 1000", "instances": 0})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.get("/v2/apps/tagged").await["app"]["labels"], json!({}));
    s.stop().await;
}

/// No labels and `{}` are one configuration: filling in `{}` must not make an app stored before
/// look changed (its tasks would be restarted by the next scale).
#[test]
fn empty_labels_are_no_configuration_change() {
    let bare = json!({"id": "/a", "cmd": "x", "instances": 1});
    let empty = json!({"id": "/a", "cmd": "x", "instances": 2, "labels": {}});
    assert_eq!(
        crate::store::config_of(&bare),
        crate::store::config_of(&empty)
    );
    let labelled = json!({"id": "/a", "cmd": "x", "labels": {"k": "v"}});
    assert_ne!(
        crate::store::config_of(&bare),
        crate::store::config_of(&labelled)
    );
}
