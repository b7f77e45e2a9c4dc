//! The `baton.rollout` block of a spec: parse and validate (the JSON Schema has checked names
//! and types), defaults. Errors are `(JSON pointer, message)`, like the rest of `spec::load`.
//!
//! Work in progress (issue 15, WP-A): only the skeleton is here.

use serde_json::Value;

use super::{Analysis, Rollout, Strategy};

/// Parse a `baton.rollout` value.
pub fn parse(v: &Value) -> Result<Rollout, (String, String)> {
    let _ = v;
    Ok(Rollout {
        strategy: Strategy::Canary,
        steps: Vec::new(),
        analysis: Analysis::default(),
        grace: std::time::Duration::from_secs(300),
    })
}
