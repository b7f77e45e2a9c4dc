//! The HTTP side of `baton serve` (axum): push webhooks, health, status and manual sync.
//!
//! - `POST /hooks/{provider}`: verified by [`crate::hooks::receive`]; 202 accepted (a cycle is
//!   queued), 200 ignored/duplicate, 401 bad or missing signature (logged without the body),
//!   400 malformed, 404 unknown provider, 413 over [`crate::hooks::MAX_BODY_BYTES`].
//! - `GET /healthz` (the process answers), `GET /readyz` (a first cycle succeeded).
//! - `GET /api/status` ([`crate::reconcile::Status`], schema `schemas/status.schema.json`).
//! - `POST /api/sync`: apply now (also with `--sync=manual`). In manual mode this is the approval
//!   gate, and with secret zero every task can reach this server, so it takes a bearer token
//!   (`--api-token-file`); without one configured, only loopback clients may call it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::hooks::{self, HookError, Provider, ReplayWindow, Verdict};
use crate::reconcile::{Shared, Trigger};

/// Deliveries remembered for replay detection.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(3600);
const REPLAY_CAPACITY: usize = 10_000;

/// Webhook settings.
pub struct HookSettings {
    /// The shared secret (required: an unauthenticated hook would let anyone trigger fetches).
    pub secret: SecretString,
    /// The followed `--ref`; pushes to other refs are ignored.
    pub followed_ref: String,
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    shared: Arc<Shared>,
    hooks: Arc<HookSettings>,
    window: Arc<Mutex<ReplayWindow>>,
    /// Bearer token of `POST /api/sync` (None: loopback clients only).
    api_token: Option<Arc<SecretString>>,
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
        }
    }

    /// Require `Authorization: Bearer <token>` on `POST /api/sync`.
    pub fn with_api_token(mut self, token: Option<SecretString>) -> Self {
        self.api_token = token.map(Arc::new);
        self
    }
}

/// The routes.
pub fn router(state: AppState) -> Router {
    // The status page (`/`), `/api/drift` and `/metrics`: see [`crate::dashboard`].
    let dashboard = crate::dashboard::router(state.shared.dashboard.clone());
    Router::new()
        .route("/hooks/{provider}", post(hook))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/api/status", get(status))
        .route("/api/sync", post(sync))
        .layer(DefaultBodyLimit::max(hooks::MAX_BODY_BYTES))
        .with_state(state)
        .merge(dashboard)
}

/// Serve on `listener` until `shutdown` is cancelled (in-flight requests finish).
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    run_router(listener, router(state), shutdown).await
}

/// Serve `app` (the routes, plus any merged in such as the secret-zero gatekeeper) until
/// `shutdown`, with the peer address available (`ConnectInfo<SocketAddr>`: the gatekeeper's host
/// check needs it).
pub async fn run_router(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

async fn hook(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let metrics = state.shared.dashboard.metrics.clone();
    let provider: Provider = match provider.parse() {
        Ok(p) => p,
        Err(e) => {
            metrics.webhook_delivery("malformed");
            return (StatusCode::NOT_FOUND, Json(json!({"error": e.to_string()}))).into_response();
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let verdict = {
        let mut window = state.window.lock().unwrap_or_else(|e| e.into_inner());
        hooks::receive(
            provider,
            state.hooks.secret.expose_secret().as_bytes(),
            &state.hooks.followed_ref,
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
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Err(why) = admin_allowed(state.api_token.as_deref(), bearer, peer) {
        tracing::warn!(peer = ?peer, "POST /api/sync refused: {why}");
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": why}))).into_response();
    }
    state.shared.trigger(Trigger::ManualSync);
    (StatusCode::ACCEPTED, Json(json!({"status": "queued"}))).into_response()
}

/// Whether an admin call may proceed: with a token configured, the bearer must match it
/// (constant time); without, only a loopback peer may.
fn admin_allowed(
    token: Option<&SecretString>,
    bearer: Option<&str>,
    peer: Option<std::net::IpAddr>,
) -> Result<(), &'static str> {
    match (token, bearer) {
        (Some(t), Some(given)) => {
            // HMACs of both under a fresh key: equal-time whatever the lengths.
            let key = ring::hmac::Key::generate(
                ring::hmac::HMAC_SHA256,
                &ring::rand::SystemRandom::new(),
            )
            .map_err(|_| "cannot check the token")?;
            let expected = ring::hmac::sign(&key, t.expose_secret().as_bytes());
            ring::hmac::verify(&key, given.trim().as_bytes(), expected.as_ref())
                .map_err(|_| "bad bearer token")
        }
        (Some(_), None) => Err("a bearer token is required (Authorization: Bearer ...)"),
        (None, _) if peer.is_some_and(|ip| ip.is_loopback()) => Ok(()),
        (None, _) => Err("only loopback clients may sync without --api-token-file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
