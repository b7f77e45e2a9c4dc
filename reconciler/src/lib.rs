//! Baton reconciler: GitOps for Marathon.
//!
//! Layout (see ARCHITECTURE.md for the map, the data flow and the invariants):
//! - [`spec`]: load, parse, validate and normalise app specs (pure).
//! - [`drift`]: live x git x API events -> drift report, ledger, self-heal decisions (pure).
//! - [`drift_keeper`]: the daemon's drift state between cycles (ledger, dashboard, corrections).
//! - [`drift_report`]: drift reports as text, Markdown and HTML.
//! - [`metrics`]: Prometheus text exposition of the daemon's counters and histograms.
//! - [`notifications`]: JSON / Slack webhooks on sync failure, drift and deployments (queued, retried).
//! - [`dashboard`]: the status page, `/api/drift` and `/metrics` of `baton serve`.
//! - [`attribution_feed`]: who changed what, from the scheduler's event stream.
//! - [`diff`]: field-level differences as JSON pointers (pure).
//! - [`ownership`]: the labels that mark what Baton owns.
//! - [`plan`]: desired x live x policy -> waves of creates, updates, deletes (pure).
//! - [`source`]: where specs come from (a directory; git later).
//! - [`scheduler`]: the scheduler seam, Marathon client, the dev scheduler.
//! - [`apply`]: executes a plan on a scheduler; the only code that changes it.
//! - [`dev`]: `baton dev`, the dev scheduler + apply + directory watch in one process.
//! - [`commands`]: the one-shot commands and their exit codes.
//! - [`report`]: plans and diagnostics for terminals and as JSON.
//! - [`gatekeeper`]: `POST /v1/secret-zero`: vouches for fresh tasks with wrapped secret ids.
//! - [`vault_admin`]: the reconciler's Vault client (policies, roles, wrapped secret ids).
//! - [`secrets`]: Vault policy, AppRole role and bootstrap env per app, and the Vault plan (pure).
//! - [`userinfo`]: credentials written into URLs, taken out so that URLs can be shown.
//! - [`state_dir`]: `serve`'s state directory: private (0700), files replaced atomically (0600).
//! - [`listen`]: how the HTTP servers accept and hold connections (timeouts, connection caps).

pub mod apply;
pub mod attribution_feed;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod dev;
pub mod diff;
pub mod drift;
pub mod drift_keeper;
pub mod drift_report;
pub mod gatekeeper;
pub mod hooks;
pub mod listen;
pub mod metrics;
pub mod notifications;
pub mod ownership;
pub mod plan;
pub mod reconcile;
pub mod report;
pub mod scheduler;
pub mod secrets;
pub mod serve;
pub mod server;
pub mod source;
pub mod spec;
pub mod state;
pub mod state_dir;
pub mod userinfo;
pub mod vault_admin;
