//! The HTTP API: Marathon's `/v2` endpoints with its request and response shapes, status codes
//! and query defaults (`partialUpdate=true` on `PUT /v2/apps/{id}`, `force=true` on
//! `DELETE /v2/apps/{id}`, `force=false` elsewhere).
//!
//! Handlers parse, lock the [`World`] briefly, make a change durable ([`Shared::commit`]) and
//! answer; the scheduling loop does the rest.
//! App ids contain slashes, so `/v2/apps/{*rest}` is split by hand the way Marathon resolves
//! it (`.../tasks`, `.../tasks/{task}`, `.../versions`, `.../versions/{v}`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde_json::{json, Map, Value};

use super::deploy::{self, apply, locks, mark_kill, revert_changes, Decisions, Reject};
use super::events::make_event;
use super::store::{config_of, format_system_time, instances_of, World};
use super::tasks::{self, service_ports, KillReason, Task, TaskState};
use super::validate::{check_id, validate_app};
use super::Shared;

type Ctx = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong\n" }))
        .route("/v2/info", get(info))
        .route("/v2/leader", get(leader))
        .route(
            "/v2/apps",
            get(list_apps)
                .post(create_app)
                .put(put_apps)
                .patch(patch_apps),
        )
        .route(
            "/v2/apps/{*rest}",
            get(app_get)
                .put(app_put)
                .patch(app_patch)
                .delete(app_delete),
        )
        .route("/v2/tasks", get(list_tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/deployments", get(list_deployments))
        .route("/v2/deployments/{id}", delete(delete_deployment))
        .route("/v2/groups", get(root_group))
        .route("/v2/groups/{*id}", get(group))
        .route("/v2/queue", get(queue))
        .route("/v2/queue/{*rest}", delete(reset_delay))
        .route("/v2/events", get(events))
        .route("/baton-dev/requests", get(request_counts))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            count_request,
        ))
        .with_state(shared)
}

/// `GET /baton-dev/requests` (not Marathon API): the counts of [`count_request`].
async fn request_counts(State(shared): Ctx) -> ApiResult {
    let counts = shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Json(json!(counts)).into_response())
}

/// Count each API request by method and route (`GET /v2/apps/*`), for benchmarks. Reading the
/// counts (`/baton-dev/...`) is not counted, so it leaves them as they were.
async fn count_request(
    State(shared): Ctx,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path();
    if !path.starts_with("/baton-dev/") {
        let mut parts = path.trim_start_matches('/').splitn(3, '/');
        let route = match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), Some(_)) => format!("/{a}/{b}/*"),
            _ => path.to_string(),
        };
        let key = format!("{} {route}", req.method());
        let mut counts = shared.requests.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(key).or_default() += 1;
    }
    next.run(req).await
}

// ---------------------------------------------------------------------------------------------
// Errors and small helpers

/// An error answer in Marathon's format.
pub struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

fn not_found_app(id: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        json!({"message": format!("App '{id}' does not exist")}),
    )
}

impl From<Reject> for ApiError {
    fn from(r: Reject) -> Self {
        match r {
            Reject::NotFound(message) => {
                ApiError(StatusCode::NOT_FOUND, json!({"message": message}))
            }
            Reject::Exists(id) => ApiError(
                StatusCode::CONFLICT,
                json!({"message": format!("An app with id [{id}] already exists.")}),
            ),
            Reject::Locked(ids) => {
                let first = ids.first().cloned().unwrap_or_default();
                ApiError(
                    StatusCode::CONFLICT,
                    json!({
                        "message": format!("App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{first}'."),
                        "deployments": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                    }),
                )
            }
            Reject::Invalid(details) => invalid(details),
        }
    }
}

/// A change that is in effect but could not be made durable: not acknowledged, since a restart
/// would lose it (the scheduling loop keeps retrying the write).
impl From<super::DevError> for ApiError {
    fn from(e: super::DevError) -> Self {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"message": format!(
                "the change is in effect but could not be written to the state dir, so a restart may lose it: {}",
                baton_core::error_chain(&e)
            )}),
        )
    }
}

/// 422 with `details` grouped by path, as Marathon does.
fn invalid(details: Vec<(String, String)>) -> ApiError {
    let mut by_path: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, msg) in details {
        let path = if path.is_empty() {
            "/".to_string()
        } else {
            path
        };
        by_path.entry(path).or_default().push(msg);
    }
    let details: Vec<Value> = by_path
        .into_iter()
        .map(|(path, errors)| json!({"path": path, "errors": errors}))
        .collect();
    ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"message": "Object is not valid", "details": details}),
    )
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": [e.to_string()]}]}),
        )
    })
}

/// Query parameters in order, repeated keys kept (`embed=a&embed=b`).
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.unwrap_or_default()
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(q: &'a [(String, String)], key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Jersey's boolean parsing: "true" in any case is true, anything else false.
fn flag(q: &[(String, String)], key: &str, default: bool) -> bool {
    param(q, key).map_or(default, |v| v.eq_ignore_ascii_case("true"))
}

/// `/a//b/` -> `/a/b`.
fn canonical_id(raw: &str) -> String {
    let parts: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

fn with_deployment(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    resp
}

fn client_ip(addr: &SocketAddr) -> String {
    addr.ip().to_string()
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// Which nested resources an app answer embeds.
#[derive(Debug, Clone, Copy, Default)]
struct Embed {
    tasks: bool,
    counts: bool,
    deployments: bool,
    failure: bool,
    readiness: bool,
    stats: bool,
}

impl Embed {
    fn parse(q: &[(String, String)], mut base: Embed) -> Embed {
        for (k, v) in q {
            if k != "embed" {
                continue;
            }
            let what = v.trim_start_matches("apps.").trim_start_matches("app.");
            match what {
                "tasks" => {
                    base.tasks = true;
                    base.deployments = true;
                }
                "counts" | "count" => base.counts = true,
                "deployments" => base.deployments = true,
                "lastTaskFailure" => base.failure = true,
                "readiness" => base.readiness = true,
                "taskStats" => base.stats = true,
                "failures" => {
                    base.failure = true;
                    base.tasks = true;
                    base.counts = true;
                    base.deployments = true;
                }
                _ => {}
            }
        }
        base
    }
}

fn task_json(shared: &Shared, world: &World, t: &Task) -> Value {
    let sp = world
        .apps
        .get(&t.app_id)
        .map(|r| service_ports(&r.def))
        .unwrap_or_default();
    t.to_json(&shared.config.hostname, &sp)
}

fn app_json(shared: &Shared, world: &World, id: &str, embed: Embed) -> Option<Value> {
    let tasks: Vec<&Task> = world.tasks.values().filter(|t| t.app_id == id).collect();
    app_json_with(shared, world, id, tasks, embed)
}

/// [`app_json`] with the app's tasks already picked out (a listing groups them once).
fn app_json_with(
    shared: &Shared,
    world: &World,
    id: &str,
    tasks: Vec<&Task>,
    embed: Embed,
) -> Option<Value> {
    let record = world.apps.get(id)?;
    let mut app = record.def.clone();
    let Some(obj) = app.as_object_mut() else {
        return Some(app);
    };
    if embed.counts {
        let staged = tasks
            .iter()
            .filter(|t| t.state == TaskState::Staging)
            .count();
        let running = tasks
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .count();
        let healthy = tasks.iter().filter(|t| t.is_healthy()).count();
        let unhealthy = tasks.iter().filter(|t| t.is_unhealthy()).count();
        obj.insert("tasksStaged".into(), json!(staged));
        obj.insert("tasksRunning".into(), json!(running));
        obj.insert("tasksHealthy".into(), json!(healthy));
        obj.insert("tasksUnhealthy".into(), json!(unhealthy));
    }
    if embed.deployments {
        let ids: Vec<Value> = locks(world, id)
            .into_iter()
            .map(|d| json!({"id": d}))
            .collect();
        obj.insert("deployments".into(), Value::Array(ids));
    }
    if embed.readiness {
        obj.insert("readinessCheckResults".into(), json!([]));
    }
    if embed.tasks {
        let list: Vec<Value> = tasks.iter().map(|t| task_json(shared, world, t)).collect();
        obj.insert("tasks".into(), Value::Array(list));
    }
    if embed.failure {
        if let Some(f) = &record.last_task_failure {
            obj.insert("lastTaskFailure".into(), f.clone());
        }
    }
    if embed.stats {
        obj.insert("taskStats".into(), json!({}));
    }
    Some(app)
}

// ---------------------------------------------------------------------------------------------
// Label selectors (`GET /v2/apps?label=...`)

#[derive(Debug, Clone, PartialEq)]
enum Selector {
    Exists(String),
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// Split on a separator outside parentheses, honouring backslash escapes.
fn split_top(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0i32;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            c if c == sep && depth == 0 => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.trim().chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Marathon's label selector language (existence, `==`, `!=`, `in (..)`, `notin (..)`). A `/`
/// in a label name needs no escaping here, unlike in Marathon.
fn parse_selectors(q: &str) -> Result<Vec<Selector>, String> {
    let mut out = Vec::new();
    for part in split_top(q, ',') {
        let p = part.trim();
        if p.is_empty() {
            continue;
        }
        let sel = if let Some((k, v)) = p.split_once("==") {
            Selector::Eq(unescape(k), unescape(v))
        } else if let Some((k, v)) = p.split_once("!=") {
            Selector::Ne(unescape(k), unescape(v))
        } else if let Some((k, rest)) = p.split_once(" notin ") {
            Selector::NotIn(unescape(k), set_of(rest)?)
        } else if let Some((k, rest)) = p.split_once(" in ") {
            Selector::In(unescape(k), set_of(rest)?)
        } else if let Some((k, v)) = p.split_once('=') {
            Selector::Eq(unescape(k), unescape(v))
        } else {
            Selector::Exists(unescape(p))
        };
        out.push(sel);
    }
    Ok(out)
}

fn set_of(s: &str) -> Result<Vec<String>, String> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("Can not parse label selector set {s}"))?;
    Ok(split_top(inner, ',').iter().map(|v| unescape(v)).collect())
}

fn matches(labels: Option<&Map<String, Value>>, sel: &Selector) -> bool {
    let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    match sel {
        Selector::Exists(k) => get(k).is_some(),
        Selector::Eq(k, v) => get(k) == Some(v.as_str()),
        Selector::Ne(k, v) => get(k).is_some_and(|x| x != v),
        Selector::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Selector::NotIn(k, vs) => get(k).is_some_and(|x| !vs.iter().any(|v| v == x)),
    }
}

// ---------------------------------------------------------------------------------------------
// Apps

async fn list_apps(State(shared): Ctx, RawQuery(q): RawQuery) -> ApiResult {
    let q = query_pairs(q.as_deref());
    let embed = Embed::parse(
        &q,
        Embed {
            counts: true,
            deployments: true,
            ..Embed::default()
        },
    );
    let selectors = match param(&q, "label") {
        Some(l) => parse_selectors(l)
            .map_err(|m| ApiError(StatusCode::BAD_REQUEST, json!({"message": m})))?,
        None => Vec::new(),
    };
    let id_filter = param(&q, "id").map(str::to_string);
    let cmd_filter = param(&q, "cmd").map(str::to_string);
    let world = shared.lock();
    let mut tasks_by_app: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in world.tasks.values() {
        tasks_by_app.entry(t.app_id.as_str()).or_default().push(t);
    }
    let apps: Vec<Value> = world
        .apps
        .iter()
        .filter(|(id, r)| {
            let labels = r.def.get("labels").and_then(Value::as_object);
            selectors.iter().all(|s| matches(labels, s))
                && id_filter.as_deref().is_none_or(|f| id.contains(f))
                && cmd_filter.as_deref().is_none_or(|f| {
                    r.def
                        .get("cmd")
                        .and_then(Value::as_str)
                        .is_some_and(|c| c.contains(f))
                })
        })
        .filter_map(|(id, _)| {
            let tasks = tasks_by_app.remove(id.as_str()).unwrap_or_default();
            app_json_with(&shared, &world, id, tasks, embed)
        })
        .collect();
    Ok(Json(json!({ "apps": apps })).into_response())
}

/// Turn a submitted app into its stored form for `id`: validated, normalised, service ports
/// assigned, `version` and `versionInfo` set.
fn stored_form(
    world: &mut World,
    id: &str,
    mut app: Value,
    version: &str,
) -> Result<Value, Reject> {
    if let Some(obj) = app.as_object_mut() {
        obj.insert("id".into(), json!(id));
        // Versions and status are the server's; a client that echoes them back changes nothing.
        for k in [
            "version",
            "versionInfo",
            "tasks",
            "tasksStaged",
            "tasksRunning",
            "tasksHealthy",
            "tasksUnhealthy",
            "deployments",
            "lastTaskFailure",
            "taskStats",
            "readinessCheckResults",
        ] {
            obj.remove(k);
        }
    }
    let details = validate_app(&app);
    if !details.is_empty() {
        return Err(Reject::Invalid(details));
    }
    baton_core::spec::marathon_form(&mut app);
    let previous = world.apps.get(id).map(|r| r.def.clone());
    world.assign_service_ports(id, &mut app, previous.as_ref());
    let version_info = match &previous {
        Some(prev) if config_of(prev) == config_of(&app) => {
            let last_config = prev
                .pointer("/versionInfo/lastConfigChangeAt")
                .cloned()
                .unwrap_or_else(|| json!(version));
            json!({"lastScalingAt": version, "lastConfigChangeAt": last_config})
        }
        _ => json!({"lastScalingAt": version, "lastConfigChangeAt": version}),
    };
    if let Some(obj) = app.as_object_mut() {
        obj.insert("version".into(), json!(version));
        obj.insert("versionInfo".into(), version_info);
    }
    Ok(app)
}

/// Merge a partial update into the current definition: given top-level fields replace.
fn merged(world: &World, id: &str, update: Value) -> Value {
    let Some(record) = world.apps.get(id) else {
        return update;
    };
    let mut base = record.def.clone();
    if let (Some(b), Value::Object(u)) = (base.as_object_mut(), update) {
        for (k, v) in u {
            b.insert(k, v);
        }
    }
    base
}

fn publish_api_post(shared: &Shared, addr: &SocketAddr, uri: &Uri, app: &Value) {
    shared.bus.publish(
        "api_post_event",
        json!({"clientIp": client_ip(addr), "uri": uri.path(), "appDefinition": app}),
    );
}

async fn create_app(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    body: Bytes,
) -> ApiResult {
    let app = parse_body(&body)?;
    let Some(raw_id) = app.get("id").and_then(Value::as_str) else {
        return Err(invalid(vec![("/id".into(), "error.path.missing".into())]));
    };
    if let Some(m) = check_id(raw_id) {
        return Err(invalid(vec![("/id".into(), m)]));
    }
    let id = canonical_id(raw_id);
    let (deployment, def, body) = {
        let mut world = shared.lock();
        if world.apps.contains_key(&id) {
            return Err(Reject::Exists(id).into());
        }
        let version = world.clock.next_version();
        let def = stored_form(&mut world, &id, app, &version)?;
        let d = apply(
            &mut world,
            &shared.bus,
            vec![(id.clone(), Some(def.clone()))],
            version,
            false,
        )?;
        let all = Embed {
            tasks: true,
            counts: true,
            deployments: true,
            ..Embed::default()
        };
        let body = app_json(&shared, &world, &id, all).unwrap_or(Value::Null);
        (d, def, body)
    };
    shared.wake.notify_one();
    let durable = shared.commit().await;
    publish_api_post(&shared, &addr, &uri, &def);
    durable?;
    let mut resp = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(with_deployment(resp, &deployment.id))
}

/// `PUT /v2/apps` / `PATCH /v2/apps`: several apps, one deployment.
async fn put_apps(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    multi_update(shared, addr, uri, q, body, false).await
}

async fn patch_apps(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    multi_update(shared, addr, uri, q, body, true).await
}

async fn multi_update(
    shared: Arc<Shared>,
    addr: SocketAddr,
    uri: Uri,
    q: Option<String>,
    body: Bytes,
    patch: bool,
) -> ApiResult {
    let q = query_pairs(q.as_deref());
    let force = flag(&q, "force", false);
    let partial = patch || flag(&q, "partialUpdate", true);
    let list = match parse_body(&body)? {
        Value::Array(a) => a,
        _ => return Err(invalid(vec![("/".into(), "error.expected.jsarray".into())])),
    };
    let (d, defs) = {
        let mut world = shared.lock();
        let version = world.clock.next_version();
        let mut changes = Vec::new();
        let mut details = Vec::new();
        for (i, app) in list.into_iter().enumerate() {
            let Some(raw_id) = app.get("id").and_then(Value::as_str) else {
                details.push((format!("({i})/id"), "error.path.missing".to_string()));
                continue;
            };
            let id = canonical_id(raw_id);
            if patch && !world.apps.contains_key(&id) {
                return Err(not_found_app(&id));
            }
            let submitted = if partial {
                merged(&world, &id, app)
            } else {
                app
            };
            match stored_form(&mut world, &id, submitted, &version) {
                Ok(def) => changes.push((id, Some(def))),
                Err(Reject::Invalid(ds)) => {
                    details.extend(ds.into_iter().map(|(p, m)| (format!("({i}){p}"), m)));
                }
                Err(other) => return Err(other.into()),
            }
        }
        if !details.is_empty() {
            return Err(invalid(details));
        }
        let defs: Vec<Value> = changes.iter().filter_map(|(_, d)| d.clone()).collect();
        let d = apply(&mut world, &shared.bus, changes, version, force)?;
        (d, defs)
    };
    shared.wake.notify_one();
    let durable = shared.commit().await;
    for def in &defs {
        publish_api_post(&shared, &addr, &uri, def);
    }
    durable?;
    Ok(with_deployment(
        Json(d.result_json()).into_response(),
        &d.id,
    ))
}

/// What `/v2/apps/{*rest}` addresses.
#[derive(Debug, PartialEq)]
enum AppPath {
    App(String),
    Tasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
    Restart(String),
}

/// Marathon resolves the suffixes before treating the rest as an app id.
fn app_path(rest: &str) -> AppPath {
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let id = |n: usize| canonical_id(&parts[..parts.len().saturating_sub(n)].join("/"));
    match parts.as_slice() {
        [.., "tasks"] if parts.len() > 1 => AppPath::Tasks(id(1)),
        [.., "tasks", task] if parts.len() > 2 => AppPath::Task(id(2), (*task).to_string()),
        [.., "versions"] if parts.len() > 1 => AppPath::Versions(id(1)),
        [.., "versions", v] if parts.len() > 2 => AppPath::Version(id(2), (*v).to_string()),
        [.., "restart"] if parts.len() > 1 => AppPath::Restart(id(1)),
        _ => AppPath::App(id(0)),
    }
}

async fn app_get(State(shared): Ctx, Path(rest): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let q = query_pairs(q.as_deref());
    let world = shared.lock();
    match app_path(&rest) {
        AppPath::App(id) => {
            // Marathon embeds these for a single app, for compatibility.
            let base = Embed {
                tasks: true,
                counts: true,
                deployments: true,
                failure: true,
                ..Embed::default()
            };
            let app = app_json(&shared, &world, &id, Embed::parse(&q, base))
                .ok_or_else(|| not_found_app(&id))?;
            Ok(Json(json!({ "app": app })).into_response())
        }
        AppPath::Tasks(id) => {
            if !world.apps.contains_key(&id) {
                return Err(not_found_app(&id));
            }
            let tasks: Vec<Value> = world
                .tasks
                .values()
                .filter(|t| t.app_id == id)
                .map(|t| task_json(&shared, &world, t))
                .collect();
            Ok(Json(json!({ "tasks": tasks })).into_response())
        }
        AppPath::Versions(id) => {
            let record = world.apps.get(&id).ok_or_else(|| not_found_app(&id))?;
            let versions: Vec<&String> = record.versions.keys().rev().collect();
            Ok(Json(json!({ "versions": versions })).into_response())
        }
        AppPath::Version(id, v) => {
            let record = world.apps.get(&id).ok_or_else(|| not_found_app(&id))?;
            let def = record.versions.get(&v).ok_or_else(|| {
                ApiError(
                    StatusCode::NOT_FOUND,
                    json!({"message": format!("App '{id}' does not exist in version {v}")}),
                )
            })?;
            Ok(Json(def.clone()).into_response())
        }
        AppPath::Task(..) | AppPath::Restart(_) => Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "HTTP 405 Method Not Allowed"}),
        )),
    }
}

async fn app_put(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let q = query_pairs(q.as_deref());
    let AppPath::App(id) = app_path(&rest) else {
        return Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "HTTP 405 Method Not Allowed"}),
        ));
    };
    let partial = flag(&q, "partialUpdate", true);
    update_one(shared, addr, uri, id, q, body, partial, false).await
}

async fn app_patch(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let q = query_pairs(q.as_deref());
    let AppPath::App(id) = app_path(&rest) else {
        return Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "HTTP 405 Method Not Allowed"}),
        ));
    };
    update_one(shared, addr, uri, id, q, body, true, true).await
}

#[allow(clippy::too_many_arguments)]
async fn update_one(
    shared: Arc<Shared>,
    addr: SocketAddr,
    uri: Uri,
    id: String,
    q: Vec<(String, String)>,
    body: Bytes,
    partial: bool,
    must_exist: bool,
) -> ApiResult {
    if let Some(m) = check_id(&id) {
        return Err(invalid(vec![("/id".into(), m)]));
    }
    let force = flag(&q, "force", false);
    let update = parse_body(&body)?;
    let (d, def, created) = {
        let mut world = shared.lock();
        let exists = world.apps.contains_key(&id);
        if must_exist && !exists {
            return Err(not_found_app(&id));
        }
        let version = world.clock.next_version();
        // `{"version": v}` alone rolls the app back to that version.
        let only_version = update.as_object().is_some_and(|o| {
            o.contains_key("version") && o.keys().all(|k| k == "version" || k == "id")
        });
        let def = if only_version {
            let v = update
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let old = world
                .apps
                .get(&id)
                .and_then(|r| r.versions.get(v))
                .cloned()
                .ok_or_else(|| {
                    ApiError(
                        StatusCode::NOT_FOUND,
                        json!({"message": format!("App '{id}' does not exist in version {v}")}),
                    )
                })?;
            stored_form(&mut world, &id, old, &version)?
        } else {
            let submitted = if partial {
                merged(&world, &id, update)
            } else {
                update
            };
            stored_form(&mut world, &id, submitted, &version)?
        };
        let d = apply(
            &mut world,
            &shared.bus,
            vec![(id.clone(), Some(def.clone()))],
            version,
            force,
        )?;
        (d, def, !exists)
    };
    shared.wake.notify_one();
    let durable = shared.commit().await;
    publish_api_post(&shared, &addr, &uri, &def);
    durable?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_deployment(
        (status, Json(d.result_json())).into_response(),
        &d.id,
    ))
}

async fn app_delete(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = query_pairs(q.as_deref());
    match app_path(&rest) {
        AppPath::App(id) => {
            // Marathon's default for DELETE /v2/apps/{id} is force=true.
            let force = flag(&q, "force", true);
            let (d, def) = {
                let mut world = shared.lock();
                let def = world
                    .apps
                    .get(&id)
                    .map(|r| r.def.clone())
                    .ok_or_else(|| not_found_app(&id))?;
                let version = world.clock.next_version();
                let d = apply(
                    &mut world,
                    &shared.bus,
                    vec![(id.clone(), None)],
                    version,
                    force,
                )?;
                (d, def)
            };
            shared.wake.notify_one();
            let durable = shared.commit().await;
            publish_api_post(&shared, &addr, &uri, &def);
            durable?;
            Ok(with_deployment(
                Json(d.result_json()).into_response(),
                &d.id,
            ))
        }
        AppPath::Tasks(id) => {
            let ids: Vec<String> = {
                let world = shared.lock();
                if !world.apps.contains_key(&id) {
                    return Err(not_found_app(&id));
                }
                world
                    .tasks
                    .values()
                    .filter(|t| t.app_id == id)
                    .map(|t| t.id.clone())
                    .collect()
            };
            kill_tasks(
                &shared,
                ids,
                flag(&q, "scale", false),
                flag(&q, "force", false),
            )
            .await
        }
        AppPath::Task(id, task) => {
            {
                let world = shared.lock();
                if world.tasks.get(&task).is_none_or(|t| t.app_id != id) {
                    return Err(ApiError(
                        StatusCode::NOT_FOUND,
                        json!({"message": format!("Task '{task}' does not exist")}),
                    ));
                }
            }
            let scale = flag(&q, "scale", false);
            let resp = kill_tasks(&shared, vec![task], scale, flag(&q, "force", false)).await?;
            if scale {
                return Ok(resp);
            }
            // A single kill answers `{"task": ...}` rather than a list.
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let task = v.pointer("/tasks/0").cloned().unwrap_or(Value::Null);
            Ok(Json(json!({ "task": task })).into_response())
        }
        _ => Err(ApiError(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"message": "HTTP 405 Method Not Allowed"}),
        )),
    }
}

/// Kill tasks; with `scale`, lower their apps' instances by as many (a deployment).
async fn kill_tasks(shared: &Arc<Shared>, ids: Vec<String>, scale: bool, force: bool) -> ApiResult {
    let mut decisions = Decisions::default();
    let answer = {
        let mut world = shared.lock();
        let listed: Vec<Value> = ids
            .iter()
            .filter_map(|id| world.tasks.get(id))
            .map(|t| task_json(shared, &world, t))
            .collect();
        let mut per_app: BTreeMap<String, usize> = BTreeMap::new();
        for id in &ids {
            if let Some(t) = world.tasks.get(id) {
                if t.kill.is_none() {
                    *per_app.entry(t.app_id.clone()).or_default() += 1;
                }
            }
        }
        let mut result = None;
        if scale && !per_app.is_empty() {
            let version = world.clock.next_version();
            let mut changes = Vec::new();
            for (app, n) in &per_app {
                let Some(record) = world.apps.get(app) else {
                    continue;
                };
                let mut def = record.def.clone();
                let instances = instances_of(&def).saturating_sub(*n);
                def["instances"] = json!(instances);
                def["version"] = json!(version);
                def["versionInfo"]["lastScalingAt"] = json!(version);
                changes.push((app.clone(), Some(def)));
            }
            let d = apply(&mut world, &shared.bus, changes, version, force)?;
            result = Some(d);
        }
        for id in &ids {
            mark_kill(&mut world, id, KillReason::Api, &mut decisions);
        }
        match result {
            Some(d) => with_deployment(Json(d.result_json()).into_response(), &d.id),
            None => Json(json!({ "tasks": listed })).into_response(),
        }
    };
    tasks::execute(shared, decisions);
    shared.wake.notify_one();
    shared.commit().await?;
    Ok(answer)
}

// ---------------------------------------------------------------------------------------------
// Tasks, deployments, groups, queue, info

async fn list_tasks(State(shared): Ctx, RawQuery(q): RawQuery) -> ApiResult {
    let q = query_pairs(q.as_deref());
    let wanted: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "status" || k == "status[]")
        .map(|(_, v)| v.to_ascii_lowercase())
        .collect();
    let world = shared.lock();
    let tasks: Vec<Value> = world
        .tasks
        .values()
        .filter(|t| {
            let s = match t.state {
                TaskState::Staging => "staging",
                TaskState::Running => "running",
            };
            wanted.is_empty() || wanted.iter().any(|w| w == s)
        })
        .map(|t| task_json(&shared, &world, t))
        .collect();
    Ok(Json(json!({ "tasks": tasks })).into_response())
}

async fn delete_tasks(State(shared): Ctx, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    let q = query_pairs(q.as_deref());
    let v = parse_body(&body)?;
    let ids: Vec<String> = v
        .get("ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    {
        let world = shared.lock();
        let unknown: Vec<&String> = ids
            .iter()
            .filter(|id| !world.tasks.contains_key(*id))
            .collect();
        if !unknown.is_empty() {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                json!({"message": format!("Invalid task ids: {}", unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))}),
            ));
        }
    }
    kill_tasks(
        &shared,
        ids,
        flag(&q, "scale", false),
        flag(&q, "force", false),
    )
    .await
}

async fn list_deployments(State(shared): Ctx) -> ApiResult {
    let world = shared.lock();
    let list: Vec<Value> = world
        .deployments
        .iter()
        .map(deploy::Deployment::to_json)
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

/// `DELETE /v2/deployments/{id}`: roll back (200 and a new deployment), or with `force=true`
/// only stop it (202, no body).
async fn delete_deployment(
    State(shared): Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = query_pairs(q.as_deref());
    let force = flag(&q, "force", false);
    let d = {
        let mut world = shared.lock();
        let Some(pos) = world.deployments.iter().position(|d| d.id == id) else {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                json!({"message": format!("DeploymentPlan {id} does not exist")}),
            ));
        };
        if force {
            let d = world.deployments.remove(pos);
            shared.bus.publish("deployment_failed", json!({"id": d.id}));
            return Ok(StatusCode::ACCEPTED.into_response());
        }
        let old = world.deployments[pos].clone();
        let version = world.clock.next_version();
        let mut changes = Vec::new();
        for (app, def) in revert_changes(&old) {
            let target = def.map(|mut def| {
                def["version"] = json!(version);
                def["versionInfo"]["lastScalingAt"] = json!(version);
                def
            });
            changes.push((app, target));
        }
        apply(&mut world, &shared.bus, changes, version, true)?
    };
    shared.wake.notify_one();
    shared.commit().await?;
    Ok(with_deployment(
        Json(d.result_json()).into_response(),
        &d.id,
    ))
}

/// Apps into Marathon's group tree, from the app ids.
fn group_json(world: &World, gid: &str) -> Value {
    let prefix = if gid == "/" {
        "/".to_string()
    } else {
        format!("{gid}/")
    };
    let mut apps = Vec::new();
    let mut subgroups: Vec<String> = Vec::new();
    let mut version = String::new();
    for (id, r) in &world.apps {
        let Some(rest) = id.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(v) = r.def.get("version").and_then(Value::as_str) {
            if v > version.as_str() {
                version = v.to_string();
            }
        }
        match rest.split_once('/') {
            None => apps.push(r.def.clone()),
            Some((sub, _)) => {
                let sub = format!("{prefix}{sub}");
                if !subgroups.contains(&sub) {
                    subgroups.push(sub);
                }
            }
        }
    }
    let groups: Vec<Value> = subgroups.iter().map(|g| group_json(world, g)).collect();
    if version.is_empty() {
        version = format_system_time(std::time::SystemTime::UNIX_EPOCH);
    }
    // No `enforceRole`: Marathon 1.9+ has it, but clients written for older versions reject it.
    json!({"id": gid, "apps": apps, "groups": groups, "pods": [], "dependencies": [], "version": version})
}

async fn root_group(State(shared): Ctx) -> ApiResult {
    let world = shared.lock();
    Ok(Json(group_json(&world, "/")).into_response())
}

async fn group(State(shared): Ctx, Path(id): Path<String>) -> ApiResult {
    let gid = canonical_id(&id);
    let world = shared.lock();
    let exists = gid == "/" || world.apps.keys().any(|a| a.starts_with(&format!("{gid}/")));
    if !exists {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            json!({"message": format!("Group '{gid}' does not exist")}),
        ));
    }
    Ok(Json(group_json(&world, &gid)).into_response())
}

async fn queue(State(shared): Ctx, RawQuery(q): RawQuery) -> ApiResult {
    let q = query_pairs(q.as_deref());
    let offers = q
        .iter()
        .any(|(k, v)| k == "embed" && v == "lastUnusedOffers");
    let now = Instant::now();
    let world = shared.lock();
    let mut items = Vec::new();
    for (id, r) in &world.apps {
        let config = config_of(&r.def);
        let have = world
            .tasks
            .values()
            .filter(|t| &t.app_id == id && t.kill.is_none() && t.config == config)
            .count();
        let count = instances_of(&r.def).saturating_sub(have);
        if count == 0 {
            continue;
        }
        let left = r
            .backoff
            .as_ref()
            .map_or(Duration::ZERO, |b| b.until.saturating_duration_since(now));
        let since = r
            .queued_since
            .map_or_else(super::store::timestamp_now, format_system_time);
        let mut item = json!({
            "app": r.def,
            "count": count,
            "role": "*",
            "delay": {"timeLeftSeconds": left.as_secs(), "overdue": left.is_zero()},
            "since": since,
            "processedOffersSummary": {
                "processedOffersCount": 0,
                "unusedOffersCount": 0,
                "rejectSummaryLastOffers": [],
                "rejectSummaryLaunchAttempt": [],
            },
        });
        if offers {
            item["lastUnusedOffers"] = json!([]);
        }
        items.push(item);
    }
    Ok(Json(json!({ "queue": items })).into_response())
}

/// `DELETE /v2/queue/{app}/delay`: launch again at once.
async fn reset_delay(State(shared): Ctx, Path(rest): Path<String>) -> ApiResult {
    let Some(app) = rest.strip_suffix("/delay").map(canonical_id) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            json!({"message": "not found"}),
        ));
    };
    {
        let mut world = shared.lock();
        let record = world
            .apps
            .get_mut(&app)
            .ok_or_else(|| not_found_app(&app))?;
        record.backoff = None;
    }
    shared.wake.notify_one();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn info(State(shared): Ctx, headers: HeaderMap) -> ApiResult {
    let leader = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_string();
    let hostname = shared.config.hostname.clone();
    let marathon_config = json!({
        "access_control_allow_origin": null,
        "checkpoint": true,
        "decline_offer_duration": 120000,
        "default_network_name": null,
        "env_vars_prefix": null,
        "executor": "//cmd",
        "failover_timeout": 604800,
        "features": [],
        "framework_name": "marathon",
        "ha": false,
        "hostname": hostname,
        "launch_token": 100,
        "launch_token_refresh_interval": 30000,
        "leader_proxy_connection_timeout_ms": 5000,
        "leader_proxy_read_timeout_ms": 10000,
        "local_port_max": super::store::SERVICE_PORT_MAX,
        "local_port_min": super::store::SERVICE_PORT_MIN,
        "master": "local",
        "max_instances_per_offer": 5,
        "mesos_bridge_name": "mesos-bridge",
        "mesos_heartbeat_failure_threshold": 5,
        "mesos_heartbeat_interval": 15000,
        "mesos_leader_ui_url": null,
        "mesos_role": null,
        "mesos_user": null,
        "min_revive_offers_interval": 5000,
        "offer_matching_timeout": 3000,
        "on_elected_prepare_timeout": 180000,
        "reconciliation_initial_delay": 15000,
        "reconciliation_interval": 600000,
        "scale_apps_initial_delay": 15000,
        "scale_apps_interval": 300000,
        "store_cache": true,
        "task_launch_confirm_timeout": 300000,
        "task_launch_timeout": 300000,
        "task_lost_expunge_initial_delay": 300000,
        "task_lost_expunge_interval": 30000,
        "task_reservation_timeout": 20000,
        "webui_url": null,
    });
    Ok(Json(json!({
        "name": "marathon",
        "version": "1.10.0-baton-dev",
        "buildref": "baton-dev-scheduler",
        "elected": true,
        "leader": leader,
        "frameworkId": "baton-dev-framework-0000",
        "marathon_config": marathon_config,
        "zookeeper_config": {
            "zk": "zk://localhost:2181/marathon",
            "zk_compression": true,
            "zk_compression_threshold": 65536,
            "zk_connection_timeout": 10000,
            "zk_max_node_size": 1024000,
            "zk_max_versions": 50,
            "zk_session_timeout": 10000,
            "zk_timeout": 10000,
        },
        "http_config": {"http_port": 8080, "https_port": 8443},
    }))
    .into_response())
}

async fn leader(headers: HeaderMap) -> ApiResult {
    let leader = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    Ok(Json(json!({ "leader": leader })).into_response())
}

// ---------------------------------------------------------------------------------------------
// Events

/// `GET /v2/events`: the SSE stream, optionally filtered by `event_type` (repeatable). The stream
/// ends when the server shuts down.
async fn events(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    method: Method,
    RawQuery(q): RawQuery,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let _ = method;
    let q = query_pairs(q.as_deref());
    let wanted: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v.clone())
        .collect();
    let rx = shared.bus.subscribe();
    // The attach event goes to this subscriber first, then to everybody (as in Marathon).
    let attached = make_event(
        "event_stream_attached",
        json!({"remoteAddress": client_ip(&addr)}),
    );
    shared.bus.publish(
        "event_stream_attached",
        json!({"remoteAddress": client_ip(&addr)}),
    );
    let stop = shared.http_stop.clone();
    let live = stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    // Our own attach event was sent first already.
    .filter({
        let mut skipped_own = false;
        move |e| {
            let skip = !skipped_own && e.event_type == "event_stream_attached";
            if skip {
                skipped_own = true;
            }
            futures::future::ready(!skip)
        }
    });
    let all = stream::once(futures::future::ready(attached))
        .chain(live)
        .filter(move |e| {
            futures::future::ready(wanted.is_empty() || wanted.contains(&e.event_type))
        })
        .map(|e| {
            Ok(SseEvent::default()
                .event(e.event_type)
                .data(e.body.to_string()))
        })
        .take_until(async move { stop.cancelled().await });
    Sse::new(all).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(app_path("a/b"), AppPath::App("/a/b".into()));
        assert_eq!(app_path("/a"), AppPath::App("/a".into()));
        assert_eq!(app_path("a/b/tasks"), AppPath::Tasks("/a/b".into()));
        assert_eq!(
            app_path("a/tasks/a.1"),
            AppPath::Task("/a".into(), "a.1".into())
        );
        assert_eq!(
            app_path("a/versions/2020"),
            AppPath::Version("/a".into(), "2020".into())
        );
    }

    #[test]
    fn queries_and_selectors() {
        let q = query_pairs(Some(
            "embed=apps.tasks&embed=apps.deployments&label=a%3D%3Db",
        ));
        assert_eq!(q.len(), 3);
        assert_eq!(param(&q, "label"), Some("a==b"));
        let s = parse_selectors("baton.dev\\/owner==me, tier in (a, b), x, y!=z").unwrap();
        assert_eq!(s[0], Selector::Eq("baton.dev/owner".into(), "me".into()));
        assert_eq!(
            s[1],
            Selector::In("tier".into(), vec!["a".into(), "b".into()])
        );
        let labels = json!({"baton.dev/owner": "me", "tier": "b", "x": "", "y": "q"});
        assert!(s.iter().all(|sel| matches(labels.as_object(), sel)));
        assert!(!matches(
            labels.as_object(),
            &Selector::Exists("nope".into())
        ));
    }
}
