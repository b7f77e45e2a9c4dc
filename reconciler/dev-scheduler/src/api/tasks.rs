//! `/v2/tasks`: listing and killing tasks. [`kill`] also serves `DELETE /v2/apps/{id}/tasks`
//! and `DELETE /v2/apps/{id}/tasks/{task}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::query::Query;
use super::render::task_json;
use super::{parse_body, with_deployment, ApiError, ApiResult, Ctx};
use crate::deploy::{apply, mark_kill, Decisions};
use crate::store::instances_of;
use crate::tasks::{self, KillReason, TaskState};
use crate::Shared;

/// Kill tasks; with `scale`, lower their apps' instances by as many (a deployment).
pub(super) async fn kill(
    shared: &Arc<Shared>,
    ids: Vec<String>,
    scale: bool,
    force: bool,
) -> ApiResult {
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

/// `GET /v2/tasks`: every task, or those in the `status` (or `status[]`) states asked for.
pub(super) async fn list(State(shared): Ctx, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query::parse(q.as_deref());
    let wanted: Vec<String> = q
        .all("status")
        .chain(q.all("status[]"))
        .map(str::to_ascii_lowercase)
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

/// `POST /v2/tasks/delete`: kill the tasks of `{"ids": [...]}` (400 if one is unknown).
pub(super) async fn delete(State(shared): Ctx, RawQuery(q): RawQuery, body: Bytes) -> ApiResult {
    let q = Query::parse(q.as_deref());
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
    kill(&shared, ids, q.flag("scale", false), q.flag("force", false)).await
}
