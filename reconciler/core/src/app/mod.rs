//! Marathon's app model, as Baton reads it.
//!
//! - [`live`]: reading apps out of Marathon responses (and saved `--live` files).
//! - [`sse`]: parsing of the `/v2/events` Server-Sent Events stream.
//! - [`is_up`]: whether a live app's tasks are all up.

pub mod live;
pub mod sse;

use serde_json::Value;

/// What apply listens for on the event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedulerEvent {
    DeploymentSuccess { id: String },
    DeploymentFailed { id: String },
}

/// Whether a live app's tasks are all up: `tasksRunning` (and `tasksHealthy` when it has health
/// checks) reach `instances`. Apps without the counters (saved files) count as up.
pub fn is_up(app: &Value) -> bool {
    let want = app.get("instances").and_then(Value::as_u64).unwrap_or(1);
    let count = |k: &str| app.get(k).and_then(Value::as_u64);
    let checked = app
        .get("healthChecks")
        .and_then(Value::as_array)
        .is_some_and(|h| !h.is_empty());
    let ready = if checked {
        count("tasksHealthy")
    } else {
        count("tasksRunning")
    };
    ready.is_none_or(|n| n >= want)
}
