//! The HTTP API: Marathon's `/v2` endpoints with its request and response shapes, status codes
//! and query defaults (`partialUpdate=true` on `PUT /v2/apps/{id}`, `force=true` on
//! `DELETE /v2/apps/{id}`, `force=false` elsewhere).
//!
//! Handlers parse, lock the [`World`](crate::store::World) briefly, make a change durable
//! (`Shared::commit`) and answer; the scheduling loop does the rest. One module per resource:
//! - `query`: query strings, `embed`, label selectors, app paths (pure).
//! - `render`: app and task answers.
//! - `apps`: `/v2/apps` and `/v2/apps/{*rest}` (an app, its tasks, its versions, restart).
//! - `tasks`: `/v2/tasks`, and killing tasks (with `scale`) for `/v2/apps/.../tasks` too.
//! - `deployments`: `/v2/deployments` (list; roll back or, with `force`, stop).
//! - `groups`: `/v2/groups`, the group tree made from the app ids.
//! - `queue`: `/v2/queue` (the launch queue) and resetting an app's launch delay.
//! - `info`: `/v2/info`, `/v2/leader`, `/ping`, and `/baton-dev/requests` (request counts).
//! - `events`: the `/v2/events` SSE stream.
//!
//! App ids contain slashes, so `/v2/apps/{*rest}` is split by hand the way Marathon resolves
//! it (`query::app_path`).

mod apps;
mod deployments;
mod events;
mod groups;
mod info;
mod query;
mod queue;
mod render;
mod tasks;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::deploy::Reject;
use crate::Shared;

type Ctx = State<Arc<Shared>>;

/// Every route of the API, each request counted (`info::count_request`).
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ping", get(info::ping))
        .route("/v2/info", get(info::info))
        .route("/v2/leader", get(info::leader))
        // Marathon (JAX-RS) takes a collection's path with a trailing slash too: shpkpr sends
        // its multi-app deploy to `PUT /v2/apps/`.
        .route("/v2/apps", apps_collection())
        .route("/v2/apps/", apps_collection())
        .route(
            "/v2/apps/{*rest}",
            get(apps::get_one)
                .put(apps::put_one)
                .patch(apps::patch_one)
                .post(apps::post_one)
                .delete(apps::delete_one),
        )
        .route("/v2/tasks", get(tasks::list))
        .route("/v2/tasks/", get(tasks::list))
        .route("/v2/tasks/delete", post(tasks::delete))
        .route("/v2/deployments", get(deployments::list))
        .route("/v2/deployments/", get(deployments::list))
        .route("/v2/deployments/{id}", delete(deployments::delete))
        .route("/v2/groups", get(groups::root))
        .route("/v2/groups/", get(groups::root))
        .route("/v2/groups/{*id}", get(groups::one))
        .route("/v2/queue", get(queue::list))
        .route("/v2/queue/", get(queue::list))
        .route("/v2/queue/{*rest}", delete(queue::reset_delay))
        .route("/v2/events", get(events::stream))
        .route("/baton-dev/requests", get(info::request_counts))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            info::count_request,
        ))
        .with_state(shared)
}

/// `/v2/apps` itself: list, create, update several.
fn apps_collection() -> axum::routing::MethodRouter<Arc<Shared>> {
    get(apps::list)
        .post(apps::create)
        .put(apps::put_many)
        .patch(apps::patch_many)
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
impl From<crate::DevError> for ApiError {
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

/// The answer with Marathon's `Marathon-Deployment-Id` header.
fn with_deployment(mut resp: Response, id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(id) {
        resp.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    resp
}

fn client_ip(addr: &SocketAddr) -> String {
    addr.ip().to_string()
}

/// 405, as Marathon answers a method a path does not take.
fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        json!({"message": "HTTP 405 Method Not Allowed"}),
    )
}
