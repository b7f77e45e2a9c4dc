//! `GET /v2/groups`: Marathon's group tree, made from the app ids (the dev scheduler keeps no
//! groups of its own; a group exists while an app is under it).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::query::canonical_id;
use super::{ApiError, ApiResult, Ctx};
use crate::store::{format_system_time, World};

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
            None => {
                let mut def = r.def.clone();
                super::apps::with_labels(&mut def);
                apps.push(def);
            }
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

/// `GET /v2/groups`: the root group.
pub(super) async fn root(State(shared): Ctx) -> ApiResult {
    let world = shared.lock();
    Ok(Json(group_json(&world, "/")).into_response())
}

/// `GET /v2/groups/{id}`: a group that holds at least one app (404 otherwise).
pub(super) async fn one(State(shared): Ctx, Path(id): Path<String>) -> ApiResult {
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
