//! An HTTP proxy in front of a scheduler that can be frozen, as `kill -STOP` freezes a
//! scheduler: a frozen proxy accepts connections and never answers, and every event stream it
//! carries stalls (open, silent). Thawed, held requests and streams carry on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::watch;

/// The proxy; stops serving when dropped.
pub struct FreezableProxy {
    /// `http://127.0.0.1:<port>`: give this to Baton as the scheduler.
    pub url: String,
    frozen: Arc<watch::Sender<bool>>,
    /// Freeze right after the next write has been answered.
    after_write: Arc<AtomicBool>,
    /// Writes (`PUT`, `POST`, `DELETE`) forwarded so far: what this proxy's client wrote.
    writes: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<Write>>>,
    task: tokio::task::JoinHandle<()>,
}

/// One write forwarded (`PUT`, `POST`, `DELETE`), as the proxy received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub method: String,
    /// Without the query.
    pub path: String,
    /// Each app definition in the body (one object, or an array of them): its `id` and its
    /// `baton.dev/commit` label, when it has them.
    pub apps: Vec<(Option<String>, Option<String>)>,
}

impl Write {
    fn of(method: &Method, uri: &Uri, body: &[u8]) -> Write {
        let one = |v: &serde_json::Value| {
            let s = |x: &serde_json::Value| x.as_str().map(str::to_string);
            (s(&v["id"]), s(&v["labels"]["baton.dev/commit"]))
        };
        let apps = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Array(a)) => a.iter().map(one).collect(),
            Ok(v @ serde_json::Value::Object(_)) => vec![one(&v)],
            _ => Vec::new(),
        };
        Write {
            method: method.to_string(),
            path: uri.path().to_string(),
            apps,
        }
    }
}

#[derive(Clone)]
struct Shared {
    upstream: String,
    http: reqwest::Client,
    frozen: Arc<watch::Sender<bool>>,
    after_write: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    log: Arc<Mutex<Vec<Write>>>,
}

impl FreezableProxy {
    /// A proxy to `upstream` (`http://host:port`) on a free loopback port.
    pub async fn start(upstream: &str) -> FreezableProxy {
        let frozen = Arc::new(watch::Sender::new(false));
        let after_write = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            writes: writes.clone(),
            log: log.clone(),
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            frozen: frozen.clone(),
            after_write: after_write.clone(),
        };
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                forward(shared.clone(), method, uri, headers, body)
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FreezableProxy {
            url,
            frozen,
            after_write,
            writes,
            log,
            task,
        }
    }

    /// Freeze as soon as the next write (`PUT`, `POST`, `DELETE`) is answered: the writer gets
    /// its answer (a deployment id), then hears nothing more.
    pub fn freeze_after_next_write(&self) {
        self.after_write.store(true, Ordering::SeqCst);
    }

    /// Writes forwarded so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Every write forwarded so far, in order: which app at which commit this proxy's client
    /// wrote.
    pub fn write_log(&self) -> Vec<Write> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_frozen(&self) -> bool {
        *self.frozen.borrow()
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for FreezableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn thawed(frozen: &watch::Sender<bool>) {
    let mut rx = frozen.subscribe();
    let _ = rx.wait_for(|f| !f).await;
}

async fn forward(s: Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    thawed(&s.frozen).await;
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if method != Method::GET {
        s.writes.fetch_add(1, Ordering::SeqCst);
        let w = Write::of(&method, &uri, &body);
        s.log.lock().unwrap_or_else(|e| e.into_inner()).push(w);
    }
    let mut req = s
        .http
        .request(method.clone(), format!("{}{pq}", s.upstream));
    for name in ["accept", "content-type", "authorization"] {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v.as_bytes());
        }
    }
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if content_type.starts_with("text/event-stream") {
        // Each chunk waits while frozen: the stream stays open and goes silent.
        let frozen = s.frozen.clone();
        let stream = resp.bytes_stream().then(move |chunk| {
            let frozen = frozen.clone();
            async move {
                thawed(&frozen).await;
                chunk.map_err(std::io::Error::other)
            }
        });
        return (
            status,
            [("content-type", content_type)],
            Body::from_stream(stream),
        )
            .into_response();
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    if method != Method::GET && s.after_write.swap(false, Ordering::SeqCst) {
        s.frozen.send_replace(true);
    }
    (status, [("content-type", content_type)], bytes).into_response()
}
