//! What `baton serve` shows people and Prometheus: the status page (`GET /`, one static HTML
//! file with inline CSS and JS, compiled in), the live drift report (`GET /api/drift`, schema
//! `schemas/drift.schema.json`) and the metrics (`GET /metrics`).
//!
//! The loop publishes each fresh [`DriftReport`] with [`Dashboard::publish`]; the report is
//! serialised once there, so a request costs a clone of an `Arc`, not a serialisation of 5,000
//! apps.

use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::drift::DriftReport;
use crate::metrics::Metrics;

/// The status page.
pub const STATUS_PAGE: &str = include_str!("dashboard/status.html");

/// The latest drift report (as JSON) and the metrics registry.
#[derive(Debug)]
pub struct Dashboard {
    drift: RwLock<Bytes>,
    pub metrics: Arc<Metrics>,
    /// More exposition text appended to `/metrics` (e.g. the secret-zero gatekeeper's counters).
    extra: RwLock<Vec<MetricsSource>>,
}

/// A function rendering Prometheus text, appended to `/metrics`.
#[derive(Clone)]
pub struct MetricsSource(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSource")
    }
}

impl Dashboard {
    /// An empty dashboard: `/api/drift` answers 503 until the first report is published.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Dashboard {
            drift: RwLock::new(Bytes::new()),
            metrics,
            extra: RwLock::new(Vec::new()),
        })
    }

    /// Append `source`'s text to every `/metrics` answer.
    pub fn add_metrics_source(&self, source: MetricsSource) {
        self.extra
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    fn extra_metrics(&self) -> String {
        let sources = self.extra.read().unwrap_or_else(|e| e.into_inner()).clone();
        sources.iter().map(|s| (s.0)()).collect()
    }

    /// Make `report` the one `/api/drift` serves, and update the drift gauges.
    pub fn publish(&self, report: &DriftReport, now: u64) {
        self.metrics.set_drift(report, now);
        match serde_json::to_vec(report) {
            Ok(json) => *self.drift.write().unwrap_or_else(|e| e.into_inner()) = Bytes::from(json),
            Err(e) => tracing::warn!(error = %e, "cannot serialise the drift report"),
        }
    }

    fn drift_json(&self) -> Bytes {
        self.drift.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `GET /`, `GET /api/drift`, `GET /metrics`. Merge it into the daemon's router.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(|| async { Html(STATUS_PAGE) }))
        .route("/api/drift", get(drift))
        .route("/metrics", get(metrics))
        .with_state(dashboard)
}

async fn drift(State(d): State<Arc<Dashboard>>) -> Response {
    let body = d.drift_json();
    if body.is_empty() {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "no drift report yet: the first reconcile cycle has not finished\n",
        )
            .into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn metrics(State(d): State<Arc<Dashboard>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        d.metrics.render() + &d.extra_metrics(),
    )
        .into_response()
}
