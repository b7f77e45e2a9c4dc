//! Baton reconciler: GitOps for Marathon.
//!
//! Layout (see ARCHITECTURE.md for the map, the data flow and the invariants):
//! - [`spec`]: load, parse, validate and normalise app specs (pure).
//! - [`diff`]: field-level differences as JSON pointers (pure).
//! - [`ownership`]: the labels that mark what Baton owns.
//! - [`plan`]: desired x live x policy -> waves of creates, updates, deletes (pure).
//! - [`source`]: where specs come from (a directory; git later).
//! - [`scheduler`]: the scheduler seam, Marathon client, the dev scheduler.
//! - [`commands`]: the one-shot commands and their exit codes.
//! - [`report`]: plans and diagnostics for terminals and as JSON.

pub mod commands;
pub mod diff;
pub mod ownership;
pub mod plan;
pub mod report;
pub mod scheduler;
pub mod source;
pub mod spec;
