//! The HTTP side of `baton serve` (axum): push webhooks, health, status and manual sync.
//!
//! - `POST /hooks/{provider}`: verified by [`crate::daemon::hooks::receive`]; 202 accepted (a cycle is
//!   queued), 200 ignored/duplicate, 401 bad or missing signature (logged without the body),
//!   400 malformed, 404 unknown provider, 413 over [`crate::daemon::hooks::MAX_BODY_BYTES`]; 404 with
//!   the reason when webhooks are off ([`HookSettings::Off`]). Each answer is counted in
//!   `baton_webhook_deliveries_total{outcome}`.
//! - `GET /healthz` (the process answers), `GET /readyz` (a first cycle succeeded).
//! - `GET /api/status` ([`crate::daemon::reconcile::Status`], schema `schemas/status.schema.json`).
//! - `POST /api/sync[?app=<id>...]`: apply now (also with `--sync=manual`), every app or only
//!   those named (400 malformed, 404 unknown app); 202 with the request's id (`sync`), which the
//!   history entry of the cycle that served it names (`requests`). In manual mode this is the approval
//!   gate, and with secret zero every task can reach this server, so it takes a bearer token
//!   (`--api-token-file`); without one configured, only loopback clients may call it.
//! - `POST /api/refresh`: fetch and compare now (a poll), the same check as `/api/sync`.
//! - `POST /api/login`, `/api/logout`, `GET /api/session`: the status page's login
//!   ([`crate::daemon::auth`]); every `POST /api/*` is checked by [`crate::daemon::auth::Auth`].
//! - `POST /api/rollouts/{app}/promote` and `/abort`: an operator command for the rollout of
//!   `app` (the same token check as `/api/sync`): 202 queued for the next rollout tick, 404 no
//!   rollout of that app in progress, 409 the rollout is already finishing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::daemon::hooks::{self, HookError, Provider, ReplayWindow, Verdict};
use crate::daemon::reconcile::{Shared, Trigger};

/// Deliveries remembered for replay detection.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(3600);
const REPLAY_CAPACITY: usize = 10_000;

/// Webhook settings.
pub enum HookSettings {
    /// Deliveries are verified with `secret` (never optional: an unauthenticated hook would let
    /// anyone trigger fetches); pushes to other refs than the followed `--ref` are ignored.
    On {
        secret: SecretString,
        followed_ref: String,
    },
    /// No webhook is accepted (a plain directory, or no secret configured): `POST /hooks/*`
    /// answers 404 with `reason`, without reading the body.
    Off { reason: &'static str },
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
    hooks: Arc<HookSettings>,
    window: Arc<Mutex<ReplayWindow>>,
    /// Bearer token of `POST /api/sync` (None: loopback clients only).
    api_token: Option<Arc<SecretString>>,
    /// Status page logins and the check of every `POST /api/*` ([`crate::daemon::auth`]).
    auth: Arc<crate::daemon::auth::Auth>,
    proxy_header: Option<axum::http::HeaderName>,
}

impl AppState {
    pub fn new(shared: Arc<Shared>, hooks: HookSettings) -> Self {
        AppState {
            shared,
            hooks: Arc::new(hooks),
            window: Arc::new(Mutex::new(ReplayWindow::new(
                REPLAY_WINDOW,
                REPLAY_CAPACITY,
            ))),
            api_token: None,
            auth: Arc::new(auth_or_none(None, None)),
            proxy_header: None,
        }
    }

    /// Require `Authorization: Bearer <token>` on `POST /api/sync`.
    pub fn with_api_token(mut self, token: Option<SecretString>) -> Self {
        self.api_token = token.map(Arc::new);
        self.auth = Arc::new(auth_or_none(
            self.api_token.clone(),
            self.proxy_header.clone(),
        ));
        self
    }

    /// Trust `header` (set by a reverse proxy) to name a logged-in user
    /// (`--auth-proxy-header`).
    pub fn with_proxy_header(mut self, header: Option<axum::http::HeaderName>) -> Self {
        self.proxy_header = header;
        self.auth = Arc::new(auth_or_none(
            self.api_token.clone(),
            self.proxy_header.clone(),
        ));
        self
    }
}

/// The auth state; a random source that fails leaves only bearer and loopback access (the
/// CSRF key is then a fixed one nobody can use: no session can be opened without randomness).
fn auth_or_none(
    token: Option<Arc<SecretString>>,
    proxy: Option<axum::http::HeaderName>,
) -> crate::daemon::auth::Auth {
    match crate::daemon::auth::Auth::new(token.clone(), proxy) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "status page logins are off");
            crate::daemon::auth::Auth::disabled(token)
        }
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    // The status page (`/`), `/api/drift` and `/metrics`: see [`crate::daemon::dashboard`].
    let dashboard = crate::daemon::dashboard::router(state.shared.dashboard.clone());
    let hooks = match *state.hooks {
        HookSettings::On { .. } => post(hook),
        HookSettings::Off { reason } => post(move |State(state): State<AppState>| async move {
            state.shared.dashboard.metrics.webhook_delivery("disabled");
            (StatusCode::NOT_FOUND, Json(json!({"error": reason}))).into_response()
        }),
    };
    Router::new()
        .route("/hooks/{provider}", hooks)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/api/status", get(status))
        .route("/api/sync", post(sync))
        .route("/api/refresh", post(refresh))
        .route("/api/rollouts/{*rest}", post(rollout_command))
        .layer(DefaultBodyLimit::max(hooks::MAX_BODY_BYTES))
        .with_state(state.clone())
        .merge(dashboard)
        .merge(crate::daemon::auth::router(state.auth))
}

/// The connection limits of `baton serve`'s listener: from the open-files limit, and bodies up
/// to the largest route limit (the webhooks').
pub fn limits() -> baton_listen::Limits {
    baton_listen::Limits::from_rlimit(hooks::MAX_BODY_BYTES)
}

/// Serve `app` (the routes, plus any merged in such as the secret-zero gatekeeper) until
/// `shutdown` within `limits` ([`baton_listen`]: header and body timeouts, connection caps,
/// counted in `stats`), with the peer address available (`ConnectInfo<SocketAddr>`: the
/// gatekeeper's host check needs it).
pub async fn run_router(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: baton_listen::Limits,
    stats: Arc<baton_listen::Stats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    baton_listen::serve(listener, app, limits, stats, shutdown).await
}

async fn hook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let metrics = state.shared.dashboard.metrics.clone();
    let HookSettings::On {
        secret,
        followed_ref,
    } = &*state.hooks
    else {
        // The route is only this handler when webhooks are on.
        metrics.webhook_delivery("disabled");
        return StatusCode::NOT_FOUND.into_response();
    };
    let provider: Provider = match provider.parse() {
        Ok(p) => p,
        Err(e) => {
            metrics.webhook_delivery("unknown_provider");
            return (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response();
        }
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            // Over the size limit (413), or a body that could not be read.
            let code = rejection.status();
            let too_large = code == StatusCode::PAYLOAD_TOO_LARGE;
            metrics.webhook_delivery(if too_large { "too_large" } else { "malformed" });
            let error = if too_large {
                format!("the body is over {} bytes", hooks::MAX_BODY_BYTES)
            } else {
                rejection.body_text()
            };
            tracing::warn!(provider = provider.name(), status = code.as_u16(), %error, "webhook refused");
            return (code, Json(json!({ "error": error }))).into_response();
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verdict = {
        let mut window = state.window.lock().unwrap_or_else(|e| e.into_inner());
        hooks::receive(
            provider,
            secret.expose_secret().as_bytes(),
            followed_ref,
            header,
            &body,
            &mut window,
            Instant::now(),
        )
    };
    match verdict {
        Ok(Verdict::Accepted(push)) => {
            tracing::info!(provider = provider.name(), delivery = %push.delivery, after = %push.after, "webhook: push accepted");
            metrics.webhook_delivery("accepted");
            state.shared.note_push(&push.after);
            state.shared.trigger(Trigger::Webhook {
                delivery: push.delivery,
            });
            (StatusCode::ACCEPTED, Json(json!({"status": "accepted"}))).into_response()
        }
        Ok(Verdict::Ignored(reason)) => {
            tracing::debug!(provider = provider.name(), %reason, "webhook ignored");
            metrics.webhook_delivery("ignored");
            (
                StatusCode::OK,
                Json(json!({"status": "ignored", "reason": reason})),
            )
                .into_response()
        }
        Ok(Verdict::Duplicate(delivery)) => {
            tracing::info!(provider = provider.name(), %delivery, "webhook: replayed delivery dropped");
            metrics.webhook_delivery("duplicate");
            (StatusCode::OK, Json(json!({"status": "duplicate"}))).into_response()
        }
        Err(e) => {
            let code = match &e {
                e if e.is_auth() => StatusCode::UNAUTHORIZED,
                HookError::UnknownProvider(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            };
            metrics.webhook_delivery(if e.is_auth() { "rejected" } else { "malformed" });
            // Never the body, the signature or the secret: only what failed.
            tracing::warn!(provider = provider.name(), status = code.as_u16(), error = %e, bytes = body.len(), "webhook refused");
            (code, Json(json!({"error": e.to_string()}))).into_response()
        }
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    if state
        .shared
        .ready
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no successful sync yet",
        )
            .into_response()
    }
}

async fn status(State(state): State<AppState>) -> Response {
    Json(state.shared.status()).into_response()
}

async fn sync(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    if let Some(refused) = refusal(&state, &request, "/api/sync") {
        return refused;
    }
    // `?app=<id>` (repeatable): only those apps (`daemon::sync_requests`).
    use crate::daemon::sync_requests::{parse_query, QueryError};
    let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(request.uri());
    let apps = match pairs {
        Err(e) => Err(QueryError::Malformed(e.body_text())),
        Ok(axum::extract::Query(pairs)) => {
            let status = state
                .shared
                .status
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let known = |app: &baton_core::spec::AppId| {
                (status.apps)
                    .binary_search_by(|a| a.id.as_str().cmp(app.as_str()))
                    .is_ok()
            };
            parse_query(&pairs, known)
        }
    };
    let apps = match apps {
        Ok(apps) => apps,
        Err(e) => {
            let code = match e {
                QueryError::Malformed(_) => StatusCode::BAD_REQUEST,
                QueryError::Unknown(_) => StatusCode::NOT_FOUND,
            };
            return (code, Json(json!({"error": e.to_string()}))).into_response();
        }
    };
    let shown: Option<Vec<String>> =
        (apps.as_ref()).map(|a| a.iter().map(|id| id.to_string()).collect());
    let id = state.shared.sync_requests.ask(apps);
    state.shared.trigger(Trigger::ManualSync);
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": "queued", "sync": id, "apps": shown})),
    )
        .into_response()
}

/// `POST /api/refresh` (the status page's Refresh): fetch and compare now, as the poll does;
/// it applies only what the sync mode applies anyway.
async fn refresh(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    if let Some(refused) = refusal(&state, &request, "/api/refresh") {
        return refused;
    }
    state.shared.trigger(Trigger::Poll);
    (StatusCode::ACCEPTED, Json(json!({"status": "queued"}))).into_response()
}

/// The admin check of every `POST /api/*` ([`crate::daemon::auth::Auth::authorize`]): the
/// 401/403 to answer when refused (logged, never the token), `None` when allowed.
fn refusal(state: &AppState, request: &axum::extract::Request, what: &str) -> Option<Response> {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let why = (state.auth)
        .authorize(request.headers(), peer, Instant::now())
        .err()?;
    tracing::warn!(peer = ?peer, "POST {what} refused: {}", why.reason);
    Some((why.status, Json(json!({"error": why.reason}))).into_response())
}

/// `POST /api/rollouts/{app}/promote|abort`: queue the command for the next rollout tick.
async fn rollout_command(
    State(state): State<AppState>,
    Path(rest): Path<String>,
    request: axum::extract::Request,
) -> Response {
    // Authorised first: who may not act learns nothing of which rollouts run.
    if let Some(refused) = refusal(&state, &request, "/api/rollouts") {
        return refused;
    }
    let not_found = |error: String| (StatusCode::NOT_FOUND, Json(json!({ "error": error })));
    let Some((app, verb)) = rest.trim_matches('/').rsplit_once('/') else {
        return not_found("use /api/rollouts/<app id>/promote or /abort".into()).into_response();
    };
    let command = match verb {
        "promote" => baton_core::rollout::OperatorCommand::Promote,
        "abort" => baton_core::rollout::OperatorCommand::Abort,
        _ => {
            return not_found(format!("unknown rollout command `{verb}` (promote, abort)"))
                .into_response()
        }
    };
    let app = format!("/{}", app.trim_start_matches('/'));
    match state.shared.rollout_phase(&app) {
        None => not_found(format!("no rollout of {app} is in progress")).into_response(),
        Some(phase) if crate::daemon::rollout::finishing(phase) => (
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!("the rollout of {app} is already finishing ({phase})"),
                "phase": phase,
            })),
        )
            .into_response(),
        Some(phase) => {
            tracing::info!(app = %app, command = verb, phase, "rollout: operator command queued");
            state.shared.operators.queue(&app, command);
            state.shared.trigger(Trigger::Rollout);
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "queued", "app": app, "command": verb})),
            )
                .into_response()
        }
    }
}

/// Whether a bearer-token call may proceed ([`crate::daemon::auth::bearer_allowed`]).
#[cfg(test)]
fn admin_allowed(
    token: Option<&SecretString>,
    bearer: Option<&str>,
    peer: Option<std::net::IpAddr>,
) -> Result<(), &'static str> {
    crate::daemon::auth::bearer_allowed(token, bearer, peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tokio::sync::mpsc::error::TryRecvError;
    use tower::ServiceExt;

    const SECRET: &str = "hook-secret";

    fn app(token: Option<&str>) -> (Router, tokio::sync::mpsc::Receiver<Trigger>) {
        let (shared, rx) = Shared::new("test".into(), crate::daemon::reconcile::SyncMode::Manual);
        let state = AppState::new(
            shared,
            HookSettings::On {
                secret: SecretString::from(SECRET.to_string()),
                followed_ref: "main".into(),
            },
        )
        .with_api_token(token.map(|t| SecretString::from(t.to_string())));
        (router(state), rx)
    }

    async fn send(app: &Router, req: Request<Body>) -> u16 {
        app.clone().oneshot(req).await.unwrap().status().as_u16()
    }

    fn push(git_ref: &str) -> Vec<u8> {
        push_of(git_ref, "0123abcd")
    }

    fn push_of(git_ref: &str, after: &str) -> Vec<u8> {
        format!(r#"{{"ref":"refs/heads/{git_ref}","after":"{after}"}}"#).into_bytes()
    }

    fn hex_hmac(body: &[u8]) -> String {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
        hex::encode(ring::hmac::sign(&key, body).as_ref())
    }

    /// Each provider's delivery over HTTP, as the forge sends it: accepted (202) and a cycle
    /// queued; the same delivery again, a forged one, another branch: answered, nothing queued.
    #[tokio::test]
    async fn deliveries_of_every_provider_queue_exactly_one_cycle() {
        let (app, mut rx) = app(None);
        let body = push("main");
        let github = |delivery: &str, sig: String| {
            Request::post("/hooks/github")
                .header("X-GitHub-Event", "push")
                .header("X-GitHub-Delivery", delivery)
                .header("X-Hub-Signature-256", sig)
                .body(Body::from(body.clone()))
                .unwrap()
        };
        let sig = format!("sha256={}", hex_hmac(&body));
        assert_eq!(send(&app, github("g-1", sig.clone())).await, 202);
        assert!(
            matches!(rx.try_recv(), Ok(Trigger::Webhook { delivery }) if delivery == "github:g-1")
        );
        assert_eq!(
            send(&app, github("g-1", sig.clone())).await,
            200,
            "replayed"
        );
        assert_eq!(
            send(&app, github("g-2", "sha256=00".into())).await,
            401,
            "forged"
        );
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);

        // Each forge's push is another push (another body: the same body again is a replay).
        let gitlab = Request::post("/hooks/gitlab")
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Event-UUID", "l-1")
            .header("X-Gitlab-Token", SECRET)
            .body(Body::from(push_of("main", "1111")))
            .unwrap();
        assert_eq!(send(&app, gitlab).await, 202);
        let wrong_token = Request::post("/hooks/gitlab")
            .header("X-Gitlab-Event", "Push Hook")
            .header("X-Gitlab-Token", "guess")
            .body(Body::from(body.clone()))
            .unwrap();
        assert_eq!(send(&app, wrong_token).await, 401);
        let gitea_body = push_of("main", "2222");
        let gitea = Request::post("/hooks/gitea")
            .header("X-Gitea-Event", "push")
            .header("X-Gitea-Delivery", "t-1")
            .header("X-Gitea-Signature", hex_hmac(&gitea_body))
            .body(Body::from(gitea_body))
            .unwrap();
        assert_eq!(send(&app, gitea).await, 202);
        let generic_body = push_of("main", "3333");
        let generic = Request::post("/hooks/generic")
            .header("X-Baton-Delivery", "b-1")
            .header(
                "X-Baton-Signature",
                format!("sha256={}", hex_hmac(&generic_body)),
            )
            .body(Body::from(generic_body))
            .unwrap();
        assert_eq!(send(&app, generic).await, 202);
        let delivered: Vec<String> = std::iter::from_fn(|| match rx.try_recv() {
            Ok(Trigger::Webhook { delivery }) => Some(delivery),
            _ => None,
        })
        .collect();
        assert_eq!(delivered, ["gitlab:l-1", "gitea:t-1", "generic:b-1"]);

        // A push to another branch is authentic but ignored.
        let other = push("feature");
        let req = Request::post("/hooks/github")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "g-3")
            .header(
                "X-Hub-Signature-256",
                format!("sha256={}", hex_hmac(&other)),
            )
            .body(Body::from(other))
            .unwrap();
        assert_eq!(send(&app, req).await, 200);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);

        // Over the size limit: refused before any check.
        let huge = vec![b' '; hooks::MAX_BODY_BYTES + 1];
        let req = Request::post("/hooks/github")
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", format!("sha256={}", hex_hmac(&huge)))
            .body(Body::from(huge))
            .unwrap();
        assert_eq!(send(&app, req).await, 413);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    }

    /// Every answer of `POST /hooks/*` is counted under its own outcome: a body over the limit
    /// (413) is `too_large` and an unknown provider (404) `unknown_provider`, not `malformed`.
    #[tokio::test]
    async fn every_webhook_answer_is_counted_under_its_own_outcome() {
        let (shared, _rx) = Shared::new("test".into(), crate::daemon::reconcile::SyncMode::Manual);
        let metrics = shared.dashboard.metrics.clone();
        let on = HookSettings::On {
            secret: SecretString::from(SECRET.to_string()),
            followed_ref: "main".into(),
        };
        let app = router(AppState::new(shared, on));
        let huge = vec![b' '; hooks::MAX_BODY_BYTES + 1];
        let req = Request::post("/hooks/github")
            .header("X-GitHub-Event", "push")
            .header("X-Hub-Signature-256", format!("sha256={}", hex_hmac(&huge)))
            .body(Body::from(huge))
            .unwrap();
        assert_eq!(send(&app, req).await, 413);
        let req = Request::post("/hooks/sourcehut")
            .body(Body::from(push("main")))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        assert!(
            String::from_utf8_lossy(&body).contains("unknown webhook provider"),
            "{body:?}"
        );
        let req = Request::post("/hooks/github")
            .header("X-GitHub-Event", "push")
            .body(Body::from(push("main")))
            .unwrap();
        assert_eq!(send(&app, req).await, 401);
        let text = metrics.render();
        for (outcome, n) in [("too_large", 1), ("unknown_provider", 1), ("rejected", 1)] {
            let line = format!("baton_webhook_deliveries_total{{outcome=\"{outcome}\"}} {n}");
            assert!(text.contains(&line), "{line} in:\n{text}");
        }
        assert!(!text.contains("outcome=\"malformed\""), "{text}");
    }

    /// With webhooks off, `POST /hooks/*` answers 404 saying why, counted as `disabled`, and
    /// nothing is queued.
    #[tokio::test]
    async fn webhooks_off_answer_404_with_the_reason() {
        let (shared, mut rx) = Shared::new("test".into(), crate::daemon::reconcile::SyncMode::Auto);
        let metrics = shared.dashboard.metrics.clone();
        let off = HookSettings::Off {
            reason: "webhooks are off: no secret",
        };
        let app = router(AppState::new(shared, off));
        let body = push("main");
        let req = Request::post("/hooks/github")
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "g-1")
            .header("X-Hub-Signature-256", format!("sha256={}", hex_hmac(&body)))
            .body(Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["error"], "webhooks are off: no secret");
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
        assert!(metrics
            .render()
            .contains("baton_webhook_deliveries_total{outcome=\"disabled\"} 1"));
        // The rest of the API is unaffected.
        let health = Request::get("/healthz").body(Body::empty()).unwrap();
        assert_eq!(send(&app, health).await, 200);
    }

    /// `POST /api/sync` with a token configured: only the right bearer queues a sync.
    #[tokio::test]
    async fn manual_sync_needs_the_bearer_token() {
        let (guarded, mut rx) = app(Some("s3cret-sync"));
        let sync = |auth: Option<&str>| {
            let mut r = Request::post("/api/sync");
            if let Some(a) = auth {
                r = r.header("Authorization", a);
            }
            r.body(Body::empty()).unwrap()
        };
        assert_eq!(send(&guarded, sync(None)).await, 401);
        assert_eq!(send(&guarded, sync(Some("Bearer nope"))).await, 401);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(send(&guarded, sync(Some("Bearer s3cret-sync"))).await, 202);
        assert_eq!(rx.try_recv().unwrap(), Trigger::ManualSync);

        // Without a token: loopback peers only.
        let (open, mut rx) = app(None);
        let from = |ip: [u8; 4]| {
            let mut r = Request::post("/api/sync").body(Body::empty()).unwrap();
            r.extensions_mut()
                .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                    ip, 40000,
                ))));
            r
        };
        assert_eq!(send(&open, from([10, 0, 0, 7])).await, 401);
        assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(send(&open, from([127, 0, 0, 1])).await, 202);
        assert_eq!(rx.try_recv().unwrap(), Trigger::ManualSync);
    }

    #[test]
    fn admin_calls_need_the_token_or_loopback() {
        let token = SecretString::from("s3cret-sync".to_string());
        let local = Some(std::net::IpAddr::from([127, 0, 0, 1]));
        let remote = Some(std::net::IpAddr::from([10, 1, 2, 3]));
        assert!(admin_allowed(Some(&token), Some("s3cret-sync"), remote).is_ok());
        assert!(admin_allowed(Some(&token), Some("s3cret-syn"), local).is_err());
        assert!(admin_allowed(Some(&token), None, local).is_err());
        assert!(admin_allowed(None, None, local).is_ok());
        assert!(admin_allowed(None, Some("anything"), remote).is_err());
        assert!(admin_allowed(None, None, None).is_err());
    }
}
