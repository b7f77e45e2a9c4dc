//! The `baton` binary's library part: what joins the dev scheduler and the reconciler, kept
//! out of both so that neither rebuilds when only the other changes.
//!
//! - [`dev`]: `baton dev`, the dev scheduler + apply + directory watch in one process.
//! - [`client`]: the HTTP client of a running `baton serve` every client command shares.
//! - [`remote`]: `baton status`, `sync`, `history` against a running `baton serve`.
//! - [`environments`]: `baton diff-env`, `baton promote`, an environment's Marathon.
//! - [`rollout`]: `baton rollout`, a client of a running `baton serve`'s rollout API.

pub mod client;
pub mod dev;
pub mod environments;
pub mod remote;
pub mod rollout;
