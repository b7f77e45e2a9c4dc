//! `baton serve`: the daemon.
//!
//! - [`serve`]: the wiring (source, scheduler client, loop, HTTP, event watcher, notifier under
//!   one shutdown tree).
//! - [`reconcile`]: the trigger loop and its cycles (full, fast path for a push, partial for
//!   scheduler events).
//! - [`server`]: the HTTP API (`/api/*`, `/healthz`, `/readyz`, the status page), with webhooks
//!   from [`hooks`] and the gatekeeper merged in.
//! - [`ha_wiring`]: HA on ZooKeeper joined to the daemon (status, metrics, takeover, relayed pushes).
//! - [`hooks`]: push webhooks of each forge: signature, payload, branch filter, replay window.
//! - [`state`]: what the daemon persists between runs (sync state per revision).
//! - [`sync_requests`]: `POST /api/sync` requests (ids, apps) handed to the loop's next manual sync.
//! - [`state_dir`]: the state directory: private (0700), files replaced atomically (0600).
//! - [`ledger_file`]: the drift ledger's file in the state directory.
//! - [`drift_keeper`]: the daemon's drift state between cycles (ledger, dashboard, corrections).
//! - [`attribution_feed`]: who changed what, from the scheduler's event stream.
//! - [`dashboard`]: the status page, `/api/drift` and `/metrics`.
//! - [`metrics`]: Prometheus text exposition of the daemon's counters and histograms.
//! - [`notifications`]: JSON / Slack webhooks on sync failure, drift and deployments.

pub mod attribution_feed;
pub mod auth;
pub mod dashboard;
pub mod drift_keeper;
pub mod ha_wiring;
pub mod hooks;
pub mod ledger_file;
pub mod metrics;
pub mod notifications;
pub mod reconcile;
pub mod rollout;
pub mod serve;
pub mod server;
pub mod state;
pub mod state_dir;
pub mod sync_requests;
