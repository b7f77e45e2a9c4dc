//! Baton reconciler: GitOps for Marathon. The I/O shell around the pure core
//! ([`baton_core`]): where specs come from, how plans are written to a scheduler, the one-shot
//! commands and the daemon.
//!
//! Layout (see ARCHITECTURE.md for the crates, the data flow and the invariants):
//! - [`source`]: where specs come from: a directory (watched), or a git repo (fetched, cached).
//! - [`apply`]: executes a plan on a scheduler; the only code that changes it.
//! - [`rollback`]: `baton rollback APP --to COMMIT`: an app's old spec committed back (git CLI).
//! - [`progress`]: `baton apply`'s task counts on a terminal while deployments run.
//! - [`commands`]: the one-shot commands (`validate`, `plan`, `apply`, `drift`) and their exit codes.
//! - [`config`]: the configuration of every command: flags > environment > file, checked before
//!   anything binds or connects.
//! - [`daemon`]: `baton serve`: the trigger loop and its cycles, HTTP API, webhooks, state,
//!   drift keeper, status page, metrics, notifications.
//! - [`secret_zero`]: the reconciler's side of secret zero: its Vault client, the cycle's Vault
//!   wiring and the `/v1/secret-zero` gatekeeper.

pub mod apply;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod environment;
pub mod ha;
pub mod progress;
pub mod rollback;
pub mod secret_zero;
pub mod source;
