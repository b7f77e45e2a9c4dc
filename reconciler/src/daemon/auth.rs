//! Who may act through `baton serve`'s HTTP API besides bearer-token clients: people using the
//! status page, logged in with the API token (a session cookie) or named by a trusted proxy
//! header (`--auth-proxy-header`).
//!
//! - `POST /api/login` (form field `token`): the token is compared in constant time; failures are
//!   rate limited per client address ([`MAX_FAILURES`] per [`FAILURE_WINDOW`]) and overall. A
//!   success creates a session: a random id (256 bits) kept server-side (hashed) with an expiry
//!   ([`SESSION_TTL`]), at most [`MAX_SESSIONS`]; the cookie holds only that id (`HttpOnly`,
//!   `SameSite=Strict`, `Secure` when the request came over https through a proxy), never the
//!   token.
//! - `POST /api/logout`: ends the session (CSRF token required).
//! - `GET /api/session`: whether the caller may act, how, and the CSRF token the page sends
//!   with each action (`X-CSRF-Token`).
//!
//! Every `POST /api/*` action goes through [`Auth::authorize`]: a request with an
//! `Authorization` header is judged as before (the bearer token, unchanged); any other is
//! refused when a browser says it is cross-site (`Sec-Fetch-Site`, `Origin`), and a session or a
//! proxy user must also send its CSRF token (an HMAC of the session id or user name under a key
//! made at start, so a cross-site page can neither read nor forge it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

/// The session cookie's name.
pub const COOKIE: &str = "baton_session";
/// The header carrying the CSRF token of a cookie or proxy-header request.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lasts after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions held at once; a login beyond it ends the session closest to expiry.
pub const MAX_SESSIONS: usize = 1024;
/// Failed logins allowed per client address within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 5;
/// Failed logins allowed from all addresses together within [`FAILURE_WINDOW`].
pub const MAX_FAILURES_TOTAL: u32 = 50;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose failures are remembered; when full, logins are refused until the
/// window passes (bounded memory, failing closed).
const MAX_TRACKED: usize = 4096;
/// The login form's body limit.
const LOGIN_BODY_BYTES: usize = 4096;

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `Authorization: Bearer` with the API token.
    Bearer,
    /// A loopback client while no API token is configured (and no proxy header).
    Loopback,
    /// A logged-in session of the status page.
    Session,
    /// A user the trusted proxy named.
    Proxy(String),
}

/// Why an action is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: &'static str,
}

impl Refusal {
    fn unauthorized(reason: &'static str) -> Self {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            reason,
        }
    }
    fn forbidden(reason: &'static str) -> Self {
        Refusal {
            status: StatusCode::FORBIDDEN,
            reason,
        }
    }
}

#[derive(Debug)]
struct Session {
    expires: Instant,
}

#[derive(Debug, Default)]
struct Failures {
    per_peer: HashMap<Option<IpAddr>, (Instant, u32)>,
    total: Option<(Instant, u32)>,
}

/// The API token, the proxy header, the sessions and the login limiter.
pub struct Auth {
    token: Option<Arc<SecretString>>,
    proxy_header: Option<HeaderName>,
    /// SHA-256 of the session id -> session (the id itself is only in the cookie).
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    failures: Mutex<Failures>,
    /// Signs CSRF tokens; made at start, so a restart invalidates them with the sessions.
    csrf_key: ring::hmac::Key,
    rng: ring::rand::SystemRandom,
    /// False when no key could be made: no CSRF token is then ever valid.
    enabled: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("proxy_header", &self.proxy_header)
            .finish_non_exhaustive()
    }
}

/// The auth settings could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("the system's random number generator failed")]
    Random,
}

impl Auth {
    pub fn new(
        token: Option<Arc<SecretString>>,
        proxy_header: Option<HeaderName>,
    ) -> Result<Self, AuthError> {
        let rng = ring::rand::SystemRandom::new();
        let csrf_key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .map_err(|_| AuthError::Random)?;
        Ok(Auth {
            token,
            proxy_header,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(Failures::default()),
            csrf_key,
            rng,
            enabled: true,
        })
    }

    /// Bearer and loopback access only (no random key could be made for sessions and CSRF).
    pub fn disabled(token: Option<Arc<SecretString>>) -> Self {
        Auth {
            token,
            proxy_header: None,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(Failures::default()),
            csrf_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[0; 32]),
            rng: ring::rand::SystemRandom::new(),
            enabled: false,
        }
    }

    /// The API token configured, for the bearer check.
    pub fn token(&self) -> Option<&SecretString> {
        self.token.as_deref()
    }

    fn csrf_for(&self, subject: &str) -> String {
        hex::encode(ring::hmac::sign(&self.csrf_key, subject.as_bytes()).as_ref())
    }

    fn csrf_ok(&self, subject: &str, given: Option<&str>) -> bool {
        if !self.enabled {
            return false;
        }
        let Some(given) = given.and_then(|g| hex::decode(g.trim()).ok()) else {
            return false;
        };
        ring::hmac::verify(&self.csrf_key, subject.as_bytes(), &given).is_ok()
    }

    /// The session id of the request's cookie, if it names a live session.
    fn session_of(&self, headers: &HeaderMap, now: Instant) -> Option<String> {
        let id = cookie(headers, COOKIE)?;
        let key = digest(&id);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        match sessions.get(&key) {
            Some(s) if s.expires > now => Some(id),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    fn proxy_user(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.proxy_header.as_ref()?;
        let user = headers.get(name)?.to_str().ok()?.trim();
        (!user.is_empty()).then(|| user.to_string())
    }

    /// Whether a `POST /api/*` action may proceed, and as whom.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
        now: Instant,
    ) -> Result<Principal, Refusal> {
        let bearer = (headers.get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(given) = bearer {
            // API clients: the bearer rule they always had. (Browsers never add a bearer on
            // their own; Basic credentials they do, so those get the checks below.)
            if self.token.is_none() && self.proxy_header.is_some() {
                return Err(Refusal::unauthorized(
                    "no API token is configured: act through the proxy's login",
                ));
            }
            return bearer_allowed(self.token(), Some(given), peer)
                .map(|()| match self.token {
                    Some(_) => Principal::Bearer,
                    None => Principal::Loopback,
                })
                .map_err(Refusal::unauthorized);
        }
        cross_site(headers)?;
        let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
        if let Some(id) = self.session_of(headers, now) {
            return if self.csrf_ok(&format!("session:{id}"), csrf) {
                Ok(Principal::Session)
            } else {
                Err(Refusal::forbidden(
                    "missing or wrong CSRF token (X-CSRF-Token)",
                ))
            };
        }
        if let Some(user) = self.proxy_user(headers) {
            return if self.csrf_ok(&format!("proxy:{user}"), csrf) {
                Ok(Principal::Proxy(user))
            } else {
                Err(Refusal::forbidden(
                    "missing or wrong CSRF token (X-CSRF-Token)",
                ))
            };
        }
        if self.proxy_header.is_some() {
            // Behind a proxy every peer may be loopback: the proxy's word is the only login.
            return Err(Refusal::unauthorized(
                "log in (the proxy did not name a user), or send a bearer token",
            ));
        }
        bearer_allowed(self.token(), None, peer)
            .map(|()| Principal::Loopback)
            .map_err(Refusal::unauthorized)
    }

    /// Count a failed login of `peer`: `Err` (refused for now) when over a limit.
    fn login_allowed(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), ()> {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < FAILURE_WINDOW;
        if let Some((at, n)) = f.total {
            if fresh(&at) && n >= MAX_FAILURES_TOTAL {
                return Err(());
            }
        }
        match f.per_peer.get(&peer) {
            Some((at, n)) if fresh(at) && *n >= MAX_FAILURES => Err(()),
            _ => Ok(()),
        }
    }

    fn login_failed(&self, peer: Option<IpAddr>, now: Instant) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let stale = |at: Instant| now.saturating_duration_since(at) >= FAILURE_WINDOW;
        f.total = match f.total {
            Some((at, n)) if !stale(at) => Some((at, n.saturating_add(1))),
            _ => Some((now, 1)),
        };
        if f.per_peer.len() >= MAX_TRACKED && !f.per_peer.contains_key(&peer) {
            f.per_peer.retain(|_, (at, _)| !stale(*at));
            if f.per_peer.len() >= MAX_TRACKED {
                return false;
            }
        }
        let e = f.per_peer.entry(peer).or_insert((now, 0));
        if stale(e.0) {
            *e = (now, 0);
        }
        e.1 = e.1.saturating_add(1);
        true
    }

    /// A new session: its id (for the cookie).
    fn open_session(&self, now: Instant) -> Result<String, AuthError> {
        if !self.enabled {
            return Err(AuthError::Random);
        }
        let mut id = [0u8; 32];
        ring::rand::SecureRandom::fill(&self.rng, &mut id).map_err(|_| AuthError::Random)?;
        let id = hex::encode(id);
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|_, s| s.expires > now);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(
            digest(&id),
            Session {
                expires: now + SESSION_TTL,
            },
        );
        Ok(id)
    }

    fn close_session(&self, id: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.remove(&digest(id));
    }

    /// Sessions held now (for tests and metrics).
    pub fn sessions(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// Whether a bearer-token call may proceed: with a token configured, the bearer must match it
/// (constant time); without, only a loopback peer may.
pub fn bearer_allowed(
    token: Option<&SecretString>,
    bearer: Option<&str>,
    peer: Option<IpAddr>,
) -> Result<(), &'static str> {
    match (token, bearer) {
        (Some(t), Some(given)) => {
            if token_matches(t, given) {
                Ok(())
            } else {
                Err("bad bearer token")
            }
        }
        (Some(_), None) => Err("a bearer token is required (Authorization: Bearer ...)"),
        (None, _) if peer.is_some_and(|ip| ip.is_loopback()) => Ok(()),
        (None, _) => Err("only loopback clients may sync without --api-token-file"),
    }
}

/// `given` equals the token, compared in constant time whatever the lengths (HMACs of both
/// under a fresh key).
fn token_matches(token: &SecretString, given: &str) -> bool {
    let Ok(key) =
        ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
    else {
        return false;
    };
    let expected = ring::hmac::sign(&key, token.expose_secret().as_bytes());
    ring::hmac::verify(&key, given.trim().as_bytes(), expected.as_ref()).is_ok()
}

fn digest(id: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// Refuse what a browser says comes from another site: `Sec-Fetch-Site` other than
/// `same-origin`/`none`, or an `Origin` whose host is not the one addressed (`Host`, or
/// `X-Forwarded-Host` behind a proxy). Clients that send neither (curl, scripts) pass.
fn cross_site(headers: &HeaderMap) -> Result<(), Refusal> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(Refusal::forbidden("cross-site request refused"));
        }
    }
    if let Some(origin) = get("origin") {
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        let hosts = [get("host"), get("x-forwarded-host")];
        let same = origin_host.is_some_and(|o| hosts.iter().flatten().any(|h| h.trim() == o));
        if !same {
            return Err(Refusal::forbidden("cross-origin request refused"));
        }
    }
    Ok(())
}

/// Whether the browser reached us over https (through a proxy saying so).
fn secure(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    get("x-forwarded-proto").is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        || get("forwarded").is_some_and(|f| f.to_ascii_lowercase().contains("proto=https"))
}

fn set_cookie(value: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// `POST /api/login`, `POST /api/logout`, `GET /api/session`.
pub fn router(auth: Arc<Auth>) -> Router {
    Router::new()
        .route("/api/login", post(login))
        .route("/api/logout", post(logout))
        .route("/api/session", get(session))
        .layer(DefaultBodyLimit::max(LOGIN_BODY_BYTES))
        .with_state(auth)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

fn peer_of(request: &axum::extract::Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

fn error(status: StatusCode, reason: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": reason })),
    )
        .into_response()
}

async fn login(State(auth): State<Arc<Auth>>, request: axum::extract::Request) -> Response {
    let now = Instant::now();
    let peer = peer_of(&request);
    let (parts, body) = request.into_parts();
    if let Err(r) = cross_site(&parts.headers) {
        return error(r.status, r.reason);
    }
    let https = secure(&parts.headers);
    let Some(token) = auth.token() else {
        return error(
            StatusCode::NOT_FOUND,
            "no API token is configured (--api-token-file): there is nothing to log in with",
        );
    };
    if auth.login_allowed(peer, now).is_err() {
        tracing::warn!(peer = ?peer, "login refused: too many failed attempts");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, FAILURE_WINDOW.as_secs().to_string())],
            Json(json!({"error": "too many failed logins: try again later"})),
        )
            .into_response();
    }
    let request = axum::extract::Request::from_parts(parts, body);
    let form = match <Form<LoginForm> as axum::extract::FromRequest<()>>::from_request(request, &())
        .await
    {
        Ok(Form(f)) => f,
        Err(e) => return error(e.status(), "send the form field `token`"),
    };
    if !token_matches(token, &form.token) {
        auth.login_failed(peer, now);
        // Never the token given: only that it was wrong.
        tracing::warn!(peer = ?peer, "login refused: wrong token");
        return error(StatusCode::UNAUTHORIZED, "wrong token");
    }
    let id = match auth.open_session(now) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    tracing::info!(peer = ?peer, "status page: logged in");
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        // Relative to /api/login: the page, also under a proxy's path prefix.
        .header(header::LOCATION, "../")
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::SET_COOKIE,
            set_cookie(&id, SESSION_TTL.as_secs(), https),
        )
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn logout(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    let now = Instant::now();
    if let Err(r) = cross_site(&headers) {
        return error(r.status, r.reason);
    }
    let Some(id) = auth.session_of(&headers, now) else {
        return error(StatusCode::UNAUTHORIZED, "not logged in");
    };
    let csrf = headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    if !auth.csrf_ok(&format!("session:{id}"), csrf) {
        return error(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token (X-CSRF-Token)",
        );
    }
    auth.close_session(&id);
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "../")
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::SET_COOKIE, set_cookie("", 0, secure(&headers)))
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `GET /api/session` (schema `schemas/session.schema.json`).
async fn session(State(auth): State<Arc<Auth>>, headers: HeaderMap) -> Response {
    let now = Instant::now();
    let (method, user, csrf) = if let Some(id) = auth.session_of(&headers, now) {
        let csrf = auth.csrf_for(&format!("session:{id}"));
        (Some("session"), None, Some(csrf))
    } else if let Some(user) = auth.proxy_user(&headers) {
        let csrf = auth.csrf_for(&format!("proxy:{user}"));
        (Some("proxy"), Some(user), Some(csrf))
    } else {
        (None, None, None)
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({
            "authenticated": method.is_some(),
            "method": method,
            "user": user,
            "csrfToken": csrf,
            "loginAvailable": auth.token.is_some(),
            "proxyHeader": auth.proxy_header.as_ref().map(|h| h.as_str()),
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    const TOKEN: &str = "unit-token-77";

    fn auth(proxy: Option<&str>) -> Arc<Auth> {
        let token = Some(Arc::new(SecretString::from(TOKEN.to_string())));
        Arc::new(Auth::new(token, proxy.map(|h| h.parse().unwrap())).unwrap())
    }

    fn login_from(ip: [u8; 4], token: &str, https: bool) -> Request<Body> {
        let mut r = Request::post("/api/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                if https {
                    "x-forwarded-proto"
                } else {
                    "x-other"
                },
                "https",
            )
            .body(Body::from(format!("token={token}")))
            .unwrap();
        r.extensions_mut()
            .insert(ConnectInfo(std::net::SocketAddr::from((ip, 40000))));
        r
    }

    /// Failed logins are bounded per client address: the sixth attempt within the window is
    /// refused (429) even with the right token; another address is not affected.
    #[tokio::test]
    async fn failed_logins_are_rate_limited_per_address() {
        let a = auth(None);
        let app = router(a.clone());
        for _ in 0..MAX_FAILURES {
            let r = app
                .clone()
                .oneshot(login_from([10, 0, 0, 1], "guess", false));
            assert_eq!(r.await.unwrap().status(), StatusCode::UNAUTHORIZED);
        }
        let r = app.clone().oneshot(login_from([10, 0, 0, 1], TOKEN, false));
        assert_eq!(r.await.unwrap().status(), StatusCode::TOO_MANY_REQUESTS);
        let r = app.clone().oneshot(login_from([10, 0, 0, 2], TOKEN, false));
        assert_eq!(r.await.unwrap().status(), StatusCode::SEE_OTHER);
        assert_eq!(a.sessions(), 1);
    }

    /// The cookie: a random id (not the token), HttpOnly, SameSite=Strict; Secure when the
    /// proxy says the browser came over https.
    #[tokio::test]
    async fn the_session_cookie_is_httponly_strict_and_not_the_token() {
        let app = router(auth(None));
        for https in [false, true] {
            let r = app
                .clone()
                .oneshot(login_from([127, 0, 0, 1], TOKEN, https))
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            let cookie = r.headers()[header::SET_COOKIE]
                .to_str()
                .unwrap()
                .to_string();
            assert!(cookie.starts_with("baton_session="), "{cookie}");
            assert!(
                cookie.contains("; HttpOnly") && cookie.contains("; SameSite=Strict"),
                "{cookie}"
            );
            assert_eq!(cookie.contains("; Secure"), https, "{cookie}");
            assert!(!cookie.contains(TOKEN), "{cookie}");
        }
    }

    /// At most MAX_SESSIONS sessions are held; a session past its expiry is refused and
    /// dropped.
    #[test]
    fn sessions_are_bounded_and_expire() {
        let a = auth(None);
        let t0 = Instant::now();
        let first = a.open_session(t0).unwrap();
        for _ in 0..MAX_SESSIONS {
            a.open_session(t0 + Duration::from_secs(1)).unwrap();
        }
        assert_eq!(a.sessions(), MAX_SESSIONS);
        let mut headers = HeaderMap::new();
        let cookie = format!("{COOKIE}={first}");
        headers.insert(header::COOKIE, cookie.parse().unwrap());
        assert_eq!(a.session_of(&headers, t0), None, "the oldest was ended");
        let last = a.open_session(t0).unwrap();
        let cookie = format!("{COOKIE}={last}");
        headers.insert(header::COOKIE, cookie.parse().unwrap());
        assert!(a.session_of(&headers, t0).is_some());
        assert_eq!(a.session_of(&headers, t0 + SESSION_TTL), None, "expired");
    }

    /// What a POST needs: the bearer as before; a session or proxy user with the CSRF token,
    /// from the same origin; nothing else once a token or proxy header is configured.
    #[test]
    fn actions_need_the_bearer_or_a_login_with_its_csrf_token() {
        let now = Instant::now();
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(HeaderName::try_from(*k).unwrap(), v.parse().unwrap());
            }
            m
        };
        let a = auth(None);
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(
            a.authorize(&h(&[("authorization", &bearer)]), None, now),
            Ok(Principal::Bearer)
        );
        let refused = a.authorize(&h(&[("authorization", "Bearer nope")]), local, now);
        assert_eq!(refused.unwrap_err().status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.authorize(&h(&[]), local, now).unwrap_err().status,
            StatusCode::UNAUTHORIZED,
            "a token is configured: loopback is not enough"
        );
        let id = a.open_session(now).unwrap();
        let cookie = format!("{COOKIE}={id}");
        let csrf = a.csrf_for(&format!("session:{id}"));
        assert_eq!(
            a.authorize(&h(&[("cookie", &cookie)]), local, now)
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            a.authorize(&h(&[("cookie", &cookie), (CSRF_HEADER, &csrf)]), local, now),
            Ok(Principal::Session)
        );
        let evil = h(&[
            ("cookie", &cookie),
            (CSRF_HEADER, &csrf),
            ("host", "baton:8088"),
            ("origin", "https://evil.example"),
        ]);
        assert_eq!(
            a.authorize(&evil, local, now).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let same = h(&[
            ("cookie", &cookie),
            (CSRF_HEADER, &csrf),
            ("host", "baton:8088"),
            ("origin", "http://baton:8088"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(a.authorize(&same, local, now), Ok(Principal::Session));
        // Another session's CSRF token does not fit.
        let other = a.open_session(now).unwrap();
        let wrong = a.csrf_for(&format!("session:{other}"));
        let r = a.authorize(
            &h(&[("cookie", &cookie), (CSRF_HEADER, &wrong)]),
            local,
            now,
        );
        assert_eq!(r.unwrap_err().status, StatusCode::FORBIDDEN);

        // The proxy header: its user, with that user's CSRF token; without the header, not
        // even loopback may act.
        let p = auth(Some("x-forwarded-user"));
        let csrf = p.csrf_for("proxy:alice");
        assert_eq!(
            p.authorize(
                &h(&[("x-forwarded-user", "alice"), (CSRF_HEADER, &csrf)]),
                local,
                now
            ),
            Ok(Principal::Proxy("alice".into()))
        );
        let bob = h(&[("x-forwarded-user", "bob"), (CSRF_HEADER, &csrf)]);
        assert_eq!(
            p.authorize(&bob, local, now).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        let open = Arc::new(Auth::new(None, Some("x-forwarded-user".parse().unwrap())).unwrap());
        assert_eq!(
            open.authorize(&h(&[]), local, now).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        // Basic credentials a browser resends on its own (through the proxy) are no login.
        let basic = h(&[
            ("authorization", "Basic YWxpY2U6cHc="),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(open.authorize(&basic, local, now).is_err());
        let basic = h(&[("authorization", "Basic YWxpY2U6cHc=")]);
        assert!(open.authorize(&basic, local, now).is_err());
        // No token, no proxy header: loopback clients as before, but not a cross-site page.
        let plain = Auth::new(None, None).unwrap();
        assert_eq!(
            plain.authorize(&h(&[]), local, now),
            Ok(Principal::Loopback)
        );
        let cross = h(&[("sec-fetch-site", "cross-site")]);
        assert_eq!(
            plain.authorize(&cross, local, now).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
    }
}
