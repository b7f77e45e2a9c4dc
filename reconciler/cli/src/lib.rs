//! The `baton` binary's library part: what joins the dev scheduler and the reconciler, kept
//! out of both so that neither rebuilds when only the other changes.
//!
//! - [`dev`]: `baton dev`, the dev scheduler + apply + directory watch in one process.
//! - [`environments`]: `baton diff-env`, `baton promote`, an environment's Marathon.
//! - [`rollout`]: `baton rollout`, a client of a running `baton serve`'s rollout API.

pub mod dev;
pub mod environments;
pub mod rollout;
