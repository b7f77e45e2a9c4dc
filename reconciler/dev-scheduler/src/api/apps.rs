//! `/v2/apps`: listing, creating, updating (one or several, whole or partial, or back to a
//! version), deleting apps, and an app's tasks and versions.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::query::{app_path, canonical_id, AppFilter, AppPath, Embed, Query};
use super::render::{app_json, app_json_with, task_json};
use super::{
    client_ip, invalid, method_not_allowed, not_found_app, parse_body, tasks, with_deployment,
    ApiError, ApiResult, Ctx,
};
use crate::deploy::{apply, Reject};
use crate::store::{same_definition, World};
use crate::tasks::Task;
use crate::validate::{check_id, validate_app};
use crate::Shared;

/// `GET /v2/apps`: the apps that pass the filters, with counts and deployments by default.
pub(super) async fn list(State(shared): Ctx, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query::parse(q.as_deref());
    let embed = Embed::parse(
        &q,
        Embed {
            counts: true,
            deployments: true,
            ..Embed::default()
        },
    );
    let filter = AppFilter::parse(&q)
        .map_err(|m| ApiError(StatusCode::BAD_REQUEST, json!({"message": m})))?;
    let world = shared.lock();
    let mut tasks_by_app: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for t in world.tasks.values() {
        tasks_by_app.entry(t.app_id.as_str()).or_default().push(t);
    }
    let apps: Vec<Value> = world
        .apps
        .iter()
        .filter(|(id, r)| filter.admits(id, &r.def))
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
    with_labels(&mut app);
    let previous = world.apps.get(id).map(|r| r.def.clone());
    world.assign_service_ports(id, &mut app, previous.as_ref());
    let version_info = match &previous {
        Some(prev) if same_definition(prev, &app) => {
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

/// Marathon always renders `labels` (`{}` when there are none), and clients rely on it:
/// marathon-lb indexes `app['labels']` and, on an app without them, configures no app at all.
pub(super) fn with_labels(app: &mut Value) {
    if let Some(obj) = app.as_object_mut() {
        let labels = obj.entry("labels").or_insert_with(|| json!({}));
        if labels.is_null() {
            *labels = json!({});
        }
    }
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

/// `POST /v2/apps`: create one app (201, its deployment in `Marathon-Deployment-Id`).
pub(super) async fn create(
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
pub(super) async fn put_many(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    multi_update(shared, addr, uri, q, body, false).await
}

pub(super) async fn patch_many(
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
    let q = Query::parse(q.as_deref());
    let force = q.flag("force", false);
    let partial = patch || q.flag("partialUpdate", true);
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

/// `GET /v2/apps/{id}`, `.../tasks`, `.../versions`, `.../versions/{v}`.
pub(super) async fn get_one(
    State(shared): Ctx,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(q.as_deref());
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
            let mut def = def.clone();
            with_labels(&mut def);
            Ok(Json(def).into_response())
        }
        AppPath::Task(..) | AppPath::Restart(_) => Err(method_not_allowed()),
    }
}

/// `PUT /v2/apps/{id}`: replace (or with `partialUpdate`, the default, merge into) an app;
/// creates it if absent.
pub(super) async fn put_one(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let q = Query::parse(q.as_deref());
    let AppPath::App(id) = app_path(&rest) else {
        return Err(method_not_allowed());
    };
    let partial = q.flag("partialUpdate", true);
    update_one(shared, addr, uri, id, q, body, partial, false).await
}

/// `PATCH /v2/apps/{id}`: merge into an existing app.
pub(super) async fn patch_one(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> ApiResult {
    let q = Query::parse(q.as_deref());
    let AppPath::App(id) = app_path(&rest) else {
        return Err(method_not_allowed());
    };
    update_one(shared, addr, uri, id, q, body, true, true).await
}

#[allow(clippy::too_many_arguments)]
async fn update_one(
    shared: Arc<Shared>,
    addr: SocketAddr,
    uri: Uri,
    id: String,
    q: Query,
    body: Bytes,
    partial: bool,
    must_exist: bool,
) -> ApiResult {
    if let Some(m) = check_id(&id) {
        return Err(invalid(vec![("/id".into(), m)]));
    }
    let force = q.flag("force", false);
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

/// `POST /v2/apps/{id}/restart`: a new version of the app with the same definition, and a
/// deployment that replaces every task under its `upgradeStrategy` (Marathon's
/// `markedForRestarting`: a config change without a change of fields). `force=false` by default,
/// as Marathon: an app a deployment locks is refused (409) unless forced. Answers
/// `{deploymentId, version}`; 404 for an unknown app.
pub(super) async fn post_one(
    State(shared): Ctx,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(q.as_deref());
    let AppPath::Restart(id) = app_path(&rest) else {
        return Err(method_not_allowed());
    };
    let force = q.flag("force", false);
    let d = {
        let mut world = shared.lock();
        let mut def = world
            .apps
            .get(&id)
            .map(|r| r.def.clone())
            .ok_or_else(|| not_found_app(&id))?;
        let version = world.clock.next_version();
        if let Some(obj) = def.as_object_mut() {
            obj.insert("version".into(), json!(version));
            obj.insert(
                "versionInfo".into(),
                json!({"lastScalingAt": version, "lastConfigChangeAt": version}),
            );
        }
        apply(
            &mut world,
            &shared.bus,
            vec![(id.clone(), Some(def))],
            version,
            force,
        )?
    };
    shared.wake.notify_one();
    shared.commit().await?;
    Ok(with_deployment(
        Json(d.result_json()).into_response(),
        &d.id,
    ))
}

/// `DELETE /v2/apps/{id}` (`force=true` by default, as Marathon), `.../tasks`, `.../tasks/{task}`.
pub(super) async fn delete_one(
    State(shared): Ctx,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    uri: Uri,
    Path(rest): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let q = Query::parse(q.as_deref());
    match app_path(&rest) {
        AppPath::App(id) => {
            // Marathon's default for DELETE /v2/apps/{id} is force=true.
            let force = q.flag("force", true);
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
            tasks::kill(&shared, ids, q.flag("scale", false), q.flag("force", false)).await
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
            let scale = q.flag("scale", false);
            let resp = tasks::kill(&shared, vec![task], scale, q.flag("force", false)).await?;
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
        _ => Err(method_not_allowed()),
    }
}
