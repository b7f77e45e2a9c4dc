//! `/v2/queue`: the launch queue (apps with instances still to start, and their backoff).

use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use super::query::{canonical_id, Query};
use super::{not_found_app, ApiError, ApiResult, Ctx};
use crate::store::{config_of, format_system_time, instances_of};

/// `GET /v2/queue`: apps with instances still to launch, and their launch delay.
pub(super) async fn list(State(shared): Ctx, RawQuery(q): RawQuery) -> ApiResult {
    let q = Query::parse(q.as_deref());
    let offers = q.all("embed").any(|v| v == "lastUnusedOffers");
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
            .map_or_else(crate::store::timestamp_now, format_system_time);
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
pub(super) async fn reset_delay(State(shared): Ctx, Path(rest): Path<String>) -> ApiResult {
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
