//! Baton's pure core: what Baton decides, as functions of data. No I/O: no async runtime, no
//! network, git or OS crates in its dependency tree (`tests/purity.rs` checks `cargo tree`),
//! and no `std::fs`, `SystemTime::now` or `Instant::now` (banned by `clippy.toml`; the caller
//! passes `now`). Files come in as bytes, diagnostics and decisions go out as values.
//!
//! - [`spec`]: load, parse, validate and normalise app specs; defaults; canonical form.
//! - [`diff`]: field-level differences as JSON pointers.
//! - [`ownership`]: the labels that mark what Baton owns, and what they say of a live app.
//! - [`plan`]: desired x live x policy -> waves of creates, updates, deletes.
//! - [`report`]: plans and diagnostics for terminals and as JSON.
//! - [`drift`]: live x git x API events -> drift report, ledger model, self-heal decisions.
//! - [`cycle`]: the cycle rule of `baton serve` (trigger x mode x state x plan -> what to apply,
//!   what to hold and why, when to run next), its triggers, and its persisted state.
//! - [`rollout`]: progressive delivery: the `baton.rollout` block, the canary state machine,
//!   HAProxy's stats.
//! - [`drift_report`]: drift reports as text, Markdown and HTML.
//! - [`secrets`]: Vault policy, AppRole role and bootstrap env per app, and the Vault plan.
//! - [`refs`]: the `vault:` reference grammar (the crate `baton-refs`, shared with `baton-env`).
//! - [`app`]: Marathon's app model: live apps out of responses, `is_up`, the event-stream parser.
//! - [`userinfo`]: credentials written into URLs, taken out so that URLs can be shown.

// Tests may read fixtures; the library itself is linted without cfg(test) by `--all-targets`.
#![cfg_attr(test, allow(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod app;
pub mod cycle;
pub mod diff;
pub mod drift;
pub mod drift_report;
pub mod environment;
pub mod ownership;
pub mod plan;
pub mod report;
pub mod rollout;
pub mod secrets;
pub mod selection;
pub mod spec;
pub mod userinfo;

pub use baton_refs as refs;

/// An error with its sources, on one line (reqwest's top-level message alone hides the cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
