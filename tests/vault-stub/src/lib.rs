//! A Vault API stub for tests: an axum server that answers with the response shapes of
//! HashiCorp Vault's documented HTTP API.
//!
//! The Vault of the test suite is OpenBao (`tests/openbao`, a real Vault-API server). The stub
//! stays only for what OpenBao cannot be made to do here.
//!
//! Dynamic database credentials and their leases no longer need it: OpenBao's database engine
//! over a throwaway PostgreSQL (`openbao_harness::postgres`) serves them, short leases (2-5 s)
//! and rotations at `max_ttl` included (`sidecar/tests/it/openbao/database.rs`, `regression.rs`,
//! `check.rs`); a slow answer there is a database that is slow (a creation statement waits for
//! an advisory lock the test holds).
//!
//! The tests that still need it, and why:
//!
//! - 5xx answers on a count of requests ([`StubHandle::fail_next`], `Fault::Internal`):
//!   `stub.rs::sealed_and_5xx_are_retried`.
//! - Requests a sealed server answers with 503, seen in the request log (OpenBao's audit log
//!   does not record them): `regression.rs::max_wait_bounds_the_whole_start`.
//! - JWT login (OpenBao needs an issuer's keys and signed tokens): `stub.rs::jwt_login`.
//! - The `X-Vault-Namespace` header of every request, recorded in the request log (OpenBao's
//!   namespaces would not reveal a request that also works without the header):
//!   `namespace.rs::the_namespace_header_is_sent_on_every_request`.
//!
//! - End-to-end tests (everything else there runs on OpenBao): `tests/it/secret_zero.rs`
//!   `a_vault_that_ignores_wrapping_is_refused_not_passed_on` (a server that answers a
//!   secret-id request sent with `X-Vault-Wrap-TTL` with a plain secret id: Vault always wraps)
//!   and `secret_zero_load` (the stub's half of the mass-start benchmark: Baton's own cost with a
//!   Vault that costs nothing, beside `secret_zero_load_openbao`); `tests/it/dev_stop.rs`
//!   `a_deleted_task_under_baton_env_revokes_its_token_and_leaves_no_process`
//!   (`auth/token/revoke-self` held unanswered until the test has seen it).
//!
//! Malformed and lean bodies (RustyVault's) are covered by unit tests of the client
//! (`sidecar/src/vault.rs`) and the optional `rvault.rs`.
//!
//! Tests run it in process with [`spawn`] and seed/inspect it through [`StubHandle`];
//! the `vault-stub` binary runs the same server for benchmarks and manual use.
//!
//! Routing is one function ([`route`]) over `(method, path segments)`: adding an
//! endpoint (e.g. `sys/policies/acl/<name>`, `auth/approle/role/<name>`) is one match
//! arm plus a handler on [`State`]. Every request is logged ([`StubHandle::requests`]).
//!
//! Policies are simplified: a token is either root or carries a list of allowed path
//! prefixes; any other path answers 403 `{"errors":["permission denied"]}`. ACL policies
//! written over the API (`sys/policies/acl/<name>`) are stored as text; an AppRole role
//! created over the API gets, at login, the `path "..."` prefixes of its `token_policies`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Map, Value};

/// How the stub starts.
#[derive(Debug, Clone)]
pub struct StubConfig {
    /// Address to bind; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The root token (all paths allowed, never expires).
    pub root_token: String,
}

impl Default for StubConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            root_token: "root".into(),
        }
    }
}

/// A fault to inject into the next N requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 503 `{"errors":["Vault is sealed"]}`.
    Sealed,
    /// 500 `{"errors":["internal error"]}`.
    Internal,
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    Root,
    /// Allowed path prefixes (e.g. `secret/data/app`, `database/creds/`).
    Paths(Vec<String>),
}

impl Policy {
    pub fn paths<I: IntoIterator<Item = S>, S: Into<String>>(prefixes: I) -> Self {
        Self::Paths(prefixes.into_iter().map(Into::into).collect())
    }

    fn allows(&self, path: &str) -> bool {
        match self {
            Self::Root => true,
            Self::Paths(prefixes) => prefixes.iter().any(|p| path.starts_with(p.as_str())),
        }
    }
}

/// Settings of a token, an AppRole role, a JWT role.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub policy: Policy,
    /// Zero = never expires.
    pub ttl: Duration,
    /// Zero = no maximum.
    pub max_ttl: Duration,
    pub renewable: bool,
}

impl TokenSpec {
    pub fn new(policy: Policy, ttl: Duration) -> Self {
        Self {
            policy,
            ttl,
            max_ttl: Duration::ZERO,
            renewable: true,
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    accessor: String,
    spec: TokenSpec,
    created: Instant,
    expires: Option<Instant>,
    revoked: bool,
    path: String,
}

impl Token {
    fn valid(&self, now: Instant) -> bool {
        !self.revoked && self.expires.is_none_or(|e| now < e)
    }
    fn ttl_left(&self, now: Instant) -> u64 {
        self.expires
            .map_or(0, |e| e.saturating_duration_since(now).as_secs())
    }
}

#[derive(Debug, Clone)]
enum Mount {
    Kv1(BTreeMap<String, Map<String, Value>>),
    Kv2(BTreeMap<String, Vec<Kv2Version>>),
    Database(BTreeMap<String, DbRole>),
}

#[derive(Debug, Clone)]
struct Kv2Version {
    data: Map<String, Value>,
    created: String,
}

/// A database secrets-engine role: how long its credentials live.
#[derive(Debug, Clone, Copy)]
pub struct DbRole {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

#[derive(Debug, Clone)]
struct Lease {
    token: String,
    issued: Instant,
    expires: Instant,
    max_expires: Instant,
    revoked: bool,
    renewable: bool,
}

#[derive(Debug, Clone)]
struct AppRole {
    role_id: String,
    secret_id_num_uses: u32,
    token: TokenSpec,
    /// Seconds; zero = secret ids never expire.
    secret_id_ttl: u64,
    /// Set when the role was written over the API: resolved to paths at login.
    token_policies: Option<Vec<String>>,
    /// The role as written over the API (what GET returns).
    settings: Map<String, Value>,
}

#[derive(Debug, Clone)]
struct SecretIdEntry {
    role: String,
    accessor: String,
    uses_left: Option<u32>,
    expires: Option<Instant>,
}

#[derive(Debug, Clone)]
struct JwtRole {
    jwt: String,
    token: TokenSpec,
}

#[derive(Debug, Clone)]
struct Wrapped {
    response: Value,
    creation_path: String,
    creation_time: String,
    ttl: Duration,
    expires: Instant,
}

/// The stub's whole state, behind one mutex.
#[derive(Debug, Default)]
pub struct State {
    tokens: HashMap<String, Token>,
    mounts: BTreeMap<String, Mount>,
    approles: BTreeMap<String, AppRole>,
    secret_ids: HashMap<String, SecretIdEntry>,
    jwt_roles: BTreeMap<String, JwtRole>,
    wrapped: HashMap<String, Wrapped>,
    /// ACL policies by name, as written.
    policies: BTreeMap<String, String>,
    /// Metadata of every secret id generated over the API, in order.
    secret_id_meta: Vec<Value>,
    /// Simulate a Vault-compatible server that ignores `X-Vault-Wrap-TTL`.
    ignore_wrap: bool,
    leases: BTreeMap<String, Lease>,
    faults: Vec<Fault>,
    log: Vec<Request>,
    /// Requests whose path starts with the prefix wait until the receiver says released.
    holds: Vec<(String, tokio::sync::watch::Receiver<bool>)>,
    creds_issued: u64,
}

/// One request as the stub saw it (test instrumentation: it holds tokens in clear).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Without `/v1/` and the query.
    pub path: String,
    /// `X-Vault-Token`.
    pub token: Option<String>,
    /// `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// `lease_id` of the JSON body (lease renew/revoke).
    pub lease_id: Option<String>,
}

/// Holds requests to a path prefix until released (or dropped): see [`StubHandle::hold`].
pub struct Hold(tokio::sync::watch::Sender<bool>);

impl Hold {
    pub fn release(self) {}
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A running stub.
pub struct StubHandle {
    pub addr: SocketAddr,
    root_token: String,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the stub with mounts `secret/` (KV v2, Vault's dev-server default), `kv1/`
/// (KV v1) and `database/`, and auth methods `token/`, `approle/` and `jwt/`.
pub async fn spawn(config: StubConfig) -> std::io::Result<StubHandle> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    let mut state = State::default();
    state
        .mounts
        .insert("secret/".into(), Mount::Kv2(BTreeMap::new()));
    state
        .mounts
        .insert("kv1/".into(), Mount::Kv1(BTreeMap::new()));
    state
        .mounts
        .insert("database/".into(), Mount::Database(BTreeMap::new()));
    state.insert_token(
        config.root_token.clone(),
        TokenSpec::new(Policy::Root, Duration::ZERO),
        "auth/token/root",
    );
    let state = Arc::new(Mutex::new(state));
    let app = Router::new().fallback(handle).with_state(state.clone());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(StubHandle {
        addr,
        root_token: config.root_token,
        state,
        shutdown: Some(tx),
        task: Some(task),
    })
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panicking test thread must not wedge the stub for the others.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl StubHandle {
    /// `http://127.0.0.1:PORT`, for `VAULT_ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// Every request so far as (METHOD, path without `/v1/` and query).
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.state)
            .log
            .iter()
            .map(|r| (r.method.clone(), r.path.clone()))
            .collect()
    }

    /// Every request so far with the token, namespace and lease id it carried.
    pub fn request_log(&self) -> Vec<Request> {
        lock(&self.state).log.clone()
    }

    /// From now on, requests whose path starts with `prefix` are logged at once but
    /// answered only when the returned [`Hold`] is released or dropped (to stage races).
    pub fn hold(&self, prefix: &str) -> Hold {
        let (tx, rx) = tokio::sync::watch::channel(false);
        lock(&self.state).holds.push((prefix.to_owned(), rx));
        Hold(tx)
    }

    pub fn clear_requests(&self) {
        lock(&self.state).log.clear();
    }

    /// The next `n` requests fail with `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        lock(&self.state)
            .faults
            .extend(std::iter::repeat_n(fault, n));
    }

    /// Writes a KV v1 secret at `path` (e.g. `kv1/app`).
    pub fn put_kv1(&self, path: &str, data: Value) {
        let mut s = lock(&self.state);
        if let Some((mount, rest)) = s.mount_of(path) {
            if let Some(Mount::Kv1(map)) = s.mounts.get_mut(&mount) {
                map.insert(rest, as_object(data));
            }
        }
    }

    /// Writes a new version of a KV v2 secret at `path` (e.g. `secret/app`, without
    /// `data/`); returns the version number.
    pub fn put_kv2(&self, path: &str, data: Value) -> u64 {
        let mut s = lock(&self.state);
        let Some((mount, rest)) = s.mount_of(path) else {
            return 0;
        };
        match s.mounts.get_mut(&mount) {
            Some(Mount::Kv2(map)) => {
                let versions = map.entry(rest).or_default();
                versions.push(Kv2Version {
                    data: as_object(data),
                    created: rfc3339_now(),
                });
                versions.len() as u64
            }
            _ => 0,
        }
    }

    /// Adds a database role under `database/`.
    pub fn add_db_role(&self, name: &str, role: DbRole) {
        let mut s = lock(&self.state);
        if let Some(Mount::Database(roles)) = s.mounts.get_mut("database/") {
            roles.insert(name.into(), role);
        }
    }

    /// Creates a token; returns it.
    pub fn create_token(&self, spec: TokenSpec) -> String {
        let token = new_token();
        lock(&self.state).insert_token(token.clone(), spec, "auth/token/create");
        token
    }

    /// Adds an AppRole role; returns its role id.
    pub fn add_approle(&self, name: &str, secret_id_num_uses: u32, token: TokenSpec) -> String {
        let role_id = uuid::Uuid::new_v4().to_string();
        lock(&self.state).approles.insert(
            name.into(),
            AppRole {
                role_id: role_id.clone(),
                secret_id_num_uses,
                token,
                secret_id_ttl: 0,
                token_policies: None,
                settings: Map::new(),
            },
        );
        role_id
    }

    /// Generates a secret id for `role` (as `POST auth/approle/role/<r>/secret-id`).
    pub fn secret_id(&self, role: &str) -> Option<String> {
        let mut s = lock(&self.state);
        s.generate_secret_id(role)
            .and_then(|v| v["secret_id"].as_str().map(str::to_owned))
    }

    /// Wraps `response` as if it had been returned by `creation_path`; returns the
    /// wrapping token.
    pub fn wrap(&self, response: Value, creation_path: &str, ttl: Duration) -> String {
        let mut s = lock(&self.state);
        s.wrap(response, creation_path, ttl)["wrap_info"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// An ACL policy's text, as written over the API.
    pub fn policy(&self, name: &str) -> Option<String> {
        lock(&self.state).policies.get(name).cloned()
    }

    /// Writes an ACL policy (as `PUT sys/policies/acl/<name>`).
    pub fn put_policy(&self, name: &str, text: &str) {
        lock(&self.state).policies.insert(name.into(), text.into());
    }

    /// Whether an AppRole role exists.
    pub fn has_approle(&self, name: &str) -> bool {
        lock(&self.state).approles.contains_key(name)
    }

    /// The metadata of every secret id generated over the API, in order.
    pub fn secret_id_metadata(&self) -> Vec<Value> {
        lock(&self.state).secret_id_meta.clone()
    }

    /// `true`: answer as a server that ignores `X-Vault-Wrap-TTL` (plain responses).
    /// Secret ids of `role` that could still log in (not used up, expired or destroyed).
    pub fn live_secret_ids(&self, role: &str) -> usize {
        let s = lock(&self.state);
        let now = Instant::now();
        s.secret_ids
            .values()
            .filter(|e| e.role == role && e.uses_left != Some(0))
            .filter(|e| e.expires.is_none_or(|t| t > now))
            .count()
    }

    pub fn ignore_wrapping(&self, ignore: bool) {
        lock(&self.state).ignore_wrap = ignore;
    }

    /// A JWT role that accepts exactly `jwt`.
    pub fn add_jwt_role(&self, role: &str, jwt: &str, token: TokenSpec) {
        lock(&self.state).jwt_roles.insert(
            role.into(),
            JwtRole {
                jwt: jwt.into(),
                token,
            },
        );
    }

    /// Whether `token` still works (not expired or revoked).
    pub fn token_valid(&self, token: &str) -> bool {
        let s = lock(&self.state);
        s.tokens.get(token).is_some_and(|t| t.valid(Instant::now()))
    }

    /// Tokens issued by logins (not root, not `create_token`), in no particular order.
    pub fn login_tokens(&self) -> Vec<String> {
        let s = lock(&self.state);
        s.tokens
            .iter()
            .filter(|(_, t)| t.path.ends_with("/login"))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// (lease id, revoked) of every lease issued.
    pub fn leases(&self) -> Vec<(String, bool)> {
        let s = lock(&self.state);
        let now = Instant::now();
        s.leases
            .iter()
            .map(|(id, l)| (id.clone(), l.revoked || now >= l.expires))
            .collect()
    }

    /// Ids of the leases revoked (one by one, or with the token that created them), not
    /// counting those that merely expired.
    pub fn revoked_leases(&self) -> Vec<String> {
        let s = lock(&self.state);
        s.leases
            .iter()
            .filter(|(_, l)| l.revoked)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many database credentials were issued.
    pub fn creds_issued(&self) -> u64 {
        lock(&self.state).creds_issued
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for StubHandle {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn as_object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn new_token() -> String {
    format!("hvs.{}", uuid::Uuid::new_v4().simple())
}

fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Good enough for a stub: a fixed-format UTC timestamp from the epoch seconds.
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let (y, mo, d) = civil_from_days(days as i64);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A handler's answer before wrapping: status and optional JSON body.
type Reply = (StatusCode, Option<Value>);

fn ok(v: Value) -> Reply {
    (StatusCode::OK, Some(v))
}

fn no_content() -> Reply {
    (StatusCode::NO_CONTENT, None)
}

/// Vault's error body: https://developer.hashicorp.com/vault/api-docs#error-response
fn err(status: StatusCode, msg: &str) -> Reply {
    (status, Some(json!({ "errors": [msg] })))
}

fn denied() -> Reply {
    err(StatusCode::FORBIDDEN, "permission denied")
}

fn not_found() -> Reply {
    (StatusCode::NOT_FOUND, Some(json!({ "errors": [] })))
}

/// The response envelope every endpoint uses.
fn envelope(data: Option<Value>, auth: Option<Value>, lease: Option<(&str, u64, bool)>) -> Value {
    let (lease_id, lease_duration, renewable) = lease.unwrap_or(("", 0, false));
    json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "lease_id": lease_id,
        "renewable": renewable,
        "lease_duration": lease_duration,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": auth,
        "mount_type": "",
    })
}

async fn handle(
    AxState(state): AxState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path()
        .strip_prefix("/v1/")
        .unwrap_or(uri.path())
        .to_owned();
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let token = headers
        .get("x-vault-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let wrap_ttl = headers
        .get("x-vault-wrap-ttl")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_ttl);
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return into_response(err(StatusCode::BAD_REQUEST, "failed to parse JSON input"))
            }
        }
    };
    let held = {
        let mut s = lock(&state);
        s.log.push(Request {
            method: method.to_string(),
            path: path.clone(),
            token: token.clone(),
            namespace: headers
                .get("x-vault-namespace")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            lease_id: body["lease_id"].as_str().map(str::to_owned),
        });
        s.holds
            .iter()
            .find(|(prefix, rx)| path.starts_with(prefix.as_str()) && !*rx.borrow())
            .map(|(_, rx)| rx.clone())
    };
    if let Some(mut rx) = held {
        let _ = rx.wait_for(|released| *released).await;
    }
    let mut s = lock(&state);
    if !s.faults.is_empty() {
        let fault = s.faults.remove(0);
        return into_response(match fault {
            Fault::Sealed => err(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed"),
            Fault::Internal => err(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
        });
    }
    let reply = route(&mut s, &method, &path, &query, token.as_deref(), &body);
    // Response wrapping: https://developer.hashicorp.com/vault/docs/concepts/response-wrapping
    let wrap_ttl = wrap_ttl.filter(|_| !s.ignore_wrap);
    let reply = match (wrap_ttl, reply) {
        (Some(ttl), (StatusCode::OK, Some(v))) => ok(s.wrap(v, &path, ttl)),
        (_, r) => r,
    };
    into_response(reply)
}

fn into_response((status, body): Reply) -> Response {
    match body {
        Some(v) => (status, axum::Json(v)).into_response(),
        None => status.into_response(),
    }
}

/// `"90s"`, `"5m"`, `"1h"` or plain seconds.
fn parse_ttl(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    };
    Some(Duration::from_secs(secs))
}

fn secs(v: &Value) -> Option<Duration> {
    v.as_u64()
        .map(Duration::from_secs)
        .or_else(|| v.as_str().and_then(parse_ttl))
}

/// Paths any valid token may use (Vault's `default` policy grants the self endpoints,
/// lease renewal and the mount preflight).
fn always_allowed(path: &str) -> bool {
    matches!(
        path,
        "auth/token/lookup-self"
            | "auth/token/renew-self"
            | "auth/token/revoke-self"
            | "sys/leases/renew"
    ) || path.starts_with("sys/internal/ui/mounts/")
}

/// The whole API surface. Unauthenticated endpoints first, then the token check.
pub fn route(
    s: &mut State,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    token: Option<&str>,
    body: &Value,
) -> Reply {
    let segs: Vec<&str> = path.split('/').collect();
    let now = Instant::now();
    let post = *method == Method::POST || *method == Method::PUT;
    // Logins and wrapping lookup/unwrap carry their own credentials.
    match (post, segs.as_slice()) {
        // https://developer.hashicorp.com/vault/api-docs/auth/approle#login-with-approle
        (true, ["auth", "approle", "login"]) => return s.approle_login(body),
        // https://developer.hashicorp.com/vault/api-docs/auth/jwt#jwt-login
        (true, ["auth", "jwt", "login"]) => return s.jwt_login(body),
        // https://developer.hashicorp.com/vault/api-docs/system/wrapping-lookup
        (true, ["sys", "wrapping", "lookup"]) => {
            let t = body["token"].as_str().or(token).unwrap_or_default();
            return s.wrapping_lookup(t, now);
        }
        // https://developer.hashicorp.com/vault/api-docs/system/wrapping-unwrap
        (true, ["sys", "wrapping", "unwrap"]) => {
            let t = body["token"].as_str().or(token).unwrap_or_default();
            return s.unwrap(t, now);
        }
        _ => {}
    }
    let Some(token) = token else {
        return err(StatusCode::BAD_REQUEST, "missing client token");
    };
    let Some(entry) = s.tokens.get(token).filter(|t| t.valid(now)).cloned() else {
        return denied();
    };
    if !always_allowed(path) && !entry.spec.policy.allows(path) {
        return denied();
    }
    match (method.as_str(), segs.as_slice()) {
        // https://developer.hashicorp.com/vault/api-docs/auth/token#lookup-a-token-self
        ("GET", ["auth", "token", "lookup-self"]) => ok(envelope(
            Some(json!({
                "accessor": entry.accessor,
                "creation_time": 0,
                "creation_ttl": entry.spec.ttl.as_secs(),
                "display_name": "token",
                "entity_id": "",
                "expire_time": null,
                "explicit_max_ttl": 0,
                "id": token,
                "meta": null,
                "num_uses": 0,
                "orphan": true,
                "path": entry.path,
                "policies": policy_names(&entry.spec.policy),
                "renewable": entry.spec.renewable && !entry.spec.ttl.is_zero(),
                "ttl": entry.ttl_left(now),
                "type": "service",
            })),
            None,
            None,
        )),
        // https://developer.hashicorp.com/vault/api-docs/auth/token#renew-a-token-self
        ("POST" | "PUT", ["auth", "token", "renew-self"]) => s.renew_self(token, body, now),
        // https://developer.hashicorp.com/vault/api-docs/auth/token#revoke-a-token-self
        ("POST" | "PUT", ["auth", "token", "revoke-self"]) => {
            s.revoke_token(token);
            no_content()
        }
        // https://developer.hashicorp.com/vault/api-docs/auth/approle#generate-new-secret-id
        ("POST" | "PUT", ["auth", "approle", "role", role, "secret-id"]) => {
            // `metadata` is a JSON-encoded string of key-value pairs.
            let meta = match body["metadata"].as_str() {
                None | Some("") => json!({}),
                Some(text) => match serde_json::from_str::<Value>(text) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => {
                        return err(
                            StatusCode::BAD_REQUEST,
                            "failed to parse metadata: not a JSON object of strings",
                        )
                    }
                },
            };
            match s.generate_secret_id(role) {
                Some(data) => {
                    s.secret_id_meta.push(meta);
                    ok(envelope(Some(data), None, None))
                }
                None => err(StatusCode::BAD_REQUEST, "role not found"),
            }
        }
        // https://developer.hashicorp.com/vault/api-docs/auth/approle#destroy-approle-secret-id
        ("POST" | "PUT", ["auth", "approle", "role", _, "secret-id", "destroy"]) => {
            let id = body["secret_id"].as_str().unwrap_or_default();
            s.secret_ids.remove(id);
            no_content()
        }
        // https://developer.hashicorp.com/vault/api-docs/auth/approle#destroy-approle-secret-id-accessor
        ("POST" | "PUT", ["auth", "approle", "role", role, "secret-id-accessor", "destroy"]) => {
            let acc = body["secret_id_accessor"].as_str().unwrap_or_default();
            s.secret_ids
                .retain(|_, e| !(e.role == *role && e.accessor == acc));
            no_content()
        }
        // https://developer.hashicorp.com/vault/api-docs/auth/approle#list-roles
        ("LIST", ["auth", "approle", "role"]) | ("GET", ["auth", "approle", "role"])
            if method.as_str() == "LIST"
                || query.get("list").map(String::as_str) == Some("true") =>
        {
            list_reply(s.approles.keys())
        }
        // https://developer.hashicorp.com/vault/api-docs/auth/approle#read-approle
        ("GET", ["auth", "approle", "role", role]) => match s.approles.get(*role) {
            Some(r) => ok(envelope(
                Some(Value::Object(r.settings.clone())),
                None,
                None,
            )),
            None => not_found(),
        },
        // https://developer.hashicorp.com/vault/api-docs/auth/approle#create-update-approle
        ("POST" | "PUT", ["auth", "approle", "role", role]) => s.write_approle(role, body),
        // https://developer.hashicorp.com/vault/api-docs/auth/approle#delete-approle
        ("DELETE", ["auth", "approle", "role", role]) => {
            let role = (*role).to_owned();
            s.approles.remove(&role);
            s.secret_ids.retain(|_, e| e.role != role);
            no_content()
        }
        // https://developer.hashicorp.com/vault/api-docs/system/policies#list-acl-policies
        ("LIST", ["sys", "policies", "acl"]) | ("GET", ["sys", "policies", "acl"])
            if method.as_str() == "LIST"
                || query.get("list").map(String::as_str) == Some("true") =>
        {
            list_reply(s.policies.keys())
        }
        // https://developer.hashicorp.com/vault/api-docs/system/policies#read-acl-policy
        ("GET", ["sys", "policies", "acl", name]) => match s.policies.get(*name) {
            Some(text) => ok(envelope(
                Some(json!({ "name": name, "policy": text })),
                None,
                None,
            )),
            None => not_found(),
        },
        // https://developer.hashicorp.com/vault/api-docs/system/policies#create-update-acl-policy
        ("POST" | "PUT", ["sys", "policies", "acl", name]) => match body["policy"].as_str() {
            Some(text) if !text.trim().is_empty() => {
                s.policies.insert((*name).to_owned(), text.to_owned());
                no_content()
            }
            _ => err(
                StatusCode::BAD_REQUEST,
                "'policy' parameter not supplied or empty",
            ),
        },
        // https://developer.hashicorp.com/vault/api-docs/system/policies#delete-acl-policy
        ("DELETE", ["sys", "policies", "acl", name]) => {
            s.policies.remove(*name);
            no_content()
        }
        // https://developer.hashicorp.com/vault/api-docs/auth/approle#read-approle-role-id
        ("GET", ["auth", "approle", "role", role, "role-id"]) => match s.approles.get(*role) {
            Some(r) => ok(envelope(Some(json!({ "role_id": r.role_id })), None, None)),
            None => not_found(),
        },
        // https://developer.hashicorp.com/vault/api-docs/system/leases#renew-lease
        ("PUT" | "POST", ["sys", "leases", "renew"]) => s.renew_lease(body, now),
        // https://developer.hashicorp.com/vault/api-docs/system/leases#revoke-lease
        ("PUT" | "POST", ["sys", "leases", "revoke"]) => {
            let id = body["lease_id"].as_str().unwrap_or_default();
            match s.leases.get_mut(id) {
                Some(l) => {
                    l.revoked = true;
                    no_content()
                }
                None => err(StatusCode::BAD_REQUEST, "invalid lease ID"),
            }
        }
        // https://developer.hashicorp.com/vault/api-docs/system/internal-ui-mounts#get-single-mount-details
        ("GET", ["sys", "internal", "ui", "mounts", ..]) => {
            let rest = path.strip_prefix("sys/internal/ui/mounts/").unwrap_or("");
            s.mount_details(rest)
        }
        // https://developer.hashicorp.com/vault/api-docs/system/mounts#list-mounted-secrets-engines
        ("GET", ["sys", "mounts"]) => s.list_mounts(),
        // https://developer.hashicorp.com/vault/api-docs/system/mounts#enable-secrets-engine
        ("POST", ["sys", "mounts", ..]) => {
            let mount = format!(
                "{}/",
                path.strip_prefix("sys/mounts/")
                    .unwrap_or("")
                    .trim_end_matches('/')
            );
            let m = match (body["type"].as_str(), body["options"]["version"].as_str()) {
                (Some("kv"), Some("2")) | (Some("kv-v2"), _) => Mount::Kv2(BTreeMap::new()),
                (Some("kv"), _) => Mount::Kv1(BTreeMap::new()),
                (Some("database"), _) => Mount::Database(BTreeMap::new()),
                _ => {
                    return err(
                        StatusCode::BAD_REQUEST,
                        "unsupported mount type in the stub",
                    )
                }
            };
            s.mounts.insert(mount, m);
            no_content()
        }
        _ => s.logical(method, path, query, token, body, now),
    }
}

/// A LIST answer; Vault answers 404 when there is nothing to list.
fn list_reply<'a>(keys: impl Iterator<Item = &'a String>) -> Reply {
    let keys: Vec<&String> = keys.collect();
    if keys.is_empty() {
        return not_found();
    }
    ok(envelope(Some(json!({ "keys": keys })), None, None))
}

/// The `path "<p>"` stanzas of an HCL policy, as prefixes (a trailing `*` glob is dropped).
fn policy_prefixes(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("path \""))
        .filter_map(|rest| {
            rest.split_once('"')
                .map(|(p, _)| p.trim_end_matches('*').to_owned())
        })
        .collect()
}

fn policy_names(p: &Policy) -> Vec<&'static str> {
    match p {
        Policy::Root => vec!["root"],
        Policy::Paths(_) => vec!["default", "app"],
    }
}

impl State {
    fn insert_token(&mut self, token: String, spec: TokenSpec, path: &str) -> Value {
        let now = Instant::now();
        let accessor = uuid::Uuid::new_v4().simple().to_string()[..24].to_owned();
        let expires = (!spec.ttl.is_zero()).then(|| now + spec.ttl);
        let auth = json!({
            "client_token": token,
            "accessor": accessor,
            "policies": policy_names(&spec.policy),
            "token_policies": policy_names(&spec.policy),
            "metadata": null,
            "lease_duration": spec.ttl.as_secs(),
            "renewable": spec.renewable && expires.is_some(),
            "entity_id": "",
            "token_type": "service",
            "orphan": true,
        });
        self.tokens.insert(
            token,
            Token {
                accessor,
                spec,
                created: now,
                expires,
                revoked: false,
                path: path.into(),
            },
        );
        auth
    }

    fn login(&mut self, spec: TokenSpec, path: &str) -> Reply {
        let auth = self.insert_token(new_token(), spec, path);
        ok(envelope(None, Some(auth), None))
    }

    /// Create or update a role over the API; the role id is kept on update, taken from
    /// `role_id` or drawn at random on create.
    fn write_approle(&mut self, role: &str, body: &Value) -> Reply {
        let Some(fields) = body.as_object() else {
            return err(StatusCode::BAD_REQUEST, "missing body");
        };
        let num = |k: &str| {
            fields.get(k).and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(parse_ttl).map(|d| d.as_secs()))
            })
        };
        let existing = self.approles.get(role).cloned();
        let mut settings = existing
            .as_ref()
            .map(|r| r.settings.clone())
            .unwrap_or_else(|| {
                let mut m = Map::new();
                for (k, v) in [
                    ("bind_secret_id", json!(true)),
                    ("secret_id_bound_cidrs", json!([])),
                    ("secret_id_num_uses", json!(0)),
                    ("secret_id_ttl", json!(0)),
                    ("local_secret_ids", json!(false)),
                    ("token_policies", json!([])),
                    ("policies", json!([])),
                    ("token_ttl", json!(0)),
                    ("token_max_ttl", json!(0)),
                    ("token_num_uses", json!(0)),
                    ("token_type", json!("default")),
                    ("period", json!(0)),
                ] {
                    m.insert(k.into(), v);
                }
                m
            });
        for k in [
            "secret_id_num_uses",
            "secret_id_ttl",
            "token_ttl",
            "token_max_ttl",
        ] {
            if fields.contains_key(k) {
                settings.insert(k.into(), json!(num(k).unwrap_or(0)));
            }
        }
        if let Some(p) = fields
            .get("token_policies")
            .or_else(|| fields.get("policies"))
        {
            let list: Vec<String> = match p {
                Value::Array(a) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Value::String(s) => s
                    .split(',')
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                    .collect(),
                _ => Vec::new(),
            };
            settings.insert("token_policies".into(), json!(list));
            settings.insert("policies".into(), json!(list));
        }
        let role_id = match (&existing, fields.get("role_id").and_then(Value::as_str)) {
            (_, Some(id)) if !id.is_empty() => id.to_owned(),
            (Some(r), _) => r.role_id.clone(),
            (None, _) => uuid::Uuid::new_v4().to_string(),
        };
        let secs_of = |k: &str| settings.get(k).and_then(Value::as_u64).unwrap_or(0);
        let token = TokenSpec {
            policy: Policy::Paths(Vec::new()),
            ttl: Duration::from_secs(secs_of("token_ttl")),
            max_ttl: Duration::from_secs(secs_of("token_max_ttl")),
            renewable: true,
        };
        let policies: Vec<String> = settings["token_policies"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        self.approles.insert(
            role.into(),
            AppRole {
                role_id,
                secret_id_num_uses: u32::try_from(secs_of("secret_id_num_uses"))
                    .unwrap_or(u32::MAX),
                secret_id_ttl: secs_of("secret_id_ttl"),
                token,
                token_policies: Some(policies),
                settings,
            },
        );
        no_content()
    }

    fn approle_login(&mut self, body: &Value) -> Reply {
        let role_id = body["role_id"].as_str().unwrap_or_default();
        let secret_id = body["secret_id"].as_str().unwrap_or_default();
        let Some((name, role)) = self
            .approles
            .iter()
            .find(|(_, r)| r.role_id == role_id)
            .map(|(n, r)| (n.clone(), r.clone()))
        else {
            return err(StatusCode::BAD_REQUEST, "invalid role or secret ID");
        };
        let now = Instant::now();
        let valid = match self.secret_ids.get_mut(secret_id) {
            Some(e) if e.expires.is_some_and(|x| now >= x) => false,
            Some(e) if e.role == name => match &mut e.uses_left {
                None => true,
                Some(0) => false,
                Some(n) => {
                    *n -= 1;
                    true
                }
            },
            _ => false,
        };
        if !valid {
            return err(StatusCode::BAD_REQUEST, "invalid role or secret ID");
        }
        if self.secret_ids.get(secret_id).and_then(|e| e.uses_left) == Some(0) {
            self.secret_ids.remove(secret_id);
        }
        let mut spec = role.token;
        if let Some(names) = &role.token_policies {
            let prefixes: Vec<String> = names
                .iter()
                .filter_map(|n| self.policies.get(n))
                .flat_map(|t| policy_prefixes(t))
                .collect();
            spec.policy = Policy::Paths(prefixes);
        }
        self.login(spec, "auth/approle/login")
    }

    fn jwt_login(&mut self, body: &Value) -> Reply {
        let role = body["role"].as_str().unwrap_or_default();
        let jwt = body["jwt"].as_str().unwrap_or_default();
        match self.jwt_roles.get(role) {
            Some(r) if r.jwt == jwt => {
                let spec = r.token.clone();
                self.login(spec, "auth/jwt/login")
            }
            Some(_) => err(
                StatusCode::BAD_REQUEST,
                "error validating token: invalid signature",
            ),
            None => err(
                StatusCode::BAD_REQUEST,
                &format!("role {role:?} could not be found"),
            ),
        }
    }

    fn generate_secret_id(&mut self, role: &str) -> Option<Value> {
        let r = self.approles.get(role)?;
        let uses = r.secret_id_num_uses;
        let ttl = r.secret_id_ttl;
        let secret_id = uuid::Uuid::new_v4().to_string();
        let accessor = uuid::Uuid::new_v4().to_string();
        self.secret_ids.insert(
            secret_id.clone(),
            SecretIdEntry {
                role: role.into(),
                accessor: accessor.clone(),
                uses_left: (uses > 0).then_some(uses),
                expires: (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl)),
            },
        );
        Some(json!({
            "secret_id": secret_id,
            "secret_id_accessor": accessor,
            "secret_id_ttl": ttl,
            "secret_id_num_uses": uses,
        }))
    }

    fn wrap(&mut self, response: Value, creation_path: &str, ttl: Duration) -> Value {
        let token = new_token();
        let created = rfc3339_now();
        self.wrapped.insert(
            token.clone(),
            Wrapped {
                response,
                creation_path: creation_path.into(),
                creation_time: created.clone(),
                ttl,
                expires: Instant::now() + ttl,
            },
        );
        json!({
            "request_id": uuid::Uuid::new_v4().to_string(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": null,
            "wrap_info": {
                "token": token,
                "accessor": uuid::Uuid::new_v4().simple().to_string()[..24].to_owned(),
                "ttl": ttl.as_secs(),
                "creation_time": created,
                "creation_path": creation_path,
            },
            "warnings": null,
            "auth": null,
        })
    }

    fn wrapping_lookup(&mut self, token: &str, now: Instant) -> Reply {
        match self.wrapped.get(token).filter(|w| now < w.expires) {
            Some(w) => ok(envelope(
                Some(json!({
                    "creation_path": w.creation_path,
                    "creation_time": w.creation_time,
                    "creation_ttl": w.ttl.as_secs(),
                })),
                None,
                None,
            )),
            None => err(
                StatusCode::BAD_REQUEST,
                "wrapping token is not valid or does not exist",
            ),
        }
    }

    fn unwrap(&mut self, token: &str, now: Instant) -> Reply {
        // Single use: the entry is gone whether or not it was still valid.
        match self.wrapped.remove(token).filter(|w| now < w.expires) {
            Some(w) => ok(w.response),
            None => err(
                StatusCode::BAD_REQUEST,
                "wrapping token is not valid or does not exist",
            ),
        }
    }

    fn renew_self(&mut self, token: &str, body: &Value, now: Instant) -> Reply {
        let Some(t) = self.tokens.get_mut(token) else {
            return denied();
        };
        if !t.spec.renewable || t.expires.is_none() {
            return err(StatusCode::BAD_REQUEST, "lease is not renewable");
        }
        let inc = secs(&body["increment"]).unwrap_or(t.spec.ttl);
        let mut expires = now + inc;
        if !t.spec.max_ttl.is_zero() {
            expires = expires.min(t.created + t.spec.max_ttl);
        }
        t.expires = Some(expires);
        let auth = json!({
            "client_token": token,
            "accessor": t.accessor,
            "policies": policy_names(&t.spec.policy),
            "token_policies": policy_names(&t.spec.policy),
            "metadata": null,
            "lease_duration": expires.saturating_duration_since(now).as_secs(),
            "renewable": true,
        });
        ok(envelope(None, Some(auth), None))
    }

    /// Revokes the token and every lease it created (Vault revokes child leases too).
    fn revoke_token(&mut self, token: &str) {
        if let Some(t) = self.tokens.get_mut(token) {
            t.revoked = true;
        }
        for l in self.leases.values_mut().filter(|l| l.token == token) {
            l.revoked = true;
        }
    }

    fn renew_lease(&mut self, body: &Value, now: Instant) -> Reply {
        let id = body["lease_id"].as_str().unwrap_or_default().to_owned();
        let Some(l) = self.leases.get_mut(&id) else {
            return err(StatusCode::BAD_REQUEST, "lease not found");
        };
        if l.revoked || now >= l.expires {
            return err(StatusCode::BAD_REQUEST, "lease not found");
        }
        if !l.renewable {
            return err(StatusCode::BAD_REQUEST, "lease is not renewable");
        }
        let inc = secs(&body["increment"]).unwrap_or(l.expires - l.issued);
        l.expires = (now + inc).min(l.max_expires);
        let granted = l.expires.saturating_duration_since(now);
        // Vault rounds TTLs to whole seconds in responses.
        let mut v = json!({
            "lease_id": id,
            "renewable": true,
            "lease_duration": granted.as_secs(),
        });
        if granted < inc {
            v["warnings"] = json!([
                "TTL of the lease exceeded the effective max_ttl; TTL value is capped accordingly"
            ]);
        }
        ok(v)
    }

    fn mount_of(&self, path: &str) -> Option<(String, String)> {
        self.mounts
            .keys()
            .filter(|m| path.starts_with(m.as_str()))
            .max_by_key(|m| m.len())
            .map(|m| (m.clone(), path[m.len()..].to_owned()))
    }

    /// Every secrets engine, keyed by its path, in `data` (and, as Vault still does for old
    /// clients, at the top level).
    fn list_mounts(&self) -> Reply {
        let mut mounts = serde_json::Map::new();
        for (path, m) in &self.mounts {
            let (kind, options) = match m {
                Mount::Kv2(_) => ("kv", json!({ "version": "2" })),
                Mount::Kv1(_) => ("kv", json!({ "version": "1" })),
                Mount::Database(_) => ("database", Value::Null),
            };
            mounts.insert(
                path.clone(),
                json!({"type": kind, "options": options, "description": "", "local": false}),
            );
        }
        let mut body = envelope(Some(Value::Object(mounts.clone())), None, None);
        if let Value::Object(top) = &mut body {
            for (k, v) in mounts {
                top.entry(k).or_insert(v);
            }
        }
        ok(body)
    }

    fn mount_details(&self, path: &str) -> Reply {
        let Some((mount, _)) = self
            .mount_of(path)
            .or_else(|| self.mount_of(&format!("{path}/")))
        else {
            return err(StatusCode::BAD_REQUEST, "no mount found for the path");
        };
        let (kind, options) = match self.mounts.get(&mount) {
            Some(Mount::Kv2(_)) => ("kv", json!({ "version": "2" })),
            Some(Mount::Kv1(_)) => ("kv", json!({ "version": "1" })),
            Some(Mount::Database(_)) => ("database", Value::Null),
            None => return not_found(),
        };
        ok(envelope(
            Some(json!({
                "accessor": format!("{kind}_0000"),
                "config": { "default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false },
                "description": "",
                "external_entropy_access": false,
                "local": false,
                "options": options,
                "path": mount,
                "seal_wrap": false,
                "type": kind,
                "uuid": "00000000-0000-0000-0000-000000000000",
            })),
            None,
            None,
        ))
    }

    /// Secrets engines: KV v1, KV v2, database.
    fn logical(
        &mut self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        token: &str,
        body: &Value,
        now: Instant,
    ) -> Reply {
        let Some((mount, rest)) = self.mount_of(path) else {
            return err(
                StatusCode::NOT_FOUND,
                &format!("no handler for route \"{path}\""),
            );
        };
        let write = *method == Method::POST || *method == Method::PUT;
        match self.mounts.get_mut(&mount) {
            // https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v1
            Some(Mount::Kv1(map)) => match (method.as_str(), write) {
                ("GET", _) => match map.get(&rest) {
                    Some(data) => ok(envelope(
                        Some(Value::Object(data.clone())),
                        None,
                        Some(("", 2_764_800, false)),
                    )),
                    None => not_found(),
                },
                (_, true) => {
                    map.insert(rest, as_object(body.clone()));
                    no_content()
                }
                ("DELETE", _) => {
                    map.remove(&rest);
                    no_content()
                }
                _ => err(StatusCode::METHOD_NOT_ALLOWED, "unsupported operation"),
            },
            // https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2
            Some(Mount::Kv2(map)) => {
                if let Some(key) = rest.strip_prefix("data/") {
                    if write {
                        let versions = map.entry(key.to_owned()).or_default();
                        let created = rfc3339_now();
                        versions.push(Kv2Version {
                            data: as_object(body["data"].clone()),
                            created: created.clone(),
                        });
                        return ok(envelope(
                            Some(json!({
                                "created_time": created,
                                "custom_metadata": null,
                                "deletion_time": "",
                                "destroyed": false,
                                "version": versions.len(),
                            })),
                            None,
                            None,
                        ));
                    }
                    let Some(versions) = map.get(key) else {
                        return not_found();
                    };
                    let n = match query.get("version").and_then(|v| v.parse::<usize>().ok()) {
                        Some(0) | None => versions.len(),
                        Some(n) => n,
                    };
                    let Some(v) = versions.get(n.wrapping_sub(1)) else {
                        return not_found();
                    };
                    ok(envelope(
                        Some(json!({
                            "data": v.data,
                            "metadata": {
                                "created_time": v.created,
                                "custom_metadata": null,
                                "deletion_time": "",
                                "destroyed": false,
                                "version": n,
                            },
                        })),
                        None,
                        None,
                    ))
                } else if let Some(key) = rest.strip_prefix("metadata/") {
                    let Some(versions) = map.get(key) else {
                        return not_found();
                    };
                    let list: Map<String, Value> = versions
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            (
                                (i + 1).to_string(),
                                json!({"created_time": v.created, "deletion_time": "", "destroyed": false}),
                            )
                        })
                        .collect();
                    ok(envelope(
                        Some(json!({
                            "cas_required": false,
                            "created_time": versions.first().map(|v| v.created.clone()),
                            "current_version": versions.len(),
                            "custom_metadata": null,
                            "delete_version_after": "0s",
                            "max_versions": 0,
                            "oldest_version": 0,
                            "updated_time": versions.last().map(|v| v.created.clone()),
                            "versions": list,
                        })),
                        None,
                        None,
                    ))
                } else {
                    // Vault answers v1-style paths on a v2 mount with a hint to use data/.
                    err(
                        StatusCode::NOT_FOUND,
                        "Invalid path for a versioned K/V secrets engine",
                    )
                }
            }
            // https://developer.hashicorp.com/vault/api-docs/secret/databases#generate-credentials
            Some(Mount::Database(roles)) => {
                let Some(role) = rest.strip_prefix("creds/") else {
                    return err(StatusCode::NOT_FOUND, "unsupported path in the stub");
                };
                let Some(r) = roles.get(role).copied() else {
                    return err(StatusCode::BAD_REQUEST, &format!("unknown role: {role}"));
                };
                self.creds_issued += 1;
                let n = self.creds_issued;
                let lease_id = format!("{mount}creds/{role}/{}", uuid::Uuid::new_v4().simple());
                self.leases.insert(
                    lease_id.clone(),
                    Lease {
                        token: token.into(),
                        issued: now,
                        expires: now + r.default_ttl,
                        max_expires: now + r.max_ttl,
                        revoked: false,
                        renewable: true,
                    },
                );
                let data = json!({
                    "username": format!("v-token-{role}-{n}"),
                    "password": format!("pw-{}", uuid::Uuid::new_v4().simple()),
                });
                ok(envelope(
                    Some(data),
                    None,
                    Some((&lease_id, r.default_ttl.as_secs(), true)),
                ))
            }
            None => not_found(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_strings() {
        assert_eq!(parse_ttl("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_ttl("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_ttl("x"), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
    }

    #[test]
    fn policies_deny_outside_their_prefixes() {
        let mut s = State::default();
        s.mounts.insert("kv1/".into(), Mount::Kv1(BTreeMap::new()));
        let t = new_token();
        s.insert_token(
            t.clone(),
            TokenSpec::new(Policy::paths(["kv1/app"]), Duration::ZERO),
            "x",
        );
        let q = HashMap::new();
        let r = route(
            &mut s,
            &Method::GET,
            "kv1/other",
            &q,
            Some(&t),
            &Value::Null,
        );
        assert_eq!(r.0, StatusCode::FORBIDDEN);
        let r = route(&mut s, &Method::GET, "kv1/app", &q, Some(&t), &Value::Null);
        assert_eq!(r.0, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn the_log_records_headers_and_holds_wait_for_release() {
        let stub = spawn(StubConfig::default()).await.unwrap();
        stub.put_kv1("kv1/app", json!({"k": "v"}));
        let hold = stub.hold("kv1/");
        let addr = stub.addr;
        let req = tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(b"GET /v1/kv1/app HTTP/1.1\r\nHost: x\r\nX-Vault-Token: root\r\nX-Vault-Namespace: team-a\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut out = String::new();
            stream.read_to_string(&mut out).await.unwrap();
            out
        });
        // Logged while held, not answered yet.
        while stub.request_log().is_empty() {
            tokio::task::yield_now().await;
        }
        assert!(!req.is_finished());
        hold.release();
        let answer = req.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let log = stub.request_log();
        assert_eq!(log[0].namespace.as_deref(), Some("team-a"));
        assert_eq!(log[0].token.as_deref(), Some("root"));
        assert_eq!(log[0].path, "kv1/app");
    }
}
