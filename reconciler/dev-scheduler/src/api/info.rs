//! What the server says about itself: `GET /v2/info`, `GET /v2/leader`, and the request
//! counts of `GET /baton-dev/requests` (not Marathon API, for benchmarks).

use axum::extract::State;
use axum::http::{header, HeaderMap};
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
