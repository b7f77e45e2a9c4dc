//! What `baton serve` shows people and Prometheus: the status page (`GET /`, one static HTML
//! file with inline CSS and JS, compiled in), the live drift report (`GET /api/drift`, schema
//! `schemas/drift.schema.json`) and the metrics (`GET /metrics`).
//!
//! The loop publishes each fresh [`DriftReport`] with [`Dashboard::publish`] (or patches the
//! entries of a few apps with [`Dashboard::update`]); the JSON is made on the first request
//! after a change and kept, so further requests cost a clone of an `Arc`, and a change of a few
//! apps costs no serialisation of 5,000.

use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::daemon::metrics::Metrics;
use baton_core::drift::DriftReport;

/// The status page.
pub const STATUS_PAGE: &str = include_str!("dashboard/status.html");

/// The latest drift report (and its JSON, once asked for) and the metrics registry.
#[derive(Debug)]
pub struct Dashboard {
    drift: RwLock<Option<DriftReport>>,
    /// The JSON of `drift`; `None` after a change until the next request.
    drift_json: Mutex<Option<Bytes>>,
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
            drift: RwLock::new(None),
            drift_json: Mutex::new(None),
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
        self.publish_owned(report.clone(), now);
    }

    /// [`publish`](Self::publish), taking the report.
    pub fn publish_owned(&self, report: DriftReport, now: u64) {
        self.metrics.set_drift(&report, now);
        let mut guard = self.drift.write().unwrap_or_else(|e| e.into_inner());
        *guard = Some(report);
        // Cleared under the write lock: a request serialising the old report holds the read
        // lock, so it cannot store its JSON after this.
        *self.drift_json.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Change the published report in place (`None` if nothing was published yet: then `f`
    /// does not run) and update the drift gauges.
    pub fn update<T>(&self, now: u64, f: impl FnOnce(&mut DriftReport) -> T) -> Option<T> {
        let mut guard = self.drift.write().unwrap_or_else(|e| e.into_inner());
        let report = guard.as_mut()?;
        let out = f(report);
        self.metrics.set_drift(report, now);
        *self.drift_json.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Some(out)
    }

    /// Read the published report.
    pub fn with_report<T>(&self, f: impl FnOnce(Option<&DriftReport>) -> T) -> T {
        f(self
            .drift
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref())
    }

    /// The report as JSON (empty before the first report), serialised at most once per change.
    fn drift_json(&self) -> Bytes {
        if let Some(json) = self
            .drift_json
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return json;
        }
        let report = self.drift.read().unwrap_or_else(|e| e.into_inner());
        let Some(report) = report.as_ref() else {
            return Bytes::new();
        };
        match serde_json::to_vec(report) {
            Ok(json) => {
                let json = Bytes::from(json);
                // Cached only if no change came in meanwhile (the read lock keeps it out).
                *self.drift_json.lock().unwrap_or_else(|e| e.into_inner()) = Some(json.clone());
                json
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialise the drift report");
                Bytes::new()
            }
        }
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

/// Serve the status page read-only (`GET /`, `/api/drift`, `/metrics`; no API, no login) on
/// `listener` until `shutdown`, within the daemon's connection limits: what `baton dev` shows.
pub async fn serve_read_only(
    listener: tokio::net::TcpListener,
    dashboard: Arc<Dashboard>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    crate::daemon::server::run_router(
        listener,
        router(dashboard),
        crate::daemon::server::limits(),
        Default::default(),
        shutdown,
    )
    .await
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
        [(header::CONTENT_TYPE, crate::daemon::metrics::CONTENT_TYPE)],
        d.metrics.render() + &d.extra_metrics(),
    )
        .into_response()
}
