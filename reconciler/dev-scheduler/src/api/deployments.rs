//! `/v2/deployments`: the deployments in progress; deleting one rolls it back, or with
//! `force=true` only stops it.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::query::Query;
use super::{with_deployment, ApiError, ApiResult, Ctx};
use crate::deploy::{self, apply, revert_changes};

/// `GET /v2/deployments`: the deployments in progress.
pub(super) async fn list(State(shared): Ctx) -> ApiResult {
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
pub(super) async fn delete(
    State(shared): Ctx,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let force = Query::parse(q.as_deref()).flag("force", false);
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
