//! The scheduler seam: everything Baton needs from Marathon (or, later, Nomad).
//!
//! - [`Scheduler`]: the operations the reconciler's `apply` uses; implemented by
//!   [`marathon::Marathon`] and, for tests, by `fake::Fake` (feature `test-util`).
//! - [`marathon`]: the Marathon REST client.
//! - `fake` (feature `test-util`): an in-memory scheduler with controllable failures that
//!   records every call; not in the production library.
//!
//! Marathon's app model (live-app parsing, `is_up`, the event-stream parser) is pure and lives
//! in `baton_core::app`.

#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod marathon;

use std::future::Future;

use serde_json::Value;
use tokio::sync::mpsc;

use baton_core::spec::AppId;

/// Errors talking to a scheduler.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("scheduler client configuration: {0}")]
    Config(String),
    #[error("cannot reach the scheduler at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("unexpected answer from {url}: {reason}")]
    Protocol { url: String, reason: String },
    /// 409: the app is locked by running deployments.
    #[error("{url}: the app is locked by deployment(s) {}", deployments.join(", "))]
    Locked {
        url: String,
        deployments: Vec<String>,
    },
    /// 422: the scheduler rejected the definition; `details` is its answer, verbatim.
    #[error("{url} rejected the definition: {message}")]
    Invalid {
        url: String,
        message: String,
        details: Vec<InvalidDetail>,
    },
    /// 404 on a single resource.
    #[error("{url}: not found")]
    NotFound { url: String },
    /// Not sent: this replica may not write now (HA: it does not hold the leader's write
    /// lease). Nothing reached the scheduler.
    #[error("not sent: {reason}")]
    Fenced { reason: String },
}

/// One entry of a 422 answer's `details`: a path in the submitted JSON and its errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDetail {
    pub path: String,
    pub errors: Vec<String>,
}

/// The answer to a change: the deployment it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub deployment_id: String,
    pub version: String,
}

/// A running deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    pub affected_apps: Vec<String>,
}

pub use baton_core::app::SchedulerEvent;

/// Events from a scheduler; the reader behind it stops when this is dropped.
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<SchedulerEvent>,
    _reader: Option<AbortOnDrop>,
}

impl EventStream {
    /// A stream fed by `rx`; `reader` (if any) is aborted when the stream is dropped.
    pub fn new(
        rx: mpsc::UnboundedReceiver<SchedulerEvent>,
        reader: Option<tokio::task::JoinHandle<()>>,
    ) -> Self {
        EventStream {
            rx,
            _reader: reader.map(AbortOnDrop),
        }
    }

    /// The next event; `None` once the stream has ended (callers fall back to polling).
    pub async fn next(&mut self) -> Option<SchedulerEvent> {
        self.rx.recv().await
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What apply needs from a scheduler. Only the reconciler's `apply` calls the writing methods.
///
/// Apps are raw JSON values (as [`baton_core::plan::plan`] takes them), so a backend need not model
/// every field it serves.
pub trait Scheduler: Send + Sync {
    /// Every app with its tasks, deployments and last task failure.
    fn list_apps(&self) -> impl Future<Output = Result<Vec<Value>, SchedulerError>> + Send;

    /// Create or fully replace an app (never a merge).
    fn put_app(
        &self,
        id: &AppId,
        body: &Value,
    ) -> impl Future<Output = Result<Written, SchedulerError>> + Send;

    /// Delete an app. `force` overrides a deployment lock; apply passes `true` only when the
    /// user asked for it explicitly.
    fn delete_app(
        &self,
        id: &AppId,
        force: bool,
    ) -> impl Future<Output = Result<Written, SchedulerError>> + Send;

    /// The running deployments.
    fn deployments(&self) -> impl Future<Output = Result<Vec<Deployment>, SchedulerError>> + Send;

    /// Roll a deployment back (a new deployment that reverts it; never a forced stop).
    fn rollback(
        &self,
        deployment_id: &str,
    ) -> impl Future<Output = Result<Written, SchedulerError>> + Send;

    /// Why an app does not come up, in words (unmatched offers, last task failure), if known.
    fn diagnose(&self, id: &AppId) -> impl Future<Output = Option<String>> + Send;

    /// Subscribe to deployment events.
    fn events(&self) -> impl Future<Output = Result<EventStream, SchedulerError>> + Send;

    /// One app by id, as [`list_apps`](Self::list_apps) serves it; `None` when it does not exist.
    /// The default lists everything; backends with a by-id endpoint override it, so a cycle
    /// touching a few apps costs O(changed), not O(apps).
    fn get_app(
        &self,
        id: &AppId,
    ) -> impl Future<Output = Result<Option<Value>, SchedulerError>> + Send {
        async move {
            let apps = self.list_apps().await?;
            Ok(apps
                .into_iter()
                .find(|a| a.get("id").and_then(Value::as_str) == Some(id.as_str())))
        }
    }
}
