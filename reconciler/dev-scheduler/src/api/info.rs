//! What the server says about itself: `GET /ping`, `GET /v2/info`, `GET /v2/leader`, and the
//! request counts of `GET /baton-dev/requests` (not Marathon API, for benchmarks).

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::{ApiResult, Ctx};

/// `GET /baton-dev/requests` (not Marathon API): the counts of [`count_request`].
pub(super) async fn request_counts(State(shared): Ctx) -> ApiResult {
    let counts = shared
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Json(json!(counts)).into_response())
}

/// Count each API request by method and route (`GET /v2/apps/*`), for benchmarks. Reading the
/// counts (`/baton-dev/...`) is not counted, so it leaves them as they were.
pub(super) async fn count_request(
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

/// `GET /v2/info`: a Marathon 1.10 that is always the elected leader.
pub(super) async fn info(State(shared): Ctx, headers: HeaderMap) -> ApiResult {
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
        "local_port_max": crate::store::SERVICE_PORT_MAX,
        "local_port_min": crate::store::SERVICE_PORT_MIN,
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

/// `GET /v2/leader`: this server, as the client addressed it.
pub(super) async fn leader(headers: HeaderMap) -> ApiResult {
    let leader = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    Ok(Json(json!({ "leader": leader })).into_response())
}

/// `GET /ping` as Marathon answers it (`SystemResource.ping`): the body and type depend on the
/// `Accept` header. A client that wants JSON gets the JSON string `"pong"` (marathon-deploy
/// compares with exactly that); `*/*`, `text/*` or no header get `pong` as `text/plain`; a
/// client that accepts none of these gets 204 and no body.
pub(super) async fn ping(headers: HeaderMap) -> Response {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    match ping_answer((!accept.trim().is_empty()).then_some(accept.as_str())) {
        Some((body, media_type)) => {
            let mut resp = body.into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
            resp
        }
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The media types `/ping` can answer in, in Marathon's order of preference (`text/plain`
/// first, "in case client accepts */* or text/*").
const PING_VARIANTS: [&str; 3] = ["text/plain", "text/html", "application/json"];

/// The body and `Content-Type` of a ping answer for an `Accept` header (`None`: absent), or
/// `None` when the client accepts none of [`PING_VARIANTS`]. As JAX-RS selects a variant: the
/// client's media ranges by quality (then the more specific first, then in the order given),
/// each matched against the variants in their order; a range with `q=0` matches nothing. Pure.
fn ping_answer(accept: Option<&str>) -> Option<(&'static str, &'static str)> {
    let Some(accept) = accept else {
        return Some(("pong", "text/plain"));
    };
    // (quality in thousandths, specificity, position, type, subtype)
    let mut ranges: Vec<(u16, u8, usize, String, String)> = Vec::new();
    for (i, item) in accept.split(',').enumerate() {
        let mut parts = item.split(';');
        let range = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let Some((kind, sub)) = range.split_once('/') else {
            continue; // not a media range: ignored, as JAX-RS does with a malformed one
        };
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").map(str::to_string))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        let specificity = u8::from(kind != "*") + u8::from(sub != "*");
        ranges.push((
            (q * 1000.0).round() as u16,
            specificity,
            i,
            kind.trim().to_string(),
            sub.trim().to_string(),
        ));
    }
    ranges.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let chosen = ranges
        .iter()
        .filter(|r| r.0 > 0)
        .find_map(|(_, _, _, kind, sub)| {
            PING_VARIANTS.iter().find(|v| {
                let (vk, vs) = v.split_once('/').unwrap_or((v, ""));
                (kind == "*" || kind == vk) && (sub == "*" || sub == vs)
            })
        })?;
    Some(match *chosen {
        "application/json" => ("\"pong\"", "application/json"),
        "text/html" => ("pong", "text/html"),
        _ => ("pong", "text/plain"),
    })
}

#[cfg(test)]
mod tests {
    use super::ping_answer;

    #[test]
    fn ping_answers_in_the_media_type_the_client_accepts() {
        let json = Some(("\"pong\"", "application/json"));
        let text = Some(("pong", "text/plain"));
        assert_eq!(ping_answer(None), text);
        assert_eq!(ping_answer(Some("*/*")), text);
        assert_eq!(ping_answer(Some("text/*")), text);
        assert_eq!(ping_answer(Some("application/json")), json);
        assert_eq!(ping_answer(Some("application/json, text/plain")), json);
        assert_eq!(
            ping_answer(Some("text/plain;q=0.5, application/json")),
            json
        );
        assert_eq!(ping_answer(Some("application/*;q=0.9, */*;q=0.1")), json);
        assert_eq!(ping_answer(Some("text/html")), Some(("pong", "text/html")));
        assert_eq!(ping_answer(Some("application/json;q=0, */*")), text);
        assert_eq!(ping_answer(Some("image/png")), None);
        assert_eq!(ping_answer(Some("garbage")), None);
    }
}
