//! The Marathon REST client (reqwest, rustls): auth (HTTP basic or the DC/OS `token=` header), a
//! custom CA, timeouts, retries of idempotent calls, and the [`Scheduler`] implementation.
//!
//! Marathon's traps are handled here once: `PUT /v2/apps/{id}` always sends
//! `partialUpdate=false` (a plain PUT merges and keeps deleted fields), `DELETE /v2/apps/{id}`
//! always sends `force` explicitly (Marathon defaults it to `true`), and a rollback is
//! `DELETE /v2/deployments/{id}` without `force` (with it, Marathon only stops the deployment).

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use rand::Rng;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::{
    Deployment, EventStream, InvalidDetail, Scheduler, SchedulerError, SchedulerEvent, Written,
};
use baton_core::app::live::apps_from_response;
use baton_core::app::sse;
use baton_core::spec::AppId;

/// How to authenticate to Marathon. Secrets are redacted in Debug output.
#[derive(Debug, Clone)]
pub enum Auth {
    /// HTTP basic auth.
    Basic {
        user: String,
        password: SecretString,
    },
    /// DC/OS: `Authorization: token=<token>`.
    Token(SecretString),
}

/// Where Marathon is and how to talk to it.
#[derive(Debug, Clone)]
pub struct MarathonConfig {
    /// Base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    pub auth: Option<Auth>,
    /// PEM file of an extra CA to trust.
    pub ca_cert: Option<PathBuf>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries of an idempotent call after a connection error or a 5xx (0: none).
    pub retries: u32,
    /// First retry delay; doubled per attempt (see [`Marathon::call`]).
    pub retry_base: Duration,
}

impl MarathonConfig {
    pub fn new(url: impl Into<String>) -> Self {
        MarathonConfig {
            url: url.into(),
            auth: None,
            ca_cert: None,
            timeout: Duration::from_secs(30),
            retries: 4,
            retry_base: Duration::from_millis(200),
        }
    }

    /// Credentials written into the URL (`https://user:pass@host`) become basic auth (unless
    /// `auth` is set already) and leave the URL, which messages show.
    pub fn take_url_credentials(&mut self) {
        if let Some((bare, user, password)) = baton_core::userinfo::split_http_userinfo(&self.url) {
            self.url = bare;
            if self.auth.is_none() {
                self.auth = Some(Auth::Basic { user, password });
            }
        }
    }
}

/// A Marathon API client.
#[derive(Debug, Clone)]
pub struct Marathon {
    config: MarathonConfig,
    http: reqwest::Client,
    base: String,
}

impl Marathon {
    /// A client for `config`. Credentials written into the URL (`https://user:pass@host`)
    /// become basic auth (unless `auth` is set) and leave the URL, which error messages show.
    pub fn new(mut config: MarathonConfig) -> Result<Self, SchedulerError> {
        config.take_url_credentials();
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("baton/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                SchedulerError::Config(format!("cannot read CA certificate {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                SchedulerError::Config(format!("bad CA certificate {}: {e}", ca.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| SchedulerError::Config(format!("cannot build HTTP client: {e}")))?;
        let base = config.url.trim_end_matches('/').to_string();
        Ok(Marathon { config, http, base })
    }

    /// A request with auth applied.
    pub fn request(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
    ) -> reqwest::RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}{path_and_query}", self.base));
        match &self.config.auth {
            None => req,
            Some(Auth::Basic { user, password }) => {
                req.basic_auth(user, Some(password.expose_secret()))
            }
            Some(Auth::Token(t)) => {
                req.header("Authorization", format!("token={}", t.expose_secret()))
            }
        }
    }

    /// Open `/v2/events?<query>` as a Server-Sent Events stream. The answer's headers must come
    /// within the client's timeout (a proxy that buffers the stream would otherwise hold the
    /// caller forever); the body then stays open as long as the caller reads it.
    pub async fn event_stream(&self, query: &str) -> Result<reqwest::Response, SchedulerError> {
        let path = format!("/v2/events?{query}");
        let url = format!("{}{path}", self.base);
        let send = self
            .request(Method::GET, &path)
            .header("Accept", "text/event-stream")
            // The client-wide timeout covers the whole body, which never ends.
            .timeout(Duration::from_secs(7 * 24 * 3600))
            .send();
        let resp = match tokio::time::timeout(self.config.timeout, send).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) => {
                return Err(SchedulerError::Unreachable {
                    url,
                    reason: error_chain(&e),
                })
            }
            Err(_) => {
                return Err(SchedulerError::Unreachable {
                    url,
                    reason: format!(
                        "no answer to the event stream request within {}",
                        humantime::format_duration(self.config.timeout)
                    ),
                })
            }
        };
        if !resp.status().is_success() {
            return Err(SchedulerError::Status {
                url,
                status: resp.status().as_u16(),
                body: String::new(),
            });
        }
        Ok(resp)
    }

    /// The base URL (for messages).
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Every app with its tasks and deployments, as Marathon serves them.
    pub async fn list_apps_raw(&self) -> Result<Vec<Value>, SchedulerError> {
        let path = "/v2/apps?embed=apps.tasks&embed=apps.deployments&embed=apps.lastTaskFailure";
        let doc = self
            .call(Method::GET, path, None, Retry::Idempotent)
            .await?;
        apps_from_response(doc).map_err(|reason| SchedulerError::Protocol {
            url: format!("{}{path}", self.base),
            reason,
        })
    }

    /// One API call, its answer as JSON (`null` for an empty body), HTTP errors mapped to
    /// [`SchedulerError`] (409 `Locked` with the deployment ids, 422 `Invalid` with Marathon's
    /// `details`, 404 `NotFound`).
    ///
    /// Retries: only when `retry` is [`Retry::Idempotent`], and only after a connection error, a
    /// timeout or a 5xx answer; up to `config.retries` more attempts, waiting `retry_base * 2^n`
    /// (capped at 10 s) with full jitter between half and all of it, so that many clients do
    /// not retry in lockstep. Idempotent here means "sending it twice leaves the same state":
    /// GETs; `PUT /v2/apps/{id}?partialUpdate=false` (a full replacement: a duplicate of a PUT that
    /// did land is a no-op, or a 409 while the first one's deployment runs, which apply waits on);
    /// `DELETE /v2/apps/{id}` (a duplicate gets 404, which apply reads as "already gone").
    /// Not retried: `DELETE /v2/deployments/{id}` (a rollback is a one-off decision; a duplicate
    /// would act on whatever runs then) and POSTs (a duplicate creates twice).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Value, SchedulerError> {
        let mut attempt = 0;
        loop {
            let result = self.call_once(method.clone(), path, body).await;
            let transient = match &result {
                Err(SchedulerError::Unreachable { .. }) => true,
                Err(SchedulerError::Status { status, .. }) => *status >= 500,
                _ => false,
            };
            if !transient || retry == Retry::Never || attempt >= self.config.retries {
                return result;
            }
            let delay = backoff(self.config.retry_base, attempt);
            if let Err(e) = &result {
                tracing::debug!(%method, path, attempt, delay_ms = delay.as_millis() as u64, error = %e, "retrying");
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    async fn call_once(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, SchedulerError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.request(method, path);
        if let Some(b) = body {
            req = req.json(b);
        }
        let unreachable = |e: reqwest::Error| SchedulerError::Unreachable {
            url: url.clone(),
            reason: error_chain(&e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let text = resp.text().await.map_err(unreachable)?;
        let doc: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return doc.ok_or_else(|| SchedulerError::Protocol {
                url,
                reason: "response is not JSON".into(),
            });
        }
        let doc = doc.unwrap_or(Value::Null);
        Err(match status.as_u16() {
            404 => SchedulerError::NotFound { url },
            409 if doc.get("deployments").is_some() => SchedulerError::Locked {
                url,
                deployments: doc["deployments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.get("id").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect(),
            },
            422 => SchedulerError::Invalid {
                url,
                message: doc
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("invalid")
                    .to_string(),
                details: invalid_details(&doc),
            },
            code => SchedulerError::Status {
                url,
                status: code,
                body: text.chars().take(2000).collect(),
            },
        })
    }

    fn written(&self, path: &str, doc: &Value) -> Result<Written, SchedulerError> {
        let field = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_string);
        match (field("deploymentId"), field("version")) {
            (Some(deployment_id), Some(version)) => Ok(Written {
                deployment_id,
                version,
            }),
            _ => Err(SchedulerError::Protocol {
                url: format!("{}{path}", self.base),
                reason: "expected `{deploymentId, version}`".into(),
            }),
        }
    }
}

/// Whether [`Marathon::call`] may send a request again after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Idempotent,
    Never,
}

/// The delay before retry `attempt` (0-based): `base * 2^attempt`, capped at 10 s, jittered
/// uniformly between half and all of it.
pub fn backoff(base: Duration, attempt: u32) -> Duration {
    let full = base
        .saturating_mul(1u32 << attempt.min(16))
        .min(Duration::from_secs(10));
    let half = full / 2;
    let jitter = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

/// Marathon's 422 `details`: `[{path, errors: [..]}]`, kept verbatim.
fn invalid_details(doc: &Value) -> Vec<InvalidDetail> {
    doc.get("details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|d| InvalidDetail {
            path: d
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_string(),
            errors: d
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|e| match e {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        })
        .collect()
}

/// `/v2/apps/shop/web` for `/shop/web`.
fn app_path(id: &AppId) -> String {
    format!("/v2/apps{}", id.as_str())
}

impl Scheduler for Marathon {
    async fn list_apps(&self) -> Result<Vec<Value>, SchedulerError> {
        self.list_apps_raw().await
    }

    async fn get_app(&self, id: &AppId) -> Result<Option<Value>, SchedulerError> {
        // The same embeds as the list, so plan sees the same shape either way.
        let path = format!(
            "{}?embed=app.tasks&embed=app.deployments&embed=app.lastTaskFailure",
            app_path(id)
        );
        match self.call(Method::GET, &path, None, Retry::Idempotent).await {
            Ok(doc) => match doc.get("app") {
                Some(app) if app.is_object() => Ok(Some(app.clone())),
                _ => Err(SchedulerError::Protocol {
                    url: format!("{}{path}", self.base),
                    reason: "expected an object with `app`".into(),
                }),
            },
            Err(SchedulerError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_app(&self, id: &AppId, body: &Value) -> Result<Written, SchedulerError> {
        let path = format!("{}?partialUpdate=false&force=false", app_path(id));
        let doc = self
            .call(Method::PUT, &path, Some(body), Retry::Idempotent)
            .await?;
        self.written(&path, &doc)
    }

    async fn delete_app(&self, id: &AppId, force: bool) -> Result<Written, SchedulerError> {
        let path = format!("{}?force={force}", app_path(id));
        let doc = self
            .call(Method::DELETE, &path, None, Retry::Idempotent)
            .await?;
        self.written(&path, &doc)
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, SchedulerError> {
        let path = "/v2/deployments";
        let doc = self
            .call(Method::GET, path, None, Retry::Idempotent)
            .await?;
        let list = doc.as_array().ok_or_else(|| SchedulerError::Protocol {
            url: format!("{}{path}", self.base),
            reason: "expected a list of deployments".into(),
        })?;
        Ok(list
            .iter()
            .filter_map(|d| {
                Some(Deployment {
                    id: d.get("id")?.as_str()?.to_string(),
                    affected_apps: d
                        .get("affectedApps")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect(),
                })
            })
            .collect())
    }

    async fn rollback(&self, deployment_id: &str) -> Result<Written, SchedulerError> {
        let path = format!("/v2/deployments/{deployment_id}?force=false");
        let doc = self.call(Method::DELETE, &path, None, Retry::Never).await?;
        self.written(&path, &doc)
    }

    async fn diagnose(&self, id: &AppId) -> Option<String> {
        let mut parts = Vec::new();
        let queue = self
            .call(
                Method::GET,
                "/v2/queue?embed=lastUnusedOffers",
                None,
                Retry::Idempotent,
            )
            .await
            .ok();
        if let Some(item) = queue
            .as_ref()
            .and_then(|q| q.get("queue"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|i| i.pointer("/app/id").and_then(Value::as_str) == Some(id.as_str()))
        {
            parts.extend(queue_reason(item));
        }
        let path = format!("{}?embed=app.lastTaskFailure", app_path(id));
        if let Ok(app) = self.call(Method::GET, &path, None, Retry::Idempotent).await {
            if let Some(f) = app.pointer("/app/lastTaskFailure") {
                let state = f.get("state").and_then(Value::as_str).unwrap_or("failed");
                let message = f.get("message").and_then(Value::as_str).unwrap_or("");
                parts.push(
                    format!("last task failure: {state} {message}")
                        .trim()
                        .to_string(),
                );
            }
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }

    async fn events(&self) -> Result<EventStream, SchedulerError> {
        let resp = self
            .event_stream("event_type=deployment_success&event_type=deployment_failed")
            .await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<SchedulerEvent>();
        let reader = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            let mut parser = sse::Parser::default();
            while let Some(Ok(chunk)) = body.next().await {
                for raw in parser.feed(&chunk) {
                    if let Some(ev) = sse::deployment_event(&raw) {
                        if tx.send(ev).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(EventStream::new(rx, Some(reader)))
    }
}

/// Why a queued app does not launch, from `/v2/queue?embed=lastUnusedOffers`.
fn queue_reason(item: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let waiting = item.get("count").and_then(Value::as_u64).unwrap_or(0);
    if waiting > 0 {
        out.push(format!("{waiting} instance(s) waiting to launch"));
    }
    if let Some(left) = item
        .pointer("/delay/timeLeftSeconds")
        .and_then(Value::as_u64)
    {
        if left > 0 {
            out.push(format!("launch delayed {left}s by backoff"));
        }
    }
    let rejected: Vec<String> = item
        .pointer("/processedOffersSummary/rejectSummaryLastOffers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|r| r.get("declined").and_then(Value::as_u64).unwrap_or(0) > 0)
        .map(|r| {
            format!(
                "{} ({} of {} offers)",
                r.get("reason").and_then(Value::as_str).unwrap_or("?"),
                r.get("declined").and_then(Value::as_u64).unwrap_or(0),
                r.get("processed").and_then(Value::as_u64).unwrap_or(0)
            )
        })
        .collect();
    if !rejected.is_empty() {
        out.push(format!("no offer matched: {}", rejected.join(", ")));
    }
    out
}

pub use baton_core::error_chain;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::http::StatusCode;
    use serde_json::json;

    use super::*;

    /// A server answering every request with `status` and `body`; counts requests.
    async fn stub(status: u16, body: Value) -> (String, Arc<AtomicUsize>, CancellationGuard) {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let h = h.clone();
            let body = body.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                (StatusCode::from_u16(status).unwrap(), axum::Json(body))
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, hits, CancellationGuard(task))
    }

    struct CancellationGuard(tokio::task::JoinHandle<()>);
    impl Drop for CancellationGuard {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    fn client(url: &str) -> Marathon {
        let mut c = MarathonConfig::new(url);
        c.retries = 3;
        c.retry_base = Duration::from_millis(1);
        Marathon::new(c).unwrap()
    }

    fn app() -> AppId {
        AppId::parse("/a").unwrap()
    }

    #[tokio::test]
    async fn idempotent_calls_are_retried_on_5xx_and_rollbacks_are_not() {
        let (url, hits, _g) = stub(503, json!({"message": "busy"})).await;
        let m = client(&url);
        let e = m.list_apps().await.unwrap_err();
        assert!(
            matches!(e, SchedulerError::Status { status: 503, .. }),
            "{e}"
        );
        assert_eq!(hits.swap(0, Ordering::SeqCst), 4);
        m.put_app(&app(), &json!({"id": "/a"})).await.unwrap_err();
        assert_eq!(hits.swap(0, Ordering::SeqCst), 4);
        m.rollback("d1").await.unwrap_err();
        assert_eq!(hits.swap(0, Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn client_errors_are_not_retried_and_409_carries_the_deployments() {
        let body = json!({"message": "App is locked", "deployments": [{"id": "d1"}, {"id": "d2"}]});
        let (url, hits, _g) = stub(409, body).await;
        let e = client(&url)
            .put_app(&app(), &json!({"id": "/a"}))
            .await
            .unwrap_err();
        let SchedulerError::Locked { deployments, .. } = e else {
            panic!("{e:?}");
        };
        assert_eq!(deployments, ["d1", "d2"]);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_422_keeps_the_details_verbatim() {
        let body = json!({"message": "Object is not valid", "details": [{"path": "/cpus", "errors": ["error.min"]}]});
        let (url, _, _g) = stub(422, body).await;
        let e = client(&url)
            .put_app(&app(), &json!({"id": "/a"}))
            .await
            .unwrap_err();
        let SchedulerError::Invalid {
            message, details, ..
        } = e
        else {
            panic!("{e:?}");
        };
        assert_eq!(message, "Object is not valid");
        assert_eq!(
            details,
            vec![InvalidDetail {
                path: "/cpus".into(),
                errors: vec!["error.min".into()]
            }]
        );
    }

    #[tokio::test]
    async fn an_unreachable_scheduler_is_a_clear_error() {
        // Bound but not listening: connections are refused, and while `held` lives no other
        // test can be given this port.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = held.local_addr().unwrap();
        let e = client(&format!("http://{addr}"))
            .list_apps()
            .await
            .unwrap_err();
        assert!(matches!(e, SchedulerError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    /// A server that records `(method, path?query, authorization)` of every request and
    /// answers with what `answer` gives for the path.
    async fn recorder(
        answer: fn(&str, &str) -> Value,
    ) -> (
        String,
        Arc<std::sync::Mutex<Vec<[String; 3]>>>,
        CancellationGuard,
    ) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap| {
                let s = s.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let pq = uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    s.lock().unwrap().push([method.to_string(), pq, auth]);
                    axum::Json(answer(method.as_str(), uri.path()))
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, seen, CancellationGuard(task))
    }

    fn written(method: &str, path: &str) -> Value {
        match (method, path) {
            (_, "/v2/queue") => json!({"queue": [{
                "app": {"id": "/a"},
                "delay": {"overdue": true},
                "processedOffersSummary": {"rejectSummaryLastOffers": [
                    {"reason": "InsufficientMemory", "declined": 3, "processed": 3},
                    {"reason": "InsufficientCpus", "declined": 0, "processed": 3}
                ]}
            }]}),
            ("GET", "/v2/apps/a") => json!({"app": {"id": "/a", "lastTaskFailure": {
                "state": "TASK_FAILED", "message": "exit 3"}}}),
            _ => json!({"deploymentId": "d1", "version": "v1"}),
        }
    }

    /// What goes on the wire: never Marathon's implicit `force=true`, full replacement on PUT,
    /// and credentials from the URL sent as basic auth but shown nowhere.
    #[tokio::test]
    async fn writes_name_force_and_partial_update_and_auth_is_sent() {
        let (url, seen, _g) = recorder(written).await;
        let with_password = url.replacen("http://", "http://ops:hunter2-pass@", 1);
        let m = client(&with_password);
        assert_eq!(m.url(), url);
        m.put_app(&app(), &json!({"id": "/a"})).await.unwrap();
        m.delete_app(&app(), false).await.unwrap();
        m.delete_app(&app(), true).await.unwrap();
        m.rollback("d1").await.unwrap();
        let basic = "Basic b3BzOmh1bnRlcjItcGFzcw=="; // base64("ops:hunter2-pass")
        let calls: Vec<[String; 3]> = seen.lock().unwrap().drain(..).collect();
        let expected = [
            ["PUT", "/v2/apps/a?partialUpdate=false&force=false"],
            ["DELETE", "/v2/apps/a?force=false"],
            ["DELETE", "/v2/apps/a?force=true"],
            ["DELETE", "/v2/deployments/d1?force=false"],
        ];
        assert_eq!(calls.len(), expected.len(), "{calls:?}");
        for (c, [method, pq]) in calls.iter().zip(expected) {
            assert_eq!((c[0].as_str(), c[1].as_str()), (method, pq));
            assert_eq!(c[2], basic);
        }
        // Errors show the URL without the password.
        let down = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = client(&format!("http://ops:hunter2-pass@{down}"))
            .list_apps()
            .await
            .unwrap_err();
        assert!(!format!("{e} {e:?}").contains("hunter2"), "{e:?}");

        // The DC/OS token form.
        let mut c = MarathonConfig::new(url.clone());
        c.auth = Some(Auth::Token(SecretString::from(
            "dcos-acs-token".to_string(),
        )));
        let m = Marathon::new(c).unwrap();
        assert!(!format!("{m:?}").contains("dcos-acs-token"));
        m.list_apps().await.unwrap_err(); // the answer is no app list; the header went out
        let calls = seen.lock().unwrap().clone();
        assert_eq!(
            calls[0][1],
            "/v2/apps?embed=apps.tasks&embed=apps.deployments&embed=apps.lastTaskFailure"
        );
        assert_eq!(calls[0][2], "token=dcos-acs-token");
    }

    /// Why an app does not start: the offers Marathon declined and the last task failure.
    #[tokio::test]
    async fn diagnosis_names_declined_offers_and_the_last_failure() {
        let (url, _, _g) = recorder(written).await;
        let why = client(&url).diagnose(&app()).await.unwrap();
        assert!(why.contains("InsufficientMemory"), "{why}");
        assert!(!why.contains("InsufficientCpus"), "{why}");
        assert!(why.contains("TASK_FAILED exit 3"), "{why}");
    }

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        for attempt in 0..20 {
            let full = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(16))
                .min(Duration::from_secs(10));
            let d = backoff(Duration::from_millis(100), attempt);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
    }
}
